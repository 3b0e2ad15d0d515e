"""dgmlib.diagnostics: active units on constructed data, KL per dimension against
torch.distributions, gradient SNR on cases with known mean and spread, the log-log slope."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from dgmlib.diagnostics import (
    active_units,
    gradient_samples,
    gradient_snr,
    kl_per_dimension,
    loglog_slope,
    mean_snr,
)


def test_active_units_on_constructed_means():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(2000, 5, generator=g)
    scales = torch.tensor([1.0, 0.5, 0.2, 0.05, 0.0])  # variances ~1, .25, .04, .0025, 0
    mu = 3.0 + base * scales  # the offset must not matter
    count, variances = active_units(mu)
    assert count == 3
    # the variances over the data (divisor N) against numpy's, in float64 from the same float32
    # values: float32 rounding of a sum of 2000 terms stays below 1e-5 relative
    expected = np.var(mu.double().numpy(), axis=0, ddof=0)
    np.testing.assert_allclose(variances.double().numpy(), expected, rtol=1e-5, atol=0)
    # and against the construction, scale^2, within 4 standard errors s^2 sqrt(2 / (N - 1))
    assert ((variances - scales**2).abs() <= 4 * scales**2 * math.sqrt(2 / 1999)).all()
    assert active_units(mu, threshold=0.1).count == 2
    assert active_units(mu, threshold=0.0).count == 4


def test_active_units_validation():
    with pytest.raises(ValueError, match=r"mu must have shape \[N, Z\] with N >= 2"):
        active_units(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="mu contains NaN"):
        active_units(torch.tensor([[0.0], [float("nan")]]))
    with pytest.raises(ValueError, match="active_units: threshold must be finite and >= 0"):
        active_units(torch.zeros(3, 2), threshold=-1.0)


def test_kl_per_dimension_matches_torch_distributions():
    g = torch.Generator().manual_seed(1)
    mu, logvar = torch.randn(50, 4, generator=g), torch.randn(50, 4, generator=g)
    expected = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).mean(0)
    kl = kl_per_dimension(mu, logvar)
    torch.testing.assert_close(kl, expected)
    # a collapsed dimension (q = prior for every x) has KL 0
    mu[:, 2], logvar[:, 2] = 0.0, 0.0
    assert kl_per_dimension(mu, logvar)[2] == 0.0
    with pytest.raises(ValueError, match="mu and logvar must both have shape"):
        kl_per_dimension(mu, logvar[:, :3])


def test_gradient_snr_exact_and_statistical():
    # two samples 1 and 3: mean 2, std sqrt(2) (divisor S - 1)
    snr = gradient_snr(torch.tensor([[1.0, -1.0], [3.0, -3.0]]))
    torch.testing.assert_close(snr, torch.full((2,), 2 / math.sqrt(2)))
    # Gaussian samples with mean m and std s per element: SNR ~ |m| / s
    g = torch.Generator().manual_seed(2)
    m, s = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.5, 4.0, 0.1])
    samples = m + s * torch.randn(40000, 3, generator=g)
    torch.testing.assert_close(gradient_snr(samples), m.abs() / s, rtol=0.03, atol=0.0)
    # constant elements: infinite SNR, ignored by mean_snr
    const = torch.stack([torch.tensor([1.0, 1.0, 0.0]), torch.tensor([3.0, 1.0, 0.0])])
    snr = gradient_snr(const)
    assert snr[1] == math.inf and torch.isnan(snr[2])
    assert mean_snr(const) == pytest.approx(2 / math.sqrt(2))
    with pytest.raises(ValueError, match="need S >= 2"):
        gradient_snr(torch.zeros(1, 3))


def test_gradient_samples_collects_flattened_gradients():
    w = torch.nn.Parameter(torch.ones(2, 2))
    v = torch.nn.Parameter(torch.ones(3))
    g = torch.Generator().manual_seed(3)

    def loss_fn() -> torch.Tensor:  # d/dw = 2 + noise, d/dv = -1 exactly
        return (w * (2.0 + torch.randn(2, 2, generator=g))).sum() - v.sum()

    samples = gradient_samples(loss_fn, [w, v], n_samples=3000)
    assert samples.shape == (3000, 7)
    torch.testing.assert_close(samples[:, 4:], -torch.ones(3000, 3))
    # SNR 2 per element; a normal sample's |mean| / sd has standard error
    # sqrt((1 + SNR^2 / 2) / S), and the mean over 4 independent elements halves it: 4 s.e.
    assert mean_snr(samples[:, :4]) == pytest.approx(2.0, abs=4 * math.sqrt(3 / 3000 / 4))
    with pytest.raises(ValueError, match="gradient_samples: n_samples must be an integer >= 2"):
        gradient_samples(loss_fn, [w], 1)


def test_loglog_slope_recovers_a_power_law():
    K = np.array([1, 2, 4, 8, 16, 32, 64])
    a, b = loglog_slope(K, 3.0 * K**-0.5)
    assert a == pytest.approx(-0.5) and b == pytest.approx(math.log(3.0))
    a, _ = loglog_slope(torch.tensor(K), torch.tensor(K, dtype=torch.float64) ** 0.5)
    assert a == pytest.approx(0.5)
    with pytest.raises(ValueError, match="positive and finite"):
        loglog_slope([1, 2], [1.0, 0.0])
    with pytest.raises(ValueError, match="1-D of equal length"):
        loglog_slope([1, 2, 3], [1.0, 2.0])
