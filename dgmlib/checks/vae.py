"""Checks of lectures 02 (reparametrization, Gaussian KL), 04 (free bits, active units) and 05
(the importance-weighted bound)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Normal, kl_divergence

from dgmlib.checks.common import call_student, compare, compare_cases, fail, passed

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

    Cases: the shape; a fresh noise for every example and latent dimension (one ``eps`` shared
    by the batch, or by the dimensions, is caught); the sample mean and standard deviation over
    many draws; gradients reaching ``mu`` and ``logvar`` with ``dz/dmu = 1`` and
    ``dz/dlogvar = (z - mu) / 2``.
    """
    check = "check_reparam_sample"
    with torch.random.fork_rng():  # seed the check without changing the caller's random state
        torch.manual_seed(0)
        _check_reparam_cases(check, fn)
    passed(check, 7)


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
    _check_fresh_noise(check, zs, big_mu, big_logvar)
    compare(
        check,
        "sample mean over 20000 draws",
        zs.mean(0),
        mu[0],
        what="the sample mean",
        hint="z = mu + sigma * eps with eps ~ N(0, I) (torch.randn_like, not torch.rand_like, "
        "which is uniform on [0, 1) and has mean 1/2); the mean of z is mu.",
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


def _check_fresh_noise(check: str, zs: Tensor, mu: Tensor, logvar: Tensor) -> None:
    """The cases of a fresh ``eps`` per example and per dimension, on ``zs`` ``[n, Z]`` drawn at
    ``mu``, ``logvar`` (rows equal)."""
    eps = (zs - mu) / torch.exp(0.5 * logvar)  # the noise the student's function used
    hint = (
        "draw eps with the shape of mu, eps = torch.randn_like(mu): one independent N(0, 1) "
        "number for every example and every latent dimension."
    )
    if eps.std(0).max().item() < 1e-3:  # every row got the same noise
        fail(
            check,
            "a fresh eps for every example",
            f"all {len(eps)} rows of z are the same draw: the noise is shared by the batch.",
            hint,
        )
    # n = 20000 independent draws give correlations of standard error 1/sqrt(n) = 0.007;
    # 0.1 is 14 standard errors, and noise shared by two dimensions gives 1
    corr = torch.corrcoef(eps.T.double())
    off_diagonal = (corr - torch.diag(torch.diagonal(corr))).abs().max().item()
    if off_diagonal > 0.1:
        fail(
            check,
            "a fresh eps for every latent dimension",
            f"the noise of two latent dimensions is correlated (correlation {off_diagonal:.2f} "
            "over 20000 draws, expected about 0): one eps is shared by the dimensions.",
            hint,
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
    full = (
        "KL = 0.5 * sum_j (exp(logvar_j) + mu_j^2 - 1 - logvar_j), summed over the last "
        "dimension only (one value per example)."
    )
    shape_case = "one KL per example: shape [B] from mu of shape [B, Z]"
    mu_s = torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.0, -0.5]])
    got = call_student(check, shape_case, fn, mu_s, torch.zeros_like(mu_s))
    got_shape = tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__
    if got_shape != (2,):
        fail(
            check,
            shape_case,
            f"the KL has shape {got_shape}, expected (2,).",
            "sum over the latent dimension (dim=-1) only: not over the batch (dim 0), and not "
            "over everything.",
        )
    cases = [
        (
            "q equals the prior (KL = 0)",
            torch.zeros(2, 3),
            torch.zeros(2, 3),
            "the KL vanishes when q is the prior: each dimension has the -1 in "
            "exp(logvar) + mu^2 - 1 - logvar. " + full,
        ),
        (
            "one dimension, mean 2, unit variance (KL = mu^2 / 2 = 2: the factor 1/2)",
            torch.tensor([[2.0]]),
            torch.zeros(1, 1),
            "the KL of a unit-variance Gaussian shifted by mu is mu^2 / 2: the whole sum has "
            "the factor 1/2. " + full,
        ),
        (
            "one dimension, zero mean, variance e (KL = (e - 2) / 2: the variance terms)",
            torch.zeros(1, 1),
            torch.ones(1, 1),
            "the variance terms of each dimension are exp(logvar) - 1 - logvar: logvar is "
            "log sigma^2, so sigma^2 = exp(logvar) (not exp(2 logvar)) and the log term enters "
            "with a minus; and the KL is KL(q || p), not KL(p || q) (that one has 1 / sigma^2).",
        ),
        (
            "three dimensions add up (the sum over dimensions, not the mean)",
            torch.ones(1, 3),
            torch.zeros(1, 3),
            "the KL of a diagonal Gaussian is the sum of the KLs of its dimensions: "
            "use .sum(-1), not .mean(-1). " + full,
        ),
        (
            "shifted mean, unit variance (KL = |mu|^2 / 2)",
            torch.tensor([[1.0, 2.0]]),
            torch.zeros(1, 2),
            full,
        ),
        (
            "zero mean, variance e (KL = (e - 2) / 2 per dim)",
            torch.zeros(1, 2),
            torch.ones(1, 2),
            full,
        ),
        ("random mu and logvar, 4 examples x 5 dims", mu_r, lv_r, full),
    ]
    rows = [(case, (mu, lv), _kl_to_standard_normal(mu, lv), hint) for case, mu, lv, hint in cases]
    compare_cases(check, fn, rows, what="the KL", rtol=RTOL, atol=ATOL)
    passed(check, len(cases) + 1)


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
    cases = [
        (
            "one dimension, B = 4, all above the threshold (the mean over the batch)",
            torch.tensor([[1.0], [2.0], [3.0], [6.0]]),
            0.5,
            3.0,
        ),
        (
            "B = 1, Z = 3, all above the threshold (the sum over dimensions)",
            torch.tensor([[1.0, 2.0, 6.0]]),
            0.5,
            9.0,
        ),
        ("all dimensions above the threshold", torch.tensor([[1.0, 2.0], [3.0, 4.0]]), 0.5, 5.0),
        ("all dimensions below the threshold", torch.tensor([[0.1, 0.2], [0.3, 0.0]]), 0.5, 1.0),
        ("mixed", torch.tensor([[0.1, 2.0, 0.0], [0.1, 4.0, 0.0]]), 0.5, 4.0),
        # per-example clamping would give mean(max(0.5, [0, 2])) = 1.25, not max(0.5, 1) = 1
        ("clamp the batch mean, not each example", torch.tensor([[0.0], [2.0]]), 0.5, 1.0),
        ("free_bits = 0 gives the mean KL", torch.tensor([[0.2, 0.3], [0.4, 0.1]]), 0.0, 0.5),
    ]
    for case, kl, lam, expected in cases:
        got = call_student(check, case, fn, kl, lam)
        compare(
            check,
            case,
            got,
            expected,
            what="the free-bits KL",
            hint=_free_bits_hint(got, kl, lam),
            rtol=RTOL,
            atol=ATOL,
        )

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


def _free_bits_hint(got: Any, kl: Tensor, lam: float) -> str:
    """The hint for a wrong free-bits term ``got``: the typical mistake whose value it is, if any
    (checked in order), followed by the recipe."""
    recipe = (
        "average the KL over the batch first (dim 0), then clamp each dimension at free_bits "
        "(torch.clamp(..., min=free_bits)), then sum over dimensions."
    )
    batch_mean = kl.mean(0)
    mistakes = [
        (
            torch.clamp(batch_mean, min=lam).sum(),  # right: nothing to diagnose
            "",
        ),
        (
            torch.clamp(kl.sum(0), min=lam).sum(),
            "your value is that of the batch SUM of the KL: average it over the batch, .mean(0).",
        ),
        (
            torch.clamp(batch_mean, min=lam).mean(),
            "your value is the MEAN over the latent dimensions: the term adds them, .sum().",
        ),
        (
            torch.clamp(batch_mean, max=lam).sum(),
            "your value clamps from above: free bits charges at least free_bits nats per "
            "dimension, torch.clamp(..., min=free_bits), not max=.",
        ),
        (
            torch.clamp(batch_mean - lam, min=0.0).sum(),
            "your value is max(0, KL - free_bits), a hinge: the term is max(free_bits, KL), "
            "which equals the plain KL above the threshold.",
        ),
        (
            torch.clamp(kl, min=lam).mean(0).sum(),
            "your value clamps each example's KL before averaging: clamp the batch mean.",
        ),
    ]
    try:
        value = float(got)
    except (TypeError, ValueError, RuntimeError):  # not a number: the recipe alone
        return recipe
    for wrong, why in mistakes:
        if math.isclose(value, float(wrong), rel_tol=RTOL, abs_tol=ATOL):
            return f"{why} {recipe}" if why else recipe
    return recipe


def check_active_units(fn: Callable[..., Any]) -> None:
    """Check ``fn(mu [N, Z], threshold) -> count`` (an int, or a tuple whose first item is the
    count): the number of dimensions whose posterior mean has variance over the data above
    ``threshold``."""
    check = "check_active_units"
    g = torch.Generator().manual_seed(2)
    n = 1000
    base = torch.randn(n, 4, generator=g)
    hint = (
        "compute the variance of each column of mu over the data (dim 0) and count the "
        "columns above the threshold; the posterior variance exp(logvar) is not used."
    )
    # every column equal to one varying column: Var over the data is 1, across a row it is 0
    same_columns = base[:50, :1].expand(50, 3).contiguous()
    cases = [
        (
            "the variance over the data (dim 0), not across the dimensions",
            same_columns,
            0.01,
            3,
            "each latent dimension is a column of mu: take the variance over the N rows, "
            "mu.var(dim=0, ...), not over dim 1. " + hint,
        ),
        ("all dimensions vary", base, 0.01, 4, hint),
        (
            "constant dimensions are inactive",
            torch.cat([base[:, :2], torch.full((n, 3), 0.7)], 1),
            0.01,
            2,
            "a unit is active when its mean varies with the input, not when it is large: "
            "count the columns whose variance, not whose magnitude, exceeds the threshold. " + hint,
        ),
        (
            "variance 0.0025 < 0.01 is inactive, 0.04 active",
            torch.stack([0.05 * base[:, 0], 0.2 * base[:, 1], base[:, 2]], 1),
            0.01,
            2,
            "compare the variance with the threshold, not the standard deviation "
            "(0.05 > 0.01, but 0.05^2 = 0.0025 < 0.01). " + hint,
        ),
        (
            "the divisor N, not N - 1 (rows 0 and 1: variance 1/4 < 0.3)",
            torch.tensor([[0.0, 0.0], [1.0, 0.0]]),
            0.3,
            0,
            "the variance over the data has the divisor N: mu.var(dim=0, correction=0); "
            "torch.var divides by N - 1 by default (1/2 here). " + hint,
        ),
        ("a large constant offset does not make a unit active", 5.0 + 0.01 * base, 0.01, 0, hint),
        (
            "a higher threshold",
            torch.stack([0.5 * base[:, 0], 2.0 * base[:, 1]], 1),
            1.0,
            1,
            hint,
        ),
    ]
    for case, mu, thr, expected, case_hint in cases:
        got = call_student(check, case, fn, mu, thr)
        compare(
            check,
            case,
            got[0] if isinstance(got, tuple) else got,
            expected,
            what="the number of active units",
            hint=case_hint,
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
    hint = (
        "average the weights over dim 0 (the K samples) in log space: "
        "torch.logsumexp(log_w, dim=0) - log(K); exp() of -1000 underflows to 0."
    )
    cases = [
        (
            "K = 1 gives the single log-weight (the ELBO sample)",
            torch.tensor([[-1.5, 2.0]]),
            torch.tensor([-1.5, 2.0]),
            "dim 0 holds the K samples and dim 1 the B examples: reduce over dim 0 only, "
            "one value per example. " + hint,
        ),
        (
            "equal log-weights give that value",
            torch.full((5, 2), -3.0),
            torch.full((2,), -3.0),
            "the bound averages the K weights: subtract log K (the natural log, math.log(K)) "
            "from the logsumexp, which alone is the log of their sum. " + hint,
        ),
        (
            "two weights 1 and 3 give log 2",
            torch.log(torch.tensor([[1.0], [3.0]])),
            torch.tensor([math.log(2.0)]),
            "average the weights, then take the log: the mean of the log-weights is the ELBO "
            "estimate (log 3 / 2 here), and the largest log-weight is not the bound either. "
            + hint,
        ),
        ("random log-weights, K = 7, B = 3", rand, torch.logsumexp(rand, 0) - math.log(7), hint),
        (
            "very negative log-weights (-1000) do not underflow",
            torch.tensor([[-1000.0], [-1001.0]], dtype=torch.float64),
            torch.tensor([-1000.0 + math.log((1 + math.exp(-1.0)) / 2)], dtype=torch.float64),
            hint,
        ),
    ]
    rows = [(case, (log_w,), expected, h) for case, log_w, expected, h in cases]
    compare_cases(check, fn, rows, what="the bound", rtol=RTOL, atol=ATOL)
    passed(check, len(cases))
