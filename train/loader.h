/* Epoch iterator over an in-memory dataset: per-epoch shuffle, batching into caller buffers, and
 * on-the-fly augmentation (random crop with zero padding + horizontal flip). The dataset holds 8-bit
 * pixels; the batch is normalised here, through the dataset's lut, as it is assembled.
 *
 * Everything random is a pure function of (seed, epoch, position): the permutation of epoch e is a
 * Fisher-Yates shuffle driven by sw_rng_seed_stream(seed, e), and the augmentation of the sample at
 * position p of epoch e uses its own generator seeded from (seed, e, p). So the cursor
 * {seed, epoch, pos} is the loader's whole state: saving it and seeking to it in a new process
 * reproduces the same batches, and the result does not depend on the OpenMP thread count. */
#ifndef SWATC_TRAIN_LOADER_H
#define SWATC_TRAIN_LOADER_H

#include <stdint.h>

#include "train/dataset.h"
#include "util/err.h"

enum {
  SW_AUG_CROP = 1 << 0, /* random crop of the original size from the image padded by `pad` */
  SW_AUG_FLIP = 1 << 1, /* horizontal flip with probability 1/2 */
};

typedef struct sw_loader_opts {
  int64_t batch; /* samples per batch (> 0) */
  int shuffle;   /* 1: new permutation every epoch; 0: dataset order */
  int drop_last; /* 1: skip the last batch if it is smaller than `batch` */
  int augment;   /* SW_AUG_* flags; 0 for evaluation */
  int pad;       /* padding for SW_AUG_CROP (4 for CIFAR); 0 = 4 */
  uint64_t seed; /* permutation and augmentation seed */
} sw_loader_opts;

/* The loader's resumable state (what a checkpoint stores). */
typedef struct sw_loader_cursor {
  uint64_t seed; /* permutation/augmentation seed */
  int64_t epoch; /* current epoch, from 0 */
  int64_t pos;   /* samples of this epoch already handed out */
  int64_t n;     /* dataset size the cursor belongs to (checked on seek) */
} sw_loader_cursor;

typedef struct sw_loader {
  const sw_dataset *ds; /* borrowed; must outlive the loader */
  sw_loader_opts o;
  sw_loader_cursor cur;
  int64_t *perm;      /* [n] order of the current epoch */
  int64_t perm_epoch; /* epoch perm was built for; -1 = none */
} sw_loader;

/* Initialises l over ds at epoch 0, position 0; checks the options against the dataset. */
int sw_loader_init(sw_loader *l, const sw_dataset *ds, const sw_loader_opts *o, sw_err *e);
/* Releases l's permutation. */
void sw_loader_free(sw_loader *l);
/* Returns the number of batches one epoch yields (honouring drop_last). */
int64_t sw_loader_batches_per_epoch(const sw_loader *l);
/* Fills images [B,C,H,W] (normalised float32) and labels [B] with the next batch of the current epoch and returns its
 * size B (the last one may be short unless drop_last); returns 0 when the epoch is exhausted, in
 * which case the cursor stays put until sw_loader_next_epoch. */
int64_t sw_loader_next(sw_loader *l, float *images, int64_t *labels);
/* Moves the cursor to the start of the next epoch. */
void sw_loader_next_epoch(sw_loader *l);
/* Returns the current cursor (to store in a checkpoint). */
sw_loader_cursor sw_loader_tell(const sw_loader *l);
/* Restores a cursor saved by sw_loader_tell; fails if it does not fit this dataset. */
int sw_loader_seek(sw_loader *l, const sw_loader_cursor *c, sw_err *e);
/* Writes the order of epoch `epoch` for n samples under `seed` into perm[0..n). */
void sw_loader_permutation(uint64_t seed, int64_t epoch, int64_t n, int64_t *perm);
/* Normalises one c x h x w image of 8-bit pixels through lut[c][pixel] into dst, cropped by
 * (dy, dx) in [0, 2*pad] from the image padded with fill[c] on every side, and mirrored left-right
 * if flip. */
void sw_loader_augment_image(const uint8_t *src, const float (*lut)[256], float *dst, int c, int h, int w,
                             int pad, int dy, int dx, int flip, const float *fill);

#endif
