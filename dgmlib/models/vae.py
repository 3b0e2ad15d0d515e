"""Variational autoencoders: Gaussian encoders, Bernoulli and Gaussian decoders, the VAE and IWAE.

The generative model is ``z ~ N(0, I)``, ``x | z ~ p_theta(x | z)`` (a decoder), and the
amortized posterior approximation is ``q_phi(z | x) = N(mu(x), diag(exp(logvar(x))))`` (an
encoder). Shapes used throughout:

* ``x``: a batch of data ``[B, *x_shape]``, e.g. ``[B, 1, 28, 28]``; MLPs flatten it, so
  ``[B, 28, 28]`` and ``[B, 784]`` work too (anything with ``prod(x_shape)`` values per example);
* ``mu, logvar``: ``[B, Z]``;
* ``z``: ``[B, Z]`` for one latent sample per example, or ``[K, B, Z]`` for ``K`` samples;
* log-probabilities are **summed over pixels / latent dimensions**, giving ``[B]`` (or
  ``[K, B]``), and are in **nats**; losses average them over the batch.

Decoders share one interface: ``forward(z)`` (distribution parameters), ``log_prob(x, z)``,
``sample(z, generator)`` and, where it has a closed form, ``mean(z)`` (the expected image).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgmlib.bounds import iwae_bound
from dgmlib.distributions import (
    gaussian_log_prob,
    kl_normal_std_normal,
    standard_normal_log_prob,
    validate_tensor,
)
from dgmlib.kl_control import free_bits_kl

__all__ = [
    "IWAE",
    "VAE",
    "BernoulliDecoder",
    "ConvGaussianEncoder",
    "GaussianDecoder",
    "MLPGaussianEncoder",
    "mlp",
    "reparameterize",
]

MNIST_SHAPE = (1, 28, 28)


def _shape_tuple(x_shape: int | Sequence[int]) -> tuple[int, ...]:
    """``x_shape`` as a tuple of positive ints (an int means a flat vector)."""
    shape = (x_shape,) if isinstance(x_shape, int) else tuple(int(s) for s in x_shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(
            f"x_shape must be a positive int or a tuple of positive ints, got {x_shape}"
        )
    return shape


def mlp(
    in_dim: int,
    hidden: int,
    out_dim: int,
    n_hidden_layers: int = 2,
    activation: type[nn.Module] = nn.Tanh,
) -> nn.Sequential:
    """``in_dim -> hidden -> ... -> out_dim`` with ``n_hidden_layers`` hidden layers (0: linear)."""
    if n_hidden_layers < 0:
        raise ValueError(f"mlp: n_hidden_layers must be >= 0, got {n_hidden_layers}")
    layers: list[nn.Module] = []
    d = in_dim
    for _ in range(n_hidden_layers):
        layers += [nn.Linear(d, hidden), activation()]
        d = hidden
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


def reparameterize(
    mu: Tensor, logvar: Tensor, K: int | None = None, generator: torch.Generator | None = None
) -> Tensor:
    """``z = mu + exp(logvar / 2) * eps``, ``eps ~ N(0, I)``: ``[B, Z]``, or ``[K, B, Z]`` given K.

    Differentiable in ``mu`` and ``logvar`` (the reparametrization trick).
    """
    shape = mu.shape if K is None else (K, *mu.shape)
    eps = torch.randn(shape, generator=generator, dtype=mu.dtype, device=mu.device)
    return mu + torch.exp(0.5 * logvar) * eps


# --------------------------------------------------------------------------------------------
# Encoders: x [B, ...] -> (mu [B, Z], logvar [B, Z])
# --------------------------------------------------------------------------------------------


class MLPGaussianEncoder(nn.Module):
    """``q(z|x) = N(mu(x), diag(exp(logvar(x))))`` from an MLP on the flattened ``x``."""

    def __init__(
        self,
        x_dim: int,
        hidden: int,
        z_dim: int,
        n_hidden_layers: int = 2,
        activation: type[nn.Module] = nn.Tanh,
    ) -> None:
        super().__init__()
        self.x_dim, self.z_dim = x_dim, z_dim
        self.net = mlp(x_dim, hidden, 2 * z_dim, n_hidden_layers, activation)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x ``[B, ...]`` (``x_dim`` values per example) -> ``(mu, logvar)``, each ``[B, Z]``."""
        h = self.net(_flatten(x, self.x_dim, type(self).__name__))
        mu, logvar = h.chunk(2, dim=-1)
        return mu, logvar


class ConvGaussianEncoder(nn.Module):
    """A small convolutional encoder for ``1 x 28 x 28`` images.

    ``conv 4x4/2 (1->c) -> conv 4x4/2 (c->2c) -> linear (2c*7*7 -> hidden) -> (mu, logvar)``,
    with ReLU activations.
    """

    def __init__(self, z_dim: int, channels: int = 32, hidden: int = 256) -> None:
        super().__init__()
        self.z_dim = z_dim
        c = channels
        self.net = nn.Sequential(
            nn.Conv2d(1, c, 4, stride=2, padding=1),  # 14 x 14
            nn.ReLU(),
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1),  # 7 x 7
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(2 * c * 7 * 7, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 2 * z_dim),
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x ``[B, 1, 28, 28]`` (or ``[B, 28, 28]``, ``[B, 784]``) -> ``(mu, logvar)``, ``[B, Z]``
        each."""
        h = self.net(_flatten(x, 784, type(self).__name__).view(-1, *MNIST_SHAPE))
        mu, logvar = h.chunk(2, dim=-1)
        return mu, logvar


def _flatten(x: Tensor, x_dim: int, where: str) -> Tensor:
    """``x [B, ...]`` -> ``[B, x_dim]``; a ValueError naming ``x`` when the sizes do not match."""
    validate_tensor(x, "x", where)
    if x[0].numel() != x_dim:
        raise ValueError(
            f"{where}: x must hold {x_dim} values per example, got shape {tuple(x.shape)}"
        )
    return x.reshape(x.shape[0], x_dim)


# --------------------------------------------------------------------------------------------
# Decoders: z [..., Z] -> p(x | z)
# --------------------------------------------------------------------------------------------


class _Decoder(nn.Module):
    """Shared shape handling: ``log_prob(x [B, ...], z [B, Z] or [K, B, Z]) -> [B] or [K, B]``."""

    x_shape: tuple[int, ...]
    z_dim: int

    @property
    def x_dim(self) -> int:
        """Number of values per example, ``prod(x_shape)``."""
        return math.prod(self.x_shape)

    def _check(self, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """Validate ``x`` and ``z``; return ``x`` flattened to ``[B, x_dim]`` and ``z``."""
        where = f"{type(self).__name__}.log_prob"
        validate_tensor(z, "z", where)
        if z.dim() not in (2, 3) or z.shape[-1] != self.z_dim:
            raise ValueError(
                f"{where}: z must have shape [B, {self.z_dim}] or [K, B, {self.z_dim}], "
                f"got {tuple(z.shape)}"
            )
        xf = _flatten(x, self.x_dim, where)
        if xf.shape[0] != z.shape[-2]:
            raise ValueError(
                f"{where}: x has {xf.shape[0]} examples but z has {z.shape[-2]} (shape "
                f"{tuple(z.shape)})"
            )
        return xf, z


class BernoulliDecoder(_Decoder):
    """``p(x|z) = prod_i Bernoulli(x_i; sigmoid(logits_i(z)))`` with an MLP, for binary images."""

    def __init__(
        self,
        z_dim: int,
        hidden: int,
        x_shape: int | Sequence[int] = MNIST_SHAPE,
        n_hidden_layers: int = 2,
        activation: type[nn.Module] = nn.Tanh,
    ) -> None:
        super().__init__()
        self.z_dim, self.x_shape = z_dim, _shape_tuple(x_shape)
        self.net = mlp(z_dim, hidden, self.x_dim, n_hidden_layers, activation)

    def forward(self, z: Tensor) -> Tensor:
        """Logits ``[..., *x_shape]`` for ``z [..., Z]``."""
        return self.net(z).view(*z.shape[:-1], *self.x_shape)

    def log_prob(self, x: Tensor, z: Tensor) -> Tensor:
        """``log p(x|z)`` summed over pixels: ``[B]`` for z ``[B, Z]``, ``[K, B]`` for z
        ``[K, B, Z]``. ``x`` in ``[0, 1]`` (binary, or grey levels read as Bernoulli means), nats.
        """
        xf, z = self._check(x, z)
        logits = self.net(z)
        # log Bernoulli = -BCE-with-logits, stable for any logits
        return -F.binary_cross_entropy_with_logits(
            logits, xf.expand_as(logits), reduction="none"
        ).sum(-1)

    def mean(self, z: Tensor) -> Tensor:
        """``E[x|z] = sigmoid(logits)``: ``[..., *x_shape]``."""
        return torch.sigmoid(self(z))

    def sample(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A binary image ``x ~ p(x|z)`` per latent: ``[..., *x_shape]`` in {0, 1}."""
        return torch.bernoulli(self.mean(z), generator=generator)


class GaussianDecoder(_Decoder):
    """``p(x|z) = N(x; m(z), diag(sigma^2))`` with an MLP mean, for continuous data.

    ``variance="fixed"``: ``sigma`` stays at the given value (the ELBO's reconstruction term is
    then a scaled squared error); ``"learned"``: one trainable log-variance per data dimension,
    initialised at ``sigma``, independent of ``z``.
    """

    def __init__(
        self,
        z_dim: int,
        hidden: int,
        x_shape: int | Sequence[int] = MNIST_SHAPE,
        n_hidden_layers: int = 2,
        activation: type[nn.Module] = nn.Tanh,
        variance: str = "learned",
        sigma: float = 1.0,
    ) -> None:
        super().__init__()
        if variance not in ("fixed", "learned"):
            raise ValueError(
                f"GaussianDecoder: variance must be 'fixed' or 'learned', got {variance!r}"
            )
        if not sigma > 0:
            raise ValueError(f"GaussianDecoder: sigma must be > 0, got {sigma}")
        self.z_dim, self.x_shape = z_dim, _shape_tuple(x_shape)
        self.variance = variance
        self.net = mlp(z_dim, hidden, self.x_dim, n_hidden_layers, activation)
        init = torch.full((self.x_dim,), 2.0 * math.log(sigma))
        if variance == "learned":
            self.logvar = nn.Parameter(init)
        else:
            self.register_buffer("logvar", init)

    def forward(self, z: Tensor) -> Tensor:
        """The mean ``m(z)``: ``[..., *x_shape]``."""
        return self.net(z).view(*z.shape[:-1], *self.x_shape)

    def log_prob(self, x: Tensor, z: Tensor) -> Tensor:
        """``log N(x; m(z), diag(sigma^2))`` summed over dims: ``[B]`` or ``[K, B]``, nats."""
        xf, z = self._check(x, z)
        return gaussian_log_prob(xf, self.net(z), self.logvar)

    def mean(self, z: Tensor) -> Tensor:
        """``E[x|z] = m(z)``: ``[..., *x_shape]``."""
        return self(z)

    def sample(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``x = m(z) + sigma * eps``: ``[..., *x_shape]``."""
        m = self.net(z)
        eps = torch.randn(m.shape, generator=generator, dtype=m.dtype, device=m.device)
        return (m + torch.exp(0.5 * self.logvar) * eps).view(*z.shape[:-1], *self.x_shape)


# --------------------------------------------------------------------------------------------
# VAE and IWAE
# --------------------------------------------------------------------------------------------


class VAE(nn.Module):
    """A VAE with prior ``N(0, I)``, a Gaussian ``encoder`` and any ``decoder`` of this module.

    ``loss(x)`` minimises ``-(E_q[log p(x|z)] - kl_weight * KL)`` with one reparametrized sample
    per example and the analytic KL. Two attributes change the KL term of the *objective* (the
    reported ``"elbo"`` and ``"kl"`` are always the true ones):

    * ``kl_weight`` (beta, default 1): weight of the KL term, e.g. set by an annealing schedule
      (:mod:`dgmlib.kl_control`);
    * ``free_bits`` (lambda, nats, default 0 = off) and ``free_bits_groups``: the KL term becomes
      ``sum_g max(lambda, mean_batch KL_g)`` over groups of latent dimensions
      (:func:`dgmlib.kl_control.free_bits_kl`; ``None`` groups = one group per dimension).
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        kl_weight: float = 1.0,
        free_bits: float = 0.0,
        free_bits_groups: int | None = None,
    ) -> None:
        super().__init__()
        enc_z = getattr(encoder, "z_dim", decoder.z_dim)
        if enc_z != decoder.z_dim:
            raise ValueError(
                f"{type(self).__name__}: the encoder's z_dim ({enc_z}) differs from the "
                f"decoder's ({decoder.z_dim})"
            )
        self.encoder, self.decoder = encoder, decoder
        self.z_dim: int = decoder.z_dim
        self.kl_weight = kl_weight
        self.free_bits = free_bits
        self.free_bits_groups = free_bits_groups

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def for_mnist(
        cls,
        z_dim: int = 50,
        hidden: int = 200,
        activation: type[nn.Module] = nn.Tanh,
        **kwargs,
    ) -> VAE:
        """Burda et al. (2016)'s one-stochastic-layer model for binary 28 x 28 images.

        Encoder ``784-200-200-(50+50)`` and Bernoulli decoder ``50-200-200-784``, tanh
        activations. ``kwargs`` go to the constructor (e.g. ``K`` for :class:`IWAE`).
        """
        encoder = MLPGaussianEncoder(784, hidden, z_dim, 2, activation)
        decoder = BernoulliDecoder(z_dim, hidden, MNIST_SHAPE, 2, activation)
        return cls(encoder, decoder, **kwargs)

    # -- inference ----------------------------------------------------------------------------
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, logvar)`` of ``q(z|x)``, each ``[B, Z]``."""
        validate_tensor(x, "x", f"{type(self).__name__}.encode")
        return self.encoder(x)

    def _terms(
        self, x: Tensor, K: int | None, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Encoder output, reparametrized samples and log p(x|z) (``[B]``, or ``[K, B]``)."""
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar, K, generator)
        return {"mu": mu, "logvar": logvar, "z": z, "log_px_z": self.decoder.log_prob(x, z)}

    def loss(self, x: Tensor) -> dict[str, Tensor]:
        """Training terms for a batch ``x [B, ...]``, each averaged over the batch, in nats.

        ``"recon"`` = ``E_q[-log p(x|z)]`` (one sample), ``"kl"`` = analytic ``KL(q(z|x) || p(z))``,
        ``"elbo"`` = ``-recon - kl``, ``"loss"`` = ``recon + kl_weight * KL-term`` (the KL-term
        uses free bits when ``free_bits > 0``; with the defaults ``loss = -elbo``).
        """
        t = self._terms(x, None)
        kl_dims = _kl_per_dim(t["mu"], t["logvar"])  # [B, Z]
        recon = -t["log_px_z"].mean()
        kl = kl_dims.sum(-1).mean()
        if self.free_bits > 0:
            kl_term = free_bits_kl(kl_dims, self.free_bits, self.free_bits_groups)
        else:
            kl_term = kl
        return {
            "loss": recon + self.kl_weight * kl_term,
            "recon": recon,
            "kl": kl,
            "elbo": -(recon + kl),
        }

    def elbo(
        self, x: Tensor, n_samples: int = 1, generator: torch.Generator | None = None
    ) -> Tensor:
        """ELBO per example ``[B]``, nats: ``mean_s log p(x|z_s) - KL`` with ``n_samples`` draws."""
        _check_K(n_samples, "n_samples", f"{type(self).__name__}.elbo")
        t = self._terms(x, n_samples, generator)
        return t["log_px_z"].mean(0) - kl_normal_std_normal(t["mu"], t["logvar"])

    def log_weights(self, x: Tensor, K: int, generator: torch.Generator | None = None) -> Tensor:
        """``log p(x, z_k) - log q(z_k|x)`` for ``K`` samples ``z_k ~ q(z|x)``: ``[K, B]``, nats."""
        _check_K(K, "K", f"{type(self).__name__}.log_weights")
        t = self._terms(x, K, generator)
        return _log_weights(t)

    # -- generation ---------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, mean: bool = False
    ) -> Tensor:
        """``n`` draws ``z ~ N(0, I)``, ``x ~ p(x|z)``: ``[n, *x_shape]``; ``mean=True`` gives
        ``E[x|z]`` instead of a sample of ``x``. No gradients."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{type(self).__name__}.sample: n must be an integer >= 1, got {n!r}")
        if mean and not hasattr(self.decoder, "mean"):
            raise ValueError(
                f"{type(self).__name__}.sample: mean=True needs a decoder with a closed-form "
                f"mean; {type(self.decoder).__name__} has none (use mean=False)"
            )
        p = next(self.parameters())
        z = torch.randn(n, self.z_dim, generator=generator, dtype=p.dtype, device=p.device)
        return self.decoder.mean(z) if mean else self.decoder.sample(z, generator=generator)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Decode the posterior mean: ``E[x | z = mu(x)]`` (a sample where the decoder has no
        closed-form mean, e.g. an autoregressive one): ``[B, *x_shape]``. No gradients."""
        mu, _ = self.encode(x)
        if hasattr(self.decoder, "mean"):
            return self.decoder.mean(mu)
        return self.decoder.sample(mu, generator=generator)


class IWAE(VAE):
    """Importance-weighted autoencoder (Burda et al., 2016): the VAE trained on the ``K``-sample
    bound ``log (1/K) sum_k p(x, z_k) / q(z_k|x)``.

    ``K = 1`` is a VAE whose KL is estimated by Monte Carlo rather than analytically. The
    attributes ``kl_weight`` and ``free_bits`` are not used.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, K: int = 5) -> None:
        super().__init__(encoder, decoder)
        _check_K(K, "K", "IWAE")
        self.K = K

    def loss(self, x: Tensor) -> dict[str, Tensor]:
        """Terms averaged over the batch, nats, from ``K`` samples per example.

        ``"iwae"`` = the bound, ``"loss"`` = ``-iwae``; ``"recon"`` = ``-mean_k log p(x|z_k)``,
        ``"kl"`` = analytic KL, ``"elbo"`` = ``-recon - kl`` (the ELBO, for comparison).
        """
        t = self._terms(x, self.K)
        iwae = iwae_bound(_log_weights(t)).mean()
        recon = -t["log_px_z"].mean()
        kl = kl_normal_std_normal(t["mu"], t["logvar"]).mean()
        return {"loss": -iwae, "iwae": iwae, "elbo": -(recon + kl), "recon": recon, "kl": kl}


def _log_weights(t: dict[str, Tensor]) -> Tensor:
    """``log p(x|z) + log p(z) - log q(z|x)`` from :meth:`VAE._terms` output: ``[K, B]``."""
    log_pz = standard_normal_log_prob(t["z"])
    # log q(z|x) with z = mu + sigma * eps: written out so gradients flow through z as well
    log_qz = gaussian_log_prob(t["z"], t["mu"], t["logvar"])
    return t["log_px_z"] + log_pz - log_qz


def _kl_per_dim(mu: Tensor, logvar: Tensor) -> Tensor:
    """Analytic ``KL(N(mu, e^logvar) || N(0, 1))`` per latent dimension: ``[B, Z]``, nats."""
    return kl_normal_std_normal(mu.unsqueeze(-1), logvar.unsqueeze(-1))


def _check_K(K: int, name: str, where: str) -> None:
    """Raise a ValueError unless ``K`` is an integer >= 1."""
    if isinstance(K, bool) or not isinstance(K, int) or K < 1:
        raise ValueError(f"{where}: {name} must be an integer >= 1, got {K!r}")
