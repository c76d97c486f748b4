"""The standalone activation layer kind: ``a = g(a_prev)``."""
import numpy as np

from fastprop import _validation as V
from fastprop._core import _kernels
from fastprop.activations import ACTIVATIONS, canonical_name
from fastprop.layers._base import Layer, float_dtype, register_layer

__all__ = ["Activation", "ActivationCache"]


class ActivationCache:
    """What :meth:`Activation.backward` needs: ``z`` (the input) and ``a = g(z)`` (read-only)."""

    __slots__ = ("layer", "z", "a")

    def __init__(self, layer, z, a):
        self.layer, self.z, self.a = layer, z, a
        z.flags.writeable = False
        a.flags.writeable = False


@register_layer
class Activation(Layer):
    """An activation on its own: ``a = g(a_prev)``, element-wise (softmax: row-wise).

    It runs the compiled Activation node of the model's tape (a one-node tape). In a
    :class:`~fastprop.Sequential` it may go anywhere: it runs as a node of its own, except
    right after a Dense layer whose own activation is ``identity``, where the tape compiler
    fuses it into that layer's GEMM + bias + activation (the same numbers as
    ``Dense(..., activation=name)``).

    Parameters
    ----------
    name : str
        An activation name (see :mod:`fastprop.activations`).

    Examples
    --------
    >>> import numpy as np, fastprop as fp
    >>> act = fp.Activation("relu")
    >>> a, cache = act.forward(np.array([[-1.0, 2.0]]))
    >>> a
    array([[0., 2.]])
    >>> act.backward(np.ones((1, 2)), cache)[0]
    array([[0., 1.]])
    """

    def __init__(self, name):
        object.__setattr__(self, "_activation", canonical_name(name))

    @property
    def activation(self):
        """Activation name (read-only)."""
        return self._activation

    def __setattr__(self, name, value):
        if name == "activation":
            raise AttributeError("Activation.activation is fixed when the layer is made")
        object.__setattr__(self, name, value)

    def build(self, n_in):
        """No parameters; the width passes through."""
        return n_in

    def get_config(self):
        """``{"type": "Activation", "activation"}``."""
        return {"type": type(self).__name__, "activation": self.activation}

    @classmethod
    def from_config(cls, config, dtype="float32"):
        if set(config) != {"type", "activation"}:
            raise ValueError(f"an Activation config has the keys type, activation; got "
                             f"{sorted(config)}")
        return cls(config["activation"])

    def forward(self, a_prev, training=False, dtype=None):
        """Forward pass of one batch.

        Parameters
        ----------
        a_prev : array_like, (n_samples, width)
            float32 / float64 keep their dtype; other inputs become float64 unless ``dtype``
            says otherwise.
        training : bool, default False
            Unused.

        Returns
        -------
        a : ndarray (n_samples, width)
        cache : ActivationCache
        """
        dtype = V.as_dtype(float_dtype(a_prev) if dtype is None else dtype)
        z = V.as_array(a_prev, "a_prev", dtype, ndim=2, copy=True)
        a = np.empty_like(z)
        _kernels.activation_forward(ACTIVATIONS[self.activation], z, a)
        return a, ActivationCache(self, z, a.copy())

    def backward(self, da, cache):
        """Return ``(da_prev,)``: ``da * g'(z)`` (softmax: the row-wise Jacobian-vector
        product), shape (n_samples, width)."""
        if not isinstance(cache, ActivationCache):
            raise TypeError(f"cache must be the ActivationCache returned by forward, got "
                            f"{type(cache).__name__}")
        if cache.layer is not self:
            raise ValueError("cache was made by a different layer's forward call")
        da = V.as_array(da, "da", cache.z.dtype, ndim=2)
        if da.shape != cache.z.shape:
            raise ValueError(f"da must have shape {cache.z.shape} (the forward call's output), "
                             f"got {da.shape}")
        dz = np.empty_like(cache.z)
        _kernels.activation_backward(ACTIVATIONS[self.activation], cache.z, cache.a, da, dz)
        return (dz,)

    def __call__(self, a_prev, training=False, dtype=None):
        return self.forward(a_prev, training=training, dtype=dtype)

    def __repr__(self):
        return f"Activation({self.activation!r})"
