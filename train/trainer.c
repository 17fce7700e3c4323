/* The training driver, top to bottom: import → passes → programs → epochs of SGD + evaluation, with
 * checkpoints (save, resume, signals), ONNX export of the trained model and evaluation of ONNX models. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "importer/export.h"
#include "importer/importer.h"
#include "passes/passes.h"
#include "runtime/kernels/topk.h"
#include "runtime/runtime.h"
#include "train/checkpoint.h"
#include "train/dataset.h"
#include "train/loader.h"
#include "train/metrics.h"
#include "train/optim.h"
#include "train/schedule.h"
#include "train/trainer.h"

void trainer_opts_default(trainer_opts *o) {
  memset(o, 0, sizeof *o);
  o->data = "fashion-mnist";
  o->epochs = 10;
  o->batch = 128;
  o->lr = 0.05;
  o->momentum = 0.9;
  o->wd = 5e-4;
  o->schedule = "cosine";
  o->augment = -1;
  o->swat.period = 10;
  o->sparse_kernels = 1;
}

/* ---- a growable string ---- */

typedef struct sbuf {
  char *p;
  size_t n, cap;
} sbuf;

static __attribute__((format(printf, 2, 3))) void sb_printf(sbuf *b, const char *fmt, ...) {
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    size_t room = b->cap - b->n;
    int w = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? room : 0, fmt, ap);
    va_end(ap);
    SW_ASSERT(w >= 0);
    if (b->p && (size_t)w < room) {
      b->n += (size_t)w;
      return;
    }
    b->cap = (b->cap + (size_t)w + 1) * 2;
    b->p = sw_xrealloc(b->p, b->cap);
  }
}

static const char *const train_passes[] = {"train-mode", "add-loss", "autodiff", "dce", "swat", "fuse"};
static const char *const eval_passes[] = {"eval-mode", "add-loss", "dce", "swat", "fuse"};

/* One compiled graph at one batch size, with what the driver reads and writes. */
typedef struct bound {
  rt_program *prog;
  int64_t batch;
  float *images;
  int64_t *labels;
  float *loss, *logits;
  int64_t classes;
  float **grads; /* per state tensor (NULL for state without gradient) */
} bound;

typedef struct model {
  ir_graph *g;
  FILE *dump;   /* where dumps of this graph go (training graph only), NULL for none */
  const char *image_input, *logits_name, *loss_name;
  bound *b;
  int n_b;
  rt_pool *pool; /* where its programs' activations and scratch go (not owned; NULL: their own memory) */
} model;

static void model_free(model *m) {
  for (int i = 0; i < m->n_b; i++) {
    rt_program_free(m->b[i].prog);
    free(m->b[i].grads);
  }
  free(m->b);
  ir_graph_free(m->g);
}

static int build_graph(const char *path, const trainer_opts *o, const char *const *passes, int n_passes, FILE *dump, model *m,
                       sw_err *e) {
  importer_opts io = {.batch = o->static_batch ? IMPORTER_BATCH_STATIC : IMPORTER_BATCH_AUTO};
  if (importer_load(path, &io, &m->g, e)) return e->code;
  ir_graph *g = m->g;
#ifdef NDEBUG
  int verify = 0;
#else
  int verify = 1; /* debug builds check the IR's invariants after every pass */
#endif
  pass_opts po = {.verify = verify, .dump = o->dump_ir, .dump_file = dump, .batch = o->batch, .swat = &o->swat};
  if (passes == train_passes) {
    passes_dump(g, "import", &po);
    if (o->dump_ir) m->dump = dump ? dump : stderr;
  } else {
    po.dump = NULL; /* dumps show the training graph */
  }
  if (passes_run(g, passes, n_passes, &po, e)) return e->code;
  /* the image input: the float input of rank >= 2 */
  for (int i = 0; i < g->n_inputs && !m->image_input; i++)
    if (g->inputs[i]->dtype == IR_F32 && g->inputs[i]->shape.rank >= 2) m->image_input = g->inputs[i]->name;
  if (!m->image_input || g->n_inputs != 2) {
    sw_fail(e, SW_EINPUT, "the model must have one float image input (it has %d inputs besides the labels)", g->n_inputs - 1);
    return sw_hint(e, "swatc trains image classifiers with a single input [N, C, H, W]");
  }
  for (int i = 0; i < g->n_nodes; i++)
    if (g->nodes[i]->role == IR_ROLE_LOSS) {
      m->loss_name = g->nodes[i]->out[0]->name;
      m->logits_name = g->nodes[i]->in[0]->name;
    }
  if (!g->batch_free) {
    if (g->export_batch != o->batch) {
      sw_fail(e, SW_EINPUT, "the model's batch size is fixed at %lld, but training uses batch %d", (long long)g->export_batch, o->batch);
      return sw_hint(e, "export the model with a dynamic batch axis (dynamic_axes={'input': {0: 'batch'}}), or pass --batch %lld",
                     (long long)g->export_batch);
    }
  }
  return SW_OK;
}

/* The program of m for `batch` (built on first use: memory-plan for that batch, then compile). */
static bound *program_for(model *m, rt_state *st, int64_t batch, const trainer_opts *o, int with_grads, sw_err *e) {
  for (int i = 0; i < m->n_b; i++)
    if (m->b[i].batch == batch) return &m->b[i];
  pass_opts po = {.batch = batch};
  if (!m->g->batch_free && batch != m->g->export_batch) {
    sw_fail(e, SW_EINPUT, "the model's batch size is fixed at %lld; cannot run a batch of %lld", (long long)m->g->export_batch,
            (long long)batch);
    sw_hint(e, "export the model with a dynamic batch axis, or use --drop-last and --limit-test to multiples of it");
    return NULL;
  }
  if (pass_memory_plan(m->g, &po, e)) return NULL;
  m->b = sw_xrealloc(m->b, sizeof *m->b * (size_t)(m->n_b + 1));
  bound *b = &m->b[m->n_b];
  memset(b, 0, sizeof *b);
  if (rt_program_build(m->g, st, batch, o->threads, m->pool, &b->prog, e)) return NULL;
  m->n_b++;
  if (m->dump && m->n_b == 1) { /* the first program of the training graph: show memory plan and kernels */
    pass_opts dpo = {.dump = o->dump_ir, .dump_file = m->dump};
    passes_dump(m->g, "memory-plan", &dpo);
    rt_program_annotate(b->prog, m->g);
    passes_dump(m->g, "lower", &dpo);
  }
  b->batch = batch;
  rt_program_set_seed(b->prog, o->seed);
  int64_t n;
  b->images = rt_program_buffer(b->prog, m->image_input, NULL);
  b->labels = rt_program_buffer(b->prog, PASS_LABELS_INPUT, NULL);
  b->loss = rt_program_buffer(b->prog, m->loss_name, NULL);
  b->logits = rt_program_buffer(b->prog, m->logits_name, &n);
  b->classes = n / batch;
  if (with_grads) {
    b->grads = sw_xcalloc((size_t)st->n + 1, sizeof *b->grads);
    for (int i = 0; i < st->n; i++) {
      ir_value *v = ir_value_find(m->g, st->t[i].name);
      if (v && v->grad) b->grads[i] = rt_program_buffer(b->prog, v->grad->name, NULL);
    }
  }
  if (o->profile) rt_program_profile(b->prog, 1);
  return b;
}

/* SWAT bookkeeping of the training graph: per layer, its Top-K nodes and state tensors. */
typedef struct swat_run {
  swat_layer *l;
  int n;
  rt_tensor **w_state, **x_state, **weight; /* per layer (NULL when the layer is dense) */
  int *w_index;                             /* index of the weight in the state (for its momentum) */
  double *score, *density;
  int64_t *numel;
  double *m_score, *m_density; /* SWAT-M work arrays (no allocation per step) */
  int64_t *m_numel;
} swat_run;

static void swat_run_free(swat_run *r) {
  free(r->l);
  free(r->w_state);
  free(r->x_state);
  free(r->weight);
  free(r->w_index);
  free(r->score);
  free(r->density);
  free(r->numel);
  free(r->m_score);
  free(r->m_density);
  free(r->m_numel);
}

/* The layers SWAT considers (also for a dense run: the export reports their sparsity) and their state. */
static int swat_run_init(swat_run *r, const ir_graph *g, rt_state *st, const trainer_opts *o, sw_err *e) {
  memset(r, 0, sizeof *r);
  if (swat_layers(g, &r->l, &r->n, e) || swat_budgets(r->l, r->n, &o->swat, e)) return e->code;
  r->w_state = sw_xcalloc((size_t)r->n + 1, sizeof *r->w_state);
  r->x_state = sw_xcalloc((size_t)r->n + 1, sizeof *r->x_state);
  r->weight = sw_xcalloc((size_t)r->n + 1, sizeof *r->weight);
  r->w_index = sw_xcalloc((size_t)r->n + 1, sizeof *r->w_index);
  r->score = sw_xcalloc((size_t)r->n + 1, sizeof *r->score);
  r->density = sw_xcalloc((size_t)r->n + 1, sizeof *r->density);
  r->numel = sw_xcalloc((size_t)r->n + 1, sizeof *r->numel);
  r->m_score = sw_xcalloc((size_t)r->n + 1, sizeof *r->m_score);
  r->m_density = sw_xcalloc((size_t)r->n + 1, sizeof *r->m_density);
  r->m_numel = sw_xcalloc((size_t)r->n + 1, sizeof *r->m_numel);
  for (int i = 0; i < r->n; i++) {
    char name[600];
    r->numel[i] = r->l[i].numel;
    snprintf(name, sizeof name, "swat.%s.w", r->l[i].node->name);
    r->w_state[i] = rt_state_find(st, name);
    snprintf(name, sizeof name, "swat.%s.x", r->l[i].node->name);
    r->x_state[i] = rt_state_find(st, name);
    r->weight[i] = rt_state_find(st, r->l[i].weight->name);
    r->w_index[i] = r->weight[i] ? (int)(r->weight[i] - st->t) : -1;
  }
  return SW_OK;
}

/* Sets the current per-layer budgets on the Top-K nodes of one program. */
static void swat_apply(const swat_run *r, rt_program *p) {
  for (int i = 0; i < r->n; i++) {
    char name[600];
    snprintf(name, sizeof name, "%s/topk_w", r->l[i].node->name);
    rt_program_set_sparsity(p, name, r->l[i].sparsity);
    snprintf(name, sizeof name, "%s/topk_x", r->l[i].node->name);
    rt_program_set_sparsity(p, name, r->l[i].sparsity);
  }
}

/* SWAT-M: after an optimizer step, the budget follows the mean |momentum| of each layer's active weights
 * (set on the training programs here; the evaluation programs take it before each evaluation). */
static void swat_momentum_step(swat_run *r, model *m, float *const *mom, const trainer_opts *o) {
  for (int i = 0; i < r->n; i++) {
    const rt_tensor *w = r->weight[i];
    const float *mm = r->w_index[i] >= 0 ? mom[r->w_index[i]] : NULL;
    float thr = r->w_state[i] ? r->w_state[i]->data[0] : 0.0f;
    double s = 0;
    int64_t k = 0;
    for (int64_t j = 0; w && mm && j < w->numel; j++)
      if (fabsf(w->data[j]) >= thr) {
        s += fabsf(mm[j]);
        k++;
      }
    r->score[i] = k ? s / (double)k : 0;
  }
  /* layers kept dense by the user stay out of the redistribution */
  double *sc = r->m_score, *de = r->m_density, fixed = 0, all = 0;
  int64_t *nu = r->m_numel;
  int k = 0;
  for (int i = 0; i < r->n; i++) {
    all += (double)r->numel[i];
    if (r->l[i].forced_dense) {
      fixed += (double)r->numel[i];
      continue;
    }
    sc[k] = r->score[i];
    nu[k++] = r->numel[i];
  }
  double free_n = all - fixed, target = free_n > 0 ? 1.0 - ((1.0 - o->swat.sparsity) * all - fixed) / free_n : 0;
  swat_momentum_budget(sc, nu, k, target > 0 ? target : 0, de);
  for (int i = 0, j = 0; i < r->n; i++) r->density[i] = r->l[i].forced_dense ? 1.0 : de[j++];
  for (int i = 0; i < r->n; i++) {
    double sp = 1.0 - r->density[i];
    r->l[i].sparsity = sp > 0.999 ? 0.999 : sp;
  }
  for (int b = 0; b < m->n_b; b++) swat_apply(r, m->b[b].prog);
}

/* Realised sparsities (from the Top-K states) into per-layer arrays; returns the training-FLOP reduction. */
static double swat_realised(const swat_run *r, double *dw, double *da, double *overall) {
  double zeros = 0, total = 0;
  int64_t *macs = sw_xcalloc((size_t)r->n + 1, sizeof *macs);
  for (int i = 0; i < r->n; i++) {
    dw[i] = r->w_state[i] ? r->w_state[i]->data[1] : 1.0;
    da[i] = r->x_state[i] ? r->x_state[i]->data[1] : 1.0;
    zeros += (1 - dw[i]) * (double)r->numel[i];
    total += (double)r->numel[i];
    macs[i] = r->l[i].macs;
  }
  *overall = total > 0 ? zeros / total : 0;
  double red = swat_flop_reduction(macs, dw, da, r->n);
  free(macs);
  return red;
}

/* The weight-group size of a layer's Top-K, as the swat pass makes it: a whole kernel (channel) or
 * filter of a Conv weight of rank >= 3 when structured, else single elements. */
static int64_t swat_group(const swat_layer *l, swat_structure s) {
  const ir_value *w = l->weight;
  if (s == SWAT_UNSTRUCTURED || strcmp(l->node->op->name, "Conv") != 0 || w->shape.rank < 3) return 1;
  int64_t g = 1;
  for (int d = s == SWAT_CHANNEL ? 2 : 1; d < w->shape.rank; d++) g *= w->shape.d[d];
  return g;
}

/* out = the weight's evaluation-time Top-K (exactly the runtime's TopKSparsify at period 1): keep the
 * k = ceil((1 - s) groups) largest-magnitude groups, ties kept. Returns the number of nonzeros. */
static int64_t swat_sparsify(const float *w, int64_t n, int64_t group, double sparsity, float *out) {
  if (sparsity <= 0 || group < 1 || n % group) {
    memcpy(out, w, sizeof *out * (size_t)n);
    int64_t nz = 0;
    for (int64_t i = 0; i < n; i++) nz += out[i] != 0.0f;
    return nz;
  }
  int64_t groups = n / group;
  double kv = (1.0 - sparsity) * (double)groups;
  int64_t k = (int64_t)ceil(kv - 1e-9 * (kv > 1 ? kv : 1));
  if (k < 1) k = 1;
  void *scratch = sw_xmalloc(topk_scratch(1));
  float *scores = group > 1 ? sw_xmalloc(sizeof *scores * (size_t)groups) : NULL;
  if (scores) topk_group_scores(w, n, group, scores, 1);
  float thr = k >= groups ? 0.0f : topk_threshold(scores ? scores : w, groups, k, scratch, 1);
  int64_t nz = scores ? topk_apply_groups(w, out, n, group, scores, thr, 1) : topk_apply(w, out, n, thr, 1);
  free(scores);
  free(scratch);
  return nz;
}

static int64_t correct(const float *logits, const int64_t *labels, int64_t n, int64_t classes) {
  int64_t c = 0;
  for (int64_t i = 0; i < n; i++) {
    const float *l = logits + i * classes;
    int64_t best = 0;
    for (int64_t k = 1; k < classes; k++)
      if (l[k] > l[best]) best = k;
    c += best == labels[i];
  }
  return c;
}

/* Runs the evaluation graph over the whole test split: mean loss, accuracy and the counts behind it.
 * sw (may be NULL) sets the current SWAT budgets on the evaluation programs first. */
static int evaluate(model *m, rt_state *st, const sw_dataset *test, const trainer_opts *o, const swat_run *sw, double *loss,
                    double *acc, int64_t *n_good, int64_t *n_seen, sw_err *e) {
  sw_loader_opts lo = {.batch = o->batch, .shuffle = 0, .drop_last = 0, .augment = 0, .seed = o->seed};
  sw_loader ld;
  if (sw_loader_init(&ld, test, &lo, e)) return e->code;
  double lsum = 0;
  int64_t good = 0, seen = 0, got;
  int rc = SW_OK;
  float *img = sw_xmalloc(sizeof(float) * (size_t)o->batch * (size_t)sw_dataset_sample_size(test));
  int64_t *lab = sw_xmalloc(sizeof(int64_t) * (size_t)o->batch);
  const rt_program *budgets_set = NULL;
  while ((got = sw_loader_next(&ld, img, lab)) > 0) {
    bound *b = program_for(m, st, got, o, 0, e);
    if (!b) { rc = e->code; break; }
    if (sw && b->prog != budgets_set) { /* the current budgets, once per program (they do not move here) */
      swat_apply(sw, b->prog);
      budgets_set = b->prog;
    }
    memcpy(b->images, img, sizeof(float) * (size_t)got * (size_t)sw_dataset_sample_size(test));
    memcpy(b->labels, lab, sizeof(int64_t) * (size_t)got);
    if ((rc = rt_program_run(b->prog, 0, e))) break;
    lsum += (double)*b->loss * (double)got;
    good += correct(b->logits, lab, got, b->classes);
    seen += got;
  }
  free(img);
  free(lab);
  sw_loader_free(&ld);
  *loss = seen ? lsum / (double)seen : NAN;
  *acc = seen ? (double)good / (double)seen : 0;
  if (n_good) *n_good = good;
  if (n_seen) *n_seen = seen;
  return rc;
}

/* Loads o->data for the model m (the synthetic shape comes from its input and logits) and checks
 * that its images and labels fit the model. */
static int load_data(const model *m, const trainer_opts *o, sw_dataset *train, sw_dataset *test, sw_err *e) {
  sw_dataset_opts dopt = {.train_limit = o->limit_train, .test_limit = o->limit_test, .seed = o->seed};
  const ir_value *in = ir_value_find(m->g, m->image_input), *lg = ir_value_find(m->g, m->logits_name);
  if (strcmp(o->data, "synthetic") == 0) {
    dopt.syn_c = (int)in->shape.d[1];
    dopt.syn_h = in->shape.rank > 2 ? (int)in->shape.d[2] : 1;
    dopt.syn_w = in->shape.rank > 3 ? (int)in->shape.d[3] : 1;
    dopt.syn_train = o->limit_train ? o->limit_train : 1024;
    dopt.syn_test = o->limit_test ? o->limit_test : 256;
    dopt.syn_classes = (int)lg->shape.d[1];
  }
  if (sw_dataset_load(o->data, &dopt, train, test, e)) return e->code;
  int64_t shape[4] = {0};
  int r = in->shape.rank;
  for (int i = 0; i < r && i < 4; i++) shape[i] = in->shape.d[i] == IR_N ? 0 : in->shape.d[i];
  if (sw_dataset_check_input(train, shape, r, m->image_input, e)) return e->code;
  return sw_dataset_check_classes(train, lg->shape.d[1], e);
}

/* Reads a whole file (the source model, for its hash and for the checkpoint). */
static int read_file(const char *path, unsigned char **out, size_t *n, sw_err *e) {
  *out = NULL;
  *n = 0;
  struct stat pre;
  if (stat(path, &pre) == 0 && !S_ISREG(pre.st_mode)) { /* never open a FIFO or device: it can block */
    sw_fail(e, SW_EINPUT, "'%s' is not a regular file", path);
    return sw_hint(e, "give the path of an .onnx file");
  }
  FILE *f = fopen(path, "rb");
  if (!f) {
    sw_fail(e, SW_EINPUT, "cannot open '%s' (%s)", path, strerror(errno));
    return sw_hint(e, "check the path");
  }
  struct stat sb;
  if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size > IMPORTER_MAX_FILE) {
    fclose(f);
    sw_fail(e, SW_EINPUT, "'%s' is not a regular file of at most 2 GiB", path);
    return sw_hint(e, "pass an ONNX model file");
  }
  size_t sz = (size_t)sb.st_size;
  unsigned char *b = malloc(sz ? sz : 1);
  if (!b) {
    fclose(f);
    return sw_fail(e, SW_ENOMEM, "out of memory reading '%s'", path);
  }
  size_t got = sz ? fread(b, 1, sz, f) : 0;
  fclose(f);
  if (got != sz) {
    free(b);
    return sw_fail(e, SW_EINPUT, "cannot read '%s'", path);
  }
  *out = b;
  *n = sz;
  return SW_OK;
}

/* ---- what a checkpoint records ---- */

/* The options that shape the training trajectory, as the flags that set them; a resumed run must
 * match every one (--epochs and --threads are handled separately). */
typedef struct opt_item {
  const char *key;   /* also the section key */
  const char *label; /* how the message names it */
  int number;        /* compare/print as a number */
  char val[512];
} opt_item;

static int opt_items(const trainer_opts *o, opt_item *it) {
  int n = 0;
#define ITEM(k, l, num, ...)                                  \
  do {                                                        \
    it[n].key = k;                                            \
    it[n].label = l;                                          \
    it[n].number = num;                                       \
    snprintf(it[n].val, sizeof it[n].val, __VA_ARGS__);       \
    n++;                                                      \
  } while (0)
  static const char *const budgets[] = {"uniform", "erk", "momentum-budget"};
  static const char *const structs[] = {"none", "channel", "filter"};
  ITEM("data", "--data", 0, "%s", o->data);
  ITEM("batch", "--batch", 1, "%d", o->batch);
  ITEM("lr", "--lr", 1, "%.17g", o->lr);
  ITEM("momentum", "--momentum", 1, "%.17g", o->momentum);
  ITEM("nesterov", "--nesterov", 0, "%s", o->nesterov ? "on" : "off");
  ITEM("wd", "--wd", 1, "%.17g", o->wd);
  ITEM("schedule", "--schedule", 0, "%s", o->schedule);
  ITEM("milestones", "--milestones", 0, "%s", o->milestones ? o->milestones : "");
  ITEM("warmup-epochs", "--warmup-epochs", 1, "%d", o->warmup_epochs);
  ITEM("seed", "--seed", 1, "%llu", (unsigned long long)o->seed);
  ITEM("limit-train", "--limit-train", 1, "%lld", (long long)o->limit_train);
  ITEM("limit-test", "--limit-test", 1, "%lld", (long long)o->limit_test);
  ITEM("augment", "--augment", 0, "%s", o->augment < 0 ? "auto" : o->augment ? "on" : "off");
  ITEM("drop-last", "--drop-last", 0, "%s", o->drop_last ? "on" : "off");
  ITEM("static-batch", "--static-batch", 0, "%s", o->static_batch ? "on" : "off");
  ITEM("sparsity", "--sparsity", 1, "%.17g", o->swat.sparsity);
  ITEM("budget", "the SWAT budget", 0, "%s", budgets[o->swat.budget]);
  ITEM("sparse-first", "--sparse-first", 0, "%s", o->swat.sparse_first ? "on" : "off");
  ITEM("dense-layers", "--dense-layers", 0, "%s", o->swat.dense_layers ? o->swat.dense_layers : "");
  ITEM("structured", "--structured", 0, "%s", structs[o->swat.structure]);
  ITEM("topk-period", "--topk-period", 1, "%d", o->swat.period);
  ITEM("warmup-epochs-topk", "--warmup-epochs-topk", 1, "%d", o->topk_warmup_epochs);
  ITEM("sparse-kernels", "--sparse-kernels", 0, "%s", o->sparse_kernels ? "on" : "off");
#undef ITEM
  return n;
}

#define MAX_OPT_ITEMS 32

/* Everything one training run holds; the checkpoint is a picture of it. */
typedef struct run {
  const trainer_opts *o;
  const char *model_path;
  unsigned char *model_bytes;
  size_t model_n;
  char sha[65];
  model tm, em;
  rt_pool *pool; /* the training and evaluation programs never run at once: one memory for both */
  swat_run sw;
  int swat_on;
  rt_state st;
  float **mom;           /* [st.n] momentum buffers (NULL entries for tensors without one) */
  sw_dataset train, test;
  sw_loader ld;
  uint64_t step;         /* optimizer steps done */
  int epoch;             /* epoch in progress or next to start, from 0 */
  int64_t bi, good, seen; /* the epoch in progress: batches, correct predictions, images */
  double lsum, lr, train_seconds;
  double test_loss, test_acc;
  int evaluated;         /* test_loss/test_acc hold a result */
  const char *command;   /* the command that started the run (a resumed run keeps its original's) */
  int saved;             /* a checkpoint was written by this process */
  sw_jsonl jl;
  int jl_open;
} run;

static const char *budget_name(const trainer_opts *o) {
  if (o->swat.sparsity <= 0) return "dense";
  return o->swat.budget == SWAT_ERK ? "erk" : o->swat.budget == SWAT_MOMENTUM ? "momentum" : "uniform";
}

/* {"scale": s, "mean": [..], "std": [..]}: x = (pixel * scale - mean[c]) / std[c]. */
static void preprocess_json(const sw_dataset *d, sbuf *b) {
  sb_printf(b, "{\"scale\": %.9g, \"mean\": [", (double)d->scale);
  for (int c = 0; c < d->c && c < SW_DATASET_MAX_C; c++) sb_printf(b, "%s%.9g", c ? ", " : "", (double)d->mean[c]);
  sb_printf(b, "], \"std\": [");
  for (int c = 0; c < d->c && c < SW_DATASET_MAX_C; c++) sb_printf(b, "%s%.9g", c ? ", " : "", (double)d->std[c]);
  sb_printf(b, "]}");
}

/* The folder of a path (for the source model's external data). */
static void folder_of(const char *path, char *buf, size_t cap) {
  const char *sl = strrchr(path, '/');
  if (!sl) snprintf(buf, cap, ".");
  else if (sl == path) snprintf(buf, cap, "/");
  else snprintf(buf, cap, "%.*s", (int)(sl - path), path);
}

/* Fills ck with the whole training state of r. */
static void ckpt_build(const run *r, int finished, sw_ckpt *ck) {
  const trainer_opts *o = r->o;
  sbuf b = {0};
  char dir[1024];
  folder_of(r->model_path, dir, sizeof dir);
  sw_loader_cursor cur = sw_loader_tell(&r->ld);
  sb_printf(&b, "swatc_version=%s\nmodel=%s\nmodel_dir=%s\nmodel_sha256=%s\n", SWATC_VERSION, r->model_path, dir, r->sha);
  sb_printf(&b, "step=%llu\nepoch=%d\nepochs=%d\nfinished=%d\n", (unsigned long long)r->step, r->epoch, o->epochs, finished);
  sb_printf(&b, "epoch_batches=%lld\nepoch_good=%lld\nepoch_seen=%lld\nepoch_loss_sum=%.17g\nepoch_seconds=%.17g\nlr=%.17g\n",
            (long long)r->bi, (long long)r->good, (long long)r->seen, r->lsum, r->train_seconds, r->lr);
  sb_printf(&b, "loader_seed=%llu\nloader_epoch=%lld\nloader_pos=%lld\nloader_n=%lld\n", (unsigned long long)cur.seed,
            (long long)cur.epoch, (long long)cur.pos, (long long)cur.n);
  sb_printf(&b, "evaluated=%d\ntest_loss=%.17g\ntest_acc=%.17g\nthreads=%d\n", r->evaluated, r->test_loss, r->test_acc, o->threads);
  sb_printf(&b, "budget=%s\ndataset=%s\n", budget_name(o), r->train.name);
  if (o->metrics && r->jl_open) {
    long at = ftell(r->jl.f);
    sb_printf(&b, "metrics=%s\nmetrics_bytes=%ld\n", o->metrics, at);
  }
  sb_printf(&b, "command=%s\n", r->command ? r->command : o->command ? o->command : "");
  sw_ckpt_put_text(ck, "meta", b.p);
  b.n = 0;
  opt_item it[MAX_OPT_ITEMS];
  int ni = opt_items(o, it);
  for (int i = 0; i < ni; i++) sb_printf(&b, "%s=%s\n", it[i].key, it[i].val);
  sw_ckpt_put_text(ck, "options", b.p);
  b.n = 0;
  preprocess_json(&r->train, &b);
  sw_ckpt_put_text(ck, "preprocess", b.p);
  sw_ckpt_put(ck, "model.onnx", r->model_bytes, r->model_n);
  /* the SWAT layers: node, weight, current budget (SWAT-M moves it), Top-K group */
  b.n = 0;
  for (int i = 0; i < r->sw.n; i++)
    sb_printf(&b, "%s\t%s\t%.17g\t%lld\n", r->sw.l[i].node->name, r->sw.l[i].weight->name, r->swat_on ? r->sw.l[i].sparsity : 0.0,
              (long long)swat_group(&r->sw.l[i], o->swat.structure));
  sw_ckpt_put_text(ck, "swat/layers", b.p ? b.p : "");
  char name[1100];
  for (int i = 0; i < r->st.n; i++) {
    const rt_tensor *t = &r->st.t[i];
    snprintf(name, sizeof name, "tensor/%s", t->name);
    sw_ckpt_put(ck, name, t->data, sizeof(float) * (size_t)t->numel);
    if (r->mom && r->mom[i]) {
      snprintf(name, sizeof name, "momentum/%s", t->name);
      sw_ckpt_put(ck, name, r->mom[i], sizeof(float) * (size_t)t->numel);
    }
  }
  free(b.p);
}

/* The first state tensor holding a NaN or infinity, or NULL. */
static const char *state_nonfinite(const rt_state *st) {
  for (int i = 0; i < st->n; i++)
    for (int64_t j = 0; j < st->t[i].numel; j++)
      if (!isfinite(st->t[i].data[j])) return st->t[i].name;
  return NULL;
}

/* Writes r's checkpoint to o->checkpoint (never a non-finite state over the last good one). */
static int ckpt_save(run *r, int finished, sw_err *e) {
  const char *bad_t = state_nonfinite(&r->st);
  if (bad_t) {
    sw_fail(e, SW_ENUMERIC, "tensor '%s' holds NaN or infinite values at step %llu; the checkpoint '%s' was not overwritten",
            bad_t, (unsigned long long)r->step, r->o->checkpoint);
    return sw_hint(e, "lower the learning rate (--lr) or add warm-up (--warmup-epochs 1), and resume from the last checkpoint");
  }
  sw_ckpt ck;
  sw_ckpt_init(&ck);
  ckpt_build(r, finished, &ck);
  int rc = sw_ckpt_write(&ck, r->o->checkpoint, e);
  sw_ckpt_free(&ck);
  r->saved |= rc == SW_OK;
  return rc;
}

static int meta_int(const sw_ckpt *ck, const char *key, long long *v) {
  size_t n;
  const char *t = sw_ckpt_get(ck, "meta", &n);
  char buf[64], *end;
  if (!t || !sw_kv_get(t, n, key, buf, sizeof buf)) return 0;
  *v = strtoll(buf, &end, 10);
  return *buf && !*end;
}

static int meta_double(const sw_ckpt *ck, const char *key, double *v) {
  size_t n;
  const char *t = sw_ckpt_get(ck, "meta", &n);
  char buf[64], *end;
  if (!t || !sw_kv_get(t, n, key, buf, sizeof buf)) return 0;
  *v = strtod(buf, &end);
  return *buf && !*end;
}

static void meta_str(const sw_ckpt *ck, const char *key, char *buf, size_t cap) {
  size_t n;
  const char *t = sw_ckpt_get(ck, "meta", &n);
  if (!t || !sw_kv_get(t, n, key, buf, cap)) buf[0] = 0;
}

static int ckpt_incomplete(const char *path, const char *what, sw_err *e) {
  sw_fail(e, SW_EINPUT, "'%s' is not a training checkpoint of this swatc (%s)", path, what);
  return sw_hint(e, "pass a checkpoint written by swatc train --checkpoint");
}

/* Refuses a checkpoint of another model or of a run with other trajectory options. */
static int ckpt_check(const sw_ckpt *ck, const char *path, const run *r, sw_err *e) {
  const trainer_opts *o = r->o;
  char sha[80], was_model[1024], cmd[1024];
  meta_str(ck, "model_sha256", sha, sizeof sha);
  meta_str(ck, "model", was_model, sizeof was_model);
  meta_str(ck, "command", cmd, sizeof cmd);
  if (!sha[0]) return ckpt_incomplete(path, "it has no model hash", e);
  if (strcmp(sha, r->sha) != 0) {
    sw_fail(e, SW_EINPUT, "checkpoint '%s' was made from another model: '%s' (sha256 %.12s...), not '%s' (sha256 %.12s...)", path,
            was_model, sha, r->model_path, r->sha);
    return sw_hint(e, "resume with the model the run started from, or start a new run without --resume");
  }
  size_t n;
  const char *t = sw_ckpt_get(ck, "options", &n);
  if (!t) return ckpt_incomplete(path, "it has no options section", e);
  opt_item it[MAX_OPT_ITEMS];
  int ni = opt_items(o, it), bad = 0;
  sbuf b = {0};
  for (int i = 0; i < ni; i++) {
    char was[512];
    if (!sw_kv_get(t, n, it[i].key, was, sizeof was) || strcmp(was, it[i].val) == 0) continue;
    const char *show_was = was, *show_now = it[i].val;
    if (!strncmp(it[i].key, "limit-", 6)) { /* 0 = every image */
      if (!strcmp(was, "0")) show_was = "all";
      if (!strcmp(it[i].val, "0")) show_now = "all";
    }
    char w2[64], n2[64];
    if (it[i].number && show_was == was && show_now == it[i].val) {
      snprintf(w2, sizeof w2, "%g", strtod(was, NULL));
      snprintf(n2, sizeof n2, "%g", strtod(it[i].val, NULL));
      show_was = w2;
      show_now = n2;
    }
    sb_printf(&b, "%scheckpoint was trained with %s %s, this run asks for %s", bad ? "; " : "", it[i].label,
              *show_was ? show_was : "(none)", *show_now ? show_now : "(none)");
    bad++;
  }
  if (bad) {
    sw_fail(e, SW_EINPUT, "cannot resume from '%s': %s", path, b.p);
    sw_hint(e, "resume with the options of the original run (%s), or start a new run without --resume", cmd[0] ? cmd : "see its command");
    free(b.p);
    return SW_EINPUT;
  }
  free(b.p);
  long long th;
  if (meta_int(ck, "threads", &th) && th != o->threads)
    sw_warn("checkpoint '%s' was trained with --threads %lld, this run uses %d: the result may differ in the last bits from an "
            "uninterrupted run", path, th, o->threads);
  return SW_OK;
}

/* Restores r's state from ck (after ckpt_check): tensors, momentum, counters, cursor, budgets. */
static int ckpt_restore(run *r, const sw_ckpt *ck, const char *path, sw_err *e) {
  char name[1100];
  for (int i = 0; i < r->st.n; i++) {
    rt_tensor *t = &r->st.t[i];
    size_t n;
    snprintf(name, sizeof name, "tensor/%s", t->name);
    const void *d = sw_ckpt_get(ck, name, &n);
    if (!d || n != sizeof(float) * (size_t)t->numel) {
      sw_fail(e, SW_EINPUT, "checkpoint '%s' %s tensor '%s' (%lld values)", path, d ? "has another size for" : "lacks", t->name,
              (long long)t->numel);
      return sw_hint(e, "resume with the model and options of the original run");
    }
    memcpy(t->data, d, n);
    if (r->mom[i]) {
      snprintf(name, sizeof name, "momentum/%s", t->name);
      d = sw_ckpt_get(ck, name, &n);
      if (!d || n != sizeof(float) * (size_t)t->numel) return ckpt_incomplete(path, "a momentum buffer is missing", e);
      memcpy(r->mom[i], d, n);
    }
  }
  long long step, epoch, bi, good, seen, ls, le, lp, ln, ev;
  if (!meta_int(ck, "step", &step) || !meta_int(ck, "epoch", &epoch) || !meta_int(ck, "epoch_batches", &bi) ||
      !meta_int(ck, "epoch_good", &good) || !meta_int(ck, "epoch_seen", &seen) || !meta_double(ck, "epoch_loss_sum", &r->lsum) ||
      !meta_double(ck, "lr", &r->lr) || !meta_int(ck, "loader_seed", &ls) || !meta_int(ck, "loader_epoch", &le) ||
      !meta_int(ck, "loader_pos", &lp) || !meta_int(ck, "loader_n", &ln) || !meta_int(ck, "evaluated", &ev) || step < 0 ||
      epoch < 0 || epoch > 1000000 || bi < 0 || seen < 0)
    return ckpt_incomplete(path, "its step counters are missing", e);
  meta_double(ck, "epoch_seconds", &r->train_seconds);
  meta_double(ck, "test_loss", &r->test_loss);
  meta_double(ck, "test_acc", &r->test_acc);
  r->step = (uint64_t)step;
  r->epoch = (int)epoch;
  r->bi = bi;
  r->good = good;
  r->seen = seen;
  r->evaluated = ev != 0;
  sw_loader_cursor cur = {.seed = (uint64_t)ls, .epoch = le, .pos = lp, .n = ln};
  if (sw_loader_seek(&r->ld, &cur, e)) return e->code;
  /* per-layer budgets (SWAT-M's current ones) */
  size_t n;
  const char *t = sw_ckpt_get(ck, "swat/layers", &n);
  if (!t) return ckpt_incomplete(path, "it has no SWAT layer table", e);
  char *copy = sw_xmalloc(n + 1), *save = NULL;
  memcpy(copy, t, n);
  copy[n] = 0;
  int i = 0;
  for (char *line = strtok_r(copy, "\n", &save); line && i < r->sw.n; line = strtok_r(NULL, "\n", &save), i++) {
    char *f1 = strchr(line, '\t'), *f2 = f1 ? strchr(f1 + 1, '\t') : NULL;
    if (!f2 || strncmp(line, r->sw.l[i].node->name, (size_t)(f1 - line)) != 0) break;
    if (r->swat_on) r->sw.l[i].sparsity = strtod(f2 + 1, NULL);
  }
  free(copy);
  if (i != r->sw.n) return ckpt_incomplete(path, "its SWAT layers differ from the model's", e);
  return SW_OK;
}

/* ---- export ---- */

typedef struct export_tensor {
  const char *name;
  const float *data;
  int64_t numel;
} export_tensor;

typedef struct export_ctx {
  export_tensor *t;
  int n;
  char mismatch[600]; /* the first initializer whose size differs from the trained tensor */
} export_ctx;

static const float *export_lookup(void *ctx, const char *name, int64_t numel) {
  export_ctx *c = ctx;
  for (int i = 0; i < c->n; i++)
    if (strcmp(c->t[i].name, name) == 0) {
      if (c->t[i].numel == numel) return c->t[i].data;
      if (!c->mismatch[0])
        snprintf(c->mismatch, sizeof c->mismatch, "'%s' (%lld values in the model, %lld trained)", name, (long long)numel,
                 (long long)c->t[i].numel);
      return NULL;
    }
  return NULL;
}

/* Writes the model saved in ck (label names it in messages) to out as ONNX. */
static int export_ckpt(const sw_ckpt *ck, const char *label, const char *out, int sparse, int64_t *bytes, sw_err *e) {
  size_t model_n, lt_n;
  const void *model_b = sw_ckpt_get(ck, "model.onnx", &model_n);
  const char *layers = sw_ckpt_get(ck, "swat/layers", &lt_n);
  if (!model_b || !layers) return ckpt_incomplete(label, "it holds no model", e);
  export_ctx c = {0};
  for (int i = 0; i < ck->n; i++)
    if (strncmp(ck->s[i].name, "tensor/", 7) == 0) {
      c.t = sw_xrealloc(c.t, sizeof *c.t * (size_t)(c.n + 1));
      c.t[c.n++] = (export_tensor){ck->s[i].name + 7, ck->s[i].data, (int64_t)(ck->s[i].size / sizeof(float))};
    }
  /* SWAT layers: the weight as the evaluation graph uses it (Top-K'd) */
  char *copy = sw_xmalloc(lt_n + 1), *save = NULL;
  memcpy(copy, layers, lt_n);
  copy[lt_n] = 0;
  float **owned = NULL;
  const char **sparse_names = NULL;
  int n_owned = 0, n_sparse = 0, rc = SW_OK;
  sw_json lj;
  sw_json_init(&lj);
  sw_json_object_begin(&lj, NULL);
  double zeros = 0, total = 0;
  for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    char *node = line, *w = strchr(node, '\t'), *sp = w ? strchr(w + 1, '\t') : NULL, *gr = sp ? strchr(sp + 1, '\t') : NULL;
    if (!gr) {
      rc = ckpt_incomplete(label, "its SWAT layer table is malformed", e);
      break;
    }
    *w++ = 0;
    *sp++ = 0;
    *gr++ = 0;
    double s = strtod(sp, NULL);
    long long group = strtoll(gr, NULL, 10);
    export_tensor *t = NULL;
    for (int i = 0; i < c.n; i++)
      if (strcmp(c.t[i].name, w) == 0) t = &c.t[i];
    if (!t || !(s >= 0 && s < 1) || group < 1) {
      rc = ckpt_incomplete(label, "a SWAT layer's weight is missing", e);
      break;
    }
    float *ws = sw_xmalloc(sizeof(float) * (size_t)(t->numel ? t->numel : 1));
    int64_t nz = swat_sparsify(t->data, t->numel, group, s, ws);
    owned = sw_xrealloc(owned, sizeof *owned * (size_t)(n_owned + 1));
    owned[n_owned++] = ws;
    t->data = ws;
    zeros += (double)(t->numel - nz);
    total += (double)t->numel;
    sw_json_number(&lj, node, t->numel ? (double)(t->numel - nz) / (double)t->numel : 0);
    if (s > 0 && 3 * nz < t->numel) { /* sparse storage (an int64 index + a value per nonzero) is smaller */
      sparse_names = sw_xrealloc(sparse_names, sizeof *sparse_names * (size_t)(n_sparse + 1));
      sparse_names[n_sparse++] = t->name;
    }
  }
  sw_json_object_end(&lj);
  if (!rc) {
    char budget[32], cmd[1024], acc[64] = "", sp_s[64];
    double ta;
    long long ev = 0;
    meta_str(ck, "budget", budget, sizeof budget);
    meta_str(ck, "command", cmd, sizeof cmd);
    if (meta_int(ck, "evaluated", &ev) && ev && meta_double(ck, "test_acc", &ta)) snprintf(acc, sizeof acc, "%.6f", ta);
    snprintf(sp_s, sizeof sp_s, "%.6f", total > 0 ? zeros / total : 0.0);
    size_t pn;
    const char *pre = sw_ckpt_get(ck, "preprocess", &pn);
    export_meta meta[7];
    int nm = 0;
    meta[nm++] = (export_meta){"swatc.version", SWATC_VERSION};
    meta[nm++] = (export_meta){"swatc.budget", budget[0] ? budget : "dense"};
    meta[nm++] = (export_meta){"swatc.sparsity", sp_s};
    meta[nm++] = (export_meta){"swatc.layer_sparsity", sw_json_text(&lj)};
    if (acc[0]) meta[nm++] = (export_meta){"swatc.test_accuracy", acc};
    if (cmd[0]) meta[nm++] = (export_meta){"swatc.command", cmd};
    if (pre) meta[nm++] = (export_meta){"swatc.preprocess", pre};
    char dir[1024];
    meta_str(ck, "model_dir", dir, sizeof dir);
    struct stat sb;
    int have_dir = dir[0] && stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode);
    export_opts eo = {.lookup = export_lookup, .lookup_ctx = &c, .sparse_initializers = sparse, .sparse_names = sparse_names,
                      .n_sparse = n_sparse, .meta = meta, .n_meta = nm};
    rc = exporter_write(model_b, model_n, have_dir ? dir : NULL, &eo, out, bytes, e);
    if (!rc && c.mismatch[0]) {
      unlink(out);
      sw_fail(e, SW_EINPUT, "cannot export %s: the trained tensor %s does not fit the model's initializer", label, c.mismatch);
      rc = sw_hint(e, "this is a bug in swatc; please report it with the model");
    }
  }
  for (int i = 0; i < n_owned; i++) free(owned[i]);
  free(owned);
  free(sparse_names);
  free(copy);
  free(c.t);
  sw_json_free(&lj);
  return rc;
}

int trainer_export(const char *ckpt_path, const char *out_path, int sparse_initializers, int64_t *bytes, sw_err *e) {
  sw_ckpt ck;
  int rc = sw_ckpt_read(ckpt_path, &ck, e);
  if (!rc) rc = export_ckpt(&ck, ckpt_path, out_path, sparse_initializers, bytes, e);
  sw_ckpt_free(&ck);
  return rc;
}

int trainer_ckpt_print(const char *ckpt_path, FILE *f, sw_err *e) {
  sw_ckpt ck;
  if (sw_ckpt_read(ckpt_path, &ck, e)) return e->code;
  fprintf(f, "checkpoint %s: %d sections\n", ckpt_path, ck.n);
  static const char *const text[] = {"meta", "options"};
  for (int k = 0; k < 2; k++) {
    size_t n;
    const char *t = sw_ckpt_get(&ck, text[k], &n);
    for (size_t p = 0; t && p < n;) {
      const char *nl = memchr(t + p, '\n', n - p);
      size_t l = nl ? (size_t)(nl - t - p) : n - p;
      fprintf(f, "%s %.*s\n", text[k], (int)l, t + p);
      p += l + 1;
    }
  }
  for (int i = 0; i < ck.n; i++) {
    const char *nm = ck.s[i].name;
    int tensor = !strncmp(nm, "tensor/", 7), mom = !strncmp(nm, "momentum/", 9);
    char hex[65];
    sw_sha256_hex(ck.s[i].data, ck.s[i].size, hex);
    if (tensor || mom)
      fprintf(f, "%s %s %zu %s\n", tensor ? "tensor" : "momentum", nm + (tensor ? 7 : 9), ck.s[i].size / sizeof(float), hex);
    else if (!strcmp(nm, "model.onnx"))
      fprintf(f, "model %zu bytes, sha256 %s\n", ck.s[i].size, hex);
  }
  sw_ckpt_free(&ck);
  return SW_OK;
}

/* ---- evaluation of an ONNX model ---- */

/* Parses the numbers after "key": in a small JSON object (a number or an array of numbers). */
static int json_numbers(const char *js, const char *key, double *v, int cap) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\"", key);
  const char *p = strstr(js, pat);
  if (!p) return 0;
  p = strchr(p + strlen(pat), ':');
  if (!p) return 0;
  p++;
  while (*p == ' ') p++;
  int arr = *p == '[', n = 0;
  if (arr) p++;
  while (n < cap) {
    char *end;
    double x = strtod(p, &end);
    if (end == p) break;
    v[n++] = x;
    p = end;
    while (*p == ' ') p++;
    if (!arr || *p != ',') break;
    p++;
  }
  return n;
}

/* Warns when the preprocessing recorded in the model differs from the dataset's. */
static void check_preprocess(const char *path, const unsigned char *bytes, size_t n, const sw_dataset *d) {
  char js[1024];
  if (!importer_metadata(bytes, n, "swatc.preprocess", js, sizeof js)) return;
  double scale, mean[SW_DATASET_MAX_C], std[SW_DATASET_MAX_C];
  int ok = json_numbers(js, "scale", &scale, 1) == 1 && json_numbers(js, "mean", mean, SW_DATASET_MAX_C) == d->c &&
           json_numbers(js, "std", std, SW_DATASET_MAX_C) == d->c;
#define NEAR(a, b) (fabs((a) - (double)(b)) <= 1e-6 * (fabs(a) > 1 ? fabs(a) : 1))
  ok = ok && NEAR(scale, d->scale);
  for (int c = 0; ok && c < d->c; c++) ok = NEAR(mean[c], d->mean[c]) && NEAR(std[c], d->std[c]);
#undef NEAR
  if (!ok) {
    sbuf b = {0};
    preprocess_json(d, &b);
    sw_warn("'%s' was trained on inputs preprocessed as %s, but %s is preprocessed as %s: the accuracy below may not be the "
            "model's (evaluate on the dataset it was trained on)", path, js, d->name, b.p);
    free(b.p);
  }
}

int trainer_eval(const char *model_path, const trainer_opts *o, sw_err *e) {
  trainer_opts eo = *o;
  memset(&eo.swat, 0, sizeof eo.swat); /* the model's weights as they are */
  eo.swat.period = 1;
  model m = {0};
  rt_state st;
  rt_state_init(&st);
  sw_dataset train = {0}, test = {0};
  unsigned char *bytes = NULL;
  size_t nb = 0;
  double loss, acc;
  int64_t good = 0, seen = 0;
  int rc = read_file(model_path, &bytes, &nb, e);
  if (!rc) rc = build_graph(model_path, &eo, eval_passes, (int)SW_ARRAY_LEN(eval_passes), NULL, &m, e);
  if (!rc) rc = rt_state_bind(&st, m.g, e);
  if (!rc) rc = load_data(&m, &eo, &train, &test, e);
  if (!rc) {
    check_preprocess(model_path, bytes, nb, &test);
    rc = evaluate(&m, &st, &test, &eo, NULL, &loss, &acc, &good, &seen, e);
  }
  if (!rc) {
    printf("%s on %s: test accuracy %.2f%% (%lld of %lld images), loss %.4f\n", model_path, test.name, 100 * acc, (long long)good,
           (long long)seen, loss);
    if (fflush(stdout) != 0) rc = sw_fail(e, SW_EIO, "writing the output failed");
  }
  free(bytes);
  sw_dataset_free(&train);
  sw_dataset_free(&test);
  model_free(&m);
  rt_state_free(&st);
  return rc;
}

/* ---- the training run ---- */

static volatile sig_atomic_t g_signal; /* SIGINT/SIGTERM seen: finish the step, checkpoint, stop */

static void on_signal(int sig) {
  if (g_signal) _exit(TRAINER_SIGNALLED + sig); /* a second signal stops at once */
  g_signal = sig;
}

/* The command that resumes this run: its own, without --resume/--stop-after-steps, plus --resume FILE. */
static void resume_command(const trainer_opts *o, char *buf, size_t cap) {
  char *copy = sw_xstrdup(o->command ? o->command : "swatc train ..."), *save = NULL;
  size_t n = 0;
  buf[0] = 0;
  int skip = 0;
  for (char *t = strtok_r(copy, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
    if (skip) {
      skip = 0;
      continue;
    }
    if (!strcmp(t, "--resume") || !strcmp(t, "--stop-after-steps")) {
      skip = 1;
      continue;
    }
    if (!strncmp(t, "--resume=", 9) || !strncmp(t, "--stop-after-steps=", 19)) continue;
    n += (size_t)snprintf(buf + n, n < cap ? cap - n : 0, "%s%s", n ? " " : "", t);
    if (n >= cap) break;
  }
  if (n < cap) snprintf(buf + n, cap - n, " --resume %s", o->checkpoint);
  free(copy);
}

static int same_file(const char *a, const char *b) {
  struct stat sa, sb;
  if (stat(a, &sa) != 0 || stat(b, &sb) != 0) return strcmp(a, b) == 0;
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* Opens the metrics file; a resumed run appends after the lines its checkpoint had seen written (lines
 * written after that checkpoint are dropped: the resumed run writes them again). */
static int metrics_open(run *r, const sw_ckpt *ck, sw_err *e) {
  const char *path = r->o->metrics;
  int append = ck != NULL;
  if (ck) {
    char was[1024];
    long long at;
    struct stat sb;
    meta_str(ck, "metrics", was, sizeof was);
    if (was[0] && meta_int(ck, "metrics_bytes", &at) && at >= 0 && same_file(was, path) && stat(path, &sb) == 0 &&
        sb.st_size > at && truncate(path, (off_t)at) != 0) {
      sw_fail(e, SW_EIO, "cannot truncate the metrics file '%s' to the %lld bytes the checkpoint saw (%s)", path, at, strerror(errno));
      return sw_hint(e, "check the file's permissions");
    }
  }
  if (sw_jsonl_open(&r->jl, path, append, e)) return e->code;
  r->jl_open = 1;
  if (append) fseek(r->jl.f, 0, SEEK_END);
  return SW_OK;
}

/* Writes one epoch's metrics line. */
static int metrics_epoch(run *r, sw_json *js, const sw_epoch_stats *es, sw_err *e) {
  sw_json_reset(js);
  sw_metrics_epoch_begin(js, es);
  sw_json_int(js, "steps", (int64_t)r->step);
  if (r->swat_on) {
    swat_run *sw = &r->sw;
    double *dw = sw_xcalloc((size_t)sw->n + 1, sizeof *dw), *da = sw_xcalloc((size_t)sw->n + 1, sizeof *da), overall;
    double red = swat_realised(sw, dw, da, &overall);
    sw_json_number(js, "weight_sparsity", overall);
    sw_json_number(js, "train_flop_reduction", red);
    sw_json_array_begin(js, "layers");
    for (int i = 0; i < sw->n; i++) {
      sw_json_object_begin(js, NULL);
      sw_json_string(js, "name", sw->l[i].node->name);
      sw_json_number(js, "budget", sw->l[i].sparsity);
      sw_json_number(js, "weight_sparsity", 1 - dw[i]);
      sw_json_number(js, "act_sparsity", 1 - da[i]);
      sw_json_object_end(js);
    }
    sw_json_array_end(js);
    free(dw);
    free(da);
  }
  sw_json_object_end(js);
  return sw_jsonl_write(&r->jl, js, e);
}

/* Prints the end-of-training SWAT table. */
static void swat_print(const run *r) {
  const swat_run *sw = &r->sw;
  double *dw = sw_xcalloc((size_t)sw->n + 1, sizeof *dw), *da = sw_xcalloc((size_t)sw->n + 1, sizeof *da), overall;
  double red = swat_realised(sw, dw, da, &overall);
  fprintf(stderr, "\nSWAT sparsity at the end of training (budget -> realised):\n");
  fprintf(stderr, "  %-40s %10s %8s %8s %8s %10s\n", "layer", "params", "budget", "weights", "inputs", "MACs/img");
  for (int i = 0; i < sw->n; i++)
    fprintf(stderr, "  %-40.40s %10lld %8.4f %8.4f %8.4f %10lld\n", sw->l[i].node->name, (long long)sw->numel[i],
            sw->l[i].sparsity, 1 - dw[i], 1 - da[i], (long long)sw->l[i].macs);
  fprintf(stderr, "  overall weight sparsity %.4f, training-FLOP reduction %.1f%%\n\n", overall, 100 * red);
  free(dw);
  free(da);
}

/* Exports the current state of r to o->output and prints where it went. */
static int export_run(const run *r, sw_progress *pr, sw_err *e) {
  sw_ckpt ck;
  sw_ckpt_init(&ck);
  ckpt_build(r, 1, &ck);
  int64_t bytes = 0;
  int rc = export_ckpt(&ck, r->model_path, r->o->output, r->o->sparse_initializers, &bytes, e);
  sw_ckpt_free(&ck);
  if (!rc) sw_progress_result(pr, "exported %s (%lld bytes)", r->o->output, (long long)bytes);
  return rc;
}

/* A resumed run whose checkpoint has done every epoch asked for: say so (and export it if asked). */
static int resume_finished(const run *r, const sw_ckpt *ck, long long done, sw_progress *pr, sw_err *e) {
  double acc = 0;
  long long ev = 0;
  int have = meta_int(ck, "evaluated", &ev) && ev && meta_double(ck, "test_acc", &acc);
  char accs[64] = "";
  if (have) snprintf(accs, sizeof accs, ", test accuracy %.2f%%", 100 * acc);
  fprintf(stderr, "swatc: '%s' holds a finished run (%lld of %d epochs done%s): nothing to train\n", r->o->resume, done,
          r->o->epochs, accs);
  fprintf(stderr, "  hint: pass --epochs N with N > %lld to train further, or export it: swatc export %s -o MODEL.onnx\n", done,
          r->o->resume);
  if (!r->o->output) return SW_OK;
  int64_t bytes = 0;
  int rc = export_ckpt(ck, r->o->resume, r->o->output, r->o->sparse_initializers, &bytes, e);
  if (!rc) sw_progress_result(pr, "exported %s (%lld bytes)", r->o->output, (long long)bytes);
  return rc;
}

int trainer_run(const char *model_path, const trainer_opts *opts, sw_err *e) {
  trainer_opts oo = *opts;
  if (oo.resume && !oo.checkpoint) oo.checkpoint = oo.resume; /* a resumed run keeps checkpointing where it came from */
  const trainer_opts *o = &oo;
  rt_set_sparse_kernels(o->sparse_kernels);
  run R = {0}, *r = &R;
  r->o = o;
  r->model_path = model_path;
  r->test_loss = NAN;
  rt_state_init(&r->st);
  sw_ckpt ck;
  sw_ckpt_init(&ck);
  int have_ck = 0, rc = SW_OK, handlers = 0;
  char first_cmd[2048];
  struct sigaction old_int, old_term;
  sw_json js;
  sw_json_init(&js);
  float *img = NULL;
  int64_t *lab = NULL;
  FILE *dump = NULL;
  g_signal = 0;
  if (o->dump_file) {
    dump = fopen(o->dump_file, "w");
    if (!dump) {
      sw_fail(e, SW_EIO, "cannot write the IR dump to '%s'", o->dump_file);
      return sw_hint(e, "check that the folder exists and is writable");
    }
  }
  sw_progress pr;
  sw_progress_init(&pr, stderr, o->quiet ? SW_PROGRESS_QUIET : SW_PROGRESS_AUTO);

  /* the source model (its bytes go into checkpoints and exports) and, when resuming, the checkpoint */
  if ((rc = read_file(model_path, &r->model_bytes, &r->model_n, e))) goto done;
  sw_sha256_hex(r->model_bytes, r->model_n, r->sha);
  if (o->resume) {
    if ((rc = sw_ckpt_read(o->resume, &ck, e)) || (rc = ckpt_check(&ck, o->resume, r, e))) goto done;
    have_ck = 1;
    meta_str(&ck, "command", first_cmd, sizeof first_cmd);
    if (first_cmd[0]) r->command = first_cmd;
    long long ep, bi, pos, was_epochs;
    if (!meta_int(&ck, "epoch", &ep) || !meta_int(&ck, "epoch_batches", &bi) || !meta_int(&ck, "loader_pos", &pos)) {
      rc = ckpt_incomplete(o->resume, "its step counters are missing", e);
      goto done;
    }
    if (ep >= o->epochs) {
      if (bi == 0 && pos == 0) {
        rc = resume_finished(r, &ck, ep, &pr, e);
        goto done;
      }
      rc = sw_fail(e, SW_EINPUT, "'%s' is in the middle of epoch %lld, beyond --epochs %d", o->resume, ep + 1, o->epochs);
      sw_hint(e, "pass --epochs %lld or more to finish it", ep + 1);
      goto done;
    }
    if (meta_int(&ck, "epochs", &was_epochs) && was_epochs != o->epochs && strncmp(o->schedule, "cosine", 6) == 0)
      sw_warn("the run in '%s' was started with --epochs %lld; the cosine schedule now anneals over %d epochs, so the learning "
              "rate from here on differs from the original run's", o->resume, was_epochs, o->epochs);
  }

  /* the graphs: training step and evaluation forward pass, sharing one state */
  if ((rc = build_graph(model_path, o, train_passes, (int)SW_ARRAY_LEN(train_passes), dump, &r->tm, e))) goto done;
  if ((rc = build_graph(model_path, o, eval_passes, (int)SW_ARRAY_LEN(eval_passes), dump, &r->em, e))) goto done;
  if ((rc = rt_state_bind(&r->st, r->tm.g, e)) || (rc = rt_state_bind(&r->st, r->em.g, e))) goto done;
  r->pool = rt_pool_new();
  r->tm.pool = r->em.pool = r->pool;
  r->swat_on = o->swat.sparsity > 0;
  if ((rc = swat_run_init(&r->sw, r->tm.g, &r->st, o, e))) goto done;

  /* data */
  if ((rc = load_data(&r->tm, o, &r->train, &r->test, e))) goto done;
  sw_loader_opts lo = {.batch = o->batch, .shuffle = 1, .drop_last = o->drop_last, .seed = o->seed};
  /* auto: crop + flip for real 32x32 images (CIFAR); never for synthetic noise */
  int aug = o->augment > 0 ||
            (o->augment < 0 && r->train.h == 32 && r->train.w == 32 && strcmp(r->train.name, "synthetic") != 0);
  lo.augment = aug ? SW_AUG_CROP | SW_AUG_FLIP : 0;
  if ((rc = sw_loader_init(&r->ld, &r->train, &lo, e))) goto done;
  int64_t steps_per_epoch = sw_loader_batches_per_epoch(&r->ld);
  if (steps_per_epoch <= 0) {
    rc = sw_fail(e, SW_EINPUT, "no training batch: %lld samples with batch %d", (long long)r->train.n, o->batch);
    goto done;
  }

  /* optimizer and schedule */
  sw_sgd sgd = {.momentum = (float)o->momentum, .weight_decay = (float)o->wd, .nesterov = o->nesterov};
  if ((rc = sw_sgd_check(&sgd, e))) goto done;
  sw_sched sc;
  {
    char spec[256];
    const char *kind = strcmp(o->schedule, "cosine") == 0 ? "cosine-iter" : strcmp(o->schedule, "cosine-epoch") == 0 ? "cosine" : o->schedule;
    if (strcmp(o->schedule, "step") == 0 && o->milestones) snprintf(spec, sizeof spec, "step:%s", o->milestones);
    else snprintf(spec, sizeof spec, "%s", kind);
    if ((rc = sw_sched_parse(&sc, spec, e))) goto done;
  }
  sc.base_lr = o->lr;
  sc.epochs = o->epochs;
  sc.warmup_epochs = o->warmup_epochs;
  if ((rc = sw_sched_check(&sc, e))) goto done;
  r->mom = sw_xcalloc((size_t)r->st.n + 1, sizeof *r->mom);
  for (int i = 0; i < r->st.n; i++)
    if (r->st.t[i].kind == IR_VAL_PARAM && o->momentum > 0) r->mom[i] = sw_xcalloc((size_t)r->st.t[i].numel, sizeof(float));

  if (have_ck && (rc = ckpt_restore(r, &ck, o->resume, e))) goto done;
  if (o->metrics && (rc = metrics_open(r, have_ck ? &ck : NULL, e))) goto done;
  if (o->checkpoint) { /* a signal finishes the step, writes the checkpoint and stops */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    handlers = 1;
  }
  int64_t sample = sw_dataset_sample_size(&r->train);
  img = sw_xmalloc(sizeof(float) * (size_t)o->batch * (size_t)sample);
  lab = sw_xmalloc(sizeof(int64_t) * (size_t)o->batch);
  if (!o->quiet) {
    int64_t params = 0;
    for (int i = 0; i < r->st.n; i++)
      if (r->st.t[i].kind == IR_VAL_PARAM) params += r->st.t[i].numel;
    sw_progress_message(&pr, "swatc: training %s (%lld parameters) on %s: %lld train / %lld test images, batch %d, %d epochs",
                        model_path, (long long)params, r->train.name, (long long)r->train.n, (long long)r->test.n, o->batch,
                        o->epochs);
    if (have_ck)
      sw_progress_message(&pr, "swatc: resuming from '%s' in epoch %d after step %llu", o->resume, r->epoch + 1,
                          (unsigned long long)r->step);
  }
  uint64_t start_step = r->step;
  while (r->epoch < o->epochs) {
    int epoch = r->epoch;
    double t0 = sw_clock_seconds() - r->train_seconds;
    int64_t got;
    sw_progress_epoch_begin(&pr, epoch, o->epochs, steps_per_epoch);
    for (;;) {
      if (g_signal || (o->stop_after_steps > 0 && r->step == (uint64_t)o->stop_after_steps && r->step > start_step)) {
        int sig = g_signal ? (int)g_signal : SIGTERM;
        r->train_seconds = sw_clock_seconds() - t0;
        if ((rc = ckpt_save(r, 0, e))) goto done;
        char cmd[2300];
        resume_command(o, cmd, sizeof cmd);
        fprintf(stderr, "\ninterrupted: checkpoint written to %s (epoch %d, step %llu); resume with: %s\n", o->checkpoint, epoch + 1,
                (unsigned long long)r->step, cmd);
        rc = TRAINER_SIGNALLED + sig;
        goto done;
      }
      if ((got = sw_loader_next(&r->ld, img, lab)) <= 0) break;
      bound *b = program_for(&r->tm, &r->st, got, o, 1, e);
      if (!b) { rc = e->code; goto done; }
      rt_program_set_topk_exact(b->prog, epoch < o->topk_warmup_epochs);
      if (r->swat_on && o->swat.budget == SWAT_MOMENTUM) swat_apply(&r->sw, b->prog); /* a program built mid-run */
      memcpy(b->images, img, sizeof(float) * (size_t)got * (size_t)sample);
      memcpy(b->labels, lab, sizeof(int64_t) * (size_t)got);
      if ((rc = rt_program_run(b->prog, r->step, e))) goto done;
      float loss = *b->loss;
      if (!isfinite(loss)) {
        const char *node = NULL; /* re-run op by op to name where it started (the run is abandoned anyway) */
        sw_err ne = {0};
        char where[600] = "";
        if (rt_program_find_nonfinite(b->prog, r->step, &node, &ne) == SW_OK && node)
          snprintf(where, sizeof where, " (the first NaN/infinity came from node '%.500s')", node);
        char kept[1200] = "";
        if (o->checkpoint)
          snprintf(kept, sizeof kept, "; %s '%.1000s'%s", have_ck || r->saved ? "the last checkpoint" : "no checkpoint was written to",
                   o->checkpoint, have_ck || r->saved ? " was kept" : "");
        rc = sw_fail(e, SW_ENUMERIC, "the training loss became %s at epoch %d, step %llu%s%s", isnan(loss) ? "NaN" : "infinite",
                     epoch + 1, (unsigned long long)r->step, where, kept);
        sw_hint(e, "lower the learning rate (--lr) or add warm-up (--warmup-epochs 1)");
        goto done;
      }
      r->lr = sw_sched_lr_at(&sc, (int64_t)r->step, steps_per_epoch);
      for (int i = 0; i < r->st.n; i++)
        if (b->grads[i]) sw_sgd_step(&sgd, (float)r->lr, r->st.t[i].data, b->grads[i], r->mom[i], r->st.t[i].numel, r->step == 0);
      if (r->swat_on && o->swat.budget == SWAT_MOMENTUM && o->momentum > 0) swat_momentum_step(&r->sw, &r->tm, r->mom, o);
      r->lsum += (double)loss * (double)got;
      r->good += correct(b->logits, lab, got, b->classes);
      r->seen += got;
      r->step++;
      sw_progress_update(&pr, ++r->bi, r->lsum / (double)r->seen, (double)r->good / (double)r->seen, r->seen);
    }
    sw_loader_next_epoch(&r->ld);
    double t_train = sw_clock_seconds() - t0;
    if ((rc = evaluate(&r->em, &r->st, &r->test, o, r->swat_on ? &r->sw : NULL, &r->test_loss, &r->test_acc, NULL, NULL, e)))
      goto done;
    r->evaluated = 1;
    sw_epoch_stats es = {.epoch = epoch + 1, .train_loss = r->lsum / (double)r->seen, .train_acc = (double)r->good / (double)r->seen,
                         .test_loss = r->test_loss, .test_acc = r->test_acc, .img_per_s = (double)r->seen / t_train, .lr = r->lr,
                         .seconds = sw_clock_seconds() - t0};
    sw_progress_epoch_end(&pr, &es);
    if (r->jl_open && (rc = metrics_epoch(r, &js, &es, e))) goto done;
    r->epoch++;
    r->bi = r->good = r->seen = 0;
    r->lsum = r->train_seconds = 0;
    if (o->checkpoint && (rc = ckpt_save(r, r->epoch == o->epochs, e))) goto done;
    if (g_signal && r->epoch < o->epochs) {
      char cmd[2300];
      resume_command(o, cmd, sizeof cmd);
      fprintf(stderr, "\ninterrupted: checkpoint written to %s (epoch %d, step %llu); resume with: %s\n", o->checkpoint, r->epoch,
              (unsigned long long)r->step, cmd);
      rc = TRAINER_SIGNALLED + (int)g_signal;
      goto done;
    }
  }
  if (r->swat_on && !o->quiet) swat_print(r);
  sw_progress_result(&pr, "test accuracy %.2f%% (loss %.4f) after %d epochs", 100 * r->test_acc, r->test_loss, o->epochs);
  if (o->profile && r->tm.n_b) rt_program_profile_print(r->tm.b[0].prog, stderr);
  if (o->output) rc = export_run(r, &pr, e);
done:
  if (handlers) {
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
  }
  if (r->jl_open) {
    sw_err ce = {0};
    if (sw_jsonl_close(&r->jl, &ce) && !rc) {
      *e = ce;
      rc = ce.code;
    }
  }
  sw_json_free(&js);
  if (r->mom)
    for (int i = 0; i < r->st.n; i++) free(r->mom[i]);
  free(r->mom);
  free(img);
  free(lab);
  free(r->model_bytes);
  sw_ckpt_free(&ck);
  sw_loader_free(&r->ld);
  sw_dataset_free(&r->train);
  sw_dataset_free(&r->test);
  model_free(&r->tm);
  model_free(&r->em);
  rt_pool_free(r->pool);
  rt_state_free(&r->st);
  swat_run_free(&r->sw);
  if (dump) fclose(dump);
  return rc;
}
