/* The exporter on the shipped models: trained (here: perturbed, 90%-pruned) weights written dense and
 * as sparse_initializer come back bit-exact through the importer, the file is in inference form
 * (no Dropout, BatchNormalization with one output, batch "N", no stale value_info), the sparse file
 * is small, the eval forward pass of the re-imported model equals that of the source model with the
 * same weights, and every failure (missing folder, malformed source, bad sparse name) reports the
 * right code and leaves the output path untouched. Variants of LeNet-5 check loss removal, a static
 * batch baked into a Reshape target, and external data written inline.
 *
 * usage: test_export SRC_ROOT [OUT_DIR]   (OUT_DIR keeps the exported files, for tests/export/ort.sh) */
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "importer/export.h"
#include "importer/importer.h"
#include "onnx.pb-c.h"
#include "passes/passes.h"
#include "runtime/runtime.h"
#include "tests/check.h"

#define BATCH 8
#define KEEP_ONE_IN 10 /* weights keep 1 in 10 entries: 90% zeros */

/* The "trained" tensors handed to the exporter, by initializer name. */
typedef struct wtab {
  int n;
  char *name[512];
  float *data[512];
  int64_t numel[512];
  int sparse[512]; /* a pruned weight, listed in sparse_names */
  int hits[512];
  int bad_numel;
} wtab;

static const float *wtab_lookup(void *ctx, const char *name, int64_t numel) {
  wtab *w = ctx;
  for (int i = 0; i < w->n; i++)
    if (strcmp(w->name[i], name) == 0) {
      if (numel != w->numel[i]) {
        w->bad_numel++;
        return NULL;
      }
      w->hits[i]++;
      return w->data[i];
    }
  return NULL;
}

static const float *lookup_none(void *ctx, const char *name, int64_t numel) {
  (void)ctx, (void)name, (void)numel;
  return NULL;
}

static uint64_t rng_next(uint64_t *s) {
  *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
  return *s >> 33;
}

/* Perturbed copies of every float PARAM/STATE of g: weights (rank >= 2) keep 1 in 10 entries
 * (scaled), biases and BN affine parameters shift, running statistics get new values; fc3.bias
 * (LeNet-5, MLP) becomes all zeros. Weights and fc3.bias are the tensors to store sparse. */
static void wtab_init(wtab *w, const ir_graph *g) {
  memset(w, 0, sizeof *w);
  uint64_t s = 42;
  for (int i = 0; i < g->n_values; i++) {
    const ir_value *v = g->values[i];
    if ((v->kind != IR_VAL_PARAM && v->kind != IR_VAL_STATE) || v->dtype != IR_F32 || w->n == 512) continue;
    int64_t n = ir_shape_numel(&v->shape);
    const float *src = v->data;
    float *d = malloc(sizeof *d * (size_t)(n ? n : 1));
    int weight = v->kind == IR_VAL_PARAM && v->shape.rank >= 2;
    int zero = !strcmp(v->name, "fc3.bias"); /* an all-zero sparse tensor: NNZ = 0 */
    for (int64_t k = 0; k < n; k++) {
      if (zero) {
        d[k] = 0.0f;
      } else if (weight) {
        float x = src[k] * 1.25f + 0.001f;
        d[k] = rng_next(&s) % KEEP_ONE_IN == 0 ? (x != 0.0f ? x : 0.5f) : 0.0f;
      } else if (strstr(v->name, "running_mean")) {
        d[k] = 0.05f * sinf((float)k + 1.0f);
      } else if (strstr(v->name, "running_var")) {
        d[k] = 0.5f + fabsf(cosf((float)k));
      } else {
        d[k] = src[k] + 0.01f * sinf((float)k);
      }
    }
    w->name[w->n] = strdup(v->name);
    w->data[w->n] = d;
    w->numel[w->n] = n;
    w->sparse[w->n] = weight || zero;
    w->n++;
  }
}

static void wtab_free(wtab *w) {
  for (int i = 0; i < w->n; i++) {
    free(w->name[i]);
    free(w->data[i]);
  }
}

static void *read_file(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long l = ftell(f);
  fseek(f, 0, SEEK_SET);
  void *b = malloc(l > 0 ? (size_t)l : 1);
  *n = fread(b, 1, (size_t)l, f);
  fclose(f);
  return b;
}

static int file_exists(const char *p) {
  struct stat st;
  return stat(p, &st) == 0;
}

/* Number of entries of dir whose name contains ".tmp." (leftover temporary files). */
static int count_tmp(const char *dir) {
  DIR *d = opendir(dir);
  int n = 0;
  struct dirent *de;
  while (d && (de = readdir(d)))
    if (strstr(de->d_name, ".tmp.")) n++;
  if (d) closedir(d);
  return n;
}

/* Checks the ONNX file itself: producer, metadata, batch "N", inference-form nodes, sparse layout. */
static void check_file(const char *tag, const char *path, const wtab *w, int sparse) {
  size_t n;
  void *b = read_file(path, &n);
  Onnx__ModelProto *m = b ? onnx__model_proto__unpack(NULL, n, b) : NULL;
  free(b);
  CHECK(m && m->graph, "%s: cannot parse %s", tag, path);
  if (!m || !m->graph) return;
  const Onnx__GraphProto *g = m->graph;
  CHECK(m->producer_name && strcmp(m->producer_name, "swatc") == 0, "%s: producer_name '%s'", tag, m->producer_name);
  CHECK(m->producer_version && strcmp(m->producer_version, SWATC_VERSION) == 0, "%s: producer_version", tag);
  int meta = 0;
  for (size_t i = 0; i < m->n_metadata_props; i++)
    if (!strcmp(m->metadata_props[i]->key, "swatc.sparsity")) meta += !strcmp(m->metadata_props[i]->value, "0.9");
  CHECK(meta == 1, "%s: metadata swatc.sparsity=0.9 appears %d times", tag, meta);
  CHECK(g->n_value_info == 0, "%s: %zu value_info entries left", tag, g->n_value_info);
  CHECK(m->n_opset_import == 1 && m->opset_import[0]->version == 13, "%s: opset changed", tag);
  const Onnx__ValueInfoProto *io[2] = {g->n_input ? g->input[0] : NULL, g->n_output ? g->output[0] : NULL};
  for (int k = 0; k < 2; k++) {
    const Onnx__TensorShapeProto *s = io[k] && io[k]->type && io[k]->type->tensor_type ? io[k]->type->tensor_type->shape : NULL;
    CHECK(s && s->n_dim > 0 && s->dim[0]->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM &&
              !strcmp(s->dim[0]->dim_param, "N"),
          "%s: %s dimension 0 is not dim_param N", tag, k ? "output" : "input");
  }
  for (size_t i = 0; i < g->n_node; i++) {
    const Onnx__NodeProto *nd = g->node[i];
    CHECK(strcmp(nd->op_type, "Dropout") != 0, "%s: Dropout '%s' left", tag, nd->name);
    if (!strcmp(nd->op_type, "BatchNormalization")) {
      CHECK(nd->n_output == 1, "%s: BN '%s' has %zu outputs", tag, nd->name, nd->n_output);
      for (size_t a = 0; a < nd->n_attribute; a++) CHECK(strcmp(nd->attribute[a]->name, "training_mode"), "%s: training_mode", tag);
    }
  }
  int want_sparse = 0;
  for (int i = 0; i < w->n; i++) want_sparse += sparse && w->sparse[i];
  CHECK((int)g->n_sparse_initializer == want_sparse, "%s: %zu sparse initializers, expected %d", tag, g->n_sparse_initializer,
        want_sparse);
  for (size_t i = 0; i < g->n_sparse_initializer; i++) {
    const Onnx__SparseTensorProto *s = g->sparse_initializer[i];
    int64_t nnz = s->values->dims[0], numel = 1;
    for (size_t d = 0; d < s->n_dims; d++) numel *= s->dims[d];
    const int64_t *ix = s->indices->int64_data;
    int ok = s->indices->n_dims == 1 && s->indices->dims[0] == nnz && s->indices->data_type == 7 &&
             s->indices->n_int64_data == (size_t)nnz && s->values->raw_data.len == (size_t)nnz * 4;
    for (int64_t k = 0; ok && k < nnz; k++) ok = ix[k] >= 0 && ix[k] < numel && (k == 0 || ix[k] > ix[k - 1]);
    int64_t want = 0;
    for (int j = 0; j < w->n; j++)
      if (!strcmp(w->name[j], s->values->name))
        for (int64_t k = 0; k < w->numel[j]; k++) want += w->data[j][k] != 0.0f;
    CHECK(ok && nnz == want, "%s: sparse '%s': nnz %lld (want %lld), indices not ascending linear int64", tag, s->values->name,
          (long long)nnz, (long long)want);
  }
  onnx__model_proto__free_unpacked(m, NULL);
}

/* Re-imports path and checks the IR: every PARAM/STATE equals the lookup's data bit for bit, batch free, inference form. */
static void check_reimport(const char *tag, const char *path, const wtab *w, ir_graph **out) {
  sw_err e = {0};
  ir_graph *g = NULL;
  *out = NULL;
  CHECK(importer_load(path, NULL, &g, &e) == SW_OK, "%s: re-import: %s", tag, e.msg);
  if (!g) return;
  CHECK(g->batch_free && g->export_batch == 0 && g->n_inputs == 1 && g->inputs[0]->shape.d[0] == IR_N, "%s: batch is not free", tag);
  int matched = 0, total = 0;
  for (int i = 0; i < g->n_values; i++) {
    const ir_value *v = g->values[i];
    if ((v->kind != IR_VAL_PARAM && v->kind != IR_VAL_STATE) || v->dtype != IR_F32) continue;
    total++;
    for (int j = 0; j < w->n; j++)
      if (!strcmp(w->name[j], v->name)) {
        int same = ir_shape_numel(&v->shape) == w->numel[j] && v->nbytes == (size_t)w->numel[j] * sizeof(float) &&
                   (w->numel[j] == 0 || memcmp(v->data, w->data[j], v->nbytes) == 0);
        CHECK(same, "%s: '%s' differs from the trained values", tag, v->name);
        matched += same;
      }
  }
  CHECK(matched == w->n && total == w->n, "%s: %d of %d trained tensors found (%d in the model)", tag, matched, w->n, total);
  for (int i = 0; i < g->n_nodes; i++) {
    const ir_node *n = g->nodes[i];
    CHECK(strcmp(n->op->name, "Dropout") != 0, "%s: Dropout after re-import", tag);
    if (!strcmp(n->op->name, "BatchNormalization"))
      CHECK(ir_attr_int(n, "training_mode") == 0 && n->n_out == 1, "%s: BN '%s' in training form", tag, n->name);
  }
  *out = g;
}

/* Logits [BATCH, C] of g's eval forward pass on x, with the state overridden by w when w is given. */
static float *eval_logits(const char *tag, ir_graph *g, const wtab *w, const float *x, int64_t *n_out) {
  static const char *const passes[] = {"eval-mode", "dce", "fuse", "memory-plan"};
  pass_opts po = {.verify = 1, .batch = BATCH};
  sw_err e = {0};
  rt_state st;
  rt_state_init(&st);
  rt_program *p = NULL;
  float *res = NULL;
  int ok = passes_run(g, passes, 4, &po, &e) == SW_OK && rt_state_bind(&st, g, &e) == SW_OK &&
           rt_program_build(g, &st, BATCH, 2, NULL, &p, &e) == SW_OK;
  CHECK(ok, "%s: eval program: %s", tag, e.msg);
  if (!ok) goto done;
  for (int i = 0; w && i < w->n; i++) {
    rt_tensor *t = rt_state_find(&st, w->name[i]);
    if (t && t->numel == w->numel[i]) memcpy(t->data, w->data[i], sizeof(float) * (size_t)t->numel);
  }
  int64_t nin;
  float *in = rt_program_buffer(p, g->inputs[0]->name, &nin);
  CHECK(in && nin == BATCH * 784, "%s: input buffer", tag);
  if (!in || nin != BATCH * 784) goto done;
  memcpy(in, x, sizeof(float) * (size_t)nin);
  CHECK(rt_program_run(p, 1, &e) == SW_OK, "%s: run: %s", tag, e.msg);
  float *o = rt_program_buffer(p, g->outputs[0]->name, n_out);
  if (o) {
    res = malloc(sizeof *res * (size_t)*n_out);
    memcpy(res, o, sizeof *res * (size_t)*n_out);
  }
done:
  rt_program_free(p);
  rt_state_free(&st);
  return res;
}

static void check_logits(const char *tag, const char *src_model, const char *exported, const wtab *w) {
  sw_err e = {0};
  ir_graph *a = NULL, *b = NULL;
  CHECK(importer_load(src_model, NULL, &a, &e) == SW_OK, "%s: %s", tag, e.msg);
  CHECK(importer_load(exported, NULL, &b, &e) == SW_OK, "%s: %s", tag, e.msg);
  float x[BATCH * 784];
  uint64_t s = 7;
  for (int i = 0; i < BATCH * 784; i++) x[i] = (float)(rng_next(&s) % 2001) / 1000.0f - 1.0f;
  int64_t na = 0, nb = 0;
  float *la = a ? eval_logits(tag, a, w, x, &na) : NULL, *lb = b ? eval_logits(tag, b, NULL, x, &nb) : NULL;
  CHECK(la && lb && na == nb && na == BATCH * 10, "%s: logits missing", tag);
  if (la && lb && na == nb) {
    double maxd = 0, scale = 0;
    for (int64_t i = 0; i < na; i++) {
      maxd = fmax(maxd, fabs((double)la[i] - lb[i]));
      scale = fmax(scale, fabs((double)la[i]));
    }
    CHECK(maxd <= 1e-6 * fmax(scale, 1.0), "%s: logits differ by %.3g (scale %.3g)", tag, maxd, scale);
    printf("  %-18s eval logits: source with trained weights vs exported: max diff %.3g (scale %.3g)\n", tag, maxd, scale);
  }
  free(la);
  free(lb);
  ir_graph_free(a);
  ir_graph_free(b);
}

/* Exports `model` dense and sparse into dir and checks both files; returns the two sizes. */
static void run_model(const char *root, const char *dir, const char *model, int64_t *dense_bytes, int64_t *sparse_bytes) {
  char src_path[4096], dense[4096], sparse[4096];
  snprintf(src_path, sizeof src_path, "%s/models/%s.onnx", root, model);
  snprintf(dense, sizeof dense, "%s/%s.dense.onnx", dir, model);
  snprintf(sparse, sizeof sparse, "%s/%s.sparse.onnx", dir, model);
  sw_err e = {0};
  ir_graph *g = NULL;
  CHECK(importer_load(src_path, NULL, &g, &e) == SW_OK, "%s: %s", model, e.msg);
  if (!g) return;
  wtab w;
  wtab_init(&w, g);
  ir_graph_free(g);
  size_t n;
  void *src = read_file(src_path, &n);
  const char *names[512];
  int ns = 0;
  for (int i = 0; i < w.n; i++)
    if (w.sparse[i]) names[ns++] = w.name[i];
  export_meta meta[] = {{"swatc.sparsity", "0.5"}, {"swatc.sparsity", "0.9"}};
  export_opts o = {.lookup = wtab_lookup, .lookup_ctx = &w, .meta = meta, .n_meta = 2};
  CHECK(exporter_write(src, n, NULL, &o, dense, dense_bytes, &e) == SW_OK, "%s dense: %s", model, e.msg);
  for (int i = 0; i < w.n; i++) CHECK(w.hits[i] == 1, "%s: '%s' looked up %d times", model, w.name[i], w.hits[i]);
  o.sparse_initializers = 1;
  o.sparse_names = names;
  o.n_sparse = ns;
  CHECK(exporter_write(src, n, NULL, &o, sparse, sparse_bytes, &e) == SW_OK, "%s sparse: %s", model, e.msg);
  CHECK(w.bad_numel == 0, "%s: lookup got a wrong element count", model);
  struct stat st;
  CHECK(stat(dense, &st) == 0 && st.st_size == *dense_bytes, "%s: dense size reported %lld", model, (long long)*dense_bytes);
  char tag[128];
  snprintf(tag, sizeof tag, "%s dense", model);
  check_file(tag, dense, &w, 0);
  ir_graph *gd, *gs;
  check_reimport(tag, dense, &w, &gd);
  check_logits(tag, src_path, dense, &w);
  snprintf(tag, sizeof tag, "%s sparse", model);
  check_file(tag, sparse, &w, 1);
  check_reimport(tag, sparse, &w, &gs);
  check_logits(tag, src_path, sparse, &w);
  ir_graph_free(gd);
  ir_graph_free(gs);
  printf("%-9s dense %8lld bytes, sparse %8lld bytes (%.3fx), %d tensors, %d sparse\n", model, (long long)*dense_bytes,
         (long long)*sparse_bytes, (double)*sparse_bytes / (double)*dense_bytes, w.n, ns);
  free(src);
  wtab_free(&w);
}

/* Failures: each gives its code, and the file at the output path keeps its bytes. */
static void check_errors(const char *root, const char *dir) {
  char src_path[4096], out[4096], bad[4096];
  snprintf(src_path, sizeof src_path, "%s/models/lenet5.onnx", root);
  size_t n;
  void *src = read_file(src_path, &n);
  export_opts o = {.lookup = lookup_none};
  sw_err e = {0};

  /* a missing folder: SW_EIO with a hint, nothing created */
  snprintf(bad, sizeof bad, "%s/no-such-folder/m.onnx", dir);
  CHECK(exporter_write(src, n, NULL, &o, bad, NULL, &e) == SW_EIO, "missing folder: code %d (%s)", e.code, e.msg);
  CHECK(strstr(e.hint, "does not exist") != NULL, "missing folder: hint '%s'", e.hint);
  snprintf(bad, sizeof bad, "%s/no-such-folder", dir);
  CHECK(!file_exists(bad), "missing folder was created");
  /* a file where the folder should be; the output path is a folder */
  snprintf(out, sizeof out, "%s/plain-file", dir);
  FILE *f = fopen(out, "w");
  fputs("x", f);
  fclose(f);
  snprintf(bad, sizeof bad, "%s/plain-file/m.onnx", dir);
  sw_err_clear(&e);
  CHECK(exporter_write(src, n, NULL, &o, bad, NULL, &e) == SW_EIO, "file as folder: code %d (%s)", e.code, e.msg);
  sw_err_clear(&e);
  CHECK(exporter_write(src, n, NULL, &o, dir, NULL, &e) == SW_EIO, "folder as output: code %d (%s)", e.code, e.msg);

  /* replacing an existing file: it is replaced whole, no temporary files remain */
  snprintf(out, sizeof out, "%s/replace.onnx", dir);
  f = fopen(out, "w");
  fputs("old contents", f);
  fclose(f);
  sw_err_clear(&e);
  int64_t bytes = 0;
  CHECK(exporter_write(src, n, NULL, &o, out, &bytes, &e) == SW_OK, "replace: %s", e.msg);
  size_t got;
  void *now = read_file(out, &got);
  CHECK(now && (int64_t)got == bytes && got > 1000, "replace: the file holds %zu bytes, expected %lld", got, (long long)bytes);
  free(now);
  ir_graph *g = NULL;
  CHECK(importer_load(out, NULL, &g, &e) == SW_OK, "replace: %s", e.msg);
  ir_graph_free(g);

  /* bad sources and options: SW_EINPUT, the existing file untouched */
  static const unsigned char junk[] = "this is not a protobuf \xff\xff\xff\xff\xff\xff";
  struct {
    const char *what;
    const void *src;
    size_t n;
    int sparse;
  } cases[] = {{"garbage", junk, sizeof junk, 0},
               {"truncated", src, n / 2, 0},
               {"empty", src, 0, 0},
               {"unknown sparse name", src, n, 1}};
  const char *bogus[] = {"no.such.weight"};
  for (size_t i = 0; i < SW_ARRAY_LEN(cases); i++) {
    sw_err_clear(&e);
    export_opts oc = o;
    if (cases[i].sparse) {
      oc.sparse_initializers = 1;
      oc.sparse_names = bogus;
      oc.n_sparse = 1;
    }
    int rc = exporter_write(cases[i].src, cases[i].n, NULL, &oc, out, NULL, &e);
    CHECK(rc == SW_EINPUT && e.msg[0] && e.hint[0], "%s source: code %d (%s)", cases[i].what, rc, e.msg);
    now = read_file(out, &got);
    CHECK(now && (int64_t)got == bytes, "%s source: the existing file changed", cases[i].what);
    free(now);
  }
  CHECK(count_tmp(dir) == 0, "temporary files left in %s", dir);
  free(src);
}

/* Source variants made from LeNet-5 with protobuf-c: a loss inside the graph, a static batch baked
 * into the Reshape target, a weight in an external data file. Each mutation points at local objects
 * and is undone before the message is freed. */
static void *pack_model(Onnx__ModelProto *m, size_t *n) {
  *n = onnx__model_proto__get_packed_size(m);
  void *b = malloc(*n);
  onnx__model_proto__pack(m, b);
  return b;
}

static Onnx__ModelProto *export_and_parse(const char *tag, const void *src, size_t n, const char *base, const char *out,
                                          const export_opts *o) {
  sw_err e = {0};
  CHECK(exporter_write(src, n, base, o, out, NULL, &e) == SW_OK, "%s: %s", tag, e.msg);
  size_t got;
  void *b = read_file(out, &got);
  Onnx__ModelProto *m = b ? onnx__model_proto__unpack(NULL, got, b) : NULL;
  free(b);
  CHECK(m && m->graph, "%s: no readable output", tag);
  return m && m->graph ? m : NULL;
}

static void check_variants(const char *root, const char *dir) {
  char path[4096], out[4096];
  snprintf(path, sizeof path, "%s/models/lenet5.onnx", root);
  size_t n, pn;
  void *bytes = read_file(path, &n);
  Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, n, bytes);
  CHECK(m != NULL, "cannot parse %s", path);
  if (!m) return;
  Onnx__GraphProto *g = m->graph;
  export_opts o = {.lookup = lookup_none};
  sw_err e = {0};

  /* 1. SoftmaxCrossEntropyLoss in the graph, the loss the only output: the logits become the output, labels go */
  Onnx__TensorShapeProto__Dimension d0 = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__INIT, *dims[1] = {&d0};
  d0.value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
  d0.dim_param = "batch";
  Onnx__TensorShapeProto shp = ONNX__TENSOR_SHAPE_PROTO__INIT;
  shp.n_dim = 1;
  shp.dim = dims;
  Onnx__TypeProto__Tensor tt = ONNX__TYPE_PROTO__TENSOR__INIT;
  tt.has_elem_type = 1;
  tt.elem_type = 7;
  tt.shape = &shp;
  Onnx__TypeProto tp = ONNX__TYPE_PROTO__INIT;
  tp.value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
  tp.tensor_type = &tt;
  Onnx__ValueInfoProto labels = ONNX__VALUE_INFO_PROTO__INIT, loss_out = ONNX__VALUE_INFO_PROTO__INIT;
  labels.name = "labels";
  labels.type = &tp;
  Onnx__TypeProto lt = ONNX__TYPE_PROTO__INIT;
  Onnx__TypeProto__Tensor ltt = ONNX__TYPE_PROTO__TENSOR__INIT;
  ltt.has_elem_type = 1;
  ltt.elem_type = 1;
  lt.value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
  lt.tensor_type = &ltt;
  loss_out.name = "loss";
  loss_out.type = &lt;
  char *loss_in[2] = {"logits", "labels"}, *loss_o[1] = {"loss"};
  Onnx__NodeProto loss = ONNX__NODE_PROTO__INIT;
  loss.name = "/loss/SoftmaxCrossEntropyLoss";
  loss.op_type = "SoftmaxCrossEntropyLoss";
  loss.n_input = 2;
  loss.input = loss_in;
  loss.n_output = 1;
  loss.output = loss_o;
  Onnx__NodeProto **nodes = malloc(sizeof *nodes * (g->n_node + 1));
  memcpy(nodes, g->node, sizeof *nodes * g->n_node);
  nodes[g->n_node] = &loss;
  Onnx__ValueInfoProto *ins[2] = {g->input[0], &labels}, *outs[1] = {&loss_out};
  Onnx__NodeProto **old_nodes = g->node;
  Onnx__ValueInfoProto **old_in = g->input, **old_out = g->output;
  size_t old_nn = g->n_node, old_ni = g->n_input, old_no = g->n_output;
  g->node = nodes, g->n_node = old_nn + 1, g->input = ins, g->n_input = 2, g->output = outs, g->n_output = 1;
  void *src = pack_model(m, &pn);
  g->node = old_nodes, g->n_node = old_nn, g->input = old_in, g->n_input = old_ni, g->output = old_out, g->n_output = old_no;
  free(nodes);
  snprintf(out, sizeof out, "%s/loss.onnx", dir);
  Onnx__ModelProto *r = export_and_parse("loss", src, pn, NULL, out, &o);
  if (r) {
    int sce = 0;
    for (size_t i = 0; i < r->graph->n_node; i++) sce += !strcmp(r->graph->node[i]->op_type, "SoftmaxCrossEntropyLoss");
    CHECK(!sce && r->graph->n_input == 1 && r->graph->n_output == 1 && !strcmp(r->graph->output[0]->name, "logits"),
          "loss: %d loss nodes, %zu inputs, output '%s'", sce, r->graph->n_input, r->graph->output[0]->name);
    onnx__model_proto__free_unpacked(r, NULL);
    ir_graph *ig = NULL;
    CHECK(importer_load(out, NULL, &ig, &e) == SW_OK, "loss: %s", e.msg);
    ir_graph_free(ig);
  }
  free(src);

  /* 2. a static batch of 2, baked into the Reshape target [2, -1]: the file gets N and [0, -1] */
  Onnx__TensorShapeProto *ish = g->input[0]->type->tensor_type->shape, *osh = g->output[0]->type->tensor_type->shape;
  Onnx__TensorShapeProto__Dimension two = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__INIT, *old_i0 = ish->dim[0], *old_o0 = osh->dim[0];
  two.value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
  two.dim_value = 2;
  ish->dim[0] = osh->dim[0] = &two;
  int64_t target[2] = {2, -1}, tdim = 2;
  Onnx__TensorProto tshape = ONNX__TENSOR_PROTO__INIT;
  tshape.name = "static_target";
  tshape.has_data_type = 1;
  tshape.data_type = 7;
  tshape.n_dims = 1;
  tshape.dims = &tdim;
  tshape.n_int64_data = 2;
  tshape.int64_data = target;
  Onnx__TensorProto **inits = malloc(sizeof *inits * (g->n_initializer + 1)), **old_inits = g->initializer;
  memcpy(inits, g->initializer, sizeof *inits * g->n_initializer);
  inits[g->n_initializer] = &tshape;
  g->initializer = inits;
  g->n_initializer++;
  Onnx__NodeProto *reshape = NULL;
  for (size_t i = 0; i < g->n_node; i++)
    if (!strcmp(g->node[i]->op_type, "Reshape")) reshape = g->node[i];
  char *old_target = reshape->input[1];
  reshape->input[1] = "static_target";
  src = pack_model(m, &pn);
  reshape->input[1] = old_target;
  g->initializer = old_inits;
  g->n_initializer--;
  free(inits);
  ish->dim[0] = old_i0, osh->dim[0] = old_o0;
  ir_graph *ig = NULL;
  snprintf(out, sizeof out, "%s/static.onnx", dir);
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s/static-src.onnx", dir);
  FILE *f = fopen(tmp, "wb");
  fwrite(src, 1, pn, f);
  fclose(f);
  CHECK(importer_load(tmp, NULL, &ig, &e) == SW_OK && ig->export_batch == 2, "static source: %s", e.msg);
  ir_graph_free(ig);
  ig = NULL;
  r = export_and_parse("static", src, pn, NULL, out, &o);
  if (r) {
    const int64_t *t = NULL;
    for (size_t i = 0; i < r->graph->n_initializer; i++)
      if (!strcmp(r->graph->initializer[i]->name, "static_target") && r->graph->initializer[i]->raw_data.len == 16)
        t = (const int64_t *)r->graph->initializer[i]->raw_data.data;
    CHECK(t && t[0] == 0 && t[1] == -1, "static: the Reshape target is not [0, -1]");
    onnx__model_proto__free_unpacked(r, NULL);
    CHECK(importer_load(out, NULL, &ig, &e) == SW_OK && ig->batch_free && ig->export_batch == 0, "static: %s", e.msg);
    if (ig) { /* runs at another batch than the export's */
      float x[BATCH * 784] = {0};
      int64_t nl = 0;
      float *l = eval_logits("static", ig, NULL, x, &nl);
      CHECK(l && nl == BATCH * 10, "static: no logits at batch %d", BATCH);
      free(l);
    }
    ir_graph_free(ig);
  }
  free(src);

  /* 3. conv1.weight in an external data file beside the source: written inline, same values */
  Onnx__TensorProto *w = NULL;
  for (size_t i = 0; i < g->n_initializer; i++)
    if (!strcmp(g->initializer[i]->name, "conv1.weight")) w = g->initializer[i];
  snprintf(tmp, sizeof tmp, "%s/conv1.weight.bin", dir);
  f = fopen(tmp, "wb");
  fputs("pad!", f); /* a non-zero offset */
  fwrite(w->raw_data.data, 1, w->raw_data.len, f);
  fclose(f);
  char len[32];
  snprintf(len, sizeof len, "%zu", w->raw_data.len);
  Onnx__StringStringEntryProto kv[3] = {ONNX__STRING_STRING_ENTRY_PROTO__INIT, ONNX__STRING_STRING_ENTRY_PROTO__INIT,
                                        ONNX__STRING_STRING_ENTRY_PROTO__INIT};
  kv[0].key = "location", kv[0].value = "conv1.weight.bin";
  kv[1].key = "offset", kv[1].value = "4";
  kv[2].key = "length", kv[2].value = len;
  Onnx__StringStringEntryProto *kvs[3] = {&kv[0], &kv[1], &kv[2]};
  Onnx__TensorProto saved = *w;
  w->has_raw_data = 0;
  w->n_external_data = 3;
  w->external_data = kvs;
  w->has_data_location = 1;
  w->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
  src = pack_model(m, &pn);
  *w = saved;
  snprintf(out, sizeof out, "%s/external.onnx", dir);
  r = export_and_parse("external", src, pn, dir, out, &o);
  if (r) {
    const Onnx__TensorProto *t = NULL;
    for (size_t i = 0; i < r->graph->n_initializer; i++)
      if (!strcmp(r->graph->initializer[i]->name, "conv1.weight")) t = r->graph->initializer[i];
    CHECK(t && !t->n_external_data && t->has_raw_data && t->raw_data.len == w->raw_data.len &&
              !memcmp(t->raw_data.data, w->raw_data.data, w->raw_data.len),
          "external: conv1.weight is not inline with the source's values");
    onnx__model_proto__free_unpacked(r, NULL);
  }
  unlink(tmp);
  sw_err_clear(&e);
  snprintf(out, sizeof out, "%s/external2.onnx", dir);
  CHECK(exporter_write(src, pn, "/nonexistent-folder", &o, out, NULL, &e) == SW_EINPUT && !file_exists(out),
        "external data missing: code %d (%s)", e.code, e.msg);
  free(src);
  onnx__model_proto__free_unpacked(m, NULL);
  free(bytes);
}

/* Removes the files this test made in dir (plain files only), then dir. */
static void remove_dir(const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *de;
  char p[4096];
  while (d && (de = readdir(d))) {
    if (de->d_name[0] == '.') continue;
    snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
    unlink(p);
  }
  if (d) closedir(d);
  rmdir(dir);
}

int main(int argc, char **argv) {
  const char *root = argc > 1 ? argv[1] : getenv("SWATC_SRC");
  if (!root) {
    fprintf(stderr, "usage: test_export SRC_ROOT [OUT_DIR]\n");
    return 2;
  }
  sw_quiet = 1;
  char tmpl[] = "/tmp/swatc-export-XXXXXX";
  const char *dir = argc > 2 ? argv[2] : mkdtemp(tmpl);
  CHECK(dir != NULL, "cannot make a temporary folder");
  if (!dir) return check_report("export");
  mkdir(dir, 0777);
  int64_t dense = 0, sparse = 0;
  run_model(root, dir, "lenet5", &dense, &sparse);
  CHECK(sparse > 0 && (double)sparse < 0.3 * (double)dense, "lenet5: sparse file %lld bytes is not < 0.3x the dense %lld", (long long)sparse,
        (long long)dense);
  run_model(root, dir, "resnet20", &dense, &sparse);
  run_model(root, dir, "mlp", &dense, &sparse);
  check_errors(root, dir);
  check_variants(root, dir);
  if (argc <= 2) remove_dir(dir);
  return check_report("export");
}
