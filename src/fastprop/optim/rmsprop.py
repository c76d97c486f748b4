"""RMSprop (torch.optim.RMSprop)."""
from fastprop._core import _optim as _C
from fastprop.optim._base import Optimizer

__all__ = ['RMSprop']


class RMSprop(Optimizer):
    r"""RMSprop (torch.optim.RMSprop).

    With d = g + weight_decay * p::

        s = alpha * s + (1 - alpha) * d**2
        a = a + (1 - alpha) * (d - a)                     (centered: running mean of d)
        r = d / (sqrt(s - a**2 if centered else s) + eps)
        b = momentum * b + r;  p = p - lr * b             (momentum > 0)
        p = p - lr * r                                    (momentum == 0)

    Parameters
    ----------
    lr : float >= 0, default 1e-2
    alpha : float in [0, 1], default 0.99
        Smoothing constant (torch accepts any alpha >= 0; above 1 the mean of squares can turn
        negative, so it is rejected here).
    eps : float > 0, default 1e-8
    weight_decay : float >= 0, default 0
    momentum : float >= 0, default 0
    centered : bool, default False
    clip_norm : float > 0, optional
    schedule : Schedule, optional

    State: ``square_avg``, ``momentum_buffer`` (momentum > 0), ``grad_avg`` (centered).
    """

    kind = _C.KINDS["rmsprop"]
    _hyper_names, state_names = _C.LAYOUT["rmsprop"]
    _nonnegative = ("square_avg",)
    _keys = ("alpha", "eps", "weight_decay", "momentum", "centered")

    def __init__(self, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, *, clip_norm=None, schedule=None):
        super().__init__(lr, weight_decay, clip_norm, schedule)
        self.alpha = alpha
        self.eps = eps
        self.momentum = momentum
        self.centered = centered

    def _hyper_values(self):
        return {"alpha": self.alpha, "eps": self.eps, "momentum": self.momentum,
                "centered": self.centered}
