"""Sequential: the compiled training step against the NumPy reference and PyTorch, the textbook
path, fit / predict / evaluate, input validation (failed calls change nothing), memory,
save / load / pickle / deepcopy and gradcheck."""
import copy
import pickle
import threading
import tracemalloc

import numpy as np
import pytest

import fastprop as fp
import fastprop.model as fp_model
from fastprop.optim import SGD, Adam, AdamW, Adagrad, RMSprop, StepLR
from fastprop.reference import ReferenceModel

from conftest import assert_close


# -- helpers -------------------------------------------------------------------------------------
def _run_all(threads):
    """Start every thread, then wait for all of them."""
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def make_model(sizes, acts, loss=None, optimizer=None, dtype="float64", seed=0, dropout=None,
               bias_seed=123):
    """A Sequential with seeded weights and non-zero biases; ``dropout`` maps a Dense index i
    to the rate of a Dropout placed before it."""
    layers = []
    for i, (n_in, n_out, act) in enumerate(zip(sizes[:-1], sizes[1:], acts)):
        if dropout and i in dropout:
            layers.append(fp.Dropout(dropout[i]))
        layers.append(fp.Dense(n_in, n_out, activation=act, dtype=dtype, seed=seed + i))
    model = fp.Sequential(layers, loss=loss, optimizer=optimizer, dtype=dtype, seed=seed)
    rng = np.random.default_rng(bias_seed)
    for d in model._dense:
        d.b = 0.3 * rng.standard_normal(d.n_out)
    return model


def snapshot(model):
    opt = model.optimizer
    return (model.params.copy(), {k: v.copy() for k, v in opt.state.items()}, opt.t,
            int(model.get_rng_state()[0]), opt.lr)


def assert_same_state(model, snap):
    params, state, t, rng, lr = snap
    np.testing.assert_array_equal(model.params, params)
    assert set(model.optimizer.state) == set(state)
    for k, v in state.items():
        np.testing.assert_array_equal(model.optimizer.state[k], v)
    assert model.optimizer.t == t
    assert int(model.get_rng_state()[0]) == rng
    assert model.optimizer.lr == lr


def data(n, n_in, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal((n, n_in)).astype(dtype)


OPTIMIZERS = {
    "sgd": lambda: SGD(lr=0.1),
    "sgd_momentum": lambda: SGD(lr=0.05, momentum=0.9),
    "sgd_momentum_dampening": lambda: SGD(lr=0.05, momentum=0.8, dampening=0.3),
    "sgd_nesterov": lambda: SGD(lr=0.05, momentum=0.9, nesterov=True),
    "sgd_weight_decay": lambda: SGD(lr=0.1, weight_decay=0.05),
    "sgd_clip": lambda: SGD(lr=0.1, momentum=0.5, clip_norm=0.05),
    "adam": lambda: Adam(lr=0.01),
    "adam_amsgrad_wd": lambda: Adam(lr=0.01, amsgrad=True, weight_decay=0.01),
    "adam_clip": lambda: Adam(lr=0.01, betas=(0.8, 0.95), clip_norm=0.1),
    "adamw": lambda: AdamW(lr=0.01, weight_decay=0.1),
    "adamw_amsgrad": lambda: AdamW(lr=0.01, amsgrad=True),
    "rmsprop": lambda: RMSprop(lr=0.005),
    "rmsprop_centered_momentum": lambda: RMSprop(lr=0.005, centered=True, momentum=0.9,
                                                 weight_decay=0.01),
    "adagrad": lambda: Adagrad(lr=0.05, lr_decay=0.1, initial_accumulator_value=0.1),
}

N_IN, N_HID, N_OUT, N = 5, 7, 3, 12


def _targets(case, rng, n=N, k=N_OUT):
    """(loss, output activation, train_step kwargs, reference kwargs)."""
    loss, act, kind = case
    if loss == "cross_entropy":
        if kind == "labels":
            lab = rng.integers(0, k, n)
            return lab, dict(labels=lab)
        if kind == "onehot":
            y = np.eye(k)[rng.integers(0, k, n)]
            return y, dict(y=y)
        p = rng.random((n, k)) + 0.1
        y = p / p.sum(1, keepdims=True)
        return y, dict(y=y)
    if loss == "binary_cross_entropy":
        y = (rng.random((n, k)) < 0.4).astype(float)   # several ones per row: multi-label
        y[0] = 0.3                                      # soft targets too
        return y, dict(y=y)
    y = 1.5 * rng.standard_normal((n, k))               # huber: both sides of delta = 1
    if act in ("sigmoid", "tanh"):
        y = np.tanh(y) if act == "tanh" else 1 / (1 + np.exp(-y))
        y = y + 0.3 * rng.standard_normal((n, k))
    return y, dict(y=y)


LOSS_CASES = [(loss, act, None) for loss in ("mse", "mae", "huber")
              for act in ("identity", "tanh", "sigmoid")] + [
    ("cross_entropy", "softmax", "labels"), ("cross_entropy", "softmax", "onehot"),
    ("cross_entropy", "softmax", "soft"), ("binary_cross_entropy", "sigmoid", "multilabel")]
LOSS_IDS = ["-".join(x for x in c if x) for c in LOSS_CASES]


def _compare_with_reference(case, opt_name, dtype, weighted, rtol, steps=5):
    loss, act, _ = case
    model = make_model([N_IN, N_HID, N_OUT], ["tanh", act], loss=loss,
                       optimizer=OPTIMIZERS[opt_name](), dtype=dtype)
    ref = ReferenceModel.from_model(model)
    rng = np.random.default_rng(42)
    for step in range(steps):
        X = rng.standard_normal((N, N_IN)).astype(dtype)
        y, ref_y = _targets(case, rng)
        w = None
        if weighted:
            w = rng.random(N) + 0.2
            w[step % N] = 0.0
        got = model.train_step(X, y, sample_weight=w)
        ref_kw = {k: (v.astype(dtype) if k == "y" else v) for k, v in ref_y.items()}
        want = ref.train_step(X, sample_weight=w, **ref_kw)
        assert isinstance(got, float)
        assert got == pytest.approx(want, rel=rtol, abs=rtol * 1e-3)
        assert_close(model.params, ref.params, rtol=rtol)
    assert model.optimizer.t == steps == ref.t
    for name, arr in ref.state.items():
        assert_close(model.optimizer.state[name], arr, rtol=rtol * 10)
    # the step changed something (the comparison is not vacuous)
    assert not np.array_equal(model.params, make_model(
        [N_IN, N_HID, N_OUT], ["tanh", act], loss=loss, dtype=dtype).params)


# -- 1. train_step against the NumPy reference ---------------------------------------------------
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("case", LOSS_CASES, ids=LOSS_IDS)
def test_train_step_matches_reference_float64(case, opt_name, weighted):
    _compare_with_reference(case, opt_name, np.float64, weighted, rtol=1e-9)


@pytest.mark.parametrize("opt_name", ["sgd_momentum", "sgd_nesterov", "adam_amsgrad_wd", "adamw",
                                      "rmsprop_centered_momentum", "adagrad", "sgd_clip"])
@pytest.mark.parametrize("case", LOSS_CASES, ids=LOSS_IDS)
def test_train_step_matches_reference_float32(case, opt_name):
    _compare_with_reference(case, opt_name, np.float32, weighted=True, rtol=1e-5)


def test_train_step_deep_network_and_hidden_activations_match_reference():
    acts = ["elu", "gelu", "softplus", "silu", "sigmoid", "leaky_relu", "relu", "softmax"]
    sizes = [6, 9, 8, 7, 9, 6, 8, 5, 4]
    model = make_model(sizes, acts, optimizer=Adam(lr=0.01))
    ref = ReferenceModel.from_model(model)
    rng = np.random.default_rng(1)
    for _ in range(5):
        X = rng.standard_normal((20, 6))
        lab = rng.integers(0, 4, 20)
        assert model.train_step(X, lab) == pytest.approx(ref.train_step(X, labels=lab),
                                                         rel=1e-9)
        assert_close(model.params, ref.params, rtol=1e-9)


def test_loss_aliases_and_defaults():
    assert make_model([3, 2], ["softmax"]).loss == "cross_entropy"
    assert make_model([3, 2], ["sigmoid"]).loss == "binary_cross_entropy"
    assert make_model([3, 2], ["tanh"]).loss == "mse"
    assert make_model([3, 2], ["identity"], loss="mean_absolute_error").loss == "mae"
    assert isinstance(make_model([3, 2], ["identity"]).optimizer, Adam)
    assert isinstance(make_model([3, 2], ["identity"], optimizer="rmsprop").optimizer, RMSprop)


def test_optimizer_options_changed_after_construction_are_used():
    # momentum switched on after the model set up the (momentum-free) state
    model = make_model([4, 5, 2], ["tanh", "identity"], optimizer=SGD(lr=0.1))
    model.train_step(data(8, 4), data(8, 2, 1))
    model.optimizer.momentum = 0.9
    ref = ReferenceModel.from_model(model)
    ref.t = model.optimizer.t
    for s in range(3):
        X, y = data(8, 4, 10 + s), data(8, 2, 20 + s)
        assert model.train_step(X, y) == pytest.approx(ref.train_step(X, y=y), rel=1e-12)
        assert_close(model.params, ref.params, rtol=1e-12)
    assert model.optimizer.t == 4
    assert "momentum_buffer" in model.optimizer.state
    assert np.all(np.isfinite(model.params))


# -- 2. against PyTorch --------------------------------------------------------------------------
@pytest.mark.parametrize("hidden", ["tanh", "relu", "gelu"])
@pytest.mark.parametrize("head", ["cross_entropy", "mse", "bce"])
@pytest.mark.parametrize("opt", ["sgd_momentum", "adam"])
def test_mlp_matches_torch(hidden, head, opt):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    sizes = [7, 16, 12, 4]
    out_act = {"cross_entropy": "softmax", "mse": "identity", "bce": "sigmoid"}[head]
    make_opt = {"sgd_momentum": lambda: SGD(lr=0.1, momentum=0.9),
                "adam": lambda: Adam(lr=0.01)}[opt]
    model = make_model(sizes, [hidden, hidden, out_act], optimizer=make_opt())
    tact = {"tanh": torch.nn.Tanh(), "relu": torch.nn.ReLU(), "gelu": torch.nn.GELU()}[hidden]
    net = torch.nn.Sequential(torch.nn.Linear(7, 16), tact, torch.nn.Linear(16, 12), tact,
                              torch.nn.Linear(12, 4)).double()
    with torch.no_grad():
        for lin, d in zip([net[0], net[2], net[4]], model._dense):
            lin.weight.copy_(torch.from_numpy(d.W.T.copy()))
            lin.bias.copy_(torch.from_numpy(d.b.copy()))
    topt = (torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9) if opt == "sgd_momentum"
            else torch.optim.Adam(net.parameters(), lr=0.01))
    rng = np.random.default_rng(3)
    for _ in range(5):
        X = rng.standard_normal((16, 7))
        if head == "cross_entropy":
            y = rng.integers(0, 4, 16)
            tl = lambda o: F.cross_entropy(o, torch.from_numpy(y))
        elif head == "mse":
            y = rng.standard_normal((16, 4))
            tl = lambda o: F.mse_loss(o, torch.from_numpy(y))
        else:
            y = (rng.random((16, 4)) < 0.5).astype(float)
            tl = lambda o: F.binary_cross_entropy_with_logits(o, torch.from_numpy(y))
        got = model.train_step(X, y)
        topt.zero_grad()
        want = tl(net(torch.from_numpy(X)))
        want.backward()
        topt.step()
        assert got == pytest.approx(want.item(), rel=1e-9)
        for lin, d in zip([net[0], net[2], net[4]], model._dense):
            assert_close(d.W, lin.weight.detach().numpy().T, rtol=1e-9)
            assert_close(d.b, lin.bias.detach().numpy(), rtol=1e-9)
    # the model's output is torch's (softmax / sigmoid of the logits)
    X = rng.standard_normal((5, 7))
    logits = net(torch.from_numpy(X)).detach()
    want = {"softmax": lambda z: torch.softmax(z, 1), "identity": lambda z: z,
            "sigmoid": torch.sigmoid}[out_act](logits).numpy()
    assert_close(model.predict(X), want, rtol=1e-9)


# -- 3. the textbook path ------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("dropout", [None, {1: 0.3}, {0: 0.2, 2: 0.5}], ids=["plain", "drop1",
                                                                             "drop2"])
@pytest.mark.parametrize("use_apply", [False, True], ids=["optimizer.step", "apply_gradients"])
def test_textbook_path_is_bit_identical_to_train_step(dtype, dropout, use_apply):
    args = ([6, 9, 8, 3], ["tanh", "relu", "softmax"])
    a = make_model(*args, optimizer=Adam(lr=0.01), dtype=dtype, seed=5, dropout=dropout)
    b = make_model(*args, optimizer=Adam(lr=0.01), dtype=dtype, seed=5, dropout=dropout)
    np.testing.assert_array_equal(a.params, b.params)
    rng = np.random.default_rng(0)
    for _ in range(4):
        X = rng.standard_normal((10, 6))
        y = rng.integers(0, 3, 10)
        loss_a = a.train_step(X, y)
        out = b.forward(X)
        assert out.shape == (10, 3) and out.dtype == np.dtype(dtype)
        g = b.backward(y)
        assert g is b.grads
        assert b.last_loss == loss_a
        if use_apply:
            b.apply_gradients()
        else:
            b.optimizer.step(b.params, b.grads)
        np.testing.assert_array_equal(a.grads, b.grads)
        np.testing.assert_array_equal(a.params, b.params)
        assert a.optimizer.t == b.optimizer.t
        assert a.get_rng_state()[0] == b.get_rng_state()[0]


@pytest.mark.parametrize("dropout", [None, {1: 0.3}, {0: 0.2, 2: 0.5}],
                         ids=["plain", "dropout", "input-dropout"])
def test_textbook_path_plain_sgd_matches_train_step(dropout):
    # plain SGD may be fused into backward (W += -lr a_prev.T @ dz in one GEMM), which rounds
    # differently from dW then p -= lr dW: equal to rounding, not bit for bit
    args = ([6, 9, 8, 3], ["tanh", "relu", "softmax"])
    a = make_model(*args, optimizer=SGD(lr=0.2), seed=5, dropout=dropout)
    b = make_model(*args, optimizer=SGD(lr=0.2), seed=5, dropout=dropout)
    rng = np.random.default_rng(0)
    for _ in range(4):
        X, y = rng.standard_normal((10, 6)), rng.integers(0, 3, 10)
        loss_a = a.train_step(X, y)
        b.forward(X)
        b.backward(y)
        assert b.last_loss == pytest.approx(loss_a, rel=1e-13)
        b.apply_gradients()
        assert_close(a.params, b.params, rtol=1e-13)
        assert a.get_rng_state()[0] == b.get_rng_state()[0]
    assert a.optimizer.t == b.optimizer.t == 4


def test_replaced_optimizer_is_set_up_and_used():
    model = make_model([4, 5, 2], ["tanh", "identity"], optimizer=Adam(lr=0.01))
    X, y = data(8, 4), data(8, 2, 1)
    model.train_step(X, y)
    model.optimizer = RMSprop(lr=0.01, momentum=0.5)
    ref = ReferenceModel.from_model(model)
    for _ in range(3):
        assert model.train_step(X, y) == pytest.approx(ref.train_step(X, y=y), rel=1e-12)
        assert_close(model.params, ref.params, rtol=1e-12)
    assert model.optimizer.t == 3
    model.optimizer.lr = 0.0                  # a changed hyperparameter takes effect
    p = model.params.copy()
    model.train_step(X, y)
    np.testing.assert_array_equal(model.params, p)


def test_textbook_forward_without_training_is_predict_and_caches():
    model = make_model([6, 9, 8, 3], ["tanh", "relu", "softmax"], dropout={1: 0.5})
    X = data(7, 6)
    rng_before = model.get_rng_state()[0]
    out = model.forward(X, training=False)
    assert model.get_rng_state()[0] == rng_before          # no mask drawn
    np.testing.assert_array_equal(out, model.predict(X))
    caches = model.caches
    assert [tuple(c.shape for c in pair) for pair in caches] == [
        ((7, 9), (7, 9)), ((7, 8), (7, 8)), ((7, 3), (7, 3))]
    ref = ReferenceModel.from_model(model).forward(X)
    for (z, a), (rz, ra) in zip(caches, ref):
        assert_close(z, rz)
        assert_close(a, ra)
        assert not z.flags.writeable and not a.flags.writeable
    # the output is a copy: writing it does not touch the cache
    out[...] = 0
    assert np.any(model.caches[-1][1] != 0)


def test_textbook_backward_fills_layer_gradients_matching_reference():
    model = make_model([5, 6, 4], ["silu", "identity"], loss="huber")
    X, y = data(9, 5), 2 * data(9, 4, 1)
    w = np.linspace(0, 2, 9)
    model.forward(X)
    model.backward(y, sample_weight=w)
    ref = ReferenceModel.from_model(model)
    loss = ref.loss_and_gradients(X, y=y, sample_weight=w)
    assert model.last_loss == pytest.approx(loss, rel=1e-12)
    assert_close(model.grads, ref.grads)
    for d, dW, db in zip(model._dense, ref.dW, ref.db):
        assert np.shares_memory(d.dW, model.grads) and np.shares_memory(d.db, model.grads)
        assert_close(d.dW, dW)
        assert_close(d.db, db)


def test_backward_errors_and_cache_invalidation():
    model = make_model([3, 4, 2], ["tanh", "identity"])
    with pytest.raises(ValueError, match="forward"):
        model.backward(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="forward"):
        model.caches
    X = data(5, 3)
    model.forward(X)
    with pytest.raises(ValueError, match="y"):
        model.backward(np.zeros((4, 2)))            # 4 targets for a 5-sample forward
    model.train_step(X, np.zeros((5, 2)))           # training step invalidates the cache
    with pytest.raises(ValueError, match="forward"):
        model.backward(np.zeros((5, 2)))


def test_dense_weights_are_views_of_params():
    model = make_model([4, 5, 3], ["tanh", "identity"])
    X = data(6, 4)
    d0, d1 = model._dense
    for d in model._dense:
        for arr in (d.W, d.b, d.dW, d.db):
            assert arr.base is not None
        assert np.shares_memory(d.W, model.params) and np.shares_memory(d.b, model.params)
        assert np.shares_memory(d.dW, model.grads) and np.shares_memory(d.db, model.grads)
    # layout: W0, b0, W1, b1
    np.testing.assert_array_equal(model.params[:20], d0.W.ravel())
    np.testing.assert_array_equal(model.params[20:25], d0.b)
    np.testing.assert_array_equal(model.params[25:40], d1.W.ravel())
    np.testing.assert_array_equal(model.params[40:], d1.b)
    assert model.n_params == model.params.size == 43
    before = model.predict(X)
    d1.W[0, 0] += 1.0                                # in-place write
    after = model.predict(X)
    np.testing.assert_allclose(after[:, 0] - before[:, 0], np.tanh(X @ d0.W + d0.b)[:, 0])
    d1.b = np.zeros(3)                               # the setter copies into the buffer
    assert np.all(model.params[40:] == 0)
    model.params[:20] = 0                            # and the other way round
    assert np.all(d0.W == 0)
    with pytest.raises(ValueError, match="W"):
        d0.W = np.zeros((5, 4))


def test_layer_weights_are_copied_in_and_cast():
    layer = fp.Dense(3, 2, activation="tanh", dtype="float32", seed=0)
    W = layer.W.copy()
    model = fp.Sequential([layer], dtype="float64")
    assert model.params.dtype == np.float64 and layer.W.dtype == np.float64
    np.testing.assert_array_equal(layer.W, W.astype(np.float64))


def test_summary_and_repr(capsys):
    model = make_model([4, 5, 3], ["relu", "softmax"], dropout={1: 0.25})
    text = model.summary()
    assert capsys.readouterr().out.strip() == text.strip()
    assert "Dropout(0.25)" in text and "43" in text and "cross_entropy" in text
    assert "Sequential([Dense(4, 5" in repr(model)


# -- 4. fit --------------------------------------------------------------------------------------
def _blobs(n=120, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centers = np.array([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 2.0, 0]])
    return centers[y] + 0.5 * rng.standard_normal((n, 4)), y


def _clf(seed=0, optimizer=None, dtype="float64", dropout=None):
    return make_model([4, 8, 3], ["tanh", "softmax"], seed=seed, dtype=dtype, dropout=dropout,
                      optimizer=optimizer if optimizer is not None else Adam(lr=0.02))


def test_fit_history_keys_classification_and_regression():
    X, y = _blobs()
    model = _clf()
    h = model.fit(X, y, epochs=3, batch_size=16, validation_split=0.25, verbose=0)
    assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    assert all(len(v) == 3 for v in h.history.values())
    assert h.epoch == [0, 1, 2]
    assert model.history is h
    assert all(isinstance(v, float) for v in h.history["loss"])
    reg = make_model([4, 5, 2], ["tanh", "identity"])
    h = reg.fit(X, X[:, :2], epochs=2, verbose=0)
    assert set(h.history) == {"loss", "lr"}
    h = reg.fit(X, X[:, :2], epochs=2, verbose=0, validation_data=(X[:5], X[:5, :2]))
    assert set(h.history) == {"loss", "val_loss", "lr"}


def test_fit_validation_split_holds_out_the_last_fraction():
    X, y = _blobs(100)
    a, b = _clf(), _clf()
    h = a.fit(X, y, epochs=2, batch_size=16, validation_split=0.2, verbose=0)
    b.fit(X[:80], y[:80], epochs=2, batch_size=16, verbose=0)
    np.testing.assert_array_equal(a.params, b.params)          # trained on the first 80 only
    ev = a.evaluate(X[80:], y[80:])
    assert h.history["val_loss"][-1] == pytest.approx(ev["loss"], rel=1e-12)
    assert h.history["val_accuracy"][-1] == ev["accuracy"]
    assert 0.0 <= h.history["accuracy"][-1] <= 1.0


@pytest.mark.parametrize("multi_label", [False, True])
def test_fit_training_accuracy_is_the_running_mean_over_batches(multi_label):
    # with lr = 0 nothing moves, so the running accuracy of the batches (counted in the
    # engine during each forward pass) must equal the accuracy of the whole training set
    X, y = _blobs(90)
    if multi_label:
        Y = np.stack([y == 0, y == 1], axis=1).astype(float)
        model = make_model([4, 8, 2], ["tanh", "sigmoid"], seed=0, optimizer=SGD(lr=0.0))
        h = model.fit(X, Y, epochs=2, batch_size=16, verbose=0)
        want = model.evaluate(X, Y)["accuracy"]
    else:
        model = _clf(optimizer=SGD(lr=0.0))
        h = model.fit(X, y, epochs=2, batch_size=16, verbose=0)
        want = model.evaluate(X, y)["accuracy"]
    assert h.history["accuracy"] == [pytest.approx(want, abs=1e-12)] * 2
    assert 0.0 < want < 1.0


@pytest.mark.parametrize("three", [False, True], ids=["(X, y)", "(X, y, w)"])
def test_fit_validation_data(three):
    X, y = _blobs(90)
    Xv, yv = _blobs(30, seed=1)
    wv = np.linspace(0.1, 1, 30)
    a, b = _clf(), _clf()
    vd = (Xv, yv, wv) if three else (Xv, yv)
    h = a.fit(X, y, epochs=2, validation_data=vd, validation_split=0.5, verbose=0)
    b.fit(X, y, epochs=2, verbose=0)        # validation_data overrides validation_split
    np.testing.assert_array_equal(a.params, b.params)
    ev = a.evaluate(Xv, yv, sample_weight=wv if three else None)
    assert h.history["val_loss"][-1] == pytest.approx(ev["loss"], rel=1e-12)
    if three:
        assert ev["loss"] != pytest.approx(a.evaluate(Xv, yv)["loss"], rel=1e-6)


def test_fit_shuffle_is_reproducible_with_seed_and_depends_on_it():
    X, y = _blobs()
    a, b, c = _clf(seed=3), _clf(seed=3), _clf(seed=3)
    c.set_rng_state(np.array([12345], dtype=np.uint64))
    ha = a.fit(X, y, epochs=3, batch_size=10, verbose=0)
    hb = b.fit(X, y, epochs=3, batch_size=10, verbose=0)
    c.fit(X, y, epochs=3, batch_size=10, verbose=0)
    np.testing.assert_array_equal(a.params, b.params)
    assert ha.history == hb.history
    assert not np.array_equal(a.params, c.params)


@pytest.mark.parametrize("opt_name", ["adam", "sgd", "sgd_nesterov", "adagrad"])
def test_fit_without_shuffle_equals_train_step_loop(opt_name):
    X, y = _blobs(50)
    a, b = _clf(optimizer=OPTIMIZERS[opt_name]()), _clf(optimizer=OPTIMIZERS[opt_name]())
    h = a.fit(X, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    for _ in range(2):
        losses = [b.train_step(X[i:i + 16], y[i:i + 16]) * len(y[i:i + 16])
                  for i in range(0, 50, 16)]
    np.testing.assert_array_equal(a.params, b.params)
    assert a.optimizer.t == b.optimizer.t == 8
    assert h.history["loss"][-1] == pytest.approx(sum(losses) / 50, rel=1e-12)


def test_fit_epochs_zero_does_nothing():
    X, y = _blobs(20)
    model = _clf()
    snap = snapshot(model)
    h = model.fit(X, y, epochs=0, verbose=0)
    assert_same_state(model, snap)
    assert h.history == {} and h.epoch == []


def test_fit_batch_larger_than_n_is_one_full_batch_step():
    X, y = _blobs(20)
    a, b = _clf(), _clf()
    h = a.fit(X, y, epochs=3, batch_size=1000, shuffle=False, verbose=0)
    losses = [b.train_step(X, y) for _ in range(3)]
    np.testing.assert_array_equal(a.params, b.params)
    assert a.optimizer.t == 3
    assert h.history["loss"] == pytest.approx(losses, rel=1e-12)
    # shuffled, a full batch is the same set of samples: same result up to summation order
    c = _clf()
    c.fit(X, y, epochs=3, batch_size=1000, verbose=0)
    assert_close(c.params, a.params, rtol=1e-10)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse", "binary_cross_entropy"])
def test_zero_sample_weight_is_like_dropping_the_sample(loss):
    rng = np.random.default_rng(0)
    act = {"cross_entropy": "softmax", "mse": "identity", "binary_cross_entropy": "sigmoid"}[loss]
    X = rng.standard_normal((15, 4))
    y = rng.integers(0, 3, 15) if loss == "cross_entropy" else (rng.random((15, 3)) < .5) * 1.0
    w = (rng.random(15) < 0.6).astype(float)
    w[0] = 1.0
    keep = w > 0
    mk = lambda: make_model([4, 6, 3], ["tanh", act], loss=loss, optimizer=Adam(lr=0.05))
    a, b = mk(), mk()
    la = a.train_step(X, y, sample_weight=w)
    lb = b.train_step(X[keep], y[keep])
    assert la == pytest.approx(lb, rel=1e-12)
    assert_close(a.params, b.params, rtol=1e-12)
    assert a.evaluate(X, y, sample_weight=w)["loss"] == pytest.approx(
        b.evaluate(X[keep], y[keep])["loss"], rel=1e-12)
    c, d = mk(), mk()
    c.fit(X, y, sample_weight=w, epochs=2, batch_size=100, verbose=0)
    d.fit(X[keep], y[keep], epochs=2, batch_size=100, verbose=0)
    assert_close(c.params, d.params, rtol=1e-10)


def test_fit_sample_weight_scaling_does_not_matter():
    X, y = _blobs(30)
    w = np.random.default_rng(1).random(30) + 0.1
    a, b = _clf(), _clf()
    a.fit(X, y, sample_weight=w, epochs=2, batch_size=8, verbose=0)
    b.fit(X, y, sample_weight=7 * w, epochs=2, batch_size=8, verbose=0)
    assert_close(a.params, b.params, rtol=1e-10)


class _Recorder(fp.callbacks.Callback):
    def __init__(self):
        self.params_at = []
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1

    def on_epoch_end(self, epoch, logs=None):
        self.params_at.append(self.model.params.copy())


def test_fit_early_stopping_restores_best_weights():
    X, y = _blobs(80)
    Xv, yv = X[:30], (y[:30] + 1) % 3          # validation labels disagree with training
    model = _clf(optimizer=Adam(lr=0.05))
    rec = _Recorder()
    es = fp.callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    h = model.fit(X, y, epochs=30, batch_size=16, validation_data=(Xv, yv),
                  callbacks=[rec, es], verbose=0)
    n_run = len(h.history["val_loss"])
    assert 2 < n_run < 30
    assert rec.batches == n_run * 5
    best = int(np.argmin(h.history["val_loss"]))
    assert es.best_epoch == best
    np.testing.assert_array_equal(model.params, rec.params_at[best])
    assert not np.array_equal(model.params, rec.params_at[-1])
    # the optimizer state and step count are those of the last epoch run, not restored
    assert model.optimizer.t == n_run * 5


def test_fit_stop_training_from_a_callback():
    class Stop(fp.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                self.model.stop_training = True

    X, y = _blobs(40)
    model = _clf()
    h = model.fit(X, y, epochs=5, batch_size=8, callbacks=[Stop()], verbose=0)
    assert model.optimizer.t == 2 and len(h.history["loss"]) == 1
    assert np.isfinite(h.history["loss"][0])


def test_fit_learning_rate_schedule_per_epoch():
    X, y = _blobs(24)
    sched = lambda: SGD(lr=0.1, momentum=0.5, schedule=StepLR(step_size=2, gamma=0.5))
    a, b = _clf(optimizer=sched()), _clf(optimizer=sched())
    h = a.fit(X, y, epochs=5, batch_size=100, shuffle=False, verbose=0)
    assert h.history["lr"] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025], rel=1e-15)
    for epoch in range(5):                       # the same lr, by hand
        b.optimizer.schedule_epoch(epoch)
        b.train_step(X, y)
    np.testing.assert_array_equal(a.params, b.params)
    c = _clf(optimizer=SGD(lr=0.1, momentum=0.5))   # without the schedule: different
    c.fit(X, y, epochs=5, batch_size=100, shuffle=False, verbose=0)
    assert not np.allclose(a.params, c.params, rtol=1e-6)


def test_fit_verbose_0_prints_nothing(capsys):
    X, y = _blobs(30)
    _clf().fit(X, y, epochs=2, validation_split=0.2, verbose=0)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_fit_verbose_1_prints_one_line_per_epoch_when_not_a_tty(capsys):
    X, y = _blobs(30)
    _clf().fit(X, y, epochs=3, batch_size=8, validation_split=0.2, verbose=1)
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert len(lines) == 3
    for i, line in enumerate(lines):
        assert line.startswith(f"Epoch {i + 1}/3")
        assert "loss" in line and "val_loss" in line and "\r" not in line
    assert out.err == ""


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fit_learns_a_separable_problem(dtype):
    X, y = _blobs(300)
    model = _clf(dtype=dtype, dropout={1: 0.1}, optimizer=Adam(lr=0.05))
    before = model.evaluate(X, y)
    h = model.fit(X, y, epochs=15, batch_size=32, validation_split=0.2, verbose=0)
    after = model.evaluate(X, y)
    assert after["accuracy"] > 0.95 and h.history["val_accuracy"][-1] > 0.9
    assert after["loss"] < before["loss"] / 3
    # and a regression target
    reg = make_model([4, 16, 1], ["tanh", "identity"], optimizer=Adam(lr=0.02), dtype=dtype)
    t = np.sin(X[:, 0]) + 0.5 * X[:, 1]
    h = reg.fit(X, t, epochs=40, batch_size=32, verbose=0)
    assert h.history["loss"][-1] < 0.05 * h.history["loss"][0]


# -- 5. predict / evaluate -----------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_predict_softmax_rows_sum_to_one(dtype):
    model = make_model([4, 8, 5], ["relu", "softmax"], dtype=dtype)
    p = model.predict(10 * data(33, 4))
    assert p.shape == (33, 5) and p.dtype == np.dtype(dtype)
    np.testing.assert_allclose(p.sum(1), 1, rtol=0, atol=1e-6 if dtype == "float32" else 1e-13)
    assert np.all(p >= 0)
    np.testing.assert_array_equal(p, model.predict(10 * data(33, 4)))


def test_predict_matches_reference_and_accepts_any_input_layout():
    model = make_model([4, 8, 5], ["gelu", "sigmoid"])
    X = data(21, 4)
    want = ReferenceModel.from_model(model).predict(X)
    assert_close(model.predict(X), want)
    Xf = np.asfortranarray(X)
    Xr = X.copy()
    Xr.flags.writeable = False
    Xs = np.repeat(X, 2, axis=1)[:, ::2]
    for Xi in (Xf, Xr, Xs, X.tolist()):
        np.testing.assert_array_equal(model.predict(Xi), model.predict(X))
    np.testing.assert_array_equal(model.predict(np.ones((3, 4), dtype=np.int32)),
                                  model.predict(np.ones((3, 4))))


@pytest.mark.parametrize("loss", ["cross_entropy", "binary_cross_entropy", "mse", "mae"])
def test_evaluate_keys_and_loss_equal_reference(loss):
    act = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid"}.get(loss, "tanh")
    model = make_model([4, 6, 3], ["elu", act], loss=loss)
    rng = np.random.default_rng(2)
    X = rng.standard_normal((25, 4))
    if loss == "cross_entropy":
        y = rng.integers(0, 3, 25)
        ref_kw = dict(labels=y)
    else:
        y = (rng.random((25, 3)) < 0.5).astype(float)
        ref_kw = dict(y=y)
    w = rng.random(25)
    params = model.params.copy()
    for sw in (None, w):
        ev = model.evaluate(X, y, sample_weight=sw)
        ref = ReferenceModel.from_model(model)
        assert ev["loss"] == pytest.approx(ref.loss_and_gradients(X, sample_weight=sw,
                                                                  **ref_kw), rel=1e-12)
        if loss in ("mse", "mae"):
            assert set(ev) == {"loss"}
        else:
            assert set(ev) == {"loss", "accuracy"}
            p = model.predict(X)
            acc = np.mean(p.argmax(1) == y) if loss == "cross_entropy" else \
                np.mean((p > 0.5) == (y > 0.5))
            assert ev["accuracy"] == pytest.approx(acc)
    np.testing.assert_array_equal(model.params, params)    # evaluate trains nothing
    assert model.optimizer.t == 0


def test_evaluate_with_one_hot_targets_equals_labels():
    model = _clf()
    X, y = _blobs(20)
    assert model.evaluate(X, np.eye(3)[y]) == pytest.approx(model.evaluate(X, y), rel=1e-12)


def test_predict_in_chunks_equals_full():
    model = make_model([4, 8, 8, 3], ["tanh", "relu", "softmax"])
    X = data(40, 4)
    full = model.predict(X)
    for bs in (1, 3, 7, 40, 1000):
        np.testing.assert_allclose(model.predict(X, batch_size=bs), full, rtol=1e-14,
                                   atol=1e-15)


def test_predict_from_threads_equals_serial():
    model = make_model([16, 64, 64, 5], ["tanh", "relu", "softmax"])
    Xs = [data(300, 16, seed=s) for s in range(8)]
    want = [model.predict(X) for X in Xs]
    results = [None] * 8
    errors = []

    def work(i):
        try:
            for _ in range(5):
                j = (i + _) % 8
                out = model.predict(Xs[j])
                if not np.array_equal(out, want[j]):
                    errors.append(j)
            results[i] = True
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    _run_all([threading.Thread(target=work, args=(i,)) for i in range(4)])
    assert errors == [] and all(results[:4])


def test_predict_from_threads_with_large_and_small_layers():
    # the first layer is above the one-thread work limit per chunk, the others below: the
    # per-layer BLAS thread switching runs in every thread at once
    model = make_model([64, 256, 16, 4], ["tanh", "relu", "softmax"], dtype="float32")
    Xs = [data(600, 64, seed=s, dtype=np.float32) for s in range(4)]
    want = [model.predict(X, batch_size=1024) for X in Xs]
    errors = []

    def work(i):
        try:
            for r in range(3):
                j = (i + r) % 4
                assert_close(model.predict(Xs[j], batch_size=1024), want[j], rtol=1e-6)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    _run_all([threading.Thread(target=work, args=(i,)) for i in range(4)])
    assert errors == []


def test_predict_while_another_thread_trains():
    model = make_model([32, 64, 3], ["tanh", "softmax"], optimizer=SGD(lr=1e-3))
    X, y = data(64, 32), np.arange(64) % 3
    errors, outs = [], []

    def train():
        try:
            for _ in range(200):
                model.train_step(X, y)
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    def infer():
        try:
            for _ in range(100):
                outs.append(model.predict(X[:8]))
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    _run_all([threading.Thread(target=train)] + [threading.Thread(target=infer)
                                                  for _ in range(2)])
    assert errors == [] and model.optimizer.t == 200
    assert all(np.all(np.isfinite(o)) and np.allclose(o.sum(1), 1) for o in outs)


def test_n_threads_setting():
    model = make_model([64, 256, 4], ["tanh", "softmax"])
    assert model.n_threads is None
    X = data(600, 64)
    want = model.predict(X, batch_size=1024)
    model.n_threads = 1
    assert model.n_threads == 1
    assert_close(model.predict(X, batch_size=1024), want, rtol=1e-12)
    model.n_threads = None
    assert model.n_threads is None
    for bad, exc in ((0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError)):
        with pytest.raises(exc, match="n_threads"):
            model.n_threads = bad
    assert model.n_threads is None
    two = make_model([64, 256, 4], ["tanh", "softmax"])
    two.n_threads = 2
    a, b = copy.deepcopy(two), make_model([64, 256, 4], ["tanh", "softmax"])
    a.n_threads, b.n_threads = 2, 1
    for _ in range(2):
        assert a.train_step(X, np.arange(600) % 4) == pytest.approx(
            b.train_step(X, np.arange(600) % 4), rel=1e-12)
    assert_close(a.params, b.params, rtol=1e-12)


def test_concurrent_train_steps_are_serialized():
    model = make_model([8, 16, 3], ["tanh", "softmax"], optimizer=Adam(lr=1e-3))
    errors = []

    def work(seed):
        rng = np.random.default_rng(seed)
        try:
            for _ in range(100):
                X = rng.standard_normal((int(rng.integers(1, 40)), 8))
                loss = model.train_step(X, rng.integers(0, 3, X.shape[0]))
                assert np.isfinite(loss)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    _run_all([threading.Thread(target=work, args=(s,)) for s in range(2)])
    assert errors == []
    assert model.optimizer.t == 200
    assert np.all(np.isfinite(model.params))


# -- 6. bad input --------------------------------------------------------------------------------
# Every case runs on float32 and float64 models with inputs already in the model's layout
# (C-contiguous, model dtype, int64 labels) where possible, so that a fast path that checks
# arrays in compiled code is exercised as well as the general one.
@pytest.fixture(params=["float32", "float64"])
def trained(request):
    """A classifier (with dropout), a regressor, a one-output regressor and a multi-label
    model, each after two steps (so optimizer state and the rng stream are non-trivial)."""
    dt = request.param
    models = {
        "clf": make_model([4, 6, 3], ["tanh", "softmax"], optimizer=Adam(lr=0.01),
                          dropout={1: 0.2}, dtype=dt),
        "reg": make_model([4, 6, 2], ["tanh", "identity"], dtype=dt,
                          optimizer=SGD(lr=0.01, momentum=0.9)),
        "reg1": make_model([4, 3, 1], ["tanh", "identity"], optimizer=SGD(lr=0.01), dtype=dt),
        "bce": make_model([4, 5, 3], ["relu", "sigmoid"], optimizer=RMSprop(lr=0.01),
                          dtype=dt),
    }
    X = data(10, 4, dtype=dt)
    for _ in range(2):
        models["clf"].train_step(X, np.arange(10) % 3)
        models["reg"].train_step(X, data(10, 2, 1, dtype=dt))
        models["reg1"].train_step(X, data(10, 1, 1, dtype=dt)[:, 0])
        models["bce"].train_step(X, (data(10, 3, 2) > 0).astype(dt))
    return models


def _bad(model, call, exc, match):
    snap = snapshot(model)
    with pytest.raises(exc, match=match):
        call()
    assert_same_state(model, snap)


def _X(m, n=10, width=4, seed=0):
    return data(n, width, seed, dtype=m.dtype)


Y10 = np.arange(10, dtype=np.int64) % 3


def _with(arr, index, value):
    """A copy of arr with arr[index] = value (float64 if value does not fit arr's dtype)."""
    arr = np.array(arr)
    if arr.dtype.kind in "iu" and not float(value).is_integer():
        arr = arr.astype(np.float64)
    arr[index] = value
    return arr


def _R(m, k=2):
    return data(10, k, 1, dtype=m.dtype)


CLF_BAD = [
    ("label out of range", lambda m: m.train_step(_X(m), _with(Y10, 2, 3)), ValueError,
     r"\by\b.*\[0, 2\]"),
    ("label out of range int32", lambda m: m.train_step(_X(m), _with(Y10, 2, 3).astype(
        np.int32)), ValueError, r"\by\b"),
    ("label out of range (n, 1)", lambda m: m.train_step(_X(m), _with(Y10, 9, 3)[:, None]),
     ValueError, r"\by\b"),
    ("huge label", lambda m: m.train_step(_X(m), _with(Y10, 2, 2**40)), ValueError, r"\by\b"),
    ("negative label", lambda m: m.train_step(_X(m), _with(Y10, 0, -1)), ValueError, r"\by\b"),
    ("non-integral label", lambda m: m.train_step(_X(m), _with(Y10, 4, 3.5)), ValueError,
     r"\by\b.*integer"),
    ("non-integral float label 0.5", lambda m: m.train_step(_X(m), _with(Y10, 4, 0.5)),
     ValueError, r"\by\b.*integer"),
    ("length mismatch", lambda m: m.train_step(_X(m), Y10[:9]), ValueError, r"\by\b"),
    ("length mismatch longer y", lambda m: m.train_step(_X(m, 9), Y10), ValueError, r"\by\b"),
    ("NaN in X", lambda m: m.train_step(_with(_X(m), (1, 2), np.nan), Y10), ValueError,
     r"\bX\b"),
    ("inf in X", lambda m: m.train_step(_with(_X(m), (3, 0), np.inf), Y10), ValueError,
     r"\bX\b"),
    ("-inf in last X row", lambda m: m.train_step(_with(_X(m), (9, 3), -np.inf), Y10),
     ValueError, r"\bX\b"),
    ("NaN label", lambda m: m.train_step(_X(m), _with(Y10, 1, np.nan)), ValueError, r"\by\b"),
    ("complex X", lambda m: m.train_step(_X(m) + 0j, Y10), TypeError, r"\bX\b"),
    ("string labels", lambda m: m.train_step(_X(m), np.array(list("abcabcabca"))), TypeError,
     r"\by\b"),
    ("object X", lambda m: m.train_step(np.array(_X(m), dtype=object), Y10), TypeError,
     r"\bX\b"),
    ("empty batch", lambda m: m.train_step(_X(m)[:0], Y10[:0]), ValueError, r"\bX\b"),
    ("wrong width", lambda m: m.train_step(_X(m, width=5), Y10), ValueError, r"\bX\b"),
    ("1-D X", lambda m: m.train_step(_X(m)[0], Y10[:1]), ValueError, r"\bX\b"),
    ("3-D y", lambda m: m.train_step(_X(m), np.zeros((10, 3, 1), m.dtype)), ValueError,
     r"\by\b"),
    ("prob rows not summing to 1", lambda m: m.train_step(_X(m), np.full((10, 3), 0.5,
                                                                         m.dtype)),
     ValueError, r"\by\b.*sum"),
    ("negative prob", lambda m: m.train_step(_X(m), np.tile(np.array([1.5, -0.5, 0], m.dtype),
                                                            (10, 1))), ValueError, r"\by\b"),
    ("NaN prob row", lambda m: m.train_step(_X(m), _with(np.eye(3, dtype=m.dtype)[Y10],
                                                         (5, 1), np.nan)),
     ValueError, r"\by\b"),
    ("prob rows wrong width", lambda m: m.train_step(_X(m), np.eye(4, dtype=m.dtype)[Y10]),
     ValueError, r"\by\b"),
    ("negative sample_weight", lambda m: m.train_step(_X(m), Y10, sample_weight=_with(
        np.ones(10, m.dtype), 3, -1)), ValueError, "sample_weight"),
    ("zero sample_weight", lambda m: m.train_step(_X(m), Y10, sample_weight=np.zeros(10)),
     ValueError, "sample_weight"),
    ("NaN sample_weight", lambda m: m.train_step(_X(m), Y10, sample_weight=_with(
        np.ones(10, m.dtype), 3, np.nan)), ValueError, "sample_weight"),
    ("short sample_weight", lambda m: m.train_step(_X(m), Y10, sample_weight=np.ones(9)),
     ValueError, "sample_weight"),
    ("fit batch_size 0", lambda m: m.fit(_X(m), Y10, batch_size=0, verbose=0), ValueError,
     "batch_size"),
    ("fit batch_size float", lambda m: m.fit(_X(m), Y10, batch_size=2.5, verbose=0), TypeError,
     "batch_size"),
    ("fit negative epochs", lambda m: m.fit(_X(m), Y10, epochs=-1, verbose=0), ValueError,
     "epochs"),
    ("fit validation_split 1.0", lambda m: m.fit(_X(m), Y10, validation_split=1.0, verbose=0),
     ValueError, "validation_split"),
    ("fit validation_split -0.1", lambda m: m.fit(_X(m), Y10, validation_split=-0.1,
                                                  verbose=0), ValueError, "validation_split"),
    ("fit validation_split 1.5", lambda m: m.fit(_X(m), Y10, validation_split=1.5, verbose=0),
     ValueError, "validation_split"),
    ("fit validation_split tiny", lambda m: m.fit(_X(m), Y10, validation_split=0.01,
                                                  verbose=0), ValueError, "validation_split"),
    ("fit validation_split str", lambda m: m.fit(_X(m), Y10, validation_split="0.2",
                                                 verbose=0), TypeError, "validation_split"),
    ("fit validation_split NaN", lambda m: m.fit(_X(m), Y10, validation_split=float("nan"),
                                                 verbose=0), ValueError, "validation_split"),
    ("fit label out of range", lambda m: m.fit(_X(m), _with(Y10, 9, 7), verbose=0), ValueError,
     r"\by\b"),
    ("fit NaN X", lambda m: m.fit(_with(_X(m), (0, 0), np.nan), Y10, verbose=0), ValueError,
     r"\bX\b"),
    ("fit NaN X in validation part", lambda m: m.fit(_with(_X(m), (9, 0), np.nan), Y10,
                                                     validation_split=0.2, verbose=0),
     ValueError, r"\bX\b"),
    ("fit zero weights after split", lambda m: m.fit(_X(m), Y10, sample_weight=_with(
        np.zeros(10), 9, 1.0), validation_split=0.2, verbose=0), ValueError, "sample_weight"),
    ("fit bad validation_data", lambda m: m.fit(_X(m), Y10, validation_data=(_X(m),),
                                                verbose=0), ValueError, "validation_data"),
    ("fit bad validation labels", lambda m: m.fit(_X(m), Y10, validation_data=(_X(m), Y10 + 5),
                                                  verbose=0), ValueError, "validation_data"),
    ("fit bad validation X", lambda m: m.fit(_X(m), Y10, validation_data=(_X(m)[:, :3], Y10),
                                             verbose=0), ValueError, "validation_data"),
    ("fit bad callbacks", lambda m: m.fit(_X(m), Y10, callbacks=[object()], verbose=0),
     TypeError, "callbacks"),
    ("fit bad verbose", lambda m: m.fit(_X(m), Y10, verbose=7), ValueError, "verbose"),
    ("predict wrong width", lambda m: m.predict(_X(m, 3, 5)), ValueError, r"\bX\b"),
    ("predict empty", lambda m: m.predict(np.zeros((0, 4))), ValueError, r"\bX\b"),
    ("predict NaN", lambda m: m.predict(_with(_X(m), (2, 2), np.nan)), ValueError, r"\bX\b"),
    ("predict complex", lambda m: m.predict(_X(m) * 1j), TypeError, r"\bX\b"),
    ("predict batch_size 0", lambda m: m.predict(_X(m), batch_size=0), ValueError,
     "batch_size"),
    ("evaluate length mismatch", lambda m: m.evaluate(_X(m), Y10[:3]), ValueError, r"\by\b"),
    ("evaluate bad labels", lambda m: m.evaluate(_X(m), Y10 - 1), ValueError, r"\by\b"),
    ("forward wrong width", lambda m: m.forward(_X(m, 3, 5)), ValueError, r"\bX\b"),
]

REG_BAD = [
    ("NaN in y", lambda m: m.train_step(_X(m), _with(_R(m), (2, 1), np.nan)), ValueError,
     r"\by\b"),
    ("inf in y", lambda m: m.train_step(_X(m), _with(_R(m), (2, 1), -np.inf)), ValueError,
     r"\by\b"),
    ("NaN in last y", lambda m: m.train_step(_X(m), _with(_R(m), (9, 1), np.nan)), ValueError,
     r"\by\b"),
    ("NaN in X", lambda m: m.train_step(_with(_X(m), (9, 3), np.nan), _R(m)), ValueError,
     r"\bX\b"),
    ("y wrong width", lambda m: m.train_step(_X(m), _R(m)[:, :1]), ValueError, r"\by\b"),
    ("y too wide", lambda m: m.train_step(_X(m), _R(m, 3)), ValueError, r"\by\b"),
    ("y too short", lambda m: m.train_step(_X(m), _R(m)[:9]), ValueError, r"\by\b"),
    ("1-D y for 2 outputs", lambda m: m.train_step(_X(m), _R(m)[:, 0].copy()), ValueError,
     r"\by\b"),
    ("string y", lambda m: m.train_step(_X(m), "abc"), TypeError, r"\by\b"),
    ("complex y", lambda m: m.train_step(_X(m), _R(m) * 1j), TypeError, r"\by\b"),
    ("fit NaN y", lambda m: m.fit(_X(m), _with(_R(m), (0, 0), np.nan), verbose=0), ValueError,
     r"\by\b"),
    ("backward bad y", lambda m: (m.forward(_X(m)), m.backward(_R(m)[:5])), ValueError,
     r"\by\b"),
]

REG1_BAD = [
    ("NaN in 1-D y", lambda m: m.train_step(_X(m), _with(_R(m, 1)[:, 0], 4, np.nan)),
     ValueError, r"\by\b"),
    ("inf in (n, 1) y", lambda m: m.train_step(_X(m), _with(_R(m, 1), (4, 0), np.inf)),
     ValueError, r"\by\b"),
    ("short 1-D y", lambda m: m.train_step(_X(m), _R(m, 1)[:9, 0].copy()), ValueError,
     r"\by\b"),
]

BCE_BAD = [
    ("target above 1", lambda m: m.train_step(_X(m), _with((_R(m, 3) > 0).astype(m.dtype),
                                                           (3, 2), 1.5)), ValueError,
     r"\by\b.*\[0, 1\]"),
    ("negative target", lambda m: m.train_step(_X(m), _with((_R(m, 3) > 0).astype(m.dtype),
                                                            (0, 0), -0.25)), ValueError,
     r"\by\b"),
    ("NaN target", lambda m: m.train_step(_X(m), _with((_R(m, 3) > 0).astype(m.dtype),
                                                       (0, 0), np.nan)), ValueError,
     r"\by\b"),
    ("labels instead of rows", lambda m: m.train_step(_X(m), Y10), ValueError, r"\by\b"),
]

ALL_BAD = ([("clf",) + c for c in CLF_BAD] + [("reg",) + c for c in REG_BAD]
           + [("reg1",) + c for c in REG1_BAD] + [("bce",) + c for c in BCE_BAD])


@pytest.mark.parametrize("which,name,call,exc,match", ALL_BAD,
                         ids=[f"{c[0]}: {c[1]}" for c in ALL_BAD])
def test_bad_input_raises_naming_the_argument_and_changes_nothing(trained, which, name, call,
                                                                  exc, match):
    model = trained[which]
    _bad(model, lambda: call(model), exc, match)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_non_native_byte_order_inputs_are_converted(dtype):
    X = data(12, 4, dtype=dtype)
    y = np.arange(12) % 3
    R = data(12, 2, 1, dtype=dtype)
    a, b = _clf(dtype=dtype), _clf(dtype=dtype)
    assert a.train_step(X, y) == b.train_step(X.astype(X.dtype.newbyteorder(">")), y)
    np.testing.assert_array_equal(a.params, b.params)
    c = make_model([4, 5, 2], ["tanh", "identity"], dtype=dtype)
    d = make_model([4, 5, 2], ["tanh", "identity"], dtype=dtype)
    assert c.train_step(X, R) == d.train_step(X, R.astype(R.dtype.newbyteorder(">")))


def test_non_native_byte_order_in_the_python_paths():
    X, y = data(12, 4), np.arange(12) % 3
    Xb = X.astype(">f8")
    model = _clf()
    np.testing.assert_array_equal(model.predict(Xb), model.predict(X))
    assert model.evaluate(Xb, y.astype(">i8")) == model.evaluate(X, y)
    a, b = _clf(), _clf()
    a.train_step(X, y, sample_weight=np.ones(12))
    b.train_step(Xb, y.astype(">i4"), sample_weight=np.ones(12, ">f8"))
    np.testing.assert_array_equal(a.params, b.params)
    a.fit(X, y, epochs=1, verbose=0)
    b.fit(Xb, y.astype(">i8"), epochs=1, verbose=0)
    np.testing.assert_array_equal(a.params, b.params)


def test_good_inputs_of_every_layout_give_identical_steps():
    """The same batch as C-contiguous model-dtype arrays, lists, Fortran order, other int /
    float dtypes, (n, 1) labels, one-hot rows: the same step, bit for bit."""
    X = data(12, 4)
    y = np.arange(12) % 3
    variants = [
        (X, y), (X.tolist(), y.tolist()), (np.asfortranarray(X), y.astype(np.int32)),
        (X, y.astype(np.float64)), (X, y[:, None]), (np.repeat(X, 2, 0)[::2], y.astype(np.uint8)),
    ]
    results = []
    for Xi, yi in variants:
        m = _clf()
        losses = [m.train_step(Xi, yi) for _ in range(3)]
        results.append((losses, m.params.copy()))
    for losses, params in results[1:]:
        assert losses == results[0][0]
        np.testing.assert_array_equal(params, results[0][1])
    m = _clf()                       # one-hot rows: the same loss up to rounding
    losses = [m.train_step(X, np.eye(3)[y]) for _ in range(3)]
    assert losses == pytest.approx(results[0][0], rel=1e-12)
    assert_close(m.params, results[0][1], rtol=1e-12)


def test_float64_values_beyond_float32_are_rejected():
    model = make_model([2, 2], ["identity"], dtype="float32")
    snap = snapshot(model)
    with pytest.raises(ValueError, match=r"\bX\b.*float32"):
        model.train_step(np.array([[1e300, 0.0]]), np.zeros((1, 2)))
    assert_same_state(model, snap)


def test_inputs_are_never_written_to():
    model = make_model([4, 6, 3], ["tanh", "softmax"], optimizer=Adam(lr=0.1))
    X, y = data(10, 4), np.arange(10) % 3
    w = np.linspace(0.1, 1, 10)
    copies = [a.copy() for a in (X, y, w)]
    for a in (X, y, w):
        a.flags.writeable = False        # read-only inputs are accepted
    model.train_step(X, y, sample_weight=w)
    model.fit(X, y, sample_weight=w, epochs=2, batch_size=3, verbose=0)
    model.forward(X)
    model.backward(y, sample_weight=w)
    model.predict(X)
    model.evaluate(X, y, sample_weight=w)
    for a, c in zip((X, y, w), copies):
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("make,exc,match", [
    (lambda: fp.Sequential([fp.Dense(3, 4), fp.Dense(5, 2)]), ValueError, "n_in"),
    (lambda: fp.Sequential([fp.Dense(3, 4)], loss="hinge"), ValueError, "loss"),
    (lambda: fp.Sequential([fp.Dense(3, 4)], loss=3), TypeError, "loss"),
    (lambda: fp.Sequential([fp.Dense(3, 4)], optimizer="adamax"), ValueError, "optimizer"),
    (lambda: fp.Sequential([fp.Dense(3, 4)], optimizer=0.1), TypeError, "optimizer"),
    (lambda: fp.Sequential([fp.Dense(3, 4, "tanh")], loss="cross_entropy"), ValueError,
     "softmax"),
    (lambda: fp.Sequential([fp.Dense(3, 4, "softmax")], loss="binary_cross_entropy"),
     ValueError, "sigmoid"),
    (lambda: fp.Sequential([fp.Dense(3, 4), fp.Dropout(0.5)]), ValueError, "last layer"),
    (lambda: fp.Sequential([fp.Dropout(0.5)]), ValueError, "Dense"),
    (lambda: fp.Sequential([]), ValueError, "Dense"),
    (lambda: fp.Sequential([fp.Dense(3, 4), "relu"]), TypeError, r"layers\[1\]"),
    (lambda: fp.Sequential("dense"), TypeError, "layers"),
    (lambda: fp.Sequential([fp.Dense(3, 4)], dtype="float16"), ValueError, "dtype"),
    (lambda: fp.Sequential([fp.Dense(3, 4)], seed=-1), ValueError, "seed"),
    (lambda: fp.Sequential([fp.Dense(3, 4)], seed=1.5), TypeError, "seed"),
    (lambda: fp.Dropout(1.0), ValueError, "rate"),
])
def test_bad_construction(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_duplicate_layer_object_is_rejected_and_layer_untouched():
    d = fp.Dense(4, 4, activation="tanh", seed=0)
    W = d.W.copy()
    with pytest.raises(ValueError, match="twice"):
        fp.Sequential([d, d])
    np.testing.assert_array_equal(d.W, W)
    # the same Dropout object twice is harmless: two Dropout nodes of the tape
    drop = fp.Dropout(0.5)
    m = fp.Sequential([fp.Dense(4, 4), drop, drop, fp.Dense(4, 2)])
    assert [node[4] for node in m._engine.nodes] == [0.0, 0.5, 0.5, 0.0]


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(loss="cross_entropy"), ValueError, "softmax"),
    (dict(optimizer="nope"), ValueError, "optimizer"),
    (dict(seed=-3), ValueError, "seed"),
    (dict(n_threads=0), ValueError, "n_threads"),
    (dict(n_threads=2.5), TypeError, "n_threads"),
    (dict(dtype="int8"), ValueError, "dtype"),
])
def test_failed_construction_leaves_layers_untouched(kwargs, exc, match):
    d = fp.Dense(3, 4, activation="tanh", seed=0)        # float32
    W, b = d.W, d.b
    with pytest.raises(exc, match=match):
        fp.Sequential([d], **{"dtype": "float64", **kwargs})
    assert d.W is W and d.b is b and d.dW is None and d.W.dtype == np.float32


# -- 7. memory -----------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["fast", "weighted", "sgd", "textbook"])
@pytest.mark.parametrize("dropout", [None, {1: 0.2}], ids=["nodrop", "dropout"])
def test_train_step_steady_state_does_not_grow_memory(dropout, path):
    model = make_model([16, 32, 4], ["relu", "softmax"], dtype="float32", dropout=dropout,
                       optimizer=SGD(lr=1e-3) if path == "sgd" else Adam(lr=1e-3))
    X = data(32, 16, dtype=np.float32)
    y = np.arange(32) % 4
    w = np.ones(32, dtype=np.float32) if path == "weighted" else None

    def step():
        if path == "textbook":
            model.forward(X)
            model.backward(y)
            model.apply_gradients()
        else:
            model.train_step(X, y, sample_weight=w)

    # warm-up: CPython's free lists (tuples, floats) fill during the first thousands of calls
    # of the Python-level paths, and tracemalloc counts blocks parked there as allocated
    warm = 200 if path in ("fast", "sgd") else 2500
    for _ in range(warm):
        step()
    ws = model._engine.workspace_nbytes()
    cap = model._engine.capacity
    tracemalloc.start()
    try:
        for _ in range(50):
            step()
        before = tracemalloc.take_snapshot()
        for _ in range(1000):
            step()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    growth = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert growth < 10_000, growth
    assert model._engine.workspace_nbytes() == ws and model._engine.capacity == cap
    assert model.optimizer.t == warm + 1050


def test_workspace_grows_once_for_larger_batches_and_never_shrinks():
    model = make_model([8, 16, 3], ["tanh", "softmax"])
    model.train_step(data(10, 8), np.zeros(10, int))
    small = model._engine.workspace_nbytes()
    model.train_step(data(50, 8), np.zeros(50, int))
    big = model._engine.workspace_nbytes()
    assert big > small
    for n in (5, 50, 20, 1):
        model.train_step(data(n, 8), np.zeros(n, int))
        model.forward(data(n, 8))
    assert model._engine.workspace_nbytes() == big
    model.predict(data(500, 8))                # predict uses its own scratch
    assert model._engine.workspace_nbytes() == big
    X, y = data(100, 8), np.zeros(100, int)
    model.fit(X, y, epochs=1, batch_size=16, verbose=0)
    assert model._engine.workspace_nbytes() == big    # batches of 16 fit in 50 rows


# -- 8. save / load / pickle / deepcopy ----------------------------------------------------------
def _roundtrips(tmp_path):
    def save_load(m):
        path = tmp_path / "m.fpz"
        m.save(path)
        return fp.load(path)
    return {"save_load": save_load, "pickle": lambda m: pickle.loads(pickle.dumps(m)),
            "deepcopy": copy.deepcopy}


@pytest.mark.parametrize("how", ["save_load", "pickle", "deepcopy"])
@pytest.mark.parametrize("opt_name", ["sgd_nesterov", "sgd_clip", "adam_amsgrad_wd", "adamw",
                                      "rmsprop_centered_momentum", "adagrad"])
@pytest.mark.parametrize("dropout", [None, {1: 0.3}], ids=["nodrop", "dropout"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_roundtrip_gives_identical_predictions_and_training(tmp_path, how, opt_name, dropout,
                                                            dtype):
    model = make_model([5, 8, 3], ["tanh", "softmax"], optimizer=OPTIMIZERS[opt_name](),
                       dtype=dtype, dropout=dropout, seed=7)
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((9, 5)), rng.integers(0, 3, 9)) for _ in range(5)]
    for X, y in batches[:2]:
        model.train_step(X, y)
    clone = _roundtrips(tmp_path)[how](model)
    assert clone is not model and type(clone) is fp.Sequential
    assert clone.get_config() == model.get_config()
    assert clone.dtype == model.dtype and clone.optimizer.t == model.optimizer.t == 2
    assert not np.shares_memory(clone.params, model.params)
    np.testing.assert_array_equal(clone.params, model.params)
    for k, v in model.optimizer.state.items():
        np.testing.assert_array_equal(clone.optimizer.state[k], v)
    np.testing.assert_array_equal(clone.get_rng_state(), model.get_rng_state())
    Xt = rng.standard_normal((11, 5))
    np.testing.assert_array_equal(clone.predict(Xt), model.predict(Xt))
    for X, y in batches[2:]:
        assert clone.train_step(X, y) == model.train_step(X, y)
        np.testing.assert_array_equal(clone.params, model.params)
    # and the clone's layers are views of the clone's buffers, independent of the original
    clone._dense[0].W[...] = 0
    assert np.all(clone.params[:40] == 0) and not np.all(model.params[:40] == 0)


def test_roundtrip_keeps_schedule_and_fit_continues_identically(tmp_path):
    X, y = _blobs(40)
    model = _clf(optimizer=SGD(lr=0.1, momentum=0.9, schedule=StepLR(1, 0.5)))
    model.fit(X, y, epochs=2, batch_size=8, verbose=0)
    clone = copy.deepcopy(model)
    assert clone.optimizer.schedule == model.optimizer.schedule
    ha = model.fit(X, y, epochs=2, batch_size=8, verbose=0)
    hb = clone.fit(X, y, epochs=2, batch_size=8, verbose=0)
    np.testing.assert_array_equal(model.params, clone.params)
    assert ha.history == hb.history


def test_roundtrip_keeps_the_current_scheduled_lr(tmp_path):
    X, y = _blobs(40)
    model = _clf(optimizer=SGD(lr=0.1, schedule=StepLR(1, 0.5)))
    model.fit(X, y, epochs=3, batch_size=8, verbose=0)
    assert model.optimizer.lr == 0.025
    clone = copy.deepcopy(model)
    assert clone.optimizer.lr == model.optimizer.lr
    assert clone.train_step(X, y) == model.train_step(X, y)
    np.testing.assert_array_equal(clone.params, model.params)


def test_corrupt_files_raise_value_error(tmp_path):
    model = _clf()
    path = tmp_path / "m.fpz"
    model.save(path)
    raw = path.read_bytes()
    for name, content in [("garbage", b"not a model at all" * 10), ("truncated", raw[:len(raw)
                                                                                 // 2]),
                          ("empty", b""),
                          ("flipped", raw[:len(raw) // 2] + bytes([raw[len(raw) // 2] ^ 0xFF])
                           + raw[len(raw) // 2 + 1:])]:
        bad = tmp_path / f"{name}.fpz"
        bad.write_bytes(content)
        with pytest.raises(ValueError, match="cannot load model"):
            fp.load(bad)
    with pytest.raises(ValueError, match="not a pickled fastprop model"):
        fp.Sequential.__new__(fp.Sequential).__setstate__({"x": 1})


# -- 9. gradcheck --------------------------------------------------------------------------------
SMOOTH = ["identity", "elu", "gelu", "sigmoid", "tanh", "softplus", "silu"]


@pytest.mark.parametrize("hidden", SMOOTH)
def test_gradcheck_every_smooth_hidden_activation(hidden):
    model = make_model([4, 6, 5, 3], [hidden, hidden, "softmax"], dtype="float32")
    X, y = data(8, 4), np.arange(8) % 3
    params = model.params.copy()
    assert fp.gradcheck(model, X, y) < 1e-6
    np.testing.assert_array_equal(model.params, params)      # the model is untouched
    assert model.optimizer.t == 0


@pytest.mark.parametrize("case", LOSS_CASES, ids=LOSS_IDS)
def test_gradcheck_every_loss(case):
    loss, act, _ = case
    model = make_model([4, 6, 3], ["tanh", act], loss=loss)
    rng = np.random.default_rng(9)
    X = rng.standard_normal((10, 4))
    y, _ = _targets(case, rng, n=10)
    assert fp.gradcheck(model, X, y) < 1e-6
    assert fp.gradcheck(model, X, y, sample_weight=rng.random(10) + 0.1) < 1e-6


def test_gradcheck_subset_and_dropout_model():
    model = make_model([4, 20, 3], ["tanh", "softmax"], dropout={1: 0.5})
    X, y = data(8, 4), np.arange(8) % 3
    rng_state = model.get_rng_state()
    assert fp.gradcheck(model, X, y, max_params=5) < 1e-6   # inference mode: dropout off
    np.testing.assert_array_equal(model.get_rng_state(), rng_state)
    with pytest.raises(TypeError, match="model"):
        fp.gradcheck("model", X, y)


class _WrongBackwardEngine(fp_model._engine.Engine):
    """The compiled engine with a perturbed analytic gradient (the grads buffer is the 4th
    constructor argument: nodes, loss, params, grads, ...)."""

    def __init__(self, *args):
        super().__init__(*args)
        self._g = args[3]

    def backward(self, *args):
        loss = super().backward(*args)
        self._g[self._g.size // 2] += 0.5 * (abs(self._g).max() + 1e-3)
        return loss


@pytest.mark.parametrize("scale_loss", [False, True], ids=["wrong-grad", "wrong-loss"])
def test_gradcheck_detects_a_wrong_gradient(monkeypatch, scale_loss):
    model = make_model([4, 6, 3], ["tanh", "softmax"])
    X, y = data(8, 4), np.arange(8) % 3
    assert fp.gradcheck(model, X, y) < 1e-6
    if scale_loss:   # the loss gradcheck differentiates is 1.1 L: the analytic one is wrong
        orig = fp_model._closs.loss_and_grad
        monkeypatch.setattr(fp_model._closs, "loss_and_grad", lambda *a: 1.1 * orig(*a))
    else:
        monkeypatch.setattr(fp_model._engine, "Engine", _WrongBackwardEngine)
    assert fp.gradcheck(model, X, y) > 1e-2


def test_fast_paths_fall_back_to_full_validation():
    # train_step and predict take arrays already in the engine's layout in C; every other
    # input goes through the Python checks, with the same results or the same errors
    X, y = _blobs(20)
    for dtype in ("float32", "float64"):
        a, b = _clf(dtype=dtype), _clf(dtype=dtype)
        Xd = X.astype(dtype)
        la = a.train_step(Xd, y.astype(np.int64))           # fast path
        lb = b.train_step(Xd.tolist(), y.astype(np.int32))  # slow path, converted
        assert la == lb
        np.testing.assert_array_equal(a.params, b.params)
        np.testing.assert_array_equal(a.predict(Xd), b.predict(np.asfortranarray(Xd)))
        bad = Xd.copy()
        bad[3, 1] = np.nan
        before = a.params.copy()
        with pytest.raises(ValueError, match="X contains NaN"):
            a.predict(bad)
        with pytest.raises(ValueError, match="X contains NaN"):
            a.train_step(bad, y)
        with pytest.raises(ValueError, match="y"):
            a.train_step(Xd, np.where(np.arange(20) == 5, 7, y))   # label out of range
        np.testing.assert_array_equal(a.params, before)


def test_dropout_rate_is_read_only():
    layer = fp.Dropout(0.3)
    with pytest.raises(AttributeError):
        layer.rate = 0.5
    assert layer.rate == 0.3


def test_fit_rejects_non_bool_shuffle():
    X, y = _blobs(20)
    model = _clf()
    before = model.params.copy()
    with pytest.raises(TypeError, match="shuffle"):
        model.fit(X, y, shuffle="False", verbose=0)
    np.testing.assert_array_equal(model.params, before)


def test_blas_thread_setting_is_restored_after_concurrent_calls():
    # the engine runs small layers on one BLAS thread and restores the caller's setting, also
    # when several threads predict and train at once
    if fp.get_num_threads() is None:
        pytest.skip("SciPy's BLAS is not OpenBLAS: thread counts are left to it")
    before = fp.get_num_threads()
    try:
        fp.set_num_threads(2)
        X, y = _blobs(64)
        big = make_model([4, 2048, 3], ["relu", "softmax"], seed=0)   # 64*4*2048 < WORK_MIN
        small = _clf()

        def work(i):
            for _ in range(20):
                (big if i % 2 else small).predict(X)
                if i == 0:
                    small.train_step(X, y)
        _run_all([threading.Thread(target=work, args=(i,)) for i in range(4)])
        assert fp.get_num_threads() == 2
        small.n_threads = 1
        small.train_step(X, y)
        assert fp.get_num_threads() == 2 and small.n_threads == 1
        with pytest.raises(ValueError, match="n_threads"):
            small.n_threads = 0
    finally:
        fp.set_num_threads(before)


def test_fit_chunked_batches_equal_one_batch_per_call(capsys):
    # fit runs many batches per compiled call unless a callback needs to run between batches;
    # the results must not depend on it
    X, y = _blobs(100)

    class Counter(fp.callbacks.Callback):
        def __init__(self):
            self.batches = 0

        def on_train_batch_end(self, batch, logs=None):
            self.batches += 1

    runs = []
    for kwargs in (dict(verbose=0), dict(verbose=1), dict(verbose=0, callbacks=[Counter()])):
        model = _clf(optimizer=Adam(lr=0.01), dropout={1: 0.2})
        h = model.fit(X, y, epochs=3, batch_size=7, **kwargs)
        runs.append((model.params.copy(), h.history["loss"], h.history["accuracy"],
                     model.optimizer.t))
        if "callbacks" in kwargs:
            assert kwargs["callbacks"][0].batches == 3 * 15
    for params, loss, acc, t in runs[1:]:
        np.testing.assert_array_equal(params, runs[0][0])
        assert loss == runs[0][1] and acc == runs[0][2] and t == runs[0][3] == 45
    capsys.readouterr()


def test_fit_shuffle_is_a_uniform_permutation_from_the_model_stream():
    # fit's shuffle (Fisher-Yates in C on the model's splitmix64 stream)
    model = _clf(seed=5)
    for n in (0, 1, 2, 7, 1000):
        order = model._permutation(n)
        assert order.dtype == np.int64 and order.shape == (n,)
        np.testing.assert_array_equal(np.sort(order), np.arange(n))
    # the stream advances, and the same state gives the same order
    state = model.get_rng_state()
    a = model._permutation(50)
    b = model._permutation(50)
    assert not np.array_equal(a, b)
    model.set_rng_state(state)
    np.testing.assert_array_equal(model._permutation(50), a)
    # every one of the 24 orders of 4 items, about equally often (chi-square, 23 dof:
    # 0.1 % critical value 49.7)
    counts = {}
    draws = 24_000
    for _ in range(draws):
        key = tuple(model._permutation(4))
        counts[key] = counts.get(key, 0) + 1
    assert len(counts) == 24
    expected = draws / 24
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 49.7
    # and every position of a long shuffle takes every value about equally often
    hits = np.zeros((10, 10))
    for _ in range(5000):
        o = model._permutation(10)
        hits[np.arange(10), o] += 1
    assert np.abs(hits / 500 - 1).max() < 0.25


def test_fit_leaves_out_zero_weight_samples_even_a_whole_batch_of_them():
    # a minibatch whose weights are all 0 used to make the loss 0 / 0 and the model NaN
    X, y = _blobs(40)
    w = np.ones(40)
    w[:10] = 0          # the whole first batch of 10
    w[25] = 0
    keep = w > 0
    runs = []
    for Xi, yi, wi in ((X, y, w), (X[keep], y[keep], w[keep])):
        model = _clf(seed=3)
        h = model.fit(Xi, yi, epochs=3, batch_size=10, shuffle=False, sample_weight=wi,
                      verbose=0)
        assert np.all(np.isfinite(h.history["loss"])) and np.all(np.isfinite(model.params))
        runs.append((model.params.copy(), h.history["loss"]))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]
    with pytest.raises(ValueError, match="sample_weight"):
        _clf().fit(X, y, sample_weight=np.zeros(40), verbose=0)


@pytest.mark.parametrize("copy_fn", [lambda m: pickle.loads(pickle.dumps(m)), copy.deepcopy])
def test_pickle_and_deepcopy_keep_n_threads(copy_fn):
    for n_threads in (None, 1, 3):
        model = _clf()
        model.n_threads = n_threads
        assert copy_fn(model).n_threads == n_threads


def test_seeds_of_any_size_are_accepted_and_reproducible():
    def build():
        return fp.Sequential([fp.Dense(4, 5, activation="relu", seed=2**40), fp.Dropout(0.2),
                              fp.Dense(5, 3, activation="softmax", seed=2**64 + 1)],
                             seed=2**70)
    X, y = _blobs(30)
    a, b = build(), build()
    a.fit(X, y, epochs=2, batch_size=8, verbose=0)
    b.fit(X, y, epochs=2, batch_size=8, verbose=0)
    np.testing.assert_array_equal(a.params, b.params)
    for bad, exc in ((-1, ValueError), (True, TypeError), (1.5, TypeError)):
        with pytest.raises(exc, match="seed"):
            fp.Dense(4, 5, seed=bad)
        with pytest.raises(exc, match="seed"):
            fp.Sequential([fp.Dense(4, 3, activation="softmax")], seed=bad)


def test_sizes_beyond_memory_raise_instead_of_an_oom_kill(monkeypatch):
    # Linux overcommits: an allocation beyond the free memory succeeds and the process is
    # killed when the pages are touched; fastprop checks first
    from fastprop import _validation as V
    with pytest.raises(ValueError, match="Dense.*GiB, more than this machine's memory"):
        fp.Dense(30, 10**9)                                    # 120 GB of float32
    X, y = _blobs(50)
    model = _clf()
    p0, t0 = model.params.copy(), model.optimizer.t
    layers = [fp.Dense(4, 1000, seed=0), fp.Dense(1000, 3, activation="softmax")]
    monkeypatch.setattr(V, "_available_memory", lambda: 50_000)   # 50 kB left
    with pytest.raises(ValueError, match=r"Dense.*118.4 KiB, more than the 48.8 KiB of "
                                         r"memory available"):
        fp.Dense(100, 100)
    with pytest.raises(ValueError, match="optimizer state"):
        fp.Sequential(layers)
    # a batch whose workspace does not fit: nothing changes
    monkeypatch.setattr(V, "_available_memory", lambda: 1000)
    for call in (lambda: model.train_step(X, y), lambda: model.fit(X, y, batch_size=50,
                                                                    verbose=0)):
        with pytest.raises(ValueError, match="workspace for batches of 50 samples"):
            call()
        np.testing.assert_array_equal(model.params, p0)
        assert model.optimizer.t == t0
    monkeypatch.undo()
    model.train_step(X, y)                                     # fine again
    assert model.optimizer.t == t0 + 1


@pytest.mark.parametrize("layout", ["fast", "fortran"])
@pytest.mark.parametrize("optimizer", [lambda: SGD(lr=0.1), lambda: Adam(lr=0.01)],
                         ids=["fused-sgd", "adam"])
def test_a_step_that_would_make_the_model_not_finite_changes_nothing(layout, optimizer):
    # finite float32 inputs so large that z overflows: the step is refused, not applied
    model = make_model([4, 8, 3], ["relu", "identity"], loss="mse", dtype="float32",
                       optimizer=optimizer())
    X, _ = _blobs(12)
    X = X.astype(np.float32)
    y = np.random.default_rng(1).standard_normal((12, 3)).astype(np.float32)
    model.train_step(X, y)
    p0, t0 = model.params.copy(), model.optimizer.t
    state0 = {k: v.copy() for k, v in model.optimizer.state.items()}
    for big in (np.full((12, 4), 3e38, dtype=np.float32),       # the loss overflows
                np.where(np.arange(48).reshape(12, 4) == 0, 1e30, X).astype(np.float32)):
        # (the second: a finite loss of ~1e58 in double, gradients that overflow float32)
        if layout == "fortran":
            big = np.asfortranarray(big)
        with pytest.raises(ValueError, match="not updated"):
            model.train_step(big, y)
        np.testing.assert_array_equal(model.params, p0)
        assert model.optimizer.t == t0
        for k, v in model.optimizer.state.items():
            np.testing.assert_array_equal(v, state0[k])
    assert np.isfinite(model.train_step(X, y))
    assert model.optimizer.t == t0 + 1


def test_saturated_units_take_extreme_inputs_without_refusal():
    # tanh saturates: z = inf gives a = 1 and a zero gradient, a finite and valid step
    model = _clf(dtype="float32", optimizer=SGD(lr=0.1))
    X, y = _blobs(12)
    loss = model.train_step(np.full((12, 4), 3e38, dtype=np.float32), y)
    assert np.isfinite(loss) and np.all(np.isfinite(model.params))


def test_fit_skips_batches_whose_loss_is_not_finite_and_warns():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 4)) * 1e3
    y = X @ rng.standard_normal((4, 2))
    model = make_model([4, 16, 2], ["relu", "identity"], seed=0, dtype="float32",
                       optimizer=SGD(lr=1e8))                    # diverges at once
    with pytest.warns(RuntimeWarning, match="were skipped"):
        model.fit(X, y, epochs=3, batch_size=16, verbose=0)
    assert np.all(np.isfinite(model.params))                   # never NaN through a step
