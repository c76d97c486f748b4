"""Data-parallel training of the demo network on the bundled digits over MPI.

    mpiexec -n 2 python examples/mpi_digits.py              # a laptop: 2 ranks
    srun -n 8 python examples/mpi_digits.py                 # a cluster with its own MPI

Every rank loads the data, keeps its shard (``fastprop.distributed.shard``) and calls ``fit``
with ``comm=MPI.COMM_WORLD``: ``batch_size`` is per rank (the global batch is its sum), each
step's gradients are summed over the ranks with one Allreduce, and every rank applies the same
update, so the ranks hold the same model. The progress bar prints on rank 0 only; the test
accuracy is computed over all ranks' test shards. Needs ``pip install "fastprop[mpi]"``.
"""
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")    # one BLAS thread per rank

import numpy as np
from mpi4py import MPI

import fastprop as fp
from fastprop.datasets import load_digits


def main(epochs=20, batch_size=32, seed=0):
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    X, y = load_digits()
    X = X / 16.0
    order = np.random.default_rng(seed).permutation(len(y))      # the same on every rank
    n_test = len(y) // 5
    test, train = order[:n_test], order[n_test:]
    mine = train[fp.distributed.shard(len(train), comm)]
    my_test = test[fp.distributed.shard(len(test), comm)]

    model = fp.Sequential(
        [fp.Dense(64, 128, activation="relu", seed=seed),
         fp.Dense(128, 64, activation="relu", seed=seed + 1),
         fp.Dense(64, 10, activation="softmax", seed=seed + 2)],
        optimizer=fp.optim.Adam(lr=2e-3 * size), seed=seed)       # lr scaled with the batch
    if rank == 0:
        print(f"{size} rank(s), {len(train)} training images, {batch_size} per rank and step")
    t0 = time.perf_counter()
    model.fit(X[mine], y[mine], epochs=epochs, batch_size=batch_size, validation_split=0.1,
              verbose=1, comm=comm)
    seconds = time.perf_counter() - t0
    scores = model.evaluate(X[my_test], y[my_test], comm=comm)
    if rank == 0:
        print(f"test accuracy {scores['accuracy']:.4f} (all ranks' test shards), "
              f"training took {seconds:.2f} s")
    return scores["accuracy"]


if __name__ == "__main__":
    sys.exit(0 if main() > 0.9 else 1)
