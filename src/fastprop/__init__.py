"""fastprop: dense neural networks on the CPU with compiled forward and backward propagation.

The public model is the textbook block (:class:`Dense`): ``forward`` computes
``z = a_prev @ W + b`` and ``a = g(z)`` and keeps a cache; ``backward`` takes ``da`` and the cache
and returns ``da_prev, dW, db``. :mod:`fastprop.reference` is the same math in plain NumPy.
"""
from fastprop._version import __version__
from fastprop.layers import Dense, DenseCache
from fastprop import reference

__all__ = ["__version__", "Dense", "DenseCache", "reference"]
