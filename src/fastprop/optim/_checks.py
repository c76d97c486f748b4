"""Argument checks shared by the optimizers and the schedules (``fastprop.optim``)."""
import operator

import numpy as np

from fastprop import _validation as V

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

