"""No silent hang: an error on one rank raises on every rank. Run under mpiexec -n 2 with a
scratch directory as the first argument."""
import os
import sys

import numpy as np

import fastprop as fp
from fastprop import callbacks as C, optim as O
from _common import COMM, RANK, check, data, model, raises_everywhere

assert COMM.Get_size() == 2, "run with mpiexec -n 2"
TMP = sys.argv[1]
X, y = data(40, 5, "cross_entropy", 3, seed=1)
part = fp.distributed.shard(40, COMM)


def net(**kw):
    return model([5, 6, 3], ["relu", "softmax"], optimizer=O.Adam(lr=0.01), **kw)


check("bad width on rank 1: ValueError on every rank before the first step",
      lambda: raises_everywhere(ValueError, lambda: net().fit(
          X[part] if RANK == 0 else X[part][:, :4], y[part], verbose=0, comm=COMM),
          match="columns"))

check("label out of range on rank 1: ValueError on every rank (train_step)",
      lambda: raises_everywhere(ValueError, lambda: net().train_step(
          X[part], y[part] if RANK == 0 else y[part] + 5, comm=COMM)))

check("batch_size < 1 on rank 1: ValueError on every rank",
      lambda: raises_everywhere(ValueError, lambda: net().fit(
          X[part], y[part], batch_size=8 if RANK == 0 else 0, verbose=0, comm=COMM),
          match="batch_size"))

check("different models on the ranks: ValueError on every rank",
      lambda: raises_everywhere(ValueError, lambda: model(
          [5, 6 + RANK, 3], ["relu", "softmax"], optimizer=O.Adam()).fit(
          X[part], y[part], verbose=0, comm=COMM), match="differ"))

check("different dtypes on the ranks: ValueError on every rank",
      lambda: raises_everywhere(ValueError, lambda: net(
          dtype="float64" if RANK == 0 else "float32").train_step(X[part], y[part], comm=COMM),
          match="differ"))

check("comm that is not a communicator: TypeError",
      lambda: raises_everywhere(TypeError, lambda: net().fit(X, y, verbose=0, comm="world"),
                                match="comm"))


class FailOnRank1(C.Callback):
    def __init__(self, where):
        self.where = where

    def on_epoch_end(self, epoch, logs=None):
        if RANK == 1 and self.where == "epoch" and epoch == 1:
            raise OSError("disk full (simulated)")

    def on_train_batch_end(self, batch, logs=None):
        if RANK == 1 and self.where == "batch" and batch == 2:
            raise OSError("batch hook failed (simulated)")


for where in ("epoch", "batch"):
    check(f"a callback failing on rank 1 ({where}) raises on every rank",
          lambda: raises_everywhere(Exception, lambda: net().fit(
              X[part], y[part], epochs=3, batch_size=4, callbacks=[FailOnRank1(where)],
              verbose=0, comm=COMM), match="simulated"))


def checkpoint_failure():
    # ModelCheckpoint runs on rank 0 only; its failure (a path under a file) reaches rank 1
    if RANK == 0:
        open(os.path.join(TMP, "a-file"), "w").close()
    bad = os.path.join(TMP, "a-file", "m_{epoch}.fpz")
    return raises_everywhere(Exception, lambda: net().fit(
        X[part], y[part], epochs=2, callbacks=[C.ModelCheckpoint(bad)], verbose=0, comm=COMM))


check("ModelCheckpoint failing on rank 0 raises on every rank", checkpoint_failure)


class Broken:
    """The engine of rank 1 fails inside the step: the error flag of the step's allreduce."""
    def __init__(self, engine):
        self._e = engine

    def compute_gradients(self, *args):
        raise MemoryError("no memory for the workspace (simulated)")

    def __getattr__(self, name):
        return getattr(self._e, name)


def step_failure():
    m = net()
    if RANK == 1:
        m._engine = Broken(m._engine)
    return raises_everywhere(Exception, lambda: m.fit(X[part], y[part], epochs=1, verbose=0,
                                                      comm=COMM))


check("an exception inside a step on rank 1 raises on every rank", step_failure)


def diverged_params():
    m = net()
    m.fit(X[part], y[part], epochs=1, verbose=0, comm=COMM)
    if RANK == 1:
        m.params[0] += 1.0      # one rank changes its model behind fit's back

    class Nudge(C.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if RANK == 1:
                self.model.params[1] += 1.0
    return raises_everywhere(RuntimeError, lambda: m.fit(
        X[part], y[part], epochs=1, callbacks=[Nudge()], verbose=0, comm=COMM),
        match="differ")


check("parameters that differ between ranks are caught by the epoch checksum",
      diverged_params)
