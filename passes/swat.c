/* swat: inserts SWAT's Top-K nodes into a differentiated graph (../shared/SWAT.md):
 *
 *   W_s = TopKSparsify(W)  read by the forward op and by the backward-data op (dX uses sparse W);
 *   X_s = TopKSparsify(X)  read by the weight-gradient op only (the forward op keeps the dense X);
 *   dY stays dense, and dW (dense, shape of W) still updates every weight.
 *
 * A graph without a backward (evaluation) gets only the weight Top-K, exact on every run. Each Top-K
 * node keeps [threshold, realised density] in a STATE tensor of its own. */
#include <math.h>
#include <string.h>

#include "passes/passes.h"
#include "passes/swat.h"

/* The trained weight of a layer node: its input 1, or what the swat pass's Top-K of it reads. */
static ir_value *layer_weight(const ir_node *n) {
  if (n->role != IR_ROLE_FWD || n->n_in < 2 || !n->in[1]) return NULL;
  if (strcmp(n->op->name, "Conv") && strcmp(n->op->name, "Gemm") && strcmp(n->op->name, "MatMul")) return NULL;
  ir_value *w = n->in[1];
  if (w->producer && !strcmp(w->producer->op->name, "TopKSparsify")) w = w->producer->in[0];
  return w->kind == IR_VAL_PARAM ? w : NULL;
}

int swat_layers(const ir_graph *g, swat_layer **out, int *n, sw_err *e) {
  (void)e;
  *out = NULL;
  *n = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    ir_node *nd = g->nodes[i];
    if (!layer_weight(nd)) continue;
    *out = sw_xrealloc(*out, sizeof **out * (size_t)(*n + 1));
    swat_layer *l = &(*out)[(*n)++];
    memset(l, 0, sizeof *l);
    l->node = nd;
    l->weight = layer_weight(nd);
    l->numel = ir_shape_numel(&l->weight->shape);
    l->macs = ir_node_macs_per_image(nd);
    double sum = 0, prod = 1;
    for (int d = 0; d < l->weight->shape.rank; d++) {
      sum += (double)l->weight->shape.d[d];
      prod *= (double)l->weight->shape.d[d];
    }
    l->raw = prod > 0 ? sum / prod : 0;
  }
  return SW_OK;
}

static int named(const char *list, const swat_layer *l) {
  if (!list) return 0;
  const char *w = l->weight->name;
  size_t wl = strlen(w);
  size_t stem = wl > 7 && !strcmp(w + wl - 7, ".weight") ? wl - 7 : wl;
  for (const char *p = list; *p;) {
    const char *c = strchr(p, ',');
    size_t n = c ? (size_t)(c - p) : strlen(p);
    if ((n == strlen(l->node->name) && !strncmp(p, l->node->name, n)) || (n == wl && !strncmp(p, w, n)) ||
        (n == stem && !strncmp(p, w, n)))
      return 1;
    if (!c) break;
    p = c + 1;
  }
  return 0;
}

int swat_erk(const double *raw, const int64_t *numel, const int *dense, int n, double sparsity, double *density, sw_err *e) {
  unsigned char *fixed = sw_xcalloc((size_t)n + 1, 1);
  double total = 0;
  for (int i = 0; i < n; i++) {
    total += (double)numel[i];
    fixed[i] = dense && dense[i];
  }
  double budget = (1.0 - sparsity) * total, eps = 0;
  for (;;) {
    double fixed_n = 0, scored = 0, max_raw = -1;
    for (int i = 0; i < n; i++) {
      if (fixed[i]) fixed_n += (double)numel[i];
      else {
        scored += raw[i] * (double)numel[i];
        if (raw[i] > max_raw) max_raw = raw[i];
      }
    }
    if (max_raw < 0) { /* every layer dense */
      eps = 0;
      break;
    }
    eps = (budget - fixed_n) / scored;
    if (eps <= 0) {
      free(fixed);
      sw_fail(e, SW_EINPUT, "sparsity %.3g cannot be met: the layers kept dense already hold more than %.1f%% of the weights",
              sparsity, 100 * (1 - sparsity));
      return sw_hint(e, "lower --sparsity or keep fewer layers dense");
    }
    if (eps * max_raw <= 1.0) break;
    for (int i = 0; i < n; i++) /* every layer tied at the largest score becomes dense at once */
      if (!fixed[i] && raw[i] == max_raw) fixed[i] = 1;
  }
  for (int i = 0; i < n; i++) density[i] = fixed[i] ? 1.0 : eps * raw[i];
  free(fixed);
  return SW_OK;
}

void swat_momentum_budget(const double *score, const int64_t *numel, int n, double sparsity, double *density) {
  double total = 0;
  for (int i = 0; i < n; i++) total += (double)numel[i];
  double budget = (1.0 - sparsity) * total;
  /* small fixed arrays: called every training step (SWAT-M), so no allocation for up to 256 layers */
  unsigned char dense_s[256] = {0};
  double nnz_s[256];
  unsigned char *dense = n <= 256 ? dense_s : sw_xcalloc((size_t)n + 1, 1);
  double *nnz = n <= 256 ? nnz_s : sw_xcalloc((size_t)n + 1, sizeof *nnz);
  double ssum = 0;
  for (int i = 0; i < n; i++) ssum += score[i] > 0 ? score[i] : 0;
  for (int i = 0; i < n; i++) nnz[i] = ssum > 0 ? budget * (score[i] > 0 ? score[i] : 0) / ssum : budget / n;
  for (int iter = 0; iter < 4 * n + 4; iter++) {
    double surplus = 0;
    int open = 0;
    for (int i = 0; i < n; i++) {
      if (!dense[i] && nnz[i] > 0.99 * (double)numel[i]) {
        dense[i] = 1;
        surplus += nnz[i] - (double)numel[i];
        nnz[i] = (double)numel[i];
      }
      if (!dense[i]) open++;
    }
    if (surplus <= 0 || open == 0) break;
    for (int i = 0; i < n; i++)
      if (!dense[i]) nnz[i] += surplus / open; /* spread evenly over the others */
  }
  for (int i = 0; i < n; i++) {
    density[i] = numel[i] ? nnz[i] / (double)numel[i] : 1.0;
    if (density[i] > 1) density[i] = 1;
    if (density[i] < 1.0 / (double)(numel[i] ? numel[i] : 1)) density[i] = 1.0 / (double)(numel[i] ? numel[i] : 1);
  }
  if (dense != dense_s) free(dense);
  if (nnz != nnz_s) free(nnz);
}

double swat_flop_reduction(const int64_t *macs, const double *dw, const double *da, int n) {
  double f = 0, s = 0;
  for (int i = 0; i < n; i++) {
    f += (double)macs[i];
    s += (double)macs[i] * (2 * dw[i] + da[i]);
  }
  return f > 0 ? 1.0 - s / (3 * f) : 0;
}

int swat_budgets(swat_layer *l, int n, const swat_opts *o, sw_err *e) {
  if (o->dense_layers) { /* every name must match a layer */
    for (const char *p = o->dense_layers; *p;) {
      const char *c = strchr(p, ',');
      size_t len = c ? (size_t)(c - p) : strlen(p);
      char one[512];
      snprintf(one, sizeof one, "%.*s", (int)(len < 511 ? len : 511), p);
      int hit = 0;
      for (int i = 0; i < n && !hit; i++) hit = named(one, &l[i]);
      if (!hit && len) {
        sw_fail(e, SW_EINPUT, "--dense-layers: '%s' names no Conv/Gemm layer of the model", one);
        return sw_hint(e, "use a node name or a weight name as `swatc inspect MODEL --sparsity S` lists them");
      }
      if (!c) break;
      p = c + 1;
    }
  }
  for (int i = 0; i < n; i++) l[i].forced_dense = named(o->dense_layers, &l[i]);
  if (o->sparsity <= 0) {
    for (int i = 0; i < n; i++) l[i].sparsity = 0;
    return SW_OK;
  }
  if (o->budget == SWAT_ERK) {
    double *raw = sw_xmalloc(sizeof *raw * (size_t)(n + 1)), *d = sw_xmalloc(sizeof *d * (size_t)(n + 1));
    int64_t *num = sw_xmalloc(sizeof *num * (size_t)(n + 1));
    int *dense = sw_xmalloc(sizeof *dense * (size_t)(n + 1));
    for (int i = 0; i < n; i++) {
      raw[i] = l[i].raw;
      num[i] = l[i].numel;
      dense[i] = l[i].forced_dense;
    }
    int rc = swat_erk(raw, num, dense, n, o->sparsity, d, e);
    for (int i = 0; !rc && i < n; i++) l[i].sparsity = d[i] >= 1.0 ? 0.0 : 1.0 - d[i];
    free(raw);
    free(d);
    free(num);
    free(dense);
    return rc;
  }
  /* uniform (also SWAT-M's starting point): s everywhere, the first layer dense unless asked */
  for (int i = 0; i < n; i++)
    l[i].sparsity = l[i].forced_dense || (i == 0 && !o->sparse_first && o->budget == SWAT_UNIFORM) ? 0.0 : o->sparsity;
  return SW_OK;
}

/* ---- the pass ---- */

static ir_node *insert_topk(ir_graph *g, ir_value *x, const char *name, const char *state_name, const char *kind, double s,
                            int period, int64_t group, int before, sw_err *e) {
  ir_shape ss = {.rank = 1, .d = {2}};
  ir_value *st = ir_value_new(g, ir_unique_name(g, state_name), IR_VAL_STATE, IR_F32, &ss);
  float *init = sw_xmalloc(2 * sizeof *init);
  init[0] = -1.0f; /* no threshold yet: the first run selects exactly */
  init[1] = 1.0f;
  ir_value_set_data(st, init, 2 * sizeof *init);
  ir_node *n = ir_emit(g, "TopKSparsify", name, 2, (ir_value *[]){x, st}, 2);
  n->out[1]->updates = st;
  ir_attr_set_float(g, n, "sparsity", s);
  ir_attr_set_int(g, n, "period", period);
  if (group > 1) ir_attr_set_int(g, n, "group", group);
  ir_attr_set_string(g, n, "kind", kind);
  if (ir_infer_node(n, e)) return NULL;
  ir_graph_move_node(g, n, before);
  return n;
}

static int index_of(const ir_graph *g, const ir_node *n) {
  for (int i = 0; i < g->n_nodes; i++)
    if (g->nodes[i] == n) return i;
  return -1;
}

/* The activation Top-K an earlier layer inserted on x at sparsity s, or NULL. Layers that read one
 * activation at one budget (a ResNet block's first conv and its projection shortcut) share their X_s:
 * their selections would be equal, step for step. */
static ir_node *shared_topk_x(const ir_graph *g, const ir_value *x, double s) {
  for (int i = 0; i < g->n_nodes; i++) {
    ir_node *t = g->nodes[i];
    if (!strcmp(t->op->name, "TopKSparsify") && t->in[0] == x && !strcmp(ir_attr_string(t, "kind"), "activation") &&
        ir_attr_float(t, "sparsity") == s)
      return t;
  }
  return NULL;
}

/* 1 when every reader of X_s is a weight-gradient op, which can read the compact form. */
static int compact_ok(const ir_graph *g, const ir_value *xs) {
  for (int i = 0; i < g->n_nodes; i++) {
    const ir_node *b = g->nodes[i];
    for (int k = 0; k < b->n_in; k++)
      if (b->in[k] == xs && strcmp(b->op->name, "ConvGradWeight") != 0 && strcmp(b->op->name, "GemmGradWeight") != 0) return 0;
  }
  return !xs->is_output;
}

int pass_swat(ir_graph *g, const pass_opts *o, sw_err *e) {
  const swat_opts *so = o ? o->swat : NULL;
  if (!so || so->sparsity <= 0) return SW_OK;
  for (int i = 0; i < g->n_nodes; i++)
    if (!strcmp(g->nodes[i]->op->name, "TopKSparsify")) return SW_OK; /* already applied */
  swat_layer *l;
  int n;
  if (swat_layers(g, &l, &n, e) || swat_budgets(l, n, so, e)) {
    free(l);
    return e->code;
  }
  int has_backward = 0;
  for (int i = 0; i < g->n_nodes; i++) has_backward |= g->nodes[i]->role == IR_ROLE_BWD;
  int sparse = 0;
  for (int i = 0; i < n; i++) {
    if (l[i].sparsity <= 0) continue;
    ir_node *f = l[i].node;
    ir_value *w = l[i].weight, *x = f->in[0];
    char name[512], sname[512];
    int64_t group = 1;
    if (so->structure != SWAT_UNSTRUCTURED && !strcmp(f->op->name, "Conv") && w->shape.rank >= 3) {
      group = 1;
      for (int d = so->structure == SWAT_CHANNEL ? 2 : 1; d < w->shape.rank; d++) group *= w->shape.d[d];
    }
    snprintf(name, sizeof name, "%s/topk_w", f->name);
    snprintf(sname, sizeof sname, "swat%s.%s.w", has_backward ? "" : ".eval", f->name);
    ir_node *tw = insert_topk(g, w, name, sname, "weight", l[i].sparsity, has_backward ? so->period : 1, group, index_of(g, f), e);
    if (!tw) break;
    ir_value *ws = tw->out[0];
    f->in[1] = ws;
    ir_node *tx = NULL, *shared = NULL;
    for (int j = 0; j < g->n_nodes; j++) {
      ir_node *b = g->nodes[j];
      if (b->fwd != f) continue;
      const char *op = b->op->name;
      if (!strcmp(op, "ConvGradData") || !strcmp(op, "GemmGradData")) b->in[1] = ws;           /* dX uses sparse W */
      else if ((!strcmp(op, "Gemm") || !strcmp(op, "MatMul") || !strcmp(op, "Transpose")) && b->n_in > 0)
        for (int k = 0; k < b->n_in; k++)
          if (b->in[k] == w) b->in[k] = ws; /* general Gemm/MatMul backward reading W */
      if (!strcmp(op, "ConvGradWeight") || !strcmp(op, "GemmGradWeight") || !strcmp(op, "Gemm") || !strcmp(op, "MatMul") ||
          !strcmp(op, "Transpose")) {
        for (int k = 0; k < b->n_in; k++) {
          if (b->in[k] != x) continue;
          /* SWAT-M moves each layer's budget on its own: no sharing there */
          if (!tx && so->budget != SWAT_MOMENTUM && (tx = shared_topk_x(g, x, l[i].sparsity)) != NULL) shared = tx;
          if (!tx) { /* X_s: computed in the forward pass, right after the layer, kept for its weight gradient */
            snprintf(name, sizeof name, "%s/topk_x", f->name);
            snprintf(sname, sizeof sname, "swat.%s.x", f->name);
            tx = insert_topk(g, x, name, sname, "activation", l[i].sparsity, so->period, 1, index_of(g, f) + 1, e);
            if (!tx) break;
          }
          b->in[k] = tx->out[0];
        }
      }
      if (e->code) break;
    }
    if (e->code) break;
    if (tx && compact_ok(g, tx->out[0])) {
      /* X_s kept as a list of its kept entries: room for 1.25x the budget (a stored threshold can
       * keep a few more than k; the runtime re-selects exactly when they do not fit); SWAT-M moves
       * budgets during the run, so it gets room for every element */
      double room = so->budget == SWAT_MOMENTUM ? 1.0 : 1.25 * (1.0 - l[i].sparsity) + 0.01;
      ir_attr_set_float(g, tx, "compact", room > 1.0 ? 1.0 : room);
    }
    sparse++;
    if (shared)
      ir_graph_note(g, "swat: %s weight at sparsity %.4f, saved activation shared with %s", f->name, l[i].sparsity, shared->name);
    else
      ir_graph_note(g, "swat: %s weight%s at sparsity %.4f", f->name, tx ? " and saved activation" : "", l[i].sparsity);
  }
  free(l);
  if (!e->code)
    ir_graph_note(g, "swat: %d of %d layers sparse (%s, target %.3f, period %d%s)", sparse, n,
                  so->budget == SWAT_ERK ? "ERK" : so->budget == SWAT_MOMENTUM ? "momentum" : "uniform", so->sparsity,
                  so->period, so->structure == SWAT_CHANNEL ? ", channel-structured" : so->structure == SWAT_FILTER ? ", filter-structured" : "");
  return e->code;
}
