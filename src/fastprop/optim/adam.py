"""Adam and AdamW (torch.optim.Adam, torch.optim.AdamW)."""
from fastprop._core import _optim as _C
from fastprop.optim._base import Optimizer

__all__ = ['Adam', 'AdamW']


class Adam(Optimizer):
    r"""Adam (torch.optim.Adam), with L2 weight decay added to the gradient.

    With d = g + weight_decay * p and t the step number (from 1)::

        m = m + (1 - beta1) * (d - m)
        v = beta2 * v + (1 - beta2) * d**2
        v_max = max(v_max, v)                 (amsgrad; v_max replaces v below)
        p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    Parameters
    ----------
    lr : float >= 0, default 1e-3
    betas : (float, float) in [0, 1), default (0.9, 0.999)
    eps : float > 0, default 1e-8
    weight_decay : float >= 0, default 0
    amsgrad : bool, default False
    clip_norm : float > 0, optional
    schedule : Schedule, optional

    State: ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq`` (amsgrad).
    """

    kind = _C.KINDS["adam"]
    _hyper_names, state_names = _C.LAYOUT["adam"]
    _nonnegative = ("exp_avg_sq", "max_exp_avg_sq")
    _keys = ("betas", "eps", "weight_decay", "amsgrad")

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False,
                 *, clip_norm=None, schedule=None):
        super().__init__(lr, weight_decay, clip_norm, schedule)
        self.betas = betas
        self.eps = eps
        self.amsgrad = amsgrad

    def _hyper_values(self):
        return {"beta1": self.betas[0], "beta2": self.betas[1], "eps": self.eps,
                "amsgrad": self.amsgrad}


class AdamW(Adam):
    r"""AdamW (torch.optim.AdamW): Adam with decoupled weight decay.

    Each step first shrinks the parameters, ``p = p * (1 - lr * weight_decay)``, then applies
    the Adam update of :class:`Adam` with d = g (the gradient is not decayed).

    Parameters
    ----------
    lr : float >= 0, default 1e-3
    betas : (float, float) in [0, 1), default (0.9, 0.999)
    eps : float > 0, default 1e-8
    weight_decay : float >= 0, default 1e-2
    amsgrad : bool, default False
    clip_norm : float > 0, optional
    schedule : Schedule, optional

    State: ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq`` (amsgrad).
    """

    kind = _C.KINDS["adamw"]
    _hyper_names, state_names = _C.LAYOUT["adamw"]

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, clip_norm=None, schedule=None):
        super().__init__(lr, betas, eps, weight_decay, amsgrad, clip_norm=clip_norm,
                         schedule=schedule)
