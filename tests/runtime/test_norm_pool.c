/* BatchNormalization and pooling: fast vs reference on random shapes, finite differences of the
 * reference backward passes (fused ReLU, strides, pads, dilation, ceil_mode, count_include_pad),
 * running-statistics semantics, and independence from the thread count.
 *
 * Tolerances: BN fast vs reference 2e-5 relative to max|ref| (one-pass shifted variance vs two-pass
 * double); pooling fast vs reference 1e-6; finite differences with h = 1e-2: |num-ana| <= 1e-3 +
 * 1e-2*|ana| (BN) and, for the piecewise-linear pools (inputs spaced so no step crosses a tie),
 * 1e-4 + 2e-3*|ana|. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "runtime/kernels/bn.h"
#include "runtime/kernels/eltwise.h"
#include "runtime/kernels/kern_internal.h"
#include "runtime/kernels/pool.h"

/* ---------------------------------------------------------------------------------------------- */
/* BatchNorm */

typedef struct bn_ctx {
  bn_desc d;
  float *x, *scale, *bias, *y, *mean, *invstd;
  const float *g;
  int relu;
} bn_ctx;

static double bn_loss(void *ctx) {
  bn_ctx *c = ctx;
  bn_fwd_train_ref(&c->d, c->x, c->scale, c->bias, c->y, NULL, NULL, c->mean, c->invstd, c->relu);
  return tdot(c->y, c->g, (size_t)c->d.N * c->d.C * c->d.HW);
}

static void check_bn_case(bn_desc d, int relu, int fd) {
  size_t n = (size_t)d.N * d.C * d.HW;
  float *x = talloc(4 * n), *scale = talloc(4 * d.C), *bias = talloc(4 * d.C), *g = talloc(4 * n);
  float *y0 = talloc(4 * n), *y = talloc_nan(n), *dx0 = talloc(4 * n), *dx = talloc_nan(n);
  float *m0 = talloc(4 * d.C), *is0 = talloc(4 * d.C), *m = talloc(4 * d.C), *is = talloc(4 * d.C);
  float *rm0 = talloc(4 * d.C), *rv0 = talloc(4 * d.C), *rm = talloc(4 * d.C), *rv = talloc(4 * d.C);
  float *ds0 = talloc(4 * d.C), *db0 = talloc(4 * d.C), *ds = talloc(4 * d.C), *db = talloc(4 * d.C);
  /* Channel c has mean ~ 3c and spread ~ 1: the one-pass variance must not cancel. */
  for (size_t i = 0; i < n; i++) x[i] = (float)(3.0 * (double)((i / d.HW) % d.C) + trng_unit() * 2.0 - 1.0);
  trng_fill(scale, d.C, 0.5f, 1.5f), trng_fill(bias, d.C, -0.5f, 0.5f), trng_fill(g, n, -1, 1);
  /* For finite differences through the fused ReLU keep every pre-activation clear of the kink:
   * |xhat| < 1.8 for this data, so a bias of +-3 makes each channel all-pass or all-zero. */
  if (relu && fd)
    for (int c = 0; c < d.C; c++) bias[c] = c % 2 ? 3.0f : -3.0f;
  trng_fill(rm0, d.C, -1, 1), trng_fill(rv0, d.C, 0.5f, 2);
  memcpy(rm, rm0, 4 * d.C), memcpy(rv, rv0, 4 * d.C);
  float rm_start[64], rv_start[64];
  memcpy(rm_start, rm0, 4 * d.C), memcpy(rv_start, rv0, 4 * d.C);
  bn_fwd_train_ref(&d, x, scale, bias, y0, rm0, rv0, m0, is0, relu);
  bn_bwd_ref(&d, x, bias, g, scale, m0, is0, dx0, ds0, db0, relu);
  char what[128];
  void *scr = talloc(bn_scratch_bytes(&d));
  snprintf(what, sizeof what, "bn N%d C%d HW%lld relu%d", d.N, d.C, (long long)d.HW, relu);
  for (int t = 1; t <= 2; t++) {
    memcpy(rm, rm_start, 4 * d.C), memcpy(rv, rv_start, 4 * d.C);
    bn_fwd_train(&d, x, scale, bias, y, rm, rv, m, is, relu, scr, t);
    tcheck_close(what, y, y0, n, 2e-5);
    tcheck_close(what, m, m0, d.C, 2e-6);
    tcheck_close(what, is, is0, d.C, 2e-5);
    tcheck_close(what, rm, rm0, d.C, 2e-6);
    tcheck_close(what, rv, rv0, d.C, 2e-5);
    if (relu) { /* the backward's mask (recomputed from x) is exactly the forward's ReLU decision */
      size_t off = 0;
      for (size_t i = 0; i < n; i++) {
        int c = (int)((i / d.HW) % d.C);
        off += (y[i] > 0.0f) != bn_relu_keep(x[i], m[c], bn_relu_scale(scale[c], is[c]), bias[c]);
      }
      if (off) tfail("%s: the recomputed ReLU mask differs from the forward's on %zu elements", what, off);
    }
    bn_bwd(&d, x, bias, g, scale, m, is, dx, ds, db, relu, scr, t);
    tcheck_close(what, dx, dx0, n, 2e-5);
    tcheck_close(what, ds, ds0, d.C, 2e-5);
    tcheck_close(what, db, db0, d.C, 2e-5);
  }
  /* Running statistics by hand: momentum semantics and unbiased variance. */
  double M = (double)d.N * d.HW;
  for (int c = 0; c < d.C; c++) {
    double var = 1.0 / ((double)is0[c] * is0[c]) - d.eps;
    float want_m = (float)(rm_start[c] * d.momentum + m0[c] * (1.0 - d.momentum));
    float want_v = (float)(rv_start[c] * d.momentum + var * M / (M - 1) * (1.0 - d.momentum));
    tcheck_close("running mean by hand", &rm0[c], &want_m, 1, 1e-6);
    tcheck_close("running var by hand (unbiased)", &rv0[c], &want_v, 1, 1e-4);
  }
  /* Same results whatever the thread count (3: a split that cuts images unevenly). */
  float *y2 = talloc(4 * n), *dx2 = talloc(4 * n), m2[64], is2[64], ds2[64], db2[64];
  bn_fwd_train(&d, x, scale, bias, y, NULL, NULL, m, is, relu, scr, 1);
  bn_bwd(&d, x, bias, g, scale, m, is, dx, ds, db, relu, scr, 1);
  for (int t = 2; t <= 3; t++) {
    bn_fwd_train(&d, x, scale, bias, y2, NULL, NULL, m2, is2, relu, scr, t);
    tcheck_same("bn fwd T1 == T2, T3", y, y2, 4 * n);
    tcheck_same("bn fwd statistics T1 == T2, T3", m, m2, 4 * d.C);
    tcheck_same("bn fwd statistics T1 == T2, T3", is, is2, 4 * d.C);
    bn_bwd(&d, x, bias, g, scale, m, is, dx2, ds2, db2, relu, scr, t);
    tcheck_same("bn bwd T1 == T2, T3", dx, dx2, 4 * n);
    tcheck_same("bn bwd dscale T1 == T2, T3", ds, ds2, 4 * d.C);
    tcheck_same("bn bwd dbias T1 == T2, T3", db, db2, 4 * d.C);
  }
  if (fd) {
    bn_ctx c = {d, x, scale, bias, y, m, is, g, relu};
    snprintf(what, sizeof what, "bn dx N%d C%d HW%lld relu%d", d.N, d.C, (long long)d.HW, relu);
    tcheck_grad(what, bn_loss, &c, x, n, dx0, 1e-2, 1e-2, 1e-3, 30);
    snprintf(what, sizeof what, "bn dscale relu%d", relu);
    tcheck_grad(what, bn_loss, &c, scale, d.C, ds0, 1e-2, 1e-2, 1e-3, 30);
    snprintf(what, sizeof what, "bn dbias relu%d", relu);
    tcheck_grad(what, bn_loss, &c, bias, d.C, db0, 1e-2, 1e-2, 1e-3, 30);
  }
  /* Inference: fast vs reference, and with batch statistics it equals the training output. */
  float *var = talloc(4 * d.C);
  for (int c = 0; c < d.C; c++) var[c] = (float)(1.0 / ((double)is0[c] * is0[c]) - d.eps);
  bn_fwd_infer_ref(&d, x, scale, bias, m0, var, y2, relu);
  tcheck_close("bn inference with batch stats == training", y2, y0, n, 1e-4);
  bn_fwd_infer(&d, x, scale, bias, m0, var, y, relu, 2);
  tcheck_close("bn inference fast vs ref", y, y2, n, 2e-6);
  free(var), free(y2), free(dx2);
  free(x), free(scale), free(bias), free(g), free(y0), free(y), free(dx0), free(dx), free(m0), free(is0), free(m);
  free(is), free(rm0), free(rv0), free(rm), free(rv), free(ds0), free(db0), free(ds), free(db), free(scr);
}

/* bn_fwd_train_add_relu against the two kernels it replaces, bn_fwd_train (no ReLU) then add_relu:
 * the same bits in y, the mask, the statistics and the running statistics, on every thread count,
 * with and without the mask, and written over the residual. */
static void check_bn_add_relu(bn_desc d) {
  size_t n = (size_t)d.N * d.C * d.HW, nb = (n + 7) / 8;
  float *x = talloc(4 * n), *r = talloc(4 * n), *scale = talloc(4 * d.C), *bias = talloc(4 * d.C);
  float *y0 = talloc(4 * n), *y = talloc(4 * n), m0[128], is0[128], m[128], is[128], rm0[128], rv0[128], rm[128], rv[128];
  uint8_t *b0 = talloc(nb), *b = talloc(nb);
  for (size_t i = 0; i < n; i++) x[i] = (float)(3.0 * (double)((i / d.HW) % d.C) + trng_unit() * 2.0 - 1.0);
  trng_fill(r, n, -1.5f, 1.5f), trng_fill(scale, d.C, 0.5f, 1.5f), trng_fill(bias, d.C, -0.5f, 0.5f);
  for (size_t i = 0; i < n; i += 7) r[i] = i % 2 ? -0.0f : NAN; /* NaN passes through, -0 stays -0 */
  void *scr = talloc(bn_scratch_bytes(&d));
  for (int c = 0; c < d.C; c++) rm0[c] = 0.1f * (float)c, rv0[c] = 1.0f + 0.1f * (float)c;
  memcpy(rm, rm0, 4 * d.C), memcpy(rv, rv0, 4 * d.C);
  bn_fwd_train(&d, x, scale, bias, y0, rm0, rv0, m0, is0, 0, scr, 2);
  add_relu((int64_t)n, y0, r, y0, b0, 2);
  char what[128];
  for (int t = 1; t <= 3; t++)
    for (int how = 0; how < 3; how++) { /* 0: with the mask, 1: without, 2: over the residual */
      snprintf(what, sizeof what, "bn+add+relu N%d C%d HW%lld T=%d%s", d.N, d.C, (long long)d.HW, t,
               how == 1 ? " no mask" : how == 2 ? " in place" : "");
      float *out = how == 2 ? talloc(4 * n) : y;
      if (how == 2) memcpy(out, r, 4 * n);
      float rm1[128], rv1[128];
      memcpy(rm1, rm, 4 * d.C), memcpy(rv1, rv, 4 * d.C);
      memset(b, 0xa5, nb);
      bn_fwd_train_add_relu(&d, x, how == 2 ? out : r, scale, bias, out, how == 1 ? NULL : b, rm1, rv1, m, is, scr, t);
      tcheck_same(what, out, y0, 4 * n);
      if (how != 1) tcheck_same(what, b, b0, nb);
      tcheck_same(what, m, m0, 4 * d.C);
      tcheck_same(what, is, is0, 4 * d.C);
      tcheck_same(what, rm1, rm0, 4 * d.C);
      tcheck_same(what, rv1, rv0, 4 * d.C);
      if (how == 2) free(out);
    }
  free(x), free(r), free(scale), free(bias), free(y0), free(y), free(b0), free(b), free(scr);
}

static void check_bn(void) {
  bn_desc shapes[] = {{2, 3, 5, 1e-5f, 0.9f}, {4, 16, 64, 1e-5f, 0.9f}, {1, 5, 7, 1e-3f, 0.1f},
                      {7, 6, 1, 1e-5f, 0.9f}, {3, 2, 1031, 1e-5f, 0.99f}, {2, 40, 9, 1e-5f, 0.0f}};
  for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
    for (int relu = 0; relu <= 1; relu++) check_bn_case(shapes[i], relu, shapes[i].N * shapes[i].HW < 300);
  /* planes of every residue mod 8 (49: ResNet-20's 7x7, 196: 14x14, 784: 28x28), odd counts of them */
  bn_desc fused[] = {{2, 3, 5, 1e-5f, 0.9f}, {3, 16, 49, 1e-5f, 0.9f}, {5, 7, 196, 1e-5f, 0.9f}, {3, 5, 784, 1e-5f, 0.9f},
                     {9, 3, 1, 1e-5f, 0.9f}, {4, 5, 2, 1e-5f, 0.9f}, {3, 3, 3, 1e-5f, 0.9f}, {2, 9, 6, 1e-5f, 0.9f},
                     {3, 7, 12, 1e-5f, 0.9f}, {1, 1, 1, 1e-5f, 0.9f},
                     /* large enough for 2 and 3 threads, whose even splits would cut a mask byte */
                     {9, 85, 49, 1e-5f, 0.9f}, {5, 35, 196, 1e-5f, 0.9f},
                     /* many units of work (kern_steal), whose boundaries would cut mask bytes */
                     {64, 85, 49, 1e-5f, 0.9f}, {33, 70, 196, 1e-5f, 0.9f}};
  for (size_t i = 0; i < sizeof fused / sizeof fused[0]; i++) check_bn_add_relu(fused[i]);
}

/* ---------------------------------------------------------------------------------------------- */
/* Pooling */

static size_t xs_of(const pool_desc *d) { return (size_t)d->N * d->C * d->H * d->W; }
static size_t ys_of(const pool_desc *d) { return (size_t)d->N * d->C * d->P * d->Q; }

static pool_desc random_pool(void) {
  for (;;) {
    pool_desc d;
    memset(&d, 0, sizeof d);
    d.N = trng_int(1, 2), d.C = trng_int(1, 4), d.H = trng_int(1, 11), d.W = trng_int(1, 11);
    d.kh = trng_int(1, 4), d.kw = trng_int(1, 4);
    d.stride_h = trng_int(1, 3), d.stride_w = trng_int(1, 3);
    d.dil_h = trng_int(0, 3) ? 1 : 2, d.dil_w = trng_int(0, 3) ? 1 : 2;
    d.pad_t = trng_int(0, d.kh / 2), d.pad_l = trng_int(0, d.kw / 2);
    d.pad_b = trng_int(0, d.kh / 2), d.pad_r = trng_int(0, d.kw / 2);
    d.ceil_mode = trng_int(0, 1), d.count_include_pad = trng_int(0, 1);
    if (pool_desc_resolve(&d, NULL) == SW_OK) return d;
  }
}

/* Distinct values, at least 0.05 apart, so a finite-difference step never changes an argmax. */
static void fill_distinct(float *x, size_t n) {
  for (size_t i = 0; i < n; i++) x[i] = 0.05f * (float)i;
  for (size_t i = n; i > 1; i--) {
    size_t j = (size_t)(trng_unit() * i);
    float t = x[i - 1];
    x[i - 1] = x[j];
    x[j] = t;
  }
}

typedef struct pool_ctx {
  pool_desc d;
  int maxp;
  float *x, *y;
  int32_t *am;
  const float *g;
} pool_ctx;

static double pool_loss(void *ctx) {
  pool_ctx *c = ctx;
  if (c->maxp)
    maxpool_fwd_ref(&c->d, c->x, c->y, c->am);
  else
    avgpool_fwd_ref(&c->d, c->x, c->y);
  /* Outputs of windows without input elements are -inf and have no gradient: leave them out. */
  double s = 0.0;
  for (size_t i = 0; i < ys_of(&c->d); i++)
    if (isfinite(c->y[i])) s += (double)c->y[i] * c->g[i];
  return s;
}

static void desc_str(const pool_desc *d, char *buf, size_t n) {
  snprintf(buf, n, "N%d C%d %dx%d k%dx%d s%d,%d p%d,%d,%d,%d d%d,%d ceil%d incl%d", d->N, d->C, d->H, d->W, d->kh,
           d->kw, d->stride_h, d->stride_w, d->pad_t, d->pad_l, d->pad_b, d->pad_r, d->dil_h, d->dil_w, d->ceil_mode,
           d->count_include_pad);
}

/* maxpool_bwd_x (argmax recomputed from x, optionally the ReLU backward fused) against what it
 * replaces: dx from maxpool_fwd + maxpool_bwd, then ReluGrad's dx = x > 0 ? dx : 0; bit for bit. */
static void check_bwd_x(const pool_desc *d, const float *x, const float *g, const float *dx, int t, const char *ds) {
  size_t xs = xs_of(d);
  float *want = talloc(4 * xs), *got = talloc_nan(xs);
  void *scratch = talloc(maxpool_bwd_x_scratch(d) + 64);
  for (int relu = 0; relu <= 1; relu++) {
    for (size_t i = 0; i < xs; i++) want[i] = !relu || x[i] > 0.0f ? dx[i] : 0.0f;
    maxpool_bwd_x(d, g, x, relu, got, scratch, t);
    char what[256];
    snprintf(what, sizeof what, "maxpool bwd from x%s %s T%d", relu ? " + ReLU bwd" : "", ds, t);
    tcheck_same(what, got, want, 4 * xs);
  }
  free(want), free(got), free(scratch);
}

static void check_pool_case(const pool_desc *d, int fd) {
  size_t xs = xs_of(d), ys = ys_of(d);
  float *x = talloc(4 * xs), *g = talloc(4 * ys), *y0 = talloc(4 * ys), *y = talloc_nan(ys);
  float *dx0 = talloc(4 * xs), *dx = talloc_nan(xs);
  int32_t *am0 = talloc(4 * ys), *am = talloc(4 * ys);
  fill_distinct(x, xs); /* MaxPool: exact copies, ties impossible within the step */
  trng_fill(g, ys, -1, 1);
  char ds[160], what[256];
  desc_str(d, ds, sizeof ds);
  maxpool_fwd_ref(d, x, y0, am0);
  maxpool_bwd_ref(d, g, am0, dx0);
  for (int t = 1; t <= 2; t++) {
    maxpool_fwd(d, x, y, am, t);
    snprintf(what, sizeof what, "maxpool fwd %s T%d", ds, t);
    tcheck_close(what, y, y0, ys, 0);
    tcheck_same(what, am, am0, 4 * ys);
    maxpool_bwd(d, g, am, dx, t);
    snprintf(what, sizeof what, "maxpool bwd %s T%d", ds, t);
    tcheck_close(what, dx, dx0, xs, 1e-6);
    check_bwd_x(d, x, g, dx, t, ds);
  }
  if (fd) {
    pool_ctx c = {*d, 1, x, y, am, g};
    snprintf(what, sizeof what, "maxpool dx %s", ds);
    tcheck_grad(what, pool_loss, &c, x, xs, dx0, 1e-2, 2e-3, 1e-4, 30);
  }
  trng_fill(x, xs, -1, 1); /* AveragePool: small values, so output rounding stays far below the tolerance */
  avgpool_fwd_ref(d, x, y0);
  avgpool_bwd_ref(d, g, dx0);
  for (int t = 1; t <= 2; t++) {
    avgpool_fwd(d, x, y, t);
    snprintf(what, sizeof what, "avgpool fwd %s T%d", ds, t);
    tcheck_close(what, y, y0, ys, 1e-6);
    avgpool_bwd(d, g, dx, t);
    snprintf(what, sizeof what, "avgpool bwd %s T%d", ds, t);
    tcheck_close(what, dx, dx0, xs, 1e-6);
  }
  if (fd) {
    pool_ctx c = {*d, 0, x, y, am, g};
    snprintf(what, sizeof what, "avgpool dx %s", ds);
    tcheck_grad(what, pool_loss, &c, x, xs, dx0, 0.1, 2e-3, 1e-4, 30);
  }
  free(x), free(g), free(y0), free(y), free(dx0), free(dx), free(am0), free(am);
}

/* MaxPool with ties and NaN: the first maximum in window order wins, NaN beats every number; the
 * fast paths (2x2 and general) give the reference's values and indices, bit for bit. */
static void check_maxpool_ties_nan(void) {
  pool_desc ds[2] = {{2, 2, 6, 6, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0, 1, 1, 0, 0}, {2, 2, 6, 6, 0, 0, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0}};
  for (int k = 0; k < 2; k++) {
    pool_desc *d = &ds[k];
    SW_ASSERT(pool_desc_resolve(d, NULL) == SW_OK);
    size_t xs = xs_of(d), ys = ys_of(d);
    float *x = talloc(4 * xs), *y0 = talloc(4 * ys), *y = talloc(4 * ys);
    int32_t *a0 = talloc(4 * ys), *a = talloc(4 * ys);
    for (size_t i = 0; i < xs; i++) x[i] = (i * 7) % 5 == 0 ? NAN : (float)((i * 3) % 4); /* many ties, some NaN */
    maxpool_fwd_ref(d, x, y0, a0);
    maxpool_fwd(d, x, y, a, 2);
    tcheck_same(k ? "maxpool 3x3 ties/NaN values" : "maxpool 2x2 ties/NaN values", y, y0, 4 * ys);
    tcheck_same(k ? "maxpool 3x3 ties/NaN indices" : "maxpool 2x2 ties/NaN indices", a, a0, 4 * ys);
    float *g = talloc(4 * ys), *dx = talloc(4 * xs);
    trng_fill(g, ys, -1, 1);
    maxpool_bwd(d, g, a, dx, 2);
    check_bwd_x(d, x, g, dx, 2, k ? "3x3 ties/NaN" : "2x2 ties/NaN");
    free(g), free(dx);
    free(x), free(y0), free(y), free(a0), free(a);
  }
}

/* maxpool_bwd_x on a ReLU's output (LeNet's pattern): half the inputs exactly 0, so some windows' maximum
 * is 0 and the fused ReLU backward must drop their gradient (x > 0, not x >= 0). 2x2 (odd sizes: a row
 * and a column no window covers) and 3x3 windows. */
static void check_maxpool_relu_input(void) {
  pool_desc ds[2] = {{2, 3, 13, 11, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0, 1, 1, 0, 0}, {2, 3, 9, 9, 0, 0, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 0, 0}};
  for (int k = 0; k < 2; k++) {
    pool_desc *d = &ds[k];
    SW_ASSERT(pool_desc_resolve(d, NULL) == SW_OK);
    size_t xs = xs_of(d), ys = ys_of(d);
    float *x = talloc(4 * xs), *y = talloc(4 * ys), *g = talloc(4 * ys), *dx = talloc(4 * xs);
    int32_t *a = talloc(4 * ys);
    trng_fill(x, xs, -1, 1);
    size_t zero_windows = 0;
    for (size_t i = 0; i < xs; i++) x[i] = x[i] < 0.0f ? 0.0f : x[i];
    trng_fill(g, ys, -1, 1);
    for (int t = 1; t <= 2; t++) {
      maxpool_fwd(d, x, y, a, t);
      maxpool_bwd(d, g, a, dx, t);
      check_bwd_x(d, x, g, dx, t, k ? "3x3 on a ReLU output" : "2x2 on a ReLU output");
    }
    for (size_t i = 0; i < ys; i++) zero_windows += y[i] == 0.0f;
    if (zero_windows == 0) tfail("maxpool on a ReLU output: no window with maximum 0 (the case is not exercised)");
    free(x), free(y), free(g), free(dx), free(a);
  }
}

static void check_pool_semantics(void) {
  check_maxpool_ties_nan();
  check_maxpool_relu_input();
  /* Output sizes: floor vs ceil, and the PyTorch rule dropping a window that starts in the padding. */
  struct {
    pool_desc d;
    int P;
  } sz[] = {
      {{1, 1, 5, 5, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0, 1, 1, 0, 0}, 2},
      {{1, 1, 5, 5, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0, 1, 1, 1, 0}, 3},
      {{1, 1, 6, 6, 0, 0, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 0}, 4}, /* (6+2-3)/2 ceil = 3 -> +1 = 4; 3*2 < 7 keeps it */
      {{1, 1, 5, 5, 0, 0, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 0}, 3}, /* ceil gives 4, last starts at 6 >= 5+1: drop */
      {{1, 1, 32, 32, 0, 0, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 0}, 17}, /* torch: ceil(31/2)+1, 32 < 33 keeps it */
  };
  for (size_t i = 0; i < sizeof sz / sizeof sz[0]; i++) {
    pool_desc d = sz[i].d;
    if (pool_desc_resolve(&d, NULL) || d.P != sz[i].P) tfail("pool case %zu: P = %d, want %d", i, d.P, sz[i].P);
  }
  /* AveragePool divisors on a 3x3 ones image, 2x2 window, stride 2, pad 1, ceil_mode. */
  pool_desc d = {1, 1, 3, 3, 0, 0, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 0};
  SW_ASSERT(pool_desc_resolve(&d, NULL) == SW_OK);
  float ones[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1}, y[4];
  avgpool_fwd(&d, ones, y, 1);
  float want_ex[4] = {1, 1, 1, 1};
  tcheck_close("avgpool exclude pad", y, want_ex, 4, 0);
  d.count_include_pad = 1;
  avgpool_fwd(&d, ones, y, 1);
  float want_in[4] = {0.25f, 0.5f, 0.5f, 1.0f};
  tcheck_close("avgpool include pad", y, want_in, 4, 0);
  /* A ceil_mode window running past the padding: 4x4 ones, 3x3 window, stride 2, pad 1 -> 3x3 out;
   * the last window covers rows/cols 3..5 of which 5 lies beyond the padded input (not counted). */
  pool_desc d2 = {1, 1, 4, 4, 0, 0, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1};
  SW_ASSERT(pool_desc_resolve(&d2, NULL) == SW_OK && d2.P == 3);
  float ones16[16], y9[9], y9r[9];
  for (int i = 0; i < 16; i++) ones16[i] = 1.0f;
  avgpool_fwd(&d2, ones16, y9, 1);
  avgpool_fwd_ref(&d2, ones16, y9r);
  float w0 = 4.0f / 9.0f, w8 = 0.25f;
  tcheck_close("avgpool include pad, first window", &y9[0], &w0, 1, 1e-7);
  tcheck_close("avgpool include pad, ceil window past pad", &y9[8], &w8, 1, 1e-7);
  tcheck_close("avgpool include pad ref", y9r, y9, 9, 1e-7);
  /* Bad descriptors. */
  pool_desc bad = {1, 1, 2, 2, 0, 0, 5, 5, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0};
  sw_err e;
  sw_err_clear(&e);
  if (pool_desc_resolve(&bad, &e) != SW_EINPUT || !e.msg[0]) tfail("5x5 window on 2x2 accepted");
  /* Global average pool. */
  int N = 3, C = 4, HW = 50;
  float *x = talloc(4 * N * C * HW), *g = talloc(4 * N * C), *dx = talloc(4 * N * C * HW);
  float gy[12], want[12];
  trng_fill(x, N * C * HW, -1, 1), trng_fill(g, N * C, -1, 1);
  global_avgpool_fwd(N, C, HW, x, gy, 2);
  for (int i = 0; i < N * C; i++) {
    double s = 0;
    for (int j = 0; j < HW; j++) s += x[i * HW + j];
    want[i] = (float)(s / HW);
  }
  tcheck_close("global avgpool fwd", gy, want, N * C, 1e-6);
  global_avgpool_bwd(N, C, HW, g, dx, 2);
  /* adjoint: <gap(x), g> == <x, gap_bwd(g)> */
  float lhs = (float)tdot(gy, g, N * C), rhs = (float)tdot(x, dx, N * C * HW);
  tcheck_close("global avgpool adjoint", &rhs, &lhs, 1, 1e-5);
  free(x), free(g), free(dx);
}

int main(void) {
  trng_seed(4);
  tgroup_begin("batchnorm fast vs ref, running stats, fd");
  check_bn();
  tgroup_end();
  tgroup_begin("max/avg pool fast vs ref: fixed + 80 random");
  pool_desc fixed[] = {
      {128, 6, 28, 28, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0, 1, 1, 0, 0}, /* LeNet pool1 (the 2x2 fast path) */
      {3, 2, 13, 11, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0, 1, 1, 0, 0},  /* 2x2 fast path, odd sizes: last row/column unused */
      {3, 2, 13, 11, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0, 1, 1, 1, 0},  /* ceil mode: partial last windows, general path */
      {2, 3, 9, 9, 0, 0, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1},
      {2, 3, 8, 7, 0, 0, 3, 2, 1, 2, 0, 1, 2, 0, 2, 1, 1, 0},
  };
  for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
    SW_ASSERT(pool_desc_resolve(&fixed[i], NULL) == SW_OK);
    check_pool_case(&fixed[i], xs_of(&fixed[i]) < 2000);
  }
  for (int i = 0; i < 80; i++) {
    pool_desc d = random_pool();
    check_pool_case(&d, i < 40);
  }
  tgroup_end();
  tgroup_begin("maxpool 2x2, the plain C path");
  pool_use_portable(1); /* the path CPUs without AVX-512 take, against the same references */
  check_pool_case(&fixed[0], 0);
  check_pool_case(&fixed[1], 1);
  check_maxpool_ties_nan();
  check_maxpool_relu_input();
  pool_use_portable(0);
  tgroup_end();
  tgroup_begin("pool output sizes, divisors, global avg");
  check_pool_semantics();
  tgroup_end();
  return tresult();
}
