"""fastprop.trace: the arrays of one traced pass equal the textbook path of the model
(model.forward / model.backward), nothing in the model changes, bad input is refused as by
train_step."""
import io as _io

import numpy as np
import pytest

import fastprop as fp
from fastprop import io as fpio
from fastprop.reference import _dense as ref, _norm as refnorm

from conftest import assert_close

# (hidden activations, output activation, loss): every activation and every loss appears
CASES = [
    (("relu", "tanh"), "softmax", "cross_entropy"),
    (("leaky_relu", "sigmoid"), "sigmoid", "binary_cross_entropy"),
    (("elu", "gelu"), "identity", "mse"),
    (("silu", "softplus"), "tanh", "huber"),
    (("relu", "identity"), "softplus", "mae"),
]


def _model(hidden, out_act, loss, dtype, dropout=0.25, seed=0):
    layers = [fp.Dense(5, 7, activation=hidden[0], seed=seed), fp.Dropout(dropout),
              fp.Dense(7, 6, activation=hidden[1], seed=seed + 1),
              fp.Dense(6, 3, activation=out_act, seed=seed + 2)]
    return fp.Sequential(layers, loss=loss, optimizer=fp.optim.Adam(lr=1e-2), dtype=dtype,
                         seed=seed)


def _data(loss, n=11, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5))
    if loss == "cross_entropy":
        y = rng.integers(0, 3, n)
    elif loss == "binary_cross_entropy":
        y = (rng.random((n, 3)) > 0.5).astype(float)
    else:
        y = rng.standard_normal((n, 3))
    return X, y


def _dense(model):
    return [layer for layer in model.layers if isinstance(layer, fp.Dense)]


@pytest.mark.parametrize("hidden, out_act, loss", CASES)
@pytest.mark.parametrize("weighted", [False, True])
def test_trace_equals_the_textbook_path(hidden, out_act, loss, weighted, dtype):
    model = _model(hidden, out_act, loss, dtype)
    X, y = _data(loss)
    w = np.linspace(0.5, 2.0, len(X)) if weighted else None
    model.train_step(X, y)                     # trained weights, non-zero biases
    tr = fp.trace(model, X, y, sample_weight=w)

    model.forward(X, training=False)
    model.backward(y, sample_weight=w)
    assert tr.loss == pytest.approx(model.last_loss, rel=10 * float(np.finfo(dtype).eps))
    dense_traces = [t for t in tr.layers if t.kind == "Dense"]
    for t, layer, (z, a) in zip(dense_traces, _dense(model), model.caches):
        assert t.z.dtype == dtype and t.dW.dtype == dtype
        assert_close(t.z, z, dtype)
        assert_close(t.a, a, dtype)
        assert_close(t.dW, layer.dW, dtype)
        assert_close(t.db, layer.db, dtype)
        assert_close(t.W, layer.W, dtype)
        assert_close(t.b, layer.b, dtype)
    # the chain: each layer's input is the previous output, its da the next one's da_prev
    assert_close(tr.layers[0].a_prev, X.astype(dtype), dtype)
    for prev, nxt in zip(tr.layers, tr.layers[1:]):
        np.testing.assert_array_equal(nxt.a_prev, prev.a)
        np.testing.assert_array_equal(prev.da, nxt.da_prev)
    drop = tr.layers[1]
    assert drop.kind == "Dropout" and drop.mask is None       # inference mode
    np.testing.assert_array_equal(drop.a, drop.a_prev)
    np.testing.assert_array_equal(drop.da_prev, drop.da)


@pytest.mark.parametrize("hidden, out_act, loss", CASES)
def test_trace_blocks_against_the_numpy_reference(hidden, out_act, loss):
    """Every Dense record is the reference block on the recorded arrays (float64)."""
    model = _model(hidden, out_act, loss, "float64")
    X, y = _data(loss)
    tr = fp.trace(model, X, y)
    last = tr.layers[-1]
    for t in tr.layers:
        if t.kind != "Dense":
            continue
        act = t.layer.activation
        a, cache = ref.dense_forward(t.a_prev, t.W, t.b, act)
        assert_close(t.z, cache.z)
        assert_close(t.a, a)
        if t is last:
            # dz of the output layer is the loss's fused gradient; the block's linear part
            # takes it from there
            da_prev, dW, db = ref.dense_backward(t.dz, cache._replace(activation="identity"))
        else:
            dz = ref.activation_backward(act, t.z, t.a, t.da)
            assert_close(t.dz, dz)
            da_prev, dW, db = ref.dense_backward(t.da, cache)
        assert_close(t.dW, dW)
        assert_close(t.db, db)
        assert_close(t.da_prev, da_prev)
    # da[L] = dL/da[L]: the output activation's derivative applied to it gives dz[L]
    assert np.all(np.isfinite(last.da))
    assert_close(ref.activation_backward(last.layer.activation, last.z, last.a, last.da),
                 last.dz, rtol=1e-9)


def test_cross_entropy_output_gradient_by_hand():
    model = fp.Sequential([fp.Dense(2, 3, activation="softmax", seed=0)], dtype="float64")
    X = np.array([[1.0, -2.0], [0.5, 0.25]])
    y = np.array([2, 0])
    tr = fp.trace(model, X, y)
    t = tr.layers[0]
    p = np.exp(t.z - t.z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    onehot = np.eye(3)[y]
    assert_close(t.a, p)
    assert_close(t.dz, (p - onehot) / 2)
    assert_close(t.da, -onehot / (2 * p))
    assert tr.loss == pytest.approx(-np.mean(np.log(p[[0, 1], y])), rel=1e-13)


def test_input_gradient_against_finite_differences():
    """da[0] (the gradient with respect to X, which model.backward does not give)."""
    model = _model(("tanh", "sigmoid"), "softmax", "cross_entropy", "float64", dropout=0.5)
    X, y = _data("cross_entropy", n=6)
    tr = fp.trace(model, X, y)
    eps = 1e-6
    num = np.empty_like(X)
    for i in range(X.shape[0]):
        for j in range(X.shape[1]):
            Xp, Xm = X.copy(), X.copy()
            Xp[i, j] += eps
            Xm[i, j] -= eps
            num[i, j] = (model.evaluate(Xp, y)["loss"] - model.evaluate(Xm, y)["loss"]) / (2 * eps)
    np.testing.assert_allclose(tr.layers[0].da_prev, num, rtol=1e-6, atol=1e-9)


def test_nothing_in_the_model_changes(dtype):
    model = _model(("relu", "tanh"), "softmax", "cross_entropy", dtype)
    X, y = _data("cross_entropy")
    X2, y2 = _data("cross_entropy", n=7, seed=1)
    model.train_step(X, y)
    model.forward(X2, training=True)           # a cached textbook forward pass, with dropout
    caches = [(z.copy(), a.copy()) for z, a in model.caches]
    model.backward(y2)
    grads = model.grads.copy()
    saved = fpio.to_bytes(model)               # params, optimizer state, RNG state
    rng = model.get_rng_state().copy()
    views = [(layer.W, layer.dW) for layer in _dense(model)]

    tr = fp.trace(model, X, y)
    assert tr.loss > 0

    assert fpio.to_bytes(model) == saved
    np.testing.assert_array_equal(model.get_rng_state(), rng)
    np.testing.assert_array_equal(model.grads, grads)
    for (z, a), (z2, a2) in zip(caches, model.caches):
        np.testing.assert_array_equal(z, z2)
        np.testing.assert_array_equal(a, a2)
    for layer, (W, dW) in zip(_dense(model), views):
        assert layer.W is W and layer.dW is dW          # still views of the model's buffers
        assert np.shares_memory(layer.dW, model.grads)
    model.backward(y2)                          # the cached forward pass is still usable
    np.testing.assert_array_equal(model.grads, grads)
    # and a second trace of the same batch is the same
    tr2 = fp.trace(model, X, y)
    for t1, t2 in zip(tr.layers, tr2.layers):
        for (name, v1), (_, v2) in zip(t1.items(), t2.items()):
            if v1 is not None:
                np.testing.assert_array_equal(v1, v2, err_msg=name)


def test_records_are_read_only_copies():
    model = _model(("relu", "tanh"), "softmax", "cross_entropy", "float64")
    X, y = _data("cross_entropy")
    tr = fp.trace(model, X, y)
    t = tr.layers[0]
    with pytest.raises(ValueError):
        t.W[0, 0] = 1.0
    assert not np.shares_memory(t.W, model.params)
    assert t.names == ("W", "b", "a_prev", "z", "a", "da", "dz", "dW", "db", "da_prev")
    assert tr.layers[1].names == ("a_prev", "mask", "a", "da", "da_prev")
    assert t["z"] is t.z
    with pytest.raises(AttributeError, match="no array 'mask'"):
        t.mask
    assert "Dense" in repr(t) and "cross_entropy" in repr(tr)
    np.testing.assert_array_equal(tr.output, tr.layers[-1].a)


def test_summary_and_health():
    model = fp.Sequential([fp.Dense(4, 5, activation="relu", seed=0),
                           fp.Dense(5, 2, activation="softmax", seed=1)],
                          optimizer=fp.optim.SGD(lr=0.5), dtype="float64")
    b = model.layers[0].b.copy()
    b[[1, 3]] = -100.0                          # two dead ReLUs
    model.layers[0].b = b
    X = np.random.default_rng(0).standard_normal((8, 4))
    y = np.arange(8) % 2
    tr = fp.trace(model, X, y)
    health = tr.health()
    assert [h["index"] for h in health] == [1, 2]
    assert health[0]["dead_units"] == 2 and health[0]["units"] == 5
    t = tr.layers[0]
    assert health[0]["update_ratio"] == pytest.approx(
        0.5 * np.linalg.norm(t.dW) / np.linalg.norm(t.W))
    assert health[0]["zero_fraction"] == pytest.approx(np.mean(t.a == 0))
    out = _io.StringIO()
    text = tr.summary(file=out)
    assert out.getvalue().strip() == text.strip()
    for label in ("W[1]", "a_prev = a[0]", "z[2]", "dz[2]", "dW[1]", "db[2]", "da_prev = da[1]",
                  "|lr*dW|/|W|", "dead units 2 of 5", "(8, 5)", "norm"):
        assert label in text, label
    row = next(line for line in text.splitlines() if "dW[1]" in line)
    assert f"{np.linalg.norm(t.dW):.4g}" in row


@pytest.mark.parametrize("bad, kind", [
    (lambda X, y: (X[:, :4], y), ValueError),                  # wrong width
    (lambda X, y: (X, np.where(y == 0, 3, y)), ValueError),    # label out of range
    (lambda X, y: (X[:0], y[:0]), ValueError),                 # empty batch
    (lambda X, y: (np.where(X > 1, np.nan, X), y), ValueError),  # non-finite
    (lambda X, y: (X, y[:-1]), ValueError),                    # length mismatch
    (lambda X, y: (X.astype(complex), y), TypeError),
])
def test_bad_input_gives_the_errors_of_train_step(bad, kind):
    model = _model(("relu", "tanh"), "softmax", "cross_entropy", "float32")
    X, y = _data("cross_entropy")
    Xb, yb = bad(X, y)
    saved = fpio.to_bytes(model)
    with pytest.raises(kind) as expected:
        model.train_step(Xb, yb)
    with pytest.raises(kind) as got:
        fp.trace(model, Xb, yb)
    assert str(got.value) == str(expected.value)
    assert fpio.to_bytes(model) == saved


def test_bad_model_and_weights():
    with pytest.raises(TypeError, match="model must be a fastprop Sequential"):
        fp.trace(fp.Dense(2, 2), np.ones((1, 2)), np.ones((1, 2)))
    model = _model(("relu", "tanh"), "softmax", "cross_entropy", "float64")
    X, y = _data("cross_entropy")
    with pytest.raises(ValueError, match="sample_weight"):
        fp.trace(model, X, y, sample_weight=-np.ones(len(X)))


# -- the layer kinds Activation, BatchNorm, LayerNorm ------------------------------------------
def _norm_model(dtype, out="activation"):
    """Dense, BatchNorm, Activation, Dense, LayerNorm, Dense (identity) + Activation(softmax)
    (or a Dense softmax output); trained a few steps so that the running statistics, gamma
    and beta are not their initial values."""
    layers = [fp.Dense(5, 7, seed=0), fp.BatchNorm(momentum=0.3), fp.Activation("tanh"),
              fp.Dense(7, 6, activation="relu", seed=1), fp.LayerNorm()]
    layers += ([fp.Dense(6, 3, seed=2), fp.Activation("softmax")] if out == "activation"
               else [fp.Dense(6, 3, activation="softmax", seed=2)])
    model = fp.Sequential(layers, optimizer=fp.optim.Adam(lr=5e-2), dtype=dtype, seed=0)
    X, y = _data("cross_entropy", n=12, seed=3)
    for _ in range(3):
        model.train_step(X, y)
    return model


@pytest.mark.parametrize("out", ["activation", "dense"])
def test_new_kinds_equal_the_model(dtype, out):
    model = _norm_model(dtype, out)
    X, y = _data("cross_entropy")
    w = np.linspace(0.5, 2.0, len(X))
    tr = fp.trace(model, X, y, sample_weight=w)
    expected_out = model.forward(X, training=False)
    model.backward(y, sample_weight=w)
    assert tr.loss == pytest.approx(model.last_loss, rel=10 * float(np.finfo(dtype).eps))
    assert_close(tr.output, expected_out, dtype)
    kinds = [t.kind for t in tr.layers]
    assert kinds[:5] == ["Dense", "BatchNorm", "Activation", "Dense", "LayerNorm"]
    for t, layer in zip(tr.layers, model.layers):
        assert t.layer is layer
        for name, arr in t.items():
            assert arr.dtype == dtype, (t.kind, name)
        if t.kind == "Dense":
            assert_close(t.dW, layer.dW, dtype)
            assert_close(t.db, layer.db, dtype)
        elif t.kind in ("BatchNorm", "LayerNorm"):
            assert_close(t.dgamma, layer.dgamma, dtype)
            assert_close(t.dbeta, layer.dbeta, dtype)
            np.testing.assert_array_equal(t.gamma, layer.gamma)
            np.testing.assert_array_equal(t.beta, layer.beta)
    for prev, nxt in zip(tr.layers, tr.layers[1:]):
        np.testing.assert_array_equal(nxt.a_prev, prev.a)
        np.testing.assert_array_equal(prev.da, nxt.da_prev)

    bn, act, ln = tr.layers[1], tr.layers[2], tr.layers[4]
    assert bn.names == ("gamma", "beta", "a_prev", "mean", "var", "x_hat", "a", "da", "dgamma",
                        "dbeta", "da_prev")
    assert ln.names == bn.names
    assert act.names == ("a_prev", "z", "a", "da", "dz", "da_prev")
    # BatchNorm in inference mode: the running statistics normalize
    np.testing.assert_array_equal(bn.mean, model.layers[1].running_mean)
    np.testing.assert_array_equal(bn.var, model.layers[1].running_var)
    assert not np.allclose(bn.mean, 0) and not np.allclose(bn.var, 1)
    eps = model.layers[1].eps
    assert_close(bn.x_hat, (bn.a_prev - bn.mean) / np.sqrt(bn.var + eps), dtype)
    assert_close(bn.a, bn.gamma * bn.x_hat + bn.beta, dtype)
    # LayerNorm: per-row statistics of its input
    assert ln.mean.shape == ln.var.shape == (len(X),)
    x64 = ln.a_prev.astype(np.float64)
    assert_close(ln.mean, x64.mean(axis=1), dtype)
    assert_close(ln.var, x64.var(axis=1), dtype)
    assert_close(ln.x_hat, (x64 - ln.mean[:, None]) / np.sqrt(ln.var[:, None] + ln.layer.eps),
                 dtype)
    # Activation: z is its input, dz = da * g'(z) is what it passes back
    np.testing.assert_array_equal(act.z, act.a_prev)
    assert_close(act.a, np.tanh(act.z.astype(np.float64)), dtype)
    assert_close(act.dz, act.da * (1 - act.a.astype(np.float64) ** 2), dtype)
    np.testing.assert_array_equal(act.da_prev, act.dz)
    if out == "activation":
        last = tr.layers[-1]                          # the loss's fused gradient enters here
        assert last.kind == "Activation" and last.layer.activation == "softmax"
        onehot = np.eye(3)[y]
        assert_close(last.dz, w[:, None] / w.sum() * (last.a - onehot), dtype)
        np.testing.assert_array_equal(tr.layers[-2].da, last.dz)


def test_new_kinds_equal_the_standalone_layers_and_the_reference(dtype):
    """Each record is the standalone layer's forward / backward (on fresh copies) and the
    NumPy reference twin (inference mode) on the recorded arrays."""
    model = _norm_model(dtype)
    X, y = _data("cross_entropy")
    tr = fp.trace(model, X, y)
    for t in tr.layers:
        if t.kind == "Activation":
            layer = fp.Activation(t.layer.activation)
            a, cache = layer.forward(t.a_prev)
            np.testing.assert_array_equal(a, t.a)
            if t is not tr.layers[-1]:
                np.testing.assert_array_equal(layer.backward(t.da, cache)[0], t.da_prev)
                assert_close(t.dz, ref.activation_backward(t.layer.activation, t.z, t.a, t.da),
                             dtype)
        elif t.kind in ("BatchNorm", "LayerNorm"):
            layer = type(t.layer).from_config(t.layer.get_config(), dtype=dtype)
            layer.set_weights(t.layer.get_weights())
            a, cache = layer.forward(t.a_prev, training=False)
            np.testing.assert_array_equal(a, t.a)
            np.testing.assert_array_equal(cache.x_hat, t.x_hat)
            da_prev, dgamma, dbeta = layer.backward(t.da, cache)
            np.testing.assert_array_equal(da_prev, t.da_prev)
            np.testing.assert_array_equal(dgamma, t.dgamma)
            np.testing.assert_array_equal(dbeta, t.dbeta)
            if t.kind == "BatchNorm":
                ra, rcache, _ = refnorm.batchnorm_forward(t.a_prev, t.gamma, t.beta, t.mean,
                                                          t.var, eps=t.layer.eps)
                rgrads = refnorm.batchnorm_backward(t.da, t.gamma, rcache)
            else:
                ra, rcache = refnorm.layernorm_forward(t.a_prev, t.gamma, t.beta, t.layer.eps)
                rgrads = refnorm.layernorm_backward(t.da, t.gamma, rcache)
            assert_close(t.a, ra, dtype)
            for got, want in zip((t.da_prev, t.dgamma, t.dbeta), rgrads):
                assert_close(got, want, dtype)


def test_new_kinds_against_torch():
    torch = pytest.importorskip("torch")
    model = _norm_model("float64")
    X, y = _data("cross_entropy")
    tr = fp.trace(model, X, y)
    for t in tr.layers:
        if t.kind not in ("BatchNorm", "LayerNorm"):
            continue
        width = t.gamma.shape[0]
        if t.kind == "BatchNorm":
            mod = torch.nn.BatchNorm1d(width, eps=t.layer.eps, dtype=torch.float64).eval()
            mod.running_mean.copy_(torch.from_numpy(t.mean.copy()))
            mod.running_var.copy_(torch.from_numpy(t.var.copy()))
        else:
            mod = torch.nn.LayerNorm(width, eps=t.layer.eps, dtype=torch.float64)
        with torch.no_grad():
            mod.weight.copy_(torch.from_numpy(t.gamma.copy()))
            mod.bias.copy_(torch.from_numpy(t.beta.copy()))
        x = torch.tensor(t.a_prev, requires_grad=True)
        out = mod(x)
        out.backward(torch.from_numpy(t.da.copy()))
        assert_close(t.a, out.detach().numpy())
        assert_close(t.da_prev, x.grad.numpy())
        assert_close(t.dgamma, mod.weight.grad.numpy())
        assert_close(t.dbeta, mod.bias.grad.numpy())
        if t.kind == "BatchNorm":
            np.testing.assert_array_equal(mod.running_mean.numpy(), t.mean)   # eval: unchanged


def test_new_kinds_input_gradient_against_finite_differences():
    """da[0] through BatchNorm (inference mode), Activation and LayerNorm: the derivative of
    model.evaluate's loss, which runs the same inference pass."""
    model = _norm_model("float64")
    X, y = _data("cross_entropy", n=4)
    tr = fp.trace(model, X, y)
    eps = 1e-6
    num = np.empty_like(X)
    for i in range(X.shape[0]):
        for j in range(X.shape[1]):
            Xp, Xm = X.copy(), X.copy()
            Xp[i, j] += eps
            Xm[i, j] -= eps
            num[i, j] = (model.evaluate(Xp, y)["loss"] - model.evaluate(Xm, y)["loss"]) / (2 * eps)
    np.testing.assert_allclose(tr.layers[0].da_prev, num, rtol=1e-6, atol=1e-9)


def test_new_kinds_nothing_in_the_model_changes(dtype):
    model = _norm_model(dtype)
    X, y = _data("cross_entropy")
    X2, y2 = _data("cross_entropy", n=7, seed=1)
    model.forward(X2, training=True)
    model.backward(y2)
    grads = model.grads.copy()
    saved = fpio.to_bytes(model)          # params, running statistics, optimizer state, RNG
    state = model.state.copy()
    bn, ln = model.layers[1], model.layers[4]
    views = [(layer.gamma, layer.dgamma, layer.running_mean if layer is bn else None)
             for layer in (bn, ln)]
    tr = fp.trace(model, X, y)
    assert tr.loss > 0
    assert fpio.to_bytes(model) == saved
    np.testing.assert_array_equal(model.state, state)
    np.testing.assert_array_equal(model.grads, grads)
    for layer, (gamma, dgamma, rm) in zip((bn, ln), views):
        assert layer.gamma is gamma and layer.dgamma is dgamma
        assert rm is None or layer.running_mean is rm
    model.backward(y2)                     # the cached training forward pass is still usable
    np.testing.assert_array_equal(model.grads, grads)
    tr2 = fp.trace(model, X, y)
    for t1, t2 in zip(tr.layers, tr2.layers):
        for (name, v1), (_, v2) in zip(t1.items(), t2.items()):
            if v1 is not None:
                np.testing.assert_array_equal(v1, v2, err_msg=name)


def test_new_kinds_summary():
    model = _norm_model("float64")
    X, y = _data("cross_entropy")
    text = fp.trace(model, X, y).summary(file=_io.StringIO())
    for label in ("2 BatchNorm", "3 Activation tanh", "5 LayerNorm", "7 Activation softmax",
                  "gamma[2]", "mean[2]", "var[5]", "x_hat[2]", "dgamma[5]", "dbeta[2]",
                  "da_prev = da[4]", "dz[3]", "(11, 7)", "(7,)", "(11,)"):
        assert label in text, label
    # the health lines stay per Dense layer
    assert "layer 1: |lr*dW|/|W|" in text and "layer 2: |lr" not in text
