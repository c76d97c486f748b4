"""Benchmarks behind ``python -m fastprop bench``: fastprop against pure NumPy (the reference
twin), PyTorch eager, scikit-learn and the GEMM floor.

What is timed (see ``benchmarks/README.md`` for the reasoning and the traps):

- **train**: one training step (forward, softmax cross-entropy on integer labels, backward, plain
  SGD lr=0.01) of ReLU MLPs: ``model.train_step(X, y)`` (public call, validation included),
  ``ReferenceModel.train_step`` (pure NumPy), an equivalent ``torch.nn.Sequential`` with
  ``F.cross_entropy`` and ``torch.optim.SGD``, ``MLPClassifier.partial_fit`` on one batch, and
  ``model._engine.gemm_floor(X)``: exactly the step's GEMMs through the same BLAS.
- **infer**: ``model.predict(X)`` against the reference forward, torch under ``no_grad``,
  ``MLPClassifier.predict_proba`` and the inference GEMM floor.
- **fit**: samples/s and test accuracy of ``model.fit`` on the bundled digits against the
  reference training loop and ``MLPClassifier.fit`` with the same Adam hyperparameters.

Every implementation is first checked against a float64 run of the reference from the same
initial weights (one step: loss and updated parameters; inference: outputs). One that fails is
reported and not timed. Implementations of one configuration are timed interleaved in one
process (A B C A B C ...), each sample being an inner loop of >= ~1 ms; we report minima and
medians. At more than one thread, fastprop (with its GEMM floor) and PyTorch each run in a
process of their own (two thread pools in one process fight). Thread counts are set once per block of configurations with threadpoolctl.

Optional packages (torch, scikit-learn, threadpoolctl, matplotlib) are imported lazily; the
benchmark degrades gracefully without them.
"""
import argparse
import gc
import importlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import nullcontext

import numpy as np

__all__ = ["NETS", "add_arguments", "main", "check_train", "check_infer", "format_table",
           "time_interleaved", "run_train_config", "run_infer_config", "run_fit"]

# name: (batch, sizes)
NETS = {
    "tiny": (1, [64, 32, 10]),
    "small": (32, [784, 128, 10]),
    "medium": (128, [784, 256, 256, 10]),
    "large": (256, [1024, 1024, 1024, 10]),
    "wide": (512, [2048, 2048, 2048, 10]),
}
QUICK_NETS = ("tiny", "small", "medium")
INFER_NETS = ("small", "medium")
INFER_BATCHES = (1, 1024)
LR = 0.01
DTYPES = ("float32", "float64")
# relative tolerance of the one-step checks against the float64 oracle
TOL = {"float64": 1e-9, "float32": 1e-4}
IMPLS = ("fastprop", "reference", "torch", "sklearn", "floor")
LABELS = {"fastprop": "fastprop", "reference": "reference", "torch": "torch",
          "sklearn": "sklearn", "floor": "GEMM floor"}
RATIOS = (("ref/fp", "reference", "fastprop"), ("torch/fp", "torch", "fastprop"),
          ("skl/fp", "sklearn", "fastprop"), ("fp/floor", "fastprop", "floor"))


# ------------------------------------------------------------------------------------------
# optional packages
# ------------------------------------------------------------------------------------------
_OPTIONAL = {}


def _optional(name):
    """The module, or None (reason kept in _OPTIONAL[name][1]); imported on first use."""
    if name not in _OPTIONAL:
        try:
            _OPTIONAL[name] = (importlib.import_module(name), None)
        except Exception as exc:   # ImportError, or a broken install
            _OPTIONAL[name] = (None, f"{type(exc).__name__}: {exc}")
    return _OPTIONAL[name][0]


def _available(name):
    """Whether a package can be found, without importing it (torch is slow to import)."""
    if name in _OPTIONAL:
        return _OPTIONAL[name][0] is not None
    import importlib.util
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _dist_version(dist):
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:
        return None


def _thread_limit(k):
    """Context that sets BLAS and OpenMP pools to k threads (None: leave the defaults)."""
    if k is None:
        return nullcontext()
    tpc = _optional("threadpoolctl")
    if tpc is None:
        return nullcontext()
    return tpc.threadpool_limits(limits=k)


# ------------------------------------------------------------------------------------------
# data, models and the oracle
# ------------------------------------------------------------------------------------------
def make_batch(sizes, batch, dtype, seed=0):
    """Deterministic (X, y): standard normal inputs, uniform integer labels."""
    rng = np.random.default_rng([seed, batch] + list(sizes))
    X = rng.standard_normal((batch, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], batch).astype(np.int64)
    return X, y


def build_model(sizes, dtype, seed=0, params=None):
    """The benchmark net: ReLU hidden layers, softmax output, cross-entropy, SGD(lr=0.01)."""
    import fastprop as fp
    last = len(sizes) - 2
    layers = [fp.Dense(a, b, activation="softmax" if i == last else "relu", seed=seed + i,
                       dtype=dtype)
              for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))]
    model = fp.Sequential(layers, loss="cross_entropy", optimizer=fp.optim.SGD(lr=LR),
                          dtype=dtype, seed=seed)
    if params is not None:
        model.params[...] = params
    return model


def unflatten(params, sizes):
    """[(W (n_in, n_out), b (n_out,)), ...] views of a flat parameter vector."""
    out, off = [], 0
    for a, b in zip(sizes[:-1], sizes[1:]):
        W = params[off:off + a * b].reshape(a, b)
        off += a * b
        out.append((W, params[off:off + b]))
        off += b
    return out


def _reference(sizes, dtype, params):
    from fastprop.reference import ReferenceModel
    acts = ["relu"] * (len(sizes) - 2) + ["softmax"]
    return ReferenceModel(sizes, acts, "cross_entropy", {"name": "SGD", "lr": LR},
                          params=params, dtype=dtype)


def oracle_step(sizes, X, y, params0):
    """(loss, params after one SGD step) of the reference in float64 from the same inputs."""
    ref = _reference(sizes, np.float64, params0.astype(np.float64))
    loss = ref.train_step(X.astype(np.float64), labels=y)
    return float(loss), ref.params.copy()


def oracle_predict(sizes, X, params0):
    ref = _reference(sizes, np.float64, params0.astype(np.float64))
    return ref.predict(X.astype(np.float64))


def _rel(a, b):
    """max |a - b| / max |b| in float64 (inf when a is not finite)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        return math.inf
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    return float(np.max(np.abs(a - b))) / max(scale, 1e-300)


def compare_step(loss, params, oracle, params0, dtype, tol=None):
    """Check one training step against the oracle; returns a JSON-able dict with ``ok``.

    ``loss_err`` = |L - L_oracle| / |L_oracle|; ``param_err`` = max|p - p_oracle| /
    max|p_oracle|; ``update_err`` = the same for the update p - p0 (it catches a missing or
    partial update that ``param_err`` hides under the size of p; it also magnifies the
    rounding of p: ~3e-6 in float32 on these nets). All three must be <= the dtype's
    tolerance."""
    tol = TOL[np.dtype(dtype).name] if tol is None else tol
    o_loss, o_params = oracle
    p0 = np.asarray(params0, dtype=np.float64)
    loss = float(loss)
    loss_err = abs(loss - o_loss) / max(abs(o_loss), 1e-300) if math.isfinite(loss) else math.inf
    param_err = _rel(params, o_params)
    update_err = _rel(np.asarray(params, dtype=np.float64) - p0, o_params - p0)
    ok = loss_err <= tol and param_err <= tol and update_err <= tol
    return {"ok": bool(ok), "tol": tol, "loss": loss, "oracle_loss": o_loss,
            "loss_err": loss_err, "param_err": param_err, "update_err": update_err}


def compare_output(out, oracle, dtype, tol=None):
    tol = TOL[np.dtype(dtype).name] if tol is None else tol
    err = _rel(out, oracle)
    return {"ok": bool(err <= tol), "tol": tol, "output_err": err}


# ------------------------------------------------------------------------------------------
# implementations: each factory does the checked first call and returns what timing needs
# ------------------------------------------------------------------------------------------
def _fp_train(sizes, dtype, params0, X, y):
    model = build_model(sizes, dtype, params=params0)
    loss = model.train_step(X, y)
    return loss, model.params.copy(), (lambda: model.train_step(X, y)), model


def _ref_train(sizes, dtype, params0, X, y):
    ref = _reference(sizes, dtype, params0)
    loss = ref.train_step(X, labels=y)
    return loss, ref.params.copy(), (lambda: ref.train_step(X, labels=y)), ref


def _torch_net(sizes, dtype, params0):
    torch = _optional("torch")
    if torch is None:
        raise ImportError(_OPTIONAL["torch"][1])
    tdt = torch.float64 if np.dtype(dtype) == np.float64 else torch.float32
    mods, lins = [], []
    for i, (W, b) in enumerate(unflatten(np.asarray(params0), sizes)):
        lin = torch.nn.Linear(W.shape[0], W.shape[1], dtype=tdt)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
            lin.bias.copy_(torch.from_numpy(np.array(b)))
        mods.append(lin)
        lins.append(lin)
        if i < len(sizes) - 2:
            mods.append(torch.nn.ReLU())
    return torch, torch.nn.Sequential(*mods), lins


def _torch_flat(lins):
    parts = []
    for lin in lins:
        parts.append(lin.weight.detach().numpy().T.ravel())
        parts.append(lin.bias.detach().numpy().ravel())
    return np.concatenate(parts)


def _torch_train(sizes, dtype, params0, X, y):
    torch, net, lins = _torch_net(sizes, dtype, params0)
    F = torch.nn.functional
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    def step():   # the loss stays a tensor: no .item() in the timed call
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(Xt), yt)
        loss.backward()
        opt.step()
        return loss

    loss = float(step().item())
    return loss, _torch_flat(lins), step, net


def _sklearn_clf(sizes, batch, **kw):
    from sklearn.neural_network import MLPClassifier
    return MLPClassifier(hidden_layer_sizes=tuple(sizes[1:-1]), activation="relu",
                         alpha=0.0, batch_size=batch, random_state=0, **kw)


def _sklearn_set(clf, params0, sizes):
    for l, (W, b) in enumerate(unflatten(np.asarray(params0), sizes)):
        clf.coefs_[l][...] = W
        clf.intercepts_[l][...] = b


def _sklearn_flat(clf):
    parts = []
    for W, b in zip(clf.coefs_, clf.intercepts_):
        parts += [W.ravel(), b.ravel()]
    return np.concatenate(parts)


def _sk_train(sizes, dtype, params0, X, y):
    clf = _sklearn_clf(sizes, len(X), solver="sgd", learning_rate_init=LR, momentum=0.0,
                       nesterovs_momentum=False, shuffle=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.partial_fit(X, y, classes=np.arange(sizes[-1]))   # initializes coefs_, optimizer
    _sklearn_set(clf, params0, sizes)
    clf.partial_fit(X, y)
    # loss_ (= loss_curve_[-1]) of a one-batch partial_fit is that batch's loss before the
    # update: log_loss of the clipped softmax (+ 0 * L2 with alpha=0)
    return clf.loss_, _sklearn_flat(clf), (lambda: clf.partial_fit(X, y)), clf


TRAIN_FACTORIES = {"fastprop": _fp_train, "reference": _ref_train, "torch": _torch_train,
                   "sklearn": _sk_train}


def _fp_infer(sizes, dtype, params0, X):
    model = build_model(sizes, dtype, params=params0)
    out = model.predict(X)
    return out, (lambda: model.predict(X)), model


def _ref_infer(sizes, dtype, params0, X):
    ref = _reference(sizes, dtype, params0)
    return ref.predict(X), (lambda: ref.predict(X)), ref


def _torch_infer(sizes, dtype, params0, X):
    torch, net, _ = _torch_net(sizes, dtype, params0)
    Xt = torch.from_numpy(X)

    def run():
        with torch.no_grad():
            return torch.softmax(net(Xt), dim=1)

    return run().numpy(), run, net


def _sk_infer(sizes, dtype, params0, X):
    clf = _sklearn_clf(sizes, len(X), solver="sgd", learning_rate_init=LR, momentum=0.0,
                       shuffle=False)
    y = np.arange(len(X)) % sizes[-1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.partial_fit(X, y, classes=np.arange(sizes[-1]))
    _sklearn_set(clf, params0, sizes)
    return clf.predict_proba(X), (lambda: clf.predict_proba(X)), clf


INFER_FACTORIES = {"fastprop": _fp_infer, "reference": _ref_infer, "torch": _torch_infer,
                   "sklearn": _sk_infer}


# ------------------------------------------------------------------------------------------
# checks (also the test suite's entry points)
# ------------------------------------------------------------------------------------------
def check_train(net, dtype, impls=("fastprop", "reference", "torch", "sklearn"), seed=0):
    """One step of each implementation from identical weights against the float64 oracle.

    Returns ``{name: check dict}``; an implementation that cannot run has ``ok`` False and an
    ``error``. Also returns the state the timing needs, under the key ``"_state"``."""
    batch, sizes = NETS[net]
    X, y = make_batch(sizes, batch, dtype, seed)
    params0 = build_model(sizes, dtype, seed).params.copy()
    oracle = oracle_step(sizes, X, y, params0)
    checks, state = {}, {}
    for name in impls:
        try:
            loss, params, step, obj = TRAIN_FACTORIES[name](sizes, dtype, params0, X, y)
        except Exception as exc:
            checks[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            continue
        checks[name] = compare_step(loss, params, oracle, params0, dtype)
        if name == "sklearn":
            checks[name]["compared"] = ("loss_ after one partial_fit (log_loss of the softmax "
                                        "clipped to [eps, 1-eps]) and coefs_/intercepts_")
        state[name] = (step, obj)
    checks["_state"] = {"X": X, "y": y, "sizes": sizes, "batch": batch, "impls": state}
    return checks


def check_infer(net, batch, dtype, impls=("fastprop", "reference", "torch", "sklearn"),
                seed=0):
    """Inference outputs of each implementation against the float64 oracle (same layout as
    :func:`check_train`)."""
    sizes = NETS[net][1]
    X, _ = make_batch(sizes, batch, dtype, seed)
    params0 = build_model(sizes, dtype, seed).params.copy()
    oracle = oracle_predict(sizes, X, params0)
    checks, state = {}, {}
    for name in impls:
        try:
            out, run, obj = INFER_FACTORIES[name](sizes, dtype, params0, X)
        except Exception as exc:
            checks[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            continue
        checks[name] = compare_output(out, oracle, dtype)
        state[name] = (run, obj)
    checks["_state"] = {"X": X, "sizes": sizes, "batch": batch, "impls": state}
    return checks


def _check_note(name, chk):
    if "error" in chk:
        return f"{LABELS[name]}: could not run ({chk['error']}); not timed"
    errs = ", ".join(f"{k} {chk[k]:.2e}" for k in ("loss_err", "param_err", "update_err",
                                                    "output_err")
                     if k in chk and not chk[k] <= chk["tol"])
    return f"{LABELS[name]}: CHECK FAILED ({errs} > tol {chk['tol']:g}); not timed"


# ------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------
def _calibrate(fn, sample_s):
    """(seconds per call, inner loop count so that one sample lasts >= sample_s)."""
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= sample_s / 4 or n >= 10000:
            break
    per = elapsed / n
    return per, max(1, math.ceil(sample_s / per))


def time_interleaved(fns, budget_s, min_repeats=5, max_repeats=400, sample_s=1e-3):
    """Time callables interleaved (A B C A B C ...): per repeat, each makes one untimed call
    and then runs a timed inner loop of >= sample_s; repeats fill about budget_s (within
    [min_repeats, max_repeats]).

    The untimed call puts every implementation in the state of consecutive training steps
    (its own weights and buffers in cache) whatever ran before it. Without it, a call that
    lasts longer than sample_s was timed cold after another implementation, except the GEMM
    floor, which runs right after fastprop's steps on the same weights: the large net's
    fp/floor read 1.13 that way and 1.01-1.06 with both warm.

    Returns ``{name: {"min_us", "median_us", "inner", "repeats", "samples_us"}}``."""
    cal = {k: _calibrate(fn, sample_s) for k, fn in fns.items()}
    per_repeat = sum(per * (inner + 1) for per, inner in cal.values()) or 1e-9
    repeats = int(min(max_repeats, max(min_repeats, budget_s // per_repeat)))
    samples = {k: [] for k in fns}
    clock = time.perf_counter
    for _ in range(repeats):
        for name, fn in fns.items():
            inner = cal[name][1]
            r = range(inner)
            fn()
            t0 = clock()
            for _ in r:
                fn()
            samples[name].append((clock() - t0) / inner * 1e6)
    return {k: {"min_us": float(np.min(v)), "median_us": float(np.median(v)),
                "inner": cal[k][1], "repeats": repeats, "samples_us": [float(s) for s in v]}
            for k, v in samples.items()}


def _ratios(timings):
    out = {}
    for label, num, den in RATIOS:
        if num in timings and den in timings:
            out[label] = {s: timings[num][s] / timings[den][s] for s in ("min_us", "median_us")}
    return out


# ------------------------------------------------------------------------------------------
# configurations
# ------------------------------------------------------------------------------------------
def _run_config(section, checks, fns_builder, meta, opts):
    """Shared tail of train / infer: notes for failed checks, timing, ratios."""
    state = checks.pop("_state")
    res = dict(meta)
    res.update({"checks": checks, "timings": {}, "notes": []})
    fns = {}
    for name in ("fastprop", "reference", "torch", "sklearn"):
        chk = checks.get(name)
        if chk is None:
            continue
        if not chk["ok"]:
            res["notes"].append(_check_note(name, chk))
            continue
        fns[name] = state["impls"][name][0]
        if name == "fastprop" and opts.get("floor", True):
            fns["floor"] = fns_builder(state["impls"][name][1], state["X"])
    if fns:
        gc.collect()
        res["timings"] = time_interleaved(fns, opts["budget"], opts["min_repeats"],
                                          opts["max_repeats"], opts.get("sample_s", 1e-3))
    res["ratios"] = _ratios(res["timings"])
    return res


def run_train_config(net, dtype, threads, opts, impls):
    """Check then time one training configuration (threads are already set by the caller)."""
    batch, sizes = NETS[net]
    checks = check_train(net, dtype, impls, seed=opts.get("seed", 0))
    meta = {"section": "train", "net": net, "dtype": np.dtype(dtype).name, "threads": threads,
            "batch": batch, "sizes": sizes}
    # the floor runs on the timed fastprop model's engine right after its real steps on X
    return _run_config("train", checks, lambda model, X: (lambda: model._engine.gemm_floor(X)),
                       meta, opts)


def run_infer_config(net, batch, dtype, threads, opts, impls):
    sizes = NETS[net][1]
    checks = check_infer(net, batch, dtype, impls, seed=opts.get("seed", 0))
    meta = {"section": "infer", "net": net, "dtype": np.dtype(dtype).name, "threads": threads,
            "batch": batch, "sizes": sizes}

    def floor(model, X):
        model.forward(X, training=False)   # valid activations in the workspace the floor reads
        return lambda: model._engine.gemm_floor(X, False)

    return _run_config("infer", checks, floor, meta, opts)


def run_fit(dtype, epochs, repeats, impls=("fastprop", "reference", "sklearn"), seed=0,
            threads=None):
    """samples/s and test accuracy of fastprop's fit, the reference loop and MLPClassifier.fit
    on the bundled digits, from the same initial weights, Adam, batch 32, shuffled, no early
    stopping, no regularization; repeats interleaved, best time reported."""
    from fastprop._demo import _demo_model, _digits_split, _reference_fit
    from fastprop.reference import ReferenceModel
    dtype = np.dtype(dtype)
    Xtr, ytr, Xte, yte = _digits_split(seed)
    Xtr, Xte = Xtr.astype(dtype), Xte.astype(dtype)
    m0 = _demo_model(seed, dtype.name)
    opt = m0.optimizer
    sizes = [m0._dense[0].n_in] + [d.n_out for d in m0._dense]
    params0 = m0.params.copy()
    batch = 32

    def fit_fastprop():
        m = _demo_model(seed, dtype.name)
        t0 = time.perf_counter()
        m.fit(Xtr, ytr, epochs=epochs, batch_size=batch, shuffle=True, verbose=0)
        t = time.perf_counter() - t0
        return t, float(m.evaluate(Xte, yte)["accuracy"])

    def fit_reference():
        ref = ReferenceModel.from_model(_demo_model(seed, dtype.name))
        t0 = time.perf_counter()
        _reference_fit(ref, Xtr, ytr, epochs, batch, seed)
        t = time.perf_counter() - t0
        return t, float(np.mean(np.argmax(ref.predict(Xte), axis=1) == yte))

    def fit_sklearn():
        from sklearn.neural_network import MLPClassifier
        clf = MLPClassifier(hidden_layer_sizes=tuple(sizes[1:-1]), activation="relu",
                            solver="adam", learning_rate_init=opt.lr, beta_1=opt.betas[0],
                            beta_2=opt.betas[1], epsilon=opt.eps, batch_size=batch, alpha=0.0,
                            shuffle=True, max_iter=epochs, tol=0.0,
                            n_iter_no_change=epochs + 1, early_stopping=False,
                            warm_start=True, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # initialize coefs_ on one batch, then start from fastprop's initial weights;
            # fit() (incremental=False) makes a fresh Adam and keeps coefs_ (warm_start)
            clf.partial_fit(Xtr[:batch], ytr[:batch], classes=np.arange(sizes[-1]))
            _sklearn_set(clf, params0, sizes)
            t0 = time.perf_counter()
            clf.fit(Xtr, ytr)
            t = time.perf_counter() - t0
        return t, float(clf.score(Xte, yte))

    runners = {"fastprop": fit_fastprop, "reference": fit_reference, "sklearn": fit_sklearn}
    runs = {k: [] for k in impls}
    errors = {}
    for _ in range(repeats):
        for name in impls:
            if name in errors:
                continue
            try:
                runs[name].append(runners[name]())
            except Exception as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"
    n_samples = epochs * len(ytr)
    res = {"section": "fit", "dtype": dtype.name, "threads": threads, "epochs": epochs,
           "batch": batch, "sizes": sizes, "n_train": int(len(ytr)), "n_test": int(len(yte)),
           "optimizer": {"name": "Adam", "lr": opt.lr, "betas": list(opt.betas),
                         "eps": opt.eps},
           "impls": {}, "notes": [f"{LABELS[k]}: could not run ({v})" for k, v in errors.items()]}
    for name, rs in runs.items():
        if not rs:
            continue
        times = [t for t, _ in rs]
        res["impls"][name] = {"seconds": times, "best_s": min(times),
                              "samples_per_s": n_samples / min(times),
                              "test_accuracy": rs[0][1]}
    return res


def run_memory(dtype, net="large", n_samples=4096, seed=0):
    """Peak memory that fit allocates on `net` (Adam, 1 epoch, tracemalloc: NumPy reports its
    buffers to it), beside what the model must hold: parameters, gradients, optimizer state and
    the activation workspace of one batch."""
    import tracemalloc
    import fastprop as fp
    batch, sizes = NETS[net]
    X, y = make_batch(sizes, n_samples, dtype, seed)
    model = build_model(sizes, dtype, seed)
    model.optimizer = fp.optim.Adam()
    model.optimizer._setup(model.n_params, model.dtype)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    model.fit(X, y, epochs=1, batch_size=batch, verbose=0)
    peak = tracemalloc.get_traced_memory()[1] - before
    tracemalloc.stop()
    item = np.dtype(dtype).itemsize
    held = {"params": model.params.nbytes, "grads": model.grads.nbytes,
            "optimizer_state": sum(a.nbytes for a in model.optimizer.state.values()),
            "workspace": model._engine.workspace_nbytes()}
    acts = batch * sum(sizes[1:]) * item
    return {"section": "memory", "net": net, "dtype": np.dtype(dtype).name, "threads": None,
            "batch": batch, "sizes": sizes, "n_samples": n_samples, "held": held,
            "activations_one_batch": acts, "fit_peak_new": peak}


def format_memory(results):
    rows = [r for r in results if r["section"] == "memory"]
    if not rows:
        return ""
    mb = lambda b: f"{b / 2**20:,.1f} MB"
    lines = ["Memory of fit (Adam, 1 epoch; tracemalloc peak of what fit allocated, the model "
             "already built)"]
    for r in rows:
        h = r["held"]
        lines.append(
            f"  {r['net']} {r['dtype']} batch {r['batch']} ({r['n_samples']} samples): "
            f"params {mb(h['params'])}, grads {mb(h['grads'])}, optimizer state "
            f"{mb(h['optimizer_state'])}; activations of a batch {mb(r['activations_one_batch'])}"
            f" -> workspace {mb(h['workspace'])} (z, a, delta per layer + gathered batch); "
            f"fit's peak new allocation {mb(r['fit_peak_new'])}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# more than one thread: fastprop and PyTorch each in a process of their own
# ------------------------------------------------------------------------------------------
def _worker(job_path, out_path):
    """Run inside ``python -m fastprop._bench --worker JOB OUT``: check and time one
    implementation family alone at the job's thread count, so that its thread pool never
    competes with another one in the same process: ``torch`` (its OpenMP pool), or
    ``fastprop`` and its GEMM floor (SciPy's OpenBLAS; NumPy's pool stays at 1 thread)."""
    with open(job_path) as f:
        job = json.load(f)
    impl, threads = job.get("impl", "torch"), job["threads"]
    if impl == "torch":
        torch = _optional("torch")
        if torch is None:
            out = [{"error": _OPTIONAL["torch"][1]} for _ in job["configs"]]
            with open(out_path, "w") as f:
                json.dump(out, f)
            return 0
        if threads is not None:
            torch.set_num_threads(int(threads))
    out = []
    # this process's NumPy/SciPy BLAS (data and oracle) stays at 1 thread; fastprop's model
    # gets the job's threads through its own n_threads
    with _thread_one_blas():
        for cfg in job["configs"]:
            opts = dict(job["opts"], budget=cfg.get("budget", job["opts"]["budget"]))
            if cfg["section"] == "train":
                checks = check_train(cfg["net"], cfg["dtype"], (impl,), opts["seed"])
            else:
                checks = check_infer(cfg["net"], cfg["batch"], cfg["dtype"], (impl,),
                                     opts["seed"])
            state = checks.pop("_state")
            chk = checks[impl]
            entry = {"check": chk, "timings": {}}
            if chk["ok"]:
                run, obj = state["impls"][impl]
                fns = {impl: run}
                if impl == "fastprop":
                    if threads is not None:
                        obj.n_threads = int(threads)
                    X = state["X"]
                    if cfg["section"] == "train":
                        fns["floor"] = lambda: obj._engine.gemm_floor(X)
                    else:
                        obj.forward(X, training=False)
                        fns["floor"] = lambda: obj._engine.gemm_floor(X, False)
                gc.collect()
                entry["timings"] = time_interleaved(fns, opts["budget"], opts["min_repeats"],
                                                    opts["max_repeats"],
                                                    opts.get("sample_s", 1e-3))
            if impl == "torch":
                entry["torch_threads"] = _optional("torch").get_num_threads()
            out.append(entry)
    with open(out_path, "w") as f:
        json.dump(out, f)
    return 0


def _thread_one_blas():
    tpc = _optional("threadpoolctl")
    return tpc.threadpool_limits(limits=1, user_api="blas") if tpc else nullcontext()


def _run_worker_process(impl, threads, configs, opts, log):
    """Check and time `impl` ("torch" or "fastprop") for the configs in a fresh process; a list
    of entries or an error string."""
    with tempfile.TemporaryDirectory(prefix="fastprop-bench-") as tmp:
        job_path, out_path = os.path.join(tmp, "job.json"), os.path.join(tmp, "out.json")
        with open(job_path, "w") as f:
            json.dump({"impl": impl, "threads": threads, "configs": configs, "opts": opts}, f)
        env = dict(os.environ)
        env["OPENBLAS_NUM_THREADS"] = "1"
        cmd = [sys.executable, "-m", "fastprop._bench", "--worker", job_path, out_path]
        log(f"  {impl} at {threads} threads: {len(configs)} configurations in a separate "
            f"process ...")
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
        if proc.returncode != 0 or not os.path.exists(out_path):
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
            return f"{impl} worker process failed (exit {proc.returncode}): {' | '.join(tail)}"
        with open(out_path) as f:
            return json.load(f)


def _merge_worker(res, impl, entry):
    """Put a worker entry (or an error string) for `impl` into a config result."""
    if isinstance(entry, str) or "error" in entry:
        err = entry if isinstance(entry, str) else entry["error"]
        res["checks"][impl] = {"ok": False, "error": err}
        res["notes"].append(f"{impl}: could not run in the separate process ({err})")
        return
    chk = entry["check"]
    res["checks"][impl] = chk
    if not chk["ok"]:
        res["notes"].append(_check_note(impl, chk) + " (separate process)")
        return
    for name, t in entry["timings"].items():
        t = dict(t, process="separate")
        if "torch_threads" in entry:
            t["torch_threads"] = entry["torch_threads"]
        res["timings"][name] = t
    res["ratios"] = _ratios(res["timings"])


# ------------------------------------------------------------------------------------------
# scaling: 1 and N threads, each (implementation, thread count) in a process of its own
# ------------------------------------------------------------------------------------------
SCALING_TRAIN = ("small", "medium", "large")
SCALING_FIT_BATCHES = (32, 128)
SCALING_PREDICT = ("medium", 10_000)
SCALING_IMPLS = ("fastprop", "torch", "jax")


def _scaling_configs(quick):
    train = SCALING_TRAIN[:2] if quick else SCALING_TRAIN
    return ([{"kind": "train", "net": n} for n in train] +
            [{"kind": "fit", "batch": b} for b in SCALING_FIT_BATCHES] +
            [{"kind": "predict", "net": SCALING_PREDICT[0], "rows": SCALING_PREDICT[1]}])


def _jax_params(sizes, params0):
    import jax.numpy as jnp
    return [(jnp.asarray(W), jnp.asarray(b)) for W, b in unflatten(np.asarray(params0), sizes)]


def _jax_forward(params, X):
    import jax
    import jax.numpy as jnp
    for W, b in params[:-1]:
        X = jax.nn.relu(X @ W + b)
    W, b = params[-1]
    return X @ W + b


def _jax_train(sizes, dtype, params0, X, y):
    """A jitted whole step (value_and_grad + SGD), as a JAX user writes it."""
    import jax
    import jax.numpy as jnp

    def loss_fn(params, X, y):
        logits = _jax_forward(params, X)
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    @jax.jit
    def step(params, X, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, X, y)
        return loss, jax.tree_util.tree_map(lambda p, g: p - LR * g, params, grads)

    state = {"p": _jax_params(sizes, params0)}
    Xj, yj = jnp.asarray(X), jnp.asarray(y)

    def run():
        loss, state["p"] = step(state["p"], Xj, yj)
        loss.block_until_ready()

    run()
    return run


def _jax_infer(sizes, dtype, params0, X):
    import jax
    import jax.numpy as jnp
    params = _jax_params(sizes, params0)
    fwd = jax.jit(lambda p, X: jax.nn.softmax(_jax_forward(p, X)))
    Xj = jnp.asarray(X)

    def run():
        fwd(params, Xj).block_until_ready()

    run()
    return run


def _scaling_fn(impl, cfg, threads):
    """(callable, samples per call) of one scaling configuration for impl."""
    dtype = np.float32
    if cfg["kind"] == "fit":
        if impl != "fastprop":
            return None, 0
        from fastprop._demo import _demo_model, _digits_split
        Xtr, ytr, _, _ = _digits_split(0)
        Xtr = Xtr.astype(dtype)
        model = _demo_model(0, "float32")
        model.n_threads = threads
        epochs = 3
        return (lambda: model.fit(Xtr, ytr, epochs=epochs, batch_size=cfg["batch"],
                                  shuffle=True, verbose=0)), epochs * len(ytr)
    batch, sizes = NETS[cfg["net"]]
    if cfg["kind"] == "predict":
        batch = cfg["rows"]
    X, y = make_batch(sizes, batch, dtype)
    params0 = build_model(sizes, dtype).params.copy()
    if impl == "fastprop":
        model = build_model(sizes, dtype, params=params0)
        model.n_threads = threads
        fn = (lambda: model.train_step(X, y)) if cfg["kind"] == "train" else \
            (lambda: model.predict(X))
    elif impl == "torch":
        fn = (_torch_train(sizes, dtype, params0, X, y)[2] if cfg["kind"] == "train" else
              _torch_infer(sizes, dtype, params0, X)[1])
    else:
        fn = (_jax_train if cfg["kind"] == "train" else _jax_infer)(
            sizes, dtype, params0, *((X, y) if cfg["kind"] == "train" else (X,)))
    return fn, batch


def _scaling_worker(job_path, out_path):
    """One implementation at one thread count, in a process of its own. The 1-thread rows run
    pinned to one CPU (``os.sched_setaffinity``): XLA's thread flags do not make JAX
    single-threaded, and a pin is the same rule for every implementation."""
    with open(job_path) as f:
        job = json.load(f)
    impl, threads = job["impl"], job["threads"]
    if threads == 1 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    out = []
    try:
        if impl == "torch":
            torch = _optional("torch")
            if torch is None:
                raise ImportError("torch is not installed")
            torch.set_num_threads(threads)
        elif impl == "jax":
            if importlib.util.find_spec("jax") is None:
                raise ImportError("jax is not installed")
        for cfg in job["configs"]:
            fn, per_call = _scaling_fn(impl, cfg, threads)
            if fn is None:
                out.append(None)
                continue
            gc.collect()
            t = time_interleaved({impl: fn}, job["budget"], 3, 200,
                                 5e-3 if cfg["kind"] == "fit" else 1e-3)[impl]
            t["per_call"] = per_call
            out.append(t)
    except ImportError as e:
        out = {"error": str(e)}
    with open(out_path, "w") as f:
        json.dump(out, f)
    return 0


def run_scaling(threads, rounds, budget, impls=SCALING_IMPLS, quick=False, log=None):
    """The issue-15 rows: train steps of the small / medium / large nets, digits fit at batch
    32 and 128, predict of 10,000 rows of the medium net (float32), for each implementation at
    1 and ``threads`` threads, each (implementation, threads) in a fresh process; ``rounds``
    rounds of all processes, interleaved (A1 A2 B1 B2 ... then again), medians over every
    sample of every round. Returns one result per configuration."""
    log = log or _log
    configs = _scaling_configs(quick)
    runs = [(impl, k) for impl in impls for k in sorted({1, threads})]
    samples = {(impl, k, i): [] for impl, k in runs for i in range(len(configs))}
    errors = {}
    for r in range(rounds):
        for impl, k in runs:
            if impl in errors:
                continue
            with tempfile.TemporaryDirectory(prefix="fastprop-bench-") as tmp:
                job_path, out_path = os.path.join(tmp, "job.json"), os.path.join(tmp, "o.json")
                with open(job_path, "w") as f:
                    json.dump({"impl": impl, "threads": k, "configs": configs,
                               "budget": budget}, f)
                env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
                log(f"  scaling round {r + 1}/{rounds}: {impl} at {k} thread(s) ...")
                proc = subprocess.run([sys.executable, "-m", "fastprop._bench",
                                       "--scaling-worker", job_path, out_path], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                if proc.returncode != 0 or not os.path.exists(out_path):
                    tail = (proc.stderr or "").strip().splitlines()[-2:]
                    errors[impl] = f"exit {proc.returncode}: {' | '.join(tail)}"
                    continue
                with open(out_path) as f:
                    out = json.load(f)
            if isinstance(out, dict):
                errors[impl] = out["error"]
                continue
            for i, t in enumerate(out):
                if t is not None:
                    samples[(impl, k, i)].append(t)
    results = []
    for i, cfg in enumerate(configs):
        res = {"section": "scaling", "config": cfg, "threads": threads, "rounds": rounds,
               "impls": {}, "errors": dict(errors)}
        for impl, k in runs:
            ts = samples[(impl, k, i)]
            if not ts:
                continue
            allv = np.concatenate([t["samples_us"] for t in ts])
            res["impls"][f"{impl}@{k}"] = {
                "median_us": float(np.median(allv)), "min_us": float(np.min(allv)),
                "p10_us": float(np.percentile(allv, 10)),
                "p90_us": float(np.percentile(allv, 90)),
                "round_medians_us": [t["median_us"] for t in ts],
                "per_call": ts[0]["per_call"]}
        results.append(res)
    return results


def _scaling_label(cfg):
    if cfg["kind"] == "train":
        batch, sizes = NETS[cfg["net"]]
        return f"train {cfg['net']} {batch} x {'-'.join(map(str, sizes))}"
    if cfg["kind"] == "fit":
        return f"fit digits batch {cfg['batch']} (samples/s)"
    return f"predict {cfg['net']} {cfg['rows']:,} rows"


def format_scaling(results):
    rows = [r for r in results if r["section"] == "scaling"]
    if not rows:
        return ""
    k = rows[0]["threads"]
    lines = [f"Scaling, float32, 1 and {k} threads, each implementation and thread count in a "
             f"process of its own ({rows[0]['rounds']} interleaved rounds); median µs per call "
             f"[p10-p90] (fit: samples/s from the median); speed-up = 1-thread / {k}-thread "
             f"time; peers ÷ fastprop at {k} threads (> 1: fastprop ahead)"]
    for impl, err in rows[0]["errors"].items():
        lines.append(f"  {impl} left out: {err}")
    for r in rows:
        im, cfg = r["impls"], r["config"]
        parts = []
        for impl in SCALING_IMPLS:
            for t in sorted({1, k}):
                e = im.get(f"{impl}@{t}")
                if e is None:
                    continue
                if cfg["kind"] == "fit":
                    parts.append(f"{impl}@{t} {e['per_call'] / e['median_us'] * 1e6:,.0f}/s")
                else:
                    parts.append(f"{impl}@{t} {_us(e['median_us'])} "
                                 f"[{_us(e['p10_us'])}-{_us(e['p90_us'])}]")
        extra = []
        for impl in SCALING_IMPLS:
            a, b = im.get(f"{impl}@1"), im.get(f"{impl}@{k}")
            if a and b and k != 1:
                extra.append(f"{impl} speed-up {a['median_us'] / b['median_us']:.2f}x")
        fp_k = im.get(f"fastprop@{k}")
        for impl in SCALING_IMPLS[1:]:
            e = im.get(f"{impl}@{k}")
            if fp_k and e:
                extra.append(f"{impl}/fp {e['median_us'] / fp_k['median_us']:.2f}")
        lines.append(f"  {_scaling_label(cfg)}")
        lines.append("    " + "; ".join(parts))
        if extra:
            lines.append("    " + "; ".join(extra))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# environment description
# ------------------------------------------------------------------------------------------
def environment():
    import scipy

    import fastprop
    env = {"fastprop": fastprop.__version__, "python": platform.python_version(),
           "numpy": np.__version__, "scipy": scipy.__version__,
           "torch": _dist_version("torch") if _available("torch") else None,
           "scikit-learn": _dist_version("scikit-learn") if _available("sklearn") else None,
           "threadpoolctl": _dist_version("threadpoolctl") if _available("threadpoolctl")
           else None,
           "cpu_count": os.cpu_count(), "machine": platform.machine(),
           "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"), "libraries": []}
    tpc = _optional("threadpoolctl")
    if tpc is not None:
        for info in tpc.threadpool_info():
            env["libraries"].append({
                "user_api": info.get("user_api"), "internal_api": info.get("internal_api"),
                "version": info.get("version"), "architecture": info.get("architecture"),
                "file": os.path.basename(info.get("filepath", "")),
                "threads": info.get("num_threads")})
    return env


def format_header(env, opts):
    v = lambda k: env.get(k) or "not installed"
    lines = [f"fastprop {env['fastprop']} bench  (python {env['python']}, {env['machine']}, "
             f"os.cpu_count() = {env['cpu_count']})",
             f"numpy {env['numpy']}, scipy {env['scipy']}, torch {v('torch')}, "
             f"scikit-learn {v('scikit-learn')}, threadpoolctl {v('threadpoolctl')}"]
    blas = [lib for lib in env["libraries"] if lib["user_api"] == "blas"]
    if env["threadpoolctl"] is None:
        lines.append("BLAS: unknown (threadpoolctl not installed: thread settings cannot be "
                     "applied; everything runs with the default threads)")
    for lib in blas:
        lines.append(f"BLAS: {lib['internal_api']} {lib['version']} ({lib['architecture']}) "
                     f"{lib['file']}, {lib['threads']} threads")
    other = [lib for lib in env["libraries"] if lib["user_api"] != "blas"]
    for lib in other:
        lines.append(f"{lib['user_api']}: {lib['internal_api']} {lib['file']}, "
                     f"{lib['threads']} threads")
    if env.get("OPENBLAS_CORETYPE"):
        lines.append(f"WARNING: OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE']} is set "
                     f"(forces an OpenBLAS kernel)")
    lines.append(f"Times in µs per call: min (median) over interleaved repeats, each sample an "
                 f"inner loop of >= {opts['sample_s'] * 1e3:g} ms after one untimed call; ratios from the minima.")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# tables
# ------------------------------------------------------------------------------------------
def _us(x):
    if x is None:
        return "-"
    if x < 10:
        return f"{x:.2f}"
    if x < 100:
        return f"{x:.1f}"
    return f"{x:,.0f}"


def _threads_label(k):
    return "def" if k is None else str(k)


def format_table(results, section="train"):
    """Plain-text table of the train or infer results; columns without any value are left
    out. Returns the text (with notes under the table)."""
    rows = [r for r in results if r["section"] == section]
    if not rows:
        return ""
    key = ["net", "batch", "dtype", "thr"] if section == "infer" else ["net", "dtype", "thr"]
    impls = [k for k in IMPLS if any(k in r["timings"] or k in r["checks"] for r in rows)]
    ratios = [lab for lab, a, b in RATIOS if a in impls and b in impls]
    head = key + [f"{LABELS[k]} µs" for k in impls] + ratios
    table = [head]
    for r in rows:
        cells = [r["net"]] + ([str(r["batch"])] if section == "infer" else []) + \
                [r["dtype"], _threads_label(r["threads"])]
        for k in impls:
            t = r["timings"].get(k)
            if t is None:
                cells.append("skipped" if k in r["checks"] else "-")
            else:
                mark = "*" if t.get("process") == "separate" else ""
                cells.append(f"{_us(t['min_us'])} ({_us(t['median_us'])}){mark}")
        for lab in ratios:
            q = r["ratios"].get(lab)
            cells.append("-" if q is None else f"{q['min_us']:.2f}")
        table.append(cells)
    widths = [max(len(row[c]) for row in table) for c in range(len(head))]
    nkey = len(key)
    fmt = lambda row: "  ".join(c.ljust(w) if i < nkey else c.rjust(w)
                                for i, (c, w) in enumerate(zip(row, widths)))
    title = {"train": "Training step (forward + softmax CE + backward + SGD update)",
             "infer": "Inference (predict; torch under no_grad)"}[section]
    lines = [title, fmt(head), "-" * len(fmt(head))] + [fmt(row) for row in table[1:]]
    if any(t.get("process") == "separate" for r in rows for t in r["timings"].values()):
        lines.append("* more than one thread: fastprop with its floor, and torch, each timed "
                     "in a process of its own (two thread pools in one process fight)")
    for r in rows:
        for note in r["notes"]:
            lines.append(f"NOTE {r['net']} {r['dtype']} thr={_threads_label(r['threads'])}: "
                         f"{note}")
    return "\n".join(lines)


def format_fit(results):
    rows = [r for r in results if r["section"] == "fit"]
    if not rows:
        return ""
    r0 = rows[0]
    opt = r0["optimizer"]
    lines = [f"fit on the bundled digits ({r0['n_train']} train / {r0['n_test']} test, "
             f"{'-'.join(map(str, r0['sizes']))}, Adam lr={opt['lr']:g} "
             f"betas={tuple(opt['betas'])} eps={opt['eps']:g}, batch {r0['batch']}, "
             f"{r0['epochs']} epochs, shuffled, same initial weights; best of "
             f"{max(len(v['seconds']) for r in rows for v in r['impls'].values())} runs, "
             f"{_threads_label(r0['threads'])} thread)"]
    head = ["dtype", "implementation", "seconds", "samples/s", "test acc", "fp speedup"]
    table = [head]
    for r in rows:
        fp_rate = r["impls"].get("fastprop", {}).get("samples_per_s")
        for name, v in r["impls"].items():
            sp = "-" if fp_rate is None else f"{fp_rate / v['samples_per_s']:.2f}"
            table.append([r["dtype"], LABELS[name], f"{v['best_s']:.3f}",
                          f"{v['samples_per_s']:,.0f}", f"{v['test_accuracy']:.4f}", sp])
    widths = [max(len(row[c]) for row in table) for c in range(len(head))]
    fmt = lambda row: "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                                for i, (c, w) in enumerate(zip(row, widths)))
    lines += [fmt(head), "-" * len(fmt(head))] + [fmt(row) for row in table[1:]]
    lines.append("fp speedup = fastprop samples/s / this implementation's samples/s")
    for r in rows:
        lines += [f"NOTE {r['dtype']}: {n}" for n in r["notes"]]
    return "\n".join(lines)


def format_checks(results):
    """One paragraph: how many checks passed, the worst errors, every failure."""
    worst, n_ok, n_all = {}, 0, 0
    for r in results:
        for name, chk in r.get("checks", {}).items():
            n_all += 1
            n_ok += bool(chk.get("ok"))
            for k in ("loss_err", "param_err", "update_err", "output_err"):
                if k in chk and chk.get("ok"):
                    w = worst.setdefault((r["dtype"], name), {})
                    w[k] = max(w.get(k, 0.0), chk[k])
    if not n_all:
        return ""
    lines = [f"Correctness (one step / outputs vs a float64 NumPy oracle, same initial "
             f"weights; tol float64 {TOL['float64']:g}, float32 {TOL['float32']:g} relative): "
             f"{n_ok}/{n_all} checks passed. Worst errors of the passing ones:"]
    for (dt, name), w in sorted(worst.items()):
        lines.append(f"  {dt:8} {LABELS[name]:10} " +
                     "  ".join(f"{k} {v:.1e}" for k, v in sorted(w.items())))
    return "\n".join(lines)


def pyplot():
    """matplotlib.pyplot with the file-only Agg backend, or None (with a message) when
    matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot needs matplotlib (pip install matplotlib); no plot written",
              file=sys.stderr)
        return None
    return plt


def plot(results, path):
    plt = pyplot()
    if plt is None:
        return False
    sections = [s for s in ("train", "infer") if any(r["section"] == s for r in results)]
    fits = [r for r in results if r["section"] == "fit"]
    n = len(sections) + bool(fits)
    if n == 0:
        return False
    fig, axes = plt.subplots(n, 1, figsize=(12, 4.5 * n), squeeze=False)
    for ax, sec in zip(axes[:, 0], sections):
        rows = [r for r in results if r["section"] == sec]
        impls = [k for k in IMPLS if any(k in r["timings"] for r in rows)]
        x = np.arange(len(rows))
        w = 0.8 / max(1, len(impls))
        for i, k in enumerate(impls):
            vals = [r["timings"][k]["min_us"] if k in r["timings"] else np.nan for r in rows]
            ax.bar(x + i * w - 0.4 + w / 2, vals, w, label=LABELS[k])
        labels = [f"{r['net']}{'/' + str(r['batch']) if sec == 'infer' else ''}\n"
                  f"{r['dtype'][-2:]} t{_threads_label(r['threads'])}" for r in rows]
        ax.set_xticks(x, labels, fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("µs per call (min)")
        ax.set_title({"train": "training step", "infer": "inference"}[sec])
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    if fits:
        ax = axes[-1, 0]
        names = [k for k in ("fastprop", "reference", "sklearn")
                 if any(k in r["impls"] for r in fits)]
        x = np.arange(len(fits))
        w = 0.8 / max(1, len(names))
        for i, k in enumerate(names):
            ax.bar(x + i * w - 0.4 + w / 2,
                   [r["impls"][k]["samples_per_s"] if k in r["impls"] else np.nan
                    for r in fits], w, label=LABELS[k])
        ax.set_xticks(x, [r["dtype"] for r in fits])
        ax.set_ylabel("samples/s")
        ax.set_title("fit on digits")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


# ------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------
def _csv(choices=None, kind=str):
    def parse(text):
        items = [s.strip() for s in text.split(",") if s.strip()]
        if not items:
            raise argparse.ArgumentTypeError("empty list")
        out = []
        for s in items:
            try:
                v = kind(s)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{s!r} is not a valid value")
            if choices is not None and v not in choices:
                raise argparse.ArgumentTypeError(f"{s!r} is not one of {', '.join(choices)}")
            out.append(v)
        return out
    return parse


def _threads_value(s):
    if s == "default":
        return os.cpu_count() or 1
    v = int(s)
    if v < 1:
        raise ValueError(s)
    return v


def add_arguments(p):
    p.add_argument("--quick", action="store_true",
                   help="fast smoke run (~20 s): nets tiny,small,medium, short budgets, "
                        "3-epoch fit")
    p.add_argument("--nets", type=_csv(tuple(NETS)), default=None,
                   help=f"comma list of {','.join(NETS)} (default: all; --quick: "
                        f"{','.join(QUICK_NETS)})")
    p.add_argument("--dtypes", type=_csv(DTYPES), default=list(DTYPES),
                   help="comma list of float32,float64")
    p.add_argument("--threads", type=_csv(kind=_threads_value), default=None,
                   help="comma list of thread counts ('default' = os.cpu_count()); "
                        "default: 1 and os.cpu_count()")
    p.add_argument("--sections", type=_csv(("train", "infer", "fit", "memory", "scaling")),
                   default=["train", "infer", "fit", "memory", "scaling"],
                   help="comma list of train,infer,fit,memory,scaling (scaling: 1 and N "
                        "threads of fastprop, PyTorch and JAX, each in a process of its own)")
    p.add_argument("--rounds", type=int, default=None,
                   help="interleaved rounds of the scaling section (default 3, quick 1)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds of timing per training configuration (default 5, quick 0.25)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs of the fit comparison (default 30, quick 3)")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    p.add_argument("--no-sklearn", action="store_true", help="leave scikit-learn out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE", help="write every raw number to FILE")
    p.add_argument("--plot", metavar="FILE.png", help="bar chart (needs matplotlib)")
    p.add_argument("--worker", nargs=2, metavar=("JOB", "OUT"), help=argparse.SUPPRESS)
    p.add_argument("--scaling-worker", nargs=2, metavar=("JOB", "OUT"), help=argparse.SUPPRESS)
    return p


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def main(args=None):
    """``python -m fastprop bench``: args is an argparse Namespace (from fastprop.__main__) or
    a list of command-line strings."""
    if args is None or isinstance(args, (list, tuple)):
        parser = add_arguments(argparse.ArgumentParser(
            prog="python -m fastprop bench",
            description="fastprop against pure NumPy, PyTorch, scikit-learn and the GEMM "
                        "floor"))
        args = parser.parse_args(args)
    if getattr(args, "worker", None):
        return _worker(*args.worker)
    if getattr(args, "scaling_worker", None):
        return _scaling_worker(*args.scaling_worker)
    t_start = time.perf_counter()
    quick = args.quick
    nets = args.nets or list(QUICK_NETS if quick else NETS)
    dtypes = args.dtypes
    opts = {"budget": args.budget if args.budget is not None else (0.25 if quick else 5.0),
            "min_repeats": 3 if quick else 5, "max_repeats": 30 if quick else 400,
            "sample_s": 1e-3, "seed": args.seed}
    infer_opts = dict(opts, budget=opts["budget"] * 0.3)
    epochs = args.epochs if args.epochs is not None else (3 if quick else 30)
    fit_repeats = 1 if quick else 3

    have_tpc = _available("threadpoolctl")
    if have_tpc:
        threads = sorted(set(args.threads or [1, os.cpu_count() or 1]))
    else:
        if args.threads:
            _log("threadpoolctl is not installed: the thread setting cannot be applied; "
                 "running with the default threads")
        threads = [None]
    use_torch = not args.no_torch and _available("torch")
    use_sklearn = not args.no_sklearn and _available("sklearn")
    impls = ("fastprop", "reference") + (("torch",) if use_torch else ()) + \
            (("sklearn",) if use_sklearn else ())

    env = environment()
    header = format_header(env, opts)
    print(header, flush=True)
    missing = [n for n, ok in (("torch", use_torch or args.no_torch),
                               ("scikit-learn", use_sklearn or args.no_sklearn)) if not ok]
    if missing:
        print(f"not installed, left out: {', '.join(missing)}")
    print("", flush=True)

    infer_cfgs = [(net, b) for net in INFER_NETS if net in nets for b in INFER_BATCHES] \
        if "infer" in args.sections else []
    train_cfgs = nets if "train" in args.sections else []
    fit_threads = (1 if 1 in threads else min(threads)) if threads != [None] else None
    results = []
    # higher thread counts first: torch is imported into this process only for the 1-thread
    # block, after the multi-threaded NumPy/SciPy measurements
    for k in sorted(threads, key=lambda t: -(t or os.cpu_count() or 1)):
        k_eff = k if k is not None else (os.cpu_count() or 1)
        # more than one thread: fastprop (SciPy's OpenBLAS pool) and torch (its OpenMP pool)
        # each run alone in a process of their own; in one process with NumPy's OpenBLAS
        # pool, the idle pool's spinning threads took the second core from the busy one
        # (fastprop's large step read 20.7 ms beside a floor of 11.8 ms that way)
        separate = [i for i in ("fastprop", "torch") if i in impls and k_eff > 1]
        inproc = tuple(i for i in impls if i not in separate)
        ext = {}
        # each family alone gets about its share of an interleaved configuration's budget
        configs = [{"section": "train", "net": n, "dtype": d, "batch": NETS[n][0],
                    "budget": opts["budget"] / 4} for n in train_cfgs for d in dtypes] + \
                  [{"section": "infer", "net": n, "dtype": d, "batch": b,
                    "budget": infer_opts["budget"] / 4}
                   for n, b in infer_cfgs for d in dtypes]
        for impl in separate:
            if not configs:
                break
            budget = 2 if impl == "fastprop" else 1      # fastprop and its floor
            job = [dict(c, budget=c["budget"] * budget) for c in configs]
            out = _run_worker_process(impl, k, job, opts, _log)
            for i, c in enumerate(configs):
                ext[(impl, c["section"], c["net"], c["batch"], c["dtype"])] = \
                    out if isinstance(out, str) else out[i]
        with _thread_limit(k):
            if k == 1 and use_torch:
                torch = _optional("torch")
                if torch is not None:
                    torch.set_num_threads(1)
            for net in train_cfgs:
                for dt in dtypes:
                    t0 = time.perf_counter()
                    r = run_train_config(net, dt, k, opts, inproc)
                    for impl in separate:
                        _merge_worker(r, impl, ext[(impl, "train", net, NETS[net][0], dt)])
                    results.append(r)
                    _log(f"  train {net:6} {dt} threads={_threads_label(k)}: "
                         f"{time.perf_counter() - t0:.1f} s")
            for net, b in infer_cfgs:
                for dt in dtypes:
                    t0 = time.perf_counter()
                    r = run_infer_config(net, b, dt, k, infer_opts, inproc)
                    for impl in separate:
                        _merge_worker(r, impl, ext[(impl, "infer", net, b, dt)])
                    results.append(r)
                    _log(f"  infer {net:6} batch {b:4} {dt} threads={_threads_label(k)}: "
                         f"{time.perf_counter() - t0:.1f} s")
            if "memory" in args.sections and k == fit_threads:
                for dt in dtypes:
                    results.append(run_memory(dt, "large" if not quick else "small"))
            if "fit" in args.sections and k == fit_threads:
                fit_impls = ("fastprop", "reference") + (("sklearn",) if use_sklearn else ())
                for dt in dtypes:
                    t0 = time.perf_counter()
                    results.append(run_fit(dt, epochs, fit_repeats, fit_impls, args.seed, k))
                    _log(f"  fit {dt}: {time.perf_counter() - t0:.1f} s")

    order = {n: i for i, n in enumerate(NETS)}
    results.sort(key=lambda r: ({"train": 0, "infer": 1, "fit": 2, "memory": 3}[r["section"]],
                                order.get(r.get("net"), 0), r.get("batch", 0), r["dtype"],
                                r["threads"] or 0))
    if "scaling" in args.sections:
        n_scale = max([t for t in threads if t is not None] or [os.cpu_count() or 1])
        rounds = args.rounds if args.rounds is not None else (1 if quick else 3)
        scale_impls = ("fastprop",) + (("torch",) if use_torch else ()) + ("jax",)
        results += run_scaling(max(n_scale, 2), rounds, opts["budget"] / 5, scale_impls,
                               quick)
    elapsed = time.perf_counter() - t_start
    for text in (format_table(results, "train"), format_table(results, "infer"),
                 format_fit(results), format_memory(results), format_scaling(results),
                 format_checks(results)):
        if text:
            print(text + "\n")
    print(f"total time {elapsed:.1f} s")
    if args.json:
        payload = {"environment": env, "options": dict(opts, quick=quick, nets=nets,
                                                       dtypes=dtypes, threads=threads,
                                                       sections=args.sections, epochs=epochs,
                                                       impls=list(impls)),
                   "elapsed_s": elapsed, "results": results}
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=1, allow_nan=True)
        print(f"raw numbers written to {args.json}")
    if args.plot and plot(results, args.plot):
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
