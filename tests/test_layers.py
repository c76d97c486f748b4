"""The public Dense block: API, dtype policy, ownership of arrays, errors, threads."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastprop as fp
from fastprop import reference as R

from conftest import assert_close


def test_block_by_hand():
    layer = fp.Dense(2, 2, activation="relu", dtype="float64")
    layer.W = [[1.0, -1.0], [2.0, 0.5]]
    layer.b = [0.5, -3.0]
    a, cache = layer.forward([[1.0, 1.0]])
    # z = [1 + 2 + 0.5, -1 + 0.5 - 3] = [3.5, -3.5]; relu -> [3.5, 0]
    np.testing.assert_array_equal(cache.z, [[3.5, -3.5]])
    np.testing.assert_array_equal(a, [[3.5, 0.0]])
    da_prev, dW, db = layer.backward([[1.0, 1.0]], cache)
    np.testing.assert_array_equal(db, [1.0, 0.0])
    np.testing.assert_array_equal(dW, [[1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_array_equal(da_prev, [[1.0, 2.0]])
    assert layer.dW is dW and layer.db is db


@pytest.mark.parametrize("act", ["relu", "sigmoid", "softmax", "identity"])
def test_layer_matches_reference(act, dtype):
    rng = np.random.default_rng(0)
    layer = fp.Dense(33, 17, activation=act, dtype=dtype, seed=3)
    X = rng.standard_normal((9, 33))
    a, cache = layer.forward(X)
    assert a.dtype == dtype and cache.z.dtype == dtype
    a_ref, ref_cache = R.dense_forward(X.astype(dtype), layer.W, layer.b, act)
    assert_close(cache.z, ref_cache.z, dtype)
    assert_close(a, a_ref, dtype)
    da = rng.standard_normal((9, 17))
    da_prev, dW, db = layer.backward(da, cache)
    da_prev_ref, dW_ref, db_ref = R.dense_backward(da.astype(dtype), ref_cache)
    for got, want in ((da_prev, da_prev_ref), (dW, dW_ref), (db, db_ref)):
        assert got.dtype == dtype
        assert_close(got, want, dtype)
    assert layer.backward(da, cache, need_da_prev=False)[0] is None


def test_defaults_and_repr():
    layer = fp.Dense(4, 3)
    assert layer.dtype == np.float32 and layer.activation == "identity"
    assert layer.init == "glorot_uniform"
    assert fp.Dense(4, 3, activation="relu").init == "he_uniform"
    assert fp.Dense(4, 3, activation="swish").activation == "silu"
    assert fp.Dense(4, 3, activation="linear").activation == "identity"
    assert "Dense(4, 3" in repr(layer)
    assert layer.n_params == 15 and len(layer.parameters()) == 2
    np.testing.assert_array_equal(layer.b, 0)


@pytest.mark.parametrize("init", ["glorot_uniform", "glorot_normal", "he_uniform", "he_normal",
                                  "lecun_normal", "zeros"])
def test_initializers_are_seeded_and_scaled(init):
    a = fp.Dense(400, 300, init=init, seed=5, dtype="float64")
    b = fp.Dense(400, 300, init=init, seed=5, dtype="float64")
    c = fp.Dense(400, 300, init=init, seed=6, dtype="float32")
    np.testing.assert_array_equal(a.W, b.W)
    std = {"glorot_uniform": np.sqrt(2 / 700), "glorot_normal": np.sqrt(2 / 700),
           "he_uniform": np.sqrt(2 / 400), "he_normal": np.sqrt(2 / 400),
           "lecun_normal": np.sqrt(1 / 400), "zeros": 0.0}[init]
    assert a.W.std() == pytest.approx(std, rel=0.02, abs=1e-12)
    if init != "zeros":
        assert not np.array_equal(a.W, c.W.astype(np.float64))
    if init.endswith("uniform"):
        assert np.abs(a.W).max() <= np.sqrt(3) * std + 1e-12


def test_inputs_of_any_layout_are_accepted_and_never_written():
    layer = fp.Dense(5, 3, activation="tanh", dtype="float64", seed=0)
    base = np.random.default_rng(1).standard_normal((8, 10))
    X = base[:, ::2]                      # strided view
    expected, _ = layer.forward(np.ascontiguousarray(X))
    for variant in (X, np.asfortranarray(X), X.astype(np.float32).astype(np.float64)):
        ro = np.array(variant, copy=True, order="K")
        ro.flags.writeable = False
        before = ro.copy()
        got, cache = layer.forward(ro)
        np.testing.assert_allclose(got, expected, rtol=1e-6)
        layer.backward(np.ones_like(got), cache)
        np.testing.assert_array_equal(ro, before)
    ints = np.arange(15).reshape(3, 5)
    a, _ = layer.forward(ints)
    np.testing.assert_allclose(a, layer.forward(ints.astype(float))[0])
    a, _ = layer.forward(ints > 4)        # booleans count as 0 / 1
    assert a.shape == (3, 3)
    a, _ = layer.forward(ints.tolist())   # nested lists
    assert a.dtype == np.float64


def test_float_inputs_are_cast_to_the_layer_dtype():
    layer = fp.Dense(3, 2, dtype="float32", seed=0)
    a, cache = layer.forward(np.ones((2, 3), dtype=np.float64))
    assert a.dtype == np.float32
    da_prev, dW, db = layer.backward(np.ones((2, 2), dtype=np.float16), cache)
    assert da_prev.dtype == dW.dtype == db.dtype == np.float32


def test_returned_arrays_belong_to_the_caller():
    layer = fp.Dense(4, 3, activation="sigmoid", dtype="float64", seed=0)
    X = np.random.default_rng(0).standard_normal((5, 4))
    a1, c1 = layer.forward(X)
    keep = a1.copy()
    a2, c2 = layer.forward(X * 2)
    np.testing.assert_array_equal(a1, keep)          # a later call did not overwrite it
    g1 = layer.backward(np.ones((5, 3)), c1)
    kept = [g.copy() for g in g1]
    layer.backward(np.full((5, 3), 2.0), c2)
    for g, k in zip(g1, kept):
        np.testing.assert_array_equal(g, k)
    a1[...] = 123.0                                    # the caller may write to outputs ...
    _, dW, _ = layer.backward(np.ones((5, 3)), c1)    # ... without corrupting the cache
    np.testing.assert_allclose(dW, g1[1])
    with pytest.raises(ValueError):
        c1.z[0, 0] = 1.0                               # caches are read-only


def test_weights_are_writable_and_validated():
    layer = fp.Dense(3, 2, dtype="float64")
    W = layer.W
    layer.W = np.ones((3, 2))
    assert layer.W is W and (W == 1).all()           # assignment copies into place
    layer.W[0, 0] = 5.0
    assert layer.forward(np.array([[1.0, 0, 0]]))[0][0, 0] == 5.0
    with pytest.raises(ValueError, match="W must have shape"):
        layer.W = np.ones((2, 3))
    with pytest.raises(ValueError, match="b"):
        layer.b = np.ones(3)
    with pytest.raises(ValueError, match="NaN"):
        layer.b = [np.nan, 0]
    np.testing.assert_array_equal(layer.b, 0)


@pytest.mark.parametrize("X,exc,match", [
    (np.ones((2, 4)), ValueError, "5 columns"),
    (np.ones(5), ValueError, "2 dimensions"),
    (np.ones((2, 5, 1)), ValueError, "2 dimensions"),
    (np.ones((0, 5)), ValueError, "empty"),
    (np.ones((2, 5), dtype=complex), TypeError, "complex"),
    (np.array([["1"] * 5] * 2), TypeError, "strings"),
    (np.ones((2, 5), dtype=object), TypeError, "object"),
    ("abc", TypeError, "a_prev"),
    (np.full((2, 5), np.nan), ValueError, "NaN"),
    (np.full((2, 5), np.inf), ValueError, "NaN or infinity"),
    (np.full((2, 5), 1e300), ValueError, "range of float32"),
    ([[1, 2], [3]], ValueError, "a_prev"),
])
def test_forward_rejects_bad_input(X, exc, match):
    layer = fp.Dense(5, 3, seed=0)
    W = layer.W.copy()
    with pytest.raises(exc, match=match) as info:
        layer.forward(X)
    assert "a_prev" in str(info.value)
    np.testing.assert_array_equal(layer.W, W)


def test_backward_rejects_foreign_da_and_cache():
    layer = fp.Dense(5, 3, seed=0)
    other = fp.Dense(5, 3, seed=0)
    _, cache = layer.forward(np.ones((4, 5)))
    with pytest.raises(ValueError, match="da must have shape"):
        layer.backward(np.ones((3, 3)), cache)
    with pytest.raises(ValueError, match="da must have 3 columns"):
        layer.backward(np.ones((4, 2)), cache)
    with pytest.raises(ValueError, match="da contains NaN"):
        layer.backward(np.full((4, 3), np.nan), cache)
    with pytest.raises(ValueError, match="different layer"):
        other.backward(np.ones((4, 3)), cache)
    with pytest.raises(TypeError, match="cache"):
        layer.backward(np.ones((4, 3)), (np.ones((4, 5)),))
    with pytest.raises(TypeError, match="da"):
        layer.backward(np.ones((4, 3), dtype=complex), cache)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(n_in=0, n_out=3), ValueError, "n_in"),
    (dict(n_in=-2, n_out=3), ValueError, "n_in"),
    (dict(n_in=2.5, n_out=3), TypeError, "n_in"),
    (dict(n_in=2.0, n_out=3), TypeError, "n_in"),
    (dict(n_in="4", n_out=3), TypeError, "n_in"),
    (dict(n_in=True, n_out=3), TypeError, "n_in"),
    (dict(n_in=4, n_out=None), TypeError, "n_out"),
    (dict(n_in=4, n_out=3, activation="relux"), ValueError, "activation"),
    (dict(n_in=4, n_out=3, activation=3), TypeError, "activation"),
    (dict(n_in=4, n_out=3, init="uniform"), ValueError, "init"),
    (dict(n_in=4, n_out=3, dtype="float16"), ValueError, "dtype"),
    (dict(n_in=4, n_out=3, dtype="int64"), ValueError, "dtype"),
    (dict(n_in=4, n_out=3, dtype="banana"), TypeError, "dtype"),
    (dict(n_in=4, n_out=3, seed=-1), ValueError, "seed"),
    (dict(n_in=4, n_out=3, seed=1.5), TypeError, "seed"),
    (dict(n_in=10**9, n_out=10**9), ValueError, "memory"),
    (dict(n_in=2**31, n_out=1), ValueError, "n_in"),
])
def test_constructor_rejects_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fp.Dense(**kwargs)


def test_numpy_integer_sizes_and_generator_seed():
    layer = fp.Dense(np.int64(3), np.uint8(2), seed=np.random.default_rng(0))
    assert (layer.n_in, layer.n_out) == (3, 2) and type(layer.n_in) is int


def test_forward_backward_from_threads_equal_serial(dtype):
    layer = fp.Dense(300, 200, activation="gelu", dtype=dtype, seed=0)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((64, 300)) for _ in range(16)]
    das = [rng.standard_normal((64, 200)) for _ in range(16)]

    def run(i):
        a, cache = layer.forward(inputs[i])
        return (a,) + layer.backward(das[i], cache)

    serial = [run(i) for i in range(16)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(run, range(16)))
    for s, t in zip(serial, threaded):
        for x, y in zip(s, t):
            np.testing.assert_array_equal(x, y)
