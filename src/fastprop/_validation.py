"""Every input check of the public API, in one place.

Policy: arrays of any real numeric dtype (bool, integers, floats), any memory order or strides,
read-only included, are accepted and converted once to a C-contiguous array of the working dtype;
the caller's array is never written to. Complex, object, string, datetime and structured arrays
are rejected with ``TypeError``; wrong shapes, empty batches and NaN / inf with ``ValueError``.
Every message names the argument and what was expected.
"""
import math
import numbers
import operator
import os

import numpy as np

from fastprop._core._kernels import all_finite

__all__ = [
    "as_dtype",
    "as_array",
    "check_size",
    "check_real",
    "check_bool",
    "check_alloc",
    "refuse_masked_or_sparse",
]

_DTYPES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}
_INT_MAX = 2**31 - 1  # BLAS dimensions are 32-bit ints


def as_dtype(dtype, name="dtype"):
    """Resolve ``dtype`` to ``np.float32`` or ``np.float64`` (the only working dtypes)."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name} must be 'float32' or 'float64', got {dtype!r}") from None
    if dt.name not in _DTYPES:
        raise ValueError(f"{name} must be 'float32' or 'float64', got {dt.name!r}")
    return _DTYPES[dt.name]


def check_size(value, name, minimum=1, maximum=_INT_MAX):
    """Return ``value`` as a Python int in [minimum, maximum] (maximum None: unbounded), or
    raise naming ``name``."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got a bool")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}") from None
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {v}")
    return v


class NotAnIntegerError(TypeError, ValueError):
    """A count that is not an integer: a ``TypeError`` by the library's rule and a
    ``ValueError`` as the thread-count contract promises (``n_threads`` < 1 or not an
    integer -> ``ValueError``)."""


def check_threads(value, name="n_threads"):
    """A thread count: an int >= 1; a non-integer raises :class:`NotAnIntegerError`."""
    try:
        return check_size(value, name)
    except TypeError as e:
        raise NotAnIntegerError(str(e)) from None


def check_seed(value, name="seed"):
    """A seed: None, or an int >= 0 of any size (numpy.random.default_rng takes them all)."""
    return None if value is None else check_size(value, name, minimum=0, maximum=None)


def check_real(value, name, low=None, low_open=False, high=None, high_open=False):
    """``value`` as a finite Python float within the given bounds, or raise naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if low is not None and (v <= low if low_open else v < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {v}")
    if high is not None and (v >= high if high_open else v > high):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {v}")
    return v


def check_bool(value, name):
    """``value`` as a Python bool (True / False, NumPy bools included), or TypeError."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def _physical_memory():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**40


def _read_int(path, key=None):
    """An integer from a /proc or /sys file: the first field, or the field after ``key:``."""
    try:
        with open(path) as f:
            for line in f:
                fields = line.split()
                if key is None:
                    return int(fields[0])
                if fields and fields[0] == key + ":":
                    return int(fields[1]) * 1024          # /proc/meminfo counts kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _available_memory():
    """Bytes a new allocation can still get: Linux's MemAvailable (free memory plus what the
    kernel can reclaim), lowered to what a cgroup v2 memory limit leaves; elsewhere the
    physical memory. Linux overcommits, so an allocation beyond this succeeds and the
    process is killed later, when the pages are touched: checking first turns that into an
    exception."""
    avail = _read_int("/proc/meminfo", "MemAvailable")
    limit = _read_int("/sys/fs/cgroup/memory.max")      # "max" (no limit) reads as None
    if limit is not None:
        used = _read_int("/sys/fs/cgroup/memory.current") or 0
        avail = min(avail, limit - used) if avail is not None else limit - used
    return avail if avail is not None else _physical_memory()


def _bytes(n):
    """1536 -> '1.5 KiB'."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024


def check_alloc(n_values, itemsize, name):
    """Raise ValueError if ``n_values`` items of ``itemsize`` bytes do not fit in the memory
    available now."""
    nbytes = int(n_values) * int(itemsize)
    if nbytes > _physical_memory():
        raise ValueError(f"{name} needs {_bytes(nbytes)}, more than this machine's memory")
    avail = _available_memory()
    if nbytes > avail:
        raise ValueError(f"{name} needs {_bytes(nbytes)}, more than the "
                         f"{_bytes(max(avail, 0))} of memory available")


def _numeric_kind(arr, name):
    kind = arr.dtype.kind
    if kind in "biuf":
        return
    what = {
        "c": "complex numbers are not accepted",
        "O": "object arrays are not accepted",
        "U": "strings are not accepted (convert numeric strings yourself)",
        "S": "bytes are not accepted",
        "M": "datetimes are not accepted",
        "m": "timedeltas are not accepted",
        "V": "structured arrays are not accepted",
    }.get(kind, "this dtype is not accepted")
    raise TypeError(f"{name} must hold real numbers (bool, int or float); got dtype "
                    f"{arr.dtype}: {what}")


def refuse_masked_or_sparse(x, name):
    """TypeError for input whose meaning NumPy conversion would lose: masked arrays (the mask
    would be ignored) and SciPy sparse matrices / arrays."""
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(f"{name} is a numpy masked array: its mask would be ignored. Pass "
                        f"{name}.filled(value) to fill the masked entries, or select the "
                        f"unmasked samples")
    if type(x).__module__.startswith("scipy.sparse"):
        raise TypeError(f"{name} is a SciPy sparse {type(x).__name__}: sparse input is not "
                        f"supported; pass {name}.toarray() (dense) instead")


def as_native(arr, dtype):
    """``arr`` (an ndarray) as a C-contiguous, aligned, native-byte-order ``dtype`` array.

    Returns ``arr`` itself when it already is one (no copy: the fast path); otherwise one new
    array, written once. Unaligned memory (a buffer at an odd offset, a block received from
    another process), swapped byte order, strides, Fortran order, read-only and memory-mapped
    arrays are all read, never written to.
    """
    out = np.ascontiguousarray(arr, dtype=dtype)     # casts, swaps and packs: a new array
    if not out.flags.aligned:                        # same dtype and contiguous, but unaligned:
        out = np.array(out, order="C", copy=True)    # ascontiguousarray returned a view
    return out


def as_array(x, name, dtype, ndim=2, width=None, width_name=None, allow_empty=False,
             finite=True, copy=False):
    """Validate ``x`` and return it as a C-contiguous ``dtype`` array.

    Parameters
    ----------
    x : array_like
        The user's input; never written to.
    name : str
        The argument's name, used in error messages.
    dtype : np.dtype
        The working dtype (float32 or float64).
    ndim : int
        Required number of dimensions.
    width : int, optional
        Required size of the last axis.
    allow_empty : bool
        Whether a first axis of length 0 is accepted.
    finite : bool
        Whether NaN / inf are rejected.
    copy : bool
        Always return a new array (never a view of ``x``).
    """
    if isinstance(x, (str, bytes)):
        raise TypeError(f"{name} must be an array of real numbers, got {type(x).__name__}")
    refuse_masked_or_sparse(x, name)
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} could not be read as an array: {exc}") from None
    _numeric_kind(arr, name)
    if arr.ndim != ndim:
        shape = "(n_samples, n_features)" if ndim == 2 else f"{ndim} dimensions"
        raise ValueError(f"{name} must have {ndim} dimensions {shape}, got {arr.ndim} "
                         f"with shape {arr.shape}")
    if width is not None and arr.shape[-1] != width:
        wn = f" ({width_name})" if width_name else ""
        raise ValueError(f"{name} must have {width} columns{wn}, got shape {arr.shape}")
    if not allow_empty and arr.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}): at least one sample is needed")
    if arr.ndim == 2 and arr.shape[1] == 0 and not allow_empty:
        raise ValueError(f"{name} has no columns (shape {arr.shape})")
    if arr.ndim >= 1 and arr.shape[0] > _INT_MAX:
        raise ValueError(f"{name} has too many rows ({arr.shape[0]} > {_INT_MAX})")
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.array(arr, dtype=dtype, order="C", copy=True) if copy else \
            as_native(arr, dtype)
    # checked after the cast: float64 values beyond float32's range become inf there
    if finite and arr.dtype.kind == "f" and not all_finite(out):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} contains NaN or infinity")
        raise ValueError(f"{name} has values beyond the range of {dtype.name}")
    return out


def raise_refused(loss):
    """The ValueError of a training step the compiled core refused (nothing was updated)."""
    what = f"the loss of this batch is {loss}" if not np.isfinite(loss) else \
        f"the gradients of this batch (loss {loss:g}) are not finite or too large"
    raise ValueError(f"{what}: its inputs are too large for the model's dtype, or the weights "
                     f"have diverged (lower the learning rate, scale X); the model was not "
                     f"updated")
