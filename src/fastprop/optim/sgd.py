"""SGD with momentum (torch.optim.SGD)."""
from fastprop._core import _optim as _C
from fastprop.optim._base import Optimizer

__all__ = ['SGD']


class SGD(Optimizer):
    r"""Stochastic gradient descent with optional momentum (torch.optim.SGD).

    With d = g + weight_decay * p, each step::

        b = d                                    (first step)
        b = momentum * b + (1 - dampening) * d   (later steps)
        p = p - lr * (d + momentum * b)          (nesterov)
        p = p - lr * b                           (momentum, not nesterov)
        p = p - lr * d                           (momentum == 0)

    Parameters
    ----------
    lr : float >= 0, default 1e-3
    momentum : float >= 0, default 0
    dampening : float, default 0
    weight_decay : float >= 0, default 0
        L2 penalty added to the gradient.
    nesterov : bool, default False
        Needs momentum > 0 and dampening == 0.
    clip_norm : float > 0, optional
        Clip the global gradient norm to this value first (in place).
    schedule : Schedule, optional

    State: ``momentum_buffer`` (when momentum != 0).
    """

    kind = _C.KINDS["sgd"]
    _hyper_names, state_names = _C.LAYOUT["sgd"]
    _keys = ("momentum", "dampening", "weight_decay", "nesterov")

    def __init__(self, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
                 clip_norm=None, schedule=None):
        super().__init__(lr, weight_decay, clip_norm, schedule)
        self.momentum = momentum
        self.dampening = dampening
        self.nesterov = nesterov

    def _hyper_values(self):
        return {"momentum": self.momentum, "dampening": self.dampening,
                "nesterov": self.nesterov}
