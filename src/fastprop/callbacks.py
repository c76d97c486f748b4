"""Hooks into :meth:`Sequential.fit`: history, progress bar and Keras-style callbacks.

``fit`` drives every callback through one :class:`CallbackList`::

    cbs = CallbackList(callbacks, model=model, verbose=verbose, epochs=E, steps=S, n_samples=N)
    cbs.on_train_begin()
    for epoch in range(E):
        cbs.on_epoch_begin(epoch)
        for batch in range(S):
            cbs.on_train_batch_begin(batch)
            ...                                                   # one compiled train step
            cbs.on_train_batch_end(batch, {"loss": loss, "size": n_in_batch})
            if model.stop_training: break
        cbs.on_epoch_end(epoch, logs)      # loss, val_loss, accuracy, val_accuracy, lr
        if model.stop_training: break
    cbs.on_train_end()
    return cbs.history

A callback sees the model through four things only: ``model.stop_training`` (set it to end
training after the current batch / epoch), ``model.params`` (the flat weight buffer: copy it to
keep weights, assign into it with ``model.params[...] = saved`` to restore them),
``model.optimizer.lr`` and ``model.save(path)``.

Semantics follow Keras (``keras.callbacks``) so that recipes carry over; where this module
differs, the class docstring says so. Arguments are checked when a callback is made; a
monitored key (or a ``ModelCheckpoint`` filepath field) that will not be in the epoch logs
raises ``ValueError`` at the start of ``fit``, before any update, listing the keys that will
exist: fit's own and those the callbacks declare in ``log_keys`` (Keras only warns, and the
callback then silently does nothing).
"""
import csv
import inspect
import io
import math
import numbers
import os
import string
import sys
import time
import warnings

import numpy as np

from fastprop import _validation as V

__all__ = [
    "Callback",
    "CallbackList",
    "History",
    "ProgressBar",
    "EarlyStopping",
    "ModelCheckpoint",
    "LearningRateScheduler",
    "ReduceLROnPlateau",
    "TerminateOnNaN",
    "CSVLogger",
]

_now = time.perf_counter   # module-level so tests can substitute a fake clock


# -- argument checks ----------------------------------------------------------------------------
def _check_real(value, name, minimum=None, strict=False, maximum=None, strict_max=False):
    """Return ``value`` as a finite Python float within the given bounds, or raise."""
    return V.check_real(value, name, low=minimum, low_open=strict, high=maximum,
                        high_open=strict_max)


_check_bool = V.check_bool


def _check_monitor(monitor):
    if not isinstance(monitor, str):
        raise TypeError(f"monitor must be the name of a logged quantity (str), got "
                        f"{type(monitor).__name__} {monitor!r}")
    if not monitor:
        raise ValueError("monitor must be the name of a logged quantity, got ''")
    return monitor


def _check_mode(mode, monitor):
    """Resolve ``mode`` to "min" or "max" (auto: "max" when ``monitor`` names an accuracy)."""
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        return "max" if "acc" in monitor else "min"
    return mode


def _check_verbose(verbose):
    if isinstance(verbose, (bool, np.bool_)):
        return int(verbose)
    if verbose == "auto":
        return 1
    try:
        v = V.check_size(verbose, "verbose", minimum=0)
    except TypeError:
        raise TypeError(f"verbose must be 0, 1, 2 or 'auto', got {verbose!r}") from None
    if v > 2:
        raise ValueError(f"verbose must be 0, 1, 2 or 'auto', got {v}")
    return v


def _check_path(path, name):
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    if isinstance(path, bytes):
        raise TypeError(f"{name} must be a text path, got bytes")
    if not path:
        raise ValueError(f"{name} must not be empty")
    return path


#: the keys fit itself puts in the epoch logs (each when it applies)
FIT_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "lr")


def _check_fit_key(name, keys, who, what):
    """ValueError unless ``name`` is one of ``keys``: the keys this fit's epoch logs will hold
    (fit's own, of :data:`FIT_KEYS` and the compiled metrics, and those the callbacks declare
    in :attr:`Callback.log_keys`)."""
    if name not in keys:
        hint = (" (val_* quantities exist only when fit gets validation_data or "
                "validation_split)" if name.startswith("val_") else "")
        raise ValueError(f"{who}: {what} {name!r} will not be in the epoch logs of this fit"
                         f"{hint}; they will hold {', '.join(map(repr, keys))} (a callback "
                         f"that adds a key to the logs declares it in its log_keys)")


def _check_writable(path, who, what):
    """ValueError unless ``path`` can be created or replaced as a file: its nearest existing
    ancestor is a writable directory, and the path itself is not a directory."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{who}: {what} {path!r} is a directory")
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        up = os.path.dirname(parent)
        if up == parent:
            break
        parent = up
    if not os.path.isdir(parent):
        raise ValueError(f"{who}: cannot write {what} {path!r}: {parent!r} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{who}: cannot write {what} {path!r}: the directory {parent!r} is "
                         f"not writable")


def _monitor_value(logs, monitor, who):
    """The monitored value in ``logs`` as a float; ValueError listing the keys if it is absent."""
    logs = logs or {}
    if monitor not in logs:
        keys = ", ".join(repr(k) for k in logs) or "none"
        hint = ""
        if monitor.startswith("val_"):
            hint = (" (val_* quantities exist only when fit gets validation_data or "
                    "validation_split)")
        raise ValueError(f"{who}: monitor={monitor!r} is not in the epoch logs{hint}; "
                         f"available keys: {keys}")
    value = logs[monitor]
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{who}: logs[{monitor!r}] must be a number, got "
                        f"{type(value).__name__} {value!r}") from None


def _is_better(current, reference, mode, min_delta=0.0):
    """True if ``current`` beats ``reference`` by more than ``min_delta`` (None: always)."""
    if reference is None:
        return True
    if mode == "min":
        return current + min_delta < reference
    return current - min_delta > reference


def _message(text):
    """Print a callback's message on its own line, breaking a live progress line first."""
    bar = ProgressBar._open_line
    if bar is not None:
        bar._break_line()
    print(text, file=sys.stdout, flush=True)


# -- format helpers -----------------------------------------------------------------------------
def _fmt_value(value, key=None):
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if key == "lr":
        return f"{v:.3g}"
    if v != 0 and math.isfinite(v) and (abs(v) < 1e-3 or abs(v) >= 1e5):
        return f"{v:.4e}"
    return f"{v:.4f}"


def _fmt_time(seconds):
    if seconds < 60:
        return f"{seconds:.1f}s"
    seconds = int(round(seconds))
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _overrides(cb, name, base_alias=None):
    """True if ``cb`` overrides hook ``name`` (or the Keras-1 alias ``base_alias``)."""
    cls = type(cb)
    if getattr(cls, name) is not getattr(Callback, name):
        return True
    return base_alias is not None and getattr(cls, base_alias) is not getattr(Callback, base_alias)


# -- the protocol -------------------------------------------------------------------------------
class Callback:
    """Base class: every hook is a no-op; override the ones you need.

    Attributes
    ----------
    model : Sequential or None
        The model being trained (set by :meth:`set_model` before ``on_train_begin``).
    params : dict
        ``verbose``, ``epochs``, ``steps`` (batches per epoch) and ``n_samples`` of this fit.

    Notes
    -----
    Hooks get the epoch / batch index (0-based) and a ``logs`` dict. Batch logs hold ``loss``
    (the batch's mean loss) and ``size`` (samples in the batch); epoch logs hold ``loss`` and,
    when present, ``val_loss``, ``accuracy``, ``val_accuracy`` and ``lr``. ``on_batch_begin`` /
    ``on_batch_end`` are accepted as aliases of the train-batch hooks, as in Keras.
    """

    model = None
    params = {}
    #: Names of the keys this callback adds to the epoch logs (in ``on_epoch_end``), so that
    #: another callback may monitor them: ``fit`` refuses, before any update, a ``monitor`` or
    #: a ``ModelCheckpoint`` filepath field that neither fit nor a callback puts in the logs.
    log_keys = ()

    def set_model(self, model):
        """Attach the model being trained."""
        self.model = model

    def set_params(self, params):
        """Attach this fit's parameters (``verbose``, ``epochs``, ``steps``, ``n_samples``)."""
        self.params = dict(params)

    def _check_fit(self, keys):
        """Called by ``fit`` before the first update with the keys every epoch's logs will
        hold (fit's own and every callback's :attr:`log_keys`): raise ``ValueError`` for an argument that cannot work in
        this fit, so that it fails with the model unchanged."""

    def _close(self):
        """Release what the callback holds open; called when ``fit`` fails or is
        interrupted (``on_train_end`` is not called then)."""

    def on_train_begin(self, logs=None):
        """Called once before the first epoch."""

    def on_train_end(self, logs=None):
        """Called once after the last epoch (also after an early stop)."""

    def on_epoch_begin(self, epoch, logs=None):
        """Called at the start of epoch ``epoch`` (0-based)."""

    def on_epoch_end(self, epoch, logs=None):
        """Called at the end of epoch ``epoch`` with the epoch's logs."""

    def on_train_batch_begin(self, batch, logs=None):
        """Called before training batch ``batch`` (0-based within the epoch)."""
        self.on_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        """Called after training batch ``batch`` with ``{"loss": float, "size": int}``."""
        self.on_batch_end(batch, logs)

    def on_batch_begin(self, batch, logs=None):
        """Alias of :meth:`on_train_batch_begin` (Keras 1 name)."""

    def on_batch_end(self, batch, logs=None):
        """Alias of :meth:`on_train_batch_end` (Keras 1 name)."""

    def __repr__(self):
        return f"{type(self).__name__}()"


class CallbackList:
    """The callbacks of one ``fit`` call, run in order, plus History and a progress bar.

    Parameters
    ----------
    callbacks : Callback, list of Callback, or None
        The user's callbacks. A :class:`History` or :class:`ProgressBar` among them is used in
        place of the default one (and keeps its position in the list).
    model : Sequential
        The model being trained; given to every callback with ``set_model``.
    verbose : {0, 1, 2, "auto"}, default 1
        0: silent. 1 ("auto"): a :class:`ProgressBar` (a live bar on a terminal, one line per
        epoch otherwise). 2: one line per epoch.
    epochs, steps, n_samples : int, optional
        Number of epochs, batches per epoch and training samples; passed to every callback as
        ``callback.params``.

    Attributes
    ----------
    callbacks : list of Callback
        In calling order: the progress bar first (so that a message printed by a callback at
        the end of an epoch follows the finished epoch line), then the user's callbacks, then
        the History (so that it records any keys the user's callbacks add to the logs).
    history : History
    """

    def __init__(self, callbacks=None, model=None, verbose=1, epochs=None, steps=None,
                 n_samples=None):
        if callbacks is None:
            callbacks = []
        elif isinstance(callbacks, Callback):
            callbacks = [callbacks]
        elif isinstance(callbacks, (str, bytes, dict)) or not hasattr(callbacks, "__iter__"):
            raise TypeError(f"callbacks must be a list of Callback instances, got "
                            f"{type(callbacks).__name__}")
        callbacks = list(callbacks)
        for i, cb in enumerate(callbacks):
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks[{i}] must be a fastprop.callbacks.Callback, got "
                                f"{type(cb).__name__} {cb!r}")
        if len({id(cb) for cb in callbacks}) != len(callbacks):
            raise ValueError("callbacks lists the same Callback instance twice")
        verbose = _check_verbose(verbose)
        params = {"verbose": verbose}
        for name, value in (("epochs", epochs), ("steps", steps), ("n_samples", n_samples)):
            params[name] = None if value is None else V.check_size(value, name, minimum=0)

        history = next((cb for cb in callbacks if isinstance(cb, History)), None)
        bar = next((cb for cb in callbacks if isinstance(cb, ProgressBar)), None)
        if bar is None and verbose:
            callbacks.insert(0, ProgressBar(live=None if verbose == 1 else False))
        if history is None:
            history = History()
            callbacks.append(history)
        self.callbacks = callbacks
        self.history = history
        self.model = model
        self.params = params
        for cb in callbacks:
            cb.set_model(model)
            cb.set_params(params)
        # batch hooks run once per step: call only the callbacks that define them
        self._batch_begin = [cb.on_train_batch_begin for cb in callbacks
                             if _overrides(cb, "on_train_batch_begin", "on_batch_begin")]
        self._batch_end = [cb.on_train_batch_end for cb in callbacks
                           if _overrides(cb, "on_train_batch_end", "on_batch_end")]

    def __iter__(self):
        return iter(self.callbacks)

    def __len__(self):
        return len(self.callbacks)

    def __repr__(self):
        return f"CallbackList({self.callbacks!r})"

    def check_fit(self, keys):
        """Let every callback check its arguments against this fit (before any update).

        ``keys``: the keys fit puts in every epoch's logs; the callbacks' declared
        :attr:`Callback.log_keys` are added to them."""
        keys = list(keys)
        for i, cb in enumerate(self.callbacks):
            added = cb.log_keys
            if isinstance(added, str) or not all(isinstance(k, str) for k in added):
                raise TypeError(f"callbacks[{i}].log_keys must be a tuple of str, got "
                                f"{added!r}")
            keys += [k for k in added if k not in keys]
        for cb in self.callbacks:
            cb._check_fit(list(keys))

    def close(self):
        """Close what the callbacks hold open (a failed or interrupted fit); never raises,
        so that the original error propagates."""
        for cb in self.callbacks:
            try:
                cb._close()
            except Exception:      # pragma: no cover - a close failing on a failing fit
                pass

    def on_train_begin(self, logs=None):
        """Reset ``model.stop_training`` to False, then call every ``on_train_begin``."""
        if self.model is not None:
            self.model.stop_training = False
        ProgressBar._open_line = None      # left over if an earlier fit raised mid-epoch
        for cb in self.callbacks:
            cb.on_train_begin(logs)

    def on_train_end(self, logs=None):
        for cb in self.callbacks:
            cb.on_train_end(logs)

    def on_epoch_begin(self, epoch, logs=None):
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        """Call every ``on_epoch_end`` with one copy of ``logs`` (callbacks may add keys)."""
        logs = dict(logs) if logs else {}
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs)

    def on_train_batch_begin(self, batch, logs=None):
        for hook in self._batch_begin:
            hook(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        for hook in self._batch_end:
            hook(batch, logs)


class History(Callback):
    """Records the epoch logs; ``fit`` returns it and also stores it as ``model.history``.

    Attributes
    ----------
    history : dict of str to list of float
        One list per logged key (``loss``, and when present ``val_loss``, ``accuracy``,
        ``val_accuracy``, ``lr``), one entry per epoch run.
    epoch : list of int
        The (0-based) indices of the epochs run.
    """

    def __init__(self):
        self.history = {}
        self.epoch = []

    def on_train_begin(self, logs=None):
        self.epoch = []
        if self.model is not None:
            self.model.history = self

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            if isinstance(value, (numbers.Real, np.generic)) and \
                    not isinstance(value, (bool, np.bool_)):
                value = float(value)
            self.history.setdefault(key, []).append(value)

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, keys={list(self.history)})"


class ProgressBar(Callback):
    """Training progress on ``file`` (``sys.stdout`` by default, looked up when writing).

    On a terminal, one line per epoch redrawn in place (at most every 0.1 s, and after the last
    batch)::

        Epoch 3/10 [=========>..........] 45/90 - loss 0.1234 - 12,345 samples/s - ETA 0.8s

    and finished with the epoch's logs and time::

        Epoch 3/10 [====================] 90/90 - loss 0.1201 - val_loss 0.1377 - lr 0.001
        - 1.6s - 56,250 samples/s                                          (on one line)

    Elsewhere (a file, a pipe, a notebook capture) exactly one line per epoch, written when the
    epoch ends.

    Parameters
    ----------
    file : file-like, optional
        Anything with ``write`` (and ideally ``flush`` and ``isatty``). Default: ``sys.stdout``
        at the time of writing.
    live : bool, optional
        Force the live bar (True) or one line per epoch (False). Default: live when
        ``file.isatty()``.
    """

    width = 20               # characters in the bar
    interval = 0.1           # seconds between redraws of the live line
    _open_line = None        # the ProgressBar whose live line awaits its newline, if any

    def __init__(self, file=None, live=None):
        if file is not None and not callable(getattr(file, "write", None)):
            raise TypeError(f"file must have a write() method, got {type(file).__name__}")
        if live is not None:
            live = _check_bool(live, "live")
        self.file = file
        self.live = live
        self._live = False
        self._line_len = 0

    def _out(self):
        return self.file if self.file is not None else sys.stdout

    def _write(self, text):
        out = self._out()
        out.write(text)
        flush = getattr(out, "flush", None)
        if flush is not None:
            flush()

    def on_train_begin(self, logs=None):
        if self.live is not None:
            self._live = self.live
        else:
            try:
                self._live = bool(self._out().isatty())
            except (AttributeError, ValueError, OSError):
                self._live = False

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._t0 = _now()
        self._t_last_batch = None
        self._last_draw = self._t0
        self._seen = 0
        self._batches = 0
        self._loss_sum = 0.0
        self._loss_weight = 0

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        size = logs.get("size", 1)
        loss = logs.get("loss")
        self._batches = batch + 1
        self._seen += size
        if loss is not None:
            self._loss_sum += float(loss) * size
            self._loss_weight += size
        now = self._t_last_batch = _now()
        if self._live and (now - self._last_draw >= self.interval
                           or self._batches == self.params.get("steps")):
            self._last_draw = now
            self._draw(self._progress_line(now))

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        now = _now()
        elapsed = now - getattr(self, "_t0", now)
        train_time = (self._t_last_batch - self._t0) if getattr(self, "_t_last_batch", None) \
            else elapsed
        seen = getattr(self, "_seen", 0) or self.params.get("n_samples") or 0
        if "loss" not in logs and getattr(self, "_loss_weight", 0):
            logs = {"loss": self._loss_sum / self._loss_weight, **logs}
        parts = [self._head(epoch)]
        if self._live:
            parts[0] += " " + self._bar(self._batches)
        parts += [f"{k} {_fmt_value(v, k)}" for k, v in logs.items()]
        parts.append(_fmt_time(elapsed))
        if train_time > 0 and seen:
            parts.append(f"{seen / train_time:,.0f} samples/s")
        line = " - ".join(parts)
        if self._live:
            self._draw(line, final=True)
        else:
            self._write(line + "\n")

    def on_train_end(self, logs=None):
        if ProgressBar._open_line is self:
            self._break_line()

    # -- drawing -----------------------------------------------------------------------------
    def _head(self, epoch):
        epochs = self.params.get("epochs")
        return f"Epoch {epoch + 1}/{epochs}" if epochs else f"Epoch {epoch + 1}"

    def _bar(self, done, width=None):
        steps = self.params.get("steps")
        if not steps:
            return f"{done}"
        width = self.width if width is None else width
        filled = min(width, width * done // steps)
        if filled < width:
            bar = "=" * filled + ">" + "." * (width - filled - 1)
        else:
            bar = "=" * width
        return f"[{bar}] {done}/{steps}"

    def _progress_line(self, now):
        """The live line; the bar narrows (to 5 characters) before the line is cut to fit."""
        parts = [""]
        if self._loss_weight:
            parts.append(f"loss {_fmt_value(self._loss_sum / self._loss_weight)}")
        elapsed = now - self._t0
        if elapsed > 0:
            parts.append(f"{self._seen / elapsed:,.0f} samples/s")
        steps = self.params.get("steps")
        if steps and self._batches:
            remaining = max(steps - self._batches, 0) * elapsed / self._batches
            parts.append(f"ETA {_fmt_time(remaining)}")
        head = self._head(self._epoch)
        parts[0] = f"{head} {self._bar(self._batches)}"
        line = " - ".join(parts)
        excess = len(line) - (self._columns() - 1)
        if excess > 0 and self.params.get("steps"):
            parts[0] = f"{head} {self._bar(self._batches, max(self.width - excess, 5))}"
            line = " - ".join(parts)
        return line

    def _columns(self):
        try:
            columns = os.get_terminal_size(self._out().fileno()).columns
        except (AttributeError, ValueError, OSError, TypeError, io.UnsupportedOperation):
            columns = 0
        return columns if columns > 0 else 80     # a pty with no size reports 0

    def _draw(self, line, final=False):
        """Redraw the live line (final: the epoch's last redraw, ended by a newline)."""
        if not final:
            line = line[:max(self._columns() - 1, 20)]
        pad = " " * max(self._line_len - len(line), 0)
        if final:
            self._write("\r" + line + pad + "\n")
            self._line_len = 0
            ProgressBar._open_line = None
        else:
            self._write("\r" + line + pad)
            self._line_len = len(line)
            ProgressBar._open_line = self

    def _break_line(self):
        """End the live line so a message can be printed below it."""
        self._write("\n")
        self._line_len = 0
        if ProgressBar._open_line is self:
            ProgressBar._open_line = None

    def __repr__(self):
        return f"ProgressBar(file={self.file!r}, live={self.live!r})"


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
        Keep a copy of ``model.params`` from the best epoch and put it back when training ends
        (stopped early or not). When False the model keeps the last epoch's weights.
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
            self.best_epoch = epoch
        self.wait += 1
        if _is_better(current, self.best, self.mode, self.min_delta):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights[...] = self.model.params
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

    def __repr__(self):
        return (f"EarlyStopping(monitor={self.monitor!r}, min_delta={self.min_delta}, "
                f"patience={self.patience}, mode={self.mode!r}, "
                f"restore_best_weights={self.restore_best_weights}, baseline={self.baseline}, "
                f"start_from_epoch={self.start_from_epoch})")


class ModelCheckpoint(Callback):
    """Save the model (``model.save(path)``) at the end of every epoch, or of the best ones.

    Parameters
    ----------
    filepath : str or os.PathLike
        Where to save; may hold ``str.format`` fields ``{epoch}`` (1-based, as in Keras) and any
        key of the epoch logs, e.g. ``"ckpt/{epoch:02d}-{val_loss:.3f}.fpz"``. Missing parent
        directories are created. Checked when ``fit`` starts, before the first update: a
        field of fit's logs that this fit will not produce (``{val_loss}`` without validation
        data), a format spec the values cannot take, or a path that cannot be written (a
        parent that is a file, an unwritable directory) raise ``ValueError``.
    monitor : str, default "val_loss"
        Quantity compared when ``save_best_only``.
    save_best_only : bool, default False
        Save only when ``monitor`` improves on the best value seen by this callback (kept
        across ``fit`` calls, as in Keras). With a constant ``filepath`` the file then always
        holds the best model.
    mode : {"auto", "min", "max"}, default "auto"
        auto: "max" if "acc" is in ``monitor``, else "min".
    verbose : int, default 0
        1 prints a message on each save.

    Attributes
    ----------
    best : float or None
        Best monitored value so far (``save_best_only``).
    saved : list of str
        The paths saved to, in order.
    """

    def __init__(self, filepath, monitor="val_loss", save_best_only=False, mode="auto",
                 verbose=0):
        self.filepath = _check_path(filepath, "filepath")
        try:
            self._fields = {f.split(".")[0].split("[")[0]
                            for _, f, _, _ in string.Formatter().parse(self.filepath)
                            if f is not None}
        except ValueError as exc:
            raise ValueError(f"filepath is not a valid format string ({exc}): "
                             f"{self.filepath!r}") from None
        if "" in self._fields or any(f.isdigit() for f in self._fields):
            raise ValueError(f"filepath may only hold named fields such as {{epoch}} or "
                             f"{{val_loss:.3f}}, got {self.filepath!r}")
        self.monitor = _check_monitor(monitor)
        self.save_best_only = _check_bool(save_best_only, "save_best_only")
        self.mode = _check_mode(mode, self.monitor)
        self.verbose = _check_verbose(verbose)
        self.best = None
        self.saved = []

    def _path(self, epoch, logs):
        values = {**logs, "epoch": epoch + 1}
        missing = self._fields - values.keys()
        if missing:
            keys = ", ".join(repr(k) for k in values)
            raise ValueError(f"ModelCheckpoint: filepath {self.filepath!r} refers to "
                             f"{', '.join(sorted(missing))}, not in the epoch logs; available "
                             f"fields: {keys}")
        try:
            return self.filepath.format(**values)
        except (ValueError, TypeError, IndexError, AttributeError) as exc:
            raise ValueError(f"ModelCheckpoint: cannot format filepath {self.filepath!r} "
                             f"with {values!r}: {exc}") from None

    def _check_fit(self, keys):
        for field in sorted(self._fields - {"epoch"}):
            _check_fit_key(field, keys, "ModelCheckpoint", "filepath field")
        if self.save_best_only:
            _check_fit_key(self.monitor, keys, "ModelCheckpoint", "monitor")
        # a trial format (1 for epoch, 0.0 for fit's float logs) catches bad format specs
        trial = {**{k: 0.0 for k in keys}, "epoch": 1}
        try:
            path = self.filepath.format(**trial)
        except (ValueError, TypeError, IndexError, AttributeError, KeyError) as exc:
            raise ValueError(f"ModelCheckpoint: cannot format filepath {self.filepath!r} "
                             f"with the epoch logs ({exc})") from None
        _check_writable(path, "ModelCheckpoint", "filepath")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            current = _monitor_value(logs, self.monitor, "ModelCheckpoint")
            if not _is_better(current, self.best, self.mode) or math.isnan(current):
                return
            previous, self.best = self.best, current
        path = self._path(epoch, logs)
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        if self.verbose:
            what = (f"{self.monitor} improved from {previous} to {current}, "
                    if self.save_best_only else "")
            _message(f"Epoch {epoch + 1}: {what}saving model to {path}")
        self.model.save(path)
        self.saved.append(path)

    def __repr__(self):
        return (f"ModelCheckpoint({self.filepath!r}, monitor={self.monitor!r}, "
                f"save_best_only={self.save_best_only}, mode={self.mode!r})")


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


class TerminateOnNaN(Callback):
    """Stop training as soon as a batch loss (or the epoch loss) is NaN or infinite.

    Sets ``model.stop_training`` after the offending batch; ``fit`` ends the epoch there.

    Attributes
    ----------
    terminated_at : tuple (epoch, batch) or None
        Where the bad loss was seen (batch None if it was the epoch loss).
    """

    def __init__(self):
        self.terminated_at = None
        self._epoch = 0

    def on_train_begin(self, logs=None):
        self.terminated_at = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def _check(self, logs, batch):
        loss = (logs or {}).get("loss")
        if loss is None or self.terminated_at is not None:
            return
        if not math.isfinite(float(loss)):
            self.terminated_at = (self._epoch, batch)
            self.model.stop_training = True
            where = f"Batch {batch}" if batch is not None else f"Epoch {self._epoch + 1}"
            _message(f"{where}: invalid loss {float(loss)}, terminating training")

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs, batch)

    def on_epoch_end(self, epoch, logs=None):
        self._epoch = epoch
        self._check(logs, None)


class CSVLogger(Callback):
    """Write each epoch's logs as a row of a CSV file.

    Parameters
    ----------
    filename : str or os.PathLike
    separator : str, default ","
        One character.
    append : bool, default False
        Append to an existing file (its header, if any, is kept and its columns are used)
        instead of overwriting it.

    Notes
    -----
    The first column is ``epoch`` (0-based, as in Keras and :attr:`History.epoch`); the others
    are the first epoch's log keys in their order (``loss, val_loss, accuracy, ...``). A key
    missing from a later epoch is written as ``NA``. The file is opened at the start of
    training, flushed after each row and closed at the end, also when ``fit`` fails or is
    interrupted.
    """

    def __init__(self, filename, separator=",", append=False):
        self.filename = _check_path(filename, "filename")
        if not isinstance(separator, str):
            raise TypeError(f"separator must be a one-character str, got "
                            f"{type(separator).__name__}")
        if len(separator) != 1 or separator in '"\r\n':
            raise ValueError(f"separator must be one character other than a quote or newline, "
                             f"got {separator!r}")
        self.separator = separator
        self.append = _check_bool(append, "append")
        self._file = None
        self._writer = None
        self.keys = None

    def _check_fit(self, keys):
        _check_writable(self.filename, "CSVLogger", "filename")

    def _close(self):
        self.on_train_end()

    def on_train_begin(self, logs=None):
        self.keys = None
        self._writer = None
        header = None
        if self.append and os.path.exists(self.filename):
            with open(self.filename, newline="") as f:
                header = next(csv.reader(f, delimiter=self.separator), None)
        self._header = header
        self._file = open(self.filename, "a" if self.append else "w", newline="")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self._file is None:
            self.on_train_begin()
        if self._writer is None:
            if self._header:
                fields = self._header
                dropped = [k for k in logs if k not in fields]
                if dropped:
                    warnings.warn(f"CSVLogger: {self.filename} has no column for "
                                  f"{', '.join(dropped)}; these are not written",
                                  stacklevel=2)
            else:
                fields = ["epoch"] + [k for k in logs if k != "epoch"]
            self.keys = [k for k in fields if k != "epoch"]
            self._writer = csv.DictWriter(self._file, fieldnames=fields,
                                          delimiter=self.separator, extrasaction="ignore",
                                          lineterminator="\n")
            if not self._header:
                self._writer.writeheader()
        row = {"epoch": epoch}
        for key in self.keys:
            value = logs.get(key, "NA")
            if isinstance(value, (numbers.Real, np.generic)) and \
                    not isinstance(value, (bool, np.bool_)):
                value = float(value)
            row[key] = value
        self._writer.writerow(row)
        self._file.flush()

    def on_train_end(self, logs=None):
        if self._file is not None:
            self._file.close()
        self._file = None
        self._writer = None

    def __repr__(self):
        return (f"CSVLogger({self.filename!r}, separator={self.separator!r}, "
                f"append={self.append})")
