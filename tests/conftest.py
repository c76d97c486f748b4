import numpy as np
import pytest

import fastprop as fp

# Relative tolerances for compiled-vs-reference comparisons; the absolute part scales with the
# magnitude of the expected array (summation order differs between BLAS calls).
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    return np.dtype(request.param)


def assert_close(actual, expected, dtype=None, rtol=None):
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    if rtol is None:
        rtol = RTOL[np.dtype(dtype if dtype is not None else expected.dtype)]
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * max(scale, 1e-30))


class Scale(fp.Layer):
    """Issue 11's custom-layer example, verbatim: one weight per column (shared by the tests of
    custom layers and of batch-split calls)."""

    def build(self, n_in):
        self.add_param("w", (n_in,), init="ones")
        return n_in

    def forward(self, a_prev, training=False):
        return a_prev * self.w, a_prev

    def backward(self, da, cache):
        return da * self.w, (da * cache).sum(0)
