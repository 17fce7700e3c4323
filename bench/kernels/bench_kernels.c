/* bench_kernels: times the reference and the fast kernels of swatc's runtime on the shapes of the
 * networks swatc trains (CIFAR ResNet-20 and LeNet-5 at batch 128, plus one big conv and a few
 * Gemm/BatchNorm/pool/elementwise shapes), and prints time, GFLOP/s and % of the machine's peak.
 *
 *   bench_kernels [-t THREADS] [--no-ref] [--quick] [conv|gemm|other ...]
 *
 * Fast kernels: best of several runs after a warm-up (the machine is shared, the minimum is the least
 * disturbed); reference: one run. Peak: 213 GFLOP/s per core (Zen 5, 2 x 512-bit FMA at 3.4 GHz). */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/kernels/bench_util.h"
#include "runtime/kernels/conv.h"
#include "runtime/kernels/conv_internal.h"
#include "runtime/kernels/kernels.h"

static int g_threads = 1, g_ref = 1, g_quick = 0;

static double peak(void) { return bench_peak(g_threads); }

static float *bfloats(size_t n) {
  float *p = bench_alloc(n * sizeof(float));
  uint64_t s = 12345;
  for (size_t i = 0; i < n; i++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    p[i] = (float)((double)(s >> 40) / (double)(1 << 24)) * 2.0f - 1.0f;
  }
  return p;
}

/* Runs fn until about min_s seconds have passed (at least 3 times) and returns the best time. */
typedef void (*bench_fn)(void *ctx);
static double time_best(bench_fn fn, void *ctx) {
  double min_s = g_quick ? 0.15 : 0.6, best = INFINITY, start = omp_get_wtime();
  fn(ctx); /* warm-up: page faults, caches */
  for (int i = 0; i < 200; i++) {
    double t0 = omp_get_wtime();
    fn(ctx);
    double t = omp_get_wtime() - t0;
    if (t < best) best = t;
    if (i >= 2 && omp_get_wtime() - start > min_s) break;
  }
  return best;
}

static double time_once(bench_fn fn, void *ctx) {
  double t0 = omp_get_wtime();
  fn(ctx);
  return omp_get_wtime() - t0;
}

static void print_row(const char *name, const char *pass, double flops, double t_ref, double t_fast, const char *note) {
  char ref[64] = "        -          -";
  if (t_ref > 0) snprintf(ref, sizeof ref, "%9.2f %10.2f", t_ref * 1e3, flops / t_ref * 1e-9);
  double gf = flops / t_fast * 1e-9;
  printf("%-34s %-10s %s %9.3f %8.1f %6.1f%% %8.1fx  %s\n", name, pass, ref, t_fast * 1e3, gf, 100.0 * gf / peak(),
         t_ref > 0 ? t_ref / t_fast : 0.0, note);
  fflush(stdout);
}

/* ------------------------------------------------------------------------------------------------ */
/* Conv */

typedef struct conv_bench {
  conv_plan plan;
  conv_desc d;
  float *x, *w, *b, *y, *dy, *dx, *dw, *db;
  void *scratch;
} conv_bench;

static void cb_fwd(void *c) {
  conv_bench *b = c;
  conv_plan_fwd(&b->plan, b->x, b->w, b->b, b->y, b->scratch);
}
static void cb_bwd_data(void *c) {
  conv_bench *b = c;
  conv_plan_bwd_data(&b->plan, b->dy, b->w, b->dx, b->scratch);
}
static void cb_bwd_weight(void *c) {
  conv_bench *b = c;
  conv_plan_bwd_weight(&b->plan, b->x, b->dy, b->dw, b->db, b->scratch);
}
static void cb_ref_fwd(void *c) {
  conv_bench *b = c;
  conv_fwd_ref(&b->d, b->x, b->w, b->b, b->y);
}
static void cb_ref_bwd_data(void *c) {
  conv_bench *b = c;
  conv_bwd_data_ref(&b->d, b->dy, b->w, b->dx);
}
static void cb_ref_bwd_weight(void *c) {
  conv_bench *b = c;
  conv_bwd_weight_ref(&b->d, b->x, b->dy, b->dw, b->db);
}

static void bench_conv(const char *name, conv_desc d, conv_impl impl) {
  conv_bench b;
  memset(&b, 0, sizeof b);
  sw_err e;
  sw_err_clear(&e);
  if (conv_desc_resolve(&d, &e) || conv_plan_init(&b.plan, &d, g_threads, impl, &e)) {
    printf("%-34s cannot plan: %s\n", name, e.msg);
    return;
  }
  b.d = d;
  size_t xs = (size_t)d.N * d.C * d.H * d.W, ys = (size_t)d.N * d.K * d.P * d.Q;
  size_t ws = (size_t)d.K * (d.C / d.groups) * d.R * d.S, ss = 0;
  for (int i = 0; i < CONV_NPASS; i++)
    if (conv_plan_scratch(&b.plan, i) > ss) ss = conv_plan_scratch(&b.plan, i);
  b.x = bfloats(xs), b.w = bfloats(ws), b.b = bfloats(d.K), b.dy = bfloats(ys);
  b.y = bfloats(ys), b.dx = bfloats(xs), b.dw = bfloats(ws), b.db = bfloats(d.K);
  b.scratch = bench_alloc(ss);
  char desc[160];
  conv_plan_describe(&b.plan, desc, sizeof desc);
  double flops = conv_desc_flops(&d);
  bench_fn fast[3] = {cb_fwd, cb_bwd_data, cb_bwd_weight}, ref[3] = {cb_ref_fwd, cb_ref_bwd_data, cb_ref_bwd_weight};
  const char *pass[3] = {"fwd", "bwd-data", "bwd-wt"};
  for (int i = 0; i < 3; i++) {
    double tr = g_ref ? time_once(ref[i], &b) : 0.0;
    double tf = time_best(fast[i], &b);
    char note[256];
    snprintf(note, sizeof note, "%s", i == 0 ? desc : "");
    if (b.plan.impl == CONV_IMPL_BRGEMM) {
      conv_prof *pr = &conv_brgemm_prof;
      memset(pr, 0, sizeof *pr);
      pr->enabled = 1;
      fast[i](&b);
      pr->enabled = 0;
      double tot = pr->pack + pr->gemm + pr->unpack;
      char st[128];
      if (tot > 0) /* the im2col backward passes are not instrumented */
        snprintf(st, sizeof st, "%stransforms %.0f%% (gemm alone %.0f GF/s/core)", i == 0 ? "; " : "",
                 100.0 * (pr->pack + pr->unpack) / tot, flops / (pr->gemm * g_threads) * 1e-9);
      else
        snprintf(st, sizeof st, "%s", i == 0 ? "" : "im2col");
      strncat(note, st, sizeof note - strlen(note) - 1);
    }
    print_row(name, pass[i], flops, tr, tf, note);
  }
  free(b.x), free(b.w), free(b.b), free(b.dy), free(b.y), free(b.dx), free(b.dw), free(b.db), free(b.scratch);
  conv_plan_free(&b.plan);
}

static conv_desc cdesc(int N, int C, int H, int W, int K, int R, int S, int stride, int pad, int groups) {
  conv_desc d = {N, C, H, W, K, R, S, 0, 0, stride, stride, pad, pad, pad, pad, 1, 1, groups};
  return d;
}

static void run_conv(void) {
  printf("\n== Conv (batch 128; GFLOP/s = 2*N*K*C/g*R*S*P*Q / time) ==\n");
  printf("%-34s %-10s %9s %10s %9s %8s %7s %9s  %s\n", "shape", "pass", "ref ms", "ref GF/s", "fast ms", "GF/s",
         "%peak", "speedup", "kernel");
  struct {
    const char *name;
    conv_desc d;
  } shapes[] = {
      {"resnet20 conv1 3->16 32x32", cdesc(128, 3, 32, 32, 16, 3, 3, 1, 1, 1)},
      {"resnet20 16->16 32x32", cdesc(128, 16, 32, 32, 16, 3, 3, 1, 1, 1)},
      {"resnet20 16->32 32x32 s2", cdesc(128, 16, 32, 32, 32, 3, 3, 2, 1, 1)},
      {"resnet20 32->32 16x16", cdesc(128, 32, 16, 16, 32, 3, 3, 1, 1, 1)},
      {"resnet20 32->64 16x16 s2", cdesc(128, 32, 16, 16, 64, 3, 3, 2, 1, 1)},
      {"resnet20 64->64 8x8", cdesc(128, 64, 8, 8, 64, 3, 3, 1, 1, 1)},
      {"resnet20 shortcut 16->32 1x1 s2", cdesc(128, 16, 32, 32, 32, 1, 1, 2, 0, 1)},
      {"lenet5 conv1 1->6 5x5 p2 28x28", cdesc(128, 1, 28, 28, 6, 5, 5, 1, 2, 1)},
      {"lenet5 conv2 6->16 5x5 14x14", cdesc(128, 6, 14, 14, 16, 5, 5, 1, 0, 1)},
      {"big 128->128 16x16", cdesc(128, 128, 16, 16, 128, 3, 3, 1, 1, 1)},
      {"depthwise 64 3x3 16x16", cdesc(128, 64, 16, 16, 64, 3, 3, 1, 1, 64)},
  };
  for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) bench_conv(shapes[i].name, shapes[i].d, CONV_IMPL_AUTO);
  printf("-- the same LeNet conv1 forced onto libxsmm brgemm (k = 1 GEMMs):\n");
  bench_conv("lenet5 conv1 1->6 (brgemm)", cdesc(128, 1, 28, 28, 6, 5, 5, 1, 2, 1), CONV_IMPL_BRGEMM);
}

/* ------------------------------------------------------------------------------------------------ */
/* Gemm */

typedef struct gemm_bench {
  gemm_plan plan;
  gemm_desc d;
  float *x, *w, *b, *y, *dy, *dx, *dw, *db;
  void *scratch;
} gemm_bench;

static void gb_fwd(void *c) {
  gemm_bench *b = c;
  gemm_plan_fwd(&b->plan, b->x, b->w, b->b, b->y, b->scratch);
}
static void gb_bwd_data(void *c) {
  gemm_bench *b = c;
  gemm_plan_bwd_data(&b->plan, b->dy, b->w, b->dx, b->scratch);
}
static void gb_bwd_weight(void *c) {
  gemm_bench *b = c;
  gemm_plan_bwd_weight(&b->plan, b->x, b->dy, b->dw, b->db, b->scratch);
}
static void gb_ref_fwd(void *c) {
  gemm_bench *b = c;
  gemm_fwd_ref(&b->d, b->x, b->w, b->b, b->y);
}
static void gb_ref_bwd_data(void *c) {
  gemm_bench *b = c;
  gemm_bwd_data_ref(&b->d, b->dy, b->w, b->dx);
}
static void gb_ref_bwd_weight(void *c) {
  gemm_bench *b = c;
  gemm_bwd_weight_ref(&b->d, b->x, b->dy, b->dw, b->db);
}

static void bench_gemm(const char *name, gemm_desc d) {
  gemm_bench b;
  memset(&b, 0, sizeof b);
  sw_err e;
  sw_err_clear(&e);
  if (gemm_plan_init(&b.plan, &d, g_threads, GEMM_IMPL_AUTO, &e)) {
    printf("%-34s cannot plan: %s\n", name, e.msg);
    return;
  }
  b.d = d;
  size_t xs = (size_t)d.M * d.K, ws = (size_t)d.N * d.K, ys = (size_t)d.M * d.N, ss = 0;
  for (int i = 0; i < GEMM_NPASS; i++)
    if (gemm_plan_scratch(&b.plan, i) > ss) ss = gemm_plan_scratch(&b.plan, i);
  b.x = bfloats(xs), b.w = bfloats(ws), b.b = bfloats(d.N), b.dy = bfloats(ys);
  b.y = bfloats(ys), b.dx = bfloats(xs), b.dw = bfloats(ws), b.db = bfloats(d.N);
  b.scratch = bench_alloc(ss);
  char desc[96];
  gemm_plan_describe(&b.plan, desc, sizeof desc);
  bench_fn fast[3] = {gb_fwd, gb_bwd_data, gb_bwd_weight}, ref[3] = {gb_ref_fwd, gb_ref_bwd_data, gb_ref_bwd_weight};
  const char *pass[3] = {"fwd", "bwd-data", "bwd-wt"};
  for (int i = 0; i < 3; i++) {
    double tr = g_ref ? time_once(ref[i], &b) : 0.0;
    print_row(name, pass[i], gemm_desc_flops(&d), tr, time_best(fast[i], &b), i == 0 ? desc : "");
  }
  free(b.x), free(b.w), free(b.b), free(b.dy), free(b.y), free(b.dx), free(b.dw), free(b.db), free(b.scratch);
  gemm_plan_free(&b.plan);
}

static void run_gemm(void) {
  printf("\n== Gemm (Y[M,N] = X[M,K] W[N,K]^T + b) ==\n");
  printf("%-34s %-10s %9s %10s %9s %8s %7s %9s  %s\n", "shape", "pass", "ref ms", "ref GF/s", "fast ms", "GF/s",
         "%peak", "speedup", "kernel");
  bench_gemm("lenet5 fc1 128x400->120", (gemm_desc){128, 120, 400});
  bench_gemm("lenet5 fc2 128x120->84", (gemm_desc){128, 84, 120});
  bench_gemm("lenet5 fc3 128x84->10", (gemm_desc){128, 10, 84});
  bench_gemm("resnet20 fc 128x64->10", (gemm_desc){128, 10, 64});
  bench_gemm("mlp 128x1024->1024", (gemm_desc){128, 1024, 1024});
  bench_gemm("big 512x2048->2048", (gemm_desc){512, 2048, 2048});
}

/* ------------------------------------------------------------------------------------------------ */
/* Memory-bound kernels: GB/s of the bytes each kernel has to move (read + write). */

typedef struct mem_bench {
  bn_desc bn;
  pool_desc pool;
  act_desc act;
  int64_t n;
  float *x, *y, *dy, *dx, *scale, *bias, *rm, *rv, *mean, *invstd, *ds, *db;
  int32_t *am;
  void *bn_scratch;
  int ref;
} mem_bench;

static void mb_bn_fwd(void *c) {
  mem_bench *m = c;
  if (m->ref)
    bn_fwd_train_ref(&m->bn, m->x, m->scale, m->bias, m->y, m->rm, m->rv, m->mean, m->invstd, 1);
  else
    bn_fwd_train(&m->bn, m->x, m->scale, m->bias, m->y, m->rm, m->rv, m->mean, m->invstd, 1, m->bn_scratch, g_threads);
}
static void mb_bn_bwd(void *c) {
  mem_bench *m = c;
  if (m->ref)
    bn_bwd_ref(&m->bn, m->x, m->bias, m->dy, m->scale, m->mean, m->invstd, m->dx, m->ds, m->db, 1);
  else
    bn_bwd(&m->bn, m->x, m->bias, m->dy, m->scale, m->mean, m->invstd, m->dx, m->ds, m->db, 1, m->bn_scratch, g_threads);
}
static void mb_relu_fwd(void *c) {
  mem_bench *m = c;
  if (m->ref)
    act_fwd_ref(&m->act, m->n, m->x, m->y);
  else
    act_fwd(&m->act, m->n, m->x, m->y, g_threads);
}
static void mb_relu_bwd(void *c) {
  mem_bench *m = c;
  if (m->ref)
    act_bwd_ref(&m->act, m->n, m->x, NULL, m->dy, m->dx);
  else
    act_bwd(&m->act, m->n, m->x, NULL, m->dy, m->dx, g_threads);
}
static void mb_pool_fwd(void *c) {
  mem_bench *m = c;
  if (m->ref)
    maxpool_fwd_ref(&m->pool, m->x, m->y, m->am);
  else
    maxpool_fwd(&m->pool, m->x, m->y, m->am, g_threads);
}
static void mb_pool_bwd(void *c) {
  mem_bench *m = c;
  if (m->ref)
    maxpool_bwd_ref(&m->pool, m->dy, m->am, m->dx);
  else
    maxpool_bwd(&m->pool, m->dy, m->am, m->dx, g_threads);
}

static void mem_row(const char *name, const char *pass, double bytes, bench_fn fn, mem_bench *m) {
  m->ref = 1;
  double tr = g_ref ? time_once(fn, m) : 0.0;
  m->ref = 0;
  double tf = time_best(fn, m);
  char ref[64] = "        -          -";
  if (tr > 0) snprintf(ref, sizeof ref, "%9.2f %10.2f", tr * 1e3, bytes / tr * 1e-9);
  printf("%-34s %-10s %s %9.3f %8.1f %16.1fx\n", name, pass, ref, tf * 1e3, bytes / tf * 1e-9,
         tr > 0 ? tr / tf : 0.0);
  fflush(stdout);
}

static void run_other(void) {
  printf("\n== Memory-bound kernels (GB/s of compulsory traffic) ==\n");
  printf("%-34s %-10s %9s %10s %9s %8s %17s\n", "shape", "pass", "ref ms", "ref GB/s", "fast ms", "GB/s",
         "speedup");
  mem_bench m;
  memset(&m, 0, sizeof m);
  int N = 128, C = 16, HW = 32 * 32;
  size_t n = (size_t)N * C * HW;
  m.n = (int64_t)n;
  m.x = bfloats(n), m.y = bfloats(n), m.dy = bfloats(n), m.dx = bfloats(n);
  m.scale = bfloats(64), m.bias = bfloats(64), m.rm = bfloats(64), m.rv = bfloats(64);
  m.mean = bfloats(64), m.invstd = bfloats(64), m.ds = bfloats(64), m.db = bfloats(64);
  m.am = bench_alloc(n * 4);
  for (int i = 0; i < 64; i++) m.rv[i] = 1.0f;
  m.bn = (bn_desc){N, C, HW, 1e-5f, 0.9f};
  m.bn_scratch = bench_alloc(bn_scratch_bytes(&m.bn));
  double fb = 4.0 * n;
  mem_row("batchnorm+relu 128x16x32x32", "fwd", 3 * fb, mb_bn_fwd, &m);   /* read x twice, write y */
  mem_row("batchnorm+relu 128x16x32x32", "bwd", 5 * fb, mb_bn_bwd, &m);   /* x, dy twice; write dx */
  m.act = (act_desc){ACT_RELU, 0, 0, 0};
  mem_row("relu 128x16x32x32", "fwd", 2 * fb, mb_relu_fwd, &m);
  mem_row("relu 128x16x32x32", "bwd", 3 * fb, mb_relu_bwd, &m);
  m.pool = (pool_desc){128, 6, 28, 28, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0, 1, 1, 0, 0};
  pool_desc_resolve(&m.pool, NULL);
  double px = 4.0 * 128 * 6 * 28 * 28, py = 4.0 * 128 * 6 * 14 * 14;
  mem_row("maxpool 2x2 s2 128x6x28x28", "fwd", px + 2 * py, mb_pool_fwd, &m);
  mem_row("maxpool 2x2 s2 128x6x28x28", "bwd", px + 2 * py, mb_pool_bwd, &m);
  free(m.x), free(m.y), free(m.dy), free(m.dx), free(m.scale), free(m.bias), free(m.rm), free(m.rv);
  free(m.mean), free(m.invstd), free(m.ds), free(m.db), free(m.am);
}

int main(int argc, char **argv) {
  int fam_conv = 0, fam_gemm = 0, fam_other = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-t") && i + 1 < argc) g_threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--no-ref")) g_ref = 0;
    else if (!strcmp(argv[i], "--quick")) g_quick = 1;
    else if (!strcmp(argv[i], "conv")) fam_conv = 1;
    else if (!strcmp(argv[i], "gemm")) fam_gemm = 1;
    else if (!strcmp(argv[i], "other")) fam_other = 1;
    else {
      fprintf(stderr, "bench_kernels: unknown argument '%s'\nusage: bench_kernels [-t THREADS] [--no-ref] [--quick] "
                      "[conv|gemm|other ...]\n", argv[i]);
      return 1;
    }
  }
  if (g_threads < 1) g_threads = 1;
  printf("bench_kernels: %d thread(s), peak %.0f GFLOP/s; fast = best of repeated runs, ref = one run\n", g_threads,
         peak());
  if (!fam_conv && !fam_gemm && !fam_other) fam_conv = fam_gemm = fam_other = 1;
  if (fam_conv) run_conv();
  if (fam_gemm) run_gemm();
  if (fam_other) run_other();
  return 0;
}
