"""The callback protocol (:class:`Callback`), :class:`History` and the helpers the callbacks
share (argument checks, the keys of fit's epoch logs, number formats)."""
import math
import numbers
import os

import numpy as np

from fastprop import _validation as V


__all__ = ["Callback", "History"]


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
    log_keys : tuple of str
        The keys this callback adds to the epoch logs (class attribute, default none): other
        callbacks may monitor them. ``fit`` refuses before any update a monitor (or a
        ``ModelCheckpoint`` filepath field) that neither fit nor any callback's ``log_keys``
        provides.

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
