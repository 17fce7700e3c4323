/* The pass manager. */
#include <string.h>

#include "passes/passes.h"

static const pass_def table[] = {
    {"eval-mode", pass_eval_mode, "inference form: BatchNormalization with running statistics, Dropout removed"},
    {"train-mode", pass_train_mode, "training form: BatchNormalization with batch statistics updating its running state"},
    {"add-loss", pass_add_loss, "softmax cross-entropy on the logits against an int64 labels input (or reuse the model's)"},
    {"autodiff", pass_autodiff, "reverse-mode differentiation: the backward graph as ordinary IR nodes"},
    {"dce", pass_dce, "remove nodes and values nothing uses"},
    {"swat", pass_swat, "SWAT: Top-K of each layer's weight (forward, backward-data) and saved input (weight gradient)"},
    {"fuse", pass_fuse, "BatchNormalization + ReLU, residual Add + ReLU and gradient Sum + ReLU backward into single kernels"},
    {"memory-plan", pass_memory_plan, "liveness-based offsets of every activation in one arena (views share storage)"},
};

const pass_def *passes_table(int *count) {
  *count = (int)SW_ARRAY_LEN(table);
  return table;
}

const pass_def *pass_find(const char *name) {
  for (size_t i = 0; i < SW_ARRAY_LEN(table); i++)
    if (strcmp(table[i].name, name) == 0) return &table[i];
  return NULL;
}

/* "import" (before the first pass) and "lower" (after the runtime chose kernels) are dump points too. */
int pass_name_valid(const char *name) {
  return strcmp(name, "import") == 0 || strcmp(name, "lower") == 0 || pass_find(name) != NULL;
}

static int wants(const char *list, const char *name) {
  if (!list) return 0;
  if (strcmp(list, "all") == 0) return 1;
  size_t n = strlen(name);
  for (const char *p = list; *p;) {
    const char *c = strchr(p, ',');
    size_t l = c ? (size_t)(c - p) : strlen(p);
    if (l == n && strncmp(p, name, n) == 0) return 1;
    if (!c) break;
    p = c + 1;
  }
  return 0;
}

void passes_dump(const ir_graph *g, const char *after, const pass_opts *o) {
  if (!o || !wants(o->dump, after)) return;
  FILE *f = o->dump_file ? o->dump_file : stderr;
  fprintf(f, "# ---- IR after %s ----\n", after);
  ir_print(g, f);
  fflush(f);
}

int passes_run(ir_graph *g, const char *const *names, int n, const pass_opts *o, sw_err *e) {
  for (int i = 0; i < n; i++) {
    const pass_def *p = pass_find(names[i]);
    SW_ASSERT(p);
    if (p->run(g, o, e)) return e->code;
    if (o && o->verify && ir_verify(g, e)) {
      char msg[sizeof e->msg];
      snprintf(msg, sizeof msg, "%s", e->msg);
      sw_err_clear(e);
      sw_fail(e, SW_EINPUT, "after pass %s: %s", p->name, msg);
      return sw_hint(e, "this is a bug in swatc; please report it with the model");
    }
    passes_dump(g, p->name, o);
  }
  return SW_OK;
}
