/* Loader: permutations, batching and the last partial batch, augmentation geometry, cursor
 * save/restore, and independence from the OpenMP thread count. */
#include "train/loader.h"

#include <omp.h>
#include <stdlib.h>

#include "tests/train/check.h"
#include "train/rng.h"

/* A dataset whose samples are easy to decode from a batch. With one channel, pixel k of sample i is
 * i + k (n + c*h*w <= 256). With more, channel 0 holds i % 256 and channel 1 i / 256 everywhere,
 * and the others a fixed scramble of the position plus i, so that every crop and flip differs. */
static void make_indexed(sw_dataset *d, int64_t n, int c, int h, int w) {
  memset(d, 0, sizeof *d);
  snprintf(d->name, sizeof d->name, "indexed");
  snprintf(d->split, sizeof d->split, "train");
  d->n = n;
  d->c = c;
  d->h = h;
  d->w = w;
  d->num_classes = 10;
  d->scale = 1.0f / 255.0f;
  for (int ch = 0; ch < c; ch++) {
    d->mean[ch] = 0.1f * (float)(ch + 1);
    d->std[ch] = 0.5f;
  }
  sw_dataset_set_lut(d);
  int64_t hw = (int64_t)h * w, per = c * hw;
  d->pixels = malloc((size_t)(n * per));
  d->labels = malloc((size_t)n * sizeof(int64_t));
  for (int64_t i = 0; i < n; i++) {
    d->labels[i] = i % 10;
    for (int64_t k = 0; k < per; k++) {
      int64_t ch = k / hw, v;
      if (c == 1)
        v = i + k;
      else if (ch < 2)
        v = ch == 0 ? i % 256 : i / 256;
      else
        v = (int64_t)(sw_rng_mix((uint64_t)k) & 0xff) + i;
      d->pixels[i * per + k] = (uint8_t)(v & 0xff);
    }
  }
}

/* The pixel whose normalised value in channel c of d is x; -1 if none. */
static int64_t byte_of(const sw_dataset *d, int c, float x) {
  for (int v = 0; v < 256; v++)
    if (d->lut[c][v] == x) return v;
  return -1;
}

/* The index of the make_indexed sample (c >= 2) that image img was made from. */
static int64_t sample_of(const sw_dataset *d, const float *img) {
  int64_t centre = (int64_t)(d->h / 2) * d->w + d->w / 2, hw = (int64_t)d->h * d->w;
  int64_t lo = byte_of(d, 0, img[centre]), hi = byte_of(d, 1, img[hw + centre]);
  return lo < 0 || hi < 0 ? -1 : hi * 256 + lo;
}

static int is_permutation(const int64_t *p, int64_t n) {
  char *seen = calloc((size_t)n, 1);
  int ok = 1;
  for (int64_t i = 0; i < n; i++) {
    if (p[i] < 0 || p[i] >= n || seen[p[i]])
      ok = 0;
    else
      seen[p[i]] = 1;
  }
  free(seen);
  return ok;
}

static void test_permutation(void) {
  enum { N = 1000 };
  int64_t a[N], b[N], c[N], d[N];
  sw_loader_permutation(5, 0, N, a);
  sw_loader_permutation(5, 0, N, b);
  sw_loader_permutation(6, 0, N, c);
  sw_loader_permutation(5, 1, N, d);
  CHECK(is_permutation(a, N) && is_permutation(c, N) && is_permutation(d, N));
  CHECK(memcmp(a, b, sizeof a) == 0);
  CHECK(memcmp(a, c, sizeof a) != 0);
  CHECK(memcmp(a, d, sizeof a) != 0);
  int fixed = 0;
  for (int i = 0; i < N; i++) fixed += a[i] == i;
  CHECK(fixed < 10); /* ~1 expected for a uniform shuffle */
  /* Every position receives every element about equally often (uniformity of Fisher-Yates). */
  enum { M = 5, T = 20000 };
  int count[M][M] = {{0}};
  int64_t p[M];
  for (int t = 0; t < T; t++) {
    sw_loader_permutation(77, t, M, p);
    for (int i = 0; i < M; i++) count[i][p[i]]++;
  }
  int ok = 1;
  for (int i = 0; i < M; i++)
    for (int j = 0; j < M; j++) ok &= abs(count[i][j] - T / M) < 300;
  CHECK(ok);
  int64_t one[1];
  sw_loader_permutation(1, 0, 1, one);
  CHECK(one[0] == 0);
}

static void test_batching(void) {
  sw_dataset d;
  make_indexed(&d, 103, 1, 2, 2);
  sw_err e = {0};
  sw_loader l;
  float img[10 * 4];
  int64_t lab[10];
  const float *lut = d.lut[0];

  /* In order, with the last partial batch. */
  sw_loader_opts o = {.batch = 10};
  CHECK(sw_loader_init(&l, &d, &o, &e) == SW_OK);
  CHECK(sw_loader_batches_per_epoch(&l) == 11);
  int64_t seen = 0, nb = 0, b;
  while ((b = sw_loader_next(&l, img, lab)) > 0) {
    CHECK(b == (nb < 10 ? 10 : 3));
    for (int64_t i = 0; i < b; i++) {
      CHECK(img[i * 4] == lut[seen + i] && img[i * 4 + 3] == lut[seen + i + 3]);
      CHECK(lab[i] == (seen + i) % 10);
    }
    seen += b;
    nb++;
  }
  CHECK(seen == 103 && nb == 11);
  CHECK(sw_loader_next(&l, img, lab) == 0); /* stays exhausted until the next epoch */
  CHECK(l.cur.epoch == 0 && l.cur.pos == 103);
  sw_loader_next_epoch(&l);
  CHECK(l.cur.epoch == 1 && l.cur.pos == 0);
  CHECK(sw_loader_next(&l, img, lab) == 10 && img[0] == lut[0]);
  sw_loader_free(&l);

  /* Shuffled with drop_last: 10 full batches, all distinct samples, a different order per epoch. */
  o = (sw_loader_opts){.batch = 10, .shuffle = 1, .drop_last = 1, .seed = 3};
  CHECK(sw_loader_init(&l, &d, &o, &e) == SW_OK);
  CHECK(sw_loader_batches_per_epoch(&l) == 10);
  int64_t order[2][100];
  for (int ep = 0; ep < 2; ep++) {
    char *hit = calloc(103, 1);
    int64_t k = 0;
    while ((b = sw_loader_next(&l, img, lab)) > 0) {
      CHECK(b == 10);
      for (int64_t i = 0; i < b; i++) {
        int64_t s = byte_of(&d, 0, img[i * 4]);
        CHECK(s >= 0 && s < 103 && !hit[s] && lab[i] == s % 10);
        hit[s] = 1;
        order[ep][k++] = s;
      }
    }
    CHECK(k == 100);
    /* The order is the epoch's permutation. */
    int64_t perm[103];
    sw_loader_permutation(3, ep, 103, perm);
    CHECK(memcmp(perm, order[ep], sizeof order[ep]) == 0);
    free(hit);
    sw_loader_next_epoch(&l);
  }
  CHECK(memcmp(order[0], order[1], sizeof order[0]) != 0);
  sw_loader_free(&l);

  /* Bad options. */
  o = (sw_loader_opts){.batch = 0};
  CHECK(sw_loader_init(&l, &d, &o, &e) == SW_EINPUT);
  CHECK_CONTAINS(e.msg, "batch size 0");
  sw_err_clear(&e);
  o = (sw_loader_opts){.batch = 200, .drop_last = 1};
  CHECK(sw_loader_init(&l, &d, &o, &e) == SW_EINPUT);
  CHECK_CONTAINS(e.msg, "exceeds the 103 samples");
  sw_err_clear(&e);
  o = (sw_loader_opts){.batch = 200};
  CHECK(sw_loader_init(&l, &d, &o, &e) == SW_OK && sw_loader_batches_per_epoch(&l) == 1);
  sw_loader_free(&l);
  o = (sw_loader_opts){.batch = 4, .augment = SW_AUG_CROP, .pad = 3};
  CHECK(sw_loader_init(&l, &d, &o, &e) == SW_EINPUT); /* padding larger than the 2x2 image */
  CHECK_CONTAINS(e.msg, "padding 3");
  sw_dataset_free(&d);
}

static void test_augment_geometry(void) {
  /* 2 channels of 3x4, values c*100 + y*10 + x. */
  enum { C = 2, H = 3, W = 4 };
  uint8_t px[C * H * W];
  float src[C * H * W], dst[C * H * W], fill[C] = {-7.0f, -8.0f}, lut[C][256];
  for (int c = 0; c < C; c++)
    for (int v = 0; v < 256; v++) lut[c][v] = (float)v + 0.25f * (float)c; /* channel-dependent */
  for (int c = 0; c < C; c++)
    for (int y = 0; y < H; y++)
      for (int x = 0; x < W; x++) {
        px[(c * H + y) * W + x] = (uint8_t)(c * 100 + y * 10 + x);
        src[(c * H + y) * W + x] = lut[c][c * 100 + y * 10 + x];
      }
  /* Centre crop, no flip: identity (after the lookup). */
  sw_loader_augment_image(px, (const float(*)[256])lut, dst, C, H, W, 2, 2, 2, 0, fill);
  CHECK(memcmp(src, dst, sizeof src) == 0);
  /* Flip only: x mirrored. */
  sw_loader_augment_image(px, (const float(*)[256])lut, dst, C, H, W, 2, 2, 2, 1, fill);
  int ok = 1;
  for (int c = 0; c < C; c++)
    for (int y = 0; y < H; y++)
      for (int x = 0; x < W; x++) ok &= dst[(c * H + y) * W + x] == src[(c * H + y) * W + (W - 1 - x)];
  CHECK(ok);
  /* Offsets (dy, dx) = (0, 3) with pad 2: out(y, x) = src(y - 2, x + 1), fill outside. */
  sw_loader_augment_image(px, (const float(*)[256])lut, dst, C, H, W, 2, 0, 3, 0, fill);
  ok = 1;
  for (int c = 0; c < C; c++)
    for (int y = 0; y < H; y++)
      for (int x = 0; x < W; x++) {
        int sy = y - 2, sx = x + 1;
        float want = sy >= 0 && sy < H && sx >= 0 && sx < W ? src[(c * H + sy) * W + sx] : fill[c];
        ok &= dst[(c * H + y) * W + x] == want;
      }
  CHECK(ok);
  CHECK(dst[0] == -7.0f && dst[H * W] == -8.0f && dst[2 * W] == 1.0f && dst[2 * W + 3] == -7.0f &&
        dst[H * W + 2 * W] == 101.25f);
  /* Crop then flip (torchvision order): out(y, x) = padded(y + dy, (W-1-x) + dx). */
  sw_loader_augment_image(px, (const float(*)[256])lut, dst, C, H, W, 1, 2, 0, 1, fill);
  ok = 1;
  for (int c = 0; c < C; c++)
    for (int y = 0; y < H; y++)
      for (int x = 0; x < W; x++) {
        int sy = y + 1, sx = W - 1 - x - 1;
        float want = sy >= 0 && sy < H && sx >= 0 && sx < W ? src[(c * H + sy) * W + sx] : fill[c];
        ok &= dst[(c * H + y) * W + x] == want;
      }
  CHECK(ok);
}

/* Finds the (dy, dx, flip) that maps src to dst; returns 0 if none does. */
static int find_aug(const uint8_t *src, const float (*lut)[256], const float *dst, int c, int h, int w, int pad,
                    const float *fill, int *dy, int *dx, int *flip) {
  float *tmp = malloc((size_t)c * h * w * sizeof(float));
  int found = 0;
  for (int f = 0; f < 2 && !found; f++)
    for (int y = 0; y <= 2 * pad && !found; y++)
      for (int x = 0; x <= 2 * pad && !found; x++) {
        sw_loader_augment_image(src, lut, tmp, c, h, w, pad, y, x, f, fill);
        if (memcmp(tmp, dst, (size_t)c * h * w * sizeof(float)) == 0) {
          *dy = y;
          *dx = x;
          *flip = f;
          found = 1;
        }
      }
  free(tmp);
  return found;
}

static void test_augment_loader(void) {
  /* CIFAR-shaped data; every output must be one of the 2 * 9 * 9 crops/flips of its source, with
   * the padding equal to a black pixel after normalisation, and all of them must occur. */
  sw_dataset d;
  make_indexed(&d, 600, 3, 32, 32);
  sw_err e = {0};
  sw_loader l;
  sw_loader_opts o = {.batch = 100, .shuffle = 1, .augment = SW_AUG_CROP | SW_AUG_FLIP, .seed = 9};
  CHECK(sw_loader_init(&l, &d, &o, &e) == SW_OK && l.o.pad == 4);
  float fill[3];
  for (int c = 0; c < 3; c++) fill[c] = (0.0f - d.mean[c]) / d.std[c];
  float *img = malloc(100 * 3072 * sizeof(float));
  int64_t lab[100];
  int hist_flip[2] = {0}, hist_dx[9] = {0}, hist_dy[9] = {0}, all_found = 1;
  int64_t b;
  while ((b = sw_loader_next(&l, img, lab)) > 0) {
    for (int64_t i = 0; i < b; i++) {
      /* Recover the source from the centre pixels of channels 0 and 1, which are never padding. */
      int64_t s = sample_of(&d, img + i * 3072);
      CHECK(s >= 0 && s < 600 && lab[i] == s % 10);
      int dy, dx, flip;
      if (!find_aug(d.pixels + s * 3072, d.lut, img + i * 3072, 3, 32, 32, 4, fill, &dy, &dx, &flip)) {
        all_found = 0;
        continue;
      }
      hist_flip[flip]++;
      hist_dx[dx]++;
      hist_dy[dy]++;
    }
  }
  CHECK(all_found);
  CHECK(hist_flip[0] > 240 && hist_flip[1] > 240);
  int spread = 1;
  for (int k = 0; k < 9; k++) spread &= hist_dx[k] > 30 && hist_dy[k] > 30;
  CHECK(spread);

  /* Each sample draws its own crop/flip: they vary along the epoch and between epochs (a loader
   * reusing one draw per batch slot, or per sample index across epochs, fails here). */
  sw_loader_free(&l);
  o = (sw_loader_opts){.batch = 100, .augment = SW_AUG_CROP | SW_AUG_FLIP, .seed = 4};
  CHECK(sw_loader_init(&l, &d, &o, &e) == SW_OK);
  int code[2][600], n_slot_same = 0, n_epoch_same = 0;
  for (int ep = 0; ep < 2; ep++) {
    int64_t at = 0;
    while ((b = sw_loader_next(&l, img, lab)) > 0) {
      for (int64_t i = 0; i < b; i++, at++) {
        int dy = 0, dx = 0, flip = 0;
        CHECK(find_aug(d.pixels + at * 3072, d.lut, img + i * 3072, 3, 32, 32, 4, fill, &dy, &dx, &flip));
        code[ep][at] = (dy * 9 + dx) * 2 + flip;
      }
    }
    sw_loader_next_epoch(&l);
  }
  for (int k = 0; k < 500; k++) n_slot_same += code[0][k] == code[0][k + 100];
  for (int k = 0; k < 600; k++) n_epoch_same += code[0][k] == code[1][k];
  CHECK(n_slot_same < 30 && n_epoch_same < 30); /* ~1/162 of them by chance */

  /* Flip only: outputs are the source or its mirror image. */
  sw_loader_free(&l);
  o = (sw_loader_opts){.batch = 50, .augment = SW_AUG_FLIP, .seed = 1};
  CHECK(sw_loader_init(&l, &d, &o, &e) == SW_OK);
  b = sw_loader_next(&l, img, lab);
  int flips = 0, ok = 1;
  float s[3072];
  for (int64_t i = 0; i < b; i++) {
    const float *t = img + i * 3072;
    sw_dataset_get(&d, i, 1, s);
    int same = memcmp(s, t, 3072 * sizeof(float)) == 0, mirrored = 1;
    for (int c = 0; c < 3; c++)
      for (int y = 0; y < 32; y++)
        for (int x = 0; x < 32; x++) mirrored &= t[(c * 32 + y) * 32 + x] == s[(c * 32 + y) * 32 + 31 - x];
    ok &= same || mirrored;
    flips += mirrored;
  }
  CHECK(ok && flips > 10 && flips < 40);
  free(img);
  sw_loader_free(&l);
  sw_dataset_free(&d);
}

/* A batch without augmentation is the normalisation formula applied to the stored pixels of the
 * epoch's samples (bit for bit: the dataset used to hold exactly these floats), and the same as
 * reading the samples out with sw_dataset_get. */
static void test_normalise(void) {
  sw_dataset d;
  make_indexed(&d, 300, 3, 5, 7); /* 35-pixel planes: two vectors of 16 and a scalar tail */
  /* The vector path is on wherever the CPU has it (so the test below covers it) and reproduces
   * the table; the table path is checked by switching it off. */
#if defined(__x86_64__) && defined(__GNUC__)
  CHECK(d.simd == (__builtin_cpu_supports("avx512f") ? 1 : 0));
#else
  CHECK(d.simd == 0);
#endif
  for (int simd = d.simd; simd >= 0; simd--) {
    d.simd = simd;
    sw_err e = {0};
    sw_loader l;
    sw_loader_opts o = {.batch = 64, .shuffle = 1, .seed = 2};
    CHECK(sw_loader_init(&l, &d, &o, &e) == SW_OK);
    enum { PER = 3 * 5 * 7 };
    float img[64 * PER], one[PER];
    int64_t lab[64], perm[300], b, at = 0;
    sw_loader_permutation(2, 0, 300, perm);
    int exact = 1, same = 1, found = 1;
    while ((b = sw_loader_next(&l, img, lab)) > 0) {
      for (int64_t i = 0; i < b; i++, at++) {
        int64_t src = perm[at];
        found &= sample_of(&d, img + i * PER) == src && lab[i] == src % 10;
        for (int k = 0; k < PER; k++) {
          int c = k / 35;
          exact &= img[i * PER + k] == ((float)d.pixels[src * PER + k] * d.scale - d.mean[c]) / d.std[c];
        }
        sw_dataset_get(&d, src, 1, one);
        same &= memcmp(one, img + i * PER, sizeof one) == 0;
      }
    }
    CHECK(at == 300 && exact && same && found);
    sw_loader_free(&l);
  }
  /* Every pixel value through both paths, for an awkward normalisation. */
  d.scale = 1.0f / 255.0f;
  d.mean[0] = 0.4914f;
  d.std[0] = 0.2470f;
  sw_dataset_set_lut(&d);
  uint8_t all[256];
  float fast[256], slow[256];
  for (int v = 0; v < 256; v++) all[v] = (uint8_t)v;
  sw_dataset_normalise(&d, 0, all, 256, fast);
  d.simd = 0;
  sw_dataset_normalise(&d, 0, all, 256, slow);
  int ok = 1;
  for (int v = 0; v < 256; v++) ok &= fast[v] == slow[v] && slow[v] == ((float)v * d.scale - 0.4914f) / 0.2470f;
  CHECK(ok);
  sw_dataset_free(&d);
}

/* Runs `count` batches from l into a flat record (images then labels per batch). */
static void run_batches(sw_loader *l, int count, float *img, int64_t *lab, int64_t per) {
  int64_t bsz = l->o.batch;
  for (int k = 0; k < count; k++) {
    int64_t b = sw_loader_next(l, img + k * bsz * per, lab + k * bsz);
    if (b == 0) {
      sw_loader_next_epoch(l);
      b = sw_loader_next(l, img + k * bsz * per, lab + k * bsz);
    }
    CHECK(b == bsz);
  }
}

static void test_cursor(void) {
  sw_dataset d;
  make_indexed(&d, 250, 3, 32, 32);
  sw_err e = {0};
  int64_t per = 3072;
  sw_loader_opts o = {
      .batch = 64, .shuffle = 1, .drop_last = 1, .augment = SW_AUG_CROP | SW_AUG_FLIP, .seed = 21};
  enum { NB = 12 }; /* three epochs of 3 batches, plus 3 */
  float *ref = malloc((size_t)NB * 64 * per * sizeof(float)),
        *got = malloc((size_t)NB * 64 * per * sizeof(float));
  int64_t rlab[NB * 64], glab[NB * 64];

  /* Reference run, remembering the cursor after 5 batches (mid-epoch 1). */
  sw_loader a;
  CHECK(sw_loader_init(&a, &d, &o, &e) == SW_OK);
  run_batches(&a, 5, ref, rlab, per);
  sw_loader_cursor saved = sw_loader_tell(&a);
  CHECK(saved.epoch == 1 && saved.pos == 128 && saved.n == 250 && saved.seed == 21);
  run_batches(&a, NB - 5, ref + 5 * 64 * per, rlab + 5 * 64, per);
  sw_loader_free(&a);

  /* A fresh loader seeking to the saved cursor reproduces the rest exactly. */
  sw_loader b;
  CHECK(sw_loader_init(&b, &d, &o, &e) == SW_OK);
  CHECK(sw_loader_seek(&b, &saved, &e) == SW_OK);
  run_batches(&b, NB - 5, got, glab, per);
  CHECK(memcmp(got, ref + 5 * 64 * per, (size_t)(NB - 5) * 64 * per * sizeof(float)) == 0);
  CHECK(memcmp(glab, rlab + 5 * 64, (size_t)(NB - 5) * 64 * sizeof(int64_t)) == 0);
  sw_loader_free(&b);

  /* A different seed gives different batches. */
  o.seed = 22;
  CHECK(sw_loader_init(&b, &d, &o, &e) == SW_OK);
  run_batches(&b, 1, got, glab, per);
  CHECK(memcmp(got, ref, 64 * per * sizeof(float)) != 0);

  /* Cursors that do not fit. */
  sw_loader_cursor bad = saved;
  bad.n = 251;
  CHECK(sw_loader_seek(&b, &bad, &e) == SW_EINPUT);
  CHECK_CONTAINS(e.msg, "for 251 samples");
  CHECK_CONTAINS(e.hint, "same dataset");
  sw_err_clear(&e);
  bad = saved;
  bad.pos = 300;
  CHECK(sw_loader_seek(&b, &bad, &e) == SW_EINPUT);
  CHECK_CONTAINS(e.msg, "corrupt");
  sw_loader_free(&b);
  free(ref);
  free(got);
  sw_dataset_free(&d);
}

/* Batches big enough for the threaded path (>= 2^22 floats) are identical with 1 and 2 threads. */
static void test_threads(void) {
  sw_dataset d;
  make_indexed(&d, 3000, 3, 32, 32);
  sw_err e = {0};
  const int64_t B = 1400, per = 3072;
  CHECK(B * per >= ((int64_t)1 << 22));
  sw_loader_opts o = {.batch = B, .shuffle = 1, .augment = SW_AUG_CROP | SW_AUG_FLIP, .seed = 5};
  sw_loader one, two;
  CHECK(sw_loader_init(&one, &d, &o, &e) == SW_OK && sw_loader_init(&two, &d, &o, &e) == SW_OK);
  float *a = malloc((size_t)(B * per) * sizeof(float)), *b = malloc((size_t)(B * per) * sizeof(float));
  int64_t la[1400], lb[1400];
  int nt = omp_get_max_threads(), batches = 0;
  for (int ep = 0; ep < 2; ep++) {
    for (;;) {
      omp_set_num_threads(1);
      int64_t na = sw_loader_next(&one, a, la);
      omp_set_num_threads(2);
      int64_t nb = sw_loader_next(&two, b, lb);
      CHECK(na == nb);
      if (na == 0) break;
      CHECK(memcmp(a, b, (size_t)(na * per) * sizeof(float)) == 0 &&
            memcmp(la, lb, (size_t)na * sizeof(int64_t)) == 0);
      batches++;
    }
    sw_loader_next_epoch(&one);
    sw_loader_next_epoch(&two);
  }
  CHECK(batches == 6); /* 1400 + 1400 + 200 per epoch */
  omp_set_num_threads(nt);
  free(a);
  free(b);
  sw_loader_free(&one);
  sw_loader_free(&two);
  sw_dataset_free(&d);
}

int main(void) {
  test_permutation();
  test_batching();
  test_normalise();
  test_augment_geometry();
  test_augment_loader();
  test_cursor();
  test_threads();
  return check_report("test_loader");
}
