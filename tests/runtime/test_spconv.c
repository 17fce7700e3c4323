/* Sparse-weight Conv and Gemm (spconv.h) against the dense references, on the shipped models' layer
 * shapes (small batches) and random shapes: odd sizes, channel counts off multiples of 16, batches
 * off multiples of 16 (and 1), strides 1-3, asymmetric padding, 1x1 to 5x5, non-square kernels;
 * weight densities 0 (all zero), 1%, 10%, 50%, 100%, and whole R x S kernels kept (structured-channel
 * SWAT) at 0/30/100% on every path, and its whole-kernel tiles bit-identical to the per-tap lists; 1 and 2 threads (both thread schedules);
 * scratch and outputs poisoned with NaN; one plan and scratch reused while the zero pattern changes.
 * Also: results identical for 1 and 2 threads and run to run; unsupported descriptors rejected.
 * Stride-1 shapes wide enough for the NCHW-direct path (odd widths 13-47, pads 0-2, kernels up to
 * 5x5, N = 1 and off multiples of 16) run on every path: 16-image-packed, NCHW-direct with AVX-512,
 * NCHW-direct in plain C; the plans must pick NCHW-direct for ResNet-20's 28x28 layers at 10% density
 * (and run it: the plan's result equals the forced path's bits) and the packed path at 50%.
 * Strided convs (3x3 stride 2 pad 1 as ResNet-20's stage entries, odd sizes, even and 5x5 kernels,
 * asymmetric pads, strides 2x1 / 1x2 / 3, N = 1 and off multiples of 16, random shapes) run on the
 * same three paths (the NCHW-direct one being the polyphase path), bit-identical to packed with AVX-512.
 *
 * Tolerance: max|got-ref| <= 1e-5 * max(max|ref|, 1), as test_conv.c (fp32 sums of at most a few
 * thousand products, with FMA, against a reference that sums in double). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "runtime/kernels/spconv.h"

#define TOL 1e-5

static const double dens_elem[] = {0.0, 0.01, 0.1, 0.5, 1.0};
/* Whole-kernel pattern (structured-channel SWAT): none, about 30% and every (output, input) kernel kept. */
static const double dens_kern[] = {0.0, 0.3, 1.0};
/* The conv checks' densities and weight pattern: per element (default) or whole R x S kernels. */
static const double *densities = dens_elem;
static int NDENS = (int)(sizeof dens_elem / sizeof dens_elem[0]);
static int kernel_pattern;

static size_t xsize(const conv_desc *d) { return (size_t)d->N * d->C * d->H * d->W; }
static size_t ysize(const conv_desc *d) { return (size_t)d->N * d->K * d->P * d->Q; }
static size_t wsize(const conv_desc *d) { return (size_t)d->K * d->C * d->R * d->S; }

/* One test's operands: random x, dY, dense weight w0 (w: its sparsified copy) and bias, references,
 * and NaN-poisoned outputs y[2], dx[2] (one per thread count or path). */
typedef struct operands {
  float *x, *dy, *w0, *w, *b, *y_ref, *dx_ref, *y[2], *dx[2];
} operands;

static operands operands_new(size_t xs, size_t ys, size_t ws, size_t nb) {
  operands o = {talloc(sizeof(float) * xs), talloc(sizeof(float) * ys), talloc(sizeof(float) * ws),
                talloc(sizeof(float) * ws), talloc(sizeof(float) * nb), talloc(sizeof(float) * ys),
                talloc(sizeof(float) * xs), {NULL, NULL}, {NULL, NULL}};
  for (int i = 0; i < 2; i++) o.y[i] = talloc_nan(ys), o.dx[i] = talloc_nan(xs);
  trng_fill(o.x, xs, -1, 1);
  trng_fill(o.dy, ys, -1, 1);
  trng_fill(o.w0, ws, -1, 1);
  trng_fill(o.b, nb, -1, 1);
  return o;
}

static void operands_free(operands *o) {
  free(o->x), free(o->dy), free(o->w0), free(o->w), free(o->b), free(o->y_ref), free(o->dx_ref);
  for (int i = 0; i < 2; i++) free(o->y[i]), free(o->dx[i]);
}

/* Keeps each entry of w with probability density (the others become exactly zero). */
static void sparsify(float *w, size_t n, double density) {
  for (size_t i = 0; i < n; i++)
    if (trng_unit() >= density) w[i] = 0.0f;
}

/* Sparsifies a conv weight by the current pattern: per element, or whole R x S kernels kept with
 * probability density (all their taps) and the others zeroed. */
static void sparsify_conv(float *w, const conv_desc *d, double density) {
  if (!kernel_pattern) {
    sparsify(w, wsize(d), density);
    return;
  }
  size_t rs = (size_t)d->R * d->S;
  for (size_t i = 0; i < wsize(d); i += rs)
    if (trng_unit() >= density) memset(w + i, 0, sizeof(float) * rs);
}

/* Switches the conv checks to the whole-kernel pattern at 0/30/100% (on) or back to per element. */
static void use_kernel_pattern(int on) {
  kernel_pattern = on;
  densities = on ? dens_kern : dens_elem;
  NDENS = on ? (int)(sizeof dens_kern / sizeof dens_kern[0]) : (int)(sizeof dens_elem / sizeof dens_elem[0]);
}

static void desc_str(const conv_desc *d, char *buf, size_t n) {
  snprintf(buf, n, "N%d C%d %dx%d K%d %dx%d s%d,%d p%d,%d,%d,%d", d->N, d->C, d->H, d->W, d->K, d->R, d->S,
           d->stride_h, d->stride_w, d->pad_t, d->pad_l, d->pad_b, d->pad_r);
}

static conv_desc make_desc(int N, int C, int H, int W, int K, int R, int S, int sh, int sw, int pt, int pl, int pb,
                           int pr) {
  conv_desc d = {N, C, H, W, K, R, S, 0, 0, sh, sw, pt, pl, pb, pr, 1, 1, 1};
  SW_ASSERT(conv_desc_resolve(&d, NULL) == SW_OK);
  return d;
}

static conv_desc random_desc(void) {
  for (;;) {
    int R = trng_int(1, 5), S = trng_int(0, 3) ? R : trng_int(1, 5);
    int sh = trng_int(1, 3) == 1 ? 2 : 1;
    if (trng_int(0, 9) == 0) sh = 3;
    int sw = trng_int(0, 3) ? sh : trng_int(1, 2);
    conv_desc d = {trng_int(0, 3) ? trng_int(1, 40) : 1,
                   trng_int(1, 20),
                   trng_int(1, 16),
                   trng_int(1, 16),
                   trng_int(1, 20),
                   R,
                   S,
                   0,
                   0,
                   sh,
                   sw,
                   trng_int(0, 2),
                   trng_int(0, 2),
                   trng_int(0, 2),
                   trng_int(0, 2),
                   1,
                   1,
                   1};
    if (trng_int(0, 6) == 0) d.W = trng_int(28, 34); /* wide rows: several column tiles */
    if (conv_desc_resolve(&d, NULL) == SW_OK) return d;
  }
}

/* All densities, both thread counts, one plan per thread count reused across densities. path: -1 the
 * plan's own choice, 0 the 16-image-packed path, 1 NCHW-direct where possible (spconv_plan_set_path);
 * portable: the NCHW-direct path runs its plain C kernel (what CPUs without AVX-512 run). */
static void check_conv_path(const conv_desc *d, int path, int portable) {
  char ds[160], what[1024], pd[400];
  desc_str(d, ds, sizeof ds);
  operands o = operands_new(xsize(d), ysize(d), wsize(d), (size_t)d->K);
  float *x = o.x, *dy = o.dy, *w0 = o.w0, *w = o.w, *b = o.b, *y_ref = o.y_ref, *dx_ref = o.dx_ref, **y = o.y, **dx = o.dx;
  spconv_plan p[2];
  float *scratch[2];
  for (int t = 0; t < 2; t++) {
    sw_err e;
    sw_err_clear(&e);
    if (spconv_plan_init(&p[t], d, t + 1, &e)) {
      tfail("%s: plan init failed: %s", ds, e.msg);
      for (int u = 0; u < t; u++) free(scratch[u]), spconv_plan_free(&p[u]);
      operands_free(&o);
      return;
    }
    spconv_plan_set_path(&p[t], path);
    size_t ss = spconv_plan_scratch(&p[t], CONV_FWD);
    if (spconv_plan_scratch(&p[t], CONV_BWD_DATA) > ss) ss = spconv_plan_scratch(&p[t], CONV_BWD_DATA);
    scratch[t] = talloc_nan(ss / sizeof(float) + 1);
  }
  spconv_plan_describe(&p[1], pd, sizeof pd);
  if (portable) snprintf(pd + strlen(pd), sizeof pd - strlen(pd), " (plain C)");
  spconv_use_portable(portable);
  for (int di = 0; di < NDENS; di++) {
    memcpy(w, w0, sizeof(float) * wsize(d));
    sparsify_conv(w, d, densities[di]);
    const float *bias = di % 2 ? NULL : b; /* with and without bias */
    conv_fwd_ref(d, x, w, bias, y_ref);
    conv_bwd_data_ref(d, dy, w, dx_ref);
    for (int t = 0; t < 2; t++) {
      spconv_plan_fwd(&p[t], x, w, bias, y[t], scratch[t]);
      snprintf(what, sizeof what, "fwd %s density %g%s [%s] T=%d", ds, densities[di], bias ? "" : " no bias", pd,
               t + 1);
      tcheck_close(what, y[t], y_ref, ysize(d), TOL);
      spconv_plan_bwd_data(&p[t], dy, w, dx[t], scratch[t]);
      snprintf(what, sizeof what, "bwd-data %s density %g [%s] T=%d", ds, densities[di], pd, t + 1);
      tcheck_close(what, dx[t], dx_ref, xsize(d), TOL);
    }
    snprintf(what, sizeof what, "fwd T=1 vs T=2 %s density %g", ds, densities[di]);
    tcheck_same(what, y[0], y[1], sizeof(float) * ysize(d));
    snprintf(what, sizeof what, "bwd-data T=1 vs T=2 %s density %g", ds, densities[di]);
    tcheck_same(what, dx[0], dx[1], sizeof(float) * xsize(d));
  }
  /* Run to run: the same call again gives the same bits. */
  spconv_plan_fwd(&p[1], x, w, b, y[0], scratch[1]);
  spconv_plan_fwd(&p[1], x, w, b, y[1], scratch[1]);
  snprintf(what, sizeof what, "fwd rerun %s [%s]", ds, pd);
  tcheck_same(what, y[0], y[1], sizeof(float) * ysize(d));
  spconv_use_portable(0);
  for (int t = 0; t < 2; t++) free(scratch[t]), spconv_plan_free(&p[t]);
  operands_free(&o);
}

/* The plan's own choice of path. */
static void check_conv(const conv_desc *d) { check_conv_path(d, -1, 0); }

/* With AVX-512 the NCHW-direct path sums every output in the packed path's order: bit-identical
 * forward and backward-data at every density (so the per-call path choice changes no result). */
/* The start of a bit-identity check: operands and a 2-thread plan for d (ds: its description); 0 when
 * the check does not run: without AVX-512, or under ASan, where the packed kernels have no AVX-512
 * clone (spconv.c: SPC_HOT), so no FMA: other rounding. */
static int bitcheck_open(const conv_desc *d, char *ds, size_t n, operands *o, spconv_plan *p) {
#if defined(__SANITIZE_ADDRESS__)
  (void)d, (void)ds, (void)n, (void)o, (void)p;
  return 0;
#else
  if (!__builtin_cpu_supports("avx512f")) return 0;
  desc_str(d, ds, n);
  *o = operands_new(xsize(d), ysize(d), wsize(d), (size_t)d->K);
  sw_err e;
  sw_err_clear(&e);
  if (spconv_plan_init(p, d, 2, &e)) {
    tfail("%s: plan init failed: %s", ds, e.msg);
    operands_free(o);
    return 0;
  }
  return 1;
#endif
}

static void check_paths_identical(const conv_desc *d) {
  char ds[160], what[300];
  operands o;
  spconv_plan p;
  if (!bitcheck_open(d, ds, sizeof ds, &o, &p)) return;
  float *x = o.x, *dy = o.dy, *w0 = o.w0, *w = o.w, *b = o.b, **y = o.y, **dx = o.dx;
  size_t ss = 0;
  for (int path = 0; path < 2; path++) {
    spconv_plan_set_path(&p, path);
    for (int pass = 0; pass < 2; pass++)
      if (spconv_plan_scratch(&p, pass ? CONV_BWD_DATA : CONV_FWD) > ss) ss = spconv_plan_scratch(&p, pass ? CONV_BWD_DATA : CONV_FWD);
  }
  float *scr = talloc_nan(ss / sizeof(float) + 1);
  for (int di = 0; di < NDENS; di++) {
    memcpy(w, w0, sizeof(float) * wsize(d));
    sparsify_conv(w, d, densities[di]);
    for (int path = 0; path < 2; path++) {
      spconv_plan_set_path(&p, path);
      spconv_plan_fwd(&p, x, w, b, y[path], scr);
      spconv_plan_bwd_data(&p, dy, w, dx[path], scr);
    }
    snprintf(what, sizeof what, "%s density %g: NCHW-direct forward = packed, bit for bit", ds, densities[di]);
    tcheck_same(what, y[0], y[1], sizeof(float) * ysize(d));
    snprintf(what, sizeof what, "%s density %g: NCHW-direct backward-data = packed, bit for bit", ds, densities[di]);
    tcheck_same(what, dx[0], dx[1], sizeof(float) * xsize(d));
  }
  spconv_plan_free(&p);
  free(scr);
  operands_free(&o);
}

/* Whole-kernel tiles (3x3 stride 1, packed path) against the per-tap lists they replace
 * (spconv_use_whole_kernel_tiles(0)): the same sums in the same order, so the same bits, forward and
 * backward-data, with whole kernels at 10/30/100% and with kernels missing one or two taps (the
 * tiles then add w*0 where the lists skip). With AVX-512 only (the tiles' only form), not under ASan. */
static void check_k9_same_bits(const conv_desc *d) {
  char ds[160], what[300];
  operands o;
  spconv_plan p;
  if (!bitcheck_open(d, ds, sizeof ds, &o, &p)) return;
  spconv_plan_set_path(&p, 0);
  size_t ss = spconv_plan_scratch(&p, CONV_FWD);
  if (spconv_plan_scratch(&p, CONV_BWD_DATA) > ss) ss = spconv_plan_scratch(&p, CONV_BWD_DATA);
  float *scr = talloc_nan(ss / sizeof(float) + 1);
  static const double kd[] = {0.1, 0.3, 1.0};
  for (int di = 0; di < 3; di++)
    for (int holes = 0; holes < 2; holes++) {
      memcpy(o.w, o.w0, sizeof(float) * wsize(d));
      for (size_t i = 0; i < wsize(d); i += 9) {
        if (trng_unit() >= kd[di]) memset(o.w + i, 0, sizeof(float) * 9);
        else if (holes && trng_int(0, 9) == 0) o.w[i + trng_int(0, 8)] = 0.0f; /* still >= 90% whole */
      }
      for (int k9 = 0; k9 < 2; k9++) {
        spconv_use_whole_kernel_tiles(k9);
        spconv_plan_fwd(&p, o.x, o.w, o.b, o.y[k9], scr);
        spconv_plan_bwd_data(&p, o.dy, o.w, o.dx[k9], scr);
      }
      spconv_use_whole_kernel_tiles(1);
      snprintf(what, sizeof what, "%s kernels %g%s: whole-kernel tiles forward = tap lists, bit for bit", ds,
               kd[di], holes ? " with holes" : "");
      tcheck_same(what, o.y[0], o.y[1], sizeof(float) * ysize(d));
      snprintf(what, sizeof what, "%s kernels %g%s: whole-kernel tiles backward-data = tap lists, bit for bit", ds,
               kd[di], holes ? " with holes" : "");
      tcheck_same(what, o.dx[0], o.dx[1], sizeof(float) * xsize(d));
    }
  spconv_plan_free(&p);
  free(scr);
  operands_free(&o);
}

/* Every path a stride-1 or strided shape can take: 16-image-packed, NCHW-direct with AVX-512 and in
 * plain C, and the bit-identity of the first two. */
static void check_conv_all_paths(const conv_desc *d) {
  check_conv_path(d, 0, 0);
  check_conv_path(d, 1, 0);
  check_conv_path(d, 1, 1);
  check_paths_identical(d);
}

/* A random stride-1 conv with rows wide enough for the NCHW-direct path: odd widths, pads 0-2
 * (asymmetric too), kernels 1x1 to 5x5, batches of 1 and off multiples of 16. */
static conv_desc random_nchw_desc(void) {
  static const int widths[] = {10, 11, 13, 14, 16, 17, 28, 31, 33, 47};
  for (;;) {
    int R = trng_int(1, 5), S = trng_int(0, 2) ? R : trng_int(1, 5);
    int W = widths[trng_int(0, (int)(sizeof widths / sizeof widths[0]) - 1)];
    int pl = trng_int(0, 2), pr = trng_int(0, 2);
    conv_desc d = {trng_int(0, 3) ? trng_int(2, 21) : 1, trng_int(1, 12), trng_int(1, 18), W + S - 1 - pl - pr,
                   trng_int(1, 12), R, S, 0, 0, 1, 1, trng_int(0, 2), pl, trng_int(0, 2), pr, 1, 1, 1};
    if (d.W < 1 || conv_desc_resolve(&d, NULL) != SW_OK || d.Q < 10 || d.W < 10) continue;
    return d;
  }
}

/* A random strided conv for the polyphase NCHW-direct path: stride 2 (sometimes 3, or 2 in one
 * direction only), kernels 1x1 to 5x5 (odd and even, non-square), pads 0-2 (asymmetric too), odd and
 * even sizes, batches of 1 and off multiples of 16. */
static conv_desc random_strided_desc(void) {
  for (;;) {
    int R = trng_int(1, 5), S = trng_int(0, 2) ? R : trng_int(1, 5);
    int sh = trng_int(0, 7) ? 2 : trng_int(1, 3), sw = trng_int(0, 3) ? sh : trng_int(1, 3);
    conv_desc d = {trng_int(0, 3) ? trng_int(2, 21) : 1, trng_int(1, 12), trng_int(2, 31), trng_int(2, 40),
                   trng_int(1, 12), R, S, 0, 0, sh, sw, trng_int(0, 2), trng_int(0, 2), trng_int(0, 2),
                   trng_int(0, 2), 1, 1, 1};
    if ((sh == 1 && sw == 1) || conv_desc_resolve(&d, NULL) != SW_OK) continue;
    return d;
  }
}

/* At 90% sparsity the plans pick the NCHW-direct path for ResNet-20's 28x28 and 14x14 stride-1 layers and
 * the 28x28 stride-2 ones, and keep the 7x7 layer and the 32-64 stride-2 ones on the packed path (measured
 * slower NCHW-direct there, or within noise: the shortcut); at 50% every layer but the 28x28 stride-2
 * ones packed; the description names the path (and "polyphase" for the strided 3x3). */
static void check_path_choice(void) {
  struct {
    conv_desc d;
    int nchw, nchw50; /* expected at 10% (fwd and bwd-data) and at 50% (fwd) */
  } cases[] = {
      {make_desc(128, 16, 28, 28, 16, 3, 3, 1, 1, 1, 1, 1, 1), 1, 0},
      {make_desc(128, 32, 14, 14, 32, 3, 3, 1, 1, 1, 1, 1, 1), 1, 0},
      {make_desc(128, 64, 7, 7, 64, 3, 3, 1, 1, 1, 1, 1, 1), 0, 0},
      {make_desc(128, 16, 28, 28, 32, 3, 3, 2, 2, 1, 1, 1, 1), 1, 1},
      {make_desc(128, 32, 14, 14, 64, 3, 3, 2, 2, 1, 1, 1, 1), 0, 0},
      /* shortcuts 1x1 s2: 28x28 NCHW-direct (measured faster up to 100%), 14x14 packed (NCHW slower at 10%) */
      {make_desc(128, 16, 28, 28, 32, 1, 1, 2, 2, 0, 0, 0, 0), 1, 1},
      {make_desc(128, 32, 14, 14, 64, 1, 1, 2, 2, 0, 0, 0, 0), 0, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    spconv_plan p;
    sw_err e;
    char ds[160], pd[400];
    sw_err_clear(&e);
    desc_str(&cases[i].d, ds, sizeof ds);
    if (spconv_plan_init(&p, &cases[i].d, 2, &e)) {
      tfail("%s: plan init failed: %s", ds, e.msg);
      continue;
    }
    spconv_plan_describe(&p, pd, sizeof pd);
    int named = strstr(pd, "fwd NCHW-direct") && strstr(pd, "bwd-data NCHW-direct");
    int strided3 = cases[i].d.R > 1 && (cases[i].d.stride_h > 1 || cases[i].d.stride_w > 1);
    if (named && strided3 && !strstr(pd, "polyphase")) tfail("%s: strided NCHW-direct not named polyphase [%s]", ds, pd);
    int f = spconv_plan_uses_nchw(&p, CONV_FWD, 0.1), b = spconv_plan_uses_nchw(&p, CONV_BWD_DATA, 0.1);
    int f5 = spconv_plan_uses_nchw(&p, CONV_FWD, 0.5);
    if (f != cases[i].nchw || b != cases[i].nchw || (cases[i].nchw && !named) || f5 != cases[i].nchw50)
      tfail("%s: NCHW-direct at 10%% density fwd %d bwd %d, at 50%% %d [%s], expected %d at 10%%, %d at 50%%", ds, f,
            b, f5, pd, cases[i].nchw, cases[i].nchw50);
    /* the plan as run: a 10% weight goes through the path it reports (same bits as that path forced) */
    const conv_desc *d = &p.d;
    size_t ss = 0;
    for (int path = 0; path < 2; path++) {
      spconv_plan_set_path(&p, path);
      if (spconv_plan_scratch(&p, CONV_FWD) > ss) ss = spconv_plan_scratch(&p, CONV_FWD);
    }
    spconv_plan_set_path(&p, -1);
    float *x = talloc(sizeof(float) * xsize(d)), *w = talloc(sizeof(float) * wsize(d));
    float *y0 = talloc_nan(ysize(d)), *y1 = talloc_nan(ysize(d)), *scr = talloc_nan(ss / sizeof(float) + 1);
    trng_fill(x, xsize(d), -1, 1);
    trng_fill(w, wsize(d), -1, 1);
    for (size_t k = 0; k < wsize(d); k++) /* exactly every 10th weight nonzero */
      if (k % 10) w[k] = 0.0f;
    spconv_plan_fwd(&p, x, w, NULL, y0, scr);
    spconv_plan_set_path(&p, f);
    spconv_plan_fwd(&p, x, w, NULL, y1, scr);
    char what[300];
    snprintf(what, sizeof what, "%s: plan at 10%% = its reported path (%s)", ds, f ? "NCHW-direct" : "packed");
    tcheck_same(what, y0, y1, sizeof(float) * ysize(d));
    free(x), free(w), free(y0), free(y1), free(scr);
    spconv_plan_free(&p);
  }
}

static void check_gemm(const gemm_desc *d) {
  char what[256], pd[128];
  size_t xs = (size_t)d->M * d->K, ys = (size_t)d->M * d->N, ws = (size_t)d->N * d->K;
  operands o = operands_new(xs, ys, ws, (size_t)d->N);
  float *x = o.x, *dy = o.dy, *w0 = o.w0, *w = o.w, *b = o.b, *y_ref = o.y_ref, *dx_ref = o.dx_ref, **y = o.y, **dx = o.dx;
  spgemm_plan p[2];
  float *scratch[2];
  for (int t = 0; t < 2; t++) {
    sw_err e;
    sw_err_clear(&e);
    if (spgemm_plan_init(&p[t], d, t + 1, &e)) {
      tfail("gemm M%d N%d K%d: plan init failed: %s", d->M, d->N, d->K, e.msg);
      for (int u = 0; u < t; u++) free(scratch[u]), spgemm_plan_free(&p[u]);
      operands_free(&o);
      return;
    }
    size_t ss = spgemm_plan_scratch(&p[t], GEMM_FWD);
    if (spgemm_plan_scratch(&p[t], GEMM_BWD_DATA) > ss) ss = spgemm_plan_scratch(&p[t], GEMM_BWD_DATA);
    scratch[t] = talloc_nan(ss / sizeof(float) + 1);
  }
  spgemm_plan_describe(&p[1], pd, sizeof pd);
  for (int di = 0; di < NDENS; di++) {
    memcpy(w, w0, sizeof(float) * ws);
    sparsify(w, ws, densities[di]);
    const float *bias = di % 2 ? NULL : b;
    gemm_fwd_ref(d, x, w, bias, y_ref);
    gemm_bwd_data_ref(d, dy, w, dx_ref);
    for (int t = 0; t < 2; t++) {
      spgemm_plan_fwd(&p[t], x, w, bias, y[t], scratch[t]);
      snprintf(what, sizeof what, "gemm fwd M%d N%d K%d density %g%s [%s] T=%d", d->M, d->N, d->K, densities[di],
               bias ? "" : " no bias", pd, t + 1);
      tcheck_close(what, y[t], y_ref, ys, TOL);
      spgemm_plan_bwd_data(&p[t], dy, w, dx[t], scratch[t]);
      snprintf(what, sizeof what, "gemm bwd-data M%d N%d K%d density %g [%s] T=%d", d->M, d->N, d->K,
               densities[di], pd, t + 1);
      tcheck_close(what, dx[t], dx_ref, xs, TOL);
    }
    snprintf(what, sizeof what, "gemm T=1 vs T=2 M%d N%d K%d density %g", d->M, d->N, d->K, densities[di]);
    tcheck_same(what, y[0], y[1], sizeof(float) * ys);
    tcheck_same(what, dx[0], dx[1], sizeof(float) * xs);
  }
  for (int t = 0; t < 2; t++) free(scratch[t]), spgemm_plan_free(&p[t]);
  operands_free(&o);
}

/* Descriptors the sparse kernels do not serve come back as SW_EINPUT with a message. */
static void check_rejects(void) {
  spconv_plan p;
  sw_err e;
  conv_desc g = {4, 8, 8, 8, 8, 3, 3, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2};
  sw_err_clear(&e);
  if (spconv_plan_init(&p, &g, 1, &e) != SW_EINPUT || !strstr(e.msg, "groups")) tfail("groups=2 not rejected");
  conv_desc dil = {4, 8, 8, 8, 8, 3, 3, 0, 0, 1, 1, 2, 2, 2, 2, 2, 2, 1};
  sw_err_clear(&e);
  if (spconv_plan_init(&p, &dil, 1, &e) != SW_EINPUT || !strstr(e.msg, "dilation"))
    tfail("dilation 2 not rejected");
  conv_desc bad = {4, 8, 2, 2, 8, 3, 3, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 1};
  sw_err_clear(&e);
  if (spconv_plan_init(&p, &bad, 1, &e) != SW_EINPUT) tfail("kernel larger than the input not rejected");
  spgemm_plan q;
  gemm_desc gd = {0, 4, 4};
  sw_err_clear(&e);
  if (spgemm_plan_init(&q, &gd, 1, &e) != SW_EINPUT) tfail("Gemm M=0 not rejected");
  spconv_plan_free(&p);
  spgemm_plan_free(&q);
}

static void part_shapes(void) {

  tgroup_begin("spconv model shapes (ResNet-20 and LeNet-5 layers, small batches)");
  conv_desc fixed[] = {
      make_desc(9, 16, 28, 28, 16, 3, 3, 1, 1, 1, 1, 1, 1),  /* ResNet-20 stage 1 */
      make_desc(2, 16, 28, 28, 32, 3, 3, 2, 2, 1, 1, 1, 1),  /* stage 2 entry */
      make_desc(3, 16, 28, 28, 32, 1, 1, 2, 2, 0, 0, 0, 0),  /* shortcut 1x1 s2 */
      make_desc(19, 32, 14, 14, 32, 3, 3, 1, 1, 1, 1, 1, 1), /* stage 2 */
      make_desc(5, 32, 14, 14, 64, 3, 3, 2, 2, 1, 1, 1, 1),  /* stage 3 entry */
      make_desc(4, 64, 7, 7, 64, 3, 3, 1, 1, 1, 1, 1, 1),    /* stage 3 */
      make_desc(20, 1, 28, 28, 16, 3, 3, 1, 1, 1, 1, 1, 1),  /* ResNet-20 conv1 */
      make_desc(9, 1, 28, 28, 6, 5, 5, 1, 1, 2, 2, 2, 2),    /* LeNet conv1 */
      make_desc(18, 6, 14, 14, 16, 5, 5, 1, 1, 0, 0, 0, 0),  /* LeNet conv2 */
  };
  for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) check_conv(&fixed[i]);
  tgroup_end();

  tgroup_begin("spconv edge shapes (1x1, asymmetric pads, pads >= kernel, stride 3, N=1)");
  conv_desc edge[] = {
      make_desc(1, 3, 5, 7, 5, 1, 1, 1, 1, 0, 0, 0, 0),  make_desc(2, 5, 6, 9, 7, 1, 1, 1, 1, 2, 1, 0, 3),
      make_desc(19, 4, 9, 8, 3, 3, 2, 2, 3, 0, 2, 1, 0), make_desc(1, 2, 1, 1, 3, 3, 3, 1, 1, 1, 1, 1, 1),
      make_desc(4, 3, 11, 10, 2, 5, 5, 3, 3, 2, 0, 1, 2), make_desc(16, 7, 3, 30, 9, 2, 4, 1, 2, 0, 1, 1, 2),
      make_desc(2, 3, 4, 4, 4, 1, 1, 2, 2, 0, 0, 0, 0),  make_desc(3, 2, 5, 5, 2, 3, 3, 2, 1, 2, 2, 2, 2),
  };
  for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++) check_conv(&edge[i]);
  tgroup_end();

  tgroup_begin("spconv random shapes");
  for (int i = 0; i < 30; i++) {
    conv_desc d = random_desc();
    check_conv(&d);
  }
  tgroup_end();

}

static void part_nchw(void) {
  tgroup_begin("spconv NCHW-direct path: stride-1 and strided 1x1 shapes on every path (packed, NCHW AVX-512, NCHW plain C)");
  conv_desc nchw_fixed[] = {
      make_desc(17, 16, 28, 28, 16, 3, 3, 1, 1, 1, 1, 1, 1), /* ResNet-20 stage 1, N off 16 */
      make_desc(1, 32, 14, 14, 32, 3, 3, 1, 1, 1, 1, 1, 1),  /* stage 2, N = 1 */
      make_desc(3, 5, 13, 13, 7, 3, 3, 1, 1, 1, 1, 1, 1),    /* odd width 13 */
      make_desc(2, 3, 17, 17, 4, 5, 5, 1, 1, 2, 2, 2, 2),    /* 17, 5x5 pad 2 */
      make_desc(5, 4, 9, 31, 3, 1, 1, 1, 1, 0, 0, 0, 0),     /* 31, 1x1 */
      make_desc(2, 6, 7, 33, 5, 3, 5, 1, 1, 0, 2, 1, 0),     /* 31 wide output, asymmetric pads */
      make_desc(4, 6, 3, 30, 2, 5, 3, 1, 1, 2, 0, 2, 0),     /* every row a border row (H=3, R=5) */
      make_desc(2, 3, 5, 12, 3, 2, 4, 1, 1, 0, 1, 1, 2),     /* even kernel, Q = 12 */
      make_desc(1, 2, 40, 50, 3, 3, 3, 1, 1, 1, 1, 1, 1),    /* 50 wide: two column chunks, 40 rows */
      make_desc(3, 2, 6, 6, 3, 3, 3, 1, 1, 2, 2, 2, 2),      /* pads >= kernel-1, Q = 8 (forced path) */
      /* strided 1x1 without padding (NCHW-direct on the subsampled grid) */
      make_desc(17, 16, 28, 28, 32, 1, 1, 2, 2, 0, 0, 0, 0), /* ResNet-20 shortcut 28x28, N off 16 */
      make_desc(1, 32, 14, 14, 64, 1, 1, 2, 2, 0, 0, 0, 0),  /* shortcut 14x14, N = 1 */
      make_desc(16, 16, 28, 28, 32, 1, 1, 2, 2, 0, 0, 0, 0), /* shortcut 28x28, N = 16 */
      make_desc(3, 5, 13, 11, 7, 1, 1, 2, 2, 0, 0, 0, 0),    /* odd H and W */
      make_desc(2, 4, 27, 9, 3, 1, 1, 2, 2, 0, 0, 0, 0),     /* odd, tall */
      make_desc(2, 3, 6, 70, 4, 1, 1, 2, 2, 0, 0, 0, 0),     /* Q = 35: two column chunks */
      make_desc(17, 6, 15, 67, 5, 1, 1, 2, 2, 0, 0, 0, 0),   /* Q = 34, odd W */
      make_desc(3, 3, 10, 11, 4, 1, 1, 3, 3, 0, 0, 0, 0),    /* stride 3 */
      make_desc(2, 3, 7, 35, 5, 1, 1, 1, 2, 0, 0, 0, 0),     /* stride 1x2 */
      make_desc(2, 3, 9, 8, 5, 1, 1, 2, 3, 0, 0, 0, 0),      /* stride 2x3 */
  };
  for (size_t i = 0; i < sizeof nchw_fixed / sizeof nchw_fixed[0]; i++) check_conv_all_paths(&nchw_fixed[i]);
  for (int i = 0; i < 25; i++) {
    conv_desc d = random_nchw_desc();
    check_conv_path(&d, 1, 0);
    check_conv_path(&d, 1, 1);
  }
  check_path_choice();
  tgroup_end();

}

static void part_strided(void) {
  tgroup_begin("spconv NCHW-direct strided (polyphase) path on every path (packed, NCHW AVX-512, NCHW plain C)");
  conv_desc strided[] = {
      make_desc(17, 16, 28, 28, 32, 3, 3, 2, 2, 1, 1, 1, 1), /* ResNet-20 stage 2 entry, N off 16 */
      make_desc(1, 32, 14, 14, 64, 3, 3, 2, 2, 1, 1, 1, 1),  /* stage 3 entry, N = 1 */
      make_desc(16, 32, 14, 14, 64, 3, 3, 2, 2, 1, 1, 1, 1), /* stage 3 entry, N = 16 */
      make_desc(3, 5, 13, 13, 7, 3, 3, 2, 2, 1, 1, 1, 1),    /* odd H and W */
      make_desc(2, 4, 27, 9, 3, 3, 3, 2, 2, 1, 1, 1, 1),     /* odd, tall */
      make_desc(2, 3, 15, 70, 4, 3, 3, 2, 2, 1, 1, 1, 1),    /* Q = 35: several vectors a row */
      make_desc(3, 3, 12, 12, 5, 2, 2, 2, 2, 0, 0, 0, 0),    /* even kernel */
      make_desc(2, 4, 11, 10, 3, 4, 4, 2, 2, 1, 2, 2, 1),    /* even kernel, asymmetric pads */
      make_desc(2, 3, 17, 17, 4, 5, 5, 2, 2, 2, 2, 2, 2),    /* 5x5 pad 2 */
      make_desc(2, 3, 9, 12, 4, 3, 5, 2, 2, 0, 2, 1, 0),     /* non-square, asymmetric pads */
      make_desc(3, 3, 10, 11, 4, 3, 3, 3, 3, 1, 1, 1, 1),    /* stride 3 */
      make_desc(2, 3, 9, 16, 5, 3, 3, 2, 1, 1, 1, 1, 1),     /* stride 2x1 */
      make_desc(2, 3, 9, 16, 5, 3, 3, 1, 2, 1, 1, 1, 1),     /* stride 1x2 */
      make_desc(3, 2, 6, 6, 3, 3, 3, 2, 2, 2, 2, 2, 2),      /* pads >= kernel-1 */
      make_desc(2, 3, 8, 8, 4, 1, 1, 2, 2, 1, 1, 0, 0),      /* padded 1x1 stride 2 */
      make_desc(2, 2, 3, 3, 3, 3, 3, 2, 2, 1, 1, 1, 1),      /* 2x2 output */
  };
  for (size_t i = 0; i < sizeof strided / sizeof strided[0]; i++) check_conv_all_paths(&strided[i]);
  for (int i = 0; i < 25; i++) {
    conv_desc d = random_strided_desc();
    check_conv_all_paths(&d);
  }
  tgroup_end();

}

static void part_kernel(void) {
  tgroup_begin("spconv whole-kernel pattern (structured channel: each 3x3 kernel kept or dropped whole) at 0/30/100%, every path");
  use_kernel_pattern(1);
  conv_desc kern[] = {
      make_desc(17, 16, 28, 28, 16, 3, 3, 1, 1, 1, 1, 1, 1), /* ResNet-20 stage 1, N off 16 */
      make_desc(19, 32, 14, 14, 32, 3, 3, 1, 1, 1, 1, 1, 1), /* stage 2 */
      make_desc(5, 64, 7, 7, 64, 3, 3, 1, 1, 1, 1, 1, 1),    /* stage 3 */
      make_desc(3, 16, 28, 28, 32, 3, 3, 2, 2, 1, 1, 1, 1),  /* stage 2 entry (strided: polyphase) */
      make_desc(2, 5, 13, 31, 7, 3, 5, 1, 1, 1, 2, 1, 2),    /* odd sizes, 3x5 kernels */
  };
  for (size_t i = 0; i < sizeof kern / sizeof kern[0]; i++) {
    check_conv(&kern[i]);
    check_conv_all_paths(&kern[i]);
  }
  /* the whole-kernel tiles against the tap lists: ResNet-20's stages (tiles 1x14 / 1x14 / 2x7), odd
   * widths (tail tiles 1x1..1x13), planes of 1-3 columns (4x1..4x3 tiles), N off 16 */
  conv_desc k9s[] = {
      make_desc(17, 16, 28, 28, 16, 3, 3, 1, 1, 1, 1, 1, 1), make_desc(19, 32, 14, 14, 32, 3, 3, 1, 1, 1, 1, 1, 1),
      make_desc(5, 64, 7, 7, 64, 3, 3, 1, 1, 1, 1, 1, 1),    make_desc(3, 33, 11, 31, 40, 3, 3, 1, 1, 1, 1, 1, 1),
      make_desc(2, 40, 9, 3, 35, 3, 3, 1, 1, 1, 1, 1, 1),    make_desc(2, 36, 6, 5, 33, 3, 3, 1, 1, 0, 2, 2, 0),
      make_desc(1, 32, 5, 1, 32, 3, 3, 1, 1, 1, 1, 1, 1),
  };
  for (size_t i = 0; i < sizeof k9s / sizeof k9s[0]; i++) check_k9_same_bits(&k9s[i]);
  use_kernel_pattern(0);
  tgroup_end();

}

static void part_gemm(void) {
  tgroup_begin("spgemm shapes (LeNet/MLP fc layers, odd sizes, M=1)");
  gemm_desc gs[] = {{128, 120, 400}, {128, 84, 120}, {128, 10, 84}, {33, 100, 784}, {1, 7, 5},
                    {17, 16, 16},    {250, 3, 1},    {5, 1, 33},    {16, 33, 17},  {40, 64, 10}};
  for (size_t i = 0; i < sizeof gs / sizeof gs[0]; i++) check_gemm(&gs[i]);
  for (int i = 0; i < 10; i++) {
    gemm_desc d = {trng_int(1, 70), trng_int(1, 70), trng_int(1, 70)};
    check_gemm(&d);
  }
  tgroup_end();

  tgroup_begin("spconv/spgemm reject unsupported descriptors");
  check_rejects();
  tgroup_end();
}

int main(int argc, char **argv) {
  static const tpart parts[] = {{"shapes", part_shapes},   {"nchw", part_nchw}, {"strided", part_strided},
                                {"kernel", part_kernel}, {"gemm", part_gemm}};
  return trun(argc, argv, 20260514, parts, (int)(sizeof parts / sizeof parts[0]));
}
