/* The operator registry: one row per op swatc can run, with its canonical attributes and shape rule.
 *
 * Canonical forms (the importer maps every ONNX opset variant onto these):
 * - Conv/MaxPool/AveragePool carry explicit kernel_shape, strides, pads (begin..., end...), dilations;
 *   auto_pad is resolved at import.
 * - Clip carries min/max as attributes; Pad carries pads/value as attributes (constant mode);
 *   Slice carries starts/ends/axes/steps; ReduceMean carries axes; Reshape carries its target in `shape`
 *   (entries may be N, 0 = copy, -1 = infer); Dropout carries ratio and training_mode.
 * - BatchNormalization has outputs (Y, running_mean, running_var) with training_mode, ONNX momentum
 *   meaning: running = running * momentum + batch * (1 - momentum).
 * - Softmax/LogSoftmax use opset-13 semantics (one axis). */
#include <math.h>
#include <string.h>

#include "ir/grad.h"

#define FAIL(...) return sw_fail(e, SW_EINPUT, __VA_ARGS__)
#define NODE_FMT "node '%s' (%s): "
#define NODE_ARGS n->name, n->op->name

static char sbuf[4][96];
static const char *shp(int k, const ir_shape *s) { return ir_shape_str(s, sbuf[k & 3], sizeof sbuf[0]); }

static void set_out(ir_node *n, int i, ir_dtype t, const ir_shape *s) {
  if (i < n->n_out && n->out[i]) {
    n->out[i]->dtype = t;
    n->out[i]->shape = *s;
  }
}

static int need_in(ir_node *n, int i, sw_err *e) {
  if (i >= n->n_in || !n->in[i]) FAIL(NODE_FMT "input %d is required", NODE_ARGS, i);
  return SW_OK;
}

static int need_float(ir_node *n, int i, sw_err *e) {
  if (need_in(n, i, e)) return e->code;
  if (n->in[i]->dtype != IR_F32) {
    FAIL(NODE_FMT "unsupported element type %s for input %d '%s' (swatc computes in float32)", NODE_ARGS,
         ir_dtype_name(n->in[i]->dtype), i, n->in[i]->name);
  }
  return SW_OK;
}

/* Compute ops refuse zero-size operands: a layer with no filters or no features cannot be trained. */
static int need_nonempty(ir_node *n, int i, sw_err *e) {
  if (i < n->n_in && n->in[i] && ir_shape_numel_at(&n->in[i]->shape, 1) == 0)
    FAIL(NODE_FMT "unsupported: input %d '%s' is empty (a zero-size dimension in %s)", NODE_ARGS, i, n->in[i]->name,
         shp(0, &n->in[i]->shape));
  return SW_OK;
}

static int norm_axis(ir_node *n, int64_t axis, int rank, int64_t *out, sw_err *e) {
  if (axis < -rank || axis >= (rank ? rank : 1)) FAIL(NODE_FMT "axis %lld out of range for rank %d", NODE_ARGS, (long long)axis, rank);
  *out = axis < 0 ? axis + rank : axis;
  return SW_OK;
}

/* numpy broadcasting of two shapes; N broadcasts with 1 and with N only. */
static int broadcast(ir_node *n, const ir_shape *a, const ir_shape *b, ir_shape *o, sw_err *e) {
  int r = a->rank > b->rank ? a->rank : b->rank;
  o->rank = r;
  for (int i = 0; i < r; i++) {
    int ia = i - (r - a->rank), ib = i - (r - b->rank);
    int64_t da = ia >= 0 ? a->d[ia] : 1, db = ib >= 0 ? b->d[ib] : 1;
    if (da == db) o->d[i] = da;
    else if (da == 1) o->d[i] = db;
    else if (db == 1) o->d[i] = da;
    else FAIL(NODE_FMT "shapes %s and %s cannot be broadcast together", NODE_ARGS, shp(0, a), shp(1, b));
  }
  return SW_OK;
}

static int ints_len(ir_node *n, const char *name, int want, const int64_t **v, sw_err *e) {
  int k = ir_attr_ints(n, name, v);
  if (k != want) FAIL(NODE_FMT "attribute %s has %d values, expected %d", NODE_ARGS, name, k, want);
  return SW_OK;
}

/* Output size of one spatial axis of a sliding window (conv or pool). */
static int window_out(ir_node *n, int64_t in, int64_t k, int64_t s, int64_t pb, int64_t pe, int64_t d, int ceil_mode,
                      int64_t *out, sw_err *e) {
  if (in == IR_N) FAIL(NODE_FMT "the batch dimension N cannot be a spatial dimension", NODE_ARGS);
  if (k < 1 || s < 1 || d < 1 || pb < 0 || pe < 0)
    FAIL(NODE_FMT "invalid window (kernel %lld, stride %lld, dilation %lld, pads %lld/%lld)", NODE_ARGS, (long long)k,
         (long long)s, (long long)d, (long long)pb, (long long)pe);
  int64_t span = (k - 1) * d + 1;
  int64_t avail = in + pb + pe - span;
  if (avail < 0)
    FAIL(NODE_FMT "the kernel window (extent %lld) is larger than the input size %lld with pads %lld/%lld", NODE_ARGS, (long long)span,
         (long long)in, (long long)pb, (long long)pe);
  int64_t o = ceil_mode ? (avail + s - 1) / s + 1 : avail / s + 1;
  /* PyTorch/ONNX rule: the last window must start inside the input or left padding */
  if (ceil_mode && (o - 1) * s >= in + pb) o--;
  *out = o;
  return SW_OK;
}

/* Shared by Conv, MaxPool, AveragePool: X [N, C, spatial...], returns output spatial sizes. */
static int window_shape(ir_node *n, const ir_shape *x, const int64_t *kernel, int ceil_mode, ir_shape *y, sw_err *e) {
  int sp = x->rank - 2;
  if (sp < 1 || sp > 3) FAIL(NODE_FMT "input %s must have 1 to 3 spatial dimensions", NODE_ARGS, shp(0, x));
  const int64_t *strides, *pads, *dil;
  if (ints_len(n, "strides", sp, &strides, e) || ints_len(n, "pads", 2 * sp, &pads, e)) return e->code;
  int nd = ir_attr_ints(n, "dilations", &dil);
  if (nd != 0 && nd != sp) FAIL(NODE_FMT "attribute dilations has %d values, expected %d", NODE_ARGS, nd, sp);
  y->rank = x->rank;
  y->d[0] = x->d[0];
  for (int i = 0; i < sp; i++) {
    if (window_out(n, x->d[2 + i], kernel[i], strides[i], pads[i], pads[sp + i], nd ? dil[i] : 1, ceil_mode, &y->d[2 + i], e))
      return e->code;
  }
  return SW_OK;
}

static int infer_conv(ir_node *n, sw_err *e) {
  if (need_float(n, 0, e) || need_float(n, 1, e) || need_nonempty(n, 0, e) || need_nonempty(n, 1, e)) return e->code;
  const ir_shape *x = &n->in[0]->shape, *w = &n->in[1]->shape;
  int64_t g = ir_attr_int(n, "group");
  if (w->rank != x->rank) FAIL(NODE_FMT "weight %s and input %s differ in rank", NODE_ARGS, shp(0, w), shp(1, x));
  if (w->d[0] == IR_N || x->d[1] == IR_N) FAIL(NODE_FMT "channel dimensions cannot be N", NODE_ARGS);
  if (g < 1 || x->d[1] % g || w->d[0] % g)
    FAIL(NODE_FMT "group %lld does not divide channels (input %s, weight %s)", NODE_ARGS, (long long)g, shp(0, x), shp(1, w));
  if (w->d[1] * g != x->d[1])
    FAIL(NODE_FMT "weight %s expects %lld input channels, input %s has %lld", NODE_ARGS, shp(0, w), (long long)(w->d[1] * g),
         shp(1, x), (long long)x->d[1]);
  const int64_t *ks;
  if (ints_len(n, "kernel_shape", x->rank - 2, &ks, e)) return e->code;
  for (int i = 0; i < x->rank - 2; i++)
    if (ks[i] != w->d[2 + i]) FAIL(NODE_FMT "kernel_shape does not match weight %s", NODE_ARGS, shp(0, w));
  if (n->n_in > 2 && n->in[2]) {
    if (need_float(n, 2, e)) return e->code;
    const ir_shape *b = &n->in[2]->shape;
    if (b->rank != 1 || b->d[0] != w->d[0]) FAIL(NODE_FMT "bias %s must be [%lld]", NODE_ARGS, shp(0, b), (long long)w->d[0]);
  }
  ir_shape y;
  if (window_shape(n, x, ks, 0, &y, e)) return e->code;
  y.d[1] = w->d[0];
  set_out(n, 0, IR_F32, &y);
  return SW_OK;
}

static int infer_pool(ir_node *n, sw_err *e) {
  if (need_float(n, 0, e) || need_nonempty(n, 0, e)) return e->code;
  const ir_shape *x = &n->in[0]->shape;
  const int64_t *ks;
  if (ints_len(n, "kernel_shape", x->rank - 2, &ks, e)) return e->code;
  ir_shape y;
  if (window_shape(n, x, ks, (int)ir_attr_int(n, "ceil_mode"), &y, e)) return e->code;
  y.d[1] = x->d[1];
  if (strcmp(n->op->name, "MaxPool") == 0 && ir_attr_int(n, "storage_order") != 0)
    FAIL(NODE_FMT "unsupported storage_order=1 (column-major indices)", NODE_ARGS);
  set_out(n, 0, IR_F32, &y);
  set_out(n, 1, IR_I64, &y);
  return SW_OK;
}

static int infer_global_pool(ir_node *n, sw_err *e) {
  if (need_float(n, 0, e)) return e->code;
  ir_shape y = n->in[0]->shape;
  if (y.rank < 3) FAIL(NODE_FMT "input %s must be [N,C,spatial...]", NODE_ARGS, shp(0, &y));
  for (int i = 2; i < y.rank; i++) {
    if (y.d[i] == IR_N) FAIL(NODE_FMT "the batch dimension N cannot be a spatial dimension", NODE_ARGS);
    y.d[i] = 1;
  }
  set_out(n, 0, IR_F32, &y);
  return SW_OK;
}

static int same_shape(ir_node *n, int a, int b, sw_err *e);

static int infer_bn(ir_node *n, sw_err *e) {
  for (int i = 0; i < n->n_in; i++)
    if (need_float(n, i, e)) return e->code;
  const ir_shape *x = &n->in[0]->shape;
  if (x->rank < 2) FAIL(NODE_FMT "input %s must be [N,C,...]", NODE_ARGS, shp(0, x));
  for (int i = 1; i < 5; i++) {
    const ir_shape *s = &n->in[i]->shape;
    if (s->rank != 1 || s->d[0] != x->d[1])
      FAIL(NODE_FMT "input %d '%s' has shape %s, expected [%lld]", NODE_ARGS, i, n->in[i]->name, shp(0, s), (long long)x->d[1]);
  }
  if (n->n_out > 1 && !ir_attr_int(n, "training_mode"))
    FAIL(NODE_FMT "running statistics outputs need training_mode=1", NODE_ARGS);
  /* swatc's fuse pass: a residual R added before the fused ReLU, and that ReLU's bit mask */
  if (n->n_in > 5 && (!ir_attr_int(n, "relu") || !ir_attr_int(n, "training_mode")))
    FAIL(NODE_FMT "a residual input needs relu=1 and training_mode=1", NODE_ARGS);
  if (n->n_in > 5 && same_shape(n, 0, 5, e)) return e->code;
  if (n->n_out > 5 && n->out[5] && n->n_in < 6) FAIL(NODE_FMT "the ReLU mask output needs a residual input", NODE_ARGS);
  set_out(n, 0, IR_F32, x);
  set_out(n, 1, IR_F32, &n->in[3]->shape);
  set_out(n, 2, IR_F32, &n->in[4]->shape);
  set_out(n, 3, IR_F32, &n->in[3]->shape); /* saved batch mean (for the backward) */
  set_out(n, 4, IR_F32, &n->in[4]->shape); /* saved inverse standard deviation */
  set_out(n, 5, IR_BIT, x);                  /* with a residual: the ReLU's bit mask */
  return SW_OK;
}

static int infer_gemm(ir_node *n, sw_err *e) {
  if (need_float(n, 0, e) || need_float(n, 1, e) || need_nonempty(n, 0, e) || need_nonempty(n, 1, e)) return e->code;
  const ir_shape *a = &n->in[0]->shape, *b = &n->in[1]->shape;
  if (a->rank != 2 || b->rank != 2) FAIL(NODE_FMT "inputs %s and %s must be matrices", NODE_ARGS, shp(0, a), shp(1, b));
  int ta = (int)ir_attr_int(n, "transA"), tb = (int)ir_attr_int(n, "transB");
  int64_t m = a->d[ta ? 1 : 0], ka = a->d[ta ? 0 : 1], kb = b->d[tb ? 1 : 0], nn = b->d[tb ? 0 : 1];
  if (ka != kb || ka == IR_N)
    FAIL(NODE_FMT "inner dimensions differ: A %s%s, B %s%s", NODE_ARGS, shp(0, a), ta ? " (transposed)" : "", shp(1, b),
         tb ? " (transposed)" : "");
  if (nn == IR_N) FAIL(NODE_FMT "the batch dimension N cannot be a weight dimension", NODE_ARGS);
  ir_shape y = {.rank = 2, .d = {m, nn}};
  if (n->n_in > 2 && n->in[2]) {
    if (need_float(n, 2, e)) return e->code;
    ir_shape o;
    if (broadcast(n, &y, &n->in[2]->shape, &o, e)) return e->code;
    if (!ir_shape_eq(&o, &y)) FAIL(NODE_FMT "C %s does not broadcast to %s", NODE_ARGS, shp(0, &n->in[2]->shape), shp(1, &y));
  }
  set_out(n, 0, IR_F32, &y);
  return SW_OK;
}

static int infer_matmul(ir_node *n, sw_err *e) {
  if (need_float(n, 0, e) || need_float(n, 1, e)) return e->code;
  ir_shape a = n->in[0]->shape, b = n->in[1]->shape;
  if (a.rank < 1 || b.rank < 1) FAIL(NODE_FMT "inputs must have rank >= 1", NODE_ARGS);
  int a1 = a.rank == 1, b1 = b.rank == 1;
  if (a1) { a.rank = 2; a.d[1] = a.d[0]; a.d[0] = 1; }
  if (b1) { b.rank = 2; b.d[1] = 1; }
  int64_t k1 = a.d[a.rank - 1], k2 = b.d[b.rank - 2];
  if (k1 != k2 || k1 == IR_N) FAIL(NODE_FMT "inner dimensions of %s and %s differ", NODE_ARGS, shp(0, &n->in[0]->shape), shp(1, &n->in[1]->shape));
  ir_shape ba = a, bb = b, o;
  ba.rank -= 2;
  bb.rank -= 2;
  if (broadcast(n, &ba, &bb, &o, e)) return e->code;
  if (o.rank + 2 > IR_MAX_RANK) FAIL(NODE_FMT "rank too large", NODE_ARGS);
  if (!a1) o.d[o.rank++] = a.d[a.rank - 2];
  if (!b1) o.d[o.rank++] = b.d[b.rank - 1];
  set_out(n, 0, IR_F32, &o);
  return SW_OK;
}

static int infer_unary(ir_node *n, sw_err *e) {
  if (need_float(n, 0, e)) return e->code;
  set_out(n, 0, IR_F32, &n->in[0]->shape);
  return SW_OK;
}

static int infer_clip(ir_node *n, sw_err *e) {
  if (ir_attr_float(n, "min") > ir_attr_float(n, "max")) FAIL(NODE_FMT "min is larger than max", NODE_ARGS);
  return infer_unary(n, e);
}

static int infer_binary(ir_node *n, sw_err *e) {
  if (need_float(n, 0, e) || need_float(n, 1, e)) return e->code;
  ir_shape o;
  if (broadcast(n, &n->in[0]->shape, &n->in[1]->shape, &o, e)) return e->code;
  set_out(n, 0, IR_F32, &o);
  return SW_OK;
}

static int infer_softmax(ir_node *n, sw_err *e) {
  if (need_float(n, 0, e)) return e->code;
  int64_t ax = 0;
  if (norm_axis(n, ir_attr_int(n, "axis"), n->in[0]->shape.rank, &ax, e)) return e->code;
  set_out(n, 0, IR_F32, &n->in[0]->shape);
  return SW_OK;
}

static int infer_dropout(ir_node *n, sw_err *e) {
  if (need_float(n, 0, e)) return e->code;
  float r = ir_attr_float(n, "ratio");
  if (!(r >= 0.0f && r < 1.0f)) FAIL(NODE_FMT "ratio %g must be in [0, 1)", NODE_ARGS, (double)r);
  set_out(n, 0, IR_F32, &n->in[0]->shape);
  set_out(n, 1, IR_BOOL, &n->in[0]->shape);
  return SW_OK;
}

static int infer_concat(ir_node *n, sw_err *e) {
  if (need_in(n, 0, e)) return e->code;
  ir_shape o = n->in[0]->shape;
  ir_dtype t = n->in[0]->dtype;
  int64_t ax = 0;
  if (o.rank < 1) FAIL(NODE_FMT "cannot concatenate scalars", NODE_ARGS);
  if (norm_axis(n, ir_attr_int(n, "axis"), o.rank, &ax, e)) return e->code;
  for (int i = 1; i < n->n_in; i++) {
    if (need_in(n, i, e)) return e->code;
    const ir_shape *s = &n->in[i]->shape;
    if (n->in[i]->dtype != t) FAIL(NODE_FMT "inputs have different element types", NODE_ARGS);
    if (s->rank != o.rank) FAIL(NODE_FMT "inputs %s and %s differ in rank", NODE_ARGS, shp(0, &o), shp(1, s));
    for (int k = 0; k < o.rank; k++) {
      if (k == ax) {
        if (o.d[k] == IR_N || s->d[k] == IR_N) FAIL(NODE_FMT "unsupported concatenation along the batch dimension N", NODE_ARGS);
        o.d[k] += s->d[k];
      } else if (o.d[k] != s->d[k]) {
        FAIL(NODE_FMT "input %d shape %s does not match %s outside axis %lld", NODE_ARGS, i, shp(0, s), shp(1, &o), (long long)ax);
      }
    }
  }
  set_out(n, 0, t, &o);
  return SW_OK;
}

static int infer_split(ir_node *n, sw_err *e) {
  if (need_in(n, 0, e)) return e->code;
  const ir_shape *x = &n->in[0]->shape;
  int64_t ax = 0;
  if (norm_axis(n, ir_attr_int(n, "axis"), x->rank, &ax, e)) return e->code;
  if (x->d[ax] == IR_N) FAIL(NODE_FMT "unsupported split along the batch dimension N", NODE_ARGS);
  const int64_t *sp;
  int k = ir_attr_ints(n, "split", &sp);
  if (k != n->n_out) FAIL(NODE_FMT "split has %d sizes for %d outputs", NODE_ARGS, k, n->n_out);
  int64_t tot = 0;
  for (int i = 0; i < k; i++) {
    if (sp[i] < 0) FAIL(NODE_FMT "negative split size", NODE_ARGS);
    tot += sp[i];
    ir_shape y = *x;
    y.d[ax] = sp[i];
    set_out(n, i, n->in[0]->dtype, &y);
  }
  if (tot != x->d[ax]) FAIL(NODE_FMT "split sizes add up to %lld, axis has %lld", NODE_ARGS, (long long)tot, (long long)x->d[ax]);
  return SW_OK;
}

static int infer_flatten(ir_node *n, sw_err *e) {
  if (need_in(n, 0, e)) return e->code;
  const ir_shape *x = &n->in[0]->shape;
  int64_t ax = ir_attr_int(n, "axis");
  if (ax < -x->rank || ax > x->rank) FAIL(NODE_FMT "axis %lld out of range", NODE_ARGS, (long long)ax);
  if (ax < 0) ax += x->rank;
  ir_shape y = {.rank = 2, .d = {1, 1}};
  for (int part = 0; part < 2; part++) {
    int lo = part ? (int)ax : 0, hi = part ? x->rank : (int)ax;
    int has_n = 0;
    int64_t p = 1;
    for (int i = lo; i < hi; i++) {
      if (x->d[i] == IR_N) has_n = 1;
      else p *= x->d[i];
    }
    if (has_n && p != 1) FAIL(NODE_FMT "unsupported: flattening the batch dimension N together with other dimensions", NODE_ARGS);
    y.d[part] = has_n ? IR_N : p;
  }
  set_out(n, 0, n->in[0]->dtype, &y);
  return SW_OK;
}

static int infer_reshape(ir_node *n, sw_err *e) {
  if (need_in(n, 0, e)) return e->code;
  const ir_shape *x = &n->in[0]->shape;
  const int64_t *t;
  int r = ir_attr_ints(n, "shape", &t);
  if (!ir_attr_get(n, "shape")) FAIL(NODE_FMT "target shape is not a constant", NODE_ARGS);
  if (r > IR_MAX_RANK) FAIL(NODE_FMT "target rank %d is larger than %d", NODE_ARGS, r, IR_MAX_RANK);
  int allowzero = (int)ir_attr_int(n, "allowzero");
  ir_shape y = {.rank = r};
  int infer_at = -1, y_has_n = 0;
  int64_t known = 1;
  for (int i = 0; i < r; i++) {
    int64_t d = t[i];
    if (d == 0 && !allowzero) {
      if (i >= x->rank) FAIL(NODE_FMT "target dim %d is 0 (copy) but the input has rank %d", NODE_ARGS, i, x->rank);
      d = x->d[i];
    }
    if (d == -1) {
      if (infer_at >= 0) FAIL(NODE_FMT "target shape has more than one -1", NODE_ARGS);
      infer_at = i;
      continue;
    }
    if (d == IR_N) y_has_n++;
    else if (d < 0) FAIL(NODE_FMT "invalid target dimension %lld", NODE_ARGS, (long long)d);
    else {
      if (d && known > INT64_MAX / d) FAIL(NODE_FMT "target shape is too large", NODE_ARGS);
      known *= d;
    }
    y.d[i] = d;
  }
  int x_has_n = 0;
  int64_t xp = 1;
  for (int i = 0; i < x->rank; i++) {
    if (x->d[i] == IR_N) x_has_n++;
    else xp *= x->d[i];
  }
  if (y_has_n > x_has_n) FAIL(NODE_FMT "target %s uses N but input %s does not have it", NODE_ARGS, shp(0, &y), shp(1, x));
  if (infer_at >= 0) {
    if (known == 0 || xp % known) FAIL(NODE_FMT "cannot reshape %s to target with %lld known elements", NODE_ARGS, shp(0, x), (long long)known);
    int64_t q = xp / known;
    if (x_has_n > y_has_n) {
      if (q != 1) FAIL(NODE_FMT "unsupported reshape of %s: -1 would be a multiple of the batch dimension N", NODE_ARGS, shp(0, x));
      y.d[infer_at] = IR_N;
    } else {
      y.d[infer_at] = q;
    }
  } else {
    if (x_has_n != y_has_n || xp != known)
      FAIL(NODE_FMT "cannot reshape %s to %s (element counts differ)", NODE_ARGS, shp(0, x), shp(1, &y));
  }
  set_out(n, 0, n->in[0]->dtype, &y);
  return SW_OK;
}

static int infer_transpose(ir_node *n, sw_err *e) {
  if (need_in(n, 0, e)) return e->code;
  const ir_shape *x = &n->in[0]->shape;
  const int64_t *p;
  int k = ir_attr_ints(n, "perm", &p);
  ir_shape y = {.rank = x->rank};
  if (k == 0) {
    for (int i = 0; i < x->rank; i++) y.d[i] = x->d[x->rank - 1 - i];
  } else {
    if (k != x->rank) FAIL(NODE_FMT "perm has %d entries for rank %d", NODE_ARGS, k, x->rank);
    int seen[IR_MAX_RANK] = {0};
    for (int i = 0; i < k; i++) {
      if (p[i] < 0 || p[i] >= k || seen[p[i]]++) FAIL(NODE_FMT "perm is not a permutation", NODE_ARGS);
      y.d[i] = x->d[p[i]];
    }
  }
  set_out(n, 0, n->in[0]->dtype, &y);
  return SW_OK;
}

static int infer_pad(ir_node *n, sw_err *e) {
  if (need_in(n, 0, e)) return e->code;
  const ir_shape *x = &n->in[0]->shape;
  if (strcmp(ir_attr_string(n, "mode"), "constant") != 0)
    FAIL(NODE_FMT "unsupported Pad mode '%s' (only constant)", NODE_ARGS, ir_attr_string(n, "mode"));
  const int64_t *p;
  if (ints_len(n, "pads", 2 * x->rank, &p, e)) return e->code;
  ir_shape y = *x;
  for (int i = 0; i < x->rank; i++) {
    if (x->d[i] == IR_N) {
      if (p[i] || p[x->rank + i]) FAIL(NODE_FMT "unsupported padding of the batch dimension N", NODE_ARGS);
      continue;
    }
    y.d[i] = x->d[i] + p[i] + p[x->rank + i];
    if (y.d[i] < 0) FAIL(NODE_FMT "pads remove more than the whole dimension %d", NODE_ARGS, i);
  }
  set_out(n, 0, n->in[0]->dtype, &y);
  return SW_OK;
}

static int infer_slice(ir_node *n, sw_err *e) {
  if (need_in(n, 0, e)) return e->code;
  const ir_shape *x = &n->in[0]->shape;
  const int64_t *st, *en, *ax, *sp;
  int k = ir_attr_ints(n, "starts", &st);
  if (ir_attr_ints(n, "ends", &en) != k) FAIL(NODE_FMT "starts and ends differ in length", NODE_ARGS);
  int ka = ir_attr_ints(n, "axes", &ax), ks = ir_attr_ints(n, "steps", &sp);
  if ((ka && ka != k) || (ks && ks != k)) FAIL(NODE_FMT "axes/steps length differs from starts", NODE_ARGS);
  ir_shape y = *x;
  int seen[IR_MAX_RANK] = {0};
  for (int i = 0; i < k; i++) {
    int64_t a = 0;
    if (norm_axis(n, ka ? ax[i] : i, x->rank, &a, e)) return e->code;
    if (seen[a]++) FAIL(NODE_FMT "axis %lld repeated", NODE_ARGS, (long long)a);
    int64_t step = ks ? sp[i] : 1;
    if (step == 0) FAIL(NODE_FMT "step is 0", NODE_ARGS);
    int64_t dim = x->d[a];
    if (dim == IR_N) {
      if (st[i] == 0 && step == 1 && en[i] >= INT32_MAX) continue;
      FAIL(NODE_FMT "unsupported slicing of the batch dimension N", NODE_ARGS);
    }
    int64_t s = st[i], t = en[i];
    if (s < 0) s += dim;
    if (t < 0) t += dim;
    if (step > 0) {
      s = s < 0 ? 0 : s > dim ? dim : s;
      t = t < 0 ? 0 : t > dim ? dim : t;
      y.d[a] = t > s ? (t - s + step - 1) / step : 0;
    } else {
      s = s < 0 ? -1 : s > dim - 1 ? dim - 1 : s;
      t = t < -1 ? -1 : t > dim - 1 ? dim - 1 : t;
      y.d[a] = s > t ? (s - t + (-step) - 1) / (-step) : 0;
    }
  }
  set_out(n, 0, n->in[0]->dtype, &y);
  return SW_OK;
}

static int infer_reduce_mean(ir_node *n, sw_err *e) {
  if (need_float(n, 0, e)) return e->code;
  const ir_shape *x = &n->in[0]->shape;
  const int64_t *ax;
  int k = ir_attr_ints(n, "axes", &ax);
  int keep = (int)ir_attr_int(n, "keepdims");
  int red[IR_MAX_RANK] = {0};
  if (k == 0 && !ir_attr_int(n, "noop_with_empty_axes"))
    for (int i = 0; i < x->rank; i++) red[i] = 1;
  for (int i = 0; i < k; i++) {
    int64_t a = 0;
    if (norm_axis(n, ax[i], x->rank, &a, e)) return e->code;
    red[a] = 1;
  }
  ir_shape y = {.rank = 0};
  for (int i = 0; i < x->rank; i++) {
    if (!red[i]) y.d[y.rank++] = x->d[i];
    else if (keep) y.d[y.rank++] = 1;
  }
  set_out(n, 0, IR_F32, &y);
  return SW_OK;
}

static int infer_sce_loss(ir_node *n, sw_err *e) {
  if (need_float(n, 0, e) || need_in(n, 1, e)) return e->code;
  const ir_shape *x = &n->in[0]->shape, *l = &n->in[1]->shape;
  if (n->in[1]->dtype != IR_I64 && n->in[1]->dtype != IR_I32) FAIL(NODE_FMT "labels must be int32 or int64", NODE_ARGS);
  if (x->rank < 2 || l->rank != x->rank - 1) FAIL(NODE_FMT "scores %s and labels %s do not match", NODE_ARGS, shp(0, x), shp(1, l));
  for (int i = 0; i < l->rank; i++)
    if (l->d[i] != x->d[i == 0 ? 0 : i + 1]) FAIL(NODE_FMT "scores %s and labels %s do not match", NODE_ARGS, shp(0, x), shp(1, l));
  if (n->n_in > 2 && n->in[2]) {
    if (need_float(n, 2, e)) return e->code;
    if (n->in[2]->shape.rank != 1 || n->in[2]->shape.d[0] != x->d[1]) FAIL(NODE_FMT "weights must be [C]", NODE_ARGS);
  }
  const char *red = ir_attr_string(n, "reduction");
  ir_shape y = {.rank = 0};
  if (strcmp(red, "none") == 0) y = *l;
  else if (strcmp(red, "mean") != 0 && strcmp(red, "sum") != 0) FAIL(NODE_FMT "unknown reduction '%s'", NODE_ARGS, red);
  set_out(n, 0, IR_F32, &y);
  set_out(n, 1, IR_F32, x);
  return SW_OK;
}

/* ---- backward ops (made by autodiff) ---- */

static int ints_shape(ir_node *n, const char *name, ir_shape *s, sw_err *e) {
  const int64_t *v;
  int k = ir_attr_ints(n, name, &v);
  if (!ir_attr_get(n, name) || k > IR_MAX_RANK) FAIL(NODE_FMT "attribute %s must hold a shape", NODE_ARGS, name);
  *s = ir_shape_make(k, v);
  return SW_OK;
}

static int same_shape(ir_node *n, int a, int b, sw_err *e) {
  if (!ir_shape_eq(&n->in[a]->shape, &n->in[b]->shape))
    FAIL(NODE_FMT "inputs %d %s and %d %s differ in shape", NODE_ARGS, a, shp(0, &n->in[a]->shape), b, shp(1, &n->in[b]->shape));
  return SW_OK;
}

static int infer_conv_grad_data(ir_node *n, sw_err *e) {
  if (need_float(n, 0, e) || need_float(n, 1, e)) return e->code;
  ir_shape x, y;
  const int64_t *ks;
  if (ints_shape(n, "x_shape", &x, e) || ints_len(n, "kernel_shape", x.rank - 2, &ks, e)) return e->code;
  if (window_shape(n, &x, ks, 0, &y, e)) return e->code;
  y.d[1] = n->in[1]->shape.d[0];
  if (!ir_shape_eq(&y, &n->in[0]->shape)) FAIL(NODE_FMT "dY %s does not match the forward output %s", NODE_ARGS, shp(0, &n->in[0]->shape), shp(1, &y));
  set_out(n, 0, IR_F32, &x);
  return SW_OK;
}

static int infer_conv_grad_weight(ir_node *n, sw_err *e) {
  if (need_float(n, 0, e) || need_float(n, 1, e)) return e->code;
  const ir_shape *dy = &n->in[0]->shape, *x = &n->in[1]->shape;
  const int64_t *ks;
  if (ints_len(n, "kernel_shape", x->rank - 2, &ks, e)) return e->code;
  int64_t g = ir_attr_int(n, "group");
  if (g < 1 || x->d[1] % g) FAIL(NODE_FMT "group does not divide the input channels", NODE_ARGS);
  ir_shape y;
  if (window_shape(n, x, ks, 0, &y, e)) return e->code;
  y.d[1] = dy->d[1];
  if (!ir_shape_eq(&y, dy)) FAIL(NODE_FMT "dY %s does not match the forward output %s", NODE_ARGS, shp(0, dy), shp(1, &y));
  ir_shape w = {.rank = x->rank};
  w.d[0] = dy->d[1];
  w.d[1] = x->d[1] / g;
  for (int i = 2; i < x->rank; i++) w.d[i] = ks[i - 2];
  ir_shape b = {.rank = 1, .d = {dy->d[1]}};
  set_out(n, 0, IR_F32, &w);
  set_out(n, 1, IR_F32, &b);
  return SW_OK;
}

static int infer_gemm_grad_data(ir_node *n, sw_err *e) { /* dX[M,K] = dY[M,N] W[N,K] */
  if (need_float(n, 0, e) || need_float(n, 1, e)) return e->code;
  const ir_shape *dy = &n->in[0]->shape, *w = &n->in[1]->shape;
  if (dy->rank != 2 || w->rank != 2 || dy->d[1] != w->d[0]) FAIL(NODE_FMT "dY %s and W %s do not match", NODE_ARGS, shp(0, dy), shp(1, w));
  ir_shape x = {.rank = 2, .d = {dy->d[0], w->d[1]}};
  set_out(n, 0, IR_F32, &x);
  return SW_OK;
}

static int infer_gemm_grad_weight(ir_node *n, sw_err *e) { /* dW[N,K] = dY^T X, db[N] = colsum dY */
  if (need_float(n, 0, e) || need_float(n, 1, e)) return e->code;
  const ir_shape *dy = &n->in[0]->shape, *x = &n->in[1]->shape;
  if (dy->rank != 2 || x->rank != 2 || dy->d[0] != x->d[0]) FAIL(NODE_FMT "dY %s and X %s do not match", NODE_ARGS, shp(0, dy), shp(1, x));
  ir_shape w = {.rank = 2, .d = {dy->d[1], x->d[1]}}, b = {.rank = 1, .d = {dy->d[1]}};
  set_out(n, 0, IR_F32, &w);
  set_out(n, 1, IR_F32, &b);
  return SW_OK;
}

/* (dY, Y or X) -> dX of the same shape */
static int infer_unary_grad(ir_node *n, sw_err *e) {
  if (need_float(n, 0, e) || need_float(n, 1, e) || same_shape(n, 0, 1, e)) return e->code;
  set_out(n, 0, IR_F32, &n->in[0]->shape);
  return SW_OK;
}

static int infer_relu_mask(ir_node *n, sw_err *e) {
  if (need_float(n, 0, e)) return e->code;
  set_out(n, 0, IR_BIT, &n->in[0]->shape); /* one bit per element */
  return SW_OK;
}

/* (A, B) -> Y[, M]: same-shape float A and B (no broadcasting), M bits */
static int infer_add_relu(ir_node *n, sw_err *e) {
  if (need_float(n, 0, e) || need_float(n, 1, e) || same_shape(n, 0, 1, e)) return e->code;
  set_out(n, 0, IR_F32, &n->in[0]->shape);
  set_out(n, 1, IR_BIT, &n->in[0]->shape);
  return SW_OK;
}

/* (gate, dY1, dY2, ...) -> dX: the gate is Y (float) or the ReLU's bit mask, all of one shape; with
 * sub_strides = [sh, sw], two gradients of which dY2 is [N, C, ceil(H / sh), ceil(W / sw)] for dY1's
 * [N, C, H, W]: the values on the stride grid of a gradient that is +0 elsewhere */
static int infer_sum_relu_grad(ir_node *n, sw_err *e) {
  if (need_in(n, 0, e)) return e->code;
  if (n->in[0]->dtype != IR_BIT && need_float(n, 0, e)) return e->code;
  const int64_t *st;
  int ns = ir_attr_ints(n, "sub_strides", &st);
  if (ns) {
    if (ns != 2 || st[0] < 1 || st[1] < 1 || n->n_in != 3)
      FAIL(NODE_FMT "sub_strides needs two strides >= 1 and two gradients", NODE_ARGS);
    if (need_float(n, 1, e) || need_float(n, 2, e)) return e->code;
    const ir_shape *a = &n->in[1]->shape, *b = &n->in[2]->shape;
    if (a->rank != 4 || b->rank != 4 || b->d[0] != a->d[0] || b->d[1] != a->d[1] || a->d[2] == IR_N ||
        a->d[3] == IR_N || b->d[2] != (a->d[2] + st[0] - 1) / st[0] || b->d[3] != (a->d[3] + st[1] - 1) / st[1])
      FAIL(NODE_FMT "gradient %s is not the stride-%lldx%lld grid of %s", NODE_ARGS, shp(1, b), (long long)st[0],
           (long long)st[1], shp(0, a));
  } else {
    for (int i = 1; i < n->n_in; i++)
      if (need_float(n, i, e) || same_shape(n, 1, i, e)) return e->code;
  }
  if (same_shape(n, 1, 0, e)) return e->code;
  set_out(n, 0, IR_F32, &n->in[1]->shape);
  return SW_OK;
}

static int infer_softmax_grad(ir_node *n, sw_err *e) {
  if (infer_unary_grad(n, e)) return e->code;
  int64_t ax;
  return norm_axis(n, ir_attr_int(n, "axis"), n->in[0]->shape.rank, &ax, e);
}

static int infer_dropout_grad(ir_node *n, sw_err *e) {
  if (need_float(n, 0, e) || need_in(n, 1, e) || same_shape(n, 0, 1, e)) return e->code;
  if (n->in[1]->dtype != IR_BOOL) FAIL(NODE_FMT "mask must be bool", NODE_ARGS);
  set_out(n, 0, IR_F32, &n->in[0]->shape);
  return SW_OK;
}

static int infer_maxpool_grad(ir_node *n, sw_err *e) { /* (dY, X) -> dX */
  if (need_float(n, 0, e) || need_float(n, 1, e)) return e->code;
  const ir_shape *x = &n->in[1]->shape;
  const int64_t *ks;
  ir_shape y;
  if (ints_len(n, "kernel_shape", x->rank - 2, &ks, e) || window_shape(n, x, ks, (int)ir_attr_int(n, "ceil_mode"), &y, e)) return e->code;
  y.d[1] = x->d[1];
  if (!ir_shape_eq(&y, &n->in[0]->shape)) FAIL(NODE_FMT "dY %s does not match the pooled shape %s", NODE_ARGS, shp(0, &n->in[0]->shape), shp(1, &y));
  set_out(n, 0, IR_F32, x);
  return SW_OK;
}

static int infer_avgpool_grad(ir_node *n, sw_err *e) { /* (dY) {x_shape} -> dX */
  if (need_float(n, 0, e)) return e->code;
  ir_shape x, y;
  const int64_t *ks;
  if (ints_shape(n, "x_shape", &x, e)) return e->code;
  if (ints_len(n, "kernel_shape", x.rank - 2, &ks, e) || window_shape(n, &x, ks, (int)ir_attr_int(n, "ceil_mode"), &y, e)) return e->code;
  y.d[1] = x.d[1];
  if (!ir_shape_eq(&y, &n->in[0]->shape)) FAIL(NODE_FMT "dY %s does not match the pooled shape %s", NODE_ARGS, shp(0, &n->in[0]->shape), shp(1, &y));
  set_out(n, 0, IR_F32, &x);
  return SW_OK;
}

static int infer_to_x_shape(ir_node *n, sw_err *e) { /* ops whose output is attribute x_shape */
  if (need_float(n, 0, e)) return e->code;
  ir_shape x;
  if (ints_shape(n, "x_shape", &x, e)) return e->code;
  set_out(n, 0, IR_F32, &x);
  return SW_OK;
}

/* (dY, X, scale, saved_mean, saved_inv_std[, Y]) -> dX, dscale, dbias; Y (the fused ReLU's output) when relu=1 */
static int infer_bn_grad(ir_node *n, sw_err *e) {
  for (int i = 0; i < 5; i++)
    if (need_float(n, i, e)) return e->code;
  if (same_shape(n, 0, 1, e)) return e->code;
  if (ir_attr_int(n, "relu") != (n->n_in > 5 && n->in[5] != NULL)) FAIL(NODE_FMT "relu=1 needs input 5 (bias), and only then", NODE_ARGS);
  if (n->n_in > 5 && (need_float(n, 5, e) || n->in[5]->shape.rank != 1 || n->in[5]->shape.d[0] != n->in[1]->shape.d[1]))
    FAIL(NODE_FMT "input 5 (bias) must be float [C]", NODE_ARGS);
  const ir_shape *x = &n->in[1]->shape;
  for (int i = 2; i < 5; i++)
    if (n->in[i]->shape.rank != 1 || n->in[i]->shape.d[0] != x->d[1]) FAIL(NODE_FMT "input %d must be [C]", NODE_ARGS, i);
  set_out(n, 0, IR_F32, x);
  set_out(n, 1, IR_F32, &n->in[2]->shape);
  set_out(n, 2, IR_F32, &n->in[2]->shape);
  return SW_OK;
}

static int infer_sce_grad(ir_node *n, sw_err *e) { /* (dloss, log_prob, labels[, weights]) -> dscores */
  if (need_float(n, 0, e) || need_float(n, 1, e) || need_in(n, 2, e)) return e->code;
  set_out(n, 0, IR_F32, &n->in[1]->shape);
  return SW_OK;
}

static int infer_reduce_sum_to(ir_node *n, sw_err *e) {
  if (need_float(n, 0, e)) return e->code;
  ir_shape t, o;
  if (ints_shape(n, "shape", &t, e) || broadcast(n, &t, &n->in[0]->shape, &o, e)) return e->code;
  if (!ir_shape_eq(&o, &n->in[0]->shape)) FAIL(NODE_FMT "%s does not broadcast to %s", NODE_ARGS, shp(0, &t), shp(1, &n->in[0]->shape));
  set_out(n, 0, IR_F32, &t);
  return SW_OK;
}

/* (X, state[2]) -> (Y, state'[2]): state = [threshold, realised density] */
static int infer_topk(ir_node *n, sw_err *e) {
  if (need_float(n, 0, e) || need_float(n, 1, e)) return e->code;
  if (n->in[1]->shape.rank != 1 || n->in[1]->shape.d[0] != 2) FAIL(NODE_FMT "state must be f32[2]", NODE_ARGS);
  float s = ir_attr_float(n, "sparsity");
  if (!(s >= 0.0f && s < 1.0f)) FAIL(NODE_FMT "sparsity %g must be in [0, 1)", NODE_ARGS, (double)s);
  int64_t grp = ir_attr_int(n, "group"), numel = ir_shape_numel_at(&n->in[0]->shape, 1);
  if (grp < 1 || (numel > 0 && !ir_shape_has_n(&n->in[0]->shape) && numel % grp)) FAIL(NODE_FMT "group %lld does not divide the tensor", NODE_ARGS, (long long)grp);
  if (ir_attr_int(n, "period") < 1) FAIL(NODE_FMT "period must be >= 1", NODE_ARGS);
  double cp = ir_attr_float(n, "compact");
  if (!(cp >= 0 && cp <= 1)) FAIL(NODE_FMT "compact %g must be in [0, 1]", NODE_ARGS, cp);
  if (cp > 0 && grp > 1) FAIL(NODE_FMT "a compact selection cannot be grouped", NODE_ARGS);
  set_out(n, 0, IR_F32, &n->in[0]->shape);
  set_out(n, 1, IR_F32, &n->in[1]->shape);
  return SW_OK;
}

static int infer_sum(ir_node *n, sw_err *e) {
  for (int i = 0; i < n->n_in; i++)
    if (need_float(n, i, e) || same_shape(n, 0, i, e)) return e->code;
  set_out(n, 0, IR_F32, &n->in[0]->shape);
  return SW_OK;
}

#define A_INT(nm, d) {nm, IR_ATTR_INT, 0, d, 0, NULL}
#define A_INT_REQ(nm) {nm, IR_ATTR_INT, 1, 0, 0, NULL}
#define A_FLOAT(nm, d) {nm, IR_ATTR_FLOAT, 0, 0, d, NULL}
#define A_STR(nm, d) {nm, IR_ATTR_STRING, 0, 0, 0, d}
#define A_INTS(nm) {nm, IR_ATTR_INTS, 0, 0, 0, NULL}
#define A_INTS_REQ(nm) {nm, IR_ATTR_INTS, 1, 0, 0, NULL}
#define A_END {NULL, 0, 0, 0, 0, NULL}

static const ir_attr_def conv_attrs[] = {A_INTS_REQ("kernel_shape"), A_INTS_REQ("strides"), A_INTS_REQ("pads"),
                                         A_INTS_REQ("dilations"), A_INT("group", 1), A_END};
static const ir_attr_def maxpool_attrs[] = {A_INTS_REQ("kernel_shape"), A_INTS_REQ("strides"), A_INTS_REQ("pads"),
                                            A_INTS("dilations"), A_INT("ceil_mode", 0), A_INT("storage_order", 0), A_END};
/* relu (swatc's own, set by the fuse pass): the ReLU backward of X in the same kernel (X is a ReLU's output) */
static const ir_attr_def maxpool_grad_attrs[] = {A_INTS_REQ("kernel_shape"), A_INTS_REQ("strides"), A_INTS_REQ("pads"),
                                                 A_INTS("dilations"), A_INT("ceil_mode", 0), A_INT("storage_order", 0),
                                                 A_INT("relu", 0), A_END};
static const ir_attr_def avgpool_attrs[] = {A_INTS_REQ("kernel_shape"), A_INTS_REQ("strides"), A_INTS_REQ("pads"),
                                            A_INTS("dilations"), A_INT("ceil_mode", 0), A_INT("count_include_pad", 0), A_END};
/* relu (swatc's own, set by the fuse pass): a ReLU applied to Y in the same kernel */
static const ir_attr_def bn_attrs[] = {A_FLOAT("epsilon", 1e-5f), A_FLOAT("momentum", 0.9f), A_INT("training_mode", 0),
                                       A_INT("relu", 0), A_END};
static const ir_attr_def gemm_attrs[] = {A_FLOAT("alpha", 1.0f), A_FLOAT("beta", 1.0f), A_INT("transA", 0), A_INT("transB", 0), A_END};
static const ir_attr_def leaky_attrs[] = {A_FLOAT("alpha", 0.01f), A_END};
static const ir_attr_def clip_attrs[] = {A_FLOAT("min", -INFINITY), A_FLOAT("max", INFINITY), A_END};
static const ir_attr_def softmax_attrs[] = {A_INT("axis", -1), A_END};
static const ir_attr_def dropout_attrs[] = {A_FLOAT("ratio", 0.5f), A_INT("training_mode", 0), A_INT("seed", 0), A_END};
static const ir_attr_def axis_req_attrs[] = {A_INT_REQ("axis"), A_END};
static const ir_attr_def split_attrs[] = {A_INT("axis", 0), A_INTS_REQ("split"), A_END};
static const ir_attr_def flatten_attrs[] = {A_INT("axis", 1), A_END};
static const ir_attr_def reshape_attrs[] = {A_INTS_REQ("shape"), A_INT("allowzero", 0), A_END};
static const ir_attr_def transpose_attrs[] = {A_INTS("perm"), A_END};
static const ir_attr_def pad_attrs[] = {A_INTS_REQ("pads"), A_STR("mode", "constant"), A_FLOAT("value", 0.0f), A_END};
static const ir_attr_def slice_attrs[] = {A_INTS_REQ("starts"), A_INTS_REQ("ends"), A_INTS("axes"), A_INTS("steps"), A_END};
static const ir_attr_def reduce_attrs[] = {A_INTS("axes"), A_INT("keepdims", 1), A_INT("noop_with_empty_axes", 0), A_END};
static const ir_attr_def sce_attrs[] = {A_STR("reduction", "mean"), A_INT("ignore_index", 0), A_END};
static const ir_attr_def no_attrs[] = {A_END};
static const ir_attr_def sum_relu_grad_attrs[] = {A_INTS("sub_strides"), A_END};
static const ir_attr_def topk_attrs[] = {A_FLOAT("sparsity", 0.0f), A_INT("period", 1), A_INT("group", 1),
                                         A_STR("kind", "weight"), A_FLOAT("compact", 0.0f), A_END};
static const ir_attr_def conv_grad_data_attrs[] = {A_INTS_REQ("kernel_shape"), A_INTS_REQ("strides"), A_INTS_REQ("pads"),
                                                   A_INTS_REQ("dilations"), A_INT("group", 1), A_INTS_REQ("x_shape"), A_END};
static const ir_attr_def avgpool_grad_attrs[] = {A_INTS_REQ("kernel_shape"), A_INTS_REQ("strides"), A_INTS_REQ("pads"),
                                                 A_INTS("dilations"), A_INT("ceil_mode", 0), A_INT("count_include_pad", 0),
                                                 A_INTS_REQ("x_shape"), A_END};
static const ir_attr_def x_shape_attrs[] = {A_INTS_REQ("x_shape"), A_END};
static const ir_attr_def bn_grad_attrs[] = {A_FLOAT("epsilon", 1e-5f), A_INT("relu", 0), A_END};
static const ir_attr_def dropout_grad_attrs[] = {A_FLOAT("ratio", 0.5f), A_END};
static const ir_attr_def shape_attrs[] = {A_INTS_REQ("shape"), A_END};
static const ir_attr_def reduce_grad_attrs[] = {A_INTS("axes"), A_INT("keepdims", 1), A_INT("noop_with_empty_axes", 0),
                                                A_INTS_REQ("x_shape"), A_END};
static const ir_attr_def slice_grad_attrs[] = {A_INTS_REQ("starts"), A_INTS_REQ("ends"), A_INTS("axes"), A_INTS("steps"),
                                               A_INTS_REQ("x_shape"), A_END};

static const ir_op_def ops[] = {
    {"Conv", 2, 3, 1, 1, conv_attrs, infer_conv, 0, "Y = Conv(X[N,C,..], W[K,C/group,..], B[K]?)", ir_grad_conv},
    {"Gemm", 2, 3, 1, 1, gemm_attrs, infer_gemm, 0, "Y = alpha*op(A)*op(B) + beta*C", ir_grad_gemm},
    {"MatMul", 2, 2, 1, 1, no_attrs, infer_matmul, 0, "numpy matmul", ir_grad_matmul},
    {"BatchNormalization", 5, 6, 1, 6, bn_attrs, infer_bn, 0,
     "Y[, running_mean, running_var[, saved_mean, saved_inv_std[, M]]] = BN(X, scale, B, mean, var[, R]); relu=1: "
     "Y = max(BN(X) [+ R], 0), M its bit mask",
     ir_grad_bn},
    {"MaxPool", 1, 1, 1, 2, maxpool_attrs, infer_pool, 0, "Y[, Indices] = MaxPool(X)", ir_grad_by_input},
    {"AveragePool", 1, 1, 1, 1, avgpool_attrs, infer_pool, 0, "Y = AveragePool(X)", ir_grad_by_shape},
    {"GlobalAveragePool", 1, 1, 1, 1, no_attrs, infer_global_pool, 0, "Y[N,C,1,..] = mean over spatial", ir_grad_by_shape},
    {"Relu", 1, 1, 1, 1, no_attrs, infer_unary, 0, "max(x, 0)", ir_grad_by_output},
    {"LeakyRelu", 1, 1, 1, 1, leaky_attrs, infer_unary, 0, "x >= 0 ? x : alpha*x", ir_grad_by_input},
    {"Clip", 1, 1, 1, 1, clip_attrs, infer_clip, 0, "min(max(x, min), max); bounds as attributes", ir_grad_by_input},
    {"Sigmoid", 1, 1, 1, 1, no_attrs, infer_unary, 0, "1/(1+exp(-x))", ir_grad_by_output},
    {"Tanh", 1, 1, 1, 1, no_attrs, infer_unary, 0, "tanh(x)", ir_grad_by_output},
    {"Add", 2, 2, 1, 1, no_attrs, infer_binary, 0, "numpy broadcasting", ir_grad_arith},
    {"Sub", 2, 2, 1, 1, no_attrs, infer_binary, 0, "numpy broadcasting", ir_grad_arith},
    {"Mul", 2, 2, 1, 1, no_attrs, infer_binary, 0, "numpy broadcasting", ir_grad_arith},
    {"Div", 2, 2, 1, 1, no_attrs, infer_binary, 0, "numpy broadcasting", ir_grad_arith},
    {"Softmax", 1, 1, 1, 1, softmax_attrs, infer_softmax, 0, "softmax along one axis (opset-13 semantics)", ir_grad_by_output},
    {"LogSoftmax", 1, 1, 1, 1, softmax_attrs, infer_softmax, 0, "log-softmax along one axis (opset-13 semantics)", ir_grad_by_output},
    {"Dropout", 1, 1, 1, 2, dropout_attrs, infer_dropout, 0, "Y[, mask] = Dropout(X); ratio and training_mode as attributes", ir_grad_dropout},
    {"Concat", 1, 64, 1, 1, axis_req_attrs, infer_concat, 0, "concatenate along axis", ir_grad_concat},
    {"Split", 1, 1, 1, 64, split_attrs, infer_split, 0, "split along axis into the given sizes", ir_grad_split},
    {"Flatten", 1, 1, 1, 1, flatten_attrs, infer_flatten, 0, "2-D view [prod(d[:axis]), prod(d[axis:])]", ir_grad_reshape},
    {"Reshape", 1, 1, 1, 1, reshape_attrs, infer_reshape, 0, "view with a constant target (N, 0 = copy, -1 = infer)", ir_grad_reshape},
    {"Transpose", 1, 1, 1, 1, transpose_attrs, infer_transpose, 0, "permute axes", ir_grad_transpose},
    {"Pad", 1, 1, 1, 1, pad_attrs, infer_pad, 0, "constant padding; pads = begin..., end...", ir_grad_pad},
    {"Slice", 1, 1, 1, 1, slice_attrs, infer_slice, 0, "strided slice with constant starts/ends/axes/steps", ir_grad_slice},
    {"ReduceMean", 1, 1, 1, 1, reduce_attrs, infer_reduce_mean, 0, "mean over axes", ir_grad_by_shape},
    {"SoftmaxCrossEntropyLoss", 2, 3, 1, 2, sce_attrs, infer_sce_loss, 0, "loss[, log_prob] = SCE(scores, labels[, weights])", ir_grad_sce},
    {"Neg", 1, 1, 1, 1, no_attrs, infer_unary, 0, "-x", ir_grad_neg},
    {"Sum", 1, 64, 1, 1, no_attrs, infer_sum, 0, "elementwise sum of same-shape inputs", ir_grad_sum},
    /* SWAT, inserted by the swat pass */
    {"TopKSparsify", 2, 2, 1, 2, topk_attrs, infer_topk, 0,
     "Y, state' = TopKSparsify(X, state): keep |X| >= the k-th largest (k = ceil((1-sparsity) n), whole tensor, ties "
     "kept), exact every `period` steps, the stored threshold in between; group > 1 keeps whole groups by L1 score; "
     "compact > 0: Y is held by the runtime as a list of the kept entries (room for that fraction of the elements), "
     "not in the arena, and only weight-gradient ops may read it",
     NULL},
    /* backward ops, made by autodiff */
    {"ConvGradData", 2, 2, 1, 1, conv_grad_data_attrs, infer_conv_grad_data, 0, "dX = ConvGradData(dY, W) {conv attributes, x_shape}", NULL},
    {"ConvGradWeight", 2, 2, 1, 2, conv_attrs, infer_conv_grad_weight, 0, "dW[, dB] = ConvGradWeight(dY, X) {conv attributes}", NULL},
    {"GemmGradData", 2, 2, 1, 1, no_attrs, infer_gemm_grad_data, 0, "dX[M,K] = dY[M,N] W[N,K]", NULL},
    {"GemmGradWeight", 2, 2, 1, 2, no_attrs, infer_gemm_grad_weight, 0, "dW[N,K] = dY^T X[, db = column sums of dY]", NULL},
    {"ReluGrad", 2, 2, 1, 1, no_attrs, infer_unary_grad, 0, "dX = dY * (Y > 0)", NULL},
    {"LeakyReluGrad", 2, 2, 1, 1, leaky_attrs, infer_unary_grad, 0, "dX = dY * (X >= 0 ? 1 : alpha)", NULL},
    {"ClipGrad", 2, 2, 1, 1, clip_attrs, infer_unary_grad, 0, "dX = dY * (min < X < max)", NULL},
    {"SigmoidGrad", 2, 2, 1, 1, no_attrs, infer_unary_grad, 0, "dX = dY * Y * (1 - Y)", NULL},
    {"TanhGrad", 2, 2, 1, 1, no_attrs, infer_unary_grad, 0, "dX = dY * (1 - Y^2)", NULL},
    {"SoftmaxGrad", 2, 2, 1, 1, softmax_attrs, infer_softmax_grad, 0, "dX = Y * (dY - sum(dY * Y, axis))", NULL},
    {"LogSoftmaxGrad", 2, 2, 1, 1, softmax_attrs, infer_softmax_grad, 0, "dX = dY - exp(Y) * sum(dY, axis)", NULL},
    {"DropoutGrad", 2, 2, 1, 1, dropout_grad_attrs, infer_dropout_grad, 0, "dX = dY * mask / (1 - ratio)", NULL},
    {"ReluMask", 1, 1, 1, 1, no_attrs, infer_relu_mask, 0,
     "M = (Y > 0) as bits: what a ReLU's backward needs of its output, in 1/32 of the memory (fuse; read by "
     "SumReluGrad)", NULL},
    /* fused by the fuse pass (residual blocks) */
    {"AddRelu", 2, 2, 1, 2, no_attrs, infer_add_relu, 0,
     "Y[, M] = Relu(A + B) for same-shape A, B in one pass; M = (Y > 0) as bits, as ReluMask(Y) (fuse)", NULL},
    {"SumReluGrad", 2, 64, 1, 1, sum_relu_grad_attrs, infer_sum_relu_grad, 0,
     "dX = Sum(dY1, dY2, ..) where the ReLU was on, +0 elsewhere, in one pass; the gate is the ReLU's output Y "
     "(on: Y > 0, as ReluGrad) or its bit mask (on: bit set; one dY: the ReLU backward alone); sub_strides: dY2 "
     "holds only the values on that stride grid, +0 elsewhere (fuse)", NULL},
    {"MaxPoolGrad", 2, 2, 1, 1, maxpool_grad_attrs, infer_maxpool_grad, 0,
     "dX = MaxPoolGrad(dY, X): dY routed to each window's first maximum {relu: times Relu'(X)}", NULL},
    {"AveragePoolGrad", 1, 1, 1, 1, avgpool_grad_attrs, infer_avgpool_grad, 0, "dX = AveragePoolGrad(dY) {pool attributes, x_shape}", NULL},
    {"GlobalAveragePoolGrad", 1, 1, 1, 1, x_shape_attrs, infer_to_x_shape, 0, "dX = dY / (H*W) broadcast over x_shape", NULL},
    {"BatchNormalizationGrad", 5, 6, 3, 3, bn_grad_attrs, infer_bn_grad, 0,
     "dX, dscale, dbias = BNGrad(dY, X, scale, saved_mean, saved_inv_std[, bias]) (training statistics; relu=1: "
     "dY masked where the fused ReLU was off, decided again from X and bias)", NULL},
    {"SoftmaxCrossEntropyLossGrad", 3, 4, 1, 1, sce_attrs, infer_sce_grad, 0, "dscores = SCEGrad(dloss, log_prob, labels[, weights])", NULL},
    {"ReduceSumTo", 1, 1, 1, 1, shape_attrs, infer_reduce_sum_to, 0, "sum X over the dimensions broadcast from `shape`", NULL},
    {"ReduceMeanGrad", 1, 1, 1, 1, reduce_grad_attrs, infer_to_x_shape, 0, "dX = dY broadcast to x_shape / count", NULL},
    {"SliceGrad", 1, 1, 1, 1, slice_grad_attrs, infer_to_x_shape, 0, "dX = zeros(x_shape) with dY scattered into the slice", NULL},
};

const ir_op_def *ir_op_find(const char *name) {
  for (size_t i = 0; i < SW_ARRAY_LEN(ops); i++)
    if (strcmp(ops[i].name, name) == 0) return &ops[i];
  return NULL;
}

const ir_op_def *ir_op_table(int *count) {
  *count = (int)SW_ARRAY_LEN(ops);
  return ops;
}

const ir_attr_def *ir_op_attr(const ir_op_def *op, const char *name) {
  for (const ir_attr_def *a = op->attrs; a && a->name; a++)
    if (strcmp(a->name, name) == 0) return a;
  return NULL;
}

int ir_infer_node(ir_node *n, sw_err *e) {
  if (n->n_in < n->op->min_in || n->n_in > n->op->max_in)
    FAIL(NODE_FMT "has %d inputs, expected %d to %d", NODE_ARGS, n->n_in, n->op->min_in, n->op->max_in);
  if (n->n_out < n->op->min_out || n->n_out > n->op->max_out)
    FAIL(NODE_FMT "has %d outputs, expected %d to %d", NODE_ARGS, n->n_out, n->op->min_out, n->op->max_out);
  for (int i = 0; i < n->n_in; i++)
    if (n->in[i] && n->in[i]->dtype == IR_UNDEF) FAIL(NODE_FMT "input %d '%s' has no type", NODE_ARGS, i, n->in[i]->name);
  for (const ir_attr_def *a = n->op->attrs; a->name; a++) {
    const ir_attr *v = ir_attr_get(n, a->name);
    if (v && v->type != a->type) FAIL(NODE_FMT "attribute %s has the wrong type", NODE_ARGS, a->name);
    if (!v && a->required) FAIL(NODE_FMT "attribute %s is required", NODE_ARGS, a->name);
  }
  for (int i = 0; i < n->n_attr; i++)
    if (!ir_op_attr(n->op, n->attrs[i].name)) FAIL(NODE_FMT "unknown attribute %s", NODE_ARGS, n->attrs[i].name);
  if (n->op->infer(n, e)) return e->code;
  for (int i = 0; i < n->n_out; i++)
    if (n->out[i] && ir_shape_numel_at(&n->out[i]->shape, 1) == -2)
      FAIL(NODE_FMT "output %d is too large (its element count overflows)", NODE_ARGS, i);
  return SW_OK;
}

int ir_infer_shapes(ir_graph *g, sw_err *e) {
  for (int i = 0; i < g->n_nodes; i++)
    if (ir_infer_node(g->nodes[i], e)) return e->code;
  return SW_OK;
}
