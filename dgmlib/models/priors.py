"""Priors ``p(z)`` for VAEs, and a VAE that takes any of them.

Every prior is an ``nn.Module`` with the same two methods:

* ``log_prob(z)``: ``z [..., Z]`` -> ``[...]``, the log-density **summed over the Z latent
  dimensions**, in **nats** (any number of leading dimensions, e.g. ``[B, Z]`` or ``[K, B, Z]``);
* ``sample(n, generator=None)``: ``n`` draws, ``[n, Z]`` (reparametrized where the prior has
  parameters, so gradients reach them).

The priors:

* :class:`StandardNormalPrior` -- ``N(0, I)``, the VAE's default (no parameters);
* :class:`MixtureOfGaussiansPrior` -- ``sum_k pi_k N(z; m_k, diag(s_k^2))`` with learnable means,
  log-variances and weights (logits);
* :class:`VampPrior` -- the "variational mixture of posteriors" of Tomczak & Welling (2018):
  ``(1/K) sum_k q(z | u_k)``, the encoder's posteriors at ``K`` learnable pseudo-inputs ``u_k``;
* :class:`FlowPrior` -- ``N(0, I)`` pushed through an invertible RealNVP map of affine coupling
  layers (Dinh et al., 2017), with an exact log-determinant.

:class:`PriorVAE` is :class:`dgmlib.models.vae.VAE` with the prior as a module: its KL term is
the single-sample Monte Carlo estimate ``log q(z|x) - log p(z)`` (analytic for the standard
normal prior, so that it reproduces ``VAE`` exactly), and ``elbo``, ``log_weights`` and
``sample`` use the prior, so :func:`dgmlib.bounds.estimate_nll` works unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from dgmlib.distributions import (
    gaussian_log_prob,
    kl_normal_std_normal,
    standard_normal_log_prob,
    validate_tensor,
)
from dgmlib.kernels import mixture_logpdf
from dgmlib.models.vae import (
    MNIST_SHAPE,
    VAE,
    BernoulliDecoder,
    MLPGaussianEncoder,
    _check_K,
    _shape_tuple,
    reparameterize,
)

__all__ = [
    "PRIORS",
    "AffineCoupling",
    "FlowPrior",
    "MixtureOfGaussiansPrior",
    "PriorVAE",
    "StandardNormalPrior",
    "VampPrior",
    "make_prior",
]


def _check_n(n: int, where: str) -> None:
    """Raise a ValueError unless ``n`` is an integer >= 1."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{where}: n must be an integer >= 1, got {n!r}")


class _Prior(nn.Module):
    """Shared shape handling: ``log_prob`` flattens the leading dimensions of ``z [..., Z]``."""

    z_dim: int

    def _flat(self, z: Tensor) -> Tensor:
        """Validate ``z [..., Z]`` and return it as ``[M, Z]``."""
        where = f"{type(self).__name__}.log_prob"
        validate_tensor(z, "z", where)
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

    def _param(self) -> Tensor | None:
        """Any parameter or buffer (for dtype and device), or None."""
        for t in self.parameters():
            return t
        for t in self.buffers():
            return t
        return None


class StandardNormalPrior(_Prior):
    """``p(z) = N(0, I)`` in ``z_dim`` dimensions (no parameters)."""

    def __init__(self, z_dim: int) -> None:
        super().__init__()
        _check_n(z_dim, "StandardNormalPrior (z_dim)")
        self.z_dim = z_dim

    def _log_prob_flat(self, z: Tensor) -> Tensor:
        return standard_normal_log_prob(z)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws from ``N(0, I)``: ``[n, Z]``, float32."""
        _check_n(n, "StandardNormalPrior.sample")
        return torch.randn(n, self.z_dim, generator=generator)


class MixtureOfGaussiansPrior(_Prior):
    """``p(z) = sum_k softmax(logits)_k N(z; means_k, diag(exp(logvars_k)))`` (all learnable).

    ``means`` ``[K, Z]`` start as ``init_scale * N(0, I)`` draws from the global torch seed,
    ``logvars`` at 0 and ``logits`` at 0 (equal weights). The log-density is computed by
    :func:`dgmlib.kernels.mixture_logpdf` (no ``[M, K, Z]`` tensor).
    """

    def __init__(self, z_dim: int, n_components: int = 10, init_scale: float = 1.0) -> None:
        super().__init__()
        _check_n(z_dim, "MixtureOfGaussiansPrior (z_dim)")
        _check_n(n_components, "MixtureOfGaussiansPrior (n_components)")
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
        _check_n(n, "MixtureOfGaussiansPrior.sample")
        k = torch.multinomial(self.log_weights().detach().exp(), n, True, generator=generator)
        return reparameterize(self.means[k], self.logvars[k], generator=generator)


class VampPrior(_Prior):
    """The VampPrior ``p(z) = (1/K) sum_k q(z | u_k)`` (Tomczak & Welling, 2018).

    ``u_k`` are ``K`` learnable **pseudo-inputs** in data space, ``[K, *x_shape]``, kept in
    ``(0, 1)`` as ``sigmoid(pseudo_logits)``; ``q(z | u)`` is the VAE's own Gaussian encoder, so the
    prior is a mixture of ``K`` diagonal Gaussians whose parameters are the encoder's outputs at the
    pseudo-inputs, and it changes whenever the encoder does.

    The encoder is **not** registered as a submodule of the prior (it belongs to the VAE; a second
    registration would store its weights twice). ``init``: optional starting pseudo-inputs
    ``[K, *x_shape]`` with values in ``[0, 1]`` (e.g. training images); by default they start at
    ``0.5 + 0.01 * N(0, 1)`` (global torch seed).
    """

    def __init__(
        self,
        encoder: nn.Module,
        n_pseudo: int = 100,
        x_shape: int | Sequence[int] = MNIST_SHAPE,
        init: Tensor | None = None,
    ) -> None:
        super().__init__()
        _check_n(n_pseudo, "VampPrior (n_pseudo)")
        self.x_shape = _shape_tuple(x_shape)
        z_dim = getattr(encoder, "z_dim", None)
        if not isinstance(z_dim, int):
            raise ValueError("VampPrior: the encoder must have an integer attribute z_dim")
        self.z_dim, self.n_pseudo = z_dim, n_pseudo
        object.__setattr__(self, "_encoder", encoder)  # not a submodule: see the docstring
        if init is None:
            init = 0.5 + 0.01 * torch.randn(n_pseudo, *self.x_shape)
        else:
            validate_tensor(init, "init", "VampPrior")
            if tuple(init.shape) != (n_pseudo, *self.x_shape):
                raise ValueError(
                    f"VampPrior: init must have shape {(n_pseudo, *self.x_shape)}, got "
                    f"{tuple(init.shape)}"
                )
            if init.min() < 0 or init.max() > 1:
                raise ValueError("VampPrior: init must have values in [0, 1]")
        p = init.detach().to(torch.float32).clamp(0.01, 0.99)
        self.pseudo_logits = nn.Parameter(torch.log(p) - torch.log1p(-p))

    @property
    def encoder(self) -> nn.Module:
        """The VAE's encoder, whose posteriors at the pseudo-inputs make the mixture."""
        return self._encoder

    def pseudo_inputs(self) -> Tensor:
        """The pseudo-inputs ``u_k = sigmoid(pseudo_logits)``: ``[K, *x_shape]`` in ``(0, 1)``."""
        return torch.sigmoid(self.pseudo_logits)

    def components(self) -> tuple[Tensor, Tensor]:
        """``(mu, logvar)`` of ``q(z | u_k)``, each ``[K, Z]``."""
        return self._encoder(self.pseudo_inputs())

    def _log_prob_flat(self, z: Tensor) -> Tensor:
        mu, logvar = self.components()
        return mixture_logpdf(z, mu.to(z.dtype), logvar.to(z.dtype))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws: ``k`` uniform, then ``z ~ q(z | u_k)``: ``[n, Z]``."""
        _check_n(n, "VampPrior.sample")
        mu, logvar = self.components()
        k = torch.randint(0, self.n_pseudo, (n,), generator=generator)
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

    def __init__(self, mask: Tensor, hidden: int = 64, s_max: float = 3.0) -> None:
        super().__init__()
        if mask.dim() != 1:
            raise ValueError(f"AffineCoupling: mask must have shape [Z], got {tuple(mask.shape)}")
        self.register_buffer("mask", mask.to(torch.float32))
        z_dim = mask.numel()
        self.s_max = s_max
        self.net = nn.Sequential(
            nn.Linear(z_dim, hidden),
            nn.Tanh(),
            nn.Linear(hidden, hidden),
            nn.Tanh(),
            nn.Linear(hidden, 2 * z_dim),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

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
        _check_n(n_layers, "FlowPrior (n_layers)")
        if isinstance(z_dim, bool) or not isinstance(z_dim, int) or z_dim < 2:
            raise ValueError(f"FlowPrior: z_dim must be an integer >= 2, got {z_dim!r}")
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
            u = layer.inverse(u)
        return u

    def _log_prob_flat(self, z: Tensor) -> Tensor:
        u, logdet = self(z)
        return standard_normal_log_prob(u) + logdet

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws ``z = f^{-1}(u)``, ``u ~ N(0, I)``: ``[n, Z]``."""
        _check_n(n, "FlowPrior.sample")
        p = self._param()
        u = torch.randn(n, self.z_dim, generator=generator, dtype=p.dtype, device=p.device)
        return self.inverse(u)


#: The names :func:`make_prior` and :meth:`PriorVAE.for_mnist` accept.
PRIORS = ("standard", "mog", "vamp", "flow")


def make_prior(kind: str, z_dim: int, encoder: nn.Module | None = None, **kwargs) -> _Prior:
    """A prior by name: ``"standard"``, ``"mog"`` (kwargs ``n_components``, ``init_scale``),
    ``"vamp"`` (needs ``encoder``; kwargs ``n_pseudo``, ``x_shape``, ``init``) or ``"flow"``
    (kwargs ``n_layers``, ``hidden``, ``s_max``)."""
    if kind == "standard":
        return StandardNormalPrior(z_dim, **kwargs)
    if kind == "mog":
        return MixtureOfGaussiansPrior(z_dim, **kwargs)
    if kind == "vamp":
        if encoder is None:
            raise ValueError("make_prior: the VampPrior needs the VAE's encoder")
        return VampPrior(encoder, **kwargs)
    if kind == "flow":
        return FlowPrior(z_dim, **kwargs)
    raise ValueError(f"make_prior: kind must be one of {PRIORS}, got {kind!r}")


class PriorVAE(VAE):
    """A VAE with a Gaussian encoder, any decoder and any prior of this module.

    ``loss(x)`` returns the keys of :meth:`VAE.loss`, averaged over the batch, in nats: ``"recon"``
    = ``-log p(x|z)`` at one reparametrized sample ``z ~ q(z|x)``, ``"kl"`` = the KL term,
    ``"elbo"`` = ``-recon - kl`` and ``"loss"`` = ``recon + kl_weight * kl``. The KL term is the
    single-sample estimate ``log q(z|x) - log p(z)`` at the same ``z`` (unbiased for
    ``KL(q(z|x) || p(z))``, and differentiable in the prior's parameters), except for
    :class:`StandardNormalPrior`, where it is the analytic KL, as in :class:`VAE`. Free bits are not
    supported.
    """

    def __init__(
        self, encoder: nn.Module, decoder: nn.Module, prior: nn.Module, kl_weight: float = 1.0
    ) -> None:
        super().__init__(encoder, decoder, kl_weight=kl_weight)
        if getattr(prior, "z_dim", None) != self.z_dim:
            raise ValueError(
                f"PriorVAE: the prior's z_dim ({getattr(prior, 'z_dim', None)}) differs from the "
                f"decoder's ({self.z_dim})"
            )
        self.prior = prior

    @classmethod
    def for_mnist(  # type: ignore[override]
        cls,
        z_dim: int = 50,
        hidden: int = 200,
        prior: str = "standard",
        activation: type[nn.Module] = nn.Tanh,
        prior_kwargs: dict | None = None,
    ) -> PriorVAE:
        """Burda et al.'s one-layer MLP VAE (``784-hidden-hidden-(2 z_dim)`` encoder, Bernoulli
        decoder, tanh) with the prior named ``prior``, built by :func:`make_prior` with
        ``prior_kwargs``.

        The encoder and decoder are created first, then the prior, so for one torch seed the
        networks start from the same weights whatever the prior."""
        encoder = MLPGaussianEncoder(784, hidden, z_dim, 2, activation)
        decoder = BernoulliDecoder(z_dim, hidden, MNIST_SHAPE, 2, activation)
        return cls(encoder, decoder, make_prior(prior, z_dim, encoder, **(prior_kwargs or {})))

    @property
    def analytic_kl(self) -> bool:
        """True when the KL term has a closed form (the standard normal prior)."""
        return isinstance(self.prior, StandardNormalPrior)

    def _log_pz_minus_log_qz(self, t: dict[str, Tensor]) -> Tensor:
        """``log p(z) - log q(z|x)`` at the samples of :meth:`VAE._terms`: ``[B]`` or ``[K, B]``."""
        log_qz = gaussian_log_prob(t["z"], t["mu"], t["logvar"])
        return self.prior.log_prob(t["z"]) - log_qz

    def loss(self, x: Tensor) -> dict[str, Tensor]:
        """Training terms for a batch ``x [B, ...]``, averaged over the batch, in nats."""
        if self.free_bits > 0:
            raise ValueError("PriorVAE: free bits are not supported")
        t = self._terms(x, None)
        recon = -t["log_px_z"].mean()
        if self.analytic_kl:
            kl = kl_normal_std_normal(t["mu"], t["logvar"]).mean()
        else:
            kl = -self._log_pz_minus_log_qz(t).mean()
        return {
            "loss": recon + self.kl_weight * kl,
            "recon": recon,
            "kl": kl,
            "elbo": -(recon + kl),
        }

    def elbo(
        self, x: Tensor, n_samples: int = 1, generator: torch.Generator | None = None
    ) -> Tensor:
        """ELBO per example ``[B]``, nats, from ``n_samples`` draws ``z_s ~ q(z|x)``:
        ``mean_s [log p(x|z_s) + log p(z_s) - log q(z_s|x)]`` (analytic KL for ``N(0, I)``)."""
        if self.analytic_kl:
            return super().elbo(x, n_samples, generator)
        _check_K(n_samples, "n_samples", f"{type(self).__name__}.elbo")
        t = self._terms(x, n_samples, generator)
        return (t["log_px_z"] + self._log_pz_minus_log_qz(t)).mean(0)

    def log_weights(self, x: Tensor, K: int, generator: torch.Generator | None = None) -> Tensor:
        """``log p(x|z_k) + log p(z_k) - log q(z_k|x)`` for ``K`` draws ``z_k ~ q(z|x)``:
        ``[K, B]``, nats (the input of :func:`dgmlib.bounds.estimate_nll`)."""
        _check_K(K, "K", f"{type(self).__name__}.log_weights")
        t = self._terms(x, K, generator)
        return t["log_px_z"] + self._log_pz_minus_log_qz(t)

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, mean: bool = False
    ) -> Tensor:
        """``n`` draws ``z ~ p(z)`` (the prior), ``x ~ p(x|z)``: ``[n, *x_shape]``; ``mean=True``
        gives ``E[x|z]``. No gradients."""
        _check_n(n, f"{type(self).__name__}.sample")
        z = self.prior.sample(n, generator=generator)
        return self.decoder.mean(z) if mean else self.decoder.sample(z, generator=generator)
