"""dgmlib.density_ratio and dgmlib.avb against independent references: torch.distributions,
scipy quadrature, scikit-learn's logistic regression, autograd Hessians, plain-torch replays."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import integrate, stats
from sklearn.linear_model import LogisticRegression
from torch.distributions import Normal

from dgmlib import density_ratio
from dgmlib.avb import (
    AVB,
    AVBObjective,
    ImplicitEncoder,
    JointDiscriminator,
    avb_losses,
    latent_grid,
    log_marginal_on_grid,
)
from dgmlib.experiment import make
from dgmlib.models.vae import BernoulliDecoder, GaussianDecoder
from dgmlib.stats import mean_se

DT = torch.float64

# ---------------------------------------------------------------------------------------------
# the density-ratio trick


@pytest.mark.parametrize(("m1", "s1", "m0", "s0"), [(1.0, 1.0, 0.0, 2.0), (-0.5, 0.7, 2.0, 1.3)])
def test_gaussian_log_ratio_coefficients_match_torch_distributions(m1, s1, m0, s0):
    x = torch.linspace(-6, 6, 101, dtype=DT)
    m1, s1, m0, s0 = (torch.tensor(v, dtype=DT) for v in (m1, s1, m0, s0))
    c0, c1, c2 = density_ratio.gaussian_log_ratio_coefficients(
        *(float(v) for v in (m1, s1, m0, s0))
    )
    ref = Normal(m1, s1).log_prob(x) - Normal(m0, s0).log_prob(x)
    torch.testing.assert_close(c0 + c1 * x + c2 * x * x, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("m1", "s1", "m0", "s0"), [(1.0, 1.0, 0.0, 2.0), (0.3, 1.2, -0.4, 1.0)])
def test_gaussian_ratio_mean_matches_quadrature(m1, s1, m0, s0):
    def integrand(x):
        return math.exp(2 * stats.norm.logpdf(x, m1, s1) - stats.norm.logpdf(x, m0, s0))

    ref, err = integrate.quad(integrand, -40, 40, epsabs=1e-13, epsrel=1e-12, limit=400)
    assert err < 1e-9
    assert density_ratio.gaussian_ratio_mean(m1, s1, m0, s0) == pytest.approx(ref, rel=1e-9)


def test_gaussian_ratio_mean_is_infinite_for_heavy_numerators():
    assert density_ratio.gaussian_ratio_mean(0.0, 2.0, 0.0, 1.0) == math.inf  # 2 * 1 <= 4
    with pytest.raises(ValueError, match="std1 must be finite and > 0"):
        density_ratio.gaussian_ratio_mean(0.0, -1.0, 0.0, 1.0)


def test_quadratic_features():
    x = torch.tensor([0.0, 2.0, -1.5], dtype=DT)
    expected = torch.tensor([[1.0, 0.0, 0.0], [1.0, 2.0, 4.0], [1.0, -1.5, 2.25]], dtype=DT)
    torch.testing.assert_close(density_ratio.quadratic_features(x), expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"x must have shape \[N\]"):
        density_ratio.quadratic_features(x[:, None])


def _two_gaussians(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.cat(
        [1 + torch.randn(n, generator=g, dtype=DT), 2 * torch.randn(n, generator=g, dtype=DT)]
    )
    y = torch.cat([torch.ones(n, dtype=DT), torch.zeros(n, dtype=DT)])
    return x, y


def test_logistic_regression_matches_sklearn_and_the_autograd_hessian():
    x, y = _two_gaussians(3000, seed=1)
    f = density_ratio.quadratic_features(x)
    fit = density_ratio.fit_logistic_regression(f, y)
    sk = LogisticRegression(C=np.inf, fit_intercept=False, tol=1e-12, max_iter=10_000)
    sk.fit(f.numpy(), y.numpy())
    np.testing.assert_allclose(fit.coef.numpy(), sk.coef_[0], rtol=0, atol=1e-5)

    def nll(w):
        logits = f @ w
        return F.binary_cross_entropy_with_logits(logits, y, reduction="sum")

    hess = torch.autograd.functional.hessian(nll, fit.coef)
    torch.testing.assert_close(fit.se, torch.linalg.inv(hess).diagonal().sqrt(), rtol=1e-8, atol=0)
    assert 1 < fit.n_steps < 30


def test_logistic_regression_recovers_the_log_ratio_within_its_standard_errors():
    # fixed seed; the true coefficients lie within 4 standard errors (a 1e-4 two-sided event)
    x, y = _two_gaussians(20_000, seed=2)
    fit = density_ratio.fit_logistic_regression(density_ratio.quadratic_features(x), y)
    true = torch.tensor(density_ratio.gaussian_log_ratio_coefficients(1.0, 1.0, 0.0, 2.0), dtype=DT)
    assert ((fit.coef - true).abs() < 4 * fit.se).all(), (fit.coef, true, fit.se)


def test_logistic_regression_rejects_bad_input():
    f = torch.tensor([[1.0, -1.0], [1.0, 1.0]], dtype=DT)
    with pytest.raises(ValueError, match="did not converge"):
        density_ratio.fit_logistic_regression(f, torch.tensor([0.0, 1.0], dtype=DT))  # separable
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        density_ratio.fit_logistic_regression(f, torch.tensor([0.0, 2.0], dtype=DT))
    with pytest.raises(ValueError, match=r"features must be \[N, F\] and labels \[N\]"):
        density_ratio.fit_logistic_regression(f, torch.zeros(3, dtype=DT))


def test_kl_and_ratio_mean_from_the_exact_logits():
    g = torch.Generator().manual_seed(3)
    x = 1 + torch.randn(200_000, generator=g, dtype=DT)
    c0, c1, c2 = density_ratio.gaussian_log_ratio_coefficients(1.0, 1.0, 0.0, 2.0)
    logits = c0 + c1 * x + c2 * x * x
    kl = torch.distributions.kl_divergence(Normal(1.0, 1.0), Normal(0.0, 2.0)).item()
    est, se = density_ratio.kl_from_logits(logits)
    assert (est, se) == mean_se(logits)
    assert abs(est - kl) < 4 * se
    est, se = density_ratio.ratio_mean_from_logits(logits)
    assert abs(est - density_ratio.gaussian_ratio_mean(1.0, 1.0, 0.0, 2.0)) < 4 * se
    assert (est, se) == mean_se(logits.exp())


# ---------------------------------------------------------------------------------------------
# AVB building blocks


def test_implicit_encoder_shapes_and_noise():
    torch.manual_seed(0)
    enc = ImplicitEncoder(x_dim=3, z_dim=2, noise_dim=5, hidden=8)
    x = torch.randn(4, 3)
    assert enc.sample(x).shape == (4, 2)
    assert enc.sample(x, K=7).shape == (7, 4, 2)
    a = enc.sample(x, generator=torch.Generator().manual_seed(1))
    b = enc.sample(x, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    eps = torch.randn(4, 5)
    torch.testing.assert_close(enc.transform(x, eps), enc.net(torch.cat([x, eps], 1)))
    with pytest.raises(ValueError, match=r"eps must have shape \[4, 5\]"):
        enc.transform(x, torch.randn(4, 3))
    with pytest.raises(ValueError, match="output_std must be finite and >= 0"):
        ImplicitEncoder(3, 2, 5, 8, output_std=-1.0)
    with pytest.raises(ValueError, match="needs an encoder with output_std > 0"):
        enc.mixture_log_density(x[0], torch.zeros(3, 2), 10)


def test_implicit_encoder_output_noise_has_the_stated_scale():
    torch.manual_seed(0)
    enc = ImplicitEncoder(x_dim=1, z_dim=2, noise_dim=2, hidden=8, output_std=0.3)
    with torch.no_grad():
        enc.net[-1].weight.zero_()
        enc.net[-1].bias.copy_(torch.tensor([1.0, -2.0]))  # g(x, eps) = (1, -2)
    z = enc.sample(torch.zeros(40_000, 1), generator=torch.Generator().manual_seed(2))
    # std of a sample std: 0.3 / sqrt(2 n) = 0.0011; tolerance 5 of them
    assert (z.std(0) - 0.3).abs().max() < 0.006
    assert (z.mean(0) - torch.tensor([1.0, -2.0])).abs().max() < 5 * 0.3 / math.sqrt(40_000)


def test_mixture_log_density_of_a_noise_free_map_is_the_gaussian_and_integrates_to_one():
    torch.manual_seed(0)
    enc = ImplicitEncoder(x_dim=1, z_dim=2, noise_dim=2, hidden=8, output_std=0.4).double()
    grid, area = latent_grid(4.0, 200)
    with torch.no_grad():  # g does not depend on eps: q(z|x) = N(g(x), 0.4^2 I) exactly
        enc.net[0].weight[:, 1:].zero_()
    x = torch.tensor([0.7], dtype=DT)
    centre = enc.transform(x[None], torch.zeros(1, 2, dtype=DT))[0].detach()
    lq = enc.mixture_log_density(x, grid, 16)
    torch.testing.assert_close(lq, Normal(centre, 0.4).log_prob(grid).sum(-1), rtol=0, atol=1e-10)
    # a general map: the mixture is a density (midpoint rule on [-4, 4]^2, mass outside < 1e-6)
    torch.manual_seed(1)
    enc = ImplicitEncoder(x_dim=1, z_dim=2, noise_dim=2, hidden=8, output_std=0.4).double()
    with torch.no_grad():
        enc.net[-1].weight.mul_(0.3)
        enc.net[-1].bias.zero_()
    lq = enc.mixture_log_density(x, grid, 64, generator=torch.Generator().manual_seed(3))
    assert abs(float(lq.exp().sum() * area) - 1) < 1e-4


def test_joint_discriminator_replays_in_plain_torch():
    torch.manual_seed(0)
    d = JointDiscriminator(x_dim=2, z_dim=3, hidden=6, quadratic=True)
    assert (d.quad.weight == 0).all()  # starts as the plain MLP
    with torch.no_grad():
        d.quad.weight.normal_()
    x, z = torch.randn(4, 2), torch.randn(4, 3)
    u = torch.cat([x, z], 1)
    w = torch.zeros(5, 5)
    rows, cols = torch.triu_indices(5, 5)
    w[rows, cols] = d.quad.weight[0].detach()
    ref = d.net(u).squeeze(-1) + torch.einsum("bi,ij,bj->b", u, w, u)
    torch.testing.assert_close(d(x, z), ref)
    zk = torch.randn(6, 4, 3)
    torch.testing.assert_close(d(x, zk)[2], d(x, zk[2]))
    with pytest.raises(ValueError, match=r"z must have shape \[4, 3\]"):
        d(x, torch.randn(5, 3))


def _small_avb(seed: int = 0) -> AVB:
    torch.manual_seed(seed)
    enc = make(ImplicitEncoder, x_dim=4, z_dim=2, noise_dim=3, hidden=8)
    dec = make(BernoulliDecoder, z_dim=2, hidden=8, x_shape=4, n_hidden_layers=1)
    disc = make(JointDiscriminator, x_dim=4, z_dim=2, hidden=8, quadratic=True)
    return make(AVB, encoder=enc, decoder=dec, discriminator=disc)


def test_avb_losses_replay_and_route_gradients():
    model = _small_avb()
    x = torch.eye(4)[[0, 1, 2, 3, 1]]
    z = model.encoder.sample(x, generator=torch.Generator().manual_seed(1))
    z_prior = torch.randn(5, 2, generator=torch.Generator().manual_seed(2))
    t = avb_losses(model.decoder, model.discriminator, x, z, z_prior)
    tj, tp = model.discriminator(x, z), model.discriminator(x, z_prior)
    lp = model.decoder.log_prob(x, z)
    torch.testing.assert_close(t["primal"], (tj - lp).mean())
    torch.testing.assert_close(t["dual"], -(F.logsigmoid(tj) + F.logsigmoid(-tp)).mean())
    torch.testing.assert_close(t["elbo"], (lp - tj).mean().detach())
    disc_params = list(model.discriminator.parameters())
    enc_params = list(model.encoder.parameters())
    g_primal = torch.autograd.grad(
        t["primal"], disc_params + enc_params, allow_unused=True, retain_graph=True
    )
    assert all(g is None for g in g_primal[: len(disc_params)])  # T is held fixed
    assert all(g is not None and g.abs().sum() > 0 for g in g_primal[len(disc_params) :])
    g_dual = torch.autograd.grad(t["dual"], disc_params + enc_params, allow_unused=True)
    assert all(g is None for g in g_dual[len(disc_params) :])  # z is detached
    assert all(g is not None for g in g_dual[: len(disc_params)])


def test_avb_objective_step_equals_two_separate_optimizers():
    """One Adam with a parameter group per player on primal + dual = each player's own Adam."""
    a, b = _small_avb(), _small_avb()
    x = torch.eye(4)[[0, 1, 2, 3] * 4]
    primal_a = list(a.encoder.parameters()) + list(a.decoder.parameters())
    opt = torch.optim.Adam(
        [{"params": primal_a, "lr": 1e-2}, {"params": a.discriminator.parameters(), "lr": 3e-2}]
    )
    opt_p = torch.optim.Adam(list(b.encoder.parameters()) + list(b.decoder.parameters()), lr=1e-2)
    opt_d = torch.optim.Adam(b.discriminator.parameters(), lr=3e-2)
    for step in range(3):
        torch.manual_seed(10 + step)
        terms = AVBObjective()(a, x)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        torch.manual_seed(10 + step)
        z = b.encoder.sample(x)
        t = avb_losses(b.decoder, b.discriminator, x, z, b.prior.sample(len(x)))
        opt_p.zero_grad()
        opt_d.zero_grad()
        t["primal"].backward(inputs=list(opt_p.param_groups[0]["params"]))
        t["dual"].backward(inputs=list(opt_d.param_groups[0]["params"]))
        opt_p.step()
        opt_d.step()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7)


def test_avb_rejects_mismatched_latents_and_estimates_its_elbo():
    enc = ImplicitEncoder(4, 3, 2, 8)
    with pytest.raises(ValueError, match="disagree on z_dim"):
        AVB(enc, BernoulliDecoder(2, 8, 4), JointDiscriminator(4, 2, 8))
    model = _small_avb()
    x = torch.eye(4)
    g = torch.Generator().manual_seed(4)
    est = model.elbo_estimate(x, K=3, generator=g)
    g = torch.Generator().manual_seed(4)
    z = model.encoder.sample(x, 3, g)
    ref = (model.decoder.log_prob(x, z) - model.discriminator(x, z)).mean(0)
    torch.testing.assert_close(est, ref)


# ---------------------------------------------------------------------------------------------
# quadrature on the latent grid


def test_latent_grid():
    grid, area = latent_grid(2.0, 4)
    assert grid.shape == (16, 2) and area == 1.0
    assert sorted(set(grid[:, 0].tolist())) == [-1.5, -0.5, 0.5, 1.5]
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        latent_grid(2.0, 0)


def test_log_marginal_on_grid_matches_scipy_and_a_linear_gaussian_closed_form():
    # a linear-Gaussian decoder x = W z + b + 0.5 noise: p(x) = N(b, W W^T + 0.25 I)
    torch.manual_seed(0)
    dec = GaussianDecoder(
        z_dim=2, hidden=1, x_shape=3, n_hidden_layers=0, variance="fixed", sigma=0.5
    ).double()
    x = torch.randn(2, 3, dtype=DT)
    grid, area = latent_grid(7.0, 400)
    log_px, log_post = log_marginal_on_grid(dec, x, grid, area)
    w, b = dec.net[0].weight.detach(), dec.net[0].bias.detach()
    cov = w @ w.T + 0.25 * torch.eye(3, dtype=DT)
    ref = torch.distributions.MultivariateNormal(b, cov).log_prob(x)
    torch.testing.assert_close(log_px, ref, rtol=0, atol=1e-8)
    torch.testing.assert_close(
        (log_post.exp() * area).sum(1), torch.ones(2, dtype=DT), rtol=0, atol=1e-8
    )
    # a nonlinear Bernoulli decoder against scipy's adaptive 2-D quadrature
    torch.manual_seed(1)
    bern = BernoulliDecoder(z_dim=2, hidden=4, x_shape=4, n_hidden_layers=1).double()
    xb = torch.eye(4, dtype=DT)[:1]

    def joint(z2, z1):
        z = torch.tensor([[z1, z2]], dtype=DT)
        return math.exp(bern.log_prob(xb, z).item() - 0.5 * (z1 * z1 + z2 * z2)) / (2 * math.pi)

    ref_b, err = integrate.dblquad(joint, -8, 8, -8, 8, epsabs=1e-10, epsrel=1e-10)
    got, _ = log_marginal_on_grid(bern, xb, *latent_grid(8.0, 400))
    assert err < 1e-8
    assert float(got) == pytest.approx(math.log(ref_b), abs=1e-7)


def test_avb_objective_alternates_discriminator_and_encoder_steps():
    model = _small_avb()
    x = torch.eye(4)[[0, 1, 2, 3] * 4]
    primal = list(model.encoder.parameters()) + list(model.decoder.parameters())
    disc = list(model.discriminator.parameters())
    opt = torch.optim.Adam([{"params": primal, "lr": 1e-2}, {"params": disc, "lr": 1e-2}])
    objective = AVBObjective(dual_steps=2)
    moved = []
    for _ in range(6):
        before = [p.detach().clone() for p in primal + disc]
        opt.zero_grad(set_to_none=True)
        objective(model, x)["loss"].backward()
        opt.step()
        changed = [not torch.equal(b, p) for b, p in zip(before, primal + disc, strict=True)]
        moved.append((any(changed[: len(primal)]), any(changed[len(primal) :])))
    # two steps of T, then one of the encoder and decoder, twice
    assert moved == [(False, True), (False, True), (True, False)] * 2
    with pytest.raises(ValueError, match="dual_steps must be an integer >= 0"):
        AVBObjective(dual_steps=-1)
