/* Gradient rules of the forward ops (referenced by the op registry) and the helpers autodiff uses. */
#ifndef SWATC_IR_GRAD_H
#define SWATC_IR_GRAD_H

#include "ir/ir.h"

/* Appends the backward nodes of n (see ir_op_def.grad). */
int ir_grad_node(ir_graph *g, ir_node *n, ir_value *const *dy, const int *need, ir_value **dx, sw_err *e);
/* Output k of n, created (and shapes re-inferred) if the node did not have it yet. NULL on error. */
ir_value *ir_grad_ensure_output(ir_graph *g, ir_node *n, int k, sw_err *e);
/* A new f32 scalar constant. */
ir_value *ir_const_scalar(ir_graph *g, const char *base, float v);

#define IR_GRAD_RULE(name) int name(ir_graph *g, ir_node *f, ir_value *const *dy, const int *need, ir_value **dx, sw_err *e)
IR_GRAD_RULE(ir_grad_conv);
IR_GRAD_RULE(ir_grad_gemm);
IR_GRAD_RULE(ir_grad_matmul);
IR_GRAD_RULE(ir_grad_by_output); /* ReluGrad(dY, Y) and friends: <Op>Grad reads the output */
IR_GRAD_RULE(ir_grad_by_input);  /* <Op>Grad(dY, X) */
IR_GRAD_RULE(ir_grad_by_shape);  /* <Op>Grad(dY) {x_shape} */
IR_GRAD_RULE(ir_grad_bn);
IR_GRAD_RULE(ir_grad_dropout);
IR_GRAD_RULE(ir_grad_sce);
IR_GRAD_RULE(ir_grad_arith);
IR_GRAD_RULE(ir_grad_neg);
IR_GRAD_RULE(ir_grad_sum);
IR_GRAD_RULE(ir_grad_reshape);
IR_GRAD_RULE(ir_grad_transpose);
IR_GRAD_RULE(ir_grad_pad);
IR_GRAD_RULE(ir_grad_concat);
IR_GRAD_RULE(ir_grad_split);
IR_GRAD_RULE(ir_grad_slice);

#endif
