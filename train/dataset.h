/* In-memory image-classification datasets: IDX (MNIST, Fashion-MNIST and anything else in that
 * format), CIFAR-10 binary, and seeded synthetic data.
 *
 * Every loader holds the split in memory as its 8-bit pixels (a quarter of the float32 size:
 * Fashion-MNIST's 70000 images take 55 MB instead of 220 MB); an IDX image file streams through,
 * keeping only the images under the limit while still checking all of it. The pixels are
 * normalised only when a sample is read out (sw_dataset_get, or the loader assembling a batch):
 *     x = (pixel * scale - mean[c]) / std[c],   scale = 1/255
 * through the table lut[c][pixel], computed once with exactly those float operations, so a sample
 * read out is bit-identical to normalising the pixel in place. The normalisation is kept in the
 * struct so the exporter can record it next to the model.
 * Files may be plain or gzip-compressed (read through zlib); every malformed input (missing file,
 * wrong magic, wrong counts or dims, truncated or corrupt gzip, labels out of range, trailing data)
 * returns SW_EINPUT with a message naming the file and a hint. */
#ifndef SWATC_TRAIN_DATASET_H
#define SWATC_TRAIN_DATASET_H

#include <stdint.h>

#include "util/err.h"

#define SW_DATASET_MAX_C 4 /* most channels a dataset may have (per-channel mean/std slots) */

/* The Debian package dataset-fashion-mnist installs here. */
#define SW_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

typedef struct sw_dataset {
  char name[64];                /* "fashion-mnist", "mnist", "idx", "cifar10", "synthetic" */
  char split[8];                /* "train" or "test" */
  char source[1024];            /* directory the files came from ("" for synthetic) */
  int64_t n;                    /* number of samples */
  int c, h, w;                  /* image shape; one sample is c*h*w values */
  int num_classes;              /* labels are in [0, num_classes) */
  uint8_t *pixels;              /* [n, c, h, w] raw 8-bit pixels (normalised on read-out via lut) */
  int64_t *labels;              /* [n] */
  float scale;                  /* pixel scale before mean/std (1/255) */
  float mean[SW_DATASET_MAX_C]; /* per-channel mean subtracted after scaling */
  float std[SW_DATASET_MAX_C];  /* per-channel std divided by after subtracting the mean */
  float lut[SW_DATASET_MAX_C][256]; /* [c][pixel] = (pixel * scale - mean[c]) / std[c] */
  int simd; /* 1: sw_dataset_normalise may compute instead of looking up (set by sw_dataset_set_lut) */
} sw_dataset;

/* How to load: which directory, which subsets, optional normalisation and the synthetic shape. */
typedef struct sw_dataset_opts {
  const char *dir;     /* data directory; NULL = the dataset's standard location */
  int64_t train_limit; /* keep the first N training samples; 0 = all */
  int64_t test_limit;  /* keep the first N test samples; 0 = all */
  int num_classes;     /* IDX only: number of classes; 0 = 10 (or max label + 1 for "idx") */
  int norm_channels;   /* >0: use mean/std below (that many channels) instead of defaults */
  float mean[SW_DATASET_MAX_C];
  float std[SW_DATASET_MAX_C];
  /* synthetic only */
  int syn_c, syn_h, syn_w; /* image shape (default 1x28x28) */
  int syn_classes;         /* default 10 */
  int64_t syn_train;       /* default 1024 */
  int64_t syn_test;        /* default 256 */
  uint64_t seed;           /* synthetic content seed */
} sw_dataset_opts;

/* Loads the train and test splits of dataset `name` ("fashion-mnist", "mnist", "idx", "cifar10",
 * "synthetic", or a directory path whose format is detected) into train and test. On failure both
 * are left empty and e says why. */
int sw_dataset_load(const char *name, const sw_dataset_opts *o, sw_dataset *train, sw_dataset *test,
                    sw_err *e);

/* Loads only the test split of dataset `name`, as sw_dataset_load would load it: the training split is
 * not read, except for generic IDX data ("idx" or a directory of IDX files), whose test split takes its
 * classes and normalisation from it (it is then freed). On failure test is left empty. */
int sw_dataset_load_test(const char *name, const sw_dataset_opts *o, sw_dataset *test, sw_err *e);

/* Loads one split ("train" or "test") of an IDX dataset from dir; name labels the result and picks
 * the default normalisation: MNIST's or Fashion-MNIST's for those names, otherwise the mean and std
 * of this split's pixels (sw_dataset_load passes the training split's to the test split). */
int sw_dataset_load_idx(const char *dir, const char *split, const char *name, const sw_dataset_opts *o,
                        sw_dataset *d, sw_err *e);

/* Loads one split ("train": data_batch_1..5.bin, "test": test_batch.bin) of CIFAR-10 binary from
 * dir (or dir/cifar-10-batches-bin). */
int sw_dataset_load_cifar10(const char *dir, const char *split, const sw_dataset_opts *o, sw_dataset *d,
                            sw_err *e);

/* Makes a synthetic split: uniform random pixels and uniform random labels, a pure function of
 * (seed, split, shape, n), independent of the thread count; normalised with mean 0.5, std 0.2887
 * (the uniform distribution's), so the values are roughly zero-mean, unit-variance. */
int sw_dataset_synthetic(const char *split, const sw_dataset_opts *o, sw_dataset *d, sw_err *e);

/* Recomputes d->lut from d->scale, d->mean and d->std (the loaders do this; call it after setting
 * them by hand), and d->simd: whether this CPU's vector path reproduces every table entry exactly. */
void sw_dataset_set_lut(sw_dataset *d);

/* Normalises n pixels of channel c (src) into dst: dst[k] = d->lut[c][src[k]], computed 16 at a
 * time with AVX-512 when d->simd (IEEE multiply, subtract, divide: the same bits as the table). */
void sw_dataset_normalise(const sw_dataset *d, int c, const uint8_t *src, int64_t n, float *dst);

/* Writes samples [first, first + count) of d, normalised, into dst [count, c, h, w] (float32). */
void sw_dataset_get(const sw_dataset *d, int64_t first, int64_t count, float *dst);

/* Releases d's arrays and zeroes it (safe on a zeroed or already freed dataset). */
void sw_dataset_free(sw_dataset *d);

/* Checks that d's samples fit a model input of shape [C,H,W] or [N,C,H,W] (N and any dim <= 0
 * are free); input_name names the model input in the message. */
int sw_dataset_check_input(const sw_dataset *d, const int64_t *shape, int rank, const char *input_name,
                           sw_err *e);

/* Checks that a model with num_outputs class scores can be trained on d's labels. */
int sw_dataset_check_classes(const sw_dataset *d, int64_t num_outputs, sw_err *e);

/* Counts labels: counts[k] = number of samples with label k, for k < d->num_classes. */
void sw_dataset_label_counts(const sw_dataset *d, int64_t *counts);

/* Returns the number of values in one sample (c*h*w): pixels stored, floats read out. */
int64_t sw_dataset_sample_size(const sw_dataset *d);

#endif
