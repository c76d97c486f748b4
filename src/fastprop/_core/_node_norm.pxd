# BatchNorm and LayerNorm nodes over the kernels of _norm.pxd (csrc/fp_norm.h). Parameters
# gamma, beta (n_in,) at p_off; BatchNorm's running mean and variance (n_in,) each at s_off in
# the model's state buffer. The node's workspace `w`: x_hat (n, n_in) and inv_std (BatchNorm:
# n_in, LayerNorm: n) of the model's dtype, then doubles: BatchNorm 5 * n_in (the batch mean
# and unbiased variance the forward leaves, its scratch, the backward's scratch), LayerNorm
# 2 * n_in. Backward runs in place on the delta (g is the previous node's; the kernels read
# each delta element before writing it). In training the running statistics are not touched
# by the forward: the engine commits them (norm_node_commit) once the step is accepted, so a
# refused step changes no state either. A frozen BatchNorm (nd.frozen) runs as in inference in
# training too: running statistics, the affine backward, nothing committed (Keras).

from libc.math cimport fabs
from cython cimport floating
from fastprop._core._node cimport Node, NODE_BATCHNORM
from fastprop._core._norm cimport (bn_forward, bn_backward, bn_update_running, ln_forward,
                                   ln_backward)


cdef inline Py_ssize_t norm_node_nbytes(int kind, Py_ssize_t n, Py_ssize_t w,
                                        Py_ssize_t itemsize) noexcept nogil:
    """Bytes of a norm node's workspace for n rows (64-byte aligned parts)."""
    cdef Py_ssize_t inv = w if kind == NODE_BATCHNORM else n
    cdef Py_ssize_t head = ((n * w + inv) * itemsize + 63) // 64 * 64
    return head + (5 if kind == NODE_BATCHNORM else 2) * w * 8


cdef inline double *_dwork(Node *nd, int n, floating *x_hat) noexcept nogil:
    cdef Py_ssize_t w = nd.n_in
    cdef Py_ssize_t inv = w if nd.kind == NODE_BATCHNORM else n
    return <double *> (nd.w + ((<Py_ssize_t> n * w + inv) * sizeof(floating) + 63) // 64 * 64)


cdef inline void norm_node_forward(Node *nd, const floating *params, floating *state, int n,
                                   bint training) noexcept nogil:
    """nd.a := the normalized nd.x (x_hat, inv_std and the batch statistics into nd.w)."""
    cdef Py_ssize_t w = nd.n_in
    cdef const floating *gamma = params + nd.p_off
    cdef floating *x_hat = <floating *> nd.w
    cdef floating *inv_std = x_hat + <Py_ssize_t> n * w
    cdef double *work = _dwork(nd, n, x_hat)
    if nd.kind == NODE_BATCHNORM:
        training = training and not nd.frozen       # frozen: running statistics (Keras)
        bn_forward(n, w, <const floating *> nd.x, gamma, gamma + w,
                   NULL if training else state + nd.s_off,
                   NULL if training else state + nd.s_off + w, nd.rate, nd.eps, training,
                   x_hat, inv_std, <floating *> nd.a, work)
    else:
        ln_forward(n, w, <const floating *> nd.x, gamma, gamma + w, nd.eps, x_hat, inv_std,
                   <floating *> nd.a)


cdef inline void norm_node_backward(Node *nd, const floating *params, floating *grads, int n,
                                    bint training) noexcept nogil:
    """dgamma, dbeta := their gradients (overwritten); nd.g := the input's delta in place."""
    cdef Py_ssize_t w = nd.n_in, j
    cdef floating *dgamma = grads + nd.p_off
    cdef floating *x_hat = <floating *> nd.w
    cdef floating *inv_std = x_hat + <Py_ssize_t> n * w
    cdef double *work = _dwork(nd, n, x_hat)
    for j in range(2 * w):
        dgamma[j] = 0
    if nd.kind == NODE_BATCHNORM:
        bn_backward(n, w, <const floating *> nd.g, x_hat, params + nd.p_off, inv_std,
                    training and not nd.frozen,
                    <floating *> nd.g, dgamma, dgamma + w, work + 3 * w)
    else:
        ln_backward(n, w, <const floating *> nd.g, x_hat, params + nd.p_off, inv_std,
                    <floating *> nd.g, dgamma, dgamma + w, work)


cdef inline void norm_node_commit(Node *nd, floating *state, int n) noexcept nogil:
    """BatchNorm after an accepted training step: the running statistics move towards the
    batch's (left in the workspace by the forward). Nothing for LayerNorm or a frozen
    BatchNorm (its forward used the running statistics)."""
    if nd.kind == NODE_BATCHNORM and not nd.frozen:
        bn_update_running(nd.n_in, _dwork(nd, n, <floating *> nd.w), nd.rate,
                          state + nd.s_off, state + nd.s_off + nd.n_in)


cdef inline bint norm_node_stats_ok(Node *nd, int n, floating *dummy) noexcept nogil:
    """Whether the batch statistics a BatchNorm's training forward left are finite and within
    the dtype's range (else committing them would put inf / NaN in the running statistics:
    the engine refuses such a step). True for LayerNorm and a frozen BatchNorm."""
    cdef Py_ssize_t j
    cdef double limit = 3.4e38 if floating is float else 1.79e308
    cdef double *work
    if nd.kind != NODE_BATCHNORM or nd.frozen:
        return True
    work = _dwork(nd, n, <floating *> nd.w)
    for j in range(2 * nd.n_in):
        if not fabs(work[j]) < limit:        # NaN compares false
            return False
    return True


cdef inline void norm_node_predict(Node *nd, const floating *params, const floating *state,
                                   int n, floating *inv_std, double *work) noexcept nogil:
    """Inference into nd.a, with x_hat written to nd.a first (then overwritten) and caller
    scratch for inv_std (max(n, n_in) values) and work (2 * n_in doubles)."""
    cdef Py_ssize_t w = nd.n_in
    cdef const floating *gamma = params + nd.p_off
    if nd.kind == NODE_BATCHNORM:
        bn_forward(n, w, <const floating *> nd.x, gamma, gamma + w,
                   <floating *> (state + nd.s_off), <floating *> (state + nd.s_off + w),
                   nd.rate, nd.eps, False, <floating *> nd.a, inv_std, <floating *> nd.a, work)
    else:
        ln_forward(n, w, <const floating *> nd.x, gamma, gamma + w, nd.eps, <floating *> nd.a,
                   inv_std, <floating *> nd.a)
