"""Reference optimizers and learning-rate schedules in plain NumPy.

Each ``*_step`` function updates flat 1-D arrays in place, as torch.optim does for one tensor:
``params`` and ``grads`` have the same length and dtype, ``state`` is a dict of arrays of that
length and dtype keyed by torch's state names, ``t`` is the step number after increment
(1 on the first step). The math runs in float64 and each array is rounded once to its dtype
when stored, as in the compiled core. ``grads`` is changed only by ``clip_norm`` (clipped in
place, as ``torch.nn.utils.clip_grad_norm_``); weight decay never writes to it.
"""
import math

import numpy as np

__all__ = [
    "init_optimizer_state",
    "global_norm",
    "clip_grad_norm",
    "sgd_step",
    "adam_step",
    "adamw_step",
    "rmsprop_step",
    "adagrad_step",
    "step_lr",
    "exponential_lr",
    "cosine_annealing_lr",
]


def init_optimizer_state(name, n, dtype, momentum=0.0, amsgrad=False, centered=False,
                         initial_accumulator_value=0.0):
    """The zeroed state arrays optimizer ``name`` needs for ``n`` parameters.

    sgd: ``momentum_buffer`` (momentum != 0); adam, adamw: ``exp_avg``, ``exp_avg_sq``,
    ``max_exp_avg_sq`` (amsgrad); rmsprop: ``square_avg``, ``momentum_buffer`` (momentum > 0),
    ``grad_avg`` (centered); adagrad: ``sum`` filled with ``initial_accumulator_value``.
    """
    names = {
        "sgd": ["momentum_buffer"] if momentum != 0 else [],
        "adam": ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if amsgrad else []),
        "rmsprop": (["square_avg"] + (["momentum_buffer"] if momentum > 0 else [])
                    + (["grad_avg"] if centered else [])),
        "adagrad": ["sum"],
    }
    names["adamw"] = names["adam"]
    state = {key: np.zeros(n, dtype=dtype) for key in names[name]}
    if name == "adagrad":
        state["sum"][:] = initial_accumulator_value
    return state


def global_norm(grads):
    """The L2 norm of the whole flat gradient, accumulated in float64."""
    g = grads.astype(np.float64)
    return float(np.sqrt(np.dot(g, g)))


def clip_grad_norm(grads, clip_norm):
    """Scale ``grads`` in place by min(1, clip_norm / (norm + 1e-6)); return the norm before."""
    norm = global_norm(grads)
    coef = clip_norm / (norm + 1e-6)
    if coef < 1.0:
        grads[...] = grads.astype(np.float64) * coef
    return norm


def _prepare(params, grads, weight_decay, clip_norm):
    """Clip (in place) if asked; return float64 copies p and d = g + weight_decay * p."""
    if clip_norm is not None and clip_norm > 0:
        clip_grad_norm(grads, clip_norm)
    p = params.astype(np.float64)
    return p, grads.astype(np.float64) + weight_decay * p


def sgd_step(params, grads, state, t, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
             nesterov=False, clip_norm=None):
    """SGD with optional momentum, dampening, Nesterov and L2 weight decay::

        d = g + weight_decay * p
        b = d                                        on the first step (t == 1)
        b = momentum * b + (1 - dampening) * d       afterwards
        p = p - lr * (d + momentum * b  if nesterov else  b)      (momentum == 0: p - lr * d)
    """
    p, d = _prepare(params, grads, weight_decay, clip_norm)
    if momentum != 0:
        if t == 1:
            b = d
        else:
            b = momentum * state["momentum_buffer"].astype(np.float64) + (1 - dampening) * d
        state["momentum_buffer"][...] = b
        d = d + momentum * b if nesterov else b
    params[...] = p - lr * d


def adam_step(params, grads, state, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
              amsgrad=False, clip_norm=None, decoupled=False):
    """Adam (``decoupled=True``: AdamW)::

        p = p * (1 - lr * weight_decay)  and  d = g     if decoupled (AdamW)
        d = g + weight_decay * p                        otherwise (Adam, L2)
        m = m + (1 - beta1) * (d - m)
        v = beta2 * v + (1 - beta2) * d**2
        v_max = max(v_max, v)                           if amsgrad, and v_max replaces v below
        p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)
    """
    beta1, beta2 = betas
    if decoupled:
        p, d = _prepare(params, grads, 0.0, clip_norm)
        p = p * (1 - lr * weight_decay)
    else:
        p, d = _prepare(params, grads, weight_decay, clip_norm)
    m = state["exp_avg"].astype(np.float64)
    m = m + (1 - beta1) * (d - m)
    v = state["exp_avg_sq"].astype(np.float64) * beta2 + (1 - beta2) * d * d
    state["exp_avg"][...] = m
    state["exp_avg_sq"][...] = v
    if amsgrad:
        v = np.maximum(state["max_exp_avg_sq"].astype(np.float64), v)
        state["max_exp_avg_sq"][...] = v
    step_size = lr / (1 - beta1 ** t)
    denom = np.sqrt(v) / math.sqrt(1 - beta2 ** t) + eps
    params[...] = p - step_size * (m / denom)


def adamw_step(params, grads, state, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
               weight_decay=1e-2, amsgrad=False, clip_norm=None):
    """AdamW: Adam with decoupled weight decay (see :func:`adam_step`)."""
    adam_step(params, grads, state, t, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
              amsgrad=amsgrad, clip_norm=clip_norm, decoupled=True)


def rmsprop_step(params, grads, state, t, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0,
                 momentum=0.0, centered=False, clip_norm=None):
    """RMSprop::

        d = g + weight_decay * p
        s = alpha * s + (1 - alpha) * d**2
        a = a + (1 - alpha) * (d - a)                     if centered (a: running mean of d)
        r = d / (sqrt(s - a**2 if centered else s) + eps)
        b = momentum * b + r;  p = p - lr * b             if momentum > 0
        p = p - lr * r                                    otherwise
    """
    p, d = _prepare(params, grads, weight_decay, clip_norm)
    s = state["square_avg"].astype(np.float64) * alpha + (1 - alpha) * d * d
    state["square_avg"][...] = s
    if centered:
        a = state["grad_avg"].astype(np.float64)
        a = a + (1 - alpha) * (d - a)
        state["grad_avg"][...] = a
        s = s - a * a
    r = d / (np.sqrt(s) + eps)
    if momentum > 0:
        r = state["momentum_buffer"].astype(np.float64) * momentum + r
        state["momentum_buffer"][...] = r
    params[...] = p - lr * r


def adagrad_step(params, grads, state, t, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10, clip_norm=None):
    """Adagrad (``initial_accumulator_value`` only matters in :func:`init_optimizer_state`)::

        d = g + weight_decay * p
        s = s + d**2
        p = p - lr / (1 + (t - 1) * lr_decay) * d / (sqrt(s) + eps)
    """
    p, d = _prepare(params, grads, weight_decay, clip_norm)
    s = state["sum"].astype(np.float64) + d * d
    state["sum"][...] = s
    clr = lr / (1 + (t - 1) * lr_decay)
    params[...] = p - clr * (d / (np.sqrt(s) + eps))


def step_lr(epoch, base_lr, step_size, gamma=0.1):
    """base_lr * gamma ** (epoch // step_size)."""
    return base_lr * gamma ** (epoch // step_size)


def exponential_lr(epoch, base_lr, gamma):
    """base_lr * gamma ** epoch."""
    return base_lr * gamma ** epoch


def cosine_annealing_lr(epoch, base_lr, T_max, eta_min=0.0):
    """eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2."""
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * epoch / T_max)) / 2
