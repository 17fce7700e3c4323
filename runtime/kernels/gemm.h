/* Fully-connected layers (ONNX Gemm as PyTorch exports Linear: transB=1, alpha=beta=1) and MatMul.
 *
 * Gemm: Y[M,N] = X[M,K] * W[N,K]^T + b[N]; backward dX = dY W, dW = dY^T X, db = column sums of dY.
 * Reference loops and a plan running libxsmm JIT GEMMs (never BLAS: libxsmm_sgemm falls back to
 * BLAS above 64^3, so the plan dispatches its own small kernels and tiles the problem itself).
 * Every output tile is computed by one thread with the full reduction inside one kernel call, so
 * the results do not depend on the thread count.
 *
 * The general Gemm (transA, transB, alpha, beta, a broadcast C): plain loops, rows split over threads.
 *
 * MatMul: numpy matmul semantics (1-D operands promoted, leading dimensions broadcast), reference
 * loops, forward and backward (gradients summed over broadcast batch dimensions). */
#ifndef SWATC_RUNTIME_KERNELS_GEMM_H
#define SWATC_RUNTIME_KERNELS_GEMM_H

#include <stddef.h>

#include "runtime/kernels/kern.h"

typedef struct gemm_desc {
  int M, N, K; /* batch rows, output features, input features */
} gemm_desc;

typedef enum gemm_impl { GEMM_IMPL_AUTO = 0, GEMM_IMPL_REF, GEMM_IMPL_XSMM } gemm_impl;
typedef enum gemm_pass { GEMM_FWD = 0, GEMM_BWD_DATA, GEMM_BWD_WEIGHT, GEMM_NPASS } gemm_pass;

typedef struct gemm_plan {
  gemm_desc d;
  int nthreads;
  gemm_impl impl;
  size_t scratch[GEMM_NPASS];
  int bm, bn, bk;          /* tile sizes: batch rows, output features, input features */
  int ldK, ldN, ldM;       /* row pitches of the operand copies (K, N, M, or +16 when a multiple of
                              256 floats, whose rows would all share a few L1 sets) */
  void *kfwd[2][2];        /* [row tail][feature tail]: C(bn x bm) = Wt(bn x K) X^T(K x bm) */
  void *kbwd_data[2][2];   /* [row tail][in-feature tail]: dX^T(bk x bm) = W^T(bk x N) dY^T(N x bm) */
  void *kbwd_weight[2][2]; /* [out tail][in tail]: dW^T(bk x bn) = X^T(bk x M) dY(M x bn) */
} gemm_plan;

/* Checks that M, N, K are positive; SW_EINPUT with a message otherwise. */
int gemm_desc_check(const gemm_desc *d, sw_err *e);
/* Floating-point operations of one pass (2*M*N*K). */
double gemm_desc_flops(const gemm_desc *d);

/* Reference forward: y = x w^T + b (b may be NULL). */
void gemm_fwd_ref(const gemm_desc *d, const float *x, const float *w, const float *b, float *y);
/* Reference backward-data: dx = dy w. */
void gemm_bwd_data_ref(const gemm_desc *d, const float *dy, const float *w, float *dx);
/* Reference backward-weight: dw = dy^T x, and db = sum over rows of dy when db is not NULL. */
void gemm_bwd_weight_ref(const gemm_desc *d, const float *x, const float *dy, float *dw, float *db);

/* Prepares a plan (JIT-dispatches its kernels); want selects the implementation or AUTO. */
int gemm_plan_init(gemm_plan *p, const gemm_desc *d, int nthreads, gemm_impl want, sw_err *e);
/* Releases the plan (safe on a zeroed or failed plan). */
void gemm_plan_free(gemm_plan *p);
/* Bytes of KERN_ALIGN-aligned scratch the pass needs. */
size_t gemm_plan_scratch(const gemm_plan *p, gemm_pass pass);
/* Short description of the chosen kernel, for logs and benchmarks. */
const char *gemm_plan_describe(const gemm_plan *p, char *buf, size_t n);
/* Forward: y = x w^T + b (b may be NULL). */
void gemm_plan_fwd(const gemm_plan *p, const float *x, const float *w, const float *b, float *y, void *scratch);
/* Backward-data: dx = dy w. */
void gemm_plan_bwd_data(const gemm_plan *p, const float *dy, const float *w, float *dx, void *scratch);
/* Backward-weight: dw = dy^T x and db (when not NULL). */
void gemm_plan_bwd_weight(const gemm_plan *p, const float *x, const float *dy, float *dw, float *db, void *scratch);

/* The general ONNX Gemm, the forms other than Linear: Y[M,N] = alpha op(A) op(B) + beta C. */
typedef struct gemm_general_desc {
  gemm_desc d;       /* Y is [M, N]; K is the reduction */
  int ta, tb;        /* transA: A is [K, M] (else [M, K]); transB: B is [N, K] (else [K, N]) */
  float alpha, beta;
  kshape c;          /* the shape of C, which broadcasts to [M, N]: a scalar, [N] or [1|M, 1|N] */
} gemm_general_desc;

/* General Gemm forward (C may be NULL): plain loops summing in double, Y's rows split over the threads. */
void gemm_general_fwd(const gemm_general_desc *g, const float *A, const float *B, const float *C, float *Y,
                      int nthreads);

/* Computes the output shape of numpy matmul(a, b); SW_EINPUT if the shapes do not fit. */
int matmul_shape(const kshape *a, const kshape *b, kshape *y, sw_err *e);
/* Reference MatMul forward: Y = A @ B (shapes checked by matmul_shape). */
void matmul_fwd_ref(const kshape *a, const float *A, const kshape *b, const float *B, float *Y);
/* Reference MatMul backward: dA = dY @ B^T and dB = A^T @ dY, each summed over the batch dimensions
 * it was broadcast along. dA or dB may be NULL. */
void matmul_bwd_ref(const kshape *a, const float *A, const kshape *b, const float *B, const float *dY, float *dA,
                    float *dB);

#endif
