#include "train/loader.h"

#include <string.h>

#include "train/rng.h"

/* Batches of fewer floats than this are assembled by one thread: a CIFAR batch of 128 takes ~0.6 ms
 * serially (~200k img/s, far above any training step), and fork/join on 2 busy cores cost more than
 * it saved (measured 26k-100k img/s with 2 threads). */
#define SW_LOADER_PAR_MIN ((int64_t)1 << 22)
#define AUG_TAG 0x6175676d656e74ull /* "augment": keeps augmentation streams apart from shuffles */

void sw_loader_permutation(uint64_t seed, int64_t epoch, int64_t n, int64_t *perm) {
  for (int64_t i = 0; i < n; i++) perm[i] = i;
  sw_rng r;
  sw_rng_seed_stream(&r, seed, (uint64_t)epoch);
  for (int64_t i = n - 1; i > 0; i--) {
    int64_t j = (int64_t)sw_rng_below(&r, (uint64_t)i + 1);
    int64_t t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
}

void sw_loader_augment_image(const uint8_t *src, const float (*lut)[256], float *dst, int c, int h, int w,
                             int pad, int dy, int dx, int flip, const float *fill) {
  /* Output pixel (y, x) reads padded (y + dy, x + dx) = source (y + dy - pad, x + dx - pad). */
  int oy = dy - pad, ox = dx - pad;
  for (int ch = 0; ch < c; ch++) {
    const uint8_t *s = src + (int64_t)ch * h * w;
    const float *l = lut[ch];
    float *t = dst + (int64_t)ch * h * w;
    for (int y = 0; y < h; y++) {
      int sy = y + oy;
      float *row = t + (int64_t)y * w;
      if (sy < 0 || sy >= h) {
        for (int x = 0; x < w; x++) row[x] = fill[ch];
        continue;
      }
      const uint8_t *srow = s + (int64_t)sy * w;
      for (int x = 0; x < w; x++) {
        int sx = (flip ? w - 1 - x : x) + ox;
        row[x] = sx >= 0 && sx < w ? l[srow[sx]] : fill[ch];
      }
    }
  }
}

int sw_loader_init(sw_loader *l, const sw_dataset *ds, const sw_loader_opts *o, sw_err *e) {
  memset(l, 0, sizeof *l);
  if (ds->n <= 0 || !ds->pixels || !ds->labels)
    return sw_fail(e, SW_EINPUT, "dataset %s %s is empty", ds->name, ds->split);
  if (o->batch <= 0) {
    sw_fail(e, SW_EINPUT, "batch size %lld is not positive", (long long)o->batch);
    return sw_hint(e, "use a batch size of at least 1");
  }
  if (o->drop_last && o->batch > ds->n) {
    sw_fail(e, SW_EINPUT, "batch size %lld exceeds the %lld samples of %s %s, so dropping the last " "partial batch leaves no batch at all", (long long)o->batch, (long long)ds->n, ds->name, ds->split);
    return sw_hint(e, "use a smaller batch, more data, or keep the last partial batch");
  }
  if (o->augment & ~(SW_AUG_CROP | SW_AUG_FLIP))
    return sw_fail(e, SW_EINPUT, "unknown augmentation flags 0x%x", o->augment);
  int pad = o->pad ? o->pad : 4;
  if ((o->augment & SW_AUG_CROP) && (pad < 0 || pad > ds->h || pad > ds->w))
    return sw_fail(e, SW_EINPUT, "crop padding %d does not fit %dx%d images", pad, ds->h, ds->w);
  l->ds = ds;
  l->o = *o;
  l->o.pad = pad;
  l->cur = (sw_loader_cursor){.seed = o->seed, .epoch = 0, .pos = 0, .n = ds->n};
  l->perm = o->shuffle ? sw_xmalloc((size_t)ds->n * sizeof *l->perm) : NULL;
  l->perm_epoch = -1;
  return SW_OK;
}

void sw_loader_free(sw_loader *l) {
  free(l->perm);
  memset(l, 0, sizeof *l);
}

int64_t sw_loader_batches_per_epoch(const sw_loader *l) {
  int64_t n = l->ds->n, b = l->o.batch;
  return l->o.drop_last ? n / b : (n + b - 1) / b;
}

int64_t sw_loader_next(sw_loader *l, float *images, int64_t *labels) {
  const sw_dataset *ds = l->ds;
  int64_t n = ds->n, pos = l->cur.pos;
  int64_t b = n - pos < l->o.batch ? n - pos : l->o.batch;
  if (b <= 0 || (b < l->o.batch && l->o.drop_last)) return 0;
  if (l->o.shuffle && l->perm_epoch != l->cur.epoch) {
    sw_loader_permutation(l->cur.seed, l->cur.epoch, n, l->perm);
    l->perm_epoch = l->cur.epoch;
  }
  int64_t per = sw_dataset_sample_size(ds);
  int aug = l->o.augment, pad = l->o.pad, c = ds->c, h = ds->h, w = ds->w;
  float fill[SW_DATASET_MAX_C]; /* a black pixel after normalisation, as torchvision pads */
  for (int ch = 0; ch < c; ch++) fill[ch] = (0.0f - ds->mean[ch]) / ds->std[ch];
  uint64_t aug_seed = sw_rng_mix(l->cur.seed ^ AUG_TAG) ^ sw_rng_mix((uint64_t)l->cur.epoch);
  const int64_t *perm = l->perm;
#pragma omp parallel for schedule(static) if (b * per >= SW_LOADER_PAR_MIN)
  for (int64_t i = 0; i < b; i++) {
    int64_t src = perm ? perm[pos + i] : pos + i;
    const uint8_t *s = ds->pixels + src * per;
    float *t = images + i * per;
    labels[i] = ds->labels[src];
    if (!aug) {
      for (int ch = 0; ch < c; ch++)
        sw_dataset_normalise(ds, ch, s + (int64_t)ch * h * w, (int64_t)h * w, t + (int64_t)ch * h * w);
      continue;
    }
    sw_rng r;
    sw_rng_seed_stream(&r, aug_seed, (uint64_t)(pos + i));
    int dy = pad, dx = pad, flip = 0;
    if (aug & SW_AUG_CROP) {
      dy = (int)sw_rng_below(&r, (uint64_t)(2 * pad + 1));
      dx = (int)sw_rng_below(&r, (uint64_t)(2 * pad + 1));
    }
    if (aug & SW_AUG_FLIP) flip = (int)(sw_rng_next(&r) >> 63);
    sw_loader_augment_image(s, ds->lut, t, c, h, w, pad, dy, dx, flip, fill);
  }
  l->cur.pos = pos + b;
  return b;
}

void sw_loader_next_epoch(sw_loader *l) {
  l->cur.epoch++;
  l->cur.pos = 0;
}

sw_loader_cursor sw_loader_tell(const sw_loader *l) { return l->cur; }

int sw_loader_seek(sw_loader *l, const sw_loader_cursor *c, sw_err *e) {
  if (c->n != l->ds->n) {
    sw_fail(e, SW_EINPUT, "saved data cursor is for %lld samples but %s %s has %lld", (long long)c->n, l->ds->name, l->ds->split, (long long)l->ds->n);
    return sw_hint(e, "resume with the same dataset and the same --limit options as the original run");
  }
  if (c->epoch < 0 || c->pos < 0 || c->pos > c->n)
    return sw_fail(e, SW_EINPUT, "saved data cursor is corrupt (epoch %lld, position %lld of %lld)",
                   (long long)c->epoch, (long long)c->pos, (long long)c->n);
  l->cur = *c;
  l->perm_epoch = -1;
  return SW_OK;
}
