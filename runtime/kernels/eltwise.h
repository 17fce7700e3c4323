/* Elementwise kernels: activations, broadcasting arithmetic, Sum, Dropout.
 *
 * Activations (Relu, LeakyRelu, Clip, Sigmoid, Tanh) have a reference and a fast (vectorised,
 * threaded) version. Their backward reads x for Relu, LeakyRelu and Clip and y for Sigmoid and Tanh
 * (the other pointer may be NULL). At the kinks the derivative is that of PyTorch: Relu'(0) = 0,
 * LeakyRelu'(0) = alpha, Clip'(x) = 1 for lo <= x <= hi (torch.clamp's rule).
 *
 * Add/Sub/Mul/Div follow numpy broadcasting; the backward sums each input's gradient over the
 * dimensions it was broadcast along, one output element per thread in a fixed order (results do
 * not depend on the thread count).
 *
 * Dropout draws its mask from a counter-based generator: element i of step `step` is kept iff
 * hash(seed, step, i) >= ratio, so the mask depends only on (seed, step, i), never on threads.
 *
 * A ReLU's output kept for its backward is a bit mask: element i is bit i % 8 of byte i / 8 (the
 * IR's IR_BIT), made by relu_mask or add_relu and read by sum_relu_grad.
 *
 * Fused residual-block kernels (made by the fuse pass): Add + Relu (+ the ReLU's bit mask) in one
 * pass, and the gradient accumulation Sum + the ReLU backward in one pass; each gives the bits of the
 * unfused ops. */
#ifndef SWATC_RUNTIME_KERNELS_ELTWISE_H
#define SWATC_RUNTIME_KERNELS_ELTWISE_H

#include <stdint.h>

#include "runtime/kernels/kern.h"

typedef enum act_kind { ACT_RELU = 0, ACT_LEAKY_RELU, ACT_CLIP, ACT_SIGMOID, ACT_TANH, ACT_NKINDS } act_kind;

typedef struct act_desc {
  act_kind kind;
  float alpha;  /* LeakyRelu slope for x < 0 */
  float lo, hi; /* Clip bounds (use -INFINITY / INFINITY for a missing one) */
} act_desc;

/* Reference activation forward: y[i] = f(x[i]) for i < n. */
void act_fwd_ref(const act_desc *a, int64_t n, const float *x, float *y);
/* Reference activation backward: dx[i] = f'(.) * dy[i]. */
void act_bwd_ref(const act_desc *a, int64_t n, const float *x, const float *y, const float *dy, float *dx);
/* Fast activation forward (x and y may be the same buffer). */
void act_fwd(const act_desc *a, int64_t n, const float *x, float *y, int nthreads);
/* Fast activation backward (dy and dx may be the same buffer). */
void act_bwd(const act_desc *a, int64_t n, const float *x, const float *y, const float *dy, float *dx, int nthreads);

typedef enum binop_kind { BIN_ADD = 0, BIN_SUB, BIN_MUL, BIN_DIV } binop_kind;

/* Y = A op B with numpy broadcasting; y must be the broadcast of a and b (kshape_broadcast). */
void binop_fwd(binop_kind op, const kshape *a, const float *A, const kshape *b, const float *B, const kshape *y,
               float *Y, int nthreads);
/* Gradients of Y = A op B: dA (shape a) and dB (shape b), each may be NULL. Mul and Div read A and B;
 * Add and Sub read neither (they may be NULL). */
void binop_bwd(binop_kind op, const kshape *a, const float *A, const kshape *b, const float *B, const kshape *y,
               const float *dY, float *dA, float *dB, int nthreads);

/* Dropout forward: mask[i] = keep (1) or drop (0), y = x * mask / (1 - ratio). ratio in [0, 1);
 * ratio 0 copies x and sets every mask byte to 1. */
void dropout_fwd(int64_t n, float ratio, uint64_t seed, uint64_t step, const float *x, float *y, uint8_t *mask,
                 int nthreads);
/* Dropout backward: dx = dy * mask / (1 - ratio). */
void dropout_bwd(int64_t n, float ratio, const uint8_t *mask, const float *dy, float *dx, int nthreads);
/* bits of (y[i] > 0), ceil(n / 8) bytes: a ReLU's output as its backward needs it (NaN and -0 give 0). */
void relu_mask(int64_t n, const float *y, uint8_t *bits, int nthreads);
/* relu_mask of n values into bits [off, off + n) of a mask, on the calling thread: the bits below off
 * in its first byte are kept (a run before it wrote them), the bits past off + n in its last byte
 * are cleared. Runs written in order from a byte boundary build a mask piece by piece. */
void relu_mask_at(int64_t off, int64_t n, const float *y, uint8_t *bits);
/* Reference Add + ReLU: y[i] = max(a[i] + b[i], 0) exactly as Add then Relu (NaN stays NaN, -0 stays -0),
 * and, when bits is not NULL, the bit mask of y > 0 exactly as relu_mask. */
void add_relu_ref(int64_t n, const float *a, const float *b, float *y, uint8_t *bits);
/* Fast Add + ReLU (one pass over a, b, y and the optional bit mask), bit-identical to add_relu_ref. */
void add_relu(int64_t n, const float *a, const float *b, float *y, uint8_t *bits, int nthreads);
/* Reference summed ReLU backward: s = dy[0][i] + dy[1][i] + ... (k >= 1 terms, added in that order, as
 * Sum), dx[i] = s where the ReLU was on, +0 elsewhere (also where s is not finite); the gate is the
 * ReLU's output y (on: y > 0, as ReluGrad) or its bit mask (on: bit i set), exactly one of the two not
 * NULL. With k = 1 and the mask it is the ReLU backward alone. */
void sum_relu_grad_ref(int64_t n, int k, const float *const *dy, const float *y, const uint8_t *bits, float *dx);
/* Fast summed ReLU backward (one pass), bit-identical to sum_relu_grad_ref. dx may be one of the dy. */
void sum_relu_grad(int64_t n, int k, const float *const *dy, const float *y, const uint8_t *bits, float *dx,
                   int nthreads);
/* sum_relu_grad of two gradients over [planes][H][W] when the second is known only on the stride
 * (sh, sw) grid: b is [planes][P][Q] (P = ceil(H / sh), Q = ceil(W / sw)) and stands for the
 * gradient holding b[p][q] at (p*sh, q*sw) and +0 everywhere else, which is what the backward-data of
 * a 1x1 conv with those strides and no padding writes. dx = gate(a + that), bit-identical to
 * sum_relu_grad on the full-size gradient, without it being written or read. dx may be a. */
void sum_relu_grad_sub(int64_t planes, int H, int W, int sh, int sw, const float *a, const float *b, const float *y,
                       const uint8_t *bits, float *dx, int nthreads);
/* Sum (and Neg: neg, k = 1): y[i] = (neg ? -x[0][i] : x[0][i]) + x[1][i] + ... + x[k-1][i], in that order. */
void sum_n(int64_t n, int k, const float *const *x, int neg, float *y, int nthreads);
/* Tests: 1 runs the plain C bit-mask kernels even where AVX-512 is there; 0 (default): the best the CPU has. */
void eltwise_use_portable(int on);
/* The uniform number in [0, 1) (a multiple of 2^-24) that decides element i of a step. */
float dropout_uniform(uint64_t seed, uint64_t step, int64_t i);

#endif
