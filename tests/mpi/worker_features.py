"""fit(comm=) with class_weight, the mae / mse metrics, per-batch schedules and initial_epoch:
two ranks give what one process gets on the union of their shards (History and parameters),
the schedule's position continues across fit calls and a save / load, and bad input raises on
every rank. Run under mpiexec -n 2 with a scratch directory as the first argument."""
import numpy as np

import fastprop as fp
from fastprop import callbacks as C, optim as O
from _common import COMM, RANK, check, close, data, interleave, model, raises_everywhere

assert COMM.Get_size() == 2, "run with mpiexec -n 2"

SCHEDULES = {
    "LinearLR": lambda: O.LinearLR(0.1, 1.0, 7),
    "OneCycleLR": lambda: O.OneCycleLR(0.05, 40),
    "CosineAnnealingWarmRestarts": lambda: O.CosineAnnealingWarmRestarts(3, 2, eta_min=1e-3),
    "SequentialLR": lambda: O.SequentialLR([O.LinearLR(0.2, total_iters=4),
                                            O.CosineAnnealingWarmRestarts(3)], [4]),
}


def net(dtype="float64", loss="cross_entropy", schedule=None, metrics=("mae", "mse"), k=3):
    act = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid", "mse": "identity"}
    m = model([5, 7, k], ["tanh", act[loss]], optimizer=O.Adam(lr=0.02, schedule=schedule),
              dtype=dtype, loss=loss)
    m.compile(metrics=list(metrics))
    return m


def skewed(n, seed):
    """Classification data whose class mix differs per rank: rank 0 mostly class 0, rank 1 no
    class 0 at all (so "balanced" must count the classes of both ranks)."""
    X, _ = data(2 * n, 5, "cross_entropy", 3, seed=seed)
    rng = np.random.default_rng(seed + 1)
    y = np.concatenate([np.where(rng.random(n) < 0.7, 0, rng.integers(1, 3, n)),
                        rng.integers(1, 3, n)])
    return X, y


def union_case(dtype, schedule, class_weight):
    """Equal shards, no shuffle: fit over the ranks equals one process fitting the union in
    the order of the global batches (batch 2b): History (loss, accuracy, mae, mse, val_*, lr)
    and parameters; the schedule's position is the same."""
    n, b = 40, 6                      # 7 steps per epoch, the last of 4 rows per rank
    X, y = skewed(n, seed=11)
    Xv, yv = skewed(10, seed=12)
    mine, vmine = slice(RANK * n, (RANK + 1) * n), slice(RANK * 10, (RANK + 1) * 10)
    sched = SCHEDULES[schedule] if schedule else (lambda: None)
    dist, ref = net(dtype, schedule=sched()), net(dtype, schedule=sched())
    h = dist.fit(X[mine], y[mine], epochs=3, batch_size=b, shuffle=False, verbose=0,
                 validation_data=(Xv[vmine], yv[vmine]), class_weight=class_weight, comm=COMM)
    hr = ref.fit(interleave(X, n, b), interleave(y, n, b), epochs=3, batch_size=2 * b,
                 shuffle=False, verbose=0, validation_data=(Xv, yv), class_weight=class_weight)
    keys = ["accuracy", "loss", "lr", "mae", "mse", "val_accuracy", "val_loss", "val_mae",
            "val_mse"]
    return sorted(h.history) == sorted(hr.history) == keys and \
        COMM.allgather(h.history) == [h.history] * 2 and \
        all(close(h.history[k], hr.history[k], dtype) for k in keys) and \
        close(dist.params, ref.params, dtype) and \
        (dist.optimizer.epoch, dist.optimizer.iteration) == (3, 21) == \
        (ref.optimizer.epoch, ref.optimizer.iteration)


for dtype in ("float64", "float32"):
    check(f"balanced class_weight, mae / mse, val_*: two ranks = one process on the union "
          f"({dtype})", lambda: union_case(dtype, None, "balanced"))
    for name in SCHEDULES:
        check(f"per-batch {name} with balanced class_weight and metrics: two ranks = one "
              f"process ({dtype})", lambda: union_case(dtype, name, "balanced"))
check("dict class_weight with LinearLR: two ranks = one process",
      lambda: union_case("float64", "LinearLR", {0: 0.5, 2: 3.0}))


def unequal_case(loss, schedule):
    """Unequal shards (rank 1 runs out after 2 of 5 steps), sample weights and a dict
    class_weight (binary: a one-output sigmoid): step by step, one process's train_step on the
    union of the batches with weights w * class_weight, the lr of each step set by the
    schedule at the same iteration; mae / mse of each batch's outputs before its update."""
    k = 3 if loss == "mse" else 1
    dist, ref = (net(loss=loss, schedule=SCHEDULES[schedule](), k=k) for _ in range(2))
    X, y = data(53, 5, loss, k, seed=4)
    if loss == "binary_cross_entropy":
        y = (X[:, :1] > 0).astype(float)
    w = np.random.default_rng(2).random(53) + 0.1
    cw = {0: 2.5, 1: 0.5} if loss != "mse" else None
    wc = w if cw is None else w * np.where(y[:, 0] > 0.5, cw[1], cw[0])
    cuts = [slice(0, 37), slice(37, 53)]        # 5 and 2 steps of 8
    Xs, ys, ws = X[cuts[RANK]], y[cuts[RANK]], w[cuts[RANK]]
    h = dist.fit(Xs, ys, sample_weight=ws, class_weight=cw, epochs=2, batch_size=8,
                 shuffle=False, verbose=0, comm=COMM)
    abs_sum, sq_sum, count, losses = np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(2)
    opt = ref.optimizer
    for epoch in range(2):
        seen = 0
        for step in range(5):
            rows = [np.arange(c.start, c.stop)[step * 8:(step + 1) * 8] for c in cuts]
            g = np.concatenate(rows)
            d = ref.predict(X[g]).astype(np.float64) - y[g]
            abs_sum[epoch] += np.abs(d).sum()
            sq_sum[epoch] += (d * d).sum()
            count[epoch] += d.size
            opt.schedule_batch(opt.iteration)
            losses[epoch] += ref.train_step(X[g], y[g], wc[g]) * g.size
            seen += g.size
            opt.iteration += 1
        losses[epoch] /= seen
    return close(dist.params, ref.params, "float64") and \
        close(h.history["mae"], abs_sum / count, "float64") and \
        close(h.history["mse"], sq_sum / count, "float64") and \
        close(h.history["loss"], losses, "float64") and dist.optimizer.iteration == 10


check("unequal shards, sample_weight, dict class_weight (binary), OneCycleLR: = train_step "
      "on the union", lambda: unequal_case("binary_cross_entropy", "OneCycleLR"))
check("unequal shards, regression mae / mse, SequentialLR: = train_step on the union",
      lambda: unequal_case("mse", "SequentialLR"))


def continue_case():
    """fit(2) + fit(2), and fit(2) + save / load + fit(2), over the ranks equal fit(4) over the
    ranks (per-batch schedule: iteration and lr continue); fit(4, initial_epoch=2) resumes at
    the same rates."""
    X, y = skewed(30, seed=21)
    mine = slice(RANK * 30, (RANK + 1) * 30)
    kw = dict(batch_size=7, shuffle=False, verbose=0, class_weight="balanced", comm=COMM)
    whole, parts, saved, resumed = (net(schedule=SCHEDULES["CosineAnnealingWarmRestarts"]())
                                    for _ in range(4))
    hw = whole.fit(X[mine], y[mine], epochs=4, **kw)
    parts.fit(X[mine], y[mine], epochs=2, **kw)
    hp = parts.fit(X[mine], y[mine], epochs=2, **kw)
    saved.fit(X[mine], y[mine], epochs=2, **kw)
    loaded = fp.from_bytes(saved.to_bytes())
    hl = loaded.fit(X[mine], y[mine], epochs=2, **kw)
    hr = resumed.fit(X[mine], y[mine], epochs=4, initial_epoch=2, **kw)
    return np.array_equal(parts.params, whole.params) and \
        np.array_equal(loaded.params, whole.params) and \
        hp.history["lr"] == hl.history["lr"] == hr.history["lr"] == hw.history["lr"][2:] and \
        parts.optimizer.iteration == loaded.optimizer.iteration == 4 * 5 == \
        whole.optimizer.iteration == resumed.optimizer.iteration and \
        resumed.optimizer.epoch == 4 and hr.epoch == [2, 3]


check("the schedule's position continues across fit calls and save / load; initial_epoch",
      continue_case)


def evaluate_case():
    m = net(loss="mse", k=3)
    X, y = data(30, 5, "mse", 3, seed=8)
    part = slice(0, 30) if RANK == 0 else slice(30, 30)      # rank 1: empty shard
    got = m.evaluate(X[part], y[part], comm=COMM)
    want = m.evaluate(X, y)
    part = fp.distributed.shard(30, COMM)
    got2 = m.evaluate(X[part], y[part], comm=COMM)
    return sorted(got) == sorted(want) == ["loss", "mae", "mse"] and \
        all(close(got[k], want[k], "float64") and close(got2[k], want[k], "float64")
            for k in want)


check("evaluate(comm=) reduces mae / mse over the ranks (one of them empty)", evaluate_case)


def monitor_case():
    X, y = skewed(20, seed=3)
    mine = slice(RANK * 20, (RANK + 1) * 20)
    m = net()
    es = C.EarlyStopping(monitor="val_mae", patience=1, min_delta=10.0)   # stops at epoch 2
    h = m.fit(X[mine], y[mine], epochs=5, batch_size=5, verbose=0, callbacks=[es],
              validation_data=(X[mine], y[mine]), comm=COMM)
    before = m.params.copy()
    raises_everywhere(ValueError, lambda: m.fit(
        X[mine], y[mine], epochs=1, verbose=0, comm=COMM,
        callbacks=[C.EarlyStopping(monitor="val_mse")]), match="val_mse")
    return len(h.history["val_mae"]) == 2 and np.array_equal(m.params, before)


check("callbacks monitor val_mae; a monitor fit will not log raises on every rank first",
      monitor_case)


def bad_input_case():
    X, y = skewed(20, seed=5)
    mine = slice(RANK * 20, (RANK + 1) * 20)
    m = net()
    before, t = m.params.copy(), m.optimizer.t

    def fit(**kw):
        return lambda: m.fit(X[mine], y[mine], epochs=2, verbose=0, comm=COMM, **kw)
    ok = [
        # a label that is a class on no rank: ValueError on every rank, no hang
        raises_everywhere(ValueError, fit(class_weight={0: 1.0, 5: 2.0}), match="label 5"),
        # a bad weight on rank 1 only
        raises_everywhere(ValueError, fit(class_weight={1: -1.0 if RANK else 1.0}),
                          match="class_weight"),
        # given on one rank only, or different on the ranks
        raises_everywhere(ValueError, fit(class_weight="balanced" if RANK else None),
                          match="class_weight differ"),
        raises_everywhere(ValueError, fit(class_weight={1: 1.0 + RANK}),
                          match="class_weight differ"),
        raises_everywhere(ValueError, fit(class_weight="balancd"), match="balanced"),
        raises_everywhere(ValueError, fit(initial_epoch=2 if RANK else 0),
                          match="initial_epoch"),
        raises_everywhere(ValueError, fit(initial_epoch=0 if RANK else 1),
                          match="initial_epoch differ"),
        raises_everywhere(ValueError, lambda: net(loss="mse").fit(
            X[mine], np.zeros((20, 3)), class_weight="balanced", verbose=0, comm=COMM),
            match="class_weight"),
    ]
    return all(ok) and np.array_equal(m.params, before) and m.optimizer.t == t and \
        m.optimizer.iteration == 0


check("bad class_weight / initial_epoch on any rank: ValueError on every rank, nothing "
      "changed", bad_input_case)


def batchnorm_case():
    bn = fp.Sequential([fp.Dense(5, 6, activation="relu"), fp.BatchNorm(),
                        fp.Dense(6, 3, activation="softmax")], dtype="float64", seed=0)
    X, y = data(20, 5, "cross_entropy", 3, seed=1)
    return raises_everywhere(ValueError, lambda: bn.fit(X, y, verbose=0, comm=COMM),
                             match="synchronized BatchNorm")


check("BatchNorm under comm stays refused, saying why", batchnorm_case)
