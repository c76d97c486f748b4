"""BatchNorm and LayerNorm as nodes of the compiled tape: inside Sequential (train_step, fit,
predict, evaluate, save / load, pickle, EarlyStopping), against PyTorch over several Adam steps
in float32 and float64, running statistics as model state the optimizer never touches."""
import io
import pickle

import numpy as np
import pytest

import fastprop as fp
from conftest import assert_close


def _data(n=24, d=10, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) * 2 + 1, rng.integers(0, k, n)


def _layers(d=10, h=12, k=3):
    # BatchNorm after a ReLU (a Dense bias right before a BatchNorm gets a zero gradient,
    # which Adam turns into steps of rounding noise: runs would then differ by design)
    return [fp.Dense(d, h, activation="relu", seed=1), fp.BatchNorm(momentum=0.2),
            fp.Dense(h, h, seed=2), fp.LayerNorm(), fp.Activation("tanh"),
            fp.Dense(h, k, activation="softmax", seed=3)]


def _model(dtype, **kw):
    kw.setdefault("optimizer", fp.optim.Adam(lr=0.01))
    return fp.Sequential(_layers(), loss="cross_entropy", dtype=dtype.name, **kw)


def _torch_twin(torch, model):
    tdt = torch.float32 if model.dtype == np.float32 else torch.float64
    mods = []
    for layer in model.layers:
        if isinstance(layer, fp.Dense):
            lin = torch.nn.Linear(layer.n_in, layer.n_out).to(tdt)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(layer.W.T.copy()))
                lin.bias.copy_(torch.from_numpy(layer.b.copy()))
            mods.append(lin)
            if layer.activation == "relu":
                mods.append(torch.nn.ReLU())
        elif isinstance(layer, fp.BatchNorm):
            mods.append(torch.nn.BatchNorm1d(layer.n_in, momentum=layer.momentum,
                                             eps=layer.eps).to(tdt))
        elif isinstance(layer, fp.LayerNorm):
            mods.append(torch.nn.LayerNorm(layer.n_in, eps=layer.eps).to(tdt))
        elif isinstance(layer, fp.Activation):
            mods.append({"relu": torch.nn.ReLU(), "tanh": torch.nn.Tanh()}[layer.activation])
    return torch.nn.Sequential(*mods)    # logits: the softmax is in the loss


def test_model_matches_torch_over_several_adam_steps(dtype):
    torch = pytest.importorskip("torch")
    model = _model(dtype)
    net = _torch_twin(torch, model)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    for step in range(6):
        X, y = _data(seed=step)
        X = X.astype(dtype)
        net.train()
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(X)), torch.from_numpy(y))
        loss.backward()
        opt.step()
        assert_close(model.train_step(X, y), loss.item(), dtype, rtol=rtol)
    bn, ln = model.layers[1], model.layers[3]
    tbn, tln = net[2], net[4]
    assert_close(bn.running_mean, tbn.running_mean.numpy(), dtype, rtol=rtol)
    assert_close(bn.running_var, tbn.running_var.numpy(), dtype, rtol=rtol)
    assert_close(bn.gamma, tbn.weight.detach().numpy(), dtype, rtol=rtol)
    assert_close(ln.beta, tln.bias.detach().numpy(), dtype, rtol=rtol)
    assert_close(model.layers[0].W, net[0].weight.detach().numpy().T, dtype, rtol=rtol)
    net.eval()
    X, _ = _data(n=9, seed=99)
    X = X.astype(dtype)
    with torch.no_grad():
        expect = torch.softmax(net(torch.from_numpy(X)), dim=1).numpy()
    assert_close(model.predict(X), expect, dtype, rtol=rtol)      # running statistics
    assert_close(model.predict(X[:1]), expect[:1], dtype, rtol=rtol)


def test_state_is_the_running_statistics_and_the_optimizer_skips_it(dtype):
    model = _model(dtype)
    bn = model.layers[1]
    assert model.state.shape == (24,)
    np.testing.assert_array_equal(model.state[:12], 0)
    np.testing.assert_array_equal(model.state[12:], 1)
    n_params = model.n_params
    assert n_params == 10 * 12 + 12 + 2 * 12 + 12 * 12 + 12 + 2 * 12 + 12 * 3 + 3
    X, y = _data()
    X = X.astype(dtype)
    h = np.maximum(X @ model.layers[0].W + model.layers[0].b, 0)
    model.train_step(X, y)
    assert np.shares_memory(bn.running_mean, model.state)
    assert_close(bn.running_mean, 0.2 * h.mean(0), dtype, rtol=1e-4)
    assert_close(bn.running_var, 0.8 + 0.2 * h.var(0, ddof=1), dtype, rtol=1e-4)
    before = model.state.copy()
    model.predict(X)
    model.evaluate(X, y)
    np.testing.assert_array_equal(model.state, before)      # inference never moves them
    w = model.get_weights()
    assert [a.shape for a in w[2:6]] == [(12,)] * 4           # gamma, beta, mean, var
    np.testing.assert_array_equal(w[4], bn.running_mean)


def test_refused_step_changes_no_running_statistics():
    model = _model(np.dtype(np.float64))
    X, y = _data()
    model.train_step(X, y)
    state, params = model.state.copy(), model.params.copy()
    big = X.copy()
    big[0, 0] = 1e300          # finite input whose forward overflows: the step is refused
    with pytest.raises(ValueError):
        model.train_step(big, y)
    np.testing.assert_array_equal(model.state, state)
    np.testing.assert_array_equal(model.params, params)


def test_fit_save_load_pickle_and_early_stopping(tmp_path, dtype):
    X, y = _data(n=60)
    model = _model(dtype, seed=0)
    model.fit(X, y, epochs=3, batch_size=16, verbose=0)
    p = tmp_path / "m.fp"
    model.save(p)
    for other in (fp.load(p), pickle.loads(pickle.dumps(model))):
        np.testing.assert_array_equal(other.state, model.state)
        np.testing.assert_array_equal(other.params, model.params)
        np.testing.assert_array_equal(other.predict(X), model.predict(X))
        assert isinstance(other.layers[1], fp.BatchNorm) and other.layers[1].momentum == 0.2
    es = fp.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=1e9,
                                    restore_best_weights=True)
    start = model.state.copy()
    model.fit(X, y, epochs=4, batch_size=16, verbose=0, callbacks=[es])
    # epoch 1 is the best (min_delta: nothing later counts as better): its weights and
    # running statistics are restored, not those of the last epoch
    assert not np.array_equal(model.state, start)
    best = fp.Sequential(_layers(), loss="cross_entropy", dtype=dtype.name,
                         optimizer=fp.optim.Adam(lr=0.01), seed=0)
    best.fit(X, y, epochs=3, batch_size=16, verbose=0)
    best.fit(X, y, epochs=1, batch_size=16, verbose=0)
    np.testing.assert_array_equal(model.state, best.state)


def test_sgd_trains_the_norm_parameters(dtype):
    # plain SGD normally runs fused into the Dense backward; with norm nodes it runs the
    # update over every parameter, gamma and beta included
    model = _model(dtype, optimizer=fp.optim.SGD(lr=0.1))
    X, y = _data()
    model.train_step(X, y)
    assert not np.all(model.layers[1].gamma == 1) and not np.all(model.layers[3].beta == 0)


def test_keras_style_building_and_checks():
    X, y = _data()
    model = fp.Sequential(input_dim=10, seed=0)
    model.add(fp.Dense(12)).add(fp.BatchNorm()).add(fp.Activation("relu"))
    model.add(fp.Dense(3, activation="softmax"))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(X, y, epochs=1, verbose=0)
    assert model.layers[1].n_in == 12 and model.state.shape == (24,)
    with pytest.raises(ValueError, match="last layer"):
        fp.Sequential([fp.Dense(10, 3), fp.BatchNorm()], loss="mse")
    with pytest.raises(ValueError, match="width"):
        bn = fp.BatchNorm()
        bn.build(5)
        fp.Sequential([fp.Dense(10, 3), bn, fp.Dense(3, 2)], loss="mse")
    model = _model(np.dtype(np.float64))
    before = model.get_weights()
    with pytest.raises(ValueError, match="more than one"):
        model.train_step(X[:1], y[:1])
    with pytest.raises(ValueError, match="batch_size=8"):
        model.fit(X[:17], y[:17], batch_size=8, verbose=0)     # a last batch of one row
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    model.fit(X[:16], y[:16], batch_size=8, verbose=0)
    model.predict(X[:1])                                      # inference: one row is fine


def test_gradcheck_of_a_model_with_norm_nodes():
    model = _model(np.dtype(np.float64))
    X, y = _data(n=8)
    model.train_step(X, y)             # running statistics away from 0 / 1
    assert fp.gradcheck(model, X, y) < 1e-6


def test_summary_and_clear_refusals_elsewhere():
    model = _model(np.dtype(np.float32))
    text = model.summary(file=io.StringIO())
    assert "BatchNorm" in text and "state 24" in text and "LayerNorm" in text
    # fp.trace knows BatchNorm and LayerNorm now (tests/test_trace.py)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_reference_model_twin(training):
    model = _model(np.dtype(np.float64))
    X, y = _data(n=10)
    model.train_step(X, y)             # running statistics away from 0 / 1
    ref = fp.reference.ReferenceModel.from_model(model)
    assert [type(t).__name__ for t in ref.layers] == \
        ["Dense", "BatchNorm", "Dense", "LayerNorm", "Activation", "Dense"]
    X, y = _data(n=10, seed=5)
    assert_close(model.predict(X), ref.predict(X), np.float64, rtol=1e-12)
    loss = ref.loss_and_gradients(X, labels=y, training=training)
    model.forward(X, training=training)
    grads = model.backward(y)
    assert_close(model.last_loss, loss, np.float64, rtol=1e-12)
    assert_close(grads, ref.grads, np.float64, rtol=1e-10)
