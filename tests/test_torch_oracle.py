"""The Dense block against PyTorch autograd (an independent implementation), float64; whole
training runs of random networks against torch.nn + torch.optim are in
test_differential_torch.py, which shares TORCH_ACT from here."""
import numpy as np
import pytest

import fastprop as fp

torch = pytest.importorskip("torch")
F = torch.nn.functional

TORCH_ACT = {
    "identity": lambda z: z,
    "relu": F.relu,
    "leaky_relu": F.leaky_relu,
    "elu": F.elu,
    "gelu": F.gelu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "softplus": F.softplus,
    "silu": F.silu,
    "softmax": lambda z: F.softmax(z, dim=1),
}


@pytest.mark.parametrize("name", list(TORCH_ACT))
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_dense_matches_torch_autograd(name, scale):
    rng = np.random.default_rng(11)
    layer = fp.Dense(20, 13, activation=name, dtype="float64", seed=2)
    layer.b = rng.standard_normal(13)
    X = rng.standard_normal((17, 20)) * scale
    da = rng.standard_normal((17, 13))
    a, cache = layer.forward(X)
    da_prev, dW, db = layer.backward(da, cache)

    Xt = torch.tensor(X, requires_grad=True)
    Wt = torch.tensor(layer.W, requires_grad=True)
    bt = torch.tensor(layer.b, requires_grad=True)
    at = TORCH_ACT[name](Xt @ Wt + bt)
    at.backward(torch.tensor(da))
    tol = dict(rtol=1e-10, atol=1e-10 * max(1.0, float(np.abs(at.detach().numpy()).max())))
    np.testing.assert_allclose(a, at.detach().numpy(), **tol)
    np.testing.assert_allclose(da_prev, Xt.grad.numpy(), rtol=1e-9, atol=1e-9 * scale)
    np.testing.assert_allclose(dW, Wt.grad.numpy(), rtol=1e-9, atol=1e-9 * scale)
    np.testing.assert_allclose(db, bt.grad.numpy(), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", list(TORCH_ACT))
def test_float32_matches_torch(name):
    rng = np.random.default_rng(5)
    layer = fp.Dense(64, 32, activation=name, dtype="float32", seed=0)
    X = rng.standard_normal((8, 64)).astype(np.float32)
    a, _ = layer.forward(X)
    at = TORCH_ACT[name](torch.tensor(X) @ torch.tensor(layer.W) + torch.tensor(layer.b))
    np.testing.assert_allclose(a, at.numpy(), rtol=2e-5, atol=2e-6)
