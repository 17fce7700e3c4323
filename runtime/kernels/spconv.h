/* Sparse-weight Conv and Gemm (SWAT): forward and backward-data with a dense weight array in which
 * most entries are exactly zero (the Top-K output W_s).
 *
 * The zero pattern may change on every call, so every execute reads it from w: it first lists the
 * nonzeros of each output row (forward: per output channel k, the (c, r, s) taps; backward-data:
 * per input channel c and stride phase, the (k, r, s) taps) as (element offset, value) pairs in
 * scratch, then runs a direct convolution over those lists only. Activations are converted to a
 * batch-innermost layout X[N/16][C][Hp][Wp][16] (zero padding built in), so one nonzero weight is
 * one broadcast and, per output position in the register tile, one aligned 16-image load and one
 * FMA; there is no im2col. Outputs are transposed back to NCHW (or row-major for Gemm) per plane.
 * The work per call is the list build (O(K*C*R*S) scan, threaded), the two layout transforms
 * (O(activations)) and 2 FLOPs per nonzero weight per output position and image.
 * Every conv has a second, NCHW-direct (polyphase) path without the transforms: each image's x is
 * copied (stride 1) or split into stride-phase planes (strided) in a per-thread buffer with a zero halo,
 * or dX assembled from its phase planes, and register tiles of a few output lists run over flat
 * positions of those planes; the plan picks it per call when the weight density is below a threshold
 * from its cost model (nchw_below), e.g. ResNet-20's 28x28 and 14x14 layers at 90% sparsity.
 *
 * Layouts as everywhere in the runtime: x [N][C][H][W], w [K][C][R][S] (OIHW), y [N][K][P][Q];
 * Gemm Y[M,N] = X[M,K] W[N,K]^T + b, dX = dY W. Conv needs groups == 1 and dilation 1.
 * Results do not depend on nthreads (every output element is summed by one thread in list order)
 * and are bit-identical run to run. Scratch is KERN_ALIGN-aligned caller memory; executes never
 * allocate. The kernels are compiled for AVX-512 and for baseline x86-64 and picked at load time. */
#ifndef SWATC_RUNTIME_KERNELS_SPCONV_H
#define SWATC_RUNTIME_KERNELS_SPCONV_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/kernels/conv.h"
#include "runtime/kernels/gemm.h"

typedef struct spconv_plan {
  conv_desc d;
  int nthreads;
  int nb;                      /* blocks of 16 images */
  /* forward: padded input plane (or the subsampled grid of a strided 1x1 conv, run with stride 1),
   * the strides the tiles see, the register tiling, and each tap's offset in a packed block */
  int sub, fsh, fsw;
  int Hp, Wp;
  int fwd_tr, fwd_tc;          /* output rows x columns per register tile */
  /* backward-data: phases (stride_h*stride_w), padded dY plane, offsets of dY index 0 in it */
  int nph, Pp, Qp, OT, OL;
  int bwd_cap;                 /* list capacity per (input channel, phase) */
  int bwd_tr, bwd_tc;          /* dX rows (of one phase) x columns per register tile */
  int32_t *fwd_offs;           /* [C*R*S] element offsets of the forward taps (owned) */
  /* [CONV_FWD], [CONV_BWD_DATA]: an execute whose weight density (nonzeros / size, counted per call)
   * is below this runs NCHW-direct (polyphase; no layout transforms), else 16-image-packed. 0: never; > 1: always. Set from the cost model in
   * spconv.c (does not depend on nthreads). */
  double nchw_below[2];
  int forced;                  /* spconv_plan_set_path chose the path: it holds for every weight pattern */
} spconv_plan;

/* Prepares a plan for d (resolved by this call) on nthreads threads; SW_EINPUT with a message for a
 * bad descriptor or one the sparse kernels do not serve (groups > 1, dilation > 1). */
int spconv_plan_init(spconv_plan *p, const conv_desc *d, int nthreads, sw_err *e);
/* Tests and benchmarks: nchw = 0 runs both passes on the 16-image-packed path, 1 runs both NCHW-direct
 * at any density and weight pattern, -1 restores the plan's own choice (spconv_plan_init).
 * The scratch size (spconv_plan_scratch) follows the setting. */
void spconv_plan_set_path(spconv_plan *p, int nchw);
/* 1 if an execute of pass at this weight density runs the NCHW-direct path, 0 if 16-image-packed (for
 * unstructured weights; with nonzeros in whole R x S kernels, R*S > 1, the plan's own choice is packed). */
int spconv_plan_uses_nchw(const spconv_plan *p, conv_pass pass, double density);
/* Releases the plan's tap-offset table (safe on a zeroed or failed plan). */
void spconv_plan_free(spconv_plan *p);
/* Bytes of KERN_ALIGN-aligned scratch that pass (CONV_FWD or CONV_BWD_DATA) needs; 0 for others. */
size_t spconv_plan_scratch(const spconv_plan *p, conv_pass pass);
/* Short description of the plan (layout and register tiles of both passes), for logs and benchmarks. */
const char *spconv_plan_describe(const spconv_plan *p, char *buf, size_t n);
/* The part of spconv_plan_describe about one pass (CONV_FWD or CONV_BWD_DATA), without the "fwd " or
 * "bwd-data " prefix: what the lowered dump and the profile show for that pass. */
const char *spconv_plan_describe_pass(const spconv_plan *p, conv_pass pass, char *buf, size_t n);
/* Weight density (fraction of nonzeros) below which this sparse pass is expected to beat the dense
 * conv_plan (AUTO) on 2 cores, from the cost model calibrated in bench_spconv (see README.md). */
double spconv_plan_crossover(const spconv_plan *p, conv_pass pass);
/* Forward: y = conv(x, w) + b (b may be NULL), touching only the nonzeros of w. */
void spconv_plan_fwd(const spconv_plan *p, const float *x, const float *w, const float *b, float *y, void *scratch);
/* Backward-data: dx (overwritten) from dy and the nonzeros of w. */
void spconv_plan_bwd_data(const spconv_plan *p, const float *dy, const float *w, float *dx, void *scratch);

/* Tests: 1 makes the NCHW-direct path run its plain C kernel and the packed path its tap lists for
 * whole-kernel patterns (what CPUs without AVX-512 run) even where AVX-512 is there; 0 (default) the
 * best the CPU has. Not thread-safe against running kernels. */
void spconv_use_portable(int on);
/* Tests and benchmarks: 0 makes the packed path run whole-kernel patterns (3x3, stride 1) on its
 * per-tap lists instead of the whole-kernel tiles; 1 (default) restores them. Not thread-safe against
 * running kernels. */
void spconv_use_whole_kernel_tiles(int on);

typedef struct spgemm_plan {
  gemm_desc d;
  int nthreads;
  int nb;                      /* blocks of 16 batch rows */
  int tc;                      /* batch blocks per register tile */
} spgemm_plan;

/* Prepares a plan for Y[M,N] = X[M,K] W[N,K]^T + b; SW_EINPUT for non-positive sizes. */
int spgemm_plan_init(spgemm_plan *p, const gemm_desc *d, int nthreads, sw_err *e);
/* Releases the plan (safe on a zeroed or failed plan). */
void spgemm_plan_free(spgemm_plan *p);
/* Bytes of KERN_ALIGN-aligned scratch that pass (GEMM_FWD or GEMM_BWD_DATA) needs; 0 for others. */
size_t spgemm_plan_scratch(const spgemm_plan *p, gemm_pass pass);
/* Short description of the plan, for logs and benchmarks. */
const char *spgemm_plan_describe(const spgemm_plan *p, char *buf, size_t n);
/* Weight density below which this sparse pass is expected to beat the dense gemm_plan on 2 cores. */
double spgemm_plan_crossover(const spgemm_plan *p, gemm_pass pass);
/* Forward: y = x w^T + b (b may be NULL), touching only the nonzeros of w. */
void spgemm_plan_fwd(const spgemm_plan *p, const float *x, const float *w, const float *b, float *y, void *scratch);
/* Backward-data: dx = dy w (overwritten), touching only the nonzeros of w. */
void spgemm_plan_bwd_data(const spgemm_plan *p, const float *dy, const float *w, float *dx, void *scratch);

#endif
