/* Shared between the files of importer/ only: protobuf-c types stay inside this folder. */
#ifndef SWATC_IMPORTER_ONNX_INTERNAL_H
#define SWATC_IMPORTER_ONNX_INTERNAL_H

#include "onnx.pb-c.h"
#include "importer/importer.h"

/* A tensor's contents, decoded: dtype, shape and malloc'd little-endian data of numel * size bytes.
 * For i64 tensors folded at import the data may hold IR_N (the symbolic batch). */
typedef struct tensor_data {
  ir_dtype dtype;
  ir_shape shape;
  void *data;
  size_t nbytes;
} tensor_data;

void tensor_data_free(tensor_data *t);
/* Number of elements of a decoded tensor. */
int64_t tensor_numel(const tensor_data *t);

/* Reads the whole model file at path into *buf (malloc'd, *len bytes); every way the file can be wrong
 * (missing, a folder, a device, over 2 GiB, unreadable) gets its own message. */
int onnx_read_file(const char *path, unsigned char **buf, size_t *len, sw_err *e);
/* Parses the model held in bytes[0..n) (name labels it in messages): empty, not protobuf (with a guess
 * of what it is instead) and graphless data are refused. */
int onnx_parse_model(const void *bytes, size_t n, const char *name, Onnx__ModelProto **model, sw_err *e);

/* Maps an ONNX element type onto the IR's; IR_UNDEF if swatc cannot hold it. */
ir_dtype onnx_dtype(int32_t data_type);
/* A readable name for an ONNX element type ("STRING", "COMPLEX64", ...). */
const char *onnx_dtype_name(int32_t data_type);

/* Decodes a TensorProto in any storage form (raw_data, typed fields, external data inside model_dir). */
int tensor_from_proto(const Onnx__TensorProto *t, const char *model_dir, tensor_data *out, sw_err *e);
/* Decodes a SparseTensorProto into a dense tensor. */
int tensor_from_sparse(const Onnx__SparseTensorProto *t, const char *model_dir, tensor_data *out, sw_err *e);

/* Import-time evaluation of shape arithmetic. `in` holds the decoded inputs (NULL for absent
 * optional ones), in_shapes the shapes of all inputs (also of run-time values, for Shape).
 * Fills outs[0..n_out-1]. Returns SW_OK, or SW_EINPUT with a message (e.g. arithmetic on N). */
typedef struct fold_attr_view fold_attr_view;
int fold_eval(const char *op, int opset, const Onnx__NodeProto *node, int n_in, const tensor_data *const *in,
              const ir_shape *const *in_shapes, const ir_dtype *in_types, int n_out, tensor_data *outs, sw_err *e);
/* 1 if fold_eval knows op (it may still refuse particular inputs). */
int fold_known(const char *op);

/* Attribute access with type checks; `a` may be NULL (absent). */
const Onnx__AttributeProto *onnx_attr(const Onnx__NodeProto *n, const char *name);
int onnx_attr_int(const Onnx__NodeProto *n, const char *name, int64_t def, int64_t *out, sw_err *e);
int onnx_attr_float(const Onnx__NodeProto *n, const char *name, float def, float *out, sw_err *e);
/* INTS: *out points into the proto (valid while the model lives); *count = -1 when absent. */
int onnx_attr_ints(const Onnx__NodeProto *n, const char *name, const int64_t **out, int *count, sw_err *e);
int onnx_attr_string(const Onnx__NodeProto *n, const char *name, const char *def, const char **out, sw_err *e);

#endif
