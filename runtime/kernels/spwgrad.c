/* Sparse weight gradient from a packed Top-K activation (see spwgrad.h).
 *
 * Packed buffer ("spact"), all parts 64-byte aligned:
 *   spact_hdr                 magic, N, C, H, W, capacity, nnz, class-table width, position bytes,
 *                             classes (0: plane order; else grouped, holding only those classes),
 *                             kept (entries that passed the test, in the classes not held too)
 *   int64  img_off[N]         first entry of image n in pos[] / val[]
 *   int64  img_cnt[N]         entries of image n
 *   uint32 cls[N][4C+1]       (only when H*W > 1) start of channel c, class k = 2*(h%2) + (w%2),
 *                             relative to img_off[n], at cls[n][4c+k]; cls[n][4C] = img_cnt[n].
 *                             Not grouped: each channel's entries in plane order as its class 0
 *                             (cls[n][4c+1..3] = the channel's end). Grouped with only some of the
 *                             classes: the others' runs are empty
 *   uint16 pos[cap]           position: H*W > 1: inside the channel plane, h*W + w (the channel is
 *     or int32                the cls run the entry lies in); H*W == 1: the channel c. uint16 when
 *                             every position fits (H*W <= 65536, or C <= 65536 when H*W == 1: all
 *                             CNN activations and most FC inputs), else int32 (spact_pos_bytes)
 *   float  val[cap]           value
 * Packing takes whole images per thread: one read of the image (AVX-512: 16-wide compares) builds
 * a keep bitmap per channel plane and the class counts (popcounts against fixed class patterns), the
 * image's range is reserved with one atomic add on a shared cursor (so ranges never overlap and an
 * overflow is detected exactly), then the write reads the image back from L1/L2 and appends each
 * kept entry to the cursor of its class: bit by bit over the set bits, or (AVX-512, images with
 * many kept entries) by windows of 32 elements, one permute and two compresses per class. Not
 * grouped, a plane's entries go out in plane order: bit by bit, or (AVX-512, planes with an eighth
 * or more kept) two compresses per 16 elements, with no class bookkeeping: about twice as fast
 * (bench_topk). Image ranges land in scheduling order, which the kernels never depend on.
 *
 * Conv: see spwgrad.h. The register kernel for a class with nr x ns valid taps and nkb K-blocks
 * holds nr*ns*nkb accumulators (<= 28 zmm); each entry costs one table lookup (offtab: the dY
 * offset of its first tap) and nr*ns*nkb FMAs whose dY operand is a fixed offset from that base:
 * taps of one class are nr rows apart by `prow` floats and ns columns apart by 16 floats in the
 * bordered, K-blocked dYcl. Classes with fewer than 8 accumulators run 2-8 entries per iteration on
 * separate accumulator sets so the FMA latency is hidden. */
#include "runtime/kernels/spwgrad.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/kernels/kern_internal.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include "runtime/kernels/kern_avx512.h"
#define SPW_X86 1
#define SPW_TARGET __attribute__((target("avx512f")))
#endif

#define SPACT_MAGIC 0x3274636170737753ull /* "Swspact2" (1: int32 in-image positions) */
/* Positions below this fit the uint16 form. */
#define SPACT_POS16_LIMIT 65536
/* Accumulator registers a register kernel may use (of 32 zmm: the rest hold x and addresses). */
#define SPW_MAXACC 28
/* Largest number of valid taps per dimension the register kernels are instantiated for. */
#define SPW_MAXTAP 5
/* Largest number of K blocks one register-kernel pass holds. */
#define SPW_MAXKB 4
/* Per-thread bytes of dY chunk (channels-last) the conv kernel aims for (a share of the 1 MiB L2). */
#define SPW_CHUNK_BYTES (384 * 1024)
/* Upper bound of images per chunk (size of the on-stack segment list). */
#define SPW_CHUNK_MAX 64
/* Elements per packing thread below which fewer threads are used. */
#define SPW_PACK_MIN_PER_THREAD 16384
/* Vector updates per Gemm thread below which fewer threads are used. */
#define SPW_GEMM_MIN_PER_THREAD 100000
/* Input planes of at least this many pixels are processed image-major (see conv_worker). */
#define SPW_IMAGE_MAJOR_HW 100

typedef struct spact_hdr {
  uint64_t magic;
  int32_t N, C, H, W;
  int64_t cap, nnz;
  int32_t ncls, pbytes; /* class-table entries per image (0 when H*W == 1); bytes per position */
  int32_t classes;      /* 0: each channel's entries in plane order; else grouped by parity class,
                         * only the classes k with bit k set held (SPACT_ALL_CLASSES: all) */
  uint32_t reserved_;
  int64_t kept;         /* entries that passed the keep test, held or not (spact_kept) */
} spact_hdr;

typedef struct spact_view {
  spact_hdr *h;
  int64_t *img_off, *img_cnt;
  uint32_t *cls;
  void *pos; /* uint16_t[cap] when h->pbytes == 2, else int32_t[cap] */
  float *val;
} spact_view;

/* Position e of a position array of width pbytes (2 or 4); for loops outside the hot kernels. */
static inline int32_t pos_get(const void *pos, int pbytes, int64_t e) {
  return pbytes == 2 ? (int32_t)((const uint16_t *)pos)[e] : ((const int32_t *)pos)[e];
}


static int64_t cap_of(int N, int C, int H, int W, int64_t max_nnz) {
  int64_t numel = (int64_t)N * C * H * W;
  if (max_nnz < 0) max_nnz = 0;
  return max_nnz < numel ? max_nnz : numel;
}

int spact_pos_bytes(int C, int H, int W) {
  int64_t HW = (int64_t)H * W;
  return (HW > 1 ? HW : (int64_t)C) <= SPACT_POS16_LIMIT ? 2 : 4;
}

/* Byte offsets of the parts of a buffer; returns the total. */
static size_t spact_layout(int N, int C, int H, int W, int64_t cap, size_t off[5]) {
  size_t o = kern_align_up(sizeof(spact_hdr));
  int ncls = (int64_t)H * W > 1 ? 4 * C + 1 : 0;
  off[0] = o, o += kern_align_up(sizeof(int64_t) * (size_t)N);
  off[1] = o, o += kern_align_up(sizeof(int64_t) * (size_t)N);
  off[2] = o, o += kern_align_up(sizeof(uint32_t) * (size_t)N * (size_t)ncls);
  off[3] = o, o += kern_align_up((size_t)spact_pos_bytes(C, H, W) * (size_t)cap);
  off[4] = o, o += kern_align_up(sizeof(float) * (size_t)cap);
  return o;
}

static spact_view spact_map(const void *buf) {
  spact_view v;
  v.h = (spact_hdr *)buf;
  SW_ASSERT(v.h->magic == SPACT_MAGIC);
  size_t off[5];
  spact_layout(v.h->N, v.h->C, v.h->H, v.h->W, v.h->cap, off);
  char *b = (char *)buf;
  v.img_off = (int64_t *)(b + off[0]);
  v.img_cnt = (int64_t *)(b + off[1]);
  v.cls = (uint32_t *)(b + off[2]);
  v.pos = b + off[3];
  SW_ASSERT(v.h->pbytes == spact_pos_bytes(v.h->C, v.h->H, v.h->W));
  v.val = (float *)(b + off[4]);
  return v;
}

size_t spact_bytes(int N, int C, int H, int W, int64_t max_nnz) {
  size_t off[5];
  return spact_layout(N, C, H, W, cap_of(N, C, H, W, max_nnz), off);
}

int64_t spact_nnz(const void *buf) { return spact_map(buf).h->nnz; }

static inline int keep_c(float v, float thr) { return v != 0.0f && __builtin_fabsf(v) >= thr; }

/* keep_c as one unsigned compare on the bits, for branch-free loops: with u = |v|'s bits, v is kept
 * when lo <= u <= 0x7f800000 (not NaN), i.e. u - lo <= span. */
typedef struct keep_bits {
  uint32_t lo, span;
} keep_bits;

static keep_bits keep_bits_of(float thr) {
  keep_bits k;
  uint32_t t;
  memcpy(&t, &thr, sizeof t);
  if (thr != thr) return (keep_bits){0xffffffffu, 0}; /* NaN threshold: nothing is >= it (u + 1 > 0) */
  t = thr > 0.0f ? t : 1u;                     /* <= 0: every nonzero, non-NaN value */
  k.lo = t;
  k.span = 0x7f800000u - t;
  return k;
}

static inline int keep_u(float v, keep_bits k) {
  uint32_t u;
  memcpy(&u, &v, sizeof u);
  return (uint32_t)((u & 0x7fffffffu) - k.lo) <= k.span;
}

/* Asks for [p, p + bytes) in L2 (the next image or chunk while this one is computed: the packing
 * and the dY transposes are otherwise stalled on memory). */
static inline void prefetch_l2(const void *p, size_t bytes) {
  if (!p) return;
  for (size_t i = 0; i < bytes; i += 64) __builtin_prefetch((const char *)p + i, 0, 2);
}

/* ---- packing ------------------------------------------------------------------------------------ */

/* A channel plane's keep bitmap: bit j of word j/64 is set when plane element j (h*W + w) is kept.
 * The count step builds an image's bitmaps (one read of x, from memory) and takes the class counts
 * from them with popcounts against the class patterns; the write step walks the set bits only and
 * reads just the kept values back (from L1/L2). At SWAT-U densities that is a tenth of the elements,
 * with no per-row or per-vector work; from about 15-20% kept (ERK's and structured-channel's layers)
 * the branch misses of the walk cost more than vector work on every element (write_image_avx). */

/* Read-only tables shared by the packing threads for planes of H x W (H*W > 1); pat and clsof
 * live in the caller's scratch (pack_scratch_layout). */
typedef struct pack_tab {
  int nw;          /* 64-bit words per plane bitmap */
  uint64_t *pat;   /* [4][nw] bit j of pattern k set when plane element j is of class k */
  uint64_t *kpat;  /* [nw] the union of the kept classes' patterns; NULL when every class is kept */
  uint8_t *clsof;  /* [H*W] class 2*(h%2) + (w%2) of plane element j */
  /* The AVX-512 write walks a plane in windows of at most 32 elements: `wrows` whole rows when
   * W <= 32, else 32-column pieces of one row (starting at even columns). A window's classes depend
   * only on the parity of its first row (par): win[par][k] lists, in plane order, the window lanes
   * of class k (win_n[par][k] of them, at most 16; the rest of the 16 are 0 and masked off; none
   * for a class that is not kept). */
  int wrows;
  int32_t win[2][4][16];
  int win_n[2][4];
  int wslots;      /* (window, class) pairs with lanes in a plane: the vector write's cost in units */
} pack_tab;

/* Offsets in the pack's scratch for planes of HW elements on T threads: the class patterns and
 * their kept union at 0, the class of each element at off[0], the per-thread image bitmaps
 * ([T][C][4 nw] 16-bit pieces) at off[1]; returns the bytes (0 when HW == 1: flat images need none). */
static size_t pack_scratch_layout(int C, int HW, int T, size_t off[2]) {
  if (HW <= 1) return off[0] = off[1] = 0;
  size_t nw = (size_t)(HW + 63) / 64;
  off[0] = kern_align_up(sizeof(uint64_t) * 5 * nw);
  off[1] = off[0] + kern_align_up((size_t)HW);
  return off[1] + kern_align_up(sizeof(uint64_t) * (size_t)T * C * nw);
}

size_t spact_pack_scratch(int C, int H, int W, int nthreads) {
  size_t off[2];
  return pack_scratch_layout(C, H * W, kern_threads_clamp(nthreads), off);
}

/* Builds the tables for keeping the classes in `classes` (0: all, in plane order) into the scratch
 * at pat / clsof (see pack_scratch_layout). */
static void pack_tab_init(pack_tab *t, int H, int W, unsigned classes, uint64_t *pat, uint8_t *clsof) {
  int HW = H * W;
  t->nw = (HW + 63) / 64;
  t->pat = pat;
  t->clsof = clsof;
  unsigned keep = classes ? classes : SPACT_ALL_CLASSES;
  t->kpat = keep == SPACT_ALL_CLASSES ? NULL : pat + 4 * (size_t)t->nw;
  memset(t->pat, 0, sizeof(uint64_t) * 5 * (size_t)t->nw);
  for (int j = 0; j < HW; j++) {
    int k = 2 * ((j / W) & 1) + ((j % W) & 1);
    t->clsof[j] = (uint8_t)k;
    t->pat[(size_t)k * t->nw + j / 64] |= 1ull << (j % 64);
    if (t->kpat && (keep >> k & 1)) t->kpat[j / 64] |= 1ull << (j % 64);
  }
  int wf = W <= 32 ? W : 32; /* a window's width: the row, or a 32-column piece of it */
  t->wrows = W <= 32 ? 32 / W : 1;
  memset(t->win, 0, sizeof t->win);
  memset(t->win_n, 0, sizeof t->win_n);
  for (int par = 0; par < 2; par++)
    for (int i = 0; i < t->wrows * wf; i++) {
      int k = 2 * ((par + i / wf) & 1) + ((i % wf) & 1);
      if (keep >> k & 1) t->win[par][k][t->win_n[par][k]++] = i; /* at most 16: every other row and column */
    }
  t->wslots = 0;
  for (int h = 0; h < H; h += t->wrows)
    for (int k = 0; k < 4; k++) t->wslots += (t->win_n[h & 1][k] > 0) * (W <= 32 ? 1 : (W + 31) / 32);
}

/* A plane bitmap is stored as 16-bit pieces (the AVX-512 masks), 4 per 64-bit word; word w. */
static inline uint64_t bm_word(const uint16_t *b, int w) {
  uint64_t v;
  memcpy(&v, b + 4 * w, sizeof v); /* little endian: piece q is bits 16q.. */
  return v;
}

/* Clears the bits of the classes that are not kept from one channel's bitmap bm; returns how many
 * it cleared. */
static inline int64_t drop_classes(uint16_t *bm, const pack_tab *t) {
  if (!t->kpat) return 0;
  int64_t dropped = 0;
  for (int w = 0; w < t->nw; w++) {
    uint64_t v = bm_word(bm, w);
    dropped += __builtin_popcountll(v & ~t->kpat[w]);
    v &= t->kpat[w];
    memcpy(bm + 4 * w, &v, sizeof v);
  }
  return dropped;
}

/* Class starts of one channel from its bitmap bm (nw words) into cls[0..4) (running total tot). */
static inline int64_t class_counts(const uint16_t *bm, const pack_tab *t, uint32_t *cls, int64_t tot) {
  for (int k = 0; k < 4; k++) {
    const uint64_t *p = t->pat + (size_t)k * t->nw;
    int64_t c = 0;
    for (int w = 0; w < t->nw; w++) c += __builtin_popcountll(bm_word(bm, w) & p[w]);
    cls[k] = (uint32_t)tot;
    tot += c;
  }
  return tot;
}

/* Starts of one channel's runs into cls[0..4) from its bitmap bm: by class (grouped, class_counts),
 * or the whole channel as class 0 (classes 1-3 empty, at its end); returns the new running total. */
static inline int64_t run_starts(const uint16_t *bm, const pack_tab *t, int grouped, uint32_t *cls, int64_t tot) {
  if (grouped) return class_counts(bm, t, cls, tot);
  int64_t c = 0;
  for (int w = 0; w < t->nw; w++) c += __builtin_popcountll(bm_word(bm, w));
  cls[0] = (uint32_t)tot;
  tot += c;
  cls[1] = cls[2] = cls[3] = (uint32_t)tot;
  return tot;
}

/* Counts image xi's kept entries (H*W == 1: cls is NULL and the image is C values). */
static int64_t count_flat_c(const float *xi, int C, float thr) {
  keep_bits kb = keep_bits_of(thr);
  int64_t tot = 0;
  for (int c = 0; c < C; c++) tot += keep_u(xi[c], kb);
  return tot;
}

static void write_flat_c(const float *xi, int C, float thr, void *pos, int pbytes, float *val) {
  int64_t o = 0;
  for (int c = 0; c < C; c++)
    if (keep_c(xi[c], thr)) {
      if (pbytes == 2) ((uint16_t *)pos)[o] = (uint16_t)c;
      else ((int32_t *)pos)[o] = c;
      val[o++] = xi[c];
    }
}

/* Builds image xi's plane bitmaps bm[C][4 nw] and run starts cls[4C+1]; returns the count. */
static int64_t count_image_c(const float *xi, int C, int HW, float thr, const pack_tab *t, int grouped, uint16_t *bm,
                             uint32_t *cls, int64_t *dropped) {
  keep_bits kb = keep_bits_of(thr);
  int64_t tot = 0;
  for (int c = 0; c < C; c++) {
    const float *pl = xi + (size_t)c * HW;
    uint16_t *b = bm + (size_t)c * 4 * t->nw;
    for (int w = 0; w < t->nw; w++) {
      int j0 = 64 * w, j1 = j0 + 64 < HW ? j0 + 64 : HW;
      uint64_t m = 0;
      for (int j = j0; j < j1; j++) m |= (uint64_t)keep_u(pl[j], kb) << (j - j0);
      memcpy(b + 4 * w, &m, sizeof m);
    }
    *dropped += drop_classes(b, t);
    tot = run_starts(b, t, grouped, cls + 4 * c, tot);
  }
  cls[4 * C] = (uint32_t)tot;
  return tot;
}

/* Writes one channel plane's kept entries from its bitmap b: each set bit goes to the cursor of its
 * class, starting at start[class] (the order inside a class is the plane order, as the layout
 * requires), with its in-plane position j as uint16 (pos16) or int32 (pos32: the other is NULL). */
static inline __attribute__((always_inline)) void write_plane_bits(const float *pl, int HW, const pack_tab *t,
                                                                   const uint16_t *b, const uint32_t *start,
                                                                   uint16_t *pos16, int32_t *pos32, float *val) {
  const uint32_t base[4] = {start[0], start[1], start[2], start[3]};
  if (HW < 65536) {
    /* the four cursors as 16-bit fields of one register (a class never holds more than HW - 1
     * entries before its last): a cursor kept in memory made each entry wait on the store of the
     * entry before it in the same class. (Walking class by class, bits under each class pattern,
     * was 2.5x slower at 10% kept: four times the loop exits, each a branch miss.) */
    uint64_t ctr = 0;
    for (int w = 0; w < t->nw; w++) {
      uint64_t m = bm_word(b, w);
      while (m) {
        int j = 64 * w + __builtin_ctzll(m);
        m &= m - 1;
        int sh = t->clsof[j] * 16;
        uint32_t o = base[sh >> 4] + (uint32_t)((ctr >> sh) & 0xffffu);
        ctr += 1ull << sh;
        if (pos16) pos16[o] = (uint16_t)j;
        else pos32[o] = j;
        val[o] = pl[j];
      }
    }
    return;
  }
  uint32_t cur[4] = {base[0], base[1], base[2], base[3]};
  for (int w = 0; w < t->nw; w++) {
    uint64_t m = bm_word(b, w);
    while (m) {
      int j = 64 * w + __builtin_ctzll(m);
      m &= m - 1;
      uint32_t o = cur[t->clsof[j]]++;
      if (pos16) pos16[o] = (uint16_t)j;
      else pos32[o] = j;
      val[o] = pl[j];
    }
  }
}

/* Writes one channel plane's kept entries from its bitmap b in plane order, from index o on (not
 * grouped: no class cursors). */
static inline __attribute__((always_inline)) void write_plane_order(const float *pl, const pack_tab *t,
                                                                    const uint16_t *b, uint32_t o, uint16_t *pos16,
                                                                    int32_t *pos32, float *val) {
  for (int w = 0; w < t->nw; w++) {
    uint64_t m = bm_word(b, w);
    while (m) {
      int j = 64 * w + __builtin_ctzll(m);
      m &= m - 1;
      if (pos16) pos16[o] = (uint16_t)j;
      else pos32[o] = j;
      val[o++] = pl[j];
    }
  }
}

/* Writes image xi's kept entries from its bitmaps, plane by plane (write_plane_bits, or
 * write_plane_order when not grouped). */
static inline __attribute__((always_inline)) void write_image_t(const float *xi, int C, int HW, const pack_tab *t,
                                                                int grouped, const uint16_t *bm, const uint32_t *cls,
                                                                uint16_t *pos16, int32_t *pos32, float *val,
                                                                const float *next) {
  for (int c = 0; c < C; c++) {
    prefetch_l2(next ? next + (size_t)c * HW : NULL, sizeof(float) * (size_t)HW);
    const float *pl = xi + (size_t)c * HW;
    const uint16_t *b = bm + (size_t)c * 4 * t->nw;
    if (!grouped) {
      write_plane_order(pl, t, b, cls[4 * c], pos16, pos32, val);
      continue;
    }
    const uint32_t base[4] = {cls[4 * c], cls[4 * c + 1], cls[4 * c + 2], cls[4 * c + 3]};
    write_plane_bits(pl, HW, t, b, base, pos16, pos32, val);
  }
}

static void write_image(const float *xi, int C, int HW, const pack_tab *t, int grouped, const uint16_t *bm,
                        const uint32_t *cls, void *pos, int pbytes, float *val, const float *next) {
  if (pbytes == 2) write_image_t(xi, C, HW, t, grouped, bm, cls, pos, NULL, val, next);
  else write_image_t(xi, C, HW, t, grouped, bm, cls, NULL, pos, val, next);
}

#ifdef SPW_X86
static inline SPW_TARGET __mmask16 keep_mask(__m512 v, __m512 thr) {
  __m512 a = _mm512_abs_ps(v);
  return _mm512_cmp_ps_mask(a, thr, _CMP_GE_OQ) & _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NEQ_OQ);
}

static inline __mmask16 tail_mask(int n) { return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1u); }

static SPW_TARGET int64_t count_flat_avx(const float *xi, int C, float thr) {
  const __m512 tv = _mm512_set1_ps(thr);
  int64_t tot = 0;
  for (int c = 0; c < C; c += 16)
    tot += __builtin_popcount(keep_mask(_mm512_maskz_loadu_ps(tail_mask(C - c), xi + c), tv) & tail_mask(C - c));
  return tot;
}

static SPW_TARGET void write_flat_avx(const float *xi, int C, float thr, void *pos, int pbytes, float *val) {
  const __m512 tv = _mm512_set1_ps(thr);
  const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  int64_t o = 0;
  for (int c = 0; c < C; c += 16) {
    __mmask16 tm = tail_mask(C - c);
    __m512 v = _mm512_maskz_loadu_ps(tm, xi + c);
    __mmask16 m = keep_mask(v, tv) & tm;
    int n = __builtin_popcount(m);
    __mmask16 sm = tail_mask(n);
    _mm512_mask_storeu_ps(val + o, sm, _mm512_maskz_compress_ps(m, v));
    __m512i pv = _mm512_maskz_compress_epi32(m, _mm512_add_epi32(iota, _mm512_set1_epi32(c)));
    if (pbytes == 2) _mm512_mask_cvtepi32_storeu_epi16((uint16_t *)pos + o, sm, pv);
    else _mm512_mask_storeu_epi32((int32_t *)pos + o, sm, pv);
    o += n;
  }
}

/* count_image_c with 16-wide compares: the keep test on the bits (as keep_u) gives each 16-element
 * chunk's mask, stored as the 16-bit pieces of the plane's words (little endian). */
static SPW_TARGET int64_t count_image_avx(const float *xi, int C, int HW, float thr, const pack_tab *t, int grouped,
                                          uint16_t *bm, uint32_t *cls, int64_t *dropped) {
  keep_bits kb = keep_bits_of(thr);
  const __m512i absm = _mm512_set1_epi32(0x7fffffff), lo = _mm512_set1_epi32((int)kb.lo);
  const __m512i span = _mm512_set1_epi32((int)kb.span);
  int64_t tot = 0;
  int full = HW / 16, rest = HW % 16;
  for (int c = 0; c < C; c++) {
    const float *pl = xi + (size_t)c * HW;
    uint16_t *m16 = bm + (size_t)c * 4 * t->nw;
    memset(m16 + 4 * (t->nw - 1), 0, 4 * sizeof *m16); /* the pieces past the plane stay clear */
    for (int q = 0; q < full; q++) {
      __m512i u = _mm512_and_si512(_mm512_loadu_si512(pl + 16 * q), absm);
      m16[q] = _mm512_cmple_epu32_mask(_mm512_sub_epi32(u, lo), span);
    }
    if (rest) {
      __mmask16 tm = tail_mask(rest);
      __m512i u = _mm512_and_si512(_mm512_maskz_loadu_epi32(tm, pl + 16 * full), absm);
      m16[full] = _mm512_mask_cmple_epu32_mask(tm, _mm512_sub_epi32(u, lo), span);
    }
    *dropped += drop_classes(m16, t);
    tot = run_starts(m16, t, grouped, cls + 4 * c, tot);
  }
  cls[4 * C] = (uint32_t)tot;
  return tot;
}

/* One class of one window of write_image_avx: the lanes iv (the class's lanes of the window's 32
 * elements v0:v1, in plane order; n of them) gathered by one permute, the keep test as
 * count_image_avx's (so the counts agree), values and positions (j0 + lane) compressed in registers
 * and stored under a mask at cursor cur (Zen's compress to memory is slow); returns the new cursor. */
static inline SPW_TARGET __attribute__((always_inline)) uint32_t
write_class_avx(__m512 v0, __m512 v1, __m512i base, const int32_t *lanes, int n, __m512i lo, __m512i span,
                uint16_t *pos, float *val, uint32_t cur) {
  __m512i iv = _mm512_loadu_si512(lanes);
  __m512 v = _mm512_permutex2var_ps(v0, iv, v1);
  __m512i u = _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x7fffffff));
  __mmask16 m = _mm512_mask_cmple_epu32_mask((__mmask16)((1u << n) - 1u), _mm512_sub_epi32(u, lo), span);
  unsigned c = (unsigned)__builtin_popcount(m);
  __mmask16 sm = (__mmask16)((1u << c) - 1u);
  _mm512_mask_storeu_ps(val + cur, sm, _mm512_maskz_compress_ps(m, v));
  _mm512_mask_cvtepi32_storeu_epi16(pos + cur, sm, _mm512_maskz_compress_epi32(m, _mm512_add_epi32(iv, base)));
  return cur + c;
}

/* One window of write_image_avx: the kept entries among plane elements [j0, j0 + len) (len <= 32,
 * first row parity par) appended to their classes' cursors c0..c3. A macro over the caller's four
 * scalar cursors: with the cursors in an array handed to an inline function, perf showed every
 * cursor update going through the stack (a load and a store per class and window). */
#define WRITE_WINDOW_AVX(j0_, len_, par_)                                                                        \
  do {                                                                                                        \
    int wj = (j0_), wl = (len_), wp = (par_);                                                                  \
    __m512 v0 = _mm512_maskz_loadu_ps((__mmask16)((1u << (wl < 16 ? wl : 16)) - 1u), pl + wj);               \
    __m512 v1 = wl > 16 ? _mm512_maskz_loadu_ps((__mmask16)((1u << (wl - 16)) - 1u), pl + wj + 16)            \
                        : _mm512_setzero_ps();                                                                \
    __m512i base = _mm512_set1_epi32(wj);                                                                      \
    if (t->win_n[wp][0]) c0 = write_class_avx(v0, v1, base, t->win[wp][0], t->win_n[wp][0], lo, span, pos, val, c0); \
    if (t->win_n[wp][1]) c1 = write_class_avx(v0, v1, base, t->win[wp][1], t->win_n[wp][1], lo, span, pos, val, c1); \
    if (t->win_n[wp][2]) c2 = write_class_avx(v0, v1, base, t->win[wp][2], t->win_n[wp][2], lo, span, pos, val, c2); \
    if (t->win_n[wp][3]) c3 = write_class_avx(v0, v1, base, t->win[wp][3], t->win_n[wp][3], lo, span, pos, val, c3); \
  } while (0)

/* write_image for uint16 positions with AVX-512: the same bytes, by windows of up to 32 elements
 * (see pack_tab) instead of bit by bit; its cost per element does not grow with the density. */
static SPW_TARGET void write_image_avx(const float *xi, int C, int H, int W, float thr, const pack_tab *t,
                                          const uint16_t *bm, const uint32_t *cls, uint16_t *pos, float *val,
                                          const float *next) {
  keep_bits kb = keep_bits_of(thr);
  const __m512i lo = _mm512_set1_epi32((int)kb.lo), span = _mm512_set1_epi32((int)kb.span);
  int HW = H * W;
  for (int c = 0; c < C; c++) {
    const float *pl = xi + (size_t)c * HW;
    prefetch_l2(next ? next + (size_t)c * HW : NULL, sizeof(float) * (size_t)HW);
    /* a sparse plane walks its set bits instead: a kept entry there costs about as much as two
     * (window, class) steps of the vector write (bench_topk, Zen 5: 28x28 breaks even near 13%
     * kept, 14x14 near 25%, 7x7 near 35%) */
    if (cls[4 * c + 4] - cls[4 * c] < 2u * (uint32_t)t->wslots) {
      write_plane_bits(pl, HW, t, bm + (size_t)c * 4 * t->nw, cls + 4 * c, pos, NULL, val);
      continue;
    }
    uint32_t c0 = cls[4 * c], c1 = cls[4 * c + 1], c2 = cls[4 * c + 2], c3 = cls[4 * c + 3];
    if (W <= 32) {
      int step = t->wrows * W;
      for (int h = 0, j0 = 0; h < H; h += t->wrows, j0 += step) WRITE_WINDOW_AVX(j0, HW - j0 < step ? HW - j0 : step, h & 1);
    } else {
      for (int h = 0; h < H; h++)
        for (int w0 = 0; w0 < W; w0 += 32) WRITE_WINDOW_AVX(h * W + w0, W - w0 < 32 ? W - w0 : 32, h & 1);
    }
  }
}
#undef WRITE_WINDOW_AVX

/* write_image for uint16 positions, not grouped, with AVX-512: a plane with an eighth or more of
 * its elements kept goes 16 elements at a time, its bitmap piece as the mask of one load and two
 * compresses (values, positions); a sparser one walks its set bits. */
static SPW_TARGET void write_image_order_avx(const float *xi, int C, int HW, const pack_tab *t, const uint16_t *bm,
                                             const uint32_t *cls, uint16_t *pos, float *val, const float *next) {
  const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  int nq = (HW + 15) / 16;
  for (int c = 0; c < C; c++) {
    const float *pl = xi + (size_t)c * HW;
    const uint16_t *b = bm + (size_t)c * 4 * t->nw;
    prefetch_l2(next ? next + (size_t)c * HW : NULL, sizeof(float) * (size_t)HW);
    uint32_t o = cls[4 * c];
    if (8 * (cls[4 * c + 4] - o) < (uint32_t)HW) {
      write_plane_order(pl, t, b, o, pos, NULL, val);
      continue;
    }
    for (int q = 0; q < nq; q++) {
      __mmask16 m = b[q]; /* clear past the plane (count_image_avx) */
      __m512 v = _mm512_maskz_loadu_ps(m, pl + 16 * q);
      unsigned n = (unsigned)__builtin_popcount(m);
      __mmask16 sm = (__mmask16)((1u << n) - 1u);
      _mm512_mask_storeu_ps(val + o, sm, _mm512_maskz_compress_ps(m, v));
      __m512i j = _mm512_add_epi32(iota, _mm512_set1_epi32(16 * q));
      _mm512_mask_cvtepi32_storeu_epi16(pos + o, sm, _mm512_maskz_compress_epi32(m, j));
      o += n;
    }
  }
}
#endif

typedef struct pack_ctx {
  const float *x;
  int N, C, H, W;
  float thr;
  spact_view v;
  _Atomic int64_t used; /* entries reserved so far (images' ranges, in scheduling order) */
  _Atomic int64_t dropped; /* entries that passed the test in the classes not held */
  atomic_int overflow;
  int simd;
  int grouped;    /* 1: entries grouped by parity class (spact_hdr's classes != 0) */
  pack_tab tab;   /* when H*W > 1 */
  uint16_t *bm;   /* [T][C][4 tab.nw] per-thread image bitmaps (16-bit pieces) */
  kern_steal *images; /* taken by work stealing */
} pack_ctx;

static void pack_worker(void *arg, int t, int T) {
  pack_ctx *k = arg;
  int HW = k->H * k->W;
  size_t chw = (size_t)k->C * HW;
  int ncls = k->v.h->ncls;
  uint16_t *bm = ncls ? k->bm + (size_t)t * k->C * 4 * k->tab.nw : NULL;
  for (int64_t n; (n = kern_steal_next(k->images, t, T)) >= 0;) {
    const float *xi = k->x + (size_t)n * chw;
    const float *next = n + 1 < k->N ? xi + chw : NULL; /* prefetched: most often this worker's next */
    uint32_t *cls = ncls ? k->v.cls + (size_t)n * ncls : NULL;
    int64_t cnt, dropped = 0;
#ifdef SPW_X86
    if (k->simd)
      cnt = cls ? count_image_avx(xi, k->C, HW, k->thr, &k->tab, k->grouped, bm, cls, &dropped)
                : count_flat_avx(xi, k->C, k->thr);
    else
#endif
      cnt = cls ? count_image_c(xi, k->C, HW, k->thr, &k->tab, k->grouped, bm, cls, &dropped)
                : count_flat_c(xi, k->C, k->thr);
    if (dropped) atomic_fetch_add(&k->dropped, dropped);
    int64_t off;
    off = atomic_fetch_add(&k->used, cnt);
    if (off + cnt > k->v.h->cap) {
      atomic_store(&k->overflow, 1);
      return;
    }
    k->v.img_off[n] = off;
    k->v.img_cnt[n] = cnt;
    int pb = k->v.h->pbytes;
    void *pos = (char *)k->v.pos + (size_t)off * pb;
#ifdef SPW_X86
    /* the vector write where most planes take it (see write_image_avx), else the bit walk */
    if (cls && k->simd && pb == 2 && !k->grouped)
      write_image_order_avx(xi, k->C, HW, &k->tab, bm, cls, pos, k->v.val + off, next);
    else if (cls && k->simd && pb == 2 && cnt >= 2 * (int64_t)k->tab.wslots * k->C)
      write_image_avx(xi, k->C, k->H, k->W, k->thr, &k->tab, bm, cls, pos, k->v.val + off, next);
    else
#endif
    if (cls)
      write_image(xi, k->C, HW, &k->tab, k->grouped, bm, cls, pos, pb, k->v.val + off, next);
#ifdef SPW_X86
    else if (k->simd)
      write_flat_avx(xi, k->C, k->thr, pos, pb, k->v.val + off);
#endif
    else
      write_flat_c(xi, k->C, k->thr, pos, pb, k->v.val + off);
  }
}

static int64_t pack_run(const float *x, int N, int C, int H, int W, float thr, unsigned classes, void *buf,
                        int64_t max_nnz, int nthreads, void *scratch, int simd) {
  SW_ASSERT(classes <= SPACT_ALL_CLASSES);
  SW_ASSERT(N >= 1 && C >= 1 && H >= 1 && W >= 1 && (int64_t)C * H * W < INT32_MAX);
  spact_hdr *h = buf;
  memset(h, 0, sizeof *h);
  h->magic = SPACT_MAGIC;
  h->N = N, h->C = C, h->H = H, h->W = W;
  h->cap = cap_of(N, C, H, W, max_nnz);
  h->ncls = (int64_t)H * W > 1 ? 4 * C + 1 : 0;
  h->pbytes = spact_pos_bytes(C, H, W);
  h->classes = h->ncls ? (int32_t)classes : 0;
  pack_ctx k = {.x = x, .N = N, .C = C, .H = H, .W = W, .thr = thr, .v = spact_map(buf), .simd = simd,
                .grouped = h->classes != 0};
  /* Small tensors on one thread: waking a second costs more than it saves. The kept entries do
   * not depend on the thread count, only where each image's range sits. */
  int64_t numel = (int64_t)N * C * H * W;
  int T = kern_threads_clamp(nthreads);
  if (numel < (int64_t)T * SPW_PACK_MIN_PER_THREAD) T = (int)(numel / SPW_PACK_MIN_PER_THREAD) > 1 ? (int)(numel / SPW_PACK_MIN_PER_THREAD) : 1;
  if (h->ncls) { /* T is at most the clamped nthreads the scratch was sized for */
    SW_ASSERT(scratch && (uintptr_t)scratch % KERN_ALIGN == 0);
    size_t off[2];
    pack_scratch_layout(C, H * W, T, off);
    pack_tab_init(&k.tab, H, W, (unsigned)h->classes, scratch, (uint8_t *)scratch + off[0]);
    k.bm = (uint16_t *)((char *)scratch + off[1]);
  }
  kern_steal q;
  kern_steal_init(&q, N, T);
  k.images = &q;
  kern_parallel(T, pack_worker, &k);
  if (k.overflow) return -1;
  h->nnz = k.used;
  h->kept = k.used + k.dropped;
  return k.used;
}

int64_t spact_pack(const float *x, int N, int C, int H, int W, float thr, unsigned classes, void *buf,
                   int64_t max_nnz, int nthreads, void *scratch) {
  return pack_run(x, N, C, H, W, thr, classes, buf, max_nnz, nthreads, scratch, kern_cpu_avx512());
}

int64_t spact_pack_c(const float *x, int N, int C, int H, int W, float thr, unsigned classes, void *buf,
                     int64_t max_nnz, int nthreads, void *scratch) {
  return pack_run(x, N, C, H, W, thr, classes, buf, max_nnz, nthreads, scratch, 0);
}

unsigned spact_classes(const void *buf) { return (unsigned)spact_map(buf).h->classes; }

int64_t spact_kept(const void *buf) { return spact_map(buf).h->kept; }

double spact_density(const void *buf) {
  const spact_hdr *h = spact_map(buf).h;
  return (double)h->nnz / ((double)h->N * h->C * (double)spact_class_positions(h->H, h->W, (unsigned)h->classes));
}

int64_t spact_class_positions(int H, int W, unsigned classes) {
  if (!classes || (int64_t)H * W == 1) return (int64_t)H * W;
  int64_t rows[2] = {(H + 1) / 2, H / 2}, cols[2] = {(W + 1) / 2, W / 2}, n = 0;
  for (int k = 0; k < 4; k++)
    if (classes >> k & 1) n += rows[k >> 1] * cols[k & 1];
  return n;
}

void spact_unpack(const void *buf, float *x) {
  spact_view v = spact_map(buf);
  int64_t HW = (int64_t)v.h->H * v.h->W, chw = v.h->C * HW;
  int pb = v.h->pbytes, ncls = v.h->ncls;
  memset(x, 0, sizeof(float) * (size_t)(chw * v.h->N));
  for (int n = 0; n < v.h->N; n++) {
    float *xi = x + n * chw;
    int64_t off = v.img_off[n];
    if (!ncls) { /* H*W == 1: the position is the channel */
      for (int64_t e = off; e < off + v.img_cnt[n]; e++) xi[pos_get(v.pos, pb, e)] = v.val[e];
      continue;
    }
    const uint32_t *cr = v.cls + (size_t)n * ncls;
    for (int c = 0; c < v.h->C; c++) /* channel c's runs: its four classes, one after the other */
      for (int64_t e = off + cr[4 * c]; e < off + cr[4 * c + 4]; e++) xi[c * HW + pos_get(v.pos, pb, e)] = v.val[e];
  }
}

/* ---- conv plan -------------------------------------------------------------------------------- */

/* Per parity of an input coordinate (of n, kernel R, stride st, dilation dl, leading pad pd, output
 * size P): whether any coordinate of that parity is read by some output and tap. */
static void parities_read(int n, int R, int st, int dl, int pd, int P, int read[2]) {
  read[0] = read[1] = 0;
  for (int h = 0; h < n; h++)
    for (int r = 0; r < R && !read[h & 1]; r++) {
      int t = h + pd - r * dl;
      if (t >= 0 && t % st == 0 && t / st < P) read[h & 1] = 1;
    }
}

unsigned spwgrad_conv_classes(const conv_desc *din) {
  if (din->stride_h == 1 && din->stride_w == 1) return 0;
  conv_desc d = *din;
  sw_err e = {0};
  if (conv_desc_resolve(&d, &e)) return SPACT_ALL_CLASSES;
  int rh[2], rw[2];
  parities_read(d.H, d.R, d.stride_h, d.dil_h, d.pad_t, d.P, rh);
  parities_read(d.W, d.S, d.stride_w, d.dil_w, d.pad_l, d.Q, rw);
  unsigned m = 0;
  for (int k = 0; k < 4; k++)
    if (rh[k >> 1] && rw[k & 1]) m |= 1u << k;
  return m ? m : SPACT_ALL_CLASSES; /* an input no output reads: any grouping will do */
}

static int gcd(int a, int b) {
  while (b) {
    int t = a % b;
    a = b, b = t;
  }
  return a;
}

/* Valid taps of one dimension for an input coordinate of parity `par` (stride <= 2): the first
 * valid tap, how many, for kernel size R, stride st, dilation dl, leading pad pd. */
static void class_taps(int par, int R, int st, int dl, int pd, int *r0, int *nr) {
  int phase = (par + pd) % st;
  *r0 = 0, *nr = 0;
  for (int r = 0; r < R; r++)
    if ((r * dl) % st == phase) {
      if (*nr == 0) *r0 = r;
      (*nr)++;
    }
}

/* Lowest and highest output coordinate any (input coordinate, tap) pair maps to. */
static void out_range(int H, int R, int st, int dl, int pd, int *lo, int *hi) {
  *lo = 0, *hi = 0;
  int first = 1;
  for (int h = 0; h < H; h++)
    for (int r = 0; r < R; r++) {
      int t = h + pd - r * dl;
      if (t % st) continue;
      int p = t / st;
      if (first || p < *lo) *lo = p;
      if (first || p > *hi) *hi = p;
      first = 0;
    }
}

int spwgrad_plan_init_impl(spwgrad_plan *p, const conv_desc *din, int nthreads, spwgrad_impl want, sw_err *e) {
  memset(p, 0, sizeof *p);
  conv_desc d = *din;
  int rc = conv_desc_resolve(&d, e);
  if (rc) return rc;
  if (d.groups != 1) {
    sw_fail(e, SW_EINPUT, "sparse weight gradient: grouped convolution (groups = %d) is not supported", d.groups);
    sw_hint(e, "run grouped and depthwise layers with the dense conv_plan_bwd_weight");
    return SW_EINPUT;
  }
  int64_t chw = (int64_t)d.C * d.H * d.W;
  if (chw >= INT32_MAX) {
    sw_fail(e, SW_EINPUT, "sparse weight gradient: %lld elements per image exceed the int32 positions",
            (long long)chw);
    sw_hint(e, "use the dense weight gradient for such large images");
    return SW_EINPUT;
  }
  p->d = d;
  p->classes = spwgrad_conv_classes(&d);
  p->nthreads = kern_threads_clamp(nthreads);
  p->Kp = kern_cdiv(d.K, 16) * 16;
  p->Kb = p->Kp / 16;
  int plo, phi, qlo, qhi;
  out_range(d.H, d.R, d.stride_h, d.dil_h, d.pad_t, &plo, &phi);
  out_range(d.W, d.S, d.stride_w, d.dil_w, d.pad_l, &qlo, &qhi);
  p->Bt = plo < 0 ? -plo : 0;
  p->Bl = qlo < 0 ? -qlo : 0;
  p->Pp = p->Bt + (phi > d.P - 1 ? phi + 1 : d.P);
  p->Qp = p->Bl + (qhi > d.Q - 1 ? qhi + 1 : d.Q);
  size_t img_floats = (size_t)p->Kb * p->Pp * p->Qp * 16;
  if (img_floats >= INT32_MAX) {
    sw_fail(e, SW_EINPUT, "sparse weight gradient: the dY image (%zu floats) exceeds int32 offsets", img_floats);
    sw_hint(e, "use the dense weight gradient for such large images");
    return SW_EINPUT;
  }
  /* Register kernels: strides <= 2 (parity classes), taps of a class one column apart in dY. */
  int gh = gcd(d.stride_h, d.dil_h), gw = gcd(d.stride_w, d.dil_w);
  p->rstep = d.stride_h / gh, p->sstep = d.stride_w / gw;
  p->prow = (d.dil_h / gh) * p->Qp * 16;
  int fast = want == SPWGRAD_IMPL_AUTO && kern_cpu_avx512() && d.stride_h <= 2 && d.stride_w <= 2 && d.dil_w / gw == 1 &&
             (int64_t)d.H * d.W > 1 && spact_pos_bytes(d.C, d.H, d.W) == 2;
  for (int a = 0; a < 2; a++) {
    if (d.stride_h <= 2) class_taps(a, d.R, d.stride_h, d.dil_h, d.pad_t, &p->r0[a], &p->nr[a]);
    if (d.stride_w <= 2) class_taps(a, d.S, d.stride_w, d.dil_w, d.pad_l, &p->s0[a], &p->ns[a]);
    if (p->nr[a] > SPW_MAXTAP || p->ns[a] > SPW_MAXTAP) fast = 0;
  }
  p->fast = fast;
  p->simd = want == SPWGRAD_IMPL_AUTO && kern_cpu_avx512();
  p->pixtab = sw_xmalloc(sizeof(int32_t) * (size_t)d.P * d.Q);
  for (int pp = 0; pp < d.P; pp++)
    for (int qq = 0; qq < d.Q; qq++)
      p->pixtab[pp * d.Q + qq] = (int32_t)(((size_t)(pp + p->Bt) * p->Qp + (size_t)(qq + p->Bl)) * 16);
  if (fast) {
    p->offtab = sw_xmalloc(sizeof(int32_t) * (size_t)d.H * d.W);
    for (int h = 0; h < d.H; h++)
      for (int w = 0; w < d.W; w++) {
        int a = h & 1, b = w & 1;
        int32_t o = 0;
        if (p->nr[a] && p->ns[b]) {
          int pp = (h + d.pad_t - p->r0[a] * d.dil_h) / d.stride_h;
          int qq = (w + d.pad_l - p->s0[b] * d.dil_w) / d.stride_w;
          o = (int32_t)(((size_t)(pp + p->Bt) * p->Qp + (size_t)(qq + p->Bl)) * 16);
        }
        p->offtab[h * d.W + w] = o;
      }
  }
  /* Thread grid: image groups (the largest divisor of T not above N) x channel groups. */
  int T = p->nthreads;
  p->Tn = 1;
  for (int t = 1; t <= T; t++)
    if (T % t == 0 && t <= d.N) p->Tn = t;
  p->Tc = T / p->Tn;
  int per = kern_cdiv(d.N, p->Tn);
  size_t img_bytes = img_floats * sizeof(float);
  int ch = (int)(SPW_CHUNK_BYTES / img_bytes);
  if (ch < 1) ch = 1;
  if (ch > per) ch = per;
  if (ch > SPW_CHUNK_MAX) ch = SPW_CHUNK_MAX;
  p->chunk = ch;
  p->ycl_floats = kern_align_up(img_floats * (size_t)ch * sizeof(float)) / sizeof(float);
  p->part_floats = kern_align_up((size_t)d.C * d.R * d.S * p->Kp * sizeof(float)) / sizeof(float);
  p->scratch = sizeof(float) * (p->part_floats * (size_t)p->Tn + p->ycl_floats * (size_t)T) +
               kern_align_up(sizeof(double) * (size_t)d.N * d.K);
  return SW_OK;
}

int spwgrad_plan_init(spwgrad_plan *p, const conv_desc *d, int nthreads, sw_err *e) {
  return spwgrad_plan_init_impl(p, d, nthreads, SPWGRAD_IMPL_AUTO, e);
}

void spwgrad_plan_free(spwgrad_plan *p) {
  free(p->offtab);
  free(p->pixtab);
  memset(p, 0, sizeof *p);
}

size_t spwgrad_plan_scratch(const spwgrad_plan *p) { return p->scratch; }

const char *spwgrad_plan_describe(const spwgrad_plan *p, char *buf, size_t n) {
  if (p->fast)
    snprintf(buf, n, "sparse-wgrad avx512 taps %dx%d/%dx%d kb%d chunk%d grid%dx%d", p->nr[0], p->ns[0], p->nr[1],
             p->ns[1], p->Kb, p->chunk, p->Tn, p->Tc);
  else
    snprintf(buf, n, "sparse-wgrad generic kb%d chunk%d grid%dx%d", p->Kb, p->chunk, p->Tn, p->Tc);
  return buf;
}

/* ---- conv register kernels --------------------------------------------------------------------- */

/* The entries of one (image, channel, class) and the dY chunk slot of that image (first K block
 * of the pass). */
typedef struct spw_seg {
  const uint16_t *pos; /* in-plane positions (the register kernels run on the uint16 form only) */
  const float *val;
  const float *y;
  int64_t n;
} spw_seg;

typedef void (*tapk_fn)(const spw_seg *sg, int nseg, const int32_t *tab, ptrdiff_t prow, ptrdiff_t kbs,
                        float *out);

#ifdef SPW_X86
/* out[((i*NS + j)*NKB + k)*16 + l] = sum over entries of x * dY(base - i*prow - j*16 + k*kbs)[l]. */
static inline __attribute__((always_inline)) SPW_TARGET void tapk_body(const spw_seg *sg, int nseg,
                                                                     const int32_t *tab, ptrdiff_t prow,
                                                                     ptrdiff_t kbs, float *out,
                                                                     const int NR, const int NS, const int NKB) {
  const int A = NR * NS * NKB;
  const int U = A >= 15 ? 1 : A >= 4 ? 2 : A >= 2 ? 4 : 8;
  __m512 acc[32];
#pragma GCC unroll 32
  for (int a = 0; a < 32; a++)
    if (a < U * A) acc[a] = _mm512_setzero_ps();
  for (int g = 0; g < nseg; g++) {
    const uint16_t *pos = sg[g].pos;
    const float *val = sg[g].val, *y = sg[g].y;
    int64_t n = sg[g].n, e = 0;
    for (; e + U <= n; e += U) {
#pragma GCC unroll 8
      for (int u = 0; u < U; u++) {
        const float *b = y + tab[pos[e + u]];
        __m512 xv = _mm512_set1_ps(val[e + u]);
#pragma GCC unroll 8
        for (int i = 0; i < NR; i++)
#pragma GCC unroll 8
          for (int k = 0; k < NKB; k++) {
            const float *rp = b - i * prow + k * kbs;
#pragma GCC unroll 8
            for (int j = 0; j < NS; j++) {
              int a = u * A + (i * NS + j) * NKB + k;
              acc[a] = _mm512_fmadd_ps(xv, _mm512_load_ps(rp - 16 * j), acc[a]);
            }
          }
      }
    }
    for (; e < n; e++) {
      const float *b = y + tab[pos[e]];
      __m512 xv = _mm512_set1_ps(val[e]);
#pragma GCC unroll 8
      for (int i = 0; i < NR; i++)
#pragma GCC unroll 8
        for (int k = 0; k < NKB; k++) {
          const float *rp = b - i * prow + k * kbs;
#pragma GCC unroll 8
          for (int j = 0; j < NS; j++) {
            int a = (i * NS + j) * NKB + k;
            acc[a] = _mm512_fmadd_ps(xv, _mm512_load_ps(rp - 16 * j), acc[a]);
          }
        }
    }
  }
#pragma GCC unroll 32
  for (int a = 0; a < 32; a++)
    if (a < A) {
      __m512 s = acc[a];
#pragma GCC unroll 8
      for (int u = 1; u < U; u++) s = _mm512_add_ps(s, acc[u * A + a]);
      _mm512_storeu_ps(out + 16 * a, s);
    }
}

#define TAPK(NR, NS, NKB)                                                                                       \
  static SPW_TARGET void tapk_##NR##_##NS##_##NKB(const spw_seg *sg, int nseg, const int32_t *tab, ptrdiff_t prow, \
                                                  ptrdiff_t kbs, float *out) {                                   \
    tapk_body(sg, nseg, tab, prow, kbs, out, NR, NS, NKB);                                                       \
  }
#define TAPK_KB(NR, NS) TAPK(NR, NS, 1) TAPK(NR, NS, 2) TAPK(NR, NS, 3) TAPK(NR, NS, 4)
#define TAPK_KB1(NR, NS) TAPK(NR, NS, 1)
#define TAPK_KB2(NR, NS) TAPK(NR, NS, 1) TAPK(NR, NS, 2)
#define TAPK_KB3(NR, NS) TAPK(NR, NS, 1) TAPK(NR, NS, 2) TAPK(NR, NS, 3)
/* Instantiations with NR*NS*NKB <= SPW_MAXACC and NKB <= SPW_MAXKB. */
TAPK_KB(1, 1) TAPK_KB(1, 2) TAPK_KB(1, 3) TAPK_KB(1, 4) TAPK_KB(1, 5)
TAPK_KB(2, 1) TAPK_KB(2, 2) TAPK_KB(2, 3) TAPK_KB3(2, 4) TAPK_KB2(2, 5)
TAPK_KB(3, 1) TAPK_KB(3, 2) TAPK_KB3(3, 3) TAPK_KB2(3, 4) TAPK_KB1(3, 5)
TAPK_KB(4, 1) TAPK_KB3(4, 2) TAPK_KB2(4, 3) TAPK_KB1(4, 4) TAPK_KB1(4, 5)
TAPK_KB(5, 1) TAPK_KB2(5, 2) TAPK_KB1(5, 3) TAPK_KB1(5, 4) TAPK_KB1(5, 5)

#define TK4(NR, NS) {tapk_##NR##_##NS##_1, tapk_##NR##_##NS##_2, tapk_##NR##_##NS##_3, tapk_##NR##_##NS##_4}
#define TK3(NR, NS) {tapk_##NR##_##NS##_1, tapk_##NR##_##NS##_2, tapk_##NR##_##NS##_3, NULL}
#define TK2(NR, NS) {tapk_##NR##_##NS##_1, tapk_##NR##_##NS##_2, NULL, NULL}
#define TK1(NR, NS) {tapk_##NR##_##NS##_1, NULL, NULL, NULL}
static const tapk_fn tapk_table[SPW_MAXTAP][SPW_MAXTAP][SPW_MAXKB] = {
    {TK4(1, 1), TK4(1, 2), TK4(1, 3), TK4(1, 4), TK4(1, 5)},
    {TK4(2, 1), TK4(2, 2), TK4(2, 3), TK3(2, 4), TK2(2, 5)},
    {TK4(3, 1), TK4(3, 2), TK3(3, 3), TK2(3, 4), TK1(3, 5)},
    {TK4(4, 1), TK3(4, 2), TK2(4, 3), TK1(4, 4), TK1(4, 5)},
    {TK4(5, 1), TK2(5, 2), TK1(5, 3), TK1(5, 4), TK1(5, 5)},
};
#endif

/* Most K blocks one register pass holds for a class of nr x ns taps. */
static int kb_per_pass(int nr, int ns) {
  int k = SPW_MAXACC / (nr * ns);
  return k > SPW_MAXKB ? SPW_MAXKB : k;
}

/* ---- conv execution ---------------------------------------------------------------------------- */

typedef struct conv_ctx {
  const spwgrad_plan *p;
  spact_view v;
  const float *dy;
  float *dw, *db;
  float *parts, *ycl;
  double *dbpart;
} conv_ctx;

/* Zeroes the border of every K block of `slots` bordered dY images. */
static void zero_borders(const spwgrad_plan *p, float *ycl, int slots) {
  const conv_desc *d = &p->d;
  size_t plane = (size_t)p->Pp * p->Qp * 16, row = (size_t)p->Qp * 16;
  for (int s = 0; s < slots * p->Kb; s++) {
    float *b = ycl + (size_t)s * plane;
    memset(b, 0, sizeof(float) * row * p->Bt);
    memset(b + row * (p->Bt + d->P), 0, sizeof(float) * row * (p->Pp - p->Bt - d->P));
    for (int r = p->Bt; r < p->Bt + d->P; r++) {
      memset(b + row * r, 0, sizeof(float) * 16 * p->Bl);
      memset(b + row * r + 16 * (p->Bl + d->Q), 0, sizeof(float) * 16 * (p->Qp - p->Bl - d->Q));
    }
  }
}

#ifdef SPW_X86
/* dY of one image, channels [k0, k0+nk) -> one bordered K block: 16 pixels at a time (rows
 * wrapped, so 7- and 14-wide maps still fill the tiles), transposed in registers and stored at
 * pixtab[pixel]; adds the block's per-k sums to sum. */
static SPW_TARGET void load_block_avx(const float *src, size_t PQ, int nk, const int32_t *pixtab, float *yb,
                                      float *sum) {
  __m512 s = _mm512_setzero_ps();
  for (size_t i0 = 0; i0 < PQ; i0 += 16) {
    int nc = PQ - i0 < 16 ? (int)(PQ - i0) : 16;
    __mmask16 m = tail_mask(nc);
    __m512 r[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_maskz_loadu_ps(i < nk ? m : 0, src + (size_t)(i < nk ? i : 0) * PQ + i0);
    kern_tr16_avx512(r);
    const int32_t *pt = pixtab + i0;
    for (int j = 0; j < 16; j++)
      if (j < nc) {
        _mm512_store_ps(yb + pt[j], r[j]);
        s = _mm512_add_ps(s, r[j]);
      }
  }
  _mm512_storeu_ps(sum, s);
}
#endif

/* Transposes dY of image n into the bordered, K-blocked slot y; optionally the per-k sums. */
static void load_dy(const spwgrad_plan *p, const float *dyn, float *y, double *dbn) {
  const conv_desc *d = &p->d;
  size_t plane = (size_t)p->Pp * p->Qp * 16, PQ = (size_t)d->P * d->Q;
  for (int kb = 0; kb < p->Kb; kb++) {
    int k0 = kb * 16, nk = d->K - k0 < 16 ? d->K - k0 : 16;
    float *yb = y + (size_t)kb * plane;
    const float *src = dyn + (size_t)k0 * PQ;
    float s[16] = {0};
#ifdef SPW_X86
    if (p->simd)
      load_block_avx(src, PQ, nk, p->pixtab, yb, s);
    else
#endif
      for (size_t i = 0; i < PQ; i++) {
        float *dst = yb + p->pixtab[i];
        for (int l = 0; l < 16; l++) {
          dst[l] = l < nk ? src[(size_t)l * PQ + i] : 0.0f;
          s[l] += dst[l];
        }
      }
    if (dbn)
      for (int l = 0; l < nk; l++) dbn[k0 + l] = s[l];
  }
}

/* Generic path: adds the entries of (image slot y, channel c) into part (all taps, all K blocks);
 * pos holds their in-plane positions, pb bytes each. */
static void entries_generic(const spwgrad_plan *p, const void *pos, int pb, const float *val, int64_t n, int c,
                            const float *y, float *part) {
  const conv_desc *d = &p->d;
  size_t plane = (size_t)p->Pp * p->Qp * 16;
  for (int64_t e = 0; e < n; e++) {
    int hw = pos_get(pos, pb, e), h = hw / d->W, w = hw % d->W;
    float x = val[e];
    for (int r = 0; r < d->R; r++) {
      int t = h + d->pad_t - r * d->dil_h;
      if (t % d->stride_h) continue;
      const float *yr = y + (size_t)(t / d->stride_h + p->Bt) * p->Qp * 16;
      for (int s = 0; s < d->S; s++) {
        int u = w + d->pad_l - s * d->dil_w;
        if (u % d->stride_w) continue;
        const float *yp = yr + (size_t)(u / d->stride_w + p->Bl) * 16;
        float *dst = part + ((size_t)(c * d->R + r) * d->S + s) * p->Kp;
        for (int kb = 0; kb < p->Kb; kb++)
          for (int l = 0; l < 16; l++) dst[kb * 16 + l] += x * yp[kb * plane + l];
      }
    }
  }
}

/* Fast path: channel c of images n0 .. n0+nn (slots ycl), all classes and K blocks, into part. */
static void channel_fast(const conv_ctx *k, int c, int n0, int nn, const float *ycl, float *part) {
#ifdef SPW_X86
  const spwgrad_plan *p = k->p;
  const conv_desc *d = &p->d;
  int ncls = k->v.h->ncls;
  const uint16_t *pos16 = k->v.pos; /* the plan is fast only where the positions are uint16 */
  size_t plane = (size_t)p->Pp * p->Qp * 16, img = plane * p->Kb;
  spw_seg sg[SPW_CHUNK_MAX];
  float out[SPW_MAXACC * 16];
  /* Stride 1 on both axes: the four classes share their taps, run them as one range. */
  int merged = d->stride_h == 1 && d->stride_w == 1;
  for (int cl = 0; cl < 4; cl += merged ? 4 : 1) {
    int a = cl >> 1, b = cl & 1, nr = p->nr[a], ns = p->ns[b];
    if (!nr || !ns) continue;
    int kmax = kb_per_pass(nr, ns), npass = kern_cdiv(p->Kb, kmax);
    for (int ps = 0; ps < npass; ps++) {
      int kb0 = p->Kb * ps / npass, nkb = p->Kb * (ps + 1) / npass - kb0;
      int nseg = 0;
      for (int i = 0; i < nn; i++) {
        const uint32_t *cr = k->v.cls + (size_t)(n0 + i) * ncls + 4 * c;
        uint32_t lo = cr[cl], hi = cr[merged ? 4 : cl + 1];
        if (hi == lo) continue;
        int64_t base = k->v.img_off[n0 + i] + lo;
        sg[nseg].pos = pos16 + base;
        sg[nseg].val = k->v.val + base;
        sg[nseg].y = ycl + (size_t)i * img + (size_t)kb0 * plane;
        sg[nseg].n = hi - lo;
        nseg++;
      }
      if (!nseg) continue;
      tapk_table[nr - 1][ns - 1][nkb - 1](sg, nseg, p->offtab, p->prow, (ptrdiff_t)plane, out);
      for (int i = 0; i < nr; i++)
        for (int j = 0; j < ns; j++) {
          int r = p->r0[a] + i * p->rstep, s = p->s0[b] + j * p->sstep;
          float *dst = part + ((size_t)(c * d->R + r) * d->S + s) * p->Kp + (size_t)kb0 * 16;
          const float *src = out + (size_t)(i * ns + j) * nkb * 16;
          for (int kb = 0; kb < nkb; kb++)
            for (int l = 0; l < 16; l++) dst[kb * 16 + l] += src[kb * 16 + l];
        }
    }
  }
#else
  (void)k, (void)c, (void)n0, (void)nn, (void)ycl, (void)part;
  SW_ASSERT(!"register kernels need x86-64");
#endif
}

static void conv_worker(void *arg, int t, int T) {
  (void)T;
  conv_ctx *k = arg;
  const spwgrad_plan *p = k->p;
  const conv_desc *d = &p->d;
  int gn = t % p->Tn, gc = t / p->Tn;
  int64_t n_lo, n_hi, c_lo, c_hi;
  kern_split(d->N, gn, p->Tn, &n_lo, &n_hi);
  kern_split(d->C, gc, p->Tc, &c_lo, &c_hi);
  float *part = k->parts + (size_t)gn * p->part_floats;
  size_t crow = (size_t)d->R * d->S * p->Kp;
  memset(part + (size_t)c_lo * crow, 0, sizeof(float) * crow * (size_t)(c_hi - c_lo));
  float *ycl = k->ycl + (size_t)t * p->ycl_floats;
  size_t img = (size_t)p->Kb * p->Pp * p->Qp * 16;
  size_t ystride = (size_t)d->K * d->P * d->Q;
  zero_borders(p, ycl, p->chunk);
  int HW = d->H * d->W, ncls = k->v.h->ncls, pb = k->v.h->pbytes;
  SW_ASSERT(!p->fast || pb == 2);
  /* the register kernels run a strided conv's classes apart: they need X_s grouped by class */
  int fast = p->fast && (k->v.h->classes || !p->classes);
  const char *pos = k->v.pos;
  for (int64_t n0 = n_lo; n0 < n_hi; n0 += p->chunk) {
    int nn = (int)(n_hi - n0 < p->chunk ? n_hi - n0 : p->chunk);
    for (int i = 0; i < nn; i++)
      load_dy(p, k->dy + (size_t)(n0 + i) * ystride, ycl + (size_t)i * img,
              k->db && gc == 0 ? k->dbpart + (size_t)(n0 + i) * d->K : NULL);
    if (fast) {
      /* Large planes go image by image (one image's dY block stays in L1 across its channels),
       * small ones channel by channel over the chunk (amortising the accumulator flushes). The
       * next chunk's dY streams into L2 meanwhile, a share per step. */
      int64_t ncs = c_hi - c_lo, nx = n_hi - (n0 + nn) < p->chunk ? n_hi - (n0 + nn) : p->chunk;
      int imaj = HW >= SPW_IMAGE_MAJOR_HW;
      int64_t nsteps = imaj ? nn * ncs : ncs;
      const char *next = (const char *)(k->dy + (size_t)(n0 + nn) * ystride);
      size_t nbytes = sizeof(float) * ystride * (size_t)nx, share = kern_align_up(nbytes / (size_t)(nsteps + 1) + 1);
      for (int64_t st = 0; st < nsteps; st++) {
        size_t o = share * (size_t)st;
        if (o < nbytes) prefetch_l2(next + o, share < nbytes - o ? share : nbytes - o);
        if (imaj) {
          int64_t i = st / ncs;
          channel_fast(k, (int)(c_lo + st % ncs), (int)(n0 + i), 1, ycl + (size_t)i * img, part);
        } else {
          channel_fast(k, (int)(c_lo + st), (int)n0, nn, ycl, part);
        }
      }
      continue;
    }
    for (int i = 0; i < nn; i++) {
      int64_t n = n0 + i, off = k->v.img_off[n];
      const float *y = ycl + (size_t)i * img;
      if (ncls) {
        const uint32_t *cr = k->v.cls + (size_t)n * ncls;
        for (int64_t c = c_lo; c < c_hi; c++)
          entries_generic(p, pos + (size_t)(off + cr[4 * c]) * pb, pb, k->v.val + off + cr[4 * c],
                          cr[4 * c + 4] - cr[4 * c], (int)c, y, part);
      } else { /* H*W == 1: the position is the channel, the in-plane position 0 */
        static const int32_t zero = 0;
        for (int64_t e = off; e < off + k->v.img_cnt[n]; e++) {
          int c = pos_get(pos, pb, e);
          if (c >= c_lo && c < c_hi) entries_generic(p, &zero, 4, k->v.val + e, 1, c, y, part);
        }
      }
    }
  }
}

/* dW[k][c][r][s] = sum over image groups of part[c][r][s][k], channels split over workers; db. */
static void conv_reduce(void *arg, int t, int T) {
  conv_ctx *k = arg;
  const spwgrad_plan *p = k->p;
  const conv_desc *d = &p->d;
  int64_t c_lo, c_hi;
  kern_split(d->C, t, T, &c_lo, &c_hi);
  int RS = d->R * d->S;
  for (int64_t c = c_lo; c < c_hi; c++)
    for (int rs = 0; rs < RS; rs++) {
      const float *src = k->parts + ((size_t)c * RS + rs) * p->Kp;
      float *dst = k->dw + (size_t)c * RS + rs;
      for (int kk = 0; kk < d->K; kk++) {
        float s = src[kk];
        for (int g = 1; g < p->Tn; g++) s += src[(size_t)g * p->part_floats + kk];
        dst[(size_t)kk * d->C * RS] = s;
      }
    }
  if (k->db) {
    int64_t k_lo, k_hi;
    kern_split(d->K, t, T, &k_lo, &k_hi);
    for (int64_t kk = k_lo; kk < k_hi; kk++) {
      double s = 0;
      for (int n = 0; n < d->N; n++) s += k->dbpart[(size_t)n * d->K + kk];
      k->db[kk] = (float)s;
    }
  }
}

void spwgrad_conv(const spwgrad_plan *p, const void *xs_packed, const float *dy, float *dw, float *db,
                  void *scratch) {
  const conv_desc *d = &p->d;
  conv_ctx k;
  k.p = p;
  k.v = spact_map(xs_packed);
  SW_ASSERT(k.v.h->N == d->N && k.v.h->C == d->C && k.v.h->H == d->H && k.v.h->W == d->W);
  SW_ASSERT(((uintptr_t)scratch & (KERN_ALIGN - 1)) == 0);
  /* X_s holds every class the weight gradient reads */
  unsigned need = p->classes ? p->classes : SPACT_ALL_CLASSES;
  SW_ASSERT(!k.v.h->classes || (need & ~(unsigned)k.v.h->classes) == 0);
  k.dy = dy, k.dw = dw, k.db = db;
  k.parts = scratch;
  k.ycl = k.parts + p->part_floats * (size_t)p->Tn;
  k.dbpart = (double *)(k.ycl + p->ycl_floats * (size_t)p->nthreads);
  kern_parallel2(p->nthreads, conv_worker, conv_reduce, &k);
}

/* ---- Gemm ---------------------------------------------------------------------------------------- */

int spwgrad_gemm_plan_init(spwgrad_gemm_plan *p, const gemm_desc *d, int nthreads, sw_err *e) {
  memset(p, 0, sizeof *p);
  int rc = gemm_desc_check(d, e);
  if (rc) return rc;
  p->d = *d;
  p->nthreads = kern_threads_clamp(nthreads);
  p->fast = kern_cpu_avx512();
  p->Np = kern_cdiv(d->N, 16) * 16;
  p->scratch = kern_align_up(sizeof(float) * (size_t)d->K * p->Np);
  return SW_OK;
}

void spwgrad_gemm_plan_free(spwgrad_gemm_plan *p) { memset(p, 0, sizeof *p); }

size_t spwgrad_gemm_plan_scratch(const spwgrad_gemm_plan *p) { return p->scratch; }

typedef struct gemm_ctx {
  const spwgrad_gemm_plan *p;
  spact_view v;
  const float *dy;
  float *dw, *db, *dwt;
} gemm_ctx;

/* Feature index of entry e of a run whose positions are pos (uint16 when pos16, else int32) plus base. */
#define GEMM_POS(e) (base + (pos16 ? (int64_t)pos16[e] : (int64_t)pos32[e]))

#ifdef SPW_X86
/* dwt[base + pos][b*16..] += val * dy[b*16..] for blocks [b_lo, b_hi) of the n entries of one run
 * (one row of X_s, or one channel of it); exactly one of pos16 / pos32 is set. */
static inline __attribute__((always_inline)) SPW_TARGET void gemm_run_avx_t(const uint16_t *pos16,
                                                                           const int32_t *pos32, int64_t base,
                                                                           const float *val, int64_t n,
                                                                           const float *dyr, int N, int Np, int b_lo,
                                                                           int b_hi, float *dwt) {
  __m512 dv[64];
  int nb = b_hi - b_lo;
  if (nb > 64) { /* very wide layers: no register copy of the dY row */
    for (int64_t e = 0; e < n; e++) {
      __m512 xv = _mm512_set1_ps(val[e]);
      float *dst = dwt + (size_t)GEMM_POS(e) * Np;
      for (int b = b_lo; b < b_hi; b++) {
        __m512 y = _mm512_maskz_loadu_ps(tail_mask(N - 16 * b), dyr + 16 * b);
        _mm512_store_ps(dst + 16 * b, _mm512_fmadd_ps(xv, y, _mm512_load_ps(dst + 16 * b)));
      }
    }
    return;
  }
  for (int b = 0; b < nb; b++) dv[b] = _mm512_maskz_loadu_ps(tail_mask(N - 16 * (b_lo + b)), dyr + 16 * (b_lo + b));
  for (int64_t e = 0; e < n; e++) {
    __m512 xv = _mm512_set1_ps(val[e]);
    float *dst = dwt + (size_t)GEMM_POS(e) * Np + 16 * b_lo;
    for (int b = 0; b < nb; b++) _mm512_store_ps(dst + 16 * b, _mm512_fmadd_ps(xv, dv[b], _mm512_load_ps(dst + 16 * b)));
  }
}

static SPW_TARGET void gemm_run_avx(const void *pos, int pb, int64_t base, const float *val, int64_t n, const float *dyr,
                                    int N, int Np, int b_lo, int b_hi, float *dwt) {
  if (pb == 2) gemm_run_avx_t(pos, NULL, base, val, n, dyr, N, Np, b_lo, b_hi, dwt);
  else gemm_run_avx_t(NULL, pos, base, val, n, dyr, N, Np, b_lo, b_hi, dwt);
}
#endif

/* gemm_run_avx in plain C: output features [o_lo, o_hi). */
static void gemm_run_c(const void *pos, int pb, int64_t base, const float *val, int64_t n, const float *dyr, int Np,
                       int o_lo, int o_hi, float *dwt) {
  const uint16_t *pos16 = pb == 2 ? pos : NULL;
  const int32_t *pos32 = pb == 2 ? NULL : pos;
  for (int64_t e = 0; e < n; e++) {
    float x = val[e], *dst = dwt + (size_t)GEMM_POS(e) * Np;
    for (int o = o_lo; o < o_hi; o++) dst[o] += x * dyr[o];
  }
}

static void gemm_worker(void *arg, int t, int T) {
  gemm_ctx *k = arg;
  const spwgrad_gemm_plan *p = k->p;
  const gemm_desc *d = &p->d;
  int64_t b_lo, b_hi;
  kern_split(p->Np / 16, t, T, &b_lo, &b_hi);
  if (b_lo == b_hi) return;
  for (int i = 0; i < d->K; i++)
    memset(k->dwt + (size_t)i * p->Np + 16 * b_lo, 0, sizeof(float) * 16 * (size_t)(b_hi - b_lo));
  /* Runs of entries with one base: the whole row (H*W == 1: the position is the feature), or each
   * channel c of the row (feature c*H*W + in-plane position; the channel's four class runs are one). */
  int pb = k->v.h->pbytes, ncls = k->v.h->ncls, nrun = ncls ? k->v.h->C : 1;
  int64_t HW = (int64_t)k->v.h->H * k->v.h->W;
  int o_lo = 16 * (int)b_lo, o_hi = 16 * (int)b_hi < d->N ? 16 * (int)b_hi : d->N;
  for (int m = 0; m < d->M; m++) {
    const float *dyr = k->dy + (size_t)m * d->N;
    const uint32_t *cr = ncls ? k->v.cls + (size_t)m * ncls : NULL;
    for (int c = 0; c < nrun; c++) {
      int64_t lo = k->v.img_off[m] + (cr ? cr[4 * c] : 0);
      int64_t n = cr ? cr[4 * c + 4] - cr[4 * c] : k->v.img_cnt[m];
      const void *pos = (const char *)k->v.pos + (size_t)lo * pb;
      const float *val = k->v.val + lo;
      int64_t base = c * HW;
      if (!n) continue;
#ifdef SPW_X86
      if (p->fast) {
        gemm_run_avx(pos, pb, base, val, n, dyr, d->N, p->Np, (int)b_lo, (int)b_hi, k->dwt);
        continue;
      }
#endif
      gemm_run_c(pos, pb, base, val, n, dyr, p->Np, o_lo, o_hi, k->dwt);
    }
  }
  for (int64_t b = b_lo; b < b_hi; b++) {
    int o0 = 16 * (int)b, no = d->N - o0 < 16 ? d->N - o0 : 16;
    for (int i0 = 0; i0 < d->K; i0 += 16) {
      int ni = d->K - i0 < 16 ? d->K - i0 : 16;
      kern_transpose16(k->dwt + (size_t)i0 * p->Np + o0, p->Np, ni, k->dw + (size_t)o0 * d->K + i0, d->K, no, ni,
                       NULL);
    }
    if (k->db)
      for (int o = o0; o < o0 + no; o++) {
        double s = 0;
        for (int m = 0; m < d->M; m++) s += k->dy[(size_t)m * d->N + o];
        k->db[o] = (float)s;
      }
  }
}

void spwgrad_gemm(const spwgrad_gemm_plan *p, const void *xs_packed, const float *dy, float *dw, float *db,
                  void *scratch) {
  gemm_ctx k;
  k.p = p;
  k.v = spact_map(xs_packed);
  SW_ASSERT(k.v.h->N == p->d.M && (int64_t)k.v.h->C * k.v.h->H * k.v.h->W == p->d.K);
  SW_ASSERT(((uintptr_t)scratch & (KERN_ALIGN - 1)) == 0);
  k.dy = dy, k.dw = dw, k.db = db, k.dwt = scratch;
  /* Each dW entry is owned by one worker whatever their number, so the count may follow the work. */
  int64_t work = (spact_nnz(xs_packed) + p->d.K) * (p->Np / 16);
  int T = p->nthreads;
  if (work < (int64_t)T * SPW_GEMM_MIN_PER_THREAD) T = (int)(work / SPW_GEMM_MIN_PER_THREAD) > 1 ? (int)(work / SPW_GEMM_MIN_PER_THREAD) : 1;
  kern_parallel(T, gemm_worker, &k);
}

/* ---- cost model ------------------------------------------------------------------------------------
 * Calibrated on bench_spwgrad and single-thread CPU-time probes (Zen 5, batch 128, machine shared
 * with other jobs, so +-30%). Sparse conv: a fixed part (transposing dY: 0.064 ns per byte, 25 ns
 * per (image, channel) plane of bookkeeping) plus 0.4 ns per 16-wide FMA over the kept entries
 * (x4 on the generic path); it scales ~T^0.9 (image split, partly memory-bound). Dense brgemm /
 * im2col weight gradient per thread: 110 GFLOP/s (3x3, C >= 16), 75 (strided), 45 (C < 16, im2col),
 * 25 (1x1, transform-bound); it scales ~T^0.6 (README: 1.3-1.6x on two threads). Gemm: 0.88 ns per
 * 16-wide update, 3 us + 0.3 ns per dW^T float fixed; dense 150 GFLOP/s per thread + 2 us. */

static double clamp01(double x) { return x < 0 ? 0 : x > 1 ? 1 : x; }

double spwgrad_plan_crossover(const spwgrad_plan *p) {
  const conv_desc *d = &p->d;
  double T = p->nthreads, numel = (double)d->N * d->C * d->H * d->W;
  double taps = 0; /* mean number of taps an entry runs (border taps included: they cost too) */
  if (p->fast) {
    for (int a = 0; a < 2; a++)
      for (int b = 0; b < 2; b++) {
        double wa = a ? d->H / 2 : (d->H + 1) / 2, wb = b ? d->W / 2 : (d->W + 1) / 2;
        taps += wa * wb * p->nr[a] * p->ns[b];
      }
    taps /= (double)d->H * d->W;
  } else {
    taps = 4.0 * d->R * d->S / ((double)d->stride_h * d->stride_w);
  }
  double ts = pow(T, 0.9);
  double fixed = (4.0 * d->N * d->K * d->P * d->Q * 0.064e-9 + (double)d->N * d->C * 25e-9) / ts;
  double slope = numel * taps * p->Kb * 0.4e-9 / ts;
  double rate = d->C < 16 ? 45e9 : d->R * d->S == 1 ? 25e9 : (d->stride_h > 1 || d->stride_w > 1) ? 75e9 : 110e9;
  double dense = conv_desc_flops(d) / (rate * pow(T, 0.6));
  return slope > 0 ? clamp01((dense - fixed) / slope) : 1.0;
}

double spwgrad_gemm_plan_crossover(const spwgrad_gemm_plan *p) {
  const gemm_desc *d = &p->d;
  double T = p->nthreads, nb = p->Np / 16;
  double fixed = 3e-6 + (double)d->K * p->Np * 0.3e-9 / T;
  double slope = (double)d->M * d->K * nb * 0.88e-9 / T;
  double dense = 2e-6 + gemm_desc_flops(d) / (150e9 * pow(T, 0.6));
  return clamp01((dense - fixed) / slope);
}
