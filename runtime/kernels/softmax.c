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

void softmax_fwd(int64_t outer, int64_t len, int64_t inner, int log_, const float *x, float *y, int nthreads) {
  int64_t lines = outer * inner;
#pragma omp parallel for num_threads(nthreads) schedule(static) if (nthreads > 1 && lines > 1)
  for (int64_t l = 0; l < lines; l++) {
    int64_t o = l / inner, i = l % inner, off = o * len * inner + i;
    line_fwd(len, inner, log_, x + off, y + off);
  }
}

void softmax_bwd(int64_t outer, int64_t len, int64_t inner, int log_, const float *y, const float *dy, float *dx,
                 int nthreads) {
  int64_t lines = outer * inner;
#pragma omp parallel for num_threads(nthreads) schedule(static) if (nthreads > 1 && lines > 1)
  for (int64_t l = 0; l < lines; l++) {
    int64_t o = l / inner, i = l % inner, off = o * len * inner + i;
    line_bwd(len, inner, log_, y + off, dy + off, dx + off);
  }
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
