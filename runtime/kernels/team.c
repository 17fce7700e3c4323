/* The kernels' thread team (kern_parallel, kern_parallel2, kern_parallel_stages; kern_internal.h).
 *
 * A training step runs about 500 parallel regions and barriers, many of them tens of microseconds
 * long. Waking an OpenMP thread that sleeps passively costs about 20 us a region on this kind of VM
 * (a halted virtual CPU has to be woken), 19 us more than a spinning one: 8-10 ms of a 50 ms sparse
 * step. Spinning OpenMP threads (OMP_WAIT_POLICY=active, GOMP_SPINCOUNT) remove that, but they keep
 * their core while they wait, and with a second job on the machine training ran 3.5x slower (two
 * swatc runs on 2 cores, GOMP_SPINCOUNT=30000: 12.3 s against 3.5 s), so swatc runs OpenMP passively
 * (tools/swatc.c).
 *
 * So the kernels' own regions run on this team instead, whose waiting threads spin briefly with
 * `pause`, then call sched_yield() (the core goes to any other runnable thread, and comes back within
 * a microsecond when there is none), and only after TEAM_YIELD_NS sleep on a condition variable.
 * Like ggml's and ONNX Runtime's thread pools. The work split never depends on the team: part t of T
 * always runs fn(ctx, t, T), on whichever thread; results are reproducible for a given T. */

#include <omp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "runtime/kernels/kern_internal.h"
#include "util/err.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TEAM_RELAX() _mm_pause()
#else
#define TEAM_RELAX() ((void)0)
#endif

#define TEAM_MAX 64                 /* threads in the team at most (T fits the job word's 7 bits) */
#define TEAM_MAX_STAGES 4
#define TEAM_PAUSE_SPINS 256        /* `pause` polls before yielding (a few microseconds) */
#define TEAM_YIELD_NS 2000000LL     /* then sched_yield() polls for 2 ms before sleeping */

typedef void (*team_fn)(void *ctx, int t, int T);

typedef struct team {
  pthread_mutex_t job_mu;           /* one job at a time (callers from several threads take turns) */
  pthread_mutex_t mu;               /* sleeping waiters */
  pthread_cond_t cv;
  atomic_int sleepers;
  int nworkers;                     /* started so far (they never exit) */
  atomic_uint job;                  /* (job number << 7) | n: a new value starts a job on n threads */
  atomic_uint done;                 /* bumped when the job's last worker finishes */
  atomic_int left;                  /* workers of the current job still running */
  atomic_uint bar_gen;              /* the stage barrier */
  atomic_int bar_count;
  /* the current job (written before the job word changes) */
  team_fn fns[TEAM_MAX_STAGES];
  int nst, T;
  void *ctx;
  unsigned start_job[TEAM_MAX];     /* the job word when worker i was started (jobs before are not its) */
} team;

static team g_team = {.job_mu = PTHREAD_MUTEX_INITIALIZER, .mu = PTHREAD_MUTEX_INITIALIZER,
                      .cv = PTHREAD_COND_INITIALIZER};
static _Thread_local int tl_in_team; /* this thread is running a part of a job */

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Wakes every sleeping waiter (after a watched word changed). */
static void team_notify(team *tm) {
  if (atomic_load(&tm->sleepers) == 0) return;
  pthread_mutex_lock(&tm->mu);
  pthread_cond_broadcast(&tm->cv);
  pthread_mutex_unlock(&tm->mu);
}

/* Returns once *w != old: pause polls, then yielding polls, then sleep. */
static void team_wait(team *tm, atomic_uint *w, unsigned old) {
  for (int i = 0; i < TEAM_PAUSE_SPINS; i++) {
    if (atomic_load_explicit(w, memory_order_acquire) != old) return;
    TEAM_RELAX();
  }
  int64_t t0 = now_ns();
  while (now_ns() - t0 < TEAM_YIELD_NS) {
    if (atomic_load_explicit(w, memory_order_acquire) != old) return;
    sched_yield();
  }
  pthread_mutex_lock(&tm->mu);
  atomic_fetch_add(&tm->sleepers, 1);
  while (atomic_load(w) == old) pthread_cond_wait(&tm->cv, &tm->mu);
  atomic_fetch_sub(&tm->sleepers, 1);
  pthread_mutex_unlock(&tm->mu);
}

/* The barrier between stages among the job's T threads. */
static void team_barrier(team *tm, int T) {
  unsigned g = atomic_load(&tm->bar_gen);
  if (atomic_fetch_add(&tm->bar_count, 1) == T - 1) {
    atomic_store(&tm->bar_count, 0);
    atomic_fetch_add(&tm->bar_gen, 1);
    team_notify(tm);
  } else {
    team_wait(tm, &tm->bar_gen, g);
  }
}

/* Thread id's share of the current job on n threads: its parts id, id + n, ... of every stage, with a
 * barrier between stages. */
static void team_run_part(team *tm, int id, int n) {
  for (int s = 0; s < tm->nst; s++) {
    for (int t = id; t < tm->T; t += n) tm->fns[s](tm->ctx, t, tm->T);
    if (s + 1 < tm->nst) team_barrier(tm, n);
  }
}

static void *team_worker(void *arg) {
  team *tm = &g_team;
  int id = (int)(intptr_t)arg;
  unsigned seen = tm->start_job[id];
  tl_in_team = 1;
  for (;;) {
    team_wait(tm, &tm->job, seen);
    seen = atomic_load(&tm->job); /* the latest job (one this worker is not part of may have been skipped) */
    int n = (int)(seen & 127u);
    if (id >= n) continue;
    team_run_part(tm, id, n);
    if (atomic_fetch_sub(&tm->left, 1) == 1) {
      atomic_fetch_add(&tm->done, 1);
      team_notify(tm);
    }
  }
  return NULL;
}

/* Starts workers up to n (ids 1..n); returns how many run. Workers block every signal (they inherit
 * the mask they are created with), so SIGINT and SIGTERM reach the caller's threads, as before. */
static int team_grow(team *tm, int n) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  while (tm->nworkers < n) {
    pthread_t th;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    tm->start_job[tm->nworkers + 1] = atomic_load(&tm->job);
    int rc = pthread_create(&th, &at, team_worker, (void *)(intptr_t)(tm->nworkers + 1));
    pthread_attr_destroy(&at);
    if (rc != 0) break;
    tm->nworkers++;
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return tm->nworkers;
}

/* Every part of every stage on the calling thread, stage by stage. */
static void run_serial(int T, int nst, const team_fn *fns, void *ctx) {
  for (int s = 0; s < nst; s++)
    for (int t = 0; t < T; t++) fns[s](ctx, t, T);
}

void kern_parallel_stages(int T, int nst, void (*const *fns)(void *ctx, int t, int T), void *ctx) {
  SW_ASSERT(nst >= 1 && nst <= TEAM_MAX_STAGES);
  team *tm = &g_team;
  int n = T > TEAM_MAX ? TEAM_MAX : T; /* threads; parts t = id, id + n, ... run on thread id */
  /* one thread, a part of a running job or an OpenMP region, or another caller's job running: here */
  if (T <= 1 || tl_in_team || omp_in_parallel() || pthread_mutex_trylock(&tm->job_mu) != 0) {
    run_serial(T < 1 ? 1 : T, nst, fns, ctx);
    return;
  }
  if (team_grow(tm, n - 1) < n - 1) { /* no threads to be had: the parts in turn */
    pthread_mutex_unlock(&tm->job_mu);
    run_serial(T, nst, fns, ctx);
    return;
  }
  for (int s = 0; s < nst; s++) tm->fns[s] = fns[s];
  tm->nst = nst, tm->T = T, tm->ctx = ctx;
  atomic_store(&tm->left, n - 1);
  atomic_store(&tm->bar_count, 0);
  unsigned done = atomic_load(&tm->done);
  atomic_store(&tm->job, ((atomic_load(&tm->job) >> 7) + 1) << 7 | (unsigned)n);
  team_notify(tm);
  tl_in_team = 1;
  team_run_part(tm, 0, n);
  tl_in_team = 0;
  team_wait(tm, &tm->done, done);
  pthread_mutex_unlock(&tm->job_mu);
}

void kern_parallel(int T, void (*fn)(void *ctx, int t, int T), void *ctx) {
  team_fn fns[1] = {fn};
  kern_parallel_stages(T, 1, fns, ctx);
}

void kern_parallel2(int T, void (*fn1)(void *ctx, int t, int T), void (*fn2)(void *ctx, int t, int T), void *ctx) {
  team_fn fns[2] = {fn1, fn2};
  kern_parallel_stages(T, 2, fns, ctx);
}

void kern_steal_init(kern_steal *q, int64_t n, int T) {
  SW_ASSERT(T >= 1 && T <= KERN_STEAL_MAX && n >= 0 && n < INT32_MAX);
  for (int t = 0; t < T; t++) {
    int64_t lo, hi;
    kern_split(n, t, T, &lo, &hi);
    atomic_init(&q->r[t].left, (uint64_t)hi << 32 | (uint64_t)lo);
  }
}

int64_t kern_steal_next(kern_steal *q, int t, int T) {
  uint64_t v = atomic_load_explicit(&q->r[t].left, memory_order_relaxed);
  while ((uint32_t)v < (uint32_t)(v >> 32))
    if (atomic_compare_exchange_weak_explicit(&q->r[t].left, &v, v + 1, memory_order_relaxed, memory_order_relaxed))
      return (int64_t)(uint32_t)v;
  for (;;) { /* own range done: the back of the part with the most left */
    int best = -1;
    uint32_t most = 0;
    for (int j = 0; j < T; j++) {
      uint64_t w = atomic_load_explicit(&q->r[j].left, memory_order_relaxed);
      uint32_t left = (uint32_t)(w >> 32) - (uint32_t)w;
      if ((uint32_t)w < (uint32_t)(w >> 32) && left > most) most = left, best = j;
    }
    if (best < 0) return -1;
    uint64_t w = atomic_load_explicit(&q->r[best].left, memory_order_relaxed);
    while ((uint32_t)w < (uint32_t)(w >> 32)) {
      uint64_t hi = (w >> 32) - 1;
      if (atomic_compare_exchange_weak_explicit(&q->r[best].left, &w, hi << 32 | (uint32_t)w, memory_order_relaxed,
                                                memory_order_relaxed))
        return (int64_t)hi;
    }
  }
}

void kern_steal_init_units(kern_steal *q, int64_t n, int64_t unit, int T) {
  SW_ASSERT(unit >= 1);
  kern_steal_init(q, (n + unit - 1) / unit, T);
}

int kern_steal_range(kern_steal *q, int64_t n, int64_t unit, int t, int T, int64_t *lo, int64_t *hi) {
  int64_t u = kern_steal_next(q, t, T);
  if (u < 0) return 0;
  *lo = u * unit;
  *hi = *lo + unit < n ? *lo + unit : n;
  return 1;
}
