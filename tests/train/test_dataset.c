/* Datasets: the real Fashion-MNIST files, small IDX and CIFAR-10 files written here (valid and
 * broken in every way the loaders check), synthetic data, and the model-shape checks. */
#include "train/dataset.h"

#include <ftw.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "tests/train/check.h"
#include "train/rng.h"

static char tmp_root[256];

/* ---- file helpers ------------------------------------------------------------------------------ */

static void write_bytes(const char *path, const void *buf, size_t len) {
  FILE *f = fopen(path, "wb");
  if (!f) {
    perror(path);
    exit(1);
  }
  if (len && fwrite(buf, 1, len, f) != len) exit(1);
  fclose(f);
}

static void write_gz(const char *path, const void *buf, size_t len) {
  gzFile g = gzopen(path, "wb");
  if (!g || gzwrite(g, buf, (unsigned)len) != (int)len) exit(1);
  gzclose(g);
}

static unsigned char *read_bytes(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) exit(1);
  fseek(f, 0, SEEK_END);
  *len = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *b = malloc(*len + 1);
  if (fread(b, 1, *len, f) != *len) exit(1);
  fclose(f);
  return b;
}

static void put32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)(v >> 24);
  p[1] = (unsigned char)(v >> 16);
  p[2] = (unsigned char)(v >> 8);
  p[3] = (unsigned char)v;
}

static unsigned char pixel(int split, int64_t i, int64_t k) {
  return (unsigned char)((split * 101 + i * 37 + k * 5) % 256);
}

/* All of d's samples, normalised (sw_dataset_get); the caller frees them. */
static float *values(const sw_dataset *d) {
  int64_t m = d->n * sw_dataset_sample_size(d);
  float *v = malloc((size_t)(m > 0 ? m : 1) * sizeof(float));
  sw_dataset_get(d, 0, d->n, v);
  return v;
}

/* Element k of d's samples laid end to end, normalised (reads out just the sample holding it). */
static float value_at(const sw_dataset *d, int64_t k) {
  int64_t per = sw_dataset_sample_size(d);
  float *v = malloc((size_t)per * sizeof(float));
  sw_dataset_get(d, k / per, 1, v);
  float x = v[k % per];
  free(v);
  return x;
}

/* An IDX image file image in memory: magic, n, rows, cols, pixels. */
static unsigned char *idx_images(uint32_t magic, uint32_t n, uint32_t rows, uint32_t cols, int split,
                                 size_t *len) {
  size_t np = (size_t)n * rows * cols;
  *len = 16 + np;
  unsigned char *b = malloc(*len);
  put32(b, magic);
  put32(b + 4, n);
  put32(b + 8, rows);
  put32(b + 12, cols);
  for (size_t i = 0; i < n; i++)
    for (size_t k = 0; k < (size_t)rows * cols; k++)
      b[16 + i * rows * cols + k] = pixel(split, (int64_t)i, (int64_t)k);
  return b;
}

static unsigned char *idx_labels(uint32_t n, int ncls, size_t *len) {
  *len = 8 + n;
  unsigned char *b = malloc(*len);
  put32(b, 0x801);
  put32(b + 4, n);
  for (uint32_t i = 0; i < n; i++) b[8 + i] = (unsigned char)((i * 7 + 1) % ncls);
  return b;
}

static void make_dir(char *out, size_t n, const char *name) {
  snprintf(out, n, "%s/%s", tmp_root, name);
  if (mkdir(out, 0755) != 0) {
    perror(out);
    exit(1);
  }
}

static void path_in(char *out, size_t n, const char *dir, const char *name) {
  if (snprintf(out, n, "%s/%s", dir, name) >= (int)n) exit(1);
}

/* Writes a valid IDX dataset (ntrain, ntest samples of rows x cols, labels in [0, ncls)). */
static void make_idx(const char *dir, uint32_t ntrain, uint32_t ntest, uint32_t rows, uint32_t cols, int ncls,
                     int gz) {
  const char *names[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                          "t10k-labels-idx1-ubyte"};
  for (int s = 0; s < 2; s++) {
    uint32_t n = s == 0 ? ntrain : ntest;
    size_t il, ll;
    unsigned char *im = idx_images(0x803, n, rows, cols, s, &il), *lb = idx_labels(n, ncls, &ll);
    char p[512], q[512];
    snprintf(p, sizeof p, "%s/%s%s", dir, names[2 * s], gz ? ".gz" : "");
    snprintf(q, sizeof q, "%s/%s%s", dir, names[2 * s + 1], gz ? ".gz" : "");
    if (gz) {
      write_gz(p, im, il);
      write_gz(q, lb, ll);
    } else {
      write_bytes(p, im, il);
      write_bytes(q, lb, ll);
    }
    free(im);
    free(lb);
  }
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(p);
}

/* Expects an SW_EINPUT failure whose message contains both needles (the second may be NULL). */
static void expect_fail(int line, int rc, const sw_err *e, const char *needle, const char *needle2) {
  if (rc != SW_EINPUT || e->code != SW_EINPUT || !strstr(e->msg, needle) ||
      (needle2 && !strstr(e->msg, needle2))) {
    fprintf(stderr, "line %d: expected an input error mentioning \"%s\"%s%s, got rc %d: %s\n", line, needle,
            needle2 ? " and " : "", needle2 ? needle2 : "", rc, e->msg);
    check_failures++;
  } else {
    printf("  ok (line %d): %s\n        hint: %s\n", line, e->msg, e->hint);
  }
}
#define EXPECT_FAIL(rc, e, a, b) expect_fail(__LINE__, rc, e, a, b)

/* Loads the "idx" dataset from dir, expecting failure with the given words. */
static void idx_fails(int line, const char *dir, const char *name, const char *a, const char *b) {
  sw_dataset tr, te;
  sw_err e = {0};
  sw_dataset_opts o = {.dir = dir};
  int rc = sw_dataset_load(name, &o, &tr, &te, &e);
  expect_fail(line, rc, &e, a, b);
  CHECK(tr.pixels == NULL && te.pixels == NULL && tr.n == 0);
}

/* ---- Fashion-MNIST ------------------------------------------------------------------------------- */

static void test_fashion(void) {
  const char *dir = getenv("SWATC_FASHION_MNIST");
  if (!dir) dir = SW_FASHION_MNIST_DIR;
  char p[512];
  path_in(p, sizeof p, dir, "train-images-idx3-ubyte.gz");
  if (access(p, R_OK) != 0) {
    printf("  skipping Fashion-MNIST checks: %s not found (apt-get install dataset-fashion-mnist)\n", p);
    return;
  }
  sw_dataset tr, te;
  sw_err e = {0};
  sw_dataset_opts o = {.dir = dir};
  double t0 = omp_get_wtime();
  int rc = sw_dataset_load("fashion-mnist", &o, &tr, &te, &e);
  printf("  Fashion-MNIST loaded in %.2f s\n", omp_get_wtime() - t0);
  CHECK(rc == SW_OK);
  if (rc) {
    sw_err_print(&e, stderr);
    return;
  }
  CHECK_STR(tr.name, "fashion-mnist");
  CHECK(tr.n == 60000 && te.n == 10000);
  CHECK(tr.c == 1 && tr.h == 28 && tr.w == 28 && te.h == 28);
  CHECK(tr.num_classes == 10);
  CHECK_NEAR(tr.mean[0], 0.2860, 1e-6);
  CHECK_NEAR(tr.std[0], 0.3530, 1e-6);
  CHECK_NEAR(tr.scale, 1.0 / 255.0, 1e-9);
  int64_t hist[10];
  sw_dataset_label_counts(&tr, hist);
  for (int k = 0; k < 10; k++) CHECK(hist[k] == 6000);
  sw_dataset_label_counts(&te, hist);
  for (int k = 0; k < 10; k++) CHECK(hist[k] == 1000);
  const int first_tr[12] = {9, 0, 0, 3, 0, 2, 7, 2, 5, 5, 0, 9},
            first_te[12] = {9, 2, 1, 1, 6, 1, 4, 6, 5, 7, 4, 5};
  for (int i = 0; i < 12; i++) CHECK(tr.labels[i] == first_tr[i] && te.labels[i] == first_te[i]);
  CHECK(tr.labels[59999] == 5 && te.labels[9999] == 5);
  /* Pixel range: raw 0 and 255 both occur, so min and max are exactly the normalised extremes. */
  float lo = (0.0f * tr.scale - tr.mean[0]) / tr.std[0], hi = (255.0f * tr.scale - tr.mean[0]) / tr.std[0];
  float *tri = values(&tr), *tei = values(&te);
  float mn = 1e9f, mx = -1e9f;
  for (int64_t k = 0; k < tr.n * 784; k++) {
    mn = tri[k] < mn ? tri[k] : mn;
    mx = tri[k] > mx ? tri[k] : mx;
  }
  CHECK(mn == lo && mx == hi);
  CHECK_NEAR(lo, -0.8102, 1e-3);
  CHECK_NEAR(hi, 2.0227, 1e-3);
  /* Known raw pixels (from the files, via Python): train[0][14][14] = 217, test[1][10][5] = 255,
   * and the raw sum of train image 0 is 76247. */
  CHECK(tr.pixels[14 * 28 + 14] == 217 && te.pixels[784 + 10 * 28 + 5] == 255);
  CHECK(tri[14 * 28 + 14] == (217.0f * tr.scale - tr.mean[0]) / tr.std[0]);
  CHECK(tei[784 + 10 * 28 + 5] == hi);
  long sum = 0, raw = 0;
  for (int k = 0; k < 784; k++) sum += lroundf((tri[k] * tr.std[0] + tr.mean[0]) * 255.0f);
  for (int k = 0; k < 784; k++) raw += tr.pixels[k];
  CHECK(sum == 76247 && raw == 76247);
  /* Normalised training data has mean ~0 (the default mean is the data's mean). */
  double s = 0;
  for (int64_t k = 0; k < tr.n * 784; k++) s += tri[k];
  CHECK_NEAR(s / (double)(tr.n * 784), 0.0, 2e-3);
  /* Every value read out is the normalisation formula applied to its stored pixel. */
  int exact = 1;
  for (int64_t k = 0; k < te.n * 784; k++) exact &= tei[k] == ((float)te.pixels[k] * te.scale - te.mean[0]) / te.std[0];
  CHECK(exact);
  free(tri);
  free(tei);

  int64_t shape[4] = {-1, 1, 28, 28};
  CHECK(sw_dataset_check_input(&tr, shape, 4, "x", &e) == SW_OK);
  CHECK(sw_dataset_check_classes(&tr, 10, &e) == SW_OK);
  int64_t bad[4] = {-1, 3, 32, 32};
  rc = sw_dataset_check_input(&tr, bad, 4, "input.1", &e);
  EXPECT_FAIL(rc, &e, "[1,28,28]", "'input.1' is [N,3,32,32]");
  CHECK_CONTAINS(e.hint, "cifar10");
  sw_err_clear(&e);
  rc = sw_dataset_check_classes(&tr, 5, &e);
  EXPECT_FAIL(rc, &e, "5 class outputs", "10 classes");
  sw_dataset_free(&tr);
  sw_dataset_free(&te);
  CHECK(tr.pixels == NULL && tr.n == 0);

  /* Limits keep the first N. */
  o.train_limit = 1000;
  o.test_limit = 7;
  sw_err_clear(&e);
  rc = sw_dataset_load("fashion-mnist", &o, &tr, &te, &e);
  CHECK(rc == SW_OK && tr.n == 1000 && te.n == 7);
  if (rc == SW_OK) {
    for (int i = 0; i < 7; i++) CHECK(tr.labels[i] == first_tr[i] && te.labels[i] == first_te[i]);
    long raw0 = 0;
    for (int k = 0; k < 784; k++) raw0 += tr.pixels[k];
    CHECK(raw0 == 76247 && tr.pixels[14 * 28 + 14] == 217 && te.pixels[784 + 10 * 28 + 5] == 255);
  }
  sw_dataset_free(&tr);
  sw_dataset_free(&te);
}

/* ---- IDX files written here ---------------------------------------------------------------------- */

static void test_idx_valid(void) {
  for (int gz = 0; gz < 2; gz++) {
    char dir[512];
    make_dir(dir, sizeof dir, gz ? "idx_gz" : "idx_plain");
    make_idx(dir, 5, 3, 4, 3, 3, gz);
    sw_dataset tr, te;
    sw_err e = {0};
    sw_dataset_opts o = {.dir = dir};
    int rc = sw_dataset_load("idx", &o, &tr, &te, &e);
    CHECK(rc == SW_OK);
    if (rc) {
      sw_err_print(&e, stderr);
      continue;
    }
    CHECK(tr.n == 5 && te.n == 3 && tr.c == 1 && tr.h == 4 && tr.w == 3);
    CHECK(tr.num_classes == 3 && te.num_classes == 3); /* inferred: max label + 1 */
    CHECK(te.mean[0] == tr.mean[0] && te.std[0] == tr.std[0]);
    /* The inferred mean is the mean of the training pixels. */
    double m = 0;
    for (int i = 0; i < 5; i++)
      for (int k = 0; k < 12; k++) m += pixel(0, i, k) / 255.0;
    CHECK_NEAR(tr.mean[0], m / 60, 1e-6);
    for (int i = 0; i < 5; i++) {
      CHECK(tr.labels[i] == (i * 7 + 1) % 3);
      for (int k = 0; k < 12; k++)
        CHECK(value_at(&tr, i * 12 + k) == ((float)pixel(0, i, k) * tr.scale - tr.mean[0]) / tr.std[0]);
    }
    for (int k = 0; k < 12; k++)
      CHECK(value_at(&te, 2 * 12 + k) == ((float)pixel(1, 2, k) * te.scale - te.mean[0]) / te.std[0]);
    sw_dataset_free(&tr);
    sw_dataset_free(&te);

    /* As "mnist": standard normalisation, 10 classes. A directory path is detected as IDX. */
    rc = sw_dataset_load("mnist", &o, &tr, &te, &e);
    CHECK(rc == SW_OK && tr.num_classes == 10 && tr.mean[0] == 0.1307f && tr.std[0] == 0.3081f);
    if (rc == SW_OK) CHECK(value_at(&tr, 13) == ((float)pixel(0, 1, 1) * tr.scale - 0.1307f) / 0.3081f);
    sw_dataset_free(&tr);
    sw_dataset_free(&te);
    rc = sw_dataset_load(dir, NULL, &tr, &te, &e);
    CHECK(rc == SW_OK && strcmp(tr.name, "idx") == 0 && tr.n == 5);
    sw_dataset_free(&tr);
    sw_dataset_free(&te);

    /* User normalisation and limits. */
    o.norm_channels = 1;
    o.mean[0] = 0.5f;
    o.std[0] = 0.25f;
    o.train_limit = 2;
    rc = sw_dataset_load("mnist", &o, &tr, &te, &e);
    CHECK(rc == SW_OK && tr.n == 2 && te.n == 3 && tr.mean[0] == 0.5f && te.std[0] == 0.25f);
    if (rc == SW_OK) CHECK(value_at(&tr, 0) == ((float)pixel(0, 0, 0) / 255.0f - 0.5f) / 0.25f);
    sw_dataset_free(&tr);
    sw_dataset_free(&te);
    o.std[0] = 0;
    rc = sw_dataset_load("mnist", &o, &tr, &te, &e);
    EXPECT_FAIL(rc, &e, "bad normalisation", NULL);
  }
  /* The alternative file names some mirrors use ("train-images.idx3-ubyte"). */
  char dir[512], a[600], b[600];
  make_dir(dir, sizeof dir, "idx_dotnames");
  make_idx(dir, 4, 2, 2, 2, 10, 0);
  const char *from[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                         "t10k-labels-idx1-ubyte"};
  const char *to[4] = {"train-images.idx3-ubyte", "train-labels.idx1-ubyte", "t10k-images.idx3-ubyte",
                       "t10k-labels.idx1-ubyte"};
  for (int i = 0; i < 4; i++) {
    path_in(a, sizeof a, dir, from[i]);
    path_in(b, sizeof b, dir, to[i]);
    CHECK(rename(a, b) == 0);
  }
  sw_dataset tr, te;
  sw_err e = {0};
  sw_dataset_opts o = {.dir = dir};
  CHECK(sw_dataset_load("mnist", &o, &tr, &te, &e) == SW_OK && tr.n == 4 && te.n == 2);
  sw_dataset_free(&tr);
  sw_dataset_free(&te);
}

/* Writes dir/name (plain) with buf, on top of a valid IDX dataset. */
static void broken_idx(const char *sub, const char *name, const void *buf, size_t len, char *dir, size_t n) {
  make_dir(dir, n, sub);
  make_idx(dir, 5, 3, 4, 3, 10, 0);
  char p[600];
  path_in(p, sizeof p, dir, name);
  write_bytes(p, buf, len);
}

/* Loads "mnist" from dir keeping only the first training image, expecting failure: the images
 * beyond the limit are not kept, but the file is still checked to its end. */
static void limited_fails(int line, const char *dir, const char *a, const char *b) {
  sw_dataset tr, te;
  sw_err e = {0};
  sw_dataset_opts o = {.dir = dir, .train_limit = 1};
  int rc = sw_dataset_load("mnist", &o, &tr, &te, &e);
  expect_fail(line, rc, &e, a, b);
  CHECK(tr.pixels == NULL && te.pixels == NULL && tr.n == 0);
}

static void test_idx_broken(void) {
  char dir[512], p[600];
  size_t il, ll;
  unsigned char *im = idx_images(0x803, 5, 4, 3, 0, &il), *lb = idx_labels(5, 10, &ll);

  idx_fails(__LINE__, "/nonexistent/swatc-data", "idx", "does not exist", NULL);
  {
    sw_dataset tr, te;
    sw_err e = {0};
    sw_dataset_opts o = {.dir = "/nonexistent/swatc-fmnist"};
    int rc = sw_dataset_load("fashion-mnist", &o, &tr, &te, &e);
    EXPECT_FAIL(rc, &e, "does not exist", NULL);
    CHECK_CONTAINS(e.hint, "apt-get install dataset-fashion-mnist");
  }
  make_dir(dir, sizeof dir, "empty");
  idx_fails(__LINE__, dir, "idx", "has no train-images-idx3-ubyte", NULL);
  {
    sw_dataset tr, te;
    sw_err e = {0};
    sw_dataset_opts o = {.dir = dir};
    int rc = sw_dataset_load("fashion-mnist", &o, &tr, &te, &e);
    EXPECT_FAIL(rc, &e, "has no train-images-idx3-ubyte", NULL);
    CHECK_CONTAINS(e.hint, "t10k-labels-idx1-ubyte");
    CHECK_CONTAINS(e.hint, "apt-get install dataset-fashion-mnist");
  }
  /* Missing test labels only. */
  make_dir(dir, sizeof dir, "missing_test_labels");
  make_idx(dir, 5, 3, 4, 3, 10, 0);
  path_in(p, sizeof p, dir, "t10k-labels-idx1-ubyte");
  remove(p);
  idx_fails(__LINE__, dir, "mnist", "has no t10k-labels-idx1-ubyte", NULL);

  /* Image and label files swapped: wrong magic, with a guess. */
  broken_idx("swapped", "train-images-idx3-ubyte", lb, ll, dir, sizeof dir);
  idx_fails(__LINE__, dir, "mnist", "wrong magic number 0x00000801", "looks like an IDX label file");
  /* Not an IDX file at all. */
  broken_idx("html", "train-labels-idx1-ubyte", "<html>not found</html>", 22, dir, sizeof dir);
  idx_fails(__LINE__, dir, "mnist", "train-labels-idx1-ubyte: wrong magic number", NULL);
  /* Float elements. */
  {
    unsigned char *f = idx_images(0xD03, 5, 4, 3, 0, &il);
    broken_idx("float_idx", "train-images-idx3-ubyte", f, il, dir, sizeof dir);
    idx_fails(__LINE__, dir, "mnist", "not unsigned bytes", NULL);
    free(f);
  }
  /* Empty file and a cut header. */
  broken_idx("empty_file", "train-labels-idx1-ubyte", "", 0, dir, sizeof dir);
  idx_fails(__LINE__, dir, "mnist", "too short", NULL);
  broken_idx("cut_header", "train-images-idx3-ubyte", im, 10, dir, sizeof dir);
  idx_fails(__LINE__, dir, "mnist", "truncated IDX header", NULL);
  /* Truncated pixels and trailing bytes. */
  broken_idx("truncated", "train-images-idx3-ubyte", im, il - 5, dir, sizeof dir);
  idx_fails(__LINE__, dir, "mnist", "train-images-idx3-ubyte: truncated", "5 images of 4x3");
  limited_fails(__LINE__, dir, "train-images-idx3-ubyte: truncated", "(60 bytes) but the file holds 55");
  {
    unsigned char *big = malloc(il + 3);
    memcpy(big, im, il);
    memset(big + il, 0, 3);
    broken_idx("trailing", "train-images-idx3-ubyte", big, il + 3, dir, sizeof dir);
    idx_fails(__LINE__, dir, "mnist", "3 unexpected bytes", NULL);
    limited_fails(__LINE__, dir, "3 unexpected bytes", NULL);
    free(big);
  }
  /* A header claiming 2^31 images must fail as truncated, not try to allocate them. */
  {
    unsigned char *c = malloc(il);
    memcpy(c, im, il);
    put32(c + 4, 0x80000000u);
    put32(c + 8, 28);
    put32(c + 12, 28);
    broken_idx("huge_count", "train-images-idx3-ubyte", c, il, dir, sizeof dir);
    idx_fails(__LINE__, dir, "mnist", "truncated", "2147483648 images");
    put32(c + 4, 5);
    put32(c + 8, 0);
    broken_idx("zero_dim", "train-images-idx3-ubyte", c, il, dir, sizeof dir);
    idx_fails(__LINE__, dir, "mnist", "dimension 1 is 0", NULL);
    put32(c + 8, 100000);
    broken_idx("huge_side", "train-images-idx3-ubyte", c, il, dir, sizeof dir);
    idx_fails(__LINE__, dir, "mnist", "image side 100000", NULL);
    free(c);
  }
  /* Counts that disagree. */
  {
    size_t l4;
    unsigned char *lb4 = idx_labels(4, 10, &l4);
    broken_idx("count_mismatch", "train-labels-idx1-ubyte", lb4, l4, dir, sizeof dir);
    idx_fails(__LINE__, dir, "mnist", "holds 5 images but", "holds 4 labels");
    free(lb4);
  }
  /* A label out of range for 10 classes. */
  {
    unsigned char *c = malloc(ll);
    memcpy(c, lb, ll);
    c[8 + 3] = 12;
    broken_idx("bad_label", "train-labels-idx1-ubyte", c, ll, dir, sizeof dir);
    idx_fails(__LINE__, dir, "mnist", "label 12 of sample 3", "out of range for 10 classes");
    free(c);
  }
  /* Test labels beyond the classes the training labels imply (generic IDX). */
  {
    size_t l3;
    unsigned char *c = idx_labels(3, 10, &l3);
    make_dir(dir, sizeof dir, "idx_test_label");
    make_idx(dir, 5, 3, 4, 3, 3, 0);
    c[8 + 1] = 7;
    path_in(p, sizeof p, dir, "t10k-labels-idx1-ubyte");
    write_bytes(p, c, l3);
    idx_fails(__LINE__, dir, "idx", "label 7 of sample 1", "out of range for 3 classes");
    free(c);
  }
  /* gzip: truncated, corrupt data, bad CRC. */
  make_dir(dir, sizeof dir, "gz_bad");
  make_idx(dir, 40, 3, 8, 8, 10, 1);
  path_in(p, sizeof p, dir, "train-images-idx3-ubyte.gz");
  size_t gl;
  unsigned char *g = read_bytes(p, &gl);
  write_bytes(p, g, gl / 2);
  idx_fails(__LINE__, dir, "mnist", "train-images-idx3-ubyte.gz: truncated gzip", NULL);
  limited_fails(__LINE__, dir, "train-images-idx3-ubyte.gz: truncated gzip", NULL);
  write_bytes(p, g, gl - 4); /* only the length trailer missing */
  idx_fails(__LINE__, dir, "mnist", "train-images-idx3-ubyte.gz", "truncated gzip");
  limited_fails(__LINE__, dir, "train-images-idx3-ubyte.gz", "truncated gzip");
  {
    unsigned char *c = malloc(gl);
    memcpy(c, g, gl);
    c[gl - 8] ^= 0xff; /* CRC32 */
    write_bytes(p, c, gl);
    idx_fails(__LINE__, dir, "mnist", "train-images-idx3-ubyte.gz: corrupt gzip data", NULL);
    limited_fails(__LINE__, dir, "train-images-idx3-ubyte.gz: corrupt gzip data", NULL);
    memcpy(c, g, gl);
    for (size_t k = 12; k < gl - 8; k += 7) c[k] ^= 0x5a; /* mangle the deflate stream */
    write_bytes(p, c, gl);
    idx_fails(__LINE__, dir, "mnist", "train-images-idx3-ubyte.gz: ", "gzip");
    memcpy(c, g, gl);
    c[3] = 0xe0; /* reserved gzip header flags */
    write_bytes(p, c, gl);
    idx_fails(__LINE__, dir, "mnist", "train-images-idx3-ubyte.gz: ", "gzip");
    free(c);
  }
  free(g);
  /* A directory where a file should be is "missing". */
  make_dir(dir, sizeof dir, "dir_as_file");
  make_idx(dir, 5, 3, 4, 3, 10, 0);
  path_in(p, sizeof p, dir, "train-images-idx3-ubyte");
  remove(p);
  mkdir(p, 0755);
  idx_fails(__LINE__, dir, "mnist", "has no train-images-idx3-ubyte", NULL);
  free(im);
  free(lb);

  /* Dispatch errors. */
  idx_fails(__LINE__, NULL, "imagenet-22k", "unknown dataset 'imagenet-22k'", NULL);
  idx_fails(__LINE__, NULL, "mnist", "needs --data DIR", NULL);
  idx_fails(__LINE__, NULL, "cifar10", "needs --data DIR", NULL);
  idx_fails(__LINE__, NULL, "", "no dataset", NULL);
}

/* ---- CIFAR-10 --------------------------------------------------------------------------------- */

static unsigned char cifar_px(int f, int r, int k) { return (unsigned char)((f * 7 + r * 13 + k * 3) % 256); }

/* Writes a CIFAR-10 binary set with `per` records per training file and ntest test records. */
static void make_cifar(const char *dir, int per, int ntest) {
  for (int f = 0; f < 6; f++) {
    int n = f < 5 ? per : ntest;
    unsigned char *b = malloc((size_t)n * 3073);
    for (int r = 0; r < n; r++) {
      b[r * 3073] = (unsigned char)((f * 3 + r) % 10);
      for (int k = 0; k < 3072; k++) b[r * 3073 + 1 + k] = cifar_px(f, r, k);
    }
    char p[600], name[32];
    if (f < 5)
      snprintf(name, sizeof name, "data_batch_%d.bin", f + 1);
    else
      snprintf(name, sizeof name, "test_batch.bin");
    path_in(p, sizeof p, dir, name);
    write_bytes(p, b, (size_t)n * 3073);
    free(b);
  }
}

static void test_cifar(void) {
  char dir[512], p[600];
  make_dir(dir, sizeof dir, "cifar");
  make_cifar(dir, 2, 3);
  sw_dataset tr, te;
  sw_err e = {0};
  sw_dataset_opts o = {.dir = dir};
  int rc = sw_dataset_load("cifar10", &o, &tr, &te, &e);
  CHECK(rc == SW_OK);
  if (rc == SW_OK) {
    CHECK(tr.n == 10 && te.n == 3 && tr.c == 3 && tr.h == 32 && tr.w == 32 && tr.num_classes == 10);
    CHECK(tr.mean[0] == 0.4914f && tr.mean[2] == 0.4465f && tr.std[1] == 0.2435f);
    int ok = 1;
    for (int f = 0; f < 5; f++)
      for (int r = 0; r < 2; r++) {
        int i = f * 2 + r;
        ok &= tr.labels[i] == (f * 3 + r) % 10;
        for (int k = 0; k < 3072; k += 97) {
          int c = k / 1024;
          ok &= tr.pixels[(int64_t)i * 3072 + k] == cifar_px(f, r, k) && value_at(&tr, (int64_t)i * 3072 + k) ==
                ((float)cifar_px(f, r, k) * tr.scale - tr.mean[c]) / tr.std[c];
        }
      }
    CHECK(ok);
    CHECK(te.labels[2] == (15 + 2) % 10);
    CHECK(value_at(&te, 2 * 3072 + 2048) == ((float)cifar_px(5, 2, 2048) * te.scale - te.mean[2]) / te.std[2]);
    int64_t shape[3] = {3, 32, 32};
    CHECK(sw_dataset_check_input(&tr, shape, 3, "x", &e) == SW_OK);
  } else {
    sw_err_print(&e, stderr);
  }
  sw_dataset_free(&tr);
  sw_dataset_free(&te);
  /* Limits stop reading early; a directory path is detected as CIFAR. */
  o.train_limit = 3;
  rc = sw_dataset_load(dir, &o, &tr, &te, &e);
  CHECK(rc == SW_OK && tr.n == 3 && strcmp(tr.name, "cifar10") == 0 && tr.labels[2] == 3);
  sw_dataset_free(&tr);
  sw_dataset_free(&te);

  /* The files inside cifar-10-batches-bin/, one of them gzipped. */
  char sub[600];
  make_dir(dir, sizeof dir, "cifar_parent");
  path_in(sub, sizeof sub, dir, "cifar-10-batches-bin");
  mkdir(sub, 0755);
  make_cifar(sub, 1, 1);
  path_in(p, sizeof p, sub, "data_batch_4.bin");
  size_t len;
  unsigned char *b = read_bytes(p, &len);
  remove(p);
  strcat(p, ".gz");
  write_gz(p, b, len);
  free(b);
  o = (sw_dataset_opts){.dir = dir};
  rc = sw_dataset_load("cifar10", &o, &tr, &te, &e);
  CHECK(rc == SW_OK && tr.n == 5 && te.n == 1 && tr.labels[3] == 9);
  sw_dataset_free(&tr);
  sw_dataset_free(&te);

  /* Broken CIFAR files. */
  unsigned char rec[3 * 3074];
  memset(rec, 1, sizeof rec);
  make_dir(dir, sizeof dir, "cifar_odd");
  make_cifar(dir, 2, 2);
  path_in(p, sizeof p, dir, "data_batch_2.bin");
  write_bytes(p, rec, 3073 + 5);
  idx_fails(__LINE__, dir, "cifar10", "data_batch_2.bin: 3078 bytes is not a whole number", NULL);
  write_bytes(p, rec, 3 * 3074);
  {
    sw_dataset_opts oo = {.dir = dir};
    sw_err ee = {0};
    rc = sw_dataset_load("cifar10", &oo, &tr, &te, &ee);
    EXPECT_FAIL(rc, &ee, "not a whole number of 3073-byte records", NULL);
    CHECK_CONTAINS(ee.hint, "CIFAR-100");
  }
  write_bytes(p, rec, 0);
  idx_fails(__LINE__, dir, "cifar10", "data_batch_2.bin is empty", NULL);
  rec[3073] = 10;
  write_bytes(p, rec, 2 * 3073);
  idx_fails(__LINE__, dir, "cifar10", "label 10 of record 1", "data_batch_2.bin");
  remove(p);
  idx_fails(__LINE__, dir, "cifar10", "has no data_batch_2.bin", NULL);
  make_dir(dir, sizeof dir, "cifar_none");
  idx_fails(__LINE__, dir, "cifar10", "has no data_batch_1.bin", NULL);
}

/* ---- synthetic ------------------------------------------------------------------------------------ */

static int same_data(const sw_dataset *a, const sw_dataset *b) {
  if (a->n != b->n || sw_dataset_sample_size(a) != sw_dataset_sample_size(b)) return 0;
  return memcmp(a->pixels, b->pixels, (size_t)(a->n * sw_dataset_sample_size(a))) == 0 &&
         memcmp(a->lut, b->lut, sizeof a->lut) == 0 &&
         memcmp(a->labels, b->labels, (size_t)a->n * sizeof(int64_t)) == 0;
}

static void test_synthetic(void) {
  sw_dataset_opts o = {
      .syn_c = 3, .syn_h = 16, .syn_w = 12, .syn_classes = 7, .syn_train = 300, .syn_test = 50, .seed = 11};
  sw_dataset a, at, b, bt;
  sw_err e = {0};
  omp_set_num_threads(1);
  CHECK(sw_dataset_load("synthetic", &o, &a, &at, &e) == SW_OK);
  omp_set_num_threads(2);
  CHECK(sw_dataset_load("synthetic", &o, &b, &bt, &e) == SW_OK);
  CHECK(a.n == 300 && at.n == 50 && a.c == 3 && a.h == 16 && a.w == 12 && a.num_classes == 7);
  CHECK(same_data(&a, &b) && same_data(&at, &bt)); /* deterministic, thread-count independent */
  CHECK(memcmp(a.pixels, at.pixels, 50) != 0);
  int64_t hist[7];
  sw_dataset_label_counts(&a, hist); /* asserts range */
  int all = 1;
  for (int k = 0; k < 7; k++) all &= hist[k] > 10;
  CHECK(all);
  double s = 0, s2 = 0;
  int64_t m = a.n * sw_dataset_sample_size(&a);
  float *av = values(&a);
  for (int64_t k = 0; k < m; k++) {
    s += av[k];
    s2 += av[k] * av[k];
  }
  free(av);
  CHECK_NEAR(s / m, 0.0, 0.02);
  CHECK_NEAR(s2 / m, 1.0, 0.03);
  sw_dataset_free(&b);
  sw_dataset_free(&bt);
  o.seed = 12;
  CHECK(sw_dataset_load("synthetic", &o, &b, &bt, &e) == SW_OK);
  CHECK(!same_data(&a, &b));
  sw_dataset_free(&b);
  sw_dataset_free(&bt);
  /* A limit keeps a prefix of the same samples. */
  o.seed = 11;
  o.train_limit = 10;
  CHECK(sw_dataset_load("synthetic", &o, &b, &bt, &e) == SW_OK && b.n == 10);
  CHECK(memcmp(a.pixels, b.pixels, (size_t)(10 * sw_dataset_sample_size(&a))) == 0);
  int64_t s4[4] = {8, 3, 16, 12}, s3bad[3] = {3, 16, 13}, s2r[2] = {3, 16};
  CHECK(sw_dataset_check_input(&a, s4, 4, "x", &e) == SW_OK);
  int rc = sw_dataset_check_input(&a, s3bad, 3, "x", &e);
  EXPECT_FAIL(rc, &e, "[3,16,12]", "'x' is [3,16,13]");
  sw_err_clear(&e);
  rc = sw_dataset_check_input(&a, s2r, 2, "x", &e);
  EXPECT_FAIL(rc, &e, "rank 2", NULL);
  sw_dataset_free(&a);
  sw_dataset_free(&at);
  sw_dataset_free(&b);
  sw_dataset_free(&bt);

  sw_dataset_opts bad = {.syn_c = 5};
  sw_err_clear(&e);
  rc = sw_dataset_load("synthetic", &bad, &a, &at, &e);
  EXPECT_FAIL(rc, &e, "bad image shape 5x28x28", NULL);
  bad = (sw_dataset_opts){.syn_classes = 1};
  sw_err_clear(&e);
  rc = sw_dataset_load("synthetic", &bad, &a, &at, &e);
  EXPECT_FAIL(rc, &e, "1 classes", NULL);
}

/* Random damage (byte flips, truncation, appended junk) to valid IDX and CIFAR files, plain and
 * gzipped: every load either succeeds or fails with SW_EINPUT and a message; none crashes (the
 * sanitizer build runs this too). */
static void test_random_damage(void) {
  sw_rng r;
  sw_rng_seed(&r, 2024);
  int fails = 0, oks = 0;
  for (int kind = 0; kind < 4; kind++) {
    char dir[512], p[600];
    char sub[32];
    snprintf(sub, sizeof sub, "damage%d", kind);
    make_dir(dir, sizeof dir, sub);
    int gz = kind & 1, cifar = kind >= 2;
    const char *victim;
    if (cifar) {
      make_cifar(dir, 2, 2);
      victim = "data_batch_1.bin";
      if (gz) {
        path_in(p, sizeof p, dir, victim);
        size_t len;
        unsigned char *b = read_bytes(p, &len);
        remove(p);
        strcat(p, ".gz");
        write_gz(p, b, len);
        free(b);
        victim = "data_batch_1.bin.gz";
      }
    } else {
      make_idx(dir, 20, 4, 6, 5, 10, gz);
      victim = gz ? "train-images-idx3-ubyte.gz" : "train-images-idx3-ubyte";
    }
    path_in(p, sizeof p, dir, victim);
    size_t len;
    unsigned char *orig = read_bytes(p, &len), *buf = malloc(len + 64);
    for (int t = 0; t < 60; t++) {
      memcpy(buf, orig, len);
      size_t n = len;
      int what = (int)sw_rng_below(&r, 3);
      if (what == 0) {
        int flips = 1 + (int)sw_rng_below(&r, 4);
        for (int f = 0; f < flips; f++)
          buf[sw_rng_below(&r, len)] ^= (unsigned char)(1 + sw_rng_below(&r, 255));
      } else if (what == 1) {
        n = (size_t)sw_rng_below(&r, len);
      } else {
        size_t extra = 1 + (size_t)sw_rng_below(&r, 64);
        for (size_t k = 0; k < extra; k++) buf[len + k] = (unsigned char)sw_rng_next(&r);
        n = len + extra;
      }
      write_bytes(p, buf, n);
      sw_dataset tr, te;
      sw_err e = {0};
      sw_dataset_opts o = {.dir = dir};
      int rc = sw_dataset_load(cifar ? "cifar10" : "mnist", &o, &tr, &te, &e);
      CHECK(rc == SW_OK || (rc == SW_EINPUT && e.msg[0] != 0));
      if (rc == SW_OK) {
        oks++;
        int64_t counts[10];
        sw_dataset_label_counts(&tr, counts); /* labels in range */
      } else {
        fails++;
      }
      sw_dataset_free(&tr);
      sw_dataset_free(&te);
    }
    free(orig);
    free(buf);
  }
  printf("  random damage: %d loads failed cleanly, %d damaged files still loaded\n", fails, oks);
  CHECK(fails > 150);
}

/* The test split of a test-only load is the one a two-split load gives, bit for bit. */
static void same_test_split(const char *name, const sw_dataset_opts *o) {
  sw_dataset tr, te, only;
  sw_err e = {0}, e2 = {0};
  int rc = sw_dataset_load(name, o, &tr, &te, &e), rc2 = sw_dataset_load_test(name, o, &only, &e2);
  CHECK(rc == SW_OK && rc2 == SW_OK);
  if (rc == SW_OK && rc2 == SW_OK) {
    int64_t per = sw_dataset_sample_size(&te);
    CHECK(only.n == te.n && only.c == te.c && only.h == te.h && only.w == te.w && only.num_classes == te.num_classes);
    CHECK_STR(only.name, te.name);
    CHECK_STR(only.split, "test");
    CHECK(memcmp(&only.scale, &te.scale, sizeof te.scale) == 0 && memcmp(only.mean, te.mean, sizeof te.mean) == 0 &&
          memcmp(only.std, te.std, sizeof te.std) == 0 && memcmp(only.lut, te.lut, sizeof te.lut) == 0);
    CHECK(only.n != te.n || (memcmp(only.pixels, te.pixels, (size_t)(te.n * per)) == 0 &&
                             memcmp(only.labels, te.labels, sizeof *te.labels * (size_t)te.n) == 0));
  } else {
    sw_err_print(rc ? &e : &e2, stderr);
  }
  sw_dataset_free(&tr);
  sw_dataset_free(&te);
  sw_dataset_free(&only);
}

static void test_test_only(void) {
  char dir[512], p[600];
  make_dir(dir, sizeof dir, "test_only_idx");
  make_idx(dir, 6, 4, 5, 3, 4, 0);
  sw_dataset_opts o = {.dir = dir, .test_limit = 3};
  same_test_split("mnist", &o);
  same_test_split("idx", &o); /* generic IDX: classes and normalisation from the training split */
  same_test_split(dir, &o);
  sw_dataset_opts s = {.syn_c = 2, .syn_h = 3, .syn_w = 4, .syn_train = 9, .syn_test = 5, .syn_classes = 3, .seed = 7};
  same_test_split("synthetic", &s);
  char cdir[512];
  make_dir(cdir, sizeof cdir, "test_only_cifar");
  make_cifar(cdir, 2, 3);
  sw_dataset_opts c = {.dir = cdir};
  same_test_split("cifar10", &c);
  same_test_split(cdir, &c);
  /* a known dataset's test-only load does not read the training split: it may even be missing */
  path_in(p, sizeof p, dir, "train-images-idx3-ubyte");
  CHECK(unlink(p) == 0);
  sw_dataset te, tr;
  sw_err e = {0};
  CHECK(sw_dataset_load_test("mnist", &o, &te, &e) == SW_OK && te.n == 3);
  sw_dataset_free(&te);
  CHECK(sw_dataset_load("mnist", &o, &tr, &te, &e) == SW_EINPUT && te.n == 0 && tr.n == 0);
  /* generic IDX data needs it */
  e = (sw_err){0};
  CHECK(sw_dataset_load_test("idx", &o, &te, &e) == SW_EINPUT && te.n == 0 && te.pixels == NULL);
  CHECK(strstr(e.msg, "train-images-idx3-ubyte") != NULL);
}

int main(void) {
  const char *t = getenv("TMPDIR");
  snprintf(tmp_root, sizeof tmp_root, "%s/swatc-test-dataset-XXXXXX", t && *t ? t : "/tmp");
  if (!mkdtemp(tmp_root)) {
    perror("mkdtemp");
    return 1;
  }
  printf("Fashion-MNIST\n");
  test_fashion();
  printf("IDX files\n");
  test_idx_valid();
  test_idx_broken();
  printf("CIFAR-10 files\n");
  test_cifar();
  printf("synthetic\n");
  test_synthetic();
  printf("test split only\n");
  test_test_only();
  printf("random damage\n");
  test_random_damage();
  nftw(tmp_root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  return check_report("test_dataset");
}
