"""Any memory accepted: unaligned, non-native byte order, strided, Fortran-ordered, read-only
and memory-mapped arrays work on every entry point, give the same results as a plain
C-contiguous array, and are never written to; a plain array is never copied."""
import warnings

import numpy as np
import pytest

import fastprop as fp
from fastprop import _validation as V
from fastprop.losses import prepare_sample_weight, prepare_targets

KINDS = ["unaligned", "swapped", "strided", "fortran", "readonly", "memmap"]


# -- making each kind of memory ------------------------------------------------------------------
def unaligned(a):
    """A copy of ``a`` one byte past an aligned address (as a block sent between processes
    can arrive)."""
    buf = bytearray(a.nbytes + 1)
    u = np.frombuffer(buf, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
    u[...] = a
    return u


def memory(kind, a, tmp_path):
    """``a``'s values in memory of the given kind."""
    a = np.ascontiguousarray(a)
    if kind == "unaligned":
        out = unaligned(a)
        if a.dtype.itemsize > 1:
            assert not out.flags.aligned
    elif kind == "swapped":
        out = a.astype(a.dtype.newbyteorder())
        assert not out.dtype.isnative or a.dtype.itemsize == 1
    elif kind == "strided":
        out = np.repeat(a, 2, axis=0)[::2]
        assert not out.flags.c_contiguous
    elif kind == "fortran":
        out = np.asfortranarray(a)
        assert a.ndim < 2 or a.shape[1] == 1 or not out.flags.c_contiguous
    elif kind == "readonly":
        out = a.copy()
        out.setflags(write=False)
    elif kind == "memmap":
        path = tmp_path / f"m{len(list(tmp_path.iterdir()))}.bin"
        mm = np.memmap(path, dtype=a.dtype, mode="w+", shape=a.shape)
        mm[...] = a
        mm.flush()
        del mm
        out = np.memmap(path, dtype=a.dtype, mode="r", shape=a.shape)
    else:                                                       # pragma: no cover
        raise AssertionError(kind)
    np.testing.assert_array_equal(out, a)
    return out


class Inputs:
    """A set of arrays in one memory kind, with a check that none was written to."""

    def __init__(self, kind, tmp_path, **arrays):
        self.plain = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
        self.odd = {k: memory(kind, v, tmp_path) for k, v in self.plain.items()}
        self.before = {k: v.copy() for k, v in self.plain.items()}

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return self.odd[name]

    def unchanged(self):
        for k, v in self.odd.items():
            np.testing.assert_array_equal(np.asarray(v), self.before[k], err_msg=k)
        return True


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


def make_classifier(dtype, seed=0):
    layers = [fp.Dense(5, 8, activation="tanh", dtype=dtype, seed=seed),
              fp.Dropout(0.2),
              fp.Dense(8, 3, activation="softmax", dtype=dtype, seed=seed + 1)]
    return fp.Sequential(layers, optimizer=fp.optim.Adam(lr=0.01), dtype=dtype, seed=seed)


def make_regressor(dtype, seed=0):
    layers = [fp.Dense(5, 6, activation="relu", dtype=dtype, seed=seed),
              fp.Dense(6, 2, activation="linear", dtype=dtype, seed=seed + 1)]
    return fp.Sequential(layers, optimizer=fp.optim.SGD(lr=0.05, momentum=0.9), dtype=dtype,
                         seed=seed)


def data(dtype, n=24, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5)).astype(dtype)
    labels = rng.integers(0, 3, n).astype(np.int64)
    Y = rng.standard_normal((n, 2)).astype(dtype)
    w = rng.uniform(0.5, 2.0, n).astype(dtype)
    return X, labels, Y, w


# -- the conversion itself -----------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_as_native_plain_array_is_not_copied(dtype):
    a = np.arange(12, dtype=dtype).reshape(4, 3)
    assert V.as_native(a, dtype) is a
    if dtype != np.int64:
        out = V.as_array(a, "X", np.dtype(dtype))
        assert np.shares_memory(out, a)


def test_as_native_readonly_and_memmap_not_copied(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    for k in ("readonly", "memmap"):
        m = memory(k, a, tmp_path)
        assert np.shares_memory(V.as_array(m, "X", np.dtype(np.float32)), m)


@pytest.mark.parametrize("target", [np.float32, np.float64, np.int64])
def test_as_native_every_kind(kind, tmp_path, target):
    for src in (np.float32, np.float64, np.int64, np.int32):
        a = (np.arange(15) - 7).astype(src).reshape(5, 3)
        m = memory(kind, a, tmp_path)
        out = V.as_native(m, target)
        assert out.flags.c_contiguous and out.flags.aligned and out.dtype.isnative
        assert out.dtype == target
        np.testing.assert_array_equal(out, a.astype(target))


def test_as_array_every_kind(kind, tmp_path, dtype):
    a = np.random.default_rng(1).standard_normal((6, 4)).astype(dtype)
    inp = Inputs(kind, tmp_path, a=a)
    out = V.as_array(inp.a, "X", dtype)
    assert out.flags.c_contiguous and out.flags.aligned and out.dtype.isnative
    np.testing.assert_array_equal(out, a)
    copied = V.as_array(inp.a, "X", dtype, copy=True)
    assert not np.shares_memory(copied, inp.a) and copied.flags.aligned
    assert inp.unchanged()


def test_nan_in_odd_memory_still_refused(kind, tmp_path, dtype):
    a = np.ones((4, 3), dtype=dtype)
    a[2, 1] = np.nan
    with pytest.raises(ValueError, match="X contains NaN"):
        V.as_array(memory(kind, a, tmp_path), "X", dtype)


def test_targets_and_weights_every_kind(kind, tmp_path, dtype):
    X, labels, Y, w = data(dtype)
    inp = Inputs(kind, tmp_path, labels=labels, flabels=labels.astype(dtype), Y=Y, w=w)
    for y in (inp.labels, inp.flabels):
        y_dense, lab = prepare_targets("cross_entropy", y, len(X), 3, dtype)
        assert y_dense is None and lab.flags.aligned and lab.dtype.isnative
        np.testing.assert_array_equal(lab, labels)
    y_dense, lab = prepare_targets("mse", inp.Y, len(X), 2, dtype)
    assert lab is None and y_dense.flags.aligned and y_dense.dtype.isnative
    np.testing.assert_array_equal(y_dense, Y)
    sw = prepare_sample_weight(inp.w, len(X), dtype)
    assert sw.flags.aligned and sw.dtype.isnative
    np.testing.assert_array_equal(sw, w)
    assert inp.unchanged()


# -- Sequential ----------------------------------------------------------------------------------
def test_predict(kind, tmp_path, dtype):
    X, *_ = data(dtype)
    model = make_classifier(dtype)
    inp = Inputs(kind, tmp_path, X=X)
    np.testing.assert_array_equal(model.predict(inp.X), model.predict(X))
    np.testing.assert_array_equal(model.predict(inp.X, batch_size=5), model.predict(X))
    assert inp.unchanged()


@pytest.mark.parametrize("weighted", [False, True])
def test_train_step(kind, tmp_path, dtype, weighted):
    X, labels, Y, w = data(dtype)
    inp = Inputs(kind, tmp_path, X=X, labels=labels, Y=Y, w=w)
    sw, sw_odd = (w, inp.w) if weighted else (None, None)
    for make, y, y_odd in ((make_classifier, labels, inp.labels), (make_regressor, Y, inp.Y)):
        a, b = make(dtype), make(dtype)
        for _ in range(2):
            assert a.train_step(inp.X, y_odd, sample_weight=sw_odd) == \
                b.train_step(X, y, sample_weight=sw)
        np.testing.assert_array_equal(a.params, b.params)
    assert inp.unchanged()


def test_fit(kind, tmp_path, dtype):
    X, labels, Y, w = data(dtype, n=40)
    Xv, lv, _, wv = data(dtype, n=12, seed=1)
    inp = Inputs(kind, tmp_path, X=X, labels=labels, w=w, Xv=Xv, lv=lv, wv=wv)
    a, b = make_classifier(dtype), make_classifier(dtype)
    ha = a.fit(inp.X, inp.labels, epochs=3, batch_size=8, sample_weight=inp.w,
               validation_data=(inp.Xv, inp.lv, inp.wv), verbose=0)
    hb = b.fit(X, labels, epochs=3, batch_size=8, sample_weight=w,
               validation_data=(Xv, lv, wv), verbose=0)
    assert ha.history == hb.history
    np.testing.assert_array_equal(a.params, b.params)
    # validation_split slices the (converted) inputs
    a, b = make_regressor(dtype), make_regressor(dtype)
    inp2 = Inputs(kind, tmp_path, X=X, Y=Y)
    ha = a.fit(inp2.X, inp2.Y, epochs=2, batch_size=8, validation_split=0.25, verbose=0)
    hb = b.fit(X, Y, epochs=2, batch_size=8, validation_split=0.25, verbose=0)
    assert ha.history == hb.history
    np.testing.assert_array_equal(a.params, b.params)
    assert inp.unchanged() and inp2.unchanged()


def test_evaluate(kind, tmp_path, dtype):
    X, labels, Y, w = data(dtype)
    inp = Inputs(kind, tmp_path, X=X, labels=labels, Y=Y, w=w)
    model = make_classifier(dtype)
    assert model.evaluate(inp.X, inp.labels, sample_weight=inp.w) == \
        model.evaluate(X, labels, sample_weight=w)
    reg = make_regressor(dtype)
    assert reg.evaluate(inp.X, inp.Y) == reg.evaluate(X, Y)
    assert inp.unchanged()


def test_forward_backward(kind, tmp_path, dtype):
    X, labels, _, w = data(dtype)
    inp = Inputs(kind, tmp_path, X=X, labels=labels, w=w)
    a, b = make_classifier(dtype), make_classifier(dtype)
    np.testing.assert_array_equal(a.forward(inp.X), b.forward(X))
    np.testing.assert_array_equal(a.backward(inp.labels, sample_weight=inp.w),
                                  b.backward(labels, sample_weight=w))
    assert a.last_loss == b.last_loss
    assert inp.unchanged()


def test_gradcheck(kind, tmp_path, dtype):
    X, labels, _, w = data(dtype, n=6)
    inp = Inputs(kind, tmp_path, X=X, labels=labels, w=w)
    model = make_classifier(dtype)
    err = fp.gradcheck(model, inp.X, inp.labels, sample_weight=inp.w, max_params=4)
    assert err == fp.gradcheck(model, X, labels, sample_weight=w, max_params=4)
    assert err < 1e-6
    assert inp.unchanged()


def test_trace(kind, tmp_path, dtype):
    X, labels, _, w = data(dtype, n=8)
    inp = Inputs(kind, tmp_path, X=X, labels=labels, w=w)
    model = make_classifier(dtype)
    t1 = fp.trace(model, inp.X, inp.labels, sample_weight=inp.w)
    t2 = fp.trace(model, X, labels, sample_weight=w)
    assert t1.loss == t2.loss
    for a, b in zip(t1.layers, t2.layers):
        for (name, u), (_, v) in zip(a.items(), b.items()):
            if u is not None or v is not None:
                np.testing.assert_array_equal(u, v, err_msg=name)
    assert inp.unchanged()


def test_lbfgs_minimize(kind, tmp_path, dtype):
    X, labels, _, w = data(dtype)
    inp = Inputs(kind, tmp_path, X=X, labels=labels, w=w)
    a, b = make_classifier(dtype), make_classifier(dtype)
    ra = fp.optim.LBFGS(max_iter=5).minimize(a, inp.X, inp.labels, sample_weight=inp.w)
    rb = fp.optim.LBFGS(max_iter=5).minimize(b, X, labels, sample_weight=w)
    assert ra.fun == rb.fun and ra.nit == rb.nit
    np.testing.assert_array_equal(a.params, b.params)
    assert inp.unchanged()


# -- layers --------------------------------------------------------------------------------------
def test_dense_forward_backward(kind, tmp_path, dtype):
    X, *_ = data(dtype)
    da = np.random.default_rng(2).standard_normal((len(X), 4)).astype(dtype)
    inp = Inputs(kind, tmp_path, X=X, da=da)
    layer = fp.Dense(5, 4, activation="gelu", dtype=dtype, seed=0)
    a1, c1 = layer.forward(inp.X)
    a2, c2 = layer.forward(X)
    np.testing.assert_array_equal(a1, a2)
    g1 = layer.backward(inp.da, c1)
    g2 = layer.backward(da, c2)
    for u, v in zip(g1, g2):
        np.testing.assert_array_equal(u, v)
    assert inp.unchanged()


def test_dense_weight_assignment(kind, tmp_path, dtype):
    rng = np.random.default_rng(4)
    W = rng.standard_normal((5, 4)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    inp = Inputs(kind, tmp_path, W=W, b=b)
    layer = fp.Dense(5, 4, dtype=dtype, seed=0)
    layer.W, layer.b = inp.W, inp.b
    np.testing.assert_array_equal(layer.W, W)
    np.testing.assert_array_equal(layer.b, b)
    assert not np.shares_memory(layer.W, inp.W)
    assert inp.unchanged()


def test_dropout_forward_backward(kind, tmp_path, dtype):
    X, *_ = data(dtype)
    inp = Inputs(kind, tmp_path, X=X, da=2 * X)
    d1, d2 = fp.Dropout(0.5, seed=3), fp.Dropout(0.5, seed=3)
    a1, c1 = d1.forward(inp.X, dtype=dtype)
    a2, c2 = d2.forward(X, dtype=dtype)
    assert a1.dtype == dtype
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(d1.backward(inp.da, c1), d2.backward(2 * X, c2))
    # without dtype= the input's float dtype is kept, whatever its byte order
    a1, c1 = d1.forward(inp.X)
    a2, c2 = d2.forward(X)
    assert a1.dtype == a2.dtype == dtype
    np.testing.assert_array_equal(a1, a2)
    a1, c1 = d1.forward(inp.X, training=False)
    assert d1.backward(inp.da, c1).dtype == dtype
    assert inp.unchanged()


# -- scikit-learn estimators ---------------------------------------------------------------------
def _estimator(cls, dtype, **kw):
    return cls(hidden_layer_sizes=(8,), max_iter=5, batch_size=8, random_state=0,
               dtype=np.dtype(dtype).name, n_iter_no_change=100, **kw)


@pytest.fixture
def sklearn_quiet():
    """scikit-learn present (else skip), its ConvergenceWarning silenced: 5 epochs on purpose."""
    pytest.importorskip("sklearn")
    from sklearn.exceptions import ConvergenceWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _fitted_pair(name, kind, tmp_path, X, y, w, **kw):
    """(inputs, estimator fitted on them in ``kind`` memory, the same fitted on plain arrays)."""
    import fastprop.sklearn
    cls = getattr(fastprop.sklearn, name)
    inp = Inputs(kind, tmp_path, X=X, y=y, w=w)
    a = _estimator(cls, X.dtype, **kw).fit(inp.X, inp.y, sample_weight=inp.w)
    b = _estimator(cls, X.dtype, **kw).fit(X, y, sample_weight=w)
    return inp, a, b


def test_classifier(sklearn_quiet, kind, tmp_path, dtype):
    X, labels, _, w = data(dtype, n=40)
    inp, a, b = _fitted_pair("FastpropClassifier", kind, tmp_path, X, labels, w)
    np.testing.assert_array_equal(a.model_.params, b.model_.params)
    np.testing.assert_array_equal(a.predict(inp.X), b.predict(X))
    np.testing.assert_array_equal(a.predict_proba(inp.X), b.predict_proba(X))
    assert a.score(inp.X, inp.y, sample_weight=inp.w) == b.score(X, labels, sample_weight=w)
    a.partial_fit(inp.X, inp.y, sample_weight=inp.w)
    b.partial_fit(X, labels, sample_weight=w)
    np.testing.assert_array_equal(a.model_.params, b.model_.params)
    c = _estimator(type(a), dtype)
    d = _estimator(type(a), dtype)
    c.partial_fit(inp.X, inp.y, classes=np.arange(3))
    d.partial_fit(X, labels, classes=np.arange(3))
    np.testing.assert_array_equal(c.predict_proba(inp.X), d.predict_proba(X))
    assert inp.unchanged()


def test_regressor(sklearn_quiet, kind, tmp_path, dtype):
    X, _, Y, w = data(dtype, n=40)
    inp, a, b = _fitted_pair("FastpropRegressor", kind, tmp_path, X, Y, w)
    np.testing.assert_array_equal(a.predict(inp.X), b.predict(X))
    # RegressorMixin.score is scikit-learn's r2_score: it may compute a swapped float32 y in
    # float64, a rounding difference of its own (the predictions above are equal)
    assert a.score(inp.X, inp.y) == pytest.approx(b.score(X, Y), rel=1e-6)
    a.partial_fit(inp.X, inp.y)
    b.partial_fit(X, Y)
    np.testing.assert_array_equal(a.predict(inp.X), b.predict(X))
    assert inp.unchanged()


def test_lbfgs_estimators(sklearn_quiet, kind, tmp_path, dtype):
    X, labels, Y, w = data(dtype, n=40)
    for name, y in (("FastpropClassifier", labels), ("FastpropRegressor", Y)):
        inp, a, b = _fitted_pair(name, kind, tmp_path, X, y, w, solver="lbfgs")
        np.testing.assert_array_equal(a.model_.params, b.model_.params)
        np.testing.assert_array_equal(a.predict(inp.X), b.predict(X))
        assert inp.unchanged()
