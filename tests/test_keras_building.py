"""Keras-style building: Dense(n_out) with its input width inferred, Sequential(input_dim=),
model.add, model.build, unbuilt models (summary, save, config), get_weights / set_weights,
layer.trainable (a checked flag)."""
import copy
import io
import pickle

import numpy as np
import pytest

import fastprop as fp
from fastprop import optim as O


def _data(n=60, width=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, width))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) + (X[:, 2] > 1)
    return X, y


def _eager(dtype, width=5, dropout=True):
    layers = [fp.Dense(width, 8, activation="relu", seed=0)]
    layers += [fp.Dropout(0.25)] if dropout else []
    layers += [fp.Dense(8, 6, seed=1), fp.Activation("tanh"),
               fp.Dense(6, 3, activation="softmax", seed=2)]
    return fp.Sequential(layers, optimizer=O.Adam(lr=0.01), dtype=dtype, seed=3)


def _keras_layers(dropout=True):
    layers = [fp.Dense(8, activation="relu", seed=0)]
    layers += [fp.Dropout(0.25)] if dropout else []
    return layers + [fp.Dense(6, seed=1), fp.Activation("tanh"),
                     fp.Dense(3, activation="softmax", seed=2)]


def _deferred(dtype, **kw):
    return fp.Sequential(_keras_layers(), optimizer=O.Adam(lr=0.01), dtype=dtype, seed=3, **kw)


def _added(dtype):
    m = fp.Sequential(optimizer=O.Adam(lr=0.01), dtype=dtype, seed=3, input_dim=5)
    for layer in _keras_layers():
        assert m.add(layer) is m
    return m


def _same_model(a, b):
    assert a.built and b.built
    assert [l.get_config() for l in a.layers] == [l.get_config() for l in b.layers]
    assert a.loss == b.loss and a.dtype == b.dtype and a.n_params == b.n_params
    np.testing.assert_array_equal(a.params, b.params)


# -- the same model, built eagerly or Keras-style -------------------------------------------------
def test_deferred_dense_draws_the_eager_weights(dtype):
    for seed in (0, 7, np.random.default_rng(5)):
        s2 = copy.deepcopy(seed)
        eager = fp.Dense(4, 3, activation="relu", seed=seed, dtype=dtype)
        lazy = fp.Dense(3, activation="relu", seed=s2, dtype=dtype)
        assert not lazy.built and lazy.n_in is None and lazy.n_out == 3
        assert lazy.build(4) == 3 and lazy.built and lazy.n_in == 4
        np.testing.assert_array_equal(lazy.W, eager.W)
        np.testing.assert_array_equal(lazy.b, eager.b)
        assert lazy.W.dtype == eager.W.dtype == dtype
        assert lazy.get_config() == eager.get_config()


@pytest.mark.parametrize("route", ["input_dim", "add", "fit", "predict", "evaluate",
                                   "train_step", "build", "forward", "compute_gradients"])
def test_every_route_builds_the_eager_model(dtype, route):
    X, y = _data()
    eager = _eager(dtype)
    if route == "input_dim":
        m = _deferred(dtype, input_dim=5)
        assert m.built
    elif route == "add":
        m = _added(dtype)
    else:
        m = _deferred(dtype)
        assert not m.built and m.n_in is None and m.n_out == 3
        if route == "build":
            assert m.build(5) is None
        elif route in ("fit",):
            m.fit(X, y, epochs=2, batch_size=16, verbose=0)
            eager.fit(X, y, epochs=2, batch_size=16, verbose=0)
        elif route == "predict":
            np.testing.assert_array_equal(m.predict(X), eager.predict(X))
        elif route == "evaluate":
            assert m.evaluate(X, y) == eager.evaluate(X, y)
        elif route == "train_step":
            assert m.train_step(X, y) == eager.train_step(X, y)
        elif route == "forward":
            np.testing.assert_array_equal(m.forward(X), eager.forward(X))
        else:
            assert m.compute_gradients(X, y) == eager.compute_gradients(X, y)
            np.testing.assert_array_equal(m.grads, eager.grads)
    assert m.built and m.n_in == 5
    _same_model(m, eager)
    # a few more epochs, dropout included: bit for bit
    h1 = m.fit(X, y, epochs=3, batch_size=16, verbose=0).history
    h2 = eager.fit(X, y, epochs=3, batch_size=16, verbose=0).history
    assert h1 == h2
    _same_model(m, eager)
    np.testing.assert_array_equal(m.predict(X), eager.predict(X))


def test_width_inferred_from_the_previous_layer():
    m = fp.Sequential([fp.Dense(5, 8, seed=0), fp.Dense(4, seed=1), fp.Dropout(0.1),
                       fp.Dense(2, seed=2)])
    assert m.built and [d.n_in for d in m.layers if isinstance(d, fp.Dense)] == [5, 8, 4]
    np.testing.assert_array_equal(m.layers[1].W, fp.Dense(8, 4, seed=1).W)


def test_two_positionals_still_eager():
    layer = fp.Dense(3, 2, "relu", seed=0)
    assert layer.built and (layer.n_in, layer.n_out) == (3, 2)
    with pytest.raises(TypeError, match="n_out"):
        fp.Dense(n_in=4, n_out=None)


def test_standalone_forward_builds_a_deferred_dense():
    layer = fp.Dense(3, seed=4)
    with pytest.raises(ValueError, match="a_prev"):
        layer.forward(np.full((2, 4), np.nan))
    assert not layer.built                       # a failed call built nothing
    a, cache = layer.forward(np.ones((2, 4)))
    assert layer.n_in == 4 and a.shape == (2, 3)
    np.testing.assert_array_equal(layer.W, fp.Dense(4, 3, seed=4).W)
    with pytest.raises(ValueError, match="n_in"):
        layer.build(5)


def test_unbuilt_dense_has_no_weights_yet():
    layer = fp.Dense(3)
    assert "Dense(3," in repr(layer)
    with pytest.raises(ValueError, match="not built"):
        layer.get_weights()
    with pytest.raises(ValueError, match="not built"):
        layer.set_weights([])


# -- add ----------------------------------------------------------------------------------------
def test_add_to_a_built_model_keeps_its_parameters_and_default_loss_follows_output():
    X, y = _data()
    m = fp.Sequential(input_dim=5, seed=0)
    m.add(fp.Dense(8, activation="relu", seed=0))
    assert m.built and m.loss == "mse"
    m.fit(X, np.zeros((60, 8)), epochs=1, verbose=0)
    W0 = m.layers[0].W.copy()
    m.add(fp.Dropout(0.5))
    assert not m.built                             # waits for its output layer
    with pytest.raises(ValueError, match="output layer"):
        m.predict(X)
    m.add(fp.Dense(3, activation="softmax", seed=1))
    assert m.built and m.loss == "cross_entropy" and m.n_params == 5 * 8 + 8 + 8 * 3 + 3
    np.testing.assert_array_equal(m.layers[0].W, W0)
    np.testing.assert_array_equal(m.layers[2].W, fp.Dense(8, 3, activation="softmax",
                                                          seed=1).W)
    m.fit(X, y, epochs=1, verbose=0)
    assert m.layers[0].W.base is not None and np.shares_memory(m.layers[0].W, m.params)


def test_add_explicit_loss_is_kept():
    m = fp.Sequential(input_dim=5, loss="mse")
    m.add(fp.Dense(3, activation="softmax"))
    assert m.loss == "mse"


def test_failed_add_changes_nothing():
    X, _ = _data()
    m = fp.Sequential([fp.Dense(5, 4, activation="relu", seed=0)], seed=0)
    before = (m.layers, m.params.copy(), m.n_params, m.predict(X))
    # (an Activation after a relu Dense is no longer refused: it runs as a node of the tape,
    # tests/test_tape.py)
    bad = [fp.Dense(7, 2, seed=1), "dense", m.layers[0]]
    other = fp.Sequential([fp.Dense(4, 2)])
    for layer, exc, match in [(bad[0], ValueError, "n_in=7"), (bad[1], TypeError, "layers"),
                              (bad[2], ValueError, "already"),
                              (other.layers[0], ValueError, "another model")]:
        with pytest.raises(exc, match=match):
            m.add(layer)
        assert m.layers == before[0] and m.n_params == before[2]
        np.testing.assert_array_equal(m.params, before[1])
        np.testing.assert_array_equal(m.predict(X), before[3])
    m2 = fp.Sequential([bad[0]])                     # the refused layer is free to use
    assert m2.layers[0] is bad[0]


def test_add_failing_in_the_rebuild_changes_nothing():
    X, y = _data()
    m = fp.Sequential([fp.Dense(5, 4, activation="relu", seed=0)], seed=0)
    m.fit(X, np.zeros((60, 4)), epochs=1, verbose=0)
    before = (m.params.copy(), m.optimizer.t, m.predict(X), m.get_rng_state())
    huge = fp.Dense(2**30)
    with pytest.raises(ValueError, match="memory"):
        m.add(huge)
    assert len(m.layers) == 1 and not huge.built and m.optimizer.t == before[1]
    np.testing.assert_array_equal(m.params, before[0])
    np.testing.assert_array_equal(m.predict(X), before[2])
    np.testing.assert_array_equal(m.get_rng_state(), before[3])
    assert np.shares_memory(m.layers[0].W, m.params)
    m.fit(X, np.zeros((60, 4)), epochs=1, verbose=0)      # still trains
    fp.Sequential([huge], input_dim=None)                # and the layer is free


# -- unbuilt models -----------------------------------------------------------------------------
def test_unbuilt_model_refuses_what_needs_weights():
    m = _deferred("float64")
    for call in (m.summary, m.to_bytes, m.get_weights, lambda: m.save(io.BytesIO()),
                 lambda: pickle.dumps(m), lambda: copy.deepcopy(m), lambda: m.params,
                 lambda: m.loss, lambda: m.n_params, m.apply_gradients, m.get_rng_state,
                 lambda: fp.gradcheck(m, np.ones((2, 5)), [0, 1])):
        with pytest.raises(ValueError, match="not yet been built"):
            call()
    with pytest.raises(ValueError, match="forward"):
        m.backward([0, 1])
    assert not m.built
    assert "unbuilt" in repr(m)
    m.build(5)
    assert "Sequential: input (None, 5)" in m.summary(file=io.StringIO())


def test_n_threads_of_an_unbuilt_model_reaches_the_built_one():
    m = fp.Sequential([fp.Dense(2)], n_threads=1)
    assert m.n_threads == 1
    m.n_threads = 2
    m.build(3)
    assert m.n_threads == 2


def test_empty_model_and_incomplete_models():
    m = fp.Sequential()
    assert not m.built and m.n_in is None and m.n_out is None
    with pytest.raises(ValueError, match="no layers"):
        m.build(3)
    with pytest.raises(ValueError, match="no layers"):
        m.fit(np.ones((4, 3)), np.ones((4, 1)), verbose=0)
    m.add(fp.Dropout(0.2))
    with pytest.raises(ValueError, match="Dense"):
        m.build(3)
    assert not m.built
    with pytest.raises(ValueError, match="Dense"):
        fp.Sequential([])


def test_build_checks():
    m = _deferred("float32")
    with pytest.raises(TypeError, match="n_in"):
        m.build(2.5)
    with pytest.raises(ValueError, match="n_in"):
        m.build(0)
    assert not m.built
    with pytest.raises(ValueError, match="n_in=5"):
        fp.Sequential([fp.Dense(3), fp.Dense(5, 2)], input_dim=3)
    with pytest.raises(ValueError, match="input_dim"):
        fp.Sequential([fp.Dense(4)], input_dim=0)
    m2 = fp.Sequential([fp.Dense(4), fp.Dense(4, 2)])      # the second layer's n_in: 4
    assert not m2.built
    m2.build(7)                                             # 7 -> Dense(4) -> 4: fine
    assert m2.built and m2.n_in == 7
    with pytest.raises(ValueError, match="previous layer's width is 4"):
        fp.Sequential([fp.Dense(4), fp.Dense(5, 2)])
    m3 = fp.Sequential([fp.Dense(4, seed=0)], input_dim=3)  # built at once
    assert m3.built and m3.n_in == 3
    with pytest.raises(ValueError, match="built for n_in=3"):
        m3.build(4)
    m3.build(3)
    with pytest.raises(ValueError, match="input_dim"):
        m4 = fp.Sequential(input_dim=3)
        m4.add(fp.Dropout(0.1))
        m4.build(4)
    m5 = fp.Sequential([fp.Dense(2, seed=0)])
    with pytest.raises(ValueError, match="X"):              # bad data: nothing built
        m5.fit(np.full((3, 2), np.nan), np.ones((3, 2)), verbose=0)
    assert not m5.built and not m5.layers[0].built


def test_compile_of_an_unbuilt_model_is_used_at_build():
    X, y = _data()
    m = fp.Sequential()
    m.add(fp.Dense(3, activation="softmax", seed=0))
    with pytest.raises(ValueError, match="loss"):
        m.compile(loss="banana")
    assert m.compile(optimizer="sgd", loss="categorical_crossentropy",
                     metrics=["mae"]) is m
    h = m.fit(X, y, epochs=1, verbose=0).history
    assert m.loss == "cross_entropy" and m.metrics == ("mae",)
    assert isinstance(m.optimizer, O.SGD) and "mae" in h


def test_unbuilt_config_round_trip_and_built_save_load(tmp_path):
    m = _deferred("float64", input_dim=None)
    config = m.get_config()
    assert config["layers"][0]["n_in"] is None and config["input_dim"] is None
    m2 = fp.Sequential.from_config(config)
    assert not m2.built and m2.get_config() == config
    X, y = _data()
    m.fit(X, y, epochs=1, verbose=0)
    path = tmp_path / "m.fpm"
    m.save(path)
    loaded = fp.load(path)
    _same_model(loaded, m)
    np.testing.assert_array_equal(loaded.predict(X), m.predict(X))
    _same_model(pickle.loads(pickle.dumps(m)), m)


# -- get_weights / set_weights -------------------------------------------------------------------
def test_get_weights_keras_order_and_copies(dtype):
    m = _eager(dtype)
    w = m.get_weights()
    assert [a.shape for a in w] == [(5, 8), (8,), (8, 6), (6,), (6, 3), (3,)]
    assert all(a.dtype == dtype for a in w)
    np.testing.assert_array_equal(w[2], m.layers[2].W)
    w[0][...] = 123                                      # a copy
    assert not np.any(m.layers[0].W == 123)


def test_set_weights_round_trip(dtype):
    X, y = _data()
    src = _eager(dtype)
    src.fit(X, y, epochs=2, verbose=0)
    dst = _deferred(dtype)
    dst.build(5)
    weights = [a.astype(np.float64) for a in src.get_weights()]   # cast to the model's dtype
    assert dst.set_weights(weights) is None
    np.testing.assert_array_equal(dst.predict(X), src.predict(X))
    weights[0][...] = 0                                   # copied in
    assert not np.all(dst.layers[0].W == 0)


@pytest.mark.parametrize("bad, exc, match", [
    (lambda w: w[:-1], ValueError, "6 arrays"),
    (lambda w: w + [w[0]], ValueError, "6 arrays"),
    (lambda w: w[:-1] + [np.ones(4)], ValueError, r"weights\[5\].*shape"),
    (lambda w: w[:-1] + [np.full(3, np.nan)], ValueError, r"weights\[5\]"),
    (lambda w: w[:-1] + [np.ones((3, 1))], ValueError, r"weights\[5\]"),
    (lambda w: w[:-1] + [np.array(["a", "b", "c"])], TypeError, r"weights\[5\]"),
    (lambda w: np.ones(6), TypeError, "list"),
    (lambda w: None, TypeError, "list"),
])
def test_set_weights_bad_input_changes_nothing(bad, exc, match):
    m = _eager("float32")
    before = m.params.copy()
    w = [a + 1 for a in m.get_weights()]
    with pytest.raises(exc, match=match):
        m.set_weights(bad(w))
    np.testing.assert_array_equal(m.params, before)


def test_layer_get_set_weights_follow_the_protocol():
    layer = fp.Dense(3, 2, seed=0)
    W, b = layer.get_weights()
    layer.set_weights([W * 2, b + 1])
    np.testing.assert_array_equal(layer.W, 2 * W)
    with pytest.raises(ValueError, match="shape"):
        layer.set_weights([W, np.ones(3)])
    np.testing.assert_array_equal(layer.b, b + 1)
    m = fp.Sequential([layer])                 # inside a model: writes into its buffers
    layer.set_weights([W, b])
    np.testing.assert_array_equal(m.params, np.concatenate([W.ravel(), b]))

    class Stateful(fp.Layer):                  # params then states, in declaration order
        def build(self, n_in):
            self.add_param("gamma", (n_in,), init="ones")
            self.add_param("beta", (n_in,))
            self.add_state("running_mean", (n_in,))
            self.add_state("running_var", (n_in,), init="ones")
            return n_in

    s = Stateful()
    s.build(2)
    assert [a.tolist() for a in s.get_weights()] == [[1, 1], [0, 0], [0, 0], [1, 1]]
    s.set_weights([np.full(2, k, np.float32) for k in range(4)])
    assert [a.tolist() for a in s.get_weights()] == [[0, 0], [1, 1], [2, 2], [3, 3]]


# -- trainable -------------------------------------------------------------------------------------
def test_trainable_is_a_checked_flag():
    layer = fp.Dense(3, 2)
    assert layer.trainable is True
    layer.trainable = False                     # freezing (tests/test_freeze.py)
    assert layer.trainable is False
    with pytest.raises(TypeError, match="trainable"):
        layer.trainable = "no"
    assert layer.trainable is False
    bn = fp.BatchNorm()
    bn.trainable = False                        # a frozen BatchNorm (tests/test_freeze.py)
    assert bn.trainable is False


def test_readme_example_runs():
    from pathlib import Path
    readme = Path(__file__).resolve().parents[1] / "README.md"
    if not readme.exists():
        pytest.skip("README.md is not next to the tests (installed wheel)")
    text = readme.read_text()
    start = text.index("```python", text.index("### Building a model the Keras way")) + 9
    exec(compile(text[start:text.index("```", start)], "README.md", "exec"), {})
