"""dgmlib.distributions: log-densities and KLs against torch.distributions and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

from dgmlib.distributions import (
    bernoulli_log_prob,
    gaussian_log_prob,
    kl_normal_std_normal,
    log_mean_exp,
    sample_mvn,
    standard_normal_log_prob,
)


@pytest.fixture
def g() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def test_gaussian_log_prob_matches_scipy(g):
    x, mu, logvar = randn(g, 4, 3), randn(g, 4, 3), randn(g, 4, 3)
    got = gaussian_log_prob(x, mu, logvar)
    assert got.shape == (4,)
    for i in range(4):
        cov = np.diag(np.exp(logvar[i].numpy()))
        ref = stats.multivariate_normal(mu[i].numpy(), cov).logpdf(x[i].numpy())
        assert got[i].item() == pytest.approx(ref, rel=1e-12)


def test_gaussian_log_prob_broadcasts_over_samples(g):
    """K samples [K, N, D] against per-row parameters [N, D] give [K, N]."""
    z, mu, logvar = randn(g, 7, 4, 2), randn(g, 4, 2), randn(g, 4, 2)
    got = gaussian_log_prob(z, mu, logvar)
    ref = Independent(Normal(mu, (0.5 * logvar).exp()), 1).log_prob(z)
    assert got.shape == (7, 4)
    torch.testing.assert_close(got, ref)


def test_standard_normal_log_prob(g):
    z = randn(g, 5, 6)
    ref = stats.multivariate_normal(np.zeros(6), np.eye(6)).logpdf(z.numpy())
    np.testing.assert_allclose(standard_normal_log_prob(z).numpy(), ref, rtol=1e-12)
    zeros = torch.zeros(3, dtype=torch.float64)
    assert standard_normal_log_prob(zeros).item() == pytest.approx(-1.5 * math.log(2 * math.pi))


def test_kl_normal_std_normal_matches_torch(g):
    mu, logvar = randn(g, 6, 3), randn(g, 6, 3)
    q = Independent(Normal(mu, (0.5 * logvar).exp()), 1)
    p = Independent(Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1)
    torch.testing.assert_close(kl_normal_std_normal(mu, logvar), kl_divergence(q, p))
    zero = kl_normal_std_normal(torch.zeros(2, 4), torch.zeros(2, 4))
    assert torch.equal(zero, torch.zeros(2))


def test_bernoulli_log_prob_matches_scipy_and_is_stable(g):
    logits = randn(g, 3, 5) * 3
    x = (torch.rand(3, 5, generator=g, dtype=torch.float64) > 0.5).double()
    probs = torch.sigmoid(logits).numpy()
    ref = stats.bernoulli(probs).logpmf(x.numpy()).sum(-1)
    np.testing.assert_allclose(bernoulli_log_prob(x, logits).numpy(), ref, rtol=1e-10)
    extreme = bernoulli_log_prob(torch.tensor([[1.0, 0.0]]), torch.tensor([[-200.0, 200.0]]))
    assert torch.isfinite(extreme).all() and extreme.item() == pytest.approx(-400.0)


def test_log_mean_exp_is_stable_and_matches_scipy(g):
    x = randn(g, 10, 3) * 5 - 1000.0
    got = log_mean_exp(x, dim=0)
    ref = logsumexp(x.numpy(), axis=0) - math.log(10)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12)
    assert log_mean_exp(torch.full((4,), 2.0), dim=0).item() == pytest.approx(2.0)
    assert log_mean_exp(x, dim=-1).shape == (10,)


def test_sample_mvn_moments_shapes_and_seeding(g):
    A = randn(g, 3, 3)
    dist = MultivariateNormal(randn(g, 3), A @ A.T + 0.5 * torch.eye(3, dtype=torch.float64))
    n = 40000
    z = sample_mvn(dist, n, torch.Generator().manual_seed(1))
    assert z.shape == (n, 3)
    # 4 standard errors: sqrt(S_ii / n) for a mean, sqrt((S_ij^2 + S_ii S_jj) / (n - 1)) for a
    # sample covariance of Gaussian data
    S = dist.covariance_matrix
    assert ((z.mean(0) - dist.loc).abs() < 4 * (S.diagonal() / n).sqrt()).all()
    se_cov = ((S**2 + torch.outer(S.diagonal(), S.diagonal())) / (n - 1)).sqrt()
    assert ((torch.cov(z.T) - S).abs() < 4 * se_cov).all()
    again = sample_mvn(dist, 40000, torch.Generator().manual_seed(1))
    assert torch.equal(z, again)
    batched = MultivariateNormal(randn(g, 4, 2), scale_tril=torch.eye(2, dtype=torch.float64))
    assert sample_mvn(batched, 5).shape == (5, 4, 2)
    with pytest.raises(ValueError, match="sample_mvn: n must be an integer >= 1, got 0"):
        sample_mvn(dist, 0)
    with pytest.raises(TypeError, match="sample_mvn: n must be an integer >= 1, got 2.5"):
        sample_mvn(dist, 2.5)
    with pytest.raises(TypeError, match="dist must be a MultivariateNormal, got Normal"):
        sample_mvn(Normal(0.0, 1.0), 3)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: gaussian_log_prob(torch.zeros(3), torch.zeros(4), torch.zeros(3)), "broadcast"),
        (
            lambda: gaussian_log_prob(torch.tensor([float("nan")]), torch.zeros(1), torch.zeros(1)),
            "x contains NaN",
        ),
        (
            lambda: kl_normal_std_normal(torch.zeros(2), torch.tensor([0.0, float("nan")])),
            "logvar contains NaN",
        ),
        (lambda: standard_normal_log_prob(torch.tensor(1.0)), "at least 1 dimension"),
        (lambda: bernoulli_log_prob(torch.tensor([2.0]), torch.zeros(1)), r"\[0, 1\]"),
        (lambda: log_mean_exp(torch.zeros(3), dim=1), "out of range"),
        (lambda: log_mean_exp(torch.zeros(0), dim=0), "no entries"),
    ],
)
def test_errors_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: standard_normal_log_prob(torch.zeros(3, dtype=torch.long)),
            "standard_normal_log_prob: z must have a floating dtype, got torch.int64",
        ),
        (
            lambda: standard_normal_log_prob([0.0, 1.0]),
            "standard_normal_log_prob: z must be a torch.Tensor, got list",
        ),
        (
            lambda: gaussian_log_prob(torch.zeros(2), 0.0, torch.zeros(2)),
            "gaussian_log_prob: mu must be a torch.Tensor, got float",
        ),
    ],
)
def test_wrong_types_raise_type_errors(call, match):
    with pytest.raises(TypeError, match=match):
        call()
