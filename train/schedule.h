/* Learning-rate schedules as a pure function of the global step.
 *
 * With e = step / steps_per_epoch (integer division, the epoch the step belongs to):
 *   constant: lr = base
 *   step:     lr = base * gamma^(number of milestones <= e)         (PyTorch MultiStepLR, stepped
 *             once per epoch; milestones are epoch numbers)
 *   cosine:   lr = min + (base - min) * (1 + cos(pi * t / T)) / 2    (PyTorch CosineAnnealingLR's
 *             closed form). Per epoch (default): t = e - W, T = epochs - W, so the rate is constant
 *             within an epoch and epoch `epochs` would reach min. Per iteration (per_iter = 1):
 *             t = step - W*spe, T = (epochs - W)*spe, stepping every iteration.
 *             Past the end (t > T) the rate stays at min instead of rising again.
 *   warm-up:  during the first W epochs (W*spe steps) the rate ramps linearly per iteration,
 *             lr = sched(step) * (step + 1) / (W*spe), so the last warm-up step uses the full rate.
 * Step milestones are absolute epochs counted from 0, warm-up included. */
#ifndef SWATC_TRAIN_SCHEDULE_H
#define SWATC_TRAIN_SCHEDULE_H

#include <stdint.h>

#include "util/err.h"

#define SW_SCHED_MAX_MILESTONES 16

typedef enum sw_sched_kind { SW_SCHED_CONSTANT = 0, SW_SCHED_STEP, SW_SCHED_COSINE } sw_sched_kind;

typedef struct sw_sched {
  sw_sched_kind kind;
  double base_lr;                              /* peak rate (SWAT reference 0.1) */
  double gamma;                                /* step: factor per milestone (0 = 0.1) */
  int n_milestones;                            /* step: how many milestones */
  int64_t milestones[SW_SCHED_MAX_MILESTONES]; /* step: epochs, increasing (reference 50,100) */
  int64_t epochs;                              /* cosine: total epochs (T_max) */
  double min_lr;                               /* cosine: eta_min (default 0) */
  int per_iter;                                /* cosine: 1 = anneal per iteration */
  int64_t warmup_epochs;                       /* linear warm-up epochs (0 = none) */
} sw_sched;

/* Checks the schedule (positive rate, increasing milestones, cosine length beyond warm-up). */
int sw_sched_check(const sw_sched *s, sw_err *e);

/* Returns the learning rate for global step `step` (from 0) with steps_per_epoch batches per epoch. */
double sw_sched_lr_at(const sw_sched *s, int64_t step, int64_t steps_per_epoch);

/* Parses "constant", "step", "step:50,100", "step:50,100:0.2", "cosine" or "cosine-iter" into s's
 * kind, milestones and gamma (the other fields are left as they are). */
int sw_sched_parse(sw_sched *s, const char *spec, sw_err *e);

#endif
