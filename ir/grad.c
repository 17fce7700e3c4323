/* Gradient rules: for each forward op, the backward nodes that compute the gradients of its inputs.
 *
 * Every rule appends ordinary IR nodes (role IR_ROLE_BWD, fwd = the forward node), so the backward
 * graph is visible in dumps and passes can rewrite it (SWAT replaces the activation a weight
 * gradient reads, for instance). Rules only use values the forward pass computes anyway (or extra
 * outputs of the forward node they enable: BatchNormalization's saved statistics, Dropout's mask,
 * the loss's log-probabilities). */
#include <string.h>

#include "ir/grad.h"

#define FAIL(...) return sw_fail(e, SW_EINPUT, __VA_ARGS__)

static ir_node *bwd(ir_graph *g, ir_node *f, const char *op, const char *suffix, int n_in, ir_value *const *in, int n_out) {
  char name[512];
  snprintf(name, sizeof name, "%s/%s", f->name, suffix);
  ir_node *n = ir_emit(g, op, name, n_in, in, n_out);
  n->role = IR_ROLE_BWD;
  n->fwd = f;
  return n;
}

static void copy_attr(ir_graph *g, ir_node *dst, const ir_node *src, const char *name) {
  const ir_attr *a = ir_attr_get(src, name);
  if (!a) return;
  switch (a->type) {
    case IR_ATTR_INT: ir_attr_set_int(g, dst, name, a->i); break;
    case IR_ATTR_FLOAT: ir_attr_set_float(g, dst, name, a->f); break;
    case IR_ATTR_STRING: ir_attr_set_string(g, dst, name, a->s); break;
    case IR_ATTR_INTS: ir_attr_set_ints(g, dst, name, a->n, a->ints); break;
    case IR_ATTR_FLOATS: ir_attr_set_floats(g, dst, name, a->n, a->floats); break;
  }
}

static void copy_attrs(ir_graph *g, ir_node *dst, const ir_node *src) {
  for (int i = 0; i < src->n_attr; i++)
    if (ir_op_attr(dst->op, src->attrs[i].name)) copy_attr(g, dst, src, src->attrs[i].name);
}

static void set_shape_attr(ir_graph *g, ir_node *n, const char *name, const ir_shape *s) {
  ir_attr_set_ints(g, n, name, s->rank, s->d);
}

ir_value *ir_grad_ensure_output(ir_graph *g, ir_node *n, int k, sw_err *e) {
  SW_ASSERT(k < n->op->max_out);
  if (k >= n->n_out) {
    ir_value **o = ir_alloc(g, sizeof *o * (size_t)(k + 1));
    memcpy(o, n->out, sizeof *o * (size_t)n->n_out);
    n->out = o;
    n->n_out = k + 1;
  }
  if (!n->out[k]) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s:%d", n->name, k);
    ir_node_set_output(g, n, k, ir_unique_name(g, buf));
    if (ir_infer_node(n, e)) return NULL;
  }
  return n->out[k];
}

ir_value *ir_const_scalar(ir_graph *g, const char *base, float v) {
  ir_shape s = {.rank = 0};
  ir_value *c = ir_value_new(g, ir_unique_name(g, base), IR_VAL_CONST, IR_F32, &s);
  float *p = sw_xmalloc(sizeof *p);
  *p = v;
  ir_value_set_data(c, p, sizeof *p);
  return c;
}

/* dY summed down to `like`'s shape when `like` was broadcast; dY itself otherwise. */
static ir_value *sum_to(ir_graph *g, ir_node *f, const char *suffix, ir_value *dy, const ir_value *like, sw_err *e) {
  if (ir_shape_eq(&dy->shape, &like->shape)) return dy;
  ir_node *n = bwd(g, f, "ReduceSumTo", suffix, 1, &dy, 1);
  set_shape_attr(g, n, "shape", &like->shape);
  return ir_infer_node(n, e) ? NULL : n->out[0];
}

static ir_value *unary(ir_graph *g, ir_node *f, const char *op, const char *suffix, ir_value *a, sw_err *e) {
  ir_node *n = bwd(g, f, op, suffix, 1, &a, 1);
  return ir_infer_node(n, e) ? NULL : n->out[0];
}

static ir_value *binary(ir_graph *g, ir_node *f, const char *op, const char *suffix, ir_value *a, ir_value *b, sw_err *e) {
  ir_value *in[2] = {a, b};
  ir_node *n = bwd(g, f, op, suffix, 2, in, 1);
  return ir_infer_node(n, e) ? NULL : n->out[0];
}

#define CHECKED(x) do { if (!(x)) return e->code ? e->code : SW_EINPUT; } while (0)

int ir_grad_conv(ir_graph *g, ir_node *f, ir_value *const *dy, const int *need, ir_value **dx, sw_err *e) {
  if (need[0]) {
    ir_value *in[2] = {dy[0], f->in[1]};
    ir_node *n = bwd(g, f, "ConvGradData", "grad_data", 2, in, 1);
    copy_attrs(g, n, f);
    set_shape_attr(g, n, "x_shape", &f->in[0]->shape);
    if (ir_infer_node(n, e)) return e->code;
    dx[0] = n->out[0];
  }
  int has_b = f->n_in > 2 && f->in[2];
  if (need[1] || (has_b && need[2])) {
    ir_value *in[2] = {dy[0], f->in[0]};
    ir_node *n = bwd(g, f, "ConvGradWeight", "grad_weight", 2, in, has_b && need[2] ? 2 : 1);
    copy_attrs(g, n, f);
    if (ir_infer_node(n, e)) return e->code;
    dx[1] = need[1] ? n->out[0] : NULL;
    if (has_b && need[2]) dx[2] = n->out[1];
  }
  return SW_OK;
}

int ir_grad_gemm(ir_graph *g, ir_node *f, ir_value *const *dy, const int *need, ir_value **dx, sw_err *e) {
  int ta = (int)ir_attr_int(f, "transA"), tb = (int)ir_attr_int(f, "transB");
  float alpha = ir_attr_float(f, "alpha"), beta = ir_attr_float(f, "beta");
  ir_value *A = f->in[0], *B = f->in[1], *C = f->n_in > 2 ? f->in[2] : NULL;
  int64_t n_out = tb ? B->shape.d[0] : B->shape.d[1];
  int fc_bias = C && beta == 1.0f && C->shape.rank == 1 && C->shape.d[0] == n_out;
  if (!ta && tb && alpha == 1.0f && (!C || fc_bias)) {
    /* the fully-connected layer PyTorch exports: Y = X W^T + b */
    if (need[0]) CHECKED(dx[0] = binary(g, f, "GemmGradData", "grad_data", dy[0], B, e));
    if (need[1] || (C && need[2])) {
      ir_value *in[2] = {dy[0], A};
      ir_node *n = bwd(g, f, "GemmGradWeight", "grad_weight", 2, in, C && need[2] ? 2 : 1);
      if (ir_infer_node(n, e)) return e->code;
      dx[1] = need[1] ? n->out[0] : NULL;
      if (C && need[2]) dx[2] = n->out[1];
    }
    return SW_OK;
  }
  if (need[0]) {
    ir_value *in[2] = {ta ? B : dy[0], ta ? dy[0] : B};
    ir_node *n = bwd(g, f, "Gemm", "grad_a", 2, in, 1);
    ir_attr_set_int(g, n, "transA", ta ? tb : 0);
    ir_attr_set_int(g, n, "transB", ta ? 1 : !tb);
    ir_attr_set_float(g, n, "alpha", alpha);
    if (ir_infer_node(n, e)) return e->code;
    dx[0] = n->out[0];
  }
  if (need[1]) {
    ir_value *in[2] = {tb ? dy[0] : A, tb ? A : dy[0]};
    ir_node *n = bwd(g, f, "Gemm", "grad_b", 2, in, 1);
    ir_attr_set_int(g, n, "transA", tb ? 1 : !ta);
    ir_attr_set_int(g, n, "transB", tb ? ta : 0);
    ir_attr_set_float(g, n, "alpha", alpha);
    if (ir_infer_node(n, e)) return e->code;
    dx[1] = n->out[0];
  }
  if (C && need[2]) {
    ir_value *d = sum_to(g, f, "grad_c", dy[0], C, e);
    CHECKED(d);
    if (beta != 1.0f) CHECKED(d = binary(g, f, "Mul", "grad_c_beta", d, ir_const_scalar(g, "beta", beta), e));
    dx[2] = d;
  }
  return SW_OK;
}

static ir_value *swap_last(ir_graph *g, ir_node *f, const char *suffix, ir_value *v, sw_err *e) {
  int r = v->shape.rank;
  int64_t perm[IR_MAX_RANK];
  for (int i = 0; i < r; i++) perm[i] = i;
  perm[r - 2] = r - 1;
  perm[r - 1] = r - 2;
  ir_node *n = bwd(g, f, "Transpose", suffix, 1, &v, 1);
  ir_attr_set_ints(g, n, "perm", r, perm);
  return ir_infer_node(n, e) ? NULL : n->out[0];
}

int ir_grad_matmul(ir_graph *g, ir_node *f, ir_value *const *dy, const int *need, ir_value **dx, sw_err *e) {
  ir_value *A = f->in[0], *B = f->in[1];
  if (A->shape.rank < 2 || B->shape.rank < 2)
    FAIL("node '%s' (MatMul): unsupported: training a MatMul with a 1-D operand", f->name);
  if (need[0]) {
    ir_value *bt = swap_last(g, f, "b_t", B, e), *d;
    CHECKED(bt);
    CHECKED(d = binary(g, f, "MatMul", "grad_a", dy[0], bt, e));
    CHECKED(dx[0] = sum_to(g, f, "grad_a_sum", d, A, e));
  }
  if (need[1]) {
    ir_value *at = swap_last(g, f, "a_t", A, e), *d;
    CHECKED(at);
    CHECKED(d = binary(g, f, "MatMul", "grad_b", at, dy[0], e));
    CHECKED(dx[1] = sum_to(g, f, "grad_b_sum", d, B, e));
  }
  return SW_OK;
}

/* activations whose gradient reads the output Y */
int ir_grad_by_output(ir_graph *g, ir_node *f, ir_value *const *dy, const int *need, ir_value **dx, sw_err *e) {
  if (!need[0]) return SW_OK;
  char op[64];
  snprintf(op, sizeof op, "%sGrad", f->op->name);
  ir_node *n = bwd(g, f, op, "grad", 2, (ir_value *[]){dy[0], f->out[0]}, 1);
  copy_attrs(g, n, f);
  if (ir_infer_node(n, e)) return e->code;
  dx[0] = n->out[0];
  return SW_OK;
}

/* ops whose gradient reads the input X */
int ir_grad_by_input(ir_graph *g, ir_node *f, ir_value *const *dy, const int *need, ir_value **dx, sw_err *e) {
  if (!need[0]) return SW_OK;
  char op[64];
  snprintf(op, sizeof op, "%sGrad", f->op->name);
  ir_node *n = bwd(g, f, op, "grad", 2, (ir_value *[]){dy[0], f->in[0]}, 1);
  copy_attrs(g, n, f);
  if (ir_infer_node(n, e)) return e->code;
  dx[0] = n->out[0];
  return SW_OK;
}

/* ops whose gradient needs only dY and the input's shape */
int ir_grad_by_shape(ir_graph *g, ir_node *f, ir_value *const *dy, const int *need, ir_value **dx, sw_err *e) {
  if (!need[0]) return SW_OK;
  char op[64];
  snprintf(op, sizeof op, "%sGrad", f->op->name);
  ir_node *n = bwd(g, f, op, "grad", 1, &dy[0], 1);
  copy_attrs(g, n, f);
  set_shape_attr(g, n, "x_shape", &f->in[0]->shape);
  if (ir_infer_node(n, e)) return e->code;
  dx[0] = n->out[0];
  return SW_OK;
}

int ir_grad_bn(ir_graph *g, ir_node *f, ir_value *const *dy, const int *need, ir_value **dx, sw_err *e) {
  if (!ir_attr_int(f, "training_mode"))
    FAIL("node '%s' (BatchNormalization): gradients need training mode (batch statistics)", f->name);
  ir_value *sm = ir_grad_ensure_output(g, f, 3, e), *si = ir_grad_ensure_output(g, f, 4, e);
  CHECKED(sm && si);
  ir_value *in[5] = {dy[0], f->in[0], f->in[1], sm, si};
  ir_node *n = bwd(g, f, "BatchNormalizationGrad", "grad", 5, in, 3);
  copy_attr(g, n, f, "epsilon");
  if (ir_infer_node(n, e)) return e->code;
  for (int i = 0; i < 3; i++) dx[i] = need[i] ? n->out[i] : NULL;
  return SW_OK;
}

int ir_grad_dropout(ir_graph *g, ir_node *f, ir_value *const *dy, const int *need, ir_value **dx, sw_err *e) {
  if (!need[0]) return SW_OK;
  ir_value *mask = ir_grad_ensure_output(g, f, 1, e);
  CHECKED(mask);
  ir_node *n = bwd(g, f, "DropoutGrad", "grad", 2, (ir_value *[]){dy[0], mask}, 1);
  copy_attr(g, n, f, "ratio");
  if (ir_infer_node(n, e)) return e->code;
  dx[0] = n->out[0];
  return SW_OK;
}

int ir_grad_sce(ir_graph *g, ir_node *f, ir_value *const *dy, const int *need, ir_value **dx, sw_err *e) {
  if (need[2]) FAIL("node '%s': unsupported: training the class weights of SoftmaxCrossEntropyLoss", f->name);
  if (!need[0]) return SW_OK;
  ir_value *lp = ir_grad_ensure_output(g, f, 1, e);
  CHECKED(lp);
  ir_value *in[4] = {dy[0], lp, f->in[1], f->n_in > 2 ? f->in[2] : NULL};
  ir_node *n = bwd(g, f, "SoftmaxCrossEntropyLossGrad", "grad", f->n_in > 2 && f->in[2] ? 4 : 3, in, 1);
  copy_attrs(g, n, f);
  if (ir_infer_node(n, e)) return e->code;
  dx[0] = n->out[0];
  return SW_OK;
}

int ir_grad_arith(ir_graph *g, ir_node *f, ir_value *const *dy, const int *need, ir_value **dx, sw_err *e) {
  const char *op = f->op->name;
  ir_value *A = f->in[0], *B = f->in[1], *d;
  switch (op[0]) {
    case 'A': /* Add */
      if (need[0]) CHECKED(dx[0] = sum_to(g, f, "grad_a", dy[0], A, e));
      if (need[1]) CHECKED(dx[1] = sum_to(g, f, "grad_b", dy[0], B, e));
      break;
    case 'S': /* Sub */
      if (need[0]) CHECKED(dx[0] = sum_to(g, f, "grad_a", dy[0], A, e));
      if (need[1]) {
        CHECKED(d = sum_to(g, f, "grad_b_sum", dy[0], B, e));
        CHECKED(dx[1] = unary(g, f, "Neg", "grad_b", d, e));
      }
      break;
    case 'M': /* Mul */
      if (need[0]) {
        CHECKED(d = binary(g, f, "Mul", "grad_a_mul", dy[0], B, e));
        CHECKED(dx[0] = sum_to(g, f, "grad_a", d, A, e));
      }
      if (need[1]) {
        CHECKED(d = binary(g, f, "Mul", "grad_b_mul", dy[0], A, e));
        CHECKED(dx[1] = sum_to(g, f, "grad_b", d, B, e));
      }
      break;
    default: /* Div: y = a / b; da = dy / b; db = -dy * y / b */
      if (need[0]) {
        CHECKED(d = binary(g, f, "Div", "grad_a_div", dy[0], B, e));
        CHECKED(dx[0] = sum_to(g, f, "grad_a", d, A, e));
      }
      if (need[1]) {
        CHECKED(d = binary(g, f, "Mul", "grad_b_mul", dy[0], f->out[0], e));
        CHECKED(d = binary(g, f, "Div", "grad_b_div", d, B, e));
        CHECKED(d = sum_to(g, f, "grad_b_sum", d, B, e));
        CHECKED(dx[1] = unary(g, f, "Neg", "grad_b", d, e));
      }
      break;
  }
  return SW_OK;
}

int ir_grad_neg(ir_graph *g, ir_node *f, ir_value *const *dy, const int *need, ir_value **dx, sw_err *e) {
  if (need[0]) CHECKED(dx[0] = unary(g, f, "Neg", "grad", dy[0], e));
  return SW_OK;
}

int ir_grad_sum(ir_graph *g, ir_node *f, ir_value *const *dy, const int *need, ir_value **dx, sw_err *e) {
  (void)g;
  (void)e;
  for (int i = 0; i < f->n_in; i++)
    if (need[i]) dx[i] = dy[0];
  return SW_OK;
}

int ir_grad_reshape(ir_graph *g, ir_node *f, ir_value *const *dy, const int *need, ir_value **dx, sw_err *e) {
  if (!need[0]) return SW_OK;
  ir_node *n = bwd(g, f, "Reshape", "grad", 1, &dy[0], 1);
  set_shape_attr(g, n, "shape", &f->in[0]->shape);
  ir_attr_set_int(g, n, "allowzero", 1);
  if (ir_infer_node(n, e)) return e->code;
  dx[0] = n->out[0];
  return SW_OK;
}

int ir_grad_transpose(ir_graph *g, ir_node *f, ir_value *const *dy, const int *need, ir_value **dx, sw_err *e) {
  if (!need[0]) return SW_OK;
  int r = f->in[0]->shape.rank;
  const int64_t *p;
  int64_t inv[IR_MAX_RANK];
  int k = ir_attr_ints(f, "perm", &p);
  for (int i = 0; i < r; i++) inv[k ? p[i] : r - 1 - i] = i;
  ir_node *n = bwd(g, f, "Transpose", "grad", 1, &dy[0], 1);
  ir_attr_set_ints(g, n, "perm", r, inv);
  if (ir_infer_node(n, e)) return e->code;
  dx[0] = n->out[0];
  return SW_OK;
}

int ir_grad_pad(ir_graph *g, ir_node *f, ir_value *const *dy, const int *need, ir_value **dx, sw_err *e) {
  if (!need[0]) return SW_OK;
  const int64_t *p;
  int k = ir_attr_ints(f, "pads", &p);
  int64_t neg[2 * IR_MAX_RANK];
  for (int i = 0; i < k; i++) neg[i] = -p[i];
  ir_node *n = bwd(g, f, "Pad", "grad", 1, &dy[0], 1);
  ir_attr_set_ints(g, n, "pads", k, neg);
  if (ir_infer_node(n, e)) return e->code;
  dx[0] = n->out[0];
  return SW_OK;
}

int ir_grad_concat(ir_graph *g, ir_node *f, ir_value *const *dy, const int *need, ir_value **dx, sw_err *e) {
  int64_t axis = ir_attr_int(f, "axis");
  if (axis < 0) axis += f->out[0]->shape.rank;
  int64_t sizes[64];
  for (int i = 0; i < f->n_in; i++) sizes[i] = f->in[i]->shape.d[axis];
  ir_node *n = bwd(g, f, "Split", "grad", 1, &dy[0], f->n_in);
  ir_attr_set_int(g, n, "axis", axis);
  ir_attr_set_ints(g, n, "split", f->n_in, sizes);
  if (ir_infer_node(n, e)) return e->code;
  for (int i = 0; i < f->n_in; i++) dx[i] = need[i] ? n->out[i] : NULL;
  return SW_OK;
}

int ir_grad_split(ir_graph *g, ir_node *f, ir_value *const *dy, const int *need, ir_value **dx, sw_err *e) {
  if (!need[0]) return SW_OK;
  for (int i = 0; i < f->n_out; i++)
    if (!dy[i]) FAIL("node '%s' (Split): unsupported: training through a Split whose output %d is unused", f->name, i);
  ir_node *n = bwd(g, f, "Concat", "grad", f->n_out, dy, 1);
  ir_attr_set_int(g, n, "axis", ir_attr_int(f, "axis"));
  if (ir_infer_node(n, e)) return e->code;
  dx[0] = n->out[0];
  return SW_OK;
}

int ir_grad_slice(ir_graph *g, ir_node *f, ir_value *const *dy, const int *need, ir_value **dx, sw_err *e) {
  return ir_grad_by_shape(g, f, dy, need, dx, e);
}

int ir_grad_node(ir_graph *g, ir_node *n, ir_value *const *dy, const int *need, ir_value **dx, sw_err *e) {
  if (!n->op->grad)
    return sw_fail(e, SW_EINPUT, "node '%s' (%s): unsupported: swatc has no gradient for this operator", n->name, n->op->name);
  return n->op->grad(g, n, dy, need, dx, e);
}
