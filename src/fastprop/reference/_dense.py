"""Reference activations and the dense block in plain NumPy."""
from collections import namedtuple

import numpy as np
from scipy.special import erfc

__all__ = [
    "activation_forward",
    "activation_backward",
    "dense_forward",
    "dense_backward",
    "DenseCache",
    "sigmoid",
    "softmax",
]

LEAKY_SLOPE = 0.01
SOFTPLUS_THRESHOLD = 20.0


def sigmoid(z):
    """1 / (1 + exp(-z)), computed from exp(-|z|) so that nothing overflows."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e)).astype(z.dtype, copy=False)


def softmax(z):
    """Row-wise softmax, shifted by the row maximum."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def activation_forward(name, z):
    """a = g(z) for activation ``name`` (a canonical name, see fastprop.activations)."""
    if name == "identity":
        return z.copy()
    if name == "relu":
        return np.where(z > 0, z, 0).astype(z.dtype)
    if name == "leaky_relu":
        return np.where(z > 0, z, LEAKY_SLOPE * z).astype(z.dtype)
    if name == "elu":
        return np.where(z > 0, z, np.expm1(np.minimum(z, 0))).astype(z.dtype)
    if name == "gelu":
        return (0.5 * z * erfc(-z / np.sqrt(2))).astype(z.dtype)  # z * Phi(z)
    if name == "sigmoid":
        return sigmoid(z)
    if name == "tanh":
        return np.tanh(z)
    if name == "softplus":
        small = np.log1p(np.exp(np.minimum(z, SOFTPLUS_THRESHOLD)))
        return np.where(z > SOFTPLUS_THRESHOLD, z, small).astype(z.dtype)
    if name == "silu":
        return z * sigmoid(z)
    if name == "softmax":
        return softmax(z)
    raise ValueError(f"unknown activation {name!r}")


def activation_backward(name, z, a, da):
    """dz = da * g'(z) (for softmax, the row-wise Jacobian-vector product); a = g(z)."""
    one = z.dtype.type(1)
    if name == "identity":
        return da.copy()
    if name == "relu":
        return np.where(z > 0, da, 0).astype(z.dtype)
    if name == "leaky_relu":
        return np.where(z > 0, da, LEAKY_SLOPE * da).astype(z.dtype)
    if name == "elu":
        return np.where(z > 0, da, da * np.exp(np.minimum(z, 0))).astype(z.dtype)
    if name == "gelu":
        cdf = 0.5 * erfc(-z / np.sqrt(2))
        pdf = np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
        return (da * (cdf + z * pdf)).astype(z.dtype)
    if name == "sigmoid":
        return da * a * (one - a)
    if name == "tanh":
        return da * (one - a * a)
    if name == "softplus":
        return np.where(z > SOFTPLUS_THRESHOLD, da, da * sigmoid(z)).astype(z.dtype)
    if name == "silu":
        s = sigmoid(z)
        return da * s * (one + z * (one - s))
    if name == "softmax":
        return a * (da - (da * a).sum(axis=1, keepdims=True))
    raise ValueError(f"unknown activation {name!r}")


DenseCache = namedtuple("DenseCache", "a_prev W z a activation")
DenseCache.__doc__ = """What :func:`dense_backward` needs from one :func:`dense_forward` call:
``a_prev`` (n, n_in), ``W`` (n_in, n_out), ``z`` and ``a = g(z)`` (n, n_out), the activation
name. ``cache._replace(activation="identity")`` makes backward take ``da`` as ``dz``."""


def dense_forward(a_prev, W, b, activation):
    """The textbook block's forward: return ``(a, cache)`` with ``z = a_prev @ W + b`` and
    ``a = g(z)`` (the signature and return order of ``fastprop.Dense.forward``)."""
    z = a_prev @ W + b
    a = activation_forward(activation, z)
    return a, DenseCache(a_prev, W, z, a, activation)


def dense_backward(da, cache, need_da_prev=True):
    """The textbook block's backward: return ``(da_prev, dW, db)`` (``da_prev`` None if not
    needed), the return order of ``fastprop.Dense.backward``; ``dz = da * g'(z)``."""
    dz = activation_backward(cache.activation, cache.z, cache.a, da)
    dW = cache.a_prev.T @ dz
    db = dz.sum(axis=0)
    da_prev = dz @ cache.W.T if need_da_prev else None
    return da_prev, dW, db
