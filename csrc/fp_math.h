/* fastprop elementwise math: activations, their derivatives, softmax.
 *
 * One body per kernel, stamped out for float (suffix _f) and double (suffix _d) by including
 * fp_math_impl.h twice with TYPE / CAT / math-function macros set. Kernels trust their inputs:
 * contiguous buffers, sizes >= 0, no Python objects, no checks (validation lives in Python).
 *
 * Loops are branchless (selects, not ifs): on random signs a branchy ReLU measured ~30x slower
 * than the select form here (202 us vs 6 us on 256 x 128, see shared/benchmarking.md), and gcc
 * -O3 vectorizes the select form.
 *
 * Activation codes are shared with Python (fastprop/activations.py keeps the same table). */
#ifndef FP_MATH_H
#define FP_MATH_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum {
    FP_IDENTITY = 0,
    FP_RELU = 1,
    FP_LEAKY_RELU = 2,
    FP_ELU = 3,
    FP_GELU = 4,
    FP_SIGMOID = 5,
    FP_TANH = 6,
    FP_SOFTPLUS = 7,
    FP_SILU = 8,
    FP_SOFTMAX = 9
};

#define FP_LEAKY_SLOPE 0.01
#define FP_SOFTPLUS_THRESHOLD 20.0 /* as torch.nn.functional.softplus: linear above it */

/* Flush-to-zero for the duration of a model's compiled call: values below the smallest normal
 * number (1.2e-38 in float32, 2.2e-308 in float64) become 0 instead of denormals. Denormals
 * cost microcode assists on x86: Adam's first moment decays into them for parameters whose
 * gradient has gone to 0 (dead ReLUs), and measured on the digits demo after 40 epochs, 7 % of
 * exp_avg was denormal and the update ran 8.6x slower (127 us vs 15 us for 17k parameters).
 * fp_ftz_begin sets FTZ and DAZ (x86 MXCSR) or FZ (AArch64 FPCR) for this thread and returns
 * the previous state, which fp_ftz_end restores; elsewhere both do nothing. */
#if defined(__x86_64__) || defined(_M_X64) || (defined(__SSE__) && defined(__i386__))
#include <xmmintrin.h>
static inline unsigned int fp_ftz_begin(void)
{
    unsigned int csr = _mm_getcsr();
    _mm_setcsr(csr | 0x8040u); /* FTZ (bit 15) | DAZ (bit 6) */
    return csr;
}
static inline void fp_ftz_end(unsigned int csr) { _mm_setcsr(csr); }
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
static inline unsigned int fp_ftz_begin(void)
{
    uint64_t fpcr;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(fpcr));
    __asm__ __volatile__("msr fpcr, %0" : : "r"(fpcr | (1ull << 24)));
    return (unsigned int)fpcr;
}
static inline void fp_ftz_end(unsigned int fpcr)
{
    uint64_t v = fpcr;
    __asm__ __volatile__("msr fpcr, %0" : : "r"(v));
}
#else
static inline unsigned int fp_ftz_begin(void) { return 0; }
static inline void fp_ftz_end(unsigned int state) { (void)state; }
#endif

/* A spin lock for critical sections of a few instructions (the BLAS thread bookkeeping of
 * _engine.pyx): an atomic exchange when uncontended, no system call, usable without the GIL. */
#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
static inline void fp_spin_lock(volatile long *lock) { while (_InterlockedExchange(lock, 1)) {} }
static inline void fp_spin_unlock(volatile long *lock) { _InterlockedExchange(lock, 0); }
#else
static inline void fp_spin_lock(volatile long *lock)
{
    while (__atomic_exchange_n(lock, 1, __ATOMIC_ACQUIRE)) {}
}
static inline void fp_spin_unlock(volatile long *lock) { __atomic_store_n(lock, 0, __ATOMIC_RELEASE); }
#endif

/* splitmix64 (Steele, Lea, Flood 2014): a tiny, fast generator whose whole state is one
 * uint64, so a model's dropout stream is saved and restored as a single number. */
static inline uint64_t fp_rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* The stream position n draws later (fp_rng_next adds one constant per draw): a batch-split
 * worker jumps to the draws of its first row, so dropout masks do not depend on the split. */
static inline void fp_rng_skip(uint64_t *state, uint64_t n)
{
    *state += n * 0x9E3779B97F4A7C15ULL;
}

/* uniform double in [0, 1) with 53 random bits */
static inline double fp_rng_uniform(uint64_t *state)
{
    return (double)(fp_rng_next(state) >> 11) * (1.0 / 9007199254740992.0);
}

/* Uniform integer in [0, bound), 0 < bound: exactly uniform (rejection, no modulo bias).
 * Below 2^32, Lemire's multiply-shift on the upper 32 random bits (a division only on the rare
 * rejection path); above, rejection of the top partial range, then a modulo. */
static inline uint64_t fp_rng_below(uint64_t *state, uint64_t bound)
{
    if (bound <= 0xFFFFFFFFULL) {
        uint64_t m = (fp_rng_next(state) >> 32) * bound;
        uint32_t low = (uint32_t)m;
        if (low < (uint32_t)bound) {
            uint32_t floor = (uint32_t)(-(uint32_t)bound) % (uint32_t)bound;
            while (low < floor) {
                m = (fp_rng_next(state) >> 32) * bound;
                low = (uint32_t)m;
            }
        }
        return m >> 32;
    } else {
        uint64_t limit = UINT64_MAX - UINT64_MAX % bound, x;
        do x = fp_rng_next(state); while (x >= limit);
        return x % bound;
    }
}

/* order := a uniformly random permutation of 0 .. n-1 (Fisher-Yates), drawn from `state`:
 * fit's shuffle, 1,437 samples in a few microseconds where a NumPy Generator built per epoch
 * took 40 us. */
static void fp_permutation(int64_t *order, ptrdiff_t n, uint64_t *state)
{
    ptrdiff_t i;
    for (i = 0; i < n; i++) order[i] = i;
    for (i = n - 1; i > 0; i--) {
        ptrdiff_t j = (ptrdiff_t)fp_rng_below(state, (uint64_t)i + 1);
        int64_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
}

#include "fp_template.h"

/* 1 if every label lies in [0, k) */
static FP_CLONES int fp_labels_in_range(const int64_t *labels, ptrdiff_t n, int64_t k)
{
    int64_t bad = 0;
    ptrdiff_t i;
    for (i = 0; i < n; i++) bad |= (int64_t)((labels[i] < 0) | (labels[i] >= k));
    return bad == 0;
}

#include "fp_template.h"
#include "fp_exp.h"

#define TYPE float
#define SFX _f
#define BITS uint32_t               /* an unsigned integer of TYPE's width, and its masks */
#define ABS_BITS 0x7fffffffu
#define INF_BITS 0x7f800000u
#define EXP expf
#define SOFTMAX_EXP fp_expf
#define EXPM1 expm1f
#define LOG1P log1pf
#define ERFC erfcf
#define TANH tanhf
#define FABS fabsf
#include "fp_math_impl.h"
#undef TYPE
#undef SFX
#undef BITS
#undef ABS_BITS
#undef INF_BITS
#undef EXP
#undef SOFTMAX_EXP
#undef EXPM1
#undef LOG1P
#undef ERFC
#undef TANH
#undef FABS

#define TYPE double
#define SFX _d
#define BITS uint64_t
#define ABS_BITS 0x7fffffffffffffffull
#define INF_BITS 0x7ff0000000000000ull
#define EXP exp
#define SOFTMAX_EXP exp
#define EXPM1 expm1
#define LOG1P log1p
#define ERFC erfc
#define TANH tanh
#define FABS fabs
#include "fp_math_impl.h"
#undef TYPE
#undef SFX
#undef BITS
#undef ABS_BITS
#undef INF_BITS
#undef EXP
#undef SOFTMAX_EXP
#undef EXPM1
#undef LOG1P
#undef ERFC
#undef TANH
#undef FABS

#endif
