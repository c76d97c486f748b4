"""The dropout layer kind."""
import numpy as np

from fastprop import _validation as V
from fastprop._core import _kernels
from fastprop.layers._base import Layer, float_dtype, register_layer

__all__ = ["Dropout", "DropoutCache"]


class DropoutCache:
    """The mask of one :meth:`Dropout.forward` call (read-only, values 0 or 1 / (1 - rate))."""

    __slots__ = ("layer", "mask")

    def __init__(self, layer, mask):
        self.layer, self.mask = layer, mask
        if mask is not None:
            mask.flags.writeable = False


@register_layer
class Dropout(Layer):
    """Inverted dropout: in training each input is zeroed with probability ``rate`` and the
    survivors are scaled by ``1 / (1 - rate)``; in inference the layer is the identity.

    The mask is drawn by the compiled dropout kernel from a splitmix64 stream: the layer's own
    (seeded by ``seed``) on its own, the model's seeded stream inside a
    :class:`~fastprop.Sequential` model, and only while training (``fit``, ``train_step``,
    ``forward(training=True)``); ``predict`` and ``evaluate`` never drop.

    Parameters
    ----------
    rate : float in [0, 1)
        Probability of dropping each value.
    seed : int or numpy.random.Generator, optional
        Seed of the standalone :meth:`forward` (a model uses its own seed).
    """

    def __init__(self, rate, seed=None):
        if isinstance(rate, (bool, np.bool_)) or not isinstance(rate, (int, float, np.number)):
            raise TypeError(f"rate must be a number in [0, 1), got {type(rate).__name__}")
        rate = float(rate)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"rate must be in [0, 1), got {rate}")
        self._rate = rate
        if seed is not None and not isinstance(seed, np.random.Generator):
            seed = V.check_seed(seed)
        # the state of the splitmix64 stream the compiled dropout kernel draws from (the one
        # a model's dropout nodes use), seeded from one draw of default_rng(seed)
        self._state = np.random.default_rng(seed).integers(0, 2**64 - 1, size=1,
                                                           dtype=np.uint64, endpoint=True)

    def build(self, n_in):
        """No parameters; the width passes through."""
        return n_in

    def get_config(self):
        """``{"type": "Dropout", "rate"}``."""
        return {"type": type(self).__name__, "rate": self.rate}

    @classmethod
    def from_config(cls, config, dtype="float32"):
        if set(config) != {"type", "rate"}:
            raise ValueError(f"a Dropout config has the keys type, rate; got {sorted(config)}")
        return cls(config["rate"])

    @property
    def rate(self):
        """The drop probability (read-only: a model compiles it into its plan)."""
        return self._rate

    def forward(self, a_prev, training=False, dtype=None):
        """Return ``(a, cache)``; ``a = a_prev * mask`` in training, ``a_prev`` otherwise.

        ``a_prev`` keeps its floating dtype (float32 / float64; other inputs become float64
        unless ``dtype`` says otherwise)."""
        if dtype is None:
            dtype = float_dtype(a_prev)
        a_prev = V.as_array(a_prev, "a_prev", V.as_dtype(dtype), ndim=2, copy=True)
        if not training or self.rate == 0:
            return a_prev, DropoutCache(self, None)
        a, mask = np.empty_like(a_prev), np.empty_like(a_prev)
        _kernels.dropout_forward(a_prev, a, mask, self.rate, self._state)
        return a, DropoutCache(self, mask)

    def backward(self, da, cache):
        """Return ``da_prev = da * mask`` for the forward call that made ``cache``."""
        if not isinstance(cache, DropoutCache):
            raise TypeError(f"cache must be the DropoutCache returned by forward, got "
                            f"{type(cache).__name__}")
        if cache.layer is not self:
            raise ValueError("cache was made by a different layer's forward call")
        dtype = cache.mask.dtype if cache.mask is not None else float_dtype(da)
        da = V.as_array(da, "da", dtype, ndim=2, copy=True)
        if cache.mask is None:
            return da
        if da.shape != cache.mask.shape:
            raise ValueError(f"da must have shape {cache.mask.shape} (the forward call's "
                             f"output), got {da.shape}")
        _kernels.dropout_backward(cache.mask, da)    # da is our copy: the node runs in place
        return da

    def __call__(self, a_prev, training=False, dtype=None):
        return self.forward(a_prev, training=training, dtype=dtype)

    def __repr__(self):
        return f"Dropout({self.rate})"
