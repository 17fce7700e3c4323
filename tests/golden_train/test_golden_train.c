/* swatc against PyTorch on the shipped models: the same weights and batch give the same logits,
 * loss, gradients, BatchNormalization running statistics, and weights after three SGD steps
 * (tests/golden_torch/README.md describes the bundles and the tolerances used here). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "importer/importer.h"
#include "passes/passes.h"
#include "runtime/runtime.h"
#include "tests/check.h"
#include "tests/golden_torch/bundle.h"
#include "tests/golden_torch/golden.h"
#include "train/optim.h"

#define TOL_FWD 1e-5  /* logits, losses, running statistics: max|got-want| <= tol * max|want| */
#define TOL_GRAD 1e-4 /* gradients and weights after three steps */
/* ResNet-20's weights after three steps: its batch has ReLU inputs within twice PyTorch's own fp32
 * noise of zero (tests/golden_torch/README.md, "robustness"), so kernels with other summation orders
 * flip a few ReLU decisions in steps 2-3 and the flips cascade (worst on the BN biases, which start
 * at 0 and so have a tiny scale). Step-1 gradients still pass at TOL_GRAD, and LeNet-5/MLP check the SGD semantics at
 * TOL_GRAD after three steps. */
#define TOL_STEP3_RESNET 5e-3 /* measured: up to 2.7e-3 (one element of a BN bias of scale 3.6e-3) */

static void run_model(const char *src, const char *model) {
  char file[256];
  sw_err e = {0};
  snprintf(file, sizeof file, "%s.swtb", model);
  bundle *b;
  ir_graph *g;
  const bundle_tensor *input, *labels;
  if (!golden_open(src, file, model, model, &b, &g, &input, &labels)) return;
  for (int i = 0; i < g->n_nodes; i++) /* the golden MLP runs with Dropout ratio 0 (deterministic) */
    if (strcmp(g->nodes[i]->op->name, "Dropout") == 0) ir_attr_set_float(g, g->nodes[i], "ratio", 0.0f);
  int64_t batch = input->dims[0];
  static const char *const passes[] = {"train-mode", "add-loss", "autodiff", "dce", "fuse", "memory-plan"};
  pass_opts po = {.verify = 1, .batch = batch};
  rt_state st;
  rt_state_init(&st);
  rt_program *p = NULL;
  int ok = passes_run(g, passes, 6, &po, &e) == SW_OK && rt_state_bind(&st, g, &e) == SW_OK &&
           rt_program_build(g, &st, batch, 2, NULL, &p, &e) == SW_OK;
  CHECK(ok, "%s: %s", model, e.msg);
  if (!ok) goto done;
  const char *loss_name = NULL, *logits_name = NULL;
  for (int i = 0; i < g->n_nodes; i++)
    if (g->nodes[i]->role == IR_ROLE_LOSS) {
      loss_name = g->nodes[i]->out[0]->name;
      logits_name = g->nodes[i]->in[0]->name;
    }
  memcpy(rt_program_buffer(p, g->inputs[0]->name, NULL), input->data, sizeof(float) * (size_t)input->numel);
  memcpy(rt_program_buffer(p, PASS_LABELS_INPUT, NULL), labels->data, sizeof(int64_t) * (size_t)labels->numel);
  sw_sgd sgd = {.momentum = 0.9f, .weight_decay = 5e-4f};
  float **mom = calloc((size_t)st.n, sizeof *mom);
  for (int i = 0; i < st.n; i++) mom[i] = calloc((size_t)st.t[i].numel, sizeof(float));
  for (int step = 1; step <= 3; step++) {
    CHECK(rt_program_run(p, (uint64_t)step, &e) == SW_OK, "%s: %s", model, e.msg);
    char key[64];
    snprintf(key, sizeof key, "step%d/loss", step);
    golden_compare(model, key, rt_program_buffer(p, loss_name, NULL), bundle_get(b, key), TOL_FWD);
    int checked_grads = 0;
    for (int i = 0; step == 1 && i < b->n; i++) {
      const bundle_tensor *t = &b->tensors[i];
      char name[512];
      if (!strcmp(t->name, "logits")) golden_compare(model, "logits", rt_program_buffer(p, logits_name, NULL), t, TOL_FWD);
      if (!strncmp(t->name, "grad/", 5)) {
        golden_base_name(t->name, "grad/", name, sizeof name);
        ir_value *v = ir_value_find(g, name);
        CHECK(v && v->grad, "%s: no gradient for %s", model, name);
        if (v && v->grad) golden_compare(model, t->name, rt_program_buffer(p, v->grad->name, NULL), t, TOL_GRAD);
        checked_grads++;
      }
      if (!strncmp(t->name, "running_mean/", 13) || !strncmp(t->name, "running_var/", 12)) {
        golden_base_name(t->name, strchr(t->name, '/') - t->name + 1 == 13 ? "running_mean/" : "running_var/", name, sizeof name);
        rt_tensor *s = rt_state_find(&st, name);
        CHECK(s != NULL, "%s: no state tensor %s", model, name);
        if (s) golden_compare(model, t->name, s->data, t, TOL_FWD);
      }
    }
    if (step == 1) CHECK(checked_grads > 0, "%s: the bundle has no gradients", model);
    for (int i = 0; i < st.n; i++) {
      ir_value *v = ir_value_find(g, st.t[i].name);
      if (v && v->grad)
        sw_sgd_step(&sgd, 0.05f, st.t[i].data, rt_program_buffer(p, v->grad->name, NULL), mom[i], st.t[i].numel, step == 1);
    }
  }
  int n3 = 0;
  for (int i = 0; i < b->n; i++) {
    const bundle_tensor *t = &b->tensors[i];
    if (strncmp(t->name, "step3/", 6) || !strcmp(t->name, "step3/loss")) continue;
    char name[512];
    golden_base_name(t->name, "step3/", name, sizeof name);
    rt_tensor *s = rt_state_find(&st, name);
    CHECK(s != NULL, "%s: no state tensor %s", model, name);
    if (s) golden_compare(model, t->name, s->data, t, strcmp(model, "resnet20") ? TOL_GRAD : TOL_STEP3_RESNET);
    n3++;
  }
  CHECK(n3 > 0, "%s: the bundle has no step3 tensors", model);
  printf("%-10s logits, loss, %s gradients, 3 SGD steps compared with PyTorch\n", model, "all");
  for (int i = 0; i < st.n; i++) free(mom[i]);
  free(mom);
done:
  rt_program_free(p);
  rt_state_free(&st);
  ir_graph_free(g);
  bundle_free(b);
}

int main(int argc, char **argv) {
  const char *src = argc > 1 ? argv[1] : getenv("SWATC_SRC");
  if (!src) src = ".";
  sw_quiet = 1;
  run_model(src, "lenet5");
  run_model(src, "mlp");
  run_model(src, "resnet20");
  return check_report("test_golden_train");
}
