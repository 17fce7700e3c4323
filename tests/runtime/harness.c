/* Test harness for the runtime kernels (see harness.h). */
#include "harness.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

void trng_seed(uint64_t seed) { rng_state = seed ^ 0x9e3779b97f4a7c15ull; }

static uint64_t next64(void) { /* splitmix64 */
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

double trng_unit(void) { return (double)(next64() >> 11) * (1.0 / 9007199254740992.0); }

int trng_int(int lo, int hi) { return lo + (int)(next64() % (uint64_t)(hi - lo + 1)); }

void trng_fill(float *x, size_t n, float lo, float hi) {
  for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * (float)trng_unit();
}

void *talloc(size_t n) {
  size_t sz = (n + 63) / 64 * 64;
  void *p = aligned_alloc(64, sz ? sz : 64);
  if (!p) {
    fprintf(stderr, "test: out of memory (%zu bytes)\n", n);
    exit(2);
  }
  memset(p, 0, sz ? sz : 64);
  return p;
}

float *talloc_nan(size_t n) {
  float *p = talloc(n * sizeof(float));
  for (size_t i = 0; i < n; i++) p[i] = NAN;
  return p;
}

static const char *g_name;
static int g_checks, g_fails, g_total_fails, g_printed;
static double g_worst, g_tol;

void tgroup_begin(const char *name) {
  g_name = name;
  g_checks = g_fails = g_printed = 0;
  g_worst = 0.0;
  g_tol = 0.0;
}

int tgroup_end(void) {
  if (g_tol > 0)
    printf("%-44s %5d checks, worst %.2e (tol %.0e): %s\n", g_name, g_checks, g_worst, g_tol,
           g_fails ? "FAILED" : "ok");
  else
    printf("%-44s %5d checks: %s\n", g_name, g_checks, g_fails ? "FAILED" : "ok");
  fflush(stdout);
  g_total_fails += g_fails;
  return g_fails;
}

void tfail(const char *fmt, ...) {
  g_fails++;
  if (g_printed++ >= 8) return;
  va_list ap;
  va_start(ap, fmt);
  fprintf(stdout, "  FAIL [%s] ", g_name);
  vfprintf(stdout, fmt, ap);
  fputc('\n', stdout);
  va_end(ap);
}

int tcheck_close(const char *what, const float *got, const float *ref, size_t n, double tol) {
  double scale = 1.0, worst = 0.0;
  size_t wi = 0;
  for (size_t i = 0; i < n; i++)
    if (isfinite(ref[i]) && fabs(ref[i]) > scale) scale = fabs(ref[i]);
  for (size_t i = 0; i < n; i++) {
    double err = got[i] == ref[i] ? 0.0 : fabs((double)got[i] - ref[i]); /* equal infinities match */
    if (!(err <= worst)) { /* also catches NaN */
      worst = isnan(err) ? INFINITY : err;
      wi = i;
    }
  }
  g_checks++;
  if (tol > g_tol) g_tol = tol;
  double rel = worst / scale;
  if (rel > g_worst) g_worst = rel;
  if (!(rel <= tol)) {
    tfail("%s: element %zu got %.8g want %.8g (relative error %.3g > %.1g)", what, wi, n ? got[wi] : 0.0,
          n ? ref[wi] : 0.0, rel, tol);
    return 0;
  }
  return 1;
}

int tcheck_same(const char *what, const void *got, const void *ref, size_t bytes) {
  g_checks++;
  if (memcmp(got, ref, bytes)) {
    tfail("%s: results differ between two identical runs", what);
    return 0;
  }
  return 1;
}

double tdot(const float *y, const float *g, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; i++) s += (double)y[i] * g[i];
  return s;
}

int tcheck_grad(const char *what, double (*loss)(void *ctx), void *ctx, float *x, size_t n, const float *ana,
                double h, double rtol, double atol, int max_coords) {
  int ok = 1;
  size_t count = n < (size_t)max_coords ? n : (size_t)max_coords;
  for (size_t c = 0; c < count; c++) {
    size_t j = count == n ? c : (size_t)(trng_unit() * n);
    float v = x[j];
    float xp = (float)(v + h), xm = (float)(v - h);
    x[j] = xp;
    double lp = loss(ctx);
    x[j] = xm;
    double lm = loss(ctx);
    x[j] = v;
    double num = (lp - lm) / ((double)xp - (double)xm);
    double err = fabs(num - ana[j]), lim = atol + rtol * fabs(ana[j]);
    g_checks++;
    if (rtol > g_tol) g_tol = rtol;
    double rel = err / (atol / rtol + fabs(ana[j]));
    if (rel > g_worst) g_worst = rel;
    if (!(err <= lim)) {
      tfail("%s: d/dx[%zu] numeric %.6g analytic %.6g (|diff| %.3g > %.3g)", what, j, num, (double)ana[j], err, lim);
      ok = 0;
    }
  }
  return ok;
}

int tresult(void) {
  if (g_total_fails) printf("%d check(s) FAILED\n", g_total_fails);
  return g_total_fails ? 1 : 0;
}

int trun(int argc, char **argv, uint64_t seed, const tpart *parts, int nparts) {
  for (int a = 1; a < argc; a++) {
    int known = 0;
    for (int i = 0; i < nparts; i++) known |= !strcmp(argv[a], parts[i].name);
    if (!known) {
      fprintf(stderr, "%s: no part '%s'; the parts are:", argv[0], argv[a]);
      for (int i = 0; i < nparts; i++) fprintf(stderr, " %s", parts[i].name);
      fprintf(stderr, "\n");
      return 2;
    }
  }
  for (int i = 0; i < nparts; i++) {
    int run = argc < 2;
    for (int a = 1; a < argc; a++) run |= !strcmp(argv[a], parts[i].name);
    if (!run) continue;
    trng_seed(seed + (uint64_t)i);
    parts[i].run();
  }
  return tresult();
}
