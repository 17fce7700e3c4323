/* Backward passes for convolutions with few input channels per group (C/groups < 16), where the
 * channel-blocked kernels would put only C lanes in the GEMM's vector dimension. Both work one
 * image at a time in thread-private buffers, straight from NCHW:
 *
 *   bwd-data    col[CRS][PQ] = dY[K][PQ]^T-as-A (m = pixels, lda = PQ) . W^T[CRS][K]  (n = CRS, k = K)
 *               then col2im: dX[c][h][w] += col[c][r][s][p][q] at the positions the taps read;
 *   bwd-weight  col[CRS][PQ] = im2col(x), dYt[PQ][K] = dY transposed, and
 *               dW^T[CRS][K] += dYt^T-as-A (m = K, lda = K) . col (n = CRS, k = PQ)
 *               accumulated per thread over its images, partials summed in thread order.
 * (C = C/groups, K = K/groups, per group; CRS = C*R*S.) */
#include <libxsmm.h>
#include <string.h>

#include "runtime/kernels/conv_internal.h"
#include "runtime/kernels/kern_internal.h"

/* Pixels per bwd-data GEMM (its m). */
#define COL_MCHUNK 256

static size_t fbytes(size_t nfloats) { return kern_align_up(nfloats * sizeof(float)); }

static int crs_of(const conv_plan *p) { return p->Cg * p->d.R * p->d.S; }
static size_t pq_of(const conv_plan *p) { return (size_t)p->d.P * p->d.Q; }

/* Row pitch of col: PQ rounded up to 16 floats, plus 16 more so that consecutive rows do not all
 * fall into the same L1 set (a pitch that is a multiple of 4 KiB thrashes the GEMM's B loads). */
static int pitch_of(const conv_plan *p) { return ((int)pq_of(p) + 15) / 16 * 16 + 16; }

static void *dispatch(int m, int n, int k, int lda, int ldb, int ldc, float beta) {
  libxsmm_blasint lm = m, ln = n, lk = k, la = lda, lb = ldb, lc = ldc;
  float alpha = 1.0f;
  int flags = LIBXSMM_GEMM_FLAG_NONE, prefetch = LIBXSMM_GEMM_PREFETCH_NONE;
  return (void *)libxsmm_smmdispatch(lm, ln, lk, &la, &lb, &lc, &alpha, &beta, &flags, &prefetch);
}

int conv_col_init(conv_plan *p, sw_err *e) {
  const conv_desc *d = &p->d;
  int PQ = d->P * d->Q, CRS = crs_of(p), T = p->nthreads;
  int mfull = PQ < COL_MCHUNK ? PQ : COL_MCHUNK, mtail = PQ % COL_MCHUNK;
  int pitch = pitch_of(p);
  p->kern_col_bd = dispatch(mfull, CRS, p->Kg, PQ, p->Kg, pitch, 0.0f);
  p->kern_col_bd_tail = mtail && PQ > COL_MCHUNK ? dispatch(mtail, CRS, p->Kg, PQ, p->Kg, pitch, 0.0f) : NULL;
  p->kern_col_wu = dispatch(p->Kg, CRS, PQ, p->Kg, pitch, p->Kg, 1.0f);
  if (!p->kern_col_bd || (mtail && PQ > COL_MCHUNK && !p->kern_col_bd_tail) || !p->kern_col_wu)
    return sw_fail(e, SW_EINPUT, "Conv: libxsmm could not generate the im2col kernels (%d pixels, CRS %d, K %d)", PQ,
                   CRS, p->Kg);
  size_t col = fbytes((size_t)CRS * pitch), wt = fbytes((size_t)p->G * CRS * p->Kg);
  p->scratch[CONV_BWD_DATA] = wt + (size_t)T * col;
  p->scratch[CONV_BWD_WEIGHT] = (size_t)T * (col + fbytes((size_t)PQ * p->Kg) + fbytes((size_t)p->G * CRS * p->Kg));
  return SW_OK;
}

/* q range of tap column s (output columns whose input column is inside [0, W)), for every s. */
static void q_ranges(const conv_desc *d, int *qr) {
  for (int s = 0; s < d->S; s++) {
    int off = s * d->dil_w - d->pad_l;
    int lo = off >= 0 ? 0 : (-off + d->stride_w - 1) / d->stride_w;
    int hi = d->W - 1 - off < 0 ? 0 : (d->W - 1 - off) / d->stride_w + 1;
    if (hi > d->Q) hi = d->Q;
    qr[2 * s] = lo;
    qr[2 * s + 1] = hi > lo ? hi : lo;
  }
}

/* dX plane of channel c (one image, one group) += its R*S col rows. */
KERN_CLONES static void col2im_channel(const conv_desc *d, const int *qr, size_t pitch, const float *restrict col,
                                       float *restrict dx) {
  int sw = d->stride_w;
  for (int r = 0; r < d->R; r++)
    for (int s = 0; s < d->S; s++) {
      const float *restrict cs = col + ((size_t)r * d->S + s) * pitch;
      int q0 = qr[2 * s], q1 = qr[2 * s + 1], off = s * d->dil_w - d->pad_l;
      for (int p = 0; p < d->P; p++) {
        int h = p * d->stride_h - d->pad_t + r * d->dil_h;
        if (h < 0 || h >= d->H) continue;
        float *restrict row = dx + (size_t)h * d->W + off;
        const float *restrict cr = cs + (size_t)p * d->Q;
        if (sw == 1)
          for (int q = q0; q < q1; q++) row[q] += cr[q];
        else
          for (int q = q0; q < q1; q++) row[(size_t)q * sw] += cr[q];
      }
    }
}

/* The R*S col rows of input channel plane x (one image): the tap (r, s) value of every output pixel. */
KERN_CLONES static void im2col_channel(const conv_desc *d, const int *qr, size_t pitch, const float *restrict x,
                                       float *restrict col) {
  int sw = d->stride_w;
  for (int r = 0; r < d->R; r++)
    for (int s = 0; s < d->S; s++) {
      float *restrict cs = col + ((size_t)r * d->S + s) * pitch;
      int q0 = qr[2 * s], q1 = qr[2 * s + 1], off = s * d->dil_w - d->pad_l;
      for (int p = 0; p < d->P; p++) {
        int h = p * d->stride_h - d->pad_t + r * d->dil_h;
        float *restrict cr = cs + (size_t)p * d->Q;
        if (h < 0 || h >= d->H) {
          for (int q = 0; q < d->Q; q++) cr[q] = 0.0f;
          continue;
        }
        const float *restrict row = x + (size_t)h * d->W + off;
        for (int q = 0; q < q0; q++) cr[q] = 0.0f;
        if (sw == 1)
          for (int q = q0; q < q1; q++) cr[q] = row[q];
        else
          for (int q = q0; q < q1; q++) cr[q] = row[(size_t)q * sw];
        for (int q = q1; q < d->Q; q++) cr[q] = 0.0f;
      }
    }
}

typedef struct col_args {
  const conv_plan *p;
  const float *x, *dy, *w;
  float *wt;                /* bwd-data: W^T per group [G][CRS][Kg] */
  float *dx, *dw;
  char *slots;              /* per-thread buffers */
  size_t slot_bytes;
  float *part0;             /* bwd-weight: thread t's partial [G][CRS][Kg] is part0 + t*part_stride */
  size_t part_stride;
} col_args;

/* W [G*Kg][CRS] -> W^T per group [G][CRS][Kg]. */
static void wt_worker(void *ctx, int t, int T) {
  const col_args *a = ctx;
  const conv_plan *p = a->p;
  int CRS = crs_of(p);
  int64_t lo, hi;
  kern_split(p->G, t, T, &lo, &hi);
  for (int64_t g = lo; g < hi; g++)
    for (int k = 0; k < p->Kg; k++)
      for (int i = 0; i < CRS; i++)
        a->wt[((size_t)g * CRS + i) * p->Kg + k] = a->w[((size_t)g * p->Kg + k) * CRS + i];
}

static void bwd_data_worker(void *ctx, int t, int T) {
  const col_args *a = ctx;
  const conv_plan *p = a->p;
  const conv_desc *d = &p->d;
  int CRS = crs_of(p), RS = d->R * d->S;
  size_t PQ = pq_of(p), HW = (size_t)d->H * d->W, pitch = pitch_of(p);
  float *col = (float *)(a->slots + (size_t)t * a->slot_bytes);
  int qr[2 * d->S];
  q_ranges(d, qr);
  libxsmm_smmfunction full = (libxsmm_smmfunction)p->kern_col_bd, tail = (libxsmm_smmfunction)p->kern_col_bd_tail;
  int64_t lo, hi;
  kern_split((int64_t)d->N * p->G, t, T, &lo, &hi);
  for (int64_t ng = lo; ng < hi; ng++) {
    int g = (int)(ng % p->G);
    const float *dyg = a->dy + (size_t)ng * p->Kg * PQ; /* image n, channels of group g */
    for (size_t m0 = 0; m0 < PQ; m0 += COL_MCHUNK) {
      libxsmm_smmfunction k = PQ - m0 >= COL_MCHUNK || PQ <= COL_MCHUNK ? full : tail;
      k(dyg + m0, a->wt + (size_t)g * CRS * p->Kg, col + m0);
    }
    float *dxg = a->dx + (size_t)ng * p->Cg * HW;
    memset(dxg, 0, sizeof(float) * p->Cg * HW);
    for (int c = 0; c < p->Cg; c++) col2im_channel(d, qr, pitch, col + (size_t)c * RS * pitch, dxg + (size_t)c * HW);
  }
}

void conv_col_bwd_data(const conv_plan *p, const float *dy, const float *w, float *dx, void *scratch) {
  char *sp = scratch;
  col_args a = {p, NULL, dy, w, (float *)sp, dx, NULL, sp + fbytes((size_t)p->G * crs_of(p) * p->Kg),
                fbytes((size_t)crs_of(p) * pitch_of(p)), NULL, 0};
  kern_parallel(p->nthreads, wt_worker, &a);
  kern_parallel(p->nthreads, bwd_data_worker, &a);
}

static void bwd_weight_worker(void *ctx, int t, int T) {
  const col_args *a = ctx;
  const conv_plan *p = a->p;
  const conv_desc *d = &p->d;
  int CRS = crs_of(p), RS = d->R * d->S;
  size_t PQ = pq_of(p), HW = (size_t)d->H * d->W, pitch = pitch_of(p);
  char *slot = a->slots + (size_t)t * a->slot_bytes;
  float *col = (float *)slot, *dyt = (float *)(slot + fbytes((size_t)CRS * pitch));
  float *part = a->part0 + (size_t)t * a->part_stride;
  memset(part, 0, sizeof(float) * p->G * CRS * p->Kg);
  int qr[2 * d->S];
  q_ranges(d, qr);
  libxsmm_smmfunction k = (libxsmm_smmfunction)p->kern_col_wu;
  int64_t lo, hi;
  kern_split(d->N, t, T, &lo, &hi);
  for (int64_t n = lo; n < hi; n++)
    for (int g = 0; g < p->G; g++) {
      const float *xg = a->x + ((size_t)n * d->C + (size_t)g * p->Cg) * HW;
      const float *dyg = a->dy + ((size_t)n * d->K + (size_t)g * p->Kg) * PQ;
      for (int c = 0; c < p->Cg; c++) im2col_channel(d, qr, pitch, xg + (size_t)c * HW, col + (size_t)c * RS * pitch);
      /* dYt[PQ][Kg] from dY[Kg][PQ] */
      for (int k0 = 0; k0 < p->Kg; k0 += 16)
        for (size_t i0 = 0; i0 < PQ; i0 += 16) {
          int nk = p->Kg - k0 < 16 ? p->Kg - k0 : 16, ni = PQ - i0 < 16 ? (int)(PQ - i0) : 16;
          kern_transpose16(dyg + (size_t)k0 * PQ + i0, PQ, nk, dyt + i0 * p->Kg + k0, p->Kg, ni, nk, NULL);
        }
      k(dyt, col, part + (size_t)g * CRS * p->Kg);
    }
}

/* dw [G*Kg][CRS] = sum over threads, in order, of the partials [G][CRS][Kg]. */
static void wu_reduce_worker(void *ctx, int t, int T) {
  const col_args *a = ctx;
  const conv_plan *p = a->p;
  int CRS = crs_of(p);
  int64_t lo, hi;
  kern_split(p->d.K, t, T, &lo, &hi);
  for (int64_t kk = lo; kk < hi; kk++) {
    int g = (int)(kk / p->Kg), k = (int)(kk % p->Kg);
    for (int i = 0; i < CRS; i++) {
      size_t off = ((size_t)g * CRS + i) * p->Kg + k;
      float v = a->part0[off];
      for (int u = 1; u < p->nthreads; u++) v += a->part0[(size_t)u * a->part_stride + off];
      a->dw[(size_t)kk * CRS + i] = v;
    }
  }
}

void conv_col_bwd_weight(const conv_plan *p, const float *x, const float *dy, float *dw, float *db, void *scratch) {
  int CRS = crs_of(p);
  size_t PQ = pq_of(p), slot = fbytes((size_t)CRS * pitch_of(p)) + fbytes(PQ * p->Kg);
  char *sp = scratch;
  col_args a = {p, x, dy, NULL, NULL, NULL, dw, sp, slot, (float *)(sp + (size_t)p->nthreads * slot),
                fbytes((size_t)p->G * CRS * p->Kg) / sizeof(float)};
  kern_parallel(p->nthreads, bwd_weight_worker, &a);
  kern_parallel(p->nthreads, wu_reduce_worker, &a);
  if (db) conv_bias_grad(&p->d, dy, db, p->nthreads);
}
