"""Python layers inside a compiled model: the layers the compiled tape has no node kind for.

A :class:`~fastprop.Layer` subclass that defines its own ``forward`` and ``backward`` (NumPy in,
NumPy out) and derives from no compiled kind runs as a ``NODE_PYTHON`` node: the engine runs
the compiled nodes around it and, at its node, takes the GIL and calls :class:`PythonNodes`,
which calls the layer and checks every result before the engine copies it into its workspace.

What a Python layer is given and may do:

* ``forward(a_prev, training)`` gets a fresh copy of its input (it may keep it, e.g. as its
  cache) and returns ``(a, cache)``; ``backward(da, cache)`` gets a fresh copy of its output's
  delta and returns ``(da_prev, *grads)``, grads in ``add_param`` order.
* Every returned array must be a NumPy array of the model's dtype (no silent cast: a float64
  result in a float32 model is a ``TypeError`` naming the layer), of the expected shape
  (``a`` (n, n_out), ``da_prev`` (n, n_in), each grad its parameter's shape) and finite
  (``ValueError``). The checks run on every call.
* ``self.<param>`` / ``self.<state>`` are views into the model's ``params`` / ``state``: the
  layer may write them in place (rebinding them raises ``AttributeError``).

A training call that fails (an error raised by the layer's code, unchanged, or by a check, or
a step the engine refuses) changes nothing: the engine stops its loops, the optimizer never
runs, dropout's stream and the running statistics are kept, and :meth:`PythonNodes.__call__`
restores the Python layers' parameters and state from the copy it took before the first
Python call of the step.
"""
import copy

import numpy as np

from fastprop import _validation as V
from fastprop._numdiff import block_error
from fastprop.layers._base import Layer

__all__ = ["is_python_layer", "build_python_layer", "python_widths", "PythonNodes",
           "gradcheck_layer"]

# the engine's phases of a Python node's call (_core._engine.PY_*; the values are the
# engine's, read there, and repeated here only as names)
_FORWARD, _BACKWARD, _PREDICT, _UNDO = 0, 1, 2, 3


def is_python_layer(layer):
    """Whether ``layer``'s class defines both ``forward`` and ``backward`` itself (not
    :class:`Layer`'s): it can run as a Python node."""
    cls = type(layer)
    return cls.forward is not Layer.forward and cls.backward is not Layer.backward


def python_widths(layer):
    """``(n_in, n_out)`` of a Python layer a model built, or None (not built yet)."""
    return layer.__dict__.get("_python_widths")


def build_python_layer(layer, n_in, where):
    """Call ``layer.build(n_in)`` once and record the widths; return ``n_out``.

    A layer built before (by a model) must get the same ``n_in``. ``build`` must return the
    output width, an int >= 1. ValueError / TypeError name ``where`` (e.g. ``layers[1]``)."""
    name = f"{where} ({type(layer).__name__})"
    widths = python_widths(layer)
    if widths is not None:
        if n_in != widths[0]:
            raise ValueError(f"{name} was built for inputs of width {widths[0]}, got width "
                             f"{n_in}")
        return widths[1]
    try:
        n_out = layer.build(n_in)
    except ValueError as e:
        if "already declares" not in str(e):
            raise
        raise ValueError(f"{name} was built outside a model ({e}): give the model an unbuilt "
                         f"layer, it calls build(n_in) itself") from None
    if n_out is None:
        raise TypeError(f"{name}.build(n_in) must return the output width (an int), got None")
    n_out = V.check_size(n_out, f"the output width {name}.build returned")
    object.__setattr__(layer, "_python_widths", (int(n_in), n_out))
    return n_out


def _where(index, layer):
    return f"layers[{index}] ({type(layer).__name__})"


def _checked(value, what, shape, dtype):
    """``value`` as a C-contiguous array after checking it is an ndarray of ``dtype`` and
    ``shape`` with finite values; ``what`` names it in the errors."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{what} must be a NumPy array, got {type(value).__name__}")
    if value.dtype != dtype:
        raise TypeError(f"{what} has dtype {value.dtype}, but the model's dtype is "
                        f"{dtype.name} (return arrays of the model's dtype, e.g. "
                        f"x.astype(a_prev.dtype))")
    if value.shape != shape:
        raise ValueError(f"{what} has shape {value.shape}, expected {shape}")
    value = np.ascontiguousarray(value)
    if not value.flags.aligned:
        value = value.copy()
    if not V.all_finite(value):           # one compiled pass, no temporary
        raise ValueError(f"{what} contains NaN or infinity")
    return value


class PythonNodes:
    """The runner the engine calls at the Python nodes of one model's tape.

    Parameters
    ----------
    entries : list of (node index, layer index, layer, n_in, n_out, grads)
        One per Python node; ``grads`` the layer's gradient views into the model's ``grads``
        (add_param order).
    dtype : numpy.dtype
        The model's dtype.
    hold : callable, optional
        ``hold(model)`` returns the arrays a training step reads through pointers besides the
        model's buffers (the optimizer's state): held from the first Python call of a step
        until the next, so that the layer's code cannot free them under the running step (by
        replacing the optimizer, say). ``owner`` (a weak reference to the model; the model
        re-points it when it takes over another's internals, as unpickling does) gives it.
    """

    def __init__(self, entries, dtype, hold=None, owner=None):
        self.nodes = {e[0]: e[1:] for e in entries}
        self.first = min(self.nodes)
        self.dtype = np.dtype(dtype)
        self.caches = {}
        self.saved = None
        self.hold, self.held, self.owner = hold, None, owner
        # what a failed training call restores: the Python layers' parameters and state
        self.arrays = [arr for e in entries for arr in e[2].parameters() + e[2].states()]

    def __call__(self, i, phase, x, training):
        """The engine's call at node ``i``: returns the array the engine copies (``a``;
        ``da_prev``, written only when a node before needs it), or None."""
        if phase == _UNDO:
            if self.saved is not None:
                for arr, old in zip(self.arrays, self.saved):
                    arr[...] = old
                self.saved = None
            return None
        index, layer, n_in, n_out, grads = self.nodes[i]
        where = _where(index, layer)
        n = x.shape[0]
        if phase == _BACKWARD:
            return self._backward(i, layer, where, x, n, n_in, grads)
        if phase == _FORWARD and i == self.first:
            self.saved = [arr.copy() for arr in self.arrays]
            model = self.owner() if self.owner is not None else None
            if self.hold is not None and model is not None:
                self.held = self.hold(model)
        out = layer.forward(x, training=bool(training))
        if not isinstance(out, tuple) or len(out) != 2:
            raise TypeError(f"{where}.forward must return a tuple (a, cache), got "
                            f"{_describe(out)}")
        a = _checked(out[0], f"{where}.forward's a", (n, n_out), self.dtype)
        if phase == _FORWARD:
            self.caches[i] = out[1]
        return a

    def _backward(self, i, layer, where, da, n, n_in, grads):
        if i not in self.caches:
            raise ValueError(f"{where}: no forward pass is cached for its backward")
        out = layer.backward(da, self.caches[i])
        if not isinstance(out, (tuple, list)) or len(out) != 1 + len(grads):
            names = ", ".join(["da_prev"] + [f"d{n}" for n in layer.param_shapes])
            raise TypeError(f"{where}.backward must return a tuple ({names}): da_prev then "
                            f"one gradient per parameter in add_param order, got "
                            f"{_describe(out)}")
        da_prev = _checked(out[0], f"{where}.backward's da_prev", (n, n_in), self.dtype)
        checked = [_checked(g, f"{where}.backward's gradient of {name!r}", view.shape,
                            self.dtype)
                   for g, view, name in zip(out[1:], grads, layer.param_shapes)]
        for view, g in zip(grads, checked):
            view[...] = g
        return da_prev


def _describe(value):
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} items"
    return type(value).__name__


def gradcheck_layer(layer, X, eps, max_params, seed):
    """``fastprop.gradcheck`` of a layer alone (arguments checked there but ``X``).

    A float64 deep copy of ``layer`` (built for ``X``'s width when it is a Python layer not
    built yet) and a fixed random ``R`` of the output's shape define ``L = sum(a * R)``;
    ``backward(R, cache)`` must give its gradients: every parameter block and ``da_prev``
    are compared with central differences. Returns the largest relative error."""
    X = V.as_array(X, "X", np.float64, ndim=2, copy=True)
    c = copy.deepcopy(layer)
    object.__setattr__(c, "_owner", None)
    if is_python_layer(c) and python_widths(c) is None and not c.param_shapes:
        build_python_layer(c, X.shape[1], "layer")
    names = list(c.param_shapes)
    for name in names + list(c.state_shapes):
        object.__setattr__(c, "_" + name, np.array(c.__dict__["_" + name], dtype=np.float64))
    rng = np.random.default_rng(seed)
    a, cache = c.forward(X.copy(), training=False)
    R = rng.standard_normal(np.shape(a))
    out = c.backward(R.copy(), cache)
    if not isinstance(out, (tuple, list)) or len(out) != 1 + len(names):
        raise TypeError(f"{type(layer).__name__}.backward must return (da_prev, *grads), "
                        f"{1 + len(names)} arrays, got {_describe(out)}")
    blocks = [(c.__dict__["_" + n], np.asarray(g, dtype=np.float64))
              for n, g in zip(names, out[1:])]
    blocks.append((X, np.asarray(out[0], dtype=np.float64)))

    def loss():
        return float(np.sum(np.asarray(c.forward(X.copy(), training=False)[0]) * R))

    worst = 0.0
    for arr, g in blocks:
        flat, gflat = arr.reshape(-1), g.reshape(-1)
        if gflat.size != flat.size:
            raise ValueError(f"{type(layer).__name__}.backward gave a gradient of {gflat.size} "
                             f"values for an array of {flat.size}")
        worst = max(worst, block_error(flat, gflat, loss, eps, max_params, rng))
    return worst
