"""Weight penalties per layer: ``Dense(..., l1=, l2=)`` (issue 11 item 7, Keras'
``kernel_regularizer`` on W, biases spared). The compiled step adds ``l1 * sum|W| + l2 * sum W^2``
to the loss it reports and ``l1 * sign(W) + 2 * l2 * W`` to dW (the fused plain-SGD path too),
against the reference twin, PyTorch with the penalty written into its loss, and finite
differences."""
import copy
import io
import pickle

import numpy as np
import pytest

import fastprop as fp
from conftest import assert_close


def _data(n=20, d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.integers(0, k, n)


def _layers(pen=True):
    kw0 = dict(l1=0.01, l2=0.02) if pen else {}
    kw2 = dict(l2=0.05) if pen else {}
    return [fp.Dense(5, 7, activation="tanh", seed=1, **kw0), fp.Dense(7, 6, seed=2),
            fp.Activation("relu"), fp.Dense(6, 3, activation="softmax", seed=3, **kw2)]


def _model(opt, dtype="float64", pen=True):
    return fp.Sequential(_layers(pen), loss="cross_entropy", optimizer=opt, dtype=dtype)


def _penalty(model):
    total = 0.0
    for layer in model.layers:
        if isinstance(layer, fp.Dense) and layer.trainable:
            W = layer.W.astype(np.float64)
            total += layer.l1 * np.abs(W).sum() + layer.l2 * (W * W).sum()
    return total


OPTIMIZERS = [
    lambda: fp.optim.SGD(lr=0.1),                          # the fused-SGD path
    lambda: fp.optim.SGD(lr=0.1, momentum=0.9),
    lambda: fp.optim.Adam(lr=0.01),
    lambda: fp.optim.RMSprop(lr=0.01),
]


@pytest.mark.parametrize("make_opt", OPTIMIZERS)
def test_steps_match_the_reference(make_opt, dtype):
    model = _model(make_opt(), dtype.name)
    ref = fp.reference.ReferenceModel.from_model(model)
    assert [getattr(t, "l2", None) for t in ref.layers] == [0.02, 0.0, 0.05]
    for step in range(4):
        X, y = _data(seed=step)
        X = X.astype(dtype)
        expect = ref.train_step(X, labels=y)
        assert_close(model.train_step(X, y), expect, dtype)
    rtol = 1e-4 if dtype == np.float32 else 1e-11
    assert_close(model.params, ref.params, dtype, rtol=rtol)


def test_penalty_moves_the_weights_and_the_loss():
    X, y = _data()
    pen, free = _model(fp.optim.SGD(lr=0.1)), _model(fp.optim.SGD(lr=0.1), pen=False)
    np.testing.assert_array_equal(pen.params, free.params)
    term = _penalty(pen)
    assert term > 0
    assert pen.layers[0].penalty() + pen.layers[3].penalty() == pytest.approx(term, rel=1e-14)
    assert pen.evaluate(X, y)["loss"] == pytest.approx(free.evaluate(X, y)["loss"] + term,
                                                       rel=1e-13)
    assert pen.train_step(X, y) == pytest.approx(free.train_step(X, y) + term, rel=1e-13)
    # layer 1 has no penalty: the same step; layer 0 does: shrunk further
    assert_close(pen.layers[1].W, free.layers[1].W, np.float64)
    assert_close(pen.layers[0].b, free.layers[0].b, np.float64)
    assert np.abs(pen.layers[0].W).sum() < np.abs(free.layers[0].W).sum()


def test_gradients_are_the_penalized_loss_gradients():
    X, y = _data()
    model = _model(fp.optim.Adam())
    assert fp.gradcheck(model, X, y) < 1e-6
    free = _model(fp.optim.Adam(), pen=False)
    model.compute_gradients(X, y)
    free.compute_gradients(X, y)
    W = model.layers[0].W
    assert_close(model.layers[0].dW, free.layers[0].dW + 0.01 * np.sign(W) + 0.04 * W,
                 np.float64)
    assert_close(model.layers[0].db, free.layers[0].db, np.float64)      # biases spared
    assert_close(model.layers[1].dW, free.layers[1].dW, np.float64)
    model.forward(X, training=True)          # the textbook path: the same gradient and loss
    model.backward(y)
    assert model.last_loss == pytest.approx(free.evaluate(X, y)["loss"] + _penalty(model),
                                            rel=1e-12)


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_matches_torch_with_the_penalty_in_its_loss(opt_name, dtype):
    torch = pytest.importorskip("torch")
    model = _model(fp.optim.SGD(lr=0.1) if opt_name == "sgd" else fp.optim.Adam(lr=0.01),
                   dtype.name)
    tdt = torch.float32 if dtype == np.float32 else torch.float64
    dense = [l for l in model.layers if isinstance(l, fp.Dense)]
    lins = []
    for layer in dense:
        lin = torch.nn.Linear(layer.n_in, layer.n_out).to(tdt)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(layer.W.T.copy()))
            lin.bias.copy_(torch.from_numpy(layer.b.copy()))
        lins.append(lin)
    net = torch.nn.Sequential(lins[0], torch.nn.Tanh(), lins[1], torch.nn.ReLU(), lins[2])
    params = list(net.parameters())
    opt = (torch.optim.SGD(params, lr=0.1) if opt_name == "sgd"
           else torch.optim.Adam(params, lr=0.01))
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    for step in range(5):
        X, y = _data(seed=step)
        X = X.astype(dtype)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(X)), torch.from_numpy(y))
        for lin, layer in zip(lins, dense):
            loss = loss + layer.l1 * lin.weight.abs().sum() + layer.l2 * (lin.weight ** 2).sum()
        loss.backward()
        opt.step()
        assert_close(model.train_step(X, y), loss.item(), dtype, rtol=rtol)
    for lin, layer in zip(lins, dense):
        assert_close(layer.W, lin.weight.detach().numpy().T, dtype, rtol=rtol)
        assert_close(layer.b, lin.bias.detach().numpy(), dtype, rtol=rtol)


def test_fit_history_reports_the_penalized_loss():
    X, y = _data(n=32)
    model = _model(fp.optim.SGD(lr=0.05))
    hist = model.fit(X, y, epochs=2, batch_size=32, shuffle=False, verbose=0,
                     validation_data=(X, y))
    # one batch per epoch: the epoch's loss is the step's loss (the weights before it)
    model2 = _model(fp.optim.SGD(lr=0.05))
    first = model2.train_step(X, y)
    assert hist.history["loss"][0] == pytest.approx(first, rel=1e-12)
    assert hist.history["val_loss"][0] == pytest.approx(model2.evaluate(X, y)["loss"],
                                                        rel=1e-12)


def test_frozen_layer_with_a_penalty_is_not_updated_and_not_counted():
    X, y = _data()
    model = _model(fp.optim.SGD(lr=0.1))
    model.layers[0].trainable = False
    before = model.layers[0].W.copy()
    term = _penalty(model)                      # layer 3's only
    free = _model(fp.optim.SGD(lr=0.1), pen=False)
    assert model.evaluate(X, y)["loss"] == pytest.approx(free.evaluate(X, y)["loss"] + term,
                                                         rel=1e-13)
    assert model.train_step(X, y) == pytest.approx(free.train_step(X, y) + term, rel=1e-13)
    np.testing.assert_array_equal(model.layers[0].W, before)
    model.layers[0].trainable = True
    model.train_step(X, y)
    assert not np.array_equal(model.layers[0].W, before)


def test_config_files_pickle(tmp_path, dtype):
    X, y = _data()
    model = _model(fp.optim.Adam(lr=0.01), dtype.name)
    cfg = [l.get_config() for l in model.layers]
    assert (cfg[0]["l1"], cfg[0]["l2"]) == (0.01, 0.02)
    assert "l1" not in cfg[3] and cfg[3]["l2"] == 0.05
    assert "l1" not in cfg[1] and "l2" not in cfg[1]           # defaults: older files unchanged
    assert "l2=0.05" in repr(model.layers[3])
    model.train_step(X, y)
    buf = io.BytesIO()
    model.save(buf)
    buf.seek(0)
    for other in (fp.load(buf), pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert [(l.l1, l.l2) for l in other.layers if isinstance(l, fp.Dense)] == \
            [(0.01, 0.02), (0.0, 0.0), (0.0, 0.05)]
        assert other.evaluate(X, y)["loss"] == model.evaluate(X, y)["loss"]
        np.testing.assert_array_equal(other.params, model.params)
        other.train_step(X, y)
    model.train_step(X, y)
    np.testing.assert_array_equal(other.params, model.params)


@pytest.mark.parametrize("name", ["l1", "l2"])
@pytest.mark.parametrize("value, error", [(-0.1, ValueError), (float("nan"), ValueError),
                                          (float("inf"), ValueError), ("0.1", TypeError),
                                          (True, TypeError), (None, TypeError),
                                          (1j, TypeError)])
def test_bad_values_name_the_argument(name, value, error):
    with pytest.raises(error, match=name):
        fp.Dense(3, 2, **{name: value})
    with pytest.raises(error, match=name):
        fp.Dense.from_config({"type": "Dense", "n_in": 3, "n_out": 2, "activation": "relu",
                              "init": "he_uniform", name: value})


def test_read_only_and_numpy_scalars():
    layer = fp.Dense(3, 2, l2=np.float32(0.5), l1=np.int64(1))
    assert (layer.l1, layer.l2) == (1.0, 0.5) and type(layer.l2) is float
    model = fp.Sequential([layer], loss="mse", optimizer=fp.optim.SGD(lr=0.1))
    for name in ("l1", "l2"):
        with pytest.raises(AttributeError, match=name):
            setattr(layer, name, 0.0)
    assert (layer.l1, layer.l2) == (1.0, 0.5)
    X = np.ones((4, 3), np.float32)
    assert model.evaluate(X, np.zeros((4, 2)))["loss"] == pytest.approx(
        np.mean((X @ layer.W + layer.b) ** 2) + layer.penalty(), rel=1e-5)


def test_standalone_backward_is_the_data_gradient():
    pen, free = fp.Dense(4, 3, seed=0, l2=1.0), fp.Dense(4, 3, seed=0)
    X = np.random.default_rng(0).standard_normal((5, 4))
    a, c1 = pen.forward(X)
    b, c2 = free.forward(X)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(pen.backward(np.ones_like(a), c1)[1],
                                  free.backward(np.ones_like(b), c2)[1])


def test_onnx_export_is_unaffected():
    pytest.importorskip("onnx")
    pen, free = _model(fp.optim.Adam(), "float32"), _model(fp.optim.Adam(), "float32",
                                                           pen=False)
    a, b = fp.to_onnx(pen).graph, fp.to_onnx(free).graph
    for field in ("node", "initializer", "input", "output"):      # (doc strings: the repr)
        assert list(getattr(a, field)) == list(getattr(b, field))


def test_comm_counts_the_penalty_once():
    """train_step(comm=) reports the data loss plus the penalty of the NumPy reference, once
    (the rest of comm=: tests/test_distributed.py and tests/mpi/worker_penalty.py)."""
    MPI = pytest.importorskip("mpi4py.MPI")
    X, y = _data()
    pen, free = _model(fp.optim.Adam()), _model(fp.optim.Adam(), pen=False)
    expected = _penalty(pen)
    assert expected > 0
    assert pen.train_step(X, y, comm=MPI.COMM_SELF) == pytest.approx(
        free.train_step(X, y, comm=MPI.COMM_SELF) + expected, rel=1e-12)
    assert not np.array_equal(pen.params, free.params)


def test_compute_gradients_penalty_flag_sums_shards_to_the_whole_batch():
    """compute_gradients(penalty=False) leaves the penalty out; shards of one batch given the
    global normalizer sum to the whole batch's gradient when exactly one shard includes it."""
    X, y = _data(n=12)
    model = _model(fp.optim.Adam())
    whole_loss = model.compute_gradients(X, y)
    whole = model.grads.copy()
    data_loss = model.compute_gradients(X, y, penalty=False)
    assert whole_loss == pytest.approx(data_loss + _penalty(model), rel=1e-12)
    assert not np.allclose(model.grads, whole)
    l0 = model.compute_gradients(X[:5], y[:5], normalizer=12.0, penalty=True)
    g0 = model.grads.copy()
    l1 = model.compute_gradients(X[5:], y[5:], normalizer=12.0, penalty=False)
    np.testing.assert_allclose(g0 + model.grads, whole, rtol=1e-12, atol=1e-14)
    assert l0 + l1 == pytest.approx(whole_loss, rel=1e-12)
    before = model.grads.copy()
    with pytest.raises(TypeError, match="penalty"):
        model.compute_gradients(X, y, penalty="no")
    np.testing.assert_array_equal(model.grads, before)
