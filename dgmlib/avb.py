r"""Adversarial variational Bayes (Mescheder, Nowozin and Geiger, 2017): an implicit encoder whose
KL term is estimated by a discriminator ``T(x, z)``.

The ELBO ``E_q[log p(x|z)] - KL(q(z|x) || p(z))`` needs ``log q(z|x)`` only in its KL term. With
the density-ratio trick (:mod:`dgmlib.density_ratio`) a classifier of pairs, ``(x, z ~ q(z|x))``
labelled 1 against ``(x, z ~ p(z))`` labelled 0, has the optimal logit
``T*(x, z) = log q(z|x) - log p(z)``, so ``KL = E_q[T*]`` and the encoder may be any sampler
``z = g(x, eps)``: its density is never evaluated. Training alternates steps on two losses (or
takes simultaneous steps, :class:`AVBObjective`), per example and averaged over the batch
(nats):

* **primal** (encoder and decoder): ``-log p(x|z) + T(x, z)`` with ``z = g(x, eps)`` and the
  weights of ``T`` held fixed; gradients reach ``g`` through ``z``. Holding ``T`` fixed is exact
  at the optimum because ``E_q[grad_phi T*] = E_q[grad_phi log q_phi(z|x)] = 0``;
* **dual** (discriminator): ``softplus(-T(x, z_q)) + softplus(T(x, z_p))``, the logistic loss
  with ``z_q`` detached, ``z_p ~ p(z)``.

Shapes: ``x [B, x_dim]``, ``z [B, Z]`` (or ``[K, B, Z]`` for ``K`` samples per example), logits
``[B]`` (or ``[K, B]``). :class:`ImplicitEncoder` may add Gaussian noise of a fixed scale to its
output; its density is then a continuous mixture of Gaussians, which
:meth:`ImplicitEncoder.mixture_log_density` estimates (for evaluation only, never in training).
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from dgmlib.kernels import mixture_logpdf
from dgmlib.layers import flatten_batch, mlp
from dgmlib.models.priors import Prior, make_prior
from dgmlib.models.vae import Decoder
from dgmlib.validation import check_int, check_positive, check_tensor

__all__ = [
    "AVB",
    "AVBObjective",
    "ImplicitEncoder",
    "JointDiscriminator",
    "avb_losses",
    "joint_input",
    "latent_grid",
    "log_marginal_on_grid",
]


def joint_input(x: Tensor, x_dim: int, v: Tensor, name: str, v_dim: int, where: str) -> Tensor:
    """``[x, v]`` along the last axis for ``x [B, x_dim]`` (or flattened images) and
    ``v [B, v_dim]`` or ``[K, B, v_dim]`` (``x`` repeated over ``K``); a ValueError naming ``v``
    otherwise."""
    x = flatten_batch(x, x_dim, where)
    check_tensor(v, name, where, min_ndim=2)
    if v.shape[-1] != v_dim or v.shape[-2] != x.shape[0] or v.dim() > 3:
        raise ValueError(
            f"{where}: {name} must have shape [{x.shape[0]}, {v_dim}] or "
            f"[K, {x.shape[0]}, {v_dim}], got {tuple(v.shape)}"
        )
    return torch.cat([x.expand(*v.shape[:-1], x_dim), v], dim=-1)


class ImplicitEncoder(nn.Module):
    """``z = g(x, eps) + output_std * eta`` with ``eps ~ N(0, I_noise_dim)``, ``eta ~ N(0, I_Z)``
    and ``g`` an MLP on ``[x, eps]``: a sampler of ``q(z|x)`` without a density.

    ``output_std = 0`` gives a purely implicit encoder (the paper's); ``output_std > 0`` smooths
    it with a Gaussian of that scale, which training ignores and evaluation may use
    (:meth:`mixture_log_density`).
    """

    def __init__(
        self,
        x_dim: int,
        z_dim: int,
        noise_dim: int,
        hidden: int,
        n_hidden_layers: int = 3,
        activation: type[nn.Module] = nn.ELU,
        output_std: float = 0.0,
    ) -> None:
        super().__init__()
        where = "ImplicitEncoder"
        self.x_dim = check_int(x_dim, "x_dim", where)
        self.z_dim = check_int(z_dim, "z_dim", where)
        self.noise_dim = check_int(noise_dim, "noise_dim", where)
        self.output_std = check_positive(output_std, "output_std", where, allow_zero=True)
        self.net = mlp(x_dim + noise_dim, hidden, z_dim, n_hidden_layers, activation)

    def transform(self, x: Tensor, eps: Tensor) -> Tensor:
        """``g(x, eps)``: ``x [B, x_dim]`` and ``eps [B, noise_dim]`` (or ``[K, B, noise_dim]``)
        -> ``[B, Z]`` (or ``[K, B, Z]``)."""
        u = joint_input(x, self.x_dim, eps, "eps", self.noise_dim, "ImplicitEncoder.transform")
        return self.net(u)

    def sample(
        self, x: Tensor, K: int | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """``z ~ q(z|x)``: ``[B, Z]``, or ``[K, B, Z]`` given ``K``; differentiable in the
        weights (the noise is an input)."""
        x = flatten_batch(x, self.x_dim, "ImplicitEncoder.sample")
        shape = (
            (x.shape[0],)
            if K is None
            else (check_int(K, "K", "ImplicitEncoder.sample"), x.shape[0])
        )
        eps = torch.randn(
            (*shape, self.noise_dim), generator=generator, dtype=x.dtype, device=x.device
        )
        z = self.transform(x, eps)
        if self.output_std > 0:
            eta = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
            z = z + self.output_std * eta
        return z

    @torch.no_grad()
    def mixture_log_density(
        self, x: Tensor, z: Tensor, n_components: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """``log (1/M) sum_m N(z; g(x, eps_m), output_std^2 I)`` for one input ``x [x_dim]`` at the
        points ``z [G, Z]``: ``[G]`` nats, with ``M = n_components`` draws ``eps_m``.

        Its exponential is an unbiased estimate of ``q(z|x)`` at every point, and because the KL
        divergence is convex in its first argument, the KL of this mixture to any density is, in
        expectation over the draws, an upper bound on the KL of ``q(z|x)``; the bound tightens
        as ``M`` grows. Needs ``output_std > 0``.
        """
        where = "ImplicitEncoder.mixture_log_density"
        if self.output_std <= 0:
            raise ValueError(f"{where}: needs an encoder with output_std > 0 (it has a density)")
        check_int(n_components, "n_components", where)
        check_tensor(z, "z", where, min_ndim=2)
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"{where}: z must have shape [G, {self.z_dim}], got {tuple(z.shape)}")
        x = flatten_batch(x.reshape(1, -1), self.x_dim, where)
        eps = torch.randn(
            (n_components, 1, self.noise_dim), generator=generator, dtype=x.dtype, device=x.device
        )
        centres = self.transform(x, eps)[:, 0].to(z.dtype)  # [M, Z]
        logvar = torch.full_like(centres, 2 * math.log(self.output_std))
        return mixture_logpdf(z, centres, logvar)


class JointDiscriminator(nn.Module):
    """``T(x, z)``: an MLP on ``u = [x, z]`` to one logit, plus (``quadratic=True``) a learned
    quadratic form ``sum_{i <= j} w_ij u_i u_j``; ``sigmoid(T)`` is the probability that ``z``
    was drawn from ``q(z|x)`` rather than from the prior.

    The quadratic part can represent the log ratio of two Gaussians exactly, e.g. ``T*`` of a
    linear-Gaussian model; the MLP learns what is left."""

    def __init__(
        self,
        x_dim: int,
        z_dim: int,
        hidden: int,
        n_hidden_layers: int = 2,
        activation: type[nn.Module] = nn.ELU,
        quadratic: bool = False,
    ) -> None:
        super().__init__()
        self.x_dim = check_int(x_dim, "x_dim", "JointDiscriminator")
        self.z_dim = check_int(z_dim, "z_dim", "JointDiscriminator")
        self.net = mlp(x_dim + z_dim, hidden, 1, n_hidden_layers, activation)
        d = x_dim + z_dim
        rows, cols = torch.triu_indices(d, d)
        self.pairs: Tensor
        self.register_buffer("pairs", torch.stack([rows, cols]), persistent=False)
        self.quad = nn.Linear(len(rows), 1, bias=False) if quadratic else None
        if self.quad is not None:
            nn.init.zeros_(self.quad.weight)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        """Logits ``[B]`` for ``x [B, x_dim]``, ``z [B, Z]``; ``[K, B]`` for ``z [K, B, Z]``."""
        u = joint_input(x, self.x_dim, z, "z", self.z_dim, "JointDiscriminator")
        out = self.net(u)
        if self.quad is not None:
            out = out + self.quad(u[..., self.pairs[0]] * u[..., self.pairs[1]])
        return out.squeeze(-1)


class AVB(nn.Module):
    """An implicit ``encoder`` (:class:`ImplicitEncoder`), a ``decoder`` of
    :mod:`dgmlib.models.vae` (``log_prob(x, z)``), a ``discriminator`` ``T(x, z)`` and a
    ``prior`` (``None``: ``N(0, I)``) trained by :class:`AVBObjective`."""

    encoder: ImplicitEncoder
    decoder: Decoder
    discriminator: JointDiscriminator
    prior: Prior

    def __init__(
        self,
        encoder: ImplicitEncoder,
        decoder: Decoder,
        discriminator: JointDiscriminator,
        prior: Prior | None = None,
    ) -> None:
        super().__init__()
        zs = {encoder.z_dim, decoder.z_dim, discriminator.z_dim}
        if len(zs) != 1:
            raise ValueError(
                f"AVB: encoder, decoder and discriminator disagree on z_dim: {encoder.z_dim}, "
                f"{decoder.z_dim}, {discriminator.z_dim}"
            )
        self.z_dim: int = decoder.z_dim
        self.encoder, self.decoder, self.discriminator = encoder, decoder, discriminator
        self.prior = make_prior("standard", self.z_dim) if prior is None else prior

    def elbo_estimate(
        self, x: Tensor, K: int = 1, generator: torch.Generator | None = None
    ) -> Tensor:
        """AVB's own ELBO estimate per example, ``mean_k [log p(x|z_k) - T(x, z_k)]`` with ``K``
        draws ``z_k ~ q(z|x)``: ``[B]`` nats (exact in the limit ``T = T*``, ``K -> inf``)."""
        z = self.encoder.sample(x, K, generator)
        return (self.decoder.log_prob(x, z) - self.discriminator(x, z)).mean(0)


def _frozen(module: nn.Module, *args: Tensor) -> Tensor:
    """``module(*args)`` with its weights detached: gradients reach the inputs only."""
    params = {k: v.detach() for k, v in module.named_parameters()}
    params.update(dict(module.named_buffers()))
    return functional_call(module, params, args)


def avb_losses(
    decoder: Decoder, discriminator: nn.Module, x: Tensor, z: Tensor, z_prior: Tensor
) -> dict[str, Tensor]:
    """The two AVB losses for a batch, each a batch mean in nats, and what they report.

    ``x [B, x_dim]``; ``z [B, Z]`` drawn from the encoder (differentiable in its weights);
    ``z_prior [B, Z]`` drawn from the prior. Returns ``primal`` (``-log p(x|z) + T(x, z)``, ``T``'s
    weights held fixed), ``dual`` (the logistic loss of ``T`` with ``z`` detached), ``log_px_z``
    (``E_q log p(x|z)``), ``kl`` (``E_q T``, the KL estimate) and ``elbo`` (``log_px_z - kl``).
    """
    log_px_z = decoder.log_prob(x, z)
    t_frozen = _frozen(discriminator, x, z)
    t_joint = discriminator(x, z.detach())
    t_prior = discriminator(x, z_prior)
    primal = (-log_px_z + t_frozen).mean()
    dual = (F.softplus(-t_joint) + F.softplus(t_prior)).mean()
    kl = t_joint.detach().mean()
    lp = log_px_z.detach().mean()
    return {"primal": primal, "dual": dual, "log_px_z": lp, "kl": kl, "elbo": lp - kl}


class AVBObjective:
    """The AVB losses (:func:`avb_losses`) as one objective for :class:`dgmlib.train.Trainer`,
    whose optimizer has a parameter group per player (each with its own learning rate).

    ``dual_steps = 0``: ``loss = primal + dual`` on every batch. The two losses reach disjoint
    weights (the primal one only the encoder and decoder, the dual one only ``T``), so one
    backward pass and one optimizer step is a simultaneous step of both players.
    ``dual_steps = k > 0``: the calls cycle through ``k`` discriminator steps (``loss = dual``)
    and then one encoder-and-decoder step (``loss = primal``), as in the paper's alternating
    training; weights without a gradient are left alone by the optimizer. The cycle restarts
    with a new objective, so for a resumed run to repeat an uninterrupted one, make the steps of
    an epoch a multiple of ``k + 1``. Reported: ``loss``, ``primal``, ``dual``, ``log_px_z``,
    ``kl`` (mean ``T`` on joint samples) and ``elbo`` (AVB's estimate), nats per example.
    """

    def __init__(self, dual_steps: int = 0) -> None:
        self.dual_steps = check_int(dual_steps, "dual_steps", "AVBObjective", low=0)
        self.calls = 0

    def __call__(self, model: AVB, x: Tensor) -> dict[str, Tensor]:
        """The terms for a batch ``x [B, x_dim]``, batch means."""
        z = model.encoder.sample(x)
        z_prior = model.prior.sample(x.shape[0]).to(x)
        t = avb_losses(model.decoder, model.discriminator, x, z, z_prior)
        phase = self.calls % (self.dual_steps + 1)
        self.calls += 1
        if self.dual_steps == 0:
            loss = t["primal"] + t["dual"]
        else:
            loss = t["dual"] if phase < self.dual_steps else t["primal"]
        return {"loss": loss, **t}


# --------------------------------------------------------------------------------------------
# Quadrature on a 2-D latent grid
# --------------------------------------------------------------------------------------------


def latent_grid(limit: float, n: int, dtype: torch.dtype = torch.float64) -> tuple[Tensor, float]:
    """The midpoints of an ``n x n`` grid of cells covering ``[-limit, limit]^2``: ``[n*n, 2]``,
    and the area of one cell (the midpoint rule's weight)."""
    check_positive(limit, "limit", "latent_grid")
    check_int(n, "n", "latent_grid")
    h = 2 * limit / n
    t = -limit + h * (torch.arange(n, dtype=dtype) + 0.5)
    zz = torch.stack(torch.meshgrid(t, t, indexing="ij"), dim=-1).reshape(-1, 2)
    return zz, h * h


@torch.no_grad()
def log_marginal_on_grid(
    decoder: Decoder, x: Tensor, grid: Tensor, cell_area: float
) -> tuple[Tensor, Tensor]:
    """``log p(x) = log sum_g a p(z_g) p(x|z_g)`` by the midpoint rule with ``N(0, I)`` prior,
    and the log posterior density ``log p(z_g|x)`` on the grid.

    ``x [B, x_dim]``, ``grid [G, Z]`` (e.g. :func:`latent_grid`), ``cell_area`` ``a``. Returns
    ``log_px [B]`` and ``log_post [B, G]``, nats; the decoder is evaluated in its own dtype.
    """
    where = "log_marginal_on_grid"
    check_tensor(grid, "grid", where, min_ndim=2)
    check_positive(cell_area, "cell_area", where)
    dt = next(cast(nn.Module, decoder).parameters()).dtype
    g = grid.to(dt)
    log_pz = -0.5 * (g * g).sum(-1) - 0.5 * g.shape[1] * math.log(2 * math.pi)  # [G]
    xs = x.to(dt)
    z = g[:, None, :].expand(len(g), len(xs), g.shape[1])  # [G, B, Z], read as [K, B, Z]
    log_px_z = decoder.log_prob(xs, z).T  # [B, G]
    log_joint = (log_pz[None] + log_px_z).to(torch.float64)
    log_px = torch.logsumexp(log_joint, dim=1) + math.log(cell_area)
    return log_px, log_joint - log_px[:, None]
