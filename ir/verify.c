/* The IR verifier: the invariants every stage may rely on. */
#include <string.h>

#include "ir/ir.h"

#define FAIL(...) return sw_fail(e, SW_EINPUT, "invalid IR: " __VA_ARGS__)

static int check_value(const ir_graph *g, const ir_value *v, sw_err *e) {
  if (!v->name || !v->name[0]) FAIL("value #%d has no name", v->id);
  if (v->kind < IR_VAL_INPUT || v->kind > IR_VAL_NODE) FAIL("value '%s' has an unknown kind", v->name);
  if (v->kind != IR_VAL_NODE && ir_dtype_size(v->dtype) == 0) FAIL("value '%s' has no element type", v->name);
  if (v->shape.rank < 0 || v->shape.rank > IR_MAX_RANK) FAIL("value '%s' has rank %d", v->name, v->shape.rank);
  for (int i = 0; i < v->shape.rank; i++)
    if (v->shape.d[i] < 0 && v->shape.d[i] != IR_N) FAIL("value '%s' has a negative dimension", v->name);
  switch (v->kind) {
    case IR_VAL_PARAM: case IR_VAL_STATE: case IR_VAL_CONST: {
      int64_t n = ir_shape_numel(&v->shape);
      if (n < 0) FAIL("constant '%s' has shape %s; constants need concrete shapes", v->name,
                      ir_shape_str(&v->shape, (char[64]){0}, 64));
      if (v->nbytes != (size_t)n * ir_dtype_size(v->dtype) || (n > 0 && !v->data))
        FAIL("constant '%s' holds %zu bytes, its shape needs %zu", v->name, v->nbytes, (size_t)n * ir_dtype_size(v->dtype));
      if (v->producer) FAIL("constant '%s' has a producer", v->name);
      break;
    }
    case IR_VAL_INPUT:
      if (v->data || v->producer) FAIL("input '%s' has data or a producer", v->name);
      break;
    case IR_VAL_NODE:
      if (!v->producer) FAIL("value '%s' is not produced by any node", v->name);
      if (v->producer_slot < 0 || v->producer_slot >= v->producer->n_out || v->producer->out[v->producer_slot] != v)
        FAIL("value '%s' is not an output of its producer '%s'", v->name, v->producer->name);
      break;
  }
  (void)g;
  return SW_OK;
}

int ir_verify(const ir_graph *g, sw_err *e) {
  int nv = g->n_values;
  unsigned char *defined = sw_xcalloc((size_t)nv + 1, 1);
  int rc = SW_OK;
#undef FAIL
#define FAIL(...) do { rc = sw_fail(e, SW_EINPUT, "invalid IR: " __VA_ARGS__); goto done; } while (0)
  for (int i = 0; i < nv; i++) {
    const ir_value *v = g->values[i];
    if (v->id != i) FAIL("value '%s' has id %d at position %d", v->name, v->id, i);
    if ((rc = check_value(g, v, e))) goto done;
    for (int j = 0; j < i; j++)
      if (strcmp(g->values[j]->name, v->name) == 0) FAIL("two values are named '%s'", v->name);
    if (v->kind != IR_VAL_NODE) defined[i] = 1;
  }
  for (int i = 0; i < g->n_inputs; i++)
    if (g->inputs[i]->kind != IR_VAL_INPUT) FAIL("graph input '%s' is not an input value", g->inputs[i]->name);
  for (int i = 0; i < g->n_nodes; i++) {
    ir_node *n = g->nodes[i];
    if (!n->op) FAIL("node '%s' has no operator", n->name);
    for (int j = 0; j < i; j++)
      if (g->nodes[j] == n || g->nodes[j]->id == n->id) FAIL("node '%s' appears twice (same id)", n->name);
    for (int k = 0; k < n->n_in; k++) {
      const ir_value *v = n->in[k];
      if (!v) continue;
      if (v->id < 0 || v->id >= nv || g->values[v->id] != v) FAIL("node '%s' reads a value not in the graph", n->name);
      if (!defined[v->id]) {
        if (v->producer) FAIL("node '%s' reads '%s' before node '%s' writes it (cycle or order)", n->name, v->name, v->producer->name);
        FAIL("node '%s' reads '%s', which is never defined", n->name, v->name);
      }
      if (ir_value_compact(v) && strcmp(n->op->name, "ConvGradWeight") != 0 && strcmp(n->op->name, "GemmGradWeight") != 0)
        FAIL("node '%s' (%s) reads the compact Top-K selection '%s'; only weight gradients can", n->name, n->op->name, v->name);
    }
    for (int k = 0; k < n->n_out; k++) {
      const ir_value *v = n->out[k];
      if (!v) continue;
      if (v->producer != n || v->producer_slot != k) FAIL("output %d of node '%s' names another producer", k, n->name);
      if (defined[v->id]) FAIL("value '%s' is assigned twice", v->name);
      defined[v->id] = 1;
    }
    /* types and shapes must be what the shape rule says */
    ir_shape saved[64];
    ir_dtype saved_t[64];
    int no = n->n_out < 64 ? n->n_out : 64;
    for (int k = 0; k < no; k++)
      if (n->out[k]) { saved[k] = n->out[k]->shape; saved_t[k] = n->out[k]->dtype; }
    sw_err ie = {0};
    int irc = ir_infer_node(n, &ie);
    int bad = -1;
    for (int k = 0; k < no; k++)
      if (n->out[k]) {
        if (!irc && (!ir_shape_eq(&saved[k], &n->out[k]->shape) || saved_t[k] != n->out[k]->dtype)) bad = k;
        n->out[k]->shape = saved[k];
        n->out[k]->dtype = saved_t[k];
      }
    if (irc) {
      rc = sw_fail(e, SW_EINPUT, "invalid IR: %s", ie.msg);
      goto done;
    }
    if (bad >= 0) FAIL("output '%s' of node '%s' has a type or shape that its shape rule does not give", n->out[bad]->name, n->name);
  }
  for (int i = 0; i < nv; i++)
    if (!defined[i]) FAIL("value '%s' is never written", g->values[i]->name);
  for (int i = 0; i < g->n_outputs; i++)
    if (!g->outputs[i]->is_output) FAIL("graph output '%s' is not marked", g->outputs[i]->name);
done:
  free(defined);
  return rc;
}
