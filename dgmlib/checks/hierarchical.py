"""Checks of lecture 11 (hierarchical VAEs): the per-layer KL terms of a top-down model, the
ladder's precision-weighted merge, and the backward message of a binary hierarchy.

Each check compares the student's function with a float64 reference on fixed cases; when a
result is wrong it also tries the typical mistakes of the exercise and, if the result matches
one of them, names that mistake in the hint.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Normal, kl_divergence

from dgmlib.checks.common import as_float64, call_student, compare, fail, matches, passed

__all__ = ["check_backward_message", "check_ladder_merge", "check_topdown_kls"]

RTOL = 1e-5
ATOL = 1e-5
DT = torch.float64

Mistakes = Sequence[tuple[str, Callable[..., Any]]]


def _diagnose(got: Any, args: tuple, mistakes: Mistakes, default: str) -> str:
    """The descriptions of the typical mistakes whose results match ``got`` (joined by "or":
    on a simple case two mistakes can give the same numbers), else ``default``."""
    matched = []
    for text, wrong in mistakes:
        try:
            value = wrong(*args)
        except Exception:  # a mistake that cannot even be evaluated on this case
            continue
        if matches(got, value, RTOL, ATOL):
            matched.append(text)
    if matched:
        return f"your result is what {' or '.join(matched)} gives. {default}"
    return default


def _compare_pairs(
    check: str,
    fn: Callable[..., Any],
    cases: Sequence[tuple[str, tuple[Tensor, ...]]],
    what: tuple[str, str],
    reference: Callable[..., tuple[Tensor, Tensor]],
    mistakes: Mistakes,
    default: str,
) -> None:
    """For each case ``(name, args)``: ``fn(*args)`` must return the pair named ``what`` that
    ``reference(*args)`` returns; a wrong pair gets the hint of the mistake it reproduces."""
    for case, args in cases:
        got = _as_pair(check, case, call_student(check, case, fn, *args), f"({', '.join(what)})")
        hint = _diagnose(got, args, mistakes, default)
        for name, value, expected in zip(what, got, reference(*args), strict=True):
            compare(check, case, value, expected, what=name, hint=hint, rtol=RTOL, atol=ATOL)


def _as_pair(check: str, case: str, got: Any, what: str) -> tuple[Any, Any]:
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        fail(
            check,
            case,
            f"expected a pair {what}, got {type(got).__name__}.",
            f"return the two tensors as a tuple: {what}.",
        )
    return got[0], got[1]


# --------------------------------------------------------------------------------------------
# The per-layer KL terms of a top-down (ladder) model
# --------------------------------------------------------------------------------------------


def _kl(mq: Tensor, lq: Tensor, mp: Tensor, lp: Tensor) -> Tensor:
    return kl_divergence(Normal(mq, (0.5 * lq).exp()), Normal(mp, (0.5 * lp).exp())).sum(-1)


def _topdown_reference(m2: Tensor, l2: Tensor, m1: Tensor, l1: Tensor, mp: Tensor, lp: Tensor):
    return _kl(m2, l2, torch.zeros_like(m2), torch.zeros_like(l2)), _kl(m1, l1, mp, lp)


_TOPDOWN_MISTAKES: Mistakes = [
    (
        "comparing layer 1 with N(0, I) instead of the prior p(z1 | z2)",
        lambda m2, l2, m1, l1, mp, lp: (
            _kl(m2, l2, 0 * m2, 0 * l2),
            _kl(m1, l1, 0 * m1, 0 * l1),
        ),
    ),
    (
        "the reversed divergence KL(p || q)",
        lambda m2, l2, m1, l1, mp, lp: (_kl(0 * m2, 0 * l2, m2, l2), _kl(mp, lp, m1, l1)),
    ),
    (
        "reading the log-variance as a log standard deviation",
        lambda m2, l2, m1, l1, mp, lp: (
            _kl(m2, 2 * l2, 0 * m2, 0 * l2),
            _kl(m1, 2 * l1, mp, 2 * lp),
        ),
    ),
    (
        "swapping the two layers' terms",
        lambda *a: _topdown_reference(*a)[::-1],
    ),
    (
        "forgetting the factor 1/2 (twice the KL)",
        lambda *a: tuple(2 * k for k in _topdown_reference(*a)),
    ),
    (
        "forgetting the -1 in each dimension (the KL plus half the number of dimensions)",
        lambda m2, l2, m1, l1, mp, lp: (
            _kl(m2, l2, 0 * m2, 0 * l2) + 0.5 * m2.shape[-1],
            _kl(m1, l1, mp, lp) + 0.5 * m1.shape[-1],
        ),
    ),
    (
        "averaging over the latent dimensions instead of summing",
        lambda m2, l2, m1, l1, mp, lp: (
            _kl(m2, l2, 0 * m2, 0 * l2) / m2.shape[-1],
            _kl(m1, l1, mp, lp) / m1.shape[-1],
        ),
    ),
    (
        "summing over the batch as well (the result is one KL per example, [B])",
        lambda *a: tuple(k.sum() for k in _topdown_reference(*a)),
    ),
]


def check_topdown_kls(fn: Callable[..., Any]) -> None:
    """Check ``fn(mu_q2, logvar_q2, mu_q1, logvar_q1, mu_p1, logvar_p1) -> (kl_z2, kl_z1)``:
    ``KL(q(z2 | x) || N(0, I))`` and ``KL(q(z1 | z2, x) || p(z1 | z2))`` for diagonal Gaussians
    given by means and log-variances ``[B, Z]``, each summed over the latent dimensions: ``[B]``
    nats."""
    check = "check_topdown_kls"
    g = torch.Generator().manual_seed(21)

    def r(*shape: int, scale: float = 1.0) -> Tensor:
        return scale * torch.randn(shape, generator=g, dtype=DT)

    mp, lp = r(2, 3), r(2, 3, scale=0.5)
    cases = [
        (
            "q equals the prior in both layers (both KLs are 0)",
            (torch.zeros(2, 2, dtype=DT), torch.zeros(2, 2, dtype=DT), mp, lp, mp, lp),
        ),
        (
            "layer 1: q(z1|z2,x) = N(0, I) against a shifted prior p(z1|z2)",
            (
                r(1, 2),
                r(1, 2, scale=0.3),
                torch.zeros(1, 3, dtype=DT),
                torch.zeros(1, 3, dtype=DT),
                torch.ones(1, 3, dtype=DT),
                torch.ones(1, 3, dtype=DT),
            ),
        ),
        (
            "a narrow q against a wide prior (the direction of the KL matters)",
            (
                torch.zeros(1, 2, dtype=DT),
                torch.full((1, 2), -2.0, dtype=DT),
                torch.zeros(1, 3, dtype=DT),
                torch.full((1, 3), -2.0, dtype=DT),
                torch.zeros(1, 3, dtype=DT),
                torch.ones(1, 3, dtype=DT),
            ),
        ),
        (
            "random parameters, 4 examples, z2 of 2 and z1 of 3 dimensions",
            (r(4, 2), r(4, 2, scale=0.5), r(4, 3), r(4, 3, scale=0.5), r(4, 3), r(4, 3)),
        ),
    ]
    default = (
        "kl_z2 = KL(N(mu_q2, e^logvar_q2) || N(0, I)); kl_z1 = KL(N(mu_q1, e^logvar_q1) || "
        "N(mu_p1, e^logvar_p1)), the prior of layer 1 being p(z1|z2); per dimension "
        "KL = 0.5 (log var_p - log var_q + (var_q + (mu_q - mu_p)^2) / var_p - 1), summed over "
        "the last dimension only."
    )
    what = ("kl_z2", "kl_z1")
    _compare_pairs(check, fn, cases, what, _topdown_reference, _TOPDOWN_MISTAKES, default)
    passed(check, len(cases))


# --------------------------------------------------------------------------------------------
# The ladder's precision-weighted merge
# --------------------------------------------------------------------------------------------


def _merge_reference(ma: Tensor, la: Tensor, mb: Tensor, lb: Tensor) -> tuple[Tensor, Tensor]:
    pa, pb = (-la).exp(), (-lb).exp()
    var = 1.0 / (pa + pb)
    return var * (ma * pa + mb * pb), var.log()


_MERGE_MISTAKES: Mistakes = [
    (
        "adding the variances instead of the precisions",
        lambda ma, la, mb, lb: (
            _merge_reference(ma, la, mb, lb)[0],
            (la.exp() + lb.exp()).log(),
        ),
    ),
    (
        "weighting the means by the variances instead of the precisions",
        lambda ma, la, mb, lb: (
            (ma * la.exp() + mb * lb.exp()) / (la.exp() + lb.exp()),
            _merge_reference(ma, la, mb, lb)[1],
        ),
    ),
    (
        "averaging the means without weights",
        lambda ma, la, mb, lb: (0.5 * (ma + mb), _merge_reference(ma, la, mb, lb)[1]),
    ),
    (
        "returning the variance instead of the log-variance",
        lambda ma, la, mb, lb: (
            _merge_reference(ma, la, mb, lb)[0],
            _merge_reference(ma, la, mb, lb)[1].exp(),
        ),
    ),
    (
        "returning the log-precision log(1/var_a + 1/var_b) instead of the log-variance (a sign)",
        lambda ma, la, mb, lb: (
            _merge_reference(ma, la, mb, lb)[0],
            -_merge_reference(ma, la, mb, lb)[1],
        ),
    ),
    (
        "adding the log-variances (multiplying the variances)",
        lambda ma, la, mb, lb: (_merge_reference(ma, la, mb, lb)[0], la + lb),
    ),
    (
        "not dividing the precision-weighted sum mu_a / var_a + mu_b / var_b by the total "
        "precision",
        lambda ma, la, mb, lb: (
            ma * (-la).exp() + mb * (-lb).exp(),
            _merge_reference(ma, la, mb, lb)[1],
        ),
    ),
]


def check_ladder_merge(fn: Callable[..., Any]) -> None:
    """Check ``fn(mu_a, logvar_a, mu_b, logvar_b) -> (mu, logvar)``: the Gaussian proportional
    to ``N(z; mu_a, var_a) N(z; mu_b, var_b)`` per dimension (precisions add, the mean is the
    precision-weighted mean), all tensors ``[B, Z]``."""
    check = "check_ladder_merge"
    g = torch.Generator().manual_seed(22)
    z = torch.zeros(1, 2, dtype=DT)
    cases = [
        (
            "equal variances: the mean is the average and the variance halves",
            (torch.tensor([[1.0, -2.0]], dtype=DT), z, torch.tensor([[3.0, 2.0]], dtype=DT), z),
        ),
        (
            "a precise message (variance 0.01) and a vague prior (variance 100)",
            (
                torch.tensor([[2.0, -1.0]], dtype=DT),
                torch.full((1, 2), math.log(0.01), dtype=DT),
                torch.tensor([[-3.0, 4.0]], dtype=DT),
                torch.full((1, 2), math.log(100.0), dtype=DT),
            ),
        ),
        (
            "random means and log-variances, 3 examples x 4 dimensions",
            tuple(torch.randn(3, 4, generator=g, dtype=DT) for _ in range(4)),
        ),
    ]
    default = (
        "precisions add: 1/var = 1/var_a + 1/var_b with var = exp(logvar); "
        "mu = var * (mu_a / var_a + mu_b / var_b); return (mu, log var)."
    )
    _compare_pairs(check, fn, cases, ("mu", "logvar"), _merge_reference, _MERGE_MISTAKES, default)
    # the product of densities, checked pointwise: log N(z; mu, var) - log N_a - log N_b is
    # the same for every z
    case = "the merged density is proportional to the product of the two"
    ma, la, mb, lb = cases[2][1]
    got = call_student(check, case, fn, ma, la, mb, lb)
    mu, logvar = _as_pair(check, case, got, "(mu, logvar)")
    pts = torch.randn(5, 3, 4, generator=g, dtype=DT)
    ratio = (
        Normal(as_float64(check, case, mu), (0.5 * as_float64(check, case, logvar)).exp())
        .log_prob(pts)
        .sub(Normal(ma, (0.5 * la).exp()).log_prob(pts))
        .sub(Normal(mb, (0.5 * lb).exp()).log_prob(pts))
    )
    compare(
        check,
        case,
        ratio - ratio[0],
        torch.zeros_like(ratio),
        what="log N(z; mu, var) - log N(z; mu_a, var_a) - log N(z; mu_b, var_b), minus its value "
        "at the first z",
        hint=default,
        rtol=0.0,
        atol=1e-6,
    )
    passed(check, len(cases) + 1)


# --------------------------------------------------------------------------------------------
# The backward message of a binary hierarchy
# --------------------------------------------------------------------------------------------


def _message_reference(log_px_z1: Tensor, log_pz1_z2: Tensor) -> Tensor:
    return torch.logsumexp(log_pz1_z2.unsqueeze(0) + log_px_z1.unsqueeze(1), -1)


_MESSAGE_MISTAKES: Mistakes = [
    (
        "taking the maximum over z1 (the Viterbi message) instead of the sum",
        lambda lx, lt: (lt.unsqueeze(0) + lx.unsqueeze(1)).max(-1).values,
    ),
    (
        "forgetting the transition p(z1 | z2)",
        lambda lx, lt: torch.logsumexp(lx, -1, keepdim=True).expand(-1, lt.shape[0]),
    ),
    (
        "summing products of log-probabilities",
        lambda lx, lt: (lt.exp().unsqueeze(0) * lx.unsqueeze(1)).sum(-1),
    ),
    (
        "exponentiating without log-sum-exp (underflow)",
        lambda lx, lt: (lt.exp().unsqueeze(0) * lx.exp().unsqueeze(1)).sum(-1).log(),
    ),
    (
        "the log-sum-exp over z2 (dimension 1 of the [B, S2, S1] sum) instead of over z1: the "
        "result has one value per state z1, not per z2",
        lambda lx, lt: torch.logsumexp(lt.unsqueeze(0) + lx.unsqueeze(1), 1),
    ),
    (
        "returning p(x | z2) instead of its logarithm",
        lambda lx, lt: _message_reference(lx, lt).exp(),
    ),
    (
        "weighting every state z1 by 1/S1 (a log-mean-exp) instead of by p(z1 | z2)",
        lambda lx, lt: (
            torch.logsumexp(lx, -1, keepdim=True).expand(-1, lt.shape[0]) - math.log(lx.shape[-1])
        ),
    ),
]


def check_backward_message(fn: Callable[[Tensor, Tensor], Tensor]) -> None:
    """Check ``fn(log_px_z1 [B, S1], log_pz1_z2 [S2, S1]) -> [B, S2]``: the backward recursion
    ``log p(x | z2) = log sum_z1 p(z1 | z2) p(x | z1)`` over enumerated states, in log space."""
    check = "check_backward_message"
    g = torch.Generator().manual_seed(23)

    def log_rows(*shape: int) -> Tensor:
        return torch.log_softmax(torch.randn(shape, generator=g, dtype=DT), -1)

    one_hot = torch.log(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=DT))
    half = torch.log(torch.full((2, 2), 0.5, dtype=DT))
    cases = [
        (
            "a deterministic transition picks one state z1 per z2",
            torch.tensor([[-1.0, -2.0, -3.0]], dtype=DT),
            one_hot,
        ),
        (
            "two equally likely states: the log of the average likelihood",
            torch.tensor([[-1.0, -3.0]], dtype=DT),
            half,
        ),
        (
            "S2 = 3 states above, S1 = 5 below, 2 examples (sum over z1, one value per z2)",
            -10.0 * torch.rand(2, 5, generator=g, dtype=DT),
            log_rows(3, 5),
        ),
        (
            "likelihoods near exp(-1000) do not underflow",
            torch.tensor([[-1000.0, -1001.0, -1003.0]], dtype=DT),
            log_rows(2, 3),
        ),
    ]
    default = (
        "compute log p(z1|z2) + log p(x|z1) for every pair (broadcast [1, S2, S1] + [B, 1, S1]) "
        "and take torch.logsumexp over the last dimension (z1)."
    )
    for case, lx, lt in cases:
        got = call_student(check, case, fn, lx, lt)
        hint = _diagnose(got, (lx, lt), _MESSAGE_MISTAKES, default)
        compare(
            check,
            case,
            got,
            _message_reference(lx, lt),
            what="log p(x | z2)",
            hint=hint,
            rtol=RTOL,
            atol=ATOL,
        )
    passed(check, len(cases))
