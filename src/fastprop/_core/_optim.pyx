# Python entry points of the flat-buffer optimizers in _optim.pxd: one update over a whole
# parameter vector, and the global gradient norm. Typed memoryviews are the contract
# (C-contiguous, one dtype per call); only constant-time checks here (lengths, required state
# slots), then the GIL is released. Hyperparameter checks, state allocation and the public API
# live in fastprop.optim. The tables below export the C layout so Python never restates it.

from cython cimport floating
# The C declarations (kinds OPT_*, hyper layout H_*, slots SLOT_*) come from _optim.pxd, this
# module's own definition file.

cdef extern from "fp_math.h" nogil:
    unsigned int fp_ftz_begin()
    void fp_ftz_end(unsigned int state)

KINDS = {"sgd": OPT_SGD, "adam": OPT_ADAM, "adamw": OPT_ADAMW, "rmsprop": OPT_RMSPROP,
         "adagrad": OPT_ADAGRAD}
HYPER_SIZE = N_HYPER
HYPER_INDEX = {
    "lr": H_LR, "momentum": H_MOMENTUM, "dampening": H_DAMPENING, "nesterov": H_NESTEROV,
    "weight_decay": H_WEIGHT_DECAY, "beta1": H_BETA1, "beta2": H_BETA2, "eps": H_EPS,
    "alpha": H_ALPHA, "centered": H_CENTERED, "amsgrad": H_AMSGRAD, "clip_norm": H_CLIP_NORM,
    "lr_decay": H_LR_DECAY, "initial_accumulator_value": H_INITIAL_ACCUMULATOR_VALUE,
}


def _check_hyper(int kind, const double[::1] hyper):
    if kind < 0 or kind >= N_OPT_KINDS:
        raise ValueError(f"kind must be in [0, {N_OPT_KINDS}), got {kind}")
    if hyper.shape[0] < N_HYPER:
        raise ValueError(f"hyper must hold {N_HYPER} values, got {hyper.shape[0]}")


def slots(int kind, const double[::1] hyper):
    """Tuple of three bools: which of the state slots s1, s2, s3 `kind` with `hyper` uses."""
    _check_hyper(kind, hyper)
    cdef int mask = optimizer_slots(kind, &hyper[0])
    return (bool(mask & 1), bool(mask & 2), bool(mask & 4))


def step(int kind, const double[::1] hyper, floating[::1] params, floating[::1] grads,
         s1, s2, s3, long long step):
    """One optimizer update in place. IN hyper (N_HYPER,), step >= 1 (after increment).
    IN/OUT params (n,), grads (n,) (clipped in place when hyper[clip_norm] > 0), s1, s2, s3 (n,)
    state arrays of params' dtype, or None where the kind does not use the slot.

    Returns True when the update was applied, False when it was refused (nothing changed):
    gradients not finite, or an update that could make a parameter or the state overflow
    (update_is_safe in _optim.pxd)."""
    cdef Py_ssize_t n = params.shape[0]
    cdef floating[::1] m1, m2, m3
    cdef floating *p1 = NULL
    cdef floating *p2 = NULL
    cdef floating *p3 = NULL
    cdef int mask
    _check_hyper(kind, hyper)
    if grads.shape[0] != n:
        raise ValueError(f"grads has length {grads.shape[0]}, expected {n} (params)")
    if step < 1:
        raise ValueError(f"step must be >= 1 (the step number after increment), got {step}")
    mask = optimizer_slots(kind, &hyper[0])
    if mask & 1:
        m1 = _state(s1, "s1", n)
        if n > 0:
            p1 = &m1[0]
    if mask & 2:
        m2 = _state(s2, "s2", n)
        if n > 0:
            p2 = &m2[0]
    if mask & 4:
        m3 = _state(s3, "s3", n)
        if n > 0:
            p3 = &m3[0]
    if n == 0:
        return True
    cdef unsigned int csr
    cdef bint safe
    with nogil:
        csr = fp_ftz_begin()
        safe = update_is_safe(kind, &hyper[0], &params[0], &grads[0], p1, p2, n, step,
                              _max_abs(&grads[0], n))
        if safe:
            optimizer_step(kind, &hyper[0], &params[0], &grads[0], p1, p2, p3, n, step)
        fp_ftz_end(csr)
    return safe


def _state(s, str name, Py_ssize_t n):
    if s is None:
        raise ValueError(f"{name} is None, but this optimizer and its options use it")
    if len(s) != n:
        raise ValueError(f"{name} has length {len(s)}, expected {n} (params)")
    return s


def global_norm(const floating[::1] grads):
    """sqrt(sum(grads ** 2)), accumulated in double. IN grads (n,)."""
    cdef double out = 0
    if grads.shape[0] == 0:
        return 0.0
    with nogil:
        out = l2_norm(&grads[0], grads.shape[0])
    return out
