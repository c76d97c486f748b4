"""Optimizer state as named flat arrays: the names each optimizer declares (its kernel's layout,
``_core._optim.LAYOUT``) are the names in model files of format 1 (fastprop 0.1.0) and 2, and a
saved state continues training exactly."""
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

import fastprop as fp
from fastprop import optim as O
from fastprop._core import _optim as C
from fastprop.reference import _optim as R

HERE = Path(__file__).parent / "fixtures" / "v0.1.0"
V010 = ["v0.1.0_float32", "v0.1.0_float32_dropout", "v0.1.0_float64", "v0.1.0_float64_dropout"]


def _file_state(path):
    """The optimizer arrays stored in a model file, by name, read without fastprop."""
    with zipfile.ZipFile(path) as z:
        return {n[len("opt_"):-len(".npy")]: np.load(io.BytesIO(z.read(n)), allow_pickle=False)
                for n in z.namelist() if n.startswith("opt_")}


@pytest.mark.parametrize("name", V010)
def test_format_1_state_names_map_onto_the_declaration(name):
    path = HERE / f"{name}.fpz"
    stored = _file_state(path)
    assert set(stored) == {"exp_avg", "exp_avg_sq"}
    assert set(stored) <= set(O.Adam.state_names)
    m = fp.load(path)
    assert list(m.optimizer.state) == ["exp_avg", "exp_avg_sq"]      # declared order
    for k, v in stored.items():
        np.testing.assert_array_equal(m.optimizer.state[k], v)
    # the next update is Adam's from exactly the file's state (reference optimizer)
    X = np.load(HERE / "X.npy")
    y = np.arange(X.shape[0]) % 3
    ref = fp.load(path)
    ref.compute_gradients(X, y)
    p = ref.params.astype(np.float64)
    state = {k: v.astype(np.float64) for k, v in stored.items()}
    o = ref.optimizer
    R.adam_step(p, ref.grads.astype(np.float64), state, 7, lr=o.lr, betas=o.betas, eps=o.eps,
                weight_decay=o.weight_decay, amsgrad=o.amsgrad, clip_norm=o.clip_norm)
    m.train_step(X, y)
    tol = 1e-12 if m.dtype == np.float64 else 2e-6
    np.testing.assert_allclose(m.params, p, rtol=tol, atol=tol)
    for k in stored:
        np.testing.assert_allclose(m.optimizer.state[k], state[k], rtol=tol, atol=tol)


OPTIONS = [
    O.SGD(lr=0.05, momentum=0.9, nesterov=True), O.SGD(lr=0.05),
    O.Adam(lr=0.01, amsgrad=True), O.AdamW(lr=0.01),
    O.RMSprop(lr=0.01, momentum=0.5, centered=True), O.RMSprop(lr=0.01),
    O.Adagrad(lr=0.05, initial_accumulator_value=0.1),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("opt", OPTIONS, ids=repr)
def test_format_2_round_trip_continues_exactly(tmp_path, opt, dtype):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(20, 4))
    y = rng.integers(0, 3, size=20)
    opt = O.optimizer_from_config(opt.get_config())
    m = fp.Sequential([fp.Dense(4, 5, activation="tanh"), fp.Dense(5, 3, activation="softmax")],
                      loss="cross_entropy", optimizer=opt, dtype=dtype, seed=0)
    for _ in range(3):
        m.train_step(X, y)
    used = [n for n, u in zip(type(opt).state_names, C.uses(opt.kind, opt.hyper())) if u]
    assert list(m.optimizer.state) == used
    path = tmp_path / "m.fpz"
    m.save(path)
    assert set(_file_state(path)) == set(used)
    m2 = fp.load(path)
    assert list(m2.optimizer.state) == used
    for _ in range(2):
        m.train_step(X, y)
        m2.train_step(X, y)
    np.testing.assert_array_equal(m2.params, m.params)
    for k in used:
        np.testing.assert_array_equal(m2.optimizer.state[k], m.optimizer.state[k])


def test_state_names_follow_the_options():
    assert O.SGD.state_names == ("momentum_buffer",)
    assert O.Adam.state_names == O.AdamW.state_names == ("exp_avg", "exp_avg_sq",
                                                         "max_exp_avg_sq")
    assert O.RMSprop.state_names == ("square_avg", "momentum_buffer", "grad_avg")
    assert O.Adagrad.state_names == ("sum",)
    opt = O.SGD(lr=0.1)
    opt._setup(4, np.float64)
    assert list(opt.state) == []
    opt.momentum = 0.9                    # the newly needed array appears at its initial value
    opt._setup(4, np.float64)
    assert list(opt.state) == ["momentum_buffer"]
    kind, hyper, state = opt._engine_args(4, np.float64)
    assert state.dtype == np.uintp and state.shape == (1,)
    assert state[0] == opt.state["momentum_buffer"].ctypes.data


def test_an_optimizer_out_of_step_with_its_kernel_is_refused():
    class Broken(O.Adam):
        def _hyper_values(self):
            return {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8}     # amsgrad missing

    with pytest.raises(RuntimeError, match="amsgrad"):
        Broken().hyper()
