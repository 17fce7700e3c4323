/* BatchNormalization forward (training and inference) and backward (see bn.h). */
#include "runtime/kernels/bn.h"

#include <math.h>

#include "runtime/kernels/eltwise.h"
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

/* y = max(((x - mean) * a + b) + r, 0): affine_run's value, then Add and Relu as add_relu does them
 * (y may be r). */
KERN_CLONES static void affine_add_relu_run(int64_t n, const float *restrict x, float mean, float a, float b,
                                            const float *r, float *y) {
  for (int64_t i = 0; i < n; i++) {
    float s = fmaf(x[i] - mean, a, b) + r[i];
    y[i] = s < 0.0f ? 0.0f : s;
  }
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

size_t bn_scratch_bytes(const bn_desc *d) {
  return kern_align_up(sizeof(float) * (2 * (size_t)d->N * (size_t)d->C + 4 * (size_t)d->C));
}

/* The scratch of one call: per-plane partial sums [N*C] twice, then per-channel constants [C] x 4. */
typedef struct bn_scratch {
  float *p1, *p2, *k0, *k1, *k2, *k3;
} bn_scratch;

static bn_scratch bn_scratch_of(const bn_desc *d, void *scratch) {
  size_t P = (size_t)d->N * d->C;
  float *f = scratch;
  return (bn_scratch){f, f + P, f + 2 * P, f + 2 * P + d->C, f + 2 * P + 2 * d->C, f + 2 * P + 3 * d->C};
}

/* Threads for one call: a single thread below 32768 elements, where waking a second costs more than it saves. */
static int bn_threads(const bn_desc *d, int nthreads) {
  return (double)d->N * d->C * (double)d->HW < 32768 ? 1 : nthreads;
}

/* Both passes stream the tensor in memory order: worker t of T starts on a contiguous range of the N*C
 * planes (image-major), so every thread reads long sequential runs whatever HW is (channel-major
 * order read one HW-float plane per image, 50 KB apart, and fell to half the bandwidth; with 7x7
 * planes to a quarter), and takes units of planes from the others' ends when it is done (kern_steal).
 * The reduction stays the fixed one: each plane's partial sums are stored, then each channel adds its
 * planes in image order in double, so results do not depend on the split. */
/* One training call's operands, shared by the stages of its job (kern_parallel_stages). */
typedef struct bn_job {
  const bn_desc *d;
  const float *x, *scale, *bias, *dy, *save_mean_in, *save_invstd_in;
  const float *mean, *var; /* inference: the running statistics */
  float *y, *dx, *running_mean, *running_var, *save_mean, *save_invstd, *dscale, *dbias;
  const float *res; /* bn_fwd_train_add_relu: the residual; bits: its optional ReLU mask */
  uint8_t *bits;
  int relu;
  bn_scratch s;
  int64_t unit;          /* planes per unit of the plane stages */
  kern_steal *st1, *st3; /* the units of stage 1 and of stage 3 (locals of the entry function) */
} bn_job;

/* Sets up the plane stages' units for T parts in st1 and st3 (NULL for a one-stage job): at least
 * 16 Ki floats (a claim costs a few cache misses), a multiple of `align` planes. */
static void plane_units(bn_job *j, kern_steal *st1, kern_steal *st3, int T, int64_t align) {
  int64_t np = (int64_t)j->d->N * j->d->C, u = (16384 + j->d->HW - 1) / j->d->HW;
  j->unit = (u + align - 1) / align * align;
  j->st1 = st1, j->st3 = st3;
  kern_steal_init_units(st1, np, j->unit, T);
  if (st3) kern_steal_init_units(st3, np, j->unit, T);
}

/* Part t's next range of planes [*lo, *hi) of the N*C (image-major) from q; 0 when none is left. */
static int next_planes(const bn_job *j, kern_steal *q, int t, int T, int64_t *lo, int64_t *hi) {
  return kern_steal_range(q, (int64_t)j->d->N * j->d->C, j->unit, t, T, lo, hi);
}

/* Channel c's sums of the planes' partial sums p1 and p2, in image order, in double. */
static void channel_sums(const bn_job *j, int64_t c, double *s1, double *s2) {
  int64_t C = j->d->C;
  double a = 0.0, b = 0.0;
  for (int n = 0; n < j->d->N; n++) {
    a += j->s.p1[(int64_t)n * C + c];
    b += j->s.p2[(int64_t)n * C + c];
  }
  *s1 = a, *s2 = b;
}

/* Forward stage 1: each plane's shifted sums (with the shift near the mean, sum(v^2) - sum(v)^2/M
 * does not cancel badly). */
static void fwd_sums(void *ctx, int t, int T) {
  bn_job *j = ctx;
  int64_t C = j->d->C, HW = j->d->HW, lo, hi;
  while (next_planes(j, j->st1, t, T, &lo, &hi))
    for (int64_t q = lo; q < hi; q++) stats_run(HW, j->x + q * HW, j->x[(q % C) * HW], j->s.p1 + q, j->s.p2 + q);
}

/* Forward stage 2: per channel, the planes' sums in image order: mean, invstd, running statistics. */
static void fwd_channels(void *ctx, int t, int T) {
  const bn_job *j = ctx;
  const bn_desc *d = j->d;
  int64_t C = d->C, HW = d->HW, c0, c1;
  double M = (double)d->N * d->HW;
  kern_split(C, t, T, &c0, &c1);
  for (int64_t c = c0; c < c1; c++) {
    double s1, s2;
    channel_sums(j, c, &s1, &s2);
    double m1 = s1 / M, var = s2 / M - m1 * m1;
    if (var < 0.0) var = 0.0;
    double mean = j->x[c * HW] + m1, invstd = 1.0 / sqrt(var + d->eps);
    j->s.k0[c] = (float)mean;
    j->s.k1[c] = bn_relu_scale(j->scale[c], (float)invstd); /* what the backward recomputes from save_invstd */
    if (j->save_mean) j->save_mean[c] = (float)mean;
    if (j->save_invstd) j->save_invstd[c] = (float)invstd;
    update_running(d, (int)c, mean, var, j->running_mean, j->running_var);
  }
}

/* Planes of bn_fwd_train_add_relu's units are a multiple of: each unit starts on a byte of the mask
 * (8 / gcd(HW, 8) planes), so no byte is written by two threads. */
static int64_t mask_align(int64_t HW) {
  int64_t a = 8;
  while (a > 1 && (HW * (a / 2)) % 8 == 0) a /= 2;
  return a;
}

/* Forward stage 3, plane by plane: y = a * (x - mean) + bias (then ReLU), or with a residual
 * y = max(BN(x) + res, 0) and its bit mask (units of mask_align planes). */
static void fwd_affine(void *ctx, int t, int T) {
  bn_job *j = ctx;
  int64_t C = j->d->C, HW = j->d->HW, lo, hi;
  while (next_planes(j, j->st3, t, T, &lo, &hi))
    for (int64_t q = lo; q < hi; q++) {
      int64_t c = q % C;
      if (!j->res) {
        affine_run(HW, j->x + q * HW, j->s.k0[c], j->s.k1[c], j->bias[c], j->relu, j->y + q * HW);
        continue;
      }
      affine_add_relu_run(HW, j->x + q * HW, j->s.k0[c], j->s.k1[c], j->bias[c], j->res + q * HW, j->y + q * HW);
      if (j->bits) relu_mask_at(q * HW, HW, j->y + q * HW, j->bits);
    }
}

/* The three forward stages of job j (its statistics' scratch set) on the plane units for nthreads. */
static void fwd_train_run(bn_job *j, int nthreads) {
  void (*const stages[3])(void *, int, int) = {fwd_sums, fwd_channels, fwd_affine};
  kern_steal st1, st3;
  int T = bn_threads(j->d, nthreads);
  plane_units(j, &st1, &st3, T, j->res ? mask_align(j->d->HW) : 1);
  kern_parallel_stages(T, 3, stages, j);
}

void bn_fwd_train_add_relu(const bn_desc *d, const float *x, const float *res, const float *scale, const float *bias,
                           float *y, uint8_t *bits, float *running_mean, float *running_var, float *save_mean,
                           float *save_invstd, void *scratch, int nthreads) {
  SW_ASSERT(res);
  bn_job j = {.d = d, .x = x, .scale = scale, .bias = bias, .y = y, .running_mean = running_mean,
              .running_var = running_var, .save_mean = save_mean, .save_invstd = save_invstd, .res = res,
              .bits = bits, .s = bn_scratch_of(d, scratch)};
  fwd_train_run(&j, nthreads);
}

void bn_fwd_train(const bn_desc *d, const float *x, const float *scale, const float *bias, float *y,
                  float *running_mean, float *running_var, float *save_mean, float *save_invstd, int relu,
                  void *scratch, int nthreads) {
  bn_job j = {.d = d, .x = x, .scale = scale, .bias = bias, .y = y, .running_mean = running_mean,
              .running_var = running_var, .save_mean = save_mean, .save_invstd = save_invstd, .relu = relu,
              .s = bn_scratch_of(d, scratch)};
  fwd_train_run(&j, nthreads);
}

/* The ReLU's gate parameters of channel c for the backward (ra = 0, rb = 0 without ReLU). */
static void bwd_gate(const bn_job *j, int64_t c, float *ra, float *rb) {
  *ra = j->relu ? bn_relu_scale(j->scale[c], j->save_invstd_in[c]) : 0.0f;
  *rb = j->relu ? j->bias[c] : 0.0f;
}

/* Backward stage 1: each plane's sums of g and g * (x - mean) (g = dy, gated by the ReLU). */
static void bwd_sums(void *ctx, int t, int T) {
  bn_job *j = ctx;
  int64_t C = j->d->C, HW = j->d->HW, lo, hi;
  while (next_planes(j, j->st1, t, T, &lo, &hi))
    for (int64_t q = lo; q < hi; q++) {
      int64_t c = q % C;
      float ra, rb;
      bwd_gate(j, c, &ra, &rb);
      grad_sums_run(HW, j->x + q * HW, ra, rb, j->dy + q * HW, j->save_mean_in[c], j->relu, j->s.p1 + q,
                    j->s.p2 + q);
    }
}

/* Backward stage 2: per channel, dscale, dbias and the constants of dx. */
static void bwd_channels(void *ctx, int t, int T) {
  const bn_job *j = ctx;
  const bn_desc *d = j->d;
  int64_t C = d->C, cl, ch;
  double M = (double)d->N * d->HW;
  kern_split(C, t, T, &cl, &ch);
  for (int64_t c = cl; c < ch; c++) {
    double invstd = j->save_invstd_in[c], sg, sgxm;
    channel_sums(j, c, &sg, &sgxm);
    double ds = sgxm * invstd; /* dscale = sum g * xhat */
    /* dx = a*g - k*(x - mean) + c0 with a = scale*invstd, k = a*invstd*dscale/M, c0 = -a*dbias/M. */
    double a = j->scale[c] * invstd, k = a * invstd * ds / M, c0 = -a * sg / M;
    j->s.k0[c] = (float)a;
    j->s.k1[c] = (float)k;
    j->s.k2[c] = (float)c0;
    if (j->dbias) j->dbias[c] = (float)sg;
    if (j->dscale) j->dscale[c] = (float)ds;
  }
}

/* Backward stage 3: dx, plane by plane. */
static void bwd_dx(void *ctx, int t, int T) {
  bn_job *j = ctx;
  int64_t C = j->d->C, HW = j->d->HW, lo, hi;
  while (next_planes(j, j->st3, t, T, &lo, &hi))
    for (int64_t q = lo; q < hi; q++) {
      int64_t c = q % C;
      float ra, rb;
      bwd_gate(j, c, &ra, &rb);
      dx_run(HW, j->x + q * HW, ra, rb, j->dy + q * HW, j->save_mean_in[c], j->s.k0[c], j->s.k1[c], j->s.k2[c],
             j->relu, j->dx + q * HW);
    }
}

void bn_bwd(const bn_desc *d, const float *x, const float *bias, const float *dy, const float *scale,
            const float *save_mean, const float *save_invstd, float *dx, float *dscale, float *dbias, int relu,
            void *scratch, int nthreads) {
  bn_job j = {.d = d, .x = x, .scale = scale, .bias = bias, .dy = dy, .save_mean_in = save_mean,
              .save_invstd_in = save_invstd, .dx = dx, .dscale = dscale, .dbias = dbias, .relu = relu,
              .s = bn_scratch_of(d, scratch)};
  void (*const stages[3])(void *, int, int) = {bwd_sums, bwd_channels, bwd_dx};
  kern_steal st1, st3;
  plane_units(&j, &st1, &st3, bn_threads(d, nthreads), 1);
  kern_parallel_stages(bn_threads(d, nthreads), 3, stages, &j);
}

/* Inference: y = a * (x - mean) + bias (then ReLU) from the running statistics, plane by plane. */
static void infer_planes(void *ctx, int t, int T) {
  bn_job *j = ctx;
  int64_t C = j->d->C, HW = j->d->HW, lo, hi;
  while (next_planes(j, j->st1, t, T, &lo, &hi))
    for (int64_t q = lo; q < hi; q++) {
      int64_t c = q % C;
      double invstd = 1.0 / sqrt((double)j->var[c] + j->d->eps);
      float a = (float)(j->scale[c] * invstd);
      affine_run(HW, j->x + q * HW, j->mean[c], a, j->bias[c], j->relu, j->y + q * HW);
    }
}

void bn_fwd_infer(const bn_desc *d, const float *x, const float *scale, const float *bias, const float *mean,
                  const float *var, float *y, int relu, int nthreads) {
  bn_job j = {.d = d, .x = x, .scale = scale, .bias = bias, .mean = mean, .var = var, .y = y, .relu = relu};
  kern_steal st1;
  plane_units(&j, &st1, NULL, bn_threads(d, nthreads), 1);
  kern_parallel(bn_threads(d, nthreads), infer_planes, &j);
}
