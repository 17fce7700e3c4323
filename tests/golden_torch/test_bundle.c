/* Tests of the tensor-bundle reader: a bundle built here byte by byte reads back exactly; every
 * truncation, the classic corruptions and thousands of random byte flips are refused with a message
 * (or read consistently) and never crash; bundle_get* and bundle_compare_f32 behave as documented; and
 * the shipped PyTorch bundles (argv[1] = their folder) have the promised contents, their loss agreeing
 * with a cross-entropy recomputed here from their logits and labels.
 *
 *     test-golden-bundle [GOLDEN_DIR]      (meson passes tests/golden_torch) */
#include "tests/golden_torch/bundle.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/check.h"

/* ---- building bundles in memory ------------------------------------------------------------- */

typedef struct bytes {
  unsigned char *p;
  size_t n, cap;
} bytes;

static void bytes_put(bytes *b, const void *src, size_t n) {
  if (b->n + n > b->cap) {
    b->cap = (b->n + n) * 2 + 64;
    b->p = sw_xrealloc(b->p, b->cap);
  }
  if (n) memcpy(b->p + b->n, src, n);
  b->n += n;
}

static void bytes_u32(bytes *b, uint32_t v) {
  unsigned char le[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                         (unsigned char)(v >> 24)};
  bytes_put(b, le, 4);
}

static void bytes_i64(bytes *b, int64_t v) {
  bytes_u32(b, (uint32_t)((uint64_t)v & 0xffffffffu));
  bytes_u32(b, (uint32_t)((uint64_t)v >> 32));
}

/* Appends the header: magic, version, count. */
static void bytes_header(bytes *b, uint32_t version, uint32_t count) {
  bytes_put(b, "SWTB", 4);
  bytes_u32(b, version);
  bytes_u32(b, count);
}

/* Appends one record; values are written little-endian element by element (elements of esz bytes). */
static void bytes_record(bytes *b, const char *name, size_t name_len, uint32_t dtype, uint32_t rank,
                         const int64_t *dims, const void *data, int64_t numel) {
  bytes_u32(b, (uint32_t)name_len);
  bytes_put(b, name, name_len);
  bytes_u32(b, dtype);
  bytes_u32(b, rank);
  for (uint32_t i = 0; i < rank; i++) bytes_i64(b, dims[i]);
  for (int64_t i = 0; i < numel; i++) {
    if (dtype == BUNDLE_F32) {
      uint32_t u;
      memcpy(&u, (const float *)data + i, 4);
      bytes_u32(b, u);
    } else {
      bytes_i64(b, ((const int64_t *)data)[i]);
    }
  }
}

/* Writes b to a fresh temporary file and loads it; the file is removed again. */
static bundle *load_bytes(const bytes *b, sw_err *e) {
  const char *dir = getenv("TMPDIR");
  char path[512];
  snprintf(path, sizeof path, "%s/swtb-test-XXXXXX", dir && *dir ? dir : "/tmp");
  int fd = mkstemp(path);
  SW_ASSERT(fd >= 0);
  size_t off = 0;
  while (off < b->n) {
    ssize_t w = write(fd, b->p + off, b->n - off);
    SW_ASSERT(w > 0);
    off += (size_t)w;
  }
  close(fd);
  sw_err_clear(e);
  bundle *r = bundle_load(path, e);
  unlink(path);
  return r;
}

/* The sample: every dtype, a scalar, an empty tensor, the largest rank and a long name. */
static const float sample_a[6] = {-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f};
static const int64_t sample_labels[4] = {0, -1, INT64_MAX, 42};
static const float sample_scalar = 3.25f;
static const float sample_deep[4] = {1e-30f, -2.0f, 65504.0f, -0.0f};
#define SAMPLE_LONG_NAME "grad/layer3.2.conv2.weight[:16]"

static bytes sample_bytes(void) {
  bytes b = {0};
  int64_t da[2] = {2, 3}, dl[1] = {4}, de[2] = {0, 5}, dd[8] = {1, 2, 1, 1, 1, 1, 1, 2}, dn[1] = {1};
  float one = 7.0f;
  bytes_header(&b, 1, 6);
  bytes_record(&b, "a", 1, BUNDLE_F32, 2, da, sample_a, 6);
  bytes_record(&b, "labels", 6, BUNDLE_I64, 1, dl, sample_labels, 4);
  bytes_record(&b, "scalar", 6, BUNDLE_F32, 0, NULL, &sample_scalar, 1);
  bytes_record(&b, "empty", 5, BUNDLE_F32, 2, de, NULL, 0);
  bytes_record(&b, "deep", 4, BUNDLE_F32, 8, dd, sample_deep, 4);
  bytes_record(&b, SAMPLE_LONG_NAME, strlen(SAMPLE_LONG_NAME), BUNDLE_F32, 1, dn, &one, 1);
  return b;
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_roundtrip(void) {
  bytes b = sample_bytes();
  sw_err e;
  bundle *bd = load_bytes(&b, &e);
  CHECK(bd != NULL, "sample failed to load: %s", e.msg);
  if (!bd) goto done;
  CHECK(bd->n == 6, "n = %d", bd->n);
  const bundle_tensor *a = bundle_get(bd, "a");
  CHECK(a && a->dtype == BUNDLE_F32 && a->rank == 2 && a->dims[0] == 2 && a->dims[1] == 3 && a->numel == 6,
        "tensor a has the wrong header");
  if (a) CHECK(memcmp(a->data, sample_a, sizeof sample_a) == 0, "tensor a's data differs");
  if (a) CHECK(((uintptr_t)a->data & 63) == 0, "data is not 64-byte aligned");
  const bundle_tensor *l = bundle_get(bd, "labels");
  CHECK(l && l->dtype == BUNDLE_I64 && l->rank == 1 && l->numel == 4, "labels have the wrong header");
  if (l) CHECK(memcmp(l->data, sample_labels, sizeof sample_labels) == 0, "labels' data differs");
  const bundle_tensor *s = bundle_get(bd, "scalar");
  CHECK(s && s->rank == 0 && s->numel == 1 && *(const float *)s->data == sample_scalar, "scalar is wrong");
  const bundle_tensor *em = bundle_get(bd, "empty");
  CHECK(em && em->numel == 0 && em->rank == 2 && em->dims[0] == 0 && em->dims[1] == 5 && em->data,
        "empty tensor is wrong");
  const bundle_tensor *d = bundle_get(bd, "deep");
  CHECK(d && d->rank == 8 && d->numel == 4, "rank-8 tensor has the wrong header");
  if (d) CHECK(memcmp(d->data, sample_deep, sizeof sample_deep) == 0, "rank-8 tensor's data differs");
  CHECK(bundle_get(bd, SAMPLE_LONG_NAME) == &bd->tensors[5], "lookup by long name failed");
  CHECK(strcmp(bd->tensors[1].name, "labels") == 0, "file order not kept");
  CHECK(bundle_get(bd, "A") == NULL && bundle_get(bd, "") == NULL && bundle_get(bd, "labels ") == NULL,
        "lookup is not exact");

  sw_err_clear(&e);
  const float *pa = bundle_get_f32(bd, "a", 6, &e);
  CHECK(pa == a->data && e.code == SW_OK, "bundle_get_f32 on a valid tensor failed: %s", e.msg);
  sw_err_clear(&e);
  CHECK(bundle_get_f32(bd, "a", 5, &e) == NULL && e.code == SW_EINPUT && strstr(e.msg, "'a'"),
        "wrong numel accepted (%s)", e.msg);
  sw_err_clear(&e);
  CHECK(bundle_get_f32(bd, "labels", 4, &e) == NULL && e.code == SW_EINPUT && strstr(e.msg, "int64"),
        "int64 tensor returned as float (%s)", e.msg);
  sw_err_clear(&e);
  CHECK(bundle_get_f32(bd, "nope", 1, &e) == NULL && e.code == SW_EINPUT && strstr(e.msg, "nope") && e.hint[0],
        "missing tensor not reported (%s)", e.msg);
  bundle_free(bd);
done:
  free(b.p);
}

/* Every proper prefix of a valid file is refused with a message. */
static void test_truncations(void) {
  bytes b = sample_bytes();
  int refused = 0;
  for (size_t len = 0; len < b.n; len++) {
    bytes t = {b.p, len, len};
    sw_err e;
    bundle *bd = load_bytes(&t, &e);
    if (!bd && e.code == SW_EINPUT && e.msg[0] && e.hint[0]) refused++;
    else CHECK(0, "prefix of %zu/%zu bytes: %s", len, b.n, bd ? "accepted" : e.msg);
    bundle_free(bd);
  }
  CHECK(refused == (int)b.n, "%d of %zu truncations refused", refused, b.n);
  free(b.p);
}

/* One single-record bundle whose record is broken in one way must fail with msg containing want. */
static void expect_bad(const bytes *b, const char *want, const char *what) {
  sw_err e;
  bundle *bd = load_bytes(b, &e);
  CHECK(!bd && e.code == SW_EINPUT && strstr(e.msg, want), "%s: %s (wanted '%s')", what,
        bd ? "accepted" : e.msg, want);
  bundle_free(bd);
}

static void test_corruptions(void) {
  float f[4] = {1, 2, 3, 4};
  int64_t d4[1] = {4};
  bytes b = {0};

  /* header */
  b = sample_bytes();
  memcpy(b.p, "SWTC", 4);
  expect_bad(&b, "does not start with", "bad magic");
  free(b.p);
  b = sample_bytes();
  b.p[4] = 2;
  expect_bad(&b, "version 2", "version 2");
  free(b.p);
  b = sample_bytes();
  memset(b.p + 8, 0xff, 4);
  expect_bad(&b, "announces 4294967295 tensors", "huge count");
  free(b.p);
  b = sample_bytes();
  b.p[8] = 7;
  expect_bad(&b, "truncated", "count one too many");
  free(b.p);
  b = sample_bytes();
  b.p[8] = 5;
  expect_bad(&b, "stray bytes", "count one too few");
  free(b.p);
  b = sample_bytes();
  bytes_put(&b, "x", 1);
  expect_bad(&b, "1 stray bytes", "trailing byte");
  free(b.p);
  b = (bytes){0};
  bytes_put(&b, "SWT", 3);
  expect_bad(&b, "shorter than its magic", "3-byte file");
  free(b.p);

  /* records */
  struct {
    const char *name;
    size_t name_len;
    uint32_t dtype, rank;
    int64_t dims[9];
    const char *want;
  } bad[] = {
      {"", 0, BUNDLE_F32, 1, {4}, "name of 0 bytes"},
      {"a\0b", 3, BUNDLE_F32, 1, {4}, "NUL byte"},
      {"t", 1, 2, 1, {4}, "dtype 2"},
      {"t", 1, 0, 1, {4}, "dtype 0"},
      {"t", 1, BUNDLE_F32, 9, {1, 1, 1, 1, 1, 1, 1, 1, 4}, "rank 9"},
      {"t", 1, BUNDLE_F32, 1, {-4}, "dimension 0 = -4"},
      {"t", 1, BUNDLE_F32, 2, {1, INT64_MIN}, "dimension 1 ="},
      {"t", 1, BUNDLE_F32, 1, {INT64_MAX}, "needs more data"},
      {"t", 1, BUNDLE_F32, 2, {(int64_t)1 << 40, (int64_t)1 << 40}, "needs more data"},
      {"t", 1, BUNDLE_I64, 4, {1 << 16, 1 << 16, 1 << 16, 1 << 16}, "needs more data"},
      {"t", 1, BUNDLE_F32, 1, {5}, "needs more data than the 16 bytes"},
  };
  for (size_t i = 0; i < SW_ARRAY_LEN(bad); i++) {
    b = (bytes){0};
    bytes_header(&b, 1, 1);
    bytes_record(&b, bad[i].name, bad[i].name_len, bad[i].dtype, bad[i].rank, bad[i].dims, NULL, 0);
    bytes_put(&b, f, sizeof f); /* 16 bytes of data: what a float [4] needs */
    expect_bad(&b, bad[i].want, bad[i].want);
    free(b.p);
  }
  /* name length beyond the limit, and beyond the file */
  b = (bytes){0};
  bytes_header(&b, 1, 1);
  bytes_u32(&b, BUNDLE_MAX_NAME + 1);
  for (int i = 0; i < BUNDLE_MAX_NAME + 16; i++) bytes_put(&b, "n", 1);
  expect_bad(&b, "name of 4097 bytes", "over-long name");
  free(b.p);
  b = (bytes){0};
  bytes_header(&b, 1, 1);
  bytes_u32(&b, 100);
  for (int i = 0; i < 50; i++) bytes_put(&b, "n", 1);
  expect_bad(&b, "name needs 100 bytes", "name past the end");
  free(b.p);
  /* duplicate names */
  b = (bytes){0};
  bytes_header(&b, 1, 2);
  bytes_record(&b, "w", 1, BUNDLE_F32, 1, d4, f, 4);
  bytes_record(&b, "w", 1, BUNDLE_F32, 1, d4, f, 4);
  expect_bad(&b, "appears twice", "duplicate name");
  free(b.p);
}

/* Random byte flips: each mutant either loads consistently or fails with a message. */
static void test_mutations(void) {
  bytes b = sample_bytes();
  unsigned char *orig = sw_xmalloc(b.n);
  memcpy(orig, b.p, b.n);
  uint64_t s = 0x9e3779b97f4a7c15u;
  int loaded = 0, refused = 0, bad = 0;
  for (int it = 0; it < 3000; it++) {
    memcpy(b.p, orig, b.n);
    int flips = 1 + it % 4;
    for (int k = 0; k < flips; k++) {
      s ^= s << 13, s ^= s >> 7, s ^= s << 17;
      size_t at = (size_t)(s % b.n);
      /* half of the flips land in the first 64 bytes, where the header and first records live */
      if (s >> 63) at %= 64;
      b.p[at] = (unsigned char)(s >> 24);
    }
    sw_err e;
    bundle *bd = load_bytes(&b, &e);
    if (bd) {
      loaded++;
      for (int i = 0; i < bd->n; i++) {
        const bundle_tensor *t = &bd->tensors[i];
        int64_t numel = 1;
        for (int d = 0; d < t->rank; d++) numel *= t->dims[d];
        if (numel != t->numel || (t->dtype != BUNDLE_F32 && t->dtype != BUNDLE_I64) || !t->data ||
            bundle_get(bd, t->name) != t)
          bad++;
      }
    } else if (e.code == SW_EINPUT && e.msg[0]) {
      refused++;
    } else {
      bad++;
    }
    bundle_free(bd);
  }
  CHECK(bad == 0, "%d mutants loaded inconsistently or failed without a message", bad);
  CHECK(refused > 1000 && loaded > 100, "mutants: %d loaded, %d refused (both kinds expected)", loaded, refused);
  free(orig);
  free(b.p);
}

static void test_paths(void) {
  sw_err e;
  sw_err_clear(&e);
  bundle *bd = bundle_load("/nonexistent/golden.swtb", &e);
  CHECK(!bd && e.code == SW_EINPUT && strstr(e.msg, "/nonexistent/golden.swtb") && e.hint[0],
        "missing file: %s", e.msg);
  sw_err_clear(&e);
  bd = bundle_load("/", &e);
  CHECK(!bd && e.code == SW_EINPUT && strstr(e.msg, "not a regular file"), "directory: %s", e.msg);
  sw_err_clear(&e);
  bd = bundle_load("/dev/null", &e);
  CHECK(!bd && e.code == SW_EINPUT, "/dev/null: %s", e.msg);
  bundle_free(NULL);
}

static void test_compare(void) {
  const float want[4] = {1.0f, -2.0f, 0.0f, 100.0f};
  float got[4] = {1.0f, -2.0f, 0.0f, 100.0f};
  bundle_diff d;
  CHECK(bundle_compare_f32(got, want, 4, 0, 0, &d) == 0 && d.max_abs == 0 && d.max_want == 100,
        "identical arrays: %lld bad", (long long)d.n_bad);
  got[1] = -2.001f; /* |err| 1e-3, rel 5e-4 */
  CHECK(bundle_compare_f32(got, want, 4, 0, 1e-3, &d) == 0, "within rtol: %lld bad", (long long)d.n_bad);
  CHECK(bundle_compare_f32(got, want, 4, 0, 1e-4, &d) == 1 && d.worst == 1, "outside rtol not caught");
  CHECK(fabs(d.max_abs - 1e-3) < 1e-6 && fabs(d.max_rel - 5e-4) < 1e-6, "max_abs %g max_rel %g", d.max_abs,
        d.max_rel);
  got[2] = 1e-6f; /* want 0: only atol can cover it */
  CHECK(bundle_compare_f32(got, want, 4, 1e-5, 1e-3, &d) == 0, "atol not applied");
  CHECK(bundle_compare_f32(got, want, 4, 1e-7, 1e-3, &d) == 1 && d.worst == 2, "atol excess not caught");
  got[3] = NAN;
  CHECK(bundle_compare_f32(got, want, 4, 1, 1, &d) == 1 && d.worst == 3 && isinf(d.max_abs), "NaN passed");
  got[0] = INFINITY;
  CHECK(bundle_compare_f32(got, want, 4, 1, 1, &d) == 2 && d.worst == 0, "infinity passed");
  CHECK(bundle_compare_f32(got, want, 0, 0, 0, &d) == 0 && d.worst == -1, "empty compare");

  /* scaled: tolerance relative to max|want| = 100 */
  const float w2[3] = {100.0f, 0.0f, -1.0f};
  float g2[3] = {100.0f, 9e-4f, -1.0f};
  CHECK(bundle_compare_scaled_f32(g2, w2, 3, 1e-5, &d) == 0 && d.max_want == 100, "scaled: 9e-4 <= 1e-3 failed");
  g2[2] = -1.0011f;
  CHECK(bundle_compare_scaled_f32(g2, w2, 3, 1e-5, &d) == 1 && d.worst == 2, "scaled: 1.1e-3 > 1e-3 passed");
  const float z3[3] = {0, 0, 0};
  CHECK(bundle_compare_scaled_f32(g2, z3, 3, 1e-3, &d) == 2 && d.worst == 0, "scaled on zeros: tol is absolute");
}

/* The shipped PyTorch bundles hold what README.md promises. */
static void test_golden(const char *dir, const char *model, int expect_dropout_cfg) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s.swtb", dir, model);
  sw_err e;
  sw_err_clear(&e);
  bundle *b = bundle_load(path, &e);
  CHECK(b != NULL, "%s: %s", path, e.msg);
  if (!b) return;
  const bundle_tensor *x = bundle_get(b, "input"), *lab = bundle_get(b, "labels");
  const bundle_tensor *logits = bundle_get(b, "logits"), *loss = bundle_get(b, "loss");
  CHECK(x && x->dtype == BUNDLE_F32 && x->rank == 4 && x->dims[0] == 8 && x->dims[1] == 1 && x->dims[2] == 28 &&
            x->dims[3] == 28, "%s: input is not f32 [8,1,28,28]", model);
  CHECK(lab && lab->dtype == BUNDLE_I64 && lab->rank == 1 && lab->dims[0] == 8, "%s: labels not i64 [8]", model);
  CHECK(logits && logits->dtype == BUNDLE_F32 && logits->rank == 2 && logits->dims[0] == 8 &&
            logits->dims[1] == 10, "%s: logits not f32 [8,10]", model);
  CHECK(loss && loss->dtype == BUNDLE_F32 && loss->rank == 0, "%s: loss is not an f32 scalar", model);
  if (lab && logits && loss && lab->numel == 8 && logits->numel == 80) {
    /* mean cross-entropy recomputed from the stored logits */
    const float *z = logits->data;
    const int64_t *y = lab->data;
    double ce = 0;
    int labels_ok = 1;
    for (int i = 0; i < 8; i++) {
      if (y[i] < 0 || y[i] >= 10) {
        labels_ok = 0;
        continue;
      }
      double m = z[i * 10];
      for (int c = 1; c < 10; c++) m = fmax(m, z[i * 10 + c]);
      double s = 0;
      for (int c = 0; c < 10; c++) s += exp(z[i * 10 + c] - m);
      ce += (m + log(s) - z[i * 10 + y[i]]) / 8;
    }
    double want = *(const float *)loss->data;
    CHECK(labels_ok, "%s: a label is outside 0..9", model);
    CHECK(fabs(ce - want) <= 1e-6 * fabs(want), "%s: loss %.9g, cross-entropy of the logits %.9g", model, want, ce);
  }
  const bundle_tensor *l1 = bundle_get(b, "step1/loss"), *l3 = bundle_get(b, "step3/loss");
  CHECK(l1 && loss && *(const float *)l1->data == *(const float *)loss->data, "%s: step1/loss != loss", model);
  CHECK(l3 && l1 && *(const float *)l3->data < *(const float *)l1->data, "%s: 3 SGD steps did not lower the loss",
        model);
  sw_err_clear(&e);
  const float *lr = bundle_get_f32(b, "config/lr", 1, &e), *mom = bundle_get_f32(b, "config/momentum", 1, &e);
  const float *wd = bundle_get_f32(b, "config/weight_decay", 1, &e);
  CHECK(lr && mom && wd && *lr == 0.05f && *mom == 0.9f && *wd == 5e-4f, "%s: config: %s", model, e.msg);
  const bundle_tensor *drop = bundle_get(b, "config/dropout_ratio");
  CHECK(expect_dropout_cfg ? drop && *(const float *)drop->data == 0.0f : drop == NULL,
        "%s: config/dropout_ratio %s", model, drop ? "present" : "missing");
  /* every gradient has the final weight of the same (possibly partial) tensor, and vice versa */
  int grads = 0, finals = 0, stats = 0;
  for (int i = 0; i < b->n; i++) {
    const bundle_tensor *t = &b->tensors[i];
    CHECK(t->dtype == BUNDLE_F32 || strcmp(t->name, "labels") == 0, "%s: %s is not float", model, t->name);
    if (strncmp(t->name, "grad/", 5) == 0) {
      char other[600];
      snprintf(other, sizeof other, "step3/%s", t->name + 5);
      const bundle_tensor *w = bundle_get(b, other);
      if (!w) { /* a full gradient may pair with a partial final weight: "step3/NAME[:R]" */
        for (int j = 0; j < b->n && !w; j++)
          if (strncmp(b->tensors[j].name, other, strlen(other)) == 0 && b->tensors[j].name[strlen(other)] == '[')
            w = &b->tensors[j];
      }
      CHECK(w && w->rank == t->rank && (w->rank == 0 || w->dims[w->rank - 1] == t->dims[t->rank - 1]),
            "%s: %s has no matching %s", model, t->name, other);
      grads++;
    } else if (strncmp(t->name, "step3/", 6) == 0 && strcmp(t->name, "step3/loss") != 0) {
      finals++;
    } else if (strncmp(t->name, "running_var/", 12) == 0) {
      const float *v = t->data;
      for (int64_t k = 0; k < t->numel; k++) CHECK(v[k] > 0, "%s: %s[%lld] = %g", model, t->name, (long long)k, v[k]);
      stats++;
    }
  }
  CHECK(grads > 0 && finals >= grads, "%s: %d gradients, %d final weights", model, grads, finals);
  if (strcmp(model, "resnet20") == 0) CHECK(stats == 21, "resnet20: %d BN running variances, expected 21", stats);
  printf("%s: %d tensors, %d gradients, %d final tensors, loss %.6f -> %.6f\n", model, b->n, grads, finals,
         loss ? *(const float *)loss->data : 0.0, l3 ? *(const float *)l3->data : 0.0);
  bundle_free(b);
}

int main(int argc, char **argv) {
  test_roundtrip();
  test_truncations();
  test_corruptions();
  test_mutations();
  test_paths();
  test_compare();
  if (argc > 1) {
    test_golden(argv[1], "lenet5", 0);
    test_golden(argv[1], "resnet20", 0);
    test_golden(argv[1], "mlp", 1);
  } else {
    printf("no golden folder given: shipped bundles not checked\n");
  }
  return check_report("golden-bundle");
}
