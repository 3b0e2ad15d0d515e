"""Lecture 05: the checkpoints it loads, their JSON of results, and the script that makes them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from dgmlib.models import IWAE, VAE
from dgmlib.train import load_model, sha256_file

ROOT = Path(__file__).resolve().parent.parent
CKPT = ROOT / "data" / "checkpoints"
sys.path.insert(0, str(ROOT / "tools"))
import train_lecture05 as script  # noqa: E402


def results() -> dict:
    return json.loads((CKPT / "l05_results.json").read_text())


def test_results_json_matches_the_script():
    r = results()
    assert r["command"] == script.COMMAND and not r["quick"]
    s = r["settings"]
    assert s["epochs"] == script.EPOCHS and s["seed"] == script.SEED
    assert s["nll_K"] == script.NLL_K and s["nll_images"] == script.N_NLL
    assert set(r["models"]) == set(script.MODELS)
    for name, m in r["models"].items():
        assert m["K_train"] == script.MODELS[name]
        assert len(m["curves"]) == script.EPOCHS
        assert len(m["nll_notebook_subset"]) == script.N_NOTEBOOK
        # a bound never exceeds a tighter one, on average over 10k images
        assert m["elbo"] < m["iwae_5"] < m["iwae_50"]
    # the lecture's claim: IWAE (K = 50) beats the VAE on the same NLL estimator
    assert r["models"]["iwae50"]["nll"] < r["models"]["vae"]["nll"]


@pytest.mark.parametrize("name", list(script.MODELS))
def test_checkpoint_is_small_verified_and_loads(name: str):
    m = results()["models"][name]
    path = CKPT / m["checkpoint"]
    assert path.stat().st_size < 5_000_000
    side = Path(str(path) + ".sha256").read_text().split()
    assert side == [sha256_file(path), path.name] and side[0] == m["sha256"]
    model = VAE.for_mnist() if m["K_train"] == 1 else IWAE.for_mnist(K=m["K_train"])
    meta = load_model(model, path)
    assert meta["K"] == m["K_train"] and meta["command"] == script.COMMAND
    with torch.no_grad():
        assert torch.isfinite(model.elbo(torch.zeros(2, 1, 28, 28))).all()


def test_models_start_from_the_same_weights():
    w = [torch.cat([p.flatten() for p in script.build(n).parameters()]) for n in script.MODELS]
    assert all(torch.equal(w[0], v) for v in w[1:])


def test_learning_rate_schedule_and_subset():
    assert script.lr_of_epoch(0) == script.LR
    assert abs(script.lr_of_epoch(7) - script.LR / 10) < 1e-15
    idx = script.nll_subset_indices(10_000, 100)
    expected = torch.randperm(10_000, generator=torch.Generator().manual_seed(0))[:100]
    assert torch.equal(idx, expected)


def test_training_is_deterministic_and_resumable(tmp_path: Path):
    """Two epochs in one go equal one epoch, an interruption, and a resumed second epoch."""
    images = torch.randint(
        0, 256, (200, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    x_test = torch.bernoulli(torch.full((20, 1, 28, 28), 0.3), generator=torch.Generator())
    weights = []
    for run, schedule in (("straight", [2]), ("resumed", [1, 2])):
        out = tmp_path / run
        (out / "l05_resume").mkdir(parents=True)
        for epochs in schedule:
            cfg = {"epochs": epochs, "n_train": 200, "n_curve": 20}
            model, curves = script.train_one("iwae5", images, x_test, cfg, out)
        assert [c["epoch"] for c in curves] == [1, 2]
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])
