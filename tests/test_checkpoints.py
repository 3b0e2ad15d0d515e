"""Every stored checkpoint loads by name and reproduces one figure of its results file.

The manifest (``data/checkpoints/manifest.json``) lists the checkpoints; each lecture's test
module maps its checkpoint names to a function ``figure(model) -> (stored, recomputed, tol)``
in ``CHECKPOINT_FIGURES``. A checkpoint without such a function fails, so a new one cannot slip
in untested.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

from dgmlib import pretrained
from dgmlib.io import sha256_file, sidecar_path

TESTS = Path(__file__).resolve().parent
CHECKPOINTS = TESTS.parent / "data" / "checkpoints"
NAMES = sorted(pretrained.manifest())


def checkpoint_figures() -> dict:
    """``CHECKPOINT_FIGURES`` of every ``tests/test_lecture*.py``, merged."""
    figures: dict = {}
    for path in sorted(TESTS.glob("test_lecture*.py")):
        figures.update(getattr(importlib.import_module(path.stem), "CHECKPOINT_FIGURES", {}))
    return figures


def test_manifest_lists_exactly_the_stored_checkpoints():
    files = {p.name for p in CHECKPOINTS.glob("*.safetensors")}
    listed = {entry["file"] for entry in pretrained.manifest().values()}
    assert listed == files, f"not listed: {files - listed}; listed but missing: {listed - files}"
    for name, entry in pretrained.manifest().items():
        path = CHECKPOINTS / entry["file"]
        assert sha256_file(path) == entry["sha256"], name
        assert sidecar_path(path).read_text().split()[0] == entry["sha256"], name
        results = pretrained.results(entry["results"].removesuffix("_results.json"))
        assert results["schema"] == "dgmlib.results/1", entry["results"]
        assert results["models"][entry["model"]]["sha256"] == entry["sha256"], name


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_loads_by_name_and_reproduces_a_stored_figure(name):
    figures = checkpoint_figures()
    assert name in figures, f"{name}: no CHECKPOINT_FIGURES entry in any tests/test_lecture*.py"
    torch.manual_seed(0)
    model = pretrained.load(name)
    assert not model.training
    stored, recomputed, tol = figures[name](model)
    assert abs(recomputed - stored) <= tol, (
        f"{name}: stored {stored}, recomputed {recomputed}, tolerance {tol}"
    )
