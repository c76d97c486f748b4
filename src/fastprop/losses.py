"""Loss functions by name, and the one-time checks of targets and sample weights.

Definitions are PyTorch's with mean reduction, each fused with the output layer's activation:

========================  ==========  ====================================================
loss                      output      per element / per sample
========================  ==========  ====================================================
``mse``                   any         (a - y)^2
``mae``                   any         |a - y| (gradient sign(a - y), 0 at 0)
``huber``                 any         (a - y)^2 / 2 if |a - y| < 1 else |a - y| - 1/2
``cross_entropy``         softmax     -sum_j y_j log p_j = logsumexp(z) - z_y
``binary_cross_entropy``  sigmoid     max(z, 0) - y z + log1p(exp(-|z|))  (multi-label)
========================  ==========  ====================================================

The two classification losses are computed from the logits z, so they are finite for any finite
z, and their gradient with respect to z is fused: ``(p - y) / n`` for cross-entropy,
``(p - y) / (n k)`` for binary cross-entropy. With per-sample weights w the loss is
``sum_i w_i l_i / sum_i w_i``, where l_i is sample i's mean over its k outputs (its
cross-entropy for ``cross_entropy``); without weights that is the plain mean.

The codes match ``csrc/fp_loss.h``.
"""
import numpy as np

from fastprop import _validation as V
from fastprop.activations import ACTIVATIONS
from fastprop.activations import canonical_name as canonical_activation

LOSSES = {
    "mse": 0,
    "mae": 1,
    "huber": 2,
    "cross_entropy": 3,
    "binary_cross_entropy": 4,
}
ALIASES = {
    "mean_squared_error": "mse",
    "mean_absolute_error": "mae",
    "ce": "cross_entropy",
    "categorical_crossentropy": "cross_entropy",
    "bce": "binary_cross_entropy",
    "binary_crossentropy": "binary_cross_entropy",
}
# the output activation a classification loss is fused with
REQUIRED_ACTIVATION = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid"}
# probability rows for cross_entropy must sum to 1 within this
ROW_SUM_TOL = 1e-3

__all__ = [
    "LOSSES",
    "ALIASES",
    "canonical_loss",
    "loss_code",
    "is_classification",
    "check_loss_activation",
    "prepare_targets",
    "prepare_sample_weight",
]


def canonical_loss(name):
    """Return the canonical loss name for ``name`` (aliases resolved, case-insensitive).

    Raises
    ------
    TypeError
        If ``name`` is not a string.
    ValueError
        If ``name`` is not a known loss.
    """
    if not isinstance(name, str):
        raise TypeError(f"loss must be a string, got {type(name).__name__}")
    key = ALIASES.get(name.lower(), name.lower())
    if key not in LOSSES:
        known = ", ".join(sorted(LOSSES) + sorted(ALIASES))
        raise ValueError(f"loss must be one of {known}; got {name!r}")
    return key


def loss_code(name):
    """The integer code the compiled core uses for loss ``name``."""
    return LOSSES[canonical_loss(name)]


def is_classification(loss):
    """Whether ``loss`` is a classification loss (``cross_entropy``, ``binary_cross_entropy``)."""
    return canonical_loss(loss) in REQUIRED_ACTIVATION


def check_loss_activation(loss, activation):
    """Check that ``loss`` can sit on an output layer with ``activation``; return their codes.

    ``cross_entropy`` needs ``softmax`` and ``binary_cross_entropy`` needs ``sigmoid`` (they are
    fused with it). The regression losses take any activation, ``softmax`` included.

    Returns
    -------
    (loss_code, activation_code) : tuple of int

    Raises
    ------
    ValueError
        Naming both when the pair does not fit, or when either name is unknown.
    """
    lname = canonical_loss(loss)
    aname = canonical_activation(activation)
    need = REQUIRED_ACTIVATION.get(lname)
    if need is not None and aname != need:
        raise ValueError(f"loss {lname!r} needs the output activation {need!r}, got "
                         f"activation {aname!r}; use activation={need!r} on the last layer")
    return LOSSES[lname], ACTIVATIONS[aname]


def _read(x, name):
    """np.asarray(x) with the errors of fastprop._validation (no copy, no cast)."""
    if isinstance(x, (str, bytes)):
        raise TypeError(f"{name} must be an array of real numbers, got {type(x).__name__}")
    V.refuse_masked_or_sparse(x, name)
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} could not be read as an array: {exc}") from None


def _labels(raw, checked, k, name):
    """Class indices as int64 from ``raw`` (1-D, numeric, finite: ``checked`` is its float64
    copy); each must be integral and in [0, k)."""
    if raw.dtype.kind == "f":
        frac = checked != np.floor(checked)
        if frac.any():
            i = int(np.argmax(frac))
            raise ValueError(f"{name} holds class labels for cross_entropy and must be integers; "
                             f"got {raw[i].item()!r} at index {i}")
        values = checked
    else:
        values = raw
    bad = (values < 0) | (values >= k)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name} holds class labels for cross_entropy and must lie in "
                         f"[0, {k - 1}] ({k} classes); got {raw[i].item()!r} at index {i}")
    return np.ascontiguousarray(values, dtype=np.int64)


def prepare_targets(loss, y, n, k, dtype, name="y"):
    """Validate targets ``y`` for ``loss`` once and convert them to what the core takes.

    Parameters
    ----------
    loss : str
        A loss name (aliases accepted).
    y : array_like
        The targets of n samples for an output of width k:

        - ``cross_entropy``: class labels, shape (n,) or (n, 1), integral values (``3.0`` is
          accepted, ``3.5`` is not) in [0, k); or probability rows (n, k), non-negative, each
          summing to 1 within ``ROW_SUM_TOL`` (1e-3), one-hot rows included. With k == 1 an
          (n, 1) array is read as probability rows (then every value must be 1).
        - ``binary_cross_entropy``: (n, k) values in [0, 1] (0/1 labels or probabilities,
          several ones per row for multi-label); (n,) when k == 1.
        - ``mse``, ``mae``, ``huber``: (n, k) finite values; (n,) when k == 1.
    n, k : int
        Batch size and output width.
    dtype : np.dtype
        The working dtype (float32 or float64).
    name : str
        The argument's name in error messages.

    Returns
    -------
    (y_dense, labels)
        Exactly one is not None: ``y_dense`` a C-contiguous (n, k) ``dtype`` array, or
        ``labels`` a C-contiguous (n,) int64 array (cross-entropy with class labels).

    Raises
    ------
    TypeError
        Complex, object, string, ... targets.
    ValueError
        Wrong shape or length, empty, NaN / inf, labels not integral or out of range,
        probability rows that are negative or do not sum to 1, BCE targets outside [0, 1].
    """
    lname = canonical_loss(loss)
    dtype = V.as_dtype(dtype)
    raw = _read(y, name)
    if raw.ndim not in (1, 2):
        raise ValueError(f"{name} must be 1-D (n_samples,) or 2-D (n_samples, {k}), got "
                         f"{raw.ndim} dimensions with shape {raw.shape}")
    if raw.shape[0] != n:
        raise ValueError(f"{name} has {raw.shape[0]} samples, expected {n} (one per input row)")

    if lname == "cross_entropy":
        as_labels = raw.ndim == 1 or (raw.shape[1] == 1 and k != 1)
        if as_labels:
            checked = V.as_array(raw.reshape(n), name, np.float64, ndim=1)
            return None, _labels(raw.reshape(n), checked, k, name)
        out = V.as_array(raw, name, dtype, ndim=2, width=k, width_name="one per class")
        if (out < 0).any():
            i, j = np.argwhere(out < 0)[0]
            raise ValueError(f"{name} holds probability rows for cross_entropy and must be "
                             f">= 0; got {out[i, j].item()!r} at ({i}, {j})")
        off = np.abs(out.sum(axis=1, dtype=np.float64) - 1) > ROW_SUM_TOL
        if off.any():
            i = int(np.argmax(off))
            raise ValueError(f"{name} holds probability rows for cross_entropy and each row "
                             f"must sum to 1 (within {ROW_SUM_TOL}); row {i} sums to "
                             f"{float(out[i].sum(dtype=np.float64))!r}")
        return out, None

    if raw.ndim == 1:
        if k != 1:
            raise ValueError(f"{name} must have shape (n_samples, {k}) for an output of width "
                             f"{k}, got shape {raw.shape}")
        raw = raw.reshape(n, 1)
    out = V.as_array(raw, name, dtype, ndim=2, width=k, width_name="the output width")
    if lname == "binary_cross_entropy":
        bad = (out < 0) | (out > 1)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise ValueError(f"{name} for binary_cross_entropy must lie in [0, 1]; got "
                             f"{out[i, j].item()!r} at ({i}, {j})")
    return out, None


def prepare_sample_weight(sample_weight, n, dtype, name="sample_weight"):
    """Validate per-sample weights once; return a C-contiguous (n,) ``dtype`` array or None.

    Weights must be a 1-D array of n finite values >= 0 with a positive sum (checked after the
    cast to ``dtype``). None means every sample counts the same.

    Raises
    ------
    TypeError
        Complex, object, string, ... weights.
    ValueError
        Wrong shape or length, NaN / inf, a negative weight, or weights summing to 0.
    """
    if sample_weight is None:
        return None
    dtype = V.as_dtype(dtype)
    raw = _read(sample_weight, name)
    if raw.ndim != 1:
        raise ValueError(f"{name} must be 1-D (n_samples,), got shape {raw.shape}")
    if raw.shape[0] != n:
        raise ValueError(f"{name} has {raw.shape[0]} values, expected {n} (one per sample)")
    out = V.as_array(raw, name, dtype, ndim=1)
    if (out < 0).any():
        i = int(np.argmax(out < 0))
        raise ValueError(f"{name} must be >= 0; got {out[i].item()!r} at index {i}")
    if not out.sum(dtype=np.float64) > 0:
        raise ValueError(f"{name} must have a positive sum (at least one weight > 0)")
    return out
