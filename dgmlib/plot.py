"""Shared figure helpers: one look for every lecture (readable sizes, labelled axes, grids)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
import torch

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

STYLE: dict[RcKeyType, Any] = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 10,
    "figure.constrained_layout.use": True,
}


def use_style() -> None:
    """Apply the course's matplotlib style (called once in each notebook's set-up cell)."""
    plt.rcParams.update(STYLE)


def _to_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def image_grid(
    images: torch.Tensor | np.ndarray,
    nrow: int = 8,
    ax: plt.Axes | None = None,
    title: str | None = None,
    cmap: str = "gray",
) -> plt.Axes:
    """Show images [N,H,W] (values in [0,1] or uint8) as a grid with ``nrow`` images per row."""
    arr = _to_numpy(images).astype(np.float32)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 3:
        raise ValueError(
            f"image_grid: images must have shape [N,H,W] or [N,1,H,W], got {arr.shape}"
        )
    if arr.max() > 1.0:
        arr = arr / 255.0
    n, h, w = arr.shape
    ncol = min(nrow, n)
    nrows = -(-n // ncol)
    canvas = np.ones((nrows * (h + 1) - 1, ncol * (w + 1) - 1), dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, ncol)
        canvas[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = arr[i]
    if ax is None:
        _, ax = plt.subplots(figsize=(min(1.0 * ncol, 12), min(1.0 * nrows, 12)))
    ax.imshow(canvas, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def image_rows(
    rows: Sequence[tuple[torch.Tensor | np.ndarray, str]],
    nrow: int,
    figsize: tuple[float, float],
) -> plt.Figure:
    """A figure of one :func:`image_grid` per ``(images, title)`` of ``rows``, stacked top to
    bottom, ``nrow`` images per grid row."""
    if not rows:
        raise ValueError("image_rows: rows must hold at least one (images, title) pair")
    fig, axes = plt.subplots(len(rows), 1, figsize=figsize, squeeze=False)
    for ax, (images, title) in zip(axes[:, 0], rows, strict=True):
        image_grid(images, nrow=nrow, ax=ax, title=title)
    return fig


def plot_history(
    history: Mapping[str, Sequence[float]],
    keys: Sequence[str] | None = None,
    ax: plt.Axes | None = None,
    xlabel: str = "step",
    ylabel: str = "nats",
) -> plt.Axes:
    """Plot named training curves (a trainer's ``history``) against its ``"step"`` on one
    labelled axis; ``keys=None`` plots every term (not the ``"step"`` and ``"epoch"`` counters)."""
    keys = list(keys) if keys is not None else [k for k in history if k not in ("step", "epoch")]
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    x = history.get("step")
    for k in keys:
        y = np.asarray(history[k], dtype=float)
        ax.plot(x if x is not None and len(x) == len(y) else np.arange(len(y)), y, label=k)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend()
    return ax
