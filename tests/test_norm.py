"""BatchNorm and LayerNorm on their own: the compiled kernels against the NumPy reference
(fastprop.reference) and PyTorch, float32 / float64, training and inference, running statistics
over several batches, gradients against finite differences, memory layouts, bad input."""
import copy

import numpy as np
import pytest

import fastprop as fp
from fastprop import reference as ref
from fastprop._core import _norm
from conftest import assert_close


def _data(dtype, n=7, w=5, seed=0, scale=3.0, shift=2.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, w)) * scale + shift).astype(dtype)


def _bn(dtype, w=5, seed=1, **kw):
    """A built BatchNorm with random gamma, beta and running statistics."""
    rng = np.random.default_rng(seed)
    bn = fp.BatchNorm(dtype=dtype, **kw)
    bn.build(w)
    bn.gamma = rng.uniform(0.5, 1.5, w)
    bn.beta = rng.standard_normal(w)
    bn.running_mean = rng.standard_normal(w)
    bn.running_var = rng.uniform(0.5, 2.0, w)
    return bn


def _ln(dtype, w=5, seed=1, **kw):
    rng = np.random.default_rng(seed)
    ln = fp.LayerNorm(dtype=dtype, **kw)
    ln.build(w)
    ln.gamma = rng.uniform(0.5, 1.5, w)
    ln.beta = rng.standard_normal(w)
    return ln


# -- against the reference --------------------------------------------------------------------
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batchnorm_matches_reference(dtype, training):
    bn = _bn(dtype, momentum=0.3, eps=1e-3)
    x = _data(dtype)
    dy = _data(dtype, seed=5, shift=0.0, scale=1.0)
    rm, rv = bn.running_mean.copy(), bn.running_var.copy()
    y_ref, cache, (rm_ref, rv_ref) = ref.batchnorm_forward(x, bn.gamma, bn.beta, rm, rv,
                                                           0.3, 1e-3, training)
    y, c = bn.forward(x, training=training)
    assert y.dtype == dtype and y.shape == x.shape
    assert_close(y, y_ref, dtype)
    assert_close(bn.running_mean, rm_ref, dtype)
    assert_close(bn.running_var, rv_ref, dtype)
    if not training:
        np.testing.assert_array_equal(bn.running_mean, rm)
        np.testing.assert_array_equal(bn.running_var, rv)
    dx, dg, db = bn.backward(dy, c)
    dx_ref, dg_ref, db_ref = ref.batchnorm_backward(dy, bn.gamma, cache)
    assert_close(dx, dx_ref, dtype, rtol=1e-4 if dtype == np.float32 else None)
    assert_close(dg, dg_ref, dtype)
    assert_close(db, db_ref, dtype)
    assert bn.dgamma is dg and bn.dbeta is db


def test_layernorm_matches_reference(dtype):
    ln = _ln(dtype, eps=1e-4)
    x = _data(dtype)
    dy = _data(dtype, seed=5, shift=0.0, scale=1.0)
    y_ref, cache = ref.layernorm_forward(x, ln.gamma, ln.beta, 1e-4)
    y, c = ln.forward(x, training=True)
    assert_close(y, y_ref, dtype)
    np.testing.assert_array_equal(ln.forward(x)[0], y)        # the same in inference
    dx, dg, db = ln.backward(dy, c)
    dx_ref, dg_ref, db_ref = ref.layernorm_backward(dy, ln.gamma, cache)
    assert_close(dx, dx_ref, dtype, rtol=1e-4 if dtype == np.float32 else None)
    assert_close(dg, dg_ref, dtype)
    assert_close(db, db_ref, dtype)


def test_batch_statistics_are_those_of_the_batch():
    """y has zero mean and unit (biased) variance per feature when gamma = 1, beta = 0."""
    bn = fp.BatchNorm(eps=1e-12, dtype="float64")
    y, _ = bn.forward(_data(np.float64, n=50, w=4), training=True)
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(0), 1, rtol=1e-10)
    ln = fp.LayerNorm(eps=1e-12, dtype="float64")
    y, _ = ln.forward(_data(np.float64, n=4, w=50))
    np.testing.assert_allclose(y.mean(1), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(1), 1, rtol=1e-10)


# -- against PyTorch ---------------------------------------------------------------------------
def _torch_dtype(torch, dtype):
    return torch.float32 if dtype == np.float32 else torch.float64


def test_batchnorm_matches_torch_over_several_batches(dtype):
    torch = pytest.importorskip("torch")
    w, momentum, eps = 6, 0.2, 1e-4
    bn = _bn(dtype, w=w, momentum=momentum, eps=eps)
    tb = torch.nn.BatchNorm1d(w, momentum=momentum, eps=eps).to(_torch_dtype(torch, dtype))
    with torch.no_grad():
        for name in ("running_mean", "running_var"):
            getattr(tb, name).copy_(torch.from_numpy(getattr(bn, name).copy()))
        tb.weight.copy_(torch.from_numpy(bn.gamma.copy()))
        tb.bias.copy_(torch.from_numpy(bn.beta.copy()))
    for step in range(5):
        training = step != 3
        tb.train(training)
        x = _data(dtype, n=9 + step, w=w, seed=10 + step)
        dy = _data(dtype, n=9 + step, w=w, seed=20 + step, shift=0.0, scale=1.0)
        xt = torch.from_numpy(x.copy()).requires_grad_(True)
        tb.weight.grad = tb.bias.grad = None
        yt = tb(xt)
        yt.backward(torch.from_numpy(dy))
        y, cache = bn.forward(x, training=training)
        dx, dg, db = bn.backward(dy, cache)
        assert_close(y, yt.detach().numpy(), dtype)
        assert_close(dx, xt.grad.numpy(), dtype, rtol=1e-4 if dtype == np.float32 else 1e-10)
        assert_close(dg, tb.weight.grad.numpy(), dtype, rtol=1e-4 if dtype == np.float32 else None)
        assert_close(db, tb.bias.grad.numpy(), dtype)
        assert_close(bn.running_mean, tb.running_mean.numpy(), dtype)
        assert_close(bn.running_var, tb.running_var.numpy(), dtype)


def test_layernorm_matches_torch(dtype):
    torch = pytest.importorskip("torch")
    w, eps = 7, 1e-5
    ln = _ln(dtype, w=w, eps=eps)
    tl = torch.nn.LayerNorm(w, eps=eps).to(_torch_dtype(torch, dtype))
    with torch.no_grad():
        tl.weight.copy_(torch.from_numpy(ln.gamma.copy()))
        tl.bias.copy_(torch.from_numpy(ln.beta.copy()))
    x = _data(dtype, n=11, w=w)
    dy = _data(dtype, n=11, w=w, seed=3, shift=0.0, scale=1.0)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = tl(xt)
    yt.backward(torch.from_numpy(dy))
    y, cache = ln.forward(x)
    dx, dg, db = ln.backward(dy, cache)
    assert_close(y, yt.detach().numpy(), dtype)
    assert_close(dx, xt.grad.numpy(), dtype, rtol=1e-4 if dtype == np.float32 else 1e-10)
    assert_close(dg, tl.weight.grad.numpy(), dtype, rtol=1e-4 if dtype == np.float32 else None)
    assert_close(db, tl.bias.grad.numpy(), dtype)


# -- finite differences --------------------------------------------------------------------------
def _fd_check(layer, x, training, h=1e-6):
    """Analytic dx, dgamma, dbeta against central differences of L = sum(y * R), float64."""
    R = np.random.default_rng(7).standard_normal(x.shape)
    state = [s.copy() for s in layer.states()]

    def loss():
        for s, v in zip(layer.states(), state):
            s[...] = v                      # training forward moves the running statistics
        return float((layer.forward(x, training=training)[0] * R).sum())

    loss()
    y, cache = layer.forward(x, training=training)
    dx, dg, db = layer.backward(R, cache)
    for arr, grad in ((x, dx), (layer.gamma, dg), (layer.beta, db)):
        num = np.empty_like(arr)
        for idx in np.ndindex(arr.shape):
            keep = arr[idx]
            arr[idx] = keep + h
            up = loss()
            arr[idx] = keep - h
            down = loss()
            arr[idx] = keep
            num[idx] = (up - down) / (2 * h)
        np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batchnorm_gradients_finite_differences(training):
    _fd_check(_bn(np.float64, w=4, momentum=0.5), _data(np.float64, n=6, w=4), training)


def test_layernorm_gradients_finite_differences():
    _fd_check(_ln(np.float64, w=5), _data(np.float64, n=4, w=5), True)


# -- layouts, dtypes ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["bn", "ln"])
def test_any_memory_layout(kind):
    x = _data(np.float64, n=8, w=5)
    layouts = [np.asfortranarray(x), np.repeat(x, 2, axis=1)[:, ::2],
               x.astype(x.dtype.newbyteorder(">")), x.tolist()]
    make = _bn if kind == "bn" else _ln
    base = make(np.float64)
    y0, c0 = base.forward(x, training=True)
    dy = _data(np.float64, n=8, w=5, seed=9)
    g0 = base.backward(dy, c0)
    for xx in layouts:
        layer = make(np.float64)
        y, c = layer.forward(xx, training=True)
        np.testing.assert_array_equal(y, y0)
        for a, b in zip(layer.backward(np.asfortranarray(dy), c), g0):
            np.testing.assert_array_equal(a, b)
    # integers are read as numbers; the layer's dtype is kept
    yi, _ = fp.LayerNorm().forward(np.arange(6).reshape(2, 3))
    assert yi.dtype == np.float32


def test_input_is_never_written():
    x = _data(np.float32)
    keep = x.copy()
    bn = fp.BatchNorm()
    y, c = bn.forward(x, training=True)
    bn.backward(x, c)
    np.testing.assert_array_equal(x, keep)
    assert not c.x_hat.flags.writeable and not c.inv_std.flags.writeable


def test_built_at_first_forward_and_weights_in_keras_order(dtype):
    bn = fp.BatchNorm(dtype=dtype)
    assert not bn.built and bn.n_in is None
    with pytest.raises(ValueError, match="not built"):
        bn.gamma
    bn.forward(_data(dtype, w=3), training=True)
    assert bn.built and bn.n_in == bn.n_out == 3
    assert bn.param_shapes == {"gamma": (3,), "beta": (3,)}
    assert bn.state_shapes == {"running_mean": (3,), "running_var": (3,)}
    assert bn.n_params == 6 and bn.n_state == 6
    w = bn.get_weights()
    assert [a.dtype for a in w] == [dtype] * 4
    np.testing.assert_array_equal(w[0], 1)
    np.testing.assert_array_equal(w[1], 0)
    assert np.all(w[2] != 0) and np.all(w[3] != 1)       # moved by the batch
    fresh = fp.BatchNorm(dtype=dtype)
    assert fresh.build(3) == 3
    np.testing.assert_array_equal(fresh.running_mean, 0)
    np.testing.assert_array_equal(fresh.running_var, 1)
    fresh.set_weights(w)
    for a, b in zip(fresh.get_weights(), w):
        np.testing.assert_array_equal(a, b)
    ln = fp.LayerNorm(dtype=dtype)
    assert ln.build(4) == 4 and ln.state_shapes == {} and len(ln.get_weights()) == 2


def test_config_round_trip_and_registry():
    from fastprop.layers import get_layer_class
    assert get_layer_class("BatchNorm") is fp.BatchNorm
    assert get_layer_class("LayerNorm") is fp.LayerNorm
    bn = fp.BatchNorm(momentum=0.25, eps=1e-3)
    assert bn.get_config() == {"type": "BatchNorm", "n_in": None, "momentum": 0.25,
                               "eps": 1e-3}
    bn.build(4)
    again = fp.BatchNorm.from_config(bn.get_config(), dtype="float64")
    assert again.get_config() == bn.get_config() and again.dtype == np.float64
    assert again.built and again.n_in == 4
    ln = fp.LayerNorm(eps=1e-6)
    assert fp.LayerNorm.from_config(ln.get_config()).get_config() == ln.get_config()
    with pytest.raises(ValueError, match="keys"):
        fp.BatchNorm.from_config({"type": "BatchNorm", "eps": 1e-5})
    with pytest.raises(ValueError, match="keys"):
        fp.LayerNorm.from_config({"type": "LayerNorm", "eps": 1e-5, "x": 1, "n_in": 2})


def test_deepcopy_keeps_state():
    bn = _bn(np.float64)
    other = copy.deepcopy(bn)
    for a, b in zip(other.get_weights(), bn.get_weights()):
        np.testing.assert_array_equal(a, b)
    other.forward(_data(np.float64), training=True)
    assert not np.array_equal(other.running_mean, bn.running_mean)


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("momentum", [-0.1, 1.5, float("nan"), float("inf")])
def test_bad_momentum(momentum):
    with pytest.raises(ValueError, match="momentum"):
        fp.BatchNorm(momentum=momentum)


@pytest.mark.parametrize("bad", [True, "0.1", None])
def test_momentum_not_a_number(bad):
    with pytest.raises(TypeError, match="momentum"):
        fp.BatchNorm(momentum=bad)


@pytest.mark.parametrize("cls", [fp.BatchNorm, fp.LayerNorm])
@pytest.mark.parametrize("eps", [0.0, -1e-5, float("nan")])
def test_bad_eps(cls, eps):
    with pytest.raises(ValueError, match="eps"):
        cls(eps=eps)


def test_momentum_bounds_are_allowed():
    for m in (0.0, 1.0):
        bn = _bn(np.float64, momentum=m)
        rm = bn.running_mean.copy()
        x = _data(np.float64)
        bn.forward(x, training=True)
        np.testing.assert_allclose(bn.running_mean, rm if m == 0 else x.mean(0), rtol=1e-12)


def test_batchnorm_training_on_one_row_refused_and_nothing_changes():
    bn = _bn(np.float32)
    before = bn.get_weights()
    with pytest.raises(ValueError, match="more than one sample"):
        bn.forward(np.ones((1, 5)), training=True)
    for a, b in zip(bn.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    y, _ = bn.forward(np.ones((1, 5)))               # inference on one row is fine
    assert y.shape == (1, 5)
    y, _ = fp.LayerNorm().forward(np.ones((1, 5)), training=True)
    np.testing.assert_array_equal(y, 0)


@pytest.mark.parametrize("kind", ["bn", "ln"])
def test_bad_inputs_change_nothing(kind):
    layer = (_bn if kind == "bn" else _ln)(np.float64)
    before = layer.get_weights()
    bad = [(np.ones((4, 3)), ValueError, "columns"),
           (np.ones(5), ValueError, "dimensions"),
           (np.full((3, 5), np.nan), ValueError, "NaN"),
           (np.ones((0, 5)), ValueError, "empty"),
           ("abc", TypeError, "a_prev")]
    for x, exc, msg in bad:
        with pytest.raises(exc, match=msg):
            layer.forward(x, training=True)
    with pytest.raises(TypeError, match="training"):
        layer.forward(np.ones((3, 5)), training="yes")
    for a, b in zip(layer.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    y, cache = layer.forward(_data(np.float64), training=True)
    with pytest.raises(ValueError, match="shape"):
        layer.backward(np.ones((6, 5)), cache)
    with pytest.raises(TypeError, match="NormCache"):
        layer.backward(np.ones((7, 5)), (cache.x_hat, cache.inv_std))
    other = (_bn if kind == "bn" else _ln)(np.float64)
    with pytest.raises(ValueError, match="different layer"):
        other.backward(np.ones((7, 5)), cache)
    with pytest.raises(ValueError, match="gamma"):
        layer.gamma = np.ones(4)
    with pytest.raises(ValueError, match="width"):
        layer.build(6)
    for name in ("eps", "n_in", "dtype"):
        with pytest.raises(AttributeError, match=name):
            setattr(layer, name, 1)


def test_running_var_must_be_a_variance():
    bn = _bn(np.float64)
    before = bn.get_weights()
    with pytest.raises(ValueError, match="running_var"):
        bn.running_var = -np.ones(5)
    w = bn.get_weights()
    w[0] = w[0] * 2
    w[3] = -w[3]
    with pytest.raises(ValueError, match="running_var"):
        bn.set_weights(w)
    with pytest.raises(ValueError, match="4 arrays"):
        bn.set_weights(w[:3])
    for a, b in zip(bn.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(AttributeError, match="momentum"):
        bn.momentum = 0.5


def test_entry_points_check_shapes():
    x = np.ones((4, 3))
    v = np.ones(3)
    out = np.empty((4, 3))
    with pytest.raises(ValueError, match="gamma"):
        _norm.batchnorm_forward(x, np.ones(2), v, v.copy(), v.copy(), 0.1, 1e-5, True, out,
                                v.copy(), out.copy())
    with pytest.raises(ValueError, match="one row"):
        _norm.batchnorm_forward(x[:1], v, v, v.copy(), v.copy(), 0.1, 1e-5, True, out[:1],
                                v.copy(), out[:1].copy())
    with pytest.raises(ValueError, match="momentum"):
        _norm.batchnorm_forward(x, v, v, v.copy(), v.copy(), 2.0, 1e-5, True, out, v.copy(),
                                out.copy())
    with pytest.raises(ValueError, match="eps"):
        _norm.layernorm_forward(x, v, v, 0.0, out, np.empty(4), out.copy())
    with pytest.raises(ValueError, match="inv_std"):
        _norm.layernorm_forward(x, v, v, 1e-5, out, np.empty(3), out.copy())
    with pytest.raises(ValueError, match="dx"):
        _norm.layernorm_backward(x, x, v, np.ones(4), np.empty((3, 3)), v.copy(), v.copy())
