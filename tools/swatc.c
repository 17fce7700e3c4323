/* swatc: the command line. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "importer/importer.h"
#include "ir/ir.h"
#include "passes/passes.h"

#define TRAIN_PIPELINE_TEXT "import, train-mode, add-loss, autodiff, dce, memory-plan"
static const char *const train_pipeline[] = {"train-mode", "add-loss", "autodiff", "dce", "memory-plan"};

static const char usage_text[] =
    "usage: swatc <command> [options]\n"
    "\n"
    "swatc imports a network from ONNX (e.g. exported from PyTorch), trains it with SWAT sparse\n"
    "training on the CPU, and writes the trained sparse network back to ONNX.\n"
    "\n"
    "commands:\n"
    "  inspect MODEL.onnx [--dump-ir[=PASSES]] [--static-batch]\n"
    "      import MODEL and print a per-layer table (output shape, parameters, MACs per image);\n"
    "      --dump-ir prints swatc's IR of the model instead; --dump-ir=PASS[,PASS..] or =all builds\n"
    "      the training graph and prints the IR after those passes (" TRAIN_PIPELINE_TEXT ");\n"
    "      --static-batch keeps the batch size of the export instead of the free dimension N\n"
    "\n"
    "options:\n"
    "  -h, --help      show this help\n"
    "  -V, --version   show the version\n"
    "  -q, --quiet     print no warnings\n"
    "\n"
    "exit status: 0 success, 1 usage error, 2 bad input (model, data), 3 out of memory.\n";

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

static int cmd_inspect(int argc, char **argv) {
  static const struct option opts[] = {
      {"dump-ir", optional_argument, 0, 'd'}, {"static-batch", no_argument, 0, 's'}, {"quiet", no_argument, 0, 'q'},
      {"help", no_argument, 0, 'h'},    {0, 0, 0, 0}};
  int dump = 0, c;
  const char *passes = NULL;
  importer_opts io = {IMPORTER_BATCH_AUTO};
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
  ir_graph *g;
  if (importer_load(argv[optind], &io, &g, &e)) return fail(&e);
  if (dump && passes) {
    pass_opts po = {.verify = 1, .dump = passes, .dump_file = stdout, .batch = 128};
    passes_dump(g, "import", &po);
    if (passes_run(g, train_pipeline, (int)SW_ARRAY_LEN(train_pipeline), &po, &e)) {
      ir_graph_free(g);
      return fail(&e);
    }
  } else if (dump) {
    ir_print(g, stdout);
  } else {
    print_table(g);
  }
  ir_graph_free(g);
  if (fflush(stdout) != 0) {
    fprintf(stderr, "swatc: error: writing the output failed\n");
    return SW_EIO;
  }
  return 0;
}

int main(int argc, char **argv) {
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
  if (!strcmp(cmd, "inspect")) return cmd_inspect(argc - 1, argv + 1);
  return usage_error("unknown command '%s'", cmd);
}
