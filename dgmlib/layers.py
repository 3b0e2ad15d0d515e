"""Building blocks shared by the models: an MLP, the reparametrization trick, batch flattening."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from dgmlib.validation import check_int, check_tensor

__all__ = ["MNIST_SHAPE", "flatten_batch", "mlp", "reparameterize", "shape_tuple"]

#: The shape of one Fashion-MNIST image as the models see it: ``[1, 28, 28]``.
MNIST_SHAPE = (1, 28, 28)


def shape_tuple(x_shape: int | Sequence[int]) -> tuple[int, ...]:
    """``x_shape`` as a tuple of positive ints (an int means a flat vector)."""
    shape = (x_shape,) if isinstance(x_shape, int) else tuple(int(s) for s in x_shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(
            f"x_shape must be a positive int or a tuple of positive ints, got {x_shape}"
        )
    return shape


def mlp(
    in_dim: int,
    hidden: int,
    out_dim: int,
    n_hidden_layers: int = 2,
    activation: type[nn.Module] = nn.Tanh,
) -> nn.Sequential:
    """``in_dim -> hidden -> ... -> out_dim`` with ``n_hidden_layers`` hidden layers (0: linear)."""
    check_int(n_hidden_layers, "n_hidden_layers", "mlp", low=0)
    layers: list[nn.Module] = []
    d = in_dim
    for _ in range(n_hidden_layers):
        layers += [nn.Linear(d, hidden), activation()]
        d = hidden
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


def reparameterize(
    mu: Tensor, logvar: Tensor, K: int | None = None, generator: torch.Generator | None = None
) -> Tensor:
    """``z = mu + exp(logvar / 2) * eps``, ``eps ~ N(0, I)``: ``[B, Z]``, or ``[K, B, Z]`` given K.

    Differentiable in ``mu`` and ``logvar`` (the reparametrization trick); ``eps`` has the dtype
    and device of ``mu``.
    """
    shape = mu.shape if K is None else (K, *mu.shape)
    eps = torch.randn(shape, generator=generator, dtype=mu.dtype, device=mu.device)
    return mu + torch.exp(0.5 * logvar) * eps


def flatten_batch(x: Tensor, x_dim: int, where: str) -> Tensor:
    """``x [B, ...]`` -> ``[B, x_dim]``; a ValueError naming ``x`` when the sizes do not match."""
    check_tensor(x, "x", where)
    if x[0].numel() != x_dim:
        raise ValueError(
            f"{where}: x must hold {x_dim} values per example, got shape {tuple(x.shape)}"
        )
    return x.reshape(x.shape[0], x_dim)
