#include "train/rng.h"

#include <math.h>

#include "util/err.h"

uint64_t sw_rng_mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

void sw_rng_seed(sw_rng *r, uint64_t seed) {
  /* splitmix64 stream: consecutive outputs of a Weyl sequence through the mixer. */
  for (int i = 0; i < 4; i++) r->s[i] = sw_rng_mix(seed + (uint64_t)i * 0x9e3779b97f4a7c15ull);
  if (!(r->s[0] | r->s[1] | r->s[2] | r->s[3])) r->s[0] = 1; /* unreachable in practice */
}

void sw_rng_seed_stream(sw_rng *r, uint64_t seed, uint64_t stream) {
  sw_rng_seed(r, sw_rng_mix(seed) ^ sw_rng_mix(stream ^ 0x5851f42d4c957f2dull));
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t sw_rng_next(sw_rng *r) {
  uint64_t *s = r->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

uint32_t sw_rng_u32(sw_rng *r) { return (uint32_t)(sw_rng_next(r) >> 32); }

float sw_rng_uniform(sw_rng *r) { return (float)(sw_rng_next(r) >> 40) * 0x1.0p-24f; }

double sw_rng_uniform_double(sw_rng *r) { return (double)(sw_rng_next(r) >> 11) * 0x1.0p-53; }

uint64_t sw_rng_below(sw_rng *r, uint64_t n) {
  SW_ASSERT(n > 0);
  /* Reject the lowest (2^64 mod n) values so every residue is equally likely. */
  uint64_t threshold = (0 - n) % n;
  for (;;) {
    uint64_t x = sw_rng_next(r);
    if (x >= threshold) return x % n;
  }
}

float sw_rng_normal(sw_rng *r) {
  double u1 = 1.0 - sw_rng_uniform_double(r); /* (0, 1]: log stays finite */
  double u2 = sw_rng_uniform_double(r);
  return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

void sw_rng_fill_uniform(sw_rng *r, float *x, int64_t n, float lo, float hi) {
  for (int64_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * sw_rng_uniform(r);
}

void sw_rng_fill_normal(sw_rng *r, float *x, int64_t n, float mean, float std) {
  for (int64_t i = 0; i < n; i++) x[i] = mean + std * sw_rng_normal(r);
}
