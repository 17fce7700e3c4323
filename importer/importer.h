/* ONNX → IR. The only public face of importer/: protobuf-c types never leave this folder. */
#ifndef SWATC_IMPORTER_IMPORTER_H
#define SWATC_IMPORTER_IMPORTER_H

#include <stddef.h>

#include "ir/ir.h"

typedef enum importer_batch {
  IMPORTER_BATCH_AUTO = 0, /* make dimension 0 of the inputs the symbolic N; fall back to static with a warning */
  IMPORTER_BATCH_FREE,     /* make it N or fail */
  IMPORTER_BATCH_STATIC,   /* keep the exported batch size */
} importer_batch;

/* A tensor given by the caller to replace a graph input with a constant (e.g. the shape input of
 * a Reshape in the ONNX conformance tests, which real exports hold as initializers). */
typedef struct importer_const {
  const char *name;
  ir_dtype dtype;
  ir_shape shape;
  const void *data;   /* numel * dtype size bytes, copied by the importer */
} importer_const;

typedef struct importer_opts {
  importer_batch batch;
  const importer_const *consts; /* graph inputs to freeze as constants */
  int n_consts;
} importer_opts;

/* A tensor read from a serialized TensorProto file (.pb, as in the ONNX test data). */
typedef struct importer_tensor {
  char name[256];
  ir_dtype dtype;
  ir_shape shape;
  void *data;   /* malloc'd; free with free() */
  size_t nbytes;
} importer_tensor;

/* Reads a TensorProto file. SW_EINPUT with a message for a missing or malformed file or an
 * unsupported element type. */
int importer_read_tensor(const char *path, importer_tensor *t, sw_err *e);

/* Largest model file read whole (protobuf's own limit for one message). Bigger models must keep
 * their tensors in external data files. */
#define IMPORTER_MAX_FILE ((int64_t)2147483647)

/* Copies the value of metadata_props[key] of the ONNX model held in bytes[0..n) into out[cap]
 * (truncated to cap - 1 characters, NUL-terminated). Returns 1 if the key is there, 0 if it is not or
 * the bytes are not a model. */
int importer_metadata(const void *bytes, size_t n, const char *key, char *out, size_t cap);

/* Imports the ONNX model held in bytes[0..n) as a verified IR graph in *out (free it with
 * ir_graph_free); `name` labels the model in messages, `dir` is the folder its external data files
 * must sit in. On failure returns SW_EINPUT (or SW_ENOMEM) with a message and a hint in e, and *out
 * is NULL. opts may be NULL for defaults. */
int importer_load_bytes(const void *bytes, size_t n, const char *name, const char *dir, const importer_opts *opts, ir_graph **out,
                        sw_err *e);

/* Reads the ONNX model file at `path` and imports it with importer_load_bytes (external data from the
 * file's folder). */
int importer_load(const char *path, const importer_opts *opts, ir_graph **out, sw_err *e);

#endif
