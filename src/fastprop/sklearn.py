"""scikit-learn estimators over fastprop: :class:`FastpropClassifier`, :class:`FastpropRegressor`.

Thin wrappers around :class:`fastprop.Sequential` with the parameters, fitted attributes and
stopping rule of scikit-learn's ``MLPClassifier`` / ``MLPRegressor``, so that they drop into a
``Pipeline``, ``GridSearchCV``, ``cross_val_score``, ``clone`` and pickle. Each ``fit`` is one
``Sequential.fit`` call: the minibatches run in the compiled engine, and the stopping rule is a
fastprop callback that runs once per epoch.

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
import numbers
import re
import warnings
from types import SimpleNamespace

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets, unique_labels
from sklearn.utils.validation import check_array, check_is_fitted, column_or_1d

try:                                            # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _sk_validate_data
    _HAS_TAGS = True
except ImportError:                             # pragma: no cover - older scikit-learn
    _HAS_TAGS = False

    def _sk_validate_data(estimator, X, **kwargs):
        return estimator._validate_data(X, **kwargs)

from fastprop import _validation as V
from fastprop.activations import canonical_name
from fastprop.callbacks import Callback
from fastprop.layers import Dense
from fastprop.model import Sequential
from fastprop.optim import OPTIMIZERS

__all__ = ["FastpropClassifier", "FastpropRegressor"]

_SEED_MAX = 2**31 - 1      # fastprop seeds are ints in [0, 2**31 - 1]
_HIDDEN_ACTIVATIONS = ("identity", "linear", "relu", "leaky_relu", "elu", "gelu", "sigmoid",
                       "logistic", "tanh", "softplus", "silu", "swish")


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


def _settings(est):
    """The constructor parameters, checked and normalized (scikit-learn convention: they are
    stored as given and validated here, at fit time). Errors name the parameter."""
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
    opt = est.optimizer
    if not isinstance(opt, str):
        raise TypeError(f"optimizer must be the name of a fastprop optimizer "
                        f"({', '.join(OPTIMIZERS)}), got {type(opt).__name__} {opt!r}")
    if opt.lower() not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {opt!r}")
    s.optimizer = opt.lower()
    s.learning_rate = V.check_real(est.learning_rate, "learning_rate", low=0.0, low_open=True)
    s.alpha = V.check_real(est.alpha, "alpha", low=0.0)
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
    s.tol = V.check_real(est.tol, "tol", low=0.0)
    s.n_iter_no_change = V.check_size(est.n_iter_no_change, "n_iter_no_change")
    s.early_stopping = V.check_bool(est.early_stopping, "early_stopping")
    s.validation_fraction = V.check_real(est.validation_fraction, "validation_fraction",
                                         low=0.0, low_open=True, high=1.0, high_open=True)
    s.dtype = V.as_dtype(est.dtype, "dtype")
    s.n_threads = None if est.n_threads is None else V.check_size(est.n_threads, "n_threads")
    verbose = est.verbose
    s.verbose = int(verbose) if isinstance(verbose, (bool, np.bool_)) else \
        V.check_size(verbose, "verbose", minimum=0)
    s.warm_start = V.check_bool(est.warm_start, "warm_start")
    return s


class _StopRule(Callback):
    """scikit-learn MLP's stopping rule, run by ``Sequential.fit`` once per epoch.

    Without a validation score: an epoch counts as "no improvement" when its training loss is
    above ``best_loss - tol`` (best_loss: the lowest so far); with one (early stopping): when
    the validation score is below ``best_score + tol``. Training stops once more than
    ``n_iter_no_change`` epochs in a row did not improve (``None``: never, for partial_fit),
    and at once if the loss is not finite. With a validation score the parameters of the best
    epoch are put back at the end, as scikit-learn does.
    """

    def __init__(self, tol, n_iter_no_change, verbose=0, score=None, first_iter=1):
        self.tol, self.n_iter_no_change, self.verbose = tol, n_iter_no_change, verbose
        self.score, self.first_iter = score, first_iter
        self.losses, self.scores = [], []
        self.best = np.inf if score is None else -np.inf
        self.count = 0
        self.best_params = None
        self.converged = False
        self.diverged = False

    def on_epoch_end(self, epoch, logs=None):
        model = self.model
        loss = float(logs["loss"])
        self.losses.append(loss)
        if self.verbose:
            print(f"Iteration {self.first_iter + epoch}, loss = {loss:.8f}", flush=True)
        if not np.isfinite(loss):
            self.diverged = True
            model.stop_training = True
            return
        if self.score is None:
            self.count = self.count + 1 if loss > self.best - self.tol else 0
            self.best = min(self.best, loss)
        else:
            score = self.score(model)
            self.scores.append(score)
            if self.verbose:
                print(f"Validation score: {score:f}", flush=True)
            self.count = self.count + 1 if score < self.best + self.tol else 0
            if score > self.best:
                self.best = score
                self.best_params = model.params.copy()
        if self.n_iter_no_change is not None and self.count > self.n_iter_no_change:
            self.converged = True
            model.stop_training = True
            if self.verbose:
                what = "Validation score" if self.score is not None else "Training loss"
                print(f"{what} did not improve more than tol={self.tol:f} for "
                      f"{self.n_iter_no_change} consecutive epochs. Stopping.", flush=True)

    def on_train_end(self, logs=None):
        if self.best_params is not None:
            self.model.params[...] = self.best_params


_PARAMETERS_DOC = """hidden_layer_sizes : int or tuple of int, default=(100,)
        Widths of the hidden layers, each >= 1; ``()`` for none (a linear model).
    activation : str, default="relu"
        Activation of the hidden layers: any fastprop hidden activation (``identity``
        (``linear``), ``relu``, ``leaky_relu``, ``elu``, ``gelu``, ``sigmoid`` (also
        scikit-learn's name ``logistic``), ``tanh``, ``softplus``, ``silu`` (``swish``)).
    optimizer : {"adam", "adamw", "sgd", "rmsprop", "adagrad"}, default="adam"
        A :mod:`fastprop.optim` optimizer with PyTorch's semantics and defaults (``sgd`` is
        plain SGD, without scikit-learn's momentum).
    learning_rate : float > 0, default=1e-3
        The optimizer's learning rate (scikit-learn's ``learning_rate_init``).
    alpha : float >= 0, default=0.0
        L2 penalty, passed to the optimizer as ``weight_decay``: ``alpha * w`` is added to the
        gradient of the mean loss of every parameter, biases included (decoupled decay for
        ``adamw``). scikit-learn's MLP adds ``alpha * w / batch_size`` to the weights only, so
        the same value regularizes more strongly here.
    batch_size : int >= 1 or "auto", default="auto"
        Minibatch size; "auto" is ``min(200, n_samples)``.
    max_iter : int >= 1, default=200
        Maximum number of epochs of one ``fit``.
    shuffle : bool, default=True
        Reshuffle the samples every epoch.
    random_state : int, RandomState instance or None, default=None
        Seeds the initial weights, the shuffling and the early-stopping split. An int gives
        the same model at every fit; a RandomState is drawn from (so successive fits differ).
    tol : float >= 0, default=1e-4
        Improvement of the training loss (or validation score) below which an epoch counts as
        no improvement.
    n_iter_no_change : int >= 1, default=10
        ``fit`` stops once more than this many epochs in a row brought no improvement of
        ``tol`` (scikit-learn's rule).
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data (stratified for the classifier
        when possible), stop on its score (accuracy or R^2) instead of the training loss, and
        keep the parameters of the best epoch.
    validation_fraction : float in (0, 1), default=0.1
        Used when ``early_stopping``; at least 2 samples must be held out.
    dtype : {"float32", "float64"}, default="float32"
        Dtype of the parameters and of the computation. Predictions come back in X's dtype
        as scikit-learn's estimators return them: float32 for float32 X, float64 otherwise.
    n_threads : int >= 1 or None, default=None
        BLAS threads of the model (:attr:`fastprop.Sequential.n_threads`); set 1 inside worker
        pools such as ``GridSearchCV(n_jobs=...)``.
    verbose : int, default=0
        > 0 prints the loss of every epoch.
    warm_start : bool, default=False
        A new ``fit`` continues from the fitted model (its weights and optimizer state)
        instead of starting over; the architecture, the number of features and the classes
        (or outputs) must not have changed. ``learning_rate`` and ``alpha`` may change."""

_ATTRIBUTES_DOC = """model_ : fastprop.Sequential
        The trained network.
    n_features_in_ : int
        Number of features seen in fit.
    feature_names_in_ : ndarray of str
        Feature names, when X was given as a DataFrame with string column names.
    n_iter_ : int
        Epochs run since the model was created (accumulated over warm-start fits and
        ``partial_fit`` calls; scikit-learn's MLP counts those of the last fit only).
    t_ : int
        Training samples seen (``n_samples * n_iter_``, as in scikit-learn).
    loss_ : float
        Training loss of the last epoch.
    loss_curve_ : list of float
        Training loss of every epoch: the mean of the batch losses, each measured before its
        update (fastprop's loss: cross-entropy, or ``mse`` = mean of squared errors over
        samples and outputs; the ``alpha`` penalty is not included).
    best_loss_ : float or None
        Lowest value of ``loss_curve_``; None with early stopping.
    validation_scores_ : list of float or None
        Validation score of every epoch with early stopping, None otherwise.
    best_validation_score_ : float or None
        Best of ``validation_scores_`` (None without early stopping).
    n_layers_ : int
        Number of layers, input and output included.
    out_activation_ : str
        Activation of the output layer."""


class _FastpropEstimator(BaseEstimator):
    """Shared parameters, fitting loop and prediction of the two estimators."""

    _loss = None
    _out_activation = None

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, optimizer="adam",
                 learning_rate=1e-3, alpha=0.0, batch_size="auto", max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, n_iter_no_change=10, early_stopping=False,
                 validation_fraction=0.1, dtype="float32", n_threads=None, verbose=0,
                 warm_start=False):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.alpha = alpha
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.dtype = dtype
        self.n_threads = n_threads
        self.verbose = verbose
        self.warm_start = warm_start

    # -- hooks of the subclasses -----------------------------------------------------------
    def _targets(self, y, n, warm, incremental, classes):
        """Validate y (against the fitted model when ``warm``). Returns (targets for the
        model, number of output units, labels to stratify the early-stopping split on or
        None, the target-side fitted attributes to set once training succeeded)."""
        raise NotImplementedError

    def _make_score(self, X_val, t_val, sw_val, dtype):
        raise NotImplementedError

    # -- fitting ---------------------------------------------------------------------------
    def __sklearn_is_fitted__(self):
        return hasattr(self, "model_")

    def _forget(self):
        for name in ("model_", "n_features_in_", "feature_names_in_", "classes_",
                     "n_outputs_", "n_iter_", "t_", "loss_", "loss_curve_", "best_loss_",
                     "validation_scores_", "best_validation_score_", "n_layers_",
                     "out_activation_"):
            self.__dict__.pop(name, None)

    def _build(self, s, n_in, n_out, rng):
        sizes = (n_in, *s.hidden_layer_sizes, n_out)
        seeds = rng.randint(_SEED_MAX, size=len(sizes))     # one per layer + the model's
        acts = [s.activation] * (len(sizes) - 2) + [self._out_activation]
        layers = [Dense(a, b, activation=act, dtype=s.dtype, seed=int(seed))
                  for a, b, act, seed in zip(sizes, sizes[1:], acts, seeds)]
        optimizer = OPTIMIZERS[s.optimizer](lr=s.learning_rate, weight_decay=s.alpha)
        return Sequential(layers, loss=self._loss, optimizer=optimizer, dtype=s.dtype,
                          seed=int(seeds[-1]), n_threads=s.n_threads)

    def _check_warm(self, s):
        """The fitted model, checked against the parameters (ValueError naming the first that
        changed); optimizer and threads updated to the parameters (state kept when the
        optimizer is the same)."""
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
        opt = model.optimizer
        if type(opt) is OPTIMIZERS[s.optimizer]:
            if opt.base_lr != s.learning_rate:
                opt.lr = s.learning_rate
            if opt.weight_decay != s.alpha:
                opt.weight_decay = s.alpha
        else:
            model.optimizer = OPTIMIZERS[s.optimizer](lr=s.learning_rate, weight_decay=s.alpha)
        model.n_threads = s.n_threads
        return model

    def _fit(self, X, y, sample_weight=None, incremental=False, classes=None):
        s = _settings(self)
        warm = hasattr(self, "model_") and (incremental or s.warm_start)
        if incremental and s.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True; set "
                             "early_stopping=False")
        if not warm:
            self._forget()      # a fresh fit that fails leaves the estimator unfitted
        if y is None:
            raise ValueError(f"This {type(self).__name__} estimator requires y to be passed, "
                             f"but the target y is None.")
        X = _validate_X(self, X, reset=not warm)
        n = X.shape[0]
        targets, n_out, stratify, fitted = self._targets(y, n, warm, incremental, classes)
        sw = _check_sample_weight(sample_weight, n)
        rng = s.random_state
        model = self._check_warm(s) if warm else self._build(s, X.shape[1], n_out, rng)
        if sw is not None:
            # A sample of weight 0 is a removed sample (scikit-learn's contract): removed
            # here already (Sequential.fit would leave it out too), so that the early-stopping
            # split and its stratification see only the samples that train.
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
        batch_size = min(200, n_train) if s.batch_size == "auto" else s.batch_size
        prior_iter = self.n_iter_ if warm else 0
        rule = _StopRule(s.tol, None if incremental else s.n_iter_no_change, s.verbose, score,
                         first_iter=prior_iter + 1)
        model.fit(X, targets, epochs=1 if incremental else s.max_iter, batch_size=batch_size,
                  shuffle=s.shuffle, sample_weight=sw, callbacks=[rule], verbose=0)
        if rule.diverged or not np.isfinite(model.params).all():
            raise ValueError("training diverged (the loss or the parameters became NaN or "
                             "infinite): lower learning_rate or scale X, e.g. with "
                             "sklearn.preprocessing.StandardScaler")

        epochs = len(rule.losses)
        self.__dict__.update(fitted)
        self.model_ = model
        self.n_iter_ = prior_iter + epochs
        self.t_ = (self.t_ if warm else 0) + n_train * epochs
        self.loss_curve_ = (self.loss_curve_ if warm else []) + rule.losses
        self.loss_ = self.loss_curve_[-1]
        if score is not None:
            scores = getattr(self, "validation_scores_", None) if warm else None
            self.validation_scores_ = (scores or []) + rule.scores
            self.best_validation_score_ = max(self.validation_scores_)
            self.best_loss_ = None
        else:
            self.validation_scores_ = None
            self.best_validation_score_ = None
            self.best_loss_ = min(self.loss_curve_)
        self.n_layers_ = len(model.layers) + 1
        self.out_activation_ = self._out_activation
        if not incremental and not rule.converged and epochs == s.max_iter:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({s.max_iter}) reached "
                          f"and the optimization hasn't converged yet.", ConvergenceWarning)
        return self

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
    a softmax output of one unit per class (two for binary problems), trained on the
    cross-entropy by minibatches. Parameters, fitted attributes and the stopping rule follow
    scikit-learn's ``MLPClassifier``.

    Parameters
    ----------
    {parameters}

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels (sorted), any hashable values: strings, ints, integral floats.
    n_outputs_ : int
        Number of output units (``len(classes_)``).
    {attributes}

    Notes
    -----
    Labels are encoded as in scikit-learn (``np.unique``); y must be 1-D (a column vector is
    raveled with a ``DataConversionWarning``); multi-label and multi-output targets are not
    supported, and continuous targets are rejected. A single class is accepted (then every
    prediction is that class). X must be dense: sparse matrices raise ``TypeError`` (densify
    them with ``.toarray()`` if they fit in memory).

    Examples
    --------
    >>> import numpy as np
    >>> from fastprop.sklearn import FastpropClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 4))
    >>> y = np.where(X[:, 0] + X[:, 1] > 0, "yes", "no")
    >>> clf = FastpropClassifier(hidden_layer_sizes=(16,), learning_rate=1e-2, batch_size=32,
    ...                          random_state=0)
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

    _loss = "cross_entropy"
    _out_activation = "softmax"

    def fit(self, X, y, sample_weight=None):
        """Fit the network to X and the class labels y.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Class labels.
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weights; the loss is ``sum(w_i l_i) / sum(w_i)``.

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight)

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
            if y.ndim != 1:
                raise ValueError(f"y must be 1-D class labels of shape (n_samples,), got shape "
                                 f"{y.shape}; multi-label and multi-output targets are not "
                                 f"supported")
            check_classification_targets(y)
        if y.shape[0] != n:
            raise ValueError(f"y has {y.shape[0]} labels but X has {n} samples; they must "
                             f"match")
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
        fitted = {} if warm else {"classes_": known, "n_outputs_": len(known)}
        return labels, len(known), labels, fitted

    def _make_score(self, X_val, labels_val, sw_val, dtype):
        X_val = np.ascontiguousarray(X_val, dtype=dtype)    # predict's fast path

        def accuracy(model):
            pred = np.argmax(model.predict(X_val), axis=1)
            return float(np.average(pred == labels_val, weights=sw_val))
        return accuracy

    def predict(self, X):
        """Class labels of X: ``classes_[argmax(predict_proba(X))]``, shape (n_samples,)."""
        proba = self._output(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def predict_proba(self, X):
        """Class probabilities of X, shape (n_samples, n_classes), rows summing to 1, columns
        in the order of ``classes_``; float32 for float32 X, float64 otherwise."""
        return self._output(X)

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`."""
        proba = self._output(X)
        with np.errstate(divide="ignore"):
            return np.log(proba, out=proba)


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
    an identity output of one unit per target, trained on the mean squared error by
    minibatches. Parameters, fitted attributes and the stopping rule follow scikit-learn's
    ``MLPRegressor``.

    Parameters
    ----------
    {parameters}

    Attributes
    ----------
    n_outputs_ : int
        Number of targets (columns of y; 1 for 1-D y).
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
    >>> reg = FastpropRegressor(hidden_layer_sizes=(32,), learning_rate=1e-2,
    ...                         random_state=0).fit(X, y)
    >>> reg.predict(X[:2]).shape
    (2,)
    >>> reg.score(X, y) > 0.95
    True
    """
    __doc__ = __doc__.format(parameters=_PARAMETERS_DOC, attributes=_ATTRIBUTES_DOC)

    _loss = "mse"
    _out_activation = "identity"

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
