/* Checkpoint container: round trip, truncation at every length, a flipped bit at every byte, foreign
 * files, atomic writes (no temp file left, the previous file kept when a write fails), key=value
 * lookup and SHA-256 test vectors. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/train/check.h"
#include "train/checkpoint.h"

static char dir[256];

static void path_in(char *buf, size_t cap, const char *name) { snprintf(buf, cap, "%s/%s", dir, name); }

static unsigned char *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long l = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *b = malloc((size_t)l + 1);
  *n = fread(b, 1, (size_t)l, f);
  fclose(f);
  return b;
}

static void spit(const char *path, const unsigned char *b, size_t n) {
  FILE *f = fopen(path, "wb");
  if (n) fwrite(b, 1, n, f);
  fclose(f);
}

/* Entries of the test folder whose name starts with a dot (the writer's temporary files). */
static int temp_files(void) {
  DIR *d = opendir(dir);
  int n = 0;
  for (struct dirent *de; (de = readdir(d));)
    if (de->d_name[0] == '.' && strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) n++;
  closedir(d);
  return n;
}

static void make(sw_ckpt *c) {
  sw_ckpt_init(c);
  float w[300];
  for (int i = 0; i < 300; i++) w[i] = (float)i * 0.25f - 7.0f;
  sw_ckpt_put_text(c, "meta", "step=42\nepoch=3\ncommand=swatc train x.onnx --lr 0.1\n");
  sw_ckpt_put(c, "tensor/conv1.weight", w, sizeof w);
  sw_ckpt_put(c, "empty", "", 0);
  sw_ckpt_put(c, "tensor/bias", w, 4 * sizeof(float));
}

static void test_round_trip(void) {
  char p[512];
  path_in(p, sizeof p, "a.ckpt");
  sw_ckpt c, r;
  make(&c);
  sw_ckpt_put(&c, "tensor/bias", "abcd", 4); /* replacing keeps one section of that name */
  CHECK(c.n == 4);
  sw_err e = {0};
  CHECK(sw_ckpt_write(&c, p, &e) == SW_OK);
  CHECK(temp_files() == 0);
  CHECK(sw_ckpt_read(p, &r, &e) == SW_OK);
  CHECK(r.n == c.n);
  for (int i = 0; i < c.n && i < r.n; i++) {
    CHECK_STR(r.s[i].name, c.s[i].name);
    CHECK(r.s[i].size == c.s[i].size && memcmp(r.s[i].data, c.s[i].data, c.s[i].size) == 0);
    CHECK(((uintptr_t)r.s[i].data & 63) == 0);
  }
  size_t n;
  const char *meta = sw_ckpt_get(&r, "meta", &n);
  char v[64];
  CHECK(meta && sw_kv_get(meta, n, "epoch", v, sizeof v) == 1);
  CHECK_STR(v, "3");
  CHECK(sw_kv_get(meta, n, "command", v, sizeof v) == 1);
  CHECK_STR(v, "swatc train x.onnx --lr 0.1");
  CHECK(sw_kv_get(meta, n, "step", v, 2) == 1); /* cut to the buffer */
  CHECK_STR(v, "4");
  CHECK(sw_kv_get(meta, n, "ep", v, sizeof v) == 0);
  CHECK(sw_kv_get(meta, n, "missing", v, sizeof v) == 0);
  CHECK(sw_ckpt_get(&r, "nope", &n) == NULL && n == 0);
  CHECK(sw_ckpt_get(&r, "empty", &n) != NULL && n == 0);
  sw_ckpt_free(&r);
  /* an empty checkpoint is valid too */
  sw_ckpt z;
  sw_ckpt_init(&z);
  CHECK(sw_ckpt_write(&z, p, &e) == SW_OK);
  CHECK(sw_ckpt_read(p, &r, &e) == SW_OK && r.n == 0);
  sw_ckpt_free(&r);
  sw_ckpt_free(&c);
}

static void test_truncation_and_flips(void) {
  char p[512], q[512];
  path_in(p, sizeof p, "b.ckpt");
  path_in(q, sizeof q, "cut.ckpt");
  sw_ckpt c, r;
  make(&c);
  sw_err e = {0};
  CHECK(sw_ckpt_write(&c, p, &e) == SW_OK);
  sw_ckpt_free(&c);
  size_t n;
  unsigned char *b = slurp(p, &n);
  CHECK(b && n > 100);
  int bad_rc = 0, bad_msg = 0;
  for (size_t len = 0; len < n; len++) { /* every proper prefix */
    spit(q, b, len);
    sw_err e2 = {0};
    int rc = sw_ckpt_read(q, &r, &e2);
    sw_ckpt_free(&r);
    bad_rc += rc != SW_EINPUT;
    const char *want = len < 8 ? "not a swatc checkpoint" : "truncated";
    if (!strstr(e2.msg, want) || !strstr(e2.msg, "cut.ckpt") || !e2.hint[0]) {
      if (!bad_msg) fprintf(stderr, "length %zu: %s\n", len, e2.msg);
      bad_msg++;
    }
  }
  CHECK(bad_rc == 0);
  CHECK(bad_msg == 0);
  int undetected = 0, section_named = 0;
  for (size_t i = 0; i < n; i++) { /* one flipped bit at every byte (a different bit each time) */
    b[i] ^= (unsigned char)(1u << (i % 8));
    spit(q, b, n);
    sw_err e2 = {0};
    int rc = sw_ckpt_read(q, &r, &e2);
    sw_ckpt_free(&r);
    if (rc != SW_EINPUT || !e2.msg[0]) {
      if (!undetected) fprintf(stderr, "flip at byte %zu not detected (rc %d)\n", i, rc);
      undetected++;
    }
    section_named += strstr(e2.msg, "checksum mismatch in section 'tensor/conv1.weight'") != NULL;
    b[i] ^= (unsigned char)(1u << (i % 8));
  }
  CHECK(undetected == 0);
  CHECK(section_named >= 1000); /* flips inside the 1200-byte weight payload name the section */
  /* the unmodified bytes still read */
  spit(q, b, n);
  CHECK(sw_ckpt_read(q, &r, &e) == SW_OK && r.n == 4);
  sw_ckpt_free(&r);
  /* trailing garbage after a valid checkpoint */
  unsigned char *g = malloc(n + 5);
  memcpy(g, b, n);
  memcpy(g + n, "junk!", 5);
  spit(q, g, n + 5);
  sw_err e3 = {0};
  CHECK(sw_ckpt_read(q, &r, &e3) == SW_EINPUT);
  sw_ckpt_free(&r);
  free(g);
  free(b);
}

static void test_foreign_and_missing(void) {
  char p[512];
  path_in(p, sizeof p, "model.onnx");
  spit(p, (const unsigned char *)"\x08\x07\x12\x07pytorch and more bytes than a header", 40);
  sw_ckpt r;
  sw_err e = {0};
  CHECK(sw_ckpt_read(p, &r, &e) == SW_EINPUT);
  CHECK_CONTAINS(e.msg, "is not a swatc checkpoint");
  sw_ckpt_free(&r);
  sw_err e2 = {0};
  path_in(p, sizeof p, "none.ckpt");
  CHECK(sw_ckpt_read(p, &r, &e2) == SW_EINPUT);
  CHECK_CONTAINS(e2.msg, "cannot open");
  sw_ckpt_free(&r);
  sw_err e3 = {0};
  CHECK(sw_ckpt_read(dir, &r, &e3) == SW_EINPUT); /* a folder */
  sw_ckpt_free(&r);
  /* a newer format version */
  sw_ckpt c;
  sw_ckpt_init(&c);
  path_in(p, sizeof p, "v.ckpt");
  CHECK(sw_ckpt_write(&c, p, &e) == SW_OK);
  size_t n;
  unsigned char *b = slurp(p, &n);
  b[8] = 9;
  spit(p, b, n);
  sw_err e4 = {0};
  CHECK(sw_ckpt_read(p, &r, &e4) == SW_EINPUT);
  CHECK_CONTAINS(e4.msg, "format 9");
  sw_ckpt_free(&r);
  free(b);
}

static void test_failed_write_keeps_previous(void) {
  char p[512], bad[512];
  path_in(p, sizeof p, "keep.ckpt");
  sw_ckpt c;
  make(&c);
  sw_err e = {0};
  CHECK(sw_ckpt_write(&c, p, &e) == SW_OK);
  size_t n0, n1;
  unsigned char *before = slurp(p, &n0);
  /* the target is a folder: rename fails after the data went to the temp file */
  path_in(bad, sizeof bad, "adir");
  CHECK(mkdir(bad, 0755) == 0);
  char inner[600];
  snprintf(inner, sizeof inner, "%s/x", bad);
  spit(inner, (const unsigned char *)"x", 1);
  sw_err e2 = {0};
  CHECK(sw_ckpt_write(&c, bad, &e2) == SW_EIO);
  CHECK_CONTAINS(e2.msg, "cannot write the checkpoint");
  CHECK(temp_files() == 0);
  sw_err e3 = {0};
  CHECK(sw_ckpt_write(&c, "/nonexistent-folder/x.ckpt", &e3) == SW_EIO);
  unsigned char *after = slurp(p, &n1);
  CHECK(n0 == n1 && memcmp(before, after, n0) == 0);
  free(before);
  free(after);
  sw_ckpt_free(&c);
}

static void test_sha256(void) {
  char hex[65];
  sw_sha256_hex("", 0, hex);
  CHECK_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  sw_sha256_hex("abc", 3, hex);
  CHECK_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"; /* 56 bytes: padding spills */
  sw_sha256_hex(m, strlen(m), hex);
  CHECK_STR(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  char *a = malloc(1000000);
  memset(a, 'a', 1000000);
  sw_sha256_hex(a, 1000000, hex);
  CHECK_STR(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  free(a);
}

int main(void) {
  snprintf(dir, sizeof dir, "/tmp/swatc-ckpt-test-XXXXXX");
  if (!mkdtemp(dir)) return 1;
  test_round_trip();
  test_truncation_and_flips();
  test_foreign_and_missing();
  test_failed_write_keeps_previous();
  test_sha256();
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
  return check_report("checkpoint");
}
