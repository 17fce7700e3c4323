/* memory-plan: places every activation (node output) in one arena, reusing the bytes of values
 * that are dead. A value lives from the node that writes it to the last node that reads it; graph
 * outputs (loss, logits, gradients) and state updates live to the end of the step. Reshape and
 * Flatten outputs are views: they share their input's storage and extend its lifetime. A compact
 * Top-K selection (SWAT's saved X_s) is held by the runtime as a list of entries, not here. Offsets are
 * chosen first-fit in node order, aligned to 64 bytes. */
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

typedef struct block {
  int64_t off, size;
  int end; /* last node index using it */
} block;

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
  block *live = NULL;
  int n_live = 0;
  int64_t top = 0;
  for (int i = 0; i < nn; i++) {
    ir_node *n = g->nodes[i];
    /* blocks whose last reader ran before this node are free again */
    int k2 = 0;
    for (int b = 0; b < n_live; b++)
      if (live[b].end >= i) live[k2++] = live[b];
    n_live = k2;
    for (int k = 0; k < n->n_out; k++) {
      ir_value *v = n->out[k];
      if (!v) continue;
      int64_t numel = ir_shape_numel_at(&v->shape, batch);
      size_t es = ir_dtype_size(v->dtype);
      if (numel < 0 || es == 0) {
        free(last);
        free(live);
        return sw_fail(e, SW_EINPUT, "value '%s' has no plannable size", v->name);
      }
      if (ir_value_compact(v)) continue; /* a compact Top-K selection lives outside the arena */
      v->mem_bytes = numel * (int64_t)es;
      if (v->alias_of) {
        v->mem_offset = root(v)->mem_offset;
        continue;
      }
      int64_t size = (v->mem_bytes + ALIGN - 1) / ALIGN * ALIGN;
      if (size == 0) size = ALIGN;
      /* first fit: lowest offset that overlaps no live block */
      int64_t off = 0;
      for (int moved = 1; moved;) {
        moved = 0;
        for (int b = 0; b < n_live; b++)
          if (off < live[b].off + live[b].size && live[b].off < off + size) {
            off = live[b].off + live[b].size;
            moved = 1;
          }
      }
      v->mem_offset = off;
      if (off + size > top) top = off + size;
      live = sw_xrealloc(live, sizeof *live * (size_t)(n_live + 1));
      live[n_live].off = off;
      live[n_live].size = size;
      live[n_live].end = last[v->id] < i ? i : last[v->id];
      n_live++;
    }
  }
  g->planned_batch = batch;
  g->arena_bytes = top;
  free(last);
  free(live);
  return SW_OK;
}
