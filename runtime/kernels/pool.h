/* MaxPool, AveragePool and GlobalAveragePool over NCHW, forward and backward.
 *
 * Output size: P = floor_or_ceil((H + pad_t + pad_b - dil_h*(kh-1) - 1) / stride_h) + 1; with
 * ceil_mode a last window that would start past the input and its left padding is dropped (the
 * PyTorch rule, which ONNX's reference follows). MaxPool stores, per output, the flat index
 * h*W + w of the chosen input inside its (n, c) plane (first maximum in window order; NaN wins),
 * or -1 when the window holds no input element (its output is then -inf). AveragePool divides by
 * the number of window taps inside the input (count_include_pad = 0) or inside the padded input
 * (count_include_pad = 1; taps a ceil_mode window has past the padding are not counted, as in
 * PyTorch); a window with nothing to count gives 0.
 *
 * The reference is plain loops; the fast versions thread over (n, c) planes, and each input
 * gradient element is summed by the thread that owns its plane in a fixed order, so the results do
 * not depend on the thread count. */
#ifndef SWATC_RUNTIME_KERNELS_POOL_H
#define SWATC_RUNTIME_KERNELS_POOL_H

#include <stdint.h>

#include "runtime/kernels/kern.h"

typedef struct pool_desc {
  int N, C, H, W;
  int P, Q;                       /* output size (pool_desc_resolve fills them when 0) */
  int kh, kw;
  int stride_h, stride_w;
  int pad_t, pad_l, pad_b, pad_r;
  int dil_h, dil_w;
  int ceil_mode;
  int count_include_pad;          /* AveragePool only */
} pool_desc;

/* Validates d and fills P and Q when they are 0 (or checks them); SW_EINPUT with a message if bad. */
int pool_desc_resolve(pool_desc *d, sw_err *e);

/* Reference MaxPool forward: y and argmax [N][C][P][Q]. */
void maxpool_fwd_ref(const pool_desc *d, const float *x, float *y, int32_t *argmax);
/* Reference MaxPool backward: dx = scatter-add of dy at argmax. */
void maxpool_bwd_ref(const pool_desc *d, const float *dy, const int32_t *argmax, float *dx);
/* Reference AveragePool forward. */
void avgpool_fwd_ref(const pool_desc *d, const float *x, float *y);
/* Reference AveragePool backward. */
void avgpool_bwd_ref(const pool_desc *d, const float *dy, float *dx);

/* Fast MaxPool forward. */
void maxpool_fwd(const pool_desc *d, const float *x, float *y, int32_t *argmax, int nthreads);
/* Fast MaxPool backward. */
void maxpool_bwd(const pool_desc *d, const float *dy, const int32_t *argmax, float *dx, int nthreads);
/* Bytes of scratch maxpool_bwd_x needs (0 for 2x2 stride-2 windows without padding). */
size_t maxpool_bwd_x_scratch(const pool_desc *d);
/* MaxPool backward from the forward's input x instead of a kept argmax: dx = the scatter of dy at each
 * window's argmax (first maximum in window order, NaN winning, as maxpool_fwd), recomputed from x.
 * With relu, x is a ReLU's output and dx is also the ReLU's backward, dx = x > 0 ? dx : 0 (ReluGrad
 * after MaxPoolGrad, fused). Bit for bit maxpool_fwd + maxpool_bwd (+ the ReLU backward); 2x2
 * stride-2 windows run it as one pass over x, dy and dx. */
void maxpool_bwd_x(const pool_desc *d, const float *dy, const float *x, int relu, float *dx, void *scratch,
                   int nthreads);
/* Fast AveragePool forward. */
void avgpool_fwd(const pool_desc *d, const float *x, float *y, int nthreads);
/* Fast AveragePool backward. */
void avgpool_bwd(const pool_desc *d, const float *dy, float *dx, int nthreads);

/* GlobalAveragePool forward: y[n][c] = mean of x[n][c][0..HW). */
void global_avgpool_fwd(int N, int C, int64_t HW, const float *x, float *y, int nthreads);
/* GlobalAveragePool backward: dx[n][c][i] = dy[n][c] / HW. */
void global_avgpool_bwd(int N, int C, int64_t HW, const float *dy, float *dx, int nthreads);

#endif
