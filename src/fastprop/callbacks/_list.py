"""The callbacks of one fit, called in order: :class:`CallbackList`."""
from fastprop import _validation as V
from fastprop.callbacks._base import Callback, History, _check_verbose, _overrides
from fastprop.callbacks.progress import ProgressBar


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
