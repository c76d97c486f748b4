"""Two ranks give, step by step, the parameters of one process on the concatenated global
batch: train_step and fit, every optimizer, loss, sample_weight, clip_norm and schedule, both
dtypes; empty and all-zero-weight shards; unequal shard sizes. Run under mpiexec -n 2."""
import numpy as np

import fastprop as fp
from fastprop import optim as O
from _common import COMM, RANK, check, close, data, model

assert COMM.Get_size() == 2, "run with mpiexec -n 2"

OPTIMIZERS = {
    "sgd": lambda: O.SGD(lr=0.1),
    "sgd_momentum": lambda: O.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda: O.Adam(lr=1e-2),
    "adamw_amsgrad": lambda: O.AdamW(lr=1e-2, amsgrad=True),
    "rmsprop": lambda: O.RMSprop(lr=1e-2, momentum=0.5, centered=True),
    "adagrad": lambda: O.Adagrad(lr=0.05, lr_decay=0.01),
    "adam_clip": lambda: O.Adam(lr=1e-2, clip_norm=0.05),
    "sgd_clip": lambda: O.SGD(lr=0.1, clip_norm=0.05),
}
LOSSES = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid", "mse": "identity",
          "mae": "tanh", "huber": "identity"}


def pair(opt, loss, dtype):
    k = 4 if loss == "cross_entropy" else 3
    args = ([5, 7, 6, k], ["tanh", "relu", LOSSES[loss]])
    return (model(*args, optimizer=OPTIMIZERS[opt](), dtype=dtype, loss=loss),
            model(*args, optimizer=OPTIMIZERS[opt](), dtype=dtype, loss=loss), k)


def train_step_case(opt, loss, dtype, weighted):
    dist, ref, k = pair(opt, loss, dtype)
    # rank 0 has rows [0, cut), rank 1 [cut, n); step 3: rank 1 empty; step 4: rank 1's
    # weights all 0
    cuts = [(24, 15), (20, 11), (12, 12), (18, 10)]
    for step, (n, cut) in enumerate(cuts):
        X, y = data(n, 5, loss, k, seed=step)
        w = np.random.default_rng(step).random(n) + 0.1 if weighted or step == 3 else None
        if step == 3:
            w[cut:] = 0
        part = slice(0, cut) if RANK == 0 else slice(cut, n)
        loss_d = dist.train_step(X[part], y[part], None if w is None else w[part], comm=COMM)
        loss_r = ref.train_step(X, y, w)
        if not close(loss_d, loss_r, dtype) or not close(dist.params, ref.params, dtype):
            return False
        if dist.optimizer.t != ref.optimizer.t:
            return False
        for name, arr in ref.optimizer.state.items():
            if not close(dist.optimizer.state[name], arr, dtype):
                return False
    return True


for dtype in ("float64", "float32"):
    for opt in OPTIMIZERS:
        check(f"train_step {opt} cross_entropy {dtype}",
              lambda: train_step_case(opt, "cross_entropy", dtype, False))
    for loss in LOSSES:
        check(f"train_step adam {loss} weighted {dtype}",
              lambda: train_step_case("adam", loss, dtype, True))


def fit_reference(ref, shards, epochs, batch_size):
    """What fit over the ranks must equal: per step, one train_step on the union of the ranks'
    batches (no shuffle), the schedule applied per epoch."""
    steps = max(-(-len(s[0]) // batch_size) for s in shards)
    for epoch in range(epochs):
        ref.optimizer.schedule_epoch(epoch)
        for b in range(steps):
            sl = slice(b * batch_size, (b + 1) * batch_size)
            parts = [(X[sl], y[sl], None if w is None else w[sl]) for X, y, w in shards]
            Xg = np.concatenate([p[0] for p in parts])
            yg = np.concatenate([p[1] for p in parts])
            wg = None if parts[0][2] is None else np.concatenate([p[2] for p in parts])
            ref.train_step(Xg, yg, wg)


def fit_case(opt, loss, dtype, weighted, schedule):
    dist, ref, k = pair(opt, loss, dtype)
    for m in (dist, ref):
        if schedule:
            m.optimizer.schedule = O.StepLR(step_size=1, gamma=0.5)
    X, y = data(57, 5, loss, k, seed=3)
    w = np.random.default_rng(1).random(57) + 0.1 if weighted else None
    cuts = [slice(0, 37), slice(37, 57)]            # unequal: 5 and 3 steps of 8
    shards = [(X[c], y[c], None if w is None else w[c]) for c in cuts]
    Xs, ys, ws = shards[RANK]
    h = dist.fit(Xs, ys, sample_weight=ws, epochs=3, batch_size=8, shuffle=False, verbose=0,
                 comm=COMM)
    fit_reference(ref, shards, 3, 8)
    same_history = COMM.allgather(h.history) == [h.history] * 2
    return same_history and close(dist.params, ref.params, dtype)


for dtype in ("float64", "float32"):
    for opt in OPTIMIZERS:
        check(f"fit {opt} cross_entropy {dtype}", lambda: fit_case(opt, "cross_entropy",
                                                                     dtype, False, False))
    for loss in LOSSES:
        check(f"fit adam {loss} weighted schedule {dtype}",
              lambda: fit_case("adam", loss, dtype, True, True))


def broadcast_case():
    # rank 1 starts from other weights and optimizer state: the first call takes rank 0's
    m = model([5, 6, 4], ["relu", "softmax"], optimizer=O.Adam(lr=1e-2), seed=RANK)
    ref = model([5, 6, 4], ["relu", "softmax"], optimizer=O.Adam(lr=1e-2), seed=0)
    if RANK == 1:
        X, y = data(8, 5, "cross_entropy", 4, seed=9)
        m.train_step(X, y)                    # rank 1 only: its own state and t = 1
    X, y = data(10, 5, "cross_entropy", 4, seed=2)
    part = slice(0, 6) if RANK == 0 else slice(6, 10)
    m.train_step(X[part], y[part], comm=COMM)
    ref.train_step(X, y)
    return close(m.params, ref.params, "float64") and m.optimizer.t == 1


check("initial parameters and optimizer state broadcast from rank 0", broadcast_case)


def evaluate_case():
    m = model([5, 6, 4], ["relu", "softmax"], optimizer=O.Adam(), seed=0)
    X, y = data(30, 5, "cross_entropy", 4, seed=4)
    w = np.random.default_rng(0).random(30)
    part = slice(0, 30) if RANK == 0 else slice(30, 30)      # rank 1: empty shard
    got = m.evaluate(X[part], y[part], w[part], comm=COMM)
    want = m.evaluate(X, y, w)
    return close(got["loss"], want["loss"], "float64") and got["accuracy"] == want["accuracy"]


check("evaluate reduces over the ranks (one of them empty)", evaluate_case)


def shard_case():
    parts = [fp.distributed.shard(n, COMM) for n in (0, 1, 7, 8)]
    every = COMM.allgather(parts)
    return all(sum(p[i].stop - p[i].start for p in every) == n and every[0][i].start == 0 and
               every[0][i].stop == every[1][i].start for i, n in enumerate((0, 1, 7, 8)))


check("shard covers range(n) in contiguous rank order", shard_case)
