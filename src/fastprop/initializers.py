"""Weight initializers by name.

``fan_in = n_in`` and ``fan_out = n_out`` of a Dense layer. Normal initializers draw from an
untruncated normal, as ``torch.nn.init`` does. Values are drawn in float64 from
``numpy.random.default_rng(seed)`` and then cast, so one seed gives the same weights in float32
and float64 (up to rounding) and on every platform.

=================  ==========================================
name               distribution
=================  ==========================================
``glorot_uniform`` U(-l, l), l = sqrt(6 / (fan_in + fan_out))
``glorot_normal``  N(0, 2 / (fan_in + fan_out))
``he_uniform``     U(-l, l), l = sqrt(6 / fan_in)
``he_normal``      N(0, 2 / fan_in)
``lecun_normal``   N(0, 1 / fan_in)
``zeros``          0
=================  ==========================================
"""
import numpy as np

from fastprop.activations import RELU_LIKE

__all__ = ["INITIALIZERS", "initialize", "default_init"]

INITIALIZERS = ("glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_normal",
                "zeros")
ALIASES = {"xavier_uniform": "glorot_uniform", "xavier_normal": "glorot_normal",
           "kaiming_uniform": "he_uniform", "kaiming_normal": "he_normal"}



def default_init(activation):
    """``he_uniform`` for ReLU-like activations, ``glorot_uniform`` for the rest."""
    return "he_uniform" if activation in RELU_LIKE else "glorot_uniform"


def canonical_init(name):
    if not isinstance(name, str):
        raise TypeError(f"init must be a string, got {type(name).__name__}")
    key = ALIASES.get(name.lower(), name.lower())
    if key not in INITIALIZERS:
        raise ValueError(f"init must be one of {', '.join(INITIALIZERS)}; got {name!r}")
    return key


def initialize(name, n_in, n_out, rng):
    """Return a float64 (n_in, n_out) weight matrix drawn from initializer ``name``."""
    name = canonical_init(name)
    shape = (n_in, n_out)
    if name == "zeros":
        return np.zeros(shape)
    if name == "glorot_uniform":
        limit = np.sqrt(6.0 / (n_in + n_out))
        return rng.uniform(-limit, limit, shape)
    if name == "he_uniform":
        limit = np.sqrt(6.0 / n_in)
        return rng.uniform(-limit, limit, shape)
    std = {"glorot_normal": np.sqrt(2.0 / (n_in + n_out)),
           "he_normal": np.sqrt(2.0 / n_in),
           "lecun_normal": np.sqrt(1.0 / n_in)}[name]
    return rng.normal(0.0, std, shape)
