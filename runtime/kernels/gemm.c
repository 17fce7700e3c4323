/* Gemm (fully-connected) kernels: reference loops and libxsmm-tiled plans.
 *
 * libxsmm is column-major, so the row-major products are written as their transposes:
 *   forward      Y^T (N x M)  = Wt (N x K) . X^T (K x M)   A = W^T packed into panels [N/bn][K][bn]
 *   bwd-data     dX^T (K x M) = W^T (K x N) . dY^T (N x M)  A = W, B = dY, C = dX, all in place
 *   bwd-weight   dW^T (K x N) = X^T (K x M) . dY (M x N)    B = dY^T, transposed into scratch
 * and each (bm x bn)-ish output tile is one JIT kernel call over the whole reduction.
 * An operand whose row pitch is a multiple of 256 floats (1 KiB) would put all the rows a kernel
 * walks into one or two L1 sets; such operands are copied with a pitch 16 floats longer (X and dY
 * tiles per thread, W and X whole) so the kernels see conflict-free leading dimensions. */
#include <libxsmm.h>
#include <stdio.h>
#include <string.h>

#include "runtime/kernels/gemm.h"
#include "runtime/kernels/kern_internal.h"

#define GEMM_TILE 64

int gemm_desc_check(const gemm_desc *d, sw_err *e) {
  if (d->M < 1 || d->N < 1 || d->K < 1)
    return sw_fail(e, SW_EINPUT, "Gemm: sizes must be positive (M=%d N=%d K=%d)", d->M, d->N, d->K);
  return SW_OK;
}

double gemm_desc_flops(const gemm_desc *d) { return 2.0 * d->M * (double)d->N * d->K; }

/* ---------------------------------------------------------------------------------------------
 * Reference (sums in double). */

void gemm_fwd_ref(const gemm_desc *d, const float *x, const float *w, const float *b, float *y) {
  for (int m = 0; m < d->M; m++)
    for (int n = 0; n < d->N; n++) {
      double acc = b ? b[n] : 0.0;
      for (int k = 0; k < d->K; k++) acc += (double)x[(size_t)m * d->K + k] * w[(size_t)n * d->K + k];
      y[(size_t)m * d->N + n] = (float)acc;
    }
}

void gemm_bwd_data_ref(const gemm_desc *d, const float *dy, const float *w, float *dx) {
  for (int m = 0; m < d->M; m++)
    for (int k = 0; k < d->K; k++) {
      double acc = 0.0;
      for (int n = 0; n < d->N; n++) acc += (double)dy[(size_t)m * d->N + n] * w[(size_t)n * d->K + k];
      dx[(size_t)m * d->K + k] = (float)acc;
    }
}

void gemm_bwd_weight_ref(const gemm_desc *d, const float *x, const float *dy, float *dw, float *db) {
  for (int n = 0; n < d->N; n++) {
    for (int k = 0; k < d->K; k++) {
      double acc = 0.0;
      for (int m = 0; m < d->M; m++) acc += (double)dy[(size_t)m * d->N + n] * x[(size_t)m * d->K + k];
      dw[(size_t)n * d->K + k] = (float)acc;
    }
    if (db) {
      double acc = 0.0;
      for (int m = 0; m < d->M; m++) acc += dy[(size_t)m * d->N + n];
      db[n] = (float)acc;
    }
  }
}

/* ---------------------------------------------------------------------------------------------
 * libxsmm plan. */

static void *dispatch(int m, int n, int k, int lda, int ldb, int ldc) {
  if (m <= 0 || n <= 0) return NULL;
  libxsmm_blasint lm = m, ln = n, lk = k, la = lda, lb = ldb, lc = ldc;
  float alpha = 1.0f, beta = 0.0f;
  int flags = LIBXSMM_GEMM_FLAG_NONE, prefetch = LIBXSMM_GEMM_PREFETCH_NONE;
  return (void *)libxsmm_smmdispatch(lm, ln, lk, &la, &lb, &lc, &alpha, &beta, &flags, &prefetch);
}

static int tail(int n, int b) { return n % b; }

/* The pitch used for rows of length n: n, or n + 16 when n is a multiple of 256 floats. */
static int pad_ld(int n) { return n % 256 == 0 ? n + 16 : n; }

/* Fills k[t1][t2] with kernels for the four full/tail combinations; returns 0 if one is missing. */
static int dispatch4(void *k[2][2], int m, int bm_, int n, int bn_, int kk, int lda, int ldb, int ldc) {
  for (int i = 0; i < 2; i++)     /* i: n tail */
    for (int j = 0; j < 2; j++) { /* j: m tail */
      int mm = j ? tail(m, bm_) : (m < bm_ ? 0 : bm_), nn = i ? tail(n, bn_) : (n < bn_ ? 0 : bn_);
      k[i][j] = NULL;
      if (mm == 0 || nn == 0) continue; /* this combination never occurs */
      k[i][j] = dispatch(mm, nn, kk, lda, ldb, ldc);
      if (!k[i][j]) return 0;
    }
  return 1;
}

int gemm_plan_init(gemm_plan *p, const gemm_desc *d, int nthreads, gemm_impl want, sw_err *e) {
  memset(p, 0, sizeof *p);
  int rc = gemm_desc_check(d, e);
  if (rc) return rc;
  p->d = *d;
  p->nthreads = kern_threads_clamp(nthreads);
  p->impl = want == GEMM_IMPL_AUTO ? GEMM_IMPL_XSMM : want;
  if (p->impl != GEMM_IMPL_XSMM) return SW_OK;
  libxsmm_init();
  p->bm = p->bn = p->bk = GEMM_TILE;
  int M = d->M, N = d->N, K = d->K, T = p->nthreads;
  p->ldK = pad_ld(K);
  p->ldN = pad_ld(N);
  p->ldM = pad_ld(M);
  /* kfwd[row tail][feature tail]: m = features (bn), n = rows (bm). */
  int ok = dispatch4(p->kfwd, N, p->bn, M, p->bm, K, p->bn, p->ldK, N);
  /* kbwd_data[row tail][in tail]: m = in features (bk), n = rows (bm). */
  ok = ok && dispatch4(p->kbwd_data, K, p->bk, M, p->bm, N, p->ldK, p->ldN, K);
  /* kbwd_weight[out tail][in tail]: m = in features (bk), n = out features (bn). */
  ok = ok && dispatch4(p->kbwd_weight, K, p->bk, N, p->bn, M, p->ldK, p->ldM, K);
  if (!ok) {
    gemm_plan_free(p);
    return sw_fail(e, SW_EINPUT, "Gemm: libxsmm could not generate kernels for M=%d N=%d K=%d", M, N, K);
  }
  size_t xtile = p->ldK != K ? kern_align_up(sizeof(float) * (size_t)p->bm * p->ldK) : 0;
  size_t ytile = p->ldN != N ? kern_align_up(sizeof(float) * (size_t)p->bm * p->ldN) : 0;
  p->scratch[GEMM_FWD] = kern_align_up(sizeof(float) * (size_t)kern_cdiv(N, p->bn) * p->bn * K) + (size_t)T * xtile;
  p->scratch[GEMM_BWD_DATA] =
      (p->ldK != K ? kern_align_up(sizeof(float) * (size_t)N * p->ldK) : 0) + (size_t)T * ytile;
  p->scratch[GEMM_BWD_WEIGHT] = kern_align_up(sizeof(float) * (size_t)N * p->ldM) +
                                (p->ldK != K ? kern_align_up(sizeof(float) * (size_t)M * p->ldK) : 0);
  return SW_OK;
}

void gemm_plan_free(gemm_plan *p) { memset(p, 0, sizeof *p); }

size_t gemm_plan_scratch(const gemm_plan *p, gemm_pass pass) {
  SW_ASSERT(pass >= 0 && pass < GEMM_NPASS);
  return p->scratch[pass];
}

const char *gemm_plan_describe(const gemm_plan *p, char *buf, size_t n) {
  if (p->impl == GEMM_IMPL_XSMM)
    snprintf(buf, n, "libxsmm tiles %dx%dx%d", p->bm, p->bn, p->bk);
  else
    snprintf(buf, n, "ref");
  return buf;
}

typedef struct gemm_args {
  const gemm_plan *p;
  const float *a, *b, *bias;
  float *c;
  char *tiles;       /* per-thread copies of the B rows of one tile (NULL: B used in place) */
  size_t tile_bytes;
} gemm_args;

/* Wt panels [N/bn][K][bn] from W [N][K] (zero past N). */
static void pack_wt_worker(void *ctx, int t, int T) {
  const gemm_args *a = ctx;
  const gemm_plan *p = a->p;
  int N = p->d.N, K = p->d.K, bn = p->bn, nb = kern_cdiv(N, bn);
  int64_t lo, hi;
  kern_split(nb, t, T, &lo, &hi);
  for (int64_t pb = lo; pb < hi; pb++) {
    float *panel = a->c + (size_t)pb * K * bn;
    for (int j0 = 0; j0 < bn; j0 += 16) {
      int n0 = (int)pb * bn + j0, nload = N - n0;
      if (nload > 16) nload = 16;
      if (nload < 0) nload = 0;
      for (int k0 = 0; k0 < K; k0 += 16)
        kern_transpose16(a->a + (size_t)(nload ? n0 : 0) * K + k0, K, nload, panel + (size_t)k0 * bn + j0, bn,
                         K - k0 < 16 ? K - k0 : 16, bn - j0 < 16 ? bn - j0 : 16, NULL);
    }
  }
}

/* Copies rows [r0, r1) of an R x C matrix (pitch C) to pitch ld. */
static void copy_rows(const float *in, int C, float *out, int ld, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; r++) memcpy(out + (size_t)(r - r0) * ld, in + (size_t)r * C, sizeof(float) * C);
}

typedef struct rows_args {
  const float *in;
  float *out;
  int R, C, ld;
} rows_args;

static void copy_rows_worker(void *ctx, int t, int T) {
  const rows_args *a = ctx;
  int64_t lo, hi;
  kern_split(a->R, t, T, &lo, &hi);
  copy_rows(a->in, a->C, a->out + (size_t)lo * a->ld, a->ld, lo, hi);
}

/* out[c][r] = in[r][c] for an R x C matrix (ld = C) into C x R (pitch ld >= R). */
typedef struct tr_args {
  const float *in;
  float *out;
  int R, C, ld;
} tr_args;

static void transpose_worker(void *ctx, int t, int T) {
  const tr_args *a = ctx;
  int64_t lo, hi;
  kern_split(kern_cdiv(a->C, 16), t, T, &lo, &hi);
  for (int64_t cb = lo; cb < hi; cb++) {
    int c0 = (int)cb * 16, nc = a->C - c0 < 16 ? a->C - c0 : 16;
    for (int r0 = 0; r0 < a->R; r0 += 16) {
      int nr = a->R - r0 < 16 ? a->R - r0 : 16;
      kern_transpose16(a->in + (size_t)r0 * a->C + c0, a->C, nr, a->out + (size_t)c0 * a->ld + r0, a->ld, nc, nr, NULL);
    }
  }
}

static void fwd_worker(void *ctx, int t, int T) {
  const gemm_args *a = ctx;
  const gemm_plan *p = a->p;
  int M = p->d.M, N = p->d.N, K = p->d.K, bm = p->bm, bn = p->bn;
  int mt = kern_cdiv(M, bm), nt = kern_cdiv(N, bn);
  int64_t lo, hi;
  kern_split((int64_t)mt * nt, t, T, &lo, &hi);
  float *xt = a->tiles ? (float *)(a->tiles + (size_t)t * a->tile_bytes) : NULL;
  int packed = -1; /* row tile currently in xt */
  for (int64_t u = lo; u < hi; u++) {
    int mi = (int)(u / nt), ni = (int)(u % nt), m0 = mi * bm, n0 = ni * bn;
    int rows = M - m0 < bm ? M - m0 : bm, cols = N - n0 < bn ? N - n0 : bn;
    libxsmm_smmfunction k = (libxsmm_smmfunction)p->kfwd[rows < bm][cols < bn];
    float *C = a->c + (size_t)m0 * N + n0;
    const float *B = a->b + (size_t)m0 * K;
    if (xt) {
      if (packed != mi) copy_rows(a->b, K, xt, p->ldK, m0, m0 + rows);
      packed = mi;
      B = xt;
    }
    k(a->a + (size_t)ni * K * bn, B, C);
    if (a->bias)
      for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) C[(size_t)r * N + c] += a->bias[n0 + c];
  }
}

void gemm_plan_fwd(const gemm_plan *p, const float *x, const float *w, const float *b, float *y, void *scratch) {
  if (p->impl != GEMM_IMPL_XSMM) {
    gemm_fwd_ref(&p->d, x, w, b, y);
    return;
  }
  SW_ASSERT(scratch && (uintptr_t)scratch % KERN_ALIGN == 0);
  gemm_args pa = {p, w, NULL, NULL, scratch, NULL, 0};
  kern_parallel(p->nthreads, pack_wt_worker, &pa);
  size_t wt = kern_align_up(sizeof(float) * (size_t)kern_cdiv(p->d.N, p->bn) * p->bn * p->d.K);
  gemm_args fa = {p, scratch, x, b, y, NULL, kern_align_up(sizeof(float) * (size_t)p->bm * p->ldK)};
  if (p->ldK != p->d.K) fa.tiles = (char *)scratch + wt;
  kern_parallel(p->nthreads, fwd_worker, &fa);
}

static void bwd_data_worker(void *ctx, int t, int T) {
  const gemm_args *a = ctx;
  const gemm_plan *p = a->p;
  int M = p->d.M, N = p->d.N, K = p->d.K, bm = p->bm, bk = p->bk;
  int mt = kern_cdiv(M, bm), kt = kern_cdiv(K, bk);
  int64_t lo, hi;
  kern_split((int64_t)mt * kt, t, T, &lo, &hi);
  float *yt = a->tiles ? (float *)(a->tiles + (size_t)t * a->tile_bytes) : NULL;
  int packed = -1;
  for (int64_t u = lo; u < hi; u++) {
    int mi = (int)(u / kt), ki = (int)(u % kt), m0 = mi * bm, k0 = ki * bk;
    libxsmm_smmfunction k = (libxsmm_smmfunction)p->kbwd_data[M - m0 < bm][K - k0 < bk];
    const float *B = a->b + (size_t)m0 * N;
    if (yt) {
      if (packed != mi) copy_rows(a->b, N, yt, p->ldN, m0, M - m0 < bm ? M : m0 + bm);
      packed = mi;
      B = yt;
    }
    k(a->a + k0, B, a->c + (size_t)m0 * K + k0);
  }
}

void gemm_plan_bwd_data(const gemm_plan *p, const float *dy, const float *w, float *dx, void *scratch) {
  if (p->impl != GEMM_IMPL_XSMM) {
    gemm_bwd_data_ref(&p->d, dy, w, dx);
    return;
  }
  char *sp = scratch;
  const float *A = w;
  if (p->ldK != p->d.K) { /* W with a conflict-free pitch */
    SW_ASSERT(scratch && (uintptr_t)scratch % KERN_ALIGN == 0);
    rows_args ra = {w, (float *)sp, p->d.N, p->d.K, p->ldK};
    kern_parallel(p->nthreads, copy_rows_worker, &ra);
    A = (float *)sp;
    sp += kern_align_up(sizeof(float) * (size_t)p->d.N * p->ldK);
  }
  gemm_args a = {p, A, dy, NULL, dx, NULL, kern_align_up(sizeof(float) * (size_t)p->bm * p->ldN)};
  if (p->ldN != p->d.N) {
    SW_ASSERT(scratch && (uintptr_t)scratch % KERN_ALIGN == 0);
    a.tiles = sp;
  }
  kern_parallel(p->nthreads, bwd_data_worker, &a);
}

static void bwd_weight_worker(void *ctx, int t, int T) {
  const gemm_args *a = ctx;
  const gemm_plan *p = a->p;
  int N = p->d.N, K = p->d.K, bn = p->bn, bk = p->bk;
  int nt = kern_cdiv(N, bn), kt = kern_cdiv(K, bk);
  int64_t lo, hi;
  kern_split((int64_t)nt * kt, t, T, &lo, &hi);
  for (int64_t u = lo; u < hi; u++) {
    int ni = (int)(u / kt), ki = (int)(u % kt), n0 = ni * bn, k0 = ki * bk;
    libxsmm_smmfunction k = (libxsmm_smmfunction)p->kbwd_weight[N - n0 < bn][K - k0 < bk];
    k(a->a + k0, a->b + (size_t)n0 * p->ldM, a->c + (size_t)n0 * K + k0);
  }
}

typedef struct bias_args {
  const gemm_desc *d;
  const float *dy;
  float *db;
} bias_args;

/* Worker t's blocks of 16 columns of bias_grad. */
static void bias_grad_worker(void *ctx, int t, int T) {
  const bias_args *a = ctx;
  const gemm_desc *d = a->d;
  int64_t lo, hi;
  kern_split(kern_cdiv(d->N, 16), t, T, &lo, &hi);
  for (int n0 = (int)lo * 16; n0 < (int)hi * 16; n0 += 16) {
    double acc[16] = {0};
    int nn = d->N - n0 < 16 ? d->N - n0 : 16;
    for (int m = 0; m < d->M; m++)
      for (int j = 0; j < nn; j++) acc[j] += a->dy[(size_t)m * d->N + n0 + j];
    for (int j = 0; j < nn; j++) a->db[n0 + j] = (float)acc[j];
  }
}

/* db[n] = sum over m of dy[m][n], each column summed in row order by one thread. */
static void bias_grad(const gemm_desc *d, const float *dy, float *db, int nthreads) {
  bias_args a = {d, dy, db};
  kern_parallel(nthreads, bias_grad_worker, &a);
}

void gemm_plan_bwd_weight(const gemm_plan *p, const float *x, const float *dy, float *dw, float *db, void *scratch) {
  if (p->impl != GEMM_IMPL_XSMM) {
    gemm_bwd_weight_ref(&p->d, x, dy, dw, db);
    return;
  }
  SW_ASSERT(scratch && (uintptr_t)scratch % KERN_ALIGN == 0);
  char *sp = scratch;
  tr_args ta = {dy, (float *)sp, p->d.M, p->d.N, p->ldM};
  kern_parallel(p->nthreads, transpose_worker, &ta);
  const float *A = x;
  if (p->ldK != p->d.K) { /* X with a conflict-free pitch */
    float *xc = (float *)(sp + kern_align_up(sizeof(float) * (size_t)p->d.N * p->ldM));
    rows_args ra = {x, xc, p->d.M, p->d.K, p->ldK};
    kern_parallel(p->nthreads, copy_rows_worker, &ra);
    A = xc;
  }
  gemm_args a = {p, A, (float *)sp, NULL, dw, NULL, 0};
  kern_parallel(p->nthreads, bwd_weight_worker, &a);
  if (db) bias_grad(&p->d, dy, db, p->nthreads);
}

/* ---------------------------------------------------------------------------------------------
 * The general Gemm (plain loops). */

typedef struct general_args {
  const gemm_general_desc *g;
  const float *A, *B, *C;
  float *Y;
} general_args;

/* Worker t's rows of Y. */
static void general_worker(void *ctx, int t, int T) {
  const general_args *a = ctx;
  const gemm_general_desc *g = a->g;
  int M = g->d.M, N = g->d.N, K = g->d.K;
  int64_t lo, hi;
  kern_split(M, t, T, &lo, &hi);
  for (int i = (int)lo; i < (int)hi; i++)
    for (int j = 0; j < N; j++) {
      double acc = 0;
      for (int k = 0; k < K; k++) {
        float x = g->ta ? a->A[(size_t)k * M + i] : a->A[(size_t)i * K + k];
        float w = g->tb ? a->B[(size_t)j * K + k] : a->B[(size_t)k * N + j];
        acc += (double)x * w;
      }
      float v = g->alpha * (float)acc;
      if (a->C) { /* C broadcasts to [M, N]: a scalar, [N], [1|M, 1|N] */
        int64_t ci = 0;
        if (g->c.ndim == 2) ci = (g->c.d[0] == 1 ? 0 : (int64_t)i) * g->c.d[1] + (g->c.d[1] == 1 ? 0 : j);
        else if (g->c.ndim == 1) ci = g->c.d[0] == 1 ? 0 : j;
        v += g->beta * a->C[ci];
      }
      a->Y[(size_t)i * N + j] = v;
    }
}

void gemm_general_fwd(const gemm_general_desc *g, const float *A, const float *B, const float *C, float *Y,
                      int nthreads) {
  general_args a = {g, A, B, C, Y};
  kern_parallel(nthreads, general_worker, &a);
}
