"""Checks of lecture 06 (learned priors and ELBO surgery): the log-density of a mixture-of-Gaussians
prior and of the aggregated posterior."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from dgmlib.checks.common import as_float64, call_student, compare, diagnose, passed

__all__ = ["check_aggregate_posterior_log_prob", "check_mixture_prior_log_prob"]

RTOL = 1e-6
ATOL = 1e-6
DT = torch.float64


def _gaussian_terms(
    z: Tensor, means: Tensor, logvars: Tensor, half: float, log_2pi: bool
) -> Tensor:
    """``[M, K]``: ``-half * sum_d (log 2 pi + logvar + (z - m)^2 / exp(logvar))``; the reference
    has ``half = 0.5`` and ``log_2pi = True``, the other values are typical mistakes."""
    sq = (z[:, None, :] - means[None]) ** 2 * torch.exp(-logvars[None])
    const = math.log(2 * math.pi) if log_2pi else 0.0
    return -half * (const + logvars[None] + sq).sum(-1)


def _gaussian_mistakes(
    z: Tensor, means: Tensor, logvars: Tensor, log_weights: Tensor
) -> list[tuple[Tensor, str]]:
    """What typical wrong log-densities of a mixture return (weights given as log-weights)."""

    def mix(terms: Tensor, dim: int = 1) -> Tensor:
        return torch.logsumexp(log_weights + terms, dim=dim)

    right = _gaussian_terms(z, means, logvars, 0.5, True)
    return [
        (
            mix(_gaussian_terms(z, means, logvars, 0.5, False)),
            "the Gaussian log-density contains the constant -1/2 log(2 pi) in every dimension: "
            "-D/2 log(2 pi) in all.",
        ),
        (
            mix(_gaussian_terms(z, means, logvars, 1.0, True)),
            "the factor 1/2 is missing: log N(z; m, diag(v)) = -1/2 sum_d (log(2 pi) + logvar_d "
            "+ (z_d - m_d)^2 / v_d).",
        ),
        (
            torch.logsumexp(log_weights + right, dim=0),
            "the logsumexp runs over the wrong axis: combine the K components (dim 1 of the "
            "[M, K] log-terms) and keep one value per point z_m.",
        ),
    ]


def _compare_diagnosed(
    check: str,
    fn: Callable[..., Tensor],
    rows: Sequence[tuple[str, tuple[Tensor, ...], Tensor, str, list[tuple[Tensor, str]]]],
    what: str,
) -> None:
    """For each row (case, args, expected, hint, mistakes), compare ``fn(*args)`` with expected;
    a result that reproduces one of the mistakes gets that mistake's hint."""
    for case, args, expected, hint, mistakes in rows:
        got = as_float64(check, case, call_student(check, case, fn, *args), what)
        hint = diagnose(got, mistakes, hint, rtol=RTOL, atol=ATOL)
        compare(check, case, got, expected, hint=hint, what=what, rtol=RTOL, atol=ATOL)


def _mixture_reference(z: Tensor, means: Tensor, logvars: Tensor, logits: Tensor) -> Tensor:
    """``log sum_k softmax(logits)_k N(z; means_k, diag(exp(logvars_k)))``, torch.distributions."""
    components = Independent(Normal(means, torch.exp(0.5 * logvars)), 1)
    return MixtureSameFamily(Categorical(logits=logits), components).log_prob(z)


def _mixture_mistakes(
    z: Tensor, means: Tensor, logvars: Tensor, logits: Tensor
) -> list[tuple[Tensor, str]]:
    """Typical wrong results of :func:`check_mixture_prior_log_prob` on one case."""
    return _gaussian_mistakes(z, means, logvars, torch.log_softmax(logits, 0))


def check_mixture_prior_log_prob(fn: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]) -> None:
    """Check ``fn(z [M, D], means [K, D], logvars [K, D], logits [K]) -> [M]``: the log-density of
    the mixture ``sum_k softmax(logits)_k N(z; means_k, diag(exp(logvars_k)))``, in nats."""
    check = "check_mixture_prior_log_prob"
    g = torch.Generator().manual_seed(6)
    z_r = torch.randn(6, 3, generator=g, dtype=DT) * 2.0
    means_r = torch.randn(4, 3, generator=g, dtype=DT) * 2.0
    logvars_r = torch.randn(4, 3, generator=g, dtype=DT) * 0.5
    logits_r = torch.randn(4, generator=g, dtype=DT)
    gaussian_hint = (
        "each component is a diagonal Gaussian: log N(z; m, diag(v)) = -0.5 * sum_d "
        "(log(2 pi) + logvar_d + (z_d - m_d)^2 / v_d) with v = exp(logvar) (a variance, not a "
        "standard deviation), summed over the D dimensions."
    )
    cases = [
        (
            "one component: a diagonal Gaussian",
            (z_r, means_r[:1], logvars_r[:1], torch.zeros(1, dtype=DT)),
            gaussian_hint,
        ),
        (
            "equal logits: the plain average of the component densities",
            (z_r, means_r, logvars_r, torch.zeros(4, dtype=DT)),
            "equal logits give weights softmax(logits)_k = 1/K, so log p(z) is the log of the "
            "mean of the densities (logsumexp over k minus log K): not their sum (use "
            "log_softmax(logits) as log-weights) and not the mean of the log-densities.",
        ),
        (
            "logits are not normalized (adding 5 to every logit changes nothing)",
            (z_r, means_r, logvars_r, logits_r + 5.0),
            "the weights are softmax(logits): use torch.log_softmax(logits, 0) as log-weights, "
            "not the logits themselves.",
        ),
        (
            "random mixture, K = 4 components, D = 3, M = 6 points",
            (z_r, means_r, logvars_r, logits_r),
            "log p(z) = logsumexp_k [log_softmax(logits)_k + log N(z; means_k, "
            "diag(exp(logvars_k)))]; broadcast z [M, 1, D] against means [1, K, D] and sum over D "
            "before the logsumexp.",
        ),
        (
            "points far from every component (|z| = 40) do not underflow",
            (torch.full((2, 3), 40.0, dtype=DT), means_r, logvars_r, logits_r),
            "exp() of log-densities around -1000 underflows to 0 and log(0) = -inf: combine the "
            "components with torch.logsumexp in log space.",
        ),
    ]
    rows = [
        (case, args, _mixture_reference(*args), hint, _mixture_mistakes(*args))
        for case, args, hint in cases
    ]
    _compare_diagnosed(check, fn, rows, "log p(z)")
    passed(check, len(cases))


def _aggregate_reference(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """``log (1/N) sum_n N(z; mu_n, diag(exp(logvar_n)))`` by broadcasting, float64."""
    log_n = Normal(mu[None], torch.exp(0.5 * logvar[None])).log_prob(z[:, None]).sum(-1)
    return torch.logsumexp(log_n, dim=1) - math.log(mu.shape[0])


def _aggregate_mistakes(z: Tensor, mu: Tensor, logvar: Tensor) -> list[tuple[Tensor, str]]:
    """Typical wrong results of :func:`check_aggregate_posterior_log_prob` on one case."""
    n = mu.shape[0]
    return _gaussian_mistakes(z, mu, logvar, torch.full((n,), -math.log(n), dtype=mu.dtype))


def check_aggregate_posterior_log_prob(fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> None:
    """Check ``fn(z [M, Z], mu [N, Z], logvar [N, Z]) -> [M]``: the aggregated posterior
    ``log q(z) = log (1/N) sum_n N(z; mu_n, diag(exp(logvar_n)))``, in nats."""
    check = "check_aggregate_posterior_log_prob"
    g = torch.Generator().manual_seed(7)
    mu_r = torch.randn(50, 3, generator=g, dtype=DT) * 2.0
    logvar_r = torch.randn(50, 3, generator=g, dtype=DT) * 0.5 - 1.0
    z_r = torch.randn(8, 3, generator=g, dtype=DT) * 2.0
    two_mu = torch.tensor([[-20.0, 0.0], [20.0, 0.0]], dtype=DT)
    cases = [
        (
            "N = 1: the posterior itself",
            (z_r, mu_r[:1], logvar_r[:1]),
            "log N(z; mu, diag(exp(logvar))) = -0.5 * sum_d (log(2 pi) + logvar_d + "
            "(z_d - mu_d)^2 / exp(logvar_d)), summed over the latent dimensions.",
        ),
        (
            "N = 5 identical posteriors: q(z) equals each of them",
            (z_r, mu_r[:1].expand(5, 3), logvar_r[:1].expand(5, 3)),
            "q(z) is the average of the N posteriors, not their sum: subtract log N after the "
            "logsumexp over n.",
        ),
        (
            "two posteriors 40 apart, z at the first mean: log q = log q(z|x_1) - log 2",
            (two_mu[:1], two_mu, torch.zeros(2, 2, dtype=DT)),
            "take the log of the mean of the densities (logsumexp over n minus log N); the mean "
            "of the log-densities is a lower bound (Jensen), far too low here.",
        ),
        (
            "random, N = 50 posteriors, Z = 3, M = 8 points",
            (z_r, mu_r, logvar_r),
            "broadcast z [M, 1, Z] against mu [1, N, Z], sum the Gaussian log-densities over Z, "
            "then logsumexp over n (dim 1) minus log N.",
        ),
        (
            "narrow posteriors, points far away (variance 0.01, distance 30): no underflow",
            (
                torch.full((3, 3), 30.0, dtype=DT),
                mu_r,
                torch.full((50, 3), math.log(0.01), dtype=DT),
            ),
            "the log-densities are around -1e5: exp() underflows to 0. Use torch.logsumexp.",
        ),
    ]
    rows = [
        (case, args, _aggregate_reference(*args), hint, _aggregate_mistakes(*args))
        for case, args, hint in cases
    ]
    _compare_diagnosed(check, fn, rows, "log q(z)")
    passed(check, len(cases))
