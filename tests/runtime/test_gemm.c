/* Gemm and MatMul: libxsmm plans vs the reference on random shapes (tails, M=1, sizes around the
 * 64 tile), finite differences of every backward, MatMul shape rules and broadcasting, determinism;
 * the general Gemm against MatMul.
 *
 * Tolerances: fast vs reference 1e-5 relative to max|ref| (fp32 sums against double sums);
 * finite differences (linear ops: rounding only): |num-ana| <= 1e-4 + 2e-3*|ana|. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "runtime/kernels/gemm.h"

#define TOL_FAST 1e-5

static void check_gemm(gemm_desc d, int nthreads) {
  size_t xs = (size_t)d.M * d.K, ws = (size_t)d.N * d.K, ys = (size_t)d.M * d.N;
  float *x = talloc(4 * xs), *w = talloc(4 * ws), *b = talloc(4 * d.N), *dy = talloc(4 * ys);
  trng_fill(x, xs, -1, 1), trng_fill(w, ws, -1, 1), trng_fill(b, d.N, -1, 1), trng_fill(dy, ys, -1, 1);
  float *y0 = talloc(4 * ys), *dx0 = talloc(4 * xs), *dw0 = talloc(4 * ws), *db0 = talloc(4 * d.N);
  gemm_fwd_ref(&d, x, w, b, y0);
  gemm_bwd_data_ref(&d, dy, w, dx0);
  gemm_bwd_weight_ref(&d, x, dy, dw0, db0);
  gemm_plan p;
  sw_err e;
  sw_err_clear(&e);
  char what[160];
  if (gemm_plan_init(&p, &d, nthreads, GEMM_IMPL_AUTO, &e)) {
    tfail("M%d N%d K%d: plan init failed: %s", d.M, d.N, d.K, e.msg);
  } else {
    size_t ss = 0;
    for (int i = 0; i < GEMM_NPASS; i++)
      if (gemm_plan_scratch(&p, i) > ss) ss = gemm_plan_scratch(&p, i);
    float *scratch = talloc_nan(ss / 4 + 1);
    float *y = talloc_nan(ys), *dx = talloc_nan(xs), *dw = talloc_nan(ws), *db = talloc_nan(d.N);
    gemm_plan_fwd(&p, x, w, b, y, scratch);
    snprintf(what, sizeof what, "fwd M%d N%d K%d T%d", d.M, d.N, d.K, nthreads);
    tcheck_close(what, y, y0, ys, TOL_FAST);
    gemm_plan_fwd(&p, x, w, NULL, y, scratch);
    for (size_t i = 0; i < ys; i++) y[i] += b[i % d.N];
    snprintf(what, sizeof what, "fwd-nobias M%d N%d K%d T%d", d.M, d.N, d.K, nthreads);
    tcheck_close(what, y, y0, ys, 2 * TOL_FAST);
    gemm_plan_bwd_data(&p, dy, w, dx, scratch);
    snprintf(what, sizeof what, "bwd-data M%d N%d K%d T%d", d.M, d.N, d.K, nthreads);
    tcheck_close(what, dx, dx0, xs, TOL_FAST);
    for (size_t i = 0; i < ss / 4; i++) scratch[i] = NAN;
    gemm_plan_bwd_weight(&p, x, dy, dw, db, scratch);
    snprintf(what, sizeof what, "bwd-weight M%d N%d K%d T%d", d.M, d.N, d.K, nthreads);
    tcheck_close(what, dw, dw0, ws, TOL_FAST);
    snprintf(what, sizeof what, "bias-grad M%d N%d K%d T%d", d.M, d.N, d.K, nthreads);
    tcheck_close(what, db, db0, d.N, TOL_FAST);
    /* determinism */
    float *y2 = talloc(4 * ys), *dw2 = talloc(4 * ws);
    gemm_plan_fwd(&p, x, w, b, y, scratch);
    gemm_plan_fwd(&p, x, w, b, y2, scratch);
    gemm_plan_bwd_weight(&p, x, dy, dw, db, scratch);
    gemm_plan_bwd_weight(&p, x, dy, dw2, db, scratch);
    snprintf(what, sizeof what, "repeat M%d N%d K%d T%d", d.M, d.N, d.K, nthreads);
    tcheck_same(what, y, y2, 4 * ys);
    tcheck_same(what, dw, dw2, 4 * ws);
    free(y2), free(dw2), free(scratch), free(y), free(dx), free(dw), free(db);
    gemm_plan_free(&p);
  }
  free(x), free(w), free(b), free(dy), free(y0), free(dx0), free(dw0), free(db0);
}

typedef struct gfd {
  gemm_desc d;
  float *x, *w, *b, *y;
  const float *g;
} gfd;

static double gemm_loss(void *ctx) {
  gfd *f = ctx;
  gemm_fwd_ref(&f->d, f->x, f->w, f->b, f->y);
  return tdot(f->y, f->g, (size_t)f->d.M * f->d.N);
}

static void fd_gemm(gemm_desc d) {
  size_t xs = (size_t)d.M * d.K, ws = (size_t)d.N * d.K, ys = (size_t)d.M * d.N;
  float *x = talloc(4 * xs), *w = talloc(4 * ws), *b = talloc(4 * d.N), *dy = talloc(4 * ys), *y = talloc(4 * ys);
  float *dx = talloc(4 * xs), *dw = talloc(4 * ws), *db = talloc(4 * d.N);
  trng_fill(x, xs, -1, 1), trng_fill(w, ws, -1, 1), trng_fill(b, d.N, -1, 1), trng_fill(dy, ys, -1, 1);
  gemm_bwd_data_ref(&d, dy, w, dx);
  gemm_bwd_weight_ref(&d, x, dy, dw, db);
  gfd f = {d, x, w, b, y, dy};
  tcheck_grad("gemm dx", gemm_loss, &f, x, xs, dx, 0.1, 2e-3, 1e-4, 30);
  tcheck_grad("gemm dw", gemm_loss, &f, w, ws, dw, 0.1, 2e-3, 1e-4, 30);
  tcheck_grad("gemm db", gemm_loss, &f, b, d.N, db, 0.1, 2e-3, 1e-4, 30);
  free(x), free(w), free(b), free(dy), free(y), free(dx), free(dw), free(db);
}

typedef struct mfd {
  kshape a, b, y;
  float *A, *B, *Y;
  const float *g;
} mfd;

static double mm_loss(void *ctx) {
  mfd *f = ctx;
  matmul_fwd_ref(&f->a, f->A, &f->b, f->B, f->Y);
  return tdot(f->Y, f->g, kshape_numel(&f->y));
}

static void fd_matmul(int na, const int64_t *da, int nb, const int64_t *db_) {
  mfd f;
  f.a = kshape_make(na, da);
  f.b = kshape_make(nb, db_);
  sw_err e;
  sw_err_clear(&e);
  if (matmul_shape(&f.a, &f.b, &f.y, &e)) {
    tfail("matmul shape rejected: %s", e.msg);
    return;
  }
  size_t as = kshape_numel(&f.a), bs = kshape_numel(&f.b), ys = kshape_numel(&f.y);
  f.A = talloc(4 * as), f.B = talloc(4 * bs), f.Y = talloc(4 * ys);
  float *g = talloc(4 * ys), *dA = talloc(4 * as), *dB = talloc(4 * bs);
  trng_fill(f.A, as, -1, 1), trng_fill(f.B, bs, -1, 1), trng_fill(g, ys, -1, 1);
  f.g = g;
  matmul_bwd_ref(&f.a, f.A, &f.b, f.B, g, dA, dB);
  char sa[64], sb[64], what[200];
  snprintf(what, sizeof what, "matmul dA %s@%s", kshape_str(&f.a, sa, sizeof sa), kshape_str(&f.b, sb, sizeof sb));
  tcheck_grad(what, mm_loss, &f, f.A, as, dA, 0.1, 2e-3, 1e-4, 30);
  snprintf(what, sizeof what, "matmul dB %s@%s", sa, sb);
  tcheck_grad(what, mm_loss, &f, f.B, bs, dB, 0.1, 2e-3, 1e-4, 30);
  free(f.A), free(f.B), free(f.Y), free(g), free(dA), free(dB);
}

static void check_matmul_shapes(void) {
  struct {
    int na, nb;
    int64_t a[4], b[4];
    int ny;
    int64_t y[4];
  } ok[] = {
      {2, 2, {3, 4}, {4, 5}, 2, {3, 5}},
      {1, 1, {4}, {4}, 0, {0}},
      {1, 2, {4}, {4, 5}, 1, {5}},
      {2, 1, {3, 4}, {4}, 1, {3}},
      {3, 2, {2, 3, 4}, {4, 5}, 3, {2, 3, 5}},
      {4, 3, {2, 1, 3, 4}, {6, 4, 5}, 4, {2, 6, 3, 5}},
      {1, 3, {4}, {2, 4, 5}, 2, {2, 5}},
  };
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    kshape a = kshape_make(ok[i].na, ok[i].a), b = kshape_make(ok[i].nb, ok[i].b), y, want = kshape_make(ok[i].ny, ok[i].y);
    char s1[64], s2[64];
    if (matmul_shape(&a, &b, &y, NULL) || !kshape_equal(&y, &want))
      tfail("matmul shape %zu: got %s want %s", i, kshape_str(&y, s1, sizeof s1), kshape_str(&want, s2, sizeof s2));
    else
      tcheck_same("matmul shape", "", "", 0);
  }
  int64_t a[] = {3, 4}, b[] = {5, 6}, c[] = {2, 3, 4}, dd[] = {3, 4, 5};
  kshape A = kshape_make(2, a), B = kshape_make(2, b), C = kshape_make(3, c), D = kshape_make(3, dd), y;
  sw_err e;
  sw_err_clear(&e);
  if (matmul_shape(&A, &B, &y, &e) != SW_EINPUT) tfail("matmul [3,4]@[5,6] accepted");
  sw_err_clear(&e);
  if (matmul_shape(&C, &D, &y, &e) != SW_EINPUT) tfail("matmul batch 2 vs 3 accepted");
  /* A small product by hand: [[1,2],[3,4]] @ [[5,6],[7,8]] = [[19,22],[43,50]]. */
  float m1[] = {1, 2, 3, 4}, m2[] = {5, 6, 7, 8}, out[4], want[] = {19, 22, 43, 50};
  int64_t s22[] = {2, 2};
  kshape s = kshape_make(2, s22);
  matmul_fwd_ref(&s, m1, &s, m2, out);
  tcheck_close("matmul 2x2 by hand", out, want, 4, 0);
  /* 2-D MatMul equals Gemm with the transposed weight. */
  gemm_desc gd = {5, 7, 6};
  float X[30], W[42], Wt[42], Y1[35], Y2[35];
  trng_fill(X, 30, -1, 1), trng_fill(W, 42, -1, 1);
  for (int n = 0; n < 7; n++)
    for (int k = 0; k < 6; k++) Wt[k * 7 + n] = W[n * 6 + k];
  int64_t sx[] = {5, 6}, sw[] = {6, 7};
  kshape kx = kshape_make(2, sx), kw = kshape_make(2, sw);
  gemm_fwd_ref(&gd, X, W, NULL, Y1);
  matmul_fwd_ref(&kx, X, &kw, Wt, Y2);
  tcheck_close("matmul == gemm(transB)", Y2, Y1, 35, 1e-6);
}

/* gemm_general_fwd against matmul_fwd_ref on explicitly transposed operands, then alpha and beta*C
 * with C broadcast (cshape: 0 none, 1 scalar, 2 [N], 3 [1,N], 4 [M,1], 5 [M,N]); the same bits at 1, 2
 * and 3 threads. */
static void check_gemm_general(int M, int N, int K, int ta, int tb, float alpha, float beta, int cshape) {
  size_t as = (size_t)M * K, bs = (size_t)K * N, ys = (size_t)M * N;
  float *A = talloc(4 * as), *B = talloc(4 * bs), *C = talloc(4 * ys), *Am = talloc(4 * as), *Bm = talloc(4 * bs);
  float *P = talloc(4 * ys), *ref = talloc(4 * ys), *y1 = talloc_nan(ys), *y = talloc_nan(ys);
  trng_fill(A, as, -1, 1), trng_fill(B, bs, -1, 1), trng_fill(C, ys, -1, 1);
  for (int i = 0; i < M; i++) /* op(A) as [M, K], op(B) as [K, N] */
    for (int k = 0; k < K; k++) Am[(size_t)i * K + k] = ta ? A[(size_t)k * M + i] : A[(size_t)i * K + k];
  for (int k = 0; k < K; k++)
    for (int j = 0; j < N; j++) Bm[(size_t)k * N + j] = tb ? B[(size_t)j * K + k] : B[(size_t)k * N + j];
  int64_t da[] = {M, K}, db[] = {K, N};
  kshape ka = kshape_make(2, da), kb = kshape_make(2, db);
  matmul_fwd_ref(&ka, Am, &kb, Bm, P);
  gemm_general_desc g = {.d = {M, N, K}, .ta = ta, .tb = tb, .alpha = alpha, .beta = beta};
  int64_t cd[2] = {0, 0};
  switch (cshape) {
  case 1: g.c = kshape_make(0, NULL); break;
  case 2: cd[0] = N, g.c = kshape_make(1, cd); break;
  case 3: cd[0] = 1, cd[1] = N, g.c = kshape_make(2, cd); break;
  case 4: cd[0] = M, cd[1] = 1, g.c = kshape_make(2, cd); break;
  case 5: cd[0] = M, cd[1] = N, g.c = kshape_make(2, cd); break;
  default: break;
  }
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) {
      size_t ci = cshape == 2 || cshape == 3 ? (size_t)j : cshape == 4 ? (size_t)i : (size_t)i * N + j;
      float v = alpha * P[(size_t)i * N + j];
      ref[(size_t)i * N + j] = cshape ? v + beta * C[cshape == 1 ? 0 : ci] : v;
    }
  char what[160];
  for (int t = 1; t <= 3; t++) {
    gemm_general_fwd(&g, A, B, cshape ? C : NULL, t == 1 ? y1 : y, t);
    snprintf(what, sizeof what, "general M%d N%d K%d ta%d tb%d C%d T%d", M, N, K, ta, tb, cshape, t);
    if (t == 1) tcheck_close(what, y1, ref, ys, 1e-6);
    else tcheck_same(what, y, y1, 4 * ys);
  }
  free(A), free(B), free(C), free(Am), free(Bm), free(P), free(ref), free(y1), free(y);
}

int main(void) {
  trng_seed(2);
  tgroup_begin("gemm libxsmm vs ref: fixed + 60 random shapes");
  gemm_desc fixed[] = {{1, 1, 1}, {128, 120, 400}, {128, 84, 120}, {128, 10, 84}, {64, 64, 64},
                       {65, 63, 129}, {1, 300, 17}, {200, 1, 3}, {128, 10, 64}, {3, 130, 70},
                       /* pitches that are multiples of 256 floats: padded operand copies */
                       {70, 256, 512}, {256, 33, 256}, {130, 512, 40}};
  for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
    for (int t = 1; t <= 2; t++) check_gemm(fixed[i], t);
  for (int i = 0; i < 60; i++) {
    gemm_desc d = {trng_int(1, 150), trng_int(1, 150), trng_int(1, 150)};
    check_gemm(d, trng_int(1, 2));
  }
  tgroup_end();

  tgroup_begin("general gemm (transA, transB, alpha, beta, broadcast C) vs matmul");
  for (int c = 0; c <= 5; c++)
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++) check_gemm_general(trng_int(1, 40), trng_int(1, 40), trng_int(1, 40), ta, tb, 0.5f, 2.0f, c);
  check_gemm_general(1, 1, 1, 1, 0, 1.0f, 1.0f, 1);
  check_gemm_general(97, 3, 70, 0, 1, -1.5f, 0.25f, 5);
  tgroup_end();

  tgroup_begin("gemm finite differences");
  fd_gemm((gemm_desc){4, 5, 6});
  fd_gemm((gemm_desc){1, 3, 2});
  fd_gemm((gemm_desc){7, 1, 9});
  tgroup_end();

  tgroup_begin("matmul shapes, values, finite differences");
  check_matmul_shapes();
  int64_t a1[] = {3, 4}, b1[] = {4, 5}, a2[] = {4}, b2[] = {2, 4, 3}, a3[] = {2, 1, 3, 4}, b3[] = {3, 4, 2};
  int64_t a4[] = {2, 3, 4}, b4[] = {4};
  fd_matmul(2, a1, 2, b1);
  fd_matmul(1, a2, 3, b2);
  fd_matmul(4, a3, 3, b3);
  fd_matmul(3, a4, 1, b4);
  fd_matmul(1, a2, 1, b4);
  tgroup_end();
  return tresult();
}
