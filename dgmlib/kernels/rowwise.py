r"""Fused row-wise kernels: the IWAE log-mean-exp with its importance weights, and the Gaussian
reparametrization with its analytic KL divergence.

Each has a plain-torch reference (``*_ref``, which is also the torch path) and a Triton path that
reads its inputs once per pass and writes every output in the same kernel.
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

from dgmlib.kernels.arguments import check_same, check_shape, check_tensor, compute_dtype
from dgmlib.kernels.backend import resolve_backend, triton_kernels

# ----------------------------------------------------------------------------------------------
# IWAE log-mean-exp
# ----------------------------------------------------------------------------------------------


def iwae_logmeanexp_ref(log_w: torch.Tensor, dim: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference (and torch path) of :func:`iwae_logmeanexp`.

    A slice of all ``-inf`` is masked before ``logsumexp`` so its gradient is 0, not NaN.
    """
    k = log_w.shape[dim]
    dead = (log_w == float("-inf")).all(dim=dim, keepdim=True)
    lse = torch.logsumexp(log_w.masked_fill(dead, 0.0), dim=dim, keepdim=True)
    weights = torch.exp(log_w - lse.masked_fill(dead, float("inf")))
    lme = lse.masked_fill(dead, float("-inf")).squeeze(dim) - math.log(k)
    return lme, weights


def iwae_logmeanexp(
    log_w: torch.Tensor, dim: int = -1, *, backend: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""IWAE bound and normalized importance weights from log importance weights.

    Args:
        log_w: [..., K, ...] log importance weights ``log p(x, z_k) - log q(z_k | x)`` (nats),
            with the K samples along ``dim``.
        dim: the sample dimension (reduced).
        backend: ``"torch"``, ``"triton"`` or ``None`` (auto; ``$DGMLIB_BACKEND`` overrides).

    Returns:
        ``(lme, weights)``: ``lme = log (1/K) sum_k exp(log_w_k)``, the shape of ``log_w`` without
        ``dim`` (the K-sample IWAE bound, nats), and ``weights = softmax(log_w, dim)``, the shape of
        ``log_w`` (sums to 1 along ``dim``). A slice of all ``-inf`` gives ``lme = -inf`` and zero
        weights. Differentiable in ``log_w`` through both outputs (detach ``weights`` for the
        usual reweighted gradients). NaN and ``+inf`` inputs are not checked and propagate.
    """
    op = "iwae_logmeanexp"
    check_tensor(op, "log_w", log_w, "[..., K, ...]")
    if log_w.dim() == 0 or log_w.shape[dim] < 1:
        raise ValueError(
            f"{op}: `log_w` needs a sample dimension `dim`={dim} of size K >= 1, "
            f"got shape {list(log_w.shape)}"
        )
    backend = resolve_backend(backend, log_w, op=op)
    if backend == "torch":
        return iwae_logmeanexp_ref(log_w, dim)
    k = log_w.shape[dim]
    moved = log_w.movedim(dim, -1)
    x2d = moved.reshape(-1, k).to(compute_dtype(log_w.dtype)).contiguous()
    lse, w = LogSumExpSoftmax.apply(x2d)
    lme = (lse - math.log(k)).reshape(moved.shape[:-1]).to(log_w.dtype)
    weights = w.reshape(moved.shape).movedim(-1, dim).to(log_w.dtype)
    return lme, weights


class LogSumExpSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        lse, w = triton_kernels().lse_forward(x.detach())
        ctx.save_for_backward(w)
        return lse, w

    @staticmethod
    @once_differentiable
    def backward(ctx, g_lse, g_w):
        (w,) = ctx.saved_tensors
        return triton_kernels().lse_backward(w, g_lse, g_w)


# ----------------------------------------------------------------------------------------------
# Gaussian reparametrization with analytic KL to N(0, I)
# ----------------------------------------------------------------------------------------------


def gaussian_rsample_kl_ref(
    mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference (and torch path) of :func:`gaussian_rsample_kl` with given noise."""
    std = torch.exp(0.5 * logvar)
    z = mu + std * eps
    kl = 0.5 * (mu * mu + std * std - 1.0 - logvar).sum(-1)
    return z, kl


def gaussian_rsample_kl(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    eps: torch.Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Reparametrized sample of ``q = N(mu, diag(exp(logvar)))`` and ``KL(q || N(0, I))``.

    Args:
        mu: [..., D] means.
        logvar: [..., D] log-variances.
        eps: [..., D] standard-normal noise; ``None`` draws it with ``torch.randn`` (from
            ``generator`` when given). Passing it makes the result exactly reproducible.
        backend: ``"torch"``, ``"triton"`` or ``None`` (auto; ``$DGMLIB_BACKEND`` overrides).

    Returns:
        ``(z, kl)``: ``z = mu + exp(logvar / 2) * eps`` with the shape of ``mu``, and
        ``kl = 1/2 sum_d (mu^2 + exp(logvar) - 1 - logvar)`` summed over the last dimension
        (nats), with shape ``mu.shape[:-1]``. Differentiable in ``mu``, ``logvar`` and ``eps``.
    """
    op = "gaussian_rsample_kl"
    check_tensor(op, "mu", mu, "[..., D]")
    check_tensor(op, "logvar", logvar, "[..., D]")
    if mu.dim() == 0:
        raise ValueError(f"{op}: `mu` must have shape [..., D], got a scalar")
    check_shape(op, "logvar", logvar, mu.shape, "the shape of `mu`")
    if eps is None:
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    else:
        check_tensor(op, "eps", eps, "[..., D]")
        check_shape(op, "eps", eps, mu.shape, "the shape of `mu`")
    check_same(op, "mu", mu, logvar=logvar, eps=eps)
    backend = resolve_backend(backend, mu, logvar, eps, op=op)
    if backend == "torch":
        return gaussian_rsample_kl_ref(mu, logvar, eps)
    d = mu.shape[-1]
    cdt = compute_dtype(mu.dtype)
    args = [t.reshape(-1, d).to(cdt).contiguous() for t in (mu, logvar, eps)]
    z, kl = RsampleKL.apply(*args)
    return z.reshape(mu.shape).to(mu.dtype), kl.reshape(mu.shape[:-1]).to(mu.dtype)


class RsampleKL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mu, logvar, eps):
        mu, logvar, eps = mu.detach(), logvar.detach(), eps.detach()
        z, kl = triton_kernels().reparam_forward(mu, logvar, eps)
        ctx.save_for_backward(mu, logvar, eps)
        return z, kl

    @staticmethod
    @once_differentiable
    def backward(ctx, g_z, g_kl):
        mu, logvar, eps = ctx.saved_tensors
        g_mu, g_lv, g_eps = triton_kernels().reparam_backward(mu, logvar, eps, g_z, g_kl)
        needs = ctx.needs_input_grad
        return (g_mu if needs[0] else None, g_lv if needs[1] else None, g_eps if needs[2] else None)
