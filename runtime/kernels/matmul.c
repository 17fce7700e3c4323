/* MatMul with numpy semantics: reference loops (forward and backward). */
#include <string.h>

#include "runtime/kernels/gemm.h"
#include "runtime/kernels/kern_internal.h"

/* The operands as batched matrices: a2 [..., M, K], b2 [..., K, N], batch = broadcast batch shape. */
typedef struct mm_geo {
  int64_t M, N, K, nbatch;
  kshape batch, abatch, bbatch;
  int64_t ast[KERN_MAX_DIMS], bst[KERN_MAX_DIMS]; /* batch strides in matrices, 0 when broadcast */
} mm_geo;

static int mm_geo_init(mm_geo *g, const kshape *a, const kshape *b, sw_err *e) {
  char sa[160], sb[160];
  memset(g, 0, sizeof *g);
  if (a->ndim < 1 || b->ndim < 1) {
    sw_fail(e, SW_EINPUT, "MatMul: operands must have at least one dimension (got %s and %s)",
            kshape_str(a, sa, sizeof sa), kshape_str(b, sb, sizeof sb));
    return SW_EINPUT;
  }
  g->M = a->ndim == 1 ? 1 : a->d[a->ndim - 2];
  g->K = a->d[a->ndim - 1];
  int64_t kb = b->ndim == 1 ? b->d[0] : b->d[b->ndim - 2];
  g->N = b->ndim == 1 ? 1 : b->d[b->ndim - 1];
  if (kb != g->K) {
    sw_fail(e, SW_EINPUT, "MatMul: inner dimensions differ: %s @ %s (%lld vs %lld)", kshape_str(a, sa, sizeof sa),
            kshape_str(b, sb, sizeof sb), (long long)g->K, (long long)kb);
    return SW_EINPUT;
  }
  g->abatch = kshape_make(a->ndim > 2 ? a->ndim - 2 : 0, a->d);
  g->bbatch = kshape_make(b->ndim > 2 ? b->ndim - 2 : 0, b->d);
  int rc = kshape_broadcast(&g->abatch, &g->bbatch, &g->batch, e);
  if (rc) return rc;
  g->nbatch = kshape_numel(&g->batch);
  kern_bcast_strides(&g->abatch, &g->batch, g->ast);
  kern_bcast_strides(&g->bbatch, &g->batch, g->bst);
  return SW_OK;
}

int matmul_shape(const kshape *a, const kshape *b, kshape *y, sw_err *e) {
  mm_geo g;
  int rc = mm_geo_init(&g, a, b, e);
  if (rc) return rc;
  kshape r = g.batch;
  if (r.ndim + 2 > KERN_MAX_DIMS) return sw_fail(e, SW_EINPUT, "MatMul: result has more than %d dimensions", KERN_MAX_DIMS);
  if (a->ndim > 1) r.d[r.ndim++] = g.M;
  if (b->ndim > 1) r.d[r.ndim++] = g.N;
  *y = r;
  return SW_OK;
}

void matmul_fwd_ref(const kshape *a, const float *A, const kshape *b, const float *B, float *Y) {
  mm_geo g;
  SW_ASSERT(mm_geo_init(&g, a, b, NULL) == SW_OK);
  for (int64_t bi = 0; bi < g.nbatch; bi++) {
    const float *Ab = A + kern_offset(&g.batch, g.ast, bi) * g.M * g.K;
    const float *Bb = B + kern_offset(&g.batch, g.bst, bi) * g.K * g.N;
    float *Yb = Y + bi * g.M * g.N;
    for (int64_t m = 0; m < g.M; m++)
      for (int64_t n = 0; n < g.N; n++) {
        double acc = 0.0;
        for (int64_t k = 0; k < g.K; k++) acc += (double)Ab[m * g.K + k] * Bb[k * g.N + n];
        Yb[m * g.N + n] = (float)acc;
      }
  }
}

void matmul_bwd_ref(const kshape *a, const float *A, const kshape *b, const float *B, const float *dY, float *dA,
                    float *dB) {
  mm_geo g;
  SW_ASSERT(mm_geo_init(&g, a, b, NULL) == SW_OK);
  if (dA) memset(dA, 0, sizeof(float) * kshape_numel(a));
  if (dB) memset(dB, 0, sizeof(float) * kshape_numel(b));
  /* Batches are visited in order, so sums over broadcast batches are deterministic. */
  for (int64_t bi = 0; bi < g.nbatch; bi++) {
    int64_t ao = kern_offset(&g.batch, g.ast, bi) * g.M * g.K, bo = kern_offset(&g.batch, g.bst, bi) * g.K * g.N;
    const float *dYb = dY + bi * g.M * g.N;
    if (dA)
      for (int64_t m = 0; m < g.M; m++)
        for (int64_t k = 0; k < g.K; k++) {
          double acc = 0.0;
          for (int64_t n = 0; n < g.N; n++) acc += (double)dYb[m * g.N + n] * B[bo + k * g.N + n];
          dA[ao + m * g.K + k] += (float)acc;
        }
    if (dB)
      for (int64_t k = 0; k < g.K; k++)
        for (int64_t n = 0; n < g.N; n++) {
          double acc = 0.0;
          for (int64_t m = 0; m < g.M; m++) acc += (double)A[ao + m * g.K + k] * dYb[m * g.N + n];
          dB[bo + k * g.N + n] += (float)acc;
        }
  }
}
