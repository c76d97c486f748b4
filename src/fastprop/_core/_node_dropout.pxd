# Dropout node: training: mask from the model's C generator (splitmix64 stream), a := x * mask
# (mask entries 0 or 1 / (1 - rate)); backward da_prev := da * mask, in place (its g is the
# previous node's). Inference: the node passes x through (the engine binds a to x).

from libc.stdint cimport uint64_t
from libc.stddef cimport ptrdiff_t
from cython cimport floating
from fastprop._core._node cimport Node

cdef extern from "fp_math.h" nogil:
    void fp_dropout_forward_f(const float *x, float *out, float *mask, ptrdiff_t n, double rate,
                              uint64_t *state)
    void fp_dropout_forward_d(const double *x, double *out, double *mask, ptrdiff_t n,
                              double rate, uint64_t *state)
    void fp_mul_inplace_f(float *x, const float *y, ptrdiff_t n)
    void fp_mul_inplace_d(double *x, const double *y, ptrdiff_t n)


cdef inline void dropout_node_forward(Node *nd, floating *dummy, int n,
                                      uint64_t *rng) noexcept nogil:
    """Training only (in inference the engine never calls it). dummy: the dtype tag."""
    if floating is float:
        fp_dropout_forward_f(<const float *> nd.x, <float *> nd.a, <float *> nd.w,
                             <ptrdiff_t> n * nd.n_in, nd.rate, rng)
    else:
        fp_dropout_forward_d(<const double *> nd.x, <double *> nd.a, <double *> nd.w,
                             <ptrdiff_t> n * nd.n_in, nd.rate, rng)


cdef inline void dropout_node_backward(Node *nd, floating *dummy, int n) noexcept nogil:
    """g := g * mask in place (g is the previous node's delta). Training only."""
    if floating is float:
        fp_mul_inplace_f(<float *> nd.g, <const float *> nd.w, <ptrdiff_t> n * nd.n_in)
    else:
        fp_mul_inplace_d(<double *> nd.g, <const double *> nd.w, <ptrdiff_t> n * nd.n_in)
