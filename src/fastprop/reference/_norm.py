"""Reference BatchNorm1d and LayerNorm in plain NumPy (PyTorch semantics), written as the
textbook chain rule: an independent twin of the compiled kernels of ``csrc/fp_norm.h``.

Every function computes in float64 and returns arrays of the input's dtype.
"""
from collections import namedtuple

import numpy as np

from fastprop.reference._layers import register_reference_layer

__all__ = ["NormCache", "batchnorm_forward", "batchnorm_backward", "layernorm_forward",
           "layernorm_backward", "BatchNorm", "LayerNorm"]

#: What the backward passes read: the input ``x`` (float64), the mean and biased variance it
#: was normalized with (per feature for BatchNorm, per row (n, 1) for LayerNorm), ``eps``,
#: whether the statistics came from the batch (``training``) and the output dtype.
NormCache = namedtuple("NormCache", "x mean var eps training dtype")


def batchnorm_forward(x, gamma, beta, running_mean, running_var, momentum=0.1, eps=1e-5,
                      training=False):
    """``torch.nn.BatchNorm1d`` forward on a batch ``x`` (n, w).

    Training: ``y = (x - mean) / sqrt(var + eps) * gamma + beta`` with the batch mean and the
    biased batch variance, and the running statistics become ``(1 - momentum) * running +
    momentum * batch`` (the variance unbiased, ``* n / (n - 1)``). Otherwise the running
    statistics normalize and stay as they are.

    Returns
    -------
    y : ndarray (n, w)
    cache : NormCache
    running : (running_mean, running_var), new arrays (w,)
    """
    dtype = np.asarray(x).dtype
    x64 = np.asarray(x, dtype=np.float64)
    rm = np.asarray(running_mean, dtype=np.float64)
    rv = np.asarray(running_var, dtype=np.float64)
    if training:
        n = x64.shape[0]
        mean = x64.mean(axis=0)
        var = ((x64 - mean) ** 2).mean(axis=0)
        rm = (1 - momentum) * rm + momentum * mean
        rv = (1 - momentum) * rv + momentum * var * n / (n - 1)
    else:
        mean, var = rm, rv
    y = (x64 - mean) / np.sqrt(var + eps) * np.asarray(gamma, np.float64) \
        + np.asarray(beta, np.float64)
    cache = NormCache(x64, mean, var, eps, bool(training), dtype)
    return y.astype(dtype), cache, (rm.astype(dtype), rv.astype(dtype))


def _through_stats(dxhat, xc, var, eps, axis):
    """dx of ``x_hat = (x - mean(x)) / sqrt(var(x) + eps)`` given ``dxhat``, with mean and
    biased variance taken along ``axis`` (the chain rule through both statistics)."""
    m = xc.shape[axis]
    inv = 1.0 / np.sqrt(var + eps)
    dvar = np.sum(dxhat * xc * -0.5 * inv ** 3, axis=axis, keepdims=True)
    dmean = np.sum(-dxhat * inv, axis=axis, keepdims=True) \
        + dvar * np.mean(-2.0 * xc, axis=axis, keepdims=True)
    return dxhat * inv + dvar * 2.0 * xc / m + dmean / m


def batchnorm_backward(dy, gamma, cache):
    """Gradients of :func:`batchnorm_forward`: ``(dx, dgamma, dbeta)``. In training mode the
    batch statistics depend on ``x``; in evaluation mode the running ones are constants."""
    dy = np.asarray(dy, dtype=np.float64)
    xc = cache.x - cache.mean
    x_hat = xc / np.sqrt(cache.var + cache.eps)
    dxhat = dy * np.asarray(gamma, np.float64)
    if cache.training:
        dx = _through_stats(dxhat, xc, cache.var, cache.eps, axis=0)
    else:
        dx = dxhat / np.sqrt(cache.var + cache.eps)
    t = cache.dtype
    return dx.astype(t), (dy * x_hat).sum(axis=0).astype(t), dy.sum(axis=0).astype(t)


def layernorm_forward(x, gamma, beta, eps=1e-5):
    """``torch.nn.LayerNorm(w)`` forward: each row of ``x`` (n, w) normalized over its features
    (mean, biased variance), then ``* gamma + beta``. Returns ``(y, cache)``."""
    dtype = np.asarray(x).dtype
    x64 = np.asarray(x, dtype=np.float64)
    mean = x64.mean(axis=1, keepdims=True)
    var = ((x64 - mean) ** 2).mean(axis=1, keepdims=True)
    y = (x64 - mean) / np.sqrt(var + eps) * np.asarray(gamma, np.float64) \
        + np.asarray(beta, np.float64)
    return y.astype(dtype), NormCache(x64, mean, var, eps, True, dtype)


def layernorm_backward(dy, gamma, cache):
    """Gradients of :func:`layernorm_forward`: ``(dx, dgamma, dbeta)``."""
    dy = np.asarray(dy, dtype=np.float64)
    xc = cache.x - cache.mean
    x_hat = xc / np.sqrt(cache.var + cache.eps)
    dx = _through_stats(dy * np.asarray(gamma, np.float64), xc, cache.var, cache.eps, axis=1)
    t = cache.dtype
    return dx.astype(t), (dy * x_hat).sum(axis=0).astype(t), dy.sum(axis=0).astype(t)


@register_reference_layer
class BatchNorm:
    """Reference twin of ``fastprop.BatchNorm`` (:func:`batchnorm_forward` /
    :func:`batchnorm_backward` on its arrays). A training forward call moves ``running_mean`` /
    ``running_var`` (new arrays each call).

    Parameters
    ----------
    gamma, beta, running_mean, running_var : ndarray (width,)
    momentum, eps : float
    trainable : bool, default True
        False: frozen as in Keras, the running statistics normalize in training too and are
        not updated (and a ReferenceModel does not update ``gamma`` / ``beta``).
    """

    kind = "BatchNorm"
    param_names = ("gamma", "beta")

    def __init__(self, gamma, beta, running_mean, running_var, momentum=0.1, eps=1e-5,
                 trainable=True):
        self.gamma, self.beta = gamma, beta
        self.running_mean, self.running_var = running_mean, running_var
        self.momentum, self.eps = float(momentum), float(eps)
        self.trainable = bool(trainable)

    @classmethod
    def from_layer(cls, layer):
        """Twin of a built fastprop ``BatchNorm`` (its arrays copied)."""
        return cls(*(np.array(a) for a in (layer.gamma, layer.beta, layer.running_mean,
                                           layer.running_var)), layer.momentum, layer.eps,
                   getattr(layer, "trainable", True))

    def forward(self, a_prev, training=False):
        """Return ``(a, cache)``: batch statistics in training (unless frozen), running ones
        otherwise."""
        y, cache, (rm, rv) = batchnorm_forward(a_prev, self.gamma, self.beta, self.running_mean,
                                               self.running_var, self.momentum, self.eps,
                                               training and self.trainable)
        self.running_mean, self.running_var = rm, rv
        return y, cache

    def backward(self, da, cache):
        """Return ``(da_prev, dgamma, dbeta)``."""
        return batchnorm_backward(da, self.gamma, cache)


@register_reference_layer
class LayerNorm:
    """Reference twin of ``fastprop.LayerNorm`` (:func:`layernorm_forward` /
    :func:`layernorm_backward` on its arrays).

    Parameters
    ----------
    gamma, beta : ndarray (width,)
    eps : float
    trainable : bool, default True
    """

    kind = "LayerNorm"
    param_names = ("gamma", "beta")

    def __init__(self, gamma, beta, eps=1e-5, trainable=True):
        self.gamma, self.beta, self.eps = gamma, beta, float(eps)
        self.trainable = bool(trainable)

    @classmethod
    def from_layer(cls, layer):
        """Twin of a built fastprop ``LayerNorm`` (its arrays copied)."""
        return cls(np.array(layer.gamma), np.array(layer.beta), layer.eps,
                   getattr(layer, "trainable", True))

    def forward(self, a_prev, training=False):
        """Return ``(a, cache)``; ``training`` unused."""
        return layernorm_forward(a_prev, self.gamma, self.beta, self.eps)

    def backward(self, da, cache):
        """Return ``(da_prev, dgamma, dbeta)``."""
        return layernorm_backward(da, self.gamma, cache)
