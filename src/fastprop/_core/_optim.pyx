# Python entry points of the flat-buffer optimizers in _optim.pxd: one update over a whole
# parameter vector, and the global gradient norm. Typed memoryviews are the contract
# (C-contiguous, one dtype per call); only constant-time checks here (lengths, the state arrays
# the options use), then the GIL is released. Hyperparameter checks, state allocation and the
# public API live in fastprop.optim. The tables below export the C layout (_optim.pxd) so that
# Python never restates it.

from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cython cimport floating
# The C declarations (kinds OPT_*, each kind's hyper and state layout) come from _optim.pxd,
# this module's own definition file.

cdef extern from "fp_math.h" nogil:
    unsigned int fp_ftz_begin()
    void fp_ftz_end(unsigned int state)

KINDS = {"sgd": OPT_SGD, "adam": OPT_ADAM, "adamw": OPT_ADAMW, "rmsprop": OPT_RMSPROP,
         "adagrad": OPT_ADAGRAD}


def _names(dict index, int size):
    """The names of `index` ({name: position}) in position order; checks it covers 0..size-1."""
    names = sorted(index, key=index.get)
    assert [index[k] for k in names] == list(range(size)), index
    return tuple(names)


_COMMON = {"lr": H_LR, "weight_decay": H_WEIGHT_DECAY, "clip_norm": H_CLIP_NORM}
_ADAM = (_names({**_COMMON, "beta1": ADAM_BETA1, "beta2": ADAM_BETA2, "eps": ADAM_EPS,
                 "amsgrad": ADAM_AMSGRAD}, ADAM_N_HYPER),
         _names({"exp_avg": ADAM_EXP_AVG, "exp_avg_sq": ADAM_EXP_AVG_SQ,
                 "max_exp_avg_sq": ADAM_MAX_EXP_AVG_SQ}, ADAM_N_STATE))

#: Each kind's (hyperparameter names, state names), in the positions its kernel reads them.
LAYOUT = {
    "sgd": (_names({**_COMMON, "momentum": SGD_MOMENTUM, "dampening": SGD_DAMPENING,
                    "nesterov": SGD_NESTEROV}, SGD_N_HYPER),
            _names({"momentum_buffer": SGD_MOMENTUM_BUFFER}, SGD_N_STATE)),
    "adam": _ADAM,
    "adamw": _ADAM,
    "rmsprop": (_names({**_COMMON, "alpha": RMSPROP_ALPHA, "eps": RMSPROP_EPS,
                        "momentum": RMSPROP_MOMENTUM, "centered": RMSPROP_CENTERED},
                       RMSPROP_N_HYPER),
                _names({"square_avg": RMSPROP_SQUARE_AVG,
                        "momentum_buffer": RMSPROP_MOMENTUM_BUFFER,
                        "grad_avg": RMSPROP_GRAD_AVG}, RMSPROP_N_STATE)),
    "adagrad": (_names({**_COMMON, "lr_decay": ADAGRAD_LR_DECAY, "eps": ADAGRAD_EPS,
                        "initial_accumulator_value": ADAGRAD_INITIAL_ACCUMULATOR_VALUE},
                       ADAGRAD_N_HYPER),
                _names({"sum": ADAGRAD_SUM}, ADAGRAD_N_STATE)),
}
assert set(LAYOUT) == set(KINDS)


def _check_hyper(int kind, const double[::1] hyper):
    if kind < 0 or kind >= N_OPT_KINDS:
        raise ValueError(f"kind must be in [0, {N_OPT_KINDS}), got {kind}")
    cdef int size = optimizer_size(kind, False)
    if hyper.shape[0] != size:
        raise ValueError(f"hyper must hold {size} values for kind {kind}, got {hyper.shape[0]}")


def uses(int kind, const double[::1] hyper):
    """Tuple of bools, one per state array of `kind` (its declared order): which ones `kind`
    with `hyper` reads and writes."""
    _check_hyper(kind, hyper)
    cdef int mask = optimizer_uses(kind, &hyper[0])
    return tuple(bool(mask & (1 << i)) for i in range(optimizer_size(kind, True)))


def step(int kind, const double[::1] hyper, floating[::1] params, floating[::1] grads, state,
         long long step):
    """One optimizer update in place. IN hyper (kind's block, LAYOUT), step >= 1 (after
    increment). IN/OUT params (n,), grads (n,) (clipped in place when clip_norm > 0), state: a
    sequence of kind's state arrays in LAYOUT order, each (n,) of params' dtype, or None where
    the options do not use it.

    Returns True when the update was applied, False when it was refused (nothing changed):
    gradients not finite, or an update that could make a parameter or the state overflow
    (update_is_safe in _optim.pxd)."""
    cdef Py_ssize_t n = params.shape[0]
    cdef int i, mask, n_state
    cdef floating[::1] view
    _check_hyper(kind, hyper)
    if grads.shape[0] != n:
        raise ValueError(f"grads has length {grads.shape[0]}, expected {n} (params)")
    if step < 1:
        raise ValueError(f"step must be >= 1 (the step number after increment), got {step}")
    n_state = optimizer_size(kind, True)
    state = list(state)
    if len(state) != n_state:
        raise ValueError(f"state must hold {n_state} arrays (or None) for kind {kind}, got "
                         f"{len(state)}")
    mask = optimizer_uses(kind, &hyper[0])
    views = []
    cdef floating **ptrs = <floating **> PyMem_Malloc(n_state * sizeof(floating *) + 1)
    if ptrs == NULL:
        raise MemoryError()
    cdef unsigned int csr
    cdef bint safe = True
    try:
        for i in range(n_state):
            ptrs[i] = NULL
            if mask & (1 << i):
                if state[i] is None:
                    raise ValueError(f"state[{i}] is None, but this optimizer and its options "
                                     f"use it")
                view = state[i]
                if view.shape[0] != n:
                    raise ValueError(f"state[{i}] has length {view.shape[0]}, expected {n} "
                                     f"(params)")
                views.append(view)
                if n > 0:
                    ptrs[i] = &view[0]
        if n == 0:
            return True
        with nogil:
            csr = fp_ftz_begin()
            safe = update_is_safe(kind, &hyper[0], &params[0], &grads[0], ptrs, n_state, n,
                                  step, _max_abs(&grads[0], n))
            if safe:
                optimizer_step(kind, &hyper[0], &params[0], &grads[0], ptrs, n, step)
            fp_ftz_end(csr)
    finally:
        PyMem_Free(ptrs)
    return safe


def global_norm(const floating[::1] grads):
    """sqrt(sum(grads ** 2)), accumulated in double. IN grads (n,)."""
    cdef double out = 0
    if grads.shape[0] == 0:
        return 0.0
    with nogil:
        out = l2_norm(&grads[0], grads.shape[0])
    return out
