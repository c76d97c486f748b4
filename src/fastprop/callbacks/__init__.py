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
from fastprop.callbacks._base import FIT_KEYS, Callback, History
from fastprop.callbacks._list import CallbackList
from fastprop.callbacks.checkpoint import ModelCheckpoint
from fastprop.callbacks.csv_logger import CSVLogger
from fastprop.callbacks.early_stopping import EarlyStopping
from fastprop.callbacks.lr import LearningRateScheduler, ReduceLROnPlateau
from fastprop.callbacks.progress import ProgressBar
from fastprop.callbacks.terminate import TerminateOnNaN

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
    "FIT_KEYS",
]

# Pickles and reprs name the public classes by their public path (fastprop.callbacks.X), not by
# the module that defines them, so that moving a class between modules breaks no pickle.
for _cls in (Callback, CallbackList, History, ProgressBar, EarlyStopping, ModelCheckpoint,
             LearningRateScheduler, ReduceLROnPlateau, TerminateOnNaN, CSVLogger):
    _cls.__module__ = __name__
del _cls
