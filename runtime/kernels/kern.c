/* Shapes, broadcasting and the thread helper shared by all kernel families. */
#include "runtime/kernels/kern.h"

#include <stdio.h>
#include <string.h>

#include "runtime/kernels/kern_internal.h"

kshape kshape_make(int ndim, const int64_t *dims) {
  SW_ASSERT(ndim >= 0 && ndim <= KERN_MAX_DIMS);
  kshape s;
  memset(&s, 0, sizeof s);
  s.ndim = ndim;
  for (int i = 0; i < ndim; i++) s.d[i] = dims[i];
  return s;
}

int64_t kshape_numel(const kshape *s) {
  int64_t n = 1;
  for (int i = 0; i < s->ndim; i++) n *= s->d[i];
  return n;
}

void kshape_strides(const kshape *s, int64_t *strides) {
  int64_t st = 1;
  for (int i = s->ndim - 1; i >= 0; i--) {
    strides[i] = st;
    st *= s->d[i];
  }
}

int kshape_equal(const kshape *a, const kshape *b) {
  if (a->ndim != b->ndim) return 0;
  for (int i = 0; i < a->ndim; i++)
    if (a->d[i] != b->d[i]) return 0;
  return 1;
}

const char *kshape_str(const kshape *s, char *buf, size_t n) {
  size_t used = 0;
  if (n == 0) return buf;
  buf[0] = 0;
  used += (size_t)snprintf(buf, n, "[");
  for (int i = 0; i < s->ndim && used < n; i++)
    used += (size_t)snprintf(buf + used, n - used, "%s%lld", i ? "," : "", (long long)s->d[i]);
  if (used < n) snprintf(buf + used, n - used, "]");
  return buf;
}

int kshape_broadcast(const kshape *a, const kshape *b, kshape *out, sw_err *e) {
  int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
  kshape r;
  memset(&r, 0, sizeof r);
  r.ndim = nd;
  for (int i = 0; i < nd; i++) {
    int ia = i - (nd - a->ndim), ib = i - (nd - b->ndim);
    int64_t da = ia >= 0 ? a->d[ia] : 1, db = ib >= 0 ? b->d[ib] : 1;
    if (da != db && da != 1 && db != 1) {
      char sa[160], sb[160];
      sw_fail(e, SW_EINPUT, "shapes %s and %s cannot be broadcast together (dimension %d: %lld vs %lld)",
              kshape_str(a, sa, sizeof sa), kshape_str(b, sb, sizeof sb), i, (long long)da, (long long)db);
      sw_hint(e, "numpy broadcasting needs equal sizes or a size of 1 in each trailing dimension");
      return SW_EINPUT;
    }
    r.d[i] = da == 1 ? db : da;
  }
  *out = r;
  return SW_OK;
}

size_t kern_align_up(size_t n) { return (n + KERN_ALIGN - 1) / KERN_ALIGN * KERN_ALIGN; }

int kern_threads_clamp(int nthreads) {
  if (nthreads < 1) return 1;
  if (nthreads > 256) return 256;
  return nthreads;
}

void kern_bcast_strides(const kshape *in, const kshape *out, int64_t *strides) {
  int64_t own[KERN_MAX_DIMS];
  kshape_strides(in, own);
  int lead = out->ndim - in->ndim;
  SW_ASSERT(lead >= 0);
  for (int i = 0; i < out->ndim; i++) {
    int j = i - lead;
    strides[i] = (j < 0 || in->d[j] == 1) ? 0 : own[j];
  }
}

int64_t kern_offset(const kshape *s, const int64_t *st, int64_t idx) {
  int64_t off = 0;
  for (int i = s->ndim - 1; i >= 0; i--) {
    off += (idx % s->d[i]) * st[i];
    idx /= s->d[i];
  }
  return off;
}

int kern_cpu_avx512(void) {
#if defined(__x86_64__) && defined(__GNUC__)
  static int cached = -1;
  if (cached < 0) {
    __builtin_cpu_init();
    cached = __builtin_cpu_supports("avx512f") ? 1 : 0;
  }
  return cached;
#else
  return 0;
#endif
}
