"""Freezing: ``layer.trainable = False`` (issue 11 item 6). The compiled update skips the
frozen layers' parameter ranges: their parameters stay bit for bit and their optimizer state
does not move, while the other layers' gradients are those of the unfrozen model."""
import copy
import pickle

import numpy as np
import pytest

import fastprop as fp


def _data(n=24, d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = rng.integers(0, k, size=n)
    return X, y


def _model(opt, dtype="float64", frozen=(1,)):
    layers = [fp.Dense(5, 7, activation="tanh", seed=1), fp.Dense(7, 6, activation="relu", seed=2),
              fp.Dense(6, 3, activation="softmax", seed=3)]
    for i in frozen:
        layers[i].trainable = False
    return fp.Sequential(layers, loss="cross_entropy", optimizer=opt, dtype=dtype)


OPTIMIZERS = [
    lambda: fp.optim.SGD(lr=0.1),                                  # the fused-SGD path
    lambda: fp.optim.SGD(lr=0.1, momentum=0.9, weight_decay=0.01),
    lambda: fp.optim.SGD(lr=0.1, clip_norm=0.5),
    lambda: fp.optim.Adam(lr=0.01),
    lambda: fp.optim.AdamW(lr=0.01, weight_decay=0.1),
    lambda: fp.optim.RMSprop(lr=0.01),
    lambda: fp.optim.Adagrad(lr=0.1),
]


def _layer_slices(model):
    out, off = [], 0
    for layer in model.layers:
        out.append(slice(off, off + layer.n_params))
        off += layer.n_params
    return out


@pytest.mark.parametrize("make_opt", OPTIMIZERS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_frozen_params_and_state_unchanged_train_step(make_opt, dtype):
    X, y = _data()
    model = _model(make_opt(), dtype)
    sl = _layer_slices(model)[1]
    before = model.params[sl].copy()
    model.train_step(X, y)                       # sets the optimizer state up
    state0 = [None if a is None else a[sl].copy() for a in model.optimizer._state_arrays()]
    for _ in range(4):
        model.train_step(X, y)
    np.testing.assert_array_equal(model.params[sl], before)
    for a0, a in zip(state0, model.optimizer._state_arrays()):
        if a is not None:
            np.testing.assert_array_equal(a[sl], a0)
    # the other layers did train
    other = _model(make_opt(), dtype)
    assert not np.array_equal(model.params[_layer_slices(model)[0]],
                              other.params[_layer_slices(other)[0]])


@pytest.mark.parametrize("make_opt", OPTIMIZERS)
def test_other_layers_gradients_equal_unfrozen(make_opt):
    X, y = _data()
    frozen, free = _model(make_opt()), _model(make_opt(), frozen=())
    np.testing.assert_array_equal(frozen.params, free.params)
    frozen.compute_gradients(X, y)
    g_frozen = frozen.grads.copy()
    free.compute_gradients(X, y)
    g_free = free.grads.copy()
    np.testing.assert_array_equal(g_frozen, g_free)     # gradients flow through layer 1
    frozen.train_step(X, y)
    free.train_step(X, y)
    s0, s1, s2 = _layer_slices(free)
    # the trainable layers took the unfrozen model's step
    for s in (s0, s2):
        np.testing.assert_allclose(frozen.params[s], free.params[s], rtol=1e-12, atol=1e-14)
    assert not np.array_equal(frozen.params[s1], free.params[s1])


@pytest.mark.parametrize("make_opt", [OPTIMIZERS[0], OPTIMIZERS[3]])
def test_frozen_through_fit_and_unfreeze(make_opt):
    X, y = _data(n=64)
    model = _model(make_opt(), frozen=(0, 2))
    s0, s1, s2 = _layer_slices(model)
    before = model.params.copy()
    model.fit(X, y, epochs=2, batch_size=16, verbose=0)
    np.testing.assert_array_equal(model.params[s0], before[s0])
    np.testing.assert_array_equal(model.params[s2], before[s2])
    assert not np.array_equal(model.params[s1], before[s1])
    model.layers[0].trainable = True             # on a built model: the ranges are rebuilt
    model.fit(X, y, epochs=1, batch_size=16, verbose=0)
    assert not np.array_equal(model.params[s0], before[s0])
    np.testing.assert_array_equal(model.params[s2], before[s2])


def test_apply_gradients_respects_frozen():
    X, y = _data()
    model = _model(fp.optim.Adam(lr=0.01))
    sl = _layer_slices(model)[1]
    before = model.params[sl].copy()
    model.compute_gradients(X, y)
    model.apply_gradients()
    np.testing.assert_array_equal(model.params[sl], before)


def test_trainable_saved_loaded_pickled_copied(tmp_path):
    X, y = _data()
    model = _model(fp.optim.Adam(lr=0.01))
    assert model.layers[1].get_config()["trainable"] is False
    assert "trainable" not in model.layers[0].get_config()     # older files: unchanged
    path = tmp_path / "m.fpm"
    model.save(path)
    for other in (fp.load(path), pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert [layer.trainable for layer in other.layers] == [True, False, True]
        sl = _layer_slices(other)[1]
        before = other.params[sl].copy()
        other.train_step(X, y)
        np.testing.assert_array_equal(other.params[sl], before)


def test_constructor_argument_and_bad_value():
    assert fp.Dense(3, 2, trainable=False).trainable is False
    with pytest.raises(TypeError, match="trainable"):
        fp.Dense(3, 2, trainable=1)


def test_frozen_layernorm_and_engine_range_check():
    X, y = _data()
    ln = fp.LayerNorm(trainable=False)
    model = fp.Sequential([fp.Dense(5, 6, seed=1), ln, fp.Dense(6, 3, activation="softmax",
                                                                seed=2)],
                          loss="cross_entropy", optimizer=fp.optim.Adam(lr=0.01),
                          dtype="float64")
    sl = _layer_slices(model)[1]
    before = model.params[sl].copy()
    model.fit(X, y, epochs=2, batch_size=8, verbose=0)
    np.testing.assert_array_equal(model.params[sl], before)
    assert fp.LayerNorm.from_config(ln.get_config()).trainable is False
    with pytest.raises(ValueError, match="ranges"):
        model._engine.set_frozen([(0, model.n_params + 1)])
    assert model._engine.frozen == [(sl.start, sl.stop)]     # a failed call changes nothing
