"""The LayerNorm layer kind, and what it shares with BatchNorm (:mod:`.batchnorm`): a learnable
per-feature scale ``gamma`` and shift ``beta`` after a normalization, the width inferred at
build, the cache of ``x_hat`` and ``1 / sqrt(var + eps)``."""
import numpy as np

from fastprop import _validation as V
from fastprop._core import _norm
from fastprop.layers._base import Layer, register_layer

__all__ = ["LayerNorm", "NormCache"]


class NormCache:
    """What a normalization layer's :meth:`backward` needs from its forward call (read-only):
    ``x_hat`` (n, w), the normalized input; ``inv_std``, ``1 / sqrt(var + eps)`` (BatchNorm:
    per feature (w,); LayerNorm: per row (n,)); ``training``, whether the batch statistics were
    used."""

    __slots__ = ("layer", "x_hat", "inv_std", "training")

    def __init__(self, layer, x_hat, inv_std, training):
        self.layer, self.x_hat, self.inv_std, self.training = layer, x_hat, inv_std, training
        x_hat.flags.writeable = False
        inv_std.flags.writeable = False


def vector_property(name, doc, check=None):
    """A (width,) buffer of a norm layer as a property: reading gives the layer's array,
    assigning copies into it after the shape, dtype and finiteness checks (``_vector``) and
    ``check(arr, name)`` when given."""
    def get(self):
        return self._array(name)

    def put(self, value):
        arr = self._vector(value, name)
        if check is not None:
            check(arr, name)
        self._array(name)[...] = arr
    return property(get, put, doc=doc)


class _AffineNorm(Layer):
    """Shared part of BatchNorm and LayerNorm: ``eps``, the dtype, the width inferred at
    :meth:`build` (``gamma`` ones, ``beta`` zeros, then the kind's state from
    :meth:`_build_state`), input and cache checks."""

    _FIXED = ("eps", "dtype", "n_in", "n_out")

    def __init__(self, eps, dtype):
        object.__setattr__(self, "_eps", V.check_real(eps, "eps", low=0.0, low_open=True))
        object.__setattr__(self, "_dtype", V.as_dtype(dtype))
        object.__setattr__(self, "_n_in", None)
        self.dgamma = None
        self.dbeta = None

    def __setattr__(self, name, value):
        if name in self._FIXED:
            raise AttributeError(f"{type(self).__name__}.{name} is fixed when the layer is made "
                                 f"(a model's compiled plan is built from it); make a new layer")
        object.__setattr__(self, name, value)

    @property
    def eps(self):
        """The constant added to the variance (read-only)."""
        return self._eps

    @property
    def dtype(self):
        """float32 or float64 (read-only)."""
        return self._gamma.dtype if self.built else self._dtype

    @property
    def n_in(self):
        """The width (read-only); None until the layer is built."""
        return self._n_in

    @property
    def n_out(self):
        """The output width: the input width."""
        return self._n_in

    @property
    def built(self):
        """Whether ``gamma`` and ``beta`` exist (the width is known)."""
        return "_gamma" in self.__dict__

    def build(self, n_in):
        """Declare ``gamma`` (ones) and ``beta`` (zeros), of shape (n_in,), and the kind's state;
        return ``n_in``. Once built, only the same width is accepted (ValueError otherwise;
        building again changes nothing)."""
        if self.built:
            if n_in != self._n_in:
                raise ValueError(f"{self!r} has width {self._n_in}, got an input of width "
                                 f"{n_in}")
            return n_in
        n_in = V.check_size(n_in, "n_in")
        self.add_param("gamma", (n_in,), init="ones", dtype=self._dtype)
        self.add_param("beta", (n_in,), init="zeros", dtype=self._dtype)
        self._build_state(n_in)
        object.__setattr__(self, "_n_in", n_in)
        return n_in

    def _build_state(self, n_in):
        pass

    def _vector(self, value, name):
        arr = V.as_array(value, name, self.dtype, ndim=1)
        if arr.shape != (self._n_in,):
            raise ValueError(f"{name} must have shape ({self._n_in},), got {arr.shape}")
        return arr

    def _array(self, name):
        if not self.built:
            raise ValueError(f"{self!r} is not built yet (its width is unknown): call "
                             f"build(n_in) or forward first")
        return getattr(self, "_" + name)

    gamma = vector_property("gamma", "The scale, (width,); assigning copies into the existing "
                                     "buffer.")
    beta = vector_property("beta", "The shift, (width,); assigning copies into the existing "
                                   "buffer.")

    def zero_grad(self):
        """Set ``dgamma`` and ``dbeta`` to zero (where they exist)."""
        for g in (self.dgamma, self.dbeta):
            if g is not None:
                g[...] = 0

    def _input(self, a_prev):
        """``a_prev`` as a C-contiguous array of the layer's dtype (building the layer from its
        width on the first call)."""
        if not self.built:
            self.build(V.as_array(a_prev, "a_prev", self.dtype, ndim=2).shape[1])
        return V.as_array(a_prev, "a_prev", self.dtype, ndim=2, width=self._n_in,
                          width_name="n_in")

    def _grad_input(self, da, cache):
        """``da`` checked against ``cache`` (this layer's forward output)."""
        if not isinstance(cache, NormCache):
            raise TypeError(f"cache must be the NormCache returned by forward, got "
                            f"{type(cache).__name__}")
        if cache.layer is not self:
            raise ValueError("cache was made by a different layer's forward call")
        if cache.x_hat.dtype != self.dtype:
            raise ValueError(f"cache has dtype {cache.x_hat.dtype}, but the layer is "
                             f"{self.dtype}: call forward again")
        da = V.as_array(da, "da", self.dtype, ndim=2, width=self._n_in, width_name="n_in")
        if da.shape != cache.x_hat.shape:
            raise ValueError(f"da must have shape {cache.x_hat.shape} (the forward call's "
                             f"output), got {da.shape}")
        return da

    def _grads(self):
        dgamma = np.zeros(self._n_in, dtype=self.dtype)
        return dgamma, np.zeros_like(dgamma)

    def __call__(self, a_prev, training=False):
        return self.forward(a_prev, training=training)


@register_layer
class LayerNorm(_AffineNorm):
    """Layer normalization over the features (``torch.nn.LayerNorm(width)``): each row is
    normalized by its own mean and biased variance, then scaled and shifted per feature,
    ``y = (x - mean) / sqrt(var + eps) * gamma + beta``; the same in training and inference.

    The width is inferred when the layer is built (from the previous layer in a model, or the
    first :meth:`forward`); ``gamma`` starts at ones and ``beta`` at zeros. The math runs in
    compiled kernels (``csrc/fp_norm.h``; reductions in double).

    Parameters
    ----------
    eps : float > 0, default 1e-5
        Added to the variance.
    dtype : {"float32", "float64"}, default "float32"
    trainable : bool, default True
        False freezes ``gamma`` and ``beta`` in a model (not updated, optimizer state kept).

    Examples
    --------
    >>> import numpy as np, fastprop as fp
    >>> ln = fp.LayerNorm(dtype="float64")
    >>> y, cache = ln.forward(np.array([[1.0, 3.0], [0.0, 10.0]]))
    >>> np.round(y, 4)
    array([[-1.,  1.],
           [-1.,  1.]])
    """

    def __init__(self, eps=1e-5, dtype="float32", trainable=True):
        super().__init__(eps, dtype)
        self.trainable = trainable

    def get_config(self):
        """``{"type": "LayerNorm", "n_in", "eps"}`` (``n_in`` None while unbuilt), and
        ``"trainable": False`` for a frozen layer."""
        config = {"type": type(self).__name__, "n_in": self.n_in, "eps": self.eps}
        if not self.trainable:
            config["trainable"] = False
        return config

    @classmethod
    def from_config(cls, config, dtype="float32"):
        """A LayerNorm (``gamma`` ones, ``beta`` zeros; built when ``n_in`` is set) from
        :meth:`get_config` output."""
        if not isinstance(config, dict) or \
                set(config) - {"trainable"} != {"type", "n_in", "eps"}:
            raise ValueError(f"a LayerNorm config has the keys type, n_in, eps (and optionally "
                             f"trainable); got "
                             f"{sorted(config) if isinstance(config, dict) else config!r}")
        layer = cls(config["eps"], dtype=dtype, trainable=config.get("trainable", True))
        if config["n_in"] is not None:
            layer.build(config["n_in"])
        return layer

    def forward(self, a_prev, training=False):
        """Forward pass of one batch.

        Parameters
        ----------
        a_prev : array_like, (n_samples, width)
            Any real numeric dtype, order or strides; never written to.
        training : bool, default False
            Unused (the same computation in training and inference).

        Returns
        -------
        y : ndarray (n_samples, width), the layer's dtype
        cache : NormCache
            ``x_hat`` (n_samples, width) and ``inv_std`` (n_samples,); pass it to
            :meth:`backward`.
        """
        V.check_bool(training, "training")
        x = self._input(a_prev)
        y, x_hat = np.empty_like(x), np.empty_like(x)
        inv_std = np.empty(x.shape[0], dtype=x.dtype)
        _norm.layernorm_forward(x, self._gamma, self._beta, self.eps, x_hat, inv_std, y)
        return y, NormCache(self, x_hat, inv_std, True)

    def backward(self, da, cache):
        """Backward pass for the batch that made ``cache``.

        Returns
        -------
        da_prev : ndarray (n_samples, width)
        dgamma, dbeta : ndarray (width,)
            New arrays; also kept as ``self.dgamma`` and ``self.dbeta``. Uses the current
            ``gamma``.
        """
        da = self._grad_input(da, cache)
        dx = np.empty_like(da)
        dgamma, dbeta = self._grads()
        _norm.layernorm_backward(da, cache.x_hat, self._gamma, cache.inv_std, dx, dgamma, dbeta)
        self.dgamma, self.dbeta = dgamma, dbeta
        return dx, dgamma, dbeta

    def __repr__(self):
        width = "" if self.n_in is None else f", width={self.n_in}"
        return f"LayerNorm(eps={self.eps!r}{width}, dtype={self.dtype.name!r})"
