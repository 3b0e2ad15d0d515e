"""Log-densities and KL divergences used throughout the course, with explicit shapes and units.

Conventions shared by every function here:

* the **last dimension is the event dimension**: densities of vectors are summed over it, so an
  input of shape ``[..., D]`` gives one value per row, of shape ``[...]``;
* leading (batch) dimensions broadcast as in ``torch``;
* Gaussians are parametrised by their mean ``mu`` and **log-variance** ``logvar`` (diagonal
  covariance ``diag(exp(logvar))``), as an encoder network would output them;
* all values are natural logarithms, i.e. in **nats**.

Inputs containing NaN, or of incompatible shapes, raise a ``ValueError`` naming the argument; an
argument of the wrong type (not a floating tensor) a ``TypeError``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Bernoulli, MultivariateNormal, Normal

from dgmlib.validation import check_int, check_tensor

__all__ = [
    "LOG_2PI",
    "bernoulli_log_prob",
    "gaussian_log_prob",
    "kl_normal_std_normal",
    "log_mean_exp",
    "sample_mvn",
    "standard_normal_log_prob",
]

LOG_2PI = math.log(2.0 * math.pi)


def _broadcast_shape(where: str, **tensors: Tensor) -> torch.Size:
    """The common broadcast shape of ``tensors``, or a ValueError listing every shape."""
    try:
        return torch.broadcast_shapes(*(t.shape for t in tensors.values()))
    except RuntimeError:
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in tensors.items())
        raise ValueError(f"{where}: shapes do not broadcast: {shapes}") from None


def _validate_all(where: str, **tensors: Tensor) -> torch.Size:
    """Validate each named tensor and check that they broadcast; return the broadcast shape."""
    for name, t in tensors.items():
        check_tensor(t, name, where)
    return _broadcast_shape(where, **tensors)


def gaussian_log_prob(x: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(x; mu, diag(exp(logvar))) summed over the last dim: [..., D] -> [...] nats."""
    _validate_all("gaussian_log_prob", x=x, mu=mu, logvar=logvar)
    return Normal(mu, torch.exp(0.5 * logvar)).log_prob(x).sum(-1)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed over the last dim: [..., D] -> [...] nats."""
    check_tensor(z, "z", "standard_normal_log_prob")
    return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)


def kl_normal_std_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)), analytic, summed over the last dim: [...] nats."""
    _validate_all("kl_normal_std_normal", mu=mu, logvar=logvar)
    return 0.5 * (torch.exp(logvar) + mu.pow(2) - 1.0 - logvar).sum(-1)


def bernoulli_log_prob(x: Tensor, logits: Tensor) -> Tensor:
    """log Bernoulli(x; sigmoid(logits)) summed over the last dim, x in [0, 1]: [...] nats."""
    _validate_all("bernoulli_log_prob", x=x, logits=logits)
    if (x < 0).any() or (x > 1).any():
        raise ValueError("bernoulli_log_prob: x must lie in [0, 1]")
    # Bernoulli.log_prob is -BCE-with-logits, stable for large |logits|; it also accepts
    # fractional x in [0, 1] (the "continuous Bernoulli without its normaliser" used for images).
    x_b, logits_b = torch.broadcast_tensors(x, logits)
    return Bernoulli(logits=logits_b, validate_args=False).log_prob(x_b).sum(-1)


def log_mean_exp(x: Tensor, dim: int = 0) -> Tensor:
    """log(mean(exp(x), dim)) computed stably with logsumexp; removes ``dim``."""
    check_tensor(x, "x", "log_mean_exp")
    if not -x.dim() <= dim < x.dim():
        raise ValueError(f"log_mean_exp: dim={dim} is out of range for x of shape {tuple(x.shape)}")
    if x.shape[dim] == 0:
        raise ValueError(f"log_mean_exp: x has no entries along dim={dim}")
    return torch.logsumexp(x, dim=dim) - math.log(x.shape[dim])


def sample_mvn(
    dist: MultivariateNormal, n: int, generator: torch.Generator | None = None
) -> Tensor:
    """n draws z = loc + L eps (eps ~ N(0, I), L = scale_tril) with a seedable generator.

    Shape [n, *batch_shape, D]. Unlike ``dist.sample`` it takes a ``torch.Generator``, and it is
    differentiable in ``loc`` and ``L`` (the reparametrisation of Lecture 02).
    """
    if not isinstance(dist, MultivariateNormal):
        raise TypeError(f"sample_mvn: dist must be a MultivariateNormal, got {type(dist).__name__}")
    check_int(n, "n", "sample_mvn")
    shape = (n, *dist.batch_shape, *dist.event_shape)
    eps = torch.randn(shape, dtype=dist.loc.dtype, device=dist.loc.device, generator=generator)
    return dist.loc + (dist.scale_tril @ eps.unsqueeze(-1)).squeeze(-1)
