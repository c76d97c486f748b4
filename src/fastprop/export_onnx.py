"""Export to ONNX: :func:`to_onnx` turns a :class:`~fastprop.Sequential` or a fitted
:class:`~fastprop.sklearn.FastpropClassifier` / :class:`~fastprop.sklearn.FastpropRegressor`
into an ``onnx.ModelProto`` that ONNX Runtime (C++, C#, Java, JavaScript, ...) can serve.

The graph has one input ``X``: float32, shape ``(N, n_features)`` with a dynamic batch ``N``.
Each :class:`~fastprop.Dense` layer becomes a ``Gemm`` (``X @ W + b``) followed by its activation;
an :class:`~fastprop.Activation` layer becomes that same activation's nodes (below);
:class:`~fastprop.Dropout` is the identity at inference and adds no node;
:class:`~fastprop.BatchNorm` is exported in inference mode, as ``predict`` computes it:
``(x - running_mean) / Sqrt(running_var + eps) * gamma + beta`` composed from ``Sub``, ``Add``,
``Sqrt``, ``Div``, ``Mul``, ``Add`` (the same arithmetic at every opset; ONNX's
``BatchNormalization`` changes its attributes and outputs at opsets 9, 14 and 15);
:class:`~fastprop.LayerNorm` (over each row's features, biased variance) is ONNX's
``LayerNormalization`` from opset 17, below it composed from ``ReduceMean``, ``Sub``, ``Mul``,
``Add``, ``Sqrt``, ``Div`` (opset 7 on). Outputs:

- ``Sequential``: ``output``, ``(N, n_out)`` float32, what :meth:`Sequential.predict` returns.
- ``FastpropClassifier``: ``label`` ``(N,)`` in the type of ``classes_`` (int64 for integer
  classes, string for str classes, double for float classes, bool for bool classes) and
  ``probabilities`` ``(N, n_classes)`` float32, what ``predict`` / ``predict_proba`` return (as
  skl2onnx exports scikit-learn's ``MLPClassifier`` with ``zipmap=False``). A single sigmoid
  output unit (binary) gives the two columns ``1 - p, p``; a sigmoid output of one unit per
  label (multi-label) gives ``label`` ``(N, n_labels)`` int64 = ``probabilities > 0.5``.
- ``FastpropRegressor``: ``variable``, ``(N, n_targets)`` float32 (2-D also for 1-D targets, as
  skl2onnx does).

Activations, as fastprop defines them: ``relu`` -> ``Relu``; ``leaky_relu`` -> ``LeakyRelu``
(slope 0.01); ``elu`` -> ``Elu`` (alpha 1); ``sigmoid``, ``tanh``, ``softplus`` -> the ops of
those names; ``softmax`` -> ``Softmax`` over axis 1; ``gelu`` (exact erf form) -> ``Gelu``
from opset 20, below it ``0.5 x (1 + Erf(x / sqrt 2))`` (needs opset 9); ``silu`` ->
``x * Sigmoid(x)`` at every opset: ONNX's ``Swish`` (opset 24) is that same product, and ONNX
Runtime 1.32 has a ``Swish`` kernel only for models of opset 24 exactly (opset 25-28 models
holding it fail to load; measured).

Opset: by default 13 (:data:`DEFAULT_OPSET`), which every maintained runtime runs (ONNX Runtime
since 1.6, 2020) and which has every operator these graphs need but ``Gelu``; newer opsets
change nothing here but that. ``opset=`` takes any opset from the lowest the model needs (7,
ONNX Runtime's oldest, or 9 for ``gelu``'s ``Erf``) to the newest the installed ``onnx`` knows.
The IR version is the lowest the opset allows (at opsets 7 and 8, IR 3, which requires the
weights to be listed among the graph's inputs too).

float64 models are exported as float32 (ONNX Runtime's CPU build has no float64 kernels for
several activations): weights rounded once, a ``UserWarning`` and a note in the graph's
``doc_string``.
"""
import math
import numbers
import os
import sys
import warnings

import numpy as np

from fastprop._files import atomic_target, atomic_write
from fastprop._version import __version__
from fastprop.layers import Activation, BatchNorm, Dense, Dropout, LayerNorm
from fastprop.model import Sequential
from fastprop.reference._dense import LEAKY_SLOPE

__all__ = ["to_onnx", "DEFAULT_OPSET", "MIN_OPSET"]

DEFAULT_OPSET = 13
MIN_OPSET = 7       # ONNX Runtime runs every opset from 7 on
_ERF_OPSET = 9      # the composed GELU
_GELU_OPSET = 20    # the Gelu operator
_LAYERNORM_OPSET = 17   # the LayerNormalization operator
_ELU_ALPHA = 1.0
_MAX_PROTO_BYTES = 2**31 - 1    # protobuf's limit on one serialized message


def _import_onnx():
    try:
        import onnx
    except ImportError as exc:
        raise ImportError("fastprop.to_onnx needs the onnx package, which is not installed: "
                          "pip install 'fastprop[onnx]' (or pip install onnx)") from exc
    return onnx


# -- activations ------------------------------------------------------------------------------
# Each activation: the lowest opset its nodes need, and a function (graph, input name, layer
# prefix) -> output name that adds them.
def _identity(g, x, p):
    return x


def _unary(op, **attrs):
    def emit(g, x, p):
        return g.node(op, [x], p + op.lower(), **attrs)
    return emit


def _gelu(g, x, p):
    if g.opset >= _GELU_OPSET:
        return g.node("Gelu", [x], p + "gelu", approximate="none")
    t = g.node("Mul", [x, g.const(p + "inv_sqrt2", 1.0 / math.sqrt(2.0))], p + "scaled")
    t = g.node("Erf", [t], p + "erf")
    t = g.node("Add", [t, g.const(p + "one", 1.0)], p + "one_plus_erf")
    t = g.node("Mul", [x, t], p + "x_times")
    return g.node("Mul", [t, g.const(p + "half", 0.5)], p + "gelu")


def _silu(g, x, p):
    s = g.node("Sigmoid", [x], p + "sigmoid")
    return g.node("Mul", [x, s], p + "silu")


_ACTIVATIONS = {
    "identity": (MIN_OPSET, _identity),
    "relu": (MIN_OPSET, _unary("Relu")),
    "leaky_relu": (MIN_OPSET, _unary("LeakyRelu", alpha=LEAKY_SLOPE)),
    "elu": (MIN_OPSET, _unary("Elu", alpha=_ELU_ALPHA)),
    "gelu": (_ERF_OPSET, _gelu),
    "sigmoid": (MIN_OPSET, _unary("Sigmoid")),
    "tanh": (MIN_OPSET, _unary("Tanh")),
    "softplus": (MIN_OPSET, _unary("Softplus")),
    "silu": (MIN_OPSET, _silu),
    "softmax": (MIN_OPSET, _unary("Softmax", axis=1)),
}


# -- layers -----------------------------------------------------------------------------------
def _activation_opset(layer):
    """The opset a Dense's or an Activation's activation needs; ValueError without one."""
    if layer.activation not in _ACTIVATIONS:    # a fastprop activation this module lacks
        raise ValueError(f"cannot export {layer!r} to ONNX: no ONNX form of activation "
                         f"{layer.activation!r} (known: {', '.join(_ACTIVATIONS)})")
    return _ACTIVATIONS[layer.activation][0]


def _dense(g, x, layer, i):
    p = f"dense{i}_"
    W = g.weight(p + "W", layer.W)
    b = g.weight(p + "b", layer.b)
    z = g.node("Gemm", [x, W, b], p + "z")
    return _ACTIVATIONS[layer.activation][1](g, z, p)


def _activation(g, x, layer, i):
    return _ACTIVATIONS[layer.activation][1](g, x, f"activation{i}_")


def _dropout(g, x, layer, i):
    return x            # inverted dropout is the identity at inference


def _affine(g, x, layer, p):
    """``x * gamma + beta`` per feature, after a normalization."""
    t = g.node("Mul", [x, g.weight(p + "gamma", layer.gamma)], p + "scaled")
    return g.node("Add", [t, g.weight(p + "beta", layer.beta)], p + "y")


def _batchnorm(g, x, layer, i):
    # Inference, as predict: (x - running_mean) / sqrt(running_var + eps) * gamma + beta,
    # composed from Sub / Add / Sqrt / Div / Mul / Add rather than ONNX's BatchNormalization
    # (whose attributes and outputs change at opsets 7, 9, 14 and 15, and whose input is
    # (N, C, ...)): the same arithmetic at every opset, broadcasting over the batch.
    p = f"batchnorm{i}_"
    xc = g.node("Sub", [x, g.weight(p + "running_mean", layer.running_mean)], p + "centered")
    var = g.node("Add", [g.weight(p + "running_var", layer.running_var),
                         g.const(p + "eps", layer.eps)], p + "var_eps")
    std = g.node("Sqrt", [var], p + "std")
    return _affine(g, g.node("Div", [xc, std], p + "normalized"), layer, p)


def _layernorm(g, x, layer, i):
    # Over the features of each row, biased variance: LayerNormalization from opset 17,
    # below it composed (ReduceMean with its axes attribute, which opsets < 18 take).
    p = f"layernorm{i}_"
    if g.opset >= _LAYERNORM_OPSET:
        return g.node("LayerNormalization", [x, g.weight(p + "gamma", layer.gamma),
                                             g.weight(p + "beta", layer.beta)],
                      p + "y", axis=-1, epsilon=layer.eps)
    mean = g.node("ReduceMean", [x], p + "mean", axes=[1], keepdims=1)
    xc = g.node("Sub", [x, mean], p + "centered")
    var = g.node("ReduceMean", [g.node("Mul", [xc, xc], p + "squared")], p + "var",
                 axes=[1], keepdims=1)
    var = g.node("Add", [var, g.const(p + "eps", layer.eps)], p + "var_eps")
    std = g.node("Sqrt", [var], p + "std")
    return _affine(g, g.node("Div", [xc, std], p + "normalized"), layer, p)


# layer kind -> (lowest opset it needs, emitter). Exact types: a subclass may compute something
# else, and is refused like any other custom layer.
_LAYERS = {
    Dense: (_activation_opset, _dense),
    Dropout: (lambda layer: MIN_OPSET, _dropout),
    Activation: (_activation_opset, _activation),
    BatchNorm: (lambda layer: MIN_OPSET, _batchnorm),
    LayerNorm: (lambda layer: MIN_OPSET, _layernorm),
}


# -- the graph --------------------------------------------------------------------------------
class _Graph:
    """Nodes and initializers of one graph, float32 throughout."""

    def __init__(self, onnx, opset):
        self.onnx, self.opset = onnx, opset
        self.nodes, self.initializers = [], []

    def node(self, op, inputs, output, **attrs):
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [output], name=output,
                                                     **attrs))
        return output

    def weight(self, name, array):
        arr = np.ascontiguousarray(array, dtype=np.float32)
        self.initializers.append(self.onnx.numpy_helper.from_array(arr, name))
        return name

    def const(self, name, value):
        return self.weight(name, np.float32(value))

    def tensor(self, name, array):
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name


def _check_layers(model):
    """The lowest opset the model's layers need; TypeError naming an unknown layer kind."""
    need = MIN_OPSET
    for i, layer in enumerate(model.layers):
        kind = _LAYERS.get(type(layer))
        if kind is None:
            raise TypeError(f"cannot export layers[{i}] to ONNX: {type(layer).__name__} is not "
                            f"a layer kind to_onnx knows ({', '.join(t.__name__ for t in _LAYERS)}"
                            f"; subclasses and custom Python layers are not exported)")
        need = max(need, kind[0](layer))
    return need


def _emit_layers(g, model, x):
    for i, layer in enumerate(model.layers):
        x = _LAYERS[type(layer)][1](g, x, layer, i)
    return x


# -- what is exported -------------------------------------------------------------------------
def _estimator_kind(obj):
    """"classifier" / "regressor" for fastprop's estimators, else None (fastprop.sklearn is only
    looked up if it was imported: an estimator cannot exist otherwise)."""
    sk = sys.modules.get("fastprop.sklearn")
    if sk is None:
        return None
    if isinstance(obj, sk.FastpropClassifier):
        return "classifier"
    if isinstance(obj, sk.FastpropRegressor):
        return "regressor"
    return None


def _fitted_model(est):
    model = vars(est).get("model_")
    if model is None:
        from sklearn.exceptions import NotFittedError
        raise NotFittedError(f"This {type(est).__name__} is not fitted yet: call fit before "
                             f"to_onnx")
    if not isinstance(model, Sequential):
        raise TypeError(f"{type(est).__name__}.model_ must be a fastprop Sequential, got "
                        f"{type(model).__name__}")
    return model


def _label_tensor(classes):
    """classes_ as an array ONNX can hold, and a description of its element type."""
    classes = np.asarray(classes)
    kind = classes.dtype.kind
    if kind == "O":
        if all(isinstance(c, str) for c in classes):
            kind = "U"
        elif all(isinstance(c, (numbers.Integral, np.integer)) and
                 not isinstance(c, (bool, np.bool_)) for c in classes):
            kind = "i"
        else:
            raise TypeError(f"classes_ must hold only strings or only integers (or be a "
                            f"numeric array) to be exported to ONNX, got "
                            f"{sorted({type(c).__name__ for c in classes})}")
    if kind in "US":
        return np.array([str(c) for c in classes], dtype=object), "string"
    if kind in "iu":
        ints = [int(c) for c in classes]
        if ints and not -2**63 <= min(ints) <= max(ints) < 2**63:
            raise ValueError("classes_ has integers outside int64, which ONNX cannot hold")
        return np.array(ints, dtype=np.int64), "int64"
    if kind == "f":
        return classes.astype(np.float64), "double"
    if kind == "b":
        return classes.astype(bool), "bool"
    raise TypeError(f"classes_ of dtype {classes.dtype} cannot be exported to ONNX (numbers, "
                    f"bools or strings are)")


def _classifier_outputs(g, out, model, classes):
    """Add ``label`` and ``probabilities`` after the network output ``out``."""
    onnx = g.onnx
    n_out, n_classes = model.n_out, len(classes)
    act = model.layers[-1].activation     # the last layer of a Sequential is Dense
    labels, ltype = _label_tensor(classes)
    if act == "softmax" and n_out == n_classes:
        proba = g.node("Identity", [out], "probabilities")
    elif act == "sigmoid" and n_out == 1 and n_classes == 2:
        neg = g.node("Sub", [g.const("one", 1.0), out], "proba_negative")
        proba = g.node("Concat", [neg, out], "probabilities", axis=1)
    elif act == "sigmoid" and n_out == n_classes:       # multi-label: one unit per label
        g.node("Identity", [out], "probabilities")
        above = g.node("Greater", [out, g.const("threshold", 0.5)], "above_threshold")
        g.node("Cast", [above], "label", to=onnx.TensorProto.INT64)
        return "int64", ["N", n_classes]
    else:
        raise ValueError(f"cannot map the output layer ({n_out} {act} units) to the "
                         f"{n_classes} classes of classes_")
    index = g.node("ArgMax", [proba], "class_index", axis=1, keepdims=0)
    g.node("Gather", [g.tensor("classes", labels), index], "label", axis=0)
    return ltype, ["N"]


def _build(obj, opset):
    """(graph pieces, notes) for ``obj``; every check before any ONNX object is made."""
    kind = _estimator_kind(obj)
    if kind is not None:
        model = _fitted_model(obj)
    elif isinstance(obj, Sequential):
        model = obj
    else:
        raise TypeError(f"model_or_fitted_estimator must be a fastprop Sequential or a fitted "
                        f"FastpropClassifier / FastpropRegressor, got {type(obj).__name__}")
    need = _check_layers(model)
    onnx = _import_onnx()
    newest = onnx.defs.onnx_opset_version()
    if opset is None:
        opset = max(DEFAULT_OPSET, need)
    else:
        if isinstance(opset, (bool, np.bool_)) or not isinstance(opset, (numbers.Integral,
                                                                         np.integer)):
            raise TypeError(f"opset must be an int or None, got {type(opset).__name__} "
                            f"{opset!r}")
        opset = int(opset)
        if opset < need:
            why = ("its gelu activations use Erf" if need == _ERF_OPSET else
                   "ONNX Runtime runs opsets from 7 on")
            raise ValueError(f"opset={opset} is too old for this model: it needs opset {need} "
                             f"or newer ({why})")
        if opset > newest:
            raise ValueError(f"opset={opset} is newer than the installed onnx "
                             f"{onnx.__version__} knows (at most {newest})")
    n_bytes = 4 * model.n_params
    if n_bytes > _MAX_PROTO_BYTES - 2**20:
        raise ValueError(f"the model has {model.n_params:,} parameters ({n_bytes:,} bytes in "
                         f"float32): more than one ONNX file holds without external data "
                         f"(2 GB), which to_onnx does not write")
    return kind, model, opset, onnx


def _check_path(path):
    if path is None:
        return None
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be None, a str or an os.PathLike, got "
                        f"{type(path).__name__}")
    path = os.fsdecode(os.fspath(path))
    if not path:
        raise ValueError("path must not be empty")
    if os.path.isdir(path):
        raise ValueError(f"path {path!r} is a directory; give a file name such as "
                         f"'model.onnx'")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"path {path!r}: directory {directory!r} does not exist")
    return path


# -- the public function ----------------------------------------------------------------------
def to_onnx(model_or_fitted_estimator, path=None, opset=None):
    """Export a model or a fitted estimator to ONNX.

    Parameters
    ----------
    model_or_fitted_estimator : Sequential, FastpropClassifier or FastpropRegressor
        A :class:`~fastprop.Sequential` of :class:`~fastprop.Dense`,
        :class:`~fastprop.Activation`, :class:`~fastprop.Dropout`,
        :class:`~fastprop.BatchNorm` and :class:`~fastprop.LayerNorm` layers, or a fitted
        estimator of :mod:`fastprop.sklearn`.
    path : str or os.PathLike, optional
        Also write the model there (written to a temporary file in the same directory, then
        renamed: an existing file is replaced only by a complete one). ``.onnx`` by
        convention.
    opset : int, optional
        Version of the default ONNX operator set: from the lowest the model needs (7, or 9 with
        ``gelu`` layers) to the newest the installed ``onnx`` knows. Default 13
        (:data:`DEFAULT_OPSET`). From 17 on, LayerNorm is ONNX's ``LayerNormalization``
        operator; from 20 on, GELU is ONNX's ``Gelu`` operator.

    Returns
    -------
    onnx.ModelProto
        Input ``X``: float32, shape ``(N, n_features)``, ``N`` dynamic. Outputs: ``output``
        ``(N, n_out)`` float32 for a ``Sequential`` (its :meth:`~Sequential.predict`);
        ``label`` ``(N,)`` and ``probabilities`` ``(N, n_classes)`` float32 for a classifier
        (its ``predict`` / ``predict_proba``; ``label`` is int64 for integer classes, string
        for str classes); ``variable`` ``(N, n_targets)`` float32 for a regressor (its
        ``predict``, always 2-D).

    Raises
    ------
    ImportError
        If the ``onnx`` package is not installed (``pip install 'fastprop[onnx]'``).
    TypeError
        If ``model_or_fitted_estimator`` is neither a model nor a fastprop estimator, or the
        model holds a layer kind other than Dense, Activation, Dropout, BatchNorm and
        LayerNorm (subclasses included); if
        ``opset`` is not an int, or ``path`` not a path.
    ValueError
        If the estimator is not fitted (scikit-learn's ``NotFittedError``, a ValueError); if
        ``opset`` is older than the model needs (the message names the opset it needs) or newer
        than the installed ``onnx`` knows; if ``path`` is a directory or its directory does not
        exist. Nothing is written then.

    Warns
    -----
    UserWarning
        For a float64 model: it is exported as float32.

    Examples
    --------
    >>> import numpy as np, fastprop as fp
    >>> model = fp.Sequential([fp.Dense(4, 8, activation="relu", seed=0),
    ...                        fp.Dense(8, 3, activation="softmax", seed=1)])
    >>> onnx_model = fp.to_onnx(model)                      # doctest: +SKIP
    >>> import onnxruntime as ort                           # doctest: +SKIP
    >>> sess = ort.InferenceSession(onnx_model.SerializeToString())   # doctest: +SKIP
    >>> X = np.ones((2, 4), np.float32)
    >>> sess.run(None, {"X": X})[0]      # == model.predict(X)        # doctest: +SKIP
    """
    obj = model_or_fitted_estimator
    path = _check_path(path)
    kind, model, opset, onnx = _build(obj, opset)
    helper, TP = onnx.helper, onnx.TensorProto
    g = _Graph(onnx, opset)
    out = _emit_layers(g, model, "X")

    if kind == "classifier":
        ltype, lshape = _classifier_outputs(g, out, model, obj.classes_)
        elem = {"int64": TP.INT64, "string": TP.STRING, "double": TP.DOUBLE,
                "bool": TP.BOOL}[ltype]
        outputs = [helper.make_tensor_value_info("label", elem, lshape),
                   helper.make_tensor_value_info("probabilities", TP.FLOAT,
                                                 ["N", len(obj.classes_)])]
    else:
        name = "variable" if kind == "regressor" else "output"
        # the output must be a node's output (not X itself, for a model of identities)
        g.node("Identity", [out], name)
        outputs = [helper.make_tensor_value_info(name, TP.FLOAT, ["N", model.n_out])]

    doc = (f"fastprop {__version__} {type(obj).__name__}: "
           + " -> ".join(repr(layer) for layer in model.layers))
    if model.dtype != np.float32:
        note = (f"exported as float32 from a {model.dtype.name} model: weights rounded to "
                f"float32 and computed in float32 (ONNX Runtime's CPU build lacks float64 "
                f"kernels for several activations); outputs differ from predict by float32 "
                f"rounding")
        doc += ". Note: " + note
        warnings.warn(f"to_onnx: the model is {note}", UserWarning, stacklevel=2)
    opsets = [helper.make_opsetid("", opset)]
    ir_version = helper.find_min_ir_version_for(opsets)
    inputs = [helper.make_tensor_value_info("X", TP.FLOAT, ["N", model.n_in])]
    if ir_version < 4:          # IR 3: every initializer is also a graph input
        inputs += [helper.make_tensor_value_info(t.name, t.data_type, t.dims)
                   for t in g.initializers]
    graph = helper.make_graph(g.nodes, "fastprop", inputs, outputs,
                              initializer=g.initializers, doc_string=doc)
    m = helper.make_model(graph, opset_imports=opsets, producer_name="fastprop",
                          producer_version=__version__, doc_string=doc,
                          ir_version=ir_version)
    onnx.checker.check_model(m)
    if path is not None:
        data = m.SerializeToString()
        atomic_write(atomic_target(path, "ONNX model"), lambda f: f.write(data), path,
                     "ONNX model")
    return m
