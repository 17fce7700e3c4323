/* Tensor bundles: named tensors dumped by PyTorch (tests/golden_torch/make_golden.py) so that C tests
 * can compare swatc against PyTorch without Python.
 *
 * File layout (all integers little-endian):
 *
 *     char     magic[4]   = "SWTB"
 *     u32      version    = 1
 *     u32      count        number of tensor records that follow
 *     count x record:
 *         u32  name_len     1..BUNDLE_MAX_NAME bytes, no NUL inside, unique in the file
 *         u8   name[name_len]
 *         u32  dtype        ONNX numbering: 1 = float32, 7 = int64
 *         u32  rank         0..BUNDLE_MAX_RANK (0 = scalar, one element)
 *         i64  dims[rank]   each >= 0
 *         u8   data[numel * element size]   raw little-endian, row-major
 *
 * and nothing after the last record. A truncated, padded or otherwise corrupt file is refused with an
 * sw_err; no input makes the reader crash or allocate more than the file's size plus bookkeeping. */
#ifndef SWATC_TESTS_GOLDEN_TORCH_BUNDLE_H
#define SWATC_TESTS_GOLDEN_TORCH_BUNDLE_H

#include <stdint.h>

#include "util/err.h"

#define BUNDLE_VERSION 1
#define BUNDLE_MAX_RANK 8
#define BUNDLE_MAX_NAME 4096

enum { BUNDLE_F32 = 1, BUNDLE_I64 = 7 };

typedef struct bundle_tensor {
  char *name;                    /* NUL-terminated, as stored */
  int dtype;                     /* BUNDLE_F32 or BUNDLE_I64 */
  int rank;                      /* 0..BUNDLE_MAX_RANK */
  int64_t dims[BUNDLE_MAX_RANK]; /* [rank]; unused entries are 0 */
  int64_t numel;                 /* product of dims (1 for a scalar) */
  void *data;                    /* [numel] float or int64_t in host order, 64-byte aligned */
} bundle_tensor;

typedef struct bundle {
  int n;                   /* number of tensors */
  bundle_tensor *tensors;  /* [n], in file order */
} bundle;

/* How far a computed float tensor is from a golden one (filled by bundle_compare_f32). */
typedef struct bundle_diff {
  double max_abs;     /* max |got - want| */
  double max_rel;     /* max |got - want| / |want| over elements with want != 0 */
  double max_want;    /* max |want|: the tensor's scale */
  int64_t worst;      /* index of the element furthest outside the tolerance (or of max_abs) */
  int64_t n_bad;      /* elements with |got - want| > atol + rtol * |want|, or not finite */
} bundle_diff;

/* Reads the bundle file at path; returns NULL and fills e (SW_EINPUT, SW_ENOMEM) on failure. */
bundle *bundle_load(const char *path, sw_err *e);

/* Returns the tensor called name, or NULL when the bundle has none. */
const bundle_tensor *bundle_get(const bundle *b, const char *name);

/* Returns the data of float tensor name if it exists, is float32 and has numel elements; otherwise
 * returns NULL and fills e with what was wrong. */
const float *bundle_get_f32(const bundle *b, const char *name, int64_t numel, sw_err *e);

/* Compares got[0..n) with want[0..n) elementwise, |got - want| <= atol + rtol * |want|, fills d and
 * returns the number of failing elements (a NaN or infinity in got always fails). */
int64_t bundle_compare_f32(const float *got, const float *want, int64_t n, double atol, double rtol,
                           bundle_diff *d);

/* Compares got[0..n) with want[0..n) at the tensor's scale, |got - want| <= tol * max|want| for every
 * element (tol alone when want is all zeros): the check README.md's tolerances are stated for. Fills d
 * and returns the number of failing elements. */
int64_t bundle_compare_scaled_f32(const float *got, const float *want, int64_t n, double tol, bundle_diff *d);

/* Frees b and every tensor in it; NULL is allowed. */
void bundle_free(bundle *b);

#endif
