"""Checks of lectures 02 (reparametrization, Gaussian KL), 04 (free bits, active units) and 05
(the importance-weighted bound)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Normal, kl_divergence

from dgmlib.checks._common import call_student, compare, compare_cases, fail, passed

__all__ = [
    "check_active_units",
    "check_free_bits",
    "check_iwae_bound",
    "check_kl_standard_normal",
    "check_reparam_sample",
]

RTOL = 1e-5
ATOL = 1e-5


# --------------------------------------------------------------------------------------------
# Lecture 02: the reparametrization trick and the Gaussian KL
# --------------------------------------------------------------------------------------------


def check_reparam_sample(fn: Callable[[Tensor, Tensor], Tensor]) -> None:
    """Check ``fn(mu, logvar) -> z``, a reparametrized sample of ``N(mu, diag(exp(logvar)))``.

    Cases: the shape; the sample mean and standard deviation over many draws; gradients reaching
    ``mu`` and ``logvar`` with ``dz/dmu = 1`` and ``dz/dlogvar = (z - mu) / 2``.
    """
    check = "check_reparam_sample"
    with torch.random.fork_rng():  # seed the check without changing the caller's random state
        torch.manual_seed(0)
        _check_reparam_cases(check, fn)
    passed(check, 5)


def _check_reparam_cases(check: str, fn: Callable[[Tensor, Tensor], Tensor]) -> None:
    """The cases of :func:`check_reparam_sample`."""
    mu = torch.tensor([[0.0, 2.0, -1.0]])
    logvar = torch.tensor([[0.0, math.log(0.25), math.log(4.0)]])

    z = call_student(check, "shape", fn, mu, logvar)
    if not isinstance(z, Tensor) or z.shape != mu.shape:
        got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
        fail(
            check,
            "shape",
            f"expected a tensor of shape {tuple(mu.shape)}, got {got}.",
            "z has the shape of mu: one sample per example and latent dimension.",
        )

    n = 20000
    big_mu, big_logvar = mu.expand(n, 3).contiguous(), logvar.expand(n, 3).contiguous()
    zs = call_student(check, "moments", fn, big_mu, big_logvar).detach()
    compare(
        check,
        "sample mean over 20000 draws",
        zs.mean(0),
        mu[0],
        what="the sample mean",
        hint="z = mu + sigma * eps with eps ~ N(0, I); the mean of z is mu.",
        rtol=0.0,
        atol=0.05,
    )
    compare(
        check,
        "sample std over 20000 draws",
        zs.std(0),
        torch.exp(0.5 * logvar[0]),
        what="the sample std",
        hint="sigma = exp(logvar / 2), not exp(logvar) and not logvar itself.",
        rtol=0.0,
        atol=0.05,
    )

    m = mu.clone().requires_grad_(True)
    lv = logvar.clone().requires_grad_(True)
    z = call_student(check, "gradients", fn, m, lv)
    if not isinstance(z, Tensor) or not z.requires_grad:
        fail(
            check,
            "gradients",
            "z does not depend differentiably on mu and logvar.",
            "draw eps separately (torch.randn_like) and compute z from mu and logvar with "
            "torch operations; do not sample z directly (e.g. torch.normal) or detach it.",
        )
    g_mu, g_lv = torch.autograd.grad(z.sum(), (m, lv), allow_unused=True)
    if g_mu is None or g_lv is None:
        fail(
            check,
            "gradients",
            f"no gradient reaches {'mu' if g_mu is None else 'logvar'}.",
            "z must be computed from both.",
        )
    compare(
        check,
        "dz/dmu",
        g_mu,
        torch.ones_like(mu),
        what="the gradient",
        hint="z = mu + sigma * eps has dz/dmu = 1.",
        rtol=RTOL,
        atol=ATOL,
    )
    compare(
        check,
        "dz/dlogvar",
        g_lv,
        0.5 * (z.detach() - mu),
        what="the gradient",
        hint="with sigma = exp(logvar / 2), dz/dlogvar = sigma * eps / 2 = (z - mu) / 2.",
        rtol=RTOL,
        atol=ATOL,
    )


def check_kl_standard_normal(fn: Callable[[Tensor, Tensor], Tensor]) -> None:
    """Check ``fn(mu, logvar) -> [B]``: ``KL(N(mu, diag exp(logvar)) || N(0, I))`` summed over the
    latent dimension, per example, in nats."""
    check = "check_kl_standard_normal"
    g = torch.Generator().manual_seed(1)
    mu_r, lv_r = (
        torch.randn(4, 5, generator=g, dtype=torch.float64),
        torch.randn(4, 5, generator=g, dtype=torch.float64),
    )
    cases = [
        ("q equals the prior (KL = 0)", torch.zeros(2, 3), torch.zeros(2, 3)),
        (
            "shifted mean, unit variance (KL = |mu|^2 / 2)",
            torch.tensor([[1.0, 2.0]]),
            torch.zeros(1, 2),
        ),
        ("unit mean, variance e (KL = (e - 2) / 2 per dim)", torch.zeros(1, 2), torch.ones(1, 2)),
        ("random mu and logvar, 4 examples x 5 dims", mu_r, lv_r),
    ]
    hint = (
        "KL = 0.5 * sum_j (exp(logvar_j) + mu_j^2 - 1 - logvar_j), summed over the last "
        "dimension only (one value per example)."
    )
    rows = [(case, (mu, lv), _kl_to_standard_normal(mu, lv), hint) for case, mu, lv in cases]
    compare_cases(check, fn, rows, what="the KL", rtol=RTOL, atol=ATOL)
    passed(check, len(cases))


def _kl_to_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """The reference ``KL(N(mu, diag e^logvar) || N(0, I))``, ``[B]``, from torch.distributions."""
    q = Normal(mu, torch.exp(0.5 * logvar))
    return kl_divergence(q, Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(-1)


# --------------------------------------------------------------------------------------------
# Lecture 04: free bits and active units
# --------------------------------------------------------------------------------------------


def check_free_bits(fn: Callable[[Tensor, float], Tensor]) -> None:
    """Check ``fn(kl_per_dim [B, Z], free_bits) -> scalar``: ``sum_j max(lambda, mean_b KL_bj)``,
    with the clamp applied to the batch-averaged KL of each dimension."""
    check = "check_free_bits"
    hint = (
        "average the KL over the batch first (dim 0), then clamp each dimension at free_bits "
        "(torch.clamp(..., min=free_bits)), then sum over dimensions."
    )
    cases = [
        ("all dimensions above the threshold", torch.tensor([[1.0, 2.0], [3.0, 4.0]]), 0.5, 5.0),
        ("all dimensions below the threshold", torch.tensor([[0.1, 0.2], [0.3, 0.0]]), 0.5, 1.0),
        ("mixed", torch.tensor([[0.1, 2.0, 0.0], [0.1, 4.0, 0.0]]), 0.5, 4.0),
        # per-example clamping would give mean(max(0.5, [0, 2])) = 1.25, not max(0.5, 1) = 1
        ("clamp the batch mean, not each example", torch.tensor([[0.0], [2.0]]), 0.5, 1.0),
        ("free_bits = 0 gives the mean KL", torch.tensor([[0.2, 0.3], [0.4, 0.1]]), 0.0, 0.5),
    ]
    rows = [(case, (kl, lam), expected, hint) for case, kl, lam, expected in cases]
    compare_cases(check, fn, rows, what="the free-bits KL", rtol=RTOL, atol=ATOL)

    case = "gradient: zero below the threshold, 1/B above"
    kl = torch.tensor([[0.1, 2.0], [0.3, 4.0]], requires_grad=True)
    out = call_student(check, case, fn, kl, 0.5)
    if not isinstance(out, Tensor) or not out.requires_grad:
        fail(
            check,
            case,
            "the result does not depend differentiably on kl_per_dim.",
            "use torch operations (torch.clamp), not Python max() or .item().",
        )
    (grad,) = torch.autograd.grad(out, kl)
    compare(
        check,
        case,
        grad,
        torch.tensor([[0.0, 0.5], [0.0, 0.5]]),
        what="the gradient",
        hint="dimensions whose batch-mean KL is below free_bits must get no gradient.",
        rtol=RTOL,
        atol=ATOL,
    )
    passed(check, len(cases) + 1)


def check_active_units(fn: Callable[..., Any]) -> None:
    """Check ``fn(mu [N, Z], threshold) -> count`` (an int, or a tuple whose first item is the
    count): the number of dimensions whose posterior mean has variance over the data above
    ``threshold``."""
    check = "check_active_units"
    g = torch.Generator().manual_seed(2)
    n = 1000
    base = torch.randn(n, 4, generator=g)
    cases = [
        ("all dimensions vary", base, 0.01, 4),
        (
            "constant dimensions are inactive",
            torch.cat([base[:, :2], torch.full((n, 3), 0.7)], 1),
            0.01,
            2,
        ),
        (
            "variance 0.0025 < 0.01 is inactive, 0.04 active",
            torch.stack([0.05 * base[:, 0], 0.2 * base[:, 1], base[:, 2]], 1),
            0.01,
            2,
        ),
        ("a large constant offset does not make a unit active", 5.0 + 0.01 * base, 0.01, 0),
        ("a higher threshold", torch.stack([0.5 * base[:, 0], 2.0 * base[:, 1]], 1), 1.0, 1),
    ]
    for case, mu, thr, expected in cases:
        got = call_student(check, case, fn, mu, thr)
        compare(
            check,
            case,
            got[0] if isinstance(got, tuple) else got,
            expected,
            what="the number of active units",
            hint="compute the variance of each column of mu over the data (dim 0) and count the "
            "columns above the threshold; the posterior variance exp(logvar) is not used.",
            rtol=0.0,
            atol=0.0,
        )
    passed(check, len(cases))


# --------------------------------------------------------------------------------------------
# Lecture 05: the importance-weighted bound
# --------------------------------------------------------------------------------------------


def check_iwae_bound(fn: Callable[[Tensor], Tensor]) -> None:
    """Check ``fn(log_w [K, B]) -> [B]``: ``log (1/K) sum_k exp(log_w_k)``, computed stably."""
    check = "check_iwae_bound"
    g = torch.Generator().manual_seed(3)
    rand = torch.randn(7, 3, generator=g, dtype=torch.float64) * 3.0
    cases = [
        (
            "K = 1 gives the single log-weight (the ELBO sample)",
            torch.tensor([[-1.5, 2.0]]),
            torch.tensor([-1.5, 2.0]),
        ),
        ("equal log-weights give that value", torch.full((5, 2), -3.0), torch.full((2,), -3.0)),
        (
            "two weights 1 and 3 give log 2",
            torch.log(torch.tensor([[1.0], [3.0]])),
            torch.tensor([math.log(2.0)]),
        ),
        ("random log-weights, K = 7, B = 3", rand, torch.logsumexp(rand, 0) - math.log(7)),
        (
            "very negative log-weights (-1000) do not underflow",
            torch.tensor([[-1000.0], [-1001.0]], dtype=torch.float64),
            torch.tensor([-1000.0 + math.log((1 + math.exp(-1.0)) / 2)], dtype=torch.float64),
        ),
    ]
    hint = (
        "average the weights over dim 0 (the K samples) in log space: "
        "torch.logsumexp(log_w, dim=0) - log(K); exp() of -1000 underflows to 0."
    )
    rows = [(case, (log_w,), expected, hint) for case, log_w, expected in cases]
    compare_cases(check, fn, rows, what="the bound", rtol=RTOL, atol=ATOL)
    passed(check, len(cases))
