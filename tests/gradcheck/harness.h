/* Finite-difference gradient checks of swatc's autodiff and runtime, end to end.
 *
 * A case builds a small IR graph by hand (random PARAM tensors feeding the op under test, optionally
 * a random graph input), and gc_case_run finishes it with Flatten + a fully-connected layer to
 * [M, 10] logits (unless the case made its own SoftmaxCrossEntropyLoss), then runs the real pipeline
 * (train-mode, add-loss, autodiff, dce, memory-plan, all verified), builds a runtime program, and
 * compares the gradient buffer of every parameter with central differences of the loss computed by
 * re-running the program with that parameter perturbed in the live state.
 *
 * Tolerance, per parameter tensor: with S = max |fd| over the sampled coordinates (at most
 * GC_MAX_COORDS), every sampled coordinate must satisfy |grad - fd| <= GC_RTOL * S + GC_ATOL, and
 * S must be at least GC_MIN_SCALE (a gradient too small to check is reported as a failure, so a
 * rule that returns zeros cannot pass). A parameter the loss provably does not depend on (a conv bias
 * before a training-mode BatchNormalization) is named in zero_grad and must have |grad| and
 * |fd| <= GC_ATOL everywhere instead. */
#ifndef SWATC_TESTS_GRADCHECK_HARNESS_H
#define SWATC_TESTS_GRADCHECK_HARNESS_H

#include <stdint.h>

#include "ir/ir.h"

#define GC_MAX_COORDS 50
#define GC_RTOL 1e-2
#define GC_ATOL 1e-4
#define GC_MIN_SCALE 1e-3
#define GC_CLASSES 10

typedef struct gc_case {
  ir_graph *g;
  char name[128];
  int64_t batch;        /* the program's batch size (N of symbolic inputs) */
  int nthreads;         /* program threads (default 1) */
  float h_rel;          /* FD step relative to the tensor's largest magnitude (default 1e-2) */
  float h_abs;          /* if > 0: the FD step itself (for data kept a known distance from kinks) */
  uint64_t seed, step;  /* Dropout: program seed and the (fixed) step every run uses */
  float input_scale;    /* graph inputs are uniform in [-input_scale, input_scale] (default 1) */
  int n_ignore;         /* labels: this many samples get label ignore_index (own-loss cases) */
  int64_t ignore_index;
  int64_t n_classes;    /* labels are drawn in [0, n_classes) (default: the logits' width) */
  uint64_t rng;         /* data generator state */
  int failed;           /* building failed: err says why */
  sw_err err;
  const char *zero_grad[4]; /* parameters whose gradient is exactly zero: checked |grad|, |fd| <= GC_ATOL */
  float corrupt;        /* self-test only: the first parameter's gradient is scaled by (1 + corrupt) */
  int verbose;
  int64_t grad_zeros;   /* out: exactly-zero entries of the first parameter's gradient (-1: none read) */
} gc_case;

/* Starts case `name`: a new graph, default options, data seeded from the name. */
void gc_case_init(gc_case *c, const char *name, int64_t batch);
/* Uniform random float in [lo, hi) from the case's generator. */
float gc_uniform(gc_case *c, float lo, float hi);
/* Adds a float graph input (dimensions may be IR_N); its data is random at run time. */
ir_value *gc_input(gc_case *c, const char *name, int rank, const int64_t *d);
/* Adds an int64 graph input (labels of an own loss); like add-loss's labels, filled at run time with
 * classes in [0, n_classes) (n_classes 0: the scores' dimension 1), n_ignore of them set to ignore_index. */
ir_value *gc_labels(gc_case *c, const char *name, int rank, const int64_t *d);
/* Adds a float PARAM with values uniform in [-scale, scale]. */
ir_value *gc_param(gc_case *c, const char *name, int rank, const int64_t *d, float scale);
/* Adds a float value of kind `kind` (STATE or CONST) filled with `value`. */
ir_value *gc_fixed(gc_case *c, ir_value_kind kind, const char *name, int rank, const int64_t *d, float value);
/* Refills v with values uniform in [lo, hi] at least `margin` away from each of the nk kinks. */
void gc_fill_away(gc_case *c, ir_value *v, float lo, float hi, const float *kinks, int nk, float margin);
/* Refills v with a random permutation of distinct values spaced `spacing` apart, centred on 0. */
void gc_fill_distinct(gc_case *c, ir_value *v, float spacing);
/* Appends node `op` reading in[0..n_in-1] with n_out outputs; set its attributes, then call gc_done. */
ir_node *gc_node(gc_case *c, const char *op, int n_in, ir_value *const *in, int n_out);
/* Runs n's shape rule; returns its first output, or NULL (the case is then marked failed). */
ir_value *gc_done(gc_case *c, ir_node *n);
/* gc_node + gc_done for attribute-less ops with one output. */
ir_value *gc_op(gc_case *c, const char *op, int n_in, ir_value *const *in);
/* Finishes the graph (Flatten + fully-connected logits of y; y NULL: the case made its own loss), runs
 * the pipeline and the checks, prints one line, frees the graph. Returns 0 when every check passed. */
int gc_case_run(gc_case *c, ir_value *y);

#endif
