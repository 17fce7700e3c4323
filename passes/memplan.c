/* memory-plan: places every activation (node output) in one arena, reusing the bytes of values
 * that are dead. A value lives from the node that writes it to the last node that reads it; graph
 * outputs (loss, logits, gradients) and state updates live to the end of the step. Reshape and
 * Flatten outputs are views: they share their input's storage and extend its lifetime. So does the
 * output of an elementwise op whose kernel may write over an input (AddRelu over A or B, SumReluGrad
 * over one of its gradients, a BatchNormalization over its residual input) when that input of the
 * same size dies there: it is written in place. A compact
 * Top-K selection (SWAT's saved X_s) is held by the runtime as a list of entries, not here. Offsets
 * are chosen greedily by size (as TensorFlow Lite's arena planner does): the largest values first,
 * each at the lowest 64-byte aligned offset clear of the values already placed whose lifetimes
 * overlap its own. Placing in node order (first fit) left holes: 7% over the peak of live bytes for
 * a ResNet-20 step. */
#include <stdlib.h>
#include <string.h>

#include "passes/passes.h"

#define ALIGN 64

static int is_view(const ir_node *n) {
  return strcmp(n->op->name, "Reshape") == 0 || strcmp(n->op->name, "Flatten") == 0;
}

static ir_value *root(ir_value *v) {
  while (v->alias_of) v = v->alias_of;
  return v;
}

/* The inputs [*k0, *k1) node n's kernel may overwrite with its output 0 (elementwise, same index read
 * before written; see eltwise.h); none for other ops. */
static void in_place_inputs(const ir_node *n, int *k0, int *k1) {
  *k0 = *k1 = 0;
  if (strcmp(n->op->name, "AddRelu") == 0) *k0 = 0, *k1 = 2;
  else if (strcmp(n->op->name, "SumReluGrad") == 0) *k0 = 1, *k1 = n->n_in;
  else if (strcmp(n->op->name, "BatchNormalization") == 0 && n->n_in > 5) *k0 = 5, *k1 = 6; /* y over R */
}

/* last[root id] = the last node that reads each value (nn for graph outputs and state updates). */
static void lifetimes(ir_graph *g, int *last) {
  int nv = g->n_values, nn = g->n_nodes;
  for (int i = 0; i < nv; i++) last[i] = -1;
  for (int i = 0; i < nn; i++) {
    ir_node *n = g->nodes[i];
    for (int k = 0; k < n->n_in; k++)
      if (n->in[k]) last[root(n->in[k])->id] = i;
    for (int k = 0; k < n->n_out; k++)
      if (n->out[k] && last[root(n->out[k])->id] < i) last[root(n->out[k])->id] = i;
  }
  for (int i = 0; i < nv; i++) {
    ir_value *v = g->values[i];
    if (v->kind == IR_VAL_NODE && (v->is_output || v->updates)) last[root(v)->id] = nn;
  }
}

typedef struct placed {
  ir_value *v;
  int64_t size, off;
  int first, last; /* nodes that write it and read it last */
} placed;

/* Larger first; then earlier, then by value id (a total order: the plan does not depend on qsort). */
static int by_size(const void *pa, const void *pb) {
  const placed *a = pa, *b = pb;
  if (a->size != b->size) return a->size > b->size ? -1 : 1;
  if (a->first != b->first) return a->first < b->first ? -1 : 1;
  return a->v->id < b->v->id ? -1 : a->v->id > b->v->id;
}

static int by_offset(const void *pa, const void *pb) {
  const placed *a = *(const placed *const *)pa, *b = *(const placed *const *)pb;
  return a->off < b->off ? -1 : a->off > b->off;
}

int pass_memory_plan(ir_graph *g, const pass_opts *o, sw_err *e) {
  int64_t batch = o && o->batch > 0 ? o->batch : (g->export_batch > 0 ? g->export_batch : 1);
  int nv = g->n_values, nn = g->n_nodes;
  int *last = sw_xmalloc(sizeof *last * (size_t)(nv + 1));
  for (int i = 0; i < nv; i++) {
    ir_value *v = g->values[i];
    v->mem_offset = -1;
    v->mem_bytes = 0;
    v->alias_of = NULL;
    last[i] = -1;
  }
  for (int i = 0; i < nn; i++) {
    ir_node *n = g->nodes[i];
    if (is_view(n) && n->in[0]->kind == IR_VAL_NODE) n->out[0]->alias_of = n->in[0];
  }
  lifetimes(g, last);
  /* in place: the output takes the bytes of an input that dies at its node (the first such, in
   * node order, so a chain of in-place ops runs in one buffer) */
  for (int i = 0; i < nn; i++) {
    ir_node *n = g->nodes[i];
    ir_value *y = n->n_out > 0 ? n->out[0] : NULL;
    int k0, k1;
    in_place_inputs(n, &k0, &k1);
    for (int k = k0; k < k1 && y && !y->alias_of; k++) {
      ir_value *x = n->in[k];
      if (!x || x->kind != IR_VAL_NODE || ir_value_compact(root(x)) || last[root(x)->id] != i || x->dtype != y->dtype ||
          !ir_shape_eq(&x->shape, &y->shape))
        continue;
      int twice = 0; /* an input read twice by this node is still read after the first write */
      for (int j = 0; j < n->n_in; j++) twice += j != k && n->in[j] && root(n->in[j]) == root(x);
      if (twice) continue;
      y->alias_of = x;
      lifetimes(g, last); /* x's bytes now live as long as y */
    }
  }
  /* each stored value's lifetime [first, last] in node order and its size */
  placed *pl = sw_xmalloc(sizeof *pl * (size_t)(nv + 1));
  int np = 0;
  for (int i = 0; i < nn; i++) {
    ir_node *n = g->nodes[i];
    for (int k = 0; k < n->n_out; k++) {
      ir_value *v = n->out[k];
      if (!v) continue;
      int64_t numel = ir_shape_numel_at(&v->shape, batch);
      if (numel < 0 || ir_dtype_bytes(v->dtype, 1) == 0) {
        free(last);
        free(pl);
        return sw_fail(e, SW_EINPUT, "value '%s' has no plannable size", v->name);
      }
      if (ir_value_compact(v)) continue; /* a compact Top-K selection lives outside the arena */
      v->mem_bytes = (int64_t)ir_dtype_bytes(v->dtype, (size_t)numel);
      if (v->alias_of) continue; /* placed with its root below */
      int64_t size = (v->mem_bytes + ALIGN - 1) / ALIGN * ALIGN;
      pl[np++] = (placed){v, size == 0 ? ALIGN : size, -1, i, last[v->id] < i ? i : last[v->id]};
    }
  }
  /* greedy by size: the largest values first, each at the lowest offset clear of every placed value
   * whose lifetime overlaps its own */
  qsort(pl, (size_t)np, sizeof *pl, by_size);
  placed **conf = sw_xmalloc(sizeof *conf * (size_t)(np + 1));
  int64_t top = 0;
  for (int a = 0; a < np; a++) {
    int nc = 0;
    for (int b = 0; b < a; b++)
      if (pl[b].first <= pl[a].last && pl[a].first <= pl[b].last) conf[nc++] = &pl[b];
    qsort(conf, (size_t)nc, sizeof *conf, by_offset);
    int64_t off = 0;
    for (int c = 0; c < nc; c++) {
      if (off + pl[a].size <= conf[c]->off) break;
      if (conf[c]->off + conf[c]->size > off) off = conf[c]->off + conf[c]->size;
    }
    pl[a].off = off;
    pl[a].v->mem_offset = off;
    if (off + pl[a].size > top) top = off + pl[a].size;
  }
  for (int i = 0; i < nv; i++) { /* views share their root's bytes */
    ir_value *v = g->values[i];
    if (v->alias_of && !ir_value_compact(v)) v->mem_offset = root(v)->mem_offset;
  }
  free(conf);
  free(pl);
  g->planned_batch = batch;
  g->arena_bytes = top;
  free(last);
  return SW_OK;
}
