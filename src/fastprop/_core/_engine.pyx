# The whole-model engine: a model's layers compiled into a tape, a list of nodes (kind, widths,
# offsets into the flat parameter / state buffers, workspace pointers, attributes; `_node.pxd`),
# run by one forward loop and one backward loop that dispatch on the node kind to the kind's
# own unit (`_node_dense.pxd`, `_node_dropout.pxd`, `_node_activation.pxd`, `_node_norm.pxd`).
# One nogil function per call: forward through every node, loss, backward, optimizer update,
# then (an accepted step) BatchNorm's running statistics into the model's state buffer. Python
# touches nothing per layer.
#
# Memory: parameters and gradients are two flat buffers owned by the model (each layer's W, b,
# dW, db are views into them). The workspace (every node's output, delta and own workspace,
# and the gathered minibatch) is one byte buffer sized for the largest batch seen so far; a
# steady-state step allocates nothing. Backward keeps one delta buffer per Dense node; the
# width-preserving kinds (Dropout, Activation, BatchNorm, LayerNorm) share the previous node's
# and run in place. The
# output node's delta is written directly by the fused loss kernel.
#
# A Python layer is a NODE_PYTHON node: the loops take the GIL only at it, to call the Python
# tier's runner with a copy of the node's input, and copy its checked result into the
# workspace (see _py_node, Engine._call_python); an exception there stops the call, changing
# nothing, and is re-raised by the entry point.
#
# predict() uses its own per-call scratch (malloc'd inside nogil) and a private copy of each
# node, never the shared workspace, so several threads may predict with one model at once.
# Training calls share the workspace: the model serializes them with a lock.

from libc.stdint cimport uint64_t, int64_t
from libc.math cimport isfinite
from libc.stdlib cimport malloc, free
from libc.string cimport memset, memcpy
from libc.stddef cimport ptrdiff_t
from cython cimport floating
cimport numpy as cnp
import numpy as np

from fastprop._core._dense cimport FP_IDENTITY, FP_SOFTMAX, act_forward
from fastprop._core._blas cimport gemm
from fastprop._core._node cimport (Node, NODE_DENSE, NODE_DROPOUT, NODE_ACTIVATION,
                                   NODE_BATCHNORM, NODE_LAYERNORM, NODE_PYTHON)
from fastprop._core._node_dense cimport (dense_node_forward, dense_node_backward,
                                         dense_node_delta, dense_node_sgd, dense_node_gemms,
                                         dense_node_penalty, dense_node_penalty_add)
from fastprop._core._node_dropout cimport dropout_node_forward, dropout_node_backward
from fastprop._core._node_activation cimport (activation_node_forward,
                                              activation_node_backward)
from fastprop._core._node_norm cimport (norm_node_nbytes, norm_node_forward, norm_node_backward,
                                        norm_node_commit, norm_node_predict, norm_node_stats_ok)
from fastprop._core._loss cimport loss_and_grad
from fastprop._core._optim cimport (optimizer_step, update_is_safe, OPT_SGD, H_LR,
                                    SGD_MOMENTUM, H_WEIGHT_DECAY, H_CLIP_NORM)

cnp.import_array()

# the node kinds, read by the tape compiler (fastprop.model) from here: defined once
NODE_KINDS = {"Dense": NODE_DENSE, "Dropout": NODE_DROPOUT, "Activation": NODE_ACTIVATION,
              "BatchNorm": NODE_BATCHNORM, "LayerNorm": NODE_LAYERNORM, "Python": NODE_PYTHON}

# the phases of a Python node's call (Engine._call_python): forward of a training call (the
# layer keeps its cache), backward, forward of predict (no cache), and the undo of a failed
# training call (the Python layers' parameters and state as they were before it)
PY_FORWARD, PY_BACKWARD, PY_PREDICT, PY_UNDO = 0, 1, 2, 3

cdef extern from "Python.h":
    int PyErr_CheckSignals() except -1

cdef extern from "fp_math.h" nogil:
    unsigned int fp_ftz_begin()
    void fp_ftz_end(unsigned int state)
    void fp_gather_rows_f(const float *src, const int64_t *idx, float *out, ptrdiff_t n,
                          ptrdiff_t cols)
    void fp_gather_rows_d(const double *src, const int64_t *idx, double *out, ptrdiff_t n,
                          ptrdiff_t cols)
    int fp_all_finite_f(const float *x, ptrdiff_t n)
    int fp_all_finite_d(const double *x, ptrdiff_t n)
    int fp_all_unit_f(const float *x, ptrdiff_t n)
    double fp_max_abs_f(const float *x, ptrdiff_t n)
    double fp_max_abs_d(const double *x, ptrdiff_t n)
    int fp_all_unit_d(const double *x, ptrdiff_t n)
    int fp_labels_in_range(const int64_t *labels, ptrdiff_t n, int64_t k)
    void fp_permutation(int64_t *order, ptrdiff_t n, uint64_t *state)
    void fp_spin_lock(long *lock)
    void fp_spin_unlock(long *lock)
    void fp_rng_skip(uint64_t *state, uint64_t n)

cdef extern from "fp_pool.h" nogil:
    ctypedef void (*fp_pool_task)(void *ctx, int worker, int n_workers) noexcept nogil
    ctypedef struct fp_pool:
        int n
    fp_pool *fp_pool_create(int n)
    int fp_pool_usable(const fp_pool *pool)
    void fp_pool_destroy(fp_pool *pool)
    int fp_pool_try_acquire(fp_pool *pool)
    void fp_pool_release(fp_pool *pool)
    void fp_pool_run(fp_pool *pool, fp_pool_task fn, void *ctx, int k)

cdef extern from "fp_loss.h" nogil:
    enum:
        FP_CROSS_ENTROPY
        FP_BINARY_CROSS_ENTROPY


cdef struct Tape:
    # The tape: the model's node list (see _node.pxd) and what a call shares
    int L               # number of nodes
    Node *nodes
    int n_dense         # the Dense nodes, in order (their node indices)
    int *dense
    int n_norm          # BatchNorm / LayerNorm nodes (their parameters are outside the Dense
                        # nodes': the fused-SGD path, which updates Dense nodes, is not used)
    char *state         # the model's state buffer (BatchNorm's running statistics)
    int max_norm        # the widest norm node (predict's scratch)
    int loss
    char *xb            # gathered minibatch: inputs, dense targets, labels, sample weights
    char *yb
    char *lb
    char *wb
    uint64_t rng        # dropout stream (splitmix64 state)
    bint refused        # the last step changed nothing: its loss or gradients were not finite
    double norm         # the loss divisor of the next step (> 0), or 0: the batch's weight sum
    int n_threads       # BLAS threads for large layers; 0: what the BLAS is set to
    # batch-split calls (see "Batch-split calls" below)
    long long macs      # multiply-adds of one sample's forward through the Dense nodes
    int n_batchnorm     # BatchNorm nodes: their batch statistics need the whole batch
    int rows_before     # a split worker's tape: rows of the minibatch before its slice and
    int rows_after      # after it (its dropout draws skip theirs); 0 on the whole batch
    bint in_split       # a split worker's tape: BLAS thread counts are the caller's business
    int n_frozen        # frozen parameter ranges (layer.trainable = False): [start, end)
    Py_ssize_t *frozen  # pairs; the update skips them (their gradients are zeroed first)
    char *fscratch      # their parameters and optimizer state, kept across the update
    int n_penalty       # Dense nodes with a weight penalty (l1 / l2): 0 skips every penalty pass
    int n_python        # Python nodes (their calls take the GIL; see _py_node)
    bint py_failed      # a Python node raised in this call: the loops stopped there
    void *engine        # the Engine owning this tape (borrowed): Python nodes call it
    void *errors        # its list of exceptions raised by Python nodes (borrowed)
    unsigned int csr    # the floating-point mode of the call's caller (Python nodes run in it)

# -- BLAS threads -------------------------------------------------------------------------------
# Size-aware threading: a call whose layers are all smaller than _thread_work_min multiply-adds
# runs on one BLAS thread, because waking a second thread costs more than it saves on small
# products (measured: see fastprop._threads). Other calls use the model's n_threads or the
# count the BLAS is set to (by the user, threadpoolctl or its default). The setter is
# OpenBLAS's own openblas_set_num_threads, found by fastprop._threads; it costs nanoseconds
# from C. NULL (another BLAS): thread counts are left alone.
ctypedef void (*set_threads_t)(int) noexcept nogil
ctypedef int (*get_threads_t)() noexcept nogil
cdef set_threads_t _set_threads = NULL
cdef get_threads_t _get_threads = NULL
cdef long long _thread_work_min = 0


def set_thread_control(size_t set_address, size_t get_address, long long work_min):
    """Install the BLAS thread setter / getter (C function addresses; 0 to disable) and the
    per-layer work (n * n_in * n_out) below which a layer's GEMMs use one thread."""
    global _set_threads, _get_threads, _thread_work_min
    if set_address == 0 or get_address == 0:
        _set_threads = NULL
        _get_threads = NULL
    else:
        _set_threads = <set_threads_t> set_address
        _get_threads = <get_threads_t> get_address
    _thread_work_min = work_min


cdef struct Threads:
    int orig      # the BLAS setting before the first of the calls in flight (restored after)
    int full      # threads for calls with a large layer
    int current   # what this call set


# Calls may run concurrently (predict from several threads, several models training): the
# setting they all restore is the one from before the first of them began, and the last to end
# restores it: a count of the calls in flight, kept under a spin lock together with the saved
# setting (an atomic count alone let a call that began while the last one was restoring save
# the transient setting). A call's setting may apply to another call's GEMMs for a while: that
# only changes how many threads such a GEMM uses, never a result.
cdef long _threads_lock = 0
cdef long _in_flight = 0
cdef int _saved_threads = 1


cdef inline void _threads_begin(Threads *th, Tape *p, int n) noexcept nogil:
    """Pick the BLAS threads of a whole call over n samples: one thread when every layer is
    under _thread_work_min multiply-adds (n = 0: one thread, a batch-split call whose workers
    each run their own GEMMs), the configured count otherwise. Once per call, not
    per layer: switching OpenBLAS between 1 and 2 threads inside a step cost more than it saved
    (the large 256 x 1024-1024-1024-10 step took 15.7 ms with the last layer on one thread,
    12.0 ms without switching)."""
    global _saved_threads, _in_flight
    cdef int l, want = 1, current
    if _get_threads == NULL or p.in_split:   # a split worker: the caller set one thread
        th.orig = -1
        th.full = th.current = 1
        return
    fp_spin_lock(&_threads_lock)
    _in_flight += 1
    if _in_flight == 1:
        _saved_threads = _get_threads()
    th.orig = _saved_threads
    fp_spin_unlock(&_threads_lock)
    th.full = p.n_threads if p.n_threads > 0 else th.orig
    for l in range(p.n_dense):
        if n > 0 and <long long> n * p.nodes[p.dense[l]].n_in * p.nodes[p.dense[l]].n_out >= \
                _thread_work_min:
            want = th.full
    current = _get_threads()
    if want != current:
        _set_threads(want)
    th.current = want


cdef inline void _threads_end(Threads *th) noexcept nogil:
    if _get_threads == NULL or th.orig < 0:
        return
    global _in_flight
    fp_spin_lock(&_threads_lock)
    _in_flight -= 1
    if _in_flight == 0 and _get_threads() != th.orig:
        _set_threads(th.orig)
    fp_spin_unlock(&_threads_lock)


cdef inline void _gather(const floating *src, const int64_t *idx, floating *out, ptrdiff_t n,
                         ptrdiff_t cols) noexcept nogil:
    if floating is float:
        fp_gather_rows_f(src, idx, out, n, cols)
    else:
        fp_gather_rows_d(src, idx, out, n, cols)


cdef inline void _bind(Tape *p, const void *X, bint training) noexcept nogil:
    """Each node's input: X for the first, the previous node's output after; in inference a
    Dropout node passes its input through (its a is its x)."""
    cdef int i
    cdef Node *nd
    cdef char *cur = <char *> X
    for i in range(p.L):
        nd = &p.nodes[i]
        nd.x = cur
        if nd.kind == NODE_DROPOUT and not training:
            continue
        cur = nd.a


cdef inline Node *_out(Tape *p) noexcept nogil:
    return &p.nodes[p.L - 1]


cdef inline floating *_W(Node *nd, floating *params) noexcept nogil:
    return params + nd.p_off


cdef inline floating *_b(Node *nd, floating *params) noexcept nogil:
    return params + nd.p_off + <Py_ssize_t> nd.n_in * nd.n_out


cdef inline floating *_dprev(Tape *p, int i, floating *dummy) noexcept nogil:
    """Where node i's backward writes its input's delta (the previous node's g), or NULL
    when no node before it has parameters."""
    return <floating *> p.nodes[i - 1].g if p.nodes[i].need_dprev else NULL


cdef class Engine


cdef bint _py_node(Tape *p, void *errors, int i, int n, int phase, bint training, char *x,
                   char *out) noexcept nogil:
    """Call the Python layer of node i with the GIL (see Engine._call_python): its input x
    (n, width) copied in, its checked result copied to out (NULL: none wanted). False when
    it raised: the exception is appended to errors (a list), and the caller stops its loop.
    The layer's NumPy code runs in the caller's floating-point mode (no flush-to-zero)."""
    cdef bint ok
    cdef unsigned int mode = fp_ftz_begin()
    fp_ftz_end(p.csr)
    with gil:
        ok = (<Engine> p.engine)._call_python(<list> <object> errors, i, n, phase, training,
                                              x, out)
    fp_ftz_end(mode)
    return ok


cdef void _forward(Tape *p, const floating *X, const floating *params, int n,
                   bint training) noexcept nogil:
    """Every node's output into the workspace, in order (dropout masks drawn when training)."""
    cdef int i
    cdef Node *nd
    _bind(p, X, training)
    for i in range(p.L):
        nd = &p.nodes[i]
        if nd.kind == NODE_DENSE:
            dense_node_forward(nd, _W(nd, <floating *> params), _b(nd, <floating *> params), n)
        elif nd.kind == NODE_DROPOUT:
            if training:
                # a split worker draws its rows' masks where the whole batch's stream has them
                fp_rng_skip(&p.rng, <uint64_t> p.rows_before * nd.n_in)
                dropout_node_forward(nd, <floating *> NULL, n, &p.rng)
                fp_rng_skip(&p.rng, <uint64_t> p.rows_after * nd.n_in)
        elif nd.kind == NODE_ACTIVATION:
            activation_node_forward(nd, <floating *> NULL, n)
        elif nd.kind == NODE_PYTHON:
            if not _py_node(p, p.errors, i, n, 0, training, nd.x, nd.a):
                p.py_failed = True
                return
        else:
            norm_node_forward(nd, params, <floating *> p.state, n, training)


cdef bint _stats_ok(Tape *p, int n, floating *dummy) noexcept nogil:
    """Every BatchNorm's batch statistics are finite and in range (see norm_node_stats_ok)."""
    cdef int i
    for i in range(p.L):
        if not norm_node_stats_ok(&p.nodes[i], n, dummy):
            return False
    return True


cdef void _commit(Tape *p, int n, floating *dummy) noexcept nogil:
    """After an accepted training step: each BatchNorm's running statistics move towards its
    batch's (PyTorch updates them in every training forward; here a refused step changes no
    state either)."""
    cdef int i
    for i in range(p.L):
        if p.nodes[i].kind == NODE_BATCHNORM:
            norm_node_commit(&p.nodes[i], <floating *> p.state, n)


cdef void _backward(Tape *p, const floating *params, floating *grads, int n,
                    bint training) noexcept nogil:
    """grads := every parameter's gradient (overwritten, so no zeroing pass), given the output
    node's dz in its g (the loss's fused output: the last node's activation is done)."""
    cdef int i
    cdef Node *nd
    for i in range(p.L - 1, -1, -1):
        nd = &p.nodes[i]
        if nd.kind == NODE_DENSE:
            dense_node_backward(nd, _W(nd, <floating *> params), _W(nd, grads), _b(nd, grads),
                                _dprev(p, i, grads), n, i == p.L - 1, False)
            if p.n_penalty and _penalized(nd):    # (0 in compute_gradients(penalty=False))
                dense_node_penalty_add(nd, _W(nd, <floating *> params), _W(nd, grads), 1.0)
        elif nd.kind == NODE_BATCHNORM or nd.kind == NODE_LAYERNORM:
            norm_node_backward(nd, params, grads, n, training)
        elif nd.kind == NODE_PYTHON:
            # its parameters' gradients are written by the Python tier into grads; da_prev
            # into the previous node's g when a node before has parameters
            if (nd.p_off >= 0 or nd.need_dprev) and not _py_node(
                    p, p.errors, i, n, 1, training, nd.g,
                    p.nodes[i - 1].g if nd.need_dprev else NULL):
                p.py_failed = True
                return
        else:
            _backward_no_params(p, nd, i, grads, n, training)


cdef inline bint _penalized(Node *nd) noexcept nogil:
    """A Dense node whose weight penalty counts (a frozen layer's does not: Keras sums the
    penalties of trainable weights only)."""
    return (nd.l1 != 0 or nd.l2 != 0) and not nd.frozen


cdef double _penalty(Tape *p, const floating *params) noexcept nogil:
    """The weight penalties' loss term: sum over the penalized Dense nodes of
    l1 * sum|W| + l2 * sum W^2 (0 without any)."""
    cdef int i
    cdef double total = 0
    cdef Node *nd
    if p.n_penalty == 0:
        return 0
    for i in range(p.n_dense):
        nd = &p.nodes[p.dense[i]]
        if _penalized(nd):
            total += dense_node_penalty(nd, _W(nd, <floating *> params))
    return total


cdef double _penalty_add(Tape *p, const floating *params, floating *grads) noexcept nogil:
    """grads += the weight penalties' gradient (l1 * sign(W) + 2 * l2 * W on each penalized
    Dense's dW); returns their loss term, as _penalty."""
    cdef int i
    cdef Node *nd
    for i in range(p.n_dense):
        nd = &p.nodes[p.dense[i]]
        if _penalized(nd):
            dense_node_penalty_add(nd, _W(nd, <floating *> params), _W(nd, grads), 1.0)
    return _penalty(p, params)


cdef inline void _backward_no_params(Tape *p, Node *nd, int i, floating *like, int n,
                                     bint training) noexcept nogil:
    """Backward of node i when it has no parameters (Dropout, Activation): in place on the
    delta it receives, when a node before it needs da_prev. ``like`` only picks the dtype."""
    if not nd.need_dprev:
        return
    if nd.kind == NODE_DROPOUT:
        if training:
            dropout_node_backward(nd, <floating *> NULL, n)
    elif nd.kind == NODE_ACTIVATION:
        if i < p.L - 1:
            activation_node_backward(nd, <floating *> NULL, n)


cdef inline double _max_abs(const floating *x, ptrdiff_t n) noexcept nogil:
    if floating is float:
        return fp_max_abs_f(x, n)
    else:
        return fp_max_abs_d(x, n)


cdef void _deltas(Tape *p, floating *params, floating *grads, int n,
                  bint training) noexcept nogil:
    """Every node's delta with the current weights, last node to first (each Dense keeps its
    own delta buffer): fused SGD's first phase, and a batch-split worker's backward over its
    rows. A norm node's dgamma / dbeta go to grads here (its backward overwrites the delta it
    reads); a Dense's dW, db are left to the caller."""
    cdef int i
    cdef Node *nd
    for i in range(p.L - 1, -1, -1):
        nd = &p.nodes[i]
        if nd.kind == NODE_DENSE:
            dense_node_delta(nd, _W(nd, params), _dprev(p, i, params), n, i == p.L - 1)
        elif nd.kind == NODE_BATCHNORM or nd.kind == NODE_LAYERNORM:
            norm_node_backward(nd, params, grads, n, training)
        else:
            _backward_no_params(p, nd, i, params, n, training)


cdef inline bint _sgd_bound_ok(double lr, int n, double amax, double dmax,
                               floating *dummy) noexcept nogil:
    """Fused SGD's refusal rule for one Dense: lr * n * max(max|x|, 1) * max|dz| below 1e37
    (float32; 1e306 for float64); NaN / inf: False."""
    cdef double limit = 1e37 if floating is float else 1e306
    return lr * n * (amax if amax > 1 else 1.0) * dmax < limit


cdef bint _backward_sgd(Tape *p, floating *params, floating *grads, int n, bint training,
                        double lr) noexcept nogil:
    """Backward with plain SGD fused in: W += -lr * x.T @ dz as one GEMM per Dense with
    alpha = -lr, beta = 1, and b -= lr * dz.sum(0); the dW pass over the gradient buffer and
    the separate update pass disappear (grads holds db only: dW is never materialized).

    Two phases, so that a step is applied whole or not at all: first every node's delta with
    the old weights (each Dense keeps its own delta buffer), then, only if no update can
    overflow, the updates. The bound: every entry of x.T @ dz is at most
    n * max|x| * max|dz|; the step is refused (returns False, nothing written) when lr times
    that is not below 1e37 (float32; 1e306 for float64) or any dz or x is not finite."""
    cdef int i
    cdef Node *nd
    cdef double amax, dmax
    cdef double limit = 1e37 if floating is float else 1e306
    _deltas(p, params, grads, n, training)
    for i in range(p.n_dense):
        nd = &p.nodes[p.dense[i]]
        dmax = _max_abs(<floating *> nd.g, <ptrdiff_t> n * nd.n_out)
        amax = _max_abs(<floating *> nd.x, <ptrdiff_t> n * nd.n_in)
        if not _sgd_bound_ok(lr, n, amax, dmax, params):
            return False
        if _penalized(nd):     # the penalty's step: lr * (l1 + 2 * l2 * max|W|) at most
            amax = _max_abs(_W(nd, params), <ptrdiff_t> nd.n_in * nd.n_out)
            if not (lr * (nd.l1 + 2 * nd.l2 * amax) < limit):
                return False
    for i in range(p.n_dense - 1, -1, -1):
        nd = &p.nodes[p.dense[i]]
        if _penalized(nd):     # from the old W (x.T @ dz does not read W)
            dense_node_penalty_add(nd, _W(nd, params), _W(nd, params), -lr)
        dense_node_sgd(nd, _W(nd, params), _b(nd, params), _b(nd, grads), n, lr)
    return True


cdef double _loss_grad(Tape *p, const floating *y, const long long *labels, const floating *w,
                       int n, bint grad) noexcept nogil:
    """The loss of the output node, and (grad) dL/dz into its g, where z is the input of its
    activation: a Dense's z, an Activation node's x, a norm node's output (its act is the
    identity)."""
    cdef Node *nd = _out(p)
    cdef floating *z = <floating *> (nd.z if nd.kind == NODE_DENSE else
                                     nd.x if nd.kind == NODE_ACTIVATION else nd.a)
    return loss_and_grad(p.loss, nd.act, z, <floating *> nd.a, y, labels, w, n, nd.n_out,
                         <floating *> nd.g if grad else NULL,
                         <floating *> nd.g if grad else NULL, p.norm)


cdef double _step(Tape *p, const floating *X, const floating *y, const long long *labels,
                  const floating *w, floating *params, floating *grads, Py_ssize_t n_params,
                  int n, int opt_kind, const double *hyper, floating **state, int n_state,
                  long long t, bint update) noexcept nogil:
    """Forward, loss, backward and (if update) the optimizer, for one batch; returns the loss
    of the forward pass. With update, a step whose loss or gradients are not finite, or whose
    update or optimizer state could overflow, changes no parameter and no optimizer state and
    sets p.refused (inputs so large that z overflows, or diverged weights): the parameters never
    become NaN / inf through a step."""
    cdef double loss
    cdef Threads th
    cdef uint64_t rng0 = p.rng
    _threads_begin(&th, p, n)
    p.refused = False
    _forward(p, X, params, n, True)
    if p.py_failed:               # a Python node raised: nothing more runs, nothing changed
        p.refused = True
        p.rng = rng0
        _threads_end(&th)
        return 0.0
    loss = _loss_grad(p, y, labels, w, n, True)
    if p.n_penalty:
        loss += _penalty(p, params)
    if update and (not isfinite(loss) or (p.n_norm and not _stats_ok(p, n, params))):
        p.refused = True
    elif update and opt_kind == OPT_SGD and hyper[SGD_MOMENTUM] == 0 and \
            hyper[H_WEIGHT_DECAY] == 0 and hyper[H_CLIP_NORM] <= 0 and p.n_norm == 0 and \
            p.n_frozen == 0 and p.n_python == 0:
        p.refused = not _backward_sgd(p, params, grads, n, True, hyper[H_LR])
    else:
        _backward(p, params, grads, n, True)
        if p.py_failed:
            p.refused = True
            p.rng = rng0
        elif update:
            p.refused = not _update(p, params, grads, n_params, opt_kind, hyper, state, n_state,
                                    t)
    if p.n_norm and not p.refused and _stats_ok(p, n, params):
        _commit(p, n, params)
    _threads_end(&th)
    return loss


cdef bint _update(Tape *p, floating *params, floating *grads, Py_ssize_t n_params,
                  int opt_kind, const double *hyper, floating **state, int n_state,
                  long long t) noexcept nogil:
    """The optimizer update from grads, applied whole or refused (returns False, nothing
    written). One vectorized pass over the gradients (0.2 % of the large net's step), and one
    over the parameters and the state an update grows: refused when a gradient is not finite,
    or so large that the update or the optimizer's state could overflow (a v of inf would
    freeze that parameter for good); see update_is_safe. NaN compares false: refused.

    Frozen ranges (p.n_frozen): their gradients are zeroed first (so the refusal rule and
    clip_norm see the trainable gradients only), their parameters and optimizer state are
    kept in p.fscratch across the step and written back bit for bit."""
    cdef double gmax
    _frozen_zero(p, grads)
    gmax = _max_abs(grads, n_params)
    if not update_is_safe(opt_kind, hyper, params, grads, state, n_state, n_params, t, gmax):
        return False
    _frozen_keep(p, params, state, n_state, True)
    optimizer_step(opt_kind, hyper, params, grads, state, n_params, t)
    _frozen_keep(p, params, state, n_state, False)
    return True


cdef inline void _frozen_zero(Tape *p, floating *grads) noexcept nogil:
    """The frozen ranges' gradients := 0."""
    cdef int r
    for r in range(p.n_frozen):
        memset(grads + p.frozen[2 * r], 0,
               (p.frozen[2 * r + 1] - p.frozen[2 * r]) * sizeof(floating))


cdef void _frozen_keep(Tape *p, floating *params, floating **state, int n_state,
                       bint save) noexcept nogil:
    """The frozen ranges' parameters and optimizer state into p.fscratch (save), or back
    from it, bit for bit (unused state slots are NULL)."""
    cdef int r, k
    cdef Py_ssize_t a, m, off = 0
    cdef floating *keep = <floating *> p.fscratch
    for r in range(p.n_frozen):
        a, m = p.frozen[2 * r], p.frozen[2 * r + 1] - p.frozen[2 * r]
        if save:
            memcpy(keep + off, params + a, m * sizeof(floating))
        else:
            memcpy(params + a, keep + off, m * sizeof(floating))
        off += m
        for k in range(n_state):
            if state[k] != NULL:
                if save:
                    memcpy(keep + off, state[k] + a, m * sizeof(floating))
                else:
                    memcpy(state[k] + a, keep + off, m * sizeof(floating))
            off += m


cdef double _count_correct(Tape *p, const floating *y, const long long *labels,
                           int n) noexcept nogil:
    """Correct predictions in the output node's a for the batch's targets: samples whose
    arg-max matches the label (cross-entropy), or outputs on the right side of 0.5 (binary
    cross-entropy). Lets fit report a running training accuracy without a second pass."""
    cdef int i, j, best, truth, k = _out(p).n_out
    cdef const floating *a = <floating *> _out(p).a
    cdef double correct = 0
    if p.loss == FP_CROSS_ENTROPY:
        for i in range(n):
            best = 0
            truth = 0
            for j in range(1, k):
                if a[i * k + j] > a[i * k + best]:
                    best = j
                if labels == NULL and y[i * k + j] > y[i * k + truth]:
                    truth = j
            if labels != NULL:
                truth = <int> labels[i]
            correct += best == truth
    elif p.loss == FP_BINARY_CROSS_ENTROPY:
        for i in range(n * k):
            correct += (a[i] > 0.5) == (y[i] > 0.5)
    return correct


cdef void _predict(Tape *p, const floating *X, const floating *params, int n, int rows,
                   floating *buf0, floating *buf1, floating *out_a, floating *out_z,
                   double *scratch, void *errors) noexcept nogil:
    """Inference in chunks of `rows` samples through two ping-pong buffers: a copy of the
    tape's nodes (so that concurrent calls never share one) bound to them node by node. The
    output node writes a to out_a and, if out_z is not NULL, the input of its activation
    (a Dense's z, an Activation node's x, a norm node's output) to out_z. Dropout nodes pass
    through. scratch: 2 * max_norm doubles then max(rows, max_norm) values (norm nodes).
    A Python node that raises stops the call (its exception appended to errors, a list)."""
    cdef int r0 = 0, nr, i, n_in0 = p.nodes[0].n_in
    cdef bint failed = False
    cdef floating *cur
    cdef floating *nxt
    cdef Node nd
    cdef Threads th
    _threads_begin(&th, p, rows if n > rows else n)
    while r0 < n and not failed:
        nr = rows if n - r0 > rows else n - r0
        cur = <floating *> (X + <ptrdiff_t> r0 * n_in0)
        for i in range(p.L):
            nd = p.nodes[i]
            if nd.kind == NODE_DROPOUT:
                continue
            nd.x = <char *> cur
            if i == p.L - 1:
                nxt = out_a + <ptrdiff_t> r0 * nd.n_out
            else:
                nxt = buf1 if cur == buf0 else buf0
            nd.a = <char *> nxt
            if nd.kind == NODE_DENSE:
                nd.z = <char *> (out_z + <ptrdiff_t> r0 * nd.n_out
                                 if i == p.L - 1 and out_z != NULL else nxt)
                dense_node_forward(&nd, _W(&nd, <floating *> params),
                                   _b(&nd, <floating *> params), nr)
            elif nd.kind == NODE_ACTIVATION:
                if i == p.L - 1 and out_z != NULL:
                    memcpy(out_z + <ptrdiff_t> r0 * nd.n_out, cur,
                           <size_t> nr * nd.n_out * sizeof(floating))
                activation_node_forward(&nd, <floating *> NULL, nr)
            elif nd.kind == NODE_PYTHON:
                if not _py_node(p, errors, i, nr, 2, False, nd.x, nd.a):
                    failed = True
                    break
                if i == p.L - 1 and out_z != NULL:
                    memcpy(out_z + <ptrdiff_t> r0 * nd.n_out, nxt,
                           <size_t> nr * nd.n_out * sizeof(floating))
            else:
                norm_node_predict(&nd, params, <floating *> p.state, nr,
                                  <floating *> (scratch + 2 * p.max_norm), scratch)
                if i == p.L - 1 and out_z != NULL:
                    memcpy(out_z + <ptrdiff_t> r0 * nd.n_out, nxt,
                           <size_t> nr * nd.n_out * sizeof(floating))
            cur = nxt
        r0 += nr
    _threads_end(&th)


cdef void _gemms_only(Tape *p, const floating *X, const floating *params, floating *grads,
                      int n, bint train) noexcept nogil:
    """The GEMMs of a step and nothing else (the speed floor a step is measured against):
    forward z = x @ W for every Dense node; with train also dW += x.T @ dz and, where a node
    before has parameters, da_prev = dz @ W.T."""
    cdef int i, j
    cdef Node *nd
    cdef Threads th
    _threads_begin(&th, p, n)
    _bind(p, X, True)
    for i in range(p.n_dense):
        nd = &p.nodes[p.dense[i]]
        dense_node_gemms(nd, _W(nd, <floating *> params), NULL, NULL, n, False)
    if train:
        for i in range(p.n_dense - 1, -1, -1):
            j = p.dense[i]
            nd = &p.nodes[j]
            dense_node_gemms(nd, _W(nd, <floating *> params), _W(nd, grads),
                             _dprev(p, j, grads), n, True)
    _threads_end(&th)


# -- Batch-split calls ----------------------------------------------------------------------------
# On nets whose GEMMs are too small for BLAS threads to pay (a 32 x 784-128-10 step ran as fast
# on one BLAS thread as on two), a call splits its minibatch instead, in parts run by the
# engine's pool (csrc/fp_pool.h; the calling thread takes parts too), BLAS set to one thread
# for the whole call (threads x BLAS threads never exceeds the threads asked for):
#   (0) fewer than _COL0_ROWS rows per part: the rows gathered by row parts, then the first
#       Dense's forward over the whole batch by column parts (_col0_work);
#   (1) row parts: part w of k takes rows [n w / k, n (w + 1) / k): forward, loss, and every
#       node's delta (_deltas; each Dense keeps its own delta buffer);
#   (2) weight parts: rows [n_in w / k, n_in (w + 1) / k) of every dW over the whole batch (one
#       GEMM with k = n: no per-thread gradient buffers to sum) and a share of db's columns, or
#       plain SGD fused into those GEMMs (W += -lr x.T dz), as the one-thread step does;
#   (3) the optimizer by slices of the flat arrays, after the refusal rule (_split_update).
# The one-thread step's refusal rules are checked between the phases on whole-batch maxima,
# so nothing is written before the step is accepted. Every sum has an order fixed by the parts
# (not the threads): bit-identical from run to run with the same k.
#
# Each part's tape is a copy of the engine's whose node buffers point at its rows of the
# engine's workspace (a node buffer is (capacity, width) row-major, so a row slice is
# contiguous): after a split step the workspace holds the whole batch, as after one thread's.
# Only a LayerNorm's own workspace (its x_hat and per-row statistics, laid out for the call's
# row count) and its dgamma / dbeta (summed in part order afterwards) are private to the part. The loss of each slice is divided by the whole batch's
# weight sum (or its row count), so the slices' losses and gradients sum to the batch's. Dropout
# masks: each worker's stream jumps to the draws of its first row (fp_rng_skip), so the masks
# are those of the unsplit batch. BatchNorm needs the whole batch's statistics: a training
# step with a BatchNorm node is never split; LayerNorm is per row. Nor is a call with a Python
# node (its calls take the GIL, on the calling thread). Frozen ranges (layer.trainable = False):
# zeroed in the split update before its refusal rule, their parameters and optimizer state kept
# across the update by slices (_frozen_zero / _frozen_keep, shared with _update); fused SGD is
# off, as with one thread. Dense weight penalties (l1 / l2): their loss term added once for the
# batch, their dW term (or, fused, the SGD shrink from the old W) on each weight part's rows of
# W, and fused SGD's refusal bound extended as in _backward_sgd. A frozen BatchNorm still keeps
# the training step unsplit (any BatchNorm does).
#
# The cost model (_split_plan): split when the configured thread count is > 1, the batch's
# forward multiply-adds reach _split_work_min (below, waking a worker costs more than it
# saves) and each worker gets at least _split_rows_min rows (with fewer, a dW GEMM of a few
# rows runs at GEMV speed and the reduction of k gradient buffers dominates: BLAS threads, or
# one thread, as before); a training call of _split_work_max multiply-adds or more whose
# layers reach _thread_work_min runs on BLAS threads instead (each part re-packs every W:
# there BLAS threads measured faster). Measurements behind the thresholds: fastprop._threads.

cdef enum:
    _MAX_STATE = 8          # state arrays the update by slices offsets (more: one thread)
    _COL0_ROWS = 64         # fewer rows per part: the first Dense's forward by columns

cdef long long _split_work_min = 1 << 62
cdef int _split_rows_min = 1 << 30
cdef long long _split_work_max = 1 << 62


def set_split_control(long long work_min, int rows_min, long long work_max=-1):
    """Install the cost model's thresholds (fastprop._threads): a call is batch-split when
    n * (multiply-adds per sample) >= work_min and every worker gets >= rows_min rows, and a
    training call also when its multiply-adds stay under work_max or none of its layers would
    run on BLAS threads (work_max < 0: unchanged)."""
    global _split_work_min, _split_rows_min, _split_work_max
    _split_work_min = work_min
    _split_rows_min = rows_min if rows_min > 1 else 1
    if work_max >= 0:
        _split_work_max = work_max


def split_control():
    """The cost model's thresholds (work_min, rows_min, work_max)."""
    return _split_work_min, _split_rows_min, _split_work_max


cdef struct Split:
    Tape *main              # the engine's tape
    Tape *tapes             # one per part (their own node arrays)
    void **grads            # one norm-parameter gradient buffer per part (tapes with norm
                            # nodes; NULL otherwise), laid out as the model's grads
    char **ln_work          # one LayerNorm workspace per part (NULL without LayerNorm)
    double *losses          # per part: its rows' loss and correct count; its slice's max |g|
    double *correct
    double *gmax
    double *amax            # per part and Dense node (k x n_dense): max |x|, max |dz| of its
    double *dmax            # rows (fused SGD's refusal rule)
    int k                   # parts in this call
    int n                   # rows of the minibatch
    const void *px          # inputs as given to the call (pi: the rows to gather)
    const void *py
    const void *pl
    const void *pw
    const int64_t *pi
    void *params
    void *grads_out         # the engine's grads
    Py_ssize_t n_params
    double norm             # the whole batch's loss divisor
    uint64_t rng_after      # the dropout stream after the batch
    bint is_double
    bint count_correct
    bint fused              # plain SGD fused into the dW GEMMs (lr below)
    bint col0               # the first node (a Dense) runs forward by column parts
    bint gathered           # the minibatch rows are already in the workspace
    double lr
    int itemsize
    int n_in0
    int kout
    # the update by slices: the optimizer's arguments
    int opt_kind
    const double *hyper
    void **state
    int n_state
    long long t


cdef inline int _split_rows(int n, int k, int w) noexcept nogil:
    """First row of part w's slice (w = k: n)."""
    return <int> ((<long long> n * w) // k)


cdef void _split_bind(Split *s, int w, int r0, int nr) noexcept nogil:
    """Part w's tape: the engine's, with every node buffer moved to rows r0 .. r0 + nr."""
    cdef Tape *m = s.main
    cdef Tape *t = &s.tapes[w]
    cdef Node *nodes = t.nodes
    cdef Node *nd
    cdef Py_ssize_t sz = s.itemsize, off = 0
    cdef int i
    t[0] = m[0]
    t.nodes = nodes
    memcpy(nodes, m.nodes, <size_t> m.L * sizeof(Node))
    for i in range(m.L):
        nd = &nodes[i]
        if nd.z != NULL:
            nd.z += r0 * nd.n_out * sz
        nd.a += r0 * nd.n_out * sz
        nd.g += r0 * nd.n_out * sz
        if nd.kind == NODE_DROPOUT:
            nd.w += r0 * nd.n_in * sz
        elif nd.kind == NODE_LAYERNORM:
            nd.w = s.ln_work[w] + off
            off += (norm_node_nbytes(nd.kind, nr, nd.n_in, sz) + 63) // 64 * 64
    t.xb = m.xb + r0 * s.n_in0 * sz
    t.yb = m.yb + r0 * s.kout * sz
    t.lb = m.lb + r0 * 8
    t.wb = m.wb + r0 * sz
    t.rows_before = r0
    t.rows_after = s.n - r0 - nr
    t.norm = s.norm
    t.in_split = True


cdef void _rows_work(Split *s, int w, floating *dummy) noexcept nogil:
    """Phase 1, part w: its rows' forward, loss and every node's delta (each Dense keeps its
    own: the dW GEMMs over all rows come in phase 2); a LayerNorm's dgamma / dbeta of its rows
    into its own buffer; for fused SGD, max |x| and max |dz| of its rows per Dense."""
    cdef int r0 = _split_rows(s.n, s.k, w), nr = _split_rows(s.n, s.k, w + 1) - r0, i
    cdef Tape *t = &s.tapes[w]
    cdef Node *nd
    cdef const floating *X
    cdef const floating *y = NULL
    cdef const long long *labels = NULL
    cdef const floating *wt = NULL
    cdef Tape tail
    _split_bind(s, w, r0, nr)
    if s.pi != NULL:
        if not s.gathered:
            _gather_rows(s, t, r0, nr, dummy)
        X = <floating *> t.xb
        if s.py != NULL:
            y = <floating *> t.yb
        if s.pw != NULL:
            wt = <floating *> t.wb
        if s.pl != NULL:
            labels = <long long *> t.lb
    else:
        X = <const floating *> s.px + <ptrdiff_t> r0 * s.n_in0
        if s.py != NULL:
            y = <const floating *> s.py + <ptrdiff_t> r0 * s.kout
        if s.pw != NULL:
            wt = <const floating *> s.pw + r0
        if s.pl != NULL:
            labels = <const long long *> s.pl + r0
    if s.col0:
        # node 0's output is in the workspace (_col0_work): the rest of the tape from node 1,
        # as a tape of L - 1 nodes (node 1's _dprev is node 0's g, just before it), then node
        # 0's own delta (nothing before it needs da_prev)
        tail = t[0]
        tail.nodes = t.nodes + 1
        tail.L = t.L - 1
        t.nodes[0].x = <char *> X
        _forward(&tail, <floating *> t.nodes[0].a, <floating *> s.params, nr, True)
        s.losses[w] = _loss_grad(&tail, y, labels, wt, nr, True)
        _deltas(&tail, <floating *> s.params, <floating *> s.grads[w], nr, True)
        dense_node_delta(&t.nodes[0], _W(&t.nodes[0], <floating *> s.params), <floating *> NULL,
                         nr, False)
        t.rng = tail.rng
    else:
        _forward(t, X, <floating *> s.params, nr, True)
        s.losses[w] = _loss_grad(t, y, labels, wt, nr, True)
        _deltas(t, <floating *> s.params, <floating *> s.grads[w], nr, True)
    if s.fused:
        for i in range(t.n_dense):
            nd = &t.nodes[t.dense[i]]
            s.dmax[w * t.n_dense + i] = _max_abs(<floating *> nd.g, <ptrdiff_t> nr * nd.n_out)
            s.amax[w * t.n_dense + i] = _max_abs(<floating *> nd.x, <ptrdiff_t> nr * nd.n_in)
    if s.count_correct:
        s.correct[w] = _count_correct(t, y, labels, nr)
    if w == 0:
        s.rng_after = t.rng


cdef void _gather_rows(Split *s, Tape *t, int r0, int nr, floating *dummy) noexcept nogil:
    """The minibatch rows r0 .. r0 + nr (s.pi) of X / y / w / labels into t's (part) slices
    of the workspace."""
    cdef int i
    _gather(<const floating *> s.px, s.pi + r0, <floating *> t.xb, nr, s.n_in0)
    if s.py != NULL:
        _gather(<const floating *> s.py, s.pi + r0, <floating *> t.yb, nr, s.kout)
    if s.pw != NULL:
        _gather(<const floating *> s.pw, s.pi + r0, <floating *> t.wb, nr, 1)
    if s.pl != NULL:
        for i in range(nr):
            (<int64_t *> t.lb)[i] = (<const int64_t *> s.pl)[s.pi[r0 + i]]


cdef void _gather_task(void *ctx, int w, int k) noexcept nogil:
    cdef Split *s = <Split *> ctx
    cdef int r0 = _split_rows(s.n, k, w), nr = _split_rows(s.n, k, w + 1) - r0
    _split_bind(s, w, r0, nr)
    if s.is_double:
        _gather_rows[double](s, &s.tapes[w], r0, nr, NULL)
    else:
        _gather_rows[float](s, &s.tapes[w], r0, nr, NULL)


cdef void _col0_work(Split *s, int w, floating *dummy) noexcept nogil:
    """Phase 0, part w: the first node's (a Dense's) forward over the whole batch for its
    columns [n_out w / k, n_out (w + 1) / k): z[:, c0:c1] := X @ W[:, c0:c1] + b[c0:c1],
    a[:, c0:c1] := g(z[:, c0:c1]). By columns, each part packs only its share of W: split by
    rows, every part packed the whole W for a few rows (on the 32 x 784-128-10 step the
    packing was then a quarter of the CPU time)."""
    cdef Node *nd = &s.main.nodes[0]
    cdef int c0 = _split_rows(nd.n_out, s.k, w), c1 = _split_rows(nd.n_out, s.k, w + 1), r, c
    cdef const floating *X = <const floating *> (s.main.xb if s.pi != NULL else s.px)
    cdef const floating *b = _b(nd, <floating *> s.params)
    cdef floating *z = <floating *> nd.z
    cdef floating *a = <floating *> nd.a
    cdef ptrdiff_t o
    if c1 <= c0:
        return
    for r in range(s.n):
        o = <ptrdiff_t> r * nd.n_out
        for c in range(c0, c1):
            z[o + c] = b[c]
    gemm(False, False, s.n, c1 - c0, nd.n_in, <floating> 1, X, nd.n_in,
         _W(nd, <floating *> s.params) + c0, nd.n_out, <floating> 1, z + c0, nd.n_out)
    if nd.act != FP_IDENTITY or a != z:
        for r in range(s.n):
            o = <ptrdiff_t> r * nd.n_out + c0
            act_forward(nd.act, z + o, a + o, 1, c1 - c0)


cdef void _col0_task(void *ctx, int w, int k) noexcept nogil:
    cdef Split *s = <Split *> ctx
    cdef unsigned int csr = fp_ftz_begin()
    if s.is_double:
        _col0_work[double](s, w, NULL)
    else:
        _col0_work[float](s, w, NULL)
    fp_ftz_end(csr)


cdef void _colsum_block(const floating *dz, int n, int n_out, int c0, int c1,
                        floating *db) noexcept nogil:
    """db[c] := sum over the n rows of dz[:, c] for c in [c0, c1), summed in double in row
    order (as colsum_add)."""
    cdef double acc[64]
    cdef int c, cb, ce, r
    for cb in range(c0, c1, 64):
        ce = cb + 64 if cb + 64 < c1 else c1
        for c in range(ce - cb):
            acc[c] = 0
        for r in range(n):
            for c in range(cb, ce):
                acc[c - cb] += dz[<ptrdiff_t> r * n_out + c]
        for c in range(cb, ce):
            db[c] = <floating> acc[c - cb]


cdef void _weights_work(Split *s, int w, floating *dummy) noexcept nogil:
    """Phase 2, part w: for every Dense node, the rows [n_in w / k, n_in (w + 1) / k) of dW
    over the whole batch, dW[i0:i1] := x[:, i0:i1].T @ dz (one GEMM, its rows of the result
    contiguous), and db[c0:c1] for its share of the columns; fused SGD writes
    W[i0:i1] += -lr x[:, i0:i1].T @ dz and b[c0:c1] -= lr db[c0:c1] instead."""
    cdef Tape *p = s.main
    cdef Node *nd
    cdef int l, i0, i1, c0, c1, c
    cdef floating *W
    cdef floating *dW
    cdef floating *db
    cdef floating *b
    cdef Node rows               # the node's rows i0 .. i1 of W (its penalty's share)
    for l in range(p.n_dense):
        nd = &p.nodes[p.dense[l]]
        i0 = _split_rows(nd.n_in, s.k, w)
        i1 = _split_rows(nd.n_in, s.k, w + 1)
        c0 = _split_rows(nd.n_out, s.k, w)
        c1 = _split_rows(nd.n_out, s.k, w + 1)
        rows = nd[0]
        rows.n_in = i1 - i0
        W = _W(nd, <floating *> s.params)
        if s.fused:
            if _penalized(nd):     # from the old W, as _backward_sgd
                dense_node_penalty_add(&rows, W + <ptrdiff_t> i0 * nd.n_out,
                                       W + <ptrdiff_t> i0 * nd.n_out, -s.lr)
            gemm(True, False, i1 - i0, nd.n_out, s.n, <floating> -s.lr,
                 <const floating *> nd.x + i0, nd.n_in, <floating *> nd.g, nd.n_out,
                 <floating> 1, W + <ptrdiff_t> i0 * nd.n_out, nd.n_out)
            db = _b(nd, <floating *> s.grads_out)
            b = _b(nd, <floating *> s.params)
            _colsum_block(<floating *> nd.g, s.n, nd.n_out, c0, c1, db)
            for c in range(c0, c1):
                b[c] = b[c] + <floating> -s.lr * db[c]
        else:
            dW = _W(nd, <floating *> s.grads_out)
            gemm(True, False, i1 - i0, nd.n_out, s.n, <floating> 1,
                 <const floating *> nd.x + i0, nd.n_in, <floating *> nd.g, nd.n_out,
                 <floating> 0, dW + <ptrdiff_t> i0 * nd.n_out, nd.n_out)
            if p.n_penalty and _penalized(nd):    # (0 in compute_gradients(penalty=False))
                dense_node_penalty_add(&rows, W + <ptrdiff_t> i0 * nd.n_out,
                                       dW + <ptrdiff_t> i0 * nd.n_out, 1.0)
            _colsum_block(<floating *> nd.g, s.n, nd.n_out, c0, c1,
                          _b(nd, <floating *> s.grads_out))


cdef void _rows_task(void *ctx, int w, int k) noexcept nogil:
    cdef Split *s = <Split *> ctx
    cdef unsigned int csr = fp_ftz_begin()
    if s.is_double:
        _rows_work[double](s, w, NULL)
    else:
        _rows_work[float](s, w, NULL)
    fp_ftz_end(csr)


cdef void _weights_task(void *ctx, int w, int k) noexcept nogil:
    cdef Split *s = <Split *> ctx
    cdef unsigned int csr = fp_ftz_begin()
    if s.is_double:
        _weights_work[double](s, w, NULL)
    else:
        _weights_work[float](s, w, NULL)
    fp_ftz_end(csr)


cdef void _norm_grads(Split *s, floating *dummy) noexcept nogil:
    """Each norm node's dgamma, dbeta := the sum of the parts' buffers, in part order."""
    cdef Tape *p = s.main
    cdef Node *nd
    cdef floating *out
    cdef int i, q
    cdef Py_ssize_t j
    for i in range(p.L):
        nd = &p.nodes[i]
        if nd.kind != NODE_LAYERNORM and nd.kind != NODE_BATCHNORM:
            continue
        out = <floating *> s.grads_out + nd.p_off
        for j in range(2 * nd.n_in):
            out[j] = (<floating *> s.grads[0])[nd.p_off + j]
        for q in range(1, s.k):
            for j in range(2 * nd.n_in):
                out[j] = out[j] + (<floating *> s.grads[q])[nd.p_off + j]


cdef void _gmax_task(void *ctx, int w, int k) noexcept nogil:
    """max |g| over part w's slice of the flat gradient buffer."""
    cdef Split *s = <Split *> ctx
    cdef Py_ssize_t lo = s.n_params * w // k, hi = s.n_params * (w + 1) // k
    if s.is_double:
        s.gmax[w] = _max_abs(<double *> s.grads_out + lo, hi - lo)
    else:
        s.gmax[w] = _max_abs(<float *> s.grads_out + lo, hi - lo)


cdef void _update_work(Split *s, int w, floating *dummy) noexcept nogil:
    """The optimizer step on part w's slice of the flat arrays (an elementwise optimizer:
    no clip_norm), its state arrays offset alike."""
    cdef Py_ssize_t lo = s.n_params * w // s.k, hi = s.n_params * (w + 1) // s.k
    cdef floating *st[_MAX_STATE]
    cdef int i
    for i in range(s.n_state):
        st[i] = NULL if s.state[i] == NULL else <floating *> s.state[i] + lo
    optimizer_step(s.opt_kind, s.hyper, <floating *> s.params + lo,
                   <floating *> s.grads_out + lo, st, hi - lo, s.t)


cdef void _update_task(void *ctx, int w, int k) noexcept nogil:
    cdef Split *s = <Split *> ctx
    cdef unsigned int csr = fp_ftz_begin()
    if s.is_double:
        _update_work[double](s, w, NULL)
    else:
        _update_work[float](s, w, NULL)
    fp_ftz_end(csr)


cdef bint _split_update(Split *s, fp_pool *pool, floating *dummy) noexcept nogil:
    """_update's rule on the gradients (max |g| by slices over the pool), then the step: by
    slices over the pool when the optimizer is elementwise (no clip_norm, whose norm is
    global), else on this thread."""
    cdef double gmax = 0
    cdef int w
    _frozen_zero(s.main, <floating *> s.grads_out)
    fp_pool_run(pool, _gmax_task, s, s.k)
    for w in range(s.k):
        if not (s.gmax[w] <= gmax):      # a larger value, or NaN: kept (NaN is refused below)
            gmax = s.gmax[w]
            if gmax != gmax:
                break
    if not update_is_safe(s.opt_kind, s.hyper, <floating *> s.params,
                          <floating *> s.grads_out, <floating **> s.state, s.n_state,
                          s.n_params, s.t, gmax):
        return False
    _frozen_keep(s.main, <floating *> s.params, <floating **> s.state, s.n_state, True)
    if s.hyper[H_CLIP_NORM] > 0 or s.n_state > _MAX_STATE:
        optimizer_step(s.opt_kind, s.hyper, <floating *> s.params, <floating *> s.grads_out,
                       <floating **> s.state, s.n_params, s.t)
    else:
        fp_pool_run(pool, _update_task, s, s.k)
    _frozen_keep(s.main, <floating *> s.params, <floating **> s.state, s.n_state, False)
    return True


cdef bint _split_sgd_ok(Split *s, floating *dummy) noexcept nogil:
    """Fused SGD's refusal rule over the whole batch, from the parts' maxima."""
    cdef Tape *p = s.main
    cdef Node *nd
    cdef int l, w
    cdef double amax, dmax
    cdef double limit = 1e37 if floating is float else 1e306
    for l in range(p.n_dense):
        amax = dmax = 0
        for w in range(s.k):
            if not (s.amax[w * p.n_dense + l] <= amax):
                amax = s.amax[w * p.n_dense + l]
            if not (s.dmax[w * p.n_dense + l] <= dmax):
                dmax = s.dmax[w * p.n_dense + l]
        if amax != amax or dmax != dmax or not _sgd_bound_ok(s.lr, s.n, amax, dmax, dummy):
            return False
        nd = &p.nodes[p.dense[l]]
        if _penalized(nd):     # the penalty's step, as _backward_sgd
            amax = _max_abs(_W(nd, <floating *> s.params), <ptrdiff_t> nd.n_in * nd.n_out)
            if not (s.lr * (nd.l1 + 2 * nd.l2 * amax) < limit):
                return False
    return True


cdef double _split_norm(Split *s, floating *dummy) noexcept nogil:
    """The whole batch's loss divisor: its weight sum (summed in row order, as the loss kernel
    sums it), or its row count."""
    cdef double total = 0
    cdef int i
    if s.pw == NULL:
        return <double> s.n
    if s.pi != NULL:
        for i in range(s.n):
            total += (<const floating *> s.pw)[s.pi[i]]
    else:
        for i in range(s.n):
            total += (<const floating *> s.pw)[i]
    return total


cdef double _split_step(Split *s, fp_pool *pool, int opt_kind, const double *hyper,
                        void **state, int n_state, long long t, bint update) noexcept nogil:
    """A training step over s.k parts (see above); returns the batch's loss. The refusal rule
    is _step's: a loss or gradient that is not finite (in any part's rows), or an update that
    could overflow, changes nothing (p.refused set)."""
    cdef Tape *p = s.main
    cdef double loss = 0
    cdef int w
    cdef Threads th
    _threads_begin(&th, p, 0)
    if p.norm > 0:
        s.norm = p.norm
    elif s.is_double:
        s.norm = _split_norm[double](s, NULL)
    else:
        s.norm = _split_norm[float](s, NULL)
    s.fused = update and opt_kind == OPT_SGD and hyper[SGD_MOMENTUM] == 0 and \
        hyper[H_WEIGHT_DECAY] == 0 and hyper[H_CLIP_NORM] <= 0 and p.n_norm == 0 and \
        p.n_frozen == 0
    s.lr = hyper[H_LR] if s.fused else 0
    s.opt_kind, s.hyper, s.state, s.n_state, s.t = opt_kind, hyper, state, n_state, t
    p.refused = False
    # small row parts: the first Dense's forward by columns (see _col0_work)
    s.col0 = p.L > 1 and p.nodes[0].kind == NODE_DENSE and p.nodes[0].act != FP_SOFTMAX and \
        s.n < _COL0_ROWS * s.k
    s.gathered = False
    if s.col0:
        if s.pi != NULL:
            fp_pool_run(pool, _gather_task, s, s.k)
            s.gathered = True
        fp_pool_run(pool, _col0_task, s, s.k)
    fp_pool_run(pool, _rows_task, s, s.k)
    for w in range(s.k):
        loss += s.losses[w]
    if p.n_penalty:       # the weight penalties' loss term, once for the batch
        loss += _penalty[double](p, <double *> s.params) if s.is_double else \
            _penalty[float](p, <float *> s.params)
    p.rng = s.rng_after
    # the whole batch's inputs of every node, for the dW GEMMs
    _bind(p, <const void *> p.xb if s.pi != NULL else s.px, True)
    if update and not isfinite(loss):
        p.refused = True
    elif s.fused:
        if s.is_double:
            p.refused = not _split_sgd_ok[double](s, NULL)
        else:
            p.refused = not _split_sgd_ok[float](s, NULL)
        if not p.refused:
            fp_pool_run(pool, _weights_task, s, s.k)
    else:
        fp_pool_run(pool, _weights_task, s, s.k)
        if s.is_double:
            if p.n_norm:
                _norm_grads[double](s, NULL)
            if update:
                p.refused = not _split_update[double](s, pool, NULL)
        else:
            if p.n_norm:
                _norm_grads[float](s, NULL)
            if update:
                p.refused = not _split_update[float](s, pool, NULL)
    _threads_end(&th)
    return loss


cdef inline int _split_plan(Tape *p, Py_ssize_t n, bint train) noexcept nogil:
    """The cost model: how many parts a call over n rows splits into (1: not split; it then
    runs on BLAS threads or one thread, as _threads_begin picks). Inline and first thing in a
    call: the one-thread path pays two comparisons for it."""
    cdef int T
    cdef Py_ssize_t k
    if <double> n * p.macs < <double> _split_work_min or p.n_python or \
            (train and p.n_batchnorm):
        return 1
    T = p.n_threads
    if T == 1:
        return 1
    if T <= 0:
        if _get_threads == NULL:
            return 1
        T = _saved_threads if _in_flight > 0 else _get_threads()
    k = n // _split_rows_min
    if k > T:
        k = T
    if k > 256:
        k = 256
    if k > 1 and train and <double> n * p.macs >= <double> _split_work_max and \
            _blas_threads_pay(p, n):
        return 1            # a large training step: BLAS threads beat the split
    return <int> k if k > 1 else 1


cdef inline bint _blas_threads_pay(Tape *p, Py_ssize_t n) noexcept nogil:
    """Whether an unsplit call over n rows would run its GEMMs on BLAS threads (a layer
    reaches _thread_work_min, as _threads_begin decides)."""
    cdef int l
    for l in range(p.n_dense):
        if <long long> n * p.nodes[p.dense[l]].n_in * p.nodes[p.dense[l]].n_out >= \
                _thread_work_min:
            return True
    return False


cdef struct PSplit:
    Tape *tape              # a copy of the engine's tape marked in_split
    const void *px
    const void *params
    void *out_a
    void *out_z
    int n
    int k
    int rows                # predict's chunk
    size_t row_bytes        # one row of a ping-pong buffer (the widest node)
    size_t extra            # norm nodes' scratch
    int n_in0
    int kout
    bint is_double
    bint failed


cdef void _predict_task(void *ctx, int w, int k) noexcept nogil:
    """Worker w's rows of a split predict, in chunks, with its own scratch."""
    cdef PSplit *s = <PSplit *> ctx
    cdef int r0 = _split_rows(s.n, k, w), nr = _split_rows(s.n, k, w + 1) - r0
    cdef int chunk = s.rows if s.rows < nr else nr
    cdef size_t nbytes = <size_t> chunk * s.row_bytes
    cdef char *b0
    cdef double *scratch
    cdef unsigned int csr
    if nr <= 0:
        return
    b0 = <char *> malloc(2 * nbytes + s.extra + 8)
    if b0 == NULL:
        s.failed = True
        return
    scratch = <double *> (b0 + (2 * nbytes + 7) // 8 * 8)
    csr = fp_ftz_begin()
    if s.is_double:
        _predict[double](s.tape, <const double *> s.px + <ptrdiff_t> r0 * s.n_in0,
                         <const double *> s.params, nr, chunk, <double *> b0,
                         <double *> (b0 + nbytes), <double *> s.out_a + <ptrdiff_t> r0 * s.kout,
                         NULL if s.out_z == NULL else
                         <double *> s.out_z + <ptrdiff_t> r0 * s.kout, scratch, NULL)
    else:
        _predict[float](s.tape, <const float *> s.px + <ptrdiff_t> r0 * s.n_in0,
                        <const float *> s.params, nr, chunk, <float *> b0,
                        <float *> (b0 + nbytes), <float *> s.out_a + <ptrdiff_t> r0 * s.kout,
                        NULL if s.out_z == NULL else
                        <float *> s.out_z + <ptrdiff_t> r0 * s.kout, scratch, NULL)
    fp_ftz_end(csr)
    free(b0)


cdef inline void *_ptr(object arr):
    return NULL if arr is None else cnp.PyArray_DATA(<cnp.ndarray> arr)


cdef inline int _len(object arr):
    """Length of a 1-D array (0 for None): the count of an array of state pointers."""
    return 0 if arr is None else <int> cnp.PyArray_DIMS(<cnp.ndarray> arr)[0]


cdef class Engine:
    """The compiled tape of a Sequential model. Private: fastprop.model validates everything."""
    cdef Tape p
    cdef readonly bint is_double
    cdef readonly Py_ssize_t capacity, n_params
    cdef public bint count_correct     # fit sets it: each step then counts correct predictions
    cdef readonly double last_correct  # ... of its batch (forward pass, before the update)
    cdef readonly bint last_refused    # the last training step changed nothing (see _step)
    cdef readonly int batches_done     # steps train_batches applied (also when it raised)
    cdef object params, grads, state, ws, alloc_check, frozen_arr, fscratch_arr
    cdef object python_node  # the Python tier's callable of the Python nodes (None: none)
    cdef list errors         # exceptions Python nodes raised in the current training call
    cdef readonly bint in_python   # a Python node of a training call is running: the calls
                                   # that use the workspace are refused (see _not_in_python)
    cdef int typenum
    cdef void *pdata         # data of params / grads (the engine holds both arrays)
    cdef void *gdata
    cdef int itemsize, n_in0, k, max_width
    # batch-split calls: the worker pool (created at the first split call), the split
    # context and its per-worker buffers, sized for split_k_cap workers of split_rows_cap rows
    cdef fp_pool *pool
    cdef Split sp
    cdef Node *split_nodes
    cdef int split_k_cap
    cdef Py_ssize_t split_rows_cap
    cdef object split_bufs

    def __cinit__(self):
        memset(&self.p, 0, sizeof(Tape))
        memset(&self.sp, 0, sizeof(Split))
        self.pool = NULL
        self.split_nodes = NULL

    def __init__(self, nodes, int loss, params, grads, uint64_t seed, alloc_check=None,
                 state=None, python_node=None):
        """nodes: the tape, a list of (kind, n_in, n_out, act, rate, p_off, s_off, eps) with
        kind one of NODE_KINDS (the module's constants), act an activation code, rate a
        Dropout's rate or a BatchNorm's momentum, p_off / s_off the first element of the
        node's parameters / state (-1: none), eps a norm node's; a Dense's tuple may end with
        its weight penalty (l1, l2) (>= 0, finite: checked by the caller). state: the model's state
        buffer (of params' dtype; held, its data read and written by BatchNorm nodes). alloc_check(nbytes, 1, name): the caller's check that a
        workspace of nbytes fits (raises ValueError); given by the Python tier, so the core
        imports nothing above it. python_node(i, phase, x, training): the Python tier's runner
        of the NODE_PYTHON nodes (required when there are any; see _call_python)."""
        cdef int L = len(nodes), i, j
        cdef Node *nd
        cdef bint seen_params = False
        self.alloc_check = alloc_check
        self.p.nodes = <Node *> malloc(L * sizeof(Node))
        self.p.dense = <int *> malloc(L * sizeof(int))
        if self.p.nodes == NULL or self.p.dense == NULL:
            raise MemoryError()
        memset(self.p.nodes, 0, L * sizeof(Node))
        self.p.L = L
        self.max_width = 1
        for i, spec in enumerate(nodes):
            nd = &self.p.nodes[i]
            nd.kind, nd.n_in, nd.n_out, nd.act, nd.rate, nd.p_off, nd.s_off, nd.eps = spec[:8]
            if len(spec) > 8:          # a Dense's weight penalty (l1, l2)
                nd.l1, nd.l2 = spec[8], spec[9]
                self.p.n_penalty += nd.l1 != 0 or nd.l2 != 0
            nd.need_dprev = seen_params
            # a Python node may change the width: its delta has a buffer of its own
            nd.inplace_grad = nd.kind != NODE_DENSE and nd.kind != NODE_PYTHON and i > 0
            seen_params = seen_params or nd.p_off >= 0
            if nd.kind == NODE_DENSE:
                self.p.dense[self.p.n_dense] = i
                self.p.n_dense += 1
            elif nd.kind == NODE_BATCHNORM or nd.kind == NODE_LAYERNORM:
                self.p.n_norm += 1
                self.p.max_norm = max(self.p.max_norm, nd.n_in)
            elif nd.kind == NODE_PYTHON:
                self.p.n_python += 1
            if nd.kind == NODE_DENSE:
                self.p.macs += <long long> nd.n_in * nd.n_out
            elif nd.kind == NODE_BATCHNORM:
                self.p.n_batchnorm += 1
            self.max_width = max(self.max_width, nd.n_out)
        if self.p.n_python and not callable(python_node):
            raise TypeError("a tape with Python nodes needs the python_node callable")
        self.python_node = python_node
        self.errors = []
        self.p.engine = <void *> self
        self.p.errors = <void *> self.errors
        self.p.loss = loss
        self.p.rng = seed
        self.params, self.grads, self.state = params, grads, state
        self.p.state = <char *> _ptr(state)
        self.pdata = _ptr(params)
        self.gdata = _ptr(grads)
        self.is_double = params.dtype == np.float64
        self.itemsize = params.dtype.itemsize
        self.typenum = cnp.NPY_DOUBLE if self.is_double else cnp.NPY_FLOAT
        self.n_params = params.shape[0]
        self.n_in0 = self.p.nodes[0].n_in
        self.k = self.p.nodes[L - 1].n_out
        self.capacity = 0
        self.ws = None

    def __dealloc__(self):
        fp_pool_destroy(self.pool)
        self._split_free()
        free(self.p.nodes)
        free(self.p.dense)

    cdef void _split_free(self):
        free(self.sp.tapes)
        free(self.sp.grads)
        free(self.sp.ln_work)
        free(self.sp.losses)
        free(self.sp.correct)
        free(self.sp.gmax)
        free(self.sp.amax)
        free(self.sp.dmax)
        free(self.split_nodes)
        self.sp.tapes = NULL
        self.sp.grads = NULL
        self.sp.ln_work = NULL
        self.sp.losses = NULL
        self.sp.correct = NULL
        self.sp.gmax = NULL
        self.sp.amax = NULL
        self.sp.dmax = NULL
        self.split_nodes = NULL
        self.split_k_cap = 0
        self.split_rows_cap = 0
        self.split_bufs = None

    def split_plan(self, Py_ssize_t n, bint train=True):
        """The workers a training step (train) or a predict over n rows would split into
        (1: not split). Introspection for tests and the bench."""
        return _split_plan(&self.p, n, train)

    cdef int _split_prepare(self, Py_ssize_t n, bint train) except -1:
        """With the GIL, before a call over n rows: the number of workers it runs on. When
        > 1, the pool exists and is acquired for this call (release it after: the pool is
        only ever acquired with the GIL held, so that replacing it here is safe) and, for
        training, the per-worker buffers are large enough."""
        cdef int k = _split_plan(&self.p, n, train)
        cdef Py_ssize_t rows
        if k < 2:
            return 1
        if self.pool != NULL and not fp_pool_usable(self.pool):   # a forked child
            fp_pool_destroy(self.pool)
            self.pool = NULL
        if self.pool != NULL and self.pool.n < k - 1:
            if not fp_pool_try_acquire(self.pool):
                return 1
            fp_pool_destroy(self.pool)
            self.pool = NULL
        if self.pool == NULL:
            self.pool = fp_pool_create(k - 1)
            if self.pool == NULL:
                return 1
        if train:
            rows = (n + k - 1) // k
            if k > self.split_k_cap or rows > self.split_rows_cap:
                self._split_alloc(k if k > self.split_k_cap else self.split_k_cap,
                                  rows if rows > self.split_rows_cap else self.split_rows_cap)
        if not fp_pool_try_acquire(self.pool):      # another thread's call runs on it
            return 1
        return k

    cdef _split_alloc(self, int k, Py_ssize_t rows):
        """Per-worker buffers for k workers of up to rows rows: a gradient buffer each and a
        LayerNorm workspace each (tapes with LayerNorm nodes)."""
        cdef int L = self.p.L, i, w
        cdef Py_ssize_t sz = self.itemsize, ln = 0
        cdef Node *nd
        for i in range(L):
            nd = &self.p.nodes[i]
            if nd.kind == NODE_LAYERNORM:
                ln += (norm_node_nbytes(nd.kind, rows, nd.n_in, sz) + 63) // 64 * 64
        if self.alloc_check is not None:
            self.alloc_check(k * ((self.n_params * sz if self.p.n_norm else 0) + ln + 64), 1,
                             f"the per-thread buffers of {k} threads")
        self._split_free()
        self.sp.tapes = <Tape *> malloc(k * sizeof(Tape))
        self.sp.grads = <void **> malloc(k * sizeof(void *))
        self.sp.ln_work = <char **> malloc(k * sizeof(char *))
        self.sp.losses = <double *> malloc(k * sizeof(double))
        self.sp.correct = <double *> malloc(k * sizeof(double))
        self.sp.gmax = <double *> malloc(k * sizeof(double))
        self.sp.amax = <double *> malloc(k * (self.p.n_dense + 1) * sizeof(double))
        self.sp.dmax = <double *> malloc(k * (self.p.n_dense + 1) * sizeof(double))
        self.split_nodes = <Node *> malloc(<size_t> k * L * sizeof(Node))
        if self.sp.tapes == NULL or self.sp.grads == NULL or self.sp.ln_work == NULL or \
                self.sp.losses == NULL or self.sp.correct == NULL or self.sp.gmax == NULL or \
                self.sp.amax == NULL or self.sp.dmax == NULL or \
                self.split_nodes == NULL:
            self._split_free()
            raise MemoryError()
        bufs = []
        dt = np.float64 if self.is_double else np.float32
        for w in range(k):
            self.sp.grads[w] = NULL
            if self.p.n_norm:     # the norm nodes' dgamma / dbeta of each part's rows
                g = np.empty(max(self.n_params, 1), dtype=dt)
                bufs.append(g)
                self.sp.grads[w] = cnp.PyArray_DATA(g)
            self.sp.ln_work[w] = NULL
            if ln:
                b = np.empty(ln + 64, dtype=np.uint8)
                bufs.append(b)
                self.sp.ln_work[w] = <char *> cnp.PyArray_DATA(b)
                self.sp.ln_work[w] += (64 - (<size_t> self.sp.ln_work[w]) % 64) % 64
            self.sp.tapes[w].nodes = self.split_nodes + <Py_ssize_t> w * L
        self.split_bufs = bufs
        self.split_k_cap = k
        self.split_rows_cap = rows
        self.sp.main = &self.p
        self.sp.is_double = self.is_double
        self.sp.itemsize = self.itemsize
        self.sp.n_in0 = self.n_in0
        self.sp.kout = self.k
        self.sp.n_params = self.n_params
    property has_python_nodes:
        """Whether the tape has Python nodes (NODE_PYTHON): their calls take the GIL, and a
        call must run them on the calling thread, one batch at a time."""
        def __get__(self):
            return self.p.n_python > 0

    cdef bint _call_python(self, list errors, int i, int n, int phase, bint training,
                           char *x, char *out) noexcept:
        """Node i's Python call (the GIL held): python_node(i, phase, x_copy, training) with
        x (n, width in) copied out of the workspace (the layer may keep what it is given);
        its result, an (n, width out) C-contiguous array of the model dtype that the Python
        tier checked, is copied to out unless out is NULL. phase: PY_FORWARD (width in is
        n_in; out the node's a), PY_BACKWARD (x the node's delta (n, n_out); out the previous
        node's delta (n, n_in)), PY_PREDICT. Any exception: appended to errors, False."""
        cdef Node *nd = &self.p.nodes[i]
        cdef int w_in = nd.n_out if phase == PY_BACKWARD else nd.n_in
        cdef int w_out = nd.n_in if phase == PY_BACKWARD else nd.n_out
        cdef cnp.npy_intp dims[2]
        cdef cnp.ndarray res
        dims[0] = n
        dims[1] = w_in
        cdef bint outer = self.in_python
        try:
            arg = np.array(cnp.PyArray_SimpleNewFromData(2, dims, self.typenum, <void *> x))
            if phase != PY_PREDICT:       # predict runs on scratch of its own: allowed inside
                self.in_python = True
            try:
                result = self.python_node(i, phase, arg, training)
            finally:
                self.in_python = outer
            if out != NULL:
                if not cnp.PyArray_CheckExact(result):
                    raise TypeError(f"the Python node {i} returned {type(result).__name__}")
                res = <cnp.ndarray> result
                if cnp.PyArray_TYPE(res) != self.typenum or cnp.PyArray_NDIM(res) != 2 or \
                        cnp.PyArray_DIMS(res)[0] != n or cnp.PyArray_DIMS(res)[1] != w_out or \
                        not cnp.PyArray_IS_C_CONTIGUOUS(res) or not cnp.PyArray_ISALIGNED(res):
                    raise ValueError(f"the Python node {i} returned a {result.dtype} array of "
                                     f"shape {result.shape}, not ({n}, {w_out}) of the model's")
                memcpy(out, cnp.PyArray_DATA(res), <size_t> n * w_out * self.itemsize)
            return True
        except BaseException as exc:
            errors.append(exc)
            return False

    cdef int _not_in_python(self) except -1:
        """RuntimeError when called from a Python node of a running training call: the call
        would overwrite (or reallocate) the workspace that call is using."""
        if self.in_python:
            raise RuntimeError("a custom layer's forward / backward cannot train or run the "
                               "textbook passes of the model it belongs to (train_step, fit, "
                               "forward, backward, compute_gradients, apply_gradients are "
                               "refused inside it; predict and evaluate are allowed)")
        return 0

    cdef int _python_failed(self, bint undo) except -1:
        """After a call whose step failed with Python nodes in the tape: with undo, have the
        Python tier restore its layers' parameters and state (PY_UNDO); then re-raise the
        exception a Python node raised, unchanged, if one did."""
        failed = self.p.py_failed
        self.p.py_failed = False
        if undo:
            self.python_node(-1, PY_UNDO, None, False)
        if failed and self.errors:
            exc = self.errors[len(self.errors) - 1]
            del self.errors[:]
            raise exc
        return 0

    property n_threads:
        """BLAS threads for large layers (0: whatever the BLAS is set to)."""
        def __get__(self):
            return self.p.n_threads

        def __set__(self, int value):
            self.p.n_threads = value if value > 0 else 0

    property rng_state:
        def __get__(self):
            return int(self.p.rng)

        def __set__(self, uint64_t value):
            self.p.rng = value

    property nodes:
        """The tape: per node (kind, n_in, n_out, act, rate, p_off, s_off, eps), as given."""
        def __get__(self):
            cdef Node *nd
            out = []
            for i in range(self.p.L):
                nd = &self.p.nodes[i]
                out.append((nd.kind, nd.n_in, nd.n_out, nd.act, nd.rate, nd.p_off, nd.s_off,
                            nd.eps))
            return out

    property dense_nodes:
        """The node index of each Dense node, in order."""
        def __get__(self):
            return [self.p.dense[i] for i in range(self.p.n_dense)]

    def permutation(self, Py_ssize_t n):
        """A uniformly random permutation of 0 .. n-1 (int64) from the model's stream."""
        out = np.empty(n, dtype=np.int64)
        cdef int64_t *po = <int64_t *> cnp.PyArray_DATA(out)
        with nogil:
            fp_permutation(po, n, &self.p.rng)
        return out

    def ensure_capacity(self, Py_ssize_t n):
        """Size the workspace for batches of up to n samples (grows, never shrinks): per node
        its output a (a Dense's z, which is a for identity), its delta g (its own for a Dense,
        the previous node's for the width-preserving kinds, whose backward runs in place) and
        its own workspace (a Dropout's mask); then the gathered minibatch."""
        if n <= self.capacity:
            return
        self._not_in_python()
        cdef int L = self.p.L, i
        cdef Py_ssize_t off = 0, sz = self.itemsize
        cdef Node *nd
        offsets = []

        def take(Py_ssize_t nbytes):
            nonlocal off
            start = off
            off += (nbytes + 63) // 64 * 64   # 64-byte aligned sub-buffers
            return start

        for i in range(L):
            nd = &self.p.nodes[i]
            zo = wo = go = -1
            if nd.kind == NODE_DENSE:
                zo = take(n * nd.n_out * sz)
                ao = zo if nd.act == FP_IDENTITY else take(n * nd.n_out * sz)
            else:
                ao = take(n * nd.n_out * sz)
            if nd.kind == NODE_DROPOUT:
                wo = take(n * nd.n_in * sz)
            elif nd.kind == NODE_BATCHNORM or nd.kind == NODE_LAYERNORM:
                wo = take(norm_node_nbytes(nd.kind, n, nd.n_in, sz))
            if not nd.inplace_grad:
                go = take(n * nd.n_out * sz)
            offsets.append((zo, ao, go, wo))
        xo = take(n * self.n_in0 * sz)
        yo = take(n * self.k * sz)
        lo = take(n * 8)
        wbo = take(n * sz)
        if self.alloc_check is not None:       # a ValueError, not an OOM kill
            self.alloc_check(off + 64, 1, f"the workspace for batches of {n} samples (z, a, "
                                          f"delta of every layer)")
        ws = np.empty(off + 64, dtype=np.uint8)
        cdef char *base = <char *> cnp.PyArray_DATA(ws)
        base += (64 - (<size_t> base) % 64) % 64
        for i in range(L):
            nd = &self.p.nodes[i]
            zo, ao, go, wo = offsets[i]
            nd.z = NULL if zo < 0 else base + <Py_ssize_t> zo
            nd.a = base + <Py_ssize_t> ao
            nd.w = NULL if wo < 0 else base + <Py_ssize_t> wo
            nd.g = self.p.nodes[i - 1].g if go < 0 else base + <Py_ssize_t> go
        self.p.xb = base + <Py_ssize_t> xo
        self.p.yb = base + <Py_ssize_t> yo
        self.p.lb = base + <Py_ssize_t> lo
        self.p.wb = base + <Py_ssize_t> wbo
        self.ws = ws
        self.capacity = n

    def workspace_nbytes(self):
        return 0 if self.ws is None else self.ws.nbytes

    cdef bint _usable(self, object arr, int ndim, int typenum, Py_ssize_t rows,
                      Py_ssize_t cols):
        """arr is an aligned, native-byte-order, C-contiguous ndarray of this type and shape
        (cols < 0: 1-D)."""
        if not cnp.PyArray_CheckExact(arr):     # subclasses (masked arrays...): Python checks
            return False
        cdef cnp.ndarray a = <cnp.ndarray> arr
        if cnp.PyArray_TYPE(a) != typenum or cnp.PyArray_NDIM(a) != ndim or \
                not cnp.PyArray_IS_C_CONTIGUOUS(a) or not cnp.PyArray_ISALIGNED(a) or \
                not cnp.PyArray_ISNOTSWAPPED(a):
            return False
        if cnp.PyArray_DIMS(a)[0] != rows:
            return False
        return ndim == 1 or cnp.PyArray_DIMS(a)[1] == cols

    def train_step_checked(self, X, y, int opt_kind, hyper, state, long long t):
        """Fast path of Sequential.train_step for inputs already in the engine's layout:
        X an (n, n_in) C-contiguous array of the model dtype; y int64 labels (n,) for
        cross-entropy, or (n, k) targets of the model dtype ((n,) when k == 1). Checks in C
        that X and y are finite, labels in [0, k) and binary targets in [0, 1], then runs the
        step. Returns None, having changed nothing, when any of this does not hold: the
        caller then validates in Python (converting, or raising the right error)."""
        cdef int typenum = cnp.NPY_DOUBLE if self.is_double else cnp.NPY_FLOAT
        cdef Py_ssize_t n
        cdef bint ok = True, labels
        if self.in_python:
            self._not_in_python()
        if not cnp.PyArray_Check(X):
            return None
        n = cnp.PyArray_DIMS(<cnp.ndarray> X)[0] if cnp.PyArray_NDIM(<cnp.ndarray> X) == 2 \
            else 0
        if n < 1 or n > 2147483647 or not self._usable(X, 2, typenum, n, self.n_in0):
            return None
        labels = self.p.loss == FP_CROSS_ENTROPY
        if labels:
            if not self._usable(y, 1, cnp.NPY_INT64, n, -1):
                return None
        elif not (self._usable(y, 2, typenum, n, self.k) or
                  (self.k == 1 and self._usable(y, 1, typenum, n, -1))):
            return None
        cdef void *px = _ptr(X)
        cdef void *py = _ptr(y)
        cdef const double *h = <const double *> _ptr(hyper)
        cdef void **qs = <void **> _ptr(state)
        cdef int ns = _len(state)
        cdef double loss = 0
        cdef int k
        if n > self.capacity:     # rare: check first, so that bad input never grows the workspace
            with nogil:
                ok = self._inputs_ok(px, py, n)
            if not ok:
                return None
            self.ensure_capacity(n)
        k = 1 if _split_plan(&self.p, n, True) < 2 else self._split_prepare(n, True)
        # the checks and the step share one GIL release (a release / re-acquire pair is a
        # measurable part of a 2 us step)
        with nogil:
            ok = self._inputs_ok(px, py, n)
            if ok:
                loss = self._run_nogil(px, NULL if labels else py, py if labels else NULL,
                                       NULL, NULL, n, opt_kind, h, qs, ns, t, True, k)
        if k > 1:
            fp_pool_release(self.pool)
        if ok and self.p.refused and self.p.n_python:
            self._python_failed(True)
        return loss if ok else None

    cdef bint _inputs_ok(self, const void *px, const void *py, Py_ssize_t n) noexcept nogil:
        """X finite; y: labels in [0, k) for cross-entropy, else finite (and in [0, 1] for
        binary cross-entropy)."""
        cdef bint ok, labels = self.p.loss == FP_CROSS_ENTROPY
        cdef ptrdiff_t nx = n * self.n_in0, ny = n * self.k
        if self.is_double:
            ok = fp_all_finite_d(<const double *> px, nx)
            if not labels:
                ok = ok and fp_all_finite_d(<const double *> py, ny)
                if self.p.loss == FP_BINARY_CROSS_ENTROPY:
                    ok = ok and fp_all_unit_d(<const double *> py, ny)
        else:
            ok = fp_all_finite_f(<const float *> px, nx)
            if not labels:
                ok = ok and fp_all_finite_f(<const float *> py, ny)
                if self.p.loss == FP_BINARY_CROSS_ENTROPY:
                    ok = ok and fp_all_unit_f(<const float *> py, ny)
        if labels:
            ok = ok and fp_labels_in_range(<const int64_t *> py, n, self.k)
        return ok

    def train_batches(self, X, y, labels, w, order, int batch_size, int first, int count,
                      int opt_kind, hyper, state, long long t, double[::1] losses_out,
                      double[::1] correct_out, unsigned char[::1] refused_out):
        """Batches first .. first + count - 1 of an epoch as consecutive training steps t,
        t + 1, ...: batch b is rows order[b * batch_size:(b + 1) * batch_size] of X / y /
        labels / w, gathered in C. Writes each batch's loss (and, with count_correct, its
        correct count) to losses_out / correct_out, and 1 to refused_out where the step was
        refused (see _step: nothing changed). No Python code runs between the steps, but
        pending signals are handled after each one (PyErr_CheckSignals: a flag test unless a
        signal arrived): a handler that raises (Ctrl-C: KeyboardInterrupt) stops the loop
        there, and batches_done tells how many steps were applied."""
        cdef Py_ssize_t n_total = order.shape[0], start, stop
        cdef const int64_t *pi = <const int64_t *> _ptr(order)
        cdef void *px = _ptr(X)
        cdef void *py = _ptr(y)
        cdef void *pl = _ptr(labels)
        cdef void *pw = _ptr(w)
        cdef const double *h = <const double *> _ptr(hyper)
        cdef void **qs = <void **> _ptr(state)
        cdef int ns = _len(state)
        cdef int i
        self.batches_done = 0
        if count > losses_out.shape[0] or count > correct_out.shape[0] or \
                count > refused_out.shape[0]:
            raise ValueError("losses_out / correct_out / refused_out are shorter than count")
        for i in range(count):
            start = <Py_ssize_t> (first + i) * batch_size
            stop = start + batch_size if start + batch_size < n_total else n_total
            losses_out[i] = self._run(px, py, pl, pw, pi + start, <int> (stop - start),
                                      opt_kind, h, qs, ns, t + i, True)
            correct_out[i] = self.last_correct
            refused_out[i] = self.last_refused
            self.batches_done = i + 1
            PyErr_CheckSignals()

    def train_step(self, X, y, labels, w, idx, int opt_kind, hyper, state, long long t,
                   bint update=True):
        """One training step on X (n, n_in) or, when idx is given, on the rows idx of X / y /
        labels / w (gathered in C). Returns the loss of the forward pass. Arrays are validated
        C-contiguous arrays of the model dtype (labels int64, idx int64; hyper float64, the
        optimizer's block in _optim.pxd; state a uintp array of the addresses of the
        optimizer's state arrays in its declared order, 0 where unused, or None)."""
        cdef int n = idx.shape[0] if idx is not None else X.shape[0]
        return self._run(_ptr(X), _ptr(y), _ptr(labels), _ptr(w), <const int64_t *> _ptr(idx),
                         n, opt_kind, <const double *> _ptr(hyper), <void **> _ptr(state),
                         _len(state), t, update)

    def compute_gradients(self, X, y, labels, w, idx, double normalizer, bint penalty=True):
        """Gradients only: forward (training mode), loss and backward of X (n, n_in) or, when
        idx is given, of the rows idx of X / y / labels / w; grads := dL/dparams, where the
        loss is divided by normalizer (> 0) instead of the batch's weight sum (0). No update.
        Returns the loss; sets last_correct when count_correct. An empty batch (n = 0) gives
        zero gradients and loss 0. Arrays as for train_step. penalty=False leaves the weight
        penalties out of the loss and the gradients (a sum of such gradients over shards
        then gets them once from add_penalty)."""
        cdef int n = idx.shape[0] if idx is not None else X.shape[0]
        cdef int n_penalty = self.p.n_penalty
        cdef double loss
        if n == 0:
            self.grads[...] = 0
            self.last_correct = 0
            return 0.0
        self.p.norm = normalizer if normalizer > 0 else 0
        if not penalty:
            self.p.n_penalty = 0
        try:
            loss = self._run(_ptr(X), _ptr(y), _ptr(labels), _ptr(w),
                             <const int64_t *> _ptr(idx), n, 0, NULL, NULL, 0, 0, False)
        finally:
            self.p.norm = 0
            self.p.n_penalty = n_penalty
        return loss

    def add_penalty(self):
        """grads += the weight penalties' gradient at the current parameters; returns their
        loss term (0, and grads untouched, without any)."""
        cdef void *pp = self.pdata
        cdef void *pg = self.gdata
        cdef double pen = 0
        cdef unsigned int csr
        if self.p.n_penalty == 0:
            return 0.0
        with nogil:
            csr = fp_ftz_begin()
            if self.is_double:
                pen = _penalty_add[double](&self.p, <double *> pp, <double *> pg)
            else:
                pen = _penalty_add[float](&self.p, <float *> pp, <float *> pg)
            fp_ftz_end(csr)
        return pen

    FROZEN_MAX_STATE = 7

    def set_frozen(self, ranges):
        """ranges: [(start, end), ...] of the flat parameter buffer that the update must not
        change (frozen layers); [] for none. Room for the parameters and up to
        FROZEN_MAX_STATE optimizer state buffers of each range is allocated here. The nodes
        whose parameters start inside a range are marked frozen (a BatchNorm then uses its
        running statistics in training; a Dense's penalty no longer counts)."""
        cdef Py_ssize_t total = 0
        arr = np.zeros(max(2 * len(ranges), 2), dtype=np.intp)
        for i, (a, b) in enumerate(ranges):
            if not 0 <= a < b <= self.n_params:
                raise ValueError(f"ranges: ({a}, {b}) is not a range of the {self.n_params} "
                                 f"parameters")
            arr[2 * i], arr[2 * i + 1] = a, b
            total += b - a
        scratch = np.zeros(max(total, 1) * (1 + self.FROZEN_MAX_STATE), dtype=self.params.dtype)
        self.frozen_arr, self.fscratch_arr = arr, scratch
        self.p.frozen = <Py_ssize_t *> _ptr(arr)
        self.p.fscratch = <char *> _ptr(scratch)
        self.p.n_frozen = len(ranges)
        for i in range(self.p.L):       # a node is frozen when its parameters are
            start = self.p.nodes[i].p_off
            self.p.nodes[i].frozen = start >= 0 and any(a <= start < b for a, b in ranges)

    def penalty(self):
        """The weight penalties' loss term at the current parameters (0 without any)."""
        if self.is_double:
            return _penalty[double](&self.p, <double *> self.pdata)
        return _penalty[float](&self.p, <float *> self.pdata)

    property frozen:
        """The frozen ranges, as set by set_frozen."""
        def __get__(self):
            return [(int(self.p.frozen[2 * i]), int(self.p.frozen[2 * i + 1]))
                    for i in range(self.p.n_frozen)]

    def apply_update(self, int opt_kind, hyper, state, long long t):
        """Update only: the optimizer step t from grads, with the refusal rule of a fused step
        (see _update). Returns True when applied; False (last_refused set) when nothing
        changed. Arrays as for train_step."""
        cdef void *pp = self.pdata
        cdef void *pg = self.gdata
        cdef const double *h = <const double *> _ptr(hyper)
        cdef void **qs = <void **> _ptr(state)
        cdef int ns = _len(state)
        cdef bint ok
        cdef unsigned int csr
        self._not_in_python()
        with nogil:
            csr = fp_ftz_begin()
            if self.is_double:
                ok = _update[double](&self.p, <double *> pp, <double *> pg, self.n_params, opt_kind, h,
                                     <double **> qs, ns, t)
            else:
                ok = _update[float](&self.p, <float *> pp, <float *> pg, self.n_params, opt_kind, h,
                                    <float **> qs, ns, t)
            fp_ftz_end(csr)
        self.last_refused = not ok
        return ok

    cdef double _run(self, void *px, void *py, void *pl, void *pw, const int64_t *pi, int n,
                     int opt_kind, const double *h, void **qs, int ns, long long t,
                     bint update) except? -1.0:
        cdef double loss
        cdef int k
        if self.in_python:
            self._not_in_python()
        if n > self.capacity:
            self.ensure_capacity(n)
        k = 1 if _split_plan(&self.p, n, True) < 2 else self._split_prepare(n, True)
        with nogil:
            loss = self._run_nogil(px, py, pl, pw, pi, n, opt_kind, h, qs, ns, t, update, k)
        if k > 1:
            fp_pool_release(self.pool)
        if self.p.refused and self.p.n_python:
            self._python_failed(True)
        return loss

    cdef double _run_nogil(self, void *px, void *py, void *pl, void *pw, const int64_t *pi,
                           int n, int opt_kind, const double *h, void **qs, int ns,
                           long long t, bint update, int k) noexcept nogil:
        """One step on a workspace of capacity >= n (rows pi of the inputs when pi != NULL),
        batch-split over k workers when k > 1 (_split_prepare acquired the pool)."""
        cdef void *pp = self.pdata
        cdef void *pg = self.gdata
        cdef double loss
        cdef unsigned int csr = fp_ftz_begin()
        self.p.csr = csr     # the caller's mode, for Python nodes
        if k > 1:
            loss = self._run_split(px, py, pl, pw, pi, n, opt_kind, h, qs, ns, t, update, k)
            fp_ftz_end(csr)
            return loss
        if pi != NULL:
            self._gather(px, py, pl, pw, pi, n)
            px = self.p.xb
            py = NULL if py == NULL else self.p.yb
            pl = NULL if pl == NULL else self.p.lb
            pw = NULL if pw == NULL else self.p.wb
        elif self.p.n_python:
            # the caller's arrays are reachable from the Python layers' code: the step reads
            # copies (labels changed in place during the step cannot index out of range)
            self._copy_batch(px, py, pl, pw, n)
            px = self.p.xb
            py = NULL if py == NULL else self.p.yb
            pl = NULL if pl == NULL else self.p.lb
            pw = NULL if pw == NULL else self.p.wb
        if self.is_double:
            loss = _step[double](&self.p, <double *> px, <double *> py, <long long *> pl,
                                 <double *> pw, <double *> pp, <double *> pg,
                                 self.n_params, n, opt_kind, h, <double **> qs, ns, t,
                                 update)
            if self.count_correct:
                self.last_correct = _count_correct[double](&self.p, <double *> py,
                                                           <long long *> pl, n)
        else:
            loss = _step[float](&self.p, <float *> px, <float *> py, <long long *> pl,
                                <float *> pw, <float *> pp, <float *> pg, self.n_params,
                                n, opt_kind, h, <float **> qs, ns, t, update)
            if self.count_correct:
                self.last_correct = _count_correct[float](&self.p, <float *> py,
                                                          <long long *> pl, n)
        fp_ftz_end(csr)
        self.last_refused = self.p.refused
        return loss

    cdef double _run_split(self, void *px, void *py, void *pl, void *pw, const int64_t *pi,
                           int n, int opt_kind, const double *h, void **qs, int ns,
                           long long t, bint update, int k) noexcept nogil:
        cdef Split *s = &self.sp
        cdef double loss
        cdef int w
        s.k = k
        s.n = n
        s.px, s.py, s.pl, s.pw, s.pi = px, py, pl, pw, pi
        s.params = self.pdata
        s.grads_out = self.gdata
        s.count_correct = self.count_correct
        loss = _split_step(s, self.pool, opt_kind, h, qs, ns, t, update)
        if self.count_correct:
            self.last_correct = 0
            for w in range(k):
                self.last_correct += s.correct[w]
        self.last_refused = self.p.refused
        return loss

    cdef void _copy_batch(self, const void *px, const void *py, const void *pl,
                          const void *pw, int n) noexcept nogil:
        """X, y, labels, w (those given) of a batch of n rows into the gather buffers."""
        cdef size_t sz = self.itemsize
        memcpy(self.p.xb, px, <size_t> n * self.n_in0 * sz)
        if py != NULL:
            memcpy(self.p.yb, py, <size_t> n * self.k * sz)
        if pl != NULL:
            memcpy(self.p.lb, pl, <size_t> n * 8)
        if pw != NULL:
            memcpy(self.p.wb, pw, <size_t> n * sz)

    cdef void _gather(self, const void *px, const void *py, const void *pl, const void *pw,
                      const int64_t *idx, int n) noexcept nogil:
        cdef int i
        if self.is_double:
            _gather[double](<double *> px, idx, <double *> self.p.xb, n, self.n_in0)
            if py != NULL:
                _gather[double](<double *> py, idx, <double *> self.p.yb, n, self.k)
            if pw != NULL:
                _gather[double](<double *> pw, idx, <double *> self.p.wb, n, 1)
        else:
            _gather[float](<float *> px, idx, <float *> self.p.xb, n, self.n_in0)
            if py != NULL:
                _gather[float](<float *> py, idx, <float *> self.p.yb, n, self.k)
            if pw != NULL:
                _gather[float](<float *> pw, idx, <float *> self.p.wb, n, 1)
        if pl != NULL:
            for i in range(n):
                (<int64_t *> self.p.lb)[i] = (<const int64_t *> pl)[idx[i]]

    def forward(self, X, bint training):
        """Forward pass of X into the workspace (the textbook path keeps these caches)."""
        cdef int n = X.shape[0]
        cdef void *px = _ptr(X)
        cdef void *pp = _ptr(self.params)
        cdef Threads th
        cdef uint64_t rng0 = self.p.rng
        self._not_in_python()
        self.ensure_capacity(n)
        cdef unsigned int csr
        self.p.py_failed = False
        with nogil:
            csr = fp_ftz_begin()
            self.p.csr = csr     # the caller's mode, for Python nodes
            _threads_begin(&th, &self.p, n)
            if self.is_double:
                _forward[double](&self.p, <double *> px, <double *> pp, n, training)
            else:
                _forward[float](&self.p, <float *> px, <float *> pp, n, training)
            _threads_end(&th)
            fp_ftz_end(csr)
        if self.p.py_failed:
            self.p.rng = rng0
            self._python_failed(True)

    def backward(self, X, y, labels, w, bint training):
        """After forward(X, training): loss, then grads := dL/dparams. Returns the loss."""
        cdef int n = X.shape[0]
        cdef void *px = _ptr(X)
        cdef void *py = _ptr(y)
        cdef void *pl = _ptr(labels)
        cdef void *pw = _ptr(w)
        cdef void *pp = _ptr(self.params)
        cdef void *pg = _ptr(self.grads)
        cdef double loss
        cdef Threads th
        cdef unsigned int csr
        self._not_in_python()
        self.p.py_failed = False
        with nogil:
            csr = fp_ftz_begin()
            self.p.csr = csr     # the caller's mode, for Python nodes
            _threads_begin(&th, &self.p, n)
            _bind(&self.p, px, training)
            if self.is_double:
                loss = _loss_grad[double](&self.p, <double *> py, <long long *> pl,
                                          <double *> pw, n, True)
                loss += _penalty[double](&self.p, <double *> pp)
                _backward[double](&self.p, <double *> pp, <double *> pg, n, training)
            else:
                loss = _loss_grad[float](&self.p, <float *> py, <long long *> pl,
                                         <float *> pw, n, True)
                loss += _penalty[float](&self.p, <float *> pp)
                _backward[float](&self.p, <float *> pp, <float *> pg, n, training)
            _threads_end(&th)
            fp_ftz_end(csr)
        if self.p.py_failed:
            self._python_failed(False)
        return loss

    def gemm_floor(self, X, bint train=True):
        """Run only the GEMMs of a training step (train) or of inference on X, on the
        workspace: the floor a step's time is compared with in benchmarks. Leaves the
        workspace and grads with meaningless values; call after a real step on X."""
        cdef int n = X.shape[0]
        cdef void *px = _ptr(X)
        cdef void *pp = _ptr(self.params)
        cdef void *pg = _ptr(self.grads)
        self.ensure_capacity(n)
        cdef unsigned int csr
        with nogil:
            csr = fp_ftz_begin()
            if self.is_double:
                _gemms_only[double](&self.p, <double *> px, <double *> pp, <double *> pg, n,
                                    train)
            else:
                _gemms_only[float](&self.p, <float *> px, <float *> pp, <float *> pg, n, train)
            fp_ftz_end(csr)

    def node_buffers(self, int i, int n):
        """Views (z, a, delta) of node i's workspace for the first n samples (read-only): z is
        the input of the node's activation (a Dense's z; an Activation's x; a Dropout's x),
        after a forward pass in training mode (in inference a Dropout's a is its x)."""
        dt = np.float64 if self.is_double else np.float32
        cdef Node *nd = &self.p.nodes[i]
        out = []
        for ptr in (<size_t> (nd.z if nd.kind == NODE_DENSE else nd.x), <size_t> nd.a,
                    <size_t> nd.g):
            if ptr == 0:
                out.append(None)
                continue
            off = ptr - <size_t> cnp.PyArray_DATA(self.ws)
            if off < 0 or off >= self.ws.nbytes:     # the caller's X (first node's input)
                out.append(None)
                continue
            v = self.ws[off:off + n * nd.n_out * self.itemsize].view(dt)
            v = v.reshape(n, nd.n_out)
            v.flags.writeable = False
            out.append(v)
        return out

    def layer_buffers(self, int l, int n):
        """node_buffers of the l-th Dense node."""
        return self.node_buffers(self.p.dense[l], n)

    def output_buffer(self, int n, bint training=True):
        """The network output of the last forward pass (n, n_out), a read-only view."""
        return self.node_buffers(self.p.L - 1, n)[1]

    def predict_checked(self, X, int rows):
        """Fast path of Sequential.predict: for an (n, n_in) C-contiguous, aligned, native,
        finite array of the model dtype, return a new (n, n_out) output; otherwise None."""
        cdef int typenum = cnp.NPY_DOUBLE if self.is_double else cnp.NPY_FLOAT
        cdef Py_ssize_t n
        cdef bint ok
        cdef cnp.npy_intp dims[2]
        if not cnp.PyArray_Check(X) or cnp.PyArray_NDIM(<cnp.ndarray> X) != 2:
            return None
        n = cnp.PyArray_DIMS(<cnp.ndarray> X)[0]
        if n < 1 or n > 2147483647 or not self._usable(X, 2, typenum, n, self.n_in0):
            return None
        cdef void *px = _ptr(X)
        cdef ptrdiff_t nx = n * self.n_in0
        with nogil:
            ok = fp_all_finite_d(<double *> px, nx) if self.is_double else \
                fp_all_finite_f(<float *> px, nx)
        if not ok:
            return None
        dims[0] = n
        dims[1] = self.k
        out = cnp.PyArray_EMPTY(2, dims, typenum, 0)
        self.predict(X, out, None, rows)
        return out

    def predict(self, X, out_a, out_z=None, int rows=1024):
        """out_a := the network's output for X (inference: no dropout); out_z := the output
        layer's z when given. Thread-safe: scratch is per call."""
        cdef int n = X.shape[0]
        cdef int chunk = rows if rows < n else n
        cdef size_t nbytes = <size_t> chunk * self.max_width * self.itemsize
        cdef size_t extra = (<size_t> 2 * self.p.max_norm * 8 +
                             <size_t> max(chunk, self.p.max_norm) * self.itemsize
                             if self.p.n_norm else 0)
        cdef double *scratch
        cdef void *px = _ptr(X)
        cdef void *pp = _ptr(self.params)
        cdef void *pa = _ptr(out_a)
        cdef void *pz = _ptr(out_z)
        cdef void *b0
        cdef void *b1
        cdef bint failed = False
        cdef unsigned int csr
        cdef list errors = []
        cdef void *perr = <void *> errors
        cdef int k = 1 if _split_plan(&self.p, n, False) < 2 else self._split_prepare(n, False)
        if k > 1:
            try:
                self._predict_split(px, pp, pa, pz, n, k, chunk, extra)
            finally:
                fp_pool_release(self.pool)
            return
        with nogil:
            csr = fp_ftz_begin()
            self.p.csr = csr     # the caller's mode, for Python nodes
            b0 = malloc(2 * nbytes + extra + 8)
            if b0 == NULL:
                failed = True
            else:
                b1 = <char *> b0 + nbytes
                scratch = <double *> (<char *> b0 + (2 * nbytes + 7) // 8 * 8)
                if self.is_double:
                    _predict[double](&self.p, <double *> px, <double *> pp, n, chunk,
                                     <double *> b0, <double *> b1, <double *> pa,
                                     <double *> pz, scratch, perr)
                else:
                    _predict[float](&self.p, <float *> px, <float *> pp, n, chunk,
                                    <float *> b0, <float *> b1, <float *> pa, <float *> pz,
                                    scratch, perr)
                free(b0)
            fp_ftz_end(csr)
        if failed:
            raise MemoryError("predict: no memory for the scratch buffers")
        if errors:          # a Python node raised: its exception, unchanged
            raise errors[0]

    cdef _predict_split(self, const void *px, const void *pp, void *pa, void *pz, int n, int k,
                        int chunk, size_t extra):
        """predict over k workers of the pool (acquired), each on its rows with its own
        scratch; BLAS on one thread meanwhile."""
        cdef Tape tape = self.p
        cdef PSplit ps
        cdef Threads th
        tape.in_split = True
        ps.tape = &tape
        ps.px, ps.params, ps.out_a, ps.out_z = px, pp, pa, pz
        ps.n, ps.k, ps.rows = n, k, chunk
        ps.row_bytes = <size_t> self.max_width * self.itemsize
        ps.extra = extra
        ps.n_in0, ps.kout = self.n_in0, self.k
        ps.is_double = self.is_double
        ps.failed = False
        with nogil:
            _threads_begin(&th, &self.p, 0)
            fp_pool_run(self.pool, _predict_task, &ps, k)
            _threads_end(&th)
        if ps.failed:
            raise MemoryError("predict: no memory for the scratch buffers")
