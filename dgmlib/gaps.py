"""The two inference gaps of a VAE: approximation (the encoder family), amortization (the network).

For one data point ``x`` and a fixed decoder, with ``q_phi`` the encoder's Gaussian and ``q*`` the
best diagonal Gaussian for ``x`` alone (found by per-image optimisation)::

    log p(x) - ELBO(q_phi) = [log p(x) - ELBO(q*)] + [ELBO(q*) - ELBO(q_phi)]
                           =  approximation gap    +  amortization gap

(Cremer et al., 2018). A model here is any object with ``encode(x) -> (mu, logvar)`` (each
``[B, Z]``) and ``decoder.log_prob(x, z)`` (``[B]`` or ``[K, B]``), e.g.
:class:`dgmlib.models.vae.VAE`; the prior is ``N(0, I)``. All values are nats, one per example
(nothing is averaged over the batch unless a name says so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dgmlib.bounds import estimate_nll
from dgmlib.distributions import gaussian_log_prob, kl_normal_std_normal, standard_normal_log_prob
from dgmlib.stats import mean_se
from dgmlib.validation import check_choice, check_int, check_positive, check_tensor

__all__ = [
    "InferenceGaps",
    "doubled_steps_change",
    "inference_gaps",
    "local_elbo",
    "mixture_log_weights",
    "optimize_local_posterior",
]


def _check_model(model: Any, where: str) -> None:
    """Raise a TypeError unless ``model`` has ``encode`` and ``decoder.log_prob``."""
    if not callable(getattr(model, "encode", None)) or not callable(
        getattr(getattr(model, "decoder", None), "log_prob", None)
    ):
        raise TypeError(
            f"{where}: model must have encode(x) and decoder.log_prob(x, z), got "
            f"{type(model).__name__}"
        )


def local_elbo(
    model: Any,
    x: Tensor,
    mu: Tensor,
    logvar: Tensor,
    n_samples: int = 64,
    generator: torch.Generator | None = None,
) -> Tensor:
    """ELBO of q = N(mu, diag e^logvar) per example: ``mean_s log p(x|z_s) - KL(q || N(0, I))``.

    ``x [B, ...]``, ``mu, logvar [B, Z]``; ``n_samples`` reparametrized draws; returns ``[B]``,
    nats; differentiable in ``mu`` and ``logvar`` (and the decoder's parameters).
    """
    where = "local_elbo"
    _check_model(model, where)
    check_int(n_samples, "n_samples", where)
    check_tensor(x, "x", where)
    check_tensor(mu, "mu", where)
    check_tensor(logvar, "logvar", where)
    if mu.dim() != 2 or logvar.shape != mu.shape or mu.shape[0] != x.shape[0]:
        raise ValueError(
            f"{where}: mu and logvar must both have shape [B, Z] with B = {x.shape[0]}, got "
            f"mu {tuple(mu.shape)} and logvar {tuple(logvar.shape)}"
        )
    eps = torch.randn((n_samples, *mu.shape), generator=generator, dtype=mu.dtype, device=mu.device)
    z = mu + torch.exp(0.5 * logvar) * eps
    return model.decoder.log_prob(x, z).mean(0) - kl_normal_std_normal(mu, logvar)


def optimize_local_posterior(
    model: Any,
    x: Tensor,
    steps: int = 300,
    lr: float = 0.05,
    generator: torch.Generator | None = None,
    n_samples: int = 1,
    n_eval: int = 64,
    init: str = "encoder",
) -> dict[str, Tensor]:
    """Per-example optimal diagonal Gaussian q*(z) = N(mu, diag e^logvar) for a fixed decoder.

    Adam on the ``n_samples``-sample ELBO of every example at once (vectorised over the batch:
    the loss is the *sum* of per-example ELBOs, so examples do not interact), started at the
    encoder's output (``init="encoder"``) or at the prior (``"prior"``); the step size decays
    from ``lr`` to ``lr / 20`` along a cosine. Returns ``"mu"`` and
    ``"logvar"`` (``[B, Z]``, detached) and ``"elbo"``, the ELBO of q* by :func:`local_elbo` with
    ``n_eval`` samples (``[B]``, nats, no gradient). The model's parameters are not changed.
    """
    where = "optimize_local_posterior"
    _check_model(model, where)
    check_tensor(x, "x", where)
    check_int(steps, "steps", where, low=0)
    check_int(n_samples, "n_samples", where)
    check_int(n_eval, "n_eval", where)
    check_positive(lr, "lr", where)
    check_choice(init, "init", where, ("encoder", "prior"))
    with torch.no_grad():
        mu0, logvar0 = model.encode(x)
    if init == "prior":
        mu0, logvar0 = torch.zeros_like(mu0), torch.zeros_like(logvar0)
    mu = mu0.detach().clone().requires_grad_(True)
    logvar = logvar0.detach().clone().requires_grad_(True)
    params = [p for p in getattr(model, "parameters", list)() if p.requires_grad]
    was = [p.requires_grad for p in params]
    for p in params:  # only q's parameters receive gradients
        p.requires_grad_(False)
    try:
        opt = torch.optim.Adam([mu, logvar], lr=lr)
        # cosine decay from lr to lr / 20 over the run quiets the gradient noise
        decay = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=max(steps, 1), eta_min=lr / 20
        )
        for _ in range(steps):
            loss = -local_elbo(model, x, mu, logvar, n_samples, generator).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            decay.step()
    finally:
        for p, r in zip(params, was, strict=True):
            p.requires_grad_(r)
    mu, logvar = mu.detach(), logvar.detach()
    with torch.no_grad():
        elbo = local_elbo(model, x, mu, logvar, n_eval, generator)
    return {"mu": mu, "logvar": logvar, "elbo": elbo}


def mixture_log_weights(
    model: Any,
    x: Tensor,
    q1: tuple[Tensor, Tensor],
    q2: tuple[Tensor, Tensor],
    K: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``log p(x, z_k) - log r(z_k)`` for ``z_k ~ r = (q1 + q2) / 2``: ``[K, B]``, nats.

    ``q1`` and ``q2`` are ``(mu, logvar)`` pairs, each ``[B, Z]``, of diagonal Gaussians; the
    first ``ceil(K / 2)`` samples come from ``q1``, the rest from ``q2`` (stratified: the
    average of the weights is still an unbiased estimate of p(x)).
    """
    where = "mixture_log_weights"
    _check_model(model, where)
    check_int(K, "K", where)
    (m1, lv1), (m2, lv2) = q1, q2
    k1 = (K + 1) // 2
    eps = torch.randn((K, *m1.shape), generator=generator, dtype=m1.dtype, device=m1.device)
    z = torch.cat(
        [m1 + torch.exp(0.5 * lv1) * eps[:k1], m2 + torch.exp(0.5 * lv2) * eps[k1:]], dim=0
    )
    log_r = torch.logaddexp(gaussian_log_prob(z, m1, lv1), gaussian_log_prob(z, m2, lv2))
    log_r = log_r - math.log(2.0)
    return model.decoder.log_prob(x, z) + standard_normal_log_prob(z) - log_r


@dataclass(frozen=True)
class InferenceGaps:
    """Per-example values ``[B]``, nats: log p(x), the two ELBOs and the two gaps; and q*.

    ``mu_optimized`` and ``logvar_optimized`` (``[B, Z]``) are the parameters of q*, e.g. for a
    convergence check (:func:`doubled_steps_change`) or an independent evaluation of its ELBO.
    """

    log_p: Tensor
    elbo_amortized: Tensor
    elbo_optimized: Tensor
    mu_optimized: Tensor | None = None
    logvar_optimized: Tensor | None = None

    @property
    def approximation_gap(self) -> Tensor:
        """log p(x) - ELBO(q*): what the diagonal-Gaussian family itself costs, ``[B]``."""
        return self.log_p - self.elbo_optimized

    @property
    def amortization_gap(self) -> Tensor:
        """ELBO(q*) - ELBO(q_phi): what sharing one encoder network costs, ``[B]``."""
        return self.elbo_optimized - self.elbo_amortized

    @property
    def total_gap(self) -> Tensor:
        """log p(x) - ELBO(q_phi), the sum of the two gaps, ``[B]``."""
        return self.log_p - self.elbo_amortized

    def summary(self) -> dict[str, tuple[float, float]]:
        """``{name: (mean, standard error)}`` over the examples for every value and gap."""
        names: tuple[str, ...] = ("log_p", "elbo_amortized", "elbo_optimized")
        names += ("approximation_gap", "amortization_gap", "total_gap")
        return {n: mean_se(getattr(self, n)) for n in names}


def inference_gaps(
    model: Any,
    x: Tensor,
    K: int = 1000,
    steps: int = 300,
    lr: float = 0.05,
    n_eval: int = 64,
    generator: torch.Generator | None = None,
    chunk: int = 250,
) -> InferenceGaps:
    """Approximation and amortization gaps of ``model`` on the examples ``x [B, ...]`` (B >= 2).

    ``log_p``: the K-sample importance-weighted estimate (:func:`dgmlib.bounds.estimate_nll`,
    negated) with the proposal ``(q_phi + q*) / 2`` (:func:`mixture_log_weights`), so that it is
    good wherever either Gaussian is; ``elbo_amortized``: the ELBO of the encoder's
    q_phi; ``elbo_optimized``: the ELBO of q* from :func:`optimize_local_posterior` (``steps``
    Adam steps at ``lr``, started at the encoder). Both ELBOs use ``n_eval`` samples drawn with
    the same noise (common random numbers). Nats, one value per example.
    """
    where = "inference_gaps"
    _check_model(model, where)
    check_tensor(x, "x", where)
    check_int(K, "K", where)
    if x.shape[0] < 2:
        raise ValueError(f"{where}: need at least 2 examples for standard errors, got {x.shape[0]}")
    local = optimize_local_posterior(model, x, steps, lr, generator, n_eval=n_eval)
    with torch.no_grad():
        mu, logvar = model.encode(x)
        log_p = -estimate_nll(
            lambda xx, k: mixture_log_weights(
                model, xx, (mu, logvar), (local["mu"], local["logvar"]), k, generator
            ),
            x,
            K,
            chunk,
        )
        state = generator.get_state() if generator is not None else None
        elbo_amortized = local_elbo(model, x, mu, logvar, n_eval, generator)
        if generator is not None and state is not None:  # the same noise for q* as for q_phi
            generator.set_state(state)
        elbo_optimized = local_elbo(model, x, local["mu"], local["logvar"], n_eval, generator)
    return InferenceGaps(
        log_p=log_p.detach(),
        elbo_amortized=elbo_amortized,
        elbo_optimized=elbo_optimized,
        mu_optimized=local["mu"],
        logvar_optimized=local["logvar"],
    )


def doubled_steps_change(
    model: Any,
    x: Tensor,
    steps: int,
    lr: float = 0.05,
    n_eval: int = 64,
    generator: torch.Generator | None = None,
    q: tuple[Tensor, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Convergence check of q*: the rise of its ELBO when the optimisation runs twice as long.

    Runs :func:`optimize_local_posterior` for ``steps`` and for ``2 * steps`` Adam steps (same
    ``lr``, the cosine decay stretched over each run, both started at the encoder); ``q = (mu,
    logvar)`` of an existing ``steps``-step result (e.g. ``InferenceGaps.mu_optimized`` and
    ``.logvar_optimized``) replaces the first run. Both ELBOs are then evaluated by
    :func:`local_elbo` with the *same* ``n_eval`` noise draws (common random numbers), so that
    most of the Monte Carlo noise cancels in their difference.

    Returns ``"elbo"`` and ``"elbo_doubled"`` (``[B]``), ``"change"`` = ``elbo_doubled - elbo``
    (``[B]``, nats; :func:`dgmlib.stats.mean_se` of it gives the mean change and its standard
    error), and ``"mu"``, ``"logvar"``, ``"mu_doubled"``, ``"logvar_doubled"`` (``[B, Z]``). A
    mean change that is small against the uncertainty of the quantity q* enters says that
    stopping after ``steps`` biases it by little; a large one says q* is not yet optimal, so its
    ELBO, and hence an amortization gap, is underestimated and an approximation gap
    overestimated.
    """
    where = "doubled_steps_change"
    _check_model(model, where)
    check_tensor(x, "x", where)
    check_int(steps, "steps", where)
    check_int(n_eval, "n_eval", where)
    if q is None:
        short = optimize_local_posterior(model, x, steps, lr, generator, n_eval=1)
        mu, logvar = short["mu"], short["logvar"]
    else:
        mu, logvar = (t.detach() for t in q)
    long = optimize_local_posterior(model, x, 2 * steps, lr, generator, n_eval=1)
    with torch.no_grad():
        if generator is not None:
            state = generator.get_state()
            elbo = local_elbo(model, x, mu, logvar, n_eval, generator)
            generator.set_state(state)  # the same noise for both
        else:
            state = torch.get_rng_state()
            elbo = local_elbo(model, x, mu, logvar, n_eval)
            torch.set_rng_state(state)
        elbo_doubled = local_elbo(model, x, long["mu"], long["logvar"], n_eval, generator)
    return {
        "elbo": elbo,
        "elbo_doubled": elbo_doubled,
        "change": elbo_doubled - elbo,
        "mu": mu,
        "logvar": logvar,
        "mu_doubled": long["mu"],
        "logvar_doubled": long["logvar"],
    }
