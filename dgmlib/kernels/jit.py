"""Triton kernels and their launchers. Loaded lazily by ``backend.triton_kernels()``.

Conventions shared by every kernel:

- program ids are cast to int64 before they are multiplied by a stride, so tensors with more than
  2**31 elements are addressed correctly;
- every load and store is masked (the interpreter does not catch out-of-bounds accesses);
- half-precision inputs are converted to float32 by the Python wrappers before launch, so kernels
  compute in float32 (or float64 when given float64) and never do bf16 arithmetic;
- a running maximum that is still ``-inf`` is replaced by 0 before it is subtracted, so a tile of
  all ``-inf`` logits contributes ``exp(-inf) = 0`` instead of ``exp(nan)``.

The pairwise kernels compute ``s[m, n] = c[n] + <a[m], b[n]>`` tile by tile with ``tl.dot`` (the
mixture log-density and the codebook distance are both of this form after the quadratic form is
expanded, see ``mixture.py`` and ``vq.py``) and reduce over ``n`` without storing ``s``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from dgmlib.kernels.backend import interpret_mode

MAX_FEATURES = 512  # the feature dimension of a pairwise kernel is held in one register tile


def _pow2(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(int(n), 1))))


def _precision(dtype: torch.dtype, device: torch.device) -> str:
    """``tl.dot`` input precision: exact float32 products ("ieee") in the interpreter and for
    float64; on Ampere and newer GPUs "tf32x3" (three TF32 tensor-core products, accurate to about
    float32 rounding, unlike plain "tf32" which keeps only 10 mantissa bits)."""
    if dtype == torch.float64 or interpret_mode() or device.type != "cuda":
        return "ieee"
    major, _ = torch.cuda.get_device_capability(device)
    return "tf32x3" if major >= 8 else "ieee"


def _pairwise_config(m: int, n: int, k: int, dtype: torch.dtype) -> dict[str, int]:
    block_k = _pow2(k, 16, MAX_FEATURES)
    if interpret_mode():  # each program costs milliseconds: few, large programs
        return dict(BLOCK_M=_pow2(m, 16, 128), BLOCK_N=_pow2(n, 16, 256), BLOCK_K=block_k)
    if dtype == torch.float64:
        return dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=block_k, num_warps=4, num_stages=2)
    big = block_k > 128
    return dict(
        BLOCK_M=64,
        BLOCK_N=32 if big else 64,
        BLOCK_K=block_k,
        num_warps=8 if big else 4,
        num_stages=2,
    )


# ----------------------------------------------------------------------------------------------
# Building blocks shared by the kernels
# ----------------------------------------------------------------------------------------------


@triton.jit
def span(start, BLOCK: tl.constexpr, n):
    """int64 offsets ``start .. start + BLOCK - 1`` and the mask of those below ``n``."""
    offs = start + tl.arange(0, BLOCK).to(tl.int64)
    return offs, offs < n


@triton.jit
def tile_ptrs(P, rows, mask_rows, cols, mask_cols, stride_row, stride_col):
    """Pointers to ``P[rows, cols]`` (a ``[len(rows), len(cols)]`` tile) and its mask."""
    ptrs = P + rows[:, None] * stride_row + cols[None, :] * stride_col
    return ptrs, mask_rows[:, None] & mask_cols[None, :]


@triton.jit
def load_tile(P, rows, mask_rows, cols, mask_cols, stride_row, stride_col):
    """``P[rows, cols]`` with zeros outside the masks."""
    ptrs, mask = tile_ptrs(P, rows, mask_rows, cols, mask_cols, stride_row, stride_col)
    return tl.load(ptrs, mask=mask, other=0.0)


@triton.jit
def store_tile(P, value, rows, mask_rows, cols, mask_cols, stride_row, stride_col):
    """``P[rows, cols] = value`` inside the masks."""
    ptrs, mask = tile_ptrs(P, rows, mask_rows, cols, mask_cols, stride_row, stride_col)
    tl.store(ptrs, value, mask=mask)


@triton.jit
def online_lse_update(m_i, l_i, s):
    """One tile ``s [R, T]`` of a running log-sum-exp over rows: new maximum and sum."""
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    return m_new, l_i * tl.exp(m_i - m_safe) + tl.sum(tl.exp(s - m_safe[:, None]), 1)


@triton.jit
def online_lse_result(m_i, l_i):
    """``m + log l``; ``-inf`` where every logit was ``-inf`` (``l = 0``, log(0) never taken)."""
    return tl.where(l_i > 0, m_i + tl.log(tl.where(l_i > 0, l_i, 1.0)), float("-inf"))


@triton.jit
def pairwise_logits(
    a, B, C, offs_n, mask_n, offs_k, mask_k, stride_bn, stride_bk, PRECISION: tl.constexpr
):
    """``s[m, n] = c[n] + <a[m], b[n]>`` for one n-tile (``-inf`` at masked n), and ``b^T``."""
    bt = load_tile(B, offs_k, mask_k, offs_n, mask_n, stride_bk, stride_bn)
    c = tl.load(C + offs_n, mask=mask_n, other=float("-inf"))
    s = tl.dot(a, bt, input_precision=PRECISION, out_dtype=a.dtype) + c[None, :]
    return tl.where(mask_n[None, :], s, float("-inf")), bt


@triton.jit
def log_normalizers(OUT, G, offs_m, mask_m):
    """The forward pass's ``out[m]`` (``+inf`` for an all ``-inf`` row, so ``r = 0`` there and
    not nan) and the incoming gradient ``g[m]`` (0 at masked m)."""
    out = tl.load(OUT + offs_m, mask=mask_m, other=float("inf"))
    out = tl.where(out == float("-inf"), float("inf"), out)
    return out, tl.load(G + offs_m, mask=mask_m, other=0.0)


# ----------------------------------------------------------------------------------------------
# Pairwise log-sum-exp: out[m] = log sum_n exp(c[n] + <a[m], b[n]>)
# ----------------------------------------------------------------------------------------------


@triton.jit
def blse_fwd_kernel(
    A, B, C, OUT,
    M, N, K,
    stride_am, stride_ak, stride_bn, stride_bk,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    offs_m, mask_m = span(tl.program_id(0).to(tl.int64) * BLOCK_M, BLOCK_M, M)
    offs_k, mask_k = span(0, BLOCK_K, K)
    a = load_tile(A, offs_m, mask_m, offs_k, mask_k, stride_am, stride_ak)
    m_i = tl.full([BLOCK_M], float("-inf"), a.dtype)  # running max
    l_i = tl.zeros([BLOCK_M], a.dtype)  # running sum of exp(s - m_i)
    for start in range(0, N, BLOCK_N):
        offs_n, mask_n = span(start, BLOCK_N, N)
        s, _ = pairwise_logits(
            a, B, C, offs_n, mask_n, offs_k, mask_k, stride_bn, stride_bk, PRECISION
        )
        m_i, l_i = online_lse_update(m_i, l_i, s)
    tl.store(OUT + offs_m, online_lse_result(m_i, l_i), mask=mask_m)


@triton.jit
def blse_bwd_a_kernel(
    A, B, C, OUT, G, GA,
    M, N, K,
    stride_am, stride_ak, stride_bn, stride_bk, stride_gam, stride_gak,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """ga[m] = sum_n g[m] r[m, n] b[n], r = exp(s - out): the responsibilities, recomputed."""
    offs_m, mask_m = span(tl.program_id(0).to(tl.int64) * BLOCK_M, BLOCK_M, M)
    offs_k, mask_k = span(0, BLOCK_K, K)
    a = load_tile(A, offs_m, mask_m, offs_k, mask_k, stride_am, stride_ak)
    out, g = log_normalizers(OUT, G, offs_m, mask_m)
    acc = tl.zeros([BLOCK_M, BLOCK_K], a.dtype)
    for start in range(0, N, BLOCK_N):
        offs_n, mask_n = span(start, BLOCK_N, N)
        s, bt = pairwise_logits(
            a, B, C, offs_n, mask_n, offs_k, mask_k, stride_bn, stride_bk, PRECISION
        )
        w = tl.exp(s - out[:, None]) * g[:, None]
        acc = tl.dot(w, tl.trans(bt), acc, input_precision=PRECISION, out_dtype=a.dtype)
    store_tile(GA, acc, offs_m, mask_m, offs_k, mask_k, stride_gam, stride_gak)


@triton.jit
def blse_bwd_b_kernel(
    A, B, C, OUT, G, GB, GC,
    M, N, K,
    stride_am, stride_ak, stride_bn, stride_bk, stride_gbn, stride_gbk,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """gb[n] = sum_m g[m] r[m, n] a[m] and gc[n] = sum_m g[m] r[m, n], one program per n-tile."""
    offs_n, mask_n = span(tl.program_id(0).to(tl.int64) * BLOCK_N, BLOCK_N, N)
    offs_k, mask_k = span(0, BLOCK_K, K)
    b = load_tile(B, offs_n, mask_n, offs_k, mask_k, stride_bn, stride_bk)
    c = tl.load(C + offs_n, mask=mask_n, other=float("-inf"))
    acc = tl.zeros([BLOCK_N, BLOCK_K], b.dtype)
    acc_c = tl.zeros([BLOCK_N], b.dtype)
    for start in range(0, M, BLOCK_M):
        offs_m, mask_m = span(start, BLOCK_M, M)
        a = load_tile(A, offs_m, mask_m, offs_k, mask_k, stride_am, stride_ak)
        out, g = log_normalizers(OUT, G, offs_m, mask_m)
        st = tl.dot(b, tl.trans(a), input_precision=PRECISION, out_dtype=b.dtype) + c[:, None]
        st = tl.where(mask_n[:, None], st, float("-inf"))
        wt = tl.exp(st - out[None, :]) * g[None, :]  # [BLOCK_N, BLOCK_M]; masked m: g = 0
        acc = tl.dot(wt, a, acc, input_precision=PRECISION, out_dtype=b.dtype)
        acc_c += tl.sum(wt, 1)
    store_tile(GB, acc, offs_n, mask_n, offs_k, mask_k, stride_gbn, stride_gbk)
    tl.store(GC + offs_n, acc_c, mask=mask_n)


def blse_forward(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """out[m] = logsumexp_n(c[n] + a[m] . b[n]); a [M, K], b [N, K], c [N], one float dtype."""
    m, k = a.shape
    n = b.shape[0]
    out = torch.empty(m, dtype=a.dtype, device=a.device)
    if m == 0:
        return out
    cfg = _pairwise_config(m, n, k, a.dtype)
    grid = (triton.cdiv(m, cfg["BLOCK_M"]),)
    blse_fwd_kernel[grid](
        a, b, c.contiguous(), out, m, n, k,
        a.stride(0), a.stride(1), b.stride(0), b.stride(1),
        PRECISION=_precision(a.dtype, a.device), **cfg,
    )  # fmt: skip
    return out


def blse_backward(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, out: torch.Tensor, g: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of ``sum_m g[m] out[m]`` with respect to a, b and c (two kernels, no atomics)."""
    m, k = a.shape
    n = b.shape[0]
    c, out, g = c.contiguous(), out.contiguous(), g.contiguous()
    ga = torch.zeros_like(a)
    gb = torch.zeros_like(b)
    gc = torch.zeros_like(c)
    if m == 0 or n == 0:
        return ga, gb, gc
    cfg = _pairwise_config(m, n, k, a.dtype)
    prec = _precision(a.dtype, a.device)
    blse_bwd_a_kernel[(triton.cdiv(m, cfg["BLOCK_M"]),)](
        a, b, c, out, g, ga, m, n, k,
        a.stride(0), a.stride(1), b.stride(0), b.stride(1), ga.stride(0), ga.stride(1),
        PRECISION=prec, **cfg,
    )  # fmt: skip
    blse_bwd_b_kernel[(triton.cdiv(n, cfg["BLOCK_N"]),)](
        a, b, c, out, g, gb, gc, m, n, k,
        a.stride(0), a.stride(1), b.stride(0), b.stride(1), gb.stride(0), gb.stride(1),
        PRECISION=prec, **cfg,
    )  # fmt: skip
    return ga, gb, gc


# ----------------------------------------------------------------------------------------------
# Nearest codebook row: idx[m] = argmin_n (h[n] - <x[m], e[n]>), h = |e|^2 / 2
# ----------------------------------------------------------------------------------------------


@triton.jit
def vq_argmin_kernel(
    X, E, H, IDX,
    M, N, K,
    stride_xm, stride_xk, stride_en, stride_ek,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    offs_m, mask_m = span(tl.program_id(0).to(tl.int64) * BLOCK_M, BLOCK_M, M)
    offs_k, mask_k = span(0, BLOCK_K, K)
    x = load_tile(X, offs_m, mask_m, offs_k, mask_k, stride_xm, stride_xk)
    best = tl.full([BLOCK_M], float("inf"), x.dtype)
    best_idx = tl.zeros([BLOCK_M], tl.int64)
    for start in range(0, N, BLOCK_N):
        offs_n, mask_n = span(start, BLOCK_N, N)
        et = load_tile(E, offs_k, mask_k, offs_n, mask_n, stride_ek, stride_en)
        h = tl.load(H + offs_n, mask=mask_n, other=float("inf"))
        score = h[None, :] - tl.dot(x, et, input_precision=PRECISION, out_dtype=x.dtype)
        score = tl.where(mask_n[None, :], score, float("inf"))
        tile_best, tile_idx = tl.min(
            score, 1, return_indices=True, return_indices_tie_break_left=True
        )
        better = tile_best < best  # strict: on a tie the earlier tile (lower index) wins
        best_idx = tl.where(better, tile_idx.to(tl.int64) + start, best_idx)
        best = tl.where(better, tile_best, best)
    tl.store(IDX + offs_m, best_idx, mask=mask_m)


def vq_argmin(x: torch.Tensor, e: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """argmin_n (h[n] - x[m] . e[n]) as int64 [M], lowest index on ties."""
    m, k = x.shape
    n = e.shape[0]
    idx = torch.empty(m, dtype=torch.int64, device=x.device)
    if m == 0:
        return idx
    cfg = _pairwise_config(m, n, k, x.dtype)
    vq_argmin_kernel[(triton.cdiv(m, cfg["BLOCK_M"]),)](
        x, e, h.contiguous(), idx, m, n, k,
        x.stride(0), x.stride(1), e.stride(0), e.stride(1),
        PRECISION=_precision(x.dtype, x.device), **cfg,
    )  # fmt: skip
    return idx


# ----------------------------------------------------------------------------------------------
# Row-wise kernels on a contiguous [R, C] tensor
# ----------------------------------------------------------------------------------------------


def _rowwise_config(r: int, c: int) -> dict[str, int]:
    if interpret_mode():
        block_c = _pow2(c, 16, 4096)
        return dict(BLOCK_R=_pow2(r, 1, max(1, 65536 // block_c)), BLOCK_C=block_c)
    block_c = _pow2(c, 16, 1024)
    return dict(BLOCK_R=max(1, 2048 // block_c), BLOCK_C=block_c, num_warps=4)


@triton.jit
def row_block(R, BLOCK_R: tl.constexpr):
    """This program's rows (int64) and their mask."""
    return span(tl.program_id(0).to(tl.int64) * BLOCK_R, BLOCK_R, R)


@triton.jit
def row_tile(rows, mask_r, start, BLOCK_C: tl.constexpr, C):
    """Flat offsets of ``[rows, start:start + BLOCK_C]`` in a contiguous ``[R, C]`` tensor and
    the tile's mask."""
    cols, mask_c = span(start, BLOCK_C, C)
    return tile_ptrs(0, rows, mask_r, cols, mask_c, C, 1)


@triton.jit
def lme_fwd_kernel(
    X, LSE, W, R, C,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    rows, mask_r = row_block(R, BLOCK_R)
    m_i = tl.full([BLOCK_R], float("-inf"), X.dtype.element_ty)
    l_i = tl.zeros([BLOCK_R], X.dtype.element_ty)
    for start in range(0, C, BLOCK_C):
        offs, mask = row_tile(rows, mask_r, start, BLOCK_C, C)
        m_i, l_i = online_lse_update(m_i, l_i, tl.load(X + offs, mask=mask, other=float("-inf")))
    lse = online_lse_result(m_i, l_i)
    tl.store(LSE + rows, lse, mask=mask_r)
    lse_safe = tl.where(lse == float("-inf"), float("inf"), lse)  # all -inf row: weights 0
    for start in range(0, C, BLOCK_C):
        offs, mask = row_tile(rows, mask_r, start, BLOCK_C, C)
        x = tl.load(X + offs, mask=mask, other=float("-inf"))
        tl.store(W + offs, tl.exp(x - lse_safe[:, None]), mask=mask)


@triton.jit
def lme_bwd_kernel(
    W, G_LME, G_W, GX, R, C,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """gx = w * (g_lme + g_w - sum_c w g_w): the softmax Jacobian plus d lme / d x = w."""
    rows, mask_r = row_block(R, BLOCK_R)
    dot = tl.zeros([BLOCK_R], W.dtype.element_ty)
    for start in range(0, C, BLOCK_C):
        offs, mask = row_tile(rows, mask_r, start, BLOCK_C, C)
        w = tl.load(W + offs, mask=mask, other=0.0)
        dot += tl.sum(w * tl.load(G_W + offs, mask=mask, other=0.0), 1)
    shift = tl.load(G_LME + rows, mask=mask_r, other=0.0) - dot
    for start in range(0, C, BLOCK_C):
        offs, mask = row_tile(rows, mask_r, start, BLOCK_C, C)
        w = tl.load(W + offs, mask=mask, other=0.0)
        gw = tl.load(G_W + offs, mask=mask, other=0.0)
        tl.store(GX + offs, w * (gw + shift[:, None]), mask=mask)


def lse_forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise log-sum-exp and normalized weights (softmax) of a contiguous [R, C] tensor."""
    r, c = x.shape
    lse = torch.empty(r, dtype=x.dtype, device=x.device)
    w = torch.empty_like(x)
    if r == 0:
        return lse, w
    cfg = _rowwise_config(r, c)
    lme_fwd_kernel[(triton.cdiv(r, cfg["BLOCK_R"]),)](x, lse, w, r, c, **cfg)
    return lse, w


def lse_backward(w: torch.Tensor, g_lme: torch.Tensor, g_w: torch.Tensor) -> torch.Tensor:
    r, c = w.shape
    gx = torch.empty_like(w)
    if r == 0:
        return gx
    cfg = _rowwise_config(r, c)
    lme_bwd_kernel[(triton.cdiv(r, cfg["BLOCK_R"]),)](
        w, g_lme.contiguous(), g_w.contiguous(), gx, r, c, **cfg
    )
    return gx


@triton.jit
def reparam_fwd_kernel(
    MU, LOGVAR, EPS, Z, KL, R, C,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """z = mu + exp(logvar / 2) eps; kl = sum_c (mu^2 + exp(logvar) - 1 - logvar) / 2."""
    rows, mask_r = row_block(R, BLOCK_R)
    kl = tl.zeros([BLOCK_R], MU.dtype.element_ty)
    for start in range(0, C, BLOCK_C):
        offs, mask = row_tile(rows, mask_r, start, BLOCK_C, C)
        mu = tl.load(MU + offs, mask=mask, other=0.0)
        lv = tl.load(LOGVAR + offs, mask=mask, other=0.0)
        std = tl.exp(0.5 * lv)
        tl.store(Z + offs, mu + std * tl.load(EPS + offs, mask=mask, other=0.0), mask=mask)
        kl += tl.sum(tl.where(mask, mu * mu + std * std - 1.0 - lv, 0.0), 1)
    tl.store(KL + rows, 0.5 * kl, mask=mask_r)


@triton.jit
def reparam_bwd_kernel(
    MU, LOGVAR, EPS, G_Z, G_KL, G_MU, G_LOGVAR, G_EPS, R, C,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    rows, mask_r = row_block(R, BLOCK_R)
    g_kl = tl.load(G_KL + rows, mask=mask_r, other=0.0)
    for start in range(0, C, BLOCK_C):
        offs, mask = row_tile(rows, mask_r, start, BLOCK_C, C)
        mu = tl.load(MU + offs, mask=mask, other=0.0)
        lv = tl.load(LOGVAR + offs, mask=mask, other=0.0)
        eps = tl.load(EPS + offs, mask=mask, other=0.0)
        gz = tl.load(G_Z + offs, mask=mask, other=0.0)
        std = tl.exp(0.5 * lv)
        tl.store(G_MU + offs, gz + g_kl[:, None] * mu, mask=mask)
        g_lv = 0.5 * gz * std * eps + 0.5 * g_kl[:, None] * (std * std - 1.0)
        tl.store(G_LOGVAR + offs, g_lv, mask=mask)
        tl.store(G_EPS + offs, gz * std, mask=mask)


def reparam_forward(
    mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    r, c = mu.shape
    z = torch.empty_like(mu)
    kl = torch.empty(r, dtype=mu.dtype, device=mu.device)
    if r == 0:
        return z, kl
    cfg = _rowwise_config(r, c)
    reparam_fwd_kernel[(triton.cdiv(r, cfg["BLOCK_R"]),)](mu, logvar, eps, z, kl, r, c, **cfg)
    return z, kl


def reparam_backward(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    eps: torch.Tensor,
    g_z: torch.Tensor,
    g_kl: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r, c = mu.shape
    g_mu, g_lv, g_eps = torch.empty_like(mu), torch.empty_like(mu), torch.empty_like(mu)
    if r == 0:
        return g_mu, g_lv, g_eps
    cfg = _rowwise_config(r, c)
    reparam_bwd_kernel[(triton.cdiv(r, cfg["BLOCK_R"]),)](
        mu, logvar, eps, g_z.contiguous(), g_kl.contiguous(), g_mu, g_lv, g_eps, r, c, **cfg
    )
    return g_mu, g_lv, g_eps
