"""Optimizers over flat parameter buffers, with torch.optim's semantics and defaults.

A model keeps all of its parameters in one contiguous 1-D array ``params`` and their gradients
in ``grads`` (same length, same dtype). An optimizer update is one fused compiled pass over
these two arrays and its state arrays (``self.state``, flat too, same dtype), with the GIL
released. Each class takes torch's constructor keywords with torch's defaults, plus

- ``clip_norm``: clip the global L2 norm of ``grads`` first (in place), as
  ``torch.nn.utils.clip_grad_norm_(parameters, clip_norm)`` does;
- ``schedule``: a learning-rate schedule: per epoch (:class:`StepLR`, :class:`ExponentialLR`,
  :class:`CosineAnnealingLR`), applied by :meth:`Optimizer.schedule_epoch`, or per batch
  (:class:`LinearLR`, :class:`OneCycleLR`, :class:`CosineAnnealingWarmRestarts`,
  :class:`SequentialLR`), applied by :meth:`Optimizer.schedule_batch`. The schedule's position
  (``optimizer.epoch``, ``optimizer.iteration``) is part of the optimizer's state: saved,
  loaded, pickled and continued by the next ``fit``.

Weight decay never writes to ``grads``: it is added to a local copy of each gradient value (L2,
torch's ``weight_decay``) or, for :class:`AdamW`, applied to the parameters (decoupled).

Examples
--------
>>> import numpy as np
>>> from fastprop.optim import Adam
>>> params = np.ones(4); grads = np.full(4, 0.5)
>>> opt = Adam(lr=0.1)
>>> opt.step(params, grads)      # first step of Adam moves each parameter by ~lr
>>> params.round(6)
array([0.9, 0.9, 0.9, 0.9])
"""
import bisect
import math
import operator
import weakref
from collections.abc import Mapping

import numpy as np

from fastprop import _validation as V
from fastprop._core import _optim as _C

__all__ = [
    "Optimizer",
    "SGD",
    "Adam",
    "AdamW",
    "RMSprop",
    "Adagrad",
    "Schedule",
    "StepLR",
    "ExponentialLR",
    "CosineAnnealingLR",
    "LinearLR",
    "OneCycleLR",
    "CosineAnnealingWarmRestarts",
    "SequentialLR",
    "OPTIMIZERS",
    "SCHEDULES",
    "get_optimizer",
    "optimizer_from_config",
    "schedule_from_config",
]


# -- argument checks -----------------------------------------------------------------------------
_real = V.check_real
_flag = V.check_bool


def _count(value, name, minimum):
    """``value`` as a Python int >= minimum (no upper bound), or raise naming ``name``."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got a bool")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} "
                        f"{value!r}") from None
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def _flat(x, name, dtype=None):
    """Check that ``x`` is a writable 1-D C-contiguous float32 / float64 ndarray (of ``dtype``)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(x).__name__}")
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must have dtype float32 or float64, got {x.dtype}")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(f"{name} has dtype {x.dtype}, expected {dtype.name} (params)")
    if x.ndim != 1:
        raise ValueError(f"{name} must be a flat 1-D array, got shape {x.shape}")
    if not x.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (it is updated in place)")
    if not x.flags.writeable:
        raise ValueError(f"{name} is read-only, but it is updated in place")
    return x


_T_MAX = 2**62      # the step counter stays far from the compiled core's 64-bit overflow


def _step_count(value, name="t"):
    t = _count(value, name, 0)
    if t > _T_MAX:
        raise ValueError(f"{name} must be <= 2**62, got {t}")
    return t


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


# -- learning-rate schedules ---------------------------------------------------------------------
class Schedule:
    """A learning-rate schedule: ``schedule(epoch, base_lr) -> lr``, epochs counted from 0.

    Closed forms of torch.optim.lr_scheduler's schedules: the lr of epoch ``e`` is the one
    torch's scheduler gives after ``e`` calls of ``scheduler.step()``. Their parameters are
    checked on every assignment, as in the constructors.
    """

    _keys = ()
    #: False: one position per epoch (:meth:`Optimizer.schedule_epoch`); True: one per
    #: training batch (:meth:`Optimizer.schedule_batch`)
    per_batch = False

    def __setattr__(self, name, value):
        # checked on every assignment, constructors included
        check = _SCHEDULE_CHECKS.get(name)
        if check is not None:
            value = check(value, name)
        object.__setattr__(self, name, value)

    def __call__(self, epoch, base_lr):
        epoch = _count(epoch, "epoch", 0)
        base_lr = _real(base_lr, "base_lr", low=0.0)
        return float(self._lr(epoch, base_lr))

    def _lr(self, epoch, base_lr):
        raise NotImplementedError

    def get_config(self):
        """JSON-serialisable dict: ``name`` and the constructor arguments."""
        return {"name": type(self).__name__, **{k: getattr(self, k) for k in self._keys}}

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __repr__(self):
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._keys)
        return f"{type(self).__name__}({args})"


class StepLR(Schedule):
    """Decay by ``gamma`` every ``step_size`` epochs: ``lr = base_lr * gamma ** (epoch // step_size)``.

    Parameters
    ----------
    step_size : int >= 1
    gamma : float > 0, default 0.1
    """

    _keys = ("step_size", "gamma")

    def __init__(self, step_size, gamma=0.1):
        self.step_size = step_size
        self.gamma = gamma

    def _lr(self, epoch, base_lr):
        return base_lr * self.gamma ** (epoch // self.step_size)


class ExponentialLR(Schedule):
    """Decay by ``gamma`` every epoch: ``lr = base_lr * gamma ** epoch``.

    Parameters
    ----------
    gamma : float > 0
    """

    _keys = ("gamma",)

    def __init__(self, gamma):
        self.gamma = gamma

    def _lr(self, epoch, base_lr):
        return base_lr * self.gamma ** epoch


class CosineAnnealingLR(Schedule):
    """Cosine annealing from ``base_lr`` to ``eta_min`` over ``T_max`` epochs (closed form)::

        lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2

    Beyond ``T_max`` the cosine continues (back up to ``base_lr`` at ``2 T_max``), as in torch.

    Parameters
    ----------
    T_max : int >= 1
    eta_min : float >= 0, default 0
    """

    _keys = ("T_max", "eta_min")

    def __init__(self, T_max, eta_min=0.0):
        self.T_max = T_max
        self.eta_min = eta_min

    def _lr(self, epoch, base_lr):
        cos = 1 + math.cos(math.pi * epoch / self.T_max)
        return self.eta_min + (base_lr - self.eta_min) * cos / 2


class LinearLR(Schedule):
    """Per-batch linear warmup (torch.optim.lr_scheduler.LinearLR)::

        lr = base_lr * (start_factor + (end_factor - start_factor) * min(i, total_iters) / total_iters)

    at batch ``i`` (counted from 0 over all ``fit`` calls).

    Parameters
    ----------
    start_factor : float in (0, 1], default 1/3
    end_factor : float in [0, 1], default 1.0
    total_iters : int >= 1, default 5
    """

    _keys = ("start_factor", "end_factor", "total_iters")
    per_batch = True

    def __init__(self, start_factor=1.0 / 3, end_factor=1.0, total_iters=5):
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters

    def _lr(self, i, base_lr):
        frac = min(i, self.total_iters) / self.total_iters
        return base_lr * (self.start_factor + (self.end_factor - self.start_factor) * frac)


class OneCycleLR(Schedule):
    """Per-batch one-cycle policy (torch.optim.lr_scheduler.OneCycleLR, ``cycle_momentum``
    not supported: momentum / betas stay as set).

    From ``max_lr / div_factor`` up to ``max_lr`` over the first ``pct_start`` of
    ``total_steps`` batches, then down to ``max_lr / div_factor / final_div_factor`` (with
    ``three_phase``: back to the initial rate first, then down), by cosine or linear annealing.
    The optimizer's ``lr`` is ignored, as in torch. After ``total_steps`` batches the final rate
    is kept (torch raises there).

    Parameters
    ----------
    max_lr : float > 0
    total_steps : int >= 2
    pct_start : float in (0, 1), default 0.3
    anneal_strategy : {"cos", "linear"}, default "cos"
    div_factor : float > 0, default 25
    final_div_factor : float > 0, default 1e4
    three_phase : bool, default False
    """

    _keys = ("max_lr", "total_steps", "pct_start", "anneal_strategy", "div_factor",
             "final_div_factor", "three_phase")
    per_batch = True

    def __init__(self, max_lr, total_steps, pct_start=0.3, anneal_strategy="cos",
                 div_factor=25.0, final_div_factor=1e4, three_phase=False):
        self.max_lr = max_lr
        self.total_steps = total_steps
        self.pct_start = pct_start
        self.anneal_strategy = anneal_strategy
        self.div_factor = div_factor
        self.final_div_factor = final_div_factor
        self.three_phase = three_phase

    def _lr(self, i, base_lr):
        initial = self.max_lr / self.div_factor
        low = initial / self.final_div_factor
        n, pct = self.total_steps, self.pct_start
        if self.three_phase:
            phases = [(float(pct * n) - 1, initial, self.max_lr),
                      (float(2 * pct * n) - 2, self.max_lr, initial),
                      (n - 1, initial, low)]
        else:
            phases = [(float(pct * n) - 1, initial, self.max_lr), (n - 1, self.max_lr, low)]
        i = min(i, n - 1)
        start = 0
        for k, (end, lo, hi) in enumerate(phases):
            if i <= end or k == len(phases) - 1:
                frac = (i - start) / (end - start)
                if self.anneal_strategy == "cos":
                    return hi + (lo - hi) / 2.0 * (math.cos(math.pi * frac) + 1)
                return (hi - lo) * frac + lo
            start = end


class CosineAnnealingWarmRestarts(Schedule):
    """Per-batch cosine annealing with warm restarts (SGDR; torch's
    CosineAnnealingWarmRestarts stepped once per batch)::

        lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2

    where the first cycle has ``T_i = T_0`` batches, each next one ``T_mult`` times more, and
    ``T_cur`` counts the batches since the last restart.

    Parameters
    ----------
    T_0 : int >= 1
    T_mult : int >= 1, default 1
    eta_min : float >= 0, default 0
    """

    _keys = ("T_0", "T_mult", "eta_min")
    per_batch = True

    def __init__(self, T_0, T_mult=1, eta_min=0.0):
        self.T_0 = T_0
        self.T_mult = T_mult
        self.eta_min = eta_min

    def _lr(self, i, base_lr):
        T_i = self.T_0
        if self.T_mult == 1:
            i %= T_i
        else:
            while i >= T_i:      # exact integers; O(log i) cycles
                i -= T_i
                T_i *= self.T_mult
        cos = 1 + math.cos(math.pi * i / T_i)
        return self.eta_min + (base_lr - self.eta_min) * cos / 2


class SequentialLR(Schedule):
    """Chain schedules per batch (torch.optim.lr_scheduler.SequentialLR): ``schedulers[k]``
    runs from batch ``milestones[k - 1]`` on, its position restarting at 0 there.

    Every child is evaluated at a batch count (a StepLR inside counts batches, not epochs).

    Parameters
    ----------
    schedulers : list of Schedule (or their config dicts), at least 2
    milestones : list of int, strictly increasing, >= 1, ``len(schedulers) - 1`` of them

    Examples
    --------
    >>> warm = SequentialLR([LinearLR(0.1, total_iters=100), CosineAnnealingLR(T_max=900)],
    ...                     milestones=[100])
    """

    _keys = ("schedulers", "milestones")
    per_batch = True

    def __init__(self, schedulers, milestones):
        if isinstance(schedulers, (str, bytes, Mapping)) or not hasattr(schedulers, "__len__"):
            raise TypeError(f"schedulers must be a list of schedules, got "
                            f"{type(schedulers).__name__}")
        scheds = tuple(_check_schedule(c, f"schedulers[{i}]") for i, c in enumerate(schedulers))
        if len(scheds) < 2 or any(c is None for c in scheds):
            raise ValueError("schedulers must hold at least 2 schedules (no None)")
        if isinstance(milestones, (str, bytes)) or not hasattr(milestones, "__len__"):
            raise TypeError(f"milestones must be a list of int, got {type(milestones).__name__}")
        miles = tuple(_count(m, f"milestones[{i}]", 1) for i, m in enumerate(milestones))
        if len(miles) != len(scheds) - 1:
            raise ValueError(f"milestones must hold len(schedulers) - 1 = {len(scheds) - 1} "
                             f"values, got {len(miles)}")
        if any(b <= a for a, b in zip(miles, miles[1:])):
            raise ValueError(f"milestones must be strictly increasing, got {list(miles)}")
        object.__setattr__(self, "schedulers", scheds)
        object.__setattr__(self, "milestones", miles)

    def __setattr__(self, name, value):
        raise AttributeError("a SequentialLR is fixed when made; build a new one")

    def _lr(self, i, base_lr):
        k = bisect.bisect_right(self.milestones, i)
        start = self.milestones[k - 1] if k else 0
        return self.schedulers[k]._lr(i - start, base_lr)

    def get_config(self):
        return {"name": "SequentialLR", "schedulers": [c.get_config() for c in self.schedulers],
                "milestones": list(self.milestones)}


SCHEDULES = {cls.__name__: cls for cls in (StepLR, ExponentialLR, CosineAnnealingLR, LinearLR,
                                           OneCycleLR, CosineAnnealingWarmRestarts,
                                           SequentialLR)}


def _check_choice(choices):
    def check(value, name):
        if value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got "
                             f"{value!r}")
        return value
    return check


_SCHEDULE_CHECKS = {
    "step_size": lambda v, name: _count(v, name, 1),
    "T_max": lambda v, name: _count(v, name, 1),
    "T_0": lambda v, name: _count(v, name, 1),
    "T_mult": lambda v, name: _count(v, name, 1),
    "total_iters": lambda v, name: _count(v, name, 1),
    "total_steps": lambda v, name: _count(v, name, 2),
    "gamma": lambda v, name: _real(v, name, low=0.0, low_open=True),
    "eta_min": lambda v, name: _real(v, name, low=0.0),
    "start_factor": lambda v, name: _real(v, name, low=0.0, high=1.0, low_open=True),
    "end_factor": lambda v, name: _real(v, name, low=0.0, high=1.0),
    "max_lr": lambda v, name: _real(v, name, low=0.0, low_open=True),
    "pct_start": lambda v, name: _real(v, name, low=0.0, high=1.0, low_open=True,
                                       high_open=True),
    "div_factor": lambda v, name: _real(v, name, low=0.0, low_open=True),
    "final_div_factor": lambda v, name: _real(v, name, low=0.0, low_open=True),
    "anneal_strategy": _check_choice(("cos", "linear")),
    "three_phase": lambda v, name: _flag(v, name),
}


def _from_config(cfg, table, what):
    if not isinstance(cfg, Mapping):
        raise TypeError(f"{what} config must be a dict, got {type(cfg).__name__}")
    name = cfg.get("name")
    if name not in table:
        raise ValueError(f"{what} config 'name' must be one of {', '.join(table)}; got {name!r}")
    cls = table[name]
    allowed = set(cls._keys) | {"name"}
    unknown = sorted(set(cfg) - allowed, key=str)
    if unknown:
        raise ValueError(f"{what} config for {name} has unknown keys {unknown}; "
                         f"expected some of {sorted(allowed)}")
    return cls(**{k: v for k, v in cfg.items() if k != "name"})


def schedule_from_config(cfg):
    """Rebuild a schedule from :meth:`Schedule.get_config` output (None gives None)."""
    if cfg is None:
        return None
    return _from_config(cfg, SCHEDULES, "schedule")


# -- hyperparameter checks, run on every assignment (constructors included) -----------------------
def _check_schedule(schedule, name):
    if isinstance(schedule, Mapping):
        schedule = schedule_from_config(schedule)
    if schedule is not None and not isinstance(schedule, Schedule):
        raise TypeError(f"{name} must be None, a Schedule ({', '.join(SCHEDULES)}) or its "
                        f"config dict, got {type(schedule).__name__}")
    return schedule


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
    #: names of the state slots s1, s2, s3 of the compiled core (None: never used)
    _slot_names = (None, None, None)
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
        """``(kind, hyper, s1, s2, s3)`` for the compiled update of ``n_params`` values of
        ``dtype``, the state set up as needed; cached until an attribute changes, so that a
        training step pays nothing for it."""
        args = self._args
        if args is None or n_params != self._n or dtype != self._dtype:
            self._setup(n_params, dtype)
            hyper = self.hyper()
            hyper.flags.writeable = False
            args = (self.kind, hyper) + self._slot_arrays()
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
        """The hyperparameters as the compiled core reads them: float64 array, layout
        ``_core._optim.HYPER_INDEX`` (flags as 0.0 / 1.0, clip_norm 0.0 when off), with the
        current ``lr``."""
        h = np.zeros(_C.HYPER_SIZE, dtype=np.float64)
        values = {"lr": self._lr, "weight_decay": self.weight_decay,
                  "clip_norm": self.clip_norm or 0.0, **self._hyper_values()}
        for key, value in values.items():
            h[_C.HYPER_INDEX[key]] = float(value)
        return h

    def _state_names(self):
        """Names of the state arrays these options use, in slot order."""
        used = _C.slots(self.kind, self.hyper())
        return [name for name, u in zip(self._slot_names, used) if u]

    def _initial_value(self, name):
        return 0.0

    def _slot_arrays(self):
        """(s1, s2, s3) for the compiled core: the state arrays, None where unused."""
        return tuple(self._state.get(name) if name else None for name in self._slot_names)

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
        s1, s2, s3 = self._slot_arrays()
        if not _C.step(self.kind, self.hyper(), params, grads, s1, s2, s3, t):
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


class SGD(Optimizer):
    r"""Stochastic gradient descent with optional momentum (torch.optim.SGD).

    With d = g + weight_decay * p, each step::

        b = d                                    (first step)
        b = momentum * b + (1 - dampening) * d   (later steps)
        p = p - lr * (d + momentum * b)          (nesterov)
        p = p - lr * b                           (momentum, not nesterov)
        p = p - lr * d                           (momentum == 0)

    Parameters
    ----------
    lr : float >= 0, default 1e-3
    momentum : float >= 0, default 0
    dampening : float, default 0
    weight_decay : float >= 0, default 0
        L2 penalty added to the gradient.
    nesterov : bool, default False
        Needs momentum > 0 and dampening == 0.
    clip_norm : float > 0, optional
        Clip the global gradient norm to this value first (in place).
    schedule : Schedule, optional

    State: ``momentum_buffer`` (when momentum != 0).
    """

    kind = _C.KINDS["sgd"]
    _slot_names = ("momentum_buffer", None, None)
    _keys = ("momentum", "dampening", "weight_decay", "nesterov")

    def __init__(self, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
                 clip_norm=None, schedule=None):
        super().__init__(lr, weight_decay, clip_norm, schedule)
        self.momentum = momentum
        self.dampening = dampening
        self.nesterov = nesterov

    def _hyper_values(self):
        return {"momentum": self.momentum, "dampening": self.dampening,
                "nesterov": self.nesterov}


class Adam(Optimizer):
    r"""Adam (torch.optim.Adam), with L2 weight decay added to the gradient.

    With d = g + weight_decay * p and t the step number (from 1)::

        m = m + (1 - beta1) * (d - m)
        v = beta2 * v + (1 - beta2) * d**2
        v_max = max(v_max, v)                 (amsgrad; v_max replaces v below)
        p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    Parameters
    ----------
    lr : float >= 0, default 1e-3
    betas : (float, float) in [0, 1), default (0.9, 0.999)
    eps : float > 0, default 1e-8
    weight_decay : float >= 0, default 0
    amsgrad : bool, default False
    clip_norm : float > 0, optional
    schedule : Schedule, optional

    State: ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq`` (amsgrad).
    """

    kind = _C.KINDS["adam"]
    _slot_names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _nonnegative = ("exp_avg_sq", "max_exp_avg_sq")
    _keys = ("betas", "eps", "weight_decay", "amsgrad")

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False,
                 *, clip_norm=None, schedule=None):
        super().__init__(lr, weight_decay, clip_norm, schedule)
        self.betas = betas
        self.eps = eps
        self.amsgrad = amsgrad

    def _hyper_values(self):
        return {"beta1": self.betas[0], "beta2": self.betas[1], "eps": self.eps,
                "amsgrad": self.amsgrad}


class AdamW(Adam):
    r"""AdamW (torch.optim.AdamW): Adam with decoupled weight decay.

    Each step first shrinks the parameters, ``p = p * (1 - lr * weight_decay)``, then applies
    the Adam update of :class:`Adam` with d = g (the gradient is not decayed).

    Parameters
    ----------
    lr : float >= 0, default 1e-3
    betas : (float, float) in [0, 1), default (0.9, 0.999)
    eps : float > 0, default 1e-8
    weight_decay : float >= 0, default 1e-2
    amsgrad : bool, default False
    clip_norm : float > 0, optional
    schedule : Schedule, optional

    State: ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq`` (amsgrad).
    """

    kind = _C.KINDS["adamw"]

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, clip_norm=None, schedule=None):
        super().__init__(lr, betas, eps, weight_decay, amsgrad, clip_norm=clip_norm,
                         schedule=schedule)


class RMSprop(Optimizer):
    r"""RMSprop (torch.optim.RMSprop).

    With d = g + weight_decay * p::

        s = alpha * s + (1 - alpha) * d**2
        a = a + (1 - alpha) * (d - a)                     (centered: running mean of d)
        r = d / (sqrt(s - a**2 if centered else s) + eps)
        b = momentum * b + r;  p = p - lr * b             (momentum > 0)
        p = p - lr * r                                    (momentum == 0)

    Parameters
    ----------
    lr : float >= 0, default 1e-2
    alpha : float in [0, 1], default 0.99
        Smoothing constant (torch accepts any alpha >= 0; above 1 the mean of squares can turn
        negative, so it is rejected here).
    eps : float > 0, default 1e-8
    weight_decay : float >= 0, default 0
    momentum : float >= 0, default 0
    centered : bool, default False
    clip_norm : float > 0, optional
    schedule : Schedule, optional

    State: ``square_avg``, ``momentum_buffer`` (momentum > 0), ``grad_avg`` (centered).
    """

    kind = _C.KINDS["rmsprop"]
    _slot_names = ("square_avg", "momentum_buffer", "grad_avg")
    _nonnegative = ("square_avg",)
    _keys = ("alpha", "eps", "weight_decay", "momentum", "centered")

    def __init__(self, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, *, clip_norm=None, schedule=None):
        super().__init__(lr, weight_decay, clip_norm, schedule)
        self.alpha = alpha
        self.eps = eps
        self.momentum = momentum
        self.centered = centered

    def _hyper_values(self):
        return {"alpha": self.alpha, "eps": self.eps, "momentum": self.momentum,
                "centered": self.centered}


class Adagrad(Optimizer):
    r"""Adagrad (torch.optim.Adagrad).

    With d = g + weight_decay * p and t the step number (from 1)::

        s = s + d**2                  (s starts at initial_accumulator_value)
        p = p - lr / (1 + (t - 1) * lr_decay) * d / (sqrt(s) + eps)

    Parameters
    ----------
    lr : float >= 0, default 1e-2
    lr_decay : float >= 0, default 0
    weight_decay : float >= 0, default 0
    initial_accumulator_value : float >= 0, default 0
    eps : float > 0, default 1e-10
    clip_norm : float > 0, optional
    schedule : Schedule, optional

    State: ``sum``.
    """

    kind = _C.KINDS["adagrad"]
    _slot_names = ("sum", None, None)
    _nonnegative = ("sum",)
    _keys = ("lr_decay", "weight_decay", "initial_accumulator_value", "eps")

    def __init__(self, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0,
                 eps=1e-10, *, clip_norm=None, schedule=None):
        super().__init__(lr, weight_decay, clip_norm, schedule)
        self.lr_decay = lr_decay
        self.initial_accumulator_value = initial_accumulator_value
        self.eps = eps

    def _hyper_values(self):
        return {"lr_decay": self.lr_decay,
                "initial_accumulator_value": self.initial_accumulator_value, "eps": self.eps}

    def _initial_value(self, name):
        return self.initial_accumulator_value


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad}
_BY_CLASS_NAME = {cls.__name__: cls for cls in OPTIMIZERS.values()}


def get_optimizer(optimizer):
    """An optimizer from a name (case-insensitive, default settings), an instance (returned
    as is), or None (``Adam()``, the default)."""
    if optimizer is None:
        return Adam()
    if isinstance(optimizer, Optimizer):
        return optimizer
    if not isinstance(optimizer, str):
        raise TypeError(f"optimizer must be a name or an Optimizer, got "
                        f"{type(optimizer).__name__}")
    cls = OPTIMIZERS.get(optimizer.lower())
    if cls is None:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {optimizer!r}")
    return cls()


def optimizer_from_config(cfg):
    """Rebuild an optimizer from :meth:`Optimizer.get_config` output (state not included)."""
    if not isinstance(cfg, Mapping):
        raise TypeError(f"optimizer config must be a dict, got {type(cfg).__name__}")
    name = cfg.get("name")
    cls = _BY_CLASS_NAME.get(name)
    if cls is None:
        raise ValueError(f"optimizer config 'name' must be one of {', '.join(_BY_CLASS_NAME)}; "
                         f"got {name!r}")
    allowed = set(cls._keys) | {"name", "lr", "current_lr", "clip_norm", "schedule", "epoch",
                                "iteration"}
    unknown = sorted(set(cfg) - allowed, key=str)
    if unknown:
        raise ValueError(f"optimizer config for {name} has unknown keys {unknown}; "
                         f"expected some of {sorted(allowed)}")
    kwargs = {k: v for k, v in cfg.items()
              if k not in ("name", "current_lr", "epoch", "iteration")}
    if "schedule" in kwargs:
        kwargs["schedule"] = schedule_from_config(kwargs["schedule"])
    opt = cls(**kwargs)
    if "current_lr" in cfg:   # the scheduled rate of the epoch in progress
        opt._lr = _real(cfg["current_lr"], "optimizer config 'current_lr'", low=0.0)
    opt.epoch = _step_count(cfg.get("epoch", 0), "optimizer config 'epoch'")
    opt.iteration = _step_count(cfg.get("iteration", 0), "optimizer config 'iteration'")
    return opt
from fastprop.lbfgs import LBFGS  # noqa: E402,F401  (full-batch L-BFGS-B, fastprop.lbfgs)
