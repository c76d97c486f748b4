"""Batch-split training steps and predictions (issue 15): a call split by rows over the
engine's worker threads equals the one-thread call up to the order of a sum, is bit-identical
from run to run with the same thread count, and refuses a step whole.

The cost model would not split these small test nets: the ``split_all`` fixture sets its
thresholds to split every call with more than one thread and row. The second thread is set on
the engine directly (``model._engine.n_threads``), bypassing the cap to the CPUs this process
may use, so that the split path runs on a one-CPU (affinity-restricted) machine too; there the
caller claims every part itself whenever the worker is not scheduled in time.
"""
import multiprocessing
import threading
import warnings

import numpy as np
import pytest

import fastprop as fp
from fastprop import _threads
from conftest import Scale, assert_close

N_IN, N_OUT = 12, 4


@pytest.fixture
def split_all():
    old = _threads.set_split_control(0, 1, 2 ** 62)
    yield
    _threads.set_split_control(*old)


def _threaded(model, k=2):
    model._engine.n_threads = k          # bypasses the CPU cap: see the module docstring
    return model


def _data(dtype, n=40, loss="cross_entropy", k=N_OUT, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, N_IN)).astype(dtype)
    if loss == "cross_entropy":
        y = rng.integers(0, k, n)
    elif loss == "binary_cross_entropy":
        y = (rng.random((n, k)) > 0.5).astype(dtype)
    else:
        y = rng.standard_normal((n, k)).astype(dtype)
    return X, y


def _pair(make, k=2):
    """Two models with the same weights and streams: one thread, and k threads."""
    one, many = make(), make()
    many.set_weights(one.get_weights())
    one.n_threads = 1
    return one, _threaded(many, k)


def _dense_net(dtype, hidden=(), loss="cross_entropy", optimizer=None, out=N_OUT, seed=0):
    out_act = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid"}.get(loss,
                                                                                   "identity")
    layers = list(hidden) + [fp.Dense(out, activation=out_act)]
    return fp.Sequential(layers, loss=loss, dtype=dtype, seed=seed, input_dim=N_IN,
                         optimizer=optimizer if optimizer is not None else fp.optim.Adam(1e-2))


def _fit_both(one, many, X, y, **kw):
    kw = {"epochs": 2, "batch_size": 10, "shuffle": False, "verbose": 0, **kw}
    h1 = one.fit(X, y, **kw)
    h2 = many.fit(X, y, **kw)
    return h1.history, h2.history


def _assert_same_training(one, many, h1, h2, dtype):
    assert_close(many.params, one.params, dtype)
    assert_close(many.state, one.state, dtype) if one.state.size else None
    for key in h1:
        assert_close(h2[key], h1[key], dtype)
    assert many._engine.rng_state == one._engine.rng_state


HIDDEN_ACTS = ["identity", "relu", "leaky_relu", "elu", "gelu", "sigmoid", "tanh", "softplus",
               "silu"]


@pytest.mark.parametrize("act", HIDDEN_ACTS)
def test_dense_activations_equal_one_thread(split_all, dtype, act):
    X, y = _data(dtype)
    one, many = _pair(lambda: _dense_net(dtype, [fp.Dense(16, activation=act),
                                                  fp.Dense(8, activation=act)]))
    assert many._engine.split_plan(10) == 2
    h1, h2 = _fit_both(one, many, X, y)
    _assert_same_training(one, many, h1, h2, dtype)


@pytest.mark.parametrize("kind", ["dropout", "activation", "layernorm", "batchnorm"])
def test_layer_kinds_equal_one_thread(split_all, dtype, kind):
    middle = {"dropout": lambda: fp.Dropout(0.3), "activation": lambda: fp.Activation("tanh"),
              "layernorm": fp.LayerNorm, "batchnorm": fp.BatchNorm}[kind]
    X, y = _data(dtype)
    one, many = _pair(lambda: _dense_net(dtype, [fp.Dense(16, activation="relu"), middle(),
                                                  fp.Dense(8, activation="relu")]))
    # BatchNorm's batch statistics need the whole batch: its training steps are not split
    assert many._engine.split_plan(10) == (1 if kind == "batchnorm" else 2)
    assert many._engine.split_plan(10, False) == 2       # inference is per row
    h1, h2 = _fit_both(one, many, X, y)
    _assert_same_training(one, many, h1, h2, dtype)
    assert_close(many.predict(X), one.predict(X), dtype)


def test_dropout_masks_do_not_depend_on_the_split(split_all):
    """Same masks whatever the thread count: the stream position of each row is the whole
    batch's (two dropout layers of different widths, rows not divisible by the threads)."""
    X, y = _data(np.float64, n=23)
    make = lambda: _dense_net(np.float64, [fp.Dense(16, activation="relu"), fp.Dropout(0.5),  # noqa: E731
                                           fp.Dense(8, activation="relu"), fp.Dropout(0.25)],
                              optimizer=fp.optim.SGD(0.1))
    one, two = _pair(make, 2)
    _, three = _pair(make, 3)
    three.set_weights(one.get_weights())
    for m in (one, two, three):
        m.train_step(X, y)
    assert_close(two.params, one.params)
    assert_close(three.params, one.params)
    assert one._engine.rng_state == two._engine.rng_state == three._engine.rng_state


@pytest.mark.parametrize("loss", ["mse", "mae", "huber", "cross_entropy", "binary_cross_entropy"])
def test_losses_equal_one_thread(split_all, dtype, loss):
    X, y = _data(dtype, loss=loss)
    one, many = _pair(lambda: _dense_net(dtype, [fp.Dense(16, activation="tanh")], loss=loss))
    h1, h2 = _fit_both(one, many, X, y)
    _assert_same_training(one, many, h1, h2, dtype)


def test_one_hot_targets_equal_one_thread(split_all, dtype):
    X, labels = _data(dtype)
    y = np.eye(N_OUT, dtype=dtype)[labels]
    one, many = _pair(lambda: _dense_net(dtype, [fp.Dense(16, activation="relu")]))
    h1, h2 = _fit_both(one, many, X, y)
    _assert_same_training(one, many, h1, h2, dtype)


OPTIMIZERS = {
    "sgd": lambda: fp.optim.SGD(0.1),                        # fused into the dW GEMMs
    "sgd_momentum": lambda: fp.optim.SGD(0.05, momentum=0.9),
    "sgd_nesterov": lambda: fp.optim.SGD(0.05, momentum=0.9, nesterov=True),
    "sgd_wd": lambda: fp.optim.SGD(0.05, weight_decay=1e-2),
    "sgd_clip": lambda: fp.optim.SGD(0.1, clip_norm=0.5),    # global norm: one-thread update
    "adam": lambda: fp.optim.Adam(1e-2),
    "adam_amsgrad": lambda: fp.optim.Adam(1e-2, amsgrad=True),
    "adamw": lambda: fp.optim.AdamW(1e-2, weight_decay=1e-2),
    "rmsprop": lambda: fp.optim.RMSprop(1e-2, momentum=0.5),
    "adagrad": lambda: fp.optim.Adagrad(1e-1),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizers_equal_one_thread(split_all, dtype, name):
    X, y = _data(dtype)
    one, many = _pair(lambda: _dense_net(dtype, [fp.Dense(16, activation="relu"),
                                                  fp.LayerNorm()] if name == "adam" else
                                         [fp.Dense(16, activation="relu")],
                                         optimizer=OPTIMIZERS[name]()))
    h1, h2 = _fit_both(one, many, X, y)
    _assert_same_training(one, many, h1, h2, dtype)
    for s1, s2 in zip(one.optimizer.state.values(), many.optimizer.state.values()):
        assert_close(s2, s1, dtype)


def test_sample_weight_and_class_weight_equal_one_thread(split_all, dtype):
    X, y = _data(dtype)
    w = np.random.default_rng(1).random(len(X)).astype(dtype) + 0.1
    w[::7] = 0
    one, many = _pair(lambda: _dense_net(dtype, [fp.Dense(16, activation="relu")]))
    h1, h2 = _fit_both(one, many, X, y, sample_weight=w)
    _assert_same_training(one, many, h1, h2, dtype)
    one, many = _pair(lambda: _dense_net(dtype, [fp.Dense(16, activation="relu")]))
    cw = {0: 1.0, 1: 3.0, 2: 0.5, 3: 2.0}
    h1, h2 = _fit_both(one, many, X, y, class_weight=cw)
    _assert_same_training(one, many, h1, h2, dtype)
    # one step with weights through train_step (the rows given directly, no gather)
    one, many = _pair(lambda: _dense_net(dtype, [fp.Dense(16, activation="relu")]))
    l1 = one.train_step(X[:17], y[:17], sample_weight=w[:17])
    l2 = many.train_step(X[:17], y[:17], sample_weight=w[:17])
    assert_close(l2, l1, dtype)
    assert_close(many.params, one.params, dtype)


def test_shuffled_fit_equal_one_thread_and_deterministic(split_all, dtype):
    X, y = _data(dtype, n=64)
    make = lambda: _dense_net(dtype, [fp.Dense(32, activation="relu"), fp.Dropout(0.2),  # noqa: E731
                                      fp.Dense(16, activation="gelu")])
    one, a = _pair(make)
    _, b = _pair(make)
    b.set_weights(one.get_weights())
    kw = dict(epochs=3, batch_size=16, shuffle=True, verbose=0)
    h1 = one.fit(X, y, **kw).history
    ha = a.fit(X, y, **kw).history
    hb = b.fit(X, y, **kw).history
    _assert_same_training(one, a, h1, ha, dtype)
    # the same thread count: bit for bit, run to run
    assert np.array_equal(a.params, b.params)
    assert ha == hb


def test_three_and_four_threads_deterministic(split_all):
    X, y = _data(np.float32, n=50)
    w0 = _dense_net(np.float32, [fp.Dense(24, activation="relu")]).get_weights()
    for k in (3, 4):
        runs = []
        for _ in range(2):
            m = _threaded(_dense_net(np.float32, [fp.Dense(24, activation="relu")]), k)
            m.set_weights(w0)
            assert m._engine.split_plan(25) == k
            m.fit(X, y, epochs=2, batch_size=25, shuffle=False, verbose=0)
            runs.append(m.params.copy())
        assert np.array_equal(runs[0], runs[1])


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
def test_small_and_uneven_batches(split_all, dtype, n):
    """Batches smaller than, or not divisible by, the thread count (a batch of 1 with 2
    threads is not split)."""
    X, y = _data(dtype, n=n)
    one, many = _pair(lambda: _dense_net(dtype, [fp.Dense(16, activation="relu")]), 3)
    assert many._engine.split_plan(n) == min(n, 3)
    for _ in range(2):
        assert_close(many.train_step(X, y), one.train_step(X, y), dtype)
    assert_close(many.params, one.params, dtype)
    assert_close(many.predict(X), one.predict(X), dtype)


def test_rows_min_and_work_min_pick_the_split():
    m = _threaded(_dense_net(np.float32, [fp.Dense(16, activation="relu")]), 2)
    old = _threads.set_split_control(0, 8)
    try:
        assert m._engine.split_plan(15) == 1          # 7 rows per thread: not split
        assert m._engine.split_plan(16) == 2
        macs = N_IN * 16 + 16 * N_OUT
        _threads.set_split_control(100 * macs, 1)
        assert m._engine.split_plan(99) == 1          # under the work threshold
        assert m._engine.split_plan(100) == 2
    finally:
        _threads.set_split_control(*old)
    m.n_threads = 1
    assert m._engine.split_plan(10 ** 6) == 1         # one thread: never split


def test_work_max_leaves_large_training_steps_to_blas_threads():
    """Above SPLIT_WORK_MAX a training step whose layers reach WORK_MIN runs on BLAS threads
    (measured faster there); predict still splits; below WORK_MIN the step still splits."""
    big = _threaded(fp.Sequential([fp.Dense(512, 512, activation="relu"), fp.Dense(512, 4)],
                                  loss="mse", dtype="float32"), 2)
    n = _threads.WORK_MIN // (512 * 512) + 64          # the first layer reaches WORK_MIN
    old = _threads.set_split_control(0, 1, 2 ** 62)
    try:
        assert big._engine.split_plan(n) == 2
        _threads.set_split_control(None, None, 1)
        assert big._engine.split_plan(n) == 1          # training: BLAS threads
        assert big._engine.split_plan(n, False) == 2   # predict: split rows
        assert big._engine.split_plan(8) == 2          # no layer reaches WORK_MIN: split
        assert _threads.set_split_control()[2] == 1
    finally:
        _threads.set_split_control(*old)
    assert _threads.set_split_control() == old
    with pytest.raises(ValueError, match="work_max"):
        _threads.set_split_control(work_max=-5)


def test_default_cost_model_splits_the_small_net_not_the_tiny_one():
    small = _threaded(fp.Sequential([fp.Dense(784, 128, activation="relu"),
                                     fp.Dense(128, 10, activation="softmax")]), 2)
    tiny = _threaded(fp.Sequential([fp.Dense(64, 32, activation="relu"),
                                    fp.Dense(32, 10, activation="softmax")]), 2)
    assert small._engine.split_plan(64) == 2
    assert small._engine.split_plan(128) == 2
    assert tiny._engine.split_plan(64) == 1           # 151k multiply-adds: too few
    assert small._engine.split_plan(32) == 1          # 16 rows per thread: too few
    medium = _threaded(fp.Sequential([fp.Dense(784, 256, activation="relu"),
                                      fp.Dense(256, 256, activation="relu"),
                                      fp.Dense(256, 10, activation="softmax")]), 2)
    assert medium._engine.split_plan(64) == 2
    assert medium._engine.split_plan(128) == 1        # BLAS threads (SPLIT_WORK_MAX)
    assert medium._engine.split_plan(128, False) == 2  # predict splits rows




def test_non_finite_in_one_slice_refuses_the_whole_step(split_all, dtype):
    """A row of the second thread's slice overflows: nothing changes (parameters, optimizer
    state, step count), as with one thread."""
    X, y = _data(dtype, n=10)
    X[8] = 3e38 if dtype == np.float32 else 1e308     # with W = 1 below, its z overflows
    for opt in (fp.optim.SGD(0.1), fp.optim.Adam(1e-2)):
        m = _threaded(_dense_net(dtype, [fp.Dense(16, activation="relu")], optimizer=opt))
        ws = m.get_weights()
        ws[0][...] = 1.0
        m.set_weights(ws)
        m.fit(X[:8], y[:8], epochs=1, batch_size=8, verbose=0)
        params = m.params.copy()
        state = {k: np.array(v) for k, v in m.optimizer.state.items()}
        t = m.optimizer.t
        with pytest.raises(ValueError, match="not updated"):
            m.train_step(X, y)
        assert np.array_equal(m.params, params)
        assert m.optimizer.t == t
        for k, v in m.optimizer.state.items():
            assert np.array_equal(np.asarray(v), state[k])
        with pytest.warns(RuntimeWarning):
            m.fit(X, y, epochs=1, batch_size=10, shuffle=False, verbose=0)
        assert np.array_equal(m.params, params)


def test_n_threads_bad_values():
    m = _dense_net(np.float32, [])
    for bad in (0, -1):
        with pytest.raises(ValueError, match="n_threads"):
            m.n_threads = bad
    for bad in (1.5, "2", True):
        # the contract: ValueError; the library's rule for a wrong type: TypeError
        for exc in (ValueError, TypeError):
            with pytest.raises(exc, match="n_threads"):
                m.n_threads = bad
        with pytest.raises(ValueError, match="n_threads"):
            fp.Sequential([fp.Dense(2, 2)], loss="mse", n_threads=bad)
        with pytest.raises(ValueError, match="n must be an integer"):
            fp.set_num_threads(bad)
    assert m.n_threads is None
    with pytest.raises(ValueError, match="n_threads"):
        fp.Sequential([fp.Dense(2, 2)], n_threads=0)


def test_more_threads_than_cpus_capped_with_one_warning(monkeypatch):
    monkeypatch.setattr(_threads, "available_cpus", lambda *a: 2)
    monkeypatch.setattr(_threads, "_WARNED_CAP", False)
    m = _dense_net(np.float32, [])
    with pytest.warns(RuntimeWarning, match="using 2"):
        m.n_threads = 8
    assert m.n_threads == 8 and m._engine.n_threads == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.n_threads = 16                               # warned once per process
    assert m._engine.n_threads == 2


def test_predict_and_evaluate_split_rows(split_all, dtype):
    X, y = _data(dtype, n=203)
    one, many = _pair(lambda: _dense_net(dtype, [fp.Dense(16, activation="relu"),
                                                  fp.LayerNorm(), fp.Dropout(0.5)]), 3)
    assert many._engine.split_plan(203, False) == 3
    assert_close(many.predict(X), one.predict(X), dtype)
    assert_close(many.predict(X, batch_size=7), one.predict(X), dtype)   # chunks per thread
    e1, e2 = one.evaluate(X, y), many.evaluate(X, y)
    assert e1.keys() == e2.keys()
    for key in e1:
        assert_close(e2[key], e1[key], dtype)


def test_concurrent_predicts_share_the_pool(split_all):
    """Predicts from several Python threads on one model: one runs on the pool, the others
    (pool busy) on their own thread; every result is right."""
    X, _ = _data(np.float64, n=300)
    one, many = _pair(lambda: _dense_net(np.float64, [fp.Dense(32, activation="tanh")]))
    expected = one.predict(X)
    errors = []

    def run():
        for _ in range(30):
            out = many.predict(X)
            if not np.allclose(out, expected, rtol=1e-12, atol=1e-15):
                errors.append(np.max(np.abs(out - expected)))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def _child_fit(queue):
    _threads.set_split_control(0, 1, 2 ** 62)
    X, y = _data(np.float64)
    one, many = _pair(lambda: _dense_net(np.float64, [fp.Dense(16, activation="relu")]))
    h1, h2 = _fit_both(one, many, X, y)
    queue.put(float(np.max(np.abs(one.params - many.params))))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(),
                    reason="no fork start method on this platform")
def test_fit_in_a_forked_child_after_the_parent_used_the_pool(split_all):
    X, y = _data(np.float64)
    one, many = _pair(lambda: _dense_net(np.float64, [fp.Dense(16, activation="relu")]))
    _fit_both(one, many, X, y)                         # the parent's pool is running
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_fit, args=(queue,))
    child.start()
    child.join(120)
    if child.is_alive():
        child.kill()
        child.join()
        pytest.fail("fit in a forked child hung")
    assert child.exitcode == 0
    assert queue.get(timeout=10) < 1e-12
    # and the parent's pool still works
    h1, h2 = _fit_both(one, many, X, y)
    _assert_same_training(one, many, h1, h2, np.float64)


def test_gradients_only_step_equals_one_thread(split_all, dtype):
    """The engine's gradients-only step (what the MPI path calls, with a normalizer) fills the
    flat gradient buffer with the whole batch's gradient, without an update."""
    X, y = _data(dtype, n=21)
    one, many = _pair(lambda: _dense_net(dtype, [fp.Dense(16, activation="relu"),
                                                  fp.LayerNorm()]))
    params = many.params.copy()
    for norm in (0.0, 50.0):
        for m in (one, many):
            m._engine.compute_gradients(X, None, y.astype(np.int64), None, None, norm)
        assert_close(many.grads, one.grads, dtype)
    assert np.array_equal(many.params, params)


def test_bench_scaling_rows(monkeypatch):
    """The bench's scaling rows run (fastprop only, one short round): every configuration
    gets a median at 1 and 2 threads, and the table names them. Speed is not asserted."""
    from fastprop import _bench as B
    monkeypatch.setattr(B, "SCALING_TRAIN", ("small",))
    results = B.run_scaling(2, 1, 0.02, ("fastprop",), quick=True, log=lambda m: None)
    kinds = [r["config"]["kind"] for r in results]
    assert kinds == ["train", "fit", "fit", "predict"]
    for r in results:
        for k in (1, 2):
            e = r["impls"][f"fastprop@{k}"]
            assert e["median_us"] > 0 and e["p10_us"] <= e["median_us"] <= e["p90_us"]
    text = B.format_scaling(results)
    assert "train small 32 x 784-128-10" in text and "predict medium 10,000 rows" in text
    assert "fit digits batch 128" in text and "fastprop speed-up" in text


@pytest.mark.parametrize("first", ["dense", "dropout", "layernorm"])
@pytest.mark.parametrize("batch", [10, 150])
def test_first_layer_by_columns_or_by_rows(split_all, dtype, first, batch):
    """Small row parts run the first Dense's forward by columns, larger ones (>= 64 rows per
    thread) and tapes that do not start with a Dense by rows: both equal one thread."""
    head = {"dense": lambda: [], "dropout": lambda: [fp.Dropout(0.2)],
            "layernorm": lambda: [fp.LayerNorm()]}[first]
    X, y = _data(dtype, n=300)
    one, many = _pair(lambda: _dense_net(dtype, head() + [fp.Dense(16, activation="elu"),
                                                           fp.Dense(8, activation="relu")]))
    h1, h2 = _fit_both(one, many, X, y, batch_size=batch, epochs=1)
    _assert_same_training(one, many, h1, h2, dtype)


# -- the split beside frozen layers, weight penalties and custom Python layers ------------------
# Frozen ranges are zeroed / kept in the update by slices (fused SGD off, as with one thread);
# a Dense penalty's loss is added once and its dW on each weight part's rows of W (fused SGD:
# the shrink on those rows); a frozen BatchNorm keeps the step unsplit (any BatchNorm does); a
# tape with a Python node never splits. Each test checks the plan, then equality with the
# one-thread model over fit (float64 1e-12, float32 1e-5: conftest.assert_close).


def _frozen_net(dtype, kind, optimizer=None):
    middle = {"dense": lambda: fp.Dense(16, activation="tanh"), "layernorm": fp.LayerNorm,
              "batchnorm": fp.BatchNorm}[kind]
    m = _dense_net(dtype, [fp.Dense(16, activation="relu"), middle(),
                           fp.Dense(8, activation="relu")], optimizer=optimizer)
    m.layers[1].trainable = False
    return m


@pytest.mark.parametrize("kind", ["dense", "layernorm", "batchnorm"])
@pytest.mark.parametrize("opt", ["sgd", "adam", "clip"])
def test_frozen_layers_equal_one_thread(split_all, dtype, kind, opt):
    X, y = _data(dtype)
    make_opt = {"sgd": lambda: fp.optim.SGD(0.1), "adam": lambda: fp.optim.Adam(1e-2),
                "clip": lambda: fp.optim.SGD(0.1, momentum=0.9, clip_norm=0.05)}[opt]
    one, many = _pair(lambda: _frozen_net(dtype, kind, make_opt()))
    frozen = many.layers[1].get_weights()
    assert many._engine.split_plan(10) == (1 if kind == "batchnorm" else 2)
    assert many._engine.split_plan(10, False) == 2       # predict still splits
    h1, h2 = _fit_both(one, many, X, y)
    _assert_same_training(one, many, h1, h2, dtype)
    assert_close(many.grads, one.grads, dtype)           # the frozen ranges' zeroed
    for got, before in zip(many.layers[1].get_weights(), frozen):
        np.testing.assert_array_equal(got, before)       # kept bit for bit
    assert_close(many.predict(X), one.predict(X), dtype)
    many.layers[1].trainable = one.layers[1].trainable = True     # unfrozen: trains again
    h1, h2 = _fit_both(one, many, X, y)
    _assert_same_training(one, many, h1, h2, dtype)
    assert any(np.any(a != b) for a, b in zip(many.layers[1].get_weights(), frozen))


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_penalties_equal_one_thread(split_all, dtype, opt):
    """Dense l1 / l2 on a split step: the penalty's loss and dW count once (fused SGD and
    Adam), also beside a frozen layer (whose penalty does not count)."""
    X, y = _data(dtype)
    make_opt = {"sgd": lambda: fp.optim.SGD(0.1), "adam": lambda: fp.optim.Adam(1e-2)}[opt]
    one, many = _pair(lambda: _dense_net(
        dtype, [fp.Dense(16, activation="relu", l1=1e-3, l2=1e-2),
                fp.Dense(8, activation="relu", l2=5e-3)], optimizer=make_opt()))
    assert many._engine.split_plan(10) == 2
    h1, h2 = _fit_both(one, many, X, y)
    _assert_same_training(one, many, h1, h2, dtype)
    assert_close(np.array(many.train_step(X[:10], y[:10])),
                 np.array(one.train_step(X[:10], y[:10])), dtype)
    assert_close(many.params, one.params, dtype)
    assert many._engine.penalty() > 0.05          # counted twice, the losses would differ
    for m in (one, many):
        m.layers[1].trainable = False
    h1, h2 = _fit_both(one, many, X, y)
    _assert_same_training(one, many, h1, h2, dtype)


def test_compute_gradients_without_penalty_equal_one_thread(split_all, dtype):
    """penalty=False leaves the penalty out of the split call's gradients and loss, as with
    one thread; penalty=True equals one thread's too."""
    X, y = _data(dtype, n=20)
    one, many = _pair(lambda: _dense_net(
        dtype, [fp.Dense(16, activation="relu", l2=1e-2)], optimizer=fp.optim.SGD(0.1)))
    assert many._engine.split_plan(20) == 2
    for penalty in (False, True, False):
        l1 = one.compute_gradients(X, y, penalty=penalty)
        l2 = many.compute_gradients(X, y, penalty=penalty)
        assert_close(np.array(l2), np.array(l1), dtype)
        assert_close(many.grads, one.grads, dtype)
    plain = _dense_net(dtype, [fp.Dense(16, activation="relu")], optimizer=fp.optim.SGD(0.1))
    plain.set_weights(one.get_weights())
    plain.n_threads = 1
    plain.compute_gradients(X, y)
    assert_close(many.grads, plain.grads, dtype)         # penalty=False: no penalty term
    assert many._engine.penalty() > 0                    # (while the model has one)


def test_python_layer_runs_on_one_thread_and_equals(split_all, dtype):
    X, y = _data(dtype)

    def make():
        m = _dense_net(dtype, [fp.Dense(16, activation="tanh"), Scale(),
                               fp.Dense(8, activation="relu")])
        m.layers[1].w[...] = np.linspace(0.5, 1.5, 16)
        return m

    one, many = _pair(make)
    assert many._engine.has_python_nodes
    assert many._engine.split_plan(10) == 1
    assert many._engine.split_plan(10, False) == 1       # predict too: the layer holds the GIL
    h1, h2 = _fit_both(one, many, X, y)
    _assert_same_training(one, many, h1, h2, dtype)
    assert_close(many.layers[1].w, one.layers[1].w, dtype)
    assert_close(many.predict(X), one.predict(X), dtype)


@pytest.mark.parametrize("case", ["frozen", "penalty", "python"])
def test_unsplit_features_are_deterministic(split_all, case):
    """Two runs with two threads of a model with a frozen layer, a penalty or a Python layer
    are bit-identical."""
    X, y = _data(np.float32)

    def make():
        if case == "frozen":
            return _frozen_net(np.float32, "layernorm")
        if case == "penalty":
            return _dense_net(np.float32, [fp.Dense(16, activation="relu", l1=1e-3)])
        return _dense_net(np.float32, [fp.Dense(16, activation="relu"), Scale()])

    a, b = _threaded(make()), _threaded(make())
    b.set_weights(a.get_weights())
    for m in (a, b):
        m.fit(X, y, epochs=2, batch_size=10, verbose=0)
    np.testing.assert_array_equal(a.params, b.params)
