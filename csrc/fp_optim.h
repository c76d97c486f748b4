/* fastprop optimizer kernels that are bound by arithmetic rather than memory (Adam's sqrt and
 * division per element), in C so that they can be compiled for several instruction sets.
 *
 * FP_CLONES: on x86-64 Linux with glibc and GCC, the function is built three times (AVX-512,
 * AVX2, baseline SSE2) and the loader picks the best the CPU has (ifunc). Wheels stay portable
 * (no -march flags) while a modern CPU gets 8 or 16 lanes instead of 4. Elsewhere it is built
 * once, for the baseline. Every clone computes the same IEEE results: each element's
 * operations are the same, there are no reductions, and setup.py compiles with
 * -ffp-contract=off (no FMA contraction).
 *
 * Measured (Adam, 17k float32 parameters, AVX-512 Xeon): 28 us with SSE2, see
 * benchmarks/README.md for the clone. */
#ifndef FP_OPTIM_H
#define FP_OPTIM_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    defined(__GLIBC__)
#define FP_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FP_CLONES
#endif

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
