/* The checkpoint container (see checkpoint.h for the layout). */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "train/checkpoint.h"

#define HEADER_BYTES 16  /* magic 8 + version 4 + reserved 4 */
#define TRAILER_BYTES 28 /* magic 8 + count 4 + reserved 4 + length 8 + crc 4 */

void sw_ckpt_init(sw_ckpt *c) { memset(c, 0, sizeof *c); }

void sw_ckpt_free(sw_ckpt *c) {
  for (int i = 0; i < c->n; i++) {
    free(c->s[i].name);
    free(c->s[i].data);
  }
  free(c->s);
  memset(c, 0, sizeof *c);
}

/* A 64-byte aligned copy of data[0..n) with a NUL after it. */
static void *payload_copy(const void *data, size_t n) {
  size_t cap = (n + 1 + 63) / 64 * 64;
  char *p = aligned_alloc(64, cap);
  if (!p) {
    fprintf(stderr, "swatc: out of memory (%zu bytes for a checkpoint section)\n", cap);
    exit(SW_ENOMEM);
  }
  if (n) memcpy(p, data, n);
  p[n] = 0;
  return p;
}

void sw_ckpt_put(sw_ckpt *c, const char *name, const void *data, size_t n) {
  for (int i = 0; i < c->n; i++)
    if (strcmp(c->s[i].name, name) == 0) {
      free(c->s[i].data);
      c->s[i].data = payload_copy(data, n);
      c->s[i].size = n;
      return;
    }
  if (c->n == c->cap) {
    c->cap = c->cap ? 2 * c->cap : 16;
    c->s = sw_xrealloc(c->s, sizeof *c->s * (size_t)c->cap);
  }
  sw_ckpt_section *s = &c->s[c->n++];
  s->name = sw_xstrdup(name);
  s->data = payload_copy(data, n);
  s->size = n;
}

void sw_ckpt_put_text(sw_ckpt *c, const char *name, const char *text) { sw_ckpt_put(c, name, text, strlen(text)); }

const void *sw_ckpt_get(const sw_ckpt *c, const char *name, size_t *n) {
  for (int i = 0; i < c->n; i++)
    if (strcmp(c->s[i].name, name) == 0) {
      if (n) *n = c->s[i].size;
      return c->s[i].data;
    }
  if (n) *n = 0;
  return NULL;
}

/* ---- little-endian helpers ---- */

static void put_u32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
  return v;
}
static uint64_t get_u64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
  return v;
}

/* zlib's crc32 over any length (its length argument is a uInt). */
static uint32_t crc_update(uint32_t crc, const void *data, size_t n) {
  const unsigned char *p = data;
  while (n) {
    uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
    crc = (uint32_t)crc32(crc, p, chunk);
    p += chunk;
    n -= chunk;
  }
  return crc;
}

/* ---- writing ---- */

/* fwrite that also folds the bytes into the running file CRC. */
static int put_bytes(FILE *f, uint32_t *crc, const void *p, size_t n) {
  *crc = crc_update(*crc, p, n);
  return n == 0 || fwrite(p, 1, n, f) == n;
}

int sw_ckpt_write(const sw_ckpt *c, const char *path, sw_err *e) {
  size_t pl = strlen(path);
  char *dir_buf = sw_xstrdup(path), *base_buf = sw_xstrdup(path);
  const char *dir = dirname(dir_buf), *base = basename(base_buf);
  char *tmp = sw_xmalloc(pl + strlen(base) + 32);
  snprintf(tmp, pl + strlen(base) + 32, "%s/.%s.XXXXXX", dir, base);
  int rc = SW_OK, fd = mkstemp(tmp);
  FILE *f = NULL;
  if (fd < 0) {
    rc = sw_fail(e, SW_EIO, "cannot write the checkpoint '%s': cannot create a temporary file in '%s' (%s)", path, dir,
                 strerror(errno));
    sw_hint(e, "check that the folder exists and is writable");
    goto out;
  }
  mode_t um = umask(0);
  umask(um);
  fchmod(fd, 0666 & ~um); /* mkstemp makes 0600; a checkpoint gets the usual permissions */
  f = fdopen(fd, "wb");
  if (!f) {
    close(fd);
    unlink(tmp);
    rc = sw_fail(e, SW_EIO, "cannot write the checkpoint '%s' (%s)", path, strerror(errno));
    goto out;
  }
  uint32_t crc = (uint32_t)crc32(0, Z_NULL, 0);
  uint64_t total = 0;
  unsigned char hdr[HEADER_BYTES] = {0};
  memcpy(hdr, SW_CKPT_MAGIC, 8);
  put_u32(hdr + 8, SW_CKPT_VERSION);
  int ok = put_bytes(f, &crc, hdr, sizeof hdr);
  total += sizeof hdr;
  for (int i = 0; ok && i < c->n; i++) {
    const sw_ckpt_section *s = &c->s[i];
    unsigned char l4[4], sh[12];
    uint32_t nl = (uint32_t)strlen(s->name);
    put_u32(l4, nl);
    put_u64(sh, (uint64_t)s->size);
    put_u32(sh + 8, crc_update((uint32_t)crc32(0, Z_NULL, 0), s->data, s->size));
    ok = put_bytes(f, &crc, l4, 4) && put_bytes(f, &crc, s->name, nl) && put_bytes(f, &crc, sh, 12) &&
         put_bytes(f, &crc, s->data, s->size);
    total += 4 + nl + 12 + (uint64_t)s->size;
  }
  unsigned char tr[TRAILER_BYTES] = {0};
  memcpy(tr, SW_CKPT_END_MAGIC, 8);
  put_u32(tr + 8, (uint32_t)c->n);
  put_u64(tr + 16, total + TRAILER_BYTES);
  crc = crc_update(crc, tr, 24);
  put_u32(tr + 24, crc);
  ok = ok && fwrite(tr, 1, sizeof tr, f) == sizeof tr;
  ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
  int err = errno;
  if (fclose(f) != 0 && ok) {
    ok = 0;
    err = errno;
  }
  if (ok && rename(tmp, path) != 0) {
    ok = 0;
    err = errno;
  }
  if (!ok) {
    unlink(tmp);
    rc = sw_fail(e, SW_EIO, "cannot write the checkpoint '%s' (%s); the previous checkpoint there, if any, is unchanged", path,
                 strerror(err));
    sw_hint(e, "check the free space and permissions of the folder");
    goto out;
  }
  int dfd = open(dir, O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) { /* make the rename itself durable */
    fsync(dfd);
    close(dfd);
  }
out:
  free(dir_buf);
  free(base_buf);
  free(tmp);
  return rc;
}

/* ---- reading ---- */

static int bad(sw_err *e, const char *path, const char *what, const char *hint) {
  sw_fail(e, SW_EINPUT, "'%s' %s", path, what);
  return sw_hint(e, "%s", hint);
}

int sw_ckpt_read(const char *path, sw_ckpt *c, sw_err *e) {
  sw_ckpt_init(c);
  static const char *const h_trunc = "the file was cut short (copied incompletely?); use an earlier copy, or train again without --resume";
  static const char *const h_corrupt = "the file is damaged; use an earlier copy, or train again without --resume";
  struct stat pre;
  if (stat(path, &pre) == 0 && !S_ISREG(pre.st_mode)) /* never open a FIFO or device: it can block */
    return bad(e, path, "is not a regular file", "pass the checkpoint file written by swatc train --checkpoint");
  FILE *f = fopen(path, "rb");
  if (!f) {
    sw_fail(e, SW_EINPUT, "cannot open the checkpoint '%s' (%s)", path, strerror(errno));
    return sw_hint(e, "check the path; checkpoints are written by swatc train --checkpoint FILE");
  }
  struct stat sb;
  if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
    fclose(f);
    return bad(e, path, "is not a regular file", "pass the checkpoint file written by swatc train --checkpoint");
  }
  size_t n = (size_t)sb.st_size;
  unsigned char *buf = malloc(n ? n : 1);
  if (!buf) {
    fclose(f);
    return sw_fail(e, SW_ENOMEM, "out of memory reading the checkpoint '%s' (%zu bytes)", path, n);
  }
  size_t got = n ? fread(buf, 1, n, f) : 0;
  fclose(f);
  int rc = SW_OK;
  char msg[256];
  if (got != n) {
    rc = sw_fail(e, SW_EINPUT, "cannot read the checkpoint '%s'", path);
    goto out;
  }
  if (n < 8 || memcmp(buf, SW_CKPT_MAGIC, 8) != 0) {
    rc = bad(e, path, "is not a swatc checkpoint (it does not start with " SW_CKPT_MAGIC ")",
             "pass the file written by swatc train --checkpoint FILE (a model goes first, without --resume)");
    goto out;
  }
  if (n < HEADER_BYTES + TRAILER_BYTES) {
    snprintf(msg, sizeof msg, "is truncated (%zu bytes, shorter than an empty checkpoint)", n);
    rc = bad(e, path, msg, h_trunc);
    goto out;
  }
  uint32_t version = get_u32(buf + 8);
  if (version != SW_CKPT_VERSION) {
    snprintf(msg, sizeof msg, "is a checkpoint of format %u; this swatc reads format %u", version, SW_CKPT_VERSION);
    rc = bad(e, path, msg, version > SW_CKPT_VERSION ? "use the newer swatc that wrote it" : "train again with this swatc");
    goto out;
  }
  const unsigned char *tr = buf + n - TRAILER_BYTES;
  if (memcmp(tr, SW_CKPT_END_MAGIC, 8) != 0) {
    snprintf(msg, sizeof msg, "is truncated (%zu bytes; its end marker is missing)", n);
    rc = bad(e, path, msg, h_trunc);
    goto out;
  }
  uint64_t want = get_u64(tr + 16);
  if (want != (uint64_t)n) {
    snprintf(msg, sizeof msg, "is %s (%zu bytes, but it records %llu)", want > n ? "truncated" : "corrupt", n, (unsigned long long)want);
    rc = bad(e, path, msg, want > n ? h_trunc : h_corrupt);
    goto out;
  }
  uint32_t count = get_u32(tr + 8);
  size_t pos = HEADER_BYTES, end = n - TRAILER_BYTES;
  while (pos < end) {
    if (end - pos < 4) goto overrun;
    uint32_t nl = get_u32(buf + pos);
    pos += 4;
    if (nl == 0 || nl > SW_CKPT_MAX_NAME || end - pos < (size_t)nl + 12) goto overrun;
    char *name = sw_xmalloc((size_t)nl + 1);
    memcpy(name, buf + pos, nl);
    name[nl] = 0;
    pos += nl;
    uint64_t sz = get_u64(buf + pos);
    uint32_t scrc = get_u32(buf + pos + 8);
    pos += 12;
    if (sz > (uint64_t)(end - pos) || memchr(name, 0, nl)) {
      free(name);
      goto overrun;
    }
    if (crc_update((uint32_t)crc32(0, Z_NULL, 0), buf + pos, (size_t)sz) != scrc) {
      snprintf(msg, sizeof msg, "is corrupt: checksum mismatch in section '%.200s'", name);
      free(name);
      rc = bad(e, path, msg, h_corrupt);
      goto out;
    }
    if (c->n == c->cap) {
      c->cap = c->cap ? 2 * c->cap : 16;
      c->s = sw_xrealloc(c->s, sizeof *c->s * (size_t)c->cap);
    }
    c->s[c->n].name = name;
    c->s[c->n].data = payload_copy(buf + pos, (size_t)sz);
    c->s[c->n].size = (size_t)sz;
    c->n++;
    pos += (size_t)sz;
  }
  if ((uint32_t)c->n != count) {
    snprintf(msg, sizeof msg, "is corrupt: it holds %d sections but records %u", c->n, count);
    rc = bad(e, path, msg, h_corrupt);
    goto out;
  }
  if (crc_update((uint32_t)crc32(0, Z_NULL, 0), buf, (size_t)(tr + 24 - buf)) != get_u32(tr + 24)) {
    rc = bad(e, path, "is corrupt: checksum mismatch in its header or section table", h_corrupt);
    goto out;
  }
  goto out;
overrun:
  snprintf(msg, sizeof msg, "is corrupt: a section at byte %zu runs past the end of the data", pos);
  rc = bad(e, path, msg, h_corrupt);
out:
  free(buf);
  if (rc) {
    sw_ckpt_free(c);
    sw_ckpt_init(c);
  }
  return rc;
}

int sw_kv_get(const char *text, size_t n, const char *key, char *buf, size_t cap) {
  size_t kl = strlen(key);
  for (size_t p = 0; p < n;) {
    const char *line = text + p, *nl = memchr(line, '\n', n - p);
    size_t ll = nl ? (size_t)(nl - line) : n - p;
    if (ll > kl && memcmp(line, key, kl) == 0 && line[kl] == '=') {
      size_t vl = ll - kl - 1;
      if (cap) {
        if (vl > cap - 1) vl = cap - 1;
        memcpy(buf, line + kl + 1, vl);
        buf[vl] = 0;
      }
      return 1;
    }
    p += ll + 1;
  }
  return 0;
}

/* ---- SHA-256 (FIPS 180-4) ---- */

static const uint32_t sha_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01,
    0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc,
    0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
    0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08,
    0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, r) (((x) >> (r)) | ((x) << (32 - (r))))

static void sha_block(uint32_t h[8], const unsigned char *p) {
  uint32_t w[64];
  for (int i = 0; i < 16; i++)
    w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
  for (int i = 16; i < 64; i++) {
    uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
  for (int i = 0; i < 64; i++) {
    uint32_t t1 = hh + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + sha_k[i] + w[i];
    uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    hh = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  h[0] += a;
  h[1] += b;
  h[2] += c;
  h[3] += d;
  h[4] += e;
  h[5] += f;
  h[6] += g;
  h[7] += hh;
}

void sw_sha256_hex(const void *data, size_t n, char hex[65]) {
  uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  const unsigned char *p = data;
  size_t full = n / 64 * 64;
  for (size_t i = 0; i < full; i += 64) sha_block(h, p + i);
  unsigned char last[128] = {0};
  size_t rem = n - full;
  if (rem) memcpy(last, p + full, rem);
  last[rem] = 0x80;
  size_t tail = rem + 9 > 64 ? 128 : 64;
  uint64_t bits = (uint64_t)n * 8;
  for (int i = 0; i < 8; i++) last[tail - 1 - i] = (unsigned char)(bits >> (8 * i));
  sha_block(h, last);
  if (tail == 128) sha_block(h, last + 64);
  for (int i = 0; i < 8; i++) snprintf(hex + 8 * i, 9, "%08x", h[i]);
}
