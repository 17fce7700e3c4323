/* Magnitude Top-K selection and masking (see topk.h). */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/kernels/kern.h"
#include "runtime/kernels/kern_internal.h"
#include "runtime/kernels/topk.h"

#define MAXT 64
#define BUCKETS 2048

static inline uint32_t key(float v) {
  uint32_t u;
  memcpy(&u, &v, sizeof u);
  u &= 0x7fffffffu;               /* |v| */
  return u > 0x7f800000u ? 0 : u; /* NaN -> 0 */
}

#define WAYS 4 /* interleaved sub-histograms per thread: equal keys (the zeros after a ReLU) would
                 otherwise chain every increment on one counter */

size_t topk_scratch(int nthreads) {
  int t = nthreads < 1 ? 1 : nthreads > MAXT ? MAXT : nthreads;
  return kern_align_up((size_t)t * WAYS * BUCKETS * sizeof(int64_t));
}

/* One thread's histogram of bits [sh, sh + width) of the keys of x[lo, hi) that match prefix under
 * mask, in WAYS sub-histograms h[WAYS][BUCKETS] summed into h[0]. */
static void histogram(const float *x, int64_t lo, int64_t hi, uint32_t mask, uint32_t prefix, int sh, uint32_t bm,
                      int nb, int64_t *h) {
  memset(h, 0, sizeof(int64_t) * WAYS * BUCKETS);
  int64_t i = lo;
  if (mask == 0) { /* first pass: every key counts */
    for (; i + WAYS <= hi; i += WAYS)
      for (int w = 0; w < WAYS; w++) h[w * BUCKETS + ((key(x[i + w]) >> sh) & bm)]++;
  }
  for (; i < hi; i++) {
    uint32_t u = key(x[i]);
    if ((u & mask) == prefix) h[(u >> sh) & bm]++;
  }
  for (int w = 1; w < WAYS; w++)
    for (int b = 0; b < nb; b++) h[b] += h[w * BUCKETS + b];
}


float topk_threshold(const float *x, int64_t n, int64_t k, void *scratch, int nthreads) {
  int T = nthreads < 1 ? 1 : nthreads > MAXT ? MAXT : nthreads;
  int64_t *hist = scratch;
  /* three passes over bits 30..20, 19..9, 8..0 of |x|; each narrows to the bucket holding the k-th largest */
  static const int shift[3] = {20, 9, 0}, width[3] = {11, 11, 9};
  uint32_t prefix = 0, mask = 0;
  for (int pass = 0; pass < 3; pass++) {
    int nb = 1 << width[pass], sh = shift[pass];
    uint32_t bm = (uint32_t)nb - 1;
#pragma omp parallel num_threads(T)
    {
      int t = omp_get_thread_num(), nt = omp_get_num_threads();
      int64_t lo = n * t / nt, hi = n * (t + 1) / nt;
      histogram(x, lo, hi, mask, prefix, sh, bm, nb, hist + (size_t)t * WAYS * BUCKETS);
    }
    for (int t = 1; t < T; t++)
      for (int b = 0; b < nb; b++) hist[b] += hist[(size_t)t * WAYS * BUCKETS + b];
    int b = nb - 1;
    for (; b > 0; b--) {
      if (hist[b] >= k) break;
      k -= hist[b];
    }
    prefix |= (uint32_t)b << sh;
    mask |= bm << sh;
  }
  float thr;
  memcpy(&thr, &prefix, sizeof thr);
  return thr;
}

/* One thread's share of topk_apply, branch-free and vectorised (x and y may alias). */
KERN_CLONES static int64_t apply_range(const float *x, float *y, int64_t n, float thr) {
  int64_t nnz = 0;
  for (int64_t i = 0; i < n; i++) {
    float v = x[i];
    float keep = fabsf(v) >= thr ? v : 0.0f;
    y[i] = keep;
    nnz += keep != 0.0f;
  }
  return nnz;
}

int64_t topk_apply(const float *x, float *y, int64_t n, float thr, int nthreads) {
  int64_t nnz = 0;
  int T = n < 65536 ? 1 : nthreads; /* a small weight is not worth waking threads for */
#pragma omp parallel num_threads(T) reduction(+ : nnz)
  {
    int t = omp_get_thread_num(), nt = omp_get_num_threads();
    int64_t lo = n * t / nt, hi = n * (t + 1) / nt;
    nnz += apply_range(x + lo, y + lo, hi - lo, thr);
  }
  return nnz;
}

void topk_group_scores(const float *x, int64_t n, int64_t group, float *scores, int nthreads) {
  int64_t ng = n / group;
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t j = 0; j < ng; j++) {
    double s = 0;
    for (int64_t i = 0; i < group; i++) s += fabsf(x[j * group + i]);
    scores[j] = (float)s;
  }
}

int64_t topk_apply_groups(const float *x, float *y, int64_t n, int64_t group, const float *scores, float thr, int nthreads) {
  int64_t ng = n / group, nnz = 0;
#pragma omp parallel for num_threads(nthreads) schedule(static) reduction(+ : nnz)
  for (int64_t j = 0; j < ng; j++) {
    int keep = scores[j] >= thr;
    for (int64_t i = 0; i < group; i++) {
      float v = keep ? x[j * group + i] : 0.0f;
      y[j * group + i] = v;
      nnz += v != 0.0f;
    }
  }
  return nnz;
}

static int cmp_desc(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x < y) - (x > y);
}

float topk_threshold_ref(const float *x, int64_t n, int64_t k) {
  float *a = malloc(sizeof *a * (size_t)n);
  for (int64_t i = 0; i < n; i++) a[i] = isnan(x[i]) ? 0.0f : fabsf(x[i]);
  qsort(a, (size_t)n, sizeof *a, cmp_desc);
  float t = a[k - 1];
  free(a);
  return t;
}
