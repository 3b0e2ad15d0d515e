r"""Discrete latent variables: a vector quantizer and VQ-VAE, Gumbel-softmax, a categorical VAE.

Shapes and units used throughout:

* ``x``: binary images ``[B, 1, 28, 28]`` (anything with ``x_dim`` values per example);
* VQ-VAE: the encoder outputs ``P`` vectors of size ``D`` per image, ``z_e`` of shape
  ``[B, P, D]``; each is replaced by its nearest row of the codebook ``[K, D]``;
* categorical VAE: ``L`` latent variables with ``C`` categories each, encoder logits
  ``[B, L, C]``, (relaxed) one-hot samples ``[B, L, C]``;
* log-probabilities and KL divergences are in **nats**, summed over pixels / latent variables
  per image; the ``loss(x)`` dictionaries average them over the batch and are signed as in
  :mod:`dgmlib.objectives`: ``log_px_z`` = E_q log p(x|z), ``kl`` = KL(q || p), ``elbo`` =
  ``log_px_z - kl``.

``elbo(x, n_samples, generator)`` (``[B]``, nats), ``sample(n, generator, mean)``
(``[n, *x_shape]``) and ``reconstruct(x)`` mean the same here as for
:class:`dgmlib.models.vae.VAE`; samples follow the model's device and dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgmlib.kernels import vq_nearest
from dgmlib.layers import MNIST_SHAPE, flatten_batch, mlp, shape_tuple
from dgmlib.models.vae import BernoulliDecoder
from dgmlib.validation import check_int, check_positive, check_tensor

__all__ = [
    "CodeAutoencoder",
    "CategoricalVAE",
    "VQOutput",
    "VQVAE",
    "VectorQuantizer",
    "categorical_kl_uniform",
    "codebook_usage",
    "gumbel_softmax_sample",
    "sample_gumbel",
]


# --------------------------------------------------------------------------------------------
# Gumbel noise, Gumbel-softmax, the KL to a uniform prior
# --------------------------------------------------------------------------------------------


def sample_gumbel(
    shape: torch.Size | tuple[int, ...],
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Standard Gumbel noise ``g = -log(-log u)``, ``u ~ Uniform(0, 1)``: a tensor of ``shape``.

    ``u`` is kept inside ``[tiny, 1 - eps/2]`` so that ``g`` is always finite.
    """
    u = torch.rand(shape, generator=generator, dtype=dtype, device=device)
    info = torch.finfo(dtype)
    u = u.clamp(min=info.tiny, max=1.0 - info.eps / 2)
    return -torch.log(-torch.log(u))


def gumbel_softmax_sample(
    logits: Tensor,
    tau: float,
    hard: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""A Gumbel-softmax (Concrete) sample over the last dimension of ``logits [..., C]``.

    ``y = softmax((logits + g) / tau)`` with ``g`` standard Gumbel noise: a point of the
    probability simplex, differentiable in ``logits``; the same distribution as
    ``torch.distributions.RelaxedOneHotCategorical(tau, logits=logits)``. Its arg-max is an exact
    sample of ``Categorical(softmax(logits))`` for every ``tau`` (the Gumbel-max trick).

    ``hard=True`` returns the one-hot vector of the arg-max in the forward pass with the
    gradient of the relaxed sample (straight-through Gumbel-softmax). Returns ``[..., C]``.
    """
    where = "gumbel_softmax_sample"
    check_tensor(logits, "logits", where)
    if logits.dim() < 1 or logits.shape[-1] < 1:
        raise ValueError(f"{where}: logits must have shape [..., C] with C >= 1")
    check_positive(tau, "tau", where)
    g = sample_gumbel(logits.shape, generator, logits.dtype, logits.device)
    y = torch.softmax((logits + g) / tau, dim=-1)
    if not hard:
        return y
    one_hot = F.one_hot(y.argmax(-1), y.shape[-1]).to(y.dtype)
    return one_hot + (y - y.detach())


def categorical_kl_uniform(logits: Tensor) -> Tensor:
    r"""``KL(Categorical(softmax(logits)) || Uniform(C))`` over the last dimension, nats.

    ``sum_c q_c log q_c + log C`` (``= log C - H(q)``), computed from ``log_softmax`` so that
    ``q_c = 0`` contributes 0. ``logits [..., C]`` -> ``[...]``; between 0 and ``log C``.
    """
    check_tensor(logits, "logits", "categorical_kl_uniform")
    if logits.dim() < 1:
        raise ValueError("categorical_kl_uniform: logits must have shape [..., C]")
    log_q = torch.log_softmax(logits, dim=-1)
    return (log_q.exp() * log_q).sum(-1) + math.log(logits.shape[-1])


def codebook_usage(indices: Tensor, n_codes: int) -> tuple[Tensor, float, int]:
    """How evenly ``n_codes`` codes are used by ``indices`` (int64, any shape).

    Returns ``(counts [n_codes], perplexity, n_used)``: the count of every code,
    ``exp(H(p))`` of the empirical code frequencies ``p`` (1 when a single code is used,
    ``n_codes`` when all are used equally often), and the number of codes used at least once.
    """
    check_int(n_codes, "n_codes", "codebook_usage")
    if indices.dtype != torch.int64:
        raise ValueError(f"codebook_usage: indices must be int64, got {indices.dtype}")
    flat = indices.reshape(-1)
    if flat.numel() == 0 or flat.min() < 0 or flat.max() >= n_codes:
        raise ValueError(f"codebook_usage: indices must be non-empty and lie in [0, {n_codes})")
    counts = torch.bincount(flat, minlength=n_codes)
    p = counts.to(torch.float64) / flat.numel()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return counts, float(entropy.exp()), int((counts > 0).sum())


# --------------------------------------------------------------------------------------------
# Vector quantization
# --------------------------------------------------------------------------------------------


class VQOutput(NamedTuple):
    """What :class:`VectorQuantizer` returns for ``z_e [..., D]``.

    * ``z_q``: ``[..., D]`` the nearest codes in the forward pass, with the gradient of the
      identity to ``z_e`` (straight-through: ``z_e + sg[e - z_e]``);
    * ``indices``: int64 ``[...]``, the chosen rows of the codebook;
    * ``codebook_loss``: ``[...]``, ``||sg[z_e] - e||^2`` summed over ``D`` (gradient to the
      codebook only);
    * ``commitment_loss``: ``[...]``, ``beta ||z_e - sg[e]||^2`` summed over ``D`` (gradient to
      the encoder only).
    """

    z_q: Tensor
    indices: Tensor
    codebook_loss: Tensor
    commitment_loss: Tensor


class VectorQuantizer(nn.Module):
    """A codebook of ``n_codes`` vectors of size ``code_dim``; each input vector is replaced by
    its nearest code (``dgmlib.kernels.vq_nearest``), with straight-through gradients."""

    def __init__(self, n_codes: int, code_dim: int, beta: float = 0.25) -> None:
        super().__init__()
        check_int(n_codes, "n_codes", "VectorQuantizer")
        check_int(code_dim, "code_dim", "VectorQuantizer")
        beta = check_positive(beta, "beta", "VectorQuantizer", allow_zero=True)
        self.n_codes, self.code_dim, self.beta = n_codes, code_dim, beta
        # small uniform start, as in van den Oord et al. (2017)
        self.codebook = nn.Parameter(
            torch.empty(n_codes, code_dim).uniform_(-1 / n_codes, 1 / n_codes)
        )

    def nearest(self, z_e: Tensor) -> Tensor:
        """Index of the nearest code for every vector of ``z_e [..., D]``: int64 ``[...]``."""
        where = "VectorQuantizer"
        check_tensor(z_e, "z_e", where)
        if z_e.dim() < 1 or z_e.shape[-1] != self.code_dim:
            raise ValueError(
                f"{where}: z_e must have shape [..., {self.code_dim}], got {tuple(z_e.shape)}"
            )
        idx, _ = vq_nearest(z_e.detach().reshape(-1, self.code_dim), self.codebook.detach())
        return idx.view(z_e.shape[:-1])

    def forward(self, z_e: Tensor) -> VQOutput:
        """Quantize ``z_e [..., D]``; see :class:`VQOutput` for what is returned."""
        idx = self.nearest(z_e)
        e = self.codebook[idx]  # [..., D], differentiable with respect to the codebook
        codebook_loss = (z_e.detach() - e).square().sum(-1)
        commitment_loss = self.beta * (z_e - e.detach()).square().sum(-1)
        z_q = z_e + (e - z_e).detach()
        return VQOutput(z_q, idx, codebook_loss, commitment_loss)


class CodeAutoencoder(nn.Module):
    """What the two discrete-latent models share: an MLP encoder ``x_dim -> hidden -> hidden ->
    n_slots * slot_size`` (ReLU) whose output is read as ``[B, n_slots, slot_size]``, and (made
    by :meth:`code_decoder`) a Bernoulli MLP decoder of the flattened code. ``names``: what the
    model calls ``n_slots`` and ``slot_size``, for its error messages."""

    def __init__(
        self,
        n_slots: int,
        slot_size: int,
        hidden: int,
        x_shape: int | Sequence[int],
        where: str,
        names: tuple[str, str],
    ) -> None:
        super().__init__()
        self.n_slots = check_int(n_slots, names[0], where)
        self.slot_size = check_int(slot_size, names[1], where)
        self.hidden = check_int(hidden, "hidden", where)
        self.x_shape = shape_tuple(x_shape)
        self.x_dim = math.prod(self.x_shape)
        self.encoder = mlp(self.x_dim, hidden, n_slots * slot_size, 2, nn.ReLU)

    def code_decoder(self) -> BernoulliDecoder:
        """A decoder ``p(x | code)`` of a flattened code ``[B, n_slots * slot_size]``."""
        code = self.n_slots * self.slot_size
        return BernoulliDecoder(code, self.hidden, self.x_shape, 2, nn.ReLU)

    def encoder_slots(self, x: Tensor, where: str) -> Tensor:
        """The encoder's output for ``x [B, ...]``: ``[B, n_slots, slot_size]``."""
        h = self.encoder(flatten_batch(x, self.x_dim, where))
        return h.view(-1, self.n_slots, self.slot_size)


class VQVAE(CodeAutoencoder):
    """A small MLP VQ-VAE for binary 28 x 28 images.

    Encoder ``x_dim -> hidden -> hidden -> P*D`` (ReLU), reshaped to ``P`` vectors of size
    ``D``, quantized with a codebook of ``K`` codes, and a Bernoulli decoder
    ``P*D -> hidden -> hidden -> x_dim``. The posterior is deterministic (one-hot on the
    nearest code), so with a uniform prior over the ``K^P`` code combinations its KL is
    ``P log K`` for every image and ``ELBO = log p(x | z_q) - P log K``.
    """

    def __init__(
        self,
        n_codes: int = 64,
        code_dim: int = 8,
        n_positions: int = 16,
        hidden: int = 256,
        beta: float = 0.25,
        x_shape: int | Sequence[int] = MNIST_SHAPE,
    ) -> None:
        names = ("n_positions", "code_dim")
        super().__init__(n_positions, code_dim, hidden, x_shape, "VQVAE", names)
        self.n_positions, self.code_dim, self.n_codes = n_positions, code_dim, n_codes
        self.quantizer = VectorQuantizer(n_codes, code_dim, beta)
        self.decoder = self.code_decoder()

    @property
    def kl(self) -> float:
        """``KL(q(z|x) || p(z)) = P log K`` nats, the same for every image."""
        return self.n_positions * math.log(self.n_codes)

    def encode(self, x: Tensor) -> Tensor:
        """Continuous encoder output ``z_e``: ``[B, P, D]``."""
        return self.encoder_slots(x, "VQVAE.encode")

    def loss(self, x: Tensor) -> dict[str, Tensor]:
        """Training terms for ``x [B, ...]``, each a scalar averaged over the batch (nats for
        ``log_px_z``, ``kl`` and ``elbo``; squared distances summed over positions and ``D`` for
        ``codebook`` and ``commitment``, the latter already times ``beta``).

        ``loss = -log_px_z + codebook + commitment`` with ``log_px_z = log p(x|z_q)``;
        ``kl = P log K``, ``elbo = log_px_z - kl`` and the ``perplexity`` of the batch's code
        usage carry no gradient.
        """
        out = self.quantizer(self.encode(x))
        log_px_z = self.decoder.log_prob(x, out.z_q.flatten(1)).mean()
        codebook = out.codebook_loss.sum(-1).mean()
        commitment = out.commitment_loss.sum(-1).mean()
        _, perplexity, _ = codebook_usage(out.indices, self.n_codes)
        return {
            "loss": -log_px_z + codebook + commitment,
            "log_px_z": log_px_z,
            "kl": torch.tensor(self.kl, device=x.device),
            "elbo": log_px_z.detach() - self.kl,
            "codebook": codebook,
            "commitment": commitment,
            "perplexity": torch.tensor(perplexity, device=x.device),
        }

    @torch.no_grad()
    def codes(self, x: Tensor) -> Tensor:
        """The code indices of ``x``: int64 ``[B, P]``."""
        return self.quantizer.nearest(self.encode(x))

    @torch.no_grad()
    def decode_codes(self, indices: Tensor) -> Tensor:
        """Bernoulli means ``[B, *x_shape]`` of the images decoded from ``indices [B, P]``."""
        return self.decoder.mean(self.quantizer.codebook[indices].flatten(1))

    @torch.no_grad()
    def log_px_z(self, x: Tensor) -> Tensor:
        """``log p(x | z_q(x))`` per image, nats: ``[B]``."""
        out = self.quantizer(self.encode(x))
        return self.decoder.log_prob(x, out.z_q.flatten(1))

    @torch.no_grad()
    def elbo(
        self, x: Tensor, n_samples: int = 1, generator: torch.Generator | None = None
    ) -> Tensor:
        """The ELBO per image, nats: ``[B]``, ``log p(x | z_q(x)) - P log K``. The posterior is
        deterministic, so the value is exact: ``n_samples`` and ``generator`` change nothing
        (they keep the signature of the other models). No gradients."""
        check_int(n_samples, "n_samples", "VQVAE.elbo")
        return self.log_px_z(x) - self.kl

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Bernoulli means of the reconstructions: ``[B, *x_shape]``."""
        return self.decode_codes(self.codes(x))

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, mean: bool = False
    ) -> Tensor:
        """``n`` draws of ``P`` uniform codes, decoded: binary images ``x ~ p(x | z_q)``
        ``[n, *x_shape]`` (``mean=True``: the Bernoulli means), on the model's device and in its
        dtype. No gradients."""
        check_int(n, "n", "VQVAE.sample")
        book = self.quantizer.codebook
        idx = torch.randint(
            self.n_codes, (n, self.n_positions), generator=generator, device=book.device
        )
        if mean:
            return self.decode_codes(idx)
        return self.decoder.sample(book[idx].flatten(1), generator=generator)


# --------------------------------------------------------------------------------------------
# The categorical VAE (Gumbel-softmax)
# --------------------------------------------------------------------------------------------


class CategoricalVAE(CodeAutoencoder):
    """``L`` categorical latent variables with ``C`` categories, a uniform prior, an MLP encoder
    of logits ``[B, L, C]`` and an MLP Bernoulli decoder of the ``L*C`` one-hot values.

    Training uses Gumbel-softmax samples at temperature ``tau`` (an attribute; anneal it by
    assignment); the KL to the uniform prior is exact: ``sum_l (sum_c q log q + log C)``.
    """

    def __init__(
        self,
        n_latent: int = 20,
        n_categories: int = 10,
        hidden: int = 256,
        tau: float = 1.0,
        x_shape: int | Sequence[int] = MNIST_SHAPE,
    ) -> None:
        names = ("n_latent", "n_categories")
        super().__init__(n_latent, n_categories, hidden, x_shape, "CategoricalVAE", names)
        self.n_latent, self.n_categories, self.tau = n_latent, n_categories, float(tau)
        self.decoder = self.code_decoder()

    def logits(self, x: Tensor) -> Tensor:
        """Encoder logits of ``q(c_l | x)``: ``[B, L, C]``."""
        return self.encoder_slots(x, "CategoricalVAE.logits")

    def loss(self, x: Tensor) -> dict[str, Tensor]:
        """Training terms for ``x [B, ...]``, scalars averaged over the batch, nats.

        ``log_px_z = log p(x | y)`` at one relaxed sample ``y`` (temperature ``self.tau``),
        ``kl`` = exact ``KL(q(c|x) || Uniform)`` summed over the ``L`` variables,
        ``elbo = log_px_z - kl`` (the relaxed objective), ``loss = -log_px_z + kl``.
        """
        logits = self.logits(x)
        y = gumbel_softmax_sample(logits, self.tau)
        log_px_z = self.decoder.log_prob(x, y.flatten(1)).mean()
        kl = categorical_kl_uniform(logits).sum(-1).mean()
        return {"loss": -log_px_z + kl, "log_px_z": log_px_z, "kl": kl, "elbo": log_px_z - kl}

    @torch.no_grad()
    def elbo(
        self, x: Tensor, n_samples: int = 1, generator: torch.Generator | None = None
    ) -> Tensor:
        """The ELBO of the *discrete* model per image, nats: ``[B]``.

        ``mean_s log p(x | c_s) - KL(q(c|x) || Uniform)`` with ``n_samples`` exact one-hot
        samples ``c_s ~ q(c|x)`` (Gumbel-max): an unbiased estimate of the ELBO of the model whose
        latents are truly discrete, which lower-bounds its ``log p(x)`` in expectation.
        """
        check_int(n_samples, "n_samples", "CategoricalVAE.elbo")
        logits = self.logits(x)
        kl = categorical_kl_uniform(logits).sum(-1)
        rec = torch.zeros_like(kl)
        for _ in range(n_samples):
            c = gumbel_softmax_sample(logits, 1.0, hard=True, generator=generator)
            rec += self.decoder.log_prob(x, c.flatten(1))
        return rec / n_samples - kl

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Bernoulli means decoded from the most probable category of every variable."""
        logits = self.logits(x)
        c = F.one_hot(logits.argmax(-1), self.n_categories).to(logits.dtype)
        return self.decoder.mean(c.flatten(1))

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, mean: bool = False
    ) -> Tensor:
        """``n`` draws of uniform categories, decoded: binary images ``x ~ p(x | c)``
        ``[n, *x_shape]`` (``mean=True``: the Bernoulli means), on the model's device and in its
        dtype. No gradients."""
        check_int(n, "n", "CategoricalVAE.sample")
        w = next(self.decoder.parameters())
        c = torch.randint(
            self.n_categories, (n, self.n_latent), generator=generator, device=w.device
        )
        y = F.one_hot(c, self.n_categories).to(w.dtype).flatten(1)
        return self.decoder.mean(y) if mean else self.decoder.sample(y, generator=generator)
