"""Units of log-likelihoods: nats (natural logarithms, the course's default) and bits per
dimension, and the change of variables between rescaled and integer pixel units."""

from __future__ import annotations

import math

from torch import Tensor

from dgmlib.validation import check_int

__all__ = ["bits_per_dim_to_nats", "log_density_to_integer_units", "nats_to_bits_per_dim"]


def nats_to_bits_per_dim(nats: Tensor | float, num_dims: int) -> Tensor | float:
    """A negative log-likelihood in nats (per example, all ``num_dims`` together) in bits/dim."""
    check_int(num_dims, "num_dims", "nats_to_bits_per_dim")
    return nats / (num_dims * math.log(2.0))


def bits_per_dim_to_nats(bpd: Tensor | float, num_dims: int) -> Tensor | float:
    """Inverse of :func:`nats_to_bits_per_dim`."""
    check_int(num_dims, "num_dims", "bits_per_dim_to_nats")
    return bpd * num_dims * math.log(2.0)


def log_density_to_integer_units(
    log_p_unit: Tensor | float, num_dims: int, num_levels: int
) -> Tensor | float:
    """Change of variables from data rescaled by ``1 / num_levels`` back to integer units.

    If ``y = (x + u) / K`` has density ``p_Y``, then ``x + u = K y`` has density
    ``p_Y(y) / K^D``, so ``log p(x + u) = log p_Y(y) - D log K``.
    """
    check_int(num_dims, "num_dims", "log_density_to_integer_units")
    check_int(num_levels, "num_levels", "log_density_to_integer_units", low=2)
    return log_p_unit - num_dims * math.log(num_levels)
