"""dgmlib.layers: the MLP's layer sizes, the reparametrization trick (moments, gradients, dtype),
batch flattening and shapes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dgmlib.layers import MNIST_SHAPE, flatten_batch, mlp, reparameterize, shape_tuple


def test_mlp_layer_sizes_and_linear_case():
    net = mlp(10, 7, 3, n_hidden_layers=0)
    assert [type(m) for m in net] == [nn.Linear]
    net = mlp(10, 7, 6, n_hidden_layers=3, activation=nn.ReLU)
    sizes = [(m.in_features, m.out_features) for m in net if isinstance(m, nn.Linear)]
    assert sizes == [(10, 7), (7, 7), (7, 7), (7, 6)]
    assert [type(m) for m in net][1::2] == [nn.ReLU] * 3
    with pytest.raises(ValueError, match="mlp: n_hidden_layers must be an integer >= 0"):
        mlp(10, 7, 3, n_hidden_layers=-1)


def test_reparameterize_shapes_and_moments():
    mu, logvar = torch.tensor([[1.0, -2.0]]), torch.tensor([[0.0, math.log(9.0)]])
    assert reparameterize(mu, logvar).shape == (1, 2)
    K = 40000
    z = reparameterize(mu, logvar, K=K, generator=torch.Generator().manual_seed(0))
    assert z.shape == (K, 1, 2)
    # 4 standard errors of a normal sample's mean (sd / sqrt(K)) and sd (sd / sqrt(2 K))
    sd = torch.tensor([[1.0, 3.0]])
    assert ((z.mean(0) - mu).abs() < 4 * sd / math.sqrt(K)).all(), z.mean(0)
    assert ((z.std(0) - sd).abs() < 4 * sd / math.sqrt(2 * K)).all(), z.std(0)


def test_reparameterize_gradients_generator_and_dtype():
    """dz/dmu = 1 and dz/dlogvar = (z - mu) / 2; eps from the generator, in mu's dtype."""
    mu = torch.tensor([0.5, -1.0], dtype=torch.float64, requires_grad=True)
    logvar = torch.tensor([0.0, 1.0], dtype=torch.float64, requires_grad=True)
    z = reparameterize(mu, logvar, generator=torch.Generator().manual_seed(3))
    assert z.dtype == torch.float64
    eps = torch.randn(2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(z, mu + torch.exp(0.5 * logvar) * eps)
    g_mu, g_lv = torch.autograd.grad(z.sum(), (mu, logvar))
    torch.testing.assert_close(g_mu, torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(g_lv, (z - mu).detach() / 2)


def test_flatten_batch_and_shapes():
    x = torch.arange(24.0).view(2, 3, 4)
    assert torch.equal(flatten_batch(x, 12, "f"), x.view(2, 12))
    with pytest.raises(
        ValueError, match=r"f: x must hold 10 values per example, got shape \(2, 3, 4\)"
    ):
        flatten_batch(x, 10, "f")
    with pytest.raises(TypeError, match="f: x must be a torch.Tensor"):
        flatten_batch(x.tolist(), 12, "f")
    assert shape_tuple(5) == (5,) and shape_tuple([1, 28, 28]) == MNIST_SHAPE == (1, 28, 28)
    with pytest.raises(ValueError, match="x_shape must be a positive int"):
        shape_tuple((1, 0))
