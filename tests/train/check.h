/* Minimal checks for the train/ tests: count failures, report file:line, keep going. */
#ifndef SWATC_TESTS_TRAIN_CHECK_H
#define SWATC_TESTS_TRAIN_CHECK_H

#include <math.h>
#include <stdio.h>
#include <string.h>

static int check_failures;

#define CHECK(c)                                                            \
  do {                                                                      \
    if (!(c)) {                                                             \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c); \
      check_failures++;                                                     \
    }                                                                       \
  } while (0)

/* |a - b| <= tol * max(1, |b|) */
#define CHECK_NEAR(a, b, tol)                                                               \
  do {                                                                                      \
    double a_ = (double)(a), b_ = (double)(b);                                              \
    if (!(fabs(a_ - b_) <= (tol) * (fabs(b_) > 1 ? fabs(b_) : 1))) {                        \
      fprintf(stderr, "%s:%d: %s = %.9g, expected %.9g\n", __FILE__, __LINE__, #a, a_, b_); \
      check_failures++;                                                                     \
    }                                                                                       \
  } while (0)

#define CHECK_STR(a, b)                                                                       \
  do {                                                                                        \
    const char *a_ = (a), *b_ = (b);                                                          \
    if (strcmp(a_, b_) != 0) {                                                                \
      fprintf(stderr, "%s:%d: %s\n   got: %s\n  want: %s\n", __FILE__, __LINE__, #a, a_, b_); \
      check_failures++;                                                                       \
    }                                                                                         \
  } while (0)

#define CHECK_CONTAINS(hay, needle)                                                                      \
  do {                                                                                                   \
    const char *h_ = (hay), *n_ = (needle);                                                              \
    if (!h_ || !strstr(h_, n_)) {                                                                        \
      fprintf(stderr, "%s:%d: \"%s\" does not contain \"%s\"\n", __FILE__, __LINE__, h_ ? h_ : "(null)", \
              n_);                                                                                       \
      check_failures++;                                                                                  \
    }                                                                                                    \
  } while (0)

static inline int check_report(const char *name) {
  if (check_failures)
    fprintf(stderr, "%s: %d check(s) failed\n", name, check_failures);
  else
    printf("%s: ok\n", name);
  return check_failures ? 1 : 0;
}

#endif
