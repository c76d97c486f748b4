"""Activation functions by name.

Names and codes come from the compiled table ``ACTIVATION_TABLE`` (``_core/_kernels.pyx``, the
codes of ``csrc/fp_math.h``); definitions and defaults are those of PyTorch's functions of
the same names: ``leaky_relu`` has slope 0.01, ``elu`` alpha 1, ``gelu`` is the exact erf form,
``softplus`` has beta 1 and is linear above 20. ``softmax`` is row-wise and meant for output
layers (pair it with the ``cross_entropy`` loss).
"""

from fastprop._core._kernels import ACTIVATION_TABLE

#: name -> C code, read from the compiled table (``_core/_kernels.pyx``, codes of csrc/fp_math.h)
ACTIVATIONS = {name: code for name, code, _, _ in ACTIVATION_TABLE}
#: activations whose derivative is computed from a = g(z) rather than z (a cache keeps a)
NEEDS_A = frozenset(name for name, _, needs_a, _ in ACTIVATION_TABLE if needs_a)
#: activations initialized with He's rule by default
RELU_LIKE = frozenset(name for name, _, _, relu_like in ACTIVATION_TABLE if relu_like)
ALIASES = {"linear": "identity", "swish": "silu", None: "identity"}

__all__ = ["ACTIVATIONS", "ALIASES", "NEEDS_A", "RELU_LIKE", "activation_code",
           "canonical_name"]


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
