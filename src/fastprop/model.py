"""Sequential: a chain of textbook blocks trained as one compiled program.

All parameters live in one flat buffer (``model.params``) and all gradients in another of the
same layout (``model.grads``); every Dense layer's ``W``, ``b``, ``dW``, ``db`` are views into
them. The layer list is compiled into a tape of nodes that the engine
(``fastprop._core._engine``) runs without the GIL: ``train_step`` is forward, loss, backward and
the optimizer update in one call.
The same steps are public one by one: ``forward`` keeps the caches, ``backward`` fills the
gradients, ``apply_gradients`` (or ``optimizer.step(params, grads)``) updates.

Threads: ``predict`` and ``evaluate`` use per-call scratch and may run from several threads on
one model at once. Training calls (``fit``, ``train_step``, ``forward``, ``backward``,
``apply_gradients``) share the workspace and are serialized by a per-model lock; a predict
running while another thread trains sees the weights of some step.
"""
import copy
import sys
import threading
import warnings
import weakref

import numpy as np

from fastprop import _threads, _validation as V, io
from fastprop._numdiff import block_error
from fastprop._validation import raise_refused as _raise_refused
from fastprop._core import _engine, _loss as _closs
from fastprop.activations import ACTIVATIONS
from fastprop.callbacks import CallbackList, ProgressBar
from fastprop.initializers import canonical_init
from fastprop.layers import (LAYERS, Activation, BatchNorm, Dense, Dropout, Layer, LayerNorm,
                             _base)
from fastprop.layers._python import (PythonNodes, build_python_layer, gradcheck_layer,
                                     is_python_layer, python_widths)
from fastprop.losses import (canonical_loss, check_loss_activation, class_weight_vector,
                             is_classification, loss_code, prepare_sample_weight,
                             prepare_targets)
from fastprop.losses import error_sums as _error_sums
from fastprop.optim import get_optimizer, optimizer_from_config

__all__ = ["Sequential", "gradcheck"]

def _fixed(name, doc):
    """A read-only property over ``self._<name>``: these attributes define the compiled tape."""
    def refuse(self, value):
        raise AttributeError(f"Sequential.{name} is fixed when the model is made (the compiled "
                             f"plan is built from it); build a new model, e.g. from "
                             f"model.get_config()")
    key = "_" + name

    def get(self):
        try:
            return self.__dict__[key]
        except KeyError:
            if self.__dict__.get("_pending") is not None:
                raise ValueError(self._unbuilt_message(name)) from None
            raise AttributeError(f"{type(self).__name__!r} object has no attribute "
                                 f"{name!r}") from None
    return property(get, refuse, doc=doc)


# the kinds the compiled tape runs; a registered subclass runs as its kind unless it overrides
# the block (the tape would bypass its forward / backward: refused). Any other Layer subclass
# that defines forward and backward runs as a Python node (layers/_python.py).
_COMPILED = (Dense, Dropout, Activation, BatchNorm, LayerNorm)
_NORMS = (BatchNorm, LayerNorm)


def _is_python(layer):
    """A layer of no compiled kind that runs as a Python node."""
    return not isinstance(layer, _COMPILED) and is_python_layer(layer)


def _check_layer_kinds(layers):
    """``layers`` (a layer or a list) as a list; TypeError names a layer the compiled tape
    cannot run. The chain is not checked (see _compile_layers)."""
    if isinstance(layers, Layer):
        layers = [layers]
    if not isinstance(layers, (list, tuple)):
        raise TypeError(f"layers must be a list of layers, got {type(layers).__name__}")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(f"layers[{i}] must be a fastprop layer (Dense, Dropout, "
                            f"Activation, BatchNorm, LayerNorm), got {type(layer).__name__}")
        cls = type(layer)
        if _is_python(layer):        # a Python node; registered only to be saved
            continue
        base = next((k for k in _COMPILED if isinstance(layer, k)), None)
        if base is None:
            raise TypeError(f"layers[{i}]: the compiled tape has no node for the layer kind "
                            f"{cls.__name__} (its kinds: Dense, Dropout, Activation, "
                            f"BatchNorm, LayerNorm), and it does not define forward and "
                            f"backward to run as a Python layer")
        if LAYERS.get(cls.__name__) is not cls:
            raise TypeError(f"layers[{i}]: the layer kind {cls.__name__} is not registered "
                            f"(fastprop.register_layer)")
        for method in ("forward", "backward"):
            if getattr(cls, method) is not getattr(base, method):
                raise TypeError(f"layers[{i}]: {cls.__name__} overrides {base.__name__}."
                                f"{method}, which the compiled tape would bypass")
    return list(layers)


def _compile_layers(layers):
    """Check a layer list; return (layers, dense layers, compiled activation of each Dense).

    TypeError names a layer the compiled tape cannot run; ValueError a broken chain."""
    layers = _check_layer_kinds(layers)
    dense = [layer for layer in layers if isinstance(layer, Dense)]
    if not dense:
        raise ValueError("layers must contain at least one Dense layer")
    if isinstance(layers[-1], Dropout):
        raise ValueError("the last layer must be Dense or Activation (a Dropout after the output "
                         "layer would drop predictions)")
    if isinstance(layers[-1], _NORMS):
        raise ValueError(f"the last layer must be Dense or Activation, not "
                         f"{type(layers[-1]).__name__} (the loss reads the output layer's "
                         f"activation)")
    for prev, nxt in zip(dense, dense[1:]):
        between = layers[layers.index(prev) + 1:layers.index(nxt)]
        if any(map(_is_python, between)):     # its build gives the width (see _input_width)
            continue
        if nxt.n_in is not None and nxt.n_in != prev.n_out:
            raise ValueError(f"layer chain is broken: {prev!r} gives {prev.n_out} outputs "
                             f"but the next {nxt!r} takes n_in={nxt.n_in}")
    held = [layer for layer in layers
            if layer.n_params or layer.n_state or isinstance(layer, Dense)]
    if len(set(map(id, held))) != len(held):       # a parameter-free layer may repeat
        raise ValueError("layers holds the same layer twice; use separate layers")
    acts = []      # each Dense's compiled activation: an Activation after an identity Dense fused
    for i, layer in enumerate(layers):
        if isinstance(layer, Dense):
            acts.append(layer.activation)
        elif isinstance(layer, Activation) and _fuses(layers, i):
            acts[-1] = layer.activation
    return list(layers), dense, acts


def _fuses(layers, i):
    """layers[i] is an Activation the tape compiler fuses into the identity Dense before it."""
    return i > 0 and isinstance(layers[i], Activation) and isinstance(layers[i - 1], Dense) \
        and layers[i - 1].activation == "identity"


def _output_activation(layers, acts):
    """The activation of the network output: the last Activation node's, else the last
    Dense's (compiled) one."""
    last = layers[-1]
    if isinstance(last, Activation) and not _fuses(layers, len(layers) - 1):
        return last.activation
    if _is_python(last):                    # its output is the network's (no activation)
        return "identity"
    return acts[-1]


def _tape(layers, acts, offsets, n_in):
    """The node list the engine runs (see ``_core/_node.pxd``): per layer
    (kind, n_in, n_out, activation code, rate, parameter offset, state offset, eps), an
    Activation after an identity Dense fused into it, a Dropout of rate 0 left out. Widths of
    the parameter-free kinds follow the chain from ``n_in``. BatchNorm's rate is its
    momentum; a Dense's tuple ends with its weight penalty (l1, l2). Returns (nodes, the node
    index of each layer, None for a layer left out)."""
    nodes, d, width, p_off, s_off = [], 0, n_in, 0, 0
    where = []
    for i, layer in enumerate(layers):
        where.append(len(nodes))
        here, p_off, s_off = (p_off, s_off), p_off + layer.n_params, s_off + layer.n_state
        if _is_python(layer):
            w_in, w_out = python_widths(layer)
            nodes.append((_engine.NODE_KINDS["Python"], w_in, w_out, ACTIVATIONS["identity"],
                          0.0, here[0] if layer.n_params else -1,
                          here[1] if layer.n_state else -1, 0.0))
            width = w_out
            continue
        if isinstance(layer, Dense):
            nodes.append((_engine.NODE_KINDS["Dense"], layer.n_in, layer.n_out,
                          ACTIVATIONS[acts[d]], 0.0, offsets[d][0], -1, 0.0, layer.l1,
                          layer.l2))
            width, d = layer.n_out, d + 1
            continue
        if isinstance(layer, _NORMS):
            kind = "BatchNorm" if isinstance(layer, BatchNorm) else "LayerNorm"
            nodes.append((_engine.NODE_KINDS[kind], layer.n_in, layer.n_in, ACTIVATIONS["identity"],
                          float(getattr(layer, "momentum", 0.0)), here[0],
                          here[1] if layer.n_state else -1, float(layer.eps)))
            width = layer.n_in
            continue
        if isinstance(layer, Dropout):
            if layer.rate == 0:       # the identity: no node, no mask drawn
                where[-1] = None
                continue
            nodes.append((_engine.NODE_KINDS["Dropout"], width, width, 0, float(layer.rate),
                          -1, -1, 0.0))
        elif not _fuses(layers, i):
            nodes.append((_engine.NODE_KINDS["Activation"], width, width,
                          ACTIVATIONS[layer.activation], 0.0, -1, -1, 0.0))
        else:
            where[-1] = None
    return nodes, where


def _input_width(layers, n_in):
    """The input width of ``layers`` given ``n_in`` (None: unknown), inferred from the first
    built Dense when ``n_in`` is None; ValueError when ``n_in`` contradicts a built Dense.
    No layer is changed."""
    width, what = n_in, "the input width"
    for i, layer in enumerate(layers):
        if _is_python(layer):     # its widths are known once a model built it
            lin, lout = python_widths(layer) or (None, None)
        elif isinstance(layer, Dense):
            lin, lout = layer.n_in, layer.n_out
        else:
            continue
        if lin is not None:
            if width is not None and width != lin:
                raise ValueError(f"layers[{i}] {layer!r} takes n_in={lin}, but "
                                 f"{what} is {width}")
            if width is None and n_in is None:
                # a deferred Dense or an unbuilt Python layer before it: no width to take
                if any((isinstance(l, Dense) and l.n_in is None) or
                       (_is_python(l) and python_widths(l) is None) for l in layers[:i]):
                    return None
                return lin
        width, what = lout, "the previous layer's width"
    return n_in


def _own(*arrays):
    """Copies of the arrays (None stays None)."""
    return tuple(None if a is None else a.copy() for a in arrays)


#: metric names (and aliases) that compile / Sequential(metrics=) accept
_METRICS = {"accuracy": "accuracy", "acc": "accuracy", "mae": "mae",
            "mean_absolute_error": "mae", "mse": "mse", "mean_squared_error": "mse"}


def _check_metrics(metrics, loss, name="metrics"):
    """``metrics`` (a list of names, or None) as a tuple of canonical names, checked."""
    if metrics is None:
        return ()
    if isinstance(metrics, str) or not isinstance(metrics, (list, tuple)):
        raise TypeError(f"{name} must be a list of metric names, got {type(metrics).__name__}")
    out = []
    for i, m in enumerate(metrics):
        if not isinstance(m, str):
            raise TypeError(f"{name}[{i}] must be a metric name, got {type(m).__name__}")
        key = _METRICS.get(m.lower())
        if key is None:
            raise ValueError(f"{name}[{i}] must be one of {', '.join(_METRICS)}; got {m!r}")
        if key == "accuracy" and not is_classification(loss):
            raise ValueError(f"{name}[{i}] 'accuracy' needs a classification loss "
                             f"(cross_entropy, binary_cross_entropy), not {loss!r}")
        if key not in out:
            out.append(key)
    return tuple(out)


def _default_loss(activation):
    return {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy"}.get(activation, "mse")


class Sequential:
    """A feed-forward network of :class:`~fastprop.Dense`, :class:`~fastprop.Dropout` and
    :class:`~fastprop.Activation` layers (registered subclasses included).

    Parameters
    ----------
    layers : list of Layer, optional
        In order; each Dense's ``n_in`` must equal the previous Dense's ``n_out`` (a
        Keras-style ``Dense(n_out)`` takes it from there). The layers are compiled into a tape
        of nodes (one per layer; an Activation right after a Dense whose activation is
        ``identity`` is fused into that Dense's node, a Dropout of rate 0 is left out).
        Their current parameters are copied into the model (cast to ``dtype``) and become views
        into the model's flat buffers (``W``, ``b`` into ``params``, ``dW``, ``db`` into
        ``grads``; state buffers into ``state``). ``model.layers`` is a tuple of them
        (read-only, like ``loss``, ``dtype``, ``params`` and ``grads``: the compiled tape is
        built from them). A layer belongs to one model: a layer of another live model raises
        ``ValueError``; a kind the compiled model cannot run raises ``TypeError`` naming it.
        A custom :class:`~fastprop.Layer` subclass that defines ``build``, ``forward`` and
        ``backward`` in NumPy runs as a Python node of the tape (README, "Custom layers").
    loss : str, optional
        ``mse``, ``mae``, ``huber``, ``cross_entropy`` (softmax output) or
        ``binary_cross_entropy`` (sigmoid output), or an alias (Keras' ``mean_squared_error``,
        ``mean_absolute_error``, ``categorical_crossentropy``,
        ``sparse_categorical_crossentropy``, ``binary_crossentropy``; see
        ``fastprop.losses.ALIASES``). Default: ``cross_entropy`` for a softmax
        output, ``binary_cross_entropy`` for a sigmoid output, ``mse`` otherwise.
    optimizer : Optimizer or str, default ``fastprop.optim.Adam()``
    dtype : {"float32", "float64"}, default "float32"
    seed : int, optional
        Seeds dropout masks and the shuffling of ``fit``; the same seed (and the same layer
        weights) give the same training run.
    n_threads : int, optional
        Threads for this model's compiled calls (see :attr:`n_threads`); < 1 or not an
        integer raises ``ValueError`` (the non-integer error is a ``TypeError`` too); more
        than the CPUs this process may use is capped with a warning.
    metrics : list of str, optional
        Extra metrics reported by ``fit`` (History) and ``evaluate``: ``accuracy``
        (classification losses report it anyway), ``mae``, ``mse`` (see :meth:`compile`).
    input_dim : int, optional
        The input width, for models whose first Dense is Keras-style ``Dense(n_out)``.

    Notes
    -----
    Keras-style building: ``Sequential()`` (no layers) then :meth:`add`, and layers made with
    one width (``Dense(64)``). The model is compiled as soon as every width is known (from
    the first layer made with two widths, or ``input_dim``); until then it is *unbuilt*, and
    its first ``fit`` / ``predict`` / ``evaluate`` / ``train_step`` / ``forward`` /
    ``compute_gradients`` (from the width of ``X``) or :meth:`build` builds it. An unbuilt
    model has layers, optimizer and :meth:`get_config` (``n_in`` None for the layers not built
    yet; ``from_config`` makes an unbuilt model again); its :meth:`summary`, parameters,
    :meth:`get_weights`, ``save``, ``to_bytes``, pickle and ``copy.deepcopy`` raise
    ``ValueError`` (there are no weights to save: build it first).

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

    def __init__(self, layers=None, loss=None, optimizer=None, dtype="float32", seed=None,
                 n_threads=None, metrics=None, input_dim=None):
        empty = layers is None
        layers = [] if empty else _check_layer_kinds(layers)
        self._dtype = V.as_dtype(dtype)
        if input_dim is not None:
            input_dim = V.check_size(input_dim, "input_dim")
        n_in = _input_width(layers, input_dim)
        if empty or n_in is None:
            # Keras-style: compiled once every width is known
            seed = V.check_seed(seed)
            if n_threads is not None:
                n_threads = V.check_threads(n_threads)
            if not empty:         # a list given: complete (Sequential() is filled by add)
                self._check_spec(layers, loss, metrics)
            opt = get_optimizer(optimizer if optimizer is not None else "adam")
            opt._attach(self)
            try:
                for layer in layers:
                    layer._claim(self)
            except BaseException:
                opt._detach(self)
                for layer in layers:
                    layer._release(self)
                raise
            self._optimizer, self._layers, self.seed = opt, tuple(layers), seed
            self._pending = {"input_dim": input_dim, "loss": loss, "metrics": metrics,
                             "n_threads": n_threads}
            self._lock = threading.RLock()
            self._fwd = self._step_args = None
            self.stop_training = False
            self.history = None
            return
        self._pending = None
        self._loss_arg = loss        # None: the default of the output activation, after add
        self._loss, self._metrics = self._check_spec(layers, loss, metrics)
        self._build_deferred(layers, n_in)
        layers, dense, acts = _compile_layers(layers)
        opt = get_optimizer(optimizer if optimizer is not None else "adam")
        opt._attach(self)     # before anything else: an optimizer of another model is refused
        try:
            self._build(layers, dense, acts, opt, seed, n_threads)
        except BaseException:
            opt._detach(self)
            for layer in layers:
                layer._release(self)
            raise

    # -- Keras-style building ------------------------------------------------------------------
    @staticmethod
    def _check_spec(layers, loss, metrics):
        """The checks of a complete layer list that need no widths: the chain's kinds, the
        loss against the output activation, the metrics. Returns (canonical loss, metrics)."""
        layers, _, acts = _compile_layers(layers)
        out_act = _output_activation(layers, acts)
        loss = canonical_loss(loss if loss is not None else _default_loss(out_act))
        check_loss_activation(loss, out_act)
        return loss, _check_metrics(metrics, loss)

    @staticmethod
    def _build_deferred(layers, n_in):
        """Build the Keras-style Dense layers of a checked list for the input width ``n_in``."""
        width = n_in
        for i, layer in enumerate(layers):
            if _is_python(layer):
                width = build_python_layer(layer, width, f"layers[{i}]")
            elif isinstance(layer, Dense) or (isinstance(layer, _NORMS) and width is not None):
                width = layer.build(width)

    @property
    def built(self):
        """Whether the model is compiled (every width known; see :meth:`build`)."""
        return self._pending is None

    def build(self, n_in):
        """Build an unbuilt model for inputs of width ``n_in`` (Keras' ``model.build``).

        Every check of the constructor runs first (a failed build changes nothing). On a
        built model, ``n_in`` must be its input width (nothing changes).

        Raises
        ------
        ValueError
            ``n_in`` contradicts ``input_dim`` or a layer made with two widths; the layers
            are incomplete (no Dense yet, or a Dropout last).
        """
        n_in = V.check_size(n_in, "n_in")
        if self._pending is None:
            if n_in != self.n_in:
                raise ValueError(f"the model is built for n_in={self.n_in}, got n_in={n_in}")
            return
        with self._lock:
            pending = self._pending
            if pending["input_dim"] is not None and n_in != pending["input_dim"]:
                raise ValueError(f"n_in={n_in} contradicts the model's input_dim="
                                 f"{pending['input_dim']}")
            self._finish(n_in)

    def _finish(self, n_in):
        """Compile a pending model for the input width ``n_in`` (checked first)."""
        pending, layers = self._pending, list(self._layers)
        if not layers:
            raise ValueError("the model has no layers yet: add some with model.add(layer)")
        _input_width(layers, n_in)
        loss, metrics = self._check_spec(layers, pending["loss"], pending["metrics"])
        opt = self._optimizer
        self._build_deferred(layers, n_in)
        layers, dense, acts = _compile_layers(layers)
        old = {k: self.__dict__[k] for k in ("_loss", "_metrics") if k in self.__dict__}
        self._loss, self._metrics, self._loss_arg = loss, metrics, pending["loss"]
        self._pending = None
        try:
            self._build(layers, dense, acts, opt, self.seed, pending["n_threads"])
        except BaseException:
            self.__dict__.update(old)
            self._pending = pending
            raise

    def _build_from(self, X, name="X"):
        """Build a pending model from the width of the data ``X``."""
        self.build(V.as_array(X, name, self.dtype, ndim=2).shape[1])

    def add(self, layer):
        """Append a layer (Keras' ``model.add``).

        On a built model, the compiled model is rebuilt with the constructor's checks: the
        existing layers keep their parameters (the optimizer's state starts over when the
        number of parameters changes; the dropout stream continues). A Keras-style
        ``Dense(n_out)`` takes its input width from the layer before it. While the layers are
        incomplete (no Dense yet, or a Dropout / BatchNorm / LayerNorm last, as in ``add(Dense(64))``,
        ``add(Dropout(0.5))`` before the output layer) the model waits unbuilt. A failed call
        changes nothing.

        Parameters
        ----------
        layer : Layer
            A Dense, Dropout or Activation (or a registered subclass) of no other live model.

        Returns
        -------
        self
        """
        _check_layer_kinds([layer])
        if any(layer is l for l in self._layers):
            raise ValueError(f"{layer!r} is already in this model; use a separate layer")
        layers = list(self._layers) + [layer]
        complete = any(isinstance(l, Dense) for l in layers) and \
            not isinstance(layer, (Dropout,) + _NORMS)
        with self._lock:
            if self._pending is None:
                n_in = self.n_in
                _input_width(layers, n_in)      # the chain: ValueError, nothing changed
                if complete:
                    spec = self._check_spec(layers, self._loss_arg, self._metrics)
            else:
                n_in = _input_width(layers, self._pending["input_dim"])
                if complete:
                    self._check_spec(layers, self._pending["loss"], self._pending["metrics"])
            layer._claim(self)
            if self._pending is None and not complete:
                # built -> waiting for the output layer: the layers keep their arrays (views
                # into the old buffers), the optimizer its state until the rebuild
                self._pending = {"input_dim": n_in, "loss": self._loss_arg,
                                 "metrics": list(self._metrics), "n_threads": self._n_threads}
                self._layers = tuple(layers)
                self._fwd = None
                return self
            if self._pending is None:
                saved = [({n: l._get_array(n) for n in {**l.param_shapes, **l.state_shapes}},
                          {n: getattr(l, "d" + n, None) for n in l.param_shapes})
                         for l in self._layers]
                old = dict(self.__dict__)
                rng_state = self._engine.rng_state
                try:
                    self._build_deferred(layers, n_in)
                    self._loss, self._metrics = spec
                    lay, dense, acts = _compile_layers(layers)
                    self._build(lay, dense, acts, self._optimizer, self.seed, self._n_threads)
                    self._engine.rng_state = rng_state
                except BaseException:
                    self.__dict__.clear()
                    self.__dict__.update(old)
                    for l, (values, grads) in zip(self._layers, saved):
                        l._set_arrays(values, grads)
                    layer._release(self)
                    raise
                return self
            self._layers = tuple(layers)
            if complete and n_in is not None:
                try:
                    self._finish(n_in)
                except BaseException:
                    self._layers = self._layers[:-1]
                    layer._release(self)
                    raise
        return self

    # -- weights, Keras order ---------------------------------------------------------------
    def _weight_arrays(self):
        """(label, array) of every layer's parameters then state buffers, layer by layer."""
        if self._pending is not None:
            raise ValueError(self._unbuilt_message("weights"))
        return [(f"layers[{i}].{name}", arr) for i, layer in enumerate(self._layers)
                for name, arr in layer._weights()]

    def get_weights(self):
        """Copies of the weights in Keras order: per layer its parameters then its state
        buffers, in declaration order (Dense: ``W`` (n_in, n_out), ``b`` (n_out,); kinds with
        ``gamma``, ``beta``, ``running_mean``, ``running_var`` in that order).

        Returns
        -------
        list of ndarray
            New arrays of the model's dtype. ValueError on an unbuilt model.
        """
        with self._lock:
            return [arr.copy() for _, arr in self._weight_arrays()]

    def set_weights(self, weights):
        """Copy ``weights`` (as :meth:`get_weights` returns them) into the model.

        Every array is checked before anything is written: the count, each shape, real
        numbers, finite; cast to the model's dtype. ValueError / TypeError name the entry; a
        failed call changes nothing. The optimizer state is kept (as Keras does)."""
        with self._lock:
            _base.assign_weights(self._weight_arrays(), weights, self.dtype)
            self._fwd = None

    def _require_built(self, what):
        if self._pending is not None:
            raise ValueError(self._unbuilt_message(what) + " (an unbuilt model has no weights; "
                             "its get_config() can be kept instead)")

    def _unbuilt_message(self, what):
        return (f"{what}: this model has not yet been built (the input width is unknown). "
                f"Build it with model.build(n_in), Sequential(..., input_dim=n_in), a first "
                f"layer with two widths (Dense(n_in, n_out)), or a first fit / predict / "
                f"evaluate / train_step on data" + ("" if self._layers and not isinstance(
                    self._layers[-1], Dropout) else "; it also needs its output layer "
                    "(model.add(Dense(...)))"))

    def _build(self, layers, dense, acts, opt, seed, n_threads):
        self._optimizer = opt
        seed = V.check_seed(seed)
        if n_threads is not None:   # checked before the layers are bound to this model
            n_threads = V.check_threads(n_threads)
        self.seed = seed
        for layer in layers:      # a layer of another live model: ValueError, nothing bound
            layer._claim(self)
        self._layers = tuple(layers)
        self._dense = dense
        self._acts = acts         # the compiled activation of each Dense (Activation fused in)

        # flat buffers: every layer's parameters in declaration order (W[0], b[0], W[1], ...),
        # every layer's state buffers likewise in model.state
        offsets, off, n_state = [], 0, 0
        for layer in layers:
            if isinstance(layer, Dense):
                offsets.append((off, off + layer.n_in * layer.n_out))
            off += layer.n_params
            n_state += layer.n_state
        self._n_params = off
        # parameters, gradients and the optimizer's state, all touched by the first step
        V.check_alloc((2 + len(self.optimizer._state_names())) * off, self.dtype.itemsize,
                      "the model's parameters, gradients and optimizer state")
        self._params = np.empty(off, dtype=self.dtype)
        self._grads = np.zeros(off, dtype=self.dtype)
        self._state = np.zeros(n_state, dtype=self.dtype)
        p_off = s_off = 0
        for layer in layers:
            values, grads = {}, {}
            for name, shape in layer.param_shapes.items():
                size = int(np.prod(shape))
                values[name] = self._params[p_off:p_off + size].reshape(shape)
                values[name][...] = layer._get_array(name)
                grads[name] = self._grads[p_off:p_off + size].reshape(shape)
                p_off += size
            for name, shape in layer.state_shapes.items():
                size = int(np.prod(shape))
                values[name] = self._state[s_off:s_off + size].reshape(shape)
                values[name][...] = layer._get_array(name)
                s_off += size
            layer._set_arrays(values, grads)
        self._offsets = offsets
        self._width_in = _input_width(list(layers), None)
        rng = int(np.random.SeedSequence(seed).generate_state(1, np.uint64)[0])
        self._engine = self._make_engine(self.loss, rng)
        self.optimizer._setup(self.n_params, self.dtype)
        self.n_threads = n_threads
        self._lock = threading.RLock()
        self._fwd = None          # (X, n, training) of the last textbook forward
        self._step_args = None    # the optimizer's engine arguments train_step last checked
        self.stop_training = False
        self.history = None

    def _make_engine(self, loss, rng):
        """The compiled tape of these layers with ``loss`` (canonical, checked), the
        dropout stream at ``rng``, the frozen layers' ranges (and the runner of its Python
        nodes, if any)."""
        nodes, where = _tape(self._layers, self._acts, self._offsets, self._width_in)
        self._width_out = nodes[-1][2]
        entries, p_off = [], 0
        for i, layer in enumerate(self._layers):
            if _is_python(layer):
                grads = []
                for shape in layer.param_shapes.values():
                    size = int(np.prod(shape))
                    grads.append(self._grads[p_off:p_off + size].reshape(shape))
                    p_off += size
                entries.append((where[i], i, layer, nodes[where[i]][1], nodes[where[i]][2],
                                grads))
            else:
                p_off += layer.n_params
        runner = None
        if entries:                        # (a weak owner: no cycle through the engine)
            runner = PythonNodes(entries, self._dtype, owner=weakref.ref(self),
                                 hold=lambda model: list(model._optimizer._state.values()))
        self._runner = runner
        engine = _engine.Engine(nodes, loss_code(loss), self.params, self.grads, rng,
                                V.check_alloc, self._state, runner)
        engine.set_frozen(self._frozen_ranges())
        return engine

    # -- basic facts ---------------------------------------------------------------------------
    dtype = _fixed("dtype", "The working dtype, float32 or float64 (read-only).")
    loss = _fixed("loss", "The loss name (read-only).")
    n_params = _fixed("n_params", "Number of parameters (read-only).")
    params = _fixed("params", "The flat parameter buffer (n_params,) (read-only attribute; "
                              "its values may be written in place).")
    grads = _fixed("grads", "The flat gradient buffer (n_params,) (read-only attribute).")
    layers = _fixed("layers", "The layers, a tuple (read-only: the plan is built from them).")
    state = _fixed("state", "The flat buffer of every layer's non-trainable state buffers "
                            "(read-only attribute; empty for Dense / Dropout / Activation).")
    metrics = _fixed("metrics", "The extra metric names, a tuple (set by compile).")

    def compile(self, optimizer=None, loss=None, metrics=None):
        """Set the optimizer, the loss and the metrics, as Keras' ``model.compile``.

        Parameters
        ----------
        optimizer : Optimizer or str, optional
            ``"adam"``, ``"sgd"``, ``"rmsprop"``, ``"adagrad"``, ``"adamw"`` (a fresh one with
            torch's defaults) or an Optimizer, which this model then owns (as the
            :attr:`optimizer` setter does). None keeps the current one.
        loss : str, optional
            A loss name or alias (as for the constructor); it must suit the output activation.
            The compiled tape is rebuilt for it (weights, optimizer state and the dropout
            stream kept). None keeps the current one.
        metrics : list of str, optional
            ``accuracy`` (``acc``), ``mae`` (``mean_absolute_error``), ``mse``
            (``mean_squared_error``). ``fit`` reports each per epoch in its History (running
            mean over the epoch's batches, like ``loss``; ``val_<name>`` on the validation
            data) and ``evaluate`` in its dict. ``mae`` / ``mse`` compare the outputs
            (probabilities for softmax / sigmoid) with the targets (one-hot rows for integer
            labels), unweighted. Accuracy needs a classification loss (where it is always
            reported). None keeps the current ones; ``[]`` removes them.

        Returns
        -------
        self

        Every argument is checked before anything changes: an unknown name raises
        ``ValueError`` naming the argument, and the model stays as it was.
        """
        if self._pending is not None:
            return self._compile_pending(optimizer, loss, metrics)
        new_loss = self._loss if loss is None else canonical_loss(loss)
        check_loss_activation(new_loss, _output_activation(self._layers, self._acts))
        new_metrics = _check_metrics(self._metrics if metrics is None else metrics, new_loss)
        opt = None if optimizer is None else get_optimizer(optimizer)
        with self._lock:
            engine = self._engine
            if new_loss != self._loss:
                engine = self._make_engine(new_loss, self._engine.rng_state)
                engine.n_threads = self._engine.n_threads
            if opt is not None:
                self.optimizer = opt     # may refuse (another model's): nothing changed yet
            self._engine, self._loss, self._metrics = engine, new_loss, new_metrics
            if loss is not None:
                self._loss_arg = new_loss
            self._fwd = None
        return self

    def _compile_pending(self, optimizer, loss, metrics):
        """compile of an unbuilt model: checked now as far as the layers allow, kept for the
        build."""
        pending = self._pending
        loss = pending["loss"] if loss is None else canonical_loss(loss)
        metrics = pending["metrics"] if metrics is None else metrics
        layers = list(self._layers)
        if any(isinstance(l, Dense) for l in layers) and not isinstance(layers[-1], Dropout):
            self._check_spec(layers, loss, metrics)
        elif metrics is not None:
            _check_metrics(metrics, "mse" if loss is None else loss)
        opt = None if optimizer is None else get_optimizer(optimizer)
        with self._lock:
            if opt is not None:
                self.optimizer = opt
            pending["loss"], pending["metrics"] = loss, metrics
        return self

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
                if self._pending is None:      # an unbuilt model sets it up when built
                    opt._setup(self.n_params, self.dtype)
            except BaseException:
                opt._detach(self)
                raise
            self._optimizer._detach(self)
            self._optimizer = opt

    @property
    def n_in(self):
        """The input width (None while an unbuilt model cannot infer it)."""
        if self._pending is not None:
            return _input_width(list(self._layers), self._pending["input_dim"])
        return self._width_in

    @property
    def n_out(self):
        """The output width (None while an unbuilt model has no Dense)."""
        if self._pending is not None:
            dense = [l for l in self._layers if isinstance(l, Dense)]
            last = self._layers[-1] if self._layers else None
            if last is not None and _is_python(last):
                return (python_widths(last) or (None, None))[1]
            return dense[-1].n_out if dense else None
        return self._width_out

    @property
    def n_threads(self):
        """Threads for this model's compiled calls; None: what the BLAS is set to
        (``fastprop.set_num_threads``, ``threadpoolctl``, ``OPENBLAS_NUM_THREADS``, or the
        number of cores). Per call the engine picks how to use them: a training step, or a
        ``predict`` / ``evaluate``, large enough (``fastprop._threads.SPLIT_WORK_MIN``
        multiply-adds, ``SPLIT_ROWS_MIN`` rows per thread) is split by rows of the batch
        over the engine's worker threads, each with one-thread GEMMs (not for training
        steps of a model with a BatchNorm or Python layer, nor training steps above
        ``SPLIT_WORK_MAX`` multiply-adds that BLAS threads run faster); otherwise layers of at least
        ``fastprop._threads.WORK_MIN`` multiply-adds use BLAS threads, and smaller calls
        one thread. A split step equals the one-thread step up to the order of a sum (float64
        ~1e-12, float32 ~1e-5 relative) and is bit-identical from run to run with the same
        count; ``n_threads=1`` runs today's one-thread path exactly. Set it to 1 inside
        worker pools to avoid oversubscription. The count is kept as given, but the engine
        uses at most the CPUs this process may use (``RuntimeWarning`` the first time a count
        is capped)."""
        if self._pending is not None:
            return self._pending["n_threads"]
        return self._n_threads

    @n_threads.setter
    def n_threads(self, value):
        n = None if value is None else V.check_threads(value)
        if self._pending is not None:      # set on the engine when the model is built
            self._pending["n_threads"] = n
            return
        self._engine.n_threads = 0 if n is None else _threads.capped(n, "n_threads")
        self._n_threads = n

    @property
    def is_classifier(self):
        return is_classification(self.loss)

    def __repr__(self):
        inner = ", ".join(repr(layer) for layer in self.layers)
        if self._pending is not None:
            return (f"Sequential([{inner}], optimizer={self.optimizer!r}, "
                    f"dtype={self.dtype.name!r}, unbuilt)")
        return (f"Sequential([{inner}], loss={self.loss!r}, optimizer={self.optimizer!r}, "
                f"dtype={self.dtype.name!r})")

    def summary(self, file=None):
        """Print the layers, their output shapes and parameter counts; return the text.

        ValueError on an unbuilt model (as Keras): build it first (:meth:`build`)."""
        if self._pending is not None:
            raise ValueError(self._unbuilt_message("summary()"))
        frozen = sum(b - a for a, b in self._frozen_ranges())
        rows = [("#", "layer", "output shape", "activation", "params")]
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Dense):
                rows.append((str(i), "Dense", f"(None, {layer.n_out})", layer.activation,
                             f"{layer.n_params:,}"))
            elif isinstance(layer, Activation):
                rows.append((str(i), "Activation", "same", layer.activation, "0"))
            elif isinstance(layer, _NORMS):
                extra = f"state {layer.n_state}" if layer.n_state else "-"
                rows.append((str(i), type(layer).__name__, "same", extra,
                             f"{layer.n_params:,}"))
            elif _is_python(layer):
                extra = f"state {layer.n_state}" if layer.n_state else "-"
                rows.append((str(i), f"{type(layer).__name__} (Python)",
                             f"(None, {python_widths(layer)[1]})", extra,
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
                     f"bytes)  loss: {self.loss}  optimizer: {self.optimizer!r}",
               f"trainable: {self.n_params - frozen:,}  non-trainable (frozen): {frozen:,}"])
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
        """(kind, hyper, state) for the compiled update (cached by the optimizer)."""
        return self._optimizer._engine_args(self._n_params, self._dtype)

    def _frozen_ranges(self):
        """The [start, end) ranges of the frozen layers' parameters (``trainable`` False),
        adjacent ones merged (O(layers))."""
        ranges, off = [], 0
        for layer in self._layers:
            size = layer.n_params
            if size and not layer.trainable:
                if ranges and ranges[-1][1] == off:
                    ranges[-1] = (ranges[-1][0], off + size)
                else:
                    ranges.append((off, off + size))
            off += size
        return ranges

    def _trainable_changed(self):
        """A layer's ``trainable`` flag changed (its setter calls this on the model that
        holds it): give the engine the new frozen ranges. The steps never look at the flags,
        so a model without frozen layers pays nothing per step."""
        with self._lock:
            if self._pending is None:        # an unbuilt model reads the flags when built
                self._engine.set_frozen(self._frozen_ranges())

    # -- training, one batch -----------------------------------------------------------------
    def train_step(self, X, y, sample_weight=None, comm=None):
        """One compiled forward + loss + backward + optimizer update on a batch.

        Parameters
        ----------
        X : array_like (n_samples, n_in)
        y : array_like
            Targets (see :func:`fastprop.losses.prepare_targets`): integer labels or
            probability rows for ``cross_entropy``, (n, n_out) values otherwise.
        sample_weight : array_like (n_samples,), optional
        comm : mpi4py communicator, optional
            Data-parallel step (collective): each rank passes its part of the global batch
            (it may be empty, or all its weights 0); the gradients are summed over the ranks
            with one ``Allreduce`` and every rank applies the same update, so the parameters
            equal those of one step on the concatenated batch. The first call with a
            communicator broadcasts rank 0's parameters and optimizer state. See
            :mod:`fastprop.distributed`.

        Returns
        -------
        float
            The batch loss of the forward pass (before the update); with ``comm``, of the
            global batch.

        All arguments are checked before anything changes: a call that raises leaves
        parameters and optimizer state as they were. That includes a batch whose loss or
        gradients are not finite, or whose update could overflow (inputs too large for the
        dtype, diverged weights): ValueError, no update.
        """
        if comm is not None:
            if self._pending is not None:
                self._build_from(X)
            from fastprop import distributed
            return distributed.train_step(self, X, y, sample_weight, comm)
        if sample_weight is None:
            # fast path: arrays already in the engine's layout are checked in C (finite,
            # labels in range) and the step runs; anything else returns None untouched
            opt = self._optimizer
            with self._lock:
                t = opt.t + 1
                args = opt._args      # the optimizer drops it when an attribute changes
                if args is None or args is not self._step_args:
                    if self._pending is not None:     # (an unbuilt model's _step_args: None)
                        self._build_from(X)
                        t = opt.t + 1
                    args = self._step_args = opt._engine_args(self._n_params, self._dtype)
                loss = self._engine.train_step_checked(X, y, *args, t)
                if loss is not None:
                    if self._fwd is not None:
                        self._fwd = None
                    if self._engine.last_refused:     # the engine changed nothing
                        self._check_norm_rows(X.shape[0], "X")
                        _raise_refused(loss)
                    # straight into the instance dict: the step counter never invalidates the
                    # optimizer's cached engine arguments, and its __setattr__ hook costs a
                    # tenth of a tiny step
                    opt.__dict__["t"] = t
                    return loss
        if self._pending is not None:
            self._build_from(X)
        X = self._X(X)
        y_dense, labels, w = self._targets(y, X.shape[0], sample_weight)
        with self._lock:
            kind, hyper, state = self._opt_args()
            t = self._optimizer.t + 1
            loss = self._engine.train_step(X, y_dense, labels, w, None, kind, hyper,
                                           state, t)
            self._fwd = None
            if self._engine.last_refused:
                self._check_norm_rows(X.shape[0], "X")
                _raise_refused(loss)
            self._optimizer.__dict__["t"] = t
        return loss

    def _check_norm_rows(self, rows, what):
        """ValueError when a BatchNorm would train on a batch of one row (its variance is
        undefined; PyTorch refuses it too). A frozen BatchNorm uses its running statistics."""
        if rows == 1 and any(isinstance(layer, BatchNorm) and layer.trainable
                             for layer in self._layers):
            raise ValueError(f"{what} is a batch of one sample: BatchNorm in training needs "
                             f"more than one sample per batch (as torch.nn.BatchNorm1d); the "
                             f"model was not updated")

    # -- the textbook path -------------------------------------------------------------------
    def forward(self, X, training=True):
        """Forward pass that keeps every layer's cache (for :meth:`backward`).

        With ``training=True`` dropout is active (drawing from the model's stream exactly as
        :meth:`train_step` does). Returns a copy of the network output (n, n_out).
        """
        if self._pending is not None:
            self._build_from(X)
        X = V.as_array(X, "X", self.dtype, ndim=2, width=self.n_in,
                       width_name="the model's n_in", copy=True)   # the cache is ours
        with self._lock:
            self._engine.forward(X, bool(training))
            self._fwd = (X, X.shape[0], bool(training))
            return self._engine.output_buffer(X.shape[0]).copy()

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

    def compute_gradients(self, X, y, sample_weight=None, normalizer=None, penalty=True):
        """Gradients only: one compiled forward (training mode), loss and backward, no update.

        ``model.grads`` := the gradient of the batch loss ``sum_i w_i l_i / normalizer``; the
        optimizer and its step count are untouched (apply it with :meth:`apply_gradients`).
        Dropout draws from the model's stream exactly as :meth:`train_step` does.

        Parameters
        ----------
        X : array_like (n_samples, n_in)
        y : array_like
            Targets, as for :meth:`train_step`.
        sample_weight : array_like (n_samples,), optional
        normalizer : float > 0, optional
            Divide the weighted loss sum (and its gradient) by this instead of the batch's own
            weight sum (``n_samples`` without weights). Shards of one global batch that each
            pass the global weight sum get gradients that *sum* to the global batch's gradient
            (each sample scaled as in one process); a shard whose weights are all 0 is then
            allowed and gives zero gradients. With Dense weight penalties (``l1`` / ``l2``),
            pass ``penalty=True`` on exactly one shard so that the sum counts them once.
        penalty : bool, default True
            Include the Dense weight penalties (``l1`` / ``l2``) in the loss and the gradients;
            ``False`` leaves them out (the data term only).

        Returns
        -------
        float
            The batch loss of the forward pass.
        """
        if self._pending is not None:
            self._build_from(X)
        X = self._X(X)
        if not isinstance(penalty, (bool, np.bool_)):
            raise TypeError(f"penalty must be True or False, got {penalty!r}")
        if normalizer is None:
            y_dense, labels, w = self._targets(y, X.shape[0], sample_weight)
            normalizer = 0.0
        else:
            from fastprop.distributed import _local_targets
            normalizer = V.check_real(normalizer, "normalizer", low=0.0, low_open=True)
            y_dense, labels, w = _local_targets(self, y, X.shape[0], sample_weight)
        with self._lock:
            self._fwd = None
            return self._engine.compute_gradients(X, y_dense, labels, w, None, normalizer,
                                                  bool(penalty))

    def apply_gradients(self):
        """One compiled optimizer update of ``model.params`` from ``model.grads``.

        The update of a fused :meth:`train_step`, with its rule: gradients that are not finite,
        or so large that the update or the optimizer state could overflow, raise ``ValueError``
        and change nothing (parameters, optimizer state and step count). With ``clip_norm`` the
        gradients are clipped in place first."""
        self._require_built("apply_gradients")
        with self._lock:
            kind, hyper, state = self._opt_args()
            t = self.optimizer.t + 1
            if not self._engine.apply_update(kind, hyper, state, t):
                raise ValueError("model.grads are not finite or too large for the update (the "
                                 "loss or the backward pass overflowed, or the weights "
                                 "diverged); nothing was updated")
            self.optimizer.t = t

    # -- inference ---------------------------------------------------------------------------
    def predict(self, X, batch_size=None, comm=None):
        """Network output for X (n, n_out): probabilities for softmax / sigmoid outputs.

        Inference mode (no dropout). Thread-safe; ``batch_size`` only bounds the scratch
        memory (default 1,024 rows at a time: fewer, larger GEMMs). With an mpi4py ``comm``
        (collective), each rank gets the outputs of its own X, and bad input on one rank
        raises on every rank."""
        if self._pending is not None:
            self._build_from(X)
        if comm is not None:
            from fastprop import distributed
            return distributed.predict(self, X, batch_size, comm)
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

    def _score(self, X, y_dense, labels, w, outputs=False):
        """(loss, accuracy or None) of validated arrays, in inference mode (and the outputs,
        with ``outputs``)."""
        z, a = self._outputs(X)
        out_act = ACTIVATIONS[_output_activation(self._layers, self._acts)]
        loss = _closs.loss_and_grad(loss_code(self.loss), out_act, z, a, y_dense, labels, w)
        loss += self._engine.penalty()    # weight penalties: in the loss, as Keras reports it
        acc = self._accuracy(a, y_dense, labels)
        return (loss, acc, a) if outputs else (loss, acc)

    def _scores(self, X, y_dense, labels, w, prefix=""):
        """``{"loss", "accuracy" (classification), metrics...}`` of validated arrays in
        inference mode, each key with ``prefix``."""
        loss, acc, a = self._score(X, y_dense, labels, w, outputs=True)
        out = {"loss": float(loss)}
        if acc is not None:
            out["accuracy"] = acc
        if "mae" in self._metrics or "mse" in self._metrics:
            abs_sum, sq_sum, count = _error_sums(a, y_dense, labels)
            for name, total in (("mae", abs_sum), ("mse", sq_sum)):
                if name in self._metrics:
                    out[name] = total / count if count else float("nan")
        return {prefix + k: v for k, v in out.items()}

    def _accuracy(self, a, y_dense, labels):
        if self.loss == "cross_entropy":
            truth = labels if labels is not None else np.argmax(y_dense, axis=1)
            return float(np.mean(np.argmax(a, axis=1) == truth))
        if self.loss == "binary_cross_entropy":
            return float(np.mean((a > 0.5) == (y_dense > 0.5)))
        return None

    def evaluate(self, X, y, sample_weight=None, comm=None):
        """Return ``{"loss": ...}`` plus ``"accuracy"`` for classification and the compiled
        metrics (``"mae"``, ``"mse"``; see :meth:`compile`), in inference mode.

        Accuracy is the fraction of samples whose arg-max output matches the label
        (cross-entropy) or of outputs on the right side of 0.5 (binary cross-entropy);
        sample weights apply to the loss only. With an mpi4py ``comm`` (collective), each
        rank passes its shard (maybe empty) and every rank gets the scores of their union."""
        if self._pending is not None:
            self._build_from(X)
        if comm is not None:
            from fastprop import distributed
            return distributed.evaluate(self, X, y, sample_weight, comm)
        X = self._X(X)
        y_dense, labels, w = self._targets(y, X.shape[0], sample_weight)
        return self._scores(X, y_dense, labels, w)

    # -- training loop -----------------------------------------------------------------------
    def fit(self, X, y, epochs=1, batch_size=32, shuffle=True, validation_split=0.0,
            validation_data=None, sample_weight=None, callbacks=None, verbose=1, comm=None,
            class_weight=None, initial_epoch=None):
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
        comm : mpi4py communicator, optional
            Data-parallel training (collective; see :mod:`fastprop.distributed`): each rank
            passes its own shard (``fastprop.distributed.shard``) and ``batch_size`` is per
            rank; step ``b`` trains on the union of the ranks' batches ``b`` with one
            ``Allreduce`` of the gradients, giving the parameters one process gets on that
            global batch. Rank 0's parameters and optimizer state are broadcast first. Every
            rank runs the same number of steps per epoch, the longest shard's (shorter or
            empty shards take part with zero gradients). Each rank shuffles its shard and draws
            dropout masks from its own seeded stream; ``validation_data`` / ``validation_split``
            are per rank and ``val_*`` are computed over all ranks, so History and callback
            decisions are the same everywhere; the progress bar, ``CSVLogger`` and
            ``ModelCheckpoint`` run on rank 0 only. An error on any rank (input, callback)
            raises on every rank. A CRC-32 of the parameters is compared across ranks after
            every epoch. ``class_weight`` (``"balanced"`` counts the classes of all ranks),
            ``initial_epoch``, the ``mae`` / ``mse`` metrics (sums reduced over the ranks) and
            per-batch schedules (the lr of each global step) give what one process gets on the
            union of the shards. A model with a BatchNorm layer is refused (its batch
            statistics would be per rank).
        class_weight : dict of int to float, or "balanced", optional
            Weights of the classes (classification losses): each training sample's weight is
            multiplied by its class's (labels missing from the dict weigh 1); ``"balanced"``
            gives ``n / (n_classes * count(label))`` over the training samples, as
            scikit-learn. Validation samples are not weighted by it (as in Keras). A label
            that is not a class of the model, a negative or non-finite weight raise
            ``ValueError``.
        initial_epoch : int, optional
            Keras' resume: run epochs ``initial_epoch`` .. ``epochs - 1`` (History and the
            callbacks see these indices), the schedule positioned at epoch ``initial_epoch``
            (``optimizer.epoch = initial_epoch``, ``optimizer.iteration = initial_epoch *
            steps_per_epoch``). Must be in [0, epochs). None (default): the schedule continues
            from the optimizer's position (``fit(3)`` then ``fit(3)`` trains as ``fit(6)``),
            and ``epochs`` more epochs run, numbered from 0.

        Returns
        -------
        History
            ``history.history["loss"]`` etc.: per-epoch ``loss``, ``val_loss``, and
            ``accuracy`` / ``val_accuracy`` for classification, the compiled metrics
            (``mae`` / ``val_mae``, ...), and ``lr``. ``loss`` and
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
        if self._pending is not None:
            self._build_from(X)
        if comm is not None:
            from fastprop import distributed
            return distributed.fit(self, X, y, epochs, batch_size, shuffle, validation_split,
                                   validation_data, sample_weight, callbacks, verbose, comm,
                                   class_weight, initial_epoch)
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
        first = 0
        if initial_epoch is not None:
            first = V.check_size(initial_epoch, "initial_epoch", minimum=0)
            if first >= epochs:
                raise ValueError(f"initial_epoch must be < epochs ({epochs}), got {first}")
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
        if class_weight is not None:
            cw = class_weight_vector(class_weight, self.loss, y_dense, labels, self.n_out,
                                     self.dtype)
            w = cw if w is None else w * cw
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
        if n - (steps - 1) * batch_size == 1:
            self._check_norm_rows(1, f"the last batch of each epoch ({n} samples, "
                                     f"batch_size={batch_size})")
        per_sample = 1 if self.loss == "cross_entropy" else self.n_out
        cbs = CallbackList(callbacks, model=self, verbose=verbose, epochs=epochs,
                           steps=steps, n_samples=n)
        # the keys of every epoch's logs, for the callbacks' checks before the first update
        errors = [m for m in self._metrics if m in ("mae", "mse")]
        keys = ["loss"] + (["accuracy"] if self.is_classifier else []) + errors
        if val is not None:
            keys += ["val_" + k for k in keys]
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
            # per-batch schedules and the mae / mse metrics (read from the engine's outputs of
            # each batch) need Python between batches too
            per_batch = getattr(opt.schedule, "per_batch", False)
            if begin_hooks or per_batch or errors or any(
                    not isinstance(getattr(h, "__self__", None), ProgressBar)
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
            err_sums = np.zeros((steps, 2))   # each batch's sum |a - y|, sum (a - y)^2
            t_start, rng_start = opt.t, engine.rng_state
            try:
                cbs.on_train_begin()
                if initial_epoch is not None:     # the schedule's position: epoch initial_epoch
                    opt.epoch, opt.iteration = first, first * steps
                for epoch in range(first, epochs):
                    opt.schedule_epoch(opt.epoch)
                    cbs.on_epoch_begin(epoch)
                    if shuffle:
                        order = self._permutation(n)
                    done = 0
                    for b0 in range(0, steps, chunk):
                        k = min(chunk, steps - b0)
                        cbs.on_train_batch_begin(b0)   # chunk is 1 when a callback has it
                        if per_batch:
                            opt.schedule_batch(opt.iteration)
                        kind, hyper, state = self._opt_args()
                        t = opt.t
                        try:
                            engine.train_batches(X, y_dense, labels, w, order, batch_size, b0,
                                                 k, kind, hyper, state, t + 1,
                                                 losses[b0:], corrects[b0:], refused[b0:])
                        finally:
                            # a signal (Ctrl-C) stops the loop between two batches: the
                            # step count covers exactly the steps applied
                            opt.__dict__["t"] = t + engine.batches_done
                            opt.__dict__["iteration"] += engine.batches_done
                        done = b0 + k
                        if errors:    # chunk is 1: the outputs of batch b0, before its update
                            start = b0 * batch_size
                            rows = order[start:start + int(sizes[b0])]
                            a = engine.output_buffer(rows.size)
                            err_sums[b0] = _error_sums(
                                a, None if y_dense is None else y_dense[rows],
                                None if labels is None else labels[rows])[:2]
                        for i in range(b0, done) if end_hooks else ():
                            cbs.on_train_batch_end(i, {"loss": float(losses[i]),
                                                       "size": int(sizes[i])})
                        if self.stop_training:
                            break
                    opt.epoch += 1
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
                    for j, name in enumerate(("mae", "mse")):
                        if name in errors:
                            logs[name] = float(err_sums[:done, j].sum()) / (seen * self.n_out)
                    if val is not None:
                        logs.update(self._scores(*val, prefix="val_"))
                    logs["lr"] = opt.lr
                    cbs.on_epoch_end(epoch, logs)
                    if self.stop_training:
                        break
                cbs.on_train_end()
            except BaseException:
                # interrupted or failed: the history of the epochs completed, files of the
                # callbacks closed; the model and optimizer hold the steps applied (none
                # applied: the shuffling stream is rewound too, so that nothing changed)
                if opt.t == t_start:
                    engine.rng_state = rng_start
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
        """JSON-serialisable architecture, loss, dtype and optimizer configuration.

        Of an unbuilt model: the layers' configs (``n_in`` None where not inferred yet), the
        loss given (maybe None), ``input_dim`` and the ``metrics`` given; ``from_config`` makes
        an unbuilt model of it."""
        if self._pending is not None:
            p = self._pending
            return {"layers": [layer.get_config() for layer in self.layers], "loss": p["loss"],
                    "dtype": self.dtype.name, "optimizer": self.optimizer.get_config(),
                    "input_dim": p["input_dim"],
                    "metrics": None if p["metrics"] is None else list(p["metrics"])}
        config = {"layers": [layer.get_config() for layer in self.layers], "loss": self.loss,
                  "dtype": self.dtype.name, "optimizer": self.optimizer.get_config()}
        if any(map(_is_python, self._layers)):
            # fresh Python layers are unbuilt: from_config builds them from the input width
            config["input_dim"] = self.n_in
        if self._metrics:     # absent: none (as in 0.1.0 files)
            config["metrics"] = list(self._metrics)
        return config

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
            if not isinstance(spec, dict) or not isinstance(spec.get("type"), str) \
                    or spec["type"] not in LAYERS:
                raise ValueError(f"config['layers'][{i}] must be a dict whose type is a "
                                 f"registered layer kind ({', '.join(sorted(LAYERS))})")
            try:
                layers.append(LAYERS[spec["type"]].from_config(spec, dtype=dtype))
            except ValueError as e:
                raise ValueError(f"config['layers'][{i}]: {e}") from None
        opt = optimizer_from_config(config["optimizer"])
        return cls(layers, loss=config["loss"], optimizer=opt, dtype=dtype,
                   metrics=config.get("metrics"), input_dim=config.get("input_dim"))

    def get_rng_state(self):
        self._require_built("get_rng_state")
        return np.array([self._engine.rng_state], dtype=np.uint64)

    def set_rng_state(self, state):
        self._require_built("set_rng_state")
        state = np.asarray(state)
        if state.shape != (1,) or state.dtype != np.uint64:
            raise ValueError(f"rng state must be a uint64 array of shape (1,), got "
                             f"{state.dtype} {state.shape}")
        self._engine.rng_state = int(state[0])

    def save(self, path):
        """Save architecture, parameters, optimizer state and RNG state to one file (no pickle;
        written atomically). ``path`` is a path (a symlink saves to its target) or a binary
        file object. Load it with :func:`fastprop.load`; see :func:`fastprop.io.save`. An unbuilt model
        has no weights to save: ValueError (build it first, or keep :meth:`get_config`)."""
        self._require_built("save")
        with self._lock:
            io.save(self, path)

    def to_bytes(self):
        """The model file :meth:`save` writes, as ``bytes``; :func:`fastprop.from_bytes`
        reads it back."""
        self._require_built("to_bytes")
        with self._lock:
            return io.to_bytes(self)

    # pickle and deepcopy go through the model file format (no pickled code or objects) and
    # carry the one runtime setting the file does not hold, n_threads
    def __getstate__(self):
        self._require_built("pickle")
        with self._lock:
            return {"fastprop_model": io.to_bytes(self), "n_threads": self.n_threads}

    def __setstate__(self, state):
        if not isinstance(state, dict) or "fastprop_model" not in state:
            raise ValueError("not a pickled fastprop model")
        other = io.from_bytes(state["fastprop_model"])
        other.n_threads = state.get("n_threads")
        self.__dict__.update(other.__dict__)
        self._optimizer._attach(self, force=True)     # other is discarded
        if self._runner is not None:
            self._runner.owner = weakref.ref(self)
        for layer in self._layers:
            layer._release(other)
            layer._claim(self)

    def __deepcopy__(self, memo):
        self._require_built("copy.deepcopy")
        with self._lock:
            other = io.from_bytes(io.to_bytes(self))
            other.n_threads = self.n_threads
            return other


def gradcheck(model, X, y=None, sample_weight=None, eps=1e-6, max_params=None, seed=0):
    """Central finite-difference check of every parameter gradient, in float64.

    Works on a float64 copy of ``model`` (the model itself is untouched), in inference mode
    (dropout off, BatchNorm on its running statistics). For each parameter block (each
    layer's W and b, gamma and beta, a custom layer's parameters) the relative error is
    ``||g - g_fd|| / max(||g|| + ||g_fd||, 1e-30)`` between the analytic gradient ``g`` and
    the central difference ``g_fd = (L(p + eps) - L(p - eps)) / (2 eps)``.

    A layer alone (``gradcheck(layer, X)``, e.g. a custom Python layer; ``y`` and
    ``sample_weight`` unused): a float64 copy of it (built for ``X``'s width if it is not
    yet) is checked with the loss ``L = sum(forward(X) * R)`` for a fixed random ``R``: its
    parameters' gradients and ``da_prev`` (the gradient with respect to ``X``) from its
    ``backward(R, cache)`` against central differences.

    Parameters
    ----------
    model : Sequential or Layer
    X : array_like (n_samples, n_in)
    y : array_like
        The targets (a model; required).
    max_params : int, optional
        Check a random subset of at most this many parameters per block (all by default).

    Returns
    -------
    float
        The largest relative error over the blocks: ~1e-8 or less for a right gradient,
        order 1 for a wrong one. A ReLU kink within ``eps`` of a sample can raise it.
    """
    if not isinstance(model, (Sequential, Layer)):
        raise TypeError(f"model must be a Sequential or a Layer, got {type(model).__name__}")
    eps = V.check_real(eps, "eps", low=0.0, low_open=True)
    if max_params is not None:
        max_params = V.check_size(max_params, "max_params")
    if isinstance(model, Layer):
        return gradcheck_layer(model, X, eps, max_params, seed)
    if y is None:
        raise TypeError("gradcheck of a model needs its targets y")
    config = model.get_config()
    config["dtype"] = "float64"
    if any(map(_is_python, model.layers)):
        # custom layers need not be registered: detached copies of them
        layers = [_detached_copy(layer) if _is_python(layer)
                  else LAYERS[spec["type"]].from_config(spec, dtype="float64")
                  for layer, spec in zip(model.layers, config["layers"])]
        m = Sequential(layers, loss=config["loss"], dtype="float64", input_dim=model.n_in)
    else:
        m = Sequential.from_config(config)
    m.params[...] = model.params
    m.state[...] = model.state
    X = m._X(X)
    y_dense, labels, w = m._targets(y, X.shape[0], sample_weight)

    def loss_at():
        return float(m._score(X, y_dense, labels, w)[0])

    m._engine.forward(X, False)
    m._engine.backward(X, y_dense, labels, w, False)
    g = m.grads.copy()
    rng = np.random.default_rng(seed)
    worst = 0.0
    blocks, off = [], 0           # every parameter array (W, b; gamma, beta), in layer order
    for layer in m.layers:
        for shape in layer.param_shapes.values():
            size = int(np.prod(shape))
            blocks.append((off, off + size))
            off += size
    for start, stop in blocks:
        worst = max(worst, block_error(m.params[start:stop], g[start:stop], loss_at, eps,
                                       max_params, rng))
    return worst


def _detached_copy(layer):
    """A deep copy of a built custom layer that belongs to no model."""
    other = copy.deepcopy(layer)
    object.__setattr__(other, "_owner", None)
    return other


io.register_model_class(Sequential)
