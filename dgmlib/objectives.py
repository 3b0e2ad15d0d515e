"""Training objectives for VAEs, separate from the models (as NumPyro's ``infer/elbo.py``).

An objective is a callable ``objective(model, x) -> dict`` of batch-averaged scalar terms, one of
them ``"loss"`` (what :class:`dgmlib.train.Trainer` minimises); every term is in nats and signed
as its name says: ``log_px_z`` = E_q log p(x|z), ``kl`` = KL(q(z|x) || p(z)), ``elbo`` =
``log_px_z - kl``, ``iwae`` = the K-sample bound. ``model`` is a :class:`dgmlib.models.vae.VAE`.

* :class:`ELBO` -- the ELBO with one reparametrized sample, optionally with a KL weight (beta,
  set by an annealing schedule of :mod:`dgmlib.kl_control`) and free bits. The reported ``elbo``
  and ``kl`` are always the true ones, whatever the weight.
* :class:`IWAEBound` -- the importance-weighted bound of Burda et al. (2016) with ``K`` samples.
"""

from __future__ import annotations

from torch import Tensor, nn

from dgmlib.bounds import iwae_bound
from dgmlib.kl_control import free_bits_kl
from dgmlib.validation import check_int, check_positive

__all__ = ["ELBO", "IWAEBound"]


class ELBO:
    """``loss = -E_q log p(x|z) + kl_weight * KL-term``, one sample ``z ~ q(z|x)`` per example.

    ``kl_weight`` (beta, default 1) may change during training (an annealing schedule);
    ``free_bits`` (lambda, nats, 0 = off) replaces the KL-term by ``sum_g max(lambda, mean_batch
    KL_g)`` over ``free_bits_groups`` groups of latent dimensions
    (:func:`dgmlib.kl_control.free_bits_kl`; ``None`` = one group per dimension), which needs a
    prior with a closed-form KL. With the defaults, ``loss = -elbo``.
    """

    def __init__(
        self, kl_weight: float = 1.0, free_bits: float = 0.0, free_bits_groups: int | None = None
    ) -> None:
        self.kl_weight = check_positive(kl_weight, "kl_weight", "ELBO", allow_zero=True)
        self.free_bits = check_positive(free_bits, "free_bits", "ELBO", allow_zero=True)
        self.free_bits_groups = free_bits_groups

    def __call__(self, model: nn.Module, x: Tensor) -> dict[str, Tensor]:
        """The terms for a batch ``x [B, ...]``, each averaged over the batch, nats."""
        t = model.terms(x)
        log_px_z = t["log_px_z"].mean()
        if self.free_bits > 0:
            kl_dims = model.kl_per_dim(t["mu"], t["logvar"])  # [B, Z]
            kl = kl_dims.sum(-1).mean()
            kl_term = free_bits_kl(kl_dims, self.free_bits, self.free_bits_groups)
        else:
            kl = t["kl"].mean()
            kl_term = kl
        return {
            "loss": -log_px_z + self.kl_weight * kl_term,
            "log_px_z": log_px_z,
            "kl": kl,
            "elbo": log_px_z - kl,
        }


class IWAEBound:
    """``loss = -mean_batch log (1/K) sum_k p(x, z_k) / q(z_k|x)`` with ``K`` samples per example.

    ``K = 1`` is the ELBO with a Monte Carlo KL. Also reported, from the same samples:
    ``log_px_z`` (averaged over the K samples), the ``kl`` of the model and ``elbo``.
    """

    def __init__(self, K: int = 5) -> None:
        self.K = check_int(K, "K", "IWAEBound")

    def __call__(self, model: nn.Module, x: Tensor) -> dict[str, Tensor]:
        """The terms for a batch ``x [B, ...]``, each averaged over the batch, nats."""
        t = model.terms(x, self.K)
        iwae = iwae_bound(t["log_px_z"] + t["log_pz_minus_log_qz"]).mean()
        log_px_z = t["log_px_z"].mean()
        kl = t["kl"].mean()
        return {"loss": -iwae, "iwae": iwae, "log_px_z": log_px_z, "kl": kl, "elbo": log_px_z - kl}
