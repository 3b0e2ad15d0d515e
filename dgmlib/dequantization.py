"""Discrete data and continuous densities: dequantization, exact bin masses, bits per dimension.

Integer data ``x`` in ``{0, ..., K-1}^D`` (``K = num_levels``) meet continuous densities in two
ways, and this module provides the pieces of both:

* **dequantize the data**: ``y = x + u`` with ``u ~ U[0,1)^D`` (:func:`uniform_dequantize`); the
  average ``E_u[log p(x + u)]`` lower-bounds the log-probability ``log P(x)`` that the density
  gives to the unit cube ``x + [0,1)^D`` (:func:`dequantization_bound`);
* **discretize the model**: give each integer the exact probability mass of its bin under a
  normal or logistic distribution (:func:`discretized_normal_log_prob`,
  :func:`discretized_logistic_log_prob`); with ``num_levels`` the two outer bins are stretched to
  infinity, so the masses of the ``K`` levels sum to one.

All log-probabilities are in nats; :mod:`dgmlib.units` converts a negative log-likelihood to
bits per dimension and applies the change of variables from data rescaled to ``[0, 1)`` back to
integer units.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from dgmlib.validation import check_int

Tensor = torch.Tensor


# --------------------------------------------------------------------------------------------
# Dequantization
# --------------------------------------------------------------------------------------------


def _check_levels(x_int: Tensor, num_levels: int | None, where: str) -> None:
    """Raise unless ``x_int`` holds integers, in ``{0, ..., num_levels - 1}`` when given."""
    if x_int.is_floating_point():
        if not torch.equal(x_int, x_int.floor()):
            raise ValueError(f"{where}: x_int must hold integer values, got non-integer floats")
    if num_levels is not None:
        check_int(num_levels, "num_levels", where, low=2)
        if x_int.numel() and (x_int.min() < 0 or x_int.max() > num_levels - 1):
            raise ValueError(
                f"{where}: values must lie in {{0, ..., {num_levels - 1}}}, got range "
                f"[{x_int.min().item()}, {x_int.max().item()}]"
            )


def uniform_dequantize(
    x_int: Tensor,
    num_levels: int | None = None,
    generator: torch.Generator | None = None,
    scale: bool = False,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Uniform dequantization ``y = x + u``, ``u ~ U[0,1)`` independently for every entry.

    ``x_int`` holds integers (any integer dtype, or floats with integer values). The result lies
    in ``[0, num_levels)``; with ``scale=True`` it is divided by ``num_levels`` and lies in
    ``[0, 1)``. ``num_levels`` is required for ``scale=True`` and, when given, the values are
    checked to lie in ``{0, ..., num_levels - 1}``.
    """
    x_int = torch.as_tensor(x_int)
    _check_levels(x_int, num_levels, "uniform_dequantize")
    if scale and num_levels is None:
        raise ValueError("uniform_dequantize: scale=True needs num_levels")
    u = torch.rand(x_int.shape, generator=generator, dtype=dtype)
    y = x_int.to(dtype) + u
    return y / num_levels if scale and num_levels is not None else y


def dequantization_bound(
    log_density: Callable[[Tensor], Tensor],
    x_int: Tensor,
    num_samples: int,
    generator: torch.Generator | None = None,
    return_stderr: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Monte Carlo estimate of ``E_u[log p(x + u)]``, ``u ~ U[0,1)^D``, for each example.

    ``log_density`` maps a float tensor ``[..., N, D]`` to log-densities ``[..., N]`` (in
    integer units); ``x_int`` is ``[N, D]``. Returns the ``[N]`` averages over ``num_samples``
    draws of ``u`` (and their standard errors when ``return_stderr``). By Jensen's inequality the
    exact expectation is a lower bound on ``log P(x) = log of the integral of p over x + [0,1)^D``.
    """
    check_int(num_samples, "num_samples", "dequantization_bound")
    x_int = torch.as_tensor(x_int)
    if x_int.dim() != 2:
        raise ValueError(f"dequantization_bound: x_int must be [N, D], got {tuple(x_int.shape)}")
    _check_levels(x_int, None, "dequantization_bound")
    y = x_int.to(torch.float64) + torch.rand(
        (num_samples, *x_int.shape), generator=generator, dtype=torch.float64
    )
    lp = log_density(y)
    if lp.shape != (num_samples, x_int.shape[0]):
        raise ValueError(
            f"dequantization_bound: log_density must map [S, N, D] to [S, N], got {tuple(lp.shape)}"
        )
    mean = lp.mean(0)
    if not return_stderr:
        return mean
    stderr = lp.std(0) / math.sqrt(num_samples) if num_samples > 1 else torch.zeros_like(mean)
    return mean, stderr


# --------------------------------------------------------------------------------------------
# Exact bin masses (discretized continuous distributions)
# --------------------------------------------------------------------------------------------


def _log_sub_exp(a: Tensor, b: Tensor) -> Tensor:
    """``log(exp(a) - exp(b))`` for ``a >= b``, accurate when the two are close or ``b = -inf``."""
    d = (b - a).clamp(max=0.0)
    return a + torch.log(-torch.expm1(d))


def _log_bin_mass(
    log_cdf: Callable[[Tensor], Tensor],
    x_int: Tensor,
    loc: Tensor,
    scale: Tensor,
    num_levels: int | None,
) -> Tensor:
    """``log(F(b) - F(a))`` for the bin ``[a, b) = [x, x + 1)`` in standardized units.

    ``F`` is the CDF of a distribution symmetric about 0, with log-CDF ``log_cdf``. In the upper
    tail both CDF values are close to 1 and their difference cancels; there the mass is computed
    as ``F(-a) - F(-b)``, the same number by symmetry. Open outer bins (``num_levels`` given) use
    ``F(-inf) = 0`` and ``F(inf) = 1`` as constants, so gradients stay finite.
    """
    dtype = torch.promote_types(loc.dtype, scale.dtype)
    dtype = dtype if dtype.is_floating_point else torch.float64
    xf = x_int.to(dtype)
    za, zb = (xf - loc) / scale, (xf + 1.0 - loc) / scale
    if num_levels is None:
        bottom = top = torch.zeros_like(x_int, dtype=torch.bool)
    else:
        bottom, top = x_int == 0, x_int == num_levels - 1
    upper = (za > 0) & ~bottom
    zero, minus_inf = torch.zeros((), dtype=dtype), torch.full((), -math.inf, dtype=dtype)
    log_hi = torch.where(upper, log_cdf(-za), torch.where(top, zero, log_cdf(zb)))
    log_lo = torch.where(
        upper,
        torch.where(top, minus_inf, log_cdf(-zb)),
        torch.where(bottom, minus_inf, log_cdf(za)),
    )
    return _log_sub_exp(log_hi, log_lo)


def discretized_normal_log_prob(
    x_int: Tensor, mean: Tensor, std: Tensor, num_levels: int | None = None
) -> Tensor:
    """Log of the mass that ``N(mean, std^2)`` puts on the bin ``[x, x + 1)`` of each integer.

    Everything is in integer units and broadcasts elementwise. With ``num_levels = K`` the bin of
    ``0`` becomes ``(-inf, 1)`` and that of ``K - 1`` becomes ``[K - 1, inf)``, so the ``K``
    masses sum to one; without it they sum to one over all integers.
    """
    x_int = torch.as_tensor(x_int)
    _check_levels(x_int, num_levels, "discretized_normal_log_prob")
    mean, std = torch.as_tensor(mean), torch.as_tensor(std)
    return _log_bin_mass(torch.special.log_ndtr, x_int, mean, std, num_levels)


def discretized_logistic_log_prob(
    x_int: Tensor, loc: Tensor, scale: Tensor, num_levels: int | None = None
) -> Tensor:
    """Log of the mass that a logistic distribution ``(loc, scale)`` puts on ``[x, x + 1)``.

    The logistic CDF is ``sigmoid((t - loc) / scale)``, whose log is computed stably by
    ``F.logsigmoid``. With ``num_levels = K`` the outer bins are open, ``(-inf, 1)`` and
    ``[K - 1, inf)``, so the masses of ``0, ..., K - 1`` sum to one (the discretized logistic
    likelihood of PixelCNN++, here in integer units).
    """
    x_int = torch.as_tensor(x_int)
    _check_levels(x_int, num_levels, "discretized_logistic_log_prob")
    loc, scale = torch.as_tensor(loc), torch.as_tensor(scale)
    return _log_bin_mass(F.logsigmoid, x_int, loc, scale, num_levels)
