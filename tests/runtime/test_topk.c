/* Top-K threshold (topk.h): topk_threshold and its portable C version against topk_threshold_ref
 * (sorting) bit for bit, on 1-3 threads with scratch of exactly topk_scratch(threads) bytes filled
 * with garbage. Data: uniform with random scales, post-ReLU (half exact zeros), many ties at the
 * threshold, NaN / -0 / +-inf / denormals mixed in, all zeros, values that differ only in their low
 * mantissa bits (the first passes cannot tell them apart), and buckets larger than the candidate list
 * (hundreds of thousands of equal keys: the full-pass fallback); n from 1 to 300000 around the vector
 * width, k = 1, n, n/10, 2n/10, 3n/10, 4n/10 (what SWAT-U 0.9, ERK 0.9 and channel 0.7 keep), 8n/10
 * (ERK's projection shortcut), the count of nonzero keys and one more (a threshold of 0: more kept
 * than a post-ReLU tensor has nonzeros, decided from the first pass's count of zeros) and random. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "runtime/kernels/topk.h"

enum { D_UNIFORM, D_RELU, D_TIES, D_SPECIAL, D_ZEROS, D_LOWBITS, D_HUGE_TIES, D_KINDS };
static const char *kind_name[D_KINDS] = {"uniform", "relu", "ties", "NaN/inf/-0/denormal", "zeros", "low bits",
                                         "huge ties"};

static void make(float *x, int64_t n, int kind) {
  float scale = (float)ldexp(1.0, trng_int(-40, 40));
  switch (kind) {
  case D_UNIFORM:
    trng_fill(x, (size_t)n, -scale, scale);
    break;
  case D_RELU:
    trng_fill(x, (size_t)n, -scale, scale);
    for (int64_t i = 0; i < n; i++)
      if (x[i] < 0) x[i] = 0;
    break;
  case D_TIES:
    trng_fill(x, (size_t)n, -1, 1);
    for (int64_t i = 0; i < n; i++)
      if (trng_int(0, 2) == 0) x[i] = trng_int(0, 1) ? 0.25f : -0.25f;
    break;
  case D_SPECIAL:
    trng_fill(x, (size_t)n, -1, 1);
    for (int64_t i = 0; i < n; i++) {
      int r = trng_int(0, 15);
      if (r == 0) x[i] = NAN;
      else if (r == 1) x[i] = -NAN;
      else if (r == 2) x[i] = -0.0f;
      else if (r == 3) x[i] = 0.0f;
      else if (r == 4) x[i] = trng_int(0, 1) ? INFINITY : -INFINITY;
      else if (r == 5) x[i] = (float)ldexp(trng_unit(), -140); /* denormal */
    }
    break;
  case D_ZEROS:
    for (int64_t i = 0; i < n; i++) x[i] = trng_int(0, 1) ? 0.0f : -0.0f;
    break;
  case D_LOWBITS:
    /* 1.0 + a few ulps: every key shares its top 20 bits */
    for (int64_t i = 0; i < n; i++) {
      uint32_t u = 0x3f800000u + (uint32_t)trng_int(0, 4095);
      memcpy(&x[i], &u, sizeof u);
      if (trng_int(0, 1)) x[i] = -x[i];
    }
    break;
  default: /* D_HUGE_TIES: most of the tensor one value, the rest around it */
    for (int64_t i = 0; i < n; i++) {
      int r = trng_int(0, 9);
      x[i] = r < 8 ? 0.5f : r == 8 ? 0.5f + (float)trng_unit() * 0.01f : (float)trng_unit();
    }
    break;
  }
}

static void check(const char *what, const float *x, int64_t n, int64_t k) {
  float want = topk_threshold_ref(x, n, k);
  for (int t = 1; t <= 3; t++) {
    size_t sb = topk_scratch(t);
    void *scratch = talloc(sb);
    for (int portable = 0; portable <= 1; portable++) {
      memset(scratch, 0xa5, sb);
      float got = portable ? topk_threshold_c(x, n, k, scratch, t) : topk_threshold(x, n, k, scratch, t);
      char w[200];
      snprintf(w, sizeof w, "%s n=%lld k=%lld T=%d%s (got %.9g want %.9g)", what, (long long)n, (long long)k, t,
               portable ? " C" : "", (double)got, (double)want);
      tcheck_same(w, &got, &want, sizeof got);
    }
    free(scratch);
  }
}

int main(void) {
  trng_seed(20240611);
  tgroup_begin("topk_threshold vs sort");
  static const int64_t sizes[] = {1, 2, 15, 16, 17, 33, 1000, 5003, 70001, 300000};
  for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
    int64_t n = sizes[s];
    float *x = talloc(sizeof(float) * (size_t)n);
    for (int kind = 0; kind < D_KINDS; kind++) {
      if (kind == D_HUGE_TIES && n < 100000) continue; /* only meaningful past the candidate list */
      make(x, n, kind);
      int64_t nz = 0; /* keys that are not 0 (NaN's key is 0) */
      for (int64_t i = 0; i < n; i++) nz += x[i] == x[i] && x[i] != 0.0f;
      int64_t ks[10] = {1, n, n / 10, 2 * n / 10, 3 * n / 10, 4 * n / 10, 8 * n / 10, nz, nz + 1,
                        1 + (int64_t)(trng_unit() * (double)n)};
      for (int j = 0; j < 10; j++) check(kind_name[kind], x, n, ks[j] < 1 ? 1 : ks[j] > n ? n : ks[j]);
    }
    free(x);
  }
  tgroup_end();
  return tresult();
}
