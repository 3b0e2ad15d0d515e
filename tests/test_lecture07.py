"""Lecture 07: the checkpoints it loads, their JSON of results, and the script that makes them."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from dgmlib.train import load_model, sha256_file

ROOT = Path(__file__).resolve().parent.parent
CKPT = ROOT / "data" / "checkpoints"
sys.path.insert(0, str(ROOT / "tools"))
import train_lecture07 as script  # noqa: E402


def results() -> dict:
    return json.loads((CKPT / "l07_results.json").read_text())


def test_results_json_matches_the_script():
    r = results()
    assert r["command"] == script.COMMAND and not r["quick"]
    s = r["settings"]
    assert s["seed"] == script.SEED and s["threads"] == script.THREADS == 1
    assert s["epochs"] == script.EPOCHS and s["n_train"] == script.N_TRAIN
    assert s["batch_size"] == script.BATCH and s["learning_rate"] == script.LR
    assert s["vqvae"] == script.VQ_KWARGS and s["catvae"] == script.CAT_KWARGS
    assert s["tau_schedule"] == {
        "start": script.TAU_START,
        "min": script.TAU_MIN,
        "decay": script.TAU_DECAY,
    }
    assert list(r["models"]) == list(script.MODELS)
    for m in r["models"].values():
        assert [c["epoch"] for c in m["curves"]] == list(range(1, script.EPOCHS + 1))


def test_vqvae_figures_are_consistent():
    m = results()["models"]["vqvae"]
    k, p = script.VQ_KWARGS["n_codes"], script.VQ_KWARGS["n_positions"]
    assert len(m["code_counts"]) == k and sum(m["code_counts"]) == 10_000 * p
    assert m["codes_used"] == sum(c > 0 for c in m["code_counts"])
    assert 1 <= m["perplexity"] <= m["codes_used"]
    assert m["elbo"] == pytest.approx(-m["recon_nll"] - p * math.log(k))


def test_categorical_vae_figures_are_consistent():
    m = results()["models"]["catvae"]
    n_latent, n_cat = script.CAT_KWARGS["n_latent"], script.CAT_KWARGS["n_categories"]
    assert 0 <= m["kl"] <= n_latent * math.log(n_cat)
    assert m["recon"] == pytest.approx(-m["elbo"] - m["kl"])
    assert [c["tau"] for c in m["curves"]] == [script.tau_at(e) for e in range(script.EPOCHS)]


@pytest.mark.parametrize("name", script.MODELS)
def test_checkpoint_is_small_verified_and_loads(name: str):
    m = results()["models"][name]
    path = CKPT / m["checkpoint"]
    assert path.stat().st_size < 5_000_000
    side = Path(str(path) + ".sha256").read_text().split()
    assert side == [sha256_file(path), path.name] and side[0] == m["sha256"]
    model = script.build(name)
    meta = load_model(model, path)
    assert meta["command"] == script.COMMAND and meta["epochs"] == script.EPOCHS
    assert sum(p.numel() for p in model.parameters()) == m["n_params"]
    with torch.no_grad():
        assert torch.isfinite(model.loss(torch.zeros(2, 1, 28, 28))["loss"])


@pytest.mark.parametrize("name", script.MODELS)
def test_training_is_deterministic(tmp_path: Path, name: str):
    """Two runs of the recipe on 200 random images give the same checkpoint hash."""
    torch.set_num_threads(script.THREADS)
    images = torch.randint(
        0, 256, (200, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    x_curve = torch.bernoulli(
        torch.full((20, 1, 28, 28), 0.3), generator=torch.Generator().manual_seed(1)
    )
    hashes, all_curves = [], []
    for run in ("a", "b"):
        model, curves = script.train_one(name, images, 2, x_curve)
        hashes.append(script.save_model(model, name, 2, tmp_path / f"{run}.safetensors"))
        all_curves.append(curves)
    assert hashes[0] == hashes[1]
    assert all_curves[0] == all_curves[1] and len(all_curves[0]) == 2
