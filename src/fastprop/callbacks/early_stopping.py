"""Stop training when a monitored quantity stops improving: :class:`EarlyStopping`."""
import numpy as np

from fastprop import _validation as V
from fastprop.callbacks._base import (Callback, _check_bool, _check_fit_key, _check_mode,
                                      _check_monitor, _check_real, _check_verbose, _is_better,
                                      _monitor_value)
from fastprop.callbacks.progress import _message


class EarlyStopping(Callback):
    """Stop training when a monitored quantity has stopped improving.

    Parameters
    ----------
    monitor : str, default "val_loss"
        Key of the epoch logs to watch (``loss``, ``val_loss``, ``accuracy``, ``val_accuracy``).
    min_delta : float, default 0
        Improvements of ``min_delta`` or less (absolute) do not count. >= 0.
    patience : int, default 0
        Epochs without improvement after which training stops. >= 0.
    mode : {"auto", "min", "max"}, default "auto"
        Whether lower or higher is better; auto: "max" if "acc" is in ``monitor``, else "min".
    restore_best_weights : bool, default False
        Keep a copy of ``model.params`` and ``model.state`` (BatchNorm's running statistics)
        from the best epoch and put them back when training ends (stopped early or not). When False the model keeps the last epoch's weights.
    baseline : float, optional
        Value to reach: until the monitored quantity beats it, epochs count as not improving
        (training stops after ``patience`` of them even if the quantity keeps improving below
        the baseline).
    start_from_epoch : int, default 0
        Epochs to wait before watching (warm-up). >= 0.
    verbose : int, default 0
        1 prints a message when stopping and when restoring weights.

    Attributes
    ----------
    best : float or None
        Best monitored value so far; ``best_epoch`` its (0-based) epoch.
    wait : int
        Epochs counted since the last improvement.
    stopped_epoch : int
        Epoch at which training was stopped (0 if it was not).

    Raises
    ------
    ValueError
        At an epoch's end, if ``monitor`` is not in the logs (message lists the keys present).

    Notes
    -----
    As in Keras: ``wait`` counts epochs since the last improvement, and training stops at the
    end of an epoch (never the first) once ``wait >= patience``; so ``patience=0`` stops at the
    first epoch that does not improve, ``patience=2`` after two in a row. Keras skips the stop
    test after an epoch that improves on the best but not on ``baseline``, so a slowly improving
    run never stops on the baseline; here it does, as the Keras documentation describes.
    """

    def __init__(self, monitor="val_loss", min_delta=0, patience=0, mode="auto",
                 restore_best_weights=False, baseline=None, start_from_epoch=0, verbose=0):
        self.monitor = _check_monitor(monitor)
        self.min_delta = _check_real(min_delta, "min_delta", minimum=0)
        self.patience = V.check_size(patience, "patience", minimum=0)
        self.mode = _check_mode(mode, self.monitor)
        self.restore_best_weights = _check_bool(restore_best_weights, "restore_best_weights")
        self.baseline = None if baseline is None else _check_real(baseline, "baseline")
        self.start_from_epoch = V.check_size(start_from_epoch, "start_from_epoch", minimum=0)
        self.verbose = _check_verbose(verbose)
        self._reset()

    def _reset(self):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_epoch = 0
        self.best_weights = None
        self.best_state = None

    def on_train_begin(self, logs=None):
        self._reset()

    def _check_fit(self, keys):
        _check_fit_key(self.monitor, keys, "EarlyStopping", "monitor")

    def on_epoch_end(self, epoch, logs=None):
        current = _monitor_value(logs, self.monitor, "EarlyStopping")
        if epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = np.array(self.model.params, copy=True)
            state = getattr(self.model, "state", None)    # (a model without layer state)
            self.best_state = None if state is None else np.array(state, copy=True)
            self.best_epoch = epoch
        self.wait += 1
        if _is_better(current, self.best, self.mode, self.min_delta):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights[...] = self.model.params
                if self.best_state is not None:
                    self.best_state[...] = self.model.state
            if self.baseline is None or _is_better(current, self.baseline, self.mode,
                                                   self.min_delta):
                self.wait = 0
                return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose:
            _message(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose:
                _message(f"Restoring model weights from the end of the best epoch: "
                         f"{self.best_epoch + 1}.")
            self.model.params[...] = self.best_weights
            if self.best_state is not None:
                self.model.state[...] = self.best_state

    def __repr__(self):
        return (f"EarlyStopping(monitor={self.monitor!r}, min_delta={self.min_delta}, "
                f"patience={self.patience}, mode={self.mode!r}, "
                f"restore_best_weights={self.restore_best_weights}, baseline={self.baseline}, "
                f"start_from_epoch={self.start_from_epoch})")
