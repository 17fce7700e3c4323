/* Lowering: each IR node becomes one kernel call. The descriptor of the kernel (shapes, attributes,
 * plans with their JIT code) is made here, once; the run functions only call kernels. */
#include <math.h>
#include <string.h>

#include "runtime/exec.h"

#define FAIL(...) return sw_fail(e, SW_EINPUT, __VA_ARGS__)

static kshape ks(const rt_buf *b) { return kshape_make(b->shape.rank, b->shape.d); }

static ir_shape concrete(const ir_shape *s, int64_t batch) {
  ir_shape c = *s;
  for (int i = 0; i < c.rank; i++)
    if (c.d[i] == IR_N) c.d[i] = batch;
  return c;
}

static ir_shape attr_shape(const ir_node *n, const char *name, int64_t batch) {
  const int64_t *v;
  int k = ir_attr_ints(n, name, &v);
  ir_shape s = ir_shape_make(k, v);
  return concrete(&s, batch);
}

static void *ctx_new(rt_op *op, size_t size) {
  op->ctx = sw_xcalloc(1, size);
  return op->ctx;
}

static int is(const ir_node *n, const char *op) { return strcmp(n->op->name, op) == 0; }

/* ---- kernel plans, shared between the forward and backward ops of a layer ---- */

void rt_plan_cache_free(rt_program *p) {
  for (int i = 0; i < p->n_plans; i++) {
    rt_plan_entry *pe = p->plans[i];
    switch (pe->kind) {
      case RT_PLAN_CONV: conv_plan_free(&pe->plan.c); break;
      case RT_PLAN_GEMM: gemm_plan_free(&pe->plan.g); break;
      case RT_PLAN_SPCONV: spconv_plan_free(&pe->plan.sc); break;
      case RT_PLAN_SPGEMM: spgemm_plan_free(&pe->plan.sg); break;
      case RT_PLAN_SPWGRAD: spwgrad_plan_free(&pe->plan.wc); break;
      default: spwgrad_gemm_plan_free(&pe->plan.wg); break;
    }
    free(pe);
  }
  free(p->plans);
}

static const conv_plan *conv_plan_get(rt_program *p, const conv_desc *d, sw_err *e) {
  for (int i = 0; i < p->n_plans; i++)
    if (p->plans[i]->kind == RT_PLAN_CONV && memcmp(&p->plans[i]->d.c, d, sizeof *d) == 0) return &p->plans[i]->plan.c;
  rt_plan_entry *pe = sw_xcalloc(1, sizeof *pe);
  pe->kind = RT_PLAN_CONV;
  pe->d.c = *d;
  if (conv_plan_init(&pe->plan.c, d, p->nthreads, CONV_IMPL_AUTO, e)) {
    free(pe);
    return NULL;
  }
  p->plans = sw_xrealloc(p->plans, sizeof *p->plans * (size_t)(p->n_plans + 1));
  p->plans[p->n_plans++] = pe;
  for (int k = 0; k < CONV_NPASS; k++) rt_need_scratch(p, conv_plan_scratch(&pe->plan.c, (conv_pass)k));
  return &pe->plan.c;
}

static const gemm_plan *gemm_plan_get(rt_program *p, const gemm_desc *d, sw_err *e) {
  for (int i = 0; i < p->n_plans; i++)
    if (p->plans[i]->kind == RT_PLAN_GEMM && memcmp(&p->plans[i]->d.g, d, sizeof *d) == 0) return &p->plans[i]->plan.g;
  rt_plan_entry *pe = sw_xcalloc(1, sizeof *pe);
  pe->kind = RT_PLAN_GEMM;
  pe->d.g = *d;
  if (gemm_plan_init(&pe->plan.g, d, p->nthreads, GEMM_IMPL_AUTO, e)) {
    free(pe);
    return NULL;
  }
  p->plans = sw_xrealloc(p->plans, sizeof *p->plans * (size_t)(p->n_plans + 1));
  p->plans[p->n_plans++] = pe;
  for (int k = 0; k < GEMM_NPASS; k++) rt_need_scratch(p, gemm_plan_scratch(&pe->plan.g, (gemm_pass)k));
  return &pe->plan.g;
}

/* The cached sparse plan of `kind` for a conv (d) or gemm (g) shape; NULL if the kernel cannot serve
 * the shape (the layer then keeps its dense kernel). */
static rt_plan_entry *sparse_plan_get(rt_program *p, int kind, const conv_desc *d, const gemm_desc *g) {
  sw_err le = {0}, *e = &le;
  for (int i = 0; i < p->n_plans; i++) {
    rt_plan_entry *pe = p->plans[i];
    if (pe->kind == kind && (d ? memcmp(&pe->d.c, d, sizeof *d) : memcmp(&pe->d.g, g, sizeof *g)) == 0) return pe;
  }
  rt_plan_entry *pe = sw_xcalloc(1, sizeof *pe);
  pe->kind = kind;
  if (d) pe->d.c = *d;
  else pe->d.g = *g;
  int rc;
  switch (kind) {
    case RT_PLAN_SPCONV: rc = spconv_plan_init(&pe->plan.sc, d, p->nthreads, e); break;
    case RT_PLAN_SPGEMM: rc = spgemm_plan_init(&pe->plan.sg, g, p->nthreads, e); break;
    case RT_PLAN_SPWGRAD: rc = spwgrad_plan_init(&pe->plan.wc, d, p->nthreads, e); break;
    default: rc = spwgrad_gemm_plan_init(&pe->plan.wg, g, p->nthreads, e); break;
  }
  if (rc) {
    free(pe);
    return NULL;
  }
  p->plans = sw_xrealloc(p->plans, sizeof *p->plans * (size_t)(p->n_plans + 1));
  p->plans[p->n_plans++] = pe;
  return pe;
}

/* SWAT: the [threshold, density] state of the Top-K node that produces v, or NULL when v is not a
 * Top-K output (a dense layer). */
static int sparse_kernels = 1;

void rt_set_sparse_kernels(int on) { sparse_kernels = on; }

static const float *topk_state_of(rt_program *p, const ir_value *v) {
  if (!v || !v->producer || strcmp(v->producer->op->name, "TopKSparsify") != 0) return NULL;
  return rt_buf_of(p, v->producer->in[1])->data;
}

static const void *topk_packed_of(rt_program *p, const ir_value *v, double *room, unsigned classes);

/* ---- Conv ---- */

typedef struct conv_ctx {
  const conv_plan *plan;
  /* SWAT: the sparse kernel, used while the density of the Top-K'd operand (st[1]) is below `cross` */
  const spconv_plan *sp;     /* sparse W: forward, backward-data */
  const spwgrad_plan *wg;    /* sparse saved X: weight gradient */
  const float *st;
  double cross;
  size_t pack_bytes;         /* weight gradient: bytes of the packed X_s at the front of the scratch */
  int64_t numel_x;
  const void *packed;        /* weight gradient: X_s held compact by its Top-K op (else read from in[1]) */
  int never_dense;           /* weight gradient: X_s never dense enough for the dense kernel (no scratch for it) */
} conv_ctx;

/* The 2-D window of a Conv/pooling node (a 1-D one as height 1): input size, kernel, strides, pads, dilations. */
typedef struct window2d {
  int N, C, H, W, kh, kw, sh, sw, pt, pl, pb, pr, dh, dw;
} window2d;

static int window_of(const ir_node *n, const ir_shape *x, const int64_t *kernel, window2d *w, sw_err *e) {
  int sp = x->rank - 2;
  if (sp != 1 && sp != 2) FAIL("node '%s' (%s): unsupported at run time: %d-D windows", n->name, n->op->name, sp);
  const int64_t *st, *pa, *di;
  ir_attr_ints(n, "strides", &st);
  ir_attr_ints(n, "pads", &pa);
  int nd = ir_attr_ints(n, "dilations", &di);
  w->N = (int)x->d[0];
  w->C = (int)x->d[1];
  w->H = sp == 2 ? (int)x->d[2] : 1;
  w->W = (int)x->d[sp + 1];
  w->kh = sp == 2 ? (int)kernel[0] : 1;
  w->kw = (int)kernel[sp - 1];
  w->sh = sp == 2 ? (int)st[0] : 1;
  w->sw = (int)st[sp - 1];
  w->pt = sp == 2 ? (int)pa[0] : 0;
  w->pl = (int)pa[sp - 1];
  w->pb = sp == 2 ? (int)pa[2] : 0;
  w->pr = (int)pa[2 * sp - 1];
  w->dh = sp == 2 && nd ? (int)di[0] : 1;
  w->dw = nd ? (int)di[sp - 1] : 1;
  return SW_OK;
}

/* x: the input shape [N,C,H,W] or [N,C,L]; w: [K,C/g,R,S] or [K,C/g,R] */
static int conv_desc_of(const ir_node *n, const ir_shape *x, const ir_shape *w, conv_desc *d, sw_err *e) {
  window2d g = {0};
  if (window_of(n, x, w->d + 2, &g, e)) return e->code;
  *d = (conv_desc){.N = g.N, .C = g.C, .H = g.H, .W = g.W, .K = (int)w->d[0], .R = g.kh, .S = g.kw, .stride_h = g.sh,
                   .stride_w = g.sw, .pad_t = g.pt, .pad_l = g.pl, .pad_b = g.pb, .pad_r = g.pr, .dil_h = g.dh, .dil_w = g.dw,
                   .groups = (int)ir_attr_int(n, "group")};
  return conv_desc_resolve(d, e);
}

static int run_conv(rt_program *p, const rt_op *op) {
  const conv_ctx *c = op->ctx;
  if (c->sp && c->st[1] < c->cross) spconv_plan_fwd(c->sp, op->in[0], op->in[1], op->in[2], op->out[0], p->scratch);
  else conv_plan_fwd(c->plan, op->in[0], op->in[1], op->in[2], op->out[0], p->scratch);
  return SW_OK;
}
static int run_conv_grad_data(rt_program *p, const rt_op *op) {
  const conv_ctx *c = op->ctx;
  if (c->sp && c->st[1] < c->cross) spconv_plan_bwd_data(c->sp, op->in[0], op->in[1], op->out[0], p->scratch);
  else conv_plan_bwd_data(c->plan, op->in[0], op->in[1], op->out[0], p->scratch);
  return SW_OK;
}
static int run_conv_grad_weight(rt_program *p, const rt_op *op) {
  const conv_ctx *c = op->ctx;
  const conv_desc *d = &c->plan->d;
  char *rest = (char *)p->scratch + c->pack_bytes;
  if (c->packed) { /* X_s exists only as its list of entries: its cost is what it holds */
    if (c->wg && spact_density(c->packed) < c->cross) {
      spwgrad_conv(c->wg, c->packed, op->in[0], op->out[0], op->out[1], p->scratch);
    } else {
      SW_ASSERT(!c->never_dense);
      spact_unpack(c->packed, p->scratch);
      conv_plan_bwd_weight(c->plan, p->scratch, op->in[0], op->out[0], op->out[1], rest);
    }
  } else if (c->wg && c->st[1] < c->cross) {
    int64_t nnz = spact_pack(op->in[1], d->N, d->C, d->H, d->W, 0.0f, c->wg->classes, p->scratch,
                             c->numel_x, p->nthreads, rest);
    SW_ASSERT(nnz >= 0);
    spwgrad_conv(c->wg, p->scratch, op->in[0], op->out[0], op->out[1], rest);
  } else {
    conv_plan_bwd_weight(c->plan, op->in[1], op->in[0], op->out[0], op->out[1], p->scratch);
  }
  return SW_OK;
}

/* Describes a layer's choice between its sparse and dense kernel, for the lowered dump. */
static void describe_choice(rt_op *op, const char *sparse, double cross, const char *dense) {
  snprintf(op->impl, sizeof op->impl, "%s while density < %.2f, else %s", sparse, cross, dense);
}

/* SWAT: gives a Conv / ConvGradData / ConvGradWeight op whose weight (or saved input) is a Top-K
 * output the sparse kernel too; it runs whenever the realised density is below the crossover. */
static int lower_conv_sparse(rt_program *p, const ir_node *n, rt_op *op, conv_ctx *c) {
  int wgrad = is(n, "ConvGradWeight");
  const float *st = topk_state_of(p, n->in[1]); /* W (forward, backward-data) or X_s (weight gradient) */
  if (!st) return SW_OK;
  const conv_desc *d = &c->plan->d;
  char dense[256], sparse[512];
  conv_plan_describe(c->plan, dense, sizeof dense);
  c->st = st;
  if (wgrad) {
    double room = 1.0; /* the most X_s can keep */
    c->packed = topk_packed_of(p, n->in[1], &room, spwgrad_conv_classes(d));
    c->numel_x = (int64_t)d->N * d->C * d->H * d->W;
    /* the front of the scratch: X_s packed here (dense X_s) or unpacked here (compact X_s, dense kernel) */
    c->pack_bytes = c->packed ? kern_align_up(sizeof(float) * (size_t)c->numel_x)
                              : kern_align_up(spact_bytes(d->N, d->C, d->H, d->W, c->numel_x));
    rt_plan_entry *pe = sparse_kernels && d->dil_h == 1 && d->dil_w == 1 ? sparse_plan_get(p, RT_PLAN_SPWGRAD, d, NULL) : NULL;
    /* a compact X_s never holds more than its room: below the crossover, the dense kernel never runs */
    c->never_dense = c->packed && pe && room < spwgrad_plan_crossover(&pe->plan.wc);
    if (c->packed && !c->never_dense) rt_need_scratch(p, c->pack_bytes + conv_plan_scratch(c->plan, CONV_BWD_WEIGHT));
    if (!pe) {
      if (c->packed) snprintf(op->impl, sizeof op->impl, "%s on X_s unpacked from its compact list", dense);
      return SW_OK;
    }
    c->wg = &pe->plan.wc;
    c->cross = spwgrad_plan_crossover(c->wg);
    rt_need_scratch(p, (c->packed ? 0 : c->pack_bytes) + spwgrad_plan_scratch(c->wg));
    if (!c->packed) rt_need_scratch(p, c->pack_bytes + spact_pack_scratch(d->C, d->H, d->W, p->nthreads));
    spwgrad_plan_describe(c->wg, sparse, sizeof sparse);
    if (c->never_dense) {
      snprintf(op->impl, sizeof op->impl, "%s (X_s at most %.1f%% dense: below the crossover %.2f)", sparse,
               100.0 * room, c->cross);
      return SW_OK;
    }
  } else {
    if (!sparse_kernels || d->groups != 1 || d->dil_h != 1 || d->dil_w != 1) return SW_OK;
    rt_plan_entry *pe = sparse_plan_get(p, RT_PLAN_SPCONV, d, NULL);
    if (!pe) return SW_OK;
    c->sp = &pe->plan.sc;
    conv_pass pass = is(n, "Conv") ? CONV_FWD : CONV_BWD_DATA;
    c->cross = spconv_plan_crossover(c->sp, pass);
    rt_need_scratch(p, spconv_plan_scratch(c->sp, pass));
    char pd[400];
    snprintf(sparse, sizeof sparse, "sparse direct nb=%d: %s", c->sp->nb, spconv_plan_describe_pass(c->sp, pass, pd, sizeof pd));
  }
  describe_choice(op, sparse, c->cross, dense);
  return SW_OK;
}

/* ---- Gemm (the fully-connected form) and general Gemm ---- */

typedef struct gemm_ctx {
  const gemm_plan *plan;
  /* SWAT (as conv_ctx) */
  const spgemm_plan *sp;
  const spwgrad_gemm_plan *wg;
  const float *st;
  double cross;
  size_t pack_bytes;
  int64_t numel_x;
  const void *packed;
  gemm_general_desc g; /* the ONNX Gemm's form */
} gemm_ctx;

static int run_fc(rt_program *p, const rt_op *op) {
  const gemm_ctx *c = op->ctx;
  if (c->sp && c->st[1] < c->cross) spgemm_plan_fwd(c->sp, op->in[0], op->in[1], op->in[2], op->out[0], p->scratch);
  else gemm_plan_fwd(c->plan, op->in[0], op->in[1], op->in[2], op->out[0], p->scratch);
  return SW_OK;
}
static int run_fc_grad_data(rt_program *p, const rt_op *op) {
  const gemm_ctx *c = op->ctx;
  if (c->sp && c->st[1] < c->cross) spgemm_plan_bwd_data(c->sp, op->in[0], op->in[1], op->out[0], p->scratch);
  else gemm_plan_bwd_data(c->plan, op->in[0], op->in[1], op->out[0], p->scratch);
  return SW_OK;
}
static int run_fc_grad_weight(rt_program *p, const rt_op *op) {
  const gemm_ctx *c = op->ctx;
  const gemm_desc *d = &c->plan->d;
  char *rest = (char *)p->scratch + c->pack_bytes;
  if (c->packed) { /* X_s exists only as its list of entries */
    if (c->wg && spact_density(c->packed) < c->cross) {
      spwgrad_gemm(c->wg, c->packed, op->in[0], op->out[0], op->out[1], p->scratch);
    } else {
      spact_unpack(c->packed, p->scratch);
      gemm_plan_bwd_weight(c->plan, p->scratch, op->in[0], op->out[0], op->out[1], rest);
    }
  } else if (c->wg && c->st[1] < c->cross) {
    int64_t nnz = spact_pack(op->in[1], d->M, d->K, 1, 1, 0.0f, 0, p->scratch, c->numel_x, p->nthreads, rest);
    SW_ASSERT(nnz >= 0);
    spwgrad_gemm(c->wg, p->scratch, op->in[0], op->out[0], op->out[1], rest);
  } else {
    gemm_plan_bwd_weight(c->plan, op->in[1], op->in[0], op->out[0], op->out[1], p->scratch);
  }
  return SW_OK;
}

/* SWAT: the sparse kernel of a fully-connected op whose weight (or saved input) is a Top-K output. */
static int lower_fc_sparse(rt_program *p, const ir_node *n, rt_op *op, gemm_ctx *c, int pass) {
  const float *st = topk_state_of(p, n->in[1]);
  if (!st) return SW_OK;
  char dense[256], sparse[512];
  gemm_plan_describe(c->plan, dense, sizeof dense);
  const gemm_desc *d = &c->plan->d;
  if (pass == GEMM_BWD_WEIGHT) {
    c->packed = topk_packed_of(p, n->in[1], NULL, 0);
    c->numel_x = (int64_t)d->M * d->K;
    c->pack_bytes = c->packed ? kern_align_up(sizeof(float) * (size_t)c->numel_x)
                              : kern_align_up(spact_bytes(d->M, d->K, 1, 1, c->numel_x));
    if (c->packed) rt_need_scratch(p, c->pack_bytes + gemm_plan_scratch(c->plan, GEMM_BWD_WEIGHT));
    rt_plan_entry *pe = sparse_kernels ? sparse_plan_get(p, RT_PLAN_SPWGRAD_GEMM, NULL, d) : NULL;
    if (!pe) {
      c->st = st;
      if (c->packed) snprintf(op->impl, sizeof op->impl, "%s on X_s unpacked from its compact list", dense);
      return SW_OK;
    }
    c->wg = &pe->plan.wg;
    c->cross = spwgrad_gemm_plan_crossover(c->wg);
    rt_need_scratch(p, (c->packed ? 0 : c->pack_bytes) + spwgrad_gemm_plan_scratch(c->wg));
    if (!c->packed) rt_need_scratch(p, c->pack_bytes + spact_pack_scratch(d->K, 1, 1, p->nthreads));
    snprintf(sparse, sizeof sparse, "sparse-X scatter");
  } else {
    if (!sparse_kernels) return SW_OK;
    rt_plan_entry *pe = sparse_plan_get(p, RT_PLAN_SPGEMM, NULL, d);
    if (!pe) return SW_OK;
    c->sp = &pe->plan.sg;
    c->cross = spgemm_plan_crossover(c->sp, (gemm_pass)pass);
    rt_need_scratch(p, spgemm_plan_scratch(c->sp, (gemm_pass)pass));
    spgemm_plan_describe(c->sp, sparse, sizeof sparse);
  }
  c->st = st;
  describe_choice(op, sparse, c->cross, dense);
  return SW_OK;
}

/* Y = alpha op(A) op(B) + beta C, plain loops (Gemm forms other than Linear, and Gemm in backward graphs). */
static int run_gemm_general(rt_program *p, const rt_op *op) {
  const gemm_ctx *c = op->ctx;
  gemm_general_fwd(&c->g, op->in[0], op->in[1], op->in[2], op->out[0], p->nthreads);
  return SW_OK;
}

static int lower_gemm(rt_program *p, const ir_node *n, rt_op *op, sw_err *e) {
  gemm_ctx *c = ctx_new(op, sizeof *c);
  const rt_buf *a = rt_buf_of(p, n->in[0]), *b = rt_buf_of(p, n->in[1]);
  gemm_general_desc *g = &c->g;
  g->ta = (int)ir_attr_int(n, "transA");
  g->tb = (int)ir_attr_int(n, "transB");
  g->alpha = ir_attr_float(n, "alpha");
  g->beta = ir_attr_float(n, "beta");
  g->d.M = (int)(g->ta ? a->shape.d[1] : a->shape.d[0]);
  g->d.K = (int)(g->ta ? a->shape.d[0] : a->shape.d[1]);
  g->d.N = (int)(g->tb ? b->shape.d[0] : b->shape.d[1]);
  const rt_buf *cb = n->n_in > 2 && n->in[2] ? rt_buf_of(p, n->in[2]) : NULL;
  int fc = !g->ta && g->tb && g->alpha == 1.0f && (!cb || (g->beta == 1.0f && cb->shape.rank == 1 && cb->shape.d[0] == g->d.N));
  if (fc) {
    gemm_desc d = g->d;
    if (!(c->plan = gemm_plan_get(p, &d, e))) return e->code;
    gemm_plan_describe(c->plan, op->impl, sizeof op->impl);
    op->flops = gemm_desc_flops(&d);
    op->run = run_fc;
    return lower_fc_sparse(p, n, op, c, GEMM_FWD);
  }
  if (cb) g->c = ks(cb);
  snprintf(op->impl, sizeof op->impl, "c loops (general Gemm)");
  op->run = run_gemm_general;
  return SW_OK;
}

static int lower_gemm_grad(rt_program *p, const ir_node *n, rt_op *op, int weight, sw_err *e) {
  gemm_ctx *c = ctx_new(op, sizeof *c);
  const rt_buf *dy = rt_buf_of(p, n->in[0]), *other = rt_buf_of(p, n->in[1]);
  gemm_desc d = {.M = (int)dy->shape.d[0], .N = (int)dy->shape.d[1], .K = (int)other->shape.d[1]};
  if (!(c->plan = gemm_plan_get(p, &d, e))) return e->code;
  gemm_plan_describe(c->plan, op->impl, sizeof op->impl);
  op->flops = gemm_desc_flops(&d);
  op->run = weight ? run_fc_grad_weight : run_fc_grad_data;
  return lower_fc_sparse(p, n, op, c, weight ? GEMM_BWD_WEIGHT : GEMM_BWD_DATA);
}

/* ---- MatMul ---- */

typedef struct shapes_ctx {
  kshape a, b, y;
  int n;
  kshape xs[64];
  int axis;
  int perm[KERN_MAX_DIMS];
  int64_t ints[2 * KERN_MAX_DIMS];
  int n_ints;
  float f;
  slice_desc sl;
} shapes_ctx;

static int run_matmul(rt_program *p, const rt_op *op) {
  (void)p;
  const shapes_ctx *c = op->ctx;
  matmul_fwd_ref(&c->a, op->in[0], &c->b, op->in[1], op->out[0]);
  return SW_OK;
}

/* ---- activations ---- */

typedef struct act_ctx {
  act_desc a;
  int64_t n;
  int reads_y; /* backward reads the forward output */
} act_ctx;

static int run_act(rt_program *p, const rt_op *op) {
  const act_ctx *c = op->ctx;
  act_fwd(&c->a, c->n, op->in[0], op->out[0], p->nthreads);
  return SW_OK;
}

static int run_act_grad(rt_program *p, const rt_op *op) {
  const act_ctx *c = op->ctx;
  act_bwd(&c->a, c->n, c->reads_y ? NULL : op->in[1], c->reads_y ? op->in[1] : NULL, op->in[0], op->out[0], p->nthreads);
  return SW_OK;
}

static int lower_act(rt_program *p, const ir_node *n, rt_op *op, const char *kind, int grad) {
  act_ctx *c = ctx_new(op, sizeof *c);
  c->n = rt_buf_of(p, n->out[0])->numel;
  if (!strcmp(kind, "Relu")) c->a.kind = ACT_RELU; /* ReluGrad reads Y: Y > 0 exactly where X > 0 */
  else if (!strcmp(kind, "LeakyRelu")) {
    c->a.kind = ACT_LEAKY_RELU;
    c->a.alpha = ir_attr_float(n, "alpha");
  } else if (!strcmp(kind, "Clip")) {
    c->a.kind = ACT_CLIP;
    c->a.lo = ir_attr_float(n, "min");
    c->a.hi = ir_attr_float(n, "max");
  } else if (!strcmp(kind, "Sigmoid")) {
    c->a.kind = ACT_SIGMOID;
    c->reads_y = 1;
  } else {
    c->a.kind = ACT_TANH;
    c->reads_y = 1;
  }
  op->run = grad ? run_act_grad : run_act;
  return SW_OK;
}

/* ---- elementwise arithmetic ---- */

typedef struct bin_ctx {
  binop_kind k;
  kshape a, b, y;
} bin_ctx;

static int run_binop(rt_program *p, const rt_op *op) {
  const bin_ctx *c = op->ctx;
  binop_fwd(c->k, &c->a, op->in[0], &c->b, op->in[1], &c->y, op->out[0], p->nthreads);
  return SW_OK;
}

static int run_reduce_sum_to(rt_program *p, const rt_op *op) {
  const bin_ctx *c = op->ctx; /* a = target, y = input */
  binop_bwd(BIN_ADD, &c->a, NULL, &c->y, NULL, &c->y, op->in[0], op->out[0], NULL, p->nthreads);
  return SW_OK;
}

typedef struct sum_ctx {
  int n_in;
  int64_t numel;
  int neg;
} sum_ctx;

static int run_sum(rt_program *p, const rt_op *op) {
  const sum_ctx *c = op->ctx;
  const float *x[RT_MAX_ARGS];
  for (int k = 0; k < c->n_in; k++) x[k] = op->in[k];
  sum_n(c->numel, c->n_in, x, c->neg, op->out[0], p->nthreads);
  return SW_OK;
}

typedef struct fused_ctx {
  int64_t numel;
  int n_grads;   /* SumReluGrad: the gradients summed (inputs 1..) */
  int mask;      /* AddRelu: writes the bit mask; SumReluGrad: the gate is the bit mask (else Y) */
  int sub[2];    /* SumReluGrad{sub_strides}: the strides of dY2's grid (else 0) */
  int64_t planes;
  int H, W;      /* SumReluGrad{sub_strides}: dY1 as [planes][H][W] */
} fused_ctx;

/* AddRelu(A, B) -> Y[, M] (fuse: a residual Add and the ReLU after it, and the ReLU's bit mask) */
static int run_add_relu(rt_program *p, const rt_op *op) {
  const fused_ctx *c = op->ctx;
  add_relu(c->numel, op->in[0], op->in[1], op->out[0], c->mask ? op->out[1] : NULL, p->nthreads);
  return SW_OK;
}

/* SumReluGrad(gate, dY1, ..) -> dX (fuse: a gradient accumulation and the ReLU backward after it) */
static int run_sum_relu_grad(rt_program *p, const rt_op *op) {
  const fused_ctx *c = op->ctx;
  if (c->sub[0]) {
    sum_relu_grad_sub(c->planes, c->H, c->W, c->sub[0], c->sub[1], op->in[1], op->in[2], c->mask ? NULL : op->in[0],
                      c->mask ? op->in[0] : NULL, op->out[0], p->nthreads);
    return SW_OK;
  }
  const float *dy[RT_MAX_ARGS];
  for (int j = 0; j < c->n_grads; j++) dy[j] = op->in[1 + j];
  sum_relu_grad(c->numel, c->n_grads, dy, c->mask ? NULL : op->in[0], c->mask ? op->in[0] : NULL, op->out[0],
                p->nthreads);
  return SW_OK;
}

/* ---- normalisation, pooling, softmax, loss, dropout ---- */

typedef struct bn_ctx {
  bn_desc d;
  int training;
  int relu;
  int residual;       /* training forward: Y = max(BN(X) + R, 0) (in[5]) and its bit mask (out[5], optional) */
  size_t stats_bytes; /* training forward: the front of the scratch holds the statistics no output takes */
} bn_ctx;

static int run_bn(rt_program *p, const rt_op *op) {
  const bn_ctx *c = op->ctx;
  float *x = op->in[0], *scale = op->in[1], *bias = op->in[2], *mean = op->in[3], *var = op->in[4];
  if (!c->training) {
    bn_fwd_infer(&c->d, x, scale, bias, mean, var, op->out[0], c->relu, p->nthreads);
    return SW_OK;
  }
  float *sm = op->out[3] ? op->out[3] : (float *)p->scratch, *si = op->out[4] ? op->out[4] : (float *)p->scratch + c->d.C;
  /* the running statistics are state: updated in place, then published as outputs 1 and 2 */
  if (c->residual)
    bn_fwd_train_add_relu(&c->d, x, op->in[5], scale, bias, op->out[0], (uint8_t *)op->out[5], mean, var,
                          sm, si, (char *)p->scratch + c->stats_bytes, p->nthreads);
  else
    bn_fwd_train(&c->d, x, scale, bias, op->out[0], mean, var, sm, si, c->relu, (char *)p->scratch + c->stats_bytes,
                 p->nthreads);
  if (op->out[1] && op->out[1] != mean) memcpy(op->out[1], mean, sizeof(float) * (size_t)c->d.C);
  if (op->out[2] && op->out[2] != var) memcpy(op->out[2], var, sizeof(float) * (size_t)c->d.C);
  return SW_OK;
}

static int run_bn_grad(rt_program *p, const rt_op *op) {
  const bn_ctx *c = op->ctx;
  bn_bwd(&c->d, op->in[1], c->relu ? op->in[5] : NULL, op->in[0], op->in[2], op->in[3], op->in[4], op->out[0], op->out[1],
         op->out[2], c->relu, p->scratch, p->nthreads); /* in[5]: the bias, read by the fused ReLU's mask */
  return SW_OK;
}

static void bn_desc_of(const rt_buf *x, const ir_node *n, bn_desc *d) {
  d->N = (int)x->shape.d[0];
  d->C = (int)x->shape.d[1];
  d->HW = 1;
  for (int i = 2; i < x->shape.rank; i++) d->HW *= x->shape.d[i];
  d->eps = ir_attr_float(n, "epsilon");
  d->momentum = ir_op_attr(n->op, "momentum") ? ir_attr_float(n, "momentum") : 0.9f;
}

typedef struct pool_ctx {
  pool_desc d;
  int relu; /* MaxPoolGrad: the ReLU backward fused */
} pool_ctx;

static int pool_desc_of(const ir_node *n, const ir_shape *x, pool_desc *d, sw_err *e) {
  const int64_t *k;
  ir_attr_ints(n, "kernel_shape", &k);
  window2d g = {0};
  if (window_of(n, x, k, &g, e)) return e->code;
  *d = (pool_desc){.N = g.N, .C = g.C, .H = g.H, .W = g.W, .kh = g.kh, .kw = g.kw, .stride_h = g.sh, .stride_w = g.sw,
                   .pad_t = g.pt, .pad_l = g.pl, .pad_b = g.pb, .pad_r = g.pr, .dil_h = g.dh, .dil_w = g.dw,
                   .ceil_mode = (int)ir_attr_int(n, "ceil_mode"),
                   .count_include_pad = ir_op_attr(n->op, "count_include_pad") ? (int)ir_attr_int(n, "count_include_pad") : 0};
  return pool_desc_resolve(d, e);
}

static int run_maxpool(rt_program *p, const rt_op *op) {
  const pool_ctx *c = op->ctx;
  maxpool_fwd(&c->d, op->in[0], op->out[0], p->scratch, p->nthreads);
  return SW_OK;
}

/* MaxPoolGrad(dY, X) {relu}: the argmax is recomputed from X (cheaper than keeping it alive all step) */
static int run_maxpool_grad(rt_program *p, const rt_op *op) {
  const pool_ctx *c = op->ctx;
  maxpool_bwd_x(&c->d, op->in[0], op->in[1], c->relu, op->out[0], p->scratch, p->nthreads);
  return SW_OK;
}

static int run_avgpool(rt_program *p, const rt_op *op) {
  avgpool_fwd(&((const pool_ctx *)op->ctx)->d, op->in[0], op->out[0], p->nthreads);
  return SW_OK;
}

static int run_avgpool_grad(rt_program *p, const rt_op *op) {
  avgpool_bwd(&((const pool_ctx *)op->ctx)->d, op->in[0], op->out[0], p->nthreads);
  return SW_OK;
}

typedef struct gap_ctx {
  int N, C;
  int64_t HW;
} gap_ctx;

static int run_gap(rt_program *p, const rt_op *op) {
  const gap_ctx *c = op->ctx;
  global_avgpool_fwd(c->N, c->C, c->HW, op->in[0], op->out[0], p->nthreads);
  return SW_OK;
}

static int run_gap_grad(rt_program *p, const rt_op *op) {
  const gap_ctx *c = op->ctx;
  global_avgpool_bwd(c->N, c->C, c->HW, op->in[0], op->out[0], p->nthreads);
  return SW_OK;
}

typedef struct softmax_ctx {
  int64_t outer, len, inner;
  int log_;
} softmax_ctx;

static int run_softmax(rt_program *p, const rt_op *op) {
  const softmax_ctx *c = op->ctx;
  softmax_fwd(c->outer, c->len, c->inner, c->log_, op->in[0], op->out[0], p->nthreads);
  return SW_OK;
}

static int run_softmax_grad(rt_program *p, const rt_op *op) {
  const softmax_ctx *c = op->ctx;
  softmax_bwd(c->outer, c->len, c->inner, c->log_, op->in[1], op->in[0], op->out[0], p->nthreads);
  return SW_OK;
}

typedef struct sce_ctx {
  sce_desc d;
} sce_ctx;

static int run_sce(rt_program *p, const rt_op *op) {
  const sce_ctx *c = op->ctx;
  float *lp = op->out[1] ? op->out[1] : p->scratch;
  return sce_fwd(&c->d, op->in[0], op->in[1], op->in[2], op->out[0], lp, p->err);
}

static int run_sce_grad(rt_program *p, const rt_op *op) {
  (void)p;
  const sce_ctx *c = op->ctx;
  sce_bwd(&c->d, op->in[1], op->in[2], op->in[3], op->in[0], op->out[0]);
  return SW_OK;
}

typedef struct dropout_ctx {
  int64_t n;
  float ratio;
  int training;
  uint64_t salt;
} dropout_ctx;

static int run_dropout(rt_program *p, const rt_op *op) {
  const dropout_ctx *c = op->ctx;
  if (!c->training || c->ratio == 0.0f) {
    if (op->out[0] != op->in[0]) memcpy(op->out[0], op->in[0], sizeof(float) * (size_t)c->n);
    if (op->out[1]) memset(op->out[1], 1, (size_t)c->n);
    return SW_OK;
  }
  uint8_t *mask = op->out[1] ? op->out[1] : p->scratch;
  dropout_fwd(c->n, c->ratio, p->seed ^ c->salt, p->step, op->in[0], op->out[0], mask, p->nthreads);
  return SW_OK;
}

static int run_dropout_grad(rt_program *p, const rt_op *op) {
  const dropout_ctx *c = op->ctx;
  dropout_bwd(c->n, c->ratio, op->in[1], op->in[0], op->out[0], p->nthreads);
  return SW_OK;
}

static int run_relu_mask(rt_program *p, const rt_op *op) {
  relu_mask(((const shapes_ctx *)op->ctx)->n, op->in[0], op->out[0], p->nthreads);
  return SW_OK;
}

/* ---- SWAT Top-K ---- */

typedef struct topk_ctx {
  int64_t n, group;
  double sparsity;
  int period;
  /* compact selection (SWAT's saved X_s): the kept entries of x as [N][C][H][W] in `packed` */
  void *packed;
  int64_t cap;               /* entries it has room for */
  int dims[4];
  int grouped;               /* packed grouped by parity class: a strided conv's weight gradient reads it */
  unsigned classes;          /* when grouped, the parity classes its readers read (spwgrad_conv_classes) */
  size_t impl_len;           /* the length of op->impl before the readers' suffix */
} topk_ctx;

static void topk_ctx_free(void *ctx) {
  topk_ctx *t = ctx;
  free(t->packed);
  free(t);
}

/* Packs the kept entries of x into the compact selection. If a stored threshold keeps more than there
 * is room for, the threshold is re-selected exactly for this step; if ties at the exact threshold
 * still overflow (a pathological tensor), the tied values are dropped. Returns the count kept. */
static int64_t topk_pack(rt_program *p, const topk_ctx *c, const float *x, float *st, int64_t k, int exact) {
  const int *d = c->dims;
  void *pscr = p->scratch; /* the pack's tables: the threshold is selected before or after it, never during */
  unsigned cls = c->grouped ? c->classes : 0;
  int64_t nnz = spact_pack(x, d[0], d[1], d[2], d[3], st[0], cls, c->packed, c->cap, p->nthreads, pscr);
  if (nnz < 0 && !exact) {
    st[0] = k >= c->n ? 0.0f : topk_threshold(x, c->n, k, p->scratch, p->nthreads);
    nnz = spact_pack(x, d[0], d[1], d[2], d[3], st[0], cls, c->packed, c->cap, p->nthreads, pscr);
  }
  while (nnz < 0) {
    st[0] = nextafterf(st[0], INFINITY);
    nnz = spact_pack(x, d[0], d[1], d[2], d[3], st[0], cls, c->packed, c->cap, p->nthreads, pscr);
  }
  return nnz;
}

static int run_topk(rt_program *p, const rt_op *op) {
  const topk_ctx *c = op->ctx;
  const float *x = op->in[0];
  float *y = op->out[0], *st = op->in[1]; /* state [threshold, density], updated in place */
  int64_t groups = c->n / c->group;
  /* k = ceil((1 - s) n); a value that double rounding put a hair above an integer is that integer */
  double kv = (1.0 - c->sparsity) * (double)groups;
  int64_t k = (int64_t)ceil(kv - 1e-9 * (kv > 1 ? kv : 1));
  if (k < 1) k = 1;
  float *scores = c->group > 1 ? (float *)((char *)p->scratch + topk_scratch(p->nthreads)) : NULL;
  if (scores) topk_group_scores(x, c->n, c->group, scores, p->nthreads);
  /* structured selections are re-made every step; unstructured every `period` steps */
  int exact = c->group > 1 || p->topk_exact || st[0] < 0 || p->step % (uint64_t)c->period == 0;
  if (exact) st[0] = k >= groups ? 0.0f : topk_threshold(scores ? scores : x, groups, k, p->scratch, p->nthreads);
  int64_t nnz = c->packed ? topk_pack(p, c, x, st, k, exact)
                : scores  ? topk_apply_groups(x, y, c->n, c->group, scores, st[0], p->nthreads)
                          : topk_apply(x, y, c->n, st[0], p->nthreads);
  if (c->packed) nnz = spact_kept(c->packed); /* with the classes no reader reads, which it does not hold */
  st[1] = (float)((double)nnz / (double)c->n);
  if (op->out[1] && op->out[1] != st) memcpy(op->out[1], st, 2 * sizeof(float));
  return SW_OK;
}

/* The compact selection a Top-K op of this program holds for value v, or NULL if v is not one, for
 * a reader that reads the parity classes `classes` (spwgrad_conv_classes; 0: all, in plane order).
 * room (may be NULL) gets the largest density the reader can see (entries the selection has room
 * for / positions the reader reads, at most 1). A reader of some classes has the op pack them
 * grouped by class, and only the classes its readers read; by default all are packed in plane
 * order, which is faster. */
static const void *topk_packed_of(rt_program *p, const ir_value *v, double *room, unsigned classes) {
  if (!ir_value_compact(v)) return NULL;
  for (int i = 0; i < p->n_ops; i++)
    if (p->ops[i].node == v->producer) {
      topk_ctx *c = p->ops[i].ctx;
      const int *d = c->dims;
      double reads = (double)d[0] * d[1] * (double)spact_class_positions(d[2], d[3], classes);
      if (room) *room = (double)c->cap < reads ? (double)c->cap / reads : 1.0;
      c->classes |= classes ? classes : SPACT_ALL_CLASSES;
      c->grouped |= classes != 0;
      if (c->grouped) {
        char *impl = p->ops[i].impl;
        size_t len = c->impl_len;
        int kept = __builtin_popcount(c->classes);
        if (kept < 4)
          snprintf(impl + len, sizeof p->ops[i].impl - len,
                   ", grouped by stride parity, only the %d of 4 parity classes its readers read", kept);
        else
          snprintf(impl + len, sizeof p->ops[i].impl - len, ", grouped by stride parity");
      }
      return c->packed;
    }
  return NULL;
}

int rt_program_set_sparsity(rt_program *p, const char *node, double sparsity) {
  for (int i = 0; i < p->n_ops; i++)
    if (p->ops[i].run == run_topk && strcmp(p->ops[i].node->name, node) == 0) {
      ((topk_ctx *)p->ops[i].ctx)->sparsity = sparsity;
      return 1;
    }
  return 0;
}

/* ---- data movement ---- */

static int run_copy(rt_program *p, const rt_op *op) {
  (void)p;
  const shapes_ctx *c = op->ctx;
  if (op->out[0] != op->in[0]) memcpy(op->out[0], op->in[0], (size_t)c->n);
  return SW_OK;
}

static int run_concat(rt_program *p, const rt_op *op) {
  const shapes_ctx *c = op->ctx;
  concat_fwd(c->n, c->xs, (const float *const *)op->in, c->axis, op->out[0], p->nthreads);
  return SW_OK;
}

static int run_split(rt_program *p, const rt_op *op) {
  const shapes_ctx *c = op->ctx;
  concat_bwd(c->n, c->xs, c->axis, op->in[0], (float *const *)op->out, p->nthreads);
  return SW_OK;
}

static int run_transpose(rt_program *p, const rt_op *op) {
  const shapes_ctx *c = op->ctx;
  transpose_fwd(&c->a, c->perm, op->in[0], op->out[0], p->nthreads);
  return SW_OK;
}

static int run_pad(rt_program *p, const rt_op *op) {
  const shapes_ctx *c = op->ctx;
  pad_fwd(&c->a, c->ints, c->f, op->in[0], op->out[0], p->nthreads);
  return SW_OK;
}

static int run_slice(rt_program *p, const rt_op *op) {
  (void)p;
  slice_fwd(&((const shapes_ctx *)op->ctx)->sl, op->in[0], op->out[0]);
  return SW_OK;
}

static int run_slice_grad(rt_program *p, const rt_op *op) {
  (void)p;
  slice_bwd(&((const shapes_ctx *)op->ctx)->sl, op->in[0], op->out[0]);
  return SW_OK;
}

static int run_reduce_mean(rt_program *p, const rt_op *op) {
  const shapes_ctx *c = op->ctx;
  reduce_mean_fwd(&c->a, c->n_ints, c->ints, op->in[0], op->out[0], p->nthreads);
  return SW_OK;
}

static int run_reduce_mean_grad(rt_program *p, const rt_op *op) {
  const shapes_ctx *c = op->ctx;
  reduce_mean_bwd(&c->a, c->n_ints, c->ints, op->in[0], op->out[0], p->nthreads);
  return SW_OK;
}

/* ---- the dispatch ---- */


static int only_f32(const rt_program *p, const ir_node *n, sw_err *e) {
  for (int i = 0; i < n->n_in; i++)
    if (n->in[i] && p->bufs[n->in[i]->id].dtype != IR_F32 && !(is(n, "SoftmaxCrossEntropyLoss") && i == 1) &&
        !(is(n, "SoftmaxCrossEntropyLossGrad") && i == 2) && !(is(n, "DropoutGrad") && i == 1) &&
        !(is(n, "SumReluGrad") && i == 0))
      FAIL("node '%s' (%s): unsupported at run time: %s data (swatc's kernels compute in float32)", n->name, n->op->name,
           ir_dtype_name(p->bufs[n->in[i]->id].dtype));
  return SW_OK;
}

int rt_lower_node(rt_program *p, const ir_node *n, rt_op *op, sw_err *e) {
  if (n->n_in > RT_MAX_ARGS || n->n_out > RT_MAX_ARGS) FAIL("node '%s': more than %d inputs or outputs", n->name, RT_MAX_ARGS);
  for (int i = 0; i < n->n_in; i++) op->in[i] = n->in[i] ? rt_buf_of(p, n->in[i])->data : NULL;
  for (int i = 0; i < n->n_out; i++) op->out[i] = n->out[i] ? rt_buf_of(p, n->out[i])->data : NULL;
  int64_t B = p->batch;
  if (is(n, "Reshape") || is(n, "Flatten")) {
    shapes_ctx *c = ctx_new(op, sizeof *c);
    const rt_buf *y = rt_buf_of(p, n->out[0]);
    snprintf(op->impl, sizeof op->impl, "%s", op->out[0] == op->in[0] ? "view (no copy)" : "copy");
    c->n = (int)ir_dtype_bytes(y->dtype, (size_t)y->numel);
    op->run = run_copy;
    return SW_OK;
  }
  if (only_f32(p, n, e)) return e->code;
  if (is(n, "Conv") || is(n, "ConvGradData") || is(n, "ConvGradWeight")) {
    conv_ctx *c = ctx_new(op, sizeof *c);
    conv_desc d;
    ir_shape x, w;
    if (is(n, "Conv")) {
      x = rt_buf_of(p, n->in[0])->shape;
      w = rt_buf_of(p, n->in[1])->shape;
    } else if (is(n, "ConvGradData")) {
      x = attr_shape(n, "x_shape", B);
      w = rt_buf_of(p, n->in[1])->shape;
    } else {
      x = rt_buf_of(p, n->in[1])->shape;
      w = rt_buf_of(p, n->out[0])->shape;
    }
    if (conv_desc_of(n, &x, &w, &d, e)) return e->code;
    if (!(c->plan = conv_plan_get(p, &d, e))) return e->code;
    conv_plan_describe(c->plan, op->impl, sizeof op->impl);
    op->flops = conv_desc_flops(&c->plan->d);
    op->run = is(n, "Conv") ? run_conv : is(n, "ConvGradData") ? run_conv_grad_data : run_conv_grad_weight;
    return lower_conv_sparse(p, n, op, c);
  }
  if (is(n, "Gemm")) return lower_gemm(p, n, op, e);
  if (is(n, "GemmGradData")) return lower_gemm_grad(p, n, op, 0, e);
  if (is(n, "GemmGradWeight")) return lower_gemm_grad(p, n, op, 1, e);
  if (is(n, "MatMul")) {
    shapes_ctx *c = ctx_new(op, sizeof *c);
    c->a = ks(rt_buf_of(p, n->in[0]));
    c->b = ks(rt_buf_of(p, n->in[1]));
    op->run = run_matmul;
    return SW_OK;
  }
  if (is(n, "Relu") || is(n, "LeakyRelu") || is(n, "Clip") || is(n, "Sigmoid") || is(n, "Tanh"))
    return lower_act(p, n, op, n->op->name, 0);
  if (is(n, "ReluGrad") || is(n, "LeakyReluGrad") || is(n, "ClipGrad") || is(n, "SigmoidGrad") || is(n, "TanhGrad")) {
    char kind[32];
    snprintf(kind, sizeof kind, "%.*s", (int)(strlen(n->op->name) - 4), n->op->name);
    return lower_act(p, n, op, kind, 1);
  }
  if (is(n, "Add") || is(n, "Sub") || is(n, "Mul") || is(n, "Div")) {
    bin_ctx *c = ctx_new(op, sizeof *c);
    c->k = is(n, "Add") ? BIN_ADD : is(n, "Sub") ? BIN_SUB : is(n, "Mul") ? BIN_MUL : BIN_DIV;
    c->a = ks(rt_buf_of(p, n->in[0]));
    c->b = ks(rt_buf_of(p, n->in[1]));
    c->y = ks(rt_buf_of(p, n->out[0]));
    op->run = run_binop;
    return SW_OK;
  }
  if (is(n, "ReduceSumTo")) {
    bin_ctx *c = ctx_new(op, sizeof *c);
    c->a = ks(rt_buf_of(p, n->out[0]));
    c->y = ks(rt_buf_of(p, n->in[0]));
    op->run = run_reduce_sum_to;
    return SW_OK;
  }
  if (is(n, "Sum") || is(n, "Neg")) {
    sum_ctx *c = ctx_new(op, sizeof *c);
    c->n_in = n->n_in;
    c->numel = rt_buf_of(p, n->out[0])->numel;
    c->neg = is(n, "Neg");
    op->run = run_sum;
    return SW_OK;
  }
  if (is(n, "AddRelu") || is(n, "SumReluGrad")) {
    fused_ctx *c = ctx_new(op, sizeof *c);
    c->numel = rt_buf_of(p, n->out[0])->numel;
    if (is(n, "AddRelu")) {
      c->mask = n->n_out > 1 && n->out[1];
      snprintf(op->impl, sizeof op->impl, "fused Add + ReLU%s", c->mask ? " + bit mask" : "");
      op->run = run_add_relu;
    } else {
      c->n_grads = n->n_in - 1;
      c->mask = p->bufs[n->in[0]->id].dtype == IR_BIT;
      const int64_t *st;
      if (ir_attr_ints(n, "sub_strides", &st) == 2) {
        const rt_buf *a = rt_buf_of(p, n->in[1]);
        c->sub[0] = (int)st[0], c->sub[1] = (int)st[1];
        c->planes = a->shape.d[0] * a->shape.d[1];
        c->H = (int)a->shape.d[2], c->W = (int)a->shape.d[3];
      }
      snprintf(op->impl, sizeof op->impl, "fused Sum of %d + ReLU backward (%s)%s", c->n_grads, c->mask ? "bit mask" : "reads Y",
               c->sub[0] ? ", the second on its stride grid" : "");
      op->run = run_sum_relu_grad;
    }
    return SW_OK;
  }
  if (is(n, "BatchNormalization") || is(n, "BatchNormalizationGrad")) {
    bn_ctx *c = ctx_new(op, sizeof *c);
    const rt_buf *x = rt_buf_of(p, n->in[is(n, "BatchNormalization") ? 0 : 1]);
    bn_desc_of(x, n, &c->d);
    c->training = is(n, "BatchNormalization") && ir_attr_int(n, "training_mode");
    c->relu = (int)ir_attr_int(n, "relu");
    c->residual = c->training && n->n_in > 5;
    if (c->residual) snprintf(op->impl, sizeof op->impl, "fused Add + ReLU%s", n->n_out > 5 && n->out[5] ? " + bit mask" : "");
    else if (c->relu) snprintf(op->impl, sizeof op->impl, "fused ReLU");
    if (c->training) c->stats_bytes = kern_align_up(2 * sizeof(float) * (size_t)c->d.C);
    if (c->training || is(n, "BatchNormalizationGrad")) rt_need_scratch(p, c->stats_bytes + bn_scratch_bytes(&c->d));
    op->run = is(n, "BatchNormalization") ? run_bn : run_bn_grad;
    return SW_OK;
  }
  if (is(n, "MaxPool") || is(n, "AveragePool") || is(n, "MaxPoolGrad") || is(n, "AveragePoolGrad")) {
    pool_ctx *c = ctx_new(op, sizeof *c);
    ir_shape x = is(n, "MaxPool") || is(n, "AveragePool") ? rt_buf_of(p, n->in[0])->shape
                 : is(n, "MaxPoolGrad")                   ? rt_buf_of(p, n->in[1])->shape
                                                          : attr_shape(n, "x_shape", B);
    if (pool_desc_of(n, &x, &c->d, e)) return e->code;
    size_t outn = (size_t)c->d.N * c->d.C * c->d.P * c->d.Q;
    if (is(n, "MaxPool")) {
      if (n->n_out > 1 && n->out[1]) FAIL("node '%s' (MaxPool): unsupported at run time: the Indices output", n->name);
      rt_need_scratch(p, outn * sizeof(int32_t));
      op->run = run_maxpool;
    } else if (is(n, "MaxPoolGrad")) {
      c->relu = (int)ir_attr_int(n, "relu");
      size_t sb = maxpool_bwd_x_scratch(&c->d);
      rt_need_scratch(p, sb);
      snprintf(op->impl, sizeof op->impl, "argmax recomputed from X%s%s", sb ? ", scatter" : " in the same pass",
               c->relu ? ", ReLU backward fused" : "");
      op->run = run_maxpool_grad;
    } else {
      op->run = is(n, "AveragePool") ? run_avgpool : run_avgpool_grad;
    }
    return SW_OK;
  }
  if (is(n, "GlobalAveragePool") || is(n, "GlobalAveragePoolGrad")) {
    gap_ctx *c = ctx_new(op, sizeof *c);
    ir_shape x = is(n, "GlobalAveragePool") ? rt_buf_of(p, n->in[0])->shape : attr_shape(n, "x_shape", B);
    c->N = (int)x.d[0];
    c->C = (int)x.d[1];
    c->HW = 1;
    for (int i = 2; i < x.rank; i++) c->HW *= x.d[i];
    op->run = is(n, "GlobalAveragePool") ? run_gap : run_gap_grad;
    return SW_OK;
  }
  if (is(n, "Softmax") || is(n, "LogSoftmax") || is(n, "SoftmaxGrad") || is(n, "LogSoftmaxGrad")) {
    softmax_ctx *c = ctx_new(op, sizeof *c);
    const ir_shape *s = &rt_buf_of(p, n->out[0])->shape;
    int64_t ax = ir_attr_int(n, "axis");
    if (ax < 0) ax += s->rank;
    c->outer = c->inner = 1;
    for (int i = 0; i < ax; i++) c->outer *= s->d[i];
    c->len = s->d[ax];
    for (int i = (int)ax + 1; i < s->rank; i++) c->inner *= s->d[i];
    c->log_ = strncmp(n->op->name, "Log", 3) == 0;
    op->run = strstr(n->op->name, "Grad") ? run_softmax_grad : run_softmax;
    return SW_OK;
  }
  if (is(n, "SoftmaxCrossEntropyLoss") || is(n, "SoftmaxCrossEntropyLossGrad")) {
    sce_ctx *c = ctx_new(op, sizeof *c);
    int grad = is(n, "SoftmaxCrossEntropyLossGrad");
    const rt_buf *x = rt_buf_of(p, n->in[grad ? 1 : 0]), *lab = rt_buf_of(p, n->in[grad ? 2 : 1]);
    if (lab->dtype != IR_I64) FAIL("node '%s': unsupported at run time: int32 labels", n->name);
    c->d.N = (int)x->shape.d[0];
    c->d.C = (int)x->shape.d[1];
    c->d.D = 1;
    for (int i = 2; i < x->shape.rank; i++) c->d.D *= x->shape.d[i];
    const char *r = ir_attr_string(n, "reduction");
    c->d.reduction = !strcmp(r, "sum") ? SCE_SUM : !strcmp(r, "none") ? SCE_NONE : SCE_MEAN;
    c->d.has_ignore = ir_attr_get(n, "ignore_index") != NULL;
    c->d.ignore_index = ir_attr_int(n, "ignore_index");
    if (!grad) rt_need_scratch(p, sizeof(float) * (size_t)x->numel);
    op->run = grad ? run_sce_grad : run_sce;
    return SW_OK;
  }
  if (is(n, "ReluMask")) {
    shapes_ctx *c = ctx_new(op, sizeof *c);
    c->n = (int)rt_buf_of(p, n->in[0])->numel;
    op->run = run_relu_mask;
    return SW_OK;
  }
  if (is(n, "Dropout") || is(n, "DropoutGrad")) {
    dropout_ctx *c = ctx_new(op, sizeof *c);
    c->n = rt_buf_of(p, n->out[0])->numel;
    c->ratio = ir_attr_float(n, "ratio");
    c->training = is(n, "Dropout") && ir_attr_int(n, "training_mode");
    c->salt = (uint64_t)n->id * 0x9E3779B97F4A7C15ull;
    if (is(n, "Dropout")) rt_need_scratch(p, (size_t)c->n);
    op->run = is(n, "Dropout") ? run_dropout : run_dropout_grad;
    return SW_OK;
  }
  if (is(n, "MatMul")) snprintf(op->impl, sizeof op->impl, "reference loops");
  if (is(n, "TopKSparsify")) {
    topk_ctx *t = ctx_new(op, sizeof *t);
    const rt_buf *x = rt_buf_of(p, n->in[0]);
    t->n = x->numel;
    t->group = ir_attr_int(n, "group");
    t->sparsity = ir_attr_float(n, "sparsity");
    t->period = (int)ir_attr_int(n, "period");
    rt_need_scratch(p, topk_scratch(p->nthreads) + (t->group > 1 ? sizeof(float) * (size_t)(t->n / t->group) : 0));
    snprintf(op->impl, sizeof op->impl, "radix select%s", t->group > 1 ? " over group L1 scores" : "");
    op->run = run_topk;
    double room = ir_attr_float(n, "compact");
    if (ir_value_compact(n->out[0])) {
      /* [N][C][H][W] as the weight gradient sees it: a 2-D input is [N][K][1][1], 1-D conv [N][C][1][L] */
      int r = x->shape.rank;
      t->dims[0] = (int)x->shape.d[0];
      t->dims[1] = r > 1 ? (int)x->shape.d[1] : 1;
      t->dims[2] = r > 3 ? (int)x->shape.d[2] : 1;
      t->dims[3] = r > 3 ? (int)(x->numel / ((int64_t)t->dims[0] * t->dims[1] * t->dims[2])) : r == 3 ? (int)x->shape.d[2] : 1;
      t->cap = (int64_t)ceil(room * (double)t->n);
      if (t->cap < 1) t->cap = 1;
      if (t->cap > t->n) t->cap = t->n;
      size_t bytes = spact_bytes(t->dims[0], t->dims[1], t->dims[2], t->dims[3], t->cap);
      rt_need_scratch(p, spact_pack_scratch(t->dims[1], t->dims[2], t->dims[3], p->nthreads));
      t->packed = rt_alloc(bytes);
      op->free_ctx = topk_ctx_free;
      if (!t->packed) return sw_fail(e, SW_ENOMEM, "out of memory for the compact selection of '%s' (%zu bytes)", n->name, bytes);
      snprintf(op->impl, sizeof op->impl, "radix select, compact list of up to %lld entries (%.1f MiB)", (long long)t->cap,
               (double)bytes / (1 << 20));
      t->impl_len = strlen(op->impl);
    }
    return SW_OK;
  }
  shapes_ctx *c = ctx_new(op, sizeof *c);
  if (is(n, "Concat") || is(n, "Split")) {
    int split = is(n, "Split");
    c->n = split ? n->n_out : n->n_in;
    for (int i = 0; i < c->n; i++) c->xs[i] = ks(rt_buf_of(p, split ? n->out[i] : n->in[i]));
    int64_t ax = ir_attr_int(n, "axis");
    c->axis = (int)(ax < 0 ? ax + c->xs[0].ndim : ax);
    op->run = split ? run_split : run_concat;
    return SW_OK;
  }
  if (is(n, "Transpose")) {
    c->a = ks(rt_buf_of(p, n->in[0]));
    const int64_t *pm;
    int k = ir_attr_ints(n, "perm", &pm);
    for (int i = 0; i < c->a.ndim; i++) c->perm[i] = k ? (int)pm[i] : c->a.ndim - 1 - i;
    op->run = run_transpose;
    return SW_OK;
  }
  if (is(n, "Pad")) {
    c->a = ks(rt_buf_of(p, n->in[0]));
    const int64_t *pa;
    c->n_ints = ir_attr_ints(n, "pads", &pa);
    if (c->n_ints) memcpy(c->ints, pa, sizeof *pa * (size_t)c->n_ints);
    c->f = ir_attr_float(n, "value");
    op->run = run_pad;
    return SW_OK;
  }
  if (is(n, "Slice") || is(n, "SliceGrad")) {
    ir_shape xs = is(n, "Slice") ? rt_buf_of(p, n->in[0])->shape : attr_shape(n, "x_shape", B);
    kshape x = kshape_make(xs.rank, xs.d);
    const int64_t *st, *en, *ax, *sp;
    int k = ir_attr_ints(n, "starts", &st);
    ir_attr_ints(n, "ends", &en);
    int ka = ir_attr_ints(n, "axes", &ax), kp = ir_attr_ints(n, "steps", &sp);
    if (slice_resolve(&x, k, st, en, ka ? ax : NULL, kp ? sp : NULL, &c->sl, e)) return e->code;
    op->run = is(n, "Slice") ? run_slice : run_slice_grad;
    return SW_OK;
  }
  if (is(n, "ReduceMean") || is(n, "ReduceMeanGrad")) {
    if (is(n, "ReduceMean")) c->a = ks(rt_buf_of(p, n->in[0]));
    else {
      ir_shape s = attr_shape(n, "x_shape", B);
      c->a = kshape_make(s.rank, s.d);
    }
    const int64_t *ax;
    c->n_ints = ir_attr_ints(n, "axes", &ax);
    if (c->n_ints == 0 && ir_attr_int(n, "noop_with_empty_axes")) {
      c->n = (int)(sizeof(float) * (size_t)rt_buf_of(p, n->out[0])->numel);
      op->run = run_copy;
      return SW_OK;
    }
    if (c->n_ints) memcpy(c->ints, ax, sizeof *ax * (size_t)c->n_ints);
    op->run = is(n, "ReduceMean") ? run_reduce_mean : run_reduce_mean_grad;
    return SW_OK;
  }
  FAIL("node '%s' (%s): unsupported at run time: no kernel for this operator", n->name, n->op->name);
}
