#include "train/optim.h"

#include <math.h>


/* Below this many elements a tensor is stepped by one thread (fork/join would cost more). */
#define PAR_MIN 32768

int sw_sgd_check(const sw_sgd *o, sw_err *e) {
  if (!isfinite(o->momentum) || o->momentum < 0)
    return sw_fail(e, SW_EUSAGE, "invalid momentum %g (must be >= 0)", (double)o->momentum);
  if (!isfinite(o->dampening) || o->dampening < 0 || o->dampening > 1)
    return sw_fail(e, SW_EUSAGE, "invalid dampening %g (must be in [0, 1])", (double)o->dampening);
  if (!isfinite(o->weight_decay) || o->weight_decay < 0)
    return sw_fail(e, SW_EUSAGE, "invalid weight decay %g (must be >= 0)", (double)o->weight_decay);
  if (o->nesterov && (o->momentum <= 0 || o->dampening != 0)) {
    sw_fail(e, SW_EUSAGE, "Nesterov momentum requires momentum > 0 and zero dampening");
    return sw_hint(e, "set a momentum (e.g. 0.9) or drop --nesterov");
  }
  return SW_OK;
}

void sw_sgd_step(const sw_sgd *o, float lr, float *restrict w, const float *restrict g, float *restrict buf,
                 int64_t n, int first) {
  const float wd = o->weight_decay, mu = o->momentum, damp = 1.0f - o->dampening;
  if (mu == 0.0f) {
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) w[i] -= lr * (g[i] + wd * w[i]);
    return;
  }
  SW_ASSERT(buf != NULL);
  if (first) {
    if (o->nesterov) {
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
      for (int64_t i = 0; i < n; i++) {
        float d = g[i] + wd * w[i];
        buf[i] = d;
        w[i] -= lr * (d + mu * d);
      }
    } else {
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
      for (int64_t i = 0; i < n; i++) {
        float d = g[i] + wd * w[i];
        buf[i] = d;
        w[i] -= lr * d;
      }
    }
    return;
  }
  if (o->nesterov) {
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
      float d = g[i] + wd * w[i];
      float b = mu * buf[i] + damp * d;
      buf[i] = b;
      w[i] -= lr * (d + mu * b);
    }
  } else {
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
      float d = g[i] + wd * w[i];
      float b = mu * buf[i] + damp * d;
      buf[i] = b;
      w[i] -= lr * b;
    }
  }
}
