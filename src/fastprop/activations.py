"""Activation functions by name.

The codes match ``csrc/fp_math.h``; definitions and defaults are those of PyTorch's functions of
the same names: ``leaky_relu`` has slope 0.01, ``elu`` alpha 1, ``gelu`` is the exact erf form,
``softplus`` has beta 1 and is linear above 20. ``softmax`` is row-wise and meant for output
layers (pair it with the ``cross_entropy`` loss).
"""

ACTIVATIONS = {
    "identity": 0,
    "relu": 1,
    "leaky_relu": 2,
    "elu": 3,
    "gelu": 4,
    "sigmoid": 5,
    "tanh": 6,
    "softplus": 7,
    "silu": 8,
    "softmax": 9,
}
ALIASES = {"linear": "identity", "swish": "silu", None: "identity"}

__all__ = ["ACTIVATIONS", "ALIASES", "activation_code", "canonical_name"]


def canonical_name(name):
    """Return the canonical activation name for ``name`` (aliases resolved).

    Raises
    ------
    ValueError
        If ``name`` is not a known activation.
    TypeError
        If ``name`` is neither a string nor None.
    """
    if name is not None and not isinstance(name, str):
        raise TypeError(f"activation must be a string, got {type(name).__name__}")
    key = ALIASES.get(name, name)
    if isinstance(key, str):
        key = ALIASES.get(key.lower(), key.lower())
    if key not in ACTIVATIONS:
        known = ", ".join(sorted(ACTIVATIONS) + sorted(k for k in ALIASES if k))
        raise ValueError(f"activation must be one of {known}; got {name!r}")
    return key


def activation_code(name):
    """The integer code the compiled core uses for activation ``name``."""
    return ACTIVATIONS[canonical_name(name)]
