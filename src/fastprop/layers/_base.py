"""The layer protocol every layer kind follows, and the registry of kinds by name.

A layer declares its trainable parameters (:meth:`Layer.add_param`) and its non-trainable state
buffers (:meth:`Layer.add_state`) by name and shape in :meth:`Layer.build`; a model lays them
out in its flat ``params`` / ``grads`` buffers and its flat ``state`` buffer, in declaration
order, and rebinds the layer's arrays to views into them. Every layer has the textbook pair
``forward(a_prev, training=False) -> (a, cache)`` and ``backward(da, cache) -> (da_prev,
*grads)`` (grads in ``add_param`` order) and ``get_config()``; the registry
(:func:`register_layer`) finds a kind by name for ``from_config`` and ``fastprop.load``.
"""
import weakref

import numpy as np

from fastprop import _validation as V
from fastprop.initializers import INITIALIZERS, canonical_init, initialize

__all__ = ["Layer", "register_layer", "get_layer_class", "LAYERS"]


def float_dtype(x):
    """float32 / float64 (native) when ``x`` is an array of that dtype in either byte order,
    float64 otherwise: the dtype policy of the parameter-free kinds (Dropout, Activation)."""
    dt = getattr(x, "dtype", None)
    if isinstance(dt, np.dtype) and dt.kind == "f" and dt.itemsize in (4, 8):
        return dt.newbyteorder("=")
    return np.dtype(np.float64)

#: name -> class of every registered layer kind
LAYERS = {}


def register_layer(cls):
    """Register a :class:`Layer` subclass under its class name (usable as a decorator).

    Registered kinds are what ``Sequential.get_config`` / ``from_config`` and
    :func:`fastprop.load` can name. Returns ``cls``.

    Raises
    ------
    TypeError
        ``cls`` is not a subclass of :class:`Layer`.
    ValueError
        Another class is registered under the same name.
    """
    if not isinstance(cls, type) or not issubclass(cls, Layer):
        raise TypeError(f"register_layer takes a subclass of fastprop.Layer, got {cls!r}")
    name = cls.__name__
    if LAYERS.get(name, cls) is not cls:
        raise ValueError(f"a different layer class is already registered as {name!r}")
    LAYERS[name] = cls
    return cls


def get_layer_class(name):
    """The registered layer class called ``name``; ValueError if there is none."""
    if not isinstance(name, str) or name not in LAYERS:
        raise ValueError(f"unknown layer kind {name!r}; registered: {', '.join(sorted(LAYERS))}")
    return LAYERS[name]


def assign_weights(targets, weights, dtype=None):
    """Check ``weights`` against ``targets`` (a list of (label, array)) and copy them in.

    Count, shapes, real and finite values are checked for every entry before any is written
    (``dtype``: the cast of all, else each target's own dtype)."""
    if isinstance(weights, np.ndarray) or not isinstance(weights, (list, tuple)):
        raise TypeError(f"weights must be a list of arrays, got {type(weights).__name__}")
    if len(weights) != len(targets):
        raise ValueError(f"weights must hold {len(targets)} arrays "
                         f"({', '.join(t[0] for t in targets) or 'none'}), got {len(weights)}")
    checked = []
    for i, ((label, arr), w) in enumerate(zip(targets, weights)):
        v = V.as_array(w, f"weights[{i}] ({label})", dtype or arr.dtype, ndim=arr.ndim,
                       allow_empty=arr.size == 0)
        if v.shape != arr.shape:
            raise ValueError(f"weights[{i}] ({label}) must have shape {arr.shape}, got "
                             f"{v.shape}")
        checked.append(v)
    for (_, arr), v in zip(targets, checked):
        arr[...] = v


class Layer:
    """Base of every layer kind (the layer protocol).

    Subclasses implement :meth:`build`, :meth:`forward`, :meth:`backward` and
    :meth:`get_config`, declare their parameters with :meth:`add_param` and their state with
    :meth:`add_state` inside ``build``, and are registered with :func:`register_layer`.

    Building: a kind whose parameters depend on the input width (Keras-style
    ``Dense(n_out)``) reports ``built`` False until :meth:`build` is called with that width;
    a model calls it once the width is known (the previous layer, ``input_dim``, the data).
    :meth:`get_weights` / :meth:`set_weights` read the declared parameters then the state
    buffers, in declaration order. ``trainable = False`` freezes the layer: in a model, the
    update leaves its parameters and their optimizer state unchanged (gradients still flow
    through it to the layers before); setting it tells the model that holds the layer, which
    rebuilds its frozen ranges then (never per step).

    A layer belongs to at most one :class:`~fastprop.Sequential` at a time: giving a layer that
    a live model holds to a second model raises ``ValueError`` (make a new layer, or
    ``copy.deepcopy`` the first model).

    Custom layers in Python: a subclass that defines ``build``, ``forward`` and ``backward``
    (NumPy in, NumPy out) runs inside a compiled model as a Python node (see the README,
    "Custom layers", and :mod:`fastprop.layers._python`). A parameter or state buffer declared
    as ``name`` is read as ``self.name`` (a view into the model's buffers once in a model);
    write it in place, rebinding it raises ``AttributeError``.
    """

    def __getattr__(self, name):
        # declared parameters / state read as self.<name> (kinds may define properties)
        d = self.__dict__
        specs = d.get("_param_specs")
        if specs is not None and (name in specs or name in d["_state_specs"]) \
                and "_" + name in d:
            return d["_" + name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name, value):
        d = self.__dict__
        specs = d.get("_param_specs")
        if specs is not None and (name in specs or name in d["_state_specs"]) \
                and getattr(type(self), name, None) is None:
            raise AttributeError(
                f"{type(self).__name__}.{name} is declared by add_param / add_state (a view "
                f"into the model's buffers once in a model): write it in place "
                f"(self.{name}[...] = value) instead of rebinding it")
        object.__setattr__(self, name, value)

    # -- declaration ----------------------------------------------------------------------------
    def build(self, n_in):
        """Declare parameters / state for an input of width ``n_in``; return the output width."""
        raise NotImplementedError(f"{type(self).__name__}.build")

    def _specs(self):
        d = self.__dict__
        if "_param_specs" not in d:
            object.__setattr__(self, "_param_specs", {})
            object.__setattr__(self, "_state_specs", {})
        return d["_param_specs"], d["_state_specs"]

    def _declare(self, table, kind, name, shape, init, dtype, rng):
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"{kind} name must be an identifier string, got {name!r}")
        params, states = self._specs()
        if name in params or name in states:
            raise ValueError(f"{type(self).__name__} already declares {name!r}")
        if isinstance(shape, (int, np.integer)):
            shape = (shape,)
        if not isinstance(shape, tuple) or not shape:
            raise TypeError(f"shape of {name!r} must be a non-empty tuple of ints, got {shape!r}")
        shape = tuple(V.check_size(s, f"shape of {name!r}") for s in shape)
        dtype = V.as_dtype(dtype)
        size = int(np.prod(shape))
        V.check_alloc(size, 8 + dtype.itemsize, f"{type(self).__name__}.{name}")
        if isinstance(init, str) and init.lower() in ("zeros", "ones"):
            value = np.full(shape, 1.0 if init.lower() == "ones" else 0.0, dtype=dtype)
        elif isinstance(init, str):
            init = canonical_init(init)
            if len(shape) != 2:
                raise ValueError(f"initializer {init!r} needs a 2-D shape (fan_in, fan_out), "
                                 f"got {shape} for {name!r}; one of {INITIALIZERS}")
            value = initialize(init, shape[0], shape[1], rng or np.random.default_rng())
            value = value.astype(dtype)
        else:
            value = V.as_array(init, f"init of {name!r}", dtype, ndim=len(shape), copy=True)
            if value.shape != shape:
                raise ValueError(f"init of {name!r} has shape {value.shape}, expected {shape}")
        table[name] = shape
        object.__setattr__(self, "_" + name, value)
        return value

    def add_param(self, name, shape, init="zeros", dtype="float32", rng=None):
        """Declare a trainable parameter; return its array.

        The array is kept as ``self._<name>`` (built-in layers expose it as a property, e.g.
        ``Dense.W``); a model rebinds ``self._<name>`` to a view into its flat ``params`` and
        ``self.d<name>`` to the matching view into ``grads``. Read parameters through
        ``self._<name>`` in ``forward`` / ``backward``: a reference kept from ``add_param``
        is no longer the parameter once the layer is in a model.

        Parameters
        ----------
        name : str
            An identifier.
        shape : int or tuple of int
        init : {"zeros", "ones"}, an initializer name (2-D shapes) or array_like
        dtype : {"float32", "float64"}
        rng : numpy.random.Generator, optional
            The stream of random initializers.
        """
        return self._declare(self._specs()[0], "parameter", name, shape, init, dtype, rng)

    def add_state(self, name, shape, init="zeros", dtype="float32"):
        """Declare a non-trainable state buffer (for example running statistics); return its
        array, kept as ``self._<name>`` (rebound by a model to a view into its flat ``state``
        buffer, which ``save`` and pickle carry)."""
        return self._declare(self._specs()[1], "state", name, shape, init, dtype, None)

    @property
    def param_shapes(self):
        """``{name: shape}`` of the trainable parameters, in declaration order."""
        return dict(self._specs()[0])

    @property
    def state_shapes(self):
        """``{name: shape}`` of the state buffers, in declaration order."""
        return dict(self._specs()[1])

    # -- arrays: subclasses keep them in attributes of their choice -------------------------------
    def _get_array(self, name):
        return getattr(self, "_" + name)

    def _set_arrays(self, values, grads):
        """Rebind parameters / state (dict name -> array) and gradients to the given arrays."""
        for name, arr in values.items():
            object.__setattr__(self, "_" + name, arr)
        for name, arr in grads.items():
            object.__setattr__(self, "d" + name, arr)

    def parameters(self):
        """The trainable parameter arrays, in declaration order."""
        return [self._get_array(n) for n in self._specs()[0]]

    def states(self):
        """The state arrays, in declaration order."""
        return [self._get_array(n) for n in self._specs()[1]]

    def _weights(self):
        """(name, array) of the parameters then the state buffers, in declaration order."""
        params, states = self._specs()
        return [(n, self._get_array(n)) for n in list(params) + list(states)]

    @property
    def built(self):
        """Whether the layer's parameters exist (kinds built when made, or with nothing to
        build, are always built; a Keras-style ``Dense(n_out)`` is built with its width)."""
        return True

    def get_weights(self):
        """Copies of the parameters then the state buffers, in declaration order (Keras'
        ``layer.get_weights``)."""
        if not self.built:
            raise ValueError(f"{self!r} is not built yet (its input width is unknown): call "
                             f"build(n_in) or use it in a model first")
        return [arr.copy() for _, arr in self._weights()]

    def set_weights(self, weights):
        """Copy ``weights`` (as :meth:`get_weights` returns them) into the layer; count,
        shapes and finiteness checked before anything is written (inside a model, this
        writes into the model's buffers)."""
        if not self.built:
            raise ValueError(f"{self!r} is not built yet (its input width is unknown): call "
                             f"build(n_in) or use it in a model first")
        assign_weights([(f"{type(self).__name__}.{n}", a) for n, a in self._weights()],
                       weights)

    @property
    def trainable(self):
        """bool: False freezes the layer's parameters (a model's update skips their range of
        the flat buffer; their optimizer state does not move). Default True."""
        return self.__dict__.get("_trainable", True)

    @trainable.setter
    def trainable(self, value):
        value = V.check_bool(value, "trainable")
        if value == self.trainable:
            return
        object.__setattr__(self, "_trainable", value)
        ref = self.__dict__.get("_owner")
        owner = ref() if ref is not None else None
        if owner is not None:          # the model rebuilds its frozen ranges now, not per step
            owner._trainable_changed()

    @property
    def n_params(self):
        return sum(int(np.prod(s)) for s in self._specs()[0].values())

    @property
    def n_state(self):
        return sum(int(np.prod(s)) for s in self._specs()[1].values())

    # -- ownership ----------------------------------------------------------------------------
    def _claim(self, model):
        """Mark this layer as part of ``model``; ValueError if another live model holds it."""
        ref = self.__dict__.get("_owner")
        owner = ref() if ref is not None else None
        if owner is not None and owner is not model:
            raise ValueError(f"{self!r} already belongs to another model (a layer belongs to "
                             f"one model: make a new layer, or copy.deepcopy the model)")
        object.__setattr__(self, "_owner", weakref.ref(model))

    def _release(self, model):
        ref = self.__dict__.get("_owner")
        if ref is not None and ref() is model:
            object.__setattr__(self, "_owner", None)

    # -- the block ------------------------------------------------------------------------------
    def forward(self, a_prev, training=False):
        """Return ``(a, cache)`` for a batch ``a_prev`` (n_samples, n_in)."""
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, da, cache):
        """Return ``(da_prev, *grads)`` (grads in ``add_param`` order)."""
        raise NotImplementedError(f"{type(self).__name__}.backward")

    def get_config(self):
        """JSON-serialisable ``{"type": <registered name>, **constructor arguments}``.

        The default, ``{"type": <class name>}`` (and ``"trainable": False`` for a frozen
        layer), suits a layer whose constructor takes no arguments; a custom layer with
        arguments returns ``{**super().get_config(), "arg": value, ...}`` (JSON values), which
        the default :meth:`from_config` passes back to its constructor as keyword arguments.
        Parameters and state are not part of it (a model file carries them)."""
        config = {"type": type(self).__name__}
        if not self.trainable:
            config["trainable"] = False
        return config

    @classmethod
    def from_config(cls, config, dtype="float32"):
        """A layer from :meth:`get_config` output (parameters at their initial values).

        The default calls ``cls(**arguments)`` with every key of ``config`` but ``type`` and
        ``trainable`` (set on the new layer); a constructor that refuses them raises
        ``ValueError``. ``dtype`` is the model's (a model casts the parameters to it)."""
        if not isinstance(config, dict) or config.get("type") != cls.__name__:
            raise ValueError(f"a {cls.__name__} config is a dict whose type is "
                             f"{cls.__name__!r}, got {config!r}")
        args = {k: v for k, v in config.items() if k not in ("type", "trainable")}
        try:
            layer = cls(**args)
        except TypeError as e:
            raise ValueError(f"{cls.__name__}(**{args!r}) failed ({e}): a layer whose "
                             f"constructor takes arguments returns them from get_config") \
                from None
        layer.trainable = config.get("trainable", True)
        return layer

    def __call__(self, a_prev, training=False):
        return self.forward(a_prev, training=training)
