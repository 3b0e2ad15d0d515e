"""dgmlib.dequantization and its homework checks: dequantization, bin masses, bits per dim
(the unit conversions themselves: tests/test_units.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from dgmlib.checks import check_dequantized_bpd, check_discretized_logistic
from dgmlib.dequantization import (
    dequantization_bound,
    discretized_logistic_log_prob,
    discretized_normal_log_prob,
    uniform_dequantize,
)
from dgmlib.units import log_density_to_integer_units, nats_to_bits_per_dim

F64 = torch.float64


# --------------------------------------------------------------------------------------------
# uniform_dequantize
# --------------------------------------------------------------------------------------------


def test_uniform_dequantize_range_and_reproducibility():
    x = torch.randint(0, 17, (500, 64), generator=torch.Generator().manual_seed(0))
    y = uniform_dequantize(x, 17, torch.Generator().manual_seed(1))
    assert y.dtype == F64 and y.shape == x.shape
    assert torch.all(y >= x) and torch.all(y < x + 1)
    assert torch.equal(y.floor().long(), x)
    assert torch.equal(y, uniform_dequantize(x, 17, torch.Generator().manual_seed(1)))
    u = (y - x).flatten()
    assert abs(u.mean().item() - 0.5) < 0.01 and abs(u.var().item() - 1 / 12) < 0.005
    s = uniform_dequantize(x, 17, torch.Generator().manual_seed(1), scale=True)
    assert torch.allclose(s, y / 17) and s.min() >= 0 and s.max() < 1
    f32 = uniform_dequantize(x.to(torch.uint8), 17, dtype=torch.float32)
    assert f32.dtype == torch.float32


def test_uniform_dequantize_validates():
    with pytest.raises(ValueError, match=r"\{0, \.\.\., 16\}"):
        uniform_dequantize(torch.tensor([0, 17]), 17)
    with pytest.raises(ValueError, match="needs num_levels"):
        uniform_dequantize(torch.tensor([0, 3]), scale=True)
    with pytest.raises(ValueError, match="integer values"):
        uniform_dequantize(torch.tensor([0.5, 1.0]), 17)
    with pytest.raises(ValueError, match="uniform_dequantize: num_levels must be an integer >= 2"):
        uniform_dequantize(torch.tensor([0]), 1)
    with pytest.raises(TypeError, match="uniform_dequantize: num_levels must be an integer >= 2"):
        uniform_dequantize(torch.tensor([0]), 17.0)


# --------------------------------------------------------------------------------------------
# dequantization_bound
# --------------------------------------------------------------------------------------------


def _gauss_log_density(mean: float, std: float):
    def f(y):
        z = (y - mean) / std
        return (-0.5 * z**2 - math.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)

    return f


def test_dequantization_bound_matches_closed_form():
    """For N(m, s^2) per dim, E_u[(x + u - m)^2] = t^2 + t + 1/3 with t = x - m."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 10, (6, 3), generator=g)
    m, s = 4.3, 2.5
    est, se = dequantization_bound(_gauss_log_density(m, s), x, 20000, g, return_stderr=True)
    t = x.double() - m
    exact = (-0.5 * (t**2 + t + 1 / 3) / s**2 - math.log(s) - 0.5 * math.log(2 * math.pi)).sum(-1)
    assert est.shape == (6,) and se.shape == (6,)
    assert torch.all((est - exact).abs() < 5 * se + 1e-12)


def test_dequantization_bound_is_below_exact_log_mass():
    """Jensen: E_u[log p(x+u)] <= log P(x), with P from exact CDF differences (1-D mixture)."""
    w = torch.tensor([0.3, 0.7], dtype=F64)
    mu = torch.tensor([0.4, 6.0], dtype=F64)
    sd = torch.tensor([0.2, 3.0], dtype=F64)

    def log_density(y):
        comp = torch.distributions.Normal(mu, sd).log_prob(y[..., 0:1])
        return torch.logsumexp(torch.log(w) + comp, -1)

    k = torch.arange(-3, 15)
    log_P = torch.logsumexp(torch.log(w) + discretized_normal_log_prob(k[:, None], mu, sd), -1)
    bound = torch.tensor(
        [
            integrate.quad(lambda u, kk=kk: log_density(torch.tensor([[kk + u]])).item(), 0, 1)[0]
            for kk in k.tolist()
        ]
    )
    assert torch.all(bound <= log_P)
    mc, se = dequantization_bound(
        log_density, k[:, None], 4000, torch.Generator().manual_seed(3), return_stderr=True
    )
    assert torch.all((mc - bound).abs() < 5 * se + 1e-9)
    # the masses over all integers sum to one
    all_k = torch.arange(-60, 80)[:, None]
    total = torch.logsumexp(torch.log(w) + discretized_normal_log_prob(all_k, mu, sd), -1).exp()
    assert abs(total.sum().item() - 1.0) < 1e-12


def test_dequantization_bound_validates():
    f = _gauss_log_density(0.0, 1.0)
    with pytest.raises(ValueError, match="dequantization_bound: num_samples must be an integer"):
        dequantization_bound(f, torch.zeros(2, 3, dtype=torch.long), 0)
    with pytest.raises(TypeError, match="dequantization_bound: num_samples must be an integer"):
        dequantization_bound(f, torch.zeros(2, 3, dtype=torch.long), 10.0)
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        dequantization_bound(f, torch.zeros(3, dtype=torch.long), 2)
    with pytest.raises(ValueError, match=r"\[S, N\]"):
        dequantization_bound(lambda y: y.sum(), torch.zeros(2, 3, dtype=torch.long), 2)


# --------------------------------------------------------------------------------------------
# Exact bin masses
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn,dist",
    [(discretized_normal_log_prob, stats.norm), (discretized_logistic_log_prob, stats.logistic)],
    ids=["normal", "logistic"],
)
def test_bin_masses_match_scipy(fn, dist):
    x = torch.arange(-5, 25)
    for loc, scale in ((3.2, 2.0), (10.0, 0.7), (-2.0, 5.0)):
        got = fn(x, torch.tensor(loc, dtype=F64), torch.tensor(scale, dtype=F64)).exp()
        xn = x.numpy().astype(float)
        want = dist.sf(xn, loc, scale) - dist.sf(xn + 1, loc, scale)
        below = xn + 1 <= loc
        want[below] = (dist.cdf(xn + 1, loc, scale) - dist.cdf(xn, loc, scale))[below]
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-9, atol=1e-300)


@pytest.mark.parametrize(
    "fn", [discretized_normal_log_prob, discretized_logistic_log_prob], ids=["normal", "logistic"]
)
def test_open_bins_sum_to_one_and_tails_are_finite(fn):
    g = torch.Generator().manual_seed(0)
    loc = torch.rand(200, generator=g, dtype=F64) * 400 - 72
    scale = torch.exp(torch.rand(200, generator=g, dtype=F64) * 12 - 7)
    lp = fn(torch.arange(256)[:, None], loc, scale, 256)
    assert lp.shape == (256, 200)
    assert (lp.exp().sum(0) - 1).abs().max() < 1e-12
    # far tails: finite log-probabilities where the probabilities underflow
    far = fn(torch.tensor([254, 255, 0]), torch.tensor(0.0, dtype=F64), torch.tensor(1.0), 256)
    assert torch.all(torch.isfinite(far[:2])) and far[1] < -100 and abs(far[2].item()) < 0.5
    # symmetry: the bin [x, x+1) about loc mirrors [2 loc - x - 1, 2 loc - x)
    up = fn(torch.tensor([20, 30]), torch.tensor(0.0, dtype=F64), torch.tensor(1.0, dtype=F64))
    down = fn(torch.tensor([-21, -31]), torch.tensor(0.0, dtype=F64), torch.tensor(1.0))
    assert torch.allclose(up, down, rtol=1e-12)


def test_bin_masses_have_finite_gradients_at_open_edges():
    loc = torch.tensor([3.0, 0.2, 16.5], dtype=F64, requires_grad=True)
    scale = torch.tensor([1.0, 0.5, 0.01], dtype=F64, requires_grad=True)
    x = torch.tensor([0, 16, 16])
    for fn in (discretized_logistic_log_prob, discretized_normal_log_prob):
        loc.grad = scale.grad = None
        fn(x, loc, scale, 17).sum().backward()
        assert torch.all(torch.isfinite(loc.grad)) and torch.all(torch.isfinite(scale.grad))


def test_bin_masses_validate_levels():
    with pytest.raises(ValueError, match=r"\{0, \.\.\., 16\}"):
        discretized_logistic_log_prob(torch.tensor([17]), 0.0, 1.0, 17)
    with pytest.raises(ValueError, match="integer values"):
        discretized_normal_log_prob(torch.tensor([0.5]), 0.0, 1.0)


# --------------------------------------------------------------------------------------------
# Homework checks
# --------------------------------------------------------------------------------------------


def _stub(*args, **kwargs):
    raise NotImplementedError("Exercise: replace this line with your solution.")


def _naive_logistic(x_int, loc, scale, num_levels=None):
    """Subtracts probabilities: right in the bulk, wrong (log 0) far in the tails."""
    x = torch.as_tensor(x_int).double()
    hi = torch.sigmoid((x + 1 - loc) / scale)
    lo = torch.sigmoid((x - loc) / scale)
    if num_levels is not None:
        hi = torch.where(x == num_levels - 1, torch.ones_like(hi), hi)
        lo = torch.where(x == 0, torch.zeros_like(lo), lo)
    return torch.log(hi - lo)


def _closed_bins_logistic(x_int, loc, scale, num_levels=None):
    return discretized_logistic_log_prob(x_int, loc, scale)


def test_check_discretized_logistic(capsys):
    check_discretized_logistic(discretized_logistic_log_prob)
    assert "all 7 cases pass" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="not implemented yet"):
        check_discretized_logistic(_stub)
    with pytest.raises(AssertionError, match=r"(?s)open outer bins.*expected.*got.*Hint"):
        check_discretized_logistic(_closed_bins_logistic)
    with pytest.raises(AssertionError, match=r"(?s)far tail.*Hint: .*log-CDFs"):
        check_discretized_logistic(_naive_logistic)
    with pytest.raises(
        AssertionError, match=r"the log-mass tensor has shape \(\), expected \(15,\)"
    ):
        check_discretized_logistic(lambda *a, **k: 0.0)


def _reference_bpd(log_density_unit, x_int, num_levels, num_samples, generator):
    n, d = x_int.shape
    u = torch.rand((num_samples, n, d), generator=generator, dtype=F64)
    lp = log_density_unit((x_int.double() + u) / num_levels).mean(0)
    return nats_to_bits_per_dim(-log_density_to_integer_units(lp, d, num_levels), d)


def _no_correction_bpd(log_density_unit, x_int, num_levels, num_samples, generator):
    n, d = x_int.shape
    u = torch.rand((num_samples, n, d), generator=generator, dtype=F64)
    return -log_density_unit((x_int.double() + u) / num_levels).mean(0) / (d * math.log(2))


def _always_256_bpd(log_density_unit, x_int, num_levels, num_samples, generator):
    return _reference_bpd(log_density_unit, x_int, 256, num_samples, generator)


def test_check_dequantized_bpd(capsys):
    check_dequantized_bpd(_reference_bpd)
    assert "all 3 cases pass" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="not implemented yet"):
        check_dequantized_bpd(_stub)
    with pytest.raises(
        AssertionError, match=r"(?s)uniform density.*expected.*got.*change of variables.*missing"
    ):
        check_dequantized_bpd(_no_correction_bpd)
    with pytest.raises(AssertionError, match=r"(?s)K=17.*Hint: use num_levels"):
        check_dequantized_bpd(_always_256_bpd)
    with pytest.raises(
        AssertionError,
        match=r"check_dequantized_bpd, case 'uniform.*': your function raised ValueError",
    ):
        check_dequantized_bpd(lambda *a: (_ for _ in ()).throw(ValueError("boom")))
