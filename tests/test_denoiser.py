"""dgmlib.models.denoiser: the time embedding, the two networks' shapes and start, the DDPM's EMA
and its trainer."""

from __future__ import annotations

import math

import pytest
import torch

from dgmlib.diffusion import linear_betas
from dgmlib.experiment import load_model_file, make, model_tensors, save_model
from dgmlib.models.denoiser import (
    DDPM,
    EMATrainer,
    MLPDenoiser,
    UNetDenoiser,
    sinusoidal_embedding,
)


def test_sinusoidal_embedding_from_the_definition():
    t = torch.tensor([0, 1, 7, 999])
    e = sinusoidal_embedding(t, 6, max_period=100.0)
    for i, ti in enumerate(t.tolist()):
        for k in range(3):
            arg = ti / 100.0 ** (k / 3)
            assert float(e[i, 2 * k]) == pytest.approx(math.sin(arg), abs=1e-5)
            assert float(e[i, 2 * k + 1]) == pytest.approx(math.cos(arg), abs=1e-5)
    with pytest.raises(ValueError, match="even"):
        sinusoidal_embedding(t, 5)
    with pytest.raises(ValueError, match="1-D"):
        sinusoidal_embedding(t[:, None], 4)


def test_networks_shapes_and_time_dependence():
    torch.manual_seed(0)
    mlp = MLPDenoiser(data_dim=2, hidden=16, n_hidden=2, emb_dim=8)
    z = torch.randn(5, 2)
    out = mlp(z, torch.full((5,), 3))
    assert out.shape == (5, 2)
    assert not torch.allclose(out, mlp(z, torch.full((5,), 300)))
    unet = UNetDenoiser(c1=8, c2=16, emb_dim=16)
    img = torch.randn(3, 1, 28, 28)
    # the output convolution starts at zero: the untrained network predicts no noise
    assert torch.equal(unet(img, torch.tensor([1, 2, 3])), torch.zeros_like(img))
    with torch.no_grad():
        unet.out.weight.normal_()
    out = unet(img, torch.tensor([1, 2, 3]))
    assert out.shape == img.shape and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="28, 28"):
        unet(torch.randn(2, 1, 14, 14), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match=r"\[B, 2\]"):
        mlp(torch.randn(4, 3), torch.ones(4, dtype=torch.long))


def test_ema_update_and_trainer():
    torch.manual_seed(1)
    model = DDPM(MLPDenoiser(2, 8, 1, 4), linear_betas(20), ema_decay=0.9)
    before = [p.detach().clone() for p in model.ema.parameters()]
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(1.0)
    model.update_ema()
    for pe, p, b in zip(model.ema.parameters(), model.net.parameters(), before, strict=True):
        torch.testing.assert_close(pe, 0.9 * b + 0.1 * p)
        assert not pe.requires_grad
    trainer = EMATrainer(model, torch.optim.Adam(model.net.parameters(), 1e-2), progress=False)
    ema_before = [p.detach().clone() for p in model.ema.parameters()]
    out = trainer.train_step(torch.randn(16, 2))
    assert set(out) == {"loss", "mse"} and trainer.step == 1
    assert any(
        not torch.equal(a, b) for a, b in zip(model.ema.parameters(), ema_before, strict=True)
    )
    assert model.T == 20 and model.betas.dtype == torch.float64
    with pytest.raises(ValueError, match="weighting"):
        DDPM(MLPDenoiser(), linear_betas(5), weighting="bad")
    with pytest.raises(ValueError, match="ema_decay"):
        DDPM(MLPDenoiser(), linear_betas(5), ema_decay=1.0)


def test_ddpm_from_sizes_has_a_spec_and_reloads(tmp_path):
    """Built with make from sizes alone, a DDPM holds the linear schedule and rebuilds itself
    from its checkpoint with the same tensors (weights, EMA and betas)."""
    torch.manual_seed(2)
    net = make(MLPDenoiser, data_dim=2, hidden=8, n_hidden=1, emb_dim=4)
    model = make(DDPM, net=net, T=30, beta_1=1e-3, beta_T=0.05, weighting="elbo")
    assert torch.equal(model.betas, torch.linspace(1e-3, 0.05, 30, dtype=torch.float64))
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(0.5)  # weights that differ from a fresh build's
    model.update_ema()
    save_model(tmp_path / "m.safetensors", model)
    again = load_model_file(tmp_path / "m.safetensors")
    assert again.weighting == "elbo" and again.T == 30
    a, b = model_tensors(model), model_tensors(again)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the default schedule is Ho et al.'s, T = 1000 from 1e-4 to 0.02
    assert torch.equal(DDPM(MLPDenoiser()).betas, linear_betas(1000, 1e-4, 0.02))
