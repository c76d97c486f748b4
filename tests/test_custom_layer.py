"""Custom layers in Python inside a compiled model (issue 11 item 5): the issue's Scale layer in
a model against the reference (its twin is itself) and PyTorch over several Adam steps, in
float32 and float64; gradcheck alone and in a model; fit, evaluate, predict, the textbook path,
compute_gradients / apply_gradients, every optimizer; save / load / pickle of a registered
layer; every bad result of the user's code, each changing nothing."""
import copy
import io
import pickle

import numpy as np
import pytest

import fastprop as fp
from fastprop import reference as R

from conftest import Scale, assert_close


class Softsign(fp.Layer):
    """A custom activation: no parameters."""

    def build(self, n_in):
        return n_in

    def forward(self, a_prev, training=False):
        return a_prev / (1 + np.abs(a_prev)), a_prev

    def backward(self, da, cache):
        return (da / (1 + np.abs(cache)) ** 2,)


class Pairs(fp.Layer):
    """Changes the width: a = [x, x**2] (n, 2 n_in)."""

    def build(self, n_in):
        self.n = n_in
        return 2 * n_in

    def forward(self, a_prev, training=False):
        return np.concatenate([a_prev, a_prev ** 2], axis=1), a_prev

    def backward(self, da, x):
        return (da[:, :self.n] + 2 * x * da[:, self.n:],)


class Counted(fp.Layer):
    """Parameters and state: a = x * w + c; ``calls`` counts the training forward calls."""

    def build(self, n_in):
        self.add_param("w", (n_in,), init="ones")
        self.add_param("c", (n_in,), init="zeros")
        self.add_state("calls", (1,))
        return n_in

    def forward(self, a_prev, training=False):
        if training:
            self.calls[...] += 1
        return a_prev * self.w + self.c, a_prev

    def backward(self, da, x):
        return da * self.w, (da * x).sum(0), da.sum(0)


def data(n=16, k=4, classes=3, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, k)).astype(dtype), rng.integers(0, classes, n)


def scale_model(dtype, optimizer=None, seed=0):
    m = fp.Sequential([fp.Dense(4, 8, activation="tanh", seed=seed), Scale(),
                       fp.Dense(8, 3, activation="softmax", seed=seed + 1)],
                      optimizer=optimizer or fp.optim.Adam(lr=0.05), dtype=dtype, seed=seed)
    m.layers[1].w[...] = np.random.default_rng(seed + 7).uniform(0.5, 1.5, 8)
    return m


def snapshot(model):
    state, t = model.optimizer.get_state()
    return (model.params.copy(), model.state.copy(), {k: np.array(v) for k, v in state.items()},
            t, model.get_rng_state().copy())


def assert_unchanged(model, snap):
    params, state, opt, t, rng = snap
    np.testing.assert_array_equal(model.params, params)
    np.testing.assert_array_equal(model.state, state)
    now, t_now = model.optimizer.get_state()
    assert t_now == t
    assert set(now) == set(opt)
    for k in opt:
        np.testing.assert_array_equal(now[k], opt[k])
    np.testing.assert_array_equal(model.get_rng_state(), rng)


# -- against the reference (the layer is its own twin) and PyTorch ---------------------------
def test_scale_trains_like_the_reference_over_adam_steps(dtype):
    X, y = data(dtype=dtype)
    m = scale_model(dtype)
    ref = R.ReferenceModel.from_model(m)
    for _ in range(5):
        loss = m.train_step(X, y)
        assert_close(loss, ref.train_step(X.astype(dtype), labels=y), dtype)
    assert_close(m.params, ref.params, dtype)
    assert_close(m.predict(X), ref.predict(X.astype(dtype)), dtype)
    assert m.layers[1].w.dtype == dtype
    assert np.shares_memory(m.layers[1].w, m.params)      # a view into the flat buffer
    assert not np.allclose(m.layers[1].w, 1.0)            # and it was trained


def _torch_net(m, torch):
    tdt = torch.float64 if m.dtype == np.float64 else torch.float32

    class TorchScale(torch.nn.Module):
        def __init__(self, w):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(w, dtype=tdt))

        def forward(self, x):
            return x * self.w

    d0, s, d1 = m.layers
    l0, l1 = torch.nn.Linear(4, 8).to(tdt), torch.nn.Linear(8, 3).to(tdt)
    with torch.no_grad():
        l0.weight.copy_(torch.tensor(d0.W.T)), l0.bias.copy_(torch.tensor(d0.b))
        l1.weight.copy_(torch.tensor(d1.W.T)), l1.bias.copy_(torch.tensor(d1.b))
    return torch.nn.Sequential(l0, torch.nn.Tanh(), TorchScale(np.array(s.w)), l1), tdt


def test_scale_trains_like_pytorch_over_adam_steps(dtype):
    torch = pytest.importorskip("torch")
    X, y = data(dtype=dtype)
    m = scale_model(dtype)
    net, tdt = _torch_net(m, torch)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    xt, yt = torch.tensor(X, dtype=tdt), torch.tensor(y)
    for _ in range(5):
        loss = m.train_step(X, y)
        opt.zero_grad()
        tl = torch.nn.functional.cross_entropy(net(xt), yt)
        tl.backward()
        opt.step()
        assert_close(loss, tl.item(), dtype, rtol=1e-5 if dtype == np.float32 else 1e-10)
    tol = 2e-4 if dtype == np.float32 else 1e-9
    assert_close(m.layers[1].w, net[2].w.detach().numpy(), dtype, rtol=tol)
    assert_close(m.layers[0].W, net[0].weight.detach().numpy().T, dtype, rtol=tol)
    assert_close(m.layers[2].W, net[3].weight.detach().numpy().T, dtype, rtol=tol)


@pytest.mark.parametrize("arrangement", ["first", "last", "two_in_a_row", "no_params",
                                         "state", "width_change"])
def test_positions_and_kinds_match_the_reference(arrangement, dtype):
    X, y = data(dtype=dtype)
    loss = None
    if arrangement == "first":
        layers = [Scale(), fp.Dense(4, 5, activation="relu", seed=0),
                  fp.Dense(5, 3, activation="softmax", seed=1)]
    elif arrangement == "last":              # last before the loss: its output is the network's
        layers = [fp.Dense(4, 5, activation="tanh", seed=0), fp.Dense(5, 3, seed=1), Scale()]
        loss = "mse"
        y = np.random.default_rng(1).standard_normal((X.shape[0], 3)).astype(dtype)
    elif arrangement == "two_in_a_row":
        layers = [fp.Dense(4, 5, seed=0), Scale(), Softsign(),
                  fp.Dense(5, 3, activation="softmax", seed=1)]
    elif arrangement == "no_params":
        layers = [fp.Dense(4, 5, seed=0), Softsign(), fp.Dense(5, 3, activation="softmax",
                                                                seed=1)]
    elif arrangement == "state":
        layers = [fp.Dense(4, 5, activation="tanh", seed=0), Counted(),
                  fp.Dense(5, 3, activation="softmax", seed=1)]
    else:
        layers = [fp.Dense(4, 5, activation="tanh", seed=0), Pairs(),
                  fp.Dense(3, activation="softmax", seed=1)]
    m = fp.Sequential(layers, loss=loss, optimizer=fp.optim.Adam(lr=0.05), dtype=dtype,
                      input_dim=4, seed=0)
    ref = R.ReferenceModel.from_model(m)
    kw = {"labels": y} if loss is None else {"y": y}
    for _ in range(4):
        assert_close(m.train_step(X, y), ref.train_step(X, **kw), dtype)
    assert_close(m.params, ref.params, dtype)
    assert_close(m.predict(X), ref.predict(X), dtype)
    if arrangement == "state":
        np.testing.assert_array_equal(m.layers[1].calls, [4])     # in model.state
        assert np.shares_memory(m.layers[1].calls, m.state)
        m.predict(X)
        m.evaluate(X, y)
        np.testing.assert_array_equal(m.state, [4])               # inference: no count
    if arrangement == "width_change":
        assert m.layers[2].n_in == 10 and m.n_out == 3


def test_gradcheck_alone_and_in_a_model(dtype):
    X, y = data(dtype=dtype)
    assert fp.gradcheck(Scale(), X) < 1e-6
    assert fp.gradcheck(Pairs(), X) < 1e-6
    assert fp.gradcheck(Counted(), X) < 1e-6
    m = scale_model(dtype)
    before = snapshot(m)
    assert fp.gradcheck(m, X, y) < 1e-6
    assert_unchanged(m, before)

    class WrongGrad(Scale):
        def backward(self, da, cache):
            return da * self.w, 2 * (da * cache).sum(0)
    assert fp.gradcheck(WrongGrad(), X) > 1e-2
    m = fp.Sequential([fp.Dense(4, 5, seed=0), WrongGrad(), fp.Dense(5, 3, activation="softmax")],
                      dtype=dtype)
    assert fp.gradcheck(m, X, y) > 1e-2


# -- every entry point ------------------------------------------------------------------------
def test_fit_with_validation_callbacks_and_shuffle():
    X, y = data(n=64)
    m = scale_model("float32")
    seen = []

    class Spy(fp.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(float(self.model.layers[1].w[0]))
    hist = m.fit(X, y, epochs=4, batch_size=16, validation_split=0.25, shuffle=True, verbose=0,
                 callbacks=[Spy(), fp.callbacks.EarlyStopping(patience=10)])
    assert len(hist.history["val_loss"]) == 4 and len(seen) == 12
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert len(set(seen)) > 1                       # the custom layer's w moves every batch
    assert set(m.evaluate(X, y)) == {"loss", "accuracy"}


def test_fit_equals_train_steps_on_the_same_batches():
    X, y = data(n=32)
    a, b = scale_model("float64"), scale_model("float64")
    a.fit(X, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    for _ in range(2):
        for s in range(0, 32, 8):
            b.train_step(X[s:s + 8], y[s:s + 8])
    assert_close(a.params, b.params, np.float64)


@pytest.mark.parametrize("opt", [lambda: fp.optim.SGD(lr=0.1),
                                 lambda: fp.optim.SGD(lr=0.1, momentum=0.9),
                                 lambda: fp.optim.Adam(lr=0.01),
                                 lambda: fp.optim.AdamW(lr=0.01),
                                 lambda: fp.optim.RMSprop(lr=0.01),
                                 lambda: fp.optim.Adagrad(lr=0.1)],
                         ids=["sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad"])
def test_every_optimizer_matches_the_reference(opt):
    X, y = data()
    m = scale_model("float64", optimizer=opt())
    ref = R.ReferenceModel.from_model(m)
    for _ in range(3):
        m.train_step(X, y)
        ref.train_step(X, labels=y)
    assert_close(m.params, ref.params, np.float64)


def test_lbfgs_trains_a_model_with_a_custom_layer():
    X, y = data(n=32)
    m = scale_model("float64")
    before = m.evaluate(X, y)["loss"]
    fp.optim.LBFGS(max_iter=30).minimize(m, X, y)
    assert m.evaluate(X, y)["loss"] < before


def test_textbook_path_and_compute_apply_gradients(dtype):
    X, y = data(dtype=dtype)
    m = scale_model(dtype)
    ref = R.ReferenceModel.from_model(m)
    out = m.forward(X, training=False)
    g = m.backward(y).copy()
    ref.loss_and_gradients(X, labels=y)
    assert_close(out, ref.predict(X), dtype)
    assert_close(g, ref.grads, dtype)
    m.compute_gradients(X, y)
    assert_close(m.grads, ref.grads, dtype)
    m.apply_gradients()
    ref.apply_gradients()
    assert_close(m.params, ref.params, dtype)


def test_keras_style_building_with_custom_layers():
    X, y = data()
    m = fp.Sequential()
    m.add(fp.Dense(8, activation="relu"))
    m.add(Scale())
    m.add(fp.Dense(3, activation="softmax"))
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    m.fit(X, y, epochs=2, verbose=0)             # built from the data
    assert m.layers[1].w.shape == (8,) and m.n_in == 4
    first = fp.Sequential([Scale(), fp.Dense(3, activation="softmax")])
    assert not first.built                       # the width comes from input_dim / the data
    assert first.predict(X).shape == (16, 3)
    assert first.layers[0].w.shape == (4,)


def test_summary_shows_the_custom_layer():
    m = fp.Sequential([fp.Dense(4, 8, seed=0), Counted(), fp.Dense(8, 3, activation="softmax")])
    text = m.summary(file=io.StringIO())
    row = next(line for line in text.splitlines() if "Counted" in line)
    assert "Python" in row and "(None, 8)" in row and "state 1" in row and row.endswith("16")
    assert m.n_params == 40 + 16 + 27


def test_trace_shows_the_custom_layer():
    X, y = data()
    m = scale_model("float64")
    before = snapshot(m)
    tr = fp.trace(m, X, y)
    lt = tr.layers[1]
    assert lt.kind == "Scale"
    np.testing.assert_allclose(lt.a, lt.a_prev * m.layers[1].w)
    np.testing.assert_allclose(lt.dw, (lt.da * lt.a_prev).sum(0))
    np.testing.assert_allclose(tr.layers[0].a, lt.a_prev)
    assert_unchanged(m, before)


def test_onnx_export_names_the_custom_layer():
    pytest.importorskip("onnx")
    with pytest.raises(TypeError, match=r"layers\[1\].*Scale"):
        fp.to_onnx(scale_model("float32"))


def test_the_compiled_tape_flags_python_nodes():
    # the flag the batch-split threads read (a Python node runs on the calling thread)
    assert scale_model("float32")._engine.has_python_nodes
    assert not fp.Sequential([fp.Dense(4, 3, activation="softmax")])._engine.has_python_nodes


# -- what the Python code may do -------------------------------------------------------------
def test_the_layer_may_keep_its_arrays_across_workspace_growth():
    kept = []

    class Keeper(Scale):
        def forward(self, a_prev, training=False):
            a_prev *= 3                                # its own copy: the model is unaffected
            kept.append((a_prev, a_prev.copy()))       # and no later call changes it
            return (a_prev / 3) * self.w, a_prev / 3

        def backward(self, da, cache):
            kept.append((da, da.copy()))
            return super().backward(da, cache)
    m = fp.Sequential([Keeper(), fp.Dense(4, 3, activation="softmax", seed=0)], input_dim=4,
                      dtype="float64")
    ref = R.ReferenceModel.from_model(fp.Sequential(
        [Scale(), fp.Dense(4, 3, activation="softmax", seed=0)], input_dim=4, dtype="float64"))
    for n in (2, 16, 200, 3):                          # the workspace is reallocated
        X, y = data(n=n, seed=n)
        X0 = X.copy()
        assert_close(m.train_step(X, y), ref.train_step(X0, labels=y), np.float64)
        np.testing.assert_array_equal(X, X0)
    for arr, value in kept:
        np.testing.assert_array_equal(arr, value)
    assert_close(m.params, ref.params, np.float64)


def test_in_place_writes_are_fine_and_rebinding_is_refused():
    X, y = data()
    m = scale_model("float64")
    m.layers[1].w[...] = 2.0
    np.testing.assert_array_equal(m.params[40:48], 2.0)
    with pytest.raises(AttributeError, match=r"Scale\.w .*in place"):
        m.layers[1].w = np.zeros(8)
    np.testing.assert_array_equal(m.layers[1].w, 2.0)
    assert np.shares_memory(m.layers[1].w, m.params)
    m.train_step(X, y)
    assert np.shares_memory(m.layers[1].w, m.params)


# -- save / load / pickle ---------------------------------------------------------------------
@pytest.fixture
def registry(monkeypatch):
    """Registrations that last one test (other test modules register a 'Scale' of their own)."""
    monkeypatch.setattr(fp.layers._base, "LAYERS", dict(fp.layers._base.LAYERS))
    reg = fp.layers._base.LAYERS
    for mod in (fp.model, fp.io):
        monkeypatch.setattr(mod, "LAYERS", reg)
    return fp.register_layer


class Shift(fp.Layer):
    """A custom layer with a constructor argument, carried by get_config."""

    def __init__(self, offset=0.0):
        self.offset = offset

    def get_config(self):
        return {**super().get_config(), "offset": self.offset}

    def build(self, n_in):
        return n_in

    def forward(self, a_prev, training=False):
        return a_prev + self.offset, None

    def backward(self, da, cache):
        return (da,)


def test_unregistered_custom_layer_cannot_be_saved_and_nothing_is_written(tmp_path, registry):
    m = scale_model("float32")
    path = tmp_path / "m.fpm"
    for call in (lambda: m.save(path), lambda: m.save(io.BytesIO()), m.to_bytes,
                 lambda: pickle.dumps(m), lambda: copy.deepcopy(m)):
        with pytest.raises(ValueError, match=r"layers\[1\] is a Scale.*register_layer\(Scale\)"):
            call()
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_registered_custom_layers_save_load_and_pickle(tmp_path, registry):
    registry(Scale)
    registry(Shift)
    registry(Counted)
    X, y = data()
    m = fp.Sequential([Shift(0.5), fp.Dense(4, 6, activation="tanh", seed=0), Counted(),
                       Scale(), fp.Dense(6, 3, activation="softmax", seed=1)], input_dim=4,
                      dtype="float64", seed=0)
    m.fit(X, y, epochs=2, batch_size=4, verbose=0)
    path = tmp_path / "m.fpm"
    m.save(path)
    for other in (fp.load(path), pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
        assert [type(l) for l in other.layers] == [type(l) for l in m.layers]
        assert other.layers[0].offset == 0.5
        np.testing.assert_array_equal(other.params, m.params)
        np.testing.assert_array_equal(other.state, m.state)
        np.testing.assert_array_equal(other.layers[2].calls, [8])
        np.testing.assert_array_equal(other.predict(X), m.predict(X))
        a, b = copy.deepcopy(m), other                 # training continues exactly
        assert_close(b.train_step(X, y), a.train_step(X, y), np.float64)
        assert_close(b.params, a.params, np.float64)


def test_default_config_protocol(registry):
    assert Scale().get_config() == {"type": "Scale"}
    assert Shift(2.0).get_config() == {"type": "Shift", "offset": 2.0}
    assert Shift.from_config({"type": "Shift", "offset": 2.0}).offset == 2.0
    with pytest.raises(ValueError, match="Shift"):
        Shift.from_config({"type": "Shift", "unknown": 1})


# -- bad results of the user's code: each a clear error, and nothing changes --------------------
class Faulty(fp.Layer):
    """Returns what ``mode`` says; counts its training calls (state), writes its w in place."""

    def __init__(self, mode):
        self.mode = mode

    def build(self, n_in):
        self.add_param("w", (n_in,), init="ones")
        self.add_state("calls", (1,))
        return n_in

    def forward(self, a_prev, training=False):
        if training:
            self.calls[...] += 1
            self.w[...] *= 1.5                   # in place: undone when the step fails
        a, mode = a_prev * self.w, self.mode
        if mode == "fwd_raise":
            raise self.error
        out = {"fwd_shape": a[:, :-1], "fwd_nan": np.where(a > 0, np.nan, a),
               "fwd_dtype": a.astype(np.float32 if a.dtype == np.float64 else np.float64),
               "fwd_type": a.tolist(), "fwd_int": a.astype(np.int64)}.get(mode, a)
        if mode == "fwd_tuple":
            return out
        return out, a_prev

    def backward(self, da, x):
        mode, da_prev, dw = self.mode, da * self.w, (da * x).sum(0)
        if mode == "bwd_raise":
            raise self.error
        if mode == "bwd_shape":
            da_prev = da_prev[:-1]
        if mode == "bwd_dtype":
            da_prev = da_prev.astype(np.float32 if da.dtype == np.float64 else np.float64)
        if mode == "bwd_inf":
            da_prev = np.full_like(da_prev, np.inf)
        if mode == "bwd_count":
            return (da_prev,)
        if mode == "bwd_grad_shape":
            dw = dw[:2]
        if mode == "bwd_grad_nan":
            dw = dw * np.nan
        if mode == "bwd_list_not_tuple":
            return [da_prev, dw]                 # a list is accepted
        return da_prev, dw


BAD = {"fwd_shape": (ValueError, r"layers\[3\] \(Faulty\)\.forward's a has shape \(\d+, 7\), "
                                 r"expected \(\d+, 8\)"),
       "fwd_nan": (ValueError, r"layers\[3\] \(Faulty\)\.forward's a contains NaN"),
       "fwd_dtype": (TypeError, r"layers\[3\] \(Faulty\)\.forward's a has dtype"),
       "fwd_int": (TypeError, r"layers\[3\] \(Faulty\)\.forward's a has dtype int64"),
       "fwd_type": (TypeError, r"layers\[3\] \(Faulty\)\.forward's a must be a NumPy array, "
                               r"got list"),
       "fwd_tuple": (TypeError, r"layers\[3\] \(Faulty\)\.forward must return a tuple \(a, "
                                r"cache\), got ndarray"),
       "fwd_raise": (KeyError, "boom"),
       "bwd_shape": (ValueError, r"layers\[3\] \(Faulty\)\.backward's da_prev has shape "
                                 r"\(\d+, 8\), expected \(\d+, 8\)"),
       "bwd_dtype": (TypeError, r"layers\[3\] \(Faulty\)\.backward's da_prev has dtype"),
       "bwd_inf": (ValueError, r"layers\[3\] \(Faulty\)\.backward's da_prev contains NaN or "
                               r"infinity"),
       "bwd_count": (TypeError, r"layers\[3\] \(Faulty\)\.backward must return a tuple "
                                r"\(da_prev, dw\).*got a tuple of 1 items"),
       "bwd_grad_shape": (ValueError, r"gradient of 'w' has shape \(2,\), expected \(8,\)"),
       "bwd_grad_nan": (ValueError, r"gradient of 'w' contains NaN"),
       "bwd_raise": (KeyError, "boom")}


def faulty_model(mode, dtype):
    f = Faulty("ok")
    f.error = KeyError("boom")
    m = fp.Sequential([fp.Dense(4, 8, seed=0), fp.BatchNorm(), fp.Dropout(0.3), f,
                       fp.Dense(8, 3, activation="softmax", seed=1)],
                      dtype=dtype, seed=0, input_dim=4)
    X, y = data(dtype=dtype)
    m.train_step(X, y)                     # some optimizer state, running statistics, calls
    f.mode = mode
    return m, f, X, y


@pytest.mark.parametrize("mode", list(BAD))
def test_bad_results_raise_and_change_nothing(mode, dtype):
    m, f, X, y = faulty_model(mode, dtype)
    exc, msg = BAD[mode]
    before = snapshot(m)
    calls = [lambda: m.train_step(X, y), lambda: m.train_step(X.tolist(), y),
             lambda: m.fit(X, y, epochs=2, batch_size=4, verbose=0, validation_split=0.25),
             lambda: m.compute_gradients(X, y)]
    if mode.startswith("fwd"):
        calls += [lambda: m.predict(X), lambda: m.evaluate(X, y),
                  lambda: m.forward(X, training=True)]
    for call in calls:
        with pytest.raises(exc, match=msg) as info:
            call()
        if mode.endswith("raise"):
            assert info.value is f.error           # the user's exception, unchanged
        assert_unchanged(m, before)
    f.mode = "ok"                                   # and the model trains on afterwards
    m.train_step(X, y)
    np.testing.assert_array_equal(f.calls, [2])


def test_a_list_of_grads_is_accepted():
    m, f, X, y = faulty_model("bwd_list_not_tuple", "float64")
    m.train_step(X, y)
    np.testing.assert_array_equal(f.calls, [2])


def test_float64_result_in_a_float32_model_is_an_error_naming_the_dtype():
    m, f, X, y = faulty_model("fwd_dtype", "float32")
    with pytest.raises(TypeError, match=r"has dtype float64, but the model's dtype is float32"):
        m.train_step(X, y)


def test_a_refused_step_restores_the_custom_layers_state():
    m, f, X, y = faulty_model("ok", "float64")
    before = snapshot(m)
    X = X.copy()
    X[0, 0] = 1e300                                  # the loss overflows: the step is refused
    with pytest.raises(ValueError, match="not finite"):
        m.train_step(X, y)
    params, state, *_ = before
    np.testing.assert_array_equal(m.params, params)
    np.testing.assert_array_equal(m.state, state)


def test_textbook_backward_failure_keeps_the_forward():
    m, f, X, y = faulty_model("bwd_shape", "float64")
    m.forward(X, training=True)
    after_forward = m.state.copy()
    with pytest.raises(ValueError, match="da_prev has shape"):
        m.backward(y)
    np.testing.assert_array_equal(m.state, after_forward)


def test_build_must_return_the_width():
    class NoWidth(Scale):
        def build(self, n_in):
            super().build(n_in)
    with pytest.raises(TypeError, match=r"layers\[1\] \(NoWidth\)\.build\(n_in\) must return"):
        fp.Sequential([fp.Dense(4, 8), NoWidth(), fp.Dense(8, 3, activation="softmax")])


def test_a_layer_without_forward_and_backward_is_still_refused():
    class NoBlock(fp.Layer):
        def build(self, n_in):
            return n_in
    with pytest.raises(TypeError, match=r"layers\[1\].*no node for the layer kind NoBlock"):
        fp.Sequential([fp.Dense(4, 8), NoBlock(), fp.Dense(8, 3, activation="softmax")])


def test_the_layer_runs_without_flush_to_zero():
    # the engine flushes denormals to zero in its own loops; the user's NumPy code runs in the
    # caller's floating-point mode
    seen = []

    class Tiny(Scale):
        def forward(self, a_prev, training=False):
            seen.append(float((np.array([1e-310]) * np.array([1.0]))[0]))
            return super().forward(a_prev, training)
    X, y = data()
    m = fp.Sequential([fp.Dense(4, 8, seed=0), Tiny(), fp.Dense(8, 3, activation="softmax")],
                      dtype="float64")
    m.train_step(X, y)
    m.predict(X)
    assert seen == [1e-310, 1e-310]


def test_the_readme_example_runs(tmp_path, monkeypatch, registry):
    from pathlib import Path
    readme = Path(__file__).resolve().parents[1] / "README.md"
    if not readme.exists():
        pytest.skip("README.md is not next to the tests (installed wheel)")
    text = readme.read_text()
    start = text.index("```python", text.index("### Custom layers")) + len("```python")
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(text[start:text.index("```", start)], "README.md", "exec"), scope)
    assert scope["model"].layers[1].w.shape == (32,)
    assert (tmp_path / "scale.fpm").exists()


# -- the layer's code cannot crash the process through the model ------------------------------
def test_training_the_model_from_inside_its_layer_is_refused_and_changes_nothing():
    X, y = data()
    holder = {}

    class Reentrant(Scale):
        def forward(self, a_prev, training=False):
            if training and holder.get("call"):
                holder["call"]()
            if "predict" in holder:           # predict runs on scratch of its own: allowed
                holder["predicted"] = holder.pop("predict")()
            return super().forward(a_prev, training)
    m = fp.Sequential([fp.Dense(4, 8, seed=0), Reentrant(), fp.Dense(8, 3, activation="softmax")],
                      dtype="float64", seed=0)
    m.train_step(X, y)
    before = snapshot(m)
    for call in (lambda: m.train_step(X, y), lambda: m.train_step(X[:3].tolist(), y[:3]),
                 lambda: m.fit(np.tile(X, (8, 1)), np.tile(y, 8), verbose=0),
                 lambda: m.forward(X), lambda: m.compute_gradients(X, y), m.apply_gradients):
        holder["call"] = call
        with pytest.raises(RuntimeError, match="cannot train"):
            m.train_step(X, y)
        assert_unchanged(m, before)
    holder.clear()
    holder["predict"] = lambda: m.predict(X)
    m.train_step(X, y)
    assert holder["predicted"].shape == (16, 3)


def test_replacing_the_optimizer_or_labels_inside_a_step_cannot_crash():
    import gc
    X, y = data()
    labels = y.astype(np.int64)
    acts = []

    class Meddler(Scale):
        def forward(self, a_prev, training=False):
            if training and acts:
                acts.pop()()
                gc.collect()
            return super().forward(a_prev, training)
    m = fp.Sequential([fp.Dense(4, 8, seed=0), Meddler(), fp.Dense(8, 3, activation="softmax")],
                      optimizer=fp.optim.SGD(lr=0.1, momentum=0.9), dtype="float64", seed=0)
    acts.append(lambda: m.compile(optimizer=fp.optim.Adam(lr=0.01)))    # frees the old state
    m.train_step(X, labels)
    assert isinstance(m.optimizer, fp.optim.Adam)
    clean = fp.Sequential([fp.Dense(4, 8, seed=0), Scale(), fp.Dense(8, 3, activation="softmax")],
                          dtype="float64", seed=0)
    clean.params[...] = m.params
    expected = clean.evaluate(X, y)["loss"]
    acts.append(lambda: labels.__setitem__(slice(None), 10 ** 12))      # out of range
    loss = m.train_step(X, labels)                  # the step read its own copy of the labels
    assert_close(loss, expected, np.float64)
    assert np.isfinite(m.params).all()


def test_weights_of_a_custom_layer_in_keras_order():
    m = fp.Sequential([fp.Dense(4, 5, seed=0), Counted(), fp.Dense(5, 3, activation="softmax")],
                      dtype="float64")
    ws = m.get_weights()
    assert [w.shape for w in ws] == [(4, 5), (5,), (5,), (5,), (1,), (5, 3), (3,)]
    ws[2][...] = 3.0                   # Counted.w
    ws[4][...] = 7.0                   # Counted.calls (state)
    m.set_weights(ws)
    np.testing.assert_array_equal(m.layers[1].w, 3.0)
    np.testing.assert_array_equal(m.state, [7.0])
    before = m.get_weights()
    bad = [w.copy() for w in ws]
    bad[2] = np.zeros(4)
    with pytest.raises(ValueError, match=r"weights\[2\]"):
        m.set_weights(bad)
    for a, b in zip(m.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_early_stopping_restores_the_custom_layers_weights_and_state():
    X, y = data(n=32)
    m = fp.Sequential([fp.Dense(4, 6, activation="tanh", seed=0), Counted(),
                       fp.Dense(6, 3, activation="softmax", seed=1)],
                      optimizer=fp.optim.SGD(lr=5.0), dtype="float64", seed=0)
    best = {}

    class Keep(fp.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if logs["val_loss"] < best.get("loss", np.inf):
                best.update(loss=logs["val_loss"], w=m.get_weights())
    m.fit(X, y, epochs=6, batch_size=8, validation_data=(X, y), verbose=0,
          callbacks=[Keep(), fp.callbacks.EarlyStopping(patience=1,
                                                        restore_best_weights=True)])
    epochs = len(m.history.history["val_loss"])
    assert epochs < 6 and m.state[0] < 4 * epochs       # stopped early, an earlier state back
    for a, b in zip(m.get_weights(), best["w"]):
        np.testing.assert_array_equal(a, b)


def test_a_failing_build_in_add_changes_nothing():
    class BadBuild(Scale):
        def build(self, n_in):
            raise ValueError("no width for me")
    m = fp.Sequential([fp.Dense(4, 8, seed=0), Scale()], loss="mse")
    before = m.get_weights()
    with pytest.raises(ValueError, match="no width for me"):
        m.add(BadBuild())
    assert len(m.layers) == 2
    for a, b in zip(m.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    X = data()[0].astype(np.float32)
    m.train_step(X, np.zeros((16, 8), np.float32))


def test_comm_self_equals_no_comm_with_a_custom_layer():
    MPI = pytest.importorskip("mpi4py.MPI")
    X, y = data(n=40)
    a, b = scale_model("float64"), scale_model("float64")
    a.fit(X, y, epochs=2, batch_size=8, verbose=0, comm=MPI.COMM_SELF)
    b.fit(X, y, epochs=2, batch_size=8, verbose=0)
    assert_close(a.params, b.params, np.float64)
    assert_close(a.train_step(X, y, comm=MPI.COMM_SELF), b.train_step(X, y), np.float64)
    assert_close(a.params, b.params, np.float64)


def test_a_frozen_custom_layer_stays_frozen_and_round_trips(registry):
    registry(Counted)
    X, y = data()
    m = fp.Sequential([fp.Dense(4, 5, activation="tanh", seed=0), Counted(),
                       fp.Dense(5, 3, activation="softmax", seed=1)],
                      optimizer=fp.optim.Adam(lr=0.05), dtype="float64", seed=0)
    m.layers[1].trainable = False
    frozen = m.layers[1].w.copy(), m.layers[1].c.copy()
    W0 = m.layers[0].W.copy()
    m.fit(X, y, epochs=2, batch_size=4, verbose=0)
    np.testing.assert_array_equal(m.layers[1].w, frozen[0])
    np.testing.assert_array_equal(m.layers[1].c, frozen[1])
    assert not np.array_equal(m.layers[0].W, W0)            # the others train
    np.testing.assert_array_equal(m.layers[1].calls, [8])   # its state still moves
    assert m.layers[1].get_config() == {"type": "Counted", "trainable": False}
    other = fp.from_bytes(m.to_bytes())
    assert other.layers[1].trainable is False
    np.testing.assert_array_equal(other.params, m.params)
