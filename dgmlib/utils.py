"""Reproducibility and device helpers: seeds, thread count, device choice."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from dgmlib.validation import check_int

DEFAULT_THREADS = 2


def set_threads(n: int | None = None) -> int:
    """Fix torch's intra-op thread count (``DGMLIB_THREADS`` or 2) so outputs are reproducible."""
    if n is None:
        n = int(os.environ.get("DGMLIB_THREADS", DEFAULT_THREADS))
    check_int(n, "n", "set_threads")
    torch.set_num_threads(n)
    return n


def seed_everything(seed: int = 0, threads: int | None = None) -> torch.Generator:
    """Seed Python, NumPy and torch, fix the thread count; return a torch.Generator seeded alike."""
    check_int(seed, "seed", "seed_everything", low=0)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    set_threads(threads)
    return torch.Generator().manual_seed(seed)


def get_device(name: str | None = None) -> torch.device:
    """The device to compute on: ``name``, else ``$DGMLIB_DEVICE``, else CPU (never auto-CUDA)."""
    name = name or os.environ.get("DGMLIB_DEVICE", "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"DGMLIB_DEVICE={name!r} asks for CUDA but torch.cuda.is_available() is False; "
            "unset DGMLIB_DEVICE to run on the CPU."
        )
    return device


def notebook_setup(seed: int = 0, threads: int | None = None) -> torch.device:
    """A lecture's first cell: seed everything and fix the thread count (``threads``, default
    ``$DGMLIB_THREADS`` or 2), use the course's plot style, and return the device to compute on
    (:func:`get_device`: ``$DGMLIB_DEVICE`` or CPU)."""
    from dgmlib.plot import use_style  # matplotlib only when a notebook asks for it

    seed_everything(seed, threads)
    use_style()
    return get_device()
