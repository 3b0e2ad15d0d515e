"""Input validation shared by every module: one message style, one switch to turn it off.

A wrong *type* raises ``TypeError``, a wrong *value* (shape, range, NaN) raises ``ValueError``;
both name the function and the argument. Validation costs a little on hot paths (a NaN scan is a
full pass over a tensor), so, as ``torch.distributions.Distribution.set_default_validate_args``
does, :func:`set_validation` turns the value checks off globally (those of dgmlib and, through
that very switch, those of the torch distributions dgmlib computes with); type checks stay on.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution

__all__ = [
    "check_choice",
    "check_int",
    "check_positive",
    "check_tensor",
    "set_validation",
    "validation_enabled",
]

_ENABLED = True


def set_validation(enabled: bool) -> None:
    """Turn the value checks (shapes, ranges, NaN scans) on or off for the whole process, and
    ``torch.distributions``' argument validation with them."""
    global _ENABLED
    if not isinstance(enabled, bool):
        raise TypeError(f"set_validation: enabled must be a bool, got {type(enabled).__name__}")
    _ENABLED = enabled
    Distribution.set_default_validate_args(enabled)


def validation_enabled() -> bool:
    """Whether value checks run (see :func:`set_validation`)."""
    return _ENABLED


def check_tensor(x: Any, name: str, where: str, min_ndim: int = 1) -> Tensor:
    """Return ``x`` if it is a floating tensor with >= ``min_ndim`` dims and no NaN; else raise."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{where}: {name} must have a floating dtype, got {x.dtype}")
    if not _ENABLED:
        return x
    if x.dim() < min_ndim:
        raise ValueError(
            f"{where}: {name} must have at least {min_ndim} dimension(s), got shape "
            f"{tuple(x.shape)}"
        )
    if torch.isnan(x).any():
        raise ValueError(f"{where}: {name} contains NaN")
    return x


def check_int(value: Any, name: str, where: str, low: int = 1) -> int:
    """Return ``value`` if it is an integer (not a bool) >= ``low``; else raise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{where}: {name} must be an integer >= {low}, got {value!r}")
    if value < low:
        raise ValueError(f"{where}: {name} must be an integer >= {low}, got {value!r}")
    return value


def check_positive(value: Any, name: str, where: str, allow_zero: bool = False) -> float:
    """Return ``value`` as a float if it is a finite real number > 0 (>= 0 with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{where}: {name} must be a real number, got {value!r}")
    ok = value >= 0 if allow_zero else value > 0
    if not (ok and math.isfinite(value)):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{where}: {name} must be finite and {bound}, got {value!r}")
    return float(value)


def check_choice(value: Any, name: str, where: str, choices: Collection[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``; else a ValueError listing them."""
    if value not in choices:
        raise ValueError(f"{where}: {name} must be one of {tuple(choices)}, got {value!r}")
    return value
