/* The training driver: imports a model, builds its training and evaluation programs, and runs
 * epochs of SGD over a dataset with per-epoch evaluation, progress and metrics. */
#ifndef SWATC_TRAIN_TRAINER_H
#define SWATC_TRAIN_TRAINER_H

#include <stdint.h>

#include "passes/swat.h"
#include "util/err.h"

typedef struct trainer_opts {
  const char *data;        /* fashion-mnist | mnist | cifar10 | synthetic | DIR (default fashion-mnist) */
  int epochs;              /* default 10 */
  int batch;               /* default 128 */
  double lr;               /* default 0.05 */
  double momentum;         /* default 0.9 */
  int nesterov;
  double wd;               /* default 5e-4 */
  const char *schedule;    /* constant | step | cosine (default cosine) */
  const char *milestones;  /* step: "a,b" in epochs */
  int warmup_epochs;
  uint64_t seed;
  int threads;             /* 0 = all cores */
  int64_t limit_train, limit_test;
  int augment;             /* -1 auto (crop+flip for 32x32 data), 0 off, 1 on */
  int drop_last;
  const char *metrics;     /* JSONL path or NULL */
  const char *dump_ir;     /* NULL, "all" or pass names */
  const char *dump_file;   /* NULL = stderr */
  int quiet;
  int profile;
  int static_batch;
  const char *command;     /* the command line, recorded in metrics */
  swat_opts swat;          /* SWAT sparsity (sparsity 0: dense training) */
  int topk_warmup_epochs;  /* exact Top-K every step during the first E epochs */
} trainer_opts;

/* Sets the documented defaults. */
void trainer_opts_default(trainer_opts *o);
/* Trains the model at `model_path` as o says; prints progress and the final test accuracy. */
int trainer_run(const char *model_path, const trainer_opts *o, sw_err *e);

#endif
