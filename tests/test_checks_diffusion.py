"""dgmlib.checks.diffusion (lecture 12): other right solutions pass with one line, and typical
mistakes are rejected with the case that catches them and the hint that names the mistake
(stubs and non-functions: tests/test_checks.py, for every check)."""

from __future__ import annotations

import pytest
import torch
from helpers import fails as fails_with_hint

from dgmlib.checks import check_forward_posterior, check_marginal_sample
from dgmlib.diffusion import forward_posterior


def abar(betas, t):
    return torch.cumprod(1 - betas, 0)[t - 1] if t >= 1 else torch.ones((), dtype=betas.dtype)


def sample_right(x0, t, betas, eps):
    a = abar(betas, t)
    return a.sqrt() * x0 + (1 - a).sqrt() * eps


def sample_no_sqrt_noise(x0, t, betas, eps):
    a = abar(betas, t)
    return a.sqrt() * x0 + (1 - a) * eps


def sample_no_sqrt_mean(x0, t, betas, eps):
    a = abar(betas, t)
    return a * x0 + (1 - a).sqrt() * eps


def sample_note_typo(x0, t, betas, eps):  # one step with noise scale beta_t
    b = betas[t - 1]
    return (1 - b).sqrt() * x0 + b * eps


def sample_one_step(x0, t, betas, eps):
    b = betas[t - 1]
    return (1 - b).sqrt() * x0 + b.sqrt() * eps


def sample_off_by_one(x0, t, betas, eps):
    a = abar(betas, t - 1)
    return a.sqrt() * x0 + (1 - a).sqrt() * eps


def post_right(z0, zt, t, betas):
    b = betas[t - 1]
    ap, at = abar(betas, t - 1), abar(betas, t)
    mean = ap.sqrt() * b / (1 - at) * z0 + (1 - b).sqrt() * (1 - ap) / (1 - at) * zt
    return mean, (1 - ap) / (1 - at) * b


def post_full_variance(z0, zt, t, betas):  # a variance of the mean's shape is fine
    mean, var = post_right(z0, zt, t, betas)
    return mean, var * torch.ones_like(mean)


def post_note_typo(z0, zt, t, betas):  # 1 - abar_{t+1} in the variance
    mean, _ = post_right(z0, zt, t, betas)
    return mean, (1 - abar(betas, t + 1)) / (1 - abar(betas, t)) * betas[t - 1]


def post_var_beta(z0, zt, t, betas):
    return post_right(z0, zt, t, betas)[0], betas[t - 1]


def post_swapped(z0, zt, t, betas):
    return post_right(zt, z0, t, betas)


def post_no_sqrt_z0(z0, zt, t, betas):
    mean, var = post_right(z0, zt, t, betas)
    b, ap, at = betas[t - 1], abar(betas, t - 1), abar(betas, t)
    return mean + (ap - ap.sqrt()) * b / (1 - at) * z0, var


def post_no_sqrt_alpha(z0, zt, t, betas):
    mean, var = post_right(z0, zt, t, betas)
    b, ap, at = betas[t - 1], abar(betas, t - 1), abar(betas, t)
    return mean + ((1 - b) - (1 - b).sqrt()) * (1 - ap) / (1 - at) * zt, var


def post_abar_without_one(z0, zt, t, betas):  # abar array without abar_0 = 1 in front
    ab = torch.cumprod(1 - betas, 0)
    b, ap, at = betas[t - 1], ab[t - 1], ab[t]
    mean = ap.sqrt() * b / (1 - at) * z0 + (1 - b).sqrt() * (1 - ap) / (1 - at) * zt
    return mean, (1 - ap) / (1 - at) * b


def post_shifted(z0, zt, t, betas):  # betas[t] taken as beta_t, the abar array likewise
    return post_right(z0, zt, t + 1, betas)


@pytest.mark.parametrize(
    ("check", "fn", "n"),
    [
        (check_marginal_sample, sample_right, 4),
        (check_forward_posterior, post_right, 5),
        (check_forward_posterior, post_full_variance, 5),
        (check_forward_posterior, forward_posterior, 5),
    ],
)
def test_right_solutions_pass_with_one_line(check, fn, n, capsys):
    check(fn)
    assert capsys.readouterr().out == f"{check.__name__}: all {n} cases pass.\n"


def fails(check, fn, case_start, hint):
    msg = fails_with_hint(check, fn, case_start, hint)
    assert "expected:" in msg or "return a pair" in msg or "shape" in msg, msg
    return msg


@pytest.mark.parametrize(
    ("wrong", "case", "hint"),
    [
        (sample_no_sqrt_noise, "T = 8, t = 1", "not by the variance"),
        (sample_no_sqrt_mean, "T = 8, t = 1", "square root is missing"),
        (sample_note_typo, "T = 8, t = 1", "noise scale beta_t"),
        (sample_one_step, "T = 8, t = 3", "combines all t steps"),
        (sample_off_by_one, "T = 8, t = 1", "abar_{t-1}"),
    ],
)
def test_marginal_sample_mistakes_are_named(wrong, case, hint):
    fails(check_marginal_sample, wrong, case, hint)


@pytest.mark.parametrize(
    ("wrong", "case", "hint"),
    [
        (post_note_typo, "T = 8, t = 2", "1 - abar_{t+1}"),
        (post_var_beta, "T = 8, t = 2", "smaller than beta_t"),
        (post_swapped, "T = 8, t = 2", "swapped"),
        (post_no_sqrt_z0, "T = 8, t = 2", "coefficient of z_0"),
        (post_no_sqrt_alpha, "T = 8, t = 2", "root of alpha_t"),
        (post_abar_without_one, "T = 8, t = 2", "abar_0 = 1"),
        (post_shifted, "T = 8, t = 2", "shifted by one"),
    ],
)
def test_forward_posterior_mistakes_are_named(wrong, case, hint):
    fails(check_forward_posterior, wrong, case, hint)


def test_forward_posterior_bad_returns():
    with pytest.raises(AssertionError, match="return a pair"):
        check_forward_posterior(lambda z0, zt, t, betas: z0)
    with pytest.raises(AssertionError, match="does not broadcast"):
        check_forward_posterior(lambda z0, zt, t, betas: (post_right(z0, zt, t, betas)[0], z0[:2]))
    with pytest.raises(AssertionError, match="your function raised"):
        check_forward_posterior(lambda z0, zt, t, betas: z0 @ torch.zeros(7, 7))


def sample_swapped(x0, t, betas, eps):
    a = abar(betas, t)
    return (1 - a).sqrt() * x0 + a.sqrt() * eps


def sample_prod_betas(x0, t, betas, eps):  # the product of beta_s instead of 1 - beta_s
    a = torch.prod(betas[:t])
    return a.sqrt() * x0 + (1 - a).sqrt() * eps


def sample_sum_betas(x0, t, betas, eps):  # 1 - sum beta_s, the first-order approximation
    a = 1 - betas[:t].sum()
    return a.sqrt() * x0 + (1 - a).sqrt() * eps


def post_std(z0, zt, t, betas):
    mean, var = post_right(z0, zt, t, betas)
    return mean, var.sqrt()


def post_no_denominator(z0, zt, t, betas):
    b, ap = betas[t - 1], abar(betas, t - 1)
    return ap.sqrt() * b * z0 + (1 - b).sqrt() * (1 - ap) * zt, post_right(z0, zt, t, betas)[1]


@pytest.mark.parametrize(
    ("wrong", "case", "hint"),
    [
        (sample_swapped, "T = 8, t = 1", "signal and noise are swapped"),
        (sample_prod_betas, "T = 8, t = 1", "this multiplies the betas"),
        (sample_sum_betas, "T = 8, t = 3", "first-order approximation"),
    ],
)
def test_marginal_sample_slips_are_named(wrong, case, hint):
    """Swapped roles, a product of the betas, the linearised product: each caught and named."""
    fails(check_marginal_sample, wrong, case, hint)


@pytest.mark.parametrize(
    ("wrong", "case", "hint"),
    [
        (post_std, "T = 8, t = 2", "this is the standard deviation"),
        (post_no_denominator, "T = 8, t = 2", "share that denominator"),
    ],
)
def test_forward_posterior_slips_are_named(wrong, case, hint):
    """A standard deviation for a variance, a mean without its denominator: each named."""
    fails(check_forward_posterior, wrong, case, hint)
