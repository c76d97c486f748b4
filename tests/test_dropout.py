"""Dropout: the standalone block (mask, scaling, backward, validation) and inside a model (drawn
by the engine from the model's seeded stream, only while training)."""
import io

import numpy as np
import pytest

import fastprop as fp
from fastprop.optim import SGD, Adam

from conftest import assert_close


# -- standalone ----------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_mask_values_scaling_and_rate(rate, dtype):
    drop = fp.Dropout(rate, seed=0)
    x = np.random.default_rng(1).uniform(1, 2, (200, 250)).astype(dtype)
    x0 = x.copy()
    a, cache = drop.forward(x, training=True)
    np.testing.assert_array_equal(x, x0)                       # input untouched
    assert a.dtype == dtype and a.shape == x.shape
    mask = cache.mask
    assert mask.dtype == dtype and not mask.flags.writeable
    keep = 1 - rate
    scale = dtype(1 / keep)
    assert set(np.unique(mask)) <= {dtype(0), scale}
    np.testing.assert_array_equal(a, x * mask)
    dropped = np.mean(mask == 0)
    sigma = np.sqrt(rate * keep / x.size)
    assert abs(dropped - rate) < 5 * sigma
    # inverted dropout preserves the expected value
    ones, _ = drop.forward(np.ones((400, 250), dtype=dtype), training=True)
    assert ones.mean() == pytest.approx(1.0, abs=5 * np.sqrt(rate / keep / ones.size))


def test_forward_inference_and_rate_zero_are_identity_copies():
    x = np.random.default_rng(0).standard_normal((5, 4))
    for drop, kw in ((fp.Dropout(0.7, seed=0), dict(training=False)), (fp.Dropout(0.0), {})):
        a, cache = drop.forward(x, **kw)
        np.testing.assert_array_equal(a, x)
        assert a is not x and not np.shares_memory(a, x)
        assert cache.mask is None
        da = np.arange(20.0).reshape(5, 4)
        np.testing.assert_array_equal(drop.backward(da, cache), da)
    drop = fp.Dropout(0.7, seed=0)
    state = drop._state.copy()
    drop.forward(x, training=False)
    np.testing.assert_array_equal(drop._state, state)          # inference draws nothing
    drop.forward(x, training=True)
    assert not np.array_equal(drop._state, state)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_standalone_and_model_dropout_are_the_same_generator(dtype):
    # one stream state gives the same mask alone and as a node of a model
    n = 16
    d = fp.Dense(n, n, dtype=dtype)
    d.W = np.eye(n)
    model = fp.Sequential([fp.Dropout(0.4), d], dtype=dtype, seed=5)
    drop = fp.Dropout(0.4)
    drop._state[...] = model.get_rng_state()
    X = np.random.default_rng(0).uniform(1, 2, (50, n)).astype(dtype)
    a, cache = drop.forward(X, training=True)
    np.testing.assert_array_equal(model.forward(X, training=True), a)
    np.testing.assert_array_equal(drop._state, model.get_rng_state())


def test_forward_dtype_policy():
    drop = fp.Dropout(0.5, seed=0)
    assert drop.forward(np.ones((2, 3), dtype=np.float32))[0].dtype == np.float32
    assert drop.forward(np.ones((2, 3), dtype=np.int64))[0].dtype == np.float64
    assert drop.forward([[1, 2], [3, 4]], training=True)[0].dtype == np.float64
    assert drop.forward(np.ones((2, 3)), dtype="float32")[0].dtype == np.float32
    assert drop(np.ones((2, 3)))[0].shape == (2, 3)             # __call__ is forward


def test_seeded_reproducibility():
    x = np.ones((30, 40))
    m1 = fp.Dropout(0.5, seed=3).forward(x, training=True)[1].mask
    m2 = fp.Dropout(0.5, seed=3).forward(x, training=True)[1].mask
    m3 = fp.Dropout(0.5, seed=4).forward(x, training=True)[1].mask
    np.testing.assert_array_equal(m1, m2)
    assert not np.array_equal(m1, m3)
    drop = fp.Dropout(0.5, seed=3)
    first = drop.forward(x, training=True)[1].mask
    second = drop.forward(x, training=True)[1].mask
    assert not np.array_equal(first, second)                   # the stream moves on
    g = np.random.default_rng(3)
    np.testing.assert_array_equal(fp.Dropout(0.5, seed=g).forward(x, training=True)[1].mask, m1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_is_da_times_mask(dtype):
    drop = fp.Dropout(0.4, seed=1)
    x = np.random.default_rng(0).standard_normal((7, 6)).astype(dtype)
    a, cache = drop.forward(x, training=True)
    da = np.random.default_rng(1).standard_normal((7, 6)).astype(dtype)
    da0 = da.copy()
    da_prev = drop.backward(da, cache)
    np.testing.assert_array_equal(da, da0)
    assert da_prev.dtype == dtype
    np.testing.assert_array_equal(da_prev, da * cache.mask)
    # it is the gradient of sum(a * da) with respect to x (linear in x)
    assert np.sum(a * da) == pytest.approx(np.sum(x * da_prev), rel=1e-5)


def test_backward_errors():
    drop, other = fp.Dropout(0.5, seed=0), fp.Dropout(0.5, seed=0)
    _, cache = drop.forward(np.ones((3, 4)), training=True)
    with pytest.raises(TypeError, match="cache"):
        drop.backward(np.ones((3, 4)), None)
    with pytest.raises(TypeError, match="cache"):
        drop.backward(np.ones((3, 4)), cache.mask)
    with pytest.raises(ValueError, match="cache"):
        other.backward(np.ones((3, 4)), cache)
    for bad in (np.ones((3, 5)), np.ones((2, 4)), np.ones(12)):
        with pytest.raises(ValueError, match="da"):
            drop.backward(bad, cache)
    with pytest.raises(ValueError, match="da"):
        drop.backward(np.full((3, 4), np.nan), cache)
    with pytest.raises(TypeError, match="da"):
        drop.backward(np.ones((3, 4)) * 1j, cache)
    dense = fp.Dense(4, 4)
    _, dcache = dense.forward(np.ones((3, 4)))
    with pytest.raises(TypeError, match="cache"):
        drop.backward(np.ones((3, 4)), dcache)


def test_forward_errors():
    drop = fp.Dropout(0.5)
    with pytest.raises(ValueError, match="a_prev"):
        drop.forward(np.ones(4), training=True)
    with pytest.raises(ValueError, match="a_prev"):
        drop.forward(np.array([[np.nan, 1.0]]), training=True)
    with pytest.raises(TypeError, match="a_prev"):
        drop.forward(np.array([["a", "b"]]), training=True)
    with pytest.raises(ValueError, match="a_prev"):
        drop.forward(np.zeros((0, 3)), training=True)


@pytest.mark.parametrize("rate,exc", [(1.0, ValueError), (1.5, ValueError), (-0.1, ValueError),
                                      (float("nan"), ValueError), (float("inf"), ValueError),
                                      ("0.5", TypeError), (True, TypeError), (None, TypeError),
                                      ([0.5], TypeError)])
def test_rate_validation(rate, exc):
    with pytest.raises(exc, match="rate"):
        fp.Dropout(rate)


@pytest.mark.parametrize("seed,exc", [(-1, ValueError), (1.5, TypeError), ("s", TypeError)])
def test_seed_validation(seed, exc):
    with pytest.raises(exc, match="seed"):
        fp.Dropout(0.5, seed=seed)


def test_rate_accepts_numpy_and_int_and_reports():
    assert fp.Dropout(np.float32(0.25)).rate == 0.25
    assert fp.Dropout(0).rate == 0.0
    d = fp.Dropout(0.3)
    assert d.parameters() == [] and d.n_params == 0 and repr(d) == "Dropout(0.3)"


# -- inside a model ------------------------------------------------------------------------------
def _model(seed=0, rates=(0.5,), dtype="float64", optimizer=None, sizes=(6, 10, 3)):
    layers = [fp.Dense(sizes[0], sizes[1], activation="tanh", dtype=dtype, seed=1)]
    layers += [fp.Dropout(r) for r in rates]
    layers.append(fp.Dense(sizes[1], sizes[2], activation="softmax", dtype=dtype, seed=2))
    return fp.Sequential(layers, optimizer=optimizer if optimizer is not None else
                         Adam(lr=0.01), dtype=dtype, seed=seed)


def _batch(seed=0, n=16):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 6)), rng.integers(0, 3, n)


def test_model_predict_and_evaluate_are_deterministic_and_dropout_free():
    model = _model()
    plain = fp.Sequential([fp.Dense(6, 10, activation="tanh", dtype="float64", seed=1),
                           fp.Dense(10, 3, activation="softmax", dtype="float64", seed=2)],
                          dtype="float64")
    X, y = _batch()
    rng = model.get_rng_state()
    np.testing.assert_array_equal(model.predict(X), model.predict(X))
    np.testing.assert_array_equal(model.predict(X), plain.predict(X))
    assert model.evaluate(X, y) == plain.evaluate(X, y)
    np.testing.assert_array_equal(model.get_rng_state(), rng)


def test_model_training_forward_drops_at_the_rate_and_keeps_the_mean():
    # Dense(I) -> Dropout -> Dense(I), identity: the training output is X * mask
    n = 64
    d1 = fp.Dense(n, n, dtype="float64")
    d2 = fp.Dense(n, n, dtype="float64")
    d1.W, d2.W = np.eye(n), np.eye(n)
    model = fp.Sequential([d1, fp.Dropout(0.3), d2], dtype="float64", seed=0)
    X = np.ones((500, n))
    out = model.forward(X, training=True)
    assert np.all((out == 0) | (out == 1 / 0.7))
    assert abs(np.mean(out == 0) - 0.3) < 5 * np.sqrt(0.21 / out.size)
    assert out.mean() == pytest.approx(1.0, abs=0.02)
    again = model.forward(X, training=True)
    assert not np.array_equal(out, again)                     # fresh mask each step
    np.testing.assert_array_equal(model.forward(X, training=False), X)


def test_model_dropout_on_the_input_layer():
    n = 32
    d = fp.Dense(n, n, dtype="float64")
    d.W = np.eye(n)
    model = fp.Sequential([fp.Dropout(0.5), d], dtype="float64", seed=1)
    out = model.forward(np.ones((200, n)))
    assert abs(np.mean(out == 0) - 0.5) < 0.03
    np.testing.assert_allclose(out[out != 0], 2.0, rtol=1e-15)
    np.testing.assert_array_equal(model.predict(np.ones((3, n))), np.ones((3, n)))


def test_model_train_step_reproducible_with_seed_and_different_across_seeds():
    runs = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        model = _model(seed=seed)
        losses = [model.train_step(*_batch(s)) for s in range(4)]
        runs[name] = (losses, model.params.copy())
    assert runs["a"][0] == runs["b"][0]
    np.testing.assert_array_equal(runs["a"][1], runs["b"][1])
    assert runs["a"][0][0] != runs["c"][0][0]
    assert not np.array_equal(runs["a"][1], runs["c"][1])


def test_model_rng_state_replays_the_masks():
    model = _model(seed=3)
    X, y = _batch()
    state = model.get_rng_state()
    p0 = model.params.copy()
    opt_state = {k: v.copy() for k, v in model.optimizer.state.items()}
    l1 = model.train_step(X, y)
    p1 = model.params.copy()
    # rewind everything: the same step again
    model.params[...] = p0
    model.optimizer.set_state(opt_state, 0)
    model.set_rng_state(state)
    assert model.train_step(X, y) == l1
    np.testing.assert_array_equal(model.params, p1)
    with pytest.raises(ValueError, match="rng state"):
        model.set_rng_state(np.array([1], dtype=np.int64))
    with pytest.raises(ValueError, match="rng state"):
        model.set_rng_state(np.array([1, 2], dtype=np.uint64))


def test_model_dropout_gradient_matches_finite_differences_with_a_fixed_mask():
    model = _model(seed=5, rates=(0.4,), sizes=(6, 8, 3))
    X, y = _batch(n=10)
    state = model.get_rng_state()

    def loss_grad():
        model.set_rng_state(state)                           # the same mask every time
        model.forward(X, training=True)
        g = model.backward(y).copy()
        return model.last_loss, g

    _, g = loss_grad()
    rng = np.random.default_rng(0)
    idx = rng.choice(model.n_params, 25, replace=False)
    eps = 1e-6
    num = []
    for i in idx:
        old = model.params[i]
        model.params[i] = old + eps
        lp = loss_grad()[0]
        model.params[i] = old - eps
        lm = loss_grad()[0]
        model.params[i] = old
        num.append((lp - lm) / (2 * eps))
    num = np.array(num)
    assert np.linalg.norm(g[idx] - num) < 1e-6 * np.linalg.norm(num)
    # and the mask matters: the gradient differs from the dropout-free one
    model.forward(X, training=False)
    assert not np.allclose(model.backward(y), g)


def test_model_consecutive_dropouts_are_nodes_of_their_own():
    # Each Dropout is a node of the compiled tape with its own mask. (Before the tape they were
    # folded into one mask of the combined rate, bit-identical to one Dropout(0.75); now two
    # masks are drawn, equal to it in distribution only.) Kept entries are scaled by
    # 1 / (0.5 * 0.5) = 4, about a quarter survive, and the same seed gives the same run.
    from fastprop._core._engine import NODE_KINDS as K
    a = _model(seed=4, rates=(0.5, 0.5))
    assert [node[0] for node in a._engine.nodes] == \
        [K["Dense"], K["Dropout"], K["Dropout"], K["Dense"]]
    X = np.random.default_rng(0).standard_normal((400, 6))
    h = np.tanh(X @ a.layers[0].W + a.layers[0].b)
    a.forward(X, training=True)
    dropped = a._engine.node_buffers(2, 400)[1]
    kept = dropped != 0
    np.testing.assert_allclose(dropped[kept], 4 * h[kept], rtol=1e-12)
    assert 0.2 < kept.mean() < 0.3
    b, c = _model(seed=4, rates=(0.5, 0.5)), _model(seed=4, rates=(0.5, 0.5))
    for s in range(3):
        X, y = _batch(s)
        assert b.train_step(X, y) == c.train_step(X, y)
    np.testing.assert_array_equal(b.params, c.params)
    assert "Dropout(0.5)" in b.summary(file=io.StringIO())


def test_model_rate_zero_dropout_is_a_no_op():
    a = _model(seed=2, rates=(0.0,))
    b = _model(seed=2, rates=())
    rng_a = a.get_rng_state()
    for s in range(3):
        assert a.train_step(*_batch(s)) == b.train_step(*_batch(s))
    np.testing.assert_array_equal(a.params, b.params)
    np.testing.assert_array_equal(a.get_rng_state(), rng_a)   # no mask drawn


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_model_with_dropout_still_learns_and_fit_is_reproducible(dtype):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 6))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    models = [_model(seed=11, rates=(0.2,), dtype=dtype, optimizer=SGD(lr=0.3, momentum=0.9))
              for _ in range(2)]
    hs = [m.fit(X, y, epochs=8, batch_size=20, verbose=0) for m in models]
    np.testing.assert_array_equal(models[0].params, models[1].params)
    assert hs[0].history == hs[1].history
    assert models[0].evaluate(X, y)["accuracy"] > 0.93


def test_dropout_not_modelled_by_reference_but_inference_matches():
    model = _model(rates=(0.5,))
    X, _ = _batch()
    ref = fp.reference.ReferenceModel.from_model(model)
    assert_close(model.predict(X), ref.predict(X))
