"""See forward and backward propagation: every array of one pass, by its textbook name.

``fastprop.trace(model, X, y)`` runs one forward and one backward pass of a batch through the
textbook blocks (each layer kind's ``forward`` / ``backward``: Dense, Dropout, Activation,
BatchNorm, LayerNorm) on copies of the model's layers, and keeps every array::

    layer l (Dense):   z[l] = a[l-1] W[l] + b[l]      a[l] = g(z[l])
                       dz[l] = da[l] * g'(z[l])      dW[l] = a[l-1]^T dz[l]
                       db[l] = sum_i dz[l]_i          da[l-1] = dz[l] W[l]^T

Layer l is ``model.layers[l - 1]``; a[0] is the input batch X and a[L] the network output.
Nothing in the model changes (parameters, gradients, optimizer state, RNG stream, the cached
textbook forward pass). The arrays equal those of ``model.forward(X, training=False)`` and
``model.backward(y)`` (to rounding: the block keeps IEEE semantics where the compiled engine
flushes denormals to zero).

Decisions
---------
- **Dropout is traced in inference mode** (the identity, ``mask`` is None), the pass that
  ``predict`` and ``evaluate`` see. A training-mode trace would need the engine's own mask
  stream to equal a training step, and a trace must not advance the model's RNG; an inference
  trace is deterministic, so two traces of one batch are equal.
- **BatchNorm is traced in inference mode** too, as is every layer: it normalizes with its
  running statistics (``mean``, ``var`` of the trace are ``running_mean``, ``running_var``),
  and its backward treats them as constants, as ``model.forward(X, training=False)`` and
  ``model.backward(y)`` do. The trace never changes the running statistics (the block runs on
  a detached copy of the layer); a training-mode trace would move them. LayerNorm is the
  same in both modes (per-row statistics of the batch).
- **The output layer's loss is fused with its activation**, as in the engine:
  ``dz[L]`` comes from the loss (``(p - y) / n`` for softmax + cross-entropy and sigmoid +
  binary cross-entropy), and the block's linear part takes it from there. ``da[L] = dL/da[L]``
  is still recorded: for the regression losses it is what the activation's derivative is
  applied to; for the two fused losses it is the textbook ``-y / (n a)`` (cross-entropy) or
  ``(a - y) / (n k a (1 - a))`` (binary cross-entropy), shown for reading only (infinite
  where a probability is exactly 0 or 1).

Each layer kind is one entry of ``_KINDS`` (its forward, its backward, its array names): a new
layer kind adds one entry.

``fastprop.trace`` (the package attribute) is the function; this module's other names are
imported with ``from fastprop.trace import Trace, LayerTrace``.
"""
import copy
import sys

import numpy as np

from fastprop import _validation as V, plot
from fastprop._core import _kernels, _loss as _closs
from fastprop.activations import ACTIVATIONS
from fastprop.layers import Activation, BatchNorm, Dense, Dropout, LayerNorm
from fastprop.layers._python import is_python_layer
from fastprop.losses import loss_code, prepare_sample_weight, prepare_targets

__all__ = ["trace", "Trace", "LayerTrace"]


def _frozen(arr):
    arr = np.array(arr, copy=True)
    arr.flags.writeable = False
    return arr


class LayerTrace:
    """The arrays of one layer in one traced pass, as attributes named as in the textbook.

    Attributes
    ----------
    index : int
        l, from 1: the layer is ``model.layers[l - 1]``; its input is a[l-1], its output a[l].
    kind : str
        ``"Dense"``, ``"Dropout"``, ``"Activation"``, ``"BatchNorm"`` or ``"LayerNorm"``.
    layer : Layer
        The model's layer (not modified by the trace).
    names : tuple of str
        The names of the arrays, in the order of the pass.

    Dense: ``W`` (n_in, n_out), ``b`` (n_out,) (copies of the parameters used), ``a_prev``
    (n, n_in), ``z`` (n, n_out), ``a`` (n, n_out), ``da`` (n, n_out), ``dz`` (n, n_out),
    ``dW`` (n_in, n_out), ``db`` (n_out,), ``da_prev`` (n, n_in).
    Dropout: ``a_prev``, ``mask`` (None: inference mode), ``a``, ``da``, ``da_prev``, all
    (n, width).
    Activation: ``a_prev``, ``z`` (= a_prev), ``a`` = g(z), ``da``, ``dz`` = da * g'(z) and
    ``da_prev`` (= dz), all (n, width).
    BatchNorm (inference mode: the running statistics): ``gamma``, ``beta``, ``mean``
    (running_mean), ``var`` (running_var), ``dgamma``, ``dbeta`` (width,); ``a_prev``,
    ``x_hat`` = (a_prev - mean) / sqrt(var + eps), ``a`` = gamma x_hat + beta, ``da``,
    ``da_prev`` (n, width).
    LayerNorm: ``gamma``, ``beta``, ``dgamma``, ``dbeta`` (width,); ``mean``, ``var`` (n,)
    (per row, biased variance); ``a_prev``, ``x_hat``, ``a``, ``da``, ``da_prev`` (n, width).
    Every array is a read-only copy.
    """

    def __init__(self, index, layer, kind, arrays):
        self.index = index
        self.layer = layer
        self.kind = kind
        self._arrays = {k: (None if v is None else _frozen(v)) for k, v in arrays.items()}
        self.names = tuple(self._arrays)

    def __getattr__(self, name):
        arrays = self.__dict__.get("_arrays", {})
        if name in arrays:
            return arrays[name]
        raise AttributeError(f"{type(self).__name__} of a {self.__dict__.get('kind')} layer "
                             f"has no array {name!r}; it has {', '.join(arrays)}")

    def __getitem__(self, name):
        return self._arrays[name]

    def items(self):
        """(name, array) pairs in the order of the pass (None entries included)."""
        return self._arrays.items()

    def __repr__(self):
        shapes = ", ".join(f"{k}={None if v is None else v.shape}"
                           for k, v in self._arrays.items())
        return f"LayerTrace({self.index}, {self.kind}: {shapes})"


# -- one entry per layer kind -------------------------------------------------------------------
class _DenseKind:
    names = ("W", "b", "a_prev", "z", "a", "da", "dz", "dW", "db", "da_prev")

    @staticmethod
    def detached(layer, activation=None):
        """A stand-alone copy of ``layer`` (its own W, b, dW, db): the block runs on it, so
        that the model's layer keeps its views into the model's buffers."""
        copy = Dense(layer.n_in, layer.n_out, activation=activation or layer.activation,
                     init="zeros", dtype=layer.dtype)
        copy.W, copy.b = layer.W, layer.b
        return copy

    @classmethod
    def forward(cls, layer, a_prev):
        block = cls.detached(layer)
        a, cache = block.forward(a_prev)
        return a, {"W": block.W.copy(), "b": block.b.copy(), "a_prev": cache.a_prev,
                   "z": cache.z, "a": a}, (block, cache)

    @classmethod
    def backward(cls, state, arrays, da, dz=None):
        """da_prev of the block; ``dz`` given: the output layer, whose dz the fused loss gave
        (the block's linear part takes it from there)."""
        block, cache = state
        if dz is None:
            da_prev, dW, db = block.backward(da, cache)
            # the block fuses dz = da * g'(z) into its backward; the same kernel shows it
            dz = np.empty_like(cache.z)
            _kernels.activation_backward(ACTIVATIONS[block.activation], cache.z,
                                         cache.a if cache.a is not None else arrays["a"],
                                         da, dz)
        else:
            linear = cls.detached(block, activation="identity")
            _, lin_cache = linear.forward(cache.a_prev)
            da_prev, dW, db = linear.backward(dz, lin_cache)
        arrays.update(da=da, dz=dz, dW=dW, db=db, da_prev=da_prev)
        return da_prev


class _DropoutKind:
    names = ("a_prev", "mask", "a", "da", "da_prev")

    @staticmethod
    def forward(layer, a_prev):
        # inference mode: the identity (see the module docstring)
        a, cache = layer.forward(a_prev, training=False, dtype=a_prev.dtype)
        return a, {"a_prev": a_prev, "mask": cache.mask, "a": a}, (layer, cache)

    @staticmethod
    def backward(state, arrays, da):
        layer, cache = state
        da_prev = layer.backward(da, cache)
        arrays.update(da=da, da_prev=da_prev)
        return da_prev


class _ActivationKind:
    names = ("a_prev", "z", "a", "da", "dz", "da_prev")

    @staticmethod
    def forward(layer, a_prev):
        # the layer has no parameters or state: its own forward changes nothing
        a, cache = layer.forward(a_prev, dtype=a_prev.dtype)
        return a, {"a_prev": a_prev, "z": cache.z, "a": a}, (layer, cache)

    @staticmethod
    def backward(state, arrays, da, dz=None):
        """``dz`` given: the output layer, whose dz the fused loss gave."""
        layer, cache = state
        if dz is None:
            (dz,) = layer.backward(da, cache)
        arrays.update(da=da, dz=dz, da_prev=dz)
        return dz


class _NormKind:
    """BatchNorm and LayerNorm: the block runs on a detached copy of the layer (its own gamma,
    beta, statistics and dgamma, dbeta), so the model's layer and buffers are untouched."""

    names = ("gamma", "beta", "a_prev", "mean", "var", "x_hat", "a", "da", "dgamma", "dbeta",
             "da_prev")

    @staticmethod
    def detached(layer):
        raise NotImplementedError

    @staticmethod
    def statistics(block, a_prev):
        raise NotImplementedError

    @classmethod
    def forward(cls, layer, a_prev):
        block = cls.detached(layer)
        a, cache = block.forward(a_prev, training=False)
        mean, var = cls.statistics(block, a_prev)
        return a, {"gamma": block.gamma.copy(), "beta": block.beta.copy(), "a_prev": a_prev,
                   "mean": mean, "var": var, "x_hat": cache.x_hat, "a": a}, (block, cache)

    @staticmethod
    def backward(state, arrays, da):
        block, cache = state
        da_prev, dgamma, dbeta = block.backward(da, cache)
        arrays.update(da=da, dgamma=dgamma, dbeta=dbeta, da_prev=da_prev)
        return da_prev


class _BatchNormKind(_NormKind):
    @staticmethod
    def detached(layer):
        copy = BatchNorm(layer.momentum, layer.eps, dtype=layer.dtype)
        copy.build(layer.n_in)
        copy.set_weights(layer.get_weights())
        return copy

    @staticmethod
    def statistics(block, a_prev):
        # inference mode: the running statistics normalize (see the module docstring)
        return block.running_mean.copy(), block.running_var.copy()


class _LayerNormKind(_NormKind):
    @staticmethod
    def detached(layer):
        copy = LayerNorm(layer.eps, dtype=layer.dtype)
        copy.build(layer.n_in)
        copy.set_weights(layer.get_weights())
        return copy

    @staticmethod
    def statistics(block, a_prev):
        # per row (the kernel keeps only 1/sqrt(var + eps)); biased variance, in double
        x = a_prev.astype(np.float64)
        return x.mean(axis=1).astype(a_prev.dtype), x.var(axis=1).astype(a_prev.dtype)


_KINDS = {Dense: _DenseKind, Dropout: _DropoutKind, Activation: _ActivationKind,
          BatchNorm: _BatchNormKind, LayerNorm: _LayerNormKind}


class _PythonKind:
    """A custom Python layer: its own forward (inference mode) and backward on a detached deep
    copy (so its state and the model's buffers are untouched). Arrays: a copy of each
    parameter, ``a_prev``, ``a``, ``da``, the gradient ``d<name>`` of each parameter, and
    ``da_prev``."""

    def __init__(self, layer):
        params = list(layer.param_shapes)
        self.names = tuple(params) + ("a_prev", "a", "da") + tuple("d" + p for p in params) \
            + ("da_prev",)

    @staticmethod
    def forward(layer, a_prev):
        block = copy.deepcopy(layer)
        a, cache = block.forward(a_prev.copy(), training=False)
        arrays = {name: np.array(arr) for name, arr in zip(layer.param_shapes,
                                                           block.parameters())}
        arrays.update(a_prev=a_prev, a=a)
        return a, arrays, (block, cache)

    @staticmethod
    def backward(state, arrays, da, dz=None):
        """``dz`` given: the output layer (no activation: its dz is its da)."""
        block, cache = state
        da_prev, *grads = block.backward(da.copy(), cache)
        arrays.update(da=da, da_prev=da_prev)
        arrays.update({"d" + name: g for name, g in zip(block.param_shapes, grads)})
        return da_prev


def _kind(layer):
    for cls, kind in _KINDS.items():
        if isinstance(layer, cls):
            return cls.__name__, kind
    if is_python_layer(layer):
        return type(layer).__name__, _PythonKind(layer)
    raise TypeError(f"trace does not know the layer kind {type(layer).__name__}")


def _label(name, l):
    """Textbook name of array ``name`` of layer l: z -> z[l], a_prev -> a[l-1], ..."""
    if name in ("a_prev", "da_prev"):
        return f"{name[:-5]}[{l - 1}]"
    return f"{name}[{l}]"


def _output_da(loss, z, a, y_dense, labels, w):
    """dL/da of the output layer (see the module docstring for the two fused losses)."""
    n, k = a.shape
    if loss not in ("cross_entropy", "binary_cross_entropy"):
        da = np.empty_like(a)     # a regression loss through the identity: dz = da
        _closs.loss_and_grad(loss_code(loss), ACTIVATIONS["identity"], a, a, y_dense, None, w,
                             da)
        return da
    c = np.full(n, 1.0 / n) if w is None else w.astype(np.float64) / w.sum(dtype=np.float64)
    if labels is not None:
        y_dense = np.zeros(a.shape)
        y_dense[np.arange(n), labels] = 1.0
    a64, y64 = a.astype(np.float64), y_dense.astype(np.float64)
    if loss == "cross_entropy":
        num, den = -c[:, None] * y64, a64
    else:
        num, den = c[:, None] / k * (a64 - y64), a64 * (1.0 - a64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        da = np.divide(num, den, out=np.zeros_like(num), where=num != 0)
    return da.astype(a.dtype)


def trace(model, X, y, sample_weight=None):
    """One forward and one backward pass of a batch, with every array kept; no update.

    Parameters
    ----------
    model : Sequential
    X : array_like (n_samples, n_in)
    y : array_like
        Targets, as for :meth:`Sequential.train_step`.
    sample_weight : array_like (n_samples,), optional

    Returns
    -------
    Trace
        ``trace.loss``, ``trace.layers[i]`` (a :class:`LayerTrace` for ``model.layers[i]``,
        textbook layer ``l = i + 1``), ``trace.summary()``, ``trace.plot_blocks()``,
        ``trace.plot_graph()``.

    Nothing in the model changes: parameters, gradients, optimizer state, RNG state and the
    cached :meth:`Sequential.forward` pass are as before. Every layer is traced in inference
    mode: Dropout is the identity, BatchNorm uses (and keeps) its running statistics. Bad arguments raise the errors of :meth:`Sequential.train_step`
    (ValueError / TypeError naming the argument).

    Examples
    --------
    >>> import numpy as np, fastprop as fp
    >>> model = fp.Sequential([fp.Dense(4, 8, activation="relu", seed=0),
    ...                        fp.Dense(8, 3, activation="softmax", seed=1)], seed=0)
    >>> X = np.random.default_rng(0).standard_normal((16, 4)); y = np.arange(16) % 3
    >>> tr = fp.trace(model, X, y)
    >>> tr.layers[0].z.shape, tr.layers[1].dW.shape, tr.layers[1].da_prev.shape
    ((16, 8), (8, 3), (16, 8))
    """
    from fastprop.model import Sequential
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a fastprop Sequential, got {type(model).__name__}")
    dtype = model.dtype
    X = V.as_array(X, "X", dtype, ndim=2, width=model.n_in, width_name="the model's n_in")
    n = X.shape[0]
    y_dense, labels = prepare_targets(model.loss, y, n, model.n_out, dtype)
    w = prepare_sample_weight(sample_weight, n, dtype)

    kinds = [_kind(layer) for layer in model.layers]
    records, states = [], []
    a = X
    for (kind_name, kind), layer in zip(kinds, model.layers):
        a, arrays, state = kind.forward(layer, a)
        records.append(arrays)
        states.append(state)

    out = records[-1]        # the last layer is Dense, Activation or a Python layer
    z = out.get("z", out["a"])      # a Python layer's output has no activation
    dz = np.empty_like(z)
    loss = _closs.loss_and_grad(loss_code(model.loss),
                                ACTIVATIONS[getattr(model.layers[-1], "activation",
                                                    "identity")], z, out["a"],
                                y_dense, labels, w, dz)
    da = _output_da(model.loss, z, out["a"], y_dense, labels, w)
    da = kinds[-1][1].backward(states[-1], out, da, dz)
    for i in range(len(records) - 2, -1, -1):
        da = kinds[i][1].backward(states[i], records[i], da)

    layers = [LayerTrace(i + 1, layer, kind_name,
                         {name: arrays.get(name) for name in kind.names})
              for i, ((kind_name, kind), layer, arrays)
              in enumerate(zip(kinds, model.layers, records))]
    return Trace(model, float(loss), layers, y_dense, labels, w)


class Trace:
    """Every array of one traced forward and backward pass (see :func:`trace`).

    Attributes
    ----------
    loss : float
        The batch loss (weighted mean when sample weights were given).
    loss_name : str
        The model's loss.
    layers : list of LayerTrace
        ``layers[i]`` is textbook layer ``l = i + 1`` (``model.layers[i]``).
    X : ndarray (n_samples, n_in)
        a[0], the batch as the model's dtype.
    n_samples : int
    dtype : numpy.dtype
    lr : float or None
        The optimizer's learning rate when the trace was taken (for the health ratio).
    """

    def __init__(self, model, loss, layers, y_dense, labels, w):
        self.loss = loss
        self.loss_name = model.loss
        self.layers = layers
        self.X = layers[0].a_prev
        self.n_samples = self.X.shape[0]
        self.dtype = model.dtype
        lr = getattr(model.optimizer, "lr", None)
        self.lr = float(lr) if isinstance(lr, (int, float, np.floating)) else None
        self.labels = None if labels is None else _frozen(labels)
        self.y = None if y_dense is None else _frozen(y_dense)
        self.sample_weight = None if w is None else _frozen(w)

    @property
    def output(self):
        """a[L], the network output (n_samples, n_out)."""
        return self.layers[-1].a

    def __repr__(self):
        kinds = ", ".join(t.kind for t in self.layers)
        return (f"Trace(loss={self.loss:.6g} ({self.loss_name}), n_samples={self.n_samples}, "
                f"layers=[{kinds}], dtype={self.dtype.name!r})")

    # -- numbers ---------------------------------------------------------------------------------
    def health(self):
        """Per Dense layer: the update ratio ``|lr * dW| / |W|`` (Frobenius norms; ~1e-3 is
        the classic healthy value, much smaller: vanishing, near 1: exploding) and the dead
        units (columns of ``a`` that are 0 for every sample of the batch, e.g. dead ReLUs).

        Returns
        -------
        list of dict
            One per Dense layer: ``index``, ``update_ratio`` (None without a learning rate),
            ``zero_fraction`` (fraction of entries of ``a`` that are exactly 0),
            ``dead_units`` (count), ``units``.
        """
        out = []
        for t in self.layers:
            if t.kind != "Dense":
                continue
            nw = float(np.linalg.norm(t.W))
            ratio = None
            if self.lr is not None:
                ratio = abs(self.lr) * float(np.linalg.norm(t.dW)) / nw if nw > 0 else np.inf
            dead = int(np.count_nonzero(np.all(t.a == 0, axis=0)))
            out.append({"index": t.index, "update_ratio": ratio,
                        "zero_fraction": float(np.mean(t.a == 0)), "dead_units": dead,
                        "units": t.a.shape[1]})
        return out

    def summary(self, file=None):
        """Print a table of every array (layer, array, shape, mean, std, min, max, norm) and,
        per Dense layer, the update ratio ``|lr * dW| / |W|`` and the fraction of zero and dead
        units; return the text.

        Parameters
        ----------
        file : file-like, optional
            Where to print (default ``sys.stdout``).
        """
        rows = [("layer", "array", "shape", "mean", "std", "min", "max", "norm")]
        health = {h["index"]: h for h in self.health()}
        notes = []
        for t in self.layers:
            head = f"{t.index} {t.kind}"
            if t.kind in ("Dense", "Activation"):
                head += f" {t.layer.activation}"
            for name, arr in t.items():
                label = _label(name, t.index)
                label = f"{name} = {label}" if name.endswith("_prev") else label
                if arr is None:
                    rows.append((head, label, "none", "", "", "", "", ""))
                else:
                    x = arr.astype(np.float64)
                    with np.errstate(invalid="ignore", over="ignore"):
                        stats = (x.mean(), x.std(), x.min(), x.max(), np.linalg.norm(x))
                    rows.append((head, label, str(arr.shape))
                                + tuple(f"{v:.4g}" for v in stats))
                head = ""
            h = health.get(t.index)
            if h is not None:
                ratio = "-" if h["update_ratio"] is None else f"{h['update_ratio']:.3g}"
                notes.append(f"layer {t.index}: |lr*dW|/|W| = {ratio}, zeros in a[{t.index}] "
                             f"{100 * h['zero_fraction']:.1f}%, dead units "
                             f"{h['dead_units']} of {h['units']}")
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        fmt = lambda r: "  ".join(v.ljust(w) if c < 3 else v.rjust(w)
                                  for c, (v, w) in enumerate(zip(r, widths))).rstrip()
        rule = "  ".join("-" * w for w in widths)
        lr = "" if self.lr is None else f", lr {self.lr:g}"
        text = "\n".join(
            [f"Trace: {len(self.layers)} layers, batch of {self.n_samples}, {self.dtype.name}, "
             f"loss ({self.loss_name}) {self.loss:.6g}{lr}", fmt(rows[0]), rule]
            + [fmt(r) for r in rows[1:]] + [rule] + notes)
        print(text, file=file if file is not None else sys.stdout)
        return text

    # -- pictures --------------------------------------------------------------------------------
    def plot_blocks(self, path=None):
        """The block picture of this pass (needs matplotlib: ``pip install fastprop[plot]``).

        Forward boxes along the top (W[l], b[l] shapes, activation), arrows a[0] -> ... -> a[L]
        -> loss labelled with shape and norm; the caches dropping to the backward boxes along
        the bottom, arrows da[L] -> ... -> da[0]; dW[l], db[l] leaving each backward box to the
        update. Arrow widths scale with the norm within each direction, so a vanishing
        gradient shows as a thin arrow. More than 8 layers: the middle ones are folded.

        Parameters
        ----------
        path : str or path-like, optional
            Write the figure there (format from the suffix: .png, .svg, .pdf); its directory
            must exist. The file is written whole or not at all.

        Returns
        -------
        matplotlib.figure.Figure
        """
        return plot.plot_blocks(self, path)

    def plot_graph(self, path=None, sample=0):
        """The computational graph of one sample at the operation level (matmul, add bias,
        activation, loss): each value node shows its forward value and, in the second colour,
        its gradient; layers wider than 6 units are summarized as vector nodes (needs
        matplotlib).

        Parameters
        ----------
        path : str or path-like, optional
            As for :meth:`plot_blocks`.
        sample : int, default 0
            Row of the batch, in [0, n_samples).

        Returns
        -------
        matplotlib.figure.Figure
        """
        return plot.plot_trace_graph(self, path, sample)


plot._TRACE_TYPES.append(Trace)
