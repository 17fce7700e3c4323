/* swatc: the command line. */
#include <getopt.h>
#include <unistd.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "importer/importer.h"
#include "ir/ir.h"
#include "passes/passes.h"
#include "passes/swat.h"
#include "train/trainer.h"

#define TRAIN_PIPELINE_TEXT "import, train-mode, add-loss, autodiff, dce, swat, fuse, memory-plan, lower"
static const char *const train_pipeline[] = {"train-mode", "add-loss", "autodiff", "dce", "swat", "fuse", "memory-plan"};

static const char usage_text[] =
    "usage: swatc <command> [options]\n"
    "\n"
    "swatc imports a network from ONNX (e.g. exported from PyTorch), trains it on the CPU, dense or\n"
    "with SWAT sparse training, and writes the trained network back to ONNX.\n"
    "\n"
    "commands:\n"
    "  train MODEL.onnx [options]      (also: swatc MODEL.onnx [options])\n"
    "      train MODEL on a dataset and report the test accuracy after every epoch\n"
    "  train --resume CKPT [options]\n"
    "      continue the run saved in CKPT, with the model it holds\n"
    "      --data NAME|DIR     fashion-mnist (default), mnist, cifar10, synthetic, or a folder\n"
    "                          holding the IDX or CIFAR-10 binary files\n"
    "      --epochs N          passes over the training set (default 10)\n"
    "      --batch N           images per step (default 128)\n"
    "      --lr F              peak learning rate (default 0.05)\n"
    "      --momentum F        SGD momentum (default 0.9); --nesterov for Nesterov momentum\n"
    "      --wd F              weight decay on all parameters (default 5e-4)\n"
    "      --schedule S        constant, step, cosine (default: annealed every step to 0) or\n"
    "                          cosine-epoch (annealed once per epoch, like CosineAnnealingLR stepped per epoch)\n"
    "      --milestones A,B    epochs where the step schedule divides the rate by 10\n"
    "      --warmup-epochs N   linear learning-rate warm-up\n"
    "      --seed N            shuffling, augmentation and dropout seed (default 0)\n"
    "      --threads N         CPU threads (default: all cores)\n"
    "      --limit-train N, --limit-test N   use only the first N images\n"
    "      --augment on|off    random crop + flip (default: on for real 32x32 images)\n"
    "      --drop-last         skip the last, smaller batch of an epoch\n"
    "      --metrics FILE      write one JSON object per epoch (JSON lines)\n"
    "      --dump-ir[=PASSES]  print the IR after passes (all, or a list of: " TRAIN_PIPELINE_TEXT ")\n"
    "      --dump-file FILE    write IR dumps to FILE instead of stderr\n"
    "      --profile           print time per op kind at the end\n"
    "      --static-batch      keep the export's batch size\n"
    "    SWAT sparse training (sparse weights and saved activations, dense gradients and updates):\n"
    "      --sparsity S        fraction of zero conv/FC weights, 0 <= S < 1 (default 0: dense)\n"
    "      --uniform           every layer at S, the first one dense (default budget)\n"
    "      --sparse-first      with --uniform, sparsify the first layer too\n"
    "      --erk               Erdos-Renyi-Kernel budgets (first and last layers included)\n"
    "      --momentum-budget   SWAT-M: budgets follow the mean |momentum| of each layer every step\n"
    "      --dense-layers L,.. keep these layers dense (node or weight names, see swatc inspect)\n"
    "      --structured channel|filter   keep whole kernels (kh x kw) or whole filters of conv weights\n"
    "      --topk-period P     exact Top-K every P steps, stored thresholds in between (default 10)\n"
    "      --sparse-kernels on|off  run SWAT layers on the sparse kernels below their measured crossover\n"
    "                          density (on, default) or always on the dense ones (off: same SWAT, for A/B)\n"
    "      --warmup-epochs-topk E   exact Top-K every step during the first E epochs\n"
    "    checkpoints and export:\n"
    "      --checkpoint FILE   save the whole training state to FILE after every epoch and when\n"
    "                          interrupted (SIGINT/SIGTERM: the step finishes, FILE is written, exit\n"
    "                          130/143; a second signal stops at once)\n"
    "      --resume FILE       continue the run saved in FILE (same options; with the same --threads\n"
    "                          the result is bit-identical to an uninterrupted run; a larger --epochs\n"
    "                          trains further); keeps checkpointing to FILE; the model comes from FILE\n"
    "                          (a MODEL given too must be the one FILE was trained from)\n"
    "      -o, --output OUT.onnx   export the trained model (SWAT weights with their zeros)\n"
    "      --sparse-initializers   store the sparse weights as ONNX sparse_initializer\n"
    "      -q, --quiet         print only the final result\n"
    "  eval MODEL.onnx [--data NAME|DIR] [--batch N] [--threads N] [--limit-test N]\n"
    "      test accuracy and loss of an ONNX classifier (dense or sparse initializers)\n"
    "  export CKPT -o OUT.onnx [--sparse-initializers]\n"
    "      write the model saved in a training checkpoint as ONNX\n"
    "  inspect CKPT   print what a training checkpoint holds (step, options, tensor digests)\n"
    "  inspect MODEL.onnx [--dump-ir[=PASSES]] [--static-batch] [--sparsity S [--erk|--uniform] ...]\n"
    "      import MODEL and print a per-layer table (output shape, parameters, MACs per image) and,\n"
    "      for a model with sparse weights, the fraction of zeros in each Conv/Gemm weight;\n"
    "      --dump-ir prints swatc's IR of the model instead; --dump-ir=PASS[,PASS..] or =all builds\n"
    "      the training graph and prints the IR after those passes (" TRAIN_PIPELINE_TEXT ";\n"
    "      'lower' only in train, where kernels are chosen);\n"
    "      --static-batch keeps the batch size of the export instead of the free dimension N;\n"
    "      --sparsity S with a budget (--uniform, --erk, --sparse-first, --dense-layers) prints the\n"
    "      SWAT budget of every layer instead of the table\n"
    "\n"
    "options:\n"
    "  -h, --help      show this help\n"
    "  -V, --version   show the version\n"
    "  -q, --quiet     print no warnings\n"
    "\n"
    "exit status: 0 success, 1 usage error, 2 bad input (model, data), 3 out of memory,\n"
    "4 a result could not be written, 5 the training loss became NaN or infinite,\n"
    "130/143 interrupted by SIGINT/SIGTERM after writing the checkpoint.\n"
    "Kernel threads poll, then yield, then sleep while they wait; OpenMP threads (data pipeline,\n"
    "optimizer) always wait passively (OMP_WAIT_POLICY and GOMP_SPINCOUNT are overridden, with a warning).\n";

static int usage_error(const char *fmt, const char *arg) {
  fprintf(stderr, "swatc: error: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\n  hint: run 'swatc --help' for the commands and options\n");
  return SW_EUSAGE;
}

static int fail(const sw_err *e) {
  sw_err_print(e, stderr);
  return e->code ? e->code : SW_EINPUT;
}

static void fmt_count(char *buf, size_t n, int64_t v) {
  if (v >= 10000000000LL) snprintf(buf, n, "%.1fG", (double)v / 1e9);
  else if (v >= 10000000) snprintf(buf, n, "%.1fM", (double)v / 1e6);
  else if (v >= 100000) snprintf(buf, n, "%.1fK", (double)v / 1e3);
  else snprintf(buf, n, "%" PRId64, v);
}

static void print_table(const ir_graph *g) {
  int wname = 4;
  for (int i = 0; i < g->n_nodes; i++) {
    int l = (int)strlen(g->nodes[i]->name);
    if (l > wname) wname = l;
  }
  if (wname > 48) wname = 48;
  printf("model %s: opset %d, %d nodes, batch %s", g->name, g->opset, g->n_nodes, g->batch_free ? "N (free)" : "static");
  if (g->export_batch) printf(" (exported with %" PRId64 ")", g->export_batch);
  printf("\n");
  for (int i = 0; i < g->n_inputs; i++) {
    char s[96];
    printf("input  %s : %s%s\n", g->inputs[i]->name, ir_dtype_name(g->inputs[i]->dtype), ir_shape_str(&g->inputs[i]->shape, s, sizeof s));
  }
  printf("\n%-*s  %-20s %-20s %12s %14s\n", wname, "name", "op", "output", "params", "MACs/image");
  int64_t tp = 0, tm = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    const ir_node *n = g->nodes[i];
    char s[96] = "-", ps[32], ms[32];
    if (n->out[0]) ir_shape_str(&n->out[0]->shape, s, sizeof s);
    int64_t p = ir_node_params(n), m = ir_node_macs_per_image(n);
    tp += p;
    tm += m;
    fmt_count(ps, sizeof ps, p);
    fmt_count(ms, sizeof ms, m);
    printf("%-*.*s  %-20s %-20s %12s %14s\n", wname, wname, n->name, n->op->name, s, p ? ps : "-", m ? ms : "-");
  }
  int64_t all = 0;
  for (int i = 0; i < g->n_values; i++)
    if (g->values[i]->kind == IR_VAL_PARAM) all += ir_shape_numel(&g->values[i]->shape);
  char ps[32], ms[32];
  fmt_count(ps, sizeof ps, tp);
  fmt_count(ms, sizeof ms, tm);
  printf("%-*s  %-20s %-20s %12s %14s\n", wname, "total", "", "", ps, ms);
  printf("\n%" PRId64 " trainable parameters, %" PRId64 " multiply-accumulates per image (Conv/Gemm/MatMul)\n", all, tm);
  for (int i = 0; i < g->n_outputs; i++) {
    char s[96];
    printf("output %s : %s%s\n", g->outputs[i]->name, ir_dtype_name(g->outputs[i]->dtype), ir_shape_str(&g->outputs[i]->shape, s, sizeof s));
  }
}

static int parse_int(const char *opt, const char *s, long lo, long hi, long *out) {
  char *end;
  long v = strtol(s, &end, 10);
  if (!*s || *end || v < lo || v > hi) {
    fprintf(stderr, "swatc: error: %s needs an integer from %ld to %ld, not '%s'\n  hint: run 'swatc --help'\n", opt, lo, hi, s);
    return 0;
  }
  *out = v;
  return 1;
}

static int parse_float(const char *opt, const char *s, double lo, double hi, double *out) {
  char *end;
  double v = strtod(s, &end);
  if (!*s || *end || !(v >= lo && v <= hi)) {
    fprintf(stderr, "swatc: error: %s needs a number from %g to %g, not '%s'\n  hint: run 'swatc --help'\n", opt, lo, hi, s);
    return 0;
  }
  *out = v;
  return 1;
}

static int cmd_train(int argc, char **argv, const char *cmdline) {
  enum { O_DATA = 256, O_EPOCHS, O_BATCH, O_LR, O_MOM, O_NEST, O_WD, O_SCHED, O_MILE, O_WARM, O_SEED, O_THREADS, O_LTRAIN,
         O_LTEST, O_METRICS, O_DUMP, O_DUMPFILE, O_PROFILE, O_STATIC, O_AUG, O_DROP, O_SP, O_UNI, O_ERK, O_MOMB, O_SFIRST,
         O_DENSE, O_STRUCT, O_PERIOD, O_TKWARM, O_CKPT, O_RESUME, O_SPINIT, O_STOP, O_SPK };
  static const struct option opts[] = {
      {"data", required_argument, 0, O_DATA},          {"epochs", required_argument, 0, O_EPOCHS},
      {"batch", required_argument, 0, O_BATCH},        {"lr", required_argument, 0, O_LR},
      {"momentum", required_argument, 0, O_MOM},       {"nesterov", no_argument, 0, O_NEST},
      {"wd", required_argument, 0, O_WD},              {"schedule", required_argument, 0, O_SCHED},
      {"milestones", required_argument, 0, O_MILE},    {"warmup-epochs", required_argument, 0, O_WARM},
      {"seed", required_argument, 0, O_SEED},          {"threads", required_argument, 0, O_THREADS},
      {"limit-train", required_argument, 0, O_LTRAIN}, {"limit-test", required_argument, 0, O_LTEST},
      {"metrics", required_argument, 0, O_METRICS},    {"dump-ir", optional_argument, 0, O_DUMP},
      {"dump-file", required_argument, 0, O_DUMPFILE}, {"profile", no_argument, 0, O_PROFILE},
      {"static-batch", no_argument, 0, O_STATIC},      {"augment", required_argument, 0, O_AUG},
      {"drop-last", no_argument, 0, O_DROP},           {"quiet", no_argument, 0, 'q'},
      {"sparsity", required_argument, 0, O_SP},        {"uniform", no_argument, 0, O_UNI},
      {"erk", no_argument, 0, O_ERK},                  {"momentum-budget", no_argument, 0, O_MOMB},
      {"sparse-first", no_argument, 0, O_SFIRST},      {"dense-layers", required_argument, 0, O_DENSE},
      {"structured", required_argument, 0, O_STRUCT},  {"topk-period", required_argument, 0, O_PERIOD},
      {"warmup-epochs-topk", required_argument, 0, O_TKWARM}, {"sparse-kernels", required_argument, 0, O_SPK},
      {"checkpoint", required_argument, 0, O_CKPT},    {"resume", required_argument, 0, O_RESUME},
      {"output", required_argument, 0, 'o'},           {"sparse-initializers", no_argument, 0, O_SPINIT},
      {"stop-after-steps", required_argument, 0, O_STOP}, /* testing: a deterministic SIGTERM */
      {"help", no_argument, 0, 'h'},                   {0, 0, 0, 0}};
  trainer_opts o;
  trainer_opts_default(&o);
  o.command = cmdline;
  long iv;
  double fv;
  int c;
  opterr = 0;
  optind = 1;
  while ((c = getopt_long(argc, argv, "qho:", opts, NULL)) != -1) {
    switch (c) {
      case O_DATA: o.data = optarg; break;
      case O_EPOCHS: if (!parse_int("--epochs", optarg, 1, 100000, &iv)) return SW_EUSAGE; o.epochs = (int)iv; break;
      case O_BATCH: if (!parse_int("--batch", optarg, 1, 65536, &iv)) return SW_EUSAGE; o.batch = (int)iv; break;
      case O_LR: if (!parse_float("--lr", optarg, 0, 100, &fv)) return SW_EUSAGE; o.lr = fv; break;
      case O_MOM: if (!parse_float("--momentum", optarg, 0, 0.9999, &fv)) return SW_EUSAGE; o.momentum = fv; break;
      case O_NEST: o.nesterov = 1; break;
      case O_WD: if (!parse_float("--wd", optarg, 0, 1, &fv)) return SW_EUSAGE; o.wd = fv; break;
      case O_SCHED:
        if (strcmp(optarg, "constant") && strcmp(optarg, "step") && strcmp(optarg, "cosine") && strcmp(optarg, "cosine-epoch"))
          return usage_error("--schedule must be constant, step, cosine or cosine-epoch, not '%s'", optarg);
        o.schedule = optarg;
        break;
      case O_MILE: o.milestones = optarg; break;
      case O_WARM: if (!parse_int("--warmup-epochs", optarg, 0, 100000, &iv)) return SW_EUSAGE; o.warmup_epochs = (int)iv; break;
      case O_SEED: if (!parse_int("--seed", optarg, 0, 2147483647L, &iv)) return SW_EUSAGE; o.seed = (uint64_t)iv; break;
      case O_THREADS: if (!parse_int("--threads", optarg, 1, 1024, &iv)) return SW_EUSAGE; o.threads = (int)iv; break;
      case O_LTRAIN: if (!parse_int("--limit-train", optarg, 1, 2147483647L, &iv)) return SW_EUSAGE; o.limit_train = iv; break;
      case O_LTEST: if (!parse_int("--limit-test", optarg, 1, 2147483647L, &iv)) return SW_EUSAGE; o.limit_test = iv; break;
      case O_METRICS: o.metrics = optarg; break;
      case O_DUMP: o.dump_ir = optarg ? optarg : "import"; break;
      case O_DUMPFILE: o.dump_file = optarg; break;
      case O_PROFILE: o.profile = 1; break;
      case O_STATIC: o.static_batch = 1; break;
      case O_AUG:
        if (strcmp(optarg, "on") && strcmp(optarg, "off")) return usage_error("--augment must be on or off, not '%s'", optarg);
        o.augment = strcmp(optarg, "on") == 0;
        break;
      case O_DROP: o.drop_last = 1; break;
      case O_SP: if (!parse_float("--sparsity", optarg, 0, 0.999, &fv)) return SW_EUSAGE; o.swat.sparsity = fv; break;
      case O_UNI: o.swat.budget = SWAT_UNIFORM; break;
      case O_ERK: o.swat.budget = SWAT_ERK; break;
      case O_MOMB: o.swat.budget = SWAT_MOMENTUM; break;
      case O_SFIRST: o.swat.sparse_first = 1; break;
      case O_DENSE: o.swat.dense_layers = optarg; break;
      case O_STRUCT:
        if (strcmp(optarg, "channel") && strcmp(optarg, "filter"))
          return usage_error("--structured must be channel or filter, not '%s'", optarg);
        o.swat.structure = strcmp(optarg, "channel") == 0 ? SWAT_CHANNEL : SWAT_FILTER;
        break;
      case O_PERIOD: if (!parse_int("--topk-period", optarg, 1, 1000000, &iv)) return SW_EUSAGE; o.swat.period = (int)iv; break;
      case O_TKWARM: if (!parse_int("--warmup-epochs-topk", optarg, 0, 100000, &iv)) return SW_EUSAGE; o.topk_warmup_epochs = (int)iv; break;
      case O_SPK:
        if (strcmp(optarg, "on") && strcmp(optarg, "off")) return usage_error("--sparse-kernels must be on or off, not '%s'", optarg);
        o.sparse_kernels = strcmp(optarg, "on") == 0;
        break;
      case O_CKPT: o.checkpoint = optarg; break;
      case O_RESUME: o.resume = optarg; break;
      case 'o': o.output = optarg; break;
      case O_SPINIT: o.sparse_initializers = 1; break;
      case O_STOP: if (!parse_int("--stop-after-steps", optarg, 1, 2147483647L, &iv)) return SW_EUSAGE; o.stop_after_steps = iv; break;
      case 'q': o.quiet = 1; sw_quiet = 1; break;
      case 'h': fputs(usage_text, stdout); return 0;
      default: return usage_error("unknown option '%s' for train", argv[optind - 1]);
    }
  }
  if (optind >= argc && !o.resume)
    return usage_error("%s", "train needs a model file: swatc train MODEL.onnx (or swatc train --resume CKPT)");
  if (optind + 1 < argc) return usage_error("unexpected argument '%s'", argv[optind + 1]);
  const char *model = optind < argc ? argv[optind] : NULL;
  if (o.dump_ir && strcmp(o.dump_ir, "all") != 0) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", o.dump_ir);
    for (char *t = strtok(buf, ","); t; t = strtok(NULL, ","))
      if (!pass_name_valid(t)) return usage_error("unknown pass '%s' for --dump-ir (passes: " TRAIN_PIPELINE_TEXT ")", t);
  }
  if (o.stop_after_steps && !o.checkpoint && !o.resume)
    return usage_error("%s", "--stop-after-steps simulates an interruption and needs --checkpoint FILE");
  if (o.sparse_initializers && !o.output) return usage_error("%s", "--sparse-initializers needs -o OUT.onnx");
  /* The options a resume repeats, for the resume command printed after an interruption: all but --resume,
   * --checkpoint (the resumed run checkpoints to the file it resumes) and --stop-after-steps. getopt_long
   * has moved the model behind the options, so argv[1..n) holds only options: parse them again, noting
   * which words each one took. */
  int n = optind, n_keep = 0;
  const char **keep = sw_xcalloc((size_t)n + 1, sizeof *keep);
  optind = 1;
  for (;;) {
    int at = optind, k = getopt_long(n, argv, "qho:", opts, NULL);
    if (k == -1) break;
    for (int i = at; i < optind && k != O_RESUME && k != O_CKPT && k != O_STOP; i++) keep[n_keep++] = argv[i];
  }
  o.resume_args = keep;
  o.n_resume_args = n_keep;
  sw_err e = {0};
  int rc = trainer_run(model, &o, &e);
  free(keep);
  if (rc > TRAINER_SIGNALLED) return rc; /* interrupted; the checkpoint is written */
  if (rc) return fail(&e);
  return 0;
}

static int cmd_export(int argc, char **argv) {
  static const struct option opts[] = {{"output", required_argument, 0, 'o'}, {"sparse-initializers", no_argument, 0, 's'},
                                       {"quiet", no_argument, 0, 'q'},        {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  const char *out = NULL;
  int sparse = 0, c;
  opterr = 0;
  optind = 1;
  while ((c = getopt_long(argc, argv, "o:qh", opts, NULL)) != -1) {
    switch (c) {
      case 'o': out = optarg; break;
      case 's': sparse = 1; break;
      case 'q': sw_quiet = 1; break;
      case 'h': fputs(usage_text, stdout); return 0;
      default: return usage_error("unknown option or missing value '%s' for export", argv[optind - 1]);
    }
  }
  if (optind >= argc) return usage_error("%s", "export needs a checkpoint: swatc export CKPT -o OUT.onnx");
  if (optind + 1 < argc) return usage_error("unexpected argument '%s'", argv[optind + 1]);
  if (!out) return usage_error("%s", "export needs an output file: -o OUT.onnx");
  sw_err e = {0};
  int64_t bytes = 0;
  if (trainer_export(argv[optind], out, sparse, &bytes, &e)) return fail(&e);
  printf("exported %s (%" PRId64 " bytes)\n", out, bytes);
  return fflush(stdout) == 0 ? 0 : SW_EIO;
}

static int cmd_eval(int argc, char **argv) {
  enum { E_DATA = 400, E_BATCH, E_THREADS, E_LTEST, E_STATIC };
  static const struct option opts[] = {{"data", required_argument, 0, E_DATA},         {"batch", required_argument, 0, E_BATCH},
                                       {"threads", required_argument, 0, E_THREADS},   {"limit-test", required_argument, 0, E_LTEST},
                                       {"static-batch", no_argument, 0, E_STATIC},     {"quiet", no_argument, 0, 'q'},
                                       {"help", no_argument, 0, 'h'},                  {0, 0, 0, 0}};
  trainer_opts o;
  trainer_opts_default(&o);
  long iv;
  int c;
  opterr = 0;
  optind = 1;
  while ((c = getopt_long(argc, argv, "qh", opts, NULL)) != -1) {
    switch (c) {
      case E_DATA: o.data = optarg; break;
      case E_BATCH: if (!parse_int("--batch", optarg, 1, 65536, &iv)) return SW_EUSAGE; o.batch = (int)iv; break;
      case E_THREADS: if (!parse_int("--threads", optarg, 1, 1024, &iv)) return SW_EUSAGE; o.threads = (int)iv; break;
      case E_LTEST: if (!parse_int("--limit-test", optarg, 1, 2147483647L, &iv)) return SW_EUSAGE; o.limit_test = iv; break;
      case E_STATIC: o.static_batch = 1; break;
      case 'q': o.quiet = 1; sw_quiet = 1; break;
      case 'h': fputs(usage_text, stdout); return 0;
      default: return usage_error("unknown option or missing value '%s' for eval", argv[optind - 1]);
    }
  }
  if (optind >= argc) return usage_error("%s", "eval needs a model file: swatc eval MODEL.onnx");
  if (optind + 1 < argc) return usage_error("unexpected argument '%s'", argv[optind + 1]);
  sw_err e = {0};
  if (trainer_eval(argv[optind], &o, &e)) return fail(&e);
  return 0;
}

/* For a model with sparse weights: the fraction of exact zeros in each Conv/Gemm/MatMul weight. */
static void print_sparsity(const ir_graph *g) {
  swat_layer *l = NULL;
  int n = 0;
  sw_err e = {0};
  if (swat_layers(g, &l, &n, &e)) {
    free(l);
    return;
  }
  int64_t zeros = 0, total = 0;
  int64_t *z = sw_xcalloc((size_t)n + 1, sizeof *z);
  for (int i = 0; i < n; i++) {
    const float *w = l[i].weight->data;
    if (!w || l[i].weight->dtype != IR_F32) continue;
    for (int64_t j = 0; j < l[i].numel; j++) z[i] += w[j] == 0.0f;
    zeros += z[i];
    total += l[i].numel;
  }
  if (zeros > 0 && total > 0) {
    printf("\nweight sparsity (fraction of zeros):\n%-40s %-18s %10s %10s\n", "layer", "weight", "params", "sparsity");
    for (int i = 0; i < n; i++)
      printf("%-40.40s %-18.18s %10lld %10.4f\n", l[i].node->name, l[i].weight->name, (long long)l[i].numel,
             l[i].numel ? (double)z[i] / (double)l[i].numel : 0.0);
    printf("overall weight sparsity %.4f over %lld conv/FC weights\n", (double)zeros / (double)total, (long long)total);
  }
  free(z);
  free(l);
}

/* The SWAT budget of every layer, before any training. */
static int print_budgets(const ir_graph *g, const swat_opts *so, sw_err *e) {
  swat_layer *l;
  int n;
  if (swat_layers(g, &l, &n, e) || swat_budgets(l, n, so, e)) {
    free(l);
    return e->code;
  }
  printf("SWAT budget: sparsity %.4f, %s%s\n\n", so->sparsity,
         so->budget == SWAT_ERK ? "ERK" : so->budget == SWAT_MOMENTUM ? "momentum (SWAT-M; starts uniform, then follows momentum)" : "uniform",
         so->budget == SWAT_UNIFORM && !so->sparse_first ? " (first layer dense)" : "");
  printf("%-40s %-8s %-18s %10s %12s %9s %9s\n", "layer", "op", "weight", "params", "MACs/image", "w_sparse", "act_sparse");
  double zeros = 0, total = 0;
  int64_t *macs = sw_xcalloc((size_t)n + 1, sizeof *macs);
  double *d = sw_xcalloc((size_t)n + 1, sizeof *d);
  for (int i = 0; i < n; i++) {
    char shp[64];
    ir_shape_str(&l[i].weight->shape, shp, sizeof shp);
    printf("%-40.40s %-8s %-18s %10lld %12lld %9.4f %9.4f%s\n", l[i].node->name, l[i].node->op->name, shp, (long long)l[i].numel,
           (long long)l[i].macs, l[i].sparsity, l[i].sparsity, l[i].forced_dense ? "  (kept dense)" : "");
    zeros += l[i].sparsity * (double)l[i].numel;
    total += (double)l[i].numel;
    macs[i] = l[i].macs;
    d[i] = 1 - l[i].sparsity;
  }
  printf("\noverall weight sparsity %.4f over %lld conv/FC weights; training-FLOP reduction at these budgets %.1f%%\n",
         total > 0 ? zeros / total : 0, (long long)total, 100 * swat_flop_reduction(macs, d, d, n));
  free(macs);
  free(d);
  free(l);
  return SW_OK;
}

/* 1 if the path is a regular file that starts like a training checkpoint (a FIFO or device is
 * never opened here: the importer refuses those with a clear message). */
static int is_checkpoint(const char *path) {
  char magic[8];
  struct stat sb;
  if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) return 0;
  FILE *f = fopen(path, "rb");
  if (!f) return 0;
  int yes = fread(magic, 1, 8, f) == 8 && memcmp(magic, "SWATCKPT", 8) == 0;
  fclose(f);
  return yes;
}

static int cmd_inspect(int argc, char **argv) {
  enum { I_SP = 300, I_UNI, I_ERK, I_MOMB, I_SFIRST, I_DENSE };
  static const struct option opts[] = {
      {"dump-ir", optional_argument, 0, 'd'}, {"static-batch", no_argument, 0, 's'}, {"quiet", no_argument, 0, 'q'},
      {"help", no_argument, 0, 'h'},          {"sparsity", required_argument, 0, I_SP}, {"uniform", no_argument, 0, I_UNI},
      {"erk", no_argument, 0, I_ERK},         {"momentum-budget", no_argument, 0, I_MOMB},
      {"sparse-first", no_argument, 0, I_SFIRST}, {"dense-layers", required_argument, 0, I_DENSE}, {0, 0, 0, 0}};
  swat_opts so = {.period = 10};
  double fv;
  int dump = 0, c;
  const char *passes = NULL;
  importer_opts io = {.batch = IMPORTER_BATCH_AUTO};
  opterr = 0;
  optind = 1;
  while ((c = getopt_long(argc, argv, "qh", opts, NULL)) != -1) {
    switch (c) {
      case 'd':
        dump = 1;
        passes = optarg;
        break;
      case 's': io.batch = IMPORTER_BATCH_STATIC; break;
      case 'q': sw_quiet = 1; break;
      case 'h': fputs(usage_text, stdout); return 0;
      case I_SP: if (!parse_float("--sparsity", optarg, 0, 0.999, &fv)) return SW_EUSAGE; so.sparsity = fv; break;
      case I_UNI: so.budget = SWAT_UNIFORM; break;
      case I_ERK: so.budget = SWAT_ERK; break;
      case I_MOMB: so.budget = SWAT_MOMENTUM; break;
      case I_SFIRST: so.sparse_first = 1; break;
      case I_DENSE: so.dense_layers = optarg; break;
      default: return usage_error("unknown option '%s' for inspect", argv[optind - 1]);
    }
  }
  if (optind >= argc) return usage_error("%s", "inspect needs a model file: swatc inspect MODEL.onnx");
  if (optind + 1 < argc) return usage_error("unexpected argument '%s'", argv[optind + 1]);
  if (passes && strcmp(passes, "all") != 0) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", passes);
    for (char *t = strtok(buf, ","); t; t = strtok(NULL, ","))
      if (!pass_name_valid(t)) return usage_error("unknown pass '%s' for --dump-ir (passes: " TRAIN_PIPELINE_TEXT ")", t);
  }
  sw_err e = {0};
  if (is_checkpoint(argv[optind])) {
    if (trainer_ckpt_print(argv[optind], stdout, &e)) return fail(&e);
    return fflush(stdout) == 0 ? 0 : SW_EIO;
  }
  ir_graph *g;
  if (importer_load(argv[optind], &io, &g, &e)) return fail(&e);
  if (so.sparsity > 0 && !dump) {
    int rc = print_budgets(g, &so, &e);
    ir_graph_free(g);
    return rc ? fail(&e) : 0;
  }
  if (dump && passes) {
    pass_opts po = {.verify = 1, .dump = passes, .dump_file = stdout, .batch = 128, .swat = &so};
    passes_dump(g, "import", &po);
    if (passes_run(g, train_pipeline, (int)SW_ARRAY_LEN(train_pipeline), &po, &e)) {
      ir_graph_free(g);
      return fail(&e);
    }
  } else if (dump) {
    ir_print(g, stdout);
  } else {
    print_table(g);
    print_sparsity(g);
  }
  ir_graph_free(g);
  if (fflush(stdout) != 0) {
    fprintf(stderr, "swatc: error: writing the output failed\n");
    return SW_EIO;
  }
  return 0;
}

/* OpenMP threads that spin while waiting take the core from the thread doing the work: with another
 * process on the machine training ran 10x slower, and since the kernels run on their own team
 * (runtime/kernels/team.c) the data pipeline's and the optimizer's OpenMP threads, spinning after
 * their loops, take the cores from it (OMP_WAIT_POLICY=active: ResNet-20 SWAT-U 1.9x slower). libgomp
 * reads its wait policy when it is loaded, before main, so swatc re-executes itself once with a
 * passive policy, and says so when that overrides a spinning policy the environment asked for. */
static void passive_openmp(char **argv) {
  if (getenv("SWATC_REEXEC")) return;
  const char *pol = getenv("OMP_WAIT_POLICY"), *spin = getenv("GOMP_SPINCOUNT");
  if (pol && !strcasecmp(pol, "passive") && !spin) return; /* already passive */
  int quiet = 0;
  for (char **a = argv + 1; *a; a++) quiet |= !strcmp(*a, "-q") || !strcmp(*a, "--quiet");
  if ((pol || spin) && !quiet)
    fprintf(stderr,
            "swatc: warning: OpenMP runs passively here (%s%s%s%s ignored): spinning OpenMP threads take the "
            "cores from swatc's kernel threads\n",
            pol ? "OMP_WAIT_POLICY=" : "", pol ? pol : "", pol && spin ? ", " : "", spin ? "GOMP_SPINCOUNT" : "");
  setenv("OMP_WAIT_POLICY", "passive", 1);
  unsetenv("GOMP_SPINCOUNT");
  setenv("SWATC_REEXEC", "1", 1);
  execv("/proc/self/exe", argv);
  /* exec failed (no /proc): run with the policy libgomp already read */
}

int main(int argc, char **argv) {
  passive_openmp(argv);
  if (argc < 2) return usage_error("%s", "no command given");
  const char *cmd = argv[1];
  if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
    fputs(usage_text, stdout);
    return 0;
  }
  if (!strcmp(cmd, "-V") || !strcmp(cmd, "--version")) {
    printf("swatc %s\n", SWATC_VERSION);
    return 0;
  }
  char cmdline[2048] = "swatc";
  for (int i = 1; i < argc; i++) {
    size_t l = strlen(cmdline);
    snprintf(cmdline + l, sizeof cmdline - l, " %s", argv[i]);
  }
  if (!strcmp(cmd, "inspect")) return cmd_inspect(argc - 1, argv + 1);
  if (!strcmp(cmd, "train")) return cmd_train(argc - 1, argv + 1, cmdline);
  if (!strcmp(cmd, "export")) return cmd_export(argc - 1, argv + 1);
  if (!strcmp(cmd, "eval")) return cmd_eval(argc - 1, argv + 1);
  /* `swatc MODEL.onnx [options]` means train */
  size_t l = strlen(cmd);
  if (cmd[0] != '-' && l > 5 && strcmp(cmd + l - 5, ".onnx") == 0) return cmd_train(argc, argv, cmdline);
  return usage_error("unknown command '%s'", cmd);
}
