/* The training driver, top to bottom: import → passes → programs → epochs of SGD + evaluation. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "importer/importer.h"
#include "passes/passes.h"
#include "runtime/runtime.h"
#include "train/dataset.h"
#include "train/loader.h"
#include "train/metrics.h"
#include "train/optim.h"
#include "train/schedule.h"
#include "train/trainer.h"

void trainer_opts_default(trainer_opts *o) {
  memset(o, 0, sizeof *o);
  o->data = "fashion-mnist";
  o->epochs = 10;
  o->batch = 128;
  o->lr = 0.05;
  o->momentum = 0.9;
  o->wd = 5e-4;
  o->schedule = "cosine";
  o->augment = -1;
  o->swat.period = 10;
}

static const char *const train_passes[] = {"train-mode", "add-loss", "autodiff", "dce", "swat", "fuse"};
static const char *const eval_passes[] = {"eval-mode", "add-loss", "dce", "swat", "fuse"};

/* One compiled graph at one batch size, with what the driver reads and writes. */
typedef struct bound {
  rt_program *prog;
  int64_t batch;
  float *images;
  int64_t *labels;
  float *loss, *logits;
  int64_t classes;
  float **grads; /* per state tensor (NULL for state without gradient) */
} bound;

typedef struct model {
  ir_graph *g;
  FILE *dump;   /* where dumps of this graph go (training graph only), NULL for none */
  const char *image_input, *logits_name, *loss_name;
  bound *b;
  int n_b;
} model;

static void model_free(model *m) {
  for (int i = 0; i < m->n_b; i++) {
    rt_program_free(m->b[i].prog);
    free(m->b[i].grads);
  }
  free(m->b);
  ir_graph_free(m->g);
}

static int build_graph(const char *path, const trainer_opts *o, const char *const *passes, int n_passes, FILE *dump, model *m,
                       sw_err *e) {
  importer_opts io = {.batch = o->static_batch ? IMPORTER_BATCH_STATIC : IMPORTER_BATCH_AUTO};
  if (importer_load(path, &io, &m->g, e)) return e->code;
  ir_graph *g = m->g;
#ifdef NDEBUG
  int verify = 0;
#else
  int verify = 1; /* debug builds check the IR's invariants after every pass */
#endif
  pass_opts po = {.verify = verify, .dump = o->dump_ir, .dump_file = dump, .batch = o->batch, .swat = &o->swat};
  if (passes == train_passes) {
    passes_dump(g, "import", &po);
    if (o->dump_ir) m->dump = dump ? dump : stderr;
  } else {
    po.dump = NULL; /* dumps show the training graph */
  }
  if (passes_run(g, passes, n_passes, &po, e)) return e->code;
  /* the image input: the float input of rank >= 2 */
  for (int i = 0; i < g->n_inputs && !m->image_input; i++)
    if (g->inputs[i]->dtype == IR_F32 && g->inputs[i]->shape.rank >= 2) m->image_input = g->inputs[i]->name;
  if (!m->image_input || g->n_inputs != 2) {
    sw_fail(e, SW_EINPUT, "the model must have one float image input (it has %d inputs besides the labels)", g->n_inputs - 1);
    return sw_hint(e, "swatc trains image classifiers with a single input [N, C, H, W]");
  }
  for (int i = 0; i < g->n_nodes; i++)
    if (g->nodes[i]->role == IR_ROLE_LOSS) {
      m->loss_name = g->nodes[i]->out[0]->name;
      m->logits_name = g->nodes[i]->in[0]->name;
    }
  if (!g->batch_free) {
    if (g->export_batch != o->batch) {
      sw_fail(e, SW_EINPUT, "the model's batch size is fixed at %lld, but training uses batch %d", (long long)g->export_batch, o->batch);
      return sw_hint(e, "export the model with a dynamic batch axis (dynamic_axes={'input': {0: 'batch'}}), or pass --batch %lld",
                     (long long)g->export_batch);
    }
  }
  return SW_OK;
}

/* The program of m for `batch` (built on first use: memory-plan for that batch, then compile). */
static bound *program_for(model *m, rt_state *st, int64_t batch, const trainer_opts *o, int with_grads, sw_err *e) {
  for (int i = 0; i < m->n_b; i++)
    if (m->b[i].batch == batch) return &m->b[i];
  pass_opts po = {.batch = batch};
  if (!m->g->batch_free && batch != m->g->export_batch) {
    sw_fail(e, SW_EINPUT, "the model's batch size is fixed at %lld; cannot run a batch of %lld", (long long)m->g->export_batch,
            (long long)batch);
    sw_hint(e, "export the model with a dynamic batch axis, or use --drop-last and --limit-test to multiples of it");
    return NULL;
  }
  if (pass_memory_plan(m->g, &po, e)) return NULL;
  m->b = sw_xrealloc(m->b, sizeof *m->b * (size_t)(m->n_b + 1));
  bound *b = &m->b[m->n_b];
  memset(b, 0, sizeof *b);
  if (rt_program_build(m->g, st, batch, o->threads, &b->prog, e)) return NULL;
  m->n_b++;
  if (m->dump && m->n_b == 1) { /* the first program of the training graph: show memory plan and kernels */
    pass_opts dpo = {.dump = o->dump_ir, .dump_file = m->dump};
    passes_dump(m->g, "memory-plan", &dpo);
    rt_program_annotate(b->prog, m->g);
    passes_dump(m->g, "lower", &dpo);
  }
  b->batch = batch;
  rt_program_set_seed(b->prog, o->seed);
  int64_t n;
  b->images = rt_program_buffer(b->prog, m->image_input, NULL);
  b->labels = rt_program_buffer(b->prog, PASS_LABELS_INPUT, NULL);
  b->loss = rt_program_buffer(b->prog, m->loss_name, NULL);
  b->logits = rt_program_buffer(b->prog, m->logits_name, &n);
  b->classes = n / batch;
  if (with_grads) {
    b->grads = sw_xcalloc((size_t)st->n + 1, sizeof *b->grads);
    for (int i = 0; i < st->n; i++) {
      ir_value *v = ir_value_find(m->g, st->t[i].name);
      if (v && v->grad) b->grads[i] = rt_program_buffer(b->prog, v->grad->name, NULL);
    }
  }
  if (o->profile) rt_program_profile(b->prog, 1);
  return b;
}

/* SWAT bookkeeping of the training graph: per layer, its Top-K nodes and state tensors. */
typedef struct swat_run {
  swat_layer *l;
  int n;
  rt_tensor **w_state, **x_state, **weight; /* per layer (NULL when the layer is dense) */
  int *w_index;                             /* index of the weight in the state (for its momentum) */
  double *score, *density;
  int64_t *numel;
  double *m_score, *m_density; /* SWAT-M work arrays (no allocation per step) */
  int64_t *m_numel;
} swat_run;

static void swat_run_free(swat_run *r) {
  free(r->l);
  free(r->w_state);
  free(r->x_state);
  free(r->weight);
  free(r->w_index);
  free(r->score);
  free(r->density);
  free(r->numel);
  free(r->m_score);
  free(r->m_density);
  free(r->m_numel);
}

static int swat_run_init(swat_run *r, const ir_graph *g, rt_state *st, const trainer_opts *o, sw_err *e) {
  memset(r, 0, sizeof *r);
  if (swat_layers(g, &r->l, &r->n, e) || swat_budgets(r->l, r->n, &o->swat, e)) return e->code;
  r->w_state = sw_xcalloc((size_t)r->n + 1, sizeof *r->w_state);
  r->x_state = sw_xcalloc((size_t)r->n + 1, sizeof *r->x_state);
  r->weight = sw_xcalloc((size_t)r->n + 1, sizeof *r->weight);
  r->w_index = sw_xcalloc((size_t)r->n + 1, sizeof *r->w_index);
  r->score = sw_xcalloc((size_t)r->n + 1, sizeof *r->score);
  r->density = sw_xcalloc((size_t)r->n + 1, sizeof *r->density);
  r->numel = sw_xcalloc((size_t)r->n + 1, sizeof *r->numel);
  r->m_score = sw_xcalloc((size_t)r->n + 1, sizeof *r->m_score);
  r->m_density = sw_xcalloc((size_t)r->n + 1, sizeof *r->m_density);
  r->m_numel = sw_xcalloc((size_t)r->n + 1, sizeof *r->m_numel);
  for (int i = 0; i < r->n; i++) {
    char name[600];
    r->numel[i] = r->l[i].numel;
    snprintf(name, sizeof name, "swat.%s.w", r->l[i].node->name);
    r->w_state[i] = rt_state_find(st, name);
    snprintf(name, sizeof name, "swat.%s.x", r->l[i].node->name);
    r->x_state[i] = rt_state_find(st, name);
    r->weight[i] = rt_state_find(st, r->l[i].weight->name);
    r->w_index[i] = r->weight[i] ? (int)(r->weight[i] - st->t) : -1;
  }
  return SW_OK;
}

/* Sets the current per-layer budgets on the Top-K nodes of one program. */
static void swat_apply(const swat_run *r, rt_program *p) {
  for (int i = 0; i < r->n; i++) {
    char name[600];
    snprintf(name, sizeof name, "%s/topk_w", r->l[i].node->name);
    rt_program_set_sparsity(p, name, r->l[i].sparsity);
    snprintf(name, sizeof name, "%s/topk_x", r->l[i].node->name);
    rt_program_set_sparsity(p, name, r->l[i].sparsity);
  }
}

/* SWAT-M: after an optimizer step, the budget follows the mean |momentum| of each layer's active weights. */
static void swat_momentum_step(swat_run *r, model *m, float *const *mom, const trainer_opts *o) {
  for (int i = 0; i < r->n; i++) {
    const rt_tensor *w = r->weight[i];
    const float *mm = r->w_index[i] >= 0 ? mom[r->w_index[i]] : NULL;
    float thr = r->w_state[i] ? r->w_state[i]->data[0] : 0.0f;
    double s = 0;
    int64_t k = 0;
    for (int64_t j = 0; w && mm && j < w->numel; j++)
      if (fabsf(w->data[j]) >= thr) {
        s += fabsf(mm[j]);
        k++;
      }
    r->score[i] = k ? s / (double)k : 0;
  }
  /* layers kept dense by the user stay out of the redistribution */
  double *sc = r->m_score, *de = r->m_density, fixed = 0, all = 0;
  int64_t *nu = r->m_numel;
  int k = 0;
  for (int i = 0; i < r->n; i++) {
    all += (double)r->numel[i];
    if (r->l[i].forced_dense) {
      fixed += (double)r->numel[i];
      continue;
    }
    sc[k] = r->score[i];
    nu[k++] = r->numel[i];
  }
  double free_n = all - fixed, target = free_n > 0 ? 1.0 - ((1.0 - o->swat.sparsity) * all - fixed) / free_n : 0;
  swat_momentum_budget(sc, nu, k, target > 0 ? target : 0, de);
  for (int i = 0, j = 0; i < r->n; i++) r->density[i] = r->l[i].forced_dense ? 1.0 : de[j++];
  for (int i = 0; i < r->n; i++) {
    double sp = 1.0 - r->density[i];
    r->l[i].sparsity = sp > 0.999 ? 0.999 : sp;
  }
  for (int b = 0; b < m->n_b; b++) swat_apply(r, m->b[b].prog);
}

/* Realised sparsities (from the Top-K states) into per-layer arrays; returns the training-FLOP reduction. */
static double swat_realised(const swat_run *r, double *dw, double *da, double *overall) {
  double zeros = 0, total = 0;
  int64_t *macs = sw_xcalloc((size_t)r->n + 1, sizeof *macs);
  for (int i = 0; i < r->n; i++) {
    dw[i] = r->w_state[i] ? r->w_state[i]->data[1] : 1.0;
    da[i] = r->x_state[i] ? r->x_state[i]->data[1] : 1.0;
    zeros += (1 - dw[i]) * (double)r->numel[i];
    total += (double)r->numel[i];
    macs[i] = r->l[i].macs;
  }
  *overall = total > 0 ? zeros / total : 0;
  double red = swat_flop_reduction(macs, dw, da, r->n);
  free(macs);
  return red;
}

static int64_t correct(const float *logits, const int64_t *labels, int64_t n, int64_t classes) {
  int64_t c = 0;
  for (int64_t i = 0; i < n; i++) {
    const float *l = logits + i * classes;
    int64_t best = 0;
    for (int64_t k = 1; k < classes; k++)
      if (l[k] > l[best]) best = k;
    c += best == labels[i];
  }
  return c;
}

static int evaluate(model *m, rt_state *st, const sw_dataset *test, const trainer_opts *o, double *loss, double *acc, sw_err *e) {
  sw_loader_opts lo = {.batch = o->batch, .shuffle = 0, .drop_last = 0, .augment = 0, .seed = o->seed};
  sw_loader ld;
  if (sw_loader_init(&ld, test, &lo, e)) return e->code;
  double lsum = 0;
  int64_t good = 0, seen = 0, got;
  int rc = SW_OK;
  float *img = sw_xmalloc(sizeof(float) * (size_t)o->batch * (size_t)sw_dataset_sample_size(test));
  int64_t *lab = sw_xmalloc(sizeof(int64_t) * (size_t)o->batch);
  while ((got = sw_loader_next(&ld, img, lab)) > 0) {
    bound *b = program_for(m, st, got, o, 0, e);
    if (!b) { rc = e->code; break; }
    memcpy(b->images, img, sizeof(float) * (size_t)got * (size_t)sw_dataset_sample_size(test));
    memcpy(b->labels, lab, sizeof(int64_t) * (size_t)got);
    if ((rc = rt_program_run(b->prog, 0, e))) break;
    lsum += (double)*b->loss * (double)got;
    good += correct(b->logits, lab, got, b->classes);
    seen += got;
  }
  free(img);
  free(lab);
  sw_loader_free(&ld);
  *loss = seen ? lsum / (double)seen : NAN;
  *acc = seen ? (double)good / (double)seen : 0;
  return rc;
}

int trainer_run(const char *model_path, const trainer_opts *o, sw_err *e) {
  int rc = SW_OK;
  model tm = {0}, em = {0};
  swat_run sw = {0};
  rt_state st;
  rt_state_init(&st);
  sw_dataset train = {0}, test = {0};
  sw_loader ld = {0};
  sw_jsonl jl = {0};
  int jl_open = 0;
  sw_json js;
  sw_json_init(&js);
  float **mom = NULL;
  float *img = NULL;
  int64_t *lab = NULL;
  FILE *dump = NULL;
  if (o->dump_file) {
    dump = fopen(o->dump_file, "w");
    if (!dump) {
      sw_fail(e, SW_EIO, "cannot write the IR dump to '%s'", o->dump_file);
      return sw_hint(e, "check that the folder exists and is writable");
    }
  }
  sw_progress pr;
  sw_progress_init(&pr, stderr, o->quiet ? SW_PROGRESS_QUIET : SW_PROGRESS_AUTO);

  /* the graphs: training step and evaluation forward pass, sharing one state */
  if ((rc = build_graph(model_path, o, train_passes, (int)SW_ARRAY_LEN(train_passes), dump, &tm, e))) goto done;
  if ((rc = build_graph(model_path, o, eval_passes, (int)SW_ARRAY_LEN(eval_passes), dump, &em, e))) goto done;
  if ((rc = rt_state_bind(&st, tm.g, e)) || (rc = rt_state_bind(&st, em.g, e))) goto done;
  if (o->swat.sparsity > 0 && (rc = swat_run_init(&sw, tm.g, &st, o, e))) goto done;

  /* data */
  sw_dataset_opts dopt = {.train_limit = o->limit_train, .test_limit = o->limit_test, .seed = o->seed};
  const ir_value *in = ir_value_find(tm.g, tm.image_input);
  const char *name = o->data;
  if (strcmp(name, "synthetic") == 0) {
    dopt.syn_c = (int)in->shape.d[1];
    dopt.syn_h = in->shape.rank > 2 ? (int)in->shape.d[2] : 1;
    dopt.syn_w = in->shape.rank > 3 ? (int)in->shape.d[3] : 1;
    dopt.syn_train = o->limit_train ? o->limit_train : 1024;
    dopt.syn_test = o->limit_test ? o->limit_test : 256;
    const ir_value *lg = ir_value_find(tm.g, tm.logits_name);
    dopt.syn_classes = (int)lg->shape.d[1];
  }
  if ((rc = sw_dataset_load(name, &dopt, &train, &test, e))) goto done;
  {
    int64_t shape[4];
    int r = in->shape.rank;
    for (int i = 0; i < r && i < 4; i++) shape[i] = in->shape.d[i] == IR_N ? 0 : in->shape.d[i];
    if ((rc = sw_dataset_check_input(&train, shape, r, tm.image_input, e))) goto done;
    const ir_value *lg = ir_value_find(tm.g, tm.logits_name);
    if ((rc = sw_dataset_check_classes(&train, lg->shape.d[1], e))) goto done;
  }
  sw_loader_opts lo = {.batch = o->batch, .shuffle = 1, .drop_last = o->drop_last, .seed = o->seed};
  /* auto: crop + flip for real 32x32 images (CIFAR); never for synthetic noise */
  int aug = o->augment > 0 || (o->augment < 0 && train.h == 32 && train.w == 32 && strcmp(train.name, "synthetic") != 0);
  lo.augment = aug ? SW_AUG_CROP | SW_AUG_FLIP : 0;
  if ((rc = sw_loader_init(&ld, &train, &lo, e))) goto done;
  int64_t steps_per_epoch = sw_loader_batches_per_epoch(&ld);
  if (steps_per_epoch <= 0) {
    rc = sw_fail(e, SW_EINPUT, "no training batch: %lld samples with batch %d", (long long)train.n, o->batch);
    goto done;
  }

  /* optimizer and schedule */
  sw_sgd sgd = {.momentum = (float)o->momentum, .weight_decay = (float)o->wd, .nesterov = o->nesterov};
  if ((rc = sw_sgd_check(&sgd, e))) goto done;
  sw_sched sc;
  {
    char spec[256];
    const char *kind = strcmp(o->schedule, "cosine") == 0 ? "cosine-iter" : strcmp(o->schedule, "cosine-epoch") == 0 ? "cosine" : o->schedule;
    if (strcmp(o->schedule, "step") == 0 && o->milestones) snprintf(spec, sizeof spec, "step:%s", o->milestones);
    else snprintf(spec, sizeof spec, "%s", kind);
    if ((rc = sw_sched_parse(&sc, spec, e))) goto done;
  }
  sc.base_lr = o->lr;
  sc.epochs = o->epochs;
  sc.warmup_epochs = o->warmup_epochs;
  if ((rc = sw_sched_check(&sc, e))) goto done;
  mom = sw_xcalloc((size_t)st.n + 1, sizeof *mom);
  for (int i = 0; i < st.n; i++)
    if (st.t[i].kind == IR_VAL_PARAM && o->momentum > 0) mom[i] = calloc((size_t)st.t[i].numel, sizeof(float));

  if (o->metrics) {
    if ((rc = sw_jsonl_open(&jl, o->metrics, 0, e))) goto done;
    jl_open = 1;
  }
  int64_t sample = sw_dataset_sample_size(&train);
  img = sw_xmalloc(sizeof(float) * (size_t)o->batch * (size_t)sample);
  lab = sw_xmalloc(sizeof(int64_t) * (size_t)o->batch);
  if (!o->quiet) {
    int64_t params = 0;
    for (int i = 0; i < st.n; i++)
      if (st.t[i].kind == IR_VAL_PARAM) params += st.t[i].numel;
    sw_progress_message(&pr, "swatc: training %s (%lld parameters) on %s: %lld train / %lld test images, batch %d, %d epochs",
                        model_path, (long long)params, train.name, (long long)train.n, (long long)test.n, o->batch, o->epochs);
  }
  uint64_t step = 0;
  double test_loss = NAN, test_acc = 0;
  for (int epoch = 0; epoch < o->epochs && !rc; epoch++) {
    double t0 = sw_clock_seconds(), lsum = 0, lr = 0;
    int64_t good = 0, seen = 0, got, bi = 0;
    sw_progress_epoch_begin(&pr, epoch, o->epochs, steps_per_epoch);
    while ((got = sw_loader_next(&ld, img, lab)) > 0) {
      bound *b = program_for(&tm, &st, got, o, 1, e);
      if (!b) { rc = e->code; break; }
      rt_program_set_topk_exact(b->prog, epoch < o->topk_warmup_epochs);
      if (sw.n && o->swat.budget == SWAT_MOMENTUM) swat_apply(&sw, b->prog); /* a program built mid-run */
      memcpy(b->images, img, sizeof(float) * (size_t)got * (size_t)sample);
      memcpy(b->labels, lab, sizeof(int64_t) * (size_t)got);
      if ((rc = rt_program_run(b->prog, step, e))) break;
      float loss = *b->loss;
      if (!isfinite(loss)) {
        rc = sw_fail(e, SW_ENUMERIC, "the training loss became %s at epoch %d, step %llu", isnan(loss) ? "NaN" : "infinite",
                     epoch + 1, (unsigned long long)step);
        sw_hint(e, "lower the learning rate (--lr) or add warm-up (--warmup-epochs 1)");
        break;
      }
      lr = sw_sched_lr_at(&sc, (int64_t)step, steps_per_epoch);
      for (int i = 0; i < st.n; i++)
        if (b->grads[i]) sw_sgd_step(&sgd, (float)lr, st.t[i].data, b->grads[i], mom[i], st.t[i].numel, step == 0);
      if (sw.n && o->swat.budget == SWAT_MOMENTUM && o->momentum > 0) swat_momentum_step(&sw, &tm, mom, o);
      lsum += (double)loss * (double)got;
      good += correct(b->logits, lab, got, b->classes);
      seen += got;
      step++;
      sw_progress_update(&pr, ++bi, lsum / (double)seen, (double)good / (double)seen, seen);
    }
    if (rc) break;
    sw_loader_next_epoch(&ld);
    double t_train = sw_clock_seconds() - t0;
    if ((rc = evaluate(&em, &st, &test, o, &test_loss, &test_acc, e))) break;
    sw_epoch_stats es = {.epoch = epoch + 1, .train_loss = lsum / (double)seen, .train_acc = (double)good / (double)seen,
                         .test_loss = test_loss, .test_acc = test_acc, .img_per_s = (double)seen / t_train, .lr = lr,
                         .seconds = sw_clock_seconds() - t0};
    sw_progress_epoch_end(&pr, &es);
    if (jl_open) {
      sw_json_reset(&js);
      sw_metrics_epoch_begin(&js, &es);
      sw_json_int(&js, "steps", (int64_t)step);
      if (sw.n) {
        double *dw = sw_xcalloc((size_t)sw.n, sizeof *dw), *da = sw_xcalloc((size_t)sw.n, sizeof *da), overall;
        double red = swat_realised(&sw, dw, da, &overall);
        sw_json_number(&js, "weight_sparsity", overall);
        sw_json_number(&js, "train_flop_reduction", red);
        sw_json_array_begin(&js, "layers");
        for (int i = 0; i < sw.n; i++) {
          sw_json_object_begin(&js, NULL);
          sw_json_string(&js, "name", sw.l[i].node->name);
          sw_json_number(&js, "budget", sw.l[i].sparsity);
          sw_json_number(&js, "weight_sparsity", 1 - dw[i]);
          sw_json_number(&js, "act_sparsity", 1 - da[i]);
          sw_json_object_end(&js);
        }
        sw_json_array_end(&js);
        free(dw);
        free(da);
      }
      sw_json_object_end(&js);
      if ((rc = sw_jsonl_write(&jl, &js, e))) break;
    }
  }
  if (!rc) {
    if (sw.n && !o->quiet) {
      double *dw = sw_xcalloc((size_t)sw.n, sizeof *dw), *da = sw_xcalloc((size_t)sw.n, sizeof *da), overall;
      double red = swat_realised(&sw, dw, da, &overall);
      fprintf(stderr, "\nSWAT sparsity at the end of training (budget -> realised):\n");
      fprintf(stderr, "  %-40s %10s %8s %8s %8s %10s\n", "layer", "params", "budget", "weights", "inputs", "MACs/img");
      for (int i = 0; i < sw.n; i++)
        fprintf(stderr, "  %-40.40s %10lld %8.4f %8.4f %8.4f %10lld\n", sw.l[i].node->name, (long long)sw.numel[i],
                sw.l[i].sparsity, 1 - dw[i], 1 - da[i], (long long)sw.l[i].macs);
      fprintf(stderr, "  overall weight sparsity %.4f, training-FLOP reduction %.1f%%\n\n", overall, 100 * red);
      free(dw);
      free(da);
    }
    sw_progress_result(&pr, "test accuracy %.2f%% (loss %.4f) after %d epochs", 100 * test_acc, test_loss, o->epochs);
    if (o->profile && tm.n_b) rt_program_profile_print(tm.b[0].prog, stderr);
  }
done:
  if (jl_open) {
    sw_err ce = {0};
    if (sw_jsonl_close(&jl, &ce) && !rc) {
      *e = ce;
      rc = ce.code;
    }
  }
  sw_json_free(&js);
  if (mom)
    for (int i = 0; i < st.n; i++) free(mom[i]);
  free(mom);
  free(img);
  free(lab);
  sw_loader_free(&ld);
  sw_dataset_free(&train);
  sw_dataset_free(&test);
  model_free(&tm);
  model_free(&em);
  rt_state_free(&st);
  swat_run_free(&sw);
  if (dump) fclose(dump);
  return rc;
}
