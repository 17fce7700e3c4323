/* Data movement: Concat, Slice, Transpose, Pad, ReduceMean. Forward values against naive index
 * arithmetic, ONNX edge cases (negative axes/steps, clamped starts/ends, negative pads), and the
 * backward of each as the exact adjoint of its forward, checked by finite differences (all these
 * ops are linear: h = 0.1, |num-ana| <= 1e-4 + 2e-3*|ana|), plus thread-count independence. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "runtime/kernels/movement.h"

/* A generic "linear op" finite-difference context: run(ctx) computes out from in. */
typedef struct lin_ctx {
  void (*run)(struct lin_ctx *c);
  float *in, *out;
  size_t nout;
  const float *g;
  /* op parameters */
  kshape x;
  const int *perm;
  const int64_t *pads, *axes;
  int naxes, axis, n;
  const kshape *xs;
  float *const *parts;
  const slice_desc *sd;
} lin_ctx;

static double lin_loss(void *ctx) {
  lin_ctx *c = ctx;
  c->run(c);
  return tdot(c->out, c->g, c->nout);
}

/* ---------------------------------------------------------------------------------------------- */

static void run_transpose(lin_ctx *c) { transpose_fwd(&c->x, c->perm, c->in, c->out, 1); }

static void check_transpose(int nd, const int64_t *dims, const int *perm) {
  kshape x = kshape_make(nd, dims), y;
  if (transpose_shape(&x, perm, &y, NULL)) {
    tfail("transpose shape rejected");
    return;
  }
  size_t n = kshape_numel(&x);
  float *X = talloc(4 * n), *Y = talloc(4 * n), *Y2 = talloc(4 * n), *g = talloc(4 * n), *dX = talloc(4 * n);
  trng_fill(X, n, -1, 1), trng_fill(g, n, -1, 1);
  transpose_fwd(&x, perm, X, Y, 2);
  /* naive: y[j] with j decoded over y's dims reads x at i_{perm[k]} = j_k */
  int64_t xst[KERN_MAX_DIMS];
  kshape_strides(&x, xst);
  for (size_t j = 0; j < n; j++) {
    int64_t rem = (int64_t)j, off = 0;
    for (int k = nd - 1; k >= 0; k--) {
      off += (rem % y.d[k]) * xst[perm ? perm[k] : nd - 1 - k];
      rem /= y.d[k];
    }
    Y2[j] = X[off];
  }
  tcheck_close("transpose fwd vs naive", Y, Y2, n, 0);
  transpose_bwd(&x, perm, g, dX, 2);
  lin_ctx c = {.run = run_transpose, .in = X, .out = Y, .nout = n, .g = g, .x = x, .perm = perm};
  tcheck_grad("transpose bwd", lin_loss, &c, X, n, dX, 0.1, 2e-3, 1e-4, 20);
  free(X), free(Y), free(Y2), free(g), free(dX);
}

/* ---------------------------------------------------------------------------------------------- */

static void run_pad(lin_ctx *c) { pad_fwd(&c->x, c->pads, 0.0f, c->in, c->out, 1); }

static void check_pad(int nd, const int64_t *dims, const int64_t *pads) {
  kshape x = kshape_make(nd, dims), y;
  if (pad_shape(&x, pads, &y, NULL)) {
    tfail("pad shape rejected");
    return;
  }
  size_t n = kshape_numel(&x), ny = kshape_numel(&y);
  float *X = talloc(4 * n + 4), *Y = talloc(4 * ny + 4), *Y2 = talloc(4 * ny + 4), *g = talloc(4 * ny + 4);
  float *dX = talloc(4 * n + 4);
  trng_fill(X, n, -1, 1), trng_fill(g, ny, -1, 1);
  pad_fwd(&x, pads, 7.5f, X, Y, 2);
  int64_t xst[KERN_MAX_DIMS];
  kshape_strides(&x, xst);
  for (size_t j = 0; j < ny; j++) {
    int64_t rem = (int64_t)j, off = 0;
    int in = 1;
    for (int k = nd - 1; k >= 0; k--) {
      int64_t i = rem % y.d[k] - pads[k];
      rem /= y.d[k];
      in = in && i >= 0 && i < x.d[k];
      off += i * xst[k];
    }
    Y2[j] = in ? X[off] : 7.5f;
  }
  tcheck_close("pad fwd vs naive", Y, Y2, ny, 0);
  pad_bwd(&x, pads, g, dX, 2);
  lin_ctx c = {.run = run_pad, .in = X, .out = Y, .nout = ny, .g = g, .x = x, .pads = pads};
  tcheck_grad("pad bwd", lin_loss, &c, X, n, dX, 0.1, 2e-3, 1e-4, 20);
  free(X), free(Y), free(Y2), free(g), free(dX);
}

/* ---------------------------------------------------------------------------------------------- */

static void run_slice(lin_ctx *c) { slice_fwd(c->sd, c->in, c->out); }

static void check_slice(int nd, const int64_t *dims, int n, const int64_t *starts, const int64_t *ends,
                        const int64_t *axes, const int64_t *steps, int ndw, const int64_t *want_dims,
                        const float *want_first) {
  kshape x = kshape_make(nd, dims), want = kshape_make(ndw, want_dims);
  slice_desc sd;
  sw_err e;
  sw_err_clear(&e);
  if (slice_resolve(&x, n, starts, ends, axes, steps, &sd, &e)) {
    tfail("slice rejected: %s", e.msg);
    return;
  }
  char s1[64], s2[64];
  if (!kshape_equal(&sd.y, &want)) {
    tfail("slice shape %s, want %s", kshape_str(&sd.y, s1, sizeof s1), kshape_str(&want, s2, sizeof s2));
    return;
  }
  size_t nx = kshape_numel(&x), ny = kshape_numel(&sd.y);
  float *X = talloc(4 * nx), *Y = talloc(4 * ny + 4), *g = talloc(4 * ny + 4), *dX = talloc(4 * nx);
  for (size_t i = 0; i < nx; i++) X[i] = (float)i; /* values = flat input index */
  trng_fill(g, ny, -1, 1);
  slice_fwd(&sd, X, Y);
  if (want_first && ny && Y[0] != *want_first) tfail("slice first element %g, want %g", Y[0], *want_first);
  else tcheck_same("slice values", "", "", 0);
  slice_bwd(&sd, g, dX);
  lin_ctx c = {.run = run_slice, .in = X, .out = Y, .nout = ny, .g = g, .sd = &sd};
  tcheck_grad("slice bwd", lin_loss, &c, X, nx, dX, 0.1, 2e-3, 1e-4, 30);
  free(X), free(Y), free(g), free(dX);
}

/* ---------------------------------------------------------------------------------------------- */

static void run_concat(lin_ctx *c) {
  /* c->in is the concatenation of the parts' storage, laid out one after another */
  const float *ptrs[4];
  size_t off = 0;
  for (int i = 0; i < c->n; i++) {
    ptrs[i] = c->in + off;
    off += kshape_numel(&c->xs[i]);
  }
  concat_fwd(c->n, c->xs, ptrs, c->axis, c->out, 1);
}

static void check_concat(void) {
  int64_t a[] = {2, 3, 4}, b[] = {2, 1, 4}, cc[] = {2, 5, 4};
  kshape xs[3] = {kshape_make(3, a), kshape_make(3, b), kshape_make(3, cc)}, y;
  int axis = -2;
  if (concat_shape(3, xs, &axis, &y, NULL) || axis != 1 || y.d[1] != 9) {
    tfail("concat shape");
    return;
  }
  size_t n = 24 + 8 + 40;
  float *in = talloc(4 * n), *Y = talloc(4 * n), *g = talloc(4 * n), *dIn = talloc(4 * n);
  trng_fill(in, n, -1, 1), trng_fill(g, n, -1, 1);
  const float *ptrs[3] = {in, in + 24, in + 32};
  float *dptrs[3] = {dIn, dIn + 24, dIn + 32};
  concat_fwd(3, xs, ptrs, axis, Y, 2);
  /* spot values: y[1][3][2] comes from b[1][0][2]; y[0][8][1] from c[0][4][1] */
  tcheck_close("concat value 1", &Y[(1 * 9 + 3) * 4 + 2], &in[24 + (1 * 1 + 0) * 4 + 2], 1, 0);
  tcheck_close("concat value 2", &Y[(0 * 9 + 8) * 4 + 1], &in[32 + (0 * 5 + 4) * 4 + 1], 1, 0);
  concat_bwd(3, xs, axis, g, dptrs, 2);
  lin_ctx c = {.run = run_concat, .in = in, .out = Y, .nout = n, .g = g, .n = 3, .xs = xs, .axis = axis};
  tcheck_grad("concat bwd", lin_loss, &c, in, n, dIn, 0.1, 2e-3, 1e-4, 40);
  int64_t bad[] = {2, 3, 5};
  kshape xb[2] = {kshape_make(3, a), kshape_make(3, bad)};
  axis = 1;
  sw_err e;
  sw_err_clear(&e);
  if (concat_shape(2, xb, &axis, &y, &e) != SW_EINPUT) tfail("concat of [2,3,4] and [2,3,5] on axis 1 accepted");
  free(in), free(Y), free(g), free(dIn);
}

/* ---------------------------------------------------------------------------------------------- */

static void run_reduce(lin_ctx *c) { reduce_mean_fwd(&c->x, c->naxes, c->axes, c->in, c->out, 1); }

static void check_reduce(int nd, const int64_t *dims, int naxes, const int64_t *axes) {
  kshape x = kshape_make(nd, dims), y, yk;
  if (reduce_shape(&x, naxes, axes, 0, &y, NULL) || reduce_shape(&x, naxes, axes, 1, &yk, NULL)) {
    tfail("reduce shape rejected");
    return;
  }
  size_t n = kshape_numel(&x), ny = kshape_numel(&y);
  float *X = talloc(4 * n), *Y = talloc(4 * ny), *Y2 = talloc(4 * ny), *g = talloc(4 * ny), *dX = talloc(4 * n);
  float *dX2 = talloc(4 * n);
  trng_fill(X, n, -1, 1), trng_fill(g, ny, -1, 1);
  reduce_mean_fwd(&x, naxes, axes, X, Y, 2);
  /* naive: accumulate every x into its kept-dims output in double */
  double *acc = talloc(8 * ny);
  int64_t cnt = (int64_t)(n / ny);
  int64_t yst[KERN_MAX_DIMS];
  kshape_strides(&yk, yst);
  for (size_t i = 0; i < n; i++) {
    int64_t rem = (int64_t)i, off = 0;
    for (int k = nd - 1; k >= 0; k--) {
      off += (yk.d[k] == 1 ? 0 : rem % x.d[k]) * yst[k];
      rem /= x.d[k];
    }
    acc[off] += X[i];
  }
  for (size_t j = 0; j < ny; j++) Y2[j] = (float)(acc[j] / cnt);
  tcheck_close("reduce_mean fwd vs naive", Y, Y2, ny, 1e-6);
  reduce_mean_bwd(&x, naxes, axes, g, dX, 2);
  reduce_mean_bwd(&x, naxes, axes, g, dX2, 1);
  tcheck_same("reduce_mean bwd T1 == T2", dX, dX2, 4 * n);
  reduce_mean_fwd(&x, naxes, axes, X, Y2, 1);
  tcheck_same("reduce_mean fwd T1 == T2", Y, Y2, 4 * ny);
  lin_ctx c = {.run = run_reduce, .in = X, .out = Y, .nout = ny, .g = g, .x = x, .naxes = naxes, .axes = axes};
  tcheck_grad("reduce_mean bwd", lin_loss, &c, X, n, dX, 0.1, 2e-3, 1e-4, 20);
  free(X), free(Y), free(Y2), free(g), free(dX), free(dX2), free(acc);
}

int main(void) {
  trng_seed(5);
  tgroup_begin("transpose (up to 6-D)");
  int64_t d2[] = {5, 7}, d4[] = {2, 3, 4, 5}, d6[] = {2, 3, 1, 4, 2, 3};
  int p2[] = {1, 0}, p4a[] = {0, 2, 3, 1}, p4b[] = {3, 1, 0, 2}, p6[] = {5, 0, 3, 1, 4, 2};
  check_transpose(2, d2, p2);
  check_transpose(4, d4, p4a);
  check_transpose(4, d4, p4b);
  check_transpose(4, d4, NULL);
  check_transpose(6, d6, p6);
  int bad[] = {0, 0};
  kshape x2 = kshape_make(2, d2), y;
  if (transpose_shape(&x2, bad, &y, NULL) != SW_EINPUT) tfail("perm [0,0] accepted");
  tgroup_end();

  tgroup_begin("pad (constant, negative pads)");
  int64_t pd1[] = {1, 2, 0, 1, 1, 0, 2, 1};     /* 4-D NCHW-style */
  int64_t pd2[] = {0, 0, -1, 2, 0, 1, 1, -2};   /* crop and pad */
  int64_t pd3[] = {3, -2};                      /* 1-D */
  int64_t d1[] = {6};
  check_pad(4, d4, pd1);
  check_pad(4, d4, pd2);
  check_pad(1, d1, pd3);
  int64_t pbad[] = {0, -4, 0, -4}; /* 7 - 4 - 4 < 0 */
  if (pad_shape(&x2, pbad, &y, NULL) != SW_EINPUT) tfail("pad making a dimension negative accepted");
  tgroup_end();

  tgroup_begin("slice (ONNX clamping, negative steps)");
  int64_t sd[] = {4, 10};
  {
    int64_t st[] = {1, 2}, en[] = {3, 9}, ax[] = {0, 1}, sp[] = {1, 3}, want[] = {2, 3};
    float f = 12;
    check_slice(2, sd, 2, st, en, ax, sp, 2, want, &f);
  }
  {
    int64_t st[] = {-1}, en[] = {INT64_MIN}, ax[] = {-1}, sp[] = {-1}, want[] = {4, 10}; /* full reverse */
    float f = 9;
    check_slice(2, sd, 1, st, en, ax, sp, 2, want, &f);
  }
  {
    int64_t st[] = {100, 0}, en[] = {-100, 10}, sp[] = {-2, 4}, want[] = {2, 3}; /* clamped starts/ends */
    float f = 30;
    check_slice(2, sd, 2, st, en, NULL, sp, 2, want, &f);
  }
  {
    int64_t st[] = {5}, en[] = {2}, ax[] = {1}, want[] = {4, 0}; /* empty */
    check_slice(2, sd, 1, st, en, ax, NULL, 2, want, NULL);
  }
  {
    int64_t st[] = {0}, en[] = {INT64_MAX}, ax[] = {1}, sp[] = {0};
    kshape xs = kshape_make(2, sd);
    slice_desc s;
    if (slice_resolve(&xs, 1, st, en, ax, sp, &s, NULL) != SW_EINPUT) tfail("slice step 0 accepted");
    int64_t ax2[] = {2};
    if (slice_resolve(&xs, 1, st, en, ax2, NULL, &s, NULL) != SW_EINPUT) tfail("slice axis 2 of rank 2 accepted");
  }
  tgroup_end();

  tgroup_begin("concat");
  check_concat();
  tgroup_end();

  tgroup_begin("reduce_mean (axes, keepdims)");
  int64_t r1[] = {1, 2}, r2[] = {0}, r3[] = {-1, 0}, r4[] = {1};
  check_reduce(4, d4, 2, r1);
  check_reduce(4, d4, 1, r2);
  check_reduce(4, d4, 2, r3);
  check_reduce(4, d4, 0, NULL); /* all axes */
  check_reduce(2, d2, 1, r4);
  int64_t rbad[] = {1, 1};
  if (reduce_shape(&x2, 2, rbad, 1, &y, NULL) != SW_EINPUT) tfail("repeated reduce axis accepted");
  int64_t dk[] = {2, 3, 4, 5}, axk[] = {1, 3};
  kshape xk = kshape_make(4, dk), yk1, yk0;
  reduce_shape(&xk, 2, axk, 1, &yk1, NULL);
  reduce_shape(&xk, 2, axk, 0, &yk0, NULL);
  int64_t w1[] = {2, 1, 4, 1}, w0[] = {2, 4};
  kshape kw1 = kshape_make(4, w1), kw0 = kshape_make(2, w0);
  if (!kshape_equal(&yk1, &kw1) || !kshape_equal(&yk0, &kw0)) tfail("reduce keepdims shapes");
  tgroup_end();
  return tresult();
}
