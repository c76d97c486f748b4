"""Pure-NumPy twin of every compiled kernel in fastprop, written for clarity.

This package is the oracle of the tests and the "pure NumPy" side of every benchmark. It imports
nothing of fastprop's compiled code. Conventions are the compiled core's (and PyTorch's): row-major
batches, ``z = a_prev @ W + b``, ``a = g(z)``; backward gives ``dz = da * g'(z)``,
``dW = a_prev.T @ dz``, ``db = dz.sum(0)``, ``da_prev = dz @ W.T``. Arrays keep their dtype.
"""
from fastprop.reference._dense import (activation_backward, activation_forward, dense_backward,
                                       dense_forward, sigmoid, softmax)

__all__ = [
    "activation_forward",
    "activation_backward",
    "dense_forward",
    "dense_backward",
    "sigmoid",
    "softmax",
]
