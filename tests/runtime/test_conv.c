/* Conv kernels: every plan implementation against the reference on random shapes (strides, pads,
 * dilation, groups, depthwise, odd sizes, N=1, channel counts that are not block multiples), finite-
 * difference checks of the reference backward passes, and run-to-run determinism.
 *
 * Tolerances: fast vs reference, max|got-ref| <= 1e-5 * max(max|ref|, 1) (fp32 sums of at most a few
 * thousand products against a reference that sums in double); finite differences (conv is linear,
 * so only rounding matters): |num-ana| <= 1e-4 + 2e-3*|ana|. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "runtime/kernels/conv.h"
#include "runtime/kernels/conv_internal.h"
#include "runtime/kernels/kern_internal.h"

#define TOL_FAST 1e-5

static size_t xsize(const conv_desc *d) { return (size_t)d->N * d->C * d->H * d->W; }
static size_t ysize(const conv_desc *d) { return (size_t)d->N * d->K * d->P * d->Q; }
static size_t wsize(const conv_desc *d) { return (size_t)d->K * (d->C / d->groups) * d->R * d->S; }

static void desc_str(const conv_desc *d, char *buf, size_t n) {
  snprintf(buf, n, "N%d C%d %dx%d K%d %dx%d s%d,%d p%d,%d,%d,%d d%d,%d g%d", d->N, d->C, d->H, d->W, d->K, d->R,
           d->S, d->stride_h, d->stride_w, d->pad_t, d->pad_l, d->pad_b, d->pad_r, d->dil_h, d->dil_w, d->groups);
}

/* A random valid descriptor; shape classes chosen to hit every code path. */
static conv_desc random_desc(void) {
  for (;;) {
    conv_desc d;
    memset(&d, 0, sizeof d);
    int kind = trng_int(0, 9);
    /* C/groups < 16 takes the im2col backward path, >= 16 the blocked one: cover both evenly. */
    int Cg = trng_int(0, 1) ? trng_int(1, 15) : trng_int(16, 24), Kg = trng_int(1, 24);
    if (trng_int(0, 5) == 0) Cg = trng_int(60, 72);
    if (trng_int(0, 5) == 0) Kg = trng_int(60, 72);
    d.groups = 1;
    if (kind >= 6 && kind <= 7) d.groups = trng_int(2, 3);
    if (kind >= 8) { /* depthwise, channel multiplier 1..2 */
      Cg = 1;
      Kg = trng_int(1, 2);
      d.groups = trng_int(1, 12);
    }
    d.N = trng_int(1, 3);
    d.C = Cg * d.groups;
    d.K = Kg * d.groups;
    d.H = trng_int(1, 14);
    d.W = trng_int(1, 14);
    if (trng_int(0, 4) == 0) d.W = trng_int(30, 40); /* wide rows: no row merging */
    d.R = trng_int(1, 5);
    d.S = trng_int(1, 5);
    d.stride_h = trng_int(1, 3);
    d.stride_w = trng_int(0, 2) ? d.stride_h : trng_int(1, 3);
    d.dil_h = trng_int(1, 4) == 1 ? 2 : 1;
    d.dil_w = trng_int(1, 4) == 1 ? 2 : 1;
    d.pad_t = trng_int(0, 3);
    d.pad_l = trng_int(0, 3);
    d.pad_b = trng_int(0, 3);
    d.pad_r = trng_int(0, 3);
    if (conv_desc_resolve(&d, NULL) == SW_OK) return d;
  }
}

static conv_desc make_desc(int N, int C, int H, int W, int K, int R, int S, int sh, int sw, int pt, int pl, int pb,
                           int pr, int dh, int dw, int g) {
  conv_desc d = {N, C, H, W, K, R, S, 0, 0, sh, sw, pt, pl, pb, pr, dh, dw, g};
  SW_ASSERT(conv_desc_resolve(&d, NULL) == SW_OK);
  return d;
}

typedef struct conv_case {
  conv_desc d;
  float *x, *w, *b, *dy;
  float *y_ref, *dx_ref, *dw_ref, *db_ref;
} conv_case;

static void case_init(conv_case *c, const conv_desc *d) {
  c->d = *d;
  c->x = talloc(sizeof(float) * xsize(d));
  c->w = talloc(sizeof(float) * wsize(d));
  c->b = talloc(sizeof(float) * d->K);
  c->dy = talloc(sizeof(float) * ysize(d));
  trng_fill(c->x, xsize(d), -1, 1);
  trng_fill(c->w, wsize(d), -1, 1);
  trng_fill(c->b, d->K, -1, 1);
  trng_fill(c->dy, ysize(d), -1, 1);
  c->y_ref = talloc(sizeof(float) * ysize(d));
  c->dx_ref = talloc(sizeof(float) * xsize(d));
  c->dw_ref = talloc(sizeof(float) * wsize(d));
  c->db_ref = talloc(sizeof(float) * d->K);
  conv_fwd_ref(d, c->x, c->w, c->b, c->y_ref);
  conv_bwd_data_ref(d, c->dy, c->w, c->dx_ref);
  conv_bwd_weight_ref(d, c->x, c->dy, c->dw_ref, c->db_ref);
}

static void case_free(conv_case *c) {
  free(c->x), free(c->w), free(c->b), free(c->dy);
  free(c->y_ref), free(c->dx_ref), free(c->dw_ref), free(c->db_ref);
}

/* Runs the three passes of one plan (scratch and outputs poisoned with NaN) against the reference. */
static void check_plan(const conv_case *c, conv_impl impl, int nthreads) {
  const conv_desc *d = &c->d;
  char ds[160], what[512], pd[160];
  desc_str(d, ds, sizeof ds);
  conv_plan p;
  sw_err e;
  sw_err_clear(&e);
  if (conv_plan_init(&p, d, nthreads, impl, &e)) {
    tfail("%s: plan init failed: %s", ds, e.msg);
    return;
  }
  conv_plan_describe(&p, pd, sizeof pd);
  size_t ss = 0;
  for (int i = 0; i < CONV_NPASS; i++)
    if (conv_plan_scratch(&p, i) > ss) ss = conv_plan_scratch(&p, i);
  float *scratch = talloc_nan(ss / sizeof(float) + 1);
  float *y = talloc_nan(ysize(d)), *dx = talloc_nan(xsize(d)), *dw = talloc_nan(wsize(d)), *db = talloc_nan(d->K);
  conv_plan_fwd(&p, c->x, c->w, c->b, y, scratch);
  snprintf(what, sizeof what, "fwd %s [%s] T=%d", ds, pd, nthreads);
  tcheck_close(what, y, c->y_ref, ysize(d), TOL_FAST);
  for (size_t i = 0; i < ss / sizeof(float); i++) scratch[i] = NAN;
  conv_plan_bwd_data(&p, c->dy, c->w, dx, scratch);
  snprintf(what, sizeof what, "bwd-data %s [%s] T=%d", ds, pd, nthreads);
  tcheck_close(what, dx, c->dx_ref, xsize(d), TOL_FAST);
  for (size_t i = 0; i < ss / sizeof(float); i++) scratch[i] = NAN;
  conv_plan_bwd_weight(&p, c->x, c->dy, dw, db, scratch);
  snprintf(what, sizeof what, "bwd-weight %s [%s] T=%d", ds, pd, nthreads);
  tcheck_close(what, dw, c->dw_ref, wsize(d), TOL_FAST);
  snprintf(what, sizeof what, "bias-grad %s [%s] T=%d", ds, pd, nthreads);
  tcheck_close(what, db, c->db_ref, d->K, TOL_FAST);
  /* Without bias: forward must equal the reference minus nothing. */
  conv_plan_fwd(&p, c->x, c->w, NULL, y, scratch);
  for (size_t i = 0; i < ysize(d); i++) y[i] += c->b[(i / ((size_t)d->P * d->Q)) % d->K];
  snprintf(what, sizeof what, "fwd-nobias %s [%s] T=%d", ds, pd, nthreads);
  tcheck_close(what, y, c->y_ref, ysize(d), 2 * TOL_FAST);
  free(scratch), free(y), free(dx), free(dw), free(db);
  conv_plan_free(&p);
}

/* The direct forward's AVX-512 register tiles give the bits of its plain C loops. */
static void check_direct_simd(const conv_case *c, int nthreads) {
  const conv_desc *d = &c->d;
  conv_plan p;
  sw_err e;
  sw_err_clear(&e);
  if (conv_plan_init(&p, d, nthreads, CONV_IMPL_DIRECT, &e)) return;
  float *scratch = talloc_nan(conv_plan_scratch(&p, CONV_FWD) / sizeof(float) + 1);
  float *y0 = talloc_nan(ysize(d)), *y1 = talloc_nan(ysize(d));
  conv_direct_use_portable(1);
  conv_plan_fwd(&p, c->x, c->w, c->b, y0, scratch);
  conv_direct_use_portable(0);
  conv_plan_fwd(&p, c->x, c->w, c->b, y1, scratch);
  char ds[160], what[256];
  desc_str(d, ds, sizeof ds);
  snprintf(what, sizeof what, "direct fwd SIMD == plain C %s T=%d", ds, nthreads);
  tcheck_same(what, y1, y0, sizeof(float) * ysize(d));
  free(scratch), free(y0), free(y1);
  conv_plan_free(&p);
}

static void check_case(const conv_desc *d) {
  conv_case c;
  case_init(&c, d);
  int one_in = d->C / d->groups == 1;
  for (int t = 1; t <= 2; t++) {
    check_plan(&c, CONV_IMPL_BRGEMM, t);
    if (one_in) check_plan(&c, CONV_IMPL_DIRECT, t);
    if (one_in) check_direct_simd(&c, t);
  }
  check_plan(&c, CONV_IMPL_REF, 1);
  case_free(&c);
}

/* Finite differences on the reference passes. */
typedef struct fd_ctx {
  const conv_desc *d;
  float *x, *w, *b, *y;
  const float *g;
} fd_ctx;

static double fd_loss(void *ctx) {
  fd_ctx *f = ctx;
  conv_fwd_ref(f->d, f->x, f->w, f->b, f->y);
  return tdot(f->y, f->g, ysize(f->d));
}

static void check_fd(const conv_desc *d) {
  conv_case c;
  case_init(&c, d);
  char ds[160], what[512];
  desc_str(d, ds, sizeof ds);
  float *y = talloc(sizeof(float) * ysize(d));
  fd_ctx f = {d, c.x, c.w, c.b, y, c.dy};
  snprintf(what, sizeof what, "dx %s", ds);
  tcheck_grad(what, fd_loss, &f, c.x, xsize(d), c.dx_ref, 0.1, 2e-3, 1e-4, 40);
  snprintf(what, sizeof what, "dw %s", ds);
  tcheck_grad(what, fd_loss, &f, c.w, wsize(d), c.dw_ref, 0.1, 2e-3, 1e-4, 40);
  snprintf(what, sizeof what, "db %s", ds);
  tcheck_grad(what, fd_loss, &f, c.b, d->K, c.db_ref, 0.1, 2e-3, 1e-4, 40);
  free(y);
  case_free(&c);
}

/* Two runs of the same plan give bit-identical results. */
static void check_determinism(const conv_desc *d, int nthreads) {
  conv_case c;
  case_init(&c, d);
  conv_plan p;
  SW_ASSERT(conv_plan_init(&p, d, nthreads, CONV_IMPL_AUTO, NULL) == SW_OK);
  size_t ss = 0;
  for (int i = 0; i < CONV_NPASS; i++)
    if (conv_plan_scratch(&p, i) > ss) ss = conv_plan_scratch(&p, i);
  float *scratch = talloc(ss + 64);
  float *out[2][4];
  for (int run = 0; run < 2; run++) {
    out[run][0] = talloc(sizeof(float) * ysize(d));
    out[run][1] = talloc(sizeof(float) * xsize(d));
    out[run][2] = talloc(sizeof(float) * wsize(d));
    out[run][3] = talloc(sizeof(float) * d->K);
    conv_plan_fwd(&p, c.x, c.w, c.b, out[run][0], scratch);
    conv_plan_bwd_data(&p, c.dy, c.w, out[run][1], scratch);
    conv_plan_bwd_weight(&p, c.x, c.dy, out[run][2], out[run][3], scratch);
  }
  char ds[160], what[512];
  desc_str(d, ds, sizeof ds);
  const char *names[4] = {"fwd", "bwd-data", "bwd-weight", "bias-grad"};
  size_t sizes[4] = {ysize(d), xsize(d), wsize(d), (size_t)d->K};
  for (int i = 0; i < 4; i++) {
    snprintf(what, sizeof what, "%s %s T=%d", names[i], ds, nthreads);
    tcheck_same(what, out[0][i], out[1][i], sizes[i] * sizeof(float));
    free(out[0][i]), free(out[1][i]);
  }
  free(scratch);
  conv_plan_free(&p);
  case_free(&c);
}

static void check_bad_desc(void) {
  conv_desc bad[] = {
      {1, 3, 8, 8, 4, 3, 3, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 2}, /* groups does not divide C */
      {1, 3, 2, 2, 4, 5, 5, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 1}, /* kernel larger than input */
      {1, 3, 8, 8, 4, 3, 3, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1, 1}, /* zero stride */
      {1, 3, 8, 8, 4, 3, 3, 9, 9, 1, 1, 0, 0, 0, 0, 1, 1, 1}, /* wrong output size */
      {1, 3, 8, 8, 4, 3, 3, 0, 0, 1, 1, -1, 0, 0, 0, 1, 1, 1}, /* negative pad */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    sw_err e;
    sw_err_clear(&e);
    conv_plan p;
    int rc = conv_plan_init(&p, &bad[i], 1, CONV_IMPL_AUTO, &e);
    if (rc != SW_EINPUT || !e.msg[0]) tfail("bad descriptor %zu accepted (rc %d)", i, rc);
    conv_plan_free(&p);
  }
  tcheck_same("bad descriptors rejected", "", "", 0);
  conv_desc dw = make_desc(1, 4, 5, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1);
  conv_plan p;
  if (conv_plan_init(&p, &dw, 1, CONV_IMPL_DIRECT, NULL) == SW_OK) tfail("direct kernel accepted C/groups=4");
  conv_plan_free(&p);
}

/* The tile transposes behind every layout transform: SIMD (when the CPU has it) vs plain C, with
 * partial tiles, column steps and bias; destination elements outside the tile must stay untouched. */
static void check_transposes(void) {
  float src[64 * 64], d1[64 * 64], d2[64 * 64], bias[16];
  trng_fill(src, 64 * 64, -1, 1);
  trng_fill(bias, 16, -1, 1);
  for (int it = 0; it < 300; it++) {
    int nload = trng_int(0, 16), nc = trng_int(1, 16), nstore = trng_int(nload > 0 ? nload : 1, 16);
    size_t scs = (size_t)trng_int(1, 3), dcs = (size_t)trng_int(1, 3), ss = (size_t)trng_int(48, 64), ds = 64;
    const float *b = trng_int(0, 1) ? bias : NULL;
    for (int i = 0; i < 64 * 64; i++) d1[i] = d2[i] = 7.0f;
    kern_transpose16_step(src, ss, scs, nload, d1, ds, dcs, nc, nstore, b);
    kern_transpose16_scalar(src, ss, scs, nload, d2, ds, dcs, nc, nstore, b);
    tcheck_same("transpose16_step vs scalar", d1, d2, sizeof d1);
    if (scs == 1 && dcs == 1) {
      for (int i = 0; i < 64 * 64; i++) d1[i] = 7.0f;
      kern_transpose16(src, ss, nload, d1, ds, nc, nstore, b);
      tcheck_same("transpose16 vs scalar", d1, d2, sizeof d1);
    }
  }
  /* one value by hand: dst[j*ds + i] = src[i*ss + j] */
  float s4[4] = {1, 2, 3, 4}, o4[4];
  kern_transpose16(s4, 2, 2, o4, 2, 2, 2, NULL);
  float want[4] = {1, 3, 2, 4};
  tcheck_close("transpose16 2x2 by hand", o4, want, 4, 0);
}

/* The fixed shapes, each hitting one code path (set by main; the checks index some of them). */
static conv_desc fixed[23];

static void set_fixed(void) {
  const conv_desc f[] = {
      make_desc(2, 3, 9, 9, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1),     /* merged rows, C=3 */
      make_desc(2, 16, 34, 33, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1),  /* wide rows, no merge */
      make_desc(3, 70, 6, 7, 130, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1),   /* 2 C blocks, 3 K blocks */
      make_desc(2, 16, 9, 9, 32, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1),    /* stride 2: scatter bwd-data */
      make_desc(2, 16, 8, 8, 32, 1, 1, 2, 2, 0, 0, 0, 0, 1, 1, 1),    /* 1x1 stride 2 shortcut */
      make_desc(1, 1, 12, 12, 6, 5, 5, 1, 1, 2, 2, 2, 2, 1, 1, 1),    /* LeNet conv1 (direct) */
      make_desc(2, 6, 10, 10, 16, 5, 5, 1, 1, 0, 0, 0, 0, 1, 1, 1),   /* LeNet conv2 */
      make_desc(2, 8, 11, 10, 8, 3, 3, 1, 1, 0, 2, 3, 1, 2, 2, 1),    /* asymmetric pads, dilation */
      make_desc(2, 8, 11, 10, 8, 3, 3, 1, 1, 5, 0, 4, 6, 1, 1, 1),    /* pads > kernel: negative gather pads */
      make_desc(2, 12, 7, 9, 12, 3, 3, 2, 1, 1, 1, 1, 1, 1, 1, 12),   /* depthwise, anisotropic stride */
      make_desc(3, 1, 28, 28, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1),   /* ResNet-20 stem on 28x28 (direct: 8 + 8 filters a pass, 3 vectors a tile, a partial last tile) */
      make_desc(2, 6, 19, 35, 30, 3, 5, 1, 1, 1, 2, 0, 3, 2, 1, 6),   /* 5 filters per group, dilated, 36-wide rows: one pass of 5, 4 vectors a tile */
      make_desc(2, 5, 9, 17, 10, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 5),    /* depthwise x2: 2 filters a pass, 8 vectors a tile */
      make_desc(3, 36, 40, 40, 36, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1),  /* several weight-gradient chunks */
      make_desc(2, 12, 6, 6, 18, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 3),    /* grouped */
      make_desc(1, 5, 1, 1, 7, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1),      /* 1x1 image */
      /* N >= 4*threads: whole images per thread, for every pass */
      make_desc(9, 17, 7, 9, 12, 1, 1, 2, 3, 0, 0, 0, 0, 1, 1, 1),    /* 1x1 strided: subsampled */
      make_desc(9, 18, 7, 7, 20, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1),    /* scatter bwd-data */
      make_desc(8, 40, 6, 6, 24, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 2),    /* gather bwd-data, grouped */
      make_desc(2, 20, 9, 8, 5, 1, 1, 3, 2, 0, 0, 0, 0, 1, 1, 1),     /* 1x1 strided, few images */
      /* im2col backward (C/groups < 16), per-image and batch-split */
      make_desc(9, 3, 12, 12, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1),   /* ResNet conv1 */
      make_desc(8, 12, 9, 9, 20, 5, 3, 2, 1, 2, 1, 0, 1, 1, 2, 2),    /* grouped, strided, dilated */
      make_desc(2, 7, 20, 17, 9, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1),    /* > 256 pixels: chunked GEMM */
  };
  _Static_assert(sizeof f == sizeof fixed, "fixed[] holds every fixed shape");
  memcpy(fixed, f, sizeof f);
}

static void part_fast(void) {
  tgroup_begin("layout tile transposes (SIMD vs C)");
  check_transposes();
  tgroup_end();

  tgroup_begin("conv fast vs ref: fixed shapes");
  for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) check_case(&fixed[i]);
  tgroup_end();

  tgroup_begin("conv fast vs ref: 120 random shapes");
  for (int i = 0; i < 120; i++) {
    conv_desc d = random_desc();
    check_case(&d);
  }
  tgroup_end();

  tgroup_begin("conv determinism (same threads, same bits)");
  check_determinism(&fixed[2], 2);
  check_determinism(&fixed[3], 2);
  check_determinism(&fixed[10], 2);
  check_determinism(&fixed[9], 2);
  check_determinism(&fixed[10], 1);
  check_determinism(&fixed[14], 2);
  check_determinism(&fixed[15], 2);
  check_determinism(&fixed[16], 2);
  check_determinism(&fixed[18], 2);
  check_determinism(&fixed[19], 2);
  tgroup_end();

  tgroup_begin("conv bad descriptors");
  check_bad_desc();
  tgroup_end();
}

static void part_fd(void) {
  tgroup_begin("conv finite differences (ref bwd vs ref fwd)");
  for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
    if (xsize(&fixed[i]) < 20000) check_fd(&fixed[i]);
  for (int i = 0; i < 20; i++) {
    conv_desc d = random_desc();
    check_fd(&d);
  }
  tgroup_end();
}

int main(int argc, char **argv) {
  static const tpart parts[] = {{"fast", part_fast}, {"fd", part_fd}};
  set_fixed();
  return trun(argc, argv, 1, parts, (int)(sizeof parts / sizeof parts[0]));
}
