"""Checks of lecture 12 (diffusion): a sample of the forward marginal ``q(z_t | z_0)`` and the
forward posterior ``q(z_{t-1} | z_t, z_0)``.

Both take the conventions of :mod:`dgmlib.diffusion`: ``betas`` a float tensor ``[T]`` with
``betas[t - 1] = beta_t``, ``t`` a Python integer in ``1..T``, ``abar_t = prod_{s <= t} (1 -
beta_s)`` with ``abar_0 = 1``. A wrong result is compared with the typical mistakes (an index off
by one, a missing square root, the noise scale ``beta_t`` instead of ``sqrt(beta_t)``, the
variance with ``1 - abar_{t+1}``) and the hint names the one that reproduces it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import Tensor

from dgmlib.checks.common import as_float64, call_student, compare, diagnose, fail, passed
from dgmlib.diffusion import alpha_bars, forward_marginal, forward_posterior

__all__ = ["check_forward_posterior", "check_marginal_sample"]

DT = torch.float64
RTOL = 1e-6
ATOL = 1e-9
# how a wrong answer is matched to the typical mistakes: every match is named (on a simple
# case two mistakes can give the same numbers), and a scalar stands for a constant tensor
diagnose_all = partial(diagnose, rtol=RTOL, atol=ATOL, every=True, broadcast=True)


def _abar(betas: Tensor, t: int) -> Tensor:
    """``abar_t`` for ``t`` in ``0..T + 1`` (``abar_{T+1}`` taken as ``abar_T``, for the
    diagnoses only)."""
    ab = alpha_bars(betas)
    return ab[min(t, len(betas))]


# ---------------------------------------------------------------------------------------------
# z_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps


def _sample_mistakes(x0: Tensor, t: int, betas: Tensor, eps: Tensor) -> list[tuple[Tensor, str]]:
    ab, ab_prev = _abar(betas, t), _abar(betas, t - 1)
    beta = betas[t - 1]
    return [
        (
            ab.sqrt() * x0 + (1 - ab) * eps,
            "the noise is scaled by sqrt(1 - abar_t), the standard deviation, not by the "
            "variance 1 - abar_t (for t = 1: by sqrt(beta_1), not by the noise scale beta_t of "
            "a misprinted step z_t = sqrt(1 - beta_t) z_{t-1} + beta_t eps).",
        ),
        (
            ab * x0 + (1 - ab).sqrt() * eps,
            "the mean is sqrt(abar_t) x0: the square root is missing.",
        ),
        (
            (1 - beta).sqrt() * x0 + beta * eps,
            "this is one step z_t = sqrt(1 - beta_t) z_{t-1} + beta_t eps with z_{t-1} = x0, and "
            "with the noise scale beta_t, which is wrong twice: a single step has noise scale "
            "sqrt(beta_t), and q(z_t | z_0) combines all t steps through abar_t = prod_{s<=t} "
            "(1 - beta_s).",
        ),
        (
            (1 - beta).sqrt() * x0 + beta.sqrt() * eps,
            "this is one step from z_{t-1} = x0; q(z_t | z_0) combines all t steps: use abar_t "
            "= prod_{s<=t} (1 - beta_s) instead of alpha_t = 1 - beta_t.",
        ),
        (
            ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps,
            "off by one: this uses abar_{t-1}. betas[t - 1] holds beta_t, so abar_t is the "
            "product of (1 - betas[:t]).",
        ),
        (
            _abar(betas, t + 1).sqrt() * x0 + (1 - _abar(betas, t + 1)).sqrt() * eps,
            "off by one: this uses abar_{t+1}. betas[t - 1] holds beta_t, so abar_t is the "
            "product of (1 - betas[:t]).",
        ),
        (
            (1 - ab).sqrt() * x0 + ab.sqrt() * eps,
            "signal and noise are swapped: x0 is scaled by sqrt(abar_t), which falls from 1 "
            "towards 0, and the noise by sqrt(1 - abar_t).",
        ),
        (
            torch.prod(betas[:t]).sqrt() * x0 + (1 - torch.prod(betas[:t])).sqrt() * eps,
            "this multiplies the betas: abar_t = prod_{s<=t} alpha_s is the product of "
            "alpha_s = 1 - beta_s, not of beta_s.",
        ),
        (
            (1 - betas[:t].sum()).clamp_min(0).sqrt() * x0
            + betas[:t].sum().clamp_max(1).sqrt() * eps,
            "this uses 1 - sum_{s<=t} beta_s, the first-order approximation of abar_t: the "
            "marginal needs the exact product prod_{s<=t} (1 - beta_s).",
        ),
    ]


def check_marginal_sample(fn: Callable[[Tensor, int, Tensor, Tensor], Any]) -> None:
    """Check ``fn(x0, t, betas, eps) -> z_t``: the reparametrized sample of ``q(z_t | z_0)``,
    ``z_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` for the given standard normal ``eps``
    (same shape as ``x0``), so the answer is exact."""
    check = "check_marginal_sample"
    g = torch.Generator().manual_seed(12)
    big = torch.linspace(0.05, 0.3, 8, dtype=DT)  # large betas make every mistake visible
    ho = torch.linspace(1e-4, 0.02, 1000, dtype=DT)
    general = (
        "z_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps with abar_t = prod_{s<=t} (1 - beta_s) "
        "and beta_s = betas[s - 1]."
    )
    cases = [
        ("T = 8, t = 1 (one step)", big, 1, (6,)),
        ("T = 8, t = 3", big, 3, (6,)),
        ("T = 8, t = T", big, 8, (2, 3)),
        ("Ho et al.'s schedule, T = 1000, t = 250", ho, 250, (4, 5)),
    ]
    for name, betas, t, shape in cases:
        x0 = torch.randn(shape, generator=g, dtype=DT)
        eps = torch.randn(shape, generator=g, dtype=DT)
        got_raw = call_student(check, name, fn, x0, t, betas, eps)
        got = as_float64(check, name, got_raw, "z_t")
        mean, var = forward_marginal(x0, t, betas)
        expected = mean + var.sqrt() * eps
        hint = diagnose_all(got, _sample_mistakes(x0, t, betas, eps), general)
        compare(check, name, got, expected, what="z_t", hint=hint, rtol=RTOL, atol=ATOL)
    passed(check, len(cases))


# ---------------------------------------------------------------------------------------------
# q(z_{t-1} | z_t, z_0)


def _posterior_parts(betas: Tensor, t: int, prev: int, cur: int) -> tuple[Tensor, Tensor, Tensor]:
    """(coefficient of z0, coefficient of zt, variance) with abar_{t-1} -> abar_prev and
    abar_t -> abar_cur (the right formulas for prev = t - 1, cur = t)."""
    ab_p, ab_c = _abar(betas, prev), _abar(betas, cur)
    beta = betas[t - 1]
    c0 = ab_p.sqrt() * beta / (1 - ab_c)
    ct = (1 - beta).sqrt() * (1 - ab_p) / (1 - ab_c)
    return c0, ct, (1 - ab_p) / (1 - ab_c) * beta


def _posterior_mistakes(
    z0: Tensor, zt: Tensor, t: int, betas: Tensor
) -> list[tuple[Tensor | None, Tensor | None, str]]:
    """Typical wrong (mean, var) pairs, each with its hint: [(mean, var, hint)]."""
    c0, ct, var = _posterior_parts(betas, t, t - 1, t)
    ab_prev, ab_t = _abar(betas, t - 1), _abar(betas, t)
    beta = betas[t - 1]
    out: list[tuple[Tensor | None, Tensor | None, str]] = []
    # the variance with 1 - abar_{t+1} in the numerator
    var_next = (1 - _abar(betas, t + 1)) / (1 - ab_t) * beta
    out.append(
        (
            None,
            var_next,
            "the variance is (1 - abar_{t-1}) / (1 - abar_t) * beta_t: this uses 1 - abar_{t+1} "
            "in the numerator. Complete the square in z_{t-1}: the precision is alpha_t / beta_t "
            "+ 1 / (1 - abar_{t-1}).",
        )
    )
    out.append(
        (
            None,
            beta,
            "the variance of q(z_{t-1} | z_t, z_0) is smaller than beta_t: it is beta~_t = "
            "(1 - abar_{t-1}) / (1 - abar_t) * beta_t.",
        )
    )
    out.append(
        (
            None,
            var.sqrt(),
            "this is the standard deviation sqrt(beta~_t): return the variance beta~_t = "
            "(1 - abar_{t-1}) / (1 - abar_t) * beta_t itself.",
        )
    )
    out.append(
        (
            None,
            (1 - ab_prev) / (1 - ab_t) * beta.sqrt(),
            "the variance is (1 - abar_{t-1}) / (1 - abar_t) * beta_t, with beta_t itself, not "
            "its square root.",
        )
    )
    # indices shifted as a whole: betas[t] used as beta_t, abar_t as abar_{t-1}, ...
    if t < len(betas):
        c0s, cts, vs = _posterior_parts(betas, t + 1, t, t + 1)
        out.append(
            (
                c0s * z0 + cts * zt,
                vs,
                "every index is shifted by one: betas[t - 1] is beta_t (the list starts at "
                "beta_1), and abar_{t-1} = prod_{s<t} (1 - beta_s), with abar_0 = 1.",
            )
        )
    if t < len(betas):
        c0n, ctn, vn = _posterior_parts(betas, t, t, t + 1)
        out.append(
            (
                c0n * z0 + ctn * zt,
                vn,
                "abar_t is off by one: the array of abar must start with abar_0 = 1, so that "
                "abar_{t-1} is the product of (1 - betas[:t - 1]) and abar_t that of "
                "(1 - betas[:t]).",
            )
        )
    out.append(
        (
            ab_prev * beta / (1 - ab_t) * z0 + ct * zt,
            None,
            "the coefficient of z_0 is sqrt(abar_{t-1}) beta_t / (1 - abar_t): the square root "
            "is missing.",
        )
    )
    out.append(
        (
            c0 * z0 + (1 - beta) * (1 - ab_prev) / (1 - ab_t) * zt,
            None,
            "the coefficient of z_t is sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t): the square "
            "root of alpha_t is missing.",
        )
    )
    out.append(
        (
            (c0 * z0 + ct * zt) * (1 - ab_t),
            None,
            "the mean is divided by 1 - abar_t: both coefficients, sqrt(abar_{t-1}) beta_t and "
            "sqrt(alpha_t) (1 - abar_{t-1}), share that denominator.",
        )
    )
    out.append(
        (
            ct * z0 + c0 * zt,
            None,
            "the two coefficients are swapped: sqrt(abar_{t-1}) beta_t / (1 - abar_t) multiplies "
            "z_0 and sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) multiplies z_t.",
        )
    )
    out.append(
        (
            _abar(betas, t).sqrt() * beta / (1 - ab_t) * z0 + ct * zt,
            None,
            "the coefficient of z_0 uses abar_{t-1} (the prior of z_{t-1} given z_0 is "
            "N(sqrt(abar_{t-1}) z_0, (1 - abar_{t-1}) I)), not abar_t.",
        )
    )
    return out


def check_forward_posterior(fn: Callable[[Tensor, Tensor, int, Tensor], Any]) -> None:
    """Check ``fn(z0, zt, t, betas) -> (mean, var)`` for ``q(z_{t-1} | z_t, z_0)``, ``t >= 2``:
    ``mean = sqrt(abar_{t-1}) beta_t / (1 - abar_t) z0 + sqrt(alpha_t) (1 - abar_{t-1}) /
    (1 - abar_t) zt`` (the broadcast shape of ``z0`` and ``zt``) and ``var = (1 - abar_{t-1}) /
    (1 - abar_t) beta_t`` (a number, or a tensor that broadcasts to ``mean``)."""
    check = "check_forward_posterior"
    g = torch.Generator().manual_seed(13)
    big = torch.linspace(0.05, 0.3, 8, dtype=DT)
    ho = torch.linspace(1e-4, 0.02, 1000, dtype=DT)
    general_mean = (
        "mean = sqrt(abar_{t-1}) beta_t / (1 - abar_t) * z0 + sqrt(alpha_t) (1 - abar_{t-1}) / "
        "(1 - abar_t) * zt, with beta_t = betas[t - 1], alpha_t = 1 - beta_t."
    )
    general_var = "var = (1 - abar_{t-1}) / (1 - abar_t) * beta_t."
    cases = [
        ("T = 8, t = 2", big, 2, (5,), (5,)),
        ("T = 8, t = 5", big, 5, (5,), (5,)),
        ("T = 8, t = T", big, 8, (3,), (3,)),
        ("broadcasting: z0 [4, 1], zt [4, 3]", big, 4, (4, 1), (4, 3)),
        ("Ho et al.'s schedule, T = 1000, t = 30", ho, 30, (6,), (6,)),
    ]
    for name, betas, t, s0, st in cases:
        z0 = torch.randn(s0, generator=g, dtype=DT)
        zt = torch.randn(st, generator=g, dtype=DT)
        out = call_student(check, name, fn, z0, zt, t, betas)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            fail(check, name, f"return a pair (mean, var), got {type(out).__name__}.")
        mean_exp, var_exp = forward_posterior(z0, zt, t, betas)
        mean_got = as_float64(check, name, out[0], "the mean")
        var_got = as_float64(check, name, out[1], "the variance")
        mistakes = _posterior_mistakes(z0, zt, t, betas)
        # the variance first: several mean mistakes come with a right variance
        try:
            var_b = torch.broadcast_to(var_got, mean_exp.shape) if var_got.numel() > 1 else var_got
        except RuntimeError:
            fail(
                check,
                name,
                f"the variance has shape {tuple(var_got.shape)}, which does not broadcast to "
                f"the mean's {tuple(mean_exp.shape)}.",
                "the forward process is isotropic: one number (a 0-d tensor) is enough.",
            )
        var_ref = torch.broadcast_to(var_exp, var_b.shape)
        hint = diagnose_all(var_b, [(v, h) for _, v, h in mistakes if v is not None], general_var)
        compare(check, name, var_b, var_ref, what="the variance", hint=hint, rtol=RTOL, atol=ATOL)
        hint = diagnose_all(
            mean_got, [(m, h) for m, _, h in mistakes if m is not None], general_mean
        )
        compare(check, name, mean_got, mean_exp, what="the mean", hint=hint, rtol=RTOL, atol=ATOL)
    passed(check, len(cases))
