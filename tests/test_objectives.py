"""dgmlib.objectives: the ELBO (with a KL weight and free bits) and the IWAE bound replayed in
plain torch with torch.distributions at the same noise; the KL registry of the priors against
torch.distributions.kl_divergence."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.distributions import Bernoulli, Normal, kl_divergence

from dgmlib.models.priors import (
    MixtureOfGaussiansPrior,
    StandardNormalPrior,
    analytic_kl_per_dim,
    make_prior,
    register_kl,
)
from dgmlib.models.vae import VAE, BernoulliDecoder, MLPGaussianEncoder
from dgmlib.objectives import ELBO, IWAEBound

B, Z = 6, 4


def binary_images(n: int = B, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, 1, 28, 28), 0.3), generator=g)


def small_vae(prior: nn.Module | None = None) -> VAE:
    torch.manual_seed(0)
    return VAE(MLPGaussianEncoder(784, 32, Z), BernoulliDecoder(Z, 32), prior)


def replay(model: VAE, x: torch.Tensor, K: int | None) -> dict[str, torch.Tensor]:
    """The model's densities at z = mu + sd * eps, eps drawn as the model draws it (same seed):
    log p(x|z) [B] or [K, B], log p(z), log q(z|x), and the closed-form KL to N(0, I) per dim."""
    mu, logvar = model.encoder(x)
    q = Normal(mu, torch.exp(0.5 * logvar))
    eps = torch.randn(mu.shape if K is None else (K, *mu.shape))
    z = mu + q.scale * eps
    logits = model.decoder.net(z)
    return {
        "log_px_z": Bernoulli(logits=logits).log_prob(x.reshape(len(x), -1)).sum(-1),
        "log_pz": model.prior.log_prob(z),
        "log_qz": q.log_prob(z).sum(-1),
        "kl_dims": kl_divergence(q, Normal(torch.zeros_like(mu), torch.ones_like(mu))),
    }


def terms_and_replay(objective, model: VAE, x: torch.Tensor, K: int | None, seed: int):
    torch.manual_seed(seed)
    t = objective(model, x)
    torch.manual_seed(seed)
    return t, replay(model, x, K)


# --------------------------------------------------------------------------------------------
# ELBO
# --------------------------------------------------------------------------------------------


def test_elbo_is_the_hand_written_formula():
    """loss = -mean_b log p(x|z) + mean_b KL, with the analytic KL for N(0, I); same gradients."""
    model, x = small_vae(), binary_images()
    t, r = terms_and_replay(ELBO(), model, x, None, seed=1)
    assert set(t) == {"loss", "log_px_z", "kl", "elbo"} and all(v.dim() == 0 for v in t.values())
    log_px_z, kl = r["log_px_z"].mean(), r["kl_dims"].sum(-1).mean()
    torch.testing.assert_close(t["log_px_z"], log_px_z)
    torch.testing.assert_close(t["kl"], kl)
    torch.testing.assert_close(t["elbo"], log_px_z - kl)
    torch.testing.assert_close(t["loss"], kl - log_px_z)
    w = model.encoder.net[0].weight
    g1 = torch.autograd.grad(t["loss"], w)[0]
    g2 = torch.autograd.grad(kl - log_px_z, w)[0]
    torch.testing.assert_close(g1, g2)


def test_kl_weight_scales_only_the_loss():
    """With beta = 0.3 the loss is -log p(x|z) + 0.3 KL; the reported ELBO stays the true one."""
    model, x = small_vae(), binary_images()
    t, r = terms_and_replay(ELBO(kl_weight=0.3), model, x, None, seed=2)
    log_px_z, kl = r["log_px_z"].mean(), r["kl_dims"].sum(-1).mean()
    torch.testing.assert_close(t["loss"], -log_px_z + 0.3 * kl)
    torch.testing.assert_close(t["elbo"], log_px_z - kl)


@pytest.mark.parametrize("groups", [None, 2, 1])
def test_free_bits_replace_the_kl_term(groups):
    """loss = -log p(x|z) + sum_g max(lambda, mean_b KL_g), written out with a loop over groups;
    the reported KL is the true one. lambda is the median of the per-example group KLs, so that
    clamping each example instead of the batch mean would change the loss."""
    model, x = small_vae(), binary_images()
    size = 1 if groups is None else Z // groups
    with torch.no_grad():
        mu, logvar = model.encoder(x)  # the KLs do not depend on the noise
        kl_groups = (0.5 * (logvar.exp() + mu**2 - 1 - logvar)).view(B, Z // size, size).sum(-1)
    lam = float(kl_groups.median())
    per_example = float(kl_groups.clamp(min=lam).sum(-1).mean())
    t, r = terms_and_replay(ELBO(free_bits=lam, free_bits_groups=groups), model, x, None, seed=3)
    batch_kl = r["kl_dims"].detach().mean(0)  # [Z]
    term = sum(max(lam, float(batch_kl[i : i + size].sum())) for i in range(0, Z, size))
    assert abs(per_example - term) > 1e-3  # sanity line: the two clampings differ here
    torch.testing.assert_close(t["loss"], -r["log_px_z"].mean() + term)
    torch.testing.assert_close(t["kl"], r["kl_dims"].sum(-1).mean())


def test_free_bits_stop_the_kl_gradient_below_the_threshold():
    """With every dimension below lambda, the loss gradient is the reconstruction gradient."""
    model, x = small_vae(), binary_images()
    torch.manual_seed(4)
    t = ELBO(free_bits=1e6)(model, x)
    params = list(model.encoder.parameters())
    g_loss = torch.autograd.grad(t["loss"], params, retain_graph=True)
    g_recon = torch.autograd.grad(-t["log_px_z"], params)
    for a, b in zip(g_loss, g_recon, strict=True):
        torch.testing.assert_close(a, b)


def test_free_bits_need_a_closed_form_kl():
    model = small_vae(make_prior("mog", Z, n_components=2))
    with pytest.raises(ValueError, match="no closed-form KL is registered for Mixture"):
        ELBO(free_bits=0.5)(model, binary_images(2))


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: ELBO(kl_weight=-1.0), ValueError, "ELBO: kl_weight must be finite and >= 0"),
        (lambda: ELBO(free_bits="1"), TypeError, "ELBO: free_bits must be a real number"),
        (lambda: IWAEBound(0), ValueError, "IWAEBound: K must be an integer >= 1, got 0"),
        (lambda: IWAEBound(2.5), TypeError, "IWAEBound: K must be an integer >= 1, got 2.5"),
    ],
)
def test_settings_are_validated(make, error, match):
    with pytest.raises(error, match=match):
        make()


# --------------------------------------------------------------------------------------------
# IWAE bound
# --------------------------------------------------------------------------------------------


def test_iwae_bound_is_the_hand_written_log_mean_exp():
    model, x = small_vae(), binary_images()
    t, r = terms_and_replay(IWAEBound(5), model, x, 5, seed=6)
    assert set(t) == {"loss", "iwae", "log_px_z", "kl", "elbo"}
    log_w = r["log_px_z"] + r["log_pz"] - r["log_qz"]  # [5, B]
    iwae = (torch.logsumexp(log_w, 0) - math.log(5)).mean()
    torch.testing.assert_close(t["iwae"], iwae)
    torch.testing.assert_close(t["loss"], -iwae)
    torch.testing.assert_close(t["log_px_z"], r["log_px_z"].mean())
    torch.testing.assert_close(t["kl"], r["kl_dims"].sum(-1).mean())
    torch.testing.assert_close(t["elbo"], t["log_px_z"] - t["kl"])


def test_iwae_k1_is_the_elbo_with_a_monte_carlo_kl():
    """K = 1: log (1/1) e^{log w} = log w = log p(x|z) - (log q(z|x) - log p(z)), the one-sample
    ELBO with the KL estimated at the same z; with a prior without a closed form the ELBO
    objective uses exactly that estimate, so the two losses agree."""
    model, x = small_vae(), binary_images()
    t, r = terms_and_replay(IWAEBound(1), model, x, 1, seed=7)
    mc_elbo = (r["log_px_z"] - (r["log_qz"] - r["log_pz"])).mean()
    torch.testing.assert_close(t["iwae"], mc_elbo)
    mog = small_vae(make_prior("mog", Z, n_components=3))
    torch.manual_seed(8)
    a = IWAEBound(1)(mog, x)
    torch.manual_seed(8)
    b = ELBO()(mog, x)
    torch.testing.assert_close(a["loss"], b["loss"])
    torch.testing.assert_close(a["iwae"], b["elbo"])


# --------------------------------------------------------------------------------------------
# The KL registry
# --------------------------------------------------------------------------------------------


class ScaledNormalPrior(StandardNormalPrior):
    """N(0, s^2 I): a prior with a closed-form KL registered below (test-only)."""

    def __init__(self, z_dim: int, s: float) -> None:
        super().__init__(z_dim)
        self.s = s

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return Normal(0.0, self.s).log_prob(z).sum(-1)


@register_kl(ScaledNormalPrior)
def kl_scaled_normal(prior, mu, logvar):
    """KL(N(mu, e^logvar) || N(0, s^2)) per dimension."""
    s2 = prior.s**2
    return 0.5 * ((logvar.exp() + mu**2) / s2 - 1 - logvar + math.log(s2))


class SubclassOfStandard(StandardNormalPrior):
    """No registration of its own: it inherits the standard normal's closed form."""


def test_registered_kl_against_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(5, 3, generator=g, dtype=torch.float64)
    logvar = torch.randn(5, 3, generator=g, dtype=torch.float64)
    q = Normal(mu, torch.exp(0.5 * logvar))
    standard = StandardNormalPrior(3)
    fn = analytic_kl_per_dim(standard)
    expected = kl_divergence(q, Normal(torch.zeros_like(mu), torch.ones_like(mu)))
    torch.testing.assert_close(fn(standard, mu, logvar), expected, rtol=1e-12, atol=1e-12)
    assert analytic_kl_per_dim(SubclassOfStandard(3)) is fn  # found through the class's MRO
    assert analytic_kl_per_dim(MixtureOfGaussiansPrior(3)) is None
    scaled = ScaledNormalPrior(3, 2.0)
    assert analytic_kl_per_dim(scaled) is kl_scaled_normal
    expected = kl_divergence(q, Normal(torch.zeros_like(mu), torch.full_like(mu, 2.0)))
    torch.testing.assert_close(kl_scaled_normal(scaled, mu, logvar), expected)


def test_the_vae_uses_a_registered_kl_and_monte_carlo_otherwise():
    """With a registered prior the KL term is the closed form; with a mixture prior it is
    log q(z|x) - log p(z) at the sample that also estimates log p(x|z)."""
    x = binary_images()
    model = small_vae(ScaledNormalPrior(Z, 2.0))
    assert model.analytic_kl
    torch.manual_seed(9)
    t = model.terms(x)
    mu, logvar = model.encoder(x)
    q = Normal(mu, torch.exp(0.5 * logvar))
    expected = kl_divergence(q, Normal(torch.zeros_like(mu), torch.full_like(mu, 2.0))).sum(-1)
    torch.testing.assert_close(t["kl"], expected)
    mog = small_vae(make_prior("mog", Z, n_components=3))
    assert not mog.analytic_kl
    t, r = terms_and_replay(lambda m, xb: m.terms(xb), mog, x, None, seed=10)
    torch.testing.assert_close(t["kl"], r["log_qz"] - r["log_pz"])
