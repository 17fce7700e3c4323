/* Data movement: Concat, Slice, Transpose, Pad (constant), ReduceMean — forward and backward.
 * All work on dense row-major tensors of up to KERN_MAX_DIMS dimensions; backward kernels write
 * every element of the input gradient (zeros where the input did not reach the output). */
#ifndef SWATC_RUNTIME_KERNELS_MOVEMENT_H
#define SWATC_RUNTIME_KERNELS_MOVEMENT_H

#include <stdint.h>

#include "runtime/kernels/kern.h"

/* Output shape of concatenating n tensors along axis (negative counts from the end; normalised in
 * *axis on success). SW_EINPUT when the other dimensions differ. */
int concat_shape(int n, const kshape *xs, int *axis, kshape *y, sw_err *e);
/* Concat forward: y = the inputs one after another along axis (shapes checked by concat_shape). */
void concat_fwd(int n, const kshape *xs, const float *const *x, int axis, float *y, int nthreads);
/* Concat backward: splits dy back into the n input gradients. */
void concat_bwd(int n, const kshape *xs, int axis, const float *dy, float *const *dx, int nthreads);

/* A Slice resolved against its input: element i of output dimension k reads input index
 * start[k] + i*step[k]. */
typedef struct slice_desc {
  kshape x, y;
  int64_t start[KERN_MAX_DIMS], step[KERN_MAX_DIMS];
} slice_desc;

/* Resolves ONNX Slice (starts, ends, axes may be NULL = 0..n-1, steps may be NULL = 1) with ONNX's
 * clamping of out-of-range starts/ends and negative steps. SW_EINPUT for a zero step, a bad or
 * repeated axis. */
int slice_resolve(const kshape *x, int n, const int64_t *starts, const int64_t *ends, const int64_t *axes,
                  const int64_t *steps, slice_desc *s, sw_err *e);
/* Slice forward: y = x[slice]. */
void slice_fwd(const slice_desc *s, const float *x, float *y);
/* Slice backward: dx = 0 except the sliced positions, which receive dy. */
void slice_bwd(const slice_desc *s, const float *dy, float *dx);

/* Output shape of Transpose (perm NULL = reversed dimensions); SW_EINPUT if perm is not a permutation. */
int transpose_shape(const kshape *x, const int *perm, kshape *y, sw_err *e);
/* Transpose forward: y[i_perm[0], ..., i_perm[n-1]] = x[i_0, ..., i_{n-1}] (ONNX: y dim k = x dim perm[k]). */
void transpose_fwd(const kshape *x, const int *perm, const float *X, float *Y, int nthreads);
/* Transpose backward: dx = transpose of dy by the inverse permutation. */
void transpose_bwd(const kshape *x, const int *perm, const float *dY, float *dX, int nthreads);

/* Output shape of constant Pad: pads = [begin_0..begin_{n-1}, end_0..end_{n-1}], negative pads crop.
 * SW_EINPUT if a dimension would become negative. */
int pad_shape(const kshape *x, const int64_t *pads, kshape *y, sw_err *e);
/* Pad forward: y = x placed at offset begin, value elsewhere (cropped where pads are negative). */
void pad_fwd(const kshape *x, const int64_t *pads, float value, const float *X, float *Y, int nthreads);
/* Pad backward: dx = the part of dy that came from x (0 for elements cropped away). */
void pad_bwd(const kshape *x, const int64_t *pads, const float *dY, float *dX, int nthreads);

/* Output shape of ReduceMean over axes (naxes 0 = all axes); keepdims keeps reduced dimensions as 1.
 * Negative axes count from the end. SW_EINPUT for a bad or repeated axis. */
int reduce_shape(const kshape *x, int naxes, const int64_t *axes, int keepdims, kshape *y, sw_err *e);
/* ReduceMean forward (the output layout is the same with and without keepdims). */
void reduce_mean_fwd(const kshape *x, int naxes, const int64_t *axes, const float *X, float *Y, int nthreads);
/* ReduceMean backward: dx = dy broadcast back over the reduced axes, divided by their size. */
void reduce_mean_bwd(const kshape *x, int naxes, const int64_t *axes, const float *dY, float *dX, int nthreads);

#endif
