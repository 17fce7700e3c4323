/* IR unit tests: building a graph, the verifier catching each kind of broken graph, printer stability. */
#include <stdlib.h>
#include <string.h>

#include "ir/ir.h"
#include "tests/check.h"

static ir_value *param(ir_graph *g, const char *name, int rank, const int64_t *d) {
  ir_shape s = ir_shape_make(rank, d);
  ir_value *v = ir_value_new(g, name, IR_VAL_PARAM, IR_F32, &s);
  size_t n = (size_t)ir_shape_numel(&s) * sizeof(float);
  float *p = calloc(1, n);
  for (size_t i = 0; i < n / sizeof(float); i++) p[i] = (float)i * 0.01f;
  ir_value_set_data(v, p, n);
  return v;
}

/* input x[N,1,28,28] -> Conv(6,5x5,pad 2) -> Relu -> MaxPool 2 -> Flatten -> Gemm(10) */
static ir_graph *build_small(void) {
  ir_graph *g = ir_graph_new("small");
  g->opset = 13;
  g->batch_free = 1;
  ir_shape xs = ir_shape_make(4, (int64_t[]){IR_N, 1, 28, 28});
  ir_value *x = ir_value_new(g, "x", IR_VAL_INPUT, IR_F32, &xs);
  ir_graph_add_input(g, x);
  ir_value *w = param(g, "conv.weight", 4, (int64_t[]){6, 1, 5, 5});
  ir_value *b = param(g, "conv.bias", 1, (int64_t[]){6});
  ir_node *c = ir_node_new(g, "Conv", "conv", 3, (ir_value *[]){x, w, b}, 1);
  ir_attr_set_ints(g, c, "kernel_shape", 2, (int64_t[]){5, 5});
  ir_attr_set_ints(g, c, "strides", 2, (int64_t[]){1, 1});
  ir_attr_set_ints(g, c, "pads", 4, (int64_t[]){2, 2, 2, 2});
  ir_attr_set_ints(g, c, "dilations", 2, (int64_t[]){1, 1});
  ir_value *y = ir_node_set_output(g, c, 0, "y");
  ir_node *r = ir_node_new(g, "Relu", "relu", 1, &y, 1);
  ir_value *ry = ir_node_set_output(g, r, 0, "r");
  ir_node *p = ir_node_new(g, "MaxPool", "pool", 1, &ry, 1);
  ir_attr_set_ints(g, p, "kernel_shape", 2, (int64_t[]){2, 2});
  ir_attr_set_ints(g, p, "strides", 2, (int64_t[]){2, 2});
  ir_attr_set_ints(g, p, "pads", 4, (int64_t[]){0, 0, 0, 0});
  ir_value *py = ir_node_set_output(g, p, 0, "p");
  ir_node *f = ir_node_new(g, "Flatten", "flat", 1, &py, 1);
  ir_value *fy = ir_node_set_output(g, f, 0, "f");
  ir_value *fw = param(g, "fc.weight", 2, (int64_t[]){10, 6 * 14 * 14});
  ir_value *fb = param(g, "fc.bias", 1, (int64_t[]){10});
  ir_node *gm = ir_node_new(g, "Gemm", "fc", 3, (ir_value *[]){fy, fw, fb}, 1);
  ir_attr_set_int(g, gm, "transB", 1);
  ir_value *logits = ir_node_set_output(g, gm, 0, "logits");
  ir_graph_add_output(g, logits);
  return g;
}

static char *print_to_string(const ir_graph *g) {
  char *buf = NULL;
  size_t n = 0;
  FILE *f = open_memstream(&buf, &n);
  ir_print(g, f);
  fclose(f);
  return buf;
}

static void expect_invalid(ir_graph *g, const char *what, const char *needle) {
  sw_err e = {0};
  int rc = ir_verify(g, &e);
  CHECK(rc != SW_OK, "verifier accepted a graph with %s", what);
  CHECK(rc == SW_OK || strstr(e.msg, needle) != NULL, "%s: message '%s' lacks '%s'", what, e.msg, needle);
  ir_graph_free(g);
}

static ir_node *node_named(ir_graph *g, const char *name) {
  for (int i = 0; i < g->n_nodes; i++)
    if (!strcmp(g->nodes[i]->name, name)) return g->nodes[i];
  return NULL;
}

int main(void) {
  /* building and inference */
  ir_graph *g = build_small();
  sw_err e = {0};
  CHECK(ir_infer_shapes(g, &e) == SW_OK, "infer: %s", e.msg);
  CHECK(ir_verify(g, &e) == SW_OK, "verify: %s", e.msg);
  char s[96];
  CHECK(!strcmp(ir_shape_str(&node_named(g, "conv")->out[0]->shape, s, sizeof s), "[N,6,28,28]"), "conv out %s", s);
  CHECK(!strcmp(ir_shape_str(&node_named(g, "flat")->out[0]->shape, s, sizeof s), "[N,1176]"), "flatten out %s", s);
  CHECK(!strcmp(ir_shape_str(&g->outputs[0]->shape, s, sizeof s), "[N,10]"), "logits %s", s);
  CHECK(ir_node_macs_per_image(node_named(g, "conv")) == 6 * 28 * 28 * 25, "conv MACs %lld",
        (long long)ir_node_macs_per_image(node_named(g, "conv")));
  CHECK(ir_node_params(node_named(g, "fc")) == 10 * 1176 + 10, "fc params");
  CHECK(ir_value_new(g, "x", IR_VAL_INPUT, IR_F32, NULL) == NULL, "duplicate value name accepted");
  CHECK(ir_node_new(g, "NoSuchOp", "z", 0, NULL, 1) == NULL, "unknown op accepted");

  /* printer: exact and stable */
  char *a = print_to_string(g), *b = print_to_string(g);
  CHECK(!strcmp(a, b), "two prints differ");
  const char *want =
      "graph small opset=13 batch=N {\n"
      "  input  %x : f32[N,1,28,28]\n"
      "  param  %conv.weight : f32[6,1,5,5]\n"
      "  param  %conv.bias : f32[6] = [0, 0.00999999978, 0.0199999996, 0.0299999993, 0.0399999991, 0.049999997]\n"
      "  param  %fc.weight : f32[10,1176]\n"
      "  param  %fc.bias : f32[10]\n"
      "  %y = Conv(%x, %conv.weight, %conv.bias) {kernel_shape=[5,5], strides=[1,1], pads=[2,2,2,2], dilations=[1,1]} : "
      "f32[N,6,28,28]  # conv\n"
      "  %r = Relu(%y) : f32[N,6,28,28]  # relu\n"
      "  %p = MaxPool(%r) {kernel_shape=[2,2], strides=[2,2], pads=[0,0,0,0]} : f32[N,6,14,14]  # pool\n"
      "  %f = Flatten(%p) : f32[N,1176]  # flat\n"
      "  %logits = Gemm(%f, %fc.weight, %fc.bias) {transB=1} : f32[N,10]  # fc\n"
      "  output %logits : f32[N,10]\n"
      "}\n";
  CHECK(!strcmp(a, want), "printer output differs:\n%s", a);
  free(a);
  free(b);
  ir_graph_free(g);

  /* shape rule errors */
  g = build_small();
  ir_value *fw = ir_value_find(g, "fc.weight");
  fw->shape.d[1] = 1000;
  CHECK(ir_infer_shapes(g, &e) != SW_OK && strstr(e.msg, "inner dimensions"), "Gemm mismatch not caught: %s", e.msg);
  fw->shape.d[1] = 1176;
  ir_graph_free(g);
  sw_err_clear(&e);

  /* the verifier catches each kind of broken graph */
  g = build_small();
  ir_infer_shapes(g, &e);
  ir_node *t = g->nodes[0]; /* conv after relu: read before write */
  g->nodes[0] = g->nodes[1];
  g->nodes[1] = t;
  expect_invalid(g, "nodes out of order", "before node");

  g = build_small();
  ir_infer_shapes(g, &e);
  node_named(g, "relu")->in[0] = node_named(g, "pool")->out[0]; /* relu reads pool's output: a cycle */
  expect_invalid(g, "a cycle", "before node");

  g = build_small();
  ir_infer_shapes(g, &e);
  node_named(g, "flat")->out[0]->shape.d[1] = 7;
  expect_invalid(g, "a wrong recorded shape", "shape rule");

  g = build_small();
  ir_infer_shapes(g, &e);
  ir_value *dangling = ir_value_new(g, "ghost", IR_VAL_NODE, IR_F32, NULL);
  node_named(g, "relu")->in[0] = dangling;
  expect_invalid(g, "an undefined input", "ghost");

  g = build_small();
  ir_infer_shapes(g, &e);
  ir_node *relu = node_named(g, "relu");
  relu->out[0] = node_named(g, "conv")->out[0]; /* two writers of y */
  expect_invalid(g, "a value assigned twice", "");

  g = build_small();
  ir_infer_shapes(g, &e);
  ir_value *cb = ir_value_find(g, "conv.bias");
  cb->nbytes -= 4;
  expect_invalid(g, "constant data of the wrong size", "bytes");

  g = build_small();
  ir_infer_shapes(g, &e);
  ir_value_find(g, "conv.weight")->dtype = IR_I64;
  ir_value_find(g, "conv.weight")->nbytes *= 2;
  expect_invalid(g, "a wrong element type", "element type");

  g = build_small();
  ir_infer_shapes(g, &e);
  ir_attr_set_int(g, node_named(g, "relu"), "alpha", 3);
  expect_invalid(g, "an unknown attribute", "unknown attribute");

  g = build_small();
  ir_infer_shapes(g, &e);
  ir_node *conv = node_named(g, "conv");
  conv->n_attr = 0; /* drop kernel_shape etc. */
  expect_invalid(g, "a missing required attribute", "required");

  g = build_small();
  ir_infer_shapes(g, &e);
  ir_attr_set_float(g, node_named(g, "conv"), "group", 1.0f);
  expect_invalid(g, "an attribute of the wrong type", "wrong type");

  g = build_small();
  ir_infer_shapes(g, &e);
  node_named(g, "relu")->n_in = 2;
  node_named(g, "relu")->in = ir_alloc(g, 2 * sizeof(ir_value *));
  node_named(g, "relu")->in[0] = node_named(g, "conv")->out[0];
  node_named(g, "relu")->in[1] = node_named(g, "conv")->out[0];
  expect_invalid(g, "wrong arity", "inputs");

  g = build_small();
  ir_infer_shapes(g, &e);
  g->values[3]->name = g->values[2]->name;
  expect_invalid(g, "duplicate names", "two values");

  /* reshape with N: -1 absorbs N; N cannot be multiplied into another dim */
  g = ir_graph_new("r");
  ir_shape xs = ir_shape_make(4, (int64_t[]){IR_N, 16, 5, 5});
  ir_value *x = ir_value_new(g, "x", IR_VAL_INPUT, IR_F32, &xs);
  ir_node *rs = ir_node_new(g, "Reshape", "rs", 1, &x, 1);
  ir_attr_set_ints(g, rs, "shape", 2, (int64_t[]){-1, 400});
  ir_node_set_output(g, rs, 0, "y");
  sw_err_clear(&e);
  CHECK(ir_infer_node(rs, &e) == SW_OK && rs->out[0]->shape.d[0] == IR_N, "reshape -1 -> N: %s", e.msg);
  ir_attr_set_ints(g, rs, "shape", 2, (int64_t[]){-1, 200});
  CHECK(ir_infer_node(rs, &e) != SW_OK && strstr(e.msg, "multiple of the batch"), "reshape 2N refused: %s", e.msg);
  sw_err_clear(&e);
  ir_attr_set_ints(g, rs, "shape", 3, (int64_t[]){IR_N, 0, 25});
  CHECK(ir_infer_node(rs, &e) == SW_OK && rs->out[0]->shape.d[1] == 16, "reshape with copy dim: %s", e.msg);
  ir_graph_free(g);

  /* pooling with ceil_mode follows PyTorch: 4 -> ceil((4-3)/2)+1 = 2; 6,k2,s2,ceil -> 3 */
  g = ir_graph_new("p");
  xs = ir_shape_make(4, (int64_t[]){1, 1, 6, 4});
  x = ir_value_new(g, "x", IR_VAL_INPUT, IR_F32, &xs);
  ir_node *mp = ir_node_new(g, "MaxPool", "mp", 1, &x, 1);
  ir_attr_set_ints(g, mp, "kernel_shape", 2, (int64_t[]){3, 3});
  ir_attr_set_ints(g, mp, "strides", 2, (int64_t[]){2, 2});
  ir_attr_set_ints(g, mp, "pads", 4, (int64_t[]){0, 0, 0, 0});
  ir_attr_set_int(g, mp, "ceil_mode", 1);
  ir_node_set_output(g, mp, 0, "y");
  sw_err_clear(&e);
  CHECK(ir_infer_node(mp, &e) == SW_OK, "%s", e.msg);
  CHECK(mp->out[0]->shape.d[2] == 3 && mp->out[0]->shape.d[3] == 2, "ceil_mode shape %s",
        ir_shape_str(&mp->out[0]->shape, s, sizeof s));
  ir_graph_free(g);
  return check_report("test_ir");
}
