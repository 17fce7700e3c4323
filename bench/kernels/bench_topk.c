/* bench_topk: SWAT's Top-K step on ResNet-20's activation shapes (batch 128): the exact threshold
 * (topk_threshold, radix selection) and the compact saved copy (spact_pack, AVX-512 and portable C;
 * "pack" in plane order, what stride-1 layers read, "packg" grouped by stride parity, what strided
 * layers read), with topk_apply (one read and one write of the tensor) as the memory-bound yardstick.
 *
 *   bench_topk [-t THREADS] [-r REPS] [-d DENSITY[,DENSITY...]] [--warm] [--cap C] [--only thr|pack|packg|pack_c|apply]
 *
 * Activations are ReLU of normals (half zeros, as after a ReLU), or with --cap C clipped at C as a
 * ReLU6 clips (every value above C ties at C: with C = 0.8, a fifth of the tensor, so a threshold
 * there leaves the radix selection a bucket of ties larger than its candidate list); the threshold keeps DENSITY of the
 * tensor, for each density of the list (default 0.1,0.2,0.3,0.4: SWAT-U 0.9 keeps a tenth, ERK 0.9
 * and structured-channel 0.7 keep 20-40% of most layers' activations). Cold cache by default: before every timed run the input and output buffers are
 * flushed from all cache levels (clflush), as when an activation written long ago in the forward pass
 * is selected; --warm skips the flush. Times are minima over REPS runs (the machine is shared: a
 * descheduled thread turns a median into a scheduler quantum); GB/s counts the bytes of x read once.
 * --only times one kernel (the others print 0), for profiling it alone. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/kernels/bench_util.h"
#include "runtime/kernels/kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_CLFLUSH 1
#endif

static int g_threads = 2, g_reps = 31, g_warm = 0;
#define MAXDENS 16
static double g_dens[MAXDENS] = {0.1, 0.2, 0.3, 0.4};
static int g_ndens = 4;
static const char *g_only = NULL;
static float g_cap = INFINITY;

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static float normal(void) { return bench_normal(&g_rng); }

/* Evicts [p, p + n) from every cache level. */
static void flush(const void *p, size_t n) {
#ifdef HAVE_CLFLUSH
  for (size_t i = 0; i < n; i += 64) _mm_clflush((const char *)p + i);
  _mm_mfence();
#else
  /* no clflush: stream through a buffer far larger than any cache */
  static char *big;
  static const size_t bigsz = (size_t)256 << 20;
  if (!big) big = bench_alloc(bigsz);
  for (size_t i = 0; i < bigsz; i += 64) big[i]++;
  (void)p, (void)n;
#endif
}

typedef struct run_ctx {
  const float *x;
  float *y;
  void *buf, *scratch;
  size_t bufbytes;
  int N, C, H, W;
  int64_t n, k, cap;
  float thr;
} run_ctx;

typedef void (*bench_fn)(run_ctx *r);

static void run_threshold(run_ctx *r) {
  float t = topk_threshold(r->x, r->n, r->k, r->scratch, g_threads);
  if (t != r->thr) {
    fprintf(stderr, "bench_topk: threshold %.9g, expected %.9g\n", (double)t, (double)r->thr);
    exit(1);
  }
}
static void pack_or_die(run_ctx *r, unsigned classes) {
  if (spact_pack(r->x, r->N, r->C, r->H, r->W, r->thr, classes, r->buf, r->cap, g_threads, r->scratch) < 0) {
    fprintf(stderr, "bench_topk: pack overflow\n");
    exit(1);
  }
}
static void run_pack(run_ctx *r) { pack_or_die(r, 0); }
static void run_pack_grouped(run_ctx *r) { pack_or_die(r, SPACT_ALL_CLASSES); }
static void run_pack_c(run_ctx *r) {
  if (spact_pack_c(r->x, r->N, r->C, r->H, r->W, r->thr, 0, r->buf, r->cap, g_threads, r->scratch) < 0) {
    fprintf(stderr, "bench_topk: pack overflow\n");
    exit(1);
  }
}
static void run_apply(run_ctx *r) { topk_apply(r->x, r->y, r->n, r->thr, g_threads); }

/* Minimum of g_reps timed runs (after one warm-up), each preceded by a cache flush unless --warm. */
static double time_min(const char *name, bench_fn fn, run_ctx *r) {
  if (g_only && strcmp(g_only, name)) return 0.0;
  double best = INFINITY;
  fn(r);
  for (int i = 0; i < g_reps; i++) {
    if (!g_warm) {
      flush(r->x, sizeof(float) * (size_t)r->n);
      flush(r->y, sizeof(float) * (size_t)r->n);
      flush(r->buf, r->bufbytes);
    }
    double t0 = omp_get_wtime();
    fn(r);
    double t = omp_get_wtime() - t0;
    if (t < best) best = t;
  }
  return best;
}

/* Times every kernel on one [N][C][H][W] activation at density dens and prints one row. */
static void bench_shape(int N, int C, int H, int W, double dens) {
  run_ctx r = {0};
  r.N = N, r.C = C, r.H = H, r.W = W;
  r.n = (int64_t)N * C * H * W;
  float *x = bench_alloc(sizeof(float) * (size_t)r.n);
  for (int64_t i = 0; i < r.n; i++) {
    float v = normal();
    x[i] = v < 0 ? 0.0f : v > g_cap ? g_cap : v;
  }
  r.x = x;
  r.y = bench_alloc(sizeof(float) * (size_t)r.n);
  r.k = (int64_t)ceil(dens * (double)r.n);
  if (r.k < 1) r.k = 1;
  r.thr = topk_threshold_ref(x, r.n, r.k);
  size_t st = topk_scratch(g_threads), sp = spact_pack_scratch(C, H, W, g_threads); /* the two never overlap in time */
  r.scratch = bench_alloc(st > sp ? st : sp);
  r.cap = r.n;
  r.bufbytes = spact_bytes(N, C, H, W, r.cap);
  r.buf = bench_alloc(r.bufbytes);
  double tt = time_min("thr", run_threshold, &r), tp = time_min("pack", run_pack, &r);
  double tg = time_min("packg", run_pack_grouped, &r);
  double tc = time_min("pack_c", run_pack_c, &r), ta = time_min("apply", run_apply, &r);
  run_pack(&r); /* for the kept figure */
  double gb = 1e-9 * sizeof(float) * (double)r.n;
  char shape[64];
  snprintf(shape, sizeof shape, "%dx%dx%dx%d", N, C, H, W);
  printf("%-16s %5.1f%% %9.3f %6.1f %9.3f %6.1f %9.3f %9.3f %9.3f\n", shape,
         100.0 * (double)spact_nnz(r.buf) / (double)r.n, 1e3 * tt, tt > 0 ? gb / tt : 0.0, 1e3 * tp,
         tp > 0 ? gb / tp : 0.0, 1e3 * tg, 1e3 * tc, 1e3 * ta);
  free(x), free(r.y), free(r.buf), free(r.scratch);
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-t") && i + 1 < argc) g_threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "-r") && i + 1 < argc) g_reps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "-d") && i + 1 < argc) {
      char *p = argv[++i];
      for (g_ndens = 0; g_ndens < MAXDENS && *p;) {
        g_dens[g_ndens] = strtod(p, &p);
        if (!(g_dens[g_ndens] > 0 && g_dens[g_ndens] <= 1)) {
          fprintf(stderr, "bench_topk: need 0 < DENSITY <= 1\n");
          return 2;
        }
        g_ndens++;
        if (*p == ',') p++;
        else if (*p) {
          fprintf(stderr, "bench_topk: bad density list '%s'\n", argv[i]);
          return 2;
        }
      }
    }
    else if (!strcmp(argv[i], "--warm")) g_warm = 1;
    else if (!strcmp(argv[i], "--cap") && i + 1 < argc) {
      g_cap = strtof(argv[++i], NULL);
      if (!(g_cap > 0)) {
        fprintf(stderr, "bench_topk: need --cap C > 0\n");
        return 2;
      }
    }
    else if (!strcmp(argv[i], "--only") && i + 1 < argc) g_only = argv[++i];
    else {
      fprintf(stderr, "bench_topk: unknown argument '%s'\nusage: bench_topk [-t THREADS] [-r REPS] [-d DENSITY[,DENSITY...]] [--warm] [--cap C] [--only thr|pack|packg|pack_c|apply]\n",
              argv[i]);
      return 2;
    }
  }
  if (g_threads < 1 || g_reps < 1) {
    fprintf(stderr, "bench_topk: need THREADS >= 1, REPS >= 1\n");
    return 2;
  }
  printf("bench_topk: %d threads, %s cache, min of %d", g_threads, g_warm ? "warm" : "cold", g_reps);
  if (g_cap < INFINITY) printf(", activations clipped at %g", (double)g_cap);
  printf("\n");
  printf("%-16s %6s %9s %6s %9s %6s %9s %9s %9s\n", "shape", "kept", "thr ms", "GB/s", "pack ms", "GB/s", "packg ms",
         "pack_c ms", "apply ms");
  static const int shapes[][4] = {{128, 16, 28, 28}, {128, 32, 14, 14}, {128, 64, 7, 7}};
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
    for (int d = 0; d < g_ndens; d++) bench_shape(shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3], g_dens[d]);
  return 0;
}
