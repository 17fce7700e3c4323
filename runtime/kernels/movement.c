/* Concat, Slice, Transpose, Pad, ReduceMean (see movement.h). */
#include "runtime/kernels/movement.h"

#include <string.h>

#include "runtime/kernels/kern_internal.h"

/* Row iteration: a row is all dimensions but the last; row r's multi-index is decoded here. */
static void row_index(const kshape *s, int64_t r, int64_t *idx) {
  for (int i = s->ndim - 2; i >= 0; i--) {
    idx[i] = r % s->d[i];
    r /= s->d[i];
  }
}

/* Offset (strides st) of the start of row r (all dimensions of s but the last). */
static int64_t row_offset(const kshape *s, const int64_t *st, int64_t r) {
  int64_t idx[KERN_MAX_DIMS], off = 0;
  row_index(s, r, idx);
  for (int k = 0; k < s->ndim - 1; k++) off += idx[k] * st[k];
  return off;
}

static int64_t prod(const kshape *s, int from, int to) {
  int64_t p = 1;
  for (int i = from; i < to; i++) p *= s->d[i];
  return p;
}

/* A scalar behaves as a one-element vector in the kernels below. */
static kshape as_1d(const kshape *s) {
  if (s->ndim > 0) return *s;
  int64_t one = 1;
  return kshape_make(1, &one);
}

/* ---------------------------------------------------------------------------------------------
 * Concat. */

int concat_shape(int n, const kshape *xs, int *axis, kshape *y, sw_err *e) {
  char s1[160], s2[160];
  if (n < 1) return sw_fail(e, SW_EINPUT, "Concat: needs at least one input");
  int nd = xs[0].ndim, ax = *axis < 0 ? *axis + nd : *axis;
  if (ax < 0 || ax >= nd) return sw_fail(e, SW_EINPUT, "Concat: axis %d is out of range for rank %d", *axis, nd);
  kshape r = xs[0];
  for (int i = 1; i < n; i++) {
    int ok = xs[i].ndim == nd;
    for (int k = 0; k < nd && ok; k++) ok = k == ax || xs[i].d[k] == xs[0].d[k];
    if (!ok)
      return sw_fail(e, SW_EINPUT, "Concat: input %d has shape %s, incompatible with %s along axis %d", i,
                     kshape_str(&xs[i], s1, sizeof s1), kshape_str(&xs[0], s2, sizeof s2), ax);
    r.d[ax] += xs[i].d[ax];
  }
  *axis = ax;
  *y = r;
  return SW_OK;
}

/* Operands of concat_copy, shared by its workers. */
typedef struct concat_job {
  int n, axis;
  const kshape *xs;
  int64_t outer, inner, total; /* total: elements of one outer index in y */
  const float *const *x;
  float *y;
  float *const *dx;
  const float *dy;
} concat_job;

/* Worker t's outer indices of concat_copy. */
static void concat_part(void *ctx, int t, int T) {
  const concat_job *j = ctx;
  int64_t lo, hi;
  kern_split(j->outer, t, T, &lo, &hi);
  for (int64_t o = lo; o < hi; o++) {
    int64_t off = o * j->total;
    for (int i = 0; i < j->n; i++) {
      int64_t len = j->xs[i].d[j->axis] * j->inner;
      if (j->y)
        memcpy(j->y + off, j->x[i] + o * len, sizeof(float) * len);
      else
        memcpy(j->dx[i] + o * len, j->dy + off, sizeof(float) * len);
      off += len;
    }
  }
}

static void concat_copy(int n, const kshape *xs, int axis, const float *const *x, float *y, float *const *dx,
                        const float *dy, int nthreads) {
  concat_job j = {.n = n, .axis = axis, .xs = xs, .outer = prod(&xs[0], 0, axis),
                  .inner = prod(&xs[0], axis + 1, xs[0].ndim), .x = x, .y = y, .dx = dx, .dy = dy};
  for (int i = 0; i < n; i++) j.total += xs[i].d[axis] * j.inner;
  kern_parallel(j.outer > 1 ? nthreads : 1, concat_part, &j);
}

void concat_fwd(int n, const kshape *xs, const float *const *x, int axis, float *y, int nthreads) {
  concat_copy(n, xs, axis, x, y, NULL, NULL, nthreads);
}

void concat_bwd(int n, const kshape *xs, int axis, const float *dy, float *const *dx, int nthreads) {
  concat_copy(n, xs, axis, NULL, NULL, dx, dy, nthreads);
}

/* ---------------------------------------------------------------------------------------------
 * Slice. */

int slice_resolve(const kshape *x, int n, const int64_t *starts, const int64_t *ends, const int64_t *axes,
                  const int64_t *steps, slice_desc *s, sw_err *e) {
  memset(s, 0, sizeof *s);
  s->x = *x;
  s->y = *x;
  for (int k = 0; k < x->ndim; k++) s->step[k] = 1;
  int seen[KERN_MAX_DIMS] = {0};
  if (n > x->ndim) return sw_fail(e, SW_EINPUT, "Slice: %d axes given for a rank-%d input", n, x->ndim);
  for (int i = 0; i < n; i++) {
    int64_t ax = axes ? axes[i] : i;
    if (ax < 0) ax += x->ndim;
    if (ax < 0 || ax >= x->ndim || seen[ax])
      return sw_fail(e, SW_EINPUT, "Slice: axis %lld is out of range or repeated (rank %d)",
                     (long long)(axes ? axes[i] : i), x->ndim);
    seen[ax] = 1;
    int64_t dim = x->d[ax], step = steps ? steps[i] : 1, st = starts[i], en = ends[i];
    if (step == 0) return sw_fail(e, SW_EINPUT, "Slice: step 0 on axis %lld", (long long)ax);
    if (st < 0) st += dim;
    if (en < 0) en += dim;
    int64_t cnt;
    if (step > 0) {
      st = st < 0 ? 0 : (st > dim ? dim : st);
      en = en < 0 ? 0 : (en > dim ? dim : en);
      cnt = en > st ? (en - st + step - 1) / step : 0;
    } else {
      st = st < 0 ? 0 : (st > dim - 1 ? dim - 1 : st);
      en = en < -1 ? -1 : (en > dim - 1 ? dim - 1 : en);
      cnt = st > en ? (st - en + (-step) - 1) / (-step) : 0;
    }
    s->start[ax] = cnt ? st : 0;
    s->step[ax] = step;
    s->y.d[ax] = cnt;
  }
  return SW_OK;
}

static void slice_copy(const slice_desc *s, const float *x, float *y, const float *dy, float *dx) {
  kshape ys = as_1d(&s->y), xs = as_1d(&s->x);
  int nd = ys.ndim;
  int64_t xst[KERN_MAX_DIMS], idx[KERN_MAX_DIMS];
  kshape_strides(&xs, xst);
  int64_t inner = ys.d[nd - 1], rows = inner ? kshape_numel(&ys) / inner : 0;
  int64_t start_last = s->x.ndim ? s->start[nd - 1] : 0, step_last = s->x.ndim ? s->step[nd - 1] : 1;
  for (int64_t r = 0; r < rows; r++) {
    row_index(&ys, r, idx);
    int64_t off = start_last;
    for (int k = 0; k < nd - 1; k++) off += (s->start[k] + idx[k] * s->step[k]) * xst[k];
    for (int64_t j = 0; j < inner; j++) {
      if (y)
        y[r * inner + j] = x[off + j * step_last];
      else
        dx[off + j * step_last] = dy[r * inner + j];
    }
  }
}

void slice_fwd(const slice_desc *s, const float *x, float *y) { slice_copy(s, x, y, NULL, NULL); }

void slice_bwd(const slice_desc *s, const float *dy, float *dx) {
  memset(dx, 0, sizeof(float) * kshape_numel(&s->x));
  slice_copy(s, NULL, NULL, dy, dx);
}

/* ---------------------------------------------------------------------------------------------
 * Transpose. */

int transpose_shape(const kshape *x, const int *perm, kshape *y, sw_err *e) {
  int seen[KERN_MAX_DIMS] = {0};
  kshape r = *x;
  for (int k = 0; k < x->ndim; k++) {
    int p = perm ? perm[k] : x->ndim - 1 - k;
    if (p < 0 || p >= x->ndim || seen[p])
      return sw_fail(e, SW_EINPUT, "Transpose: perm is not a permutation of 0..%d (entry %d is %d)", x->ndim - 1, k, p);
    seen[p] = 1;
    r.d[k] = x->d[p];
  }
  *y = r;
  return SW_OK;
}

/* Operands of a kernel that writes a tensor row by row (Transpose, Pad, ReduceMean's backward). */
typedef struct rows_job {
  const kshape *s;          /* the tensor written */
  const int64_t *st;        /* strides of the tensor read, per dimension of s */
  int64_t rows;
  const float *X;
  float *Y;
  /* Pad */
  const kshape *other;      /* the tensor read */
  const int64_t *pads;
  int64_t sign, b;          /* index in other = index in s + sign*begin; b: that shift in the last dimension */
  float fill;
  /* Transpose, ReduceMean's backward */
  float g;                  /* the gathered values' factor (1 for Transpose: x * 1 is x, bit for bit) */
} rows_job;

/* Worker t's rows of transpose_fwd and reduce_mean_bwd: Y's row r gathered from X (strides st), times g. */
static void gather_rows_part(void *ctx, int t, int T) {
  const rows_job *j = ctx;
  int nd = j->s->ndim;
  int64_t inner = j->s->d[nd - 1], sl = j->st[nd - 1], lo, hi;
  kern_split(j->rows, t, T, &lo, &hi);
  for (int64_t r = lo; r < hi; r++) {
    int64_t off = row_offset(j->s, j->st, r);
    float *yr = j->Y + r * inner;
    for (int64_t i = 0; i < inner; i++) yr[i] = j->X[off + i * sl] * j->g;
  }
}

void transpose_fwd(const kshape *x, const int *perm, const float *X, float *Y, int nthreads) {
  kshape y;
  SW_ASSERT(transpose_shape(x, perm, &y, NULL) == SW_OK);
  if (x->ndim == 0) {
    Y[0] = X[0];
    return;
  }
  int nd = x->ndim;
  int64_t xst[KERN_MAX_DIMS], st[KERN_MAX_DIMS]; /* st[k]: x stride of y's dimension k */
  kshape_strides(x, xst);
  for (int k = 0; k < nd; k++) st[k] = xst[perm ? perm[k] : nd - 1 - k];
  int64_t inner = y.d[nd - 1];
  rows_job j = {.s = &y, .st = st, .rows = inner ? kshape_numel(&y) / inner : 0, .X = X, .Y = Y, .g = 1.0f};
  kern_parallel(j.rows > 64 ? nthreads : 1, gather_rows_part, &j);
}

void transpose_bwd(const kshape *x, const int *perm, const float *dY, float *dX, int nthreads) {
  kshape y;
  SW_ASSERT(transpose_shape(x, perm, &y, NULL) == SW_OK);
  int inv[KERN_MAX_DIMS];
  for (int k = 0; k < x->ndim; k++) inv[perm ? perm[k] : x->ndim - 1 - k] = k;
  transpose_fwd(&y, inv, dY, dX, nthreads);
}

/* ---------------------------------------------------------------------------------------------
 * Pad. */

int pad_shape(const kshape *x, const int64_t *pads, kshape *y, sw_err *e) {
  kshape r = *x;
  for (int k = 0; k < x->ndim; k++) {
    r.d[k] = x->d[k] + pads[k] + pads[k + x->ndim];
    if (r.d[k] < 0)
      return sw_fail(e, SW_EINPUT, "Pad: pads %lld and %lld make dimension %d (size %lld) negative",
                     (long long)pads[k], (long long)pads[k + x->ndim], k, (long long)x->d[k]);
  }
  *y = r;
  return SW_OK;
}

/* Worker t's rows of pad_copy: each row of the tensor written is the fill, the other tensor's row shifted, or both. */
static void pad_part(void *ctx, int t, int T) {
  const rows_job *j = ctx;
  const kshape *it = j->s, *other = j->other;
  int nd = it->ndim;
  int64_t inner = it->d[nd - 1], olen = other->d[nd - 1], b = j->b, lo, hi;
  float fill = j->fill;
  kern_split(j->rows, t, T, &lo, &hi);
  for (int64_t r = lo; r < hi; r++) {
    int64_t idx[KERN_MAX_DIMS], off = 0;
    int inside = 1;
    row_index(it, r, idx);
    for (int k = 0; k < nd - 1 && inside; k++) {
      int64_t o = idx[k] + j->pads[k] * j->sign;
      inside = o >= 0 && o < other->d[k];
      off += o * j->st[k];
    }
    float *dst = j->Y + r * inner;
    const float *src = j->X;
    /* Row positions i whose partner i + b lies inside the other row: [i0, i1). */
    int64_t i0 = -b > 0 ? -b : 0, i1 = olen - b < inner ? olen - b : inner;
    if (!inside || i1 <= i0) {
      for (int64_t i = 0; i < inner; i++) dst[i] = fill;
      continue;
    }
    for (int64_t i = 0; i < i0; i++) dst[i] = fill;
    memcpy(dst + i0, src + off + i0 + b, sizeof(float) * (i1 - i0));
    for (int64_t i = i1; i < inner; i++) dst[i] = fill;
  }
}

/* Copies between x and y = pad(x): forward fills y (value outside x), backward fills dx from dy. */
static void pad_copy(const kshape *x, const int64_t *pads, float value, const float *X, float *Y, const float *dY,
                     float *dX, int nthreads) {
  kshape y;
  SW_ASSERT(pad_shape(x, pads, &y, NULL) == SW_OK);
  if (x->ndim == 0) {
    if (Y) Y[0] = X[0];
    else dX[0] = dY[0];
    return;
  }
  int nd = x->ndim;
  int fwd = Y != NULL;
  const kshape *it = fwd ? &y : x;      /* the tensor written, row by row */
  const kshape *other = fwd ? x : &y;   /* the tensor read */
  int64_t sign = fwd ? -1 : 1;          /* index in `other` = index in `it` + sign*begin */
  int64_t ost[KERN_MAX_DIMS];
  kshape_strides(other, ost);
  int64_t inner = it->d[nd - 1];
  rows_job j = {.s = it, .st = ost, .rows = inner ? kshape_numel(it) / inner : 0, .X = fwd ? X : dY, .Y = fwd ? Y : dX,
                .other = other, .pads = pads, .sign = sign, .b = pads[nd - 1] * sign, .fill = fwd ? value : 0.0f};
  kern_parallel(j.rows > 64 ? nthreads : 1, pad_part, &j);
}

void pad_fwd(const kshape *x, const int64_t *pads, float value, const float *X, float *Y, int nthreads) {
  pad_copy(x, pads, value, X, Y, NULL, NULL, nthreads);
}

void pad_bwd(const kshape *x, const int64_t *pads, const float *dY, float *dX, int nthreads) {
  pad_copy(x, pads, 0.0f, NULL, NULL, dY, dX, nthreads);
}

/* ---------------------------------------------------------------------------------------------
 * ReduceMean. */

static int reduce_mask(const kshape *x, int naxes, const int64_t *axes, int *mask, sw_err *e) {
  memset(mask, 0, sizeof(int) * KERN_MAX_DIMS);
  if (naxes == 0) {
    for (int k = 0; k < x->ndim; k++) mask[k] = 1;
    return SW_OK;
  }
  for (int i = 0; i < naxes; i++) {
    int64_t a = axes[i] < 0 ? axes[i] + x->ndim : axes[i];
    if (a < 0 || a >= x->ndim || mask[a])
      return sw_fail(e, SW_EINPUT, "ReduceMean: axis %lld is out of range or repeated (rank %d)", (long long)axes[i],
                     x->ndim);
    mask[a] = 1;
  }
  return SW_OK;
}

int reduce_shape(const kshape *x, int naxes, const int64_t *axes, int keepdims, kshape *y, sw_err *e) {
  int mask[KERN_MAX_DIMS];
  int rc = reduce_mask(x, naxes, axes, mask, e);
  if (rc) return rc;
  kshape r;
  memset(&r, 0, sizeof r);
  for (int k = 0; k < x->ndim; k++) {
    if (!mask[k]) r.d[r.ndim++] = x->d[k];
    else if (keepdims) r.d[r.ndim++] = 1;
  }
  *y = r;
  return SW_OK;
}

/* The keepdims shape of the reduction and the number of elements averaged. */
static kshape kept_shape(const kshape *x, int naxes, const int64_t *axes, int64_t *count) {
  kshape k;
  SW_ASSERT(reduce_shape(x, naxes, axes, 1, &k, NULL) == SW_OK);
  *count = kshape_numel(x) / (kshape_numel(&k) ? kshape_numel(&k) : 1);
  return k;
}

void reduce_mean_fwd(const kshape *x, int naxes, const int64_t *axes, const float *X, float *Y, int nthreads) {
  int64_t count;
  kshape k = kept_shape(x, naxes, axes, &count);
  kern_reduce_sum(x, X, &k, Y, count ? 1.0f / (float)count : 0.0f, nthreads);
}

void reduce_mean_bwd(const kshape *x, int naxes, const int64_t *axes, const float *dY, float *dX, int nthreads) {
  int64_t count;
  kshape k = kept_shape(x, naxes, axes, &count);
  kshape xs = as_1d(x), ks = as_1d(&k);
  int nd = xs.ndim;
  int64_t st[KERN_MAX_DIMS];
  kern_bcast_strides(&ks, &xs, st);
  int64_t inner = xs.d[nd - 1];
  rows_job j = {.s = &xs, .st = st, .rows = inner ? kshape_numel(&xs) / inner : 0, .X = dY, .Y = dX,
                .g = count ? 1.0f / (float)count : 0.0f};
  kern_parallel(j.rows > 64 ? nthreads : 1, gather_rows_part, &j); /* dX's rows: dY broadcast, times g */
}
