"""The reference mirrors the layer registry: one plain-NumPy twin per registered kind, checked
against the compiled layer, and ReferenceModel.from_model for models of any registered kinds
(Activation anywhere, Dropout in training with the model's own masks)."""
import numpy as np
import pytest

import fastprop as fp
import fastprop.reference as R

TOL = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=1e-5, atol=1e-5)}
DTYPES = [np.float64, np.float32]
ACTS = ["identity", "relu", "leaky_relu", "elu", "gelu", "sigmoid", "tanh", "softplus", "silu",
        "softmax"]


def close(got, want, dtype):
    np.testing.assert_allclose(got, want, **TOL[dtype])


def data(n, k, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal((n, k)).astype(dtype)


# -- the registry mirror ---------------------------------------------------------------------
def _twin(name):
    """The twin of kind ``name``: registered in REFERENCE_LAYERS, or (a kind whose twin lives in
    another reference module, e.g. reference/_norm.py) exported from fastprop.reference."""
    return R.REFERENCE_LAYERS.get(name) or getattr(R, name, None)


def _library_kinds():
    """The kinds fastprop registers itself (other tests register kinds of their own)."""
    return [name for name, cls in fp.layers.LAYERS.items()
            if cls.__module__.startswith("fastprop.")]


def test_every_registered_kind_has_a_reference_twin():
    kinds = _library_kinds()
    assert {"Dense", "Dropout", "Activation"} <= set(kinds)
    missing = [name for name in kinds if _twin(name) is None]
    assert not missing, f"layer kinds without a reference twin: {missing}"
    for name in kinds:
        twin = _twin(name)
        assert callable(getattr(twin, "forward", None)), name
        assert callable(getattr(twin, "backward", None)), name


def test_the_mirror_test_fails_for_a_kind_without_twin(monkeypatch):
    class Orphan(fp.Layer):
        def build(self, n_in):
            return n_in
    Orphan.__module__ = "fastprop.layers.orphan"      # as if the library shipped it
    monkeypatch.setitem(fp.layers.LAYERS, "Orphan", Orphan)
    assert _twin("Orphan") is None
    with pytest.raises(AssertionError, match="Orphan"):
        test_every_registered_kind_has_a_reference_twin()
    with pytest.raises(TypeError, match="no twin for the layer kind Orphan"):
        R.layer_from(Orphan())


def test_reference_registry_uses_the_kind_names():
    for name in ("Dense", "Dropout", "Activation"):
        assert R.REFERENCE_LAYERS[name].kind == name
        assert R.REFERENCE_LAYERS[name] is getattr(R, name)
    with pytest.raises(ValueError, match="already registered"):
        R.register_reference_layer(type("Dense", (), {"kind": "Dense"}))
    with pytest.raises(TypeError, match="kind"):
        R.register_reference_layer(type("NoKind", (), {}))


def test_reference_does_not_import_compiled_code():
    import ast
    import pathlib
    for path in pathlib.Path(R.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                    [a.name for a in node.names]
                for name in names:
                    assert not name.startswith("fastprop") or \
                        name.startswith("fastprop.reference"), (path.name, name)


# -- each twin against the compiled layer ----------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
def test_dense_twin_matches_the_compiled_layer(dtype, act):
    layer = fp.Dense(4, 3, activation=act, dtype=np.dtype(dtype).name, seed=1)
    layer.b = np.linspace(-0.5, 0.5, 3)
    twin = R.layer_from(layer)
    assert isinstance(twin, R.Dense) and twin.activation == act
    X, da = data(6, 4, 1, dtype), data(6, 3, 2, dtype)
    a, cache = layer.forward(X)
    ra, rcache = twin.forward(X)
    assert ra.dtype == dtype
    close(a, ra, dtype)
    got, want = layer.backward(da, cache), twin.backward(da, rcache)
    assert len(got) == len(want) == 3
    for g, w in zip(got, want):
        close(g, w, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
def test_activation_twin_matches_the_compiled_layer(dtype, act):
    layer = fp.Activation(act)
    twin = R.layer_from(layer)
    assert isinstance(twin, R.Activation) and twin.activation == act
    X, da = data(5, 4, 3, dtype), data(5, 4, 4, dtype)
    a, cache = layer.forward(X, training=True)
    ra, rcache = twin.forward(X, training=True)
    close(a, ra, dtype)
    (got,), (want,) = layer.backward(da, cache), twin.backward(da, rcache)
    close(got, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rate", [0.0, 0.3, 0.75])
def test_dropout_twin_draws_the_compiled_mask(dtype, rate):
    layer = fp.Dropout(rate, seed=7)
    twin = R.layer_from(layer)
    X, da = data(9, 13, 5, dtype) + 3, data(9, 13, 6, dtype)   # X has no zeros
    for _ in range(2):                 # the second call continues both streams
        a, cache = layer.forward(X, training=True)
        ra, rcache = twin.forward(X, training=True)
        np.testing.assert_array_equal(a, ra)
        if rate:
            np.testing.assert_array_equal(rcache.mask, cache.mask)
            assert 0 < np.count_nonzero(rcache.mask) < X.size
        np.testing.assert_array_equal(layer.backward(da, cache), twin.backward(da, rcache)[0])
    np.testing.assert_array_equal(twin.state, layer._state)
    # inference: the identity, no draw
    state = twin.state.copy()
    a, cache = twin.forward(X)
    assert a is X and cache.mask is None and twin.state == state
    np.testing.assert_array_equal(twin.backward(da, cache)[0], da)


def test_dropout_twin_takes_an_explicit_mask():
    twin = R.Dropout(0.5)              # no generator state: a training call needs a mask
    X, da = data(3, 4), data(3, 4, 1)
    with pytest.raises(ValueError, match="mask"):
        twin.forward(X, training=True)
    mask = np.array([[0, 2, 2, 0]] * 3, dtype=float)
    a, cache = twin.forward(X, training=True, mask=mask)
    np.testing.assert_array_equal(a, X * mask)
    np.testing.assert_array_equal(twin.backward(da, cache)[0], da * mask)


def test_dropout_mask_is_the_splitmix64_stream():
    state = np.array([12345], dtype=np.uint64)
    mask = R.dropout_mask((2, 3), 0.5, state, np.float64)
    # the first splitmix64 output of state 12345, computed with Python ints
    z = (12345 + 0x9E3779B97F4A7C15) % 2**64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
    u = ((z ^ (z >> 31)) >> 11) / 2.0**53
    assert mask[0, 0] == (2.0 if u >= 0.5 else 0.0)
    assert int(state[0]) == (12345 + 6 * 0x9E3779B97F4A7C15) % 2**64
    assert set(np.unique(mask)) <= {0.0, 2.0}


def test_dense_functions_are_the_dense_twin():
    rng = np.random.default_rng(0)
    W, b, X, da = rng.standard_normal((3, 2)), rng.standard_normal(2), data(4, 3), data(4, 2)
    twin = R.Dense(W, b, "tanh")
    a, cache = R.dense_forward(X, W, b, "tanh")
    ra, rcache = twin.forward(X)
    np.testing.assert_array_equal(a, ra)
    for g, w in zip(R.dense_backward(da, cache), twin.backward(da, rcache)):
        np.testing.assert_array_equal(g, w)


# -- ReferenceModel.from_model ---------------------------------------------------------------
NETS = {
    "act-after-relu": lambda dt: [fp.Dense(5, 7, activation="relu", dtype=dt, seed=0),
                                  fp.Activation("tanh"), fp.Dense(7, 3, dtype=dt, seed=1),
                                  fp.Activation("softmax")],
    "act-first": lambda dt: [fp.Activation("sigmoid"),
                             fp.Dense(5, 6, activation="elu", dtype=dt, seed=0),
                             fp.Dense(6, 3, activation="softmax", dtype=dt, seed=1)],
    "dropout-act": lambda dt: [fp.Dense(5, 8, activation="gelu", dtype=dt, seed=0),
                               fp.Dropout(0.4), fp.Activation("silu"), fp.Activation("softplus"),
                               fp.Dense(8, 6, activation="leaky_relu", dtype=dt, seed=1),
                               fp.Dropout(0.25), fp.Dense(6, 3, dtype=dt, seed=2),
                               fp.Activation("softmax")],
    "dropout-first": lambda dt: [fp.Dropout(0.3), fp.Dense(5, 4, activation="tanh", dtype=dt,
                                                           seed=0),
                                 fp.Dropout(0.0), fp.Dense(4, 3, activation="softmax", dtype=dt,
                                                           seed=1)],
}


def _model(name, dtype, loss="cross_entropy"):
    model = fp.Sequential(NETS[name](np.dtype(dtype).name), loss=loss, dtype=np.dtype(dtype).name,
                          seed=3)
    rng = np.random.default_rng(9)
    params = model.params.copy()
    params += 0.05 * rng.standard_normal(params.shape).astype(dtype)   # non-zero biases
    model.params[...] = params
    return model


def _targets(n, seed=4):
    return np.random.default_rng(seed).integers(0, 3, n)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(NETS))
def test_from_model_inference_forward_loss_gradients(dtype, name):
    model = _model(name, dtype)
    ref = R.ReferenceModel.from_model(model)
    X, y = data(11, 5, 2, dtype), _targets(11)
    close(ref.predict(X), model.predict(X), dtype)
    model.forward(X, training=False)
    for (z, a), (rz, ra) in zip(model.caches, ref.forward(X)):
        close(rz, z, dtype)
        close(ra, a, dtype)
    grads = model.backward(y).copy()
    loss = ref.loss_and_gradients(X, labels=y)
    close(loss, model.last_loss, dtype)
    close(ref.grads, grads, dtype)
    assert np.any(grads != 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["dropout-act", "dropout-first"])
def test_from_model_training_draws_the_model_masks(dtype, name):
    model = _model(name, dtype)
    X, y = data(11, 5, 2, dtype), _targets(11)
    for _ in range(2):                       # the twin takes the stream where the model is
        ref = R.ReferenceModel.from_model(model)
        out = model.forward(X, training=True)
        grads = model.backward(y).copy()
        loss = ref.loss_and_gradients(X, labels=y, training=True)
        close(ref._caches(X)[-1].a, model.predict(X), dtype)
        close(loss, model.last_loss, dtype)
        close(ref.grads, grads, dtype)
        assert ref.rng_state[0] == model.get_rng_state()[0]     # the same number of draws
        assert not np.allclose(out, model.predict(X))          # dropout was active


def test_from_model_training_with_explicit_masks():
    model = _model("dropout-act", np.float64)
    ref = R.ReferenceModel.from_model(model)
    X, y = data(6, 5, 2), _targets(6)
    masks = [np.zeros((6, 8)), np.full((6, 6), 4.0)]
    ref.loss_and_gradients(X, labels=y, training=True, masks=masks)
    assert np.all(ref.dW[0] == 0) and np.all(ref.db[0] == 0)   # everything dropped before
    assert np.any(ref.dW[2] != 0)
    assert ref.rng_state[0] == model.get_rng_state()[0]         # nothing drawn


def test_from_model_mse_with_an_activation_node_at_the_output():
    layers = [fp.Dense(4, 6, activation="relu", dtype="float64", seed=0), fp.Dropout(0.2),
              fp.Activation("sigmoid")]
    model = fp.Sequential(layers, loss="mse", dtype="float64", seed=0)
    ref = R.ReferenceModel.from_model(model)
    X, y = data(8, 4, 1), data(8, 6, 2)
    model.forward(X, training=True)
    grads = model.backward(y).copy()
    loss = ref.loss_and_gradients(X, y=y, training=True)
    close(loss, model.last_loss, np.float64)
    close(ref.grads, grads, np.float64)


def test_from_model_fuses_like_the_tape_and_keeps_the_layer_list():
    model = _model("act-after-relu", np.float64)
    ref = R.ReferenceModel.from_model(model)
    # the relu Dense keeps its Activation node; the identity Dense takes the softmax
    assert [type(t).__name__ for t in ref.layers] == ["Dense", "Activation", "Dense"]
    assert ref.activations == ["relu", "softmax"]
    np.testing.assert_array_equal(ref.params, model.params)
    assert np.shares_memory(ref.layers[0].W, ref.params)


def test_from_model_train_step_matches():
    model = fp.Sequential(NETS["dropout-act"]("float64"), loss="cross_entropy",
                          optimizer=fp.optim.Adam(lr=0.01), dtype="float64", seed=1)
    ref = R.ReferenceModel.from_model(model)
    X, y = data(10, 5, 2), _targets(10)
    for _ in range(3):
        want = model.train_step(X, y)
        close(ref.train_step(X, labels=y, training=True), want, np.float64)
    close(ref.params, model.params, np.float64)


def test_from_model_refuses_a_kind_without_twin(monkeypatch):
    model = _model("act-first", np.float64)
    monkeypatch.delitem(R.REFERENCE_LAYERS, "Activation")
    with pytest.raises(TypeError, match=r"layers\[0\].*Activation"):
        R.ReferenceModel.from_model(model)
