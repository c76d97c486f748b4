/* fastprop normalization kernels (PyTorch BatchNorm1d / LayerNorm semantics) over row-major
 * (n, w) blocks, float and double from one body (fp_norm_impl.h, the TYPE / CAT template of
 * fp_template.h), each loop kernel cloned per ISA (FP_CLONES). Every reduction accumulates in
 * double; `work` is caller-provided scratch of 2 * w doubles (3 * w for BatchNorm's training
 * forward; no allocation here). Backward
 * kernels accumulate into dgamma / dbeta (the caller zeroes) and write dx. Math only: the
 * callers (_core/_norm.pyx, the tape) check shapes and values. */
#ifndef FP_NORM_H
#define FP_NORM_H

#include <math.h>
#include <stddef.h>

#include "fp_template.h"

#define TYPE float
#define SFX _f
#include "fp_norm_impl.h"
#undef TYPE
#undef SFX

#define TYPE double
#define SFX _d
#include "fp_norm_impl.h"
#undef TYPE
#undef SFX

#endif
