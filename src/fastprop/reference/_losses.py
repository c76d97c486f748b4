"""Reference losses in plain NumPy: the twin of fastprop._core._loss.

PyTorch's definitions with mean reduction; optional per-sample weights w give
``sum_i w_i l_i / sum_i w_i`` with l_i sample i's mean over its k outputs (its cross-entropy for
``cross_entropy``). Cross-entropy and binary cross-entropy are computed from the logits z and
their gradient with respect to z is the fused ``p - y`` form.
"""
import numpy as np

from fastprop.reference._dense import activation_backward

__all__ = ["loss_and_grad", "LOSS_NAMES"]

LOSS_NAMES = ("mse", "mae", "huber", "cross_entropy", "binary_cross_entropy")
HUBER_DELTA = 1.0


def loss_and_grad(loss, activation, z, a, y=None, labels=None, sample_weight=None):
    """Return ``(L, dz)``: the mean loss (a Python float) and dL/dz (z's shape and dtype).

    Parameters
    ----------
    loss : str
        ``mse``, ``mae``, ``huber``, ``cross_entropy`` or ``binary_cross_entropy``.
    activation : str
        The output layer's canonical activation name; ``softmax`` for ``cross_entropy``,
        ``sigmoid`` for ``binary_cross_entropy``.
    z, a : ndarray (n, k)
        Logits and ``a = g(z)``.
    y : ndarray (n, k), optional
        Dense targets (one-hot or probability rows for ``cross_entropy``).
    labels : ndarray (n,) of int, optional
        Class indices, ``cross_entropy`` only; give exactly one of ``y`` and ``labels``.
    sample_weight : ndarray (n,), optional
    """
    n, k = z.shape
    dt = z.dtype
    if labels is not None:
        y = np.zeros((n, k), dtype=dt)
        y[np.arange(n), labels] = 1
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    c = w / w.sum()  # each sample's share of the loss: 1 / n without weights

    if loss == "cross_entropy":
        if activation != "softmax":
            raise ValueError("cross_entropy needs the softmax activation")
        m = z.max(axis=1, keepdims=True)
        lse = m.astype(np.float64) + np.log(np.exp(z - m).sum(axis=1, keepdims=True,
                                                               dtype=np.float64))
        per_sample = (y * (lse - z)).sum(axis=1)                       # -sum_j y_j log p_j
        dz = c[:, None] * (a * y.sum(axis=1, keepdims=True) - y)       # (p - y) / n, one-hot
        return float(c @ per_sample), dz.astype(dt)

    if loss == "binary_cross_entropy":
        if activation != "sigmoid":
            raise ValueError("binary_cross_entropy needs the sigmoid activation")
        per_elem = (np.maximum(z, 0).astype(np.float64) - y.astype(np.float64) * z
                    + np.log1p(np.exp(-np.abs(z))))
        dz = c[:, None] / k * (a - y)                                  # (p - y) / (n k)
        return float(c @ per_elem.mean(axis=1)), dz.astype(dt)

    d = a - y
    if loss == "mse":
        per_elem, dl = d.astype(np.float64) ** 2, 2 * d
    elif loss == "mae":
        per_elem, dl = np.abs(d).astype(np.float64), np.sign(d)
    elif loss == "huber":
        ad = np.abs(d).astype(np.float64)
        per_elem = np.where(ad < HUBER_DELTA, 0.5 * ad ** 2, HUBER_DELTA * (ad - 0.5 * HUBER_DELTA))
        dl = np.clip(d, -HUBER_DELTA, HUBER_DELTA)
    else:
        raise ValueError(f"unknown loss {loss!r}")
    da = (c[:, None] / k * dl).astype(dt)
    return float(c @ per_elem.mean(axis=1)), activation_backward(activation, z, a, da)
