"""Save the model during training: :class:`ModelCheckpoint`."""
import math
import os
import string

from fastprop.callbacks._base import (Callback, _check_bool, _check_fit_key, _check_mode,
                                      _check_monitor, _check_path, _check_verbose, _check_writable,
                                      _is_better, _monitor_value)
from fastprop.callbacks.progress import _message


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
