/* add-loss: softmax cross-entropy (mean over the batch) on the model's logits against an int64
 * labels input. A SoftmaxCrossEntropyLoss already in the model is reused; a final Softmax is looked
 * through (cross-entropy needs the logits; LogSoftmax is fine as it is, softmax being shift-invariant). */
#include <string.h>

#include "passes/passes.h"

int pass_add_loss(ir_graph *g, const pass_opts *o, sw_err *e) {
  (void)o;
  for (int i = 0; i < g->n_nodes; i++)
    if (strcmp(g->nodes[i]->op->name, "SoftmaxCrossEntropyLoss") == 0) {
      ir_node *n = g->nodes[i];
      n->role = IR_ROLE_LOSS;
      if (!n->out[0]->is_output) ir_graph_add_output(g, n->out[0]);
      ir_graph_note(g, "loss: the model's own SoftmaxCrossEntropyLoss '%s'", n->name);
      return SW_OK;
    }
  ir_value *logits = NULL;
  for (int i = 0; i < g->n_outputs && !logits; i++) {
    ir_value *v = g->outputs[i];
    if (v->dtype == IR_F32 && v->shape.rank == 2) logits = v;
  }
  if (!logits) {
    sw_fail(e, SW_EINPUT, "cannot find the logits: no model output is a float32 matrix [batch, classes]");
    return sw_hint(e, "swatc trains classifiers; the model's output should be the class scores [N, classes]");
  }
  ir_value *scores = logits;
  if (logits->producer && strcmp(logits->producer->op->name, "Softmax") == 0) {
    scores = logits->producer->in[0];
    ir_graph_note(g, "loss: on the input of the final Softmax '%s' (cross-entropy takes logits)", logits->producer->name);
  }
  if (ir_value_find(g, PASS_LABELS_INPUT)) {
    sw_fail(e, SW_EINPUT, "the model already has a value named '%s'", PASS_LABELS_INPUT);
    return sw_hint(e, "rename that value in the model");
  }
  ir_shape ls = {.rank = 1, .d = {scores->shape.d[0]}};
  ir_value *labels = ir_value_new(g, PASS_LABELS_INPUT, IR_VAL_INPUT, IR_I64, &ls);
  ir_graph_add_input(g, labels);
  ir_node *n = ir_node_new(g, "SoftmaxCrossEntropyLoss", "loss", 2, (ir_value *[]){scores, labels}, 1);
  n->role = IR_ROLE_LOSS;
  ir_attr_set_string(g, n, "reduction", "mean");
  ir_value *loss = ir_node_set_output(g, n, 0, ir_unique_name(g, "loss"));
  if (ir_infer_node(n, e)) return e->code;
  ir_graph_add_output(g, loss);
  return SW_OK;
}
