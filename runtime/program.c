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
  free(p->arena);
  free(p->scratch);
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

int rt_program_build(const ir_graph *g, rt_state *s, int64_t batch, int nthreads, rt_program **out, sw_err *e) {
  *out = NULL;
  if (g->planned_batch != batch) {
    sw_fail(e, SW_EINPUT, "the graph is planned for batch %lld, not %lld", (long long)g->planned_batch, (long long)batch);
    return sw_hint(e, "run the memory-plan pass for the program's batch size (a bug in swatc's pipeline)");
  }
  rt_program *p = sw_xcalloc(1, sizeof *p);
  p->batch = batch;
  p->nthreads = nthreads > 0 ? nthreads : omp_get_max_threads();
  p->arena_bytes = g->arena_bytes;
  p->arena = rt_alloc((size_t)g->arena_bytes);
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
    size_t bytes = (size_t)b->numel * ir_dtype_size(v->dtype);
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
    p->scratch = rt_alloc(p->scratch_bytes);
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
  if (p->prof_seconds) p->prof_runs++;
  return SW_OK;
}

void rt_program_profile(rt_program *p, int on) {
  free(p->prof_seconds);
  p->prof_seconds = on ? sw_xcalloc((size_t)p->n_ops + 1, sizeof *p->prof_seconds) : NULL;
  p->prof_runs = 0;
}

void rt_program_profile_print(const rt_program *p, FILE *f) {
  if (!p->prof_seconds || !p->prof_runs) return;
  double total = 0;
  for (int i = 0; i < p->n_ops; i++) total += p->prof_seconds[i];
  fprintf(f, "profile: %.3f ms per run over %d runs\n", 1e3 * total / p->prof_runs, p->prof_runs);
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
  if (ft > 0) {
    fprintf(f, "  Conv/Gemm kernels: %.1f GFLOP/s over %.3f ms per run (%d threads)\n", fl * p->prof_runs / ft / 1e9,
            1e3 * ft / p->prof_runs, p->nthreads);
    fprintf(f, "  %-44s %-16s %9s %9s\n", "node", "op", "ms", "GFLOP/s");
    for (int i = 0; i < p->n_ops; i++)
      if (p->ops[i].flops > 0 && p->prof_seconds[i] > 0)
        fprintf(f, "  %-44.44s %-16s %9.3f %9.1f\n", p->ops[i].node->name, p->ops[i].node->op->name,
                1e3 * p->prof_seconds[i] / p->prof_runs, p->ops[i].flops * p->prof_runs / p->prof_seconds[i] / 1e9);
  }
}

void rt_program_annotate(const rt_program *p, ir_graph *g) {
  for (int i = 0; i < p->n_ops; i++)
    for (int j = 0; j < g->n_nodes; j++)
      if (g->nodes[j] == p->ops[i].node) g->nodes[j]->impl = ir_strdup(g, p->ops[i].impl[0] ? p->ops[i].impl : "c");
}

void rt_program_set_topk_exact(rt_program *p, int on) { p->topk_exact = on; }
