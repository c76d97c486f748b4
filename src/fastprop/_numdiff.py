"""Central differences for ``fastprop.gradcheck`` (of a model and of a layer alone)."""
import numpy as np

__all__ = ["block_error"]


def block_error(flat, grad, loss, eps, max_params, rng):
    """Relative error between ``grad`` and the central differences of ``loss()`` over the
    entries of the 1-D array ``flat`` (perturbed in place, restored), at most ``max_params``
    of them drawn by ``rng``: ``|g - g_fd| / max(|g| + |g_fd|, 1e-30)`` (2-norms)."""
    idx = np.arange(flat.size)
    if max_params is not None and idx.size > max_params:
        idx = rng.choice(idx, size=max_params, replace=False)
    num = np.empty(idx.size)
    for j, k in enumerate(idx):
        old = flat[k]
        flat[k] = old + eps
        lp = loss()
        flat[k] = old - eps
        lm = loss()
        flat[k] = old
        num[j] = (lp - lm) / (2 * eps)
    ana = grad[idx]
    return float(np.linalg.norm(ana - num) /
                 max(np.linalg.norm(ana) + np.linalg.norm(num), 1e-30))
