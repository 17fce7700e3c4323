/* A small, fast, seedable random number generator: xoshiro256** (Blackman & Vigna), seeded
 * through splitmix64.
 *
 * The whole state is the plain struct below (32 bytes), so a checkpoint saves it by copying it and
 * a resumed run continues the exact same stream. No hidden caches: sw_rng_normal draws two uniforms
 * per call rather than keeping a spare value outside the struct. */
#ifndef SWATC_TRAIN_RNG_H
#define SWATC_TRAIN_RNG_H

#include <stdint.h>

typedef struct sw_rng {
  uint64_t s[4]; /* xoshiro256** state; never all zero */
} sw_rng;

/* Seeds r from a 64-bit seed (any value, 0 included) by expanding it with splitmix64. */
void sw_rng_seed(sw_rng *r, uint64_t seed);
/* Seeds r with an independent stream derived from (seed, stream), e.g. stream = epoch or sample. */
void sw_rng_seed_stream(sw_rng *r, uint64_t seed, uint64_t stream);
/* Returns the next 64 random bits. */
uint64_t sw_rng_next(sw_rng *r);
/* Returns the next 32 random bits (the high half of a 64-bit draw). */
uint32_t sw_rng_u32(sw_rng *r);
/* Returns a uniform float in [0, 1) with 24 random bits. */
float sw_rng_uniform(sw_rng *r);
/* Returns a uniform double in [0, 1) with 53 random bits. */
double sw_rng_uniform_double(sw_rng *r);
/* Returns a uniform integer in [0, n), without modulo bias; n must be > 0. */
uint64_t sw_rng_below(sw_rng *r, uint64_t n);
/* Returns a standard normal sample (Box-Muller on two fresh uniforms). */
float sw_rng_normal(sw_rng *r);
/* Fills x[0..n) with uniform values in [lo, hi). */
void sw_rng_fill_uniform(sw_rng *r, float *x, int64_t n, float lo, float hi);
/* Fills x[0..n) with normal values of the given mean and standard deviation. */
void sw_rng_fill_normal(sw_rng *r, float *x, int64_t n, float mean, float std);
/* Returns splitmix64 of x: a stateless 64-bit mixer for deriving seeds from counters. */
uint64_t sw_rng_mix(uint64_t x);

#endif
