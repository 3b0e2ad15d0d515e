"""dgmlib.models.discrete: the vector quantizer, Gumbel-softmax, the KL to a uniform prior, and the
VQ-VAE and categorical VAE built on them."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli, Categorical, RelaxedOneHotCategorical, kl_divergence

from dgmlib.models.discrete import (
    VQVAE,
    CategoricalVAE,
    VectorQuantizer,
    categorical_kl_uniform,
    codebook_usage,
    gumbel_softmax_sample,
    sample_gumbel,
)

DT = torch.float64


def quantizer(k: int = 7, d: int = 3, beta: float = 0.25) -> VectorQuantizer:
    torch.manual_seed(0)
    vq = VectorQuantizer(k, d, beta).to(DT)
    with torch.no_grad():
        vq.codebook.normal_()
    return vq


# -- the quantizer ---------------------------------------------------------------------------


def test_quantizer_picks_the_nearest_code_and_returns_it():
    vq = quantizer()
    z_e = torch.randn(4, 5, 3, dtype=DT, generator=torch.Generator().manual_seed(1))
    out = vq(z_e)
    expected = torch.cdist(z_e.reshape(-1, 3), vq.codebook.detach()).argmin(1).view(4, 5)
    assert out.indices.shape == (4, 5) and out.indices.dtype == torch.int64
    assert torch.equal(out.indices, expected)
    torch.testing.assert_close(out.z_q, vq.codebook.detach()[expected])
    sq = (z_e - vq.codebook.detach()[expected]).square().sum(-1)
    torch.testing.assert_close(out.codebook_loss, sq)
    torch.testing.assert_close(out.commitment_loss, 0.25 * sq)


def test_straight_through_gradient_is_the_identity():
    vq = quantizer()
    z_e = torch.randn(6, 3, dtype=DT, requires_grad=True)
    w = torch.randn(6, 3, dtype=DT)
    (vq(z_e).z_q * w).sum().backward()
    torch.testing.assert_close(z_e.grad, w)  # d z_q / d z_e = I
    assert vq.codebook.grad is None  # z_q sends nothing to the codebook


def test_codebook_loss_moves_codes_and_commitment_moves_the_encoder():
    vq = quantizer(beta=0.5)
    z_e = torch.randn(6, 3, dtype=DT, requires_grad=True)
    out = vq(z_e)
    e = vq.codebook.detach()[out.indices]
    g_z, g_c = torch.autograd.grad(out.codebook_loss.sum(), [z_e, vq.codebook], allow_unused=True)
    assert g_z is None
    expected = torch.zeros_like(vq.codebook).index_add_(0, out.indices, 2 * (e - z_e.detach()))
    torch.testing.assert_close(g_c, expected)
    g_z, g_c = torch.autograd.grad(out.commitment_loss.sum(), [z_e, vq.codebook], allow_unused=True)
    assert g_c is None
    torch.testing.assert_close(g_z, 2 * 0.5 * (z_e.detach() - e))


def test_codebook_usage_counts_and_perplexity():
    idx = torch.tensor([[0, 0, 1, 1], [2, 2, 3, 3]])
    counts, perplexity, used = codebook_usage(idx, 8)
    assert counts.tolist() == [2, 2, 2, 2, 0, 0, 0, 0] and used == 4
    assert perplexity == pytest.approx(4.0)
    assert codebook_usage(torch.zeros(10, dtype=torch.int64), 5)[1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="lie in"):
        codebook_usage(torch.tensor([0, 5]), 5)
    with pytest.raises(ValueError, match="int64"):
        codebook_usage(torch.tensor([0.0]), 5)


def test_quantizer_validates_its_input():
    vq = quantizer(d=3)
    with pytest.raises(ValueError, match=r"\[\.\.\., 3\]"):
        vq(torch.zeros(4, 2, dtype=DT))
    with pytest.raises(ValueError, match="NaN"):
        vq(torch.full((2, 3), float("nan"), dtype=DT))
    with pytest.raises(ValueError, match="n_codes"):
        VectorQuantizer(0, 3)
    with pytest.raises(ValueError, match="beta"):
        VectorQuantizer(4, 3, beta=-1.0)


# -- Gumbel noise, Gumbel-softmax, KL ------------------------------------------------------


def test_gumbel_noise_has_the_gumbel_mean_and_variance():
    g = sample_gumbel((200_000,), torch.Generator().manual_seed(0), DT)
    assert torch.isfinite(g).all()
    assert g.mean().item() == pytest.approx(0.5772157, abs=0.01)  # Euler's constant
    assert g.var().item() == pytest.approx(math.pi**2 / 6, abs=0.03)


@pytest.mark.parametrize("tau", [0.1, 1.0, 5.0])
def test_argmax_of_gumbel_softmax_is_categorical(tau: float):
    logits = torch.tensor([1.0, 0.0, -1.0, 0.5], dtype=DT)
    y = gumbel_softmax_sample(
        logits.expand(50_000, 4), tau, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(y.sum(-1), torch.ones(50_000, dtype=DT))
    freq = torch.bincount(y.argmax(-1), minlength=4).to(DT) / 50_000
    # 4 standard errors of a frequency near 0.4 with 50 000 draws is about 0.009
    assert (freq - torch.softmax(logits, 0)).abs().max() < 0.01


def test_gumbel_softmax_matches_relaxed_one_hot_categorical_in_mean():
    logits = torch.tensor([0.3, -0.2, 1.0], dtype=DT)
    ours = gumbel_softmax_sample(
        logits.expand(40_000, 3), 0.7, generator=torch.Generator().manual_seed(1)
    )
    torch.manual_seed(2)
    ref = RelaxedOneHotCategorical(torch.tensor(0.7, dtype=DT), logits=logits).sample((40_000,))
    assert (ours.mean(0) - ref.mean(0)).abs().max() < 0.01


def test_hard_gumbel_softmax_is_one_hot_with_the_relaxed_gradient():
    logits = torch.randn(5, 4, dtype=DT, requires_grad=True)
    y = gumbel_softmax_sample(logits, 0.5, hard=True, generator=torch.Generator().manual_seed(3))
    assert set(y.detach().unique().tolist()) <= {0.0, 1.0} and (y.sum(-1) == 1).all()
    w = torch.randn(5, 4, dtype=DT)
    (y * w).sum().backward()
    soft = gumbel_softmax_sample(logits, 0.5, generator=torch.Generator().manual_seed(3))
    (g_soft,) = torch.autograd.grad((soft * w).sum(), logits)
    torch.testing.assert_close(logits.grad, g_soft)


def test_gumbel_softmax_validates_its_input():
    with pytest.raises(ValueError, match="tau"):
        gumbel_softmax_sample(torch.zeros(3), 0.0)
    with pytest.raises(TypeError, match="floating"):
        gumbel_softmax_sample(torch.zeros(3, dtype=torch.int64), 1.0)
    with pytest.raises(TypeError, match="tau"):
        gumbel_softmax_sample(torch.zeros(3), torch.tensor(1.0))


def test_categorical_kl_uniform_matches_torch_distributions():
    logits = torch.randn(4, 6, 5, dtype=DT, generator=torch.Generator().manual_seed(0)) * 2
    ref = kl_divergence(Categorical(logits=logits), Categorical(logits=torch.zeros(5, dtype=DT)))
    torch.testing.assert_close(categorical_kl_uniform(logits), ref)
    assert categorical_kl_uniform(torch.zeros(3, 5)).abs().max() < 1e-6
    peaked = torch.tensor([80.0, 0.0, 0.0, 0.0], dtype=DT)
    assert categorical_kl_uniform(peaked).item() == pytest.approx(math.log(4))


# -- the models -----------------------------------------------------------------------------


def test_vqvae_loss_terms_and_exact_elbo():
    """The terms against torch.distributions' Bernoulli at the nearest codes, found by cdist."""
    torch.manual_seed(0)
    model = VQVAE(n_codes=16, code_dim=4, n_positions=5, hidden=32)
    x = torch.bernoulli(torch.full((3, 1, 28, 28), 0.3))
    t = model.loss(x)
    assert set(t) == {"loss", "log_px_z", "kl", "elbo", "codebook", "commitment", "perplexity"}
    assert all(v.dim() == 0 for v in t.values())
    with torch.no_grad():
        z_e = model.encode(x).reshape(-1, 4)
        nearest = torch.cdist(z_e, model.quantizer.codebook).argmin(1).view(3, 5)
        logits = model.decoder.net(model.quantizer.codebook[nearest].flatten(1))
        log_px_z = Bernoulli(logits=logits).log_prob(x.flatten(1)).sum(-1)  # [3]
    assert torch.equal(model.codes(x), nearest)
    torch.testing.assert_close(model.log_px_z(x), log_px_z)
    torch.testing.assert_close(t["log_px_z"], log_px_z.mean())
    torch.testing.assert_close(t["loss"], -t["log_px_z"] + t["codebook"] + t["commitment"])
    torch.testing.assert_close(t["commitment"], model.quantizer.beta * t["codebook"])
    assert t["kl"].item() == pytest.approx(5 * math.log(16)) and model.kl == 5 * math.log(16)
    assert t["elbo"].item() == pytest.approx(t["log_px_z"].item() - 5 * math.log(16), rel=1e-6)
    elbo = model.elbo(x, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(elbo, log_px_z - 5 * math.log(16))  # deterministic posterior
    assert model.reconstruct(x).shape == (3, 1, 28, 28)
    t["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="784 values"):
        model.loss(torch.zeros(2, 10))
    with pytest.raises(ValueError, match="n_samples"):
        model.elbo(x, 0)


def test_categorical_vae_loss_terms_and_discrete_elbo():
    torch.manual_seed(0)
    model = CategoricalVAE(n_latent=4, n_categories=3, hidden=32, tau=0.7)
    x = torch.bernoulli(torch.full((5, 1, 28, 28), 0.3))
    t = model.loss(x)
    assert set(t) == {"loss", "log_px_z", "kl", "elbo"}
    assert all(v.dim() == 0 for v in t.values())
    torch.testing.assert_close(t["elbo"], t["log_px_z"] - t["kl"])  # sanity line: assembly
    torch.testing.assert_close(t["loss"], -t["elbo"])
    assert 0 <= t["kl"].item() <= 4 * math.log(3) + 1e-6 and t["log_px_z"].item() < 0
    q = Categorical(logits=model.logits(x))
    kl = kl_divergence(q, Categorical(logits=torch.zeros(3))).sum(-1).mean()
    torch.testing.assert_close(t["kl"], kl)
    e1 = model.elbo(x, 3, generator=torch.Generator().manual_seed(1))
    e2 = model.elbo(x, 3, generator=torch.Generator().manual_seed(1))
    assert e1.shape == (5,) and torch.equal(e1, e2)
    with pytest.raises(ValueError, match="n_samples"):
        model.elbo(x, 0)
    with pytest.raises(TypeError, match="n_samples"):
        model.elbo(x, 1.5)
    with pytest.raises(ValueError, match="n_latent"):
        CategoricalVAE(n_latent=0)


@pytest.mark.parametrize("cls", [VQVAE, CategoricalVAE])
def test_sample_means_what_it_means_for_the_vae(cls):
    """``sample(n, generator, mean)``: uniform prior codes (replayed here with the same
    generator) decoded to Bernoulli means, or binary images drawn from them; in the model's
    dtype."""
    torch.manual_seed(0)
    model = cls(hidden=16).to(DT)
    means = model.sample(6, generator=torch.Generator().manual_seed(4), mean=True)
    g = torch.Generator().manual_seed(4)
    if cls is VQVAE:
        idx = torch.randint(model.n_codes, (6, model.n_positions), generator=g)
        y = model.quantizer.codebook[idx].flatten(1)
    else:
        c = torch.randint(model.n_categories, (6, model.n_latent), generator=g)
        y = torch.nn.functional.one_hot(c, model.n_categories).to(DT).flatten(1)
    with torch.no_grad():
        torch.testing.assert_close(means, torch.sigmoid(model.decoder.net(y)).view(6, 1, 28, 28))
    draws = model.sample(6, generator=torch.Generator().manual_seed(4))
    assert means.dtype == draws.dtype == DT and draws.shape == (6, 1, 28, 28)
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="n must be"):
        model.sample(0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("cls", [VQVAE, CategoricalVAE])
def test_sample_and_elbo_follow_the_model_device(cls):
    model = cls(hidden=16).cuda()
    assert model.sample(3).device.type == "cuda"
    x = torch.bernoulli(torch.full((2, 1, 28, 28), 0.3, device="cuda"))
    g = torch.Generator(device="cuda").manual_seed(0)
    assert model.elbo(x, 2, generator=g).device.type == "cuda"


def test_categorical_vae_discrete_elbo_against_exact_enumeration():
    """4 variables with 3 categories: the 81 codes enumerated give the exact ELBO
    sum_c q(c|x) log p(x|c) - KL(q || uniform) and the variance of log p(x|c) under q; the
    Gumbel-max estimate from S samples is within 4 of its standard errors sqrt(Var / S)."""
    torch.manual_seed(0)
    model = CategoricalVAE(n_latent=4, n_categories=3, hidden=32, tau=0.7)
    with torch.no_grad():  # a trained-looking model: peaked q(c|x), p(x|c) that depends on c
        model.encoder[-1].weight.mul_(30)
        model.encoder[-1].bias.mul_(30)
        model.decoder.net[0].weight.mul_(10)
    x = torch.bernoulli(torch.full((5, 1, 28, 28), 0.3), generator=torch.Generator().manual_seed(2))
    S = 2000
    with torch.no_grad():
        log_q = torch.log_softmax(model.logits(x).double(), -1)  # [B, 4, 3]
        codes = torch.cartesian_prod(*[torch.arange(3)] * 4)  # [81, 4]
        one_hot = torch.nn.functional.one_hot(codes, 3).float().flatten(1)  # [81, 12]
        log_px_c = torch.stack([model.decoder.log_prob(x, c.expand(5, 12)) for c in one_hot])
        log_q_c = log_q[:, torch.arange(4), codes].sum(-1).T  # [81, B]
        estimate = model.elbo(x, S, generator=torch.Generator().manual_seed(3))
    q_c = log_q_c.exp()
    assert (q_c.sum(0) - 1).abs().max() < 1e-12  # sanity line: q sums to 1 over the codes
    mean = (q_c * log_px_c.double()).sum(0)
    var = (q_c * log_px_c.double() ** 2).sum(0) - mean**2
    kl = (q_c * log_q_c).sum(0) + 4 * math.log(3)
    exact = mean - kl
    assert ((estimate.double() - exact).abs() < 4 * (var / S).sqrt()).all(), (estimate, exact)
