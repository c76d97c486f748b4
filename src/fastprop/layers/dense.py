"""The dense layer kind: the textbook block you can call step by step.

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
from fastprop.activations import ACTIVATIONS, NEEDS_A, canonical_name
from fastprop.initializers import canonical_init, default_init
from fastprop.layers._base import Layer, register_layer

__all__ = ["Dense", "DenseCache"]


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


#: the default of ``n_out``: given one width, Dense(n_out) (Keras style)
_ONE_WIDTH = object()


@register_layer
class Dense(Layer):
    """Fully connected layer: ``z = a_prev @ W + b``, ``a = activation(z)``.

    Parameters
    ----------
    n_in, n_out : int
        Input and output widths, >= 1. With one width (``Dense(64)``, Keras style) it is
        ``n_out`` and the input width is inferred when the layer is built: from the previous
        layer or ``input_dim`` in a :class:`~fastprop.Sequential`, from the data at the
        model's first ``fit`` / ``predict`` / ``evaluate`` / ``train_step``, by
        ``model.build(n_in)`` or ``layer.build(n_in)``, or by a first standalone
        :meth:`forward`. Until then ``n_in`` is None and ``W``, ``b`` do not exist; once built,
        the weights are those ``Dense(n_in, n_out, seed=seed)`` draws (an int seed; a
        Generator is drawn from at build time, not when the layer is made).
    activation : str, default "identity"
        One of ``identity`` (``linear``), ``relu``, ``leaky_relu``, ``elu``, ``gelu``,
        ``sigmoid``, ``tanh``, ``softplus``, ``silu`` (``swish``), ``softmax``.
    init : str, optional
        Weight initializer (see :mod:`fastprop.initializers`). Default: ``he_uniform`` for
        ReLU-like activations, ``glorot_uniform`` otherwise. Biases start at zero.
    dtype : {"float32", "float64"}, default "float32"
    seed : int or numpy.random.Generator, optional
        The same seed gives the same weights.
    trainable : bool, default True
        False freezes the layer in a model: ``W`` and ``b`` are not updated and their optimizer
        state does not move; gradients still flow through it. Settable later
        (``layer.trainable = False``).
    l1, l2 : float >= 0, default 0.0
        Weight penalty on ``W`` (Keras' ``kernel_regularizer=L1L2(l1, l2)``; ``b`` is spared):
        a model adds ``l1 * sum|W| + l2 * sum W**2`` to the loss it minimizes and reports
        (``train_step``, ``fit``, ``evaluate``) and ``l1 * sign(W) + 2 * l2 * W`` to ``dW``.
        Not counted while the layer is frozen (Keras counts trainable weights only).
        Read-only (the compiled plan is built from them). The standalone :meth:`backward`
        returns the data gradient only (the penalty is a model's loss term).

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

    def __init__(self, n_in, n_out=_ONE_WIDTH, activation="identity", init=None,
                 dtype="float32", seed=None, trainable=True, l1=0.0, l2=0.0):
        if n_out is _ONE_WIDTH:           # Dense(n_out): the input width comes at build
            n_in, n_out = None, n_in
        # checked first: a failed call builds nothing
        l1, l2 = V.check_real(l1, "l1", low=0.0), V.check_real(l2, "l2", low=0.0)
        self.trainable = trainable
        object.__setattr__(self, "_l1", l1)
        object.__setattr__(self, "_l2", l2)
        self._n_in = None if n_in is None else V.check_size(n_in, "n_in")
        self._n_out = V.check_size(n_out, "n_out")
        self._activation = canonical_name(activation)
        self.init = canonical_init(init if init is not None else default_init(self.activation))
        self._dtype = V.as_dtype(dtype)
        if seed is not None and not isinstance(seed, np.random.Generator):
            seed = V.check_seed(seed)
        self._rng = np.random.default_rng(seed)    # drawn from at build
        self.dW = None
        self.db = None
        if self._n_in is not None:
            self.build(self._n_in)

    @property
    def built(self):
        """Whether ``W`` and ``b`` exist (the input width is known)."""
        return "_W" in self.__dict__

    def build(self, n_in):
        """Declare ``W`` (n_in, n_out) and ``b`` (n_out,) and draw ``W``; return ``n_out``.

        A layer made with ``Dense(n_out)`` takes any width ``n_in >= 1`` (once); a built layer
        only its own ``n_in`` (ValueError otherwise; building it again changes nothing)."""
        if self.built:
            if n_in != self._n_in:
                raise ValueError(f"Dense({self._n_in}, {self._n_out}) takes n_in="
                                 f"{self._n_in}, got an input of width {n_in}")
            return self._n_out
        n_in = V.check_size(n_in, "n_in")
        # the initializer draws float64, then casts: both exist for a moment
        V.check_alloc(n_in * self.n_out + self.n_out, 8 + self._dtype.itemsize,
                      f"Dense({n_in}, {self.n_out})")
        W = self.add_param("W", (n_in, self.n_out), init=self.init, dtype=self._dtype,
                           rng=self._rng)
        b = self.add_param("b", (self.n_out,), init="zeros", dtype=self._dtype)
        object.__setattr__(self, "_n_in", n_in)
        self._W, self._b = W, b
        del self._rng
        return self.n_out

    def get_config(self):
        """``{"type": "Dense", "n_in", "n_out", "activation", "init"}`` (``n_in`` None while
        the width is not inferred yet), and ``"trainable": False`` for a frozen layer,
        ``"l1"`` / ``"l2"`` when not 0 (absent at their defaults, so older files load and
        write unchanged)."""
        config = {"type": type(self).__name__, "n_in": self.n_in, "n_out": self.n_out,
                  "activation": self.activation, "init": self.init}
        if not self.trainable:
            config["trainable"] = False
        for name in ("l1", "l2"):
            if getattr(self, name):
                config[name] = getattr(self, name)
        return config

    @classmethod
    def from_config(cls, config, dtype="float32"):
        """A Dense layer (zero weights; unbuilt when ``n_in`` is None) from :meth:`get_config`
        output."""
        if set(config) - {"trainable", "l1", "l2"} != {"type", "n_in", "n_out", "activation",
                                                        "init"}:
            raise ValueError(f"a Dense config has the keys type, n_in, n_out, activation, "
                             f"init (and optionally trainable, l1, l2); got {sorted(config)}")
        layer = cls(config["n_in"], config["n_out"], activation=config["activation"],
                    init="zeros", dtype=dtype, trainable=config.get("trainable", True),
                    l1=config.get("l1", 0.0), l2=config.get("l2", 0.0))
        layer.init = canonical_init(config["init"])     # recorded; weights are loaded
        return layer

    # -- the shape of the block: fixed (a model's compiled plan is built from them) -----------
    @property
    def n_in(self):
        """Input width (read-only); None until the layer is built."""
        return self._n_in

    @property
    def n_out(self):
        """Output width (read-only)."""
        return self._n_out

    @property
    def activation(self):
        """Activation name (read-only)."""
        return self._activation

    @property
    def l1(self):
        """The L1 weight penalty on ``W`` (read-only; see the class docstring)."""
        return self._l1

    @property
    def l2(self):
        """The L2 weight penalty on ``W`` (read-only; see the class docstring)."""
        return self._l2

    def penalty(self):
        """``l1 * sum|W| + l2 * sum W**2`` at the current ``W`` (float; 0.0 when unbuilt or
        without a penalty): the term a model adds to its loss for this layer."""
        if not self.built or not (self._l1 or self._l2):
            return 0.0
        W = self._W.astype(np.float64)
        return float(self._l1 * np.abs(W).sum() + self._l2 * (W * W).sum())

    def __setattr__(self, name, value):
        if name in ("n_in", "n_out", "activation", "dtype", "l1", "l2"):
            raise AttributeError(f"Dense.{name} is fixed when the layer is made (a model's "
                                 f"compiled plan is built from it); make a new Dense layer")
        object.__setattr__(self, name, value)

    # -- parameters ------------------------------------------------------------------------
    @property
    def dtype(self):
        return self._W.dtype if self.built else self._dtype

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

    def zero_grad(self):
        """Set ``dW`` and ``db`` to zero (where they exist)."""
        for g in (self.dW, self.db):
            if g is not None:
                g[...] = 0

    # -- the block ---------------------------------------------------------------------------
    def forward(self, a_prev, training=False):
        """Forward pass of one batch.

        Parameters
        ----------
        a_prev : array_like, (n_samples, n_in)
            Any real numeric dtype, order or strides; never written to.
        training : bool, default False
            Unused (the block is the same in training and inference).

        Returns
        -------
        a : ndarray (n_samples, n_out), the layer's dtype
            ``activation(a_prev @ W + b)``; yours to keep and modify.
        cache : DenseCache
            Pass it to :meth:`backward`.
        """
        dtype = self.dtype
        if not self.built:         # Keras: the first call builds the layer from its input
            self.build(V.as_array(a_prev, "a_prev", dtype, ndim=2).shape[1])
        a_prev = V.as_array(a_prev, "a_prev", dtype, ndim=2, width=self.n_in,
                            width_name="n_in", copy=True)
        n = a_prev.shape[0]
        z = np.empty((n, self.n_out), dtype=dtype)
        a = np.empty_like(z)
        _kernels.dense_forward(a_prev, self._W, self._b, ACTIVATIONS[self.activation], z, a)
        # the cache keeps its own a only where the derivative reads it; a is the caller's
        return a, DenseCache(self, a_prev, z, a.copy() if self.activation in NEEDS_A else None)

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

    def __repr__(self):
        widths = f"{self.n_out}" if self.n_in is None else f"{self.n_in}, {self.n_out}"
        extra = "".join(f", {k}={getattr(self, k)!r}" for k in ("l1", "l2") if getattr(self, k))
        return (f"Dense({widths}, activation={self.activation!r}, "
                f"init={self.init!r}, dtype={self.dtype.name!r}{extra})")
