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

The codes are the compiled core's (``_core/_loss.pyx``, from ``csrc/fp_loss.h``).
"""
import numpy as np

from fastprop import _validation as V
from fastprop._core import _loss as _closs
from fastprop.activations import ACTIVATIONS
from fastprop.activations import canonical_name as canonical_activation

#: name -> C code, read from the compiled core (``_core/_loss.pyx``, codes of csrc/fp_loss.h)
LOSSES = dict(_closs.LOSS_CODES)
ALIASES = {
    "mean_squared_error": "mse",
    "mean_absolute_error": "mae",
    "ce": "cross_entropy",
    "categorical_crossentropy": "cross_entropy",
    "sparse_categorical_crossentropy": "cross_entropy",   # integer labels: accepted as well
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
    "class_weight_vector",
    "class_indices",
    "error_sums",
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
    return V.as_native(values, np.int64)


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


def class_indices(loss, y_dense, labels, n_out, name="class_weight"):
    """The class of every sample for a single-label classification loss, as ``class_weight``
    reads it: the label (``cross_entropy``; the arg-max of probability rows), or target > 0.5
    (``binary_cross_entropy`` with one output). ``loss``, ``y_dense``, ``labels``, ``n_out``
    as for :func:`class_weight_vector`; ``name`` is the argument its error names.

    Returns
    -------
    n_classes : int
    classes : ndarray (n,) of int64, each in [0, n_classes)

    Raises
    ------
    ValueError
        A regression or multi-label loss.
    """
    if loss == "cross_entropy":
        return n_out, labels if labels is not None else np.argmax(y_dense, axis=1)
    if loss == "binary_cross_entropy" and n_out == 1:
        return 2, (y_dense[:, 0] > 0.5).astype(np.int64)
    raise ValueError(f"{name} needs a single-label classification loss (cross_entropy, "
                     f"or binary_cross_entropy with one output), not {loss!r} with "
                     f"{n_out} outputs")


def class_weight_vector(class_weight, loss, y_dense, labels, n_out, dtype, name="class_weight",
                        counts=None):
    """Per-sample weights ``class_weight[label of each sample]`` for a classification loss.

    Parameters
    ----------
    class_weight : dict of int to float, or "balanced"
        Weights of the classes: labels 0 .. n_out - 1 for ``cross_entropy`` (arg-max of
        probability rows), 0 / 1 for a one-output ``binary_cross_entropy`` (target > 0.5);
        labels not in the dict weigh 1. ``"balanced"``: ``n_samples / (n_classes *
        count(label))`` over the labels present, as scikit-learn's ``compute_class_weight``.
    loss : str
        Canonical loss name.
    y_dense : ndarray (n, n_out) or None
    labels : ndarray (n,) of int64 or None
        The targets as :func:`prepare_targets` gives them.
    n_out : int
        The model's output width.
    dtype : numpy dtype
    counts : ndarray (n_classes,) of int, optional
        The class counts ``"balanced"`` uses, in place of those of these samples (data-parallel
        training passes the counts of all ranks' samples, so that every rank weighs its
        samples as one process would weigh the union).

    Returns
    -------
    ndarray (n,) of ``dtype``

    Raises
    ------
    ValueError
        A regression or multi-label loss; a label outside the model's classes (named); a
        negative or non-finite weight.
    TypeError
        ``class_weight`` neither a dict nor "balanced", or a key not an integer.
    """
    n_classes, y = class_indices(loss, y_dense, labels, n_out, name)
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ValueError(f"{name} must be a dict or 'balanced', got {class_weight!r}")
        if counts is None:
            counts = np.bincount(y, minlength=n_classes)
        present = counts > 0
        table = np.ones(n_classes)
        table[present] = counts.sum() / (np.count_nonzero(present) * counts[present])
    elif isinstance(class_weight, dict):
        table = np.ones(n_classes)
        for key, value in class_weight.items():
            if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer)):
                raise TypeError(f"{name} keys must be integer labels, got {key!r}")
            if not 0 <= key < n_classes:
                raise ValueError(f"{name} names the label {key}, which is not a class of "
                                 f"this model (labels 0 .. {table.size - 1})")
            v = V.check_real(value, f"{name}[{key}]", low=0.0)
            table[key] = v
    else:
        raise TypeError(f"{name} must be a dict of label -> weight or 'balanced', got "
                        f"{type(class_weight).__name__}")
    return table[y].astype(dtype)


def error_sums(a, y_dense, labels):
    """The sums behind the ``mae`` / ``mse`` metrics of outputs ``a`` against the targets.

    Parameters
    ----------
    a : ndarray (n, n_out)
        Outputs.
    y_dense : ndarray (n, n_out) or None
    labels : ndarray (n,) of int64 or None
        The targets as :func:`prepare_targets` gives them (integer labels count as one-hot
        rows).

    Returns
    -------
    (float, float, int)
        ``sum |a - y|``, ``sum (a - y)^2`` (in float64) and the number of values ``n * n_out``.
    """
    if y_dense is None:
        y_dense = np.zeros_like(a)
        y_dense[np.arange(a.shape[0]), labels] = 1
    d = np.asarray(a, dtype=np.float64) - y_dense
    return float(np.abs(d).sum()), float(np.einsum("ij,ij->", d, d)), d.size
