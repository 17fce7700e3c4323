/* All kernel families of swatc's runtime (see README.md in this folder). */
#ifndef SWATC_RUNTIME_KERNELS_KERNELS_H
#define SWATC_RUNTIME_KERNELS_KERNELS_H

#include "runtime/kernels/kern.h"
#include "runtime/kernels/conv.h"
#include "runtime/kernels/gemm.h"
#include "runtime/kernels/eltwise.h"
#include "runtime/kernels/softmax.h"
#include "runtime/kernels/bn.h"
#include "runtime/kernels/pool.h"
#include "runtime/kernels/movement.h"
#include "runtime/kernels/topk.h"
#include "runtime/kernels/spconv.h"
#include "runtime/kernels/spwgrad.h"

#endif
