/* Direct convolution for one input channel per group (depthwise, and C = 1 layers such as LeNet's
 * first conv), in NCHW. Loops are compiled for AVX-512/AVX2/baseline and picked at load time.
 *
 * Stride 1: each plane is copied, zero-padded, into a per-thread scratch plane of pitch Wp, and
 * every tap (r, s) becomes one long vector loop over the flattened plane, out[i] += w * in[i + off]
 * (i runs over P rows of pitch Wp; the Wp - Q columns past each row end are discarded). With
 * AVX-512 the forward keeps tiles of up to 24 sums in registers instead, up to 8 filters times up to
 * 8 output vectors (the same sums, bit for bit), and writes the output once; the weight gradient
 * (3x3, 5x5) reads dY in place, row by row, and sums up to 3 filters of one input plane per pass
 * (27 sums in registers: each input vector loaded once for them). Strided convolutions run row by
 * row with bounds worked out per tap.
 *
 * Every output element is owned by one thread and summed in a fixed order, so the results do not
 * depend on the thread count. */
#include <string.h>

#include "runtime/kernels/conv_internal.h"
#include "runtime/kernels/kern_internal.h"

/* sum of x[i] for i < n, in a fixed (vectorised) order. */
KERN_CLONES static float row_sum(int64_t n, const float *restrict x) {
  float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; i++) acc += x[i];
  return acc;
}

/* The output columns q whose input column q*sw - pad_l + s*dil_w lies inside [0, W). */
static void q_range(const conv_desc *d, int s, int *qlo, int *qhi) {
  int off = s * d->dil_w - d->pad_l; /* input column of q = 0 */
  int lo = off >= 0 ? 0 : (-off + d->stride_w - 1) / d->stride_w;
  int hi = d->W - 1 - off < 0 ? 0 : (d->W - 1 - off) / d->stride_w + 1;
  if (hi > d->Q) hi = d->Q;
  *qlo = lo;
  *qhi = hi > lo ? hi : lo;
}

/* q_range for every tap column s: qr[2s], qr[2s+1] (computed once per call, not per row). */
static void q_ranges(const conv_desc *d, int *qr) {
  for (int s = 0; s < d->S; s++) q_range(d, s, &qr[2 * s], &qr[2 * s + 1]);
}

/* One output plane: yp = bias + sum over (r, s) of w[r][s] * shifted input plane. */
KERN_CLONES static void plane_fwd(const conv_desc *d, const int *qr, const float *restrict xp,
                                  const float *restrict wk, float bias, float *restrict yp) {
  int sw = d->stride_w;
  for (int i = 0; i < d->P * d->Q; i++) yp[i] = bias;
  for (int oh = 0; oh < d->P; oh++) {
    float *restrict yrow = yp + (size_t)oh * d->Q;
    for (int r = 0; r < d->R; r++) {
      int h = oh * d->stride_h - d->pad_t + r * d->dil_h;
      if (h < 0 || h >= d->H) continue;
      for (int s = 0; s < d->S; s++) {
        int lo = qr[2 * s], hi = qr[2 * s + 1];
        const float *restrict xrow = xp + (size_t)h * d->W + (s * d->dil_w - d->pad_l);
        float a = wk[r * d->S + s];
        if (sw == 1)
          for (int q = lo; q < hi; q++) yrow[q] += a * xrow[q];
        else
          for (int q = lo; q < hi; q++) yrow[q] += a * xrow[(size_t)q * sw];
      }
    }
  }
}

/* Adds the contribution of one dY plane (through one filter) to the dX plane it came from. */
KERN_CLONES static void plane_bwd_data(const conv_desc *d, const int *qr, const float *restrict dyp,
                                       const float *restrict wk, float *restrict dxp) {
  int sw = d->stride_w;
  for (int oh = 0; oh < d->P; oh++) {
    const float *restrict dyrow = dyp + (size_t)oh * d->Q;
    for (int r = 0; r < d->R; r++) {
      int h = oh * d->stride_h - d->pad_t + r * d->dil_h;
      if (h < 0 || h >= d->H) continue;
      for (int s = 0; s < d->S; s++) {
        int lo = qr[2 * s], hi = qr[2 * s + 1];
        float *restrict dxrow = dxp + (size_t)h * d->W + (s * d->dil_w - d->pad_l);
        float a = wk[r * d->S + s];
        if (sw == 1)
          for (int q = lo; q < hi; q++) dxrow[q] += a * dyrow[q];
        else
          for (int q = lo; q < hi; q++) dxrow[(size_t)q * sw] += a * dyrow[q];
      }
    }
  }
}

/* acc[r*S+s] = sum over the plane of dY * shifted X, for one (image, channel). */
KERN_CLONES static void plane_bwd_weight(const conv_desc *d, const int *qr, const float *restrict xp,
                                         const float *restrict dyp, float *restrict acc) {
  int sw = d->stride_w;
  for (int r = 0; r < d->R; r++)
    for (int s = 0; s < d->S; s++) {
      int lo = qr[2 * s], hi = qr[2 * s + 1];
      float sum = 0.0f;
      for (int oh = 0; oh < d->P; oh++) {
        int h = oh * d->stride_h - d->pad_t + r * d->dil_h;
        if (h < 0 || h >= d->H) continue;
        const float *restrict xrow = xp + (size_t)h * d->W + (s * d->dil_w - d->pad_l);
        const float *restrict dyrow = dyp + (size_t)oh * d->Q;
        if (sw == 1) {
#pragma omp simd reduction(+ : sum)
          for (int q = lo; q < hi; q++) sum += dyrow[q] * xrow[q];
        } else {
#pragma omp simd reduction(+ : sum)
          for (int q = lo; q < hi; q++) sum += dyrow[q] * xrow[(size_t)q * sw];
        }
      }
      acc[r * d->S + s] = sum;
    }
}

/* Copies an Hs x Ws plane into an Hp x Wp zero-filled plane at offset (ot, ol) (negative: crop). */
static void pad_plane(const float *src, int Hs, int Ws, float *dst, int Hp, int Wp, int ot, int ol) {
  memset(dst, 0, sizeof(float) * Hp * Wp);
  int c0 = ol > 0 ? ol : 0, n = Ws - (c0 - ol);
  if (n > Wp - c0) n = Wp - c0;
  for (int h = 0; h < Hp && n > 0; h++) {
    int hs = h - ot;
    if (hs < 0 || hs >= Hs) continue;
    memcpy(dst + (size_t)h * Wp + c0, src + (size_t)hs * Ws + (c0 - ol), sizeof(float) * n);
  }
}

/* acc[i] += sum over taps of w[r][s] * in[i + r*dh*Wp + s*dw] for i < n (w flipped if flip). */
KERN_CLONES static void flat_taps(int n, const float *restrict in, int Wp, const conv_desc *d, const float *restrict wk,
                                  int flip, float *restrict acc) {
  for (int r = 0; r < d->R; r++)
    for (int s = 0; s < d->S; s++) {
      float a = flip ? wk[(d->R - 1 - r) * d->S + (d->S - 1 - s)] : wk[r * d->S + s];
      const float *restrict x = in + (size_t)r * d->dil_h * Wp + (size_t)s * d->dil_w;
      for (int i = 0; i < n; i++) acc[i] += a * x[i];
    }
}

/* acc[r*S+s] = sum over i < n of g[i] * in[i + r*dh*Wp + s*dw]. */
KERN_CLONES static void flat_dots(int n, const float *restrict in, int Wp, const conv_desc *d, const float *restrict g,
                                  float *restrict acc) {
  for (int r = 0; r < d->R; r++)
    for (int s = 0; s < d->S; s++) {
      const float *restrict x = in + (size_t)r * d->dil_h * Wp + (size_t)s * d->dil_w;
      float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
      for (int i = 0; i < n; i++) sum += g[i] * x[i];
      acc[r * d->S + s] = sum;
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* Filters a pass of planes_fwd_avx512 at most, vectors a tile at most, sums a tile at most, and the
 * vectors of a tile for KB filters (with the KB weights and an input vector, within the 32 zmm). */
#define FWD_KB_MAX 8
#define FWD_V_MAX 8
#define FWD_ACC_MAX 24
#define FWD_V(KB) ((KB) <= 3 ? 8 : 24 / (KB))

/* KB output planes (filters wk[0..KB)) from one padded input plane, AVX-512. The output planes'
 * 16-column vectors (row by row, ceil(Q/16) a row, the last one masked) are taken V at a time; for
 * each such tile the KB*V sums are kept in registers: bias, then the taps in (r, s) order, each added
 * as acc + w*x rounded twice, the sums flat_taps makes (no FMA: ISO C does not contract), then stored
 * straight to the planes yp[k]. Every loaded input vector feeds the KB filters, and the KB*V sums are
 * independent chains: with one filter and one vector a pass (the last layout), each tap waited for the
 * add before it (LeNet's conv1, 6 filters as 4 + 1 + 1: 0.35 ms a step forward). */
static inline __attribute__((target("avx512f"), always_inline)) void planes_fwd_tile(
    const conv_desc *d, const float *xpad, int Wp, const float *const *wk, const float *bias, float *const *yp,
    int j0, const int KB, const int V) {
  int nq = (d->Q + 15) / 16, nvec = d->P * nq;
  const float *xb[FWD_V_MAX]; /* fixed sizes: an array sized KB * V would be a VLA, kept in memory */
  size_t yo[FWD_V_MAX];       /* the vector's offset in each output plane */
  __mmask16 m[FWD_V_MAX];
_Pragma("GCC unroll 8")
  for (int v = 0; v < V; v++) {
    int j = j0 + v, oh = j < nvec ? j / nq : 0, q0 = j < nvec ? j % nq * 16 : 0;
    m[v] = j >= nvec ? 0 : d->Q - q0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (d->Q - q0)) - 1);
    xb[v] = xpad + (size_t)oh * Wp + q0;
    yo[v] = (size_t)oh * d->Q + q0;
  }
  __m512 acc[FWD_ACC_MAX];
_Pragma("GCC unroll 8")
  for (int k = 0; k < KB; k++)
_Pragma("GCC unroll 8")
    for (int v = 0; v < V; v++) acc[k * V + v] = _mm512_set1_ps(bias[k]);
  for (int r = 0; r < d->R; r++)
    for (int s = 0; s < d->S; s++) {
      size_t off = (size_t)r * d->dil_h * Wp + (size_t)s * d->dil_w;
      __m512 w[FWD_KB_MAX];
_Pragma("GCC unroll 8")
      for (int k = 0; k < KB; k++) w[k] = _mm512_set1_ps(wk[k][r * d->S + s]);
_Pragma("GCC unroll 8")
      for (int v = 0; v < V; v++) {
        __m512 x = _mm512_maskz_loadu_ps(m[v], xb[v] + off);
_Pragma("GCC unroll 8")
        for (int k = 0; k < KB; k++) acc[k * V + v] = _mm512_add_ps(acc[k * V + v], _mm512_mul_ps(w[k], x));
      }
    }
_Pragma("GCC unroll 8")
  for (int k = 0; k < KB; k++)
_Pragma("GCC unroll 8")
    for (int v = 0; v < V; v++) _mm512_mask_storeu_ps(yp[k] + yo[v], m[v], acc[k * V + v]);
}


/* planes_fwd_tile over every tile of the planes, for KB (1..FWD_KB_MAX) filters. */
__attribute__((target("avx512f"))) static void planes_fwd_avx512(const conv_desc *d, const float *xpad, int Wp,
                                                                 const float *const *wk, const float *bias,
                                                                 float *const *yp, int KB) {
  int nvec = d->P * ((d->Q + 15) / 16);
#define FWD_CASE(K)                                                                                                \
  case K:                                                                                                          \
    for (int j0 = 0; j0 < nvec; j0 += FWD_V(K)) planes_fwd_tile(d, xpad, Wp, wk, bias, yp, j0, K, FWD_V(K));     \
    return;
  switch (KB) {
    FWD_CASE(1) FWD_CASE(2) FWD_CASE(3) FWD_CASE(4) FWD_CASE(5) FWD_CASE(6) FWD_CASE(7) FWD_CASE(8)
  default: break;
  }
#undef FWD_CASE
  SW_ASSERT(!"conv_direct: filters per pass out of range");
}
#endif

#if defined(__x86_64__) && defined(__GNUC__)
/* Filters of one input plane whose weight gradients rows_dots_avx512 sums in one pass (3x3: 27 sums). */
#define DW_KB 3

/* The weight gradients of KB filters reading one padded input plane (in, pitch Wp) for RS taps
 * (offsets off[]), from their dY planes g[b] read in place (P x Q, no copy): row by row, 16 columns
 * at a time (the last masked), each input vector loaded once for the KB filters; acc[b*RS + k].
 * Per-lane FMA sums, then _mm512_reduce_add_ps: other rounding than flat_dots, within the tests'
 * tolerance. */
static inline __attribute__((target("avx512f"), always_inline)) void rows_dots_avx512(int P, int Q, const float *in,
                                                                                      int Wp, const int *off,
                                                                                      const float *const *g,
                                                                                      float *acc, const int RS,
                                                                                      const int KB) {
  __m512 a[27]; /* KB * RS <= 27, in registers with the loops unrolled */
_Pragma("GCC unroll 27")
  for (int k = 0; k < KB * RS; k++) a[k] = _mm512_setzero_ps();
  for (int p = 0; p < P; p++) {
    const float *xr = in + (size_t)p * Wp;
    for (int q0 = 0; q0 < Q; q0 += 16) {
      __mmask16 m = (__mmask16)(Q - q0 >= 16 ? 0xffffu : (1u << (Q - q0)) - 1u);
      __m512 gv[DW_KB];
_Pragma("GCC unroll 3")
      for (int b = 0; b < KB; b++) gv[b] = _mm512_maskz_loadu_ps(m, g[b] + (size_t)p * Q + q0);
_Pragma("GCC unroll 25")
      for (int k = 0; k < RS; k++) {
        __m512 xv = _mm512_maskz_loadu_ps(m, xr + off[k] + q0);
_Pragma("GCC unroll 3")
        for (int b = 0; b < KB; b++) a[b * RS + k] = _mm512_fmadd_ps(gv[b], xv, a[b * RS + k]);
      }
    }
  }
_Pragma("GCC unroll 27")
  for (int k = 0; k < KB * RS; k++) acc[k] = _mm512_reduce_add_ps(a[k]);
}

/* rows_dots_avx512 for nk (1..DW_KB) filters of 3x3 taps, or one filter of 5x5; 0 for other taps. */
static __attribute__((target("avx512f"))) int rows_dots(const conv_desc *d, const float *in, int Wp,
                                                       const float *const *g, int nk, float *acc) {
  int RS = d->R * d->S, off[25];
  if (RS != 9 && RS != 25) return 0;
  for (int r = 0; r < d->R; r++)
    for (int s = 0; s < d->S; s++) off[r * d->S + s] = r * d->dil_h * Wp + s * d->dil_w;
  if (RS == 25)
    for (int b = 0; b < nk; b++) rows_dots_avx512(d->P, d->Q, in, Wp, off, g + b, acc + 25 * b, 25, 1);
  else if (nk == 3)
    rows_dots_avx512(d->P, d->Q, in, Wp, off, g, acc, 9, 3);
  else if (nk == 2)
    rows_dots_avx512(d->P, d->Q, in, Wp, off, g, acc, 9, 2);
  else
    rows_dots_avx512(d->P, d->Q, in, Wp, off, g, acc, 9, 1);
  return 1;
}

#endif

static int direct_portable; /* tests: 1 runs the plain C loops even where AVX-512 is there */

void conv_direct_use_portable(int on) { direct_portable = on; }

/* Stride-1 geometry: forward input plane padded to Hp x Wp; bwd-data dY plane padded to Hq x Wq. */
static int flat_ok(const conv_desc *d) { return d->stride_h == 1 && d->stride_w == 1; }
static int fwd_Hp(const conv_desc *d) { return d->H + d->pad_t + d->pad_b; }
static int fwd_Wp(const conv_desc *d) { return d->W + d->pad_l + d->pad_r; }
static int bwd_Hq(const conv_desc *d) { return d->H + (d->R - 1) * d->dil_h; }
static int bwd_Wq(const conv_desc *d) { return d->W + (d->S - 1) * d->dil_w; }

size_t conv_direct_scratch(const conv_desc *d, int nthreads) {
  if (!flat_ok(d)) return 0;
  size_t a = (size_t)fwd_Hp(d) * fwd_Wp(d) + (size_t)d->P * fwd_Wp(d);
  size_t b = (size_t)bwd_Hq(d) * bwd_Wq(d) + (size_t)d->H * bwd_Wq(d);
  size_t per = kern_align_up(sizeof(float) * (a > b ? a : b));
  return per * nthreads;
}

/* Part t's scratch plane (parts run one at a time on a thread, so a part owns its slot). */
static float *part_buf(const conv_plan *p, void *scratch, int t) {
  size_t per = conv_direct_scratch(&p->d, p->nthreads) / p->nthreads;
  SW_ASSERT(t < p->nthreads);
  return (float *)((char *)scratch + per * t);
}

/* Operands of one direct-conv pass, shared by its workers. */
typedef struct direct_job {
  const conv_plan *p;       /* the plan (its scratch layout), NULL for conv_bias_grad */
  const conv_desc *d;
  const int *qr;            /* q_ranges */
  const float *x, *w, *b, *dy;
  float *y, *dx, *dw, *db;
  void *scratch;
  int simd;
} direct_job;

static void fwd_part(void *ctx, int t, int T) {
  const direct_job *j = ctx;
  const conv_desc *d = j->d;
  const float *x = j->x, *w = j->w, *b = j->b;
  float *y = j->y;
  int Kg = d->K / d->groups, flat = flat_ok(d);
  int Hp = fwd_Hp(d), Wp = fwd_Wp(d), nflat = (d->P - 1) * Wp + d->Q;
  float *xpad = flat ? part_buf(j->p, j->scratch, t) : NULL, *acc = flat ? xpad + (size_t)Hp * Wp : NULL;
  int64_t lo, hi;
  kern_split((int64_t)d->N * d->C, t, T, &lo, &hi); /* one input plane per group */
  for (int64_t pl = lo; pl < hi; pl++) {
    int n = (int)(pl / d->C), g = (int)(pl % d->C);
    const float *xp = x + (size_t)pl * d->H * d->W;
    if (flat) pad_plane(xp, d->H, d->W, xpad, Hp, Wp, d->pad_t, d->pad_l);
    int kl = 0;
#if defined(__x86_64__) && defined(__GNUC__)
    if (flat && j->simd) /* register tiles, up to FWD_KB_MAX filters a pass over the input plane */
      for (int kb; kl < Kg; kl += kb) {
        const float *wk[FWD_KB_MAX];
        float *yp[FWD_KB_MAX], bias[FWD_KB_MAX];
        kb = Kg - kl < FWD_KB_MAX ? Kg - kl : FWD_KB_MAX;
        for (int i = 0; i < kb; i++) {
          int k = g * Kg + kl + i;
          wk[i] = w + (size_t)k * d->R * d->S;
          yp[i] = y + ((size_t)n * d->K + k) * d->P * d->Q;
          bias[i] = b ? b[k] : 0.0f;
        }
        planes_fwd_avx512(d, xpad, Wp, wk, bias, yp, kb);
      }
#endif
    for (; kl < Kg; kl++) {
      int k = g * Kg + kl;
      const float *wk = w + (size_t)k * d->R * d->S;
      float *yp = y + ((size_t)n * d->K + k) * d->P * d->Q, bias = b ? b[k] : 0.0f;
      if (!flat) {
        plane_fwd(d, j->qr, xp, wk, bias, yp);
        continue;
      }
      for (int i = 0; i < nflat; i++) acc[i] = bias;
      flat_taps(nflat, xpad, Wp, d, wk, 0, acc);
      for (int oh = 0; oh < d->P; oh++) memcpy(yp + (size_t)oh * d->Q, acc + (size_t)oh * Wp, sizeof(float) * d->Q);
    }
  }
}

void conv_direct_fwd(const conv_plan *p, const float *x, const float *w, const float *b, float *y, void *scratch) {
  int qr[2 * p->d.S];
  q_ranges(&p->d, qr);
  direct_job j = {.p = p, .d = &p->d, .qr = qr, .x = x, .w = w, .b = b, .y = y, .scratch = scratch,
                  .simd = !direct_portable && kern_cpu_avx512()};
  kern_parallel(p->nthreads, fwd_part, &j);
}

static void bwd_data_part(void *ctx, int t, int T) {
  const direct_job *j = ctx;
  const conv_desc *d = j->d;
  int Kg = d->K / d->groups, flat = flat_ok(d);
  int Hq = bwd_Hq(d), Wq = bwd_Wq(d), nflat = (d->H - 1) * Wq + d->W;
  float *dypad = flat ? part_buf(j->p, j->scratch, t) : NULL, *acc = flat ? dypad + (size_t)Hq * Wq : NULL;
  int64_t lo, hi;
  kern_split((int64_t)d->N * d->C, t, T, &lo, &hi); /* C == groups */
  for (int64_t pl = lo; pl < hi; pl++) {
    int n = (int)(pl / d->C), g = (int)(pl % d->C);
    float *dxp = j->dx + (size_t)pl * d->H * d->W;
    if (flat)
      for (int i = 0; i < nflat; i++) acc[i] = 0.0f;
    else
      memset(dxp, 0, sizeof(float) * d->H * d->W);
    for (int kl = 0; kl < Kg; kl++) {
      int k = g * Kg + kl;
      const float *dyp = j->dy + ((size_t)n * d->K + k) * d->P * d->Q, *wk = j->w + (size_t)k * d->R * d->S;
      if (!flat) {
        plane_bwd_data(d, j->qr, dyp, wk, dxp);
        continue;
      }
      /* dX is the correlation of dY, padded by (R-1)*dil - pad, with the flipped filter. */
      pad_plane(dyp, d->P, d->Q, dypad, Hq, Wq, (d->R - 1) * d->dil_h - d->pad_t, (d->S - 1) * d->dil_w - d->pad_l);
      flat_taps(nflat, dypad, Wq, d, wk, 1, acc);
    }
    if (flat)
      for (int h = 0; h < d->H; h++) memcpy(dxp + (size_t)h * d->W, acc + (size_t)h * Wq, sizeof(float) * d->W);
  }
}

void conv_direct_bwd_data(const conv_plan *p, const float *dy, const float *w, float *dx, void *scratch) {
  int qr[2 * p->d.S];
  q_ranges(&p->d, qr);
  direct_job j = {.p = p, .d = &p->d, .qr = qr, .w = w, .dy = dy, .dx = dx, .scratch = scratch};
  kern_parallel(p->nthreads, bwd_data_part, &j);
}

/* Filters a worker of conv_direct_bwd_weight sums at once: each input plane is padded once for them. */
#define DW_KCHUNK 32

/* Worker t's filters of conv_direct_bwd_weight, DW_KCHUNK at a time. */
static void bwd_weight_part(void *ctx, int t, int T) {
  const direct_job *j = ctx;
  const conv_desc *d = j->d;
  int Kg = d->K / d->groups, RS = d->R * d->S, flat = flat_ok(d);
  int Hp = fwd_Hp(d), Wp = fwd_Wp(d), nflat = (d->P - 1) * Wp + d->Q;
  int64_t k0, k1;
  kern_split(d->K, t, T, &k0, &k1);
  float *xpad = flat ? part_buf(j->p, j->scratch, t) : NULL, *gy = flat ? xpad + (size_t)Hp * Wp : NULL;
#if defined(__x86_64__) && defined(__GNUC__)
  int simd = !direct_portable && kern_cpu_avx512() && (RS == 9 || RS == 25);
#endif
  double acc[DW_KCHUNK][RS];
  float part[RS];
  for (int64_t kc = k0; kc < k1; kc += DW_KCHUNK) {
    int nk = k1 - kc < DW_KCHUNK ? (int)(k1 - kc) : DW_KCHUNK;
    for (int i = 0; i < nk; i++)
      for (int r = 0; r < RS; r++) acc[i][r] = 0.0;
    /* images outer, so that an input plane is padded once for all the filters of its group here;
     * each filter still adds its images' partial sums in image order */
    for (int n = 0; n < d->N; n++) {
      int padded = -1;
      for (int i = 0; i < nk;) {
        int k = (int)kc + i, g = k / Kg;
        const float *xp = j->x + ((size_t)n * d->C + g) * d->H * d->W;
        const float *dyp = j->dy + ((size_t)n * d->K + k) * d->P * d->Q;
        if (flat && padded != g) pad_plane(xp, d->H, d->W, xpad, Hp, Wp, d->pad_t, d->pad_l);
        if (flat) padded = g;
#if defined(__x86_64__) && defined(__GNUC__)
        if (flat && simd) { /* up to DW_KB filters of this input plane at once, dY read in place */
          const float *gs[DW_KB];
          float parts[DW_KB * 25];
          int nb = 0;
          while (nb < DW_KB && i + nb < nk && (k + nb) / Kg == g) gs[nb] = dyp + (size_t)nb * d->P * d->Q, nb++;
          rows_dots(d, xpad, Wp, gs, nb, parts);
          for (int b = 0; b < nb; b++)
            for (int r = 0; r < RS; r++) acc[i + b][r] += parts[b * RS + r];
          i += nb;
          continue;
        }
#endif
        if (!flat) {
          plane_bwd_weight(d, j->qr, xp, dyp, part);
        } else {
          pad_plane(dyp, d->P, d->Q, gy, d->P, Wp, 0, 0); /* dY at pitch Wp, zeros past each row */
          flat_dots(nflat, xpad, Wp, d, gy, part);
        }
        for (int r = 0; r < RS; r++) acc[i][r] += part[r];
        i++;
      }
    }
    for (int i = 0; i < nk; i++)
      for (int r = 0; r < RS; r++) j->dw[(size_t)(kc + i) * RS + r] = (float)acc[i][r];
  }
}

void conv_direct_bwd_weight(const conv_plan *p, const float *x, const float *dy, float *dw, float *db,
                            void *scratch) {
  int qr[2 * p->d.S];
  q_ranges(&p->d, qr);
  direct_job j = {.p = p, .d = &p->d, .qr = qr, .x = x, .dy = dy, .dw = dw, .scratch = scratch};
  kern_parallel(p->nthreads, bwd_weight_part, &j);
  if (db) conv_bias_grad(&p->d, dy, db, p->nthreads);
}

/* Worker t's filters of conv_bias_grad. */
static void bias_grad_part(void *ctx, int t, int T) {
  const direct_job *j = ctx;
  const conv_desc *d = j->d;
  int64_t plane = (int64_t)d->P * d->Q, k0, k1;
  kern_split(d->K, t, T, &k0, &k1);
  for (int64_t k = k0; k < k1; k++) {
    double acc = 0.0;
    for (int n = 0; n < d->N; n++) acc += row_sum(plane, j->dy + ((size_t)n * d->K + k) * plane);
    j->db[k] = (float)acc;
  }
}

void conv_bias_grad(const conv_desc *d, const float *dy, float *db, int nthreads) {
  direct_job j = {.d = d, .dy = dy, .db = db};
  kern_parallel(nthreads, bias_grad_part, &j);
}
