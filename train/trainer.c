/* The training driver, top to bottom: import → passes → programs → epochs of SGD + evaluation, with
 * checkpoints (save, resume, signals), ONNX export of the trained model and evaluation of ONNX models. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "train/optim.h"
#include "train/schedule.h"
#include "train/trainer_internal.h"

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
  o->sparse_kernels = 1;
}

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

/* The Top-K state of the X_s layer f's weight gradient reads, or NULL when it reads a dense X: for a
 * layer whose X_s the swat pass shares with another layer's (the state is named after that one). */
static rt_tensor *x_state_of(const ir_graph *g, rt_state *st, const ir_node *f) {
  for (int i = 0; i < g->n_nodes; i++) {
    const ir_node *n = g->nodes[i];
    if (n->fwd != f || (strcmp(n->op->name, "ConvGradWeight") && strcmp(n->op->name, "GemmGradWeight"))) continue;
    const ir_node *tk = n->in[1] ? n->in[1]->producer : NULL;
    if (tk && !strcmp(tk->op->name, "TopKSparsify")) return rt_state_find(st, tk->in[1]->name);
  }
  return NULL;
}

/* The layers SWAT considers (also for a dense run: the export reports their sparsity) and their state. */
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
    if (!r->x_state[i]) r->x_state[i] = x_state_of(g, st, r->l[i].node); /* an X_s shared with another layer */
    r->weight[i] = rt_state_find(st, r->l[i].weight->name);
    r->w_index[i] = r->weight[i] ? (int)(r->weight[i] - st->t) : -1;
  }
  return SW_OK;
}

/* Sets the current per-layer budgets on the Top-K nodes of one program. */
void tr_swat_apply(const swat_run *r, rt_program *p) {
  for (int i = 0; i < r->n; i++) {
    char name[600];
    snprintf(name, sizeof name, "%s/topk_w", r->l[i].node->name);
    rt_program_set_sparsity(p, name, r->l[i].sparsity);
    snprintf(name, sizeof name, "%s/topk_x", r->l[i].node->name);
    rt_program_set_sparsity(p, name, r->l[i].sparsity);
  }
}

/* SWAT-M: after an optimizer step, the budget follows the mean |momentum| of each layer's active weights
 * (set on the training programs here; the evaluation programs take it before each evaluation). */
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
  for (int b = 0; b < m->n_b; b++) tr_swat_apply(r, m->b[b].prog);
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

/* ---- the training run ---- */

static volatile sig_atomic_t g_signal; /* SIGINT/SIGTERM seen: finish the step, checkpoint, stop */

static void on_signal(int sig) {
  if (g_signal) _exit(TRAINER_SIGNALLED + sig); /* a second signal stops at once */
  g_signal = sig;
}

/* Appends " word" to b, single-quoted when a shell would split or expand it. */
static void sb_word(sbuf *b, const char *w) {
  int plain = *w != 0;
  for (const char *p = w; *p && plain; p++) plain = isalnum((unsigned char)*p) || strchr("-_./=,:+@%", *p);
  if (plain) {
    sb_printf(b, " %s", w);
    return;
  }
  sb_printf(b, " '");
  for (const char *p = w; *p; p++) {
    if (*p == '\'') sb_printf(b, "'\\''");
    else sb_printf(b, "%c", *p);
  }
  sb_printf(b, "'");
}

/* The command that resumes this run: swatc train --resume CHECKPOINT and the run's options (the model
 * comes from the checkpoint). */
static void resume_command(const trainer_opts *o, sbuf *b) {
  sb_printf(b, "swatc train --resume");
  sb_word(b, o->checkpoint);
  for (int i = 0; i < o->n_resume_args; i++) sb_word(b, o->resume_args[i]);
}

static int same_file(const char *a, const char *b) {
  struct stat sa, sb;
  if (stat(a, &sa) != 0 || stat(b, &sb) != 0) return strcmp(a, b) == 0;
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* Opens the metrics file; a resumed run appends after the lines its checkpoint had seen written (lines
 * written after that checkpoint are dropped: the resumed run writes them again). */
static int metrics_open(run *r, const sw_ckpt *ck, sw_err *e) {
  const char *path = r->o->metrics;
  int append = ck != NULL;
  if (ck) {
    char was[1024];
    long long at;
    struct stat sb;
    tr_meta_str(ck, "metrics", was, sizeof was);
    if (was[0] && tr_meta_int(ck, "metrics_bytes", &at) && at >= 0 && same_file(was, path) && stat(path, &sb) == 0 &&
        sb.st_size > at && truncate(path, (off_t)at) != 0) {
      sw_fail(e, SW_EIO, "cannot truncate the metrics file '%s' to the %lld bytes the checkpoint saw (%s)", path, at, strerror(errno));
      return sw_hint(e, "check the file's permissions");
    }
  }
  if (sw_jsonl_open(&r->jl, path, append, e)) return e->code;
  r->jl_open = 1;
  if (append) fseek(r->jl.f, 0, SEEK_END);
  return SW_OK;
}

/* Writes one epoch's metrics line. */
static int metrics_epoch(run *r, sw_json *js, const sw_epoch_stats *es, sw_err *e) {
  sw_json_reset(js);
  sw_metrics_epoch_begin(js, es);
  sw_json_int(js, "steps", (int64_t)r->step);
  if (r->swat_on) {
    swat_run *sw = &r->sw;
    double *dw = sw_xcalloc((size_t)sw->n + 1, sizeof *dw), *da = sw_xcalloc((size_t)sw->n + 1, sizeof *da), overall;
    double red = swat_realised(sw, dw, da, &overall);
    sw_json_number(js, "weight_sparsity", overall);
    sw_json_number(js, "train_flop_reduction", red);
    sw_json_array_begin(js, "layers");
    for (int i = 0; i < sw->n; i++) {
      sw_json_object_begin(js, NULL);
      sw_json_string(js, "name", sw->l[i].node->name);
      sw_json_number(js, "budget", sw->l[i].sparsity);
      sw_json_number(js, "weight_sparsity", 1 - dw[i]);
      sw_json_number(js, "act_sparsity", 1 - da[i]);
      sw_json_object_end(js);
    }
    sw_json_array_end(js);
    free(dw);
    free(da);
  }
  sw_json_object_end(js);
  return sw_jsonl_write(&r->jl, js, e);
}

/* Prints the end-of-training SWAT table. */
static void swat_print(const run *r) {
  const swat_run *sw = &r->sw;
  double *dw = sw_xcalloc((size_t)sw->n + 1, sizeof *dw), *da = sw_xcalloc((size_t)sw->n + 1, sizeof *da), overall;
  double red = swat_realised(sw, dw, da, &overall);
  fprintf(stderr, "\nSWAT sparsity at the end of training (budget -> realised):\n");
  fprintf(stderr, "  %-40s %10s %8s %8s %8s %10s\n", "layer", "params", "budget", "weights", "inputs", "MACs/img");
  for (int i = 0; i < sw->n; i++)
    fprintf(stderr, "  %-40.40s %10lld %8.4f %8.4f %8.4f %10lld\n", sw->l[i].node->name, (long long)sw->numel[i],
            sw->l[i].sparsity, 1 - dw[i], 1 - da[i], (long long)sw->l[i].macs);
  fprintf(stderr, "  overall weight sparsity %.4f, training-FLOP reduction %.1f%%\n\n", overall, 100 * red);
  free(dw);
  free(da);
}

/* Exports the current state of r to o->output and prints where it went. */
static int export_run(const run *r, sw_progress *pr, sw_err *e) {
  sw_ckpt ck;
  sw_ckpt_init(&ck);
  tr_ckpt_build(r, 1, &ck);
  int64_t bytes = 0;
  int rc = tr_export_ckpt(&ck, r->src.name, r->o->output, r->o->sparse_initializers, &bytes, e);
  sw_ckpt_free(&ck);
  if (!rc) sw_progress_result(pr, "exported %s (%lld bytes)", r->o->output, (long long)bytes);
  return rc;
}

/* A resumed run whose checkpoint has done every epoch asked for: say so (and export it if asked). */
static int resume_finished(const run *r, const sw_ckpt *ck, long long done, sw_progress *pr, sw_err *e) {
  double acc = 0;
  long long ev = 0;
  int have = tr_meta_int(ck, "evaluated", &ev) && ev && tr_meta_double(ck, "test_acc", &acc);
  char accs[64] = "";
  if (have) snprintf(accs, sizeof accs, ", test accuracy %.2f%%", 100 * acc);
  fprintf(stderr, "swatc: '%s' holds a finished run (%lld of %d epochs done%s): nothing to train\n", r->o->resume, done,
          r->o->epochs, accs);
  fprintf(stderr, "  hint: pass --epochs N with N > %lld to train further, or export it: swatc export %s -o MODEL.onnx\n", done,
          r->o->resume);
  if (!r->o->output) return SW_OK;
  int64_t bytes = 0;
  int rc = tr_export_ckpt(ck, r->o->resume, r->o->output, r->o->sparse_initializers, &bytes, e);
  if (!rc) sw_progress_result(pr, "exported %s (%lld bytes)", r->o->output, (long long)bytes);
  return rc;
}

int trainer_run(const char *model_path, const trainer_opts *opts, sw_err *e) {
  trainer_opts oo = *opts;
  if (oo.resume && !oo.checkpoint) oo.checkpoint = oo.resume; /* a resumed run keeps checkpointing where it came from */
  const trainer_opts *o = &oo;
  rt_set_sparse_kernels(o->sparse_kernels);
  run R = {0}, *r = &R;
  r->o = o;
  r->test_loss = NAN;
  rt_state_init(&r->st);
  sw_ckpt ck;
  sw_ckpt_init(&ck);
  int have_ck = 0, rc = SW_OK, handlers = 0;
  char first_cmd[2048];
  struct sigaction old_int, old_term;
  sw_json js;
  sw_json_init(&js);
  float *img = NULL;
  int64_t *lab = NULL;
  FILE *dump = NULL;
  g_signal = 0;
  if (o->dump_file) {
    dump = fopen(o->dump_file, "w");
    if (!dump) {
      sw_fail(e, SW_EIO, "cannot write the IR dump to '%s'", o->dump_file);
      return sw_hint(e, "check that the folder exists and is writable");
    }
  }
  sw_progress pr;
  sw_progress_init(&pr, stderr, o->quiet ? SW_PROGRESS_QUIET : SW_PROGRESS_AUTO);

  /* the source model (its bytes go into checkpoints and exports): the file named, or else the copy in the
   * checkpoint resumed; a file named must be the checkpoint's model */
  SW_ASSERT(model_path || o->resume);
  if (model_path && (rc = tr_model_src_read(&r->src, model_path, e))) goto done;
  if (o->resume) {
    if ((rc = sw_ckpt_read(o->resume, &ck, e))) goto done;
    if (!model_path && (rc = tr_ckpt_model(&ck, o->resume, &r->src, e))) goto done;
    if ((rc = tr_ckpt_check(&ck, o->resume, r, e))) goto done;
    have_ck = 1;
    tr_meta_str(&ck, "command", first_cmd, sizeof first_cmd);
    if (first_cmd[0]) r->command = first_cmd;
    long long ep, bi, pos, was_epochs;
    if (!tr_meta_int(&ck, "epoch", &ep) || !tr_meta_int(&ck, "epoch_batches", &bi) || !tr_meta_int(&ck, "loader_pos", &pos)) {
      rc = tr_ckpt_incomplete(o->resume, "its step counters are missing", e);
      goto done;
    }
    if (ep >= o->epochs) {
      if (bi == 0 && pos == 0) {
        rc = resume_finished(r, &ck, ep, &pr, e);
        goto done;
      }
      rc = sw_fail(e, SW_EINPUT, "'%s' is in the middle of epoch %lld, beyond --epochs %d", o->resume, ep + 1, o->epochs);
      sw_hint(e, "pass --epochs %lld or more to finish it", ep + 1);
      goto done;
    }
    if (tr_meta_int(&ck, "epochs", &was_epochs) && was_epochs != o->epochs && strncmp(o->schedule, "cosine", 6) == 0)
      sw_warn("the run in '%s' was started with --epochs %lld; the cosine schedule now anneals over %d epochs, so the learning "
              "rate from here on differs from the original run's", o->resume, was_epochs, o->epochs);
  }

  /* the graphs: training step and evaluation forward pass, sharing one state */
  if ((rc = tr_build_graph(&r->src, o, train_passes, (int)SW_ARRAY_LEN(train_passes), dump, &r->tm, e))) goto done;
  if ((rc = tr_build_graph(&r->src, o, eval_passes, (int)SW_ARRAY_LEN(eval_passes), dump, &r->em, e))) goto done;
  if ((rc = rt_state_bind(&r->st, r->tm.g, e)) || (rc = rt_state_bind(&r->st, r->em.g, e))) goto done;
  r->pool = rt_pool_new();
  r->tm.pool = r->em.pool = r->pool;
  r->swat_on = o->swat.sparsity > 0;
  if ((rc = swat_run_init(&r->sw, r->tm.g, &r->st, o, e))) goto done;

  /* data */
  if ((rc = tr_load_data(&r->tm, o, &r->train, &r->test, e))) goto done;
  sw_loader_opts lo = {.batch = o->batch, .shuffle = 1, .drop_last = o->drop_last, .seed = o->seed};
  /* auto: crop + flip for real 32x32 images (CIFAR); never for synthetic noise */
  int aug = o->augment > 0 ||
            (o->augment < 0 && r->train.h == 32 && r->train.w == 32 && strcmp(r->train.name, "synthetic") != 0);
  lo.augment = aug ? SW_AUG_CROP | SW_AUG_FLIP : 0;
  if ((rc = sw_loader_init(&r->ld, &r->train, &lo, e))) goto done;
  int64_t steps_per_epoch = sw_loader_batches_per_epoch(&r->ld);
  if (steps_per_epoch <= 0) {
    rc = sw_fail(e, SW_EINPUT, "no training batch: %lld samples with batch %d", (long long)r->train.n, o->batch);
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
  r->mom = sw_xcalloc((size_t)r->st.n + 1, sizeof *r->mom);
  for (int i = 0; i < r->st.n; i++)
    if (r->st.t[i].kind == IR_VAL_PARAM && o->momentum > 0) r->mom[i] = sw_xcalloc((size_t)r->st.t[i].numel, sizeof(float));

  if (have_ck && (rc = tr_ckpt_restore(r, &ck, o->resume, e))) goto done;
  if (o->metrics && (rc = metrics_open(r, have_ck ? &ck : NULL, e))) goto done;
  if (o->checkpoint) { /* a signal finishes the step, writes the checkpoint and stops */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    handlers = 1;
  }
  int64_t sample = sw_dataset_sample_size(&r->train);
  img = sw_xmalloc(sizeof(float) * (size_t)o->batch * (size_t)sample);
  lab = sw_xmalloc(sizeof(int64_t) * (size_t)o->batch);
  if (!o->quiet) {
    int64_t params = 0;
    for (int i = 0; i < r->st.n; i++)
      if (r->st.t[i].kind == IR_VAL_PARAM) params += r->st.t[i].numel;
    sw_progress_message(&pr, "swatc: training %s (%lld parameters) on %s: %lld train / %lld test images, batch %d, %d epochs",
                        r->src.name, (long long)params, r->train.name, (long long)r->train.n, (long long)r->test.n, o->batch,
                        o->epochs);
    if (have_ck)
      sw_progress_message(&pr, "swatc: resuming from '%s' in epoch %d after step %llu", o->resume, r->epoch + 1,
                          (unsigned long long)r->step);
  }
  uint64_t start_step = r->step;
  while (r->epoch < o->epochs) {
    int epoch = r->epoch;
    double t0 = sw_clock_seconds() - r->train_seconds;
    int64_t got;
    sw_progress_epoch_begin(&pr, epoch, o->epochs, steps_per_epoch);
    for (;;) {
      if (g_signal || (o->stop_after_steps > 0 && r->step == (uint64_t)o->stop_after_steps && r->step > start_step)) {
        int sig = g_signal ? (int)g_signal : SIGTERM;
        r->train_seconds = sw_clock_seconds() - t0;
        if ((rc = tr_ckpt_save(r, 0, e))) goto done;
        sbuf cmd = {0};
        resume_command(o, &cmd);
        fprintf(stderr, "\ninterrupted: checkpoint written to %s (epoch %d, step %llu); resume with: %s\n", o->checkpoint, epoch + 1,
                (unsigned long long)r->step, cmd.p);
        free(cmd.p);
        rc = TRAINER_SIGNALLED + sig;
        goto done;
      }
      if ((got = sw_loader_next(&r->ld, img, lab)) <= 0) break;
      bound *b = tr_program_for(&r->tm, &r->st, got, o, 1, e);
      if (!b) { rc = e->code; goto done; }
      rt_program_set_topk_exact(b->prog, epoch < o->topk_warmup_epochs);
      if (r->swat_on && o->swat.budget == SWAT_MOMENTUM) tr_swat_apply(&r->sw, b->prog); /* a program built mid-run */
      memcpy(b->images, img, sizeof(float) * (size_t)got * (size_t)sample);
      memcpy(b->labels, lab, sizeof(int64_t) * (size_t)got);
      if ((rc = rt_program_run(b->prog, r->step, e))) goto done;
      float loss = *b->loss;
      if (!isfinite(loss)) {
        const char *node = NULL; /* re-run op by op to name where it started (the run is abandoned anyway) */
        sw_err ne = {0};
        char where[600] = "";
        if (rt_program_find_nonfinite(b->prog, r->step, &node, &ne) == SW_OK && node)
          snprintf(where, sizeof where, " (the first NaN/infinity came from node '%.500s')", node);
        char kept[1200] = "";
        if (o->checkpoint)
          snprintf(kept, sizeof kept, "; %s '%.1000s'%s", have_ck || r->saved ? "the last checkpoint" : "no checkpoint was written to",
                   o->checkpoint, have_ck || r->saved ? " was kept" : "");
        rc = sw_fail(e, SW_ENUMERIC, "the training loss became %s at epoch %d, step %llu%s%s", isnan(loss) ? "NaN" : "infinite",
                     epoch + 1, (unsigned long long)r->step, where, kept);
        sw_hint(e, "lower the learning rate (--lr) or add warm-up (--warmup-epochs 1)");
        goto done;
      }
      r->lr = sw_sched_lr_at(&sc, (int64_t)r->step, steps_per_epoch);
      for (int i = 0; i < r->st.n; i++)
        if (b->grads[i]) sw_sgd_step(&sgd, (float)r->lr, r->st.t[i].data, b->grads[i], r->mom[i], r->st.t[i].numel, r->step == 0);
      if (r->swat_on && o->swat.budget == SWAT_MOMENTUM && o->momentum > 0) swat_momentum_step(&r->sw, &r->tm, r->mom, o);
      r->lsum += (double)loss * (double)got;
      r->good += tr_correct(b->logits, lab, got, b->classes);
      r->seen += got;
      r->step++;
      sw_progress_update(&pr, ++r->bi, r->lsum / (double)r->seen, (double)r->good / (double)r->seen, r->seen);
    }
    sw_loader_next_epoch(&r->ld);
    double t_train = sw_clock_seconds() - t0;
    if ((rc = tr_evaluate(&r->em, &r->st, &r->test, o, r->swat_on ? &r->sw : NULL, &r->test_loss, &r->test_acc, NULL, NULL, e)))
      goto done;
    r->evaluated = 1;
    sw_epoch_stats es = {.epoch = epoch + 1, .train_loss = r->lsum / (double)r->seen, .train_acc = (double)r->good / (double)r->seen,
                         .test_loss = r->test_loss, .test_acc = r->test_acc, .img_per_s = (double)r->seen / t_train, .lr = r->lr,
                         .seconds = sw_clock_seconds() - t0};
    sw_progress_epoch_end(&pr, &es);
    if (r->jl_open && (rc = metrics_epoch(r, &js, &es, e))) goto done;
    r->epoch++;
    r->bi = r->good = r->seen = 0;
    r->lsum = r->train_seconds = 0;
    if (o->checkpoint && (rc = tr_ckpt_save(r, r->epoch == o->epochs, e))) goto done;
    if (g_signal && r->epoch < o->epochs) {
      sbuf cmd = {0};
      resume_command(o, &cmd);
      fprintf(stderr, "\ninterrupted: checkpoint written to %s (epoch %d, step %llu); resume with: %s\n", o->checkpoint, r->epoch,
              (unsigned long long)r->step, cmd.p);
      free(cmd.p);
      rc = TRAINER_SIGNALLED + (int)g_signal;
      goto done;
    }
  }
  if (r->swat_on && !o->quiet) swat_print(r);
  sw_progress_result(&pr, "test accuracy %.2f%% (loss %.4f) after %d epochs", 100 * r->test_acc, r->test_loss, o->epochs);
  if (o->profile && r->tm.n_b) rt_program_profile_print(r->tm.b[0].prog, stderr);
  if (o->output) rc = export_run(r, &pr, e);
done:
  if (handlers) {
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
  }
  if (r->jl_open) {
    sw_err ce = {0};
    if (sw_jsonl_close(&r->jl, &ce) && !rc) {
      *e = ce;
      rc = ce.code;
    }
  }
  sw_json_free(&js);
  if (r->mom)
    for (int i = 0; i < r->st.n; i++) free(r->mom[i]);
  free(r->mom);
  free(img);
  free(lab);
  tr_model_src_free(&r->src);
  sw_ckpt_free(&ck);
  sw_loader_free(&r->ld);
  sw_dataset_free(&r->train);
  sw_dataset_free(&r->test);
  tr_model_free(&r->tm);
  tr_model_free(&r->em);
  rt_pool_free(r->pool);
  rt_state_free(&r->st);
  swat_run_free(&r->sw);
  if (dump) fclose(dump);
  return rc;
}
