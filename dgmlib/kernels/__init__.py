"""GPU kernels (Triton) for the operations this course makes expensive, with PyTorch fallbacks.

Every operation has a plain-torch reference (``*_ref``), a memory-bounded torch path (the CPU
path) and a Triton path; ``backend="torch" | "triton" | None`` chooses (``None``: Triton for CUDA
tensors when triton imports, torch otherwise; the environment variable ``DGMLIB_BACKEND``
overrides the automatic choice). Importing this package imports neither triton nor a GPU driver.

- :func:`mixture_logpdf`: log-density of a mixture of N diagonal Gaussians at M points
  (aggregated posterior, VampPrior, kernel density estimate) without an M x N x D tensor.
- :func:`vq_nearest`: nearest codebook row (VQ-VAE), distances fused with the arg-min.
- :func:`iwae_logmeanexp`: IWAE log-mean-exp with the normalized importance weights.
- :func:`gaussian_rsample_kl`: reparametrized Gaussian sample with the analytic KL to N(0, I).
"""

from dgmlib.kernels.backend import resolve_backend, triton_available
from dgmlib.kernels.mixture import bilinear_logsumexp, mixture_logpdf, mixture_logpdf_ref
from dgmlib.kernels.rowwise import (
    gaussian_rsample_kl,
    gaussian_rsample_kl_ref,
    iwae_logmeanexp,
    iwae_logmeanexp_ref,
)
from dgmlib.kernels.vq import vq_nearest, vq_nearest_ref

__all__ = [
    "bilinear_logsumexp",
    "gaussian_rsample_kl",
    "gaussian_rsample_kl_ref",
    "iwae_logmeanexp",
    "iwae_logmeanexp_ref",
    "mixture_logpdf",
    "mixture_logpdf_ref",
    "resolve_backend",
    "triton_available",
    "vq_nearest",
    "vq_nearest_ref",
]
