/* sw_rng: reference outputs of xoshiro256**, seeding, state copy, ranges and distributions. */
#include "train/rng.h"

#include "tests/train/check.h"

int main(void) {
  /* Reference sequence of xoshiro256** from state {1, 2, 3, 4}. */
  sw_rng r = {{1, 2, 3, 4}};
  CHECK(sw_rng_next(&r) == 11520ull);
  CHECK(sw_rng_next(&r) == 0ull);
  CHECK(sw_rng_next(&r) == 1509978240ull);
  CHECK(sw_rng_next(&r) == 1215971899390074240ull);

  /* Same seed, same stream; different seeds or streams differ; seed 0 is fine. */
  sw_rng a, b;
  sw_rng_seed(&a, 42);
  sw_rng_seed(&b, 42);
  int same = 1;
  for (int i = 0; i < 100; i++) same &= sw_rng_next(&a) == sw_rng_next(&b);
  CHECK(same);
  sw_rng_seed(&b, 43);
  CHECK(sw_rng_next(&a) != sw_rng_next(&b));
  sw_rng_seed(&a, 0);
  CHECK(a.s[0] | a.s[1] | a.s[2] | a.s[3]);
  sw_rng_seed_stream(&a, 7, 0);
  sw_rng_seed_stream(&b, 7, 1);
  CHECK(sw_rng_next(&a) != sw_rng_next(&b));

  /* The struct is the whole state: a copy continues identically (what checkpoints rely on). */
  sw_rng_seed(&a, 99);
  for (int i = 0; i < 10; i++) sw_rng_normal(&a);
  b = a;
  same = 1;
  for (int i = 0; i < 50; i++) {
    same &= sw_rng_normal(&a) == sw_rng_normal(&b);
    same &= sw_rng_below(&a, 17) == sw_rng_below(&b, 17);
  }
  CHECK(same);

  /* Ranges and rough distribution checks (loose bounds; a broken generator fails them). */
  sw_rng_seed(&a, 1234);
  enum { N = 200000, K = 10 };
  int64_t hist[K] = {0};
  double su = 0, sn = 0, sn2 = 0;
  float umin = 1, umax = 0;
  for (int i = 0; i < N; i++) {
    uint64_t k = sw_rng_below(&a, K);
    CHECK(k < K);
    hist[k]++;
    float u = sw_rng_uniform(&a);
    umin = u < umin ? u : umin;
    umax = u > umax ? u : umax;
    su += u;
    double z = sw_rng_normal(&a);
    sn += z;
    sn2 += z * z;
  }
  CHECK(umin >= 0.0f && umax < 1.0f);
  CHECK_NEAR(su / N, 0.5, 0.01);
  CHECK_NEAR(sn / N, 0.0, 0.01);
  CHECK_NEAR(sn2 / N, 1.0, 0.02);
  double chi2 = 0;
  for (int k = 0; k < K; k++) chi2 += (hist[k] - N / K) * (double)(hist[k] - N / K) / (N / K);
  CHECK(chi2 < 30.0); /* 9 degrees of freedom: p < 0.001 above ~27.9 */
  CHECK(sw_rng_below(&a, 1) == 0);
  uint64_t big = (1ull << 63) + 12345;
  CHECK(sw_rng_below(&a, big) < big);
  /* No modulo bias: for n = 3 * 2^62 a plain x % n would give [0, 2^62) probability 1/2, not 1/3. */
  int low = 0;
  for (int i = 0; i < 30000; i++) low += sw_rng_below(&a, 3ull << 62) < (1ull << 62);
  CHECK_NEAR(low / 30000.0, 1.0 / 3.0, 0.02);

  float buf[1000];
  sw_rng_fill_uniform(&a, buf, 1000, -2.0f, 3.0f);
  int ok = 1;
  for (int i = 0; i < 1000; i++) ok &= buf[i] >= -2.0f && buf[i] < 3.0f;
  CHECK(ok);
  sw_rng_fill_normal(&a, buf, 1000, 5.0f, 0.001f);
  ok = 1;
  for (int i = 0; i < 1000; i++) ok &= fabsf(buf[i] - 5.0f) < 0.01f;
  CHECK(ok);
  return check_report("test_rng");
}
