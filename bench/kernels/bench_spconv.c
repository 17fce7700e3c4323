/* bench_spconv: sparse-weight Conv/Gemm (spconv.h) against the dense plans (AUTO) on every conv and
 * fc layer shape of the shipped LeNet-5 and ResNet-20 (Fashion-MNIST 1x28x28, batch 128), forward and
 * backward-data, at weight densities 50/20/10/5% (sparsity 50/80/90/95%; -d picks others).
 *
 *   bench_spconv [-t THREADS] [-n BATCH] [-r RUNS] [-d D1,D2,..] [-p 0,1,2] [-k] [NAME-SUBSTRING ...]
 *
 * -p picks the sparse paths timed (0: 16-image-packed "pk", 1: NCHW-direct "nchw"; default both; 2:
 * "pk-taps", 16-image-packed with whole-kernel patterns on the per-tap lists instead of the whole-kernel
 * tiles, for -k).
 * -k keeps or drops whole R x S conv kernels (each (output, input) channel pair with probability
 * density, all its taps kept), the pattern of structured-channel SWAT (--structured channel); by
 * default each weight is kept on its own (unstructured SWAT).
 * Dense and sparse runs alternate (the machine is shared: both see the same interference); times are
 * the medians of RUNS (default 21) runs each after two warm-ups; the "min" columns are the fastest
 * run of each (the least disturbed). "eff GF/s" counts only the
 * nonzero FLOPs (density * dense FLOPs) of the sparse pass; "%peak" is against 413 GFLOP/s for two
 * cores (213 per core). "xover" is spconv_plan_crossover's predicted break-even density. Convs are
 * timed on both sparse paths ("pk": 16-image-packed, "nchw": NCHW-direct polyphase; '*' = the path the
 * plan picks by itself at that density), the dense run and each path interleaved in one loop (same
 * dense times in their rows); xover is always the plan's own (both paths). */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/kernels/bench_util.h"
#include "runtime/kernels/spconv.h"

static int g_threads = 2, g_runs = 21, g_kernels = 0;

static double peak(void) { return bench_peak(g_threads); }

static uint64_t g_rng = 12345;
static double urand(void) { return bench_unit(&g_rng); }

static float *bfloats(size_t n) {
  float *p = bench_alloc(n * sizeof(float));
  for (size_t i = 0; i < n; i++) p[i] = (float)(urand() * 2.0 - 1.0);
  return p;
}

/* Copies w0 into w keeping each entry with probability density; returns the realised density. */
static double sparsify(const float *w0, float *w, size_t n, double density) {
  size_t nz = 0;
  for (size_t i = 0; i < n; i++) {
    w[i] = urand() < density ? w0[i] : 0.0f;
    nz += w[i] != 0.0f;
  }
  return (double)nz / (double)n;
}

/* Copies w0 into w keeping each run of rs consecutive weights (one conv kernel) with probability
 * density, dropping the others whole; returns the realised density. */
static double sparsify_kernels(const float *w0, float *w, size_t n, size_t rs, double density) {
  size_t nz = 0;
  for (size_t i = 0; i < n; i += rs) {
    int keep = urand() < density;
    for (size_t j = i; j < i + rs && j < n; j++) {
      w[j] = keep ? w0[j] : 0.0f;
      nz += w[j] != 0.0f;
    }
  }
  return (double)nz / (double)n;
}

typedef void (*bench_fn)(void *ctx);

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Dense and sparse runs interleaved (so both see the same load from other jobs on the shared
 * machine) after two warm-ups each; the medians and minima of g_runs runs of each. */
typedef struct pair_times {
  double dense_med, sparse_med, dense_min, sparse_min;
} pair_times;

static pair_times time_pair(bench_fn dense, bench_fn sparse, void *ctx) {
  double td[256], ts[256];
  int n = g_runs < 256 ? g_runs : 256;
  for (int i = 0; i < 2; i++) dense(ctx), sparse(ctx);
  for (int i = 0; i < n; i++) {
    double t0 = omp_get_wtime();
    dense(ctx);
    double t1 = omp_get_wtime();
    sparse(ctx);
    double t2 = omp_get_wtime();
    td[i] = t1 - t0;
    ts[i] = t2 - t1;
  }
  qsort(td, (size_t)n, sizeof td[0], cmp_double);
  qsort(ts, (size_t)n, sizeof ts[0], cmp_double);
  pair_times r = {td[n / 2], ts[n / 2], td[0], ts[0]};
  return r;
}

/* The dense run and each of np sparse paths interleaved (dense, path 0, path 1, ..., dense, ...: all see
 * the same load) after two warm-ups; medians and minima per path. setp(ctx, i) switches to path i. */
#define MAXP 4
static void time_multi(bench_fn dense, bench_fn sparse, void (*setp)(void *ctx, int i), int np, void *ctx,
                       pair_times *out) {
  static double td[256], ts[MAXP][256];
  int n = g_runs < 256 ? g_runs : 256;
  for (int i = 0; i < 2; i++) {
    dense(ctx);
    for (int k = 0; k < np; k++) setp(ctx, k), sparse(ctx);
  }
  for (int i = 0; i < n; i++) {
    double t0 = omp_get_wtime();
    dense(ctx);
    td[i] = omp_get_wtime() - t0;
    for (int k = 0; k < np; k++) {
      setp(ctx, k);
      double t1 = omp_get_wtime();
      sparse(ctx);
      ts[k][i] = omp_get_wtime() - t1;
    }
  }
  qsort(td, (size_t)n, sizeof td[0], cmp_double);
  for (int k = 0; k < np; k++) {
    qsort(ts[k], (size_t)n, sizeof ts[k][0], cmp_double);
    pair_times r = {td[n / 2], ts[k][n / 2], td[0], ts[k][0]};
    out[k] = r;
  }
}

static double densities[16] = {0.5, 0.2, 0.1, 0.05};
static int NDENS = 4;

typedef struct conv_ctx {
  conv_plan dense;
  spconv_plan sp;
  float *x, *w, *b, *y, *dy, *dx;
  void *scratch;
} conv_ctx;

static void conv_dense_fwd(void *c) {
  conv_ctx *b = c;
  conv_plan_fwd(&b->dense, b->x, b->w, b->b, b->y, b->scratch);
}
static void conv_dense_bwd(void *c) {
  conv_ctx *b = c;
  conv_plan_bwd_data(&b->dense, b->dy, b->w, b->dx, b->scratch);
}
static void conv_sparse_fwd(void *c) {
  conv_ctx *b = c;
  spconv_plan_fwd(&b->sp, b->x, b->w, b->b, b->y, b->scratch);
}
static void conv_sparse_bwd(void *c) {
  conv_ctx *b = c;
  spconv_plan_bwd_data(&b->sp, b->dy, b->w, b->dx, b->scratch);
}

/* Paths timed for convs with an NCHW-direct path (spconv_plan_set_path values) and their labels. */
static int g_paths[] = {0, 1, 2};
/* 2: 16-image-packed with whole-kernel patterns on the per-tap lists (spconv_use_whole_kernel_tiles(0)) */
static const char *const g_path_names[] = {"pk", "nchw", "pk-taps"};
static int NPATHS = 2;

static void conv_setp(void *c, int i) {
  spconv_use_whole_kernel_tiles(g_paths[i] != 2);
  spconv_plan_set_path(&((conv_ctx *)c)->sp, g_paths[i] == 2 ? 0 : g_paths[i]);
}

static void print_header(void) {
  printf("%-24s %-9s %5s | %9s %9s %8s %8s %6s | %8s %8s %8s %8s | %5s\n", "layer", "pass", "dens", "dense ms",
         "sparse ms", "speedup", "eff GF/s", "%peak", "min: dns", "sparse", "speedup", "eff GF/s", "xover");
}

/* Medians, effective GFLOP/s and % of peak of the sparse median; then the same for the fastest runs. */
static void print_row(const char *name, const char *pass, double dens, double flops, pair_times t, double xover) {
  double gf = dens * flops / t.sparse_med * 1e-9;
  printf("%-24s %-9s %4.0f%% | %9.3f %9.3f %7.2fx %8.1f %5.1f%% | %8.3f %8.3f %7.2fx %8.1f | %4.0f%%\n", name, pass,
         100 * dens, t.dense_med * 1e3, t.sparse_med * 1e3, t.dense_med / t.sparse_med, gf, 100 * gf / peak(),
         t.dense_min * 1e3, t.sparse_min * 1e3, t.dense_min / t.sparse_min, dens * flops / t.sparse_min * 1e-9,
         100 * xover);
  fflush(stdout);
}

static void bench_conv(const char *name, conv_desc d) {
  sw_err e;
  sw_err_clear(&e);
  conv_ctx c;
  if (conv_plan_init(&c.dense, &d, g_threads, CONV_IMPL_AUTO, &e) || spconv_plan_init(&c.sp, &d, g_threads, &e)) {
    fprintf(stderr, "bench_spconv: %s: %s\n", name, e.msg);
    exit(2);
  }
  d = c.sp.d;
  size_t xs = (size_t)d.N * d.C * d.H * d.W, ys = (size_t)d.N * d.K * d.P * d.Q, ws = (size_t)d.K * d.C * d.R * d.S;
  size_t ss = 0;
  for (int path = 0; path < 2; path++) {
    spconv_plan_set_path(&c.sp, path);
    for (int i = 0; i < 2; i++) {
      if (conv_plan_scratch(&c.dense, i) > ss) ss = conv_plan_scratch(&c.dense, i);
      if (spconv_plan_scratch(&c.sp, i) > ss) ss = spconv_plan_scratch(&c.sp, i);
    }
  }
  spconv_plan_set_path(&c.sp, -1);
  c.x = bfloats(xs), c.dy = bfloats(ys), c.b = bfloats(d.K);
  float *w0 = bfloats(ws);
  c.w = bench_alloc(ws * sizeof(float)), c.y = bench_alloc(ys * sizeof(float)), c.dx = bench_alloc(xs * sizeof(float));
  c.scratch = bench_alloc(ss);
  memcpy(c.w, w0, ws * sizeof(float));
  double flops = conv_desc_flops(&d);
  char desc[400];
  printf("%s: N%d C%d %dx%d K%d %dx%d s%d  [%s]\n", name, d.N, d.C, d.H, d.W, d.K, d.R, d.S, d.stride_h,
         spconv_plan_describe(&c.sp, desc, sizeof desc));
  /* Convs that have an NCHW-direct path (all do now) are timed on the sparse paths of -p (16-image-packed
   * "pk", NCHW-direct "nchw"), interleaved with the dense run in one loop; the plan's own choice at that
   * density is marked with '*'; xover is the plan's (both paths). */
  spconv_plan_set_path(&c.sp, 1);
  int both = spconv_plan_uses_nchw(&c.sp, CONV_FWD, 0.5);
  spconv_plan_set_path(&c.sp, -1);
  for (int pass = 0; pass < 2; pass++)
    for (int i = 0; i < NDENS; i++) {
      double dens = g_kernels ? sparsify_kernels(w0, c.w, ws, (size_t)d.R * d.S, densities[i])
                              : sparsify(w0, c.w, ws, densities[i]);
      spconv_plan_set_path(&c.sp, -1);
      conv_pass cp = pass == 0 ? CONV_FWD : CONV_BWD_DATA;
      /* whole R x S kernels (-k) run packed whatever the density (spconv_plan_uses_nchw) */
      int chosen = spconv_plan_uses_nchw(&c.sp, cp, dens) && !(g_kernels && d.R * d.S > 1);
      double xover = spconv_plan_crossover(&c.sp, cp);
      bench_fn df = pass == 0 ? conv_dense_fwd : conv_dense_bwd, sf = pass == 0 ? conv_sparse_fwd : conv_sparse_bwd;
      if (!both) {
        print_row(name, pass == 0 ? "fwd" : "bwd", dens, flops, time_pair(df, sf, &c), xover);
        continue;
      }
      pair_times t[MAXP];
      time_multi(df, sf, conv_setp, NPATHS, &c, t);
      spconv_use_whole_kernel_tiles(1);
      for (int k = 0; k < NPATHS; k++) {
        char label[32];
        snprintf(label, sizeof label, "%s %s%s", pass == 0 ? "fwd" : "bwd", g_path_names[g_paths[k]],
                 g_paths[k] == chosen ? "*" : "");
        print_row(name, label, dens, flops, t[k], xover);
      }
    }
  spconv_plan_set_path(&c.sp, -1);
  conv_plan_free(&c.dense);
  spconv_plan_free(&c.sp);
  free(c.x), free(c.dy), free(c.b), free(w0), free(c.w), free(c.y), free(c.dx), free(c.scratch);
}

typedef struct gemm_ctx {
  gemm_plan dense;
  spgemm_plan sp;
  float *x, *w, *b, *y, *dy, *dx;
  void *scratch;
} gemm_ctx;

static void gemm_dense_fwd(void *c) {
  gemm_ctx *b = c;
  gemm_plan_fwd(&b->dense, b->x, b->w, b->b, b->y, b->scratch);
}
static void gemm_dense_bwd(void *c) {
  gemm_ctx *b = c;
  gemm_plan_bwd_data(&b->dense, b->dy, b->w, b->dx, b->scratch);
}
static void gemm_sparse_fwd(void *c) {
  gemm_ctx *b = c;
  spgemm_plan_fwd(&b->sp, b->x, b->w, b->b, b->y, b->scratch);
}
static void gemm_sparse_bwd(void *c) {
  gemm_ctx *b = c;
  spgemm_plan_bwd_data(&b->sp, b->dy, b->w, b->dx, b->scratch);
}

static void bench_gemm(const char *name, gemm_desc d) {
  sw_err e;
  sw_err_clear(&e);
  gemm_ctx c;
  if (gemm_plan_init(&c.dense, &d, g_threads, GEMM_IMPL_AUTO, &e) || spgemm_plan_init(&c.sp, &d, g_threads, &e)) {
    fprintf(stderr, "bench_spconv: %s: %s\n", name, e.msg);
    exit(2);
  }
  size_t xs = (size_t)d.M * d.K, ys = (size_t)d.M * d.N, ws = (size_t)d.N * d.K, ss = 0;
  for (int i = 0; i < 2; i++) {
    if (gemm_plan_scratch(&c.dense, i) > ss) ss = gemm_plan_scratch(&c.dense, i);
    if (spgemm_plan_scratch(&c.sp, i) > ss) ss = spgemm_plan_scratch(&c.sp, i);
  }
  c.x = bfloats(xs), c.dy = bfloats(ys), c.b = bfloats(d.N);
  float *w0 = bfloats(ws);
  c.w = bench_alloc(ws * sizeof(float)), c.y = bench_alloc(ys * sizeof(float)), c.dx = bench_alloc(xs * sizeof(float));
  c.scratch = bench_alloc(ss);
  memcpy(c.w, w0, ws * sizeof(float));
  double flops = gemm_desc_flops(&d);
  char desc[400];
  printf("%s: M%d N%d K%d  [%s]\n", name, d.M, d.N, d.K, spgemm_plan_describe(&c.sp, desc, sizeof desc));
  for (int i = 0; i < NDENS; i++) {
    double dens = sparsify(w0, c.w, ws, densities[i]);
    print_row(name, "fwd", dens, flops, time_pair(gemm_dense_fwd, gemm_sparse_fwd, &c),
              spgemm_plan_crossover(&c.sp, GEMM_FWD));
  }
  for (int i = 0; i < NDENS; i++) {
    double dens = sparsify(w0, c.w, ws, densities[i]);
    print_row(name, "bwd-data", dens, flops, time_pair(gemm_dense_bwd, gemm_sparse_bwd, &c),
              spgemm_plan_crossover(&c.sp, GEMM_BWD_DATA));
  }
  gemm_plan_free(&c.dense);
  spgemm_plan_free(&c.sp);
  free(c.x), free(c.dy), free(c.b), free(w0), free(c.w), free(c.y), free(c.dx), free(c.scratch);
}

static int selected(const char *name, int nsel, char **sel) {
  if (nsel == 0) return 1;
  for (int i = 0; i < nsel; i++)
    if (strstr(name, sel[i])) return 1;
  return 0;
}

int main(int argc, char **argv) {
  int N = 128, nsel = 0;
  char *sel[64];
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-t") && i + 1 < argc)
      g_threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "-n") && i + 1 < argc)
      N = atoi(argv[++i]);
    else if (!strcmp(argv[i], "-r") && i + 1 < argc)
      g_runs = atoi(argv[++i]);
    else if (!strcmp(argv[i], "-d") && i + 1 < argc) {
      NDENS = 0;
      for (char *tok = strtok(argv[++i], ","); tok && NDENS < 16; tok = strtok(NULL, ","))
        densities[NDENS++] = atof(tok);
    }
    else if (!strcmp(argv[i], "-p") && i + 1 < argc) {
      NPATHS = 0;
      for (char *tok = strtok(argv[++i], ","); tok && NPATHS < 3; tok = strtok(NULL, ","))
        g_paths[NPATHS++] = atoi(tok) >= 0 && atoi(tok) <= 2 ? atoi(tok) : 0;
    }
    else if (!strcmp(argv[i], "-k"))
      g_kernels = 1;
    else if (argv[i][0] == '-') {
      fprintf(stderr, "usage: bench_spconv [-t THREADS] [-n BATCH] [-r RUNS] [-d D1,D2,..] [-p 0,1,2] [-k] [NAME-SUBSTRING ...]\n");
      return 2;
    } else if (nsel < 64)
      sel[nsel++] = argv[i];
  }
  if (g_threads < 1 || N < 1 || g_runs < 1) {
    fprintf(stderr, "bench_spconv: threads, batch and runs must be positive\n");
    return 2;
  }
  printf("bench_spconv: %d thread(s), batch %d, median of %d runs; peak %.0f GFLOP/s; conv weights kept %s\n",
         g_threads, N, g_runs, peak(), g_kernels ? "as whole kernels (-k)" : "one by one");
  print_header();
  struct {
    const char *name;
    conv_desc d;
  } convs[] = {
      {"resnet20.conv1 1-16", {N, 1, 28, 28, 16, 3, 3, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1}},
      {"resnet20.l1 16-16", {N, 16, 28, 28, 16, 3, 3, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1}},
      {"resnet20.l2.0 16-32 s2", {N, 16, 28, 28, 32, 3, 3, 0, 0, 2, 2, 1, 1, 1, 1, 1, 1, 1}},
      {"resnet20.l2.sc 16-32 1x1", {N, 16, 28, 28, 32, 1, 1, 0, 0, 2, 2, 0, 0, 0, 0, 1, 1, 1}},
      {"resnet20.l2 32-32", {N, 32, 14, 14, 32, 3, 3, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1}},
      {"resnet20.l3.0 32-64 s2", {N, 32, 14, 14, 64, 3, 3, 0, 0, 2, 2, 1, 1, 1, 1, 1, 1, 1}},
      {"resnet20.l3.sc 32-64 1x1", {N, 32, 14, 14, 64, 1, 1, 0, 0, 2, 2, 0, 0, 0, 0, 1, 1, 1}},
      {"resnet20.l3 64-64", {N, 64, 7, 7, 64, 3, 3, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1}},
      {"lenet5.conv1 1-6 5x5", {N, 1, 28, 28, 6, 5, 5, 0, 0, 1, 1, 2, 2, 2, 2, 1, 1, 1}},
      {"lenet5.conv2 6-16 5x5", {N, 6, 14, 14, 16, 5, 5, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 1}},
  };
  for (size_t i = 0; i < sizeof convs / sizeof convs[0]; i++)
    if (selected(convs[i].name, nsel, sel)) bench_conv(convs[i].name, convs[i].d);
  struct {
    const char *name;
    gemm_desc d;
  } gemms[] = {
      {"lenet5.fc1 400-120", {N, 120, 400}},
      {"lenet5.fc2 120-84", {N, 84, 120}},
      {"lenet5.fc3 84-10", {N, 10, 84}},
      {"resnet20.fc 64-10", {N, 10, 64}},
  };
  for (size_t i = 0; i < sizeof gemms / sizeof gemms[0]; i++)
    if (selected(gemms[i].name, nsel, sel)) bench_gemm(gemms[i].name, gemms[i].d);
  return 0;
}
