"""Reference layers in plain NumPy: one twin per layer kind of ``fastprop``'s registry.

Each twin has the block's signatures, ``forward(a_prev, training=False) -> (a, cache)`` and
``backward(da, cache) -> (da_prev, *grads)`` (grads in the order the compiled layer declares its
parameters), and is registered under the name of the kind it mirrors (``fastprop.LAYERS``), so
that :func:`layer_from` and :meth:`ReferenceModel.from_model` find it. A new kind adds one class
decorated with :func:`register_reference_layer`. Nothing here imports fastprop's compiled code:
a fastprop layer is read through its public attributes only (``W``, ``b``, ``activation``,
``rate``, ``trainable``, ``l1``, ``l2``). Every twin has a ``trainable`` flag (a frozen layer:
:class:`~fastprop.reference.ReferenceModel` does not update its parameters).
"""
import copy
from collections import namedtuple

import numpy as np

from fastprop.reference._dense import (DenseCache, activation_backward, activation_forward,
                                       dense_backward, dense_forward)

__all__ = ["REFERENCE_LAYERS", "register_reference_layer", "layer_from", "dropout_mask",
           "Dense", "Dropout", "Activation", "DenseCache", "DropoutCache", "ActivationCache",
           "PythonLayer", "PythonCache"]

#: kind name (the name of ``fastprop``'s registry) -> reference layer class
REFERENCE_LAYERS = {}

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def register_reference_layer(cls):
    """Register a reference layer class under its ``kind`` (the fastprop kind it mirrors);
    usable as a decorator. ValueError if another class has that kind already."""
    kind = getattr(cls, "kind", None)
    if not isinstance(kind, str) or not kind:
        raise TypeError(f"a reference layer class needs a 'kind' name, got {cls!r}")
    if REFERENCE_LAYERS.get(kind, cls) is not cls:
        raise ValueError(f"a different reference layer is already registered as {kind!r}")
    REFERENCE_LAYERS[kind] = cls
    return cls


def _twin_class(layer):
    """The reference class of ``layer``: its class's name or the nearest base so named."""
    for cls in type(layer).__mro__:
        twin = REFERENCE_LAYERS.get(cls.__name__)
        if twin is not None:
            return twin
    return None


def layer_from(layer):
    """The reference twin of a fastprop layer (same parameters, copied; same settings).

    Parameters
    ----------
    layer : fastprop layer
        An object of a registered kind (a subclass maps to the kind it derives from).

    Returns
    -------
    reference layer

    Raises
    ------
    TypeError
        No reference layer mirrors the kind of ``layer`` (a custom Python layer, one that
        defines ``forward`` and ``backward`` itself, is its own twin: :class:`PythonLayer`).
    """
    twin = _twin_class(layer)
    if twin is None and _is_python_layer(layer):
        return PythonLayer(layer)
    if twin is None:
        raise TypeError(f"the reference has no twin for the layer kind {type(layer).__name__} "
                        f"(registered: {', '.join(sorted(REFERENCE_LAYERS))})")
    return twin.from_layer(layer)


def dropout_mask(shape, rate, state, dtype=np.float64):
    """The mask fastprop's compiled dropout draws, reproduced in NumPy.

    The compiled kernel draws one uniform ``u`` per entry in row-major order from a splitmix64
    stream (53-bit doubles) and sets ``mask = (u >= rate) / (1 - rate)`` (the scale rounded to
    ``dtype``).

    Parameters
    ----------
    shape : tuple of int
        (n_samples, width).
    rate : float in [0, 1)
    state : ndarray (1,) of uint64
        The stream's state (a model's ``get_rng_state()``; a standalone layer's own); advanced
        in place by one step per entry, as the compiled generator does.
    dtype : numpy dtype

    Returns
    -------
    mask : ndarray ``shape`` of ``dtype``
    """
    n = int(np.prod(shape))
    with np.errstate(over="ignore"):
        z = state[0] + _GOLDEN * np.arange(1, n + 1, dtype=np.uint64)
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
        state[0] = state[0] + _GOLDEN * np.uint64(n)
    u = (z >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
    dtype = np.dtype(dtype)
    scale = dtype.type(1.0 / (1.0 - rate))
    return np.where(u >= rate, scale, dtype.type(0)).astype(dtype).reshape(shape)


DropoutCache = namedtuple("DropoutCache", "mask")
DropoutCache.__doc__ = "The mask (n, width) of one training forward call; None in inference."
ActivationCache = namedtuple("ActivationCache", "z a activation")
ActivationCache.__doc__ = "The input ``z`` and output ``a = g(z)`` (n, width), the name."


@register_reference_layer
class Dense:
    """Reference fully connected layer: ``z = a_prev @ W + b``, ``a = g(z)``.

    Parameters
    ----------
    W : ndarray (n_in, n_out)
    b : ndarray (n_out,)
    activation : str, default "identity"
        A canonical activation name.
    l1, l2 : float, default 0.0
        Weight penalty ``l1 * sum|W| + l2 * sum W**2`` (see :meth:`penalty`), which
        :class:`~fastprop.reference.ReferenceModel` adds to its loss.
    trainable : bool, default True
    """

    kind = "Dense"
    param_names = ("W", "b")

    def __init__(self, W, b, activation="identity", l1=0.0, l2=0.0, trainable=True):
        self.W, self.b, self.activation = W, b, activation
        self.l1, self.l2, self.trainable = float(l1), float(l2), bool(trainable)

    @classmethod
    def from_layer(cls, layer):
        """Twin of a fastprop ``Dense`` (its W and b copied; penalty, trainable)."""
        return cls(np.array(layer.W), np.array(layer.b), layer.activation,
                   getattr(layer, "l1", 0.0), getattr(layer, "l2", 0.0),
                   getattr(layer, "trainable", True))

    def penalty(self):
        """Return ``(loss, dW)``: ``l1 * sum|W| + l2 * sum W**2`` (float64) and its gradient
        ``l1 * sign(W) + 2 * l2 * W`` (the dtype of W)."""
        W = np.asarray(self.W, dtype=np.float64)
        loss = self.l1 * np.abs(W).sum() + self.l2 * (W * W).sum()
        return float(loss), (self.l1 * np.sign(W) + 2 * self.l2 * W).astype(self.W.dtype)

    def forward(self, a_prev, training=False):
        """Return ``(a, cache)``: ``a = g(a_prev @ W + b)`` (n, n_out); ``training`` unused."""
        return dense_forward(a_prev, self.W, self.b, self.activation)

    def backward(self, da, cache, need_da_prev=True):
        """Return ``(da_prev, dW, db)``: ``dz = da * g'(z)``, ``dW = a_prev.T @ dz`` (n_in,
        n_out), ``db = dz.sum(0)`` (n_out,), ``da_prev = dz @ W.T`` (n, n_in; None when not
        ``need_da_prev``)."""
        return dense_backward(da, cache, need_da_prev)


@register_reference_layer
class Dropout:
    """Reference inverted dropout: ``a = a_prev * mask`` in training, the identity otherwise.

    The mask is the one given to :meth:`forward`, else drawn by :func:`dropout_mask` from
    ``state`` (the same draw as the compiled layer from the same generator state).

    Parameters
    ----------
    rate : float in [0, 1)
    state : ndarray (1,) of uint64, optional
        The splitmix64 state to draw masks from (advanced in place; several twins may share
        one array, as a model's Dropout layers share its stream). Without it a training
        forward call needs an explicit ``mask``.
    """

    kind = "Dropout"
    param_names = ()

    def __init__(self, rate, state=None):
        self.rate = float(rate)
        self.state = state

    @classmethod
    def from_layer(cls, layer):
        """Twin of a fastprop ``Dropout``, drawing from a copy of the standalone layer's
        generator state (a model's twin shares the model's state instead)."""
        state = getattr(layer, "_state", None)
        return cls(layer.rate, None if state is None else np.array(state, dtype=np.uint64))

    def forward(self, a_prev, training=False, mask=None):
        """Return ``(a, cache)``; in training ``a = a_prev * mask`` (mask (n, width), given or
        drawn), otherwise ``a = a_prev``. A rate of 0 draws nothing (as the compiled tape)."""
        if not training or (self.rate == 0 and mask is None):
            return a_prev, DropoutCache(None)
        if mask is None:
            if self.state is None:
                raise ValueError("a training forward call of a reference Dropout without a "
                                 "generator state needs mask")
            mask = dropout_mask(a_prev.shape, self.rate, self.state, a_prev.dtype)
        return a_prev * mask, DropoutCache(mask)

    def backward(self, da, cache):
        """Return ``(da_prev,)``: ``da * mask`` (training), ``da`` (inference)."""
        return (da if cache.mask is None else da * cache.mask,)


@register_reference_layer
class Activation:
    """Reference activation layer: ``a = g(a_prev)`` (softmax row-wise).

    Parameters
    ----------
    activation : str
        A canonical activation name.
    """

    kind = "Activation"
    param_names = ()

    def __init__(self, activation):
        self.activation = activation

    @classmethod
    def from_layer(cls, layer):
        """Twin of a fastprop ``Activation``."""
        return cls(layer.activation)

    def forward(self, a_prev, training=False):
        """Return ``(a, cache)`` with ``a = g(a_prev)`` (n, width); ``training`` unused."""
        a = activation_forward(self.activation, a_prev)
        return a, ActivationCache(a_prev, a, self.activation)

    def backward(self, da, cache):
        """Return ``(da_prev,)``: ``da * g'(z)`` (softmax: the Jacobian-vector product)."""
        return (activation_backward(cache.activation, cache.z, cache.a, da),)


def _is_python_layer(layer):
    """``layer``'s forward and backward are defined outside fastprop (read from the class
    dictionaries: nothing of fastprop is imported): a user's Python layer. fastprop's own
    kinds each have a twin of their own."""
    for name in ("forward", "backward"):
        owner = next((c for c in type(layer).__mro__ if name in vars(c)), None)
        if owner is None or owner.__module__.split(".")[0] == "fastprop":
            return False
    return True


PythonCache = namedtuple("PythonCache", "z a activation inner")
PythonCache.__doc__ = ("A custom layer's cache (``inner``) with its output ``a`` (= ``z``: no "
                       "activation follows inside the layer), read when it is the output layer.")


class PythonLayer:
    """The twin of a custom Python layer is the layer itself: its own ``forward`` /
    ``backward`` on a shallow copy whose parameters are the reference model's arrays and whose
    state buffers are copies (the model's stay untouched).

    Parameters
    ----------
    layer : fastprop.Layer
        A subclass that defines ``forward`` and ``backward``.
    """

    kind = None        # not in the registry: layer_from falls back to it

    def __init__(self, layer):
        inner = copy.copy(layer)
        names = list(layer.param_shapes)
        for name in names + list(layer.state_shapes):
            object.__setattr__(inner, "_" + name, np.array(layer.__dict__["_" + name]))
        object.__setattr__(self, "layer", inner)
        object.__setattr__(self, "param_names", tuple(names))

    @classmethod
    def from_layer(cls, layer):
        return cls(layer)

    def __getattr__(self, name):
        if name in self.__dict__.get("param_names", ()):
            return self.__dict__["layer"].__dict__["_" + name]
        raise AttributeError(name)

    def __setattr__(self, name, value):
        if name in self.__dict__.get("param_names", ()):      # ReferenceModel's flat views
            object.__setattr__(self.layer, "_" + name, value)
        else:
            object.__setattr__(self, name, value)

    def forward(self, a_prev, training=False):
        """The layer's ``forward`` on a copy of ``a_prev``; the cache is a :class:`PythonCache`."""
        a, inner = self.layer.forward(np.array(a_prev), training=training)
        return a, PythonCache(a, a, "identity", inner)

    def backward(self, da, cache):
        """The layer's ``backward``: ``(da_prev, *grads)``."""
        return tuple(self.layer.backward(np.array(da), cache.inner))
