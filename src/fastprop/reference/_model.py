"""A whole network in plain NumPy: the reference twin of ``fastprop.Sequential``.

Parameters sit in one flat array with each layer's ``W`` and ``b`` as views, like the compiled
model, so optimizers update one flat array. Dropout is not modelled (the reference is for
checking and timing deterministic steps).
"""
import numpy as np

from fastprop.reference import _optim
from fastprop.reference._dense import dense_backward, dense_forward
from fastprop.reference._losses import loss_and_grad

__all__ = ["ReferenceModel"]

_KINDS = ("Dense", "Dropout", "Activation")


def _kind_of(layer):
    """The built-in kind name a layer object is (its class or the nearest base so named)."""
    for cls in type(layer).__mro__:
        if cls.__name__ in _KINDS and cls.__module__.startswith("fastprop.layers"):
            return cls.__name__
    return type(layer).__name__

_STEPS = {"SGD": _optim.sgd_step, "Adam": _optim.adam_step, "AdamW": _optim.adamw_step,
          "RMSprop": _optim.rmsprop_step, "Adagrad": _optim.adagrad_step}


class ReferenceModel:
    """Plain-NumPy multilayer perceptron with the conventions of ``fastprop.Sequential``.

    Parameters
    ----------
    sizes : list of int
        Widths ``[n_in, n_hidden..., n_out]``.
    activations : list of str
        One canonical activation name per layer.
    loss : str
        Canonical loss name.
    optimizer : dict
        ``{"name": "SGD" | "Adam" | ..., **hyperparameters}`` (``Optimizer.get_config()``).
    params : ndarray, optional
        Flat initial parameters (layout W[0], b[0], W[1], b[1], ...); zeros if omitted.
    dtype : numpy dtype
    """

    def __init__(self, sizes, activations, loss, optimizer, params=None, dtype=np.float64):
        self.dtype = np.dtype(dtype)
        self.activations = list(activations)
        self.loss = loss
        n = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
        self.params = np.zeros(n, self.dtype) if params is None else \
            np.array(params, dtype=self.dtype)
        self.grads = np.zeros(n, self.dtype)
        self.W, self.b, self.dW, self.db = [], [], [], []
        off = 0
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            for views, arr in ((self.W, self.params), (self.dW, self.grads)):
                views.append(arr[off:off + n_in * n_out].reshape(n_in, n_out))
            off += n_in * n_out
            self.b.append(self.params[off:off + n_out])
            self.db.append(self.grads[off:off + n_out])
            off += n_out
        cfg = dict(optimizer)
        self.opt_name = cfg.pop("name")
        cfg.pop("schedule", None)
        cfg["lr"] = cfg.pop("current_lr", cfg["lr"])   # the rate in use
        self.hyper = cfg
        self.state = _optim.init_optimizer_state(
            self.opt_name.lower(), n, self.dtype, momentum=cfg.get("momentum", 0.0),
            amsgrad=cfg.get("amsgrad", False), centered=cfg.get("centered", False),
            initial_accumulator_value=cfg.get("initial_accumulator_value", 0.0))
        self.t = 0
        plain = self.opt_name == "SGD" and not any(
            cfg.get(k) for k in ("momentum", "weight_decay", "clip_norm"))
        self._plain_sgd_lr = cfg["lr"] if plain else None

    @classmethod
    def from_model(cls, model):
        """A reference twin of a fastprop ``Sequential`` (same weights, loss, optimizer).

        Walks ``model.layers`` by kind name (the registry's names): ``Dense`` adds a layer,
        ``Activation`` right after an identity Dense sets that layer's activation (the model
        fuses it there), ``Dropout`` is the identity (the reference does not model dropout). A
        registered subclass maps to the built-in kind it derives from. TypeError for any other
        kind, and for an Activation the model runs as a node of its own (elsewhere)."""
        sizes, acts = [], []
        prev = None
        for i, layer in enumerate(model.layers):
            kind = _kind_of(layer)
            if kind == "Activation" and not (prev == "Dense" and acts[-1] == "identity"):
                raise TypeError(f"the reference has no twin for layers[{i}] (an Activation "
                                f"not right after an identity Dense)")
            prev = kind
            if kind == "Dense":
                if not sizes:
                    sizes.append(layer.n_in)
                sizes.append(layer.n_out)
                acts.append(layer.activation)
            elif kind == "Activation":
                acts[-1] = layer.activation
            elif kind != "Dropout":
                raise TypeError(f"the reference has no twin for layers[{i}] "
                                f"({type(layer).__name__})")
        return cls(sizes, acts, model.loss, model.optimizer.get_config(), model.params,
                   model.dtype)

    def forward(self, X):
        """Return the list of (z, a) per layer."""
        return [(c.z, c.a) for c in self._caches(X)]

    def _caches(self, X):
        out, a = [], X
        for W, b, act in zip(self.W, self.b, self.activations):
            a, cache = dense_forward(a, W, b, act)
            out.append(cache)
        return out

    def predict(self, X):
        return self.forward(X)[-1][1]

    def loss_and_gradients(self, X, y=None, labels=None, sample_weight=None):
        """Forward, loss and backward: fills ``self.grads``; returns the loss."""
        caches = self._caches(X)
        out = caches[-1]
        loss, dz = loss_and_grad(self.loss, self.activations[-1], out.z, out.a, y=y,
                                 labels=labels, sample_weight=sample_weight)
        # the loss gives the output layer's dz: its block runs from there
        caches[-1] = out._replace(activation="identity")
        da = dz
        for l in range(len(self.W) - 1, -1, -1):
            da, dW, db = dense_backward(da, caches[l], need_da_prev=l > 0)
            self.dW[l][...] = dW
            self.db[l][...] = db
        return loss

    def apply_gradients(self):
        self.t += 1
        if self._plain_sgd_lr is not None:
            self.params -= self.dtype.type(self._plain_sgd_lr) * self.grads
        else:
            _STEPS[self.opt_name](self.params, self.grads, self.state, self.t, **self.hyper)

    def train_step(self, X, y=None, labels=None, sample_weight=None):
        """Forward, loss, backward and optimizer update; returns the loss before the update."""
        loss = self.loss_and_gradients(X, y, labels, sample_weight)
        self.apply_gradients()
        return loss
