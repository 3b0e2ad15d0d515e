"""dgmlib.models.pixelcnn: masks, the autoregressive property and the receptive field checked with
gradients, the forward pass replayed in plain torch (both paths of z), log_prob against
torch.distributions, fast sampling equal to full-image sampling, and the PixelCNN VAE."""

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


RICH = {"cond_channels": 4, "cond_hidden": 16}  # the rich path of z, small


@pytest.mark.parametrize(
    "x_shape,kwargs",
    [((1, 8, 8), {}), ((1, 28, 28), {"channels": 4, "n_layers": 5}), ((1, 8, 8), RICH)],
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


def window(r: int, c: int, k: int, side: int) -> set[int]:
    """Flat indices of the pixels before (r, c) in raster order within k // 2 rows and columns."""
    h = k // 2
    rows = range(max(0, r - h), r + 1)
    cols = range(max(0, c - h), min(side, c + h + 1))
    return {rr * side + cc for rr in rows for cc in cols if rr < r or cc < c}


@pytest.mark.parametrize("k", [1, 3, 5])
def test_one_by_one_hidden_layers_keep_the_field_at_the_first_window(k):
    """With ``hidden_kernel_size=1`` logit i depends on exactly the earlier pixels of the first
    kernel's k x k window (none for k = 1), the field the lecture's enumeration assumes."""
    dec = small_decoder(kernel_size=k, hidden_kernel_size=1, **RICH)
    g = torch.Generator().manual_seed(3)
    x = torch.bernoulli(torch.full((8, 1, 8, 8), 0.5, dtype=torch.float64), generator=g)
    z = torch.randn(8, 3, generator=g, dtype=torch.float64)
    assert dec.rows_up == k // 2
    for i in range(64):
        seen = set(torch.nonzero(dependence(dec, x, z, i)).flatten().tolist())
        assert seen == window(i // 8, i % 8, k, 8), i


@pytest.mark.parametrize("kwargs", [{}, RICH, {"cond_channels": 2}])
def test_forward_replayed_in_plain_torch(kwargs):
    """The logits from conv2d with the masked weights, the conditioning map ``s(z)`` (a linear
    map, or linear-ReLU-linear) added through a 1x1 convolution in every layer, and the head."""
    dec = small_decoder(**kwargs)
    g = torch.Generator().manual_seed(4)
    x = torch.bernoulli(torch.full((3, 1, 8, 8), 0.5, dtype=torch.float64), generator=g)
    z = torch.randn(3, 3, generator=g, dtype=torch.float64)
    F = torch.nn.functional
    cc = kwargs.get("cond_channels", 1)
    if kwargs.get("cond_hidden", 0):
        first, last = dec.cond[0], dec.cond[2]
        s = F.linear(torch.relu(F.linear(z, first.weight, first.bias)), last.weight, last.bias)
    else:
        s = F.linear(z, dec.cond.weight, dec.cond.bias)
    s = s.view(3, cc, 8, 8)

    def conv(layer, inp):
        w = layer.weight * getattr(layer, "mask", 1.0)
        return F.conv2d(inp, w, layer.bias, padding=w.shape[-1] // 2)

    h = torch.relu(conv(dec.input, x) + conv(dec.cond_convs[0], s))
    for layer, cond in zip(dec.hidden, dec.cond_convs[1:], strict=True):
        h = h + torch.relu(conv(layer, h) + conv(cond, s))
    head = dec.output
    expected = conv(head[3], torch.relu(conv(head[1], torch.relu(h))))
    torch.testing.assert_close(dec(x, z), expected)


def test_default_z_path_is_one_linear_map_to_one_bias_map():
    """The default keeps the architecture (and so the stored checkpoints): ``cond`` is one
    ``Linear(Z, H*W)`` and each layer's ``cond_convs`` a 1x1 convolution of one map."""
    torch.manual_seed(0)
    shapes = {
        k: tuple(v.shape)
        for k, v in PixelCNNDecoder(3, 8, 2, 5, x_shape=(1, 8, 8)).state_dict().items()
    }
    cond = {k: v for k, v in shapes.items() if k.startswith("cond")}
    assert cond == {
        "cond.weight": (64, 3),
        "cond.bias": (64,),
        "cond_convs.0.weight": (8, 1, 1, 1),
        "cond_convs.0.bias": (8,),
        "cond_convs.1.weight": (8, 1, 1, 1),
        "cond_convs.1.bias": (8,),
    }
    rich = PixelCNNDecoder(3, 8, 2, 5, x_shape=(1, 8, 8), **RICH).state_dict()
    assert tuple(rich["cond.2.weight"].shape) == (4 * 64, 16)
    assert tuple(rich["cond_convs.1.weight"].shape) == (8, 4, 1, 1)


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


@pytest.mark.parametrize("kwargs", [{}, RICH])
def test_fast_sampling_equals_full_image_sampling(kwargs):
    dec = small_decoder((1, 9, 7), **kwargs)
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
    with pytest.raises(ValueError, match="cond_channels must be an integer >= 1, got 0"):
        PixelCNNDecoder(3, x_shape=(1, 8, 8), cond_channels=0)
    with pytest.raises(ValueError, match="cond_hidden must be an integer >= 0, got -1"):
        PixelCNNDecoder(3, x_shape=(1, 8, 8), cond_hidden=-1)


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
