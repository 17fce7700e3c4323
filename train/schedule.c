#include "train/schedule.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>


int sw_sched_check(const sw_sched *s, sw_err *e) {
  if (!isfinite(s->base_lr) || s->base_lr <= 0)
    return sw_fail(e, SW_EUSAGE, "learning rate %g must be a positive number", s->base_lr);
  if (s->warmup_epochs < 0)
    return sw_fail(e, SW_EUSAGE, "warm-up of %lld epochs is negative", (long long)s->warmup_epochs);
  switch (s->kind) {
    case SW_SCHED_CONSTANT: return SW_OK;
    case SW_SCHED_STEP:
      if (s->gamma < 0 || !isfinite(s->gamma) || s->gamma > 1)
        return sw_fail(e, SW_EUSAGE, "step schedule factor %g must be in (0, 1]", s->gamma);
      if (s->n_milestones < 0 || s->n_milestones > SW_SCHED_MAX_MILESTONES)
        return sw_fail(e, SW_EUSAGE, "step schedule has %d milestones (at most %d)", s->n_milestones,
                       SW_SCHED_MAX_MILESTONES);
      for (int i = 0; i < s->n_milestones; i++)
        if (s->milestones[i] < 0 || (i > 0 && s->milestones[i] <= s->milestones[i - 1])) {
          sw_fail(e, SW_EUSAGE, "step schedule milestones must be increasing, non-negative epochs");
          return sw_hint(e, "give increasing epoch numbers, e.g. step:50,100");
        }
      return SW_OK;
    case SW_SCHED_COSINE:
      if (!isfinite(s->min_lr) || s->min_lr < 0 || s->min_lr > s->base_lr)
        return sw_fail(e, SW_EUSAGE, "cosine minimum rate %g must be in [0, %g]", s->min_lr, s->base_lr);
      if (s->epochs <= s->warmup_epochs) {
        sw_fail(e, SW_EUSAGE, "cosine schedule over %lld epochs leaves nothing after %lld warm-up epochs", (long long)s->epochs, (long long)s->warmup_epochs);
        return sw_hint(e, "the cosine schedule anneals over the epochs after warm-up");
      }
      return SW_OK;
  }
  return sw_fail(e, SW_EUSAGE, "unknown learning-rate schedule %d", (int)s->kind);
}

double sw_sched_lr_at(const sw_sched *s, int64_t step, int64_t steps_per_epoch) {
  SW_ASSERT(step >= 0 && steps_per_epoch > 0);
  int64_t epoch = step / steps_per_epoch;
  int64_t warm_steps = s->warmup_epochs * steps_per_epoch;
  double lr = s->base_lr;
  switch (s->kind) {
    case SW_SCHED_CONSTANT: break;
    case SW_SCHED_STEP: {
      double gamma = s->gamma > 0 ? s->gamma : 0.1;
      for (int i = 0; i < s->n_milestones; i++)
        if (epoch >= s->milestones[i]) lr *= gamma;
      break;
    }
    case SW_SCHED_COSINE: {
      double t, T;
      if (s->per_iter) {
        t = (double)(step - warm_steps);
        T = (double)((s->epochs - s->warmup_epochs) * steps_per_epoch);
      } else {
        t = (double)(epoch - s->warmup_epochs);
        T = (double)(s->epochs - s->warmup_epochs);
      }
      if (t < 0) t = 0;
      if (t > T) t = T;
      lr = s->min_lr + (s->base_lr - s->min_lr) * (1.0 + cos(M_PI * t / T)) / 2.0;
      break;
    }
  }
  if (step < warm_steps) lr *= (double)(step + 1) / (double)warm_steps;
  return lr;
}

int sw_sched_parse(sw_sched *s, const char *spec, sw_err *e) {
  const char *forms = "constant, step, step:E1,E2,..., step:E1,E2:GAMMA, cosine, cosine-iter";
  if (strcmp(spec, "constant") == 0) {
    s->kind = SW_SCHED_CONSTANT;
    return SW_OK;
  }
  if (strcmp(spec, "cosine") == 0 || strcmp(spec, "cosine-iter") == 0) {
    s->kind = SW_SCHED_COSINE;
    s->per_iter = strcmp(spec, "cosine-iter") == 0;
    return SW_OK;
  }
  if (strncmp(spec, "step", 4) != 0 || (spec[4] != 0 && spec[4] != ':')) {
    sw_fail(e, SW_EUSAGE, "unknown schedule '%s'", spec);
    return sw_hint(e, "schedules: %s", forms);
  }
  s->kind = SW_SCHED_STEP;
  if (s->gamma <= 0) s->gamma = 0.1;
  if (spec[4] == 0) return SW_OK; /* keep the milestones already set */
  const char *p = spec + 5;
  int n = 0;
  for (;;) {
    char *end;
    errno = 0;
    long long v = strtoll(p, &end, 10);
    if (end == p || errno || v < 0) {
      sw_fail(e, SW_EUSAGE, "bad milestone list in schedule '%s'", spec);
      return sw_hint(e, "schedules: %s", forms);
    }
    if (n == SW_SCHED_MAX_MILESTONES)
      return sw_fail(e, SW_EUSAGE, "schedule '%s' has more than %d milestones", spec,
                     SW_SCHED_MAX_MILESTONES);
    s->milestones[n++] = v;
    p = end;
    if (*p == ',') {
      p++;
      continue;
    }
    break;
  }
  s->n_milestones = n;
  if (*p == ':') {
    char *end;
    errno = 0;
    double g = strtod(p + 1, &end);
    if (end == p + 1 || *end || errno || !(g > 0 && g <= 1)) {
      sw_fail(e, SW_EUSAGE, "bad factor in schedule '%s'", spec);
      return sw_hint(e, "the factor after the milestones is in (0, 1], e.g. step:50,100:0.1");
    }
    s->gamma = g;
  } else if (*p) {
    sw_fail(e, SW_EUSAGE, "bad schedule '%s'", spec);
    return sw_hint(e, "schedules: %s", forms);
  }
  for (int i = 1; i < n; i++)
    if (s->milestones[i] <= s->milestones[i - 1]) {
      sw_fail(e, SW_EUSAGE, "milestones in schedule '%s' are not increasing", spec);
      return sw_hint(e, "give increasing epoch numbers, e.g. step:50,100");
    }
  return SW_OK;
}
