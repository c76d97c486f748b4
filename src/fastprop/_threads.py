"""BLAS thread control for the compiled engine.

SciPy's wheels ship OpenBLAS (the library behind ``scipy.linalg.cython_blas``, which the engine
calls). OpenBLAS splits a GEMM over its threads once the product passes a small size, but on
these small products waking a second thread costs more than it saves (shared/benchmarking.md:
NumPy's 32 x 784-128-10 training step went from 210 to 419 us with 2 threads). So the engine
decides per call (a training step, a forward, a predict chunk): when every layer has fewer than
``WORK_MIN`` multiply-adds (n_samples * n_in * n_out), the call runs on one thread, otherwise
on the configured count. Per call and not per layer: switching OpenBLAS between 1 and 2
threads inside a step cost milliseconds (the worker thread goes to sleep and must be woken).
It calls OpenBLAS's own ``openblas_set_num_threads`` from C — nanoseconds, so nothing is paid
per step (a threadpoolctl context per call would cost more than a small step).

The configured count is, in order: the model's ``n_threads``; else what the BLAS is set to
(``threadpoolctl.threadpool_limits``, ``OPENBLAS_NUM_THREADS`` or OpenBLAS's default, the number
of cores). With a BLAS other than OpenBLAS (e.g. Accelerate in some macOS SciPy wheels) thread
counts are left to it.
"""
import ctypes
import glob
import os
import warnings

from fastprop._core import _engine

__all__ = ["WORK_MIN", "blas_info", "get_num_threads", "set_num_threads", "usable_cpus"]

#: Multiply-adds of a call's largest layer below which the call uses one thread. Measured (with
#: a per-layer policy, since replaced by the per-call one above) on a 2-core
#: AVX-512 machine, whole SGD training steps at 2 threads, float32, medians (us), for
#: thresholds 2M / 4M / 8M / 16M: 32 x 784-128-10 (layer of 3.2M) 275 / 269 / 250 / 250;
#: 64 x 784-128-10 (6.4M) 376 / 362 / 446 / 424; 64 x 784-256-256-10 (12.8M, 4.2M)
#: 909 / 869 / 971 / 1258; 128 x 784-256-256-10 (25.7M, 8.4M) 1454 / 1433 / 1449 / 1638.
#: The dW GEMM of a small batch (k = batch) splits badly over threads, so layers of a few
#: million multiply-adds are better on one thread; from about 4M a second thread pays.
WORK_MIN = 4_000_000

_SETTER = None
_GETTER = None
_LIBRARY = None


def _candidates():
    import scipy
    base = os.path.dirname(os.path.abspath(scipy.__file__))
    patterns = [os.path.join(base, os.pardir, "scipy.libs", "*openblas*"),
                os.path.join(base, ".dylibs", "*openblas*"),
                os.path.join(base, os.pardir, "scipy.libs", "*.dll")]
    return [p for pattern in patterns for p in sorted(glob.glob(pattern))]


def _find():
    for path in _candidates():
        try:
            lib = ctypes.CDLL(os.path.normpath(path))
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas_", ""), ("scipy_openblas_", "64_"),
                               ("openblas_", ""), ("openblas_", "64_")):
            setter = getattr(lib, f"{prefix}set_num_threads{suffix}", None)
            getter = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
            if setter is not None and getter is not None:
                setter.argtypes, setter.restype = [ctypes.c_int], None
                getter.argtypes, getter.restype = [], ctypes.c_int
                return os.path.normpath(path), setter, getter
    return None, None, None


def install(work_min=WORK_MIN):
    """Find OpenBLAS's thread setter and hand it to the engine (done at import)."""
    global _SETTER, _GETTER, _LIBRARY
    _LIBRARY, _SETTER, _GETTER = _find()
    if _SETTER is None or os.environ.get("FASTPROP_NO_THREAD_CONTROL"):
        _engine.set_thread_control(0, 0, 0)
        return False
    _engine.set_thread_control(ctypes.cast(_SETTER, ctypes.c_void_p).value,
                               ctypes.cast(_GETTER, ctypes.c_void_p).value, int(work_min))
    return True


def get_num_threads():
    """The number of threads SciPy's OpenBLAS is set to (None if it cannot be read)."""
    return None if _GETTER is None else int(_GETTER())


def usable_cpus():
    """The number of CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


_WARNED_CAP = False


def capped(n, what):
    """``n`` threads capped to :func:`usable_cpus`, with a ``RuntimeWarning`` the first time
    a count is capped in this process."""
    global _WARNED_CAP
    cap = usable_cpus()
    if n <= cap:
        return n
    if not _WARNED_CAP:
        _WARNED_CAP = True
        warnings.warn(f"{what}: {n} threads asked, but this process may use {cap} CPUs; "
                      f"using {cap} (more threads than CPUs only adds contention)",
                      RuntimeWarning, stacklevel=3)
    return cap


def set_num_threads(n):
    """Set SciPy's OpenBLAS thread count for the whole process (cheap; threadpoolctl does the
    same for every BLAS in the process). Returns False when there is no OpenBLAS to set.

    ``n`` above the CPUs this process may use (:func:`usable_cpus`) is capped to them, with a
    ``RuntimeWarning`` the first time: more threads than CPUs only adds contention."""
    from fastprop._validation import check_size
    n = capped(check_size(n, "n"), "set_num_threads(n)")
    if _SETTER is None:
        return False
    _SETTER(n)
    return True


def blas_info():
    """A short description of the BLAS the engine calls and its thread control."""
    if _LIBRARY is None:
        return "SciPy's BLAS (not OpenBLAS: thread counts left to it)"
    return (f"OpenBLAS from SciPy ({os.path.basename(_LIBRARY)}), {get_num_threads()} threads "
            f"configured; calls whose layers are all under {WORK_MIN:,} multiply-adds run on 1 "
            f"thread")


install()
