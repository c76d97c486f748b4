"""A whole network in plain NumPy: the reference twin of ``fastprop.Sequential``.

The network is a list of reference layers (:mod:`fastprop.reference._layers`, one twin per
registered kind). Parameters sit in one flat array with each layer's parameters as views (a
Dense's ``W`` then ``b``, layer after layer), like the compiled model, so optimizers update one
flat array. A Dense twin's weight penalty is part of the loss and its gradient; a frozen twin
(``trainable`` False) keeps its parameters and their optimizer state through an update.
"""
import numpy as np

from fastprop.reference import _optim
from fastprop.reference._layers import Activation, Dense, Dropout, layer_from
from fastprop.reference._losses import loss_and_grad

__all__ = ["ReferenceModel"]

_STEPS = {"SGD": _optim.sgd_step, "Adam": _optim.adam_step, "AdamW": _optim.adamw_step,
          "RMSprop": _optim.rmsprop_step, "Adagrad": _optim.adagrad_step}


def _tape(twins):
    """The twins as the compiled tape runs them: an Activation right after an identity Dense
    is fused into that Dense (the same numbers as ``Dense(..., activation=name)``)."""
    out = []
    for twin in twins:
        if isinstance(twin, Activation) and out and isinstance(out[-1], Dense) \
                and out[-1].activation == "identity":
            out[-1].activation = twin.activation
        else:
            out.append(twin)
    return out


class ReferenceModel:
    """Plain-NumPy network with the conventions of ``fastprop.Sequential``.

    Parameters
    ----------
    sizes : list of int
        Widths ``[n_in, n_hidden..., n_out]`` of a stack of Dense layers.
    activations : list of str
        One canonical activation name per Dense layer.
    loss : str
        Canonical loss name.
    optimizer : dict
        ``{"name": "SGD" | "Adam" | ..., **hyperparameters}`` (``Optimizer.get_config()``).
    params : ndarray, optional
        Flat initial parameters (layout W[0], b[0], W[1], b[1], ...); zeros if omitted.
    dtype : numpy dtype

    Attributes
    ----------
    layers : list of reference layers
        The network (see :meth:`from_model` for any registered kinds).
    params, grads : ndarray (n_params,)
        Flat buffers; every layer's parameters are views of ``params``.
    W, b, dW, db : lists of ndarray
        Views per Dense layer.
    activations : list of str
        Each Dense layer's activation.
    rng_state : ndarray (1,) of uint64
        The dropout stream every Dropout twin draws from (as a model's Dropout layers do).
    """

    def __init__(self, sizes, activations, loss, optimizer, params=None, dtype=np.float64):
        self.dtype = np.dtype(dtype)
        twins = [Dense(np.zeros((n_in, n_out), self.dtype), np.zeros(n_out, self.dtype), act)
                 for n_in, n_out, act in zip(sizes[:-1], sizes[1:], activations)]
        self._setup(twins, loss, optimizer, params)

    def _setup(self, twins, loss, optimizer, params):
        self.layers = twins
        self.loss = loss
        self.rng_state = np.zeros(1, np.uint64)
        arrays = [getattr(t, name) for t in twins for name in t.param_names]
        n = sum(a.size for a in arrays)
        if params is None:
            params = np.concatenate([a.ravel() for a in arrays]) if arrays else np.zeros(0)
        self.params = np.array(params, dtype=self.dtype)
        self.grads = np.zeros(n, self.dtype)
        self._grad_views = []          # per layer, its gradient views in param_names order
        self._frozen = []              # slices of params of the frozen twins
        off = 0
        for t in twins:
            if not getattr(t, "trainable", True) and t.param_names:
                self._frozen.append(slice(off, off + sum(getattr(t, name).size
                                                         for name in t.param_names)))
            views = []
            for name in t.param_names:
                shape = getattr(t, name).shape
                size = int(np.prod(shape))
                setattr(t, name, self.params[off:off + size].reshape(shape))
                views.append(self.grads[off:off + size].reshape(shape))
                off += size
            self._grad_views.append(views)
            if isinstance(t, Dropout):
                t.state = self.rng_state
        dense = [i for i, t in enumerate(twins) if isinstance(t, Dense)]
        self.W = [twins[i].W for i in dense]
        self.b = [twins[i].b for i in dense]
        self.dW = [self._grad_views[i][0] for i in dense]
        self.db = [self._grad_views[i][1] for i in dense]
        self.activations = [twins[i].activation for i in dense]
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
        """A reference twin of a built fastprop ``Sequential`` (same weights, loss, optimizer,
        dropout generator state).

        Each layer becomes its registered reference twin (:func:`layer_from`; a registered
        subclass maps to the kind it derives from); an Activation right after an identity Dense
        is fused into that Dense, as the compiled tape does. The Dropout twins share
        :attr:`rng_state`, a copy of ``model.get_rng_state()``: a training forward pass of the
        twin draws the masks the model's next training forward pass (``model.forward(X,
        training=True)``) draws. TypeError for a kind without a reference twin."""
        twins = []
        for i, layer in enumerate(model.layers):
            try:
                twins.append(layer_from(layer))
            except TypeError as e:
                raise TypeError(f"layers[{i}]: {e}") from None
        ref = cls.__new__(cls)
        ref.dtype = np.dtype(model.dtype)
        ref._setup(_tape(twins), model.loss, model.optimizer.get_config(), model.params)
        ref.rng_state[0] = model.get_rng_state()[0]
        return ref

    def forward(self, X, training=False, masks=None):
        """Return the list of ``(z, a)`` per Dense layer (the pairs of ``model.caches``).

        ``training=True`` applies dropout with the masks in ``masks`` (one entry per Dropout
        layer, None: drawn from :attr:`rng_state`)."""
        return [(c.z, c.a) for t, c in zip(self.layers, self._caches(X, training, masks))
                if isinstance(t, Dense)]

    def _caches(self, X, training=False, masks=None):
        """The cache of every layer's forward call, in order."""
        masks = iter(masks) if masks is not None else None
        out, a = [], X
        for twin in self.layers:
            if isinstance(twin, Dropout):
                mask = next(masks, None) if masks is not None else None
                a, cache = twin.forward(a, training, mask=mask)
            else:
                a, cache = twin.forward(a, training)
            out.append(cache)
        return out

    def predict(self, X):
        """The network output (inference: no dropout)."""
        return self._caches(X)[-1].a

    def loss_and_gradients(self, X, y=None, labels=None, sample_weight=None, training=False,
                           masks=None):
        """Forward, loss and backward: fills ``self.grads``; returns the loss.

        ``training`` and ``masks`` as in :meth:`forward` (``model.forward(X, training)`` then
        ``model.backward(y)`` is the compiled twin)."""
        caches = self._caches(X, training, masks)
        out = caches[-1]
        loss, dz = loss_and_grad(self.loss, out.activation, out.z, out.a, y=y,
                                 labels=labels, sample_weight=sample_weight)
        # the loss gives the output's dz (the input of its activation): backward from there
        last = len(self.layers) - 1
        if isinstance(self.layers[-1], Dense):
            caches[-1] = out._replace(activation="identity")
        elif isinstance(self.layers[-1], Activation):   # an Activation node ends the model
            last -= 1
        # (a custom Python layer's output has no activation: dz is its da)
        first_param = next(i for i, t in enumerate(self.layers) if t.param_names)
        da = dz
        for i in range(last, -1, -1):
            twin = self.layers[i]
            if isinstance(twin, Dense):
                da, *grads = twin.backward(da, caches[i], need_da_prev=i > first_param)
            else:
                da, *grads = twin.backward(da, caches[i])
            for view, g in zip(self._grad_views[i], grads):
                view[...] = g
            if da is None:
                break
        for i, twin in enumerate(self.layers):     # weight penalties of the trainable Dense
            if isinstance(twin, Dense) and twin.trainable and (twin.l1 or twin.l2):
                term, dW = twin.penalty()
                loss += term
                self._grad_views[i][0][...] += dW
        return loss

    def apply_gradients(self):
        """One optimizer step from ``grads``; the frozen twins' gradients are zeroed first and
        their parameters and optimizer state kept."""
        self.t += 1
        for sl in self._frozen:
            self.grads[sl] = 0
        kept = [(sl, self.params[sl].copy(), {k: v[sl].copy() for k, v in self.state.items()})
                for sl in self._frozen]
        if self._plain_sgd_lr is not None:
            self.params -= self.dtype.type(self._plain_sgd_lr) * self.grads
        else:
            _STEPS[self.opt_name](self.params, self.grads, self.state, self.t, **self.hyper)
        for sl, values, state in kept:
            self.params[sl] = values
            for k, v in state.items():
                self.state[k][sl] = v

    def train_step(self, X, y=None, labels=None, sample_weight=None, training=False, masks=None):
        """Forward, loss, backward and optimizer update; returns the loss before the update.
        ``training=True`` (dropout active, as ``model.train_step``) and ``masks`` as in
        :meth:`forward`."""
        loss = self.loss_and_gradients(X, y, labels, sample_weight, training, masks)
        self.apply_gradients()
        return loss
