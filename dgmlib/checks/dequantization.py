"""Checks of lecture 03 (discrete data and dequantization): the discretized logistic
likelihood and the dequantization bound in bits per dimension."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Normal

from dgmlib.checks.common import as_float64, call_student, compare, diagnose, fail, passed
from dgmlib.dequantization import discretized_logistic_log_prob

__all__ = ["check_dequantized_bpd", "check_discretized_logistic"]


# --------------------------------------------------------------------------------------------
# Exercise 1: the discretized logistic likelihood
# --------------------------------------------------------------------------------------------


def _logistic_case(
    name: str, x_int: Tensor, loc: Any, scale: Any, num_levels: int | None, hint: str
) -> tuple[str, dict[str, Any], str]:
    """One case of :func:`check_discretized_logistic`: ``loc`` and ``scale`` become float64."""
    f64 = torch.float64
    kwargs = dict(
        x_int=x_int,
        loc=torch.tensor(loc, dtype=f64),
        scale=torch.tensor(scale, dtype=f64),
        num_levels=num_levels,
    )
    return name, kwargs, hint


def _logistic_cases() -> list[tuple[str, dict[str, Any], str]]:
    """The (name, keyword arguments, hint) cases of :func:`check_discretized_logistic`."""
    k = torch.arange(17)
    wide = torch.tensor([[0, 5, 255], [128, 3, 254], [1, 0, 100], [200, 7, 9]])
    rows = [
        ("interior bins 1..15, loc=7.3, scale=1.5, K=17", k[1:-1], 7.3, 1.5, 17,
         "an interior bin [x, x+1) has mass sigmoid((x+1-loc)/scale) - sigmoid((x-loc)/scale)."),
        ("open outer bins, loc=0.2, scale=3.0, K=17", torch.tensor([0, 16]), 0.2, 3.0, 17,
         "the bin of 0 is (-inf, 1) and the bin of K-1 is [K-1, inf): use CDF values 0 and 1 "
         "there, so that the K masses sum to one."),
        ("broadcasting: x [4, 3] against loc, scale [3]", wide, [10.0, 4.2, 250.0],
         [20.0, 0.7, 3.0], 256,
         "compute elementwise with torch operations so that shapes broadcast."),
        ("far tail: x=255, loc=0, scale=1, K=256", torch.tensor([254, 255]), 0.0, 1.0, 256,
         "the mass is about exp(-254), which underflows if you subtract probabilities; work "
         "with log-CDFs: log sigmoid(z) = -softplus(-z), and log(e^a - e^b) = "
         "a + log(-expm1(b - a))."),
        ("upper tail: x=20..22, loc=0, scale=1, no open bins", torch.tensor([20, 21, 22]), 0.0,
         1.0, None,
         "above loc both CDF values are close to 1 and their difference cancels; use the "
         "symmetry sigmoid(b) - sigmoid(a) = sigmoid(-a) - sigmoid(-b)."),
        ("sharp peak: loc=8.5, scale=1e-3, K=17", k, 8.5, 1e-3, 17,
         "the bin holding loc must get probability ~1 (log-probability ~0) without NaN."),
    ]  # fmt: skip
    return [_logistic_case(*row) for row in rows]


def _logistic_mistakes(kwargs: dict[str, Any]) -> list[tuple[Tensor, str]]:
    """What typical wrong solutions return on one case of :func:`check_discretized_logistic`."""
    ref = discretized_logistic_log_prob
    x, loc, scale, k = kwargs["x_int"], kwargs["loc"], kwargs["scale"], kwargs["num_levels"]
    z = (x.to(torch.float64) - loc) / scale
    log_pdf = -z - 2 * torch.nn.functional.softplus(-z) - torch.log(scale)  # logistic at x
    mistakes = [
        (
            ref(x, loc + 0.5, scale, k),
            "these are the masses of the centred bins [x - 1/2, x + 1/2); here the bin of x is "
            "[x, x + 1).",
        ),
        (ref(x, loc, scale, k).exp(), "return log-probabilities (nats), not probabilities."),
        (
            log_pdf,
            "this is the logistic log-density at x; the likelihood of an integer is the log of "
            "the mass of its bin, a difference of two CDF values.",
        ),
        (
            ref(x, loc, 1.0 / scale, k),
            "standardise as (x - loc) / scale: divide by the scale, do not multiply.",
        ),
    ]
    if k is not None:
        mistakes.append(
            (
                ref(x, loc, scale, None),
                "with num_levels = K the outer bins are open: (-inf, 1) for 0 and [K-1, inf) "
                "for K-1 (CDF values 0 and 1 there).",
            )
        )
    return mistakes


def check_discretized_logistic(fn: Callable[..., Tensor], atol: float = 1e-6) -> None:
    """Check ``fn(x_int, loc, scale, num_levels)``: log-masses of a discretized logistic."""
    check = "check_discretized_logistic"
    cases = _logistic_cases()
    for case, kwargs, hint in cases:
        got = as_float64(
            check, case, call_student(check, case, fn, **kwargs), "the log-mass tensor"
        )
        compare(
            check,
            case,
            got,
            discretized_logistic_log_prob(**kwargs),
            what="the log-mass tensor",
            hint=diagnose(got, _logistic_mistakes(kwargs), hint, rtol=atol, atol=atol),
            rtol=atol,
            atol=atol,
        )
    # the K masses must sum to one, for any parameters
    x = torch.arange(17)[:, None]
    loc = torch.tensor([-3.0, 0.0, 8.4, 16.9, 30.0], dtype=torch.float64)
    scale = torch.tensor([0.3, 2.0, 5.0, 0.01, 4.0], dtype=torch.float64)
    case = "sum over the 17 levels for five (loc, scale) pairs"
    hint = "with open outer bins the masses telescope to sigmoid(inf) - sigmoid(-inf) = 1."
    got = as_float64(
        check, case, call_student(check, case, fn, x, loc, scale, 17), "the log-mass tensor"
    )
    if got.shape != (17, 5):
        fail(
            check,
            case,
            f"the log-mass tensor has shape {tuple(got.shape)}, expected (17, 5).",
            hint,
        )
    compare(
        check,
        case,
        got.exp().sum(0),
        torch.ones(5, dtype=torch.float64),
        what="the sum of the masses",
        hint=hint,
        rtol=0.0,
        atol=1e-9,
    )
    passed(check, len(cases) + 1)


# --------------------------------------------------------------------------------------------
# Exercise 2: bits per dimension of a model of data rescaled to [0, 1)
# --------------------------------------------------------------------------------------------


def _uniform_unit_density(y: Tensor) -> Tensor:
    """Log-density of the uniform distribution on [0, 1)^D (zero), one value per example."""
    return torch.zeros(y.shape[:-1], dtype=y.dtype)


def _gaussian_unit_density(mean: float, std: float) -> Callable[[Tensor], Tensor]:
    """The log-density of N(mean, std^2) in every dimension, summed over the last dimension."""

    def log_density(y: Tensor) -> Tensor:
        """Log-density of ``y [..., D]``, one value per example."""
        m, s = torch.tensor(mean, dtype=y.dtype), torch.tensor(std, dtype=y.dtype)
        return Normal(m, s).log_prob(y).sum(-1)

    return log_density


def _gaussian_bound_bpd(x: Tensor, num_levels: int, mean: float, std: float) -> Tensor:
    """Exact dequantization bound in bits/dim for N(mean, std^2) per dim on y = (x + u) / K.

    With t = x - K mean and s = K std (integer units), E_u[(t + u)^2] = t^2 + t + 1/3.
    """
    t = x.to(torch.float64) - num_levels * mean
    s = num_levels * std
    e = -0.5 * (t**2 + t + 1.0 / 3.0) / s**2 - math.log(s) - 0.5 * math.log(2 * math.pi)
    return -e.sum(-1) / (x.shape[-1] * math.log(2.0))


def _bpd_mistakes(bpd: Tensor, dim: int, num_levels: int) -> list[tuple[Tensor, str]]:
    """What typical wrong solutions return, given the right bound ``bpd`` [N] (bits/dim)."""
    log2_k = math.log2(num_levels)
    return [
        (
            bpd - log2_k,
            "the change of variables back to integer units is missing: subtract D log K from "
            "the average log p_Y(y) (nats) before converting.",
        ),
        (
            -bpd,
            "the sign is flipped: the bound is -E_u[log2 p_X(x + u)] / D, and the change of "
            "variables is log p_X(x + u) = log p_Y(y) - D log K.",
        ),
        (
            bpd - 2 * log2_k,
            "the change of variables has the wrong sign: log p_X(x + u) = log p_Y(y) - D log K.",
        ),
        (bpd * math.log(2.0), "these are nats per dimension: divide by log 2 for bits."),
        (bpd * dim, "these are bits per example: divide by D for bits per dimension."),
        (bpd * dim * math.log(2.0), "these are nats per example: divide by D log 2."),
        (
            bpd + 8.0 - log2_k,
            "use num_levels (not a fixed 256) in the correction -D log K.",
        ),
    ]


def _bpd_cases(g: torch.Generator) -> Iterator[tuple[str, tuple[Any, ...], Tensor, float, str]]:
    """The cases of :func:`check_dequantized_bpd`: (name, (density, x_int, K, samples), the
    exact bound [N], tolerance, hint). Lazily: the data of a case are drawn from ``g`` after the
    student's function used it for the previous cases."""
    x = torch.randint(0, 256, (5, 12), generator=g)
    yield (
        "uniform density on [0,1)^D, K=256",
        (_uniform_unit_density, x, 256, 4),
        torch.full((5,), 8.0, dtype=torch.float64),
        1e-9,
        "the uniform density is 1 on [0,1)^D, so every image costs exactly log2(256) = 8 "
        "bits per dimension once the change of variables back to integer units (-D log K "
        "nats) is applied; the result has one entry per example.",
    )
    mean, std = 0.45, 0.3
    yield (
        f"Gaussian N({mean}, {std}^2) per dim, K=256, 4000 samples",
        (_gaussian_unit_density(mean, std), x, 256, 4000),
        _gaussian_bound_bpd(x, 256, mean, std),
        2e-3,
        "dequantize with y = (x + u) / K, average log p(y) over the samples, convert to "
        "integer units with -D log K, and divide the negative result by D log 2.",
    )
    x17 = torch.randint(0, 17, (3, 64), generator=g)
    yield (
        "Gaussian N(0.5, 0.25^2) per dim, K=17, D=64, 4000 samples",
        (_gaussian_unit_density(0.5, 0.25), x17, 17, 4000),
        _gaussian_bound_bpd(x17, 17, 0.5, 0.25),
        2e-3,
        "use num_levels (here 17, not 256) in both the rescaling and the correction.",
    )


def check_dequantized_bpd(fn: Callable[..., Tensor]) -> None:
    """Check ``fn(log_density_unit, x_int, num_levels, num_samples, generator)``: the Monte Carlo
    dequantization bound of a model of ``[0,1)``-scaled data, per example, in bits/dim."""
    check = "check_dequantized_bpd"
    g = torch.Generator().manual_seed(123)
    n_cases = 0
    for case, (density, x_int, num_levels, n_samples), expected, atol, hint in _bpd_cases(g):
        got = as_float64(
            check,
            case,
            call_student(check, case, fn, density, x_int, num_levels, n_samples, g),
            "the bound in bits/dim",
        )
        mistakes = _bpd_mistakes(expected, x_int.shape[-1], num_levels)
        compare(
            check,
            case,
            got,
            expected,
            what="the bound in bits/dim",
            hint=diagnose(got, mistakes, hint, rtol=0.0, atol=atol),
            rtol=0.0,
            atol=atol,
        )
        n_cases += 1
    passed(check, n_cases)
