"""Regressions found by the API fuzzer: arguments that cannot work in a fit fail at fit start,
before any update (the model, its optimizer state and t unchanged), and assigning an optimizer
state the optimizer does not have is a ValueError naming it."""
import os

import numpy as np
import pytest

import fastprop as fp
from fastprop import callbacks as C


def _model(opt="adam"):
    m = fp.Sequential([fp.Dense(3, 4, activation="relu"), fp.Dense(4, 1)], loss="mse",
                      optimizer=opt, dtype="float64", seed=0)
    X = np.random.default_rng(0).normal(size=(16, 3))
    y = X.sum(axis=1, keepdims=True)
    m.train_step(X, y)            # the optimizer has state and t = 1
    return m, X, y


def _snapshot(m):
    state, t = m.optimizer.get_state()
    return m.params.copy(), state, t


def _assert_unchanged(m, snap):
    params, state, t = snap
    np.testing.assert_array_equal(m.params, params)
    new_state, new_t = m.optimizer.get_state()
    assert new_t == t and new_state.keys() == state.keys()
    for k in state:
        np.testing.assert_array_equal(new_state[k], state[k])


@pytest.mark.parametrize("make", [
    lambda d: C.EarlyStopping(monitor="nope"),
    lambda d: C.ReduceLROnPlateau(monitor="nope"),
    lambda d: C.ModelCheckpoint(os.path.join(d, "m.fpz"), monitor="nope", save_best_only=True),
    lambda d: C.EarlyStopping(monitor="val_loss"),          # no validation data in this fit
    lambda d: C.ModelCheckpoint(os.path.join(d, "{nope}.fpz")),
    lambda d: C.ModelCheckpoint(os.path.join(d, "{val_loss:.2f}.fpz")),
])
def test_unknown_monitor_or_field_fails_before_any_update(tmp_path, make):
    m, X, y = _model()
    snap = _snapshot(m)
    with pytest.raises(ValueError, match="will not be in the epoch logs"):
        m.fit(X, y, epochs=2, callbacks=[make(str(tmp_path))], verbose=0)
    _assert_unchanged(m, snap)
    assert os.listdir(tmp_path) == []


def test_known_keys_still_accepted(tmp_path):
    m, X, y = _model()
    path = os.path.join(str(tmp_path), "{epoch}-{loss:.3f}-{val_loss:.3f}.fpz")
    cbs = [C.EarlyStopping(monitor="val_loss", patience=5),
           C.ReduceLROnPlateau(monitor="loss"), C.ModelCheckpoint(path, monitor="val_loss")]
    m.fit(X, y, epochs=2, validation_split=0.25, callbacks=cbs, verbose=0)
    assert len(os.listdir(tmp_path)) == 2


def test_a_key_a_callback_declares_can_be_monitored(tmp_path):
    class Score(C.Callback):
        log_keys = ("score",)

        def on_epoch_end(self, epoch, logs=None):
            logs["score"] = -float(epoch)

    m, X, y = _model()
    stop = C.EarlyStopping(monitor="score", mode="min", patience=0)
    hist = m.fit(X, y, epochs=5, callbacks=[Score(), stop], verbose=0)
    assert hist.history["score"] == [0.0, -1.0, -2.0, -3.0, -4.0]     # improving: no stop
    assert stop.best == -4.0
    # the same monitor without the callback that adds it: refused at fit start
    snap = _snapshot(m)
    with pytest.raises(ValueError, match="'score'"):
        m.fit(X, y, callbacks=[C.EarlyStopping(monitor="score")], verbose=0)
    _assert_unchanged(m, snap)


def test_log_keys_must_be_names():
    class Bad(C.Callback):
        log_keys = "score"

    m, X, y = _model()
    snap = _snapshot(m)
    with pytest.raises(TypeError, match="log_keys"):
        m.fit(X, y, callbacks=[Bad()], verbose=0)
    _assert_unchanged(m, snap)


@pytest.mark.parametrize("opt, name", [("adam", "sum"), ("adam", "momentum_buffer"),
                                       ("sgd", "exp_avg"), ("adagrad", "exp_avg_sq")])
def test_assigning_a_state_the_optimizer_lacks_is_a_value_error(opt, name):
    m, X, y = _model(opt)
    snap = _snapshot(m)
    cls = type(m.optimizer).__name__
    with pytest.raises(ValueError, match=f"{cls} has no state '{name}'"):
        m.optimizer.state[name] = np.zeros(m.n_params, m.dtype)
    with pytest.raises(TypeError, match="str"):
        m.optimizer.state[0] = np.zeros(m.n_params, m.dtype)
    _assert_unchanged(m, snap)
    assert name not in m.optimizer.state
