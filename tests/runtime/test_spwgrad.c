/* Sparse weight gradient (spwgrad.h): spact_pack/unpack round trips against topk_apply, capacity
 * overflow, and spwgrad_conv / spwgrad_gemm against conv_bwd_weight_ref / gemm_bwd_weight_ref on the
 * Top-K masked activation, over fixed and random shapes (odd sizes, C/K not multiples of 16, N=1,
 * strides 1-3, asymmetric pads, dilation, 1x1, 5x5, 7x7, 1x1 spatial), densities 0/1/10/50/100%
 * (the pack round trips also 20/30/40%, the layout checks 2-70%), both implementations, 1 and 2 threads, with and without db, NaN-poisoned scratch and outputs; and the
 * packed bytes of both pack implementations against an independent packer written from the layout's
 * description (ties at the threshold, NaN/inf/-0/denormal values, zero/negative/inf/NaN thresholds,
 * H*W = 1, H or W = 1, odd and unaligned widths, planes around multiples of 16 and 64), with both
 * position widths: uint16 in-plane positions (planes up to 256x256, FC inputs up to 65536 features,
 * both limits included) and int32 (a 257x256 plane, 65537 features), through pack, unpack, the conv
 * register and generic paths and the Gemm.
 *
 * Tolerance: max|got-ref| <= 1e-5 * max(max|ref|, 1) (fp32 sums of at most a few thousand products
 * against a reference that sums in double); db sums each image's P*Q dY values in fp32, so its
 * tolerance grows with P*Q / 4096 (the 257x256 planes); pack/unpack is exact. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "runtime/kernels/conv.h"
#include "runtime/kernels/gemm.h"
#include "runtime/kernels/spwgrad.h"
#include "runtime/kernels/topk.h"

#define TOL 1e-5

static const double densities[] = {0.0, 0.01, 0.1, 0.5, 1.0};
#define NDENS (int)(sizeof densities / sizeof densities[0])
/* The pack tests add 20-40%: what SWAT-ERK 0.9 and structured-channel 0.7 keep of most activations. */
static const double pack_densities[] = {0.0, 0.01, 0.1, 0.2, 0.3, 0.4, 0.5, 1.0};
#define NPACKDENS (int)(sizeof pack_densities / sizeof pack_densities[0])

/* A post-ReLU-like activation and the threshold that keeps about `dens` of it: density 1 uses
 * values without zeros and thr = 0, density 0 an infinite threshold, otherwise ReLU of a uniform
 * and the exact Top-K threshold of the wanted count (ties kept, as in SWAT). */
static float make_act(float *x, size_t n, double dens) {
  if (dens >= 1.0) {
    trng_fill(x, n, 0.1f, 1.0f);
    for (size_t i = 0; i < n; i++)
      if (trng_int(0, 1)) x[i] = -x[i];
    return 0.0f;
  }
  trng_fill(x, n, -1.0f, 1.0f);
  for (size_t i = 0; i < n; i++)
    if (x[i] < 0) x[i] = 0;
  if (dens <= 0.0) return INFINITY;
  int64_t k = (int64_t)ceil(dens * (double)n);
  if (k < 1) k = 1;
  return topk_threshold_ref(x, (int64_t)n, k);
}

static size_t xsize(const conv_desc *d) { return (size_t)d->N * d->C * d->H * d->W; }
static size_t ysize(const conv_desc *d) { return (size_t)d->N * d->K * d->P * d->Q; }
static size_t wsize(const conv_desc *d) { return (size_t)d->K * d->C * d->R * d->S; }

static void desc_str(const conv_desc *d, char *buf, size_t n) {
  snprintf(buf, n, "N%d C%d %dx%d K%d %dx%d s%d,%d p%d,%d,%d,%d d%d,%d", d->N, d->C, d->H, d->W, d->K, d->R, d->S,
           d->stride_h, d->stride_w, d->pad_t, d->pad_l, d->pad_b, d->pad_r, d->dil_h, d->dil_w);
}

/* The pack's scratch for [C][H][W] on T threads, filled with garbage: the pack must not depend on
 * what it held before. */
static void *pack_scratch(int C, int H, int W, int T) {
  size_t b = spact_pack_scratch(C, H, W, T);
  void *s = talloc(b);
  memset(s, 0xa5, b);
  return s;
}

/* The parity-class sets the pack tests use: plane order, all grouped, and two subsets (class 0 alone,
 * as a 1x1 stride-2 conv reads; every class but 0, so the first cursor is the one left out). */
static const unsigned pack_classes[] = {0, SPACT_ALL_CLASSES, 0x1, 0xe};
#define NPACKCLS (int)(sizeof pack_classes / sizeof pack_classes[0])

/* 1 when element i of an [N][C][H][W] tensor lies in the classes set in `classes` (0: all). */
static int in_classes(size_t i, int H, int W, unsigned classes) {
  if (!classes || H * W == 1) return 1;
  size_t j = i % ((size_t)H * W);
  int k = 2 * (int)((j / (size_t)W) % 2) + (int)(j % (size_t)W % 2);
  return (int)(classes >> k & 1);
}

/* Packs x at thr into a fresh buffer with capacity cap (both pack versions), checks the kept count
 * and the unpacked tensor against topk_apply (with the classes not packed cleared); returns the
 * buffer (NULL on overflow). */
static void *check_pack(const char *what, const float *x, int N, int C, int H, int W, float thr, unsigned grouped,
                        int64_t cap, int nthreads, int portable, int64_t *nnz_out) {
  size_t n = (size_t)N * C * H * W;
  float *ref = talloc(sizeof(float) * n), *got = talloc_nan(n);
  int64_t nall = topk_apply(x, ref, (int64_t)n, thr, 1), nref = 0;
  for (size_t i = 0; i < n; i++) {
    /* topk_apply keeps -0 at thr 0; the packed form drops it */
    if (ref[i] == 0.0f || !in_classes(i, H, W, grouped)) ref[i] = 0.0f;
    nref += ref[i] != 0.0f;
  }
  size_t bytes = spact_bytes(N, C, H, W, cap);
  void *buf = talloc(bytes);
  memset(buf, 0xa5, bytes);
  void *scr = pack_scratch(C, H, W, nthreads);
  int64_t nnz = portable ? spact_pack_c(x, N, C, H, W, thr, grouped, buf, cap, nthreads, scr)
                         : spact_pack(x, N, C, H, W, thr, grouped, buf, cap, nthreads, scr);
  free(scr);
  char w[320];
  snprintf(w, sizeof w, "%s cap %lld T=%d%s classes %#x", what, (long long)cap, nthreads, portable ? " C" : "",
           grouped);
  if (nref > cap) {
    if (nnz != -1) tfail("%s: kept %lld > capacity but pack returned %lld", w, (long long)nref, (long long)nnz);
    free(ref), free(got), free(buf);
    return NULL;
  }
  if (nnz != nref || spact_nnz(buf) != nref)
    tfail("%s: pack kept %lld (header %lld), topk_apply %lld", w, (long long)nnz, (long long)spact_nnz(buf),
          (long long)nref);
  if (spact_kept(buf) != nall) tfail("%s: spact_kept %lld, topk_apply %lld", w, (long long)spact_kept(buf), (long long)nall);
  double held = (double)N * C * (double)spact_class_positions(H, W, H * W > 1 ? grouped : 0);
  if (spact_density(buf) != (double)nref / held) tfail("%s: spact_density %.9g, want %.9g", w, spact_density(buf), nref / held);
  spact_unpack(buf, got);
  tcheck_same(w, got, ref, sizeof(float) * n);
  free(ref), free(got);
  if (nnz_out) *nnz_out = nnz;
  return buf;
}

static void test_pack(void) {
  tgroup_begin("pack/unpack vs topk_apply, capacity overflow");
  static const int shapes[][4] = {{1, 1, 1, 1},  {3, 5, 7, 9},  {2, 16, 28, 28}, {4, 3, 1, 1},
                                  {5, 37, 1, 1}, {1, 2, 1, 33}, {2, 4, 17, 2},   {3, 64, 7, 7},
                                  {4, 16, 28, 28} /* large enough for 2 and 3 packing threads */,
                                  {1, 1, 256, 256}, {1, 2, 257, 256}, {2, 65537, 1, 1} /* position widths */};
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
    int N = shapes[s][0], C = shapes[s][1], H = shapes[s][2], W = shapes[s][3];
    size_t n = (size_t)N * C * H * W;
    float *x = talloc(sizeof(float) * n);
    for (int di = 0; di < NPACKDENS; di++) {
      float thr = make_act(x, n, pack_densities[di]);
      char what[160];
      snprintf(what, sizeof what, "[%d,%d,%d,%d] density %.2f", N, C, H, W, pack_densities[di]);
      for (int portable = 0; portable <= 1; portable++)
        for (int gi = 0; gi < NPACKCLS; gi++)
          for (int t = 1; t <= 3; t += 1) {
            unsigned g = pack_classes[gi];
            int64_t nnz = 0;
            void *b = check_pack(what, x, N, C, H, W, thr, g, (int64_t)n, t, portable, &nnz);
            free(b);
            /* exact capacity fits, one less overflows, far more is capped at numel */
            free(check_pack(what, x, N, C, H, W, thr, g, nnz, t, portable, NULL));
            if (nnz > 0) free(check_pack(what, x, N, C, H, W, thr, g, nnz - 1, t, portable, NULL));
            free(check_pack(what, x, N, C, H, W, thr, g, 10 * (int64_t)n + 5, t, portable, NULL));
          }
    }
    /* NaN and negative zero are dropped, ties at the threshold kept */
    for (size_t i = 0; i < n; i++) x[i] = (i % 5 == 0) ? NAN : (i % 5 == 1) ? -0.0f : (i % 5 == 2) ? 0.5f : -0.25f;
    for (int gi = 0; gi < NPACKCLS; gi++) {
      unsigned g = pack_classes[gi];
      free(check_pack("NaN/-0/ties", x, N, C, H, W, 0.5f, g, (int64_t)n, 2, 0, NULL));
      free(check_pack("NaN/-0/ties", x, N, C, H, W, 0.5f, g, (int64_t)n, 2, 1, NULL));
      free(check_pack("NaN/-0/ties thr 0", x, N, C, H, W, 0.0f, g, (int64_t)n, 2, 0, NULL));
    }
    free(x);
  }
  if (spact_bytes(2, 3, 4, 5, 0) >= spact_bytes(2, 3, 4, 5, 10)) tfail("spact_bytes does not grow with capacity");
  /* 6 bytes per entry with uint16 positions, 8 with int32 (capacities that are multiples of 32
   * entries keep the 64-byte part alignment out of the difference) */
  static const int pw[][5] = {{128, 16, 28, 28, 6}, {128, 64, 7, 7, 6}, {4, 2, 256, 256, 6}, {2, 2, 257, 256, 8},
                              {128, 65536, 1, 1, 6}, {128, 65537, 1, 1, 8}};
  for (size_t i = 0; i < sizeof pw / sizeof pw[0]; i++) {
    size_t d = spact_bytes(pw[i][0], pw[i][1], pw[i][2], pw[i][3], 64 * 1024) - spact_bytes(pw[i][0], pw[i][1], pw[i][2], pw[i][3], 0);
    if (d != (size_t)pw[i][4] * 64 * 1024)
      tfail("spact_bytes [%d,%d,%d,%d]: %zu bytes for 65536 entries, want %d each", pw[i][0], pw[i][1], pw[i][2], pw[i][3], d, pw[i][4]);
  }
  if (spact_bytes(2, 3, 4, 5, 1000) != spact_bytes(2, 3, 4, 5, 120)) tfail("spact_bytes not capped at numel");
  tgroup_end();
}

/* ---- packed layout against an independent packer ------------------------------------------------ */

/* The byte layout spwgrad.c documents, rebuilt here from its description (header, then img_off[N],
 * img_cnt[N], cls[N][4C+1] when H*W > 1, pos[cap], val[cap], each part 64-byte aligned). */
typedef struct ref_hdr {
  uint64_t magic;
  int32_t N, C, H, W;
  int64_t cap, nnz;
  int32_t ncls, pbytes;
  int32_t classes;
  uint32_t reserved_;
  int64_t kept;
} ref_hdr;

static size_t al64(size_t n) { return (n + 63) / 64 * 64; }

/* Position width the layout prescribes: uint16 when the largest position (H*W - 1 inside a plane,
 * or C - 1 when H*W == 1) fits, else int32. */
static int ref_pbytes(int C, int H, int W) {
  int64_t npos = (int64_t)H * W > 1 ? (int64_t)H * W : C;
  return npos - 1 <= 0xffff ? 2 : 4;
}

typedef struct ref_parts {
  size_t off, cnt, cls, pos, val, end;
} ref_parts;

static ref_parts ref_layout(int N, int C, int H, int W, int64_t cap) {
  ref_parts p;
  int ncls = (int64_t)H * W > 1 ? 4 * C + 1 : 0;
  p.off = al64(sizeof(ref_hdr));
  p.cnt = p.off + al64(8 * (size_t)N);
  p.cls = p.cnt + al64(8 * (size_t)N);
  p.pos = p.cls + al64(4 * (size_t)N * ncls);
  p.val = p.pos + al64((size_t)ref_pbytes(C, H, W) * (size_t)cap);
  p.end = p.val + al64(4 * (size_t)cap);
  return p;
}

/* Packs x image by image, channel by channel, class by class (grouped, the classes set in `classes`,
 * the others empty; classes 0: the whole plane as class 0, classes 1-3 empty at its end), in plane
 * order (no SIMD, no threads): the order the layout prescribes when images land in order. Returns the
 * count. */
static int64_t ref_pack(const float *x, int N, int C, int H, int W, float thr, unsigned classes, void *buf,
                        int64_t cap) {
  int grouped = classes != 0;
  ref_parts p = ref_layout(N, C, H, W, cap);
  char *b = buf;
  int HW = H * W, ncls = HW > 1 ? 4 * C + 1 : 0;
  int64_t *off = (int64_t *)(b + p.off), *cnt = (int64_t *)(b + p.cnt);
  uint32_t *cls = (uint32_t *)(b + p.cls);
  int pb = ref_pbytes(C, H, W);
  float *val = (float *)(b + p.val);
  int64_t o = 0, kept = 0;
  for (int n = 0; n < N; n++) {
    off[n] = o;
    const float *xi = x + (size_t)n * C * HW;
    for (int c = 0; c < C; c++)
      for (int k = 0; k < (HW > 1 ? 4 : 1); k++) {
        if (ncls) cls[(size_t)n * ncls + 4 * c + k] = (uint32_t)(o - off[n]);
        if (k > 0 && !grouped) continue; /* classes 1-3 empty, where the plane ends */
        for (int h = 0; h < H; h++)
          for (int w = 0; w < W; w++) {
            if (HW > 1 && grouped && (2 * (h % 2) + (w % 2) != k || !(classes >> k & 1))) continue;
            float v = xi[(size_t)c * HW + h * W + w];
            if (v != 0.0f && fabsf(v) >= thr) {
              int32_t ps = HW > 1 ? h * W + w : c; /* in the plane; the channel when H*W == 1 */
              if (pb == 2) {
                uint16_t p16 = (uint16_t)ps;
                memcpy(b + p.pos + 2 * (size_t)o, &p16, 2);
              } else {
                memcpy(b + p.pos + 4 * (size_t)o, &ps, 4);
              }
              val[o] = v;
              o++;
            }
          }
      }
    if (ncls) cls[(size_t)n * ncls + 4 * C] = (uint32_t)(o - off[n]);
    cnt[n] = o - off[n];
  }
  ref_hdr *h = buf;
  memset(h, 0, sizeof *h);
  h->magic = 0x3274636170737753ull;
  h->N = N, h->C = C, h->H = H, h->W = W;
  h->cap = cap, h->nnz = o;
  h->ncls = ncls;
  h->pbytes = pb;
  h->classes = ncls ? (int32_t)classes : 0;
  for (size_t i = 0; i < (size_t)N * C * HW; i++) kept += x[i] != 0.0f && fabsf(x[i]) >= thr;
  h->kept = kept;
  return o;
}

/* Packs x with both implementations on 1-3 threads, in plane order and grouped (all classes and two subsets), and compares with ref_pack: on
 * one thread the whole buffer byte for byte; on more, where each image sits may differ, so image by
 * image (count, class table, positions, values). */
static void check_layout(const char *what, const float *x, int N, int C, int H, int W, float thr) {
  int64_t numel = (int64_t)N * C * H * W;
  ref_parts p = ref_layout(N, C, H, W, numel);
  if (p.end != spact_bytes(N, C, H, W, numel)) tfail("%s: spact_bytes %zu, layout %zu", what, spact_bytes(N, C, H, W, numel), p.end);
  char *want = talloc(p.end), *got = talloc(p.end);
  int ncls = H * W > 1 ? 4 * C + 1 : 0, pb = ref_pbytes(C, H, W);
  if (spact_pos_bytes(C, H, W) != pb) tfail("%s: spact_pos_bytes(%d,%d,%d) = %d, layout %d", what, C, H, W, spact_pos_bytes(C, H, W), pb);
  for (int gi = 0; gi < NPACKCLS; gi++) {
  unsigned g = pack_classes[gi];
  memset(want, 0xa5, p.end);
  int64_t nnz = ref_pack(x, N, C, H, W, thr, g, want, numel);
  for (int portable = 0; portable <= 1; portable++)
    for (int t = 1; t <= 3; t++) {
      char w[300];
      snprintf(w, sizeof w, "%s [%d,%d,%d,%d] thr %.9g T=%d%s classes %#x", what, N, C, H, W, (double)thr, t,
               portable ? " C" : "", g);
      memset(got, 0xa5, p.end);
      void *scr = pack_scratch(C, H, W, t);
      int64_t r = portable ? spact_pack_c(x, N, C, H, W, thr, g, got, numel, t, scr)
                           : spact_pack(x, N, C, H, W, thr, g, got, numel, t, scr);
      free(scr);
      if (spact_classes(got) != (ncls ? g : 0)) tfail("%s: spact_classes %#x", w, spact_classes(got));
      if (r != nnz) tfail("%s: kept %lld, reference %lld", w, (long long)r, (long long)nnz);
      if (t == 1) {
        tcheck_same(w, got, want, p.end);
        continue;
      }
      tcheck_same(w, got, want, sizeof(ref_hdr));
      const int64_t *go = (const int64_t *)(got + p.off), *wo = (const int64_t *)(want + p.off);
      tcheck_same(w, got + p.cnt, want + p.cnt, 8 * (size_t)N);
      tcheck_same(w, got + p.cls, want + p.cls, 4 * (size_t)N * ncls);
      int64_t covered = 0;
      for (int n = 0; n < N; n++) {
        int64_t c = ((const int64_t *)(want + p.cnt))[n];
        covered += c;
        if (go[n] < 0 || go[n] + c > nnz) {
          tfail("%s: image %d at %lld+%lld outside %lld", w, n, (long long)go[n], (long long)c, (long long)nnz);
          continue;
        }
        tcheck_same(w, got + p.pos + pb * go[n], want + p.pos + pb * wo[n], pb * (size_t)c);
        tcheck_same(w, got + p.val + 4 * go[n], want + p.val + 4 * wo[n], 4 * (size_t)c);
      }
      if (covered != nnz) tfail("%s: images hold %lld of %lld", w, (long long)covered, (long long)nnz);
    }
  }
  free(want), free(got);
}

static void test_layout(void) {
  tgroup_begin("pack layout vs independent packer (byte for byte)");
  static const int shapes[][4] = {{1, 1, 1, 1}, {3, 5, 1, 1},   {2, 37, 1, 1},  {2, 3, 1, 7},   {2, 3, 7, 1},
                                  {3, 4, 5, 5}, {2, 16, 28, 28}, {3, 32, 14, 14}, {4, 64, 7, 7}, {2, 2, 9, 13},
                                  {2, 1, 8, 8}, {2, 2, 8, 9},   {1, 3, 11, 17}, {2, 2, 2, 33},  {5, 3, 3, 1}};
  int nshapes = (int)(sizeof shapes / sizeof shapes[0]);
  /* position widths at their limits: uint16 up to 256x256 planes and 65536 features, int32 past */
  static const int wide[][4] = {{1, 1, 256, 256}, {2, 2, 257, 256}, {1, 1, 1, 65537}, {2, 65536, 1, 1}, {2, 65537, 1, 1}};
  int nwide = (int)(sizeof wide / sizeof wide[0]);
  for (int s = 0; s < nshapes + nwide + 12; s++) {
    int N, C, H, W;
    if (s < nshapes) N = shapes[s][0], C = shapes[s][1], H = shapes[s][2], W = shapes[s][3];
    else if (s < nshapes + nwide) N = wide[s - nshapes][0], C = wide[s - nshapes][1], H = wide[s - nshapes][2], W = wide[s - nshapes][3];
    else N = trng_int(1, 5), C = trng_int(1, 9), H = trng_int(1, 40), W = trng_int(1, 70);
    size_t n = (size_t)N * C * H * W;
    float *x = talloc(sizeof(float) * n);
    /* few distinct magnitudes: the Top-K thresholds fall on ties */
    for (size_t i = 0; i < n; i++) {
      int r = trng_int(0, 9);
      x[i] = r < 4 ? 0.0f : (float)trng_int(1, 8) * 0.125f * (trng_int(0, 1) ? 1.0f : -1.0f);
    }
    for (int di = 0; di < 6; di++) {
      static const double dens[] = {0.02, 0.1, 0.2, 0.3, 0.4, 0.7};
      int64_t k = (int64_t)ceil(dens[di] * (double)n);
      check_layout("ties", x, N, C, H, W, topk_threshold_ref(x, (int64_t)n, k < 1 ? 1 : k));
    }
    /* special values and thresholds */
    for (size_t i = 0; i < n; i++) {
      int r = trng_int(0, 12);
      x[i] = r == 0 ? NAN : r == 1 ? -0.0f : r == 2 ? INFINITY : r == 3 ? -INFINITY : r == 4 ? 1e-40f
             : r == 5 ? -1e-45f /* the smallest denormal: bits 1 */ : (float)trng_unit() * 2.0f - 1.0f;
    }
    static const float thrs[] = {0.0f, -0.0f, -1.0f, 0.5f, 1e-40f, INFINITY, NAN};
    for (size_t j = 0; j < sizeof thrs / sizeof thrs[0]; j++) check_layout("special", x, N, C, H, W, thrs[j]);
    free(x);
  }
  tgroup_end();
}

static conv_desc make_desc(int N, int C, int H, int W, int K, int R, int S, int sh, int sw, int pt, int pl, int pb,
                           int pr, int dh, int dw) {
  conv_desc d = {N, C, H, W, K, R, S, 0, 0, sh, sw, pt, pl, pb, pr, dh, dw, 1};
  SW_ASSERT(conv_desc_resolve(&d, NULL) == SW_OK);
  return d;
}

static conv_desc random_desc(void) {
  for (;;) {
    conv_desc d;
    memset(&d, 0, sizeof d);
    d.groups = 1;
    d.N = trng_int(1, 4);
    d.C = trng_int(1, 20);
    d.K = trng_int(0, 3) ? trng_int(1, 40) : trng_int(60, 80);
    d.H = trng_int(1, 13);
    d.W = trng_int(1, 13);
    d.R = trng_int(1, 5);
    d.S = trng_int(1, 5);
    d.stride_h = trng_int(0, 4) ? trng_int(1, 2) : 3;
    d.stride_w = trng_int(0, 3) ? d.stride_h : trng_int(1, 3);
    d.dil_h = trng_int(0, 4) ? 1 : 2;
    d.dil_w = trng_int(0, 4) ? 1 : 2;
    d.pad_t = trng_int(0, 2);
    d.pad_l = trng_int(0, 2);
    d.pad_b = trng_int(0, 2);
    d.pad_r = trng_int(0, 2);
    if (conv_desc_resolve(&d, NULL) == SW_OK) return d;
  }
}

/* One shape at one density: every implementation, thread count and db setting vs the reference. */
static void check_conv(const conv_desc *d, double dens) {
  char ds[160], what[400], pd[160];
  desc_str(d, ds, sizeof ds);
  float *x = talloc(sizeof(float) * xsize(d)), *xs = talloc(sizeof(float) * xsize(d));
  float *dy = talloc(sizeof(float) * ysize(d));
  float thr = make_act(x, xsize(d), dens);
  trng_fill(dy, ysize(d), -1, 1);
  int64_t nnz = topk_apply(x, xs, (int64_t)xsize(d), thr, 1);
  float *dw_ref = talloc(sizeof(float) * wsize(d)), *db_ref = talloc(sizeof(float) * d->K);
  conv_bwd_weight_ref(d, xs, dy, dw_ref, db_ref);
  /* X_s packed as the layer packs it, and the other way: a strided conv given it in plane order
   * takes the generic path, a stride-1 conv takes it grouped as well; and, when the conv reads only
   * some parity classes (a 1x1 stride-2 conv: class 0), grouped with just those, as the layer packs it */
  unsigned want = spwgrad_conv_classes(d);
  const unsigned kinds[3] = {0, SPACT_ALL_CLASSES, want};
  int nkinds = want && want != SPACT_ALL_CLASSES ? 3 : 2;
  void *bufs[3] = {NULL, NULL, NULL}, *scr = pack_scratch(d->C, d->H, d->W, 2);
  for (int g = 0; g < nkinds; g++) {
    bufs[g] = talloc(spact_bytes(d->N, d->C, d->H, d->W, nnz));
    int64_t kept = spact_pack(x, d->N, d->C, d->H, d->W, thr, kinds[g], bufs[g], nnz, 2, scr);
    SW_ASSERT(g == 2 ? kept >= 0 && kept <= nnz : kept == nnz);
  }
  free(scr);
  float *dw = talloc_nan(wsize(d)), *db = talloc_nan(d->K), *dw2 = talloc_nan(wsize(d));
  static const char *const kind_names[3] = {" X_s in plane order", " X_s grouped", " X_s of the classes read only"};
  for (int g = 0; g < nkinds; g++)
  for (int impl = 0; impl <= 1; impl++)
    for (int t = 1; t <= 2; t++) {
      const void *buf = bufs[g];
      const char *how = kinds[g] == want ? "" : kind_names[g]; /* unnamed: as the layer packs it */
      spwgrad_plan p;
      sw_err e;
      sw_err_clear(&e);
      if (spwgrad_plan_init_impl(&p, d, t, impl ? SPWGRAD_IMPL_GENERIC : SPWGRAD_IMPL_AUTO, &e)) {
        tfail("%s: plan init failed: %s", ds, e.msg);
        continue;
      }
      spwgrad_plan_describe(&p, pd, sizeof pd);
      size_t ss = spwgrad_plan_scratch(&p);
      float *scratch = talloc_nan(ss / sizeof(float) + 1);
      for (int withb = 0; withb <= 1; withb++) {
        for (size_t i = 0; i < wsize(d); i++) dw[i] = NAN;
        for (int i = 0; i < d->K; i++) db[i] = NAN;
        spwgrad_conv(&p, buf, dy, dw, withb ? db : NULL, scratch);
        snprintf(what, sizeof what, "dW %s density %.2f [%s] T=%d%s%s", ds, dens, pd, t, withb ? " +db" : "", how);
        tcheck_close(what, dw, dw_ref, wsize(d), TOL);
        if (withb) {
          snprintf(what, sizeof what, "db %s density %.2f [%s] T=%d%s", ds, dens, pd, t, how);
          double pq = (double)d->P * d->Q;
          tcheck_close(what, db, db_ref, d->K, TOL * (pq > 4096 ? pq / 4096 : 1));
        } else {
          for (int i = 0; i < d->K; i++)
            if (!isnan(db[i])) {
              tfail("%s: db written although NULL was passed", what);
              break;
            }
        }
      }
      /* run to run: bit-identical with a dirty scratch */
      spwgrad_conv(&p, buf, dy, dw2, NULL, scratch);
      snprintf(what, sizeof what, "determinism %s [%s] T=%d%s", ds, pd, t, how);
      tcheck_same(what, dw2, dw, sizeof(float) * wsize(d));
      free(scratch);
      spwgrad_plan_free(&p);
    }
  free(x), free(xs), free(dy), free(dw_ref), free(db_ref), free(bufs[0]), free(bufs[1]), free(bufs[2]), free(dw), free(db), free(dw2);
}

static void test_conv(void) {
  tgroup_begin("spwgrad_conv vs conv_bwd_weight_ref (fixed shapes)");
  const conv_desc fixed[] = {
      make_desc(2, 16, 12, 12, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1), /* ResNet-like 3x3 */
      make_desc(3, 16, 13, 11, 32, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1), /* stride 2, odd sizes */
      make_desc(2, 32, 9, 9, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1),   /* K = 64: two register passes */
      make_desc(2, 12, 10, 10, 70, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1), /* K = 70: 5 blocks, tail */
      make_desc(2, 16, 14, 14, 32, 1, 1, 2, 2, 0, 0, 0, 0, 1, 1), /* 1x1 stride-2 shortcut */
      make_desc(3, 7, 9, 8, 130, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1),   /* 1x1, wide K */
      make_desc(2, 6, 14, 14, 16, 5, 5, 1, 1, 0, 0, 0, 0, 1, 1),  /* LeNet conv2 */
      make_desc(1, 5, 11, 9, 13, 5, 5, 2, 2, 2, 1, 0, 2, 1, 1),   /* 5x5 s2, asymmetric pads, N=1 */
      make_desc(1, 3, 8, 10, 5, 3, 2, 1, 2, 0, 2, 1, 0, 1, 1),    /* mixed strides */
      make_desc(2, 4, 12, 12, 9, 3, 3, 1, 1, 2, 2, 2, 2, 2, 1),   /* row dilation 2 (fast) */
      make_desc(2, 4, 12, 12, 9, 3, 3, 1, 1, 2, 2, 2, 2, 1, 2),   /* column dilation 2 (generic) */
      make_desc(2, 4, 12, 12, 9, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2),   /* stride 2, dilation 2 */
      make_desc(2, 5, 13, 13, 17, 3, 3, 3, 3, 1, 1, 1, 1, 1, 1),  /* stride 3 (generic) */
      make_desc(2, 3, 12, 12, 8, 7, 7, 1, 1, 3, 3, 3, 3, 1, 1),   /* 7x7 (generic) */
      make_desc(2, 3, 12, 12, 8, 7, 7, 2, 2, 3, 3, 3, 3, 1, 1),   /* 7x7 s2: 4x4 taps */
      make_desc(3, 20, 1, 1, 11, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1),   /* 1x1 spatial */
      make_desc(2, 6, 1, 1, 11, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1),    /* 1x1 spatial, padded 3x3 */
      make_desc(1, 1, 1, 7, 3, 1, 3, 1, 1, 0, 1, 0, 1, 1, 1),     /* single row */
      make_desc(1, 1, 256, 256, 5, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1), /* largest uint16 plane (fast) */
      make_desc(1, 2, 257, 256, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1), /* int32 in-plane positions (generic) */
      make_desc(2, 65537, 1, 1, 3, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1), /* 1x1 spatial, int32 channel positions */
  };
  for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
    for (int di = 0; di < NDENS; di++) check_conv(&fixed[i], densities[di]);
  tgroup_end();
  tgroup_begin("spwgrad_conv vs conv_bwd_weight_ref (random shapes)");
  for (int i = 0; i < 40; i++) {
    conv_desc d = random_desc();
    check_conv(&d, densities[trng_int(0, NDENS - 1)]);
  }
  tgroup_end();
}

static void test_conv_errors(void) {
  tgroup_begin("spwgrad_plan_init errors, register-kernel choice by position width");
  {
    /* the register kernels read uint16 positions: a 256x256 plane gets them wherever a small one
     * does, a 257x256 plane (int32 positions) never */
    spwgrad_plan small, big, wide;
    conv_desc ds = make_desc(2, 16, 12, 12, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1);
    conv_desc db = make_desc(1, 1, 256, 256, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1);
    conv_desc dw = make_desc(1, 1, 257, 256, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1);
    SW_ASSERT(spwgrad_plan_init(&small, &ds, 1, NULL) == SW_OK && spwgrad_plan_init(&big, &db, 1, NULL) == SW_OK &&
              spwgrad_plan_init(&wide, &dw, 1, NULL) == SW_OK);
    if (big.fast != small.fast) tfail("256x256 plane: register kernels %d, 12x12: %d", big.fast, small.fast);
    if (wide.fast) tfail("257x256 plane (int32 positions) on the register kernels");
    spwgrad_plan_free(&small), spwgrad_plan_free(&big), spwgrad_plan_free(&wide);
  }
  conv_desc d = {2, 4, 8, 8, 4, 3, 3, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2};
  spwgrad_plan p;
  sw_err e;
  sw_err_clear(&e);
  if (spwgrad_plan_init(&p, &d, 2, &e) != SW_EINPUT || !strstr(e.msg, "group")) tfail("groups = 2 accepted");
  spwgrad_plan_free(&p);
  d.groups = 1;
  d.R = 11; /* kernel larger than the padded input */
  sw_err_clear(&e);
  if (spwgrad_plan_init(&p, &d, 2, &e) != SW_EINPUT) tfail("kernel larger than the input accepted");
  spwgrad_plan_free(&p);
  tgroup_end();
}

/* Gemm: dW = dY^T X_s with X_s packed as [M][K] or as [M][C][H][W] with C*H*W = K. */
static void check_gemm(int M, int N, int C, int H, int W, double dens) {
  int K = C * H * W;
  gemm_desc d = {M, N, K};
  float *x = talloc(sizeof(float) * (size_t)M * K), *xs = talloc(sizeof(float) * (size_t)M * K);
  float *dy = talloc(sizeof(float) * (size_t)M * N);
  float thr = make_act(x, (size_t)M * K, dens);
  trng_fill(dy, (size_t)M * N, -1, 1);
  int64_t nnz = topk_apply(x, xs, (int64_t)M * K, thr, 1);
  float *dw_ref = talloc(sizeof(float) * (size_t)N * K), *db_ref = talloc(sizeof(float) * N);
  gemm_bwd_weight_ref(&d, xs, dy, dw_ref, db_ref);
  void *buf = talloc(spact_bytes(M, C, H, W, nnz));
  float *dw = talloc_nan((size_t)N * K), *db = talloc_nan(N);
  char what[200];
  for (int g = 0; g <= 1; g++) /* either order of the entries inside a channel */
  for (int fast = 0; fast <= 1; fast++)
    for (int t = 1; t <= 2; t++) {
      void *scr = pack_scratch(C, H, W, 2);
      SW_ASSERT(spact_pack(x, M, C, H, W, thr, g ? SPACT_ALL_CLASSES : 0, buf, nnz, 2, scr) == nnz);
      free(scr);
      spwgrad_gemm_plan p;
      SW_ASSERT(spwgrad_gemm_plan_init(&p, &d, t, NULL) == SW_OK);
      if (!fast) p.fast = 0;
      float *scratch = talloc_nan(spwgrad_gemm_plan_scratch(&p) / sizeof(float) + 1);
      for (int withb = 0; withb <= 1; withb++) {
        for (size_t i = 0; i < (size_t)N * K; i++) dw[i] = NAN;
        for (int i = 0; i < N; i++) db[i] = NAN;
        spwgrad_gemm(&p, buf, dy, dw, withb ? db : NULL, scratch);
        snprintf(what, sizeof what, "gemm dW M%d N%d K%d (as %dx%dx%d) density %.2f %s T=%d%s%s", M, N, K, C, H, W,
                 dens, p.fast ? "avx512" : "C", t, withb ? " +db" : "", g ? " grouped" : "");
        tcheck_close(what, dw, dw_ref, (size_t)N * K, TOL);
        if (withb) tcheck_close(what, db, db_ref, N, TOL);
        else if (!isnan(db[0])) tfail("%s: db written although NULL was passed", what);
      }
      free(scratch);
      spwgrad_gemm_plan_free(&p);
    }
  free(x), free(xs), free(dy), free(dw_ref), free(db_ref), free(buf), free(dw), free(db);
}

static void test_gemm(void) {
  tgroup_begin("spwgrad_gemm vs gemm_bwd_weight_ref");
  static const int shapes[][5] = {{16, 120, 400, 1, 1}, {16, 84, 120, 1, 1}, {7, 10, 84, 1, 1}, {1, 1, 1, 1, 1},
                                  {5, 17, 33, 1, 1},    {9, 33, 16, 5, 5},   {3, 1100, 20, 1, 1}, {64, 256, 400, 1, 1} /* 2 threads */,
                                  {3, 5, 65536, 1, 1} /* uint16 at its limit */, {3, 5, 65537, 1, 1} /* int32 */,
                                  {2, 5, 2, 257, 256} /* int32 in-plane positions */, {2, 3, 1, 256, 256}};
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
    for (int di = 0; di < NDENS; di++)
      check_gemm(shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3], shapes[s][4], densities[di]);
  for (int i = 0; i < 10; i++)
    check_gemm(trng_int(1, 20), trng_int(1, 70), trng_int(1, 50), 1, 1, densities[trng_int(0, NDENS - 1)]);
  spwgrad_gemm_plan p;
  gemm_desc bad = {0, 3, 4};
  if (spwgrad_gemm_plan_init(&p, &bad, 1, NULL) != SW_EINPUT) tfail("gemm M = 0 accepted");
  tgroup_end();
}

int main(void) {
  trng_seed(20240611);
  test_pack();
  test_layout();
  test_conv();
  test_conv_errors();
  test_gemm();
  return tresult();
}
