/* Building and running programs: one kernel call per IR node over the planned arena. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/exec.h"

/* ---- state ---- */

void rt_state_init(rt_state *s) { memset(s, 0, sizeof *s); }

void rt_state_free(rt_state *s) {
  for (int i = 0; i < s->n; i++) {
    free((char *)s->t[i].name);
    free(s->t[i].data);
  }
  free(s->t);
  memset(s, 0, sizeof *s);
}

rt_tensor *rt_state_find(const rt_state *s, const char *name) {
  for (int i = 0; i < s->n; i++)
    if (strcmp(s->t[i].name, name) == 0) return &s->t[i];
  return NULL;
}

void *rt_alloc(size_t bytes) {
  void *p = NULL;
  if (posix_memalign(&p, 64, bytes ? (bytes + 63) / 64 * 64 : 64) != 0) return NULL;
  return p;
}

/* ---- memory blocks, shared through a pool ---- */

/* A 64-byte aligned block held by the programs placed in it and by at most one pool. */
typedef struct rt_block {
  void *data;
  size_t bytes;
  int refs;
} rt_block;

struct rt_pool {
  rt_block *arena, *scratch; /* the largest blocks so far (NULL before the first program) */
};

static void block_release(rt_block *b) {
  if (b && --b->refs == 0) {
    free(b->data);
    free(b);
  }
}

/* A block of at least `bytes` for one more program: the pool's (in *slot) if large enough, else a new
 * one that replaces it in the pool (slot NULL: a private block). NULL when out of memory. */
static rt_block *block_take(rt_block **slot, size_t bytes) {
  if (slot && *slot && (*slot)->bytes >= bytes) {
    (*slot)->refs++;
    return *slot;
  }
  rt_block *b = sw_xcalloc(1, sizeof *b);
  b->bytes = bytes;
  b->data = rt_alloc(bytes);
  if (!b->data) {
    free(b);
    return NULL;
  }
  b->refs = 1;
  if (slot) {
    block_release(*slot);
    *slot = b;
    b->refs++;
  }
  return b;
}

rt_pool *rt_pool_new(void) { return sw_xcalloc(1, sizeof(rt_pool)); }

void rt_pool_free(rt_pool *pool) {
  if (!pool) return;
  block_release(pool->arena);
  block_release(pool->scratch);
  free(pool);
}

int rt_state_bind(rt_state *s, const ir_graph *g, sw_err *e) {
  for (int i = 0; i < g->n_values; i++) {
    const ir_value *v = g->values[i];
    if ((v->kind != IR_VAL_PARAM && v->kind != IR_VAL_STATE) || v->dtype != IR_F32) continue;
    rt_tensor *t = rt_state_find(s, v->name);
    if (t) {
      if (!ir_shape_eq(&t->shape, &v->shape))
        return sw_fail(e, SW_EINPUT, "tensor '%s' has two different shapes in the programs of one model", v->name);
      continue;
    }
    if (s->n == s->cap) {
      s->cap = s->cap ? 2 * s->cap : 64;
      s->t = sw_xrealloc(s->t, sizeof *s->t * (size_t)s->cap);
    }
    t = &s->t[s->n];
    memset(t, 0, sizeof *t);
    t->name = sw_xstrdup(v->name);
    t->kind = v->kind;
    t->shape = v->shape;
    t->numel = ir_shape_numel(&v->shape);
    t->data = rt_alloc((size_t)t->numel * sizeof(float));
    if (!t->data) return sw_fail(e, SW_ENOMEM, "out of memory for tensor '%s'", v->name);
    if (v->data) memcpy(t->data, v->data, (size_t)t->numel * sizeof(float));
    else memset(t->data, 0, (size_t)t->numel * sizeof(float));
    s->n++;
  }
  return SW_OK;
}

/* ---- programs ---- */

int64_t rt_program_batch(const rt_program *p) { return p->batch; }
int64_t rt_program_arena_bytes(const rt_program *p) { return p->arena_bytes; }
int64_t rt_program_scratch_bytes(const rt_program *p) { return (int64_t)p->scratch_bytes; }
void rt_program_set_seed(rt_program *p, uint64_t seed) { p->seed = seed; }

void rt_program_free(rt_program *p) {
  if (!p) return;
  for (int i = 0; i < p->n_ops; i++)
    if (p->ops[i].free_ctx) p->ops[i].free_ctx(p->ops[i].ctx);
    else free(p->ops[i].ctx);
  free(p->ops);
  rt_plan_cache_free(p);
  for (int i = 0; i < p->n_bufs; i++)
    if (p->bufs[i].owned) free(p->bufs[i].data);
  free(p->bufs);
  block_release(p->arena_blk);
  block_release(p->scratch_blk);
  free(p->prof_seconds);
  free(p);
}

void *rt_program_buffer(const rt_program *p, const char *name, int64_t *numel) {
  for (int i = 0; i < p->n_bufs; i++)
    if (strcmp(p->bufs[i].name, name) == 0) {
      if (numel) *numel = p->bufs[i].numel;
      return p->bufs[i].data;
    }
  return NULL;
}

rt_buf *rt_buf_of(rt_program *p, const ir_value *v) { return v ? &p->bufs[v->id] : NULL; }

void rt_need_scratch(rt_program *p, size_t bytes) {
  if (bytes > p->scratch_bytes) p->scratch_bytes = bytes;
}

int rt_program_build(const ir_graph *g, rt_state *s, int64_t batch, int nthreads, rt_pool *pool, rt_program **out,
                     sw_err *e) {
  *out = NULL;
  if (g->planned_batch != batch) {
    sw_fail(e, SW_EINPUT, "the graph is planned for batch %lld, not %lld", (long long)g->planned_batch, (long long)batch);
    return sw_hint(e, "run the memory-plan pass for the program's batch size (a bug in swatc's pipeline)");
  }
  rt_program *p = sw_xcalloc(1, sizeof *p);
  p->batch = batch;
  p->nthreads = nthreads > 0 ? nthreads : omp_get_max_threads();
  p->arena_bytes = g->arena_bytes;
  p->arena_blk = block_take(pool ? &pool->arena : NULL, (size_t)g->arena_bytes);
  if (p->arena_blk) p->arena = p->arena_blk->data;
  if (!p->arena) {
    rt_program_free(p);
    return sw_fail(e, SW_ENOMEM, "out of memory for the activation arena (%lld bytes)", (long long)g->arena_bytes);
  }
  /* one buffer per value, indexed by value id */
  p->n_bufs = g->n_values;
  p->bufs = sw_xcalloc((size_t)g->n_values + 1, sizeof *p->bufs);
  int rc = SW_OK;
  for (int i = 0; i < g->n_values && !rc; i++) {
    const ir_value *v = g->values[i];
    rt_buf *b = &p->bufs[i];
    b->name = v->name;
    b->dtype = v->dtype;
    b->shape = v->shape;
    for (int d = 0; d < b->shape.rank; d++)
      if (b->shape.d[d] == IR_N) b->shape.d[d] = batch;
    b->numel = ir_shape_numel(&b->shape);
    size_t bytes = ir_dtype_bytes(v->dtype, (size_t)b->numel);
    switch (v->kind) {
      case IR_VAL_PARAM:
      case IR_VAL_STATE: {
        rt_tensor *t = v->dtype == IR_F32 ? rt_state_find(s, v->name) : NULL;
        if (!t) {
          rc = sw_fail(e, SW_EINPUT, "parameter '%s' is not in the model state", v->name);
          break;
        }
        b->data = t->data;
        break;
      }
      case IR_VAL_CONST:
      case IR_VAL_INPUT:
        b->data = rt_alloc(bytes);
        b->owned = 1;
        if (!b->data) rc = sw_fail(e, SW_ENOMEM, "out of memory for '%s'", v->name);
        else if (v->data) memcpy(b->data, v->data, bytes);
        else memset(b->data, 0, bytes);
        break;
      case IR_VAL_NODE:
        if (ir_value_compact(v)) {
          b->data = NULL; /* a compact Top-K selection: the Top-K op holds it (lower.c) */
          break;
        }
        if (v->mem_offset < 0 || v->mem_offset + (int64_t)bytes > g->arena_bytes) {
          rc = sw_fail(e, SW_EINPUT, "value '%s' has no place in the arena", v->name);
          break;
        }
        b->data = p->arena + v->mem_offset;
        break;
    }
  }
  p->ops = sw_xcalloc((size_t)g->n_nodes + 1, sizeof *p->ops);
  for (int i = 0; i < g->n_nodes && !rc; i++) {
    rt_op *op = &p->ops[p->n_ops];
    op->node = g->nodes[i];
    rc = rt_lower_node(p, g->nodes[i], op, e);
    if (!rc) p->n_ops++;
    else free(op->ctx); /* the op that failed is not counted: release what it made */
  }
  if (!rc && p->scratch_bytes) {
    p->scratch_blk = block_take(pool ? &pool->scratch : NULL, p->scratch_bytes);
    if (p->scratch_blk) p->scratch = p->scratch_blk->data;
    if (!p->scratch) rc = sw_fail(e, SW_ENOMEM, "out of memory for kernel scratch (%zu bytes)", p->scratch_bytes);
  }
  if (rc) {
    rt_program_free(p);
    return rc;
  }
  *out = p;
  return SW_OK;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int rt_program_run(rt_program *p, uint64_t step, sw_err *e) {
  p->step = step;
  p->err = e;
  for (int i = 0; i < p->n_ops; i++) {
    rt_op *op = &p->ops[i];
    double t0 = p->prof_seconds ? now() : 0;
    if (op->run(p, op)) return e->code;
    if (p->prof_seconds) p->prof_seconds[i] += now() - t0;
  }
  if (p->prof_seconds) { /* the profile is of steady-state runs: the first one's times are dropped */
    if (p->prof_warm) p->prof_runs++;
    else memset(p->prof_seconds, 0, sizeof *p->prof_seconds * ((size_t)p->n_ops + 1));
    p->prof_warm = 1;
  }
  return SW_OK;
}

int rt_program_find_nonfinite(rt_program *p, uint64_t step, const char **node_name, sw_err *e) {
  *node_name = NULL;
  p->step = step;
  p->err = e;
  for (int i = 0; i < p->n_ops; i++) {
    rt_op *op = &p->ops[i];
    if (op->run(p, op)) return e->code;
    const ir_node *n = op->node;
    for (int j = 0; j < n->n_out; j++) {
      if (!n->out[j] || n->out[j]->dtype != IR_F32 || !op->out[j]) continue;
      const rt_buf *b = rt_buf_of(p, n->out[j]);
      const float *x = op->out[j];
      for (int64_t k = 0; k < b->numel; k++)
        if (!isfinite(x[k])) {
          *node_name = n->name;
          return SW_OK;
        }
    }
  }
  return SW_OK;
}

void rt_program_profile(rt_program *p, int on) {
  free(p->prof_seconds);
  p->prof_seconds = on ? sw_xcalloc((size_t)p->n_ops + 1, sizeof *p->prof_seconds) : NULL;
  p->prof_runs = 0;
  p->prof_warm = 0;
}

/* The part of a training step an op belongs to, for the per-layer profile. */
enum { PROF_FWD, PROF_BWD_DATA, PROF_WGRAD, PROF_TOPK, PROF_NCAT };

/* The Conv/Gemm layer an op belongs to (its forward node) and its category; NULL for other ops. */
static const ir_node *profile_layer_of(const rt_program *p, const rt_op *op, int *cat) {
  const ir_node *n = op->node;
  const char *k = n->op->name;
  if (!strcmp(k, "TopKSparsify")) {
    *cat = PROF_TOPK; /* "<layer>/topk_w" or "<layer>/topk_x" */
    const char *sl = strrchr(n->name, '/');
    size_t len = sl ? (size_t)(sl - n->name) : 0;
    for (int i = 0; len && i < p->n_ops; i++) {
      const ir_node *m = p->ops[i].node;
      if ((!strcmp(m->op->name, "Conv") || !strcmp(m->op->name, "Gemm")) && strlen(m->name) == len &&
          !strncmp(m->name, n->name, len))
        return m;
    }
    return NULL;
  }
  if (!strcmp(k, "Conv") || !strcmp(k, "Gemm") || !strcmp(k, "MatMul")) {
    *cat = PROF_FWD;
    return n;
  }
  if (!strcmp(k, "ConvGradData") || !strcmp(k, "GemmGradData")) *cat = PROF_BWD_DATA;
  else if (!strcmp(k, "ConvGradWeight") || !strcmp(k, "GemmGradWeight")) *cat = PROF_WGRAD;
  else return NULL;
  return n->fwd;
}

/* Per layer: forward, backward-data, weight-gradient and Top-K time, with the kernels chosen. */
static void profile_layers(const rt_program *p, FILE *f, double total) {
  const ir_node **layer = sw_xcalloc((size_t)p->n_ops + 1, sizeof *layer);
  double(*t)[PROF_NCAT] = sw_xcalloc((size_t)p->n_ops + 1, sizeof *t);
  double(*fl)[PROF_NCAT] = sw_xcalloc((size_t)p->n_ops + 1, sizeof *fl);
  const char *(*impl)[PROF_NCAT] = sw_xcalloc((size_t)p->n_ops + 1, sizeof *impl);
  double cat[PROF_NCAT] = {0}, rest = total;
  int nl = 0;
  for (int i = 0; i < p->n_ops; i++) {
    int c = 0;
    const ir_node *l = profile_layer_of(p, &p->ops[i], &c);
    if (!l) continue;
    int j = 0;
    while (j < nl && layer[j] != l) j++;
    if (j == nl) layer[nl++] = l;
    t[j][c] += p->prof_seconds[i];
    fl[j][c] += p->ops[i].flops;
    if (c != PROF_TOPK) impl[j][c] = p->ops[i].impl;
    cat[c] += p->prof_seconds[i];
    rest -= p->prof_seconds[i];
  }
  double r = (double)p->prof_runs;
  fprintf(f, "  per layer, ms per run (GFLOP/s, dense-equivalent):\n");
  fprintf(f, "  %-36s %16s %16s %16s %8s\n", "layer", "forward", "backward-data", "weight-grad", "top-k");
  for (int j = 0; j < nl; j++) {
    char cell[3][32];
    for (int c = 0; c < 3; c++) {
      if (t[j][c] > 0) snprintf(cell[c], sizeof cell[c], "%7.3f (%5.0f)", 1e3 * t[j][c] / r, fl[j][c] * r / t[j][c] / 1e9);
      else snprintf(cell[c], sizeof cell[c], "-");
    }
    fprintf(f, "  %-36.36s %16s %16s %16s %8.3f\n", layer[j]->name, cell[0], cell[1], cell[2], 1e3 * t[j][PROF_TOPK] / r);
  }
  fprintf(f, "  %-36s %16.3f %16.3f %16.3f %8.3f   rest %.3f ms\n", "total", 1e3 * cat[0] / r, 1e3 * cat[1] / r, 1e3 * cat[2] / r,
          1e3 * cat[3] / r, 1e3 * rest / r);
  fprintf(f, "  kernels chosen:\n");
  for (int j = 0; j < nl; j++)
    for (int c = 0; c < 3; c++)
      if (impl[j][c])
        fprintf(f, "    %-36.36s %-14s %s\n", layer[j]->name, c == 0 ? "forward" : c == 1 ? "backward-data" : "weight-grad", impl[j][c]);
  free(layer);
  free(t);
  free(fl);
  free(impl);
}

void rt_program_profile_print(const rt_program *p, FILE *f) {
  if (!p->prof_seconds || !p->prof_warm) return;
  if (!p->prof_runs) {
    fprintf(f, "profile: nothing to show: the program ran once, and its first run (planning, JIT, first touches "
               "of memory) is left out\n");
    return;
  }
  double total = 0;
  for (int i = 0; i < p->n_ops; i++) total += p->prof_seconds[i];
  fprintf(f, "profile: %.3f ms per run over %d runs (the first run, which plans and first touches memory, left out)\n",
          1e3 * total / p->prof_runs, p->prof_runs);
  /* per op kind */
  const char *kinds[128];
  double ks[128];
  int nk = 0;
  for (int i = 0; i < p->n_ops; i++) {
    const char *k = p->ops[i].node->op->name;
    int j = 0;
    while (j < nk && strcmp(kinds[j], k) != 0) j++;
    if (j == nk && nk < 128) {
      kinds[nk] = k;
      ks[nk++] = 0;
    }
    if (j < 128) ks[j] += p->prof_seconds[i];
  }
  for (int a = 0; a < nk; a++)
    for (int b = a + 1; b < nk; b++)
      if (ks[b] > ks[a]) {
        double t = ks[a];
        ks[a] = ks[b];
        ks[b] = t;
        const char *n = kinds[a];
        kinds[a] = kinds[b];
        kinds[b] = n;
      }
  for (int a = 0; a < nk; a++)
    fprintf(f, "  %-28s %9.3f ms %5.1f%%\n", kinds[a], 1e3 * ks[a] / p->prof_runs, total > 0 ? 100 * ks[a] / total : 0);
  /* the compute-bound layers: achieved GFLOP/s */
  double fl = 0, ft = 0;
  for (int i = 0; i < p->n_ops; i++)
    if (p->ops[i].flops > 0) {
      fl += p->ops[i].flops;
      ft += p->prof_seconds[i];
    }
  if (ft > 0)
    fprintf(f, "  Conv/Gemm kernels: %.1f GFLOP/s (dense-equivalent) over %.3f ms per run (%d threads)\n",
            fl * p->prof_runs / ft / 1e9, 1e3 * ft / p->prof_runs, p->nthreads);
  profile_layers(p, f, total);
}

void rt_program_annotate(const rt_program *p, ir_graph *g) {
  for (int i = 0; i < p->n_ops; i++)
    for (int j = 0; j < g->n_nodes; j++)
      if (g->nodes[j] == p->ops[i].node) g->nodes[j]->impl = ir_strdup(g, p->ops[i].impl[0] ? p->ops[i].impl : "c");
}

void rt_program_set_topk_exact(rt_program *p, int on) { p->topk_exact = on; }
