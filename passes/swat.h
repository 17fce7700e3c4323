/* SWAT (../shared/SWAT.md): which layers are sparsified and how much. The swat pass inserts the
 * Top-K nodes; the budget functions are also used by the driver (SWAT-M moves budgets every step)
 * and by `swatc inspect --sparsity`. */
#ifndef SWATC_PASSES_SWAT_H
#define SWATC_PASSES_SWAT_H

#include "ir/ir.h"

typedef enum swat_budget { SWAT_UNIFORM = 0, SWAT_ERK, SWAT_MOMENTUM } swat_budget;
typedef enum swat_structure { SWAT_UNSTRUCTURED = 0, SWAT_CHANNEL, SWAT_FILTER } swat_structure;

typedef struct swat_opts {
  double sparsity;          /* global target: fraction of zero conv/FC weights; 0 = dense training */
  swat_budget budget;
  int sparse_first;         /* uniform: sparsify the first layer too (dense by default) */
  const char *dense_layers; /* comma-separated node or weight names kept dense */
  swat_structure structure; /* weights only; activations stay unstructured */
  int period;               /* exact Top-K every `period` steps (>= 1) */
} swat_opts;

typedef struct swat_layer {
  ir_node *node;        /* forward Conv / Gemm / MatMul */
  ir_value *weight;     /* its trained weight */
  int64_t numel;        /* weight elements */
  int64_t macs;         /* multiply-accumulates per image */
  double raw;           /* ERK score: sum of the weight's dims / their product */
  int forced_dense;     /* named in dense_layers */
  double sparsity;      /* budget (weights and the saved activation) */
  const char *topk_w, *topk_x; /* names of the inserted Top-K nodes (NULL: none) */
  const char *state_w, *state_x; /* their state tensors [threshold, realised density] */
} swat_layer;

/* The layers SWAT considers, in forward order (malloc'd array, free() it). */
int swat_layers(const ir_graph *g, swat_layer **out, int *n, sw_err *e);
/* Fills each layer's sparsity from o (dense_layers matched by node name, weight name, or weight
 * name without ".weight"). SW_EINPUT for a dense_layers entry that names no layer. */
int swat_budgets(swat_layer *l, int n, const swat_opts *o, sw_err *e);
/* ERK (RigL): densities d_l = min(1, eps * raw_l) with sum d_l numel_l = (1 - s) sum numel_l; layers
 * with dense[l] are fixed at 1; layers tied at the largest raw become dense together while eps * raw > 1.
 * Returns SW_EINPUT if the target cannot be met (too many forced-dense weights). */
int swat_erk(const double *raw, const int64_t *numel, const int *dense, int n, double sparsity, double *density, sw_err *e);
/* SWAT-M: shares of the nonzero budget (1 - s) sum numel proportional to score[l] (mean |momentum| of
 * the active weights); a layer over 99% density becomes dense and its surplus is spread evenly over
 * the others, to a fixed point. */
void swat_momentum_budget(const double *score, const int64_t *numel, int n, double sparsity, double *density);
/* Training-FLOP reduction (SWAT.md): 1 - sum F_l (2 d_l + da_l) / (3 sum F_l). */
double swat_flop_reduction(const int64_t *macs, const double *dw, const double *da, int n);

#endif
