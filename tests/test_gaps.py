"""dgmlib.gaps: per-example posterior optimisation and the approximation / amortization gaps, on a
linear Gaussian VAE whose exact posterior and log p(x) are known (pPCA)."""

from __future__ import annotations

import pytest
import torch

from dgmlib.gaps import inference_gaps, local_elbo, mean_and_se, optimize_local_posterior
from dgmlib.models.ppca import PPCA
from dgmlib.models.vae import VAE, GaussianDecoder, MLPGaussianEncoder

DT = torch.float64


@pytest.fixture(scope="module")
def linear():
    """A linear Gaussian VAE equal to a pPCA with orthogonal columns (diagonal posterior)."""
    torch.manual_seed(0)
    d, z, s2 = 6, 2, 0.5
    Q, _ = torch.linalg.qr(torch.randn(d, z, dtype=DT))
    W, mu = Q * torch.tensor([2.0, 1.0], dtype=DT), torch.randn(d, dtype=DT)
    enc = MLPGaussianEncoder(d, 1, z, n_hidden_layers=0)
    dec = GaussianDecoder(z, 1, d, n_hidden_layers=0, variance="fixed", sigma=s2**0.5)
    model = VAE(enc, dec).double().requires_grad_(False)
    dec.net[0].weight.copy_(W)
    dec.net[0].bias.copy_(mu)
    ppca = PPCA(W, mu, s2)
    x = ppca.sample(16, generator=torch.Generator().manual_seed(1))
    return model, ppca, x


def test_local_optimisation_improves_and_reaches_exact_posterior(linear):
    torch.set_num_threads(1)
    model, ppca, x = linear
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        m0, lv0 = model.encode(x)
        before = local_elbo(model, x, m0, lv0, 2000, gen)
    r = optimize_local_posterior(model, x, 200, 0.1, gen, n_samples=8, n_eval=2000)
    post = ppca.posterior(x)
    assert (r["elbo"] > before).all()
    assert torch.allclose(r["mu"], post.mean, atol=0.1)
    assert torch.allclose(r["logvar"], post.variance.log(), atol=0.3)
    assert (ppca.log_prob(x) - r["elbo"]).abs().max() < 0.1
    assert not any(p.requires_grad for p in model.parameters())  # the model is left as it was
    assert r["mu"].shape == (16, 2) and r["elbo"].shape == (16,)


def test_gaps_add_up_and_are_small_where_the_family_is_exact(linear):
    torch.set_num_threads(1)
    model, ppca, x = linear
    g = inference_gaps(
        model, x, K=200, steps=150, lr=0.1, generator=torch.Generator().manual_seed(3)
    )
    assert torch.allclose(g.approximation_gap + g.amortization_gap, g.total_gap, atol=1e-12)
    s = g.summary()
    assert set(s) == {
        "log_p",
        "elbo_amortized",
        "elbo_optimized",
        "approximation_gap",
        "amortization_gap",
        "total_gap",
    }
    # a random linear encoder is far from the posterior; the diagonal family is exact here
    assert s["amortization_gap"][0] > 1.0
    assert abs(s["approximation_gap"][0]) < 0.15
    assert (g.log_p - ppca.log_prob(x)).abs().max() < 0.15


def test_mean_and_se():
    m, se = mean_and_se(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert m == pytest.approx(2.5) and se == pytest.approx((5 / 3) ** 0.5 / 2)


def test_validation(linear):
    model, _, x = linear
    with pytest.raises(ValueError, match="steps"):
        optimize_local_posterior(model, x, steps=-1)
    with pytest.raises(ValueError, match="lr"):
        optimize_local_posterior(model, x, steps=1, lr=0.0)
    with pytest.raises(ValueError, match="init"):
        optimize_local_posterior(model, x, steps=1, init="zeros")
    with pytest.raises(ValueError, match="model"):
        optimize_local_posterior(object(), x)
    with pytest.raises(ValueError, match="x"):
        optimize_local_posterior(model, torch.full((2, 6), float("nan"), dtype=DT))
    with pytest.raises(ValueError, match="mu and logvar"):
        local_elbo(model, x, torch.zeros(3, 2, dtype=DT), torch.zeros(3, 2, dtype=DT))
    with pytest.raises(ValueError, match="n_samples"):
        local_elbo(model, x, torch.zeros(16, 2, dtype=DT), torch.zeros(16, 2, dtype=DT), 0)
    with pytest.raises(ValueError, match="at least 2"):
        inference_gaps(model, x[:1], K=2, steps=1)
    with pytest.raises(ValueError, match="K"):
        inference_gaps(model, x, K=0)
    with pytest.raises(ValueError, match="B >= 2"):
        mean_and_se(torch.tensor([1.0]))
