"""Full-batch training of a :class:`fastprop.Sequential` with L-BFGS-B: :class:`LBFGS`.

``scipy.optimize.minimize(method="L-BFGS-B")`` runs over the model's flat parameter buffer;
each evaluation of the loss and its gradient is one compiled call of the model's engine
(forward, loss, backward; no update). This is scikit-learn's ``solver="lbfgs"`` for
``MLPClassifier`` / ``MLPRegressor``, with the same ``max_iter``, ``max_fun`` and ``tol``, and
it is re-exported as ``fastprop.optim.LBFGS``.

Examples
--------
>>> import numpy as np, fastprop as fp
>>> rng = np.random.default_rng(0)
>>> X = rng.standard_normal((200, 3))
>>> y = X @ np.array([[1.0], [-2.0], [0.5]])
>>> model = fp.Sequential([fp.Dense(3, 8, activation="tanh", seed=0),
...                        fp.Dense(8, 1, seed=1)], dtype="float64")
>>> res = fp.optim.LBFGS(max_iter=300).minimize(model, X, y)
>>> bool(res.fun < 1e-3), res.nit <= 300
(True, True)
"""
import numbers

import numpy as np

__all__ = ["LBFGS"]


def _count(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral,
                                                                       np.integer)):
        raise TypeError(f"{name} must be an int >= 1, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value}")
    return int(value)


def _nonneg(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.number)):
        raise TypeError(f"{name} must be a real number >= 0, got {type(value).__name__} "
                        f"{value!r}")
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


class LBFGS:
    """L-BFGS-B over all parameters of a model, on the whole data set at once.

    Parameters
    ----------
    max_iter : int >= 1, default=200
        Maximum number of L-BFGS iterations (scipy's ``maxiter``).
    max_fun : int >= 1, default=15000
        Maximum number of loss evaluations (scipy's ``maxfun``; scipy checks it after each
        iteration, so the line search of the last one may add a few).
    tol : float >= 0, default=1e-4
        Stop when the largest projected gradient entry is below ``tol`` (scipy's ``gtol``, as
        scikit-learn passes its ``tol``).
    alpha : float >= 0, default=0.0
        scikit-learn's L2 penalty: ``0.5 * alpha * sum(W ** 2) / sum(sample_weight)`` (over the
        weight matrices only, not the biases; the sum of the weights is the number of samples
        when unweighted) is added to the loss, and its gradient to the weights' gradient.
    verbose : bool, default=False
        Print the loss after every iteration.

    Notes
    -----
    The loss is the model's own (:mod:`fastprop.losses`: the mean over samples, weighted by
    ``sample_weight``), computed at the model's dtype; scipy works in float64 and the
    parameters are cast to the model's dtype at every evaluation. Dropout is active during the
    evaluations as in training (it makes the objective random: use a model without dropout).
    """

    def __init__(self, max_iter=200, max_fun=15000, tol=1e-4, alpha=0.0, verbose=False):
        self.max_iter = _count(max_iter, "max_iter")
        self.max_fun = _count(max_fun, "max_fun")
        self.tol = _nonneg(tol, "tol")
        self.alpha = _nonneg(alpha, "alpha")
        if not isinstance(verbose, (bool, np.bool_, numbers.Integral)):
            raise TypeError(f"verbose must be a bool, got {type(verbose).__name__}")
        self.verbose = bool(verbose)
        # (loss_scale, grad_scale): the estimators use them to report and differentiate
        # scikit-learn's normalisation of the same loss (e.g. half the squared error)
        self._scale = (1.0, 1.0)

    def __repr__(self):
        return (f"LBFGS(max_iter={self.max_iter}, max_fun={self.max_fun}, tol={self.tol}, "
                f"alpha={self.alpha})")

    def objective(self, model, X, y, sample_weight=None):
        """The function that :meth:`minimize` hands to scipy.

        Parameters are those of :meth:`minimize` (checked the same way, before anything
        changes).

        Returns
        -------
        callable
            ``fun(theta) -> (loss, grad)``: ``theta`` (n_params,) float64 is written into
            ``model.params`` (cast to the model's dtype), then one compiled forward + loss +
            backward (no update) gives the loss and ``grad`` (n_params,) float64, the
            ``alpha`` penalty included. A loss or gradient that is not finite gives
            ``(inf, zeros)`` (scipy's line search then backs off).
        """
        # duck-typed: fastprop.model imports this module (through optim), not the reverse
        if not all(hasattr(model, a) for a in ("_engine", "_X", "_targets", "params")):
            raise TypeError(f"model must be a fastprop.Sequential, got {type(model).__name__}")
        X = model._X(X)
        y_dense, labels, w = model._targets(y, X.shape[0], sample_weight)
        if w is not None and not float(w.sum()) > 0:
            raise ValueError("sample_weight must contain at least one non-zero weight")
        sw_sum = float(X.shape[0] if w is None else np.sum(w, dtype=np.float64))
        coef = [slice(wo, bo) for wo, bo in model._offsets]
        loss_scale, grad_scale = self._scale
        alpha = self.alpha
        params, grads = model.params, model.grads
        kind, hyper, state = model._opt_args()
        engine = model._engine
        engine.ensure_capacity(X.shape[0])

        def fun(theta):
            params[...] = theta
            loss = engine.train_step(X, y_dense, labels, w, None, kind, hyper, state,
                                     model.optimizer.t + 1, False)
            g = grads.astype(np.float64)
            if grad_scale != 1.0:
                g *= grad_scale
            loss = loss * loss_scale
            if alpha:
                with np.errstate(over="ignore", invalid="ignore"):
                    for c in coef:
                        W = theta[c]
                        loss += 0.5 * alpha * float(W @ W) / sw_sum
                        g[c] += (alpha / sw_sum) * W
            if not np.isfinite(loss) or not np.isfinite(g).all():
                return np.inf, np.zeros_like(g)
            return loss, g
        return fun

    def minimize(self, model, X, y, sample_weight=None):
        """Minimize the model's loss on (X, y) over all its parameters, in place.

        Parameters
        ----------
        model : fastprop.Sequential
            Its parameters are the starting point and receive the result.
        X : array_like (n_samples, n_in)
        y : array_like
            Targets as for :meth:`fastprop.Sequential.train_step`.
        sample_weight : array_like (n_samples,), optional
            Non-negative weights, not all zero.

        Returns
        -------
        scipy.optimize.OptimizeResult
            ``x`` (float64, the final parameters), ``fun`` (the loss there, penalty
            included), ``nit``, ``nfev``, ``status``, ``message``, ``success``.

        Raises
        ------
        TypeError, ValueError
            Naming the argument, before any parameter changes. ``ValueError`` too when the
            loss stops being finite during the search (inputs too large, diverged weights):
            the parameters are then put back as they were.
        """
        from scipy.optimize import minimize

        fun = self.objective(model, X, y, sample_weight)
        params, grads, dtype = model.params, model.grads, model.dtype
        start = params.copy()
        with model._lock:
            model._fwd = None
            try:
                res = minimize(fun, start.astype(np.float64), method="L-BFGS-B", jac=True,
                               options={"maxiter": self.max_iter, "maxfun": self.max_fun,
                                        "gtol": self.tol},
                               callback=_progress() if self.verbose else None)
            except BaseException:
                params[...] = start
                raise
            x = res.x.astype(dtype)
            if not (np.isfinite(res.fun) and np.isfinite(x).all()):
                params[...] = start
                raise ValueError("L-BFGS: the loss or the parameters became NaN or infinite "
                                 "(inputs too large for the dtype?); the parameters were "
                                 "left as they were")
            params[...] = x
            grads[...] = 0
        return res


def _progress():
    """An L-BFGS-B callback printing the loss of every iteration."""
    it = [0]

    def callback(intermediate_result):
        it[0] += 1
        print(f"Iteration {it[0]}, loss = {intermediate_result.fun:.8f}", flush=True)
    return callback
