"""Model files written by fastprop 0.1.0 (commit 9d93455, by tests/fixtures/v0.1.0/make_fixtures.py
run on that commit) must keep loading and predicting the same numbers in every later version:
float32 and float64, with and without Dropout, with Adam state after six steps."""
from pathlib import Path

import numpy as np
import pytest

import fastprop as fp

HERE = Path(__file__).parent / "fixtures" / "v0.1.0"
NAMES = ["v0.1.0_float32", "v0.1.0_float32_dropout", "v0.1.0_float64", "v0.1.0_float64_dropout"]


@pytest.mark.parametrize("name", NAMES)
def test_v010_file_loads_and_predicts_the_same(name):
    m = fp.load(HERE / f"{name}.fpz")
    X = np.load(HERE / "X.npy")
    expected = np.load(HERE / f"{name}_predict.npy")
    assert m.dtype == expected.dtype
    assert m.optimizer.t == 6
    assert isinstance(m.optimizer, fp.optim.Adam)
    np.testing.assert_array_equal(m.params, np.load(HERE / f"{name}_params.npy"))
    tol = 1e-12 if expected.dtype == np.float64 else 1e-6
    np.testing.assert_allclose(m.predict(X), expected, rtol=tol, atol=tol)
    assert any(isinstance(layer, fp.Dropout) for layer in m.layers) == ("dropout" in name)


@pytest.mark.parametrize("name", NAMES)
def test_v010_file_keeps_training(name):
    m = fp.load(HERE / f"{name}.fpz")
    X = np.load(HERE / "X.npy")
    y = np.arange(X.shape[0]) % 3
    before = m.params.copy()
    loss = m.train_step(X, y)
    assert np.isfinite(loss)
    assert m.optimizer.t == 7
    assert not np.array_equal(before, m.params)
