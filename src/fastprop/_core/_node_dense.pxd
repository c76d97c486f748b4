# Dense node: forward z := x @ W + b (bias seeded, GEMM beta = 1), a := g(z); backward
# dz := da * g'(z), dW := x.T @ dz, db := dz.sum(0), da_prev := dz @ W.T (skipped when no node
# before has parameters). The fused plain-SGD variant is split in the two phases the engine's
# refusal rule needs (deltas first, then the updates). The model's tape and the standalone
# fastprop.Dense (through _kernels) both run these functions. A weight penalty (nd.l1, nd.l2:
# Keras' kernel_regularizer on W, b spared) adds l1 * sum|W| + l2 * sum W^2 to the loss
# (dense_node_penalty, summed in double) and l1 * sign(W) + 2 * l2 * W to dW
# (dense_node_penalty_add); the model's tape runs them only for nodes with a penalty.

from libc.stddef cimport ptrdiff_t
from libc.string cimport memset
from libc.math cimport fabs
from cython cimport floating
from fastprop._core._node cimport Node
from fastprop._core._blas cimport gemm, axpy
from fastprop._core._dense cimport (dense_forward, dense_backward, act_backward, colsum_add,
                                    FP_IDENTITY)


cdef inline void dense_node_forward(Node *nd, const floating *W, const floating *b,
                                    int n) noexcept nogil:
    """nd.z := nd.x @ W + b, nd.a := g(nd.z) (nd.a may be nd.z for identity)."""
    dense_forward(<const floating *> nd.x, W, b, nd.act, n, nd.n_in, nd.n_out,
                  <floating *> nd.z, <floating *> nd.a)


cdef inline void dense_node_backward(Node *nd, const floating *W, floating *dW, floating *db,
                                     floating *da_prev, int n, bint last,
                                     bint accumulate) noexcept nogil:
    """nd.g := nd.g * g'(z) in place (skipped when last: the loss gave dz), then dW, db
    (overwritten, or accumulated with accumulate) and da_prev (when not NULL)."""
    dense_backward(<const floating *> nd.x, W, <floating *> nd.z, <floating *> nd.a,
                   <floating *> nd.g, FP_IDENTITY if last else nd.act, n, nd.n_in, nd.n_out,
                   <floating *> nd.g, dW, db, da_prev, accumulate)


cdef inline void dense_node_delta(Node *nd, const floating *W, floating *da_prev, int n,
                                  bint last) noexcept nogil:
    """Fused SGD, phase 1: dz := da * g'(z) in place, da_prev := dz @ W.T (old weights)."""
    if not last:
        act_backward(nd.act, <floating *> nd.z, <floating *> nd.a, <floating *> nd.g,
                     <floating *> nd.g, n, nd.n_out)
    if da_prev != NULL:
        gemm(False, True, n, nd.n_in, nd.n_out, <floating> 1, <floating *> nd.g, nd.n_out,
             W, nd.n_out, <floating> 0, da_prev, nd.n_in)


cdef inline void dense_node_sgd(Node *nd, floating *W, floating *b, floating *db, int n,
                                double lr) noexcept nogil:
    """Fused SGD, phase 2: W += -lr * x.T @ dz (one GEMM, beta = 1), b -= lr * dz.sum(0)
    (db kept; dW is never materialized)."""
    gemm(True, False, nd.n_in, nd.n_out, n, <floating> -lr, <const floating *> nd.x, nd.n_in,
         <floating *> nd.g, nd.n_out, <floating> 1, W, nd.n_out)
    memset(db, 0, nd.n_out * sizeof(floating))
    colsum_add(<floating *> nd.g, db, n, nd.n_out)
    axpy(nd.n_out, <floating> -lr, db, b)


cdef inline void dense_node_gemms(Node *nd, const floating *W, floating *dW,
                                  floating *da_prev, int n, bint backward) noexcept nogil:
    """Only the node's GEMMs (the benchmark's floor)."""
    if not backward:
        gemm(False, False, n, nd.n_out, nd.n_in, <floating> 1, <const floating *> nd.x,
             nd.n_in, W, nd.n_out, <floating> 1, <floating *> nd.z, nd.n_out)
        return
    gemm(True, False, nd.n_in, nd.n_out, n, <floating> 1, <const floating *> nd.x, nd.n_in,
         <floating *> nd.g, nd.n_out, <floating> 1, dW, nd.n_out)
    if da_prev != NULL:
        gemm(False, True, n, nd.n_in, nd.n_out, <floating> 1, <floating *> nd.g, nd.n_out,
             W, nd.n_out, <floating> 0, da_prev, nd.n_in)


cdef inline double dense_node_penalty(Node *nd, const floating *W) noexcept nogil:
    """l1 * sum|W| + l2 * sum W^2 (sums in double)."""
    cdef Py_ssize_t j, m = <Py_ssize_t> nd.n_in * nd.n_out
    cdef double s1 = 0, s2 = 0, v
    for j in range(m):
        v = W[j]
        s1 += fabs(v)
        s2 += v * v
    return nd.l1 * s1 + nd.l2 * s2


cdef inline void dense_node_penalty_add(Node *nd, const floating *W, floating *out,
                                        double alpha) noexcept nogil:
    """out += alpha * (l1 * sign(W) + 2 * l2 * W) (sign(0) = 0); out may be W itself (each
    element is read before it is written): alpha = 1 adds the gradient to dW, alpha = -lr
    is the fused SGD update of the penalty."""
    cdef Py_ssize_t j, m = <Py_ssize_t> nd.n_in * nd.n_out
    cdef double v, l1 = nd.l1, l2x2 = 2.0 * nd.l2
    for j in range(m):
        v = W[j]
        out[j] = <floating> (out[j] + alpha * (l1 * ((v > 0) - (v < 0)) + l2x2 * v))
