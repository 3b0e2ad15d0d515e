"""Diagnostics of a trained latent-variable model: active units, KL per dimension, gradient SNR.

* :func:`active_units` counts latent dimensions that the encoder actually uses (Burda et al.,
  2016): a unit is active when its posterior mean varies with the data.
* :func:`kl_per_dimension` shows where the KL term (the "rate") is spent; collapsed dimensions
  have KL close to 0.
* :func:`gradient_snr` measures how informative stochastic gradients are, ``|mean| / std`` over
  repeated estimates (Rainforth et al., 2018); :func:`gradient_samples` collects those estimates
  and :func:`loglog_slope` fits the power law ``SNR ~ K^a``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from dgmlib.distributions import kl_normal_std_normal
from dgmlib.validation import check_int, check_positive, check_tensor

__all__ = [
    "ActiveUnits",
    "active_units",
    "gradient_samples",
    "gradient_snr",
    "kl_per_dimension",
    "loglog_slope",
    "mean_snr",
]


class ActiveUnits(NamedTuple):
    """The number of active latent units and the per-dimension variances ``[Z]`` behind it."""

    count: int  # type: ignore[assignment]  # the field shadows tuple.count (public name)
    variances: Tensor


def active_units(mu: Tensor, threshold: float = 0.01) -> ActiveUnits:
    """Count units ``j`` with ``Var_x(E_q[z_j | x]) > threshold`` (Burda et al., 2016).

    ``mu``: posterior means ``E_q[z|x]`` of ``N`` data points, ``[N, Z]``. The variance is taken
    over the data (dim 0, divisor ``N``). Returns ``(count, variances [Z])``.
    """
    check_tensor(mu, "mu", "active_units", min_ndim=2)
    if mu.dim() != 2 or mu.shape[0] < 2:
        raise ValueError(
            f"active_units: mu must have shape [N, Z] with N >= 2, got {tuple(mu.shape)}"
        )
    check_positive(threshold, "threshold", "active_units", allow_zero=True)
    variances = mu.detach().var(dim=0, correction=0)
    return ActiveUnits(int((variances > threshold).sum()), variances)


def kl_per_dimension(mu: Tensor, logvar: Tensor) -> Tensor:
    """``KL(q(z_j|x) || N(0, 1))`` per latent dimension, averaged over the data: ``[Z]``, nats.

    ``mu, logvar``: encoder outputs for ``N`` data points, ``[N, Z]``. The sum of the result is
    the average KL term of the ELBO.
    """
    check_tensor(mu, "mu", "kl_per_dimension", min_ndim=2)
    check_tensor(logvar, "logvar", "kl_per_dimension", min_ndim=2)
    if mu.dim() != 2 or mu.shape != logvar.shape:
        raise ValueError(
            f"kl_per_dimension: mu and logvar must both have shape [N, Z], got "
            f"{tuple(mu.shape)} and {tuple(logvar.shape)}"
        )
    return kl_normal_std_normal(mu.unsqueeze(-1), logvar.unsqueeze(-1)).mean(0)


def gradient_snr(grad_samples: Tensor, eps: float = 0.0) -> Tensor:
    """Signal-to-noise ratio ``|mean| / std`` per element over ``S`` repeated gradient estimates.

    ``grad_samples``: ``[S, ...]`` (``S >= 2`` independent estimates of the same gradient, e.g.
    from :func:`gradient_samples`); the mean and the standard deviation (divisor ``S - 1``) are
    taken over dim 0, giving ``[...]``. ``eps`` is added to the standard deviation; with
    ``eps = 0`` an element with zero spread gives ``inf`` (or ``nan`` when its mean is 0 too).
    """
    check_tensor(grad_samples, "grad_samples", "gradient_snr")
    if grad_samples.shape[0] < 2:
        raise ValueError(
            "gradient_snr: need S >= 2 gradient samples along dim 0, got shape "
            f"{tuple(grad_samples.shape)}"
        )
    return grad_samples.mean(0).abs() / (grad_samples.std(0, correction=1) + eps)


def mean_snr(grad_samples: Tensor, eps: float = 0.0) -> float:
    """:func:`gradient_snr` averaged over all elements of a parameter group (finite ones only)."""
    snr = gradient_snr(grad_samples, eps)
    finite = snr[torch.isfinite(snr)]
    if finite.numel() == 0:
        raise ValueError("mean_snr: no element has a finite SNR (all gradients constant?)")
    return float(finite.mean())


def gradient_samples(
    loss_fn: Callable[[], Tensor], params: Iterable[torch.nn.Parameter], n_samples: int
) -> Tensor:
    """``n_samples`` gradient estimates of ``loss_fn()`` w.r.t. ``params``, flattened: ``[S, P]``.

    ``loss_fn`` is called afresh for each sample (so it should draw its own noise, e.g. a VAE
    loss on a fixed batch); ``P`` is the total number of elements of ``params``.
    """
    params = list(params)
    check_int(n_samples, "n_samples", "gradient_samples", low=2)
    if not params:
        raise ValueError("gradient_samples: params is empty")
    rows = []
    for _ in range(n_samples):
        grads = torch.autograd.grad(loss_fn(), params, allow_unused=True)
        rows.append(
            torch.cat(
                [
                    (g if g is not None else torch.zeros_like(p)).reshape(-1)
                    for g, p in zip(grads, params, strict=True)
                ]
            )
        )
    return torch.stack(rows)


def loglog_slope(
    K: Sequence[float] | np.ndarray | Tensor, snr: Sequence[float] | np.ndarray | Tensor
) -> tuple[float, float]:
    """Least-squares line ``log snr = a log K + b`` (``np.polyfit``); returns ``(a, b)``.

    For the IWAE the theory predicts ``a = -1/2`` for the encoder and ``a = +1/2`` for the decoder
    (Rainforth et al., 2018).
    """
    K = np.asarray(K, dtype=np.float64)
    snr = np.asarray(snr, dtype=np.float64)
    if K.ndim != 1 or K.shape != snr.shape or K.size < 2:
        raise ValueError(
            "loglog_slope: K and snr must be 1-D of equal length >= 2, got shapes "
            f"{K.shape} and {snr.shape}"
        )
    if (K <= 0).any() or (snr <= 0).any() or not np.isfinite(snr).all():
        raise ValueError("loglog_slope: K and snr must be positive and finite")
    a, b = np.polyfit(np.log(K), np.log(snr), 1)
    return float(a), float(b)
