/* dce: removes nodes whose results nothing needs (graph outputs, state updates) and values that
 * nothing reads. Inputs, parameters and state stay: they are the model's interface. */
#include "passes/passes.h"

int pass_dce(ir_graph *g, const pass_opts *o, sw_err *e) {
  (void)o;
  (void)e;
  unsigned char *live = sw_xcalloc((size_t)g->n_values + 1, 1), *keep_node = sw_xcalloc((size_t)g->n_nodes + 1, 1);
  for (int i = 0; i < g->n_values; i++) {
    ir_value *v = g->values[i];
    live[i] = v->is_output || v->updates || v->kind == IR_VAL_INPUT || v->kind == IR_VAL_PARAM || v->kind == IR_VAL_STATE;
  }
  for (int i = g->n_nodes - 1; i >= 0; i--) {
    ir_node *n = g->nodes[i];
    for (int k = 0; k < n->n_out; k++) keep_node[i] |= n->out[k] && live[n->out[k]->id];
    if (!keep_node[i]) continue;
    for (int k = 0; k < n->n_out; k++)
      if (n->out[k]) live[n->out[k]->id] = 1; /* a kept node writes all its outputs */
    for (int k = 0; k < n->n_in; k++)
      if (n->in[k]) live[n->in[k]->id] = 1;
  }
  int removed = 0;
  for (int i = 0; i < g->n_nodes; i++) removed += !keep_node[i];
  ir_graph_compact(g, keep_node, live);
  free(live);
  free(keep_node);
  (void)removed;
  return SW_OK;
}
