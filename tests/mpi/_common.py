"""Helpers of the 2-rank workers (run under mpiexec by tests/test_distributed_mpi.py)."""
import sys
import traceback

import numpy as np
from mpi4py import MPI

import fastprop as fp

COMM = MPI.COMM_WORLD
RANK = COMM.Get_rank()
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


def model(sizes, acts, optimizer, dtype="float64", loss=None, seed=0, dropout=None):
    """The same model on every rank (seeded weights); ``dropout``: {dense index: rate}."""
    layers = []
    for i, (n_in, n_out, act) in enumerate(zip(sizes, sizes[1:], acts)):
        if dropout and i in dropout:
            layers.append(fp.Dropout(dropout[i]))
        layers.append(fp.Dense(n_in, n_out, activation=act, dtype=dtype, seed=seed + i))
    return fp.Sequential(layers, loss=loss, optimizer=optimizer, dtype=dtype, seed=seed)


def data(n, n_in, loss, k, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_in))
    if loss == "cross_entropy":
        y = rng.integers(0, k, n)
    elif loss == "binary_cross_entropy":
        y = (rng.random((n, k)) < 0.5).astype(float)
    else:
        y = rng.standard_normal((n, k))
    return X, y


def interleave(a, n, b):
    """The union of the two halves of ``a`` (rank 0's rows [0, n), rank 1's [n, 2n)) ordered
    as the global batches of a fit over the ranks with per-rank batch ``b``: batch i of rank 0,
    then batch i of rank 1, ..."""
    parts = []
    for start in range(0, n, b):
        parts += [a[start:min(start + b, n)], a[n + start:n + min(start + b, n)]]
    return np.concatenate(parts)


def close(a, b, dtype):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    rtol = RTOL[np.dtype(dtype)]
    return bool(np.allclose(a, b, rtol=rtol, atol=rtol * max(float(np.max(np.abs(b))), 1e-30)))


def check(name, fn):
    """Run a check on every rank; all ranks agree on the verdict. Prints ``OK name`` on rank 0,
    or ``FAIL name`` with the failing rank's traceback and exits non-zero on every rank."""
    try:
        ok, why = bool(fn()), "returned False"
    except Exception:
        ok, why = False, traceback.format_exc()
    verdicts = COMM.allgather((ok, why))
    if all(v[0] for v in verdicts):
        if RANK == 0:
            print(f"OK {name}", flush=True)
        return
    for r, (v, w) in enumerate(verdicts):
        if not v and RANK == 0:
            print(f"FAIL {name} (rank {r}): {w}", flush=True)
    sys.stdout.flush()
    COMM.Barrier()
    sys.exit(1)


def raises_everywhere(exc_type, fn, match=None):
    """fn() raises exc_type on this rank (message containing match)."""
    try:
        fn()
    except exc_type as exc:
        if match is not None and match not in str(exc):
            raise AssertionError(f"message {exc!s} lacks {match!r}") from None
        return True
    raise AssertionError(f"{exc_type.__name__} not raised")
