# Per-call entry points of the compiled core: one activation, one dense layer forward or
# backward. Typed memoryview signatures are the contract (C-contiguous, one dtype per call);
# only constant-time checks here, then the GIL is released and the C-level block in _dense.pxd
# runs. Argument checking, dtype policy and output allocation live in fastprop.layers and
# fastprop._validation.

from libc.stddef cimport ptrdiff_t
from cython cimport floating
cimport numpy as cnp
from libc.stdint cimport uint64_t
from fastprop._core._dense cimport (act_forward, act_backward, dense_forward as _fwd,
                                    dense_backward as _bwd, FP_IDENTITY, FP_RELU, FP_LEAKY_RELU,
                                    FP_ELU, FP_GELU, FP_SIGMOID, FP_TANH, FP_SOFTPLUS, FP_SILU,
                                    FP_SOFTMAX)


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
    void fp_dropout_forward_f(const float *x, float *out, float *mask, ptrdiff_t n, double rate,
                              uint64_t *state)
    void fp_dropout_forward_d(const double *x, double *out, double *mask, ptrdiff_t n,
                              double rate, uint64_t *state)
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


def activation_forward(int act, const floating[:, ::1] z, floating[:, ::1] a_out):
    """a_out := g(z). IN z (n, m). OUT a_out (n, m); may be z's buffer."""
    _same((a_out.shape[0], a_out.shape[1]), (z.shape[0], z.shape[1]), "a_out")
    if z.shape[0] == 0 or z.shape[1] == 0:
        return
    with nogil:
        act_forward(act, &z[0, 0], &a_out[0, 0], z.shape[0], z.shape[1])


def activation_backward(int act, const floating[:, ::1] z, const floating[:, ::1] a,
                        const floating[:, ::1] da, floating[:, ::1] dz_out):
    """dz_out := da * g'(z) (softmax: the row-wise Jacobian-vector product).
    IN z, a = g(z), da (n, m). OUT dz_out (n, m)."""
    shape = (z.shape[0], z.shape[1])
    _same((a.shape[0], a.shape[1]), shape, "a")
    _same((da.shape[0], da.shape[1]), shape, "da")
    _same((dz_out.shape[0], dz_out.shape[1]), shape, "dz_out")
    if z.shape[0] == 0 or z.shape[1] == 0:
        return
    with nogil:
        act_backward(act, &z[0, 0], &a[0, 0], &da[0, 0], &dz_out[0, 0], z.shape[0], z.shape[1])


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
    if n == 0:
        return
    with nogil:
        _fwd(&a_prev[0, 0], &W[0, 0], &b[0], act, n, n_in, n_out, &z_out[0, 0], &a_out[0, 0])


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
    if n == 0:
        return
    with nogil:
        _bwd(&a_prev[0, 0], &W[0, 0], &z[0, 0], &a[0, 0], &da[0, 0], act, n, n_in, n_out,
             &dz_out[0, 0], &dW_out[0, 0], &db_out[0], dap, accumulate)


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
    if x.shape[0] == 0 or x.shape[1] == 0:
        return
    with nogil:
        if floating is float:
            fp_dropout_forward_f(&x[0, 0], &out[0, 0], &mask[0, 0], x.shape[0] * x.shape[1],
                                 rate, &state[0])
        else:
            fp_dropout_forward_d(&x[0, 0], &out[0, 0], &mask[0, 0], x.shape[0] * x.shape[1],
                                 rate, &state[0])
