/* Shared definitions for the compute kernels of swatc's runtime.
 *
 * Conventions used by every kernel family (see README.md):
 * - fp32 data, dense row-major tensors; activations NCHW, Conv weights OIHW, Gemm weights [out,in].
 * - Backward kernels overwrite the gradients they produce (they never accumulate into them).
 * - Kernels that need a plan (Conv, Gemm) are prepared once (JIT dispatch, blocking, scratch size)
 *   and then executed with caller-provided scratch: execute never allocates and never JITs.
 * - nthreads is the number of parts a kernel splits its work into (run on the kernels' thread team,
 *   team.c). Results are bit-identical for a given nthreads; kernels whose reductions are split by
 *   channel/element give identical results for any nthreads. */
#ifndef SWATC_RUNTIME_KERNELS_KERN_H
#define SWATC_RUNTIME_KERNELS_KERN_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

/* Alignment (bytes) that scratch buffers handed to plan executes must have. */
#define KERN_ALIGN 64
/* Largest tensor rank the N-d kernels (broadcasting, Transpose, Slice, Pad, ...) accept. */
#define KERN_MAX_DIMS 8

/* A tensor shape: ndim dimensions, row-major (last dimension contiguous). ndim 0 is a scalar. */
typedef struct kshape {
  int ndim;
  int64_t d[KERN_MAX_DIMS];
} kshape;

/* Builds a shape from ndim sizes. */
kshape kshape_make(int ndim, const int64_t *dims);
/* Number of elements of s (1 for a scalar). */
int64_t kshape_numel(const kshape *s);
/* Fills strides[i] (in elements) of the contiguous row-major layout of s. */
void kshape_strides(const kshape *s, int64_t *strides);
/* Returns 1 when a and b have the same rank and sizes. */
int kshape_equal(const kshape *a, const kshape *b);
/* Computes the numpy broadcast of a and b into out; returns SW_EINPUT (with message) if they clash. */
int kshape_broadcast(const kshape *a, const kshape *b, kshape *out, sw_err *e);
/* Formats s as "[2,3,4]" into buf (always NUL-terminated) and returns buf. */
const char *kshape_str(const kshape *s, char *buf, size_t n);

/* Rounds n up to a multiple of KERN_ALIGN (scratch sizes are always rounded this way). */
size_t kern_align_up(size_t n);

#endif
