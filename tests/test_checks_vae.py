"""dgmlib.checks.vae (lectures 02, 04 and 05): typical mistakes are rejected with the case that
catches them and a hint that names the mistake (the one-line/stub behaviour of every check:
tests/test_checks.py)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import fails

from dgmlib import checks
from dgmlib.bounds import iwae_bound
from dgmlib.distributions import kl_normal_std_normal
from dgmlib.kl_control import free_bits_kl


def reparam_right(mu, logvar):
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


def reparam_uniform_noise(mu, logvar):
    return mu + torch.exp(0.5 * logvar) * torch.rand_like(mu)


def reparam_one_eps_for_the_batch(mu, logvar):
    return mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape[-1])


def reparam_one_eps_for_the_dimensions(mu, logvar):
    return mu + torch.exp(0.5 * logvar) * torch.randn(len(mu), 1)


def reparam_variance_for_std(mu, logvar):
    return mu + torch.exp(logvar) * torch.randn_like(mu)


def reparam_detached(mu, logvar):
    return mu + torch.exp(0.5 * logvar.detach()) * torch.randn_like(mu)


def kl_terms(mu, logvar):
    """[B, Z]: the KL of each dimension, 0.5 (exp(logvar) + mu^2 - 1 - logvar)."""
    return 0.5 * (logvar.exp() + mu**2 - 1 - logvar)


def kl_wrong_axis(mu, logvar):
    return kl_terms(mu, logvar).sum(0)


def kl_no_minus_one(mu, logvar):
    return 0.5 * (logvar.exp() + mu**2 - logvar).sum(-1)


def kl_no_half(mu, logvar):
    return 2 * kl_terms(mu, logvar).sum(-1)


def kl_logvar_as_log_std(mu, logvar):
    return 0.5 * ((2 * logvar).exp() + mu**2 - 1 - 2 * logvar).sum(-1)


def kl_plus_log_term(mu, logvar):
    return 0.5 * (logvar.exp() + mu**2 - 1 + logvar).sum(-1)


def kl_reversed(mu, logvar):
    """KL(N(0, I) || q): the other direction."""
    return 0.5 * ((1 + mu**2) / logvar.exp() - 1 + logvar).sum(-1)


def kl_mean_over_dims(mu, logvar):
    return kl_terms(mu, logvar).mean(-1)


def free_bits_batch_sum(kl, lam):
    return torch.clamp(kl.sum(0), min=lam).sum()


def free_bits_dims_mean(kl, lam):
    return torch.clamp(kl.mean(0), min=lam).mean()


def free_bits_clamp_max(kl, lam):
    return torch.clamp(kl.mean(0), max=lam).sum()


def free_bits_hinge(kl, lam):
    return torch.clamp(kl.mean(0) - lam, min=0.0).sum()


def free_bits_per_example(kl, lam):
    return torch.clamp(kl, min=lam).mean(0).sum()


def active_wrong_axis(mu, thr):
    return int((mu.var(dim=1, correction=0) > thr).sum())


def active_magnitude(mu, thr):
    return int((mu.abs().mean(0) > thr).sum())


def active_std(mu, thr):
    return int((mu.std(dim=0, correction=0) > thr).sum())


def active_unbiased(mu, thr):
    return int((mu.var(dim=0) > thr).sum())


def iwae_mean_over_batch(log_w):
    return iwae_bound(log_w).mean()


def iwae_no_log_k(log_w):
    return torch.logsumexp(log_w, 0)


def iwae_log2_k(log_w):
    return torch.logsumexp(log_w, 0) - math.log2(len(log_w))


def iwae_mean_of_logs(log_w):
    return log_w.mean(0)


def iwae_max(log_w):
    return log_w.max(0).values


def iwae_naive(log_w):
    return log_w.exp().mean(0).log()


REPARAM, KL = checks.check_reparam_sample, checks.check_kl_standard_normal
FREE_BITS, ACTIVE, IWAE = checks.check_free_bits, checks.check_active_units, checks.check_iwae_bound


@pytest.mark.parametrize(
    ("check", "wrong", "case", "hint"),
    [
        (REPARAM, reparam_uniform_noise, "sample mean", "not torch.rand_like"),
        (REPARAM, reparam_one_eps_for_the_batch, "a fresh eps for every example", "randn_like"),
        (REPARAM, reparam_one_eps_for_the_dimensions, "every latent dimension", "randn_like"),
        (REPARAM, reparam_variance_for_std, "sample std", "not exp(logvar)"),
        (REPARAM, reparam_detached, "gradients", "z must be computed from both"),
        (KL, kl_wrong_axis, "one KL per example", "not over the batch"),
        (KL, kl_no_minus_one, "q equals the prior", "the -1"),
        (KL, kl_no_half, "the factor 1/2", "factor 1/2"),
        (KL, kl_logvar_as_log_std, "the variance terms", "not exp(2 logvar)"),
        (KL, kl_plus_log_term, "the variance terms", "with a minus"),
        (KL, kl_reversed, "the variance terms", "not KL(p || q)"),
        (KL, kl_mean_over_dims, "the sum over dimensions, not the mean", ".sum(-1)"),
        (FREE_BITS, free_bits_batch_sum, "the mean over the batch", "batch SUM"),
        (FREE_BITS, free_bits_dims_mean, "the sum over dimensions", "MEAN over the latent"),
        (FREE_BITS, free_bits_clamp_max, "B = 4, all above", "clamps from above"),
        (FREE_BITS, free_bits_hinge, "B = 4, all above", "a hinge"),
        (FREE_BITS, free_bits_per_example, "not each example", "clamps each example's KL"),
        (ACTIVE, active_wrong_axis, "over the data (dim 0), not across", "not over dim 1"),
        (ACTIVE, active_magnitude, "constant dimensions are inactive", "not whose magnitude"),
        (ACTIVE, active_std, "0.0025 < 0.01", "not the standard deviation"),
        (ACTIVE, active_unbiased, "the divisor N, not N - 1", "correction=0"),
        (IWAE, iwae_mean_over_batch, "K = 1", "one value per example"),
        (IWAE, iwae_no_log_k, "equal log-weights", "subtract log K"),
        (IWAE, iwae_log2_k, "equal log-weights", "the natural log"),
        (IWAE, iwae_mean_of_logs, "two weights 1 and 3", "the ELBO"),
        (IWAE, iwae_max, "two weights 1 and 3", "the largest log-weight"),
        (IWAE, iwae_naive, "do not underflow", "underflows"),
    ],
)
def test_typical_mistakes_are_rejected(check, wrong, case, hint):
    fails(check, wrong, case, hint)


@pytest.mark.parametrize(
    ("check", "right", "n_cases"),
    [
        (REPARAM, reparam_right, 7),
        (KL, lambda mu, logvar: kl_normal_std_normal(mu, logvar), 8),
        (FREE_BITS, free_bits_kl, 8),
        (ACTIVE, lambda mu, thr: int((mu.var(dim=0, correction=0) > thr).sum()), 7),
        (IWAE, iwae_bound, 5),
    ],
)
def test_right_solutions_pass_every_case(check, right, n_cases, capsys):
    check(right)
    assert capsys.readouterr().out == f"{check.__name__}: all {n_cases} cases pass.\n"
