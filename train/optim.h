/* SGD with momentum, Nesterov and weight decay, with PyTorch's torch.optim.SGD semantics, on flat
 * float arrays (one call per parameter tensor, or one per slab when all share the settings):
 *
 *     d   = g + wd * w
 *     buf = d                                       on the tensor's first step
 *     buf = momentum * buf + (1 - dampening) * d    afterwards
 *     d   = nesterov ? d + momentum * buf : buf     (when momentum != 0)
 *     w  -= lr * d
 *
 * The learning rate is an argument (it comes from the schedule each step); weight decay lives in the
 * settings so a tensor that must not decay (bias, BatchNorm) is stepped with a copy whose
 * weight_decay is 0. Elementwise, so results do not depend on the OpenMP thread count. */
#ifndef SWATC_TRAIN_OPTIM_H
#define SWATC_TRAIN_OPTIM_H

#include <stdint.h>

#include "util/err.h"

typedef struct sw_sgd {
  float momentum;     /* 0 = plain SGD (no buffer needed); SWAT reference: 0.9 */
  float dampening;    /* PyTorch's dampening; 0 in every reference setting */
  float weight_decay; /* L2 added to the gradient; SWAT reference: 5e-4 */
  int nesterov;       /* 1 = Nesterov momentum (needs momentum > 0 and dampening 0) */
} sw_sgd;

/* Checks the settings (finite, non-negative, Nesterov's conditions as PyTorch states them). */
int sw_sgd_check(const sw_sgd *o, sw_err *e);

/* Updates n parameters w in place from gradients g with learning rate lr; buf [n] is the momentum
 * buffer (may be NULL when momentum is 0), initialised from the gradient when first is nonzero. */
void sw_sgd_step(const sw_sgd *o, float lr, float *w, const float *g, float *buf, int64_t n, int first);

#endif
