/* SGD against PyTorch's torch.optim.SGD semantics: hand-computed two-step values (confirmed with
 * PyTorch 2 on Debian: the figures in the comments), a double-precision reference over many steps
 * on a vector large enough to run threaded, per-tensor weight decay, and the settings check. */
#include "train/optim.h"

#include <omp.h>
#include <stdlib.h>

#include "tests/train/check.h"
#include "train/rng.h"

static const float w0[3] = {1.0f, -2.0f, 0.5f};
static const float g1[3] = {0.1f, 0.2f, -0.3f}, g2[3] = {0.05f, -0.1f, 0.2f};

/* Two steps with lr 0.1, weight decay 0.01 and the given momentum/Nesterov; returns w. */
static void two_steps(float momentum, int nesterov, float *w) {
  sw_sgd o = {.momentum = momentum, .weight_decay = 0.01f, .nesterov = nesterov};
  float buf[3];
  memcpy(w, w0, sizeof w0);
  sw_sgd_step(&o, 0.1f, w, g1, momentum ? buf : NULL, 3, 1);
  sw_sgd_step(&o, 0.1f, w, g2, momentum ? buf : NULL, 3, 0);
}

static void test_hand(void) {
  float w[3];
  /* Momentum 0.9. Step 1: d = g + 0.01 w = [0.11, 0.18, -0.295] = buf, w = [0.989, -2.018, 0.5295].
   * Step 2: d = [0.05989, -0.12018, 0.205295]; buf = 0.9 buf + d = [0.15889, 0.04182, -0.060205];
   * w -= 0.1 buf -> [0.973111, -2.022182, 0.5355205]   (PyTorch: 0.97311103, -2.02218199, 0.53552049) */
  two_steps(0.9f, 0, w);
  CHECK_NEAR(w[0], 0.973111, 1e-6);
  CHECK_NEAR(w[1], -2.022182, 1e-6);
  CHECK_NEAR(w[2], 0.5355205, 1e-6);
  /* Nesterov. Step 1: buf = d, w -= 0.1 (d + 0.9 d) -> [0.9791, -2.0342, 0.55605].
   * Step 2: d = [0.059791, -0.120342, 0.2055605]; buf = [0.158791, 0.041658, -0.0599395];
   * d + 0.9 buf = [0.2027029, -0.0828498, 0.15161495]; w -> [0.95882971, -2.02591502, 0.540888505]
   * (PyTorch: 0.95882970, -2.02591491, 0.54088849) */
  two_steps(0.9f, 1, w);
  CHECK_NEAR(w[0], 0.95882971, 1e-6);
  CHECK_NEAR(w[1], -2.02591502, 1e-6);
  CHECK_NEAR(w[2], 0.540888505, 1e-6);
  /* No momentum: w -= 0.1 (g + 0.01 w), twice. Step 1 -> [0.989, -2.018, 0.5295];
   * step 2: d = [0.05989, -0.12018, 0.205295] -> [0.983011, -2.005982, 0.5089705]. */
  two_steps(0.0f, 0, w);
  CHECK_NEAR(w[0], 0.983011, 1e-6);
  CHECK_NEAR(w[1], -2.005982, 1e-6);
  CHECK_NEAR(w[2], 0.5089705, 1e-6);
  /* No weight decay for this tensor (bias-style), momentum 0.9: step 1 w = w0 - 0.1 g1,
   * step 2 buf = 0.9 g1 + g2, w -= 0.1 buf. */
  sw_sgd o = {.momentum = 0.9f};
  float buf[3];
  memcpy(w, w0, sizeof w0);
  sw_sgd_step(&o, 0.1f, w, g1, buf, 3, 1);
  sw_sgd_step(&o, 0.1f, w, g2, buf, 3, 0);
  for (int i = 0; i < 3; i++) CHECK_NEAR(w[i], w0[i] - 0.1 * g1[i] - 0.1 * (0.9 * g1[i] + g2[i]), 1e-6);
  /* Dampening 0.5: buf = 0.9 buf + 0.5 d after the first step (which copies d undamped). */
  o = (sw_sgd){.momentum = 0.9f, .dampening = 0.5f};
  memcpy(w, w0, sizeof w0);
  sw_sgd_step(&o, 0.1f, w, g1, buf, 3, 1);
  sw_sgd_step(&o, 0.1f, w, g2, buf, 3, 0);
  for (int i = 0; i < 3; i++) CHECK_NEAR(w[i], w0[i] - 0.1 * g1[i] - 0.1 * (0.9 * g1[i] + 0.5 * g2[i]), 1e-6);
}

/* Double-precision reference of the same update. */
static void ref_step(const sw_sgd *o, double lr, double *w, const float *g, double *buf, int64_t n,
                     int first) {
  for (int64_t i = 0; i < n; i++) {
    double d = g[i] + (double)o->weight_decay * w[i];
    if (o->momentum != 0) {
      buf[i] = first ? d : o->momentum * buf[i] + (1.0 - o->dampening) * d;
      d = o->nesterov ? d + o->momentum * buf[i] : buf[i];
    }
    w[i] -= lr * d;
  }
}

static void test_reference(void) {
  enum { N = 100003, STEPS = 20 };
  float *w = malloc(N * sizeof(float)), *g = malloc(N * sizeof(float)), *buf = malloc(N * sizeof(float));
  float *w1 = malloc(N * sizeof(float)), *buf1 = malloc(N * sizeof(float));
  double *rw = malloc(N * sizeof(double)), *rb = malloc(N * sizeof(double));
  for (int nest = 0; nest < 2; nest++) {
    sw_sgd o = {.momentum = 0.9f, .weight_decay = 5e-4f, .nesterov = nest};
    sw_rng r;
    sw_rng_seed(&r, 1);
    sw_rng_fill_normal(&r, w, N, 0.0f, 0.1f);
    for (int64_t i = 0; i < N; i++) rw[i] = w[i];
    memcpy(w1, w, N * sizeof(float));
    for (int s = 0; s < STEPS; s++) {
      sw_rng_fill_normal(&r, g, N, 0.0f, 1.0f);
      double lr = 0.1 * (1.0 - s / 40.0);
      sw_sgd_step(&o, (float)lr, w, g, buf, N, s == 0);
      ref_step(&o, (double)(float)lr, rw, g, rb, N, s == 0);
      int nt = omp_get_max_threads();
      omp_set_num_threads(1);
      sw_sgd_step(&o, (float)lr, w1, g, buf1, N, s == 0);
      omp_set_num_threads(nt);
    }
    double maxerr = 0;
    for (int64_t i = 0; i < N; i++) {
      double err = fabs(w[i] - rw[i]);
      maxerr = err > maxerr ? err : maxerr;
    }
    printf("  nesterov=%d: max |w - w_ref(double)| after %d steps = %.3g\n", nest, STEPS, maxerr);
    CHECK(maxerr < 2e-5);
    CHECK(memcmp(w, w1, N * sizeof(float)) == 0); /* thread count does not matter */
    CHECK(memcmp(buf, buf1, N * sizeof(float)) == 0);
  }
  free(w);
  free(g);
  free(buf);
  free(w1);
  free(buf1);
  free(rw);
  free(rb);
}

static void test_check(void) {
  sw_err e = {0};
  sw_sgd ok = {.momentum = 0.9f, .weight_decay = 5e-4f, .nesterov = 1};
  CHECK(sw_sgd_check(&ok, &e) == SW_OK);
  sw_sgd bad = {.momentum = 0.0f, .nesterov = 1};
  CHECK(sw_sgd_check(&bad, &e) == SW_EUSAGE);
  CHECK_CONTAINS(e.msg, "Nesterov");
  CHECK_CONTAINS(e.hint, "momentum");
  sw_err_clear(&e);
  bad = (sw_sgd){.momentum = 0.9f, .dampening = 0.1f, .nesterov = 1};
  CHECK(sw_sgd_check(&bad, &e) == SW_EUSAGE);
  sw_err_clear(&e);
  bad = (sw_sgd){.momentum = -0.5f};
  CHECK(sw_sgd_check(&bad, &e) == SW_EUSAGE);
  CHECK_CONTAINS(e.msg, "momentum");
  sw_err_clear(&e);
  bad = (sw_sgd){.weight_decay = NAN};
  CHECK(sw_sgd_check(&bad, &e) == SW_EUSAGE);
  CHECK_CONTAINS(e.msg, "weight decay");
}

int main(void) {
  test_hand();
  test_reference();
  test_check();
  return check_report("test_optim");
}
