#include "train/metrics.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>
#include <unistd.h>


/* ---- JSON builder ------------------------------------------------------------------------------- */

static void put(sw_json *j, const char *s, size_t n) {
  if (j->len + n + 1 > j->cap) {
    size_t cap = j->cap ? j->cap : 256;
    while (j->len + n + 1 > cap) cap *= 2;
    j->buf = sw_xrealloc(j->buf, cap);
    j->cap = cap;
  }
  memcpy(j->buf + j->len, s, n);
  j->len += n;
  j->buf[j->len] = 0;
}

static void puts_(sw_json *j, const char *s) { put(j, s, strlen(s)); }

/* Length of the valid UTF-8 sequence starting at s (1..4), or 0 if it is not valid. */
static int utf8_len(const unsigned char *s) {
  unsigned char c = s[0];
  if (c < 0x80) return 1;
  int n;
  unsigned char lo = 0x80, hi = 0xbf;
  if (c >= 0xc2 && c <= 0xdf)
    n = 2;
  else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    if (c == 0xe0) lo = 0xa0;
    if (c == 0xed) hi = 0x9f; /* no UTF-16 surrogates */
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    if (c == 0xf0) lo = 0x90;
    if (c == 0xf4) hi = 0x8f;
  } else
    return 0;
  if (s[1] < lo || s[1] > hi) return 0;
  for (int i = 2; i < n; i++)
    if (s[i] < 0x80 || s[i] > 0xbf) return 0;
  return n;
}

static void put_escaped(sw_json *j, const char *str) {
  const unsigned char *s = (const unsigned char *)str;
  put(j, "\"", 1);
  while (*s) {
    const unsigned char *run = s; /* copy plain bytes in runs */
    while (*s >= 0x20 && *s < 0x80 && *s != '"' && *s != '\\') s++;
    if (s > run) put(j, (const char *)run, (size_t)(s - run));
    if (!*s) break;
    unsigned char c = *s;
    if (c == '"')
      puts_(j, "\\\"");
    else if (c == '\\')
      puts_(j, "\\\\");
    else if (c == '\n')
      puts_(j, "\\n");
    else if (c == '\r')
      puts_(j, "\\r");
    else if (c == '\t')
      puts_(j, "\\t");
    else if (c == '\b')
      puts_(j, "\\b");
    else if (c == '\f')
      puts_(j, "\\f");
    else if (c < 0x20) {
      char u[8];
      snprintf(u, sizeof u, "\\u%04x", c);
      puts_(j, u);
    } else {
      int n = utf8_len(s);
      if (n == 0) {
        puts_(j, "\\ufffd");
        s++;
        continue;
      }
      put(j, (const char *)s, (size_t)n);
      s += n;
      continue;
    }
    s++;
  }
  put(j, "\"", 1);
}

/* Writes the separator and the key (if inside an object) before a new member. */
static void member(sw_json *j, const char *key) {
  if (j->depth == 0) {
    SW_ASSERT(key == NULL && j->len == 0); /* one top-level value per record */
    return;
  }
  int d = j->depth - 1;
  if (!j->empty[d]) put(j, ",", 1);
  j->empty[d] = 0;
  if (j->kind[d] == 'o') {
    SW_ASSERT(key != NULL);
    put_escaped(j, key);
    put(j, ":", 1);
  } else {
    SW_ASSERT(key == NULL);
  }
}

void sw_json_init(sw_json *j) { memset(j, 0, sizeof *j); }

void sw_json_free(sw_json *j) {
  free(j->buf);
  memset(j, 0, sizeof *j);
}

void sw_json_reset(sw_json *j) {
  j->len = 0;
  j->depth = 0;
  if (j->buf) j->buf[0] = 0;
}

const char *sw_json_text(const sw_json *j) { return j->buf ? j->buf : ""; }

static void open_(sw_json *j, const char *key, char kind) {
  member(j, key);
  SW_ASSERT(j->depth < SW_JSON_MAX_DEPTH);
  j->kind[j->depth] = kind;
  j->empty[j->depth] = 1;
  j->depth++;
  put(j, kind == 'o' ? "{" : "[", 1);
}

static void close_(sw_json *j, char kind) {
  SW_ASSERT(j->depth > 0 && j->kind[j->depth - 1] == kind);
  j->depth--;
  put(j, kind == 'o' ? "}" : "]", 1);
}

void sw_json_object_begin(sw_json *j, const char *key) { open_(j, key, 'o'); }
void sw_json_object_end(sw_json *j) { close_(j, 'o'); }
void sw_json_array_begin(sw_json *j, const char *key) { open_(j, key, 'a'); }
void sw_json_array_end(sw_json *j) { close_(j, 'a'); }

void sw_json_number(sw_json *j, const char *key, double v) {
  member(j, key);
  if (!isfinite(v)) {
    puts_(j, "null");
    return;
  }
  char b[40];
  snprintf(b, sizeof b, "%.9g", v);
  puts_(j, b);
}

void sw_json_int(sw_json *j, const char *key, int64_t v) {
  member(j, key);
  char b[32];
  snprintf(b, sizeof b, "%lld", (long long)v);
  puts_(j, b);
}

void sw_json_string(sw_json *j, const char *key, const char *s) {
  member(j, key);
  if (s)
    put_escaped(j, s);
  else
    puts_(j, "null");
}

void sw_json_bool(sw_json *j, const char *key, int v) {
  member(j, key);
  puts_(j, v ? "true" : "false");
}

void sw_json_null(sw_json *j, const char *key) {
  member(j, key);
  puts_(j, "null");
}

void sw_metrics_epoch_begin(sw_json *j, const sw_epoch_stats *s) {
  sw_json_object_begin(j, NULL);
  sw_json_int(j, "epoch", s->epoch);
  sw_json_number(j, "train_loss", s->train_loss);
  sw_json_number(j, "train_acc", s->train_acc);
  sw_json_number(j, "test_loss", s->test_loss);
  sw_json_number(j, "test_acc", s->test_acc);
  sw_json_number(j, "img_per_s", s->img_per_s);
  sw_json_number(j, "lr", s->lr);
  sw_json_number(j, "seconds", s->seconds);
}

/* ---- JSONL file ---------------------------------------------------------------------------------- */

int sw_jsonl_open(sw_jsonl *w, const char *path, int append, sw_err *e) {
  memset(w, 0, sizeof *w);
  w->f = fopen(path, append ? "a" : "w");
  if (!w->f) {
    sw_fail(e, SW_EIO, "cannot open metrics file %s: %s", path, strerror(errno));
    return sw_hint(e, "check that the directory exists and is writable");
  }
  w->path = sw_xstrdup(path);
  return SW_OK;
}

int sw_jsonl_write(sw_jsonl *w, const sw_json *j, sw_err *e) {
  SW_ASSERT(w->f && j->depth == 0 && j->len > 0); /* a complete value */
  if (fwrite(j->buf, 1, j->len, w->f) != j->len || fputc('\n', w->f) == EOF || fflush(w->f) != 0)
    return sw_fail(e, SW_EIO, "cannot write metrics file %s: %s", w->path, strerror(errno));
  return SW_OK;
}

int sw_jsonl_close(sw_jsonl *w, sw_err *e) {
  int rc = SW_OK;
  if (w->f && fclose(w->f) != 0)
    rc = sw_fail(e, SW_EIO, "cannot finish metrics file %s: %s", w->path, strerror(errno));
  free(w->path);
  memset(w, 0, sizeof *w);
  return rc;
}

/* ---- progress ------------------------------------------------------------------------------------- */

double sw_clock_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Formats a duration as H:MM:SS or M:SS. */
static void fmt_dur(char *b, size_t n, double s) {
  if (!(s >= 0) || s > 1e8) {
    snprintf(b, n, "?");
    return;
  }
  long t = (long)(s + 0.5);
  if (t >= 3600)
    snprintf(b, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  else
    snprintf(b, n, "%ld:%02ld", t / 60, t % 60);
}

void sw_progress_init(sw_progress *p, FILE *f, sw_progress_mode mode) {
  memset(p, 0, sizeof *p);
  p->f = f;
  if (mode == SW_PROGRESS_AUTO) mode = isatty(fileno(f)) ? SW_PROGRESS_TTY : SW_PROGRESS_PLAIN;
  p->mode = mode;
}

void sw_progress_epoch_begin(sw_progress *p, int64_t epoch, int64_t epochs, int64_t n_batches) {
  p->epoch = epoch;
  p->epochs = epochs;
  p->n_batches = n_batches;
  p->t_start = sw_clock_seconds();
  p->t_drawn = 0;
  p->next_tenth = 1;
}

/* Ends a partial TTY line so the next output starts on a clean line. */
static void clear_line(sw_progress *p) {
  if (p->line_open) {
    fputs("\r\033[K", p->f);
    p->line_open = 0;
  }
}

void sw_progress_update(sw_progress *p, int64_t batch, double loss, double acc, int64_t images) {
  if (p->mode == SW_PROGRESS_QUIET || p->n_batches <= 0) return;
  double now = sw_clock_seconds(), el = now - p->t_start;
  int last = batch >= p->n_batches;
  if (p->mode == SW_PROGRESS_TTY) {
    if (!last && now - p->t_drawn < 0.1) return;
  } else {
    int tenth = (int)(batch * 10 / p->n_batches);
    if (tenth < p->next_tenth) return;
    p->next_tenth = tenth + 1;
  }
  p->t_drawn = now;
  double per_batch = batch > 0 ? el / (double)batch : 0;
  double eta = per_batch * (double)(p->n_batches - batch);
  char ep[48], eta_s[24], run_s[48];
  if (p->epochs > 0)
    snprintf(ep, sizeof ep, "epoch %lld/%lld", (long long)p->epoch + 1, (long long)p->epochs);
  else
    snprintf(ep, sizeof ep, "epoch %lld", (long long)p->epoch + 1);
  fmt_dur(eta_s, sizeof eta_s, eta);
  run_s[0] = 0;
  if (p->epochs > p->epoch + 1) {
    char t[24];
    fmt_dur(t, sizeof t, eta + per_batch * (double)p->n_batches * (double)(p->epochs - p->epoch - 1));
    snprintf(run_s, sizeof run_s, " (run %s)", t);
  }
  fprintf(p->f, "%s%s  batch %lld/%lld  loss %.4f  acc %.2f%%  %.0f img/s  eta %s%s%s",
          p->mode == SW_PROGRESS_TTY ? "\r" : "", ep, (long long)batch, (long long)p->n_batches, loss,
          100.0 * acc, el > 0 ? (double)images / el : 0.0, eta_s, run_s,
          p->mode == SW_PROGRESS_TTY ? "\033[K" : "\n");
  p->line_open = p->mode == SW_PROGRESS_TTY;
  fflush(p->f);
}

void sw_progress_epoch_end(sw_progress *p, const sw_epoch_stats *s) {
  if (p->mode == SW_PROGRESS_QUIET) return;
  clear_line(p);
  char ep[48];
  if (p->epochs > 0)
    snprintf(ep, sizeof ep, "epoch %lld/%lld", (long long)s->epoch, (long long)p->epochs);
  else
    snprintf(ep, sizeof ep, "epoch %lld", (long long)s->epoch);
  fprintf(p->f, "%s  train loss %.4f acc %.2f%%  test loss %.4f acc %.2f%%  lr %.4g  %.0f img/s  %.1f s\n",
          ep, s->train_loss, 100.0 * s->train_acc, s->test_loss, 100.0 * s->test_acc, s->lr, s->img_per_s,
          s->seconds);
  fflush(p->f);
}

void sw_progress_message(sw_progress *p, const char *fmt, ...) {
  if (p->mode == SW_PROGRESS_QUIET) return;
  clear_line(p);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(p->f, fmt, ap);
  va_end(ap);
  fputc('\n', p->f);
  fflush(p->f);
}

void sw_progress_result(sw_progress *p, const char *fmt, ...) {
  clear_line(p);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(p->f, fmt, ap);
  va_end(ap);
  fputc('\n', p->f);
  fflush(p->f);
}
