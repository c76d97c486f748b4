/* fastprop losses, fused with the output layer's activation where that is the textbook pairing.
 *
 * One body per kernel, stamped out for float (suffix _f) and double (suffix _d) by including
 * fp_loss_impl.h twice, as fp_math.h does. Conventions are PyTorch's with mean reduction and an
 * optional per-sample weight w (n,):
 *
 *     loss = sum_i w_i * l_i / sum_i w_i,   l_i = sample i's loss (mean over its k outputs,
 *                                           or its cross-entropy);   w = NULL means w_i = 1.
 *
 * Every kernel takes c = 1 / sum_i w_i (see fp_inv_weight_sum), returns the loss (sums kept in
 * double) and, when its output pointer is not NULL, writes a gradient scaled by c * w_i:
 *   - fp_pointwise_loss: mse / mae / huber on a = g(z); writes da = dL/da (the caller applies
 *     g'(z) afterwards).
 *   - fp_softmax_cross_entropy: from the logits z, stably (logsumexp(z) - z_y, never log(0));
 *     writes dz = dL/dz = c w_i (p * sum_j y_j - y), which is (p - y) / n for one-hot rows.
 *   - fp_sigmoid_binary_cross_entropy: max(z, 0) - y z + log1p(exp(-|z|)); writes
 *     dz = c w_i (p - y) / k.
 * Kernels trust their inputs: contiguous row-major (n x k) buffers, n, k >= 1, labels in
 * [0, k), weights >= 0 with a positive sum, p = g(z). Nothing is checked (see fastprop.losses).
 * Outputs must not alias the inputs, except that every kernel reads element (i, j) of its
 * inputs before writing element (i, j) of its output.
 *
 * Loss codes are shared with Python (fastprop/losses.py keeps the same table). */
#ifndef FP_LOSS_H
#define FP_LOSS_H

#include <math.h>
#include <stddef.h>

enum {
    FP_MSE = 0,
    FP_MAE = 1,
    FP_HUBER = 2,
    FP_CROSS_ENTROPY = 3,
    FP_BINARY_CROSS_ENTROPY = 4
};

#define FP_HUBER_DELTA 1.0 /* as torch.nn.HuberLoss() */

#include "fp_template.h"
#include "fp_exp.h"

#define TYPE float
#define SFX _f
#define EXP expf
#define SOFTMAX_EXP fp_expf
#define LOG1P log1pf
#define FABS fabsf
#include "fp_loss_impl.h"
#undef TYPE
#undef SFX
#undef EXP
#undef SOFTMAX_EXP
#undef LOG1P
#undef FABS

#define TYPE double
#define SFX _d
#define EXP exp
#define SOFTMAX_EXP exp
#define LOG1P log1p
#define FABS fabs
#include "fp_loss_impl.h"
#undef TYPE
#undef SFX
#undef EXP
#undef SOFTMAX_EXP
#undef LOG1P
#undef FABS

#endif
