r"""Nearest codebook vector for vector quantization (VQ-VAE), fused with the arg-min.

For a query :math:`x_m` and codebook rows :math:`e_k`,

.. math::

    \arg\min_k \|x_m - e_k\|^2 = \arg\min_k \big(\tfrac12\|e_k\|^2 - \langle x_m, e_k\rangle\big),

so the search is a matrix product followed by a row-wise arg-min. ``torch.cdist(x, e).argmin(1)``
stores the whole M x K distance matrix; here it is computed tile by tile and reduced at once (the
torch path in chunks, the Triton path inside one kernel), so memory is O((M + K) D + tile).

**Precision.** When the codebook sits far from the origin, ``x`` and the codebook are shifted by
its mean before the product (the arg-min does not change), which limits the cancellation of the
expanded form; the shift is rounded to a power-of-two grid no finer than the codebook's spread, so
data on a grid (integers, say) stays exact (see ``_centre``). Half-precision inputs are searched
in float32. The returned squared distance is not taken from the expanded form: it is recomputed
directly as ``((x - codebook[idx]) ** 2).sum(1)`` (in chunks), exact to rounding, and it is
differentiable with respect to ``x`` and ``codebook``.

**Ties** go to the lowest index, as with ``torch.argmin``: exact ties are kept by a strict
comparison across tiles, and duplicated codebook rows are mapped to their first occurrence
explicitly (so a matrix-product rounding difference between two equal rows cannot reorder them).
Distances that differ by less than their rounding error (about 1e-7 relative in float32, 1e-16
in float64) may resolve differently than in another implementation, ``torch.cdist`` included.
"""

from __future__ import annotations

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

MAX_TRITON_D = 512
CHUNK_ELEMENTS = 1 << 20  # torch path: the [rows x BLOCK_K] score tile has at most this many
BLOCK_K = 4096


def vq_nearest_ref(x: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: the full M x K x D broadcast, then ``argmin``. Tests and tiny problems only."""
    d = ((x[:, None, :] - codebook[None, :, :]) ** 2).sum(-1)  # [M, K]
    idx = d.argmin(1)
    return idx, d.gather(1, idx[:, None])[:, 0]


def vq_nearest(
    x: torch.Tensor, codebook: torch.Tensor, *, backend: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of, and squared Euclidean distance to, the nearest codebook row for every row of ``x``.

    Args:
        x: [M, D] queries (e.g. encoder outputs flattened over positions).
        codebook: [K, D] code vectors (K >= 1).
        backend: ``"torch"`` (chunked, the CPU path), ``"triton"``, or ``None`` (auto: Triton for
            CUDA tensors when triton imports, torch otherwise; ``$DGMLIB_BACKEND`` overrides).

    Returns:
        ``(indices, sq_dist)``: int64 [M] with ties to the lowest index, and [M] squared distances
        in the dtype of ``x`` (differentiable with respect to ``x`` and ``codebook``; the indices
        are not).

    Both arguments share one dtype (half precision is searched in float32) and one device;
    NaN or infinite values raise ``ValueError``.
    """
    op = "vq_nearest"
    check_tensor(op, "x", x, "[M, D]", 2)
    check_tensor(op, "codebook", codebook, "[K, D]", 2)
    check_same(op, "x", x, codebook=codebook)
    k, d = codebook.shape
    if k < 1 or d < 1:
        raise ValueError(
            f"{op}: `codebook` must have shape [K, D] with K, D >= 1, got {list(codebook.shape)}"
        )
    check_shape(op, "x", x, (x.shape[0], d), "shape [M, D] with D from `codebook`")
    check_finite(op, "x", x)
    check_finite(op, "codebook", codebook)
    too_wide = f"supports D <= {MAX_TRITON_D}, got D = {d}" if d > MAX_TRITON_D else None
    backend = resolve_backend(backend, x, codebook, op=op, unsupported=too_wide)

    cdt = compute_dtype(x.dtype)
    with torch.no_grad():
        e = codebook.detach().to(cdt)
        centre = _centre(e)
        ec = (e - centre).contiguous()
        h = 0.5 * (ec * ec).sum(1)
        if backend == "triton":
            xc = (x.detach().to(cdt) - centre).contiguous()
            idx, sq = triton_kernels().vq_argmin(xc, ec, h), None
        else:
            idx, sq = _vq_search_torch(x.detach(), centre, e, ec, h)
        # an equal row earlier in the codebook is equally near: take it (same distance)
        idx = _first_duplicate(e)[idx]
    return idx, _SquaredDistance.apply(x, codebook, idx, sq)


def _row_chunks(m: int, width: int):
    """Row slices of at most CHUNK_ELEMENTS // width rows."""
    rows = max(1, CHUNK_ELEMENTS // max(1, width))
    for m0 in range(0, m, rows):
        yield slice(m0, min(m, m0 + rows))


def _vq_search_torch(
    x: torch.Tensor, centre: torch.Tensor, e: torch.Tensor, ec: torch.Tensor, h: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """argmin_k (h[k] - (x[m] - centre) . ec[k]) in [rows x BLOCK_K] tiles, x converted and
    shifted chunk by chunk (a strict '<' across tiles keeps the lower index on ties), and the
    squared distance |x[m] - e[idx[m]]|^2 of each chunk computed directly while it is at hand."""
    m, k = x.shape[0], ec.shape[0]
    idx = torch.empty(m, dtype=torch.int64, device=x.device)
    sq = torch.empty(m, dtype=e.dtype, device=x.device)
    for rows in _row_chunks(m, min(k, BLOCK_K)):
        xr = x[rows].to(e.dtype)
        xs = xr - centre

        def tile(k0: int, xs: torch.Tensor = xs) -> tuple[torch.Tensor, torch.Tensor]:
            """The best score and its index among codes k0 .. k0 + BLOCK_K - 1."""
            score = torch.addmm(h[k0 : k0 + BLOCK_K], xs, ec[k0 : k0 + BLOCK_K].T, alpha=-1.0)
            tile_idx = score.argmin(1)  # documented to return the first minimum
            return score.gather(1, tile_idx[:, None])[:, 0], tile_idx + k0

        best, best_idx = tile(0)
        for k0 in range(BLOCK_K, k, BLOCK_K):
            tile_best, tile_idx = tile(k0)
            better = tile_best < best
            best = torch.where(better, tile_best, best)
            best_idx = torch.where(better, tile_idx, best_idx)
        idx[rows] = best_idx
        sq[rows] = (xr - e[best_idx]).square_().sum(1)
    return idx, sq


class _SquaredDistance(torch.autograd.Function):
    """sq[m] = |x[m] - codebook[idx[m]]|^2, computed directly (no cancellation), chunk by chunk
    so that no [M, D] temporary is made beyond the gradient itself. ``sq`` may be given when the
    search computed it already."""

    @staticmethod
    def forward(ctx, x, codebook, idx, sq):
        cdt = compute_dtype(x.dtype)
        if sq is None:
            sq = torch.empty(x.shape[0], dtype=cdt, device=x.device)
            for rows in _row_chunks(x.shape[0], x.shape[1]):
                sq[rows] = (x[rows].to(cdt) - codebook[idx[rows]].to(cdt)).square_().sum(1)
        ctx.save_for_backward(x, codebook, idx)
        return sq.to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        x, codebook, idx = ctx.saved_tensors
        need_x, need_e = ctx.needs_input_grad[:2]
        cdt = compute_dtype(x.dtype)
        gx = torch.empty_like(x) if need_x else None
        ge = torch.zeros(codebook.shape, dtype=cdt, device=x.device) if need_e else None
        for rows in _row_chunks(x.shape[0], x.shape[1]):
            diff = x[rows].to(cdt) - codebook[idx[rows]].to(cdt)
            t = diff.mul_(2.0 * g[rows, None].to(cdt))
            if gx is not None:
                gx[rows] = t
            if ge is not None:
                ge.index_add_(0, idx[rows], t, alpha=-1.0)
        return gx, None if ge is None else ge.to(codebook.dtype), None, None


def _centre(e: torch.Tensor) -> torch.Tensor:
    """A shift for the expanded form: 0 unless the codebook sits far from the origin (its mean
    beyond 4 spreads), else its mean rounded to a multiple of a power of two q <= the spread.

    Rounding keeps exact arithmetic exact: codebooks and queries on a grid (integers, say) stay on
    it after the shift, so exactly tied distances stay exactly tied and go to the lowest index.
    The remaining offset is below q, so the cancellation stays of the order of the spread.
    """
    mean = e.mean(0)
    spread = (e - mean).square().mean().sqrt()
    if not bool(mean.abs().max() > 4 * spread):
        return torch.zeros_like(mean)
    if spread == 0:
        return mean
    q = 2.0 ** torch.floor(torch.log2(spread))
    return torch.round(mean / q) * q


def _first_duplicate(codebook: torch.Tensor) -> torch.Tensor:
    """[K] int64: for every row, the lowest index of a row equal to it (itself if unique)."""
    k = codebook.shape[0]
    _, inverse = torch.unique(codebook, dim=0, return_inverse=True)
    arange = torch.arange(k, device=codebook.device)
    first = torch.full((k,), k, dtype=torch.int64, device=codebook.device)
    first = first.scatter_reduce(0, inverse, arange, reduce="amin")
    return first[inverse]
