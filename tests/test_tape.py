"""The compiled tape: each node kind (Dense, Dropout, Activation) in a model against the NumPy
reference and PyTorch, float32 / float64, finite differences; the fused plain-SGD path and the
unfused one agree over every node kind; the tape a model compiles."""
import numpy as np
import pytest

import fastprop as fp
from fastprop import reference as R
from fastprop._core._engine import NODE_KINDS as K

from conftest import assert_close

# layer lists (as factories) where Activation runs as a node of its own, and one where it fuses
NETS = {
    "act-after-relu": lambda: [fp.Dense(5, 7, activation="relu", seed=0),
                               fp.Activation("tanh"), fp.Dense(7, 3, seed=1),
                               fp.Activation("softmax")],
    "act-first": lambda: [fp.Activation("sigmoid"), fp.Dense(5, 6, activation="elu", seed=0),
                          fp.Dense(6, 3, activation="softmax", seed=1)],
    "act-after-dropout": lambda: [fp.Dense(5, 6, seed=0), fp.Dropout(0.3),
                                  fp.Activation("gelu"), fp.Activation("silu"),
                                  fp.Dense(6, 3, seed=1), fp.Dropout(0.2),
                                  fp.Activation("softmax")],
    "fused": lambda: [fp.Dense(5, 6, seed=0), fp.Activation("tanh"),
                      fp.Dense(6, 3, seed=1), fp.Activation("softmax")],
}
TAPES = {
    "act-after-relu": ["Dense", "Activation", "Dense"],     # the softmax fuses
    "act-first": ["Activation", "Dense", "Dense"],
    "act-after-dropout": ["Dense", "Dropout", "Activation", "Activation", "Dense", "Dropout",
                          "Activation"],
    "fused": ["Dense", "Dense"],
}


def _reference(layers, X, labels):
    """Loss and the gradient of every parameter (flat, the model's layout) in NumPy from the
    reference blocks, dropout off."""
    caches, a = [], X
    for layer in layers:
        if isinstance(layer, fp.Dense):
            a, cache = R.dense_forward(a, layer.W, layer.b, layer.activation)
            caches.append(("Dense", cache))
        elif isinstance(layer, fp.Activation):
            z, a = a, R.activation_forward(layer.activation, a)
            caches.append(("Activation", (layer.activation, z, a)))
    n, k = a.shape
    onehot = np.zeros_like(a)
    onehot[np.arange(n), labels] = 1
    loss = -np.mean(np.log(a[np.arange(n), labels]))
    da = -onehot / a / n                      # through the softmax like any activation
    grads = []
    for kind, cache in reversed(caches):
        if kind == "Dense":
            da, dW, db = R.dense_backward(da, cache)
            grads = [dW.ravel(), db] + grads
        else:
            name, z, out = cache
            da = R.activation_backward(name, z, out, da)
    return loss, np.concatenate(grads), a


def _data(n=9, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 5)), rng.integers(0, 3, n)


@pytest.mark.parametrize("net", sorted(NETS))
def test_the_tape_a_model_compiles(net):
    model = fp.Sequential(NETS[net]())
    assert [node[0] for node in model._engine.nodes] == [K[k] for k in TAPES[net]]
    dense = [i for i, node in enumerate(model._engine.nodes) if node[0] == K["Dense"]]
    assert model._engine.dense_nodes == dense
    assert [node[5] for node in model._engine.nodes if node[0] == K["Dense"]] == \
        [o[0] for o in model._offsets]


@pytest.mark.parametrize("net", sorted(NETS))
def test_nodes_in_a_model_match_the_reference(net, dtype):
    X, y = _data()
    model = fp.Sequential(NETS[net](), dtype=dtype.name)
    ref_loss, ref_grads, ref_out = _reference(model.layers, X.astype(dtype), y)
    assert_close(model.predict(X), ref_out, dtype)
    out = model.forward(X, training=False)
    assert_close(out, ref_out, dtype)
    grads = model.backward(y)
    assert_close(model.last_loss, ref_loss, dtype)
    assert_close(grads, ref_grads, dtype, rtol=1e-4 if dtype == np.float32 else 1e-11)
    scores = model.evaluate(X, y)               # predict's z of the output node: same loss
    assert_close(scores["loss"], ref_loss, dtype)
    assert scores["accuracy"] == np.mean(np.argmax(ref_out, 1) == y)


@pytest.mark.parametrize("net", sorted(NETS))
def test_nodes_in_a_model_pass_gradcheck(net):
    X, y = _data()
    assert fp.gradcheck(fp.Sequential(NETS[net](), dtype="float64"), X, y) < 1e-6


@pytest.mark.parametrize("net", sorted(NETS))
def test_nodes_in_a_model_match_torch(net):
    torch = pytest.importorskip("torch")
    fns = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
           "elu": torch.nn.functional.elu, "gelu": torch.nn.functional.gelu,
           "silu": torch.nn.functional.silu, "identity": lambda t: t,
           "softmax": lambda t: torch.softmax(t, dim=1)}
    X, y = _data(12, seed=3)
    model = fp.Sequential(NETS[net](), dtype="float64")
    params, h = [], torch.tensor(X)
    for layer in model.layers:
        if isinstance(layer, fp.Dense):
            W = torch.tensor(layer.W.copy(), requires_grad=True)
            b = torch.tensor(layer.b.copy(), requires_grad=True)
            params += [W, b]
            h = fns[layer.activation](h @ W + b)
        elif isinstance(layer, fp.Activation):
            h = fns[layer.activation](h)
    loss = torch.nn.functional.nll_loss(torch.log(h), torch.tensor(y))
    loss.backward()
    model.forward(X, training=False)
    grads = model.backward(y)
    assert abs(model.last_loss - loss.item()) < 1e-12 * max(1.0, loss.item())
    expect = np.concatenate([p.grad.numpy().ravel() for p in params])
    np.testing.assert_allclose(grads, expect, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("net", sorted(NETS))
def test_fused_sgd_and_the_unfused_update_agree_over_every_node_kind(net, dtype):
    # plain SGD runs fused into the backward loop (one GEMM per Dense updates W); SGD with a
    # clip norm too large to act runs the backward loop then the update: the same step
    X, y = _data(16)
    a = fp.Sequential(NETS[net](), optimizer=fp.optim.SGD(lr=0.1), dtype=dtype.name, seed=3)
    b = fp.Sequential(NETS[net](), optimizer=fp.optim.SGD(lr=0.1, clip_norm=1e30),
                      dtype=dtype.name, seed=3)
    for s in range(3):
        X, y = _data(16, seed=s)
        assert_close(a.train_step(X, y), b.train_step(X, y), dtype)
    assert_close(a.params, b.params, dtype, rtol=1e-5 if dtype == np.float32 else 1e-12)
    np.testing.assert_array_equal(a.get_rng_state(), b.get_rng_state())   # same masks drawn


def test_training_dropout_nodes_mask_and_backward_through_the_same_mask():
    # a Dropout node's backward multiplies by the mask its forward drew: the gradient of a
    # training forward equals the reference's with the mask applied as a fixed scaling
    X, y = _data(10)
    model = fp.Sequential([fp.Dense(5, 6, activation="tanh", seed=0), fp.Dropout(0.5),
                           fp.Activation("relu"), fp.Dense(6, 3, activation="softmax",
                                                           seed=1)], dtype="float64", seed=1)
    model.forward(X, training=True)
    dropped = model._engine.node_buffers(1, 10)[1].copy()
    h = np.tanh(X @ model.layers[0].W + model.layers[0].b)
    kept = dropped != 0
    np.testing.assert_allclose(dropped[kept], 2 * h[kept], rtol=1e-13)
    mask = np.where(kept, 2.0, 0.0)
    grads = model.backward(y).copy()
    W0, b0, W1, b1 = (model.layers[0].W, model.layers[0].b, model.layers[3].W,
                      model.layers[3].b)
    a1, c1 = R.dense_forward(X, W0, b0, "tanh")
    r = np.maximum(a1 * mask, 0)
    a2, c2 = R.dense_forward(r, W1, b1, "softmax")
    n = X.shape[0]
    dz = a2.copy()
    dz[np.arange(n), y] -= 1
    dz /= n
    c2 = c2._replace(activation="identity")
    dr, dW1, db1 = R.dense_backward(dz, c2)
    da1 = np.where(a1 * mask > 0, dr, 0) * mask
    _, dW0, db0 = R.dense_backward(da1, c1)
    np.testing.assert_allclose(grads, np.concatenate([dW0.ravel(), db0, dW1.ravel(), db1]),
                               rtol=1e-10, atol=1e-13)


def test_reference_model_twins_an_activation_node():
    # an Activation node has its reference twin (tests/test_reference_layers.py checks more)
    model = fp.Sequential(NETS["act-after-relu"]())
    ref = R.ReferenceModel.from_model(model)
    assert [type(t).__name__ for t in ref.layers] == TAPES["act-after-relu"]
    X = _data(9)[0]
    np.testing.assert_allclose(ref.predict(X), model.predict(X), rtol=1e-5, atol=1e-6)
    assert R.ReferenceModel.from_model(fp.Sequential(NETS["fused"]())).activations == \
        ["tanh", "softmax"]


def test_fit_metrics_read_the_output_node():
    # fit's running accuracy and mae read the output node's a (an Activation node here)
    X, y = _data(64, seed=5)
    model = fp.Sequential(NETS["act-after-relu"](), optimizer=fp.optim.SGD(lr=0.0),
                          seed=0, metrics=["mae"])
    hist = model.fit(X, y, epochs=1, batch_size=64, shuffle=False, verbose=0)
    out = model.predict(X)
    assert hist.history["accuracy"][0] == pytest.approx(np.mean(np.argmax(out, 1) == y))
    onehot = np.eye(3)[y]
    assert hist.history["mae"][0] == pytest.approx(np.mean(np.abs(out - onehot)), rel=1e-5)


# -- one implementation: a layer on its own runs the model's node code (a one-node tape) --------
def test_standalone_activation_is_the_models_node_bit_for_bit(dtype):
    X, _ = _data(11)
    X = X.astype(dtype)
    model = fp.Sequential(NETS["act-after-relu"](), dtype=dtype.name)
    model.forward(X, training=False)
    h = model._engine.node_buffers(0, 11)[1]
    a, cache = fp.Activation("tanh").forward(h)
    np.testing.assert_array_equal(a, model._engine.node_buffers(1, 11)[1])
    assert model._engine.node_buffers(1, 11)[0] is not None    # z of the node: its input
    np.testing.assert_array_equal(model._engine.node_buffers(1, 11)[0], h)


def test_standalone_dropout_draws_the_models_masks(dtype):
    # one generator: a Dropout layer on its own with the model's stream state draws the mask
    # the model's Dropout node draws (before the tape, standalone masks came from NumPy)
    X, y = _data(13)
    X = X.astype(dtype)
    model = fp.Sequential([fp.Dropout(0.4), fp.Dense(5, 3, activation="softmax", seed=0)],
                          dtype=dtype.name, seed=7)
    layer = fp.Dropout(0.4)
    layer._state[...] = model.get_rng_state()
    a, cache = layer.forward(X, training=True)
    model.forward(X, training=True)
    np.testing.assert_array_equal(a, model._engine.node_buffers(0, 13)[1])
    da = np.random.default_rng(1).standard_normal(a.shape).astype(dtype)
    assert set(np.unique(cache.mask)) == {0, dtype.type(1 / 0.6)}
    np.testing.assert_array_equal(cache.mask != 0, a != 0)
    np.testing.assert_array_equal(layer.backward(da, cache), da * cache.mask)


def test_keras_style_add_of_an_activation_node():
    # model.add(Activation) after a relu Dense: a node of its own, same numbers as the list
    X, y = _data(9)
    m = fp.Sequential([fp.Dense(5, 7, activation="relu", seed=0)], dtype="float64")
    m.add(fp.Activation("tanh"))
    m.add(fp.Dense(3, activation="softmax", seed=1))
    assert [node[0] for node in m._engine.nodes] == [K["Dense"], K["Activation"], K["Dense"]]
    ref_loss, ref_grads, ref_out = _reference(m.layers, X, y)
    np.testing.assert_allclose(m.predict(X), ref_out, rtol=1e-12)
    m.forward(X, training=False)
    np.testing.assert_allclose(m.backward(y), ref_grads, rtol=1e-10, atol=1e-14)
