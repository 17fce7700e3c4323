/* 2-D convolution (ONNX Conv) forward, backward-data and backward-weight.
 *
 * Layouts: x [N][C][H][W], w [K][C/groups][R][S] (OIHW), b [K], y [N][K][P][Q].
 * Output size: P = (H + pad_t + pad_b - dil_h*(R-1) - 1) / stride_h + 1 (likewise Q).
 *
 * Two ways to run it:
 * - conv_*_ref: plain direct loops, the definition every fast kernel is tested against;
 * - a conv_plan: made once per shape (chooses the kernel, JITs the libxsmm batch-reduce GEMMs,
 *   reports the scratch size), then conv_plan_fwd/bwd_data/bwd_weight run with caller scratch and
 *   never allocate. AUTO picks libxsmm brgemm on channel-blocked layouts (im2col GEMMs for the
 *   backward passes when C/groups < 16) and direct vector loops when C/groups == 1; see README.md.
 * Results are bit-identical run to run for a given nthreads (the brgemm weight gradient sums one
 * partial per thread in thread order; everything else does not depend on nthreads). */
#ifndef SWATC_RUNTIME_KERNELS_CONV_H
#define SWATC_RUNTIME_KERNELS_CONV_H

#include <stddef.h>

#include "runtime/kernels/kern.h"

typedef struct conv_desc {
  int N, C, H, W;              /* input: batch, channels, height, width */
  int K, R, S;                 /* output channels, kernel height, kernel width */
  int P, Q;                    /* output height, width (conv_desc_resolve fills them when 0) */
  int stride_h, stride_w;      /* >= 1 */
  int pad_t, pad_l, pad_b, pad_r; /* >= 0 */
  int dil_h, dil_w;            /* >= 1 */
  int groups;                  /* divides C and K; groups == C is depthwise */
} conv_desc;

/* The kernel a plan runs. */
typedef enum conv_impl {
  CONV_IMPL_AUTO = 0, /* let conv_plan_init choose (what the runtime uses) */
  CONV_IMPL_REF,      /* the reference loops (no scratch) */
  CONV_IMPL_BRGEMM,   /* libxsmm batch-reduce GEMM on channel-blocked layouts */
  CONV_IMPL_DIRECT,   /* vectorised direct loops in NCHW, for one input channel per group (depthwise) */
} conv_impl;

typedef enum conv_pass { CONV_FWD = 0, CONV_BWD_DATA, CONV_BWD_WEIGHT, CONV_NPASS } conv_pass;

/* Geometry of one "forward-like" brgemm convolution over blocked tensors (internal to the plan). */
typedef struct conv_geo {
  int G, Ib, ib, Ob, ob;       /* groups; input channel blocks x block; output channel blocks x block */
  int Hp, Wp;                  /* padded input plane */
  int off_t, off_l;            /* where the unpadded source starts inside the padded plane */
  int P, Q, Wv, rb;            /* output rows/cols; output row pitch (pixels); rows per kernel call */
  int R, S, sh, sw, dh, dw;
  void *kern_full, *kern_tail; /* libxsmm reducebatch_offs kernels for rb rows and the last rows */
  int tail_rows;               /* rows in the last block (0: none) */
  unsigned long long *a_offs, *b_offs; /* byte offsets per batch entry (Ib*R*S) */
} conv_geo;

typedef struct conv_plan {
  conv_desc d;
  int nthreads;
  conv_impl impl;                 /* the implementation this plan runs */
  size_t scratch[CONV_NPASS];     /* bytes of scratch each pass needs */
  /* brgemm state (impl == CONV_IMPL_BRGEMM) */
  int G, Cg, Kg, cb, Cb, kb, Kb;  /* groups, channels per group, channel blocking (padded) */
  int per_image;                  /* 1: each thread runs whole images in private buffers */
  int sub;                        /* 1: strided 1x1 conv run as a stride-1 conv of the subsampled input */
  int Hx, Wx, sx_h, sx_w;         /* input grid the kernels see (P x Q when sub) and its sampling */
  int sh, sw;                     /* strides the kernels see (1 when sub) */
  conv_geo fwd;                   /* forward */
  int bwd_gather;                 /* 1: bwd-data runs as a forward conv of dY (stride 1) */
  conv_geo bwdd;                  /* bwd-data as a forward conv (when bwd_gather) */
  int bwdd_Hp, bwdd_Wp;           /* scatter bwd-data: padded dX plane */
  void *kern_scatter;             /* scatter bwd-data: reducebatch_strd kernel, beta = 1 */
  void *kern_wu;                  /* bwd-weight: reducebatch_offs kernel, beta = 1 */
  int wu_chunk;                   /* bwd-weight: images per reduction chunk */
  int col_bwd;                    /* 1: backward passes via im2col/col2im GEMMs (C/groups < 16) */
  void *kern_col_bd, *kern_col_bd_tail, *kern_col_wu; /* their libxsmm kernels */
  unsigned long long *wu_a_offs, *wu_b_offs; /* bwd-weight: byte offsets per (image, row) of a chunk */
} conv_plan;

/* Validates d and fills P and Q when they are 0 (or checks them); SW_EINPUT with a message if bad. */
int conv_desc_resolve(conv_desc *d, sw_err *e);
/* Floating-point operations of one pass (2*N*K*(C/groups)*R*S*P*Q for each of the three). */
double conv_desc_flops(const conv_desc *d);

/* Reference forward: y = conv(x, w) + b (b may be NULL). */
void conv_fwd_ref(const conv_desc *d, const float *x, const float *w, const float *b, float *y);
/* Reference backward-data: dx = gradient of the input given dy. */
void conv_bwd_data_ref(const conv_desc *d, const float *dy, const float *w, float *dx);
/* Reference backward-weight: dw (and db when not NULL) given x and dy. */
void conv_bwd_weight_ref(const conv_desc *d, const float *x, const float *dy, float *dw, float *db);

/* Prepares a plan for d (resolved by this call) on nthreads threads; want picks the kernel or AUTO.
 * Returns SW_EINPUT for a bad descriptor or a kernel that cannot serve it. */
int conv_plan_init(conv_plan *p, const conv_desc *d, int nthreads, conv_impl want, sw_err *e);
/* Releases what conv_plan_init allocated (safe on a zeroed or failed plan). */
void conv_plan_free(conv_plan *p);
/* Bytes of KERN_ALIGN-aligned scratch that pass needs (0 means NULL scratch is fine). */
size_t conv_plan_scratch(const conv_plan *p, conv_pass pass);
/* Short description of the kernel and blocking the plan chose, for logs and benchmarks. */
const char *conv_plan_describe(const conv_plan *p, char *buf, size_t n);
/* Forward: y = conv(x, w) + b (b may be NULL). */
void conv_plan_fwd(const conv_plan *p, const float *x, const float *w, const float *b, float *y, void *scratch);
/* Backward-data: dx from dy and w. */
void conv_plan_bwd_data(const conv_plan *p, const float *dy, const float *w, float *dx, void *scratch);
/* Backward-weight: dw, and db when not NULL, from x and dy. */
void conv_plan_bwd_weight(const conv_plan *p, const float *x, const float *dy, float *dw, float *db, void *scratch);

#endif
