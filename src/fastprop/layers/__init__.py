"""Layer kinds, one module each, all following the protocol of :class:`Layer`.

``fastprop.layers.Dense`` (:mod:`.dense`), ``Dropout`` (:mod:`.dropout`), ``Activation``
(:mod:`.activation`), ``BatchNorm`` (:mod:`.batchnorm`), ``LayerNorm`` (:mod:`.layernorm`);
:func:`register_layer` adds a kind to the registry that
``get_config`` / ``from_config`` / ``fastprop.load`` use.
"""
from fastprop.layers._base import LAYERS, Layer, get_layer_class, register_layer
from fastprop.layers.activation import Activation, ActivationCache
from fastprop.layers.batchnorm import BatchNorm
from fastprop.layers.dense import Dense, DenseCache
from fastprop.layers.dropout import Dropout, DropoutCache
from fastprop.layers.layernorm import LayerNorm, NormCache

__all__ = ["Layer", "register_layer", "get_layer_class", "LAYERS", "Dense", "DenseCache",
           "Dropout", "DropoutCache", "Activation", "ActivationCache", "BatchNorm", "LayerNorm",
           "NormCache"]
