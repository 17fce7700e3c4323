/* Magnitude Top-K for SWAT: the k-th largest |x| of a whole tensor, found exactly in O(n) by radix
 * selection over the bit patterns of |x| (no sort), threaded with per-thread histograms (integer
 * counts: the result does not depend on the thread count). Two reads of x: a histogram of the top 11
 * bits, then the keys in the bucket holding the k-th largest (a small fraction) are copied to scratch
 * and the remaining passes run on that list (a bucket too large for the scratch takes another full
 * pass first; when the k-th largest is a zero, which the first pass's count of zeros tells, e.g. more
 * kept than a post-ReLU tensor has nonzeros, the answer is 0 at once); and the masking y = |x| >= thr ? x : 0
 * (ties at the threshold are kept). Structured variants score groups of `group` consecutive elements
 * by their L1 norm (a Conv kernel kh*kw, or a whole filter) and keep whole groups. */
#ifndef SWATC_RUNTIME_KERNELS_TOPK_H
#define SWATC_RUNTIME_KERNELS_TOPK_H

#include <stdint.h>

/* Scratch bytes topk_threshold needs for nthreads threads. */
size_t topk_scratch(int nthreads);
/* The k-th largest of |x[0..n)| (1 <= k <= n); NaN counts as 0. */
float topk_threshold(const float *x, int64_t n, int64_t k, void *scratch, int nthreads);
/* topk_threshold in portable C only (what runs on CPUs without AVX-512; exposed for tests). */
float topk_threshold_c(const float *x, int64_t n, int64_t k, void *scratch, int nthreads);
/* y[i] = |x[i]| >= thr ? x[i] : 0 (x and y may be the same); returns the number of nonzero y. */
int64_t topk_apply(const float *x, float *y, int64_t n, float thr, int nthreads);
/* scores[j] = sum of |x| over group j (n / group groups of `group` consecutive elements). */
void topk_group_scores(const float *x, int64_t n, int64_t group, float *scores, int nthreads);
/* y = x where the group's score >= thr, else 0; returns the number of nonzero y. */
int64_t topk_apply_groups(const float *x, float *y, int64_t n, int64_t group, const float *scores, float thr, int nthreads);
/* Reference: the k-th largest |x| by sorting a copy (for tests). */
float topk_threshold_ref(const float *x, int64_t n, int64_t k);

#endif
