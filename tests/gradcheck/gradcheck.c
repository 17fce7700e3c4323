/* Finite-difference gradient checks of every forward op with a gradient rule (see harness.h for the
 * method and the tolerance). One line per case; exit status 1 if any case fails.
 *
 * Usage: test-gradcheck [-v] [SUBSTRING...]   (run only the cases whose name contains a SUBSTRING) */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "tests/gradcheck/harness.h"

/* DIMS(2, 3) expands to the (rank, dims) argument pair of the harness functions. */
#define DIMS(...) (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]) { __VA_ARGS__ }
#define SET_INTS(c, n, name, ...) ir_attr_set_ints((c)->g, n, name, DIMS(__VA_ARGS__))
#define N IR_N

static int verbose;
static int n_cases, n_failed;
static const char *const *filters;
static int n_filters;

static int selected(const char *name) {
  if (n_filters == 0) return 1;
  for (int i = 0; i < n_filters; i++)
    if (strstr(name, filters[i])) return 1;
  return 0;
}

/* Starts a case if the command line selects it. */
static int begin(gc_case *c, const char *name, int64_t batch) {
  if (!selected(name)) return 0;
  gc_case_init(c, name, batch);
  c->verbose = verbose;
  return 1;
}

/* A CONST tensor with values uniform in [-scale, scale] (an input of the op that is not trained). */
static ir_value *const_rand(gc_case *c, const char *name, int rank, const int64_t *d, float scale) {
  ir_value *v = gc_fixed(c, IR_VAL_CONST, name, rank, d, 0.0f);
  if (!v) return NULL;
  float *p = v->data;
  for (int64_t i = 0; i < ir_shape_numel(&v->shape); i++) p[i] = gc_uniform(c, -scale, scale);
  return v;
}

static void end(gc_case *c, ir_value *y) {
  n_cases++;
  n_failed += gc_case_run(c, y) != 0;
}

/* ---- Conv ---- */

typedef struct conv_cfg {
  const char *name;
  int sp;                        /* spatial dims: 1 or 2 */
  int64_t B, C, K, H, W, R, S;   /* H and R ignored for 1-D */
  int64_t st[2], pads[4], dil[2];/* 2-D: pads t,l,b,r; 1-D: st[0], pads[0..1] (begin, end), dil[0] */
  int group, bias, threads;
} conv_cfg;

static void conv_case(const conv_cfg *k) {
  gc_case c;
  if (!begin(&c, k->name, k->B)) return;
  c.nthreads = k->threads;
  ir_value *x, *w;
  if (k->sp == 2) {
    x = gc_param(&c, "x", DIMS(k->B, k->C, k->H, k->W), 1.0f);
    w = gc_param(&c, "w", DIMS(k->K, k->C / k->group, k->R, k->S), 0.5f);
  } else {
    x = gc_param(&c, "x", DIMS(k->B, k->C, k->W), 1.0f);
    w = gc_param(&c, "w", DIMS(k->K, k->C / k->group, k->S), 0.5f);
  }
  ir_value *in[3] = {x, w, k->bias ? gc_param(&c, "b", DIMS(k->K), 0.5f) : NULL};
  ir_node *n = gc_node(&c, "Conv", k->bias ? 3 : 2, in, 1);
  if (k->sp == 2) {
    SET_INTS(&c, n, "kernel_shape", k->R, k->S);
    SET_INTS(&c, n, "strides", k->st[0], k->st[1]);
    SET_INTS(&c, n, "pads", k->pads[0], k->pads[1], k->pads[2], k->pads[3]);
    SET_INTS(&c, n, "dilations", k->dil[0], k->dil[1]);
  } else {
    SET_INTS(&c, n, "kernel_shape", k->S);
    SET_INTS(&c, n, "strides", k->st[0]);
    SET_INTS(&c, n, "pads", k->pads[0], k->pads[1]);
    SET_INTS(&c, n, "dilations", k->dil[0]);
  }
  ir_attr_set_int(c.g, n, "group", k->group);
  end(&c, gc_done(&c, n));
}

static ir_value *conv2d(gc_case *c, ir_value *x, ir_value *w, ir_value *b, int64_t R, int64_t S, int64_t stride, int64_t pad) {
  ir_node *n = gc_node(c, "Conv", b ? 3 : 2, (ir_value *[]){x, w, b}, 1);
  SET_INTS(c, n, "kernel_shape", R, S);
  SET_INTS(c, n, "strides", stride, stride);
  SET_INTS(c, n, "pads", pad, pad, pad, pad);
  SET_INTS(c, n, "dilations", 1, 1);
  return gc_done(c, n);
}

static ir_value *batchnorm(gc_case *c, ir_value *x, int64_t C, const char *prefix) {
  char nm[4][64];
  const char *suf[4] = {"scale", "bias", "mean", "var"};
  for (int i = 0; i < 4; i++) snprintf(nm[i], sizeof nm[i], "%s.%s", prefix, suf[i]);
  ir_value *scale = gc_param(c, nm[0], DIMS(C), 1.0f);
  gc_fill_away(c, scale, 0.5f, 1.5f, NULL, 0, 0);
  ir_value *bias = gc_param(c, nm[1], DIMS(C), 0.5f);
  ir_value *mean = gc_fixed(c, IR_VAL_STATE, nm[2], DIMS(C), 0.0f);
  ir_value *var = gc_fixed(c, IR_VAL_STATE, nm[3], DIMS(C), 1.0f);
  return gc_op(c, "BatchNormalization", 5, (ir_value *[]){x, scale, bias, mean, var});
}

static void conv_cases(void) {
  static const conv_cfg cfgs[] = {
      {"conv/3x3-pad1-bias", 2, 2, 3, 4, 6, 6, 3, 3, {1, 1}, {1, 1, 1, 1}, {1, 1}, 1, 1, 1},
      {"conv/stride2-asym-pads-nobias", 2, 2, 3, 5, 7, 6, 3, 3, {2, 2}, {0, 1, 2, 0}, {1, 1}, 1, 0, 1},
      {"conv/dilation2-bias", 2, 2, 2, 3, 8, 7, 3, 3, {1, 1}, {2, 1, 2, 1}, {2, 2}, 1, 1, 1},
      {"conv/groups2-stride2", 2, 2, 4, 6, 7, 7, 3, 3, {2, 2}, {1, 1, 1, 1}, {1, 1}, 2, 1, 1},
      {"conv/depthwise", 2, 2, 4, 4, 6, 6, 3, 3, {1, 1}, {1, 1, 1, 1}, {1, 1}, 4, 1, 1},
      {"conv/depthwise-mult2-stride2-nobias", 2, 2, 3, 6, 7, 6, 3, 3, {2, 2}, {1, 0, 1, 1}, {1, 1}, 3, 0, 1},
      {"conv/1x1-stride2", 2, 3, 5, 4, 6, 6, 1, 1, {2, 2}, {0, 0, 0, 0}, {1, 1}, 1, 1, 1},
      {"conv/2x3-stride2x1-dil1x2", 2, 2, 3, 4, 7, 8, 2, 3, {2, 1}, {1, 0, 0, 2}, {1, 2}, 1, 1, 1},
      {"conv/5x5-pad2-threads2", 2, 3, 2, 6, 9, 9, 5, 5, {1, 1}, {2, 2, 2, 2}, {1, 1}, 1, 1, 2},
      {"conv/groups3-dil2-asym-threads2", 2, 2, 6, 6, 8, 8, 3, 3, {1, 2}, {2, 0, 1, 2}, {2, 1}, 3, 1, 2},
      {"conv/1d-stride2-pad", 1, 2, 3, 4, 1, 9, 1, 3, {2}, {1, 0}, {1}, 1, 1, 1},
      {"conv/1d-dil2-groups", 1, 2, 4, 2, 1, 10, 1, 3, {1}, {2, 1}, {2}, 2, 0, 1},
      /* channel counts over the 64-channel block of the libxsmm kernels; output rows wider than 128 */
      {"conv/C70-K66-blocked-threads2", 2, 3, 70, 66, 5, 5, 3, 3, {1, 1}, {1, 1, 1, 1}, {1, 1}, 1, 1, 2},
      {"conv/groups2-C132-K130-stride2", 2, 2, 132, 130, 5, 5, 3, 3, {2, 2}, {1, 1, 1, 1}, {1, 1}, 2, 1, 1},
      {"conv/1x3-wide-W150", 2, 2, 3, 4, 2, 150, 1, 3, {1, 1}, {0, 1, 0, 1}, {1, 1}, 1, 1, 1},
      {"conv/batch5-threads2", 2, 5, 8, 8, 6, 6, 3, 3, {1, 1}, {1, 1, 1, 1}, {1, 1}, 1, 1, 2},
      /* strides larger than the kernel leave input pixels no window reads (their dX must be 0);
       * 16+ channels per group take the blocked backward passes, fewer the im2col ones */
      {"conv/2x2-stride3-gaps-C3", 2, 2, 3, 4, 8, 8, 2, 2, {3, 3}, {0, 0, 0, 0}, {1, 1}, 1, 1, 1},
      {"conv/2x2-stride3-gaps-C16", 2, 2, 16, 8, 8, 8, 2, 2, {3, 3}, {0, 0, 1, 1}, {1, 1}, 1, 1, 1},
      {"conv/1x1-stride2-C20-subsampled", 2, 2, 20, 6, 7, 7, 1, 1, {2, 2}, {0, 0, 0, 0}, {1, 1}, 1, 0, 1},
      {"conv/3x3-C16-groups2-threads2", 2, 3, 32, 8, 5, 5, 3, 3, {1, 1}, {1, 0, 1, 2}, {1, 1}, 2, 1, 2},
  };
  for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) conv_case(&cfgs[i]);

  gc_case c;
  if (begin(&c, "conv/const-weight-param-bias", 2)) { /* ConvGradWeight asked for the bias only */
    ir_value *x = gc_param(&c, "x", DIMS(2, 3, 5, 5), 1.0f);
    ir_value *w = const_rand(&c, "w", DIMS(4, 3, 3, 3), 0.5f), *b = gc_param(&c, "b", DIMS(4), 0.5f);
    ir_value *y = conv2d(&c, x, w, b, 3, 3, 2, 1);
    end(&c, gc_op(&c, "Tanh", 1, &y));
  }
  if (begin(&c, "conv/input-N-const-weight", 3)) { /* only the data gradient flows, into a Mul */
    ir_value *x = gc_input(&c, "x", DIMS(N, 2, 6, 6));
    ir_value *s = gc_param(&c, "s", DIMS(1, 2, 1, 1), 1.0f);
    ir_value *m = gc_op(&c, "Mul", 2, (ir_value *[]){x, s});
    ir_value *w = const_rand(&c, "w", DIMS(3, 2, 3, 3), 0.5f);
    end(&c, conv2d(&c, m, w, NULL, 3, 3, 1, 0));
  }

  /* a model-like chain over a symbolic batch: Conv -> BN -> Tanh -> Conv (stride 2) -> GAP */
  if (begin(&c, "conv/chain-input-N-bn-tanh-gap", 3)) {
    c.nthreads = 2;
    ir_value *x = gc_input(&c, "x", DIMS(N, 3, 8, 8));
    ir_value *w1 = gc_param(&c, "w1", DIMS(4, 3, 3, 3), 0.4f), *b1 = gc_param(&c, "b1", DIMS(4), 0.2f);
    c.zero_grad[0] = "b1"; /* a bias before training-mode BN cancels out */
    ir_value *y = conv2d(&c, x, w1, b1, 3, 3, 1, 1);
    y = batchnorm(&c, y, 4, "bn");
    y = gc_op(&c, "Tanh", 1, &y);
    ir_value *w2 = gc_param(&c, "w2", DIMS(6, 4, 3, 3), 0.4f);
    y = conv2d(&c, y, w2, NULL, 3, 3, 2, 1);
    y = gc_op(&c, "GlobalAveragePool", 1, &y);
    end(&c, y);
  }
}

/* ---- Gemm ---- */

/* Y[M,Nn] = alpha op(A) op(B) + beta C with A, B and C parameters; cr < 0: no C. */
static void gemm_case(const char *name, int64_t M, int64_t K, int64_t Nn, int ta, int tb, float alpha, float beta, int cr,
                      const int64_t *cd) {
  gc_case c;
  if (!begin(&c, name, M)) return;
  ir_value *a = ta ? gc_param(&c, "a", DIMS(K, M), 1.0f) : gc_param(&c, "a", DIMS(M, K), 1.0f);
  ir_value *b = tb ? gc_param(&c, "b", DIMS(Nn, K), 0.6f) : gc_param(&c, "b", DIMS(K, Nn), 0.6f);
  ir_value *cv = NULL;
  if (cr >= 0) cv = gc_param(&c, "c", cr, cd, 0.8f);
  ir_node *n = gc_node(&c, "Gemm", cv ? 3 : 2, (ir_value *[]){a, b, cv}, 1);
  if (ta) ir_attr_set_int(c.g, n, "transA", 1);
  if (tb) ir_attr_set_int(c.g, n, "transB", 1);
  if (alpha != 1.0f) ir_attr_set_float(c.g, n, "alpha", alpha);
  if (beta != 1.0f) ir_attr_set_float(c.g, n, "beta", beta);
  end(&c, gc_done(&c, n));
}

static void gemm_cases(void) {
  gemm_case("gemm/linear-bias", 3, 7, 5, 0, 1, 1.0f, 1.0f, DIMS(5));
  gemm_case("gemm/linear-nobias", 3, 7, 5, 0, 1, 1.0f, 1.0f, -1, NULL);
  gemm_case("gemm/linear-alpha0.5", 3, 7, 5, 0, 1, 0.5f, 1.0f, DIMS(5));
  gemm_case("gemm/linear-beta2-C[5]", 3, 7, 5, 0, 1, 1.0f, 2.0f, DIMS(5));
  gemm_case("gemm/nn-C[M,N]", 3, 4, 5, 0, 0, 1.0f, 1.0f, DIMS(3, 5));
  gemm_case("gemm/tA-alpha0.7-beta1.3-C[N]", 3, 6, 5, 1, 0, 0.7f, 1.3f, DIMS(5));
  gemm_case("gemm/tAtB-C[M,1]", 4, 3, 5, 1, 1, 1.0f, 0.5f, DIMS(4, 1));
  gemm_case("gemm/nn-C[1,N]-beta-0.6", 3, 4, 5, 0, 0, 1.5f, -0.6f, DIMS(1, 5));
  gemm_case("gemm/tB-C[1,1]", 3, 4, 5, 0, 1, 1.0f, 1.0f, DIMS(1, 1));
  gemm_case("gemm/tA-C-scalar", 3, 4, 5, 1, 0, 1.0f, 0.8f, 0, NULL);
  gemm_case("gemm/tB-alpha2-C[1]", 2, 4, 6, 0, 1, 2.0f, 1.0f, DIMS(1));
  gemm_case("gemm/linear-C[M,N]", 3, 5, 4, 0, 1, 1.0f, 1.0f, DIMS(3, 4));
  gemm_case("gemm/linear-form-C[1]", 3, 4, 6, 0, 1, 1.0f, 1.0f, DIMS(1));
  gemm_case("gemm/linear-large-K150-N70", 5, 150, 70, 0, 1, 1.0f, 1.0f, DIMS(70));

  gc_case c;
  if (begin(&c, "gemm/linear-const-weight", 3)) { /* GemmGradWeight asked for the bias only */
    ir_value *x = gc_param(&c, "x", DIMS(3, 6), 1.0f);
    ir_value *w = const_rand(&c, "w", DIMS(5, 6), 0.6f), *b = gc_param(&c, "b", DIMS(5), 0.3f);
    ir_node *n = gc_node(&c, "Gemm", 3, (ir_value *[]){x, w, b}, 1);
    ir_attr_set_int(c.g, n, "transB", 1);
    ir_value *y = gc_done(&c, n);
    end(&c, gc_op(&c, "Tanh", 1, &y));
  }
  if (begin(&c, "gemm/linear-input-N-tanh", 4)) { /* the exported Linear layer over a symbolic batch */
    ir_value *x = gc_input(&c, "x", DIMS(N, 6));
    ir_value *w = gc_param(&c, "w", DIMS(5, 6), 0.6f), *b = gc_param(&c, "b", DIMS(5), 0.3f);
    ir_node *n = gc_node(&c, "Gemm", 3, (ir_value *[]){x, w, b}, 1);
    ir_attr_set_int(c.g, n, "transB", 1);
    ir_value *y = gc_done(&c, n);
    end(&c, gc_op(&c, "Tanh", 1, &y));
  }
}

/* ---- MatMul ---- */

static void matmul_case(const char *name, int64_t batch, int ra, const int64_t *ad, int rb, const int64_t *bd) {
  gc_case c;
  if (!begin(&c, name, batch)) return;
  ir_value *a = gc_param(&c, "a", ra, ad, 1.0f), *b = gc_param(&c, "b", rb, bd, 0.7f);
  end(&c, gc_op(&c, "MatMul", 2, (ir_value *[]){a, b}));
}

static void matmul_cases(void) {
  matmul_case("matmul/2d", 3, DIMS(3, 4), DIMS(4, 5));
  matmul_case("matmul/batched", 2, DIMS(2, 3, 4), DIMS(2, 4, 5));
  matmul_case("matmul/bcast-B-2d", 2, DIMS(2, 3, 4), DIMS(4, 5));
  matmul_case("matmul/bcast-A-2d", 3, DIMS(3, 4), DIMS(2, 4, 5));
  matmul_case("matmul/bcast-4d-vs-3d", 2, DIMS(2, 1, 3, 4), DIMS(3, 4, 2));
  matmul_case("matmul/bcast-both-ways", 3, DIMS(3, 1, 2, 4), DIMS(1, 2, 4, 3));

  gc_case c;
  if (begin(&c, "matmul/p-times-p", 3)) {
    ir_value *p = gc_param(&c, "p", DIMS(3, 3), 1.0f);
    end(&c, gc_op(&c, "MatMul", 2, (ir_value *[]){p, p}));
  }
  if (begin(&c, "matmul/input-N-x-param", 3)) {
    ir_value *x = gc_input(&c, "x", DIMS(N, 3, 4));
    ir_value *p = gc_param(&c, "p", DIMS(4, 5), 0.7f);
    end(&c, gc_op(&c, "MatMul", 2, (ir_value *[]){x, p}));
  }
}

/* ---- BatchNormalization (training mode) ---- */

static void bn_case(const char *name, int64_t batch, int rank, const int64_t *d, int threads, float eps) {
  gc_case c;
  if (!begin(&c, name, batch)) return;
  c.nthreads = threads;
  c.h_rel = 5e-3f;
  ir_value *x = gc_param(&c, "x", rank, d, 1.0f);
  ir_value *y = batchnorm(&c, x, d[1], "bn");
  if (y && eps > 0) {
    ir_attr_set_float(c.g, y->producer, "epsilon", eps);
    ir_attr_set_float(c.g, y->producer, "momentum", 0.7f);
  }
  end(&c, y);
}

static void bn_cases(void) {
  bn_case("batchnorm/4d", 3, DIMS(3, 3, 4, 4), 1, 0);
  bn_case("batchnorm/4d-threads2", 2, DIMS(2, 4, 3, 5), 2, 0);
  bn_case("batchnorm/2d", 6, DIMS(6, 5), 1, 0);
  bn_case("batchnorm/3d", 3, DIMS(3, 2, 7), 1, 0);
  bn_case("batchnorm/eps0.1-momentum0.7", 4, DIMS(4, 3, 2, 2), 1, 0.1f);
  gc_case c;
  /* BatchNormalization + ReLU: the fuse pass turns the pair into one kernel, forward and backward */
  if (begin(&c, "batchnorm/relu-fused", 3)) {
    c.h_rel = 1.5e-3f;
    ir_value *x = gc_param(&c, "x", DIMS(3, 4, 5, 5), 1.0f);
    ir_value *y = batchnorm(&c, x, 4, "bn");
    end(&c, gc_op(&c, "Relu", 1, &y));
  }
  if (begin(&c, "batchnorm/input-N-no-data-gradient", 4)) {
    ir_value *x = gc_input(&c, "x", DIMS(N, 3, 3, 3));
    ir_value *y = batchnorm(&c, x, 3, "bn");
    end(&c, gc_op(&c, "Tanh", 1, &y));
  }
}

/* ---- pooling ---- */

/* X [B,C,H,W] (or [B,C,W] when H == 0) as a parameter with distinct values 0.02 apart, so that a
 * perturbation of h = 4e-3 never changes a window's maximum. cip < 0: attribute not set. */
static void pool_case(const char *name, const char *op, int64_t B, int64_t C, int64_t H, int64_t W, const int64_t *k,
                      const int64_t *st, const int64_t *pads, const int64_t *dil, int ceil_mode, int cip, int threads) {
  gc_case c;
  if (!begin(&c, name, B)) return;
  c.nthreads = threads;
  int sp = H ? 2 : 1;
  ir_value *x = H ? gc_param(&c, "x", DIMS(B, C, H, W), 1.0f) : gc_param(&c, "x", DIMS(B, C, W), 1.0f);
  if (!strcmp(op, "MaxPool")) {
    gc_fill_distinct(&c, x, 0.02f);
    c.h_abs = 4e-3f;
  }
  ir_node *n = gc_node(&c, op, 1, &x, 1);
  ir_attr_set_ints(c.g, n, "kernel_shape", sp, k);
  ir_attr_set_ints(c.g, n, "strides", sp, st);
  ir_attr_set_ints(c.g, n, "pads", 2 * sp, pads);
  if (dil) ir_attr_set_ints(c.g, n, "dilations", sp, dil);
  if (ceil_mode) ir_attr_set_int(c.g, n, "ceil_mode", 1);
  if (cip >= 0) ir_attr_set_int(c.g, n, "count_include_pad", cip);
  end(&c, gc_done(&c, n));
}

#define I2(a, b) (int64_t[]){a, b}
#define I4(a, b, cc, d) (int64_t[]){a, b, cc, d}

static void pool_cases(void) {
  pool_case("maxpool/2x2-s2", "MaxPool", 2, 2, 6, 6, I2(2, 2), I2(2, 2), I4(0, 0, 0, 0), NULL, 0, -1, 1);
  pool_case("maxpool/3x3-s2-pad1-overlap", "MaxPool", 2, 2, 7, 7, I2(3, 3), I2(2, 2), I4(1, 1, 1, 1), NULL, 0, -1, 1);
  pool_case("maxpool/3x3-s2-ceil", "MaxPool", 2, 2, 6, 6, I2(3, 3), I2(2, 2), I4(0, 0, 0, 0), NULL, 1, -1, 1);
  pool_case("maxpool/2x2-s2-ceil-asym-pad", "MaxPool", 2, 2, 7, 6, I2(2, 2), I2(2, 2), I4(1, 0, 0, 1), NULL, 1, -1, 1);
  pool_case("maxpool/3x2-s1x2-dil2x1", "MaxPool", 2, 2, 7, 6, I2(3, 2), I2(1, 2), I4(1, 0, 1, 0), I2(2, 1), 0, -1, 1);
  pool_case("maxpool/1d-k3-s2-pad1-ceil", "MaxPool", 2, 3, 0, 8, (int64_t[]){3}, (int64_t[]){2}, I2(1, 1), NULL, 1, -1, 1);

  pool_case("avgpool/2x2-s2", "AveragePool", 2, 2, 6, 6, I2(2, 2), I2(2, 2), I4(0, 0, 0, 0), NULL, 0, -1, 1);
  pool_case("avgpool/3x3-s2-pad1-excl", "AveragePool", 2, 2, 7, 7, I2(3, 3), I2(2, 2), I4(1, 1, 1, 1), NULL, 0, 0, 1);
  pool_case("avgpool/3x3-s2-pad1-incl", "AveragePool", 2, 2, 7, 7, I2(3, 3), I2(2, 2), I4(1, 1, 1, 1), NULL, 0, 1, 1);
  pool_case("avgpool/3x3-s2-ceil-excl", "AveragePool", 2, 2, 6, 6, I2(3, 3), I2(2, 2), I4(0, 0, 0, 0), NULL, 1, 0, 1);
  pool_case("avgpool/3x3-s2-ceil-incl", "AveragePool", 2, 2, 6, 6, I2(3, 3), I2(2, 2), I4(0, 0, 0, 0), NULL, 1, 1, 1);
  pool_case("avgpool/3x3-s2-ceil-pad1-incl", "AveragePool", 2, 2, 6, 7, I2(3, 3), I2(2, 2), I4(1, 1, 1, 0), NULL, 1, 1, 1);
  pool_case("avgpool/2x3-s2x1-asym-pad-excl", "AveragePool", 2, 2, 5, 6, I2(2, 3), I2(2, 1), I4(0, 1, 1, 2), NULL, 0, 0, 1);
  pool_case("maxpool/3x3-s2-pad1-B3-threads2", "MaxPool", 3, 4, 9, 9, I2(3, 3), I2(2, 2), I4(1, 1, 1, 1), NULL, 0, -1, 2);
  pool_case("avgpool/3x3-s1-pad1-incl-threads2", "AveragePool", 3, 4, 9, 9, I2(3, 3), I2(1, 1), I4(1, 1, 1, 1), NULL, 0, 1, 2);
  pool_case("avgpool/3x3-s1-dil2-pad2-excl", "AveragePool", 2, 2, 8, 8, I2(3, 3), I2(1, 1), I4(2, 2, 2, 2), I2(2, 2), 0, 0, 1);
  pool_case("avgpool/1d-k3-s2-pad1-ceil-incl", "AveragePool", 2, 3, 0, 8, (int64_t[]){3}, (int64_t[]){2}, I2(1, 1), NULL, 1, 1, 1);

  gc_case c;
  if (begin(&c, "globalavgpool/4d", 2)) {
    ir_value *x = gc_param(&c, "x", DIMS(2, 3, 4, 5), 1.0f);
    end(&c, gc_op(&c, "GlobalAveragePool", 1, &x));
  }
  if (begin(&c, "globalavgpool/3d", 3)) {
    ir_value *x = gc_param(&c, "x", DIMS(3, 4, 7), 1.0f);
    end(&c, gc_op(&c, "GlobalAveragePool", 1, &x));
  }
}

/* ---- activations ---- */

/* X [3,4,5] parameter, kept `margin` away from the op's kinks (h = 1e-2 of the largest |x| <= 2). */
static void act_case(const char *name, const char *op, float lo, float hi, const float *kinks, int nk, float alpha, float cmin,
                     float cmax) {
  gc_case c;
  if (!begin(&c, name, 3)) return;
  ir_value *x = gc_param(&c, "x", DIMS(3, 4, 5), 1.0f);
  gc_fill_away(&c, x, lo, hi, kinks, nk, 0.05f);
  ir_node *n = gc_node(&c, op, 1, &x, 1);
  if (!strcmp(op, "LeakyRelu")) ir_attr_set_float(c.g, n, "alpha", alpha);
  if (!strcmp(op, "Clip")) {
    if (!isinf(cmin)) ir_attr_set_float(c.g, n, "min", cmin);
    if (!isinf(cmax)) ir_attr_set_float(c.g, n, "max", cmax);
  }
  end(&c, gc_done(&c, n));
}

static void act_cases(void) {
  const float zero[] = {0.0f};
  act_case("relu", "Relu", -1, 1, zero, 1, 0, 0, 0);
  act_case("leakyrelu/alpha0.2", "LeakyRelu", -1, 1, zero, 1, 0.2f, 0, 0);
  act_case("leakyrelu/default-alpha", "LeakyRelu", -1, 1, zero, 1, 0.01f, 0, 0);
  act_case("clip/-0.5..0.6", "Clip", -1, 1, (float[]){-0.5f, 0.6f}, 2, 0, -0.5f, 0.6f);
  act_case("clip/min0-only", "Clip", -1, 1, zero, 1, 0, 0.0f, INFINITY);
  act_case("clip/max0.3-only", "Clip", -1, 1, (float[]){0.3f}, 1, 0, -INFINITY, 0.3f);
  act_case("sigmoid", "Sigmoid", -3, 3, NULL, 0, 0, 0, 0);
  act_case("tanh", "Tanh", -2, 2, NULL, 0, 0, 0, 0);
}

/* ---- Softmax, LogSoftmax ---- */

static void softmax_case(const char *name, const char *op, int rank, const int64_t *d, int64_t axis, int set_axis) {
  gc_case c;
  if (!begin(&c, name, d[0])) return;
  ir_value *x = gc_param(&c, "x", rank, d, 2.0f);
  ir_node *n = gc_node(&c, op, 1, &x, 1);
  if (set_axis) ir_attr_set_int(c.g, n, "axis", axis);
  end(&c, gc_done(&c, n));
}

static void softmax_cases(void) {
  softmax_case("softmax/default-axis", "Softmax", DIMS(3, 6), 0, 0);
  softmax_case("softmax/axis1-of-3", "Softmax", DIMS(2, 4, 5), 1, 1);
  softmax_case("softmax/axis0", "Softmax", DIMS(3, 5), 0, 1);
  softmax_case("softmax/axis-2-of-4", "Softmax", DIMS(2, 3, 4, 2), -2, 1);
  softmax_case("logsoftmax/default-axis", "LogSoftmax", DIMS(3, 6), 0, 0);
  softmax_case("logsoftmax/axis1-of-4", "LogSoftmax", DIMS(2, 3, 4, 5), 1, 1);
  softmax_case("logsoftmax/axis2-of-4", "LogSoftmax", DIMS(2, 3, 4, 5), 2, 1);
  softmax_case("logsoftmax/axis0", "LogSoftmax", DIMS(4, 3), 0, 1);
}

/* ---- elementwise arithmetic ---- */

static void binary_case(const char *name, const char *op, int64_t batch, int ra, const int64_t *ad, int rb, const int64_t *bd) {
  gc_case c;
  if (!begin(&c, name, batch)) return;
  ir_value *a = gc_param(&c, "a", ra, ad, 1.0f), *b = gc_param(&c, "b", rb, bd, 1.0f);
  if (!strcmp(op, "Div")) gc_fill_away(&c, b, -1.5f, 1.5f, (float[]){0.0f}, 1, 0.5f);
  end(&c, gc_op(&c, op, 2, (ir_value *[]){a, b}));
}

static void arith_cases(void) {
  static const char *const ops[][2] = {{"Add", "add"}, {"Sub", "sub"}, {"Mul", "mul"}, {"Div", "div"}};
  for (int i = 0; i < 4; i++) {
    const char *op = ops[i][0], *lc = ops[i][1];
    char name[96];
    snprintf(name, sizeof name, "%s/same-shape", lc);
    binary_case(name, op, 2, DIMS(2, 3, 4), DIMS(2, 3, 4));
    snprintf(name, sizeof name, "%s/bcast-b[4]", lc);
    binary_case(name, op, 2, DIMS(2, 3, 4), DIMS(4));
    snprintf(name, sizeof name, "%s/bcast-a[3,1]", lc);
    binary_case(name, op, 2, DIMS(3, 1), DIMS(2, 3, 4));
    snprintf(name, sizeof name, "%s/bcast-both[3,1]x[1,4]", lc);
    binary_case(name, op, 3, DIMS(3, 1), DIMS(1, 4));
    snprintf(name, sizeof name, "%s/bcast-scalar-b", lc);
    binary_case(name, op, 2, DIMS(2, 5), 0, NULL);
    snprintf(name, sizeof name, "%s/bcast-mixed[2,1,4]x[3,1]", lc);
    binary_case(name, op, 2, DIMS(2, 1, 4), DIMS(3, 1));

    /* a symbolic-batch input on either side; only the parameter side is differentiated */
    gc_case c;
    snprintf(name, sizeof name, "%s/input-N-op-param[1,3,1]", lc);
    if (begin(&c, name, 3)) {
      ir_value *x = gc_input(&c, "x", DIMS(N, 3, 4));
      ir_value *p = gc_param(&c, "p", DIMS(1, 3, 1), 1.0f);
      if (i == 3) gc_fill_away(&c, p, -1.5f, 1.5f, (float[]){0.0f}, 1, 0.5f);
      end(&c, gc_op(&c, op, 2, (ir_value *[]){x, p}));
    }
    snprintf(name, sizeof name, "%s/param[3,4]-op-input-N", lc);
    if (i < 3 && begin(&c, name, 2)) { /* (not Div: a random input could come near 0) */
      ir_value *x = gc_input(&c, "x", DIMS(N, 3, 4));
      ir_value *p = gc_param(&c, "p", DIMS(3, 4), 1.0f);
      end(&c, gc_op(&c, op, 2, (ir_value *[]){p, x}));
    }
  }
  gc_case c;
  if (begin(&c, "neg", 2)) {
    ir_value *x = gc_param(&c, "x", DIMS(2, 7), 1.0f);
    end(&c, gc_op(&c, "Neg", 1, &x));
  }
  if (begin(&c, "sum/3-inputs", 2)) {
    ir_value *a = gc_param(&c, "a", DIMS(2, 3, 4), 1.0f), *b = gc_param(&c, "b", DIMS(2, 3, 4), 1.0f);
    ir_value *d = gc_param(&c, "d", DIMS(2, 3, 4), 1.0f);
    ir_value *t = gc_op(&c, "Tanh", 1, &b); /* different upstream paths */
    end(&c, gc_op(&c, "Sum", 3, (ir_value *[]){a, t, d}));
  }
  if (begin(&c, "sum/1-input", 2)) {
    ir_value *a = gc_param(&c, "a", DIMS(2, 5), 1.0f);
    end(&c, gc_op(&c, "Sum", 1, &a));
  }
  if (begin(&c, "autodiff/add-p-p", 2)) { /* both inputs of one node are the same parameter */
    ir_value *p = gc_param(&c, "p", DIMS(2, 5), 1.0f);
    end(&c, gc_op(&c, "Add", 2, (ir_value *[]){p, p}));
  }
  if (begin(&c, "sum/repeated-input", 2)) {
    ir_value *p = gc_param(&c, "p", DIMS(2, 5), 1.0f), *q = gc_param(&c, "q", DIMS(2, 5), 1.0f);
    end(&c, gc_op(&c, "Sum", 3, (ir_value *[]){p, q, p}));
  }
  if (begin(&c, "autodiff/fan-out-x*x+tanh(x)*q", 2)) { /* one value read three times */
    ir_value *x = gc_param(&c, "x", DIMS(2, 6), 1.0f), *q = gc_param(&c, "q", DIMS(6), 1.0f);
    ir_value *sq = gc_op(&c, "Mul", 2, (ir_value *[]){x, x});
    ir_value *t = gc_op(&c, "Tanh", 1, &x);
    ir_value *tq = gc_op(&c, "Mul", 2, (ir_value *[]){t, q});
    end(&c, gc_op(&c, "Add", 2, (ir_value *[]){sq, tq}));
  }
}

/* ---- Dropout ---- */

static void dropout_case(const char *name, float ratio, uint64_t seed, uint64_t step) {
  gc_case c;
  if (!begin(&c, name, 3)) return;
  c.seed = seed;
  c.step = step;
  ir_value *x = gc_param(&c, "x", DIMS(3, 24), 1.0f);
  ir_node *n = gc_node(&c, "Dropout", 1, &x, 1);
  if (ratio >= 0) ir_attr_set_float(c.g, n, "ratio", ratio);
  end(&c, gc_done(&c, n));
  /* the mask is really applied: about ratio * 72 gradient entries of x are zero (4 sigma band) */
  double r = ratio >= 0 ? ratio : 0.5, mean = 72 * r, sd = sqrt(72 * r * (1 - r));
  int ok = c.grad_zeros >= 0 && fabs((double)c.grad_zeros - mean) <= 4 * sd + 0.5;
  if (!ok) {
    printf("FAIL  %-44s %lld of 72 gradient entries are zero, expected about %.1f\n", name, (long long)c.grad_zeros, mean);
    n_failed++;
  }
}

static void dropout_cases(void) {
  dropout_case("dropout/ratio0", 0.0f, 1, 3);
  dropout_case("dropout/ratio0.3-seed5-step11", 0.3f, 5, 11);
  dropout_case("dropout/ratio0.6-seed9-step0", 0.6f, 9, 0);
  dropout_case("dropout/default-ratio", -1.0f, 2, 4);
}

/* ---- data movement ---- */

static void concat_split_cases(void) {
  gc_case c;
  if (begin(&c, "concat/axis1-3-inputs", 2)) {
    ir_value *a = gc_param(&c, "a", DIMS(2, 2, 3), 1.0f), *b = gc_param(&c, "b", DIMS(2, 1, 3), 1.0f);
    ir_value *d = gc_param(&c, "d", DIMS(2, 4, 3), 1.0f);
    ir_node *n = gc_node(&c, "Concat", 3, (ir_value *[]){a, b, d}, 1);
    ir_attr_set_int(c.g, n, "axis", 1);
    end(&c, gc_done(&c, n));
  }
  if (begin(&c, "concat/single-input", 2)) {
    ir_value *a = gc_param(&c, "a", DIMS(2, 3), 1.0f);
    ir_node *n = gc_node(&c, "Concat", 1, &a, 1);
    ir_attr_set_int(c.g, n, "axis", 1);
    ir_value *y = gc_done(&c, n);
    end(&c, gc_op(&c, "Tanh", 1, &y));
  }
  if (begin(&c, "concat/same-param-twice", 2)) {
    ir_value *a = gc_param(&c, "a", DIMS(2, 3), 1.0f), *b = gc_param(&c, "b", DIMS(2, 2), 1.0f);
    ir_node *n = gc_node(&c, "Concat", 3, (ir_value *[]){a, b, a}, 1);
    ir_attr_set_int(c.g, n, "axis", 1);
    ir_value *y = gc_done(&c, n);
    end(&c, gc_op(&c, "Tanh", 1, &y));
  }
  if (begin(&c, "concat/axis-1", 2)) {
    ir_value *a = gc_param(&c, "a", DIMS(2, 2, 3), 1.0f), *b = gc_param(&c, "b", DIMS(2, 2, 5), 1.0f);
    ir_node *n = gc_node(&c, "Concat", 2, (ir_value *[]){a, b}, 1);
    ir_attr_set_int(c.g, n, "axis", -1);
    end(&c, gc_done(&c, n));
  }
  if (begin(&c, "concat/axis0", 3)) {
    ir_value *a = gc_param(&c, "a", DIMS(2, 4), 1.0f), *b = gc_param(&c, "b", DIMS(1, 4), 1.0f);
    ir_node *n = gc_node(&c, "Concat", 2, (ir_value *[]){a, b}, 1);
    ir_attr_set_int(c.g, n, "axis", 0);
    end(&c, gc_done(&c, n));
  }
  if (begin(&c, "concat/input-N-with-derived", 2)) { /* input slot without gradient */
    ir_value *x = gc_input(&c, "x", DIMS(N, 2, 3));
    ir_value *p = gc_param(&c, "p", DIMS(1, 2, 3), 1.0f);
    ir_value *m = gc_op(&c, "Mul", 2, (ir_value *[]){x, p});
    ir_node *n = gc_node(&c, "Concat", 3, (ir_value *[]){x, m, x}, 1);
    ir_attr_set_int(c.g, n, "axis", 1);
    end(&c, gc_done(&c, n));
  }
  if (begin(&c, "split/axis1-2-way", 2)) {
    ir_value *x = gc_param(&c, "x", DIMS(2, 7, 3), 1.0f);
    ir_node *n = gc_node(&c, "Split", 1, &x, 2);
    ir_attr_set_int(c.g, n, "axis", 1);
    SET_INTS(&c, n, "split", 2, 5);
    gc_done(&c, n);
    ir_value *s0 = gc_op(&c, "Tanh", 1, &n->out[0]), *s1 = gc_op(&c, "Sigmoid", 1, &n->out[1]);
    ir_node *cn = gc_node(&c, "Concat", 2, (ir_value *[]){s1, s0}, 1);
    ir_attr_set_int(c.g, cn, "axis", 1);
    end(&c, gc_done(&c, cn));
  }
  if (begin(&c, "split/axis-1-3-way", 2)) {
    ir_value *x = gc_param(&c, "x", DIMS(2, 3, 6), 1.0f);
    ir_node *n = gc_node(&c, "Split", 1, &x, 3);
    ir_attr_set_int(c.g, n, "axis", -1);
    SET_INTS(&c, n, "split", 1, 2, 3);
    gc_done(&c, n);
    ir_value *s1 = gc_op(&c, "Tanh", 1, &n->out[1]);
    ir_node *cn = gc_node(&c, "Concat", 3, (ir_value *[]){n->out[2], n->out[0], s1}, 1);
    ir_attr_set_int(c.g, cn, "axis", 2);
    end(&c, gc_done(&c, cn));
  }
  if (begin(&c, "split/default-axis0", 4)) { /* axis left at its default */
    ir_value *x = gc_param(&c, "x", DIMS(4, 5), 1.0f);
    ir_node *n = gc_node(&c, "Split", 1, &x, 2);
    SET_INTS(&c, n, "split", 3, 1);
    gc_done(&c, n);
    ir_value *s1 = gc_op(&c, "Sigmoid", 1, &n->out[1]);
    ir_node *cn = gc_node(&c, "Concat", 2, (ir_value *[]){s1, n->out[0]}, 1);
    ir_attr_set_int(c.g, cn, "axis", 0);
    end(&c, gc_done(&c, cn));
  }
}

static void shape_cases(void) {
  gc_case c;
  if (begin(&c, "flatten/axis2", 2)) {
    ir_value *x = gc_param(&c, "x", DIMS(2, 2, 3, 4), 1.0f);
    ir_node *n = gc_node(&c, "Flatten", 1, &x, 1);
    ir_attr_set_int(c.g, n, "axis", 2);
    ir_value *y = gc_done(&c, n);
    end(&c, gc_op(&c, "Tanh", 1, &y));
  }
  if (begin(&c, "flatten/axis0", 2)) {
    ir_value *x = gc_param(&c, "x", DIMS(2, 3, 2), 1.0f);
    ir_node *n = gc_node(&c, "Flatten", 1, &x, 1);
    ir_attr_set_int(c.g, n, "axis", 0);
    end(&c, gc_done(&c, n));
  }
  if (begin(&c, "flatten/axis-1-of-node", 2)) {
    ir_value *x = gc_param(&c, "x", DIMS(2, 3, 4), 1.0f);
    ir_value *t = gc_op(&c, "Tanh", 1, &x);
    ir_node *n = gc_node(&c, "Flatten", 1, &t, 1);
    ir_attr_set_int(c.g, n, "axis", -1);
    ir_value *y = gc_done(&c, n);
    end(&c, gc_op(&c, "Sigmoid", 1, &y));
  }
  if (begin(&c, "flatten/axis-rank", 2)) {
    ir_value *x = gc_param(&c, "x", DIMS(2, 3, 2), 1.0f);
    ir_node *n = gc_node(&c, "Flatten", 1, &x, 1);
    ir_attr_set_int(c.g, n, "axis", 3);
    ir_value *y = gc_done(&c, n);
    end(&c, gc_op(&c, "Tanh", 1, &y));
  }
  if (begin(&c, "reshape/0-and-minus1", 2)) {
    ir_value *x = gc_param(&c, "x", DIMS(2, 2, 3, 4), 1.0f);
    ir_node *n = gc_node(&c, "Reshape", 1, &x, 1);
    SET_INTS(&c, n, "shape", 0, -1, 2);
    ir_value *y = gc_done(&c, n);
    end(&c, gc_op(&c, "Tanh", 1, &y));
  }
  if (begin(&c, "reshape/input-N-view", 3)) {
    ir_value *x = gc_input(&c, "x", DIMS(N, 2, 3, 4));
    ir_value *p = gc_param(&c, "p", DIMS(1, 2, 3, 4), 1.0f);
    ir_value *m = gc_op(&c, "Mul", 2, (ir_value *[]){x, p});
    ir_node *n = gc_node(&c, "Reshape", 1, &m, 1);
    SET_INTS(&c, n, "shape", N, 4, 6);
    ir_value *y = gc_done(&c, n);
    end(&c, gc_op(&c, "Tanh", 1, &y));
  }
  if (begin(&c, "transpose/perm0231", 2)) {
    ir_value *x = gc_param(&c, "x", DIMS(2, 2, 3, 4), 1.0f);
    ir_node *n = gc_node(&c, "Transpose", 1, &x, 1);
    SET_INTS(&c, n, "perm", 0, 2, 3, 1);
    ir_value *y = gc_done(&c, n);
    end(&c, gc_op(&c, "Tanh", 1, &y));
  }
  if (begin(&c, "transpose/default-reverse", 2)) {
    ir_value *x = gc_param(&c, "x", DIMS(2, 3, 4), 1.0f);
    ir_value *y = gc_op(&c, "Transpose", 1, &x);
    end(&c, gc_op(&c, "Sigmoid", 1, &y));
  }
  if (begin(&c, "transpose/perm102", 3)) {
    ir_value *x = gc_param(&c, "x", DIMS(3, 2, 5), 1.0f);
    ir_node *n = gc_node(&c, "Transpose", 1, &x, 1);
    SET_INTS(&c, n, "perm", 1, 0, 2);
    ir_value *y = gc_done(&c, n);
    end(&c, gc_op(&c, "Tanh", 1, &y));
  }
}

static void pad_case(const char *name, const int64_t *pads, float value) {
  gc_case c;
  if (!begin(&c, name, 2)) return;
  ir_value *x = gc_param(&c, "x", DIMS(2, 2, 3, 4), 1.0f);
  ir_node *n = gc_node(&c, "Pad", 1, &x, 1);
  ir_attr_set_ints(c.g, n, "pads", 8, pads);
  if (value != 0.0f) ir_attr_set_float(c.g, n, "value", value);
  ir_value *y = gc_done(&c, n);
  end(&c, gc_op(&c, "Tanh", 1, &y));
}

static void slice_case(const char *name, int k, const int64_t *st, const int64_t *en, const int64_t *ax, const int64_t *sp) {
  gc_case c;
  if (!begin(&c, name, 2)) return;
  ir_value *x = gc_param(&c, "x", DIMS(2, 4, 6, 5), 1.0f);
  ir_node *n = gc_node(&c, "Slice", 1, &x, 1);
  ir_attr_set_ints(c.g, n, "starts", k, st);
  ir_attr_set_ints(c.g, n, "ends", k, en);
  if (ax) ir_attr_set_ints(c.g, n, "axes", k, ax);
  if (sp) ir_attr_set_ints(c.g, n, "steps", k, sp);
  ir_value *y = gc_done(&c, n);
  end(&c, gc_op(&c, "Tanh", 1, &y));
}

static void reduce_case(const char *name, int k, const int64_t *axes, int keepdims) {
  gc_case c;
  if (!begin(&c, name, 2)) return;
  ir_value *x = gc_param(&c, "x", DIMS(2, 3, 4, 5), 1.0f);
  ir_node *n = gc_node(&c, "ReduceMean", 1, &x, 1);
  if (k) ir_attr_set_ints(c.g, n, "axes", k, axes);
  ir_attr_set_int(c.g, n, "keepdims", keepdims);
  ir_value *y = gc_done(&c, n);
  end(&c, gc_op(&c, "Tanh", 1, &y));
}

static void pad_slice_reduce_cases(void) {
  pad_case("pad/positive-value0.5", (int64_t[]){0, 1, 2, 0, 0, 0, 1, 3}, 0.5f);
  pad_case("pad/negative-and-positive", (int64_t[]){0, 0, -1, 1, 0, 0, 1, -2}, 0.0f);
  pad_case("pad/crop-all-negative", (int64_t[]){0, 0, -1, -1, 0, -1, -1, -2}, 0.0f);
  pad_case("pad/batch-and-channel", (int64_t[]){1, 0, 0, 0, 0, 2, 0, 0}, -0.25f);
  gc_case c;
  if (begin(&c, "pad/input-N", 2)) {
    ir_value *x = gc_input(&c, "x", DIMS(N, 2, 3, 4));
    ir_value *p = gc_param(&c, "p", DIMS(1, 2, 3, 4), 1.0f);
    ir_value *m = gc_op(&c, "Mul", 2, (ir_value *[]){x, p});
    ir_node *n = gc_node(&c, "Pad", 1, &m, 1);
    SET_INTS(&c, n, "pads", 0, 0, 1, -1, 0, 0, 1, 2);
    end(&c, gc_done(&c, n));
  }

  slice_case("slice/axes12-step2", 2, I2(1, 0), I2(4, 6), I2(1, 2), I2(2, 1));
  slice_case("slice/negative-step", 1, (int64_t[]){-1}, (int64_t[]){-100}, (int64_t[]){3}, (int64_t[]){-2});
  slice_case("slice/negative-start-big-end", 1, (int64_t[]){-3}, (int64_t[]){1000}, (int64_t[]){-1}, NULL);
  slice_case("slice/default-axes", 2, I2(1, 1), I2(2, 3), NULL, NULL);
  slice_case("slice/step3-and-neg-step1", 2, I2(1, 4), I2(6, 0), I2(2, 3), I2(3, -1));
  if (begin(&c, "slice/input-N", 3)) {
    ir_value *x = gc_input(&c, "x", DIMS(N, 3, 6));
    ir_value *p = gc_param(&c, "p", DIMS(3, 6), 1.0f);
    ir_value *m = gc_op(&c, "Add", 2, (ir_value *[]){x, p});
    ir_node *n = gc_node(&c, "Slice", 1, &m, 1);
    SET_INTS(&c, n, "starts", 1);
    SET_INTS(&c, n, "ends", 6);
    SET_INTS(&c, n, "axes", 2);
    SET_INTS(&c, n, "steps", 3);
    ir_value *y = gc_done(&c, n);
    end(&c, gc_op(&c, "Tanh", 1, &y));
  }

  reduce_case("reducemean/axes23-keepdims1", 2, I2(2, 3), 1);
  reduce_case("reducemean/axis1-keepdims0", 1, (int64_t[]){1}, 0);
  reduce_case("reducemean/all-keepdims0", 0, NULL, 0);
  reduce_case("reducemean/all-keepdims1", 0, NULL, 1);
  reduce_case("reducemean/axes-1,0-keepdims1", 2, I2(-1, 0), 1);
  reduce_case("reducemean/axes1,3-keepdims0", 2, I2(1, 3), 0);
  if (begin(&c, "reducemean/noop-with-empty-axes", 2)) {
    ir_value *x = gc_param(&c, "x", DIMS(2, 3, 4), 1.0f);
    ir_node *n = gc_node(&c, "ReduceMean", 1, &x, 1);
    ir_attr_set_int(c.g, n, "noop_with_empty_axes", 1);
    ir_value *y = gc_done(&c, n);
    end(&c, gc_op(&c, "Tanh", 1, &y));
  }
}

/* ---- SoftmaxCrossEntropyLoss as the model's own loss ---- */

/* scores [B,C(,D)] as a parameter; labels [B(,D)]; n_ignore samples get ignore_index (when set). */
static void sce_case(const char *name, int rank, const int64_t *sd, const char *reduction, int set_ignore, int64_t ignore_index,
                     int n_ignore, int weighted) {
  gc_case c;
  if (!begin(&c, name, sd[0])) return;
  ir_value *s = gc_param(&c, "scores", rank, sd, 2.0f);
  int64_t ld[IR_MAX_RANK];
  ld[0] = sd[0];
  for (int i = 2; i < rank; i++) ld[i - 1] = sd[i];
  ir_value *labels = gc_labels(&c, "labels", rank - 1, ld);
  ir_value *in[3] = {s, labels, NULL};
  if (weighted) {
    in[2] = gc_fixed(&c, IR_VAL_CONST, "class_weights", DIMS(sd[1]), 1.0f);
    float *w = in[2]->data;
    for (int64_t i = 0; i < sd[1]; i++) w[i] = gc_uniform(&c, 0.2f, 2.0f);
  }
  ir_node *n = gc_node(&c, "SoftmaxCrossEntropyLoss", weighted ? 3 : 2, in, 1);
  ir_attr_set_string(c.g, n, "reduction", reduction);
  if (set_ignore) ir_attr_set_int(c.g, n, "ignore_index", ignore_index);
  c.ignore_index = ignore_index;
  c.n_ignore = n_ignore;
  gc_done(&c, n);
  end(&c, NULL);
}

static void sce_cases(void) {
  sce_case("sce/mean", DIMS(4, 5), "mean", 0, 0, 0, 0);
  sce_case("sce/sum", DIMS(4, 5), "sum", 0, 0, 0, 0);
  sce_case("sce/mean-ignore-1", DIMS(6, 5), "mean", 1, -1, 2, 0);
  sce_case("sce/sum-ignore-1", DIMS(6, 5), "sum", 1, -1, 2, 0);
  sce_case("sce/mean-ignore-class3", DIMS(6, 5), "mean", 1, 3, 2, 0);
  sce_case("sce/mean-3d-scores-ignore", DIMS(3, 4, 3), "mean", 1, -100, 3, 0);
  sce_case("sce/sum-3d-scores", DIMS(2, 4, 3), "sum", 0, 0, 0, 0);
  sce_case("sce/mean-class-weights", DIMS(5, 4), "mean", 0, 0, 0, 1);
  sce_case("sce/mean-class-weights-ignore", DIMS(6, 4), "mean", 1, 0, 2, 1);
  sce_case("sce/sum-class-weights", DIMS(5, 4), "sum", 0, 0, 0, 1);

  gc_case c;
  if (begin(&c, "sce/own-loss-after-linear-input-N", 4)) {
    ir_value *x = gc_input(&c, "x", DIMS(N, 6));
    ir_value *w = gc_param(&c, "w", DIMS(5, 6), 0.6f), *b = gc_param(&c, "b", DIMS(5), 0.3f);
    ir_node *fc = gc_node(&c, "Gemm", 3, (ir_value *[]){x, w, b}, 1);
    ir_attr_set_int(c.g, fc, "transB", 1);
    ir_value *s = gc_done(&c, fc);
    ir_value *labels = gc_labels(&c, "target", DIMS(N));
    ir_node *n = gc_node(&c, "SoftmaxCrossEntropyLoss", 2, (ir_value *[]){s, labels}, 1);
    ir_attr_set_string(c.g, n, "reduction", "sum");
    gc_done(&c, n);
    end(&c, NULL);
  }
}

/* Tensors large enough for the threaded paths of the elementwise, pooling and movement kernels. The
 * large tensor is the input (a per-element gradient of it would be too small to difference in
 * float32); the checked parameters each gather gradient from all of its elements. */
static void chain_cases(void) {
  gc_case c;
  if (begin(&c, "chain/threads2-large-eltwise-pool-softmax", 2)) {
    c.nthreads = 2;
    ir_value *x = gc_input(&c, "x", DIMS(N, 8, 40, 40));
    ir_value *p = gc_param(&c, "p", DIMS(1, 8, 1, 1), 1.5f), *q = gc_param(&c, "q", DIMS(1, 8, 1, 1), 0.5f);
    ir_value *r = gc_param(&c, "r", DIMS(1, 8, 1, 1), 2.0f);
    ir_value *y = gc_op(&c, "Sigmoid", 1, &x);
    y = gc_op(&c, "Mul", 2, (ir_value *[]){y, p});
    y = gc_op(&c, "Add", 2, (ir_value *[]){y, q});
    y = gc_op(&c, "Tanh", 1, &y);
    ir_node *n = gc_node(&c, "AveragePool", 1, &y, 1);
    SET_INTS(&c, n, "kernel_shape", 2, 2);
    SET_INTS(&c, n, "strides", 2, 2);
    SET_INTS(&c, n, "pads", 0, 0, 0, 0);
    y = gc_done(&c, n);
    n = gc_node(&c, "Transpose", 1, &y, 1);
    SET_INTS(&c, n, "perm", 0, 1, 3, 2);
    y = gc_done(&c, n);
    n = gc_node(&c, "Softmax", 1, &y, 1);
    ir_attr_set_int(c.g, n, "axis", 1);
    y = gc_done(&c, n);
    y = gc_op(&c, "Mul", 2, (ir_value *[]){y, r});
    end(&c, gc_op(&c, "GlobalAveragePool", 1, &y));
  }
}

/* Residual blocks as the fuse pass rewrites them: Y = Relu(x + b) read twice, so its gradient is a Sum;
 * they become AddRelu + SumReluGrad gated by Y (Y also read by the backward) or by the bit mask (Y read
 * by forward ops only). x is kept 0.05 away from the kink x + b = 0. */
static void residual_cases(void) {
  const float kink[] = {-0.25f};
  gc_case c;
  if (begin(&c, "fuse/add-relu-sum-relu-grad-reads-y", 2)) {
    ir_value *x = gc_param(&c, "x", DIMS(2, 3, 4), 1.0f), *q = gc_param(&c, "q", DIMS(2, 3, 4), 1.0f);
    gc_fill_away(&c, x, -1, 1, kink, 1, 0.05f);
    ir_value *b = gc_fixed(&c, IR_VAL_CONST, "b", DIMS(2, 3, 4), 0.25f);
    ir_value *s = gc_op(&c, "Add", 2, (ir_value *[]){x, b});
    ir_value *y = gc_op(&c, "Relu", 1, &s);
    ir_value *m = gc_op(&c, "Mul", 2, (ir_value *[]){y, q}); /* dq reads Y */
    ir_value *t = gc_op(&c, "Tanh", 1, &y);
    end(&c, gc_op(&c, "Add", 2, (ir_value *[]){m, t}));
  }
  if (begin(&c, "fuse/add-relu-mask-sum-relu-grad-mask", 2)) {
    ir_value *x = gc_param(&c, "x", DIMS(2, 3, 4), 1.0f), *q = gc_param(&c, "q", DIMS(2, 3, 4), 1.0f);
    ir_value *r = gc_param(&c, "r", DIMS(2, 3, 4), 1.0f);
    gc_fill_away(&c, x, -1, 1, kink, 1, 0.05f);
    ir_value *b = gc_fixed(&c, IR_VAL_CONST, "b", DIMS(2, 3, 4), 0.25f);
    ir_value *s = gc_op(&c, "Add", 2, (ir_value *[]){x, b});
    ir_value *y = gc_op(&c, "Relu", 1, &s);
    ir_value *u = gc_op(&c, "Add", 2, (ir_value *[]){y, q}); /* backward reads neither */
    u = gc_op(&c, "Mul", 2, (ir_value *[]){u, r});
    ir_value *v = gc_op(&c, "Neg", 1, &y);
    end(&c, gc_op(&c, "Add", 2, (ir_value *[]){u, v}));
  }
}

/* The harness must catch a gradient that is 3% off: run a case with its first gradient corrupted. */
static void selftest(void) {
  gc_case c;
  if (!begin(&c, "selftest/corrupted-gradient", 2)) return;
  c.corrupt = 0.03f;
  ir_value *x = gc_param(&c, "x", DIMS(2, 6), 1.0f);
  n_cases++;
  int caught = gc_case_run(&c, gc_op(&c, "Tanh", 1, &x)) != 0;
  printf("%-5s selftest: a gradient 3%% off is %s\n", caught ? "ok" : "FAIL", caught ? "caught" : "NOT caught");
  n_failed += !caught;
}

int main(int argc, char **argv) {
  const char *f[64];
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-v")) verbose = 1;
    else if (n_filters < 64) f[n_filters++] = argv[i];
  }
  filters = f;
  conv_cases();
  gemm_cases();
  matmul_cases();
  bn_cases();
  pool_cases();
  act_cases();
  softmax_cases();
  arith_cases();
  dropout_cases();
  concat_split_cases();
  shape_cases();
  pad_slice_reduce_cases();
  sce_cases();
  chain_cases();
  residual_cases();
  selftest();
  printf("gradcheck: %d cases, %d failed\n", n_cases, n_failed);
  return n_failed ? 1 : 0;
}
