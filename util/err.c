#include "util/err.h"

#include <string.h>

int sw_quiet = 0;

int sw_fail(sw_err *e, int code, const char *fmt, ...) {
  if (!e) return code;
  if (e->code != SW_OK) return e->code; /* keep the first, most specific message */
  e->code = code;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->msg, sizeof e->msg, fmt, ap);
  va_end(ap);
  e->hint[0] = 0;
  return code;
}

int sw_hint(sw_err *e, const char *fmt, ...) {
  if (!e) return SW_OK;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->hint, sizeof e->hint, fmt, ap);
  va_end(ap);
  return e->code;
}

void sw_err_clear(sw_err *e) {
  e->code = SW_OK;
  e->msg[0] = 0;
  e->hint[0] = 0;
}

/* Names in messages come from untrusted files: print control bytes escaped, never raw. */
static void put_escaped(FILE *f, const char *s) {
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p < 0x20 || *p == 0x7f) fprintf(f, "\\x%02x", *p);
    else fputc(*p, f);
  }
}

void sw_err_print(const sw_err *e, FILE *f) {
  fputs("swatc: error: ", f);
  put_escaped(f, e->msg[0] ? e->msg : "unknown failure");
  fputc('\n', f);
  if (e->hint[0]) {
    fputs("  hint: ", f);
    put_escaped(f, e->hint);
    fputc('\n', f);
  }
}

void sw_warn(const char *fmt, ...) {
  if (sw_quiet) return;
  va_list ap;
  char buf[2048];
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  fputs("swatc: warning: ", stderr);
  put_escaped(stderr, buf);
  fputc('\n', stderr);
}

static void *oom(size_t n) {
  fprintf(stderr, "swatc: out of memory (allocating %zu bytes)\n", n);
  exit(SW_ENOMEM);
}

void *sw_xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  return p ? p : oom(n);
}

void *sw_xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size ? size : 1);
  return p ? p : oom(n * size);
}

void *sw_xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  return q ? q : oom(n);
}

char *sw_xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = sw_xmalloc(n);
  memcpy(p, s, n);
  return p;
}
