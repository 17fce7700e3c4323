/* Magnitude Top-K selection and masking (see topk.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/kernels/kern.h"
#include "runtime/kernels/kern_internal.h"
#include "runtime/kernels/topk.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define TK_X86 1
#define TK_TARGET __attribute__((target("avx512f")))
#endif

#define MAXT 64
#define BUCKETS 2048
/* Keys (uint32) the candidate list holds: after a full pass, when the bucket that holds the k-th
 * largest has at most this many elements, they are copied out and the remaining passes run on the
 * copy; a larger bucket (a tensor of many ties) takes another full pass first. 256 KiB. */
#define CAND_MAX 65536
/* Elements below which one thread selects alone (waking a second costs more than it saves). */
#define MIN_PER_THREAD 32768

static inline uint32_t key(float v) {
  uint32_t u;
  memcpy(&u, &v, sizeof u);
  u &= 0x7fffffffu;               /* |v| */
  return u > 0x7f800000u ? 0 : u; /* NaN -> 0 */
}

#define WAYS 4 /* interleaved sub-histograms per thread: equal keys (the zeros after a ReLU) would
                 otherwise chain every increment on one counter */

static size_t hist_bytes(int T) { return kern_align_up((size_t)T * WAYS * BUCKETS * sizeof(int64_t)); }

size_t topk_scratch(int nthreads) {
  int t = nthreads < 1 ? 1 : nthreads > MAXT ? MAXT : nthreads;
  return hist_bytes(t) + kern_align_up(CAND_MAX * sizeof(uint32_t));
}


/* Sums the WAYS sub-histograms h[WAYS][BUCKETS] into h[0]. */
static void fold_ways(int64_t *h, int nb) {
  for (int w = 1; w < WAYS; w++)
    for (int b = 0; b < nb; b++) h[b] += h[w * BUCKETS + b];
}

/* One thread's histogram of bits [sh, sh + width) of the keys of x[lo, hi) that match prefix under
 * mask, in WAYS sub-histograms h[WAYS][BUCKETS] summed into h[0]; *zeros gets the count of keys 0
 * (zeros and NaN) in x[lo, hi), which the first pass's caller reads. */
static void histogram(const float *x, int64_t lo, int64_t hi, uint32_t mask, uint32_t prefix, int sh, uint32_t bm,
                      int nb, int64_t *h, int64_t *zeros) {
  memset(h, 0, sizeof(int64_t) * WAYS * BUCKETS);
  int64_t i = lo, z = 0;
  if (mask == 0) { /* first pass: every key counts */
    for (; i + WAYS <= hi; i += WAYS)
      for (int w = 0; w < WAYS; w++) {
        uint32_t u = key(x[i + w]);
        h[w * BUCKETS + ((u >> sh) & bm)]++;
        z += u == 0;
      }
  }
  for (; i < hi; i++) {
    uint32_t u = key(x[i]);
    if ((u & mask) == prefix) h[(u >> sh) & bm]++;
    z += u == 0;
  }
  fold_ways(h, nb);
  *zeros = z;
}

/* Copies the keys of x[lo, hi) that match prefix under mask to c (in order); returns how many. Writes
 * nothing past them (the next thread's keys follow). */
static int64_t compact(const float *x, int64_t lo, int64_t hi, uint32_t mask, uint32_t prefix, uint32_t *c) {
  int64_t o = 0;
  for (int64_t i = lo; i < hi; i++) {
    uint32_t u = key(x[i]);
    if ((u & mask) == prefix) c[o++] = u;
  }
  return o;
}

#ifdef TK_X86
#define HFLUSH 1024 /* bucket indices gathered before they are counted (a fixed-length, predictable loop) */

/* Counts the f bucket indices of buf into h[WAYS][BUCKETS], WAYS interleaved counters. */
static inline void count_buf(int64_t *h, const uint32_t *buf, int f) {
  int j = 0;
  for (; j + WAYS <= f; j += WAYS)
    for (int w = 0; w < WAYS; w++) h[w * BUCKETS + buf[j + w]]++;
  for (; j < f; j++) h[buf[j]]++;
}

/* histogram() with AVX-512: keys are made 16 at a time, those matching prefix under mask picked, and
 * only their nonzero bucket indices counted one by one; bucket 0 is the rest of the matches (half of a
 * post-ReLU tensor is exact zeros, and a tie on a round value such as 0.5 or 6.0 is bucket 0 in the
 * later passes). It runs the later full passes too (a bucket too large for the candidate list: a
 * tensor of many ties), which in scalar code made each tied key an increment of one counter. `first` (a constant: mask == 0,
 * sh == 20) drops the match test, which the first pass, on every tensor, does not need. */
static inline TK_TARGET __attribute__((always_inline)) void
histogram_avx_t(const float *x, int64_t lo, int64_t hi, uint32_t mask, uint32_t prefix, int sh, uint32_t bm,
                int64_t *h, int64_t *zeros, int first) {
  memset(h, 0, sizeof(int64_t) * WAYS * BUCKETS);
  uint32_t buf[HFLUSH + 16];
  const __m512i absm = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
  const __m512i mv = _mm512_set1_epi32((int)mask), pv = _mm512_set1_epi32((int)prefix);
  const __m512i bmv = _mm512_set1_epi32((int)bm);
  const __m128i shv = _mm_cvtsi32_si128(sh);
  int f = 0;
  int64_t i = lo, counted = 0, matched = 0, z = 0;
  for (; i + 16 <= hi; i += 16) {
    __m512i u = _mm512_and_si512(_mm512_loadu_si512(x + i), absm);
    __mmask16 ok = _mm512_cmple_epu32_mask(u, inf); /* not NaN (whose key is 0) */
    z += __builtin_popcount((__mmask16)~_mm512_mask_test_epi32_mask(ok, u, u)); /* key 0: zero or NaN */
    __mmask16 m;
    __m512i b;
    if (first) {
      b = _mm512_srli_epi32(u, 20);
      m = _mm512_mask_test_epi32_mask(ok, b, b);
    } else {
      u = _mm512_maskz_mov_epi32(ok, u);
      __mmask16 hit = _mm512_cmpeq_epi32_mask(_mm512_and_si512(u, mv), pv);
      b = _mm512_and_si512(_mm512_srl_epi32(u, shv), bmv);
      m = _mm512_mask_test_epi32_mask(hit, b, b);
      matched += __builtin_popcount(hit);
    }
    _mm512_storeu_si512(buf + f, _mm512_maskz_compress_epi32(m, b));
    f += __builtin_popcount(m);
    if (f >= HFLUSH) {
      count_buf(h, buf, f);
      counted += f;
      f = 0;
    }
  }
  count_buf(h, buf, f);
  counted += f;
  h[0] += (first ? i - lo : matched) - counted;
  for (; i < hi; i++) {
    uint32_t u = key(x[i]);
    if ((u & mask) == prefix) h[(u >> sh) & bm]++;
    z += u == 0;
  }
  fold_ways(h, (int)bm + 1);
  *zeros = z;
}

static TK_TARGET void histogram_avx(const float *x, int64_t lo, int64_t hi, uint32_t mask, uint32_t prefix, int sh,
                                    uint32_t bm, int64_t *h, int64_t *zeros) {
  if (mask == 0)
    histogram_avx_t(x, lo, hi, 0, 0, 20, BUCKETS - 1, h, zeros, 1);
  else
    histogram_avx_t(x, lo, hi, mask, prefix, sh, bm, h, zeros, 0);
}

/* compact() with AVX-512 compress (masked stores: the next thread's range starts right after). */
static TK_TARGET int64_t compact_avx(const float *x, int64_t lo, int64_t hi, uint32_t mask, uint32_t prefix,
                                     uint32_t *c) {
  const __m512i absm = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
  const __m512i mv = _mm512_set1_epi32((int)mask), pv = _mm512_set1_epi32((int)prefix);
  int64_t i = lo, o = 0;
  for (; i + 16 <= hi; i += 16) {
    __m512i u = _mm512_and_si512(_mm512_loadu_si512(x + i), absm);
    u = _mm512_maskz_mov_epi32(_mm512_cmple_epu32_mask(u, inf), u); /* NaN -> 0 */
    __mmask16 m = _mm512_cmpeq_epi32_mask(_mm512_and_si512(u, mv), pv);
    int cnt = __builtin_popcount(m);
    _mm512_mask_storeu_epi32(c + o, (__mmask16)((1u << cnt) - 1u), _mm512_maskz_compress_epi32(m, u));
    o += cnt;
  }
  for (; i < hi; i++) {
    uint32_t u = key(x[i]);
    if ((u & mask) == prefix) c[o++] = u;
  }
  return o;
}
#endif

/* The radix passes: bits 30..20, 19..9, 8..0 of the key; each narrows to the bucket holding the
 * k-th largest. */
static const int pass_shift[3] = {20, 9, 0}, pass_width[3] = {11, 11, 9};

/* Picks the bucket of h[0..nb) (counts, largest keys in the highest bucket) holding the k-th largest;
 * returns it and lowers *k by the counts of the buckets above it. */
static int select_bucket(const int64_t *h, int nb, int64_t *k) {
  int b = nb - 1;
  for (; b > 0; b--) {
    if (h[b] >= *k) break;
    *k -= h[b];
  }
  return b;
}

static float finish(uint32_t prefix) {
  float thr;
  memcpy(&thr, &prefix, sizeof thr);
  return thr;
}

/* The work of one full pass over x, split into T logical parts (kern_parallel runs every part
 * however many threads run them, so the parts of the histogram and the compaction pass agree). */
typedef struct pass_ctx {
  const float *x;
  int64_t n;
  int64_t *hist;
  int64_t *zeros; /* [T] the first pass's count of keys 0 (zeros and NaN) per part */
  uint32_t *cand;
  const int64_t *start;
  uint32_t mask, prefix, bm;
  int sh, nb, simd;
} pass_ctx;

static void hist_part(void *arg, int t, int T) {
  const pass_ctx *c = arg;
  int64_t lo, hi;
  kern_split(c->n, t, T, &lo, &hi);
  int64_t *h = c->hist + (size_t)t * WAYS * BUCKETS;
#ifdef TK_X86
  if (c->simd) {
    histogram_avx(c->x, lo, hi, c->mask, c->prefix, c->sh, c->bm, h, &c->zeros[t]);
    return;
  }
#endif
  histogram(c->x, lo, hi, c->mask, c->prefix, c->sh, c->bm, c->nb, h, &c->zeros[t]);
}

static void compact_part(void *arg, int t, int T) {
  const pass_ctx *c = arg;
  int64_t lo, hi, got;
  kern_split(c->n, t, T, &lo, &hi);
#ifdef TK_X86
  if (c->simd)
    got = compact_avx(c->x, lo, hi, c->mask, c->prefix, c->cand + c->start[t]);
  else
#endif
    got = compact(c->x, lo, hi, c->mask, c->prefix, c->cand + c->start[t]);
  SW_ASSERT(got == c->start[t + 1] - c->start[t]);
}

static float threshold_run(const float *x, int64_t n, int64_t k, void *scratch, int nthreads, int simd) {
  int T = nthreads < 1 ? 1 : nthreads > MAXT ? MAXT : nthreads;
  if (n < (int64_t)T * MIN_PER_THREAD) T = n / MIN_PER_THREAD > 1 ? (int)(n / MIN_PER_THREAD) : 1;
  int64_t *hist = scratch;
  uint32_t *cand = (uint32_t *)((char *)scratch + hist_bytes(T));
  int64_t tot[BUCKETS], start[MAXT + 1], zeros[MAXT];
  pass_ctx pc = {x, n, hist, zeros, cand, start, 0, 0, 0, 0, 0, simd};
  for (int pass = 0; pass < 3; pass++) {
    pc.nb = 1 << pass_width[pass], pc.sh = pass_shift[pass], pc.bm = (uint32_t)pc.nb - 1;
    kern_parallel(T, hist_part, &pc);
    /* per-part counts stay in parts 1.. (part 0's is the total minus theirs) */
    memcpy(tot, hist, sizeof(int64_t) * (size_t)pc.nb);
    for (int t = 1; t < T; t++)
      for (int b = 0; b < pc.nb; b++) tot[b] += hist[(size_t)t * WAYS * BUCKETS + b];
    int b = select_bucket(tot, pc.nb, &k);
    if (pass == 0 && b == 0) {
      /* the k-th largest among the smallest keys: when it is a zero (more is kept than a post-ReLU
       * tensor has nonzeros; its zeros would otherwise take two more full passes, all on one counter) */
      int64_t z = 0;
      for (int t = 0; t < T; t++) z += zeros[t];
      if (k > tot[0] - z) return 0.0f;
    }
    pc.prefix |= (uint32_t)b << pc.sh;
    pc.mask |= pc.bm << pc.sh;
    if (pass == 2 || tot[b] > CAND_MAX) continue;
    /* candidate compaction: each part copies its matching keys to its own range of cand */
    start[0] = 0;
    for (int t = 0; t < T; t++) start[t + 1] = start[t] + hist[(size_t)t * WAYS * BUCKETS + b];
    SW_ASSERT(start[T] == tot[b]);
    kern_parallel(T, compact_part, &pc);
    /* the remaining passes on the candidates, narrowing the list in place after each */
    int64_t m = tot[b];
    for (pass++; pass < 3; pass++) {
      int nb = 1 << pass_width[pass], sh = pass_shift[pass];
      uint32_t bm = (uint32_t)nb - 1;
      memset(tot, 0, sizeof(int64_t) * (size_t)nb);
      for (int64_t i = 0; i < m; i++) tot[(cand[i] >> sh) & bm]++;
      b = select_bucket(tot, nb, &k);
      pc.prefix |= (uint32_t)b << sh;
      pc.mask |= bm << sh;
      int64_t o = 0;
      for (int64_t i = 0; i < m; i++) {
        uint32_t u = cand[i];
        cand[o] = u;
        o += (u & pc.mask) == pc.prefix;
      }
      m = o;
    }
    break;
  }
  return finish(pc.prefix);
}

float topk_threshold(const float *x, int64_t n, int64_t k, void *scratch, int nthreads) {
  return threshold_run(x, n, k, scratch, nthreads, kern_cpu_avx512());
}

float topk_threshold_c(const float *x, int64_t n, int64_t k, void *scratch, int nthreads) {
  return threshold_run(x, n, k, scratch, nthreads, 0);
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

/* Operands of topk_apply, topk_group_scores and topk_apply_groups, shared by their workers. */
typedef struct apply_job {
  const float *x;
  float *y;
  int64_t n, group;    /* elements; topk_*groups: elements per group */
  float thr;
  const float *scores; /* topk_apply_groups: read */
  float *out_scores;   /* topk_group_scores: written */
  int64_t *nnz;        /* the nonzeros each part leaves, one count per part */
} apply_job;

static void apply_part(void *ctx, int t, int T) {
  const apply_job *j = ctx;
  int64_t lo, hi;
  kern_split(j->n, t, T, &lo, &hi);
  j->nnz[t] = apply_range(j->x + lo, j->y + lo, hi - lo, j->thr);
}

/* The sum of the parts' counts, in part order. */
static int64_t nnz_total(const int64_t *nnz, int T) {
  int64_t s = 0;
  for (int t = 0; t < T; t++) s += nnz[t];
  return s;
}

int64_t topk_apply(const float *x, float *y, int64_t n, float thr, int nthreads) {
  int T = n < 65536 || nthreads < 1 ? 1 : nthreads; /* a small weight is not worth waking threads for */
  int64_t nnz[T];
  apply_job j = {.x = x, .y = y, .n = n, .thr = thr, .nnz = nnz};
  kern_parallel(T, apply_part, &j);
  return nnz_total(nnz, T);
}

static void group_scores_part(void *ctx, int t, int T) {
  const apply_job *j = ctx;
  int64_t g0, g1;
  kern_split(j->n / j->group, t, T, &g0, &g1);
  for (int64_t g = g0; g < g1; g++) {
    double s = 0;
    for (int64_t i = 0; i < j->group; i++) s += fabsf(j->x[g * j->group + i]);
    j->out_scores[g] = (float)s;
  }
}

void topk_group_scores(const float *x, int64_t n, int64_t group, float *scores, int nthreads) {
  apply_job j = {.x = x, .n = n, .group = group, .out_scores = scores};
  kern_parallel(n < 65536 ? 1 : nthreads, group_scores_part, &j); /* as topk_apply */
}

static void apply_groups_part(void *ctx, int t, int T) {
  const apply_job *j = ctx;
  int64_t g0, g1, nnz = 0;
  kern_split(j->n / j->group, t, T, &g0, &g1);
  for (int64_t g = g0; g < g1; g++) {
    int keep = j->scores[g] >= j->thr;
    for (int64_t i = 0; i < j->group; i++) {
      float v = keep ? j->x[g * j->group + i] : 0.0f;
      j->y[g * j->group + i] = v;
      nnz += v != 0.0f;
    }
  }
  j->nnz[t] = nnz;
}

int64_t topk_apply_groups(const float *x, float *y, int64_t n, int64_t group, const float *scores, float thr, int nthreads) {
  int T = n < 65536 || nthreads < 1 ? 1 : nthreads; /* as topk_apply */
  int64_t nnz[T];
  apply_job j = {.x = x, .y = y, .n = n, .group = group, .thr = thr, .scores = scores, .nnz = nnz};
  kern_parallel(T, apply_groups_part, &j);
  return nnz_total(nnz, T);
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
