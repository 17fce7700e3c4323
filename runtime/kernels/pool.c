/* MaxPool, AveragePool, GlobalAveragePool (see pool.h). */
#include "runtime/kernels/pool.h"

#include <math.h>
#include <string.h>

#include "runtime/kernels/eltwise.h"
#include "runtime/kernels/kern_internal.h"

int pool_desc_resolve(pool_desc *d, sw_err *e) {
  if (d->N < 1 || d->C < 1 || d->H < 1 || d->W < 1 || d->kh < 1 || d->kw < 1)
    return sw_fail(e, SW_EINPUT, "Pool: sizes must be positive (N=%d C=%d H=%d W=%d kernel %dx%d)", d->N, d->C, d->H,
                   d->W, d->kh, d->kw);
  if (d->stride_h < 1 || d->stride_w < 1 || d->dil_h < 1 || d->dil_w < 1)
    return sw_fail(e, SW_EINPUT, "Pool: strides (%d,%d) and dilations (%d,%d) must be >= 1", d->stride_h, d->stride_w,
                   d->dil_h, d->dil_w);
  if (d->pad_t < 0 || d->pad_l < 0 || d->pad_b < 0 || d->pad_r < 0)
    return sw_fail(e, SW_EINPUT, "Pool: pads (%d,%d,%d,%d) must be >= 0", d->pad_t, d->pad_l, d->pad_b, d->pad_r);
  int span_h = d->H + d->pad_t + d->pad_b - (d->dil_h * (d->kh - 1) + 1);
  int span_w = d->W + d->pad_l + d->pad_r - (d->dil_w * (d->kw - 1) + 1);
  if (span_h < 0 || span_w < 0) {
    sw_fail(e, SW_EINPUT, "Pool: the %dx%d window is larger than the padded %dx%d input", d->kh, d->kw,
            d->H + d->pad_t + d->pad_b, d->W + d->pad_l + d->pad_r);
    sw_hint(e, "check kernel_shape, dilations and pads against the input size");
    return SW_EINPUT;
  }
  int P, Q;
  if (d->ceil_mode) {
    P = (span_h + d->stride_h - 1) / d->stride_h + 1;
    Q = (span_w + d->stride_w - 1) / d->stride_w + 1;
    if ((P - 1) * d->stride_h >= d->H + d->pad_t) P--;
    if ((Q - 1) * d->stride_w >= d->W + d->pad_l) Q--;
  } else {
    P = span_h / d->stride_h + 1;
    Q = span_w / d->stride_w + 1;
  }
  if ((d->P && d->P != P) || (d->Q && d->Q != Q))
    return sw_fail(e, SW_EINPUT, "Pool: output %dx%d does not match the computed %dx%d", d->P, d->Q, P, Q);
  d->P = P;
  d->Q = Q;
  return SW_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Reference. */

#define PLANE_X(n, c) (((size_t)(n) * d->C + (c)) * d->H * d->W)
#define PLANE_Y(n, c) (((size_t)(n) * d->C + (c)) * d->P * d->Q)

void maxpool_fwd_ref(const pool_desc *d, const float *x, float *y, int32_t *argmax) {
  for (int n = 0; n < d->N; n++)
    for (int c = 0; c < d->C; c++)
      for (int p = 0; p < d->P; p++)
        for (int q = 0; q < d->Q; q++) {
          float best = -INFINITY;
          int32_t idx = -1;
          for (int r = 0; r < d->kh; r++)
            for (int s = 0; s < d->kw; s++) {
              int h = p * d->stride_h - d->pad_t + r * d->dil_h, w = q * d->stride_w - d->pad_l + s * d->dil_w;
              if (h < 0 || h >= d->H || w < 0 || w >= d->W) continue;
              float v = x[PLANE_X(n, c) + (size_t)h * d->W + w];
              if (idx < 0 || v > best || (isnan(v) && !isnan(best))) {
                best = v;
                idx = h * d->W + w;
              }
            }
          y[PLANE_Y(n, c) + (size_t)p * d->Q + q] = best;
          argmax[PLANE_Y(n, c) + (size_t)p * d->Q + q] = idx;
        }
}

void maxpool_bwd_ref(const pool_desc *d, const float *dy, const int32_t *argmax, float *dx) {
  memset(dx, 0, sizeof(float) * d->N * d->C * d->H * d->W);
  for (int n = 0; n < d->N; n++)
    for (int c = 0; c < d->C; c++)
      for (int i = 0; i < d->P * d->Q; i++) {
        int32_t idx = argmax[PLANE_Y(n, c) + i];
        if (idx >= 0) dx[PLANE_X(n, c) + idx] += dy[PLANE_Y(n, c) + i];
      }
}

/* Number of taps of output (p, q) counted by AveragePool's divisor. */
static int avg_count(const pool_desc *d, int p, int q) {
  int cnt = 0;
  for (int r = 0; r < d->kh; r++)
    for (int s = 0; s < d->kw; s++) {
      int h = p * d->stride_h - d->pad_t + r * d->dil_h, w = q * d->stride_w - d->pad_l + s * d->dil_w;
      if (d->count_include_pad)
        cnt += h >= -d->pad_t && h < d->H + d->pad_b && w >= -d->pad_l && w < d->W + d->pad_r;
      else
        cnt += h >= 0 && h < d->H && w >= 0 && w < d->W;
    }
  return cnt;
}

void avgpool_fwd_ref(const pool_desc *d, const float *x, float *y) {
  for (int n = 0; n < d->N; n++)
    for (int c = 0; c < d->C; c++)
      for (int p = 0; p < d->P; p++)
        for (int q = 0; q < d->Q; q++) {
          double sum = 0.0;
          for (int r = 0; r < d->kh; r++)
            for (int s = 0; s < d->kw; s++) {
              int h = p * d->stride_h - d->pad_t + r * d->dil_h, w = q * d->stride_w - d->pad_l + s * d->dil_w;
              if (h >= 0 && h < d->H && w >= 0 && w < d->W) sum += x[PLANE_X(n, c) + (size_t)h * d->W + w];
            }
          int cnt = avg_count(d, p, q);
          y[PLANE_Y(n, c) + (size_t)p * d->Q + q] = cnt ? (float)(sum / cnt) : 0.0f;
        }
}

void avgpool_bwd_ref(const pool_desc *d, const float *dy, float *dx) {
  memset(dx, 0, sizeof(float) * d->N * d->C * d->H * d->W);
  for (int n = 0; n < d->N; n++)
    for (int c = 0; c < d->C; c++)
      for (int p = 0; p < d->P; p++)
        for (int q = 0; q < d->Q; q++) {
          int cnt = avg_count(d, p, q);
          if (!cnt) continue;
          float g = dy[PLANE_Y(n, c) + (size_t)p * d->Q + q] / cnt;
          for (int r = 0; r < d->kh; r++)
            for (int s = 0; s < d->kw; s++) {
              int h = p * d->stride_h - d->pad_t + r * d->dil_h, w = q * d->stride_w - d->pad_l + s * d->dil_w;
              if (h >= 0 && h < d->H && w >= 0 && w < d->W) dx[PLANE_X(n, c) + (size_t)h * d->W + w] += g;
            }
        }
}

/* ---------------------------------------------------------------------------------------------
 * Fast: threads over planes, window bounds worked out once per row/column instead of per tap. */

/* Taps t in [*lo, *hi) of a window starting at `base` (step dil, k taps) with base + t*dil in [0, lim). */
static void tap_range(int base, int dil, int k, int lim, int *lo, int *hi) {
  int l = base >= 0 ? 0 : (-base + dil - 1) / dil;
  int h = lim - 1 - base < 0 ? 0 : (lim - 1 - base) / dil + 1;
  if (h > k) h = k;
  *lo = l;
  *hi = h > l ? h : l;
}

/* Window bounds shared by every plane: taps [rr[2p], rr[2p+1]) of output row p and output columns
 * [qq[2s], qq[2s+1]) for which tap column s is inside the input (worked out once per call). */
static void pool_bounds(const pool_desc *d, int *rr, int *qq) {
  for (int p = 0; p < d->P; p++) tap_range(p * d->stride_h - d->pad_t, d->dil_h, d->kh, d->H, &rr[2 * p], &rr[2 * p + 1]);
  for (int s = 0; s < d->kw; s++)
    tap_range(s * d->dil_w - d->pad_l, d->stride_w, d->Q, d->W, &qq[2 * s], &qq[2 * s + 1]);
}

/* One MaxPool plane, row by row: for each output row the taps are visited in window order and each
 * tap updates the whole row of running maxima. Taking the first maximum and letting NaN win gives
 * the same result as the reference's per-output scan. */
KERN_CLONES static void maxpool_plane(const pool_desc *d, const int *rr, const int *qq, const float *restrict x,
                                      float *restrict y, int32_t *restrict am) {
  int sw = d->stride_w;
  for (int p = 0; p < d->P; p++) {
    float *restrict best = y + (size_t)p * d->Q;
    int32_t *restrict idx = am + (size_t)p * d->Q;
    for (int q = 0; q < d->Q; q++) {
      best[q] = -INFINITY;
      idx[q] = -1;
    }
    int bh = p * d->stride_h - d->pad_t;
    for (int r = rr[2 * p]; r < rr[2 * p + 1]; r++) {
      int h = bh + r * d->dil_h;
      for (int s = 0; s < d->kw; s++) {
        int off = s * d->dil_w - d->pad_l, q0 = qq[2 * s], q1 = qq[2 * s + 1];
        const float *restrict row = x + (size_t)h * d->W + off;
        int32_t base = h * d->W + off;
        /* Branch-free select (the outcome is data-dependent, branches would mispredict). */
        for (int q = q0; q < q1; q++) {
          float v = row[(size_t)q * sw], b = best[q];
          int32_t old = idx[q];
          uint32_t m = 0u - (uint32_t)((old < 0) | (v > b) | ((v != v) & (b == b)));
          uint32_t vb, bb;
          memcpy(&vb, &v, 4);
          memcpy(&bb, &b, 4);
          bb = (vb & m) | (bb & ~m);
          memcpy(&best[q], &bb, 4);
          idx[q] = (int32_t)(((uint32_t)(base + q * sw) & m) | ((uint32_t)old & ~m));
        }
      }
    }
  }
}

/* The common 2x2, stride-2 window without padding (LeNet, VGG): windows never overlap and never
 * leave the input, so each output is a select over four loads and the backward writes every dx
 * element once (no zeroing pass, no scatter). */
static int is_2x2(const pool_desc *d) {
  return d->kh == 2 && d->kw == 2 && d->stride_h == 2 && d->stride_w == 2 && d->dil_h == 1 && d->dil_w == 1 &&
         d->pad_t == 0 && d->pad_l == 0 && 2 * d->P <= d->H && 2 * d->Q <= d->W;
}

/* The maximum of a 2x2 window's taps a b / c e, and which tap it is (0..3: a, b, c, e): taps in window
 * order, the first maximum kept and NaN winning, as the reference scans them. */
static inline int window_max(float a, float b, float c, float e, float *max) {
  float m = a;
  int at = 0, t = (b > m) | ((b != b) & (m == m));
  m = t ? b : m;
  at = t ? 1 : at;
  t = (c > m) | ((c != c) & (m == m));
  m = t ? c : m;
  at = t ? 2 : at;
  t = (e > m) | ((e != e) & (m == m));
  m = t ? e : m;
  at = t ? 3 : at;
  *max = m;
  return at;
}

static void maxpool2x2_plane(const float *restrict x, int W, int P, int Q, float *restrict y,
                                         int32_t *restrict am) {
  for (int p = 0; p < P; p++) {
    const float *r0 = x + (size_t)2 * p * W, *r1 = r0 + W;
    for (int q = 0; q < Q; q++) {
      float m;
      int at = window_max(r0[2 * q], r0[2 * q + 1], r1[2 * q], r1[2 * q + 1], &m);
      y[(size_t)p * Q + q] = m;
      am[(size_t)p * Q + q] = 2 * p * W + 2 * q + (at >> 1) * W + (at & 1);
    }
  }
}

/* Zeroes what no 2x2 window of a backward covers: an odd last column of rows < 2P and the rows from 2P. */
static void zero_uncovered(float *dx, int H, int W, int P, int Q) {
  if (2 * Q < W)
    for (int h = 0; h < 2 * P; h++)
      for (int w = 2 * Q; w < W; w++) dx[(size_t)h * W + w] = 0.0f;
  if (2 * P < H) memset(dx + (size_t)2 * P * W, 0, sizeof(float) * (size_t)(H - 2 * P) * W);
}

static void maxpool2x2_bwd_plane(const float *restrict dy, const int32_t *restrict am, int H, int W, int P, int Q,
                                             float *restrict dx) {
  for (int p = 0; p < P; p++) {
    float *r0 = dx + (size_t)2 * p * W, *r1 = r0 + W;
    for (int q = 0; q < Q; q++) {
      float g = dy[(size_t)p * Q + q];
      int32_t rel = am[(size_t)p * Q + q] - (2 * p * W + 2 * q);
      r0[2 * q] = rel == 0 ? g : 0.0f;
      r0[2 * q + 1] = rel == 1 ? g : 0.0f;
      r1[2 * q] = rel == W ? g : 0.0f;
      r1[2 * q + 1] = rel == W + 1 ? g : 0.0f;
    }
  }
  zero_uncovered(dx, H, W, P, Q);
}

/* maxpool2x2_plane then maxpool2x2_bwd_plane (then, with relu, the ReLU backward) in one pass: each
 * window's first maximum (NaN winning) found as the forward finds it, dy written there, 0 elsewhere. */
static void maxpool2x2_bwd_x_plane(const float *restrict x, const float *restrict dy, int H, int W, int P, int Q,
                                   int relu, float *restrict dx) {
  for (int p = 0; p < P; p++) {
    const float *x0 = x + (size_t)2 * p * W, *x1 = x0 + W;
    float *r0 = dx + (size_t)2 * p * W, *r1 = r0 + W;
    for (int q = 0; q < Q; q++) {
      float m;
      int at = window_max(x0[2 * q], x0[2 * q + 1], x1[2 * q], x1[2 * q + 1], &m);
      float g = dy[(size_t)p * Q + q];
      if (relu) g = m > 0.0f ? g : 0.0f;
      r0[2 * q] = at == 0 ? g : 0.0f;
      r0[2 * q + 1] = at == 1 ? g : 0.0f;
      r1[2 * q] = at == 2 ? g : 0.0f;
      r1[2 * q + 1] = at == 3 ? g : 0.0f;
    }
  }
  zero_uncovered(dx, H, W, P, Q);
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define POOL_X86 1

/* One step of the AVX-512 2x2 kernels: 16 windows of output row p from column q (the last step of a row
 * masked: om outputs, lo/hi the 32 input columns under them). */
typedef struct win16 {
  __mmask16 om, lo, hi;
} win16;

static inline win16 win16_at(int Q, int q) {
  int nq = Q - q < 16 ? Q - q : 16, nx = 2 * nq;
  win16 w = {(__mmask16)((1u << nq) - 1u), (__mmask16)(nx >= 16 ? 0xffff : (1u << nx) - 1u),
             (__mmask16)(nx <= 16 ? 0 : (1u << (nx - 16)) - 1u)};
  return w;
}

/* The 16 windows' maxima from input rows x0, x1 (the two taps of a row split by one even/odd permute
 * of the 32 floats under them), the first maximum in window order kept and NaN winning; t[0..2]: the
 * lanes where tap b, c, e won its compare (the argmax is the last tap that won, else a). */
static inline __attribute__((target("avx512f"), always_inline)) __m512 win16_max(const float *x0, const float *x1,
                                                                                 int q, win16 w, __mmask16 t[3]) {
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  __m512 u0 = _mm512_maskz_loadu_ps(w.lo, x0 + 2 * q), u1 = _mm512_maskz_loadu_ps(w.hi, x0 + 2 * q + 16);
  __m512 v0 = _mm512_maskz_loadu_ps(w.lo, x1 + 2 * q), v1 = _mm512_maskz_loadu_ps(w.hi, x1 + 2 * q + 16);
  __m512 tap[3] = {_mm512_permutex2var_ps(u0, odd, u1), _mm512_permutex2var_ps(v0, even, v1),
                   _mm512_permutex2var_ps(v0, odd, v1)};
  __m512 m = _mm512_permutex2var_ps(u0, even, u1);
_Pragma("GCC unroll 3")
  for (int k = 0; k < 3; k++) {
    t[k] = _mm512_cmp_ps_mask(tap[k], m, _CMP_GT_OQ) |
           (_mm512_cmp_ps_mask(tap[k], tap[k], _CMP_UNORD_Q) & _mm512_cmp_ps_mask(m, m, _CMP_ORD_Q));
    m = _mm512_mask_blend_ps(t[k], m, tap[k]);
  }
  return m;
}

/* Writes the 16 windows' dx values (g00 g01 / g10 g11: each tap's, 0 off the argmax) interleaved back
 * into the two input rows r0, r1. */
static inline __attribute__((target("avx512f"), always_inline)) void win16_store(float *r0, float *r1, int q, win16 w,
                                                                                 __m512 g00, __m512 g01, __m512 g10,
                                                                                 __m512 g11) {
  const __m512i lo_i = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  const __m512i hi_i = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
  _mm512_mask_storeu_ps(r0 + 2 * q, w.lo, _mm512_permutex2var_ps(g00, lo_i, g01));
  _mm512_mask_storeu_ps(r0 + 2 * q + 16, w.hi, _mm512_permutex2var_ps(g00, hi_i, g01));
  _mm512_mask_storeu_ps(r1 + 2 * q, w.lo, _mm512_permutex2var_ps(g10, lo_i, g11));
  _mm512_mask_storeu_ps(r1 + 2 * q + 16, w.hi, _mm512_permutex2var_ps(g10, hi_i, g11));
}

/* maxpool2x2_plane on AVX-512: 16 outputs per step. */
__attribute__((target("avx512f"))) static void maxpool2x2_plane_avx512(const float *x, int W, int P, int Q, float *y,
                                                                       int32_t *am) {
  const __m512i twice = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  for (int p = 0; p < P; p++) {
    const float *r0 = x + (size_t)2 * p * W, *r1 = r0 + W;
    for (int q = 0; q < Q; q += 16) {
      win16 w = win16_at(Q, q);
      __mmask16 t[3];
      __m512 m = win16_max(r0, r1, q, w, t);
      __m512i i = _mm512_add_epi32(twice, _mm512_set1_epi32(2 * p * W + 2 * q)); /* each window's tap a */
      __m512i idx = _mm512_mask_add_epi32(i, t[0], i, _mm512_set1_epi32(1));
      idx = _mm512_mask_add_epi32(idx, t[1], i, _mm512_set1_epi32(W));
      idx = _mm512_mask_add_epi32(idx, t[2], i, _mm512_set1_epi32(W + 1));
      _mm512_mask_storeu_ps(y + (size_t)p * Q + q, w.om, m);
      _mm512_mask_storeu_epi32(am + (size_t)p * Q + q, w.om, idx);
    }
  }
}

/* maxpool2x2_bwd_plane on AVX-512: each window's four dx values built in registers and interleaved
 * back into the two input rows. */
__attribute__((target("avx512f"))) static void maxpool2x2_bwd_plane_avx512(const float *dy, const int32_t *am, int H, int W,
                                                                           int P, int Q, float *dx) {
  const __m512i twice = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512 zero = _mm512_setzero_ps();
  for (int p = 0; p < P; p++) {
    float *r0 = dx + (size_t)2 * p * W, *r1 = r0 + W;
    for (int q = 0; q < Q; q += 16) {
      win16 w = win16_at(Q, q);
      __m512 g = _mm512_maskz_loadu_ps(w.om, dy + (size_t)p * Q + q);
      __m512i rel = _mm512_sub_epi32(_mm512_maskz_loadu_epi32(w.om, am + (size_t)p * Q + q),
                                     _mm512_add_epi32(twice, _mm512_set1_epi32(2 * p * W + 2 * q)));
      win16_store(r0, r1, q, w, _mm512_mask_blend_ps(_mm512_cmpeq_epi32_mask(rel, _mm512_setzero_si512()), zero, g),
                  _mm512_mask_blend_ps(_mm512_cmpeq_epi32_mask(rel, _mm512_set1_epi32(1)), zero, g),
                  _mm512_mask_blend_ps(_mm512_cmpeq_epi32_mask(rel, _mm512_set1_epi32(W)), zero, g),
                  _mm512_mask_blend_ps(_mm512_cmpeq_epi32_mask(rel, _mm512_set1_epi32(W + 1)), zero, g));
    }
  }
  zero_uncovered(dx, H, W, P, Q);
}

/* maxpool2x2_bwd_x_plane on AVX-512: the forward's window maxima pick each window's tap, the
 * backward's interleave writes the four dx values. */
__attribute__((target("avx512f"))) static void maxpool2x2_bwd_x_plane_avx512(const float *x, const float *dy, int H,
                                                                             int W, int P, int Q, int relu,
                                                                             float *dx) {
  for (int p = 0; p < P; p++) {
    const float *x0 = x + (size_t)2 * p * W, *x1 = x0 + W;
    float *r0 = dx + (size_t)2 * p * W, *r1 = r0 + W;
    for (int q = 0; q < Q; q += 16) {
      win16 w = win16_at(Q, q);
      __mmask16 t[3];
      __m512 m = win16_max(x0, x1, q, w, t);
      __m512 g = _mm512_maskz_loadu_ps(w.om, dy + (size_t)p * Q + q);
      if (relu) g = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(m, _mm512_setzero_ps(), _CMP_GT_OQ), g);
      /* the last tap whose compare won is the argmax: e if t[2], else c if t[1], else b if t[0], else a */
      __mmask16 k11 = t[2], k10 = (__mmask16)(t[1] & ~t[2]), k01 = (__mmask16)(t[0] & ~t[1] & ~t[2]);
      __mmask16 k00 = (__mmask16)~(t[0] | t[1] | t[2]);
      win16_store(r0, r1, q, w, _mm512_maskz_mov_ps(k00, g), _mm512_maskz_mov_ps(k01, g), _mm512_maskz_mov_ps(k10, g),
                  _mm512_maskz_mov_ps(k11, g));
    }
  }
  zero_uncovered(dx, H, W, P, Q);
}

static int pool_portable; /* tests: 1 runs the plain C 2x2 path on an AVX-512 machine too */

static int pool_avx512(void) { return kern_cpu_avx512() && !pool_portable; }
#endif

void pool_use_portable(int on) {
#ifdef POOL_X86
  pool_portable = on;
#else
  (void)on;
#endif
}

/* Operands of a pooling pass, shared by its workers: every pass works plane by plane. */
typedef struct pool_job {
  const pool_desc *d;
  int64_t planes, HW;                          /* N*C planes; GlobalAveragePool: elements per plane */
  const int *rr, *qq;                          /* pool_bounds (MaxPool's general path) */
  const float *x, *dy;
  float *y, *dx;
  int32_t *argmax;                             /* MaxPool forward: written */
  const int32_t *am;                           /* MaxPool backward: read */
  int relu;                                    /* maxpool_bwd_x: the ReLU backward too */
  void (*plane)(const struct pool_job *j, int64_t pl); /* the pass on plane pl */
} pool_job;

/* Worker t's planes. */
static void pool_part(void *ctx, int t, int T) {
  const pool_job *j = ctx;
  int64_t lo, hi;
  kern_split(j->planes, t, T, &lo, &hi);
  for (int64_t pl = lo; pl < hi; pl++) j->plane(j, pl);
}

/* Runs j's pass on every plane, split over nthreads (one thread for a single plane). */
static void pool_run(pool_job *j, int nthreads) { kern_parallel(j->planes > 1 ? nthreads : 1, pool_part, j); }

static void maxpool2x2_fwd_pl(const pool_job *j, int64_t pl) {
  const pool_desc *d = j->d;
  const float *xp = j->x + (size_t)pl * d->H * d->W;
  float *yp = j->y + (size_t)pl * d->P * d->Q;
  int32_t *ap = j->argmax + (size_t)pl * d->P * d->Q;
#ifdef POOL_X86
  if (pool_avx512()) {
    maxpool2x2_plane_avx512(xp, d->W, d->P, d->Q, yp, ap);
    return;
  }
#endif
  maxpool2x2_plane(xp, d->W, d->P, d->Q, yp, ap);
}

static void maxpool_fwd_pl(const pool_job *j, int64_t pl) {
  const pool_desc *d = j->d;
  maxpool_plane(d, j->rr, j->qq, j->x + (size_t)pl * d->H * d->W, j->y + (size_t)pl * d->P * d->Q,
                j->argmax + (size_t)pl * d->P * d->Q);
}

void maxpool_fwd(const pool_desc *d, const float *x, float *y, int32_t *argmax, int nthreads) {
  pool_job j = {.d = d, .planes = (int64_t)d->N * d->C, .x = x, .y = y, .argmax = argmax};
  if (is_2x2(d)) {
    j.plane = maxpool2x2_fwd_pl;
    pool_run(&j, nthreads);
    return;
  }
  int rr[2 * d->P], qq[2 * d->kw];
  pool_bounds(d, rr, qq);
  j.rr = rr, j.qq = qq, j.plane = maxpool_fwd_pl;
  pool_run(&j, nthreads);
}

static void maxpool2x2_bwd_pl(const pool_job *j, int64_t pl) {
  const pool_desc *d = j->d;
  size_t hw = (size_t)d->H * d->W, pq = (size_t)d->P * d->Q;
#ifdef POOL_X86
  if (pool_avx512()) {
    maxpool2x2_bwd_plane_avx512(j->dy + (size_t)pl * pq, j->am + (size_t)pl * pq, d->H, d->W, d->P, d->Q,
                                j->dx + (size_t)pl * hw);
    return;
  }
#endif
  maxpool2x2_bwd_plane(j->dy + (size_t)pl * pq, j->am + (size_t)pl * pq, d->H, d->W, d->P, d->Q, j->dx + (size_t)pl * hw);
}

static void maxpool_bwd_pl(const pool_job *j, int64_t pl) {
  const pool_desc *d = j->d;
  size_t hw = (size_t)d->H * d->W, pq = (size_t)d->P * d->Q;
  float *dxp = j->dx + (size_t)pl * hw;
  const float *dyp = j->dy + (size_t)pl * pq;
  const int32_t *am = j->am + (size_t)pl * pq;
  memset(dxp, 0, sizeof(float) * hw);
  for (size_t i = 0; i < pq; i++)
    if (am[i] >= 0) dxp[am[i]] += dyp[i];
}

void maxpool_bwd(const pool_desc *d, const float *dy, const int32_t *argmax, float *dx, int nthreads) {
  pool_job j = {.d = d, .planes = (int64_t)d->N * d->C, .dy = dy, .am = argmax, .dx = dx,
                .plane = is_2x2(d) ? maxpool2x2_bwd_pl : maxpool_bwd_pl};
  pool_run(&j, nthreads);
}

static void maxpool2x2_bwd_x_pl(const pool_job *j, int64_t pl) {
  const pool_desc *d = j->d;
  size_t hw = (size_t)d->H * d->W, pq = (size_t)d->P * d->Q;
#ifdef POOL_X86
  if (pool_avx512()) {
    maxpool2x2_bwd_x_plane_avx512(j->x + (size_t)pl * hw, j->dy + (size_t)pl * pq, d->H, d->W, d->P, d->Q, j->relu,
                                  j->dx + (size_t)pl * hw);
    return;
  }
#endif
  maxpool2x2_bwd_x_plane(j->x + (size_t)pl * hw, j->dy + (size_t)pl * pq, d->H, d->W, d->P, d->Q, j->relu,
                         j->dx + (size_t)pl * hw);
}

size_t maxpool_bwd_x_scratch(const pool_desc *d) {
  if (is_2x2(d)) return 0;
  size_t ys = (size_t)d->N * d->C * d->P * d->Q;
  return kern_align_up(ys * sizeof(float)) + kern_align_up(ys * sizeof(int32_t));
}

void maxpool_bwd_x(const pool_desc *d, const float *dy, const float *x, int relu, float *dx, void *scratch,
                   int nthreads) {
  pool_job j = {.d = d, .planes = (int64_t)d->N * d->C, .x = x, .dy = dy, .dx = dx, .relu = relu};
  if (is_2x2(d)) {
    j.plane = maxpool2x2_bwd_x_pl;
    pool_run(&j, nthreads);
    return;
  }
  size_t ys = (size_t)d->N * d->C * d->P * d->Q;
  float *y = scratch;
  int32_t *argmax = (int32_t *)((char *)scratch + kern_align_up(ys * sizeof(float)));
  maxpool_fwd(d, x, y, argmax, nthreads);
  maxpool_bwd(d, dy, argmax, dx, nthreads);
  if (!relu) return;
  const act_desc a = {.kind = ACT_RELU}; /* then the ReLU backward in place, the kernel ReluGrad runs */
  act_bwd(&a, (int64_t)d->N * d->C * d->H * d->W, x, NULL, dx, dx, nthreads);
}

/* The AveragePool divisor of an output from its window bounds. */
static int avg_div(const pool_desc *d, int bh, int bw, int r0, int r1, int s0, int s1) {
  if (!d->count_include_pad) return (r1 - r0) * (s1 - s0);
  int a0, a1, b0, b1;
  tap_range(bh + d->pad_t, d->dil_h, d->kh, d->H + d->pad_t + d->pad_b, &a0, &a1);
  tap_range(bw + d->pad_l, d->dil_w, d->kw, d->W + d->pad_l + d->pad_r, &b0, &b1);
  return (a1 - a0) * (b1 - b0);
}

static void avgpool_fwd_pl(const pool_job *j, int64_t pl) {
  const pool_desc *d = j->d;
  const float *xp = j->x + (size_t)pl * d->H * d->W;
  float *yp = j->y + (size_t)pl * d->P * d->Q;
  for (int p = 0; p < d->P; p++) {
    int bh = p * d->stride_h - d->pad_t, r0, r1;
    tap_range(bh, d->dil_h, d->kh, d->H, &r0, &r1);
    for (int q = 0; q < d->Q; q++) {
      int bw = q * d->stride_w - d->pad_l, s0, s1;
      tap_range(bw, d->dil_w, d->kw, d->W, &s0, &s1);
      float sum = 0.0f;
      for (int r = r0; r < r1; r++)
        for (int s = s0; s < s1; s++) sum += xp[(size_t)(bh + r * d->dil_h) * d->W + bw + s * d->dil_w];
      int cnt = avg_div(d, bh, bw, r0, r1, s0, s1);
      yp[(size_t)p * d->Q + q] = cnt ? sum / (float)cnt : 0.0f;
    }
  }
}

void avgpool_fwd(const pool_desc *d, const float *x, float *y, int nthreads) {
  pool_job j = {.d = d, .planes = (int64_t)d->N * d->C, .x = x, .y = y, .plane = avgpool_fwd_pl};
  pool_run(&j, nthreads);
}

static void avgpool_bwd_pl(const pool_job *j, int64_t pl) {
  const pool_desc *d = j->d;
  float *dxp = j->dx + (size_t)pl * d->H * d->W;
  const float *dyp = j->dy + (size_t)pl * d->P * d->Q;
  memset(dxp, 0, sizeof(float) * d->H * d->W);
  for (int p = 0; p < d->P; p++) {
    int bh = p * d->stride_h - d->pad_t, r0, r1;
    tap_range(bh, d->dil_h, d->kh, d->H, &r0, &r1);
    for (int q = 0; q < d->Q; q++) {
      int bw = q * d->stride_w - d->pad_l, s0, s1;
      tap_range(bw, d->dil_w, d->kw, d->W, &s0, &s1);
      int cnt = avg_div(d, bh, bw, r0, r1, s0, s1);
      if (!cnt) continue;
      float g = dyp[(size_t)p * d->Q + q] / (float)cnt;
      for (int r = r0; r < r1; r++)
        for (int s = s0; s < s1; s++) dxp[(size_t)(bh + r * d->dil_h) * d->W + bw + s * d->dil_w] += g;
    }
  }
}

void avgpool_bwd(const pool_desc *d, const float *dy, float *dx, int nthreads) {
  pool_job j = {.d = d, .planes = (int64_t)d->N * d->C, .dy = dy, .dx = dx, .plane = avgpool_bwd_pl};
  pool_run(&j, nthreads);
}

KERN_CLONES static float plane_sum(int64_t n, const float *restrict x) {
  float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; i++) acc += x[i];
  return acc;
}

static void gap_fwd_pl(const pool_job *j, int64_t pl) {
  j->y[pl] = (float)((double)plane_sum(j->HW, j->x + pl * j->HW) / (double)j->HW);
}

void global_avgpool_fwd(int N, int C, int64_t HW, const float *x, float *y, int nthreads) {
  pool_job j = {.planes = (int64_t)N * C, .HW = HW, .x = x, .y = y, .plane = gap_fwd_pl};
  pool_run(&j, nthreads);
}

static void gap_bwd_pl(const pool_job *j, int64_t pl) {
  float g = j->dy[pl] / (float)j->HW;
  for (int64_t i = 0; i < j->HW; i++) j->dx[pl * j->HW + i] = g;
}

void global_avgpool_bwd(int N, int C, int64_t HW, const float *dy, float *dx, int nthreads) {
  pool_job j = {.planes = (int64_t)N * C, .HW = HW, .dy = dy, .dx = dx, .plane = gap_bwd_pl};
  pool_run(&j, nthreads);
}
