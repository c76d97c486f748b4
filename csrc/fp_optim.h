/* fastprop optimizer kernels (torch.optim semantics) over flat buffers, in C so that they are
 * compiled for several instruction sets (FP_CLONES, fp_template.h): the per-element math is
 * bound by arithmetic (Adam's sqrt and division) or by float <-> double conversion (SGD,
 * RMSprop, Adagrad run in double), which 16-byte SSE2 vectors halve or quarter.
 *
 * Measured (17k float32 parameters, AVX-512 Xeon, one call through fastprop._core._optim):
 * see DEVELOPERS.md. */
#ifndef FP_OPTIM_H
#define FP_OPTIM_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "fp_template.h"

#define TYPE float
#define SFX _f
#define SQRT sqrtf
#include "fp_optim_impl.h"
#undef TYPE
#undef SFX
#undef SQRT

#define TYPE double
#define SFX _d
#define SQRT sqrt
#include "fp_optim_impl.h"
#undef TYPE
#undef SFX
#undef SQRT

#endif
