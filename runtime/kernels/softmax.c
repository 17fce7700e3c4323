/* Softmax, LogSoftmax and SoftmaxCrossEntropyLoss (see softmax.h). */
#include "runtime/kernels/softmax.h"

#include <math.h>
#include <string.h>

#include "runtime/kernels/kern_internal.h"

/* One line of len elements at stride st. */
static void line_fwd(int64_t len, int64_t st, int log_, const float *x, float *y) {
  float mx = -INFINITY;
  for (int64_t i = 0; i < len; i++)
    if (x[i * st] > mx) mx = x[i * st];
  if (mx == -INFINITY) mx = 0.0f; /* all -inf: keep exp() finite, the result is NaN/-inf as it should */
  double sum = 0.0;
  for (int64_t i = 0; i < len; i++) sum += expf(x[i * st] - mx);
  if (log_) {
    float ls = (float)log(sum); /* (x - max) - log(sum): no cancellation against a large max */
    for (int64_t i = 0; i < len; i++) y[i * st] = (x[i * st] - mx) - ls;
  } else {
    float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < len; i++) y[i * st] = expf(x[i * st] - mx) * inv;
  }
}

static void line_bwd(int64_t len, int64_t st, int log_, const float *y, const float *dy, float *dx) {
  double s = 0.0;
  if (log_) {
    for (int64_t i = 0; i < len; i++) s += dy[i * st];
    for (int64_t i = 0; i < len; i++) dx[i * st] = dy[i * st] - expf(y[i * st]) * (float)s;
  } else {
    for (int64_t i = 0; i < len; i++) s += (double)dy[i * st] * y[i * st];
    for (int64_t i = 0; i < len; i++) dx[i * st] = y[i * st] * (dy[i * st] - (float)s);
  }
}

/* Operands of softmax_fwd and softmax_bwd, shared by their workers. */
typedef struct softmax_job {
  int64_t len, inner, lines;
  int log_;
  const float *x, *y, *dy; /* forward: x; backward: y and dy */
  float *out;              /* forward: y; backward: dx */
} softmax_job;

/* Worker t's lines of softmax_fwd (j->dy NULL) or softmax_bwd. */
static void softmax_part(void *ctx, int t, int T) {
  const softmax_job *j = ctx;
  int64_t lo, hi;
  kern_split(j->lines, t, T, &lo, &hi);
  for (int64_t l = lo; l < hi; l++) {
    int64_t o = l / j->inner, i = l % j->inner, off = o * j->len * j->inner + i;
    if (j->dy)
      line_bwd(j->len, j->inner, j->log_, j->y + off, j->dy + off, j->out + off);
    else
      line_fwd(j->len, j->inner, j->log_, j->x + off, j->out + off);
  }
}

void softmax_fwd(int64_t outer, int64_t len, int64_t inner, int log_, const float *x, float *y, int nthreads) {
  softmax_job j = {.len = len, .inner = inner, .lines = outer * inner, .log_ = log_, .x = x, .out = y};
  kern_parallel(j.lines > 1 ? nthreads : 1, softmax_part, &j);
}


void softmax_bwd(int64_t outer, int64_t len, int64_t inner, int log_, const float *y, const float *dy, float *dx,
                 int nthreads) {
  softmax_job j = {.len = len, .inner = inner, .lines = outer * inner, .log_ = log_, .y = y, .dy = dy, .out = dx};
  kern_parallel(j.lines > 1 ? nthreads : 1, softmax_part, &j);
}

static int ignored(const sce_desc *d, int64_t label) { return d->has_ignore && label == d->ignore_index; }

/* The weight of a sample (0 when ignored) and the summed weight of all samples (mean's denominator). */
static double sample_weight(const sce_desc *d, const float *weight, int64_t label) {
  if (ignored(d, label)) return 0.0;
  return weight ? weight[label] : 1.0;
}

int sce_fwd(const sce_desc *d, const float *logits, const int64_t *labels, const float *weight, float *loss,
            float *log_prob, sw_err *e) {
  int64_t C = d->C, D = d->D;
  for (int64_t n = 0; n < d->N; n++)
    for (int64_t j = 0; j < D; j++) {
      int64_t lab = labels[n * D + j];
      if (!ignored(d, lab) && (lab < 0 || lab >= C)) {
        sw_fail(e, SW_EINPUT, "SoftmaxCrossEntropyLoss: label %lld of sample %lld is outside [0, %lld)",
                (long long)lab, (long long)n, (long long)C);
        sw_hint(e, "labels must be class indices; check the dataset's label range against the model's classes");
        return SW_EINPUT;
      }
    }
  softmax_fwd(d->N, C, D, 1, logits, log_prob, 1);
  double total = 0.0, wsum = 0.0;
  for (int64_t n = 0; n < d->N; n++)
    for (int64_t j = 0; j < D; j++) {
      int64_t lab = labels[n * D + j];
      double w = sample_weight(d, weight, lab);
      double l = w ? -w * log_prob[(n * C + lab) * D + j] : 0.0;
      if (d->reduction == SCE_NONE) loss[n * D + j] = (float)l;
      total += l;
      wsum += w;
    }
  if (d->reduction == SCE_SUM) loss[0] = (float)total;
  if (d->reduction == SCE_MEAN) loss[0] = (float)(total / wsum); /* 0/0 = NaN when everything is ignored */
  return SW_OK;
}

void sce_bwd(const sce_desc *d, const float *log_prob, const int64_t *labels, const float *weight, const float *dloss,
             float *dlogits) {
  int64_t C = d->C, D = d->D;
  double wsum = 0.0;
  if (d->reduction == SCE_MEAN)
    for (int64_t i = 0; i < (int64_t)d->N * D; i++) wsum += sample_weight(d, weight, labels[i]);
  for (int64_t n = 0; n < d->N; n++)
    for (int64_t j = 0; j < D; j++) {
      int64_t lab = labels[n * D + j];
      double w = sample_weight(d, weight, lab), g;
      if (d->reduction == SCE_NONE)
        g = dloss[n * D + j] * w;
      else if (d->reduction == SCE_SUM)
        g = dloss[0] * w;
      else
        g = wsum > 0.0 ? dloss[0] * w / wsum : 0.0;
      for (int64_t c = 0; c < C; c++) {
        size_t i = (size_t)((n * C + c) * D + j);
        dlogits[i] = w ? (float)(g * (exp((double)log_prob[i]) - (c == lab ? 1.0 : 0.0))) : 0.0f;
      }
    }
}
