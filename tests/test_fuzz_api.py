"""Fuzzing the public entry points: no sequence of public calls and attribute assignments may
crash the interpreter, raise anything but ValueError / TypeError, change a model in a call that
failed, or leave a model with a NaN / inf parameter.

How it works
------------
hypothesis draws a *program*: a small model (random depth, widths, activations, loss,
optimizer, dtype) and a sequence of steps, each one line of plain Python — a call of a public
entry point (``train_step``, ``predict``, ``evaluate``, ``fit``, ``forward`` / ``backward`` /
``apply_gradients``, ``optimizer.step``, ``Dense.forward`` / ``backward``, ``save`` /
``fp.load``) on hostile arrays (integer, bool, float16, complex, object and string dtypes;
Fortran order, strided, read-only, unaligned and byte-swapped memory; NaN / inf; wrong and
empty shapes; lists, scalars, None), an assignment to a public attribute of the model, a layer
or the optimizer (``loss``, ``dtype``, ``n_out``, ``activation``, ``optimizer.state``, ``t``,
``betas``, ``eps``, ``lr``, an optimizer shared with a second model, ...), a ``fit`` whose
callback mutates its inputs (relabels ``y`` in place in ``on_epoch_end``, overwrites ``X`` or
``sample_weight``, reassigns model attributes), or another entry point with hostile arguments
(``fit``'s keywords, callbacks, schedules, ``gradcheck``, RNG state, threads, copies, pickles,
configs, save / load of directories and missing files).

Each program runs in a child forked from a **worker subprocess** (which imported NumPy and
fastprop once), so a sequence that crashes the interpreter or corrupts memory is a failing test
that prints the program, not a dead pytest, and cannot disturb the next program. After each
step the child checks:

- the step returned, or raised ``ValueError`` / ``TypeError``; an attribute assignment may
  also raise ``AttributeError`` (a read-only attribute: documented by its property);
- after a step that raised, the model's parameters, every layer's ``W`` / ``b``, the
  optimizer's ``t`` and state are byte-identical to before (``fit`` with a callback that itself
  reassigns model attributes is exempt from this one: the callback changed the model);
- the model's parameters are finite.

``fp.load`` of a missing file may raise ``FileNotFoundError``. Not drawn, because it breaks
the contract on the code this was written against (reported separately): ``model.save("")``
(``FileNotFoundError`` on a temporary file). Tolerated (see ``same``): a state slot that a
failed call created at its initial value.

The drawing is derandomized (the same programs on every run: CI is reproducible) and bounded
(``MAX_EXAMPLES`` programs: ``FASTPROP_FUZZ_EXAMPLES``, default 300, ~20-40 s on a loaded
2-core machine; the sanitizer job runs 500). ``CORPUS`` holds the
sequences of issue 9 that used to crash the process or leave a NaN model; it runs first, every
time. A failure message is a complete Python script: save it and run it to reproduce.
"""
import json
import os
import subprocess
import sys
import tempfile
import textwrap

import pytest

hypothesis = pytest.importorskip("hypothesis")
if not hasattr(os, "fork"):
    pytest.skip("the fuzz worker forks a child per program (POSIX only)", allow_module_level=True)
from hypothesis import HealthCheck, Phase, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

MAX_EXAMPLES = int(os.environ.get("FASTPROP_FUZZ_EXAMPLES", "300"))
PROGRAM_TIMEOUT = 120   # seconds for one program (ASan builds are slower); then it fails

# -- what the worker has in scope --------------------------------------------------------------
PRELUDE = textwrap.dedent('''
    import copy, io, os, pickle, tempfile, warnings
    import numpy as np
    import fastprop as fp
    from fastprop import optim as O
    from fastprop import callbacks as C
    from fastprop.callbacks import Callback
    warnings.simplefilter("ignore")
    TMP = tempfile.mkdtemp()

    def arr(shape, dtype="float64", layout="C", special=None, seed=0):
        """A hostile array: any dtype, layout ('C', 'F', 'strided', 'readonly', 'unaligned',
        'byteswapped', 'list', 'scalar', 'none'), optionally holding NaN / inf / huge values."""
        if layout == "none":
            return None
        if layout == "scalar":
            return 1.5
        rng = np.random.default_rng(seed)
        base = rng.standard_normal(shape) * 2
        if special == "nan" and base.size:
            base.flat[0] = np.nan
        elif special == "inf" and base.size:
            base.flat[-1] = -np.inf
        elif special == "huge":
            base *= 1e30
        dt = np.dtype(dtype)
        if dt.kind == "O":
            a = base.astype(object)
        elif dt.kind == "U":
            a = base.astype(dt)
        elif dt.kind in "iu":
            ok = np.all(np.isfinite(base))
            a = np.clip(base, -3, 3).astype(dt) if ok else np.zeros(shape, dt)
        elif dt.kind == "b":
            a = base > 0
        elif dt.kind == "c":
            a = (base + 1j * base).astype(dt)
        else:
            with np.errstate(all="ignore"):
                a = base.astype(dt)
        if layout == "F":
            a = np.asfortranarray(a)
        elif layout == "strided" and a.ndim >= 1:
            big = np.repeat(a, 2, axis=-1)
            a = big[..., ::2]
        elif layout == "readonly":
            a = a.copy()
            a.flags.writeable = False
        elif layout == "unaligned" and dt.kind not in "OU" and a.ndim >= 1 and dt.itemsize > 1:
            buf = np.zeros(a.nbytes + 1, np.uint8)
            u = buf[1:].view(dt).reshape(a.shape)
            u[...] = a
            a = u
        elif layout == "byteswapped" and dt.kind in "fic" and dt.itemsize > 1:
            a = a.astype(dt.newbyteorder())
        elif layout == "list":
            a = a.tolist()
        return a

    def labels(n, k, kind="ok", seed=1):
        rng = np.random.default_rng(seed)
        if kind == "ok":
            return rng.integers(0, k, n)
        if kind == "big":
            return np.full(n, 50_000)
        if kind == "negative":
            return -rng.integers(1, 3, n)
        if kind == "float":
            return rng.integers(0, k, n).astype(float) + 0.5
        if kind == "onehot":
            return np.eye(k)[rng.integers(0, k, n)]
        if kind == "targets":
            return rng.standard_normal((n, k))
        if kind == "targets_i8":
            return rng.integers(0, 2, (n, k)).astype(np.int8)
        if kind == "nan":
            y = rng.standard_normal((n, k)); y[0, 0] = np.nan
            return y
        return None

    def relabel(y):
        """Labels far out of range (targets far too large) written into ``y`` in place."""
        y[...] = min(50_000, np.iinfo(y.dtype).max) if y.dtype.kind in "iu" else 1e30

    class Mutator(Callback):
        """A callback that mutates what fit is reading: ``what`` names the mutation."""
        def __init__(self, what, arrays):
            self.what, self.arrays = what, arrays
        def on_epoch_end(self, epoch, logs=None):
            X, y, w = self.arrays
            m = self.model
            if self.what == "relabel":
                relabel(y)
            elif self.what == "relabel_neg":
                y[...] = -7
            elif self.what == "X_nan":
                X[...] = np.nan
            elif self.what == "X_huge":
                X[...] = 1e38
            elif self.what == "weights":
                if w is not None:
                    w[...] = -1.0
            elif self.what == "loss":
                m.loss = "cross_entropy" if m.loss != "cross_entropy" else "mse"
            elif self.what == "dtype":
                m.dtype = np.dtype("float32") if m.dtype == np.float64 else np.dtype("float64")
            elif self.what == "n_out":
                m.layers[-1].n_out = 1
            elif self.what == "state":
                m.optimizer.state = {k: np.zeros(3, m.dtype) for k in m.optimizer.state}
            elif self.what == "lr_nan":
                m.optimizer.lr = float("nan")
            elif self.what == "t":
                m.optimizer.t = -5
            elif self.what == "params":
                m.params[...] = 0.0
        def on_train_batch_end(self, batch, logs=None):
            if self.what == "relabel_batch":
                relabel(self.arrays[1])

    def dense_model(sizes, acts, loss, opt, dtype, seed=0):
        layers = [fp.Dense(a, b, activation=g, dtype=dtype, seed=seed + i)
                  for i, (a, b, g) in enumerate(zip(sizes[:-1], sizes[1:], acts))]
        return fp.Sequential(layers, loss=loss, optimizer=opt, dtype=dtype, seed=seed)
''')

#: Mutator actions that assign to an attribute of the model, a layer or the optimizer
ASSIGNING_MUTATIONS = ("loss", "dtype", "n_out", "state", "lr_nan", "t")

WORKER = textwrap.dedent('''
    import json, sys
    import numpy as np

    def snapshot(m):
        out = {}
        for name, get in (("params", lambda: m.params.tobytes()),
                          ("layers", lambda: [(l.W.tobytes(), l.b.tobytes())
                                              for l in m.layers if hasattr(l, "W")]),
                          ("t", lambda: m.optimizer.t),
                          ("lr", lambda: m.optimizer.lr),
                          ("state", lambda: sorted((k, np.asarray(v).dtype.str,
                                                    np.asarray(v).tobytes())
                                                   for k, v in m.optimizer.state.items()))):
            try:
                out[name] = get()
            except Exception as e:       # the attribute itself was replaced by junk
                out[name] = "unreadable: " + type(e).__name__
        return out

    def same(now, snap):
        """``now == snap``, except that a state slot created by the failed call at a uniform
        (initial) value is tolerated: an option switched on after the first step (momentum,
        amsgrad, centered) gets its slot on the next call, and a call that then fails its
        checks may have created it already (reported separately; nothing else may differ)."""
        if now == snap:
            return True
        if any(now[k] != snap[k] for k in snap if k != "state"):
            return False
        if isinstance(now["state"], str) or isinstance(snap["state"], str):
            return False
        old, new = dict((k, v) for k, *v in snap["state"]), dict((k, v) for k, *v in now["state"])
        if any(new.get(k) != v for k, v in old.items()):
            return False
        for k in set(new) - set(old):
            values = np.frombuffer(new[k][1], dtype=np.dtype(new[k][0]))
            if values.size and np.any(values != values[0]):
                return False
        return True

    def finite(m):
        try:
            return bool(np.all(np.isfinite(m.params)))
        except Exception:
            return True

    def run(program):
        ns = {}
        exec(PRELUDE, ns)
        exec(program["setup"], ns)
        problems = []
        for step in program["steps"]:
            models = [v for v in ns.values() if isinstance(v, ns["fp"].Sequential)]
            before = [(m, snapshot(m)) for m in models]
            try:
                exec(step["code"], ns)
            except (ValueError, TypeError):
                for m, snap in before:
                    now = snapshot(m)
                    if not step.get("exempt") and not same(now, snap):
                        diff = [k for k in snap if now[k] != snap[k]]
                        problems.append(f"step {step['code']!r} raised but changed {diff}")
            except AttributeError as e:
                if not step.get("assign"):
                    problems.append(f"step {step['code']!r} raised AttributeError: {e}")
            except BaseException as e:
                if type(e).__name__ in step.get("allow", ()):
                    continue
                problems.append(f"step {step['code']!r} raised {type(e).__name__}: {e}")
            for m in [v for v in ns.values() if isinstance(v, ns["fp"].Sequential)]:
                if not finite(m):
                    problems.append(f"after step {step['code']!r} the model has non-finite "
                                    f"parameters")
            if problems:
                break
        return problems

    def run_forked(program):
        """Run ``program`` in a forked child (imports done once, in this parent): memory that a
        program corrupts dies with its child and cannot be blamed on the next program."""
        rfd, wfd = os.pipe()
        err = tempfile.TemporaryFile()
        pid = os.fork()
        if pid == 0:
            os.close(rfd)
            os.dup2(err.fileno(), 1)      # the program's output must not reach the protocol
            os.dup2(err.fileno(), 2)
            signal.alarm(TIMEOUT)         # a hang is a failure too (SIGALRM ends the child)
            try:
                problems = run(program)
            except BaseException as e:
                problems = [f"setup failed: {type(e).__name__}: {e}"]
            with os.fdopen(wfd, "w") as f:
                f.write(json.dumps(problems))
            os._exit(0)
        os.close(wfd)
        with os.fdopen(rfd) as f:
            out = f.read()
        _, status = os.waitpid(pid, 0)
        if out and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            return json.loads(out)
        err.seek(0)
        tail = err.read().decode(errors="replace")[-4000:]
        how = (f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
               else f"exit status {os.WEXITSTATUS(status)}")
        return [f"the interpreter died ({how}); its stderr ends with:\\n{tail}"]

    import os, signal, tempfile
    TIMEOUT = int(sys.argv[1])
    PRELUDE = json.loads(sys.stdin.readline())
    exec(PRELUDE, {})          # the imports, once, before any fork
    for line in sys.stdin:
        sys.stdout.write(json.dumps(run_forked(json.loads(line))) + "\\n")
        sys.stdout.flush()
''')


# -- the worker process ------------------------------------------------------------------------
class Worker:
    """One Python subprocess running programs sent as JSON lines; restarted after a crash."""

    def __init__(self):
        self.proc = None
        self.stderr = None

    def start(self):
        self.stderr = tempfile.TemporaryFile()
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONFAULTHANDLER="1")
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, str(PROGRAM_TIMEOUT)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, env=env)
        self.proc.stdin.write(json.dumps(PRELUDE) + "\n")
        self.proc.stdin.flush()

    def run(self, program):
        """The worker's list of problems, or a crash report."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        self.proc.stdin.write(json.dumps(program) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if line:
            return json.loads(line)
        rc = self.proc.wait(timeout=PROGRAM_TIMEOUT)
        self.stderr.seek(0)
        err = self.stderr.read().decode(errors="replace")[-3000:]
        self.proc = None
        return [f"the interpreter died (exit status {rc}); its stderr ends with:\n{err}"]

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=PROGRAM_TIMEOUT)
        self.proc = None


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.close()


def script(program):
    """The program as a standalone reproducer."""
    lines = [PRELUDE, program["setup"]]
    for step in program["steps"]:
        lines.append("try:\n    " + step["code"].replace("\n", "\n    ")
                     + "\nexcept (ValueError, TypeError, AttributeError) as e:\n"
                     "    print(type(e).__name__, e)")
    return "\n".join(lines)


def check(worker, program):
    problems = worker.run(program)
    assert not problems, ("\n".join(problems) + "\n\nreproducer:\n" + script(program))


# -- strategies --------------------------------------------------------------------------------
HIDDEN = ["identity", "relu", "leaky_relu", "elu", "gelu", "sigmoid", "tanh", "softplus", "silu"]
DTYPES = ["float64", "float32", "float16", "int64", "int8", "uint8", "bool", "complex128",
          "object", "<U3", ">f8", ">f4"]
LAYOUTS = ["C", "C", "F", "strided", "readonly", "unaligned", "byteswapped", "list", "scalar",
           "none"]
SPECIALS = [None, None, None, "nan", "inf", "huge"]
LABEL_KINDS = ["ok", "ok", "ok", "big", "negative", "float", "onehot", "targets", "targets_i8",
               "nan", "none"]
OPTIMIZERS = [
    "O.SGD(lr=0.05)", "O.SGD(lr=0.05, momentum=0.9, nesterov=True)", "O.Adam(lr=0.01)",
    "O.AdamW(lr=0.01, amsgrad=True)", "O.RMSprop(lr=0.01, momentum=0.5, centered=True)",
    "O.Adagrad(lr=0.1)", "O.Adam(lr=0.01, clip_norm=0.5)", "O.SGD(lr=0.1, weight_decay=0.1)",
]
ASSIGNMENTS = [
    # plan attributes
    "m.loss = 'cross_entropy'", "m.loss = 'mse'", "m.loss = 'binary_cross_entropy'",
    "m.loss = 'nonsense'", "m.loss = None",
    "m.dtype = np.dtype('float32')", "m.dtype = np.dtype('float64')", "m.dtype = 'int8'",
    "L1.n_out = 1", "L0.n_in = 1000", "L1.n_out = 0",
    "L0.activation = 'softmax'", "L1.activation = 'relu'",
    "L0.activation = 'bogus'",
    "m.layers.append(fp.Dense(3, 2))", "m.layers.pop()", "m.layers = []",
    "m.n_threads = 0", "m.n_threads = 1", "m.seed = -1",
    "m.params = np.zeros(3)", "m.grads = np.zeros(3)",
    "L0.W = np.zeros((1, 1))", "L0.b = np.full(L0.n_out, np.nan)",
    "L0.W = arr(L0.W.shape, 'float64', 'F')",
    # optimizer state and hyperparameters
    "m.optimizer.state = other.optimizer.state",
    "m.optimizer.state = {k: v.astype(np.float64 if v.dtype == np.float32 else np.float32) "
    "for k, v in m.optimizer.state.items()}",
    # a slot the optimizer does not have (ValueError naming it), or has with bad values
    "m.optimizer.state['sum'] = np.zeros(m.n_params, m.dtype)",
    "m.optimizer.state['exp_avg'] = np.zeros(m.n_params, m.dtype)",
    "m.optimizer.state[0] = np.zeros(m.n_params, m.dtype)",
    "for k in sorted(m.optimizer.state)[:1]: m.optimizer.state[k] = np.zeros(3, m.dtype)",
    "for k in sorted(m.optimizer.state)[-1:]: m.optimizer.state[k] = np.zeros(3, np.float16)",
    "for k in sorted(m.optimizer.state)[:1]: "
    "m.optimizer.state[k] = np.full(m.n_params, -1.0, m.dtype)",
    "for k in sorted(m.optimizer.state)[-1:]: "
    "m.optimizer.state[k] = np.full(m.n_params, np.nan, m.dtype)",
    "for k in sorted(m.optimizer.state)[:1]: "
    "m.optimizer.state[k] = np.zeros(2 * m.n_params, m.dtype)[::2]",
    "m.optimizer.state.clear()", "m.optimizer.state = None",
    "m.optimizer.t = -5", "m.optimizer.t = 2**63 - 1", "m.optimizer.t = 1.5",
    "m.optimizer.betas = (0.9, 1.5)", "m.optimizer.betas = (-1, 0.9)",
    "m.optimizer.eps = 0", "m.optimizer.eps = -1.0", "m.optimizer.eps = float('nan')",
    "m.optimizer.lr = -1.0", "m.optimizer.lr = float('inf')", "m.optimizer.lr = 1e30",
    "m.optimizer.lr = 'fast'",
    "m.optimizer.momentum = 2.0", "m.optimizer.momentum = 0.9", "m.optimizer.alpha = 1.5",
    "m.optimizer.weight_decay = -1.0", "m.optimizer.clip_norm = 0", "m.optimizer.clip_norm = -1",
    "m.optimizer.nesterov = 'yes'", "m.optimizer.amsgrad = True", "m.optimizer.centered = True",
    "m.optimizer.lr_decay = -1.0", "m.optimizer.dampening = 5.0",
    "m.optimizer = other.optimizer", "m.optimizer = O.SGD(lr=0.1)", "m.optimizer = 'adam'",
    "m.optimizer = None",
]


#: Other entry points: copies, pickles, gradcheck, RNG state, threads, hostile fit arguments,
#: callbacks and schedules with hostile arguments (the model ``m``, data ``X``, ``y``, ``w``).
MISC = [
    "m2 = copy.deepcopy(m); m2.train_step(X, y); m = m2",
    "m2 = pickle.loads(pickle.dumps(m)); m2.train_step(X, y); m = m2",
    "m.summary(file=io.StringIO())", "repr(m); repr(m.optimizer); m.get_config()",
    "m = fp.Sequential.from_config(m.get_config())",
    "fp.gradcheck(m, X, y, eps=0)", "fp.gradcheck(m, X, y, eps=-1e-6)",
    "fp.gradcheck(m, X, y, eps=float('nan'))", "fp.gradcheck(m, X, y, max_params=0)",
    "fp.gradcheck(m, X, y, max_params=3)",
    "m.set_rng_state(np.array([1, 2, 3]))", "m.set_rng_state('x')",
    "m.set_rng_state(m.get_rng_state())",
    "fp.set_num_threads(0)", "fp.set_num_threads(10**6)", "fp.set_num_threads(-1)",
    "m.fit(X, y, epochs=-1, verbose=0)", "m.fit(X, y, batch_size=1.5, verbose=0)",
    "m.fit(X, y, batch_size=10**12, verbose=0)", "m.fit(X, y, validation_split=1.0, verbose=0)",
    "m.fit(X, y, validation_split=float('nan'), verbose=0)",
    "m.fit(X, y, shuffle='yes', verbose=0)", "m.fit(X, y, verbose=7)",
    "m.fit(X, y, validation_data=(X, y, w, w), verbose=0)",
    "m.fit(X, y, validation_data=(X[:, :0], y), verbose=0)",
    "m.fit(X, y, sample_weight=np.zeros(len(X)), verbose=0)",
    "m.fit(X, y, sample_weight=-w, verbose=0)",
    "m.fit(X, y, callbacks=[C.EarlyStopping(patience=-1)], verbose=0)",
    "m.fit(X, y, callbacks=[C.EarlyStopping(monitor='nope')], verbose=0)",
    "m.fit(X, y, callbacks=[C.ReduceLROnPlateau(monitor='nope')], verbose=0)",
    "m.fit(X, y, callbacks=[C.ModelCheckpoint(os.path.join(TMP, 'b.fpz'), monitor='nope', "
    "save_best_only=True)], verbose=0)",
    "m.fit(X, y, callbacks=[C.ModelCheckpoint(os.path.join(TMP, '{nope}.fpz'))], verbose=0)",
    "m.fit(X, y, callbacks=[C.ModelCheckpoint(os.path.join(TMP, '{val_loss:.2f}.fpz'))], "
    "verbose=0)",
    "m.fit(X, y, callbacks=[C.ModelCheckpoint(os.path.join(TMP, 'no', 'such', 'dir', 'x.fpz')"
    ")], verbose=0)",
    "m.fit(X, y, callbacks=[C.ReduceLROnPlateau(monitor='loss', factor=2.0)], verbose=0)",
    "m.fit(X, y, callbacks=[C.LearningRateScheduler(lambda epoch: -1.0)], verbose=0)",
    "m.fit(X, y, callbacks=[C.LearningRateScheduler(lambda epoch, lr: float('nan'))], "
    "verbose=0)",
    "m.fit(X, y, callbacks=[C.LearningRateScheduler(lambda epoch: 'fast')], verbose=0)",
    "m.fit(X, y, callbacks=[C.CSVLogger(TMP)], verbose=0)",
    "m.fit(X, y, callbacks=[C.TerminateOnNaN(), C.CSVLogger(os.path.join(TMP, 'log.csv'))], "
    "epochs=2, verbose=0)",
    "m.fit(X, y, callbacks=[object()], verbose=0)", "m.fit(X, y, callbacks=C.EarlyStopping())",
    "m.optimizer.schedule = O.StepLR(step_size=0)", "m.optimizer.schedule = O.ExponentialLR(-1)",
    "m.optimizer.schedule = O.CosineAnnealingLR(T_max=1)\nm.fit(X, y, epochs=3, verbose=0)",
    "m.optimizer.schedule = 'cosine'",
    "m.save(os.path.join(TMP, 'm.fpz')); m.save(os.path.join(TMP, 'm.fpz'))\n"
    "m = fp.load(os.path.join(TMP, 'm.fpz')); m.train_step(X, y)",
    "m.save(TMP)", "fp.load(TMP)", "fp.load(os.path.join(TMP, 'missing.fpz'))",
]
#: Steps that may also raise these (a missing file is an OSError, not bad input)
EXTRA_ALLOWED = {"fp.load(os.path.join(TMP, 'missing.fpz'))": ["FileNotFoundError"]}


@st.composite
def array_code(draw, n, width):
    """Code that builds a hostile array meant as (n, width) input."""
    dtype = draw(st.sampled_from(DTYPES))
    layout = draw(st.sampled_from(LAYOUTS))
    special = draw(st.sampled_from(SPECIALS))
    shape = draw(st.sampled_from([(n, width), (n, width), (n, width), (n, width + 1), (0, width),
                                  (n,), (n, width, 1), (n, 0)]))
    seed = draw(st.integers(0, 3))
    return f"arr({shape!r}, {dtype!r}, {layout!r}, {special!r}, {seed})"


@st.composite
def programs(draw):
    depth = draw(st.integers(1, 3))
    sizes = draw(st.lists(st.integers(1, 6), min_size=depth + 1, max_size=depth + 1))
    loss = draw(st.sampled_from(["cross_entropy", "binary_cross_entropy", "mse", "mae",
                                 "huber"]))
    if loss == "cross_entropy":
        sizes[-1] = max(sizes[-1], 2)
        out = "softmax"
    elif loss == "binary_cross_entropy":
        out = "sigmoid"
    else:
        out = draw(st.sampled_from(HIDDEN))
    acts = [draw(st.sampled_from(HIDDEN)) for _ in range(depth - 1)] + [out]
    dtype = draw(st.sampled_from(["float32", "float64"]))
    opt = draw(st.sampled_from(OPTIMIZERS))
    opt2 = draw(st.sampled_from(OPTIMIZERS))
    n = draw(st.integers(1, 9))
    n_in, k = sizes[0], sizes[-1]
    ykind = "ok" if loss == "cross_entropy" else ("targets_i8" if loss.startswith("binary")
                                                   else "targets")
    setup = (f"m = dense_model({sizes!r}, {acts!r}, {loss!r}, {opt}, {dtype!r})\n"
             f"other = dense_model([50, 40, 30, 20], ['relu', 'relu', 'identity'], 'mse', "
             f"{opt2}, {'float64' if dtype == 'float32' else 'float32'!r}, seed=1)\n"
             f"X = arr(({n}, {n_in}), {dtype!r})\n"
             f"y = labels({n}, {k}, {ykind!r})\n"
             f"w = np.linspace(0.5, 1.5, {n})\n"
             f"L0, L1 = m.layers[0], m.layers[-1]   # still the model's after m.layers = []\n"
             f"m.train_step(X, y)\n"
             f"other.train_step(arr((4, 50)), arr((4, 20)))")
    steps = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["call", "call", "call", "assign", "assign", "fit_mutate",
                                     "textbook", "misc"]))
        A = draw(array_code(n, n_in))
        Y = f"labels({n}, {k}, {draw(st.sampled_from(LABEL_KINDS))!r})"
        if kind == "assign":
            code = draw(st.sampled_from(ASSIGNMENTS))
            steps.append({"code": code, "assign": True})
            continue
        if kind == "fit_mutate":
            what = draw(st.sampled_from(["relabel", "relabel_neg", "relabel_batch", "X_nan",
                                         "X_huge", "weights", "loss", "dtype", "n_out", "state",
                                         "lr_nan", "t", "params"]))
            weighted = draw(st.booleans())
            epochs = draw(st.integers(1, 3))
            bs = draw(st.sampled_from([1, 2, 32]))
            val = draw(st.sampled_from(["", ", validation_split=0.3"]))
            code = (f"Xf = X.copy(); yf = np.array(y, copy=True); "
                    f"wf = {'w.copy()' if weighted else 'None'}\n"
                    f"m.fit(Xf, yf, epochs={epochs}, batch_size={bs}, verbose=0, "
                    f"sample_weight=wf{val}, callbacks=[Mutator({what!r}, (Xf, yf, wf))])")
            # a callback that assigns to the model may get AttributeError (a read-only
            # attribute), and it changed the model itself: exempt from "a failed call changes
            # nothing"
            assigns = what in ASSIGNING_MUTATIONS
            steps.append({"code": code, "assign": assigns, "exempt": assigns or what == "params"})
            continue
        if kind == "misc":
            code = draw(st.sampled_from(MISC))
            steps.append({"code": code, "allow": EXTRA_ALLOWED.get(code, []),
                          "assign": code.startswith("m.optimizer.schedule =")})
            continue
        if kind == "textbook":
            code = draw(st.sampled_from([
                f"m.forward({A})\nm.backward({Y})\nm.apply_gradients()",
                f"m.forward(X)\nm.backward(y)\nm.optimizer.step(m.params, m.grads)",
                f"g = {draw(array_code(1, 1))}\n"
                f"m.optimizer.step(m.params, g.ravel() if isinstance(g, np.ndarray) else g)",
                f"m.optimizer.step(m.params, arr((m.n_params,), {draw(st.sampled_from(DTYPES))!r}"
                f", {draw(st.sampled_from(LAYOUTS))!r}, {draw(st.sampled_from(SPECIALS))!r}))",
                f"a, c = L0.forward({A})\nL0.backward(a, c)",
                f"L0.backward({draw(array_code(n, sizes[1]))}, L0.forward(X)[1])",
                "m.backward(y)",
            ]))
            steps.append({"code": code})
            continue
        W = draw(st.sampled_from(["", ", sample_weight=w",
                                  f", sample_weight={draw(array_code(n, 1))}"]))
        code = draw(st.sampled_from([
            f"m.train_step({A}, {Y}{W})", f"m.train_step(X, {Y}{W})", f"m.predict({A})",
            f"m.predict({A}, batch_size={draw(st.sampled_from([1, 3, 0, -1]))})",
            f"m.evaluate({A}, {Y}{W})",
            f"m.fit({A}, {Y}, epochs=2, batch_size={draw(st.sampled_from([1, 4, 0]))}, "
            f"verbose=0{W})",
            "m.save(os.path.join(TMP, 'm.fpz')); m = fp.load(os.path.join(TMP, 'm.fpz'))",
            "m.train_step(X, y)", "m.predict(X)",
        ]))
        steps.append({"code": code})
    return {"setup": setup, "steps": steps}


def _corpus_program(setup_extra, steps):
    base = ("m = dense_model([4, 8, 3], ['relu', 'softmax'], 'cross_entropy', O.Adam(lr=0.01), "
            "'float32')\n"
            "other = dense_model([50, 40, 30, 20], ['relu', 'relu', 'identity'], 'mse', "
            "O.Adam(), 'float32', seed=1)\n"
            "X = arr((6, 4), 'float32'); y = labels(6, 3); w = np.linspace(0.5, 1.5, 6)\n"
            "m.train_step(X, y)\nother.train_step(arr((4, 50)), arr((4, 20)))\n" + setup_extra)
    return {"setup": base, "steps": [{"code": c, "assign": c.startswith(("m.", "other.")) and
                                      "=" in c.split("(")[0]} for c in steps]}


#: Sequences from issue 9 that crashed the interpreter or left a NaN model; run on every run.
CORPUS = {
    "state_of_a_bigger_model": _corpus_program(
        "", ["other.optimizer.state = m.optimizer.state", "other.train_step(arr((4, 50)), "
             "arr((4, 20)))"]),
    "state_of_a_smaller_model": _corpus_program(
        "", ["m.optimizer.state = other.optimizer.state", "m.train_step(X, y)"]),
    "state_slot_too_short": _corpus_program(
        "", ["m.optimizer.state['exp_avg'] = np.zeros(3, m.dtype)", "m.train_step(X, y)"]),
    "state_of_the_other_dtype": _corpus_program(
        "", ["m.optimizer.state = {k: v.astype(np.float64) "
             "for k, v in m.optimizer.state.items()}", "m.train_step(X, y)"]),
    "optimizer_shared_by_two_models": _corpus_program(
        "", ["other.optimizer = m.optimizer", "other.train_step(arr((4, 50)), arr((4, 20)))",
             "m.train_step(X, y)"]),
    "callback_relabels_y": _corpus_program(
        "", ["yf = y.copy()\nm.fit(X, yf, epochs=3, batch_size=2, verbose=0, "
             "callbacks=[Mutator('relabel', (X, yf, None))])"]),
    "loss_reassigned": _corpus_program(
        "m = dense_model([4, 3], ['identity'], 'mse', O.SGD(lr=0.1), 'float32')\n"
        "y = arr((6, 3), 'float32')",
        ["m.loss = 'cross_entropy'", "m.train_step(X, y)", "m.train_step(X, labels(6, 3))"]),
    "dtype_reassigned": _corpus_program(
        "m = dense_model([4, 8, 3], ['relu', 'softmax'], 'cross_entropy', O.Adam(), "
        "'float64')", ["m.dtype = np.dtype('float32')", "m.predict(X)", "m.train_step(X, y)"]),
    "n_out_reassigned": _corpus_program(
        "", ["m.layers[-1].n_out = 1", "m.predict(X)", "m.train_step(X, y)"]),
    "adam_eps_zero_dead_unit": _corpus_program(
        "", ["m = dense_model([4, 8, 3], ['relu', 'softmax'], 'cross_entropy', "
             "O.Adam(lr=0.01, eps=0), 'float64')", "m.layers[0].b = np.full(8, -100.0)",
             "m.train_step(X, y)", "m.train_step(X, y)"]),
    "rmsprop_eps_zero_dead_unit": _corpus_program(
        "", ["m = dense_model([4, 8, 3], ['relu', 'softmax'], 'cross_entropy', "
             "O.RMSprop(lr=0.01, eps=0), 'float64')", "m.layers[0].b = np.full(8, -100.0)",
             "m.train_step(X, y)", "m.train_step(X, y)"]),
    "adagrad_eps_zero_dead_unit": _corpus_program(
        "", ["m = dense_model([4, 8, 3], ['relu', 'softmax'], 'cross_entropy', "
             "O.Adagrad(lr=0.01, eps=0), 'float64')", "m.layers[0].b = np.full(8, -100.0)",
             "m.train_step(X, y)", "m.train_step(X, y)"]),
    "t_negative": _corpus_program("", ["m.optimizer.t = -5", "m.train_step(X, y)"]),
    "betas_reassigned": _corpus_program("", ["m.optimizer.betas = (0.9, 1.5)",
                                             "m.train_step(X, y)", "m.train_step(X, y)"]),
    "eps_reassigned_zero": _corpus_program(
        "m.layers[0].b = np.full(8, -100.0)", ["m.optimizer.eps = 0", "m.train_step(X, y)",
                                               "m.train_step(X, y)"]),
    "t_huge": _corpus_program("", ["m.optimizer.t = 2**63 - 1", "m.train_step(X, y)"]),
}

@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus(worker, name):
    check(worker, CORPUS[name])


@settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
          phases=[Phase.explicit, Phase.generate], print_blob=False,
          suppress_health_check=list(HealthCheck))
@given(program=programs())
def test_random_programs(worker, program):
    check(worker, program)


def test_worker_reports_a_crash(worker):
    """The harness itself: a program that kills the interpreter is a reported failure with a
    reproducer, and the next program runs normally."""
    crash = {"setup": "import ctypes", "steps": [{"code": "ctypes.string_at(0)"}]}
    problems = worker.run(crash)
    assert len(problems) == 1 and "the interpreter died" in problems[0]
    assert worker.run(_corpus_program("", ["m.predict(X)"])) == []


def test_worker_reports_wrong_exceptions_and_changed_state(worker):
    """The harness itself: a wrong exception type, a failed call that changed the model and a
    NaN model are each reported."""
    base = _corpus_program("", [])["setup"]
    wrong = {"setup": base, "steps": [{"code": "raise KeyError('x')"}]}
    assert "raised KeyError" in worker.run(wrong)[0]
    changed = {"setup": base, "steps": [{"code": "m.params[0] += 1; raise ValueError('x')"}]}
    assert "changed ['params'" in worker.run(changed)[0]
    nan = {"setup": base, "steps": [{"code": "m.params[0] = np.nan"}]}
    assert "non-finite" in worker.run(nan)[0]
