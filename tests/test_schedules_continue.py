"""Schedules that continue: per-batch schedules against torch.optim.lr_scheduler, the schedule's
position in the optimizer state (saved, loaded, pickled, continued by the next fit), and
fit(initial_epoch=k)."""
import pickle

import numpy as np
import pytest

import fastprop as fp
from fastprop import optim as O

BASE_LR = 0.1


def _torch_lrs(make, n):
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = torch.optim.SGD([p], lr=BASE_LR)
    sched = make(torch.optim.lr_scheduler, opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return np.array(out)


PER_BATCH = [
    (O.LinearLR(0.1, 1.0, 7), lambda S, o: S.LinearLR(o, 0.1, 1.0, 7)),
    (O.LinearLR(0.5, 0.2, 3), lambda S, o: S.LinearLR(o, 0.5, 0.2, 3)),
    (O.OneCycleLR(0.5, 50), lambda S, o: S.OneCycleLR(o, 0.5, total_steps=50,
                                                     cycle_momentum=False)),
    (O.OneCycleLR(0.5, 51, pct_start=0.25, anneal_strategy="linear", three_phase=True,
                  div_factor=10, final_div_factor=100),
     lambda S, o: S.OneCycleLR(o, 0.5, total_steps=51, pct_start=0.25,
                               anneal_strategy="linear", three_phase=True, div_factor=10,
                               final_div_factor=100, cycle_momentum=False)),
    (O.CosineAnnealingWarmRestarts(4), lambda S, o: S.CosineAnnealingWarmRestarts(o, 4)),
    (O.CosineAnnealingWarmRestarts(3, 2, eta_min=0.01),
     lambda S, o: S.CosineAnnealingWarmRestarts(o, 3, 2, eta_min=0.01)),
    (O.SequentialLR([O.LinearLR(0.1, total_iters=5), O.CosineAnnealingLR(10)], [5]),
     lambda S, o: S.SequentialLR(o, [S.LinearLR(o, 0.1, total_iters=5),
                                     S.CosineAnnealingLR(o, 10)], [5])),
    (O.SequentialLR([O.LinearLR(0.2, total_iters=4), O.CosineAnnealingWarmRestarts(3),
                     O.ExponentialLR(0.9)], [4, 10]),
     lambda S, o: S.SequentialLR(o, [S.LinearLR(o, 0.2, total_iters=4),
                                     S.CosineAnnealingWarmRestarts(o, 3),
                                     S.ExponentialLR(o, 0.9)], [4, 10])),
]


@pytest.mark.parametrize("schedule, make", PER_BATCH, ids=lambda v: repr(v)[:40])
def test_per_batch_schedules_match_torch(schedule, make):
    want = _torch_lrs(make, 45)
    opt = O.SGD(lr=BASE_LR, schedule=schedule)
    assert schedule.per_batch
    got = np.array([opt.schedule_batch(i) for i in range(45)])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    # a per-batch schedule ignores schedule_epoch (and a per-epoch one schedule_batch)
    assert opt.schedule_epoch(3) == got[-1]
    assert O.SGD(lr=0.1, schedule=O.StepLR(1)).schedule_batch(5) == 0.1


def _data(n=70):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 4))
    return X, (X[:, 0] + X[:, 1] > 0).astype(int)


def _model(schedule, opt=O.SGD, **kw):
    layers = [fp.Dense(4, 8, activation="tanh", seed=0),
              fp.Dense(8, 2, activation="softmax", seed=1)]
    optimizer = opt(lr=0.05, schedule=schedule, **({"momentum": 0.9} if opt is O.SGD else {}))
    return fp.Sequential(layers, optimizer=optimizer, dtype="float64", seed=3, **kw)


ALL_SCHEDULES = [O.StepLR(2, 0.5), O.ExponentialLR(0.8), O.CosineAnnealingLR(4)] + \
    [s for s, _ in PER_BATCH]


@pytest.mark.parametrize("schedule", ALL_SCHEDULES, ids=lambda s: repr(s)[:40])
def test_fit_then_fit_equals_one_fit(schedule):
    X, y = _data()
    a, b = _model(schedule), _model(schedule)
    a.fit(X, y, epochs=3, batch_size=16, verbose=0)          # shuffle on (default)
    h = a.fit(X, y, epochs=3, batch_size=16, verbose=0)
    hb = b.fit(X, y, epochs=6, batch_size=16, verbose=0)
    np.testing.assert_array_equal(a.params, b.params)
    assert h.history["lr"] == hb.history["lr"][3:]
    assert (a.optimizer.epoch, a.optimizer.iteration) == (6, 6 * 5) == \
        (b.optimizer.epoch, b.optimizer.iteration)
    # without continuing (a fresh optimizer each time) the runs differ: the test can fail
    c = _model(schedule)
    c.fit(X, y, epochs=3, batch_size=16, verbose=0)
    c.optimizer.epoch = c.optimizer.iteration = 0
    c.fit(X, y, epochs=3, batch_size=16, verbose=0)
    assert not np.array_equal(c.params, b.params)


@pytest.mark.parametrize("schedule", [O.StepLR(2, 0.5), PER_BATCH[6][0]],
                         ids=["StepLR", "SequentialLR"])
@pytest.mark.parametrize("how", ["save", "pickle"])
def test_schedule_position_saved_loaded_pickled(tmp_path, schedule, how):
    X, y = _data()
    a, b = _model(schedule, O.Adam), _model(schedule, O.Adam)
    a.fit(X, y, epochs=2, batch_size=16, verbose=0)
    if how == "save":
        a.save(tmp_path / "m.fpz")
        a = fp.load(tmp_path / "m.fpz")
    else:
        a = pickle.loads(pickle.dumps(a))
    assert (a.optimizer.epoch, a.optimizer.iteration) == (2, 10)
    assert a.optimizer.schedule == schedule
    a.fit(X, y, epochs=2, batch_size=16, verbose=0)
    b.fit(X, y, epochs=4, batch_size=16, verbose=0)
    np.testing.assert_array_equal(a.params, b.params)


def test_v010_files_load_with_position_zero():
    import pathlib
    files = sorted((pathlib.Path(__file__).parent / "fixtures" / "v0.1.0").glob("*.fpz"))
    assert files
    for f in files:
        m = fp.load(f)
        assert (m.optimizer.epoch, m.optimizer.iteration) == (0, 0)


def test_initial_epoch_keras_semantics():
    X, y = _data()
    sched = O.StepLR(2, 0.5)
    a, b = _model(sched), _model(sched)
    h = a.fit(X, y, epochs=5, batch_size=16, verbose=0, initial_epoch=2)
    assert h.epoch == [2, 3, 4]
    assert h.history["lr"] == [0.025, 0.025, 0.0125]       # StepLR at epochs 2, 3, 4
    assert (a.optimizer.epoch, a.optimizer.iteration) == (5, 25)
    # the Keras resume: fit(2) then fit(5, initial_epoch=2) == fit(5)
    a, b = _model(PER_BATCH[0][0]), _model(PER_BATCH[0][0])
    a.fit(X, y, epochs=2, batch_size=16, verbose=0)
    h = a.fit(X, y, epochs=5, batch_size=16, verbose=0, initial_epoch=2)
    b.fit(X, y, epochs=5, batch_size=16, verbose=0)
    np.testing.assert_array_equal(a.params, b.params)
    assert len(h.history["loss"]) == 3


@pytest.mark.parametrize("value, exc", [(-1, ValueError), (3, ValueError), (4, ValueError),
                                        (1.5, TypeError), (True, TypeError)])
def test_bad_initial_epoch_changes_nothing(value, exc):
    X, y = _data()
    m = _model(O.StepLR(1))
    before = m.params.copy(), m.optimizer.epoch, m.optimizer.t
    with pytest.raises(exc, match="initial_epoch"):
        m.fit(X, y, epochs=3, verbose=0, initial_epoch=value)
    np.testing.assert_array_equal(m.params, before[0])
    assert (m.optimizer.epoch, m.optimizer.t) == before[1:]


@pytest.mark.parametrize("cls, kw, exc, match", [
    (O.LinearLR, dict(start_factor=0), ValueError, "start_factor"),
    (O.LinearLR, dict(end_factor=1.5), ValueError, "end_factor"),
    (O.LinearLR, dict(total_iters=0), ValueError, "total_iters"),
    (O.OneCycleLR, dict(max_lr=0, total_steps=10), ValueError, "max_lr"),
    (O.OneCycleLR, dict(max_lr=1, total_steps=1), ValueError, "total_steps"),
    (O.OneCycleLR, dict(max_lr=1, total_steps=10, pct_start=1.0), ValueError, "pct_start"),
    (O.OneCycleLR, dict(max_lr=1, total_steps=10, anneal_strategy="exp"), ValueError,
     "anneal_strategy"),
    (O.OneCycleLR, dict(max_lr=1, total_steps=10, three_phase=1), TypeError, "three_phase"),
    (O.CosineAnnealingWarmRestarts, dict(T_0=0), ValueError, "T_0"),
    (O.CosineAnnealingWarmRestarts, dict(T_0=2, T_mult=1.5), TypeError, "T_mult"),
    (O.SequentialLR, dict(schedulers=[O.LinearLR()], milestones=[]), ValueError, "schedulers"),
    (O.SequentialLR, dict(schedulers=[O.LinearLR(), O.StepLR(1)], milestones=[]), ValueError,
     "milestones"),
    (O.SequentialLR, dict(schedulers=[O.LinearLR()] * 3, milestones=[5, 5]), ValueError,
     "increasing"),
    (O.SequentialLR, dict(schedulers=[O.LinearLR(), "adam"], milestones=[5]), TypeError,
     "schedulers"),
])
def test_bad_per_batch_schedules(cls, kw, exc, match):
    with pytest.raises(exc, match=match):
        cls(**kw)


def test_schedule_config_round_trip_and_bad_position():
    seq = O.SequentialLR([O.LinearLR(0.1, total_iters=5), O.OneCycleLR(1.0, 20)], [5])
    opt = O.Adam(lr=0.01, schedule=seq)
    opt.epoch, opt.iteration = 3, 17
    cfg = opt.get_config()
    back = O.optimizer_from_config(cfg)
    assert back.schedule == seq and (back.epoch, back.iteration) == (3, 17)
    assert [back.schedule_batch(i) for i in range(30)] == [opt.schedule_batch(i)
                                                           for i in range(30)]
    with pytest.raises(ValueError, match="epoch"):
        O.optimizer_from_config({**cfg, "epoch": -1})
    with pytest.raises(ValueError, match="iteration"):
        opt.iteration = -2
    with pytest.raises(AttributeError):
        seq.milestones = [2]
    opt.reset()
    assert (opt.epoch, opt.iteration) == (0, 0)


@pytest.mark.parametrize("schedule", [O.StepLR(2, 0.5)] + [s for s, _ in PER_BATCH[:3]],
                         ids=lambda s: type(s).__name__)
def test_distributed_fit_continues_the_schedule(schedule):
    """With comm (one rank), fit(2) then fit(2) is fit(4): the schedule's epoch and iteration
    advance as without comm, per-epoch and per-batch schedules alike, and
    fit(initial_epoch=2) resumes at the same rates."""
    MPI = pytest.importorskip("mpi4py.MPI")
    X, y = _data()
    a, b, c = (_model(pickle.loads(pickle.dumps(schedule))) for _ in range(3))
    a.fit(X, y, epochs=2, batch_size=16, verbose=0, comm=MPI.COMM_SELF)
    h = a.fit(X, y, epochs=2, batch_size=16, verbose=0, comm=MPI.COMM_SELF)
    hb = b.fit(X, y, epochs=4, batch_size=16, verbose=0)
    assert (a.optimizer.epoch, a.optimizer.iteration) == (4, 4 * 5) == \
        (b.optimizer.epoch, b.optimizer.iteration)
    assert h.history["lr"] == hb.history["lr"][2:]
    np.testing.assert_allclose(a.params, b.params, rtol=1e-12, atol=1e-14)
    hc = c.fit(X, y, epochs=4, batch_size=16, verbose=0, initial_epoch=2, comm=MPI.COMM_SELF)
    assert hc.history["lr"] == hb.history["lr"][2:] and c.optimizer.iteration == 4 * 5
