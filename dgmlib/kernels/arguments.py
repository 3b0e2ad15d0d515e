"""Argument checks shared by the kernels: shapes, dtypes, devices, finiteness, with clear errors."""

from __future__ import annotations

from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; float32, float16 and bfloat16 are computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_tensor(op: str, name: str, t: object, shape: str, ndim: int | None = None) -> None:
    """``t`` is a floating torch.Tensor with ``ndim`` dimensions (``shape`` names them)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: `{name}` must be a torch.Tensor {shape}, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{op}: `{name}` must have shape {shape}, got {list(t.shape)}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{op}: `{name}` must be float16, bfloat16, float32 or float64, got {t.dtype}"
        )


def check_shape(op: str, name: str, t: torch.Tensor, expected: Sequence[int], what: str) -> None:
    """``t.shape == expected``, else a ValueError saying which shape (``what``, e.g. "the shape of
    `mu`") and its sizes."""
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"{op}: `{name}` must have {what}, {list(expected)}, got {list(t.shape)}")


def check_same(op: str, ref_name: str, ref: torch.Tensor, **others: torch.Tensor | None) -> None:
    """Every tensor in ``others`` has the dtype and device of ``ref``."""
    for name, t in others.items():
        if t is None:
            continue
        if t.dtype != ref.dtype:
            raise TypeError(
                f"{op}: `{name}` has dtype {t.dtype} but `{ref_name}` has {ref.dtype}; "
                "convert them to one floating dtype"
            )
        if t.device != ref.device:
            raise ValueError(
                f"{op}: `{name}` is on {t.device} but `{ref_name}` is on {ref.device}; "
                "move them to one device"
            )


def check_finite(op: str, name: str, t: torch.Tensor, *, allow_neg_inf: bool = False) -> None:
    """Reject NaN (and infinities, except ``-inf`` when allowed).

    A finite sum proves every entry finite, so the usual case costs one reduction and no
    temporary; otherwise the entries are checked chunk by chunk (``torch.isfinite`` alone would
    build temporaries the size of ``t``).
    """
    with torch.no_grad():
        if t.numel() == 0 or bool(torch.isfinite(t.sum(dtype=compute_dtype(t.dtype)))):
            return
        bad = False
        for chunk in t.reshape(-1).split(1 << 20):
            if allow_neg_inf:
                bad = bool((torch.isnan(chunk) | (chunk == float("inf"))).any())
            else:
                bad = not bool(torch.isfinite(chunk).all())
            if bad:
                break
    if bad:
        what = "NaN or +inf" if allow_neg_inf else "NaN or infinite values"
        raise ValueError(f"{op}: `{name}` contains {what}")
