"""Differential test: whole training runs of random networks against PyTorch.

Each case draws (from a fixed seed, so CI is reproducible) a random architecture — depth 1 to 4
Dense layers, widths 1 to 12, any hidden activation —, one of the five losses (cross-entropy
with integer labels or probability rows, binary cross-entropy, mse, mae, huber; with or without
``sample_weight``), one optimizer configuration (SGD plain / momentum / dampening / nesterov,
Adam, AdamW, RMSprop plain / momentum / centered, Adagrad; random ``weight_decay``,
``clip_norm``, ``amsgrad``, ``eps`` down to 1e-12), a dtype, then runs several
``train_step`` calls on fastprop and on the same network in ``torch.nn`` / ``torch.optim``, and
compares the loss and every parameter after each step.

Tolerances
----------
float64
    Both sides compute in double; only the summation order of the GEMMs differs, so the
    parameters must agree to ``1e-9`` relative (absolute part scaled by the largest parameter).
float32
    Two float32 implementations of the same math do not agree to a fixed relative tolerance,
    for two reasons that are properties of the problem, not bugs:

    - **ReLU-like kinks**: a pre-activation within a rounding error of 0 may be positive on one
      side and negative on the other; that unit's gradient then differs by its whole value, and
      so does the update of every weight feeding it.
    - **Tiny ``eps``** in Adam / RMSprop / Adagrad: the update is ``lr * m / (sqrt(v) + eps)``,
      invariant to the scale of the gradient. A gradient component that is the sum of
      cancelling terms (a bias gradient near a minimum) has a float32 rounding error comparable
      to its value, and with ``eps`` ~1e-8 or less that error becomes an ``O(lr)`` difference
      in the update rather than an ``O(1e-7)`` one.

    So float32 is judged against the exact trajectory: PyTorch in float64 started from the same
    (float32-representable) weights and data. Every parameter of fastprop's float32 run must be
    within ``2e-5 * scale + 1e-4 * |p|`` of it, or no further from it than ``8x`` the distance
    of PyTorch's own float32 run (``torch32``). Where the problem is well-conditioned,
    ``torch32`` is within rounding of the exact values and the first bound decides; where a kink
    or a tiny ``eps`` amplifies rounding, ``torch32`` is off by the same kind of amount and the
    second bound absorbs it. A real bug (a wrong formula, a missed term, a wrong state update)
    moves fastprop away from both and fails.
"""
import numpy as np
import pytest

import fastprop as fp
from fastprop import optim as O

torch = pytest.importorskip("torch")
F = torch.nn.functional

from test_torch_oracle import TORCH_ACT  # noqa: E402  (needs torch, imported above)

HIDDEN = ["identity", "relu", "leaky_relu", "elu", "gelu", "sigmoid", "tanh", "softplus",
          "silu"]
LOSSES = ["cross_entropy", "cross_entropy_soft", "binary_cross_entropy", "mse", "mae", "huber"]
N_CASES = 24     # per dtype; each is a few ms of fastprop and ~20 ms of torch
N_STEPS = 4
TORCH_OPT = {"SGD": "SGD", "Adam": "Adam", "AdamW": "AdamW", "RMSprop": "RMSprop",
             "Adagrad": "Adagrad"}


def random_optimizer(rng):
    """(fastprop class name, keyword arguments): torch.optim takes the same keywords, plus
    ``clip_norm`` which is torch.nn.utils.clip_grad_norm_ before the step."""
    name = ["SGD", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad"][rng.integers(6)]
    kw = {}
    if rng.random() < 0.5:
        kw["weight_decay"] = float(rng.choice([1e-3, 0.05, 0.3]))
    if rng.random() < 0.35:
        kw["clip_norm"] = float(rng.choice([0.05, 0.5, 5.0]))
    tiny = float(rng.choice([1e-8, 1e-10, 1e-12]))
    if name == "SGD":
        kw["lr"] = float(rng.choice([0.01, 0.1]))
        kind = rng.integers(4)
        if kind >= 1:
            kw["momentum"] = float(rng.choice([0.5, 0.9]))
        if kind == 2:
            kw["dampening"] = 0.3
        if kind == 3:
            kw["nesterov"] = True
    elif name in ("Adam", "AdamW"):
        kw["lr"] = float(rng.choice([1e-3, 1e-2]))
        kw["eps"] = tiny
        kw["betas"] = (float(rng.choice([0.9, 0.5])), float(rng.choice([0.999, 0.9])))
        kw["amsgrad"] = bool(rng.random() < 0.3)
    elif name == "RMSprop":
        kw["lr"] = float(rng.choice([1e-3, 1e-2]))
        kw["eps"] = tiny
        kw["alpha"] = float(rng.choice([0.99, 0.9]))
        kw["momentum"] = float(rng.choice([0.0, 0.9]))
        kw["centered"] = bool(rng.random() < 0.4)
    else:
        kw["lr"] = float(rng.choice([1e-2, 0.1]))
        kw["eps"] = tiny
        kw["lr_decay"] = float(rng.choice([0.0, 0.1]))
        kw["initial_accumulator_value"] = float(rng.choice([0.0, 0.1]))
    return name, kw


def random_case(seed):
    """Everything a run needs, drawn from ``seed``; weights and data are float32-representable
    so that the float64 runs start from exactly the float32 run's values."""
    rng = np.random.default_rng(seed)
    depth = int(rng.integers(1, 5))
    sizes = [int(s) for s in rng.integers(1, 13, depth + 1)]
    loss = LOSSES[rng.integers(len(LOSSES))]
    if loss.startswith("cross_entropy"):
        sizes[-1] = max(sizes[-1], 2)
        out = "softmax"
    elif loss == "binary_cross_entropy":
        out = "sigmoid"
    else:
        out = str(rng.choice(HIDDEN + ["softmax"]))
    acts = [str(rng.choice(HIDDEN)) for _ in range(depth - 1)] + [out]
    weights = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        W = rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)
        b = 0.3 * rng.standard_normal(n_out)
        weights.append((W.astype(np.float32).astype(np.float64),
                        b.astype(np.float32).astype(np.float64)))
    batches = []
    k = sizes[-1]
    for _ in range(N_STEPS):
        n = int(rng.integers(1, 17))
        X = rng.standard_normal((n, sizes[0])).astype(np.float32).astype(np.float64)
        if loss == "cross_entropy":
            y = rng.integers(0, k, n)
        elif loss == "cross_entropy_soft":
            y = rng.dirichlet(np.ones(k), n).astype(np.float32).astype(np.float64)
        elif loss == "binary_cross_entropy":
            y = (rng.random((n, k)) < 0.5).astype(np.float64)
        else:
            y = rng.standard_normal((n, k)).astype(np.float32).astype(np.float64)
        w = None
        if rng.random() < 0.3:
            w = rng.uniform(0.1, 2.0, n).astype(np.float32).astype(np.float64)
        batches.append((X, y, w))
    opt_name, opt_kw = random_optimizer(rng)
    return dict(sizes=sizes, acts=acts, loss=loss.replace("_soft", ""), weights=weights,
                batches=batches, opt=(opt_name, opt_kw))


def fastprop_run(case, dtype):
    """Parameters (float64 copies, one array per step) and losses of fastprop's run."""
    layers = []
    for (n_in, n_out, act), (W, b) in zip(zip(case["sizes"][:-1], case["sizes"][1:],
                                              case["acts"]), case["weights"]):
        layer = fp.Dense(n_in, n_out, activation=act, dtype=dtype)
        layer.W, layer.b = W, b
        layers.append(layer)
    name, kw = case["opt"]
    model = fp.Sequential(layers, loss=case["loss"], optimizer=getattr(O, name)(**kw),
                          dtype=dtype, seed=0)
    params, losses = [], []
    for X, y, w in case["batches"]:
        losses.append(model.train_step(X.astype(dtype), y, sample_weight=w))
        params.append(model.params.astype(np.float64))
    return params, losses


def torch_loss(case, z, y, w):
    """fastprop's loss on the output layer's pre-activation ``z``: mean over samples (weighted
    by ``w``) of the per-sample loss, itself a mean over outputs for the element-wise losses."""
    loss = case["loss"]
    if loss == "cross_entropy":
        target = torch.from_numpy(y) if y.ndim == 1 else torch.from_numpy(y).to(z.dtype)
        per = F.cross_entropy(z, target, reduction="none")
    elif loss == "binary_cross_entropy":
        per = F.binary_cross_entropy_with_logits(z, torch.from_numpy(y).to(z.dtype),
                                                 reduction="none").mean(1)
    else:
        a = TORCH_ACT[case["acts"][-1]](z)
        fn = {"mse": F.mse_loss, "mae": F.l1_loss, "huber": F.huber_loss}[loss]
        per = fn(a, torch.from_numpy(y).to(z.dtype), reduction="none").mean(1)
    if w is None:
        return per.mean()
    wt = torch.from_numpy(w).to(z.dtype)
    return (wt * per).sum() / wt.sum()


def torch_run(case, tdtype):
    """The same run in torch (tdtype torch.float32 or torch.float64): flat parameters in
    fastprop's layout (W[0], b[0], W[1], ... with W of shape (n_in, n_out)) after each step."""
    lins = []
    for W, b in case["weights"]:
        lin = torch.nn.Linear(W.shape[0], W.shape[1]).to(tdtype)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W.T.copy()))
            lin.bias.copy_(torch.from_numpy(b))
        lins.append(lin)
    plist = [p for lin in lins for p in (lin.weight, lin.bias)]
    name, kw = case["opt"]
    kw = dict(kw)
    clip = kw.pop("clip_norm", None)
    opt = getattr(torch.optim, TORCH_OPT[name])(plist, **kw)
    params, losses = [], []
    for X, y, w in case["batches"]:
        a = torch.from_numpy(X).to(tdtype)
        for i, lin in enumerate(lins):
            z = lin(a)
            if i < len(lins) - 1:
                a = TORCH_ACT[case["acts"][i]](z)
        opt.zero_grad()
        value = torch_loss(case, z, y, w)
        value.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(plist, clip)
        opt.step()
        losses.append(value.item())
        params.append(np.concatenate([np.concatenate([lin.weight.detach().double().numpy().T
                                                      .ravel(),
                                                      lin.bias.detach().double().numpy()])
                                      for lin in lins]))
    return params, losses


def describe(case):
    return (f"sizes={case['sizes']} acts={case['acts']} loss={case['loss']} "
            f"opt={case['opt']}")


@pytest.mark.parametrize("seed", range(N_CASES))
def test_float64_matches_torch(seed):
    case = random_case(1000 + seed)
    got, got_loss = fastprop_run(case, "float64")
    want, want_loss = torch_run(case, torch.float64)
    for step, (p, q, lv, lq) in enumerate(zip(got, want, got_loss, want_loss)):
        scale = max(1.0, float(np.abs(q).max()))
        np.testing.assert_allclose(p, q, rtol=1e-9, atol=1e-9 * scale,
                                   err_msg=f"step {step}: {describe(case)}")
        assert lv == pytest.approx(lq, rel=1e-9, abs=1e-12), f"step {step}: {describe(case)}"
    assert not np.array_equal(got[-1], case_params0(case))   # training moved something


def case_params0(case):
    return np.concatenate([np.concatenate([W.ravel(), b]) for W, b in case["weights"]])


@pytest.mark.parametrize("seed", range(N_CASES))
def test_float32_matches_torch(seed):
    case = random_case(2000 + seed)
    got, got_loss = fastprop_run(case, "float32")
    exact, exact_loss = torch_run(case, torch.float64)
    t32, t32_loss = torch_run(case, torch.float32)
    for step, (p, e, t) in enumerate(zip(got, exact, t32)):
        scale = max(1.0, float(np.abs(e).max()))
        err = np.abs(p - e)
        ok = (err <= 2e-5 * scale + 1e-4 * np.abs(e)) | (err <= 8.0 * np.abs(t - e))
        assert ok.all(), (f"step {step}: {int((~ok).sum())} of {ok.size} parameters off, worst "
                          f"{float(err[~ok].max()):.3g} (torch float32 off by "
                          f"{float(np.abs(t - e)[~ok].max()):.3g}); {describe(case)}")
    for step, (lv, le, lt) in enumerate(zip(got_loss, exact_loss, t32_loss)):
        assert abs(lv - le) <= 1e-5 * max(1.0, abs(le)) + 8.0 * abs(lt - le), (
            f"loss at step {step}: {lv} vs {le} (torch float32 {lt}); {describe(case)}")


def test_cases_cover_every_loss_optimizer_and_dtype():
    """The drawn cases exercise every loss, every optimizer variant and both dtypes."""
    cases = [random_case(1000 + s) for s in range(N_CASES)] + \
            [random_case(2000 + s) for s in range(N_CASES)]
    losses = {c["loss"] for c in cases}
    assert losses == {"cross_entropy", "binary_cross_entropy", "mse", "mae", "huber"}
    assert any(c["batches"][0][1].ndim == 2 for c in cases if c["loss"] == "cross_entropy")
    opts = {c["opt"][0] for c in cases}
    assert opts == set(TORCH_OPT)
    kws = [c["opt"][1] for c in cases]
    sgd = [kw for c, kw in zip(cases, kws) if c["opt"][0] == "SGD"]
    assert any("momentum" not in kw for kw in sgd) and any(kw.get("nesterov") for kw in sgd)
    assert any("dampening" in kw for kw in sgd)
    assert any("weight_decay" in kw for kw in kws) and any("clip_norm" in kw for kw in kws)
    assert any(kw.get("eps") == 1e-12 for kw in kws)
    assert any(kw.get("centered") for kw in kws) and any(kw.get("amsgrad") for kw in kws)
