#include "train/dataset.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <zlib.h>

#include "train/rng.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SW_DATASET_AVX512 1
#else
#define SW_DATASET_AVX512 0
#endif

/* The largest file (after decompression) a loader will hold: far above any supported dataset,
 * low enough that a gzip bomb or a wrong path fails with a message instead of exhausting memory. */
#define MAX_FILE_BYTES ((size_t)4 << 30)
/* Allocations of at least this size ask for transparent huge pages. */
#define HUGE_MIN ((size_t)4 << 20)
/* Largest image side accepted from a header. */
#define MAX_SIDE 16384

static const char *const idx_names_hint =
    "the directory must hold train-images-idx3-ubyte, train-labels-idx1-ubyte, "
    "t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (each plain or .gz)";

static const char *const cifar_names_hint =
    "the directory (or its cifar-10-batches-bin/ subfolder) must hold the CIFAR-10 binary version: "
    "data_batch_1.bin .. data_batch_5.bin and test_batch.bin (3073-byte records: 1 label byte + "
    "3x32x32 pixels)";

/* ---- small helpers ---------------------------------------------------------------------------- */

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Allocates n bytes for input-sized data; on failure reports what it was for. */
static void *try_alloc(size_t n, const char *what, sw_err *e) {
  void *p = NULL;
  if (n >= HUGE_MIN) {
    /* Large arrays on 2 MiB boundaries with transparent huge pages requested: first-touch page
     * faults otherwise dominate loading (with 4 KiB pages they were ~2/3 of Fashion-MNIST's load). */
    if (posix_memalign(&p, (size_t)2 << 20, n) != 0) p = NULL;
    if (p) madvise(p, n, MADV_HUGEPAGE); /* advisory; failure is harmless */
  } else {
    p = malloc(n ? n : 1);
  }
  if (!p) sw_fail(e, SW_ENOMEM, "out of memory: %zu MiB needed for %s", (n >> 20) + 1, what);
  return p;
}

/* Guesses the data size of a file of `size` bytes: for gzip, the ISIZE trailer (the uncompressed
 * size mod 2^32) when it is plausible; otherwise the file size. Only sizes the first buffer. */
static size_t size_guess(const char *path, size_t size) {
  FILE *f = fopen(path, "rb");
  if (!f) return size;
  unsigned char h[4];
  size_t guess = size;
  if (size >= 18 && fread(h, 1, 2, f) == 2 && h[0] == 0x1f && h[1] == 0x8b && fseek(f, -4, SEEK_END) == 0 &&
      fread(h, 1, 4, f) == 4) {
    size_t isize = (size_t)h[0] | (size_t)h[1] << 8 | (size_t)h[2] << 16 | (size_t)h[3] << 24;
    if (isize / 1032 <= size) guess = isize; /* deflate expands at most ~1032x */
  }
  fclose(f);
  return guess;
}

/* A file read through zlib: gzip is decompressed, plain files pass through. */
typedef struct zfile {
  gzFile g;
  const char *path;
  size_t len; /* bytes of data delivered so far */
} zfile;

/* Opens path for zf_read; reports missing files and directories. */
static int zf_open(zfile *z, const char *path, sw_err *e) {
  z->g = NULL;
  z->path = path;
  z->len = 0;
  struct stat st;
  if (stat(path, &st) != 0) return sw_fail(e, SW_EINPUT, "cannot open %s: %s", path, strerror(errno));
  if (!S_ISREG(st.st_mode)) return sw_fail(e, SW_EINPUT, "%s is not a regular file", path);
  z->g = gzopen(path, "rb");
  if (!z->g) return sw_fail(e, SW_EINPUT, "cannot open %s: %s", path, errno ? strerror(errno) : "gzopen failed");
  gzbuffer(z->g, 1 << 17);
  return SW_OK;
}

/* Adds the re-download hint to an input error of reading z that has none. */
static int zf_hint(int rc, sw_err *e) {
  if (rc == SW_EINPUT && e->hint[0] == 0)
    sw_hint(e, "re-download or re-install the file; `gzip -t FILE` checks a .gz file");
  return rc;
}

/* Reads up to want bytes into dst; *got < want only at the end of the file. Reports corrupt or
 * truncated gzip streams and files that grow past MAX_FILE_BYTES. */
static int zf_read(zfile *z, unsigned char *dst, size_t want, size_t *got, sw_err *e) {
  *got = 0;
  while (*got < want) {
    size_t ask = want - *got;
    if (ask > (1u << 30)) ask = 1u << 30;
    int n = gzread(z->g, dst + *got, (unsigned)ask);
    if (n > 0) {
      *got += (size_t)n;
      z->len += (size_t)n;
      if (z->len > MAX_FILE_BYTES)
        return zf_hint(sw_fail(e, SW_EINPUT, "%s is larger than %zu MiB (after decompression); not a dataset file",
                               z->path, MAX_FILE_BYTES >> 20), e);
      continue;
    }
    int errnum = Z_OK;
    const char *zmsg = gzerror(z->g, &errnum);
    size_t plen = strlen(z->path); /* zlib prefixes its message with the path: drop it */
    if (strncmp(zmsg, z->path, plen) == 0 && strncmp(zmsg + plen, ": ", 2) == 0) zmsg += plen + 2;
    int rc = SW_OK;
    if (n < 0 || errnum != Z_OK) {
      if (errnum == Z_BUF_ERROR)
        rc = sw_fail(e, SW_EINPUT,
                     "%s: truncated gzip file (the compressed stream ends early, after %zu bytes of data)",
                     z->path, z->len);
      else if (errnum == Z_DATA_ERROR)
        rc = sw_fail(e, SW_EINPUT, "%s: corrupt gzip data (%s)", z->path, zmsg);
      else if (errnum == Z_ERRNO)
        rc = sw_fail(e, SW_EINPUT, "%s: read error: %s", z->path, strerror(errno));
      else
        rc = sw_fail(e, SW_EINPUT, "%s: cannot decompress (%s)", z->path, zmsg);
    }
    return zf_hint(rc, e); /* rc == SW_OK: clean end of file */
  }
  return SW_OK;
}

/* Closes z; with check, reports a gzip stream that turns out truncated at the end. */
static int zf_close(zfile *z, int check, sw_err *e) {
  if (!z->g) return SW_OK;
  int zc = gzclose(z->g);
  z->g = NULL;
  if (!check) return SW_OK;
  if (zc == Z_BUF_ERROR)
    return zf_hint(sw_fail(e, SW_EINPUT, "%s: truncated gzip file (the compressed stream ends early)", z->path), e);
  if (zc != Z_OK)
    return zf_hint(sw_fail(e, SW_EINPUT, "%s: error closing the file (zlib code %d)", z->path, zc), e);
  return SW_OK;
}

/* Reads the rest of z: up to keep bytes into a fresh buffer *out (*kept of them), then counts and
 * discards whatever follows (*rest bytes). The buffer starts at `guess` bytes and grows as data
 * arrives, so a header that promises more than the file holds costs no more memory than the file. */
static int zf_read_prefix(zfile *z, size_t keep, size_t guess, unsigned char **out, size_t *kept, size_t *rest,
                          sw_err *e) {
  *out = NULL;
  *kept = *rest = 0;
  size_t cap = guess < keep ? guess : keep;
  if (cap < (1 << 16)) cap = keep < (1 << 16) ? keep : 1 << 16;
  unsigned char *buf = try_alloc(cap, z->path, e);
  if (!buf) return e->code;
  size_t have = 0, got;
  int rc;
  for (;;) {
    if ((rc = zf_read(z, buf + have, cap - have, &got, e))) goto fail;
    have += got;
    if (have < cap || cap == keep) break; /* end of file, or all that is kept */
    size_t ncap = cap * 2 < keep ? cap * 2 : keep;
    unsigned char *nb = realloc(buf, ncap);
    if (!nb) {
      rc = sw_fail(e, SW_ENOMEM, "out of memory reading %s (%zu MiB)", z->path, ncap >> 20);
      goto fail;
    }
    buf = nb;
    cap = ncap;
  }
  if (have == keep) { /* count what follows */
    unsigned char scratch[1 << 14];
    do {
      if ((rc = zf_read(z, scratch, sizeof scratch, &got, e))) goto fail;
      *rest += got;
    } while (got == sizeof scratch);
  }
  *out = buf;
  *kept = have;
  return SW_OK;
fail:
  free(buf);
  return rc;
}

/* Reads the whole file at path, gunzipping it if it is gzip (plain files pass through), into a
 * fresh buffer. Reports missing files, directories, corrupt or truncated gzip streams. */
static int read_all(const char *path, unsigned char **out, size_t *out_len, sw_err *e) {
  *out = NULL;
  *out_len = 0;
  zfile z;
  int rc = zf_open(&z, path, e);
  if (rc) return rc;
  struct stat st;
  size_t size = stat(path, &st) == 0 ? (size_t)st.st_size : 0;
  size_t rest = 0;
  rc = zf_read_prefix(&z, MAX_FILE_BYTES, size_guess(path, size) + 1, out, out_len, &rest, e);
  int cc = zf_close(&z, rc == SW_OK, e);
  if (!rc) rc = cc;
  if (rc) {
    free(*out);
    *out = NULL;
    *out_len = 0;
  }
  return rc;
}

/* Finds base or base.gz (for each candidate base name) in dir; writes the found path to out. */
static int find_file(const char *dir, const char *const *bases, char *out, size_t n) {
  for (int i = 0; bases[i]; i++) {
    char name[256];
    snprintf(name, sizeof name, "%s.gz", bases[i]);
    if (snprintf(out, n, "%s/%s", dir, name) < (int)n && is_file(out)) return 1;
    if (snprintf(out, n, "%s/%s", dir, bases[i]) < (int)n && is_file(out)) return 1;
  }
  out[0] = 0;
  return 0;
}

static uint32_t be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void set_name(sw_dataset *d, const char *name, const char *split, const char *source) {
  snprintf(d->name, sizeof d->name, "%s", name);
  snprintf(d->split, sizeof d->split, "%s", split);
  snprintf(d->source, sizeof d->source, "%s", source ? source : "");
}

/* Fills d's normalisation from o (if it gives one) or from the defaults given. */
static int set_norm(sw_dataset *d, const sw_dataset_opts *o, int c, const float *mean, const float *std,
                    sw_err *e) {
  d->scale = 1.0f / 255.0f;
  if (o && o->norm_channels > 0) {
    if (o->norm_channels != c && o->norm_channels != 1) {
      sw_fail(e, SW_EINPUT, "normalisation has %d channel(s) but the %s data has %d", o->norm_channels, d->name, c);
      return sw_hint(e, "give one mean/std, or one per channel");
    }
    for (int i = 0; i < c; i++) {
      int k = o->norm_channels == 1 ? 0 : i;
      d->mean[i] = o->mean[k];
      d->std[i] = o->std[k];
    }
  } else {
    for (int i = 0; i < c; i++) {
      d->mean[i] = mean[i];
      d->std[i] = std[i];
    }
  }
  for (int i = 0; i < c; i++)
    if (!(d->std[i] > 0.0f) || !isfinite(d->std[i]) || !isfinite(d->mean[i])) {
      sw_fail(e, SW_EINPUT, "bad normalisation for channel %d: mean %g std %g", i, (double)d->mean[i], (double)d->std[i]);
      return sw_hint(e, "std must be a positive finite number");
    }
  sw_dataset_set_lut(d);
  return SW_OK;
}

/* Allocates labels for n samples of d's shape, and pixels too unless have_pixels is set (a buffer
 * the caller has already filled; it is only checked to be there). */
static int alloc_samples(sw_dataset *d, int64_t n, const void *have_pixels, sw_err *e) {
  int64_t per = (int64_t)d->c * d->h * d->w;
  if (n <= 0 || per <= 0 || n > INT64_MAX / per)
    return sw_fail(e, SW_EINPUT, "%s %s: bad size (%lld samples of %lld values)", d->name, d->split,
                   (long long)n, (long long)per);
  d->n = n;
  if (!have_pixels && !(d->pixels = try_alloc((size_t)(n * per), "dataset images", e))) return e->code;
  d->labels = try_alloc((size_t)n * sizeof(int64_t), "dataset labels", e);
  return d->labels ? SW_OK : e->code;
}

/* ---- IDX ---------------------------------------------------------------------------------------- */

/* Checks the IDX header of unsigned bytes with ndim dimensions at the start of buf (len bytes, or
 * fewer if that is the whole file) and reads its dims; *payload_off is the header size. */
static int idx_header(const unsigned char *buf, size_t len, const char *path, int ndim, uint32_t *dims,
                      size_t *payload_off, sw_err *e) {
  const char *kind = ndim == 3 ? "images" : "labels";
  uint32_t want = 0x0800u | (uint32_t)ndim;
  if (len < 4) return sw_fail(e, SW_EINPUT, "%s: %zu bytes, too short to be an IDX %s file", path, len, kind);
  uint32_t magic = be32(buf);
  if (magic != want) {
    const char *guess = "";
    if (magic == 0x00000801u)
      guess = " (this looks like an IDX label file)";
    else if (magic == 0x00000803u)
      guess = " (this looks like an IDX image file)";
    else if (buf[0] == 0x1f && buf[1] == 0x8b)
      guess = " (gzip inside gzip?)";
    else if ((magic & 0xffff0000u) == 0 && buf[2] != 0x08)
      guess = " (IDX, but the elements are not unsigned bytes)";
    sw_fail(e, SW_EINPUT, "%s: wrong magic number 0x%08x, expected 0x%08x for IDX %s%s", path, magic, want, kind, guess);
    return sw_hint(e, "%s", idx_names_hint);
  }
  size_t hdr = 4 + 4 * (size_t)ndim;
  if (len < hdr) return sw_fail(e, SW_EINPUT, "%s: truncated IDX header (%zu of %zu bytes)", path, len, hdr);
  for (int i = 0; i < ndim; i++) {
    dims[i] = be32(buf + 4 + 4 * i);
    if (dims[i] == 0)
      return sw_fail(e, SW_EINPUT, "%s: dimension %d is 0 (the header says there is no data)", path, i);
    if (i > 0 && dims[i] > MAX_SIDE)
      return sw_fail(e, SW_EINPUT, "%s: image side %u is larger than %d; corrupt header?", path, dims[i],
                     MAX_SIDE);
  }
  *payload_off = hdr;
  return SW_OK;
}

/* Checks that an IDX file whose header (dims) is followed by `have` bytes holds exactly its data. */
static int idx_payload(size_t have, const char *path, int ndim, const uint32_t *dims, sw_err *e) {
  const char *kind = ndim == 3 ? "images" : "labels";
  uint64_t total = 1;
  for (int i = 0; i < ndim; i++) total *= dims[i]; /* at most 2^32 * 2^14 * 2^14: fits in 64 bits */
  if (have < total) {
    if (ndim == 3)
      return sw_fail(e, SW_EINPUT,
                     "%s: truncated: header promises %u images of %ux%u (%llu bytes) but the file holds %zu",
                     path, dims[0], dims[1], dims[2], (unsigned long long)total, have);
    return sw_fail(e, SW_EINPUT, "%s: truncated: header promises %u labels but the file holds %zu", path,
                   dims[0], have);
  }
  if (have > total)
    return sw_fail(e, SW_EINPUT, "%s: %zu unexpected bytes after the %u %s the header describes", path,
                   have - (size_t)total, dims[0], kind);
  return SW_OK;
}

/* Parses a whole IDX file of unsigned bytes in memory: header, then exactly the data it describes. */
static int idx_parse(const unsigned char *buf, size_t len, const char *path, int ndim, uint32_t *dims,
                     size_t *payload_off, sw_err *e) {
  int rc = idx_header(buf, len, path, ndim, dims, payload_off, e);
  return rc ? rc : idx_payload(len - *payload_off, path, ndim, dims, e);
}

/* Reads an IDX image file, keeping only the pixels of its first `limit` images (0 = all) in a
 * fresh buffer *px, but checking the whole file (header, size, gzip stream): the rest of it
 * streams through a small buffer instead of being held. */
static int idx_read_images(const char *path, int64_t limit, uint32_t *dims, unsigned char **px, sw_err *e) {
  *px = NULL;
  zfile z;
  int rc = zf_open(&z, path, e);
  if (rc) return rc;
  unsigned char hdr[16];
  size_t got, off = 0, kept = 0, rest = 0;
  if ((rc = zf_read(&z, hdr, sizeof hdr, &got, e))) goto done;
  if ((rc = idx_header(hdr, got, path, 3, dims, &off, e))) goto done;
  size_t per = (size_t)dims[1] * dims[2];
  uint64_t n = limit > 0 && (uint64_t)limit < dims[0] ? (uint64_t)limit : dims[0];
  uint64_t keep = n * per; /* < 2^32 * 2^28: fits */
  if (keep > MAX_FILE_BYTES) keep = MAX_FILE_BYTES + 1; /* zf_read stops such a file first */
  struct stat st;
  size_t guess = size_guess(path, stat(path, &st) == 0 ? (size_t)st.st_size : 0);
  if ((rc = zf_read_prefix(&z, (size_t)keep, guess > off ? guess - off : 0, px, &kept, &rest, e))) goto done;
  if ((rc = idx_payload(kept + rest, path, 3, dims, e))) goto done;
done:
  {
    int cc = zf_close(&z, rc == SW_OK, e);
    if (!rc) rc = cc;
  }
  if (rc) {
    free(*px);
    *px = NULL;
  }
  return rc;
}

static const float mnist_mean[1] = {0.1307f}, mnist_std[1] = {0.3081f};
static const float fashion_mean[1] = {0.2860f}, fashion_std[1] = {0.3530f};

int sw_dataset_load_idx(const char *dir, const char *split, const char *name, const sw_dataset_opts *o,
                        sw_dataset *d, sw_err *e) {
  memset(d, 0, sizeof *d);
  int is_train = strcmp(split, "train") == 0;
  SW_ASSERT(is_train || strcmp(split, "test") == 0);
  set_name(d, name, split, dir);
  if (!is_dir(dir)) {
    sw_fail(e, SW_EINPUT, "%s: data directory %s does not exist", name, dir);
    return sw_hint(e, "%s", strcmp(name, "fashion-mnist") == 0 ? "apt-get install dataset-fashion-mnist, or pass --data DIR" : idx_names_hint);
  }
  const char *const img_train[] = {"train-images-idx3-ubyte", "train-images.idx3-ubyte", NULL};
  const char *const lab_train[] = {"train-labels-idx1-ubyte", "train-labels.idx1-ubyte", NULL};
  const char *const img_test[] = {"t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte", NULL};
  const char *const lab_test[] = {"t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte", NULL};
  const char *const *ib = is_train ? img_train : img_test, *const *lb = is_train ? lab_train : lab_test;
  char ipath[1024], lpath[1024];
  if (!find_file(dir, ib, ipath, sizeof ipath) || !find_file(dir, lb, lpath, sizeof lpath)) {
    const char *missing = !find_file(dir, ib, ipath, sizeof ipath) ? ib[0] : lb[0];
    sw_fail(e, SW_EINPUT, "%s: %s has no %s (or %s.gz)", name, dir, missing, missing);
    return sw_hint(e, "%s%s", idx_names_hint, strcmp(name, "fashion-mnist") == 0 ? "; apt-get install dataset-fashion-mnist" : "");
  }

  unsigned char *lbuf = NULL, *ibuf = NULL;
  size_t llen = 0, loff = 0;
  uint32_t ldims[1] = {0}, idims[3] = {0};
  int rc = read_all(lpath, &lbuf, &llen, e);
  if (rc) goto done;
  if ((rc = idx_parse(lbuf, llen, lpath, 1, ldims, &loff, e))) {
    if (!e->hint[0]) sw_hint(e, "the file is damaged or not from this dataset; re-download or re-install it");
    goto done;
  }
  int64_t limit = o ? (is_train ? o->train_limit : o->test_limit) : 0;
  if ((rc = idx_read_images(ipath, limit, idims, &ibuf, e))) {
    if (!e->hint[0]) sw_hint(e, "the file is damaged or not from this dataset; re-download or re-install it");
    goto done;
  }
  if (idims[0] != ldims[0]) {
    sw_fail(e, SW_EINPUT, "%s holds %u images but %s holds %u labels", ipath, idims[0], lpath, ldims[0]);
    rc = sw_hint(e, "the image and label files must come from the same release and split");
    goto done;
  }

  /* Labels: validate the whole file, even when only a prefix is kept. */
  const unsigned char *lab = lbuf + loff;
  int maxlab = 0;
  for (uint32_t i = 0; i < ldims[0]; i++) maxlab = lab[i] > maxlab ? lab[i] : maxlab;
  int known = strcmp(name, "mnist") == 0 || strcmp(name, "fashion-mnist") == 0;
  int ncls = o && o->num_classes > 0 ? o->num_classes : known ? 10 : maxlab + 1;
  if (ncls < 2 && !(o && o->num_classes > 0)) ncls = 2;
  for (uint32_t i = 0; i < ldims[0]; i++)
    if (lab[i] >= ncls) {
      sw_fail(e, SW_EINPUT, "%s: label %u of sample %u is out of range for %d classes", lpath, lab[i], i, ncls);
      rc = sw_hint(e, "labels must lie in [0, %d); pass the right number of classes or check the file", ncls);
      goto done;
    }

  d->c = 1;
  d->h = (int)idims[1];
  d->w = (int)idims[2];
  d->num_classes = ncls;
  int64_t n = idims[0];
  if (limit < 0) {
    rc = sw_fail(e, SW_EINPUT, "negative %s limit %lld", split, (long long)limit);
    goto done;
  }
  if (limit > 0 && limit < n) n = limit;

  const unsigned char *px = ibuf; /* the first n images' pixels (idx_read_images kept no more) */
  float mean[1], std[1];
  if (strcmp(name, "fashion-mnist") == 0) {
    mean[0] = fashion_mean[0];
    std[0] = fashion_std[0];
  } else if (strcmp(name, "mnist") == 0) {
    mean[0] = mnist_mean[0];
    std[0] = mnist_std[0];
  } else {
    /* Unknown IDX data: the mean and std of this split's kept pixels (integer sums: exact, so
     * independent of the thread count; files are < 4 GiB, so the sums stay below 2^48). */
    uint64_t s = 0, s2 = 0;
    size_t cnt = (size_t)n * idims[1] * idims[2];
#pragma omp parallel for reduction(+ : s, s2) schedule(static)
    for (size_t k = 0; k < cnt; k++) {
      s += px[k];
      s2 += (uint64_t)px[k] * px[k];
    }
    double m = (double)s / 255.0 / (double)cnt, var = (double)s2 / (255.0 * 255.0) / (double)cnt - m * m;
    mean[0] = (float)m;
    std[0] = var > 1e-12 ? (float)sqrt(var) : 1.0f;
  }
  if ((rc = set_norm(d, o, 1, mean, std, e))) goto done;
  if ((rc = alloc_samples(d, n, ibuf, e))) goto done;
  d->pixels = ibuf; /* taken over: no copy */
  ibuf = NULL;
  for (int64_t i = 0; i < n; i++) d->labels[i] = lab[i];

done:
  free(lbuf);
  free(ibuf);
  if (rc) sw_dataset_free(d);
  return rc;
}

/* ---- CIFAR-10 ------------------------------------------------------------------------------------ */

#define CIFAR_REC 3073
#define CIFAR_PIX 3072

static const float cifar_mean[3] = {0.4914f, 0.4822f, 0.4465f};
static const float cifar_std[3] = {0.2470f, 0.2435f, 0.2616f};

/* Resolves the folder holding the CIFAR-10 .bin files: dir itself or dir/cifar-10-batches-bin. */
static int cifar_dir(const char *dir, const char *first, char *out, size_t n) {
  const char *const b[] = {first, NULL};
  char tmp[1024];
  if (find_file(dir, b, tmp, sizeof tmp)) return snprintf(out, n, "%s", dir) < (int)n;
  char sub[1024];
  if (snprintf(sub, sizeof sub, "%s/cifar-10-batches-bin", dir) < (int)sizeof sub &&
      find_file(sub, b, tmp, sizeof tmp))
    return snprintf(out, n, "%s", sub) < (int)n;
  return 0;
}

int sw_dataset_load_cifar10(const char *dir, const char *split, const sw_dataset_opts *o, sw_dataset *d,
                            sw_err *e) {
  memset(d, 0, sizeof *d);
  int is_train = strcmp(split, "train") == 0;
  SW_ASSERT(is_train || strcmp(split, "test") == 0);
  set_name(d, "cifar10", split, dir);
  if (!is_dir(dir)) {
    sw_fail(e, SW_EINPUT, "cifar10: data directory %s does not exist", dir);
    return sw_hint(e, "%s", cifar_names_hint);
  }
  const char *const train_files[] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                                     "data_batch_4.bin", "data_batch_5.bin"};
  const char *const test_files[] = {"test_batch.bin"};
  const char *const *files = is_train ? train_files : test_files;
  int nfiles = is_train ? 5 : 1;
  char base[1024];
  if (!cifar_dir(dir, files[0], base, sizeof base)) {
    sw_fail(e, SW_EINPUT, "cifar10: %s has no %s (nor cifar-10-batches-bin/%s)", dir, files[0], files[0]);
    return sw_hint(e, "%s", cifar_names_hint);
  }
  snprintf(d->source, sizeof d->source, "%s", base);
  char paths[5][1024];
  for (int f = 0; f < nfiles; f++) {
    const char *const b[] = {files[f], NULL};
    if (!find_file(base, b, paths[f], sizeof paths[f])) {
      sw_fail(e, SW_EINPUT, "cifar10: %s has no %s", base, files[f]);
      return sw_hint(e, "%s", cifar_names_hint);
    }
  }
  int64_t limit = o ? (is_train ? o->train_limit : o->test_limit) : 0;
  if (limit < 0) return sw_fail(e, SW_EINPUT, "negative %s limit %lld", split, (long long)limit);

  /* Read the needed files, validating each; keep the raw records until the total is known. */
  unsigned char *bufs[5] = {0};
  size_t lens[5] = {0};
  int64_t total = 0;
  int used = 0, rc = SW_OK;
  for (int f = 0; f < nfiles && !(limit > 0 && total >= limit); f++, used++) {
    if ((rc = read_all(paths[f], &bufs[f], &lens[f], e))) goto done;
    size_t len = lens[f];
    if (len == 0) {
      sw_fail(e, SW_EINPUT, "%s is empty", paths[f]);
      rc = sw_hint(e, "%s", cifar_names_hint);
      goto done;
    }
    if (len % CIFAR_REC != 0) {
      sw_fail(e, SW_EINPUT, "%s: %zu bytes is not a whole number of 3073-byte records (truncated, or not " "CIFAR-10 binary; %zu bytes left over after %zu whole records)", paths[f], len, len % CIFAR_REC, len / CIFAR_REC);
      rc = sw_hint(e, "%s%s", cifar_names_hint, len % 3074 == 0 ? "; 3074-byte records are CIFAR-100, which has two label bytes" : "");
      goto done;
    }
    size_t recs = len / CIFAR_REC;
    for (size_t r = 0; r < recs; r++) {
      unsigned lab = bufs[f][r * CIFAR_REC];
      if (lab >= 10) {
        sw_fail(e, SW_EINPUT, "%s: label %u of record %zu is out of range for 10 classes", paths[f], lab, r);
        rc = sw_hint(e, "%s", cifar_names_hint);
        goto done;
      }
    }
    total += (int64_t)recs;
  }
  int64_t n = limit > 0 && limit < total ? limit : total;
  d->c = 3;
  d->h = 32;
  d->w = 32;
  d->num_classes = 10;
  if ((rc = set_norm(d, o, 3, cifar_mean, cifar_std, e))) goto done;
  if ((rc = alloc_samples(d, n, NULL, e))) goto done;
  {
    int64_t at = 0;
    for (int f = 0; f < used && at < n; f++) {
      int64_t recs = (int64_t)(lens[f] / CIFAR_REC), take = recs < n - at ? recs : n - at;
      const unsigned char *src = bufs[f];
      uint8_t *dst = d->pixels + at * CIFAR_PIX;
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < take; r++) memcpy(dst + r * CIFAR_PIX, src + r * CIFAR_REC + 1, CIFAR_PIX);
      for (int64_t r = 0; r < take; r++) d->labels[at + r] = src[r * CIFAR_REC];
      at += take;
    }
  }
done:
  for (int f = 0; f < 5; f++) free(bufs[f]);
  if (rc) sw_dataset_free(d);
  return rc;
}

/* ---- synthetic ------------------------------------------------------------------------------------ */

int sw_dataset_synthetic(const char *split, const sw_dataset_opts *o, sw_dataset *d, sw_err *e) {
  memset(d, 0, sizeof *d);
  int is_train = strcmp(split, "train") == 0;
  SW_ASSERT(is_train || strcmp(split, "test") == 0);
  set_name(d, "synthetic", split, "");
  sw_dataset_opts z = {0};
  if (!o) o = &z;
  int c = o->syn_c ? o->syn_c : 1, h = o->syn_h ? o->syn_h : 28, w = o->syn_w ? o->syn_w : 28;
  int k = o->syn_classes ? o->syn_classes : 10;
  int64_t n = is_train ? (o->syn_train ? o->syn_train : 1024) : (o->syn_test ? o->syn_test : 256);
  int64_t limit = is_train ? o->train_limit : o->test_limit;
  if (limit > 0 && limit < n) n = limit;
  if (c < 1 || c > SW_DATASET_MAX_C || h < 1 || h > MAX_SIDE || w < 1 || w > MAX_SIDE) {
    sw_fail(e, SW_EINPUT, "synthetic data: bad image shape %dx%dx%d", c, h, w);
    return sw_hint(e, "channels must be 1..%d and sides 1..%d", SW_DATASET_MAX_C, MAX_SIDE);
  }
  if (k < 2) {
    sw_fail(e, SW_EINPUT, "synthetic data: %d classes; need at least 2", k);
    return sw_hint(e, "give 2 or more classes");
  }
  if (n < 1 || limit < 0)
    return sw_fail(e, SW_EINPUT, "synthetic data: bad %s size %lld", split,
                   (long long)(limit < 0 ? limit : n));
  d->c = c;
  d->h = h;
  d->w = w;
  d->num_classes = k;
  /* Uniform bytes have mean 127.5/255 and std ~0.2887: the default makes the data ~N(0,1)-scaled. */
  float mean[SW_DATASET_MAX_C], std[SW_DATASET_MAX_C];
  for (int i = 0; i < c; i++) {
    mean[i] = 0.5f;
    std[i] = 0.2887f;
  }
  int rc = set_norm(d, o, c, mean, std, e);
  if (rc || (rc = alloc_samples(d, n, NULL, e))) {
    sw_dataset_free(d);
    return rc;
  }
  int64_t per = (int64_t)h * w * c;
  uint64_t seed = o->seed ^ (is_train ? 0x747261696eull : 0x74657374ull); /* "train" / "test" */
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++) {
    sw_rng r;
    sw_rng_seed_stream(&r, seed, (uint64_t)i);
    d->labels[i] = (int64_t)sw_rng_below(&r, (uint64_t)k);
    uint8_t *t = d->pixels + i * per;
    uint64_t bits = 0;
    for (int64_t j = 0; j < per; j++) {
      if ((j & 7) == 0) bits = sw_rng_next(&r);
      t[j] = (uint8_t)(bits & 0xff);
      bits >>= 8;
    }
  }
  return SW_OK;
}

/* ---- dispatch and checks ---------------------------------------------------------------------------- */

#if SW_DATASET_AVX512
/* (v * scale - mean) / std for n pixels, 16 at a time; returns how many it did (a multiple of 16).
 * Separately rounded IEEE operations in the formula's order, so each result equals the scalar one. */
__attribute__((target("avx512f"))) static int64_t normalise_avx512(const uint8_t *src, int64_t n, float *dst,
                                                                  float scale, float mean, float std) {
  __m512 vs = _mm512_set1_ps(scale), vm = _mm512_set1_ps(mean), vd = _mm512_set1_ps(std);
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) {
    __m512 x = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(src + k))));
    _mm512_storeu_ps(dst + k, _mm512_div_ps(_mm512_sub_ps(_mm512_mul_ps(x, vs), vm), vd));
  }
  return k;
}
#endif

void sw_dataset_set_lut(sw_dataset *d) {
  /* The float operations and their order are those of the normalisation formula: every value read
   * out equals normalising that pixel directly (the build uses ISO C, so nothing is contracted). */
  for (int c = 0; c < d->c && c < SW_DATASET_MAX_C; c++)
    for (int v = 0; v < 256; v++) d->lut[c][v] = ((float)v * d->scale - d->mean[c]) / d->std[c];
  /* The vector path is used only if it gives exactly the table (it does wherever float is IEEE and
   * the compiler keeps the three operations separate; this check makes that certain). */
  d->simd = 0;
#if SW_DATASET_AVX512
  if (!__builtin_cpu_supports("avx512f") || d->c < 1 || d->c > SW_DATASET_MAX_C) return;
  uint8_t all[256];
  float got[256];
  for (int v = 0; v < 256; v++) all[v] = (uint8_t)v;
  int same = 1;
  for (int c = 0; c < d->c; c++) {
    normalise_avx512(all, 256, got, d->scale, d->mean[c], d->std[c]);
    same &= memcmp(got, d->lut[c], sizeof got) == 0;
  }
  d->simd = same;
#endif
}

void sw_dataset_normalise(const sw_dataset *d, int c, const uint8_t *src, int64_t n, float *dst) {
  int64_t k = 0;
#if SW_DATASET_AVX512
  if (d->simd) k = normalise_avx512(src, n, dst, d->scale, d->mean[c], d->std[c]);
#endif
  const float *l = d->lut[c];
  for (; k < n; k++) dst[k] = l[src[k]];
}

void sw_dataset_get(const sw_dataset *d, int64_t first, int64_t count, float *dst) {
  SW_ASSERT(first >= 0 && count >= 0 && first + count <= d->n);
  int64_t hw = (int64_t)d->h * d->w, per = hw * d->c;
  for (int64_t i = 0; i < count; i++)
    for (int c = 0; c < d->c; c++)
      sw_dataset_normalise(d, c, d->pixels + (first + i) * per + c * hw, hw, dst + i * per + c * hw);
}

void sw_dataset_free(sw_dataset *d) {
  if (!d) return;
  free(d->pixels);
  free(d->labels);
  memset(d, 0, sizeof *d);
}

int64_t sw_dataset_sample_size(const sw_dataset *d) { return (int64_t)d->c * d->h * d->w; }

void sw_dataset_label_counts(const sw_dataset *d, int64_t *counts) {
  for (int k = 0; k < d->num_classes; k++) counts[k] = 0;
  for (int64_t i = 0; i < d->n; i++) {
    SW_ASSERT(d->labels[i] >= 0 && d->labels[i] < d->num_classes);
    counts[d->labels[i]]++;
  }
}

/* True if dir looks like it holds IDX training data. */
static int has_idx(const char *dir) {
  const char *const b[] = {"train-images-idx3-ubyte", "train-images.idx3-ubyte", NULL};
  char p[1024];
  return find_file(dir, b, p, sizeof p);
}

/* sw_dataset_load and sw_dataset_load_test: the test split, and the training split unless want_train is 0
 * (generic IDX data still reads it for the test split's classes and normalisation, then frees it). */
static int load_splits(const char *name, const sw_dataset_opts *o, int want_train, sw_dataset *train, sw_dataset *test,
                       sw_err *e) {
  memset(train, 0, sizeof *train);
  memset(test, 0, sizeof *test);
  sw_dataset_opts z = {0};
  if (!o) o = &z;
  const char *known = "fashion-mnist, mnist, cifar10, synthetic, idx (with --data DIR), or a directory";
  if (!name || !*name) {
    sw_fail(e, SW_EINPUT, "no dataset given");
    return sw_hint(e, "known datasets: %s", known);
  }
  int rc;
  if (strcmp(name, "synthetic") == 0) {
    if (want_train && (rc = sw_dataset_synthetic("train", o, train, e))) return rc;
    rc = sw_dataset_synthetic("test", o, test, e);
  } else if (strcmp(name, "fashion-mnist") == 0 || strcmp(name, "fashion_mnist") == 0 ||
             strcmp(name, "fmnist") == 0) {
    const char *dir = o->dir ? o->dir : SW_FASHION_MNIST_DIR;
    if (want_train && (rc = sw_dataset_load_idx(dir, "train", "fashion-mnist", o, train, e))) return rc;
    rc = sw_dataset_load_idx(dir, "test", "fashion-mnist", o, test, e);
  } else if (strcmp(name, "mnist") == 0) {
    if (!o->dir) {
      sw_fail(e, SW_EINPUT, "dataset 'mnist' needs --data DIR");
      return sw_hint(e, "Debian ships no MNIST package; put the four MNIST files in a directory and " "pass --data DIR (%s)", idx_names_hint);
    }
    if (want_train && (rc = sw_dataset_load_idx(o->dir, "train", "mnist", o, train, e))) return rc;
    rc = sw_dataset_load_idx(o->dir, "test", "mnist", o, test, e);
  } else if (strcmp(name, "cifar10") == 0 || strcmp(name, "cifar-10") == 0) {
    if (!o->dir) {
      sw_fail(e, SW_EINPUT, "dataset 'cifar10' needs --data DIR");
      return sw_hint(e, "Debian ships no CIFAR-10 package; %s", cifar_names_hint);
    }
    if (want_train && (rc = sw_dataset_load_cifar10(o->dir, "train", o, train, e))) return rc;
    rc = sw_dataset_load_cifar10(o->dir, "test", o, test, e);
  } else if (strcmp(name, "idx") == 0 || is_dir(name)) {
    const char *dir = strcmp(name, "idx") == 0 ? o->dir : name;
    if (!dir) {
      sw_fail(e, SW_EINPUT, "dataset 'idx' needs --data DIR");
      return sw_hint(e, "%s", idx_names_hint);
    }
    char cdir[1024];
    if (dir == name && !has_idx(dir) && cifar_dir(dir, "data_batch_1.bin", cdir, sizeof cdir)) {
      if (want_train && (rc = sw_dataset_load_cifar10(dir, "train", o, train, e))) return rc;
      rc = sw_dataset_load_cifar10(dir, "test", o, test, e);
    } else {
      if ((rc = sw_dataset_load_idx(dir, "train", "idx", o, train, e))) return rc;
      /* The test split uses the training split's classes and normalisation. */
      sw_dataset_opts t = *o;
      t.num_classes = train->num_classes;
      t.norm_channels = 1;
      t.mean[0] = train->mean[0];
      t.std[0] = train->std[0];
      if (!want_train) sw_dataset_free(train); /* before the test split comes in */
      rc = sw_dataset_load_idx(dir, "test", "idx", &t, test, e);
    }
  } else {
    sw_fail(e, SW_EINPUT, "unknown dataset '%s' (and no directory of that name)", name);
    return sw_hint(e, "known datasets: %s", known);
  }
  if (rc == SW_OK && train->n > 0 && (train->c != test->c || train->h != test->h || train->w != test->w)) {
    sw_fail(e, SW_EINPUT, "%s: train images are %dx%dx%d but test images are %dx%dx%d", train->name, train->c, train->h, train->w, test->c, test->h, test->w);
    rc = sw_hint(e, "both splits must come from the same dataset");
  }
  if (rc || !want_train) sw_dataset_free(train);
  if (rc) sw_dataset_free(test);
  return rc;
}

int sw_dataset_load(const char *name, const sw_dataset_opts *o, sw_dataset *train, sw_dataset *test,
                    sw_err *e) {
  return load_splits(name, o, 1, train, test, e);
}

int sw_dataset_load_test(const char *name, const sw_dataset_opts *o, sw_dataset *test, sw_err *e) {
  sw_dataset train;
  return load_splits(name, o, 0, &train, test, e);
}

int sw_dataset_check_input(const sw_dataset *d, const int64_t *shape, int rank, const char *input_name,
                           sw_err *e) {
  const char *nm = input_name ? input_name : "input";
  if (rank != 3 && rank != 4) {
    sw_fail(e, SW_EINPUT, "model input '%s' has rank %d; expected 4 ([N,C,H,W])", nm, rank);
    return sw_hint(e, "image classifiers take input [N,C,H,W]");
  }
  const int64_t *s = shape + (rank - 3);
  int64_t have[3] = {d->c, d->h, d->w};
  for (int i = 0; i < 3; i++) {
    if (s[i] > 0 && s[i] != have[i]) {
      /* Spell the expected dims out plainly (free dims as '?'). */
      char want[96], dims[3][24];
      for (int k = 0; k < 3; k++) {
        if (s[k] > 0)
          snprintf(dims[k], sizeof dims[k], "%lld", (long long)s[k]);
        else
          snprintf(dims[k], sizeof dims[k], "?");
      }
      snprintf(want, sizeof want, "%s%s,%s,%s]", rank == 4 ? "[N," : "[", dims[0], dims[1], dims[2]);
      const char *suggest = "";
      if (s[0] == 3 && s[1] == 32 && s[2] == 32)
        suggest = " (e.g. cifar10)";
      else if (s[0] == 1 && s[1] == 28 && s[2] == 28)
        suggest = " (e.g. fashion-mnist or mnist)";
      sw_fail(e, SW_EINPUT, "dataset %s has samples of shape [%d,%d,%d] but model input '%s' is %s", d->name, d->c, d->h, d->w, nm, want);
      return sw_hint(e, "train on a dataset whose samples are %s,%s,%s%s, or export the model with input [N,%d,%d,%d]", dims[0], dims[1], dims[2], suggest, d->c, d->h, d->w);
    }
  }
  return SW_OK;
}

int sw_dataset_check_classes(const sw_dataset *d, int64_t num_outputs, sw_err *e) {
  if (num_outputs < d->num_classes) {
    sw_fail(e, SW_EINPUT, "model has %lld class outputs but dataset %s has %d classes", (long long)num_outputs, d->name, d->num_classes);
    return sw_hint(e, "the model's last layer must have at least %d outputs", d->num_classes);
  }
  if (num_outputs > d->num_classes)
    sw_warn("model has %lld class outputs but dataset %s uses only %d", (long long)num_outputs, d->name,
            d->num_classes);
  return SW_OK;
}
