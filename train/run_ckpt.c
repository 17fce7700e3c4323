/* What a checkpoint records of a training run, restoring a run from it and the checks before resuming;
 * export of the model a checkpoint holds; printing a checkpoint. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "importer/export.h"
#include "runtime/kernels/topk.h"
#include "train/trainer_internal.h"

/* The weight-group size of a layer's Top-K, as the swat pass makes it: a whole kernel (channel) or
 * filter of a Conv weight of rank >= 3 when structured, else single elements. */
static int64_t swat_group(const swat_layer *l, swat_structure s) {
  const ir_value *w = l->weight;
  if (s == SWAT_UNSTRUCTURED || strcmp(l->node->op->name, "Conv") != 0 || w->shape.rank < 3) return 1;
  int64_t g = 1;
  for (int d = s == SWAT_CHANNEL ? 2 : 1; d < w->shape.rank; d++) g *= w->shape.d[d];
  return g;
}

/* out = the weight's evaluation-time Top-K (exactly the runtime's TopKSparsify at period 1): keep the
 * k = ceil((1 - s) groups) largest-magnitude groups, ties kept. Returns the number of nonzeros. */
static int64_t swat_sparsify(const float *w, int64_t n, int64_t group, double sparsity, float *out) {
  if (sparsity <= 0 || group < 1 || n % group) {
    memcpy(out, w, sizeof *out * (size_t)n);
    int64_t nz = 0;
    for (int64_t i = 0; i < n; i++) nz += out[i] != 0.0f;
    return nz;
  }
  int64_t groups = n / group;
  double kv = (1.0 - sparsity) * (double)groups;
  int64_t k = (int64_t)ceil(kv - 1e-9 * (kv > 1 ? kv : 1));
  if (k < 1) k = 1;
  void *scratch = sw_xmalloc(topk_scratch(1));
  float *scores = group > 1 ? sw_xmalloc(sizeof *scores * (size_t)groups) : NULL;
  if (scores) topk_group_scores(w, n, group, scores, 1);
  float thr = k >= groups ? 0.0f : topk_threshold(scores ? scores : w, groups, k, scratch, 1);
  int64_t nz = scores ? topk_apply_groups(w, out, n, group, scores, thr, 1) : topk_apply(w, out, n, thr, 1);
  free(scores);
  free(scratch);
  return nz;
}

/* ---- what a checkpoint records ---- */

/* The options that shape the training trajectory, as the flags that set them; a resumed run must
 * match every one (--epochs and --threads are handled separately). */
typedef struct opt_item {
  const char *key;   /* also the section key */
  const char *label; /* how the message names it */
  int number;        /* compare/print as a number */
  char val[512];
} opt_item;

static int opt_items(const trainer_opts *o, opt_item *it) {
  int n = 0;
#define ITEM(k, l, num, ...)                                  \
  do {                                                        \
    it[n].key = k;                                            \
    it[n].label = l;                                          \
    it[n].number = num;                                       \
    snprintf(it[n].val, sizeof it[n].val, __VA_ARGS__);       \
    n++;                                                      \
  } while (0)
  static const char *const budgets[] = {"uniform", "erk", "momentum-budget"};
  static const char *const structs[] = {"none", "channel", "filter"};
  ITEM("data", "--data", 0, "%s", o->data);
  ITEM("batch", "--batch", 1, "%d", o->batch);
  ITEM("lr", "--lr", 1, "%.17g", o->lr);
  ITEM("momentum", "--momentum", 1, "%.17g", o->momentum);
  ITEM("nesterov", "--nesterov", 0, "%s", o->nesterov ? "on" : "off");
  ITEM("wd", "--wd", 1, "%.17g", o->wd);
  ITEM("schedule", "--schedule", 0, "%s", o->schedule);
  ITEM("milestones", "--milestones", 0, "%s", o->milestones ? o->milestones : "");
  ITEM("warmup-epochs", "--warmup-epochs", 1, "%d", o->warmup_epochs);
  ITEM("seed", "--seed", 1, "%llu", (unsigned long long)o->seed);
  ITEM("limit-train", "--limit-train", 1, "%lld", (long long)o->limit_train);
  ITEM("limit-test", "--limit-test", 1, "%lld", (long long)o->limit_test);
  ITEM("augment", "--augment", 0, "%s", o->augment < 0 ? "auto" : o->augment ? "on" : "off");
  ITEM("drop-last", "--drop-last", 0, "%s", o->drop_last ? "on" : "off");
  ITEM("static-batch", "--static-batch", 0, "%s", o->static_batch ? "on" : "off");
  ITEM("sparsity", "--sparsity", 1, "%.17g", o->swat.sparsity);
  ITEM("budget", "the SWAT budget", 0, "%s", budgets[o->swat.budget]);
  ITEM("sparse-first", "--sparse-first", 0, "%s", o->swat.sparse_first ? "on" : "off");
  ITEM("dense-layers", "--dense-layers", 0, "%s", o->swat.dense_layers ? o->swat.dense_layers : "");
  ITEM("structured", "--structured", 0, "%s", structs[o->swat.structure]);
  ITEM("topk-period", "--topk-period", 1, "%d", o->swat.period);
  ITEM("warmup-epochs-topk", "--warmup-epochs-topk", 1, "%d", o->topk_warmup_epochs);
  ITEM("sparse-kernels", "--sparse-kernels", 0, "%s", o->sparse_kernels ? "on" : "off");
#undef ITEM
  return n;
}

#define MAX_OPT_ITEMS 32

static const char *budget_name(const trainer_opts *o) {
  if (o->swat.sparsity <= 0) return "dense";
  return o->swat.budget == SWAT_ERK ? "erk" : o->swat.budget == SWAT_MOMENTUM ? "momentum" : "uniform";
}

/* {"scale": s, "mean": [..], "std": [..]}: x = (pixel * scale - mean[c]) / std[c]. */
void tr_preprocess_json(const sw_dataset *d, sbuf *b) {
  sb_printf(b, "{\"scale\": %.9g, \"mean\": [", (double)d->scale);
  for (int c = 0; c < d->c && c < SW_DATASET_MAX_C; c++) sb_printf(b, "%s%.9g", c ? ", " : "", (double)d->mean[c]);
  sb_printf(b, "], \"std\": [");
  for (int c = 0; c < d->c && c < SW_DATASET_MAX_C; c++) sb_printf(b, "%s%.9g", c ? ", " : "", (double)d->std[c]);
  sb_printf(b, "]}");
}

/* Fills ck with the whole training state of r. */
void tr_ckpt_build(const run *r, int finished, sw_ckpt *ck) {
  const trainer_opts *o = r->o;
  sbuf b = {0};
  sw_loader_cursor cur = sw_loader_tell(&r->ld);
  sb_printf(&b, "swatc_version=%s\nmodel=%s\nmodel_dir=%s\nmodel_sha256=%s\n", SWATC_VERSION, r->src.name, r->src.dir,
            r->src.sha);
  sb_printf(&b, "step=%llu\nepoch=%d\nepochs=%d\nfinished=%d\n", (unsigned long long)r->step, r->epoch, o->epochs, finished);
  sb_printf(&b, "epoch_batches=%lld\nepoch_good=%lld\nepoch_seen=%lld\nepoch_loss_sum=%.17g\nepoch_seconds=%.17g\nlr=%.17g\n",
            (long long)r->bi, (long long)r->good, (long long)r->seen, r->lsum, r->train_seconds, r->lr);
  sb_printf(&b, "loader_seed=%llu\nloader_epoch=%lld\nloader_pos=%lld\nloader_n=%lld\n", (unsigned long long)cur.seed,
            (long long)cur.epoch, (long long)cur.pos, (long long)cur.n);
  sb_printf(&b, "evaluated=%d\ntest_loss=%.17g\ntest_acc=%.17g\nthreads=%d\n", r->evaluated, r->test_loss, r->test_acc, o->threads);
  sb_printf(&b, "budget=%s\ndataset=%s\n", budget_name(o), r->train.name);
  if (o->metrics && r->jl_open) {
    long at = ftell(r->jl.f);
    sb_printf(&b, "metrics=%s\nmetrics_bytes=%ld\n", o->metrics, at);
  }
  sb_printf(&b, "command=%s\n", r->command ? r->command : o->command ? o->command : "");
  sw_ckpt_put_text(ck, "meta", b.p);
  b.n = 0;
  opt_item it[MAX_OPT_ITEMS];
  int ni = opt_items(o, it);
  for (int i = 0; i < ni; i++) sb_printf(&b, "%s=%s\n", it[i].key, it[i].val);
  sw_ckpt_put_text(ck, "options", b.p);
  b.n = 0;
  tr_preprocess_json(&r->train, &b);
  sw_ckpt_put_text(ck, "preprocess", b.p);
  sw_ckpt_put(ck, "model.onnx", r->src.bytes, r->src.n);
  /* the SWAT layers: node, weight, current budget (SWAT-M moves it), Top-K group */
  b.n = 0;
  for (int i = 0; i < r->sw.n; i++)
    sb_printf(&b, "%s\t%s\t%.17g\t%lld\n", r->sw.l[i].node->name, r->sw.l[i].weight->name, r->swat_on ? r->sw.l[i].sparsity : 0.0,
              (long long)swat_group(&r->sw.l[i], o->swat.structure));
  sw_ckpt_put_text(ck, "swat/layers", b.p ? b.p : "");
  char name[1100];
  for (int i = 0; i < r->st.n; i++) {
    const rt_tensor *t = &r->st.t[i];
    snprintf(name, sizeof name, "tensor/%s", t->name);
    sw_ckpt_put(ck, name, t->data, sizeof(float) * (size_t)t->numel);
    if (r->mom && r->mom[i]) {
      snprintf(name, sizeof name, "momentum/%s", t->name);
      sw_ckpt_put(ck, name, r->mom[i], sizeof(float) * (size_t)t->numel);
    }
  }
  free(b.p);
}

/* The first state tensor holding a NaN or infinity, or NULL. */
static const char *state_nonfinite(const rt_state *st) {
  for (int i = 0; i < st->n; i++)
    for (int64_t j = 0; j < st->t[i].numel; j++)
      if (!isfinite(st->t[i].data[j])) return st->t[i].name;
  return NULL;
}

/* Writes r's checkpoint to o->checkpoint (never a non-finite state over the last good one). */
int tr_ckpt_save(run *r, int finished, sw_err *e) {
  const char *bad_t = state_nonfinite(&r->st);
  if (bad_t) {
    sw_fail(e, SW_ENUMERIC, "tensor '%s' holds NaN or infinite values at step %llu; the checkpoint '%s' was not overwritten",
            bad_t, (unsigned long long)r->step, r->o->checkpoint);
    return sw_hint(e, "lower the learning rate (--lr) or add warm-up (--warmup-epochs 1), and resume from the last checkpoint");
  }
  sw_ckpt ck;
  sw_ckpt_init(&ck);
  tr_ckpt_build(r, finished, &ck);
  int rc = sw_ckpt_write(&ck, r->o->checkpoint, e);
  sw_ckpt_free(&ck);
  r->saved |= rc == SW_OK;
  return rc;
}

int tr_meta_int(const sw_ckpt *ck, const char *key, long long *v) {
  size_t n;
  const char *t = sw_ckpt_get(ck, "meta", &n);
  char buf[64], *end;
  if (!t || !sw_kv_get(t, n, key, buf, sizeof buf)) return 0;
  *v = strtoll(buf, &end, 10);
  return *buf && !*end;
}

int tr_meta_double(const sw_ckpt *ck, const char *key, double *v) {
  size_t n;
  const char *t = sw_ckpt_get(ck, "meta", &n);
  char buf[64], *end;
  if (!t || !sw_kv_get(t, n, key, buf, sizeof buf)) return 0;
  *v = strtod(buf, &end);
  return *buf && !*end;
}

void tr_meta_str(const sw_ckpt *ck, const char *key, char *buf, size_t cap) {
  size_t n;
  const char *t = sw_ckpt_get(ck, "meta", &n);
  if (!t || !sw_kv_get(t, n, key, buf, cap)) buf[0] = 0;
}

int tr_ckpt_incomplete(const char *path, const char *what, sw_err *e) {
  sw_fail(e, SW_EINPUT, "'%s' is not a training checkpoint of this swatc (%s)", path, what);
  return sw_hint(e, "pass a checkpoint written by swatc train --checkpoint");
}

int tr_ckpt_model(const sw_ckpt *ck, const char *path, model_src *s, sw_err *e) {
  memset(s, 0, sizeof *s);
  const void *b = sw_ckpt_get(ck, "model.onnx", &s->n);
  if (!b) return tr_ckpt_incomplete(path, "it holds no model", e);
  s->bytes = b;
  tr_meta_str(ck, "model", s->name, sizeof s->name);
  tr_meta_str(ck, "model_dir", s->dir, sizeof s->dir);
  if (!s->name[0]) snprintf(s->name, sizeof s->name, "the model in '%s'", path);
  if (!s->dir[0]) snprintf(s->dir, sizeof s->dir, ".");
  sw_sha256_hex(s->bytes, s->n, s->sha);
  return SW_OK;
}

/* Refuses a checkpoint of another model or of a run with other trajectory options. */
int tr_ckpt_check(const sw_ckpt *ck, const char *path, const run *r, sw_err *e) {
  const trainer_opts *o = r->o;
  char sha[80], was_model[1024], cmd[1024];
  tr_meta_str(ck, "model_sha256", sha, sizeof sha);
  tr_meta_str(ck, "model", was_model, sizeof was_model);
  tr_meta_str(ck, "command", cmd, sizeof cmd);
  if (!sha[0]) return tr_ckpt_incomplete(path, "it has no model hash", e);
  if (strcmp(sha, r->src.sha) != 0) {
    sw_fail(e, SW_EINPUT, "checkpoint '%s' was made from another model: '%s' (sha256 %.12s...), not '%s' (sha256 %.12s...)", path,
            was_model, sha, r->src.name, r->src.sha);
    return sw_hint(e, "resume with the model the run started from, or start a new run without --resume");
  }
  size_t n;
  const char *t = sw_ckpt_get(ck, "options", &n);
  if (!t) return tr_ckpt_incomplete(path, "it has no options section", e);
  opt_item it[MAX_OPT_ITEMS];
  int ni = opt_items(o, it), bad = 0;
  sbuf b = {0};
  for (int i = 0; i < ni; i++) {
    char was[512];
    if (!sw_kv_get(t, n, it[i].key, was, sizeof was) || strcmp(was, it[i].val) == 0) continue;
    const char *show_was = was, *show_now = it[i].val;
    if (!strncmp(it[i].key, "limit-", 6)) { /* 0 = every image */
      if (!strcmp(was, "0")) show_was = "all";
      if (!strcmp(it[i].val, "0")) show_now = "all";
    }
    char w2[64], n2[64];
    if (it[i].number && show_was == was && show_now == it[i].val) {
      snprintf(w2, sizeof w2, "%g", strtod(was, NULL));
      snprintf(n2, sizeof n2, "%g", strtod(it[i].val, NULL));
      show_was = w2;
      show_now = n2;
    }
    sb_printf(&b, "%scheckpoint was trained with %s %s, this run asks for %s", bad ? "; " : "", it[i].label,
              *show_was ? show_was : "(none)", *show_now ? show_now : "(none)");
    bad++;
  }
  if (bad) {
    sw_fail(e, SW_EINPUT, "cannot resume from '%s': %s", path, b.p);
    sw_hint(e, "resume with the options of the original run (%s), or start a new run without --resume", cmd[0] ? cmd : "see its command");
    free(b.p);
    return SW_EINPUT;
  }
  free(b.p);
  long long th;
  if (tr_meta_int(ck, "threads", &th) && th != o->threads)
    sw_warn("checkpoint '%s' was trained with --threads %lld, this run uses %d: the result may differ in the last bits from an "
            "uninterrupted run", path, th, o->threads);
  return SW_OK;
}

/* Restores r's state from ck (after ckpt_check): tensors, momentum, counters, cursor, budgets. */
int tr_ckpt_restore(run *r, const sw_ckpt *ck, const char *path, sw_err *e) {
  char name[1100];
  for (int i = 0; i < r->st.n; i++) {
    rt_tensor *t = &r->st.t[i];
    size_t n;
    snprintf(name, sizeof name, "tensor/%s", t->name);
    const void *d = sw_ckpt_get(ck, name, &n);
    if (!d || n != sizeof(float) * (size_t)t->numel) {
      sw_fail(e, SW_EINPUT, "checkpoint '%s' %s tensor '%s' (%lld values)", path, d ? "has another size for" : "lacks", t->name,
              (long long)t->numel);
      return sw_hint(e, "resume with the model and options of the original run");
    }
    memcpy(t->data, d, n);
    if (r->mom[i]) {
      snprintf(name, sizeof name, "momentum/%s", t->name);
      d = sw_ckpt_get(ck, name, &n);
      if (!d || n != sizeof(float) * (size_t)t->numel) return tr_ckpt_incomplete(path, "a momentum buffer is missing", e);
      memcpy(r->mom[i], d, n);
    }
  }
  long long step, epoch, bi, good, seen, ls, le, lp, ln, ev;
  if (!tr_meta_int(ck, "step", &step) || !tr_meta_int(ck, "epoch", &epoch) || !tr_meta_int(ck, "epoch_batches", &bi) ||
      !tr_meta_int(ck, "epoch_good", &good) || !tr_meta_int(ck, "epoch_seen", &seen) || !tr_meta_double(ck, "epoch_loss_sum", &r->lsum) ||
      !tr_meta_double(ck, "lr", &r->lr) || !tr_meta_int(ck, "loader_seed", &ls) || !tr_meta_int(ck, "loader_epoch", &le) ||
      !tr_meta_int(ck, "loader_pos", &lp) || !tr_meta_int(ck, "loader_n", &ln) || !tr_meta_int(ck, "evaluated", &ev) || step < 0 ||
      epoch < 0 || epoch > 1000000 || bi < 0 || seen < 0)
    return tr_ckpt_incomplete(path, "its step counters are missing", e);
  tr_meta_double(ck, "epoch_seconds", &r->train_seconds);
  tr_meta_double(ck, "test_loss", &r->test_loss);
  tr_meta_double(ck, "test_acc", &r->test_acc);
  r->step = (uint64_t)step;
  r->epoch = (int)epoch;
  r->bi = bi;
  r->good = good;
  r->seen = seen;
  r->evaluated = ev != 0;
  sw_loader_cursor cur = {.seed = (uint64_t)ls, .epoch = le, .pos = lp, .n = ln};
  if (sw_loader_seek(&r->ld, &cur, e)) return e->code;
  /* per-layer budgets (SWAT-M's current ones) */
  size_t n;
  const char *t = sw_ckpt_get(ck, "swat/layers", &n);
  if (!t) return tr_ckpt_incomplete(path, "it has no SWAT layer table", e);
  char *copy = sw_xmalloc(n + 1), *save = NULL;
  memcpy(copy, t, n);
  copy[n] = 0;
  int i = 0;
  for (char *line = strtok_r(copy, "\n", &save); line && i < r->sw.n; line = strtok_r(NULL, "\n", &save), i++) {
    char *f1 = strchr(line, '\t'), *f2 = f1 ? strchr(f1 + 1, '\t') : NULL;
    if (!f2 || strncmp(line, r->sw.l[i].node->name, (size_t)(f1 - line)) != 0) break;
    if (r->swat_on) r->sw.l[i].sparsity = strtod(f2 + 1, NULL);
  }
  free(copy);
  if (i != r->sw.n) return tr_ckpt_incomplete(path, "its SWAT layers differ from the model's", e);
  return SW_OK;
}

/* ---- export ---- */

typedef struct export_tensor {
  const char *name;
  const float *data;
  int64_t numel;
} export_tensor;

typedef struct export_ctx {
  export_tensor *t;
  int n;
  char mismatch[600]; /* the first initializer whose size differs from the trained tensor */
} export_ctx;

static const float *export_lookup(void *ctx, const char *name, int64_t numel) {
  export_ctx *c = ctx;
  for (int i = 0; i < c->n; i++)
    if (strcmp(c->t[i].name, name) == 0) {
      if (c->t[i].numel == numel) return c->t[i].data;
      if (!c->mismatch[0])
        snprintf(c->mismatch, sizeof c->mismatch, "'%s' (%lld values in the model, %lld trained)", name, (long long)numel,
                 (long long)c->t[i].numel);
      return NULL;
    }
  return NULL;
}

/* Writes the model saved in ck (label names it in messages) to out as ONNX. */
int tr_export_ckpt(const sw_ckpt *ck, const char *label, const char *out, int sparse, int64_t *bytes, sw_err *e) {
  size_t model_n, lt_n;
  const void *model_b = sw_ckpt_get(ck, "model.onnx", &model_n);
  const char *layers = sw_ckpt_get(ck, "swat/layers", &lt_n);
  if (!model_b || !layers) return tr_ckpt_incomplete(label, "it holds no model", e);
  export_ctx c = {0};
  for (int i = 0; i < ck->n; i++)
    if (strncmp(ck->s[i].name, "tensor/", 7) == 0) {
      c.t = sw_xrealloc(c.t, sizeof *c.t * (size_t)(c.n + 1));
      c.t[c.n++] = (export_tensor){ck->s[i].name + 7, ck->s[i].data, (int64_t)(ck->s[i].size / sizeof(float))};
    }
  /* SWAT layers: the weight as the evaluation graph uses it (Top-K'd) */
  char *copy = sw_xmalloc(lt_n + 1), *save = NULL;
  memcpy(copy, layers, lt_n);
  copy[lt_n] = 0;
  float **owned = NULL;
  const char **sparse_names = NULL;
  int n_owned = 0, n_sparse = 0, rc = SW_OK;
  sw_json lj;
  sw_json_init(&lj);
  sw_json_object_begin(&lj, NULL);
  double zeros = 0, total = 0;
  for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    char *node = line, *w = strchr(node, '\t'), *sp = w ? strchr(w + 1, '\t') : NULL, *gr = sp ? strchr(sp + 1, '\t') : NULL;
    if (!gr) {
      rc = tr_ckpt_incomplete(label, "its SWAT layer table is malformed", e);
      break;
    }
    *w++ = 0;
    *sp++ = 0;
    *gr++ = 0;
    double s = strtod(sp, NULL);
    long long group = strtoll(gr, NULL, 10);
    export_tensor *t = NULL;
    for (int i = 0; i < c.n; i++)
      if (strcmp(c.t[i].name, w) == 0) t = &c.t[i];
    if (!t || !(s >= 0 && s < 1) || group < 1) {
      rc = tr_ckpt_incomplete(label, "a SWAT layer's weight is missing", e);
      break;
    }
    float *ws = sw_xmalloc(sizeof(float) * (size_t)(t->numel ? t->numel : 1));
    int64_t nz = swat_sparsify(t->data, t->numel, group, s, ws);
    owned = sw_xrealloc(owned, sizeof *owned * (size_t)(n_owned + 1));
    owned[n_owned++] = ws;
    t->data = ws;
    zeros += (double)(t->numel - nz);
    total += (double)t->numel;
    sw_json_number(&lj, node, t->numel ? (double)(t->numel - nz) / (double)t->numel : 0);
    if (s > 0 && 3 * nz < t->numel) { /* sparse storage (an int64 index + a value per nonzero) is smaller */
      sparse_names = sw_xrealloc(sparse_names, sizeof *sparse_names * (size_t)(n_sparse + 1));
      sparse_names[n_sparse++] = t->name;
    }
  }
  sw_json_object_end(&lj);
  if (!rc) {
    char budget[32], cmd[1024], acc[64] = "", sp_s[64];
    double ta;
    long long ev = 0;
    tr_meta_str(ck, "budget", budget, sizeof budget);
    tr_meta_str(ck, "command", cmd, sizeof cmd);
    if (tr_meta_int(ck, "evaluated", &ev) && ev && tr_meta_double(ck, "test_acc", &ta)) snprintf(acc, sizeof acc, "%.6f", ta);
    snprintf(sp_s, sizeof sp_s, "%.6f", total > 0 ? zeros / total : 0.0);
    size_t pn;
    const char *pre = sw_ckpt_get(ck, "preprocess", &pn);
    export_meta meta[7];
    int nm = 0;
    meta[nm++] = (export_meta){"swatc.version", SWATC_VERSION};
    meta[nm++] = (export_meta){"swatc.budget", budget[0] ? budget : "dense"};
    meta[nm++] = (export_meta){"swatc.sparsity", sp_s};
    meta[nm++] = (export_meta){"swatc.layer_sparsity", sw_json_text(&lj)};
    if (acc[0]) meta[nm++] = (export_meta){"swatc.test_accuracy", acc};
    if (cmd[0]) meta[nm++] = (export_meta){"swatc.command", cmd};
    if (pre) meta[nm++] = (export_meta){"swatc.preprocess", pre};
    char dir[1024];
    tr_meta_str(ck, "model_dir", dir, sizeof dir);
    struct stat sb;
    int have_dir = dir[0] && stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode);
    export_opts eo = {.lookup = export_lookup, .lookup_ctx = &c, .sparse_initializers = sparse, .sparse_names = sparse_names,
                      .n_sparse = n_sparse, .meta = meta, .n_meta = nm};
    rc = exporter_write(model_b, model_n, have_dir ? dir : NULL, &eo, out, bytes, e);
    if (!rc && c.mismatch[0]) {
      unlink(out);
      sw_fail(e, SW_EINPUT, "cannot export %s: the trained tensor %s does not fit the model's initializer", label, c.mismatch);
      rc = sw_hint(e, "this is a bug in swatc; please report it with the model");
    }
  }
  for (int i = 0; i < n_owned; i++) free(owned[i]);
  free(owned);
  free(sparse_names);
  free(copy);
  free(c.t);
  sw_json_free(&lj);
  return rc;
}

int trainer_export(const char *ckpt_path, const char *out_path, int sparse_initializers, int64_t *bytes, sw_err *e) {
  sw_ckpt ck;
  int rc = sw_ckpt_read(ckpt_path, &ck, e);
  if (!rc) rc = tr_export_ckpt(&ck, ckpt_path, out_path, sparse_initializers, bytes, e);
  sw_ckpt_free(&ck);
  return rc;
}

int trainer_ckpt_print(const char *ckpt_path, FILE *f, sw_err *e) {
  sw_ckpt ck;
  if (sw_ckpt_read(ckpt_path, &ck, e)) return e->code;
  fprintf(f, "checkpoint %s: %d sections\n", ckpt_path, ck.n);
  static const char *const text[] = {"meta", "options"};
  for (int k = 0; k < 2; k++) {
    size_t n;
    const char *t = sw_ckpt_get(&ck, text[k], &n);
    for (size_t p = 0; t && p < n;) {
      const char *nl = memchr(t + p, '\n', n - p);
      size_t l = nl ? (size_t)(nl - t - p) : n - p;
      fprintf(f, "%s %.*s\n", text[k], (int)l, t + p);
      p += l + 1;
    }
  }
  for (int i = 0; i < ck.n; i++) {
    const char *nm = ck.s[i].name;
    int tensor = !strncmp(nm, "tensor/", 7), mom = !strncmp(nm, "momentum/", 9);
    char hex[65];
    sw_sha256_hex(ck.s[i].data, ck.s[i].size, hex);
    if (tensor || mom)
      fprintf(f, "%s %s %zu %s\n", tensor ? "tensor" : "momentum", nm + (tensor ? 7 : 9), ck.s[i].size / sizeof(float), hex);
    else if (!strcmp(nm, "model.onnx"))
      fprintf(f, "model %zu bytes, sha256 %s\n", ck.s[i].size, hex);
  }
  sw_ckpt_free(&ck);
  return SW_OK;
}
