import numpy as np
import pytest

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
