/* What the kernel benchmarks share: this machine's peak, aligned zeroed buffers, a seeded generator. */
#ifndef SWATC_BENCH_KERNELS_BENCH_UTIL_H
#define SWATC_BENCH_KERNELS_BENCH_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* fp32 FMA peak of one core of this Zen 5 in GFLOP/s, and of two (measured, see shared/KERNELS.md). */
#define BENCH_PEAK_PER_CORE 213.0
#define BENCH_PEAK_TWO_CORES 413.0

/* Peak GFLOP/s on `threads` threads. */
static inline double bench_peak(int threads) {
  return threads == 2 ? BENCH_PEAK_TWO_CORES : BENCH_PEAK_PER_CORE * threads;
}

/* n zeroed bytes, 64-byte aligned; exits with a message when out of memory. */
static inline void *bench_alloc(size_t n) {
  size_t sz = n ? (n + 63) / 64 * 64 : 64;
  void *p = aligned_alloc(64, sz);
  if (!p) {
    fprintf(stderr, "bench: out of memory (%zu bytes)\n", n);
    exit(2);
  }
  memset(p, 0, sz);
  return p;
}

/* Uniform in (0, 1) from the 64-bit LCG state *s. */
static inline double bench_unit(uint64_t *s) {
  *s = *s * 6364136223846793005ull + 1442695040888963407ull;
  return ((double)(*s >> 11) + 0.5) / 9007199254740992.0;
}

/* Standard normal (Box-Muller) from the state *s. */
static inline float bench_normal(uint64_t *s) {
  double u = bench_unit(s), v = bench_unit(s);
  return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

#endif
