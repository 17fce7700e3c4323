/* fuse: BatchNormalization followed by ReLU becomes one BatchNormalization {relu=1}, in the forward
 * pass and, when the graph has a backward, in the backward too:
 *
 *   Y0 = BN(X, ...); Y = Relu(Y0)            ->  Y = BN{relu=1}(X, ...)
 *   dY0 = ReluGrad(dY, Y); dX.. = BNGrad(dY0, X, ...)  ->  dX.. = BNGrad{relu=1}(dY, X, ..., B)
 * where B is the BatchNormalization's bias: the backward recomputes the ReLU's decision from X and
 * the saved statistics, so Y is not kept alive for it (only its other readers keep it).
 *
 * Saves two passes over the activation and the memory of Y0 and dY0. Applied only where Y0 and dY0
 * have no other reader.
 *
 * Then, for a ReLU left on its own (after a residual Add) whose output no backward op reads except
 * its ReluGrad (under SWAT the weight gradients read the compact X_s instead):
 *
 *   dX = ReluGrad(dY, Y)  ->  M = ReluMask(Y) (right after the ReLU); dX = SumReluGrad(M, dY)
 *
 * so that Y, a float per element, dies at the end of the forward pass and a bit per element is kept.
 *
 * Then the residual blocks' elementwise ops, one memory pass each instead of two:
 *
 *   S = Add(A, B); Y = Relu(S) [; M = ReluMask(Y)]  ->  Y[, M] = AddRelu(A, B)
 *     where A, B and S have one shape and S has no other reader (Add's backward only passes dY through,
 *     so S is never read by the backward); M, if the rewrite above made one, is written in the same pass;
 *   G = Sum(dY1, dY2, ..); dS = SumReluGrad(M, G)  ->  dS = SumReluGrad(M, dY1, dY2, ..)
 *   G = Sum(dY1, dY2, ..); dS = ReluGrad(G, Y)     ->  dS = SumReluGrad(Y, dY1, dY2, ..)
 *     where G (the gradient of a value with several readers) has no other reader.
 * Both give the bits of the ops they replace (the same additions in the same order).
 *
 * Then a residual block's last BatchNormalization (training, no ReLU of its own) and the AddRelu
 * that reads it:
 *
 *   Y0 = BN(X, ...); Y[, M] = AddRelu(Y0, R)  ->  Y[, M] = BN{relu=1}(X, ..., R)
 *     where Y0 has no other reader (BN's backward reads X, not Y0). The BN moves to the AddRelu's
 *     place (R may be written after it: another BN, on the shortcut). Same bits: the kernel adds R
 *     to the normalised value and applies the ReLU as AddRelu does; one pass instead of two, no Y0.
 *
 * And a strided 1x1 convolution's input gradient summed into a ReLU backward (a ResNet shortcut's):
 *
 *   dX2 = ConvGradData{1x1, strides s, no pads}(dY, W); dS = SumReluGrad(gate, dX1, dX2)
 *     ->  dX2' = ConvGradData{1x1, strides 1}(dY, W) [N, C, P, Q]; dS = SumReluGrad{sub_strides=s}(gate, dX1, dX2')
 *     where dX2 has no other reader: dX2 is zero off its stride grid, so only the grid is computed
 *     (a quarter of it at stride 2) and the sum adds +0 elsewhere, as before. Same bits as long as
 *     the two convs' kernels add the same products in the same order (the sparse ones do).
 *
 * And a max pooling over a ReLU's output (LeNet's conv -> Relu -> MaxPool), whose backward reads that
 * output twice:
 *
 *   G = MaxPoolGrad(dY, Y); dX = ReluGrad(G, Y)  ->  dX = MaxPoolGrad{relu=1}(dY, Y)
 *     where G has no other reader: the kernel that routes dY to each window's maximum gates it by
 *     that maximum being > 0, which is what ReluGrad does there (everywhere else G is 0). Same bits,
 *     one pass instead of two, and no G. */
#include <stdio.h>
#include <string.h>

#include "passes/passes.h"

static int readers(const ir_graph *g, const ir_value *v, ir_node **only) {
  int k = 0;
  for (int i = 0; i < g->n_nodes; i++)
    for (int j = 0; j < g->nodes[i]->n_in; j++)
      if (g->nodes[i]->in[j] == v) {
        k++;
        if (only) *only = g->nodes[i];
      }
  return k + (v->is_output ? 1 : 0) + (v->updates ? 1 : 0);
}

/* What a rewrite keeps: per node and per value, 1 to keep, 0 to drop (ir_graph_compact's flags). */
typedef struct keep_set {
  unsigned char *node, *value;
} keep_set;

/* Everything kept, to start a rewrite. */
static keep_set keep_all(const ir_graph *g) {
  keep_set ks = {sw_xcalloc((size_t)g->n_nodes + 1, 1), sw_xcalloc((size_t)g->n_values + 1, 1)};
  memset(ks.node, 1, (size_t)g->n_nodes);
  memset(ks.value, 1, (size_t)g->n_values);
  return ks;
}

/* Drops what the rewrite cleared (not after an error) and frees the flags. */
static void keep_apply(ir_graph *g, keep_set *ks, const sw_err *e) {
  if (!e->code) ir_graph_compact(g, ks->node, ks->value);
  free(ks->node);
  free(ks->value);
  ks->node = ks->value = NULL;
}

static int index_of(const ir_graph *g, const ir_node *n) {
  for (int i = 0; i < g->n_nodes; i++)
    if (g->nodes[i] == n) return i;
  return -1;
}

/* The ReluGrad -> ReluMask + SumReluGrad rewrite (see the top of the file). */
static void relu_masks(ir_graph *g, sw_err *e) {
  int masked = 0;
  for (int i = 0; i < g->n_nodes && !e->code; i++) {
    ir_node *rg = g->nodes[i];
    if (strcmp(rg->op->name, "ReluGrad") != 0) continue;
    ir_value *y = rg->in[1];
    if (!y->producer || strcmp(y->producer->op->name, "Relu") != 0 || y->is_output || y->updates) continue;
    int only_fwd = 1;
    for (int j = 0; j < g->n_nodes && only_fwd; j++)
      for (int k = 0; k < g->nodes[j]->n_in; k++)
        if (g->nodes[j]->in[k] == y && g->nodes[j] != rg && g->nodes[j]->role != IR_ROLE_FWD) only_fwd = 0;
    if (!only_fwd) continue;
    char name[600];
    snprintf(name, sizeof name, "%s/mask", y->producer->name);
    ir_node *mk = ir_emit(g, "ReluMask", ir_unique_name(g, name), 1, (ir_value *[]){y}, 1);
    mk->role = IR_ROLE_FWD;
    if (ir_infer_node(mk, e)) return;
    ir_graph_move_node(g, mk, index_of(g, y->producer) + 1);
    rg->op = ir_op_find("SumReluGrad");
    rg->in[1] = rg->in[0];
    rg->in[0] = mk->out[0];
    if (ir_infer_node(rg, e)) return;
    masked++;
  }
  if (masked) ir_graph_note(g, "fuse: %d ReLU backward(s) read a bit mask instead of the ReLU's output", masked);
}

static int is_op(const ir_node *n, const char *op) { return n && strcmp(n->op->name, op) == 0; }

/* Y[, M] = AddRelu(A, B) for Add + Relu [+ ReluMask] (see the top of the file). */
static void add_relus(ir_graph *g, sw_err *e) {
  keep_set ks = keep_all(g);
  unsigned char *keep_node = ks.node, *keep_value = ks.value;
  int fused = 0, masked = 0;
  for (int i = 0; i < g->n_nodes && !e->code; i++) {
    ir_node *add = g->nodes[i], *relu = NULL, *mk = NULL;
    if (!is_op(add, "Add") || add->role != IR_ROLE_FWD) continue;
    ir_value *s = add->out[0], *a = add->in[0], *b = add->in[1];
    if (s->dtype != IR_F32 || a->dtype != IR_F32 || b->dtype != IR_F32 || !ir_shape_eq(&a->shape, &s->shape) ||
        !ir_shape_eq(&b->shape, &s->shape))
      continue; /* broadcasting Adds keep their kernel */
    if (readers(g, s, &relu) != 1 || !is_op(relu, "Relu") || relu->role != IR_ROLE_FWD) continue;
    ir_value *y = relu->out[0];
    for (int j = 0; j < g->n_nodes && !mk; j++)
      if (is_op(g->nodes[j], "ReluMask") && g->nodes[j]->in[0] == y) mk = g->nodes[j];
    /* the Add writes Y (and M): it runs before the Relu and the mask did, after A and B exist */
    add->op = ir_op_find("AddRelu");
    ir_value **out = ir_alloc(g, sizeof *out * 2);
    out[0] = y;
    y->producer = add;
    y->producer_slot = 0;
    add->n_out = 1;
    if (mk) {
      out[1] = mk->out[0];
      out[1]->producer = add;
      out[1]->producer_slot = 1;
      add->n_out = 2;
    }
    add->out = out;
    keep_value[s->id] = 0;
    for (int j = 0; j < g->n_nodes; j++) {
      if (g->nodes[j] == relu || g->nodes[j] == mk) keep_node[j] = 0;
      if (g->nodes[j]->fwd == relu) g->nodes[j]->fwd = add; /* the ReLU's backward now belongs to AddRelu */
    }
    if (ir_infer_node(add, e)) break;
    fused++;
    masked += mk != NULL;
  }
  keep_apply(g, &ks, e);
  if (!e->code && fused)
    ir_graph_note(g, "fuse: %d Add + ReLU pairs fused (AddRelu), %d of them writing the ReLU's bit mask too", fused, masked);
}

/* Y[, M] = BN{relu=1}(X, ..., R) for BN + AddRelu (see the top of the file). */
static void bn_add_relus(ir_graph *g, sw_err *e) {
  keep_set ks = keep_all(g);
  int fused = 0;
  for (int i = 0; i < g->n_nodes && !e->code; i++) {
    ir_node *ar = g->nodes[i], *bn = NULL;
    if (!is_op(ar, "AddRelu") || ar->role != IR_ROLE_FWD) continue;
    int k = 0, at = -1; /* ar->in[k] is the BN's output, ar->in[1 - k] the residual */
    for (; k < 2; k++) {
      ir_node *p = ar->in[k]->producer, *only = NULL;
      if (is_op(p, "BatchNormalization") && p->n_in == 5 && ir_attr_int(p, "training_mode") && !ir_attr_int(p, "relu") &&
          p->out[0] == ar->in[k] && readers(g, ar->in[k], &only) == 1 && only == ar) {
        bn = p;
        break;
      }
    }
    if (!bn || (at = index_of(g, bn)) < 0 || at > i) continue;
    /* BN's other outputs (statistics for the backward) must not be read before the AddRelu's place */
    int early = 0;
    for (int j = at + 1; j < i && !early; j++)
      for (int q = 0; q < g->nodes[j]->n_in; q++)
        for (int o = 1; o < bn->n_out; o++)
          if (bn->out[o] && g->nodes[j]->in[q] == bn->out[o]) early = 1;
    if (early) continue;
    ir_value *y0 = ar->in[k], *r = ar->in[1 - k];
    ir_value **in = ir_alloc(g, sizeof *in * 6), **out = ir_alloc(g, sizeof *out * 6);
    memcpy(in, bn->in, sizeof *in * 5);
    in[5] = r;
    memset(out, 0, sizeof *out * 6);
    memcpy(out, bn->out, sizeof *out * (size_t)bn->n_out);
    out[0] = ar->out[0];
    out[0]->producer = bn;
    out[0]->producer_slot = 0;
    if (ar->n_out > 1 && ar->out[1]) {
      out[5] = ar->out[1];
      out[5]->producer = bn;
      out[5]->producer_slot = 5;
    }
    bn->in = in, bn->n_in = 6;
    bn->out = out, bn->n_out = out[5] ? 6 : 5;
    ir_attr_set_int(g, bn, "relu", 1);
    for (int j = 0; j < g->n_nodes; j++)
      if (g->nodes[j]->fwd == ar) g->nodes[j]->fwd = bn; /* the ReLU's backward now belongs to the BN */
    /* the BN takes the AddRelu's place in the order, the AddRelu (now at the BN's old place) goes */
    g->nodes[i] = bn;
    g->nodes[at] = ar;
    ks.node[at] = 0;
    ks.value[y0->id] = 0;
    if (ir_infer_node(bn, e)) break;
    fused++;
  }
  keep_apply(g, &ks, e);
  if (!e->code && fused) ir_graph_note(g, "fuse: %d BatchNormalization + AddRelu pairs fused", fused);
}

/* dS = SumReluGrad(gate, dY1, ..) for Sum + SumReluGrad(M, G) or Sum + ReluGrad (see the top of the file). */
static void sum_relu_grads(ir_graph *g, sw_err *e) {
  keep_set ks = keep_all(g);
  unsigned char *keep_node = ks.node, *keep_value = ks.value;
  int fused = 0;
  for (int i = 0; i < g->n_nodes && !e->code; i++) {
    ir_node *rg = g->nodes[i];
    int masked = is_op(rg, "SumReluGrad") && rg->n_in == 2;
    if (!masked && !is_op(rg, "ReluGrad")) continue;
    ir_value *gsum = masked ? rg->in[1] : rg->in[0], *gate = masked ? rg->in[0] : rg->in[1];
    ir_node *sum = gsum->producer, *only = NULL;
    if (!is_op(sum, "Sum") || sum->n_in + 1 > 64 || readers(g, gsum, &only) != 1 || only != rg) continue;
    ir_value **in = ir_alloc(g, sizeof *in * (size_t)(sum->n_in + 1));
    in[0] = gate;
    memcpy(in + 1, sum->in, sizeof *in * (size_t)sum->n_in);
    rg->op = ir_op_find("SumReluGrad");
    rg->in = in;
    rg->n_in = sum->n_in + 1;
    keep_value[gsum->id] = 0;
    for (int j = 0; j < g->n_nodes; j++)
      if (g->nodes[j] == sum) keep_node[j] = 0;
    if (ir_infer_node(rg, e)) break;
    fused++;
  }
  keep_apply(g, &ks, e);
  if (!e->code && fused) ir_graph_note(g, "fuse: %d gradient Sum + ReLU backward pairs fused (SumReluGrad)", fused);
}

/* 1 when conv node n is a 1x1 conv without padding, dilation or groups whose strides (*sh, *sw) are
 * not both 1. */
static int strided_1x1(const ir_node *n, int64_t *sh, int64_t *sw) {
  const int64_t *k, *s, *p, *d;
  int nk = ir_attr_ints(n, "kernel_shape", &k), ns = ir_attr_ints(n, "strides", &s);
  int np = ir_attr_ints(n, "pads", &p), nd = ir_attr_ints(n, "dilations", &d);
  if (nk != 2 || ns != 2 || np != 4 || k[0] != 1 || k[1] != 1 || ir_attr_int(n, "group") != 1) return 0;
  for (int i = 0; i < 4; i++)
    if (p[i] != 0) return 0;
  for (int i = 0; i < nd; i++)
    if (d[i] != 1) return 0;
  *sh = s[0], *sw = s[1];
  return *sh != 1 || *sw != 1;
}

/* dS = SumReluGrad{sub_strides}(gate, dX1, dX2') for a strided 1x1 ConvGradData summed into a ReLU
 * backward (see the top of the file). */
static void strided_grads(ir_graph *g, sw_err *e) {
  int fused = 0;
  for (int i = 0; i < g->n_nodes && !e->code; i++) {
    ir_node *srg = g->nodes[i], *cg = NULL, *only = NULL;
    const int64_t *st, *xs;
    int64_t sh = 1, sw = 1;
    if (!is_op(srg, "SumReluGrad") || srg->n_in != 3 || ir_attr_ints(srg, "sub_strides", &st)) continue;
    int j = 2;
    for (; j >= 1; j--) {
      ir_node *p = srg->in[j]->producer;
      if (is_op(p, "ConvGradData") && strided_1x1(p, &sh, &sw) && readers(g, srg->in[j], &only) == 1 && only == srg &&
          srg->in[j]->shape.rank == 4 && ir_attr_ints(p, "x_shape", &xs) == 4 && p->in[0]->shape.rank == 4) {
        cg = p;
        break;
      }
    }
    if (!cg) continue;
    const ir_shape *dy = &cg->in[0]->shape;
    int64_t x_shape[4] = {xs[0], xs[1], dy->d[2], dy->d[3]}, ones[2] = {1, 1};
    if (xs[2] == IR_N || xs[3] == IR_N || dy->d[2] != (xs[2] + sh - 1) / sh || dy->d[3] != (xs[3] + sw - 1) / sw) continue;
    ir_attr_set_ints(g, cg, "strides", 2, ones);
    ir_attr_set_ints(g, cg, "x_shape", 4, x_shape);
    if (ir_infer_node(cg, e)) break;
    if (j == 1) { /* the grid's gradient second: a + b == b + a for two terms */
      ir_value *t = srg->in[1];
      srg->in[1] = srg->in[2];
      srg->in[2] = t;
    }
    ir_attr_set_ints(g, srg, "sub_strides", 2, (int64_t[]){sh, sw});
    if (ir_infer_node(srg, e)) break;
    fused++;
  }
  if (!e->code && fused)
    ir_graph_note(g, "fuse: %d strided 1x1 ConvGradData compute only their stride grid (SumReluGrad{sub_strides})", fused);
}

/* dX = MaxPoolGrad{relu=1}(dY, Y) for MaxPoolGrad + ReluGrad over one Y (see the top of the file). */
static void maxpool_relu_grads(ir_graph *g, sw_err *e) {
  keep_set ks = keep_all(g);
  unsigned char *keep_node = ks.node, *keep_value = ks.value;
  int fused = 0;
  for (int i = 0; i < g->n_nodes && !e->code; i++) {
    ir_node *rg = g->nodes[i], *only = NULL;
    if (!is_op(rg, "ReluGrad")) continue;
    ir_value *gv = rg->in[0], *y = rg->in[1];
    ir_node *mp = gv->producer;
    if (!is_op(mp, "MaxPoolGrad") || mp->in[1] != y || ir_attr_int(mp, "relu") || readers(g, gv, &only) != 1 ||
        only != rg)
      continue;
    mp->out[0] = rg->out[0];
    rg->out[0]->producer = mp;
    rg->out[0]->producer_slot = 0;
    ir_attr_set_int(g, mp, "relu", 1);
    keep_value[gv->id] = 0;
    keep_node[i] = 0;
    if (ir_infer_node(mp, e)) break;
    fused++;
  }
  keep_apply(g, &ks, e);
  if (!e->code && fused) ir_graph_note(g, "fuse: %d MaxPool backward + ReLU backward pairs fused", fused);
}

int pass_fuse(ir_graph *g, const pass_opts *o, sw_err *e) {
  (void)o;
  keep_set ks = keep_all(g);
  unsigned char *keep_node = ks.node, *keep_value = ks.value;
  int fused = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    ir_node *bn = g->nodes[i], *relu = NULL;
    if (!keep_node[i] || strcmp(bn->op->name, "BatchNormalization") != 0 || ir_attr_int(bn, "relu")) continue;
    ir_value *y0 = bn->out[0];
    if (readers(g, y0, &relu) != 1 || !relu || strcmp(relu->op->name, "Relu") != 0) continue;
    ir_value *y = relu->out[0];
    /* the backward of the pair, if any */
    ir_node *rgrad = NULL, *bgrad = NULL;
    for (int j = 0; j < g->n_nodes; j++) {
      if (g->nodes[j]->fwd == relu && strcmp(g->nodes[j]->op->name, "ReluGrad") == 0) rgrad = g->nodes[j];
      if (g->nodes[j]->fwd == bn && strcmp(g->nodes[j]->op->name, "BatchNormalizationGrad") == 0) bgrad = g->nodes[j];
    }
    if (!rgrad != !bgrad) continue;
    ir_node *only = NULL;
    if (rgrad && (readers(g, rgrad->out[0], &only) != 1 || only != bgrad || bgrad->in[0] != rgrad->out[0])) continue;
    /* forward: BN writes Y directly */
    bn->out[0] = y;
    y->producer = bn;
    y->producer_slot = 0;
    ir_attr_set_int(g, bn, "relu", 1);
    keep_value[y0->id] = 0;
    for (int j = 0; j < g->n_nodes; j++)
      if (g->nodes[j] == relu) keep_node[j] = 0;
    if (rgrad) {
      ir_value **in = ir_alloc(g, sizeof *in * 6);
      memcpy(in, bgrad->in, sizeof *in * 5);
      in[0] = rgrad->in[0];
      in[5] = bn->in[2]; /* the bias */
      bgrad->in = in;
      bgrad->n_in = 6;
      ir_attr_set_int(g, bgrad, "relu", 1);
      keep_value[rgrad->out[0]->id] = 0;
      for (int j = 0; j < g->n_nodes; j++)
        if (g->nodes[j] == rgrad) keep_node[j] = 0;
      if (ir_infer_node(bgrad, e)) break;
    }
    if (ir_infer_node(bn, e)) break;
    fused++;
  }
  keep_apply(g, &ks, e);
  if (!e->code) {
    maxpool_relu_grads(g, e);
    if (!e->code) relu_masks(g, e);
    /* after relu_masks, so that AddRelu takes over the ReluMask it made */
    if (!e->code) add_relus(g, e);
    if (!e->code) bn_add_relus(g, e);
    if (!e->code) sum_relu_grads(g, e);
    if (!e->code) strided_grads(g, e);
    /* BN now runs before the nodes that read Y, and writes it: order is unchanged because the Relu
     * it replaces came after it. */
  }
  if (!e->code && fused) ir_graph_note(g, "fuse: %d BatchNormalization + ReLU pairs fused", fused);
  return e->code;
}
