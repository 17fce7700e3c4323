/* The stable text form of a graph. Same graph, same text: golden dumps are tests. */
#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "ir/ir.h"

static const char *kind_word(ir_value_kind k) {
  switch (k) {
    case IR_VAL_INPUT: return "input";
    case IR_VAL_PARAM: return "param";
    case IR_VAL_STATE: return "state";
    case IR_VAL_CONST: return "const";
    default: return "value";
  }
}

static void print_int(FILE *f, int64_t v) {
  if (v == IR_N) fputs("N", f);
  else fprintf(f, "%" PRId64, v);
}

static void print_float(FILE *f, double v) {
  if (isinf(v)) fputs(v < 0 ? "-inf" : "inf", f);
  else if (isnan(v)) fputs("nan", f);
  else if ((double)(float)v == v) fprintf(f, "%.9g", v); /* a float32 value: 9 digits identify it */
  else fprintf(f, "%.17g", v);
}

static void print_type(FILE *f, const ir_value *v) {
  char buf[128];
  fprintf(f, "%s%s", ir_dtype_name(v->dtype), ir_shape_str(&v->shape, buf, sizeof buf));
}

/* Small constants are shown inline so that folded shape arithmetic is visible in dumps. */
static void print_data(FILE *f, const ir_value *v) {
  int64_t n = ir_shape_numel(&v->shape);
  if (n < 0 || n > 8 || !v->data) return;
  fputs(" = [", f);
  for (int64_t i = 0; i < n; i++) {
    if (i) fputs(", ", f);
    switch (v->dtype) {
      case IR_F32: print_float(f, ((const float *)v->data)[i]); break;
      case IR_I64: print_int(f, ((const int64_t *)v->data)[i]); break;
      case IR_I32: fprintf(f, "%d", (int)((const int32_t *)v->data)[i]); break;
      case IR_BOOL: case IR_U8: fprintf(f, "%u", (unsigned)((const uint8_t *)v->data)[i]); break;
      case IR_I8: fprintf(f, "%d", (int)((const int8_t *)v->data)[i]); break;
      case IR_F64: fprintf(f, "%.17g", ((const double *)v->data)[i]); break;
      default: fputs("?", f); break;
    }
  }
  fputs("]", f);
}

static void print_attr(FILE *f, const ir_attr *a) {
  fprintf(f, "%s=", a->name);
  switch (a->type) {
    case IR_ATTR_INT: print_int(f, a->i); break;
    case IR_ATTR_FLOAT: print_float(f, a->f); break;
    case IR_ATTR_STRING: fprintf(f, "\"%s\"", a->s); break;
    case IR_ATTR_INTS:
      fputs("[", f);
      for (int i = 0; i < a->n; i++) {
        if (i) fputs(",", f);
        print_int(f, a->ints[i]);
      }
      fputs("]", f);
      break;
    case IR_ATTR_FLOATS:
      fputs("[", f);
      for (int i = 0; i < a->n; i++) {
        if (i) fputs(",", f);
        print_float(f, a->floats[i]);
      }
      fputs("]", f);
      break;
  }
}

void ir_print(const ir_graph *g, FILE *f) {
  fprintf(f, "graph %s opset=%d batch=%s", g->name, g->opset, g->batch_free ? "N" : "static");
  if (g->export_batch) fprintf(f, " export_batch=%" PRId64, g->export_batch);
  if (g->planned_batch) fprintf(f, " planned_batch=%" PRId64 " arena=%" PRId64, g->planned_batch, g->arena_bytes);
  fputs(" {\n", f);
  for (int i = 0; i < g->n_notes; i++) fprintf(f, "  # %s\n", g->notes[i]);
  for (int i = 0; i < g->n_inputs; i++) {
    fprintf(f, "  input  %%%s : ", g->inputs[i]->name);
    print_type(f, g->inputs[i]);
    fputc('\n', f);
  }
  for (int i = 0; i < g->n_values; i++) {
    const ir_value *v = g->values[i];
    if (v->kind == IR_VAL_NODE || v->kind == IR_VAL_INPUT) continue;
    fprintf(f, "  %-6s %%%s : ", kind_word(v->kind), v->name);
    print_type(f, v);
    print_data(f, v);
    fputc('\n', f);
  }
  for (int i = 0; i < g->n_nodes; i++) {
    const ir_node *n = g->nodes[i];
    fputs("  ", f);
    int first = 1;
    for (int k = 0; k < n->n_out; k++) {
      fputs(first ? "" : ", ", f);
      first = 0;
      if (n->out[k]) fprintf(f, "%%%s", n->out[k]->name);
      else fputs("_", f);
    }
    fprintf(f, " = %s(", n->op->name);
    for (int k = 0; k < n->n_in; k++) {
      if (k) fputs(", ", f);
      if (n->in[k]) fprintf(f, "%%%s", n->in[k]->name);
      else fputs("_", f);
    }
    fputs(")", f);
    if (n->n_attr) {
      fputs(" {", f);
      int any = 0;
      /* schema order first, so the text does not depend on how the importer set them */
      for (const ir_attr_def *d = n->op->attrs; d->name; d++) {
        const ir_attr *a = ir_attr_get(n, d->name);
        if (!a) continue;
        fputs(any ? ", " : "", f);
        print_attr(f, a);
        any = 1;
      }
      for (int k = 0; k < n->n_attr; k++)
        if (!ir_op_attr(n->op, n->attrs[k].name)) {
          fputs(any ? ", " : "", f);
          print_attr(f, &n->attrs[k]);
          any = 1;
        }
      fputs("}", f);
    }
    fputs(" :", f);
    for (int k = 0; k < n->n_out; k++) {
      fputs(k ? ", " : " ", f);
      if (n->out[k]) print_type(f, n->out[k]);
      else fputs("_", f);
    }
    fprintf(f, "  # %s", n->name);
    if (n->impl) fprintf(f, " [%s]", n->impl);
    if (g->planned_batch)
      for (int k = 0; k < n->n_out; k++) {
        const ir_value *v = n->out[k];
        if (!v || v->mem_offset < 0) continue;
        if (v->alias_of) fprintf(f, " %s=view(%s)", k ? "out" : "@", v->alias_of->name);
        else fprintf(f, " @%" PRId64 "+%" PRId64, v->mem_offset, v->mem_bytes);
      }
    fputc('\n', f);
  }
  for (int i = 0; i < g->n_outputs; i++) {
    fprintf(f, "  output %%%s : ", g->outputs[i]->name);
    print_type(f, g->outputs[i]);
    fputc('\n', f);
  }
  fputs("}\n", f);
}
