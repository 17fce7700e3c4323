/* SWAT weight gradient from the Top-K sparsified saved activation X_s (typically 90% zeros).
 *
 * X_s is never stored dense: the forward pass packs the kept entries of the activation x
 * (|x| >= thr and x != 0, exactly the nonzeros topk_apply would leave) into a compact buffer in
 * one threaded pass (spact_pack), and the backward pass computes
 *   Conv: dW[K][C][R][S] = conv_backward_weight(X_s, dY)      (spwgrad_conv)
 *   Gemm: dW[N][K]       = dY^T X_s                            (spwgrad_gemm)
 * with work proportional to the number of kept entries.
 *
 * Packed format ("spact", see spwgrad.c for the byte layout): per image n, the kept entries as a
 * structure of arrays (position, float value), grouped by channel c and, inside a channel, either
 * in plane order or (grouped, what a strided conv's weight gradient needs) by the
 * parity class (h%2, w%2) of the position, with a per-image table of class starts when H*W > 1.
 * Grouped, it may hold only some classes: a 1x1 stride-2 conv reads only the even rows and columns
 * (class 0), so its X_s need not hold the other three quarters of the kept entries. The
 * channel is implied by the run an entry lies in, so the position is the one inside the channel
 * plane, h*W + w (when H*W == 1: the channel c itself), stored as uint16 whenever every position
 * fits (6 bytes per entry instead of 8; spact_pos_bytes), else as int32. The grouping is what the
 * conv kernel needs for stride 2: it walks one channel of one image at a time, and for strides 1
 * and 2 every entry of one class touches the same set of filter taps, so a whole class runs one
 * fully unrolled register-blocked loop; with stride 1 every entry touches the same taps, and the
 * plane order (about twice as fast to pack) serves as well. Where each
 * image's entries sit in the buffer depends on thread scheduling; what they are does not, and the
 * kernels read them through the per-image table, so results are deterministic.
 *
 * Conv kernel: dY is transposed per image into a channels-last, K-blocked, zero-bordered buffer
 * dYcl[K/16][P+borders][Q+borders][16] (per thread, a chunk of images that stays in L2); for each
 * channel c the dW entries of one class's taps times up to 4 K-blocks live in zmm registers while
 * the channel's entries are streamed: broadcast x, FMA the dY vectors at fixed offsets from the
 * entry's base (one lookup per entry, in a per-plane [H*W] table indexed by the uint16 in-plane
 * position). Threads take disjoint image ranges (and channel ranges
 * when N < nthreads) and accumulate private dW^T partials, summed in thread order at the end: the
 * result is bit-identical run to run for a given nthreads. Shapes the register kernels do not cover
 * (strides > 2, odd dilations with stride 2, more than 5 taps per dimension, planes of more than
 * 65536 pixels, whose positions are int32, no AVX-512) take a generic per-entry path in plain C.
 *
 * Gemm kernel: each entry (m, i, x) adds x * dY[m][:] to row i of a dW^T buffer, threads split the
 * output features in 16-wide blocks (no reduction), then dW^T is transposed to dW. */
#ifndef SWATC_RUNTIME_KERNELS_SPWGRAD_H
#define SWATC_RUNTIME_KERNELS_SPWGRAD_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/kernels/conv.h"
#include "runtime/kernels/gemm.h"

/* Bytes per stored position of a packed [N][C][H][W] X_s: 2 (uint16) when H*W <= 65536, or when
 * H*W == 1 and C <= 65536 (the position is then the channel); otherwise 4 (int32). */
int spact_pos_bytes(int C, int H, int W);
/* Bytes of a packed X_s buffer for an [N][C][H][W] activation (FC: H = W = 1) holding at most
 * max_nnz kept entries (capped at N*C*H*W); allocate it KERN_ALIGN-aligned. */
size_t spact_bytes(int N, int C, int H, int W, int64_t max_nnz);
/* The parity classes of spact_pack: bit k for the positions (h, w) with 2*(h%2) + (w%2) == k. */
#define SPACT_ALL_CLASSES 0xfu
/* Positions of an H x W plane in the classes set in `classes` (all H*W when it is 0: plane order). */
int64_t spact_class_positions(int H, int W, unsigned classes);
/* Bytes of the scratch spact_pack needs for [N][C][H][W] on nthreads threads (its class tables and
 * per-thread plane bitmaps; 0 when H*W == 1). */
size_t spact_pack_scratch(int C, int H, int W, int nthreads);
/* Packs the entries of x with |x| >= thr and x != 0 into buf (sized by spact_bytes with the same
 * dimensions and max_nnz) in one pass on nthreads threads. classes 0: each channel's entries in
 * plane order; else grouped by parity class (what the weight gradient of a strided conv needs:
 * spwgrad_conv_classes), keeping only the entries of the classes set in it (SPACT_ALL_CLASSES:
 * all). Returns the number kept, or -1 when it would exceed max_nnz (buf is then unspecified).
 * scratch: KERN_ALIGN-aligned, spact_pack_scratch(C, H, W, nthreads) bytes (may be NULL when that is
 * 0); the pack allocates nothing. */
int64_t spact_pack(const float *x, int N, int C, int H, int W, float thr, unsigned classes, void *buf,
                   int64_t max_nnz, int nthreads, void *scratch);
/* spact_pack in portable C only (what runs on CPUs without AVX-512; exposed for tests). */
int64_t spact_pack_c(const float *x, int N, int C, int H, int W, float thr, unsigned classes, void *buf,
                     int64_t max_nnz, int nthreads, void *scratch);
/* The classes buf holds, as packed: 0 when its entries are in plane order (packed with classes 0,
 * or H*W == 1), else grouped by parity class, these classes held. */
unsigned spact_classes(const void *buf);
/* Entries of x that passed the keep test when buf was packed, in the classes it does not hold too
 * (spact_nnz counts only those it holds): the realised density of X_s is spact_kept / numel. */
int64_t spact_kept(const void *buf);
/* The density of what buf holds: spact_nnz over the positions of the classes it holds (what a
 * weight gradient reading it costs, for the choice between the sparse and the dense kernel). */
double spact_density(const void *buf);
/* Writes the dense NCHW tensor a packed buffer holds into x (for tests and fallbacks). */
void spact_unpack(const void *buf, float *x);
/* Number of entries a packed buffer holds. */
int64_t spact_nnz(const void *buf);

/* The sparse weight-gradient implementation a plan runs. */
typedef enum spwgrad_impl {
  SPWGRAD_IMPL_AUTO = 0, /* register-blocked AVX-512 kernels where they apply, else generic */
  SPWGRAD_IMPL_GENERIC,  /* the per-entry plain C path (the fallback; forced for tests) */
} spwgrad_impl;

/* A prepared sparse conv weight gradient for one shape (see spwgrad.c for the fields' use). */
typedef struct spwgrad_plan {
  conv_desc d;
  int nthreads;
  int fast;                  /* 1: register kernels (AVX-512, strides <= 2, unit column tap step, uint16 positions) */
  unsigned classes;          /* spwgrad_conv_classes(&d) */
  int simd;                  /* 1: AVX-512 dY transposes */
  int Kp, Kb;                /* K rounded up to 16, number of 16-wide K blocks */
  int Pp, Qp, Bt, Bl;        /* bordered dY plane and where the unbordered plane starts in it */
  int nr[2], r0[2], rstep;   /* per row class (h%2): valid taps r0, r0+rstep, ... (nr of them) */
  int ns[2], s0[2], sstep;   /* per column class (w%2): likewise for s */
  int prow;                  /* bordered dY rows between consecutive valid taps of a class */
  int32_t *offtab;           /* [H*W] float offset of each in-plane position's first tap in a dY block */
  int32_t *pixtab;           /* [P*Q] float offset of each dY pixel in a bordered dY block */
  int chunk;                 /* images per per-thread dY chunk */
  int Tn, Tc;                /* thread grid: image groups x channel groups (Tn*Tc = nthreads) */
  size_t ycl_floats;         /* floats of one thread's dY chunk buffer */
  size_t part_floats;        /* floats of one image group's dW^T partial [C][R][S][Kp] */
  size_t scratch;            /* total scratch bytes */
} spwgrad_plan;

/* Prepares the sparse weight gradient of conv d (resolved by this call; groups must be 1) for
 * nthreads threads; SW_EINPUT with a message for a bad or unsupported descriptor. */
int spwgrad_plan_init(spwgrad_plan *p, const conv_desc *d, int nthreads, sw_err *e);
/* spwgrad_plan_init choosing the implementation (SPWGRAD_IMPL_GENERIC forces the plain C path). */
int spwgrad_plan_init_impl(spwgrad_plan *p, const conv_desc *d, int nthreads, spwgrad_impl want, sw_err *e);
/* Releases what spwgrad_plan_init allocated (safe on a zeroed or failed plan). */
void spwgrad_plan_free(spwgrad_plan *p);
/* Bytes of KERN_ALIGN-aligned scratch spwgrad_conv needs. */
size_t spwgrad_plan_scratch(const spwgrad_plan *p);
/* Short description of the plan (path, blocking, threads) for logs and benchmarks. */
const char *spwgrad_plan_describe(const spwgrad_plan *p, char *buf, size_t n);
/* How conv d's weight gradient wants X_s packed (spact_pack's classes): 0 (plane order) for stride
 * 1; else grouped, with the parity classes of the input positions some output and tap reads (class
 * 0 alone for a 1x1 stride-2 conv without padding). Given X_s in plane order, a strided conv's
 * spwgrad_conv takes the generic path (same result, slower); X_s must hold every class it reads. */
unsigned spwgrad_conv_classes(const conv_desc *d);
/* Density of X_s below which spwgrad_conv (without the pack) is expected to beat the dense
 * conv_plan_bwd_weight on this shape (cost model calibrated by bench_spwgrad on Zen 5). */
double spwgrad_plan_crossover(const spwgrad_plan *p);
/* dW [K][C][R][S] (overwritten) and db [K] (when not NULL: sums of dY over N, P, Q) from the packed
 * X_s (packed with the plan's N, C, H, W) and the dense dY [N][K][P][Q]. */
void spwgrad_conv(const spwgrad_plan *p, const void *xs_packed, const float *dy, float *dw, float *db,
                  void *scratch);

/* A prepared sparse Gemm weight gradient dW = dY^T X_s for gemm_desc {M batch, N out, K in}. */
typedef struct spwgrad_gemm_plan {
  gemm_desc d;
  int nthreads;
  int fast;     /* 1: AVX-512 */
  int Np;       /* N rounded up to 16 (pitch of the dW^T scratch rows) */
  size_t scratch;
} spwgrad_gemm_plan;

/* Prepares the sparse Gemm weight gradient for d on nthreads threads; SW_EINPUT for a bad d. */
int spwgrad_gemm_plan_init(spwgrad_gemm_plan *p, const gemm_desc *d, int nthreads, sw_err *e);
/* Releases the plan (nothing is allocated today; safe on a zeroed plan). */
void spwgrad_gemm_plan_free(spwgrad_gemm_plan *p);
/* Bytes of KERN_ALIGN-aligned scratch spwgrad_gemm needs. */
size_t spwgrad_gemm_plan_scratch(const spwgrad_gemm_plan *p);
/* Density of X_s below which spwgrad_gemm is expected to beat the dense gemm_plan_bwd_weight. */
double spwgrad_gemm_plan_crossover(const spwgrad_gemm_plan *p);
/* dW [N][K] = dY^T X_s (overwritten) and db [N] (when not NULL) from X_s packed as [M][K] (or as any
 * [M][C][H][W] with C*H*W = K) and the dense dY [M][N]. */
void spwgrad_gemm(const spwgrad_gemm_plan *p, const void *xs_packed, const float *dy, float *dw, float *db,
                  void *scratch);

#endif
