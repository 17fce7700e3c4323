/* ONNX → IR. The only public face of importer/: protobuf-c types never leave this folder. */
#ifndef SWATC_IMPORTER_IMPORTER_H
#define SWATC_IMPORTER_IMPORTER_H

#include "ir/ir.h"

typedef enum importer_batch {
  IMPORTER_BATCH_AUTO = 0, /* make dimension 0 of the inputs the symbolic N; fall back to static with a warning */
  IMPORTER_BATCH_FREE,     /* make it N or fail */
  IMPORTER_BATCH_STATIC,   /* keep the exported batch size */
} importer_batch;

typedef struct importer_opts {
  importer_batch batch;
} importer_opts;

/* Largest model file read whole (protobuf's own limit for one message). Bigger models must keep
 * their tensors in external data files. */
#define IMPORTER_MAX_FILE ((int64_t)2147483647)

/* Reads the ONNX model at `path` and returns it as a verified IR graph in *out (free it with
 * ir_graph_free). On failure returns SW_EINPUT (or SW_ENOMEM) with a message and a hint in e,
 * and *out is NULL. opts may be NULL for defaults. */
int importer_load(const char *path, const importer_opts *opts, ir_graph **out, sw_err *e);

#endif
