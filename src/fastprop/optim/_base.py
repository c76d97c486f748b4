"""The optimizer base class (:class:`Optimizer`) and its checked state mapping
(:class:`OptimizerState`); one module per optimizer family holds the subclasses."""
import weakref
from collections.abc import Mapping

import numpy as np

from fastprop import _validation as V
from fastprop._core import _optim as _C
from fastprop.optim._checks import _count, _flag, _flat, _real, _step_count
from fastprop.optim.schedules import _check_schedule


class OptimizerState(Mapping):
    """The optimizer's state arrays by name: a read-through mapping that checks what is
    assigned.

    Reading gives the optimizer's own arrays (in-place edits of their values are allowed).
    Assigning ``state[name] = values`` copies ``values`` into the existing array after checking
    name, dtype, shape and values (finite; never negative for means of squares); the arrays the
    compiled update reads are never replaced, so state of the wrong size, dtype or layout cannot
    reach it. Entries cannot be deleted.
    """

    __slots__ = ("_opt",)

    def __init__(self, opt):
        self._opt = opt

    def __getitem__(self, name):
        return self._opt._state[name]

    def __iter__(self):
        return iter(self._opt._state)

    def __len__(self):
        return len(self._opt._state)

    def __setitem__(self, name, value):
        opt = self._opt
        if not isinstance(name, str):
            raise TypeError(f"state keys are names (str), got {type(name).__name__} {name!r}")
        if name not in opt._state:
            raise ValueError(f"{type(opt).__name__} has no state {name!r} with these options; "
                             f"its state is {list(opt._state)} (set up by the first step)")
        arr = opt._checked_state(name, value, f"state[{name!r}]", opt._n, opt._dtype)
        opt._state[name][...] = arr

    def __delitem__(self, name):
        raise TypeError("optimizer state entries cannot be deleted (use reset())")

    def __repr__(self):
        return f"OptimizerState({dict(self._opt._state)!r})"


# -- hyperparameter checks, run on every assignment (constructors included) -----------------------
def _check_betas(betas, name):
    if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__"):
        raise TypeError(f"{name} must be a pair of floats, got {type(betas).__name__}")
    if len(betas) != 2:
        raise ValueError(f"{name} must be a pair of floats, got {len(betas)} values")
    return tuple(_real(b, f"{name}[{i}]", low=0.0, high=1.0, high_open=True)
                 for i, b in enumerate(betas))


def _nonneg(value, name):
    return _real(value, name, low=0.0)


def _positive(value, name):
    return _real(value, name, low=0.0, low_open=True)


_CHECKS = {
    "base_lr": _nonneg,
    "weight_decay": _nonneg,
    "clip_norm": lambda v, name: None if v is None else _positive(v, name),
    "schedule": _check_schedule,
    "t": _step_count,
    "epoch": lambda v, name: _step_count(v, name),
    "iteration": lambda v, name: _step_count(v, name),
    "momentum": _nonneg,
    "dampening": _real,
    "nesterov": _flag,
    "amsgrad": _flag,
    "centered": _flag,
    "betas": _check_betas,
    # eps > 0: with eps = 0 a unit whose gradient stays 0 gets 0 / 0 = NaN
    "eps": _positive,
    "alpha": lambda v, name: _real(v, name, low=0.0, high=1.0),
    "lr_decay": _nonneg,
    "initial_accumulator_value": _nonneg,
}


# -- optimizers ----------------------------------------------------------------------------------
class Optimizer:
    """Base class: one compiled update of flat ``params`` from flat ``grads`` per :meth:`step`.

    Attributes
    ----------
    kind : int
        The compiled core's code for this optimizer (``_core._optim.KINDS``).
    state_names : tuple of str
        Every state array this optimizer declares, in the order its compiled kernel reads
        them (``_core._optim.LAYOUT``); :attr:`state` holds those its options use.
    lr : float
        The current learning rate. Assigning it sets ``base_lr`` too; with a schedule,
        :meth:`schedule_epoch` overwrites it with ``schedule(epoch, base_lr)``.
    base_lr : float
        The learning rate the schedule starts from (the constructor's ``lr``).
    state : OptimizerState (a mapping of str to ndarray)
        The flat state arrays (torch's names), allocated by the first :meth:`step`, or by
        :meth:`_setup`; the same arrays for the optimizer's lifetime. Assigning an entry, or
        the whole mapping (``opt.state = other_state``), copies checked values into these
        arrays: wrong names, sizes or dtypes raise ``ValueError`` / ``TypeError``.
    t : int
        Number of steps taken (torch's ``state["step"]``), 0 <= t <= 2**62.
    epoch, iteration : int
        The schedule's position: epochs completed and batches trained under ``fit`` (saved
        with the model, continued by the next ``fit``).

    Every hyperparameter is checked when it is assigned, not only in the constructor (the
    same rules as the constructor's; ``TypeError`` / ``ValueError`` naming it, the old value
    kept). ``kind`` cannot be assigned.

    An optimizer belongs to at most one model: the model it is given to (constructor or
    ``model.optimizer = opt``) owns it, and giving it to a second model while the first is
    alive raises ``ValueError`` (make a new optimizer, e.g. from ``opt.get_config()``).
    """

    kind = None
    #: the state arrays and the hyperparameter block, as the compiled kernel declares them
    #: (``_core._optim.LAYOUT[name]``): a subclass sets both from its kernel's entry
    state_names = ()
    _hyper_names = ()
    #: state entries that are running means of squares: never negative
    _nonnegative = ()
    #: constructor arguments saved by get_config, besides clip_norm and schedule
    _keys = ()

    def __init__(self, lr, weight_decay, clip_norm, schedule):
        self.lr = lr
        self.weight_decay = weight_decay
        self.clip_norm = clip_norm
        self.schedule = schedule
        self._state = {}
        self.t = 0
        self.epoch = 0
        self.iteration = 0
        self._n = None
        self._dtype = None
        self._owner = None

    def __setattr__(self, name, value):
        if name == "kind":
            raise AttributeError("kind is fixed by the optimizer's class")
        check = _CHECKS.get(name)
        if check is not None:
            value = check(value, name)
        # Any change but the step counter invalidates the compiled core's cached view of this
        # optimizer (_engine_args); t changes every step and is passed separately.
        if name != "t":
            object.__setattr__(self, "_args", None)
        if name in ("momentum", "dampening", "nesterov"):
            self._check_nesterov(**{name: value})
        object.__setattr__(self, name, value)

    def _check_nesterov(self, **change):
        """SGD's rule between its options, checked before one of them changes."""
        opts = {k: self.__dict__.get(k) for k in ("momentum", "dampening", "nesterov")}
        opts.update(change)
        if opts["nesterov"] and (opts["momentum"] is not None and opts["momentum"] <= 0 or
                                 opts["dampening"] is not None and opts["dampening"] != 0):
            raise ValueError("nesterov=True requires momentum > 0 and dampening == 0")

    # -- ownership ---------------------------------------------------------------------------
    def _attach(self, model, force=False):
        """Make ``model`` this optimizer's owner; ValueError if another live model owns it
        (unless ``force``: the model takes over another's internals)."""
        owner = self._owner() if self._owner is not None else None
        if owner is not None and owner is not model and not force:
            raise ValueError("this optimizer already belongs to another model (an optimizer "
                             "keeps the state of one model's parameters); give each model "
                             "its own, e.g. type(opt)(**...) or "
                             "fastprop.optim.optimizer_from_config(opt.get_config())")
        object.__setattr__(self, "_owner", weakref.ref(model))

    def __getstate__(self):
        # a copy (copy.copy, copy.deepcopy, pickle) belongs to no model yet
        state = dict(self.__dict__)
        state["_owner"] = None
        state["_args"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    def __copy__(self):
        # never two optimizers over the same state arrays
        new = type(self).__new__(type(self))
        new.__setstate__(self.__getstate__())
        new.__dict__["_state"] = {k: v.copy() for k, v in self._state.items()}
        return new

    def _detach(self, model):
        if self._owner is not None and self._owner() is model:
            object.__setattr__(self, "_owner", None)

    # -- state -------------------------------------------------------------------------------
    @property
    def state(self):
        return OptimizerState(self)

    @state.setter
    def state(self, value):
        if isinstance(value, OptimizerState) and value._opt is self:
            return
        self.set_state(value, self.t)

    def _engine_args(self, n_params, dtype):
        """``(kind, hyper, state)`` for the compiled update of ``n_params`` values of
        ``dtype``, the state set up as needed: ``hyper`` this optimizer's block of
        hyperparameters, ``state`` a uintp array of the addresses of its state arrays in
        :attr:`state_names` order (0 where unused). Cached until an attribute changes, so that
        a training step pays nothing for it; valid while the optimizer's ``_args`` is this
        tuple (the state arrays are never replaced without dropping it)."""
        args = self._args
        if args is None or n_params != self._n or dtype != self._dtype:
            self._setup(n_params, dtype)
            hyper = self.hyper()
            hyper.flags.writeable = False
            ptrs = np.array([0 if a is None else a.ctypes.data for a in self._state_arrays()],
                            dtype=np.uintp)
            ptrs.flags.writeable = False
            args = (self.kind, hyper, ptrs)
            self._args = args
        return args

    # -- learning rate ---------------------------------------------------------------------
    @property
    def lr(self):
        """The current learning rate (float >= 0)."""
        return self._lr

    @lr.setter
    def lr(self, value):
        self.base_lr = self._lr = _real(value, "lr", low=0.0)

    def schedule_epoch(self, epoch):
        """Set ``lr = schedule(epoch, base_lr)`` (epochs from 0) for a per-epoch schedule and
        return it.

        Without a schedule, or with a per-batch one, the learning rate stays as it is. ``fit``
        calls this at the start of every epoch with :attr:`epoch`, the number of epochs this
        optimizer has completed (the schedule's position: saved, loaded, continued by the next
        ``fit``; ``fit(initial_epoch=k)`` sets it to ``k``).
        """
        epoch = _count(epoch, "epoch", 0)
        if self.schedule is not None and not self.schedule.per_batch:
            self._lr = _real(self.schedule(epoch, self.base_lr), "scheduled lr", low=0.0)
        return self._lr

    def schedule_batch(self, iteration):
        """Set ``lr = schedule(iteration, base_lr)`` for a per-batch schedule (LinearLR,
        OneCycleLR, CosineAnnealingWarmRestarts, SequentialLR) and return it.

        The lr of batch ``i`` (from 0) is torch's after ``i`` calls of ``scheduler.step()``.
        ``fit`` calls this before every batch with :attr:`iteration`, the number of batches
        this optimizer has trained under ``fit`` (``train_step`` does not move it).
        """
        iteration = _count(iteration, "iteration", 0)
        if self.schedule is not None and self.schedule.per_batch:
            self._lr = _real(self.schedule(iteration, self.base_lr), "scheduled lr", low=0.0)
        return self._lr

    # -- the compiled core's view ----------------------------------------------------------
    def _hyper_values(self):
        return {}

    def hyper(self):
        """The hyperparameters as the compiled kernel reads them: this optimizer's float64
        block, one value per name of ``_core._optim.LAYOUT`` (flags as 0.0 / 1.0, clip_norm 0.0
        when off), with the current ``lr``."""
        values = {"lr": self._lr, "weight_decay": self.weight_decay,
                  "clip_norm": self.clip_norm or 0.0, **self._hyper_values()}
        if set(values) != set(self._hyper_names):     # a class out of step with its kernel
            raise RuntimeError(f"{type(self).__name__} gives hyperparameters {sorted(values)}, "
                               f"its kernel reads {list(self._hyper_names)}")
        return np.array([float(values[k]) for k in self._hyper_names], dtype=np.float64)

    def _state_names(self):
        """Names of the state arrays these options use, in declared order."""
        used = _C.uses(self.kind, self.hyper())
        return [name for name, u in zip(self.state_names, used) if u]

    def _initial_value(self, name):
        return 0.0

    def _state_arrays(self):
        """The state arrays in :attr:`state_names` order, None where unused."""
        return [self._state.get(name) for name in self.state_names]

    def _setup(self, n_params, dtype):
        """Allocate the state arrays (at their initial values) for ``n_params`` parameters of
        ``dtype``.

        Idempotent: with the size and dtype already set up, state and t are kept; only if the
        options changed since (say momentum 0 -> 0.9) are the newly needed arrays added (at
        their initial values) and the unused ones dropped. Set up for another size or dtype
        (another model), it starts over with ``t = 0``.
        """
        n = _count(n_params, "n_params", 1)
        dtype = V.as_dtype(dtype)
        names = self._state_names()
        if n == self._n and dtype == self._dtype:
            if list(self._state) != names:
                self._state = {name: self._state[name] if name in self._state
                               else np.full(n, self._initial_value(name), dtype=dtype)
                               for name in names}
            return
        V.check_alloc(n * len(names), dtype.itemsize, "optimizer state")
        state = {name: np.full(n, self._initial_value(name), dtype=dtype) for name in names}
        if self._n is not None:
            self.t = 0
        self._state, self._n, self._dtype = state, n, dtype

    def reset(self):
        """Forget the state: arrays back to their initial values (in place), ``t = 0``."""
        for name, arr in self._state.items():
            arr[...] = self._initial_value(name)
        self.t = 0
        self.epoch = self.iteration = 0

    # -- the update ------------------------------------------------------------------------
    def step(self, params, grads):
        """One update of ``params`` in place from ``grads``; increments :attr:`t`.

        Parameters
        ----------
        params : ndarray (n,), float32 or float64, C-contiguous, writable
            Updated in place.
        grads : ndarray (n,), same dtype, C-contiguous, writable
            Read; scaled in place only when ``clip_norm`` is set.

        Raises
        ------
        TypeError, ValueError
            Naming the argument, before anything is changed; ValueError too when the update
            is refused because it could make a parameter or the state NaN / inf (gradients,
            parameters or state too large for the learning rate and eps): nothing changes.
        """
        _flat(params, "params")
        _flat(grads, "grads", params.dtype)
        n = params.shape[0]
        if n == 0:
            raise ValueError("params is empty")
        if grads.shape[0] != n:
            raise ValueError(f"grads has length {grads.shape[0]}, expected {n} (params)")
        if self._n is not None and (n != self._n or params.dtype != self._dtype):
            raise ValueError(f"params has length {n} and dtype {params.dtype}, but this "
                             f"optimizer was set up for {self._n} {self._dtype.name} values; "
                             f"call reset() and _setup() for a new model")
        if np.may_share_memory(params, grads):
            raise ValueError("grads must not share memory with params")
        if not V.all_finite(grads):
            raise ValueError("grads contains NaN or infinity (the loss or the backward pass "
                             "overflowed); nothing was updated")
        self._setup(n, params.dtype)
        t = self.t + 1
        if not _C.step(self.kind, self.hyper(), params, grads, self._state_arrays(), t):
            raise ValueError("this update could make parameters or optimizer state overflow "
                             "(gradients, parameters or state too large for the learning "
                             "rate and eps); nothing was updated")
        object.__setattr__(self, "t", t)

    # -- save / load -----------------------------------------------------------------------
    def get_config(self):
        """JSON-serialisable dict: ``name``, the hyperparameters (``lr`` is ``base_lr``),
        ``current_lr`` (the rate in use, set by a schedule), ``clip_norm`` and ``schedule``
        (its config, or None)."""
        cfg = {"name": type(self).__name__}
        for key in self._keys:
            value = getattr(self, key)
            cfg[key] = list(value) if isinstance(value, tuple) else value
        cfg["lr"] = self.base_lr
        cfg["current_lr"] = self._lr
        cfg["clip_norm"] = self.clip_norm
        cfg["schedule"] = None if self.schedule is None else self.schedule.get_config()
        if self.epoch or self.iteration:   # the schedule's position (absent: 0, as in 0.1.0)
            cfg["epoch"], cfg["iteration"] = self.epoch, self.iteration
        return cfg

    def get_state(self):
        """(copies of the state arrays by name, t)."""
        return {name: arr.copy() for name, arr in self._state.items()}, self.t

    def set_state(self, arrays, t):
        """Restore what :meth:`get_state` returned; validated in full before anything changes.

        Raises
        ------
        TypeError
            ``arrays`` not a dict, entries not float arrays of the optimizer's dtype, t not int.
        ValueError
            Missing or unknown names, wrong shapes, NaN / inf, negative second moments, t < 0.
        """
        if not isinstance(arrays, Mapping):
            raise TypeError(f"arrays must be a dict of state arrays, got "
                            f"{type(arrays).__name__}")
        t = _step_count(t)
        names = self._state_names()
        if set(arrays) != set(names):
            raise ValueError(f"arrays must hold exactly {names} for these options, got "
                             f"{sorted(arrays, key=str)}")
        n, dtype = self._n, self._dtype
        checked = {}
        for name in names:
            arr = self._checked_state(name, arrays[name], f"arrays[{name!r}]", n, dtype)
            dtype, n = arr.dtype, arr.shape[0]
            checked[name] = arr
        if n is not None:
            self._setup(n, dtype)
        for name, arr in checked.items():
            self._state[name][...] = arr
        self.t = t

    def _checked_state(self, name, arr, label, n, dtype):
        """``arr`` checked as the state array ``name`` of ``n`` values of ``dtype`` (None:
        any)."""
        if not isinstance(arr, np.ndarray) or isinstance(arr, np.ma.MaskedArray):
            raise TypeError(f"{label} must be a numpy.ndarray, got {type(arr).__name__}")
        if arr.dtype not in (np.float32, np.float64) or (dtype is not None
                                                       and arr.dtype != dtype):
            want = dtype.name if dtype is not None else "float32 or float64"
            raise TypeError(f"{label} has dtype {arr.dtype}, expected {want}")
        if arr.ndim != 1 or (n is not None and arr.shape[0] != n) or arr.shape[0] == 0:
            want = f"({n},)" if n is not None else "a non-empty 1-D shape"
            raise ValueError(f"{label} has shape {arr.shape}, expected {want}")
        if not np.isfinite(arr).all():
            raise ValueError(f"{label} contains NaN or infinity")
        if name in self._nonnegative and (arr < 0).any():
            raise ValueError(f"{label} holds negative values (it is a mean of squares)")
        return arr

    def __repr__(self):
        parts = [f"lr={self._lr!r}"] + [f"{k}={getattr(self, k)!r}" for k in self._keys]
        if self.clip_norm is not None:
            parts.append(f"clip_norm={self.clip_norm!r}")
        if self.schedule is not None:
            parts.append(f"schedule={self.schedule!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

