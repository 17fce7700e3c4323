/* The gradient-check harness: graph building helpers and the pipeline + finite-difference runner. */
#include "tests/gradcheck/harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "passes/passes.h"
#include "runtime/runtime.h"

static uint64_t next_u64(uint64_t *s) { /* splitmix64 */
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

float gc_uniform(gc_case *c, float lo, float hi) {
  double u = (double)(next_u64(&c->rng) >> 11) * (1.0 / 9007199254740992.0);
  return (float)(lo + (hi - lo) * u);
}

static int64_t uniform_int(uint64_t *s, int64_t n) { return (int64_t)(next_u64(s) % (uint64_t)n); }

void gc_case_init(gc_case *c, const char *name, int64_t batch) {
  memset(c, 0, sizeof *c);
  snprintf(c->name, sizeof c->name, "%s", name);
  c->g = ir_graph_new(name);
  c->g->opset = 17;
  c->batch = batch;
  c->nthreads = 1;
  c->h_rel = 1e-2f;
  c->seed = 1234;
  c->step = 7;
  c->input_scale = 1.0f;
  c->grad_zeros = -1;
  uint64_t h = 1469598103934665603ull; /* FNV-1a of the name: each case's data is independent of the others */
  for (const char *p = name; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
  c->rng = h;
}

static void fail_build(gc_case *c, const char *what) {
  if (c->failed) return;
  c->failed = 1;
  if (!c->err.code) sw_fail(&c->err, SW_EINPUT, "%s", what);
}

static ir_value *new_value(gc_case *c, const char *name, ir_value_kind kind, ir_dtype t, int rank, const int64_t *d) {
  ir_shape s = ir_shape_make(rank, d);
  ir_value *v = ir_value_new(c->g, name, kind, t, &s);
  if (!v) {
    char buf[256];
    snprintf(buf, sizeof buf, "test bug: value name '%s' used twice", name);
    fail_build(c, buf);
  }
  return v;
}

ir_value *gc_input(gc_case *c, const char *name, int rank, const int64_t *d) {
  ir_value *v = new_value(c, name, IR_VAL_INPUT, IR_F32, rank, d);
  if (!v) return NULL;
  ir_graph_add_input(c->g, v);
  if (ir_shape_has_n(&v->shape)) c->g->batch_free = 1;
  return v;
}

ir_value *gc_labels(gc_case *c, const char *name, int rank, const int64_t *d) {
  ir_value *v = new_value(c, name, IR_VAL_INPUT, IR_I64, rank, d);
  if (!v) return NULL;
  ir_graph_add_input(c->g, v);
  return v;
}

static ir_value *with_data(gc_case *c, const char *name, ir_value_kind kind, int rank, const int64_t *d) {
  ir_value *v = new_value(c, name, kind, IR_F32, rank, d);
  if (!v) return NULL;
  int64_t n = ir_shape_numel(&v->shape);
  SW_ASSERT(n >= 0);
  ir_value_set_data(v, sw_xcalloc((size_t)n + 1, sizeof(float)), (size_t)n * sizeof(float));
  return v;
}

ir_value *gc_param(gc_case *c, const char *name, int rank, const int64_t *d, float scale) {
  ir_value *v = with_data(c, name, IR_VAL_PARAM, rank, d);
  if (!v) return NULL;
  float *p = v->data;
  for (int64_t i = 0; i < ir_shape_numel(&v->shape); i++) p[i] = gc_uniform(c, -scale, scale);
  return v;
}

ir_value *gc_fixed(gc_case *c, ir_value_kind kind, const char *name, int rank, const int64_t *d, float value) {
  ir_value *v = with_data(c, name, kind, rank, d);
  if (!v) return NULL;
  float *p = v->data;
  for (int64_t i = 0; i < ir_shape_numel(&v->shape); i++) p[i] = value;
  return v;
}

void gc_fill_away(gc_case *c, ir_value *v, float lo, float hi, const float *kinks, int nk, float margin) {
  if (!v) return;
  float *p = v->data;
  for (int64_t i = 0; i < ir_shape_numel(&v->shape); i++) {
    for (int tries = 0;; tries++) {
      SW_ASSERT(tries < 10000);
      float x = gc_uniform(c, lo, hi);
      int ok = 1;
      for (int k = 0; k < nk; k++) ok &= fabsf(x - kinks[k]) >= margin;
      if (ok) {
        p[i] = x;
        break;
      }
    }
  }
}

void gc_fill_distinct(gc_case *c, ir_value *v, float spacing) {
  if (!v) return;
  float *p = v->data;
  int64_t n = ir_shape_numel(&v->shape);
  for (int64_t i = 0; i < n; i++) p[i] = ((float)i - 0.5f * (float)(n - 1)) * spacing;
  for (int64_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
    int64_t j = uniform_int(&c->rng, i + 1);
    float t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
}

ir_node *gc_node(gc_case *c, const char *op, int n_in, ir_value *const *in, int n_out) {
  return ir_emit(c->g, op, op, n_in, in, n_out);
}

ir_value *gc_done(gc_case *c, ir_node *n) {
  if (c->failed) return NULL;
  for (int i = 0; i < n->n_in; i++)
    if (!n->in[i]) {
      fail_build(c, "test bug: a node input is missing");
      return NULL;
    }
  if (ir_infer_node(n, &c->err)) {
    c->failed = 1;
    return NULL;
  }
  return n->out[0];
}

ir_value *gc_op(gc_case *c, const char *op, int n_in, ir_value *const *in) { return gc_done(c, gc_node(c, op, n_in, in, 1)); }

/* y -> Flatten -> Gemm(head.w [10, F], head.b [10], transB) = logits, a graph output. */
static void finish(gc_case *c, ir_value *y) {
  if (c->failed || !y) {
    fail_build(c, "test bug: no value to finish");
    return;
  }
  ir_node *f = gc_node(c, "Flatten", 1, &y, 1);
  ir_attr_set_int(c->g, f, "axis", y->shape.rank >= 1 ? 1 : 0);
  ir_value *fy = gc_done(c, f);
  if (!fy) return;
  int64_t F = fy->shape.d[1];
  ir_value *w = gc_param(c, "head.w", 2, (int64_t[]){GC_CLASSES, F}, 2.5f / sqrtf((float)F));
  ir_value *b = gc_param(c, "head.b", 1, (int64_t[]){GC_CLASSES}, 0.1f);
  ir_node *fc = gc_node(c, "Gemm", 3, (ir_value *[]){fy, w, b}, 1);
  ir_attr_set_int(c->g, fc, "transB", 1);
  ir_value *logits = gc_done(c, fc);
  if (logits) ir_graph_add_output(c->g, logits);
}

static void fill_inputs(gc_case *c, rt_program *prog, int64_t n_classes) {
  for (int i = 0; i < c->g->n_inputs; i++) {
    const ir_value *v = c->g->inputs[i];
    int64_t n = 0;
    void *buf = rt_program_buffer(prog, v->name, &n);
    SW_ASSERT(buf);
    if (v->dtype == IR_F32) {
      float *p = buf;
      for (int64_t k = 0; k < n; k++) p[k] = gc_uniform(c, -c->input_scale, c->input_scale);
    } else {
      SW_ASSERT(v->dtype == IR_I64);
      int64_t *p = buf;
      for (int64_t k = 0; k < n; k++) p[k] = uniform_int(&c->rng, n_classes);
      SW_ASSERT(c->n_ignore <= n);
      for (int k = 0; k < c->n_ignore; k++) { /* n_ignore distinct samples */
        int64_t j = uniform_int(&c->rng, n);
        while (p[j] == c->ignore_index) j = (j + 1) % n;
        p[j] = c->ignore_index;
      }
    }
  }
}

typedef struct param_check {
  const ir_value *p;
  float *grad;       /* copy of the gradient buffer after the base run */
  int64_t numel;
  double scale, err; /* max |fd|, max |g - fd| */
  int64_t worst;
  double worst_g, worst_fd;
  int n_coords;
  int zero; /* expected to be exactly zero */
  int ok;
} param_check;

static int run_loss(gc_case *c, rt_program *prog, const float *loss, double *out) {
  sw_err e = {0};
  if (rt_program_run(prog, c->step, &e)) {
    printf("FAIL  %-44s run: %s\n", c->name, e.msg);
    return 1;
  }
  *out = *loss;
  return 0;
}

/* Central differences of the loss for up to GC_MAX_COORDS coordinates of pc->p (stratified sample). */
static int check_param(gc_case *c, rt_program *prog, rt_state *st, const float *loss, param_check *pc) {
  rt_tensor *t = rt_state_find(st, pc->p->name);
  SW_ASSERT(t && t->numel == pc->numel);
  float maxabs = 0;
  for (int64_t i = 0; i < t->numel; i++) maxabs = fmaxf(maxabs, fabsf(t->data[i]));
  float h = c->h_abs > 0 ? c->h_abs : c->h_rel * fmaxf(maxabs, 0.1f);
  int64_t m = t->numel < GC_MAX_COORDS ? t->numel : GC_MAX_COORDS;
  uint64_t s = c->rng ^ 0x5bd1e995u;
  pc->scale = pc->err = 0;
  pc->worst = -1;
  pc->n_coords = (int)m;
  double *fd = sw_xmalloc(sizeof *fd * (size_t)m);
  int64_t *idx = sw_xmalloc(sizeof *idx * (size_t)m);
  for (int64_t k = 0; k < m; k++) {
    int64_t lo = k * t->numel / m, hi = (k + 1) * t->numel / m;
    int64_t i = lo + uniform_int(&s, hi - lo);
    float x0 = t->data[i];
    float xp = x0 + h, xm = x0 - h;
    double lp, lm;
    t->data[i] = xp;
    int rc = run_loss(c, prog, loss, &lp);
    t->data[i] = xm;
    rc |= run_loss(c, prog, loss, &lm);
    t->data[i] = x0;
    if (rc) {
      free(fd);
      free(idx);
      return 1;
    }
    idx[k] = i;
    fd[k] = (lp - lm) / ((double)xp - (double)xm);
    pc->scale = fmax(pc->scale, fabs(fd[k]));
  }
  for (int64_t k = 0; k < m; k++) {
    double d = fabs((double)pc->grad[idx[k]] - fd[k]);
    if (isnan(d)) d = INFINITY;
    if (pc->worst < 0 || d > pc->err) {
      pc->err = d;
      pc->worst = idx[k];
      pc->worst_g = pc->grad[idx[k]];
      pc->worst_fd = fd[k];
    }
  }
  pc->zero = 0;
  for (int k = 0; k < 4; k++) pc->zero |= c->zero_grad[k] && !strcmp(c->zero_grad[k], pc->p->name);
  if (pc->zero) {
    double gmax = 0;
    for (int64_t i = 0; i < pc->numel; i++) gmax = fmax(gmax, fabs(pc->grad[i]));
    pc->ok = gmax <= GC_ATOL && pc->scale <= GC_ATOL;
  } else {
    pc->ok = pc->err <= GC_RTOL * pc->scale + GC_ATOL && pc->scale >= GC_MIN_SCALE;
  }
  free(fd);
  free(idx);
  return 0;
}

int gc_case_run(gc_case *c, ir_value *y) {
  int failed = 0;
  rt_state st;
  rt_state_init(&st);
  rt_program *prog = NULL;
  param_check *pcs = NULL;
  int n_pc = 0;
  sw_err e = {0};
  if (y) finish(c, y);
  if (c->failed) {
    printf("FAIL  %-44s building the graph: %s\n", c->name, c->err.msg);
    failed = 1;
    goto done;
  }
  static const char *const pipeline[] = {"train-mode", "add-loss", "autodiff", "dce", "fuse", "memory-plan"};
  pass_opts po = {.verify = 1, .batch = c->batch};
  if (passes_run(c->g, pipeline, (int)SW_ARRAY_LEN(pipeline), &po, &e)) {
    printf("FAIL  %-44s passes: %s\n", c->name, e.msg);
    failed = 1;
    goto done;
  }
  if (c->verbose) ir_print(c->g, stdout);
  if (rt_state_bind(&st, c->g, &e) || rt_program_build(c->g, &st, c->batch, c->nthreads, NULL, &prog, &e)) {
    printf("FAIL  %-44s program: %s\n", c->name, e.msg);
    failed = 1;
    goto done;
  }
  rt_program_set_seed(prog, c->seed);
  const ir_value *lossv = NULL;
  for (int i = 0; i < c->g->n_nodes; i++)
    if (c->g->nodes[i]->role == IR_ROLE_LOSS) lossv = c->g->nodes[i]->out[0];
  SW_ASSERT(lossv);
  int64_t n_classes = c->n_classes;
  if (!n_classes) {
    const ir_value *sc = lossv->producer->in[0];
    n_classes = sc->shape.d[1];
  }
  fill_inputs(c, prog, n_classes);
  const float *loss = rt_program_buffer(prog, lossv->name, NULL);
  SW_ASSERT(loss);
  double l0 = NAN;
  if (run_loss(c, prog, loss, &l0) || !isfinite(l0)) {
    printf("FAIL  %-44s base run (loss %g)\n", c->name, l0);
    failed = 1;
    goto done;
  }
  /* copy every parameter's gradient before the finite-difference runs overwrite the buffers */
  pcs = sw_xcalloc((size_t)c->g->n_values + 1, sizeof *pcs);
  for (int i = 0; i < c->g->n_values; i++) {
    const ir_value *p = c->g->values[i];
    if (p->kind != IR_VAL_PARAM) continue;
    param_check *pc = &pcs[n_pc++];
    pc->p = p;
    pc->numel = ir_shape_numel(&p->shape);
    if (!p->grad) {
      printf("FAIL  %-44s parameter '%s' has no gradient\n", c->name, p->name);
      failed = 1;
      continue;
    }
    int64_t n = 0;
    const float *g = rt_program_buffer(prog, p->grad->name, &n);
    SW_ASSERT(g);
    if (n != pc->numel || !ir_shape_eq(&p->grad->shape, &p->shape)) {
      char a[96], b[96];
      printf("FAIL  %-44s the gradient '%s' of '%s' has shape %s, the parameter %s\n", c->name, p->grad->name, p->name,
             ir_shape_str(&p->grad->shape, a, sizeof a), ir_shape_str(&p->shape, b, sizeof b));
      failed = 1;
      continue;
    }
    pc->grad = sw_xmalloc(sizeof *pc->grad * (size_t)n);
    memcpy(pc->grad, g, sizeof *pc->grad * (size_t)n);
    if (n_pc == 1) {
      c->grad_zeros = 0;
      for (int64_t k = 0; k < n; k++) c->grad_zeros += pc->grad[k] == 0.0f;
    }
    if (c->corrupt != 0 && n_pc == 1)
      for (int64_t k = 0; k < n; k++) pc->grad[k] *= 1.0f + c->corrupt;
  }
  const char *bad = c->corrupt != 0 ? "xfail" : "FAIL"; /* the self-test's expected failure */
  double worst_rel = 0, worst_abs = 0;
  int coords = 0;
  for (int k = 0; k < n_pc; k++) {
    param_check *pc = &pcs[k];
    if (!pc->grad) continue;
    if (check_param(c, prog, &st, loss, pc)) {
      failed = 1;
      continue;
    }
    coords += pc->n_coords;
    worst_abs = fmax(worst_abs, pc->err);
    if (!pc->zero) worst_rel = fmax(worst_rel, pc->scale > 0 ? pc->err / pc->scale : INFINITY);
    failed |= !pc->ok;
  }
  printf("%-5s %-44s max|g-fd| %.2e  rel %.2e  (%d tensors, %d coords, loss %.4f)\n", failed ? bad : "ok", c->name, worst_abs,
         worst_rel, n_pc, coords, l0);
  for (int k = 0; k < n_pc; k++) {
    param_check *pc = &pcs[k];
    if (!pc->grad || (pc->ok && !c->verbose)) continue;
    printf("      %-20s %-5s scale %.3e  err %.3e  worst [%lld] grad %.6e fd %.6e%s\n", pc->p->name, pc->ok ? "ok" : bad,
           pc->scale, pc->err, (long long)pc->worst, pc->worst_g, pc->worst_fd,
           pc->zero ? "  (expected zero)" : pc->scale < GC_MIN_SCALE ? "  (gradient too small to check)" : "");
  }
done:
  for (int k = 0; k < n_pc; k++) free(pcs[k].grad);
  free(pcs);
  rt_program_free(prog);
  rt_state_free(&st);
  ir_graph_free(c->g);
  c->g = NULL;
  fflush(stdout);
  return failed;
}
