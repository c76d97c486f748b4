"""Tests for the losses: compiled core (fastprop._core._loss), NumPy reference
(fastprop.reference._losses), PyTorch, finite differences, and the checks in fastprop.losses."""
import math
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from fastprop import losses
from fastprop._core import _kernels
from fastprop._core._loss import loss_and_grad as compiled_loss
from fastprop.activations import ACTIVATIONS
from fastprop.reference._losses import loss_and_grad as reference_loss

RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
REGRESSION = ["mse", "mae", "huber"]
ALL_ACTIVATIONS = list(ACTIVATIONS)  # the regression losses take any output activation
CE_TARGETS = ["labels", "labels_column", "one_hot", "probabilities"]
BCE_TARGETS = ["binary", "probabilities"]


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    return np.dtype(request.param)


def assert_close(actual, expected, rtol):
    """Relative tolerance, with the absolute part scaled to the expected magnitude."""
    expected = np.asarray(expected)
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * max(scale, 1e-30))


def forward(activation, z):
    a = np.empty_like(z)
    _kernels.activation_forward(ACTIVATIONS[activation], z, a)
    return a


def make_case(loss, activation, dtype, n=7, k=5, target="dense", weighted=False, seed=0):
    """(z, a, y, labels, w) for one loss; exactly one of y / labels is set."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=2.0, size=(n, k)).astype(dtype)
    a = forward(activation, z)
    y = labels = None
    if loss == "cross_entropy":
        if target in ("labels", "labels_column"):
            labels = rng.integers(0, k, n)
        elif target == "one_hot":
            y = np.eye(k, dtype=dtype)[rng.integers(0, k, n)]
        else:
            y = rng.dirichlet(np.ones(k), n).astype(dtype)
    elif loss == "binary_cross_entropy":
        y = (rng.integers(0, 2, (n, k)) if target == "binary"
             else rng.uniform(size=(n, k))).astype(dtype)
    else:
        y = rng.normal(size=(n, k)).astype(dtype)
    w = None
    if weighted:
        w = rng.uniform(0, 2, n).astype(dtype)
        w[0] = 0  # a zero weight is allowed
    return z, a, y, labels, w


def run_compiled(loss, activation, z, a, y, labels, w, work=False):
    dz = np.full_like(z, np.nan)
    scratch = np.full_like(z, np.nan) if work else None
    value = compiled_loss(losses.loss_code(loss), ACTIVATIONS[activation], z, a, y, labels, w,
                          dz, scratch)
    return value, dz


def cases():
    for loss in REGRESSION:
        for act in ALL_ACTIVATIONS:
            yield loss, act, "dense"
    for target in CE_TARGETS:
        yield "cross_entropy", "softmax", target
    for target in BCE_TARGETS:
        yield "binary_cross_entropy", "sigmoid", target


CASES = list(cases())
CASE_IDS = [f"{l}-{a}-{t}" for l, a, t in CASES]


# --- compiled against the NumPy reference ---------------------------------------------------

@pytest.mark.parametrize("weighted", [False, True], ids=["mean", "weighted"])
@pytest.mark.parametrize("loss,activation,target", CASES, ids=CASE_IDS)
def test_compiled_matches_reference(loss, activation, target, weighted, dtype):
    z, a, y, labels, w = make_case(loss, activation, dtype, target=target, weighted=weighted)
    value, dz = run_compiled(loss, activation, z, a, y, labels, w)
    ref_value, ref_dz = reference_loss(loss, activation, z, a, y=y, labels=labels,
                                       sample_weight=w)
    assert dz.dtype == dtype and ref_dz.dtype == dtype
    assert isinstance(value, float)
    assert_close(value, ref_value, RTOL[dtype])
    assert_close(dz, ref_dz, RTOL[dtype])


@pytest.mark.parametrize("loss,activation,target", CASES, ids=CASE_IDS)
def test_float32_matches_float64(loss, activation, target):
    """float32 is held to 1e-5 against float64 math on the same (upcast) inputs."""
    z, a, y, labels, w = make_case(loss, activation, np.float32, target=target, weighted=True)
    value, dz = run_compiled(loss, activation, z, a, y, labels, w)
    up = (lambda x: None if x is None else x.astype(np.float64))
    value64, dz64 = run_compiled(loss, activation, up(z), up(a), up(y), labels, up(w))
    assert_close(value, value64, 1e-5)
    assert_close(dz, dz64, 1e-5)


@pytest.mark.parametrize("loss,activation,target", CASES, ids=CASE_IDS)
def test_loss_only_and_separate_work_buffer(loss, activation, target, dtype):
    z, a, y, labels, w = make_case(loss, activation, dtype, target=target, weighted=True)
    value, dz = run_compiled(loss, activation, z, a, y, labels, w)
    value2, dz2 = run_compiled(loss, activation, z, a, y, labels, w, work=True)
    only = compiled_loss(losses.loss_code(loss), ACTIVATIONS[activation], z, a, y, labels, w)
    assert value2 == value and only == value
    np.testing.assert_array_equal(dz2, dz)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("loss,activation", [("mse", "identity"), ("huber", "tanh"),
                                             ("binary_cross_entropy", "sigmoid")])
def test_single_sample_and_single_output(loss, activation, k, dtype):
    for n in (1, 4):
        z, a, y, labels, w = make_case(loss, activation, dtype, n=n, k=k, target="binary")
        value, dz = run_compiled(loss, activation, z, a, y, labels, w)
        ref_value, ref_dz = reference_loss(loss, activation, z, a, y=y)
        assert_close(value, ref_value, RTOL[dtype])
        assert_close(dz, ref_dz, RTOL[dtype])


def test_labels_and_one_hot_agree(dtype):
    z, a, _, labels, w = make_case("cross_entropy", "softmax", dtype, target="labels",
                                   weighted=True)
    y = np.eye(z.shape[1], dtype=dtype)[labels]
    v1, dz1 = run_compiled("cross_entropy", "softmax", z, a, None, labels, w)
    v2, dz2 = run_compiled("cross_entropy", "softmax", z, a, y, None, w)
    assert_close(v1, v2, RTOL[dtype])
    assert_close(dz1, dz2, RTOL[dtype])


def test_unit_weights_equal_the_mean(dtype):
    for loss, act, target in CASES[::4]:
        z, a, y, labels, _ = make_case(loss, act, dtype, target=target)
        ones = np.ones(z.shape[0], dtype=dtype)
        v1, dz1 = run_compiled(loss, act, z, a, y, labels, None)
        v2, dz2 = run_compiled(loss, act, z, a, y, labels, ones)
        assert_close(v2, v1, RTOL[dtype])
        assert_close(dz2, dz1, RTOL[dtype])


# --- against PyTorch ------------------------------------------------------------------------

def torch_activation(name):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    return {
        "identity": lambda t: t,
        "relu": F.relu,
        "leaky_relu": lambda t: F.leaky_relu(t, 0.01),
        "elu": F.elu,
        "gelu": F.gelu,
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "softplus": F.softplus,
        "silu": F.silu,
        "softmax": lambda t: F.softmax(t, dim=1),
    }[name]


def torch_loss_and_grad(loss, activation, z, y, labels, w):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    zt = torch.tensor(z, requires_grad=True)
    if loss == "cross_entropy":
        target = torch.tensor(labels) if labels is not None else torch.tensor(y)
        per_sample = F.cross_entropy(zt, target, reduction="none")
    elif loss == "binary_cross_entropy":
        per_sample = F.binary_cross_entropy_with_logits(zt, torch.tensor(y),
                                                        reduction="none").mean(1)
    else:
        fn = {"mse": F.mse_loss, "mae": F.l1_loss, "huber": F.huber_loss}[loss]
        per_sample = fn(torch_activation(activation)(zt), torch.tensor(y),
                        reduction="none").mean(1)
    if w is None:
        value = per_sample.mean()
    else:
        wt = torch.tensor(w)
        value = (wt * per_sample).sum() / wt.sum()
    value.backward()
    return value.item(), zt.grad.numpy()


@pytest.mark.parametrize("weighted", [False, True], ids=["mean", "weighted"])
@pytest.mark.parametrize("loss,activation,target", CASES, ids=CASE_IDS)
def test_matches_torch(loss, activation, target, weighted):
    pytest.importorskip("torch")
    z, a, y, labels, w = make_case(loss, activation, np.float64, target=target,
                                   weighted=weighted, seed=1)
    value, dz = run_compiled(loss, activation, z, a, y, labels, w)
    t_value, t_dz = torch_loss_and_grad(loss, activation, z, y, labels, w)
    assert_close(value, t_value, 1e-10)
    assert_close(dz, t_dz, 1e-10)


def test_torch_default_modules_agree():
    """The defaults we copy: HuberLoss(delta=1), BCEWithLogitsLoss, CrossEntropyLoss, means."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    rng = np.random.default_rng(3)
    z = rng.normal(scale=3, size=(6, 4))
    y = rng.normal(scale=2, size=(6, 4))
    value, _ = run_compiled("huber", "identity", z, z.copy(), y, None, None)
    assert_close(value, nn.HuberLoss()(torch.tensor(z), torch.tensor(y)).item(), 1e-12)
    yb = rng.uniform(size=(6, 4))
    value, _ = run_compiled("binary_cross_entropy", "sigmoid", z, forward("sigmoid", z), yb,
                            None, None)
    assert_close(value, nn.BCEWithLogitsLoss()(torch.tensor(z), torch.tensor(yb)).item(), 1e-12)
    labels = rng.integers(0, 4, 6)
    value, _ = run_compiled("cross_entropy", "softmax", z, forward("softmax", z), None, labels,
                            None)
    assert_close(value, nn.CrossEntropyLoss()(torch.tensor(z), torch.tensor(labels)).item(),
                 1e-12)


# --- finite differences ---------------------------------------------------------------------

FD_CASES = [(l, a, "dense") for l in REGRESSION
            for a in ("identity", "sigmoid", "tanh", "softplus", "gelu", "softmax")]
FD_CASES += [("cross_entropy", "softmax", t) for t in CE_TARGETS]
FD_CASES += [("cross_entropy", "softmax", "unnormalized")]
FD_CASES += [("binary_cross_entropy", "sigmoid", t) for t in BCE_TARGETS]


@pytest.mark.parametrize("weighted", [False, True], ids=["mean", "weighted"])
@pytest.mark.parametrize("loss,activation,target", FD_CASES,
                         ids=[f"{l}-{a}-{t}" for l, a, t in FD_CASES])
def test_gradient_finite_differences(loss, activation, target, weighted):
    z, a, y, labels, w = make_case(loss, activation, np.float64, n=4, k=3,
                                   target="probabilities" if target == "unnormalized" else target,
                                   weighted=weighted, seed=2)
    if target == "unnormalized":
        y = y * 1.0008  # within the 1e-3 row-sum tolerance: the gradient is still exact
    _, dz = run_compiled(loss, activation, z, a, y, labels, w)
    h = 1e-6
    fd = np.empty_like(z)
    for idx in np.ndindex(*z.shape):
        zp, zm = z.copy(), z.copy()
        zp[idx] += h
        zm[idx] -= h
        lp = compiled_loss(losses.loss_code(loss), ACTIVATIONS[activation], zp,
                           forward(activation, zp), y, labels, w)
        lm = compiled_loss(losses.loss_code(loss), ACTIVATIONS[activation], zm,
                           forward(activation, zm), y, labels, w)
        fd[idx] = (lp - lm) / (2 * h)
    np.testing.assert_allclose(dz, fd, rtol=1e-6, atol=1e-8)


# --- numerical stability --------------------------------------------------------------------

@pytest.mark.parametrize("big", [1e4, 1e30])
@pytest.mark.parametrize("loss,activation,target", CASES, ids=CASE_IDS)
def test_extreme_logits_finite_without_warnings(loss, activation, target, big, dtype):
    z, _, y, labels, w = make_case(loss, activation, dtype, target=target, weighted=True)
    z = (np.sign(z) * big).astype(dtype)
    z[0, 0], z[1, :] = -big, big  # ties at the top of a row too
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        a = forward(activation, z)
        value, dz = run_compiled(loss, activation, z, a, y, labels, w)
        if losses.is_classification(loss):  # the reference's fused losses are strict too
            reference_loss(loss, activation, z, a, y=y, labels=labels, sample_weight=w)
    with np.errstate(all="ignore"):  # reference activation derivatives may overflow harmlessly
        ref_value, ref_dz = reference_loss(loss, activation, z, a, y=y, labels=labels,
                                           sample_weight=w)
    assert math.isfinite(value) and np.isfinite(dz).all()
    assert_close(value, ref_value, RTOL[dtype])
    assert_close(dz, ref_dz, RTOL[dtype])


@pytest.mark.parametrize("big", [1e4, 1e30])
def test_extreme_logits_exact_values(big, dtype):
    # cross-entropy of the wrong class: logsumexp(z) - z_y = big - (-big), no log(0)
    z = np.array([[big, -big, 0.0]], dtype=dtype)
    a = forward("softmax", z)
    value, dz = run_compiled("cross_entropy", "softmax", z, a, None, np.array([1]), None)
    assert value == pytest.approx(2 * float(dtype.type(big)), rel=1e-12)
    np.testing.assert_allclose(dz, [[1, -1, 0]], atol=1e-30)
    # binary cross-entropy: max(z, 0) - y z + log1p(exp(-|z|))
    z = np.array([[big, -big]], dtype=dtype)
    y = np.array([[0.0, 1.0]], dtype=dtype)
    value, dz = run_compiled("binary_cross_entropy", "sigmoid", z, forward("sigmoid", z), y,
                             None, None)
    assert value == pytest.approx(float(dtype.type(big)), rel=1e-12)
    np.testing.assert_allclose(dz, [[0.5, -0.5]], atol=1e-30)


# --- tiny examples worked by hand -----------------------------------------------------------

def hand(loss, activation, z, y=None, labels=None, w=None, dtype=np.float64):
    z = np.array(z, dtype=dtype)
    y = None if y is None else np.array(y, dtype=dtype)
    labels = None if labels is None else np.array(labels, dtype=np.int64)
    w = None if w is None else np.array(w, dtype=dtype)
    return run_compiled(loss, activation, z, forward(activation, z), y, labels, w)


def test_worked_by_hand(dtype):
    tol = RTOL[dtype]
    # mse: d = [[0, 2], [-1, 0]] -> (0 + 4 + 1 + 0) / 4 ; dz = 2 d / 4
    value, dz = hand("mse", "identity", [[1, 2], [3, 5]], [[1, 0], [4, 5]], dtype=dtype)
    assert_close(value, 1.25, tol)
    assert_close(dz, [[0, 1], [-0.5, 0]], tol)
    # weighted: row means [2, 0.5], w = [1, 3] -> (2 + 1.5) / 4
    value, dz = hand("mse", "identity", [[1, 2], [3, 5]], [[1, 0], [4, 5]], w=[1, 3],
                     dtype=dtype)
    assert_close(value, 0.875, tol)
    assert_close(dz, [[0, 2 * 2 / 8], [3 * 2 * -1 / 8, 0]], tol)
    # mae: d = [-2, 0, 3] -> 5 / 3 ; dz = sign(d) / 3 (0 at 0)
    value, dz = hand("mae", "identity", [[0, 1, 3]], [[2, 1, 0]], dtype=dtype)
    assert_close(value, 5 / 3, tol)
    assert_close(dz, [[-1 / 3, 0, 1 / 3]], tol)
    # huber: d = [0.5, 3] -> (0.125 + 2.5) / 2 ; dz = clip(d, -1, 1) / 2
    value, dz = hand("huber", "identity", [[0.5, 3]], [[0, 0]], dtype=dtype)
    assert_close(value, 1.3125, tol)
    assert_close(dz, [[0.25, 0.5]], tol)
    # mse through relu: the negative logit gets no gradient
    value, dz = hand("mse", "relu", [[-1, 2]], [[1, 1]], dtype=dtype)
    assert_close(value, 1.0, tol)
    assert_close(dz, [[0, 1]], tol)  # d = [-1, 1], dL/da = 2 d / 2
    # cross-entropy: z = [0, ln 3] -> p = [1/4, 3/4]; label 0 -> log 4 ; dz = p - y
    value, dz = hand("cross_entropy", "softmax", [[0, math.log(3)]], labels=[0], dtype=dtype)
    assert_close(value, math.log(4), tol)
    assert_close(dz, [[-0.75, 0.75]], tol)
    # binary cross-entropy: z = 0 -> p = 1/2; y = 1 -> log 2 ; dz = p - y
    value, dz = hand("binary_cross_entropy", "sigmoid", [[0]], [[1]], dtype=dtype)
    assert_close(value, math.log(2), tol)
    assert_close(dz, [[-0.5]], tol)


# --- the GIL-free path ----------------------------------------------------------------------

def test_thread_pool_gives_serial_results():
    jobs = [make_case(l, a, np.float64, n=64, k=10, target=t, weighted=True, seed=s)
            for s, (l, a, t) in enumerate(CASES)]
    serial = [run_compiled(CASES[i][0], CASES[i][1], *job) for i, job in enumerate(jobs)]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda i: run_compiled(CASES[i][0], CASES[i][1], *jobs[i]),
                                 range(len(jobs))))
    for (v1, dz1), (v2, dz2) in zip(serial, threaded):
        assert v1 == v2
        np.testing.assert_array_equal(dz1, dz2)


# --- the compiled entry point's own checks --------------------------------------------------

def test_compiled_entry_point_checks():
    z = np.zeros((3, 2))
    y = np.zeros((3, 2))
    labels = np.zeros(3, dtype=np.int64)
    mse, ce, bce = (losses.loss_code(x) for x in ("mse", "ce", "bce"))
    ident, sig, soft = ACTIVATIONS["identity"], ACTIVATIONS["sigmoid"], ACTIVATIONS["softmax"]
    with pytest.raises(ValueError, match="loss code"):
        compiled_loss(7, ident, z, z, y)
    with pytest.raises(ValueError, match="activation code"):
        compiled_loss(mse, 42, z, z, y)
    with pytest.raises(ValueError, match="softmax"):
        compiled_loss(ce, sig, z, z, None, labels)
    with pytest.raises(ValueError, match="sigmoid"):
        compiled_loss(bce, soft, z, z, y)
    with pytest.raises(ValueError, match="exactly one"):
        compiled_loss(ce, soft, z, z, y, labels)
    with pytest.raises(ValueError, match="exactly one"):
        compiled_loss(mse, ident, z, z)
    with pytest.raises(ValueError, match="only for cross-entropy"):
        compiled_loss(mse, ident, z, z, None, labels)
    with pytest.raises(ValueError, match="empty"):
        compiled_loss(mse, ident, z[:0], z[:0], y[:0])
    with pytest.raises(ValueError, match="^a has shape"):
        compiled_loss(mse, ident, z, z[:2], y)
    with pytest.raises(ValueError, match="^y has shape"):
        compiled_loss(mse, ident, z, z, y[:2])
    with pytest.raises(ValueError, match="^labels has shape"):
        compiled_loss(ce, soft, z, z, None, labels[:2])
    with pytest.raises(ValueError, match="^w has shape"):
        compiled_loss(mse, ident, z, z, y, None, np.ones(2))
    with pytest.raises(ValueError, match="^dz_out has shape"):
        compiled_loss(mse, ident, z, z, y, None, None, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="^work has shape"):
        compiled_loss(mse, ident, z, z, y, None, None, np.zeros((3, 2)), np.zeros((2, 2)))
    a = z.copy()
    with pytest.raises(ValueError, match="dz_out must not be the same buffer as a"):
        compiled_loss(mse, ident, z, a, y, None, None, a)
    with pytest.raises(ValueError, match="work must not be the same buffer as y"):
        compiled_loss(mse, ident, z, a, y, None, None, np.zeros((3, 2)), y)
    with pytest.raises(ValueError):  # one dtype per call
        compiled_loss(mse, ident, z, z, y.astype(np.float32))
    with pytest.raises(ValueError):  # C-contiguous only: fastprop.losses makes it so
        compiled_loss(mse, ident, np.zeros((2, 3)).T, z, y)


# --- names, codes and the loss / activation pairing ----------------------------------------

def test_names_and_codes():
    assert losses.LOSSES == {"mse": 0, "mae": 1, "huber": 2, "cross_entropy": 3,
                             "binary_cross_entropy": 4}
    for alias, name in [("CE", "cross_entropy"), ("categorical_crossentropy", "cross_entropy"),
                        ("bce", "binary_cross_entropy"), ("mean_squared_error", "mse"),
                        ("MSE", "mse"), ("mean_absolute_error", "mae")]:
        assert losses.canonical_loss(alias) == name
        assert losses.loss_code(alias) == losses.LOSSES[name]
    assert losses.is_classification("ce") and losses.is_classification("bce")
    assert not any(losses.is_classification(x) for x in REGRESSION)
    with pytest.raises(ValueError, match="loss must be one of.*'hinge'"):
        losses.loss_code("hinge")
    with pytest.raises(TypeError, match="loss must be a string"):
        losses.loss_code(3)
    with pytest.raises(TypeError, match="loss must be a string"):
        losses.is_classification(None)


def test_check_loss_activation():
    assert losses.check_loss_activation("ce", "softmax") == (3, ACTIVATIONS["softmax"])
    assert losses.check_loss_activation("bce", "sigmoid") == (4, ACTIVATIONS["sigmoid"])
    for loss in REGRESSION:
        for act in ALL_ACTIVATIONS + ["linear", "swish", None]:
            losses.check_loss_activation(loss, act)
    for loss, act in [("cross_entropy", "sigmoid"), ("ce", "identity"), ("ce", None),
                      ("binary_cross_entropy", "softmax"), ("bce", "relu")]:
        with pytest.raises(ValueError) as info:
            losses.check_loss_activation(loss, act)
        msg = str(info.value)
        assert losses.canonical_loss(loss) in msg and repr(act or "identity") in msg
    with pytest.raises(ValueError, match="activation must be one of"):
        losses.check_loss_activation("mse", "swishy")
    with pytest.raises(ValueError, match="loss must be one of"):
        losses.check_loss_activation("nll", "softmax")


# --- prepare_targets -------------------------------------------------------------------------

def test_prepare_targets_labels(dtype):
    for y in ([2, 0, 1], np.array([2.0, 0.0, 1.0]), np.array([[2], [0], [1]], dtype=np.uint8),
              np.array([2, 0, 1], dtype=np.float32), (2, 0, 1)):
        y_dense, labels = losses.prepare_targets("cross_entropy", y, 3, 3, dtype)
        assert y_dense is None
        assert labels.dtype == np.int64 and labels.flags.c_contiguous
        np.testing.assert_array_equal(labels, [2, 0, 1])
    _, labels = losses.prepare_targets("ce", np.array([True, False]), 2, 2, dtype)
    np.testing.assert_array_equal(labels, [1, 0])


def test_prepare_targets_probability_rows(dtype):
    y = np.array([[0.2, 0.8], [1, 0], [0.5, 0.5005]])  # last row: within 1e-3 of 1
    y_dense, labels = losses.prepare_targets("cross_entropy", y, 3, 2, dtype)
    assert labels is None and y_dense.dtype == dtype and y_dense.flags.c_contiguous
    assert_close(y_dense, y, RTOL[dtype])
    y_dense, _ = losses.prepare_targets("ce", np.ones((4, 1)), 4, 1, dtype)  # k == 1: rows
    assert y_dense.shape == (4, 1)


def test_prepare_targets_regression_and_bce(dtype):
    y_dense, labels = losses.prepare_targets("mse", [1, 2, 3], 3, 1, dtype)
    assert labels is None and y_dense.shape == (3, 1) and y_dense.dtype == dtype
    y_dense, _ = losses.prepare_targets("huber", np.arange(6, dtype=np.int32).reshape(3, 2),
                                        3, 2, dtype)
    assert y_dense.dtype == dtype
    np.testing.assert_array_equal(y_dense, np.arange(6).reshape(3, 2))
    y_dense, _ = losses.prepare_targets("bce", [0, 1, 1], 3, 1, dtype)
    assert y_dense.shape == (3, 1)
    y_dense, _ = losses.prepare_targets("bce", [[0, 1], [0.25, 1]], 2, 2, dtype)
    assert y_dense.dtype == dtype


def test_prepare_targets_never_writes_and_accepts_any_layout(dtype):
    base = np.asfortranarray(np.random.default_rng(0).uniform(size=(4, 6)))
    y = base[:, ::2]  # Fortran-ordered, strided
    y.flags.writeable = False
    before = y.copy()
    y_dense, _ = losses.prepare_targets("bce", y, 4, 3, dtype)
    assert y_dense.flags.c_contiguous and y_dense.flags.writeable
    y_dense[:] = -1
    np.testing.assert_array_equal(y, before)
    labels_in = np.array([1, 0, 1, 2], dtype=np.int64)[::-1]
    _, labels = losses.prepare_targets("ce", labels_in, 4, 3, dtype)
    labels[:] = 0
    np.testing.assert_array_equal(labels_in, [2, 1, 0, 1])


@pytest.mark.parametrize("loss,y,n,k,error,match", [
    ("ce", [0, 3.5, 1], 3, 4, ValueError, r"y .*integers; got 3\.5 at index 1"),
    ("ce", [0, 4, 1], 3, 4, ValueError, r"y .*\[0, 3\] \(4 classes\); got 4 at index 1"),
    ("ce", [0, -1, 1], 3, 4, ValueError, r"y .*\[0, 3\].*got -1 at index 1"),
    ("ce", np.array([0, 2**40], dtype=np.uint64), 2, 4, ValueError, r"\[0, 3\].*1099511627776"),
    ("ce", [[0], [5]], 2, 4, ValueError, r"\[0, 3\].*got 5"),
    ("ce", [0, np.nan], 2, 4, ValueError, "y contains NaN or infinity"),
    ("ce", [0, np.inf], 2, 4, ValueError, "y contains NaN or infinity"),
    ("ce", [0, 1], 3, 4, ValueError, "y has 2 samples, expected 3"),
    ("ce", [[0.5, 0.5, 0]], 1, 2, ValueError, r"y must have 2 columns"),
    ("ce", [[1.5, -0.5]], 1, 2, ValueError, r"y .*>= 0; got -0\.5 at \(0, 1\)"),
    ("ce", [[0.5, 0.5], [0.5, 0.6]], 2, 2, ValueError, r"sum to 1 \(within 0\.001\); row 1"),
    ("ce", [[0.5, 0.5], [0.5, np.nan]], 2, 2, ValueError, "y contains NaN or infinity"),
    ("ce", [[[0]]], 1, 1, ValueError, "y must be 1-D .* or 2-D"),
    ("ce", 3, 1, 4, ValueError, "y must be 1-D .* or 2-D"),
    ("ce", [], 0, 4, ValueError, "y is empty"),
    ("ce", [1 + 2j, 0], 2, 4, TypeError, "y must hold real numbers.*complex"),
    ("ce", np.array(["1", "0"]), 2, 4, TypeError, "y must hold real numbers.*strings"),
    ("ce", "10", 2, 4, TypeError, "y must be an array of real numbers"),
    ("ce", np.array([1, None], dtype=object), 2, 4, TypeError, "object"),
    ("mse", [[1, 2], [3]], 2, 2, ValueError, "y could not be read as an array"),
    ("mse", [1, 2, 3], 3, 2, ValueError, r"y must have shape \(n_samples, 2\)"),
    ("mse", [[1, 2, 3]], 1, 2, ValueError, "y must have 2 columns"),
    ("mse", [[1, 2]], 2, 2, ValueError, "y has 1 samples, expected 2"),
    ("mse", [[1, np.nan]], 1, 2, ValueError, "y contains NaN or infinity"),
    ("mae", np.zeros((0, 2)), 0, 2, ValueError, "y is empty"),
    ("huber", [[1 + 0j]], 1, 1, TypeError, "complex"),
    ("bce", [[0, 1.5]], 1, 2, ValueError, r"y for binary_cross_entropy must lie in \[0, 1\]; "
                                          r"got 1\.5 at \(0, 1\)"),
    ("bce", [[0, -0.1]], 1, 2, ValueError, r"\[0, 1\]; got -0\.1"),
    ("bce", [0, 1], 2, 2, ValueError, r"y must have shape \(n_samples, 2\)"),
    ("bce", [[0, np.inf]], 1, 2, ValueError, "y contains NaN or infinity"),
    ("hinge", [0, 1], 2, 1, ValueError, "loss must be one of"),
])
def test_prepare_targets_errors(loss, y, n, k, error, match):
    with pytest.raises(error, match=match):
        losses.prepare_targets(loss, y, n, k, np.float64)


def test_prepare_targets_names_the_argument_and_checks_dtype():
    with pytest.raises(ValueError, match="^y_val has 1 samples"):
        losses.prepare_targets("mse", [[1.0]], 2, 1, np.float64, name="y_val")
    with pytest.raises(ValueError, match="y has values beyond the range of float32"):
        losses.prepare_targets("mse", [[1e39]], 1, 1, np.float32)
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'"):
        losses.prepare_targets("mse", [[1.0]], 1, 1, "int32")


# --- prepare_sample_weight -------------------------------------------------------------------

def test_prepare_sample_weight(dtype):
    assert losses.prepare_sample_weight(None, 3, dtype) is None
    w_in = np.array([1, 0, 2, 5], dtype=np.int64)[::2]
    w = losses.prepare_sample_weight(w_in, 2, dtype)
    assert w.dtype == dtype and w.flags.c_contiguous
    np.testing.assert_array_equal(w, [1, 2])
    w[:] = 7
    np.testing.assert_array_equal(w_in, [1, 2])


@pytest.mark.parametrize("w,n,error,match", [
    ([[1.0, 2.0]], 2, ValueError, r"sample_weight must be 1-D \(n_samples,\), got shape"),
    (1.0, 1, ValueError, "sample_weight must be 1-D"),
    ([1.0, 2.0], 3, ValueError, "sample_weight has 2 values, expected 3"),
    ([1.0, -2.0], 2, ValueError, r"sample_weight must be >= 0; got -2\.0 at index 1"),
    ([0.0, 0.0], 2, ValueError, "sample_weight must have a positive sum"),
    ([1.0, np.nan], 2, ValueError, "sample_weight contains NaN or infinity"),
    ([1.0, np.inf], 2, ValueError, "sample_weight contains NaN or infinity"),
    ([], 0, ValueError, "sample_weight is empty"),
    ([1 + 1j], 1, TypeError, "sample_weight must hold real numbers.*complex"),
    (np.array(["a"]), 1, TypeError, "sample_weight must hold real numbers.*strings"),
    ("1", 1, TypeError, "sample_weight must be an array of real numbers"),
    ([[1], [2, 3]], 2, ValueError, "sample_weight could not be read as an array"),
])
def test_prepare_sample_weight_errors(w, n, error, match):
    with pytest.raises(error, match=match):
        losses.prepare_sample_weight(w, n, np.float64)


def test_prepare_sample_weight_float32_range():
    with pytest.raises(ValueError, match="beyond the range of float32"):
        losses.prepare_sample_weight([1e39], 1, np.float32)
    with pytest.raises(ValueError, match="positive sum"):  # 1e-50 is 0 in float32
        losses.prepare_sample_weight([1e-50], 1, np.float32)


# --- the Python boundary feeds the compiled core --------------------------------------------

def test_prepared_targets_drive_the_core(dtype):
    rng = np.random.default_rng(5)
    z = rng.normal(size=(5, 3)).astype(dtype)
    a = forward("softmax", z)
    y = [[2.0], [0.0], [1.0], [1.0], [2.0]]  # float labels in a column
    y_dense, labels = losses.prepare_targets("ce", y, 5, 3, dtype)
    w = losses.prepare_sample_weight([1, 2, 0, 1, 1], 5, dtype)
    value, dz = run_compiled("cross_entropy", "softmax", z, a, y_dense, labels, w)
    ref_value, ref_dz = reference_loss("cross_entropy", "softmax", z, a,
                                       labels=np.array([2, 0, 1, 1, 2]), sample_weight=w)
    assert_close(value, ref_value, RTOL[dtype])
    assert_close(dz, ref_dz, RTOL[dtype])
