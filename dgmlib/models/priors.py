"""Priors ``p(z)`` for VAEs, and the registry of their closed-form KL divergences.

Every prior is an ``nn.Module`` with the same two methods:

* ``log_prob(z)``: ``z [..., Z]`` -> ``[...]``, the log-density **summed over the Z latent
  dimensions**, in **nats** (any number of leading dimensions, e.g. ``[B, Z]`` or ``[K, B, Z]``);
* ``sample(n, generator=None)``: ``n`` draws, ``[n, Z]``, with the dtype and device of the prior's
  parameters (reparametrized where the prior has parameters, so gradients reach them).

The priors:

* :class:`StandardNormalPrior` -- ``N(0, I)``, the VAE's default (no parameters);
* :class:`MixtureOfGaussiansPrior` -- ``sum_k pi_k N(z; m_k, diag(s_k^2))`` with learnable means,
  log-variances and weights (logits);
* :class:`VampPrior` -- the "variational mixture of posteriors" of Tomczak & Welling (2018):
  ``(1/K) sum_k q(z | u_k)``, the encoder's posteriors at ``K`` learnable pseudo-inputs ``u_k``;
* :class:`FlowPrior` -- ``N(0, I)`` pushed through an invertible RealNVP map of affine coupling
  layers (Dinh et al., 2017), with an exact log-determinant.

As ``torch.distributions.register_kl`` does for distributions, :func:`register_kl` records a
closed form of ``KL(N(mu, diag e^logvar) || p)`` for a prior class; :class:`dgmlib.models.vae.VAE`
uses it where one exists and a Monte Carlo estimate otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

import torch
from torch import Tensor, nn

from dgmlib.distributions import kl_normal_std_normal, standard_normal_log_prob
from dgmlib.experiment import make
from dgmlib.kernels import mixture_logpdf
from dgmlib.layers import MNIST_SHAPE, reparameterize, shape_tuple
from dgmlib.validation import check_int, check_tensor

__all__ = [
    "PRIORS",
    "AffineCoupling",
    "FlowPrior",
    "MixtureOfGaussiansPrior",
    "Prior",
    "StandardNormalPrior",
    "VampPrior",
    "analytic_kl_per_dim",
    "make_prior",
    "register_kl",
]


class Prior(Protocol):
    """What a VAE needs of a prior ``p(z)``: every prior of this module."""

    @property
    def z_dim(self) -> int:
        """Latent dimension ``Z``."""

    def log_prob(self, z: Tensor) -> Tensor:
        """``log p(z)`` summed over the latent dimensions: ``[..., Z]`` -> ``[...]``, nats."""

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws ``[n, Z]``."""


KLPerDim = Callable[[Prior, Tensor, Tensor], Tensor]
_KL_REGISTRY: dict[type, KLPerDim] = {}


def register_kl(prior_type: type) -> Callable[[KLPerDim], KLPerDim]:
    """Decorator: ``fn(prior, mu, logvar) -> [B, Z]`` is the closed-form
    ``KL(N(mu_j, e^logvar_j) || p(z_j))`` per dimension for priors of ``prior_type``."""

    def decorator(fn: KLPerDim) -> KLPerDim:
        _KL_REGISTRY[prior_type] = fn
        return fn

    return decorator


def analytic_kl_per_dim(prior: Prior) -> KLPerDim | None:
    """The registered closed form for ``type(prior)`` (or a base class), else None."""
    for cls in type(prior).__mro__:
        if cls in _KL_REGISTRY:
            return _KL_REGISTRY[cls]
    return None


class _Prior(nn.Module):
    """Shared shape handling: ``log_prob`` flattens the leading dimensions of ``z [..., Z]``."""

    z_dim: int

    def _flat(self, z: Tensor) -> Tensor:
        """Validate ``z [..., Z]`` and return it as ``[M, Z]``."""
        where = f"{type(self).__name__}.log_prob"
        check_tensor(z, "z", where)
        if z.shape[-1] != self.z_dim:
            raise ValueError(
                f"{where}: z must have shape [..., {self.z_dim}] (Z = {self.z_dim}), got "
                f"{tuple(z.shape)}"
            )
        return z.reshape(-1, self.z_dim)

    def log_prob(self, z: Tensor) -> Tensor:
        """``log p(z)`` summed over the latent dimensions: ``[..., Z]`` -> ``[...]``, nats."""
        return self._log_prob_flat(self._flat(z)).reshape(z.shape[:-1])

    def _log_prob_flat(self, z: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws ``[n, Z]``."""
        raise NotImplementedError  # pragma: no cover - defined by the subclasses


class StandardNormalPrior(_Prior):
    """``p(z) = N(0, I)`` in ``z_dim`` dimensions (no parameters)."""

    anchor: Tensor

    def __init__(self, z_dim: int) -> None:
        super().__init__()
        check_int(z_dim, "z_dim", "StandardNormalPrior")
        self.z_dim = z_dim
        # an empty, non-persistent buffer: it follows .to() so samples land on the right device
        self.register_buffer("anchor", torch.zeros(0), persistent=False)

    def _log_prob_flat(self, z: Tensor) -> Tensor:
        return standard_normal_log_prob(z)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws from ``N(0, I)``: ``[n, Z]``, float32 on the CPU unless the prior has
        been moved (``.to(device, dtype)`` moves its ``anchor`` buffer)."""
        check_int(n, "n", "StandardNormalPrior.sample")
        a = self.anchor
        return torch.randn(n, self.z_dim, generator=generator, dtype=a.dtype, device=a.device)


@register_kl(StandardNormalPrior)
def _kl_standard_normal(prior: Prior, mu: Tensor, logvar: Tensor) -> Tensor:
    """``KL(N(mu_j, e^logvar_j) || N(0, 1))`` per dimension: ``[B, Z]``, nats."""
    return kl_normal_std_normal(mu.unsqueeze(-1), logvar.unsqueeze(-1))


class MixtureOfGaussiansPrior(_Prior):
    """``p(z) = sum_k softmax(logits)_k N(z; means_k, diag(exp(logvars_k)))`` (all learnable).

    ``means`` ``[K, Z]`` start as ``init_scale * N(0, I)`` draws from the global torch seed,
    ``logvars`` at 0 and ``logits`` at 0 (equal weights). The log-density is computed by
    :func:`dgmlib.kernels.mixture_logpdf` (no ``[M, K, Z]`` tensor).
    """

    def __init__(self, z_dim: int, n_components: int = 10, init_scale: float = 1.0) -> None:
        super().__init__()
        check_int(z_dim, "z_dim", "MixtureOfGaussiansPrior")
        check_int(n_components, "n_components", "MixtureOfGaussiansPrior")
        self.z_dim, self.n_components = z_dim, n_components
        self.means = nn.Parameter(init_scale * torch.randn(n_components, z_dim))
        self.logvars = nn.Parameter(torch.zeros(n_components, z_dim))
        self.logits = nn.Parameter(torch.zeros(n_components))

    def log_weights(self) -> Tensor:
        """Normalized log mixture weights ``log pi_k``: ``[K]``."""
        return torch.log_softmax(self.logits, dim=0)

    def _log_prob_flat(self, z: Tensor) -> Tensor:
        return mixture_logpdf(z, self.means, self.logvars, self.log_weights())

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws: a component ``k ~ pi``, then ``z ~ N(means_k, diag(exp(logvars_k)))``:
        ``[n, Z]`` (reparametrized given ``k``)."""
        check_int(n, "n", "MixtureOfGaussiansPrior.sample")
        w = self.log_weights().detach().exp().cpu()
        k = torch.multinomial(w, n, True, generator=generator).to(self.means.device)
        return reparameterize(self.means[k], self.logvars[k], generator=generator)


class VampPrior(_Prior):
    """The VampPrior ``p(z) = (1/K) sum_k q(z | u_k)`` (Tomczak & Welling, 2018).

    ``u_k`` are ``K`` learnable **pseudo-inputs** in data space, ``[K, *x_shape]``, kept in
    ``(0, 1)`` as ``sigmoid(pseudo_logits)``; ``q(z | u)`` is the VAE's own Gaussian encoder, so the
    prior is a mixture of ``K`` diagonal Gaussians whose parameters are the encoder's outputs at the
    pseudo-inputs, and it changes whenever the encoder does.

    The encoder is **not** a submodule of the prior (it belongs to the VAE; a second registration
    would store its weights twice): :class:`dgmlib.models.vae.VAE` binds its own encoder with
    :meth:`bind_encoder`. ``init``: optional starting pseudo-inputs ``[K, *x_shape]`` with values
    in ``[0, 1]`` (or later :meth:`set_pseudo_inputs`, e.g. with training images); by default
    they start at ``0.5 + 0.01 * N(0, 1)`` (global torch seed).
    """

    _encoder: nn.Module | None

    def __init__(
        self,
        z_dim: int,
        n_pseudo: int = 100,
        x_shape: int | Sequence[int] = MNIST_SHAPE,
        init: Tensor | None = None,
    ) -> None:
        super().__init__()
        check_int(z_dim, "z_dim", "VampPrior")
        check_int(n_pseudo, "n_pseudo", "VampPrior")
        self.x_shape = shape_tuple(x_shape)
        self.z_dim, self.n_pseudo = z_dim, n_pseudo
        object.__setattr__(self, "_encoder", None)  # not a submodule: see the docstring
        self.pseudo_logits = nn.Parameter(torch.empty(n_pseudo, *self.x_shape))
        if init is None:
            init = 0.5 + 0.01 * torch.randn(n_pseudo, *self.x_shape)
        self.set_pseudo_inputs(init)

    def set_pseudo_inputs(self, u: Tensor) -> None:
        """Set the pseudo-inputs to ``u`` ``[K, *x_shape]`` (values in ``[0, 1]``, clamped to
        ``[0.01, 0.99]``)."""
        check_tensor(u, "u", "VampPrior.set_pseudo_inputs")
        if tuple(u.shape) != (self.n_pseudo, *self.x_shape):
            raise ValueError(
                f"VampPrior: pseudo-inputs must have shape {(self.n_pseudo, *self.x_shape)}, got "
                f"{tuple(u.shape)}"
            )
        if u.min() < 0 or u.max() > 1:
            raise ValueError("VampPrior: pseudo-inputs must have values in [0, 1]")
        p = u.detach().to(self.pseudo_logits).clamp(0.01, 0.99)
        with torch.no_grad():
            self.pseudo_logits.copy_(torch.log(p) - torch.log1p(-p))

    def bind_encoder(self, encoder: nn.Module) -> None:
        """Use ``encoder``'s posteriors as the mixture components (called by the VAE)."""
        if getattr(encoder, "z_dim", None) != self.z_dim:
            raise ValueError(
                f"VampPrior: the encoder's z_dim ({getattr(encoder, 'z_dim', None)}) differs "
                f"from the prior's ({self.z_dim})"
            )
        object.__setattr__(self, "_encoder", encoder)

    @property
    def encoder(self) -> nn.Module:
        """The VAE's encoder, whose posteriors at the pseudo-inputs make the mixture."""
        if self._encoder is None:
            raise RuntimeError("VampPrior: no encoder bound; put the prior in a VAE first")
        return self._encoder

    def pseudo_inputs(self) -> Tensor:
        """The pseudo-inputs ``u_k = sigmoid(pseudo_logits)``: ``[K, *x_shape]`` in ``(0, 1)``."""
        return torch.sigmoid(self.pseudo_logits)

    def components(self) -> tuple[Tensor, Tensor]:
        """``(mu, logvar)`` of ``q(z | u_k)``, each ``[K, Z]``."""
        return self.encoder(self.pseudo_inputs())

    def _log_prob_flat(self, z: Tensor) -> Tensor:
        mu, logvar = self.components()
        return mixture_logpdf(z, mu.to(z.dtype), logvar.to(z.dtype))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws: ``k`` uniform, then ``z ~ q(z | u_k)``: ``[n, Z]``."""
        check_int(n, "n", "VampPrior.sample")
        mu, logvar = self.components()
        k = torch.randint(0, self.n_pseudo, (n,), generator=generator).to(mu.device)
        return reparameterize(mu[k], logvar[k], generator=generator)


class AffineCoupling(nn.Module):
    """One RealNVP affine coupling layer (Dinh et al., 2017) on ``[M, Z]`` vectors.

    With a fixed binary ``mask`` ``b``, the forward map (data ``z`` -> base ``u``) is

    ``u = b * z + (1 - b) * (z * exp(s) + t)``,  ``(s, t) = net(b * z)``,

    so the dimensions with ``b = 1`` pass unchanged and parametrize an elementwise affine map of
    the others. The Jacobian is triangular after a permutation, and ``log|det du/dz| =
    sum((1 - b) * s)``. ``s`` is soft-clamped, ``s = c * tanh(raw / c)`` with ``c = s_max``. The
    last layer starts at zero, so a new layer is the identity.
    """

    mask: Tensor

    def __init__(self, mask: Tensor, hidden: int = 64, s_max: float = 3.0) -> None:
        super().__init__()
        if mask.dim() != 1:
            raise ValueError(f"AffineCoupling: mask must have shape [Z], got {tuple(mask.shape)}")
        self.register_buffer("mask", mask.to(torch.float32))
        z_dim = mask.numel()
        self.s_max = s_max
        hidden_layers = (nn.Linear(z_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        last = nn.Linear(hidden, 2 * z_dim)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*hidden_layers, last)

    def _st(self, z_masked: Tensor) -> tuple[Tensor, Tensor]:
        s_raw, t = self.net(z_masked).chunk(2, dim=-1)
        s = self.s_max * torch.tanh(s_raw / self.s_max)
        keep = 1.0 - self.mask
        return s * keep, t * keep

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``z [M, Z]`` -> ``(u [M, Z], log|det du/dz| [M])``."""
        s, t = self._st(z * self.mask)
        return z * torch.exp(s) + t, s.sum(-1)

    def inverse(self, u: Tensor) -> Tensor:
        """``u [M, Z]`` -> ``z [M, Z]``, the exact inverse of :meth:`forward`."""
        s, t = self._st(u * self.mask)  # the masked part of u equals that of z
        return (u - t) * torch.exp(-s)


class FlowPrior(_Prior):
    """``p(z) = N(f(z); 0, I) |det df/dz|`` with ``f`` a stack of :class:`AffineCoupling` layers.

    ``log_prob`` runs ``f`` (data to base) and adds the log-determinants; ``sample`` draws
    ``u ~ N(0, I)`` and runs ``f^{-1}``. The masks alternate between the even and the odd latent
    coordinates (for ``Z = 1`` a coupling cannot condition on anything; use ``Z >= 2``). At
    initialisation ``f`` is the identity, so the prior starts as ``N(0, I)``.
    """

    def __init__(self, z_dim: int, n_layers: int = 4, hidden: int = 64, s_max: float = 3.0):
        super().__init__()
        check_int(n_layers, "n_layers", "FlowPrior")
        check_int(z_dim, "z_dim", "FlowPrior", low=2)
        self.z_dim = z_dim
        parity = torch.arange(z_dim) % 2
        self.layers = nn.ModuleList(
            AffineCoupling((parity == i % 2).float(), hidden, s_max) for i in range(n_layers)
        )

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """The flow ``f``: ``z [M, Z]`` -> ``(u = f(z) [M, Z], log|det df/dz| [M])``."""
        logdet = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
        for layer in self.layers:
            z, ld = layer(z)
            logdet = logdet + ld
        return z, logdet

    def inverse(self, u: Tensor) -> Tensor:
        """``f^{-1}``: ``u [M, Z]`` -> ``z [M, Z]``."""
        for layer in reversed(self.layers):
            u = cast(AffineCoupling, layer).inverse(u)  # a ModuleList holds plain nn.Modules
        return u

    def _log_prob_flat(self, z: Tensor) -> Tensor:
        u, logdet = self(z)
        return standard_normal_log_prob(u) + logdet

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws ``z = f^{-1}(u)``, ``u ~ N(0, I)``: ``[n, Z]``."""
        check_int(n, "n", "FlowPrior.sample")
        p = next(self.parameters())  # n_layers >= 1: there are parameters
        u = torch.randn(n, self.z_dim, generator=generator, dtype=p.dtype, device=p.device)
        return self.inverse(u)


#: The names :func:`make_prior` and :meth:`dgmlib.models.vae.VAE.for_mnist` accept.
PRIORS = ("standard", "mog", "vamp", "flow")
_PRIOR_CLASSES = {
    "standard": StandardNormalPrior,
    "mog": MixtureOfGaussiansPrior,
    "vamp": VampPrior,
    "flow": FlowPrior,
}


def make_prior(kind: str, z_dim: int, **kwargs: Any) -> _Prior:
    """A prior by name, with its build spec (:func:`dgmlib.experiment.make`): ``"standard"``,
    ``"mog"`` (kwargs ``n_components``, ``init_scale``), ``"vamp"`` (kwargs ``n_pseudo``,
    ``x_shape``; its encoder is bound by the VAE) or ``"flow"`` (kwargs ``n_layers``, ``hidden``,
    ``s_max``)."""
    if kind not in _PRIOR_CLASSES:
        raise ValueError(f"make_prior: kind must be one of {PRIORS}, got {kind!r}")
    return make(_PRIOR_CLASSES[kind], z_dim=z_dim, **kwargs)
