"""Learning-rate callbacks: :class:`LearningRateScheduler`, :class:`ReduceLROnPlateau`."""
import inspect
import math

import numpy as np

from fastprop import _validation as V
from fastprop.callbacks._base import (Callback, _check_fit_key, _check_mode, _check_monitor,
                                      _check_real, _check_verbose, _is_better, _monitor_value)
from fastprop.callbacks.progress import _message


class LearningRateScheduler(Callback):
    """Set the learning rate at the start of every epoch from ``schedule(epoch, lr)``.

    Parameters
    ----------
    schedule : callable
        ``schedule(epoch, lr) -> new_lr`` with the 0-based epoch and the current learning rate
        (a one-argument ``schedule(epoch)`` is accepted too). Must return a finite number > 0.
    verbose : int, default 0
        1 prints the learning rate set at each epoch.

    Examples
    --------
    >>> halve_every_10 = LearningRateScheduler(lambda epoch, lr: lr * 0.5 if epoch and
    ...                                        epoch % 10 == 0 else lr)
    """

    def __init__(self, schedule, verbose=0):
        if not callable(schedule):
            raise TypeError(f"schedule must be callable as schedule(epoch, lr), got "
                            f"{type(schedule).__name__}")
        self.schedule = schedule
        self.verbose = _check_verbose(verbose)
        self._two_args = _accepts_two_args(schedule)

    def on_epoch_begin(self, epoch, logs=None):
        lr = float(self.model.optimizer.lr)
        new = self.schedule(epoch, lr) if self._two_args else self.schedule(epoch)
        if isinstance(new, np.ndarray) and new.ndim == 0:
            new = new[()]
        try:
            new = _check_real(new, "the learning rate returned by schedule", minimum=0,
                              strict=True)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"LearningRateScheduler at epoch {epoch}: {exc}") from None
        self.model.optimizer.lr = new
        if self.verbose:
            _message(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to "
                     f"{new:.6g}.")

    def __repr__(self):
        return f"LearningRateScheduler({self.schedule!r})"


def _accepts_two_args(fn):
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return True
    positional = 0
    for p in sig.parameters.values():
        if p.kind == p.VAR_POSITIONAL:
            return True
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            positional += 1
    if positional == 0:
        raise TypeError("schedule must accept (epoch, lr) or (epoch) positional arguments")
    return positional >= 2


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when a monitored quantity stops improving.

    Parameters
    ----------
    monitor : str, default "val_loss"
    factor : float, default 0.1
        ``new_lr = max(lr * factor, min_lr)``; 0 < factor < 1.
    patience : int, default 10
        Epochs without improvement before reducing. >= 0.
    mode : {"auto", "min", "max"}, default "auto"
        auto: "max" if "acc" is in ``monitor``, else "min".
    min_delta : float, default 1e-4
        An epoch improves only if it beats the best by more than ``min_delta``. >= 0.
    cooldown : int, default 0
        Epochs after a reduction during which no reduction happens and ``wait`` stays 0.
    min_lr : float, default 0
        Lower bound on the learning rate. >= 0.
    verbose : int, default 0
        1 prints a message on each reduction.

    Attributes
    ----------
    best : float
        Best monitored value since training began.
    wait, cooldown_counter : int
        Epochs without improvement, epochs of cooldown left.
    """

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, mode="auto",
                 min_delta=1e-4, cooldown=0, min_lr=0, verbose=0):
        self.monitor = _check_monitor(monitor)
        self.factor = _check_real(factor, "factor", minimum=0, strict=True, maximum=1,
                                  strict_max=True)
        self.patience = V.check_size(patience, "patience", minimum=0)
        self.mode = _check_mode(mode, self.monitor)
        self.min_delta = _check_real(min_delta, "min_delta", minimum=0)
        self.cooldown = V.check_size(cooldown, "cooldown", minimum=0)
        self.min_lr = _check_real(min_lr, "min_lr", minimum=0)
        self.verbose = _check_verbose(verbose)
        self._reset()

    def _reset(self):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait = 0
        self.cooldown_counter = 0

    def in_cooldown(self):
        """True while reductions are paused after the last one."""
        return self.cooldown_counter > 0

    def on_train_begin(self, logs=None):
        self._reset()

    def _check_fit(self, keys):
        _check_fit_key(self.monitor, keys, "ReduceLROnPlateau", "monitor")

    def on_epoch_end(self, epoch, logs=None):
        current = _monitor_value(logs, self.monitor, "ReduceLROnPlateau")
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if _is_better(current, self.best, self.mode, self.min_delta):
            self.best = current
            self.wait = 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience:
                old = float(self.model.optimizer.lr)
                new = max(old * self.factor, self.min_lr)
                # a float32 optimizer may hand back min_lr rounded up: tolerate that
                if new < old * (1 - 1e-6):
                    self.model.optimizer.lr = new
                    if self.verbose:
                        _message(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning "
                                 f"rate to {new:.6g}.")
                    self.cooldown_counter = self.cooldown
                    self.wait = 0

    def __repr__(self):
        return (f"ReduceLROnPlateau(monitor={self.monitor!r}, factor={self.factor}, "
                f"patience={self.patience}, mode={self.mode!r}, min_delta={self.min_delta}, "
                f"cooldown={self.cooldown}, min_lr={self.min_lr})")
