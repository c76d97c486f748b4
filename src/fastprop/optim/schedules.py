"""Learning-rate schedules (``fastprop.optim.StepLR``, ...): per epoch or per batch, torch's
formulas; an optimizer's ``schedule``."""
import bisect
import math
from collections.abc import Mapping

from fastprop.optim._checks import _count, _flag, _real

__all__ = ["Schedule", "StepLR", "ExponentialLR", "CosineAnnealingLR", "LinearLR", "OneCycleLR",
           "CosineAnnealingWarmRestarts", "SequentialLR", "SCHEDULES", "schedule_from_config"]


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


def _check_schedule(schedule, name):
    if isinstance(schedule, Mapping):
        schedule = schedule_from_config(schedule)
    if schedule is not None and not isinstance(schedule, Schedule):
        raise TypeError(f"{name} must be None, a Schedule ({', '.join(SCHEDULES)}) or its "
                        f"config dict, got {type(schedule).__name__}")
    return schedule
