/* Softmax, LogSoftmax and SoftmaxCrossEntropyLoss.
 *
 * Softmax/LogSoftmax normalise along one axis of a tensor viewed as [outer][len][inner] (opset 13's
 * single axis: outer = product of the dimensions before it, inner = after; the opset < 13 form that
 * flattens from `axis` is outer = product before, len = product from axis on, inner = 1). Every
 * (outer, inner) line is computed by one thread in a fixed order.
 *
 * SoftmaxCrossEntropyLoss takes logits [N][C][D] (D = product of trailing dimensions, 1 for [N,C]),
 * int64 labels [N][D], optional class weights [C], reduction mean/sum/none and an optional
 * ignore_index. Forward writes the loss and the log-probabilities (ONNX's optional second output),
 * which the backward uses: dlogits = (exp(log_prob) - onehot(label)) * w[label] * dloss / denominator,
 * where the denominator of "mean" is the summed weight of the samples not ignored (their count
 * without weights). All-ignored "mean" gives a NaN loss (as PyTorch) and zero gradients. */
#ifndef SWATC_RUNTIME_KERNELS_SOFTMAX_H
#define SWATC_RUNTIME_KERNELS_SOFTMAX_H

#include <stdint.h>

#include "runtime/kernels/kern.h"

/* Softmax (log_ = 0) or LogSoftmax (log_ = 1) forward along the middle axis of [outer][len][inner]. */
void softmax_fwd(int64_t outer, int64_t len, int64_t inner, int log_, const float *x, float *y, int nthreads);
/* Backward from the forward output y: Softmax dx = y (dy - sum dy*y); LogSoftmax dx = dy - exp(y) sum dy. */
void softmax_bwd(int64_t outer, int64_t len, int64_t inner, int log_, const float *y, const float *dy, float *dx,
                 int nthreads);

typedef enum sce_reduction { SCE_MEAN = 0, SCE_SUM, SCE_NONE } sce_reduction;

typedef struct sce_desc {
  int N, C;
  int64_t D;          /* product of the dimensions after C (1 for [N, C] logits) */
  sce_reduction reduction;
  int has_ignore;     /* 1: labels equal to ignore_index contribute nothing */
  int64_t ignore_index;
} sce_desc;

/* Forward: loss (one float, or [N][D] for SCE_NONE) and log_prob [N][C][D]; weight [C] may be NULL.
 * Returns SW_EINPUT (with the sample named) when a label is outside [0, C) and not ignored. */
int sce_fwd(const sce_desc *d, const float *logits, const int64_t *labels, const float *weight, float *loss,
            float *log_prob, sw_err *e);
/* Backward: dlogits [N][C][D] from log_prob and dloss (one float, or [N][D] for SCE_NONE). */
void sce_bwd(const sce_desc *d, const float *log_prob, const int64_t *labels, const float *weight, const float *dloss,
             float *dlogits);

#endif
