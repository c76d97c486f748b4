# BLAS for the compiled core, called from C with no Python in between.
#
# scipy.linalg.cython_blas exports the BLAS that SciPy links (OpenBLAS in its wheels) as C
# function pointers: nothing to link at build time, the same approach as scikit-learn's
# sklearn/utils/_cython_blas. Generic over `floating`; the only branch on type is here.
# Row-major is handled once: row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T,
# so A and B swap places and the transpose flags stay as they are.

from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm, saxpy, daxpy


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k, floating alpha,
                      const floating *A, int lda, const floating *B, int ldb,
                      floating beta, floating *C, int ldc) noexcept nogil:
    """C := alpha * op(A) @ op(B) + beta * C, row-major; C is m x n, op(A) m x k, op(B) k x n."""
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if m <= 0 or n <= 0:
        return
    if lda < 1:
        lda = 1
    if ldb < 1:
        ldb = 1
    if ldc < 1:
        ldc = 1
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float *> B, &ldb, <float *> A, &lda,
              &beta, C, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double *> B, &ldb, <double *> A, &lda,
              &beta, C, &ldc)


cdef inline void axpy(int n, floating alpha, const floating *x, floating *y) noexcept nogil:
    """y := alpha * x + y over n contiguous values."""
    cdef int one = 1
    if floating is float:
        saxpy(&n, &alpha, <float *> x, &one, y, &one)
    else:
        daxpy(&n, &alpha, <double *> x, &one, y, &one)
