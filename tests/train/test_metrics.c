/* Metrics: JSON escaping and structure, the epoch record, the JSONL file, and progress output in
 * plain, TTY and quiet modes. */
#include "train/metrics.h"

#include <stdlib.h>
#include <unistd.h>

#include "tests/train/check.h"

static void test_escaping(void) {
  sw_json j;
  sw_json_init(&j);
  CHECK_STR(sw_json_text(&j), "");
  sw_json_array_begin(&j, NULL);
  sw_json_string(&j, NULL, "plain");
  sw_json_string(&j, NULL, "q\"b\\s/");
  sw_json_string(&j, NULL, "\n\r\t\b\f");
  sw_json_string(&j, NULL, "\x01\x1f\x7f");
  sw_json_string(&j, NULL, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"); /* é € 😀 pass through */
  sw_json_string(&j, NULL, "bad\xff");                                   /* invalid byte */
  sw_json_string(&j, NULL, "\xc0\xaf");                                  /* overlong '/' */
  sw_json_string(&j, NULL, "\xed\xa0\x80");                              /* UTF-16 surrogate */
  sw_json_string(&j, NULL, "cut\xe2\x82");                               /* truncated sequence */
  sw_json_string(&j, NULL, "");
  sw_json_string(&j, NULL, NULL);
  sw_json_array_end(&j);
  CHECK_STR(sw_json_text(&j),
            "[\"plain\",\"q\\\"b\\\\s/\",\"\\n\\r\\t\\b\\f\",\"\\u0001\\u001f\x7f\","
            "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\",\"bad\\ufffd\",\"\\ufffd\\ufffd\","
            "\"\\ufffd\\ufffd\\ufffd\",\"cut\\ufffd\\ufffd\",\"\",null]");
  sw_json_free(&j);
}

static void test_numbers_nesting(void) {
  sw_json j;
  sw_json_init(&j);
  sw_json_object_begin(&j, NULL);
  sw_json_number(&j, "a", 0.1);
  sw_json_number(&j, "b", 1e-5);
  sw_json_number(&j, "c", -2.5e20);
  sw_json_number(&j, "nan", NAN);
  sw_json_number(&j, "inf", -INFINITY);
  sw_json_number(&j, "f", (double)0.1f);
  sw_json_int(&j, "i", -9007199254740993LL);
  sw_json_bool(&j, "t", 1);
  sw_json_bool(&j, "f2", 0);
  sw_json_null(&j, "n");
  sw_json_string(&j, "key \"quoted\"", "v");
  sw_json_array_begin(&j, "layers");
  for (int l = 0; l < 2; l++) {
    sw_json_object_begin(&j, NULL);
    sw_json_string(&j, "name", l ? "fc" : "conv1");
    sw_json_number(&j, "sparsity", l ? 0.9 : 0.0);
    sw_json_array_begin(&j, "shape");
    sw_json_int(&j, NULL, 6);
    sw_json_int(&j, NULL, l + 1);
    sw_json_array_end(&j);
    sw_json_object_end(&j);
  }
  sw_json_array_end(&j);
  sw_json_array_begin(&j, "empty");
  sw_json_array_end(&j);
  sw_json_object_begin(&j, "obj");
  sw_json_object_end(&j);
  sw_json_object_end(&j);
  CHECK_STR(sw_json_text(&j),
            "{\"a\":0.1,\"b\":1e-05,\"c\":-2.5e+20,\"nan\":null,\"inf\":null,\"f\":0.100000001,"
            "\"i\":-9007199254740993,\"t\":true,\"f2\":false,\"n\":null,\"key \\\"quoted\\\"\":\"v\","
            "\"layers\":[{\"name\":\"conv1\",\"sparsity\":0,\"shape\":[6,1]},"
            "{\"name\":\"fc\",\"sparsity\":0.9,\"shape\":[6,2]}],\"empty\":[],\"obj\":{}}");
  sw_json_reset(&j);
  CHECK_STR(sw_json_text(&j), "");
  sw_json_int(&j, NULL, 3); /* a bare top-level value is allowed */
  CHECK_STR(sw_json_text(&j), "3");
  sw_json_free(&j);
}

static void test_jsonl(void) {
  char path[256];
  const char *t = getenv("TMPDIR");
  snprintf(path, sizeof path, "%s/swatc-test-metrics-XXXXXX", t && *t ? t : "/tmp");
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  close(fd);
  sw_err e = {0};
  sw_jsonl w;
  sw_json j;
  sw_json_init(&j);
  CHECK(sw_jsonl_open(&w, path, 0, &e) == SW_OK);
  sw_epoch_stats s = {.epoch = 1,
                      .train_loss = 0.5,
                      .train_acc = 0.8125,
                      .test_loss = 0.625,
                      .test_acc = 0.75,
                      .img_per_s = 1234.5,
                      .lr = 0.1,
                      .seconds = 12.25};
  sw_metrics_epoch_begin(&j, &s);
  sw_json_string(&j, "phase", "dense\tfirst");
  sw_json_object_end(&j);
  const char *line1 =
      "{\"epoch\":1,\"train_loss\":0.5,\"train_acc\":0.8125,\"test_loss\":0.625,\"test_acc\":0.75,"
      "\"img_per_s\":1234.5,\"lr\":0.1,\"seconds\":12.25,\"phase\":\"dense\\tfirst\"}";
  CHECK_STR(sw_json_text(&j), line1);
  CHECK(sw_jsonl_write(&w, &j, &e) == SW_OK);
  /* Flushed per line: the file already holds it before closing. */
  FILE *f = fopen(path, "r");
  char buf[1024] = {0};
  CHECK(f && fgets(buf, sizeof buf, f));
  fclose(f);
  CHECK(strlen(buf) == strlen(line1) + 1 && buf[strlen(line1)] == '\n');
  sw_json_reset(&j);
  s.epoch = 2;
  s.train_loss = NAN;
  sw_metrics_epoch_begin(&j, &s);
  sw_json_object_end(&j);
  CHECK(sw_jsonl_write(&w, &j, &e) == SW_OK);
  CHECK(sw_jsonl_close(&w, &e) == SW_OK);
  /* Append mode (resumed run) keeps earlier lines. */
  CHECK(sw_jsonl_open(&w, path, 1, &e) == SW_OK);
  CHECK(sw_jsonl_write(&w, &j, &e) == SW_OK);
  CHECK(sw_jsonl_close(&w, &e) == SW_OK);
  f = fopen(path, "r");
  int lines = 0;
  while (fgets(buf, sizeof buf, f)) {
    lines++;
    if (lines == 2) CHECK_CONTAINS(buf, "{\"epoch\":2,\"train_loss\":null,");
  }
  fclose(f);
  CHECK(lines == 3);
  remove(path);
  /* A path that cannot be opened. */
  CHECK(sw_jsonl_open(&w, "/nonexistent-dir/m.jsonl", 0, &e) == SW_EIO);
  CHECK_CONTAINS(e.msg, "/nonexistent-dir/m.jsonl");
  sw_json_free(&j);
}

/* Reads everything written to f so far. */
static char *slurp(FILE *f) {
  fflush(f);
  long n = ftell(f);
  rewind(f);
  char *b = calloc((size_t)n + 1, 1);
  if (!b) exit(1);
  CHECK(fread(b, 1, (size_t)n, f) == (size_t)n);
  return b;
}

static int count(const char *s, char c) {
  int k = 0;
  for (; *s; s++) k += *s == c;
  return k;
}

static void test_progress(void) {
  sw_epoch_stats s = {.epoch = 3,
                      .train_loss = 0.5,
                      .train_acc = 0.9,
                      .test_loss = 0.6,
                      .test_acc = 0.88,
                      .img_per_s = 5000,
                      .lr = 0.01,
                      .seconds = 4.5};
  /* Plain: a line at every 10% of 100 batches (10 lines), then the epoch summary. */
  FILE *f = tmpfile();
  sw_progress p;
  sw_progress_init(&p, f, SW_PROGRESS_AUTO); /* a file is not a terminal */
  CHECK(p.mode == SW_PROGRESS_PLAIN);
  sw_progress_epoch_begin(&p, 2, 5, 100);
  for (int b = 1; b <= 100; b++) sw_progress_update(&p, b, 0.5, 0.9, b * 64);
  sw_progress_epoch_end(&p, &s);
  char *out = slurp(f);
  CHECK(count(out, '\n') == 11 && count(out, '\r') == 0);
  CHECK_CONTAINS(out, "epoch 3/5  batch 10/100  loss 0.5000  acc 90.00%");
  CHECK_CONTAINS(out, "batch 100/100");
  CHECK_CONTAINS(out, "eta 0:00");
  CHECK_CONTAINS(out, "(run ");
  CHECK_CONTAINS(out, "epoch 3/5  train loss 0.5000 acc 90.00%  test loss 0.6000 acc 88.00%  lr 0.01");
  free(out);
  fclose(f);
  /* Plain with fewer than 10 batches: one line per batch. */
  f = tmpfile();
  sw_progress_init(&p, f, SW_PROGRESS_PLAIN);
  sw_progress_epoch_begin(&p, 0, 0, 3);
  for (int b = 1; b <= 3; b++) sw_progress_update(&p, b, 1.0, 0.5, b);
  out = slurp(f);
  CHECK(count(out, '\n') == 3);
  CHECK_CONTAINS(out, "epoch 1  batch 3/3");
  free(out);
  fclose(f);
  /* TTY: one line redrawn with \r (the last batch always drawn), cleared before the summary. */
  f = tmpfile();
  sw_progress_init(&p, f, SW_PROGRESS_TTY);
  sw_progress_epoch_begin(&p, 0, 1, 1000);
  for (int b = 1; b <= 1000; b++) sw_progress_update(&p, b, 0.25, 0.5, b);
  sw_progress_message(&p, "checkpoint saved");
  sw_progress_epoch_end(&p, &s);
  out = slurp(f);
  CHECK(count(out, '\r') >= 2 && count(out, '\n') == 2);
  CHECK(count(out, '\r') < 200); /* rate-limited: not one redraw per batch */
  CHECK_CONTAINS(out, "\repoch 1/1  batch 1/1000");
  CHECK_CONTAINS(out, "batch 1000/1000");
  CHECK_CONTAINS(out, "\r\033[Kcheckpoint saved\n");
  free(out);
  fclose(f);
  /* Quiet: only the result. */
  f = tmpfile();
  sw_progress_init(&p, f, SW_PROGRESS_QUIET);
  sw_progress_epoch_begin(&p, 0, 1, 10);
  for (int b = 1; b <= 10; b++) sw_progress_update(&p, b, 0.25, 0.5, b);
  sw_progress_message(&p, "hidden");
  sw_progress_epoch_end(&p, &s);
  sw_progress_result(&p, "test accuracy %.2f%%", 91.25);
  out = slurp(f);
  CHECK_STR(out, "test accuracy 91.25%\n");
  free(out);
  fclose(f);
  CHECK(sw_clock_seconds() > 0);
}

int main(void) {
  test_escaping();
  test_numbers_nesting();
  test_jsonl();
  test_progress();
  return check_report("test_metrics");
}
