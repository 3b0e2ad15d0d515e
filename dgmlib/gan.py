r"""Likelihood-free learning: the GAN value, its optimal discriminator, divergences, mode coverage.

For a data density ``p_d`` and a generator density ``p_g`` the GAN value of a discriminator
``D(x) = sigmoid(logit(x))`` is

.. math::

    V(G, D) = \mathbb E_{p_d}[\log D(x)] + \mathbb E_{p_g}[\log(1 - D(x))],

maximised by ``D*(x) = p_d(x) / (p_d(x) + p_g(x))``, where ``V(G, D*) = 2 JSD(p_d || p_g) - log 4``
(Goodfellow et al., 2014). Functions on densities take **log-densities** evaluated on a grid and
the grid's quadrature weights (``dx`` for a uniform 1-D grid); every result is in **nats**.
Discriminators work with logits, never with probabilities, so nothing overflows. Invalid inputs
raise a ``ValueError`` that names the argument.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

__all__ = [
    "Discriminator",
    "Generator",
    "ModeCoverage",
    "discriminator_loss",
    "gan_value",
    "gan_value_at_optimum",
    "generator_loss",
    "jsd",
    "kl",
    "mode_coverage",
    "optimal_discriminator",
    "ring_centres",
]

GENERATOR_LOSSES = ("minimax", "nonsaturating")


def _tensor(name: str, fn: str, value: object) -> Tensor:
    """``value`` if it is a floating tensor without NaN, else a ValueError naming ``name``."""
    if not isinstance(value, Tensor) or not value.is_floating_point():
        raise ValueError(
            f"{fn}: {name} must be a floating-point tensor, got {type(value).__name__}"
        )
    if torch.isnan(value).any():
        raise ValueError(f"{fn}: {name} contains NaN")
    return value


def _same_shape(fn: str, a: tuple[str, Tensor], b: tuple[str, Tensor]) -> None:
    """A ValueError naming both arguments unless they have the same shape."""
    if a[1].shape != b[1].shape:
        raise ValueError(
            f"{fn}: {a[0]} and {b[0]} must have the same shape, got "
            f"{tuple(a[1].shape)} and {tuple(b[1].shape)}"
        )


def optimal_discriminator(log_pd: Tensor, log_pg: Tensor) -> Tensor:
    """``D*(x) = p_d / (p_d + p_g) = sigmoid(log p_d - log p_g)`` from log-densities, same shape."""
    fn = "optimal_discriminator"
    _same_shape(
        fn, ("log_pd", _tensor("log_pd", fn, log_pd)), ("log_pg", _tensor("log_pg", fn, log_pg))
    )
    if ((log_pd == -math.inf) & (log_pg == -math.inf)).any():
        raise ValueError(f"{fn}: log_pd and log_pg are both -inf at some point (D* undefined)")
    return torch.sigmoid(log_pd - log_pg)


def _broadcast(fn: str, a: tuple[str, Tensor], b: tuple[str, Tensor]) -> tuple[Tensor, Tensor]:
    """Both tensors broadcast to a common shape, or a ValueError naming both arguments."""
    _tensor(a[0], fn, a[1])
    _tensor(b[0], fn, b[1])
    try:
        shape = torch.broadcast_shapes(a[1].shape, b[1].shape)
    except RuntimeError:
        raise ValueError(
            f"{fn}: {a[0]} and {b[0]} must have broadcastable shapes, got "
            f"{tuple(a[1].shape)} and {tuple(b[1].shape)}"
        ) from None
    return a[1].expand(shape), b[1].expand(shape)


def _weights(fn: str, log_p: Tensor, weights: Tensor | float) -> Tensor:
    """Quadrature weights broadcast to ``log_p``'s shape (positive)."""
    w = torch.as_tensor(weights, dtype=log_p.dtype)
    if (w <= 0).any() or torch.isnan(w).any():
        raise ValueError(f"{fn}: weights must be positive, got {weights!r}")
    return w.expand_as(log_p)


def _xlogy_ratio(log_a: Tensor, log_b: Tensor) -> Tensor:
    """``a (log a - log b)`` pointwise, 0 where ``a = 0``."""
    return torch.where(log_a == -math.inf, torch.zeros_like(log_a), log_a.exp() * (log_a - log_b))


def kl(log_p: Tensor, log_q: Tensor, weights: Tensor | float) -> Tensor:
    """``KL(p || q) = sum_i w_i p_i (log p_i - log q_i)`` over the last (grid) dim; broadcasts."""
    fn = "kl"
    log_p, log_q = _broadcast(fn, ("log_p", log_p), ("log_q", log_q))
    return (_weights(fn, log_p, weights) * _xlogy_ratio(log_p, log_q)).sum(-1)


def jsd(log_p: Tensor, log_q: Tensor, weights: Tensor | float) -> Tensor:
    """Jensen-Shannon divergence ``(KL(p||m) + KL(q||m)) / 2``, ``m = (p + q)/2``, by quadrature."""
    fn = "jsd"
    log_p, log_q = _broadcast(fn, ("log_p", log_p), ("log_q", log_q))
    log_m = torch.logaddexp(log_p, log_q) - math.log(2.0)
    w = _weights(fn, log_p, weights)
    return 0.5 * (w * (_xlogy_ratio(log_p, log_m) + _xlogy_ratio(log_q, log_m))).sum(-1)


def gan_value_at_optimum(log_pd: Tensor, log_pg: Tensor, weights: Tensor | float) -> Tensor:
    """``V(G, D*) = int p_d log D* + p_g log(1 - D*)`` by quadrature over the last dim: [...]."""
    fn = "gan_value_at_optimum"
    log_pd, log_pg = _broadcast(fn, ("log_pd", log_pd), ("log_pg", log_pg))
    log_sum = torch.logaddexp(log_pd, log_pg)  # log D* = log p_d - log(p_d + p_g)
    w = _weights(fn, log_pd, weights)
    return (w * (_xlogy_ratio(log_pd, log_sum) + _xlogy_ratio(log_pg, log_sum))).sum(-1)


def gan_value(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """Monte Carlo ``V = mean log D(x_real) + mean log(1 - D(x_fake))`` from logits, in nats."""
    fn = "gan_value"
    _tensor("logits_real", fn, logits_real)
    _tensor("logits_fake", fn, logits_fake)
    if logits_real.numel() == 0 or logits_fake.numel() == 0:
        raise ValueError(f"{fn}: logits_real and logits_fake must not be empty")
    return (
        nn.functional.logsigmoid(logits_real).mean() + nn.functional.logsigmoid(-logits_fake).mean()
    )


def discriminator_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """The discriminator's binary cross-entropy, ``-V(G, D)``: scalar, nats."""
    return -gan_value(logits_real, logits_fake)


def generator_loss(logits_fake: Tensor, kind: str = "nonsaturating") -> Tensor:
    """``minimax``: ``mean log(1 - D(G(z)))``; ``nonsaturating``: ``-mean log D(G(z))``. Scalar."""
    fn = "generator_loss"
    _tensor("logits_fake", fn, logits_fake)
    if kind not in GENERATOR_LOSSES:
        raise ValueError(f"{fn}: kind must be one of {GENERATOR_LOSSES}, got {kind!r}")
    if kind == "minimax":
        return nn.functional.logsigmoid(-logits_fake).mean()
    return -nn.functional.logsigmoid(logits_fake).mean()


def ring_centres(n_modes: int = 8, radius: float = 2.0) -> Tensor:
    """The centres of ``toy_2d("ring")``: ``n_modes`` points on a circle, float32 [n_modes, 2]."""
    if not isinstance(n_modes, int) or n_modes < 1:
        raise ValueError(f"ring_centres: n_modes must be a positive int, got {n_modes!r}")
    if not radius > 0:
        raise ValueError(f"ring_centres: radius must be positive, got {radius!r}")
    angle = torch.arange(n_modes, dtype=torch.float64) * (2 * math.pi / n_modes)
    return (radius * torch.stack([angle.cos(), angle.sin()], 1)).to(torch.float32)


class ModeCoverage(NamedTuple):
    """Modes covered (int), fraction of high-quality samples (float), counts per mode [K]."""

    modes: int
    high_quality: float
    counts: Tensor


def mode_coverage(
    samples: Tensor, centres: Tensor, std: float, n_std: float = 3.0, min_count: int = 10
) -> ModeCoverage:
    """Samples within ``n_std * std`` of their nearest centre are high quality; a mode is covered
    when at least ``min_count`` high-quality samples fall on it. ``samples`` [N, D], ``centres``
    [K, D]."""
    fn = "mode_coverage"
    _tensor("samples", fn, samples)
    _tensor("centres", fn, centres)
    if samples.dim() != 2 or samples.shape[0] == 0:
        raise ValueError(
            f"{fn}: samples must be a non-empty [N, D] tensor, got {tuple(samples.shape)}"
        )
    if centres.dim() != 2 or centres.shape[1] != samples.shape[1] or centres.shape[0] == 0:
        raise ValueError(
            f"{fn}: centres must be a non-empty [K, D] tensor with D = {samples.shape[1]}, "
            f"got {tuple(centres.shape)}"
        )
    if not std > 0 or not n_std > 0:
        raise ValueError(f"{fn}: std and n_std must be positive, got {std!r} and {n_std!r}")
    if not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f"{fn}: min_count must be a positive int, got {min_count!r}")
    dist = torch.cdist(samples.detach().double(), centres.detach().double())  # [N, K]
    nearest_dist, nearest = dist.min(1)
    good = nearest_dist <= n_std * std
    counts = torch.bincount(nearest[good], minlength=centres.shape[0])
    return ModeCoverage(int((counts >= min_count).sum()), float(good.double().mean()), counts)


def _mlp(d_in: int, hidden: int, d_out: int, layers: int) -> nn.Sequential:
    """``layers`` hidden layers of width ``hidden`` with ReLU, then a linear output."""
    for name, v in (("d_in", d_in), ("hidden", hidden), ("d_out", d_out), ("layers", layers)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    mods: list[nn.Module] = []
    width = d_in
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*mods, nn.Linear(width, d_out))


class Generator(nn.Module):
    """``x = G(z)``: an MLP from ``z ~ N(0, I)`` [N, z_dim] to points [N, x_dim]."""

    def __init__(self, z_dim: int = 2, hidden: int = 64, x_dim: int = 2, layers: int = 2) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.net = _mlp(z_dim, hidden, x_dim, layers)

    def forward(self, z: Tensor) -> Tensor:
        """Points [N, x_dim] for latent codes ``z`` [N, z_dim]."""
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(
                f"Generator: z must have shape [N, {self.z_dim}], got {tuple(z.shape)}"
            )
        return self.net(z)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples [n, x_dim] from ``z ~ N(0, I)``."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"Generator.sample: n must be a positive int, got {n!r}")
        w = self.net[0].weight
        return self(torch.randn(n, self.z_dim, generator=generator, dtype=w.dtype))


class Discriminator(nn.Module):
    """``logit D(x)``: an MLP from points [N, x_dim] to logits [N]; ``D = sigmoid(logit)``."""

    def __init__(self, x_dim: int = 2, hidden: int = 64, layers: int = 2) -> None:
        super().__init__()
        self.x_dim = x_dim
        self.net = _mlp(x_dim, hidden, 1, layers)

    def forward(self, x: Tensor) -> Tensor:
        """Logits [N] for points ``x`` [N, x_dim]."""
        if x.dim() != 2 or x.shape[1] != self.x_dim:
            raise ValueError(
                f"Discriminator: x must have shape [N, {self.x_dim}], got {tuple(x.shape)}"
            )
        return self.net(x).squeeze(-1)
