"""Keras-style training: compile (optimizer / loss / metrics by name), metrics in History and
evaluate, class_weight in fit."""
import pickle

import numpy as np
import pytest

import fastprop as fp
from fastprop import optim as O


def _data(n=90, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    y = np.digitize(X[:, 0] + 0.5 * X[:, 1], [-0.7, 0.4])      # 3 imbalanced classes
    return X, y


def _clf(dtype="float64", **kw):
    return fp.Sequential([fp.Dense(4, 8, activation="tanh", seed=0),
                          fp.Dense(8, 3, activation="softmax", seed=1)],
                         optimizer=O.SGD(lr=0.1), dtype=dtype, seed=0, **kw)


def _reg(loss=None, **kw):
    return fp.Sequential([fp.Dense(4, 6, activation="relu", seed=0),
                          fp.Dense(6, 2, seed=1)], loss=loss, optimizer=O.SGD(lr=0.05),
                         dtype="float64", seed=0, **kw)


def _state(m):
    return (m.params.copy(), m.loss, m.metrics, m.optimizer, m.optimizer.t)


def _same(m, state):
    np.testing.assert_array_equal(m.params, state[0])
    assert (m.loss, m.metrics, m.optimizer, m.optimizer.t) == state[1:]


@pytest.mark.parametrize("alias, canonical", [
    ("categorical_crossentropy", "cross_entropy"),
    ("sparse_categorical_crossentropy", "cross_entropy"),
    ("binary_crossentropy", "binary_cross_entropy"),
    ("mean_squared_error", "mse"), ("mean_absolute_error", "mae"), ("mse", "mse"),
    ("mae", "mae"), ("cross_entropy", "cross_entropy")])
def test_loss_aliases(alias, canonical):
    act = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid"}.get(canonical)
    n_out = 1 if act == "sigmoid" else 3
    layers = [fp.Dense(4, n_out, activation=act or "identity", seed=0)]
    assert fp.Sequential(layers, loss=alias).loss == canonical
    m = fp.Sequential([fp.Dense(4, n_out, activation=act or "identity", seed=0)])
    assert m.compile(loss=alias) is m and m.loss == canonical


@pytest.mark.parametrize("name, cls", [("adam", O.Adam), ("sgd", O.SGD), ("rmsprop", O.RMSprop),
                                       ("adagrad", O.Adagrad), ("adamw", O.AdamW)])
def test_compile_optimizer_by_name_is_fresh_and_owned(name, cls):
    X, y = _data()
    m = _clf()
    m.fit(X, y, epochs=1, verbose=0)
    old = m.optimizer
    m.compile(optimizer=name)
    assert type(m.optimizer) is cls and m.optimizer is not old and m.optimizer.t == 0
    assert m.optimizer.get_config() == cls().get_config()
    m.fit(X, y, epochs=1, batch_size=30, verbose=0)
    assert m.optimizer.t == 3
    # the model owns it: another model may not take it
    with pytest.raises(ValueError, match="another model"):
        _clf().compile(optimizer=m.optimizer)


def test_compile_loss_rebuilds_the_plan():
    X, y = _data()
    Y = np.column_stack([X[:, 0], X[:, 1] ** 2])
    a, b = _reg("mse"), _reg("mae")
    a.compile(loss="mean_absolute_error")
    assert a.loss == "mae"
    assert a.evaluate(X, Y)["loss"] == pytest.approx(np.abs(a.predict(X) - Y).mean(), rel=1e-12)
    a.fit(X, Y, epochs=2, batch_size=16, verbose=0)
    b.fit(X, Y, epochs=2, batch_size=16, verbose=0)
    np.testing.assert_array_equal(a.params, b.params)     # trains exactly as a model built so
    with pytest.raises(AttributeError):
        a.loss = "mse"


@pytest.mark.parametrize("kw, exc, match", [
    (dict(loss="hinge"), ValueError, "loss"),
    (dict(loss="binary_crossentropy"), ValueError, "sigmoid"),
    (dict(optimizer="lbfgs-ish"), ValueError, "optimizer"),
    (dict(optimizer=3), TypeError, "optimizer"),
    (dict(metrics=["f1"]), ValueError, r"metrics\[0\]"),
    (dict(metrics="mae"), TypeError, "metrics"),
    (dict(metrics=[None]), TypeError, r"metrics\[0\]"),
    (dict(loss="mse", optimizer="sgd", metrics=["accuracy"]), ValueError, "accuracy"),
    (dict(optimizer="adam", metrics=["mae", "nope"]), ValueError, r"metrics\[1\]"),
])
def test_bad_compile_changes_nothing(kw, exc, match):
    m = _clf(metrics=["mae"])
    before = _state(m)
    with pytest.raises(exc, match=match):
        m.compile(**kw)
    _same(m, before)


def test_compile_with_another_models_optimizer_changes_nothing():
    m, other = _clf(), _clf()
    before = _state(m)
    with pytest.raises(ValueError, match="another model"):
        m.compile(optimizer=other.optimizer, loss="categorical_crossentropy", metrics=["mse"])
    _same(m, before)


def _errors(a, Y):
    d = a - Y
    return np.abs(d).mean(), (d * d).mean()


def test_metrics_in_history_and_evaluate():
    X, y = _data()
    Xv, yv = _data(40, seed=1)
    m = _clf()
    m.compile(metrics=["accuracy", "mae", "mse"])
    assert m.metrics == ("accuracy", "mae", "mse")
    onehot = np.eye(3)[yv]
    ev = m.evaluate(Xv, yv)
    mae, mse = _errors(m.predict(Xv), onehot)
    assert set(ev) == {"loss", "accuracy", "mae", "mse"}
    assert ev["mae"] == pytest.approx(mae, rel=1e-12) and ev["mse"] == pytest.approx(mse, rel=1e-12)
    # with lr 0 the weights stay: the epoch's running means equal the inference values
    m.optimizer.lr = 0.0
    h = m.fit(X, y, epochs=2, batch_size=16, verbose=0, validation_data=(Xv, yv)).history
    for key in ("mae", "mse", "val_mae", "val_mse", "accuracy", "val_accuracy"):
        assert len(h[key]) == 2
    full = m.evaluate(X, y)
    assert h["mae"][0] == pytest.approx(full["mae"], rel=1e-12)
    assert h["mse"][1] == pytest.approx(full["mse"], rel=1e-12)
    assert h["val_mae"][1] == pytest.approx(ev["mae"], rel=1e-12)
    assert h["accuracy"][0] == pytest.approx(full["accuracy"])


def test_training_metrics_are_running_means_over_batches_before_each_update():
    X, _ = _data()
    Y = np.column_stack([X[:, 0], X[:, 1] ** 2])
    m, ref = _reg(metrics=["mae"]), _reg()
    h = m.fit(X, Y, epochs=1, batch_size=32, shuffle=False, verbose=0).history
    total = 0.0
    for s in range(0, 90, 32):          # the same steps, measured by hand before each update
        total += np.abs(ref.predict(X[s:s + 32]) - Y[s:s + 32]).sum()
        ref.train_step(X[s:s + 32], Y[s:s + 32])
    np.testing.assert_array_equal(m.params, ref.params)
    assert h["mae"][0] == pytest.approx(total / Y.size, rel=1e-12)
    assert "mse" not in h and "accuracy" not in h


def test_metrics_saved_loaded_pickled(tmp_path):
    m = _reg(metrics=["mse", "mean_absolute_error"])
    assert m.metrics == ("mse", "mae")
    m.save(tmp_path / "m.fpz")
    assert fp.load(tmp_path / "m.fpz").metrics == ("mse", "mae")
    assert pickle.loads(pickle.dumps(m)).metrics == ("mse", "mae")
    assert "metrics" not in _reg().get_config()      # files without metrics stay as before


# -- class_weight --------------------------------------------------------------------------------
def test_class_weight_dict_equals_sample_weight_by_hand():
    X, y = _data()
    cw = {0: 2.0, 2: 0.5}
    sw = np.random.default_rng(5).uniform(0.5, 2.0, y.size)
    a, b = _clf(), _clf()
    ha = a.fit(X, y, epochs=2, batch_size=16, verbose=0, class_weight=cw, sample_weight=sw)
    by_hand = sw * np.array([2.0, 1.0, 0.5])[y]
    hb = b.fit(X, y, epochs=2, batch_size=16, verbose=0, sample_weight=by_hand)
    np.testing.assert_array_equal(a.params, b.params)
    assert ha.history["loss"] == hb.history["loss"]
    c = _clf()
    c.fit(X, y, epochs=2, batch_size=16, verbose=0, sample_weight=sw)
    assert not np.array_equal(c.params, a.params)


def test_class_weight_balanced_as_scikit_learn():
    sk = pytest.importorskip("sklearn.utils.class_weight")
    X, y = _data()
    want = sk.compute_class_weight("balanced", classes=np.unique(y), y=y)
    a, b = _clf(), _clf()
    a.fit(X, y, epochs=1, batch_size=16, verbose=0, class_weight="balanced")
    b.fit(X, y, epochs=1, batch_size=16, verbose=0, sample_weight=want[y])
    np.testing.assert_array_equal(a.params, b.params)
    # one-hot targets: the same weights
    c = _clf()
    c.fit(X, np.eye(3)[y], epochs=1, batch_size=16, verbose=0, class_weight="balanced")
    np.testing.assert_array_equal(c.params, a.params)


def test_class_weight_binary_and_validation_untouched():
    X, _ = _data()
    y = (X[:, 0] > 0.8).astype(float)[:, None]
    mk = lambda: fp.Sequential([fp.Dense(4, 1, activation="sigmoid", seed=0)],
                               optimizer=O.SGD(lr=0.3), dtype="float64", seed=0)
    a, b = mk(), mk()
    ha = a.fit(X, y, epochs=2, verbose=0, class_weight={1: 3.0}, validation_split=0.2)
    # class weights apply to the training part only (as in Keras)
    w = np.where(y[:, 0] > 0.5, 3.0, 1.0)
    w[72:] = 1.0
    hb = b.fit(X, y, epochs=2, verbose=0, sample_weight=w, validation_split=0.2)
    np.testing.assert_array_equal(a.params, b.params)
    assert ha.history["val_loss"] == hb.history["val_loss"]


@pytest.mark.parametrize("cw, exc, match", [
    ({3: 1.0}, ValueError, "label 3"),
    ({-1: 1.0}, ValueError, "label -1"),
    ({"a": 1.0}, TypeError, "class_weight"),
    ({0: -1.0}, ValueError, r"class_weight\[0\]"),
    ({1: np.nan}, ValueError, r"class_weight\[1\]"),
    ({1: np.inf}, ValueError, r"class_weight\[1\]"),
    ("auto", ValueError, "class_weight"),
    ([1.0, 2.0, 3.0], TypeError, "class_weight"),
    ({0: 0.0, 1: 0.0, 2: 0.0}, ValueError, "sums to 0"),
])
def test_bad_class_weight_changes_nothing(cw, exc, match):
    X, y = _data()
    m = _clf()
    before = _state(m)
    with pytest.raises(exc, match=match):
        m.fit(X, y, epochs=1, verbose=0, class_weight=cw)
    _same(m, before)


def test_class_weight_needs_a_classifier():
    X, _ = _data()
    m = _reg()
    with pytest.raises(ValueError, match="class_weight"):
        m.fit(X, np.zeros((90, 2)), verbose=0, class_weight={0: 1.0})


def test_callbacks_monitor_compiled_metrics():
    X, y = _data()
    m = _clf(metrics=["mse"])
    stop = fp.callbacks.EarlyStopping(monitor="val_mse", patience=0, min_delta=1.0)
    h = m.fit(X, y, epochs=5, verbose=0, validation_split=0.2, callbacks=[stop])
    assert len(h.history["val_mse"]) == 2          # no improvement by 1.0: stops after epoch 2
    with pytest.raises(ValueError, match="val_mae"):  # not compiled: refused before training
        _clf(metrics=["mse"]).fit(X, y, verbose=0, validation_split=0.2,
                                  callbacks=[fp.callbacks.EarlyStopping(monitor="val_mae")])
