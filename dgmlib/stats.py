"""Summaries with their uncertainty, and the one number format the notebooks print."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dgmlib.validation import check_int, check_tensor

__all__ = ["fmt", "mean_se"]


def mean_se(x: Tensor) -> tuple[float, float]:
    """Mean of the values of ``x`` (any shape, >= 2 values) and its standard error
    ``std / sqrt(n)`` (sample standard deviation, ``n - 1`` in the denominator), in x's units."""
    check_tensor(x, "x", "mean_se", min_ndim=0)
    v = x.detach().reshape(-1).to(torch.float64)
    if v.numel() < 2:
        raise ValueError(f"mean_se: x must hold at least 2 values, got {v.numel()}")
    return float(v.mean()), float(v.std() / math.sqrt(v.numel()))


def fmt(v: float, digits: int = 4, decimals: bool = False) -> str:
    """``v`` with ``digits`` significant digits (``decimals=True``: ``digits`` decimals), and
    never a ``-0``: few enough digits that another CPU prints the same text."""
    check_int(digits, "digits", "fmt", low=0 if decimals else 1)
    v = float(v)
    if decimals:
        return f"{round(v, digits) + 0.0:.{digits}f}"
    return f"{v + 0.0:.{digits}g}"
