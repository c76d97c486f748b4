"""Adagrad (torch.optim.Adagrad)."""
from fastprop._core import _optim as _C
from fastprop.optim._base import Optimizer

__all__ = ['Adagrad']


class Adagrad(Optimizer):
    r"""Adagrad (torch.optim.Adagrad).

    With d = g + weight_decay * p and t the step number (from 1)::

        s = s + d**2                  (s starts at initial_accumulator_value)
        p = p - lr / (1 + (t - 1) * lr_decay) * d / (sqrt(s) + eps)

    Parameters
    ----------
    lr : float >= 0, default 1e-2
    lr_decay : float >= 0, default 0
    weight_decay : float >= 0, default 0
    initial_accumulator_value : float >= 0, default 0
    eps : float > 0, default 1e-10
    clip_norm : float > 0, optional
    schedule : Schedule, optional

    State: ``sum``.
    """

    kind = _C.KINDS["adagrad"]
    _hyper_names, state_names = _C.LAYOUT["adagrad"]
    _nonnegative = ("sum",)
    _keys = ("lr_decay", "weight_decay", "initial_accumulator_value", "eps")

    def __init__(self, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0,
                 eps=1e-10, *, clip_norm=None, schedule=None):
        super().__init__(lr, weight_decay, clip_norm, schedule)
        self.lr_decay = lr_decay
        self.initial_accumulator_value = initial_accumulator_value
        self.eps = eps

    def _hyper_values(self):
        return {"lr_decay": self.lr_decay,
                "initial_accumulator_value": self.initial_accumulator_value, "eps": self.eps}

    def _initial_value(self, name):
        return self.initial_accumulator_value
