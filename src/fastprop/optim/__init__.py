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
from collections.abc import Mapping

from fastprop.optim._base import Optimizer, OptimizerState
from fastprop.optim._checks import _real, _step_count
from fastprop.optim.adagrad import Adagrad
from fastprop.optim.adam import Adam, AdamW
from fastprop.optim.lbfgs import LBFGS
from fastprop.optim.rmsprop import RMSprop
from fastprop.optim.schedules import (SCHEDULES, CosineAnnealingLR, CosineAnnealingWarmRestarts,
                                      ExponentialLR, LinearLR, OneCycleLR, Schedule,
                                      SequentialLR, StepLR, schedule_from_config)
from fastprop.optim.sgd import SGD

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
    "OptimizerState",
    "LBFGS",
    "SCHEDULES",
    "get_optimizer",
    "optimizer_from_config",
    "schedule_from_config",
]


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


# Pickles and reprs name the public classes by their public path (fastprop.optim.Adam), not by
# the module that defines them, so that moving a class between modules breaks no pickle.
for _cls in (Optimizer, OptimizerState, SGD, Adam, AdamW, RMSprop, Adagrad, LBFGS, Schedule,
             StepLR, ExponentialLR, CosineAnnealingLR, LinearLR, OneCycleLR,
             CosineAnnealingWarmRestarts, SequentialLR):
    _cls.__module__ = __name__
del _cls
