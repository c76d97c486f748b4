# C-level API of the losses, on raw pointers, `nogil`: shared by the per-call entry point
# (_loss.pyx) and the whole-model engine, which calls loss_and_grad inside its training step.
# The math is in csrc/fp_loss.h; this layer picks the kernel and, for the regression losses,
# chains dL/da through the output activation with act_backward. Callers guarantee contiguous
# buffers of the stated shapes and validated targets; nothing is checked here.

from libc.math cimport NAN
from libc.stddef cimport ptrdiff_t
from cython cimport floating
from fastprop._core._dense cimport act_backward

cdef extern from "fp_loss.h" nogil:
    enum:
        FP_MSE
        FP_MAE
        FP_HUBER
        FP_CROSS_ENTROPY
        FP_BINARY_CROSS_ENTROPY
    double fp_inv_weight_sum_f(const float *w, ptrdiff_t n)
    double fp_inv_weight_sum_d(const double *w, ptrdiff_t n)
    double fp_pointwise_loss_f(int loss, const float *a, const float *y, const float *w,
                               double c, ptrdiff_t n, ptrdiff_t k, float *da)
    double fp_pointwise_loss_d(int loss, const double *a, const double *y, const double *w,
                               double c, ptrdiff_t n, ptrdiff_t k, double *da)
    double fp_softmax_cross_entropy_f(const float *z, const float *p, const float *y,
                                      const long long *labels, const float *w, double c,
                                      ptrdiff_t n, ptrdiff_t k, float *dz)
    double fp_softmax_cross_entropy_d(const double *z, const double *p, const double *y,
                                      const long long *labels, const double *w, double c,
                                      ptrdiff_t n, ptrdiff_t k, double *dz)
    double fp_sigmoid_binary_cross_entropy_f(const float *z, const float *p, const float *y,
                                             const float *w, double c, ptrdiff_t n,
                                             ptrdiff_t k, float *dz)
    double fp_sigmoid_binary_cross_entropy_d(const double *z, const double *p,
                                             const double *y, const double *w, double c,
                                             ptrdiff_t n, ptrdiff_t k, double *dz)


cdef inline double loss_and_grad(int loss, int act, const floating *z, const floating *a,
                                 const floating *y, const long long *labels, const floating *w,
                                 Py_ssize_t n, Py_ssize_t k, floating *dz_out,
                                 floating *work, double normalizer) noexcept nogil:
    """Return L = sum_i w_i l_i / N with N = sum_i w_i (w = NULL: the plain mean), or
    N = normalizer when it is > 0; dz_out := dL/dz.

    IN   loss    FP_MSE, FP_MAE, FP_HUBER, FP_CROSS_ENTROPY or FP_BINARY_CROSS_ENTROPY
                 (fastprop.losses.LOSSES); any other code returns NaN and writes nothing.
         act     the output layer's activation code; FP_SOFTMAX for cross-entropy, FP_SIGMOID
                 for binary cross-entropy (those two are fused and ignore act); anything,
                 softmax included, for the regression losses.
         z, a    (n, k) logits of the output layer and a = g(z).
         y       (n, k) dense targets, or NULL when labels is given.
         labels  (n,) class indices in [0, k), cross-entropy only; NULL otherwise.
         w       (n,) sample weights >= 0 with a positive sum, or NULL.
    OUT  dz_out  (n, k) dL/dz, or NULL to compute the loss only.
         work    (n, k) scratch for dL/da: used only by mse / mae / huber when dz_out is not
                 NULL (NULL is fine otherwise). It may be dz_out itself: act_backward reads
                 da[i] before writing dz[i] (row-wise for softmax), so dz_out is then computed
                 in place.
    IN   normalizer  > 0: divide by it instead of the batch's own weight sum (data-parallel
                 shards of one global batch pass the global sum, and their gradients then sum
                 to the global batch's); <= 0: the batch's own (the default path).
    Preconditions: n, k >= 1; buffers C-contiguous; y, labels, w validated
    (fastprop.losses.prepare_targets / prepare_sample_weight); dz_out and work do not alias
    z, a, y or w. l_i is sample i's mean over its k outputs (cross-entropy: its cross-entropy);
    losses are summed in double.
    """
    cdef double c
    cdef floating *da = NULL
    cdef double total
    if normalizer > 0:
        c = 1.0 / normalizer
    elif floating is float:
        c = fp_inv_weight_sum_f(w, n)
    else:
        c = fp_inv_weight_sum_d(w, n)
    if loss == FP_CROSS_ENTROPY:
        if floating is float:
            return fp_softmax_cross_entropy_f(z, a, y, labels, w, c, n, k, dz_out)
        else:
            return fp_softmax_cross_entropy_d(z, a, y, labels, w, c, n, k, dz_out)
    if loss == FP_BINARY_CROSS_ENTROPY:
        if floating is float:
            return fp_sigmoid_binary_cross_entropy_f(z, a, y, w, c, n, k, dz_out)
        else:
            return fp_sigmoid_binary_cross_entropy_d(z, a, y, w, c, n, k, dz_out)
    if loss != FP_MSE and loss != FP_MAE and loss != FP_HUBER:
        return NAN
    if dz_out != NULL:
        da = work
    if floating is float:
        total = fp_pointwise_loss_f(loss, a, y, w, c, n, k, da)
    else:
        total = fp_pointwise_loss_d(loss, a, y, w, c, n, k, da)
    if dz_out != NULL:
        act_backward(act, z, a, da, dz_out, n, k)
    return total
