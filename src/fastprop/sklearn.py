"""scikit-learn estimators over fastprop: :class:`FastpropClassifier`, :class:`FastpropRegressor`.

Drop-in replacements for scikit-learn's ``MLPClassifier`` / ``MLPRegressor`` over a
:class:`fastprop.Sequential`: the same parameters, initial weights, update rules (adam, sgd
with its schedules and momentum, lbfgs), L2 penalty, loss, stopping rule and fitted
attributes, so that they drop into a ``Pipeline``, ``GridSearchCV``, ``cross_val_score``,
``clone`` and pickle. The stochastic solvers run scikit-learn's epoch loop with one compiled
forward + backward (``Engine.train_step(update=False)``) and one compiled optimizer update per
minibatch; lbfgs is :class:`fastprop.optim.LBFGS`.

scikit-learn is an optional dependency: ``import fastprop`` never imports this module, and
importing it without scikit-learn raises ImportError.

Examples
--------
>>> from sklearn.model_selection import train_test_split
>>> from sklearn.pipeline import make_pipeline
>>> from sklearn.preprocessing import StandardScaler
>>> from fastprop.datasets import load_digits
>>> from fastprop.sklearn import FastpropClassifier
>>> X, y = load_digits()
>>> X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
>>> clf = make_pipeline(StandardScaler(),
...                     FastpropClassifier(hidden_layer_sizes=(64,), random_state=0))
>>> clf.fit(X_train, y_train).score(X_test, y_test) > 0.9
True
"""
try:
    import sklearn  # noqa: F401  (the optional dependency, checked first)
except ImportError as exc:   # pragma: no cover - exercised by a test that hides sklearn
    raise ImportError(
        "fastprop.sklearn needs scikit-learn, which is not installed: "
        "pip install scikit-learn (the rest of fastprop works without it)") from exc

import contextlib
import copy
import numbers
import re
import warnings
from types import SimpleNamespace

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import (check_classification_targets, type_of_target,
                                      unique_labels)
from sklearn.utils.validation import check_array, check_is_fitted, column_or_1d

try:                                            # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _sk_validate_data
    _HAS_TAGS = True
except ImportError:                             # pragma: no cover - older scikit-learn
    _HAS_TAGS = False

    def _sk_validate_data(estimator, X, **kwargs):
        return estimator._validate_data(X, **kwargs)

from fastprop import _validation as V
from fastprop._core import _optim as _optim_core
from fastprop.activations import ACTIVATIONS, ALIASES, canonical_name
from fastprop.layers import Dense
from fastprop.optim import LBFGS
from fastprop.model import Sequential
from fastprop.optim import OPTIMIZERS, SGD, Adam, Optimizer, optimizer_from_config

__all__ = ["FastpropClassifier", "FastpropRegressor"]

_SEED_MAX = 2**31 - 1      # fastprop seeds are ints in [0, 2**31 - 1]
# every activation but the output-only softmax, with the aliases and scikit-learn's "logistic"
_HIDDEN_ACTIVATIONS = tuple(sorted(
    {n for n in ACTIVATIONS if n != "softmax"} | {a for a, n in ALIASES.items() if a} | {"logistic"}))


# -- helpers ---------------------------------------------------------------------------------
@contextlib.contextmanager
def _naming(name):
    """Re-raise a plain ValueError / TypeError whose message does not name ``name`` with
    ``"name: "`` in front (scikit-learn's validation messages often say only "array")."""
    try:
        yield
    except (ValueError, TypeError) as exc:
        if type(exc) in (ValueError, TypeError) and not re.search(rf"\b{name}\b", str(exc)):
            raise type(exc)(f"{name}: {exc}") from exc
        raise


def _validate_X(estimator, X, reset):
    """X through scikit-learn's validation (dense, 2-D, finite, non-empty; n_features_in_ and
    feature_names_in_ set when ``reset``, checked otherwise): float32 stays float32, anything
    else becomes float64 (the model casts it to its own dtype)."""
    with _naming("X"):
        return _sk_validate_data(estimator, X, reset=reset, dtype=(np.float64, np.float32))


def _check_sample_weight(sample_weight, n):
    """Weights as a float64 (n,) array (None stays None): finite, >= 0, not all zero."""
    if sample_weight is None:
        return None
    with _naming("sample_weight"):
        sw = check_array(sample_weight, ensure_2d=False, dtype=np.float64,
                         input_name="sample_weight")
    if sw.ndim != 1 or sw.shape[0] != n:
        raise ValueError(f"sample_weight must have shape ({n},) (one weight per sample), got "
                         f"shape {sw.shape}")
    if (sw < 0).any():
        i = int(np.argmax(sw < 0))
        raise ValueError(f"sample_weight must be >= 0; got {float(sw[i])!r} at index {i}")
    if not sw.any():
        raise ValueError("sample_weight must contain at least one non-zero weight; all "
                         "weights are zero")
    return sw


_SOLVERS = ("adam", "sgd", "lbfgs")
_SCHEDULES = ("constant", "invscaling", "adaptive")


def _real(value, name, low=None, high=None, low_open=False, high_open=False):
    return V.check_real(value, name, low=low, high=high, low_open=low_open,
                        high_open=high_open)


def _settings(est):
    """The constructor parameters, checked and normalized (scikit-learn convention: they are
    stored as given and validated here, at fit time). Errors name the parameter; the
    deprecated fastprop meanings (``optimizer`` as a name, ``learning_rate`` as a number) warn
    here."""
    s = SimpleNamespace()
    h = est.hidden_layer_sizes
    if isinstance(h, (numbers.Integral, np.integer)) and not isinstance(h, (bool, np.bool_)):
        h = (h,)
    if isinstance(h, (str, bytes)) or not hasattr(h, "__iter__"):
        raise TypeError(f"hidden_layer_sizes must be an int or a sequence of ints such as "
                        f"(100,) or (64, 32), got {type(h).__name__} {h!r}")
    s.hidden_layer_sizes = tuple(V.check_size(v, f"hidden_layer_sizes[{i}]")
                                 for i, v in enumerate(h))
    act = est.activation
    if not isinstance(act, str):
        raise TypeError(f"activation must be a string, got {type(act).__name__} {act!r}")
    if act.lower() == "softmax":
        raise ValueError("activation='softmax' is for output layers only; choose a hidden "
                         "activation such as 'relu', 'tanh' or 'logistic'")
    try:
        s.activation = canonical_name("sigmoid" if act.lower() == "logistic" else act)
    except ValueError:
        raise ValueError(f"activation must be one of {', '.join(_HIDDEN_ACTIVATIONS)}; got "
                         f"{act!r}") from None
    solver = est.solver
    if not isinstance(solver, str) or solver not in _SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(_SOLVERS)}; got {solver!r}")
    s.solver = solver
    lr = est.learning_rate
    s.learning_rate_init = _real(est.learning_rate_init, "learning_rate_init", low=0.0,
                                 low_open=True)
    if isinstance(lr, (numbers.Real, np.number)) and not isinstance(lr, (bool, np.bool_)):
        warnings.warn("learning_rate as a number is deprecated: it is scikit-learn's schedule "
                      "name now ('constant', 'invscaling', 'adaptive'); pass the rate as "
                      "learning_rate_init", DeprecationWarning, stacklevel=4)
        s.learning_rate_init = _real(lr, "learning_rate", low=0.0, low_open=True)
        lr = "constant"
    if not isinstance(lr, str) or lr not in _SCHEDULES:
        raise ValueError(f"learning_rate must be one of {', '.join(_SCHEDULES)}; got {lr!r}")
    s.learning_rate = lr
    s.power_t = _real(est.power_t, "power_t")
    s.momentum = _real(est.momentum, "momentum", low=0.0, high=1.0)
    s.nesterovs_momentum = V.check_bool(est.nesterovs_momentum, "nesterovs_momentum")
    s.beta_1 = _real(est.beta_1, "beta_1", low=0.0, high=1.0, high_open=True)
    s.beta_2 = _real(est.beta_2, "beta_2", low=0.0, high=1.0, high_open=True)
    s.epsilon = _real(est.epsilon, "epsilon", low=0.0, low_open=True)
    s.max_fun = V.check_size(est.max_fun, "max_fun")
    opt = est.optimizer
    s.optimizer = None
    if isinstance(opt, str):
        if opt.lower() not in OPTIMIZERS:
            raise ValueError(f"optimizer must be a fastprop.optim optimizer object (or, "
                             f"deprecated, one of {', '.join(OPTIMIZERS)}); got {opt!r}")
        warnings.warn("optimizer as a name is deprecated: use solver='adam' / 'sgd' / "
                      "'lbfgs', or pass a fastprop.optim optimizer object",
                      DeprecationWarning, stacklevel=4)
        s.optimizer = OPTIMIZERS[opt.lower()](lr=s.learning_rate_init)
    elif isinstance(opt, Optimizer):
        s.optimizer = optimizer_from_config(opt.get_config())   # a copy: params stay as given
    elif opt is not None:
        raise TypeError(f"optimizer must be None or a fastprop.optim optimizer object, got "
                        f"{type(opt).__name__} {opt!r}")
    if s.optimizer is not None and s.solver == "lbfgs":
        raise ValueError("optimizer is for the stochastic solvers; it cannot be combined "
                         "with solver='lbfgs'")
    s.alpha = _real(est.alpha, "alpha", low=0.0)
    bs = est.batch_size
    if isinstance(bs, str):
        if bs != "auto":
            raise ValueError(f"batch_size must be 'auto' or an integer >= 1, got {bs!r}")
        s.batch_size = bs
    else:
        s.batch_size = V.check_size(bs, "batch_size")
    s.max_iter = V.check_size(est.max_iter, "max_iter")
    s.shuffle = V.check_bool(est.shuffle, "shuffle")
    try:
        s.random_state = check_random_state(est.random_state)
    except (ValueError, TypeError):
        raise ValueError(f"random_state must be None, an int in [0, 2**32 - 1] or a "
                         f"numpy.random.RandomState, got {est.random_state!r}") from None
    s.tol = _real(est.tol, "tol", low=0.0)
    s.n_iter_no_change = V.check_size(est.n_iter_no_change, "n_iter_no_change")
    s.early_stopping = V.check_bool(est.early_stopping, "early_stopping")
    s.validation_fraction = _real(est.validation_fraction, "validation_fraction",
                                  low=0.0, low_open=True, high=1.0, high_open=True)
    s.dtype = V.as_dtype(est.dtype, "dtype")
    s.n_threads = None if est.n_threads is None else V.check_size(est.n_threads, "n_threads")
    verbose = est.verbose
    s.verbose = int(verbose) if isinstance(verbose, (bool, np.bool_)) else \
        V.check_size(verbose, "verbose", minimum=0)
    s.warm_start = V.check_bool(est.warm_start, "warm_start")
    return s


def _merge_duplicates(X, targets, sw):
    """Identical samples (same row of X and same target) merged into one whose weight is the
    sum of theirs, rows in sorted order. For a full-batch gradient this changes nothing in
    exact arithmetic, and it makes the float32 result independent of repetition and order:
    integer sample weights and repeated samples give the same model bit for bit."""
    n, d = X.shape
    T = targets.reshape(n, -1)
    key = np.concatenate([X.astype(np.float64), T.astype(np.float64)], axis=1)
    uniq, inverse = np.unique(key, axis=0, return_inverse=True)
    weights = np.bincount(inverse.ravel(), weights=sw, minlength=uniq.shape[0])
    Xu = np.ascontiguousarray(uniq[:, :d], dtype=X.dtype)
    Tu = np.ascontiguousarray(uniq[:, d:], dtype=targets.dtype).reshape(
        (uniq.shape[0],) + targets.shape[1:])
    return Xu, Tu, weights


_PARAMETERS_DOC = """hidden_layer_sizes : int or tuple of int, default=(100,)
        Widths of the hidden layers, each >= 1; ``()`` for none (a linear model).
    activation : str, default="relu"
        Activation of the hidden layers: scikit-learn's ``identity``, ``logistic``, ``tanh``,
        ``relu``, or any other fastprop hidden activation (``leaky_relu``, ``elu``, ``gelu``,
        ``softplus``, ``silu``).
    solver : {"adam", "sgd", "lbfgs"}, default="adam"
        As in scikit-learn: Adam or SGD on minibatches, or full-batch L-BFGS-B
        (:class:`fastprop.optim.LBFGS`).
    alpha : float >= 0, default=0.0001
        scikit-learn's L2 penalty: ``0.5 * alpha * sum(W ** 2) / sum(batch weights)`` is added
        to every batch's loss (weight matrices only, not biases), and its gradient to the
        weights' gradient.
    batch_size : int >= 1 or "auto", default="auto"
        Minibatch size; "auto" is ``min(200, n_samples)``; larger than n_samples is clipped
        with a warning (scikit-learn's rule). Not used by lbfgs.
    learning_rate : {"constant", "invscaling", "adaptive"}, default="constant"
        scikit-learn's schedule for ``solver="sgd"`` (ignored by adam and lbfgs):
        ``invscaling`` sets the rate to ``learning_rate_init / (t_ + 1) ** power_t`` after
        every epoch (``t_``: samples seen); ``adaptive`` divides it by 5 whenever the
        stopping rule fires, and stops once it is <= 1e-6. (Deprecated: a number is taken as
        ``learning_rate_init``, the former fastprop meaning.)
    learning_rate_init : float > 0, default=0.001
        The initial learning rate (adam, sgd).
    power_t : float, default=0.5
        Exponent of ``invscaling``.
    max_iter : int >= 1, default=200
        Maximum number of epochs of one ``fit`` (lbfgs: iterations).
    shuffle : bool, default=True
        Reshuffle the samples every epoch (adam, sgd).
    random_state : int, RandomState instance or None, default=None
        Seeds the initial weights, the shuffling and the early-stopping split. An int gives
        the same model at every fit; a RandomState is drawn from (so successive fits differ).
    tol : float >= 0, default=1e-4
        Improvement of the training loss (or validation score) below which an epoch counts as
        no improvement; lbfgs: scipy's ``gtol``.
    verbose : bool or int, default=False
        Print the loss of every epoch (iteration).
    warm_start : bool, default=False
        A new ``fit`` starts from the fitted weights instead of new ones (with a new optimizer
        state, as scikit-learn does; ``partial_fit`` keeps the optimizer state). The
        architecture, the number of features and the classes (or outputs) must not have
        changed. A ``fit`` that fails leaves the fitted model exactly as it was.
    momentum : float in [0, 1], default=0.9
        Momentum of ``solver="sgd"`` (scikit-learn's velocity; a learning-rate change keeps
        the velocity, as scikit-learn's does).
    nesterovs_momentum : bool, default=True
        Nesterov's momentum for ``solver="sgd"`` when momentum > 0.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data (stratified for single-label
        classification when possible), stop on its score (accuracy or R^2) instead of the
        training loss, and keep the parameters of the best epoch.
    validation_fraction : float in (0, 1), default=0.1
        Used when ``early_stopping``; at least 2 samples must be held out.
    beta_1, beta_2 : float in [0, 1), default=0.9, 0.999
        Adam's moment decay rates.
    epsilon : float > 0, default=1e-8
        Adam's epsilon, where scikit-learn adds it: ``lr_t * m / (sqrt(v) + epsilon)`` with
        ``lr_t = learning_rate_init * sqrt(1 - beta_2**t) / (1 - beta_1**t)``.
    n_iter_no_change : int >= 1, default=10
        ``fit`` stops once more than this many epochs in a row brought no improvement of
        ``tol`` (scikit-learn's rule).
    max_fun : int >= 1, default=15000
        lbfgs: maximum number of loss evaluations.
    dtype : {"float32", "float64"}, default="float32"
        (fastprop) Dtype of the parameters and of the computation. Predictions come back in
        X's dtype as scikit-learn's estimators return them: float32 for float32 X, float64
        otherwise.
    n_threads : int >= 1 or None, default=None
        (fastprop) BLAS threads of the model (:attr:`fastprop.Sequential.n_threads`); set 1
        inside worker pools such as ``GridSearchCV(n_jobs=...)``.
    optimizer : fastprop.optim.Optimizer or None, default=None
        (fastprop) An optimizer object (``fp.optim.AdamW(lr=...)``, ``RMSprop``, ...) used
        instead of ``solver``'s update rule, with its own learning rate and schedule (a copy
        is trained; the object is not changed). (Deprecated: a name such as ``"rmsprop"`` is
        that optimizer with ``lr=learning_rate_init``.)"""

_ATTRIBUTES_DOC = """model_ : fastprop.Sequential
        The trained network.
    coefs_, intercepts_ : list of ndarray
        Weight matrices ``(n_in, n_out)`` and bias vectors of the layers (views into the
        model's parameters).
    n_features_in_ : int
        Number of features seen in fit.
    feature_names_in_ : ndarray of str
        Feature names, when X was given as a DataFrame with string column names.
    n_iter_ : int
        Epochs run by the last ``fit`` (1 after ``partial_fit``; lbfgs: iterations).
    t_ : int
        Training samples seen by the stochastic solvers, over warm starts and partial fits.
    loss_ : float
        scikit-learn's loss of the last epoch (lbfgs: at the solution), alpha penalty
        included: cross-entropy (binary cross-entropy summed over the labels of a multi-label
        problem) or half the squared error.
    loss_curve_ : list of float
        ``loss_`` of every epoch (stochastic solvers).
    best_loss_ : float or None
        Lowest value of ``loss_curve_``; None with early stopping.
    validation_scores_ : list of float or None
        Validation score of every epoch with early stopping, None otherwise.
    best_validation_score_ : float or None
        Best of ``validation_scores_`` (None without early stopping).
    n_layers_ : int
        Number of layers, input and output included.
    n_outputs_ : int
        Number of output units.
    out_activation_ : str
        Activation of the output layer (``softmax``, ``logistic`` or ``identity``)."""


class _FastpropEstimator(BaseEstimator):
    """Shared parameters, fitting loops and prediction of the two estimators."""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 dtype="float32", n_threads=None, optimizer=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.dtype = dtype
        self.n_threads = n_threads
        self.optimizer = optimizer

    # -- hooks of the subclasses -----------------------------------------------------------
    def _targets(self, y, n, warm, incremental, classes):
        """Validate y (against the fitted model when ``warm``). Returns (targets for the
        model, number of output units, labels to stratify the early-stopping split on or
        None, the target-side fitted attributes to set once training succeeded)."""
        raise NotImplementedError

    def _make_score(self, X_val, t_val, sw_val, dtype):
        raise NotImplementedError

    def _output_spec(self, fitted):
        """(loss, output activation, scikit-learn's loss scale, its gradient scale) for the
        model fitted with ``fitted`` attributes (scikit-learn's loss = scale * fastprop's)."""
        raise NotImplementedError

    def _class_weights(self, targets, fitted):
        return None

    # -- fitting ---------------------------------------------------------------------------
    def __sklearn_is_fitted__(self):
        return hasattr(self, "model_")

    def _forget(self):
        for name in ("model_", "n_features_in_", "feature_names_in_", "classes_",
                     "n_outputs_", "n_iter_", "t_", "loss_", "loss_curve_", "best_loss_",
                     "validation_scores_", "best_validation_score_", "n_layers_",
                     "out_activation_", "_no_improvement_count", "_multilabel"):
            self.__dict__.pop(name, None)

    def _new_optimizer(self, s):
        if s.optimizer is not None:
            return optimizer_from_config(s.optimizer.get_config())
        if s.solver == "sgd":
            return SGD(lr=s.learning_rate_init, momentum=s.momentum,
                       nesterov=s.nesterovs_momentum and s.momentum > 0)
        return Adam(lr=s.learning_rate_init, betas=(s.beta_1, s.beta_2), eps=s.epsilon)

    def _build(self, s, n_in, n_out, rng, loss, out_activation):
        """A new network initialized as scikit-learn's MLP: weights and biases uniform in
        +-sqrt(6 / (fan_in + fan_out)) (sqrt(2 / ...) for logistic hidden units), drawn from
        ``rng`` in the same order (so the same random_state gives the same initial
        weights)."""
        sizes = (n_in, *s.hidden_layer_sizes, n_out)
        factor = 2.0 if s.activation == "sigmoid" else 6.0
        init = []
        for fan_in, fan_out in zip(sizes, sizes[1:]):
            bound = np.sqrt(factor / (fan_in + fan_out))
            init.append((rng.uniform(-bound, bound, (fan_in, fan_out)),
                         rng.uniform(-bound, bound, fan_out)))
        seed = int(rng.randint(_SEED_MAX))       # dropout-free: seeds fit's shuffling only
        acts = [s.activation] * (len(sizes) - 2) + [out_activation]
        layers = [Dense(a, b, activation=act, init="zeros", dtype=s.dtype)
                  for a, b, act in zip(sizes, sizes[1:], acts)]
        model = Sequential(layers, loss=loss, optimizer=self._new_optimizer(s), dtype=s.dtype,
                           seed=seed, n_threads=s.n_threads)
        for layer, (W, b) in zip(model.layers, init):
            layer.W[...] = W
            layer.b[...] = b
        return model

    def _check_warm(self, s, incremental):
        """A copy of the fitted model to train (the fitted one stays as it is until training
        succeeded), checked against the parameters (ValueError naming the first that changed);
        a new optimizer for ``fit`` (scikit-learn's warm start), the state kept for
        ``partial_fit``."""
        model = self.model_
        hidden = tuple(layer.n_out for layer in model.layers[:-1])
        for name, now, then in (("hidden_layer_sizes", s.hidden_layer_sizes, hidden),
                                ("activation", s.activation,
                                 model.layers[0].activation if hidden else s.activation),
                                ("dtype", s.dtype, model.dtype)):
            if now != then:
                raise ValueError(f"warm_start / partial_fit cannot continue: the fitted model "
                                 f"has {name}={getattr(then, 'name', then)!r} but the "
                                 f"estimator now has {name}={getattr(now, 'name', now)!r}; "
                                 f"set warm_start=False (or use a new estimator) to start "
                                 f"over")
        model = copy.deepcopy(model)
        if not incremental:
            model.optimizer = self._new_optimizer(s)
        model.n_threads = s.n_threads
        return model

    def _fit(self, X, y, sample_weight=None, incremental=False, classes=None):
        s = _settings(self)
        warm = hasattr(self, "model_") and (incremental or s.warm_start)
        if incremental and s.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True; set "
                             "early_stopping=False")
        if incremental and s.solver == "lbfgs":
            raise ValueError("partial_fit is only available for the stochastic solvers "
                             "(solver='adam' or 'sgd'), not solver='lbfgs'")
        if not warm:
            self._forget()      # a fresh fit that fails leaves the estimator unfitted
        saved = dict(self.__dict__)
        try:
            return self._fit_checked(s, warm, X, y, sample_weight, incremental, classes)
        except BaseException:
            # nothing of a failed fit stays (n_features_in_ set by the validation, ...);
            # training ran on a copy of the fitted model, which is as it was
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise

    def _fit_checked(self, s, warm, X, y, sample_weight, incremental, classes):
        if y is None:
            raise ValueError(f"This {type(self).__name__} estimator requires y to be passed, "
                             f"but the target y is None.")
        X = _validate_X(self, X, reset=not warm)
        n = X.shape[0]
        targets, n_out, stratify, fitted = self._targets(y, n, warm, incremental, classes)
        sw = _check_sample_weight(sample_weight, n)
        cw = self._class_weights(targets if stratify is None else stratify, fitted)
        if cw is not None:
            sw = cw if sw is None else sw * cw
            if not sw.any():
                raise ValueError("sample_weight * class_weight is zero for every sample")
        rng = s.random_state
        spec = self._output_spec({**self.__dict__, **fitted})
        model = self._check_warm(s, incremental) if warm else \
            self._build(s, X.shape[1], n_out, rng, spec[0], spec[1])
        if sw is not None:
            # A sample of weight 0 is a removed sample (scikit-learn's contract), removed
            # before the early-stopping split and its stratification.
            keep = sw.astype(model.dtype) > 0
            if not keep.all():
                X, targets, sw = X[keep], targets[keep], sw[keep]
                stratify = None if stratify is None else stratify[keep]
        score = None
        if s.early_stopping and not incremental:
            X, targets, sw, X_val, t_val, sw_val = _split(
                X, targets, sw, s.validation_fraction, rng, stratify)
            score = self._make_score(X_val, t_val, sw_val, model.dtype)
        n_train = X.shape[0]
        if s.solver == "lbfgs":
            batch_size = n_train
        elif s.batch_size == "auto":
            batch_size = min(200, n_train)
        else:
            if s.batch_size > n_train:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is "
                              "going to be clipped")
            batch_size = min(s.batch_size, n_train)
        if batch_size == n_train and score is None:
            X, targets, sw = _merge_duplicates(X, targets, sw)
        state = {"n_iter": 0, "t": self.t_ if warm and hasattr(self, "t_") else 0,
                 "loss_curve": list(self.loss_curve_) if warm and
                 getattr(self, "loss_curve_", None) is not None else [],
                 "best_loss": (self.best_loss_ if warm and
                               getattr(self, "best_loss_", None) is not None else np.inf),
                 "count": getattr(self, "_no_improvement_count", 0) if warm else 0,
                 "scores": list(getattr(self, "validation_scores_", None) or [])
                 if warm else [],
                 "best_score": (getattr(self, "best_validation_score_", None) or -np.inf)
                 if warm else -np.inf}
        if s.solver == "lbfgs":
            self._run_lbfgs(model, s, X, targets, sw, spec, state)
        else:
            self._run_epochs(model, s, X, targets, sw, spec, state, batch_size, incremental,
                             score)
        if not np.isfinite(model.params).all():
            raise ValueError("training diverged (the loss or the parameters became NaN or "
                             "infinite): lower learning_rate_init or scale X, e.g. with "
                             "sklearn.preprocessing.StandardScaler")

        # success: only now does anything of the estimator change
        self.__dict__.update(fitted)
        self.model_ = model
        self.n_iter_ = state["n_iter"]
        self.loss_ = state["loss"]
        self.n_layers_ = len(model.layers) + 1
        self.out_activation_ = "logistic" if spec[1] == "sigmoid" else spec[1]
        self.t_ = state["t"]            # 0 after lbfgs, as scikit-learn's
        if s.solver != "lbfgs":
            self.loss_curve_ = state["loss_curve"]
            self._no_improvement_count = state["count"]
            if score is not None:
                self.validation_scores_ = state["scores"]
                self.best_validation_score_ = state["best_score"]
                self.best_loss_ = None
            else:
                self.validation_scores_ = None
                self.best_validation_score_ = None
                self.best_loss_ = state["best_loss"]
        return self

    def _run_lbfgs(self, model, s, X, targets, sw, spec, state):
        opt = LBFGS(max_iter=s.max_iter, max_fun=s.max_fun, tol=s.tol, alpha=s.alpha,
                    verbose=bool(s.verbose))
        opt._scale = spec[2:]
        res = opt.minimize(model, X, targets, sample_weight=sw)
        state["n_iter"] = int(res.nit)
        state["loss"] = float(res.fun)
        if res.status != 0:
            warnings.warn(f"lbfgs failed to converge after {res.nit} iteration(s) (status="
                          f"{res.status}): {res.message}. Increase the number of iterations "
                          f"(max_iter) or scale the data, e.g. with StandardScaler.",
                          ConvergenceWarning)

    def _run_epochs(self, model, s, X, targets, sw, spec, state, batch_size, incremental,
                    score):
        """scikit-learn's stochastic training loop (``_fit_stochastic``): per batch one
        compiled forward + backward (no update), scikit-learn's L2 penalty on the weight
        matrices, one optimizer update; per epoch its loss, stopping rule and learning-rate
        schedule."""
        Xm = model._X(X)
        y_dense, labels, w = model._targets(targets, Xm.shape[0], sw)
        n = Xm.shape[0]
        engine, opt = model._engine, model.optimizer
        params, grads = model.params, model.grads
        _, _, loss_scale, grad_scale = spec
        coef = [slice(wo, bo) for wo, bo in model._offsets]
        alpha = s.alpha
        own_rule = s.optimizer is None
        is_adam = own_rule and s.solver == "adam"
        schedule = s.learning_rate if own_rule and s.solver == "sgd" else "constant"
        one_batch = batch_size >= n
        best_params = None
        stop = False
        eps_at = opt._hyper_names.index("eps") if is_adam else None
        engine.ensure_capacity(batch_size)
        for epoch in range(1 if incremental else s.max_iter):
            opt.schedule_epoch(epoch)
            # the optimizer's compiled arguments, once per epoch (the rate changes between
            # epochs only); a private copy of the hyperparameters for Adam's per-step epsilon
            kind, hyper, state_ptrs = opt._engine_args(model.n_params, model.dtype)
            state_arrays = opt._state_arrays()
            hyper = hyper.copy()
            order = model._permutation(n) if s.shuffle and not one_batch else \
                np.arange(n, dtype=np.int64)
            total = 0.0
            for start in range(0, n, batch_size):
                idx = order[start:start + batch_size]
                bsum = float(idx.size if w is None else np.sum(w[idx], dtype=np.float64))
                t = opt.t + 1
                loss = engine.train_step(Xm, y_dense, labels, w, idx, kind, hyper, state_ptrs,
                                         t, False) * loss_scale
                if grad_scale != 1.0:
                    grads *= grad_scale
                if alpha:
                    with np.errstate(over="ignore"):   # diverged weights: caught below
                        for c in coef:
                            W = params[c]
                            loss += 0.5 * alpha * float(np.dot(W, W)) / bsum
                            grads[c] += (alpha / bsum) * W
                if is_adam:    # scikit-learn adds epsilon to sqrt(v), not to sqrt(v_hat)
                    hyper[eps_at] = s.epsilon / np.sqrt(1.0 - s.beta_2 ** t)
                # the update of Optimizer.step, without its per-call argument checks: the
                # arrays are the model's own, set up for it. A refused update (non-finite
                # gradients, or one that could overflow the parameters or the state) is a
                # diverged fit, as in scikit-learn: _fit raises and discards this copy.
                if not np.isfinite(loss) or not V.all_finite(grads) or \
                        not _optim_core.step(kind, hyper, params, grads, state_arrays, t):
                    state["loss"] = np.nan
                    params[...] = np.nan        # the copy is discarded by _fit
                    return
                opt.t = t
                total += loss * idx.size
            model._fwd = None
            state["n_iter"] += 1
            state["t"] += n
            epoch_loss = total / n
            state["loss"] = epoch_loss
            state["loss_curve"].append(epoch_loss)
            if s.verbose:
                print(f"Iteration {state['n_iter']}, loss = {epoch_loss:.8f}", flush=True)
            # scikit-learn's _update_no_improvement_count
            if score is not None:
                val = score(model)
                state["scores"].append(val)
                if s.verbose:
                    print(f"Validation score: {val:f}", flush=True)
                state["count"] = state["count"] + 1 if val < state["best_score"] + s.tol \
                    else 0
                if val > state["best_score"]:
                    state["best_score"] = val
                    best_params = params.copy()
            else:
                state["count"] = state["count"] + 1 \
                    if epoch_loss > state["best_loss"] - s.tol else 0
                state["best_loss"] = min(state["best_loss"], epoch_loss)
            if schedule == "invscaling":
                _set_lr(opt, s.learning_rate_init / (state["t"] + 1) ** s.power_t)
            if state["count"] > s.n_iter_no_change:
                what = "Validation score" if score is not None else "Training loss"
                msg = (f"{what} did not improve more than tol={s.tol:f} for "
                       f"{s.n_iter_no_change} consecutive epochs.")
                if schedule == "adaptive" and opt.lr > 1e-6:
                    _set_lr(opt, opt.lr / 5.0)
                    state["count"] = 0
                    if s.verbose:
                        print(f"{msg} Setting learning rate to {opt.lr:f}", flush=True)
                else:
                    if s.verbose:
                        print(f"{msg} Stopping.", flush=True)
                    stop = True
            if stop or incremental:
                break
            if state["n_iter"] == s.max_iter:
                warnings.warn(f"Stochastic Optimizer: Maximum iterations ({s.max_iter}) "
                              f"reached and the optimization hasn't converged yet.",
                              ConvergenceWarning)
        if best_params is not None:
            params[...] = best_params
        grads[...] = 0

    # -- prediction ------------------------------------------------------------------------
    def _output(self, X):
        """Network output for X, (n_samples, n_outputs), in X's floating dtype as scikit-learn
        returns it (float32 for float32 X, float64 otherwise), computed in the model's."""
        check_is_fitted(self)
        X = _validate_X(self, X, reset=False)
        return self.model_.predict(X).astype(X.dtype, copy=False)

    @property
    def coefs_(self):
        """Weight matrices of the layers, ``coefs_[i]`` of shape (n_in, n_out): views into
        the model's parameters (as scikit-learn's MLP names them)."""
        check_is_fitted(self)
        return [layer.W for layer in self.model_.layers]

    @property
    def intercepts_(self):
        """Bias vectors of the layers (views into the model's parameters)."""
        check_is_fitted(self)
        return [layer.b for layer in self.model_.layers]

    if not _HAS_TAGS:                                # pragma: no cover - older scikit-learn
        def _more_tags(self):
            return {"multioutput": isinstance(self, RegressorMixin)}


def _set_lr(opt, lr):
    """A new learning rate for SGD that keeps scikit-learn's velocity ``v = -lr * buf``
    (torch's momentum buffer is rescaled by old / new rate)."""
    old = opt.lr
    buf = opt.state.get("momentum_buffer")
    if buf is not None and lr > 0 and old != lr:
        buf *= old / lr
    opt.lr = lr


def _split(X, targets, sw, fraction, rng, stratify):
    """Training / validation split for early stopping (as scikit-learn's MLP: a shuffled
    ``train_test_split``, stratified by class when every class has enough samples)."""
    from sklearn.model_selection import train_test_split

    n = X.shape[0]
    n_val = int(np.ceil(fraction * n))
    if n_val < 2 or n - n_val < 1:
        raise ValueError(f"early_stopping with validation_fraction={fraction} holds out "
                         f"{n_val} of {n} samples; at least 2 validation samples and 1 "
                         f"training sample are needed: increase validation_fraction or "
                         f"pass more samples")
    arrays = [X, targets] + ([sw] if sw is not None else [])
    seed = rng.randint(_SEED_MAX)
    try:
        parts = train_test_split(*arrays, test_size=n_val, random_state=seed,
                                 stratify=stratify)
    except ValueError:      # a class too small to stratify on
        parts = train_test_split(*arrays, test_size=n_val, random_state=seed)
    X_tr, X_val, t_tr, t_val = parts[:4]
    sw_tr, sw_val = (parts[4], parts[5]) if sw is not None else (None, None)
    if sw_val is not None and not sw_val.any():
        sw_val = None
    return X_tr, t_tr, sw_tr, X_val, t_val, sw_val


class FastpropClassifier(ClassifierMixin, _FastpropEstimator):
    """Multi-layer perceptron classifier trained by fastprop, for scikit-learn pipelines.

    A :class:`fastprop.Sequential` of :class:`fastprop.Dense` layers: the hidden layers, then
    as in scikit-learn's ``MLPClassifier`` a softmax output of one unit per class trained on
    the cross-entropy, or for two classes and for multi-label problems (y an indicator matrix)
    sigmoid outputs (one per label; one for a binary problem) trained on the binary
    cross-entropy. Parameters, fitted attributes, solvers and stopping rule follow
    ``MLPClassifier``: it is a drop-in replacement.

    Parameters
    ----------
    {parameters}
    class_weight : dict, "balanced" or None, default=None
        (fastprop) Weights of the classes, ``{{label: weight}}`` (missing labels weigh 1) or
        "balanced" (``n_samples / (n_classes * bincount(y))``), multiplied into
        ``sample_weight``. Single-label y only.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels (sorted), any hashable values: strings, ints, integral floats;
        ``arange(n_labels)`` for a multi-label y.
    {attributes}

    Notes
    -----
    Labels are encoded as in scikit-learn (``np.unique``); y is 1-D (a column vector is
    raveled with a ``DataConversionWarning``) or a 0/1 indicator matrix (multi-label:
    :meth:`predict` returns the matrix of labels whose probability is > 0.5); multi-output
    multiclass and continuous targets are rejected. A single class is accepted (then every
    prediction is that class). X must be dense: sparse matrices raise ``TypeError`` (densify
    them with ``.toarray()`` if they fit in memory).

    Examples
    --------
    >>> import numpy as np
    >>> from fastprop.sklearn import FastpropClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 4))
    >>> y = np.where(X[:, 0] + X[:, 1] > 0, "yes", "no")
    >>> clf = FastpropClassifier(hidden_layer_sizes=(16,), learning_rate_init=1e-2,
    ...                          batch_size=32, random_state=0)
    >>> clf.fit(X, y).classes_
    array(['no', 'yes'], dtype='<U3')
    >>> clf.predict(X[4:6])
    array(['no', 'yes'], dtype='<U3')
    >>> clf.predict_proba(X[4:6]).shape      # columns in the order of classes_
    (2, 2)
    >>> clf.score(X, y) > 0.95
    True
    """
    __doc__ = __doc__.format(parameters=_PARAMETERS_DOC, attributes=_ATTRIBUTES_DOC)

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 dtype="float32", n_threads=None, optimizer=None, class_weight=None):
        super().__init__(
            hidden_layer_sizes, activation, solver=solver, alpha=alpha, batch_size=batch_size,
            learning_rate=learning_rate, learning_rate_init=learning_rate_init,
            power_t=power_t, max_iter=max_iter, shuffle=shuffle, random_state=random_state,
            tol=tol, verbose=verbose, warm_start=warm_start, momentum=momentum,
            nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
            validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
            epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun, dtype=dtype,
            n_threads=n_threads, optimizer=optimizer)
        self.class_weight = class_weight

    def _output_spec(self, fitted):
        if fitted.get("_multilabel") or fitted["n_outputs_"] == 1 and \
                len(fitted["classes_"]) == 2:
            # binary cross-entropy: scikit-learn sums it over the labels, fastprop averages
            k = float(fitted["n_outputs_"])
            return "binary_cross_entropy", "sigmoid", k, k
        return "cross_entropy", "softmax", 1.0, 1.0

    def _class_weights(self, labels, fitted):
        cw = self.class_weight
        if cw is None:
            return None
        if fitted.get("_multilabel", self.__dict__.get("_multilabel")):
            raise ValueError("class_weight is not supported for multi-label y")
        if not (isinstance(cw, dict) or cw == "balanced"):
            raise ValueError(f"class_weight must be a dict, 'balanced' or None, got {cw!r}")
        from sklearn.utils.class_weight import compute_class_weight
        classes = fitted.get("classes_", getattr(self, "classes_", None))
        labels = np.asarray(labels).reshape(-1).astype(np.int64)
        with _naming("class_weight"):
            if cw == "balanced":
                present = np.unique(labels)
                weights = np.ones(len(classes))
                weights[present] = compute_class_weight("balanced", classes=present,
                                                        y=labels)
            else:
                unknown = [k for k in cw if not np.isin(k, classes).any()]
                if unknown:
                    raise ValueError(f"class_weight has labels that are not classes: "
                                     f"{unknown!r}")
                weights = np.array([float(cw.get(c.item() if hasattr(c, "item") else c, 1.0))
                                    for c in classes])
                if not np.isfinite(weights).all() or (weights < 0).any():
                    raise ValueError("class_weight values must be finite and >= 0")
        return weights[labels]

    def fit(self, X, y, sample_weight=None):
        """Fit the network to X and the class labels y.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_labels)
            Class labels, or a 0/1 indicator matrix (multi-label).
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weights; the loss is ``sum(w_i l_i) / sum(w_i)``.

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight)

    @available_if(lambda est: est.solver in ("adam", "sgd"))
    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over (X, y), continuing from the fitted model if there is one.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        classes : array-like of shape (n_classes,), optional
            Every label that y can take over all calls (``np.unique(y_all)``). Required on
            the first call; later calls may omit it (or must repeat it unchanged).
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        self
        """
        if classes is None and not hasattr(self, "classes_"):
            raise ValueError("classes must be passed on the first call to partial_fit: every "
                             "label y can take over all calls, e.g. np.unique(y_all)")
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def _targets(self, y, n, warm, incremental, classes):
        with _naming("y"):
            y = check_array(y, ensure_2d=False, dtype=None, input_name="y")
            if y.ndim == 2 and y.shape[1] == 1:
                y = column_or_1d(y, warn=True)
            check_classification_targets(y)
            multilabel = y.ndim == 2 and type_of_target(y) == "multilabel-indicator"
            if y.ndim != 1 and not multilabel:
                raise ValueError(f"y must be 1-D class labels of shape (n_samples,) or a 0/1 "
                                 f"indicator matrix (multi-label), got shape {y.shape} of "
                                 f"type {type_of_target(y)!r}")
        if y.shape[0] != n:
            raise ValueError(f"y has {y.shape[0]} labels but X has {n} samples; they must "
                             f"match")
        if multilabel or (warm and self._multilabel):
            k = y.shape[1] if y.ndim == 2 else 0
            if warm and (not self._multilabel or k != self.n_outputs_):
                raise ValueError(f"warm_start / partial_fit cannot continue: the fitted model "
                                 f"has {'a multi-label' if self._multilabel else 'a 1-D'} y "
                                 f"of {self.n_outputs_} outputs, y now has shape {y.shape}")
            fitted = {} if warm else {"classes_": np.arange(k), "n_outputs_": k,
                                      "_multilabel": True}
            return np.ascontiguousarray(y, dtype=np.float64), k, None, fitted
        if warm:
            known = self.classes_
            if classes is not None and not (len(classes) == len(known) and
                                            np.array_equal(np.unique(classes), known)):
                raise ValueError(f"classes={np.asarray(classes)!r} is not the same as on the "
                                 f"first call to partial_fit ({known!r})")
            if not incremental:
                with _naming("y"):
                    seen = unique_labels(y)
                if len(seen) != len(known) or not np.array_equal(seen, known):
                    raise ValueError(f"warm_start can only continue with the classes of the "
                                     f"previous fit: classes_ is {known!r}, y has {seen!r}")
        else:
            with _naming("classes" if classes is not None else "y"):
                known = unique_labels(classes if classes is not None else y)
        labels = _encode(y, known)
        n_out = 1 if len(known) <= 2 else len(known)
        fitted = {} if warm else {"classes_": known, "n_outputs_": n_out,
                                  "_multilabel": False}
        if len(known) == 2:  # one sigmoid unit, as scikit-learn's binary MLPClassifier
            return labels.astype(np.float64).reshape(n, 1), 1, labels, fitted
        if len(known) == 1:  # a single class: one softmax unit, probability 1
            return np.ones((n, 1)), 1, labels, fitted
        return labels, n_out, labels, fitted

    def _make_score(self, X_val, t_val, sw_val, dtype):
        X_val = np.ascontiguousarray(X_val, dtype=dtype)    # predict's fast path

        def accuracy(model):
            out = model.predict(X_val)
            if out.shape[1] == 1 or t_val.ndim == 2:      # sigmoid outputs: threshold 0.5
                hit = ((out > 0.5) == (t_val.reshape(out.shape) > 0.5)).all(axis=1)
            else:
                hit = np.argmax(out, axis=1) == t_val
            return float(np.average(hit, weights=sw_val))
        return accuracy

    def predict(self, X):
        """Class labels of X, shape (n_samples,): ``classes_[argmax(predict_proba(X))]``;
        for a multi-label y the (n_samples, n_labels) 0/1 matrix of probabilities > 0.5."""
        out = self._output(X)
        if self._multilabel:
            return (out > 0.5).astype(int)
        if len(self.classes_) == 2:
            return self.classes_[(out[:, 0] > 0.5).astype(np.intp)]
        return self.classes_[np.argmax(out, axis=1)]

    def predict_proba(self, X):
        """Class probabilities of X, shape (n_samples, n_classes), columns in the order of
        ``classes_`` (rows summing to 1, but for a multi-label y: one probability per label);
        float32 for float32 X, float64 otherwise."""
        out = self._output(X)
        if len(self.classes_) == 2 and not self._multilabel:
            return np.concatenate([1 - out, out], axis=1)
        return out

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`."""
        proba = self.predict_proba(X)
        with np.errstate(divide="ignore"):
            return np.log(proba, out=proba)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


def _encode(y, classes):
    """Indices of the labels y in the sorted ``classes``; ValueError naming y for a label
    that is not a class."""
    try:
        idx = np.searchsorted(classes, y)
        ok = idx < len(classes)
        ok[ok] = classes[idx[ok]] == y[ok]
    except TypeError:       # labels of another type than the classes (str vs number)
        ok = np.zeros(len(y), dtype=bool)
        idx = None
    if not ok.all():
        bad = np.unique(np.asarray(y[~ok], dtype=object).astype(str))[:5]
        raise ValueError(f"y has labels that are not among the classes {classes!r}: "
                         f"{', '.join(bad)}")
    return idx.astype(np.int64)


class FastpropRegressor(RegressorMixin, _FastpropEstimator):
    """Multi-layer perceptron regressor trained by fastprop, for scikit-learn pipelines.

    A :class:`fastprop.Sequential` of :class:`fastprop.Dense` layers: the hidden layers, then
    an identity output of one unit per target, trained on the squared error. Parameters,
    fitted attributes, solvers and stopping rule follow scikit-learn's ``MLPRegressor``: it
    is a drop-in replacement.

    Parameters
    ----------
    loss : {{"squared_error"}}, default="squared_error"
        scikit-learn's loss name; its "poisson" is not available (ValueError).
    {parameters}

    Attributes
    ----------
    {attributes}

    Notes
    -----
    y may be 1-D (then :meth:`predict` returns 1-D) or 2-D (n_samples, n_outputs); a column
    vector is raveled with a ``DataConversionWarning``, as ``MLPRegressor`` does. As for any
    network, scaling X (and y of large magnitude) helps: use ``StandardScaler`` and
    ``TransformedTargetRegressor``. X must be dense: sparse matrices raise ``TypeError``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastprop.sklearn import FastpropRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((300, 3))
    >>> y = X @ np.array([1.0, -2.0, 0.5]) + 0.05 * rng.standard_normal(300)
    >>> reg = FastpropRegressor(hidden_layer_sizes=(32,), learning_rate_init=1e-2,
    ...                         random_state=0).fit(X, y)
    >>> reg.predict(X[:2]).shape
    (2,)
    >>> reg.score(X, y) > 0.95
    True
    """
    __doc__ = __doc__.format(parameters=_PARAMETERS_DOC, attributes=_ATTRIBUTES_DOC)

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 dtype="float32", n_threads=None, optimizer=None):
        super().__init__(
            hidden_layer_sizes, activation, solver=solver, alpha=alpha, batch_size=batch_size,
            learning_rate=learning_rate, learning_rate_init=learning_rate_init,
            power_t=power_t, max_iter=max_iter, shuffle=shuffle, random_state=random_state,
            tol=tol, verbose=verbose, warm_start=warm_start, momentum=momentum,
            nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
            validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
            epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun, dtype=dtype,
            n_threads=n_threads, optimizer=optimizer)
        self.loss = loss

    def _output_spec(self, fitted):
        if self.loss != "squared_error":
            raise ValueError(f"loss must be 'squared_error' (scikit-learn's 'poisson' is not "
                             f"available in fastprop), got {self.loss!r}")
        # scikit-learn: half the mean squared error, gradient (p - y) / n for every output;
        # fastprop's mse: the mean over samples and outputs, gradient 2 (p - y) / (n k)
        return "mse", "identity", 0.5, 0.5 * fitted["n_outputs_"]

    def fit(self, X, y, sample_weight=None):
        """Fit the network to X and the targets y.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weights; the loss is ``sum(w_i l_i) / sum(w_i)``.

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight)

    @available_if(lambda est: est.solver in ("adam", "sgd"))
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), continuing from the fitted model if there is one.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight, incremental=True)

    def _targets(self, y, n, warm, incremental, classes):
        with _naming("y"):
            y = check_array(y, ensure_2d=False, dtype="numeric", input_name="y")
            if y.ndim == 2 and y.shape[1] == 1:
                y = column_or_1d(y, warn=True)
        if y.shape[0] != n:
            raise ValueError(f"y has {y.shape[0]} samples but X has {n}; they must match")
        n_outputs = 1 if y.ndim == 1 else y.shape[1]
        if warm and n_outputs != self.n_outputs_:
            raise ValueError(f"warm_start / partial_fit cannot continue: y has {n_outputs} "
                             f"outputs but the fitted model has {self.n_outputs_}")
        fitted = {} if warm else {"n_outputs_": n_outputs}
        return y.reshape(n, n_outputs), n_outputs, None, fitted

    def _make_score(self, X_val, y_val, sw_val, dtype):
        from sklearn.metrics import r2_score
        X_val = np.ascontiguousarray(X_val, dtype=dtype)    # predict's fast path

        def r2(model):
            return float(r2_score(y_val, model.predict(X_val), sample_weight=sw_val))
        return r2

    def predict(self, X):
        """Predictions for X: shape (n_samples,) if y was 1-D, else (n_samples, n_outputs);
        float32 for float32 X, float64 otherwise."""
        out = self._output(X)
        return out.ravel() if self.n_outputs_ == 1 else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
