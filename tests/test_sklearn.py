"""fastprop.sklearn: scikit-learn's estimator checks, and what a pipeline user relies on."""
import copy
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.base import clone                                         # noqa: E402
from sklearn.datasets import make_blobs                                # noqa: E402
from sklearn.exceptions import ConvergenceWarning, DataConversionWarning  # noqa: E402
from sklearn.model_selection import (GridSearchCV, cross_val_score,    # noqa: E402
                                     train_test_split)
from sklearn.neural_network import MLPClassifier, MLPRegressor         # noqa: E402
from sklearn.pipeline import Pipeline                                  # noqa: E402
from sklearn.preprocessing import StandardScaler                       # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks     # noqa: E402

import fastprop as fp                                                  # noqa: E402
from fastprop.datasets import load_digits                              # noqa: E402
from fastprop.sklearn import FastpropClassifier, FastpropRegressor     # noqa: E402

no_convergence_warning = pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning")


# -- scikit-learn's own API checks ---------------------------------------------------------
# Every check scikit-learn runs on its estimators, at the default float32 and at float64, for
# the stochastic solvers and lbfgs. Small networks that still learn the checks' easy problems.
# check_sample_weight_equivalence_on_dense_data compares integer weights with repeated samples
# at rtol=1e-7: in full-batch training identical samples are merged (weights summed), so the
# float32 computation is the same bit for bit.
CHECKED = [
    cls(**{"hidden_layer_sizes": (8,), "learning_rate_init": 1e-2, "max_iter": 100,
           "random_state": 0, **extra})
    for cls in (FastpropClassifier, FastpropRegressor)
    for extra in ({}, {"dtype": "float64"}, {"solver": "lbfgs", "max_iter": 50})
]


@no_convergence_warning
@parametrize_with_checks(CHECKED)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# -- data ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    X, y = load_digits()
    return train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=240, centers=3, n_features=5, random_state=0)
    return StandardScaler().fit_transform(X), y


def small(cls=FastpropClassifier, **kw):
    params = dict(hidden_layer_sizes=(16,), learning_rate_init=1e-2, max_iter=30, random_state=0)
    params.update(kw)
    return cls(**params)


# -- import --------------------------------------------------------------------------------
def test_optional_import():
    """`import fastprop` loads neither this module nor scikit-learn, and without scikit-learn
    `import fastprop.sklearn` raises ImportError saying how to install it."""
    code = (
        "import sys\n"
        "import fastprop\n"
        "assert 'fastprop.sklearn' not in sys.modules, 'fastprop imported fastprop.sklearn'\n"
        "assert 'sklearn' not in sys.modules, 'fastprop imported sklearn'\n"
        "sys.modules['sklearn'] = None   # as if scikit-learn were not installed\n"
        "try:\n"
        "    import fastprop.sklearn\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    raise SystemExit('no ImportError')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pip install scikit-learn" in out.stdout


# -- classifier --------------------------------------------------------------------------------
def test_pipeline_on_digits(digits):
    X_train, X_test, y_train, y_test = digits
    pipe = Pipeline([("scale", StandardScaler()),
                     ("net", FastpropClassifier(random_state=0))])   # defaults otherwise
    pipe.fit(X_train, y_train)
    assert pipe.score(X_test, y_test) > 0.9
    net = pipe.named_steps["net"]
    assert isinstance(net.model_, fp.Sequential)
    assert net.n_features_in_ == 64
    np.testing.assert_array_equal(net.classes_, np.arange(10))
    assert net.n_outputs_ == 10 and net.n_layers_ == 3 and net.out_activation_ == "softmax"
    assert 1 <= net.n_iter_ < 200          # stopped by the loss criterion, not by max_iter
    assert len(net.loss_curve_) == net.n_iter_ and net.loss_ == net.loss_curve_[-1]
    assert net.best_loss_ == min(net.loss_curve_) and net.loss_curve_[-1] < net.loss_curve_[0]
    assert net.t_ == net.n_iter_ * len(X_train)
    assert net.validation_scores_ is None and net.best_validation_score_ is None
    assert [W.shape for W in net.coefs_] == [(64, 100), (100, 10)]
    assert [b.shape for b in net.intercepts_] == [(100,), (10,)]


@no_convergence_warning
@pytest.mark.parametrize("labels", [["cat", "dog", "emu"], [10, 20, 30], [-1.0, 0.0, 2.0]],
                         ids=["str", "int", "float"])
def test_labels_round_trip(blobs, labels):
    X, y = blobs
    y = np.asarray(labels)[y]
    clf = small().fit(X, y)
    np.testing.assert_array_equal(clf.classes_, np.sort(labels))
    pred = clf.predict(X)
    assert pred.dtype == y.dtype and pred.shape == y.shape
    assert set(pred) <= set(labels)
    assert np.mean(pred == y) > 0.9
    assert clf.score(X, list(y)) == np.mean(pred == y)


@no_convergence_warning
def test_binary_string_labels_use_one_sigmoid_unit(blobs):
    """As MLPClassifier: one logistic output unit, predict_proba gives [1 - p, p]."""
    X, y = blobs
    y = np.where(y == 0, "spam", "ham")
    clf = small().fit(X, y)
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 2)
    assert clf.model_.layers[-1].n_out == 1 and clf.out_activation_ == "logistic"
    assert clf.n_outputs_ == 1 and clf.model_.loss == "binary_cross_entropy"
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[(proba[:, 1] > 0.5).astype(int)])
    ref = MLPClassifier(hidden_layer_sizes=(16,), random_state=0, max_iter=30).fit(X, y)
    assert [c.shape for c in clf.coefs_] == [c.shape for c in ref.coefs_]
    assert np.mean(clf.predict(X) == y) > 0.9


@no_convergence_warning
def test_predict_proba(blobs):
    X, y = blobs
    clf = small().fit(X, y)
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 3) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert ((proba >= 0) & (proba <= 1)).all()
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(X))
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(proba), rtol=1e-6)
    # float32 X gives float32 output, as scikit-learn's estimators do
    assert clf.predict_proba(X.astype(np.float32)).dtype == np.float32


@no_convergence_warning
def test_single_class():
    X = np.random.default_rng(0).standard_normal((10, 3))
    clf = small().fit(X, ["only"] * 10)
    np.testing.assert_array_equal(clf.predict(X), ["only"] * 10)
    np.testing.assert_array_equal(clf.predict_proba(X), np.ones((10, 1)))


def test_grid_search(blobs):
    X, y = blobs
    grid = GridSearchCV(small(max_iter=10), {"hidden_layer_sizes": [(4,), (16,)]}, cv=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        grid.fit(X, y)
    assert list(grid.cv_results_["param_hidden_layer_sizes"]) == [(4,), (16,)]
    assert grid.best_params_["hidden_layer_sizes"] in [(4,), (16,)]
    assert np.isfinite(grid.cv_results_["mean_test_score"]).all()
    assert grid.best_estimator_.model_.layers[0].n_out == grid.best_params_[
        "hidden_layer_sizes"][0]
    assert grid.score(X, y) > 0.9


@no_convergence_warning
def test_cross_val_score_regressor():
    X, y, _ = _linear(n=150)
    scores = cross_val_score(small(FastpropRegressor, max_iter=100), X, y, cv=3)
    assert scores.shape == (3,) and (scores > 0.9).all()


@no_convergence_warning
def test_clone_refit_is_identical(blobs):
    X, y = blobs
    clf = small(dtype="float32").fit(X, y)
    other = clone(clf)
    assert not hasattr(other, "model_") and other.get_params() == clf.get_params()
    other.fit(X, y)
    np.testing.assert_array_equal(other.predict_proba(X), clf.predict_proba(X))
    np.testing.assert_array_equal(other.model_.params, clf.model_.params)
    assert other.loss_curve_ == clf.loss_curve_
    # a RandomState instance is drawn from: successive fits start from different weights
    rs = small(random_state=np.random.RandomState(0))
    first = rs.fit(X, y).model_.params.copy()
    assert not np.array_equal(rs.fit(X, y).model_.params, first)


@no_convergence_warning
def test_get_set_params():
    clf = FastpropClassifier()
    assert clf.get_params()["hidden_layer_sizes"] == (100,)
    assert clf.get_params()["batch_size"] == "auto"
    clf.set_params(hidden_layer_sizes=(3, 2), optimizer="sgd", alpha=0.5)
    assert (clf.hidden_layer_sizes, clf.optimizer, clf.alpha) == ((3, 2), "sgd", 0.5)
    clf.set_params(hidden_layer_sizes=(0,))            # validated at fit, not here
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        clf.fit([[0.0], [1.0]], [0, 1])


@no_convergence_warning
@pytest.mark.parametrize("cls", [FastpropClassifier, FastpropRegressor])
def test_pickle_round_trip(blobs, cls):
    X, y = blobs
    est = small(cls, n_threads=1).fit(X, y)
    again = pickle.loads(pickle.dumps(est))
    assert again.model_.n_threads == 1
    assert again.get_params() == est.get_params()
    np.testing.assert_array_equal(again.predict(X), est.predict(X))
    np.testing.assert_array_equal(again.model_.params, est.model_.params)
    assert again.loss_curve_ == est.loss_curve_ and again.n_iter_ == est.n_iter_
    deep = copy.deepcopy(est)
    np.testing.assert_array_equal(deep.predict(X), est.predict(X))
    # training goes on identically from the copy (optimizer state and RNG stream included)
    est.set_params(warm_start=True, max_iter=3).fit(X, y)
    again.set_params(warm_start=True, max_iter=3).fit(X, y)
    np.testing.assert_array_equal(again.model_.params, est.model_.params)


@no_convergence_warning
def test_warm_start_continues(blobs):
    X, y = blobs
    clf = small(warm_start=True, max_iter=5, learning_rate_init=1e-3, n_iter_no_change=100)
    clf.fit(X, y)
    model, curve = clf.model_, list(clf.loss_curve_)
    assert clf.n_iter_ == 5 and len(curve) == 5
    start = model.params.copy()
    clf.fit(X, y)
    # scikit-learn's warm start: the fitted weights, a new optimizer; n_iter_ counts this fit,
    # t_ and loss_curve_ accumulate
    assert clf.n_iter_ == 5 and len(clf.loss_curve_) == 10 and clf.t_ == 10 * len(X)
    assert clf.loss_curve_[:5] == curve
    np.testing.assert_array_equal(model.params, start)    # the old model_ was not touched
    # the second fit starts where the first stopped, and the loss keeps going down
    assert clf.loss_curve_[5] < curve[0]
    assert abs(clf.loss_curve_[5] - curve[-1]) < abs(curve[0] - curve[-1])
    assert clf.loss_curve_[-1] < curve[-1]
    assert clf.model_.optimizer.t == 5 * 2     # a fresh Adam (2 batches an epoch)
    # learning_rate_init may change between warm fits
    clf.set_params(learning_rate_init=5e-4, alpha=1e-3).fit(X, y)
    assert clf.model_.optimizer.lr == 5e-4
    model = clf.model_
    # without warm_start, fit starts over
    clf.set_params(warm_start=False).fit(X, y)
    assert clf.model_ is not model and clf.n_iter_ == 5


@no_convergence_warning
def test_warm_start_refuses_other_architecture_or_classes(blobs):
    X, y = blobs
    clf = small(warm_start=True, max_iter=2).fit(X, y)
    params = clf.model_.params.copy()
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        clf.set_params(hidden_layer_sizes=(4,)).fit(X, y)
    clf.set_params(hidden_layer_sizes=(16,))
    with pytest.raises(ValueError, match="activation"):
        clf.set_params(activation="tanh").fit(X, y)
    clf.set_params(activation="relu")
    with pytest.raises(ValueError, match="dtype"):
        clf.set_params(dtype="float64").fit(X, y)
    clf.set_params(dtype="float32")
    with pytest.raises(ValueError, match="classes"):
        clf.fit(X, np.where(y == 2, 1, y))
    with pytest.raises(ValueError, match="X has 4 features"):
        clf.fit(X[:, :4], y)
    np.testing.assert_array_equal(clf.model_.params, params)   # failed fits changed nothing
    reg = small(FastpropRegressor, warm_start=True, max_iter=2).fit(X, np.c_[y, y])
    with pytest.raises(ValueError, match="outputs"):
        reg.fit(X, y)


@no_convergence_warning
def test_partial_fit(blobs):
    X, y = blobs
    clf = small(batch_size=16)
    with pytest.raises(ValueError, match="classes"):
        clf.partial_fit(X, y)
    assert not hasattr(clf, "model_")
    for i in range(1, 6):
        # classes on the first call only; later batches need not hold every class
        part = slice(None) if i == 1 else y != 2
        clf.partial_fit(X[part], y[part], classes=[0, 1, 2] if i == 1 else None)
        assert clf.n_iter_ == 1 and len(clf.loss_curve_) == i and clf.t_ == sum(
            len(X) if k == 1 else int((y != 2).sum()) for k in range(1, i + 1))
    np.testing.assert_array_equal(clf.classes_, [0, 1, 2])
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    with pytest.raises(ValueError, match=r"\by\b.*not among the classes"):
        clf.partial_fit(X, y + 1)
    with pytest.raises(ValueError, match="classes"):
        clf.partial_fit(X, y, classes=[0, 1])
    with pytest.raises(ValueError, match="X has 4 features"):
        clf.partial_fit(X[:, :4], y)
    with pytest.raises(ValueError, match="early_stopping"):
        small(early_stopping=True).partial_fit(X, y, classes=[0, 1, 2])
    # partial_fit after fit goes on from the fitted model
    reg = small(FastpropRegressor).fit(X, X[:, 0])
    t, model = reg.t_, reg.model_
    steps = model.optimizer.t
    reg.partial_fit(X, X[:, 0])
    assert reg.n_iter_ == 1 and reg.t_ == t + len(X)           # as scikit-learn counts
    assert reg.model_.optimizer.t == steps + 2                 # the optimizer state goes on


def test_stopping_rule_is_scikit_learns(blobs):
    """Stop once more than n_iter_no_change epochs in a row missed the tol improvement: with
    a huge tol, after exactly n_iter_no_change + 2 epochs, as MLPClassifier does."""
    X, y = blobs
    for early_stopping in (False, True):
        for n in (1, 4):
            kw = dict(tol=10.0, n_iter_no_change=n, early_stopping=early_stopping,
                      random_state=0)
            ours = FastpropClassifier(**kw).fit(X, y)
            theirs = MLPClassifier(**kw).fit(X, y)
            assert ours.n_iter_ == theirs.n_iter_ == n + 2
            ours = FastpropRegressor(**kw).fit(X, X[:, 0])
            assert ours.n_iter_ == MLPRegressor(**kw).fit(X, X[:, 0]).n_iter_ == n + 2


def test_early_stopping(digits):
    X_train, X_test, y_train, y_test = digits
    X_train, X_test = X_train / 16.0, X_test / 16.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf = FastpropClassifier(hidden_layer_sizes=(32,), learning_rate_init=1e-2,
                                 early_stopping=True, max_iter=500, random_state=0)
        clf.fit(X_train, y_train)
    assert clf.n_iter_ < 100                     # well before max_iter
    assert len(clf.validation_scores_) == clf.n_iter_ == len(clf.loss_curve_)
    assert clf.best_validation_score_ == max(clf.validation_scores_) > 0.9
    assert clf.best_loss_ is None
    assert clf.t_ == clf.n_iter_ * (len(X_train) - int(np.ceil(0.1 * len(X_train))))
    assert clf.score(X_test, y_test) > 0.9
    # the weights of the best validation epoch are kept: the same as stopping there
    best = int(np.argmax(clf.validation_scores_)) + 1
    again = clone(clf).set_params(early_stopping=True, max_iter=best, n_iter_no_change=500)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        again.fit(X_train, y_train)
    np.testing.assert_array_equal(again.model_.params, clf.model_.params)


def test_max_iter_warns(blobs):
    X, y = blobs
    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
        small(max_iter=2).fit(X, y)


@no_convergence_warning
def test_dtypes(blobs):
    X, y = blobs
    clf = small(dtype="float64").fit(X, y)
    assert clf.model_.dtype == np.float64 and clf.model_.params.dtype == np.float64
    assert all(W.dtype == np.float64 for W in clf.coefs_)
    assert clf.predict_proba(X).dtype == np.float64
    clf = small().fit(X.astype(np.float32), y)
    assert clf.model_.params.dtype == np.float32        # float32 is the default
    reg = small(FastpropRegressor, dtype="float64").fit(X, X[:, 0])
    assert reg.model_.params.dtype == np.float64 and reg.predict(X).dtype == np.float64
    assert reg.predict(X.astype(np.float32)).dtype == np.float32
    # integer X is accepted
    assert small().fit(np.round(X * 10).astype(np.int64), y).predict(X[:3]).shape == (3,)


@pytest.mark.parametrize("cls", [FastpropClassifier, FastpropRegressor])
def test_sample_weight_equals_repetition_float32(cls):
    """Integer weights are repeated samples: float32 passes scikit-learn's check at float32
    tolerance (the check itself runs above in float64, at rtol=1e-7)."""
    rng = np.random.RandomState(42)
    X = rng.rand(15, 30)
    y = rng.randint(0, 3, size=15)
    sw = rng.randint(0, 5, size=15)
    kw = dict(hidden_layer_sizes=(8,), learning_rate_init=1e-2, max_iter=100, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        weighted = cls(**kw).fit(X, y, sample_weight=sw)
        repeated = cls(**kw).fit(X.repeat(sw, axis=0), y.repeat(sw))
    out = "predict_proba" if cls is FastpropClassifier else "predict"
    np.testing.assert_allclose(getattr(weighted, out)(X), getattr(repeated, out)(X),
                               rtol=1e-3, atol=1e-5)


@no_convergence_warning
@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd", "rmsprop", "adagrad", "SGD"])
def test_deprecated_optimizer_names(blobs, optimizer):
    """The former meaning of optimizer (a name) and of learning_rate (a number) still works,
    with a DeprecationWarning."""
    X, y = blobs
    with pytest.warns(DeprecationWarning, match="optimizer as a name"):
        clf = small(optimizer=optimizer, learning_rate_init=0.05, max_iter=5).fit(X, y)
    opt = clf.model_.optimizer
    assert type(opt) is fp.optim.OPTIMIZERS[optimizer.lower()] and opt.lr == 0.05
    with pytest.warns(DeprecationWarning, match="learning_rate as a number"):
        clf = small(learning_rate=0.03, max_iter=2).fit(X, y)
    assert clf.model_.optimizer.lr == 0.03


@no_convergence_warning
def test_optimizer_object_is_copied(blobs):
    X, y = blobs
    given = fp.optim.RMSprop(lr=0.01)
    clf = small(optimizer=given, max_iter=3).fit(X, y)
    assert type(clf.model_.optimizer) is fp.optim.RMSprop and clf.model_.optimizer is not given
    assert given.t == 0 and clf.model_.optimizer.t > 0 and clf.get_params()["optimizer"] is given


@no_convergence_warning
def test_alpha_is_scikit_learns_penalty_on_weights_only(blobs):
    X, y = blobs
    plain = small(max_iter=40, alpha=0.0).fit(X, y)
    decayed = small(max_iter=40, alpha=20.0).fit(X, y)
    norm = lambda est: np.sqrt(sum(float((W ** 2).sum()) for W in est.coefs_))
    assert norm(decayed) < 0.8 * norm(plain)
    # loss_ includes the penalty 0.5 * alpha * sum(W**2) / batch size, as scikit-learn's
    clf = small(max_iter=1, alpha=1.0, batch_size=240, shuffle=False).fit(X, y)
    before = small(max_iter=1, alpha=0.0, batch_size=240, shuffle=False).fit(X, y)
    assert clf.loss_ > before.loss_


@pytest.mark.parametrize("cls, ref_cls", [(FastpropClassifier, MLPClassifier),
                                           (FastpropRegressor, MLPRegressor)])
def test_every_mlp_parameter_with_its_default(cls, ref_cls):
    """Every constructor parameter of scikit-learn's MLP estimator, with the same default."""
    ours, ref = cls().get_params(), ref_cls().get_params()
    assert set(ref) <= set(ours), set(ref) - set(ours)
    for name, value in ref.items():
        assert ours[name] == value, name
    extra = {"dtype", "n_threads", "optimizer"} | ({"class_weight"} if cls is
                                                   FastpropClassifier else set())
    assert set(ours) - set(ref) == extra


def _sk_pair(cls, ref_cls, X, y, **kw):
    """The same network fitted by fastprop (float64) and by scikit-learn from the same
    initial weights: scikit-learn's warm start keeps the weights and makes a new optimizer,
    as ours does, so both continue from sklearn's first-epoch weights."""
    ref = ref_cls(max_iter=1, shuffle=False, random_state=0, **kw).fit(X, y)
    ours = cls(max_iter=1, shuffle=False, random_state=0, dtype="float64", **kw).fit(X, y)
    for W, b, W0, b0 in zip(ours.coefs_, ours.intercepts_, ref.coefs_, ref.intercepts_):
        W[...] = W0
        b[...] = b0
    ref.set_params(warm_start=True, max_iter=4).fit(X, y)
    ours.set_params(warm_start=True, max_iter=4).fit(X, y)
    return ours, ref


@no_convergence_warning
@pytest.mark.parametrize("kw", [
    dict(solver="adam", alpha=1e-3, learning_rate_init=1e-2),
    dict(solver="sgd", alpha=1e-3, learning_rate_init=0.05, momentum=0.9),
    dict(solver="sgd", learning_rate_init=0.05, momentum=0.5, nesterovs_momentum=False),
    dict(solver="sgd", learning_rate="invscaling", learning_rate_init=0.1, power_t=0.3),
    dict(solver="adam", beta_1=0.8, beta_2=0.99, epsilon=1e-3, batch_size=50),
    dict(solver="sgd", learning_rate="adaptive", learning_rate_init=0.1, tol=10.0,
         n_iter_no_change=1, momentum=0.9),
    dict(solver="lbfgs", alpha=1e-2, max_fun=40),
], ids=["adam", "sgd-nesterov", "sgd-momentum", "sgd-invscaling", "adam-betas",
        "sgd-adaptive", "lbfgs"])
def test_same_updates_as_scikit_learn(blobs, kw):
    """Every update rule, penalty and schedule is scikit-learn's: from the same weights on
    the same batches, float64 parameters and losses agree with MLPClassifier /
    MLPRegressor's."""
    X, y = blobs
    ours, ref = _sk_pair(FastpropClassifier, MLPClassifier, X, y, hidden_layer_sizes=(6,),
                         activation="tanh", **kw)
    for W, W0 in zip(ours.coefs_ + ours.intercepts_, ref.coefs_ + ref.intercepts_):
        np.testing.assert_allclose(W, W0, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ours.loss_, ref.loss_, rtol=1e-6)
    assert ours.n_iter_ == ref.n_iter_
    if kw["solver"] != "lbfgs":
        # (the first epoch ran from each library's own initial weights)
        np.testing.assert_allclose(ours.loss_curve_[1:], ref.loss_curve_[1:], rtol=1e-6)
        assert ours.t_ == ref.t_
    Y = np.c_[X[:, 0] + X[:, 1], X[:, 2] * X[:, 3]]
    ours, ref = _sk_pair(FastpropRegressor, MLPRegressor, X, Y, hidden_layer_sizes=(6,),
                         activation="tanh", **kw)
    for W, W0 in zip(ours.coefs_ + ours.intercepts_, ref.coefs_ + ref.intercepts_):
        np.testing.assert_allclose(W, W0, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ours.loss_, ref.loss_, rtol=1e-6)


@no_convergence_warning
@pytest.mark.parametrize("activation", ["relu", "logistic"])
def test_same_initial_weights_as_scikit_learn(blobs, activation):
    """The same random_state draws the same initial weights as MLPClassifier (so that one
    epoch without shuffling gives the same float64 network)."""
    X, y = blobs
    kw = dict(hidden_layer_sizes=(7, 5), activation=activation, max_iter=1, shuffle=False,
              random_state=3, solver="sgd")
    ours = FastpropClassifier(dtype="float64", **kw).fit(X, y)
    ref = MLPClassifier(**kw).fit(X, y)
    for W, W0 in zip(ours.coefs_ + ours.intercepts_, ref.coefs_ + ref.intercepts_):
        np.testing.assert_allclose(W, W0, rtol=1e-9, atol=1e-12)


@no_convergence_warning
def test_adaptive_learning_rate(blobs):
    """adaptive: the rate is divided by 5 each time the stopping rule fires, as in
    scikit-learn's SGD; training goes on until it is <= 1e-6."""
    X, y = blobs
    clf = small(solver="sgd", learning_rate="adaptive", learning_rate_init=0.1, tol=10.0,
                n_iter_no_change=1, max_iter=200).fit(X, y)
    ref = MLPClassifier(hidden_layer_sizes=(16,), solver="sgd", learning_rate="adaptive",
                        learning_rate_init=0.1, tol=10.0, n_iter_no_change=1, max_iter=200,
                        random_state=0).fit(X, y)
    assert clf.n_iter_ == ref.n_iter_            # the same count of rate divisions
    assert clf.model_.optimizer.lr <= 1e-6 < clf.model_.optimizer.lr * 5 + 1e-12


def test_lbfgs_solver_on_digits_matches_scikit_learn(digits):
    X_train, X_test, y_train, y_test = digits
    sc = StandardScaler().fit(X_train)
    X_train, X_test = sc.transform(X_train), sc.transform(X_test)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = FastpropClassifier(hidden_layer_sizes=(64,), solver="lbfgs", max_iter=150,
                                  random_state=0).fit(X_train, y_train)
        ref = MLPClassifier(hidden_layer_sizes=(64,), solver="lbfgs", max_iter=150,
                            random_state=0).fit(X_train, y_train)
    assert ours.score(X_test, y_test) > ref.score(X_test, y_test) - 0.01
    assert not hasattr(ours, "partial_fit") and 1 <= ours.n_iter_ <= 150
    assert not hasattr(ours, "loss_curve_") and np.isfinite(ours.loss_)
    assert ours.t_ == ref.t_ == 0 and not hasattr(ref, "loss_curve_")


@no_convergence_warning
def test_adam_on_digits_matches_scikit_learn_accuracy(digits):
    X_train, X_test, y_train, y_test = digits
    sc = StandardScaler().fit(X_train)
    X_train, X_test = sc.transform(X_train), sc.transform(X_test)
    ours = [FastpropClassifier(hidden_layer_sizes=(64,), random_state=s, max_iter=100)
            .fit(X_train, y_train).score(X_test, y_test) for s in range(2)]
    ref = [MLPClassifier(hidden_layer_sizes=(64,), random_state=s, max_iter=100)
           .fit(X_train, y_train).score(X_test, y_test) for s in range(2)]
    assert np.mean(ours) > np.mean(ref) - 0.01


@no_convergence_warning
@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_regression_r2_matches_scikit_learn(solver):
    from sklearn.datasets import make_friedman1
    X, y = make_friedman1(n_samples=1000, noise=0.5, random_state=0)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    sc = StandardScaler().fit(X_train)
    X_train, X_test = sc.transform(X_train), sc.transform(X_test)
    mu, sd = y_train.mean(), y_train.std()
    kw = dict(hidden_layer_sizes=(32,), solver=solver, max_iter=300)
    ours = np.mean([FastpropRegressor(random_state=s, **kw).fit(X_train, (y_train - mu) / sd)
                    .score(X_test, (y_test - mu) / sd) for s in range(2)])
    ref = np.mean([MLPRegressor(random_state=s, **kw).fit(X_train, (y_train - mu) / sd)
                   .score(X_test, (y_test - mu) / sd) for s in range(2)])
    assert ours > ref - 0.01


@no_convergence_warning
def test_multilabel(blobs):
    """An indicator matrix y: sigmoid outputs, binary cross-entropy, 0/1 predictions (as
    MLPClassifier)."""
    X, y = blobs
    Y = np.c_[y == 0, y == 1, X[:, 0] > 0].astype(int)
    clf = small(max_iter=200).fit(X, Y)
    assert clf.out_activation_ == "logistic" and clf.model_.loss == "binary_cross_entropy"
    np.testing.assert_array_equal(clf.classes_, [0, 1, 2])
    proba = clf.predict_proba(X)
    assert proba.shape == (240, 3) and ((proba >= 0) & (proba <= 1)).all()
    np.testing.assert_array_equal(clf.predict(X), (proba > 0.5).astype(int))
    ref = MLPClassifier(hidden_layer_sizes=(16,), learning_rate_init=1e-2, max_iter=200,
                        random_state=0).fit(X, Y)
    assert clf.score(X, Y) > ref.score(X, Y) - 0.05
    assert abs(clf.loss_ - ref.loss_) < 0.1    # both sum the binary losses over labels
    with pytest.raises(ValueError, match="class_weight is not supported for multi-label"):
        small(class_weight="balanced").fit(X, Y)


@no_convergence_warning
def test_class_weight_is_sample_weight(blobs):
    X, y = blobs
    kw = dict(max_iter=5, shuffle=False)
    a = small(class_weight={0: 3.0, 2: 0.5}, **kw).fit(X, y, sample_weight=np.full(240, 2.0))
    w = np.choose(y, [3.0, 1.0, 0.5]) * 2.0
    b = small(**kw).fit(X, y, sample_weight=w)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    c = small(class_weight="balanced", **kw).fit(X[:150], y[:150])
    from sklearn.utils.class_weight import compute_sample_weight
    d = small(**kw).fit(X[:150], y[:150],
                        sample_weight=compute_sample_weight("balanced", y[:150]))
    np.testing.assert_allclose(c.predict_proba(X), d.predict_proba(X), rtol=1e-5)


@no_convergence_warning
@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_failed_warm_start_fit_changes_nothing(blobs, solver):
    """A warm-start fit that fails (diverges here) leaves model_, its optimizer and learning
    rate, and every fitted attribute exactly as they were."""
    X, y = blobs
    clf = small(solver=solver, warm_start=True, max_iter=3).fit(X, y)
    model, params = clf.model_, clf.model_.params.copy()
    opt = model.optimizer
    opt_state = {k: v.copy() for k, v in opt.state.items()}
    before = {k: copy.deepcopy(v) for k, v in vars(clf).items() if k.endswith("_")}
    with pytest.raises(ValueError):
        clf.set_params(learning_rate_init=1e30).fit(X * (3e38 if solver == "lbfgs" else 1e30), y)
    assert clf.model_ is model and model.optimizer is opt
    np.testing.assert_array_equal(model.params, params)
    assert opt.lr == 1e-2 and all(np.array_equal(opt.state[k], v) for k, v in opt_state.items())
    after = {k: v for k, v in vars(clf).items() if k.endswith("_")}
    assert after.keys() == before.keys()
    for k, v in before.items():
        if k != "model_":
            assert repr(after[k]) == repr(v), k


def test_feature_names_like_scikit_learn():
    """fit on a DataFrame records feature_names_in_; predict on a DataFrame with the same
    names does not warn; the warnings otherwise are scikit-learn's own."""
    pd = pytest.importorskip("pandas")
    X, y = make_blobs(n_samples=60, n_features=3, random_state=0)
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    for est in (small(max_iter=3), MLPClassifier(hidden_layer_sizes=(4,), max_iter=3)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(df, y)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            est.predict(df)
            est.predict_proba(df.iloc[:5])
        with pytest.warns(UserWarning, match="does not have valid feature names"):
            est.predict(X)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X, y)
        with pytest.warns(UserWarning, match="fitted without feature names"):
            est.predict(df)


@no_convergence_warning
@pytest.mark.filterwarnings("ignore:Got `batch_size`:UserWarning")   # scikit-learn's clip
def test_architecture_parameters(blobs):
    X, y = blobs
    clf = small(hidden_layer_sizes=(), max_iter=5).fit(X, y)            # no hidden layer
    assert [(d.n_in, d.n_out) for d in clf.model_.layers] == [(5, 3)]
    clf = small(hidden_layer_sizes=7, activation="logistic", max_iter=5).fit(X, y)
    assert [d.activation for d in clf.model_.layers] == ["sigmoid", "softmax"]
    assert clf.model_.layers[0].n_out == 7
    clf = small(hidden_layer_sizes=np.array([6, 4]), activation="gelu", n_threads=1,
                max_iter=5, batch_size=1000).fit(X, y)
    assert [d.n_out for d in clf.model_.layers] == [6, 4, 3]
    assert clf.model_.n_threads == 1
    assert clf.n_layers_ == 4


@no_convergence_warning
def test_verbose(blobs, capsys):
    X, y = blobs
    small(verbose=1, max_iter=3).fit(X, y)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Iteration 1, loss = ") and len(lines) == 3
    small(verbose=1, max_iter=2, early_stopping=True).fit(X, y)
    assert "Validation score" in capsys.readouterr().out
    small(max_iter=2).fit(X, y)
    assert capsys.readouterr().out == ""


@no_convergence_warning
def test_feature_names():
    pd = pytest.importorskip("pandas")
    X, y = make_blobs(n_samples=60, n_features=3, random_state=0)
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    clf = small(max_iter=3).fit(df, y)
    np.testing.assert_array_equal(clf.feature_names_in_, ["a", "b", "c"])
    with pytest.warns(UserWarning, match="feature names"):
        clf.predict(X)
    clf.predict(df)


# -- regressor --------------------------------------------------------------------------------
def _linear(n=400, n_out=None, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5))
    W = rng.standard_normal((5, n_out or 1))
    Y = X @ W + 0.1 * rng.standard_normal((n, n_out or 1))
    return X, (Y[:, 0] if n_out is None else Y), W


def test_regressor_noisy_linear():
    X, y, _ = _linear()
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    reg = FastpropRegressor(hidden_layer_sizes=(32,), learning_rate_init=1e-2, random_state=0)
    reg.fit(X_train, y_train)
    assert reg.score(X_test, y_test) > 0.9
    pred = reg.predict(X_test)
    assert pred.shape == (len(X_test),) and pred.dtype == np.float64
    assert reg.n_outputs_ == 1 and reg.out_activation_ == "identity"
    assert not hasattr(reg, "predict_proba") and not hasattr(reg, "classes_")


@no_convergence_warning
def test_regressor_two_outputs():
    X, Y, _ = _linear(n_out=2)
    reg = FastpropRegressor(hidden_layer_sizes=(32,), learning_rate_init=1e-2, random_state=0)
    reg.fit(X[:300], Y[:300])
    assert reg.n_outputs_ == 2 and reg.predict(X[300:]).shape == (100, 2)
    assert reg.score(X[300:], Y[300:]) > 0.9
    # a column vector is raveled with a warning, as MLPRegressor does
    with pytest.warns(DataConversionWarning):
        reg.fit(X, Y[:, :1])
    assert reg.n_outputs_ == 1 and reg.predict(X).shape == (400,)


@no_convergence_warning
def test_regressor_sample_weight_zero_is_removal():
    X, y, _ = _linear(n=60)
    sw = np.ones(60)
    sw[::3] = 0
    kw = dict(hidden_layer_sizes=(8,), max_iter=20, random_state=0, dtype="float64",
              shuffle=False)
    a = FastpropRegressor(**kw).fit(X, y, sample_weight=sw)
    b = FastpropRegressor(**kw).fit(X[sw > 0], y[sw > 0])
    np.testing.assert_allclose(a.predict(X), b.predict(X), rtol=1e-9, atol=1e-12)


@no_convergence_warning
def test_zero_weights_are_removed_samples():
    """Zero weights act as removed samples, even where a whole minibatch has zero weight
    (Sequential.fit itself turns such a batch into a NaN loss)."""
    X, y = _X(), _y()
    w = np.ones(20)
    w[:8] = 0
    kw = dict(hidden_layer_sizes=(4,), batch_size=4, shuffle=False, max_iter=5, random_state=0)
    clf = FastpropClassifier(**kw).fit(X, y, sample_weight=w)
    assert np.isfinite(clf.loss_curve_).all() and clf.t_ == 5 * 12
    np.testing.assert_array_equal(clf.classes_, [0, 1])
    ref = FastpropClassifier(**kw).fit(X[8:], y[8:])
    np.testing.assert_array_equal(clf.predict_proba(X), ref.predict_proba(X))


# -- bad input ----------------------------------------------------------------------------------
def _X():
    return np.random.default_rng(0).standard_normal((20, 3))


def _y():
    return np.arange(20) % 2


BAD_FIT = [
    # (parameters, X, y, exception, pattern naming the argument)
    ({}, np.where(np.eye(20, 3) > 0, np.nan, _X()), _y(), ValueError, r"\bX\b.*NaN"),
    ({}, np.where(np.eye(20, 3) > 0, np.inf, _X()), _y(), ValueError, r"\bX\b.*infinity"),
    ({}, _X().reshape(20, 3, 1), _y(), ValueError, r"^X: .*dim 3"),
    ({}, np.full((20, 3), "a"), _y(), ValueError, r"^X: .*string"),
    ({}, _X()[:, 0], _y(), ValueError, r"(?s)^X: .*Reshape your data"),
    ({}, np.zeros((0, 3)), [], ValueError, r"^X: .*0 sample"),
    ({}, _X() + 1j, _y(), ValueError, r"^X: .*[Cc]omplex"),
    ({}, _X(), None, ValueError, r"requires y to be passed"),
    ({}, _X(), np.c_[_y(), np.arange(20) % 3], ValueError, r"^y must be 1-D"),
    ({}, _X(), _X()[:, 0], ValueError, r"^y: Unknown label type"),
    ({}, _X(), _y()[:-1], ValueError, r"^y has 19 labels but X has 20"),
    ({"hidden_layer_sizes": (8, 0)}, _X(), _y(), ValueError,
     r"hidden_layer_sizes\[1\] must be >= 1, got 0"),
    ({"hidden_layer_sizes": (-3,)}, _X(), _y(), ValueError, r"hidden_layer_sizes\[0\]"),
    ({"hidden_layer_sizes": "8"}, _X(), _y(), TypeError, r"hidden_layer_sizes"),
    ({"hidden_layer_sizes": (4.5,)}, _X(), _y(), TypeError, r"hidden_layer_sizes\[0\]"),
    ({"activation": "bogus"}, _X(), _y(), ValueError, r"activation must be one of"),
    ({"activation": "softmax"}, _X(), _y(), ValueError, r"activation='softmax'"),
    ({"activation": None}, _X(), _y(), TypeError, r"activation must be a string"),
    ({"optimizer": "lbfgs"}, _X(), _y(), ValueError, r"optimizer must be a fastprop"),
    ({"optimizer": 3}, _X(), _y(), TypeError, r"optimizer must be None or a fastprop"),
    ({"optimizer": fp.optim.Adam(), "solver": "lbfgs"}, _X(), _y(), ValueError,
     r"optimizer is for the stochastic solvers"),
    ({"solver": "newton"}, _X(), _y(), ValueError, r"solver must be one of"),
    ({"learning_rate": "fast"}, _X(), _y(), ValueError, r"learning_rate must be one of"),
    ({"learning_rate_init": 0.0}, _X(), _y(), ValueError, r"learning_rate_init must be > 0"),
    ({"momentum": 1.5}, _X(), _y(), ValueError, r"momentum must be <= 1"),
    ({"nesterovs_momentum": "no"}, _X(), _y(), TypeError, r"nesterovs_momentum"),
    ({"beta_1": 1.0}, _X(), _y(), ValueError, r"beta_1 must be < 1"),
    ({"beta_2": -0.1}, _X(), _y(), ValueError, r"beta_2 must be >= 0"),
    ({"epsilon": 0.0}, _X(), _y(), ValueError, r"epsilon must be > 0"),
    ({"power_t": "x"}, _X(), _y(), TypeError, r"power_t"),
    ({"max_fun": 0}, _X(), _y(), ValueError, r"max_fun must be >= 1"),
    ({"class_weight": "even"}, _X(), _y(), ValueError, r"class_weight must be a dict"),
    ({"class_weight": {7: 2.0}}, _X(), _y(), ValueError, r"class_weight has labels"),
    ({"batch_size": 0}, _X(), _y(), ValueError, r"batch_size must be >= 1"),
    ({"batch_size": "big"}, _X(), _y(), ValueError, r"batch_size must be 'auto'"),
    ({"max_iter": 0}, _X(), _y(), ValueError, r"max_iter must be >= 1"),
    ({"learning_rate": 0.0}, _X(), _y(), ValueError, r"learning_rate must be > 0"),
    ({"alpha": -1.0}, _X(), _y(), ValueError, r"alpha must be >= 0"),
    ({"tol": -1.0}, _X(), _y(), ValueError, r"tol must be >= 0"),
    ({"n_iter_no_change": 0}, _X(), _y(), ValueError, r"n_iter_no_change must be >= 1"),
    ({"validation_fraction": 1.0}, _X(), _y(), ValueError, r"validation_fraction must be < 1"),
    ({"dtype": "float16"}, _X(), _y(), ValueError, r"dtype must be 'float32' or 'float64'"),
    ({"n_threads": 0}, _X(), _y(), ValueError, r"n_threads must be >= 1"),
    ({"random_state": "seed"}, _X(), _y(), ValueError, r"random_state must be"),
    ({"shuffle": "yes"}, _X(), _y(), TypeError, r"shuffle must be True or False"),
    ({"verbose": -1}, _X(), _y(), ValueError, r"verbose must be >= 0"),
    ({"early_stopping": True}, _X()[:5], _y()[:5], ValueError, r"validation_fraction=0.1"),
]


@pytest.mark.filterwarnings("ignore:learning_rate as a number:DeprecationWarning")
@pytest.mark.parametrize("params, X, y, exc, pattern", BAD_FIT,
                         ids=[f"{i}-{p[-1][:30]}" for i, p in enumerate(BAD_FIT)])
def test_bad_fit_input(params, X, y, exc, pattern):
    clf = FastpropClassifier(**{"max_iter": 2, **params})
    with pytest.raises(exc, match=pattern):
        clf.fit(X, y)
    assert not hasattr(clf, "model_") and not hasattr(clf, "n_features_in_")
    for name, value in params.items():              # parameters stored unmodified
        assert clf.get_params()[name] is value


def test_bad_sample_weight():
    X, y = _X(), _y()
    for sw, pattern in [(np.zeros(20), r"sample_weight must contain at least one non-zero"),
                        (-np.ones(20), r"sample_weight must be >= 0"),
                        (np.ones(3), r"sample_weight must have shape \(20,\)"),
                        (np.ones((20, 2)), r"sample_weight must have shape \(20,\)"),
                        (np.full(20, np.nan), r"sample_weight contains NaN")]:
        with pytest.raises(ValueError, match=pattern):
            FastpropClassifier(max_iter=2).fit(X, y, sample_weight=sw)


@no_convergence_warning
def test_bad_predict_input():
    X, y = _X(), _y()
    clf = FastpropClassifier(hidden_layer_sizes=(4,), max_iter=2).fit(X, y)
    reg = FastpropRegressor(hidden_layer_sizes=(4,), max_iter=2).fit(X, X[:, 0])
    for est in (clf, reg):
        with pytest.raises(ValueError, match=r"X has 2 features, but \w+ is expecting 3"):
            est.predict(X[:, :2])
        with pytest.raises(ValueError, match=r"\bX\b.*NaN"):
            est.predict(np.full((2, 3), np.nan))
        with pytest.raises(ValueError, match=r"^X: .*dim 3"):
            est.predict(X[:, :, None])
        with pytest.raises(ValueError, match=r"^X: .*string"):
            est.predict([["a", "b", "c"]])
    with pytest.raises(ValueError, match=r"X has 2 features"):
        clf.predict_proba(X[:, :2])
    with pytest.raises(sklearn.exceptions.NotFittedError):
        FastpropRegressor().predict(X)


def test_sparse_input_is_rejected():
    sparse = pytest.importorskip("scipy.sparse")
    with pytest.raises(TypeError, match=r"Sparse data was passed for X"):
        FastpropClassifier(max_iter=2).fit(sparse.csr_matrix(_X()), _y())


def test_regressor_loss_parameter():
    X, y, _ = _linear(50)
    assert FastpropRegressor(max_iter=2).get_params()["loss"] == "squared_error"
    with pytest.raises(ValueError, match="loss must be 'squared_error'"):
        FastpropRegressor(loss="poisson", max_iter=2).fit(X, y)


def test_regressor_bad_y():
    X = _X()
    with pytest.raises(ValueError, match=r"^y: .*numeric"):
        FastpropRegressor(max_iter=2).fit(X, ["a"] * 20)
    with pytest.raises(ValueError, match=r"^y: .*dim 3"):
        FastpropRegressor(max_iter=2).fit(X, np.zeros((20, 2, 2)))
    with pytest.raises(ValueError, match=r"\by\b.*NaN"):
        FastpropRegressor(max_iter=2).fit(X, np.full(20, np.nan))
    with pytest.raises(ValueError, match=r"^y has 19 samples but X has 20"):
        FastpropRegressor(max_iter=2).fit(X, np.zeros(19))
