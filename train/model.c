/* One model of the training driver: the imported graph after its passes, with a compiled program per
 * batch size; the dataset that fits it; the bytes of its file. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "importer/importer.h"
#include "passes/passes.h"
#include "train/trainer_internal.h"

__attribute__((format(printf, 2, 3))) void sb_printf(sbuf *b, const char *fmt, ...) {
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    size_t room = b->cap - b->n;
    int w = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? room : 0, fmt, ap);
    va_end(ap);
    SW_ASSERT(w >= 0);
    if (b->p && (size_t)w < room) {
      b->n += (size_t)w;
      return;
    }
    b->cap = (b->cap + (size_t)w + 1) * 2;
    b->p = sw_xrealloc(b->p, b->cap);
  }
}

const char *const train_passes[6] = {"train-mode", "add-loss", "autodiff", "dce", "swat", "fuse"};
const char *const eval_passes[5] = {"eval-mode", "add-loss", "dce", "swat", "fuse"};

void tr_model_free(model *m) {
  for (int i = 0; i < m->n_b; i++) {
    rt_program_free(m->b[i].prog);
    free(m->b[i].grads);
  }
  free(m->b);
  ir_graph_free(m->g);
}

int tr_build_graph(const model_src *src, const trainer_opts *o, const char *const *passes, int n_passes, FILE *dump, model *m,
                sw_err *e) {
  importer_opts io = {.batch = o->static_batch ? IMPORTER_BATCH_STATIC : IMPORTER_BATCH_AUTO};
  if (importer_load_bytes(src->bytes, src->n, src->name, src->dir, &io, &m->g, e)) return e->code;
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
bound *tr_program_for(model *m, rt_state *st, int64_t batch, const trainer_opts *o, int with_grads, sw_err *e) {
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
  if (rt_program_build(m->g, st, batch, o->threads, m->pool, &b->prog, e)) return NULL;
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

/* Loads o->data for the model m (the synthetic shape comes from its input and logits) and checks
 * that its images and labels fit the model. */
int tr_load_data(const model *m, const trainer_opts *o, sw_dataset *train, sw_dataset *test, sw_err *e) {
  sw_dataset_opts dopt = {.train_limit = o->limit_train, .test_limit = o->limit_test, .seed = o->seed};
  const ir_value *in = ir_value_find(m->g, m->image_input), *lg = ir_value_find(m->g, m->logits_name);
  if (strcmp(o->data, "synthetic") == 0) {
    dopt.syn_c = (int)in->shape.d[1];
    dopt.syn_h = in->shape.rank > 2 ? (int)in->shape.d[2] : 1;
    dopt.syn_w = in->shape.rank > 3 ? (int)in->shape.d[3] : 1;
    dopt.syn_train = o->limit_train ? o->limit_train : 1024;
    dopt.syn_test = o->limit_test ? o->limit_test : 256;
    dopt.syn_classes = (int)lg->shape.d[1];
  }
  if (train ? sw_dataset_load(o->data, &dopt, train, test, e) : sw_dataset_load_test(o->data, &dopt, test, e)) return e->code;
  const sw_dataset *d = train ? train : test;
  int64_t shape[4] = {0};
  int r = in->shape.rank;
  for (int i = 0; i < r && i < 4; i++) shape[i] = in->shape.d[i] == IR_N ? 0 : in->shape.d[i];
  if (sw_dataset_check_input(d, shape, r, m->image_input, e)) return e->code;
  return sw_dataset_check_classes(d, lg->shape.d[1], e);
}

int tr_model_src_read(model_src *s, const char *path, sw_err *e) {
  memset(s, 0, sizeof *s);
  struct stat pre;
  if (stat(path, &pre) == 0 && !S_ISREG(pre.st_mode)) { /* never open a FIFO or device: it can block */
    sw_fail(e, SW_EINPUT, "'%s' is not a regular file", path);
    return sw_hint(e, "give the path of an .onnx file");
  }
  FILE *f = fopen(path, "rb");
  if (!f) {
    sw_fail(e, SW_EINPUT, "cannot open '%s' (%s)", path, strerror(errno));
    return sw_hint(e, "check the path");
  }
  struct stat sb;
  if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size > IMPORTER_MAX_FILE) {
    fclose(f);
    sw_fail(e, SW_EINPUT, "'%s' is not a regular file of at most 2 GiB", path);
    return sw_hint(e, "pass an ONNX model file");
  }
  size_t sz = (size_t)sb.st_size;
  unsigned char *b = malloc(sz ? sz : 1);
  if (!b) {
    fclose(f);
    return sw_fail(e, SW_ENOMEM, "out of memory reading '%s'", path);
  }
  size_t got = sz ? fread(b, 1, sz, f) : 0;
  fclose(f);
  if (got != sz) {
    free(b);
    return sw_fail(e, SW_EINPUT, "cannot read '%s'", path);
  }
  s->bytes = s->owned = b;
  s->n = sz;
  snprintf(s->name, sizeof s->name, "%s", path);
  const char *sl = strrchr(path, '/');
  if (!sl) snprintf(s->dir, sizeof s->dir, ".");
  else if (sl == path) snprintf(s->dir, sizeof s->dir, "/");
  else snprintf(s->dir, sizeof s->dir, "%.*s", (int)(sl - path), path);
  sw_sha256_hex(s->bytes, s->n, s->sha);
  return SW_OK;
}

void tr_model_src_free(model_src *s) {
  free(s->owned);
  memset(s, 0, sizeof *s);
}
