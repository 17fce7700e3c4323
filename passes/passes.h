/* Graph passes: stand-alone functions over the IR, listed in one table, run in order by the pass
 * manager, which verifies after each pass (when asked) and dumps the IR after any of them. */
#ifndef SWATC_PASSES_PASSES_H
#define SWATC_PASSES_PASSES_H

#include <stdio.h>

#include "ir/ir.h"

struct swat_opts;

typedef struct pass_opts {
  int verify;          /* run ir_verify after every pass (tests and debug builds) */
  const char *dump;    /* NULL, "all", or a comma-separated list of pass names ("import" = before the first) */
  FILE *dump_file;     /* where dumps go (stderr when NULL) */
  int64_t batch;       /* memory-plan: the batch size to plan for */
  const struct swat_opts *swat; /* swat: the sparsity configuration (NULL or sparsity 0: no-op) */
} pass_opts;

typedef struct pass_def {
  const char *name;
  int (*run)(ir_graph *g, const pass_opts *o, sw_err *e);
  const char *doc;
} pass_def;

/* All passes, in pipeline order. */
const pass_def *passes_table(int *count);
/* The pass named `name`, or NULL. */
const pass_def *pass_find(const char *name);
/* 1 if `name` is a pass name or "import" (for validating --dump-ir). */
int pass_name_valid(const char *name);
/* Runs the passes named in `names` (n of them) in that order, verifying and dumping per o. */
int passes_run(ir_graph *g, const char *const *names, int n, const pass_opts *o, sw_err *e);
/* Dumps g under the title `after` if o asks for it. */
void passes_dump(const ir_graph *g, const char *after, const pass_opts *o);

/* The passes (each documented in its file). */
int pass_train_mode(ir_graph *g, const pass_opts *o, sw_err *e);
int pass_eval_mode(ir_graph *g, const pass_opts *o, sw_err *e);
int pass_add_loss(ir_graph *g, const pass_opts *o, sw_err *e);
int pass_autodiff(ir_graph *g, const pass_opts *o, sw_err *e);
int pass_dce(ir_graph *g, const pass_opts *o, sw_err *e);
int pass_memory_plan(ir_graph *g, const pass_opts *o, sw_err *e);
int pass_fuse(ir_graph *g, const pass_opts *o, sw_err *e);
int pass_swat(ir_graph *g, const pass_opts *o, sw_err *e);

/* Name of the labels input that add-loss creates. */
#define PASS_LABELS_INPUT "labels"

#endif
