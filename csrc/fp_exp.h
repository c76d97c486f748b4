/* exp for float32 that gcc can vectorize and inline: the softmax kernels call it once per
 * element, where a libm expf call per element (through the PLT) was the largest non-GEMM cost
 * of a small training step (7.5 % of the digits net's step at batch 32: softmax forward and
 * softmax cross-entropy each take an exp of every logit).
 *
 * x = k ln2 + r with k = round(x / ln2), |r| <= ln2 / 2 (Cody-Waite: ln2 split into a part
 * with 9 significant bits, so k * FP_LN2_HI is exact, and the rest); exp(r) by its Taylor
 * polynomial of degree 7 (truncation < 1e-8 relative on that interval, below half an ulp of
 * float); then the product with 2^k, built from exponent bits as 2^(k/2) * 2^(k - k/2) so
 * that both factors stay normal numbers for every k in [-150, 129]. Checked against
 * double-precision exp on every float of [-104, 89] (1.78e9 values): at most 1.22 ulp from
 * the exact value (glibc's expf: 0.5), 1.6e-5 of them more than 1 ulp away; tests/test_kernels.py
 * samples it. Below -104 the result is 0 (exp(-104) is
 * under half the smallest denormal); above 88.72 it is inf; NaN stays NaN. */
#ifndef FP_EXP_H
#define FP_EXP_H

#include <stdint.h>
#include <string.h>

#define FP_LOG2E 1.44269504088896341f
#define FP_LN2_HI 0.693359375f        /* 355 / 512 */
#define FP_LN2_LO -2.12194440054690583e-4f /* ln 2 - FP_LN2_HI */
#define FP_ROUND_SHIFT 12582912.0f    /* 1.5 * 2^23: (v + it) - it rounds v to an integer */

static inline float fp_pow2i_f(int32_t k) /* 2^k for k in [-126, 127] */
{
    uint32_t u = (uint32_t)(k + 127) << 23;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline float fp_expf(float x)
{
    float kf, kc, r, p;
    int32_t k, k1;
    x = x < -104.0f ? -104.0f : x;
    x = x > 89.0f ? 89.0f : x;
    kf = (x * FP_LOG2E + FP_ROUND_SHIFT) - FP_ROUND_SHIFT;
    r = (x - kf * FP_LN2_HI) - kf * FP_LN2_LO;
    p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    kc = kf == kf ? kf : 0.0f; /* NaN: any k (p is NaN already); converting NaN would be UB */
    k = (int32_t)kc;
    k1 = k / 2;
    return (p * fp_pow2i_f(k1)) * fp_pow2i_f(k - k1);
}

#endif
