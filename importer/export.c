/* Trained weights + the source ONNX model → an inference ONNX model (see export.h).
 *
 * The source model is unpacked with protobuf-c and a second ModelProto is assembled beside it: its
 * arrays are new, but unchanged messages (nodes, attributes, tensors) are shared with the source,
 * and trained tensors point straight at the caller's floats (little-endian hosts). Everything the
 * exporter allocates is recorded in one list and freed after packing; the source is freed last.
 *
 * Rewrites, in order: Dropout removed (its output renamed to its input everywhere; an Identity
 * keeps the name when the output is a graph output); BatchNormalization reduced to output Y and
 * training_mode dropped; loss nodes removed (their input becomes the output if nothing else is);
 * dead nodes removed from the graph outputs backwards, with the initializers and graph inputs only
 * they used; dimension 0 of graph inputs and outputs made "N", and a Reshape target that baked in
 * a static export batch given back to the batch; value_info and training_info dropped. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "importer/export.h"
#include "importer/onnx_internal.h"
#include "util/strmap.h"

#ifndef SWATC_VERSION
#error "SWATC_VERSION must be defined by the build (meson.build passes the project version)"
#endif

#define BATCH_PARAM "N"
#define MAX_NUMEL ((int64_t)1 << 40)
#define ONNX_FLOAT 1
#define ONNX_INT64 7
#define SPARSE_MIN_IR 6 /* SparseTensorProto in graph.sparse_initializer came with IR version 6 */

typedef struct ex {
  const export_opts *o;
  const Onnx__ModelProto *src;
  const char *dir;
  sw_err *e;
  int opset;
  void **owned; /* every allocation of the output model, freed after packing */
  int n_owned, cap_owned;
  strmap uses_before; /* name -> 1: read by a source node (or a subgraph) or a graph output */
  strmap consumers;   /* name -> number of source node inputs reading it */
  strmap rename;      /* removed Dropout's output -> its input */
  strmap dropped;     /* outputs of removed parts (loss outputs, BN statistics, Dropout masks) */
  strmap needed;      /* names the output model reads */
  strmap sparse;      /* names to write as sparse_initializer */
  strmap init_names;  /* initializer and sparse_initializer names of the source */
  int wrote_sparse;
} ex;

static const char *str(const char *s) { return s ? s : ""; }
static int is_default_domain(const char *d) { return !d || !d[0] || strcmp(d, "ai.onnx") == 0; }
static int is_op(const Onnx__NodeProto *n, const char *op) { return is_default_domain(n->domain) && strcmp(str(n->op_type), op) == 0; }
static const char *node_label(const Onnx__NodeProto *n) {
  return n->name && n->name[0] ? n->name : (n->n_output && n->output[0][0] ? n->output[0] : "(unnamed)");
}

static void *ex_own(ex *x, void *p) {
  if (x->n_owned == x->cap_owned) {
    x->cap_owned = x->cap_owned ? 2 * x->cap_owned : 256;
    x->owned = sw_xrealloc(x->owned, sizeof *x->owned * (size_t)x->cap_owned);
  }
  x->owned[x->n_owned++] = p;
  return p;
}

/* Bookkeeping allocation (sized by the model's structure, not its tensor data). */
static void *ex_alloc(ex *x, size_t n) { return ex_own(x, sw_xcalloc(1, n ? n : 1)); }

/* Allocation sized by tensor data: NULL with SW_ENOMEM set when it fails. */
static void *ex_data(ex *x, size_t n, const char *what) {
  void *p = malloc(n ? n : 1);
  if (!p) {
    sw_fail(x->e, SW_ENOMEM, "out of memory exporting %s (%zu bytes)", what, n);
    return NULL;
  }
  return ex_own(x, p);
}

static void *dup_msg(ex *x, const void *m, size_t size) {
  void *c = ex_alloc(x, size);
  memcpy(c, m, size);
  return c;
}

static void count_use(strmap *m, const char *name) {
  if (name && name[0]) strmap_put(m, name, (void *)((intptr_t)strmap_get(m, name) + 1));
}

/* Calls count_use on every name node n reads, including the names its subgraphs read. */
static void node_uses(const Onnx__NodeProto *n, strmap *m) {
  for (size_t i = 0; i < n->n_input; i++) count_use(m, n->input[i]);
  for (size_t a = 0; a < n->n_attribute; a++) {
    const Onnx__AttributeProto *at = n->attribute[a];
    for (size_t k = 0; k < at->n_graphs + (at->g ? 1 : 0); k++) {
      const Onnx__GraphProto *sg = k < at->n_graphs ? at->graphs[k] : at->g;
      for (size_t j = 0; j < sg->n_node; j++) node_uses(sg->node[j], m);
      for (size_t j = 0; j < sg->n_output; j++) count_use(m, sg->output[j]->name);
    }
  }
}

/* Number of elements described by dims, or -1 (with e set) if they are negative or absurd. */
static int64_t dims_numel(ex *x, const char *name, size_t n, const int64_t *d) {
  int64_t numel = 1;
  for (size_t i = 0; i < n; i++) {
    if (d[i] < 0 || (d[i] && numel > MAX_NUMEL / d[i])) {
      sw_fail(x->e, SW_EINPUT, "initializer '%s' has invalid dims (dimension %zu is %lld)", name, i, (long long)d[i]);
      sw_hint(x->e, "the source model is corrupt; export it again");
      return -1;
    }
    numel *= d[i];
  }
  return numel;
}

/* n elements of esz bytes as little-endian bytes: the data itself on little-endian hosts. */
static void *le_bytes(ex *x, const void *data, size_t n, size_t esz) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  unsigned char *out = ex_data(x, n * esz, "a tensor");
  if (!out) return NULL;
  for (size_t i = 0; i < n; i++)
    for (size_t b = 0; b < esz; b++) out[i * esz + b] = ((const unsigned char *)data)[i * esz + esz - 1 - b];
  return out;
#else
  (void)x;
  (void)n;
  (void)esz;
  return (void *)data;
#endif
}

/* A dense TensorProto holding `data` (numel elements of ONNX type `type`) as raw_data. */
static Onnx__TensorProto *tensor_new(ex *x, const char *name, int32_t type, size_t n_dims, int64_t *dims, const void *data,
                                     size_t numel, size_t esz) {
  Onnx__TensorProto *t = ex_alloc(x, sizeof *t);
  onnx__tensor_proto__init(t);
  t->name = (char *)name;
  t->has_data_type = 1;
  t->data_type = type;
  t->n_dims = n_dims;
  t->dims = dims;
  t->has_raw_data = 1;
  t->raw_data.len = numel * esz;
  static uint8_t empty;
  t->raw_data.data = numel ? le_bytes(x, data, numel, esz) : &empty;
  if (numel && !t->raw_data.data) return NULL;
  return t;
}

/* The float data of source tensor t (decoded from any storage form). NULL with e set on failure. */
static const float *source_floats(ex *x, const Onnx__TensorProto *t, int64_t numel) {
  tensor_data d;
  if (tensor_from_proto(t, x->dir, &d, x->e)) return NULL;
  if (d.dtype != IR_F32 || tensor_numel(&d) != numel) {
    tensor_data_free(&d);
    sw_fail(x->e, SW_EINPUT, "initializer '%s' is not a float tensor", str(t->name));
    sw_hint(x->e, "only float32 tensors can be stored as sparse_initializer");
    return NULL;
  }
  return ex_own(x, d.data);
}

/* SparseTensorProto for the dense floats v: values as raw_data, the ascending linear indices of the
 * non-zero entries as int64_data. */
static Onnx__SparseTensorProto *sparse_new(ex *x, const char *name, size_t n_dims, int64_t *dims, const float *v, int64_t numel) {
  int64_t nnz = 0;
  for (int64_t i = 0; i < numel; i++) nnz += v[i] != 0.0f;
  float *vals = ex_data(x, (size_t)nnz * sizeof *vals, name);
  int64_t *idx = vals ? ex_data(x, (size_t)nnz * sizeof *idx, name) : NULL;
  if (!idx) return NULL;
  for (int64_t i = 0, k = 0; i < numel; i++)
    if (v[i] != 0.0f) {
      vals[k] = v[i];
      idx[k++] = i;
    }
  int64_t *nd = ex_alloc(x, sizeof *nd);
  *nd = nnz;
  Onnx__SparseTensorProto *s = ex_alloc(x, sizeof *s);
  onnx__sparse_tensor_proto__init(s);
  s->values = tensor_new(x, name, ONNX_FLOAT, 1, nd, vals, (size_t)nnz, sizeof *vals);
  /* indices as int64_data: packed varints take 1-5 bytes per index where raw_data takes 8 */
  s->indices = ex_alloc(x, sizeof *s->indices);
  onnx__tensor_proto__init(s->indices);
  s->indices->has_data_type = 1;
  s->indices->data_type = ONNX_INT64;
  s->indices->n_dims = 1;
  s->indices->dims = nd;
  s->indices->n_int64_data = (size_t)nnz;
  s->indices->int64_data = idx;
  if (!s->values || !s->indices) return NULL;
  s->n_dims = n_dims;
  s->dims = dims;
  x->wrote_sparse = 1;
  return s;
}

typedef struct out_tensors {
  Onnx__TensorProto **dense;
  size_t n_dense;
  Onnx__SparseTensorProto **sparse;
  size_t n_sparse;
} out_tensors;

/* Writes one source initializer (dense t or sparse s) into out: trained values from the lookup,
 * sparse or dense form as asked, external data inlined, anything else shared unchanged. */
static int convert_initializer(ex *x, const Onnx__TensorProto *t, const Onnx__SparseTensorProto *s, out_tensors *out) {
  const char *name = t ? str(t->name) : str(s->values->name);
  size_t n_dims = t ? t->n_dims : s->n_dims;
  int64_t *dims = t ? t->dims : s->dims;
  int32_t type = t ? t->data_type : s->values->data_type;
  int64_t numel = dims_numel(x, name, n_dims, dims);
  if (numel < 0) return x->e->code;
  const float *trained = type == ONNX_FLOAT ? x->o->lookup(x->o->lookup_ctx, name, numel) : NULL;
  int want_sparse = strmap_get(&x->sparse, name) != NULL;
  if (want_sparse && type != ONNX_FLOAT) {
    sw_fail(x->e, SW_EINPUT, "cannot store '%s' as sparse_initializer: it is a %s tensor, not float", name, onnx_dtype_name(type));
    return sw_hint(x->e, "list only float32 weights as sparse tensors");
  }
  int external = t ? t->has_data_location && t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL
                   : (s->values->has_data_location && s->values->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL) ||
                         (s->indices && s->indices->has_data_location &&
                          s->indices->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL);
  if (!trained && !external && !(t && want_sparse)) { /* unchanged: share the source message */
    if (t) out->dense[out->n_dense++] = (Onnx__TensorProto *)t;
    else out->sparse[out->n_sparse++] = (Onnx__SparseTensorProto *)s;
    return SW_OK;
  }
  if (want_sparse) {
    const float *v = trained;
    if (!v && t && !(v = source_floats(x, t, numel))) return x->e->code;
    if (!v) {
      tensor_data d;
      if (tensor_from_sparse(s, x->dir, &d, x->e)) return x->e->code;
      v = ex_own(x, d.data);
    }
    Onnx__SparseTensorProto *sp = sparse_new(x, name, n_dims, dims, v, numel);
    if (!sp) return x->e->code;
    out->sparse[out->n_sparse++] = sp;
    return SW_OK;
  }
  Onnx__TensorProto *d;
  if (trained) {
    d = tensor_new(x, name, ONNX_FLOAT, n_dims, dims, trained, (size_t)numel, sizeof(float));
  } else { /* external data or a sparse source written dense: decode and inline it */
    tensor_data td;
    if (t ? tensor_from_proto(t, x->dir, &td, x->e) : tensor_from_sparse(s, x->dir, &td, x->e)) return x->e->code;
    ex_own(x, td.data);
    d = tensor_new(x, name, type, n_dims, dims, td.data, (size_t)tensor_numel(&td), ir_dtype_size(td.dtype));
    if (d && t) d->doc_string = t->doc_string;
  }
  if (!d) return x->e->code;
  out->dense[out->n_dense++] = d;
  return SW_OK;
}

/* The name a removed Dropout's output now goes by. */
static const char *resolve(ex *x, const char *name) {
  for (int hops = 0; hops < 1 << 20; hops++) {
    const char *r = strmap_get(&x->rename, name);
    if (!r) return name;
    name = r;
  }
  return name;
}

/* A copy of vi whose dimension 0 is the symbolic batch (vi itself if it has no shape). */
static Onnx__ValueInfoProto *with_batch_n(ex *x, const Onnx__ValueInfoProto *vi) {
  const Onnx__TypeProto *tp = vi->type;
  if (!tp || tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !tp->tensor_type || !tp->tensor_type->shape ||
      tp->tensor_type->shape->n_dim == 0)
    return (Onnx__ValueInfoProto *)vi;
  const Onnx__TensorShapeProto *sh = tp->tensor_type->shape;
  Onnx__TensorShapeProto__Dimension *d0 = dup_msg(x, sh->dim[0], sizeof *d0);
  d0->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
  d0->dim_param = (char *)BATCH_PARAM;
  Onnx__TensorShapeProto *nsh = dup_msg(x, sh, sizeof *nsh);
  nsh->dim = ex_alloc(x, sizeof *nsh->dim * sh->n_dim);
  memcpy(nsh->dim, sh->dim, sizeof *nsh->dim * sh->n_dim);
  nsh->dim[0] = d0;
  Onnx__TypeProto__Tensor *tt = dup_msg(x, tp->tensor_type, sizeof *tt);
  tt->shape = nsh;
  Onnx__TypeProto *ntp = dup_msg(x, tp, sizeof *ntp);
  ntp->tensor_type = tt;
  Onnx__ValueInfoProto *nvi = dup_msg(x, vi, sizeof *nvi);
  nvi->type = ntp;
  return nvi;
}

/* A float output named `name` for a graph whose only outputs were the loss's (shape from value_info if known). */
static Onnx__ValueInfoProto *scores_output(ex *x, const char *name) {
  const Onnx__GraphProto *g = x->src->graph;
  for (size_t i = 0; i < g->n_value_info; i++)
    if (strcmp(str(g->value_info[i]->name), name) == 0) return with_batch_n(x, g->value_info[i]);
  Onnx__TypeProto__Tensor *tt = ex_alloc(x, sizeof *tt);
  onnx__type_proto__tensor__init(tt);
  tt->has_elem_type = 1;
  tt->elem_type = ONNX_FLOAT;
  Onnx__TypeProto *tp = ex_alloc(x, sizeof *tp);
  onnx__type_proto__init(tp);
  tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
  tp->tensor_type = tt;
  Onnx__ValueInfoProto *vi = ex_alloc(x, sizeof *vi);
  onnx__value_info_proto__init(vi);
  vi->name = (char *)name;
  vi->type = tp;
  return vi;
}

/* The static batch of the first graph input (a dim_value), or 0. */
static int64_t static_batch(ex *x) {
  const Onnx__GraphProto *g = x->src->graph;
  for (size_t i = 0; i < g->n_input; i++) {
    const Onnx__ValueInfoProto *vi = g->input[i];
    if (strmap_get(&x->init_names, str(vi->name))) continue;
    const Onnx__TypeProto *tp = vi->type;
    if (!tp || tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !tp->tensor_type || !tp->tensor_type->shape ||
        !tp->tensor_type->shape->n_dim)
      return 0;
    const Onnx__TensorShapeProto__Dimension *d = tp->tensor_type->shape->dim[0];
    return d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE ? d->dim_value : 0;
  }
  return 0;
}

/* An int64 copy of `t` with element 0 set to `v`, or NULL if t is not a rank-1 int64 tensor whose
 * element 0 is `batch` (e is left clear then). */
static Onnx__TensorProto *batch_target(ex *x, const Onnx__TensorProto *t, int64_t batch, int64_t v) {
  if (!t || !t->has_data_type || t->data_type != ONNX_INT64 || t->n_dims != 1 || t->dims[0] < 1 || t->dims[0] > IR_MAX_RANK)
    return NULL;
  tensor_data d;
  sw_err e2 = {0};
  if (tensor_from_proto(t, x->dir, &d, &e2)) return NULL;
  int64_t *p = ex_own(x, d.data);
  if (p[0] != batch) return NULL;
  p[0] = v;
  Onnx__TensorProto *n = tensor_new(x, t->name, ONNX_INT64, 1, t->dims, p, (size_t)t->dims[0], sizeof *p);
  return n;
}

/* Static exports bake the batch into Reshape targets: where such a target (an int64 initializer or
 * Constant read only by Reshape nodes as their shape) starts with the export batch, it is rewritten
 * to -1 (or 0, copy the input's batch, when the target already has a -1). */
static void free_reshape_targets(ex *x, Onnx__NodeProto **nodes, size_t n_nodes, Onnx__TensorProto **inits, size_t n_inits) {
  int64_t batch = static_batch(x);
  if (batch <= 0 || x->opset < 5) return;
  strmap reshape_uses;
  strmap_init(&reshape_uses);
  for (size_t i = 0; i < n_nodes; i++)
    if (is_op(nodes[i], "Reshape") && nodes[i]->n_input > 1) {
      const Onnx__AttributeProto *a = onnx_attr(nodes[i], "allowzero");
      if (!a || a->i == 0) count_use(&reshape_uses, nodes[i]->input[1]); /* with allowzero, 0 means a zero dimension */
    }
  for (size_t i = 0; i < n_nodes + n_inits; i++) {
    const char *name = i < n_nodes ? (nodes[i]->n_output ? nodes[i]->output[0] : "") : str(inits[i - n_nodes]->name);
    intptr_t r = (intptr_t)strmap_get(&reshape_uses, name);
    if (!r || r != (intptr_t)strmap_get(&x->consumers, name)) continue;
    const Onnx__TensorProto *t = NULL;
    const Onnx__AttributeProto *va = NULL;
    if (i < n_nodes) {
      if (!is_op(nodes[i], "Constant") || !(va = onnx_attr(nodes[i], "value"))) continue;
      t = va->t;
    } else {
      t = inits[i - n_nodes];
    }
    int has_minus1 = 0;
    tensor_data d;
    sw_err e2 = {0};
    if (!t || tensor_from_proto(t, x->dir, &d, &e2)) continue;
    for (int64_t k = 0; d.dtype == IR_I64 && k < tensor_numel(&d); k++) has_minus1 |= ((int64_t *)d.data)[k] == -1;
    tensor_data_free(&d);
    Onnx__TensorProto *nt = batch_target(x, t, batch, has_minus1 ? 0 : -1);
    if (!nt) continue;
    if (i < n_nodes) {
      Onnx__NodeProto *c = dup_msg(x, nodes[i], sizeof *c);
      c->attribute = ex_alloc(x, sizeof *c->attribute * c->n_attribute);
      for (size_t k = 0; k < c->n_attribute; k++) {
        c->attribute[k] = nodes[i]->attribute[k];
        if (c->attribute[k] == va) {
          Onnx__AttributeProto *na = dup_msg(x, va, sizeof *na);
          na->t = nt;
          c->attribute[k] = na;
        }
      }
      nodes[i] = c;
    } else {
      inits[i - n_nodes] = nt;
    }
  }
  strmap_free(&reshape_uses);
}

/* Assembles the inference model in *m (arrays owned by x, messages shared with the source). */
static int build_model(ex *x, Onnx__ModelProto *m, Onnx__GraphProto *g) {
  const Onnx__ModelProto *src = x->src;
  const Onnx__GraphProto *sg = src->graph;
  x->opset = -1;
  for (size_t i = 0; i < src->n_opset_import; i++)
    if (is_default_domain(src->opset_import[i]->domain)) x->opset = (int)src->opset_import[i]->version;
  if (x->opset < 0) x->opset = 1;
  for (size_t i = 0; i < sg->n_initializer; i++) strmap_put(&x->init_names, str(sg->initializer[i]->name), (void *)1);
  for (size_t i = 0; i < sg->n_sparse_initializer; i++) {
    if (!sg->sparse_initializer[i]->values) {
      sw_fail(x->e, SW_EINPUT, "a sparse_initializer of the source model has no values");
      return sw_hint(x->e, "the source model is corrupt; export it again");
    }
    strmap_put(&x->init_names, str(sg->sparse_initializer[i]->values->name), (void *)1);
  }
  for (int i = 0; x->o->sparse_initializers && i < x->o->n_sparse; i++) {
    if (!strmap_get(&x->init_names, x->o->sparse_names[i])) {
      sw_fail(x->e, SW_EINPUT, "cannot store '%s' as sparse_initializer: the model has no initializer of that name", x->o->sparse_names[i]);
      return sw_hint(x->e, "sparse tensors must be the model's weights, named as in the ONNX file");
    }
    strmap_put(&x->sparse, x->o->sparse_names[i], (void *)1);
  }
  for (size_t i = 0; i < sg->n_node; i++) {
    node_uses(sg->node[i], &x->uses_before);
    node_uses(sg->node[i], &x->consumers);
  }
  for (size_t i = 0; i < sg->n_output; i++) count_use(&x->uses_before, sg->output[i]->name);
  strmap is_output;
  strmap_init(&is_output);
  for (size_t i = 0; i < sg->n_output; i++) strmap_put(&is_output, str(sg->output[i]->name), (void *)1);

  /* 1. nodes: Dropout, BatchNormalization, losses */
  Onnx__NodeProto **nodes = ex_alloc(x, sizeof *nodes * (sg->n_node + 1));
  unsigned char *copied = ex_alloc(x, sg->n_node + 1); /* nodes[i] is the exporter's own copy */
  size_t n_nodes = 0;
  const char *scores = NULL;
  int rc = SW_OK;
  for (size_t i = 0; i < sg->n_node && !rc; i++) {
    Onnx__NodeProto *n = sg->node[i];
    if (is_op(n, "Dropout") && n->n_input >= 1 && n->n_output >= 1 && n->input[0][0]) {
      if (n->n_output > 1 && n->output[1][0]) {
        if (strmap_get(&x->consumers, n->output[1])) {
          rc = sw_fail(x->e, SW_EINPUT, "node '%s' (Dropout): its mask '%s' is read by other nodes; an inference model has no mask",
                       node_label(n), n->output[1]);
          sw_hint(x->e, "export the model without using the Dropout mask");
          break;
        }
        strmap_put(&x->dropped, n->output[1], (void *)1);
      }
      if (strmap_get(&is_output, n->output[0])) { /* keep the output's name: Identity */
        Onnx__NodeProto *c = dup_msg(x, n, sizeof *c);
        c->op_type = (char *)"Identity";
        c->domain = NULL;
        c->n_input = 1;
        c->n_output = 1;
        c->n_attribute = 0;
        copied[n_nodes] = 1;
        nodes[n_nodes++] = c;
      } else if (n->output[0][0]) {
        strmap_put(&x->rename, n->output[0], n->input[0]);
      }
    } else if (is_op(n, "SoftmaxCrossEntropyLoss") || is_op(n, "NegativeLogLikelihoodLoss")) {
      for (size_t k = 0; k < n->n_output; k++) strmap_put(&x->dropped, n->output[k], (void *)1);
      if (n->n_input) scores = n->input[0];
    } else if (is_op(n, "BatchNormalization")) { /* output Y only, training_mode off */
      for (size_t k = 1; k < n->n_output && !rc; k++) {
        if (!n->output[k][0]) continue;
        if (strmap_get(&x->consumers, n->output[k])) {
          rc = sw_fail(x->e, SW_EINPUT, "node '%s' (BatchNormalization): its training output '%s' is read by other nodes",
                       node_label(n), n->output[k]);
          sw_hint(x->e, "an inference model computes only output Y of BatchNormalization; export the model without reading the statistics");
        }
        strmap_put(&x->dropped, n->output[k], (void *)1);
      }
      Onnx__NodeProto *c = dup_msg(x, n, sizeof *c);
      if (c->n_output > 1) c->n_output = 1;
      c->attribute = ex_alloc(x, sizeof *c->attribute * (n->n_attribute + 1));
      c->n_attribute = 0;
      for (size_t k = 0; k < n->n_attribute; k++)
        if (strcmp(str(n->attribute[k]->name), "training_mode") != 0) c->attribute[c->n_attribute++] = n->attribute[k];
      copied[n_nodes] = 1;
      nodes[n_nodes++] = c;
    } else {
      nodes[n_nodes++] = n;
    }
  }
  if (rc) goto done;
  /* inputs renamed past removed Dropouts */
  for (size_t i = 0; i < n_nodes; i++) {
    Onnx__NodeProto *n = nodes[i];
    int renamed = 0;
    for (size_t k = 0; k < n->n_input; k++) renamed |= resolve(x, n->input[k]) != n->input[k];
    if (!renamed) continue;
    Onnx__NodeProto *c = copied[i] ? n : dup_msg(x, n, sizeof *c);
    char **in = ex_alloc(x, sizeof *in * n->n_input);
    for (size_t k = 0; k < n->n_input; k++) in[k] = (char *)resolve(x, n->input[k]);
    c->input = in;
    nodes[i] = c;
  }

  /* 2. graph outputs */
  g->output = ex_alloc(x, sizeof *g->output * (sg->n_output + 1));
  g->n_output = 0;
  for (size_t i = 0; i < sg->n_output; i++)
    if (!strmap_get(&x->dropped, str(sg->output[i]->name))) g->output[g->n_output++] = with_batch_n(x, sg->output[i]);
  if (g->n_output == 0 && scores) g->output[g->n_output++] = scores_output(x, resolve(x, scores));
  if (g->n_output == 0) {
    rc = sw_fail(x->e, SW_EINPUT, "the model has no outputs left once its training outputs are removed");
    sw_hint(x->e, "the model must compute its class scores (logits) as a graph output");
    goto done;
  }

  /* 3. dead nodes: keep what the outputs need */
  for (size_t i = 0; i < g->n_output; i++) count_use(&x->needed, g->output[i]->name);
  unsigned char *live = ex_alloc(x, n_nodes + 1);
  for (int changed = 1; changed;) {
    changed = 0;
    for (size_t i = n_nodes; i-- > 0;) {
      if (live[i]) continue;
      for (size_t k = 0; k < nodes[i]->n_output && !live[i]; k++)
        live[i] = nodes[i]->output[k][0] && strmap_get(&x->needed, nodes[i]->output[k]);
      if (live[i]) {
        node_uses(nodes[i], &x->needed);
        changed = 1;
      }
    }
  }
  g->node = ex_alloc(x, sizeof *g->node * (n_nodes + 1));
  g->n_node = 0;
  for (size_t i = 0; i < n_nodes; i++)
    if (live[i]) g->node[g->n_node++] = nodes[i];

  /* 4. initializers (dropped when only removed nodes read them) */
  out_tensors ot = {.dense = ex_alloc(x, sizeof(void *) * (sg->n_initializer + sg->n_sparse_initializer + 1)),
                    .sparse = ex_alloc(x, sizeof(void *) * (sg->n_initializer + sg->n_sparse_initializer + 1))};
  strmap kept;
  strmap_init(&kept);
  for (size_t i = 0; i < sg->n_initializer + sg->n_sparse_initializer && !rc; i++) {
    const Onnx__TensorProto *t = i < sg->n_initializer ? sg->initializer[i] : NULL;
    const Onnx__SparseTensorProto *s = t ? NULL : sg->sparse_initializer[i - sg->n_initializer];
    const char *name = t ? str(t->name) : str(s->values->name);
    if (!strmap_get(&x->needed, name) && strmap_get(&x->uses_before, name)) continue;
    strmap_put(&kept, name, (void *)1);
    rc = convert_initializer(x, t, s, &ot);
  }
  if (!rc) free_reshape_targets(x, g->node, g->n_node, ot.dense, ot.n_dense);
  g->initializer = ot.dense;
  g->n_initializer = ot.n_dense;
  g->sparse_initializer = ot.sparse;
  g->n_sparse_initializer = ot.n_sparse;

  /* 5. graph inputs: initializers listed as inputs (IR < 4) stay as they are; the rest get batch N */
  g->input = ex_alloc(x, sizeof *g->input * (sg->n_input + 1));
  g->n_input = 0;
  for (size_t i = 0; i < sg->n_input && !rc; i++) {
    const Onnx__ValueInfoProto *vi = sg->input[i];
    const char *name = str(vi->name);
    if (strmap_get(&x->init_names, name)) {
      if (strmap_get(&kept, name)) g->input[g->n_input++] = (Onnx__ValueInfoProto *)vi;
    } else if (strmap_get(&x->needed, name) || !strmap_get(&x->uses_before, name)) {
      g->input[g->n_input++] = with_batch_n(x, vi);
    }
  }
  strmap_free(&kept);
  g->n_value_info = 0; /* shapes of intermediate values may carry the static batch: let readers infer them */
  g->value_info = NULL;

  /* 6. the model: metadata, producer */
  m->graph = g;
  m->n_training_info = 0;
  m->training_info = NULL;
  m->producer_name = (char *)"swatc";
  m->producer_version = (char *)SWATC_VERSION;
  if (x->wrote_sparse && m->has_ir_version && m->ir_version < SPARSE_MIN_IR) m->ir_version = SPARSE_MIN_IR;
  m->metadata_props = ex_alloc(x, sizeof *m->metadata_props * (src->n_metadata_props + (size_t)x->o->n_meta + 1));
  m->n_metadata_props = 0;
  for (size_t i = 0; i < src->n_metadata_props; i++) {
    int replaced = 0;
    for (int k = 0; k < x->o->n_meta && !replaced; k++) replaced = strcmp(str(src->metadata_props[i]->key), x->o->meta[k].key) == 0;
    if (!replaced) m->metadata_props[m->n_metadata_props++] = src->metadata_props[i];
  }
  for (int k = 0; k < x->o->n_meta; k++) {
    int later = 0; /* a key given twice: the last value wins */
    for (int j = k + 1; j < x->o->n_meta && !later; j++) later = strcmp(x->o->meta[j].key, x->o->meta[k].key) == 0;
    if (later) continue;
    Onnx__StringStringEntryProto *kv = ex_alloc(x, sizeof *kv);
    onnx__string_string_entry_proto__init(kv);
    kv->key = (char *)x->o->meta[k].key;
    kv->value = (char *)x->o->meta[k].value;
    m->metadata_props[m->n_metadata_props++] = kv;
  }
done:
  strmap_free(&is_output);
  return rc;
}

/* ---- writing ---- */

static int io_fail(sw_err *e, int err, const char *what, const char *path, const char *dir) {
  sw_fail(e, SW_EIO, "cannot write the model to '%s': %s %s", path, what, strerror(err));
  switch (err) {
    case ENOSPC:
    case EDQUOT: return sw_hint(e, "the disk is full (or over quota): free some space or write the model elsewhere");
    case EACCES:
    case EPERM: return sw_hint(e, "the folder '%s' is not writable: choose a folder you can write to", dir);
    case EROFS: return sw_hint(e, "the folder '%s' is on a read-only file system: write the model elsewhere", dir);
    case ENOENT: return sw_hint(e, "the folder '%s' does not exist: create it first (mkdir -p '%s')", dir, dir);
    default: return sw_hint(e, "check the output path and the disk");
  }
}

/* The process's umask without changing it (Linux /proc; 022 elsewhere). */
static mode_t current_umask(void) {
  mode_t m = 022;
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return m;
  char line[256];
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "Umask:", 6) == 0) {
      m = (mode_t)strtol(line + 6, NULL, 8);
      break;
    }
  fclose(f);
  return m;
}

/* Writes buf to a temporary file beside path, validates it with the importer, and renames it over path. */
static int write_atomic(const char *path, const void *buf, size_t len, sw_err *e) {
  char *tmpd = sw_xstrdup(path);
  char *dir = sw_xstrdup(dirname(tmpd));
  free(tmpd);
  size_t tl = strlen(path) + 16;
  char *tmp = sw_xmalloc(tl);
  snprintf(tmp, tl, "%s.tmp.XXXXXX", path);
  int fd = -1, rc = SW_OK, created = 0;
  struct stat st;
  if (stat(dir, &st) != 0) {
    rc = io_fail(e, errno, "its folder cannot be used:", path, dir);
    goto done;
  }
  if (!S_ISDIR(st.st_mode)) {
    rc = sw_fail(e, SW_EIO, "cannot write the model to '%s': '%s' is not a folder", path, dir);
    sw_hint(e, "give a path inside an existing folder");
    goto done;
  }
  if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
    rc = sw_fail(e, SW_EIO, "cannot write the model to '%s': it is a folder", path);
    sw_hint(e, "give a file name, e.g. '%s/model.onnx'", path);
    goto done;
  }
  fd = mkstemp(tmp);
  if (fd < 0) {
    rc = io_fail(e, errno, "creating a temporary file failed:", path, dir);
    goto done;
  }
  created = 1;
  if (fchmod(fd, 0666 & ~current_umask()) != 0) {
    rc = io_fail(e, errno, "setting the file mode failed:", path, dir);
    goto done;
  }
  for (size_t off = 0; off < len;) {
    ssize_t w = write(fd, (const char *)buf + off, len - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      rc = io_fail(e, w < 0 ? errno : ENOSPC, "writing failed:", path, dir);
      goto done;
    }
    off += (size_t)w;
  }
  if (fsync(fd) != 0) {
    rc = io_fail(e, errno, "flushing to disk failed:", path, dir);
    goto done;
  }
  int c = close(fd);
  fd = -1;
  if (c != 0) {
    rc = io_fail(e, errno, "closing the file failed:", path, dir);
    goto done;
  }
  /* the importer's own checks on what was written */
  ir_graph *g = NULL;
  sw_err ve = {0};
  if (importer_load(tmp, NULL, &g, &ve)) {
    rc = sw_fail(e, ve.code == SW_ENOMEM ? SW_ENOMEM : SW_EINPUT, "the exported model fails the importer's checks: %s", ve.msg);
    sw_hint(e, "the source model has a construct the exporter cannot rewrite (%s)", ve.hint[0] ? ve.hint : "see the message");
    goto done;
  }
  ir_graph_free(g);
  if (rename(tmp, path) != 0) {
    rc = io_fail(e, errno, "renaming the temporary file failed:", path, dir);
    goto done;
  }
  created = 0;
  int dfd = open(dir, O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) { /* make the rename durable; some file systems refuse to fsync a folder, which is harmless */
    if (fsync(dfd) != 0 && errno != EINVAL && errno != EBADF)
      sw_warn("the model was written to '%s', but syncing its folder failed: %s", path, strerror(errno));
    close(dfd);
  }
done:
  if (fd >= 0) close(fd);
  if (created) unlink(tmp);
  free(tmp);
  free(dir);
  return rc;
}

int exporter_write(const void *src, size_t n, const char *base_dir, const export_opts *o, const char *out_path, int64_t *bytes,
                   sw_err *e) {
  SW_ASSERT(o && o->lookup && out_path);
  SW_ASSERT(o->n_meta == 0 || o->meta);
  SW_ASSERT(!o->sparse_initializers || o->n_sparse == 0 || o->sparse_names);
  if (bytes) *bytes = 0;
  if (!src || n == 0) {
    sw_fail(e, SW_EINPUT, "cannot export: the source model is empty");
    return sw_hint(e, "pass the bytes of the ONNX file training started from");
  }
  if (!out_path[0]) {
    sw_fail(e, SW_EIO, "cannot export: the output path is empty");
    return sw_hint(e, "give the output file, e.g. -o model.sparse.onnx");
  }
  Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, n, src);
  if (!m || !m->graph) {
    if (m) onnx__model_proto__free_unpacked(m, NULL);
    sw_fail(e, SW_EINPUT, "cannot export: the source model (%zu bytes) is not a valid ONNX model", n);
    return sw_hint(e, "export needs the bytes of the ONNX file training started from, unchanged");
  }
  ex x = {.o = o, .src = m, .dir = base_dir ? base_dir : ".", .e = e};
  strmap *maps[] = {&x.uses_before, &x.consumers, &x.rename, &x.dropped, &x.needed, &x.sparse, &x.init_names};
  for (size_t i = 0; i < SW_ARRAY_LEN(maps); i++) strmap_init(maps[i]);
  Onnx__ModelProto out = *m;
  Onnx__GraphProto graph = *m->graph;
  int rc = build_model(&x, &out, &graph);
  uint8_t *buf = NULL;
  size_t len = 0;
  if (!rc) {
    len = onnx__model_proto__get_packed_size(&out);
    if ((int64_t)len > IMPORTER_MAX_FILE) {
      rc = sw_fail(e, SW_EINPUT, "the exported model would be %.1f GiB, over the 2 GiB limit of one ONNX file", (double)len / (1 << 30));
      sw_hint(e, "swatc writes every tensor inline; models this large are not supported by the exporter");
    } else if (!(buf = malloc(len ? len : 1))) {
      rc = sw_fail(e, SW_ENOMEM, "out of memory packing the exported model (%zu bytes)", len);
    } else {
      size_t packed = onnx__model_proto__pack(&out, buf);
      SW_ASSERT(packed == len);
    }
  }
  for (int i = 0; i < x.n_owned; i++) free(x.owned[i]);
  free(x.owned);
  for (size_t i = 0; i < SW_ARRAY_LEN(maps); i++) strmap_free(maps[i]);
  onnx__model_proto__free_unpacked(m, NULL);
  if (!rc) rc = write_atomic(out_path, buf, len, e);
  free(buf);
  if (!rc && bytes) *bytes = (int64_t)len;
  return rc;
}
