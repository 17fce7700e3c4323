/* ONNX ModelProto → IR graph.
 *
 * Steps: check the model's versions; inline FunctionProto calls; refuse unsupported operators all
 * at once; order the nodes topologically (refusing cycles and undefined inputs); then walk the
 * nodes once, folding import-time shape arithmetic into constants and mapping every run-time node
 * onto the IR's canonical op form, inferring shapes as it goes (so Shape() of a run-time value
 * folds). Dimension 0 of the inputs becomes the symbolic batch N; a Reshape target that baked in
 * the export's batch size is rewritten to N, and the rewrite is noted in the dump. */
#include <libgen.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "importer/onnx_internal.h"
#include "util/strmap.h"

#define MIN_OPSET 1
#define MAX_OPSET 18
#define MAX_IR_VERSION 10
#define MAX_INLINE_DEPTH 16

/* What the importer knows about one ONNX value name. */
typedef struct ival {
  const char *name;
  ir_value *v;       /* the IR value once materialised (run-time values always have one) */
  int is_const;      /* data known at import time */
  int from_init;     /* an initializer (or an Identity copy of one): a trainable parameter when float */
  int borrowed;      /* c.data belongs to v (after materialising) */
  tensor_data c;     /* constant contents */
} ival;

typedef struct imp {
  const importer_opts *opts;
  const Onnx__ModelProto *m;
  const char *dir;
  ir_graph *g;
  sw_err *e;
  int opset;
  importer_batch batch;  /* FREE or STATIC for this attempt */
  int64_t export_batch;  /* concrete batch of the export, 0 if symbolic */
  const char *batch_param;
  strmap vals;
  ival **ivals;
  int n_ivals, cap_ivals;
  /* nodes after inlining, in topological order */
  const Onnx__NodeProto **nodes;
  int n_nodes;
  /* our own allocations for inlined nodes */
  void **owned;
  int n_owned, cap_owned;
} imp;

static void *own(imp *im, void *p) {
  if (im->n_owned == im->cap_owned) {
    im->cap_owned = im->cap_owned ? 2 * im->cap_owned : 64;
    im->owned = sw_xrealloc(im->owned, sizeof *im->owned * (size_t)im->cap_owned);
  }
  im->owned[im->n_owned++] = p;
  return p;
}

static const char *node_label(const Onnx__NodeProto *n) {
  return n->name && n->name[0] ? n->name : (n->n_output && n->output[0][0] ? n->output[0] : "(unnamed)");
}

static int is_default_domain(const char *d) { return !d || !d[0] || strcmp(d, "ai.onnx") == 0; }

/* ---- attribute access ---- */

const Onnx__AttributeProto *onnx_attr(const Onnx__NodeProto *n, const char *name) {
  for (size_t i = 0; i < n->n_attribute; i++)
    if (n->attribute[i]->name && strcmp(n->attribute[i]->name, name) == 0) return n->attribute[i];
  return NULL;
}

/* The attribute's type, inferred from its fields when the (old) model left it unset. */
static int attr_type(const Onnx__AttributeProto *a) {
  if (a->has_type && a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED) return a->type;
  if (a->n_ints) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
  if (a->n_floats) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS;
  if (a->n_strings) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS;
  if (a->t) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR;
  if (a->g) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH;
  if (a->has_s) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING;
  if (a->has_f) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
  if (a->has_i) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
  return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS; /* an empty list */
}

static const char *attr_type_name(int t) {
  switch (t) {
    case 1: return "FLOAT";
    case 2: return "INT";
    case 3: return "STRING";
    case 4: return "TENSOR";
    case 5: return "GRAPH";
    case 6: return "FLOATS";
    case 7: return "INTS";
    case 8: return "STRINGS";
    default: return "another type";
  }
}

static int attr_wrong(const Onnx__NodeProto *n, const Onnx__AttributeProto *a, const char *want, sw_err *e) {
  sw_fail(e, SW_EINPUT, "node '%s' (%s): attribute %s has type %s, expected %s", node_label(n), n->op_type, a->name,
          attr_type_name(attr_type(a)), want);
  return sw_hint(e, "the model does not follow the ONNX operator schema; export it again");
}

int onnx_attr_int(const Onnx__NodeProto *n, const char *name, int64_t def, int64_t *out, sw_err *e) {
  const Onnx__AttributeProto *a = onnx_attr(n, name);
  *out = def;
  if (!a) return SW_OK;
  if (attr_type(a) != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT) return attr_wrong(n, a, "INT", e);
  *out = a->i;
  return SW_OK;
}

int onnx_attr_float(const Onnx__NodeProto *n, const char *name, float def, float *out, sw_err *e) {
  const Onnx__AttributeProto *a = onnx_attr(n, name);
  *out = def;
  if (!a) return SW_OK;
  if (attr_type(a) != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT) return attr_wrong(n, a, "FLOAT", e);
  *out = a->f;
  return SW_OK;
}

int onnx_attr_ints(const Onnx__NodeProto *n, const char *name, const int64_t **out, int *count, sw_err *e) {
  const Onnx__AttributeProto *a = onnx_attr(n, name);
  *out = NULL;
  *count = -1;
  if (!a) return SW_OK;
  if (attr_type(a) != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS) return attr_wrong(n, a, "INTS", e);
  if (a->n_ints > 4096) return sw_fail(e, SW_EINPUT, "node '%s': attribute %s is too long", node_label(n), name);
  *out = a->ints;
  *count = (int)a->n_ints;
  return SW_OK;
}

int onnx_attr_string(const Onnx__NodeProto *n, const char *name, const char *def, const char **out, sw_err *e) {
  const Onnx__AttributeProto *a = onnx_attr(n, name);
  *out = def;
  if (!a) return SW_OK;
  if (attr_type(a) != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING) return attr_wrong(n, a, "STRING", e);
  /* bytes are not NUL-terminated: keep a terminated copy alive as long as the proto */
  static char buf[8][128];
  static int k;
  char *b = buf[k++ & 7];
  size_t l = a->s.len < sizeof buf[0] - 1 ? a->s.len : sizeof buf[0] - 1;
  memcpy(b, a->s.data, l);
  b[l] = 0;
  *out = b;
  return SW_OK;
}

/* ---- values ---- */

static ival *ival_get(imp *im, const char *name) { return name && name[0] ? strmap_get(&im->vals, name) : NULL; }

static ival *ival_new(imp *im, const char *name) {
  ival *v = sw_xcalloc(1, sizeof *v);
  v->name = name;
  if (im->n_ivals == im->cap_ivals) {
    im->cap_ivals = im->cap_ivals ? 2 * im->cap_ivals : 256;
    im->ivals = sw_xrealloc(im->ivals, sizeof *im->ivals * (size_t)im->cap_ivals);
  }
  im->ivals[im->n_ivals++] = v;
  strmap_put(&im->vals, name, v);
  return v;
}

static const ir_shape *ival_shape(const ival *v) { return v->v ? &v->v->shape : &v->c.shape; }
static ir_dtype ival_dtype(const ival *v) { return v->v ? v->v->dtype : v->c.dtype; }

/* The IR value for an ONNX value, creating a PARAM/STATE/CONST for import-time data. */
static ir_value *materialize(imp *im, ival *v, ir_value_kind want) {
  if (v->v) return v->v;
  SW_ASSERT(v->is_const);
  ir_value_kind kind = want ? want : (v->from_init && v->c.dtype == IR_F32) ? IR_VAL_PARAM : IR_VAL_CONST;
  ir_value *x = ir_value_new(im->g, v->name, kind, v->c.dtype, &v->c.shape);
  if (!x) x = ir_value_new(im->g, ir_unique_name(im->g, v->name), kind, v->c.dtype, &v->c.shape);
  ir_value_set_data(x, v->c.data, v->c.nbytes);
  v->borrowed = 1;
  v->v = x;
  return x;
}

/* ---- helpers for canonical nodes ---- */

static int unsupported(imp *im, const Onnx__NodeProto *nd, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int unsupported(imp *im, const Onnx__NodeProto *nd, const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  sw_fail(im->e, SW_EINPUT, "node '%s' (%s): unsupported: %s", node_label(nd), nd->op_type, buf);
  return sw_hint(im->e, "swatc runs CNN/MLP graphs; re-export the model without this construct");
}

/* The constant integer list held by input i (Reshape shape, Slice starts, ...). *count = -1 if absent. */
static int const_ints(imp *im, const Onnx__NodeProto *nd, ival **in, int n_in, int i, int64_t *out, int cap, int *count) {
  *count = -1;
  if (i >= n_in || !in[i]) return SW_OK;
  if (!in[i]->is_const)
    return unsupported(im, nd, "input %d ('%s') must be a constant, but it is computed at run time", i, in[i]->name);
  const tensor_data *t = &in[i]->c;
  int64_t n = tensor_numel(t);
  if (n > cap) return sw_fail(im->e, SW_EINPUT, "node '%s': input %d has %lld values (at most %d)", node_label(nd), i, (long long)n, cap);
  for (int64_t k = 0; k < n; k++) {
    switch (t->dtype) {
      case IR_I64: out[k] = ((const int64_t *)t->data)[k]; break;
      case IR_I32: out[k] = ((const int32_t *)t->data)[k]; break;
      default: return sw_fail(im->e, SW_EINPUT, "node '%s': input %d must be int64 or int32", node_label(nd), i);
    }
  }
  *count = (int)n;
  return SW_OK;
}

static int const_float(imp *im, const Onnx__NodeProto *nd, ival **in, int n_in, int i, float def, float *out) {
  *out = def;
  if (i >= n_in || !in[i]) return SW_OK;
  if (!in[i]->is_const)
    return unsupported(im, nd, "input %d ('%s') must be a constant, but it is computed at run time", i, in[i]->name);
  const tensor_data *t = &in[i]->c;
  if (tensor_numel(t) != 1) return sw_fail(im->e, SW_EINPUT, "node '%s': input %d must be a scalar", node_label(nd), i);
  switch (t->dtype) {
    case IR_F32: *out = *(const float *)t->data; break;
    case IR_F64: *out = (float)*(const double *)t->data; break;
    case IR_BOOL: case IR_U8: *out = *(const uint8_t *)t->data; break;
    case IR_I64: *out = (float)*(const int64_t *)t->data; break;
    case IR_I32: *out = (float)*(const int32_t *)t->data; break;
    default: return unsupported(im, nd, "input %d of element type %s (swatc computes in float32)", i, ir_dtype_name(t->dtype));
  }
  return SW_OK;
}

/* Copies ONNX attributes that the op's schema knows; `skip` lists names handled by the caller or obsolete. */
static int copy_attrs(imp *im, const Onnx__NodeProto *nd, ir_node *n, const char *const *skip) {
  for (size_t k = 0; k < nd->n_attribute; k++) {
    const Onnx__AttributeProto *a = nd->attribute[k];
    if (!a->name) continue;
    int skipped = 0;
    for (const char *const *s = skip; s && *s && !skipped; s++) skipped = strcmp(*s, a->name) == 0;
    if (skipped) continue;
    const ir_attr_def *d = ir_op_attr(n->op, a->name);
    if (!d) return unsupported(im, nd, "attribute '%s'", a->name);
    int t = attr_type(a);
    switch (d->type) {
      case IR_ATTR_INT:
        if (t != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT) return attr_wrong(nd, a, "INT", im->e);
        ir_attr_set_int(im->g, n, a->name, a->i);
        break;
      case IR_ATTR_FLOAT:
        if (t != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT) return attr_wrong(nd, a, "FLOAT", im->e);
        ir_attr_set_float(im->g, n, a->name, a->f);
        break;
      case IR_ATTR_STRING: {
        const char *s;
        if (onnx_attr_string(nd, a->name, "", &s, im->e)) return im->e->code;
        ir_attr_set_string(im->g, n, a->name, s);
        break;
      }
      case IR_ATTR_INTS:
        if (t != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS) return attr_wrong(nd, a, "INTS", im->e);
        if (a->n_ints > 4096) return sw_fail(im->e, SW_EINPUT, "node '%s': attribute %s is too long", node_label(nd), a->name);
        ir_attr_set_ints(im->g, n, a->name, (int)a->n_ints, a->ints);
        break;
      case IR_ATTR_FLOATS:
        if (t != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS) return attr_wrong(nd, a, "FLOATS", im->e);
        if (a->n_floats > 4096) return sw_fail(im->e, SW_EINPUT, "node '%s': attribute %s is too long", node_label(nd), a->name);
        ir_attr_set_floats(im->g, n, a->name, (int)a->n_floats, a->floats);
        break;
    }
  }
  return SW_OK;
}

/* Creates IR node `op` reading the given ONNX values (NULL = absent) and writing nd's outputs
 * out_map[k] (-1 = drop). Shapes are inferred at once. */
static ir_node *emit(imp *im, const Onnx__NodeProto *nd, const char *op, const char *name, int n_in, ival **in,
                     int n_out, const char *const *out_names) {
  ir_value *vin[64];
  SW_ASSERT(n_in <= 64);
  for (int i = 0; i < n_in; i++) vin[i] = in[i] ? materialize(im, in[i], 0) : NULL;
  ir_node *n = ir_node_new(im->g, op, name, n_in, vin, n_out);
  SW_ASSERT(n);
  for (int k = 0; k < n_out; k++) {
    if (!out_names[k] || !out_names[k][0]) continue;
    if (ival_get(im, out_names[k])) {
      sw_fail(im->e, SW_EINPUT, "value '%s' is assigned by more than one node", out_names[k]);
      sw_hint(im->e, "the graph is not in single static assignment form; the model is invalid");
      return NULL;
    }
    ir_value *v = ir_node_set_output(im->g, n, k, out_names[k]);
    if (!v) v = ir_node_set_output(im->g, n, k, ir_unique_name(im->g, out_names[k]));
    ival_new(im, out_names[k])->v = v;
  }
  (void)nd;
  return n;
}

static int finish(imp *im, const Onnx__NodeProto *nd, ir_node *n) {
  if (!n) return im->e->code;
  sw_err e2 = {0};
  if (ir_infer_node(n, &e2)) {
    sw_fail(im->e, SW_EINPUT, "%s", e2.msg);
    return sw_hint(im->e, strstr(e2.msg, "unsupported") ? "swatc runs CNN/MLP graphs; re-export the model without this construct"
                                                         : "the shapes in the model do not fit together; check the export");
  }
  (void)nd;
  return SW_OK;
}

static const char *const *onames(const Onnx__NodeProto *nd) { return (const char *const *)nd->output; }

/* SAME_UPPER/SAME_LOWER/VALID/NOTSET → explicit pads; fills strides/dilations defaults. */
static int window_attrs(imp *im, const Onnx__NodeProto *nd, ir_node *n, const ir_shape *x, const int64_t *kernel, int set_dil) {
  int sp = x->rank - 2;
  if (sp < 1 || sp > 3) return unsupported(im, nd, "input of rank %d (needs [N,C,spatial...] with 1 to 3 spatial dims)", x->rank);
  const int64_t *v;
  int64_t strides[3], dil[3], pads[6];
  int k;
  if (onnx_attr_ints(nd, "strides", &v, &k, im->e)) return im->e->code;
  if (k >= 0 && k != sp) return sw_fail(im->e, SW_EINPUT, "node '%s': strides has %d values, expected %d", node_label(nd), k, sp);
  for (int i = 0; i < sp; i++) strides[i] = k >= 0 ? v[i] : 1;
  if (onnx_attr_ints(nd, "dilations", &v, &k, im->e)) return im->e->code;
  if (k >= 0 && k != sp) return sw_fail(im->e, SW_EINPUT, "node '%s': dilations has %d values, expected %d", node_label(nd), k, sp);
  for (int i = 0; i < sp; i++) dil[i] = k >= 0 ? v[i] : 1;
  if (onnx_attr_ints(nd, "pads", &v, &k, im->e)) return im->e->code;
  if (k >= 0 && k != 2 * sp) return sw_fail(im->e, SW_EINPUT, "node '%s': pads has %d values, expected %d", node_label(nd), k, 2 * sp);
  for (int i = 0; i < 2 * sp; i++) pads[i] = k >= 0 ? v[i] : 0;
  const char *ap;
  if (onnx_attr_string(nd, "auto_pad", "NOTSET", &ap, im->e)) return im->e->code;
  if (strcmp(ap, "SAME_UPPER") == 0 || strcmp(ap, "SAME_LOWER") == 0) {
    for (int i = 0; i < sp; i++) {
      int64_t in = x->d[2 + i];
      if (in == IR_N || strides[i] < 1) return unsupported(im, nd, "auto_pad on this input");
      int64_t out = (in + strides[i] - 1) / strides[i];
      int64_t total = (out - 1) * strides[i] + (kernel[i] - 1) * dil[i] + 1 - in;
      if (total < 0) total = 0;
      int upper = ap[5] == 'U';
      pads[i] = upper ? total / 2 : total - total / 2;
      pads[sp + i] = total - pads[i];
    }
  } else if (strcmp(ap, "VALID") == 0) {
    for (int i = 0; i < 2 * sp; i++) pads[i] = 0;
  } else if (strcmp(ap, "NOTSET") != 0) {
    return unsupported(im, nd, "auto_pad '%s'", ap);
  }
  ir_attr_set_ints(im->g, n, "kernel_shape", sp, kernel);
  ir_attr_set_ints(im->g, n, "strides", sp, strides);
  ir_attr_set_ints(im->g, n, "pads", 2 * sp, pads);
  if (set_dil || k >= 0) ir_attr_set_ints(im->g, n, "dilations", sp, dil);
  return SW_OK;
}

static const char *const skip_window[] = {"kernel_shape", "strides", "pads", "dilations", "auto_pad", NULL};

static int canon_conv(imp *im, const Onnx__NodeProto *nd, ival **in, int n_in) {
  if (n_in < 2 || !in[0] || !in[1]) return sw_fail(im->e, SW_EINPUT, "node '%s' (Conv): needs inputs X and W", node_label(nd));
  const ir_shape *ws = ival_shape(in[1]), *xs = ival_shape(in[0]);
  if (ws->rank != xs->rank || ws->rank < 3)
    return sw_fail(im->e, SW_EINPUT, "node '%s' (Conv): weight rank %d does not match input rank %d", node_label(nd), ws->rank, xs->rank);
  int64_t kernel[3];
  const int64_t *ks;
  int k;
  if (onnx_attr_ints(nd, "kernel_shape", &ks, &k, im->e)) return im->e->code;
  for (int i = 0; i < ws->rank - 2 && i < 3; i++) kernel[i] = k >= 0 && i < k ? ks[i] : ws->d[2 + i];
  ir_node *n = emit(im, nd, "Conv", nd->name, n_in, in, 1, onames(nd));
  if (!n) return im->e->code;
  if (copy_attrs(im, nd, n, skip_window) || window_attrs(im, nd, n, xs, kernel, 1)) return im->e->code;
  if (k >= 0) ir_attr_set_ints(im->g, n, "kernel_shape", k, ks); /* let the shape rule check it against W */
  return finish(im, nd, n);
}

static int canon_pool(imp *im, const Onnx__NodeProto *nd, ival **in, int n_in) {
  if (n_in < 1 || !in[0]) return sw_fail(im->e, SW_EINPUT, "node '%s': needs an input", node_label(nd));
  const int64_t *ks;
  int k;
  if (onnx_attr_ints(nd, "kernel_shape", &ks, &k, im->e)) return im->e->code;
  const ir_shape *xs = ival_shape(in[0]);
  if (k != xs->rank - 2)
    return sw_fail(im->e, SW_EINPUT, "node '%s' (%s): kernel_shape has %d values for an input of rank %d", node_label(nd),
                   nd->op_type, k, xs->rank);
  int is_max = nd->op_type[0] == 'M';
  int n_out = is_max ? (int)nd->n_output : 1;
  ir_node *n = emit(im, nd, nd->op_type, nd->name, 1, in, n_out, onames(nd));
  if (!n) return im->e->code;
  if (copy_attrs(im, nd, n, skip_window) || window_attrs(im, nd, n, xs, ks, is_max)) return im->e->code;
  return finish(im, nd, n);
}

static int canon_bn(imp *im, const Onnx__NodeProto *nd, ival **in, int n_in) {
  if (n_in != 5) return sw_fail(im->e, SW_EINPUT, "node '%s' (BatchNormalization): has %d inputs, expected 5", node_label(nd), n_in);
  for (int i = 3; i < 5; i++)
    if (in[i] && in[i]->is_const && !in[i]->v) materialize(im, in[i], IR_VAL_STATE);
  int64_t spatial, is_test, training;
  if (onnx_attr_int(nd, "spatial", 1, &spatial, im->e) || onnx_attr_int(nd, "is_test", 0, &is_test, im->e) ||
      onnx_attr_int(nd, "training_mode", 0, &training, im->e))
    return im->e->code;
  if (spatial != 1) return unsupported(im, nd, "spatial=0 (per-activation statistics)");
  int used = 0;
  for (size_t k = 1; k < nd->n_output; k++)
    if (nd->output[k][0]) used = (int)k;
  if (im->opset < 14) training = used > 0 || (im->opset < 7 && !is_test && nd->n_output > 1);
  /* outputs 4 and 5 of opset < 14 (saved mean / inverse std) are PyTorch's; nobody consumes them */
  int n_out = training ? 3 : 1;
  const char *outs[3] = {nd->output[0], nd->n_output > 1 ? nd->output[1] : "", nd->n_output > 2 ? nd->output[2] : ""};
  ir_node *n = emit(im, nd, "BatchNormalization", nd->name, 5, in, n_out, outs);
  if (!n) return im->e->code;
  static const char *const skip[] = {"spatial", "is_test", "consumed_inputs", "training_mode", NULL};
  if (copy_attrs(im, nd, n, skip)) return im->e->code;
  ir_attr_set_int(im->g, n, "training_mode", training);
  return finish(im, nd, n);
}

static int canon_dropout(imp *im, const Onnx__NodeProto *nd, ival **in, int n_in) {
  float ratio = 0.5f, training = 1.0f;
  int64_t is_test = 0;
  if (im->opset >= 12) {
    if (const_float(im, nd, in, n_in, 1, 0.5f, &ratio) || const_float(im, nd, in, n_in, 2, 0.0f, &training)) return im->e->code;
  } else {
    if (onnx_attr_float(nd, "ratio", 0.5f, &ratio, im->e) || onnx_attr_int(nd, "is_test", 0, &is_test, im->e)) return im->e->code;
    training = im->opset < 7 ? (float)!is_test : 1.0f; /* Dropout-7..10 is what training-mode exports at opset <= 11 write */
  }
  ir_node *n = emit(im, nd, "Dropout", nd->name, 1, in, nd->n_output > 1 ? 2 : 1, onames(nd));
  if (!n) return im->e->code;
  static const char *const skip[] = {"ratio", "is_test", "consumed_inputs", NULL};
  if (copy_attrs(im, nd, n, skip)) return im->e->code;
  ir_attr_set_float(im->g, n, "ratio", ratio);
  ir_attr_set_int(im->g, n, "training_mode", training != 0.0f);
  return finish(im, nd, n);
}

static int canon_clip(imp *im, const Onnx__NodeProto *nd, ival **in, int n_in) {
  float lo = -INFINITY, hi = INFINITY;
  if (im->opset >= 11) {
    if (const_float(im, nd, in, n_in, 1, -INFINITY, &lo) || const_float(im, nd, in, n_in, 2, INFINITY, &hi)) return im->e->code;
  } else {
    if (onnx_attr_float(nd, "min", -INFINITY, &lo, im->e) || onnx_attr_float(nd, "max", INFINITY, &hi, im->e)) return im->e->code;
  }
  ir_node *n = emit(im, nd, "Clip", nd->name, 1, in, 1, onames(nd));
  if (!n) return im->e->code;
  static const char *const skip[] = {"min", "max", "consumed_inputs", NULL};
  if (copy_attrs(im, nd, n, skip)) return im->e->code;
  ir_attr_set_float(im->g, n, "min", lo);
  ir_attr_set_float(im->g, n, "max", hi);
  return finish(im, nd, n);
}

static int canon_pad(imp *im, const Onnx__NodeProto *nd, ival **in, int n_in) {
  int64_t pads[2 * IR_MAX_RANK];
  int k;
  float value = 0.0f;
  const ir_shape *xs = ival_shape(in[0]);
  if (im->opset >= 11) {
    if (const_ints(im, nd, in, n_in, 1, pads, 2 * IR_MAX_RANK, &k) || const_float(im, nd, in, n_in, 2, 0.0f, &value))
      return im->e->code;
    if (n_in > 3 && in[3]) {
      int64_t axes[IR_MAX_RANK], full[2 * IR_MAX_RANK] = {0};
      int ka;
      if (const_ints(im, nd, in, n_in, 3, axes, IR_MAX_RANK, &ka)) return im->e->code;
      if (2 * ka != k) return sw_fail(im->e, SW_EINPUT, "node '%s' (Pad): pads and axes differ in length", node_label(nd));
      for (int i = 0; i < ka; i++) {
        int64_t a = axes[i] < 0 ? axes[i] + xs->rank : axes[i];
        if (a < 0 || a >= xs->rank) return sw_fail(im->e, SW_EINPUT, "node '%s' (Pad): axis out of range", node_label(nd));
        full[a] = pads[i];
        full[xs->rank + a] = pads[ka + i];
      }
      memcpy(pads, full, sizeof full);
      k = 2 * xs->rank;
    }
  } else {
    const int64_t *p;
    if (onnx_attr_ints(nd, "pads", &p, &k, im->e)) return im->e->code;
    if (k < 0 && onnx_attr_ints(nd, "paddings", &p, &k, im->e)) return im->e->code;
    if (k > 2 * IR_MAX_RANK) k = 2 * IR_MAX_RANK + 1;
    for (int i = 0; i < k && i < 2 * IR_MAX_RANK; i++) pads[i] = p[i];
    if (onnx_attr_float(nd, "value", 0.0f, &value, im->e)) return im->e->code;
  }
  if (k < 0) return sw_fail(im->e, SW_EINPUT, "node '%s' (Pad): no pads given", node_label(nd));
  ir_node *n = emit(im, nd, "Pad", nd->name, 1, in, 1, onames(nd));
  if (!n) return im->e->code;
  static const char *const skip[] = {"pads", "paddings", "value", NULL};
  if (copy_attrs(im, nd, n, skip)) return im->e->code;
  ir_attr_set_ints(im->g, n, "pads", k, pads);
  ir_attr_set_float(im->g, n, "value", value);
  return finish(im, nd, n);
}

static int canon_slice(imp *im, const Onnx__NodeProto *nd, ival **in, int n_in) {
  int64_t st[IR_MAX_RANK], en[IR_MAX_RANK], ax[IR_MAX_RANK], sp[IR_MAX_RANK];
  int ks, ke, ka = -1, kp = -1;
  if (im->opset >= 10) {
    if (const_ints(im, nd, in, n_in, 1, st, IR_MAX_RANK, &ks) || const_ints(im, nd, in, n_in, 2, en, IR_MAX_RANK, &ke) ||
        const_ints(im, nd, in, n_in, 3, ax, IR_MAX_RANK, &ka) || const_ints(im, nd, in, n_in, 4, sp, IR_MAX_RANK, &kp))
      return im->e->code;
  } else {
    const int64_t *a, *b, *c;
    if (onnx_attr_ints(nd, "starts", &a, &ks, im->e) || onnx_attr_ints(nd, "ends", &b, &ke, im->e) ||
        onnx_attr_ints(nd, "axes", &c, &ka, im->e))
      return im->e->code;
    if (ks > IR_MAX_RANK || ke > IR_MAX_RANK || ka > IR_MAX_RANK) return sw_fail(im->e, SW_EINPUT, "node '%s' (Slice): too many axes", node_label(nd));
    for (int i = 0; i < ks; i++) st[i] = a[i];
    for (int i = 0; i < ke; i++) en[i] = b[i];
    for (int i = 0; i < ka; i++) ax[i] = c[i];
  }
  if (ks < 0 || ke < 0) return sw_fail(im->e, SW_EINPUT, "node '%s' (Slice): starts and ends are required", node_label(nd));
  ir_node *n = emit(im, nd, "Slice", nd->name, 1, in, 1, onames(nd));
  if (!n) return im->e->code;
  static const char *const skip[] = {"starts", "ends", "axes", NULL};
  if (copy_attrs(im, nd, n, skip)) return im->e->code;
  ir_attr_set_ints(im->g, n, "starts", ks, st);
  ir_attr_set_ints(im->g, n, "ends", ke, en);
  if (ka >= 0) ir_attr_set_ints(im->g, n, "axes", ka, ax);
  if (kp >= 0) ir_attr_set_ints(im->g, n, "steps", kp, sp);
  return finish(im, nd, n);
}

/* Emits Reshape(x) → out with target t (may contain N). */
static int emit_reshape(imp *im, const Onnx__NodeProto *nd, ival *x, const char *name, const char *out, int r, const int64_t *t,
                        int allowzero) {
  const char *outs[1] = {out};
  ir_node *n = emit(im, nd, "Reshape", name, 1, &x, 1, outs);
  if (!n) return im->e->code;
  ir_attr_set_ints(im->g, n, "shape", r, t);
  if (allowzero) ir_attr_set_int(im->g, n, "allowzero", allowzero);
  return finish(im, nd, n);
}

static int canon_reshape(imp *im, const Onnx__NodeProto *nd, ival **in, int n_in) {
  int64_t t[IR_MAX_RANK];
  int k;
  if (im->opset >= 5) {
    if (n_in < 2 || !in[1]) return sw_fail(im->e, SW_EINPUT, "node '%s' (Reshape): no target shape", node_label(nd));
    if (const_ints(im, nd, in, n_in, 1, t, IR_MAX_RANK, &k)) return im->e->code;
  } else {
    const int64_t *p;
    if (onnx_attr_ints(nd, "shape", &p, &k, im->e)) return im->e->code;
    if (k < 0 || k > IR_MAX_RANK) return sw_fail(im->e, SW_EINPUT, "node '%s' (Reshape): bad target shape", node_label(nd));
    memcpy(t, p, sizeof *t * (size_t)k);
  }
  int64_t allowzero;
  if (onnx_attr_int(nd, "allowzero", 0, &allowzero, im->e)) return im->e->code;
  const ir_shape *xs = ival_shape(in[0]);
  int has_n = 0;
  for (int i = 0; i < k; i++) has_n |= t[i] == IR_N;
  /* A static export bakes its batch size into the target: give dimension 0 back to N. */
  if (!has_n && k > 0 && xs->rank > 0 && xs->d[0] == IR_N && im->export_batch > 0 && t[0] == im->export_batch) {
    char a[96], b[96];
    ir_shape ts = ir_shape_make(k, t);
    ir_shape_str(&ts, a, sizeof a);
    t[0] = IR_N;
    ts.d[0] = IR_N;
    ir_shape_str(&ts, b, sizeof b);
    ir_graph_note(im->g, "Reshape '%s': target %s had the export batch %lld baked in; rewritten as %s", node_label(nd), a,
                  (long long)im->export_batch, b);
  }
  return emit_reshape(im, nd, in[0], nd->name, nd->output[0], k, t, (int)allowzero);
}

/* Squeeze/Unsqueeze/Flatten-like ops on run-time values become a Reshape with an explicit target. */
static int canon_squeeze(imp *im, const Onnx__NodeProto *nd, ival **in, int n_in) {
  int64_t axes[IR_MAX_RANK];
  int k;
  if (im->opset >= 13) {
    if (const_ints(im, nd, in, n_in, 1, axes, IR_MAX_RANK, &k)) return im->e->code;
  } else {
    const int64_t *p;
    if (onnx_attr_ints(nd, "axes", &p, &k, im->e)) return im->e->code;
    if (k > IR_MAX_RANK) return sw_fail(im->e, SW_EINPUT, "node '%s': too many axes", node_label(nd));
    for (int i = 0; i < k; i++) axes[i] = p[i];
  }
  const ir_shape *x = ival_shape(in[0]);
  int64_t t[IR_MAX_RANK];
  int r = 0;
  int unsq = nd->op_type[0] == 'U';
  int out_rank = unsq ? x->rank + (k > 0 ? k : 0) : x->rank;
  if (unsq && (k <= 0 || out_rank > IR_MAX_RANK)) return sw_fail(im->e, SW_EINPUT, "node '%s' (Unsqueeze): needs axes", node_label(nd));
  int mark[IR_MAX_RANK] = {0};
  for (int i = 0; i < k; i++) {
    int64_t a = axes[i] < 0 ? axes[i] + out_rank : axes[i];
    if (a < 0 || a >= out_rank || mark[a]) return sw_fail(im->e, SW_EINPUT, "node '%s' (%s): axis %lld out of range or repeated", node_label(nd), nd->op_type, (long long)axes[i]);
    mark[a] = 1;
  }
  if (unsq) {
    for (int i = 0, j = 0; i < out_rank; i++) t[r++] = mark[i] ? 1 : x->d[j++];
  } else {
    for (int i = 0; i < x->rank; i++) {
      int drop = k > 0 ? mark[i] : x->d[i] == 1;
      if (drop && x->d[i] != 1)
        return sw_fail(im->e, SW_EINPUT, "node '%s' (Squeeze): axis %d has size %s, not 1", node_label(nd), i,
                       x->d[i] == IR_N ? "N" : "> 1");
      if (!drop) t[r++] = x->d[i];
    }
  }
  return emit_reshape(im, nd, in[0], nd->name, nd->output[0], r, t, 1);
}

static int canon_split(imp *im, const Onnx__NodeProto *nd, ival **in, int n_in) {
  int64_t axis, sizes[64];
  int k = -1;
  if (onnx_attr_int(nd, "axis", 0, &axis, im->e)) return im->e->code;
  if (nd->n_output > 64) return unsupported(im, nd, "more than 64 outputs");
  if (im->opset >= 13) {
    if (const_ints(im, nd, in, n_in, 1, sizes, 64, &k)) return im->e->code;
  } else {
    const int64_t *p;
    if (onnx_attr_ints(nd, "split", &p, &k, im->e)) return im->e->code;
    if (k > 64) return unsupported(im, nd, "more than 64 outputs");
    for (int i = 0; i < k; i++) sizes[i] = p[i];
  }
  const ir_shape *x = ival_shape(in[0]);
  int64_t a = axis < 0 ? axis + x->rank : axis;
  if (a < 0 || a >= x->rank) return sw_fail(im->e, SW_EINPUT, "node '%s' (Split): axis out of range", node_label(nd));
  int n_out = (int)nd->n_output;
  if (k < 0) {
    int64_t dim = x->d[a];
    if (dim == IR_N) return unsupported(im, nd, "split along the batch dimension N");
    int64_t each = (dim + n_out - 1) / n_out;
    if (im->opset < 18 && dim % n_out) return sw_fail(im->e, SW_EINPUT, "node '%s' (Split): %lld is not divisible into %d parts", node_label(nd), (long long)dim, n_out);
    for (int i = 0; i < n_out; i++) sizes[i] = i < n_out - 1 ? each : dim - each * (n_out - 1);
    k = n_out;
  }
  ir_node *n = emit(im, nd, "Split", nd->name, 1, in, n_out, onames(nd));
  if (!n) return im->e->code;
  ir_attr_set_int(im->g, n, "axis", a);
  ir_attr_set_ints(im->g, n, "split", k, sizes);
  return finish(im, nd, n);
}

static int canon_reduce_mean(imp *im, const Onnx__NodeProto *nd, ival **in, int n_in) {
  int64_t axes[IR_MAX_RANK];
  int k = -1;
  if (im->opset >= 18) {
    if (const_ints(im, nd, in, n_in, 1, axes, IR_MAX_RANK, &k)) return im->e->code;
  } else {
    const int64_t *p;
    if (onnx_attr_ints(nd, "axes", &p, &k, im->e)) return im->e->code;
    if (k > IR_MAX_RANK) return sw_fail(im->e, SW_EINPUT, "node '%s': too many axes", node_label(nd));
    for (int i = 0; i < k; i++) axes[i] = p[i];
  }
  ir_node *n = emit(im, nd, "ReduceMean", nd->name, 1, in, 1, onames(nd));
  if (!n) return im->e->code;
  static const char *const skip[] = {"axes", NULL};
  if (copy_attrs(im, nd, n, skip)) return im->e->code;
  if (k > 0) ir_attr_set_ints(im->g, n, "axes", k, axes);
  return finish(im, nd, n);
}

static int canon_softmax(imp *im, const Onnx__NodeProto *nd, ival **in, int n_in) {
  (void)n_in;
  int64_t axis;
  if (onnx_attr_int(nd, "axis", im->opset >= 13 ? -1 : 1, &axis, im->e)) return im->e->code;
  const ir_shape *x = ival_shape(in[0]);
  if (axis < -x->rank || axis >= (x->rank ? x->rank : 1))
    return sw_fail(im->e, SW_EINPUT, "node '%s' (%s): axis %lld out of range", node_label(nd), nd->op_type, (long long)axis);
  if (axis < 0) axis += x->rank;
  if (im->opset < 13 && axis != x->rank - 1) {
    /* opset < 13: softmax over the flattened trailing dims [axis:] — a 2-D view and back */
    int64_t tail = 1;
    for (int i = (int)axis; i < x->rank; i++) {
      if (x->d[i] == IR_N) return unsupported(im, nd, "softmax over the batch dimension N");
      tail *= x->d[i];
    }
    int64_t flat[IR_MAX_RANK];
    int r = 0;
    for (int i = 0; i < axis; i++) flat[r++] = x->d[i];
    flat[r++] = tail;
    char tmp1[300], tmp2[300];
    snprintf(tmp1, sizeof tmp1, "%s/flat", nd->output[0]);
    snprintf(tmp2, sizeof tmp2, "%s/2d", nd->output[0]);
    const char *n1 = ir_unique_name(im->g, tmp1), *n2 = ir_unique_name(im->g, tmp2);
    if (emit_reshape(im, nd, in[0], NULL, n1, r, flat, 0)) return im->e->code;
    ival *f = ival_get(im, n1);
    const char *outs[1] = {n2};
    ir_node *n = emit(im, nd, nd->op_type, nd->name, 1, &f, 1, outs);
    if (!n) return im->e->code;
    ir_attr_set_int(im->g, n, "axis", r - 1);
    if (finish(im, nd, n)) return im->e->code;
    return emit_reshape(im, nd, ival_get(im, n2), NULL, nd->output[0], x->rank, x->d, 0);
  }
  ir_node *n = emit(im, nd, nd->op_type, nd->name, 1, in, 1, onames(nd));
  if (!n) return im->e->code;
  ir_attr_set_int(im->g, n, "axis", axis);
  return finish(im, nd, n);
}

static int canon_binary(imp *im, const Onnx__NodeProto *nd, ival **in, int n_in) {
  if (n_in != 2 || !in[0] || !in[1]) return sw_fail(im->e, SW_EINPUT, "node '%s' (%s): needs two inputs", node_label(nd), nd->op_type);
  int64_t bc, axis;
  if (onnx_attr_int(nd, "broadcast", 0, &bc, im->e) || onnx_attr_int(nd, "axis", -1, &axis, im->e)) return im->e->code;
  ival *args[2] = {in[0], in[1]};
  if (im->opset < 7 && bc) {
    /* legacy broadcasting: B's dims line up with A's starting at `axis`; make it numpy-style */
    const ir_shape *a = ival_shape(in[0]), *b = ival_shape(in[1]);
    if (axis < 0) axis = a->rank - b->rank;
    int trail = a->rank - (int)axis - b->rank;
    if (axis < 0 || trail < 0) return sw_fail(im->e, SW_EINPUT, "node '%s' (%s): bad legacy broadcast axis", node_label(nd), nd->op_type);
    if (trail > 0) {
      int64_t t[IR_MAX_RANK];
      int r = 0;
      for (int i = 0; i < b->rank; i++) t[r++] = b->d[i];
      for (int i = 0; i < trail; i++) t[r++] = 1;
      if (in[1]->is_const && !in[1]->v) {
        char nm[300];
        snprintf(nm, sizeof nm, "%s/aligned", in[1]->name);
        ival *c = ival_new(im, ir_unique_name(im->g, nm));
        c->is_const = 1;
        c->from_init = in[1]->from_init;
        c->c.dtype = in[1]->c.dtype;
        c->c.shape = ir_shape_make(r, t);
        c->c.nbytes = in[1]->c.nbytes;
        c->c.data = sw_xmalloc(c->c.nbytes ? c->c.nbytes : 1);
        if (c->c.nbytes) memcpy(c->c.data, in[1]->c.data, c->c.nbytes);
        args[1] = c;
      } else {
        char nm[300];
        snprintf(nm, sizeof nm, "%s/aligned", in[1]->name);
        const char *vn = ir_unique_name(im->g, nm);
        if (emit_reshape(im, nd, in[1], NULL, vn, r, t, 0)) return im->e->code;
        args[1] = ival_get(im, vn);
      }
    }
  }
  ir_node *n = emit(im, nd, nd->op_type, nd->name, 2, args, 1, onames(nd));
  return finish(im, nd, n);
}

static int canon_generic(imp *im, const Onnx__NodeProto *nd, ival **in, int n_in) {
  const ir_op_def *op = ir_op_find(nd->op_type);
  int n_out = (int)nd->n_output;
  if (n_out > op->max_out) {
    for (int k = op->max_out; k < n_out; k++)
      if (nd->output[k][0]) return unsupported(im, nd, "output %d", k);
    n_out = op->max_out;
  }
  ir_node *n = emit(im, nd, nd->op_type, nd->name, n_in, in, n_out, onames(nd));
  if (!n) return im->e->code;
  static const char *const skip[] = {"consumed_inputs", "broadcast", NULL};
  if (copy_attrs(im, nd, n, skip)) return im->e->code;
  if (strcmp(nd->op_type, "Concat") == 0 && !ir_attr_get(n, "axis") && im->opset < 4) ir_attr_set_int(im->g, n, "axis", 1);
  return finish(im, nd, n);
}

/* ---- constants ---- */

static int const_from_attr(imp *im, const Onnx__NodeProto *nd) {
  if (nd->n_output < 1 || !nd->output[0][0]) return sw_fail(im->e, SW_EINPUT, "node '%s' (Constant): no output", node_label(nd));
  if (ival_get(im, nd->output[0])) {
    sw_fail(im->e, SW_EINPUT, "value '%s' is assigned by more than one node", nd->output[0]);
    return sw_hint(im->e, "the graph is not in single static assignment form; the model is invalid");
  }
  tensor_data t = {0};
  const Onnx__AttributeProto *a = nd->n_attribute == 1 ? nd->attribute[0] : NULL;
  if (!a || !a->name) return sw_fail(im->e, SW_EINPUT, "node '%s' (Constant): needs exactly one value attribute", node_label(nd));
  int rc = SW_OK;
  if (strcmp(a->name, "value") == 0 && a->t) rc = tensor_from_proto(a->t, im->dir, &t, im->e);
  else if (strcmp(a->name, "sparse_value") == 0 && a->sparse_tensor) rc = tensor_from_sparse(a->sparse_tensor, im->dir, &t, im->e);
  else if (strcmp(a->name, "value_float") == 0 || strcmp(a->name, "value_int") == 0) {
    t.dtype = a->name[6] == 'f' ? IR_F32 : IR_I64;
    t.nbytes = ir_dtype_size(t.dtype);
    t.data = sw_xmalloc(8);
    if (t.dtype == IR_F32) *(float *)t.data = a->f;
    else *(int64_t *)t.data = a->i;
  } else if (strcmp(a->name, "value_floats") == 0 || strcmp(a->name, "value_ints") == 0) {
    int f = a->name[6] == 'f';
    size_t n = f ? a->n_floats : a->n_ints;
    t.dtype = f ? IR_F32 : IR_I64;
    t.shape.rank = 1;
    t.shape.d[0] = (int64_t)n;
    t.nbytes = n * ir_dtype_size(t.dtype);
    t.data = sw_xmalloc(t.nbytes ? t.nbytes : 1);
    if (n) memcpy(t.data, f ? (void *)a->floats : (void *)a->ints, t.nbytes);
  } else {
    return unsupported(im, nd, "Constant with attribute '%s'", a->name);
  }
  if (rc) return rc;
  ival *v = ival_new(im, nd->output[0]);
  v->is_const = 1;
  v->c = t;
  return SW_OK;
}

static int run_fold(imp *im, const Onnx__NodeProto *nd, ival **in, int n_in) {
  const tensor_data *cin[64];
  const ir_shape *shapes[64];
  ir_dtype types[64];
  SW_ASSERT(n_in <= 64);
  for (int i = 0; i < n_in; i++) {
    cin[i] = in[i] && in[i]->is_const ? &in[i]->c : NULL;
    shapes[i] = in[i] ? ival_shape(in[i]) : NULL;
    types[i] = in[i] ? ival_dtype(in[i]) : IR_UNDEF;
  }
  int n_out = (int)nd->n_output;
  if (n_out != 1) return unsupported(im, nd, "%d outputs", n_out);
  tensor_data out = {0};
  sw_err fe = {0};
  if (fold_eval(nd->op_type, im->opset, nd, n_in, cin, shapes, types, 1, &out, &fe)) {
    tensor_data_free(&out);
    sw_fail(im->e, SW_EINPUT, "node '%s' (%s): cannot evaluate at import: %s", node_label(nd), nd->op_type, fe.msg);
    return sw_hint(im->e, "swatc folds shape arithmetic on constants; this model computes it from run-time data");
  }
  if (ival_get(im, nd->output[0])) {
    tensor_data_free(&out);
    sw_fail(im->e, SW_EINPUT, "value '%s' is assigned by more than one node", nd->output[0]);
    return sw_hint(im->e, "the graph is not in single static assignment form; the model is invalid");
  }
  ival *v = ival_new(im, nd->output[0]);
  v->is_const = 1;
  v->c = out;
  /* an Identity copy of a weight is a weight of its own: never tie it to its source */
  v->from_init = strcmp(nd->op_type, "Identity") == 0 && in[0] && in[0]->from_init;
  return SW_OK;
}

/* ---- one node ---- */

static int import_node(imp *im, const Onnx__NodeProto *nd) {
  const char *op = nd->op_type;
  if (strcmp(op, "Constant") == 0) return const_from_attr(im, nd);
  int n_in = (int)nd->n_input;
  if (n_in > 64) return unsupported(im, nd, "more than 64 inputs");
  ival *in[64];
  int all_const = 1;
  for (int i = 0; i < n_in; i++) {
    in[i] = nd->input[i][0] ? ival_get(im, nd->input[i]) : NULL;
    if (nd->input[i][0] && !in[i]) {
      sw_fail(im->e, SW_EINPUT, "node '%s' (%s): input '%s' is not available", node_label(nd), op, nd->input[i]);
      return sw_hint(im->e, "it is produced by an output swatc does not compute; re-export the model");
    }
    if (in[i] && !in[i]->is_const) all_const = 0;
  }
  for (size_t k = 0; k < nd->n_output; k++)
    if (!nd->output[k]) return sw_fail(im->e, SW_EINPUT, "node '%s': malformed output list", node_label(nd));
  int shape_only = strcmp(op, "Shape") == 0 || strcmp(op, "Size") == 0;
  if (fold_known(op) && (all_const || shape_only) && n_in > 0 && in[0]) return run_fold(im, nd, in, n_in);
  if (n_in == 0 || !in[0]) {
    if (fold_known(op)) return sw_fail(im->e, SW_EINPUT, "node '%s' (%s): first input is missing", node_label(nd), op);
  }
  if (strcmp(op, "Identity") == 0 || (strcmp(op, "Cast") == 0 && in[0])) {
    if (op[0] == 'C') {
      int64_t to;
      if (onnx_attr_int(nd, "to", 0, &to, im->e)) return im->e->code;
      if (onnx_dtype((int32_t)to) != ival_dtype(in[0]))
        return unsupported(im, nd, "Cast of run-time data from %s to %s", ir_dtype_name(ival_dtype(in[0])), onnx_dtype_name((int32_t)to));
    }
    if (ival_get(im, nd->output[0])) return sw_fail(im->e, SW_EINPUT, "value '%s' is assigned by more than one node", nd->output[0]);
    ival *v = ival_new(im, nd->output[0]);
    v->v = in[0]->v;
    return SW_OK;
  }
  if (strcmp(op, "Squeeze") == 0 || strcmp(op, "Unsqueeze") == 0) return canon_squeeze(im, nd, in, n_in);
  if (!ir_op_find(op)) return unsupported(im, nd, "%s on run-time data (swatc folds it only on shapes and constants)", op);
  if (n_in == 0 || !in[0]) return sw_fail(im->e, SW_EINPUT, "node '%s' (%s): first input is missing", node_label(nd), op);
  if (strcmp(op, "Conv") == 0) return canon_conv(im, nd, in, n_in);
  if (strcmp(op, "MaxPool") == 0 || strcmp(op, "AveragePool") == 0) return canon_pool(im, nd, in, n_in);
  if (strcmp(op, "BatchNormalization") == 0) return canon_bn(im, nd, in, n_in);
  if (strcmp(op, "Dropout") == 0) return canon_dropout(im, nd, in, n_in);
  if (strcmp(op, "Clip") == 0) return canon_clip(im, nd, in, n_in);
  if (strcmp(op, "Pad") == 0) return canon_pad(im, nd, in, n_in);
  if (strcmp(op, "Slice") == 0) return canon_slice(im, nd, in, n_in);
  if (strcmp(op, "Reshape") == 0) return canon_reshape(im, nd, in, n_in);
  if (strcmp(op, "Split") == 0) return canon_split(im, nd, in, n_in);
  if (strcmp(op, "ReduceMean") == 0) return canon_reduce_mean(im, nd, in, n_in);
  if (strcmp(op, "Softmax") == 0 || strcmp(op, "LogSoftmax") == 0) return canon_softmax(im, nd, in, n_in);
  if (strcmp(op, "Add") == 0 || strcmp(op, "Sub") == 0 || strcmp(op, "Mul") == 0 || strcmp(op, "Div") == 0)
    return canon_binary(im, nd, in, n_in);
  return canon_generic(im, nd, in, n_in);
}

/* ---- whole-model steps ---- */

static int check_versions(imp *im) {
  const Onnx__ModelProto *m = im->m;
  sw_err *e = im->e;
  if (!m->has_ir_version || m->ir_version < 1) {
    sw_fail(e, SW_EINPUT, "the model has no IR version (ir_version is %lld)", (long long)m->ir_version);
    return sw_hint(e, "the file is not a complete ONNX model; export it again");
  }
  if (m->ir_version > MAX_IR_VERSION) {
    sw_fail(e, SW_EINPUT, "unsupported ONNX IR version %lld (swatc reads up to %d)", (long long)m->ir_version, MAX_IR_VERSION);
    return sw_hint(e, "export with an older opset/IR version, e.g. torch.onnx.export(..., opset_version=13)");
  }
  im->opset = -1;
  for (size_t i = 0; i < m->n_opset_import; i++) {
    const Onnx__OperatorSetIdProto *o = m->opset_import[i];
    for (size_t j = 0; j < i; j++)
      if (is_default_domain(o->domain) ? is_default_domain(m->opset_import[j]->domain)
                                       : (m->opset_import[j]->domain && strcmp(o->domain, m->opset_import[j]->domain) == 0)) {
        sw_fail(e, SW_EINPUT, "duplicate opset_import for domain '%s'", o->domain ? o->domain : "");
        return sw_hint(e, "the model file is invalid; export it again");
      }
    if (is_default_domain(o->domain)) im->opset = o->has_version ? (int)o->version : 0;
  }
  if (im->opset < 0 && m->ir_version < 3) im->opset = 1; /* IR 1-2 had no opset_import */
  if (im->opset < 0) {
    sw_fail(e, SW_EINPUT, "unsupported: the model does not import the default ONNX opset (ai.onnx)%s%s",
            m->n_opset_import && m->opset_import[0]->domain ? "; it uses " : "",
            m->n_opset_import && m->opset_import[0]->domain ? m->opset_import[0]->domain : "");
    return sw_hint(e, "swatc reads models made of standard ONNX operators");
  }
  if (im->opset < MIN_OPSET || im->opset > MAX_OPSET) {
    sw_fail(e, SW_EINPUT, "unsupported opset version %d (swatc reads opsets %d to %d)", im->opset, MIN_OPSET, MAX_OPSET);
    return sw_hint(e, "export with torch.onnx.export(..., opset_version=13)");
  }
  return SW_OK;
}

static const Onnx__FunctionProto *find_function(const Onnx__ModelProto *m, const Onnx__NodeProto *n) {
  for (size_t i = 0; i < m->n_functions; i++) {
    const Onnx__FunctionProto *f = m->functions[i];
    if (f->name && strcmp(f->name, n->op_type) == 0 &&
        (is_default_domain(f->domain) ? is_default_domain(n->domain) : (n->domain && strcmp(f->domain, n->domain) == 0)))
      return f;
  }
  return NULL;
}

static void push_node(imp *im, const Onnx__NodeProto *n, int *cap) {
  if (im->n_nodes == *cap) {
    *cap = *cap ? 2 * *cap : 256;
    im->nodes = sw_xrealloc(im->nodes, sizeof *im->nodes * (size_t)*cap);
  }
  im->nodes[im->n_nodes++] = n;
}

static char *prefixed(imp *im, const char *prefix, const char *name) {
  size_t l = strlen(prefix) + strlen(name) + 2;
  char *s = own(im, sw_xmalloc(l));
  snprintf(s, l, "%s/%s", prefix, name);
  return s;
}

/* Appends n to the flat node list, expanding calls of model-local functions (recursively). */
static int flatten_node(imp *im, const Onnx__NodeProto *n, int depth, int *cap, int *counter) {
  const Onnx__FunctionProto *f = find_function(im->m, n);
  if (!f) {
    push_node(im, n, cap);
    return SW_OK;
  }
  if (depth >= MAX_INLINE_DEPTH) {
    sw_fail(im->e, SW_EINPUT, "function '%s' calls itself (or nests deeper than %d)", f->name, MAX_INLINE_DEPTH);
    return sw_hint(im->e, "swatc inlines model-local functions; recursion cannot be inlined");
  }
  char prefix[256];
  snprintf(prefix, sizeof prefix, "%s::%d", f->name, (*counter)++);
  strmap rename;
  strmap_init(&rename);
  for (size_t i = 0; i < f->n_input; i++) strmap_put(&rename, f->input[i], i < n->n_input ? n->input[i] : "");
  for (size_t i = 0; i < f->n_output; i++) strmap_put(&rename, f->output[i], i < n->n_output ? n->output[i] : "");
  int rc = SW_OK;
  for (size_t k = 0; k < f->n_node && !rc; k++) {
    const Onnx__NodeProto *fn = f->node[k];
    Onnx__NodeProto *c = own(im, sw_xmalloc(sizeof *c));
    *c = *fn;
    c->name = prefixed(im, prefix, fn->name ? fn->name : "node");
    c->input = own(im, sw_xcalloc(fn->n_input + 1, sizeof(char *)));
    c->output = own(im, sw_xcalloc(fn->n_output + 1, sizeof(char *)));
    for (size_t i = 0; i < fn->n_input; i++) {
      const char *r = strmap_get(&rename, fn->input[i]);
      c->input[i] = (char *)(r ? r : fn->input[i][0] ? prefixed(im, prefix, fn->input[i]) : "");
    }
    for (size_t i = 0; i < fn->n_output; i++) {
      const char *r = strmap_get(&rename, fn->output[i]);
      if (!r && fn->output[i][0]) {
        r = prefixed(im, prefix, fn->output[i]);
        strmap_put(&rename, fn->output[i], (void *)r);
      }
      c->output[i] = (char *)(r ? r : "");
    }
    /* attribute references take the caller's value under the callee's name */
    c->attribute = own(im, sw_xcalloc(fn->n_attribute + 1, sizeof *c->attribute));
    c->n_attribute = 0;
    for (size_t i = 0; i < fn->n_attribute; i++) {
      const Onnx__AttributeProto *a = fn->attribute[i];
      if (a->ref_attr_name && a->ref_attr_name[0]) {
        const Onnx__AttributeProto *src = onnx_attr(n, a->ref_attr_name);
        if (!src) continue;
        Onnx__AttributeProto *cp = own(im, sw_xmalloc(sizeof *cp));
        *cp = *src;
        cp->name = a->name;
        c->attribute[c->n_attribute++] = cp;
      } else {
        c->attribute[c->n_attribute++] = (Onnx__AttributeProto *)a;
      }
    }
    rc = flatten_node(im, c, depth + 1, cap, counter);
  }
  strmap_free(&rename);
  return rc;
}

static int node_supported(const Onnx__NodeProto *n) {
  if (!is_default_domain(n->domain)) return 0;
  return ir_op_find(n->op_type) || fold_known(n->op_type) || strcmp(n->op_type, "Constant") == 0;
}

/* Lists every unsupported operator at once, with counts and node names. */
static int check_supported(imp *im) {
  typedef struct { const char *op, *domain; int count; const char *names[3]; } entry;
  entry *u = NULL;
  int nu = 0;
  for (int i = 0; i < im->n_nodes; i++) {
    const Onnx__NodeProto *n = im->nodes[i];
    if (!n->op_type || !n->op_type[0]) {
      free(u);
      return sw_fail(im->e, SW_EINPUT, "node '%s' has no operator type", node_label(n));
    }
    for (size_t a = 0; a < n->n_attribute; a++)
      for (size_t b = 0; b < a; b++)
        if (n->attribute[a]->name && n->attribute[b]->name && strcmp(n->attribute[a]->name, n->attribute[b]->name) == 0) {
          free(u);
          sw_fail(im->e, SW_EINPUT, "node '%s' (%s) has attribute '%s' twice (duplicate)", node_label(n), n->op_type, n->attribute[a]->name);
          return sw_hint(im->e, "the model file is invalid; export it again");
        }
    if (node_supported(n)) continue;
    int k = 0;
    while (k < nu && !(strcmp(u[k].op, n->op_type) == 0 && strcmp(u[k].domain, n->domain ? n->domain : "") == 0)) k++;
    if (k == nu) {
      u = sw_xrealloc(u, sizeof *u * (size_t)(nu + 1));
      memset(&u[nu], 0, sizeof *u);
      u[nu].op = n->op_type;
      u[nu].domain = n->domain ? n->domain : "";
      nu++;
    }
    if (u[k].count < 3) u[k].names[u[k].count] = node_label(n);
    u[k].count++;
  }
  if (!nu) return SW_OK;
  char msg[900];
  size_t o = 0;
  o += (size_t)snprintf(msg + o, sizeof msg - o, "unsupported operator%s: ", nu > 1 ? "s" : "");
  for (int k = 0; k < nu && o < sizeof msg; k++) {
    o += (size_t)snprintf(msg + o, sizeof msg - o, "%s%s%s%s (%d node%s: ", k ? "; " : "", u[k].domain[0] ? u[k].domain : "",
                          u[k].domain[0] ? "::" : "", u[k].op, u[k].count, u[k].count > 1 ? "s" : "");
    for (int j = 0; j < u[k].count && j < 3 && o < sizeof msg; j++)
      o += (size_t)snprintf(msg + o, sizeof msg - o, "%s%s", j ? ", " : "", u[k].names[j]);
    if (o < sizeof msg) o += (size_t)snprintf(msg + o, sizeof msg - o, "%s)", u[k].count > 3 ? ", ..." : "");
  }
  free(u);
  sw_fail(im->e, SW_EINPUT, "%s", msg);
  int n_ops;
  const ir_op_def *ops = ir_op_table(&n_ops);
  char list[600];
  size_t l = 0;
  for (int i = 0; i < n_ops && l < sizeof list; i++) l += (size_t)snprintf(list + l, sizeof list - l, "%s%s", i ? ", " : "", ops[i].name);
  return sw_hint(im->e, "swatc runs: %s (plus shape arithmetic folded at import); re-export the model without the others", list);
}

/* Kahn's algorithm over the flat node list. */
static int toposort(imp *im) {
  const Onnx__GraphProto *gp = im->m->graph;
  int n = im->n_nodes;
  strmap producer; /* value name → node index + 1 */
  strmap_init(&producer);
  int rc = SW_OK;
  int *indeg = sw_xcalloc((size_t)n + 1, sizeof *indeg), *order = sw_xcalloc((size_t)n + 1, sizeof *order);
  strmap defined;
  strmap_init(&defined);
  for (size_t i = 0; i < gp->n_input; i++)
    if (gp->input[i]->name) strmap_put(&defined, gp->input[i]->name, (void *)1);
  for (size_t i = 0; i < gp->n_initializer; i++)
    if (gp->initializer[i]->name) strmap_put(&defined, gp->initializer[i]->name, (void *)1);
  for (size_t i = 0; i < gp->n_sparse_initializer; i++)
    if (gp->sparse_initializer[i]->values && gp->sparse_initializer[i]->values->name)
      strmap_put(&defined, gp->sparse_initializer[i]->values->name, (void *)1);
  for (int i = 0; i < n && !rc; i++)
    for (size_t k = 0; k < im->nodes[i]->n_output; k++) {
      const char *o = im->nodes[i]->output[k];
      if (!o || !o[0]) continue;
      if (strmap_get(&producer, o) || strmap_get(&defined, o)) {
        rc = sw_fail(im->e, SW_EINPUT, "value '%s' is assigned more than once (by node '%s' and earlier)", o, node_label(im->nodes[i]));
        sw_hint(im->e, "the graph is not in single static assignment form; the model is invalid");
        break;
      }
      strmap_put(&producer, o, (void *)(intptr_t)(i + 1));
    }
  /* edges: count inputs produced by nodes */
  for (int i = 0; i < n && !rc; i++)
    for (size_t k = 0; k < im->nodes[i]->n_input; k++) {
      const char *s = im->nodes[i]->input[k];
      if (!s || !s[0]) continue;
      if (strmap_get(&producer, s)) indeg[i]++;
      else if (!strmap_get(&defined, s)) {
        rc = sw_fail(im->e, SW_EINPUT, "node '%s' (%s) reads '%s', which is not defined by any node, initializer or graph input",
                     node_label(im->nodes[i]), im->nodes[i]->op_type, s);
        sw_hint(im->e, "the model is incomplete or corrupt; export it again");
        break;
      }
    }
  if (!rc) {
    /* consumers lists via a simple O(E) scan per released node would be O(n^2); build adjacency */
    int *head = sw_xcalloc((size_t)n + 1, sizeof *head), *next = NULL, *to = NULL, ne = 0, cap = 0;
    for (int i = 0; i < n; i++) head[i] = -1;
    for (int i = 0; i < n; i++)
      for (size_t k = 0; k < im->nodes[i]->n_input; k++) {
        const char *s = im->nodes[i]->input[k];
        intptr_t p = s && s[0] ? (intptr_t)strmap_get(&producer, s) : 0;
        if (!p) continue;
        if (ne == cap) {
          cap = cap ? 2 * cap : 256;
          next = sw_xrealloc(next, sizeof *next * (size_t)cap);
          to = sw_xrealloc(to, sizeof *to * (size_t)cap);
        }
        to[ne] = i;
        next[ne] = head[p - 1];
        head[p - 1] = ne++;
      }
    int qh = 0, qt = 0;
    for (int i = 0; i < n; i++)
      if (!indeg[i]) order[qt++] = i;
    while (qh < qt) {
      int i = order[qh++];
      for (int ed = head[i]; ed >= 0; ed = next[ed])
        if (--indeg[to[ed]] == 0) order[qt++] = to[ed];
    }
    if (qt < n) {
      int stuck = 0;
      while (stuck < n && !indeg[stuck]) stuck++;
      rc = sw_fail(im->e, SW_EINPUT, "the graph has a cycle (through node '%s')", node_label(im->nodes[stuck]));
      sw_hint(im->e, "ONNX graphs must be acyclic; the model is invalid");
    } else {
      const Onnx__NodeProto **sorted = sw_xmalloc(sizeof *sorted * (size_t)(n + 1));
      for (int i = 0; i < n; i++) sorted[i] = im->nodes[order[i]];
      free(im->nodes);
      im->nodes = sorted;
    }
    free(head);
    free(next);
    free(to);
  }
  free(indeg);
  free(order);
  strmap_free(&producer);
  strmap_free(&defined);
  return rc;
}

static int load_initializers(imp *im) {
  const Onnx__GraphProto *gp = im->m->graph;
  for (size_t i = 0; i < gp->n_initializer + gp->n_sparse_initializer; i++) {
    int sparse = i >= gp->n_initializer;
    const Onnx__TensorProto *t = sparse ? NULL : gp->initializer[i];
    const Onnx__SparseTensorProto *s = sparse ? gp->sparse_initializer[i - gp->n_initializer] : NULL;
    const char *name = sparse ? (s->values ? s->values->name : NULL) : t->name;
    if (!name || !name[0]) {
      sw_fail(im->e, SW_EINPUT, "an initializer has no name");
      return sw_hint(im->e, "the model file is corrupt; export it again");
    }
    if (ival_get(im, name)) {
      sw_fail(im->e, SW_EINPUT, "duplicate initializer: two initializers are named '%s'", name);
      return sw_hint(im->e, "the model file is corrupt; export it again");
    }
    tensor_data d;
    if (sparse ? tensor_from_sparse(s, im->dir, &d, im->e) : tensor_from_proto(t, im->dir, &d, im->e)) return im->e->code;
    ival *v = ival_new(im, name);
    v->is_const = 1;
    v->from_init = 1;
    v->c = d;
  }
  return SW_OK;
}

static int value_type(imp *im, const Onnx__ValueInfoProto *vi, ir_dtype *t, ir_shape *s, const char **dparam0, int *sym0, int what_input) {
  const char *name = vi->name;
  const Onnx__TypeProto *tp = vi->type;
  if (!tp || tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !tp->tensor_type) {
    sw_fail(im->e, SW_EINPUT, "unsupported: %s '%s' is not a tensor (a sequence, map or optional, or it has no type)", what_input ? "input" : "output", name);
    return sw_hint(im->e, "swatc trains on tensor inputs only");
  }
  const Onnx__TypeProto__Tensor *tt = tp->tensor_type;
  *t = onnx_dtype(tt->has_elem_type ? tt->elem_type : 0);
  if (*t == IR_UNDEF) {
    sw_fail(im->e, SW_EINPUT, "%s '%s' has unsupported element type %s", what_input ? "input" : "output", name,
            onnx_dtype_name(tt->has_elem_type ? tt->elem_type : 0));
    return sw_hint(im->e, "swatc reads numeric tensors (float, integer, bool)");
  }
  *sym0 = 0;
  *dparam0 = NULL;
  if (!tt->shape) {
    s->rank = -1;
    return SW_OK;
  }
  if (tt->shape->n_dim > IR_MAX_RANK) {
    sw_fail(im->e, SW_EINPUT, "%s '%s' has rank %zu; swatc supports up to %d", what_input ? "input" : "output", name, tt->shape->n_dim, IR_MAX_RANK);
    return sw_hint(im->e, "this is not a CNN/MLP input");
  }
  s->rank = (int)tt->shape->n_dim;
  for (int i = 0; i < s->rank; i++) {
    const Onnx__TensorShapeProto__Dimension *d = tt->shape->dim[i];
    if (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE) {
      if (d->dim_value < 0) {
        sw_fail(im->e, SW_EINPUT, "%s '%s' has a negative dimension %lld", what_input ? "input" : "output", name, (long long)d->dim_value);
        return sw_hint(im->e, "the model file is corrupt; export it again");
      }
      if (d->dim_value > ((int64_t)1 << 40)) {
        sw_fail(im->e, SW_EINPUT, "%s '%s' has a huge dimension %lld", what_input ? "input" : "output", name, (long long)d->dim_value);
        return sw_hint(im->e, "the model file is corrupt; export it again");
      }
      s->d[i] = d->dim_value;
    } else {
      s->d[i] = IR_N; /* symbolic; only dimension 0 may stay so (checked by the caller) */
      if (i == 0) {
        *sym0 = 1;
        *dparam0 = d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM ? d->dim_param : NULL;
      }
    }
  }
  return SW_OK;
}

static int import_inputs(imp *im) {
  const Onnx__GraphProto *gp = im->m->graph;
  int first = 1;
  for (size_t i = 0; i < gp->n_input; i++) {
    const Onnx__ValueInfoProto *vi = gp->input[i];
    if (!vi->name || !vi->name[0]) {
      sw_fail(im->e, SW_EINPUT, "graph input %zu has no name", i);
      return sw_hint(im->e, "the model file is corrupt; export it again");
    }
    ival *known = ival_get(im, vi->name);
    if (known && known->v) {
      sw_fail(im->e, SW_EINPUT, "duplicate graph input: '%s' is listed twice", vi->name);
      return sw_hint(im->e, "the model file is invalid; export it again");
    }
    if (known) continue; /* an initializer (IR < 4 lists them as inputs too) */
    const importer_const *bound = NULL;
    for (int k = 0; im->opts && k < im->opts->n_consts; k++)
      if (strcmp(im->opts->consts[k].name, vi->name) == 0) bound = &im->opts->consts[k];
    if (bound) {
      ir_dtype dt;
      ir_shape ds;
      const char *dp0;
      int sym;
      if (value_type(im, vi, &dt, &ds, &dp0, &sym, 1)) return im->e->code;
      if (dt != bound->dtype) { /* the element type must agree; declared shapes of test models are not always right */
        char a[96], b[96];
        sw_fail(im->e, SW_EINPUT, "the constant given for input '%s' is %s%s, but the model declares element type %s%s", vi->name,
                ir_dtype_name(bound->dtype), ir_shape_str(&bound->shape, a, sizeof a), ir_dtype_name(dt),
                ds.rank >= 0 ? ir_shape_str(&ds, b, sizeof b) : "[?]");
        return sw_hint(im->e, "give a tensor of the declared element type");
      }
      ival *c = ival_new(im, vi->name);
      c->is_const = 1;
      c->c.dtype = bound->dtype;
      c->c.shape = bound->shape;
      c->c.nbytes = (size_t)ir_shape_numel(&bound->shape) * ir_dtype_size(bound->dtype);
      c->c.data = sw_xmalloc(c->c.nbytes ? c->c.nbytes : 1);
      if (c->c.nbytes) memcpy(c->c.data, bound->data, c->c.nbytes);
      continue;
    }
    ir_dtype t;
    ir_shape s;
    const char *dp;
    int sym0;
    if (value_type(im, vi, &t, &s, &dp, &sym0, 1)) return im->e->code;
    if (s.rank < 0) {
      sw_fail(im->e, SW_EINPUT, "input '%s' has no shape", vi->name);
      return sw_hint(im->e, "export with a concrete example input so that the input shape is recorded");
    }
    for (int d = 1; d < s.rank; d++)
      if (s.d[d] == IR_N) {
        sw_fail(im->e, SW_EINPUT, "unsupported: input '%s' has a dynamic dimension %d; only the batch dimension (0) may be dynamic", vi->name, d);
        return sw_hint(im->e, "export with fixed image sizes (dynamic_axes only on dimension 0)");
      }
    if (first && s.rank > 0) {
      first = 0;
      im->export_batch = sym0 ? 0 : s.d[0];
      im->batch_param = dp;
    }
    if (ir_shape_numel_at(&s, 1) < 0 || ir_shape_numel_at(&s, 1) > ((int64_t)1 << 40)) {
      char b[96];
      sw_fail(im->e, SW_EINPUT, "input '%s' of shape %s is too large (its element count overflows or exceeds 2^40)", vi->name,
              ir_shape_str(&s, b, sizeof b));
      return sw_hint(im->e, "the model's input shape is corrupt; export it again");
    }
    if (s.rank > 0) {
      int is_batch = sym0 ? (im->export_batch == 0 && (!dp || !im->batch_param || strcmp(dp, im->batch_param) == 0))
                          : (im->export_batch > 0 && s.d[0] == im->export_batch);
      if (im->batch == IMPORTER_BATCH_FREE && is_batch) s.d[0] = IR_N;
      else if (sym0) {
        if (im->export_batch == 0 && im->batch == IMPORTER_BATCH_STATIC) {
          sw_fail(im->e, SW_EINPUT, "input '%s' has a dynamic batch dimension; it cannot be imported with a static batch", vi->name);
          return sw_hint(im->e, "import it with a free batch (the default)");
        }
        if (!is_batch) {
          sw_fail(im->e, SW_EINPUT, "unsupported: input '%s' has its own dynamic dimension 0, different from the batch", vi->name);
          return sw_hint(im->e, "export with one batch dimension shared by all inputs");
        }
        s.d[0] = im->export_batch;
      }
    }
    ir_value *v = ir_value_new(im->g, vi->name, IR_VAL_INPUT, t, &s);
    SW_ASSERT(v);
    ir_graph_add_input(im->g, v);
    ival_new(im, vi->name)->v = v;
  }
  return SW_OK;
}

static int import_outputs(imp *im) {
  const Onnx__GraphProto *gp = im->m->graph;
  if (gp->n_output == 0) {
    sw_fail(im->e, SW_EINPUT, "the graph has no outputs");
    return sw_hint(im->e, "the model is incomplete; export it again");
  }
  for (size_t i = 0; i < gp->n_output; i++) {
    const Onnx__ValueInfoProto *vi = gp->output[i];
    ival *v = ival_get(im, vi->name);
    if (!v) {
      sw_fail(im->e, SW_EINPUT, "graph output '%s' is never produced", vi->name ? vi->name : "(unnamed)");
      return sw_hint(im->e, "the model is incomplete or corrupt; export it again");
    }
    ir_value *x = materialize(im, v, v->is_const ? IR_VAL_CONST : 0);
    if (x->is_output) continue;
    ir_graph_add_output(im->g, x);
    ir_dtype t;
    ir_shape s;
    const char *dp;
    int sym0;
    if (!vi->type) continue;
    if (value_type(im, vi, &t, &s, &dp, &sym0, 0)) return im->e->code;
    int ok = t == x->dtype && (s.rank < 0 || s.rank == x->shape.rank);
    for (int d = 0; ok && s.rank > 0 && d < s.rank; d++) {
      if (s.d[d] == IR_N || x->shape.d[d] == s.d[d]) continue;
      if (x->shape.d[d] == IR_N && (s.d[d] == im->export_batch)) continue;
      ok = 0;
    }
    if (!ok) {
      char a[96], b[96];
      sw_fail(im->e, SW_EINPUT, "output '%s': the model declares %s%s but its nodes compute %s%s", vi->name, ir_dtype_name(t),
              s.rank >= 0 ? ir_shape_str(&s, a, sizeof a) : "[?]", ir_dtype_name(x->dtype), ir_shape_str(&x->shape, b, sizeof b));
      return sw_hint(im->e, "the model's declared output shape disagrees with its graph; export it again");
    }
  }
  return SW_OK;
}

/* An eval-mode export folds BatchNormalization into the convolutions: no BN left, and the conv
 * weights are new tensors named onnx::Conv_* instead of the module's parameter names. */
static void warn_eval_export(imp *im) {
  int bn = 0, conv = 0, folded = 0;
  for (int i = 0; i < im->g->n_nodes; i++) {
    const ir_node *n = im->g->nodes[i];
    if (strcmp(n->op->name, "BatchNormalization") == 0) bn++;
    if (strcmp(n->op->name, "Conv") == 0) {
      conv++;
      if (n->in[1]->kind == IR_VAL_PARAM && strncmp(n->in[1]->name, "onnx::Conv_", 11) == 0 && n->n_in > 2 && n->in[2]) folded++;
    }
  }
  if (!bn && conv && folded * 2 >= conv) {
    sw_warn("the model looks like an eval-mode export: BatchNormalization was folded into the convolutions "
            "(%d of %d conv weights are onnx::Conv_* tensors). Training it works, but without BatchNormalization; "
            "export the model in training mode (torch.onnx.export(..., training=torch.onnx.TrainingMode.TRAINING, "
            "do_constant_folding=False)) to train the network as defined",
            folded, conv);
    ir_graph_note(im->g, "eval-mode export: BatchNormalization was folded into %d conv layers", folded);
  }
}

static void imp_free(imp *im) {
  for (int i = 0; i < im->n_ivals; i++) {
    if (!im->ivals[i]->borrowed) tensor_data_free(&im->ivals[i]->c);
    free(im->ivals[i]);
  }
  free(im->ivals);
  strmap_free(&im->vals);
  free(im->nodes);
  for (int i = 0; i < im->n_owned; i++) free(im->owned[i]);
  free(im->owned);
}

static int import_once(const Onnx__ModelProto *m, const char *dir, const importer_opts *opts, importer_batch batch, ir_graph **out,
                       int64_t *export_batch, sw_err *e) {
  imp im;
  memset(&im, 0, sizeof im);
  im.opts = opts;
  im.m = m;
  im.dir = dir;
  im.e = e;
  im.batch = batch;
  strmap_init(&im.vals);
  const Onnx__GraphProto *gp = m->graph;
  im.g = ir_graph_new(gp->name);
  int cap = 0, counter = 0, rc;
  if ((rc = check_versions(&im))) goto fail;
  im.g->opset = im.opset;
  for (size_t i = 0; i < gp->n_node && !rc; i++) {
    if (!gp->node[i]->op_type) {
      rc = sw_fail(e, SW_EINPUT, "node %zu has no operator type", i);
      goto fail;
    }
    rc = flatten_node(&im, gp->node[i], 0, &cap, &counter);
  }
  if (rc || (rc = check_supported(&im)) || (rc = toposort(&im))) goto fail;
  if ((rc = load_initializers(&im)) || (rc = import_inputs(&im))) goto fail;
  *export_batch = im.export_batch;
  im.g->export_batch = im.export_batch;
  im.g->batch_free = batch == IMPORTER_BATCH_FREE && im.g->n_inputs > 0;
  if (im.g->batch_free) {
    if (im.export_batch)
      ir_graph_note(im.g, "batch: dimension 0 of the inputs is N (the export used batch %lld)", (long long)im.export_batch);
    else
      ir_graph_note(im.g, "batch: dimension 0 of the inputs is N (the export used a dynamic batch)");
  }
  for (int i = 0; i < im.n_nodes; i++)
    if ((rc = import_node(&im, im.nodes[i]))) goto fail;
  if ((rc = import_outputs(&im))) goto fail;
  warn_eval_export(&im);
  if ((rc = ir_verify(im.g, e))) goto fail;
  imp_free(&im);
  *out = im.g;
  return SW_OK;
fail:
  *export_batch = im.export_batch;
  imp_free(&im);
  ir_graph_free(im.g);
  return rc ? rc : e->code;
}

int importer_load_bytes(const void *bytes, size_t n, const char *name, const char *dir, const importer_opts *opts, ir_graph **out,
                        sw_err *e) {
  *out = NULL;
  importer_batch mode = opts ? opts->batch : IMPORTER_BATCH_AUTO;
  Onnx__ModelProto *m;
  if (onnx_parse_model(bytes, n, name, &m, e)) return e->code;
  int64_t export_batch = 0;
  int rc = import_once(m, dir, opts, mode == IMPORTER_BATCH_STATIC ? IMPORTER_BATCH_STATIC : IMPORTER_BATCH_FREE, out, &export_batch, e);
  if (rc && mode == IMPORTER_BATCH_AUTO && export_batch > 0) {
    /* Some graphs compute with their batch size (e.g. reshape it into another dimension): keep it static. */
    sw_err first = *e;
    sw_err_clear(e);
    rc = import_once(m, dir, opts, IMPORTER_BATCH_STATIC, out, &export_batch, e);
    if (!rc) {
      sw_warn("the batch dimension of '%s' cannot be made free (%s); imported with the export's batch size %lld", name, first.msg,
              (long long)export_batch);
      ir_graph_note(*out, "batch: static %lld (a free batch failed: %s)", (long long)export_batch, first.msg);
    }
  }
  if (rc && !e->hint[0])
    sw_hint(e, "the model does not follow the ONNX specification: export it again (torch.onnx.export) and check it with onnx.checker.check_model");
  onnx__model_proto__free_unpacked(m, NULL);
  return rc;
}

int importer_load(const char *path, const importer_opts *opts, ir_graph **out, sw_err *e) {
  *out = NULL;
  unsigned char *buf;
  size_t n;
  if (onnx_read_file(path, &buf, &n, e)) return e->code;
  char *tmp = sw_xstrdup(path);
  int rc = importer_load_bytes(buf, n, path, dirname(tmp), opts, out, e);
  free(tmp);
  free(buf);
  return rc;
}

int importer_read_tensor(const char *path, importer_tensor *t, sw_err *e) {
  memset(t, 0, sizeof *t);
  FILE *f = fopen(path, "rb");
  if (!f) {
    sw_fail(e, SW_EINPUT, "cannot open tensor file '%s'", path);
    return sw_hint(e, "check the path");
  }
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  if (n < 0 || n > IMPORTER_MAX_FILE) {
    fclose(f);
    return sw_fail(e, SW_EINPUT, "tensor file '%s' has an unusable size", path);
  }
  unsigned char *buf = sw_xmalloc((size_t)n + 1);
  size_t got = fread(buf, 1, (size_t)n, f);
  fclose(f);
  Onnx__TensorProto *tp = got == (size_t)n ? onnx__tensor_proto__unpack(NULL, (size_t)n, buf) : NULL;
  free(buf);
  if (!tp) {
    sw_fail(e, SW_EINPUT, "'%s' is not a serialized ONNX TensorProto", path);
    return sw_hint(e, "the file is truncated or of another kind");
  }
  char *tmp = sw_xstrdup(path), *slash = strrchr(tmp, '/');
  if (slash) *slash = 0;
  tensor_data d;
  int rc = tensor_from_proto(tp, slash ? tmp : ".", &d, e);
  free(tmp);
  if (!rc) {
    snprintf(t->name, sizeof t->name, "%s", tp->name ? tp->name : "");
    t->dtype = d.dtype;
    t->shape = d.shape;
    t->data = d.data;
    t->nbytes = d.nbytes;
  }
  onnx__tensor_proto__free_unpacked(tp, NULL);
  return rc;
}
