"""Stop on a non-finite loss: :class:`TerminateOnNaN`."""
import math

from fastprop.callbacks._base import Callback
from fastprop.callbacks.progress import _message


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
