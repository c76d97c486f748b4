"""fp.to_onnx: the exported graph is valid ONNX and ONNX Runtime reproduces predict.

How outputs are compared (``assert_matches``): an rtol + atol formulation per output column,
``|onnx - predict| <= 1e-5 * |predict| + 1e-5 * max_i |predict[i, j]|`` for every element of
column j, i.e. a relative difference of at most 1e-5 with respect to the column's magnitude.
ONNX Runtime's float32 GEMM sums in another order than fastprop's BLAS, so an output that is a
cancellation of large terms carries an absolute error of the size of float32 rounding of those
terms, not of its own (possibly tiny) value; a purely element-wise relative measure would test
the conditioning of the random weights, not the export. Nor is an element-wise measure with
a small floor sound for bounded outputs: ONNX Runtime's Sigmoid is a rational approximation
accurate to ~1e-7 absolute (p = 0.0019 came out 8e-5 off relative), and exp(z) of a very
negative z carries the absolute error of z as its relative error.
"""
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import fastprop as fp                                                    # noqa: E402
from fastprop.activations import ACTIVATIONS                            # noqa: E402
from fastprop.datasets import load_digits                               # noqa: E402
from fastprop.export_onnx import DEFAULT_OPSET                          # noqa: E402

RTOL = 1e-5
ACTS = sorted(ACTIVATIONS)


# -- helpers ---------------------------------------------------------------------------------
def run(m, X):
    """ONNX Runtime's outputs for float32 X, by output name."""
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {"X": np.asarray(X, dtype=np.float32)})))


def assert_matches(got, want):
    """The rtol + atol comparison described in the module docstring."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape
    scale = np.max(np.abs(want), axis=0)
    bound = RTOL * np.abs(want) + RTOL * scale
    worst = float(np.max((np.abs(got - want) - bound) / np.maximum(scale, 1e-300)))
    assert np.all(np.abs(got - want) <= bound), f"exceeds the bound by {worst:.2e} of scale"



def export(obj, **kwargs):
    """to_onnx, checked with onnx's full checker; float64 models' warning asserted."""
    model = getattr(obj, "model_", obj)
    if model.dtype == np.float64:
        with pytest.warns(UserWarning, match="float32"):
            m = fp.to_onnx(obj, **kwargs)
        assert "float32" in m.graph.doc_string and "float64" in m.graph.doc_string
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error")        # no warning for float32 models
            m = fp.to_onnx(obj, **kwargs)
    assert isinstance(m, onnx.ModelProto)
    onnx.checker.check_model(m, full_check=True)
    return m


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits()
    return X / 16.0, y


def random_inputs(n_in, seed=0):
    """Standard normal rows, a few large ones (saturating units, softplus's linear branch),
    and exact zeros."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((300, n_in))
    X[:20] *= 30.0
    X[20:25] = 0.0
    return X.astype(np.float32)


def net(act, dtype, dropout, n_in=64, out_act=None, n_out=10, seed=0):
    layers = [fp.Dense(n_in, 32, activation=act, dtype=dtype, seed=seed)]
    if dropout:
        layers.append(fp.Dropout(0.3))
    layers.append(fp.Dense(32, 16, activation=act, dtype=dtype, seed=seed + 1))
    if dropout:
        layers.append(fp.Dropout(0.2))
    layers.append(fp.Dense(16, n_out, activation=out_act or act, dtype=dtype, seed=seed + 2))
    return fp.Sequential(layers, dtype=dtype, seed=seed)


# -- Sequential ------------------------------------------------------------------------------
@pytest.mark.parametrize("dropout", [False, True], ids=["plain", "dropout"])
@pytest.mark.parametrize("act", ACTS)
def test_every_activation_matches_predict(act, dtype, dropout, digits):
    model = net(act, dtype, dropout)
    params = model.params.copy()
    m = export(model)
    assert m.opset_import[0].version == DEFAULT_OPSET
    assert model.params.tobytes() == params.tobytes()       # export changes nothing
    for X in (random_inputs(64), digits[0].astype(np.float32)):
        got = run(m, X)["output"]
        want = model.predict(X)
        assert got.dtype == np.float32
        assert_matches(got, want)


def test_graph_interface():
    model = net("relu", "float32", True, n_in=7, n_out=3)
    m = export(model)
    (x,) = m.graph.input
    assert x.name == "X"
    t = x.type.tensor_type
    assert t.elem_type == onnx.TensorProto.FLOAT
    assert t.shape.dim[0].dim_param and not t.shape.dim[0].HasField("dim_value")   # dynamic
    assert t.shape.dim[1].dim_value == 7
    assert [o.name for o in m.graph.output] == ["output"]
    assert t.shape.dim[0].dim_param == m.graph.output[0].type.tensor_type.shape.dim[0].dim_param
    assert m.graph.output[0].type.tensor_type.shape.dim[1].dim_value == 3
    ops = [n.op_type for n in m.graph.node]
    assert ops.count("Gemm") == 3 and "Dropout" not in ops
    assert m.producer_name == "fastprop"
    for n in (1, 1000):                                      # any batch size
        X = random_inputs(7)[:1].repeat(n, axis=0)
        assert run(m, X)["output"].shape == (n, 3)
        assert_matches(run(m, X)["output"], model.predict(X))


@pytest.mark.parametrize("opset", [9, 13, 17, 19, 20, 21])
@pytest.mark.parametrize("act", ["gelu", "silu"])
def test_gelu_and_silu_at_each_opset(act, opset, dtype, digits):
    model = net(act, dtype, False)
    m = export(model, opset=opset)
    assert m.opset_import[0].version == opset
    ops = {n.op_type for n in m.graph.node}
    if act == "gelu":
        assert ("Gelu" in ops) == (opset >= 20)
        assert ("Erf" in ops) == (opset < 20)
    else:
        assert "Swish" not in ops and {"Sigmoid", "Mul"} <= ops
    for X in (random_inputs(64), digits[0]):
        assert_matches(run(m, X)["output"], model.predict(X))


@pytest.mark.parametrize("act", ACTS)
def test_lowest_opset_each_activation_needs(act):
    need = 9 if act == "gelu" else 7
    model = net(act, "float32", True)
    m = export(model, opset=need)
    assert_matches(run(m, random_inputs(64))["output"], model.predict(random_inputs(64)))
    with pytest.raises(ValueError, match=f"needs opset {need}"):
        fp.to_onnx(model, opset=need - 1)


@pytest.mark.parametrize("loss,out_act,n_out", [
    ("mse", "identity", 3), ("mae", "identity", 3), ("huber", "identity", 3),
    ("cross_entropy", "softmax", 10), ("binary_cross_entropy", "sigmoid", 1),
    ("binary_cross_entropy", "sigmoid", 4)], ids=["mse", "mae", "huber", "cross_entropy",
                                                   "bce_binary", "bce_multilabel"])
def test_each_loss_kind_after_training(loss, out_act, n_out, dtype, digits):
    X, y = digits
    if loss == "cross_entropy":
        target = y
    elif n_out == 1:
        target = (y % 2).astype(float).reshape(-1, 1)
    else:
        target = np.stack([(y >> k) & 1 for k in range(n_out)], axis=1).astype(float)
        if out_act == "identity":
            target = target[:, :n_out] * 2.0 - 0.5
    layers = [fp.Dense(64, 32, activation="tanh", dtype=dtype, seed=1), fp.Dropout(0.1),
              fp.Dense(32, n_out, activation=out_act, dtype=dtype, seed=2)]
    model = fp.Sequential(layers, loss=loss, dtype=dtype, seed=0,
                          optimizer=fp.optim.Adam(lr=1e-2))
    model.fit(X, target, epochs=3, batch_size=64, verbose=0)
    m = export(model)
    for Xs in (X, random_inputs(64)):
        got, want = run(m, Xs)["output"], model.predict(Xs)
        assert_matches(got, want)


# -- scikit-learn estimators ---------------------------------------------------------------
@pytest.fixture(scope="module")
def sk():
    pytest.importorskip("sklearn")
    from fastprop import sklearn as fpsk
    return fpsk


def fit_quietly(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")              # ConvergenceWarning of the short fits
        return est.fit(X, y)


def check_classifier(clf, m, X):
    out = run(m, X)
    assert [o.name for o in m.graph.output] == ["label", "probabilities"]
    proba = clf.predict_proba(X)
    assert out["probabilities"].dtype == np.float32
    assert out["probabilities"].shape == proba.shape == (len(X), len(clf.classes_))
    assert_matches(out["probabilities"], proba)
    label, want = out["label"], clf.predict(X)
    assert label.shape == want.shape
    # labels agree wherever the two best classes are not within float32 rounding of a tie
    top2 = np.sort(proba, axis=1)[:, -2:] if proba.shape[1] > 1 else np.ones((len(X), 2))
    clear = (top2[:, 1] - top2[:, 0]) > 1e-5
    assert clear.mean() > 0.9
    assert np.array_equal(label[clear], want[clear])
    return label


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["multiclass_int", "binary_int", "multiclass_str",
                                  "binary_str", "float_labels"])
def test_classifier(sk, kind, dtype_name, digits):
    X, y = digits
    labels = {
        "multiclass_int": y + 3,
        "binary_int": np.where(y % 2, 7, -2),
        "multiclass_str": np.array(["zero", "one", "two", "three", "four", "five", "six",
                                    "seven", "eight", "nine"])[y],
        "binary_str": np.where(y % 2, "odd", "even"),
        "float_labels": (y % 3).astype(float) - 1.0,
    }[kind]
    clf = fit_quietly(sk.FastpropClassifier(hidden_layer_sizes=(32,), max_iter=10,
                                            dtype=dtype_name, random_state=0), X, labels)
    m = export(clf)
    label_type = m.graph.output[0].type.tensor_type.elem_type
    want_type = {"multiclass_int": onnx.TensorProto.INT64, "binary_int": onnx.TensorProto.INT64,
                 "float_labels": onnx.TensorProto.DOUBLE}.get(kind, onnx.TensorProto.STRING)
    assert label_type == want_type
    for Xs in (X, random_inputs(64)):
        label = check_classifier(clf, m, Xs)
        if want_type == onnx.TensorProto.STRING:
            assert all(isinstance(v, str) for v in label)
    assert (run(m, X)["label"] == clf.predict(X)).mean() > 0.999


def test_classifier_with_a_single_class(sk, digits):
    X, _ = digits
    clf = fit_quietly(sk.FastpropClassifier(hidden_layer_sizes=(4,), max_iter=2,
                                            random_state=0), X, np.full(len(X), "only"))
    out = run(export(clf), X)
    assert np.array_equal(out["label"], clf.predict(X))
    assert_matches(out["probabilities"], clf.predict_proba(X))


def test_classifier_sigmoid_outputs(sk, digits):
    """Estimators with a sigmoid output (MLPClassifier's binary and multi-label form) export
    as predict_proba / predict define them: binary (one unit p) -> columns [1 - p, p] and
    classes_[p > 0.5]; multi-label (one unit per label) -> p and the int64 indicator p > 0.5.
    The network is swapped in by hand: today's estimator always has a softmax output."""
    X, y = digits
    clf = fit_quietly(sk.FastpropClassifier(hidden_layer_sizes=(8,), max_iter=2,
                                            random_state=0), X, np.where(y % 2, "b", "a"))
    Xs = np.concatenate([X, random_inputs(64)]).astype(np.float32)
    clf.model_ = fp.Sequential([fp.Dense(64, 8, activation="relu", seed=1),
                                fp.Dense(8, 1, activation="sigmoid", seed=2)])
    out = run(export(clf), Xs)
    p = clf.model_.predict(Xs)
    assert_matches(out["probabilities"], np.hstack([1 - p, p]))
    clear = np.abs(p[:, 0] - 0.5) > 1e-5
    assert np.array_equal(out["label"][clear], clf.classes_[(p[clear, 0] > 0.5).astype(int)])

    clf.model_ = fp.Sequential([fp.Dense(64, 8, activation="relu", seed=1),
                                fp.Dense(8, 3, activation="sigmoid", seed=2)])
    clf.classes_ = np.arange(3)
    m = export(clf)
    assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    out = run(m, Xs)
    p = clf.model_.predict(Xs)
    assert out["label"].shape == p.shape and out["label"].dtype == np.int64
    clear = np.abs(p - 0.5) > 1e-5
    assert np.array_equal(out["label"][clear], (p > 0.5).astype(np.int64)[clear])


def test_multilabel_estimator(sk, digits):
    """Against the estimator's own predict / predict_proba on an indicator-matrix y (skipped
    while FastpropClassifier refuses multi-label y)."""
    X, y = digits
    Y = np.stack([y % 2, (y > 4).astype(int), (y % 3 == 0).astype(int)], axis=1)
    clf = sk.FastpropClassifier(hidden_layer_sizes=(16,), max_iter=5, random_state=0)
    try:
        fit_quietly(clf, X, Y)
    except ValueError as exc:
        if "multi-label" not in str(exc):
            raise
        pytest.skip("FastpropClassifier does not fit multi-label y yet")
    out = run(export(clf), X)
    assert_matches(out["probabilities"], clf.predict_proba(X))
    pred = clf.predict(X)
    proba = clf.predict_proba(X)
    clear = np.all(np.abs(proba - 0.5) > 1e-5, axis=1)
    assert np.array_equal(out["label"][clear], np.asarray(pred)[clear])


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
@pytest.mark.parametrize("n_targets", [1, 3])
def test_regressor(sk, n_targets, dtype_name, digits):
    X, y = digits
    Y = np.stack([y, y % 3, (y - 4.5) ** 2], axis=1)[:, :n_targets] * 10.0 + 100.0
    target = Y[:, 0] if n_targets == 1 else Y
    reg = fit_quietly(sk.FastpropRegressor(hidden_layer_sizes=(32,), max_iter=10,
                                           learning_rate=1e-2, dtype=dtype_name,
                                           random_state=0), X, target)
    m = export(reg)
    assert [o.name for o in m.graph.output] == ["variable"]
    for Xs in (X, random_inputs(64)):
        got = run(m, Xs)["variable"]
        assert got.shape == (len(Xs), n_targets) and got.dtype == np.float32
        assert_matches(got, np.asarray(reg.predict(Xs)).reshape(len(Xs), n_targets))


def test_pipeline_use(sk, digits):
    """The README's example: scale outside, classifier exported."""
    from sklearn.preprocessing import StandardScaler
    X, y = digits
    scaler = StandardScaler().fit(X)
    clf = fit_quietly(sk.FastpropClassifier(hidden_layer_sizes=(32,), max_iter=5,
                                            random_state=0), scaler.transform(X), y)
    Xt = scaler.transform(X).astype(np.float32)
    check_classifier(clf, export(clf), Xt)


# -- files -----------------------------------------------------------------------------------
def test_path_writes_a_model_that_loads_back(tmp_path, digits):
    X = digits[0]
    model = net("gelu", "float32", True)
    path = tmp_path / "model.onnx"
    m = export(model, path=path)
    assert path.read_bytes() == m.SerializeToString()
    loaded = onnx.load(str(path))
    onnx.checker.check_model(loaded, full_check=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert_matches(sess.run(None, {"X": X.astype(np.float32)})[0], model.predict(X))
    assert sorted(os.listdir(tmp_path)) == ["model.onnx"]          # no temporary file left
    # a str path, replacing the file
    other = net("tanh", "float32", False)
    export(other, path=str(path))
    assert_matches(run(onnx.load(str(path)), X)["output"], other.predict(X))
    assert sorted(os.listdir(tmp_path)) == ["model.onnx"]


def test_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        fp.to_onnx(net("relu", "float32", False), path=path)
    assert path.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["model.onnx"]


# -- bad input -------------------------------------------------------------------------------
def test_path_errors_write_nothing(tmp_path):
    model = net("relu", "float32", False)
    missing = tmp_path / "no_such_dir" / "model.onnx"
    with pytest.raises(ValueError, match="does not exist"):
        fp.to_onnx(model, path=missing)
    assert not missing.parent.exists() and os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="is a directory"):
        fp.to_onnx(model, path=tmp_path)
    with pytest.raises(ValueError, match="path"):
        fp.to_onnx(model, path="")
    with pytest.raises(TypeError, match="path"):
        fp.to_onnx(model, path=b"model.onnx")
    with pytest.raises(TypeError, match="path"):
        fp.to_onnx(model, path=3)
    # a failing export writes nothing either
    with pytest.raises(ValueError, match="opset"):
        fp.to_onnx(model, path=tmp_path / "m.onnx", opset=3)
    assert os.listdir(tmp_path) == []


def test_not_a_model():
    for obj in (None, "model.fpz", fp.Dense(3, 2), [fp.Dense(3, 2)], np.zeros((3, 2))):
        with pytest.raises(TypeError, match="model_or_fitted_estimator.*Sequential"):
            fp.to_onnx(obj)


def test_foreign_estimators_are_refused(sk):
    from sklearn.neural_network import MLPClassifier
    with pytest.raises(TypeError, match="MLPClassifier"):
        fp.to_onnx(MLPClassifier())


@pytest.mark.parametrize("est", ["FastpropClassifier", "FastpropRegressor"])
def test_unfitted_estimator(sk, est):
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError, match=f"{est} is not fitted"):
        fp.to_onnx(getattr(sk, est)())
    assert issubclass(NotFittedError, ValueError)


def test_custom_layers_are_refused():
    class OnnxSubDense(fp.Dense):
        pass
    with pytest.raises(TypeError, match=r"layers\[1\].*OnnxSubDense.*not registered"):
        fp.Sequential([fp.Dense(3, 4), OnnxSubDense(4, 2)])
    fp.register_layer(OnnxSubDense)       # a registered subclass runs as a Dense node
    model = fp.Sequential([fp.Dense(3, 4), OnnxSubDense(4, 2)])
    with pytest.raises(TypeError, match=r"layers\[1\].*OnnxSubDense"):
        fp.to_onnx(model)
    # model.layers is a tuple: nothing else can be slipped into a model after it is built
    with pytest.raises((TypeError, AttributeError)):
        model.layers.insert(1, fp.Dense(4, 4))


def test_opset_errors():
    model = net("relu", "float32", False)
    newest = onnx.defs.onnx_opset_version()
    with pytest.raises(ValueError, match=f"at most {newest}"):
        fp.to_onnx(model, opset=newest + 1)
    with pytest.raises(ValueError, match="needs opset 9"):
        fp.to_onnx(net("gelu", "float32", False), opset=8)
    for bad in (13.0, "13", True):
        with pytest.raises(TypeError, match="opset"):
            fp.to_onnx(model, opset=bad)
    assert fp.to_onnx(model, opset=np.int64(15)).opset_import[0].version == 15


def test_unmappable_classifier_output(sk, digits):
    X, y = digits
    clf = fit_quietly(sk.FastpropClassifier(hidden_layer_sizes=(4,), max_iter=1,
                                            random_state=0), X, y)
    clf.model_ = fp.Sequential([fp.Dense(64, 4, activation="softmax")])   # 4 units, 10 classes
    with pytest.raises(ValueError, match="10 classes"):
        fp.to_onnx(clf)


def test_public_name():
    assert "to_onnx" in fp.__all__ and fp.to_onnx is fp.export_onnx.to_onnx


def test_without_onnx_installed(monkeypatch):
    code = "import sys, fastprop; assert 'onnx' not in sys.modules, 'import fastprop loaded onnx'"
    subprocess.run([sys.executable, "-c", code], check=True)
    monkeypatch.setitem(sys.modules, "onnx", None)            # import onnx -> ImportError
    with pytest.raises(ImportError, match=r"fastprop\[onnx\]"):
        fp.to_onnx(net("relu", "float32", False))


def test_too_large_for_one_protobuf(monkeypatch):
    model = net("relu", "float32", False)
    monkeypatch.setattr(fp.export_onnx, "_MAX_PROTO_BYTES", 2**20 + 4 * model.n_params - 1)
    with pytest.raises(ValueError, match="2 GB"):
        fp.to_onnx(model)


def test_an_activation_without_onnx_form(monkeypatch):
    """A fastprop activation added without its ONNX form is refused, naming it (the
    activation tests above fail for it too: they run over every name in ACTIVATIONS)."""
    monkeypatch.delitem(fp.export_onnx._ACTIVATIONS, "elu")
    with pytest.raises(ValueError, match="activation 'elu'"):
        fp.to_onnx(net("elu", "float32", False))
    fp.to_onnx(net("relu", "float32", False))
    with pytest.raises(ValueError, match="activation 'elu'"):
        fp.to_onnx(fp.Sequential([fp.Dense(3, 4), fp.Activation("elu")]))


# -- Activation, BatchNorm and LayerNorm layers ----------------------------------------------
def ops_of(m):
    return [n.op_type for n in m.graph.node]


@pytest.mark.parametrize("dense_act", ["identity", "relu"])
@pytest.mark.parametrize("act", ACTS)
def test_activation_layers(act, dense_act, dtype, digits):
    """An Activation layer after an identity Dense and after a relu Dense: the same nodes as a
    Dense's activation, at the default opset and the lowest the activation needs."""
    model = fp.Sequential([fp.Dense(64, 16, activation=dense_act, dtype=dtype, seed=3),
                           fp.Activation(act),
                           fp.Dense(16, 5, dtype=dtype, seed=4)], dtype=dtype, seed=0)
    need = 9 if act == "gelu" else 7
    for opset in (None, need):
        m = export(model, opset=opset)
        ops = ops_of(m)
        assert ops.count("Gemm") == 2
        if act == "relu":
            assert ops.count("Relu") == 1 + (dense_act == "relu")
        # the Activation layer's own nodes (after a relu Dense, elu and leaky_relu compute
        # the identity, so the outputs alone would not tell)
        own = [n.op_type for n in m.graph.node if n.name.startswith("activation1_")]
        assert bool(own) == (act != "identity")
        for X in (random_inputs(64), digits[0]):
            assert_matches(run(m, X)["output"], model.predict(X))
    with pytest.raises(ValueError, match=f"needs opset {need}"):
        fp.to_onnx(model, opset=need - 1)


def test_softmax_activation_layer_as_output(dtype, digits):
    X, y = digits
    model = fp.Sequential([fp.Dense(64, 32, activation="relu", dtype=dtype, seed=1),
                           fp.Dense(32, 10, dtype=dtype, seed=2), fp.Activation("softmax")],
                          loss="cross_entropy", dtype=dtype, seed=0,
                          optimizer=fp.optim.Adam(lr=1e-2))
    model.fit(X, y, epochs=2, batch_size=64, verbose=0)
    m = export(model)
    assert ops_of(m)[-2:] == ["Softmax", "Identity"]
    for Xs in (X, random_inputs(64)):
        got = run(m, Xs)["output"]
        assert_matches(got, model.predict(Xs))
        np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)


def trained_norm_model(norm, dtype, digits):
    """Dense -> norm -> Activation -> Dense -> norm -> Dense, fit a few epochs: running
    statistics and gamma / beta away from their initial zeros / ones."""
    X, y = digits
    model = fp.Sequential([fp.Dense(64, 32, dtype=dtype, seed=1), norm(dtype=dtype),
                           fp.Activation("tanh"), fp.Dropout(0.1),
                           fp.Dense(32, 16, activation="relu", dtype=dtype, seed=2),
                           norm(dtype=dtype),
                           fp.Dense(16, 10, activation="softmax", dtype=dtype, seed=3)],
                          loss="cross_entropy", dtype=dtype, seed=0,
                          optimizer=fp.optim.Adam(lr=1e-2))
    model.fit(X, y, epochs=3, batch_size=64, verbose=0)
    for layer in (model.layers[1], model.layers[5]):
        assert np.max(np.abs(layer.gamma - 1.0)) > 1e-3
        assert np.max(np.abs(layer.beta)) > 1e-3
        if norm is fp.BatchNorm:
            assert np.max(np.abs(layer.running_mean)) > 1e-2
            assert np.max(np.abs(layer.running_var - 1.0)) > 1e-2
    return model


@pytest.mark.parametrize("opset", [7, 9, 13, 15, 17, 21])
def test_batchnorm_after_training(opset, dtype, digits):
    model = trained_norm_model(fp.BatchNorm, dtype, digits)
    m = export(model, opset=opset)
    ops = ops_of(m)
    assert "BatchNormalization" not in ops and ops.count("Sqrt") == 2
    for X in (digits[0], random_inputs(64)):
        assert_matches(run(m, X)["output"], model.predict(X))   # inference: running stats


@pytest.mark.parametrize("opset", [7, 13, 16, 17, 18, 21])
def test_layernorm_at_each_opset(opset, dtype, digits):
    model = trained_norm_model(fp.LayerNorm, dtype, digits)
    m = export(model, opset=opset)
    ops = ops_of(m)
    assert ops.count("LayerNormalization") == (2 if opset >= 17 else 0)
    assert ("ReduceMean" in ops) == (opset < 17)
    for X in (digits[0], random_inputs(64)):
        assert_matches(run(m, X)["output"], model.predict(X))


def test_norm_layers_first_and_lowest_opset(dtype):
    """A norm layer straight on the input (zero rows included: a constant row) at opset 7;
    opset 6 is refused naming opset 7; a gelu Activation between norms needs opset 9."""
    rng = np.random.default_rng(5)
    bn, ln = fp.BatchNorm(eps=1e-3, dtype=dtype), fp.LayerNorm(eps=1e-4, dtype=dtype)
    model = fp.Sequential([bn, ln, fp.Dense(6, 3, dtype=dtype, seed=1)], dtype=dtype)
    bn.running_mean = rng.standard_normal(6)
    bn.running_var = rng.uniform(0.1, 4.0, 6)
    bn.gamma, bn.beta = rng.standard_normal(6), rng.standard_normal(6)
    ln.gamma, ln.beta = rng.standard_normal(6), rng.standard_normal(6)
    X = random_inputs(6)
    m = export(model, opset=7)
    assert_matches(run(m, X)["output"], model.predict(X))
    with pytest.raises(ValueError, match="needs opset 7"):
        fp.to_onnx(model, opset=6)
    gelu = fp.Sequential([fp.LayerNorm(dtype=dtype), fp.Activation("gelu"),
                          fp.Dense(6, 2, dtype=dtype, seed=2)], dtype=dtype)
    with pytest.raises(ValueError, match="needs opset 9"):
        fp.to_onnx(gelu, opset=8)
