/* BatchNormalization over [N][C][HW] (HW = product of the spatial dimensions, 1 for [N, C]).
 *
 * Training forward normalises with the batch statistics over (N, HW): mean and the biased variance,
 * y = scale * (x - mean) / sqrt(var + eps) + bias, and updates the running statistics with ONNX
 * momentum semantics, running = running * momentum + batch * (1 - momentum), the running variance
 * taking the unbiased batch variance (var * M / (M - 1), M = N*HW) as PyTorch does. It saves mean and
 * 1/sqrt(var + eps) for the backward. relu = 1 fuses a ReLU after the normalisation; its backward
 * recomputes the ReLU's decision from x and the saved statistics (bn_relu_keep), so the forward
 * output need not be kept for it.
 *
 * The reference sums in double, two passes; the fast version is vectorised, streams the tensor in
 * memory order (threads split the N*C planes), and uses a shifted one-pass variance. Each plane's
 * partial sums go to the caller's scratch and each channel adds them in image order, so results do
 * not depend on the thread count. */
#ifndef SWATC_RUNTIME_KERNELS_BN_H
#define SWATC_RUNTIME_KERNELS_BN_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

typedef struct bn_desc {
  int N, C;
  int64_t HW;
  float eps;      /* ONNX epsilon (default 1e-5) */
  float momentum; /* ONNX momentum (default 0.9; PyTorch's momentum m exports as 1 - m) */
} bn_desc;

/* The float multiplier a = scale * inv_std of the training forward's y = (x - mean) * a + bias. */
static inline float bn_relu_scale(float scale, float save_invstd) { return (float)((double)scale * (double)save_invstd); }
/* The fused ReLU's decision for one element, computed the same way in the forward and the backward
 * (one correctly rounded fmaf): the normalised value is positive. */
static inline int bn_relu_keep(float x, float mean, float a, float bias) { return fmaf(x - mean, a, bias) > 0.0f; }

/* Reference training forward. running_mean/running_var may be NULL (no update). */
void bn_fwd_train_ref(const bn_desc *d, const float *x, const float *scale, const float *bias, float *y,
                      float *running_mean, float *running_var, float *save_mean, float *save_invstd, int relu);
/* Reference backward: dx, dscale, dbias (dscale/dbias may be NULL); bias is read only when relu. */
void bn_bwd_ref(const bn_desc *d, const float *x, const float *bias, const float *dy, const float *scale,
                const float *save_mean, const float *save_invstd, float *dx, float *dscale, float *dbias, int relu);
/* Reference inference forward with the given mean and variance. */
void bn_fwd_infer_ref(const bn_desc *d, const float *x, const float *scale, const float *bias, const float *mean,
                      const float *var, float *y, int relu);

/* Scratch bytes bn_fwd_train and bn_bwd need (KERN_ALIGN-aligned caller memory): 2*N*C + 4*C floats. */
size_t bn_scratch_bytes(const bn_desc *d);
/* Fast training forward (same contract as the reference). */
void bn_fwd_train(const bn_desc *d, const float *x, const float *scale, const float *bias, float *y,
                  float *running_mean, float *running_var, float *save_mean, float *save_invstd, int relu,
                  void *scratch, int nthreads);
/* Training forward of a residual block's last BatchNormalization with the Add and ReLU after it:
 * y = max(BN(x) + res, 0), bit-identical to bn_fwd_train (relu = 0) followed by add_relu (eltwise.h),
 * and, when bits is not NULL, its bit mask as add_relu writes it; one pass over x, res and y instead
 * of two. y may be res (not x). */
void bn_fwd_train_add_relu(const bn_desc *d, const float *x, const float *res, const float *scale, const float *bias,
                           float *y, uint8_t *bits, float *running_mean, float *running_var, float *save_mean,
                           float *save_invstd, void *scratch, int nthreads);
/* Fast backward (same contract as the reference). */
void bn_bwd(const bn_desc *d, const float *x, const float *bias, const float *dy, const float *scale,
            const float *save_mean, const float *save_invstd, float *dx, float *dscale, float *dbias, int relu,
            void *scratch, int nthreads);
/* Fast inference forward (same contract as the reference). */
void bn_fwd_infer(const bn_desc *d, const float *x, const float *scale, const float *bias, const float *mean,
                  const float *var, float *y, int relu, int nthreads);

#endif
