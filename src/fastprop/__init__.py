"""fastprop: dense neural networks on the CPU with compiled forward and backward propagation.

The public model is the textbook block (:class:`Dense`): ``forward`` computes
``z = a_prev @ W + b`` and ``a = g(z)`` and keeps a cache; ``backward`` takes ``da`` and the cache
and returns ``da_prev, dW, db``. :class:`Sequential` chains blocks into a model trained by one
compiled call per step. :mod:`fastprop.reference` is the same math in plain NumPy.
"""
from fastprop._version import __version__
from fastprop._threads import blas_info, get_num_threads, set_num_threads
from fastprop import callbacks, datasets, distributed, losses, optim, reference
from fastprop.io import from_bytes, load
from fastprop.export_onnx import to_onnx
from fastprop.layers import (Activation, ActivationCache, BatchNorm, Dense, DenseCache, Dropout,
                             DropoutCache, Layer, LayerNorm, NormCache, register_layer)
from fastprop.model import Sequential, gradcheck
from fastprop.plot import plot_graph, plot_history
from fastprop.trace import Trace, trace

__all__ = [
    "__version__",
    "Layer",
    "register_layer",
    "Activation",
    "ActivationCache",
    "Dense",
    "DenseCache",
    "Dropout",
    "DropoutCache",
    "BatchNorm",
    "LayerNorm",
    "NormCache",
    "Sequential",
    "gradcheck",
    "trace",
    "Trace",
    "plot_graph",
    "plot_history",
    "load",
    "to_onnx",
    "from_bytes",
    "callbacks",
    "datasets",
    "distributed",
    "losses",
    "optim",
    "reference",
    "blas_info",
    "get_num_threads",
    "set_num_threads",
]
