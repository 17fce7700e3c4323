/* Conv descriptor checks and the reference convolution loops (the definition the fast kernels are
 * tested against: no blocking, no tricks, one output element at a time, sums kept in double). */
#include <string.h>

#include "runtime/kernels/conv.h"

int conv_desc_resolve(conv_desc *d, sw_err *e) {
  if (d->N < 1 || d->C < 1 || d->H < 1 || d->W < 1 || d->K < 1 || d->R < 1 || d->S < 1)
    return sw_fail(e, SW_EINPUT, "Conv: sizes must be positive (N=%d C=%d H=%d W=%d K=%d R=%d S=%d)", d->N,
                   d->C, d->H, d->W, d->K, d->R, d->S);
  if (d->stride_h < 1 || d->stride_w < 1 || d->dil_h < 1 || d->dil_w < 1)
    return sw_fail(e, SW_EINPUT, "Conv: strides (%d,%d) and dilations (%d,%d) must be >= 1", d->stride_h,
                   d->stride_w, d->dil_h, d->dil_w);
  if (d->pad_t < 0 || d->pad_l < 0 || d->pad_b < 0 || d->pad_r < 0)
    return sw_fail(e, SW_EINPUT, "Conv: pads (%d,%d,%d,%d) must be >= 0", d->pad_t, d->pad_l, d->pad_b,
                   d->pad_r);
  if (d->groups < 1 || d->C % d->groups || d->K % d->groups)
    return sw_fail(e, SW_EINPUT, "Conv: group=%d must divide C=%d and K=%d", d->groups, d->C, d->K);
  int eh = d->dil_h * (d->R - 1) + 1, ew = d->dil_w * (d->S - 1) + 1;
  int hp = d->H + d->pad_t + d->pad_b, wp = d->W + d->pad_l + d->pad_r;
  if (eh > hp || ew > wp) {
    sw_fail(e, SW_EINPUT, "Conv: the %dx%d kernel (dilated extent %dx%d) is larger than the padded %dx%d input",
            d->R, d->S, eh, ew, hp, wp);
    sw_hint(e, "check the kernel_shape, dilations and pads attributes against the input size");
    return SW_EINPUT;
  }
  int P = (hp - eh) / d->stride_h + 1, Q = (wp - ew) / d->stride_w + 1;
  if ((d->P && d->P != P) || (d->Q && d->Q != Q))
    return sw_fail(e, SW_EINPUT, "Conv: output %dx%d does not match the computed %dx%d", d->P, d->Q, P, Q);
  d->P = P;
  d->Q = Q;
  return SW_OK;
}

double conv_desc_flops(const conv_desc *d) {
  return 2.0 * d->N * d->K * (double)(d->C / d->groups) * d->R * d->S * d->P * d->Q;
}

void conv_fwd_ref(const conv_desc *d, const float *x, const float *w, const float *b, float *y) {
  int Cg = d->C / d->groups, Kg = d->K / d->groups;
  for (int n = 0; n < d->N; n++)
    for (int k = 0; k < d->K; k++) {
      int g = k / Kg;
      for (int p = 0; p < d->P; p++)
        for (int q = 0; q < d->Q; q++) {
          double acc = b ? b[k] : 0.0;
          for (int c = 0; c < Cg; c++)
            for (int r = 0; r < d->R; r++) {
              int h = p * d->stride_h - d->pad_t + r * d->dil_h;
              if (h < 0 || h >= d->H) continue;
              for (int s = 0; s < d->S; s++) {
                int ww = q * d->stride_w - d->pad_l + s * d->dil_w;
                if (ww < 0 || ww >= d->W) continue;
                acc += (double)x[(((size_t)n * d->C + g * Cg + c) * d->H + h) * d->W + ww] *
                       w[(((size_t)k * Cg + c) * d->R + r) * d->S + s];
              }
            }
          y[(((size_t)n * d->K + k) * d->P + p) * d->Q + q] = (float)acc;
        }
    }
}

void conv_bwd_data_ref(const conv_desc *d, const float *dy, const float *w, float *dx) {
  int Cg = d->C / d->groups, Kg = d->K / d->groups;
  /* Gather form: each dx element sums the dy elements whose window covers it. */
  for (int n = 0; n < d->N; n++)
    for (int c = 0; c < d->C; c++) {
      int g = c / Cg, cl = c % Cg;
      for (int h = 0; h < d->H; h++)
        for (int ww = 0; ww < d->W; ww++) {
          double acc = 0.0;
          for (int kl = 0; kl < Kg; kl++) {
            int k = g * Kg + kl;
            for (int r = 0; r < d->R; r++) {
              int ph = h + d->pad_t - r * d->dil_h;
              if (ph < 0 || ph % d->stride_h) continue;
              int p = ph / d->stride_h;
              if (p >= d->P) continue;
              for (int s = 0; s < d->S; s++) {
                int qw = ww + d->pad_l - s * d->dil_w;
                if (qw < 0 || qw % d->stride_w) continue;
                int q = qw / d->stride_w;
                if (q >= d->Q) continue;
                acc += (double)dy[(((size_t)n * d->K + k) * d->P + p) * d->Q + q] *
                       w[(((size_t)k * Cg + cl) * d->R + r) * d->S + s];
              }
            }
          }
          dx[(((size_t)n * d->C + c) * d->H + h) * d->W + ww] = (float)acc;
        }
    }
}

void conv_bwd_weight_ref(const conv_desc *d, const float *x, const float *dy, float *dw, float *db) {
  int Cg = d->C / d->groups, Kg = d->K / d->groups;
  for (int k = 0; k < d->K; k++) {
    int g = k / Kg;
    for (int c = 0; c < Cg; c++)
      for (int r = 0; r < d->R; r++)
        for (int s = 0; s < d->S; s++) {
          double acc = 0.0;
          for (int n = 0; n < d->N; n++)
            for (int p = 0; p < d->P; p++) {
              int h = p * d->stride_h - d->pad_t + r * d->dil_h;
              if (h < 0 || h >= d->H) continue;
              for (int q = 0; q < d->Q; q++) {
                int ww = q * d->stride_w - d->pad_l + s * d->dil_w;
                if (ww < 0 || ww >= d->W) continue;
                acc += (double)dy[(((size_t)n * d->K + k) * d->P + p) * d->Q + q] *
                       x[(((size_t)n * d->C + g * Cg + c) * d->H + h) * d->W + ww];
              }
            }
          dw[(((size_t)k * Cg + c) * d->R + r) * d->S + s] = (float)acc;
        }
    if (db) {
      double acc = 0.0;
      for (int n = 0; n < d->N; n++)
        for (int i = 0; i < d->P * d->Q; i++) acc += dy[((size_t)n * d->K + k) * d->P * d->Q + i];
      db[k] = (float)acc;
    }
  }
}
