/* Convolution with libxsmm batch-reduce GEMMs on channel-blocked layouts.
 *
 * Channels of each group are split into blocks (C/groups into Cb blocks of cb, K/groups into Kb
 * blocks of kb; the last block is zero-padded). Inside the kernel, in scratch:
 *
 *   X_blk [N][G][Cb][Hp][Wp][cb]      input, zero-padded spatially (Hp = H+pad_t+pad_b, ...)
 *   W_blk [G][Kb][Cb][R][S][cb][kb]    weights
 *   Y_blk [N][G][Kb][P][Wv][kb]        output, rows of pitch Wv >= Q
 *
 * Forward: for each (image, group, K block, block of rb output rows) one batch-reduce GEMM
 *   C[kb x n] += sum over (C block, r, s) of A[kb x cb] * B[cb x n]
 * in libxsmm's column-major terms: A = W_blk[g][kb][cb_i][r][s] (lda = kb), B = the input pixels
 * (ldb = stride_w*cb), C = Y_blk (ldc = kb); the (cb_i, r, s) addresses are fixed byte offsets,
 * computed once in the plan. With stride 1 and narrow maps, rb > 1 output rows are done in one call
 * by letting the GEMM run across the padded row ends (Wv = Wp); the extra columns are discarded.
 *
 * Backward-data, stride 1: the same forward engine on dY padded by (R-1)*dil - pad with the weights
 * flipped and K/C swapped. Strides > 1: a scatter form, for each (dY row, r, s) one batch-reduce over
 * K blocks adds W^T dY into the padded dX rows it touches (ldc = stride_w*cb, beta = 1).
 *
 * Backward-weight: each thread owns a contiguous range of images and accumulates a private
 * dW^T[kb x cb] per (g, K block, C block, r, s) with one batch-reduce over (image, output row), the
 * reduction length per entry being one output row (k = Q); the per-thread partials are then summed
 * in thread order, so the result depends on nthreads but never on scheduling. */
#include <libxsmm.h>
#include <omp.h>
#include <string.h>

#include "runtime/kernels/conv_internal.h"
#include "runtime/kernels/kern_internal.h"

/* Widest output pixel run (n of one GEMM) the forward engine aims for when it merges rows. */
#define CONV_FWD_NMAX 128
/* Channel block limit (the m and k of the GEMMs). */
#define CONV_BLOCK_MAX 64
/* Bytes of input + dY per image the weight-gradient reduction chunk should stay under (L2 share). */
#define CONV_WU_CHUNK_BYTES (384 * 1024)

conv_prof conv_brgemm_prof;

/* Adds the time since *t0 to *acc and restarts *t0 (only when profiling). */
static void prof_lap(double *acc, double *t0) {
  if (!conv_brgemm_prof.enabled) return;
  double t = omp_get_wtime();
  *acc += t - *t0;
  *t0 = t;
}

static double prof_now(void) { return conv_brgemm_prof.enabled ? omp_get_wtime() : 0.0; }

static size_t fbytes(size_t nfloats) { return kern_align_up(nfloats * sizeof(float)); }

/* Splits n channels into blocks of at most CONV_BLOCK_MAX, as evenly as possible. */
static int block_size(int n) {
  int nb = kern_cdiv(n, CONV_BLOCK_MAX);
  return kern_cdiv(n, nb);
}

/* ---------------------------------------------------------------------------------------------
 * Layout transforms (all parallel over planes; each output element is written once). */

typedef struct pack_args {
  const float *src;
  float *dst;
  int N, G, Cper, Hs, Ws;      /* source NCHW with G*Cper channels */
  int Bn, bs, Hd, Wd;          /* destination [N][G][Bn][Hd][Wd][bs] */
  int off_t, off_l;            /* source (h, w) lands at (h + off_t, w + off_l) */
  const float *bias;           /* unpack only: added per channel (may be NULL) */
} pack_args;

/* NCHW -> [N][G][Bn][Hd][Wd][bs], zero outside the source and for channels >= Cper. Works on
 * 16-channel x 16-pixel tiles (kern_transpose16). */
static void pack_worker(void *ctx, int t, int T) {
  const pack_args *a = ctx;
  int64_t lo, hi, planes = (int64_t)a->N * a->G * a->Bn;
  kern_split(planes, t, T, &lo, &hi);
  int w0 = a->off_l > 0 ? a->off_l : 0;                   /* first destination column with data */
  int ws0 = w0 - a->off_l;                                /* its source column */
  int wn = a->Ws - ws0;                                   /* columns with data */
  if (wn > a->Wd - w0) wn = a->Wd - w0;
  if (wn < 0) wn = 0;
  size_t splane = (size_t)a->Hs * a->Ws;
  for (int64_t pl = lo; pl < hi; pl++) {
    int bi = (int)(pl % a->Bn);
    int64_t ng = pl / a->Bn; /* n*G + g */
    float *dplane = a->dst + (size_t)pl * a->Hd * a->Wd * a->bs;
    for (int hd = 0; hd < a->Hd; hd++) {
      float *drow = dplane + (size_t)hd * a->Wd * a->bs;
      int hs = hd - a->off_t;
      if (hs < 0 || hs >= a->Hs || wn == 0) {
        memset(drow, 0, sizeof(float) * a->Wd * a->bs);
        continue;
      }
      memset(drow, 0, sizeof(float) * w0 * a->bs);
      memset(drow + (size_t)(w0 + wn) * a->bs, 0, sizeof(float) * (a->Wd - w0 - wn) * a->bs);
      for (int c0 = 0; c0 < a->bs; c0 += 16) {
        int nst = a->bs - c0 < 16 ? a->bs - c0 : 16; /* channels stored per pixel */
        int ch0 = bi * a->bs + c0;
        int nld = a->Cper - ch0; /* real channels among them */
        if (nld > nst) nld = nst;
        if (nld < 0) nld = 0;
        const float *src = a->src + ((size_t)ng * a->Cper + (nld ? ch0 : 0)) * splane + (size_t)hs * a->Ws + ws0;
        for (int w = 0; w < wn; w += 16)
          kern_transpose16(src + w, splane, nld, drow + (size_t)(w0 + w) * a->bs + c0, a->bs,
                           wn - w < 16 ? wn - w : 16, nst, NULL);
      }
    }
  }
}

/* [N][G][Bn][Hs][Ws][bs] -> NCHW [N][G*Cper][Hd][Wd] (+ bias): dst (h, w) = src (h+off_t, w+off_l). */
static void unpack_worker(void *ctx, int t, int T) {
  const pack_args *a = ctx;
  int64_t lo, hi, planes = (int64_t)a->N * a->G * a->Bn;
  kern_split(planes, t, T, &lo, &hi);
  size_t dplane = (size_t)a->Hd * a->Wd;
  for (int64_t pl = lo; pl < hi; pl++) {
    int bi = (int)(pl % a->Bn);
    int64_t ng = pl / a->Bn;
    const float *splane = a->src + (size_t)pl * a->Hs * a->Ws * a->bs;
    for (int c0 = 0; c0 < a->bs; c0 += 16) {
      int ch0 = bi * a->bs + c0;
      int nc = a->Cper - ch0; /* real channels in this tile */
      if (nc > 16) nc = 16;
      if (nc > a->bs - c0) nc = a->bs - c0;
      if (nc <= 0) break;
      float *dst = a->dst + ((size_t)ng * a->Cper + ch0) * dplane;
      const float *bias = a->bias ? a->bias + (ng % a->G) * a->Cper + ch0 : NULL;
      for (int h = 0; h < a->Hd; h++) {
        const float *srow = splane + ((size_t)(h + a->off_t) * a->Ws + a->off_l) * a->bs + c0;
        for (int w = 0; w < a->Wd; w += 16) {
          int np = a->Wd - w < 16 ? a->Wd - w : 16;
          kern_transpose16(srow + (size_t)w * a->bs, a->bs, np, dst + (size_t)h * a->Wd + w, dplane, nc, np, bias);
        }
      }
    }
  }
}

/* NCHW dY -> [N][G][Kb][P][kb][Q] (rows of Q kept contiguous), for the weight gradient. */
static void pack_rows_worker(void *ctx, int t, int T) {
  const pack_args *a = ctx;
  int64_t lo, hi, planes = (int64_t)a->N * a->G * a->Bn;
  kern_split(planes, t, T, &lo, &hi);
  for (int64_t pl = lo; pl < hi; pl++) {
    int bi = (int)(pl % a->Bn);
    int64_t ng = pl / a->Bn;
    for (int h = 0; h < a->Hs; h++)
      for (int c = 0; c < a->bs; c++) {
        int ch = bi * a->bs + c;
        float *d = a->dst + (((size_t)pl * a->Hs + h) * a->bs + c) * a->Ws;
        if (ch >= a->Cper)
          memset(d, 0, sizeof(float) * a->Ws);
        else
          memcpy(d, a->src + (((size_t)ng * a->Cper + ch) * a->Hs + h) * a->Ws, sizeof(float) * a->Ws);
      }
  }
}

/* Weight transforms. w is OIHW [G*Kg][Cg][R][S]. */
typedef enum wpack_kind {
  WPACK_FWD,     /* [G][Kb][Cb][R][S][cb][kb] */
  WPACK_FLIP,    /* [G][Cb][Kb][R][S][kb][cb], r and s flipped (bwd-data as a forward conv) */
  WPACK_SCATTER, /* [G][Cb][R][S][Kb][kb][cb] (scatter bwd-data) */
} wpack_kind;

typedef struct wpack_args {
  const conv_plan *p;
  wpack_kind kind;
  const float *w;
  float *dst;
} wpack_args;

static void wpack_worker(void *ctx, int t, int T) {
  const wpack_args *a = ctx;
  const conv_plan *p = a->p;
  int R = p->d.R, S = p->d.S, cb = p->cb, kb = p->kb, Cb = p->Cb, Kb = p->Kb;
  int64_t lo, hi, blocks = (int64_t)p->G * Kb * Cb;
  kern_split(blocks, t, T, &lo, &hi);
  for (int64_t bl = lo; bl < hi; bl++) {
    int g = (int)(bl / ((int64_t)Kb * Cb)), ki = (int)(bl / Cb % Kb), ci = (int)(bl % Cb);
    for (int r = 0; r < R; r++)
      for (int s = 0; s < S; s++)
        for (int c = 0; c < cb; c++)
          for (int k = 0; k < kb; k++) {
            int kk = ki * kb + k, cc = ci * cb + c;
            float v = 0.0f;
            if (kk < p->Kg && cc < p->Cg) {
              size_t src = (((size_t)(g * p->Kg + kk) * p->Cg + cc) * R + r) * S + s;
              v = a->w[src];
            }
            size_t dst;
            switch (a->kind) {
            case WPACK_FWD:
              dst = ((((((size_t)g * Kb + ki) * Cb + ci) * R + r) * S + s) * cb + c) * kb + k;
              break;
            case WPACK_FLIP:
              dst = ((((((size_t)g * Cb + ci) * Kb + ki) * R + (R - 1 - r)) * S + (S - 1 - s)) * kb + k) * cb + c;
              break;
            default: /* WPACK_SCATTER */
              dst = ((((((size_t)g * Cb + ci) * R + r) * S + s) * Kb + ki) * kb + k) * cb + c;
              break;
            }
            a->dst[dst] = v;
          }
  }
}

static void wpack(const conv_plan *p, wpack_kind kind, const float *w, float *dst) {
  wpack_args a = {p, kind, w, dst};
  kern_parallel(p->nthreads, wpack_worker, &a);
}

/* ---------------------------------------------------------------------------------------------
 * The forward engine. */

static void *dispatch_offs(int m, int n, int k, int lda, int ldb, int ldc, float beta) {
  libxsmm_blasint lm = m, ln = n, lk = k, la = lda, lb = ldb, lc = ldc;
  float alpha = 1.0f;
  int flags = LIBXSMM_GEMM_FLAG_NONE, prefetch = LIBXSMM_GEMM_PREFETCH_NONE;
  libxsmm_smmfunction_reducebatch_offs f =
      libxsmm_smmdispatch_reducebatch_offs(lm, ln, lk, &la, &lb, &lc, &alpha, &beta, &flags, &prefetch);
  return (void *)f;
}

static void *dispatch_strd(int m, int n, int k, long sa, long sb, int lda, int ldb, int ldc, float beta) {
  libxsmm_blasint lm = m, ln = n, lk = k, la = lda, lb = ldb, lc = ldc;
  float alpha = 1.0f;
  int flags = LIBXSMM_GEMM_FLAG_NONE, prefetch = LIBXSMM_GEMM_PREFETCH_NONE;
  libxsmm_smmfunction_reducebatch_strd f = libxsmm_smmdispatch_reducebatch_strd(
      lm, ln, lk, (libxsmm_blasint)sa, (libxsmm_blasint)sb, &la, &lb, &lc, &alpha, &beta, &flags, &prefetch);
  return (void *)f;
}

/* Sets up a forward engine: G groups, I input channels per group in blocks of ib, O output channels
 * in blocks of ob, a Hs x Ws source padded by (pt, pl, pb, pr) (pads may be negative: crop). */
static int geo_init(conv_geo *g, int G, int I, int ib, int O, int ob, int Hs, int Ws, int pt, int pl, int pb,
                    int pr, int R, int S, int sh, int sw, int dh, int dw, int P, int Q, sw_err *e) {
  memset(g, 0, sizeof *g);
  g->G = G;
  g->ib = ib;
  g->Ib = kern_cdiv(I, ib);
  g->ob = ob;
  g->Ob = kern_cdiv(O, ob);
  g->Hp = Hs + pt + pb;
  g->Wp = Ws + pl + pr;
  g->off_t = pt;
  g->off_l = pl;
  g->P = P;
  g->Q = Q;
  g->R = R;
  g->S = S;
  g->sh = sh;
  g->sw = sw;
  g->dh = dh;
  g->dw = dw;
  SW_ASSERT((P - 1) * sh + (R - 1) * dh < g->Hp && (Q - 1) * sw + (S - 1) * dw < g->Wp);
  if (sh == 1 && sw == 1 && Q < 32 && P > 1) {
    /* Merge rows: one GEMM runs over rb rows of the padded pitch. */
    g->Wv = g->Wp;
    int rb = (CONV_FWD_NMAX - Q) / g->Wp + 1;
    if (rb < 1) rb = 1;
    if (rb > P) rb = P;
    int nblk = kern_cdiv(P, rb);
    g->rb = kern_cdiv(P, nblk);
  } else {
    g->Wv = Q;
    g->rb = 1;
  }
  int nfull = (g->rb - 1) * g->Wv + Q;
  g->kern_full = dispatch_offs(ob, nfull, ib, ob, sw * ib, ob, 0.0f);
  g->tail_rows = P % g->rb;
  if (g->tail_rows) g->kern_tail = dispatch_offs(ob, (g->tail_rows - 1) * g->Wv + Q, ib, ob, sw * ib, ob, 0.0f);
  if (!g->kern_full || (g->tail_rows && !g->kern_tail))
    return sw_fail(e, SW_EINPUT, "Conv: libxsmm could not generate a %dx%dx%d batch-reduce kernel", ob, nfull, ib);
  int nb = g->Ib * R * S;
  g->a_offs = sw_xmalloc(sizeof(unsigned long long) * nb);
  g->b_offs = sw_xmalloc(sizeof(unsigned long long) * nb);
  for (int ci = 0; ci < g->Ib; ci++)
    for (int r = 0; r < R; r++)
      for (int s = 0; s < S; s++) {
        int i = (ci * R + r) * S + s;
        g->a_offs[i] = (unsigned long long)i * ib * ob * sizeof(float);
        g->b_offs[i] = (((unsigned long long)ci * g->Hp + (unsigned long long)r * dh) * g->Wp + (unsigned long long)s * dw) *
                       ib * sizeof(float);
      }
  return SW_OK;
}

static void geo_free(conv_geo *g) {
  free(g->a_offs);
  free(g->b_offs);
  g->a_offs = g->b_offs = NULL;
}

static size_t geo_in_floats(const conv_geo *g, int N) { return (size_t)N * g->G * g->Ib * g->Hp * g->Wp * g->ib; }
static size_t geo_w_floats(const conv_geo *g) { return (size_t)g->G * g->Ob * g->Ib * g->R * g->S * g->ib * g->ob; }
static size_t geo_out_floats(const conv_geo *g, int N) { return (size_t)N * g->G * g->Ob * g->P * g->Wv * g->ob; }

typedef struct geo_run_args {
  const conv_geo *g;
  int N;
  const float *in, *wt;
  float *out;
} geo_run_args;

static void geo_run_worker(void *ctx, int t, int T) {
  const geo_run_args *a = ctx;
  const conv_geo *g = a->g;
  int nblk = kern_cdiv(g->P, g->rb);
  int64_t lo, hi, units = (int64_t)a->N * g->G * g->Ob * nblk;
  kern_split(units, t, T, &lo, &hi);
  unsigned long long count = (unsigned long long)g->Ib * g->R * g->S;
  size_t wblock = (size_t)g->Ib * g->R * g->S * g->ib * g->ob;
  libxsmm_smmfunction_reducebatch_offs full = (libxsmm_smmfunction_reducebatch_offs)g->kern_full;
  libxsmm_smmfunction_reducebatch_offs tail = (libxsmm_smmfunction_reducebatch_offs)g->kern_tail;
  for (int64_t u = lo; u < hi; u++) {
    int blk = (int)(u % nblk);
    int o = (int)(u / nblk % g->Ob);
    int64_t ng = u / nblk / g->Ob; /* n*G + group */
    int gg = (int)(ng % g->G);
    int p0 = blk * g->rb;
    const float *A = a->wt + ((size_t)gg * g->Ob + o) * wblock;
    const float *B = a->in + (((size_t)ng * g->Ib * g->Hp + (size_t)p0 * g->sh) * g->Wp) * g->ib;
    float *C = a->out + (((size_t)ng * g->Ob + o) * g->P + p0) * g->Wv * g->ob;
    if (p0 + g->rb <= g->P)
      full(A, B, C, &count, g->a_offs, g->b_offs);
    else
      tail(A, B, C, &count, g->a_offs, g->b_offs);
  }
}

static void geo_run(const conv_geo *g, int N, const float *in, const float *wt, float *out, int nthreads) {
  geo_run_args a = {g, N, in, wt, out};
  kern_parallel(nthreads, geo_run_worker, &a);
}

/* ---------------------------------------------------------------------------------------------
 * Plan. */

int conv_brgemm_init(conv_plan *p, sw_err *e) {
  const conv_desc *d = &p->d;
  libxsmm_init();
  p->G = d->groups;
  p->Cg = d->C / d->groups;
  p->Kg = d->K / d->groups;
  p->cb = block_size(p->Cg);
  p->Cb = kern_cdiv(p->Cg, p->cb);
  p->kb = block_size(p->Kg);
  p->Kb = kern_cdiv(p->Kg, p->kb);
  int N = d->N, T = p->nthreads;
  size_t wfl = (size_t)p->G * p->Kb * p->Cb * d->R * d->S * p->cb * p->kb; /* padded weight floats */

  /* Forward. */
  if (geo_init(&p->fwd, p->G, p->Cg, p->cb, p->Kg, p->kb, d->H, d->W, d->pad_t, d->pad_l, d->pad_b, d->pad_r,
               d->R, d->S, d->stride_h, d->stride_w, d->dil_h, d->dil_w, d->P, d->Q, e))
    return e ? e->code : SW_EINPUT;
  p->scratch[CONV_FWD] = fbytes(geo_in_floats(&p->fwd, N)) + fbytes(geo_w_floats(&p->fwd)) +
                         fbytes(geo_out_floats(&p->fwd, N));

  /* Backward-data. */
  p->bwd_gather = d->stride_h == 1 && d->stride_w == 1;
  if (p->bwd_gather) {
    int pt = (d->R - 1) * d->dil_h - d->pad_t, pb = (d->R - 1) * d->dil_h - d->pad_b;
    int pl = (d->S - 1) * d->dil_w - d->pad_l, pr = (d->S - 1) * d->dil_w - d->pad_r;
    if (geo_init(&p->bwdd, p->G, p->Kg, p->kb, p->Cg, p->cb, d->P, d->Q, pt, pl, pb, pr, d->R, d->S, 1, 1,
                 d->dil_h, d->dil_w, d->H, d->W, e))
      return e ? e->code : SW_EINPUT;
    p->scratch[CONV_BWD_DATA] = fbytes(geo_in_floats(&p->bwdd, N)) + fbytes(geo_w_floats(&p->bwdd)) +
                                fbytes(geo_out_floats(&p->bwdd, N));
  } else {
    p->bwdd_Hp = d->H + d->pad_t + d->pad_b;
    p->bwdd_Wp = d->W + d->pad_l + d->pad_r;
    p->kern_scatter = dispatch_strd(p->cb, d->Q, p->kb, (long)p->kb * p->cb * sizeof(float),
                                    (long)d->P * d->Q * p->kb * sizeof(float), p->cb, p->kb, d->stride_w * p->cb, 1.0f);
    if (!p->kern_scatter)
      return sw_fail(e, SW_EINPUT, "Conv: libxsmm could not generate the backward-data kernel");
    p->scratch[CONV_BWD_DATA] = fbytes((size_t)N * p->G * p->Kb * d->P * d->Q * p->kb) + fbytes(wfl) +
                                fbytes((size_t)N * p->G * p->Cb * p->bwdd_Hp * p->bwdd_Wp * p->cb);
  }

  /* Backward-weight: offsets of the (image, output row) entries of one reduction chunk. */
  const conv_geo *f = &p->fwd;
  size_t per_image = sizeof(float) * ((size_t)f->Hp * f->Wp * p->cb + (size_t)d->P * d->Q * p->kb);
  int chunk = (int)(CONV_WU_CHUNK_BYTES / per_image);
  if (chunk < 1) chunk = 1;
  if (chunk > N) chunk = N;
  p->wu_chunk = chunk;
  p->kern_wu = dispatch_offs(p->cb, p->kb, d->Q, d->stride_w * p->cb, d->Q, p->cb, 1.0f);
  if (!p->kern_wu) return sw_fail(e, SW_EINPUT, "Conv: libxsmm could not generate the weight-gradient kernel");
  size_t nent = (size_t)chunk * d->P;
  p->wu_a_offs = sw_xmalloc(sizeof(unsigned long long) * nent);
  p->wu_b_offs = sw_xmalloc(sizeof(unsigned long long) * nent);
  for (int j = 0; j < chunk; j++)
    for (int oh = 0; oh < d->P; oh++) {
      size_t i = (size_t)j * d->P + oh;
      p->wu_a_offs[i] = ((unsigned long long)j * p->G * p->Cb * f->Hp * f->Wp * p->cb +
                         (unsigned long long)oh * d->stride_h * f->Wp * p->cb) * sizeof(float);
      p->wu_b_offs[i] = ((unsigned long long)j * p->G * p->Kb * d->P * p->kb * d->Q +
                         (unsigned long long)oh * p->kb * d->Q) * sizeof(float);
    }
  p->scratch[CONV_BWD_WEIGHT] = fbytes(geo_in_floats(f, N)) + fbytes((size_t)N * p->G * p->Kb * d->P * p->kb * d->Q) +
                                (size_t)T * fbytes(wfl);
  return SW_OK;
}

void conv_brgemm_free(conv_plan *p) {
  geo_free(&p->fwd);
  geo_free(&p->bwdd);
  free(p->wu_a_offs);
  free(p->wu_b_offs);
  p->wu_a_offs = p->wu_b_offs = NULL;
}

/* ---------------------------------------------------------------------------------------------
 * Execute. */

void conv_brgemm_fwd(const conv_plan *p, const float *x, const float *w, const float *b, float *y, void *scratch) {
  const conv_desc *d = &p->d;
  const conv_geo *g = &p->fwd;
  char *sp = scratch;
  float *xb = (float *)sp;
  sp += fbytes(geo_in_floats(g, d->N));
  float *wb = (float *)sp;
  sp += fbytes(geo_w_floats(g));
  float *yb = (float *)sp;
  conv_prof *pr = &conv_brgemm_prof;
  double t0 = prof_now();
  pack_args pa = {x, xb, d->N, p->G, p->Cg, d->H, d->W, p->Cb, p->cb, g->Hp, g->Wp, g->off_t, g->off_l, NULL};
  kern_parallel(p->nthreads, pack_worker, &pa);
  wpack(p, WPACK_FWD, w, wb);
  prof_lap(&pr->pack, &t0);
  geo_run(g, d->N, xb, wb, yb, p->nthreads);
  prof_lap(&pr->gemm, &t0);
  pack_args ua = {yb, y, d->N, p->G, p->Kg, g->P, g->Wv, p->Kb, p->kb, d->P, d->Q, 0, 0, b};
  kern_parallel(p->nthreads, unpack_worker, &ua);
  prof_lap(&pr->unpack, &t0);
}

typedef struct scatter_args {
  const conv_plan *p;
  const float *dyb, *wb;
  float *dxb;
} scatter_args;

static void scatter_worker(void *ctx, int t, int T) {
  const scatter_args *a = ctx;
  const conv_plan *p = a->p;
  const conv_desc *d = &p->d;
  int Hp = p->bwdd_Hp, Wp = p->bwdd_Wp;
  int64_t lo, hi, units = (int64_t)d->N * p->G * p->Cb;
  kern_split(units, t, T, &lo, &hi);
  unsigned long long count = (unsigned long long)p->Kb;
  libxsmm_smmfunction_reducebatch_strd kern = (libxsmm_smmfunction_reducebatch_strd)p->kern_scatter;
  size_t plane = (size_t)Hp * Wp * p->cb;
  size_t wrs = (size_t)p->Kb * p->kb * p->cb; /* one (r, s) slice of the packed weights */
  for (int64_t u = lo; u < hi; u++) {
    int ci = (int)(u % p->Cb);
    int64_t ng = u / p->Cb;
    int gg = (int)(ng % p->G);
    float *C0 = a->dxb + (size_t)u * plane;
    memset(C0, 0, sizeof(float) * plane);
    const float *A0 = a->wb + ((size_t)gg * p->Cb + ci) * d->R * d->S * wrs;
    const float *B0 = a->dyb + (size_t)ng * p->Kb * d->P * d->Q * p->kb;
    for (int oh = 0; oh < d->P; oh++)
      for (int r = 0; r < d->R; r++)
        for (int s = 0; s < d->S; s++) {
          const float *A = A0 + ((size_t)r * d->S + s) * wrs;
          const float *B = B0 + (size_t)oh * d->Q * p->kb;
          float *C = C0 + ((size_t)(oh * d->stride_h + r * d->dil_h) * Wp + (size_t)s * d->dil_w) * p->cb;
          kern(A, B, C, &count);
        }
  }
}

void conv_brgemm_bwd_data(const conv_plan *p, const float *dy, const float *w, float *dx, void *scratch) {
  const conv_desc *d = &p->d;
  char *sp = scratch;
  conv_prof *pr = &conv_brgemm_prof;
  double t0 = prof_now();
  if (p->bwd_gather) {
    const conv_geo *g = &p->bwdd;
    float *dyb = (float *)sp;
    sp += fbytes(geo_in_floats(g, d->N));
    float *wb = (float *)sp;
    sp += fbytes(geo_w_floats(g));
    float *dxb = (float *)sp;
    pack_args pa = {dy, dyb, d->N, p->G, p->Kg, d->P, d->Q, p->Kb, p->kb, g->Hp, g->Wp, g->off_t, g->off_l, NULL};
    kern_parallel(p->nthreads, pack_worker, &pa);
    wpack(p, WPACK_FLIP, w, wb);
    prof_lap(&pr->pack, &t0);
    geo_run(g, d->N, dyb, wb, dxb, p->nthreads);
    prof_lap(&pr->gemm, &t0);
    pack_args ua = {dxb, dx, d->N, p->G, p->Cg, g->P, g->Wv, p->Cb, p->cb, d->H, d->W, 0, 0, NULL};
    kern_parallel(p->nthreads, unpack_worker, &ua);
    prof_lap(&pr->unpack, &t0);
    return;
  }
  float *dyb = (float *)sp;
  sp += fbytes((size_t)d->N * p->G * p->Kb * d->P * d->Q * p->kb);
  float *wb = (float *)sp;
  sp += fbytes((size_t)p->G * p->Kb * p->Cb * d->R * d->S * p->cb * p->kb);
  float *dxb = (float *)sp;
  pack_args pa = {dy, dyb, d->N, p->G, p->Kg, d->P, d->Q, p->Kb, p->kb, d->P, d->Q, 0, 0, NULL};
  kern_parallel(p->nthreads, pack_worker, &pa);
  wpack(p, WPACK_SCATTER, w, wb);
  prof_lap(&pr->pack, &t0);
  scatter_args sa = {p, dyb, wb, dxb};
  kern_parallel(p->nthreads, scatter_worker, &sa);
  prof_lap(&pr->gemm, &t0);
  pack_args ua = {dxb, dx, d->N, p->G, p->Cg, p->bwdd_Hp, p->bwdd_Wp, p->Cb, p->cb, d->H, d->W, d->pad_t, d->pad_l, NULL};
  kern_parallel(p->nthreads, unpack_worker, &ua);
  prof_lap(&pr->unpack, &t0);
}

typedef struct wu_args {
  const conv_plan *p;
  const float *xb, *dyt;
  float *part;  /* T partial dW_blk, each wstride floats apart */
  size_t wstride;
  float *dw;    /* unpack stage */
} wu_args;

/* Thread t accumulates the weight gradient of its images into its own partial. */
static void wu_worker(void *ctx, int t, int T) {
  const wu_args *a = ctx;
  const conv_plan *p = a->p;
  const conv_desc *d = &p->d;
  const conv_geo *f = &p->fwd;
  int R = d->R, S = d->S, cb = p->cb, kb = p->kb;
  float *part = a->part + (size_t)t * a->wstride;
  size_t wfl = (size_t)p->G * p->Kb * p->Cb * R * S * cb * kb;
  memset(part, 0, sizeof(float) * wfl);
  int64_t lo, hi;
  kern_split(d->N, t, T, &lo, &hi);
  libxsmm_smmfunction_reducebatch_offs kern = (libxsmm_smmfunction_reducebatch_offs)p->kern_wu;
  size_t xplane = (size_t)f->Hp * f->Wp * cb, yplane = (size_t)d->P * kb * d->Q;
  for (int64_t n0 = lo; n0 < hi; n0 += p->wu_chunk) {
    int nimg = (int)(hi - n0 < p->wu_chunk ? hi - n0 : p->wu_chunk);
    unsigned long long count = (unsigned long long)nimg * d->P;
    for (int g = 0; g < p->G; g++)
      for (int ki = 0; ki < p->Kb; ki++)
        for (int ci = 0; ci < p->Cb; ci++)
          for (int r = 0; r < R; r++)
            for (int s = 0; s < S; s++) {
              const float *A = a->xb + (((size_t)n0 * p->G + g) * p->Cb + ci) * xplane +
                               ((size_t)r * d->dil_h * f->Wp + (size_t)s * d->dil_w) * cb;
              const float *B = a->dyt + (((size_t)n0 * p->G + g) * p->Kb + ki) * yplane;
              float *C = part + (((((size_t)g * p->Kb + ki) * p->Cb + ci) * R + r) * S + s) * kb * cb;
              kern(A, B, C, &count, p->wu_a_offs, p->wu_b_offs);
            }
  }
}

/* dw (OIHW) = sum over threads, in thread order, of the partials [G][Kb][Cb][R][S][kb][cb]. */
static void wu_reduce_worker(void *ctx, int t, int T) {
  const wu_args *a = ctx;
  const conv_plan *p = a->p;
  const conv_desc *d = &p->d;
  int R = d->R, S = d->S, cb = p->cb, kb = p->kb;
  int64_t lo, hi;
  kern_split(d->K, t, T, &lo, &hi);
  for (int64_t k = lo; k < hi; k++) {
    int g = (int)(k / p->Kg), kk = (int)(k % p->Kg), ki = kk / kb, kl = kk % kb;
    for (int c = 0; c < p->Cg; c++) {
      int ci = c / cb, cl = c % cb;
      for (int r = 0; r < R; r++)
        for (int s = 0; s < S; s++) {
          size_t off = ((((((size_t)g * p->Kb + ki) * p->Cb + ci) * R + r) * S + s) * kb + kl) * cb + cl;
          float v = a->part[off];
          for (int u = 1; u < p->nthreads; u++) v += a->part[(size_t)u * a->wstride + off];
          a->dw[(((size_t)k * p->Cg + c) * R + r) * S + s] = v;
        }
    }
  }
}

void conv_brgemm_bwd_weight(const conv_plan *p, const float *x, const float *dy, float *dw, float *db,
                            void *scratch) {
  const conv_desc *d = &p->d;
  const conv_geo *f = &p->fwd;
  char *sp = scratch;
  float *xb = (float *)sp;
  sp += fbytes(geo_in_floats(f, d->N));
  float *dyt = (float *)sp;
  sp += fbytes((size_t)d->N * p->G * p->Kb * d->P * p->kb * d->Q);
  float *part = (float *)sp;
  size_t wfl = (size_t)p->G * p->Kb * p->Cb * d->R * d->S * p->cb * p->kb;
  conv_prof *pr = &conv_brgemm_prof;
  double t0 = prof_now();
  pack_args pa = {x, xb, d->N, p->G, p->Cg, d->H, d->W, p->Cb, p->cb, f->Hp, f->Wp, f->off_t, f->off_l, NULL};
  kern_parallel(p->nthreads, pack_worker, &pa);
  pack_args ra = {dy, dyt, d->N, p->G, p->Kg, d->P, d->Q, p->Kb, p->kb, 0, 0, 0, 0, NULL};
  kern_parallel(p->nthreads, pack_rows_worker, &ra);
  prof_lap(&pr->pack, &t0);
  wu_args wa = {p, xb, dyt, part, fbytes(wfl) / sizeof(float), dw};
  kern_parallel(p->nthreads, wu_worker, &wa);
  prof_lap(&pr->gemm, &t0);
  kern_parallel(p->nthreads, wu_reduce_worker, &wa);
  if (db) conv_bias_grad(d, dy, db, p->nthreads);
  prof_lap(&pr->unpack, &t0);
}
