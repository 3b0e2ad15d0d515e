"""Variational autoencoders: Gaussian encoders, Bernoulli and Gaussian decoders, and one VAE
that takes any prior of :mod:`dgmlib.models.priors`.

The generative model is ``z ~ p(z)`` (a prior, ``N(0, I)`` by default), ``x | z ~ p_theta(x | z)``
(a decoder), and the
amortized posterior approximation is ``q_phi(z | x) = N(mu(x), diag(exp(logvar(x))))`` (an
encoder). Shapes used throughout:

* ``x``: a batch of data ``[B, *x_shape]``, e.g. ``[B, 1, 28, 28]``; MLPs flatten it, so
  ``[B, 28, 28]`` and ``[B, 784]`` work too (anything with ``prod(x_shape)`` values per example);
* ``mu, logvar``: ``[B, Z]``;
* ``z``: ``[B, Z]`` for one latent sample per example, or ``[K, B, Z]`` for ``K`` samples;
* log-probabilities are **summed over pixels / latent dimensions**, giving ``[B]`` (or
  ``[K, B]``), and are in **nats**; losses average them over the batch.

Decoders share one interface (:class:`Decoder`): ``z_dim``, ``x_shape``, ``forward(z)``
(distribution parameters), ``log_prob(x, z)``, ``sample(z, generator)`` and, where it has a closed
form, ``mean(z)`` (the expected image; :class:`MeanDecoder`).

The model computes densities; the training objectives (KL weight, free bits, the IWAE bound) are
in :mod:`dgmlib.objectives`. ``elbo``, ``log_weights`` and ``sample`` mean the same thing here as
for the discrete-latent models of :mod:`dgmlib.models.discrete`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgmlib.distributions import gaussian_log_prob
from dgmlib.experiment import make
from dgmlib.layers import MNIST_SHAPE, flatten_batch, mlp, reparameterize, shape_tuple
from dgmlib.models.priors import PRIORS, Prior, analytic_kl_per_dim, make_prior
from dgmlib.validation import check_choice, check_int, check_positive, check_tensor

__all__ = [
    "VAE",
    "BernoulliDecoder",
    "ConvGaussianEncoder",
    "Decoder",
    "GaussianDecoder",
    "MLPGaussianEncoder",
    "MeanDecoder",
]


class Decoder(Protocol):
    """What a VAE needs of a decoder ``p(x|z)``: the decoders of this module, the PixelCNN."""

    @property
    def z_dim(self) -> int:
        """Latent dimension ``Z``."""

    @property
    def x_shape(self) -> tuple[int, ...]:
        """Shape of one example."""

    def log_prob(self, x: Tensor, z: Tensor) -> Tensor:
        """``log p(x|z)`` summed over data dimensions: ``[B]`` (or ``[K, B]``), nats."""

    def sample(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One ``x ~ p(x|z)`` per latent: ``[..., *x_shape]``."""


class MeanDecoder(Decoder, Protocol):
    """A :class:`Decoder` with a closed-form mean (all but the autoregressive PixelCNN)."""

    def mean(self, z: Tensor) -> Tensor:
        """``E[x|z]``: ``[..., *x_shape]``."""


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
        h = self.net(flatten_batch(x, self.x_dim, type(self).__name__))
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
        h = self.net(flatten_batch(x, 784, type(self).__name__).view(-1, *MNIST_SHAPE))
        mu, logvar = h.chunk(2, dim=-1)
        return mu, logvar


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
        check_tensor(z, "z", where)
        if z.dim() not in (2, 3) or z.shape[-1] != self.z_dim:
            raise ValueError(
                f"{where}: z must have shape [B, {self.z_dim}] or [K, B, {self.z_dim}], "
                f"got {tuple(z.shape)}"
            )
        xf = flatten_batch(x, self.x_dim, where)
        if xf.shape[0] != z.shape[-2]:
            raise ValueError(
                f"{where}: x has {xf.shape[0]} examples but z has {z.shape[-2]} (shape "
                f"{tuple(z.shape)})"
            )
        return xf, z


class _MLPDecoder(_Decoder):
    """Distribution parameters from an MLP of ``z``: ``z_dim -> hidden -> ... -> prod(x_shape)``
    (``n_hidden_layers`` hidden layers with ``activation``), one value per data dimension."""

    def __init__(
        self,
        z_dim: int,
        hidden: int,
        x_shape: int | Sequence[int] = MNIST_SHAPE,
        n_hidden_layers: int = 2,
        activation: type[nn.Module] = nn.Tanh,
    ) -> None:
        super().__init__()
        self.z_dim, self.x_shape = z_dim, shape_tuple(x_shape)
        self.net = mlp(z_dim, hidden, self.x_dim, n_hidden_layers, activation)

    def forward(self, z: Tensor) -> Tensor:
        """The MLP's output (logits, or the mean) for ``z [..., Z]``: ``[..., *x_shape]``."""
        return self.net(z).view(*z.shape[:-1], *self.x_shape)


class BernoulliDecoder(_MLPDecoder):
    """``p(x|z) = prod_i Bernoulli(x_i; sigmoid(logits_i(z)))`` with an MLP, for binary images.

    Arguments: ``z_dim, hidden, x_shape=(1, 28, 28), n_hidden_layers=2, activation=nn.Tanh``;
    ``forward(z)`` gives the logits ``[..., *x_shape]``.
    """

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


class GaussianDecoder(_MLPDecoder):
    """``p(x|z) = N(x; m(z), diag(sigma^2))`` with an MLP mean, for continuous data.

    Arguments: those of :class:`BernoulliDecoder` (``forward(z)`` gives the mean ``m(z)``), then
    the keywords ``variance`` and ``sigma``. ``variance="fixed"``: ``sigma`` stays at the given
    value (the ELBO's reconstruction term is then a scaled squared error); ``"learned"``: one
    trainable log-variance per data dimension, initialised at ``sigma``, independent of ``z``.
    """

    def __init__(
        self, *args: Any, variance: str = "learned", sigma: float = 1.0, **kwargs: Any
    ) -> None:
        check_choice(variance, "variance", "GaussianDecoder", ("fixed", "learned"))
        check_positive(sigma, "sigma", "GaussianDecoder")
        super().__init__(*args, **kwargs)
        self.variance = variance
        init = torch.full((self.x_dim,), 2.0 * math.log(sigma))
        if variance == "learned":
            self.logvar = nn.Parameter(init)
        else:
            self.register_buffer("logvar", init)

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
# The VAE
# --------------------------------------------------------------------------------------------


class VAE(nn.Module):
    """A VAE: a Gaussian ``encoder``, any ``decoder`` of this module (or the PixelCNN) and any
    ``prior`` of :mod:`dgmlib.models.priors` (``None``: ``N(0, I)``).

    The KL term ``KL(q(z|x) || p(z))`` is analytic where a closed form is registered for the prior
    (:func:`dgmlib.models.priors.register_kl`; the standard normal) and otherwise the Monte Carlo
    estimate ``log q(z|x) - log p(z)`` at the same samples that estimate ``log p(x|z)``
    (unbiased, and differentiable in the prior's parameters).
    """

    decoder: Decoder
    prior: Prior

    def __init__(self, encoder: nn.Module, decoder: Decoder, prior: Prior | None = None):
        super().__init__()
        enc_z = getattr(encoder, "z_dim", decoder.z_dim)
        if enc_z != decoder.z_dim:
            raise ValueError(
                f"VAE: the encoder's z_dim ({enc_z}) differs from the decoder's ({decoder.z_dim})"
            )
        self.encoder, self.decoder = encoder, decoder
        self.z_dim: int = decoder.z_dim
        prior = make_prior("standard", self.z_dim) if prior is None else prior
        if getattr(prior, "z_dim", None) != self.z_dim:
            raise ValueError(
                f"VAE: the prior's z_dim ({getattr(prior, 'z_dim', None)}) differs from the "
                f"decoder's ({self.z_dim})"
            )
        if hasattr(prior, "bind_encoder"):  # the VampPrior mixes the encoder's posteriors
            prior.bind_encoder(encoder)
        self.prior = prior

    @classmethod
    def for_mnist(
        cls,
        z_dim: int = 50,
        hidden: int = 200,
        activation: type[nn.Module] = nn.Tanh,
        prior: str = "standard",
        prior_kwargs: dict | None = None,
    ) -> VAE:
        """Burda et al. (2016)'s one-stochastic-layer model for binary 28 x 28 images, with its
        build spec recorded (:func:`dgmlib.experiment.make`).

        Encoder ``784-200-200-(50+50)`` and Bernoulli decoder ``50-200-200-784``, tanh
        activations; the prior named ``prior`` (one of :data:`dgmlib.models.priors.PRIORS`) with
        ``prior_kwargs``. The encoder and decoder are created first, then the prior, so for one
        torch seed the networks start from the same weights whatever the prior.
        """
        if prior not in PRIORS:
            raise ValueError(f"VAE.for_mnist: prior must be one of {PRIORS}, got {prior!r}")
        encoder = make(
            MLPGaussianEncoder,
            x_dim=784,
            hidden=hidden,
            z_dim=z_dim,
            n_hidden_layers=2,
            activation=activation,
        )
        decoder = make(
            BernoulliDecoder,
            z_dim=z_dim,
            hidden=hidden,
            x_shape=MNIST_SHAPE,
            n_hidden_layers=2,
            activation=activation,
        )
        p = make_prior(prior, z_dim, **(prior_kwargs or {}))
        return make(cls, encoder=encoder, decoder=decoder, prior=p)

    # -- inference ----------------------------------------------------------------------------
    @property
    def analytic_kl(self) -> bool:
        """True when ``KL(q(z|x) || p(z))`` has a registered closed form for this prior."""
        return analytic_kl_per_dim(self.prior) is not None

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, logvar)`` of ``q(z|x)``, each ``[B, Z]``."""
        check_tensor(x, "x", f"{type(self).__name__}.encode")
        return self.encoder(x)

    def kl_per_dim(self, mu: Tensor, logvar: Tensor) -> Tensor:
        """The analytic ``KL(q(z_j|x) || p(z_j))`` per latent dimension, ``[B, Z]`` nats (for
        free bits); a ValueError for a prior without a registered closed form."""
        fn = analytic_kl_per_dim(self.prior)
        if fn is None:
            raise ValueError(
                f"VAE.kl_per_dim: no closed-form KL is registered for {type(self.prior).__name__}"
            )
        return fn(self.prior, mu, logvar)

    def terms(
        self, x: Tensor, K: int | None = None, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """The pieces of every bound, per example, nats: ``mu``, ``logvar`` ``[B, Z]``; ``z``
        ``[B, Z]`` (or ``[K, B, Z]`` for ``K`` samples); ``log_px_z`` ``[B]`` (or ``[K, B]``);
        ``log_pz_minus_log_qz`` at the same samples; ``kl`` ``[B]``: analytic where registered,
        else the Monte Carlo estimate averaged over the samples."""
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar, K, generator)
        t = {"mu": mu, "logvar": logvar, "z": z, "log_px_z": self.decoder.log_prob(x, z)}
        # log q(z|x) with z = mu + sigma * eps: written out so gradients flow through z as well
        t["log_pz_minus_log_qz"] = self.prior.log_prob(z) - gaussian_log_prob(z, mu, logvar)
        if self.analytic_kl:
            t["kl"] = self.kl_per_dim(mu, logvar).sum(-1)
        else:
            mc = -t["log_pz_minus_log_qz"]
            t["kl"] = mc if K is None else mc.mean(0)
        return t

    def elbo(
        self, x: Tensor, n_samples: int = 1, generator: torch.Generator | None = None
    ) -> Tensor:
        """ELBO per example ``[B]``, nats: ``mean_s log p(x|z_s) - KL`` with ``n_samples`` draws
        ``z_s ~ q(z|x)`` (the KL analytic where registered, else from the same draws)."""
        check_int(n_samples, "n_samples", f"{type(self).__name__}.elbo")
        t = self.terms(x, n_samples, generator)
        return t["log_px_z"].mean(0) - t["kl"]

    def log_weights(self, x: Tensor, K: int, generator: torch.Generator | None = None) -> Tensor:
        """``log p(x|z_k) + log p(z_k) - log q(z_k|x)`` for ``K`` draws ``z_k ~ q(z|x)``:
        ``[K, B]``, nats (the input of :func:`dgmlib.bounds.estimate_nll`)."""
        check_int(K, "K", f"{type(self).__name__}.log_weights")
        t = self.terms(x, K, generator)
        return t["log_px_z"] + t["log_pz_minus_log_qz"]

    # -- generation ---------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, mean: bool = False
    ) -> Tensor:
        """``n`` draws ``z ~ p(z)``, ``x ~ p(x|z)``: ``[n, *x_shape]`` on the model's device;
        ``mean=True`` gives ``E[x|z]`` instead of a sample of ``x``. No gradients."""
        check_int(n, "n", f"{type(self).__name__}.sample")
        if mean and not hasattr(self.decoder, "mean"):
            raise ValueError(
                f"{type(self).__name__}.sample: mean=True needs a decoder with a closed-form "
                f"mean; {type(self.decoder).__name__} has none (use mean=False)"
            )
        z = self.prior.sample(n, generator=generator)
        if mean and hasattr(self.decoder, "mean"):  # (checked above; tells mypy it is there)
            return self.decoder.mean(z)
        return self.decoder.sample(z, generator=generator)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Decode the posterior mean: ``E[x | z = mu(x)]`` (a sample where the decoder has no
        closed-form mean, e.g. an autoregressive one): ``[B, *x_shape]``. No gradients."""
        mu, _ = self.encode(x)
        if hasattr(self.decoder, "mean"):
            return self.decoder.mean(mu)
        return self.decoder.sample(mu, generator=generator)
