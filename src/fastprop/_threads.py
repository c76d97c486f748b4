"""Thread control for the compiled engine: batch-split calls and BLAS threads.

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
(``threadpoolctl.threadpool_limits``, ``OPENBLAS_NUM_THREADS``, or by default the number of
CPUs this process may use: :func:`available_cpus`, its CPU affinity and cgroup quota, not the
machine's core count: under ``mpiexec`` each rank is bound to its cores, and two BLAS threads
on a busy 2-core machine were measured 2-40x slower than one). With a BLAS other than OpenBLAS (e.g. Accelerate in some macOS SciPy wheels) thread
counts are left to it.

**Batch-split calls.** On the nets where BLAS threads do not pay, a call splits its minibatch
over the engine's own worker threads instead (``_core/_engine.pyx``, "Batch-split calls"; the
pool is ``csrc/fp_pool.h``): each worker runs forward, loss and backward on its rows with
one-thread GEMMs, then each computes its share of the rows of every dW over the whole batch
(no per-thread gradient buffers to sum), and the optimizer updates slices of the flat arrays.
Per call the engine's cost model picks: batch-split over ``k`` threads when the configured
count is > 1, the batch's forward multiply-adds (``n * sum(n_in * n_out)``) reach
``SPLIT_WORK_MIN`` and each thread gets at least ``SPLIT_ROWS_MIN`` rows, with BLAS on one
thread meanwhile (threads x BLAS threads never exceeds the count); otherwise BLAS threads
(``WORK_MIN``) or one thread, as before. A tape with a BatchNorm node (its batch statistics
need the whole batch) or a Python layer node never splits a training step; ``predict`` splits
rows whatever the layers. With one thread (``n_threads=1``) every call runs the unsplit path,
bit for bit as before.
"""
import ctypes
import glob
import math
import os
import warnings

from fastprop._core import _engine

__all__ = ["SPLIT_ROWS_MIN", "SPLIT_WORK_MAX", "SPLIT_WORK_MIN", "WORK_MIN", "available_cpus", "blas_info",
           "get_num_threads", "set_num_threads", "set_split_control"]

#: Multiply-adds of a call's largest layer below which the call uses one thread. Measured (with
#: a per-layer policy, since replaced by the per-call one above) on a 2-core
#: AVX-512 machine, whole SGD training steps at 2 threads, float32, medians (us), for
#: thresholds 2M / 4M / 8M / 16M: 32 x 784-128-10 (layer of 3.2M) 275 / 269 / 250 / 250;
#: 64 x 784-128-10 (6.4M) 376 / 362 / 446 / 424; 64 x 784-256-256-10 (12.8M, 4.2M)
#: 909 / 869 / 971 / 1258; 128 x 784-256-256-10 (25.7M, 8.4M) 1454 / 1433 / 1449 / 1638.
#: The dW GEMM of a small batch (k = batch) splits badly over threads, so layers of a few
#: million multiply-adds are better on one thread; from about 4M a second thread pays.
WORK_MIN = 4_000_000

#: Forward multiply-adds of a whole call (batch rows x the Dense layers' n_in * n_out) below
#: which no call is batch-split: a split call pays two to four hand-offs to the pool and each
#: thread packs its own copy of the weights, which small calls cannot repay. Measured on an
#: idle 2-core Xeon (``python benchmarks/bench_split.py --threads 2 --rounds 3 --budget 0.4
#: --nets digits,small,medium,large --batches 32,64,128,256``, median us per SGD step, float32,
#: one / BLAS threads / split): digits 64-128-64-10 at batch 64 (1.1M) 40.9 / 40.3 / 51.0, at
#: 128 (2.2M) 96.6 / 96.4 / 71.7; small 784-128-10 at 64 (6.5M) 184 / 199 / 171, at 128
#: 344 / 285 / 262, at 256 (26M) 682 / 478 / 448; medium 784-256-256-10 at 64 (17M) 541 / 487
#: / 438. See benchmarks/README.md.
SPLIT_WORK_MIN = 2_000_000

#: Fewest rows per thread of a batch-split call: each thread packs the whole of every weight
#: matrix for its GEMMs, so with a few rows the packing outweighs the multiply-adds (same run:
#: small at batch 32, 16 rows per thread, 109 / 109 / 111 us; digits at 64 loses as above).
SPLIT_ROWS_MIN = 32

#: Forward multiply-adds of a training call from which BLAS threads beat the split when a
#: layer is large enough for them (``WORK_MIN``): same run, medium at batch 128 (34M)
#: 991 / 749 / 782 us, at 256 1988 / 1316 / 1391; large 1024-1024-1024-10 at 64 (135M)
#: 5066 / 2992 / 3805, at 256 (539M) 15636 / 8621 / 9721. ``predict`` keeps splitting rows
#: (10,000 rows on medium: 1.93x the one-thread time).
SPLIT_WORK_MAX = 30_000_000

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


def _read(path):
    try:
        with open(path) as f:
            return f.read().split()
    except (OSError, ValueError):
        return None


def _cgroup_cpus(root):
    """The CPU quota of this process's cgroup in CPUs (cgroup v2 ``cpu.max``, else v1
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), or None without a quota."""
    try:
        v2 = _read(os.path.join(root, "cpu.max"))
        if v2 is not None:
            return None if v2[0] == "max" else int(v2[0]) / int(v2[1])
        quota = _read(os.path.join(root, "cpu", "cpu.cfs_quota_us"))
        period = _read(os.path.join(root, "cpu", "cpu.cfs_period_us"))
        if quota is None or period is None or int(quota[0]) <= 0:
            return None
        return int(quota[0]) / int(period[0])
    except (ValueError, IndexError, ZeroDivisionError):
        return None


def available_cpus(cgroup_root="/sys/fs/cgroup"):
    """The number of CPUs this process may use: its CPU affinity mask
    (``os.sched_getaffinity``, else ``os.cpu_count()``), capped by the cgroup CPU quota rounded
    up (containers, batch schedulers); at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_cpus(cgroup_root)
    if quota is not None and quota > 0:
        n = min(n, math.ceil(quota))
    return max(1, n)


def set_split_control(work_min=None, rows_min=None, work_max=None):
    """Set the batch-split cost model's thresholds for the whole process (defaults:
    :data:`SPLIT_WORK_MIN`, :data:`SPLIT_ROWS_MIN`, :data:`SPLIT_WORK_MAX`; None keeps the
    current value). Returns the previous ``(work_min, rows_min, work_max)``. ``work_min=0,
    rows_min=1, work_max=2**62`` splits every call that has more than one thread and row; a
    huge ``work_min`` turns batch-splitting off."""
    from fastprop._validation import check_size
    old = _engine.split_control()
    work = old[0] if work_min is None else check_size(work_min, "work_min", 0, 2 ** 62)
    rows = old[1] if rows_min is None else check_size(rows_min, "rows_min", 1, 2 ** 30)
    top = old[2] if work_max is None else check_size(work_max, "work_max", 0, 2 ** 62)
    _engine.set_split_control(work, rows, top)
    return old


def install(work_min=WORK_MIN):
    """Find OpenBLAS's thread setter and hand it to the engine (done at import)."""
    global _SETTER, _GETTER, _LIBRARY
    _engine.set_split_control(SPLIT_WORK_MIN, SPLIT_ROWS_MIN, SPLIT_WORK_MAX)
    _LIBRARY, _SETTER, _GETTER = _find()
    if _SETTER is None or os.environ.get("FASTPROP_NO_THREAD_CONTROL"):
        _engine.set_thread_control(0, 0, 0)
        return False
    if not any(os.environ.get(v) for v in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS",
                                           "OMP_NUM_THREADS")):
        # OpenBLAS's own default is every core of the machine
        cpus = available_cpus()
        if _GETTER() > cpus:
            _SETTER(cpus)
    _engine.set_thread_control(ctypes.cast(_SETTER, ctypes.c_void_p).value,
                               ctypes.cast(_GETTER, ctypes.c_void_p).value, int(work_min))
    return True


def get_num_threads():
    """The number of threads SciPy's OpenBLAS is set to (None if it cannot be read)."""
    return None if _GETTER is None else int(_GETTER())


_WARNED_CAP = False


def capped(n, what):
    """``n`` threads capped to :func:`available_cpus`, with a ``RuntimeWarning`` the first time
    a count is capped in this process."""
    global _WARNED_CAP
    cap = available_cpus()
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

    ``n`` above the CPUs this process may use (:func:`available_cpus`) is capped to them, with a
    ``RuntimeWarning`` the first time: more threads than CPUs only adds contention."""
    from fastprop._validation import check_threads
    n = capped(check_threads(n, "n"), "set_num_threads(n)")
    if _SETTER is None:
        return False
    _SETTER(n)
    return True


def blas_info():
    """A short description of the BLAS the engine calls and its thread control."""
    if _LIBRARY is None:
        return "SciPy's BLAS (not OpenBLAS: thread counts left to it)"
    work, rows, top = _engine.split_control()
    return (f"OpenBLAS from SciPy ({os.path.basename(_LIBRARY)}), {get_num_threads()} threads "
            f"configured; calls whose layers are all under {WORK_MIN:,} multiply-adds run on 1 "
            f"BLAS thread; calls of >= {work:,} multiply-adds and >= {rows} rows per thread "
            f"are batch-split over the engine's threads (training calls only under {top:,} "
            f"when a layer reaches {WORK_MIN:,})")


install()
