/* Conv plans: choose a kernel for a shape, size its scratch, and run it. */
#include <stdio.h>
#include <string.h>

#include "runtime/kernels/conv_internal.h"
#include "runtime/kernels/kern_internal.h"

static const char *impl_name(conv_impl impl) {
  switch (impl) {
  case CONV_IMPL_REF: return "ref";
  case CONV_IMPL_BRGEMM: return "brgemm";
  case CONV_IMPL_DIRECT: return "direct";
  default: return "auto";
  }
}

int conv_plan_init(conv_plan *p, const conv_desc *d, int nthreads, conv_impl want, sw_err *e) {
  memset(p, 0, sizeof *p);
  p->d = *d;
  int rc = conv_desc_resolve(&p->d, e);
  if (rc) return rc;
  p->nthreads = kern_threads_clamp(nthreads);
  int one_in = d->C / d->groups == 1;
  if (want == CONV_IMPL_AUTO) want = one_in ? CONV_IMPL_DIRECT : CONV_IMPL_BRGEMM;
  if (want == CONV_IMPL_DIRECT && !one_in) {
    sw_fail(e, SW_EINPUT, "Conv: the direct kernel needs one input channel per group (C=%d, group=%d)", d->C,
            d->groups);
    sw_hint(e, "use CONV_IMPL_AUTO or CONV_IMPL_BRGEMM");
    return SW_EINPUT;
  }
  p->impl = want;
  if (want == CONV_IMPL_DIRECT)
    for (int i = 0; i < CONV_NPASS; i++) p->scratch[i] = conv_direct_scratch(&p->d, p->nthreads);
  if (want == CONV_IMPL_BRGEMM) {
    rc = conv_brgemm_init(p, e);
    if (rc) {
      conv_plan_free(p);
      return rc;
    }
  }
  return SW_OK;
}

void conv_plan_free(conv_plan *p) {
  if (p->impl == CONV_IMPL_BRGEMM) conv_brgemm_free(p);
  memset(p, 0, sizeof *p);
}

size_t conv_plan_scratch(const conv_plan *p, conv_pass pass) {
  SW_ASSERT(pass >= 0 && pass < CONV_NPASS);
  return p->scratch[pass];
}

const char *conv_plan_describe(const conv_plan *p, char *buf, size_t n) {
  if (p->impl == CONV_IMPL_BRGEMM)
    snprintf(buf, n, "brgemm cb=%d kb=%d rows=%d %s bwd=%s", p->cb, p->kb, p->fwd.rb,
             p->per_image ? "per-image" : "batch-split",
             p->col_bwd ? "im2col" : (p->bwd_gather ? "gather" : "scatter"));
  else
    snprintf(buf, n, "%s", impl_name(p->impl));
  return buf;
}

static void check_scratch(const conv_plan *p, conv_pass pass, const void *scratch) {
  if (p->scratch[pass]) SW_ASSERT(scratch && ((uintptr_t)scratch % KERN_ALIGN) == 0);
}

void conv_plan_fwd(const conv_plan *p, const float *x, const float *w, const float *b, float *y, void *scratch) {
  check_scratch(p, CONV_FWD, scratch);
  switch (p->impl) {
  case CONV_IMPL_BRGEMM: conv_brgemm_fwd(p, x, w, b, y, scratch); break;
  case CONV_IMPL_DIRECT: conv_direct_fwd(p, x, w, b, y, scratch); break;
  default: conv_fwd_ref(&p->d, x, w, b, y); break;
  }
}

void conv_plan_bwd_data(const conv_plan *p, const float *dy, const float *w, float *dx, void *scratch) {
  check_scratch(p, CONV_BWD_DATA, scratch);
  switch (p->impl) {
  case CONV_IMPL_BRGEMM: conv_brgemm_bwd_data(p, dy, w, dx, scratch); break;
  case CONV_IMPL_DIRECT: conv_direct_bwd_data(p, dy, w, dx, scratch); break;
  default: conv_bwd_data_ref(&p->d, dy, w, dx); break;
  }
}

void conv_plan_bwd_weight(const conv_plan *p, const float *x, const float *dy, float *dw, float *db, void *scratch) {
  check_scratch(p, CONV_BWD_WEIGHT, scratch);
  switch (p->impl) {
  case CONV_IMPL_BRGEMM: conv_brgemm_bwd_weight(p, x, dy, dw, db, scratch); break;
  case CONV_IMPL_DIRECT: conv_direct_bwd_weight(p, x, dy, dw, db, scratch); break;
  default: conv_bwd_weight_ref(&p->d, x, dy, dw, db); break;
  }
}
