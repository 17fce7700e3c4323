/* The runtime: executes a lowered, memory-planned IR graph as a flat list of kernel calls.
 *
 * rt_state holds the model's persistent tensors by name (parameters and BatchNormalization running
 * statistics), shared by every program built from graphs of the same model (the training step and
 * the evaluation forward pass). rt_program is one graph compiled for one batch size and thread count:
 * kernels are planned and JIT-compiled once at build time, activations live in one arena laid out by
 * the memory-plan pass, and rt_program_run performs no allocation and no JIT. */
#ifndef SWATC_RUNTIME_RUNTIME_H
#define SWATC_RUNTIME_RUNTIME_H

#include <stdint.h>

#include "ir/ir.h"

typedef struct rt_tensor {
  const char *name;   /* owned by the state */
  ir_value_kind kind; /* IR_VAL_PARAM or IR_VAL_STATE */
  ir_shape shape;     /* concrete */
  int64_t numel;
  float *data;        /* 64-byte aligned */
} rt_tensor;

typedef struct rt_state {
  rt_tensor *t;
  int n, cap;
} rt_state;

/* Initialises an empty state. */
void rt_state_init(rt_state *s);
/* Frees the state's tensors. */
void rt_state_free(rt_state *s);
/* Adds every float PARAM/STATE of g that the state does not hold yet (with its initial data from g);
 * tensors already held must have the same shape. */
int rt_state_bind(rt_state *s, const ir_graph *g, sw_err *e);
/* The tensor named `name`, or NULL. */
rt_tensor *rt_state_find(const rt_state *s, const char *name);

typedef struct rt_program rt_program;

/* Whether programs built from now on run SWAT layers on the sparse kernels when their density is
 * below the kernels' crossover (1, the default) or always on the dense kernels (0: the same SWAT
 * computation, for A/B comparisons of speed and of results). */
void rt_set_sparse_kernels(int on);

/* Memory shared by programs that never run at the same time (a training step and the evaluation pass
 * between epochs): each program built with the pool places its activation arena and its kernel scratch
 * in the pool's blocks when they are large enough, else in new larger blocks the pool then offers to
 * later programs. A program's arena and scratch outputs (loss, logits, gradients) are valid only until
 * another program of the same pool runs; parameters and state are never in the pool. */
typedef struct rt_pool rt_pool;

/* A new, empty pool. */
rt_pool *rt_pool_new(void);
/* Drops the pool's hold on its blocks (each block lives until its last program is freed). Accepts NULL. */
void rt_pool_free(rt_pool *pool);

/* Compiles g (memory-planned for `batch`) into a program reading and writing s; with a pool (may be
 * NULL: the program gets memory of its own), its arena and scratch come from the pool. */
int rt_program_build(const ir_graph *g, rt_state *s, int64_t batch, int nthreads, rt_pool *pool, rt_program **out,
                     sw_err *e);
/* Frees a program (not the state). Accepts NULL. */
void rt_program_free(rt_program *p);
/* Runs every kernel once; `step` seeds Dropout. Fails only on bad data (e.g. a label out of range). */
int rt_program_run(rt_program *p, uint64_t step, sw_err *e);
/* The buffer of the value named `name` (inputs to fill, outputs to read), or NULL; *numel receives its
 * element count at the program's batch. Valid until the program is freed. */
void *rt_program_buffer(const rt_program *p, const char *name, int64_t *numel);
/* The program's batch size. */
int64_t rt_program_batch(const rt_program *p);
/* Bytes of the activation arena and of the kernels' shared scratch. */
int64_t rt_program_arena_bytes(const rt_program *p);
int64_t rt_program_scratch_bytes(const rt_program *p);
/* Seed of the program's Dropout masks (default 0). */
void rt_program_set_seed(rt_program *p, uint64_t seed);

/* Records in each node of g (the graph p was built from) the kernel chosen for it (n->impl), so
 * that a dump after lowering shows it. */
void rt_program_annotate(const rt_program *p, ir_graph *g);

/* SWAT: while `on`, every Top-K recomputes its exact threshold on every run (Top-K warm-up). */
void rt_program_set_topk_exact(rt_program *p, int on);
/* SWAT: sets the sparsity of the Top-K node named `node` (picked up at its next exact selection).
 * Returns 0 if the program has no such node. */
int rt_program_set_sparsity(rt_program *p, const char *node, double sparsity);

/* Diagnosis of a non-finite loss: runs the program once more, op by op, and sets *node_name to the
 * first node that wrote a NaN or infinity (NULL if none did). The state is updated as by a run
 * (BatchNormalization statistics, Top-K thresholds), so call it only when the run is being abandoned. */
int rt_program_find_nonfinite(rt_program *p, uint64_t step, const char **node_name, sw_err *e);

/* Per-op timing, when enabled: accumulated seconds per node and the number of runs. */
void rt_program_profile(rt_program *p, int on);
/* Prints the accumulated profile (per op kind and the heaviest nodes) of the runs after the first to f. */
void rt_program_profile_print(const rt_program *p, FILE *f);

#endif
