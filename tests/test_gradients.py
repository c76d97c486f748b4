"""Finite-difference checks of the Dense block's gradients, float64, every activation."""
import numpy as np
import pytest

import fastprop as fp
from fastprop.activations import ACTIVATIONS


def _loss(layer, X, R):
    a, _ = layer.forward(X)
    return float(np.sum(a * R))


def _numeric(f, x, h=1e-6):
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        fp_ = f()
        x[i] = old - h
        fm = f()
        x[i] = old
        g[i] = (fp_ - fm) / (2 * h)
    return g


def _rel_err(a, b):
    return np.max(np.abs(a - b)) / max(np.max(np.abs(a)), np.max(np.abs(b)), 1e-12)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_dense_gradients_match_finite_differences(name):
    rng = np.random.default_rng(7)
    layer = fp.Dense(5, 4, activation=name, dtype="float64", seed=1)
    layer.b = rng.standard_normal(4)
    X = rng.standard_normal((6, 5))
    R = rng.standard_normal((6, 4))  # L = sum(a * R), so dL/da = R
    a, cache = layer.forward(X)
    if name in ("relu", "leaky_relu"):  # keep clear of the kink at 0
        assert np.min(np.abs(cache.z)) > 1e-4
    da_prev, dW, db = layer.backward(R, cache)
    assert _rel_err(dW, _numeric(lambda: _loss(layer, X, R), layer.W)) < 1e-6
    assert _rel_err(db, _numeric(lambda: _loss(layer, X, R), layer.b)) < 1e-6
    assert _rel_err(da_prev, _numeric(lambda: _loss(layer, X, R), X)) < 1e-6


def test_wrong_gradient_is_detected():
    # the check above must be able to fail: a perturbed gradient gives an order-1 error
    rng = np.random.default_rng(0)
    layer = fp.Dense(3, 2, activation="tanh", dtype="float64", seed=0)
    X, R = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    _, cache = layer.forward(X)
    _, dW, _ = layer.backward(R, cache)
    assert _rel_err(dW * 1.5, _numeric(lambda: _loss(layer, X, R), layer.W)) > 0.1
