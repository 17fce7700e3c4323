/* The fuse pass's residual-block rewrites:
 * - S = Add(A, B); Y = Relu(S); M = ReluMask(Y) becomes Y, M = AddRelu(A, B) with M a bit mask, and
 *   Sum + SumReluGrad(M, G) becomes SumReluGrad(M, ..); with Y read by the backward (no mask)
 *   Y = AddRelu(A, B) and Sum + ReluGrad becomes SumReluGrad(Y, ..);
 * - nothing is fused when S or the summed gradient has another reader (a node or a graph output), when
 *   the Add broadcasts, or when the backward is a Dropout's (DropoutGrad, even at ratio 0);
 * - on ResNet-20 every residual block is fused, dense and SWAT, and the graphs verify;
 * - G = MaxPoolGrad(dY, Y); dX = ReluGrad(G, Y) becomes dX = MaxPoolGrad{relu=1}(dY, Y), not when G has
 *   another reader or the ReluGrad gates by another value; on LeNet-5 both pools are fused;
 * - Y0 = BN(X, ..); Y, M = AddRelu(Y0, R) becomes Y, M = BN{relu=1}(X, .., R) in the AddRelu's place
 *   (R may come after the BN), not when Y0 has another reader, the BN has a ReLU or is not training,
 *   or its statistics are read before the AddRelu; on ResNet-20 every block's second BN takes it;
 * - a strided 1x1 ConvGradData summed into a SumReluGrad computes its stride grid only
 *   (SumReluGrad{sub_strides}), either operand, not when its gradient has another reader or the conv
 *   is 3x3 or padded; on ResNet-20 both shortcuts. */
#include <stdio.h>
#include <string.h>

#include "importer/importer.h"
#include "passes/passes.h"
#include "passes/swat.h"
#include "tests/check.h"

static const char *src;

static ir_value *input(ir_graph *g, const char *name, int rank, const int64_t *d) {
  ir_shape s = ir_shape_make(rank, d);
  ir_value *v = ir_value_new(g, name, IR_VAL_INPUT, IR_F32, &s);
  ir_graph_add_input(g, v);
  return v;
}

static ir_node *node(ir_graph *g, const char *op, const char *name, ir_role role, int n_in, ir_value *const *in, int n_out) {
  ir_node *n = ir_node_new(g, op, name, n_in, in, n_out);
  n->role = role;
  for (int i = 0; i < n_out; i++) {
    char vn[64];
    snprintf(vn, sizeof vn, "%s:%d", name, i);
    ir_node_set_output(g, n, i, vn);
  }
  return n;
}

static int count(const ir_graph *g, const char *op) {
  int k = 0;
  for (int i = 0; i < g->n_nodes; i++) k += !strcmp(g->nodes[i]->op->name, op);
  return k;
}

static ir_node *find(const ir_graph *g, const char *op) {
  for (int i = 0; i < g->n_nodes; i++)
    if (!strcmp(g->nodes[i]->op->name, op)) return g->nodes[i];
  return NULL;
}

/* g with its shapes inferred, checked to verify (the small graphs' builders end here). */
static ir_graph *built(ir_graph *g, const char *what, int flags) {
  sw_err e = {0};
  CHECK(ir_infer_shapes(g, &e) == SW_OK && ir_verify(g, &e) == SW_OK, "%s(%d) builds: %s", what, flags, e.msg);
  return g;
}

/* Flags for residual(): which extra readers and variants to build. */
enum {
  S_READER = 1,      /* S is also a graph output */
  G_READER = 2,      /* the summed gradient is also read by another node */
  BROADCAST = 4,     /* B is [3], broadcast along A's [2,3] */
  Y_BACKWARD = 8,    /* Y is read by a backward op: no mask, ReluGrad(G, Y) */
  DROPPING = 16,     /* the backward is a Dropout's: DropoutGrad{ratio=0} reading a byte mask input */
  THREE = 32,        /* three gradients summed */
};

/* One residual block's forward and the backward the fuse pass sees after its relu_masks step (or a
 * ReluGrad reading Y when Y_BACKWARD), with A, B and the gradients as inputs. */
static ir_graph *residual(int flags) {
  ir_graph *g = ir_graph_new("residual");
  g->opset = 13;
  int64_t d[2] = {2, 3}, d1[1] = {3};
  ir_value *a = input(g, "a", 2, d), *b = flags & BROADCAST ? input(g, "b", 1, d1) : input(g, "b", 2, d);
  ir_value *g1 = input(g, "g1", 2, d), *g2 = input(g, "g2", 2, d), *g3 = input(g, "g3", 2, d);
  ir_node *add = node(g, "Add", "add", IR_ROLE_FWD, 2, (ir_value *[]){a, b}, 1);
  ir_node *relu = node(g, "Relu", "relu", IR_ROLE_FWD, 1, add->out, 1);
  ir_value *y = relu->out[0];
  ir_graph_add_output(g, y);
  if (flags & S_READER) ir_graph_add_output(g, add->out[0]);
  ir_node *sum = node(g, "Sum", "sum", IR_ROLE_BWD, flags & THREE ? 3 : 2, (ir_value *[]){g1, g2, g3}, 1);
  ir_node *bwd;
  if (flags & Y_BACKWARD) {
    bwd = node(g, "ReluGrad", "relu/grad", IR_ROLE_BWD, 2, (ir_value *[]){sum->out[0], y}, 1);
    ir_node *other = node(g, "Mul", "other_bwd", IR_ROLE_BWD, 2, (ir_value *[]){y, g1}, 1); /* e.g. a weight gradient */
    ir_graph_add_output(g, other->out[0]);
  } else if (flags & DROPPING) {
    ir_shape ms = ir_shape_make(2, d);
    ir_value *dm = ir_value_new(g, "dropout_mask", IR_VAL_INPUT, IR_BOOL, &ms);
    ir_graph_add_input(g, dm);
    bwd = node(g, "DropoutGrad", "relu/grad", IR_ROLE_BWD, 2, (ir_value *[]){sum->out[0], dm}, 1);
    ir_attr_set_float(g, bwd, "ratio", 0.0);
  } else {
    ir_node *mk = node(g, "ReluMask", "relu/mask", IR_ROLE_FWD, 1, &y, 1);
    bwd = node(g, "SumReluGrad", "relu/grad", IR_ROLE_BWD, 2, (ir_value *[]){mk->out[0], sum->out[0]}, 1);
  }
  bwd->fwd = relu;
  ir_graph_add_output(g, bwd->out[0]);
  if (flags & G_READER) {
    ir_node *neg = node(g, "Neg", "g_reader", IR_ROLE_BWD, 1, sum->out, 1);
    ir_graph_add_output(g, neg->out[0]);
  }
  return built(g, "residual", flags);
}

static int fuse(ir_graph *g, int flags) {
  sw_err e = {0};
  static const char *const passes[] = {"fuse"};
  pass_opts po = {.verify = 1};
  int rc = passes_run(g, passes, 1, &po, &e);
  CHECK(rc == SW_OK, "fuse of residual(%d): %s", flags, e.msg);
  return rc;
}

static void small_graphs(void) {
  /* masked (SWAT-like): Add + Relu + ReluMask -> AddRelu with the mask; Sum + SumReluGrad(M, G) -> SumReluGrad(M, ..) */
  for (int three = 0; three <= THREE; three += THREE) {
    ir_graph *g = residual(three);
    ir_value *y = ir_value_find(g, "relu:0"), *m = ir_value_find(g, "relu/mask:0"), *dx = ir_value_find(g, "relu/grad:0");
    if (!fuse(g, three)) {
      ir_node *ar = find(g, "AddRelu"), *srg = find(g, "SumReluGrad");
      CHECK(g->n_nodes == 2 && ar && srg, "masked: 2 nodes, AddRelu and SumReluGrad (got %d)", g->n_nodes);
      if (ar && srg) {
        CHECK(ar->n_out == 2 && ar->out[0] == y && ar->out[1] == m && y->producer == ar && m->producer == ar &&
                  m->producer_slot == 1 && m->dtype == IR_BIT,
              "AddRelu writes Y and the mask");
        CHECK(!strcmp(ar->in[0]->name, "a") && !strcmp(ar->in[1]->name, "b"), "AddRelu reads A, B");
        CHECK(srg->n_in == (three ? 4 : 3) && srg->in[0] == m && !strcmp(srg->in[1]->name, "g1") &&
                  !strcmp(srg->in[2]->name, "g2") && (!three || !strcmp(srg->in[3]->name, "g3")) && srg->out[0] == dx,
              "SumReluGrad(M, g1, g2%s) writes dX", three ? ", g3" : "");
        CHECK(srg->fwd == ar, "SumReluGrad belongs to AddRelu");
        CHECK(!ir_value_find(g, "add:0") && !ir_value_find(g, "sum:0"), "S and the summed gradient are gone");
      }
    }
    ir_graph_free(g);
  }
  /* Y read by the backward: AddRelu without a mask, Sum + ReluGrad(G, Y) -> SumReluGrad(Y, ..) */
  ir_graph *g = residual(Y_BACKWARD);
  if (!fuse(g, Y_BACKWARD)) {
    ir_node *ar = find(g, "AddRelu"), *srg = find(g, "SumReluGrad");
    CHECK(ar && ar->n_out == 1 && srg && srg->in[0] == ar->out[0] && srg->n_in == 3 && count(g, "Relu") == 0 &&
              count(g, "Sum") == 0 && count(g, "ReluGrad") == 0,
          "Y read by the backward: AddRelu(a, b) -> Y, SumReluGrad(Y, g1, g2)");
  }
  ir_graph_free(g);
  /* S has another reader: no AddRelu (the backward is still fused) */
  g = residual(S_READER);
  if (!fuse(g, S_READER))
    CHECK(count(g, "AddRelu") == 0 && count(g, "Add") == 1 && count(g, "Relu") == 1 && count(g, "ReluMask") == 1 &&
              count(g, "SumReluGrad") == 1,
          "S read elsewhere: Add, Relu and ReluMask stay");
  ir_graph_free(g);
  /* the summed gradient has another reader: no SumReluGrad (the forward is still fused) */
  g = residual(G_READER);
  if (!fuse(g, G_READER))
    CHECK(count(g, "SumReluGrad") == 1 && find(g, "SumReluGrad")->n_in == 2 && count(g, "Sum") == 1 &&
              count(g, "AddRelu") == 1,
          "G read elsewhere: Sum and SumReluGrad(M, G) stay");
  ir_graph_free(g);
  g = residual(G_READER | Y_BACKWARD);
  if (!fuse(g, G_READER | Y_BACKWARD))
    CHECK(count(g, "SumReluGrad") == 0 && count(g, "Sum") == 1 && count(g, "ReluGrad") == 1,
          "G read elsewhere: Sum and ReluGrad stay");
  ir_graph_free(g);
  /* a broadcasting Add keeps its kernel */
  g = residual(BROADCAST);
  if (!fuse(g, BROADCAST)) CHECK(count(g, "AddRelu") == 0 && count(g, "Add") == 1, "broadcasting Add not fused");
  ir_graph_free(g);
  /* a Dropout's backward is not a ReLU's, even at ratio 0 */
  g = residual(DROPPING);
  if (!fuse(g, DROPPING))
    CHECK(count(g, "SumReluGrad") == 0 && count(g, "Sum") == 1 && count(g, "DropoutGrad") == 1, "DropoutGrad not fused");
  ir_graph_free(g);
  printf("small graphs: rewrites and their conditions\n");
}

/* MaxPoolGrad(dY, Y) then ReluGrad(G, Z) (Z = Y unless OTHER_GATE), dX a graph output; G_READER: G is
 * also a graph output. */
enum { OTHER_GATE = 1 };
static ir_graph *pool_relu(int flags) {
  ir_graph *g = ir_graph_new("pool_relu");
  g->opset = 13;
  int64_t dx[4] = {1, 2, 4, 4}, dd[4] = {1, 2, 2, 2};
  ir_value *y = input(g, "y", 4, dx), *z = input(g, "z", 4, dx), *dy = input(g, "dy", 4, dd);
  ir_node *mp = node(g, "MaxPoolGrad", "pool/grad", IR_ROLE_BWD, 2, (ir_value *[]){dy, y}, 1);
  int64_t k[2] = {2, 2}, pads[4] = {0, 0, 0, 0};
  ir_attr_set_ints(g, mp, "kernel_shape", 2, k);
  ir_attr_set_ints(g, mp, "strides", 2, k);
  ir_attr_set_ints(g, mp, "pads", 4, pads);
  ir_node *rg = node(g, "ReluGrad", "relu/grad", IR_ROLE_BWD, 2, (ir_value *[]){mp->out[0], flags & OTHER_GATE ? z : y}, 1);
  ir_graph_add_output(g, rg->out[0]);
  if (flags & G_READER) ir_graph_add_output(g, mp->out[0]);
  return built(g, "pool_relu", flags);
}

static void pool_relu_graphs(void) {
  ir_graph *g = pool_relu(0);
  if (!fuse(g, 0)) {
    ir_node *mp = find(g, "MaxPoolGrad");
    CHECK(g->n_nodes == 1 && mp && ir_attr_int(mp, "relu") == 1 && !strcmp(mp->out[0]->name, "relu/grad:0") &&
              mp->out[0]->producer == mp && !ir_value_find(g, "pool/grad:0"),
          "MaxPoolGrad + ReluGrad over one Y: one MaxPoolGrad{relu=1} writing dX (%d nodes)", g->n_nodes);
  }
  ir_graph_free(g);
  int neg[2] = {G_READER, OTHER_GATE};
  const char *why[2] = {"G has another reader", "the ReluGrad gates by another value"};
  for (int i = 0; i < 2; i++) {
    g = pool_relu(neg[i]);
    if (!fuse(g, neg[i]))
      CHECK(g->n_nodes == 2 && count(g, "ReluGrad") == 1 && ir_attr_int(find(g, "MaxPoolGrad"), "relu") == 0,
            "MaxPoolGrad + ReluGrad not fused when %s", why[i]);
    ir_graph_free(g);
  }
  printf("small graphs: MaxPoolGrad + ReluGrad and its conditions\n");
}

/* Y0 = BN(X, ...) (training, 5 outputs); R = Neg(Q) after it; Y, M = AddRelu(Y0, R) (R first when
 * SWAP); dX = SumReluGrad(M, G) belonging to the AddRelu; Y, dX and the BN's statistics graph outputs. */
enum { Y0_READER = 1, BN_RELU = 2, BN_INFER = 4, EARLY_STATS = 8, SWAP = 16 };
static ir_graph *bn_add_relu(int flags) {
  ir_graph *g = ir_graph_new("bn_add_relu");
  g->opset = 15;
  int64_t d[4] = {2, 3, 4, 4}, c[1] = {3};
  ir_value *x = input(g, "x", 4, d), *q = input(g, "q", 4, d), *gr = input(g, "g", 4, d);
  ir_value *p[4] = {input(g, "scale", 1, c), input(g, "bias", 1, c), input(g, "mean", 1, c), input(g, "var", 1, c)};
  int train = !(flags & BN_INFER);
  ir_node *bn = node(g, "BatchNormalization", "bn", IR_ROLE_FWD, 5, (ir_value *[]){x, p[0], p[1], p[2], p[3]}, train ? 5 : 1);
  ir_attr_set_int(g, bn, "training_mode", train);
  if (flags & BN_RELU) ir_attr_set_int(g, bn, "relu", 1);
  if (flags & EARLY_STATS) ir_graph_add_output(g, node(g, "Neg", "stats_reader", IR_ROLE_FWD, 1, &bn->out[3], 1)->out[0]);
  ir_node *neg = node(g, "Neg", "shortcut", IR_ROLE_FWD, 1, &q, 1);
  ir_value *ab[2] = {bn->out[0], neg->out[0]};
  if (flags & SWAP) ab[0] = neg->out[0], ab[1] = bn->out[0];
  ir_node *ar = node(g, "AddRelu", "add", IR_ROLE_FWD, 2, ab, 2);
  ir_node *srg = node(g, "SumReluGrad", "relu/grad", IR_ROLE_BWD, 2, (ir_value *[]){ar->out[1], gr}, 1);
  srg->fwd = ar;
  ir_graph_add_output(g, ar->out[0]);
  ir_graph_add_output(g, srg->out[0]);
  for (int i = 3; i < bn->n_out; i++) ir_graph_add_output(g, bn->out[i]);
  if (flags & Y0_READER) ir_graph_add_output(g, node(g, "Neg", "y0_reader", IR_ROLE_FWD, 1, bn->out, 1)->out[0]);
  return built(g, "bn_add_relu", flags);
}

static void bn_add_relu_graphs(void) {
  for (int swap = 0; swap <= SWAP; swap += SWAP) {
    ir_graph *g = bn_add_relu(swap);
    if (fuse(g, swap)) {
      ir_graph_free(g);
      continue;
    }
    ir_node *bn = find(g, "BatchNormalization");
    ir_value *y = ir_value_find(g, "add:0"), *m = ir_value_find(g, "add:1");
    CHECK(g->n_nodes == 3 && count(g, "AddRelu") == 0 && bn && !ir_value_find(g, "bn:0"),
          "BN + AddRelu%s: the AddRelu and Y0 are gone (%d nodes)", swap ? " (R first)" : "", g->n_nodes);
    if (bn) {
      CHECK(bn->n_in == 6 && !strcmp(bn->in[5]->name, "shortcut:0") && bn->n_out == 6 && bn->out[0] == y &&
                bn->out[5] == m && y->producer == bn && m->producer == bn && m->producer_slot == 5 &&
                m->dtype == IR_BIT && ir_attr_int(bn, "relu") == 1,
            "BN{relu=1}(x, .., R) writes Y and the mask");
      CHECK(g->nodes[0] == find(g, "Neg") && g->nodes[1] == bn, "the BN runs in the AddRelu's place, after R's producer");
      CHECK(find(g, "SumReluGrad")->fwd == bn, "the ReLU's backward belongs to the BN");
    }
    ir_graph_free(g);
  }
  int neg[4] = {Y0_READER, BN_RELU, BN_INFER, EARLY_STATS};
  const char *why[4] = {"Y0 has another reader", "the BN has its own ReLU", "the BN is not training",
                        "its statistics are read before the AddRelu"};
  for (int i = 0; i < 4; i++) {
    ir_graph *g = bn_add_relu(neg[i]);
    if (!fuse(g, neg[i]))
      CHECK(count(g, "AddRelu") == 1 && find(g, "BatchNormalization")->n_in == 5, "BN + AddRelu not fused when %s", why[i]);
    ir_graph_free(g);
  }
  printf("small graphs: BatchNormalization + AddRelu and its conditions\n");
}

/* dS = SumReluGrad(Y, dX1, dX2) with dX2 = ConvGradData(dY, W){1x1 s2 on 2x2x6x6} (dX2 first when
 * SWAP; DX2_READER: dX2 also a graph output; K3: a 3x3 kernel, pads 1; PADDED: a 1x1 on 5x5 padded at
 * the top and left only, whose output is the 3x3 of the unpadded grid but offset by one). */
enum { DX2_READER = 1, K3 = 2, PADDED = 4 };
static ir_graph *strided_grad(int flags) {
  ir_graph *g = ir_graph_new("strided_grad");
  g->opset = 13;
  int64_t hw = flags & PADDED ? 5 : 6, dx[4] = {2, 2, hw, hw}, r = flags & K3 ? 3 : 1, pd = flags & (K3 | PADDED) ? 1 : 0;
  int64_t pe = flags & PADDED ? 0 : pd, o = (hw + pd + pe - r) / 2 + 1;
  int64_t ddy[4] = {2, 4, o, o}, dw[4] = {4, 2, r, r};
  ir_value *y = input(g, "y", 4, dx), *a = input(g, "dx1", 4, dx), *dy = input(g, "dy", 4, ddy), *w = input(g, "w", 4, dw);
  ir_node *cg = node(g, "ConvGradData", "shortcut/grad", IR_ROLE_BWD, 2, (ir_value *[]){dy, w}, 1);
  int64_t k[2] = {r, r}, s[2] = {2, 2}, pads[4] = {pd, pd, pe, pe}, dil[2] = {1, 1};
  ir_attr_set_ints(g, cg, "kernel_shape", 2, k);
  ir_attr_set_ints(g, cg, "strides", 2, s);
  ir_attr_set_ints(g, cg, "pads", 4, pads);
  ir_attr_set_ints(g, cg, "dilations", 2, dil);
  ir_attr_set_ints(g, cg, "x_shape", 4, dx);
  ir_value *ab[2] = {a, cg->out[0]};
  if (flags & SWAP) ab[0] = cg->out[0], ab[1] = a;
  ir_node *srg = node(g, "SumReluGrad", "relu/grad", IR_ROLE_BWD, 3, (ir_value *[]){y, ab[0], ab[1]}, 1);
  ir_graph_add_output(g, srg->out[0]);
  if (flags & DX2_READER) ir_graph_add_output(g, cg->out[0]);
  return built(g, "strided_grad", flags);
}

static void strided_grad_graphs(void) {
  for (int swap = 0; swap <= SWAP; swap += SWAP) {
    ir_graph *g = strided_grad(swap);
    if (!fuse(g, swap)) {
      ir_node *cg = find(g, "ConvGradData"), *srg = find(g, "SumReluGrad");
      const int64_t *st, *xs;
      int ns = ir_attr_ints(srg, "sub_strides", &st), nx = ir_attr_ints(cg, "x_shape", &xs);
      ir_attr_ints(cg, "strides", &st);
      CHECK(ns == 2 && srg->in[2] == cg->out[0] && !strcmp(srg->in[1]->name, "dx1") && st[0] == 1 && st[1] == 1 &&
                nx == 4 && xs[2] == 3 && xs[3] == 3 && cg->out[0]->shape.d[2] == 3 && cg->out[0]->shape.d[3] == 3,
            "strided 1x1 ConvGradData%s: stride 1 on the 3x3 grid, SumReluGrad{sub_strides}(y, dx1, it)",
            swap ? " (summed first)" : "");
    }
    ir_graph_free(g);
  }
  int neg[3] = {DX2_READER, K3, PADDED};
  const char *why[3] = {"its gradient has another reader", "the kernel is 3x3", "the 1x1 conv is padded"};
  for (int i = 0; i < 3; i++) {
    ir_graph *g = strided_grad(neg[i]);
    const int64_t *st;
    if (!fuse(g, neg[i]))
      CHECK(ir_attr_ints(find(g, "SumReluGrad"), "sub_strides", &st) == 0 && ir_attr_ints(find(g, "ConvGradData"), "strides", &st) == 2 &&
                st[0] == 2,
            "strided ConvGradData not rewritten when %s", why[i]);
    ir_graph_free(g);
  }
  printf("small graphs: strided 1x1 ConvGradData into SumReluGrad and its conditions\n");
}

/* A shipped model (models/NAME.onnx) through the training passes up to the memory plan, SWAT-U at
 * sparsity (0: dense), verified after each pass; NULL (and a failed check) if it does not load or run. */
static ir_graph *trained(const char *name, double sparsity) {
  char path[4096];
  snprintf(path, sizeof path, "%s/models/%s.onnx", src, name);
  ir_graph *g = NULL;
  sw_err e = {0};
  importer_opts io = {.batch = IMPORTER_BATCH_AUTO};
  CHECK(importer_load(path, &io, &g, &e) == SW_OK, "%s: %s", name, e.msg);
  if (!g) return NULL;
  swat_opts so = {.sparsity = sparsity, .budget = SWAT_UNIFORM, .period = 10};
  static const char *const passes[] = {"train-mode", "add-loss", "autodiff", "dce", "swat", "fuse", "memory-plan"};
  pass_opts po = {.verify = 1, .batch = 8, .swat = &so};
  int rc = passes_run(g, passes, 7, &po, &e);
  CHECK(rc == SW_OK, "%s s=%g: %s", name, sparsity, e.msg);
  if (rc == SW_OK) return g;
  ir_graph_free(g);
  return NULL;
}

/* LeNet-5 (conv -> Relu -> MaxPool twice): both pools' backward take their ReLU's, dense and SWAT. */
static void lenet5(double sparsity) {
  ir_graph *g = trained("lenet5", sparsity);
  if (!g) return;
  int fused = 0, left = 0; /* left: ReluGrads still reading a pool's gradient (the FC ReLUs' stay, dense) */
  for (int i = 0; i < g->n_nodes; i++) {
    const ir_node *n = g->nodes[i];
    if (!strcmp(n->op->name, "MaxPoolGrad")) fused += ir_attr_int(n, "relu") == 1;
    if (!strcmp(n->op->name, "ReluGrad")) left += n->in[0]->producer && !strcmp(n->in[0]->producer->op->name, "MaxPoolGrad");
  }
  CHECK(fused == 2 && count(g, "MaxPoolGrad") == 2 && left == 0,
        "lenet5 s=%g: 2 MaxPoolGrad{relu=1} (got %d of %d), no ReluGrad after them (got %d)", sparsity, fused,
        count(g, "MaxPoolGrad"), left);
  printf("lenet5 sparsity %g: %d MaxPoolGrad with the ReLU backward fused\n", sparsity, fused);
  ir_graph_free(g);
}

static void resnet20(double sparsity) {
  ir_graph *g = trained("resnet20", sparsity);
  if (!g) return;
  int masked_fwd = 0, masked_bwd = 0, summing = 0, bn_res = 0, sub = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    const ir_node *n = g->nodes[i];
    const int64_t *st;
    if (!strcmp(n->op->name, "SumReluGrad") && ir_attr_ints(n, "sub_strides", &st) == 2) sub += st[0] == 2 && st[1] == 2;
    if (!strcmp(n->op->name, "BatchNormalization") && n->n_in == 6) bn_res++, masked_fwd += n->n_out == 6 && n->out[5];
    if (!strcmp(n->op->name, "SumReluGrad")) masked_bwd += n->in[0]->dtype == IR_BIT, summing += n->n_in > 2;
  }
  /* 9 residual blocks, each Add + ReLU fused into the block's second BN; the last block's gradient is
   * not a Sum (GlobalAveragePool's only: its ReLU backward is a SumReluGrad of one gradient when
   * masked), and the stem's Sum feeds a BatchNormalizationGrad{relu=1} */
  CHECK(bn_res == 9 && count(g, "AddRelu") == 0 && count(g, "Add") == 0 && count(g, "Relu") == 0,
        "resnet20 s=%g: 9 BN with the residual Add + ReLU (%d), %d AddRelu left", sparsity, bn_res, count(g, "AddRelu"));
  CHECK(summing == 8 && count(g, "Sum") == 1, "resnet20 s=%g: 8 SumReluGrad summing gradients, %d", sparsity, summing);
  CHECK(count(g, "ReluMask") == 0, "resnet20 s=%g: no ReluMask left", sparsity);
  CHECK(sub == 2, "resnet20 s=%g: both shortcuts' input gradients on their stride grid (%d)", sparsity, sub);
  /* dense: the weight gradients read each Y, so only the last block (read by GlobalAveragePool) keeps a
   * mask; SWAT: they read the compact X_s, every block masks */
  int want_fwd = sparsity > 0 ? 9 : 1, want_bwd = sparsity > 0 ? 9 : 1;
  CHECK(masked_fwd == want_fwd && masked_bwd == want_bwd, "resnet20 s=%g: %d residual BN with a mask (want %d), %d SumReluGrad on a mask (want %d)",
        sparsity, masked_fwd, want_fwd, masked_bwd, want_bwd);
  printf("resnet20 sparsity %g: %d BN + Add + ReLU (%d with mask), %d SumReluGrad (%d on a mask)\n", sparsity, bn_res,
         masked_fwd, count(g, "SumReluGrad"), masked_bwd);
  ir_graph_free(g);
}

int main(int argc, char **argv) {
  src = argc > 1 ? argv[1] : ".";
  small_graphs();
  pool_relu_graphs();
  bn_add_relu_graphs();
  strided_grad_graphs();
  lenet5(0.0);
  lenet5(0.9);
  resnet20(0.0);
  resnet20(0.9);
  return check_report("fuse-pass");
}
