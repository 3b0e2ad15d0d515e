"""Lecture 02: the checkpoints it loads, their results file, and the script that makes them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest
import torch
from torch import nn

from dgmlib import pretrained
from dgmlib.io import load_checkpoint
from dgmlib.objectives import ELBO
from dgmlib.train import Trainer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import train_lecture02 as script  # noqa: E402

NAMES = [f"l02_vae_{m}" for m in script.MODELS]


@cache
def binarized_test_images() -> torch.Tensor:
    """The script's binarized test images, ``[10000, 1, 28, 28]`` (loaded once)."""
    return script.test_data(script.N_TEST)


def stored_test_elbo(name: str) -> Callable[[nn.Module], tuple[float, float, float]]:
    """``figure(model)``: the stored single-sample test ELBO of model ``name`` and the same
    figure recomputed from the loaded weights (same images, same seeded generator)."""

    def figure(model: nn.Module) -> tuple[float, float, float]:
        stored = pretrained.results("l02")["models"][name]["test"]["elbo"]
        g = torch.Generator().manual_seed(script.EVAL_SEED)
        with torch.no_grad():
            recomputed = float(model.elbo(binarized_test_images(), generator=g).mean())
        # float32: each image's ELBO (~250 nats, a sum of 784 pixel terms) carries a round-off
        # of ~1e-4 nats, and the mean over 10k images differs between CPU kernel sets in the
        # 5th significant digit (3e-5 measured); 1e-3 nats is far below what a wrong weight,
        # a wrong architecture or other test images would change (whole nats)
        return stored, recomputed, 1e-3

    return figure


CHECKPOINT_FIGURES: dict[str, Callable[[nn.Module], tuple[float, float, float]]] = {
    f"l02_vae_{m}": stored_test_elbo(m) for m in script.MODELS
}


def test_results_were_made_with_the_script_settings():
    results = pretrained.results("l02")
    assert results["command"] == script.COMMAND and results["lecture"] == script.LECTURE
    assert results["settings"] == script.settings() and results["quick"] is False
    assert set(results["models"]) == set(script.MODELS)
    steps = script.EPOCHS * (script.N_TRAIN // script.BATCH)
    for name, r in results["models"].items():
        assert (
            r["checkpoint"] == f"l02_vae_{name}.safetensors" and r["z_dim"] == script.MODELS[name]
        )
        assert [c["epoch"] for c in r["curves"]] == list(range(1, script.EPOCHS + 1))
        assert len(r["history"]["step"]) == steps // script.LOG_EVERY
        t = r["test"]
        # the signs of the schema: elbo = log_px_z - kl with kl >= 0 and log_px_z <= 0 (a
        # flipped log_px_z would miss by twice its size, ~500 nats); float32 sums: 1e-3
        assert t["kl"] > 0 > t["log_px_z"] and abs(t["elbo"] - (t["log_px_z"] - t["kl"])) < 1e-3
        h = r["history"]
        for elbo, log_px_z, kl in zip(h["elbo"], h["log_px_z"], h["kl"], strict=True):
            assert abs(elbo - (log_px_z - kl)) < 1e-3
        # the importance-weighted estimate is a tighter bound than the ELBO on the same images
        assert -t["subset_nll"] > t["subset_elbo"]


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_loads_by_name_and_is_small(name: str):
    entry = pretrained.manifest()[name]
    path = pretrained.checkpoint_dir() / entry["file"]
    assert path.stat().st_size < 5_000_000
    _, meta = load_checkpoint(path, expected_sha256=entry["sha256"])
    z_dim = script.MODELS[entry["model"]]
    assert meta["z_dim"] == z_dim and meta["epochs"] == script.EPOCHS
    assert meta["command"] == script.COMMAND
    model = pretrained.load(name)
    assert model.z_dim == z_dim and not model.training
    with torch.no_grad():
        assert torch.isfinite(model.elbo(torch.zeros(2, 1, 28, 28))).all()


def test_training_recipe_is_deterministic():
    """Two short runs of the script's recipe give bit-identical weights."""
    images = torch.randint(
        0, 256, (300, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    weights = []
    for _ in range(2):
        model = script.build(2)
        opt = torch.optim.Adam(model.parameters(), lr=script.LR)
        trainer = Trainer(model, opt, ELBO(), log_every=1, progress=False, device="cpu")
        trainer.fit(lambda epoch: script.epoch_batches(images, epoch), 1)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_quick_refuses_to_overwrite_the_lecture_checkpoints(capsys):
    with pytest.raises(SystemExit):
        script.main(["--quick"])
    assert "--out" in capsys.readouterr().err
