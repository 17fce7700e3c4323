/* SWAT Top-K semantics: the kernels (exact k-th largest by radix selection vs sorting; ties kept;
 * all-zero and post-ReLU tensors; groups) and the runtime node (k = ceil((1-s) n), whole-tensor
 * scope, threshold reuse between exact recomputes, P = 1, warm-up). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/kernels/topk.h"
#include "tests/check.h"

static uint64_t rs = 88172645463325252ull;
static float frand(void) {
  rs ^= rs << 13;
  rs ^= rs >> 7;
  rs ^= rs << 17;
  return (float)((rs >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

int main(void) {
  void *scratch = malloc(topk_scratch(4));
  /* exact selection vs sort, many sizes and k, 1 and 2 threads */
  for (int trial = 0; trial < 200; trial++) {
    int64_t n = 1 + (int64_t)(fabsf(frand()) * 5000);
    float *x = malloc(sizeof *x * (size_t)n);
    for (int64_t i = 0; i < n; i++) x[i] = frand() * (trial % 3 ? 1.0f : 1e-30f);
    if (trial % 7 == 0)
      for (int64_t i = 0; i < n; i += 2) x[i] = 0.25f; /* many ties */
    int64_t k = 1 + (int64_t)(fabsf(frand()) * (float)(n - 1));
    float want = topk_threshold_ref(x, n, k);
    for (int t = 1; t <= 2; t++) {
      float got = topk_threshold(x, n, k, scratch, t);
      CHECK(got == want, "n=%lld k=%lld threads=%d: got %g want %g", (long long)n, (long long)k, t, (double)got, (double)want);
    }
    /* ties kept: at least k survive, and every survivor is >= every dropped element */
    float *y = malloc(sizeof *y * (size_t)n);
    int64_t nnz = topk_apply(x, y, n, want, 2), kept = 0;
    for (int64_t i = 0; i < n; i++) kept += fabsf(x[i]) >= want;
    CHECK(kept >= k, "kept %lld < k %lld", (long long)kept, (long long)k);
    for (int64_t i = 0; i < n; i++) CHECK(y[i] == (fabsf(x[i]) >= want ? x[i] : 0.0f), "mask at %lld", (long long)i);
    int64_t nz = 0;
    for (int64_t i = 0; i < n; i++) nz += y[i] != 0;
    CHECK(nnz == nz, "nnz %lld vs %lld", (long long)nnz, (long long)nz);
    free(x);
    free(y);
  }
  /* exact k with ceil: 10 distinct values, s = 0.75 -> k = ceil(2.5) = 3 survive */
  float v[10] = {0.1f, -0.9f, 0.3f, 0.7f, -0.2f, 0.5f, 0.05f, -0.6f, 0.4f, 0.8f}, out[10];
  float thr = topk_threshold(v, 10, (int64_t)ceil((1 - 0.75) * 10), scratch, 1);
  CHECK(thr == 0.7f, "threshold %g", (double)thr);
  CHECK(topk_apply(v, out, 10, thr, 1) == 3, "3 survivors");
  /* a post-ReLU tensor with fewer nonzeros than k stays as it is */
  float r[8] = {0, 0, 0.5f, 0, 0, 0.25f, 0, 0}, ro[8];
  thr = topk_threshold(r, 8, 4, scratch, 1);
  CHECK(thr == 0.0f, "threshold of a sparse tensor %g", (double)thr);
  CHECK(topk_apply(r, ro, 8, thr, 1) == 2 && !memcmp(r, ro, sizeof r), "post-ReLU tensor unchanged");
  /* all zeros */
  float z[5] = {0}, zo[5];
  CHECK(topk_threshold(z, 5, 2, scratch, 2) == 0.0f && topk_apply(z, zo, 5, 0.0f, 2) == 0, "all zeros");
  /* groups: 4 kernels of 2, keep the 2 with the largest L1 */
  float gx[8] = {1, 1, 0.1f, 0.1f, -3, 0, 0.5f, 0.6f}, sc[4], go[8];
  topk_group_scores(gx, 8, 2, sc, 1);
  float gt = topk_threshold(sc, 4, 2, scratch, 1);
  CHECK(gt == 2.0f, "group threshold %g", (double)gt);
  CHECK(topk_apply_groups(gx, go, 8, 2, sc, gt, 1) == 3, "group survivors");
  CHECK(go[0] == 1 && go[1] == 1 && go[2] == 0 && go[3] == 0 && go[4] == -3 && go[5] == 0 && go[6] == 0 && go[7] == 0, "group mask");
  free(scratch);
  return check_report("test_topk");
}
