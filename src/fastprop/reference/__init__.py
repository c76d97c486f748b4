"""Pure-NumPy twin of every compiled kernel in fastprop, written for clarity.

This package is the oracle of the tests and the "pure NumPy" side of every benchmark. It imports
nothing of fastprop's compiled code. Conventions are the compiled core's (and PyTorch's): row-major
batches, ``z = a_prev @ W + b``, ``a = g(z)``; backward gives ``dz = da * g'(z)``,
``dW = a_prev.T @ dz``, ``db = dz.sum(0)``, ``da_prev = dz @ W.T``. Arrays keep their dtype.

- activations and the dense block: :func:`activation_forward`, :func:`activation_backward`,
  :func:`dense_forward` ``-> (a, cache)``, :func:`dense_backward` ``(da, cache) -> (da_prev,
  dW, db)`` (the signatures and return order of ``fastprop.Dense``)
- one reference layer per registered layer kind (:class:`Dense`, :class:`Dropout`,
  :class:`Activation`; ``forward(a_prev, training=False) -> (a, cache)``, ``backward(da, cache)
  -> (da_prev, *grads)``), keyed by the names of ``fastprop.LAYERS`` in
  :data:`REFERENCE_LAYERS`; :func:`layer_from` gives a fastprop layer's twin, and
  :func:`register_reference_layer` adds the twin of a new kind; :func:`dropout_mask` draws the
  compiled dropout's mask
- losses: :func:`loss_and_grad`
- optimizers over flat arrays: :func:`sgd_step`, :func:`adam_step`, ... and schedules
- normalization: :func:`batchnorm_forward` / :func:`batchnorm_backward`,
  :func:`layernorm_forward` / :func:`layernorm_backward` (PyTorch semantics), and the twins
  :class:`BatchNorm`, :class:`LayerNorm` of those kinds
- a whole network: :class:`ReferenceModel` (``ReferenceModel.from_model(model)`` for any model
  of registered kinds)
"""
from fastprop.reference._dense import (DenseCache, activation_backward, activation_forward,
                                       dense_backward, dense_forward, sigmoid, softmax)
from fastprop.reference._layers import (REFERENCE_LAYERS, Activation, ActivationCache, Dense,
                                        Dropout, DropoutCache, dropout_mask, layer_from,
                                        register_reference_layer)
from fastprop.reference._losses import loss_and_grad
from fastprop.reference._optim import (adagrad_step, adam_step, adamw_step, clip_grad_norm,
                                       cosine_annealing_lr, exponential_lr, global_norm,
                                       init_optimizer_state, rmsprop_step, sgd_step, step_lr)
from fastprop.reference._model import ReferenceModel
from fastprop.reference._norm import (BatchNorm, LayerNorm, NormCache, batchnorm_backward,
                                      batchnorm_forward, layernorm_backward, layernorm_forward)

__all__ = [
    "activation_forward", "activation_backward", "dense_forward", "dense_backward", "DenseCache",
    "sigmoid",
    "softmax", "loss_and_grad", "init_optimizer_state", "global_norm", "clip_grad_norm",
    "sgd_step", "adam_step", "adamw_step", "rmsprop_step", "adagrad_step", "step_lr",
    "exponential_lr", "cosine_annealing_lr", "ReferenceModel", "Dense", "Dropout", "Activation",
    "DropoutCache", "ActivationCache", "REFERENCE_LAYERS", "register_reference_layer",
    "layer_from", "dropout_mask",
    "batchnorm_forward", "batchnorm_backward", "layernorm_forward", "layernorm_backward",
    "NormCache", "BatchNorm", "LayerNorm",
]
