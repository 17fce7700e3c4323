/* Errors that reach the user.
 *
 * Two tiers (see DESIGN.md): broken invariants abort with file:line (SW_ASSERT); bad input is
 * reported through an sw_err filled once, at the place that knows what went wrong, and returned
 * up to the CLI, which prints it and exits with its code. A message says what is wrong; the hint
 * says what the user can do about it. */
#ifndef SWATC_UTIL_ERR_H
#define SWATC_UTIL_ERR_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

enum {
  SW_OK = 0,
  SW_EUSAGE = 1,   /* bad command line */
  SW_EINPUT = 2,   /* bad input: model, data, checkpoint, shapes, unsupported op */
  SW_ENOMEM = 3,   /* out of memory */
  SW_EIO = 4,      /* I/O failure writing results */
  SW_ENUMERIC = 5, /* NaN/Inf during training */
};

typedef struct sw_err {
  int code;        /* SW_OK when nothing failed */
  char msg[1024];  /* what went wrong, one or more lines */
  char hint[512];  /* what to do about it; may be empty */
} sw_err;

/* Records the first failure in e (later calls keep the first message) and returns code. */
int sw_fail(sw_err *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Sets the hint printed under the message (replaces an earlier hint). Returns e->code. */
int sw_hint(sw_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Clears e. */
void sw_err_clear(sw_err *e);
/* Prints "swatc: error: MSG\n  hint: HINT" to f. */
void sw_err_print(const sw_err *e, FILE *f);

/* Warnings go to stderr unless silenced (-q). */
extern int sw_quiet;
void sw_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Allocation that aborts on failure: for internal bookkeeping whose size the input cannot inflate.
 * Sizes that come from the input go through sw_try_* and a checked error instead. */
void *sw_xmalloc(size_t n);
void *sw_xcalloc(size_t n, size_t size);
void *sw_xrealloc(void *p, size_t n);
char *sw_xstrdup(const char *s);

#define SW_ASSERT(c)                                                                            \
  do {                                                                                          \
    if (!(c)) {                                                                                 \
      fprintf(stderr, "swatc: internal error at %s:%d: %s\n", __FILE__, __LINE__, #c);         \
      abort();                                                                                  \
    }                                                                                           \
  } while (0)

#define SW_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
