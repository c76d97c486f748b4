"""Write the epoch logs to a CSV file: :class:`CSVLogger`."""
import csv
import numbers
import os
import warnings

import numpy as np

from fastprop.callbacks._base import Callback, _check_bool, _check_path, _check_writable


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
