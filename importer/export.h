/* IR state → ONNX: writes a trained model back out as an inference ONNX file.
 *
 * The exporter starts from the ONNX model the training started from (its bytes, as the importer
 * read them), keeps its opset, node graph and names, and rewrites it into inference form:
 * BatchNormalization in inference form (training_mode off, only output Y), Dropout removed, any
 * loss (SoftmaxCrossEntropyLoss, NegativeLogLikelihoodLoss) removed together with what only it read
 * (a labels input), dimension 0 of the graph inputs and outputs made dynamic ("N"; a Reshape target
 * holding a static export batch becomes 0 or -1), value_info and training_info dropped. Every float
 * initializer the caller's lookup knows gets the trained values (so conv/FC weights are whatever the
 * caller passes, e.g. the Top-K weights W_s with exact zeros) as raw_data; the rest are copied
 * unchanged, except that external data is written inline. Tensors named in `sparse_names` are
 * stored as sparse_initializer when sparse_initializers is set: SparseTensorProto with the non-zero
 * values (raw_data, dims [NNZ]) and their ascending linear indices (int64_data: packed varints, so a
 * 90%-zero tensor takes ~0.17x its dense size; NNZ may be 0). producer_name is "swatc",
 * producer_version SWATC_VERSION. The file is written to a temporary name in the same folder,
 * fsync'd, re-validated with the importer's own checks (importer_load) and renamed, so a failure
 * never leaves a truncated or unreadable model behind. */
#ifndef SWATC_IMPORTER_EXPORT_H
#define SWATC_IMPORTER_EXPORT_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

/* Returns the trained data of the float initializer `name` (numel elements, as the source model
 * declares it), or NULL to keep the source model's values. Called once per float initializer
 * (dense or sparse) that the inference model keeps; the data must stay valid until exporter_write
 * returns. */
typedef const float *(*export_lookup_fn)(void *ctx, const char *name, int64_t numel);

typedef struct export_meta {
  const char *key, *value;
} export_meta;

typedef struct export_opts {
  export_lookup_fn lookup;           /* required */
  void *lookup_ctx;
  int sparse_initializers;           /* 1: store the tensors named in sparse_names as sparse_initializer */
  const char *const *sparse_names;
  int n_sparse;
  const export_meta *meta;           /* metadata_props to add (replacing same-named keys; the last of equal keys wins) */
  int n_meta;
} export_opts;

/* Writes the inference model made from the ONNX model bytes src[0..n) to out_path. base_dir is the
 * folder of the source model (for external data files; NULL means the current folder). On success
 * *bytes (when not NULL) receives the size of the written file. SW_EINPUT for a source model it
 * cannot rewrite (unparsable, a sparse name that is not a float initializer, a result the importer
 * rejects), SW_EIO when the file cannot be written (missing or unwritable folder, disk full; the
 * hint says which), SW_ENOMEM; on any failure the previous file at out_path is left intact and no
 * temporary file remains. */
int exporter_write(const void *src, size_t n, const char *base_dir, const export_opts *o, const char *out_path, int64_t *bytes,
                   sw_err *e);

#endif
