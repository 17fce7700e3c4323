/* Internal to runtime/: the program structure and the per-op lowering (lower.c). */
#ifndef SWATC_RUNTIME_EXEC_H
#define SWATC_RUNTIME_EXEC_H

#include <stdio.h>

#include "runtime/kernels/kernels.h"
#include "runtime/runtime.h"

typedef struct rt_buf {
  const char *name;  /* the IR value's name (the graph outlives nothing: names are only used at build) */
  ir_dtype dtype;
  ir_shape shape;    /* concrete (N replaced by the batch) */
  int64_t numel;
  void *data;
  int owned;
} rt_buf;

#define RT_MAX_ARGS 64

struct rt_op;
typedef int (*rt_run_fn)(struct rt_program *p, const struct rt_op *op);

typedef struct rt_op {
  const ir_node *node;
  rt_run_fn run;
  void *ctx;                 /* op-specific parameters, made at build time */
  void (*free_ctx)(void *);  /* NULL: free() */
  void *in[RT_MAX_ARGS], *out[RT_MAX_ARGS]; /* resolved buffers (NULL for absent optional ones) */
  char impl[1024];           /* the kernel chosen, for dumps */
  double flops;              /* floating-point operations per run (Conv/Gemm families), for the profile */
} rt_op;

/* Kinds of kernel plan the program caches (shared by the ops of one layer, and by layers of one shape). */
enum { RT_PLAN_CONV, RT_PLAN_GEMM, RT_PLAN_SPCONV, RT_PLAN_SPGEMM, RT_PLAN_SPWGRAD, RT_PLAN_SPWGRAD_GEMM };

typedef struct rt_plan_entry {
  int kind;                  /* RT_PLAN_* */
  union {
    conv_desc c;
    gemm_desc g;
  } d;
  union {
    conv_plan c;
    gemm_plan g;
    spconv_plan sc;
    spgemm_plan sg;
    spwgrad_plan wc;
    spwgrad_gemm_plan wg;
  } plan;
} rt_plan_entry;

struct rt_program {
  int64_t batch;
  int nthreads;
  rt_buf *bufs;              /* by IR value id */
  int n_bufs;
  unsigned char *arena;       /* arena_blk's memory */
  int64_t arena_bytes;
  void *scratch;              /* scratch_blk's memory */
  size_t scratch_bytes;
  struct rt_block *arena_blk, *scratch_blk; /* possibly shared with other programs (rt_pool) */
  rt_op *ops;
  int n_ops;
  rt_plan_entry **plans;     /* kernel plans shared by the ops of one layer */
  int n_plans;
  uint64_t seed, step;
  int topk_exact;            /* 1: every TopKSparsify recomputes its exact threshold (warm-up) */
  sw_err *err;               /* during run */
  double *prof_seconds;
  int prof_runs;
  int prof_warm; /* the first run (plans, JIT-compiles, first touches of memory) has been left out */
};

void *rt_alloc(size_t bytes);
rt_buf *rt_buf_of(rt_program *p, const ir_value *v);
void rt_need_scratch(rt_program *p, size_t bytes);
void rt_plan_cache_free(rt_program *p);
/* Chooses and prepares the kernel of node n into op. */
int rt_lower_node(rt_program *p, const ir_node *n, rt_op *op, sw_err *e);

#endif
