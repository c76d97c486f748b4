# Python entry points of the BatchNorm1d / LayerNorm kernels in _norm.pxd (csrc/fp_norm.h).
# Typed memoryviews are the contract (C-contiguous, one dtype per call); only constant-time
# checks here (shapes, n, eps, momentum), then the GIL is released. The public API and the value
# checks live in fastprop.layers.batchnorm / layernorm.

from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cython cimport floating


cdef _same(tuple got, tuple want, str name):
    if got != want:
        raise ValueError(f"{name} has shape {got}, expected {want}")


cdef double *_work(Py_ssize_t w) except NULL:
    cdef double *work = <double *>PyMem_Malloc(3 * max(w, 1) * sizeof(double))
    if work == NULL:
        raise MemoryError()
    return work


cdef _check(Py_ssize_t n, Py_ssize_t w, double eps):
    if n < 1 or w < 1:
        raise ValueError(f"x must have at least one row and one column, got ({n}, {w})")
    if not eps > 0.0:
        raise ValueError(f"eps must be > 0, got {eps}")


def batchnorm_forward(const floating[:, ::1] x, const floating[::1] gamma,
                      const floating[::1] beta, floating[::1] running_mean,
                      floating[::1] running_var, double momentum, double eps, bint training,
                      floating[:, ::1] x_hat, floating[::1] inv_std, floating[:, ::1] y):
    """y := BatchNorm1d(x) (PyTorch semantics). training: batch mean and biased variance, and
    running_mean / running_var (unbiased) updated with momentum; else the running statistics.
    IN x (n, w) (n >= 2 when training), gamma, beta (w,), 0 <= momentum <= 1, eps > 0.
    IN/OUT running_mean, running_var (w,). OUT x_hat (n, w), inv_std (w,), y (n, w)."""
    cdef Py_ssize_t n = x.shape[0], w = x.shape[1]
    _check(n, w, eps)
    if training and n < 2:
        raise ValueError(f"BatchNorm in training needs more than one row per batch, got {n}")
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    for arr, name in ((gamma, "gamma"), (beta, "beta"), (running_mean, "running_mean"),
                      (running_var, "running_var"), (inv_std, "inv_std")):
        _same((arr.shape[0],), (w,), name)
    _same((x_hat.shape[0], x_hat.shape[1]), (n, w), "x_hat")
    _same((y.shape[0], y.shape[1]), (n, w), "y")
    cdef double *work = _work(w)
    with nogil:
        bn_forward(n, w, &x[0, 0], &gamma[0], &beta[0], &running_mean[0],
                          &running_var[0], momentum, eps, training, &x_hat[0, 0], &inv_std[0],
                          &y[0, 0], work)
    PyMem_Free(work)


def batchnorm_backward(const floating[:, ::1] dy, const floating[:, ::1] x_hat,
                       const floating[::1] gamma, const floating[::1] inv_std, bint training,
                       floating[:, ::1] dx, floating[::1] dgamma, floating[::1] dbeta):
    """dx := the input gradient of the forward call that made x_hat / inv_std (training: through
    the batch statistics; else the running ones are constants); dgamma, dbeta += their
    gradients. IN dy, x_hat (n, w), gamma, inv_std (w,). OUT dx (n, w). IN/OUT dgamma,
    dbeta (w,)."""
    cdef Py_ssize_t n = dy.shape[0], w = dy.shape[1]
    _check(n, w, 1.0)
    for arr, name in ((gamma, "gamma"), (inv_std, "inv_std"), (dgamma, "dgamma"),
                      (dbeta, "dbeta")):
        _same((arr.shape[0],), (w,), name)
    _same((x_hat.shape[0], x_hat.shape[1]), (n, w), "x_hat")
    _same((dx.shape[0], dx.shape[1]), (n, w), "dx")
    cdef double *work = _work(w)
    with nogil:
        bn_backward(n, w, &dy[0, 0], &x_hat[0, 0], &gamma[0], &inv_std[0], training,
                           &dx[0, 0], &dgamma[0], &dbeta[0], work)
    PyMem_Free(work)


def layernorm_forward(const floating[:, ::1] x, const floating[::1] gamma,
                      const floating[::1] beta, double eps, floating[:, ::1] x_hat,
                      floating[::1] inv_std, floating[:, ::1] y):
    """y := LayerNorm(w)(x), normalizing each row over its w features (PyTorch semantics).
    IN x (n, w), gamma, beta (w,), eps > 0. OUT x_hat (n, w), inv_std (n,), y (n, w)."""
    cdef Py_ssize_t n = x.shape[0], w = x.shape[1]
    _check(n, w, eps)
    _same((gamma.shape[0],), (w,), "gamma")
    _same((beta.shape[0],), (w,), "beta")
    _same((inv_std.shape[0],), (n,), "inv_std")
    _same((x_hat.shape[0], x_hat.shape[1]), (n, w), "x_hat")
    _same((y.shape[0], y.shape[1]), (n, w), "y")
    with nogil:
        ln_forward(n, w, &x[0, 0], &gamma[0], &beta[0], eps, &x_hat[0, 0], &inv_std[0],
                          &y[0, 0])


def layernorm_backward(const floating[:, ::1] dy, const floating[:, ::1] x_hat,
                       const floating[::1] gamma, const floating[::1] inv_std,
                       floating[:, ::1] dx, floating[::1] dgamma, floating[::1] dbeta):
    """dx := the input gradient of the LayerNorm forward call that made x_hat / inv_std;
    dgamma, dbeta += their gradients. IN dy, x_hat (n, w), gamma (w,), inv_std (n,).
    OUT dx (n, w). IN/OUT dgamma, dbeta (w,)."""
    cdef Py_ssize_t n = dy.shape[0], w = dy.shape[1]
    _check(n, w, 1.0)
    for arr, name in ((gamma, "gamma"), (dgamma, "dgamma"), (dbeta, "dbeta")):
        _same((arr.shape[0],), (w,), name)
    _same((inv_std.shape[0],), (n,), "inv_std")
    _same((x_hat.shape[0], x_hat.shape[1]), (n, w), "x_hat")
    _same((dx.shape[0], dx.shape[1]), (n, w), "dx")
    cdef double *work = _work(w)
    with nogil:
        ln_backward(n, w, &dy[0, 0], &x_hat[0, 0], &gamma[0], &inv_std[0], &dx[0, 0],
                           &dgamma[0], &dbeta[0], work)
    PyMem_Free(work)
