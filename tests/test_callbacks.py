"""Callbacks driven through CallbackList exactly as Sequential.fit drives them, on a fake model."""
import csv
import io

import numpy as np
import pytest

from fastprop import callbacks as C
from fastprop.callbacks import (CSVLogger, Callback, CallbackList, EarlyStopping, History,
                                LearningRateScheduler, ModelCheckpoint, ProgressBar,
                                ReduceLROnPlateau, TerminateOnNaN)


class FakeOptimizer:
    def __init__(self, lr=0.1):
        self._lr = lr

    @property
    def lr(self):
        return self._lr

    @lr.setter
    def lr(self, value):
        assert isinstance(value, float) and value > 0
        self._lr = value


class FakeModel:
    """What callbacks may use: stop_training, params, optimizer.lr, save()."""

    def __init__(self, n_params=4, lr=0.1):
        self.stop_training = False
        self.params = np.zeros(n_params)
        self.optimizer = FakeOptimizer(lr)
        self.saves = []

    def save(self, path):
        self.saves.append(path)


def fit(model, callbacks, epoch_logs, steps=3, batch_losses=None, verbose=0,
        batch_size=10, break_in_batch=True, **kwargs):
    """The fit protocol. Epoch e sets every parameter to e + 1 (so weights identify an epoch)
    and its logs are ``epoch_logs[e]`` (plus ``lr``); batch b of epoch e has loss
    ``batch_losses[e][b]`` (default: the epoch's loss)."""
    epochs = len(epoch_logs)
    cbs = CallbackList(callbacks, model=model, verbose=verbose, epochs=epochs, steps=steps,
                       n_samples=steps * batch_size, **kwargs)
    cbs.on_train_begin()
    for epoch in range(epochs):
        cbs.on_epoch_begin(epoch)
        for batch in range(steps):
            cbs.on_train_batch_begin(batch)
            model.params[...] = epoch + 1
            loss = batch_losses[epoch][batch] if batch_losses else epoch_logs[epoch]["loss"]
            cbs.on_train_batch_end(batch, {"loss": float(loss), "size": batch_size})
            if break_in_batch and model.stop_training:
                break
        logs = dict(epoch_logs[epoch])
        logs["lr"] = model.optimizer.lr
        cbs.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    cbs.on_train_end()
    return cbs.history


def val_logs(values, key="val_loss"):
    return [{"loss": 1.0, key: v} for v in values]


# -- CallbackList and History ---------------------------------------------------------------
def test_history_records_every_key_and_epoch():
    model = FakeModel(lr=0.01)
    logs = [{"loss": 0.5, "val_loss": 0.6, "accuracy": 0.7, "val_accuracy": 0.65},
            {"loss": 0.4, "val_loss": 0.55, "accuracy": 0.8, "val_accuracy": 0.7}]
    h = fit(model, None, logs)
    assert isinstance(h, History) and model.history is h
    assert h.epoch == [0, 1]
    assert h.history == {"loss": [0.5, 0.4], "val_loss": [0.6, 0.55], "accuracy": [0.7, 0.8],
                         "val_accuracy": [0.65, 0.7], "lr": [0.01, 0.01]}
    assert all(type(v) is float for vs in h.history.values() for v in vs)
    assert "History" in repr(h)


def test_history_converts_numpy_scalars():
    h = fit(FakeModel(), [], [{"loss": np.float32(0.5)}])
    assert h.history["loss"] == [0.5] and type(h.history["loss"][0]) is float


def test_callbacklist_order_params_and_reuse():
    class Recorder(Callback):
        def __init__(self):
            self.calls = []

        def on_train_begin(self, logs=None):
            self.calls.append("train_begin")

        def on_epoch_begin(self, epoch, logs=None):
            self.calls.append(("epoch_begin", epoch))

        def on_train_batch_begin(self, batch, logs=None):
            self.calls.append(("batch_begin", batch))

        def on_train_batch_end(self, batch, logs=None):
            self.calls.append(("batch_end", batch, logs["size"]))

        def on_epoch_end(self, epoch, logs=None):
            self.calls.append(("epoch_end", epoch))
            logs["extra"] = 1.0          # callbacks may add keys; History (last) records them

        def on_train_end(self, logs=None):
            self.calls.append("train_end")

    rec = Recorder()
    model = FakeModel()
    model.stop_training = True            # left over from an earlier fit: reset
    h = fit(model, [rec], [{"loss": 1.0}] * 2, steps=2)
    assert rec.calls == ["train_begin", ("epoch_begin", 0), ("batch_begin", 0),
                         ("batch_end", 0, 10), ("batch_begin", 1), ("batch_end", 1, 10),
                         ("epoch_end", 0), ("epoch_begin", 1), ("batch_begin", 0),
                         ("batch_end", 0, 10), ("batch_begin", 1), ("batch_end", 1, 10),
                         ("epoch_end", 1), "train_end"]
    assert rec.model is model
    assert rec.params == {"verbose": 0, "epochs": 2, "steps": 2, "n_samples": 20}
    assert h.history["extra"] == [1.0, 1.0]

    cbs = CallbackList([rec], model=model, verbose=0)
    assert [type(c) for c in cbs] == [Recorder, History] and len(cbs) == 2
    cbs = CallbackList(rec, model=model, verbose=1)          # a single callback is accepted
    assert [type(c) for c in cbs] == [ProgressBar, Recorder, History]
    assert cbs.callbacks[0].live is None
    assert CallbackList(None, model=model, verbose=2).callbacks[0].live is False
    mine_h, mine_p = History(), ProgressBar(live=False)
    cbs = CallbackList([mine_h, rec, mine_p], model=model, verbose=1)
    assert cbs.callbacks == [mine_h, rec, mine_p] and cbs.history is mine_h
    assert "CallbackList" in repr(cbs)


def test_batch_hooks_only_for_callbacks_that_define_them():
    class Old(Callback):                  # Keras 1 names still work
        def __init__(self):
            self.n = 0

        def on_batch_end(self, batch, logs=None):
            self.n += 1

    old = Old()
    cbs = CallbackList([old, EarlyStopping(monitor="loss")], model=FakeModel(), verbose=0)
    assert cbs._batch_begin == [] and len(cbs._batch_end) == 1
    fit(FakeModel(), [old], [{"loss": 1.0}] * 2, steps=3)
    assert old.n == 6


def test_base_callback_is_all_noops():
    cb = Callback()
    cb.set_model(FakeModel())
    for hook in ("on_train_begin", "on_train_end"):
        assert getattr(cb, hook)() is None
    for hook in ("on_epoch_begin", "on_epoch_end", "on_train_batch_begin",
                 "on_train_batch_end", "on_batch_begin", "on_batch_end"):
        assert getattr(cb, hook)(0, {}) is None
    assert repr(cb) == "Callback()"


def test_callbacklist_validation():
    with pytest.raises(TypeError, match="callbacks must be a list"):
        CallbackList(42)
    with pytest.raises(TypeError, match="callbacks must be a list"):
        CallbackList("EarlyStopping")
    with pytest.raises(TypeError, match=r"callbacks\[1\]"):
        CallbackList([History(), lambda: None])
    es = EarlyStopping()
    with pytest.raises(ValueError, match="same Callback instance twice"):
        CallbackList([es, es])
    with pytest.raises(ValueError, match="verbose"):
        CallbackList([], verbose=3)
    with pytest.raises(TypeError, match="verbose"):
        CallbackList([], verbose="loud")
    with pytest.raises(ValueError, match="epochs"):
        CallbackList([], epochs=-1)
    with pytest.raises(TypeError, match="steps"):
        CallbackList([], steps=2.5)
    with pytest.raises(TypeError, match="n_samples"):
        CallbackList([], n_samples=True)
    assert CallbackList([], verbose="auto").params["verbose"] == 1
    assert CallbackList([], verbose=False).params["verbose"] == 0


# -- EarlyStopping --------------------------------------------------------------------------
def test_early_stopping_patience_counting():
    # best at epoch 1; epochs 2, 3 do not improve -> with patience 2, stop after epoch 3
    model = FakeModel()
    es = EarlyStopping(patience=2)
    h = fit(model, [es], val_logs([1.0, 0.5, 0.6, 0.7, 0.1, 0.1]))
    assert h.epoch == [0, 1, 2, 3]
    assert es.stopped_epoch == 3 and es.best == 0.5 and es.best_epoch == 1 and es.wait == 2
    assert model.params.tolist() == [4, 4, 4, 4]       # no restore: last epoch's weights


def test_early_stopping_patience_zero_stops_at_first_non_improvement():
    es = EarlyStopping(patience=0)
    h = fit(FakeModel(), [es], val_logs([1.0, 0.9, 0.9, 0.1]))
    assert h.epoch == [0, 1, 2] and es.stopped_epoch == 2


def test_early_stopping_never_stops_while_improving():
    es = EarlyStopping(patience=0)
    h = fit(FakeModel(), [es], val_logs([5, 4, 3, 2, 1]))
    assert h.epoch == [0, 1, 2, 3, 4] and es.stopped_epoch == 0


def test_early_stopping_restore_best_weights_on_stop_and_at_end():
    model = FakeModel()
    es = EarlyStopping(patience=1, restore_best_weights=True)
    fit(model, [es], val_logs([1.0, 0.3, 0.5, 0.6, 0.0]))
    assert es.stopped_epoch == 2 and es.best_epoch == 1
    assert model.params.tolist() == [2, 2, 2, 2]       # weights of epoch 1 (set to 1 + 1)
    # not stopped: restored all the same (Keras 3)
    model = FakeModel()
    es = EarlyStopping(patience=10, restore_best_weights=True)
    fit(model, [es], val_logs([1.0, 0.2, 0.5]))
    assert es.stopped_epoch == 0 and model.params.tolist() == [2, 2, 2, 2]
    # the saved copy is a copy, not a view of the live buffer
    assert es.best_weights is not model.params and not np.shares_memory(es.best_weights,
                                                                        model.params)


def test_early_stopping_mode_max_and_auto():
    logs = val_logs([0.5, 0.7, 0.6, 0.65, 0.9], key="val_accuracy")
    es = EarlyStopping(monitor="val_accuracy", patience=2)        # auto -> max
    assert es.mode == "max"
    h = fit(FakeModel(), [es], logs)
    assert h.epoch == [0, 1, 2, 3] and es.best == 0.7
    es = EarlyStopping(monitor="val_accuracy", patience=2, mode="min")
    h = fit(FakeModel(), [es], logs)
    assert es.best == 0.5 and h.epoch == [0, 1, 2]
    assert EarlyStopping(monitor="loss").mode == "min"
    assert EarlyStopping(monitor="acc", mode="min").mode == "min"


def test_early_stopping_min_delta():
    # improvements of 0.05 do not count with min_delta=0.1 (mode min) ...
    es = EarlyStopping(monitor="loss", min_delta=0.1, patience=1)
    h = fit(FakeModel(), [es], [{"loss": v} for v in [1.0, 0.95, 0.9, 0.5]])
    assert h.epoch == [0, 1] and es.best == 1.0
    # ... nor in mode max; 0.11 does
    es = EarlyStopping(monitor="accuracy", min_delta=0.1, patience=1)
    h = fit(FakeModel(), [es], [{"loss": 1.0, "accuracy": v} for v in [0.5, 0.61, 0.65, 0.7]])
    assert h.epoch == [0, 1, 2] and es.best == 0.61 and es.best_epoch == 1


def test_early_stopping_baseline():
    # never beats the baseline 0.5: stops after `patience` epochs even while improving
    es = EarlyStopping(monitor="loss", patience=2, baseline=0.5, restore_best_weights=True)
    model = FakeModel()
    h = fit(model, [es], [{"loss": v} for v in [0.9, 0.8, 0.7, 0.6, 0.4]])
    assert h.epoch == [0, 1] and es.stopped_epoch == 1 and es.best == 0.8
    assert model.params.tolist() == [2, 2, 2, 2]
    # beats it at epoch 1: ordinary patience from then on
    es = EarlyStopping(monitor="loss", patience=2, baseline=0.5)
    h = fit(FakeModel(), [es], [{"loss": v} for v in [0.9, 0.4, 0.45, 0.45, 0.1]])
    assert h.epoch == [0, 1, 2, 3] and es.best == 0.4
    # mode max
    es = EarlyStopping(monitor="val_accuracy", patience=1, baseline=0.9)
    h = fit(FakeModel(), [es], val_logs([0.5, 0.6, 0.95], key="val_accuracy"))
    assert h.epoch == [0, 1]


def test_early_stopping_start_from_epoch():
    es = EarlyStopping(monitor="loss", patience=0, start_from_epoch=3)
    h = fit(FakeModel(), [es], [{"loss": v} for v in [1, 2, 3, 4, 5, 6]])
    assert h.epoch == [0, 1, 2, 3, 4] and es.best == 4 and es.stopped_epoch == 4


def test_early_stopping_is_reset_between_fits():
    es = EarlyStopping(patience=0)
    model = FakeModel()
    fit(model, [es], val_logs([1.0, 2.0]))
    assert es.stopped_epoch == 1 and model.stop_training
    h = fit(model, [es], val_logs([5.0, 4.0, 3.0]))
    assert h.epoch == [0, 1, 2] and es.stopped_epoch == 0 and es.best == 3.0


def test_early_stopping_missing_monitor_names_available_keys():
    es = EarlyStopping()
    with pytest.raises(ValueError, match=r"monitor='val_loss'.*validation.*'loss', 'lr'"):
        fit(FakeModel(), [es], [{"loss": 1.0}])
    with pytest.raises(TypeError, match=r"logs\['x'\] must be a number"):
        EarlyStopping(monitor="x").on_epoch_end(0, {"x": "bad"})


def test_early_stopping_verbose_messages(capsys):
    model = FakeModel()
    es = EarlyStopping(patience=0, restore_best_weights=True, verbose=1)
    fit(model, [es], val_logs([1.0, 2.0]))
    out = capsys.readouterr().out
    assert "Epoch 2: early stopping" in out and "best epoch: 1" in out
    assert "EarlyStopping(monitor='val_loss'" in repr(es)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"monitor": 3}, TypeError, "monitor"),
    ({"monitor": ""}, ValueError, "monitor"),
    ({"min_delta": -0.1}, ValueError, "min_delta"),
    ({"min_delta": "0"}, TypeError, "min_delta"),
    ({"min_delta": float("nan")}, ValueError, "min_delta"),
    ({"patience": -1}, ValueError, "patience"),
    ({"patience": 1.5}, TypeError, "patience"),
    ({"mode": "minimum"}, ValueError, "mode"),
    ({"restore_best_weights": 1}, TypeError, "restore_best_weights"),
    ({"baseline": "0.5"}, TypeError, "baseline"),
    ({"baseline": float("inf")}, ValueError, "baseline"),
    ({"start_from_epoch": -2}, ValueError, "start_from_epoch"),
    ({"verbose": 5}, ValueError, "verbose"),
])
def test_early_stopping_validation(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        EarlyStopping(**kwargs)


# -- ModelCheckpoint ------------------------------------------------------------------------
def test_checkpoint_every_epoch_with_formatting(tmp_path):
    model = FakeModel()
    pattern = str(tmp_path / "ckpt" / "{epoch:02d}-{val_loss:.3f}.fpz")
    cp = ModelCheckpoint(pattern)
    fit(model, [cp], val_logs([0.5, 0.25, 0.75]))
    expected = [str(tmp_path / "ckpt" / name)
                for name in ("01-0.500.fpz", "02-0.250.fpz", "03-0.750.fpz")]
    assert model.saves == expected and cp.saved == expected
    assert (tmp_path / "ckpt").is_dir()                # parent created


def test_checkpoint_save_best_only(tmp_path):
    model = FakeModel()
    cp = ModelCheckpoint(tmp_path / "best-{epoch}.fpz", save_best_only=True)
    fit(model, [cp], val_logs([0.5, 0.6, 0.4, float("nan"), 0.4, 0.3]))
    assert [p.rsplit("-", 1)[1] for p in model.saves] == ["1.fpz", "3.fpz", "6.fpz"]
    assert cp.best == 0.3
    # best is kept across fits, as in Keras
    fit(model, [cp], val_logs([0.35, 0.2]))
    assert model.saves[-1].endswith("best-2.fpz") and len(model.saves) == 4
    # mode max, on accuracy (auto)
    model = FakeModel()
    cp = ModelCheckpoint(str(tmp_path / "acc.fpz"), monitor="val_accuracy",
                         save_best_only=True)
    fit(model, [cp], val_logs([0.5, 0.4, 0.6], key="val_accuracy"))
    assert len(model.saves) == 2
    model = FakeModel()
    cp = ModelCheckpoint(str(tmp_path / "acc.fpz"), monitor="val_accuracy",
                         save_best_only=True, mode="min")
    fit(model, [cp], val_logs([0.5, 0.4, 0.6], key="val_accuracy"))
    assert len(model.saves) == 2 and cp.best == 0.4


def test_checkpoint_monitor_not_needed_without_save_best_only(tmp_path):
    model = FakeModel()
    fit(model, [ModelCheckpoint(str(tmp_path / "m.fpz"))], [{"loss": 1.0}])
    assert model.saves == [str(tmp_path / "m.fpz")]
    with pytest.raises(ValueError, match="monitor='val_loss'"):
        fit(FakeModel(), [ModelCheckpoint(str(tmp_path / "m.fpz"), save_best_only=True)],
            [{"loss": 1.0}])


def test_checkpoint_verbose(tmp_path, capsys):
    fit(FakeModel(), [ModelCheckpoint(str(tmp_path / "m.fpz"), save_best_only=True,
                                      verbose=1)], val_logs([0.5]))
    assert "Epoch 1: val_loss improved from None to 0.5, saving model to" in \
        capsys.readouterr().out


def test_checkpoint_filepath_errors(tmp_path):
    with pytest.raises(TypeError, match="filepath"):
        ModelCheckpoint(3)
    with pytest.raises(ValueError, match="filepath"):
        ModelCheckpoint("")
    with pytest.raises(ValueError, match="filepath is not a valid format"):
        ModelCheckpoint("m-{epoch.fpz")
    with pytest.raises(ValueError, match="named fields"):
        ModelCheckpoint("m-{}.fpz")
    with pytest.raises(ValueError, match="named fields"):
        ModelCheckpoint("m-{0}.fpz")
    with pytest.raises(TypeError, match="save_best_only"):
        ModelCheckpoint("m.fpz", save_best_only="yes")
    with pytest.raises(ValueError, match="mode"):
        ModelCheckpoint("m.fpz", mode="best")
    with pytest.raises(TypeError, match="monitor"):
        ModelCheckpoint("m.fpz", monitor=None)
    cp = ModelCheckpoint(str(tmp_path / "{val_acc:.2f}.fpz"))
    with pytest.raises(ValueError, match=r"val_acc, not in the epoch logs.*'loss'"):
        fit(FakeModel(), [cp], [{"loss": 1.0}])
    cp = ModelCheckpoint(str(tmp_path / "{loss:d}.fpz"))
    with pytest.raises(ValueError, match="cannot format filepath"):
        fit(FakeModel(), [cp], [{"loss": 1.0}])
    assert "ModelCheckpoint(" in repr(cp)


# -- LearningRateScheduler ------------------------------------------------------------------
def test_lr_scheduler_sets_lr_at_epoch_begin():
    model = FakeModel(lr=1.0)
    seen = []

    def schedule(epoch, lr):
        seen.append((epoch, lr))
        return lr * 0.5 if epoch > 0 else lr

    h = fit(model, [LearningRateScheduler(schedule)], [{"loss": 1.0}] * 4)
    assert seen == [(0, 1.0), (1, 1.0), (2, 0.5), (3, 0.25)]
    assert h.history["lr"] == [1.0, 0.5, 0.25, 0.125]   # the lr used in each epoch
    assert model.optimizer.lr == 0.125


def test_lr_scheduler_one_argument_and_numpy_results():
    model = FakeModel()
    h = fit(model, [LearningRateScheduler(lambda epoch: np.float32(0.5) / (epoch + 1))],
            [{"loss": 1.0}] * 2)
    assert h.history["lr"] == [0.5, 0.25]
    h = fit(model, [LearningRateScheduler(lambda e, lr: np.array(0.125))], [{"loss": 1.0}])
    assert h.history["lr"] == [0.125]
    h = fit(model, [LearningRateScheduler(lambda e, lr: 1)], [{"loss": 1.0}])
    assert h.history["lr"] == [1.0]


def test_lr_scheduler_verbose(capsys):
    fit(FakeModel(), [LearningRateScheduler(lambda e, lr: 0.01, verbose=1)], [{"loss": 1.0}])
    assert "Epoch 1: LearningRateScheduler setting learning rate to 0.01." in \
        capsys.readouterr().out


@pytest.mark.parametrize("bad, exc", [(0.0, ValueError), (-1e-3, ValueError),
                                      (float("nan"), ValueError), (float("inf"), ValueError),
                                      (None, TypeError), ("0.1", TypeError),
                                      (True, TypeError), (np.array([0.1]), TypeError)])
def test_lr_scheduler_validates_schedule_output(bad, exc):
    model = FakeModel(lr=0.1)
    with pytest.raises(exc, match="LearningRateScheduler at epoch 0.*returned by schedule"):
        fit(model, [LearningRateScheduler(lambda e, lr: bad)], [{"loss": 1.0}])
    assert model.optimizer.lr == 0.1                     # unchanged


def test_lr_scheduler_validation():
    with pytest.raises(TypeError, match="schedule must be callable"):
        LearningRateScheduler(0.1)
    with pytest.raises(TypeError, match="schedule must accept"):
        LearningRateScheduler(lambda: 0.1)
    assert "LearningRateScheduler(" in repr(LearningRateScheduler(lambda e, lr: lr))


# -- ReduceLROnPlateau ----------------------------------------------------------------------
def test_plateau_reduces_after_patience():
    model = FakeModel(lr=1.0)
    cb = ReduceLROnPlateau(patience=2, factor=0.5)
    h = fit(model, [cb], val_logs([1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5]))
    # epochs 1, 2 do not improve -> reduce after epoch 2; epochs 3, 4 -> reduce after 4;
    # epoch 5 improves; 6, 7 -> reduce after 7
    assert h.history["lr"] == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.25]
    assert model.optimizer.lr == 0.125


def test_plateau_min_delta_and_mode_max():
    model = FakeModel(lr=1.0)
    # improvements below min_delta count as plateau
    fit(model, [ReduceLROnPlateau(monitor="loss", patience=1, factor=0.5, min_delta=0.1)],
        [{"loss": v} for v in [1.0, 0.95]])
    assert model.optimizer.lr == 0.5
    model = FakeModel(lr=1.0)
    fit(model, [ReduceLROnPlateau(monitor="val_accuracy", patience=1, factor=0.5)],
        val_logs([0.5, 0.6, 0.7], key="val_accuracy"))
    assert model.optimizer.lr == 1.0
    fit(model, [ReduceLROnPlateau(monitor="val_accuracy", patience=1, factor=0.5)],
        val_logs([0.5, 0.4], key="val_accuracy"))
    assert model.optimizer.lr == 0.5


def test_plateau_cooldown():
    model = FakeModel(lr=1.0)
    cb = ReduceLROnPlateau(monitor="loss", patience=1, factor=0.5, cooldown=2)
    h = fit(model, [cb], [{"loss": 1.0}] * 7)
    # Keras: reduce after epoch 1 and set cooldown_counter = 2; epoch 2 is skipped, epoch 3
    # ends the cooldown and counts (wait 1 >= patience) -> reduce; epoch 4 skipped, 5 reduces
    assert h.history["lr"] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.125]
    assert model.optimizer.lr == 0.0625 * 2 and cb.in_cooldown()
    # without cooldown: a reduction after every `patience` plateau epochs
    model = FakeModel(lr=1.0)
    h = fit(model, [ReduceLROnPlateau(monitor="loss", patience=1, factor=0.5)],
            [{"loss": 1.0}] * 4)
    assert h.history["lr"] == [1.0, 1.0, 0.5, 0.25]


def test_plateau_min_lr():
    model = FakeModel(lr=1.0)
    cb = ReduceLROnPlateau(monitor="loss", patience=0, factor=0.1, min_lr=0.05)
    h = fit(model, [cb], [{"loss": 1.0}] * 5)
    assert h.history["lr"] == [1.0, 1.0, 0.1, 0.05, 0.05]     # epoch 0 sets the best
    # a float32 optimizer hands back min_lr rounded: no spurious reductions
    model = FakeModel(lr=float(np.float32(0.05)))
    cb = ReduceLROnPlateau(monitor="loss", patience=0, factor=0.1, min_lr=0.05, verbose=1)
    fit(model, [cb], [{"loss": 1.0}] * 3)
    assert model.optimizer.lr == float(np.float32(0.05))


def test_plateau_verbose_and_missing_monitor(capsys):
    fit(FakeModel(lr=1.0), [ReduceLROnPlateau(monitor="loss", patience=0, verbose=1)],
        [{"loss": 1.0}] * 2)
    assert "Epoch 2: ReduceLROnPlateau reducing learning rate to 0.1." in capsys.readouterr().out
    with pytest.raises(ValueError, match="ReduceLROnPlateau: monitor='val_loss'"):
        fit(FakeModel(), [ReduceLROnPlateau()], [{"loss": 1.0}])


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"factor": 1.0}, ValueError, "factor"),
    ({"factor": 0}, ValueError, "factor"),
    ({"factor": "0.1"}, TypeError, "factor"),
    ({"patience": -1}, ValueError, "patience"),
    ({"mode": "up"}, ValueError, "mode"),
    ({"min_delta": -1}, ValueError, "min_delta"),
    ({"cooldown": 0.5}, TypeError, "cooldown"),
    ({"min_lr": -1e-5}, ValueError, "min_lr"),
    ({"min_lr": float("nan")}, ValueError, "min_lr"),
    ({"monitor": ["loss"]}, TypeError, "monitor"),
])
def test_plateau_validation(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ReduceLROnPlateau(**kwargs)
    assert "ReduceLROnPlateau(" in repr(ReduceLROnPlateau())


# -- TerminateOnNaN -------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_terminate_on_nan_stops_at_the_batch(bad, capsys):
    model = FakeModel()
    cb = TerminateOnNaN()
    h = fit(model, [cb], [{"loss": 1.0}, {"loss": 1.0}, {"loss": 1.0}], steps=4,
            batch_losses=[[1, 1, 1, 1], [1, bad, 1, 1], [1, 1, 1, 1]])
    assert model.stop_training and cb.terminated_at == (1, 1)
    assert h.epoch == [0, 1]
    assert "Batch 1: invalid loss" in capsys.readouterr().out


def test_terminate_on_nan_in_a_loop_that_checks_only_per_epoch(capsys):
    model = FakeModel()
    cb = TerminateOnNaN()
    h = fit(model, [cb], [{"loss": 1.0}, {"loss": float("nan")}, {"loss": 1.0}], steps=2,
            break_in_batch=False)
    assert h.epoch == [0, 1] and cb.terminated_at == (1, 0)
    assert capsys.readouterr().out.count("invalid loss") == 1
    # an epoch loss alone also stops it
    cb = TerminateOnNaN()
    model = FakeModel()
    cbs = CallbackList([cb], model=model, verbose=0)
    cbs.on_train_begin()
    cbs.on_epoch_end(0, {"loss": float("nan")})
    assert model.stop_training and cb.terminated_at == (0, None)
    assert "Epoch 1: invalid loss" in capsys.readouterr().out


def test_terminate_on_nan_leaves_finite_runs_alone():
    model = FakeModel()
    h = fit(model, [TerminateOnNaN()], [{"loss": 1e30}] * 3)
    assert h.epoch == [0, 1, 2] and not model.stop_training


# -- CSVLogger ------------------------------------------------------------------------------
def read_csv(path, sep=","):
    with open(path, newline="") as f:
        return list(csv.reader(f, delimiter=sep))


def test_csv_logger_content(tmp_path):
    path = tmp_path / "log.csv"
    logs = [{"loss": 0.5, "val_loss": 0.625, "accuracy": 0.75},
            {"loss": 0.25, "val_loss": 0.5, "accuracy": 0.875}]
    fit(FakeModel(lr=0.01), [CSVLogger(path)], logs)
    assert read_csv(path) == [["epoch", "loss", "val_loss", "accuracy", "lr"],
                              ["0", "0.5", "0.625", "0.75", "0.01"],
                              ["1", "0.25", "0.5", "0.875", "0.01"]]


def test_csv_logger_overwrite_append_and_separator(tmp_path):
    path = tmp_path / "log.tsv"
    fit(FakeModel(), [CSVLogger(str(path), separator="\t")], [{"loss": 1.0}])
    fit(FakeModel(), [CSVLogger(str(path), separator="\t")], [{"loss": 2.0}])  # overwrite
    assert read_csv(path, "\t") == [["epoch", "loss", "lr"], ["0", "2.0", "0.1"]]
    cb = CSVLogger(str(path), separator="\t", append=True)
    with pytest.warns(UserWarning, match="no column for val_loss"):
        fit(FakeModel(), [cb], [{"loss": 3.0, "val_loss": 4.0}, {"loss": 5.0}])
    assert read_csv(path, "\t") == [["epoch", "loss", "lr"], ["0", "2.0", "0.1"],
                                    ["0", "3.0", "0.1"], ["1", "5.0", "0.1"]]
    new = tmp_path / "new.csv"                        # append to a file that does not exist
    fit(FakeModel(), [CSVLogger(new, append=True)], [{"loss": 1.0, "val_loss": 2.0},
                                                     {"loss": 1.5}])
    assert read_csv(new) == [["epoch", "loss", "val_loss", "lr"], ["0", "1.0", "2.0", "0.1"],
                             ["1", "1.5", "NA", "0.1"]]


def test_csv_logger_closes_file_and_validation(tmp_path):
    cb = CSVLogger(tmp_path / "x.csv")
    fit(FakeModel(), [cb], [{"loss": 1.0}])
    assert cb._file is None
    with pytest.raises(TypeError, match="filename"):
        CSVLogger(None)
    with pytest.raises(TypeError, match="separator"):
        CSVLogger("x.csv", separator=1)
    with pytest.raises(ValueError, match="separator"):
        CSVLogger("x.csv", separator=", ")
    with pytest.raises(ValueError, match="separator"):
        CSVLogger("x.csv", separator='"')
    with pytest.raises(TypeError, match="append"):
        CSVLogger("x.csv", append="no")
    assert "CSVLogger(" in repr(cb)
    with pytest.raises(FileNotFoundError):
        fit(FakeModel(), [CSVLogger(tmp_path / "missing" / "x.csv")], [{"loss": 1.0}])


# -- ProgressBar ----------------------------------------------------------------------------
class FakeTTY(io.StringIO):
    def isatty(self):
        return True


class FakeClock:
    def __init__(self, step):
        self.t = 0.0
        self.step = step

    def __call__(self):
        self.t += self.step
        return self.t


def test_progress_non_tty_one_line_per_epoch(capsys):
    logs = [{"loss": 0.5, "val_loss": 0.25, "accuracy": 0.75}, {"loss": 0.125}]
    fit(FakeModel(lr=0.001), [], logs, steps=5, verbose=1)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 2 and out.endswith("\n") and "\r" not in out
    assert lines[0].startswith("Epoch 1/2 - loss 0.5000 - val_loss 0.2500 - accuracy 0.7500 "
                               "- lr 0.001 - ")
    assert lines[1].startswith("Epoch 2/2 - loss 0.1250 - lr 0.001 - ")
    assert all(line.endswith("samples/s") for line in lines)


def test_progress_non_tty_numbers(monkeypatch):
    monkeypatch.setattr(C.progress, "_now", FakeClock(0.001))     # every clock read advances 1 ms
    buf = io.StringIO()
    fit(FakeModel(), [ProgressBar(buf)], [{"loss": 1.0}], steps=4, batch_size=25, verbose=0)
    line = buf.getvalue()
    # begin t=1ms, batches end at 2..5 ms, epoch end 6 ms: 100 samples in 4 ms
    assert line == "Epoch 1/1 - loss 1.0000 - lr 0.1 - 0.0s - 25,000 samples/s\n"


def test_progress_verbose_2_is_line_mode_even_on_a_tty(monkeypatch):
    tty = FakeTTY()
    monkeypatch.setattr("sys.stdout", tty)
    fit(FakeModel(), [], [{"loss": 1.0}] * 2, verbose=2)
    assert "\r" not in tty.getvalue() and len(tty.getvalue().splitlines()) == 2


def test_progress_tty_live_line(monkeypatch):
    monkeypatch.setattr(C.progress, "_now", FakeClock(0.05))      # 50 ms per clock read
    tty = FakeTTY()
    logs = [{"loss": 0.5, "val_loss": 0.25}, {"loss": 0.25, "val_loss": 0.125}]
    fit(FakeModel(), [ProgressBar(tty)], logs, steps=10, batch_size=8,
        batch_losses=[[1.0] * 5 + [0.0] * 5, [0.25] * 10])
    out = tty.getvalue()
    epochs = out.split("\n")
    assert len(epochs) == 3 and epochs[2] == ""         # one finished line per epoch
    frames = epochs[0].split("\r")[1:]
    # throttled: redraws every 0.1 s (every second batch here) and on the last batch, not 10
    assert 4 <= len(frames) - 1 <= 6
    first = frames[0]
    assert first.startswith("Epoch 1/2 [====>...............] 2/10 - loss 1.0000 - ")
    assert "samples/s" in first and "ETA " in first
    final = frames[-1].rstrip()
    assert final.startswith("Epoch 1/2 [====================] 10/10 - loss 0.5000 - "
                            "val_loss 0.2500 - lr 0.1 - ")
    assert final.endswith("samples/s") and "ETA" not in final
    # the running loss is the size-weighted mean of the batches so far
    assert "loss 0.5000" in frames[-2] or "loss 0.5000" in frames[-1]
    assert epochs[1].split("\r")[-1].startswith("Epoch 2/2 [====================] 10/10")


def test_progress_tty_throttle_redraws_on_last_batch(monkeypatch):
    monkeypatch.setattr(C.progress, "_now", FakeClock(1e-4))      # far faster than the redraw interval
    tty = FakeTTY()
    fit(FakeModel(), [ProgressBar(tty)], [{"loss": 1.0}], steps=50)
    frames = tty.getvalue().split("\r")[1:]
    assert len(frames) == 2                               # last batch, then the final line
    # 80 columns (no terminal behind the fake file): the bar narrows so the line fits
    assert frames[0] == ("Epoch 1/1 [================] 50/50 - loss 1.0000 - "
                         "100,000 samples/s - ETA 0.0s")
    assert len(frames[0]) == 79
    assert frames[1].startswith("Epoch 1/1 [====================] 50/50 - loss 1.0000")


def test_progress_tty_messages_get_their_own_line(monkeypatch, capsys):
    monkeypatch.setattr(C.progress, "_now", FakeClock(0.2))
    tty = FakeTTY()
    monkeypatch.setattr("sys.stdout", tty)
    fit(FakeModel(), [TerminateOnNaN()], [{"loss": 1.0}], steps=4, verbose=1,
        batch_losses=[[1.0, float("nan"), 1.0, 1.0]])
    lines = tty.getvalue().split("\n")
    assert lines[0].startswith("\rEpoch 1/1 [=====>") and "2/4" in lines[0]
    assert lines[1] == "Batch 1: invalid loss nan, terminating training"
    assert lines[2].startswith("\rEpoch 1/1 [==========>") and "ETA" not in lines[2]
    assert lines[3] == ""


def test_progress_tty_pads_shorter_redraws(monkeypatch):
    monkeypatch.setattr(C.progress, "_now", FakeClock(0.2))
    tty = FakeTTY()
    fit(FakeModel(), [ProgressBar(tty)], [{"loss": 1.0}], steps=3,
        batch_losses=[[12345.0, 0.001, 0.001]])
    frames = tty.getvalue().split("\r")[1:]
    assert len(frames[1]) >= len(frames[0])


def test_progress_formats():
    assert C._base._fmt_time(0.04) == "0.0s" and C._base._fmt_time(59.94) == "59.9s"
    assert C._base._fmt_time(125) == "2m05s" and C._base._fmt_time(3725) == "1h02m"
    assert C._base._fmt_value(0.12345) == "0.1235" and C._base._fmt_value(1.5e-5) == "1.5000e-05"
    assert C._base._fmt_value(0.0) == "0.0000" and C._base._fmt_value(float("nan")) == "nan"
    assert C._base._fmt_value(3e-4, "lr") == "0.0003"


def test_progress_validation():
    with pytest.raises(TypeError, match="file"):
        ProgressBar(file="out.txt")
    with pytest.raises(TypeError, match="live"):
        ProgressBar(live="yes")
    assert "ProgressBar(" in repr(ProgressBar())


def test_progress_without_isatty_is_line_mode():
    class Sink:
        def __init__(self):
            self.text = ""

        def write(self, s):
            self.text += s

    sink = Sink()
    fit(FakeModel(), [ProgressBar(sink)], [{"loss": 1.0}] * 3)
    assert len(sink.text.splitlines()) == 3 and "\r" not in sink.text
