r"""Likelihood-free learning: the GAN value, its optimal discriminator, divergences, mode coverage.

For a data density ``p_d`` and a generator density ``p_g`` the GAN value of a discriminator
``D(x) = sigmoid(logit(x))`` is

.. math::

    V(G, D) = \mathbb E_{p_d}[\log D(x)] + \mathbb E_{p_g}[\log(1 - D(x))],

maximised by ``D*(x) = p_d(x) / (p_d(x) + p_g(x))``, where ``V(G, D*) = 2 JSD(p_d || p_g) - log 4``
(Goodfellow et al., 2014). Functions on densities take **log-densities** evaluated on a grid and
the grid's quadrature weights (``dx`` for a uniform 1-D grid); every result is in **nats**.
Discriminators work with logits, never with probabilities, so nothing overflows. The unrolled GAN
(Metz et al., 2017) trains the generator against the discriminator as it will be after ``k``
more gradient steps (:func:`unrolled_discriminator`, :func:`unrolled_generator_loss`), with the
gradient taken through those steps. Invalid inputs
raise an error that names the argument (:mod:`dgmlib.validation`: ``TypeError`` for a wrong type,
``ValueError`` for a wrong value).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.func import functional_call

from dgmlib.layers import mlp
from dgmlib.validation import check_int, check_positive, check_tensor

__all__ = [
    "Discriminator",
    "GAN",
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
    "unrolled_discriminator",
    "unrolled_generator_loss",
]

GENERATOR_LOSSES = ("minimax", "nonsaturating")


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
        fn,
        ("log_pd", check_tensor(log_pd, "log_pd", fn, min_ndim=0)),
        ("log_pg", check_tensor(log_pg, "log_pg", fn, min_ndim=0)),
    )
    if ((log_pd == -math.inf) & (log_pg == -math.inf)).any():
        raise ValueError(f"{fn}: log_pd and log_pg are both -inf at some point (D* undefined)")
    return torch.sigmoid(log_pd - log_pg)


def _broadcast(fn: str, a: tuple[str, Tensor], b: tuple[str, Tensor]) -> tuple[Tensor, Tensor]:
    """Both tensors broadcast to a common shape, or a ValueError naming both arguments."""
    check_tensor(a[1], a[0], fn, min_ndim=0)
    check_tensor(b[1], b[0], fn, min_ndim=0)
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
    check_tensor(logits_real, "logits_real", fn, min_ndim=0)
    check_tensor(logits_fake, "logits_fake", fn, min_ndim=0)
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
    check_tensor(logits_fake, "logits_fake", fn, min_ndim=0)
    if kind not in GENERATOR_LOSSES:
        raise ValueError(f"{fn}: kind must be one of {GENERATOR_LOSSES}, got {kind!r}")
    if kind == "minimax":
        return nn.functional.logsigmoid(-logits_fake).mean()
    return -nn.functional.logsigmoid(logits_fake).mean()


def unrolled_discriminator(
    disc: nn.Module, real: Tensor, fake: Tensor, steps: int, lr: float
) -> dict[str, Tensor]:
    """``disc``'s parameters (name -> tensor) after ``steps`` gradient-descent steps of size
    ``lr`` on ``discriminator_loss(disc(real), disc(fake))``, the same batches at every step,
    kept differentiable in ``fake`` and in the starting parameters (``create_graph``); ``steps =
    0`` gives the parameters themselves. ``disc`` is not modified."""
    fn = "unrolled_discriminator"
    check_int(steps, "steps", fn, low=0)
    check_positive(lr, "lr", fn)
    params: dict[str, Tensor] = dict(disc.named_parameters())
    for _ in range(steps):
        loss = discriminator_loss(
            functional_call(disc, params, (real,)), functional_call(disc, params, (fake,))
        )
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        params = {k: p - lr * g for (k, p), g in zip(params.items(), grads, strict=True)}
    return params


def unrolled_generator_loss(
    disc: nn.Module,
    real: Tensor,
    fake: Tensor,
    steps: int,
    lr: float,
    kind: str = "nonsaturating",
) -> Tensor:
    """The unrolled GAN's generator loss (Metz et al., 2017): :func:`generator_loss` of
    ``fake`` [N, x_dim] against the discriminator after ``steps`` unrolled steps
    (:func:`unrolled_discriminator` on ``real`` [M, x_dim] and ``fake``); its gradient in
    ``fake`` includes how those steps react to ``fake``. ``steps = 0``: the plain loss. Scalar,
    nats."""
    params = unrolled_discriminator(disc, real, fake, steps, lr)
    return generator_loss(functional_call(disc, params, (fake,)), kind)


def ring_centres(n_modes: int = 8, radius: float = 2.0) -> Tensor:
    """The centres of ``toy_2d("ring")``: ``n_modes`` points on a circle, float32 [n_modes, 2]."""
    check_int(n_modes, "n_modes", "ring_centres")
    check_positive(radius, "radius", "ring_centres")
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
    check_tensor(samples, "samples", fn, min_ndim=0)
    check_tensor(centres, "centres", fn, min_ndim=0)
    if samples.dim() != 2 or samples.shape[0] == 0:
        raise ValueError(
            f"{fn}: samples must be a non-empty [N, D] tensor, got {tuple(samples.shape)}"
        )
    if centres.dim() != 2 or centres.shape[1] != samples.shape[1] or centres.shape[0] == 0:
        raise ValueError(
            f"{fn}: centres must be a non-empty [K, D] tensor with D = {samples.shape[1]}, "
            f"got {tuple(centres.shape)}"
        )
    check_positive(std, "std", fn)
    check_positive(n_std, "n_std", fn)
    check_int(min_count, "min_count", fn)
    dist = torch.cdist(samples.detach().double(), centres.detach().double())  # [N, K]
    nearest_dist, nearest = dist.min(1)
    good = nearest_dist <= n_std * std
    counts = torch.bincount(nearest[good], minlength=centres.shape[0])
    return ModeCoverage(int((counts >= min_count).sum()), float(good.double().mean()), counts)


def _check_sizes(where: str, **sizes: int) -> None:
    """Every size a positive int (the MLPs' arguments)."""
    for name, v in sizes.items():
        check_int(v, name, where)


class Generator(nn.Module):
    """``x = G(z)``: an MLP from ``z ~ N(0, I)`` [N, z_dim] to points [N, x_dim] (``layers``
    hidden layers of ``hidden`` ReLU units)."""

    def __init__(self, z_dim: int = 2, hidden: int = 64, x_dim: int = 2, layers: int = 2) -> None:
        super().__init__()
        _check_sizes("Generator", z_dim=z_dim, hidden=hidden, x_dim=x_dim, layers=layers)
        self.z_dim = z_dim
        self.net = mlp(z_dim, hidden, x_dim, layers, nn.ReLU)

    def forward(self, z: Tensor) -> Tensor:
        """Points [N, x_dim] for latent codes ``z`` [N, z_dim]."""
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(
                f"Generator: z must have shape [N, {self.z_dim}], got {tuple(z.shape)}"
            )
        return self.net(z)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples [n, x_dim] from ``z ~ N(0, I)``, on the generator's device and in its
        dtype. No gradients."""
        check_int(n, "n", "Generator.sample")
        w = next(self.parameters())
        return self(torch.randn(n, self.z_dim, generator=generator, dtype=w.dtype, device=w.device))


class Discriminator(nn.Module):
    """``logit D(x)``: an MLP from points [N, x_dim] to logits [N]; ``D = sigmoid(logit)``."""

    def __init__(self, x_dim: int = 2, hidden: int = 64, layers: int = 2) -> None:
        super().__init__()
        _check_sizes("Discriminator", x_dim=x_dim, hidden=hidden, layers=layers)
        self.x_dim = x_dim
        self.net = mlp(x_dim, hidden, 1, layers, nn.ReLU)

    def forward(self, x: Tensor) -> Tensor:
        """Logits [N] for points ``x`` [N, x_dim]."""
        if x.dim() != 2 or x.shape[1] != self.x_dim:
            raise ValueError(
                f"Discriminator: x must have shape [N, {self.x_dim}], got {tuple(x.shape)}"
            )
        return self.net(x).squeeze(-1)


class GAN(nn.Module):
    """A :class:`Generator` and a :class:`Discriminator` of the same width, kept together (one
    checkpoint); the generator is created first, so one torch seed fixes both initialisations."""

    def __init__(self, z_dim: int = 2, hidden: int = 64, x_dim: int = 2, layers: int = 2) -> None:
        super().__init__()
        self.generator = Generator(z_dim, hidden, x_dim, layers)
        self.discriminator = Discriminator(x_dim, hidden, layers)
