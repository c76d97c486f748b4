# C-level optimizers over flat buffers, `nogil`: one fused pass over all of a model's parameters.
#
# Shared by the Python entry point (_optim.pyx) and the whole-model engine, which calls
# optimizer_step from inside its nogil train step. Semantics and defaults are torch.optim's
# (single-tensor CPU path), checked against it in tests/test_optim.py. Callers guarantee n >= 0
# contiguous values per buffer, `hyper` of optimizer_size(kind, False) doubles, and the
# optimizer_size(kind, True) state pointers, each non-NULL where optimizer_uses() sets its bit;
# nothing else is checked here.
#
# The per-element loops are C (csrc/fp_optim_impl.h), cloned for AVX-512 / AVX2 / SSE2
# (FP_CLONES): compiled here, Cython's inline loops got baseline 16-byte vectors only, and
# float32 SGD, which converts every element to double and back, took 19.6 us for 17k
# parameters (float64: 8.6 us). Per-element math runs in double and is rounded once on store
# (SGD, RMSprop, Adagrad), so float32 is never less accurate than torch's float32 arithmetic;
# Adam / AdamW, the default and the costliest per element (a sqrt and a division), run in the
# buffers' own type, as torch does: float32 then fills twice the vector lanes (17k parameters:
# 49 -> 28 us). Options are loop-invariant: each loop body is branch-free straight-line math
# that gcc -O3 vectorizes (the amsgrad / centered / momentum tests on loop-invariant flags are
# unswitched by the compiler: one vector loop per combination).
# The loops with sqrt vectorize only under -fno-math-errno (not fast-math: IEEE results are
# unchanged, sqrt just stops setting errno); without it gcc keeps a scalar libm fallback branch.
# Measured on 1M parameters, gcc 12: Adam float64 5.3 -> 3.2 ms, RMSprop centered + momentum
# float32 11.4 -> 5.2 ms per step.

from libc.math cimport sqrt, pow
from cython cimport floating


# Optimizer kinds (fastprop.optim keeps the same codes via _optim.KINDS).
cdef enum:
    OPT_SGD = 0
    OPT_ADAM = 1
    OPT_ADAMW = 2
    OPT_RMSPROP = 3
    OPT_ADAGRAD = 4
    N_OPT_KINDS = 5

# Each optimizer declares its own layout here, in one block: its hyperparameter block (doubles;
# flags 0.0 / 1.0) and its state (flat arrays of the parameters' dtype, by position). Every block
# starts with the entries all optimizers share; _optim.pyx exports the names (LAYOUT), which
# fastprop.optim reads: no Python file restates a position.
cdef enum:
    H_LR = 0              # learning rate (the current one, after any schedule)
    H_WEIGHT_DECAY = 1    # L2 added to the gradient; AdamW: decoupled (p *= 1 - lr * wd)
    H_CLIP_NORM = 2       # global-norm clipping of grads before the update; <= 0: off
    N_H_COMMON = 3

# SGD: state momentum_buffer (momentum != 0)
cdef enum:
    SGD_MOMENTUM = N_H_COMMON
    SGD_DAMPENING
    SGD_NESTEROV          # flag
    SGD_N_HYPER
    SGD_MOMENTUM_BUFFER = 0
    SGD_N_STATE

# Adam, AdamW: state exp_avg, exp_avg_sq, max_exp_avg_sq (amsgrad)
cdef enum:
    ADAM_BETA1 = N_H_COMMON
    ADAM_BETA2
    ADAM_EPS
    ADAM_AMSGRAD          # flag
    ADAM_N_HYPER
    ADAM_EXP_AVG = 0
    ADAM_EXP_AVG_SQ
    ADAM_MAX_EXP_AVG_SQ
    ADAM_N_STATE

# RMSprop: state square_avg, momentum_buffer (momentum > 0), grad_avg (centered)
cdef enum:
    RMSPROP_ALPHA = N_H_COMMON   # smoothing constant
    RMSPROP_EPS
    RMSPROP_MOMENTUM
    RMSPROP_CENTERED      # flag
    RMSPROP_N_HYPER
    RMSPROP_SQUARE_AVG = 0
    RMSPROP_MOMENTUM_BUFFER
    RMSPROP_GRAD_AVG
    RMSPROP_N_STATE

# Adagrad: state sum (starts at initial_accumulator_value)
cdef enum:
    ADAGRAD_LR_DECAY = N_H_COMMON
    ADAGRAD_EPS
    ADAGRAD_INITIAL_ACCUMULATOR_VALUE   # used when the state is allocated, not here
    ADAGRAD_N_HYPER
    ADAGRAD_SUM = 0
    ADAGRAD_N_STATE


cdef inline int optimizer_size(int kind, bint state) noexcept nogil:
    """The number of state arrays `kind` declares (state: some unused under some options, NULL
    there), or the length of its hyperparameter block (not state); 0 for an unknown kind."""
    if kind == OPT_SGD:
        return SGD_N_STATE if state else SGD_N_HYPER
    if kind == OPT_ADAM or kind == OPT_ADAMW:
        return ADAM_N_STATE if state else ADAM_N_HYPER
    if kind == OPT_RMSPROP:
        return RMSPROP_N_STATE if state else RMSPROP_N_HYPER
    if kind == OPT_ADAGRAD:
        return ADAGRAD_N_STATE if state else ADAGRAD_N_HYPER
    return 0


cdef inline int optimizer_uses(int kind, const double *hyper) noexcept nogil:
    """Bit mask of the state arrays (bit i: state i) that `kind` with `hyper` reads and
    writes; the others may be NULL."""
    if kind == OPT_SGD:
        return (1 << SGD_MOMENTUM_BUFFER) if hyper[SGD_MOMENTUM] != 0 else 0
    if kind == OPT_ADAM or kind == OPT_ADAMW:
        return ((1 << ADAM_EXP_AVG) | (1 << ADAM_EXP_AVG_SQ)
                | ((1 << ADAM_MAX_EXP_AVG_SQ) if hyper[ADAM_AMSGRAD] != 0 else 0))
    if kind == OPT_RMSPROP:
        return ((1 << RMSPROP_SQUARE_AVG)
                | ((1 << RMSPROP_MOMENTUM_BUFFER) if hyper[RMSPROP_MOMENTUM] > 0 else 0)
                | ((1 << RMSPROP_GRAD_AVG) if hyper[RMSPROP_CENTERED] != 0 else 0))
    if kind == OPT_ADAGRAD:
        return 1 << ADAGRAD_SUM
    return 0


cdef extern from "fp_optim.h" nogil:
    void fp_adam_f(float *p, const float *g, float *m, float *v, float *vmax, Py_ssize_t n,
                   float shrink, float wd, float one_minus_b1, float b2, float one_minus_b2,
                   float step_size, float inv_bc2, float eps, int amsgrad)
    void fp_adam_d(double *p, const double *g, double *m, double *v, double *vmax,
                   Py_ssize_t n, double shrink, double wd, double one_minus_b1, double b2,
                   double one_minus_b2, double step_size, double inv_bc2, double eps,
                   int amsgrad)
    void fp_sgd_f(float *p, const float *g, float *buf, Py_ssize_t n, double lr, double mu,
                  double wd, double keep, double take, int nesterov)
    void fp_sgd_d(double *p, const double *g, double *buf, Py_ssize_t n, double lr, double mu,
                  double wd, double keep, double take, int nesterov)
    void fp_rmsprop_f(float *p, const float *g, float *sq, float *buf, float *gavg,
                      Py_ssize_t n, double lr, double mu, double wd, double alpha, double eps,
                      int centered)
    void fp_rmsprop_d(double *p, const double *g, double *sq, double *buf, double *gavg,
                      Py_ssize_t n, double lr, double mu, double wd, double alpha, double eps,
                      int centered)
    void fp_adagrad_f(float *p, const float *g, float *acc, Py_ssize_t n, double clr,
                      double wd, double eps)
    void fp_adagrad_d(double *p, const double *g, double *acc, Py_ssize_t n, double clr,
                      double wd, double eps)


cdef extern from "fp_math.h" nogil:
    double fp_max_abs_f(const float *x, Py_ssize_t n)
    double fp_max_abs_d(const double *x, Py_ssize_t n)


cdef inline double _max_abs(const floating *x, Py_ssize_t n) noexcept nogil:
    """max |x| (inf if any is inf or NaN; 0 for NULL)."""
    if x == NULL:
        return 0.0
    if floating is float:
        return fp_max_abs_f(x, n)
    else:
        return fp_max_abs_d(x, n)


cdef inline bint update_is_safe(int kind, const double *h, const floating *params,
                                const floating *grads, floating **state, int n_state,
                                Py_ssize_t n, long long step, double gmax) noexcept nogil:
    """True when optimizer_step cannot make a parameter or a state value NaN / inf.

    A conservative bound from max |params|, max |grads| (gmax, before clipping: clipping only
    shrinks it) and the max of the state arrays an update grows (one pass each, like the pass
    that gives gmax): |d| <= D = gmax + wd * max|p|; means of squares stay below max(old, D^2);
    Adam's |m| below max(old, D); the per-element ratio m / (sqrt(v) + eps) below max|m| / eps
    (RMSprop |d| / eps, Adagrad 1). The step is refused when D^2, a ratio, a state bound or
    max|p| plus lr times the ratio is not below 1e37 (float32; 1e306 for float64), or eps is
    under the dtype's smallest normal number (the kernels flush denormals to zero: 0 / 0). A
    refused step changes nothing; a step of finite, reasonably scaled numbers is never
    refused. Also refused: fewer state arrays (n_state) than `kind` declares."""
    cdef double limit = 1e37 if floating is float else 1e306
    cdef double tiny = 1.2e-38 if floating is float else 2.3e-308
    cdef double lr = h[H_LR], wd = h[H_WEIGHT_DECAY], mu, eps
    cdef double P = _max_abs(params, n), D, B, M, shrink = 1.0, ratio, t1
    if n_state < optimizer_size(kind, True) or not (P < limit and gmax < limit):
        return False
    if kind == OPT_SGD:
        mu = h[SGD_MOMENTUM]
        D = gmax + wd * P
        if mu == 0:
            ratio = D
        else:
            B = _max_abs(state[SGD_MOMENTUM_BUFFER], n)
            t1 = 1.0 if step <= 1 else 1.0 - h[SGD_DAMPENING]
            B = (0.0 if step <= 1 else mu * B) + (t1 if t1 > 0 else -t1) * D
            ratio = D + mu * B if h[SGD_NESTEROV] != 0 else B
    elif kind == OPT_ADAM or kind == OPT_ADAMW:
        eps = h[ADAM_EPS]
        if kind == OPT_ADAMW:
            shrink = 1.0 - lr * wd
            shrink = shrink if shrink > 0 else -shrink
            D = gmax
        else:
            D = gmax + wd * P
        if not (eps >= tiny and D * D < limit):
            return False
        M = _max_abs(state[ADAM_EXP_AVG], n)
        M = M if M > D else D
        t1 = 1.0 - pow(h[ADAM_BETA1], <double> step)
        if not (t1 > 0 and lr / t1 < limit):     # the step size, stored in the dtype
            return False
        ratio = M / eps / t1
    elif kind == OPT_RMSPROP:
        eps, mu = h[RMSPROP_EPS], h[RMSPROP_MOMENTUM]
        D = gmax + wd * P
        if not (eps >= tiny and D * D < limit):
            return False
        ratio = D / eps
        if mu > 0:
            ratio = mu * _max_abs(state[RMSPROP_MOMENTUM_BUFFER], n) + ratio
    elif kind == OPT_ADAGRAD:
        eps = h[ADAGRAD_EPS]
        D = gmax + wd * P
        if not (eps >= tiny and D * D + _max_abs(state[ADAGRAD_SUM], n) < limit):
            return False
        ratio = 1.0 / (1.0 + (step - 1) * h[ADAGRAD_LR_DECAY])
    else:
        return False
    return D < limit and ratio < limit and shrink * P + lr * ratio < limit


cdef inline double l2_norm(const floating *g, Py_ssize_t n) noexcept nogil:
    """sqrt(sum(g ** 2)), accumulated in double.

    Four partial sums: a single accumulator is one serial chain of adds that the compiler may
    not reorder without -ffast-math; four chains measured 2.4x faster (1M float32: 740 -> 310 us,
    gcc 12 -O3)."""
    cdef double a0 = 0, a1 = 0, a2 = 0, a3 = 0, x
    cdef Py_ssize_t i, m = n - n % 4
    for i in range(0, m, 4):
        a0 += <double> g[i] * g[i]
        a1 += <double> g[i + 1] * g[i + 1]
        a2 += <double> g[i + 2] * g[i + 2]
        a3 += <double> g[i + 3] * g[i + 3]
    for i in range(m, n):
        x = g[i]
        a0 += x * x
    return sqrt((a0 + a1) + (a2 + a3))


cdef inline double clip_by_global_norm(floating *g, Py_ssize_t n,
                                       double max_norm) noexcept nogil:
    """g *= min(1, max_norm / (||g|| + 1e-6)) in place, as torch.nn.utils.clip_grad_norm_.
    Returns ||g|| before clipping."""
    cdef double norm = l2_norm(g, n)
    cdef double coef = max_norm / (norm + 1e-6)
    cdef Py_ssize_t i
    if coef < 1.0:
        for i in range(n):
            g[i] = <floating> (g[i] * coef)
    return norm


cdef inline void sgd_step(const double *h, floating *p, const floating *g, floating **state,
                          Py_ssize_t n, long long step) noexcept nogil:
    """d = g + wd p;  b = d (first step) or mu b + (1 - dampening) d;
    p -= lr * (d + mu b if nesterov else b)   (no momentum: p -= lr d)."""
    cdef double keep = 0.0 if step <= 1 else h[SGD_MOMENTUM]   # the buffer starts as g
    cdef double take = 1.0 if step <= 1 else 1.0 - h[SGD_DAMPENING]
    cdef floating *buf = state[SGD_MOMENTUM_BUFFER]
    if floating is float:
        fp_sgd_f(p, g, buf, n, h[H_LR], h[SGD_MOMENTUM], h[H_WEIGHT_DECAY], keep, take,
                 h[SGD_NESTEROV] != 0)
    else:
        fp_sgd_d(p, g, buf, n, h[H_LR], h[SGD_MOMENTUM], h[H_WEIGHT_DECAY], keep, take,
                 h[SGD_NESTEROV] != 0)


cdef inline void adam_step(const double *h, bint decoupled, floating *p, const floating *g,
                           floating **state, Py_ssize_t n, long long step) noexcept nogil:
    """Adam (decoupled=False: d = g + wd p) or AdamW (decoupled: p *= 1 - lr wd; d = g):
    m += (1 - b1)(d - m);  v = b2 v + (1 - b2) d^2;  vmax = max(vmax, v) (amsgrad);
    p -= lr / (1 - b1^t) * m / (sqrt(v or vmax) / sqrt(1 - b2^t) + eps)."""
    cdef double lr = h[H_LR], b1 = h[ADAM_BETA1], b2 = h[ADAM_BETA2], eps = h[ADAM_EPS]
    cdef double wd = 0.0 if decoupled else h[H_WEIGHT_DECAY]
    cdef double shrink = 1.0 - lr * h[H_WEIGHT_DECAY] if decoupled else 1.0
    cdef double step_size = lr / (1.0 - pow(b1, <double> step))
    cdef double bc2_sqrt = sqrt(1.0 - pow(b2, <double> step))
    cdef bint amsgrad = h[ADAM_AMSGRAD] != 0
    cdef floating *m = state[ADAM_EXP_AVG]
    cdef floating *v = state[ADAM_EXP_AVG_SQ]
    cdef floating *vmax = state[ADAM_MAX_EXP_AVG_SQ]
    # per-element math in the buffers' type, as torch does: float32 fills twice the vector
    # lanes of float64; the C kernel is cloned for AVX-512 / AVX2 (csrc/fp_optim.h)
    if floating is float:
        fp_adam_f(p, g, m, v, vmax, n, <float> shrink, <float> wd, <float> (1.0 - b1),
                  <float> b2, <float> (1.0 - b2), <float> step_size, <float> (1.0 / bc2_sqrt),
                  <float> eps, amsgrad)
    else:
        fp_adam_d(p, g, m, v, vmax, n, shrink, wd, 1.0 - b1, b2, 1.0 - b2, step_size,
                  1.0 / bc2_sqrt, eps, amsgrad)


cdef inline void rmsprop_step(const double *h, floating *p, const floating *g,
                              floating **state, Py_ssize_t n) noexcept nogil:
    """d = g + wd p;  sq = alpha sq + (1 - alpha) d^2;  gavg += (1 - alpha)(d - gavg) (centered);
    r = d / (sqrt(sq - gavg^2 if centered else sq) + eps);
    b = mu b + r, p -= lr b (momentum > 0)  or  p -= lr r."""
    cdef floating *sq = state[RMSPROP_SQUARE_AVG]
    cdef floating *buf = state[RMSPROP_MOMENTUM_BUFFER]
    cdef floating *gavg = state[RMSPROP_GRAD_AVG]
    if floating is float:
        fp_rmsprop_f(p, g, sq, buf, gavg, n, h[H_LR], h[RMSPROP_MOMENTUM], h[H_WEIGHT_DECAY],
                     h[RMSPROP_ALPHA], h[RMSPROP_EPS], h[RMSPROP_CENTERED] != 0)
    else:
        fp_rmsprop_d(p, g, sq, buf, gavg, n, h[H_LR], h[RMSPROP_MOMENTUM], h[H_WEIGHT_DECAY],
                     h[RMSPROP_ALPHA], h[RMSPROP_EPS], h[RMSPROP_CENTERED] != 0)


cdef inline void adagrad_step(const double *h, floating *p, const floating *g,
                              floating **state, Py_ssize_t n, long long step) noexcept nogil:
    """d = g + wd p;  acc += d^2;  p -= lr / (1 + (t - 1) lr_decay) * d / (sqrt(acc) + eps)."""
    cdef double clr = h[H_LR] / (1.0 + (step - 1) * h[ADAGRAD_LR_DECAY])
    cdef floating *acc = state[ADAGRAD_SUM]
    if floating is float:
        fp_adagrad_f(p, g, acc, n, clr, h[H_WEIGHT_DECAY], h[ADAGRAD_EPS])
    else:
        fp_adagrad_d(p, g, acc, n, clr, h[H_WEIGHT_DECAY], h[ADAGRAD_EPS])


cdef inline void optimizer_step(int kind, const double *hyper, floating *params,
                                floating *grads, floating **state, Py_ssize_t n,
                                long long step) noexcept nogil:
    """One update of `params` (n values) by optimizer `kind`, torch.optim semantics.

    hyper : `kind`'s block (optimizer_size(kind, False) doubles, its layout above).
    step : 1-based step number after increment.
    IN/OUT params; grads (clipped in place when hyper[H_CLIP_NORM] > 0, never weight-decayed);
    state: optimizer_size(kind, True) pointers to `kind`'s state arrays in its declared order,
    NULL where optimizer_uses says unused. Unknown kinds do nothing."""
    if n <= 0:
        return
    if hyper[H_CLIP_NORM] > 0:
        clip_by_global_norm(grads, n, hyper[H_CLIP_NORM])
    if kind == OPT_SGD:
        sgd_step(hyper, params, grads, state, n, step)
    elif kind == OPT_ADAM:
        adam_step(hyper, False, params, grads, state, n, step)
    elif kind == OPT_ADAMW:
        adam_step(hyper, True, params, grads, state, n, step)
    elif kind == OPT_RMSPROP:
        rmsprop_step(hyper, params, grads, state, n)
    elif kind == OPT_ADAGRAD:
        adagrad_step(hyper, params, grads, state, n, step)
