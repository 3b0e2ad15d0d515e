"""dgmlib.checks.gan (lecture 08): alternative reference solutions pass with one line,
and typical mistakes are rejected with the case that catches them (the one-line and stub
behaviour of every check is tested in tests/test_checks.py)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import fails

from dgmlib import checks
from dgmlib.gan import jsd, optimal_discriminator


def d_right(log_pd, log_pg):
    return torch.sigmoid(log_pd - log_pg)


def d_swapped(log_pd, log_pg):
    return torch.sigmoid(log_pg - log_pd)


def d_naive(log_pd, log_pg):
    return log_pd.exp() / (log_pd.exp() + log_pg.exp())


def d_ratio(log_pd, log_pg):
    return (log_pd - log_pg).exp()


def d_logit(log_pd, log_pg):
    return log_pd - log_pg


def d_log(log_pd, log_pg):
    return torch.nn.functional.logsigmoid(log_pd - log_pg)


def d_flat(log_pd, log_pg):
    return torch.sigmoid(log_pd - log_pg).reshape(-1)


def jsd_right(log_p, log_q, dx):
    log_m = torch.logaddexp(log_p, log_q) - math.log(2.0)
    tp = torch.xlogy(log_p.exp(), log_p.exp()) - log_p.exp() * log_m
    tq = torch.xlogy(log_q.exp(), log_q.exp()) - log_q.exp() * log_m
    return 0.5 * (tp + tq).sum(-1) * dx


def jsd_no_half(log_p, log_q, dx):
    return 2 * jsd(log_p, log_q, dx)


def jsd_bits(log_p, log_q, dx):
    return jsd(log_p, log_q, dx) / math.log(2.0)


def jsd_kl_instead(log_p, log_q, dx):
    return (log_p.exp() * (log_p - log_q)).sum(-1) * dx


def jsd_naive(log_p, log_q, dx):
    log_m = torch.logaddexp(log_p, log_q) - math.log(2.0)
    return 0.5 * (log_p.exp() * (log_p - log_m) + log_q.exp() * (log_q - log_m)).sum(-1) * dx


def jsd_no_dx(log_p, log_q, dx):
    return jsd(log_p, log_q, dx) / dx


def jsd_no_log2_in_m(log_p, log_q, dx):
    log_m = torch.logaddexp(log_p, log_q)  # log(p + q), not log((p + q) / 2)
    tp = torch.xlogy(log_p.exp(), log_p.exp()) - log_p.exp() * log_m
    tq = torch.xlogy(log_q.exp(), log_q.exp()) - log_q.exp() * log_m
    return 0.5 * (tp + tq).sum(-1) * dx


def jsd_sum_all(log_p, log_q, dx):
    return jsd(log_p, log_q, dx).sum()


@pytest.mark.parametrize(
    ("check", "fn", "n"),
    [
        (checks.check_optimal_discriminator, d_right, 4),
        (checks.check_optimal_discriminator, optimal_discriminator, 4),
        (checks.check_jsd, jsd_right, 4),
        (checks.check_jsd, jsd, 4),
    ],
)
def test_references_pass_with_one_line(check, fn, n, capsys):
    check(fn)
    assert capsys.readouterr().out == f"{check.__name__}: all {n} cases pass.\n"


@pytest.mark.parametrize(
    ("wrong", "case", "hint"),
    [
        (d_swapped, "12 random points", "the densities are swapped"),
        (d_swapped, "12 random points", "data density on top"),
        (d_ratio, "12 random points", "you return the density ratio"),
        (d_ratio, "12 random points", "sigmoid(log p_d - log p_g)"),
        (d_logit, "12 random points", "you return the logit"),
        (d_log, "12 random points", "you return log D*"),
        (d_naive, "tiny densities", "0 / (0 + 0) is NaN"),
        (d_flat, "a batch of shape", "same shape"),
    ],
)
def test_optimal_discriminator_check_rejects_typical_mistakes(wrong, case, hint):
    fails(checks.check_optimal_discriminator, wrong, case, hint)


@pytest.mark.parametrize(
    ("wrong", "case", "hint"),
    [
        (jsd_no_half, "N(-1, 1) against", "(KL(p || m) + KL(q || m)) / 2"),
        (jsd_no_half, "N(-1, 1) against", "the factor 1/2 is missing"),
        (jsd_bits, "N(-1, 1) against", "not log2"),
        (jsd_bits, "N(-1, 1) against", "in bits"),
        (jsd_kl_instead, "N(-1, 1) against", "mixture m"),
        (jsd_kl_instead, "N(-1, 1) against", "your result is KL(p || q)"),
        (jsd_no_dx, "N(-1, 1) against", "multiplies the sum over the grid by the step dx"),
        (jsd_no_log2_in_m, "equal densities", "the - log 2 is missing"),
        (jsd_naive, "uniform densities on disjoint halves", "torch.xlogy"),
        (jsd_sum_all, "a batch of 2 pairs", "last dimension only"),
    ],
)
def test_jsd_check_rejects_typical_mistakes(wrong, case, hint):
    fails(checks.check_jsd, wrong, case, hint)
