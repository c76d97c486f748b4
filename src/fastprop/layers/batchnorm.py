"""The BatchNorm layer kind (``torch.nn.BatchNorm1d`` semantics)."""
import numpy as np

from fastprop import _validation as V
from fastprop._core import _norm
from fastprop.layers._base import register_layer
from fastprop.layers.layernorm import NormCache, _AffineNorm, vector_property

__all__ = ["BatchNorm"]


def _check_variance(arr, name):
    """ValueError naming ``name`` unless every value of ``arr`` is >= 0."""
    if (arr < 0).any():
        raise ValueError(f"{name} must hold values >= 0 (a variance)")
    return arr


@register_layer
class BatchNorm(_AffineNorm):
    """Batch normalization over the samples of a batch, per feature (``torch.nn.BatchNorm1d``).

    In training (``forward(..., training=True)``; in a model: ``train_step`` / ``fit``) each
    feature is normalized with the batch mean and the biased batch variance,
    ``y = (x - mean) / sqrt(var + eps) * gamma + beta``, and the running statistics move
    towards the batch's: ``running_mean = (1 - momentum) * running_mean + momentum * mean``,
    ``running_var = (1 - momentum) * running_var + momentum * var * n / (n - 1)`` (unbiased).
    In inference (``training=False``; ``predict`` / ``evaluate``) the running statistics
    normalize and do not change.

    ``gamma`` (ones) and ``beta`` (zeros) are trainable parameters; ``running_mean`` (zeros)
    and ``running_var`` (ones) are state buffers, which an optimizer never updates. The width
    is inferred when the layer is built (the previous layer in a model, or the first
    :meth:`forward`). The math runs in compiled kernels (``csrc/fp_norm.h``; reductions in
    double).

    Parameters
    ----------
    momentum : float in [0, 1], default 0.1
        Weight of the batch's statistics in the running ones (PyTorch's convention; Keras'
        ``momentum`` is ``1 -`` this).
    eps : float > 0, default 1e-5
        Added to the variance.
    dtype : {"float32", "float64"}, default "float32"
    trainable : bool, default True
        False freezes the layer as Keras does: in a model its ``gamma`` / ``beta`` are not
        updated and, in training too, it normalizes with its running statistics and does not
        update them (its backward is then the affine one, ``dx = dy * gamma * inv_std``, with
        the running ``inv_std``).

    Examples
    --------
    >>> import numpy as np, fastprop as fp
    >>> bn = fp.BatchNorm(dtype="float64")
    >>> y, cache = bn.forward(np.array([[1.0], [3.0]]), training=True)
    >>> np.round(y.ravel(), 4), bn.running_mean, bn.running_var
    (array([-1.,  1.]), array([0.2]), array([1.1]))
    """

    _FIXED = _AffineNorm._FIXED + ("momentum",)

    def __init__(self, momentum=0.1, eps=1e-5, dtype="float32", trainable=True):
        momentum = V.check_real(momentum, "momentum", low=0.0, high=1.0)
        trainable = V.check_bool(trainable, "trainable")
        super().__init__(eps, dtype)
        object.__setattr__(self, "_momentum", momentum)
        self.trainable = trainable

    def _build_state(self, n_in):
        self.add_state("running_mean", (n_in,), init="zeros", dtype=self._dtype)
        self.add_state("running_var", (n_in,), init="ones", dtype=self._dtype)

    @property
    def momentum(self):
        """Weight of each batch in the running statistics (read-only)."""
        return self._momentum

    running_mean = vector_property("running_mean", "Running mean of the features, (width,); "
                                                   "assigning copies into the buffer.")
    running_var = vector_property("running_var", "Running (unbiased) variance of the features, "
                                                 "(width,), values >= 0; assigning copies into "
                                                 "the buffer.", check=_check_variance)

    def set_weights(self, weights):
        """Copy ``[gamma, beta, running_mean, running_var]`` into the layer (count, shapes,
        finite values and ``running_var >= 0`` checked before anything is written)."""
        if isinstance(weights, (list, tuple)) and len(weights) == 4 and self.built:
            _check_variance(self._vector(weights[3], "weights[3] (BatchNorm.running_var)"),
                            "weights[3] (BatchNorm.running_var)")
        super().set_weights(weights)

    def get_config(self):
        """``{"type": "BatchNorm", "n_in", "momentum", "eps"}`` (``n_in`` None while unbuilt),
        and ``"trainable": False`` for a frozen layer (absent when True)."""
        config = {"type": type(self).__name__, "n_in": self.n_in, "momentum": self.momentum,
                  "eps": self.eps}
        if not self.trainable:
            config["trainable"] = False
        return config

    @classmethod
    def from_config(cls, config, dtype="float32"):
        """A BatchNorm (initial parameters and statistics; built when ``n_in`` is set) from
        :meth:`get_config` output."""
        keys = {"type", "n_in", "momentum", "eps"}
        if not isinstance(config, dict) or set(config) - {"trainable"} != keys:
            raise ValueError(f"a BatchNorm config has the keys {', '.join(sorted(keys))} (and "
                             f"optionally trainable); got "
                             f"{sorted(config) if isinstance(config, dict) else config!r}")
        layer = cls(config["momentum"], config["eps"], dtype=dtype,
                    trainable=config.get("trainable", True))
        if config["n_in"] is not None:
            layer.build(config["n_in"])
        return layer

    def forward(self, a_prev, training=False):
        """Forward pass of one batch.

        Parameters
        ----------
        a_prev : array_like, (n_samples, width)
            Any real numeric dtype, order or strides; never written to. ``n_samples >= 2``
            in training (ValueError otherwise, as PyTorch).
        training : bool, default False
            Batch statistics (and the running ones updated) when True, running statistics
            when False. A frozen layer (``trainable`` False) uses its running statistics and
            leaves them unchanged in training too (Keras).

        Returns
        -------
        y : ndarray (n_samples, width), the layer's dtype
        cache : NormCache
            ``x_hat`` (n_samples, width) and ``inv_std`` (width,); pass it to
            :meth:`backward`.
        """
        training = V.check_bool(training, "training") and self.trainable   # frozen: Keras
        x = self._input(a_prev)
        if training and x.shape[0] < 2:
            raise ValueError(f"BatchNorm in training needs more than one sample per batch "
                             f"(the batch variance of one value is undefined; as "
                             f"torch.nn.BatchNorm1d), got a_prev of shape {x.shape}")
        y, x_hat = np.empty_like(x), np.empty_like(x)
        inv_std = np.empty(x.shape[1], dtype=x.dtype)
        _norm.batchnorm_forward(x, self._gamma, self._beta, self._running_mean,
                                self._running_var, self.momentum, self.eps, training, x_hat,
                                inv_std, y)
        return y, NormCache(self, x_hat, inv_std, training)

    def backward(self, da, cache):
        """Backward pass for the batch that made ``cache`` (training: through the batch
        statistics; inference: the running statistics are constants).

        Returns
        -------
        da_prev : ndarray (n_samples, width)
        dgamma, dbeta : ndarray (width,)
            New arrays; also kept as ``self.dgamma`` and ``self.dbeta``. Uses the current
            ``gamma``.
        """
        da = self._grad_input(da, cache)
        dx = np.empty_like(da)
        dgamma, dbeta = self._grads()
        _norm.batchnorm_backward(da, cache.x_hat, self._gamma, cache.inv_std, cache.training,
                                 dx, dgamma, dbeta)
        self.dgamma, self.dbeta = dgamma, dbeta
        return dx, dgamma, dbeta

    def __repr__(self):
        width = "" if self.n_in is None else f", width={self.n_in}"
        return (f"BatchNorm(momentum={self.momentum!r}, eps={self.eps!r}{width}, "
                f"dtype={self.dtype.name!r})")
