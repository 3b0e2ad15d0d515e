r"""Log-density of a mixture of N diagonal Gaussians at M points, without an M x N x D tensor.

.. math::

    \log p(z_m) = \log \sum_{n=1}^{N} w_n\, \mathcal N\big(z_m \mid \mu_n,
    \operatorname{diag}(e^{\mathrm{logvar}_n})\big)

This is the aggregated posterior :math:`q(z) = \frac1N \sum_n q(z \mid x_n)` over a training set,
the VampPrior, and a Gaussian kernel density estimate. A naive broadcast ``z[:, None] - mu[None]``
builds an M x N x D tensor (77 GB for N = 60 000, M = 10 000, D = 32).

**Expanded quadratic form.** With the inverse variances :math:`v_n = e^{-\mathrm{logvar}_n}`,

.. math::

    \log w_n + \log \mathcal N(z_m \mid \mu_n, v_n^{-1})
      = c_n + \langle a_m, b_n\rangle, \qquad
    a_m = [z_m^2,\ z_m],\quad b_n = [-\tfrac12 v_n,\ \mu_n v_n],

    c_n = \log w_n - \tfrac12\Big(D \log 2\pi + \textstyle\sum_d \mathrm{logvar}_{nd}
          + \sum_d \mu_{nd}^2 v_{nd}\Big),

so the M x N matrix of log-terms is one matrix product with inner dimension 2D plus a row vector,
and the log-density is its row-wise log-sum-exp. :func:`bilinear_logsumexp` computes
``logsumexp_n(c[n] + a[m] . b[n])`` tile by tile: the torch path in chunks (the CPU path), the
Triton path with a streaming log-sum-exp over N (as in flash-attention). Neither stores the M x N
matrix; both recompute the responsibilities tile by tile in the backward pass, so memory stays
O((M + N) D + tile).

**Cancellation.** The expanded form subtracts large numbers when the points are far from the
origin (``|z|^2 - 2 z.mu + |mu|^2``). Both paths therefore centre ``z`` and ``mu`` on the mean of
the component means first (the density is invariant to a common shift), so the rounding error of a
log-term is about ``eps * (|z - c|^2 + |mu - c|^2) / var`` with ``c`` the centre of the mixture:
small relative to the log-term itself for queries far from the mixture (it then grows like
``|z - c|^2``), and small in absolute terms for queries inside it. The half-precision inputs are
computed in float32 and the result is rounded back to the input dtype. On Ampere and newer GPUs the
Triton path multiplies float32 tiles with three-pass TF32 (``tf32x3``, about float32 accuracy;
plain TF32 would keep only 10 mantissa bits of ``|z|^2`` and ``z . mu``).
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

from dgmlib.kernels.arguments import (
    check_finite,
    check_same,
    check_shape,
    check_tensor,
    compute_dtype,
)
from dgmlib.kernels.backend import resolve_backend, triton_kernels

LOG_2PI = math.log(2.0 * math.pi)
MAX_TRITON_D = 256  # the Triton path holds the 2D-wide expanded features in one register tile

# Torch path tiling: the [rows x BLOCK_N] tile of log-terms has at most CHUNK_ELEMENTS entries
# (8 MB in float32). Large tiles mean few parallel regions, which matters on a busy 2-core CPU.
CHUNK_ELEMENTS = 1 << 21
BLOCK_N = 8192


def mixture_logpdf_ref(
    z: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    log_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reference: the naive broadcast (an M x N x D tensor). For tests and tiny problems only.

    Same arguments and result as :func:`mixture_logpdf`; plain autograd; float64-able.
    """
    n = mu.shape[0]
    diff = z[:, None, :] - mu[None, :, :]  # [M, N, D]
    log_n = -0.5 * (LOG_2PI + logvar[None] + diff * diff * torch.exp(-logvar)[None]).sum(-1)
    if log_weights is None:
        log_n = log_n - math.log(n)
    else:
        log_n = log_n + log_weights[None, :]
    return torch.logsumexp(log_n, dim=1)


def mixture_logpdf(
    z: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    log_weights: torch.Tensor | None = None,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """Log-density (nats) of a mixture of diagonal Gaussians at every row of ``z``.

    Args:
        z: [M, D] query points.
        mu: [N, D] component means (N >= 1).
        logvar: [N, D] component log-variances (natural log of the variance).
        log_weights: [N] log mixture weights, normalized (``logsumexp(log_weights) == 0``);
            ``-inf`` gives a component zero weight. ``None`` means uniform weights ``1/N``.
        backend: ``"torch"`` (chunked, the CPU path), ``"triton"``, or ``None`` (auto: Triton for
            CUDA tensors when triton imports, torch otherwise; ``$DGMLIB_BACKEND`` overrides).

    Returns:
        [M] ``log sum_n w_n N(z_m | mu_n, diag(exp(logvar_n)))`` in nats, in the dtype of ``z``.
        A row whose every component has weight zero gives ``-inf``.

    Differentiable with respect to ``z``, ``mu``, ``logvar`` and ``log_weights`` (first order;
    ``log_weights`` is treated as free, so normalize it in the graph if it is learned). The
    gradient of a ``-inf`` row is 0. All arguments share one dtype (float16, bfloat16, float32 or
    float64; half precision is computed in float32) and one device. NaN or infinite ``z``, ``mu``
    or ``logvar``, and NaN or ``+inf`` ``log_weights``, raise ``ValueError``. ``logvar`` must keep
    ``exp(-logvar)`` finite in the compute dtype (above about -80 in float32).

    Memory is O((M + N) D) plus one tile; time is O(M N D).
    """
    op = "mixture_logpdf"
    check_tensor(op, "z", z, "[M, D]", 2)
    check_tensor(op, "mu", mu, "[N, D]", 2)
    check_tensor(op, "logvar", logvar, "[N, D]", 2)
    if log_weights is not None:
        check_tensor(op, "log_weights", log_weights, "[N]", 1)
    check_same(op, "z", z, mu=mu, logvar=logvar, log_weights=log_weights)
    n, d = mu.shape
    if d < 1 or n < 1:
        raise ValueError(f"{op}: `mu` must have shape [N, D] with N, D >= 1, got {list(mu.shape)}")
    check_shape(op, "z", z, (z.shape[0], d), "shape [M, D] with D from `mu`")
    check_shape(op, "logvar", logvar, mu.shape, "the shape of `mu`")
    if log_weights is not None:
        check_shape(op, "log_weights", log_weights, (n,), "shape [N] with N from `mu`")
    check_finite(op, "z", z)
    check_finite(op, "mu", mu)
    check_finite(op, "logvar", logvar)
    if log_weights is not None:
        check_finite(op, "log_weights", log_weights, allow_neg_inf=True)

    too_wide = f"supports D <= {MAX_TRITON_D}, got D = {d}" if d > MAX_TRITON_D else None
    backend = resolve_backend(backend, z, mu, logvar, op=op, unsupported=too_wide)

    cdt = compute_dtype(z.dtype)
    a, b, c = expand_mixture(
        z.to(cdt),
        mu.to(cdt),
        logvar.to(cdt),
        None if log_weights is None else log_weights.to(cdt),
    )
    return bilinear_logsumexp(a, b, c, backend=backend).to(z.dtype)


def expand_mixture(
    z: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    log_weights: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The expanded quadratic form: ``a`` [M, 2D], ``b`` [N, 2D], ``c`` [N] such that
    ``c[n] + a[m] . b[n] = log w_n + log N(z_m | mu_n, diag(exp(logvar_n)))``.

    ``z`` and ``mu`` are first centred on ``mu.mean(0)`` (detached; the density does not depend
    on it), which keeps the cancellation in the expanded form small. Plain differentiable torch.
    """
    n, d = mu.shape
    centre = mu.detach().mean(0)
    zc = z - centre
    muc = mu - centre
    inv_var = torch.exp(-logvar)
    a = torch.cat([zc * zc, zc], dim=1)
    b = torch.cat([-0.5 * inv_var, muc * inv_var], dim=1)
    log_w = -math.log(n) if log_weights is None else log_weights
    c = log_w - 0.5 * (d * LOG_2PI + logvar.sum(1) + (muc * muc * inv_var).sum(1))
    return a.contiguous(), b.contiguous(), c.contiguous()


def bilinear_logsumexp(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, *, backend: str = "torch"
) -> torch.Tensor:
    """``out[m] = log sum_n exp(c[n] + a[m] . b[n])`` without storing the M x N matrix.

    Args:
        a: [M, K], b: [N, K], c: [N] (entries may be ``-inf``), one dtype (float32 or float64).
        backend: ``"torch"`` or ``"triton"`` (already resolved; no auto choice here).

    Returns:
        [M]; ``-inf`` where every term is ``-inf``. Differentiable in ``a``, ``b`` and ``c`` with
        a backward pass that recomputes the softmax weights tile by tile.
    """
    return _BilinearLogSumExp.apply(a, b, c, backend)


# ----------------------------------------------------------------------------------------------
# Chunked torch path
# ----------------------------------------------------------------------------------------------


def _tiles(m: int, n: int):
    bn = max(1, min(n, BLOCK_N))
    bm = max(1, CHUNK_ELEMENTS // bn)
    for m0 in range(0, m, bm):
        yield slice(m0, min(m, m0 + bm)), [slice(n0, min(n, n0 + bn)) for n0 in range(0, n, bn)]


def _blse_forward_torch(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    m, n = a.shape[0], b.shape[0]
    out = torch.empty(m, dtype=a.dtype, device=a.device)
    for rows, col_tiles in _tiles(m, n):
        parts = [torch.logsumexp(torch.addmm(c[cols], a[rows], b[cols].T), 1) for cols in col_tiles]
        out[rows] = parts[0] if len(parts) == 1 else torch.logsumexp(torch.stack(parts, 1), 1)
    return out


def _blse_backward_torch(
    a: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    out: torch.Tensor,
    g: torch.Tensor,
    needs: tuple[bool, bool, bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    m, n = a.shape[0], b.shape[0]
    ga = torch.zeros_like(a) if needs[0] else None
    gb = torch.zeros_like(b) if needs[1] else None
    gc = torch.zeros_like(c) if needs[2] else None
    out = out.masked_fill(out == float("-inf"), float("inf"))  # all -inf row: weights 0, not nan
    for rows, col_tiles in _tiles(m, n):
        a_r, out_r, g_r = a[rows], out[rows, None], g[rows, None]
        for cols in col_tiles:
            # w[m, n] = g[m] * exp(s[m, n] - out[m]): the responsibilities times the upstream grad
            w = torch.addmm(c[cols], a_r, b[cols].T).sub_(out_r).exp_().mul_(g_r)
            if ga is not None:
                ga[rows].addmm_(w, b[cols])
            if gb is not None:
                gb[cols].addmm_(w.T, a_r)
            if gc is not None:
                gc[cols] += w.sum(0)
    return ga, gb, gc


class _BilinearLogSumExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, c, backend):
        a, b, c = a.detach().contiguous(), b.detach().contiguous(), c.detach().contiguous()
        if backend == "triton":
            out = triton_kernels().blse_forward(a, b, c)
        else:
            out = _blse_forward_torch(a, b, c)
        ctx.save_for_backward(a, b, c, out)
        ctx.backend = backend
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        a, b, c, out = ctx.saved_tensors
        needs = tuple(ctx.needs_input_grad[:3])
        if not any(needs):
            return None, None, None, None
        g = g.contiguous()
        if ctx.backend == "triton":
            ga, gb, gc = triton_kernels().blse_backward(a, b, c, out, g)
            ga, gb, gc = (t if need else None for t, need in zip((ga, gb, gc), needs, strict=True))
        else:
            ga, gb, gc = _blse_backward_torch(a, b, c, out, g, needs)
        return ga, gb, gc, None
