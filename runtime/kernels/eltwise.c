/* Activations, broadcasting arithmetic and Dropout (see eltwise.h). */
#include "runtime/kernels/eltwise.h"

#include <math.h>
#include <string.h>

#include "runtime/kernels/kern_internal.h"

/* Elementwise loops are split into chunks of this many elements per thread task. */
#define ELT_CHUNK 16384

/* The half-open range [*lo, *hi) of n elements that worker t of T owns, cut at multiples of unit. */
static void unit_split(int64_t n, int64_t unit, int t, int T, int64_t *lo, int64_t *hi) {
  int64_t units = (n + unit - 1) / unit, a, b;
  kern_split(units, t, T, &a, &b);
  *lo = a * unit < n ? a * unit : n;
  *hi = b * unit < n ? b * unit : n;
}

/* Elements per block of the k-input sums (sum_relu_grad's general case, sum_n): they stay in L1. */
#define SUM_BLOCK 512

/* s[0..m) = (neg ? -x[0][b+i] : x[0][b+i]) + x[1][b+i] + ... + x[k-1][b+i], added in that order. */
static inline __attribute__((always_inline)) void block_sum(int64_t m, int k, const float *const *x, int64_t b,
                                                            int neg, float *restrict s) {
  const float *x0 = x[0] + b;
  if (neg)
    for (int64_t i = 0; i < m; i++) s[i] = -x0[i];
  else
    for (int64_t i = 0; i < m; i++) s[i] = x0[i];
  for (int j = 1; j < k; j++) {
    const float *xj = x[j] + b;
    for (int64_t i = 0; i < m; i++) s[i] += xj[i];
  }
}

/* ---------------------------------------------------------------------------------------------
 * Activations: reference. */

static float sigmoid(float x) {
  if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
  float e = expf(x);
  return e / (1.0f + e);
}

static float act_one(const act_desc *a, float x) {
  switch (a->kind) {
  case ACT_RELU: return x < 0.0f ? 0.0f : x;
  case ACT_LEAKY_RELU: return x < 0.0f ? a->alpha * x : x;
  case ACT_CLIP: return x < a->lo ? a->lo : (x > a->hi ? a->hi : x);
  case ACT_SIGMOID: return sigmoid(x);
  case ACT_TANH: return tanhf(x);
  default: SW_ASSERT(!"unknown activation"); return 0.0f;
  }
}

static float act_grad_one(const act_desc *a, float x, float y, float dy) {
  switch (a->kind) {
  case ACT_RELU: return x > 0.0f ? dy : 0.0f;
  case ACT_LEAKY_RELU: return x > 0.0f ? dy : a->alpha * dy;
  case ACT_CLIP: return (x >= a->lo && x <= a->hi) ? dy : 0.0f;
  case ACT_SIGMOID: return dy * y * (1.0f - y);
  case ACT_TANH: return dy * (1.0f - y * y);
  default: SW_ASSERT(!"unknown activation"); return 0.0f;
  }
}

void act_fwd_ref(const act_desc *a, int64_t n, const float *x, float *y) {
  for (int64_t i = 0; i < n; i++) y[i] = act_one(a, x[i]);
}

void act_bwd_ref(const act_desc *a, int64_t n, const float *x, const float *y, const float *dy, float *dx) {
  for (int64_t i = 0; i < n; i++) dx[i] = act_grad_one(a, x ? x[i] : 0.0f, y ? y[i] : 0.0f, dy[i]);
}

/* ---------------------------------------------------------------------------------------------
 * Activations: fast (vectorised piecewise-linear ones; Sigmoid/Tanh call libm per element). */

KERN_CLONES static void act_fwd_chunk(const act_desc *a, int64_t n, const float *x, float *y) {
  float alpha = a->alpha, lo = a->lo, hi = a->hi;
  switch (a->kind) {
  case ACT_RELU:
    for (int64_t i = 0; i < n; i++) y[i] = x[i] < 0.0f ? 0.0f : x[i];
    break;
  case ACT_LEAKY_RELU:
    for (int64_t i = 0; i < n; i++) y[i] = x[i] < 0.0f ? alpha * x[i] : x[i];
    break;
  case ACT_CLIP:
    for (int64_t i = 0; i < n; i++) {
      float v = x[i];
      y[i] = v < lo ? lo : (v > hi ? hi : v);
    }
    break;
  default:
    for (int64_t i = 0; i < n; i++) y[i] = act_one(a, x[i]);
    break;
  }
}

KERN_CLONES static void act_bwd_chunk(const act_desc *a, int64_t n, const float *x, const float *y, const float *dy,
                                      float *dx) {
  float alpha = a->alpha, lo = a->lo, hi = a->hi;
  switch (a->kind) {
  case ACT_RELU:
    for (int64_t i = 0; i < n; i++) dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
    break;
  case ACT_LEAKY_RELU:
    for (int64_t i = 0; i < n; i++) dx[i] = x[i] > 0.0f ? dy[i] : alpha * dy[i];
    break;
  case ACT_CLIP:
    for (int64_t i = 0; i < n; i++) dx[i] = (x[i] >= lo && x[i] <= hi) ? dy[i] : 0.0f;
    break;
  case ACT_SIGMOID:
    for (int64_t i = 0; i < n; i++) dx[i] = dy[i] * y[i] * (1.0f - y[i]);
    break;
  case ACT_TANH:
    for (int64_t i = 0; i < n; i++) dx[i] = dy[i] * (1.0f - y[i] * y[i]);
    break;
  default: SW_ASSERT(!"unknown activation");
  }
}

/* Operands of act_fwd and act_bwd, shared by their workers. */
typedef struct act_job {
  const act_desc *a;
  int64_t n;
  const float *x, *y, *dy;
  float *out;
} act_job;

static void act_fwd_part(void *ctx, int t, int T) {
  const act_job *j = ctx;
  int64_t lo, hi;
  unit_split(j->n, ELT_CHUNK, t, T, &lo, &hi);
  for (int64_t c = lo; c < hi; c += ELT_CHUNK) {
    int64_t len = hi - c < ELT_CHUNK ? hi - c : ELT_CHUNK;
    act_fwd_chunk(j->a, len, j->x + c, j->out + c);
  }
}

void act_fwd(const act_desc *a, int64_t n, const float *x, float *y, int nthreads) {
  act_job j = {.a = a, .n = n, .x = x, .out = y};
  kern_parallel(n > ELT_CHUNK ? nthreads : 1, act_fwd_part, &j);
}

static void act_bwd_part(void *ctx, int t, int T) {
  const act_job *j = ctx;
  int64_t lo, hi;
  unit_split(j->n, ELT_CHUNK, t, T, &lo, &hi);
  for (int64_t c = lo; c < hi; c += ELT_CHUNK) {
    int64_t len = hi - c < ELT_CHUNK ? hi - c : ELT_CHUNK;
    act_bwd_chunk(j->a, len, j->x ? j->x + c : NULL, j->y ? j->y + c : NULL, j->dy + c, j->out + c);
  }
}

void act_bwd(const act_desc *a, int64_t n, const float *x, const float *y, const float *dy, float *dx, int nthreads) {
  int uses_y = a->kind == ACT_SIGMOID || a->kind == ACT_TANH;
  SW_ASSERT(uses_y ? y != NULL : x != NULL);
  act_job j = {.a = a, .n = n, .x = x, .y = y, .dy = dy, .out = dx};
  kern_parallel(n > ELT_CHUNK ? nthreads : 1, act_bwd_part, &j);
}

/* ---------------------------------------------------------------------------------------------
 * Broadcasting iteration: the output index space with adjacent dimensions merged wherever every
 * operand is contiguous across them (or broadcast across both), size-1 dimensions dropped. */

typedef struct bc_iter {
  int nd;
  int64_t d[KERN_MAX_DIMS];
  int64_t st[3][KERN_MAX_DIMS]; /* per operand; operand 0 is usually the output (contiguous) */
} bc_iter;

static void bc_iter_init(bc_iter *it, const kshape *y, int nops, const kshape *const *ops) {
  int64_t st[3][KERN_MAX_DIMS];
  for (int o = 0; o < nops; o++) kern_bcast_strides(ops[o], y, st[o]);
  memset(it, 0, sizeof *it);
  for (int i = 0; i < y->ndim; i++) {
    if (y->d[i] == 1) continue;
    int n = it->nd;
    int merge = n > 0;
    for (int o = 0; o < nops && merge; o++) merge = it->st[o][n - 1] == st[o][i] * y->d[i];
    if (merge) {
      it->d[n - 1] *= y->d[i];
      for (int o = 0; o < nops; o++) it->st[o][n - 1] = st[o][i];
    } else {
      it->d[n] = y->d[i];
      for (int o = 0; o < nops; o++) it->st[o][n] = st[o][i];
      it->nd++;
    }
  }
  if (it->nd == 0) { /* a scalar or all-ones shape: one element */
    it->nd = 1;
    it->d[0] = 1;
    for (int o = 0; o < nops; o++) it->st[o][0] = 1;
  }
}

/* Offset of operand o at the start of row `row` (all dimensions but the last). */
static int64_t bc_row_offset(const bc_iter *it, int o, int64_t row) {
  int64_t off = 0;
  for (int i = it->nd - 2; i >= 0; i--) {
    off += (row % it->d[i]) * it->st[o][i];
    row /= it->d[i];
  }
  return off;
}

KERN_CLONES static void bin_row(binop_kind op, int64_t n, const float *a, int64_t sa, const float *b, int64_t sb,
                                float *y) {
#define BIN_LOOP(EXPR)                                                                                         \
  do {                                                                                                         \
    if (sa == 1 && sb == 1)                                                                                    \
      for (int64_t i = 0; i < n; i++) {                                                                        \
        float u = a[i], v = b[i];                                                                              \
        y[i] = EXPR;                                                                                           \
      }                                                                                                        \
    else if (sa == 1 && sb == 0) {                                                                             \
      float v = b[0];                                                                                          \
      for (int64_t i = 0; i < n; i++) {                                                                        \
        float u = a[i];                                                                                        \
        y[i] = EXPR;                                                                                           \
      }                                                                                                        \
    } else if (sa == 0 && sb == 1) {                                                                           \
      float u = a[0];                                                                                          \
      for (int64_t i = 0; i < n; i++) {                                                                        \
        float v = b[i];                                                                                        \
        y[i] = EXPR;                                                                                           \
      }                                                                                                        \
    } else                                                                                                     \
      for (int64_t i = 0; i < n; i++) {                                                                        \
        float u = a[i * sa], v = b[i * sb];                                                                    \
        y[i] = EXPR;                                                                                           \
      }                                                                                                        \
  } while (0)
  switch (op) {
  case BIN_ADD: BIN_LOOP(u + v); break;
  case BIN_SUB: BIN_LOOP(u - v); break;
  case BIN_MUL: BIN_LOOP(u * v); break;
  default: BIN_LOOP(u / v); break;
  }
#undef BIN_LOOP
}

/* Operands of binop_fwd, shared by its workers. */
typedef struct bin_job {
  binop_kind op;
  const bc_iter *it;
  int64_t rows, per; /* rows of the iteration, rows per task */
  const float *A, *B;
  float *Y;
} bin_job;

/* Worker t's tasks (groups of `per` rows) of binop_fwd. */
static void binop_fwd_part(void *ctx, int t, int T) {
  const bin_job *j = ctx;
  const bc_iter *it = j->it;
  int64_t inner = it->d[it->nd - 1], sa = it->st[1][it->nd - 1], sb = it->st[2][it->nd - 1];
  int64_t t0, t1;
  kern_split((j->rows + j->per - 1) / j->per, t, T, &t0, &t1);
  int64_t r1 = t1 * j->per < j->rows ? t1 * j->per : j->rows;
  for (int64_t r = t0 * j->per; r < r1; r++)
    bin_row(j->op, inner, j->A + bc_row_offset(it, 1, r), sa, j->B + bc_row_offset(it, 2, r), sb, j->Y + r * inner);
}

void binop_fwd(binop_kind op, const kshape *a, const float *A, const kshape *b, const float *B, const kshape *y,
               float *Y, int nthreads) {
  if (kshape_numel(y) == 0) return;
  const kshape *ops[3] = {y, a, b};
  bc_iter it;
  bc_iter_init(&it, y, 3, ops);
  int64_t inner = it.d[it.nd - 1], rows = kshape_numel(y) / inner;
  /* Rows are grouped so that each task has a useful amount of work. */
  int64_t per = inner >= ELT_CHUNK ? 1 : ELT_CHUNK / inner;
  int64_t ntask = (rows + per - 1) / per;
  bin_job j = {.op = op, .it = &it, .rows = rows, .per = per, .A = A, .B = B, .Y = Y};
  kern_parallel(ntask > 1 ? nthreads : 1, binop_fwd_part, &j);
}

/* g applied to the other operand inside a gradient sum. */
typedef enum grad_g { G_ONE, G_OTHER, G_RECIP } grad_g;

/* sum over i < n of dy[i*sy] * g(o[i*so]), vectorised for unit strides. */
KERN_CLONES static float grad_run(int64_t n, const float *dy, int64_t sy, const float *o, int64_t so, grad_g g) {
  float acc = 0.0f;
  if (g == G_ONE) {
    if (sy == 1) {
#pragma omp simd reduction(+ : acc)
      for (int64_t i = 0; i < n; i++) acc += dy[i];
    } else {
      for (int64_t i = 0; i < n; i++) acc += dy[i * sy];
    }
  } else if (g == G_OTHER) {
    if (sy == 1 && so == 1) {
#pragma omp simd reduction(+ : acc)
      for (int64_t i = 0; i < n; i++) acc += dy[i] * o[i];
    } else {
      for (int64_t i = 0; i < n; i++) acc += dy[i * sy] * o[i * so];
    }
  } else {
    if (sy == 1 && so == 1) {
#pragma omp simd reduction(+ : acc)
      for (int64_t i = 0; i < n; i++) acc += dy[i] / o[i];
    } else {
      for (int64_t i = 0; i < n; i++) acc += dy[i * sy] / o[i * so];
    }
  }
  return acc;
}

/* reduce_grad's iteration (kept dimensions, then reduced ones) and operands, shared by its workers. */
typedef struct grad_job {
  int nk, nr; /* kept and reduced dimensions */
  int64_t kd[KERN_MAX_DIMS], ksy[KERN_MAX_DIMS], kso[KERN_MAX_DIMS]; /* kept: sizes, dY and O strides */
  int64_t rd[KERN_MAX_DIMS], rsy[KERN_MAX_DIMS], rso[KERN_MAX_DIMS]; /* reduced: the same */
  int64_t nt, inner, outer_r; /* target elements, the last reduced size, the product of the others */
  const float *dY, *O;
  grad_g g;
  float scale;
  float *out;
} grad_job;

/* Worker t's target elements of reduce_grad, each summed alone in row-major order. */
static void reduce_grad_part(void *ctx, int t, int T) {
  const grad_job *j = ctx;
  int nk = j->nk, nr = j->nr;
  int64_t e0, e1;
  kern_split(j->nt, t, T, &e0, &e1);
  for (int64_t e = e0; e < e1; e++) {
    /* Offsets of element e's block: e enumerates the kept dimensions in row-major order. */
    int64_t oy = 0, oo = 0, rem = e;
    for (int i = nk - 1; i >= 0; i--) {
      int64_t ix = rem % j->kd[i];
      rem /= j->kd[i];
      oy += ix * j->ksy[i];
      oo += ix * j->kso[i];
    }
    double acc = 0.0;
    for (int64_t r = 0; r < j->outer_r; r++) {
      int64_t py = oy, po = oo, rr = r;
      for (int i = nr - 2; i >= 0; i--) {
        int64_t ix = rr % j->rd[i];
        rr /= j->rd[i];
        py += ix * j->rsy[i];
        po += ix * j->rso[i];
      }
      acc += grad_run(j->inner, j->dY + py, nr ? j->rsy[nr - 1] : 1, j->O ? j->O + po : NULL, nr ? j->rso[nr - 1] : 1,
                      j->g);
    }
    j->out[e] = (float)(acc * j->scale);
  }
}

/* out[e] = scale * sum over the output positions p that broadcast from element e of the target
 * shape `t` of dY[p] * g(O[p]) (O has shape `os`, may be NULL for G_ONE). The y dimensions are
 * reordered so the target's own dimensions come first and the reduced ones last; each target
 * element is then one block of the iteration, summed by one thread in row-major order. */
static void reduce_grad(const kshape *y, const float *dY, const kshape *t, float *out, const kshape *os,
                        const float *O, grad_g g, float scale, int nthreads) {
  if (kshape_numel(t) == 0) return;
  if (kshape_numel(y) == 0) { /* sums over nothing */
    memset(out, 0, sizeof(float) * kshape_numel(t));
    return;
  }
  const kshape *ops[3] = {y, t, os ? os : y};
  bc_iter it;
  bc_iter_init(&it, y, 3, ops);
  /* Split into kept (target stride != 0) and reduced dimensions, keeping their order. */
  grad_job j = {.dY = dY, .O = O, .g = g, .scale = scale, .out = out};
  for (int i = 0; i < it.nd; i++) {
    if (it.st[1][i] != 0) {
      j.kd[j.nk] = it.d[i], j.ksy[j.nk] = it.st[0][i], j.kso[j.nk] = it.st[2][i];
      j.nk++;
    } else {
      j.rd[j.nr] = it.d[i], j.rsy[j.nr] = it.st[0][i], j.rso[j.nr] = it.st[2][i];
      j.nr++;
    }
  }
  j.nt = kshape_numel(t), j.inner = j.nr ? j.rd[j.nr - 1] : 1, j.outer_r = 1;
  for (int i = 0; i < j.nr - 1; i++) j.outer_r *= j.rd[i];
  kern_parallel(j.nt > 1 ? nthreads : 1, reduce_grad_part, &j);
}

/* dT for the operand of shape t: scale * sum of dY * g(O). */
static void operand_grad(const kshape *y, const float *dY, const kshape *t, float *out, const kshape *os,
                         const float *O, grad_g g, float scale, int nthreads) {
  if (kshape_numel(t) == kshape_numel(y)) { /* no reduction: elementwise */
    int64_t n = kshape_numel(y);
    if (g == G_ONE) {
      kshape s = kshape_make(0, NULL);
      float sc = scale;
      binop_fwd(BIN_MUL, y, dY, &s, &sc, y, out, nthreads);
    } else {
      binop_fwd(g == G_OTHER ? BIN_MUL : BIN_DIV, y, dY, os, O, y, out, nthreads);
      if (scale != 1.0f)
        for (int64_t i = 0; i < n; i++) out[i] *= scale;
    }
    return;
  }
  reduce_grad(y, dY, t, out, os, O, g, scale, nthreads);
}

void binop_bwd(binop_kind op, const kshape *a, const float *A, const kshape *b, const float *B, const kshape *y,
               const float *dY, float *dA, float *dB, int nthreads) {
  switch (op) {
  case BIN_ADD:
  case BIN_SUB:
    if (dA) operand_grad(y, dY, a, dA, NULL, NULL, G_ONE, 1.0f, nthreads);
    if (dB) operand_grad(y, dY, b, dB, NULL, NULL, G_ONE, op == BIN_ADD ? 1.0f : -1.0f, nthreads);
    break;
  case BIN_MUL:
    if (dA) operand_grad(y, dY, a, dA, b, B, G_OTHER, 1.0f, nthreads);
    if (dB) operand_grad(y, dY, b, dB, a, A, G_OTHER, 1.0f, nthreads);
    break;
  case BIN_DIV:
    if (dA) operand_grad(y, dY, a, dA, b, B, G_RECIP, 1.0f, nthreads);
    if (dB) { /* dB = -sum(dY * A) / B^2, B being constant over the sum */
      operand_grad(y, dY, b, dB, a, A, G_OTHER, 1.0f, nthreads);
      int64_t n = kshape_numel(b);
      for (int64_t i = 0; i < n; i++) dB[i] = -dB[i] / (B[i] * B[i]);
    }
    break;
  }
}

/* ---------------------------------------------------------------------------------------------
 * Dropout. */

static uint64_t mix64(uint64_t z) { /* murmur3 finaliser */
  z ^= z >> 33;
  z *= 0xff51afd7ed558ccdull;
  z ^= z >> 33;
  z *= 0xc4ceb9fe1a85ec53ull;
  z ^= z >> 33;
  return z;
}

static uint64_t dropout_key(uint64_t seed, uint64_t step) {
  return mix64(seed * 0x9e3779b97f4a7c15ull + mix64(step + 0x632be59bd9b4e019ull));
}

static float uniform_of(uint64_t key, int64_t i) {
  uint64_t z = mix64(key ^ ((uint64_t)i * 0xd1b54a32d192ed03ull));
  return (float)(z >> 40) * (1.0f / 16777216.0f);
}

float dropout_uniform(uint64_t seed, uint64_t step, int64_t i) { return uniform_of(dropout_key(seed, step), i); }

/* Operands of dropout_fwd and dropout_bwd, shared by their workers. */
typedef struct drop_job {
  int64_t n;
  float ratio, scale;
  uint64_t key;
  const float *x;      /* forward: x; backward: dy */
  float *y;            /* forward: y; backward: dx */
  uint8_t *mask;       /* forward: the mask made */
  const uint8_t *keep; /* backward: the mask read */
} drop_job;

static void dropout_fwd_part(void *ctx, int t, int T) {
  const drop_job *j = ctx;
  int64_t lo, hi;
  kern_split(j->n, t, T, &lo, &hi);
  for (int64_t i = lo; i < hi; i++) {
    uint8_t keep = uniform_of(j->key, i) >= j->ratio;
    j->mask[i] = keep;
    j->y[i] = keep ? j->x[i] * j->scale : 0.0f;
  }
}

void dropout_fwd(int64_t n, float ratio, uint64_t seed, uint64_t step, const float *x, float *y, uint8_t *mask,
                 int nthreads) {
  SW_ASSERT(ratio >= 0.0f && ratio < 1.0f);
  drop_job j = {.n = n, .ratio = ratio, .scale = 1.0f / (1.0f - ratio), .key = dropout_key(seed, step), .x = x,
                .y = y, .mask = mask};
  kern_parallel(n > ELT_CHUNK ? nthreads : 1, dropout_fwd_part, &j);
}

/* One thread's share of dropout_bwd, branch-free so it vectorises (the mask is a coin toss). */
KERN_CLONES static void dropout_bwd_run(int64_t n, float scale, const uint8_t *restrict mask, const float *restrict dy,
                                        float *restrict dx) {
  for (int64_t i = 0; i < n; i++) { /* dx = mask ? dy * scale : +0 (also where dy is not finite), as a bit mask */
    float v = dy[i] * scale;
    uint32_t b;
    memcpy(&b, &v, sizeof b);
    b &= 0u - (uint32_t)(mask[i] != 0);
    memcpy(&dx[i], &b, sizeof b);
  }
}

static void dropout_bwd_part(void *ctx, int t, int T) {
  const drop_job *j = ctx;
  int64_t lo, hi;
  kern_split(j->n, t, T, &lo, &hi);
  dropout_bwd_run(hi - lo, j->scale, j->keep + lo, j->x + lo, j->y + lo);
}

void dropout_bwd(int64_t n, float ratio, const uint8_t *mask, const float *dy, float *dx, int nthreads) {
  SW_ASSERT(ratio >= 0.0f && ratio < 1.0f);
  drop_job j = {.n = n, .ratio = ratio, .scale = 1.0f / (1.0f - ratio), .x = dy, .y = dx, .keep = mask};
  kern_parallel(n > ELT_CHUNK ? nthreads : 1, dropout_bwd_part, &j);
}

/* ---------------------------------------------------------------------------------------------
 * Bit masks (element i is bit i % 8 of byte i / 8). */

/* Elements per unit of a bit-mask kernel's work split: 64 bytes of mask, so no two workers write
 * one byte, or one cache line, of it. */
#define BIT_UNIT 512

/* The half-open range [*lo, *hi) of n elements that worker t of T owns, cut at BIT_UNIT multiples. */
static void bits_split(int64_t n, int t, int T, int64_t *lo, int64_t *hi) { unit_split(n, BIT_UNIT, t, T, lo, hi); }

/* Bit i of the mask. */
static inline int bit_at(const uint8_t *bits, int64_t i) { return (bits[i >> 3] >> (i & 7)) & 1; }

/* s where on, else +0 (as dropout_bwd: a bit mask, so a non-finite s that is masked off gives +0). */
static inline float gate_bits(float s, int on) {
  uint32_t u;
  memcpy(&u, &s, sizeof u);
  u &= 0u - (uint32_t)on;
  memcpy(&s, &u, sizeof s);
  return s;
}

/* bits of (y[i] > 0) for i < n (n a multiple of 8, or the end of the mask), plain C. */
static void pos_bits_c(int64_t n, const float *restrict y, uint8_t *restrict bits) {
  for (int64_t j = 0; j < n; j += 8) {
    unsigned b = 0;
    for (int64_t k = 0; k < 8 && j + k < n; k++) b |= (unsigned)(y[j + k] > 0.0f) << k;
    bits[j >> 3] = (uint8_t)b;
  }
}

/* dx[i] = the sum of dy[0..k)[i] where bit i is set, else +0, plain C (dx may be one of the dy). */
static void sum_gate_bits_c(int64_t n, int k, const float *const *dy, const uint8_t *bits, float *dx) {
  for (int64_t i = 0; i < n; i++) {
    float s = dy[0][i];
    for (int j = 1; j < k; j++) s += dy[j][i];
    dx[i] = gate_bits(s, bit_at(bits, i));
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define ELT_AVX512 __attribute__((target("avx512f")))

/* pos_bits_c with AVX-512: one compare per 16 floats gives two bytes of the mask. */
ELT_AVX512 static void pos_bits_avx512(int64_t n, const float *restrict y, uint8_t *restrict bits) {
  const __m512 z = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __mmask16 m = _mm512_cmp_ps_mask(_mm512_loadu_ps(y + i), z, _CMP_GT_OQ);
    memcpy(bits + (i >> 3), &m, sizeof m);
  }
  if (i < n) pos_bits_c(n - i, y + i, bits + (i >> 3));
}

/* sum_gate_bits_c with AVX-512 (the same additions in the same order; a masked move gives +0). */
ELT_AVX512 static void sum_gate_bits_avx512(int64_t n, int k, const float *const *dy, const uint8_t *bits,
                                            float *dx) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512 s = _mm512_loadu_ps(dy[0] + i);
    for (int j = 1; j < k; j++) s = _mm512_add_ps(s, _mm512_loadu_ps(dy[j] + i));
    __mmask16 m;
    memcpy(&m, bits + (i >> 3), sizeof m);
    _mm512_storeu_ps(dx + i, _mm512_maskz_mov_ps(m, s));
  }
  if (i < n) {
    const float *part[64];
    for (int j = 0; j < k; j++) part[j] = dy[j] + i;
    sum_gate_bits_c(n - i, k, part, bits + (i >> 3), dx + i);
  }
}
#endif

static int elt_portable; /* tests: 1 runs the plain C bit-mask kernels even where AVX-512 is there */

void eltwise_use_portable(int on) { elt_portable = on; }

/* The fastest pos_bits this CPU runs. */
static void pos_bits(int64_t n, const float *y, uint8_t *bits) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (!elt_portable && kern_cpu_avx512()) {
    pos_bits_avx512(n, y, bits);
    return;
  }
#endif
  pos_bits_c(n, y, bits);
}

void relu_mask_at(int64_t off, int64_t n, const float *y, uint8_t *bits) {
  int s = (int)(off & 7);
  if (s && n > 0) { /* finish the byte a run before this one began */
    int k = 8 - s < n ? 8 - s : (int)n;
    unsigned b = 0;
    for (int i = 0; i < k; i++) b |= (unsigned)(y[i] > 0.0f) << (s + i);
    bits[off >> 3] |= (uint8_t)b;
    off += k, y += k, n -= k;
  }
  if (n > 0) pos_bits(n, y, bits + (off >> 3));
}

/* The fastest sum_gate_bits this CPU runs. */
static void sum_gate_bits(int64_t n, int k, const float *const *dy, const uint8_t *bits, float *dx) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (!elt_portable && kern_cpu_avx512()) {
    sum_gate_bits_avx512(n, k, dy, bits, dx);
    return;
  }
#endif
  sum_gate_bits_c(n, k, dy, bits, dx);
}

/* Operands of the bit-mask and fused residual kernels, shared by their workers. */
typedef struct bits_job {
  int64_t n;
  int k;
  const float *a, *b, *y;
  const float *const *dy;
  const uint8_t *gate;
  uint8_t *bits;
  float *out;
  kern_steal *units; /* of ELT_CHUNK elements (whole mask bytes) for the fused kernels */
} bits_job;

static void relu_mask_part(void *ctx, int t, int T) {
  const bits_job *j = ctx;
  int64_t lo, hi;
  bits_split(j->n, t, T, &lo, &hi);
  pos_bits(hi - lo, j->y + lo, j->bits + lo / 8);
}

void relu_mask(int64_t n, const float *y, uint8_t *bits, int nthreads) {
  bits_job j = {.n = n, .y = y, .bits = bits};
  kern_parallel(n > ELT_CHUNK ? nthreads : 1, relu_mask_part, &j);
}

/* ---------------------------------------------------------------------------------------------
 * Fused residual-block kernels. */

void add_relu_ref(int64_t n, const float *a, const float *b, float *y, uint8_t *bits) {
  if (bits) memset(bits, 0, (size_t)(n + 7) / 8);
  for (int64_t i = 0; i < n; i++) {
    float s = a[i] + b[i];
    y[i] = s < 0.0f ? 0.0f : s; /* act_one's Relu */
    if (bits && y[i] > 0.0f) bits[i >> 3] |= (uint8_t)(1u << (i & 7));
  }
}

/* Elements per block of add_relu: Y is written, then the block's mask is made from Y while it is in
 * L1 (a multiple of 8, so a block's mask is whole bytes). */
#define AR_BLOCK 1024

/* y = max(a + b, 0) as Add then Relu (y may be a or b). */
KERN_CLONES static void add_relu_run(int64_t n, const float *a, const float *b, float *y) {
  for (int64_t i = 0; i < n; i++) {
    float s = a[i] + b[i];
    y[i] = s < 0.0f ? 0.0f : s;
  }
}

static void add_relu_part(void *ctx, int t, int T) {
  bits_job *j = ctx;
  int64_t lo, hi;
  while (kern_steal_range(j->units, j->n, ELT_CHUNK, t, T, &lo, &hi))
    for (int64_t i = lo; i < hi; i += AR_BLOCK) {
      int64_t m = hi - i < AR_BLOCK ? hi - i : AR_BLOCK;
      add_relu_run(m, j->a + i, j->b + i, j->out + i);
      if (j->bits) pos_bits(m, j->out + i, j->bits + i / 8);
    }
}

void add_relu(int64_t n, const float *a, const float *b, float *y, uint8_t *bits, int nthreads) {
  kern_steal q;
  bits_job j = {.n = n, .a = a, .b = b, .out = y, .bits = bits, .units = &q};
  int T = n > ELT_CHUNK ? nthreads : 1;
  kern_steal_init_units(&q, n, ELT_CHUNK, T);
  kern_parallel(T, add_relu_part, &j);
}

void sum_relu_grad_ref(int64_t n, int k, const float *const *dy, const float *y, const uint8_t *bits, float *dx) {
  SW_ASSERT(k >= 1 && (y == NULL) != (bits == NULL));
  for (int64_t i = 0; i < n; i++) {
    float s = dy[0][i];
    for (int j = 1; j < k; j++) s += dy[j][i];
    dx[i] = gate_bits(s, bits ? bit_at(bits, i) : y[i] > 0.0f);
  }
}

/* sum_relu_grad's share of one thread with the gate Y. */
KERN_CLONES static void sum_relu_grad_run(int64_t n, int k, const float *const *dy, const float *y, float *dx) {
  if (k == 2) { /* the residual block's case: one pass, no partial sums */
    const float *a = dy[0], *b = dy[1];
    for (int64_t i = 0; i < n; i++) dx[i] = gate_bits(a[i] + b[i], y[i] > 0.0f);
    return;
  }
  float s[SUM_BLOCK];
  for (int64_t lo = 0; lo < n; lo += SUM_BLOCK) {
    int64_t m = n - lo < SUM_BLOCK ? n - lo : SUM_BLOCK;
    block_sum(m, k, dy, lo, 0, s);
    for (int64_t i = 0; i < m; i++) dx[lo + i] = gate_bits(s[i], y[lo + i] > 0.0f);
  }
}

static void sum_relu_grad_part(void *ctx, int t, int T) {
  bits_job *j = ctx;
  int64_t lo, hi;
  while (kern_steal_range(j->units, j->n, ELT_CHUNK, t, T, &lo, &hi)) {
    const float *part[64];
    for (int i = 0; i < j->k; i++) part[i] = j->dy[i] + lo;
    if (j->gate)
      sum_gate_bits(hi - lo, j->k, part, j->gate + lo / 8, j->out + lo);
    else
      sum_relu_grad_run(hi - lo, j->k, part, j->y + lo, j->out + lo);
  }
}

typedef struct sub_job {
  int64_t planes;
  int H, W, sh, sw;
  const float *a, *b, *y;
  const uint8_t *bits;
  int64_t nbytes; /* of the mask */
  float *dx;
  int64_t unit;     /* planes per unit of work (kern_steal) */
  kern_steal *units;
} sub_job;

/* One row of sum_relu_grad_sub in plain C: element i (of the whole tensor) is row element w = i - i0;
 * br is the row of b on the grid, NULL for a row off it. */
static void sub_row_c(const sub_job *j, int64_t i0, const float *br) {
  for (int w = 0; w < j->W; w++) {
    int64_t i = i0 + w;
    float s = j->a[i] + (br && w % j->sw == 0 ? br[w / j->sw] : 0.0f);
    j->dx[i] = gate_bits(s, j->bits ? bit_at(j->bits, i) : j->y[i] > 0.0f);
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
/* The n (<= 16) mask bits from bit i on of a mask of nbytes bytes: one 4-byte load, or near the end
 * only the bytes that hold them. */
static inline __mmask16 bits16_at(const uint8_t *bits, int64_t nbytes, int64_t i, int n) {
  uint32_t v = 0;
  if ((i >> 3) + 4 <= nbytes) memcpy(&v, bits + (i >> 3), 4);
  else
    for (int64_t b = i >> 3, k = 0; b < nbytes && k < 4; b++, k++) v |= (uint32_t)bits[b] << (8 * k);
  return (__mmask16)((v >> (i & 7)) & ((1u << n) - 1u));
}

/* The grid of sum_relu_grad_sub seen 16 plane elements at a time: for chunk c (elements 16c ..),
 * em[c] has the lanes on the grid and eo[c] the index in b's plane of the first of them (grid points
 * come in plane order in b, so a chunk's are consecutive there). Planes of more than SUB_MAX_CHUNKS
 * chunks (16384 elements) take the plain C rows. */
#define SUB_MAX_CHUNKS 1024
static void sub_chunks(const sub_job *j, __mmask16 *em, int32_t *eo) {
  int HW = j->H * j->W, nq = (HW + 15) / 16, o = 0;
  for (int c = 0; c < nq; c++) {
    unsigned m = 0;
    eo[c] = o;
    for (int l = 0; l < 16 && 16 * c + l < HW; l++) {
      int h = (16 * c + l) / j->W, w = (16 * c + l) % j->W;
      if (h % j->sh == 0 && w % j->sw == 0) m |= 1u << l, o++;
    }
    em[c] = (__mmask16)m;
  }
}

/* One plane of sum_relu_grad_sub with AVX-512: 16 elements at a time, each chunk's grid values from b
 * by one masked expand load; the same addition (a first, +0 off the grid) and gate. Whole chunks use
 * plain loads and stores and, in planes that start on a 16-bit boundary of the mask, a 2-byte mask
 * load: with masked ones everywhere it took 1.8-1.9x the time of sum_relu_grad. i0: the plane's
 * first element in the tensor, bp: its b plane. */
ELT_AVX512 static void sub_plane_avx512(const sub_job *j, int64_t i0, const float *bp, const __mmask16 *em,
                                        const int32_t *eo) {
  const __m512 z = _mm512_setzero_ps();
  int HW = j->H * j->W, full = HW / 16;
  int aligned = !(i0 & 15) && j->bits;
  for (int c = 0; c < full; c++) {
    int64_t i = i0 + 16 * c;
    __m512 s = _mm512_add_ps(_mm512_loadu_ps(j->a + i), _mm512_maskz_expandloadu_ps(em[c], bp + eo[c]));
    __mmask16 on;
    if (aligned) memcpy(&on, j->bits + (i >> 3), sizeof on);
    else if (j->bits) on = bits16_at(j->bits, j->nbytes, i, 16);
    else on = _mm512_cmp_ps_mask(_mm512_loadu_ps(j->y + i), z, _CMP_GT_OQ);
    _mm512_storeu_ps(j->dx + i, _mm512_maskz_mov_ps(on, s));
  }
  if (HW % 16) {
    int n = HW % 16;
    int64_t i = i0 + 16 * full;
    __mmask16 lm = (__mmask16)((1u << n) - 1u);
    __m512 s = _mm512_add_ps(_mm512_maskz_loadu_ps(lm, j->a + i), _mm512_maskz_expandloadu_ps(em[full], bp + eo[full]));
    __mmask16 on = j->bits ? bits16_at(j->bits, j->nbytes, i, n)
                           : _mm512_cmp_ps_mask(_mm512_maskz_loadu_ps(lm, j->y + i), z, _CMP_GT_OQ);
    _mm512_mask_storeu_ps(j->dx + i, lm, _mm512_maskz_mov_ps(on, s));
  }
}
#endif

static void sum_relu_grad_sub_part(void *ctx, int t, int T) {
  sub_job *j = ctx;
  int64_t lo, hi, HW = (int64_t)j->H * j->W, P = (j->H + j->sh - 1) / j->sh, Q = (j->W + j->sw - 1) / j->sw;
#if defined(__x86_64__) && defined(__GNUC__)
  if (!elt_portable && kern_cpu_avx512() && (HW + 15) / 16 <= SUB_MAX_CHUNKS) {
    __mmask16 em[SUB_MAX_CHUNKS];
    int32_t eo[SUB_MAX_CHUNKS];
    sub_chunks(j, em, eo);
    while (kern_steal_range(j->units, j->planes, j->unit, t, T, &lo, &hi))
      for (int64_t q = lo; q < hi; q++) sub_plane_avx512(j, q * HW, j->b + q * P * Q, em, eo);
    return;
  }
#endif
  while (kern_steal_range(j->units, j->planes, j->unit, t, T, &lo, &hi))
    for (int64_t q = lo; q < hi; q++)
      for (int h = 0; h < j->H; h++)
        sub_row_c(j, q * HW + (int64_t)h * j->W, h % j->sh ? NULL : j->b + (q * P + h / j->sh) * Q);
}

void sum_relu_grad_sub(int64_t planes, int H, int W, int sh, int sw, const float *a, const float *b, const float *y,
                       const uint8_t *bits, float *dx, int nthreads) {
  SW_ASSERT(planes >= 0 && H >= 1 && W >= 1 && sh >= 1 && sw >= 1 && (y == NULL) != (bits == NULL));
  kern_steal q;
  sub_job j = {.planes = planes, .H = H, .W = W, .sh = sh, .sw = sw, .a = a, .b = b, .y = y, .bits = bits,
               .nbytes = (planes * H * W + 7) / 8, .dx = dx, .unit = (ELT_CHUNK + (int64_t)H * W - 1) / ((int64_t)H * W),
               .units = &q};
  int T = planes * H * W > ELT_CHUNK ? nthreads : 1;
  kern_steal_init_units(&q, planes, j.unit, T);
  kern_parallel(T, sum_relu_grad_sub_part, &j);
}

void sum_relu_grad(int64_t n, int k, const float *const *dy, const float *y, const uint8_t *bits, float *dx,
                   int nthreads) {
  SW_ASSERT(k >= 1 && k <= 64 && (y == NULL) != (bits == NULL));
  kern_steal q;
  bits_job j = {.n = n, .k = k, .dy = dy, .y = y, .gate = bits, .out = dx, .units = &q};
  int T = n > ELT_CHUNK ? nthreads : 1;
  kern_steal_init_units(&q, n, ELT_CHUNK, T);
  kern_parallel(T, sum_relu_grad_part, &j);
}

/* ---------------------------------------------------------------------------------------------
 * Sum of k tensors. */

/* y[i] = (neg ? -x[0][i] : x[0][i]) + x[1][i] + ... for lo <= i < hi, block by block (y may be one of the x). */
KERN_CLONES static void sum_n_run(int64_t lo, int64_t hi, int k, const float *const *x, int neg, float *y) {
  float s[SUM_BLOCK];
  for (int64_t b = lo; b < hi; b += SUM_BLOCK) {
    int64_t m = hi - b < SUM_BLOCK ? hi - b : SUM_BLOCK;
    block_sum(m, k, x, b, neg, s);
    for (int64_t i = 0; i < m; i++) y[b + i] = s[i];
  }
}

/* Operands of sum_n, shared by its workers. */
typedef struct sum_job {
  int64_t n;
  int k, neg;
  const float *const *x;
  float *y;
  kern_steal *units; /* of ELT_CHUNK elements */
} sum_job;

static void sum_n_part(void *ctx, int t, int T) {
  sum_job *j = ctx;
  int64_t lo, hi;
  while (kern_steal_range(j->units, j->n, ELT_CHUNK, t, T, &lo, &hi)) sum_n_run(lo, hi, j->k, j->x, j->neg, j->y);
}

void sum_n(int64_t n, int k, const float *const *x, int neg, float *y, int nthreads) {
  SW_ASSERT(k >= 1);
  kern_steal q;
  sum_job j = {.n = n, .k = k, .neg = neg, .x = x, .y = y, .units = &q};
  int T = n > ELT_CHUNK ? nthreads : 1;
  kern_steal_init_units(&q, n, ELT_CHUNK, T);
  kern_parallel(T, sum_n_part, &j);
}

void kern_reduce_sum(const kshape *big, const float *X, const kshape *small, float *out, float scale, int nthreads) {
  reduce_grad(big, X, small, out, NULL, NULL, G_ONE, scale, nthreads);
}
