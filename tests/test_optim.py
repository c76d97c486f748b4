"""Optimizers over flat buffers: compiled core vs the NumPy reference vs torch.optim, schedules,
configs, state save / load and every error path."""
import copy
import itertools
import json
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastprop as fp
from fastprop import optim as O
from fastprop._core import _optim as C
from fastprop.reference import _optim as R

N = 257  # odd: exercises the remainder of the 4-way unrolled norm loop
N_STEPS = 20
TOL = {np.float32: dict(rtol=2e-6, atol=1e-7), np.float64: dict(rtol=1e-12, atol=1e-14)}


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param


def _grid(**options):
    keys = list(options)
    return [dict(zip(keys, values)) for values in itertools.product(*options.values())]


def _cases():
    cases = []
    for kw in _grid(momentum=[0.0, 0.9], dampening=[0.0, 0.3], nesterov=[False, True],
                    weight_decay=[0.0, 0.05], clip_norm=[None, 0.5]):
        if kw["momentum"] == 0 and (kw["nesterov"] or kw["dampening"] != 0):
            continue  # nesterov needs momentum; dampening without momentum changes nothing
        if kw["nesterov"] and kw["dampening"] != 0:
            continue
        cases.append(("sgd", dict(lr=0.05, **kw)))
    for name in ("adam", "adamw"):
        for kw in _grid(betas=[(0.9, 0.999), (0.3, 0.9)], weight_decay=[0.0, 0.05],
                        amsgrad=[False, True], clip_norm=[None, 0.5]):
            cases.append((name, dict(lr=0.01, eps=1e-6, **kw)))
    for kw in _grid(momentum=[0.0, 0.9], centered=[False, True], weight_decay=[0.0, 0.05],
                    clip_norm=[None, 0.5]):
        cases.append(("rmsprop", dict(lr=0.01, alpha=0.9, **kw)))
    for kw in _grid(lr_decay=[0.0, 0.1], weight_decay=[0.0, 0.05],
                    initial_accumulator_value=[0.0, 0.1], clip_norm=[None, 0.5]):
        cases.append(("adagrad", dict(lr=0.05, **kw)))
    # defaults, and clipping that does not bite (norm below clip_norm)
    for name in O.OPTIMIZERS:
        cases.append((name, {}))
        cases.append((name, dict(clip_norm=1e3)))
    return cases


CASES = _cases()
CASE_IDS = [f"{name}-" + "-".join(f"{k}={v}" for k, v in kw.items()) for name, kw in CASES]


def _problem(seed=0, n=N, steps=N_STEPS):
    rng = np.random.default_rng(seed)
    p0 = rng.standard_normal(n)
    # gradients with a persistent component, so that momentum and moments build up
    drift = rng.standard_normal(n)
    grads = [drift + rng.standard_normal(n) for _ in range(steps)]
    return p0, grads


def run_compiled(name, kw, dtype, p0, grads):
    opt = O.OPTIMIZERS[name](**kw)
    p = p0.astype(dtype)
    clipped = []
    for g in grads:
        g = g.astype(dtype)
        opt.step(p, g)
        clipped.append(g)
    return p, opt.state, clipped, opt


def run_reference(name, kw, dtype, p0, grads):
    init = {k: kw[k] for k in ("momentum", "amsgrad", "centered", "initial_accumulator_value")
            if k in kw}
    state = R.init_optimizer_state(name, p0.size, dtype, **init)
    p = p0.astype(dtype)
    clipped = []
    for t, g in enumerate(grads, 1):
        g = g.astype(dtype)
        getattr(R, f"{name}_step")(p, g, state, t, **kw)
        clipped.append(g)
    return p, state, clipped


def run_torch(torch, name, kw, dtype, p0, grads):
    classes = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
               "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad}
    kw = dict(kw)
    clip = kw.pop("clip_norm", None)
    param = torch.nn.Parameter(torch.from_numpy(p0.astype(dtype)))
    opt = classes[name]([param], **kw)
    for g in grads:
        param.grad = torch.from_numpy(g.astype(dtype))
        if clip is not None:
            torch.nn.utils.clip_grad_norm_([param], clip)
        opt.step()
    state = {k: v.detach().numpy() for k, v in opt.state[param].items() if k != "step"}
    return param.detach().numpy(), state


# -- compiled vs reference vs torch --------------------------------------------------------------
@pytest.mark.parametrize("name, kw", CASES, ids=CASE_IDS)
def test_compiled_matches_reference(name, kw, dtype):
    p0, grads = _problem()
    p, state, clipped, opt = run_compiled(name, kw, dtype, p0, grads)
    p_ref, state_ref, clipped_ref = run_reference(name, kw, dtype, p0, grads)
    assert p.dtype == dtype and all(s.dtype == dtype for s in state.values())
    assert opt.t == N_STEPS
    np.testing.assert_allclose(p, p_ref, **TOL[dtype])
    assert sorted(state) == sorted(state_ref)
    for key in state:
        np.testing.assert_allclose(state[key], state_ref[key], **TOL[dtype], err_msg=key)
    for g, g_ref in zip(clipped, clipped_ref):
        np.testing.assert_allclose(g, g_ref, **TOL[dtype])
    assert not np.array_equal(p, p0.astype(dtype))


@pytest.mark.parametrize("name, kw", CASES, ids=CASE_IDS)
def test_compiled_matches_torch_float64(name, kw):
    torch = pytest.importorskip("torch")
    p0, grads = _problem(seed=1)
    p, state, _, _ = run_compiled(name, kw, np.float64, p0, grads)
    p_torch, state_torch = run_torch(torch, name, kw, np.float64, p0, grads)
    np.testing.assert_allclose(p, p_torch, rtol=1e-9, atol=1e-12)
    # torch allocates some buffers it never uses (RMSprop without momentum)
    for key in state:
        np.testing.assert_allclose(state[key], state_torch[key], rtol=1e-9, atol=1e-12,
                                   err_msg=key)


@pytest.mark.parametrize("name, kw", CASES, ids=CASE_IDS)
def test_compiled_matches_torch_float32(name, kw):
    torch = pytest.importorskip("torch")
    p0, grads = _problem(seed=2)
    p, _, _, _ = run_compiled(name, kw, np.float32, p0, grads)
    p_torch, _ = run_torch(torch, name, kw, np.float32, p0, grads)
    np.testing.assert_allclose(p, p_torch, rtol=1e-5, atol=1e-6)


def test_sgd_momentum_by_hand():
    # p = 1, g = 1 then 2; lr 0.1, momentum 0.5, dampening 0.5
    p = np.array([1.0]); opt = O.SGD(lr=0.1, momentum=0.5, dampening=0.5)
    opt.step(p, np.array([1.0]))      # b = 1 (first step: b = g), p = 1 - 0.1 = 0.9
    assert opt.state["momentum_buffer"][0] == 1.0 and p[0] == pytest.approx(0.9, abs=1e-15)
    opt.step(p, np.array([2.0]))      # b = 0.5 * 1 + 0.5 * 2 = 1.5, p = 0.9 - 0.15 = 0.75
    assert opt.state["momentum_buffer"][0] == 1.5 and p[0] == pytest.approx(0.75, abs=1e-15)


def test_adam_first_step_by_hand(dtype):
    # first step: m = 0.1 g, v = 0.001 g^2; bias-corrected m / sqrt(v) = sign(g)
    p = np.array([1.0, -2.0], dtype=dtype)
    Adam = O.Adam(lr=0.1, eps=1e-30)      # eps must be > 0; this one is negligible
    Adam.step(p, np.array([3.0, -0.5], dtype=dtype))
    np.testing.assert_allclose(p, [0.9, -1.9], rtol=1e-6)


def test_clip_is_torch_clip_grad_norm(dtype):
    rng = np.random.default_rng(5)
    g = rng.standard_normal(N).astype(dtype)
    norm = float(np.linalg.norm(g.astype(np.float64)))
    assert C.global_norm(g) == pytest.approx(norm, rel=1e-12)
    assert C.global_norm(np.zeros(0, dtype=dtype)) == 0.0
    opt = O.SGD(lr=0.0, clip_norm=1.0)
    g_clip = g.copy()
    opt.step(np.zeros(N, dtype=dtype), g_clip)
    np.testing.assert_allclose(g_clip, g.astype(np.float64) / (norm + 1e-6), rtol=1e-6)
    assert np.linalg.norm(g_clip.astype(np.float64)) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("name", list(O.OPTIMIZERS))
def test_weight_decay_never_writes_grads(name, dtype):
    kw = {"weight_decay": 0.1}
    if name in ("sgd", "rmsprop"):
        kw["momentum"] = 0.9
    opt = O.OPTIMIZERS[name](**kw)
    p0, grads = _problem(steps=3)
    p = p0.astype(dtype)
    for g in grads:
        g = g.astype(dtype)
        before = g.copy()
        opt.step(p, g)
        np.testing.assert_array_equal(g, before)


def test_zero_lr_leaves_params(dtype):
    p0, grads = _problem(steps=3)
    for name in O.OPTIMIZERS:
        p = p0.astype(dtype)
        opt = O.OPTIMIZERS[name](lr=0.0, weight_decay=0.0)
        for g in grads:
            opt.step(p, g.astype(dtype))
        np.testing.assert_array_equal(p, p0.astype(dtype))


def test_threads_give_serial_results(dtype):
    """The compiled step runs without the GIL: many optimizers in a thread pool."""
    p0, grads = _problem(n=20_000, steps=5)

    def run(i):
        name, kw = CASES[i]
        return run_compiled(name, kw, dtype, p0 + i, grads)[0]

    idx = list(range(0, len(CASES), 3))
    serial = [run(i) for i in idx]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(run, idx))
    for a, b in zip(serial, threaded):
        np.testing.assert_array_equal(a, b)


# -- the compiled entry point --------------------------------------------------------------------
def test_hyper_layout():
    # each kind's block: the shared entries first, then its own, in the kernel's order
    for name, (hyper_names, state_names) in C.LAYOUT.items():
        assert hyper_names[:3] == ("lr", "weight_decay", "clip_norm")
        assert len(set(hyper_names)) == len(hyper_names) and len(set(state_names)) == len(
            state_names)
        cls = O.OPTIMIZERS[name]
        assert cls.kind == C.KINDS[name]
        assert cls.state_names == state_names and cls._hyper_names == hyper_names
        assert cls().hyper().shape == (len(hyper_names),)
    opt = O.RMSprop(lr=0.3, alpha=0.8, eps=1e-5, weight_decay=0.2, momentum=0.4, centered=True,
                    clip_norm=2.0)
    h = opt.hyper()
    names = C.LAYOUT["rmsprop"][0]
    assert h.dtype == np.float64 and h.shape == (len(names),)
    want = dict(lr=0.3, alpha=0.8, eps=1e-5, weight_decay=0.2, momentum=0.4, centered=1.0,
                clip_norm=2.0)
    assert dict(zip(names, h)) == want
    assert O.Adam().hyper()[C.LAYOUT["adam"][0].index("clip_norm")] == 0.0
    assert C.uses(opt.kind, h) == (True, True, True)
    assert C.uses(O.SGD().kind, O.SGD().hyper()) == (False,)
    assert C.uses(O.Adam().kind, O.Adam().hyper()) == (True, True, False)
    assert C.uses(O.Adagrad().kind, O.Adagrad().hyper()) == (True,)


def test_compiled_step_checks():
    h = O.SGD(momentum=0.9).hyper()
    p, g, s = np.zeros(4), np.zeros(4), np.zeros(4)
    with pytest.raises(ValueError, match="kind"):
        C.step(9, h, p, g, [s], 1)
    with pytest.raises(ValueError, match="hyper"):
        C.step(0, h[:3].copy(), p, g, [s], 1)
    with pytest.raises(ValueError, match="hyper"):      # another kind's block
        C.step(0, O.Adam().hyper(), p, g, [s], 1)
    with pytest.raises(ValueError, match="grads"):
        C.step(0, h, p, np.zeros(3), [s], 1)
    with pytest.raises(ValueError, match="state must hold 1"):
        C.step(0, h, p, g, [s, s], 1)
    with pytest.raises(ValueError, match=r"state\[0\] is None"):
        C.step(0, h, p, g, [None], 1)
    with pytest.raises(ValueError, match=r"state\[0\] has length"):
        C.step(0, h, p, g, [np.zeros(3)], 1)
    with pytest.raises(ValueError, match="step"):
        C.step(0, h, p, g, [s], 0)
    with pytest.raises(ValueError, match=r"state\[2\] is None"):   # amsgrad needs the third
        C.step(C.KINDS["adam"], O.Adam(amsgrad=True).hyper(), p, g, [s, s.copy(), None], 1)
    assert (p == 0).all() and (s == 0).all()
    C.step(0, h, np.zeros(0), np.zeros(0), [np.zeros(0)], 1)  # empty: nothing to do


def test_engine_refuses_fewer_state_pointers_than_the_kind_declares():
    # the engine's count of state pointers is checked in C: too few -> refused, nothing written
    m = fp.Sequential([fp.Dense(3, 2)], loss="mse", optimizer=O.Adam(), dtype="float64", seed=0)
    m.grads[...] = 0.5
    before = m.params.copy()
    kind, hyper, state = m._opt_args()
    assert state.shape == (3,) and state[2] == 0 and state[0] == m.optimizer.state[
        "exp_avg"].ctypes.data
    assert not m._engine.apply_update(kind, hyper, state[:2].copy(), 1)
    np.testing.assert_array_equal(m.params, before)
    assert m._engine.apply_update(kind, hyper, state, 1)
    assert not np.array_equal(m.params, before)


# -- the public classes --------------------------------------------------------------------------
def test_defaults_are_torch():
    torch = pytest.importorskip("torch")
    param = [torch.nn.Parameter(torch.zeros(1))]
    pairs = [(O.SGD(), torch.optim.SGD(param)), (O.Adam(), torch.optim.Adam(param)),
             (O.AdamW(), torch.optim.AdamW(param)), (O.RMSprop(), torch.optim.RMSprop(param)),
             (O.Adagrad(), torch.optim.Adagrad(param))]
    for ours, theirs in pairs:
        group = theirs.param_groups[0]
        for key, value in ours.get_config().items():
            if key in ("name", "clip_norm", "schedule", "current_lr"):
                continue
            want = list(group[key]) if key == "betas" else group[key]
            assert value == want, (ours, key)


def test_get_optimizer():
    for name, cls in O.OPTIMIZERS.items():
        assert type(O.get_optimizer(name)) is cls
        assert type(O.get_optimizer(name.upper())) is cls
    assert type(O.get_optimizer("AdamW")) is O.AdamW
    opt = O.SGD(lr=0.5)
    assert O.get_optimizer(opt) is opt
    assert type(O.get_optimizer(None)) is O.Adam
    with pytest.raises(ValueError, match="sgd, adam, adamw, rmsprop, adagrad"):
        O.get_optimizer("adamax")
    with pytest.raises(TypeError, match="optimizer"):
        O.get_optimizer(3)


BAD_ARGS = [
    (O.SGD, dict(lr=-1e-3), ValueError, "lr must be >= 0"),
    (O.SGD, dict(lr=float("nan")), ValueError, "lr must be finite"),
    (O.SGD, dict(lr="0.1"), TypeError, "lr must be a real number"),
    (O.SGD, dict(lr=True), TypeError, "lr"),
    (O.SGD, dict(lr=None), TypeError, "lr"),
    (O.SGD, dict(momentum=-0.1), ValueError, "momentum"),
    (O.SGD, dict(dampening=float("inf")), ValueError, "dampening"),
    (O.SGD, dict(weight_decay=-1), ValueError, "weight_decay"),
    (O.SGD, dict(nesterov=True), ValueError, "nesterov"),
    (O.SGD, dict(nesterov=True, momentum=0.9, dampening=0.1), ValueError, "nesterov"),
    (O.SGD, dict(nesterov=1, momentum=0.9), TypeError, "nesterov"),
    (O.SGD, dict(clip_norm=0), ValueError, "clip_norm must be > 0"),
    (O.SGD, dict(clip_norm=-1.0), ValueError, "clip_norm"),
    (O.SGD, dict(clip_norm="1"), TypeError, "clip_norm"),
    (O.SGD, dict(schedule=lambda e, lr: lr), TypeError, "schedule"),
    (O.SGD, dict(schedule={"name": "Nope"}), ValueError, "schedule"),
    (O.Adam, dict(lr=-1.0), ValueError, "lr"),
    (O.Adam, dict(betas=(1.0, 0.999)), ValueError, r"betas\[0\] must be < 1"),
    (O.Adam, dict(betas=(0.9, -0.1)), ValueError, r"betas\[1\] must be >= 0"),
    (O.Adam, dict(betas=(0.9,)), ValueError, "betas must be a pair"),
    (O.Adam, dict(betas=0.9), TypeError, "betas"),
    (O.Adam, dict(betas=("a", 0.9)), TypeError, r"betas\[0\]"),
    (O.Adam, dict(eps=-1e-8), ValueError, "eps"),
    (O.Adam, dict(weight_decay=-0.1), ValueError, "weight_decay"),
    (O.Adam, dict(amsgrad="yes"), TypeError, "amsgrad"),
    (O.AdamW, dict(weight_decay=-0.01), ValueError, "weight_decay"),
    (O.AdamW, dict(betas=(0.9, 1.0)), ValueError, r"betas\[1\]"),
    (O.RMSprop, dict(alpha=-0.1), ValueError, "alpha"),
    (O.RMSprop, dict(alpha=1.5), ValueError, "alpha"),
    (O.RMSprop, dict(eps=-1.0), ValueError, "eps"),
    (O.RMSprop, dict(momentum=-1.0), ValueError, "momentum"),
    (O.RMSprop, dict(weight_decay=-1.0), ValueError, "weight_decay"),
    (O.RMSprop, dict(centered=None), TypeError, "centered"),
    (O.Adagrad, dict(lr_decay=-0.1), ValueError, "lr_decay"),
    (O.Adagrad, dict(weight_decay=-0.1), ValueError, "weight_decay"),
    (O.Adagrad, dict(initial_accumulator_value=-0.1), ValueError, "initial_accumulator_value"),
    (O.Adagrad, dict(eps=-1.0), ValueError, "eps"),
    (O.Adagrad, dict(eps=[1e-10]), TypeError, "eps"),
]


@pytest.mark.parametrize("cls, kw, exc, match", BAD_ARGS,
                         ids=[f"{c.__name__}-{k}" for c, k, _, _ in BAD_ARGS])
def test_bad_hyperparameters(cls, kw, exc, match):
    with pytest.raises(exc, match=match):
        cls(**kw)


def test_unknown_keyword():
    with pytest.raises(TypeError):
        O.SGD(betas=(0.9, 0.99))


def test_lr_property_and_schedule_epoch():
    opt = O.SGD(lr=0.1, schedule=O.StepLR(2, gamma=0.5))
    assert opt.lr == opt.base_lr == 0.1
    assert [opt.schedule_epoch(e) for e in range(5)] == [0.1, 0.1, 0.05, 0.05, 0.025]
    assert opt.lr == 0.025 and opt.base_lr == 0.1
    assert opt.hyper()[opt._hyper_names.index("lr")] == 0.025
    opt.lr = 0.2                                  # a new base for the schedule
    assert opt.lr == opt.base_lr == 0.2
    assert opt.schedule_epoch(2) == 0.1
    with pytest.raises(ValueError, match="lr"):
        opt.lr = -1
    with pytest.raises(TypeError, match="lr"):
        opt.lr = "big"
    with pytest.raises(ValueError, match="epoch"):
        opt.schedule_epoch(-1)
    with pytest.raises(TypeError, match="epoch"):
        opt.schedule_epoch(1.5)
    assert opt.lr == 0.1
    plain = O.Adam(lr=0.3)
    assert plain.schedule_epoch(10) == 0.3 and plain.lr == 0.3


# -- schedules -----------------------------------------------------------------------------------
SCHEDULE_CASES = [
    (O.StepLR(3), "StepLR", dict(step_size=3)),
    (O.StepLR(2, gamma=0.5), "StepLR", dict(step_size=2, gamma=0.5)),
    (O.ExponentialLR(0.9), "ExponentialLR", dict(gamma=0.9)),
    (O.CosineAnnealingLR(5), "CosineAnnealingLR", dict(T_max=5)),
    (O.CosineAnnealingLR(4, eta_min=1e-3), "CosineAnnealingLR", dict(T_max=4, eta_min=1e-3)),
]


@pytest.mark.parametrize("schedule, torch_name, kw", SCHEDULE_CASES,
                         ids=[repr(s) for s, _, _ in SCHEDULE_CASES])
def test_schedules_match_torch(schedule, torch_name, kw):
    torch = pytest.importorskip("torch")
    base_lr = 0.1
    param = torch.nn.Parameter(torch.zeros(1))
    topt = torch.optim.SGD([param], lr=base_lr)
    sched = getattr(torch.optim.lr_scheduler, torch_name)(topt, **kw)
    opt = O.SGD(lr=base_lr, schedule=schedule)
    ref = {"StepLR": R.step_lr, "ExponentialLR": R.exponential_lr,
           "CosineAnnealingLR": R.cosine_annealing_lr}[torch_name]
    for epoch in range(13):
        want = topt.param_groups[0]["lr"]
        assert opt.schedule_epoch(epoch) == pytest.approx(want, rel=1e-9, abs=1e-15)
        assert schedule(epoch, base_lr) == pytest.approx(ref(epoch, base_lr, **kw), rel=1e-15)
        topt.step()
        sched.step()


BAD_SCHEDULES = [
    (O.StepLR, dict(step_size=0), ValueError, "step_size"),
    (O.StepLR, dict(step_size=2.0), TypeError, "step_size"),
    (O.StepLR, dict(step_size=2, gamma=0), ValueError, "gamma"),
    (O.StepLR, dict(step_size=2, gamma="x"), TypeError, "gamma"),
    (O.ExponentialLR, dict(gamma=-0.5), ValueError, "gamma"),
    (O.ExponentialLR, dict(gamma=float("inf")), ValueError, "gamma"),
    (O.CosineAnnealingLR, dict(T_max=0), ValueError, "T_max"),
    (O.CosineAnnealingLR, dict(T_max=3, eta_min=-1), ValueError, "eta_min"),
]


@pytest.mark.parametrize("cls, kw, exc, match", BAD_SCHEDULES)
def test_bad_schedules(cls, kw, exc, match):
    with pytest.raises(exc, match=match):
        cls(**kw)


def test_schedule_call_checks():
    s = O.ExponentialLR(0.5)
    with pytest.raises(ValueError, match="epoch"):
        s(-1, 0.1)
    with pytest.raises(ValueError, match="base_lr"):
        s(1, -0.1)


# -- configs -------------------------------------------------------------------------------------
CONFIG_OPTIMIZERS = [
    O.SGD(lr=0.2, momentum=0.9, nesterov=True, weight_decay=1e-4, clip_norm=5.0,
          schedule=O.StepLR(10, gamma=0.5)),
    O.Adam(betas=(0.8, 0.99), amsgrad=True, schedule=O.CosineAnnealingLR(20, eta_min=1e-5)),
    O.AdamW(lr=3e-4, weight_decay=0.05),
    O.RMSprop(momentum=0.5, centered=True, schedule=O.ExponentialLR(0.95)),
    O.Adagrad(lr_decay=0.01, initial_accumulator_value=0.1, eps=1e-9),
]


@pytest.mark.parametrize("opt", CONFIG_OPTIMIZERS, ids=lambda o: type(o).__name__)
def test_config_round_trip(opt):
    cfg = opt.get_config()
    text = json.dumps(cfg)
    back = O.optimizer_from_config(json.loads(text))
    assert type(back) is type(opt)
    assert back.get_config() == cfg
    assert repr(back) == repr(opt)
    np.testing.assert_array_equal(back.hyper(), opt.hyper())
    assert cfg["name"] == type(opt).__name__


def test_config_errors():
    with pytest.raises(TypeError, match="config"):
        O.optimizer_from_config("adam")
    with pytest.raises(ValueError, match="SGD, Adam, AdamW, RMSprop, Adagrad"):
        O.optimizer_from_config({"name": "Adamax"})
    with pytest.raises(ValueError, match="unknown keys.*momentum"):
        O.optimizer_from_config({"name": "Adam", "momentum": 0.9})
    with pytest.raises(ValueError, match="lr"):
        O.optimizer_from_config({"name": "Adam", "lr": -1})
    with pytest.raises(ValueError, match="unknown keys"):
        O.schedule_from_config({"name": "StepLR", "step_size": 2, "last_epoch": 3})
    with pytest.raises(TypeError, match="schedule config"):
        O.schedule_from_config(["StepLR"])
    assert O.schedule_from_config(None) is None
    assert O.schedule_from_config({"name": "StepLR", "step_size": 2}) == O.StepLR(2)


# -- state: setup, reset, save / load ------------------------------------------------------------
def test_setup_allocates_what_the_options_need(dtype):
    want = [(O.SGD(), []), (O.SGD(momentum=0.9), ["momentum_buffer"]),
            (O.Adam(), ["exp_avg", "exp_avg_sq"]),
            (O.AdamW(amsgrad=True), ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]),
            (O.RMSprop(), ["square_avg"]),
            (O.RMSprop(momentum=0.9, centered=True), ["square_avg", "momentum_buffer",
                                                      "grad_avg"]),
            (O.Adagrad(initial_accumulator_value=0.25), ["sum"])]
    for opt, names in want:
        opt._setup(10, dtype)
        assert list(opt.state) == names
        for name, arr in opt.state.items():
            assert arr.dtype == dtype and arr.shape == (10,)
            assert (arr == (0.25 if name == "sum" else 0)).all()


def test_setup_idempotent_and_reset(dtype):
    opt = O.Adagrad(initial_accumulator_value=0.5)
    p, g = np.ones(8, dtype=dtype), np.ones(8, dtype=dtype)
    opt.step(p, g)
    acc = opt.state["sum"]
    opt._setup(8, dtype)                       # same size and dtype: nothing changes
    assert opt.state["sum"] is acc and opt.t == 1 and acc[0] == 1.5
    opt.reset()
    assert opt.t == 0 and opt.state["sum"] is acc and (acc == 0.5).all()
    opt._setup(9, dtype)                       # another model: fresh state
    assert opt.t == 0 and opt.state["sum"].shape == (9,)
    with pytest.raises(ValueError, match="n_params"):
        opt._setup(0, dtype)
    with pytest.raises(ValueError, match="dtype"):
        opt._setup(3, "int32")


def test_options_changed_after_setup(dtype):
    opt = O.RMSprop(lr=0.01)
    p, g = np.ones(5, dtype=dtype), np.full(5, 0.5, dtype=dtype)
    opt.step(p, g)
    square_avg = opt.state["square_avg"]
    opt.momentum, opt.centered = 0.9, True          # now needs two more state arrays
    opt.step(p, g)
    assert list(opt.state) == ["square_avg", "momentum_buffer", "grad_avg"]
    assert opt.state["square_avg"] is square_avg and opt.t == 2
    assert (opt.state["momentum_buffer"] != 0).all()
    opt.momentum, opt.centered = 0.0, False         # and now fewer
    opt.step(p, g)
    assert list(opt.state) == ["square_avg"] and opt.t == 3
    arrays, t = opt.get_state()
    opt.set_state(arrays, t)


@pytest.mark.parametrize("name, kw", [c for c in CASES if c[1].get("clip_norm") is None][::3],
                         ids=lambda x: str(x))
def test_state_round_trip(name, kw, dtype):
    p0, grads = _problem(steps=12)
    p_full, state_full, _, _ = run_compiled(name, kw, dtype, p0, grads)
    # 6 steps, save, restore into a fresh optimizer, 6 more steps
    p, _, _, opt = run_compiled(name, kw, dtype, p0, grads[:6])
    arrays, t = opt.get_state()
    arrays = json.loads(json.dumps({k: v.tolist() for k, v in arrays.items()}))
    arrays = {k: np.array(v, dtype=dtype) for k, v in arrays.items()}
    fresh = O.optimizer_from_config(opt.get_config())
    fresh.set_state(arrays, t)
    assert fresh.t == 6
    for g in grads[6:]:
        fresh.step(p, g.astype(dtype))
    np.testing.assert_array_equal(p, p_full)
    for key in state_full:
        np.testing.assert_array_equal(fresh.state[key], state_full[key])


def test_get_state_is_a_copy():
    opt = O.Adam()
    opt.step(np.ones(3), np.ones(3))
    arrays, t = opt.get_state()
    arrays["exp_avg"][:] = 7
    assert (opt.state["exp_avg"] != 7).all() and t == 1


def _stepped(opt, dtype=np.float64, n=6):
    p = np.linspace(-1, 1, n).astype(dtype)
    for k in range(3):
        opt.step(p, np.linspace(0.5, -0.3, n).astype(dtype) + k)
    return p


def _snapshot(opt):
    arrays, t = opt.get_state()
    return arrays, t, opt.lr


def _assert_same(opt, snap):
    arrays, t, lr = snap
    assert opt.t == t and opt.lr == lr
    assert sorted(opt.state) == sorted(arrays)
    for k in arrays:
        np.testing.assert_array_equal(opt.state[k], arrays[k])


def test_set_state_errors_leave_state(dtype):
    opt = O.Adam(amsgrad=True)
    _stepped(opt, dtype)
    snap = _snapshot(opt)
    good, t = opt.get_state()
    other = np.float32 if dtype == np.float64 else np.float64
    bad = [
        ([1, 2], t, TypeError, "arrays must be a dict"),
        (good, -1, ValueError, "t must be >= 0"),
        (good, 2.0, TypeError, "t must be an integer"),
        ({k: v for k, v in good.items() if k != "exp_avg"}, t, ValueError, "exactly"),
        ({**good, "momentum_buffer": good["exp_avg"]}, t, ValueError, "exactly"),
        ({**good, "exp_avg": good["exp_avg"].tolist()}, t, TypeError, "exp_avg"),
        ({**good, "exp_avg": good["exp_avg"].astype(other)}, t, TypeError, "dtype"),
        ({**good, "exp_avg": good["exp_avg"].astype(int)}, t, TypeError, "dtype"),
        ({**good, "exp_avg": good["exp_avg"][:-1]}, t, ValueError, "shape"),
        ({**good, "exp_avg": good["exp_avg"].reshape(2, 3)}, t, ValueError, "shape"),
        ({**good, "exp_avg": np.where(np.arange(6) == 2, np.nan, good["exp_avg"])
          .astype(dtype)}, t, ValueError, "NaN"),
        ({**good, "exp_avg_sq": -good["exp_avg_sq"] - 1}, t, ValueError, "negative"),
        ({**good, "max_exp_avg_sq": np.full(6, np.inf, dtype=dtype)}, t, ValueError,
         "infinity"),
    ]
    for arrays, tt, exc, match in bad:
        with pytest.raises(exc, match=match):
            opt.set_state(arrays, tt)
        _assert_same(opt, snap)


def test_set_state_on_fresh_optimizer_sets_up(dtype):
    src = O.RMSprop(momentum=0.9, centered=True)
    p = _stepped(src, dtype)
    arrays, t = src.get_state()
    dst = O.RMSprop(momentum=0.9, centered=True)
    dst.set_state(arrays, t)
    assert dst.t == 3 and all(dst.state[k].dtype == dtype for k in dst.state)
    g = np.ones(6, dtype=dtype)
    p2 = p.copy()
    src.step(p, g.copy())
    dst.step(p2, g.copy())
    np.testing.assert_array_equal(p, p2)
    stateless = O.SGD()
    stateless.set_state({}, 4)
    stateless.step(np.ones(3), np.ones(3))
    assert stateless.t == 5


# -- failing step calls change nothing -----------------------------------------------------------
def _bad_step_calls(dtype):
    other = np.float32 if dtype == np.float64 else np.float64
    good = np.ones(6, dtype=dtype)
    ro = np.ones(6, dtype=dtype)
    ro.flags.writeable = False
    shared = np.ones(12, dtype=dtype)
    return [
        ([1.0] * 6, good, TypeError, "params must be a numpy.ndarray"),
        (np.ones(6, dtype=int), good, TypeError, "params must have dtype"),
        (np.ones(6, dtype=np.complex128), good, TypeError, "params must have dtype"),
        (np.ones((2, 3), dtype=dtype), good, ValueError, "params must be a flat 1-D"),
        (np.ones(12, dtype=dtype)[::2], good, ValueError, "params must be C-contiguous"),
        (ro, good, ValueError, "params is read-only"),
        (np.ones(6, dtype=dtype), None, TypeError, "grads must be a numpy.ndarray"),
        (np.ones(6, dtype=dtype), good.astype(other), TypeError, "grads has dtype"),
        (np.ones(6, dtype=dtype), np.ones(5, dtype=dtype), ValueError, "grads has length"),
        (np.ones(6, dtype=dtype), np.ones(12, dtype=dtype)[::2], ValueError,
         "grads must be C-contiguous"),
        (np.ones(6, dtype=dtype), ro, ValueError, "grads is read-only"),
        (np.ones(7, dtype=dtype), np.ones(7, dtype=dtype), ValueError, "set up for 6"),
        (np.ones(6, dtype=other), np.ones(6, dtype=other), ValueError, "set up for 6"),
        (np.ones(0, dtype=dtype), np.ones(0, dtype=dtype), ValueError, "params is empty"),
        (shared[:6], shared[:6], ValueError, "share memory"),
        (shared[:6], shared[3:9], ValueError, "share memory"),
    ]


@pytest.mark.parametrize("opt", [O.SGD(momentum=0.9, clip_norm=0.1), O.Adam(clip_norm=0.1),
                                 O.AdamW(amsgrad=True), O.RMSprop(momentum=0.5, centered=True),
                                 O.Adagrad(clip_norm=0.1)],
                         ids=lambda o: type(o).__name__)
def test_failing_step_changes_nothing(opt, dtype):
    opt = copy.deepcopy(opt)
    _stepped(opt, dtype)
    snap = _snapshot(opt)
    for params, grads, exc, match in _bad_step_calls(dtype):
        p_before = None if not isinstance(params, np.ndarray) else params.copy()
        g_before = None if not isinstance(grads, np.ndarray) else grads.copy()
        with pytest.raises(exc, match=match):
            opt.step(params, grads)
        _assert_same(opt, snap)
        if p_before is not None:
            np.testing.assert_array_equal(params, p_before)
        if g_before is not None:
            np.testing.assert_array_equal(grads, g_before)


def test_step_sets_up_lazily(dtype):
    opt = O.Adam()
    assert opt.state == {} and opt.t == 0
    opt.step(np.zeros(5, dtype=dtype), np.ones(5, dtype=dtype))
    assert opt.t == 1 and opt.state["exp_avg"].dtype == dtype


def test_nonfinite_gradients_are_refused_by_the_compiled_step_and_by_step():
    # the compiled entry point refuses an update from non-finite gradients (returns False,
    # nothing written); the public step raises (test_step_refuses_gradients_that_are_not_finite)
    p = np.zeros(3)
    opt = O.SGD(lr=0.1)
    assert not C.step(opt.kind, opt.hyper(), p, np.array([np.nan, np.inf, 1.0]), [None], 1)
    assert (p == 0).all()
    assert C.step(opt.kind, opt.hyper(), p, np.array([0.5, -1.0, 1.0]), [None], 1)
    np.testing.assert_allclose(p, [-0.05, 0.1, -0.1])
    assert math.isnan(C.global_norm(np.array([np.nan, 1.0])))
    with pytest.raises(ValueError, match="grads"):
        opt.step(np.zeros(3), np.array([np.nan, np.inf, 1.0]))


def test_denormals_are_flushed_inside_the_step_and_nowhere_else():
    # Adam's first moment decays into denormals for parameters whose gradient has gone to 0;
    # the compiled step flushes them to zero (they made the update 8.6x slower), and restores
    # the caller's floating-point mode afterwards
    tiny = np.finfo(np.float32).tiny
    opt = O.Adam(lr=1e-3)
    params = np.ones(8, np.float32)
    grads = np.zeros(8, np.float32)
    opt._setup(8, np.float32)
    opt.state["exp_avg"][...] = tiny * 0.5           # denormal
    opt.state["exp_avg_sq"][...] = 1.0
    opt.step(params, grads)
    assert (opt.state["exp_avg"] == 0).all()
    x = np.array([tiny], np.float32) * np.float32(0.25)
    assert x[0] != 0                                   # NumPy still sees IEEE denormals


def test_step_refuses_gradients_that_are_not_finite():
    # model.apply_gradients after a backward that overflowed must not corrupt the model
    for bad in (np.nan, np.inf, -np.inf):
        opt = O.Adam(lr=0.01)
        p = np.ones(5)
        g = np.full(5, 0.5)
        opt.step(p, g)
        p0, state0 = p.copy(), opt.get_state()
        g[2] = bad
        with pytest.raises(ValueError, match="grads contains NaN or infinity"):
            opt.step(p, g)
        np.testing.assert_array_equal(p, p0)
        assert opt.t == state0[1]
        for k, v in opt.get_state()[0].items():
            np.testing.assert_array_equal(v, state0[0][k])
