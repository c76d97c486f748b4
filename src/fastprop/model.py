"""Sequential: a chain of textbook blocks trained as one compiled program.

All parameters live in one flat buffer (``model.params``) and all gradients in another of the
same layout (``model.grads``); every Dense layer's ``W``, ``b``, ``dW``, ``db`` are views into
them. The layer list is compiled into a plan that the engine (``fastprop._core._engine``) runs
without the GIL: ``train_step`` is forward, loss, backward and the optimizer update in one call.
The same steps are public one by one: ``forward`` keeps the caches, ``backward`` fills the
gradients, ``apply_gradients`` (or ``optimizer.step(params, grads)``) updates.

Threads: ``predict`` and ``evaluate`` use per-call scratch and may run from several threads on
one model at once. Training calls (``fit``, ``train_step``, ``forward``, ``backward``,
``apply_gradients``) share the workspace and are serialized by a per-model lock; a predict
running while another thread trains sees the weights of some step.
"""
import operator
import sys
import threading
import warnings

import numpy as np

from fastprop import _threads, _validation as V
from fastprop._core import _engine, _loss as _closs
from fastprop.activations import ACTIVATIONS
from fastprop.callbacks import CallbackList, ProgressBar
from fastprop.initializers import canonical_init
from fastprop.layers import Dense, Dropout
from fastprop.losses import (canonical_loss, check_loss_activation, is_classification,
                             loss_code, prepare_sample_weight, prepare_targets)
from fastprop.optim import get_optimizer, optimizer_from_config

__all__ = ["Sequential", "gradcheck"]

def _raise_refused(loss):
    what = f"the loss of this batch is {loss}" if not np.isfinite(loss) else \
        f"the gradients of this batch (loss {loss:g}) are not finite or too large"
    raise ValueError(f"{what}: its inputs are too large for the model's dtype, or the weights "
                     f"have diverged (lower the learning rate, scale X); the model was not "
                     f"updated")


def _fixed(name, doc):
    """A read-only property over ``self._<name>``: these attributes define the compiled plan."""
    def refuse(self, value):
        raise AttributeError(f"Sequential.{name} is fixed when the model is made (the compiled "
                             f"plan is built from it); build a new model, e.g. from "
                             f"model.get_config()")
    return property(operator.attrgetter("_" + name), refuse, doc=doc)


def _own(*arrays):
    """Copies of the arrays (None stays None)."""
    return tuple(None if a is None else a.copy() for a in arrays)


def _default_loss(activation):
    return {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy"}.get(activation, "mse")


class Sequential:
    """A feed-forward network of :class:`~fastprop.Dense` and :class:`~fastprop.Dropout`
    layers.

    Parameters
    ----------
    layers : list of Dense / Dropout
        In order; each Dense's ``n_in`` must equal the previous Dense's ``n_out``. Their current
        weights are copied into the model (cast to ``dtype``) and the layers' ``W``, ``b``,
        ``dW``, ``db`` become views into the model's flat buffers. ``model.layers`` is a tuple
        of them (read-only, like ``loss``, ``dtype``, ``params`` and ``grads``: the compiled
        plan is built from them).
    loss : str, optional
        ``mse``, ``mae``, ``huber``, ``cross_entropy`` (softmax output) or
        ``binary_cross_entropy`` (sigmoid output). Default: ``cross_entropy`` for a softmax
        output, ``binary_cross_entropy`` for a sigmoid output, ``mse`` otherwise.
    optimizer : Optimizer or str, default ``fastprop.optim.Adam()``
    dtype : {"float32", "float64"}, default "float32"
    seed : int, optional
        Seeds dropout masks and the shuffling of ``fit``; the same seed (and the same layer
        weights) give the same training run.
    n_threads : int, optional
        BLAS threads for this model's large layers (see :attr:`n_threads`).

    Examples
    --------
    >>> import numpy as np, fastprop as fp
    >>> model = fp.Sequential([fp.Dense(4, 8, activation="relu", seed=0),
    ...                        fp.Dense(8, 3, activation="softmax", seed=1)],
    ...                       optimizer=fp.optim.SGD(lr=0.1), seed=0)
    >>> X = np.random.default_rng(0).standard_normal((32, 4))
    >>> y = (X[:, 0] > 0).astype(int)
    >>> loss = model.train_step(X, y)
    >>> model.predict(X).shape
    (32, 3)
    """

    def __init__(self, layers, loss=None, optimizer=None, dtype="float32", seed=None,
                 n_threads=None):
        if isinstance(layers, (Dense, Dropout)):
            layers = [layers]
        if not isinstance(layers, (list, tuple)):
            raise TypeError(f"layers must be a list of Dense / Dropout layers, got "
                            f"{type(layers).__name__}")
        for i, layer in enumerate(layers):
            if not isinstance(layer, (Dense, Dropout)):
                raise TypeError(f"layers[{i}] must be a Dense or Dropout layer, got "
                                f"{type(layer).__name__}")
        dense = [layer for layer in layers if isinstance(layer, Dense)]
        if not dense:
            raise ValueError("layers must contain at least one Dense layer")
        if isinstance(layers[-1], Dropout):
            raise ValueError("the last layer must be Dense (a Dropout after the output layer "
                             "would drop predictions)")
        for prev, nxt in zip(dense, dense[1:]):
            if nxt.n_in != prev.n_out:
                raise ValueError(f"layer chain is broken: {prev!r} gives {prev.n_out} outputs "
                                 f"but the next {nxt!r} takes n_in={nxt.n_in}")
        if len(set(map(id, dense))) != len(dense):
            raise ValueError("layers holds the same Dense layer twice; use separate layers")
        self._dtype = V.as_dtype(dtype)
        out_act = dense[-1].activation
        self._loss = canonical_loss(loss if loss is not None else _default_loss(out_act))
        check_loss_activation(self.loss, out_act)
        opt = get_optimizer(optimizer if optimizer is not None else "adam")
        opt._attach(self)     # before anything else: an optimizer of another model is refused
        try:
            self._build(layers, dense, opt, seed, n_threads)
        except BaseException:
            opt._detach(self)
            raise

    def _build(self, layers, dense, opt, seed, n_threads):
        self._optimizer = opt
        seed = V.check_seed(seed)
        if n_threads is not None:   # checked before the layers are bound to this model
            n_threads = V.check_size(n_threads, "n_threads")
        self.seed = seed
        self._layers = tuple(layers)
        self._dense = dense

        # input dropout of each dense layer: consecutive Dropouts combine (keep rates multiply)
        drops, keep = [], 1.0
        for layer in layers:
            if isinstance(layer, Dropout):
                keep *= 1.0 - layer.rate
            else:
                drops.append(1.0 - keep)
                keep = 1.0

        # flat buffers: W[0], b[0], W[1], b[1], ...
        offsets, off = [], 0
        for layer in dense:
            offsets.append((off, off + layer.n_in * layer.n_out))
            off += layer.n_params
        self._n_params = off
        # parameters, gradients and the optimizer's state, all touched by the first step
        V.check_alloc((2 + len(self.optimizer._state_names())) * off, self.dtype.itemsize,
                      "the model's parameters, gradients and optimizer state")
        self._params = np.empty(off, dtype=self.dtype)
        self._grads = np.zeros(off, dtype=self.dtype)
        for layer, (wo, bo) in zip(dense, offsets):
            n_in, n_out = layer.n_in, layer.n_out
            W = self.params[wo:bo].reshape(n_in, n_out)
            b = self.params[bo:bo + n_out]
            W[...] = layer.W
            b[...] = layer.b
            layer._bind(W, b, self.grads[wo:bo].reshape(n_in, n_out), self.grads[bo:bo + n_out])
        self._offsets = offsets
        self._drops = drops
        rng = int(np.random.SeedSequence(seed).generate_state(1, np.uint64)[0])
        self._engine = _engine.Engine(
            [d.n_in for d in dense], [d.n_out for d in dense],
            [ACTIVATIONS[d.activation] for d in dense], drops,
            [o[0] for o in offsets], [o[1] for o in offsets], loss_code(self.loss),
            self.params, self.grads, rng)
        self.optimizer._setup(self.n_params, self.dtype)
        self.n_threads = n_threads
        self._lock = threading.RLock()
        self._fwd = None          # (X, n, training) of the last textbook forward
        self.stop_training = False
        self.history = None

    # -- basic facts ---------------------------------------------------------------------------
    dtype = _fixed("dtype", "The working dtype, float32 or float64 (read-only).")
    loss = _fixed("loss", "The loss name (read-only).")
    n_params = _fixed("n_params", "Number of parameters (read-only).")
    params = _fixed("params", "The flat parameter buffer (n_params,) (read-only attribute; "
                              "its values may be written in place).")
    grads = _fixed("grads", "The flat gradient buffer (n_params,) (read-only attribute).")
    layers = _fixed("layers", "The layers, a tuple (read-only: the plan is built from them).")

    @property
    def optimizer(self):
        """The model's optimizer. Assigning another one (an Optimizer or a name) sets it up for
        this model's parameters (fresh state unless it was set up for this model already);
        an optimizer that belongs to another live model is refused with ``ValueError``."""
        return self._optimizer

    @optimizer.setter
    def optimizer(self, value):
        opt = get_optimizer(value)
        if opt is self._optimizer:
            return
        with self._lock:
            opt._attach(self)
            try:
                opt._setup(self.n_params, self.dtype)
            except BaseException:
                opt._detach(self)
                raise
            self._optimizer._detach(self)
            self._optimizer = opt

    @property
    def n_in(self):
        return self._dense[0].n_in

    @property
    def n_out(self):
        return self._dense[-1].n_out

    @property
    def n_threads(self):
        """BLAS threads for this model's large layers; None: what the BLAS is set to
        (``fastprop.set_num_threads``, ``threadpoolctl``, ``OPENBLAS_NUM_THREADS``, or the
        number of cores). Calls whose layers are all under ``fastprop._threads.WORK_MIN``
        multiply-adds always run on one thread. Set it to 1 inside worker pools to avoid
        oversubscription. The count is kept as given, but the engine uses at most the CPUs
        this process may use (``RuntimeWarning`` the first time a count is capped)."""
        return self._n_threads

    @n_threads.setter
    def n_threads(self, value):
        n = None if value is None else V.check_size(value, "n_threads")
        self._engine.n_threads = 0 if n is None else _threads.capped(n, "n_threads")
        self._n_threads = n

    @property
    def is_classifier(self):
        return is_classification(self.loss)

    def __repr__(self):
        inner = ", ".join(repr(layer) for layer in self.layers)
        return (f"Sequential([{inner}], loss={self.loss!r}, optimizer={self.optimizer!r}, "
                f"dtype={self.dtype.name!r})")

    def summary(self, file=None):
        """Print the layers, their output shapes and parameter counts; return the text."""
        rows = [("#", "layer", "output shape", "activation", "params")]
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Dense):
                rows.append((str(i), "Dense", f"(None, {layer.n_out})", layer.activation,
                             f"{layer.n_params:,}"))
            else:
                rows.append((str(i), f"Dropout({layer.rate:g})", "same", "-", "0"))
        widths = [max(len(r[c]) for r in rows) for c in range(5)]
        line = "  ".join("-" * w for w in widths)
        fmt = lambda r: "  ".join(v.ljust(w) if c < 4 else v.rjust(w)
                                  for c, (v, w) in enumerate(zip(r, widths)))
        text = "\n".join(
            [f"Sequential: input (None, {self.n_in}), {self.dtype.name}", fmt(rows[0]), line]
            + [fmt(r) for r in rows[1:]]
            + [line, f"parameters: {self.n_params:,} ({self.n_params * self.dtype.itemsize:,} "
                     f"bytes)  loss: {self.loss}  optimizer: {self.optimizer!r}"])
        print(text, file=file if file is not None else sys.stdout)
        return text

    # -- input checks ------------------------------------------------------------------------
    def _X(self, X, name="X"):
        return V.as_array(X, name, self.dtype, ndim=2, width=self.n_in,
                          width_name="the model's n_in")

    def _targets(self, y, n, sample_weight, name="y"):
        y_dense, labels = prepare_targets(self.loss, y, n, self.n_out, self.dtype, name=name)
        w = prepare_sample_weight(sample_weight, n, self.dtype)
        return y_dense, labels, w

    def _opt_args(self):
        """(kind, hyper, s1, s2, s3) for the compiled update (cached by the optimizer)."""
        return self._optimizer._engine_args(self._n_params, self._dtype)

    # -- training, one batch -----------------------------------------------------------------
    def train_step(self, X, y, sample_weight=None):
        """One compiled forward + loss + backward + optimizer update on a batch.

        Parameters
        ----------
        X : array_like (n_samples, n_in)
        y : array_like
            Targets (see :func:`fastprop.losses.prepare_targets`): integer labels or
            probability rows for ``cross_entropy``, (n, n_out) values otherwise.
        sample_weight : array_like (n_samples,), optional

        Returns
        -------
        float
            The batch loss of the forward pass (before the update).

        All arguments are checked before anything changes: a call that raises leaves
        parameters and optimizer state as they were. That includes a batch whose loss or
        gradients are not finite, or whose update could overflow (inputs too large for the
        dtype, diverged weights): ValueError, no update.
        """
        if sample_weight is None:
            # fast path: arrays already in the engine's layout are checked in C (finite,
            # labels in range) and the step runs; anything else returns None untouched
            opt = self._optimizer
            with self._lock:
                t = opt.t + 1
                loss = self._engine.train_step_checked(
                    X, y, *opt._engine_args(self._n_params, self._dtype), t)
                if loss is not None:
                    if self._fwd is not None:
                        self._fwd = None
                    if self._engine.last_refused:     # the engine changed nothing
                        _raise_refused(loss)
                    # straight into the instance dict: the step counter never invalidates the
                    # optimizer's cached engine arguments, and its __setattr__ hook costs a
                    # tenth of a tiny step
                    opt.__dict__["t"] = t
                    return loss
        X = self._X(X)
        y_dense, labels, w = self._targets(y, X.shape[0], sample_weight)
        with self._lock:
            kind, hyper, s1, s2, s3 = self._opt_args()
            t = self._optimizer.t + 1
            loss = self._engine.train_step(X, y_dense, labels, w, None, kind, hyper,
                                           s1, s2, s3, t)
            self._fwd = None
            if self._engine.last_refused:
                _raise_refused(loss)
            self._optimizer.__dict__["t"] = t
        return loss

    # -- the textbook path -------------------------------------------------------------------
    def forward(self, X, training=True):
        """Forward pass that keeps every layer's cache (for :meth:`backward`).

        With ``training=True`` dropout is active (drawing from the model's stream exactly as
        :meth:`train_step` does). Returns a copy of the network output (n, n_out).
        """
        X = V.as_array(X, "X", self.dtype, ndim=2, width=self.n_in,
                       width_name="the model's n_in", copy=True)   # the cache is ours
        with self._lock:
            self._engine.forward(X, bool(training))
            self._fwd = (X, X.shape[0], bool(training))
            return self._engine.layer_buffers(len(self._dense) - 1, X.shape[0])[1].copy()

    @property
    def caches(self):
        """Per Dense layer, read-only views ``(z, a)`` of the last :meth:`forward`."""
        if self._fwd is None:
            raise ValueError("no forward pass is cached: call model.forward(X) first")
        n = self._fwd[1]
        return [tuple(self._engine.layer_buffers(i, n)[:2]) for i in range(len(self._dense))]

    def backward(self, y, sample_weight=None):
        """Loss and gradients of the last :meth:`forward` batch.

        Fills ``model.grads`` (and so every Dense layer's ``dW``, ``db``) with the gradient of
        the loss, and returns ``model.grads`` (the model's buffer: the next backward or
        train_step overwrites it). The loss is kept as ``model.last_loss``.
        """
        if self._fwd is None:
            raise ValueError("backward needs a forward pass first: call model.forward(X)")
        X, n, training = self._fwd
        y_dense, labels, w = self._targets(y, n, sample_weight)
        with self._lock:
            if self._fwd is None or self._fwd[0] is not X:
                raise ValueError("the cached forward pass changed; call model.forward(X) again")
            self.last_loss = self._engine.backward(X, y_dense, labels, w, training)
        return self.grads

    def apply_gradients(self):
        """One optimizer update of ``model.params`` from ``model.grads``."""
        with self._lock:
            self.optimizer.step(self.params, self.grads)

    # -- inference ---------------------------------------------------------------------------
    def predict(self, X, batch_size=None):
        """Network output for X (n, n_out): probabilities for softmax / sigmoid outputs.

        Inference mode (no dropout). Thread-safe; ``batch_size`` only bounds the scratch
        memory (default 1,024 rows at a time: fewer, larger GEMMs)."""
        rows = 1024 if batch_size is None else V.check_size(batch_size, "batch_size")
        out = self._engine.predict_checked(X, rows)     # arrays already in the engine's layout
        if out is None:
            X = self._X(X)
            out = np.empty((X.shape[0], self.n_out), dtype=self.dtype)
            self._engine.predict(X, out, None, rows)
        return out

    def _outputs(self, X):
        a = np.empty((X.shape[0], self.n_out), dtype=self.dtype)
        z = np.empty_like(a)
        self._engine.predict(X, a, z)
        return z, a

    def _score(self, X, y_dense, labels, w):
        """(loss, accuracy or None) of validated arrays, in inference mode."""
        z, a = self._outputs(X)
        loss = _closs.loss_and_grad(loss_code(self.loss), ACTIVATIONS[self._dense[-1].activation],
                                    z, a, y_dense, labels, w)
        return loss, self._accuracy(a, y_dense, labels)

    def _accuracy(self, a, y_dense, labels):
        if self.loss == "cross_entropy":
            truth = labels if labels is not None else np.argmax(y_dense, axis=1)
            return float(np.mean(np.argmax(a, axis=1) == truth))
        if self.loss == "binary_cross_entropy":
            return float(np.mean((a > 0.5) == (y_dense > 0.5)))
        return None

    def evaluate(self, X, y, sample_weight=None):
        """Return ``{"loss": ...}`` plus ``"accuracy"`` for classification (inference mode).

        Accuracy is the fraction of samples whose arg-max output matches the label
        (cross-entropy) or of outputs on the right side of 0.5 (binary cross-entropy);
        sample weights apply to the loss only."""
        X = self._X(X)
        y_dense, labels, w = self._targets(y, X.shape[0], sample_weight)
        loss, acc = self._score(X, y_dense, labels, w)
        out = {"loss": float(loss)}
        if acc is not None:
            out["accuracy"] = acc
        return out

    # -- training loop -----------------------------------------------------------------------
    def fit(self, X, y, epochs=1, batch_size=32, shuffle=True, validation_split=0.0,
            validation_data=None, sample_weight=None, callbacks=None, verbose=1):
        """Train for ``epochs`` passes over (X, y) in minibatches.

        Parameters
        ----------
        X, y : array_like
            Inputs (n_samples, n_in) and targets (as for :meth:`train_step`).
        epochs : int >= 0
        batch_size : int >= 1
        shuffle : bool
            Reshuffle the samples every epoch (from the model's seeded stream).
        validation_split : float in [0, 1)
            Hold out this last fraction of the samples (taken before shuffling) for
            validation; 0 for none.
        validation_data : tuple (X_val, y_val) or (X_val, y_val, w_val), optional
            Overrides ``validation_split``.
        sample_weight : array_like (n_samples,), optional
            Non-negative; samples of weight 0 take no part in training (as if removed).
        callbacks : list of fastprop.callbacks.Callback, optional
        verbose : 0 or 1
            1 shows a progress bar (one line per epoch when output is not a terminal).

        Returns
        -------
        History
            ``history.history["loss"]`` etc.: per-epoch ``loss``, ``val_loss``, and
            ``accuracy`` / ``val_accuracy`` for classification, and ``lr``. ``loss`` and
            ``accuracy`` are running means over the epoch's batches (each batch measured in
            its forward pass, before its update, with dropout active), as in Keras;
            ``val_*`` are measured after the epoch in inference mode.

        Every argument is checked before the first update; the minibatches are gathered by
        the compiled engine from the whole arrays (no Python copies per batch). A batch whose
        step :meth:`train_step` would refuse (loss or gradients not finite, or an update that
        could overflow) is skipped, and the epoch ends with a ``RuntimeWarning`` giving the
        count.

        The callbacks check their arguments before the first update too (e.g. a
        ``ModelCheckpoint`` path that formats ``{val_loss}`` without validation data, or an
        unwritable directory, raise ``ValueError`` with the model unchanged). ``fit`` copies
        the targets and sample weights it reads during the epochs (``X`` is read in place;
        changing its values from a callback changes what later batches see).

        Interrupting (Ctrl-C, or any signal whose handler raises) stops training between two
        batches: ``KeyboardInterrupt`` propagates with ``optimizer.t`` counting exactly the
        steps applied, the learning rate of the interrupted epoch, ``model.history`` holding
        the completed epochs, and the files of the callbacks closed; saving right after gives
        a valid checkpoint of that state.
        """
        epochs = V.check_size(epochs, "epochs", minimum=0)
        batch_size = V.check_size(batch_size, "batch_size", minimum=1)
        if not isinstance(shuffle, (bool, np.bool_)):
            raise TypeError(f"shuffle must be True or False, got {shuffle!r}")
        if isinstance(validation_split, (bool, np.bool_)) or \
                not isinstance(validation_split, (int, float, np.number)):
            raise TypeError(f"validation_split must be a number in [0, 1), got "
                            f"{type(validation_split).__name__}")
        if validation_split != 0 and not 0.0 < float(validation_split) < 1.0:
            raise ValueError(f"validation_split must be in (0, 1) (or 0 for none), got "
                             f"{validation_split}")
        X = self._X(X)
        n = X.shape[0]
        # fit owns the targets and weights the compiled loop reads during the epochs: a
        # callback that rewrites the caller's arrays cannot make it read labels out of range
        y_dense, labels, w = _own(*self._targets(y, n, sample_weight))
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or \
                    len(validation_data) not in (2, 3):
                raise ValueError("validation_data must be a tuple (X_val, y_val) or "
                                 "(X_val, y_val, sample_weight_val)")
            Xv = self._X(validation_data[0], "validation_data[0]")
            wv = validation_data[2] if len(validation_data) == 3 else None
            val = (Xv,) + _own(*self._targets(validation_data[1], Xv.shape[0], wv,
                                              name="validation_data[1]"))
        elif validation_split:
            n_val = int(np.floor(n * float(validation_split)))
            if n_val < 1 or n_val >= n:
                raise ValueError(f"validation_split={validation_split} leaves {n_val} "
                                 f"validation and {n - n_val} training samples of {n}; "
                                 f"both need at least one")
            cut = n - n_val
            sl = lambda a, s: None if a is None else np.ascontiguousarray(a[s])
            val = (sl(X, slice(cut, None)), sl(y_dense, slice(cut, None)),
                   sl(labels, slice(cut, None)), sl(w, slice(cut, None)))
            X, y_dense, labels, w = (sl(X, slice(None, cut)), sl(y_dense, slice(None, cut)),
                                     sl(labels, slice(None, cut)), sl(w, slice(None, cut)))
            n = cut
        if w is not None and not w.sum() > 0:
            raise ValueError("sample_weight of the training samples sums to 0")
        if val is not None and val[3] is not None and not val[3].sum() > 0:
            warnings.warn("the sample weights of the validation samples sum to 0: val_loss "
                          "will be NaN (and val-based callbacks see NaN)", RuntimeWarning,
                          stacklevel=2)
        if w is not None and not np.all(w > 0):
            # a sample of weight 0 takes no part in training (scikit-learn's rule: as if it
            # were removed); left out here, so that no minibatch has weights summing to 0,
            # whose weighted mean loss would be 0 / 0
            keep = np.flatnonzero(w > 0)
            X, w = X[keep], w[keep]
            y_dense = None if y_dense is None else y_dense[keep]
            labels = None if labels is None else labels[keep]
            n = keep.size
        steps = -(-n // batch_size)
        per_sample = 1 if self.loss == "cross_entropy" else self.n_out
        cbs = CallbackList(callbacks, model=self, verbose=verbose, epochs=epochs,
                           steps=steps, n_samples=n)
        # the keys of every epoch's logs, for the callbacks' checks before the first update
        keys = ["loss"] + (["accuracy"] if self.is_classifier else [])
        if val is not None:
            keys += ["val_loss"] + (["val_accuracy"] if self.is_classifier else [])
        cbs.check_fit(keys + ["lr"])
        opt = self._optimizer
        with self._lock:
            self._fwd = None
            self.stop_training = False
            engine = self._engine
            engine.ensure_capacity(min(batch_size, n))
            # Batches run in chunks of one compiled call each, with no Python between them,
            # unless a callback must run between batches (any batch hook but the progress
            # bar's, which is fed the chunk's batches afterwards): then one batch per call.
            begin_hooks, end_hooks = cbs._batch_begin, cbs._batch_end
            if begin_hooks or any(not isinstance(getattr(h, "__self__", None), ProgressBar)
                                  for h in end_hooks):
                chunk = 1
            else:
                chunk = steps if not end_hooks else max(1, min(steps, 16))
            # every batch's loss and correct count of an epoch, summed once at its end (the
            # same sums whatever the chunk size)
            losses = np.empty(steps)
            corrects = np.empty(steps)
            refused = np.zeros(steps, dtype=np.uint8)
            engine.count_correct = self.is_classifier
            order = np.arange(n, dtype=np.int64)
            sizes = np.minimum(batch_size, n - np.arange(steps) * batch_size).astype(float)
            try:
                cbs.on_train_begin()
                for epoch in range(epochs):
                    opt.schedule_epoch(epoch)
                    cbs.on_epoch_begin(epoch)
                    if shuffle:
                        order = self._permutation(n)
                    done = 0
                    for b0 in range(0, steps, chunk):
                        k = min(chunk, steps - b0)
                        cbs.on_train_batch_begin(b0)   # chunk is 1 when a callback has it
                        kind, hyper, s1, s2, s3 = self._opt_args()
                        t = opt.t
                        try:
                            engine.train_batches(X, y_dense, labels, w, order, batch_size, b0,
                                                 k, kind, hyper, s1, s2, s3, t + 1,
                                                 losses[b0:], corrects[b0:], refused[b0:])
                        finally:
                            # a signal (Ctrl-C) stops the loop between two batches: the
                            # step count covers exactly the steps applied
                            opt.__dict__["t"] = t + engine.batches_done
                        done = b0 + k
                        for i in range(b0, done) if end_hooks else ():
                            cbs.on_train_batch_end(i, {"loss": float(losses[i]),
                                                       "size": int(sizes[i])})
                        if self.stop_training:
                            break
                    seen = float(sizes[:done].sum())
                    total = float(losses[:done] @ sizes[:done])
                    correct = float(corrects[:done].sum())
                    skipped = int(np.count_nonzero(refused[:done]))
                    if skipped:
                        warnings.warn(
                            f"epoch {epoch + 1}: {skipped} of {done} batches were skipped (no "
                            f"update): their loss or gradients were not finite or too large. "
                            f"The learning rate may be too high or the inputs too large.",
                            RuntimeWarning, stacklevel=2)
                    # running means over the epoch's batches, as Keras reports them (the
                    # accuracy of each batch is counted in the engine, before its update)
                    logs = {"loss": total / seen}
                    if self.is_classifier:
                        logs["accuracy"] = correct / (seen * per_sample)
                    if val is not None:
                        vloss, vacc = self._score(*val)
                        logs["val_loss"] = float(vloss)
                        if vacc is not None:
                            logs["val_accuracy"] = vacc
                    logs["lr"] = opt.lr
                    cbs.on_epoch_end(epoch, logs)
                    if self.stop_training:
                        break
                cbs.on_train_end()
            except BaseException:
                # interrupted or failed: the history of the epochs completed, files of the
                # callbacks closed; the model and optimizer hold the steps applied
                self.history = cbs.history
                cbs.close()
                raise
            finally:
                engine.count_correct = False
        self.history = cbs.history
        return self.history

    def _permutation(self, n):
        return self._engine.permutation(n)

    # -- state, save / load ------------------------------------------------------------------
    def get_config(self):
        """JSON-serialisable architecture, loss, dtype and optimizer configuration."""
        layers = []
        for layer in self.layers:
            if isinstance(layer, Dense):
                layers.append({"type": "Dense", "n_in": layer.n_in, "n_out": layer.n_out,
                               "activation": layer.activation, "init": layer.init})
            else:
                layers.append({"type": "Dropout", "rate": layer.rate})
        return {"layers": layers, "loss": self.loss, "dtype": self.dtype.name,
                "optimizer": self.optimizer.get_config()}

    @classmethod
    def from_config(cls, config):
        """A fresh model (zero weights) from :meth:`get_config` output; validates it."""
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        for key in ("layers", "loss", "dtype", "optimizer"):
            if key not in config:
                raise ValueError(f"config lacks the key {key!r}")
        if not isinstance(config["layers"], list) or not config["layers"]:
            raise ValueError("config['layers'] must be a non-empty list")
        dtype = V.as_dtype(config["dtype"], "config['dtype']")
        layers = []
        for i, spec in enumerate(config["layers"]):
            if not isinstance(spec, dict) or spec.get("type") not in ("Dense", "Dropout"):
                raise ValueError(f"config['layers'][{i}] must be a dict with type Dense or "
                                 f"Dropout")
            if spec["type"] == "Dense":
                if set(spec) != {"type", "n_in", "n_out", "activation", "init"}:
                    raise ValueError(f"config['layers'][{i}] has keys {sorted(spec)}")
                layers.append(Dense(spec["n_in"], spec["n_out"], activation=spec["activation"],
                                    init="zeros", dtype=dtype))
                layers[-1].init = canonical_init(spec["init"])   # recorded; weights are loaded
            else:
                if set(spec) != {"type", "rate"}:
                    raise ValueError(f"config['layers'][{i}] has keys {sorted(spec)}")
                layers.append(Dropout(spec["rate"]))
        opt = optimizer_from_config(config["optimizer"])
        return cls(layers, loss=config["loss"], optimizer=opt, dtype=dtype)

    def get_rng_state(self):
        return np.array([self._engine.rng_state], dtype=np.uint64)

    def set_rng_state(self, state):
        state = np.asarray(state)
        if state.shape != (1,) or state.dtype != np.uint64:
            raise ValueError(f"rng state must be a uint64 array of shape (1,), got "
                             f"{state.dtype} {state.shape}")
        self._engine.rng_state = int(state[0])

    def save(self, path):
        """Save architecture, parameters, optimizer state and RNG state to one file (no pickle;
        written atomically). Load it with :func:`fastprop.load`."""
        from fastprop import io
        with self._lock:
            io.save(self, path)

    # pickle and deepcopy go through the model file format (no pickled code or objects) and
    # carry the one runtime setting the file does not hold, n_threads
    def __getstate__(self):
        from fastprop import io
        with self._lock:
            return {"fastprop_model": io.to_bytes(self), "n_threads": self.n_threads}

    def __setstate__(self, state):
        from fastprop import io
        if not isinstance(state, dict) or "fastprop_model" not in state:
            raise ValueError("not a pickled fastprop model")
        other = io.from_bytes(state["fastprop_model"])
        other.n_threads = state.get("n_threads")
        self.__dict__.update(other.__dict__)
        self._optimizer._attach(self, force=True)     # other is discarded

    def __deepcopy__(self, memo):
        from fastprop import io
        with self._lock:
            other = io.from_bytes(io.to_bytes(self))
            other.n_threads = self.n_threads
            return other


def gradcheck(model, X, y, sample_weight=None, eps=1e-6, max_params=None, seed=0):
    """Central finite-difference check of every parameter gradient, in float64.

    Works on a float64 copy of ``model`` (the model itself is untouched), in inference mode
    (dropout off). For each parameter block (each layer's W and b) the relative error is
    ``||g - g_fd|| / max(||g|| + ||g_fd||, 1e-30)`` between the analytic gradient ``g`` and
    the central difference ``g_fd = (L(p + eps) - L(p - eps)) / (2 eps)``.

    Parameters
    ----------
    max_params : int, optional
        Check a random subset of at most this many parameters per block (all by default).

    Returns
    -------
    float
        The largest relative error over the blocks: ~1e-8 or less for a right gradient,
        order 1 for a wrong one. A ReLU kink within ``eps`` of a sample can raise it.
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a Sequential, got {type(model).__name__}")
    eps = V.check_real(eps, "eps", low=0.0, low_open=True)
    if max_params is not None:
        max_params = V.check_size(max_params, "max_params")
    config = model.get_config()
    config["dtype"] = "float64"
    m = Sequential.from_config(config)
    m.params[...] = model.params
    X = m._X(X)
    y_dense, labels, w = m._targets(y, X.shape[0], sample_weight)

    def loss_at():
        return float(m._score(X, y_dense, labels, w)[0])

    m._engine.forward(X, False)
    m._engine.backward(X, y_dense, labels, w, False)
    g = m.grads.copy()
    rng = np.random.default_rng(seed)
    worst = 0.0
    blocks = []
    for (wo, bo), d in zip(m._offsets, m._dense):
        blocks += [(wo, bo), (bo, bo + d.n_out)]
    for start, stop in blocks:
        idx = np.arange(start, stop)
        if max_params is not None and idx.size > max_params:
            idx = rng.choice(idx, size=max_params, replace=False)
        num = np.empty(idx.size)
        for j, i in enumerate(idx):
            old = m.params[i]
            m.params[i] = old + eps
            lp = loss_at()
            m.params[i] = old - eps
            lm = loss_at()
            m.params[i] = old
            num[j] = (lp - lm) / (2 * eps)
        ana = g[idx]
        err = np.linalg.norm(ana - num) / max(np.linalg.norm(ana) + np.linalg.norm(num), 1e-30)
        worst = max(worst, float(err))
    return worst
