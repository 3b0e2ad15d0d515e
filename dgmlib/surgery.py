r"""ELBO surgery: the aggregated posterior, and the average KL split into two parts.

For a data set ``x_1, ..., x_N`` and a Gaussian encoder ``q(z|x_n) = N(mu_n, diag(exp(logvar_n)))``
the **aggregated posterior** is the mixture ``q(z) = (1/N) sum_n q(z|x_n)``. With ``n`` uniform on
``{1..N}`` and ``z ~ q(z|x_n)`` (the joint ``q(n, z)``), the average KL term of the ELBO splits as
(Hoffman & Johnson, 2016)

.. math::

    \frac1N \sum_n \mathrm{KL}(q(z|x_n) \| p(z))
      = \mathrm{KL}(q(z) \| p(z)) + I_q(n; z),
    \qquad 0 \le I_q(n; z) \le \log N .

Shapes and units shared by every function here: encoder outputs ``mu``, ``logvar`` are ``[N, Z]``
(one row per data point), query points ``z`` are ``[M, Z]``; log-densities are **summed over the Z
latent dimensions**; every result is in **nats**. Invalid inputs raise a ``ValueError`` (a wrong
value) or a ``TypeError`` (a wrong type) that names the argument.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from dgmlib.distributions import gaussian_log_prob, kl_normal_std_normal
from dgmlib.kernels import mixture_logpdf
from dgmlib.stats import mean_se
from dgmlib.validation import check_int, check_positive, check_tensor

__all__ = [
    "PriorHoles",
    "SurgerySamples",
    "SurgeryTerms",
    "aggregate_posterior_log_prob",
    "average_kl_standard_normal",
    "elbo_surgery",
    "prior_holes",
    "sample_aggregate_posterior",
    "summarize_surgery",
    "surgery_samples",
]

#: Query points per call of the mixture kernel (each call touches M x N log-terms in tiles).
DEFAULT_CHUNK = 2048


def _check_posteriors(mu: Tensor, logvar: Tensor, where: str) -> tuple[int, int]:
    """Validate encoder outputs ``mu``, ``logvar`` ``[N, Z]``; return ``(N, Z)``."""
    check_tensor(mu, "mu", where, min_ndim=2)
    check_tensor(logvar, "logvar", where, min_ndim=2)
    if mu.dim() != 2 or mu.shape[0] < 1 or mu.shape[1] < 1:
        raise ValueError(
            f"{where}: mu must have shape [N, Z] with N, Z >= 1, got {tuple(mu.shape)}"
        )
    if logvar.shape != mu.shape:
        raise ValueError(
            f"{where}: logvar must have the shape of mu {tuple(mu.shape)}, "
            f"got {tuple(logvar.shape)}"
        )
    if not (torch.isfinite(mu).all() and torch.isfinite(logvar).all()):
        raise ValueError(f"{where}: mu and logvar must be finite")
    return mu.shape[0], mu.shape[1]


def aggregate_posterior_log_prob(
    z: Tensor, mu: Tensor, logvar: Tensor, chunk: int = DEFAULT_CHUNK
) -> Tensor:
    """``log q(z) = log (1/N) sum_n N(z; mu_n, diag(exp(logvar_n)))``: ``[M, Z]`` -> ``[M]``, nats.

    Computed by :func:`dgmlib.kernels.mixture_logpdf` in chunks of ``chunk`` query points, never
    forming the ``[M, N, Z]`` tensor. Differentiable; use ``torch.no_grad()`` for evaluation.
    """
    where = "aggregate_posterior_log_prob"
    _, d = _check_posteriors(mu, logvar, where)
    check_tensor(z, "z", where, min_ndim=2)
    if z.dim() != 2 or z.shape[1] != d:
        raise ValueError(f"{where}: z must have shape [M, {d}] (Z from mu), got {tuple(z.shape)}")
    check_int(chunk, "chunk", where)
    mu, logvar = mu.to(z.dtype), logvar.to(z.dtype)
    return torch.cat([mixture_logpdf(zc, mu, logvar) for zc in z.split(chunk)])


def sample_aggregate_posterior(
    mu: Tensor, logvar: Tensor, n: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """``n`` i.i.d. draws of ``(index, z)`` from ``q(n, z)``: index uniform, ``z ~ q(z|x_index)``.

    Returns ``(z [n, Z], index [n])``; the ``z`` alone are draws from the aggregated posterior.
    """
    where = "sample_aggregate_posterior"
    N, _ = _check_posteriors(mu, logvar, where)
    check_int(n, "n", where)
    idx = torch.randint(0, N, (n,), generator=generator)
    eps = torch.randn(n, mu.shape[1], generator=generator, dtype=mu.dtype)
    return mu[idx] + torch.exp(0.5 * logvar[idx]) * eps, idx


def average_kl_standard_normal(mu: Tensor, logvar: Tensor) -> float:
    """Exact ``(1/N) sum_n KL(q(z|x_n) || N(0, I))``: closed form per point, mean over N; nats."""
    _check_posteriors(mu, logvar, "average_kl_standard_normal")
    return float(kl_normal_std_normal(mu.double(), logvar.double()).mean())


class SurgerySamples(NamedTuple):
    """Draws ``(n_i, z_i) ~ q(n, z)`` and the three log-densities at them, each ``[M]``, nats."""

    z: Tensor  #: [M, Z] codes, draws from the aggregated posterior q(z)
    #: [M] data indices n_i (uniform on 0..N-1); the field shadows tuple.index (public name)
    index: Tensor  # type: ignore[assignment]
    log_q_cond: Tensor  #: [M] log q(z_i | x_{n_i}), float64
    log_q: Tensor  #: [M] log q(z_i), the aggregated posterior, float64
    log_p: Tensor  #: [M] log p(z_i), the prior, float64
    n_data: int  #: N


class SurgeryTerms(NamedTuple):
    """Monte Carlo estimates (nats) of the three terms of ELBO surgery, with standard errors.

    ``avg_kl = marginal_kl + mutual_info`` holds sample by sample, hence exactly for the means.
    """

    avg_kl: float  #: (1/N) sum_n KL(q(z|x_n) || p(z))
    avg_kl_se: float
    marginal_kl: float  #: KL(q(z) || p(z)), q(z) the aggregated posterior
    marginal_kl_se: float
    mutual_info: float  #: I_q(n; z) = E_q(n,z)[log q(z|x_n) - log q(z)], in [0, log N]
    mutual_info_se: float
    log_n: float  #: log N, the upper bound of the mutual information
    n_data: int
    n_samples: int


def surgery_samples(
    mu: Tensor,
    logvar: Tensor,
    prior_log_prob: Callable[[Tensor], Tensor],
    n_samples: int = 10_000,
    generator: torch.Generator | None = None,
    chunk: int = DEFAULT_CHUNK,
) -> SurgerySamples:
    """``n_samples`` i.i.d. draws ``(n_i, z_i) ~ q(n, z)`` with ``log q(z_i|x_{n_i})``,
    ``log q(z_i)`` and ``log p(z_i)`` (each ``[M]``, float64, nats); no gradients.

    ``mu``, ``logvar``: ``[N, Z]``; ``prior_log_prob(z [M, Z]) -> [M]`` is ``log p(z)`` in nats;
    ``log q(z)`` uses :func:`aggregate_posterior_log_prob`.
    """
    where = "surgery_samples"
    _check_posteriors(mu, logvar, where)
    check_int(n_samples, "n_samples", where)
    if not callable(prior_log_prob):
        raise TypeError(
            f"{where}: prior_log_prob must be callable, got {type(prior_log_prob).__name__}"
        )
    with torch.no_grad():
        z, idx = sample_aggregate_posterior(mu, logvar, n_samples, generator)
        log_q_cond = gaussian_log_prob(z, mu[idx], logvar[idx])
        log_q = aggregate_posterior_log_prob(z, mu, logvar, chunk)
        log_p = prior_log_prob(z)
        if not isinstance(log_p, Tensor) or tuple(log_p.shape) != (n_samples,):
            got = tuple(log_p.shape) if isinstance(log_p, Tensor) else type(log_p).__name__
            raise ValueError(
                f"{where}: prior_log_prob must map z [{n_samples}, Z] to shape [{n_samples}], "
                f"got {got}"
            )
    f64 = torch.float64
    return SurgerySamples(
        z, idx, log_q_cond.to(f64), log_q.to(f64), log_p.detach().to(f64), mu.shape[0]
    )


def summarize_surgery(s: SurgerySamples) -> SurgeryTerms:
    """Means and standard errors (``std / sqrt(M)``) of the per-draw terms of ``s``, nats:
    ``a_i = log q(z_i|x_{n_i}) - log p(z_i)`` (average KL), ``b_i = log q(z_i) - log p(z_i)``
    (marginal KL) and ``c_i = log q(z_i|x_{n_i}) - log q(z_i)`` (mutual information); needs
    ``M >= 2`` draws."""
    if len(s.z) < 2:
        raise ValueError(f"summarize_surgery: need >= 2 draws for standard errors, got {len(s.z)}")
    a, b, c = s.log_q_cond - s.log_p, s.log_q - s.log_p, s.log_q_cond - s.log_q
    (am, ase), (bm, bse), (cm, cse) = mean_se(a), mean_se(b), mean_se(c)
    return SurgeryTerms(am, ase, bm, bse, cm, cse, math.log(s.n_data), s.n_data, len(a))


def elbo_surgery(*args: Any, **kwargs: Any) -> SurgeryTerms:
    """Split the average KL of ``N`` Gaussian posteriors into ``KL(q(z) || p(z)) + I(n; z)``.

    Takes the arguments of :func:`surgery_samples` (``mu``, ``logvar`` ``[N, Z]``,
    ``prior_log_prob``, ``n_samples``, ``generator``, ``chunk``): draws ``n_samples`` pairs
    ``(n_i, z_i) ~ q(n, z)`` and averages the three per-draw terms (:func:`summarize_surgery`).
    Every ``c_i <= log N`` because ``q(z) >= q(z|x_n) / N`` (up to the rounding of the mixture
    kernel: pass float64 inputs to test the bound tightly). Runs without gradients.
    """
    return summarize_surgery(surgery_samples(*args, **kwargs))


class PriorHoles(NamedTuple):
    """How much prior mass lies where the aggregated posterior has little (nats, fractions)."""

    reverse_kl: float  #: KL(p(z) || q(z)) = E_p[log p(z) - log q(z)]
    reverse_kl_se: float
    hole_mass: float  #: P_p[q(z) < p(z) / ratio], the prior mass in "holes"
    hole_mass_se: float
    ratio: float


def prior_holes(log_p: Tensor, log_q: Tensor, ratio: float = 10.0) -> PriorHoles:
    """Prior-hole statistics from ``log p(z_i)``, ``log q(z_i)`` ``[M]`` at draws ``z_i ~ p(z)``.

    ``reverse_kl`` is the mean of ``log p - log q`` (large when the prior puts mass where no
    posterior does); ``hole_mass`` is the fraction of draws with ``q(z) < p(z) / ratio``. Both
    with standard errors over the ``M`` draws.
    """
    where = "prior_holes"
    check_tensor(log_p, "log_p", where)
    check_tensor(log_q, "log_q", where)
    if log_p.dim() != 1 or log_p.shape != log_q.shape or len(log_p) < 2:
        raise ValueError(
            f"{where}: log_p and log_q must both have shape [M] with M >= 2, got "
            f"{tuple(log_p.shape)} and {tuple(log_q.shape)}"
        )
    if check_positive(ratio, "ratio", where) <= 1:
        raise ValueError(f"{where}: ratio must be a number > 1, got {ratio!r}")
    d = (log_p - log_q).double()
    (kl, kl_se), (mass, mass_se) = mean_se(d), mean_se((d > math.log(ratio)).double())
    return PriorHoles(kl, kl_se, mass, mass_se, ratio)
