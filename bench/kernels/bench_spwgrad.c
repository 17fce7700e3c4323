/* bench_spwgrad: the SWAT sparse weight gradient (spwgrad.h) against the dense weight gradient on
 * the layers of the shipped models (LeNet-5 and ResNet-20 for 1x28x28 Fashion-MNIST), batch 128.
 *
 *   bench_spwgrad [-t THREADS] [-r REPS] [--quick] [--best] [lenet|resnet ...]
 *
 * Activations are realistic X_s: ReLU of normals with the exact Top-K threshold of the density
 * (50/20/10/5%); dY is normal. Per layer and density it prints the dense conv_plan_bwd_weight /
 * gemm_plan_bwd_weight time (AUTO), topk_apply (the dense masking that spact_pack replaces),
 * spact_pack, the sparse kernel, the speedup of the kernel alone, with the pack added, and of
 * (pack + sparse) over (topk_apply + dense); effective GFLOP/s counts only the multiply-adds of
 * kept entries with taps that land inside the output, and % is of 413 GFLOP/s (2 Zen 5 cores).
 * Times are medians after a warm-up (--best: minima, for a machine shared with other jobs, where a
 * descheduled thread turns a median into a scheduler quantum). db is not computed on either side. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/kernels/bench_util.h"
#include "runtime/kernels/kernels.h"

static int g_threads = 2, g_reps = 21, g_best = 0;

static double peak(void) { return bench_peak(g_threads); }

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static float normal(void) { return bench_normal(&g_rng); }

static float *normals(size_t n, int relu) {
  float *p = bench_alloc(n * sizeof(float));
  for (size_t i = 0; i < n; i++) {
    float v = normal();
    p[i] = relu && v < 0 ? 0.0f : v;
  }
  return p;
}

typedef void (*bench_fn)(void *ctx);
static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}
/* Median (or with --best the minimum) of g_reps timed runs after two warm-up runs. */
static double time_median(bench_fn fn, void *ctx) {
  double t[256];
  int n = g_reps > 256 ? 256 : g_reps;
  fn(ctx);
  fn(ctx);
  for (int i = 0; i < n; i++) {
    double t0 = omp_get_wtime();
    fn(ctx);
    t[i] = omp_get_wtime() - t0;
  }
  qsort(t, (size_t)n, sizeof t[0], cmp_d);
  return g_best ? t[0] : t[n / 2];
}

typedef struct run_ctx {
  conv_plan *cp;
  spwgrad_plan *sp;
  gemm_plan *gp;
  spwgrad_gemm_plan *sgp;
  const float *x, *dy;
  float *xs, *dw;
  void *buf, *scratch;
  int N, C, H, W;
  float thr;
  int64_t cap;
  unsigned classes; /* how X_s is packed: as the layer packs it for this conv (spwgrad_conv_classes) */
} run_ctx;

static void run_dense_conv(void *c) {
  run_ctx *r = c;
  conv_plan_bwd_weight(r->cp, r->xs, r->dy, r->dw, NULL, r->scratch);
}
static void run_dense_gemm(void *c) {
  run_ctx *r = c;
  gemm_plan_bwd_weight(r->gp, r->xs, r->dy, r->dw, NULL, r->scratch);
}
static void run_apply(void *c) {
  run_ctx *r = c;
  topk_apply(r->x, r->xs, (int64_t)r->N * r->C * r->H * r->W, r->thr, g_threads);
}
static void run_pack(void *c) {
  run_ctx *r = c;
  if (spact_pack(r->x, r->N, r->C, r->H, r->W, r->thr, r->classes, r->buf, r->cap, g_threads, r->scratch) < 0) {
    fprintf(stderr, "bench_spwgrad: pack overflow\n");
    exit(1);
  }
}
static void run_sparse_conv(void *c) {
  run_ctx *r = c;
  spwgrad_conv(r->sp, r->buf, r->dy, r->dw, NULL, r->scratch);
}
static void run_sparse_gemm(void *c) {
  run_ctx *r = c;
  spwgrad_gemm(r->sgp, r->buf, r->dy, r->dw, NULL, r->scratch);
}

/* Multiply-adds of the kept entries of xs whose taps land inside the output (x2 = FLOPs / K). */
static double conv_nz_flops(const conv_desc *d, const float *xs) {
  int *taps = bench_alloc(sizeof(int) * (size_t)d->H * d->W);
  for (int h = 0; h < d->H; h++)
    for (int w = 0; w < d->W; w++) {
      int n = 0;
      for (int r = 0; r < d->R; r++)
        for (int s = 0; s < d->S; s++) {
          int t = h + d->pad_t - r * d->dil_h, u = w + d->pad_l - s * d->dil_w;
          if (t < 0 || u < 0 || t % d->stride_h || u % d->stride_w) continue;
          if (t / d->stride_h < d->P && u / d->stride_w < d->Q) n++;
        }
      taps[h * d->W + w] = n;
    }
  double f = 0;
  size_t HW = (size_t)d->H * d->W, n = (size_t)d->N * d->C * HW;
  for (size_t i = 0; i < n; i++)
    if (xs[i] != 0.0f) f += taps[i % HW];
  free(taps);
  return 2.0 * d->K * f;
}

static const double g_dens[] = {0.5, 0.2, 0.1, 0.05};

static void print_head(void) {
  printf("%-26s %4s %8s %7s %7s %8s %7s %7s %7s %7s %6s\n", "layer", "dens", "dense ms", "apply", "pack",
         "sparse", "x", "x+pack", "x repl", "GF/s", "%peak");
}

/* Top-K threshold keeping density d of x (exact selection). */
static float threshold(const float *x, int64_t n, double d) {
  void *s = bench_alloc(topk_scratch(g_threads));
  int64_t k = (int64_t)ceil(d * (double)n);
  float t = topk_threshold(x, n, k < 1 ? 1 : k, s, g_threads);
  free(s);
  return t;
}

static void bench_conv(const char *name, conv_desc d) {
  sw_err e;
  sw_err_clear(&e);
  SW_ASSERT(conv_desc_resolve(&d, &e) == SW_OK);
  conv_plan cp;
  spwgrad_plan sp;
  SW_ASSERT(conv_plan_init(&cp, &d, g_threads, CONV_IMPL_AUTO, &e) == SW_OK);
  SW_ASSERT(spwgrad_plan_init(&sp, &d, g_threads, &e) == SW_OK);
  size_t nx = (size_t)d.N * d.C * d.H * d.W, ny = (size_t)d.N * d.K * d.P * d.Q;
  size_t ss = conv_plan_scratch(&cp, CONV_BWD_WEIGHT), s2 = spwgrad_plan_scratch(&sp);
  size_t s3 = spact_pack_scratch(d.C, d.H, d.W, g_threads); /* the pack, timed on its own */
  if (s3 > s2) s2 = s3;
  run_ctx r = {&cp, &sp, NULL, NULL, normals(nx, 1), normals(ny, 0), bench_alloc(nx * 4),
               bench_alloc((size_t)d.K * d.C * d.R * d.S * 4), NULL, bench_alloc(ss > s2 ? ss : s2), d.N, d.C, d.H, d.W,
               0, 0, spwgrad_conv_classes(&d)};
  char desc[160];
  for (int i = 0; i < 4; i++) {
    r.thr = threshold(r.x, (int64_t)nx, g_dens[i]);
    r.cap = (int64_t)nx;
    free(r.buf);
    r.buf = bench_alloc(spact_bytes(d.N, d.C, d.H, d.W, r.cap));
    double ta = time_median(run_apply, &r), tp = time_median(run_pack, &r);
    double td = time_median(run_dense_conv, &r), tsp = time_median(run_sparse_conv, &r);
    double f = conv_nz_flops(&d, r.xs), dens = (double)spact_nnz(r.buf) / (double)nx;
    printf("%-26s %4.0f %8.3f %7.3f %7.3f %8.3f %7.2f %7.2f %7.2f %7.1f %5.1f%%\n", name, 100 * dens, 1e3 * td,
           1e3 * ta, 1e3 * tp, 1e3 * tsp, td / tsp, td / (tsp + tp), (td + ta) / (tsp + tp), f / tsp * 1e-9,
           100 * f / tsp * 1e-9 / peak());
  }
  printf("  %s | dense: %s | crossover %.2f\n", spwgrad_plan_describe(&sp, desc, sizeof desc),
         conv_plan_describe(&cp, desc + 80, 80), spwgrad_plan_crossover(&sp));
  free((void *)r.x), free((void *)r.dy), free(r.xs), free(r.dw), free(r.buf), free(r.scratch);
  conv_plan_free(&cp);
  spwgrad_plan_free(&sp);
}

static void bench_gemm(const char *name, int M, int N, int K) {
  gemm_desc d = {M, N, K};
  gemm_plan gp;
  spwgrad_gemm_plan sgp;
  SW_ASSERT(gemm_plan_init(&gp, &d, g_threads, GEMM_IMPL_AUTO, NULL) == SW_OK);
  SW_ASSERT(spwgrad_gemm_plan_init(&sgp, &d, g_threads, NULL) == SW_OK);
  size_t nx = (size_t)M * K, ss = gemm_plan_scratch(&gp, GEMM_BWD_WEIGHT), s2 = spwgrad_gemm_plan_scratch(&sgp);
  run_ctx r = {NULL, NULL, &gp, &sgp, normals(nx, 1), normals((size_t)M * N, 0), bench_alloc(nx * 4),
               bench_alloc((size_t)N * K * 4), NULL, bench_alloc(ss > s2 ? ss : s2), M, K, 1, 1, 0, 0, 0};
  for (int i = 0; i < 4; i++) {
    r.thr = threshold(r.x, (int64_t)nx, g_dens[i]);
    r.cap = (int64_t)nx;
    free(r.buf);
    r.buf = bench_alloc(spact_bytes(M, K, 1, 1, r.cap));
    double ta = time_median(run_apply, &r), tp = time_median(run_pack, &r);
    double td = time_median(run_dense_gemm, &r), tsp = time_median(run_sparse_gemm, &r);
    double f = 2.0 * N * (double)spact_nnz(r.buf), dens = (double)spact_nnz(r.buf) / (double)nx;
    printf("%-26s %4.0f %8.3f %7.3f %7.3f %8.3f %7.2f %7.2f %7.2f %7.1f %5.1f%%\n", name, 100 * dens, 1e3 * td,
           1e3 * ta, 1e3 * tp, 1e3 * tsp, td / tsp, td / (tsp + tp), (td + ta) / (tsp + tp), f / tsp * 1e-9,
           100 * f / tsp * 1e-9 / peak());
  }
  printf("  crossover %.2f\n", spwgrad_gemm_plan_crossover(&sgp));
  free((void *)r.x), free((void *)r.dy), free(r.xs), free(r.dw), free(r.buf), free(r.scratch);
  gemm_plan_free(&gp);
  spwgrad_gemm_plan_free(&sgp);
}

static conv_desc cd(int C, int HW, int K, int R, int st, int pad) {
  conv_desc d = {128, C, HW, HW, K, R, R, 0, 0, st, st, pad, pad, pad, pad, 1, 1, 1};
  return d;
}

int main(int argc, char **argv) {
  int lenet = 0, resnet = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-t") && i + 1 < argc) g_threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "-r") && i + 1 < argc) g_reps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--quick")) g_reps = 5;
    else if (!strcmp(argv[i], "--best")) g_best = 1;
    else if (!strcmp(argv[i], "lenet")) lenet = 1;
    else if (!strcmp(argv[i], "resnet")) resnet = 1;
    else {
      fprintf(stderr, "bench_spwgrad: unknown argument '%s'\nusage: bench_spwgrad [-t THREADS] [-r REPS] "
                      "[--quick] [--best] [lenet|resnet ...]\n", argv[i]);
      return 2;
    }
  }
  if (g_threads < 1) g_threads = 1;
  if (g_reps < 1) g_reps = 1;
  if (!lenet && !resnet) lenet = resnet = 1;
  printf("bench_spwgrad: batch 128, %d thread(s), %s of %d runs; x = dense/sparse, x+pack = "
         "dense/(sparse+pack), x repl = (dense+apply)/(sparse+pack)\n", g_threads, g_best ? "minima" : "medians", g_reps);
  print_head();
  if (lenet) {
    bench_conv("lenet conv2 6-16 5x5 14", cd(6, 14, 16, 5, 1, 0));
    bench_gemm("lenet fc1 400-120", 128, 120, 400);
    bench_gemm("lenet fc2 120-84", 128, 84, 120);
    bench_gemm("lenet fc3 84-10", 128, 10, 84);
  }
  if (resnet) {
    bench_conv("resnet 16-16 3x3 28", cd(16, 28, 16, 3, 1, 1));
    bench_conv("resnet 16-32 3x3 s2 28", cd(16, 28, 32, 3, 2, 1));
    bench_conv("resnet short 16-32 1x1 s2", cd(16, 28, 32, 1, 2, 0));
    bench_conv("resnet 32-32 3x3 14", cd(32, 14, 32, 3, 1, 1));
    bench_conv("resnet 32-64 3x3 s2 14", cd(32, 14, 64, 3, 2, 1));
    bench_conv("resnet short 32-64 1x1 s2", cd(32, 14, 64, 1, 2, 0));
    bench_conv("resnet 64-64 3x3 7", cd(64, 7, 64, 3, 1, 1));
    bench_gemm("resnet fc 64-10", 128, 10, 64);
  }
  return 0;
}
