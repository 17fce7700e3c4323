/* Internal to train/: attach a hint to a failure just recorded.
 *
 * sw_fail clears the hint when it records a message, so a hint must be set after the failure;
 * sw_with_hint takes the failure's return code first, which makes the order explicit:
 *     return sw_with_hint(sw_fail(e, SW_EINPUT, "what went wrong"), e, "what to do");
 * e must not be NULL. */
#ifndef SWATC_TRAIN_HINT_H
#define SWATC_TRAIN_HINT_H

#include <stdarg.h>
#include <stdio.h>

#include "util/err.h"

/* Sets e's hint (like sw_hint) and returns rc, the code of the failure it belongs to. */
static inline __attribute__((format(printf, 3, 4))) int sw_with_hint(int rc, sw_err *e, const char *fmt,
                                                                     ...) {
  SW_ASSERT(e != NULL);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->hint, sizeof e->hint, fmt, ap);
  va_end(ap);
  return rc;
}

#endif
