"""fastprop.optim.LBFGS: full-batch L-BFGS-B over a model's flat parameters."""
import numpy as np
import pytest

import fastprop as fp
from fastprop.lbfgs import LBFGS

scipy_optimize = pytest.importorskip("scipy.optimize")


def _model(dtype="float64", out="identity", n_out=2, loss=None):
    return fp.Sequential([fp.Dense(4, 6, activation="tanh", seed=0),
                          fp.Dense(6, n_out, activation=out, seed=1)],
                         loss=loss, dtype=dtype, seed=0)


def _data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    Y = np.c_[np.sin(X[:, 0]) + X[:, 1], X[:, 2] * X[:, 3]]
    return X, Y


def _np_loss(model, theta, X, Y, w=None, alpha=0.0):
    """The model's mse and scikit-learn's penalty, in plain NumPy at theta."""
    (W1o, b1o), (W2o, b2o) = model._offsets
    W1 = theta[W1o:b1o].reshape(4, 6)
    b1 = theta[b1o:b1o + 6]
    W2 = theta[W2o:b2o].reshape(6, 2)
    b2 = theta[b2o:b2o + 2]
    P = np.tanh(X @ W1 + b1) @ W2 + b2
    per = ((P - Y) ** 2).mean(axis=1)
    w = np.ones(len(X)) if w is None else w
    return (w @ per) / w.sum() + 0.5 * alpha * ((W1 ** 2).sum() + (W2 ** 2).sum()) / w.sum()


@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_agrees_with_scipy_on_the_same_loss(alpha):
    """A linear model (convex least squares plus scikit-learn's penalty): the same minimum as
    scipy's L-BFGS-B on the NumPy loss."""
    X, Y = _data()
    w = np.random.default_rng(1).uniform(0.5, 2.0, len(X))
    model = fp.Sequential([fp.Dense(4, 2, seed=0)], dtype="float64")

    def np_loss(t):
        W, b = t[:8].reshape(4, 2), t[8:]
        per = ((X @ W + b - Y) ** 2).mean(axis=1)
        return (w @ per) / w.sum() + 0.5 * alpha * (W ** 2).sum() / w.sum()
    theta0 = model.params.copy()
    res = LBFGS(max_iter=500, tol=1e-10, alpha=alpha).minimize(model, X, Y, sample_weight=w)
    ref = scipy_optimize.minimize(np_loss, theta0, method="L-BFGS-B",
                                  options={"maxiter": 500, "gtol": 1e-10})
    assert abs(res.fun - ref.fun) < 1e-7 * max(1.0, ref.fun)
    np.testing.assert_allclose(model.params, ref.x, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(res.fun, np_loss(model.params), rtol=1e-10)
    assert res.fun < np_loss(theta0)


@pytest.mark.parametrize("kind", ["mse", "cross_entropy", "binary_cross_entropy"])
def test_gradients_against_finite_differences(kind):
    """float64: the objective's gradient (penalty and sample weights included) against
    central differences of its loss, and its loss against the NumPy loss."""
    X, Y = _data(30)
    w = np.random.default_rng(2).uniform(0.0, 2.0, 30)
    if kind == "mse":
        model, y = _model(), Y
    elif kind == "cross_entropy":
        model, y = _model(out="softmax", n_out=3), np.arange(30) % 3
    else:
        model, y = _model(out="sigmoid", n_out=2), (Y > 0).astype(float)
    fun = LBFGS(alpha=0.2).objective(model, X, y, sample_weight=w)
    theta = model.params.astype(np.float64) + 0.1
    loss, grad = fun(theta)
    eps = 1e-6
    fd = np.empty_like(theta)
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = eps
        fd[i] = (fun(theta + e)[0] - fun(theta - e)[0]) / (2 * eps)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-9)
    if kind == "mse":
        np.testing.assert_allclose(loss, _np_loss(model, theta, X, Y, w, alpha=0.2),
                                   rtol=1e-12)


def test_loss_decreases_and_classification_learns():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 4))
    y = (X[:, 0] * X[:, 1] > 0).astype(int)
    model = fp.Sequential([fp.Dense(4, 16, activation="tanh", seed=0),
                           fp.Dense(16, 2, activation="softmax", seed=1)], dtype="float32")
    before = model.evaluate(X, y)["loss"]
    res = fp.optim.LBFGS(max_iter=200).minimize(model, X, y)
    assert res.fun < before and model.evaluate(X, y)["accuracy"] > 0.9
    assert model.params.dtype == np.float32


def test_respects_max_iter_and_max_fun():
    X, Y = _data()
    res = LBFGS(max_iter=3, tol=0.0).minimize(_model(), X, Y)
    assert res.nit == 3 and res.status == 1
    calls = []
    model = _model()
    orig = model._engine

    class Counting:
        def __getattr__(self, name):
            return getattr(orig, name)

        def train_step(self, *a):
            calls.append(1)
            return orig.train_step(*a)
    model._engine = Counting()
    res = LBFGS(max_iter=1000, max_fun=10, tol=0.0).minimize(model, X, Y)
    assert res.status == 1 and len(calls) == res.nfev and res.nfev <= 10 + 25


@pytest.mark.parametrize("kwargs, exc, pattern", [
    (dict(max_iter=0), ValueError, "max_iter"), (dict(max_iter=1.5), TypeError, "max_iter"),
    (dict(max_fun=0), ValueError, "max_fun"), (dict(tol=-1.0), ValueError, "tol"),
    (dict(alpha=np.nan), ValueError, "alpha"), (dict(tol="x"), TypeError, "tol")])
def test_bad_parameters(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        LBFGS(**kwargs)


def test_refuses_bad_input_before_changing_anything():
    X, Y = _data()
    model = _model()
    params = model.params.copy()
    for args, exc, pattern in [((X[:, :3], Y), ValueError, r"\bX\b"),
                               ((X, Y[:, :1]), ValueError, r"\by\b"),
                               ((np.where(X > 2, np.nan, X), Y), ValueError, r"\bX\b"),
                               ((X, Y, -np.ones(len(X))), ValueError, "sample_weight"),
                               ((X, Y, np.zeros(len(X))), ValueError, "sample_weight")]:
        with pytest.raises(exc, match=pattern):
            LBFGS().minimize(model, *args)
        np.testing.assert_array_equal(model.params, params)
    with pytest.raises(TypeError, match="model"):
        LBFGS().minimize("model", X, Y)
    with pytest.raises(ValueError, match=r"\bX\b"):
        LBFGS().minimize(_model(dtype="float32"), X * 3e38, Y)
