/* Shared by the C tests that compare swatc with PyTorch bundles (tests/golden_train, tests/golden_swat):
 * opening a bundle with its model, tensor names, and the scaled comparison with a CHECK. Header-only;
 * include after tests/check.h. */
#ifndef SWATC_TESTS_GOLDEN_TORCH_GOLDEN_H
#define SWATC_TESTS_GOLDEN_TORCH_GOLDEN_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "importer/importer.h"
#include "tests/golden_torch/bundle.h"

/* "prefix/name[:R]" -> name (a "[:R]" suffix marks a tensor stored as its leading R rows). */
static inline void golden_base_name(const char *full, const char *prefix, char *name, size_t n) {
  snprintf(name, n, "%s", full + strlen(prefix));
  char *br = strchr(name, '[');
  if (br) *br = 0;
}

/* CHECKs max|got - want| <= tol * max|want| over the bundle tensor's elements; returns that relative error. */
static inline double golden_compare(const char *tag, const char *what, const float *got, const bundle_tensor *t, double tol) {
  bundle_diff d;
  int64_t bad = bundle_compare_scaled_f32(got, t->data, t->numel, tol, &d);
  double rel = d.max_abs / (d.max_want > 0 ? d.max_want : 1);
  CHECK(bad == 0, "%s: %s: %lld elements off, max err %.3g at scale %.3g = %.2e (tol %.0e, worst at %lld)", tag, what,
        (long long)bad, d.max_abs, d.max_want, rel, tol, (long long)d.worst);
  if (getenv("VERBOSE")) printf("  %-18s %-48s err %.2e of %.2e\n", tag, what, rel, d.max_want);
  return rel;
}

/* Loads src/tests/golden_torch/<bundle_file> and src/models/<model>.onnx, and finds the bundle's float
 * input [N,C,H,W] and int64 labels [N]. Returns 1 with everything set, or 0 (after a failed CHECK, with
 * nothing left to free). */
static inline int golden_open(const char *src, const char *bundle_file, const char *model, const char *tag, bundle **b,
                              ir_graph **g, const bundle_tensor **input, const bundle_tensor **labels) {
  char path[4096];
  sw_err e = {0};
  *g = NULL;
  snprintf(path, sizeof path, "%s/tests/golden_torch/%s", src, bundle_file);
  *b = bundle_load(path, &e);
  CHECK(*b != NULL, "%s", e.msg);
  if (!*b) return 0;
  snprintf(path, sizeof path, "%s/models/%s.onnx", src, model);
  importer_opts io = {.batch = IMPORTER_BATCH_AUTO};
  CHECK(importer_load(path, &io, g, &e) == SW_OK, "%s: %s", tag, e.msg);
  *input = bundle_get(*b, "input");
  *labels = bundle_get(*b, "labels");
  int good = *g && *input && (*input)->dtype == BUNDLE_F32 && (*input)->rank == 4 && *labels && (*labels)->dtype == BUNDLE_I64 &&
             (*labels)->numel == (*input)->dims[0];
  if (*g) CHECK(good, "%s: the bundle has no float input [N,C,H,W] and int64 labels [N]", tag);
  if (!good) {
    ir_graph_free(*g);
    *g = NULL;
    bundle_free(*b);
    *b = NULL;
  }
  return good;
}

#endif
