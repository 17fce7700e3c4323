/* Direct convolution for one input channel per group (depthwise, and C = 1 layers such as LeNet's
 * first conv), in NCHW. Loops are compiled for AVX-512/AVX2/baseline and picked at load time.
 *
 * Stride 1: each plane is copied, zero-padded, into a per-thread scratch plane of pitch Wp, and
 * every tap (r, s) becomes one long vector loop over the flattened plane, out[i] += w * in[i + off]
 * (i runs over P rows of pitch Wp; the Wp - Q columns past each row end are discarded). Strided
 * convolutions run row by row with bounds worked out per tap.
 *
 * Every output element is owned by one thread and summed in a fixed order, so the results do not
 * depend on the thread count. */
#include <omp.h>
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

static float *thread_buf(const conv_plan *p, void *scratch) {
  size_t per = conv_direct_scratch(&p->d, p->nthreads) / p->nthreads;
  int t = omp_get_thread_num();
  SW_ASSERT(t < p->nthreads);
  return (float *)((char *)scratch + per * t);
}

void conv_direct_fwd(const conv_plan *p, const float *x, const float *w, const float *b, float *y, void *scratch) {
  const conv_desc *d = &p->d;
  int Kg = d->K / d->groups, nt = p->nthreads, flat = flat_ok(d);
  int Hp = fwd_Hp(d), Wp = fwd_Wp(d), nflat = (d->P - 1) * Wp + d->Q;
  int64_t planes = (int64_t)d->N * d->C; /* one input plane per group */
  int qr[2 * d->S];
  q_ranges(d, qr);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (int64_t pl = 0; pl < planes; pl++) {
    int n = (int)(pl / d->C), g = (int)(pl % d->C);
    const float *xp = x + (size_t)pl * d->H * d->W;
    float *xpad = flat ? thread_buf(p, scratch) : NULL, *acc = flat ? xpad + (size_t)Hp * Wp : NULL;
    if (flat) pad_plane(xp, d->H, d->W, xpad, Hp, Wp, d->pad_t, d->pad_l);
    for (int kl = 0; kl < Kg; kl++) {
      int k = g * Kg + kl;
      const float *wk = w + (size_t)k * d->R * d->S;
      float *yp = y + ((size_t)n * d->K + k) * d->P * d->Q, bias = b ? b[k] : 0.0f;
      if (!flat) {
        plane_fwd(d, qr, xp, wk, bias, yp);
        continue;
      }
      for (int i = 0; i < nflat; i++) acc[i] = bias;
      flat_taps(nflat, xpad, Wp, d, wk, 0, acc);
      for (int oh = 0; oh < d->P; oh++) memcpy(yp + (size_t)oh * d->Q, acc + (size_t)oh * Wp, sizeof(float) * d->Q);
    }
  }
}

void conv_direct_bwd_data(const conv_plan *p, const float *dy, const float *w, float *dx, void *scratch) {
  const conv_desc *d = &p->d;
  int Kg = d->K / d->groups, nt = p->nthreads, flat = flat_ok(d);
  int Hq = bwd_Hq(d), Wq = bwd_Wq(d), nflat = (d->H - 1) * Wq + d->W;
  int64_t planes = (int64_t)d->N * d->C; /* C == groups */
  int qr[2 * d->S];
  q_ranges(d, qr);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (int64_t pl = 0; pl < planes; pl++) {
    int n = (int)(pl / d->C), g = (int)(pl % d->C);
    float *dxp = dx + (size_t)pl * d->H * d->W;
    float *dypad = flat ? thread_buf(p, scratch) : NULL, *acc = flat ? dypad + (size_t)Hq * Wq : NULL;
    if (flat)
      for (int i = 0; i < nflat; i++) acc[i] = 0.0f;
    else
      memset(dxp, 0, sizeof(float) * d->H * d->W);
    for (int kl = 0; kl < Kg; kl++) {
      int k = g * Kg + kl;
      const float *dyp = dy + ((size_t)n * d->K + k) * d->P * d->Q, *wk = w + (size_t)k * d->R * d->S;
      if (!flat) {
        plane_bwd_data(d, qr, dyp, wk, dxp);
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

void conv_direct_bwd_weight(const conv_plan *p, const float *x, const float *dy, float *dw, float *db,
                            void *scratch) {
  const conv_desc *d = &p->d;
  int Kg = d->K / d->groups, nt = p->nthreads, RS = d->R * d->S, flat = flat_ok(d);
  int Hp = fwd_Hp(d), Wp = fwd_Wp(d), nflat = (d->P - 1) * Wp + d->Q;
  int qr[2 * d->S];
  q_ranges(d, qr);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (int k = 0; k < d->K; k++) {
    int g = k / Kg;
    double acc[RS];
    float part[RS];
    for (int i = 0; i < RS; i++) acc[i] = 0.0;
    float *xpad = flat ? thread_buf(p, scratch) : NULL, *gy = flat ? xpad + (size_t)Hp * Wp : NULL;
    for (int n = 0; n < d->N; n++) {
      const float *xp = x + ((size_t)n * d->C + g) * d->H * d->W, *dyp = dy + ((size_t)n * d->K + k) * d->P * d->Q;
      if (!flat) {
        plane_bwd_weight(d, qr, xp, dyp, part);
      } else {
        pad_plane(xp, d->H, d->W, xpad, Hp, Wp, d->pad_t, d->pad_l);
        pad_plane(dyp, d->P, d->Q, gy, d->P, Wp, 0, 0); /* dY at pitch Wp, zeros past each row */
        flat_dots(nflat, xpad, Wp, d, gy, part);
      }
      for (int i = 0; i < RS; i++) acc[i] += part[i];
    }
    for (int i = 0; i < RS; i++) dw[(size_t)k * RS + i] = (float)acc[i];
  }
  if (db) conv_bias_grad(d, dy, db, nt);
}

void conv_bias_grad(const conv_desc *d, const float *dy, float *db, int nthreads) {
  int64_t plane = (int64_t)d->P * d->Q;
#pragma omp parallel for num_threads(nthreads) schedule(static) if (nthreads > 1)
  for (int k = 0; k < d->K; k++) {
    double acc = 0.0;
    for (int n = 0; n < d->N; n++) acc += row_sum(plane, dy + ((size_t)n * d->K + k) * plane);
    db[k] = (float)acc;
  }
}
