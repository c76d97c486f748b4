"""Single-process tests of the data-parallel building blocks: the gradients-only step with a
normalizer, the update-only step and its refusal rule, comm=MPI.COMM_SELF (equal to no comm),
the comm argument checks, and the default BLAS thread count. The 2-rank tests are in
test_distributed_mpi.py."""
import numpy as np
import pytest

import fastprop as fp
from fastprop import _threads, optim as O
from fastprop import reference as R
from conftest import assert_close

LOSSES = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid", "mse": "identity",
          "mae": "tanh", "huber": "identity"}


def make(loss="cross_entropy", dtype="float64", optimizer=None, seed=0, dropout=None):
    k = 4 if loss == "cross_entropy" else 3
    layers = [fp.Dense(5, 7, activation="tanh", dtype=dtype, seed=seed)]
    if dropout:
        layers.append(fp.Dropout(dropout))
    layers.append(fp.Dense(7, k, activation=LOSSES[loss], dtype=dtype, seed=seed + 1))
    return fp.Sequential(layers, loss=loss, optimizer=optimizer or O.Adam(lr=0.01),
                         dtype=dtype, seed=seed), k


def batch(loss, k, n=12, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5))
    if loss == "cross_entropy":
        return X, rng.integers(0, k, n)
    if loss == "binary_cross_entropy":
        return X, (rng.random((n, k)) < 0.5).astype(float)
    return X, rng.standard_normal((n, k))


def reference_gradients(model, X, y, w, loss):
    """(L, flat dL/dparams) of the batch from the pure-NumPy twin, mean-normalized."""
    dense = [layer for layer in model.layers if isinstance(layer, fp.Dense)]
    a, caches = X.astype(model.dtype), []
    for d in dense:
        a, cache = R.dense_forward(a, d.W, d.b, d.activation)
        caches.append(cache)
    labels = y if loss == "cross_entropy" else None
    L, dz = R.loss_and_grad(loss, dense[-1].activation, caches[-1].z, caches[-1].a,
                            y=None if labels is not None else y.astype(model.dtype),
                            labels=labels, sample_weight=w)
    grads, da = [], None
    for i in range(len(dense) - 1, -1, -1):
        if i == len(dense) - 1:     # the loss gives the output layer's dz
            da, dW, db = R.dense_backward(dz, caches[i]._replace(activation="identity"))
        else:
            da, dW, db = R.dense_backward(da, caches[i])
        grads = [dW.ravel(), db] + grads
    return L, np.concatenate(grads)


@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weighted"])
def test_compute_gradients_normalizer_against_reference(loss, weighted, dtype):
    model, k = make(loss, dtype.name)
    X, y = batch(loss, k)
    w = (np.random.default_rng(1).random(12) + 0.1).astype(dtype) if weighted else None
    local = 12.0 if w is None else float(w.astype(np.float64).sum())
    L_ref, g_ref = reference_gradients(model, X, y, w, loss)
    loss0 = model.compute_gradients(X, y, w)
    assert_close(loss0, L_ref, dtype)
    assert_close(model.grads, g_ref, dtype)
    for norm in (3.5 * local, local / 4.0):
        # sum_i w_i l_i / normalizer, and its gradient: the reference's mean scaled by
        # local / normalizer
        loss1 = model.compute_gradients(X, y, w, normalizer=norm)
        assert_close(loss1, L_ref * local / norm, dtype)
        assert_close(model.grads, g_ref * local / norm, dtype)
    model.forward(X)                                   # the textbook path agrees
    model.backward(y, w)
    assert_close(model.grads, g_ref, dtype)


def test_compute_gradients_zero_weights_with_normalizer_gives_zero_gradients():
    model, k = make()
    X, y = batch("cross_entropy", k)
    loss = model.compute_gradients(X, y, np.zeros(12), normalizer=5.0)
    assert loss == 0.0 and not model.grads.any()
    with pytest.raises(ValueError, match="sample_weight"):
        model.compute_gradients(X, y, np.zeros(12))       # no normalizer: 0 / 0


@pytest.mark.parametrize("bad", [0.0, -1.0, np.nan, np.inf])
def test_compute_gradients_rejects_bad_normalizer(bad):
    model, k = make()
    X, y = batch("cross_entropy", k)
    before = model.grads.copy()
    with pytest.raises(ValueError, match="normalizer"):
        model.compute_gradients(X, y, normalizer=bad)
    with pytest.raises(TypeError, match="normalizer"):
        model.compute_gradients(X, y, normalizer="2")
    np.testing.assert_array_equal(model.grads, before)


OPTIMIZERS = [lambda: O.SGD(lr=0.1), lambda: O.SGD(lr=0.1, momentum=0.9, nesterov=True),
              lambda: O.Adam(lr=0.01, clip_norm=0.1), lambda: O.AdamW(lr=0.01),
              lambda: O.RMSprop(lr=0.01, centered=True), lambda: O.Adagrad(lr=0.1)]


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=["sgd", "nesterov", "adam_clip", "adamw",
                                                 "rmsprop", "adagrad"])
def test_gradients_then_update_equals_train_step(opt, dtype):
    a, k = make(dtype=dtype.name, optimizer=opt(), dropout=0.3)
    b, _ = make(dtype=dtype.name, optimizer=opt(), dropout=0.3)
    for step in range(3):
        X, y = batch("cross_entropy", k, seed=step)
        la = a.train_step(X, y)
        lb = b.compute_gradients(X, y)
        b.apply_gradients()
        assert la == pytest.approx(lb, rel=1e-12)
        assert_close(b.params, a.params, dtype)        # fused plain SGD rounds differently
        assert a.optimizer.t == b.optimizer.t == step + 1
        assert a.get_rng_state()[0] == b.get_rng_state()[0]


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e300])
def test_apply_gradients_refuses_and_changes_nothing(bad):
    model, k = make(optimizer=O.Adam(lr=0.01))
    X, y = batch("cross_entropy", k)
    model.train_step(X, y)
    model.compute_gradients(X, y)
    model.grads[3] = bad
    params, (state, t) = model.params.copy(), model.optimizer.get_state()
    with pytest.raises(ValueError, match="nothing was updated"):
        model.apply_gradients()
    np.testing.assert_array_equal(model.params, params)
    assert model.optimizer.t == t == 1
    for name, arr in model.optimizer.get_state()[0].items():
        np.testing.assert_array_equal(arr, state[name])


def test_comm_self_equals_no_comm(dtype):
    MPI = pytest.importorskip("mpi4py.MPI")
    a, k = make(dtype=dtype.name, optimizer=O.Adam(lr=0.02, clip_norm=1.0))
    b, _ = make(dtype=dtype.name, optimizer=O.Adam(lr=0.02, clip_norm=1.0))
    X, y = batch("cross_entropy", k, n=50)
    w = np.random.default_rng(3).random(50)
    for m in (a, b):
        m.optimizer.schedule = O.StepLR(step_size=1, gamma=0.7)
    ha = a.fit(X, y, sample_weight=w, epochs=3, batch_size=8, validation_split=0.2,
               verbose=0, comm=MPI.COMM_SELF)
    hb = b.fit(X, y, sample_weight=w, epochs=3, batch_size=8, validation_split=0.2, verbose=0)
    assert_close(a.params, b.params, dtype)
    assert sorted(ha.history) == sorted(hb.history)
    for key in hb.history:
        assert_close(ha.history[key], hb.history[key], dtype)
    assert a.optimizer.t == b.optimizer.t
    la = a.train_step(X[:9], y[:9], w[:9], comm=MPI.COMM_SELF)
    lb = b.train_step(X[:9], y[:9], w[:9])
    assert la == pytest.approx(lb, rel=1e-5 if dtype == np.float32 else 1e-12)
    assert_close(a.params, b.params, dtype)
    ea, eb = a.evaluate(X, y, w, comm=MPI.COMM_SELF), b.evaluate(X, y, w)
    assert ea["accuracy"] == eb["accuracy"]
    assert ea["loss"] == pytest.approx(eb["loss"], rel=1e-5 if dtype == np.float32 else 1e-12)
    np.testing.assert_array_equal(a.predict(X, comm=MPI.COMM_SELF), a.predict(X))


@pytest.mark.parametrize("comm", ["world", 0, object()])
def test_comm_must_be_a_communicator(comm):
    pytest.importorskip("mpi4py")
    model, k = make()
    X, y = batch("cross_entropy", k)
    before = model.params.copy()
    for call in (lambda: model.fit(X, y, verbose=0, comm=comm),
                 lambda: model.train_step(X, y, comm=comm),
                 lambda: model.evaluate(X, y, comm=comm),
                 lambda: model.predict(X, comm=comm),
                 lambda: fp.distributed.shard(10, comm)):
        with pytest.raises(TypeError, match="comm"):
            call()
    np.testing.assert_array_equal(model.params, before)


def test_shard_on_one_rank():
    MPI = pytest.importorskip("mpi4py.MPI")
    assert fp.distributed.shard(7, MPI.COMM_SELF) == slice(0, 7)
    with pytest.raises(ValueError, match="n_samples"):
        fp.distributed.shard(-1, MPI.COMM_SELF)


def test_without_comm_mpi4py_is_not_imported():
    import subprocess
    import sys
    code = ("import sys, numpy as np, fastprop as fp\n"
            "m = fp.Sequential([fp.Dense(3, 2, activation='softmax')])\n"
            "m.fit(np.zeros((4, 3)), [0, 1, 0, 1], verbose=0); m.evaluate(np.zeros((4, 3)), "
            "[0, 1, 0, 1]); m.predict(np.zeros((2, 3)))\n"
            "assert 'mpi4py' not in sys.modules, 'mpi4py imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- default BLAS threads: the CPUs this process may use ----------------------------------------
def test_available_cpus_reads_affinity_and_cgroup_quota(tmp_path, monkeypatch):
    monkeypatch.setattr(_threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3},
                        raising=False)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert _threads.available_cpus(cgroup_root=str(tmp_path)) == 4
    (tmp_path / "cpu.max").write_text("150000 100000\n")       # 1.5 CPUs: 2 threads
    assert _threads.available_cpus(cgroup_root=str(tmp_path)) == 2
    (tmp_path / "cpu.max").write_text("50000 100000\n")        # half a CPU: 1 thread
    assert _threads.available_cpus(cgroup_root=str(tmp_path)) == 1
    (tmp_path / "cpu.max").unlink()
    v1 = tmp_path / "cpu"
    v1.mkdir()
    (v1 / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert _threads.available_cpus(cgroup_root=str(tmp_path)) == 3
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")                # no quota
    assert _threads.available_cpus(cgroup_root=str(tmp_path)) == 4
    monkeypatch.setattr(_threads.os, "sched_getaffinity", lambda pid: {1}, raising=False)
    assert _threads.available_cpus(cgroup_root=str(tmp_path)) == 1


def test_default_threads_follow_the_affinity_mask():
    import os
    import subprocess
    import sys
    if not hasattr(os, "sched_setaffinity") or _threads.get_num_threads() is None:
        pytest.skip("needs sched_setaffinity and SciPy's OpenBLAS")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "GOTO_NUM_THREADS")}
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
            "import fastprop; print(fastprop.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["1"]


def test_comm_refuses_training_a_batchnorm_model_and_carries_layernorm():
    """A BatchNorm would normalize with each rank's own batch statistics: training with comm=
    is refused before anything changes. LayerNorm (per sample, no running state) trains over
    comm exactly as without it."""
    MPI = pytest.importorskip("mpi4py.MPI")
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(16, 5)), rng.integers(0, 3, 16)
    bn = fp.Sequential([fp.Dense(5, 8, activation="relu"), fp.BatchNorm(), fp.Dense(8, 3,
                        activation="softmax")], loss="cross_entropy", dtype="float64", seed=0)
    params, t = bn.params.copy(), bn.optimizer.t
    for call in (lambda: bn.train_step(X, y, comm=MPI.COMM_SELF),
                 lambda: bn.fit(X, y, epochs=1, verbose=0, comm=MPI.COMM_SELF)):
        with pytest.raises(ValueError, match="BatchNorm"):
            call()
    np.testing.assert_array_equal(bn.params, params)
    assert bn.optimizer.t == t
    assert bn.evaluate(X, y, comm=MPI.COMM_SELF)["loss"] == pytest.approx(
        bn.evaluate(X, y)["loss"], rel=1e-12)

    def ln_model():
        return fp.Sequential([fp.Dense(5, 8, activation="relu", seed=1), fp.LayerNorm(),
                              fp.Dense(8, 3, activation="softmax", seed=2)],
                             loss="cross_entropy", dtype="float64", seed=0)
    a, b = ln_model(), ln_model()
    a.fit(X, y, epochs=2, batch_size=4, shuffle=False, verbose=0)
    b.fit(X, y, epochs=2, batch_size=4, shuffle=False, verbose=0, comm=MPI.COMM_SELF)
    np.testing.assert_allclose(b.params, a.params, rtol=1e-12, atol=1e-14)


def test_comm_self_fit_with_class_weight_metrics_schedule_and_initial_epoch(dtype):
    """fit(comm=MPI.COMM_SELF) with class_weight, the mae / mse metrics, a per-batch schedule
    and initial_epoch equals fit without comm (History, parameters, schedule position), and
    evaluate(comm=) reports the same metrics. (Two ranks: tests/mpi/worker_features.py.)"""
    MPI = pytest.importorskip("mpi4py.MPI")
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((45, 5)), rng.integers(0, 4, 45)
    y[:25] = 0
    models = []
    for _ in range(2):
        m, _ = make(dtype=dtype.name, optimizer=O.SGD(
            lr=0.1, momentum=0.9, schedule=O.OneCycleLR(0.2, total_steps=30)))
        m.compile(metrics=["mae", "mse"])
        models.append(m)
    kw = dict(epochs=4, initial_epoch=1, batch_size=8, shuffle=False, verbose=0,
              validation_data=(X[:9], y[:9]))
    for cw in ("balanced", {0: 0.25, 3: 2.0}):
        ha = models[0].fit(X, y, class_weight=cw, **kw)
        hb = models[1].fit(X, y, class_weight=cw, comm=MPI.COMM_SELF, **kw)
        assert sorted(hb.history) == sorted(ha.history) == [
            "accuracy", "loss", "lr", "mae", "mse", "val_accuracy", "val_loss", "val_mae",
            "val_mse"]
        assert hb.epoch == ha.epoch == [1, 2, 3]
        for key in ha.history:
            assert_close(hb.history[key], ha.history[key], dtype)
        assert_close(models[1].params, models[0].params)
        assert models[1].optimizer.iteration == models[0].optimizer.iteration == 4 * 6
    a, b = models[0].evaluate(X, y), models[1].evaluate(X, y, comm=MPI.COMM_SELF)
    assert sorted(a) == sorted(b) == ["accuracy", "loss", "mae", "mse"]
    for key in a:
        assert_close(b[key], a[key], dtype)


# -- weight penalties and frozen layers under comm= -------------------------------------------
FUSED_SGD_AND_ADAM = [lambda: O.SGD(lr=0.1), lambda: O.Adam(lr=0.01)]


def penalized(dtype, optimizer, frozen=()):
    """Dense penalties on three layers (l2 only, l1 and l2, l1 only; a frozen layer's penalty
    does not count) around a LayerNorm and a frozen BatchNorm with running statistics away
    from 0 / 1 (a trainable one is refused under comm); the layers of ``frozen`` frozen."""
    layers = [fp.Dense(5, 8, activation="tanh", seed=1, l2=0.04), fp.LayerNorm(),
              fp.Dense(8, 6, activation="relu", seed=2, l1=0.01, l2=0.02), fp.BatchNorm(),
              fp.Dense(6, 4, activation="softmax", seed=3, l1=0.03)]
    model = fp.Sequential(layers, loss="cross_entropy", optimizer=optimizer, dtype=dtype,
                          seed=0)
    bn = model.layers[3]
    bn.running_mean, bn.running_var = np.linspace(-0.5, 0.5, 6), np.linspace(0.5, 2.0, 6)
    for i in {3, *frozen}:
        model.layers[i].trainable = False
    return model


def layer_slices(model):
    out, off = [], 0
    for layer in model.layers:
        out.append(slice(off, off + layer.n_params))
        off += layer.n_params
    return out


@pytest.mark.parametrize("opt", FUSED_SGD_AND_ADAM, ids=["sgd", "adam"])
def test_compute_gradients_penalty_flag_and_add_penalty(opt, dtype):
    """The engine's gradients-only pass with penalty=False leaves the weight penalties out of
    the loss and the gradients; add_penalty adds exactly them (default: unchanged)."""
    m = penalized(dtype.name, opt())
    X, y = batch("cross_entropy", 4, n=10)
    loss = m.compute_gradients(X, y)
    with_pen = m.grads.copy()
    engine, (Xc, y_dense, labels, w) = m._engine, (m._X(X),) + m._targets(y, 10, None)
    bare = engine.compute_gradients(Xc, y_dense, labels, w, None, 0.0, False)
    pen = engine.add_penalty()
    assert pen > 0
    assert_close(bare + pen, m.evaluate(X, y)["loss"], dtype)     # (no dropout)
    assert_close(bare + pen, loss, dtype)
    assert_close(m.grads, with_pen, dtype)
    assert engine.compute_gradients(Xc, y_dense, labels, w, None, 0.0) == loss
    np.testing.assert_array_equal(m.grads, with_pen)       # the default counts them
    free = penalized(dtype.name, opt())
    for layer in (0, 2, 4):
        free.layers[layer].trainable = False
    assert free._engine.add_penalty() == 0.0


@pytest.mark.parametrize("opt", FUSED_SGD_AND_ADAM, ids=["sgd", "adam"])
def test_comm_self_counts_weight_penalties_once(opt, dtype):
    """fit / train_step / evaluate with comm=MPI.COMM_SELF and weight penalties equal the same
    calls without comm: the penalty is in the loss (History, val_loss, train_step's return)
    and in the update once. (Two ranks: tests/mpi/worker_penalty.py.)"""
    MPI = pytest.importorskip("mpi4py.MPI")
    X, y = batch("cross_entropy", 4, n=30, seed=3)
    a, b = penalized(dtype.name, opt()), penalized(dtype.name, opt())
    kw = dict(epochs=3, batch_size=8, shuffle=False, verbose=0, validation_data=(X[:9], y[:9]))
    ha = a.fit(X, y, **kw)
    hb = b.fit(X, y, comm=MPI.COMM_SELF, **kw)
    assert sorted(hb.history) == sorted(ha.history)
    for key in ha.history:
        assert_close(hb.history[key], ha.history[key], dtype)
    assert_close(b.params, a.params, dtype)
    for name in a.optimizer.state:
        assert_close(b.optimizer.state[name], a.optimizer.state[name], dtype)
    assert_close(b.train_step(X, y, comm=MPI.COMM_SELF), a.train_step(X, y), dtype)
    assert_close(b.params, a.params, dtype)
    assert_close(b.evaluate(X, y, comm=MPI.COMM_SELF)["loss"], a.evaluate(X, y)["loss"], dtype)
    # the penalty is really there: the same model without it reports a smaller loss
    c = penalized(dtype.name, opt(), frozen=(0, 2, 4))
    c.set_weights(b.get_weights())
    assert c.evaluate(X, y, comm=MPI.COMM_SELF)["loss"] < b.evaluate(X, y)["loss"] - 1e-3


@pytest.mark.parametrize("opt", FUSED_SGD_AND_ADAM, ids=["sgd", "adam"])
def test_comm_self_frozen_layers(opt, dtype):
    """A frozen Dense (its penalty then does not count), LayerNorm and BatchNorm under
    comm=MPI.COMM_SELF: their parameters and optimizer state stay bit for bit, the BatchNorm's
    running statistics too, and the other layers train as without comm; unfreezing the Dense
    makes its penalty count again."""
    MPI = pytest.importorskip("mpi4py.MPI")
    X, y = batch("cross_entropy", 4, n=24, seed=5)
    a, b = (penalized(dtype.name, opt(), frozen=(0, 1)) for _ in range(2))
    start, state = b.params.copy(), b.state.copy()
    kw = dict(epochs=2, batch_size=8, shuffle=False, verbose=0)
    ha, hb = a.fit(X, y, **kw), b.fit(X, y, comm=MPI.COMM_SELF, **kw)
    assert_close(hb.history["loss"], ha.history["loss"], dtype)
    sl = layer_slices(b)
    for i in (0, 1, 3):
        np.testing.assert_array_equal(b.params[sl[i]], start[sl[i]])
        for name in b.optimizer.state:
            np.testing.assert_array_equal(b.optimizer.state[name][sl[i]], 0)
    np.testing.assert_array_equal(b.state, state)
    for i in (2, 4):
        assert not np.array_equal(b.params[sl[i]], start[sl[i]])
    assert_close(b.params, a.params, dtype)
    for m in (a, b):
        m.layers[0].trainable = True
    ha, hb = a.fit(X, y, **kw), b.fit(X, y, comm=MPI.COMM_SELF, **kw)
    assert_close(hb.history["loss"], ha.history["loss"], dtype)
    assert_close(b.params, a.params, dtype)
    assert not np.array_equal(b.params[sl[0]], start[sl[0]])
