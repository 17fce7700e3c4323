/* SWAT pass and budgets:
 * - ERK densities match an independent Python reference (erk_expected.tsv), forced-dense layers too;
 * - SWAT-M budgets sum to the target and follow momentum (99% cap, surplus spread);
 * - the rewired graph: the forward op reads sparse W and dense X, the weight gradient reads sparse X,
 *   the backward-data op reads sparse W, dY is untouched (checked on the IR and on the numbers);
 * - pruned weights still move after an optimizer step;
 * - the saved X_s kept compact (outside the arena) gives the weight gradients of a dense X_s, for
 *   every layer, with the sparse kernels and with their dense fallbacks; the arena shrinks;
 * - a whole SWAT step on the sparse kernels gives the gradients of the same step on the dense ones. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "importer/importer.h"
#include "passes/passes.h"
#include "passes/swat.h"
#include "runtime/runtime.h"
#include "tests/check.h"
#include "train/optim.h"

static const char *src;

/* Runs the training passes up to SWAT (train-mode, add-loss, autodiff, dce, swat) on g with po. */
static void train_passes(ir_graph *g, const pass_opts *po) {
  static const char *const passes[] = {"train-mode", "add-loss", "autodiff", "dce", "swat"};
  sw_err e = {0};
  CHECK(passes_run(g, passes, 5, po, &e) == SW_OK, "%s", e.msg);
}

static ir_graph *load(const char *model) {
  char path[4096];
  snprintf(path, sizeof path, "%s/models/%s.onnx", src, model);
  ir_graph *g = NULL;
  sw_err e = {0};
  importer_opts io = {.batch = IMPORTER_BATCH_AUTO};
  CHECK(importer_load(path, &io, &g, &e) == SW_OK, "%s: %s", model, e.msg);
  return g;
}

static void erk_reference(void) {
  char path[4096], line[1024];
  snprintf(path, sizeof path, "%s/tests/swat/erk_expected.tsv", src);
  FILE *f = fopen(path, "r");
  CHECK(f != NULL, "cannot open %s", path);
  if (!f) return;
  int rows = 0;
  while (fgets(line, sizeof line, f)) {
    if (line[0] == '#') continue;
    char model[64], dense[512], weight[256];
    double s, want;
    if (sscanf(line, "%63s %lf %511s %255s %lf", model, &s, dense, weight, &want) != 5) continue;
    ir_graph *g = load(model);
    if (!g) continue;
    swat_layer *l;
    int n;
    sw_err e = {0};
    swat_opts o = {.sparsity = s, .budget = SWAT_ERK, .dense_layers = strcmp(dense, "-") ? dense : NULL, .period = 1};
    CHECK(swat_layers(g, &l, &n, &e) == SW_OK && swat_budgets(l, n, &o, &e) == SW_OK, "%s", e.msg);
    int found = 0;
    for (int i = 0; i < n; i++)
      if (!strcmp(l[i].weight->name, weight)) {
        found = 1;
        double got = 1.0 - l[i].sparsity;
        CHECK(fabs(got - want) <= 1e-9 * fmax(1, want), "%s %g [%s] %s: density %.12f, reference %.12f", model, s, dense, weight, got, want);
      }
    CHECK(found, "%s: no layer with weight %s", model, weight);
    free(l);
    ir_graph_free(g);
    rows++;
  }
  fclose(f);
  CHECK(rows >= 20, "only %d reference rows", rows);
  printf("ERK: %d layer densities match the Python reference\n", rows);
}

static void momentum_budget(void) {
  int64_t numel[4] = {1000, 5000, 200, 20000};
  double score[4] = {1.0, 0.5, 4.0, 0.1}, d[4];
  swat_momentum_budget(score, numel, 4, 0.9, d);
  double nnz = 0, total = 0;
  for (int i = 0; i < 4; i++) {
    nnz += d[i] * (double)numel[i];
    total += (double)numel[i];
  }
  CHECK(fabs(nnz - 0.1 * total) < 1e-6 * total, "SWAT-M budget sums to %.1f, target %.1f", nnz, 0.1 * total);
  /* shares follow the score (independent of layer size): layer 2 has the largest score and would take
   * 4/5.6 of 2620 nonzeros = 1871 > 99% of its 200 weights: it is made dense, its surplus spread */
  CHECK(d[2] == 1.0, "the layer over 99%% density is dense (%g)", d[2]);
  CHECK(d[0] * 1000 > d[1] * 5000 && d[1] * 5000 > d[3] * 20000, "nonzeros ordered by score: %g %g %g", d[0] * 1000,
        d[1] * 5000, d[3] * 20000);
  /* equal scores: equal nonzero counts */
  double eq[3] = {1, 1, 1}, de[3];
  int64_t en[3] = {1000, 2000, 4000};
  swat_momentum_budget(eq, en, 3, 0.9, de);
  CHECK(fabs(de[0] * 1000 - de[2] * 4000) < 1e-6, "equal scores give equal shares");
  printf("SWAT-M: budgets sum to the target and follow momentum\n");
}

static void rewiring(void) {
  ir_graph *g = load("lenet5");
  if (!g) return;
  sw_err e = {0};
  swat_opts so = {.sparsity = 0.9, .budget = SWAT_UNIFORM, .period = 1};
  pass_opts po = {.verify = 1, .batch = 16, .swat = &so};
  ir_value *conv2_in = ir_value_find(g, "/MaxPool_output_0");
  CHECK(conv2_in != NULL, "conv2's input value");
  if (!conv2_in) return;
  ir_graph_add_output(g, conv2_in); /* keep the dense X alive to the end of the step, to compare with X_s */
  train_passes(g, &po);
  /* IR: conv2 */
  ir_node *fwd = NULL, *gd = NULL, *gw = NULL;
  for (int i = 0; i < g->n_nodes; i++) {
    ir_node *n = g->nodes[i];
    if (!strcmp(n->name, "/conv2/Conv")) fwd = n;
    if (n->fwd && !strcmp(n->fwd->name, "/conv2/Conv") && !strcmp(n->op->name, "ConvGradData")) gd = n;
    if (n->fwd && !strcmp(n->fwd->name, "/conv2/Conv") && !strcmp(n->op->name, "ConvGradWeight")) gw = n;
  }
  CHECK(fwd && gd && gw, "conv2's forward and backward nodes");
  if (!fwd || !gd || !gw) return;
  ir_value *w = ir_value_find(g, "conv2.weight");
  CHECK(fwd->in[1]->producer && !strcmp(fwd->in[1]->producer->op->name, "TopKSparsify") && fwd->in[1]->producer->in[0] == w,
        "forward reads TopK(W)");
  CHECK(!fwd->in[0]->producer || strcmp(fwd->in[0]->producer->op->name, "TopKSparsify"), "forward reads dense X");
  CHECK(gd->in[1] == fwd->in[1], "backward-data reads the same sparse W");
  CHECK(gw->in[1]->producer && !strcmp(gw->in[1]->producer->op->name, "TopKSparsify") && gw->in[1]->producer->in[0] == fwd->in[0],
        "weight gradient reads TopK(X) of the forward input");
  CHECK(gw->in[0] == gd->in[0] && strcmp(gw->in[0]->producer->op->name, "TopKSparsify"), "dY dense, shared by both");
  ir_node *first = NULL;
  for (int i = 0; i < g->n_nodes; i++)
    if (!strcmp(g->nodes[i]->name, "/conv1/Conv")) first = g->nodes[i];
  CHECK(first && first->in[1]->kind == IR_VAL_PARAM, "uniform: the first conv stays dense");
  /* keep W_s and X_s alive to the end of the step too, then plan memory */
  ir_graph_add_output(g, fwd->in[1]);
  ir_graph_add_output(g, gw->in[1]);
  CHECK(pass_memory_plan(g, &po, &e) == SW_OK, "%s", e.msg);
  /* numbers: run one step, check sparsities, then an SGD step moves pruned weights */
  rt_state st;
  rt_state_init(&st);
  rt_program *p = NULL;
  CHECK(rt_state_bind(&st, g, &e) == SW_OK && rt_program_build(g, &st, 16, 2, NULL, &p, &e) == SW_OK, "%s", e.msg);
  if (!p) return;
  float *img = rt_program_buffer(p, g->inputs[0]->name, NULL);
  int64_t *lab = rt_program_buffer(p, PASS_LABELS_INPUT, NULL);
  for (int i = 0; i < 16 * 28 * 28; i++) img[i] = (float)((i * 7919) % 255) / 255.0f - 0.3f;
  for (int i = 0; i < 16; i++) lab[i] = i % 10;
  CHECK(rt_program_run(p, 0, &e) == SW_OK, "%s", e.msg);
  int64_t nw, nx;
  const float *ws = rt_program_buffer(p, fwd->in[1]->name, &nw), *xs = rt_program_buffer(p, gw->in[1]->name, &nx),
              *x = rt_program_buffer(p, fwd->in[0]->name, NULL);
  rt_tensor *wt = rt_state_find(&st, "conv2.weight");
  /* k = ceil(0.1 n) survive, plus the ties at the threshold: kept >= k, and fewer than k lie strictly above it */
  int64_t zw = 0, xdense = 0, kw = (int64_t)ceil(0.1 * (double)nw), kx = (int64_t)ceil(0.1 * (double)nx);
  float tw = INFINITY, tx = INFINITY;
  for (int64_t i = 0; i < nw; i++) {
    zw += ws[i] == 0;
    if (ws[i] != 0 && fabsf(ws[i]) < tw) tw = fabsf(ws[i]);
  }
  int64_t above_w = 0, kept_x = 0, above_x = 0;
  for (int64_t i = 0; i < nw; i++) above_w += fabsf(wt->data[i]) > tw;
  for (int64_t i = 0; i < nx; i++) {
    xdense += x[i] != 0;
    if (xs[i] != 0 && fabsf(xs[i]) < tx) tx = fabsf(xs[i]);
  }
  for (int64_t i = 0; i < nx; i++) {
    kept_x += xs[i] != 0;
    above_x += fabsf(x[i]) > tx;
    CHECK(xs[i] == (fabsf(x[i]) >= tx ? x[i] : 0.0f), "X_s is the Top-K of X at %lld", (long long)i);
  }
  CHECK(nw - zw >= kw && above_w < kw, "W_s keeps ceil(0.1 n) = %lld weights plus ties (kept %lld, %lld above the threshold)",
        (long long)kw, (long long)(nw - zw), (long long)above_w);
  CHECK(kept_x >= kx && above_x < kx, "X_s keeps ceil(0.1 n) = %lld of the whole minibatch plus ties (kept %lld, %lld above)",
        (long long)kx, (long long)kept_x, (long long)above_x);
  CHECK(xdense > nx / 5, "the forward input stays dense (%lld nonzeros)", (long long)xdense);
  const float *dw = rt_program_buffer(p, w->grad->name, NULL);
  int64_t moved_pruned = 0, pruned = 0;
  float *before = malloc(sizeof *before * (size_t)nw);
  memcpy(before, wt->data, sizeof *before * (size_t)nw);
  for (int64_t i = 0; i < nw; i++)
    if (ws[i] == 0) pruned += dw[i] != 0;
  sw_sgd sgd = {.momentum = 0.9f, .weight_decay = 5e-4f};
  float *mom = calloc((size_t)nw, sizeof *mom);
  sw_sgd_step(&sgd, 0.05f, wt->data, dw, mom, nw, 1);
  for (int64_t i = 0; i < nw; i++)
    if (ws[i] == 0 && wt->data[i] != before[i]) moved_pruned++;
  CHECK(pruned > 0 && moved_pruned >= pruned, "pruned weights get gradients (%lld) and move (%lld)", (long long)pruned,
        (long long)moved_pruned);
  printf("SWAT layer rule: sparse W forward and backward-data, sparse X for dW, dense dY, pruned weights move\n");
  free(before);
  free(mom);
  rt_program_free(p);
  rt_state_free(&st);
  ir_graph_free(g);
}

/* The threshold is recomputed exactly every `period` steps and reused in between (the weights move
 * under it); P = 1 recomputes every step; the Top-K warm-up recomputes every step too. */
static void threshold_period(int period, int warmup) {
  ir_graph *g = load("lenet5");
  if (!g) return;
  sw_err e = {0};
  swat_opts so = {.sparsity = 0.9, .budget = SWAT_UNIFORM, .period = period};
  static const char *const passes[] = {"train-mode", "add-loss", "autodiff", "dce", "swat", "memory-plan"};
  pass_opts po = {.verify = 1, .batch = 8, .swat = &so};
  rt_state st;
  rt_state_init(&st);
  rt_program *p = NULL;
  CHECK(passes_run(g, passes, 6, &po, &e) == SW_OK && rt_state_bind(&st, g, &e) == SW_OK &&
            rt_program_build(g, &st, 8, 1, NULL, &p, &e) == SW_OK,
        "%s", e.msg);
  if (!p) return;
  rt_program_set_topk_exact(p, warmup);
  float *img = rt_program_buffer(p, g->inputs[0]->name, NULL);
  int64_t *lab = rt_program_buffer(p, PASS_LABELS_INPUT, NULL);
  for (int i = 0; i < 8 * 28 * 28; i++) img[i] = (float)((i * 7919) % 251) / 251.0f - 0.3f;
  for (int i = 0; i < 8; i++) lab[i] = i;
  rt_tensor *w = rt_state_find(&st, "fc1.weight"), *thr = rt_state_find(&st, "swat./fc1/Gemm.w");
  CHECK(w && thr, "fc1 weight and its Top-K state");
  if (!w || !thr) return;
  float t[6];
  for (int step = 0; step < 6; step++) {
    CHECK(rt_program_run(p, (uint64_t)step, &e) == SW_OK, "%s", e.msg);
    t[step] = thr->data[0];
    for (int64_t i = 0; i < w->numel; i++) w->data[i] *= 1.01f + 0.001f * (float)(i % 7); /* move the weights */
  }
  for (int step = 1; step < 6; step++) {
    int recompute = warmup || step % period == 0;
    CHECK(recompute ? t[step] != t[step - 1] : t[step] == t[step - 1], "period %d%s, step %d: threshold %s (%g -> %g)", period,
          warmup ? " warm-up" : "", step, recompute ? "recomputed" : "reused", (double)t[step - 1], (double)t[step]);
  }
  rt_program_free(p);
  rt_state_free(&st);
  ir_graph_free(g);
}

/* Structured selection on conv2 of LeNet-5 (W [16,6,5,5]): channel mode keeps whole 5x5 kernels, the top
 * ceil((1-s)*16*6) by L1; filter mode keeps whole filters, the top ceil((1-s)*16). Fully-connected
 * layers stay unstructured. */
static void structured(swat_structure mode) {
  ir_graph *g = load("lenet5");
  if (!g) return;
  sw_err e = {0};
  swat_opts so = {.sparsity = 0.5, .budget = SWAT_UNIFORM, .structure = mode, .period = 1};
  pass_opts po = {.verify = 1, .batch = 4, .swat = &so};
  train_passes(g, &po);
  ir_node *conv2 = NULL, *fc1 = NULL;
  for (int i = 0; i < g->n_nodes; i++) {
    if (!strcmp(g->nodes[i]->name, "/conv2/Conv")) conv2 = g->nodes[i];
    if (!strcmp(g->nodes[i]->name, "/fc1/Gemm")) fc1 = g->nodes[i];
  }
  CHECK(conv2 && fc1, "conv2 and fc1");
  if (!conv2 || !fc1) return;
  ir_graph_add_output(g, conv2->in[1]);
  CHECK(ir_attr_int(fc1->in[1]->producer, "group") == 1, "fully-connected weights stay unstructured");
  CHECK(pass_memory_plan(g, &po, &e) == SW_OK, "%s", e.msg);
  rt_state st;
  rt_state_init(&st);
  rt_program *p = NULL;
  CHECK(rt_state_bind(&st, g, &e) == SW_OK && rt_program_build(g, &st, 4, 1, NULL, &p, &e) == SW_OK, "%s", e.msg);
  if (!p) return;
  CHECK(rt_program_run(p, 0, &e) == SW_OK, "%s", e.msg);
  const float *ws = rt_program_buffer(p, conv2->in[1]->name, NULL), *w = rt_state_find(&st, "conv2.weight")->data;
  int group = mode == SWAT_CHANNEL ? 25 : 150, ng = 2400 / group, kept = 0;
  double *l1 = calloc((size_t)ng, sizeof *l1), kmin = INFINITY, dmax = 0;
  for (int j = 0; j < ng; j++) {
    int nz = 0;
    for (int i = 0; i < group; i++) {
      l1[j] += fabsf(w[j * group + i]);
      nz += ws[j * group + i] != 0;
      CHECK(ws[j * group + i] == 0 || ws[j * group + i] == w[j * group + i], "kept values are the weights");
    }
    CHECK(nz == 0 || nz == group, "group %d is kept or dropped whole (%d of %d nonzero)", j, nz, group);
    if (nz) {
      kept++;
      if (l1[j] < kmin) kmin = l1[j];
    } else if (l1[j] > dmax) {
      dmax = l1[j];
    }
  }
  CHECK(kept == (int)ceil(0.5 * ng), "%s: %d of %d groups kept, want %d", mode == SWAT_CHANNEL ? "channel" : "filter", kept, ng,
        (int)ceil(0.5 * ng));
  CHECK(kmin >= dmax, "every kept group has a larger L1 than every dropped one (%g vs %g)", kmin, dmax);
  free(l1);
  rt_program_free(p);
  rt_state_free(&st);
  ir_graph_free(g);
}

/* One LeNet-5 SWAT step at batch 16; keep_dense makes every X_s a graph output (so it stays a dense
 * arena tensor). Returns the program (NULL on failure); *g and *st receive the graph and the state. */
static rt_program *swat_step(int keep_dense, int budget, double sparsity, ir_graph **gp, rt_state *st) {
  ir_graph *g = load("lenet5");
  *gp = g;
  rt_state_init(st);
  if (!g) return NULL;
  sw_err e = {0};
  swat_opts so = {.sparsity = sparsity, .budget = (swat_budget)budget, .period = 1};
  pass_opts po = {.verify = 1, .batch = 16, .swat = &so};
  train_passes(g, &po);
  int compact = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    ir_node *n = g->nodes[i];
    if (strcmp(n->op->name, "TopKSparsify") || strcmp(ir_attr_string(n, "kind"), "activation")) continue;
    if (keep_dense) ir_graph_add_output(g, n->out[0]);
    compact += ir_value_compact(n->out[0]);
  }
  CHECK(keep_dense ? compact == 0 : compact >= 4, "%d compact X_s (conv2, fc1, fc2, fc3; conv1 too under SWAT-M)", compact);
  rt_program *p = NULL;
  CHECK(pass_memory_plan(g, &po, &e) == SW_OK && rt_state_bind(st, g, &e) == SW_OK && rt_program_build(g, st, 16, 2, NULL, &p, &e) == SW_OK,
        "%s", e.msg);
  if (!p) return NULL;
  float *img = rt_program_buffer(p, g->inputs[0]->name, NULL);
  int64_t *lab = rt_program_buffer(p, PASS_LABELS_INPUT, NULL);
  for (int i = 0; i < 16 * 28 * 28; i++) img[i] = (float)((i * 7919) % 255) / 255.0f - 0.3f;
  for (int i = 0; i < 16; i++) lab[i] = i % 10;
  CHECK(rt_program_run(p, 0, &e) == SW_OK, "%s", e.msg);
  return p;
}

/* sparsity 0.3 puts X_s above the sparse kernels' crossover: the dense kernels read it unpacked */
static void compact_xs(int budget, double sparsity) {
  ir_graph *gc, *gd;
  rt_state sc, sd;
  rt_program *pc = swat_step(0, budget, sparsity, &gc, &sc), *pd = swat_step(1, budget, sparsity, &gd, &sd);
  if (pc && pd) {
    CHECK(rt_program_arena_bytes(pc) < rt_program_arena_bytes(pd), "compact X_s: arena %lld < %lld bytes",
          (long long)rt_program_arena_bytes(pc), (long long)rt_program_arena_bytes(pd));
    static const char *const w[] = {"conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight", "fc3.weight"};
    for (int i = 0; i < 5; i++) {
      ir_value *vc = ir_value_find(gc, w[i]), *vd = ir_value_find(gd, w[i]);
      int64_t n = 0;
      const float *a = rt_program_buffer(pc, vc->grad->name, &n), *b = rt_program_buffer(pd, vd->grad->name, NULL);
      double md = 0, mx = 0;
      for (int64_t k = 0; k < n; k++) {
        md = fmax(md, fabs((double)a[k] - b[k]));
        mx = fmax(mx, fabs((double)b[k]));
      }
      CHECK(n > 0 && md <= 1e-5 * fmax(mx, 1e-3), "%s: dW from compact X_s within %.2g of the dense X_s's (max |dW| %.3g)",
            w[i], md, mx);
    }
  }
  rt_program_free(pc);
  rt_program_free(pd);
  rt_state_free(&sc);
  rt_state_free(&sd);
  ir_graph_free(gc);
  ir_graph_free(gd);
}

/* The same SWAT step on the sparse kernels and on the dense ones (rt_set_sparse_kernels): every
 * parameter's gradient agrees to float rounding. */
static void kernels_ab(void) {
  ir_graph *gs, *gd;
  rt_state ss, sd;
  rt_set_sparse_kernels(1);
  rt_program *ps = swat_step(0, SWAT_UNIFORM, 0.9, &gs, &ss);
  rt_set_sparse_kernels(0);
  rt_program *pd = swat_step(0, SWAT_UNIFORM, 0.9, &gd, &sd);
  rt_set_sparse_kernels(1);
  int compared = 0;
  for (int i = 0; ps && pd && i < ss.n; i++) {
    ir_value *vs = ir_value_find(gs, ss.t[i].name), *vd = ir_value_find(gd, ss.t[i].name);
    if (!vs || !vs->grad || !vd || !vd->grad) continue;
    int64_t n = 0;
    const float *a = rt_program_buffer(ps, vs->grad->name, &n), *b = rt_program_buffer(pd, vd->grad->name, NULL);
    double md = 0, mx = 0;
    for (int64_t k = 0; k < n; k++) {
      md = fmax(md, fabs((double)a[k] - b[k]));
      mx = fmax(mx, fabs((double)b[k]));
    }
    CHECK(md <= 1e-5 * fmax(mx, 1e-3), "%s: gradient on the sparse kernels within %.2g of the dense kernels' (max %.3g)",
          ss.t[i].name, md, mx);
    compared++;
  }
  CHECK(compared >= 10, "compared %d gradients", compared);
  rt_program_free(ps);
  rt_program_free(pd);
  rt_state_free(&ss);
  rt_state_free(&sd);
  ir_graph_free(gs);
  ir_graph_free(gd);
}

/* Programs sharing a pool (batches 16, 8 and 32 of one SWAT training graph: the second fits in the
 * first's memory, the third needs a larger block) compute, run interleaved, exactly what programs of
 * their own compute. */
static void pooled(void) {
  ir_graph *g = load("lenet5");
  if (!g) return;
  sw_err e = {0};
  swat_opts so = {.sparsity = 0.9, .budget = SWAT_UNIFORM, .period = 3};
  pass_opts po = {.verify = 1, .batch = 16, .swat = &so};
  train_passes(g, &po);
  const int batches[3] = {16, 8, 32};
  rt_state st[2];
  rt_program *p[2][3] = {{NULL}};
  rt_pool *pool = rt_pool_new();
  for (int k = 0; k < 2; k++) {
    rt_state_init(&st[k]);
    CHECK(rt_state_bind(&st[k], g, &e) == SW_OK, "%s", e.msg);
    for (int b = 0; b < 3; b++) {
      pass_opts pb = {.batch = batches[b]};
      CHECK(pass_memory_plan(g, &pb, &e) == SW_OK && rt_program_build(g, &st[k], batches[b], 2, k ? NULL : pool, &p[k][b], &e) == SW_OK,
            "%s", e.msg);
    }
  }
  rt_pool_free(pool); /* the programs keep their blocks */
  ir_value *w = ir_value_find(g, "conv2.weight");
  const int order[4] = {0, 1, 2, 0};
  for (int r = 0; r < 4 && w && w->grad; r++) {
    double diff = 0;
    int64_t n = 0;
    for (int k = 0; k < 2; k++) { /* run the pooled program, then its private twin, on the same data */
      rt_program *q = p[k][order[r]];
      if (!q) return;
      float *img = rt_program_buffer(q, g->inputs[0]->name, &n);
      int64_t *lab = rt_program_buffer(q, PASS_LABELS_INPUT, NULL);
      for (int64_t i = 0; i < n; i++) img[i] = (float)((i * 7919 + r) % 255) / 255.0f - 0.3f;
      for (int i = 0; i < batches[order[r]]; i++) lab[i] = (i + r) % 10;
      CHECK(rt_program_run(q, (uint64_t)r, &e) == SW_OK, "%s", e.msg);
    }
    const float *a = rt_program_buffer(p[0][order[r]], w->grad->name, &n), *b = rt_program_buffer(p[1][order[r]], w->grad->name, NULL);
    for (int64_t i = 0; i < n; i++) diff = fmax(diff, fabs((double)a[i] - b[i]));
    const float *la = rt_program_buffer(p[0][order[r]], g->outputs[0]->name, NULL), *lb = rt_program_buffer(p[1][order[r]], g->outputs[0]->name, NULL);
    CHECK(diff == 0 && la[0] == lb[0], "run %d (batch %d): pooled program's loss and conv2 gradient equal a private program's", r,
          batches[order[r]]);
  }
  for (int k = 0; k < 2; k++) {
    for (int b = 0; b < 3; b++) rt_program_free(p[k][b]);
    rt_state_free(&st[k]);
  }
  ir_graph_free(g);
}

/* ResNet-20: a block's first conv and its projection shortcut read one activation; at one budget they
 * share one X_s (one Top-K, whose output both weight gradients read), under SWAT-M each keeps its own. */
static void shared_xs(swat_budget budget) {
  ir_graph *g = load("resnet20");
  if (!g) return;
  swat_opts so = {.sparsity = 0.9, .budget = budget, .period = 10};
  pass_opts po = {.verify = 1, .batch = 8, .swat = &so};
  train_passes(g, &po);
  int topk_x = 0, wgrads = 0, shared = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    const ir_node *n = g->nodes[i];
    if (!strcmp(n->op->name, "TopKSparsify") && !strcmp(ir_attr_string(n, "kind"), "activation")) topk_x++;
    if (strcmp(n->op->name, "ConvGradWeight") || !n->in[1]->producer || strcmp(n->in[1]->producer->op->name, "TopKSparsify"))
      continue;
    wgrads++;
    for (int j = 0; j < g->n_nodes; j++)
      shared += j != i && !strcmp(g->nodes[j]->op->name, "ConvGradWeight") && g->nodes[j]->in[1] == n->in[1];
  }
  /* 20 sparse convs (the stem conv stays dense under the uniform budget; SWAT-M sparsifies it) and the
   * fc layer, whose X_s has its own Top-K */
  int want_w = budget == SWAT_MOMENTUM ? 21 : 20, want_shared = budget == SWAT_MOMENTUM ? 0 : 4;
  CHECK(wgrads == want_w && shared == want_shared && topk_x == want_w - want_shared / 2 + 1,
        "%s: %d weight gradients on X_s (want %d), %d reading a shared one (want %d), %d activation Top-Ks",
        budget == SWAT_MOMENTUM ? "SWAT-M" : "uniform", wgrads, want_w, shared, want_shared, topk_x);
  ir_graph_free(g);
}

int main(int argc, char **argv) {
  src = argc > 1 ? argv[1] : ".";
  sw_quiet = 1;
  erk_reference();
  momentum_budget();
  rewiring();
  threshold_period(3, 0);
  threshold_period(1, 0);
  threshold_period(4, 1);
  structured(SWAT_CHANNEL);
  structured(SWAT_FILTER);
  compact_xs(SWAT_UNIFORM, 0.9);
  compact_xs(SWAT_MOMENTUM, 0.9);
  compact_xs(SWAT_UNIFORM, 0.3);
  shared_xs(SWAT_UNIFORM);
  shared_xs(SWAT_MOMENTUM);
  kernels_ab();
  pooled();
  printf("Compact X_s: weight gradients equal the dense X_s's; the arena shrinks\n");
  printf("Sparse kernels: a SWAT step's gradients equal the dense kernels'\n");
  printf("Structured: whole kernels (channel) and whole filters (filter), top L1, FC layers unstructured\n");
  printf("Top-K thresholds: reused between exact recomputes, every step at P = 1 and during warm-up\n");
  return check_report("test_swat");
}
