/* Import-time evaluation of shape arithmetic (Shape, Gather, Unsqueeze, Concat, Cast, int64 math, ...).
 *
 * int64 tensors may hold the symbolic batch IR_N (from Shape of a value whose dimension 0 is N). It
 * passes through data movement (Gather, Concat, Unsqueeze, Slice, Cast to int64) unchanged; arithmetic
 * on it is refused, which makes the importer fall back to a static batch. */
#include <math.h>
#include <string.h>

#include "importer/onnx_internal.h"

#define FAIL(...) return sw_fail(e, SW_EINPUT, __VA_ARGS__)

static int is_int(ir_dtype t) {
  return t == IR_I64 || t == IR_I32 || t == IR_I16 || t == IR_I8 || t == IR_U8 || t == IR_U16 || t == IR_U32 ||
         t == IR_U64 || t == IR_BOOL;
}

static double half_to_double(uint16_t h) {
  int s = h >> 15, ex = (h >> 10) & 31, m = h & 1023;
  double v = ex == 0 ? ldexp(m, -24) : ex == 31 ? (m ? NAN : INFINITY) : ldexp(m + 1024, ex - 25);
  return s ? -v : v;
}

static double bf16_to_double(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

static double get_f(const tensor_data *t, int64_t i) {
  const void *p = t->data;
  switch (t->dtype) {
    case IR_F16: return half_to_double(((const uint16_t *)p)[i]);
    case IR_BF16: return bf16_to_double(((const uint16_t *)p)[i]);
    case IR_F32: return ((const float *)p)[i];
    case IR_F64: return ((const double *)p)[i];
    case IR_I64: return (double)((const int64_t *)p)[i];
    case IR_I32: return ((const int32_t *)p)[i];
    case IR_I16: return ((const int16_t *)p)[i];
    case IR_I8: return ((const int8_t *)p)[i];
    case IR_U8: case IR_BOOL: return ((const uint8_t *)p)[i];
    case IR_U16: return ((const uint16_t *)p)[i];
    case IR_U32: return ((const uint32_t *)p)[i];
    case IR_U64: return (double)((const uint64_t *)p)[i];
    default: return NAN;
  }
}

static int64_t get_i(const tensor_data *t, int64_t i) {
  switch (t->dtype) {
    case IR_I64: return ((const int64_t *)t->data)[i];
    case IR_U64: return (int64_t)((const uint64_t *)t->data)[i];
    case IR_F32: case IR_F64: return (int64_t)get_f(t, i);
    default: return (int64_t)get_f(t, i);
  }
}

static void set_f(tensor_data *t, int64_t i, double v) {
  void *p = t->data;
  switch (t->dtype) {
    case IR_F32: ((float *)p)[i] = (float)v; break;
    case IR_F64: ((double *)p)[i] = v; break;
    case IR_I64: ((int64_t *)p)[i] = (int64_t)v; break;
    case IR_I32: ((int32_t *)p)[i] = (int32_t)v; break;
    case IR_I16: ((int16_t *)p)[i] = (int16_t)v; break;
    case IR_I8: ((int8_t *)p)[i] = (int8_t)v; break;
    case IR_U8: ((uint8_t *)p)[i] = (uint8_t)v; break;
    case IR_BOOL: ((uint8_t *)p)[i] = v != 0; break;
    case IR_U16: ((uint16_t *)p)[i] = (uint16_t)v; break;
    case IR_U32: ((uint32_t *)p)[i] = (uint32_t)v; break;
    case IR_U64: ((uint64_t *)p)[i] = (uint64_t)v; break;
    default: break;
  }
}

static int alloc_out(tensor_data *o, ir_dtype t, const ir_shape *s, sw_err *e) {
  memset(o, 0, sizeof *o);
  o->dtype = t;
  o->shape = *s;
  int64_t n = ir_shape_numel(s);
  if (n < 0 || n > ((int64_t)1 << 31)) FAIL("folded constant is too large");
  o->nbytes = (size_t)n * ir_dtype_size(t);
  o->data = calloc(1, o->nbytes ? o->nbytes : 1);
  if (!o->data) return sw_fail(e, SW_ENOMEM, "out of memory folding constants");
  return SW_OK;
}

static int has_n(const tensor_data *t) {
  if (t->dtype != IR_I64) return 0;
  int64_t n = tensor_numel(t);
  for (int64_t i = 0; i < n; i++)
    if (((const int64_t *)t->data)[i] == IR_N) return 1;
  return 0;
}

static int copy_tensor(tensor_data *o, const tensor_data *in, const ir_shape *s, sw_err *e) {
  if (alloc_out(o, in->dtype, s, e)) return e->code;
  if (o->nbytes != in->nbytes) FAIL("element counts differ");
  if (o->nbytes) memcpy(o->data, in->data, o->nbytes);
  return SW_OK;
}

static int axes_of(const Onnx__NodeProto *node, int opset, int n_in, const tensor_data *const *in, int from_input_opset,
                   int64_t *axes, int *count, sw_err *e) {
  *count = -1;
  if (opset >= from_input_opset) {
    if (n_in > 1 && in[1]) {
      int64_t k = tensor_numel(in[1]);
      if (k > IR_MAX_RANK) FAIL("too many axes");
      for (int64_t i = 0; i < k; i++) axes[i] = get_i(in[1], i);
      *count = (int)k;
    }
    return SW_OK;
  }
  const int64_t *a;
  int k;
  if (onnx_attr_ints(node, "axes", &a, &k, e)) return e->code;
  if (k > IR_MAX_RANK) FAIL("too many axes");
  for (int i = 0; i < k; i++) axes[i] = a[i];
  *count = k;
  return SW_OK;
}

/* numpy broadcasting over concrete shapes */
static int bshape(const ir_shape *a, const ir_shape *b, ir_shape *o, sw_err *e) {
  int r = a->rank > b->rank ? a->rank : b->rank;
  o->rank = r;
  for (int i = 0; i < r; i++) {
    int ia = i - (r - a->rank), ib = i - (r - b->rank);
    int64_t da = ia >= 0 ? a->d[ia] : 1, db = ib >= 0 ? b->d[ib] : 1;
    if (da != db && da != 1 && db != 1) FAIL("shapes cannot be broadcast");
    o->d[i] = da == 1 ? db : da;
  }
  return SW_OK;
}

static int64_t bindex(const ir_shape *o, const ir_shape *s, int64_t lin) {
  int64_t idx = 0, stride = 1;
  for (int i = o->rank - 1, j = s->rank - 1; i >= 0; i--, j--) {
    int64_t c = lin % o->d[i];
    lin /= o->d[i];
    if (j >= 0) {
      if (s->d[j] != 1) idx += c * stride;
      stride *= s->d[j];
    }
  }
  return idx;
}

static const char *const known[] = {"Identity", "Shape", "Size", "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast",
                                    "Add", "Sub", "Mul", "Div", "Slice", "Reshape", "Flatten", "ConstantOfShape", "Range",
                                    "Neg", "Equal", "Where", "Expand"};

int fold_known(const char *op) {
  for (size_t i = 0; i < SW_ARRAY_LEN(known); i++)
    if (strcmp(known[i], op) == 0) return 1;
  return 0;
}

int fold_eval(const char *op, int opset, const Onnx__NodeProto *node, int n_in, const tensor_data *const *in,
              const ir_shape *const *in_shapes, const ir_dtype *in_types, int n_out, tensor_data *outs, sw_err *e) {
  (void)n_out;
  if (strcmp(op, "Shape") == 0 || strcmp(op, "Size") == 0) {
    const ir_shape *s = in_shapes[0];
    if (op[1] == 'i') {
      int64_t n = ir_shape_numel(s);
      if (n < 0) FAIL("Size of a tensor with the batch dimension N");
      ir_shape sc = {.rank = 0};
      if (alloc_out(&outs[0], IR_I64, &sc, e)) return e->code;
      ((int64_t *)outs[0].data)[0] = n;
      return SW_OK;
    }
    int64_t start = 0, end = s->rank;
    if (onnx_attr_int(node, "start", 0, &start, e) || onnx_attr_int(node, "end", s->rank, &end, e)) return e->code;
    if (start < 0) start += s->rank;
    if (end < 0) end += s->rank;
    start = start < 0 ? 0 : start > s->rank ? s->rank : start;
    end = end < start ? start : end > s->rank ? s->rank : end;
    ir_shape o = {.rank = 1, .d = {end - start}};
    if (alloc_out(&outs[0], IR_I64, &o, e)) return e->code;
    for (int64_t i = start; i < end; i++) ((int64_t *)outs[0].data)[i - start] = s->d[i];
    return SW_OK;
  }
  for (int i = 0; i < n_in; i++)
    if (in[i] == NULL && in_shapes[i] != NULL) FAIL("input %d is not a constant", i);
  (void)in_types;
  const tensor_data *x = in[0];
  if (!x) FAIL("missing input");
  if (strcmp(op, "Identity") == 0) return copy_tensor(&outs[0], x, &x->shape, e);
  if (strcmp(op, "Cast") == 0) {
    int64_t to;
    if (onnx_attr_int(node, "to", 0, &to, e)) return e->code;
    ir_dtype t = onnx_dtype((int32_t)to);
    if (t == IR_UNDEF || t == IR_F16 || t == IR_BF16) FAIL("unsupported: Cast to %s", onnx_dtype_name((int32_t)to));
    if (has_n(x) && t != IR_I64) FAIL("Cast of the batch dimension N to another type");
    if (alloc_out(&outs[0], t, &x->shape, e)) return e->code;
    int64_t n = tensor_numel(x);
    for (int64_t i = 0; i < n; i++) {
      if (t == IR_I64 && is_int(x->dtype)) ((int64_t *)outs[0].data)[i] = get_i(x, i);
      else set_f(&outs[0], i, get_f(x, i));
    }
    return SW_OK;
  }
  if (strcmp(op, "Gather") == 0) {
    if (n_in < 2 || !in[1]) FAIL("missing indices");
    const tensor_data *ix = in[1];
    int64_t axis;
    if (onnx_attr_int(node, "axis", 0, &axis, e)) return e->code;
    int r = x->shape.rank;
    if (axis < -r || axis >= r) FAIL("Gather axis out of range");
    if (axis < 0) axis += r;
    if (r + ix->shape.rank - 1 > IR_MAX_RANK) FAIL("Gather result rank too large");
    ir_shape o = {.rank = 0};
    for (int i = 0; i < axis; i++) o.d[o.rank++] = x->shape.d[i];
    for (int i = 0; i < ix->shape.rank; i++) o.d[o.rank++] = ix->shape.d[i];
    for (int i = (int)axis + 1; i < r; i++) o.d[o.rank++] = x->shape.d[i];
    if (alloc_out(&outs[0], x->dtype, &o, e)) return e->code;
    int64_t outer = 1, inner = 1, dim = x->shape.d[axis], ni = tensor_numel(ix);
    for (int i = 0; i < axis; i++) outer *= x->shape.d[i];
    for (int i = (int)axis + 1; i < r; i++) inner *= x->shape.d[i];
    size_t es = ir_dtype_size(x->dtype);
    for (int64_t a = 0; a < outer; a++)
      for (int64_t k = 0; k < ni; k++) {
        int64_t j = get_i(ix, k);
        if (j < 0) j += dim;
        if (j < 0 || j >= dim) FAIL("Gather index %lld out of range for axis of size %lld", (long long)get_i(ix, k), (long long)dim);
        memcpy((char *)outs[0].data + ((size_t)(a * ni + k) * (size_t)inner) * es,
               (const char *)x->data + ((size_t)(a * dim + j) * (size_t)inner) * es, (size_t)inner * es);
      }
    return SW_OK;
  }
  if (strcmp(op, "Unsqueeze") == 0 || strcmp(op, "Squeeze") == 0) {
    int64_t axes[IR_MAX_RANK];
    int k;
    if (axes_of(node, opset, n_in, in, 13, axes, &k, e)) return e->code;
    ir_shape o = {.rank = 0};
    if (op[0] == 'U') {
      int r = x->shape.rank + (k < 0 ? 0 : k);
      if (k <= 0 || r > IR_MAX_RANK) FAIL("Unsqueeze needs axes (and rank <= %d)", IR_MAX_RANK);
      int mark[IR_MAX_RANK] = {0};
      for (int i = 0; i < k; i++) {
        int64_t a = axes[i] < 0 ? axes[i] + r : axes[i];
        if (a < 0 || a >= r || mark[a]) FAIL("Unsqueeze axis out of range or repeated");
        mark[a] = 1;
      }
      for (int i = 0, j = 0; i < r; i++) o.d[o.rank++] = mark[i] ? 1 : x->shape.d[j++];
    } else {
      int r = x->shape.rank, mark[IR_MAX_RANK] = {0};
      for (int i = 0; i < k; i++) {
        int64_t a = axes[i] < 0 ? axes[i] + r : axes[i];
        if (a < 0 || a >= r || x->shape.d[a] != 1) FAIL("Squeeze axis out of range or not of size 1");
        mark[a] = 1;
      }
      for (int i = 0; i < r; i++)
        if (!(k < 0 ? x->shape.d[i] == 1 : mark[i])) o.d[o.rank++] = x->shape.d[i];
    }
    return copy_tensor(&outs[0], x, &o, e);
  }
  if (strcmp(op, "Reshape") == 0 || strcmp(op, "Flatten") == 0) {
    ir_shape o = {.rank = 0};
    int64_t numel = tensor_numel(x);
    if (op[0] == 'F') {
      int64_t axis;
      if (onnx_attr_int(node, "axis", 1, &axis, e)) return e->code;
      if (axis < 0) axis += x->shape.rank;
      if (axis < 0 || axis > x->shape.rank) FAIL("Flatten axis out of range");
      int64_t a = 1;
      for (int i = 0; i < axis; i++) a *= x->shape.d[i];
      o.rank = 2;
      o.d[0] = a;
      o.d[1] = a ? numel / a : 0;
    } else {
      if (n_in < 2 || !in[1]) FAIL("Reshape target is not a constant");
      int64_t r = tensor_numel(in[1]), prod = 1, at = -1;
      if (r > IR_MAX_RANK) FAIL("Reshape target rank too large");
      o.rank = (int)r;
      for (int64_t i = 0; i < r; i++) {
        int64_t d = get_i(in[1], i);
        if (d == IR_N) FAIL("Reshape of a constant to the batch dimension N");
        if (d == 0) d = i < x->shape.rank ? x->shape.d[i] : 0;
        if (d == -1) { at = i; d = 1; }
        else if (d < 0) FAIL("invalid Reshape target");
        o.d[i] = d;
        prod *= d;
      }
      if (at >= 0) o.d[at] = prod ? numel / prod : 0;
    }
    if (ir_shape_numel(&o) != numel) FAIL("Reshape of a constant changes its element count");
    return copy_tensor(&outs[0], x, &o, e);
  }
  if (strcmp(op, "Concat") == 0) {
    int64_t axis;
    if (onnx_attr_int(node, "axis", 0, &axis, e)) return e->code;
    int r = x->shape.rank;
    if (axis < 0) axis += r;
    if (axis < 0 || axis >= r) FAIL("Concat axis out of range");
    ir_shape o = x->shape;
    o.d[axis] = 0;
    for (int i = 0; i < n_in; i++) {
      if (!in[i] || in[i]->shape.rank != r || in[i]->dtype != x->dtype) FAIL("Concat inputs differ in rank or type");
      for (int d = 0; d < r; d++)
        if (d != axis && in[i]->shape.d[d] != o.d[d]) FAIL("Concat inputs differ in shape");
      o.d[axis] += in[i]->shape.d[axis];
    }
    if (alloc_out(&outs[0], x->dtype, &o, e)) return e->code;
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < axis; d++) outer *= o.d[d];
    for (int d = (int)axis + 1; d < r; d++) inner *= o.d[d];
    size_t es = ir_dtype_size(x->dtype), off = 0;
    for (int64_t a = 0; a < outer; a++)
      for (int i = 0; i < n_in; i++) {
        size_t chunk = (size_t)(in[i]->shape.d[axis] * inner) * es;
        memcpy((char *)outs[0].data + off, (const char *)in[i]->data + (size_t)a * chunk, chunk);
        off += chunk;
      }
    return SW_OK;
  }
  if (strcmp(op, "Slice") == 0) {
    int r = x->shape.rank;
    int64_t st[IR_MAX_RANK], en[IR_MAX_RANK], ax[IR_MAX_RANK], sp[IR_MAX_RANK];
    int k;
    if (opset < 10) {
      const int64_t *a, *b, *c;
      int ka, kb, kc;
      if (onnx_attr_ints(node, "starts", &a, &ka, e) || onnx_attr_ints(node, "ends", &b, &kb, e) ||
          onnx_attr_ints(node, "axes", &c, &kc, e))
        return e->code;
      if (ka != kb || ka < 0 || ka > r || (kc >= 0 && kc != ka)) FAIL("Slice attributes differ in length");
      k = ka;
      for (int i = 0; i < k; i++) { st[i] = a[i]; en[i] = b[i]; ax[i] = kc >= 0 ? c[i] : i; sp[i] = 1; }
    } else {
      if (n_in < 3 || !in[1] || !in[2]) FAIL("Slice starts/ends are not constants");
      k = (int)tensor_numel(in[1]);
      if (k > r || tensor_numel(in[2]) != k) FAIL("Slice starts/ends differ in length");
      for (int i = 0; i < k; i++) {
        st[i] = get_i(in[1], i);
        en[i] = get_i(in[2], i);
        ax[i] = n_in > 3 && in[3] ? get_i(in[3], i) : i;
        sp[i] = n_in > 4 && in[4] ? get_i(in[4], i) : 1;
      }
    }
    int64_t lo[IR_MAX_RANK], step[IR_MAX_RANK];
    ir_shape o = x->shape;
    for (int d = 0; d < r; d++) { lo[d] = 0; step[d] = 1; }
    for (int i = 0; i < k; i++) {
      int64_t a = ax[i] < 0 ? ax[i] + r : ax[i], dim;
      if (a < 0 || a >= r || sp[i] == 0) FAIL("Slice axis out of range or zero step");
      dim = x->shape.d[a];
      int64_t s = st[i] < 0 ? st[i] + dim : st[i], t = en[i] < 0 ? en[i] + dim : en[i];
      if (sp[i] > 0) {
        s = s < 0 ? 0 : s > dim ? dim : s;
        t = t < 0 ? 0 : t > dim ? dim : t;
        o.d[a] = t > s ? (t - s + sp[i] - 1) / sp[i] : 0;
      } else {
        s = s < 0 ? -1 : s > dim - 1 ? dim - 1 : s;
        t = t < -1 ? -1 : t > dim - 1 ? dim - 1 : t;
        o.d[a] = s > t ? (s - t - sp[i] - 1) / -sp[i] : 0;
      }
      lo[a] = s;
      step[a] = sp[i];
    }
    if (alloc_out(&outs[0], x->dtype, &o, e)) return e->code;
    int64_t n = ir_shape_numel(&o);
    size_t es = ir_dtype_size(x->dtype);
    for (int64_t i = 0; i < n; i++) {
      int64_t rem = i, src = 0, stride = 1;
      for (int d = r - 1; d >= 0; d--) {
        int64_t c = rem % o.d[d];
        rem /= o.d[d];
        src += (lo[d] + c * step[d]) * stride;
        stride *= x->shape.d[d];
      }
      memcpy((char *)outs[0].data + (size_t)i * es, (const char *)x->data + (size_t)src * es, es);
    }
    return SW_OK;
  }
  if (strcmp(op, "ConstantOfShape") == 0) {
    int64_t r = tensor_numel(x);
    if (r > IR_MAX_RANK || has_n(x)) FAIL("ConstantOfShape of a shape with N or too many dims");
    ir_shape o = {.rank = (int)r};
    for (int i = 0; i < r; i++) {
      o.d[i] = get_i(x, i);
      if (o.d[i] < 0) FAIL("ConstantOfShape with a negative dimension");
    }
    const Onnx__AttributeProto *a = onnx_attr(node, "value");
    tensor_data v = {0};
    if (a && a->t) {
      if (tensor_from_proto(a->t, ".", &v, e)) return e->code;
      if (tensor_numel(&v) != 1) { tensor_data_free(&v); FAIL("ConstantOfShape value must have one element"); }
    }
    if (alloc_out(&outs[0], a && a->t ? v.dtype : IR_F32, &o, e)) { tensor_data_free(&v); return e->code; }
    int64_t n = ir_shape_numel(&o);
    for (int64_t i = 0; i < n && v.data; i++) memcpy((char *)outs[0].data + (size_t)i * v.nbytes, v.data, v.nbytes);
    tensor_data_free(&v);
    return SW_OK;
  }
  if (strcmp(op, "Range") == 0) {
    if (n_in < 3 || !in[1] || !in[2]) FAIL("Range inputs are not constants");
    double s = get_f(x, 0), l = get_f(in[1], 0), d = get_f(in[2], 0);
    if (d == 0) FAIL("Range with delta 0");
    double cnt = ceil((l - s) / d);
    if (cnt < 0) cnt = 0;
    if (cnt > 1e8) FAIL("Range too long");
    ir_shape o = {.rank = 1, .d = {(int64_t)cnt}};
    if (alloc_out(&outs[0], x->dtype, &o, e)) return e->code;
    for (int64_t i = 0; i < o.d[0]; i++) set_f(&outs[0], i, s + (double)i * d);
    return SW_OK;
  }
  if (strcmp(op, "Neg") == 0) {
    if (has_n(x)) FAIL("arithmetic on the batch dimension N");
    if (alloc_out(&outs[0], x->dtype, &x->shape, e)) return e->code;
    for (int64_t i = 0; i < tensor_numel(x); i++) {
      if (x->dtype == IR_I64) ((int64_t *)outs[0].data)[i] = -get_i(x, i);
      else set_f(&outs[0], i, -get_f(x, i));
    }
    return SW_OK;
  }
  if (strcmp(op, "Expand") == 0) {
    if (n_in < 2 || !in[1] || has_n(in[1]) || tensor_numel(in[1]) > IR_MAX_RANK) FAIL("Expand shape is not a constant");
    ir_shape t = {.rank = (int)tensor_numel(in[1])}, o;
    for (int i = 0; i < t.rank; i++) t.d[i] = get_i(in[1], i);
    if (bshape(&x->shape, &t, &o, e) || alloc_out(&outs[0], x->dtype, &o, e)) return e->code;
    size_t es = ir_dtype_size(x->dtype);
    for (int64_t i = 0; i < ir_shape_numel(&o); i++)
      memcpy((char *)outs[0].data + (size_t)i * es, (const char *)x->data + (size_t)bindex(&o, &x->shape, i) * es, es);
    return SW_OK;
  }
  /* elementwise binary (and Where) with broadcasting */
  int is_where = strcmp(op, "Where") == 0;
  if (n_in < (is_where ? 3 : 2) || !in[1] || (is_where && !in[2])) FAIL("missing operand");
  const tensor_data *a = is_where ? in[1] : in[0], *b = is_where ? in[2] : in[1];
  ir_shape o;
  if (bshape(&a->shape, &b->shape, &o, e)) return e->code;
  if (is_where && bshape(&o, &x->shape, &o, e)) return e->code;
  int cmp = strcmp(op, "Equal") == 0;
  if (!is_where && (has_n(a) || has_n(b)) && !cmp) FAIL("arithmetic on the batch dimension N (%s)", op);
  if (a->dtype != b->dtype) FAIL("operands of %s have different types", op);
  if (alloc_out(&outs[0], cmp ? IR_BOOL : a->dtype, &o, e)) return e->code;
  int64_t n = ir_shape_numel(&o);
  for (int64_t i = 0; i < n; i++) {
    int64_t ia = bindex(&o, &a->shape, i), ib = bindex(&o, &b->shape, i);
    if (is_where) {
      int c = get_f(x, bindex(&o, &x->shape, i)) != 0;
      size_t es = ir_dtype_size(a->dtype);
      memcpy((char *)outs[0].data + (size_t)i * es, c ? (const char *)a->data + (size_t)ia * es : (const char *)b->data + (size_t)ib * es, es);
    } else if (cmp) {
      ((uint8_t *)outs[0].data)[i] = a->dtype == IR_I64 ? get_i(a, ia) == get_i(b, ib) : get_f(a, ia) == get_f(b, ib);
    } else if (is_int(a->dtype)) {
      int64_t u = get_i(a, ia), v = get_i(b, ib), r;
      switch (op[0]) {
        case 'A': r = u + v; break;
        case 'S': r = u - v; break;
        case 'M': r = u * v; break;
        default:
          if (v == 0) FAIL("integer division by zero in %s", op);
          r = u / v; /* truncation, as onnxruntime */
          break;
      }
      if (a->dtype == IR_I64) ((int64_t *)outs[0].data)[i] = r;
      else set_f(&outs[0], i, (double)r);
    } else {
      double u = get_f(a, ia), v = get_f(b, ib), r;
      switch (op[0]) {
        case 'A': r = u + v; break;
        case 'S': r = u - v; break;
        case 'M': r = u * v; break;
        default: r = u / v; break;
      }
      set_f(&outs[0], i, r);
    }
  }
  return SW_OK;
}
