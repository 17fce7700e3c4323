/* Small-tile transposes used by the layout transforms between NCHW and channel-blocked tensors:
 * an AVX-512 version (16x16 in registers) picked at load time when the CPU has it, and plain C. */
#include <stddef.h>

#include "runtime/kernels/kern_internal.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include "runtime/kernels/kern_avx512.h"
#define HAVE_X86 1
#endif

static void tr_c(const float *src, size_t ss, size_t scs, int nload, float *dst, size_t ds, size_t dcs, int nc,
                 int nstore, const float *bias) {
  for (int j = 0; j < nc; j++) {
    float b = bias ? bias[j] : 0.0f;
    float *d = dst + (size_t)j * ds;
    for (int i = 0; i < nstore; i++) d[i * dcs] = (i < nload ? src[(size_t)i * ss + j * scs] : 0.0f) + b;
  }
}

#ifdef HAVE_X86
__attribute__((target("avx512f"))) static void tr_avx512(const float *src, size_t ss, size_t scs, int nload,
                                                         float *dst, size_t ds, size_t dcs, int nc, int nstore,
                                                         const float *bias) {
  __m512 r[16];
  __mmask16 cm = (__mmask16)((1u << nc) - 1u), sm = (__mmask16)((1u << nstore) - 1u);
  const __m512i lanes = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  __m512i sidx = _mm512_mullo_epi32(lanes, _mm512_set1_epi32((int)scs));
  __m512i didx = _mm512_mullo_epi32(lanes, _mm512_set1_epi32((int)dcs));
  for (int i = 0; i < 16; i++) {
    if (i >= nload)
      r[i] = _mm512_setzero_ps();
    else if (scs == 1)
      r[i] = _mm512_maskz_loadu_ps(cm, src + (size_t)i * ss);
    else
      r[i] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), cm, sidx, src + (size_t)i * ss, 4);
  }
  kern_tr16_avx512(r);
  for (int j = 0; j < nc; j++) {
    __m512 v = r[j];
    if (bias) v = _mm512_add_ps(v, _mm512_set1_ps(bias[j]));
    if (dcs == 1)
      _mm512_mask_storeu_ps(dst + (size_t)j * ds, sm, v);
    else
      _mm512_mask_i32scatter_ps(dst + (size_t)j * ds, sm, didx, v, 4);
  }
}
#endif

typedef void (*tr_fn)(const float *, size_t, size_t, int, float *, size_t, size_t, int, int, const float *);
static tr_fn tr_impl = tr_c;

__attribute__((constructor)) static void tr_select(void) {
#ifdef HAVE_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) tr_impl = tr_avx512;
#endif
}

void kern_transpose16(const float *src, size_t ss, int nload, float *dst, size_t ds, int nc, int nstore,
                      const float *bias) {
  SW_ASSERT(nload <= 16 && nc <= 16 && nstore <= 16);
  tr_impl(src, ss, 1, nload, dst, ds, 1, nc, nstore, bias);
}

void kern_transpose16_step(const float *src, size_t ss, size_t scs, int nload, float *dst, size_t ds, size_t dcs,
                           int nc, int nstore, const float *bias) {
  SW_ASSERT(nload <= 16 && nc <= 16 && nstore <= 16 && scs >= 1 && dcs >= 1 && scs * 15 < (1u << 31) &&
            dcs * 15 < (1u << 31));
  tr_impl(src, ss, scs, nload, dst, ds, dcs, nc, nstore, bias);
}

void kern_transpose16_scalar(const float *src, size_t ss, size_t scs, int nload, float *dst, size_t ds, size_t dcs,
                             int nc, int nstore, const float *bias) {
  tr_c(src, ss, scs, nload, dst, ds, dcs, nc, nstore, bias);
}
