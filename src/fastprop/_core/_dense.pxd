# C-level API of the textbook block, on raw pointers, `nogil`: shared by the per-layer entry
# points (_kernels.pyx) and the whole-model engine. Callers guarantee contiguous buffers of the
# stated shapes; nothing is checked here.

from libc.stddef cimport ptrdiff_t
from libc.string cimport memset
from cython cimport floating
from fastprop._core._blas cimport gemm

cdef extern from "fp_math.h" nogil:
    enum:
        FP_IDENTITY
        FP_RELU
        FP_LEAKY_RELU
        FP_ELU
        FP_GELU
        FP_SIGMOID
        FP_TANH
        FP_SOFTPLUS
        FP_SILU
        FP_SOFTMAX
    void fp_act_forward_f(int code, const float *z, float *a, ptrdiff_t n)
    void fp_act_forward_d(int code, const double *z, double *a, ptrdiff_t n)
    void fp_act_backward_f(int code, const float *z, const float *a, const float *da, float *dz,
                           ptrdiff_t n)
    void fp_act_backward_d(int code, const double *z, const double *a, const double *da,
                           double *dz, ptrdiff_t n)
    void fp_softmax_forward_f(const float *z, float *a, ptrdiff_t rows, ptrdiff_t cols)
    void fp_softmax_forward_d(const double *z, double *a, ptrdiff_t rows, ptrdiff_t cols)
    void fp_softmax_backward_f(const float *a, const float *da, float *dz, ptrdiff_t rows,
                               ptrdiff_t cols)
    void fp_softmax_backward_d(const double *a, const double *da, double *dz, ptrdiff_t rows,
                               ptrdiff_t cols)
    void fp_colsum_add_f(const float *dz, float *db, ptrdiff_t rows, ptrdiff_t cols)
    void fp_colsum_add_d(const double *dz, double *db, ptrdiff_t rows, ptrdiff_t cols)
    void fp_fill_rows_f(float *out, const float *b, ptrdiff_t rows, ptrdiff_t cols)
    void fp_fill_rows_d(double *out, const double *b, ptrdiff_t rows, ptrdiff_t cols)


cdef inline void act_forward(int code, const floating *z, floating *a, ptrdiff_t rows,
                             ptrdiff_t cols) noexcept nogil:
    """a := g(z) over a rows x cols block (softmax row-wise)."""
    if floating is float:
        if code == FP_SOFTMAX:
            fp_softmax_forward_f(z, a, rows, cols)
        else:
            fp_act_forward_f(code, z, a, rows * cols)
    else:
        if code == FP_SOFTMAX:
            fp_softmax_forward_d(z, a, rows, cols)
        else:
            fp_act_forward_d(code, z, a, rows * cols)


cdef inline void act_backward(int code, const floating *z, const floating *a, const floating *da,
                              floating *dz, ptrdiff_t rows, ptrdiff_t cols) noexcept nogil:
    """dz := da * g'(z) (for softmax the row-wise Jacobian-vector product)."""
    if floating is float:
        if code == FP_SOFTMAX:
            fp_softmax_backward_f(a, da, dz, rows, cols)
        else:
            fp_act_backward_f(code, z, a, da, dz, rows * cols)
    else:
        if code == FP_SOFTMAX:
            fp_softmax_backward_d(a, da, dz, rows, cols)
        else:
            fp_act_backward_d(code, z, a, da, dz, rows * cols)


cdef inline void colsum_add(const floating *dz, floating *db, ptrdiff_t rows,
                            ptrdiff_t cols) noexcept nogil:
    """db += dz.sum(0), accumulated in double."""
    if floating is float:
        fp_colsum_add_f(dz, db, rows, cols)
    else:
        fp_colsum_add_d(dz, db, rows, cols)


cdef inline void dense_forward(const floating *a_prev, const floating *W, const floating *b,
                               int act, int n, int n_in, int n_out,
                               floating *z_out, floating *a_out) noexcept nogil:
    """z_out := a_prev @ W + b ; a_out := g(z_out).

    The bias seeds z_out and GEMM runs with beta = 1: measured nearly free, where a separate
    bias pass after a beta = 0 GEMM cost ~195 us on 256 x 128 (shared/benchmarking.md).
    For identity a_out may be z_out."""
    if floating is float:
        fp_fill_rows_f(z_out, b, n, n_out)
    else:
        fp_fill_rows_d(z_out, b, n, n_out)
    gemm(False, False, n, n_out, n_in, <floating> 1, a_prev, n_in, W, n_out,
         <floating> 1, z_out, n_out)
    act_forward(act, z_out, a_out, n, n_out)


cdef inline void dense_backward(const floating *a_prev, const floating *W, const floating *z,
                                const floating *a, const floating *da, int act,
                                int n, int n_in, int n_out, floating *dz_out,
                                floating *dW_out, floating *db_out,
                                floating *da_prev_out, bint accumulate=True) noexcept nogil:
    """dz := da * g'(z); dW += a_prev.T @ dz; db += dz.sum(0); da_prev := dz @ W.T.

    dW and db accumulate (GEMM with beta = 1): the caller zeroes them; with accumulate=False
    they are overwritten instead (beta = 0), which spares a model the pass that zeroes its
    whole gradient buffer before every backward. da_prev_out may be NULL (the first layer of a
    model needs none). dz_out may be da for identity."""
    act_backward(act, z, a, da, dz_out, n, n_out)
    gemm(True, False, n_in, n_out, n, <floating> 1, a_prev, n_in, dz_out, n_out,
         <floating> (1 if accumulate else 0), dW_out, n_out)
    if not accumulate:
        memset(db_out, 0, n_out * sizeof(floating))
    colsum_add(dz_out, db_out, n, n_out)
    if da_prev_out != NULL:
        gemm(False, True, n, n_in, n_out, <floating> 1, dz_out, n_out, W, n_out,
             <floating> 0, da_prev_out, n_in)
