# Per-call entry point of the losses: the C-level loss_and_grad of _loss.pxd (the one the model
# engine calls inside its training step) behind typed memoryviews. Only constant-time checks
# here (shapes, codes, exactly one kind of target, no aliasing of outputs onto inputs), then the
# GIL is released. Target and weight validation (label range, probability rows, NaN) happen once
# at the Python boundary, in fastprop.losses.

from cython cimport floating
from fastprop._core._loss cimport (loss_and_grad as _loss_and_grad, FP_MSE, FP_MAE, FP_HUBER,
                                   FP_CROSS_ENTROPY, FP_BINARY_CROSS_ENTROPY)

cdef extern from "fp_math.h" nogil:
    enum:
        FP_SIGMOID
        FP_SOFTMAX

# name -> C code (csrc/fp_loss.h): the one place a loss name meets its code; fastprop.losses
# reads it.
LOSS_CODES = {"mse": FP_MSE, "mae": FP_MAE, "huber": FP_HUBER, "cross_entropy": FP_CROSS_ENTROPY,
              "binary_cross_entropy": FP_BINARY_CROSS_ENTROPY}


def _same(tuple got, tuple want, str name):
    if got != want:
        raise ValueError(f"{name} has shape {got}, expected {want}")


def loss_and_grad(int loss, int act, const floating[:, ::1] z, const floating[:, ::1] a,
                  const floating[:, ::1] y=None, const long long[::1] labels=None,
                  const floating[::1] w=None, floating[:, ::1] dz_out=None,
                  floating[:, ::1] work=None, double normalizer=0):
    """Return the mean loss L (weighted by w when given); dz_out := dL/dz when given.
    normalizer > 0 replaces the divisor sum(w) (n without w): L = sum_i w_i l_i / normalizer.
    IN z, a = g(z) (n, k); y (n, k) targets or labels (n,) int64 class indices (cross-entropy
    only), exactly one; w (n,) sample weights or None. OUT dz_out (n, k) or None; work (n, k)
    scratch for the regression losses (default: dz_out itself, computed in place).
    Targets and weights must come from fastprop.losses.prepare_targets /
    prepare_sample_weight: label range and values are not checked here."""
    cdef Py_ssize_t n = z.shape[0], k = z.shape[1]
    cdef const floating *yp = NULL
    cdef const long long *lp = NULL
    cdef const floating *wp = NULL
    cdef floating *dzp = NULL
    cdef floating *wkp = NULL
    cdef double out
    if loss < FP_MSE or loss > FP_BINARY_CROSS_ENTROPY:
        raise ValueError(f"loss code must be in [{FP_MSE}, {FP_BINARY_CROSS_ENTROPY}], got {loss}")
    if act < 0 or act > FP_SOFTMAX:
        raise ValueError(f"activation code must be in [0, {FP_SOFTMAX}], got {act}")
    if loss == FP_CROSS_ENTROPY and act != FP_SOFTMAX:
        raise ValueError(f"cross-entropy needs the softmax activation (code {FP_SOFTMAX}), "
                         f"got code {act}")
    if loss == FP_BINARY_CROSS_ENTROPY and act != FP_SIGMOID:
        raise ValueError(f"binary cross-entropy needs the sigmoid activation (code "
                         f"{FP_SIGMOID}), got code {act}")
    if n == 0 or k == 0:
        raise ValueError(f"z is empty (shape {(n, k)}): the loss of an empty batch is undefined")
    _same((a.shape[0], a.shape[1]), (n, k), "a")
    if (y is None) == (labels is None):
        raise ValueError("give exactly one of y (dense targets) and labels")
    if labels is not None:
        if loss != FP_CROSS_ENTROPY:
            raise ValueError("integer labels are only for cross-entropy; give dense y")
        _same((labels.shape[0],), (n,), "labels")
        lp = &labels[0]
    else:
        _same((y.shape[0], y.shape[1]), (n, k), "y")
        yp = &y[0, 0]
    if w is not None:
        _same((w.shape[0],), (n,), "w")
        wp = &w[0]
    if dz_out is not None:
        _same((dz_out.shape[0], dz_out.shape[1]), (n, k), "dz_out")
        dzp = &dz_out[0, 0]
        if work is not None:
            _same((work.shape[0], work.shape[1]), (n, k), "work")
            wkp = &work[0, 0]
        else:
            wkp = dzp
        for out_p, out_name in ((<size_t> dzp, "dz_out"), (<size_t> wkp, "work")):
            for in_p, in_name in ((<size_t> &z[0, 0], "z"), (<size_t> &a[0, 0], "a"),
                                  (<size_t> yp, "y")):
                if out_p == in_p:
                    raise ValueError(f"{out_name} must not be the same buffer as {in_name}")
    with nogil:
        out = _loss_and_grad(loss, act, &z[0, 0], &a[0, 0], yp, lp, wp, n, k, dzp, wkp,
                             normalizer)
    return out
