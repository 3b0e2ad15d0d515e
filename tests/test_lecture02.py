"""Lecture 02: the checkpoints it loads and the script that makes them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from dgmlib.models import VAE
from dgmlib.train import load_model, sha256_file

ROOT = Path(__file__).resolve().parent.parent
CKPT = ROOT / "data" / "checkpoints"
sys.path.insert(0, str(ROOT / "tools"))
import train_lecture02 as script  # noqa: E402

MODELS = list(script.MODELS.items())


def test_results_json_matches_the_script():
    results = json.loads((CKPT / "l02_results.json").read_text())
    config = results["config"]
    assert config["command"] == script.COMMAND
    assert config["epochs"] == script.EPOCHS, "checkpoints made with --epochs other than default"
    assert config["models"] == script.MODELS and config["seed"] == script.SEED
    assert set(results["models"]) == set(script.MODELS)
    for r in results["models"].values():
        assert len(r["test_elbo_per_epoch"]) == script.EPOCHS
        assert abs(r["elbo"] - (r["recon"] - r["kl"])) < 1e-6
        # the importance-weighted estimate is a tighter bound than the ELBO on the same images
        assert r["iw_log_px_first_1000"] > r["elbo_first_1000"]


@pytest.mark.parametrize("name,z_dim", MODELS)
def test_checkpoint_loads_and_is_small(name: str, z_dim: int):
    path = CKPT / f"l02_vae_{name}.safetensors"
    assert path.stat().st_size < 5_000_000
    side = Path(str(path) + ".sha256").read_text().split()
    assert side == [sha256_file(path), path.name]
    model = VAE.for_mnist(z_dim=z_dim)
    meta = load_model(model, path)
    assert meta["z_dim"] == z_dim and meta["command"] == script.COMMAND
    with torch.no_grad():
        x = torch.zeros(2, 1, 28, 28)
        assert torch.isfinite(model.elbo(x)).all()


def test_training_recipe_is_deterministic():
    """Two short runs of the script's recipe give bit-identical weights."""
    images = torch.randint(
        0, 256, (300, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    weights = []
    for _ in range(2):
        model = script.build(2)
        opt = torch.optim.Adam(model.parameters(), lr=script.LR)
        for x in script.epoch_batches(images, 0):
            loss = model.loss(x)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])
