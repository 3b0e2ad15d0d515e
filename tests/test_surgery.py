"""dgmlib.surgery: the aggregated posterior's density, ELBO surgery on Gaussian encoders whose
terms are known, the bound I <= log N, prior-hole statistics and input validation."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal, kl_divergence

from dgmlib.distributions import standard_normal_log_prob
from dgmlib.kernels import mixture_logpdf_ref
from dgmlib.surgery import (
    aggregate_posterior_log_prob,
    average_kl_standard_normal,
    elbo_surgery,
    prior_holes,
    sample_aggregate_posterior,
)

DT = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_posteriors(n: int = 40, d: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = gen(seed)
    return torch.randn(n, d, generator=g, dtype=DT), torch.randn(n, d, generator=g, dtype=DT) - 1


def test_aggregate_posterior_is_the_uniform_mixture_whatever_the_chunk():
    mu, logvar = random_posteriors()
    z = torch.randn(11, 3, generator=gen(1), dtype=DT)
    ref = mixture_logpdf_ref(z, mu, logvar)
    for chunk in (1, 4, 100):
        torch.testing.assert_close(aggregate_posterior_log_prob(z, mu, logvar, chunk), ref)


def test_aggregate_posterior_samples_are_uniform_over_the_data():
    """Index uniform on the data; z | index ~ N(mu_index, exp(logvar_index)), each with its own
    variance (0.25, 1, 4 here), so a sampler that mixes up the index of z and its noise fails."""
    n = 30_000
    mu = torch.tensor([[-50.0], [0.0], [50.0]], dtype=DT)
    sd = torch.tensor([0.5, 1.0, 2.0], dtype=DT)
    z, idx = sample_aggregate_posterior(mu, 2 * sd.log()[:, None], n, gen())
    assert z.shape == (n, 1) and idx.shape == (n,)
    # frequency of each index: 5 standard errors, sqrt((1/3)(2/3) / n) = 0.0027 each
    counts = torch.bincount(idx, minlength=3).double() / n
    assert (counts - 1 / 3).abs().max() < 5 * math.sqrt(2 / 9 / n), counts
    # the means are 50 apart and the largest sd is 2: every z lies nearest to its own mean
    assert torch.equal((z - mu.T).abs().argmin(1), idx)
    # standardized residuals are N(0, 1) in each component: mean within 5 / sqrt(n_k),
    # sd within 5 / sqrt(2 n_k) (the standard errors of a normal sample's mean and sd)
    for k in range(3):
        r = (z[idx == k, 0] - mu[k, 0]) / sd[k]
        assert abs(r.mean().item()) < 5 / math.sqrt(len(r)), (k, r.mean().item())
        assert abs(r.std().item() - 1.0) < 5 / math.sqrt(2 * len(r)), (k, r.std().item())


def test_surgery_identity_and_mutual_information_bound():
    mu, logvar = random_posteriors(n=60)
    s = elbo_surgery(mu, logvar, standard_normal_log_prob, 4000, gen())
    # sanity line: the three per-draw terms satisfy a_i = b_i + c_i by construction
    assert s.avg_kl == pytest.approx(s.marginal_kl + s.mutual_info, abs=1e-9)
    assert 0 <= s.mutual_info <= s.log_n == pytest.approx(math.log(60))
    # sanity line: KL(q(z) || p(z)) >= 0 (its value is checked against quadrature below)
    assert s.marginal_kl > -3 * s.marginal_kl_se
    exact = average_kl_standard_normal(mu, logvar)
    assert abs(s.avg_kl - exact) < 4 * s.avg_kl_se
    assert (s.n_data, s.n_samples) == (60, 4000)


def test_surgery_terms_match_quadrature_in_two_dimensions():
    """KL(q(z) || p(z)) by quadrature on a grid (the mixture density from torch.distributions),
    and I = average KL (closed form) - marginal KL: the Monte Carlo terms agree within 4 s.e.

    The grid reference is exact to far below the standard errors: the rectangle rule on a
    Gaussian of sd s with step h errs by about exp(-2 pi^2 s^2 / h^2) (s >= 0.3, h = 0.05: e^-710)
    and [-10, 10]^2 leaves out less than 1e-8 of the mass (means within 4, sd <= 1).
    """
    g, n, h = gen(5), 30, 0.05
    mu = 1.5 * torch.randn(n, 2, generator=g, dtype=DT)
    sd = 0.3 + 0.7 * torch.rand(n, 2, generator=g, dtype=DT)
    assert mu.abs().max() < 4
    mixture = MixtureSameFamily(
        Categorical(probs=torch.full((n,), 1 / n, dtype=DT)), Independent(Normal(mu, sd), 1)
    )
    axis = torch.arange(-10.0, 10.0 + h / 2, h, dtype=DT)
    grid = torch.cartesian_prod(axis, axis)
    log_q = torch.cat([mixture.log_prob(c) for c in grid.split(40_000)])
    log_p = Normal(0.0, 1.0).log_prob(grid).sum(-1)
    w = log_q.exp() * h**2
    assert abs(w.sum().item() - 1) < 1e-8  # sanity line: the grid holds all the mass
    marginal_kl = (w * (log_q - log_p)).sum().item()
    mutual_info = average_kl_standard_normal(mu, 2 * sd.log()) - marginal_kl
    s = elbo_surgery(mu, 2 * sd.log(), standard_normal_log_prob, 20_000, gen(6))
    assert abs(s.marginal_kl - marginal_kl) < 4 * s.marginal_kl_se, (s.marginal_kl, marginal_kl)
    assert abs(s.mutual_info - mutual_info) < 4 * s.mutual_info_se, (s.mutual_info, mutual_info)


def test_posteriors_equal_to_the_prior_have_no_information_and_no_kl():
    mu, logvar = torch.zeros(25, 2, dtype=DT), torch.zeros(25, 2, dtype=DT)
    s = elbo_surgery(mu, logvar, standard_normal_log_prob, 500, gen())
    for v in (s.avg_kl, s.marginal_kl, s.mutual_info):
        assert abs(v) < 1e-12


def test_well_separated_posteriors_reach_log_n():
    n = 50
    mu = 100.0 * torch.arange(n, dtype=DT)[:, None].repeat(1, 2)
    logvar = torch.full((n, 2), math.log(0.01), dtype=DT)
    s = elbo_surgery(mu, logvar, standard_normal_log_prob, 2000, gen())
    # exact up to the rounding of the mixture kernel's expanded quadratic form (|z|^2 / var ~ 1e9)
    assert s.mutual_info == pytest.approx(math.log(n), abs=1e-6)
    assert s.mutual_info <= s.log_n + 1e-6


def test_identical_posteriors_give_a_closed_form_marginal_kl():
    """All q(z|x_n) = N(m, s^2): q(z) is that Gaussian, I = 0, KL(q(z)||p) is the Gaussian KL."""
    m = torch.tensor([[1.0, -0.5, 2.0]], dtype=DT)
    lv = torch.tensor([[-1.0, 0.3, 0.0]], dtype=DT)
    s = elbo_surgery(m.repeat(30, 1), lv.repeat(30, 1), standard_normal_log_prob, 20_000, gen())
    q = Independent(Normal(m, torch.exp(0.5 * lv)), 1)
    exact = kl_divergence(q, Independent(Normal(torch.zeros_like(m), 1.0), 1)).item()
    assert abs(s.mutual_info) < 1e-9
    assert abs(s.marginal_kl - exact) < 4 * s.marginal_kl_se


def test_gaussian_channel_mutual_information():
    """x ~ N(0, I_2), q(z|x) = N(a x, v I): I(x; z) = 0.5 log(1 + a^2 / v) per dimension.

    On N data points the aggregated posterior is the mixture q_N, not q = N(0, (a^2 + v) I).
    E log q(z|x_n) is the same constant for both, so I_N - I = h(q_N) - h(q)
    = sum_d a^2 (m2_d - 1) / (2 (a^2 + v)) - KL(q_N || q), with m2_d the mean of x_d^2 over the
    data. And KL <= log(1 + chi^2), E chi^2(q_N || q) = (c^2 - 1) / N with c = 1 + a^2 / v per
    dimension (c = int E_x[N(z; a x, v)^2] / q(z) dz in closed form), so on average the mixture's
    I_N lies between (I + the m2 term) - log(1 + (c^2 - 1) / N) and (I + the m2 term).
    """
    n, a, v = 4000, 1.5, 0.25
    x = torch.randn(n, 2, generator=gen(3), dtype=DT)
    logvar = torch.full((n, 2), math.log(v), dtype=DT)
    s = elbo_surgery(a * x, logvar, standard_normal_log_prob, 8000, gen(4))
    exact = 2 * 0.5 * math.log(1 + a**2 / v)
    shift = (a**2 * ((x**2).mean(0) - 1) / (2 * (a**2 + v))).sum().item()
    kl_bound = math.log(1 + ((1 + a**2 / v) ** 2 - 1) / n)  # c per dimension, c^2 for two
    diff = s.mutual_info - (exact + shift)
    assert -4 * s.mutual_info_se - kl_bound < diff < 4 * s.mutual_info_se, diff


def test_prior_holes():
    z = torch.randn(5000, 2, generator=gen(), dtype=DT)
    lp = standard_normal_log_prob(z)
    same = prior_holes(lp, lp)
    assert same.reverse_kl == 0 and same.hole_mass == 0
    # q = N(0, 0.25 I): KL(N(0, I) || N(0, 0.25 I)) = 2 * 0.5 * (4 - 1 - log 4)
    lq = standard_normal_log_prob(2 * z) + 2 * math.log(2)
    h = prior_holes(lp, lq, ratio=10.0)
    exact = 4 - 1 - math.log(4)
    assert abs(h.reverse_kl - exact) < 4 * h.reverse_kl_se
    # q < p / 10 where 1.5 |z|^2 > log(10) + log 4, i.e. |z|^2 > (2/3) log 40: chi^2_2 tail
    exact_mass = math.exp(-(2 / 3) * math.log(40) / 2)
    assert abs(h.hole_mass - exact_mass) < 4 * h.hole_mass_se


def test_validation_errors_name_the_argument():
    mu, logvar = random_posteriors(n=5, d=2)
    z = torch.zeros(3, 2, dtype=DT)
    with pytest.raises(ValueError, match="mu must have shape"):
        aggregate_posterior_log_prob(z, mu[None], logvar)
    with pytest.raises(ValueError, match="mu must have at least 2 dimension"):
        aggregate_posterior_log_prob(z, mu[0], logvar)
    with pytest.raises(ValueError, match="logvar must have the shape of mu"):
        aggregate_posterior_log_prob(z, mu, logvar[:, :1])
    with pytest.raises(ValueError, match=r"z must have shape \[M, 2\]"):
        aggregate_posterior_log_prob(torch.zeros(3, 4, dtype=DT), mu, logvar)
    with pytest.raises(ValueError, match="aggregate_posterior_log_prob: chunk must be an integer"):
        aggregate_posterior_log_prob(z, mu, logvar, chunk=0)
    with pytest.raises(TypeError, match="aggregate_posterior_log_prob: chunk must be an integer"):
        aggregate_posterior_log_prob(z, mu, logvar, chunk=2.0)
    with pytest.raises(TypeError, match="aggregate_posterior_log_prob: mu must be a torch.Tensor"):
        aggregate_posterior_log_prob(z, mu.tolist(), logvar)
    with pytest.raises(ValueError, match="mu and logvar must be finite"):
        aggregate_posterior_log_prob(z, mu, logvar + float("inf"))
    with pytest.raises(ValueError, match="n_samples must be an integer"):
        elbo_surgery(mu, logvar, standard_normal_log_prob, 0)
    with pytest.raises(ValueError, match="surgery_samples: prior_log_prob must map"):
        elbo_surgery(mu, logvar, lambda z: z, 10)
    with pytest.raises(TypeError, match="surgery_samples: prior_log_prob must be callable"):
        elbo_surgery(mu, logvar, 3, 10)
    with pytest.raises(
        ValueError, match="summarize_surgery: need >= 2 draws for standard errors, got 1"
    ):
        elbo_surgery(mu, logvar, standard_normal_log_prob, 1)
    with pytest.raises(ValueError, match="sample_aggregate_posterior: n must be an integer >= 1"):
        sample_aggregate_posterior(mu, logvar, -1)
    with pytest.raises(ValueError, match="ratio must be a number > 1"):
        prior_holes(torch.zeros(3), torch.zeros(3), ratio=0.5)
    with pytest.raises(TypeError, match="prior_holes: ratio must be a real number"):
        prior_holes(torch.zeros(3), torch.zeros(3), ratio="10")
    with pytest.raises(ValueError, match="log_p and log_q must both have shape"):
        prior_holes(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="mu contains NaN"):
        average_kl_standard_normal(mu * float("nan"), logvar)
