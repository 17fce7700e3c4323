/* Private helpers shared by the kernel sources (not part of the kernel API). */
#ifndef SWATC_RUNTIME_KERNELS_KERN_INTERNAL_H
#define SWATC_RUNTIME_KERNELS_KERN_INTERNAL_H

#include <stdint.h>

#include "runtime/kernels/kern.h"

/* Hot loops that plain C expresses well are compiled for AVX-512, AVX2 and baseline x86-64 and
 * picked at load time (GCC function multi-versioning); elsewhere they compile once. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define KERN_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define KERN_CLONES
#endif

/* The half-open range [*lo, *hi) of n items that worker t of T owns (contiguous, balanced). */
static inline void kern_split(int64_t n, int t, int T, int64_t *lo, int64_t *hi) {
  *lo = n * t / T;
  *hi = n * (t + 1) / T;
}

/* Runs fn(ctx, t, T) for every part t in [0, T) on up to T threads of the kernels' team (team.c:
 * waiting threads spin briefly, then yield, then sleep). The work split depends only on T, never on
 * how many threads run it (one when called from inside a part or an OpenMP region), so results are
 * reproducible. */
void kern_parallel(int T, void (*fn)(void *ctx, int t, int T), void *ctx);
/* kern_parallel of fn1, a barrier, then kern_parallel of fn2, as one job of the team. */
void kern_parallel2(int T, void (*fn1)(void *ctx, int t, int T), void (*fn2)(void *ctx, int t, int T), void *ctx);
/* kern_parallel of fns[0], a barrier, fns[1], ... fns[nst - 1] (1 <= nst <= 4), as one job. */
void kern_parallel_stages(int T, int nst, void (*const *fns)(void *ctx, int t, int T), void *ctx);

/* Work stealing over n units (n < 2^31) among T parts: each part starts on its kern_split range, front
 * to back (neighbouring units stay on one core, as with a static split: what an op before wrote there
 * is still in its cache), then takes units one by one from the back of the part with the most left.
 * For work whose units do not depend on which part runs them: a static split of a few-ms pass left one
 * of this kind of machine's two virtual CPUs waiting 10-15% of it. T <= KERN_STEAL_MAX.
 * A kern_steal is 16 KiB: keep it in a local of the calling function, uninitialised (kern_steal_init
 * writes only the T lines used), and give the workers a pointer; a member of an argument struct built
 * with an initializer would be zeroed whole on every call. */
#define KERN_STEAL_MAX 256
typedef struct kern_steal {
  struct {
    _Alignas(64) _Atomic uint64_t left; /* part t's units left: [low 32 bits, high 32 bits) */
  } r[KERN_STEAL_MAX];                  /* a cache line each: the owners claim without contention */
} kern_steal;
void kern_steal_init(kern_steal *q, int64_t n, int T);
/* The next unit for part t, or -1 when every unit has been taken. */
int64_t kern_steal_next(kern_steal *q, int t, int T);
/* kern_steal over n items in units of `unit` items (the last one shorter): set up for T parts, and
 * part t's next range [*lo, *hi) (0 when none is left). */
void kern_steal_init_units(kern_steal *q, int64_t n, int64_t unit, int T);
int kern_steal_range(kern_steal *q, int64_t n, int64_t unit, int t, int T, int64_t *lo, int64_t *hi);

/* Clamps a requested thread count to [1, 256]. */
int kern_threads_clamp(int nthreads);

/* Ceiling division for non-negative a and positive b. */
static inline int kern_cdiv(int a, int b) { return (a + b - 1) / b; }

/* Transposes a tile of at most 16x16: for j < nc and i < nstore,
 *   dst[j*ds + i] = (i < nload ? src[i*ss + j] : 0) + (bias ? bias[j] : 0).
 * Rows i >= nload of the source are not read (they read as zero). Uses AVX-512 when available. */
void kern_transpose16(const float *src, size_t ss, int nload, float *dst, size_t ds, int nc, int nstore,
                      const float *bias);
/* kern_transpose16 with column steps: dst[j*ds + i*dcs] = src[i*ss + j*scs] (+ bias[j]), for
 * subsampling (scs) and upsampling (dcs) layout transforms; gathers/scatters with AVX-512. */
void kern_transpose16_step(const float *src, size_t ss, size_t scs, int nload, float *dst, size_t ds, size_t dcs,
                           int nc, int nstore, const float *bias);
/* 1: MaxPool's 2x2 fast path runs its plain C version even where AVX-512 is there (for tests of the
 * SIMD one); 0 (default): the best the CPU has. */
void pool_use_portable(int on);
/* The plain C version of kern_transpose16_step (for tests of the SIMD one). */
void kern_transpose16_scalar(const float *src, size_t ss, size_t scs, int nload, float *dst, size_t ds, size_t dcs,
                             int nc, int nstore, const float *bias);

/* 1 if this CPU runs AVX-512F code (the kernels' fast paths), 0 otherwise or off x86-64; cached. */
int kern_cpu_avx512(void);

/* Strides (elements) of the row-major tensor `in` as seen from `out`'s index space after numpy
 * broadcasting: aligned to out->ndim dimensions, 0 where `in` is broadcast (size 1 or missing). */
void kern_bcast_strides(const kshape *in, const kshape *out, int64_t *strides);
/* Offset of the row-major linear index idx of shape s under strides st (s->ndim entries). */
int64_t kern_offset(const kshape *s, const int64_t *st, int64_t idx);

/* out (shape small, broadcastable to big) = scale * sums of X (shape big) over the broadcast
 * dimensions; each output element summed by one thread in row-major order (eltwise.c). */
void kern_reduce_sum(const kshape *big, const float *X, const kshape *small, float *out, float scale, int nthreads);

#endif
