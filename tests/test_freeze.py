"""Freezing: ``layer.trainable = False`` (issue 11 item 6). The compiled update skips the
frozen layers' parameter ranges: their parameters stay bit for bit and their optimizer state
does not move, while the other layers' gradients are those of the unfrozen model. A frozen
BatchNorm behaves as in Keras: running statistics in training too, left unchanged."""
import copy
import io
import pickle

import numpy as np
import pytest

import fastprop as fp
from conftest import assert_close


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


@pytest.mark.parametrize("make_opt", OPTIMIZERS)
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


def test_trainable_on_an_unbuilt_model_and_summary_counts():
    X, y = _data()
    model = fp.Sequential([fp.Dense(7, activation="tanh", seed=1), fp.Dense(3, seed=2,
                                                                             activation="softmax")],
                          optimizer=fp.optim.Adam(lr=0.01), dtype="float64")
    model.layers[0].trainable = False            # before the width is known
    model.build(5)
    sl = _layer_slices(model)[0]
    before = model.params[sl].copy()
    model.train_step(X, y)
    np.testing.assert_array_equal(model.params[sl], before)
    text = model.summary(file=io.StringIO())
    assert f"trainable: {model.n_params - 42:,}  non-trainable (frozen): 42" in text
    model.layers[0].trainable = True
    assert "non-trainable (frozen): 0" in model.summary(file=io.StringIO())
    model.train_step(X, y)
    assert not np.array_equal(model.params[sl], before)


def test_a_released_layer_no_longer_reaches_its_old_model():
    X, y = _data()
    first = fp.Dense(5, 7, seed=1)
    model = fp.Sequential([first, fp.Dense(7, 3, activation="softmax", seed=2)],
                          optimizer=fp.optim.SGD(lr=0.1), dtype="float64")
    copy_ = copy.deepcopy(model)                  # its own layers: flags are per model
    first.trainable = False
    assert [l.trainable for l in copy_.layers] == [True, True]
    before = copy_.params.copy()
    copy_.train_step(X, y)
    assert not np.array_equal(copy_.params[:35], before[:35])


# -- frozen BatchNorm ----------------------------------------------------------------------------
def _bn_data(n=16, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) * 2 + 1, rng.integers(0, k, n)


def _bn_model(dtype, frozen=True, opt=None):
    layers = [fp.Dense(6, 8, activation="relu", seed=1), fp.BatchNorm(momentum=0.2),
              fp.Dense(8, 3, activation="softmax", seed=2)]
    model = fp.Sequential(layers, loss="cross_entropy", dtype=np.dtype(dtype).name,
                          optimizer=opt or fp.optim.Adam(lr=0.01))
    bn = model.layers[1]                      # running statistics away from 0 / 1
    bn.running_mean = np.linspace(0.2, 1.5, 8)
    bn.running_var = np.linspace(0.5, 3.0, 8)
    bn.gamma = np.linspace(0.8, 1.3, 8)
    bn.trainable = not frozen
    return model


def test_frozen_batchnorm_matches_torch_eval_and_no_grad(dtype):
    torch = pytest.importorskip("torch")
    model = _bn_model(dtype)
    bn = model.layers[1]
    tdt = torch.float32 if dtype == np.float32 else torch.float64
    d0, d1 = model.layers[0], model.layers[2]
    lin0, lin1 = torch.nn.Linear(6, 8).to(tdt), torch.nn.Linear(8, 3).to(tdt)
    tbn = torch.nn.BatchNorm1d(8, momentum=0.2, eps=bn.eps).to(tdt)
    with torch.no_grad():
        for lin, d in ((lin0, d0), (lin1, d1)):
            lin.weight.copy_(torch.from_numpy(d.W.T.copy()))
            lin.bias.copy_(torch.from_numpy(d.b.copy()))
        tbn.weight.copy_(torch.from_numpy(bn.gamma.copy()))
        tbn.bias.copy_(torch.from_numpy(bn.beta.copy()))
        tbn.running_mean.copy_(torch.from_numpy(bn.running_mean.copy()))
        tbn.running_var.copy_(torch.from_numpy(bn.running_var.copy()))
    tbn.eval()
    tbn.requires_grad_(False)
    net = torch.nn.Sequential(lin0, torch.nn.ReLU(), tbn, lin1)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=0.01)
    gamma, beta = bn.gamma.copy(), bn.beta.copy()
    rm, rv = bn.running_mean.copy(), bn.running_var.copy()
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    for step in range(5):
        X, y = _bn_data(seed=step)
        X = X.astype(dtype)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(X)), torch.from_numpy(y))
        loss.backward()
        opt.step()
        assert_close(model.train_step(X, y), loss.item(), dtype, rtol=rtol)
    assert_close(d0.W, lin0.weight.detach().numpy().T, dtype, rtol=rtol)   # trained through BN
    assert_close(d1.b, lin1.bias.detach().numpy(), dtype, rtol=rtol)
    for a, b in ((bn.gamma, gamma), (bn.beta, beta), (bn.running_mean, rm),
                 (bn.running_var, rv)):
        np.testing.assert_array_equal(a, b)            # parameters and statistics untouched
    np.testing.assert_array_equal(tbn.running_mean.numpy(), rm)


@pytest.mark.parametrize("make_opt", OPTIMIZERS)
def test_frozen_batchnorm_in_fit_keeps_everything(make_opt):
    model = _bn_model(np.float64, opt=make_opt())
    sl = _layer_slices(model)[1]
    before, state = model.params[sl].copy(), model.state.copy()
    X, y = _bn_data(n=40, seed=3)
    model.fit(X, y, epochs=2, batch_size=8, verbose=0)
    np.testing.assert_array_equal(model.params[sl], before)
    np.testing.assert_array_equal(model.state, state)
    model.train_step(X[:1], y[:1])           # one row: fine, running statistics normalize
    np.testing.assert_array_equal(model.state, state)


def test_frozen_batchnorm_gradients_are_the_inference_ones():
    """The other layers' gradients: those of the unfrozen model run in inference mode at the
    BatchNorm (forward(training=True) then backward), and the finite differences agree."""
    X, y = _bn_data(seed=7)
    frozen = _bn_model(np.float64)
    ref = fp.reference.ReferenceModel.from_model(frozen)
    assert ref.layers[1].trainable is False
    frozen.compute_gradients(X, y)
    loss = ref.loss_and_gradients(X, labels=y, training=True)
    assert_close(frozen.grads, ref.grads, np.float64, rtol=1e-10)
    free = fp.reference.ReferenceModel.from_model(_bn_model(np.float64, frozen=False))
    free.loss_and_gradients(X, labels=y, training=False)       # eval mode == frozen
    assert_close(ref.grads, free.grads, np.float64, rtol=1e-12)
    assert_close(frozen.train_step(X, y), loss, np.float64, rtol=1e-12)
    assert fp.gradcheck(frozen, X, y) < 1e-6


def test_reference_twin_honours_frozen_layers_over_steps():
    X, y = _bn_data(seed=11)
    model = _bn_model(np.float64, opt=fp.optim.AdamW(lr=0.01, weight_decay=0.1))
    model.layers[0].trainable = False
    ref = fp.reference.ReferenceModel.from_model(model)
    ref.state = {k: np.zeros_like(v) for k, v in ref.state.items()}
    for name, arr in zip(model.optimizer.state_names, model.optimizer._state_arrays()):
        if arr is not None and name in ref.state:
            ref.state[name][...] = arr
    ref.t = model.optimizer.t
    for step in range(4):
        Xs, ys = _bn_data(seed=20 + step)
        ref_loss = ref.train_step(Xs, labels=ys, training=True)
        assert_close(model.train_step(Xs, ys), ref_loss, np.float64, rtol=1e-12)
    assert_close(model.params, ref.params, np.float64, rtol=1e-10)
    bn = ref.layers[1]
    np.testing.assert_array_equal(bn.running_mean, model.layers[1].running_mean)


def test_frozen_batchnorm_toggle_standalone_and_files(tmp_path):
    X, y = _bn_data(seed=5)
    model = _bn_model(np.float64)
    bn = model.layers[1]
    assert bn.get_config()["trainable"] is False
    path = tmp_path / "bn.fpm"
    model.save(path)
    for other in (fp.load(path), pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert other.layers[1].trainable is False
        state = other.state.copy()
        other.train_step(X, y)
        np.testing.assert_array_equal(other.state, state)
    state = model.state.copy()
    bn.trainable = True                          # back on: batch statistics, state moves
    model.train_step(X, y)
    assert not np.array_equal(model.state, state)
    # the standalone layer: a frozen BatchNorm's training forward is its inference forward
    solo = fp.BatchNorm(dtype="float64", trainable=False)
    solo.build(6)
    solo.running_mean = np.arange(6.0)
    a, cache = solo.forward(X, training=True)
    b, _ = solo.forward(X, training=False)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(solo.running_mean, np.arange(6.0))
    assert cache.training is False
    assert fp.BatchNorm.from_config(solo.get_config()).trainable is False
    with pytest.raises(TypeError, match="trainable"):
        fp.BatchNorm(trainable="yes")
    with pytest.raises(TypeError, match="trainable"):
        fp.LayerNorm(trainable=None)


def test_a_frozen_batchnorm_may_train_over_comm():
    MPI = pytest.importorskip("mpi4py.MPI")
    X, y = _bn_data(n=24, seed=9)
    a, b = _bn_model(np.float64), _bn_model(np.float64)
    a.fit(X, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    b.fit(X, y, epochs=2, batch_size=8, shuffle=False, verbose=0, comm=MPI.COMM_SELF)
    assert_close(b.params, a.params, np.float64, rtol=1e-12)
    np.testing.assert_array_equal(b.state, a.state)
    b.layers[1].trainable = True
    with pytest.raises(ValueError, match="BatchNorm"):
        b.train_step(X, y, comm=MPI.COMM_SELF)
