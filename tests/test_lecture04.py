"""Lecture 04's checkpoints: present, verified, loadable, small, and consistent with their JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from dgmlib.train import load_model

ROOT = Path(__file__).resolve().parent.parent
CKPT = ROOT / "data" / "checkpoints"
sys.path.insert(0, str(ROOT / "tools"))
import train_lecture04 as T  # noqa: E402


@pytest.fixture(scope="module")
def results() -> dict:
    path = CKPT / "l04_results.json"
    if not path.is_file():
        pytest.skip("no Lecture 04 checkpoints: run `python tools/train_lecture04.py`")
    return json.loads(path.read_text())


def test_results_were_made_with_the_script_settings(results):
    cfg = results["config"]
    assert cfg["command"] == T.COMMAND
    assert cfg["z_dim"] == T.Z_DIM and cfg["epochs"] == T.EPOCHS and cfg["n_eval"] == T.N_EVAL
    assert cfg["pixelcnn"] == T.PIXELCNN and cfg["free_bits"] == T.FREE_BITS
    assert list(results["variants"]) == list(T.VARIANTS)


@pytest.mark.parametrize("variant", T.VARIANTS)
def test_checkpoint_loads_and_is_small(results, variant):
    path = CKPT / f"l04_{variant}.safetensors"
    assert path.stat().st_size < 5 * 2**20
    meta = load_model(T.build(variant), path)  # verifies the SHA-256 sidecar
    assert meta["variant"] == variant and meta["command"] == T.COMMAND
    r = results["variants"][variant]
    assert len(r["per_epoch"]) == T.EPOCHS
    assert 0 <= r["active_units"] <= T.Z_DIM and len(r["kl_per_dim"]) == T.Z_DIM
    assert r["kl"] >= 0 and r["elbo"] < 0
    assert abs(sum(r["kl_per_dim"]) - r["kl"]) < 1e-3


def test_free_bits_keeps_the_floor(results):
    """Free bits leaves each dimension with (about) at least lambda nats on the test images."""
    kl = results["variants"]["pixelcnn_freebits"]["kl_per_dim"]
    assert min(kl) > 0.8 * T.FREE_BITS
