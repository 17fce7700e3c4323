/* The training driver: imports a model, builds its training and evaluation programs, and runs
 * epochs of SGD over a dataset with per-epoch evaluation, progress, metrics and checkpoints; exports
 * the trained model to ONNX and evaluates ONNX models.
 *
 * A checkpoint (train/checkpoint.h container) holds the whole training state: the source ONNX bytes
 * and their SHA-256, every runtime state tensor (parameters, BatchNorm statistics, SWAT Top-K state),
 * the SGD momentum buffers, step, epoch, the loader cursor, the running sums of the epoch in
 * progress, the per-layer SWAT budgets, the options that shape the trajectory, the last test result,
 * the data preprocessing and the command. Resuming from it with the same --threads gives the same
 * weights and metrics, bit for bit, as the run that was never interrupted. */
#ifndef SWATC_TRAIN_TRAINER_H
#define SWATC_TRAIN_TRAINER_H

#include <stdint.h>
#include <stdio.h>

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
  int topk_warmup_epochs;
  int sparse_kernels;      /* 1 (default): sparse kernels for SWAT layers below their crossover; 0: dense kernels */  /* exact Top-K every step during the first E epochs */
  const char *checkpoint;  /* write the training state here after every epoch, at the end and on SIGINT/SIGTERM */
  const char *resume;      /* continue the run saved in this checkpoint */
  const char *const *resume_args; /* [n_resume_args] the options a resume repeats (all but --resume, --checkpoint and
                                     --stop-after-steps), printed in the resume command after an interruption */
  int n_resume_args;
  const char *output;      /* export the trained model to this ONNX file at the end */
  int sparse_initializers; /* export: SWAT layer weights as sparse_initializer */
  int64_t stop_after_steps;/* testing: act as if SIGTERM arrived once this many steps are done (0 = never) */
} trainer_opts;

/* trainer_run's return value after a SIGINT/SIGTERM that saved the checkpoint: this plus the signal
 * number (130 for SIGINT, 143 for SIGTERM), which is also the process exit status to use. */
#define TRAINER_SIGNALLED 128

/* Sets the documented defaults. */
void trainer_opts_default(trainer_opts *o);
/* Trains the model at `model_path` as o says (resuming o->resume if set: model_path may then be NULL for
 * the model the checkpoint holds; if given, it must be that model); prints progress and the final test
 * accuracy; writes o->checkpoint and o->output if set. Returns SW_OK, an SW_E* code with e filled in, or
 * TRAINER_SIGNALLED + signal after an interruption that wrote the checkpoint. */
int trainer_run(const char *model_path, const trainer_opts *o, sw_err *e);
/* Exports the model saved in checkpoint `ckpt_path` to ONNX at out_path (SWAT weights Top-K'd as the
 * evaluation uses them); *bytes receives the file size. */
int trainer_export(const char *ckpt_path, const char *out_path, int sparse_initializers, int64_t *bytes, sw_err *e);
/* Prints what checkpoint `ckpt_path` holds: its meta and options lines and, per tensor and momentum
 * buffer, the name, element count and SHA-256 of the values (for comparing two checkpoints). */
int trainer_ckpt_print(const char *ckpt_path, FILE *f, sw_err *e);
/* Evaluates the ONNX classifier at model_path on the test split of o->data (o->batch, o->threads,
 * o->limit_test) and prints its accuracy and loss; warns if the model's recorded preprocessing differs
 * from the dataset's. */
int trainer_eval(const char *model_path, const trainer_opts *o, sw_err *e);

#endif
