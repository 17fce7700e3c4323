/* Evaluation: the evaluation graph over a test split (after every training epoch) and `swatc eval` of an
 * ONNX model. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "importer/importer.h"
#include "train/trainer_internal.h"

int64_t tr_correct(const float *logits, const int64_t *labels, int64_t n, int64_t classes) {
  int64_t c = 0;
  for (int64_t i = 0; i < n; i++) {
    const float *l = logits + i * classes;
    int64_t best = 0;
    for (int64_t k = 1; k < classes; k++)
      if (l[k] > l[best]) best = k;
    c += best == labels[i];
  }
  return c;
}

/* Runs the evaluation graph over the whole test split: mean loss, accuracy and the counts behind it.
 * sw (may be NULL) sets the current SWAT budgets on the evaluation programs first. */
int tr_evaluate(model *m, rt_state *st, const sw_dataset *test, const trainer_opts *o, const swat_run *sw, double *loss,
                    double *acc, int64_t *n_good, int64_t *n_seen, sw_err *e) {
  sw_loader_opts lo = {.batch = o->batch, .shuffle = 0, .drop_last = 0, .augment = 0, .seed = o->seed};
  sw_loader ld;
  if (sw_loader_init(&ld, test, &lo, e)) return e->code;
  double lsum = 0;
  int64_t good = 0, seen = 0, got;
  int rc = SW_OK;
  float *img = sw_xmalloc(sizeof(float) * (size_t)o->batch * (size_t)sw_dataset_sample_size(test));
  int64_t *lab = sw_xmalloc(sizeof(int64_t) * (size_t)o->batch);
  const rt_program *budgets_set = NULL;
  while ((got = sw_loader_next(&ld, img, lab)) > 0) {
    bound *b = tr_program_for(m, st, got, o, 0, e);
    if (!b) { rc = e->code; break; }
    if (sw && b->prog != budgets_set) { /* the current budgets, once per program (they do not move here) */
      tr_swat_apply(sw, b->prog);
      budgets_set = b->prog;
    }
    memcpy(b->images, img, sizeof(float) * (size_t)got * (size_t)sw_dataset_sample_size(test));
    memcpy(b->labels, lab, sizeof(int64_t) * (size_t)got);
    if ((rc = rt_program_run(b->prog, 0, e))) break;
    lsum += (double)*b->loss * (double)got;
    good += tr_correct(b->logits, lab, got, b->classes);
    seen += got;
  }
  free(img);
  free(lab);
  sw_loader_free(&ld);
  *loss = seen ? lsum / (double)seen : NAN;
  *acc = seen ? (double)good / (double)seen : 0;
  if (n_good) *n_good = good;
  if (n_seen) *n_seen = seen;
  return rc;
}

/* ---- evaluation of an ONNX model ---- */

/* Parses the numbers after "key": in a small JSON object (a number or an array of numbers). */
static int json_numbers(const char *js, const char *key, double *v, int cap) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\"", key);
  const char *p = strstr(js, pat);
  if (!p) return 0;
  p = strchr(p + strlen(pat), ':');
  if (!p) return 0;
  p++;
  while (*p == ' ') p++;
  int arr = *p == '[', n = 0;
  if (arr) p++;
  while (n < cap) {
    char *end;
    double x = strtod(p, &end);
    if (end == p) break;
    v[n++] = x;
    p = end;
    while (*p == ' ') p++;
    if (!arr || *p != ',') break;
    p++;
  }
  return n;
}

/* Warns when the preprocessing recorded in the model differs from the dataset's. */
static void check_preprocess(const char *path, const unsigned char *bytes, size_t n, const sw_dataset *d) {
  char js[1024];
  if (!importer_metadata(bytes, n, "swatc.preprocess", js, sizeof js)) return;
  double scale, mean[SW_DATASET_MAX_C], std[SW_DATASET_MAX_C];
  int ok = json_numbers(js, "scale", &scale, 1) == 1 && json_numbers(js, "mean", mean, SW_DATASET_MAX_C) == d->c &&
           json_numbers(js, "std", std, SW_DATASET_MAX_C) == d->c;
#define NEAR(a, b) (fabs((a) - (double)(b)) <= 1e-6 * (fabs(a) > 1 ? fabs(a) : 1))
  ok = ok && NEAR(scale, d->scale);
  for (int c = 0; ok && c < d->c; c++) ok = NEAR(mean[c], d->mean[c]) && NEAR(std[c], d->std[c]);
#undef NEAR
  if (!ok) {
    sbuf b = {0};
    tr_preprocess_json(d, &b);
    sw_warn("'%s' was trained on inputs preprocessed as %s, but %s is preprocessed as %s: the accuracy below may not be the "
            "model's (evaluate on the dataset it was trained on)", path, js, d->name, b.p);
    free(b.p);
  }
}

int trainer_eval(const char *model_path, const trainer_opts *o, sw_err *e) {
  trainer_opts eo = *o;
  memset(&eo.swat, 0, sizeof eo.swat); /* the model's weights as they are */
  eo.swat.period = 1;
  model m = {0};
  rt_state st;
  rt_state_init(&st);
  sw_dataset test = {0};
  model_src src;
  double loss, acc;
  int64_t good = 0, seen = 0;
  int rc = tr_model_src_read(&src, model_path, e);
  if (!rc) rc = tr_build_graph(&src, &eo, eval_passes, (int)SW_ARRAY_LEN(eval_passes), NULL, &m, e);
  if (!rc) rc = rt_state_bind(&st, m.g, e);
  if (!rc) rc = tr_load_data(&m, &eo, NULL, &test, e); /* the training split only where the test split needs it */
  if (!rc) {
    check_preprocess(model_path, src.bytes, src.n, &test);
    rc = tr_evaluate(&m, &st, &test, &eo, NULL, &loss, &acc, &good, &seen, e);
  }
  if (!rc) {
    printf("%s on %s: test accuracy %.2f%% (%lld of %lld images), loss %.4f\n", model_path, test.name, 100 * acc, (long long)good,
           (long long)seen, loss);
    if (fflush(stdout) != 0) rc = sw_fail(e, SW_EIO, "writing the output failed");
  }
  tr_model_src_free(&src);
  sw_dataset_free(&test);
  tr_model_free(&m);
  rt_state_free(&st);
  return rc;
}
