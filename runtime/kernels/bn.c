/* BatchNormalization forward (training and inference) and backward (see bn.h). */
#include "runtime/kernels/bn.h"

#include <math.h>

#include "runtime/kernels/kern_internal.h"

/* Running-statistics update shared by both versions (unbiased variance for the running value). */
static void update_running(const bn_desc *d, int c, double mean, double var, float *rm, float *rv) {
  double M = (double)d->N * d->HW;
  double unbiased = M > 1 ? var * M / (M - 1) : var;
  if (rm) rm[c] = (float)(rm[c] * (double)d->momentum + mean * (1.0 - d->momentum));
  if (rv) rv[c] = (float)(rv[c] * (double)d->momentum + unbiased * (1.0 - d->momentum));
}

/* ---------------------------------------------------------------------------------------------
 * Reference. */

#define AT(n, c, i) (((size_t)(n) * d->C + (c)) * d->HW + (i))

void bn_fwd_train_ref(const bn_desc *d, const float *x, const float *scale, const float *bias, float *y,
                      float *running_mean, float *running_var, float *save_mean, float *save_invstd, int relu) {
  double M = (double)d->N * d->HW;
  for (int c = 0; c < d->C; c++) {
    double sum = 0.0, sq = 0.0;
    for (int n = 0; n < d->N; n++)
      for (int64_t i = 0; i < d->HW; i++) sum += x[AT(n, c, i)];
    double mean = sum / M;
    for (int n = 0; n < d->N; n++)
      for (int64_t i = 0; i < d->HW; i++) sq += (x[AT(n, c, i)] - mean) * (x[AT(n, c, i)] - mean);
    double var = sq / M, invstd = 1.0 / sqrt(var + d->eps);
    for (int n = 0; n < d->N; n++)
      for (int64_t i = 0; i < d->HW; i++) {
        double v = scale[c] * (x[AT(n, c, i)] - mean) * invstd + bias[c];
        y[AT(n, c, i)] = (float)(relu && v < 0 ? 0.0 : v);
      }
    if (save_mean) save_mean[c] = (float)mean;
    if (save_invstd) save_invstd[c] = (float)invstd;
    update_running(d, c, mean, var, running_mean, running_var);
  }
}

void bn_bwd_ref(const bn_desc *d, const float *x, const float *bias, const float *dy, const float *scale,
                const float *save_mean, const float *save_invstd, float *dx, float *dscale, float *dbias, int relu) {
  double M = (double)d->N * d->HW;
  for (int c = 0; c < d->C; c++) {
    double mean = save_mean[c], invstd = save_invstd[c], sg = 0.0, sgx = 0.0;
    float ra = relu ? bn_relu_scale(scale[c], save_invstd[c]) : 0.0f, rb = relu ? bias[c] : 0.0f;
#define KEEP(n, i) (!relu || bn_relu_keep(x[AT(n, c, i)], save_mean[c], ra, rb))
    for (int n = 0; n < d->N; n++)
      for (int64_t i = 0; i < d->HW; i++) {
        double g = KEEP(n, i) ? dy[AT(n, c, i)] : 0.0;
        sg += g;
        sgx += g * (x[AT(n, c, i)] - mean) * invstd;
      }
    for (int n = 0; n < d->N; n++)
      for (int64_t i = 0; i < d->HW; i++) {
        double g = KEEP(n, i) ? dy[AT(n, c, i)] : 0.0;
        double xhat = (x[AT(n, c, i)] - mean) * invstd;
        dx[AT(n, c, i)] = (float)(scale[c] * invstd / M * (M * g - sg - xhat * sgx));
      }
    if (dbias) dbias[c] = (float)sg;
    if (dscale) dscale[c] = (float)sgx;
#undef KEEP
  }
}

void bn_fwd_infer_ref(const bn_desc *d, const float *x, const float *scale, const float *bias, const float *mean,
                      const float *var, float *y, int relu) {
  for (int c = 0; c < d->C; c++) {
    double invstd = 1.0 / sqrt((double)var[c] + d->eps);
    for (int n = 0; n < d->N; n++)
      for (int64_t i = 0; i < d->HW; i++) {
        double v = scale[c] * (x[AT(n, c, i)] - (double)mean[c]) * invstd + bias[c];
        y[AT(n, c, i)] = (float)(relu && v < 0 ? 0.0 : v);
      }
  }
}

/* ---------------------------------------------------------------------------------------------
 * Fast: one channel per thread task, vectorised runs of HW contiguous floats. */

KERN_CLONES static void stats_run(int64_t n, const float *restrict x, float shift, float *s1, float *s2) {
  float a = 0.0f, b = 0.0f;
#pragma omp simd reduction(+ : a, b)
  for (int64_t i = 0; i < n; i++) {
    float v = x[i] - shift;
    a += v;
    b += v * v;
  }
  *s1 = a;
  *s2 = b;
}

/* y = (x - mean) * a + b: centred first, so a large mean does not cost precision; one fmaf, so the
 * fused ReLU decides exactly as bn_relu_keep does in the backward. */
KERN_CLONES static void affine_run(int64_t n, const float *restrict x, float mean, float a, float b, int relu,
                                   float *restrict y) {
  if (relu)
    for (int64_t i = 0; i < n; i++) {
      float v = fmaf(x[i] - mean, a, b);
      y[i] = v < 0.0f ? 0.0f : v; /* NaN stays NaN; bn_relu_keep says 0 for it and for -0 */
    }
  else
    for (int64_t i = 0; i < n; i++) y[i] = fmaf(x[i] - mean, a, b);
}

/* Sums of g and g * (x - mean) over a run, g being dy masked by the fused ReLU (decided from x with
 * the forward's multiplier ra and bias rb). */
KERN_CLONES static void grad_sums_run(int64_t n, const float *restrict x, float ra, float rb, const float *restrict dy,
                                      float mean, int relu, float *sg, float *sgx) {
  float a = 0.0f, b = 0.0f;
  if (relu) {
#pragma omp simd reduction(+ : a, b)
    for (int64_t i = 0; i < n; i++) {
      float g = fmaf(x[i] - mean, ra, rb) > 0.0f ? dy[i] : 0.0f;
      a += g;
      b += g * (x[i] - mean);
    }
  } else {
#pragma omp simd reduction(+ : a, b)
    for (int64_t i = 0; i < n; i++) {
      a += dy[i];
      b += dy[i] * (x[i] - mean);
    }
  }
  *sg = a;
  *sgx = b;
}

/* dx = a*g - k*(x - mean) + c0, g being dy masked by the fused ReLU (as in grad_sums_run). */
KERN_CLONES static void dx_run(int64_t n, const float *restrict x, float ra, float rb, const float *restrict dy,
                               float mean, float a, float k, float c0, int relu, float *restrict dx) {
  if (relu)
    for (int64_t i = 0; i < n; i++) dx[i] = a * (fmaf(x[i] - mean, ra, rb) > 0.0f ? dy[i] : 0.0f) - k * (x[i] - mean) + c0;
  else
    for (int64_t i = 0; i < n; i++) dx[i] = a * dy[i] - k * (x[i] - mean) + c0;
}

void bn_fwd_train(const bn_desc *d, const float *x, const float *scale, const float *bias, float *y,
                  float *running_mean, float *running_var, float *save_mean, float *save_invstd, int relu,
                  int nthreads) {
  double M = (double)d->N * d->HW;
#pragma omp parallel for num_threads(nthreads) schedule(static) if (nthreads > 1 && d->C > 1)
  for (int c = 0; c < d->C; c++) {
    /* Shifted sums: with the shift near the mean, sum(v^2) - sum(v)^2/M does not cancel badly. */
    float shift = x[AT(0, c, 0)];
    double s1 = 0.0, s2 = 0.0;
    for (int n = 0; n < d->N; n++) {
      float a, b;
      stats_run(d->HW, x + AT(n, c, 0), shift, &a, &b);
      s1 += a;
      s2 += b;
    }
    double m1 = s1 / M, var = s2 / M - m1 * m1;
    if (var < 0.0) var = 0.0;
    double mean = shift + m1, invstd = 1.0 / sqrt(var + d->eps);
    float a = bn_relu_scale(scale[c], (float)invstd); /* what the backward recomputes from save_invstd */
    for (int n = 0; n < d->N; n++) affine_run(d->HW, x + AT(n, c, 0), (float)mean, a, bias[c], relu, y + AT(n, c, 0));
    if (save_mean) save_mean[c] = (float)mean;
    if (save_invstd) save_invstd[c] = (float)invstd;
    update_running(d, c, mean, var, running_mean, running_var);
  }
}

void bn_bwd(const bn_desc *d, const float *x, const float *bias, const float *dy, const float *scale,
            const float *save_mean, const float *save_invstd, float *dx, float *dscale, float *dbias, int relu,
            int nthreads) {
  double M = (double)d->N * d->HW;
#pragma omp parallel for num_threads(nthreads) schedule(static) if (nthreads > 1 && d->C > 1)
  for (int c = 0; c < d->C; c++) {
    float mean = save_mean[c];
    float ra = relu ? bn_relu_scale(scale[c], save_invstd[c]) : 0.0f, rb = relu ? bias[c] : 0.0f;
    double invstd = save_invstd[c], sg = 0.0, sgxm = 0.0;
    for (int n = 0; n < d->N; n++) {
      float a, b;
      grad_sums_run(d->HW, x + AT(n, c, 0), ra, rb, dy + AT(n, c, 0), mean, relu, &a, &b);
      sg += a;
      sgxm += b;
    }
    double ds = sgxm * invstd; /* dscale = sum g * xhat */
    /* dx = a*g - k*(x - mean) + c0 with a = scale*invstd, k = a*invstd*dscale/M, c0 = -a*dbias/M. */
    double a = scale[c] * invstd, k = a * invstd * ds / M, c0 = -a * sg / M;
    for (int n = 0; n < d->N; n++)
      dx_run(d->HW, x + AT(n, c, 0), ra, rb, dy + AT(n, c, 0), mean, (float)a, (float)k, (float)c0, relu,
             dx + AT(n, c, 0));
    if (dbias) dbias[c] = (float)sg;
    if (dscale) dscale[c] = (float)ds;
  }
}

void bn_fwd_infer(const bn_desc *d, const float *x, const float *scale, const float *bias, const float *mean,
                  const float *var, float *y, int relu, int nthreads) {
#pragma omp parallel for num_threads(nthreads) schedule(static) if (nthreads > 1 && d->C > 1)
  for (int c = 0; c < d->C; c++) {
    double invstd = 1.0 / sqrt((double)var[c] + d->eps);
    float a = (float)(scale[c] * invstd);
    for (int n = 0; n < d->N; n++) affine_run(d->HW, x + AT(n, c, 0), mean[c], a, bias[c], relu, y + AT(n, c, 0));
  }
}
