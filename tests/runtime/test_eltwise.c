/* Elementwise kernels: activations (fast vs reference, finite differences away from the kinks),
 * broadcasting Add/Sub/Mul/Div (values and finite differences of the reducing backward), Softmax /
 * LogSoftmax, SoftmaxCrossEntropyLoss (ignore_index, class weights, reductions, bad labels) and
 * Dropout (mask statistics, independence from the thread count, reproducibility), Sum/Neg (sum_n).
 *
 * Tolerances: fast vs reference 1e-6 relative (same formulas, different vectorisation); finite
 * differences with h = 1e-2 (smooth ops: |num-ana| <= 1e-3 + 1e-2*|ana|, the error of a central
 * difference of a float forward), linear ops with h = 0.1: 1e-4 + 2e-3*|ana|. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "runtime/kernels/eltwise.h"
#include "runtime/kernels/softmax.h"

/* Values in [-2, 2] kept at least 0.05 away from the kinks at 0, -0.5 and 0.7 (the Clip bounds
 * used below), so a finite-difference step of 0.01 never crosses one. */
static void fill_away_from_kinks(float *x, size_t n) {
  for (size_t i = 0; i < n; i++) {
    float v;
    do v = (float)(trng_unit() * 4.0 - 2.0);
    while (fabsf(v) < 0.05f || fabsf(v + 0.5f) < 0.05f || fabsf(v - 0.7f) < 0.05f);
    x[i] = v;
  }
}

typedef struct act_ctx {
  act_desc a;
  int64_t n;
  float *x, *y;
  const float *g;
} act_ctx;

static double act_loss(void *ctx) {
  act_ctx *c = ctx;
  act_fwd_ref(&c->a, c->n, c->x, c->y);
  return tdot(c->y, c->g, c->n);
}

static void check_activations(void) {
  const char *names[] = {"relu", "leaky_relu", "clip", "sigmoid", "tanh"};
  act_desc descs[] = {{ACT_RELU, 0, 0, 0}, {ACT_LEAKY_RELU, 0.1f, 0, 0}, {ACT_CLIP, 0, -0.5f, 0.7f},
                      {ACT_SIGMOID, 0, 0, 0}, {ACT_TANH, 0, 0, 0}};
  int64_t sizes[] = {1, 17, 1000, 70001};
  for (int k = 0; k < ACT_NKINDS; k++)
    for (size_t si = 0; si < 4; si++) {
      int64_t n = sizes[si];
      float *x = talloc(4 * n), *y0 = talloc(4 * n), *y = talloc_nan(n), *dy = talloc(4 * n);
      float *dx0 = talloc(4 * n), *dx = talloc_nan(n);
      fill_away_from_kinks(x, n);
      trng_fill(dy, n, -1, 1);
      act_fwd_ref(&descs[k], n, x, y0);
      act_bwd_ref(&descs[k], n, x, y0, dy, dx0);
      char what[96];
      for (int t = 1; t <= 2; t++) {
        act_fwd(&descs[k], n, x, y, t);
        snprintf(what, sizeof what, "%s fwd n=%lld T%d", names[k], (long long)n, t);
        tcheck_close(what, y, y0, n, 1e-6);
        act_bwd(&descs[k], n, x, y, dy, dx, t);
        snprintf(what, sizeof what, "%s bwd n=%lld T%d", names[k], (long long)n, t);
        tcheck_close(what, dx, dx0, n, 1e-6);
      }
      if (n <= 1000) {
        act_ctx c = {descs[k], n, x, y, dy};
        snprintf(what, sizeof what, "%s finite differences n=%lld", names[k], (long long)n);
        tcheck_grad(what, act_loss, &c, x, n, dx0, 1e-2, 1e-2, 1e-3, 40);
      }
      free(x), free(y0), free(y), free(dy), free(dx0), free(dx);
    }
  /* Exact values at and around the kinks, PyTorch's conventions. */
  float xs[] = {-1.0f, 0.0f, 2.0f, -0.5f, 0.7f, NAN};
  float g1[6] = {1, 1, 1, 1, 1, 1}, out[6];
  act_bwd_ref(&descs[0], 3, xs, NULL, g1, out);
  float want_relu[3] = {0, 0, 1};
  tcheck_close("relu'(-1,0,2)", out, want_relu, 3, 0);
  act_bwd_ref(&descs[1], 3, xs, NULL, g1, out);
  float want_leaky[3] = {0.1f, 0.1f, 1};
  tcheck_close("leaky_relu'(-1,0,2)", out, want_leaky, 3, 0);
  act_bwd_ref(&descs[2], 5, xs, NULL, g1, out);
  float want_clip[5] = {0, 1, 0, 1, 1};
  tcheck_close("clip'(-1,0,2,lo,hi)", out, want_clip, 5, 0);
  act_fwd(&descs[0], 6, xs, out, 1);
  if (!isnan(out[5])) tfail("relu(NaN) is %g, want NaN", out[5]);
}

/* ---------------------------------------------------------------------------------------------- */

typedef struct bin_ctx {
  binop_kind op;
  kshape a, b, y;
  float *A, *B, *Y;
  const float *g;
} bin_ctx;

static double bin_loss(void *ctx) {
  bin_ctx *c = ctx;
  binop_fwd(c->op, &c->a, c->A, &c->b, c->B, &c->y, c->Y, 1);
  return tdot(c->Y, c->g, kshape_numel(&c->y));
}

/* Naive broadcasting forward for comparison: decode every output index. */
static void bin_naive(binop_kind op, const kshape *a, const float *A, const kshape *b, const float *B, const kshape *y,
                      float *Y) {
  int64_t n = kshape_numel(y);
  for (int64_t i = 0; i < n; i++) {
    int64_t rem = i, ia = 0, ib = 0, sa = 1, sb = 1;
    for (int k = y->ndim - 1; k >= 0; k--) {
      int64_t ix = rem % y->d[k];
      rem /= y->d[k];
      int ka = k - (y->ndim - a->ndim), kb = k - (y->ndim - b->ndim);
      if (ka >= 0) {
        ia += (a->d[ka] == 1 ? 0 : ix) * sa;
        sa *= a->d[ka];
      }
      if (kb >= 0) {
        ib += (b->d[kb] == 1 ? 0 : ix) * sb;
        sb *= b->d[kb];
      }
    }
    float u = A[ia], v = B[ib];
    Y[i] = op == BIN_ADD ? u + v : op == BIN_SUB ? u - v : op == BIN_MUL ? u * v : u / v;
  }
}

static void check_binop_case(int na, const int64_t *da, int nb, const int64_t *db, int nthreads) {
  bin_ctx c;
  c.a = kshape_make(na, da);
  c.b = kshape_make(nb, db);
  if (kshape_broadcast(&c.a, &c.b, &c.y, NULL)) {
    tfail("broadcast rejected");
    return;
  }
  size_t as = kshape_numel(&c.a), bs = kshape_numel(&c.b), ys = kshape_numel(&c.y);
  c.A = talloc(4 * as + 4), c.B = talloc(4 * bs + 4), c.Y = talloc(4 * ys + 4);
  float *g = talloc(4 * ys + 4), *Y0 = talloc(4 * ys + 4), *dA = talloc(4 * as + 4), *dB = talloc(4 * bs + 4);
  trng_fill(c.A, as, 0.5f, 2.0f); /* away from 0: Div stays smooth */
  trng_fill(c.B, bs, 0.5f, 2.0f);
  trng_fill(g, ys, -1, 1);
  c.g = g;
  char sa[80], sb[80], what[256];
  kshape_str(&c.a, sa, sizeof sa), kshape_str(&c.b, sb, sizeof sb);
  const char *opn[] = {"add", "sub", "mul", "div"};
  for (int op = BIN_ADD; op <= BIN_DIV; op++) {
    c.op = (binop_kind)op;
    bin_naive(c.op, &c.a, c.A, &c.b, c.B, &c.y, Y0);
    binop_fwd(c.op, &c.a, c.A, &c.b, c.B, &c.y, c.Y, nthreads);
    snprintf(what, sizeof what, "%s %s,%s fwd", opn[op], sa, sb);
    tcheck_close(what, c.Y, Y0, ys, 1e-7);
    binop_bwd(c.op, &c.a, c.A, &c.b, c.B, &c.y, g, dA, dB, nthreads);
    snprintf(what, sizeof what, "%s %s,%s dA", opn[op], sa, sb);
    tcheck_grad(what, bin_loss, &c, c.A, as, dA, 1e-2, 1e-2, 1e-3, 20);
    snprintf(what, sizeof what, "%s %s,%s dB", opn[op], sa, sb);
    tcheck_grad(what, bin_loss, &c, c.B, bs, dB, 1e-2, 1e-2, 1e-3, 20);
    /* Reductions must not depend on the thread count. */
    float *dA1 = talloc(4 * as + 4), *dB1 = talloc(4 * bs + 4);
    binop_bwd(c.op, &c.a, c.A, &c.b, c.B, &c.y, g, dA1, dB1, 3 - nthreads);
    snprintf(what, sizeof what, "%s %s,%s bwd T1 == T2", opn[op], sa, sb);
    tcheck_same(what, dA, dA1, 4 * as);
    tcheck_same(what, dB, dB1, 4 * bs);
    free(dA1), free(dB1);
  }
  free(c.A), free(c.B), free(c.Y), free(g), free(Y0), free(dA), free(dB);
}

static void check_binops(void) {
  int64_t s1[] = {2, 3, 4, 5}, s2[] = {1, 3, 1, 1}, s3[] = {5}, s4[] = {4, 1}, s5[] = {3, 1, 5}, s6[] = {1};
  int64_t s7[] = {2, 1, 4, 1}, s8[] = {1, 3, 1, 5}, s9[] = {7, 300}, s10[] = {300};
  check_binop_case(4, s1, 4, s1, 1); /* same shape */
  check_binop_case(4, s1, 4, s2, 2); /* per-channel */
  check_binop_case(4, s1, 1, s3, 1); /* trailing vector */
  check_binop_case(2, s4, 3, s5, 2); /* both broadcast, different ranks */
  check_binop_case(4, s1, 0, s6, 1); /* scalar */
  check_binop_case(4, s7, 4, s8, 2); /* interleaved broadcast dims */
  check_binop_case(1, s6, 4, s1, 1); /* [1] against 4-D */
  check_binop_case(2, s9, 1, s10, 2);
  int64_t bad1[] = {2, 3}, bad2[] = {4};
  kshape a = kshape_make(2, bad1), b = kshape_make(1, bad2), y;
  sw_err e;
  sw_err_clear(&e);
  if (kshape_broadcast(&a, &b, &y, &e) != SW_EINPUT || !e.msg[0]) tfail("[2,3] + [4] was broadcast");
}

/* ---------------------------------------------------------------------------------------------- */

typedef struct sm_ctx {
  int64_t outer, len, inner;
  int log_;
  float *x, *y;
  const float *g;
} sm_ctx;

static double sm_loss(void *ctx) {
  sm_ctx *c = ctx;
  softmax_fwd(c->outer, c->len, c->inner, c->log_, c->x, c->y, 1);
  return tdot(c->y, c->g, c->outer * c->len * c->inner);
}

static void check_softmax(void) {
  int64_t shapes[][3] = {{4, 10, 1}, {1, 1, 1}, {3, 7, 5}, {2, 1000, 1}, {1, 5, 9}};
  for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
    for (int lg = 0; lg <= 1; lg++) {
      sm_ctx c = {shapes[si][0], shapes[si][1], shapes[si][2], lg, NULL, NULL, NULL};
      int64_t n = c.outer * c.len * c.inner;
      c.x = talloc(4 * n), c.y = talloc(4 * n);
      float *g = talloc(4 * n), *dx = talloc(4 * n), *y2 = talloc(4 * n);
      trng_fill(c.x, n, -5, 5);
      trng_fill(g, n, -1, 1);
      c.g = g;
      softmax_fwd(c.outer, c.len, c.inner, lg, c.x, c.y, 2);
      softmax_fwd(c.outer, c.len, c.inner, lg, c.x, y2, 1);
      tcheck_same("softmax T1 == T2", c.y, y2, 4 * n);
      /* Every line sums to 1. */
      for (int64_t o = 0; o < c.outer; o++)
        for (int64_t i = 0; i < c.inner; i++) {
          double s = 0.0;
          for (int64_t l = 0; l < c.len; l++) {
            float v = c.y[(o * c.len + l) * c.inner + i];
            s += lg ? exp(v) : v;
          }
          if (fabs(s - 1.0) > 1e-5) tfail("softmax line sums to %.8f", s);
        }
      softmax_bwd(c.outer, c.len, c.inner, lg, c.y, g, dx, 2);
      char what[96];
      snprintf(what, sizeof what, "%s [%lld,%lld,%lld]", lg ? "logsoftmax" : "softmax", (long long)c.outer,
               (long long)c.len, (long long)c.inner);
      tcheck_grad(what, sm_loss, &c, c.x, n, dx, 1e-2, 1e-2, 1e-3, 30);
      free(c.x), free(c.y), free(g), free(dx), free(y2);
    }
  /* Large logits stay finite. */
  float big[3] = {1000.0f, 0.0f, -1000.0f}, out[3];
  softmax_fwd(1, 3, 1, 0, big, out, 1);
  float want[3] = {1, 0, 0};
  tcheck_close("softmax of +-1000", out, want, 3, 1e-7);
}

typedef struct sce_ctx {
  sce_desc d;
  float *logits, *lp, *loss;
  const int64_t *labels;
  const float *w, *g;
} sce_ctx;

static double sce_loss_fn(void *ctx) {
  sce_ctx *c = ctx;
  SW_ASSERT(sce_fwd(&c->d, c->logits, c->labels, c->w, c->loss, c->lp, NULL) == SW_OK);
  return c->d.reduction == SCE_NONE ? tdot(c->loss, c->g, (size_t)c->d.N * c->d.D) : c->loss[0];
}

static void check_sce(void) {
  struct {
    int N, C;
    int64_t D;
    sce_reduction red;
    int ignore, weighted;
  } cases[] = {{8, 10, 1, SCE_MEAN, 0, 0}, {8, 10, 1, SCE_MEAN, 1, 0}, {5, 4, 3, SCE_MEAN, 1, 1},
               {6, 3, 1, SCE_SUM, 0, 1},   {4, 5, 2, SCE_NONE, 1, 0},  {1, 1, 1, SCE_MEAN, 0, 0}};
  for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
    sce_ctx c;
    memset(&c, 0, sizeof c);
    c.d = (sce_desc){cases[ci].N, cases[ci].C, cases[ci].D, cases[ci].red, cases[ci].ignore, -100};
    size_t nl = (size_t)c.d.N * c.d.C * c.d.D, ns = (size_t)c.d.N * c.d.D;
    c.logits = talloc(4 * nl), c.lp = talloc(4 * nl), c.loss = talloc(4 * ns);
    int64_t *labels = talloc(8 * ns);
    float *w = talloc(4 * c.d.C), *g = talloc(4 * ns), *dl = talloc(4 * nl);
    trng_fill(c.logits, nl, -3, 3);
    trng_fill(w, c.d.C, 0.5f, 2.0f);
    trng_fill(g, ns, -1, 1);
    for (size_t i = 0; i < ns; i++) labels[i] = (c.d.has_ignore && i % 3 == 1) ? -100 : trng_int(0, c.d.C - 1);
    c.labels = labels;
    c.w = cases[ci].weighted ? w : NULL;
    c.g = g;
    /* Hand value of the loss. */
    sw_err e;
    sw_err_clear(&e);
    if (sce_fwd(&c.d, c.logits, labels, c.w, c.loss, c.lp, &e)) {
      tfail("sce_fwd failed: %s", e.msg);
      continue;
    }
    double tot = 0.0, wsum = 0.0;
    for (int n = 0; n < c.d.N; n++)
      for (int64_t j = 0; j < c.d.D; j++) {
        int64_t lab = labels[n * c.d.D + j];
        if (c.d.has_ignore && lab == -100) continue;
        double mx = -1e30, s = 0.0;
        for (int k = 0; k < c.d.C; k++) mx = fmax(mx, c.logits[(n * c.d.C + k) * c.d.D + j]);
        for (int k = 0; k < c.d.C; k++) s += exp(c.logits[(n * c.d.C + k) * c.d.D + j] - mx);
        double wt = c.w ? c.w[lab] : 1.0, l = -wt * (c.logits[(n * c.d.C + lab) * c.d.D + j] - mx - log(s));
        tot += c.d.reduction == SCE_NONE ? l * g[n * c.d.D + j] : l;
        wsum += wt;
      }
    double want = c.d.reduction == SCE_MEAN ? tot / wsum : tot;
    double got = c.d.reduction == SCE_NONE ? tdot(c.loss, g, ns) : c.loss[0];
    float fg = (float)got, fw = (float)want;
    tcheck_close("sce loss vs hand formula", &fg, &fw, 1, 1e-5);
    float dloss = 1.0f;
    sce_bwd(&c.d, c.lp, labels, c.w, c.d.reduction == SCE_NONE ? g : &dloss, dl);
    tcheck_grad("sce dlogits", sce_loss_fn, &c, c.logits, nl, dl, 1e-2, 1e-2, 1e-4, 40);
    free(c.logits), free(c.lp), free(c.loss), free(labels), free(w), free(g), free(dl);
  }
  /* A label out of range is bad input, reported with the sample. */
  sce_desc d = {2, 3, 1, SCE_MEAN, 0, 0};
  float lg[6] = {0}, lp[6], loss;
  int64_t labels[2] = {1, 3};
  sw_err e;
  sw_err_clear(&e);
  if (sce_fwd(&d, lg, labels, NULL, &loss, lp, &e) != SW_EINPUT || !strstr(e.msg, "sample 1"))
    tfail("label 3 of 3 classes accepted (%s)", e.msg);
  /* Everything ignored: NaN loss (as PyTorch), zero gradient. */
  d.has_ignore = 1;
  d.ignore_index = 7;
  int64_t ign[2] = {7, 7};
  float dl[6], one = 1.0f;
  sce_fwd(&d, lg, ign, NULL, &loss, lp, NULL);
  sce_bwd(&d, lp, ign, NULL, &one, dl);
  if (!isnan(loss)) tfail("all-ignored mean loss is %g, want NaN", loss);
  for (int i = 0; i < 6; i++)
    if (dl[i] != 0.0f) tfail("all-ignored gradient %g", dl[i]);
}

static void check_dropout(void) {
  int64_t n = 200003;
  float *x = talloc(4 * n), *y1 = talloc(4 * n), *y2 = talloc(4 * n), *dx = talloc(4 * n), *dy = talloc(4 * n);
  uint8_t *m1 = talloc(n), *m2 = talloc(n), *m3 = talloc(n);
  trng_fill(x, n, -1, 1);
  trng_fill(dy, n, -1, 1);
  float ratio = 0.3f;
  dropout_fwd(n, ratio, 42, 7, x, y1, m1, 1);
  dropout_fwd(n, ratio, 42, 7, x, y2, m2, 2);
  tcheck_same("dropout mask T1 == T2", m1, m2, n);
  tcheck_same("dropout output T1 == T2", y1, y2, 4 * n);
  dropout_fwd(n, ratio, 42, 8, x, y2, m3, 2);
  int64_t kept = 0, same = 0;
  for (int64_t i = 0; i < n; i++) {
    kept += m1[i];
    same += m1[i] == m3[i];
    if (y1[i] != (m1[i] ? x[i] * (1.0f / (1.0f - ratio)) : 0.0f)) {
      tfail("dropout y[%lld] = %g for x %g mask %d", (long long)i, y1[i], x[i], m1[i]);
      break;
    }
  }
  double frac = (double)kept / n;
  /* Keep fraction within 5 sigma of 0.7; the next step's mask differs (agreement ~ 0.58). */
  if (fabs(frac - 0.7) > 5 * sqrt(0.21 / n)) tfail("dropout kept %.4f, want 0.7", frac);
  if ((double)same / n > 0.62) tfail("dropout masks of steps 7 and 8 agree on %.3f", (double)same / n);
  tcheck_same("dropout stats", "", "", 0);
  dropout_bwd(n, ratio, m1, dy, dx, 2);
  for (int64_t i = 0; i < n; i++)
    if (dx[i] != (m1[i] ? dy[i] * (1.0f / (1.0f - ratio)) : 0.0f)) {
      tfail("dropout dx[%lld]", (long long)i);
      break;
    }
  if (dropout_uniform(42, 7, 5) != dropout_uniform(42, 7, 5) || dropout_uniform(1, 7, 5) == dropout_uniform(2, 7, 5))
    tfail("dropout_uniform is not a function of (seed, step, i)");
  dropout_fwd(n, 0.0f, 1, 1, x, y1, m1, 2);
  tcheck_same("dropout ratio 0 is identity", y1, x, 4 * n);
  /* ReLU through a bit mask: relu_mask then sum_relu_grad with one gradient is ReluGrad, and a
   * masked-off element gives +0 even where dy is not finite; AVX-512 and plain C alike, any thread
   * split, bit padding of the last byte clear */
  for (int64_t i = 0; i < n; i++) {
    y1[i] = i % 5 == 0 ? -0.0f : i % 7 == 0 ? NAN : x[i];
    dy[i] = i % 11 == 0 ? INFINITY : i % 13 == 0 ? NAN : dy[i];
  }
  const int64_t lens[] = {n, 1, 7, 9, 16, 17, 513, 1025 + 3, 20000 + 5};
  for (int portable = 0; portable < 2; portable++)
    for (size_t li = 0; li < sizeof lens / sizeof *lens; li++)
      for (int T = 1; T <= 2; T++) {
        int64_t len = lens[li];
        eltwise_use_portable(portable);
        memset(m1, 0xff, (size_t)n);
        relu_mask(len, y1, m1, T);
        const float *g1[1] = {dy};
        sum_relu_grad(len, 1, g1, NULL, m1, dx, T);
        eltwise_use_portable(0);
        int bad = 0;
        for (int64_t i = 0; i < len && !bad; i++) {
          int on = y1[i] > 0.0f, bit = (m1[i / 8] >> (i % 8)) & 1;
          float want = on ? dy[i] : 0.0f;
          if (bit != on || (on ? !(dx[i] == want || (isnan(dx[i]) && isnan(want))) : (dx[i] != 0.0f || signbit(dx[i])))) {
            tfail("relu bit mask / masked backward at %lld of %lld, T%d%s (y %g, dy %g, dx %g)", (long long)i,
                  (long long)len, T, portable ? " portable" : "", (double)y1[i], (double)dy[i], (double)dx[i]);
            bad = 1;
          }
        }
        if (len % 8 && (m1[len / 8] >> (len % 8)) != 0) tfail("relu_mask: padding bits of n %lld set", (long long)len);
        if (len < n && m1[(len + 7) / 8] != 0xff) tfail("relu_mask wrote past ceil(n / 8) bytes (n %lld)", (long long)len);
      }
  free(x), free(y1), free(y2), free(dx), free(dy), free(m1), free(m2), free(m3);
}

/* Values that exercise the ReLU's edges: sums of exactly 0 (x + -x), -0 + -0, NaN, +-Inf, Inf - Inf. */
static void fill_edges(float *a, float *b, int64_t n) {
  trng_fill(a, (size_t)n, -1, 1);
  trng_fill(b, (size_t)n, -1, 1);
  for (int64_t i = 0; i < n; i++) switch (i % 17) {
      case 1: b[i] = -a[i]; break;
      case 3: a[i] = b[i] = -0.0f; break;
      case 5: a[i] = NAN; break;
      case 7: b[i] = INFINITY; break;
      case 9: a[i] = -INFINITY; break;
      case 11: a[i] = INFINITY, b[i] = -INFINITY; break;
      case 13: a[i] = 0.0f, b[i] = -0.0f; break;
      default: break;
    }
}

/* AddRelu and SumReluGrad against the unfused kernels they replace (Add then Relu then relu_mask; the
 * Sum's left-to-right additions then ReluGrad reading Y or gated by the bit mask): the same bits, at 1
 * and 2 threads, AVX-512 and plain C, and the same bits as their plain references. */
static void check_fused_residual(void) {
  const int64_t sizes[] = {1, 17, 1000, 200003};
  for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
    int64_t n = sizes[si];
    size_t fb = sizeof(float) * (size_t)n;
    float *a = talloc(fb), *b = talloc(fb), *c = talloc(fb), *s = talloc(fb), *y0 = talloc(fb), *y1 = talloc(fb),
          *y2 = talloc(fb), *dx0 = talloc(fb), *dx1 = talloc(fb), *dx2 = talloc(fb), *cp = talloc(fb), *ip = talloc(fb);
    size_t mb = (size_t)(n + 7) / 8;
    uint8_t *m0 = talloc(mb), *m1 = talloc(mb), *m2 = talloc(mb);
    kshape sh = kshape_make(1, &n);
    act_desc relu = {.kind = ACT_RELU};
    char what[96];
    /* forward */
    fill_edges(a, b, n);
    binop_fwd(BIN_ADD, &sh, a, &sh, b, &sh, s, 2);
    act_fwd(&relu, n, s, y0, 2);
    relu_mask(n, y0, m0, 2);
    for (int T = 1; T <= 4; T++) { /* T 3, 4: plain C */
      eltwise_use_portable(T > 2);
      memset(y1, 0x55, fb), memset(m1, 0x55, mb);
      add_relu(n, a, b, y1, m1, 2 - T % 2);
      snprintf(what, sizeof what, "add_relu y == Add, Relu (n %lld, T%d)", (long long)n, T);
      tcheck_same(what, y1, y0, fb);
      snprintf(what, sizeof what, "add_relu mask == relu_mask (n %lld, T%d)", (long long)n, T);
      tcheck_same(what, m1, m0, mb);
      memset(y1, 0x55, fb);
      add_relu(n, a, b, y1, NULL, 2 - T % 2);
      snprintf(what, sizeof what, "add_relu without mask (n %lld, T%d)", (long long)n, T);
      tcheck_same(what, y1, y0, fb);
      eltwise_use_portable(0);
    }
    add_relu_ref(n, a, b, y2, m2);
    tcheck_same("add_relu_ref y", y2, y0, fb);
    tcheck_same("add_relu_ref mask", m2, m0, mb);
    for (int64_t i = 0; i < n; i++) { /* the semantics themselves: Relu'(0) = 0, NaN off */
      float v = a[i] + b[i];
      int on = v > 0.0f;
      int bit = (m0[i / 8] >> (i % 8)) & 1;
      if (bit != on || (on && y0[i] != v) || (!on && !isnan(v) && y0[i] != 0.0f) || (isnan(v) && !isnan(y0[i]))) {
        tfail("add_relu semantics at %lld: a %g b %g y %g mask bit %d", (long long)i, a[i], b[i], y0[i], bit);
        break;
      }
    }
    /* backward: y0 and m0 from above are the gate; gradients with their own edge values */
    float *g[5] = {a, b, c, s, cp};
    fill_edges(a, b, n);
    fill_edges(c, s, n);
    trng_fill(cp, (size_t)n, -3, 3);
    for (int k = 1; k <= 5; k++) {
      for (int64_t i = 0; i < n; i++) { /* Sum as sum_n adds */
        float v = g[0][i];
        for (int j = 1; j < k; j++) v += g[j][i];
        dx1[i] = v;
      }
      act_bwd(&relu, n, y0, NULL, dx1, dx0, 2); /* ReluGrad(G, Y) */
      const float *g1[1] = {dx1};
      sum_relu_grad(n, 1, g1, NULL, m0, dx2, 2); /* SumReluGrad(M, G) */
      snprintf(what, sizeof what, "ReluGrad == SumReluGrad(M, G) (n %lld, k %d)", (long long)n, k);
      tcheck_same(what, dx2, dx0, fb);
      for (int T = 1; T <= 4; T++) /* T 3, 4: plain C */
        for (int gm = 0; gm < 2; gm++) {
          eltwise_use_portable(T > 2);
          memset(dx1, 0x55, fb);
          sum_relu_grad(n, k, (const float *const *)g, gm ? NULL : y0, gm ? m0 : NULL, dx1, 2 - T % 2);
          eltwise_use_portable(0);
          snprintf(what, sizeof what, "sum_relu_grad (%s gate, n %lld, k %d, T%d)", gm ? "mask" : "Y", (long long)n, k, T);
          tcheck_same(what, dx1, dx0, fb);
        }
      sum_relu_grad_ref(n, k, (const float *const *)g, NULL, m0, dx1);
      tcheck_same("sum_relu_grad_ref (mask gate)", dx1, dx0, fb);
      sum_relu_grad_ref(n, k, (const float *const *)g, y0, NULL, dx1);
      tcheck_same("sum_relu_grad_ref (Y gate)", dx1, dx0, fb);
      /* in place over the first gradient */
      memcpy(ip, g[0], fb);
      float *keep = g[0];
      g[0] = ip;
      sum_relu_grad(n, k, (const float *const *)g, NULL, m0, ip, 2);
      g[0] = keep;
      snprintf(what, sizeof what, "sum_relu_grad in place (n %lld, k %d)", (long long)n, k);
      tcheck_same(what, ip, dx0, fb);
    }
    for (int64_t i = 0; i < n; i++) /* masked off: +0 even for a NaN or infinite sum */
      if (!((m0[i / 8] >> (i % 8)) & 1) && (dx0[i] != 0.0f || signbit(dx0[i]))) {
        tfail("masked-off gradient at %lld is %g", (long long)i, dx0[i]);
        break;
      }
    free(a), free(b), free(c), free(s), free(y0), free(y1), free(y2), free(dx0), free(dx1), free(dx2), free(cp), free(ip);
    free(m0), free(m1), free(m2);
  }
}

/* sum_relu_grad_sub against sum_relu_grad on the full-size gradient it stands for (b on the stride
 * grid, +0 elsewhere): the same bits, with either gate, at 1 and 2 threads, AVX-512 and plain C, and
 * in place over a. */
static void check_sum_relu_grad_sub(void) {
  static const int shapes[][5] = {{3, 28, 28, 2, 2}, {5, 14, 14, 2, 2}, {2, 7, 9, 2, 2}, {3, 5, 33, 1, 2}, {2, 6, 40, 2, 1},
                                  {2, 9, 10, 3, 3}, {1, 1, 1, 2, 2}, {4, 3, 17, 2, 2}, {24, 28, 28, 2, 2} /* 2 threads */,
                                  {2, 8, 32, 2, 2}};
  for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
    int planes = shapes[si][0], H = shapes[si][1], W = shapes[si][2], sh = shapes[si][3], sw = shapes[si][4];
    int P = (H + sh - 1) / sh, Q = (W + sw - 1) / sw;
    int64_t n = (int64_t)planes * H * W, nb = (int64_t)planes * P * Q;
    size_t fb = sizeof(float) * (size_t)n, mb = (size_t)(n + 7) / 8;
    float *a = talloc(fb), *bf = talloc(fb), *y = talloc(fb), *b = talloc(sizeof(float) * (size_t)nb), *junk = talloc(fb);
    float *want = talloc(fb), *got = talloc(fb);
    uint8_t *m = talloc(mb);
    fill_edges(a, junk, n);
    fill_edges(junk, bf, n);              /* bf: edge values, of which the grid's are b */
    trng_fill(y, (size_t)n, -1, 1);       /* the gate, on about half of a's -0s (which + 0 turns to +0) */
    relu_mask(n, y, m, 1);
    for (int64_t q = 0; q < planes; q++)
      for (int h = 0; h < H; h++)
        for (int w = 0; w < W; w++) {
          int64_t i = (q * H + h) * W + w;
          if (h % sh == 0 && w % sw == 0) b[(q * P + h / sh) * Q + w / sw] = bf[i];
          else bf[i] = 0.0f;
        }
    const float *g[2] = {a, bf};
    char what[128];
    for (int gm = 0; gm < 2; gm++) {
      sum_relu_grad(n, 2, g, gm ? NULL : y, gm ? m : NULL, want, 1);
      for (int T = 1; T <= 4; T++) { /* T 3, 4: plain C */
        eltwise_use_portable(T > 2);
        memset(got, 0x55, fb);
        sum_relu_grad_sub(planes, H, W, sh, sw, a, b, gm ? NULL : y, gm ? m : NULL, got, 2 - T % 2);
        snprintf(what, sizeof what, "sum_relu_grad_sub %dx%dx%d s%d,%d (%s gate, T%d)", planes, H, W, sh, sw,
                 gm ? "mask" : "Y", T);
        tcheck_same(what, got, want, fb);
        memcpy(got, a, fb); /* in place over a */
        sum_relu_grad_sub(planes, H, W, sh, sw, got, b, gm ? NULL : y, gm ? m : NULL, got, 2 - T % 2);
        snprintf(what, sizeof what, "sum_relu_grad_sub in place %dx%dx%d s%d,%d (%s gate, T%d)", planes, H, W, sh, sw,
                 gm ? "mask" : "Y", T);
        tcheck_same(what, got, want, fb);
        eltwise_use_portable(0);
      }
    }
    free(a), free(bf), free(y), free(b), free(junk), free(want), free(got), free(m);
  }
}

/* Replaces every NaN by the one NaN: which of two NaN operands an addition returns (their signs
 * differ after Neg) is the compiler's choice of operand order, not the kernel's. */
static void nan_canon(float *a, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    if (isnan(a[i])) a[i] = NAN;
}

/* sum_n (Sum, Neg) against the additions written out, on edge values (NaN, infinities, -0): the same
 * bits (NaNs as NaN) at 1, 2 and 3 threads, and in place over its first input. */
static void check_sum_n(void) {
  const int64_t sizes[] = {1, 17, 1000, 200003};
  for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
    int64_t n = sizes[si];
    size_t fb = sizeof(float) * (size_t)n;
    float *x[4], *ref = talloc(fb), *y = talloc(fb), *ip = talloc(fb);
    for (int j = 0; j < 4; j++) x[j] = talloc(fb);
    fill_edges(x[0], x[1], n);
    fill_edges(x[2], x[3], n);
    char what[96];
    for (int k = 1; k <= 4; k++)
      for (int neg = 0; neg < 2; neg++) {
        for (int64_t i = 0; i < n; i++) {
          float v = neg ? -x[0][i] : x[0][i];
          for (int j = 1; j < k; j++) v += x[j][i];
          ref[i] = v;
        }
        nan_canon(ref, n);
        for (int T = 1; T <= 3; T++) {
          memset(y, 0x55, fb);
          sum_n(n, k, (const float *const *)x, neg, y, T);
          nan_canon(y, n);
          snprintf(what, sizeof what, "sum_n (n %lld, k %d, neg %d, T%d)", (long long)n, k, neg, T);
          tcheck_same(what, y, ref, fb);
        }
        memcpy(ip, x[0], fb);
        float *keep = x[0];
        x[0] = ip;
        sum_n(n, k, (const float *const *)x, neg, ip, 2);
        x[0] = keep;
        nan_canon(ip, n);
        snprintf(what, sizeof what, "sum_n in place (n %lld, k %d, neg %d)", (long long)n, k, neg);
        tcheck_same(what, ip, ref, fb);
      }
    for (int j = 0; j < 4; j++) free(x[j]);
    free(ref), free(y), free(ip);
  }
}

int main(void) {
  trng_seed(3);
  tgroup_begin("activations fast vs ref, finite differences");
  check_activations();
  tgroup_end();
  tgroup_begin("add/sub/mul/div broadcasting fwd + bwd");
  check_binops();
  tgroup_end();
  tgroup_begin("softmax / logsoftmax");
  check_softmax();
  tgroup_end();
  tgroup_begin("softmax cross-entropy loss");
  check_sce();
  tgroup_end();
  tgroup_begin("dropout");
  check_dropout();
  tgroup_end();
  tgroup_begin("sum_n (Sum, Neg)");
  check_sum_n();
  tgroup_end();
  tgroup_begin("fused residual Add + ReLU, Sum + ReLU backward");
  check_fused_residual();
  check_sum_relu_grad_sub();
  tgroup_end();
  return tresult();
}
