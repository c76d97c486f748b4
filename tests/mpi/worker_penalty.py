"""Dense weight penalties (l1 / l2) and frozen layers under comm=: two ranks give what one
process gets on the union of their shards. The penalty counts once per global step (in the
update, in the loss train_step returns, in History's loss and val_loss, in evaluate), even on
a step where rank 0's shard is empty; a frozen Dense (whose penalty then does not count),
LayerNorm and BatchNorm keep their parameters, optimizer state and running statistics bit for
bit while the other layers train as in one process. Fused plain SGD and Adam, both dtypes.
Run under mpiexec -n 2 with a scratch directory as the first argument."""
import numpy as np

import fastprop as fp
from fastprop import optim as O
from _common import COMM, RANK, check, close, data, interleave

assert COMM.Get_size() == 2, "run with mpiexec -n 2"

OPTIMIZERS = {"sgd": lambda: O.SGD(lr=0.1), "adam": lambda: O.Adam(lr=0.01)}


def net(dtype, opt, frozen=()):
    """Penalties on three Dense layers (l2; l1 and l2; l1) around a LayerNorm and a BatchNorm
    (always frozen: a trainable one is refused under comm) whose running statistics are away
    from 0 / 1; the layers of ``frozen`` frozen too."""
    layers = [fp.Dense(6, activation="tanh", seed=1, l2=0.05), fp.LayerNorm(),
              fp.Dense(5, activation="relu", seed=2, l1=0.02, l2=0.01), fp.BatchNorm(),
              fp.Dense(3, activation="softmax", seed=3, l1=0.03)]
    m = fp.Sequential(layers, input_dim=4, loss="cross_entropy", optimizer=OPTIMIZERS[opt](),
                      dtype=dtype, seed=0)
    bn = m.layers[3]
    bn.running_mean, bn.running_var = np.linspace(-0.4, 0.6, 5), np.linspace(0.6, 1.8, 5)
    m.layers[1].gamma = np.linspace(0.7, 1.4, 6)
    for i in {3, *frozen}:
        m.layers[i].trainable = False
    return m


def slices(m):
    out, off = [], 0
    for layer in m.layers:
        out.append(slice(off, off + layer.n_params))
        off += layer.n_params
    return out


def same_state(a, b, dtype, where=slice(None)):
    return sorted(a.optimizer.state) == sorted(b.optimizer.state) and all(
        close(a.optimizer.state[k][where], b.optimizer.state[k][where], dtype)
        for k in a.optimizer.state)


def fit_case(dtype, opt):
    """fit over the ranks (equal shards, no shuffle, validation shards) = one process fitting
    the union in the order of the global batches: History, parameters, optimizer state; then
    evaluate(comm=) and one train_step(comm=) = one process."""
    n, b = 20, 6                      # 4 steps per epoch, the last of 2 rows per rank
    X, y = data(2 * n, 4, "cross_entropy", 3, seed=31)
    Xv, yv = data(16, 4, "cross_entropy", 3, seed=32)
    mine, vmine = slice(RANK * n, (RANK + 1) * n), slice(RANK * 8, (RANK + 1) * 8)
    dist, ref = net(dtype, opt), net(dtype, opt)
    h = dist.fit(X[mine], y[mine], epochs=3, batch_size=b, shuffle=False, verbose=0,
                 validation_data=(Xv[vmine], yv[vmine]), comm=COMM)
    hr = ref.fit(interleave(X, n, b), interleave(y, n, b), epochs=3, batch_size=2 * b,
                 shuffle=False, verbose=0, validation_data=(Xv, yv))
    keys = ["accuracy", "loss", "lr", "val_accuracy", "val_loss"]
    ok = sorted(h.history) == sorted(hr.history) == keys and \
        COMM.allgather(h.history) == [h.history] * 2 and \
        all(close(h.history[k], hr.history[k], dtype) for k in keys) and \
        close(dist.params, ref.params, dtype) and same_state(dist, ref, dtype)
    got = dist.evaluate(Xv[vmine], yv[vmine], comm=COMM)["loss"]
    step = dist.train_step(X[mine][:5], y[mine][:5], comm=COMM)
    want = ref.evaluate(Xv, yv)["loss"]
    step_ref = ref.train_step(np.concatenate([X[:5], X[n:n + 5]]),
                              np.concatenate([y[:5], y[n:n + 5]]))
    return ok and close(got, want, dtype) and close(step, step_ref, dtype) and \
        close(dist.params, ref.params, dtype)


for dtype in ("float64", "float32"):
    for opt in OPTIMIZERS:
        check(f"fit with weight penalties, {opt}: two ranks = one process on the union "
              f"(History loss / val_loss, parameters, optimizer state, evaluate, train_step) "
              f"({dtype})", lambda: fit_case(dtype, opt))


def empty_rank0_case():
    """train_step with rank 0's shard empty on some steps (and rank 1's on others): the penalty
    still counts once, in the loss and in the update."""
    ok = True
    for opt in OPTIMIZERS:
        dist, ref = net("float64", opt), net("float64", opt)
        for step, (n, cut) in enumerate([(10, 0), (9, 4), (7, 7), (8, 0)]):
            X, y = data(n, 4, "cross_entropy", 3, seed=40 + step)
            part = slice(0, cut) if RANK == 0 else slice(cut, n)
            got = dist.train_step(X[part], y[part], comm=COMM)
            ok = ok and close(got, ref.train_step(X, y), "float64") and \
                close(dist.params, ref.params, "float64") and \
                same_state(dist, ref, "float64")
    return ok


check("train_step with weight penalties and an empty shard on rank 0 (then rank 1): = one "
      "process, penalty once", empty_rank0_case)


def frozen_case(dtype, opt):
    """A frozen Dense (with a penalty, which then does not count), LayerNorm and BatchNorm:
    over the ranks their parameters, optimizer state and the running statistics stay bit for
    bit (and equal one process's); the other layers equal one process on the union. Then the
    Dense is unfrozen on both: its penalty counts again, still = one process."""
    n, b = 18, 5
    X, y = data(2 * n, 4, "cross_entropy", 3, seed=51)
    mine = slice(RANK * n, (RANK + 1) * n)
    dist, ref = net(dtype, opt, frozen=(0, 1)), net(dtype, opt, frozen=(0, 1))
    start, running = dist.params.copy(), dist.state.copy()
    kw = dict(epochs=2, batch_size=b, shuffle=False, verbose=0)
    h = dist.fit(X[mine], y[mine], comm=COMM, **kw)
    kw_ref = dict(kw, batch_size=2 * b)
    hr = ref.fit(interleave(X, n, b), interleave(y, n, b), **kw_ref)
    sl = slices(dist)
    frozen_kept = all(
        np.array_equal(dist.params[sl[i]], start[sl[i]]) and
        np.array_equal(dist.params[sl[i]], ref.params[sl[i]]) and
        all(np.array_equal(dist.optimizer.state[k][sl[i]], ref.optimizer.state[k][sl[i]]) and
            not dist.optimizer.state[k][sl[i]].any() for k in dist.optimizer.state)
        for i in (0, 1, 3))
    trained = all(not np.array_equal(dist.params[sl[i]], start[sl[i]]) for i in (2, 4))
    ok = frozen_kept and trained and np.array_equal(dist.state, running) and \
        np.array_equal(ref.state, running) and close(dist.params, ref.params, dtype) and \
        same_state(dist, ref, dtype) and close(h.history["loss"], hr.history["loss"], dtype)
    for m in (dist, ref):
        m.layers[0].trainable = True
    h = dist.fit(X[mine], y[mine], comm=COMM, **kw)
    hr = ref.fit(interleave(X, n, b), interleave(y, n, b), **kw_ref)
    return ok and not np.array_equal(dist.params[sl[0]], start[sl[0]]) and \
        np.array_equal(dist.params[sl[1]], start[sl[1]]) and \
        close(dist.params, ref.params, dtype) and same_state(dist, ref, dtype) and \
        close(h.history["loss"], hr.history["loss"], dtype) and \
        np.array_equal(dist.state, running)


for dtype in ("float64", "float32"):
    for opt in OPTIMIZERS:
        check(f"frozen Dense / LayerNorm / BatchNorm, {opt}: kept bit for bit over the ranks, "
              f"the other layers = one process; unfrozen, = one process again ({dtype})",
              lambda: frozen_case(dtype, opt))
