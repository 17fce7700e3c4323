/* Convolution with libxsmm batch-reduce GEMMs on channel-blocked layouts.
 *
 * Channels of each group are split into blocks (C/groups into Cb blocks of cb, K/groups into Kb
 * blocks of kb; the last block is zero-padded). Per image, in scratch:
 *
 *   X_blk [G][Cb][Hp][Wp][cb]      input, zero-padded spatially (Hp = H+pad_t+pad_b, ...)
 *   W_blk [G][Kb][Cb][R][S][cb][kb] weights (packed once per call, shared by all threads)
 *   Y_blk [G][Kb][P][Wv][kb]       output, rows of pitch Wv >= Q
 *
 * Forward: for each (group, K block, block of rb output rows) one batch-reduce GEMM
 *   C[kb x n] += sum over (C block, r, s) of A[kb x cb] * B[cb x n]
 * in libxsmm's column-major terms: A = W_blk[g][kb][cb_i][r][s] (lda = kb), B = the input pixels
 * (ldb = stride_w*cb), C = Y_blk (ldc = kb); the (cb_i, r, s) addresses are fixed byte offsets
 * computed once in the plan. With stride 1 and narrow maps, rb > 1 output rows are done in one call
 * by letting the GEMM run across the padded row ends (Wv = Wp); the extra columns are discarded.
 *
 * Backward-data, stride 1: the same forward engine on dY padded by (R-1)*dil - pad with the weights
 * flipped and K/C swapped. Strides > 1: a scatter form, for each (dY row, r, s) one batch-reduce over
 * K blocks adds W^T dY into the padded dX rows it touches (ldc = stride_w*cb, beta = 1).
 * A strided 1x1 convolution without padding is run as a stride-1 1x1 convolution of the subsampled
 * input (and its dX scattered back with zeros in between).
 *
 * Backward-weight: each thread owns a contiguous range of images and accumulates a private
 * dW^T[kb x cb] per (g, K block, C block, r, s) with one batch-reduce over (image, output row), the
 * reduction length per entry being one output row (k = Q); the per-thread partials are then summed
 * in thread order, so the result depends on nthreads but never on scheduling.
 *
 * Two schedules: with enough images (N >= 4*threads, or one thread) each thread takes whole images
 * and packs, multiplies and unpacks them in private buffers that stay in its L2, so the layout
 * transforms cost little memory traffic; with few images every stage is split across threads over
 * the whole batch (all images packed at once). */
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

/* Floats between consecutive image buffers: rounded up to the alignment for per-thread slots, exact
 * for the whole-batch layout (whose images must be contiguous for the chunked offsets). */
static size_t slot_floats(int per_image, size_t nfloats) {
  return per_image ? fbytes(nfloats) / sizeof(float) : nfloats;
}

/* Stage timing inside the per-image workers: thread 0 stands for all (it runs N/T images). */
static void prof_lap_t0(int t, double *acc, double *t0) {
  if (t == 0) prof_lap(acc, t0);
}

/* Splits n channels into blocks of at most CONV_BLOCK_MAX, as evenly as possible. */
static int block_size(int n) {
  int nb = kern_cdiv(n, CONV_BLOCK_MAX);
  return kern_cdiv(n, nb);
}

/* ---------------------------------------------------------------------------------------------
 * Layout transforms of one image between NCHW and [G][Bn][Hd][Wd][bs]. */

typedef struct pack_args {
  int G, Cper;          /* channels: G groups of Cper */
  int Hs, Ws;           /* NCHW plane */
  int sh, sw;           /* sampling: grid point (i, j) is NCHW (i*sh, j*sw) */
  int Hg, Wg;           /* grid size (Hs x Ws when not sampling) */
  int Bn, bs, Hd, Wd;   /* blocked side */
  int off_t, off_l;     /* grid point (i, j) sits at blocked (i + off_t, j + off_l); may be negative */
  const float *bias;    /* unpack: added per channel (may be NULL) */
} pack_args;

static size_t nchw_image(const pack_args *a) { return (size_t)a->G * a->Cper * a->Hs * a->Ws; }
static size_t blk_plane(const pack_args *a) { return (size_t)a->Hd * a->Wd * a->bs; }
static size_t blk_image(const pack_args *a) { return (size_t)a->G * a->Bn * blk_plane(a); }

/* Blocked plane (g, bi) of one image from its NCHW planes; zero outside the grid and for channels
 * >= Cper. 16-channel x 16-pixel tiles go through kern_transpose16. */
static void pack_plane(const pack_args *a, const float *src, int g, int bi, float *dplane) {
  int w0 = a->off_l > 0 ? a->off_l : 0; /* first blocked column with data */
  int j0 = w0 - a->off_l;               /* its grid column */
  int wn = a->Wg - j0;                  /* columns with data */
  if (wn > a->Wd - w0) wn = a->Wd - w0;
  if (wn < 0) wn = 0;
  size_t splane = (size_t)a->Hs * a->Ws;
  for (int hd = 0; hd < a->Hd; hd++) {
    float *drow = dplane + (size_t)hd * a->Wd * a->bs;
    int i = hd - a->off_t;
    if (i < 0 || i >= a->Hg || wn == 0) {
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
      const float *srow = src + ((size_t)g * a->Cper + (nld ? ch0 : 0)) * splane + (size_t)i * a->sh * a->Ws;
      float *d = drow + (size_t)w0 * a->bs + c0;
      for (int j = 0; j < wn; j += 16)
        kern_transpose16_step(srow + (size_t)(j0 + j) * a->sw, splane, a->sw, nld, d + (size_t)j * a->bs, a->bs, 1,
                              wn - j < 16 ? wn - j : 16, nst, NULL);
    }
  }
}

/* NCHW planes of one image (+ bias) from its blocked plane (g, bi): grid point (i, j) reads blocked
 * (i + off_t, j + off_l); with sampling, NCHW points off the grid are set to zero. */
static void unpack_plane(const pack_args *a, const float *splane, int g, int bi, float *dst) {
  size_t dplane = (size_t)a->Hs * a->Ws;
  for (int c0 = 0; c0 < a->bs; c0 += 16) {
    int ch0 = bi * a->bs + c0;
    int nc = a->Cper - ch0; /* real channels in this tile */
    if (nc > 16) nc = 16;
    if (nc > a->bs - c0) nc = a->bs - c0;
    if (nc <= 0) break;
    float *d = dst + ((size_t)g * a->Cper + ch0) * dplane;
    const float *bias = a->bias ? a->bias + (size_t)g * a->Cper + ch0 : NULL;
    if (a->sh == 1 && a->sw == 1) {
      for (int i = 0; i < a->Hg; i++) {
        const float *srow = splane + ((size_t)(i + a->off_t) * a->Wd + a->off_l) * a->bs + c0;
        for (int j = 0; j < a->Wg; j += 16) {
          int np = a->Wg - j < 16 ? a->Wg - j : 16;
          kern_transpose16(srow + (size_t)j * a->bs, a->bs, np, d + (size_t)i * a->Ws + j, dplane, nc, np, bias);
        }
      }
      continue;
    }
    /* Upsampling: zero the planes, then scatter the grid points into every sh-th row, sw-th column. */
    for (int c = 0; c < nc; c++) memset(d + (size_t)c * dplane, 0, sizeof(float) * dplane);
    for (int i = 0; i < a->Hg; i++) {
      const float *srow = splane + ((size_t)(i + a->off_t) * a->Wd + a->off_l) * a->bs + c0;
      for (int j = 0; j < a->Wg; j += 16) {
        int np = a->Wg - j < 16 ? a->Wg - j : 16;
        kern_transpose16_step(srow + (size_t)j * a->bs, a->bs, 1, np, d + (size_t)i * a->sh * a->Ws + (size_t)j * a->sw,
                              dplane, a->sw, nc, np, bias);
      }
    }
  }
}

/* One image's blocked planes [lo, hi) of the (g, bi) index space. */
static void pack_image(const pack_args *a, const float *src, float *dst, int64_t lo, int64_t hi) {
  for (int64_t pl = lo; pl < hi; pl++)
    pack_plane(a, src, (int)(pl / a->Bn), (int)(pl % a->Bn), dst + (size_t)pl * blk_plane(a));
}

static void unpack_image(const pack_args *a, const float *src, float *dst, int64_t lo, int64_t hi) {
  for (int64_t pl = lo; pl < hi; pl++)
    unpack_plane(a, src + (size_t)pl * blk_plane(a), (int)(pl / a->Bn), (int)(pl % a->Bn), dst);
}

/* dY rows for the weight gradient: NCHW -> [G][Kb][P][kb][Q] (rows of Q kept contiguous). */
KERN_CLONES static void pack_rows_image(const pack_args *a, const float *restrict src, float *restrict dst) {
  size_t Q = (size_t)a->Ws;
  for (int g = 0; g < a->G; g++)
    for (int bi = 0; bi < a->Bn; bi++)
      for (int h = 0; h < a->Hs; h++)
        for (int c = 0; c < a->bs; c++) {
          int ch = bi * a->bs + c;
          float *restrict d = dst + ((((size_t)g * a->Bn + bi) * a->Hs + h) * a->bs + c) * Q;
          if (ch >= a->Cper) {
            for (size_t q = 0; q < Q; q++) d[q] = 0.0f;
            continue;
          }
          const float *restrict s = src + (((size_t)g * a->Cper + ch) * a->Hs + h) * Q;
          for (size_t q = 0; q < Q; q++) d[q] = s[q]; /* rows are short: no memcpy call per row */
        }
}

/* Batch-wide transforms split over (image, plane) for the few-images schedule. */
typedef struct batch_args {
  const pack_args *a;
  const float *src;
  float *dst;
  int N, rows; /* rows: pack_rows_image instead of pack_image */
} batch_args;

static void pack_batch_worker(void *ctx, int t, int T) {
  const batch_args *b = ctx;
  const pack_args *a = b->a;
  int64_t per = (int64_t)a->G * a->Bn, lo, hi;
  if (b->rows) { /* whole images */
    kern_split(b->N, t, T, &lo, &hi);
    for (int64_t n = lo; n < hi; n++)
      pack_rows_image(a, b->src + n * nchw_image(a), b->dst + n * (size_t)a->G * a->Bn * a->Hs * a->bs * a->Ws);
    return;
  }
  kern_split(b->N * per, t, T, &lo, &hi);
  for (int64_t u = lo; u < hi; u++) {
    int64_t n = u / per;
    pack_image(a, b->src + n * nchw_image(a), b->dst + n * blk_image(a), u % per, u % per + 1);
  }
}

static void unpack_batch_worker(void *ctx, int t, int T) {
  const batch_args *b = ctx;
  const pack_args *a = b->a;
  int64_t per = (int64_t)a->G * a->Bn, lo, hi;
  kern_split(b->N * per, t, T, &lo, &hi);
  for (int64_t u = lo; u < hi; u++) {
    int64_t n = u / per;
    unpack_image(a, b->src + n * blk_image(a), b->dst + n * nchw_image(a), u % per, u % per + 1);
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
  kern_steal *blocks; /* taken by work stealing (a late worker's share goes to the other) */
} wpack_args;

static void wpack_worker(void *ctx, int t, int T) {
  wpack_args *a = ctx;
  const conv_plan *p = a->p;
  int R = p->d.R, S = p->d.S, cb = p->cb, kb = p->kb, Cb = p->Cb, Kb = p->Kb;
  for (int64_t bl; (bl = kern_steal_next(a->blocks, t, T)) >= 0;) {
    int g = (int)(bl / ((int64_t)Kb * Cb)), ki = (int)(bl / Cb % Kb), ci = (int)(bl % Cb);
    for (int r = 0; r < R; r++)
      for (int s = 0; s < S; s++)
        for (int c = 0; c < cb; c++)
          for (int k = 0; k < kb; k++) {
            int kk = ki * kb + k, cc = ci * cb + c;
            float v = 0.0f;
            if (kk < p->Kg && cc < p->Cg) v = a->w[(((size_t)(g * p->Kg + kk) * p->Cg + cc) * R + r) * S + s];
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
  kern_steal q;
  wpack_args a = {.p = p, .kind = kind, .w = w, .dst = dst, .blocks = &q};
  kern_steal_init(&q, (int64_t)p->G * p->Kb * p->Cb, p->nthreads);
  kern_parallel(p->nthreads, wpack_worker, &a);
}

static size_t wfloats(const conv_plan *p) {
  return (size_t)p->G * p->Kb * p->Cb * p->d.R * p->d.S * p->cb * p->kb;
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
        g->b_offs[i] = (((unsigned long long)ci * g->Hp + (unsigned long long)r * dh) * g->Wp +
                        (unsigned long long)s * dw) * ib * sizeof(float);
      }
  return SW_OK;
}

static void geo_free(conv_geo *g) {
  free(g->a_offs);
  free(g->b_offs);
  g->a_offs = g->b_offs = NULL;
}

static size_t geo_in_image(const conv_geo *g) { return (size_t)g->G * g->Ib * g->Hp * g->Wp * g->ib; }
static size_t geo_w_floats(const conv_geo *g) { return (size_t)g->G * g->Ob * g->Ib * g->R * g->S * g->ib * g->ob; }
static size_t geo_out_image(const conv_geo *g) { return (size_t)g->G * g->Ob * g->P * g->Wv * g->ob; }
static int64_t geo_units(const conv_geo *g) { return (int64_t)g->G * g->Ob * kern_cdiv(g->P, g->rb); }

/* Work units [lo, hi) of (image, group, output block, row block); images relative to in/out. */
static void geo_run_range(const conv_geo *g, const float *in, const float *wt, float *out, int64_t lo, int64_t hi) {
  int nblk = kern_cdiv(g->P, g->rb);
  unsigned long long count = (unsigned long long)g->Ib * g->R * g->S;
  size_t wblock = (size_t)g->Ib * g->R * g->S * g->ib * g->ob;
  libxsmm_smmfunction_reducebatch_offs full = (libxsmm_smmfunction_reducebatch_offs)g->kern_full;
  libxsmm_smmfunction_reducebatch_offs tail = (libxsmm_smmfunction_reducebatch_offs)g->kern_tail;
  for (int64_t u = lo; u < hi; u++) {
    int blk = (int)(u % nblk);
    int o = (int)(u / nblk % g->Ob);
    int64_t ng = u / nblk / g->Ob; /* image*G + group */
    int gg = (int)(ng % g->G);
    int p0 = blk * g->rb;
    const float *A = wt + ((size_t)gg * g->Ob + o) * wblock;
    const float *B = in + (((size_t)ng * g->Ib * g->Hp + (size_t)p0 * g->sh) * g->Wp) * g->ib;
    float *C = out + (((size_t)ng * g->Ob + o) * g->P + p0) * g->Wv * g->ob;
    if (p0 + g->rb <= g->P)
      full(A, B, C, &count, g->a_offs, g->b_offs);
    else
      tail(A, B, C, &count, g->a_offs, g->b_offs);
  }
}

/* ---------------------------------------------------------------------------------------------
 * Plan. */

/* The input grid the kernels see: the subsampled P x Q grid for strided 1x1 convs. */
static pack_args x_pack_args(const conv_plan *p, const conv_geo *g) {
  const conv_desc *d = &p->d;
  pack_args a = {p->G, p->Cg, d->H, d->W, p->sx_h, p->sx_w, p->Hx, p->Wx, p->Cb, p->cb, g->Hp, g->Wp,
                 g->off_t, g->off_l, NULL};
  return a;
}

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
  p->per_image = T == 1 || N >= 4 * T;
  /* A strided 1x1 conv without padding only reads the input on its P x Q output grid. */
  p->sub = d->R == 1 && d->S == 1 && !d->pad_t && !d->pad_l && !d->pad_b && !d->pad_r &&
           (d->stride_h > 1 || d->stride_w > 1);
  p->Hx = p->sub ? d->P : d->H;
  p->Wx = p->sub ? d->Q : d->W;
  p->sx_h = p->sub ? d->stride_h : 1;
  p->sx_w = p->sub ? d->stride_w : 1;
  p->sh = p->sub ? 1 : d->stride_h;
  p->sw = p->sub ? 1 : d->stride_w;
  size_t S_in = p->per_image ? (size_t)T : (size_t)N; /* image buffers: one per thread, or the batch */

  /* Forward. */
  int pt = p->sub ? 0 : d->pad_t, pl = p->sub ? 0 : d->pad_l, pb = p->sub ? 0 : d->pad_b, pr = p->sub ? 0 : d->pad_r;
  if (geo_init(&p->fwd, p->G, p->Cg, p->cb, p->Kg, p->kb, p->Hx, p->Wx, pt, pl, pb, pr, d->R, d->S, p->sh, p->sw,
               d->dil_h, d->dil_w, d->P, d->Q, e))
    return e ? e->code : SW_EINPUT;
  const conv_geo *f = &p->fwd;
  p->scratch[CONV_FWD] = fbytes(geo_w_floats(f)) + S_in * (fbytes(geo_in_image(f)) + fbytes(geo_out_image(f)));

  /* Few input channels: the backward passes use im2col GEMMs with the pixels or K as vector dim. */
  if (p->Cg < 16) {
    p->col_bwd = 1;
    return conv_col_init(p, e);
  }

  /* Backward-data. */
  p->bwd_gather = p->sh == 1 && p->sw == 1;
  if (p->bwd_gather) {
    int gt = (d->R - 1) * d->dil_h - pt, gb = (d->R - 1) * d->dil_h - pb;
    int gl = (d->S - 1) * d->dil_w - pl, gr = (d->S - 1) * d->dil_w - pr;
    if (geo_init(&p->bwdd, p->G, p->Kg, p->kb, p->Cg, p->cb, d->P, d->Q, gt, gl, gb, gr, d->R, d->S, 1, 1, d->dil_h,
                 d->dil_w, p->Hx, p->Wx, e))
      return e ? e->code : SW_EINPUT;
    p->scratch[CONV_BWD_DATA] =
        fbytes(geo_w_floats(&p->bwdd)) + S_in * (fbytes(geo_in_image(&p->bwdd)) + fbytes(geo_out_image(&p->bwdd)));
  } else {
    p->bwdd_Hp = d->H + d->pad_t + d->pad_b;
    p->bwdd_Wp = d->W + d->pad_l + d->pad_r;
    p->kern_scatter = dispatch_strd(p->cb, d->Q, p->kb, (long)p->kb * p->cb * sizeof(float),
                                    (long)d->P * d->Q * p->kb * sizeof(float), p->cb, p->kb, d->stride_w * p->cb, 1.0f);
    if (!p->kern_scatter) return sw_fail(e, SW_EINPUT, "Conv: libxsmm could not generate the backward-data kernel");
    p->scratch[CONV_BWD_DATA] =
        fbytes(wfloats(p)) + S_in * (fbytes((size_t)p->G * p->Kb * d->P * d->Q * p->kb) +
                                     fbytes((size_t)p->G * p->Cb * p->bwdd_Hp * p->bwdd_Wp * p->cb));
  }

  /* Backward-weight: offsets of the (image, output row) entries of one reduction chunk. */
  size_t xim = geo_in_image(f), yim = (size_t)p->G * p->Kb * d->P * p->kb * d->Q;
  size_t per_image = sizeof(float) * ((size_t)f->Hp * f->Wp * p->cb + (size_t)d->P * d->Q * p->kb);
  int chunk = p->per_image ? 1 : (int)(CONV_WU_CHUNK_BYTES / per_image);
  if (chunk < 1) chunk = 1;
  if (chunk > N) chunk = N;
  p->wu_chunk = chunk;
  p->kern_wu = dispatch_offs(p->cb, p->kb, d->Q, p->sw * p->cb, d->Q, p->cb, 1.0f);
  if (!p->kern_wu) return sw_fail(e, SW_EINPUT, "Conv: libxsmm could not generate the weight-gradient kernel");
  size_t nent = (size_t)chunk * d->P;
  p->wu_a_offs = sw_xmalloc(sizeof(unsigned long long) * nent);
  p->wu_b_offs = sw_xmalloc(sizeof(unsigned long long) * nent);
  for (int j = 0; j < chunk; j++)
    for (int oh = 0; oh < d->P; oh++) {
      size_t i = (size_t)j * d->P + oh;
      p->wu_a_offs[i] = ((unsigned long long)j * xim + (unsigned long long)oh * p->sh * f->Wp * p->cb) * sizeof(float);
      p->wu_b_offs[i] = ((unsigned long long)j * yim + (unsigned long long)oh * p->kb * d->Q) * sizeof(float);
    }
  p->scratch[CONV_BWD_WEIGHT] = S_in * (fbytes(xim) + fbytes(yim)) + (size_t)T * fbytes(wfloats(p));
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
 * Forward-engine passes (forward, and stride-1 backward-data). */

typedef struct engine_args {
  const conv_plan *p;
  const conv_geo *g;
  const pack_args *in_pa, *out_pa; /* NCHW in -> blocked; blocked out -> NCHW */
  const float *src, *wt;
  float *dst, *inb, *outb;         /* per-thread slots (per image) or batch buffers */
  size_t in_slot, out_slot;        /* floats per slot */
  kern_steal *images;              /* per image: taken by work stealing */
} engine_args;

/* Whole images per thread (its own range first, then by work stealing; an image's result does not
 * depend on the thread): pack, multiply, unpack in private buffers. */
static void engine_image_worker(void *ctx, int t, int T) {
  engine_args *a = ctx;
  float *inb = a->inb + (size_t)t * a->in_slot, *outb = a->outb + (size_t)t * a->out_slot;
  int64_t planes_in = (int64_t)a->in_pa->G * a->in_pa->Bn, planes_out = (int64_t)a->out_pa->G * a->out_pa->Bn;
  conv_prof *pr = &conv_brgemm_prof;
  double t0 = prof_now();
  for (int64_t n; (n = kern_steal_next(a->images, t, T)) >= 0;) {
    pack_image(a->in_pa, a->src + n * nchw_image(a->in_pa), inb, 0, planes_in);
    prof_lap_t0(t, &pr->pack, &t0);
    geo_run_range(a->g, inb, a->wt, outb, 0, geo_units(a->g));
    prof_lap_t0(t, &pr->gemm, &t0);
    unpack_image(a->out_pa, outb, a->dst + n * nchw_image(a->out_pa), 0, planes_out);
    prof_lap_t0(t, &pr->unpack, &t0);
  }
}

static void engine_units_worker(void *ctx, int t, int T) {
  const engine_args *a = ctx;
  int64_t lo, hi;
  kern_split(a->p->d.N * geo_units(a->g), t, T, &lo, &hi);
  geo_run_range(a->g, a->inb, a->wt, a->outb, lo, hi);
}

static void engine_run(engine_args *a, char *sp) {
  const conv_plan *p = a->p;
  conv_prof *pr = &conv_brgemm_prof;
  double t0 = prof_now();
  a->inb = (float *)sp;
  a->in_slot = slot_floats(p->per_image, geo_in_image(a->g));
  a->out_slot = slot_floats(p->per_image, geo_out_image(a->g));
  size_t slots = p->per_image ? (size_t)p->nthreads : (size_t)p->d.N;
  a->outb = a->inb + slots * a->in_slot;
  if (p->per_image) {
    kern_steal q;
    kern_steal_init(&q, p->d.N, p->nthreads);
    a->images = &q;
    kern_parallel(p->nthreads, engine_image_worker, a); /* times its stages itself */
    return;
  }
  /* Few images: every stage split across the threads over the whole batch. */
  batch_args pb = {a->in_pa, a->src, a->inb, p->d.N, 0};
  kern_parallel(p->nthreads, pack_batch_worker, &pb);
  prof_lap(&pr->pack, &t0);
  kern_parallel(p->nthreads, engine_units_worker, a);
  prof_lap(&pr->gemm, &t0);
  batch_args ub = {a->out_pa, a->outb, a->dst, p->d.N, 0};
  kern_parallel(p->nthreads, unpack_batch_worker, &ub);
  prof_lap(&pr->unpack, &t0);
}

void conv_brgemm_fwd(const conv_plan *p, const float *x, const float *w, const float *b, float *y, void *scratch) {
  const conv_desc *d = &p->d;
  const conv_geo *g = &p->fwd;
  char *sp = scratch;
  float *wb = (float *)sp;
  double t0 = prof_now();
  wpack(p, WPACK_FWD, w, wb);
  prof_lap(&conv_brgemm_prof.pack, &t0);
  pack_args in = x_pack_args(p, g);
  pack_args out = {p->G, p->Kg, d->P, d->Q, 1, 1, d->P, d->Q, p->Kb, p->kb, g->P, g->Wv, 0, 0, b};
  engine_args a = {.p = p, .g = g, .in_pa = &in, .out_pa = &out, .src = x, .wt = wb, .dst = y};
  engine_run(&a, sp + fbytes(geo_w_floats(g)));
}

/* ---------------------------------------------------------------------------------------------
 * Scatter backward-data (strides > 1). */

typedef struct scatter_args {
  const conv_plan *p;
  const pack_args *in_pa, *out_pa;
  const float *dy, *wb;
  float *dx, *dyb, *dxb;
  size_t dy_slot, dx_slot;
  kern_steal *images; /* per image: taken by work stealing */
} scatter_args;

/* Units [lo, hi) of (image, group, C block): zero the padded dX plane, then add W^T dY for every
 * (dY row, r, s). Images relative to dyb/dxb. */
static void scatter_range(const conv_plan *p, const float *dyb, const float *wb, float *dxb, int64_t lo, int64_t hi) {
  const conv_desc *d = &p->d;
  int Hp = p->bwdd_Hp, Wp = p->bwdd_Wp;
  unsigned long long count = (unsigned long long)p->Kb;
  libxsmm_smmfunction_reducebatch_strd kern = (libxsmm_smmfunction_reducebatch_strd)p->kern_scatter;
  size_t plane = (size_t)Hp * Wp * p->cb;
  size_t wrs = (size_t)p->Kb * p->kb * p->cb; /* one (r, s) slice of the packed weights */
  for (int64_t u = lo; u < hi; u++) {
    int ci = (int)(u % p->Cb);
    int64_t ng = u / p->Cb;
    int gg = (int)(ng % p->G);
    float *C0 = dxb + (size_t)u * plane;
    memset(C0, 0, sizeof(float) * plane);
    const float *A0 = wb + ((size_t)gg * p->Cb + ci) * d->R * d->S * wrs;
    const float *B0 = dyb + (size_t)ng * p->Kb * d->P * d->Q * p->kb;
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

static void scatter_image_worker(void *ctx, int t, int T) {
  scatter_args *a = ctx;
  const conv_plan *p = a->p;
  float *dyb = a->dyb + (size_t)t * a->dy_slot, *dxb = a->dxb + (size_t)t * a->dx_slot;
  int64_t per = (int64_t)p->G * p->Cb;
  conv_prof *pr = &conv_brgemm_prof;
  double t0 = prof_now();
  for (int64_t n; (n = kern_steal_next(a->images, t, T)) >= 0;) {
    pack_image(a->in_pa, a->dy + n * nchw_image(a->in_pa), dyb, 0, (int64_t)p->G * p->Kb);
    prof_lap_t0(t, &pr->pack, &t0);
    scatter_range(p, dyb, a->wb, dxb, 0, per);
    prof_lap_t0(t, &pr->gemm, &t0);
    unpack_image(a->out_pa, dxb, a->dx + n * nchw_image(a->out_pa), 0, per);
    prof_lap_t0(t, &pr->unpack, &t0);
  }
}

static void scatter_units_worker(void *ctx, int t, int T) {
  const scatter_args *a = ctx;
  int64_t lo, hi;
  kern_split((int64_t)a->p->d.N * a->p->G * a->p->Cb, t, T, &lo, &hi);
  scatter_range(a->p, a->dyb, a->wb, a->dxb, lo, hi);
}

void conv_brgemm_bwd_data(const conv_plan *p, const float *dy, const float *w, float *dx, void *scratch) {
  if (p->col_bwd) {
    conv_col_bwd_data(p, dy, w, dx, scratch);
    return;
  }
  const conv_desc *d = &p->d;
  char *sp = scratch;
  conv_prof *pr = &conv_brgemm_prof;
  double t0 = prof_now();
  float *wb = (float *)sp;
  if (p->bwd_gather) {
    const conv_geo *g = &p->bwdd;
    wpack(p, WPACK_FLIP, w, wb);
    prof_lap(&pr->pack, &t0);
    pack_args in = {p->G, p->Kg, d->P, d->Q, 1, 1, d->P, d->Q, p->Kb, p->kb, g->Hp, g->Wp, g->off_t, g->off_l, NULL};
    pack_args out = {p->G, p->Cg, d->H, d->W, p->sx_h, p->sx_w, p->Hx, p->Wx, p->Cb, p->cb, g->P, g->Wv, 0, 0, NULL};
    engine_args a = {.p = p, .g = g, .in_pa = &in, .out_pa = &out, .src = dy, .wt = wb, .dst = dx};
    engine_run(&a, sp + fbytes(geo_w_floats(g)));
    return;
  }
  wpack(p, WPACK_SCATTER, w, wb);
  prof_lap(&pr->pack, &t0);
  pack_args in = {p->G, p->Kg, d->P, d->Q, 1, 1, d->P, d->Q, p->Kb, p->kb, d->P, d->Q, 0, 0, NULL};
  pack_args out = {p->G, p->Cg, d->H, d->W, 1, 1, d->H, d->W, p->Cb, p->cb, p->bwdd_Hp, p->bwdd_Wp,
                   d->pad_t, d->pad_l, NULL};
  scatter_args a = {.p = p, .in_pa = &in, .out_pa = &out, .dy = dy, .wb = wb, .dx = dx};
  a.dy_slot = slot_floats(p->per_image, blk_image(&in));
  a.dx_slot = slot_floats(p->per_image, blk_image(&out));
  a.dyb = (float *)(sp + fbytes(wfloats(p)));
  a.dxb = a.dyb + (p->per_image ? (size_t)p->nthreads : (size_t)d->N) * a.dy_slot;
  if (p->per_image) {
    kern_steal q;
    kern_steal_init(&q, d->N, p->nthreads);
    a.images = &q;
    kern_parallel(p->nthreads, scatter_image_worker, &a); /* times its stages itself */
    return;
  }
  batch_args pb = {&in, dy, a.dyb, d->N, 0};
  kern_parallel(p->nthreads, pack_batch_worker, &pb);
  prof_lap(&pr->pack, &t0);
  kern_parallel(p->nthreads, scatter_units_worker, &a);
  prof_lap(&pr->gemm, &t0);
  batch_args ub = {&out, a.dxb, dx, d->N, 0};
  kern_parallel(p->nthreads, unpack_batch_worker, &ub);
  prof_lap(&pr->unpack, &t0);
}

/* ---------------------------------------------------------------------------------------------
 * Backward-weight. */

typedef struct wu_args {
  const conv_plan *p;
  const pack_args *x_pa, *dy_pa;
  const float *x, *dy;
  float *xb, *dyt;       /* per-thread slots (per image) or batch buffers */
  size_t x_slot, y_slot; /* floats per slot */
  float *part;           /* nthreads partial dW_blk, wstride floats apart */
  size_t wstride;
  float *dw;
} wu_args;

/* Accumulates images [lo, hi) (relative to xb/dyt) into part, in chunks of wu_chunk images. */
static void wu_range(const conv_plan *p, const float *xb, const float *dyt, float *part, int64_t lo, int64_t hi) {
  const conv_desc *d = &p->d;
  const conv_geo *f = &p->fwd;
  int R = d->R, S = d->S, cb = p->cb, kb = p->kb;
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
              const float *A = xb + (((size_t)n0 * p->G + g) * p->Cb + ci) * xplane +
                               ((size_t)r * d->dil_h * f->Wp + (size_t)s * d->dil_w) * cb;
              const float *B = dyt + (((size_t)n0 * p->G + g) * p->Kb + ki) * yplane;
              float *C = part + (((((size_t)g * p->Kb + ki) * p->Cb + ci) * R + r) * S + s) * kb * cb;
              kern(A, B, C, &count, p->wu_a_offs, p->wu_b_offs);
            }
  }
}

static void wu_worker(void *ctx, int t, int T) {
  const wu_args *a = ctx;
  const conv_plan *p = a->p;
  float *part = a->part + (size_t)t * a->wstride;
  memset(part, 0, sizeof(float) * wfloats(p));
  int64_t lo, hi;
  kern_split(p->d.N, t, T, &lo, &hi);
  if (!p->per_image) {
    wu_range(p, a->xb, a->dyt, part, lo, hi);
    return;
  }
  float *xb = a->xb + (size_t)t * a->x_slot, *dyt = a->dyt + (size_t)t * a->y_slot;
  conv_prof *pr = &conv_brgemm_prof;
  double t0 = prof_now();
  for (int64_t n = lo; n < hi; n++) {
    pack_image(a->x_pa, a->x + n * nchw_image(a->x_pa), xb, 0, (int64_t)p->G * p->Cb);
    pack_rows_image(a->dy_pa, a->dy + n * nchw_image(a->dy_pa), dyt);
    prof_lap_t0(t, &pr->pack, &t0);
    wu_range(p, xb, dyt, part, 0, 1);
    prof_lap_t0(t, &pr->gemm, &t0);
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
  if (p->col_bwd) {
    conv_col_bwd_weight(p, x, dy, dw, db, scratch);
    return;
  }
  const conv_desc *d = &p->d;
  const conv_geo *f = &p->fwd;
  char *sp = scratch;
  conv_prof *pr = &conv_brgemm_prof;
  double t0 = prof_now();
  pack_args xa = x_pack_args(p, f);
  pack_args ya = {p->G, p->Kg, d->P, d->Q, 1, 1, d->P, d->Q, p->Kb, p->kb, d->P, d->Q, 0, 0, NULL};
  wu_args a = {p, &xa, &ya, x, dy, NULL, NULL, 0, 0, NULL, fbytes(wfloats(p)) / sizeof(float), dw};
  size_t slots = p->per_image ? (size_t)p->nthreads : (size_t)d->N;
  a.x_slot = slot_floats(p->per_image, geo_in_image(f));
  a.y_slot = slot_floats(p->per_image, (size_t)p->G * p->Kb * d->P * p->kb * d->Q);
  a.xb = (float *)sp;
  a.dyt = a.xb + slots * a.x_slot;
  a.part = (float *)(sp + slots * (fbytes(geo_in_image(f)) + fbytes((size_t)p->G * p->Kb * d->P * p->kb * d->Q)));
  if (!p->per_image) {
    batch_args px = {&xa, x, a.xb, d->N, 0};
    kern_parallel(p->nthreads, pack_batch_worker, &px);
    batch_args py = {&ya, dy, a.dyt, d->N, 1};
    kern_parallel(p->nthreads, pack_batch_worker, &py);
    prof_lap(&pr->pack, &t0);
  }
  kern_parallel(p->nthreads, wu_worker, &a);
  if (p->per_image)
    t0 = prof_now(); /* the workers timed their stages */
  else
    prof_lap(&pr->gemm, &t0);
  kern_parallel(p->nthreads, wu_reduce_worker, &a);
  if (db) conv_bias_grad(d, dy, db, p->nthreads);
  prof_lap(&pr->unpack, &t0);
}
