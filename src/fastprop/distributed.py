"""Data-parallel training over MPI: one ``Allreduce`` of the flat gradient buffer per step.

Every rank holds the whole model and its own shard of the data. A step is: the compiled
gradients-only pass on the local batch with the *global* normalizer (the sum of the weights of
the step's samples over all ranks), one ``Allreduce`` (sum) of the flat gradient buffer with the
batch loss, the correct count and an error flag appended, then the compiled update on every
rank. Summing the shards' gradients then gives the gradient of the global batch: each sample's
term is scaled by the same ``1 / sum_i w_i`` as in one process, so only the summation order
differs (the alternative, each rank normalizing by its own weight sum and the sum being
rescaled by ``s_r / S`` after the allreduce, adds a rounding per rank and per parameter). The
global normalizers of a whole epoch take one small extra ``Allreduce`` per epoch in ``fit``
(the batches are known once the epoch's order is drawn) and one small ``allgather`` per
``train_step`` call, which also agrees on the call's input checks.

Parameters stay bitwise identical on all ranks: every rank applies the same update to the same
reduced gradients. ``fit`` checks a CRC-32 of the parameters across ranks after every epoch and
raises if they ever differ.

No silent hang: input checks that can differ per rank run on every rank and are agreed on
before any step (one rank's bad input raises on every rank); an exception inside a step travels
as the error flag of that step's allreduce; an exception in a callback at the end of an epoch
is agreed on the same way. Nothing here is imported unless a ``comm`` is given; mpi4py is
imported lazily.

What ``fit`` has beyond the gradients is made global the same way, at no cost per step to a
fit that does not use it: ``class_weight="balanced"`` sums the ranks' class counts in the
allgather that agrees on the call's facts; the ``mae`` / ``mse`` metrics sum each batch's
errors on its rank (in float64, from the step's own forward outputs) and reduce the two sums
once per epoch rather than in the step's allreduce (whose buffer has the model's dtype);
per-batch schedules read ``optimizer.iteration``, which advances by one per global step on
every rank.

Weight penalties (``Dense(l1=, l2=)``) are a term of the global batch's loss, not of any
sample: each rank's gradients-only pass leaves them out, and after the allreduce every rank adds
their gradient to the summed gradients and their value to the summed loss
(``Engine.add_penalty``), once per step as in one process (the parameters are the same on
every rank, so are the added terms). Adding them on rank 0 before the allreduce would lose them
on a step where rank 0's shard is empty. A model without a penalty does nothing more per step.
Frozen layers (``trainable=False``) need nothing of their own: the update zeroes their
gradients and keeps their parameters and optimizer state on every rank alike, and a frozen
BatchNorm normalizes with its running statistics, the same on every rank.

Use it through ``comm=`` on :meth:`Sequential.fit`, :meth:`~Sequential.train_step`,
:meth:`~Sequential.evaluate` and :meth:`~Sequential.predict`, and :func:`shard` to split the
data.
"""
import json
import numbers
import time
import warnings
import zlib

import numpy as np

from fastprop import _validation as V
from fastprop.callbacks import CallbackList, CSVLogger, ModelCheckpoint, ProgressBar
from fastprop.layers import BatchNorm, Dense
from fastprop.losses import class_indices, class_weight_vector, error_sums

__all__ = ["shard", "check_comm"]


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError:       # pragma: no cover - depends on the environment
        raise TypeError("comm must be an mpi4py communicator, but mpi4py is not installed: "
                        "pip install 'fastprop[mpi]'") from None
    return MPI


def check_comm(comm):
    """Return ``comm`` if it is an mpi4py intracommunicator (``MPI.COMM_WORLD``, a
    sub-communicator, ``MPI.COMM_SELF``), else raise ``TypeError``."""
    MPI = _mpi()
    if not isinstance(comm, MPI.Intracomm) or comm == MPI.COMM_NULL:
        raise TypeError(f"comm must be an mpi4py intracommunicator (e.g. MPI.COMM_WORLD), got "
                        f"{type(comm).__name__} {comm!r}")
    return comm


def shard(n_samples, comm):
    """The slice of ``range(n_samples)`` that belongs to this rank of ``comm``.

    Contiguous blocks; the first ``n_samples % size`` ranks get one sample more. A rank may get
    an empty slice (more ranks than samples): it still takes part in every step.

    Parameters
    ----------
    n_samples : int >= 0
    comm : mpi4py communicator

    Returns
    -------
    slice
        ``X[shard(len(X), comm)]`` is this rank's part.

    Examples
    --------
    >>> from mpi4py import MPI                                    # doctest: +SKIP
    >>> part = fp.distributed.shard(len(X), MPI.COMM_WORLD)       # doctest: +SKIP
    >>> model.fit(X[part], y[part], batch_size=64, comm=MPI.COMM_WORLD)   # doctest: +SKIP
    """
    comm = check_comm(comm)
    n = V.check_size(n_samples, "n_samples", minimum=0)
    size, rank = comm.Get_size(), comm.Get_rank()
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


# -- waiting ----------------------------------------------------------------------------------
#: How a rank waits for the step's allreduce: it polls the request, spinning for SPIN_SECONDS,
#: then sleeping NAP_SECONDS between polls. Open MPI's blocking Allreduce spins on the CPU: on a
#: loaded machine a waiting rank then holds its core until the scheduler takes it away, and the
#: two ranks meet a scheduler slice late. Measured on a 2-core machine shared with other work
#: (load average 9), medium net, 64 samples per rank: a step took 40 ms with the blocking
#: Allreduce and 10-12 ms with this wait (spin 0 to 1e-4 s, naps 1e-5 to 2e-4 s: all alike);
#: the spin keeps the idle-machine latency of a quick rendezvous. Re-measured interleaved in
#: single launches at load 4-6 (benchmarks/README.md, "scale"): whole 2-rank steps with the
#: blocking Allreduce ran 0.27-0.67x as fast as with this wait; spins of 0 / 0.5 / 2 ms and
#: naps of 0.05 / 0.2 ms within 0.9-1.1x of each other, 1 ms naps 0.82-0.87x.
SPIN_SECONDS = 5e-4
NAP_SECONDS = 5e-5


def _wait(request):
    """Wait for a non-blocking MPI request the way described above (spin, then nap)."""
    start = time.perf_counter()
    while not request.Test():
        if time.perf_counter() - start > SPIN_SECONDS:
            time.sleep(NAP_SECONDS)


def _allgather(comm, obj):
    """``comm.allgather(obj)`` (pickled objects), the ranks first meeting in an ``Ibarrier``
    waited on by :func:`_wait`: mpi4py's object collectives are blocking, and a rank spinning
    in one while the other is descheduled loses a scheduler slice on a loaded machine (in one
    profile of ``fit`` on 2 ranks at load 5, its agreements took 20 ms each that way)."""
    _wait(comm.Ibarrier())
    return comm.allgather(obj)


def _bcast(comm, obj):
    """``comm.bcast(obj, root=0)``, ranks first aligned as in :func:`_allgather`."""
    _wait(comm.Ibarrier())
    return comm.bcast(obj, root=0)


# -- agreement: an error on one rank raises on every rank -------------------------------------
class _RemoteError(RuntimeError):
    pass


def _agree(comm, fn, *args, share=None):
    """Run ``fn(*args)`` on every rank and share whether it raised (one ``allgather``). If any
    rank raised, every rank raises: its own exception, or one of the same type naming the
    failing rank and its message. Returns ``fn``'s result; with ``share``, also the list over
    the ranks of ``share(result)``, carried by the same allgather."""
    try:
        result, err = fn(*args), None
        mine = None if share is None else share(result)
    except Exception as exc:        # shared with the other ranks, then re-raised below
        result, err, mine = None, exc, None
    got = _allgather(comm, (None if err is None else (type(err).__name__, str(err)), mine))
    if err is not None:
        raise err
    for rank, (msg, _) in enumerate(got):
        if msg is not None:
            cls = {"ValueError": ValueError, "TypeError": TypeError}.get(msg[0], _RemoteError)
            raise cls(f"rank {rank} of {len(got)} failed: {msg[0]}: {msg[1]}")
    return result if share is None else (result, [g[1] for g in got])


def _signature(model):
    """What must be the same on every rank: architecture, loss, dtype, optimizer options."""
    return json.dumps([model.get_config(), int(model.n_params)], sort_keys=True)


def _check_same(comm, values, what):
    got = _allgather(comm, values)
    for rank, value in enumerate(got):
        if value != got[0]:
            raise ValueError(f"{what} differ between ranks: rank 0 has {got[0]!r}, rank {rank} "
                             f"has {value!r}")
    return got


def _mix_seed(state, rank):
    """A per-rank stream derived from rank 0's (rank 0 keeps its own: one rank = no comm)."""
    if rank == 0:
        return int(state)
    return int(np.random.SeedSequence([int(state), rank]).generate_state(1, np.uint64)[0])


def checksum(model):
    """CRC-32 of the model's parameter bytes (cheap: about a gigabyte per second)."""
    return zlib.crc32(model.params.view(np.uint8))


def _check_params_equal(comm, model):
    sums = _allgather(comm, checksum(model))
    if len(set(sums)) != 1:
        raise RuntimeError(f"the parameters differ between ranks (CRC-32 per rank: {sums}): "
                           f"the ranks diverged; this is a bug, or the model was changed on "
                           f"one rank only")


def broadcast_state(model, comm, check=True):
    """Make every rank's model equal to rank 0's: parameters, optimizer state, step count and
    learning rate (collective). Checks first that the architectures and options agree (unless
    ``check=False``: the caller just did)."""
    if check:
        _check_same(comm, _signature(model), "the models (architecture, loss, dtype, optimizer)")
    opt = model.optimizer
    opt._setup(model.n_params, model.dtype)
    _wait(comm.Ibcast(model.params, root=0))
    if model.state.size:                 # layer state (running statistics)
        _wait(comm.Ibcast(model.state, root=0))
    for name in sorted(opt.state):
        _wait(comm.Ibcast(opt.state[name], root=0))
    t, base_lr, lr = _bcast(comm, (opt.t, opt.base_lr, opt.lr))
    opt.base_lr = base_lr
    opt._lr = lr
    opt.t = t


# -- one step ---------------------------------------------------------------------------------
class _Stepper:
    """The distributed step of one model: gradients, one Allreduce, update."""

    def __init__(self, model, comm):
        self.model, self.comm = model, comm
        self.n = model.n_params
        # the gradient buffer with the batch loss, the correct count and an error flag appended
        self.buf = np.empty(self.n + 3, dtype=model.dtype)
        self.MPI = _mpi()
        self.penalized = False      # whether a step adds weight penalties (set by _stepper)

    def run(self, X, y_dense, labels, w, idx, normalizer, t):
        """One step at optimizer step ``t``; returns (global loss, global correct count,
        refused). ``idx`` (int64, maybe empty) picks this rank's rows."""
        model, engine, n, buf = self.model, self.model._engine, self.n, self.buf
        err = None
        try:
            loss = engine.compute_gradients(X, y_dense, labels, w, idx, normalizer, False)
            buf[:n] = model.grads
            buf[n], buf[n + 1], buf[n + 2] = loss, engine.last_correct, 0
        except Exception as exc:        # shared through the flag, re-raised below
            err = exc
            buf[:n + 2] = 0
            buf[n + 2] = 1
        _wait(self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM))
        if buf[n + 2] != 0:
            if err is not None:
                raise err
            raise _RemoteError(f"{int(buf[n + 2])} other rank(s) failed in training step {t}; "
                               f"see their error")
        model.grads[...] = buf[:n]
        loss, correct = float(buf[n]), float(buf[n + 1])
        if self.penalized:      # the weight penalties, once per global step (see above)
            loss += engine.add_penalty()
        refused = not np.isfinite(loss)
        if not refused:
            kind, hyper, state = model._opt_args()
            refused = not engine.apply_update(kind, hyper, state, t)
        return loss, correct, refused


def _stepper(model, comm, synced=False):
    """The model's stepper for comm, made (and the state broadcast from rank 0, unless the
    caller just did) on first use."""
    st = model.__dict__.get("_mpi_stepper")
    if st is None or st.comm is not comm or st.n != model.n_params or \
            st.buf.dtype != model.dtype:
        if not synced:
            broadcast_state(model, comm)
        st = _Stepper(model, comm)
        model.__dict__["_mpi_stepper"] = st
    st.penalized = _penalized(model)
    return st


def _penalized(model):
    """Whether a trainable Dense of the model has a weight penalty (a frozen layer's does
    not count, as in one process)."""
    return any(isinstance(layer, Dense) and layer.trainable and (layer.l1 or layer.l2)
               for layer in model.layers)


def _weight_sum(w, n):
    return float(n) if w is None else float(w.sum(dtype=np.float64))


def _refuse_batchnorm(model):
    """Training with comm= and a BatchNorm is refused (the same decision on every rank, before
    any collective): each rank would normalize with its own shard's batch statistics, so the
    step would not be the global batch's (there is no synchronized BatchNorm). A frozen
    BatchNorm (running statistics) is allowed."""
    if any(isinstance(layer, BatchNorm) and layer.trainable for layer in model.layers):
        raise ValueError("comm=: training a model with a BatchNorm layer over MPI is not "
                         "supported: each rank would normalize with its own shard's batch "
                         "mean and variance (and update the running statistics from them), "
                         "so a step would not be the global batch's step; fastprop has no "
                         "synchronized BatchNorm. Use LayerNorm (per sample: exact over "
                         "comm), freeze the BatchNorm (trainable=False: running statistics), "
                         "or train without comm (predict / evaluate with comm work)")


def train_step(model, X, y, sample_weight, comm):
    """``Sequential.train_step`` over ``comm``: every rank passes its part of the global batch
    (possibly empty); returns the global batch loss (weight penalties included, once).
    Collective. Refused (ValueError) for a model with a trainable BatchNorm layer."""
    comm = check_comm(comm)
    _refuse_batchnorm(model)

    def prepare():
        Xc = V.as_array(X, "X", model.dtype, ndim=2, width=model.n_in,
                        width_name="the model's n_in", allow_empty=True)
        n = Xc.shape[0]
        if n == 0:
            return Xc, None, None, None, 0.0
        y_dense, labels, w = _local_targets(model, y, n, sample_weight)
        return Xc, y_dense, labels, w, _weight_sum(w, n)

    (Xc, y_dense, labels, w, _), sums = _agree(comm, prepare, share=lambda r: r[4])
    total = sum(sums)
    if not total > 0:
        raise ValueError("the global batch is empty or its sample weights sum to 0 on every "
                         "rank")
    with model._lock:
        st = _stepper(model, comm)
        idx = np.arange(Xc.shape[0], dtype=np.int64)
        t = model.optimizer.t + 1
        loss, _, refused = st.run(Xc, y_dense, labels, w, idx, total, t)
        model._fwd = None
        if refused:
            V.raise_refused(loss)
        model.optimizer.t = t
    return loss


def _local_targets(model, y, n, sample_weight, name="y"):
    """Checked (y_dense, labels, w) of a shard of n >= 1 samples. Weights that are all 0 are
    allowed under comm (the global sum is checked instead)."""
    if sample_weight is None or np.any(np.asarray(sample_weight)):
        return model._targets(y, n, sample_weight, name=name)
    w = V.as_array(sample_weight, "sample_weight", model.dtype, ndim=1)
    if w.shape[0] != n:
        raise ValueError(f"sample_weight has {w.shape[0]} values, expected {n} (one per sample)")
    y_dense, labels, _ = model._targets(y, n, None, name=name)
    return y_dense, labels, w


def _local_score(model, X, y_dense, labels, w):
    """(sum of weighted losses, weight sum, correct count, count, sum |a - y|, sum (a - y)^2,
    number of output values) of a local shard, in inference mode (the error sums only when the
    model has the mae / mse metrics)."""
    n = X.shape[0]
    if n == 0:
        return np.zeros(7)
    per = 1 if model.loss == "cross_entropy" else model.n_out
    s = _weight_sum(w, n)
    loss, acc, a = model._score(X, y_dense, labels, w if s > 0 else None, outputs=True)
    loss = float(loss) * s if s > 0 else 0.0
    correct = 0.0 if acc is None else round(acc * n * per)
    abs_sum = sq_sum = 0.0
    if _error_metrics(model):
        abs_sum, sq_sum, _ = error_sums(a, y_dense, labels)
    return np.array([loss, s, correct, n * per, abs_sum, sq_sum, n * model.n_out],
                    dtype=np.float64)


def _error_metrics(model):
    """The compiled metrics among mae / mse (see Sequential.compile), in that order."""
    return [m for m in ("mae", "mse") if m in model._metrics]


def _global_score(model, comm, local, prefix=""):
    """The scores of the union of the ranks' shards (one Allreduce of the sums of
    :func:`_local_score`), as ``Sequential.evaluate`` names them, each key with ``prefix``."""
    MPI = _mpi()
    tot = np.empty(7)
    _wait(comm.Iallreduce(local, tot, op=MPI.SUM))
    if not tot[1] > 0:
        raise ValueError("the validation / evaluation data is empty or its weights sum to 0 on "
                         "every rank")
    out = {"loss": float(tot[0] / tot[1])}
    if model.is_classifier:
        out["accuracy"] = float(tot[2] / tot[3])
    for name in _error_metrics(model):
        out[name] = float(tot[4 if name == "mae" else 5] / tot[6])
    return {prefix + k: v for k, v in out.items()}


def evaluate(model, X, y, sample_weight, comm):
    """``Sequential.evaluate`` over ``comm``: loss, accuracy (classification) and the compiled
    metrics (mae / mse) of the union of the ranks' shards, from sums reduced over the ranks
    (every rank gets the same dict). Collective."""
    comm = check_comm(comm)

    def prepare():
        Xc = V.as_array(X, "X", model.dtype, ndim=2, width=model.n_in,
                        width_name="the model's n_in", allow_empty=True)
        if Xc.shape[0] == 0:
            return np.zeros(7)
        y_dense, labels, w = _local_targets(model, y, Xc.shape[0], sample_weight)
        return _local_score(model, Xc, y_dense, labels, w)

    return _global_score(model, comm, _agree(comm, prepare))


def predict(model, X, batch_size, comm):
    """``Sequential.predict`` over ``comm``: this rank's outputs for its own X (no data moves);
    the input checks are agreed on, so bad input on one rank raises on every rank."""
    comm = check_comm(comm)
    return _agree(comm, model.predict, X, batch_size)


# -- fit --------------------------------------------------------------------------------------
def _prepare_fit(model, X, y, epochs, batch_size, shuffle, validation_split, validation_data,
                 sample_weight, class_weight, initial_epoch):
    """This rank's checked arrays, as Sequential.fit makes them (a dict ``class_weight``
    applied, zero-weight samples dropped), allowing an empty or all-zero-weight shard; the
    first epoch; and what the ranks must agree on about ``class_weight``: its canonical form,
    and for ``"balanced"`` this rank's class counts (before the drop, as one process
    counts)."""
    epochs = V.check_size(epochs, "epochs", minimum=0)
    batch_size = V.check_size(batch_size, "batch_size", minimum=1)
    if not isinstance(shuffle, (bool, np.bool_)):
        raise TypeError(f"shuffle must be True or False, got {shuffle!r}")
    if isinstance(validation_split, (bool, np.bool_)) or \
            not isinstance(validation_split, numbers.Real):
        raise TypeError(f"validation_split must be a number in [0, 1), got "
                        f"{type(validation_split).__name__}")
    if validation_split != 0 and not 0.0 < float(validation_split) < 1.0:
        raise ValueError(f"validation_split must be in (0, 1) (or 0 for none), got "
                         f"{validation_split}")
    first = 0
    if initial_epoch is not None:
        first = V.check_size(initial_epoch, "initial_epoch", minimum=0)
        if first >= epochs:
            raise ValueError(f"initial_epoch must be < epochs ({epochs}), got {first}")
    X = V.as_array(X, "X", model.dtype, ndim=2, width=model.n_in,
                   width_name="the model's n_in", allow_empty=True)
    n = X.shape[0]
    if n:
        y_dense, labels, w = _local_targets(model, y, n, sample_weight)
    else:
        y_dense = labels = w = None
    val = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise ValueError("validation_data must be a tuple (X_val, y_val) or "
                             "(X_val, y_val, sample_weight_val)")
        Xv = V.as_array(validation_data[0], "validation_data[0]", model.dtype, ndim=2,
                        width=model.n_in, width_name="the model's n_in", allow_empty=True)
        wv = validation_data[2] if len(validation_data) == 3 else None
        val = (Xv,) + ((None, None, None) if Xv.shape[0] == 0 else
                       model._targets(validation_data[1], Xv.shape[0], wv,
                                      name="validation_data[1]"))
    elif validation_split:
        cut = n - int(np.floor(n * float(validation_split)))
        sl = lambda a, s: None if a is None else np.ascontiguousarray(a[s])
        val = tuple(sl(a, slice(cut, None)) for a in (X, y_dense, labels, w))
        X, y_dense, labels, w = (sl(a, slice(None, cut)) for a in (X, y_dense, labels, w))
        n = cut
    cw_key = counts = None
    if class_weight is not None:
        # checked on every rank, an empty shard included (its checks see no sample)
        yd = y_dense if n else np.empty((0, model.n_out), dtype=model.dtype)
        lab = labels if n else None
        cw = class_weight_vector(class_weight, model.loss, yd, lab, model.n_out, model.dtype)
        if isinstance(class_weight, str):     # "balanced": weighed once the counts are global
            n_classes, classes = class_indices(model.loss, yd, lab, model.n_out)
            counts = np.bincount(classes, minlength=n_classes).tolist()
            cw_key = class_weight
        else:
            cw_key = sorted((int(k), float(v)) for k, v in class_weight.items())
            if n:
                w = cw if w is None else w * cw
    if w is not None and not np.all(w > 0):
        keep = np.flatnonzero(w > 0)      # weight 0: as if removed (as Sequential.fit)
        X, w = X[keep], w[keep]
        y_dense = None if y_dense is None else y_dense[keep]
        labels = None if labels is None else labels[keep]
        n = keep.size
    return epochs, first, batch_size, X, y_dense, labels, w, n, val, (cw_key, counts)


def _agree_stop(comm, model, hook, *args):
    """Run a callback hook on every rank (agreed as :func:`_agree`) and agree on
    ``model.stop_training`` in the same allgather: True on every rank if any rank set it."""
    _, votes = _agree(comm, hook, *args, share=lambda _: bool(model.stop_training))
    if any(votes):
        model.stop_training = True
    return model.stop_training


def _rank0_only(cb):
    return isinstance(cb, (ProgressBar, CSVLogger, ModelCheckpoint))


def fit(model, X, y, epochs, batch_size, shuffle, validation_split, validation_data,
        sample_weight, callbacks, verbose, comm, class_weight=None, initial_epoch=None):
    """``Sequential.fit`` over ``comm`` (see its docstring). Collective. Refused (ValueError)
    for a model with a trainable BatchNorm layer.

    As in one process on the union of the ranks' shards: ``class_weight="balanced"`` counts
    the classes of every rank (one allgather with the other facts of the call); the ``mae`` /
    ``mse`` metrics sum each batch's errors on its rank and reduce the sums once per epoch;
    a per-batch schedule sets the lr of global step ``optimizer.iteration`` before each step
    (every rank runs the same steps, so the position stays the same everywhere);
    ``initial_epoch`` positions the schedule at ``initial_epoch`` times the global steps per
    epoch (the longest shard's)."""
    comm = check_comm(comm)
    _refuse_batchnorm(model)
    MPI = _mpi()
    rank = comm.Get_rank()
    epochs, first, batch_size, X, y_dense, labels, w, n, val, (cw_key, counts) = _agree(
        comm, _prepare_fit, model, X, y, epochs, batch_size, shuffle, validation_split,
        validation_data, sample_weight, class_weight, initial_epoch)
    # (sample weights may be given on some ranks only: a shard without them counts each
    # sample 1, the global normalizers add up either way)
    facts = _allgather(comm, (epochs, bool(shuffle), val is not None, _signature(model), first,
                              cw_key, n, -(-n // batch_size), counts))
    for key, what in ((0, "epochs"), (1, "shuffle"), (2, "validation (given on some ranks "
                      "only)"), (3, "the models (architecture, loss, dtype, optimizer)"),
                      (4, "initial_epoch"), (5, "class_weight")):
        if any(f[key] != facts[0][key] for f in facts):
            raise ValueError(f"{what} differ between ranks: "
                             f"{[f[key] for f in facts]}")
    n_global = sum(f[6] for f in facts)
    if n_global == 0:
        raise ValueError("no rank has a training sample (of weight > 0)")
    steps = max(f[7] for f in facts)     # every rank runs the longest shard's step count
    if counts is not None and n:
        # "balanced" from the class counts of all ranks: the weights one process gives the
        # union (a class present on another rank only still counts)
        cw = class_weight_vector("balanced", model.loss, y_dense, labels, model.n_out,
                                 model.dtype, counts=np.sum([f[8] for f in facts], axis=0))
        w = cw if w is None else w * cw
    if callbacks is not None and rank != 0:
        callbacks = [cb for cb in callbacks if not _rank0_only(cb)]
    per_sample = 1 if model.loss == "cross_entropy" else model.n_out
    opt = model.optimizer
    per_batch = getattr(opt.schedule, "per_batch", False)
    errors = _error_metrics(model)
    keys = ["loss"] + (["accuracy"] if model.is_classifier else []) + errors
    if val is not None:
        keys += ["val_" + k for k in keys]

    def make_callbacks():
        cbs = CallbackList(callbacks, model=model, verbose=verbose if rank == 0 else 0,
                           epochs=epochs, steps=steps, n_samples=n_global)
        cbs.check_fit(keys + ["lr"])
        return cbs

    with model._lock:
        model._fwd = None
        model.stop_training = False
        broadcast_state(model, comm, check=False)   # rank 0's model, every fit (the
        # signatures were compared with the facts above)
        st = _stepper(model, comm, synced=True)
        engine = model._engine
        engine.rng_state = _mix_seed(_bcast(comm, engine.rng_state), rank)
        cbs = _agree(comm, make_callbacks)
        engine.ensure_capacity(max(1, min(batch_size, n)))
        user_batch_hooks = cbs._batch_begin or any(
            not isinstance(getattr(h, "__self__", None), ProgressBar) for h in cbs._batch_end)
        order = np.arange(n, dtype=np.int64)
        starts = np.minimum(np.arange(steps) * batch_size, n)
        stops = np.minimum(starts + batch_size, n)
        losses, corrects, sizes = np.empty(steps), np.empty(steps), np.empty(steps)
        refused = np.zeros(steps, dtype=bool)
        err = np.zeros(2)          # this rank's sum |a - y|, sum (a - y)^2 of an epoch
        engine.count_correct = model.is_classifier
        try:
            _agree(comm, cbs.on_train_begin)
            if initial_epoch is not None:     # the schedule's position: epoch initial_epoch
                opt.epoch, opt.iteration = first, first * steps
            for epoch in range(first, epochs):
                # the schedule continues from the optimizer's position, as in Sequential.fit
                opt.schedule_epoch(opt.epoch)
                _agree(comm, cbs.on_epoch_begin, epoch)
                if shuffle:
                    order = model._permutation(n)
                # the global normalizer (weight sum) and sample count of every step, at once
                local = np.zeros(2 * steps)
                local[steps:] = stops - starts
                if w is None:
                    local[:steps] = local[steps:]
                elif n:
                    # the batches tile [0, n): each non-empty one's sum is one reduceat segment
                    nz = starts < stops
                    local[:steps][nz] = np.add.reduceat(w[order].astype(np.float64), starts[nz])
                glob = np.empty_like(local)
                _wait(comm.Iallreduce(local, glob, op=MPI.SUM))
                norms, sizes[:] = glob[:steps], glob[steps:]
                err[:] = 0
                done = 0
                for b in range(steps):
                    if user_batch_hooks:
                        _agree(comm, cbs.on_train_batch_begin, b)
                    if per_batch:
                        opt.schedule_batch(opt.iteration)
                    t = opt.t + 1
                    rows = order[starts[b]:stops[b]]
                    losses[b], corrects[b], refused[b] = st.run(
                        X, y_dense, labels, w, rows, norms[b], t)
                    opt.t = t
                    opt.__dict__["iteration"] += 1   # (the cached engine arguments stay valid)
                    done = b + 1
                    if errors and rows.size:   # this rank's outputs of batch b, before its update
                        err += error_sums(engine.output_buffer(rows.size),
                                          None if y_dense is None else y_dense[rows],
                                          None if labels is None else labels[rows])[:2]
                    logs = {"loss": float(losses[b]), "size": int(sizes[b])}
                    if user_batch_hooks:
                        if _agree_stop(comm, model, cbs.on_train_batch_end, b, logs):
                            break
                    else:
                        cbs.on_train_batch_end(b, logs)
                opt.epoch += 1
                seen = float(sizes[:done].sum())
                logs = {"loss": float(losses[:done] @ sizes[:done]) / seen}
                if model.is_classifier:
                    logs["accuracy"] = float(corrects[:done].sum()) / (seen * per_sample)
                if errors:
                    err_glob = np.empty(2)
                    _wait(comm.Iallreduce(err, err_glob, op=MPI.SUM))
                    for name in errors:
                        logs[name] = float(err_glob[0 if name == "mae" else 1]) / (
                            seen * model.n_out)
                skipped = int(np.count_nonzero(refused[:done]))
                if skipped:
                    warnings.warn(
                        f"epoch {epoch + 1}: {skipped} of {done} batches were skipped (no "
                        f"update) on every rank: their loss or gradients were not finite or "
                        f"too large. The learning rate may be too high or the inputs too "
                        f"large.", RuntimeWarning, stacklevel=3)
                if val is not None:
                    logs.update(_global_score(model, comm, _local_score(model, *val),
                                              prefix="val_"))
                logs["lr"] = opt.lr
                _check_params_equal(comm, model)
                if _agree_stop(comm, model, cbs.on_epoch_end, epoch, logs):
                    break
            _agree(comm, cbs.on_train_end)
        except BaseException:
            # the history of the epochs completed, files of the callbacks closed
            model.history = cbs.history
            cbs.close()
            raise
        finally:
            engine.count_correct = False
    model.history = cbs.history
    return model.history
