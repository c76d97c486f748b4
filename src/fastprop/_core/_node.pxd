# The node of the compiled tape: one entry of a model's node list, run by the engine's forward
# and backward loops (`_engine.pyx`), which dispatch on `kind` to the kind's own unit
# (`_node_dense.pxd`, `_node_dropout.pxd`, `_node_activation.pxd`, `_node_norm.pxd`). A kind's
# unit reads only its node and the buffers the engine hands it.
#
# Room for later kinds (see DEVELOPERS.md, "add a layer kind"): `s_off` indexes the model's
# flat `state` buffer (a BatchNorm's running statistics), `w` is the node's own workspace
# (sized by the engine from `w_per_row` elements per sample), and the engine's `training` flag
# is passed to every forward. A Python layer is a kind the compiled loops stop at (NODE_PYTHON):
# the tape runs as compiled segments [0, i) and (i, L) around node i, the engine taking the GIL
# only to call the layer (a copy of node i - 1's `a` in, its own `a` out; backward a copy of its
# `g` in, the previous node's `g` out).

cdef enum:
    NODE_DENSE = 0          # z := x @ W + b, a := g(z); params W (n_in, n_out), b (n_out,)
    NODE_DROPOUT = 1        # a := x * mask (training), a is x (inference); n_in == n_out
    NODE_ACTIVATION = 2     # a := g(x); n_in == n_out
    NODE_BATCHNORM = 3      # BatchNorm1d; params gamma, beta (n_in,); state running mean, var
    NODE_LAYERNORM = 4      # LayerNorm over the features; params gamma, beta (n_in,)
    NODE_PYTHON = 5         # a Python layer: the engine calls back into Python (with the GIL)


cdef struct Node:
    int kind
    int n_in
    int n_out
    int act                 # Dense: its (fused) activation code; Activation: its code
    double rate             # Dropout: the drop probability; BatchNorm: its momentum
    double eps              # BatchNorm, LayerNorm: added to the variance
    Py_ssize_t p_off        # first element of the node's parameters in params / grads (-1)
    Py_ssize_t s_off        # first element of its state in the model's state buffer (-1)
    bint need_dprev         # backward writes the input's delta (a node before has params)
    bint inplace_grad       # g is the previous node's g (width-preserving kinds)
    char *x                 # the input (n, n_in), bound at the start of each call
    char *z                 # Dense: pre-activation (n, n_out) (== a for identity)
    char *a                 # the output (n, n_out)
    char *g                 # the delta of the output (n, n_out): da, then dz in place
    char *w                 # the node's own workspace (Dropout: its mask (n, n_in))
    bint frozen             # its parameters lie in a frozen range (layer.trainable = False):
                            # a BatchNorm then normalizes with its running statistics in
                            # training too (Keras), a Dense adds no weight penalty
    double l1               # Dense: weight penalty l1 * sum|W| + l2 * sum W^2 added to the
    double l2               # loss (kernel_regularizer; b spared), its gradient to dW
