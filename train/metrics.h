/* Training metrics: a small JSON builder, a JSONL writer (one object per epoch, flushed per line)
 * and the progress display.
 *
 * A record starts with the standard epoch fields (sw_metrics_epoch_begin), takes any extra fields
 * and nested arrays/objects (per-layer sparsity, say) through the sw_json_* calls, is closed with
 * sw_json_object_end and written with sw_jsonl_write. Accuracies are fractions in [0, 1]; non-finite
 * numbers are written as null (JSON has no NaN). Strings are escaped per RFC 8259 and invalid UTF-8
 * bytes become U+FFFD, so every line is valid JSON. */
#ifndef SWATC_TRAIN_METRICS_H
#define SWATC_TRAIN_METRICS_H

#include <stdint.h>
#include <stdio.h>

#include "util/err.h"

#define SW_JSON_MAX_DEPTH 16

/* A JSON text under construction; keys are given inside objects and NULL inside arrays. */
typedef struct sw_json {
  char *buf; /* [cap] NUL-terminated text */
  size_t len, cap;
  int depth;                     /* open containers */
  char kind[SW_JSON_MAX_DEPTH];  /* 'o' object or 'a' array, per open container */
  char empty[SW_JSON_MAX_DEPTH]; /* 1 while the container has no member yet */
} sw_json;

/* Initialises an empty builder. */
void sw_json_init(sw_json *j);
/* Releases the builder's buffer. */
void sw_json_free(sw_json *j);
/* Empties the builder for the next record (keeps the buffer). */
void sw_json_reset(sw_json *j);
/* Returns the text built so far. */
const char *sw_json_text(const sw_json *j);
/* Opens an object (key: member name inside an object, NULL at top level or inside an array). */
void sw_json_object_begin(sw_json *j, const char *key);
/* Closes the innermost object. */
void sw_json_object_end(sw_json *j);
/* Opens an array (key as for objects). */
void sw_json_array_begin(sw_json *j, const char *key);
/* Closes the innermost array. */
void sw_json_array_end(sw_json *j);
/* Adds a number (non-finite values become null). */
void sw_json_number(sw_json *j, const char *key, double v);
/* Adds an integer. */
void sw_json_int(sw_json *j, const char *key, int64_t v);
/* Adds an escaped string (NULL becomes null). */
void sw_json_string(sw_json *j, const char *key, const char *s);
/* Adds true or false. */
void sw_json_bool(sw_json *j, const char *key, int v);
/* Adds null. */
void sw_json_null(sw_json *j, const char *key);

/* The standard per-epoch fields. */
typedef struct sw_epoch_stats {
  int64_t epoch;     /* epochs completed (1 after the first) */
  double train_loss; /* mean training loss over the epoch */
  double train_acc;  /* training accuracy, fraction */
  double test_loss;  /* mean test loss */
  double test_acc;   /* test accuracy, fraction */
  double img_per_s;  /* training throughput */
  double lr;         /* learning rate at the epoch's last step */
  double seconds;    /* wall time of the epoch (training + evaluation) */
} sw_epoch_stats;

/* Opens a top-level object holding s's fields; add extras, then close it with sw_json_object_end. */
void sw_metrics_epoch_begin(sw_json *j, const sw_epoch_stats *s);

/* A JSON Lines file. */
typedef struct sw_jsonl {
  FILE *f;
  char *path;
} sw_jsonl;

/* Opens path for writing (append != 0 keeps earlier lines, for resumed runs). */
int sw_jsonl_open(sw_jsonl *w, const char *path, int append, sw_err *e);
/* Writes j's complete top-level value as one line and flushes it. */
int sw_jsonl_write(sw_jsonl *w, const sw_json *j, sw_err *e);
/* Closes the file, reporting a failed final write. */
int sw_jsonl_close(sw_jsonl *w, sw_err *e);

typedef enum sw_progress_mode {
  SW_PROGRESS_AUTO = 0, /* TTY if the stream is a terminal, PLAIN otherwise */
  SW_PROGRESS_TTY,      /* one line redrawn with \r, at most 10 times a second */
  SW_PROGRESS_PLAIN,    /* whole lines at every 10% of an epoch and at its end */
  SW_PROGRESS_QUIET,    /* nothing but sw_progress_result */
} sw_progress_mode;

typedef struct sw_progress {
  FILE *f;
  sw_progress_mode mode; /* resolved: never AUTO */
  int64_t epoch, epochs; /* current epoch (from 0) and total (0 = unknown) */
  int64_t n_batches;     /* batches in this epoch */
  double t_start;        /* epoch start, sw_clock_seconds */
  double t_drawn;        /* last TTY redraw */
  int next_tenth;        /* PLAIN: next 10% mark to print */
  int line_open;         /* TTY: a partial line is on screen */
} sw_progress;

/* Returns a monotonic time in seconds. */
double sw_clock_seconds(void);
/* Sets up progress output to f (stderr, typically) in the given mode. */
void sw_progress_init(sw_progress *p, FILE *f, sw_progress_mode mode);
/* Starts timing epoch `epoch` (from 0) of `epochs` with n_batches batches. */
void sw_progress_epoch_begin(sw_progress *p, int64_t epoch, int64_t epochs, int64_t n_batches);
/* Reports that `batch` batches (1..n_batches) and `images` images of the epoch are done, with the
 * running mean loss and accuracy (fraction). */
void sw_progress_update(sw_progress *p, int64_t batch, double loss, double acc, int64_t images);
/* Prints the epoch's summary line (not in quiet mode). */
void sw_progress_epoch_end(sw_progress *p, const sw_epoch_stats *s);
/* Prints an informational line, keeping the TTY line intact (not in quiet mode). */
void sw_progress_message(sw_progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints the final result line; printed in every mode. */
void sw_progress_result(sw_progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
