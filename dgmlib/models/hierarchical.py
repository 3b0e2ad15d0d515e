"""Two-layer hierarchical VAEs: ``p(z2) p(z1 | z2) p(x | z1)`` with bottom-up or top-down
inference.

The generative model is shared: ``z2 ~ N(0, I)``, ``z1 | z2 ~ N(mu_p(z2), diag var_p(z2))`` (a
:class:`GaussianConditional`), ``x | z1`` a decoder of :mod:`dgmlib.models.vae` (e.g.
:class:`~dgmlib.models.vae.BernoulliDecoder`). Two inference models approximate
``p(z1, z2 | x)``:

* :class:`BottomUpVAE` -- ``q(z1 | x) q(z2 | z1)``: each layer is inferred from the sample of the
  layer below. The per-layer terms of its ELBO are ``kl_z2 = KL(q(z2 | z1) || p(z2))`` (closed
  form given ``z1``) and ``kl_z1 = log q(z1 | x) - log p(z1 | z2)``, a log-ratio at the sample that
  is no KL divergence (``z2`` was drawn *after* ``z1``); its expectation is estimated with the
  entropy of ``q(z1 | x)`` in closed form.
* :class:`LadderVAE` -- the top-down inference of Sonderby et al. (2016), ``q(z2 | x)
  q(z1 | z2, x)``: a deterministic bottom-up pass (:class:`LadderEncoder`) computes a Gaussian
  message ``N(mu_hat_i, var_hat_i)`` per layer; ``q(z2 | x)`` is the top message and
  ``q(z1 | z2, x)`` the normalised product of the prior ``p(z1 | z2)`` with the layer-1 message
  (:func:`precision_weighted`). Both per-layer terms are KL divergences in closed form given the
  parent sample: ``kl_z2 = KL(q(z2 | x) || p(z2))``, ``kl_z1 = KL(q(z1 | z2, x) || p(z1 | z2))``.

Shapes: ``x [B, ...]``; latents ``[B, Z]`` or, with ``K`` samples, ``[K, B, Z]``; per-example terms
``[B]`` (or ``[K, B]``), summed over dimensions, in nats. Both models' ``terms`` return the keys
``log_px_z`` and ``kl`` that :class:`dgmlib.objectives.ELBO` reads, so the course's objectives,
KL warm-up (:func:`dgmlib.kl_control.scheduled`) and :class:`dgmlib.train.Trainer` apply unchanged.
Build a model with its spec by :func:`two_layer_vae`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Normal, kl_divergence

from dgmlib.diagnostics import active_units
from dgmlib.distributions import gaussian_log_prob, kl_normal_std_normal, standard_normal_log_prob
from dgmlib.experiment import make
from dgmlib.layers import MNIST_SHAPE, mlp, reparameterize
from dgmlib.models.vae import BernoulliDecoder, MLPGaussianEncoder
from dgmlib.validation import check_choice, check_int, check_tensor

__all__ = [
    "INFERENCE",
    "BottomUpVAE",
    "GaussianConditional",
    "LadderEncoder",
    "LadderVAE",
    "TwoLayerVAE",
    "gaussian_kl",
    "layer_statistics",
    "precision_weighted",
    "two_layer_vae",
]

#: The two inference models of :func:`two_layer_vae`.
INFERENCE = ("bottom-up", "top-down")


# --------------------------------------------------------------------------------------------
# Gaussian pieces
# --------------------------------------------------------------------------------------------


def gaussian_kl(mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor, logvar_p: Tensor) -> Tensor:
    """``KL(N(mu_q, diag e^logvar_q) || N(mu_p, diag e^logvar_p))`` summed over the last dim:
    ``[..., Z] -> [...]``, nats (inputs broadcast)."""
    for name, t in (("mu_q", mu_q), ("logvar_q", logvar_q), ("mu_p", mu_p), ("logvar_p", logvar_p)):
        check_tensor(t, name, "gaussian_kl")
    q = Normal(mu_q, torch.exp(0.5 * logvar_q))
    p = Normal(mu_p, torch.exp(0.5 * logvar_p))
    return kl_divergence(q, p).sum(-1)


def precision_weighted(
    mu_a: Tensor, logvar_a: Tensor, mu_b: Tensor, logvar_b: Tensor
) -> tuple[Tensor, Tensor]:
    """The normalised product of two diagonal Gaussian densities in ``z``:
    ``N(z; mu_a, var_a) N(z; mu_b, var_b) ∝ N(z; mu, var)`` with precisions adding,
    ``1/var = 1/var_a + 1/var_b``, and ``mu = var (mu_a / var_a + mu_b / var_b)``.

    Returns ``(mu, logvar)`` of the broadcast shape ``[..., Z]``. This is the ladder VAE's merge
    of a bottom-up message with the top-down prior (Sonderby et al., 2016)."""
    for name, t in (("mu_a", mu_a), ("logvar_a", logvar_a), ("mu_b", mu_b), ("logvar_b", logvar_b)):
        check_tensor(t, name, "precision_weighted")
    prec_a, prec_b = torch.exp(-logvar_a), torch.exp(-logvar_b)
    logvar = -torch.logaddexp(-logvar_a, -logvar_b)  # log 1 / (prec_a + prec_b), stably
    mu = (mu_a * prec_a + mu_b * prec_b) * torch.exp(logvar)
    return mu, logvar


class GaussianConditional(nn.Module):
    """``N(mu(h), diag exp(logvar(h)))`` with an MLP ``in_dim -> hidden -> ... -> 2 out_dim``:
    a stochastic layer of the prior (``p(z1 | z2)``) or of a bottom-up encoder (``q(z2 | z1)``)."""

    def __init__(
        self,
        in_dim: int,
        hidden: int,
        out_dim: int,
        n_hidden_layers: int = 1,
        activation: type[nn.Module] = nn.Tanh,
    ) -> None:
        super().__init__()
        self.in_dim = check_int(in_dim, "in_dim", "GaussianConditional")
        self.z_dim = check_int(out_dim, "out_dim", "GaussianConditional")
        self.net = mlp(in_dim, hidden, 2 * out_dim, n_hidden_layers, activation)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """``h [..., in_dim]`` -> ``(mu, logvar)``, each ``[..., out_dim]``."""
        check_tensor(h, "h", "GaussianConditional")
        if h.shape[-1] != self.in_dim:
            raise ValueError(
                f"GaussianConditional: h must have last dimension {self.in_dim}, got shape "
                f"{tuple(h.shape)}"
            )
        mu, logvar = self.net(h).chunk(2, dim=-1)
        return mu, logvar


class LadderEncoder(nn.Module):
    """The deterministic bottom-up pass of a two-layer ladder VAE.

    ``d1 = MLP(x)`` (``n_hidden_layers`` tanh layers of ``hidden`` units on the flattened ``x``),
    ``d2 = act(Linear(d1))`` (``hidden_top`` units); each ``d_i`` gives a Gaussian message
    ``(mu_hat_i, logvar_hat_i)`` by a linear head. ``forward(x)`` returns
    ``(mu_hat1, logvar_hat1, mu_hat2, logvar_hat2)``, ``[B, z1_dim]`` and ``[B, z2_dim]``.
    """

    def __init__(
        self,
        x_dim: int,
        hidden: int,
        z1_dim: int,
        hidden_top: int,
        z2_dim: int,
        n_hidden_layers: int = 2,
        activation: type[nn.Module] = nn.Tanh,
    ) -> None:
        super().__init__()
        check_int(n_hidden_layers, "n_hidden_layers", "LadderEncoder")
        self.x_dim, self.z1_dim, self.z2_dim = x_dim, z1_dim, z2_dim
        self.features1 = nn.Sequential(
            mlp(x_dim, hidden, hidden, n_hidden_layers - 1, activation), activation()
        )
        self.head1 = nn.Linear(hidden, 2 * z1_dim)
        self.features2 = nn.Sequential(nn.Linear(hidden, hidden_top), activation())
        self.head2 = nn.Linear(hidden_top, 2 * z2_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """x ``[B, ...]`` (``x_dim`` values per example) -> the two layers' messages."""
        check_tensor(x, "x", "LadderEncoder")
        if x[0].numel() != self.x_dim:
            raise ValueError(
                f"LadderEncoder: x must hold {self.x_dim} values per example, got shape "
                f"{tuple(x.shape)}"
            )
        d1 = self.features1(x.reshape(x.shape[0], self.x_dim))
        mu1, logvar1 = self.head1(d1).chunk(2, dim=-1)
        mu2, logvar2 = self.head2(self.features2(d1)).chunk(2, dim=-1)
        return mu1, logvar1, mu2, logvar2


# --------------------------------------------------------------------------------------------
# The two models
# --------------------------------------------------------------------------------------------


class TwoLayerVAE(nn.Module):
    """The shared generative model ``N(z2; 0, I) p(z1 | z2) p(x | z1)`` of :class:`BottomUpVAE`
    and :class:`LadderVAE`; the subclasses define the inference model."""

    prior1: GaussianConditional
    decoder: Any  # a decoder of dgmlib.models.vae: log_prob, mean, sample
    z1_dim: int
    z2_dim: int

    def _check_generative(self) -> None:
        if self.prior1.in_dim != self.z2_dim or self.prior1.z_dim != self.z1_dim:
            raise ValueError(
                f"{type(self).__name__}: prior1 maps {self.prior1.in_dim} -> {self.prior1.z_dim} "
                f"dimensions, expected z2_dim {self.z2_dim} -> z1_dim {self.z1_dim}"
            )
        if self.decoder.z_dim != self.z1_dim:
            raise ValueError(
                f"{type(self).__name__}: the decoder's z_dim ({self.decoder.z_dim}) differs from "
                f"z1_dim ({self.z1_dim})"
            )

    def _latents(
        self, x: Tensor, K: int | None, generator: torch.Generator | None
    ) -> dict[str, Tensor]:
        raise NotImplementedError  # pragma: no cover - defined by the subclasses

    def terms(
        self, x: Tensor, K: int | None = None, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """The pieces of the ELBO per example, nats: samples ``z1``, ``z2`` (``[B, Z]`` or
        ``[K, B, Z]``), ``log_px_z`` = log p(x | z1), the per-layer terms ``kl_z1``, ``kl_z2``
        and their sum ``kl`` (``[B]`` or ``[K, B]``; see the module docstring), and
        ``log_pz_minus_log_qz`` = log p(z1, z2) - log q(z1, z2 | x) at the samples."""
        check_tensor(x, "x", f"{type(self).__name__}.terms")
        if K is not None:
            check_int(K, "K", f"{type(self).__name__}.terms")
        t = self._latents(x, K, generator)
        t["log_px_z"] = self.decoder.log_prob(x, t["z1"])
        t["kl"] = t["kl_z1"] + t["kl_z2"]
        return t

    def elbo(
        self, x: Tensor, n_samples: int = 1, generator: torch.Generator | None = None
    ) -> Tensor:
        """ELBO per example ``[B]``, nats, averaged over ``n_samples`` draws from ``q``."""
        check_int(n_samples, "n_samples", f"{type(self).__name__}.elbo")
        t = self.terms(x, n_samples, generator)
        return (t["log_px_z"] - t["kl"]).mean(0)

    def log_weights(self, x: Tensor, K: int, generator: torch.Generator | None = None) -> Tensor:
        """``log p(x, z1_k, z2_k) - log q(z1_k, z2_k | x)`` for ``K`` draws: ``[K, B]``, nats
        (the input of :func:`dgmlib.bounds.estimate_nll`)."""
        check_int(K, "K", f"{type(self).__name__}.log_weights")
        t = self.terms(x, K, generator)
        return t["log_px_z"] + t["log_pz_minus_log_qz"]

    def posterior_means(
        self, x: Tensor, n_samples: int, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """``E_q[z1 | x]`` and ``E_q[z2 | x]`` (``[B, Z]`` each, keys ``z1``, ``z2``); the layer
        that depends on a sample of the other is averaged over ``n_samples`` draws, and
        ``mc_var_z1``, ``mc_var_z2`` give the variance of that Monte Carlo mean per example and
        dimension (zero where the mean is exact)."""
        raise NotImplementedError  # pragma: no cover - defined by the subclasses

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, mean: bool = True) -> Tensor:
        """``n`` ancestral draws ``z2 ~ p(z2)``, ``z1 ~ p(z1 | z2)``, then ``E[x | z1]`` (or a
        sample of ``x`` with ``mean=False``): ``[n, *x_shape]``. No gradients."""
        check_int(n, "n", f"{type(self).__name__}.sample")
        p = next(self.parameters())
        z2 = torch.randn((n, self.z2_dim), generator=generator, dtype=p.dtype, device=p.device)
        mu1, logvar1 = self.prior1(z2)
        z1 = reparameterize(mu1, logvar1, generator=generator)
        return self.decoder.mean(z1) if mean else self.decoder.sample(z1, generator=generator)


def _mc_mean(draws: Tensor) -> tuple[Tensor, Tensor]:
    """Mean over dim 0 of ``[S, B, Z]`` draws and the variance of that mean, ``[B, Z]`` each."""
    return draws.mean(0), draws.var(0, correction=1) / draws.shape[0]


class BottomUpVAE(TwoLayerVAE):
    """Bottom-up inference ``q(z1 | x) q(z2 | z1)``: ``encoder`` gives ``q(z1 | x)`` (an
    :class:`~dgmlib.models.vae.MLPGaussianEncoder`), ``encoder_top`` gives ``q(z2 | z1)`` from the
    sample of ``z1``; ``prior1`` is ``p(z1 | z2)``, ``decoder`` is ``p(x | z1)``."""

    def __init__(
        self,
        encoder: nn.Module,
        encoder_top: GaussianConditional,
        prior1: GaussianConditional,
        decoder: nn.Module,
    ) -> None:
        super().__init__()
        self.encoder, self.encoder_top = encoder, encoder_top
        self.prior1, self.decoder = prior1, decoder
        self.z1_dim, self.z2_dim = prior1.z_dim, prior1.in_dim
        self._check_generative()
        if encoder.z_dim != self.z1_dim or encoder_top.in_dim != self.z1_dim:
            raise ValueError(
                f"BottomUpVAE: the encoder gives {encoder.z_dim} and encoder_top reads "
                f"{encoder_top.in_dim} dimensions, expected z1_dim = {self.z1_dim}"
            )
        if encoder_top.z_dim != self.z2_dim:
            raise ValueError(
                f"BottomUpVAE: encoder_top gives {encoder_top.z_dim} dimensions, expected z2_dim "
                f"= {self.z2_dim}"
            )

    def _latents(
        self, x: Tensor, K: int | None, generator: torch.Generator | None
    ) -> dict[str, Tensor]:
        mu1, logvar1 = self.encoder(x)
        z1 = reparameterize(mu1, logvar1, K, generator)
        mu2, logvar2 = self.encoder_top(z1)
        z2 = reparameterize(mu2, logvar2, generator=generator)
        pm1, plv1 = self.prior1(z2)
        log_p1 = gaussian_log_prob(z1, pm1, plv1)
        # E_q log q(z1|x) = -entropy, in closed form; the cross term log p(z1|z2) at the sample
        neg_entropy1 = -0.5 * (logvar1 + 1.0 + math.log(2 * math.pi)).sum(-1)
        log_q = gaussian_log_prob(z1, mu1, logvar1) + gaussian_log_prob(z2, mu2, logvar2)
        return {
            "z1": z1,
            "z2": z2,
            "kl_z1": neg_entropy1.expand_as(log_p1) - log_p1,
            "kl_z2": kl_normal_std_normal(mu2, logvar2),
            "log_pz_minus_log_qz": standard_normal_log_prob(z2) + log_p1 - log_q,
        }

    @torch.no_grad()
    def posterior_means(
        self, x: Tensor, n_samples: int, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        check_int(n_samples, "n_samples", "BottomUpVAE.posterior_means", low=2)
        mu1, logvar1 = self.encoder(x)
        mu2, _ = self.encoder_top(reparameterize(mu1, logvar1, n_samples, generator))
        m2, v2 = _mc_mean(mu2)
        return {"z1": mu1, "z2": m2, "mc_var_z1": torch.zeros_like(mu1), "mc_var_z2": v2}


class LadderVAE(TwoLayerVAE):
    """Top-down inference ``q(z2 | x) q(z1 | z2, x)`` (Sonderby et al., 2016): ``encoder`` is a
    :class:`LadderEncoder`; ``q(z2 | x)`` is its top message and ``q(z1 | z2, x)`` the
    precision-weighted product of its layer-1 message with ``prior1`` = ``p(z1 | z2)``, so the
    inference and the generative model share the top-down path."""

    def __init__(self, encoder: LadderEncoder, prior1: GaussianConditional, decoder: nn.Module):
        super().__init__()
        self.encoder, self.prior1, self.decoder = encoder, prior1, decoder
        self.z1_dim, self.z2_dim = prior1.z_dim, prior1.in_dim
        self._check_generative()
        if (encoder.z1_dim, encoder.z2_dim) != (self.z1_dim, self.z2_dim):
            raise ValueError(
                f"LadderVAE: the encoder's messages have {encoder.z1_dim} and {encoder.z2_dim} "
                f"dimensions, expected z1_dim = {self.z1_dim} and z2_dim = {self.z2_dim}"
            )

    def _top_down(
        self, mh1: Tensor, lh1: Tensor, z2: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(mu, logvar)`` of ``q(z1 | z2, x)`` and of ``p(z1 | z2)``."""
        pm1, plv1 = self.prior1(z2)
        mu1, logvar1 = precision_weighted(mh1, lh1, pm1, plv1)
        return mu1, logvar1, pm1, plv1

    def _latents(
        self, x: Tensor, K: int | None, generator: torch.Generator | None
    ) -> dict[str, Tensor]:
        mh1, lh1, mu2, logvar2 = self.encoder(x)
        z2 = reparameterize(mu2, logvar2, K, generator)
        mu1, logvar1, pm1, plv1 = self._top_down(mh1, lh1, z2)
        z1 = reparameterize(mu1, logvar1, generator=generator)
        kl_z1 = gaussian_kl(mu1, logvar1, pm1, plv1)
        log_pz = standard_normal_log_prob(z2) + gaussian_log_prob(z1, pm1, plv1)
        log_q = gaussian_log_prob(z2, mu2, logvar2) + gaussian_log_prob(z1, mu1, logvar1)
        return {
            "z1": z1,
            "z2": z2,
            "kl_z1": kl_z1,
            "kl_z2": kl_normal_std_normal(mu2, logvar2).expand_as(kl_z1),
            "log_pz_minus_log_qz": log_pz - log_q,
        }

    @torch.no_grad()
    def posterior_means(
        self, x: Tensor, n_samples: int, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        check_int(n_samples, "n_samples", "LadderVAE.posterior_means", low=2)
        mh1, lh1, mu2, logvar2 = self.encoder(x)
        mu1, _, _, _ = self._top_down(mh1, lh1, reparameterize(mu2, logvar2, n_samples, generator))
        m1, v1 = _mc_mean(mu1)
        return {"z1": m1, "z2": mu2, "mc_var_z1": v1, "mc_var_z2": torch.zeros_like(mu2)}


# --------------------------------------------------------------------------------------------
# Construction and evaluation
# --------------------------------------------------------------------------------------------


def two_layer_vae(
    inference: str,
    z1_dim: int = 32,
    z2_dim: int = 16,
    hidden: int = 256,
    hidden_top: int = 128,
    x_shape: Sequence[int] = MNIST_SHAPE,
    activation: type[nn.Module] = nn.Tanh,
) -> nn.Module:
    """A two-layer VAE for binary images with its build spec (:func:`dgmlib.experiment.make`).

    Generative model: ``p(z1 | z2)`` = ``z2_dim - hidden_top - 2 z1_dim``, Bernoulli decoder
    ``z1_dim - hidden - hidden - x_dim``. ``inference="bottom-up"``: ``q(z1 | x)`` =
    ``x_dim - hidden - hidden - 2 z1_dim``, ``q(z2 | z1)`` = ``z1_dim - hidden_top - 2 z2_dim``;
    ``"top-down"``: a :class:`LadderEncoder` with the same ``x_dim - hidden - hidden`` path, whose
    top message reads the ``hidden`` features (``hidden - hidden_top - 2 z2_dim``). The generative
    networks are created first, so for one torch seed both models start from the same decoder.
    """
    check_choice(inference, "inference", "two_layer_vae", INFERENCE)
    x_dim = math.prod(x_shape)
    prior1 = make(
        GaussianConditional, in_dim=z2_dim, hidden=hidden_top, out_dim=z1_dim, activation=activation
    )
    decoder = make(
        BernoulliDecoder, z_dim=z1_dim, hidden=hidden, x_shape=list(x_shape), activation=activation
    )
    if inference == "bottom-up":
        encoder1 = make(
            MLPGaussianEncoder, x_dim=x_dim, hidden=hidden, z_dim=z1_dim, activation=activation
        )
        encoder_top = make(
            GaussianConditional,
            in_dim=z1_dim,
            hidden=hidden_top,
            out_dim=z2_dim,
            activation=activation,
        )
        return make(
            BottomUpVAE, encoder=encoder1, encoder_top=encoder_top, prior1=prior1, decoder=decoder
        )
    encoder = make(
        LadderEncoder,
        x_dim=x_dim,
        hidden=hidden,
        z1_dim=z1_dim,
        hidden_top=hidden_top,
        z2_dim=z2_dim,
        activation=activation,
    )
    return make(LadderVAE, encoder=encoder, prior1=prior1, decoder=decoder)


@torch.no_grad()
def layer_statistics(
    model: TwoLayerVAE,
    x: Tensor,
    n_samples: int = 20,
    n_mean_samples: int = 100,
    generator: torch.Generator | None = None,
    threshold: float = 0.01,
) -> dict[str, float]:
    """Test figures of a two-layer VAE on ``x [N, ...]``, nats per example unless named
    otherwise: ``elbo``, ``log_px_z``, ``kl_z1``, ``kl_z2``, ``kl`` (means over the examples and
    ``n_samples`` draws each); the active units ``au_z1``, ``au_z2`` (Burda et al.'s count,
    ``Var_x E_q[z_j | x] > threshold``, posterior means of :meth:`posterior_means` with
    ``n_mean_samples`` draws); and ``mc_var_z1``, ``mc_var_z2``: over the units, the largest mean
    (over the examples) Monte Carlo variance of a posterior mean, by which sampling inflates a
    unit's ``Var_x`` on average (0 for the layer whose mean is exact)."""
    check_int(n_samples, "n_samples", "layer_statistics")
    check_int(n_mean_samples, "n_mean_samples", "layer_statistics", low=2)
    t = model.terms(x, n_samples, generator)
    means = model.posterior_means(x, n_mean_samples, generator)
    out = {
        "elbo": float((t["log_px_z"] - t["kl"]).mean()),
        "log_px_z": float(t["log_px_z"].mean()),
        "kl": float(t["kl"].mean()),
        "kl_z1": float(t["kl_z1"].mean()),
        "kl_z2": float(t["kl_z2"].mean()),
    }
    for layer in ("z1", "z2"):
        out[f"au_{layer}"] = active_units(means[layer], threshold).count
        out[f"mc_var_{layer}"] = float(means[f"mc_var_{layer}"].mean(0).max())
    return out
