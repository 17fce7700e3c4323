#include "tests/golden_torch/bundle.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Bundles are test data: anything larger is a wrong path, not a golden file. */
#define MAX_FILE_BYTES ((size_t)1 << 30)
/* Header: magic, version, count. */
#define HEADER_BYTES 12

static const char *const regen_hint =
    "regenerate the golden bundles with /usr/bin/python3 tests/golden_torch/make_golden.py "
    "(see tests/golden_torch/README.md)";

/* A cursor over the file's bytes; every read checks the bytes are there. */
typedef struct reader {
  const unsigned char *p;
  size_t size, pos;
  const char *path;
} reader;

static uint32_t le32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const unsigned char *p) {
  return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* Fails with a "truncated" message unless n more bytes are left; what names the field. */
static int need(reader *r, size_t n, int idx, const char *what, sw_err *e) {
  if (r->size - r->pos >= n) return SW_OK;
  sw_fail(e, SW_EINPUT,
          "golden bundle %s is truncated: tensor %d's %s needs %zu bytes at offset %zu, the file has "
          "%zu left",
          r->path, idx, what, n, r->pos, r->size - r->pos);
  sw_hint(e, "%s", regen_hint);
  return SW_EINPUT;
}

static int read_u32(reader *r, uint32_t *v, int idx, const char *what, sw_err *e) {
  if (need(r, 4, idx, what, e)) return SW_EINPUT;
  *v = le32(r->p + r->pos);
  r->pos += 4;
  return SW_OK;
}

static int corrupt(const reader *r, sw_err *e, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Reports a corrupt field: "golden bundle PATH is corrupt: <formatted detail>". */
static int corrupt(const reader *r, sw_err *e, const char *fmt, ...) {
  char detail[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(detail, sizeof detail, fmt, ap);
  va_end(ap);
  sw_fail(e, SW_EINPUT, "golden bundle %s is corrupt: %s", r->path, detail);
  sw_hint(e, "%s", regen_hint);
  return SW_EINPUT;
}

/* Reads the whole file at path into a malloc'd buffer. */
static unsigned char *file_slurp(const char *path, size_t *size, sw_err *e) {
  struct stat st;
  if (stat(path, &st) != 0) {
    sw_fail(e, SW_EINPUT, "cannot open golden bundle %s: %s", path, strerror(errno));
    sw_hint(e, "%s", regen_hint);
    return NULL;
  }
  if (!S_ISREG(st.st_mode)) {
    sw_fail(e, SW_EINPUT, "golden bundle %s is not a regular file", path);
    sw_hint(e, "pass the path of a .swtb file");
    return NULL;
  }
  if ((uint64_t)st.st_size > MAX_FILE_BYTES) {
    sw_fail(e, SW_EINPUT, "golden bundle %s is %lld bytes, more than the %zu a bundle may have", path,
            (long long)st.st_size, MAX_FILE_BYTES);
    sw_hint(e, "is this really a .swtb file? %s", regen_hint);
    return NULL;
  }
  FILE *f = fopen(path, "rb");
  if (!f) {
    sw_fail(e, SW_EINPUT, "cannot open golden bundle %s: %s", path, strerror(errno));
    sw_hint(e, "%s", regen_hint);
    return NULL;
  }
  size_t cap = (size_t)st.st_size + 1, n = 0; /* +1 so a file that grew is noticed */
  unsigned char *buf = malloc(cap);
  if (!buf) {
    fclose(f);
    sw_fail(e, SW_ENOMEM, "out of memory reading golden bundle %s (%zu bytes)", path, cap);
    return NULL;
  }
  while (n < cap) {
    size_t got = fread(buf + n, 1, cap - n, f);
    if (got == 0) break;
    n += got;
  }
  int bad = ferror(f);
  fclose(f);
  if (bad || n == cap) {
    free(buf);
    sw_fail(e, SW_EINPUT, "cannot read golden bundle %s: %s", path,
            bad ? "read error" : "the file changed while it was read");
    sw_hint(e, "%s", regen_hint);
    return NULL;
  }
  *size = n;
  return buf;
}

/* Copies numel elements of size esz from the little-endian bytes src into the host-order dst. */
static void data_decode(void *dst, const unsigned char *src, int64_t numel, size_t esz) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  unsigned char *d = dst;
  for (int64_t i = 0; i < numel; i++)
    for (size_t k = 0; k < esz; k++) d[(size_t)i * esz + k] = src[(size_t)i * esz + esz - 1 - k];
#else
  memcpy(dst, src, (size_t)numel * esz);
#endif
}

/* Parses one record at r's cursor into t (which owns what it allocated, even on failure). */
static int record_parse(reader *r, int idx, bundle_tensor *t, sw_err *e) {
  uint32_t name_len, dtype, rank;
  if (read_u32(r, &name_len, idx, "name length", e)) return SW_EINPUT;
  if (name_len == 0 || name_len > BUNDLE_MAX_NAME)
    return corrupt(r, e, "tensor %d has a name of %u bytes (1..%d allowed) at offset %zu", idx, name_len,
                   BUNDLE_MAX_NAME, r->pos - 4);
  if (need(r, name_len, idx, "name", e)) return SW_EINPUT;
  if (memchr(r->p + r->pos, 0, name_len))
    return corrupt(r, e, "tensor %d's name contains a NUL byte", idx);
  t->name = malloc(name_len + 1);
  if (!t->name) return sw_fail(e, SW_ENOMEM, "out of memory reading golden bundle %s", r->path);
  memcpy(t->name, r->p + r->pos, name_len);
  t->name[name_len] = 0;
  r->pos += name_len;

  if (read_u32(r, &dtype, idx, "dtype", e) || read_u32(r, &rank, idx, "rank", e)) return SW_EINPUT;
  size_t esz;
  if (dtype == BUNDLE_F32) esz = 4;
  else if (dtype == BUNDLE_I64) esz = 8;
  else return corrupt(r, e, "tensor '%s' has dtype %u (only 1 = float32 and 7 = int64 exist)", t->name, dtype);
  if (rank > BUNDLE_MAX_RANK)
    return corrupt(r, e, "tensor '%s' has rank %u (at most %d)", t->name, rank, BUNDLE_MAX_RANK);
  t->dtype = (int)dtype;
  t->rank = (int)rank;
  if (need(r, (size_t)rank * 8, idx, "dims", e)) return SW_EINPUT;
  /* numel * esz must fit in what is left of the file, which bounds every product below. */
  uint64_t left = r->size - r->pos - (size_t)rank * 8, numel = 1;
  int empty = 0;
  for (uint32_t d = 0; d < rank; d++) {
    int64_t v = (int64_t)le64(r->p + r->pos + 8 * d);
    if (v < 0) return corrupt(r, e, "tensor '%s' has dimension %u = %lld", t->name, d, (long long)v);
    t->dims[d] = v;
    if (v == 0) empty = 1;
    else if (!empty && (uint64_t)v > left / esz / numel)
      return corrupt(r, e, "tensor '%s' needs more data than the %llu bytes left in the file (truncated?)",
                     t->name, (unsigned long long)left);
    else if (!empty) numel *= (uint64_t)v;
  }
  if (empty) numel = 0;
  r->pos += (size_t)rank * 8;
  t->numel = (int64_t)numel;
  size_t bytes = (size_t)numel * esz;
  if (need(r, bytes, idx, "data", e)) return SW_EINPUT;
  size_t alloc = (bytes + 63) / 64 * 64;
  t->data = aligned_alloc(64, alloc ? alloc : 64);
  if (!t->data)
    return sw_fail(e, SW_ENOMEM, "out of memory: %zu bytes for tensor '%s' of golden bundle %s", bytes,
                   t->name, r->path);
  data_decode(t->data, r->p + r->pos, t->numel, esz);
  r->pos += bytes;
  return SW_OK;
}

bundle *bundle_load(const char *path, sw_err *e) {
  size_t size = 0;
  unsigned char *buf = file_slurp(path, &size, e);
  if (!buf) return NULL;
  reader r = {buf, size, 0, path};
  bundle *b = NULL;
  if (size < HEADER_BYTES || memcmp(buf, "SWTB", 4) != 0) {
    sw_fail(e, SW_EINPUT, "%s is not a golden bundle (%s)", path,
            size < 4 ? "the file is shorter than its magic" : "it does not start with \"SWTB\"");
    sw_hint(e, "%s", regen_hint);
    goto fail;
  }
  uint32_t version = le32(buf + 4), count = le32(buf + 8);
  r.pos = HEADER_BYTES;
  if (version != BUNDLE_VERSION) {
    sw_fail(e, SW_EINPUT, "golden bundle %s has format version %u; this reader knows version %d", path,
            version, BUNDLE_VERSION);
    sw_hint(e, "%s", regen_hint);
    goto fail;
  }
  /* The smallest record (a 1-byte name and a float32 scalar) is 4 + 1 + 4 + 4 + 4 = 17 bytes, so the
   * file size bounds count before anything is allocated. */
  if (count > (size - HEADER_BYTES) / 17) {
    corrupt(&r, e, "the header announces %u tensors, more than %zu bytes can hold", count, size - HEADER_BYTES);
    goto fail;
  }
  b = sw_xcalloc(1, sizeof *b);
  b->tensors = sw_xcalloc(count ? count : 1, sizeof *b->tensors);
  for (uint32_t i = 0; i < count; i++) {
    b->n = (int)i + 1; /* the record owns its allocations from here, even if it fails half-way */
    if (record_parse(&r, (int)i, &b->tensors[i], e)) goto fail;
    for (uint32_t j = 0; j < i; j++)
      if (strcmp(b->tensors[j].name, b->tensors[i].name) == 0) {
        corrupt(&r, e, "tensor name '%s' appears twice (records %u and %u)", b->tensors[i].name, j, i);
        goto fail;
      }
  }
  if (r.pos != size) {
    corrupt(&r, e, "%zu stray bytes after the last of its %u tensors", size - r.pos, count);
    goto fail;
  }
  free(buf);
  return b;
fail:
  bundle_free(b);
  free(buf);
  return NULL;
}

const bundle_tensor *bundle_get(const bundle *b, const char *name) {
  for (int i = 0; i < b->n; i++)
    if (strcmp(b->tensors[i].name, name) == 0) return &b->tensors[i];
  return NULL;
}

const float *bundle_get_f32(const bundle *b, const char *name, int64_t numel, sw_err *e) {
  const bundle_tensor *t = bundle_get(b, name);
  if (!t) {
    sw_fail(e, SW_EINPUT, "golden bundle has no tensor '%s'", name);
    sw_hint(e, "%s", regen_hint);
    return NULL;
  }
  if (t->dtype != BUNDLE_F32 || t->numel != numel) {
    sw_fail(e, SW_EINPUT, "golden tensor '%s' is %s with %lld elements; expected float32 with %lld", name,
            t->dtype == BUNDLE_F32 ? "float32" : "int64", (long long)t->numel, (long long)numel);
    sw_hint(e, "the model and the bundle disagree: %s", regen_hint);
    return NULL;
  }
  return t->data;
}

int64_t bundle_compare_f32(const float *got, const float *want, int64_t n, double atol, double rtol,
                           bundle_diff *d) {
  bundle_diff z = {0, 0, 0, n > 0 ? 0 : -1, 0};
  double worst_excess = -INFINITY;
  for (int64_t i = 0; i < n; i++) {
    double g = got[i], w = want[i];
    if (!isfinite(g) || !isfinite(w)) { /* golden data is finite, so this is the computation's fault */
      if (worst_excess < INFINITY) z.worst = i; /* the first one */
      z.n_bad++;
      z.max_abs = INFINITY;
      worst_excess = INFINITY;
      continue;
    }
    double err = fabs(g - w), tol = atol + rtol * fabs(w);
    if (fabs(w) > z.max_want) z.max_want = fabs(w);
    if (err > z.max_abs) z.max_abs = err;
    if (w != 0 && err / fabs(w) > z.max_rel) z.max_rel = err / fabs(w);
    if (err > tol) z.n_bad++;
    if (err - tol > worst_excess) {
      worst_excess = err - tol;
      z.worst = i;
    }
  }
  if (d) *d = z;
  return z.n_bad;
}

int64_t bundle_compare_scaled_f32(const float *got, const float *want, int64_t n, double tol, bundle_diff *d) {
  double scale = 0;
  for (int64_t i = 0; i < n; i++)
    if (isfinite(want[i]) && fabs(want[i]) > scale) scale = fabs(want[i]);
  return bundle_compare_f32(got, want, n, tol * (scale > 0 ? scale : 1), 0, d);
}

void bundle_free(bundle *b) {
  if (!b) return;
  for (int i = 0; i < b->n; i++) {
    free(b->tensors[i].name);
    free(b->tensors[i].data);
  }
  free(b->tensors);
  free(b);
}
