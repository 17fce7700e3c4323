/* Small checkasm-style harness shared by the runtime kernel tests: a seeded RNG, tolerance checks
 * that report one line per check group, finite-difference gradient checks and aligned scratch. */
#ifndef SWATC_TESTS_RUNTIME_HARNESS_H
#define SWATC_TESTS_RUNTIME_HARNESS_H

#include <stddef.h>
#include <stdint.h>

/* Seeds the test RNG (the same seed gives the same shapes and data). */
void trng_seed(uint64_t seed);
/* Uniform integer in [lo, hi]. */
int trng_int(int lo, int hi);
/* Uniform double in [0, 1). */
double trng_unit(void);
/* Fills x[0..n) with uniform values in [lo, hi). */
void trng_fill(float *x, size_t n, float lo, float hi);

/* Allocates n bytes aligned to 64 (zeroed; aborts on failure); free with free(). */
void *talloc(size_t n);
/* Allocates n floats filled with NaN, so reads of never-written memory show up in results. */
float *talloc_nan(size_t n);

/* Starts a check group called name; every check until tgroup_end is counted in it. */
void tgroup_begin(const char *name);
/* Prints "name: N checks, worst M (tol T): ok|FAILED" and returns the number of failed checks. */
int tgroup_end(void);
/* Records a failure with a printf-style explanation (printed at once, for the first few). */
void tfail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Compares got with ref: passes when max|got-ref| <= tol * max(max|ref|, 1). Returns 1 if it passed;
 * what names the case in the failure message. */
int tcheck_close(const char *what, const float *got, const float *ref, size_t n, double tol);
/* Passes when got and ref are bit-identical. */
int tcheck_same(const char *what, const void *got, const void *ref, size_t bytes);

/* Finite-difference check of an analytic gradient. loss(ctx) runs the forward on the current x and
 * returns a scalar (in double). For up to max_coords coordinates j of x (all if n is small), the
 * central difference (loss(x+h e_j) - loss(x-h e_j)) / (2h), using the step really representable
 * in float, must satisfy |num - ana[j]| <= atol + rtol*|ana[j]|. Returns 1 if all passed. */
int tcheck_grad(const char *what, double (*loss)(void *ctx), void *ctx, float *x, size_t n, const float *ana,
                double h, double rtol, double atol, int max_coords);

/* sum_i y[i] * g[i] in double: the scalar "loss" whose gradient w.r.t. y is g. */
double tdot(const float *y, const float *g, size_t n);

/* Returns the process exit status: 0 when every group passed. */
int tresult(void);

/* One part of a test program: its name on the command line and the function that runs its groups.
 * Long programs are split in parts so that meson runs each as its own test (own timeout, run in
 * parallel with the others). */
typedef struct {
  const char *name;
  void (*run)(void);
} tpart;

/* Runs the parts named in argv[1..] (every part when there is none), each after seeding the RNG with
 * seed + its index, so a part's shapes do not depend on which others ran. Returns the process exit
 * status: tresult(), or 2 with a message for a name that is not a part. */
int trun(int argc, char **argv, uint64_t seed, const tpart *parts, int nparts);

#endif
