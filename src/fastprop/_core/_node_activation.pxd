# Activation node: a := g(x) (softmax row-wise); backward da_prev := da * g'(x) in place (its
# g is the previous node's). The tape compiler fuses an Activation that follows an identity
# Dense into that Dense (an optimization); everywhere else it runs as this node.

from cython cimport floating
from fastprop._core._node cimport Node
from fastprop._core._dense cimport act_forward, act_backward


cdef inline void activation_node_forward(Node *nd, floating *dummy, int n) noexcept nogil:
    act_forward(nd.act, <const floating *> nd.x, <floating *> nd.a, n, nd.n_out)


cdef inline void activation_node_backward(Node *nd, floating *dummy, int n) noexcept nogil:
    act_backward(nd.act, <const floating *> nd.x, <const floating *> nd.a,
                 <const floating *> nd.g, <floating *> nd.g, n, nd.n_out)
