/* autodiff: reverse-mode differentiation of the loss with respect to every trained parameter.
 *
 * Walks the forward nodes backwards, asks each op's gradient rule (ir/grad.c) for the gradients of
 * its inputs, sums the contributions of values read more than once (Sum nodes), and finishes with
 * one gradient value per parameter, named "<param>.grad", listed as a graph output and linked from
 * the parameter (v->grad). The backward nodes are ordinary IR: dumps show them, passes rewrite them. */
#include <string.h>

#include "ir/grad.h"
#include "passes/passes.h"

typedef struct contrib {
  ir_value **v;
  int n, cap;
} contrib;

static void add_contrib(contrib *c, ir_value *v) {
  if (c->n == c->cap) {
    c->cap = c->cap ? 2 * c->cap : 4;
    c->v = sw_xrealloc(c->v, sizeof *c->v * (size_t)c->cap);
  }
  c->v[c->n++] = v;
}

/* The total gradient of a value: its one contribution, or their Sum. */
static ir_value *total(ir_graph *g, contrib *c, const char *name, ir_node *fwd, sw_err *e) {
  if (c->n == 0) return NULL;
  if (c->n == 1) return c->v[0];
  char buf[512];
  snprintf(buf, sizeof buf, "%s/grad_sum", name);
  ir_node *n = ir_emit(g, "Sum", buf, c->n, c->v, 1);
  n->role = IR_ROLE_BWD;
  n->fwd = fwd;
  if (ir_infer_node(n, e)) return NULL;
  c->n = 1;
  c->v[0] = n->out[0];
  return n->out[0];
}

int pass_autodiff(ir_graph *g, const pass_opts *o, sw_err *e) {
  (void)o;
  ir_value *loss = NULL;
  for (int i = 0; i < g->n_nodes; i++)
    if (g->nodes[i]->role == IR_ROLE_LOSS) loss = g->nodes[i]->out[0];
  if (!loss) {
    sw_fail(e, SW_EINPUT, "autodiff needs a loss (run add-loss first)");
    return sw_hint(e, "this is a bug in swatc's pass pipeline");
  }
  if (loss->shape.rank != 0) {
    sw_fail(e, SW_EINPUT, "the loss '%s' is not a scalar (reduction 'none'?)", loss->name);
    return sw_hint(e, "use a loss with reduction 'mean' or 'sum'");
  }
  /* which values depend on a parameter */
  for (int i = 0; i < g->n_values; i++) g->values[i]->requires_grad = g->values[i]->kind == IR_VAL_PARAM && g->values[i]->dtype == IR_F32;
  int n_fwd = g->n_nodes;
  for (int i = 0; i < n_fwd; i++) {
    ir_node *n = g->nodes[i];
    int rg = 0;
    for (int k = 0; k < n->n_in; k++) rg |= n->in[k] && n->in[k]->requires_grad;
    for (int k = 0; k < n->n_out; k++)
      if (n->out[k]) n->out[k]->requires_grad = rg && n->out[k]->dtype == IR_F32;
  }
  contrib *grads = sw_xcalloc((size_t)g->n_values + 1, sizeof *grads);
  int n_values0 = g->n_values;
  add_contrib(&grads[loss->id], ir_const_scalar(g, "loss.grad_seed", 1.0f));
  int rc = SW_OK;
  for (int i = n_fwd - 1; i >= 0 && !rc; i--) {
    ir_node *n = g->nodes[i];
    ir_value *dy[64] = {0}, *dx[64] = {0};
    int need[64] = {0}, any_dy = 0, any_need = 0;
    SW_ASSERT(n->n_out <= 64 && n->n_in <= 64);
    for (int k = 0; k < n->n_out; k++) {
      if (!n->out[k] || n->out[k]->id >= n_values0) continue;
      dy[k] = total(g, &grads[n->out[k]->id], n->out[k]->name, n, e);
      if (e->code) { rc = e->code; break; }
      any_dy |= dy[k] != NULL;
    }
    if (rc || !any_dy) continue;
    for (int k = 0; k < n->n_in; k++) {
      need[k] = n->in[k] && n->in[k]->requires_grad;
      any_need |= need[k];
    }
    if (!any_need) continue;
    if ((rc = ir_grad_node(g, n, dy, need, dx, e))) break;
    for (int k = 0; k < n->n_in; k++)
      if (need[k] && dx[k]) add_contrib(&grads[n->in[k]->id], dx[k]);
  }
  int n_params = 0;
  for (int i = 0; i < n_values0 && !rc; i++) {
    ir_value *p = g->values[i];
    if (p->kind != IR_VAL_PARAM || !p->requires_grad) continue;
    ir_value *d = total(g, &grads[i], p->name, NULL, e);
    if (e->code) { rc = e->code; break; }
    if (!d) continue; /* a parameter the loss does not depend on */
    if (d->kind == IR_VAL_NODE && !d->is_output) {
      char buf[512];
      snprintf(buf, sizeof buf, "%s.grad", p->name);
      d->name = ir_unique_name(g, buf);
    }
    p->grad = d;
    if (!d->is_output) ir_graph_add_output(g, d);
    n_params++;
  }
  for (int i = 0; i < n_values0; i++) free(grads[i].v);
  free(grads);
  if (!rc && n_params == 0) {
    sw_fail(e, SW_EINPUT, "the loss does not depend on any trainable parameter");
    rc = sw_hint(e, "the model has no float initializers feeding its output; nothing to train");
  }
  return rc;
}
