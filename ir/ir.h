/* swatc IR: the contract between the importer, the passes, the runtime and the exporter.
 *
 * A graph owns values and nodes. A value is a typed tensor: a graph input, a trained parameter,
 * non-trained state (BatchNormalization running statistics), a constant, or the output of exactly
 * one node. Nodes are kept in topological order. Shapes are static except for one symbolic
 * dimension, the batch size, written N (IR_N). Everything a graph allocates (names, attributes,
 * nodes, values, tensor data) is released by ir_graph_free.
 *
 * Operators are described by one registry table (ir/ops.c): name, arity, attribute schema and
 * shape rule. Nodes carry the canonical form of an operator; the importer maps every ONNX opset
 * variant onto it (see the table for the canonical attributes of each op). */
#ifndef SWATC_IR_IR_H
#define SWATC_IR_IR_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

/* Element types. The numbers are ONNX's TensorProto.DataType, so dumps read naturally to ONNX users;
 * the mapping is still explicit in the importer. */
typedef enum ir_dtype {
  IR_UNDEF = 0,
  IR_F32 = 1,
  IR_U8 = 2,
  IR_I8 = 3,
  IR_U16 = 4,
  IR_I16 = 5,
  IR_I32 = 6,
  IR_I64 = 7,
  IR_BOOL = 9,
  IR_F16 = 10,
  IR_F64 = 11,
  IR_U32 = 12,
  IR_U64 = 13,
  IR_BF16 = 16,
  /* Not an ONNX type: one bit per element, packed, element i in bit i % 8 of byte i / 8. Only the
   * passes make it (the ReLU masks kept for the backward); never imported or exported. */
  IR_BIT = 1000,
} ir_dtype;

/* Bytes per element, or 0 for IR_UNDEF / unknown and for IR_BIT (less than a byte: see ir_dtype_bytes). */
size_t ir_dtype_size(ir_dtype t);
/* Bytes that numel elements of type t take: numel * ir_dtype_size(t), or ceil(numel / 8) for IR_BIT. */
size_t ir_dtype_bytes(ir_dtype t, size_t numel);
/* Short name as printed in dumps ("f32", "i64", ...); "?" for unknown. */
const char *ir_dtype_name(ir_dtype t);

#define IR_MAX_RANK 8
/* The symbolic batch dimension. Only ever a whole dimension, never part of arithmetic. */
#define IR_N (-(INT64_C(1) << 62))

typedef struct ir_shape {
  int rank;                 /* number of dimensions; 0 = scalar */
  int64_t d[IR_MAX_RANK];   /* each >= 0, or IR_N */
} ir_shape;

/* Number of elements for a concrete shape; -1 if it contains N; -2 on overflow of int64. */
int64_t ir_shape_numel(const ir_shape *s);
/* Number of elements with N taken as `batch`; -2 on overflow. */
int64_t ir_shape_numel_at(const ir_shape *s, int64_t batch);
int ir_shape_eq(const ir_shape *a, const ir_shape *b);
int ir_shape_has_n(const ir_shape *s);
/* Writes "[N,1,28,28]" into buf (always NUL-terminated); returns buf. */
char *ir_shape_str(const ir_shape *s, char *buf, size_t size);
ir_shape ir_shape_make(int rank, const int64_t *d);

typedef enum ir_value_kind {
  IR_VAL_INPUT = 1, /* graph input fed at run time (images, labels) */
  IR_VAL_PARAM,     /* trained parameter (conv/fc weights, biases, BN scale/bias) */
  IR_VAL_STATE,     /* persistent non-trained state (BN running mean/var) */
  IR_VAL_CONST,     /* constant data the model needs (not trained) */
  IR_VAL_NODE,      /* output of a node */
} ir_value_kind;

struct ir_node;

typedef struct ir_value {
  int id;                  /* index in graph->values */
  const char *name;        /* unique within the graph */
  ir_value_kind kind;
  ir_dtype dtype;
  ir_shape shape;
  void *data;              /* PARAM/STATE/CONST: numel * dtype_size bytes, owned by the graph */
  size_t nbytes;
  struct ir_node *producer;/* IR_VAL_NODE: the node that writes it */
  int producer_slot;       /* output index in producer */
  int is_output;           /* listed in graph->outputs */
  struct ir_value *updates;/* for a node output: the STATE value it replaces after a step (BN running stats) */
  int requires_grad;       /* set by autodiff: depends on a PARAM through differentiable ops */
  struct ir_value *grad;   /* set by autodiff on PARAMs: the value holding the parameter's gradient */
  /* set by memory-plan (IR_VAL_NODE values): byte offset in the activation arena at the planned batch,
   * and the value whose storage this one shares (a view: Reshape/Flatten), or NULL */
  int64_t mem_offset;      /* -1 when not planned */
  int64_t mem_bytes;
  struct ir_value *alias_of;
} ir_value;

typedef enum ir_attr_type {
  IR_ATTR_INT = 1,
  IR_ATTR_FLOAT,
  IR_ATTR_STRING,
  IR_ATTR_INTS,
  IR_ATTR_FLOATS,
} ir_attr_type;

typedef struct ir_attr {
  const char *name;
  ir_attr_type type;
  int n;          /* element count for INTS / FLOATS */
  int64_t i;      /* INT */
  double f;       /* FLOAT (held in double: ONNX's float32 values exactly, swatc's own budgets without rounding) */
  const char *s;  /* STRING */
  int64_t *ints;  /* INTS (may hold IR_N, e.g. a Reshape target) */
  float *floats;  /* FLOATS */
} ir_attr;

struct ir_op_def;

typedef enum ir_role {
  IR_ROLE_FWD = 0,    /* forward computation (what the model defines) */
  IR_ROLE_LOSS,       /* the loss added for training */
  IR_ROLE_BWD,        /* backward: gradients (n->fwd is the forward node it differentiates) */
} ir_role;

typedef struct ir_node {
  int id;                     /* unique, stable across passes (printing order is list order) */
  ir_role role;
  struct ir_node *fwd;        /* IR_ROLE_BWD: the forward node this node belongs to */
  const char *impl;           /* set by lower: the kernel that runs this node */
  const char *name;           /* from the model, or made up; unique within the graph */
  const struct ir_op_def *op;
  int n_in, n_out, n_attr;
  ir_value **in;              /* optional inputs may be NULL */
  ir_value **out;             /* optional outputs may be NULL */
  ir_attr *attrs;
} ir_node;

typedef struct ir_arena_block ir_arena_block;

typedef struct ir_graph {
  const char *name;
  int opset;                  /* default-domain opset of the source model */
  int64_t export_batch;       /* batch size the model was exported with (0 if dynamic/unknown) */
  int batch_free;             /* 1 if dimension 0 of the inputs is the symbolic N */
  ir_value **values;
  int n_values, cap_values;
  ir_node **nodes;            /* topological order */
  int n_nodes, cap_nodes;
  ir_value **inputs;          /* IR_VAL_INPUT values, in model order */
  int n_inputs;
  ir_value **outputs;
  int n_outputs;
  const char **notes;         /* import remarks printed at the top of a dump */
  int n_notes;
  int next_node_id;
  int64_t planned_batch;      /* memory-plan: the batch size N was planned for (0: not planned) */
  int64_t arena_bytes;        /* memory-plan: size of the activation arena */
  ir_arena_block *arena;
} ir_graph;

/* ---- graph building ---- */

/* Creates an empty graph named `name`. */
ir_graph *ir_graph_new(const char *name);
/* Frees a graph and everything it owns. Accepts NULL. */
void ir_graph_free(ir_graph *g);
/* Allocates zeroed memory owned by the graph (released with it). Aborts on out-of-memory. */
void *ir_alloc(ir_graph *g, size_t n);
/* Copies a string into graph memory. */
const char *ir_strdup(ir_graph *g, const char *s);
/* Adds a value; name must be unique (returns NULL if taken). Data, if any, is attached with ir_value_set_data. */
ir_value *ir_value_new(ir_graph *g, const char *name, ir_value_kind kind, ir_dtype t, const ir_shape *s);
/* Looks a value up by name (linear; for tools and tests). */
ir_value *ir_value_find(const ir_graph *g, const char *name);
/* 1 when v is a compact Top-K selection (SWAT's saved X_s): the first output of a TopKSparsify with
 * compact > 0 that is not a graph output. The runtime holds it as a list of entries, outside the arena. */
int ir_value_compact(const ir_value *v);
/* Makes a name not yet used in g from `base` (appending .1, .2, ...). Returns graph memory. */
const char *ir_unique_name(ir_graph *g, const char *base);
/* Gives v ownership of `data` (malloc'd, nbytes long); frees any earlier data. */
void ir_value_set_data(ir_value *v, void *data, size_t nbytes);
/* Appends a node of op `op` (registry name) with the given inputs; outputs are created by the caller
 * with ir_node_set_output. Returns NULL if the op is unknown. */
ir_node *ir_node_new(ir_graph *g, const char *op, const char *name, int n_in, ir_value *const *in, int n_out);
/* Creates (or attaches) output slot i of node n as a new value named `name`. */
ir_value *ir_node_set_output(ir_graph *g, ir_node *n, int i, const char *name);
void ir_graph_add_input(ir_graph *g, ir_value *v);
void ir_graph_add_output(ir_graph *g, ir_value *v);
/* Moves node n (already in g) to position `pos` of the node list (the nodes from pos on shift back). */
void ir_graph_move_node(ir_graph *g, ir_node *n, int pos);
/* Makes every reader of `old` (node inputs, graph outputs) read `repl` instead. */
void ir_replace_uses(ir_graph *g, ir_value *old, ir_value *repl);
/* Removes the nodes with keep_node[position] == 0 and the values with keep_value[id] == 0 (their data
 * is freed; nothing kept may still refer to them), renumbering value ids. */
void ir_graph_compact(ir_graph *g, const unsigned char *keep_node, const unsigned char *keep_value);
/* Records a remark shown at the top of dumps (e.g. how the batch dimension was rewritten). */
void ir_graph_note(ir_graph *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- attributes ---- */
void ir_attr_set_int(ir_graph *g, ir_node *n, const char *name, int64_t v);
void ir_attr_set_float(ir_graph *g, ir_node *n, const char *name, double v);
void ir_attr_set_string(ir_graph *g, ir_node *n, const char *name, const char *v);
void ir_attr_set_ints(ir_graph *g, ir_node *n, const char *name, int count, const int64_t *v);
void ir_attr_set_floats(ir_graph *g, ir_node *n, const char *name, int count, const float *v);
/* The attribute as stored on the node, or NULL. */
const ir_attr *ir_attr_get(const ir_node *n, const char *name);
/* Typed getters that fall back to the op schema's default. */
int64_t ir_attr_int(const ir_node *n, const char *name);
double ir_attr_float(const ir_node *n, const char *name);
const char *ir_attr_string(const ir_node *n, const char *name);
/* INTS: returns the count and sets *v (NULL and 0 when absent and without default). */
int ir_attr_ints(const ir_node *n, const char *name, const int64_t **v);

/* ---- operator registry ---- */

typedef struct ir_attr_def {
  const char *name;
  ir_attr_type type;
  int required;
  int64_t def_i;        /* default for INT */
  double def_f;         /* default for FLOAT */
  const char *def_s;    /* default for STRING */
} ir_attr_def;

enum {
  IR_OP_IMPORT_ONLY = 1 << 0, /* folded by the importer; never left in a graph */
};

struct ir_graph;

typedef struct ir_op_def {
  const char *name;
  int min_in, max_in, min_out, max_out;
  const ir_attr_def *attrs;   /* terminated by an entry with name NULL */
  /* Shape rule: checks the inputs and attributes of n and sets dtype and shape of every present output.
   * Returns SW_OK or fills e (SW_EINPUT) naming the node and the problem. */
  int (*infer)(ir_node *n, sw_err *e);
  int flags;
  const char *doc;            /* one line: the canonical form */
  /* Gradient rule (ir/grad.c): appends the backward nodes of forward node n. dy[k] is the gradient of
   * output k (NULL when nothing depends on it); for every input i with need[i] set it stores the
   * gradient of input i in dx[i]. NULL for ops that have no gradient (backward ops themselves). */
  int (*grad)(struct ir_graph *g, ir_node *n, ir_value *const *dy, const int *need, ir_value **dx, sw_err *e);
} ir_op_def;

/* The registry entry for op `name`, or NULL if swatc does not support it. */
const ir_op_def *ir_op_find(const char *name);
/* All registry entries (for listing and tests). */
const ir_op_def *ir_op_table(int *count);
/* The schema entry of attribute `name` of op, or NULL. */
const ir_attr_def *ir_op_attr(const ir_op_def *op, const char *name);

/* ---- analyses ---- */

/* Appends node `op` named `name` (made unique) reading in[0..n_in-1], with n_out fresh outputs named
 * `name` (one output) or `name:k`. The caller sets attributes, role and fwd, then runs ir_infer_node. */
ir_node *ir_emit(ir_graph *g, const char *op, const char *name, int n_in, ir_value *const *in, int n_out);

/* Runs the shape rule of every node in order, overwriting output dtypes and shapes. */
int ir_infer_shapes(ir_graph *g, sw_err *e);
/* Runs the shape rule of one node. */
int ir_infer_node(ir_node *n, sw_err *e);
/* Checks the graph's invariants: every input defined before use (hence acyclic), one producer per
 * value, op arity and attribute types per the registry, data sizes of constants, and that shapes
 * and types agree with the shape rules. Returns SW_OK or fills e. */
int ir_verify(const ir_graph *g, sw_err *e);

/* Parameter count (numel of IR_VAL_PARAM inputs) and multiply-accumulates per image of a node
 * (Conv, Gemm, MatMul; 0 for others). */
int64_t ir_node_params(const ir_node *n);
int64_t ir_node_macs_per_image(const ir_node *n);

/* ---- text form ---- */

#include <stdio.h>
/* Prints the graph in the stable text form (see DESIGN.md). */
void ir_print(const ir_graph *g, FILE *f);

#endif
