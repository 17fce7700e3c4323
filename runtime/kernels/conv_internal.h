/* Private entry points of the convolution kernels, used by conv_plan.c. */
#ifndef SWATC_RUNTIME_KERNELS_CONV_INTERNAL_H
#define SWATC_RUNTIME_KERNELS_CONV_INTERNAL_H

#include "runtime/kernels/conv.h"

/* libxsmm batch-reduce GEMM kernels on channel-blocked layouts (conv_brgemm.c). */
int conv_brgemm_init(conv_plan *p, sw_err *e);
void conv_brgemm_free(conv_plan *p);
void conv_brgemm_fwd(const conv_plan *p, const float *x, const float *w, const float *b, float *y, void *scratch);
void conv_brgemm_bwd_data(const conv_plan *p, const float *dy, const float *w, float *dx, void *scratch);
void conv_brgemm_bwd_weight(const conv_plan *p, const float *x, const float *dy, float *dw, float *db,
                            void *scratch);

/* Backward passes through im2col/col2im GEMMs for few input channels per group (conv_col.c):
 * init dispatches the kernels and sets the bwd-data and bwd-weight scratch sizes. */
int conv_col_init(conv_plan *p, sw_err *e);
void conv_col_bwd_data(const conv_plan *p, const float *dy, const float *w, float *dx, void *scratch);
void conv_col_bwd_weight(const conv_plan *p, const float *x, const float *dy, float *dw, float *db, void *scratch);

/* Stage timers of the brgemm kernels, for the benchmark: when enabled, every execute adds the
 * seconds spent in layout transforms (pack = into blocked scratch, unpack = back to NCHW, with
 * the weight-gradient partial reduction) and in the GEMMs. Not thread-safe; off by default. */
typedef struct conv_prof {
  int enabled;
  double pack, gemm, unpack;
} conv_prof;
extern conv_prof conv_brgemm_prof;

/* Vectorised direct loops for one input channel per group (conv_direct.c); the scratch (the same
 * size for every pass) holds one padded plane per thread. */
size_t conv_direct_scratch(const conv_desc *d, int nthreads);
/* Tests: 1 runs the direct kernel's plain C loops even where AVX-512 is there; 0 (default): the best. */
void conv_direct_use_portable(int on);
void conv_direct_fwd(const conv_plan *p, const float *x, const float *w, const float *b, float *y, void *scratch);
void conv_direct_bwd_data(const conv_plan *p, const float *dy, const float *w, float *dx, void *scratch);
void conv_direct_bwd_weight(const conv_plan *p, const float *x, const float *dy, float *dw, float *db,
                            void *scratch);

/* db[k] = sum of dy over n, p, q, in a fixed order, threads split over k (shared by the kernels). */
void conv_bias_grad(const conv_desc *d, const float *dy, float *db, int nthreads);

#endif
