/* The kernels' thread team (team.c, kern_internal.h): every part of every stage runs exactly once,
 * each stage only after every part of the one before (the barrier), for 1..80 parts (more than the
 * team's 64 threads), jobs of different sizes back to back, calls from inside a part (run in place),
 * two callers at once (one runs its job in place), work stealing (every unit once; a late part's
 * units go to the others), and a worker that slept (past the yield phase) wakes for the next job. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "runtime/kernels/kern_internal.h"

#define MAXP 80
#define NST 4

typedef struct job {
  int T;
  atomic_int runs[NST][MAXP];   /* times part t of stage s ran */
  atomic_int done[NST];         /* parts of stage s finished */
  atomic_int early;             /* parts that started before the stage before them had finished */
  atomic_int bad_T;             /* parts called with another T */
  int nested;                   /* stage 0 runs a nested job of this many parts in every part */
  atomic_int nested_runs;
} job;

static void nested_part(void *ctx, int t, int T) {
  (void)t, (void)T;
  atomic_fetch_add(&((job *)ctx)->nested_runs, 1);
}

static void stage_part(job *j, int s, int t, int T) {
  if (T != j->T) atomic_fetch_add(&j->bad_T, 1);
  if (s > 0 && atomic_load(&j->done[s - 1]) != T) atomic_fetch_add(&j->early, 1);
  if (t >= 0 && t < MAXP) atomic_fetch_add(&j->runs[s][t], 1);
  if (s == 0 && j->nested) kern_parallel(j->nested, nested_part, j);
  atomic_fetch_add(&j->done[s], 1);
}

static void st0(void *c, int t, int T) { stage_part(c, 0, t, T); }
static void st1(void *c, int t, int T) { stage_part(c, 1, t, T); }
static void st2(void *c, int t, int T) { stage_part(c, 2, t, T); }
static void st3(void *c, int t, int T) { stage_part(c, 3, t, T); }

/* Runs a job of T parts and nst stages; returns 0 when every check holds. */
static int run_job(int T, int nst, int nested, const char *what) {
  static job j; /* one at a time here; large for the stack of a helper thread */
  memset(&j, 0, sizeof j);
  j.T = T, j.nested = nested;
  void (*const fns[NST])(void *, int, int) = {st0, st1, st2, st3};
  kern_parallel_stages(T, nst, fns, &j);
  int bad = 0, ones[MAXP], got[MAXP], zero = 0, v;
  char w[160];
  for (int t = 0; t < MAXP; t++) ones[t] = 1;
  for (int s = 0; s < nst; s++) {
    for (int t = 0; t < T; t++) got[t] = atomic_load(&j.runs[s][t]);
    snprintf(w, sizeof w, "%s: T=%d stage %d: every part ran once", what, T, s);
    bad |= !tcheck_same(w, got, ones, sizeof(int) * (size_t)T);
  }
  snprintf(w, sizeof w, "%s: T=%d: no part started before the stage before it ended", what, T);
  v = atomic_load(&j.early);
  bad |= !tcheck_same(w, &v, &zero, sizeof v);
  snprintf(w, sizeof w, "%s: T=%d: every part saw T", what, T);
  v = atomic_load(&j.bad_T);
  bad |= !tcheck_same(w, &v, &zero, sizeof v);
  if (nested) {
    int want = T * nested;
    v = atomic_load(&j.nested_runs);
    snprintf(w, sizeof w, "%s: T=%d: nested jobs ran all their parts", what, T);
    bad |= !tcheck_same(w, &v, &want, sizeof v);
  }
  return bad;
}

/* Sleeps ms milliseconds. */
static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

typedef struct sum_ctx {
  atomic_long total;
  int reps;
} sum_ctx;

static void add_part(void *c, int t, int T) {
  (void)T;
  atomic_fetch_add(&((sum_ctx *)c)->total, t + 1);
}

/* A second caller: many small jobs while the main thread runs its own. */
static void *other_caller(void *arg) {
  sum_ctx *c = arg;
  for (int i = 0; i < c->reps; i++) kern_parallel(3, add_part, c);
  return NULL;
}

/* Work stealing (kern_steal): units taken once each; a part that starts late has its range taken. */
#define STEAL_N 3000
typedef struct steal_ctx {
  kern_steal q;
  int64_t n;
  int late;                    /* part 0 sleeps this many ms first */
  atomic_int taken[STEAL_N];   /* times unit u was returned */
  atomic_int by[STEAL_N];      /* the part that took it */
  atomic_int bad;              /* a unit out of range */
} steal_ctx;

static void steal_part(void *c, int t, int T) {
  steal_ctx *k = c;
  if (t == 0 && k->late) sleep_ms(k->late);
  for (int64_t u; (u = kern_steal_next(&k->q, t, T)) >= 0;) {
    if (u >= k->n) {
      atomic_fetch_add(&k->bad, 1);
      continue;
    }
    atomic_fetch_add(&k->taken[u], 1);
    atomic_store(&k->by[u], t);
  }
}

static void check_steal(int T, int64_t n, int late) {
  static steal_ctx k;
  memset(&k, 0, sizeof k);
  k.n = n, k.late = late;
  kern_steal_init(&k.q, n, T);
  kern_parallel(T, steal_part, &k);
  int ones[STEAL_N], got[STEAL_N], zero = 0, v = atomic_load(&k.bad);
  char w[160];
  for (int64_t u = 0; u < n; u++) ones[u] = 1, got[u] = atomic_load(&k.taken[u]);
  snprintf(w, sizeof w, "steal T=%d n=%lld late=%d: every unit taken once", T, (long long)n, late);
  tcheck_same(w, got, ones, sizeof(int) * (size_t)n);
  snprintf(w, sizeof w, "steal T=%d n=%lld late=%d: no unit out of range", T, (long long)n, late);
  tcheck_same(w, &v, &zero, sizeof v);
  if (late && T > 1 && n >= 2 * T) { /* part 0's range [0, n/T) is mostly taken by the others */
    int64_t lo, hi;
    int others = 0, want = 1;
    kern_split(n, 0, T, &lo, &hi);
    for (int64_t u = lo; u < hi; u++) others += atomic_load(&k.by[u]) != 0;
    v = others > 0;
    snprintf(w, sizeof w, "steal T=%d n=%lld: a late part's units are taken by the others", T, (long long)n);
    tcheck_same(w, &v, &want, sizeof v);
  }
}

int main(void) {
  tgroup_begin("team: parts and stages run once each, in stage order");
  static const int Ts[] = {1, 2, 3, 5, 2, 64, 65, 80, 2, 1, 7};
  for (size_t i = 0; i < sizeof Ts / sizeof Ts[0]; i++)
    for (int nst = 1; nst <= NST; nst++) run_job(Ts[i], nst, 0, "stages");
  for (int rep = 0; rep < 2000; rep++) /* back to back, sizes changing */
    if (run_job(1 + rep % 4, 1 + rep % NST, 0, "repeated")) break;
  tgroup_end();

  tgroup_begin("team: a job started inside a part runs in place");
  run_job(2, 2, 3, "nested");
  run_job(4, 1, 2, "nested");
  tgroup_end();

  tgroup_begin("team: two callers at once");
  sum_ctx a = {.reps = 3000}, b = {.reps = 3000};
  pthread_t th;
  if (pthread_create(&th, NULL, other_caller, &b) != 0) {
    tfail("pthread_create failed");
  } else {
    for (int i = 0; i < a.reps; i++) kern_parallel(2, add_part, &a);
    pthread_join(th, NULL);
    long ta = atomic_load(&a.total), tb = atomic_load(&b.total), wa = 3L * a.reps, wb = 6L * b.reps;
    tcheck_same("first caller's parts (T=2) all ran", &ta, &wa, sizeof ta);
    tcheck_same("second caller's parts (T=3) all ran", &tb, &wb, sizeof tb);
  }
  tgroup_end();

  tgroup_begin("team: work stealing takes every unit once");
  static const int sT[] = {1, 2, 3, 5, 64};
  static const int64_t sn[] = {0, 1, 2, 7, 100, STEAL_N};
  for (size_t i = 0; i < sizeof sT / sizeof sT[0]; i++)
    for (size_t j = 0; j < sizeof sn / sizeof sn[0]; j++) check_steal(sT[i], sn[j], 0);
  check_steal(2, STEAL_N, 5);
  check_steal(3, 200, 5);
  tgroup_end();

  tgroup_begin("team: sleeping workers wake for the next job");
  run_job(2, 2, 0, "before sleep");
  sleep_ms(20); /* past the 2 ms yield phase: the worker sleeps on the condition variable */
  run_job(2, 3, 0, "after sleep");
  sleep_ms(20);
  run_job(3, 1, 0, "after sleep, larger");
  tgroup_end();
  return tresult();
}
