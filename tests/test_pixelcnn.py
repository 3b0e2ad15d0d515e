"""dgmlib.models.pixelcnn: masks, the autoregressive property checked with gradients, log_prob
against torch.distributions, fast sampling equal to full-image sampling, and the PixelCNN VAE."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from dgmlib.models.pixelcnn import MaskedConv2d, PixelCNNDecoder
from dgmlib.models.vae import VAE, MLPGaussianEncoder
from dgmlib.objectives import ELBO


def small_decoder(x_shape=(1, 8, 8), **kwargs) -> PixelCNNDecoder:
    torch.manual_seed(0)
    kw = {"channels": 8, "n_layers": 3, "kernel_size": 5, **kwargs}
    return PixelCNNDecoder(3, x_shape=x_shape, **kw).double()


def test_masks():
    a = MaskedConv2d(1, 1, 3, "A").mask
    b = MaskedConv2d(1, 1, 3, "B").mask
    torch.testing.assert_close(a, torch.tensor([[1.0, 1, 1], [1, 0, 0], [0, 0, 0]]))
    torch.testing.assert_close(b, torch.tensor([[1.0, 1, 1], [1, 1, 0], [0, 0, 0]]))
    assert "mask" not in MaskedConv2d(1, 1, 3, "A").state_dict()
    with pytest.raises(ValueError, match=r"mask_type must be one of \('A', 'B'\), got 'C'"):
        MaskedConv2d(1, 1, 3, "C")
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        MaskedConv2d(1, 1, 4, "A")
    with pytest.raises(TypeError, match="MaskedConv2d: kernel_size must be an integer >= 1"):
        MaskedConv2d(1, 1, 3.0, "A")


def test_masked_conv_equals_conv_with_masked_weights():
    torch.manual_seed(0)
    conv = MaskedConv2d(2, 3, 5, "B")
    x = torch.randn(2, 2, 6, 6)
    expected = torch.nn.functional.conv2d(x, conv.weight * conv.mask, conv.bias, padding=2)
    torch.testing.assert_close(conv(x), expected)


def dependence(dec: PixelCNNDecoder, x: torch.Tensor, z: torch.Tensor, pixel: int) -> torch.Tensor:
    """|d logit_pixel / d x| for every input pixel (flattened raster order)."""
    x = x.clone().requires_grad_(True)
    logits = dec(x, z).flatten(1)
    (grad,) = torch.autograd.grad(logits[:, pixel].sum(), x)
    return grad.abs().flatten(1).sum(0)


@pytest.mark.parametrize(
    "x_shape,kwargs", [((1, 8, 8), {}), ((1, 28, 28), {"channels": 4, "n_layers": 5})]
)
def test_autoregressive_property(x_shape, kwargs):
    """Logit i depends on x only through pixels j < i in raster order (and on some of them)."""
    dec = small_decoder(x_shape, **kwargs)
    H, W = x_shape[1:]
    g = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.full((2, 1, H, W), 0.5, dtype=torch.float64), generator=g)
    z = torch.randn(2, 3, generator=g, dtype=torch.float64)
    n = H * W
    for i in [0, 1, W - 1, W, n // 2 + 3, n - 1]:
        dep = dependence(dec, x, z, i)
        assert (dep[i:] == 0).all(), f"logit {i} depends on pixels >= {i}"
        if i % W > 0:
            assert dep[i - 1] > 0, f"logit {i} ignores the pixel to its left"
        if i >= W:
            assert dep[i - W] > 0, f"logit {i} ignores the pixel above it"
    # the latent reaches every logit
    zr = z.clone().requires_grad_(True)
    (gz,) = torch.autograd.grad(dec(x, zr)[:, 0, H - 1, W - 1].sum(), zr)
    assert (gz.abs() > 0).all()


def test_log_prob_matches_torch_distributions():
    dec = small_decoder()
    g = torch.Generator().manual_seed(1)
    x = torch.bernoulli(torch.full((3, 1, 8, 8), 0.4, dtype=torch.float64), generator=g)
    z = torch.randn(3, 3, generator=g, dtype=torch.float64)
    expected = Bernoulli(logits=dec(x, z)).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(dec.log_prob(x, z), expected)
    torch.testing.assert_close(dec.log_prob(x.view(3, 64), z), expected)
    zk = torch.randn(4, 3, 3, generator=g, dtype=torch.float64)
    lp = dec.log_prob(x, zk)
    assert lp.shape == (4, 3)
    for k in range(4):
        torch.testing.assert_close(lp[k], dec.log_prob(x, zk[k]))
    assert dec(x, zk).shape == (4, 3, 1, 8, 8)


def test_fast_sampling_equals_full_image_sampling():
    dec = small_decoder((1, 9, 7))
    z = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    fast = dec.sample(z, generator=torch.Generator().manual_seed(5))
    slow = dec.sample(z, generator=torch.Generator().manual_seed(5), fast=False)
    assert fast.shape == (3, 1, 9, 7)
    assert set(fast.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(fast, slow)


def test_sampling_follows_the_conditionals():
    """With strongly biased output logits the samples follow sigmoid(bias)."""
    dec = small_decoder((1, 4, 4))
    with torch.no_grad():
        dec.output[-1].weight.zero_()
        dec.output[-1].bias.fill_(3.0)  # p = 0.953 for every pixel, whatever x and z
    z = torch.zeros(500, 3, dtype=torch.float64)
    x = dec.sample(z, generator=torch.Generator().manual_seed(0))
    # 8000 independent Bernoulli(p) pixels: 4 standard errors sqrt(p (1 - p) / 8000)
    p = torch.sigmoid(torch.tensor(3.0)).item()
    assert abs(x.mean().item() - p) < 4 * math.sqrt(p * (1 - p) / x.numel())


def test_validation():
    dec = small_decoder()
    x = torch.zeros(2, 1, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"z must have shape \[B, 3\] or \[K, B, 3\]"):
        dec.log_prob(x, torch.zeros(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"x must have shape \[B, 1, 8, 8\] with B = 3"):
        dec.log_prob(x, torch.zeros(3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="x contains NaN"):
        dec.log_prob(torch.full_like(x, float("nan")), torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"z must have shape \[B, 3\]"):
        dec.sample(torch.zeros(2, 2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"x_shape must be \(1, H, W\)"):
        PixelCNNDecoder(3, x_shape=(3, 8, 8))


def test_vae_with_pixelcnn_decoder():
    torch.manual_seed(0)
    model = VAE(MLPGaussianEncoder(64, 16, 3), PixelCNNDecoder(3, 8, 2, 5, x_shape=(1, 8, 8)))
    x = torch.bernoulli(torch.full((4, 1, 8, 8), 0.5), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    t = ELBO()(model, x)
    # replay: one reparametrized z, the decoder's log p(x|z) (checked above against
    # torch.distributions) and the closed-form KL to N(0, I)
    torch.manual_seed(1)
    mu, logvar = model.encoder(x)
    q = Normal(mu, torch.exp(0.5 * logvar))
    z = mu + q.scale * torch.randn(mu.shape)
    log_px_z = model.decoder.log_prob(x, z).mean()
    kl = kl_divergence(q, Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(-1).mean()
    torch.testing.assert_close(t["log_px_z"], log_px_z)
    torch.testing.assert_close(t["kl"], kl)
    torch.testing.assert_close(t["loss"], kl - log_px_z)
    t["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.log_weights(x, 5).shape == (5, 4)
    assert model.reconstruct(x).shape == (4, 1, 8, 8)  # a sample: no closed-form mean
    assert model.sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="mean=True needs a decoder with a closed-form mean"):
        model.sample(2, mean=True)
