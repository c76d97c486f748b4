"""The layer protocol (fp.Layer, add_param / add_state, the registry), layer ownership, the
standalone Activation kind (alone and in a model, against the reference and PyTorch)."""
import copy
import pickle

import numpy as np
import pytest

import fastprop as fp
from fastprop import reference as R
from fastprop.layers import LAYERS, get_layer_class

from conftest import assert_close

ACTS = ["identity", "relu", "leaky_relu", "elu", "gelu", "sigmoid", "tanh", "softplus", "silu",
        "softmax"]


class Scale(fp.Layer):
    """A test kind: a = a_prev * w (per column), with a running-count state buffer."""

    def __init__(self, n):
        self.add_param("w", (n,), init="ones", dtype="float64")
        self.add_state("count", 1, dtype="float64")

    def build(self, n_in):
        return n_in


def test_builtin_kinds_are_registered_layers():
    for cls in (fp.Dense, fp.Dropout, fp.Activation):
        assert issubclass(cls, fp.Layer)
        assert LAYERS[cls.__name__] is cls and get_layer_class(cls.__name__) is cls
    with pytest.raises(ValueError, match="unknown layer kind 'Nope'"):
        get_layer_class("Nope")


def test_register_layer_is_a_decorator_and_checks():
    @fp.register_layer
    class ProtoKindA(fp.Layer):
        pass
    assert LAYERS["ProtoKindA"] is ProtoKindA
    assert fp.register_layer(ProtoKindA) is ProtoKindA          # again: harmless
    other = type("ProtoKindA", (fp.Layer,), {})
    with pytest.raises(ValueError, match="already registered"):
        fp.register_layer(other)
    assert LAYERS["ProtoKindA"] is ProtoKindA
    for bad in (int, object(), "Dense"):
        with pytest.raises(TypeError, match="subclass of fastprop.Layer"):
            fp.register_layer(bad)


def test_add_param_and_add_state_declare_in_order():
    s = Scale(3)
    assert s.param_shapes == {"w": (3,)} and s.state_shapes == {"count": (1,)}
    assert s.n_params == 3 and s.n_state == 1
    np.testing.assert_array_equal(s._w, [1.0, 1.0, 1.0])
    assert s.parameters() == [s._w] and s.states() == [s._count]
    d = fp.Dense(4, 3, dtype="float64", seed=0)
    assert d.param_shapes == {"W": (4, 3), "b": (3,)} and d.state_shapes == {}
    assert d.n_params == 15 and d.n_state == 0
    assert d.parameters()[0] is d.W and d.parameters()[1] is d.b


@pytest.mark.parametrize("args,exc,match", [
    (("w", (3,)), ValueError, "already declares 'w'"),
    (("9x", (3,)), ValueError, "identifier"),
    (("v", ()), TypeError, "non-empty tuple"),
    (("v", (0,)), ValueError, "shape of 'v'"),
    (("v", (2,), "glorot_uniform"), ValueError, "2-D shape"),
    (("v", (2,), "nope"), ValueError, "init must be one of"),
    (("v", (2,), [1.0, 2.0, 3.0]), ValueError, r"has shape \(3,\), expected \(2,\)"),
])
def test_add_param_refuses_bad_declarations(args, exc, match):
    s = Scale(3)
    with pytest.raises(exc, match=match):
        s.add_param(*args)
    assert s.param_shapes == {"w": (3,)}                       # nothing declared


def test_add_param_initializers_and_arrays():
    s = Scale(2)
    v = s.add_param("v", (3, 4), init="he_normal", rng=np.random.default_rng(0))
    assert v.shape == (3, 4) and v.dtype == np.float32 and np.all(v != 0)
    u = s.add_param("u", 2, init=[5, 6])
    np.testing.assert_array_equal(u, [5.0, 6.0])


def test_unregistered_or_uncompiled_kinds_are_refused_at_build():
    class Unregistered(fp.Dense):
        pass
    with pytest.raises(TypeError, match=r"layers\[1\].*Unregistered.*not registered"):
        fp.Sequential([fp.Dense(3, 4), Unregistered(4, 2)])

    @fp.register_layer
    class ProtoBypass(fp.Dense):
        def forward(self, a_prev, training=False):
            return super().forward(a_prev * 2)
    with pytest.raises(TypeError, match=r"layers\[0\].*ProtoBypass overrides Dense.forward"):
        fp.Sequential([ProtoBypass(3, 2)])

    fp.register_layer(Scale)
    with pytest.raises(TypeError, match=r"layers\[1\].*no node for the layer kind Scale"):
        fp.Sequential([fp.Dense(3, 3), Scale(3)])
    with pytest.raises(TypeError, match=r"layers\[0\] must be a fastprop layer"):
        fp.Sequential([object()])


def test_registered_subclass_runs_as_its_kind_and_round_trips(tmp_path):
    @fp.register_layer
    class ProtoHeDense(fp.Dense):
        def __init__(self, n_in, n_out, **kw):
            kw.setdefault("init", "he_normal")
            super().__init__(n_in, n_out, **kw)
    model = fp.Sequential([ProtoHeDense(3, 4, seed=0, activation="relu"), fp.Dense(4, 2)],
                          seed=0)
    cfg = model.get_config()
    assert cfg["layers"][0]["type"] == "ProtoHeDense"
    X = np.random.default_rng(0).standard_normal((5, 3))
    path = tmp_path / "m.fpz"
    model.save(path)
    back = fp.load(path)
    assert type(back.layers[0]) is ProtoHeDense
    np.testing.assert_array_equal(back.predict(X), model.predict(X))


def test_model_parameters_are_views_and_state_is_a_flat_buffer(dtype):
    d1, d2 = fp.Dense(3, 4, seed=0), fp.Dense(4, 2, seed=1)
    W1 = d1.W.astype(dtype)
    model = fp.Sequential([d1, fp.Dropout(0.1), d2], dtype=dtype)
    assert np.shares_memory(d1.W, model.params) and np.shares_memory(d2.b, model.params)
    assert np.shares_memory(d1.dW, model.grads)
    np.testing.assert_array_equal(d1.W, W1)
    np.testing.assert_array_equal(model.params[:12].reshape(3, 4), W1)  # W[0] first, then b[0]
    assert model.state.shape == (0,) and model.state.dtype == dtype
    with pytest.raises(AttributeError):
        model.state = np.zeros(0)


def test_a_layer_belongs_to_one_model():
    d1, d2 = fp.Dense(3, 4, seed=0), fp.Dense(4, 2, seed=1)
    first = fp.Sequential([d1, d2], seed=0)
    X = np.random.default_rng(0).standard_normal((6, 3))
    want = first.predict(X)
    params = first.params.copy()
    with pytest.raises(ValueError, match="already belongs to another model"):
        fp.Sequential([fp.Dense(3, 4), fp.Dense(4, 4), d2])
    # the failed call changed nothing: d2 is still the first model's
    assert np.shares_memory(d2.W, first.params)
    np.testing.assert_array_equal(first.params, params)
    np.testing.assert_array_equal(first.predict(X), want)
    # a failed build releases the layers it claimed
    fresh = fp.Dense(3, 4)
    with pytest.raises(ValueError, match="broken"):
        fp.Sequential([fresh, fp.Dense(5, 2)])
    fp.Sequential([fresh, fp.Dense(4, 2)])
    # copies (deepcopy / pickle) own new layers; once a model is gone its layers are free
    for other in (copy.deepcopy(first), pickle.loads(pickle.dumps(first))):
        assert all(a is not b for a, b in zip(other.layers, first.layers))
        np.testing.assert_array_equal(other.predict(X), want)
    del first
    import gc
    gc.collect()
    fp.Sequential([d1, d2])


def test_config_goes_through_the_registry():
    model = fp.Sequential([fp.Dense(3, 4), fp.Activation("tanh"), fp.Dropout(0.25),
                           fp.Dense(4, 2)])
    cfg = model.get_config()
    assert [s["type"] for s in cfg["layers"]] == ["Dense", "Activation", "Dropout", "Dense"]
    assert cfg["layers"][1] == {"type": "Activation", "activation": "tanh"}
    back = fp.Sequential.from_config(cfg)
    assert [type(layer) for layer in back.layers] == [type(layer) for layer in model.layers]
    bad = copy.deepcopy(cfg)
    bad["layers"][1]["type"] = "NoSuchKind"
    with pytest.raises(ValueError, match=r"config\['layers'\]\[1\].*registered layer kind"):
        fp.Sequential.from_config(bad)
    bad = copy.deepcopy(cfg)
    bad["layers"][1]["extra"] = 1
    with pytest.raises(ValueError, match=r"config\['layers'\]\[1\].*Activation config"):
        fp.Sequential.from_config(bad)


# -- Activation: standalone ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ACTS)
def test_activation_layer_matches_reference(name, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 5)).astype(dtype)
    layer = fp.Activation(name)
    a, cache = layer.forward(x)
    assert a.dtype == dtype and a.shape == x.shape
    assert_close(a, R.activation_forward(name, x), dtype)
    da = rng.standard_normal((7, 5)).astype(dtype)
    (da_prev,) = layer.backward(da, cache)
    assert_close(da_prev, R.activation_backward(name, x, R.activation_forward(name, x), da),
                 dtype)


@pytest.mark.parametrize("name", ["relu", "gelu", "sigmoid", "tanh", "softplus", "silu",
                                  "elu", "leaky_relu", "softmax"])
def test_activation_layer_matches_torch(name):
    torch = pytest.importorskip("torch")
    fns = {"relu": torch.relu, "gelu": torch.nn.functional.gelu, "sigmoid": torch.sigmoid,
           "tanh": torch.tanh, "softplus": torch.nn.functional.softplus,
           "silu": torch.nn.functional.silu, "elu": torch.nn.functional.elu,
           "leaky_relu": torch.nn.functional.leaky_relu,
           "softmax": lambda t: torch.softmax(t, dim=1)}
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 4)) * 3
    da = rng.standard_normal((6, 4))
    layer = fp.Activation(name)
    a, cache = layer.forward(x)
    t = torch.tensor(x, requires_grad=True)
    out = fns[name](t)
    out.backward(torch.tensor(da))
    assert_close(a, out.detach().numpy(), np.float64)
    assert_close(layer.backward(da, cache)[0], t.grad.numpy(), np.float64)


def test_activation_layer_errors():
    with pytest.raises(ValueError, match="activation must be one of"):
        fp.Activation("nope")
    with pytest.raises(TypeError, match="activation must be a string"):
        fp.Activation(3)
    layer, other = fp.Activation("relu"), fp.Activation("relu")
    _, cache = layer.forward(np.ones((2, 3)))
    with pytest.raises(ValueError, match="different layer"):
        other.backward(np.ones((2, 3)), cache)
    with pytest.raises(ValueError, match="shape"):
        layer.backward(np.ones((3, 3)), cache)
    with pytest.raises(TypeError, match="ActivationCache"):
        layer.backward(np.ones((2, 3)), None)
    with pytest.raises(AttributeError):
        layer.activation = "tanh"


# -- Activation in a model: the same numbers as the Dense layer's own activation -------------------
@pytest.mark.parametrize("name", ["relu", "tanh", "softmax"])
def test_activation_in_a_model_equals_the_fused_dense(name, dtype):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((16, 5))
    y = rng.integers(0, 3, 16)
    out = "softmax" if name != "softmax" else None

    def build(split):
        hidden = [fp.Dense(5, 3 if name == "softmax" else 6,
                           activation="identity" if split else name, init="glorot_uniform",
                           seed=0)]
        if split:
            hidden.append(fp.Activation(name))
        tail = [] if name == "softmax" else [fp.Dense(6, 3, activation=out, seed=1)]
        return fp.Sequential(hidden + tail, optimizer=fp.optim.SGD(lr=0.1, momentum=0.9),
                             dtype=dtype, seed=0)
    fused, split = build(False), build(True)
    np.testing.assert_array_equal(split.params, fused.params)
    assert split.loss == fused.loss
    for _ in range(3):
        assert split.train_step(X, y) == fused.train_step(X, y)
    np.testing.assert_array_equal(split.params, fused.params)
    np.testing.assert_array_equal(split.predict(X), fused.predict(X))
    ref = R.ReferenceModel.from_model(split)
    assert_close(split.predict(X), ref.predict(X.astype(dtype)), dtype)


def test_activation_placement_is_free_and_the_output_activation_decides_the_loss():
    # An Activation is a node of the compiled tape: after an identity Dense it is fused into it,
    # anywhere else it runs as its own node (tests/test_tape.py checks the numbers). Before the
    # tape these placements raised ValueError.
    for layers in ([fp.Dense(3, 4, activation="relu"), fp.Activation("tanh"), fp.Dense(4, 2)],
                   [fp.Activation("tanh"), fp.Dense(3, 2)],
                   [fp.Dense(3, 4), fp.Dropout(0.1), fp.Activation("tanh"), fp.Dense(4, 2)]):
        assert fp.Sequential(layers).predict(np.ones((2, 3))).shape == (2, 2)
    with pytest.raises(ValueError, match="softmax"):   # the output activation decides the loss
        fp.Sequential([fp.Dense(3, 4), fp.Activation("tanh")], loss="cross_entropy")
    with pytest.raises(ValueError, match="softmax"):
        fp.Sequential([fp.Dense(3, 4, activation="softmax"), fp.Activation("tanh")],
                      loss="cross_entropy")
    assert fp.Sequential([fp.Dense(3, 4, activation="relu"), fp.Activation("softmax")]).loss \
        == "cross_entropy"


def test_activation_model_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((8, 4))
    y = rng.integers(0, 3, 8)
    model = fp.Sequential([fp.Dense(4, 5, seed=0), fp.Activation("tanh"),
                           fp.Dense(5, 3, seed=1), fp.Activation("softmax")], dtype="float64")
    assert model.loss == "cross_entropy"
    assert fp.gradcheck(model, X, y) < 1e-6


def test_activation_and_dropout_take_any_memory_layout():
    x = np.random.default_rng(0).standard_normal((6, 8))
    layouts = [np.asfortranarray(x), x.astype(">f8"), np.repeat(x, 2, axis=1)[:, ::2]]
    want, _ = fp.Activation("gelu").forward(x)
    for arr in layouts:
        got, cache = fp.Activation("gelu").forward(arr)
        assert got.dtype == np.float64 and got.dtype.isnative
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(arr, x)                  # never written to
    seed_mask = fp.Dropout(0.5, seed=1).forward(x, training=True)[1].mask
    for arr in layouts:
        a, cache = fp.Dropout(0.5, seed=1).forward(arr, training=True)
        np.testing.assert_array_equal(cache.mask, seed_mask)
        np.testing.assert_array_equal(a, x * seed_mask)


@pytest.mark.parametrize("act", ["relu", "tanh", "identity"])
def test_the_block_alone_and_in_a_model_are_one_implementation(act, dtype):
    # the same C-level dense block runs behind Dense.forward / backward and the model: bit
    # for bit the same numbers
    rng = np.random.default_rng(0)
    X = rng.standard_normal((7, 5)).astype(dtype)
    layer = fp.Dense(5, 4, activation=act, dtype=dtype, seed=0)
    alone = fp.Dense(5, 4, activation=act, dtype=dtype, seed=0)
    model = fp.Sequential([layer, fp.Dense(4, 2, dtype=dtype, seed=1)], loss="mse", dtype=dtype)
    a, cache = alone.forward(X)
    model.forward(X, training=False)
    np.testing.assert_array_equal(model.caches[0][0], cache.z)     # bit for bit
    np.testing.assert_array_equal(model.caches[0][1], a)
    y = rng.standard_normal((7, 2)).astype(dtype)
    model.backward(y)
    # the block alone, fed the gradient that reaches it in the model, gives the model's dW, db
    second = fp.Dense(4, 2, dtype=dtype, seed=1)
    out, c2 = second.forward(a)
    dz_out = (2.0 / y.size) * (out - y)                  # mse's gradient, as the loss kernel
    da, _, _ = second.backward(dz_out.astype(dtype), c2)
    _, dW, db = alone.backward(da, cache)
    assert_close(layer.dW, dW, dtype)
    assert_close(layer.db, db, dtype)
