"""Diffusion as a deep hierarchical VAE: the fixed Gaussian encoder and its closed forms.

The forward process (the "encoder") is fixed: ``q(z_t | z_{t-1}) = N(sqrt(1 - beta_t) z_{t-1},
beta_t I)`` for ``t = 1..T``, with ``z_0 = x``. Conventions shared by every function here:

* ``betas`` is a 1-D float tensor ``[T]`` with ``betas[t - 1] = beta_t``, each in ``(0, 1)``;
* ``t`` is a Python integer in ``1..T`` (the posterior needs ``t >= 2``);
* ``alpha_t = 1 - beta_t`` and ``abar_t = prod_{s <= t} alpha_s`` (``abar_0 = 1``);
* ``(mean, var)`` pairs: ``mean`` has the shape of the data, ``var`` is a 0-d tensor that
  broadcasts to it (the forward process is isotropic);
* log-densities and ELBO terms are in **nats**, summed over the data's dimensions.

The Gaussian-data functions give every term of the ELBO in closed form for one-dimensional data
``x ~ N(m, s^2)`` (applied per coordinate), with the reverse model that is optimal for it:
``p(z_{t-1} | z_t) = q(z_{t-1} | z_t, x = E[x | z_t])`` with variance ``beta~_t``, and the
Gaussian decoder ``p(x | z_1) = N(E[x | z_1], Var(x | z_1))``. They are what Lecture 12 checks the
Monte Carlo training estimator and the continuous-time limit against.

The learned reverse process (trained and sampled by the functions of the last section) predicts
the noise: a network ``eps_model(z_t, t) -> eps_hat`` (``t`` an int64 tensor ``[B]`` of steps in
``1..T``, on the device of ``z_t``) gives ``x_hat = (z_t - sqrt(1 - abar_t) eps_hat) /
sqrt(abar_t)`` and the reverse step ``p(z_{t-1} | z_t) = q(z_{t-1} | z_t, x = x_hat)`` with
variance ``beta~_t`` (``t >= 2``); the decoder is ``p(x | z_1) = N(x_hat(z_1), sigma_1^2 I)``.
With this parameterization
``KL(q(z_{t-1} | z_t, x) || p(z_{t-1} | z_t)) = w_t ||eps - eps_hat||^2`` with the weights of
:func:`eps_kl_weights`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dgmlib.validation import (
    check_choice,
    check_int,
    check_positive,
    check_tensor,
    validation_enabled,
)

__all__ = [
    "WEIGHTINGS",
    "alpha_bars",
    "ddpm_loss",
    "ddpm_sample",
    "elbo_estimate",
    "eps_kl_weights",
    "linear_betas",
    "log_snr_betas",
    "posterior_variances",
    "forward_marginal",
    "forward_posterior",
    "forward_sample",
    "gaussian_data_elbo_terms",
    "gaussian_data_diffusion_limit",
    "snr",
]

_WHERE = "dgmlib.diffusion"


def _check_betas(betas: Tensor, where: str) -> Tensor:
    """``betas``: a float tensor ``[T]`` with every entry in ``(0, 1)``."""
    check_tensor(betas, "betas", where)
    if validation_enabled():
        if betas.dim() != 1:
            raise ValueError(f"{where}: betas must be 1-D [T], got shape {tuple(betas.shape)}")
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError(f"{where}: every beta_t must lie in (0, 1), got {betas.tolist()[:8]}")
    return betas


def _check_t(t: int, T: int, where: str, low: int = 1) -> int:
    """``t``: a Python int in ``low..T`` (the range checked here, the type by ``check_int``)."""
    if isinstance(t, int) and not low <= t <= T:
        raise ValueError(f"{where}: t must be an integer in {low}..{T} (T = len(betas)), got {t}")
    return check_int(t, "t", where, low=low)


def alpha_bars(betas: Tensor) -> Tensor:
    """``[abar_0, abar_1, ..., abar_T]`` (length ``T + 1``, ``abar_0 = 1``) from ``betas [T]``."""
    _check_betas(betas, f"{_WHERE}.alpha_bars")
    one = torch.ones(1, dtype=betas.dtype, device=betas.device)
    return torch.cat([one, torch.cumprod(1.0 - betas, dim=0)])


def snr(betas: Tensor) -> Tensor:
    """Signal-to-noise ratios ``abar_t / (1 - abar_t)`` for ``t = 1..T``: ``[T]``, decreasing."""
    ab = alpha_bars(betas)[1:]
    return ab / (1.0 - ab)


def forward_marginal(z0: Tensor, t: int, betas: Tensor) -> tuple[Tensor, Tensor]:
    """``q(z_t | z_0) = N(sqrt(abar_t) z_0, (1 - abar_t) I)``: ``(mean [like z0], var [])``."""
    where = f"{_WHERE}.forward_marginal"
    check_tensor(z0, "z0", where, min_ndim=0)
    _check_t(t, len(_check_betas(betas, where)), where)
    ab = alpha_bars(betas)[t].to(z0.dtype)
    return ab.sqrt() * z0, 1.0 - ab


def forward_posterior(z0: Tensor, zt: Tensor, t: int, betas: Tensor) -> tuple[Tensor, Tensor]:
    """``q(z_{t-1} | z_t, z_0) = N(mean, var I)`` for ``t >= 2``: ``(mean [broadcast], var [])``.

    ``mean = sqrt(abar_{t-1}) beta_t / (1 - abar_t) z_0 + sqrt(alpha_t) (1 - abar_{t-1}) /
    (1 - abar_t) z_t`` and ``var = (1 - abar_{t-1}) / (1 - abar_t) beta_t``.
    """
    where = f"{_WHERE}.forward_posterior"
    check_tensor(z0, "z0", where, min_ndim=0)
    check_tensor(zt, "zt", where, min_ndim=0)
    _check_t(t, len(_check_betas(betas, where)), where, low=2)
    try:
        torch.broadcast_shapes(z0.shape, zt.shape)
    except RuntimeError:
        raise ValueError(
            f"{where}: z0 {tuple(z0.shape)} and zt {tuple(zt.shape)} do not broadcast"
        ) from None
    ab = alpha_bars(betas).to(z0.dtype)
    beta = betas[t - 1].to(z0.dtype)
    ab_t, ab_prev = ab[t], ab[t - 1]
    mean = (ab_prev.sqrt() * beta * z0 + (1.0 - beta).sqrt() * (1.0 - ab_prev) * zt) / (1.0 - ab_t)
    return mean, (1.0 - ab_prev) / (1.0 - ab_t) * beta


def forward_sample(z0: Tensor, betas: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Simulate ``z_t = sqrt(1 - beta_t) z_{t-1} + sqrt(beta_t) eps_t``: ``[T + 1, *z0.shape]``.

    Row ``t`` holds ``z_t`` (row 0 is ``z0`` itself); the noise is drawn step by step.
    """
    where = f"{_WHERE}.forward_sample"
    check_tensor(z0, "z0", where, min_ndim=0)
    _check_betas(betas, where)
    out = [z0]
    for beta in betas.to(z0.dtype):
        eps = torch.randn(z0.shape, generator=generator, dtype=z0.dtype, device=z0.device)
        out.append((1.0 - beta).sqrt() * out[-1] + beta.sqrt() * eps)
    return torch.stack(out)


def _gaussian_data_check(m: float, s2: float, where: str) -> None:
    """A finite mean ``m`` and a variance ``s2 > 0``."""
    if not math.isfinite(m):
        raise ValueError(f"{where}: the mean m must be finite, got {m}")
    check_positive(s2, "s2", where)


def gaussian_data_elbo_terms(x: Tensor, m: float, s2: float, betas: Tensor) -> dict[str, Tensor]:
    """Every term of the exact ELBO of data ``x ~ N(m, s2)`` under the optimal reverse model.

    ``x``: ``[...]`` (each element a 1-D data point). Returns tensors of ``x``'s shape, in nats:
    ``"reconstruction"`` = ``E_q log p(x | z_1)``; ``"diffusion"`` = ``sum_{t=2}^T E_q KL(q(z_{t-1}
    | z_t, x) || p(z_{t-1} | z_t))``, and ``"per_step"`` the same KLs ``[T - 1, ...]`` for ``t =
    2..T``; ``"prior"`` = ``KL(q(z_T | x) || N(0, 1))``; ``"elbo"`` = reconstruction - diffusion -
    prior. Expectations over ``q(z_t | x)`` are taken exactly (the integrands are quadratic).
    """
    where = f"{_WHERE}.gaussian_data_elbo_terms"
    check_tensor(x, "x", where, min_ndim=0)
    _check_betas(betas, where)
    _gaussian_data_check(m, s2, where)
    ab = alpha_bars(betas).to(x.dtype)
    T = len(betas)
    d = x - m

    def denoiser_gain(t: int) -> Tensor:
        """g_t in E[x | z_t] = m + g_t (z_t - sqrt(abar_t) m)."""
        return ab[t].sqrt() * s2 / (ab[t] * s2 + 1.0 - ab[t])

    def mse(t: int) -> Tensor:
        """E_{z_t ~ q(z_t | x)} (x - E[x | z_t])^2 for the given x."""
        g = denoiser_gain(t)
        return d**2 * (1.0 - g * ab[t].sqrt()) ** 2 + g**2 * (1.0 - ab[t])

    var1 = s2 * (1.0 - ab[1]) / (ab[1] * s2 + 1.0 - ab[1])  # Var(x | z_1)
    recon = -0.5 * (math.log(2 * math.pi) + var1.log() + mse(1) / var1)
    per_step = []
    for t in range(2, T + 1):
        beta = betas[t - 1].to(x.dtype)
        coef = ab[t - 1].sqrt() * beta / (1.0 - ab[t])  # mean of q(z_{t-1}|z_t, x) per unit of x
        post_var = (1.0 - ab[t - 1]) / (1.0 - ab[t]) * beta
        per_step.append(0.5 * coef**2 * mse(t) / post_var)
    per_step_t = torch.stack(per_step) if per_step else x.new_zeros((0, *x.shape))
    mean_T, var_T = ab[T].sqrt() * x, 1.0 - ab[T]
    prior = 0.5 * (var_T + mean_T**2 - 1.0 - var_T.log())
    diffusion = per_step_t.sum(0)
    return {
        "reconstruction": recon,
        "diffusion": diffusion,
        "per_step": per_step_t,
        "prior": prior,
        "elbo": recon - diffusion - prior,
    }


def gaussian_data_diffusion_limit(s2: float, snr_min: float, snr_max: float) -> float:
    """The continuous-time diffusion term ``(1/2) log((1 + snr_max s2) / (1 + snr_min s2))``.

    It is the data-averaged limit of ``gaussian_data_elbo_terms(...)["diffusion"]`` as the steps
    between ``snr_max`` (at t = 1) and ``snr_min`` (at t = T) become fine (I-MMSE identity), in
    nats per coordinate.
    """
    where = f"{_WHERE}.gaussian_data_diffusion_limit"
    _gaussian_data_check(0.0, s2, where)
    check_positive(snr_min, "snr_min", where, allow_zero=True)
    if not snr_min <= snr_max:
        raise ValueError(f"{where}: need snr_min <= snr_max, got {snr_min}, {snr_max}")
    return 0.5 * math.log((1 + snr_max * s2) / (1 + snr_min * s2))


# --------------------------------------------------------------------------------------------
# A learned reverse process: noise prediction, its ELBO, training loss and ancestral sampling
# --------------------------------------------------------------------------------------------

WEIGHTINGS = ("simple", "elbo", "elbo_is")


def linear_betas(T: int, beta_1: float = 1e-4, beta_T: float = 0.02) -> Tensor:
    """Ho et al.'s schedule: ``beta_t`` linear from ``beta_1`` to ``beta_T``, float64 ``[T]``."""
    where = f"{_WHERE}.linear_betas"
    check_int(T, "T", where)
    if not 0 < beta_1 <= beta_T < 1:
        raise ValueError(f"{where}: need 0 < beta_1 <= beta_T < 1, got {beta_1}, {beta_T}")
    return torch.linspace(beta_1, beta_T, T, dtype=torch.float64)


def log_snr_betas(T: int, snr_max: float = 1e4, snr_min: float = 1e-4) -> Tensor:
    """Betas whose log-SNR falls linearly from ``log snr_max`` (t = 1) to ``log snr_min`` (t = T).

    ``abar_t = sigmoid(log snr_t)``, ``beta_t = 1 - abar_t / abar_{t-1}`` (``abar_0 = 1``);
    float64 ``[T]``. The end points stay fixed as ``T`` grows: the schedule of a continuous-time
    limit.
    """
    where = f"{_WHERE}.log_snr_betas"
    check_int(T, "T", where)
    check_positive(snr_min, "snr_min", where)
    if not snr_min <= snr_max:
        raise ValueError(f"{where}: need snr_min <= snr_max, got {snr_min}, {snr_max}")
    lam = torch.linspace(math.log(snr_max), math.log(snr_min), T, dtype=torch.float64)
    ab = torch.sigmoid(lam)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    return 1.0 - ab / prev


def posterior_variances(betas: Tensor) -> Tensor:
    """``[beta~_1, ..., beta~_T]`` with ``beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t``.

    ``beta~_1 = 0``: given ``z_1`` and ``z_0`` nothing is left to sample.
    """
    ab = alpha_bars(betas)
    return (1.0 - ab[:-1]) / (1.0 - ab[1:]) * betas


def eps_kl_weights(betas: Tensor, decoder_var: float | None = None) -> Tensor:
    """``w_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - abar_t))`` for ``t = 1..T``: ``[T]``.

    For ``t >= 2``, ``sigma_t^2 = beta~_t`` and ``w_t ||eps - eps_hat||^2`` is the KL term of step
    ``t``. Entry ``t = 1`` uses ``sigma_1^2 = decoder_var`` (default ``beta_1``): there
    ``w_1 ||eps - eps_hat||^2`` is the squared-error part ``||x - x_hat||^2 / (2 sigma_1^2)`` of
    the decoder's negative log-likelihood.
    """
    ab = alpha_bars(betas)
    sigma2 = posterior_variances(betas).clone()
    sigma2[0] = betas[0] if decoder_var is None else decoder_var
    return betas**2 / (2.0 * sigma2 * (1.0 - betas) * (1.0 - ab[1:]))


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    """Per-example values ``[B]`` shaped to broadcast against a batch ``like [B, ...]``."""
    return v.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


def _check_batch(x: Tensor, name: str, where: str) -> Tensor:
    """A batch ``[B, ...]`` of at least one example."""
    check_tensor(x, name, where, min_ndim=1)
    if validation_enabled() and len(x) == 0:
        raise ValueError(f"{where}: {name} must hold at least one example")
    return x


def _noisy(x: Tensor, t: Tensor, ab: Tensor, eps: Tensor) -> Tensor:
    return _bcast(ab[t].sqrt(), x) * x + _bcast((1.0 - ab[t]).sqrt(), x) * eps


def _predict_x(z: Tensor, t: Tensor, ab: Tensor, eps_hat: Tensor) -> Tensor:
    return (z - _bcast((1.0 - ab[t]).sqrt(), z) * eps_hat) / _bcast(ab[t].sqrt(), z)


def ddpm_loss(
    eps_model,
    x: Tensor,
    betas: Tensor,
    weighting: str = "simple",
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """The training objective with one random step per example: ``{"loss", "mse"}`` (scalars).

    ``t ~ U{1..T}``, ``eps ~ N(0, I)``, ``z_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps``; ``mse``
    is ``||eps - eps_model(z_t, t)||^2`` averaged over examples and dimensions. ``weighting``:

    * ``"simple"``: ``loss = mse`` (Ho et al.'s ``L_simple``);
    * ``"elbo"``: ``loss = T w_t ||eps - eps_hat||^2`` averaged likewise, an unbiased estimate
      of the negative ELBO per dimension up to terms that do not depend on the network (the
      prior KL and the decoder's log-normalizer); ``w_t`` from :func:`eps_kl_weights`;
    * ``"elbo_is"``: the same expectation estimated by importance sampling of the step:
      ``t ~ w_t / sum_s w_s`` and ``loss = (sum_s w_s) ||eps - eps_hat||^2`` (every example has
      the same weight, so the estimate's variance no longer comes from the weights).
    """
    where = f"{_WHERE}.ddpm_loss"
    _check_batch(x, "x", where)
    T = len(_check_betas(betas, where))
    check_choice(weighting, "weighting", where, WEIGHTINGS)
    ab = alpha_bars(betas).to(x.device)
    w = eps_kl_weights(betas).to(device=x.device)
    if weighting == "elbo_is":
        t = 1 + torch.multinomial(w / w.sum(), len(x), replacement=True, generator=generator)
    else:
        t = torch.randint(1, T + 1, (len(x),), generator=generator, device=x.device)
    eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    eps_hat = eps_model(_noisy(x, t, ab, eps), t)
    sq = (eps - eps_hat).square().flatten(1).mean(1)  # per example, per dimension
    if weighting == "simple":
        loss = sq.mean()
    elif weighting == "elbo":
        loss = (T * w[t - 1].to(x.dtype) * sq).mean()
    else:
        loss = float(w.sum()) * sq.mean()
    return {"loss": loss, "mse": sq.mean().detach()}


def _prior_kl(x: Tensor, ab_T: Tensor) -> Tensor:
    """``KL(q(z_T | x) || N(0, I))`` per example, summed over dimensions: ``[B]``."""
    var = (1.0 - ab_T).to(x.dtype)
    d = x[0].numel()
    return 0.5 * ((ab_T.to(x.dtype) * x.square()).flatten(1).sum(1) + d * (var - 1 - var.log()))


def _prior_and_reconstruction(
    eps_model, x: Tensor, betas: Tensor, decoder_var: float | None, generator
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(abar [T + 1], w [T], prior KL [B], log N(x; x_hat(z_1), sigma_1^2 I) [B])``, the
    reconstruction at one ``z_1 ~ q(z_1 | x)`` per example; ``sigma_1^2 = decoder_var``
    (default ``beta_1``)."""
    ab = alpha_bars(betas).to(x.device)
    var1 = float(betas[0] if decoder_var is None else decoder_var)
    w = eps_kl_weights(betas, var1).to(x.device)
    t1 = torch.ones(len(x), dtype=torch.long, device=x.device)
    eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    z1 = _noisy(x, t1, ab, eps)
    x_hat = _predict_x(z1, t1, ab, eps_model(z1, t1))
    d = x[0].numel()
    recon = -0.5 * (
        (x - x_hat).square().flatten(1).sum(1) / var1 + d * math.log(2 * math.pi * var1)
    )
    return ab, w, _prior_kl(x, ab[-1]), recon


def _step_kl(eps_model, x: Tensor, t: Tensor, ab: Tensor, w: Tensor, generator) -> Tensor:
    """``KL_t = w_t ||eps - eps_hat(z_t, t)||^2`` at one ``z_t ~ q(z_t | x)`` each: ``[B]``."""
    eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    eps_hat = eps_model(_noisy(x, t, ab, eps), t)
    return w[t - 1].to(x.dtype) * (eps - eps_hat).square().flatten(1).sum(1)


@torch.no_grad()
def elbo_estimate(
    eps_model,
    x: Tensor,
    betas: Tensor,
    decoder_var: float | None = None,
    generator: torch.Generator | None = None,
    t_probs: Tensor | None = None,
    every_step: bool = False,
) -> dict[str, Tensor]:
    """An unbiased estimate of the ELBO of each example: dict of ``[B]`` tensors, nats summed
    over the dimensions of an example.

    ``"prior"`` = ``KL(q(z_T | x) || N(0, I))`` (exact); ``"reconstruction"`` = ``log p(x |
    z_1)`` at one ``z_1 ~ q(z_1 | x)`` (decoder variance ``sigma_1^2 = decoder_var``, default
    ``beta_1``); ``"diffusion"`` estimates the sum of the ``T - 1`` KL terms; ``"elbo"`` =
    reconstruction - diffusion - prior. The diffusion term:

    * by default, ``(T - 1) KL_t`` at one ``t ~ U{2..T}`` and one ``z_t ~ q(z_t | x)``, with the
      steps drawn in ``"t"``; with ``t_probs``, a proposal ``[T - 1]`` over ``t = 2..T``
      (positive, summing to 1), the step is drawn from it and the estimate is
      ``KL_t / t_probs[t - 2]`` (importance sampling: still unbiased, with a smaller variance
      when the proposal follows the size of the terms);
    * with ``every_step=True``, ``sum_{t=2}^T KL_t`` with one ``z_t ~ q(z_t | x)`` per step
      (``T`` network calls, a smaller variance), the terms in ``"per_step"`` ``[T - 1, B]``.
    """
    where = f"{_WHERE}.elbo_estimate"
    _check_batch(x, "x", where)
    T = len(_check_betas(betas, where))
    if T < 2 and not every_step:
        raise ValueError(f"{where}: a random step needs T >= 2 steps, got {T}")
    if t_probs is not None:
        check_tensor(t_probs, "t_probs", where)
        if every_step:
            raise ValueError(f"{where}: t_probs draws one step; every_step=True takes them all")
        if t_probs.shape != (T - 1,) or not bool((t_probs > 0).all()):
            raise ValueError(f"{where}: t_probs must be positive with shape ({T - 1},)")
        if abs(float(t_probs.sum()) - 1.0) > 1e-6:
            raise ValueError(f"{where}: t_probs must sum to 1, got {float(t_probs.sum())}")
    ab, w, prior, recon = _prior_and_reconstruction(eps_model, x, betas, decoder_var, generator)
    out = {"reconstruction": recon, "prior": prior}
    if every_step:
        steps = [
            torch.full((len(x),), s, dtype=torch.long, device=x.device) for s in range(2, T + 1)
        ]
        per = [_step_kl(eps_model, x, t, ab, w, generator) for t in steps]
        out["per_step"] = torch.stack(per) if per else x.new_zeros((0, len(x)))
        out["diffusion"] = out["per_step"].sum(0)
    elif t_probs is None:
        out["t"] = torch.randint(2, T + 1, (len(x),), generator=generator, device=x.device)
        out["diffusion"] = (T - 1) * _step_kl(eps_model, x, out["t"], ab, w, generator)
    else:
        draw = torch.multinomial(t_probs.double(), len(x), replacement=True, generator=generator)
        out["t"] = 2 + draw
        kl = _step_kl(eps_model, x, out["t"], ab, w, generator)
        out["diffusion"] = kl / t_probs.to(device=x.device, dtype=x.dtype)[out["t"] - 2]
    out["elbo"] = recon - out["diffusion"] - prior
    return out


@torch.no_grad()
def ddpm_sample(
    eps_model,
    shape: tuple[int, ...],
    betas: Tensor,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    keep: tuple[int, ...] = (),
    device: str | torch.device | None = None,
) -> tuple[Tensor, dict[int, Tensor]]:
    """Ancestral sampling: ``z_T ~ N(0, I)``, ``z_{t-1} ~ p(z_{t-1} | z_t)`` down to ``z_1``.

    Each reverse step is ``N(mu_theta(z_t, t), beta~_t I)`` with ``mu_theta = (z_t - beta_t /
    sqrt(1 - abar_t) eps_hat) / sqrt(alpha_t)``; the result is the decoder's mean
    ``x_hat(z_1)`` (shown without the decoder's noise, as is usual). Returns ``(x [shape],
    {t: z_t for t in keep})`` of ``dtype`` on ``device`` (default: the CPU; a ``generator`` must
    live there too).
    """
    where = f"{_WHERE}.ddpm_sample"
    T = len(_check_betas(betas, where))
    device = torch.device("cpu") if device is None else torch.device(device)
    ab = alpha_bars(betas)
    post = posterior_variances(betas)
    z = torch.randn(shape, generator=generator, dtype=dtype, device=device)
    kept = {T: z.clone()} if T in keep else {}
    for step in range(T, 1, -1):
        t = torch.full((shape[0],), step, dtype=torch.long, device=device)
        eps_hat = eps_model(z, t)
        beta = float(betas[step - 1])
        mean = (z - beta / math.sqrt(1.0 - float(ab[step])) * eps_hat) / math.sqrt(1.0 - beta)
        noise = torch.randn(shape, generator=generator, dtype=dtype, device=device)
        z = mean + math.sqrt(float(post[step - 1])) * noise
        if step - 1 in keep:
            kept[step - 1] = z.clone()
    t1 = torch.ones(shape[0], dtype=torch.long, device=device)
    return _predict_x(z, t1, ab.to(device), eps_model(z, t1)), kept
