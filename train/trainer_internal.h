/* Shared by the files of the training driver only (trainer.c, model.c, run_ckpt.c, evaluate.c): the
 * structs of a run and the helpers more than one of them uses. */
#ifndef SWATC_TRAIN_TRAINER_INTERNAL_H
#define SWATC_TRAIN_TRAINER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ir/ir.h"
#include "passes/swat.h"
#include "runtime/runtime.h"
#include "train/checkpoint.h"
#include "train/dataset.h"
#include "train/loader.h"
#include "train/metrics.h"
#include "train/trainer.h"

/* ---- a growable string ---- */

typedef struct sbuf {
  char *p;
  size_t n, cap;
} sbuf;

/* Appends printf-formatted text to b. */
__attribute__((format(printf, 2, 3))) void sb_printf(sbuf *b, const char *fmt, ...);

extern const char *const train_passes[6];
extern const char *const eval_passes[5];

/* One compiled graph at one batch size, with what the driver reads and writes. */
typedef struct bound {
  rt_program *prog;
  int64_t batch;
  float *images;
  int64_t *labels;
  float *loss, *logits;
  int64_t classes;
  float **grads; /* per state tensor (NULL for state without gradient) */
} bound;

typedef struct model {
  ir_graph *g;
  FILE *dump;   /* where dumps of this graph go (training graph only), NULL for none */
  const char *image_input, *logits_name, *loss_name;
  bound *b;
  int n_b;
  rt_pool *pool; /* where its programs' activations and scratch go (not owned; NULL: their own memory) */
} model;

/* SWAT bookkeeping of the training graph: per layer, its Top-K nodes and state tensors. */
typedef struct swat_run {
  swat_layer *l;
  int n;
  rt_tensor **w_state, **x_state, **weight; /* per layer (NULL when the layer is dense) */
  int *w_index;                             /* index of the weight in the state (for its momentum) */
  double *score, *density;
  int64_t *numel;
  double *m_score, *m_density; /* SWAT-M work arrays (no allocation per step) */
  int64_t *m_numel;
} swat_run;

/* A source model: the bytes of its ONNX file (read once; recorded in checkpoints and exports), its name
 * and the folder of its external data. */
typedef struct model_src {
  const unsigned char *bytes; /* [n]: owned, or borrowed from the checkpoint it came from */
  size_t n;
  unsigned char *owned;       /* bytes when read from a file (freed by model_src_free), else NULL */
  char name[1024];            /* its path, as given or as recorded in the checkpoint */
  char dir[1024];             /* the folder its external data files sit in */
  char sha[65];               /* SHA-256 of bytes, lowercase hex */
} model_src;

/* Everything one training run holds; the checkpoint is a picture of it. */
typedef struct run {
  const trainer_opts *o;
  model_src src;
  model tm, em;
  rt_pool *pool; /* the training and evaluation programs never run at once: one memory for both */
  swat_run sw;
  int swat_on;
  rt_state st;
  float **mom;           /* [st.n] momentum buffers (NULL entries for tensors without one) */
  sw_dataset train, test;
  sw_loader ld;
  uint64_t step;         /* optimizer steps done */
  int epoch;             /* epoch in progress or next to start, from 0 */
  int64_t bi, good, seen; /* the epoch in progress: batches, correct predictions, images */
  double lsum, lr, train_seconds;
  double test_loss, test_acc;
  int evaluated;         /* test_loss/test_acc hold a result */
  const char *command;   /* the command that started the run (a resumed run keeps its original's) */
  int saved;             /* a checkpoint was written by this process */
  sw_jsonl jl;
  int jl_open;
} run;

/* Frees m's programs and graph. */
void tr_model_free(model *m);
/* Imports the source model and runs `passes` on it (dumps go to dump for the training graph). */
int tr_build_graph(const model_src *src, const trainer_opts *o, const char *const *passes, int n_passes, FILE *dump, model *m, sw_err *e);
/* The program of m for `batch` (built on first use: memory-plan for that batch, then compile). */
bound *tr_program_for(model *m, rt_state *st, int64_t batch, const trainer_opts *o, int with_grads, sw_err *e);
/* Loads o->data for the model m (the synthetic shape comes from its input and logits; train NULL: the
 * test split only, see sw_dataset_load_test) and checks that its images and labels fit the model. */
int tr_load_data(const model *m, const trainer_opts *o, sw_dataset *train, sw_dataset *test, sw_err *e);
/* Reads the ONNX file at path into s (its bytes, folder and hash). */
int tr_model_src_read(model_src *s, const char *path, sw_err *e);
/* Frees the bytes s owns. */
void tr_model_src_free(model_src *s);

/* Sets the current per-layer budgets on the Top-K nodes of one program. */
void tr_swat_apply(const swat_run *r, rt_program *p);

/* Counts the samples whose largest logit is at their label. */
int64_t tr_correct(const float *logits, const int64_t *labels, int64_t n, int64_t classes);
/* Runs the evaluation graph over the whole test split: mean loss, accuracy and the counts behind it.
 * sw (may be NULL) sets the current SWAT budgets on the evaluation programs first. */
int tr_evaluate(model *m, rt_state *st, const sw_dataset *test, const trainer_opts *o, const swat_run *sw, double *loss, double *acc,
             int64_t *n_good, int64_t *n_seen, sw_err *e);

/* {"scale": s, "mean": [..], "std": [..]}: x = (pixel * scale - mean[c]) / std[c]. */
void tr_preprocess_json(const sw_dataset *d, sbuf *b);
/* Fills ck with the whole training state of r. */
void tr_ckpt_build(const run *r, int finished, sw_ckpt *ck);
/* Writes r's checkpoint to o->checkpoint (never a non-finite state over the last good one). */
int tr_ckpt_save(run *r, int finished, sw_err *e);
/* Reads integer `key` of ck's meta section into *v; 0 if it is missing or not an integer. */
int tr_meta_int(const sw_ckpt *ck, const char *key, long long *v);
/* Reads number `key` of ck's meta section into *v; 0 if it is missing or not a number. */
int tr_meta_double(const sw_ckpt *ck, const char *key, double *v);
/* Copies string `key` of ck's meta section into buf[cap] ("" if missing). */
void tr_meta_str(const sw_ckpt *ck, const char *key, char *buf, size_t cap);
/* Fails with SW_EINPUT: path is not a checkpoint of this swatc, because of `what`. */
int tr_ckpt_incomplete(const char *path, const char *what, sw_err *e);
/* Takes the source model of the run saved in ck (read from path): its bytes, borrowed from ck, and the
 * name and folder recorded with them. */
int tr_ckpt_model(const sw_ckpt *ck, const char *path, model_src *s, sw_err *e);
/* Refuses a checkpoint of another model or of a run with other trajectory options. */
int tr_ckpt_check(const sw_ckpt *ck, const char *path, const run *r, sw_err *e);
/* Restores r's state from ck (after ckpt_check): tensors, momentum, counters, cursor, budgets. */
int tr_ckpt_restore(run *r, const sw_ckpt *ck, const char *path, sw_err *e);
/* Writes the model saved in ck (label names it in messages) to out as ONNX. */
int tr_export_ckpt(const sw_ckpt *ck, const char *label, const char *out, int sparse, int64_t *bytes, sw_err *e);

#endif
