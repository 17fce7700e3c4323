/* Graph construction: arena, values, nodes, attributes, shapes. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/ir.h"

struct ir_arena_block {
  ir_arena_block *next;
  size_t used, size;
  _Alignas(16) unsigned char mem[];
};

size_t ir_dtype_size(ir_dtype t) {
  switch (t) {
    case IR_F32: case IR_I32: case IR_U32: return 4;
    case IR_U8: case IR_I8: case IR_BOOL: return 1;
    case IR_U16: case IR_I16: case IR_F16: case IR_BF16: return 2;
    case IR_I64: case IR_U64: case IR_F64: return 8;
    default: return 0;
  }
}

size_t ir_dtype_bytes(ir_dtype t, size_t numel) { return t == IR_BIT ? (numel + 7) / 8 : numel * ir_dtype_size(t); }

const char *ir_dtype_name(ir_dtype t) {
  switch (t) {
    case IR_F32: return "f32";
    case IR_U8: return "u8";
    case IR_I8: return "i8";
    case IR_U16: return "u16";
    case IR_I16: return "i16";
    case IR_I32: return "i32";
    case IR_I64: return "i64";
    case IR_BOOL: return "bool";
    case IR_F16: return "f16";
    case IR_F64: return "f64";
    case IR_U32: return "u32";
    case IR_U64: return "u64";
    case IR_BF16: return "bf16";
    case IR_BIT: return "bit";
    default: return "?";
  }
}

int64_t ir_shape_numel(const ir_shape *s) {
  int64_t n = 1;
  for (int i = 0; i < s->rank; i++) {
    if (s->d[i] == IR_N) return -1;
    if (s->d[i] != 0 && n > INT64_MAX / s->d[i]) return -2;
    n *= s->d[i];
  }
  return n;
}

int64_t ir_shape_numel_at(const ir_shape *s, int64_t batch) {
  int64_t n = 1;
  for (int i = 0; i < s->rank; i++) {
    int64_t d = s->d[i] == IR_N ? batch : s->d[i];
    if (d != 0 && n > INT64_MAX / d) return -2;
    n *= d;
  }
  return n;
}

int ir_shape_eq(const ir_shape *a, const ir_shape *b) {
  if (a->rank != b->rank) return 0;
  for (int i = 0; i < a->rank; i++)
    if (a->d[i] != b->d[i]) return 0;
  return 1;
}

int ir_shape_has_n(const ir_shape *s) {
  for (int i = 0; i < s->rank; i++)
    if (s->d[i] == IR_N) return 1;
  return 0;
}

char *ir_shape_str(const ir_shape *s, char *buf, size_t size) {
  size_t o = 0;
  if (size == 0) return buf;
  buf[0] = 0;
#define PUT(...) do { int k_ = snprintf(buf + o, o < size ? size - o : 0, __VA_ARGS__); if (k_ > 0) o += (size_t)k_; } while (0)
  PUT("[");
  for (int i = 0; i < s->rank; i++) {
    if (s->d[i] == IR_N) PUT("%sN", i ? "," : "");
    else PUT("%s%lld", i ? "," : "", (long long)s->d[i]);
  }
  PUT("]");
#undef PUT
  return buf;
}

ir_shape ir_shape_make(int rank, const int64_t *d) {
  ir_shape s;
  memset(&s, 0, sizeof s);
  SW_ASSERT(rank >= 0 && rank <= IR_MAX_RANK);
  s.rank = rank;
  for (int i = 0; i < rank; i++) s.d[i] = d[i];
  return s;
}

/* ---- arena ---- */

void *ir_alloc(ir_graph *g, size_t n) {
  n = (n + 15) & ~(size_t)15;
  ir_arena_block *b = g->arena;
  if (!b || b->size - b->used < n) {
    size_t size = n > 65536 ? n : 65536;
    b = sw_xmalloc(sizeof *b + size);
    b->size = size;
    b->used = 0;
    b->next = g->arena;
    g->arena = b;
  }
  void *p = b->mem + b->used;
  b->used += n;
  memset(p, 0, n);
  return p;
}

const char *ir_strdup(ir_graph *g, const char *s) {
  size_t n = strlen(s) + 1;
  char *p = ir_alloc(g, n);
  memcpy(p, s, n);
  return p;
}

ir_graph *ir_graph_new(const char *name) {
  ir_graph *g = sw_xcalloc(1, sizeof *g);
  g->name = ir_strdup(g, name && name[0] ? name : "main");
  return g;
}

void ir_graph_free(ir_graph *g) {
  if (!g) return;
  for (int i = 0; i < g->n_values; i++) free(g->values[i]->data);
  free(g->values);
  free(g->nodes);
  free(g->inputs);
  free(g->outputs);
  free(g->notes);
  ir_arena_block *b = g->arena;
  while (b) {
    ir_arena_block *next = b->next;
    free(b);
    b = next;
  }
  free(g);
}

/* ---- values ---- */

int ir_value_compact(const ir_value *v) {
  return v && v->producer && v->producer_slot == 0 && !v->is_output && strcmp(v->producer->op->name, "TopKSparsify") == 0 &&
         ir_attr_float(v->producer, "compact") > 0;
}

ir_value *ir_value_find(const ir_graph *g, const char *name) {
  for (int i = 0; i < g->n_values; i++)
    if (strcmp(g->values[i]->name, name) == 0) return g->values[i];
  return NULL;
}

const char *ir_unique_name(ir_graph *g, const char *base) {
  if (!ir_value_find(g, base)) return ir_strdup(g, base);
  size_t n = strlen(base) + 24;
  char *buf = ir_alloc(g, n);
  for (int k = 1;; k++) {
    snprintf(buf, n, "%s.%d", base, k);
    if (!ir_value_find(g, buf)) return buf;
  }
}

ir_value *ir_value_new(ir_graph *g, const char *name, ir_value_kind kind, ir_dtype t, const ir_shape *s) {
  if (ir_value_find(g, name)) return NULL;
  ir_value *v = ir_alloc(g, sizeof *v);
  v->id = g->n_values;
  v->name = ir_strdup(g, name);
  v->kind = kind;
  v->dtype = t;
  v->mem_offset = -1;
  if (s) v->shape = *s;
  if (g->n_values == g->cap_values) {
    g->cap_values = g->cap_values ? 2 * g->cap_values : 64;
    g->values = sw_xrealloc(g->values, sizeof *g->values * (size_t)g->cap_values);
  }
  g->values[g->n_values++] = v;
  return v;
}

void ir_value_set_data(ir_value *v, void *data, size_t nbytes) {
  free(v->data);
  v->data = data;
  v->nbytes = nbytes;
}

/* ---- nodes ---- */

ir_node *ir_node_new(ir_graph *g, const char *op, const char *name, int n_in, ir_value *const *in, int n_out) {
  const ir_op_def *def = ir_op_find(op);
  if (!def) return NULL;
  ir_node *n = ir_alloc(g, sizeof *n);
  n->id = g->next_node_id++;
  n->op = def;
  char tmp[64];
  if (!name || !name[0]) {
    snprintf(tmp, sizeof tmp, "%s_%d", op, n->id);
    name = tmp;
  }
  n->name = name;
  /* node names share the value namespace check only loosely: keep them unique among nodes */
  for (int i = 0; i < g->n_nodes; i++)
    if (strcmp(g->nodes[i]->name, name) == 0) {
      char buf[256];
      for (int k = 1;; k++) {
        snprintf(buf, sizeof buf, "%.200s.%d", name, k);
        int clash = 0;
        for (int j = 0; j < g->n_nodes && !clash; j++) clash = strcmp(g->nodes[j]->name, buf) == 0;
        if (!clash) break;
      }
      n->name = ir_strdup(g, buf);
      break;
    }
  if (n->name == name) n->name = ir_strdup(g, name);
  n->n_in = n_in;
  n->in = ir_alloc(g, sizeof *n->in * (size_t)(n_in ? n_in : 1));
  for (int i = 0; i < n_in; i++) n->in[i] = in ? in[i] : NULL;
  n->n_out = n_out;
  n->out = ir_alloc(g, sizeof *n->out * (size_t)(n_out ? n_out : 1));
  if (g->n_nodes == g->cap_nodes) {
    g->cap_nodes = g->cap_nodes ? 2 * g->cap_nodes : 64;
    g->nodes = sw_xrealloc(g->nodes, sizeof *g->nodes * (size_t)g->cap_nodes);
  }
  g->nodes[g->n_nodes++] = n;
  return n;
}

ir_value *ir_node_set_output(ir_graph *g, ir_node *n, int i, const char *name) {
  SW_ASSERT(i >= 0 && i < n->n_out);
  ir_value *v = ir_value_new(g, name, IR_VAL_NODE, IR_UNDEF, NULL);
  if (!v) return NULL;
  v->producer = n;
  v->producer_slot = i;
  n->out[i] = v;
  return v;
}

void ir_graph_add_input(ir_graph *g, ir_value *v) {
  g->inputs = sw_xrealloc(g->inputs, sizeof *g->inputs * (size_t)(g->n_inputs + 1));
  g->inputs[g->n_inputs++] = v;
}

void ir_graph_add_output(ir_graph *g, ir_value *v) {
  g->outputs = sw_xrealloc(g->outputs, sizeof *g->outputs * (size_t)(g->n_outputs + 1));
  g->outputs[g->n_outputs++] = v;
  v->is_output = 1;
}

void ir_graph_note(ir_graph *g, const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  g->notes = sw_xrealloc(g->notes, sizeof *g->notes * (size_t)(g->n_notes + 1));
  g->notes[g->n_notes++] = ir_strdup(g, buf);
}

/* ---- attributes ---- */

static ir_attr *attr_slot(ir_graph *g, ir_node *n, const char *name, ir_attr_type t) {
  for (int i = 0; i < n->n_attr; i++)
    if (strcmp(n->attrs[i].name, name) == 0) {
      memset(&n->attrs[i], 0, sizeof n->attrs[i]);
      n->attrs[i].name = ir_strdup(g, name);
      n->attrs[i].type = t;
      return &n->attrs[i];
    }
  ir_attr *a = ir_alloc(g, sizeof *a * (size_t)(n->n_attr + 1));
  if (n->n_attr) memcpy(a, n->attrs, sizeof *a * (size_t)n->n_attr);
  n->attrs = a;
  ir_attr *s = &a[n->n_attr++];
  s->name = ir_strdup(g, name);
  s->type = t;
  return s;
}

void ir_attr_set_int(ir_graph *g, ir_node *n, const char *name, int64_t v) {
  attr_slot(g, n, name, IR_ATTR_INT)->i = v;
}

void ir_attr_set_float(ir_graph *g, ir_node *n, const char *name, double v) {
  attr_slot(g, n, name, IR_ATTR_FLOAT)->f = v;
}

void ir_attr_set_string(ir_graph *g, ir_node *n, const char *name, const char *v) {
  attr_slot(g, n, name, IR_ATTR_STRING)->s = ir_strdup(g, v);
}

void ir_attr_set_ints(ir_graph *g, ir_node *n, const char *name, int count, const int64_t *v) {
  int64_t *p = ir_alloc(g, sizeof *p * (size_t)(count ? count : 1));
  if (count) memcpy(p, v, sizeof *p * (size_t)count);
  ir_attr *a = attr_slot(g, n, name, IR_ATTR_INTS);
  a->n = count;
  a->ints = p;
}

void ir_attr_set_floats(ir_graph *g, ir_node *n, const char *name, int count, const float *v) {
  float *p = ir_alloc(g, sizeof *p * (size_t)(count ? count : 1));
  if (count) memcpy(p, v, sizeof *p * (size_t)count);
  ir_attr *a = attr_slot(g, n, name, IR_ATTR_FLOATS);
  a->n = count;
  a->floats = p;
}

const ir_attr *ir_attr_get(const ir_node *n, const char *name) {
  for (int i = 0; i < n->n_attr; i++)
    if (strcmp(n->attrs[i].name, name) == 0) return &n->attrs[i];
  return NULL;
}

int64_t ir_attr_int(const ir_node *n, const char *name) {
  const ir_attr *a = ir_attr_get(n, name);
  if (a && a->type == IR_ATTR_INT) return a->i;
  const ir_attr_def *d = ir_op_attr(n->op, name);
  SW_ASSERT(d && d->type == IR_ATTR_INT);
  return d->def_i;
}

double ir_attr_float(const ir_node *n, const char *name) {
  const ir_attr *a = ir_attr_get(n, name);
  if (a && a->type == IR_ATTR_FLOAT) return a->f;
  const ir_attr_def *d = ir_op_attr(n->op, name);
  SW_ASSERT(d && d->type == IR_ATTR_FLOAT);
  return d->def_f;
}

const char *ir_attr_string(const ir_node *n, const char *name) {
  const ir_attr *a = ir_attr_get(n, name);
  if (a && a->type == IR_ATTR_STRING) return a->s;
  const ir_attr_def *d = ir_op_attr(n->op, name);
  SW_ASSERT(d && d->type == IR_ATTR_STRING);
  return d->def_s ? d->def_s : "";
}

int ir_attr_ints(const ir_node *n, const char *name, const int64_t **v) {
  const ir_attr *a = ir_attr_get(n, name);
  if (a && a->type == IR_ATTR_INTS) {
    *v = a->ints;
    return a->n;
  }
  *v = NULL;
  return 0;
}

/* ---- per-node statistics ---- */

int64_t ir_node_params(const ir_node *n) {
  int64_t p = 0;
  for (int i = 0; i < n->n_in; i++)
    if (n->in[i] && n->in[i]->kind == IR_VAL_PARAM) {
      int64_t k = ir_shape_numel(&n->in[i]->shape);
      if (k > 0) p += k;
    }
  return p;
}

int64_t ir_node_macs_per_image(const ir_node *n) {
  const char *op = n->op->name;
  if (!n->out[0] || n->out[0]->shape.rank < 1) return 0;
  const ir_shape *ys = &n->out[0]->shape;
  int64_t per_image_out = ir_shape_numel_at(ys, 1);
  if (ys->d[0] != IR_N && ys->d[0] > 0) per_image_out /= ys->d[0]; /* static batch: per image */
  if (strcmp(op, "Conv") == 0) {
    const ir_shape *ws = &n->in[1]->shape; /* [K, C/g, kh, kw...] */
    int64_t k = 1;
    for (int i = 1; i < ws->rank; i++) k *= ws->d[i];
    return per_image_out * k;
  }
  if (strcmp(op, "Gemm") == 0) {
    int64_t K = ir_attr_int(n, "transA") ? n->in[0]->shape.d[0] : n->in[0]->shape.d[1];
    if (K == IR_N) return 0;
    return per_image_out * K;
  }
  if (strcmp(op, "MatMul") == 0) {
    const ir_shape *as = &n->in[0]->shape;
    int64_t K = as->d[as->rank - 1];
    if (K == IR_N) return 0;
    return per_image_out * K;
  }
  return 0;
}

ir_node *ir_emit(ir_graph *g, const char *op, const char *name, int n_in, ir_value *const *in, int n_out) {
  ir_node *n = ir_node_new(g, op, name, n_in, in, n_out);
  SW_ASSERT(n);
  for (int k = 0; k < n_out; k++) {
    char buf[512];
    if (n_out == 1) snprintf(buf, sizeof buf, "%s", n->name);
    else snprintf(buf, sizeof buf, "%s:%d", n->name, k);
    ir_node_set_output(g, n, k, ir_unique_name(g, buf));
  }
  return n;
}

void ir_replace_uses(ir_graph *g, ir_value *old, ir_value *repl) {
  for (int i = 0; i < g->n_nodes; i++)
    for (int k = 0; k < g->nodes[i]->n_in; k++)
      if (g->nodes[i]->in[k] == old) g->nodes[i]->in[k] = repl;
  for (int i = 0; i < g->n_outputs; i++)
    if (g->outputs[i] == old) {
      g->outputs[i] = repl;
      old->is_output = 0;
      repl->is_output = 1;
    }
}

void ir_graph_compact(ir_graph *g, const unsigned char *keep_node, const unsigned char *keep_value) {
  int k = 0;
  for (int i = 0; i < g->n_nodes; i++)
    if (keep_node[i]) g->nodes[k++] = g->nodes[i];
  g->n_nodes = k;
  k = 0;
  for (int i = 0; i < g->n_values; i++) {
    ir_value *v = g->values[i];
    if (keep_value[i]) {
      v->id = k;
      g->values[k++] = v;
    } else {
      free(v->data);
      v->data = NULL;
    }
  }
  g->n_values = k;
}

void ir_graph_move_node(ir_graph *g, ir_node *n, int pos) {
  int at = -1;
  for (int i = 0; i < g->n_nodes; i++)
    if (g->nodes[i] == n) at = i;
  SW_ASSERT(at >= 0 && pos >= 0 && pos < g->n_nodes);
  if (at > pos) memmove(&g->nodes[pos + 1], &g->nodes[pos], sizeof *g->nodes * (size_t)(at - pos));
  else if (at < pos) memmove(&g->nodes[at], &g->nodes[at + 1], sizeof *g->nodes * (size_t)(pos - at));
  g->nodes[pos] = n;
}
