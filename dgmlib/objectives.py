"""Training objectives for VAEs, separate from the models (as NumPyro's ``infer/elbo.py``).

An objective is a callable ``objective(model, x) -> dict`` of batch-averaged scalar terms, one of
them ``"loss"`` (what :class:`dgmlib.train.Trainer` minimises); every term is in nats and signed
as its name says: ``log_px_z`` = E_q log p(x|z), ``kl`` = KL(q(z|x) || p(z)), ``elbo`` =
``log_px_z - kl``, ``iwae`` = the K-sample bound. ``model`` is a :class:`dgmlib.models.vae.VAE`.

* :class:`ELBO` -- the ELBO with one reparametrized sample, optionally with a KL weight (beta,
  set by an annealing schedule of :mod:`dgmlib.kl_control`) and free bits. The reported ``elbo``
  and ``kl`` are always the true ones, whatever the weight.
* :class:`IWAEBound` -- the importance-weighted bound of Burda et al. (2016) with ``K`` samples.

**Backends.** On CUDA tensors (with triton installed) both objectives call the fused row-wise
kernels of :mod:`dgmlib.kernels`: the ELBO draws ``z`` and computes its KL to ``N(0, I)`` in one
kernel (:func:`dgmlib.kernels.gaussian_rsample_kl`; for the standard-normal prior without free
bits), the IWAE bound takes the log-mean-exp and the normalized weights in one pass
(:func:`dgmlib.kernels.iwae_logmeanexp`). They draw the same noise from the same generator as the
plain torch code and agree with it to float rounding. ``backend="torch"`` always runs the plain
torch code; ``backend="triton"`` asks for the kernels (on CPU tensors only under
``TRITON_INTERPRET=1``; a ValueError where the kernel does not apply); ``None`` (the default)
runs the plain torch code on CPU tensors, bit for bit the code without kernels, and on CUDA
tensors chooses as :func:`dgmlib.kernels.resolve_backend` does (``$DGMLIB_BACKEND=torch`` turns
the kernels off), falling back to the torch code where the kernel does not apply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from dgmlib.bounds import iwae_bound
from dgmlib.kernels import gaussian_rsample_kl, iwae_logmeanexp, resolve_backend
from dgmlib.kl_control import free_bits_kl
from dgmlib.models.priors import StandardNormalPrior
from dgmlib.validation import check_choice, check_int, check_positive

if TYPE_CHECKING:
    from dgmlib.models.vae import VAE

__all__ = ["BACKENDS", "ELBO", "IWAEBound"]

#: The values the ``backend`` argument of an objective accepts (``None``: automatic).
BACKENDS = (None, "torch", "triton")


class ELBO:
    """``loss = -E_q log p(x|z) + kl_weight * KL-term``, one sample ``z ~ q(z|x)`` per example.

    ``kl_weight`` (beta, default 1) may change during training (an annealing schedule);
    ``free_bits`` (lambda, nats, 0 = off) replaces the KL-term by ``sum_g max(lambda, mean_batch
    KL_g)`` over ``free_bits_groups`` groups of latent dimensions
    (:func:`dgmlib.kl_control.free_bits_kl`; ``None`` = one group per dimension), which needs a
    prior with a closed-form KL. With the defaults, ``loss = -elbo``. ``backend``: see the module
    docstring (the fused kernel serves the standard-normal prior without free bits).
    """

    def __init__(
        self,
        kl_weight: float = 1.0,
        free_bits: float = 0.0,
        free_bits_groups: int | None = None,
        backend: str | None = None,
    ) -> None:
        self.kl_weight = check_positive(kl_weight, "kl_weight", "ELBO", allow_zero=True)
        self.free_bits = check_positive(free_bits, "free_bits", "ELBO", allow_zero=True)
        self.free_bits_groups = free_bits_groups
        self.backend = check_choice(backend, "backend", "ELBO", BACKENDS)

    def __call__(self, model: VAE, x: Tensor) -> dict[str, Tensor]:
        """The terms for a batch ``x [B, ...]``, each averaged over the batch, nats."""
        if self._fused(model, x):
            mu, logvar = model.encode(x)
            z, kl_per_example = gaussian_rsample_kl(mu, logvar, backend="triton")
            log_px_z = model.decoder.log_prob(x, z).mean()
            kl = kl_per_example.mean()
            kl_term = kl
        else:
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

    def _fused(self, model: VAE, x: Tensor) -> bool:
        """Whether the fused reparametrization + KL kernel computes this batch."""
        if self.backend == "torch" or (self.backend is None and not x.is_cuda):
            return False
        unsupported = None
        if self.free_bits > 0:
            unsupported = "computes the summed KL only, and free bits need it per dimension"
        elif not isinstance(model.prior, StandardNormalPrior):
            unsupported = f"computes the KL to N(0, I) only, not to a {type(model.prior).__name__}"
        if unsupported is not None and self.backend is None:
            return False  # the automatic choice falls back to the torch code
        return resolve_backend(self.backend, x, op="ELBO", unsupported=unsupported) == "triton"


class IWAEBound:
    """``loss = -mean_batch log (1/K) sum_k p(x, z_k) / q(z_k|x)`` with ``K`` samples per example.

    ``K = 1`` is the ELBO with a Monte Carlo KL. Also reported, from the same samples:
    ``log_px_z`` (averaged over the K samples), the ``kl`` of the model and ``elbo``.
    ``backend``: see the module docstring.
    """

    def __init__(self, K: int = 5, backend: str | None = None) -> None:
        self.K = check_int(K, "K", "IWAEBound")
        self.backend = check_choice(backend, "backend", "IWAEBound", BACKENDS)

    def __call__(self, model: VAE, x: Tensor) -> dict[str, Tensor]:
        """The terms for a batch ``x [B, ...]``, each averaged over the batch, nats."""
        t = model.terms(x, self.K)
        log_w = t["log_px_z"] + t["log_pz_minus_log_qz"]  # [K, B]
        if self._fused(x):
            iwae = iwae_logmeanexp(log_w, 0, backend="triton")[0].mean()
        else:
            iwae = iwae_bound(log_w).mean()
        log_px_z = t["log_px_z"].mean()
        kl = t["kl"].mean()
        return {"loss": -iwae, "iwae": iwae, "log_px_z": log_px_z, "kl": kl, "elbo": log_px_z - kl}

    def _fused(self, x: Tensor) -> bool:
        """Whether the fused log-mean-exp kernel computes this batch's bound."""
        if self.backend == "torch" or (self.backend is None and not x.is_cuda):
            return False
        return resolve_backend(self.backend, x, op="IWAEBound") == "triton"
