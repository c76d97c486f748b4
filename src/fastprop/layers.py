"""The textbook block: a dense layer you can call step by step.

Layer l's forward takes a[l-1], computes z[l] = a[l-1] W[l] + b[l] and a[l] = g(z[l]) and keeps a
cache; its backward takes da[l] and the cache and returns da[l-1], dW[l], db[l]. Row-major: a
batch of n samples is an (n, n_in) array, ``W`` is (n_in, n_out), ``b`` is (n_out,). (The
textbook's column-vector form z = W a + b is the transpose of this one.)

Both directions run in the compiled core with the GIL released; this module checks arguments,
applies the dtype policy and allocates outputs.
"""
import numpy as np

from fastprop import _validation as V
from fastprop._core import _kernels
from fastprop.activations import ACTIVATIONS, canonical_name
from fastprop.initializers import canonical_init, default_init, initialize

__all__ = ["Dense", "DenseCache", "Dropout", "DropoutCache"]

# activations whose derivative is computed from a = g(z) rather than z
_NEEDS_A = frozenset({"sigmoid", "tanh", "softmax"})


class DenseCache:
    """What :meth:`Dense.backward` needs from one :meth:`Dense.forward` call.

    Attributes (read-only arrays): ``a_prev`` (n, n_in), ``z`` (n, n_out), and ``a`` (n, n_out)
    for the activations whose derivative reads it (sigmoid, tanh, softmax; None otherwise).
    A cache belongs to the layer that made it; giving it to another layer raises ValueError.
    """

    __slots__ = ("layer", "a_prev", "z", "a")

    def __init__(self, layer, a_prev, z, a):
        self.layer = layer
        self.a_prev, self.z, self.a = a_prev, z, a
        for arr in (a_prev, z, a):
            if arr is not None:
                arr.flags.writeable = False

    def __repr__(self):
        return (f"DenseCache(a_prev={self.a_prev.shape}, z={self.z.shape}, "
                f"dtype={self.z.dtype.name})")


class Dense:
    """Fully connected layer: ``z = a_prev @ W + b``, ``a = activation(z)``.

    Parameters
    ----------
    n_in, n_out : int
        Input and output widths, >= 1.
    activation : str, default "identity"
        One of ``identity`` (``linear``), ``relu``, ``leaky_relu``, ``elu``, ``gelu``,
        ``sigmoid``, ``tanh``, ``softplus``, ``silu`` (``swish``), ``softmax``.
    init : str, optional
        Weight initializer (see :mod:`fastprop.initializers`). Default: ``he_uniform`` for
        ReLU-like activations, ``glorot_uniform`` otherwise. Biases start at zero.
    dtype : {"float32", "float64"}, default "float32"
    seed : int or numpy.random.Generator, optional
        The same seed gives the same weights.

    Attributes
    ----------
    W : ndarray (n_in, n_out), writable
    b : ndarray (n_out,), writable
    dW, db : ndarray or None
        Gradients of the last :meth:`backward` call (inside a model: views into the model's
        flat gradient buffer).

    Examples
    --------
    >>> import numpy as np, fastprop as fp
    >>> layer = fp.Dense(3, 2, activation="relu", seed=0)
    >>> a, cache = layer.forward(np.ones((4, 3)))
    >>> da_prev, dW, db = layer.backward(np.ones((4, 2)), cache)
    >>> a.shape, da_prev.shape, dW.shape, db.shape
    ((4, 2), (4, 3), (3, 2), (2,))
    """

    def __init__(self, n_in, n_out, activation="identity", init=None, dtype="float32",
                 seed=None):
        self._n_in = V.check_size(n_in, "n_in")
        self._n_out = V.check_size(n_out, "n_out")
        self._activation = canonical_name(activation)
        self.init = canonical_init(init if init is not None else default_init(self.activation))
        dtype = V.as_dtype(dtype)
        # the initializer draws float64, then casts: both exist for a moment
        V.check_alloc(self.n_in * self.n_out + self.n_out, 8 + dtype.itemsize,
                      f"Dense({self.n_in}, {self.n_out})")
        if seed is not None and not isinstance(seed, np.random.Generator):
            seed = V.check_seed(seed)
        rng = np.random.default_rng(seed)
        self._W = initialize(self.init, self.n_in, self.n_out, rng).astype(dtype)
        self._b = np.zeros(self.n_out, dtype=dtype)
        self.dW = None
        self.db = None

    # -- the shape of the block: fixed (a model's compiled plan is built from them) -----------
    @property
    def n_in(self):
        """Input width (read-only)."""
        return self._n_in

    @property
    def n_out(self):
        """Output width (read-only)."""
        return self._n_out

    @property
    def activation(self):
        """Activation name (read-only)."""
        return self._activation

    def __setattr__(self, name, value):
        if name in ("n_in", "n_out", "activation", "dtype"):
            raise AttributeError(f"Dense.{name} is fixed when the layer is made (a model's "
                                 f"compiled plan is built from it); make a new Dense layer")
        object.__setattr__(self, name, value)

    # -- parameters ------------------------------------------------------------------------
    @property
    def dtype(self):
        return self._W.dtype

    @property
    def W(self):
        """Weights, (n_in, n_out). Assigning copies into the existing buffer."""
        return self._W

    @W.setter
    def W(self, value):
        self._W[...] = self._checked(value, "W", self._W.shape)

    @property
    def b(self):
        """Biases, (n_out,). Assigning copies into the existing buffer."""
        return self._b

    @b.setter
    def b(self, value):
        self._b[...] = self._checked(value, "b", self._b.shape)

    def _checked(self, value, name, shape):
        arr = V.as_array(value, name, self.dtype, ndim=len(shape))
        if arr.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
        return arr

    @property
    def n_params(self):
        return self.n_in * self.n_out + self.n_out

    def parameters(self):
        """``[W, b]``."""
        return [self._W, self._b]

    def zero_grad(self):
        """Set ``dW`` and ``db`` to zero (where they exist)."""
        for g in (self.dW, self.db):
            if g is not None:
                g[...] = 0

    def _bind(self, W, b, dW, db):
        """Make W, b, dW, db views into a model's flat buffers (values already copied in)."""
        self._W, self._b, self.dW, self.db = W, b, dW, db

    # -- the block ---------------------------------------------------------------------------
    def forward(self, a_prev):
        """Forward pass of one batch.

        Parameters
        ----------
        a_prev : array_like, (n_samples, n_in)
            Any real numeric dtype, order or strides; never written to.

        Returns
        -------
        a : ndarray (n_samples, n_out), the layer's dtype
            ``activation(a_prev @ W + b)``; yours to keep and modify.
        cache : DenseCache
            Pass it to :meth:`backward`.
        """
        dtype = self.dtype
        a_prev = V.as_array(a_prev, "a_prev", dtype, ndim=2, width=self.n_in,
                            width_name="n_in", copy=True)
        n = a_prev.shape[0]
        z = np.empty((n, self.n_out), dtype=dtype)
        a = np.empty_like(z)
        _kernels.dense_forward(a_prev, self._W, self._b, ACTIVATIONS[self.activation], z, a)
        # the cache keeps its own a only where the derivative reads it; a is the caller's
        return a, DenseCache(self, a_prev, z, a.copy() if self.activation in _NEEDS_A else None)

    def backward(self, da, cache, need_da_prev=True):
        """Backward pass for the batch that made ``cache``.

        Parameters
        ----------
        da : array_like, (n_samples, n_out)
            Gradient of the loss with respect to this layer's output ``a``.
        cache : DenseCache
            From this layer's :meth:`forward`.
        need_da_prev : bool, default True
            Skip the ``da_prev`` GEMM when False (the first layer of a network needs none).

        Returns
        -------
        da_prev : ndarray (n_samples, n_in) or None
        dW : ndarray (n_in, n_out)
        db : ndarray (n_out,)
            New arrays; also kept as ``self.dW`` and ``self.db``. Uses the current ``W``.
        """
        if not isinstance(cache, DenseCache):
            raise TypeError(f"cache must be the DenseCache returned by forward, got "
                            f"{type(cache).__name__}")
        if cache.layer is not self:
            raise ValueError("cache was made by a different layer's forward call")
        if cache.z.dtype != self.dtype:
            raise ValueError(f"cache has dtype {cache.z.dtype}, but the layer is now "
                             f"{self.dtype}: call forward again")
        n = cache.z.shape[0]
        da = V.as_array(da, "da", self.dtype, ndim=2, width=self.n_out, width_name="n_out")
        if da.shape[0] != n:
            raise ValueError(f"da must have shape {cache.z.shape} (the forward call's output), "
                             f"got {da.shape}")
        dz = np.empty_like(cache.z)
        dW = np.empty_like(self._W)        # overwritten by the kernel (accumulate=False)
        db = np.empty_like(self._b)
        da_prev = np.empty_like(cache.a_prev) if need_da_prev else None
        a = cache.a if cache.a is not None else cache.z   # unread by these derivatives
        _kernels.dense_backward(cache.a_prev, self._W, cache.z, a, da,
                                ACTIVATIONS[self.activation], dz, dW, db, da_prev, False)
        self.dW, self.db = dW, db
        return da_prev, dW, db

    __call__ = forward

    def __repr__(self):
        return (f"Dense({self.n_in}, {self.n_out}, activation={self.activation!r}, "
                f"init={self.init!r}, dtype={self.dtype.name!r})")


class DropoutCache:
    """The mask of one :meth:`Dropout.forward` call (read-only, values 0 or 1 / (1 - rate))."""

    __slots__ = ("layer", "mask")

    def __init__(self, layer, mask):
        self.layer, self.mask = layer, mask
        if mask is not None:
            mask.flags.writeable = False


class Dropout:
    """Inverted dropout: in training each input is zeroed with probability ``rate`` and the
    survivors are scaled by ``1 / (1 - rate)``; in inference the layer is the identity.

    Inside a :class:`~fastprop.Sequential` model the mask is drawn by the compiled engine from
    the model's seeded stream, and only while training (``fit``, ``train_step``,
    ``forward(training=True)``); ``predict`` and ``evaluate`` never drop.

    Parameters
    ----------
    rate : float in [0, 1)
        Probability of dropping each value.
    seed : int, optional
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
        self._rng = np.random.default_rng(seed)

    n_params = 0

    @property
    def rate(self):
        """The drop probability (read-only: a model compiles it into its plan)."""
        return self._rate

    def parameters(self):
        return []

    def forward(self, a_prev, training=True, dtype=None):
        """Return ``(a, cache)``; ``a = a_prev * mask`` in training, ``a_prev`` otherwise.

        ``a_prev`` keeps its floating dtype (float32 / float64; other inputs become float64
        unless ``dtype`` says otherwise)."""
        if dtype is None:
            dtype = getattr(a_prev, "dtype", np.float64)
            dtype = dtype if np.dtype(dtype) in (np.float32, np.float64) else np.float64
        a_prev = V.as_array(a_prev, "a_prev", V.as_dtype(dtype), ndim=2, copy=True)
        if not training or self.rate == 0:
            return a_prev, DropoutCache(self, None)
        keep = 1.0 - self.rate
        mask = ((self._rng.random(a_prev.shape) >= self.rate) / keep).astype(a_prev.dtype)
        return a_prev * mask, DropoutCache(self, mask)

    def backward(self, da, cache):
        """Return ``da_prev = da * mask`` for the forward call that made ``cache``."""
        if not isinstance(cache, DropoutCache):
            raise TypeError(f"cache must be the DropoutCache returned by forward, got "
                            f"{type(cache).__name__}")
        if cache.layer is not self:
            raise ValueError("cache was made by a different layer's forward call")
        dtype = cache.mask.dtype if cache.mask is not None else \
            (da.dtype if getattr(da, "dtype", None) in (np.float32, np.float64) else np.float64)
        da = V.as_array(da, "da", dtype, ndim=2, copy=True)
        if cache.mask is None:
            return da
        if da.shape != cache.mask.shape:
            raise ValueError(f"da must have shape {cache.mask.shape} (the forward call's "
                             f"output), got {da.shape}")
        return da * cache.mask

    __call__ = forward

    def __repr__(self):
        return f"Dropout({self.rate})"
