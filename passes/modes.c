/* train-mode and eval-mode: the two forms of a model.
 *
 * train-mode: BatchNormalization normalises with batch statistics and writes new running
 * statistics (outputs 1 and 2, each marked as updating its STATE value); Dropout is active.
 * eval-mode: BatchNormalization uses the running statistics (one output); Dropout disappears. */
#include <string.h>

#include "ir/grad.h"
#include "passes/passes.h"

int pass_train_mode(ir_graph *g, const pass_opts *o, sw_err *e) {
  (void)o;
  for (int i = 0; i < g->n_nodes; i++) {
    ir_node *n = g->nodes[i];
    if (strcmp(n->op->name, "BatchNormalization") == 0) {
      ir_attr_set_int(g, n, "training_mode", 1);
      for (int k = 1; k <= 2; k++) {
        ir_value *v = ir_grad_ensure_output(g, n, k, e);
        if (!v) return e->code;
        if (n->in[2 + k]->kind == IR_VAL_STATE) v->updates = n->in[2 + k];
      }
    } else if (strcmp(n->op->name, "Dropout") == 0) {
      ir_attr_set_int(g, n, "training_mode", 1);
    }
  }
  return SW_OK;
}

int pass_eval_mode(ir_graph *g, const pass_opts *o, sw_err *e) {
  (void)o;
  unsigned char *keep_node = sw_xcalloc((size_t)g->n_nodes + 1, 1), *keep_value = sw_xcalloc((size_t)g->n_values + 1, 1);
  for (int i = 0; i < g->n_values; i++) keep_value[i] = 1;
  for (int i = 0; i < g->n_nodes; i++) {
    ir_node *n = g->nodes[i];
    keep_node[i] = 1;
    if (strcmp(n->op->name, "BatchNormalization") == 0) {
      ir_attr_set_int(g, n, "training_mode", 0);
      for (int k = 1; k < n->n_out; k++) {
        ir_value *v = n->out[k];
        if (!v) continue;
        for (int j = 0; j < g->n_nodes; j++)
          for (int q = 0; q < g->nodes[j]->n_in; q++)
            if (g->nodes[j]->in[q] == v) {
              free(keep_node);
              free(keep_value);
              return sw_fail(e, SW_EINPUT, "node '%s' reads the batch statistics of '%s', which inference does not compute",
                             g->nodes[j]->name, n->name);
            }
        keep_value[v->id] = 0;
        if (v->is_output) {
          for (int q = 0; q < g->n_outputs; q++)
            if (g->outputs[q] == v) g->outputs[q--] = g->outputs[--g->n_outputs];
        }
      }
      n->n_out = 1;
      if (ir_infer_node(n, e)) break;
    } else if (strcmp(n->op->name, "Dropout") == 0) {
      int mask_used = 0;
      if (n->n_out > 1 && n->out[1])
        for (int j = 0; j < g->n_nodes; j++)
          for (int q = 0; q < g->nodes[j]->n_in; q++) mask_used |= g->nodes[j]->in[q] == n->out[1];
      if (mask_used || (n->n_out > 1 && n->out[1] && n->out[1]->is_output)) {
        ir_attr_set_int(g, n, "training_mode", 0);
        continue;
      }
      ir_replace_uses(g, n->out[0], n->in[0]);
      keep_node[i] = 0;
      for (int k = 0; k < n->n_out; k++)
        if (n->out[k]) keep_value[n->out[k]->id] = 0;
    }
  }
  if (!e->code) ir_graph_compact(g, keep_node, keep_value);
  free(keep_node);
  free(keep_value);
  return e->code;
}
