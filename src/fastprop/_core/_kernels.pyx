# Per-call entry points of the compiled core: one activation, one dense layer forward or
# backward, one dropout. Typed memoryview signatures are the contract (C-contiguous, one dtype
# per call); only constant-time checks here, then the GIL is released and the node code of the
# model's tape runs on a one-node tape (a Node on the stack bound to the caller's arrays:
# _node_dense.pxd, _node_activation.pxd, _node_dropout.pxd), so that fastprop.Dense /
# Activation / Dropout on their own and inside a Sequential are the same compiled code.
# Argument checking, dtype policy and output allocation live in fastprop.layers and
# fastprop._validation.

from libc.stddef cimport ptrdiff_t
from cython cimport floating
cimport numpy as cnp
from libc.stdint cimport uint64_t
from libc.string cimport memset, memcpy
from fastprop._core._dense cimport (FP_IDENTITY, FP_RELU, FP_LEAKY_RELU, FP_ELU, FP_GELU,
                                    FP_SIGMOID, FP_TANH, FP_SOFTPLUS, FP_SILU, FP_SOFTMAX)
from fastprop._core._node cimport Node, NODE_DENSE, NODE_DROPOUT, NODE_ACTIVATION
from fastprop._core._node_dense cimport dense_node_forward, dense_node_backward
from fastprop._core._node_activation cimport activation_node_forward, activation_node_backward
from fastprop._core._node_dropout cimport dropout_node_forward, dropout_node_backward


cnp.import_array()

# The activation table: one row per activation, the one place a name meets its C code
# (csrc/fp_math.h). Columns: name, code, derivative reads a = g(z) (a cache keeps a),
# ReLU-like (He initialization by default). fastprop.activations reads it.
ACTIVATION_TABLE = (
    ("identity", FP_IDENTITY, False, False),
    ("relu", FP_RELU, False, True),
    ("leaky_relu", FP_LEAKY_RELU, False, True),
    ("elu", FP_ELU, False, True),
    ("gelu", FP_GELU, False, True),
    ("sigmoid", FP_SIGMOID, True, False),
    ("tanh", FP_TANH, True, False),
    ("softplus", FP_SOFTPLUS, False, True),
    ("silu", FP_SILU, False, True),
    ("softmax", FP_SOFTMAX, True, False),
)

cdef extern from "fp_math.h" nogil:
    int fp_all_finite_f(const float *x, ptrdiff_t n)
    int fp_all_finite_d(const double *x, ptrdiff_t n)
    float fp_expf(float x)
    double fp_max_abs_f(const float *x, ptrdiff_t n)
    double fp_max_abs_d(const double *x, ptrdiff_t n)


def _max_abs(const floating[::1] x):
    """max |x| (inf if any value is NaN or inf) by the engine's check (fp_max_abs); for tests."""
    cdef double out
    cdef Py_ssize_t n = x.shape[0]
    with nogil:
        if floating is float:
            out = fp_max_abs_f(&x[0] if n else NULL, n)
        else:
            out = fp_max_abs_d(&x[0] if n else NULL, n)
    return out


def _expf(const float[::1] x, float[::1] out):
    """out := exp(x) by the float32 exp of the softmax kernels (csrc/fp_exp.h); for tests."""
    cdef Py_ssize_t i, n = x.shape[0]
    if out.shape[0] != n:
        raise ValueError("x and out differ in length")
    with nogil:
        for i in range(n):
            out[i] = fp_expf(x[i])


def all_finite(cnp.ndarray arr not None):
    """True if every value of a C-contiguous float32 / float64 array is finite (no NaN, no
    inf): one vectorized pass over the exponent bits, no temporary array (np.isfinite(x).all()
    allocates a boolean array as large as x)."""
    cdef int t = cnp.PyArray_TYPE(arr)
    cdef ptrdiff_t n = cnp.PyArray_SIZE(arr)
    cdef void *p = cnp.PyArray_DATA(arr)
    cdef int ok
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr) or not cnp.PyArray_ISALIGNED(arr) or \
            not cnp.PyArray_ISNOTSWAPPED(arr) or t not in (cnp.NPY_FLOAT, cnp.NPY_DOUBLE):
        raise TypeError("all_finite needs a C-contiguous, aligned, native float32 / float64 "
                        "array")
    with nogil:
        ok = fp_all_finite_f(<float *> p, n) if t == cnp.NPY_FLOAT else \
            fp_all_finite_d(<double *> p, n)
    return ok != 0


def _same(tuple got, tuple want, str name):
    if got != want:
        raise ValueError(f"{name} has shape {got}, expected {want}")


cdef inline void _one_node(Node *nd, int kind, int n_in, int n_out, int act, double rate,
                           const void *x, void *z, void *a, void *g, void *w) noexcept nogil:
    """A one-node tape: nd bound to the caller's arrays."""
    memset(nd, 0, sizeof(Node))
    nd.kind, nd.n_in, nd.n_out, nd.act, nd.rate = kind, n_in, n_out, act, rate
    nd.p_off = nd.s_off = -1
    nd.x, nd.z, nd.a, nd.g, nd.w = <char *> x, <char *> z, <char *> a, <char *> g, <char *> w


cdef inline void _copy(void *dst, const void *src, size_t nbytes) noexcept nogil:
    if dst != src:
        memcpy(dst, src, nbytes)


def activation_forward(int act, const floating[:, ::1] z, floating[:, ::1] a_out):
    """a_out := g(z). IN z (n, m). OUT a_out (n, m); may be z's buffer."""
    _same((a_out.shape[0], a_out.shape[1]), (z.shape[0], z.shape[1]), "a_out")
    cdef Node nd
    if z.shape[0] == 0 or z.shape[1] == 0:
        return
    with nogil:
        _one_node(&nd, NODE_ACTIVATION, z.shape[1], z.shape[1], act, 0, &z[0, 0], NULL,
                  &a_out[0, 0], NULL, NULL)
        activation_node_forward(&nd, &a_out[0, 0], z.shape[0])


def activation_backward(int act, const floating[:, ::1] z, const floating[:, ::1] a,
                        const floating[:, ::1] da, floating[:, ::1] dz_out):
    """dz_out := da * g'(z) (softmax: the row-wise Jacobian-vector product).
    IN z, a = g(z), da (n, m). OUT dz_out (n, m)."""
    shape = (z.shape[0], z.shape[1])
    _same((a.shape[0], a.shape[1]), shape, "a")
    _same((da.shape[0], da.shape[1]), shape, "da")
    _same((dz_out.shape[0], dz_out.shape[1]), shape, "dz_out")
    cdef Node nd
    if z.shape[0] == 0 or z.shape[1] == 0:
        return
    with nogil:     # the node runs in place on its delta: dz_out := da first
        _copy(&dz_out[0, 0], &da[0, 0], z.shape[0] * z.shape[1] * sizeof(floating))
        _one_node(&nd, NODE_ACTIVATION, z.shape[1], z.shape[1], act, 0, &z[0, 0], NULL,
                  <void *> &a[0, 0], &dz_out[0, 0], NULL)
        activation_node_backward(&nd, &dz_out[0, 0], z.shape[0])


def dense_forward(const floating[:, ::1] a_prev, const floating[:, ::1] W,
                  const floating[::1] b, int act, floating[:, ::1] z_out,
                  floating[:, ::1] a_out):
    """z_out := a_prev @ W + b ; a_out := g(z_out).
    IN a_prev (n, n_in), W (n_in, n_out), b (n_out,). OUT z_out, a_out (n, n_out)."""
    cdef int n = a_prev.shape[0], n_in = a_prev.shape[1], n_out = W.shape[1]
    _same((W.shape[0], W.shape[1]), (n_in, n_out), "W")
    _same((b.shape[0],), (n_out,), "b")
    _same((z_out.shape[0], z_out.shape[1]), (n, n_out), "z_out")
    _same((a_out.shape[0], a_out.shape[1]), (n, n_out), "a_out")
    cdef Node nd
    if n == 0:
        return
    with nogil:
        _one_node(&nd, NODE_DENSE, n_in, n_out, act, 0, &a_prev[0, 0], &z_out[0, 0],
                  &a_out[0, 0], NULL, NULL)
        dense_node_forward(&nd, &W[0, 0], &b[0], n)


def dense_backward(const floating[:, ::1] a_prev, const floating[:, ::1] W,
                   const floating[:, ::1] z, const floating[:, ::1] a,
                   const floating[:, ::1] da, int act, floating[:, ::1] dz_out,
                   floating[:, ::1] dW_out, floating[::1] db_out,
                   floating[:, ::1] da_prev_out=None, bint accumulate=True):
    """dz_out := da * g'(z); dW_out += a_prev.T @ dz; db_out += dz.sum(0);
    da_prev_out := dz @ W.T (skipped when None). With accumulate=False, dW_out and db_out are
    overwritten instead (they may then be uninitialized).
    IN a_prev (n, n_in), W (n_in, n_out), z, a, da (n, n_out).
    OUT dz_out (n, n_out), dW_out (n_in, n_out), db_out (n_out,), da_prev_out (n, n_in)."""
    cdef int n = a_prev.shape[0], n_in = a_prev.shape[1], n_out = W.shape[1]
    cdef floating *dap = NULL
    _same((W.shape[0], W.shape[1]), (n_in, n_out), "W")
    _same((z.shape[0], z.shape[1]), (n, n_out), "z")
    _same((a.shape[0], a.shape[1]), (n, n_out), "a")
    _same((da.shape[0], da.shape[1]), (n, n_out), "da")
    _same((dz_out.shape[0], dz_out.shape[1]), (n, n_out), "dz_out")
    _same((dW_out.shape[0], dW_out.shape[1]), (n_in, n_out), "dW_out")
    _same((db_out.shape[0],), (n_out,), "db_out")
    if da_prev_out is not None:
        _same((da_prev_out.shape[0], da_prev_out.shape[1]), (n, n_in), "da_prev_out")
        if n > 0:
            dap = &da_prev_out[0, 0]
    cdef Node nd
    if n == 0:
        return
    with nogil:     # the node runs in place on its delta: dz_out := da first
        _copy(&dz_out[0, 0], &da[0, 0], <size_t> n * n_out * sizeof(floating))
        _one_node(&nd, NODE_DENSE, n_in, n_out, act, 0, &a_prev[0, 0], <void *> &z[0, 0],
                  <void *> &a[0, 0], &dz_out[0, 0], NULL)
        dense_node_backward(&nd, &W[0, 0], &dW_out[0, 0], &db_out[0], dap, n, False,
                            accumulate)


def dropout_forward(const floating[:, ::1] x, floating[:, ::1] out, floating[:, ::1] mask,
                    double rate, uint64_t[::1] state):
    """mask := 0 or 1 / (1 - rate) per value (drop probability rate), out := x * mask, from the
    splitmix64 stream state[0] (advanced): the generator the model's dropout nodes use.
    IN x (n, m), 0 <= rate < 1. OUT out, mask (n, m)."""
    shape = (x.shape[0], x.shape[1])
    _same((out.shape[0], out.shape[1]), shape, "out")
    _same((mask.shape[0], mask.shape[1]), shape, "mask")
    _same((state.shape[0],), (1,), "state")
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"rate must be in [0, 1), got {rate}")
    cdef Node nd
    if x.shape[0] == 0 or x.shape[1] == 0:
        return
    with nogil:
        _one_node(&nd, NODE_DROPOUT, x.shape[1], x.shape[1], 0, rate, &x[0, 0], NULL,
                  &out[0, 0], NULL, &mask[0, 0])
        dropout_node_forward(&nd, &out[0, 0], x.shape[0], &state[0])


def dropout_backward(const floating[:, ::1] mask, floating[:, ::1] da):
    """da := da * mask in place (the Dropout node's backward).
    IN mask (n, m) from dropout_forward. IN / OUT da (n, m)."""
    cdef Node nd
    _same((da.shape[0], da.shape[1]), (mask.shape[0], mask.shape[1]), "da")
    if da.shape[0] == 0 or da.shape[1] == 0:
        return
    with nogil:
        _one_node(&nd, NODE_DROPOUT, da.shape[1], da.shape[1], 0, 0, NULL, NULL, NULL,
                  &da[0, 0], <void *> &mask[0, 0])
        dropout_node_backward(&nd, &da[0, 0], da.shape[0])
