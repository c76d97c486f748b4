"""Compiled kernels against fastprop.reference, both dtypes, including extreme inputs."""
import math
import warnings
import zlib

import numpy as np
import pytest

from fastprop import reference as R
from fastprop._core import _kernels as K
from fastprop.activations import ACTIVATIONS

from conftest import assert_close

NAMES = list(ACTIVATIONS)


def _z(rng, shape, dtype, scale=3.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 3), (37, 129), (3, 1100)])
def test_activation_matches_reference(name, shape, dtype):
    # the reference runs in float64 on the same inputs: float32 kernels are held to 1e-5 of
    # the exact result, not to a float32 reference's own rounding (softmax's and SiLU's
    # derivatives cancel, and the kernels accumulate that in double)
    rng = np.random.default_rng(zlib.crc32(f"{name}{shape}".encode()))
    z = _z(rng, shape, dtype)
    da = _z(rng, shape, dtype, 1.0)
    z64, da64 = z.astype(np.float64), da.astype(np.float64)
    a = np.empty_like(z)
    K.activation_forward(ACTIVATIONS[name], z, a)
    a64 = R.activation_forward(name, z64)
    assert_close(a, a64, dtype)
    dz = np.empty_like(z)
    K.activation_backward(ACTIVATIONS[name], z, a, da, dz)
    want = R.activation_backward(name, z64, a64, da64)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    # absolute part on the scale of the terms (da * g'), not of their possibly tiny sum
    np.testing.assert_allclose(dz, want, rtol=rtol, atol=rtol * 2 * np.abs(da64).max())


EXTREMES = [-3e38, -1e30, -1e4, -750.0, -100.0, -88.8, -20.5, -1e-30, 0.0, 1e-30, 19.99, 20.0,
            20.01, 88.8, 100.0, 750.0, 1e4, 1e30, 3e38]


@pytest.mark.parametrize("name", NAMES)
def test_activation_extreme_inputs_are_finite(name, dtype):
    z = np.array([EXTREMES], dtype=dtype)
    if name == "softmax":
        z = np.array(EXTREMES, dtype=dtype).reshape(-1, 1) * np.array([[1, -1, 0.5]], dtype)
    a = np.empty_like(z)
    dz = np.empty_like(z)
    da = np.ones_like(z)
    with np.errstate(all="raise"):
        K.activation_forward(ACTIVATIONS[name], z, a)
        K.activation_backward(ACTIVATIONS[name], z, a, da, dz)
    assert np.isfinite(a).all()
    assert np.isfinite(dz).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_close(a, R.activation_forward(name, z), dtype)
        assert_close(dz, R.activation_backward(name, z, a, da), dtype)


def test_activation_values_by_hand():
    z = np.array([[-2.0, 0.0, 3.0]])
    out = np.empty_like(z)
    expect = {
        "identity": [-2, 0, 3],
        "relu": [0, 0, 3],
        "leaky_relu": [-0.02, 0, 3],
        "elu": [np.exp(-2) - 1, 0, 3],
        "sigmoid": [1 / (1 + np.exp(2)), 0.5, 1 / (1 + np.exp(-3))],
        "tanh": np.tanh([-2, 0, 3]),
        "softplus": np.log1p(np.exp([-2, 0, 3])),
        "silu": [-2 / (1 + np.exp(2)), 0, 3 / (1 + np.exp(-3))],
        "gelu": [-2 * 0.5 * (1 + math.erf(-2 / math.sqrt(2))), 0.0,
                 3 * 0.5 * (1 + math.erf(3 / math.sqrt(2)))],
        "softmax": np.exp([-2, 0, 3]) / np.exp([-2, 0, 3]).sum(),
    }
    for name, want in expect.items():
        K.activation_forward(ACTIVATIONS[name], z, out)
        np.testing.assert_allclose(out[0], want, rtol=1e-14, atol=1e-15, err_msg=name)
    # derivatives at 0 follow PyTorch: relu'(0) = 0, leaky_relu'(0) = 0.01, elu'(0) = 1
    z0 = np.zeros((1, 1))
    for name, want in [("relu", 0.0), ("leaky_relu", 0.01), ("elu", 1.0), ("gelu", 0.5),
                       ("sigmoid", 0.25), ("tanh", 1.0), ("softplus", 0.5), ("silu", 0.5)]:
        a = np.empty_like(z0)
        K.activation_forward(ACTIVATIONS[name], z0, a)
        dz = np.empty_like(z0)
        K.activation_backward(ACTIVATIONS[name], z0, a, np.ones_like(z0), dz)
        assert dz[0, 0] == pytest.approx(want, abs=1e-15), name


SHAPES = [(1, 64, 32), (1, 1, 1), (7, 13, 5), (32, 784, 128), (3, 1031, 17), (129, 65, 1003)]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n,n_in,n_out", SHAPES)
def test_dense_forward_backward_match_reference(name, n, n_in, n_out, dtype):
    rng = np.random.default_rng(n * 1000 + n_in + n_out)
    a_prev = rng.standard_normal((n, n_in)).astype(dtype)
    W = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    da = rng.standard_normal((n, n_out)).astype(dtype)
    z = np.empty((n, n_out), dtype)
    a = np.empty_like(z)
    K.dense_forward(a_prev, W, b, ACTIVATIONS[name], z, a)
    a_ref, cache = R.dense_forward(a_prev, W, b, name)
    z_ref = cache.z
    assert_close(z, z_ref, dtype)
    assert_close(a, a_ref, dtype)

    dz = np.empty_like(z)
    dW = np.zeros_like(W)
    db = np.zeros_like(b)
    da_prev = np.empty_like(a_prev)
    K.dense_backward(a_prev, W, z_ref, a_ref, da, ACTIVATIONS[name], dz, dW, db, da_prev)
    da_prev_ref, dW_ref, db_ref = R.dense_backward(da, cache)
    dz_ref = R.activation_backward(name, z_ref, a_ref, da)
    assert_close(dz, dz_ref, dtype)
    assert_close(dW, dW_ref, dtype)
    assert_close(db, db_ref, dtype)
    assert_close(da_prev, da_prev_ref, dtype)


def test_dense_backward_accumulates_and_skips_da_prev(dtype):
    rng = np.random.default_rng(3)
    a_prev = rng.standard_normal((6, 4)).astype(dtype)
    W = rng.standard_normal((4, 3)).astype(dtype)
    z = rng.standard_normal((6, 3)).astype(dtype)
    a = np.maximum(z, 0)
    da = rng.standard_normal((6, 3)).astype(dtype)
    dW = np.ones_like(W)
    db = np.ones(3, dtype)
    dz = np.empty_like(z)
    K.dense_backward(a_prev, W, z, a, da, ACTIVATIONS["relu"], dz, dW, db, None)
    da_prev_ref, dW_ref, db_ref = R.dense_backward(
        da, R.DenseCache(a_prev, W, z, a, "relu"), need_da_prev=False)
    assert da_prev_ref is None
    assert_close(dW, dW_ref + 1, dtype)
    assert_close(db, db_ref + 1, dtype)


def test_large_layer(dtype):
    rng = np.random.default_rng(9)
    n, n_in, n_out = 256, 1024, 1024
    a_prev = rng.standard_normal((n, n_in)).astype(dtype)
    W = (rng.standard_normal((n_in, n_out)) / 32).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    z = np.empty((n, n_out), dtype)
    a = np.empty_like(z)
    K.dense_forward(a_prev, W, b, ACTIVATIONS["tanh"], z, a)
    a_ref, _ = R.dense_forward(a_prev, W, b, "tanh")
    assert_close(a, a_ref, dtype)
    dz, dW, db, da_prev = (np.empty_like(z), np.zeros_like(W), np.zeros_like(b),
                           np.empty_like(a_prev))
    K.dense_backward(a_prev, W, z, a, a, ACTIVATIONS["tanh"], dz, dW, db, da_prev)
    da_prev_ref, dW_ref, db_ref = R.dense_backward(a, R.DenseCache(a_prev, W, z, a, "tanh"))
    assert_close(dW, dW_ref, dtype)
    assert_close(db, db_ref, dtype)
    assert_close(da_prev, da_prev_ref, dtype)


def test_kernel_shape_checks():
    z = np.zeros((2, 3))
    with pytest.raises(ValueError, match="a_out"):
        K.activation_forward(1, z, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="W"):
        K.dense_forward(z, np.zeros((4, 2)), np.zeros(2), 1, np.zeros((2, 2)), np.zeros((2, 2)))


def _ulps(got, want):
    """|got - want| in units of the last place of float32 at want (want in float64)."""
    w32 = want.astype(np.float32)
    spacing = np.spacing(np.abs(w32)).astype(np.float64)
    spacing = np.where(w32 == 0, np.float64(np.finfo(np.float32).smallest_subnormal), spacing)
    return np.abs(got.astype(np.float64) - want) / spacing


def test_softmax_float32_exp_is_within_1_25_ulp():
    # the vectorizable float32 exp of softmax and softmax cross-entropy (csrc/fp_exp.h), on
    # random points of its whole range, the denormal range included, and on every float
    # between -1 and 1 at a stride
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.uniform(-104, 89, 2_000_000), rng.uniform(-1, 1, 500_000),
                        rng.uniform(-104, -87, 200_000)]).astype(np.float32)
    x = np.concatenate([x, np.arange(-2**20, 2**20, 7, dtype=np.float32) / np.float32(2**20)])
    out = np.empty_like(x)
    K._expf(x, out)
    want = np.exp(x.astype(np.float64))
    finite = want < np.finfo(np.float32).max
    assert _ulps(out[finite], want[finite]).max() <= 1.25
    assert np.all(np.isinf(out[~finite]))
    edge = np.array([0, -0.0, 1, -np.inf, np.inf, np.nan, -200, 100, 88.72, -103.9],
                    dtype=np.float32)
    got = np.empty_like(edge)
    K._expf(edge, got)
    assert got[0] == 1 and got[1] == 1 and got[3] == 0 and got[6] == 0
    assert np.isinf(got[4]) and np.isinf(got[7]) and np.isnan(got[5])
    assert _ulps(got[[2, 8]], np.exp(edge[[2, 8]].astype(np.float64))).max() <= 1.25
    tiny = np.finfo(np.float32).smallest_subnormal
    assert abs(float(got[9]) - np.exp(np.float64(np.float32(-103.9)))) <= tiny   # denormal


def test_softmax_float32_matches_float64():
    # softmax's float32 path (its own exp) against the float64 one, row sums 1
    rng = np.random.default_rng(3)
    z = (rng.standard_normal((257, 33)) * 4).astype(np.float32)
    a = np.empty_like(z)
    a64 = np.empty(z.shape)
    K.activation_forward(ACTIVATIONS["softmax"], z, a)
    K.activation_forward(ACTIVATIONS["softmax"], z.astype(np.float64), a64)
    np.testing.assert_allclose(a, a64, rtol=2e-6, atol=1e-30)
    np.testing.assert_allclose(a.sum(1, dtype=np.float64), 1, rtol=0, atol=4e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_abs_of_the_refused_step_check(dtype):
    # the engine's magnitude check: max |x|, inf as soon as one value is NaN or inf
    rng = np.random.default_rng(5)
    for n in (0, 1, 7, 16, 1000, 4099):
        x = (rng.standard_normal(n) * 10.0 ** rng.integers(-40, 30, n)).astype(dtype)
        want = float(np.abs(x).max()) if n else 0.0
        assert K._max_abs(x) == want
        if n:
            for bad in (np.nan, np.inf, -np.inf, -np.nan):
                y = x.copy()
                y[rng.integers(n)] = bad
                assert K._max_abs(y) == np.inf
    tiny = np.finfo(dtype).smallest_subnormal
    assert K._max_abs(np.array([0.0, -tiny, tiny / 2], dtype=dtype)) == tiny
    assert K._max_abs(np.array([-np.finfo(dtype).max, 1], dtype=dtype)) == np.finfo(dtype).max
    assert K._max_abs(np.array([-0.0], dtype=dtype)) == 0.0
