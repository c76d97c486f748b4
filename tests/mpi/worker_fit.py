"""fit whole under MPI: global validation metrics, identical History, rank-0-only output,
callback decisions agreed, refused steps refused everywhere, per-rank shuffling and dropout
(reproducible), unequal and empty shards. Run under mpiexec -n 2 with a scratch directory as
the first argument."""
import io
import os
import sys
import warnings

import numpy as np

import fastprop as fp
from fastprop import callbacks as C, optim as O
from _common import COMM, RANK, check, close, data, model

assert COMM.Get_size() == 2, "run with mpiexec -n 2"
TMP = sys.argv[1]

X, y = data(90, 5, "cross_entropy", 3, seed=5)
Xv, yv = data(40, 5, "cross_entropy", 3, seed=6)
part = fp.distributed.shard(90, COMM)
vpart = fp.distributed.shard(40, COMM)


def history_case():
    m = model([5, 8, 3], ["relu", "softmax"], optimizer=O.Adam(lr=0.02), dtype="float64")
    h = m.fit(X[part], y[part], epochs=4, batch_size=9, validation_data=(Xv[vpart], yv[vpart]),
              verbose=0, comm=COMM)
    every = COMM.allgather(h.history)
    # val_* are global: equal to evaluating the union in one process
    full = m.evaluate(Xv, yv)
    return every[0] == every[1] and close(h.history["val_loss"][-1], full["loss"], "float64") \
        and h.history["val_accuracy"][-1] == full["accuracy"] and \
        sorted(h.history) == ["accuracy", "loss", "lr", "val_accuracy", "val_loss"]


check("History identical on every rank; val_loss / val_accuracy global", history_case)


def output_case():
    m = model([5, 8, 3], ["relu", "softmax"], optimizer=O.Adam(lr=0.02))
    csv_path = os.path.join(TMP, f"log.csv")
    ckpt = os.path.join(TMP, "ckpt_{epoch}.fpz")
    bar_out = io.StringIO()
    m.fit(X[part], y[part], epochs=2, batch_size=9, validation_split=0.2, verbose=0,
          callbacks=[C.ProgressBar(file=bar_out), C.CSVLogger(csv_path),
                     C.ModelCheckpoint(ckpt, save_best_only=False)], comm=COMM)
    COMM.Barrier()
    shown = bar_out.getvalue()
    files_ok = os.path.exists(csv_path) and os.path.exists(ckpt.format(epoch=2))
    rows = open(csv_path).read().splitlines() if files_ok else []
    return files_ok and len(rows) == 3 and (("Epoch" in shown or "epoch" in shown)
                                            if RANK == 0 else shown == "")


check("progress bar, CSVLogger and ModelCheckpoint write from rank 0 only", output_case)


class RankStop(C.Callback):
    """Asks to stop on rank 1 only, after batch 2 of epoch 1: every rank must stop there."""
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if RANK == 1 and self.epoch == 1 and batch == 2:
            self.model.stop_training = True


def callbacks_case():
    m = model([5, 8, 3], ["relu", "softmax"], optimizer=O.SGD(lr=0.05))
    es = C.EarlyStopping(monitor="val_loss", patience=1, min_delta=10.0)   # stops at epoch 2
    rl = C.ReduceLROnPlateau(monitor="val_loss", patience=0, factor=0.5, min_delta=10.0)
    h = m.fit(X[part], y[part], epochs=10, batch_size=9, validation_data=(Xv[vpart], yv[vpart]),
              callbacks=[es, rl], verbose=0, comm=COMM)
    lrs = COMM.allgather(h.history["lr"] + [m.optimizer.lr])
    m2 = model([5, 8, 3], ["relu", "softmax"], optimizer=O.SGD(lr=0.05))
    stop = RankStop()
    h2 = m2.fit(X[part], y[part], epochs=5, batch_size=9, callbacks=[stop], verbose=0,
                comm=COMM)
    ts = COMM.allgather(m2.optimizer.t)
    return len(h.history["loss"]) == 2 and lrs[0] == lrs[1] and lrs[0][-1] == 0.025 and \
        len(h2.history["loss"]) == 2 and ts[0] == ts[1] == 5 + 3 and \
        COMM.allgather(checksum(m2)) == [checksum(m2)] * 2


def checksum(m):
    return fp.distributed.checksum(m)


check("EarlyStopping, ReduceLROnPlateau and a one-rank stop_training agree", callbacks_case)


class RankStopEpoch(C.Callback):
    """Asks to stop on rank 1 only, at the end of epoch 1 (the vote rides in the epoch-end
    agreement): every rank must stop after 2 whole epochs, with the same History."""
    def on_epoch_end(self, epoch, logs=None):
        if RANK == 1 and epoch == 1:
            self.model.stop_training = True


def epoch_stop_case():
    m = model([5, 8, 3], ["relu", "softmax"], optimizer=O.SGD(lr=0.05))
    h = m.fit(X[part], y[part], epochs=6, batch_size=9, callbacks=[RankStopEpoch()], verbose=0,
              comm=COMM)
    got = COMM.allgather((h.history["loss"], m.optimizer.t, m.stop_training, checksum(m)))
    return len(h.history["loss"]) == 2 and got[0] == got[1] and got[0][1] == 2 * 5 and \
        got[0][2] is True


def terminate_on_nan_case():
    # rank 1's shard overflows the loss in epoch 1: refused on every rank, TerminateOnNaN on
    # the global (inf) loss stops both ranks at the same batch, parameters untouched
    m = model([5, 8, 3], ["relu", "softmax"], optimizer=O.SGD(lr=0.05), dtype="float32")
    Xs = X[part].copy()
    if RANK == 1:
        Xs[:] = 3e38
    before = m.params.copy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h = m.fit(Xs, y[part], epochs=3, batch_size=9, callbacks=[C.TerminateOnNaN()],
                  shuffle=False, verbose=0, comm=COMM)
    refused = any("skipped" in str(c.message) for c in caught)
    return np.array_equal(m.params, before) and len(h.history["loss"]) == 1 and refused


check("a refused step is refused on every rank; TerminateOnNaN agrees",
      terminate_on_nan_case)


def dropout_case():
    def run():
        m = model([5, 8, 3], ["relu", "softmax"], optimizer=O.Adam(lr=0.02), seed=3,
                  dropout={1: 0.4})
        m.fit(X[part], y[part], epochs=2, batch_size=9, verbose=0, comm=COMM)
        return m
    a, b = run(), run()
    # masks differ per rank (rank 1's stream is derived from rank 0's and its rank) ...
    states = COMM.allgather(int(a.get_rng_state()[0]))
    # ... and a rerun reproduces the same parameters
    return np.array_equal(a.params, b.params) and states[0] != states[1]


check("dropout masks and shuffles seeded per rank, reproducible", dropout_case)


def empty_shard_case():
    # rank 1 has no sample, then only zero-weight samples: it takes part with zero gradients
    m = model([5, 8, 3], ["relu", "softmax"], optimizer=O.Adam(lr=0.02))
    ref = model([5, 8, 3], ["relu", "softmax"], optimizer=O.Adam(lr=0.02))
    mine = slice(0, 30) if RANK == 0 else slice(30, 30)
    # (weights given, all 1: rank 1's empty shard has none, which is fine)
    m.fit(X[mine], y[mine], sample_weight=np.ones(30)[mine], epochs=2, batch_size=10,
          shuffle=False, verbose=0, comm=COMM)
    ref.fit(X[:30], y[:30], epochs=2, batch_size=10, shuffle=False, verbose=0)
    w = np.ones(30) if RANK == 0 else np.zeros(30)
    m.fit(X[30:60], y[30:60], sample_weight=w, epochs=1, batch_size=10, shuffle=False,
          verbose=0, comm=COMM)
    ref.fit(X[30:60], y[30:60], epochs=1, batch_size=10, shuffle=False, verbose=0)
    return close(m.params, ref.params, "float64")


check("empty and all-zero-weight shards take part with zero gradients", empty_shard_case)


def comm_self_case():
    # a one-rank communicator is fit without comm (to rounding: the unfused SGD update)
    from mpi4py import MPI
    a = model([5, 8, 3], ["relu", "softmax"], optimizer=O.SGD(lr=0.1, momentum=0.9), seed=1)
    b = model([5, 8, 3], ["relu", "softmax"], optimizer=O.SGD(lr=0.1, momentum=0.9), seed=1)
    ha = a.fit(X, y, epochs=2, batch_size=16, verbose=0, comm=MPI.COMM_SELF)
    hb = b.fit(X, y, epochs=2, batch_size=16, verbose=0)
    return close(a.params, b.params, "float64") and \
        close(ha.history["loss"], hb.history["loss"], "float64")


check("comm=MPI.COMM_SELF under mpiexec equals no comm", comm_self_case)

check("a stop_training set at an epoch end on one rank stops every rank", epoch_stop_case)
