/* bench_team: what one parallel region costs, the kernels' thread team (kern_parallel, team.c)
 * against an OpenMP parallel region, with nothing inside and a short serial gap between regions (the
 * dispatch between two ops of a training step). Each figure is the best of 3 runs of 20,000 regions,
 * minus the gap measured alone.
 *
 *   bench_team [-t THREADS]
 *
 * OpenMP's cost depends on its wait policy: run it as `OMP_WAIT_POLICY=passive bench_team` (what
 * swatc runs OpenMP with) and as `OMP_WAIT_POLICY=active bench_team`. Not a test: numbers depend on
 * the machine and on what else runs on it. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/kernels/kern_internal.h"

#define REGIONS 20000

static volatile double g_sink;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Serial work of about `iters` additions between two regions. */
static void gap(int iters) {
  double s = 0;
  for (int k = 0; k < iters; k++) s += k * 1e-9;
  g_sink += s;
}

static void empty_part(void *ctx, int t, int T) {
  (void)ctx;
  g_sink += t + T;
}

/* Seconds per region of kind (0 the team, 1 OpenMP, 2 the gap alone) on T threads. */
static double per_region(int kind, int T, int iters) {
  double best = 1e30;
  for (int rep = 0; rep < 3; rep++) {
    double t0 = now();
    for (int i = 0; i < REGIONS; i++) {
      if (kind == 0) {
        kern_parallel(T, empty_part, NULL);
      } else if (kind == 1) {
#pragma omp parallel num_threads(T)
        g_sink += omp_get_thread_num();
      }
      gap(iters);
    }
    double dt = (now() - t0) / REGIONS;
    if (dt < best) best = dt;
  }
  return best;
}

int main(int argc, char **argv) {
  int T = 2;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-t") && i + 1 < argc) {
      T = atoi(argv[++i]);
    } else {
      fprintf(stderr, "usage: bench_team [-t THREADS]\n");
      return 2;
    }
  }
  if (T < 2) T = 2;
  const char *pol = getenv("OMP_WAIT_POLICY");
  printf("bench_team: %d threads, %d regions, best of 3; OMP_WAIT_POLICY=%s\n", T, REGIONS, pol ? pol : "(unset)");
  printf("%10s %14s %14s\n", "gap us", "team us", "OpenMP us");
  static const int gaps[] = {0, 2000, 8000, 32000};
  for (size_t g = 0; g < sizeof gaps / sizeof gaps[0]; g++) {
    double base = per_region(2, T, gaps[g]);
    printf("%10.2f %14.2f %14.2f\n", 1e6 * base, 1e6 * (per_region(0, T, gaps[g]) - base),
           1e6 * (per_region(1, T, gaps[g]) - base));
  }
  return 0;
}
