"""The course's trained models by name: ``pretrained.load("l07_vqvae")``.

Each checkpoint in ``data/checkpoints/`` holds its weights and its build spec
(:mod:`dgmlib.experiment`); ``manifest.json`` there lists every checkpoint with its SHA-256 and
the results file that describes it. The folder is found without an editable install:
``$DGMLIB_CHECKPOINTS`` if set, else ``data/checkpoints`` beside the installed package's source
tree, else in the current folder or one of its parents (a notebook runs in ``notebooks/``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dgmlib.experiment import MANIFEST, load_model_file
from dgmlib.io import read_json

__all__ = ["checkpoint_dir", "load", "manifest", "results"]

_SUBDIR = Path("data") / "checkpoints"


def checkpoint_dir() -> Path:
    """The folder holding the checkpoints and ``manifest.json`` (see the module docstring)."""
    if env := os.environ.get("DGMLIB_CHECKPOINTS"):
        path = Path(env)
        if not (path / MANIFEST).is_file():
            raise FileNotFoundError(
                f"DGMLIB_CHECKPOINTS={env}: no {MANIFEST} there; point it at a folder made by "
                "`make checkpoints`"
            )
        return path
    candidates = [Path(__file__).resolve().parents[1] / _SUBDIR]
    cwd = Path.cwd().resolve()
    candidates += [d / _SUBDIR for d in (cwd, *cwd.parents)]
    for path in candidates:
        if (path / MANIFEST).is_file():
            return path
    raise FileNotFoundError(
        f"no {_SUBDIR}/{MANIFEST} found beside dgmlib or above {cwd}; run from the course "
        "repository, or set DGMLIB_CHECKPOINTS to the folder holding the checkpoints"
    )


def manifest() -> dict[str, dict[str, Any]]:
    """Every stored checkpoint: name -> ``{"file", "sha256", "results", "model", "command"}``."""
    return read_json(checkpoint_dir() / MANIFEST)


def load(name: str, device: str | torch.device | None = None) -> nn.Module:
    """The model ``name`` (e.g. ``"l05_iwae5"``) rebuilt from its spec, weights verified against
    the manifest's SHA-256, in eval mode, on ``device`` (default: the CPU).

    Building the model draws its initial weights from torch's global generator, as constructing it
    by hand would, before the stored weights replace them."""
    entries = manifest()
    if name not in entries:
        raise KeyError(f"pretrained.load: no checkpoint named {name!r}; known: {sorted(entries)}")
    entry = entries[name]
    model = load_model_file(checkpoint_dir() / entry["file"], expected_sha256=entry["sha256"])
    return model.to(device) if device is not None else model


def results(prefix: str) -> dict[str, Any]:
    """The results document ``<prefix>_results.json`` (e.g. ``results("l05")``)."""
    return read_json(checkpoint_dir() / f"{prefix}_results.json")
