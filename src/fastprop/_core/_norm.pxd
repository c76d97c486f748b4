# C-level BatchNorm1d / LayerNorm kernels (csrc/fp_norm.h), `noexcept nogil`, over raw pointers
# to row-major (n, w) blocks: shared by the Python entry points (_norm.pyx) and a compiled tape
# node, which calls them from inside its nogil step. Callers guarantee n >= 1 (n >= 2 for
# BatchNorm training), w >= 1, the buffer sizes in the comments, eps > 0, momentum in [0, 1]
# and `work` of 2 * w doubles (3 * w for bn_forward); nothing is checked here. Backward
# accumulates into dgamma / dbeta (the caller zeroes) and writes dx. BatchNorm's training
# forward leaves the batch mean and unbiased variance in `work`; with NULL running statistics
# it does not update them, and bn_update_running does it later from `work` (a tape commits
# them with an accepted step).

from cython cimport floating

cdef extern from "fp_norm.h" nogil:
    void fp_batchnorm_update_running_f(Py_ssize_t w, const double *stats, double momentum,
                                       float *running_mean, float *running_var)
    void fp_batchnorm_update_running_d(Py_ssize_t w, const double *stats, double momentum,
                                       double *running_mean, double *running_var)
    void fp_batchnorm_train_forward_f(Py_ssize_t n, Py_ssize_t w, const float *x,
                                      const float *gamma, const float *beta, float *running_mean,
                                      float *running_var, double momentum, double eps,
                                      float *x_hat, float *inv_std, float *y, double *work)
    void fp_batchnorm_train_forward_d(Py_ssize_t n, Py_ssize_t w, const double *x,
                                      const double *gamma, const double *beta,
                                      double *running_mean, double *running_var, double momentum,
                                      double eps, double *x_hat, double *inv_std, double *y,
                                      double *work)
    void fp_batchnorm_eval_forward_f(Py_ssize_t n, Py_ssize_t w, const float *x,
                                     const float *gamma, const float *beta,
                                     const float *running_mean, const float *running_var,
                                     double eps, float *x_hat, float *inv_std, float *y,
                                     double *work)
    void fp_batchnorm_eval_forward_d(Py_ssize_t n, Py_ssize_t w, const double *x,
                                     const double *gamma, const double *beta,
                                     const double *running_mean, const double *running_var,
                                     double eps, double *x_hat, double *inv_std, double *y,
                                     double *work)
    void fp_batchnorm_backward_f(Py_ssize_t n, Py_ssize_t w, const float *dy, const float *x_hat,
                                 const float *gamma, const float *inv_std, int training,
                                 float *dx, float *dgamma, float *dbeta, double *work)
    void fp_batchnorm_backward_d(Py_ssize_t n, Py_ssize_t w, const double *dy,
                                 const double *x_hat, const double *gamma, const double *inv_std,
                                 int training, double *dx, double *dgamma, double *dbeta,
                                 double *work)
    void fp_layernorm_forward_f(Py_ssize_t n, Py_ssize_t w, const float *x, const float *gamma,
                                const float *beta, double eps, float *x_hat, float *inv_std,
                                float *y)
    void fp_layernorm_forward_d(Py_ssize_t n, Py_ssize_t w, const double *x,
                                const double *gamma, const double *beta, double eps,
                                double *x_hat, double *inv_std, double *y)
    void fp_layernorm_backward_f(Py_ssize_t n, Py_ssize_t w, const float *dy, const float *x_hat,
                                 const float *gamma, const float *inv_std, float *dx,
                                 float *dgamma, float *dbeta, double *work)
    void fp_layernorm_backward_d(Py_ssize_t n, Py_ssize_t w, const double *dy,
                                 const double *x_hat, const double *gamma, const double *inv_std,
                                 double *dx, double *dgamma, double *dbeta, double *work)


cdef inline void bn_forward(Py_ssize_t n, Py_ssize_t w, const floating *x,
                                   const floating *gamma, const floating *beta,
                                   floating *running_mean, floating *running_var,
                                   double momentum, double eps, bint training,
                                   floating *x_hat, floating *inv_std, floating *y,
                                   double *work) noexcept nogil:
    """y := BatchNorm1d(x): batch statistics (and the running ones updated) when training,
    running statistics otherwise. IN x (n, w), gamma, beta (w,). IN/OUT running_mean,
    running_var (w,) (updated only when training and not NULL). OUT x_hat (n, w), inv_std (w,),
    y (n, w), work (training: the batch mean and unbiased variance)."""
    if training:
        if floating is float:
            fp_batchnorm_train_forward_f(n, w, x, gamma, beta, running_mean, running_var,
                                         momentum, eps, x_hat, inv_std, y, work)
        else:
            fp_batchnorm_train_forward_d(n, w, x, gamma, beta, running_mean, running_var,
                                         momentum, eps, x_hat, inv_std, y, work)
    elif floating is float:
        fp_batchnorm_eval_forward_f(n, w, x, gamma, beta, running_mean, running_var, eps, x_hat,
                                    inv_std, y, work)
    else:
        fp_batchnorm_eval_forward_d(n, w, x, gamma, beta, running_mean, running_var, eps, x_hat,
                                    inv_std, y, work)


cdef inline void bn_update_running(Py_ssize_t w, const double *stats, double momentum,
                                   floating *running_mean,
                                   floating *running_var) noexcept nogil:
    """running = (1 - momentum) * running + momentum * batch, from stats (2 * w doubles: the
    batch mean then its unbiased variance, as bn_forward leaves them in work)."""
    if floating is float:
        fp_batchnorm_update_running_f(w, stats, momentum, running_mean, running_var)
    else:
        fp_batchnorm_update_running_d(w, stats, momentum, running_mean, running_var)


cdef inline void bn_backward(Py_ssize_t n, Py_ssize_t w, const floating *dy,
                                    const floating *x_hat, const floating *gamma,
                                    const floating *inv_std, bint training, floating *dx,
                                    floating *dgamma, floating *dbeta,
                                    double *work) noexcept nogil:
    """dx := d loss / dx (training: through the batch statistics); dgamma, dbeta +=.
    IN dy, x_hat (n, w), gamma, inv_std (w,). OUT dx (n, w). IN/OUT dgamma, dbeta (w,)."""
    if floating is float:
        fp_batchnorm_backward_f(n, w, dy, x_hat, gamma, inv_std, training, dx, dgamma, dbeta,
                                work)
    else:
        fp_batchnorm_backward_d(n, w, dy, x_hat, gamma, inv_std, training, dx, dgamma, dbeta,
                                work)


cdef inline void ln_forward(Py_ssize_t n, Py_ssize_t w, const floating *x,
                                   const floating *gamma, const floating *beta, double eps,
                                   floating *x_hat, floating *inv_std,
                                   floating *y) noexcept nogil:
    """y := LayerNorm(w)(x) per row. IN x (n, w), gamma, beta (w,). OUT x_hat (n, w),
    inv_std (n,), y (n, w)."""
    if floating is float:
        fp_layernorm_forward_f(n, w, x, gamma, beta, eps, x_hat, inv_std, y)
    else:
        fp_layernorm_forward_d(n, w, x, gamma, beta, eps, x_hat, inv_std, y)


cdef inline void ln_backward(Py_ssize_t n, Py_ssize_t w, const floating *dy,
                                    const floating *x_hat, const floating *gamma,
                                    const floating *inv_std, floating *dx, floating *dgamma,
                                    floating *dbeta, double *work) noexcept nogil:
    """dx := d loss / dx; dgamma, dbeta +=. IN dy, x_hat (n, w), gamma (w,), inv_std (n,).
    OUT dx (n, w). IN/OUT dgamma, dbeta (w,)."""
    if floating is float:
        fp_layernorm_backward_f(n, w, dy, x_hat, gamma, inv_std, dx, dgamma, dbeta, work)
    else:
        fp_layernorm_backward_d(n, w, dy, x_hat, gamma, inv_std, dx, dgamma, dbeta, work)
