"""Checks of lecture 08 (likelihood-free learning and GANs): the optimal discriminator and the
Jensen-Shannon divergence, both computed from log-densities.

A wrong result is compared with the results of the typical mistakes (the densities swapped, the
density ratio or the logit instead of ``D*``, a missing 1/2, log base 2, a forgotten ``dx`` or
``log 2`` in the mixture, KL instead of JSD); when it matches one, the hint names that mistake."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from dgmlib.checks.common import call_student, compare, diagnose, passed
from dgmlib.gan import jsd, kl, optimal_discriminator

__all__ = ["check_jsd", "check_optimal_discriminator"]

DT = torch.float64


def _normal_log_pdf(x: Tensor, mean: float, std: float) -> Tensor:
    """``log N(x | mean, std^2)`` elementwise."""
    return -0.5 * ((x - mean) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)


Mistake = tuple[Tensor, str]  # what a typical mistake returns, and the hint that names it


def _discriminator_mistakes(log_pd: Tensor, log_pg: Tensor) -> list[Mistake]:
    """The results of the typical mistakes in ``D*``, with hints that name them."""
    logit = log_pd - log_pg
    return [
        (
            torch.sigmoid(-logit),
            "you return p_g / (p_d + p_g) = 1 - D*: the densities are swapped; D* is the "
            "probability of *real*, so it has the data density on top: p_d / (p_d + p_g).",
        ),
        (
            logit.exp(),
            "you return the density ratio p_d / p_g; D* divides by the sum p_d + p_g: "
            "D* = sigmoid(log p_d - log p_g), a number in [0, 1].",
        ),
        (
            logit,
            "you return the logit log p_d - log p_g; apply the sigmoid to it to get D*.",
        ),
        (
            torch.nn.functional.logsigmoid(logit),
            "you return log D* (logsigmoid); D* itself is sigmoid(log p_d - log p_g).",
        ),
    ]


def check_optimal_discriminator(fn: Callable[[Tensor, Tensor], Tensor]) -> None:
    """Check ``fn(log_pd, log_pg) -> D*`` (same shape): ``D* = p_d / (p_d + p_g)`` computed from
    log-densities, in ``[0, 1]``, without NaN when both densities underflow."""
    check = "check_optimal_discriminator"
    g = torch.Generator().manual_seed(8)
    log_pd = torch.randn(12, generator=g, dtype=DT) * 2.0 - 1.0
    log_pg = torch.randn(12, generator=g, dtype=DT) * 2.0 - 1.0
    formula = (
        "D*(x) = p_d(x) / (p_d(x) + p_g(x)): the data density on top, and it equals "
        "sigmoid(log p_d - log p_g)."
    )
    cases = [
        ("12 random points", (log_pd, log_pg), formula),
        (
            "equal densities: D* = 1/2 everywhere",
            (log_pd, log_pd.clone()),
            "where p_d = p_g the discriminator cannot tell the two apart: D* = 1/2, not 1 or 0.",
        ),
        (
            "tiny densities (log p about -1000): no NaN",
            (log_pd - 1000.0, log_pg - 1000.0),
            "exp(-1000) underflows to 0 and 0 / (0 + 0) is NaN; work with the difference of the "
            "log-densities: D* = sigmoid(log p_d - log p_g).",
        ),
        (
            "a batch of shape [3, 4] is kept",
            (log_pd.view(3, 4), log_pg.view(3, 4)),
            "compute D* elementwise and return the same shape as the inputs.",
        ),
    ]
    for case, (a, b), hint in cases:
        got = call_student(check, case, fn, a, b)
        compare(
            check,
            case,
            got,
            optimal_discriminator(a, b),
            what="D*",
            hint=diagnose(got, _discriminator_mistakes(a, b), hint),
            rtol=1e-6,
            atol=1e-9,
        )
    passed(check, len(cases))


def _jsd_mistakes(log_p: Tensor, log_q: Tensor, dx: float) -> list[Mistake]:
    """The results of the typical mistakes in the JSD, with hints that name them."""
    right = jsd(log_p, log_q, dx)
    return [
        (
            2 * right,
            "your result is twice the JSD: it is the *average* of the two KL terms, "
            "(KL(p || m) + KL(q || m)) / 2 (the factor 1/2 is missing).",
        ),
        (
            right / math.log(2.0),
            "your result is the JSD in bits (log base 2); the course works in nats: use the "
            "natural log (torch.log), not log2.",
        ),
        (
            right / dx,
            "your result is the JSD divided by dx: the rectangle rule multiplies the sum over "
            "the grid by the step dx.",
        ),
        (
            right - math.log(2.0),
            "your result is the JSD minus log 2: the mixture is m = (p + q) / 2, so "
            "log m = logaddexp(log p, log q) - log 2 (the - log 2 is missing).",
        ),
        (
            kl(log_p, log_q, dx),
            "your result is KL(p || q); the JSD compares each density with the mixture "
            "m = (p + q) / 2, not with the other density.",
        ),
    ]


def check_jsd(fn: Callable[[Tensor, Tensor, float], Tensor]) -> None:
    """Check ``fn(log_p, log_q, dx) -> JSD`` (nats, summed over the last dimension by the
    rectangle rule with step ``dx``): zero for equal densities, ``log 2`` for disjoint supports."""
    check = "check_jsd"
    x = torch.linspace(-10.0, 10.0, 2001, dtype=DT)
    dx = float(x[1] - x[0])
    log_a = _normal_log_pdf(x, -1.0, 1.0)
    log_b = _normal_log_pdf(x, 1.5, 0.7)
    left = torch.where(x < 0, torch.full_like(x, -math.log(10.0)), torch.full_like(x, -math.inf))
    right = torch.where(x >= 0, torch.full_like(x, -math.log(10.0)), torch.full_like(x, -math.inf))
    definition = (
        "JSD(p || q) = (KL(p || m) + KL(q || m)) / 2 with the mixture m = (p + q) / 2, in nats "
        "(natural log, not log2); integrate by sum(... ) * dx over the last dimension."
    )
    cases = [
        (
            "equal densities: JSD = 0",
            (log_a, log_a.clone(), dx),
            "with p = q the mixture m equals p and both KL terms vanish; " + definition,
        ),
        ("N(-1, 1) against N(1.5, 0.7^2)", (log_a, log_b, dx), definition),
        (
            "uniform densities on disjoint halves: JSD = log 2, no NaN",
            (left, right, dx),
            "where p = 0 the term p log(p / m) is 0, not 0 * (-inf) = NaN (use torch.where or "
            "torch.xlogy); with disjoint supports m = p / 2 on p's support, so JSD = log 2.",
        ),
        (
            "a batch of 2 pairs over the last dimension",
            (torch.stack([log_a, log_b]), torch.stack([log_b, log_a]), dx),
            "sum over the last dimension only and keep the batch dimension; JSD is symmetric.",
        ),
    ]
    for case, (p, q, step), hint in cases:
        got = call_student(check, case, fn, p, q, step)
        hint = diagnose(got, _jsd_mistakes(p, q, step), hint)
        compare(check, case, got, jsd(p, q, step), what="the JSD", hint=hint, rtol=1e-6, atol=1e-9)
    passed(check, len(cases))
