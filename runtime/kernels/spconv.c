/* Sparse-weight Conv and Gemm, forward and backward-data (see spconv.h for the contract).
 *
 * Engine. Activations live in scratch as batch-innermost blocks of 16 images (or Gemm rows):
 *   conv fwd:  Xs [nb][C][Hp][Wp][16]   input, zero-padded by (pad_t, pad_l, pad_b, pad_r)
 *   conv bwd:  Ds [nb][K][Pp][Qp][16]   dY, zero-padded so every tap of every dX position lands inside
 *   gemm:      XT [in][Mp]               X (or dY) transposed, batch rows padded to Mp = 16*nb
 * One output row o (conv: output channel k, or input channel c and stride phase for bwd-data; gemm:
 * output feature) has a list of its nonzero weights as (element offset into the block, value),
 * rebuilt from w on every call (a branch-free scan, split over the threads). An output "plane" of
 * 16 images is computed in register tiles of TR x TC positions: for each list entry, broadcast the
 * weight and do one aligned 16-wide load + FMA per tile position. Each row group of tiles goes to a
 * small per-thread buffer that is transposed back into NCHW / row-major with kern_transpose16 while
 * it is in L1 (bias is the accumulators' initial value).
 *
 * Backward-data is a gather form for any stride: dX row h has phase ph = (h + pad_t) % sh and only
 * the taps r = ph (mod sh) reach it, from dY row a - (r - ph)/sh where a = (h + pad_t)/sh; columns
 * likewise. So each (input channel c, phase (ph, pw)) has its own list over (k, r, s), and the dX
 * positions of one phase read consecutive dY positions, i.e. the same tiles as the forward.
 *
 * Threads. With enough 16-image blocks (nb % T == 0 or nb >= 4T) each thread owns whole blocks:
 * it packs one block into its private slot and computes all its planes while the block is in its
 * L2 ("blocked" schedule). Otherwise packing is split over (block, channel) and planes over
 * (block, output row) across all threads, with a barrier in between ("split" schedule). The lists
 * are always built first, split over output rows, before a barrier. Each output element is summed by
 * one thread in list order, so results do not depend on the thread count.
 *
 * Every conv also has an NCHW-direct (polyphase) path without these layout transforms (section
 * "NCHW-direct path" below), which an execute takes when the weight density is below the plan's
 * nchw_below. */
#include "runtime/kernels/spconv.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/kernels/kern_internal.h"

/* Images (batch rows) per vector. */
#define SPC_V 16
/* Most accumulators a register tile uses. */
#define SPC_ACC 14

/* One nonzero weight: element offset of its input vector relative to the tile base, and value. */
typedef struct spc_ent {
  int32_t off;
  float w;
} spc_ent;

typedef float spc_v16 __attribute__((vector_size(64), aligned(64)));

/* The hot functions: AVX-512 and baseline clones picked at load time (not under ASan, whose
 * instrumentation does not mix with ifunc resolvers), FMA contraction allowed in them. */
#if defined(__GNUC__) && !defined(__clang__)
#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define SPC_HOT __attribute__((target_clones("avx512f", "default"), optimize("fp-contract=fast")))
#else
#define SPC_HOT __attribute__((optimize("fp-contract=fast")))
#endif
#define SPC_INLINE static inline __attribute__((always_inline))
#else
#define SPC_HOT
#define SPC_INLINE static inline
#endif

static size_t fbytes(size_t nfloats) { return kern_align_up(nfloats * sizeof(float)); }
static size_t ebytes(size_t nent) { return kern_align_up(nent * sizeof(spc_ent)); }
static size_t ibytes(size_t nint) { return kern_align_up(nint * sizeof(int)); }
static int imin(int a, int b) { return a < b ? a : b; }
static int imax(int a, int b) { return a > b ? a : b; }

/* ---------------------------------------------------------------------------------------------
 * The register tile: out[r*ors + c*ocs .. +16) = init + sum over the list of w * base[off + r*rs + c*cs]. */

#define SPC_BCAST(x) ((x) * (spc_v16){1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1})

SPC_INLINE void spc_tile(const int TR, const int TC, const int CS, const float *restrict base, ptrdiff_t rs,
                         ptrdiff_t cs, const spc_ent *restrict L, int n, float init, float *restrict out,
                         ptrdiff_t ors, ptrdiff_t ocs) {
  spc_v16 acc[SPC_ACC] = {{0}}; /* (GCC 12 warns "maybe uninitialized" otherwise; the stores are dead) */
  for (int j = 0; j < TR * TC; j++) acc[j] = SPC_BCAST(init);
  if (CS) cs = CS; /* a compile-time column stride turns the loads into base + displacement */
  for (int i = 0; i < n; i++) {
    const float *b = base + L[i].off;
    float wi = L[i].w;
    spc_v16 w = SPC_BCAST(wi);
    for (int r = 0; r < TR; r++)
      for (int c = 0; c < TC; c++) acc[r * TC + c] += w * *(const spc_v16 *)(b + r * rs + c * cs);
  }
  for (int r = 0; r < TR; r++)
    for (int c = 0; c < TC; c++) *(spc_v16 *)(out + r * ors + c * ocs) = acc[r * TC + c];
}

/* spc_tile for run-time tr x tc: tr 1 (tc <= 14), 2 (tc <= 7) or 4 (tc <= 3) when the column stride
 * cs is 16 or 32 floats (stride 1 or 2); tr 1 only for other strides. */
SPC_INLINE void spc_tile_any(int tr, int tc, const float *restrict base, ptrdiff_t rs, ptrdiff_t cs,
                             const spc_ent *restrict L, int n, float init, float *restrict out, ptrdiff_t ors,
                             ptrdiff_t ocs) {
#define SPC_CASE(R, C, S)                                                                                          \
  case (R) * 16 + (C): spc_tile(R, C, S, base, rs, cs, L, n, init, out, ors, ocs); return;
#define SPC_ROW1(S)                                                                                                \
  SPC_CASE(1, 1, S) SPC_CASE(1, 2, S) SPC_CASE(1, 3, S) SPC_CASE(1, 4, S) SPC_CASE(1, 5, S) SPC_CASE(1, 6, S)      \
  SPC_CASE(1, 7, S) SPC_CASE(1, 8, S) SPC_CASE(1, 9, S) SPC_CASE(1, 10, S) SPC_CASE(1, 11, S) SPC_CASE(1, 12, S)   \
  SPC_CASE(1, 13, S) SPC_CASE(1, 14, S)
#define SPC_ROWS(S)                                                                                                \
  SPC_ROW1(S)                                                                                                      \
  SPC_CASE(2, 1, S) SPC_CASE(2, 2, S) SPC_CASE(2, 3, S) SPC_CASE(2, 4, S) SPC_CASE(2, 5, S) SPC_CASE(2, 6, S)      \
  SPC_CASE(2, 7, S) SPC_CASE(4, 1, S) SPC_CASE(4, 2, S) SPC_CASE(4, 3, S)
  if (cs == SPC_V) {
    switch (tr * 16 + tc) {
      SPC_ROWS(SPC_V)
    default: break;
    }
  } else if (cs == 2 * SPC_V) {
    switch (tr * 16 + tc) {
      SPC_ROWS(2 * SPC_V)
    default: break;
    }
  } else {
    switch (tr * 16 + tc) {
      SPC_ROW1(0)
    default: break;
    }
  }
#undef SPC_ROWS
#undef SPC_ROW1
#undef SPC_CASE
  SW_ASSERT(!"spconv: register tile out of range");
}

/* Register tile (rows x columns) for planes whose rows have n tile positions. */
static void choose_tile(int n, int *tr, int *tc) {
  if (n >= 8) {
    *tr = 1;
    *tc = kern_cdiv(n, kern_cdiv(n, SPC_ACC));
  } else if (n >= 4) {
    *tr = 2;
    *tc = n;
  } else {
    *tr = 4;
    *tc = imax(n, 1);
  }
}

/* ---------------------------------------------------------------------------------------------
 * Whole-kernel register tile (structured-channel SWAT keeps or drops each 3x3 kernel whole): at
 * stride 1 one list entry is a whole kernel, (input plane offset, its 9 weights), and the tile reads
 * each input vector of its window once per piece of columns (spc_k9_tile), FMA-ing it into every
 * accumulator it reaches, instead of one load per tap and position (a 1x14 tile: 66 loads and 9
 * broadcasts per 126 FMAs, a 2x7 tile 44 and 9, against 126 and 9). Every accumulator still receives
 * its taps in (r, s) order within a kernel and the kernels in list order, as the per-tap list does, so
 * the sums are the same bits (a kernel's zero taps add w*0).
 * REV (backward-data): the kernel is applied flipped, the taps (r, s) of accumulator (i, j) reading
 * the input at (i + 2 - r, j + 2 - s) of the window; the window is then walked from its end so that
 * r and s still ascend. */

typedef struct spc_k9 {
  int32_t off; /* the plane's window origin (the tile's top-left input) relative to the tile base */
  float w[9];  /* w[r*3 + s] */
} spc_k9;

#if defined(__x86_64__) && defined(__GNUC__)
/* The AVX-512 whole-kernel tiles (spc_k9_tile below); a plane takes them only where AVX-512 runs. */
static void spc_k9_any(int tr, int tc, int rev, const float *restrict base, ptrdiff_t rs, const spc_k9 *restrict L,
                       int n, float init, float *restrict out, ptrdiff_t ors, ptrdiff_t ocs);
#endif

/* ---------------------------------------------------------------------------------------------
 * List building: the nonzeros of a weight row (or of 16 weight columns) as (offset, value) entries.
 * AVX-512 compares 16 weights at a time and visits only the set bits, so the scan costs about one
 * compare per 16 weights plus one store per nonzero; the plain version is a branch-free loop.
 * NaN weights count as nonzero (they propagate as in the dense kernels). */

/* Entries of w[0..n) != 0: offset tab[i] (or i * mult when tab is NULL); returns the count. */
static int scan_row_c(const float *restrict w, int n, int32_t mult, const int32_t *restrict tab,
                      spc_ent *restrict L) {
  int cnt = 0;
  for (int i = 0; i < n; i++) {
    float v = w[i];
    L[cnt].off = tab ? tab[i] : i * mult;
    L[cnt].w = v;
    cnt += v != 0.0f;
  }
  return cnt;
}

/* Columns k0..k0+nk-1 (nk <= 16) of the row-major W[N][K]: column k's list (at lists + k*cap)
 * gets (n * mult, W[n][k]) for every nonzero, in n order; cnt[k] its length. */
static void scan_cols_c(const float *restrict W, int N, int K, int k0, int nk, int32_t mult, size_t cap,
                        spc_ent *restrict lists, int *restrict cnt) {
  for (int j = 0; j < nk; j++) cnt[k0 + j] = 0;
  for (int n = 0; n < N; n++)
    for (int j = 0; j < nk; j++) {
      float v = W[(size_t)n * K + k0 + j];
      spc_ent *e = lists + (size_t)(k0 + j) * cap + cnt[k0 + j];
      e->off = n * mult;
      e->w = v;
      cnt[k0 + j] += v != 0.0f;
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SPC_X86 1

__attribute__((target("avx512f"))) static int scan_row_avx512(const float *restrict w, int n, int32_t mult,
                                                              const int32_t *restrict tab, spc_ent *restrict L) {
  int cnt = 0, i = 0;
  for (; i < n; i += 16) {
    __mmask16 lm = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1u);
    __m512 v = _mm512_maskz_loadu_ps(lm, w + i);
    unsigned m = _mm512_mask_cmp_ps_mask(lm, v, _mm512_setzero_ps(), _CMP_NEQ_UQ);
    while (m) {
      int j = __builtin_ctz(m);
      m &= m - 1;
      L[cnt].off = tab ? tab[i + j] : (i + j) * mult;
      L[cnt].w = w[i + j];
      cnt++;
    }
  }
  return cnt;
}

__attribute__((target("avx512f"))) static void scan_cols_avx512(const float *restrict W, int N, int K, int k0, int nk,
                                                                int32_t mult, size_t cap, spc_ent *restrict lists,
                                                                int *restrict cnt) {
  int c[16] = {0};
  __mmask16 lm = (__mmask16)((1u << nk) - 1u);
  for (int n = 0; n < N; n++) {
    const float *row = W + (size_t)n * K + k0;
    unsigned m = _mm512_mask_cmp_ps_mask(lm, _mm512_maskz_loadu_ps(lm, row), _mm512_setzero_ps(), _CMP_NEQ_UQ);
    while (m) {
      int j = __builtin_ctz(m);
      m &= m - 1;
      spc_ent *e = lists + (size_t)(k0 + j) * cap + c[j]++;
      e->off = n * mult;
      e->w = row[j];
    }
  }
  for (int j = 0; j < nk; j++) cnt[k0 + j] = c[j];
}
#endif

static int scan_row(const float *w, int n, int32_t mult, const int32_t *tab, spc_ent *L) {
#ifdef SPC_X86
  if (__builtin_cpu_supports("avx512f")) return scan_row_avx512(w, n, mult, tab, L);
#endif
  return scan_row_c(w, n, mult, tab, L);
}

static void scan_cols(const float *W, int N, int K, int k0, int nk, int32_t mult, size_t cap, spc_ent *lists,
                      int *cnt) {
#ifdef SPC_X86
  if (__builtin_cpu_supports("avx512f")) {
    scan_cols_avx512(W, N, K, k0, nk, mult, cap, lists, cnt);
    return;
  }
#endif
  scan_cols_c(W, N, K, k0, nk, mult, cap, lists, cnt);
}

/* ---------------------------------------------------------------------------------------------
 * Layout transforms. */

/* Rows the layout transforms prefetch ahead of the one they transpose (16 images x a row each: one
 * row is ~100-200 cycles of transposing, a DRAM miss ~350). */
#define SPC_PF_ROWS 4

/* Prefetches n floats at src of each of nimg images (image stride istride), for writing if wr. */
static void pf_images(const float *src, size_t istride, int nimg, size_t n, int wr) {
  for (int i = 0; i < nimg; i++) {
    const char *a = (const char *)(src + (size_t)i * istride), *e = (const char *)(src + (size_t)i * istride + n);
    for (a = (const char *)((uintptr_t)a & ~(uintptr_t)63); a < e; a += 64) {
      if (wr)
        __builtin_prefetch(a, 1, 3);
      else
        __builtin_prefetch(a, 0, 3);
    }
  }
}

/* Channel plane of nimg images (image stride istride floats; grid H x W sampled every sh rows and
 * sw columns of a plane with rows of pitch floats) into dst[Hd][Wd][16] with the data at (ot, ol)
 * and zeros elsewhere (images >= nimg included). The source rows SPC_PF_ROWS ahead are prefetched,
 * continuing into the plane at next (the next channel's, same geometry; may be NULL). */
static void pack_plane(const float *src, const float *next, size_t istride, int nimg, int H, int W, int sh, int sw,
                       size_t pitch, float *dst, int Hd, int Wd, int ot, int ol) {
  size_t span = (size_t)(W - 1) * sw + 1;
  for (int h = 0; h < imin(SPC_PF_ROWS, H); h++) pf_images(src + (size_t)h * sh * pitch, istride, nimg, span, 0);
  for (int hd = 0; hd < Hd; hd++) {
    float *row = dst + (size_t)hd * Wd * SPC_V;
    int h = hd - ot;
    if (h < 0 || h >= H) {
      memset(row, 0, sizeof(float) * Wd * SPC_V);
      continue;
    }
    int hp = h + SPC_PF_ROWS;
    if (hp < H)
      pf_images(src + (size_t)hp * sh * pitch, istride, nimg, span, 0);
    else if (next && hp - H < H)
      pf_images(next + (size_t)(hp - H) * sh * pitch, istride, nimg, span, 0);
    memset(row, 0, sizeof(float) * ol * SPC_V);
    memset(row + (size_t)(ol + W) * SPC_V, 0, sizeof(float) * (Wd - ol - W) * SPC_V);
    for (int w0 = 0; w0 < W; w0 += 16)
      kern_transpose16_step(src + (size_t)h * sh * pitch + (size_t)w0 * sw, istride, (size_t)sw, nimg,
                            row + (size_t)(ol + w0) * SPC_V, SPC_V, 1, imin(16, W - w0), SPC_V, NULL);
  }
}

/* Plane [n][16] (positions x images) back to dst[img * istride + pos] for nimg images. */
static void unpack_plane(const float *plane, int n, float *dst, size_t istride, int nimg) {
  for (int i0 = 0; i0 < n; i0 += 16) {
    int nl = imin(16, n - i0);
    kern_transpose16(plane + (size_t)i0 * SPC_V, SPC_V, nl, dst + i0, istride, nimg, nl, NULL);
  }
}

/* ---------------------------------------------------------------------------------------------
 * Convolution plan. */

int spconv_plan_init(spconv_plan *p, const conv_desc *d, int nthreads, sw_err *e) {
  memset(p, 0, sizeof *p);
  conv_desc r = *d;
  int rc = conv_desc_resolve(&r, e);
  if (rc) return rc;
  if (r.groups != 1)
    return sw_fail(e, SW_EINPUT, "sparse Conv: groups=%d is not supported (only groups=1)", r.groups);
  if (r.dil_h != 1 || r.dil_w != 1)
    return sw_fail(e, SW_EINPUT, "sparse Conv: dilations %dx%d are not supported (only 1x1)", r.dil_h, r.dil_w);
  p->d = r;
  p->nthreads = kern_threads_clamp(nthreads);
  p->nb = kern_cdiv(r.N, SPC_V);
  /* A strided 1x1 conv without padding reads only every stride-th pixel: pack just those (a P x Q
   * grid) and run it as a stride-1 conv. */
  p->sub = r.R == 1 && r.S == 1 && (r.stride_h > 1 || r.stride_w > 1) && !r.pad_t && !r.pad_l && !r.pad_b && !r.pad_r;
  p->fsh = p->sub ? 1 : r.stride_h;
  p->fsw = p->sub ? 1 : r.stride_w;
  p->Hp = p->sub ? r.P : r.H + r.pad_t + r.pad_b;
  p->Wp = p->sub ? r.Q : r.W + r.pad_l + r.pad_r;
  choose_tile(r.Q, &p->fwd_tr, &p->fwd_tc);
  int sh = r.stride_h, sw = r.stride_w;
  p->nph = sh * sw;
  p->OT = (r.R - 1) / sh;
  p->OL = (r.S - 1) / sw;
  p->Pp = p->OT + imax(r.P, (r.H - 1 + r.pad_t) / sh + 1);
  p->Qp = p->OL + imax(r.Q, (r.W - 1 + r.pad_l) / sw + 1);
  p->bwd_cap = r.K * kern_cdiv(r.R, sh) * kern_cdiv(r.S, sw);
  choose_tile(kern_cdiv(r.W, sw), &p->bwd_tr, &p->bwd_tc);
  /* List offsets are int32 elements within one 16-image block. */
  double blk_f = (double)r.C * p->Hp * p->Wp * SPC_V, blk_b = (double)r.K * p->Pp * p->Qp * SPC_V;
  if (blk_f >= 2e9 || blk_b >= 2e9)
    return sw_fail(e, SW_EINPUT, "sparse Conv: a 16-image block of %.0f floats is too large (limit 2^31)",
                   blk_f > blk_b ? blk_f : blk_b);
  spconv_plan_set_path(p, -1);
  /* Element offset of each forward tap (c, r, s) in a packed block, in OIHW order. */
  p->fwd_offs = sw_xmalloc(sizeof(int32_t) * r.C * r.R * r.S);
  for (int c = 0, i = 0; c < r.C; c++)
    for (int rr = 0; rr < r.R; rr++)
      for (int ss = 0; ss < r.S; ss++) p->fwd_offs[i++] = (int32_t)(((c * p->Hp + rr) * p->Wp + ss) * SPC_V);
  return SW_OK;
}

static double nchw_below_model(const spconv_plan *p, conv_pass pass);

void spconv_plan_set_path(spconv_plan *p, int nchw) {
  for (int pass = CONV_FWD; pass <= CONV_BWD_DATA; pass++)
    p->nchw_below[pass] = nchw == 0 ? 0.0 : nchw > 0 ? 2.0 : nchw_below_model(p, (conv_pass)pass);
  p->forced = nchw >= 0;
}

int spconv_plan_uses_nchw(const spconv_plan *p, conv_pass pass, double density) {
  return (pass == CONV_FWD || pass == CONV_BWD_DATA) && density < p->nchw_below[pass];
}

void spconv_plan_free(spconv_plan *p) {
  if (!p) return;
  free(p->fwd_offs);
  memset(p, 0, sizeof *p);
}

/* Blocked schedule (each thread owns whole 16-image blocks)? */
static int blocked_schedule(int nb, int T) { return T == 1 || (nb >= T && (nb % T == 0 || nb >= 4 * T)); }

typedef struct spc_layout {
  size_t blk;         /* floats of one 16-image block of the packed input */
  int nslots;         /* packed blocks held (T for blocked, nb for split) */
  size_t plane;       /* floats of one per-thread row buffer (up to 4 output rows) */
  size_t nrows, cap;  /* lists: rows and entries per row */
  size_t off_planes, off_lists, off_counts, total; /* byte offsets in scratch */
} spc_layout;

static spc_layout layout_make(size_t blk, int nb, int T, size_t plane, size_t nrows, size_t cap) {
  spc_layout l;
  l.blk = blk;
  l.nslots = blocked_schedule(nb, T) ? T : nb;
  l.plane = plane;
  l.nrows = nrows;
  l.cap = cap;
  l.off_planes = fbytes(blk * l.nslots);
  l.off_lists = l.off_planes + fbytes(plane) * T;
  l.off_counts = l.off_lists + ebytes(nrows * cap);
  l.total = l.off_counts + ibytes(nrows);
  return l;
}

static spc_layout conv_layout(const spconv_plan *p, conv_pass pass) {
  const conv_desc *d = &p->d;
  if (pass == CONV_FWD)
    return layout_make((size_t)d->C * p->Hp * p->Wp * SPC_V, p->nb, p->nthreads, (size_t)4 * d->Q * SPC_V,
                       (size_t)d->K, (size_t)d->C * d->R * d->S);
  return layout_make((size_t)d->K * p->Pp * p->Qp * SPC_V, p->nb, p->nthreads, (size_t)4 * d->W * SPC_V,
                     (size_t)d->C * p->nph, (size_t)p->bwd_cap);
}

static size_t ps_scratch(const spconv_plan *p, conv_pass pass, size_t *off_counts, size_t *off_threads);

size_t spconv_plan_scratch(const spconv_plan *p, conv_pass pass) {
  if (pass != CONV_FWD && pass != CONV_BWD_DATA) return 0;
  size_t pk = conv_layout(p, pass).total, off_counts, off_threads;
  if (p->nchw_below[pass] > 0) {
    size_t ps = ps_scratch(p, pass, &off_counts, &off_threads);
    return ps > pk ? ps : pk;
  }
  return pk;
}

static int k9_shape(const spconv_plan *p, conv_pass pass);
static const char *k9_describe(const spconv_plan *p, conv_pass pass);

const char *spconv_plan_describe_pass(const spconv_plan *p, conv_pass pass, char *buf, size_t n) {
  const char *sched = blocked_schedule(p->nb, p->nthreads) ? "blocked" : "split";
  const char *kind = p->d.stride_h > 1 || p->d.stride_w > 1 ? "NCHW-direct polyphase" : "NCHW-direct";
  int fwd = pass == CONV_FWD;
  /* "NCHW-direct [below X% density][ unless whole kernels], else " or "" when the path is never taken */
  char nx[128] = "", at[40] = "";
  double below = p->nchw_below[fwd ? CONV_FWD : CONV_BWD_DATA];
  if (below > 0) {
    if (below <= 1) snprintf(at, sizeof at, " below %.0f%% density", 100 * below);
    snprintf(nx, sizeof nx, "%s%s%s, else ", kind, at, p->d.R * p->d.S > 1 ? " unless the nonzeros fill whole kernels" : "");
  }
  if (fwd)
    snprintf(buf, n, "%s16-image-packed %dx%d tiles%s %s%s", nx, p->fsw <= 2 ? p->fwd_tr : 1, p->fwd_tc,
             p->sub ? " (subsampled 1x1)" : "", sched, k9_describe(p, CONV_FWD));
  else
    snprintf(buf, n, "%s16-image-packed %d phase(s) %dx%d tiles %s%s", nx, p->nph, p->bwd_tr, p->bwd_tc, sched,
             k9_describe(p, CONV_BWD_DATA));
  return buf;
}

const char *spconv_plan_describe(const spconv_plan *p, char *buf, size_t n) {
  char f[300], b[300];
  snprintf(buf, n, "sparse direct nb=%d; fwd %s; bwd-data %s", p->nb, spconv_plan_describe_pass(p, CONV_FWD, f, sizeof f),
           spconv_plan_describe_pass(p, CONV_BWD_DATA, b, sizeof b));
  return buf;
}

/* Forward list of output channel k: the nonzero taps (c, r, s) of w[k] as offsets into Xs. */
static int build_fwd_row(const spconv_plan *p, const float *restrict wk, spc_ent *restrict L) {
  const conv_desc *d = &p->d;
  return scan_row(wk, d->C * d->R * d->S, 0, p->fwd_offs, L);
}

/* Backward-data lists of input channel c, one per phase (ph, pw): taps (k, r, s) with r = ph and
 * s = pw (mod stride) as offsets into Ds relative to the dY position (a, b) of the dX position. */
static void build_bwd_rows(const spconv_plan *p, const float *restrict w, int c, spc_ent *restrict L0,
                           int *restrict cnt) {
  const conv_desc *d = &p->d;
  int sh = d->stride_h, sw = d->stride_w;
  size_t kstride = (size_t)d->C * d->R * d->S;
  for (int ph = 0; ph < sh; ph++)
    for (int pw = 0; pw < sw; pw++) {
      spc_ent *L = L0 + (size_t)(ph * sw + pw) * p->bwd_cap;
      int n = 0;
      for (int k = 0; k < d->K; k++) {
        const float *wk = w + k * kstride + (size_t)c * d->R * d->S;
        for (int r = ph; r < d->R; r += sh) {
          int32_t base = (int32_t)((k * p->Pp - (r - ph) / sh) * p->Qp) * SPC_V;
          for (int s = pw; s < d->S; s += sw) {
            float v = wk[r * d->S + s];
            L[n].off = base - (int32_t)((s - pw) / sw) * SPC_V;
            L[n].w = v;
            n += v != 0.0f;
          }
        }
      }
      cnt[ph * sw + pw] = n;
    }
}

/* Whole-kernel list of output row o (stride 1, 3x3; the list fits a row's spc_ent capacity): forward,
 * output channel o's kernels (c ascending) at their input planes; backward-data, input channel o's
 * kernels (k ascending) at their dY planes, the origin moved from the tile base to the window's
 * top-left. A kernel with any nonzero (or NaN) tap is listed. */
static int build_k9_row(const spconv_plan *p, conv_pass pass, const float *restrict w, int o, spc_k9 *restrict L) {
  const conv_desc *d = &p->d;
  int fwd = pass == CONV_FWD, nk = fwd ? d->C : d->K, n = 0;
  for (int i = 0; i < nk; i++) {
    const float *k = w + ((size_t)(fwd ? o : i) * d->C + (size_t)(fwd ? i : o)) * 9;
    int any = 0;
    for (int j = 0; j < 9; j++) any |= k[j] != 0.0f;
    if (!any) continue;
    L[n].off = (int32_t)(fwd ? (int64_t)i * p->Hp * p->Wp * SPC_V
                             : ((int64_t)i * p->Pp * p->Qp - (int64_t)p->OT * p->Qp - p->OL) * SPC_V);
    memcpy(L[n].w, k, sizeof L[n].w);
    n++;
  }
  return n;
}

/* One forward output plane (16 images of output channel k) from the packed block xb, one row
 * group of register tiles at a time through rowbuf[tr*Q][16] (L1-resident), transposed into the
 * NCHW output plane dst (image stride istride) for nimg images. L holds n spc_ent taps, or n spc_k9
 * whole kernels when k9 (stride 1, 3x3). */
SPC_HOT static void fwd_plane(const spconv_plan *p, const float *xb, const void *L, int n, int k9, float init,
                              float *rowbuf, float *dst, size_t istride, int nimg) {
  const conv_desc *d = &p->d;
  ptrdiff_t cs = (ptrdiff_t)p->fsw * SPC_V, rs = (ptrdiff_t)p->fsh * p->Wp * SPC_V;
  ptrdiff_t ors = (ptrdiff_t)d->Q * SPC_V;
  int TR = p->fsw <= 2 ? p->fwd_tr : 1, TC = p->fwd_tc;
  /* the output rows SPC_PF_ROWS ahead of the group computed are prefetched (write-allocate) */
  pf_images(dst, istride, nimg, (size_t)imin(SPC_PF_ROWS, d->P) * d->Q, 1);
  for (int p0 = 0; p0 < d->P;) {
    int tr = d->P - p0 >= TR ? TR : 1;
    if (p0 + SPC_PF_ROWS < d->P)
      pf_images(dst + (size_t)(p0 + SPC_PF_ROWS) * d->Q, istride, nimg,
                (size_t)imin(tr, d->P - p0 - SPC_PF_ROWS) * d->Q, 1);
    for (int q0 = 0; q0 < d->Q; q0 += TC) {
      int tc = imin(TC, d->Q - q0);
      const float *base = xb + ((size_t)p0 * p->fsh * p->Wp + (size_t)q0 * p->fsw) * SPC_V;
#ifdef SPC_X86
      if (k9)
        spc_k9_any(tr, tc, 0, base, rs, L, n, init, rowbuf + (size_t)q0 * SPC_V, ors, SPC_V);
      else
#endif
        spc_tile_any(tr, tc, base, rs, cs, L, n, init, rowbuf + (size_t)q0 * SPC_V, ors, SPC_V);
    }
    unpack_plane(rowbuf, tr * d->Q, dst + (size_t)p0 * d->Q, istride, nimg);
    p0 += tr;
  }
}

/* One backward-data plane (16 images of input channel c) from the packed dY block db; L0/cnt are
 * channel c's per-phase lists (k9: its one list of spc_k9 whole kernels, stride 1). Rows of one phase
 * are done in groups of tr through rowbuf[tr][W][16] (all column phases), each row then transposed
 * into the NCHW plane dst. */
SPC_HOT static void bwd_plane(const spconv_plan *p, const float *db, const spc_ent *L0, const int *cnt, int k9,
                              float *rowbuf, float *dst, size_t istride, int nimg) {
  const conv_desc *d = &p->d;
  int sh = d->stride_h, sw = d->stride_w;
  ptrdiff_t rs = (ptrdiff_t)p->Qp * SPC_V, ors = (ptrdiff_t)d->W * SPC_V, ocs = (ptrdiff_t)sw * SPC_V;
  int TR = p->bwd_tr, TC = p->bwd_tc;
  for (int ph = 0; ph < sh; ph++) {
    int h0 = ((ph - d->pad_t) % sh + sh) % sh; /* first dX row of this phase */
    if (h0 >= d->H) continue;
    int nrow = (d->H - h0 + sh - 1) / sh;
    int a0 = (h0 + d->pad_t) / sh;
    /* the dX rows SPC_PF_ROWS ahead (in this phase) of the group computed are prefetched */
    for (int k = 0; k < imin(SPC_PF_ROWS, nrow); k++)
      pf_images(dst + (size_t)(h0 + k * sh) * d->W, istride, nimg, (size_t)d->W, 1);
    for (int i = 0; i < nrow;) {
      int tr = nrow - i >= TR ? TR : 1;
      for (int k = i + SPC_PF_ROWS; k < imin(nrow, i + SPC_PF_ROWS + tr); k++)
        pf_images(dst + (size_t)(h0 + k * sh) * d->W, istride, nimg, (size_t)d->W, 1);
      for (int pw = 0; pw < sw; pw++) {
        int w0 = ((pw - d->pad_l) % sw + sw) % sw; /* first dX column of this phase */
        if (w0 >= d->W) continue;
        int ncol = (d->W - w0 + sw - 1) / sw;
        int b0 = (w0 + d->pad_l) / sw;
        const spc_ent *L = L0 + (size_t)(ph * sw + pw) * p->bwd_cap;
        int n = cnt[ph * sw + pw];
        for (int j = 0; j < ncol; j += TC) {
          int tc = imin(TC, ncol - j);
          const float *base = db + ((size_t)(a0 + i + p->OT) * p->Qp + (b0 + j + p->OL)) * SPC_V;
#ifdef SPC_X86
          if (k9)
            spc_k9_any(tr, tc, 1, base, rs, (const spc_k9 *)L, n, 0.0f, rowbuf + (w0 + (size_t)j * sw) * SPC_V, ors,
                       ocs);
          else
#endif
            spc_tile_any(tr, tc, base, rs, SPC_V, L, n, 0.0f, rowbuf + (w0 + (size_t)j * sw) * SPC_V, ors, ocs);
        }
      }
      for (int k = 0; k < tr; k++)
        unpack_plane(rowbuf + (size_t)k * d->W * SPC_V, d->W, dst + (size_t)(h0 + (i + k) * sh) * d->W, istride,
                     nimg);
      i += tr;
    }
  }
}

/* Everything one conv execute needs, shared by its workers. */
typedef struct conv_run {
  const spconv_plan *p;
  conv_pass pass;
  spc_layout l;
  const float *in, *w, *b;
  float *out;
  char *scratch;
  int blocked;
  int k9; /* lists of whole 3x3 kernels (spc_k9) instead of taps */
  int upb;          /* stage 2's units of work per block: ranges of its output planes */
  kern_steal units; /* stage 2's units (kern_steal) */
} conv_run;

static float *run_slot(const conv_run *r, int slot) { return (float *)r->scratch + (size_t)slot * r->l.blk; }
static float *run_plane(const conv_run *r, int t) {
  return (float *)(r->scratch + r->l.off_planes + fbytes(r->l.plane) * (size_t)t);
}
static spc_ent *run_lists(const conv_run *r) { return (spc_ent *)(r->scratch + r->l.off_lists); }
static int *run_counts(const conv_run *r) { return (int *)(r->scratch + r->l.off_counts); }

/* Input-side channels of the pass (packed per block) and output-side planes per block. */
static int run_cin(const conv_run *r) { return r->pass == CONV_FWD ? r->p->d.C : r->p->d.K; }
static int run_cout(const conv_run *r) { return r->pass == CONV_FWD ? r->p->d.K : r->p->d.C; }

/* Packs channel ch of 16-image block blk into slot. */
static void conv_pack(const conv_run *r, int blk, int ch, float *slot) {
  const spconv_plan *p = r->p;
  const conv_desc *d = &p->d;
  int n0 = blk * SPC_V, nimg = imin(SPC_V, d->N - n0);
  if (r->pass == CONV_FWD) {
    size_t is = (size_t)d->C * d->H * d->W;
    int sh = p->sub ? d->stride_h : 1, sw = p->sub ? d->stride_w : 1;
    const float *src = r->in + n0 * is + (size_t)ch * d->H * d->W;
    pack_plane(src, ch + 1 < d->C ? src + (size_t)d->H * d->W : NULL, is, nimg, p->sub ? d->P : d->H,
               p->sub ? d->Q : d->W, sh, sw, (size_t)d->W, slot + (size_t)ch * p->Hp * p->Wp * SPC_V, p->Hp, p->Wp,
               d->pad_t, d->pad_l);
  } else {
    size_t is = (size_t)d->K * d->P * d->Q;
    const float *src = r->in + n0 * is + (size_t)ch * d->P * d->Q;
    pack_plane(src, ch + 1 < d->K ? src + (size_t)d->P * d->Q : NULL, is, nimg, d->P, d->Q, 1, 1, (size_t)d->Q,
               slot + (size_t)ch * p->Pp * p->Qp * SPC_V, p->Pp, p->Qp, p->OT, p->OL);
  }
}

/* Computes output plane o of block blk from its packed slot and writes it to the NCHW output. */
static void conv_plane(const conv_run *r, int blk, int o, const float *slot, float *plane) {
  const spconv_plan *p = r->p;
  const conv_desc *d = &p->d;
  int n0 = blk * SPC_V, nimg = imin(SPC_V, d->N - n0);
  if (r->pass == CONV_FWD) {
    size_t is = (size_t)d->K * d->P * d->Q;
    fwd_plane(p, slot, run_lists(r) + (size_t)o * r->l.cap, run_counts(r)[o], r->k9, r->b ? r->b[o] : 0.0f, plane,
              r->out + n0 * is + (size_t)o * d->P * d->Q, is, nimg);
  } else {
    size_t is = (size_t)d->C * d->H * d->W;
    bwd_plane(p, slot, run_lists(r) + (size_t)o * p->nph * r->l.cap, run_counts(r) + (size_t)o * p->nph, r->k9,
              plane, r->out + n0 * is + (size_t)o * d->H * d->W, is, nimg);
  }
}

/* Stage 1: lists of the output rows this worker owns; in the split schedule also its packing share. */
static void conv_stage1(const conv_run *r, int t, int T) {
  const spconv_plan *p = r->p;
  const conv_desc *d = &p->d;
  int64_t lo, hi;
  kern_split(run_cout(r), t, T, &lo, &hi);
  for (int64_t o = lo; o < hi; o++) {
    if (r->k9)
      run_counts(r)[o] = build_k9_row(p, r->pass, r->w, (int)o, (spc_k9 *)(run_lists(r) + (size_t)o * r->l.cap));
    else if (r->pass == CONV_FWD)
      run_counts(r)[o] =
          build_fwd_row(p, r->w + (size_t)o * d->C * d->R * d->S, run_lists(r) + (size_t)o * r->l.cap);
    else
      build_bwd_rows(p, r->w, (int)o, run_lists(r) + (size_t)o * p->nph * r->l.cap, run_counts(r) + o * p->nph);
  }
  if (r->blocked) return;
  int cin = run_cin(r);
  kern_split((int64_t)p->nb * cin, t, T, &lo, &hi);
  for (int64_t i = lo; i < hi; i++) conv_pack(r, (int)(i / cin), (int)(i % cin), run_slot(r, (int)(i / cin)));
}

/* Stage 2's units of work per block in the blocked schedule: ranges of the block's output planes, 4 (a
 * worker that takes another's unit packs that block again: a quarter of a block's work and more is worth
 * it). The split schedule's units are single planes. */
static int conv_units_per_block(int blocked, int cout) { return blocked ? imin(4, cout) : cout; }

/* Stage 2: units of planes, taken by work stealing (kern_steal; a plane's result does not depend on
 * the worker). Blocked schedule: a unit is a range of one block's output planes, computed from the
 * block packed into this worker's slot (packed here when the slot holds another block). */
static void conv_stage2(conv_run *r, int t, int T) {
  float *plane = run_plane(r, t);
  int cin = run_cin(r), cout = run_cout(r), held = -1;
  for (;;) {
    int64_t u = kern_steal_next(&r->units, t, T);
    if (u < 0) return;
    int blk = (int)(u / r->upb);
    if (!r->blocked) {
      conv_plane(r, blk, (int)(u % cout), run_slot(r, blk), plane);
      continue;
    }
    float *slot = run_slot(r, t);
    if (blk != held) {
      for (int ch = 0; ch < cin; ch++) conv_pack(r, blk, ch, slot);
      held = blk;
    }
    int64_t lo, hi;
    kern_split(cout, (int)(u % r->upb), r->upb, &lo, &hi);
    for (int64_t o = lo; o < hi; o++) conv_plane(r, blk, (int)o, slot, plane);
  }
}

static void conv_s1(void *ctx, int t, int T) { conv_stage1(ctx, t, T); }
static void conv_s2(void *ctx, int t, int T) { conv_stage2(ctx, t, T); }

static int spc_portable; /* tests: 1 runs the plain C NCHW-direct kernels even where AVX-512 is there */

void spconv_use_portable(int on) { spc_portable = on; }

static int spc_no_k9; /* tests and benchmarks: 1 runs whole-kernel patterns on the per-tap lists */

void spconv_use_whole_kernel_tiles(int on) { spc_no_k9 = !on; }

#ifdef SPC_X86
#define SPC_AVX_INLINE static inline __attribute__((always_inline, target("avx512f")))

/* Lanes j of the vector at column q with 0 <= q+j < n (a row of n floats). */
static unsigned lane_mask(int q, int n) {
  int hi = imin(16, n - q);
  if (hi <= 0) return 0;
  return hi >= 16 ? 0xffffu : (1u << hi) - 1u;
}
#endif

/* ---------------------------------------------------------------------------------------------
 * NCHW-direct path (every conv; chosen per call by weight density, see nchw_below_model): polyphase,
 * no layout transforms of the caller's tensors. At stride 1 the phase split is a plain bordered copy of
 * each image's x (or dY) and backward-data has one phase, whose plane is dX itself.
 * Forward: the input pixel of output (p, q) and tap (r, s) is x[sh*p + r - pt][sw*q + s - pl]; with
 * u = r - pt = sh*dh + a (0 <= a < sh) and v = s - pl = sw*dw + b it is x_ab[p + dh][q + dw] of the phase
 * plane x_ab[h'][w'] = x[sh*h' + a][sw*w' + b]. So each image's x is split (in a per-thread buffer) into
 * C*sh*sw phase planes, and the conv becomes a stride-1 correlation over them with one (plane, dh, dw)
 * per tap: ResNet-20's 3x3 stride-2 pad-1 taps read the 4 phases at offsets -1 / 0. Phases no tap reads
 * are not split (an unpadded strided 1x1 conv, ResNet-20's shortcuts, reads only phase (0, 0)).
 * Backward-data: dX position (h, w) of phase (ph, pw) = ((h + pt) % sh, (w + pl) % sw) is the phase
 * plane Z_(ph,pw)[i][j] (h = h0 + sh*i) = sum over the taps r = ph, s = pw (mod stride) of
 * w * dY[a0 + i - (r - ph)/sh][b0 + j - (s - pw)/sw] (the packed path's gather form): each image's dY
 * is copied into the buffer, the sh*sw phase planes of every input channel computed into a per-thread
 * buffer as stride-1 correlations, then interleaved into the dX planes (stride-2 columns with
 * permutex2var); at stride 1 (one phase) the tiles store into dX directly, as the forward ones into y.
 * Buffer planes carry a zero halo (top/left rows and columns before the data, zero columns after it,
 * zero rows below), wide enough that every tap of every output position lands inside its plane:
 * a plane is a flat array with row pitch `pitch`, and an output plane (Hz rows) is computed over the
 * flat positions j in [0, Hz*pitch): a tap is one element offset, no masks, and the positions at
 * columns >= the output width (at most pitch - width per row) are computed and dropped. Small planes
 * (ResNet-20's 7x7 outputs, pitch 8) fill the vectors much better than one row per vector would.
 * A register tile is NO lists (1-3) x TV vectors of 16 flat positions of one image (NO*TV <= 24):
 * the lists run side by side up to the shortest one (per entry of each, one broadcast and TV unaligned
 * loads + FMAs: NO*TV independent chains over the same input planes), then each one's rest. Forward
 * output vectors go in bands of at most 8 (the input rows a band reads stay in L1 across the lists),
 * backward-data planes whole up to 16 vectors (ps_tiling).
 * Forward (and stride-1 backward-data) stores compress the valid columns of each vector (vcompressps)
 * straight into the NCHW output plane (consecutive there); strided backward-data stores the phase planes
 * and interleaves them afterwards.
 * The lists hold each output's nonzeros in the packed path's order (forward c, r, s; backward-data per
 * phase k, r, s), the accumulators start at the bias (0 for backward-data) and taps in the halo add
 * w * 0, as the packed path's zero padding: bit-identical to the packed path.
 * Threads own contiguous ranges of (image, item) pairs (item: forward an output channel, backward-data
 * an input channel with its phases); results do not depend on the thread count.
 * (This path replaced a stride-1 kernel that loaded masked input rows straight from NCHW; measured with
 * bench_spconv at 5-50% it was slower on every layer SWAT runs sparse, except ResNet-20 16-16 28x28
 * forward at 5% density, by about 10%; README.md.) */

/* Accumulators (zmm) of an NCHW-direct tile. */
#define SPC_PS_ACC 24

static int fdiv_floor(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
static int fmod_floor(int a, int b) { return a - b * fdiv_floor(a, b); }

/* Is forward row phase a (column phase b: pass pad_l) read by any tap? Tap r reads phase
 * (r - pad_t) mod sh, so phase a is read iff its smallest tap row (a + pad_t) mod sh is < R. */
static int ps_phase_used(int a, int pad, int stride, int R) { return fmod_floor(a + pad, stride) < R; }


/* Prefetch distance (floats) of the strided path's sequential sweeps over the caller's tensors (the
 * split / copy reading x or dY, the expansion writing dX): 8 KiB ahead, a few hundred rows. */
static int ps_pf_dist(void) { return 2048; }

/* Geometry of an NCHW-direct pass. */
typedef struct ps_geom {
  conv_pass pass;
  int sh, sw;
  int G;          /* input planes per image in the buffer: fwd C*sh*sw phase planes, bwd K dY planes */
  int Hb, pitch;  /* rows and row pitch (floats) of one buffer plane, zero halo included */
  int top, left;  /* where the data starts in a buffer plane */
  int Hz, Wz;     /* rows and valid columns of one output plane (fwd P x Q; bwd the largest phase) */
  int nvec;       /* vectors of 16 flat positions that cover Hz*pitch */
  int nout;       /* lists: fwd K, bwd C*sh*sw */
  int nph;        /* lists per work item: fwd 1, bwd sh*sw (the phases of one input channel) */
  int direct;     /* tiles store into the NCHW output planes (fwd; bwd at stride 1, one phase) */
  int vert;       /* fwd: the input planes are the caller's rows unchanged (stride 1): a plain copy */
  int nitem;      /* work items per image: fwd K, bwd C */
  int NO;         /* lists per tile */
  int tvmax;      /* vectors per tile at most */
  size_t cap;     /* entries per list */
  size_t plane;   /* floats of one buffer plane (Hb*pitch rounded up to 16) */
  size_t img;     /* floats of one image in the input buffer */
  size_t zimg;    /* bwd: floats of one image's output phase planes (nout of nvec*16); fwd 0 */
} ps_geom;

/* Widest band (vectors) and lists per tile (NO) for planes of nvec vectors. */
static void ps_tiling(int direct, int nvec, int *no, int *tvmax) {
  /* measured (bench_spconv, 2 threads, ResNet-20's stride-2 layers at 10%): forward bands of <= 8
   * vectors (7 + 7 for 14x14 outputs: the band's input rows stay in L1) with 2-3 lists a tile; backward-
   * data phase planes whole up to 16 vectors (1.45x faster than two bands on the 28x28 layer) with fewer
   * lists */
  int cap = direct ? 8 : 16, acc = direct ? 16 : 8;
  *tvmax = kern_cdiv(nvec, kern_cdiv(nvec, cap));
  *no = imin(3, imax(1, acc / *tvmax));
}

static ps_geom ps_geom_of(const spconv_plan *p, conv_pass pass) {
  const conv_desc *d = &p->d;
  ps_geom g;
  memset(&g, 0, sizeof g);
  int sh = d->stride_h, sw = d->stride_w;
  g.pass = pass, g.sh = sh, g.sw = sw;
  if (pass == CONV_FWD) {
    int Hph = kern_cdiv(d->H, sh), Wph = kern_cdiv(d->W, sw);
    int dhmin = fdiv_floor(-d->pad_t, sh), dhmax = fdiv_floor(d->R - 1 - d->pad_t, sh);
    int dwmin = fdiv_floor(-d->pad_l, sw), dwmax = fdiv_floor(d->S - 1 - d->pad_l, sw);
    g.top = imax(0, -dhmin), g.left = imax(0, -dwmin);
    g.Hb = g.top + imax(Hph, d->P + dhmax);
    g.pitch = g.left + imax(Wph, d->Q + dwmax);
    g.Hz = d->P, g.Wz = d->Q;
    g.G = d->C * sh * sw, g.nout = d->K, g.nph = 1, g.nitem = d->K;
    g.cap = (size_t)d->C * d->R * d->S;
  } else {
    int umin = 0, umax = 0, vmin = 0, vmax = 0;
    for (int ph = 0; ph < sh; ph++) {
      int h0 = fmod_floor(ph - d->pad_t, sh), a0 = (h0 + d->pad_t) / sh;
      int dr = ph < d->R ? (d->R - 1 - ph) / sh : 0;
      umin = imin(umin, a0 - dr), umax = imax(umax, a0);
      if (h0 < d->H) g.Hz = imax(g.Hz, (d->H - h0 + sh - 1) / sh);
    }
    for (int pw = 0; pw < sw; pw++) {
      int w0 = fmod_floor(pw - d->pad_l, sw), b0 = (w0 + d->pad_l) / sw;
      int ds = pw < d->S ? (d->S - 1 - pw) / sw : 0;
      vmin = imin(vmin, b0 - ds), vmax = imax(vmax, b0);
      if (w0 < d->W) g.Wz = imax(g.Wz, (d->W - w0 + sw - 1) / sw);
    }
    g.top = -umin, g.left = -vmin;
    g.Hb = g.top + imax(d->P, g.Hz + umax);
    g.pitch = g.left + imax(d->Q, g.Wz + vmax);
    g.G = d->K, g.nout = d->C * sh * sw, g.nph = sh * sw, g.nitem = d->C;
    g.cap = (size_t)p->bwd_cap;
  }
  g.direct = pass == CONV_FWD || g.nph == 1;
  g.vert = pass == CONV_FWD && sh == 1 && sw == 1;
  g.nvec = kern_cdiv(g.Hz * g.pitch, SPC_V);
  /* planes start 64-byte aligned: a tap at an offset that is a multiple of 16 floats then loads aligned
   * (with pitch 15, as ResNet-20's 28x28 stride-2 layer, 5 of the 9 taps of a 3x3 kernel) */
  g.plane = ((size_t)g.Hb * g.pitch + SPC_V - 1) / SPC_V * SPC_V;
  /* a tap reads at most pitch + 15 floats past the last plane (see the halo bounds above) */
  g.img = ((size_t)g.G * g.plane + (size_t)g.pitch + 2 * SPC_V - 1) / SPC_V * SPC_V;
  g.zimg = g.direct ? 0 : (size_t)g.nout * g.nvec * SPC_V;
  ps_tiling(g.direct, g.nvec, &g.NO, &g.tvmax);
  return g;
}

/* Per-thread scratch of the strided path: one image's input planes, (bwd) its output phase planes,
 * (fwd) each vector's compress mask and destination offset. */
static size_t ps_thread_bytes(const ps_geom *g) {
  return fbytes(g->img) + fbytes(g->zimg) +
         kern_align_up(sizeof(uint16_t) * g->nvec) + ibytes((size_t)g->nvec);
}

/* Scratch of the strided path: the lists, their lengths, then the per-thread buffers. */
static size_t ps_scratch(const spconv_plan *p, conv_pass pass, size_t *off_counts, size_t *off_threads) {
  ps_geom g = ps_geom_of(p, pass);
  *off_counts = ebytes((size_t)g.nout * g.cap);
  *off_threads = *off_counts + ibytes((size_t)g.nout);
  return *off_threads + ps_thread_bytes(&g) * (size_t)p->nthreads;
}

/* Forward list of output channel k (c, r, s ascending) as offsets into one image's phase planes. */
static int ps_build_fwd(const spconv_plan *p, const ps_geom *g, const float *restrict wk, spc_ent *restrict L) {
  const conv_desc *d = &p->d;
  int n = 0;
  for (int c = 0; c < d->C; c++)
    for (int r = 0; r < d->R; r++) {
      int u = r - d->pad_t, a = fmod_floor(u, g->sh), dh = fdiv_floor(u, g->sh);
      for (int s = 0; s < d->S; s++) {
        int v = s - d->pad_l, b = fmod_floor(v, g->sw), dw = fdiv_floor(v, g->sw);
        float wv = wk[((size_t)c * d->R + r) * d->S + s];
        L[n].off = (int32_t)(((size_t)c * g->sh * g->sw + (size_t)a * g->sw + b) * g->plane +
                             (size_t)(g->top + dh) * g->pitch + (size_t)(g->left + dw));
        L[n].w = wv;
        n += wv != 0.0f; /* NaN counts as nonzero */
      }
    }
  return n;
}

/* Backward-data lists of input channel c, one per phase (ph, pw) (k, r, s ascending as the packed
 * path), as offsets into one image's dY planes relative to the phase plane's position (0, 0). */
static void ps_build_bwd(const spconv_plan *p, const ps_geom *g, const float *restrict w, int c,
                         spc_ent *restrict L0, int *restrict cnt) {
  const conv_desc *d = &p->d;
  int sh = g->sh, sw = g->sw;
  size_t kstride = (size_t)d->C * d->R * d->S;
  for (int ph = 0; ph < sh; ph++) {
    int a0 = (fmod_floor(ph - d->pad_t, sh) + d->pad_t) / sh;
    for (int pw = 0; pw < sw; pw++) {
      int b0 = (fmod_floor(pw - d->pad_l, sw) + d->pad_l) / sw;
      spc_ent *L = L0 + (size_t)(ph * sw + pw) * g->cap;
      int n = 0;
      for (int k = 0; k < d->K; k++) {
        const float *wk = w + k * kstride + (size_t)c * d->R * d->S;
        for (int r = ph; r < d->R; r += sh) {
          size_t row = (size_t)k * g->plane + (size_t)(g->top + a0 - (r - ph) / sh) * g->pitch;
          for (int s = pw; s < d->S; s += sw) {
            float v = wk[r * d->S + s];
            L[n].off = (int32_t)(row + (size_t)(g->left + b0 - (s - pw) / sw));
            L[n].w = v;
            n += v != 0.0f;
          }
        }
      }
      cnt[ph * sw + pw] = n;
    }
  }
}

/* Compress table of the forward output: for vector v (flat positions 16v..16v+15), the lanes at
 * valid positions (row < Hz, column < Wz) and the NCHW offset of the first of them. */
static void ps_compress_table(const ps_geom *g, uint16_t *restrict cm, int32_t *restrict co) {
  int end = g->Hz * g->pitch;
  for (int v = 0; v < g->nvec; v++) {
    int j0 = v * SPC_V;
    unsigned m = 0;
    for (int l = 0; l < SPC_V; l++)
      if (j0 + l < end && (j0 + l) % g->pitch < g->Wz) m |= 1u << l;
    cm[v] = (uint16_t)m;
    co[v] = (j0 / g->pitch) * g->Wz + imin(j0 % g->pitch, g->Wz);
  }
}

/* Plain C tile: tv vectors at flat position b for each of the no lists Ls[o] (lengths ns[o], start
 * values inits[o]); mode 0 stores the vectors at outs[o], mode 1 compresses their valid lanes (cm, co)
 * into the NCHW plane outs[o]. */
SPC_HOT static void ps_tile_c(int no, int tv, int mode, const float *restrict b, const spc_ent *const *Ls,
                              const int *ns, const float *inits, float *const *outs, const uint16_t *restrict cm,
                              const int32_t *restrict co) {
  float acc[SPC_PS_ACC * SPC_V];
  int np = tv * SPC_V;
  for (int o = 0; o < no; o++) {
    const spc_ent *restrict L = Ls[o];
    float *restrict out = outs[o];
    for (int j = 0; j < np; j++) acc[j] = inits[o];
    for (int e = 0; e < ns[o]; e++) {
      const float *restrict x = b + L[e].off;
      float wv = L[e].w;
      for (int j = 0; j < np; j++) acc[j] += wv * x[j];
    }
    if (mode == 0) {
      memcpy(out, acc, sizeof(float) * np);
      continue;
    }
    for (int v = 0; v < tv; v++)
      for (int l = 0, k = 0; l < SPC_V; l++)
        if (cm[v] >> l & 1) out[co[v] + k++] = acc[v * SPC_V + l];
  }
}

#ifdef SPC_X86
/* AVX-512 tile (ps_tile_c with compile-time NO lists, TV vectors and store mode): the lists run side by
 * side up to the shortest one (NO*TV independent FMA chains over one input), then each one's rest. */
SPC_AVX_INLINE void ps_tile(const int NO, const int TV, const int MODE, const float *restrict b,
                            const spc_ent *const *Ls, const int *ns, const float *inits, float *const *outs,
                            const uint16_t *restrict cm, const int32_t *restrict co) {
  __m512 acc[SPC_PS_ACC];
  int nmin = ns[0];
_Pragma("GCC unroll 3")
  for (int o = 0; o < NO; o++) {
    nmin = imin(nmin, ns[o]);
_Pragma("GCC unroll 24")
    for (int v = 0; v < TV; v++) acc[o * TV + v] = _mm512_set1_ps(inits[o]);
  }
  const spc_ent *restrict L0 = Ls[0], *restrict L1 = Ls[NO > 1 ? 1 : 0], *restrict L2 = Ls[NO > 2 ? 2 : 0];
  for (int e = 0; e < nmin; e++) {
_Pragma("GCC unroll 3")
    for (int o = 0; o < NO; o++) {
      const spc_ent *L = o == 0 ? L0 : o == 1 ? L1 : L2;
      const float *x = b + L[e].off;
      __m512 w = _mm512_set1_ps(L[e].w);
_Pragma("GCC unroll 24")
      for (int v = 0; v < TV; v++) acc[o * TV + v] = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + v * SPC_V), acc[o * TV + v]);
    }
  }
_Pragma("GCC unroll 3")
  for (int o = 0; o < NO; o++) {
    const spc_ent *L = o == 0 ? L0 : o == 1 ? L1 : L2;
    for (int e = nmin; e < ns[o]; e++) {
      const float *x = b + L[e].off;
      __m512 w = _mm512_set1_ps(L[e].w);
_Pragma("GCC unroll 24")
      for (int v = 0; v < TV; v++) acc[o * TV + v] = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + v * SPC_V), acc[o * TV + v]);
    }
  }
_Pragma("GCC unroll 3")
  for (int o = 0; o < NO; o++)
_Pragma("GCC unroll 24")
    for (int v = 0; v < TV; v++) {
      if (MODE == 0) {
        _mm512_storeu_ps(outs[o] + v * SPC_V, acc[o * TV + v]);
      } else {
        __mmask16 m = cm[v];
        __mmask16 st = (__mmask16)((1u << __builtin_popcount(m)) - 1u);
        _mm512_mask_storeu_ps(outs[o] + co[v], st, _mm512_maskz_compress_ps(m, acc[o * TV + v]));
      }
    }
}

__attribute__((target("avx512f"))) static void ps_tile_any(int no, int tv, int mode, const float *restrict b,
                                                           const spc_ent *const *Ls, const int *ns,
                                                           const float *inits, float *const *outs,
                                                           const uint16_t *restrict cm, const int32_t *restrict co) {
#define PS_CASE(O, V)                                                                                              \
  case (O) * 32 + (V):                                                                                             \
    if (mode)                                                                                                      \
      ps_tile(O, V, 1, b, Ls, ns, inits, outs, cm, co);                                                            \
    else                                                                                                           \
      ps_tile(O, V, 0, b, Ls, ns, inits, outs, cm, co);                                                            \
    return;
  switch (no * 32 + tv) {
    PS_CASE(1, 1) PS_CASE(1, 2) PS_CASE(1, 3) PS_CASE(1, 4) PS_CASE(1, 5) PS_CASE(1, 6) PS_CASE(1, 7)
    PS_CASE(1, 8) PS_CASE(1, 9) PS_CASE(1, 10) PS_CASE(1, 11) PS_CASE(1, 12) PS_CASE(1, 13) PS_CASE(1, 14)
    PS_CASE(1, 15) PS_CASE(1, 16)
    PS_CASE(2, 1) PS_CASE(2, 2) PS_CASE(2, 3) PS_CASE(2, 4) PS_CASE(2, 5) PS_CASE(2, 6) PS_CASE(2, 7)
    PS_CASE(2, 8) PS_CASE(2, 9) PS_CASE(2, 10) PS_CASE(2, 11) PS_CASE(2, 12)
    PS_CASE(3, 1) PS_CASE(3, 2) PS_CASE(3, 3) PS_CASE(3, 4) PS_CASE(3, 5) PS_CASE(3, 6) PS_CASE(3, 7)
    PS_CASE(3, 8)
  default: break;
  }
#undef PS_CASE
  SW_ASSERT(!"spconv: strided NCHW tile out of range");
}

/* The whole-kernel tile: TR x TC accumulators; per kernel its 9 weights broadcast once, then each input
 * row of the window in pieces of CW columns (the CW + 2 input vectors a piece reads loaded once into
 * registers: 14 accumulators + 9 weights + 6 inputs fit the 32 zmm), every tap (r, s) of the piece's
 * accumulators FMA-ed from them. Per accumulator the taps arrive in (r, s) order (REV: the window's rows
 * walked from the last, and the taps s of a piece read its inputs from the right). */
#define SPC_K9_CW 4
SPC_AVX_INLINE void spc_k9_tile(const int TR, const int TC, const int REV, const float *restrict base, ptrdiff_t rs,
                                const spc_k9 *restrict L, int n, float init, float *restrict out, ptrdiff_t ors,
                                ptrdiff_t ocs) {
  __m512 acc[SPC_ACC];
_Pragma("GCC unroll 16")
  for (int j = 0; j < TR * TC; j++) acc[j] = _mm512_set1_ps(init);
  for (int e = 0; e < n; e++) {
    const float *b = base + L[e].off;
    __m512 w[9];
_Pragma("GCC unroll 9")
    for (int j = 0; j < 9; j++) w[j] = _mm512_set1_ps(L[e].w[j]);
_Pragma("GCC unroll 6")
    for (int i = 0; i < TR + 2; i++) {
      const int ir = REV ? TR + 1 - i : i;
_Pragma("GCC unroll 4")
      for (int k = 0; k < (TC + SPC_K9_CW - 1) / SPC_K9_CW; k++) {
        const int c0 = k * SPC_K9_CW; /* (pieces update disjoint accumulators: their order is free) */
        const int cw = TC - c0 < SPC_K9_CW ? TC - c0 : SPC_K9_CW;
        __m512 x[SPC_K9_CW + 2];
_Pragma("GCC unroll 8")
        for (int jj = 0; jj < cw + 2; jj++) x[jj] = _mm512_loadu_ps(b + ir * rs + (c0 + jj) * SPC_V);
_Pragma("GCC unroll 4")
        for (int tr = 0; tr < TR; tr++) {
          const int r = REV ? 2 + tr - ir : ir - tr;
          if (r < 0 || r > 2) continue;
_Pragma("GCC unroll 3")
          for (int s = 0; s < 3; s++)
_Pragma("GCC unroll 8")
            for (int t = 0; t < cw; t++)
              acc[tr * TC + c0 + t] = _mm512_fmadd_ps(w[r * 3 + s], x[REV ? t + 2 - s : t + s], acc[tr * TC + c0 + t]);
        }
      }
    }
  }
_Pragma("GCC unroll 4")
  for (int r = 0; r < TR; r++)
_Pragma("GCC unroll 16")
    for (int c = 0; c < TC; c++) _mm512_storeu_ps(out + r * ors + c * ocs, acc[r * TC + c]);
}

__attribute__((target("avx512f"))) static void spc_k9_any(int tr, int tc, int rev, const float *restrict base,
                                                          ptrdiff_t rs, const spc_k9 *restrict L, int n, float init,
                                                          float *restrict out, ptrdiff_t ors, ptrdiff_t ocs) {
#define SPC_KCASE(R, C)                                                                                            \
  case (R) * 16 + (C):                                                                                             \
    if (rev)                                                                                                       \
      spc_k9_tile(R, C, 1, base, rs, L, n, init, out, ors, ocs);                                                   \
    else                                                                                                           \
      spc_k9_tile(R, C, 0, base, rs, L, n, init, out, ors, ocs);                                                   \
    return;
  switch (tr * 16 + tc) {
    SPC_KCASE(1, 1) SPC_KCASE(1, 2) SPC_KCASE(1, 3) SPC_KCASE(1, 4) SPC_KCASE(1, 5) SPC_KCASE(1, 6)
    SPC_KCASE(1, 7) SPC_KCASE(1, 8) SPC_KCASE(1, 9) SPC_KCASE(1, 10) SPC_KCASE(1, 11) SPC_KCASE(1, 12)
    SPC_KCASE(1, 13) SPC_KCASE(1, 14)
    SPC_KCASE(2, 1) SPC_KCASE(2, 2) SPC_KCASE(2, 3) SPC_KCASE(2, 4) SPC_KCASE(2, 5) SPC_KCASE(2, 6)
    SPC_KCASE(2, 7) SPC_KCASE(4, 1) SPC_KCASE(4, 2) SPC_KCASE(4, 3)
  default: break;
  }
#undef SPC_KCASE
  SW_ASSERT(!"spconv: whole-kernel register tile out of range");
}

/* Forward split with stride-2 columns: rows of channels' phase planes from two masked loads of 32
 * input columns and one permutex2var per phase. */
__attribute__((target("avx512f"))) static void ps_split2_avx512(const conv_desc *d, const ps_geom *g,
                                                                const float *restrict x, float *restrict buf) {
  const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i od = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  int sh = g->sh, W = d->W, n0 = (W + 1) / 2, n1 = W / 2, pfd = ps_pf_dist();
  /* every row's chunks are full but the last one (columns ql.. of the phase rows): its masks once */
  int ql = (n0 - 1) / 16 * 16;
  __mmask16 ml0 = (__mmask16)lane_mask(2 * ql, W), ml1 = (__mmask16)lane_mask(2 * ql + 16, W);
  __mmask16 ms0 = (__mmask16)lane_mask(ql, n0), ms1 = (__mmask16)lane_mask(ql, n1);
  if (W <= 32 && sh <= 8) { /* one chunk a row (ResNet-20's 28x28 and 14x14): pointers stepped, no loop */
    const float *sr = x;
    int used[8]; /* row phases some tap reads (the others are skipped) */
    for (int a = 0; a < sh; a++) used[a] = ps_phase_used(a, d->pad_t, sh, d->R);
    for (int c = 0; c < d->C; c++) {
      float *row[8]; /* the next row of phase a's (b = 0) plane */
      for (int a = 0; a < sh; a++)
        row[a] = buf + ((size_t)c * sh * 2 + (size_t)a * 2) * g->plane + (size_t)g->top * g->pitch + g->left;
      for (int h = 0, a = 0; h < d->H; h++, sr += W) {
        __builtin_prefetch(sr + pfd, 0, 2);
        if (used[a]) {
          __m512 lo = _mm512_maskz_loadu_ps(ml0, sr), hi = _mm512_maskz_loadu_ps(ml1, sr + 16);
          _mm512_mask_storeu_ps(row[a], ms0, _mm512_permutex2var_ps(lo, ev, hi));
          _mm512_mask_storeu_ps(row[a] + g->plane, ms1, _mm512_permutex2var_ps(lo, od, hi));
        }
        row[a] += g->pitch;
        if (++a == sh) a = 0;
      }
    }
    return;
  }
  for (int c = 0; c < d->C; c++) {
    const float *sc = x + (size_t)c * d->H * W;
    float *bc = buf + (size_t)c * sh * 2 * g->plane + (size_t)g->top * g->pitch + g->left;
    size_t aplane = 2 * g->plane;
    /* rows in memory order (the hardware prefetcher follows); h = hh * sh + a, counted without divisions */
    for (int h = 0, a = 0, hh = 0; h < d->H; h++, a = a + 1 == sh ? 0 : a + 1, hh += a == 0) {
      if (!ps_phase_used(a, d->pad_t, sh, d->R)) continue;
      const float *sr = sc + (size_t)h * W;
      float *r0 = bc + (size_t)a * aplane + (size_t)hh * g->pitch, *r1 = r0 + g->plane;
      for (int k = 0; k < W; k += SPC_V) __builtin_prefetch(sr + pfd + k, 0, 2);
      for (int q = 0; q < ql; q += 16) {
        __m512 lo = _mm512_loadu_ps(sr + 2 * q), hi = _mm512_loadu_ps(sr + 2 * q + 16);
        _mm512_storeu_ps(r0 + q, _mm512_permutex2var_ps(lo, ev, hi));
        _mm512_storeu_ps(r1 + q, _mm512_permutex2var_ps(lo, od, hi));
      }
      __m512 lo = _mm512_maskz_loadu_ps(ml0, sr + 2 * ql), hi = _mm512_maskz_loadu_ps(ml1, sr + 2 * ql + 16);
      _mm512_mask_storeu_ps(r0 + ql, ms0, _mm512_permutex2var_ps(lo, ev, hi));
      _mm512_mask_storeu_ps(r1 + ql, ms1, _mm512_permutex2var_ps(lo, od, hi));
    }
  }
}

/* Backward-data expansion with stride-2 columns: each dX row interleaves the row of its two column
 * phases (permutex2var). */
__attribute__((target("avx512f"))) static void ps_expand2_avx512(const conv_desc *d, const ps_geom *g,
                                                                 const float *restrict z, int c0, int c1,
                                                                 float *restrict dx) {
  const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  int sh = g->sh, W = d->W, f = d->pad_l % 2, nz = (W + 1) / 2, pfd = ps_pf_dist();
  size_t zpl = (size_t)g->nvec * SPC_V;
  /* every row's chunks of 32 columns are full but the last one (columns xl..): its masks once */
  int xl = (W - 1) / 32 * 32;
  __mmask16 lml = (__mmask16)lane_mask(xl / 2, nz);
  __mmask16 sl0 = (__mmask16)lane_mask(xl, W), sl1 = (__mmask16)lane_mask(xl + 16, W);
  int pts = d->pad_t % sh;
  if (W <= 32 && sh <= 8) { /* one chunk a row (ResNet-20's 28x28 and 14x14): pointers stepped, no loop */
    size_t of[8], og[8];
    for (int ph = 0; ph < sh; ph++) of[ph] = ((size_t)ph * 2 + f) * zpl, og[ph] = ((size_t)ph * 2 + 1 - f) * zpl;
    for (int c = c0; c < c1; c++) {
      const float *zc = z + (size_t)c * g->nph * zpl;
      float *dr = dx + (size_t)c * d->H * W;
      size_t zi = 0; /* i * pitch */
      for (int h = 0, hm = 0; h < d->H; h++, dr += W) {
        int ph = hm + pts >= sh ? hm + pts - sh : hm + pts;
        __m512 a = _mm512_maskz_loadu_ps(lml, zc + of[ph] + zi), b = _mm512_maskz_loadu_ps(lml, zc + og[ph] + zi);
        __builtin_prefetch(dr + pfd, 1, 2);
        _mm512_mask_storeu_ps(dr, sl0, _mm512_permutex2var_ps(a, lo, b));
        if (W > 16) _mm512_mask_storeu_ps(dr + 16, sl1, _mm512_permutex2var_ps(a, hi, b));
        if (++hm == sh) hm = 0, zi += (size_t)g->pitch;
      }
    }
    return;
  }
  for (int c = c0; c < c1; c++)
    /* dX row h = i * sh + hm is row i of its phase ph = (h + pad_t) % sh; counted without divisions */
    for (int h = 0, hm = 0, i = 0; h < d->H; h++, hm = hm + 1 == sh ? 0 : hm + 1, i += hm == 0) {
      int ph = hm + pts >= sh ? hm + pts - sh : hm + pts;
      const float *zf = z + ((size_t)c * g->nph + (size_t)ph * 2 + f) * zpl + (size_t)i * g->pitch;
      const float *zg = z + ((size_t)c * g->nph + (size_t)ph * 2 + 1 - f) * zpl + (size_t)i * g->pitch;
      float *dr = dx + ((size_t)c * d->H + h) * W;
      for (int k = 0; k < W; k += SPC_V) __builtin_prefetch(dr + pfd + k, 1, 2);
      for (int xx = 0; xx < xl; xx += 32) {
        __m512 a = _mm512_loadu_ps(zf + xx / 2), b = _mm512_loadu_ps(zg + xx / 2);
        _mm512_storeu_ps(dr + xx, _mm512_permutex2var_ps(a, lo, b));
        _mm512_storeu_ps(dr + xx + 16, _mm512_permutex2var_ps(a, hi, b));
      }
      __m512 a = _mm512_maskz_loadu_ps(lml, zf + xl / 2), b = _mm512_maskz_loadu_ps(lml, zg + xl / 2);
      _mm512_mask_storeu_ps(dr + xl, sl0, _mm512_permutex2var_ps(a, lo, b));
      _mm512_mask_storeu_ps(dr + xl + 16, sl1, _mm512_permutex2var_ps(a, hi, b));
    }
}
#endif

#ifdef SPC_X86
/* n planes of rows x cols floats (consecutive at src) into the buffer planes at dst (plane and row
 * pitch of the buffer): masked 16-float chunks, no library call per short row. */
__attribute__((target("avx512f"))) static void ps_copy_avx512(int n, int rows, int cols, const float *restrict src,
                                                              float *restrict dst, size_t plane, int pitch) {
  int ql = (cols - 1) / 16 * 16, pfd = ps_pf_dist();
  __mmask16 ml = (__mmask16)lane_mask(ql, cols);
  const float *sr = src;
  for (int k = 0; k < n; k++) {
    float *dr = dst + (size_t)k * plane;
    for (int pp = 0; pp < rows; pp++, sr += cols, dr += pitch) {
      __builtin_prefetch(sr + pfd, 0, 2);
      for (int q = 0; q < ql; q += 16) _mm512_storeu_ps(dr + q, _mm512_loadu_ps(sr + q));
      _mm512_mask_storeu_ps(dr + ql, ml, _mm512_maskz_loadu_ps(ml, sr + ql));
    }
  }
}
#endif

/* n planes of rows x cols floats (consecutive at src) into the buffer planes at dst (plain C). */
static void ps_copy_c(int n, int rows, int cols, const float *restrict src, float *restrict dst, size_t plane,
                      int pitch) {
  int pfd = ps_pf_dist();
  for (int k = 0; k < n; k++)
    for (int pp = 0; pp < rows; pp++) {
      float *restrict dr = dst + (size_t)k * plane + (size_t)pp * pitch;
      const float *restrict sr = src + ((size_t)k * rows + pp) * cols;
      for (int q = 0; q < cols; q += SPC_V) __builtin_prefetch(sr + pfd + q, 0, 2);
      for (int q = 0; q < cols; q++) dr[q] = sr[q];
    }
}

static void ps_copy(int avx512, int n, int rows, int cols, const float *src, float *dst, size_t plane, int pitch) {
#ifdef SPC_X86
  if (avx512) {
    ps_copy_avx512(n, rows, cols, src, dst, plane, pitch);
    return;
  }
#endif
  (void)avx512;
  ps_copy_c(n, rows, cols, src, dst, plane, pitch);
}

/* Forward: one image's x into its C*sh*sw phase planes in buf (the halo stays as it is: zero). Phases no
 * tap reads (e.g. all but (0, 0) of an unpadded strided 1x1 conv) are skipped. */
static void ps_split(const conv_desc *d, const ps_geom *g, int avx512, const float *restrict x, float *restrict buf) {
  int sh = g->sh, sw = g->sw;
  if (g->vert) {
    ps_copy(avx512, d->C, d->H, d->W, x, buf + (size_t)g->top * g->pitch + g->left, g->plane, g->pitch);
    return;
  }
#ifdef SPC_X86
  if (avx512 && sw == 2) {
    ps_split2_avx512(d, g, x, buf);
    return;
  }
#endif
  for (int c = 0; c < d->C; c++)
    for (int a = 0; a < sh; a++)
      for (int b = 0; b < sw; b++) {
        if (!ps_phase_used(a, d->pad_t, sh, d->R) || !ps_phase_used(b, d->pad_l, sw, d->S)) continue;
        float *dp = buf + ((size_t)c * sh * sw + (size_t)a * sw + b) * g->plane + (size_t)g->top * g->pitch + g->left;
        for (int hh = 0, h = a; h < d->H; hh++, h += sh) {
          const float *sr = x + ((size_t)c * d->H + h) * d->W;
          for (int ww = 0, w = b; w < d->W; ww++, w += sw) dp[(size_t)hh * g->pitch + ww] = sr[w];
        }
      }
}

/* Backward-data: one image's dY into its K planes in buf (inside the zero halo). */
static void ps_copy_dy(const conv_desc *d, const ps_geom *g, int avx512, const float *restrict dy,
                       float *restrict buf) {
  ps_copy(avx512, d->K, d->P, d->Q, dy, buf + (size_t)g->top * g->pitch + g->left, g->plane, g->pitch);
}

/* Backward-data: the phase planes z of input channels [c0, c1) of one image into the dX planes dx. */
static void ps_expand(const conv_desc *d, const ps_geom *g, int avx512, const float *restrict z, int c0, int c1,
                      float *restrict dx) {
#ifdef SPC_X86
  if (avx512 && g->sw == 2) {
    ps_expand2_avx512(d, g, z, c0, c1, dx);
    return;
  }
#endif
  (void)avx512;
  int sh = g->sh, sw = g->sw;
  size_t zpl = (size_t)g->nvec * SPC_V;
  for (int c = c0; c < c1; c++)
    for (int h = 0; h < d->H; h++) {
      int ph = (h + d->pad_t) % sh, i = (h + d->pad_t) / sh - (fmod_floor(ph - d->pad_t, sh) + d->pad_t) / sh;
      float *dr = dx + ((size_t)c * d->H + h) * d->W;
      for (int w = 0; w < d->W; w++) {
        int pw = (w + d->pad_l) % sw, j = (w + d->pad_l) / sw - (fmod_floor(pw - d->pad_l, sw) + d->pad_l) / sw;
        dr[w] = z[((size_t)c * g->nph + (size_t)ph * sw + pw) * zpl + (size_t)i * g->pitch + j];
      }
    }
}

/* Everything one NCHW-direct execute needs. */
typedef struct ps_run {
  const spconv_plan *p;
  ps_geom g;
  int avx512;
  const float *in, *w, *b;
  float *out;
  spc_ent *lists;
  int *counts;
  char *threads; /* per-thread buffers, ps_thread_bytes each */
  kern_steal units; /* stage 2's units of work */
} ps_run;

/* Stage 1: the lists of the work items this worker owns (fwd: output channels; bwd: input channels). */
static void ps_s1(void *ctx, int t, int T) {
  const ps_run *r = ctx;
  const conv_desc *d = &r->p->d;
  int64_t lo, hi;
  kern_split(r->g.nitem, t, T, &lo, &hi);
  for (int64_t o = lo; o < hi; o++) {
    if (r->g.pass == CONV_FWD)
      r->counts[o] = ps_build_fwd(r->p, &r->g, r->w + (size_t)o * d->C * d->R * d->S, r->lists + (size_t)o * r->g.cap);
    else
      ps_build_bwd(r->p, &r->g, r->w, (int)o, r->lists + (size_t)o * r->g.nph * r->g.cap,
                   r->counts + (size_t)o * r->g.nph);
  }
}

/* Stage 2's units of work per image: the whole image, or with fewer than 4 images a thread, parts of
 * its items. */
static int ps_units_per_image(const conv_desc *d, const ps_geom *g, int T) {
  return d->N >= 4 * T ? 1 : imin(g->nitem, kern_cdiv(4 * T, d->N));
}

/* Stage 2: units of whole images (ps_units_per_image), taken by work stealing (kern_steal: the two
 * virtual CPUs of this kind of machine run unevenly, and a static split left one thread waiting 10-15%
 * of the pass; images handed out one by one in turn instead, which keeps no run of images on one core,
 * made the SWAT-U step about 10% slower): per image its input planes into the worker's buffer, then
 * band by band of output vectors the tiles of every list (NO lists a tile), then (bwd) the expansion
 * into dX. An image's result does not depend on the worker that computes it. */
static void ps_s2(void *ctx, int t, int T) {
  ps_run *r = ctx;
  const ps_geom *g = &r->g;
  const conv_desc *d = &r->p->d;
  char *tb = r->threads + ps_thread_bytes(g) * (size_t)t;
  float *buf = (float *)tb, *z = (float *)(tb + fbytes(g->img));
  uint16_t *cm = (uint16_t *)(tb + fbytes(g->img) + fbytes(g->zimg));
  int32_t *co = (int32_t *)((char *)cm + kern_align_up(sizeof(uint16_t) * g->nvec));
  int fwd = g->pass == CONV_FWD;
  size_t x_img = fwd ? (size_t)d->C * d->H * d->W : (size_t)d->K * d->P * d->Q;
  size_t y_img = fwd ? (size_t)d->K * d->P * d->Q : (size_t)d->C * d->H * d->W;
  size_t y_pl = fwd ? (size_t)d->P * d->Q : (size_t)d->H * d->W, zpl = (size_t)g->nvec * SPC_V;
  int upi = ps_units_per_image(d, g, T);
  int nbands = kern_cdiv(g->nvec, g->tvmax), ready = 0, last = -1;
  for (;;) {
    int64_t u = kern_steal_next(&r->units, t, T);
    if (u < 0) break;
    if (!ready) {
      memset(buf, 0, sizeof(float) * g->img); /* the halo; the data parts are rewritten per image */
      if (g->direct) ps_compress_table(g, cm, co);
      ready = 1;
    }
    int n = (int)(u / upi), part = (int)(u % upi);
    int64_t lo, hi;
    kern_split(g->nitem, part, upi, &lo, &hi);
    if (lo >= hi) continue;
    int o0 = (int)lo, o1 = (int)hi;
    int l0 = o0 * g->nph, l1 = o1 * g->nph; /* lists [l0, l1) */
    if (n != last) { /* this worker's buffer holds image n's input from its previous unit otherwise */
      if (fwd)
        ps_split(d, g, r->avx512, r->in + (size_t)n * x_img, buf);
      else
        ps_copy_dy(d, g, r->avx512, r->in + (size_t)n * x_img, buf);
      last = n;
    }
    for (int v0 = 0, bnd = 0; v0 < g->nvec; bnd++) {
      int tv = kern_cdiv(g->nvec - v0, nbands - bnd);
      for (int lst = l0; lst < l1; lst += g->NO) {
        int no = imin(g->NO, l1 - lst);
        const spc_ent *Ls[3];
        int ns[3];
        float inits[3];
        float *outs[3];
        for (int k = 0; k < no; k++) {
          Ls[k] = r->lists + (size_t)(lst + k) * g->cap;
          ns[k] = r->counts[lst + k];
          inits[k] = fwd && r->b ? r->b[lst + k] : 0.0f;
          outs[k] = g->direct ? r->out + (size_t)n * y_img + (size_t)(lst + k) * y_pl
                              : z + (size_t)(lst + k) * zpl + (size_t)v0 * SPC_V;
        }
        if (g->direct && bnd == 0) /* the output planes two tiles ahead, for writing (write-allocate) */
          for (int k = lst + 2 * g->NO; k < imin(l1, lst + 3 * g->NO); k++)
            for (size_t e = 0; e < y_pl; e += SPC_V) __builtin_prefetch(r->out + (size_t)n * y_img + (size_t)k * y_pl + e, 1, 3);
#ifdef SPC_X86
        if (r->avx512)
          ps_tile_any(no, tv, g->direct, buf + (size_t)v0 * SPC_V, Ls, ns, inits, outs, cm + v0, co + v0);
        else
#endif
          ps_tile_c(no, tv, g->direct, buf + (size_t)v0 * SPC_V, Ls, ns, inits, outs, cm + v0, co + v0);
      }
      v0 += tv;
    }
    if (!g->direct) ps_expand(d, g, r->avx512, z, o0, o1, r->out + (size_t)n * y_img);
  }
}

static void ps_exec(const spconv_plan *p, conv_pass pass, const float *in, const float *w, const float *b,
                    float *out, void *scratch) {
  ps_run r;
  size_t off_counts, off_threads;
  ps_scratch(p, pass, &off_counts, &off_threads);
  r.p = p;
  r.g = ps_geom_of(p, pass);
#ifdef SPC_X86
  r.avx512 = !spc_portable && __builtin_cpu_supports("avx512f");
#else
  r.avx512 = 0;
#endif
  r.in = in;
  r.w = w;
  r.b = b;
  r.out = out;
  r.lists = (spc_ent *)scratch;
  r.counts = (int *)((char *)scratch + off_counts);
  r.threads = (char *)scratch + off_threads;
  kern_steal_init(&r.units, (int64_t)p->d.N * ps_units_per_image(&p->d, &r.g, p->nthreads), p->nthreads);
  kern_parallel2(p->nthreads, ps_s1, ps_s2, &r);
}

/* Can pass run whole-kernel lists (spc_k9) on the packed path? 3x3 kernels at stride 1 (forward:
 * not subsampled; backward-data: one phase). */
static int k9_shape(const spconv_plan *p, conv_pass pass) {
  const conv_desc *d = &p->d;
  return d->R == 3 && d->S == 3 && d->stride_h == 1 && d->stride_w == 1 &&
         (pass == CONV_FWD ? p->fsh == 1 && p->fsw == 1 : p->nph == 1);
}

/* Do the whole-kernel tiles beat the per-tap lists on a whole-kernel pattern with kdens of the kernels
 * kept? Measured (bench_spconv -k -p 0,2, 2 threads, batch 128, the two interleaved, two runs): on
 * ResNet-20's 3x3 stride-1 layers at 30% of the kernels, forward / backward-data, 32-32 14x14 20-21% /
 * 15-19% faster, 64-64 7x7 20-21% / 26-28%, 16-16 28x28 11-19% / -6..+8%; with lists of 32 or 64
 * channels up to 80% of the kernels (32-32 within 5%, 64-64 14-22% faster at 60%); with lists of 16
 * (16-16, 28x28 and a 14x14 probe) 7-20% slower from 45% of the kernels on, so those stay on the taps
 * above K9_SMALL_LIST_MAX_DENS. */
#define K9_SMALL_LIST 32          /* lists of fewer kernels than this... */
#define K9_SMALL_LIST_MAX_DENS 0.4 /* ...take the tiles only up to this share of the kernels */
static int k9_tiles_win(const spconv_plan *p, conv_pass pass, double kdens) {
  int nlist = pass == CONV_FWD ? p->d.C : p->d.K; /* kernels a list can hold */
  return k9_shape(p, pass) && (nlist >= K9_SMALL_LIST || kdens <= K9_SMALL_LIST_MAX_DENS);
}

/* The whole-kernel tiles' part of spconv_plan_describe ("" where the pass cannot take them). */
static const char *k9_describe(const spconv_plan *p, conv_pass pass) {
  if (!k9_shape(p, pass)) return "";
  return (pass == CONV_FWD ? p->d.C : p->d.K) >= K9_SMALL_LIST
             ? ", whole 3x3 kernels in whole-kernel tiles"
             : ", whole 3x3 kernels in whole-kernel tiles up to 40% of kernels"; /* K9_SMALL_LIST_MAX_DENS */
}

static void conv_exec(const spconv_plan *p, conv_pass pass, const float *in, const float *w, const float *b,
                      float *out, void *scratch) {
  SW_ASSERT(((uintptr_t)scratch % KERN_ALIGN) == 0);
  const conv_desc *d = &p->d;
  size_t rs = (size_t)d->R * d->S;
  int whole = 0;
  double kdens = 0; /* share of the (output, input) kernels holding a nonzero */
  if (rs > 1 && (p->nchw_below[pass] > 0 || k9_shape(p, pass))) {
    size_t nw = (size_t)d->K * d->C * rs, nz = 0, nkern = 0;
    for (size_t i = 0; i < nw; i += rs) { /* nonzeros, and R x S kernels holding any (NaN counts) */
      size_t z = 0;
      for (size_t j = 0; j < rs; j++) z += w[i + j] != 0.0f;
      nz += z, nkern += z != 0;
    }
    /* Nonzeros in whole kernels (structured-channel SWAT: at least 90% of the taps of every kernel that
     * has any) run packed: at stride 1 with 3x3 kernels as whole-kernel tiles (spc_k9_tile), else the
     * tap lists then read 9 taps of one channel in a row, which the packed path's aligned tiles turn
     * into 1.2-1.6x the NCHW-direct speed at 10-30% density (ResNet-20's 3x3 layers, bench_spconv -k;
     * README.md). */
    whole = nz >= 0.9 * (double)nkern * (double)rs;
    kdens = (double)nkern / ((double)d->K * d->C);
    if (!(whole && !p->forced) && spconv_plan_uses_nchw(p, pass, (double)nz / (double)nw)) {
      ps_exec(p, pass, in, w, b, out, scratch);
      return;
    }
  }
  conv_run r;
  r.p = p;
  r.pass = pass;
  r.l = conv_layout(p, pass);
  r.in = in;
  r.w = w;
  r.b = b;
  r.out = out;
  r.scratch = scratch;
  r.blocked = blocked_schedule(p->nb, p->nthreads);
  r.upb = conv_units_per_block(r.blocked, run_cout(&r));
  kern_steal_init(&r.units, (int64_t)p->nb * r.upb, p->nthreads);
#ifdef SPC_X86
  r.k9 = whole && k9_tiles_win(p, pass, kdens) && kern_cpu_avx512() && !spc_portable && !spc_no_k9;
#else
  r.k9 = 0;
#endif
  kern_parallel2(p->nthreads, conv_s1, conv_s2, &r);
}

void spconv_plan_fwd(const spconv_plan *p, const float *x, const float *w, const float *b, float *y, void *scratch) {
  conv_exec(p, CONV_FWD, x, w, b, y, scratch);
}

void spconv_plan_bwd_data(const spconv_plan *p, const float *dy, const float *w, float *dx, void *scratch) {
  conv_exec(p, CONV_BWD_DATA, dy, w, NULL, dx, scratch);
}

/* ---------------------------------------------------------------------------------------------
 * Gemm plan: forward Y^T[N][Mp] rows from the lists of W's rows over X^T[K][Mp]; backward-data
 * dX^T[K][Mp] rows from the lists of W's columns over dY^T[N][Mp]. */

int spgemm_plan_init(spgemm_plan *p, const gemm_desc *d, int nthreads, sw_err *e) {
  memset(p, 0, sizeof *p);
  int rc = gemm_desc_check(d, e);
  if (rc) return rc;
  if ((double)d->K * d->M >= 2e9 || (double)d->N * d->M >= 2e9)
    return sw_fail(e, SW_EINPUT, "sparse Gemm: %dx%d / %dx%d operands are too large (limit 2^31 floats)", d->M,
                   d->K, d->M, d->N);
  p->d = *d;
  p->nthreads = kern_threads_clamp(nthreads);
  p->nb = kern_cdiv(d->M, SPC_V);
  p->tc = kern_cdiv(p->nb, kern_cdiv(p->nb, SPC_ACC));
  return SW_OK;
}

void spgemm_plan_free(spgemm_plan *p) {
  if (p) memset(p, 0, sizeof *p);
}

typedef struct gemm_layout {
  int nin, nout, Mp;
  size_t off_out, off_lists, off_counts, total;
} gemm_layout;

static gemm_layout gemm_layout_make(const spgemm_plan *p, gemm_pass pass) {
  gemm_layout l;
  l.nin = pass == GEMM_FWD ? p->d.K : p->d.N;
  l.nout = pass == GEMM_FWD ? p->d.N : p->d.K;
  l.Mp = p->nb * SPC_V;
  l.off_out = fbytes((size_t)l.nin * l.Mp);
  l.off_lists = l.off_out + fbytes((size_t)l.nout * l.Mp);
  l.off_counts = l.off_lists + ebytes((size_t)l.nout * l.nin);
  l.total = l.off_counts + ibytes((size_t)l.nout);
  return l;
}

size_t spgemm_plan_scratch(const spgemm_plan *p, gemm_pass pass) {
  if (pass != GEMM_FWD && pass != GEMM_BWD_DATA) return 0;
  return gemm_layout_make(p, pass).total;
}

const char *spgemm_plan_describe(const spgemm_plan *p, char *buf, size_t n) {
  snprintf(buf, n, "sparse rows nb=%d tile %d", p->nb, p->tc);
  return buf;
}

typedef struct gemm_run {
  const spgemm_plan *p;
  gemm_pass pass;
  gemm_layout l;
  const float *in, *w, *b;
  float *out;
  char *scratch;
} gemm_run;

/* Output rows o (one per 16) of Y^T / dX^T into the out buffer, then transposed to row-major. */
SPC_HOT static void gemm_rows(const gemm_run *r, int o0, int o1) {
  const spgemm_plan *p = r->p;
  const gemm_layout *l = &r->l;
  const float *xt = (const float *)r->scratch;
  float *ot = (float *)(r->scratch + l->off_out);
  const spc_ent *lists = (const spc_ent *)(r->scratch + l->off_lists);
  const int *cnt = (const int *)(r->scratch + l->off_counts);
  int TC = p->tc;
  for (int o = o0; o < o1; o++)
    for (int m0 = 0; m0 < p->nb; m0 += TC) {
      int tc = imin(TC, p->nb - m0);
      spc_tile_any(1, tc, xt + (size_t)m0 * SPC_V, 0, SPC_V, lists + (size_t)o * l->nin, cnt[o],
                   r->b ? r->b[o] : 0.0f, ot + (size_t)o * l->Mp + (size_t)m0 * SPC_V, 0, SPC_V);
    }
}

static void gemm_stage1(void *ctx, int t, int T) {
  const gemm_run *r = ctx;
  const gemm_layout *l = &r->l;
  int M = r->p->d.M, nin = l->nin, nout = l->nout;
  spc_ent *lists = (spc_ent *)(r->scratch + l->off_lists);
  int *cnt = (int *)(r->scratch + l->off_counts);
  int64_t lo, hi;
  if (r->pass == GEMM_FWD) { /* row o of W[N][K] */
    kern_split(nout, t, T, &lo, &hi);
    for (int64_t o = lo; o < hi; o++)
      cnt[o] = scan_row(r->w + (size_t)o * nin, nin, l->Mp, NULL, lists + (size_t)o * nin);
  } else { /* column o of W[N][K], 16 columns at a time */
    kern_split(kern_cdiv(nout, 16), t, T, &lo, &hi);
    for (int64_t cb = lo; cb < hi; cb++)
      scan_cols(r->w, nin, nout, (int)cb * 16, imin(16, nout - (int)cb * 16), l->Mp, (size_t)nin, lists, cnt);
  }
  /* X^T[nin][Mp] from X[M][nin], in 16 x 16 tiles (rows M..Mp zero). */
  int nmb = kern_cdiv(M, 16), nib = kern_cdiv(nin, 16);
  float *xt = (float *)r->scratch;
  kern_split((int64_t)nmb * nib, t, T, &lo, &hi);
  for (int64_t i = lo; i < hi; i++) {
    int m0 = (int)(i / nib) * 16, i0 = (int)(i % nib) * 16;
    kern_transpose16(r->in + (size_t)m0 * nin + i0, nin, imin(16, M - m0), xt + (size_t)i0 * l->Mp + m0, l->Mp,
                     imin(16, nin - i0), 16, NULL);
  }
}

static void gemm_stage2(void *ctx, int t, int T) {
  const gemm_run *r = ctx;
  const gemm_layout *l = &r->l;
  int M = r->p->d.M, nout = l->nout;
  int64_t lo, hi;
  kern_split(kern_cdiv(nout, 16), t, T, &lo, &hi);
  const float *ot = (const float *)(r->scratch + l->off_out);
  for (int64_t ob = lo; ob < hi; ob++) {
    int o0 = (int)ob * 16, no = imin(16, nout - o0);
    gemm_rows(r, o0, o0 + no);
    for (int m0 = 0; m0 < M; m0 += 16)
      kern_transpose16(ot + (size_t)o0 * l->Mp + m0, l->Mp, no, r->out + (size_t)m0 * nout + o0, nout,
                       imin(16, M - m0), no, NULL);
  }
}

static void gemm_exec(const spgemm_plan *p, gemm_pass pass, const float *in, const float *w, const float *b,
                      float *out, void *scratch) {
  SW_ASSERT(((uintptr_t)scratch % KERN_ALIGN) == 0);
  gemm_run r;
  r.p = p;
  r.pass = pass;
  r.l = gemm_layout_make(p, pass);
  r.in = in;
  r.w = w;
  r.b = b;
  r.out = out;
  r.scratch = scratch;
  kern_parallel2(p->nthreads, gemm_stage1, gemm_stage2, &r);
}

void spgemm_plan_fwd(const spgemm_plan *p, const float *x, const float *w, const float *b, float *y, void *scratch) {
  gemm_exec(p, GEMM_FWD, x, w, b, y, scratch);
}

void spgemm_plan_bwd_data(const spgemm_plan *p, const float *dy, const float *w, float *dx, void *scratch) {
  gemm_exec(p, GEMM_BWD_DATA, dy, w, NULL, dx, scratch);
}

/* ---------------------------------------------------------------------------------------------
 * Crossover model, calibrated with bench_spconv (1 thread, fastest runs, ResNet-20/LeNet-5 shapes at
 * densities 0 and 10%; README.md):
 *   dense  time = SPC_FIXED_S + flops / (SPC_DENSE_RATE, _LOW for 1x1 and C == 1, _GEMM)
 *   sparse time = SPC_FIXED_S + bytes / SPC_BW + density * flops / SPC_SPARSE_RATE
 * bytes = what the sparse pass streams besides the multiply: the input read, packed (written, read
 * back), the output rows written and transposed, and the weight scan. Measured: the density-0 time
 * gave 40-45 GB/s through the transforms (l1 16-16 fwd 0.81 ms, l3 64-64 fwd 0.23 ms), the slope
 * between densities 0 and 0.1 about 95 GFLOP/s of nonzero work per thread, the dense plans 140-180
 * GFLOP/s per thread (1x1 and C = 1 layers 50-60, Gemm ~200). Checked at 2 threads against the
 * measured break-even: l1 16-16 model 45% (sparse still 1.14x faster at 51%), l3 64-64 58% (1.32x
 * at 50%), fc1 30% (measured ~15%: for 10-60 us layers the fixed costs dominate and are rough). Rates are per thread, scaled by the thread count; the crossover is the
 * density where both times are equal, clamped to [0, 1]. */
#define SPC_DENSE_RATE 150e9 /* dense conv_plan, FLOP/s per thread (3x3/5x5 with C >= 2) */
#define SPC_DENSE_RATE_LOW 50e9 /* dense 1x1 and C == 1 convs (memory-bound / direct kernels) */
#define SPC_DENSE_RATE_GEMM 200e9 /* dense gemm_plan */
#define SPC_SPARSE_RATE 95e9 /* sparse tiles, nonzero FLOP/s per thread */
#define SPC_BW 40e9          /* bytes/s per thread through the transforms */
#define SPC_FIXED_S 10e-6    /* fork, barrier and per-call overhead (s) */

static double crossover(double flops, double dense_rate, double bytes, int T) {
  double t_dense = SPC_FIXED_S + flops / (dense_rate * T);
  double t_fix = SPC_FIXED_S + bytes / (SPC_BW * T);
  double per_density = flops / (SPC_SPARSE_RATE * T);
  double dstar = (t_dense - t_fix) / per_density;
  return dstar < 0 ? 0 : dstar > 1 ? 1 : dstar;
}

/* Bytes the 16-image-packed pass streams besides the multiply (see above). */
static double pk_bytes(const spconv_plan *p, conv_pass pass) {
  const conv_desc *d = &p->d;
  double xin = (double)d->N * d->C * d->H * d->W, yout = (double)d->N * d->K * d->P * d->Q;
  double packed = pass == CONV_FWD ? (double)p->nb * d->C * p->Hp * p->Wp * SPC_V
                                   : (double)p->nb * d->K * p->Pp * p->Qp * SPC_V;
  double src = pass == CONV_FWD ? xin : yout, dst = pass == CONV_FWD ? yout : xin;
  return 4.0 * (src + 2 * packed + 2 * dst) + 4.0 * d->K * d->C * d->R * d->S;
}

/* NCHW-direct (polyphase) model, per thread, fitted to bench_spconv on ResNet-20's stride-2 3x3
 * layers (16-32 28x28 and 32-64 14x14, forward and backward-data, densities 5/10/20/30%, 2 threads,
 * fastest of 151 runs; README.md), then checked on every stride-1 and 1x1 layer of ResNet-20 and LeNet-5
 * at 5-50% (the memory floor and the stride-1 copy added then):
 *   time = max(N * (sweep chunks * (SPC_PS_SPLIT_S split, SPC_PS_COPY_S copy or expansion)
 *                   + lists * (bands * SPC_PS_BAND_S + vectors * SPC_PS_VEC_S)),
 *              bytes of x and y (or dY and dX) / SPC_PS_BW)
 *        + density * flops * (1 + SPC_PS_MISALIGN * misaligned) / (SPC_PS_RATE * lane use)
 * sweep chunks: forward strided C*(rows split)*ceil(W/32) (the split: a chunk = 32 input columns), stride
 * 1 C*H*ceil(W/16) (the copy), backward-data K*P*ceil(Q/16) + (strided) C*H*ceil(W/32) (the dY copy and
 * the dX expansion); they carry the caller's
 * tensors in and out, and were most of the fixed time (the per-image intercepts of all four passes were
 * 2.7-3.2 us). The nonzero work's slope grows with the share of taps whose loads are not 64-byte aligned
 * ("misaligned", from the geometry: 4/9 on the 28x28 layer with pitch 15, 8/9 forward on the 14x14
 * one with pitch 8; slopes 2.3-2.4 / 3.2 / 3.8 ms per unit density single-thread-equivalent at 4/9, 5/9,
 * 8/9). lane use = useful output positions / computed flat positions (forward P*Q / (16*nvec),
 * backward-data H*W over all phases). */
#define SPC_PS_SPLIT_S 5e-9   /* s per split chunk (forward) */
#define SPC_PS_COPY_S 2.5e-9  /* s per dY copy or dX expansion chunk (backward-data) */
#define SPC_PS_BAND_S 5e-9    /* s per (image, list, band) */
#define SPC_PS_VEC_S 0.7e-9   /* s per (image, list, output vector) */
#define SPC_PS_RATE 165e9     /* nonzero FLOP/s per thread, all lanes used, all loads aligned */
#define SPC_PS_MISALIGN 1.18  /* extra nonzero cost of a tap whose loads cross cache lines */
#define SPC_PS_BW 30e9        /* bytes/s per thread of the caller's input read and output written */

/* Share of taps (weights of a dense kernel) whose loads in the strided path are not 64-byte aligned. */
static double ps_misaligned(const spconv_plan *p, const ps_geom *g) {
  const conv_desc *d = &p->d;
  int n = 0, mis = 0;
  if (g->pass == CONV_FWD) {
    for (int r = 0; r < d->R; r++)
      for (int s = 0; s < d->S; s++) {
        int u = r - d->pad_t, v = s - d->pad_l;
        int off = (g->top + fdiv_floor(u, g->sh)) * g->pitch + g->left + fdiv_floor(v, g->sw);
        n++, mis += off % SPC_V != 0;
      }
  } else {
    for (int r = 0; r < d->R; r++)
      for (int s = 0; s < d->S; s++) {
        int ph = r % g->sh, pw = s % g->sw;
        int a0 = (fmod_floor(ph - d->pad_t, g->sh) + d->pad_t) / g->sh;
        int b0 = (fmod_floor(pw - d->pad_l, g->sw) + d->pad_l) / g->sw;
        int off = (g->top + a0 - r / g->sh) * g->pitch + g->left + b0 - s / g->sw;
        n++, mis += off % SPC_V != 0;
      }
  }
  return (double)mis / n;
}

static void ps_model(const spconv_plan *p, conv_pass pass, double *t0, double *t1) {
  const conv_desc *d = &p->d;
  ps_geom g = ps_geom_of(p, pass);
  double lanes = pass == CONV_FWD ? (double)d->P * d->Q / (16.0 * g.nvec)
                                  : (double)d->H * d->W / (16.0 * g.nvec * g.nph);
  int hused = 0; /* input rows the forward split reads (rows of row phases no tap reads are skipped) */
  for (int h = 0; h < d->H; h++) hused += ps_phase_used(h % g.sh, d->pad_t, g.sh, d->R);
  double xrows = (double)d->C * d->H * kern_cdiv(d->W, 32), yrows = (double)d->K * d->P * kern_cdiv(d->Q, 16);
  double sweep = pass == CONV_BWD_DATA ? (yrows + (g.direct ? 0.0 : xrows)) * SPC_PS_COPY_S
                 : g.vert ? (double)d->C * d->H * kern_cdiv(d->W, 16) * SPC_PS_COPY_S
                          : (double)d->C * hused * kern_cdiv(d->W, 32) * SPC_PS_SPLIT_S;
  *t0 = (double)d->N * (sweep + g.nout * (kern_cdiv(g.nvec, g.tvmax) * SPC_PS_BAND_S + g.nvec * SPC_PS_VEC_S));
  double bytes = 4.0 * d->N * ((double)d->C * d->H * d->W + (double)d->K * d->P * d->Q);
  if (bytes / SPC_PS_BW > *t0) *t0 = bytes / SPC_PS_BW; /* small layers: the caller's tensors' traffic */
  *t1 = conv_desc_flops(d) * (1.0 + SPC_PS_MISALIGN * ps_misaligned(p, &g)) / (SPC_PS_RATE * lanes);
}

/* Density below which NCHW-direct beats 16-image-packed for pass (both models per thread: the
 * thread count cancels, so the path never depends on nthreads); > 1 when it always wins. */
static double nchw_below_model(const spconv_plan *p, conv_pass pass) {
  double n0, n1, k0 = pk_bytes(p, pass) / SPC_BW, k1 = conv_desc_flops(&p->d) / SPC_SPARSE_RATE;
  ps_model(p, pass, &n0, &n1);
  if (n1 <= k1) return n0 <= k0 ? 2.0 : 0.0;
  double dstar = (k0 - n0) / (n1 - k1);
  return dstar <= 0 ? 0.0 : dstar > 1 ? 2.0 : dstar;
}

double spconv_plan_crossover(const spconv_plan *p, conv_pass pass) {
  if (pass != CONV_FWD && pass != CONV_BWD_DATA) return 0.0;
  const conv_desc *d = &p->d;
  double rate = d->R * d->S == 1 || d->C == 1 ? SPC_DENSE_RATE_LOW : SPC_DENSE_RATE;
  double flops = conv_desc_flops(d), x_pk = crossover(flops, rate, pk_bytes(p, pass), p->nthreads);
  double below = p->nchw_below[pass];
  if (below <= 0) return x_pk;
  /* the NCHW-direct path runs below `below`: if it meets the dense time there, that is the crossover */
  int T = p->nthreads;
  double n0, n1;
  ps_model(p, pass, &n0, &n1);
  double t_dense = SPC_FIXED_S + flops / (rate * T);
  double x_nt = (t_dense - SPC_FIXED_S - n0 / T) / (n1 / T);
  x_nt = x_nt < 0 ? 0 : x_nt > 1 ? 1 : x_nt;
  return x_nt < below ? x_nt : x_pk;
}

double spgemm_plan_crossover(const spgemm_plan *p, gemm_pass pass) {
  if (pass != GEMM_FWD && pass != GEMM_BWD_DATA) return 0.0;
  const gemm_desc *d = &p->d;
  double nin = pass == GEMM_FWD ? d->K : d->N, nout = pass == GEMM_FWD ? d->N : d->K;
  double Mp = (double)p->nb * SPC_V;
  double bytes = 4.0 * (d->M * nin + 2 * Mp * nin + 2 * Mp * nout) + 4.0 * d->N * d->K;
  return crossover(gemm_desc_flops(d), SPC_DENSE_RATE_GEMM, bytes, p->nthreads);
}
