"""Lecture 07: the checkpoints it loads, their JSON of results, and the script that makes them."""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from helpers import stored_results
from torch import nn

from dgmlib import experiment, pretrained
from dgmlib.io import sha256_file, sidecar_path
from dgmlib.models.discrete import categorical_kl_uniform

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import train_lecture07 as script  # noqa: E402


def results() -> dict:
    return pretrained.results("l07")


@functools.cache
def x_test() -> torch.Tensor:
    """The lecture's binarized test set, loaded once."""
    return script.test_set()


def vqvae_log_px_z(model: nn.Module) -> tuple[float, float, float]:
    """The stored test ``log p(x | z_q)`` against the one recomputed from the weights. Both are
    float32 sums of 784 pixel terms per image (relative round-off ~1e-6 of ~220 nats, a few 1e-4
    on another CPU): tolerance 1e-3 nats."""
    with torch.no_grad():
        recomputed = float(model.log_px_z(x_test()).mean())
    return results()["models"]["vqvae"]["test"]["log_px_z"], recomputed, 1e-3


def catvae_kl(model: nn.Module) -> tuple[float, float, float]:
    """The stored exact KL to the uniform prior against the one recomputed from the weights
    (float32 sums of 200 terms per image, ~12 nats: round-off below 1e-4 nats, the tolerance)."""
    with torch.no_grad():
        recomputed = float(categorical_kl_uniform(model.logits(x_test())).sum(-1).mean())
    return results()["models"]["catvae"]["test"]["kl"], recomputed, 1e-4


CHECKPOINT_FIGURES: dict[str, Callable[[nn.Module], tuple[float, float, float]]] = {
    "l07_vqvae": vqvae_log_px_z,
    "l07_catvae": catvae_kl,
}


def test_results_json_matches_the_script():
    r = stored_results("l07", script)
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
    assert sorted(r["models"]) == sorted(script.MODELS)
    assert set(CHECKPOINT_FIGURES) == {f"l07_{name}" for name in script.MODELS}
    for m in r["models"].values():
        assert [c["epoch"] for c in m["curves"]] == list(range(1, script.EPOCHS + 1))


def test_vqvae_figures_are_consistent():
    m = results()["models"]["vqvae"]["test"]
    k, p = script.VQ_KWARGS["n_codes"], script.VQ_KWARGS["n_positions"]
    assert len(m["code_counts"]) == k and sum(m["code_counts"]) == 10_000 * p
    assert m["codes_used"] == sum(c > 0 for c in m["code_counts"])
    assert 1 <= m["perplexity"] <= m["codes_used"]
    assert m["kl"] == pytest.approx(p * math.log(k), rel=1e-15)
    assert m["elbo"] == pytest.approx(m["log_px_z"] - m["kl"], rel=1e-15)
    assert m["log_px_z"] < 0  # a log-probability of binary data


def test_categorical_vae_figures_are_consistent():
    model = results()["models"]["catvae"]
    m = model["test"]
    n_latent, n_cat = script.CAT_KWARGS["n_latent"], script.CAT_KWARGS["n_categories"]
    assert 0 <= m["kl"] <= n_latent * math.log(n_cat)
    assert m["log_px_z"] < 0 and m["elbo"] == pytest.approx(m["log_px_z"] - m["kl"], rel=1e-12)
    assert [c["tau"] for c in model["curves"]] == [script.tau_at(e) for e in range(script.EPOCHS)]


@pytest.mark.parametrize("name", script.MODELS)
def test_checkpoint_is_small_verified_and_loads_by_name(name: str):
    m = results()["models"][name]
    path = pretrained.checkpoint_dir() / m["checkpoint"]
    assert path.stat().st_size < 5_000_000
    assert sidecar_path(path).read_text().split() == [sha256_file(path), path.name]
    assert m["sha256"] == sha256_file(path) == pretrained.manifest()[f"l07_{name}"]["sha256"]
    model = pretrained.load(f"l07_{name}")
    assert experiment.spec_of(model) == experiment.spec_of(script.build(name))
    assert sum(p.numel() for p in model.parameters()) == m["n_params"]
    with torch.no_grad():
        assert torch.isfinite(model.loss(torch.zeros(2, 1, 28, 28))["loss"])


def random_images() -> tuple[torch.Tensor, torch.Tensor]:
    """200 random uint8 training images and 20 binary curve images."""
    images = torch.randint(
        0, 256, (200, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    x_curve = torch.bernoulli(
        torch.full((20, 1, 28, 28), 0.3), generator=torch.Generator().manual_seed(1)
    )
    return images, x_curve


@pytest.mark.parametrize("name", script.MODELS)
def test_training_is_deterministic_and_resumes(tmp_path: Path, name: str):
    """Two runs of the recipe on 200 random images give the same checkpoint hash, and so does a
    run stopped after one epoch and resumed from its state (a different data order or Gumbel
    noise after the resume, or optimizer state lost, would change the weights)."""
    torch.set_num_threads(script.THREADS)
    images, x_curve = random_images()
    hashes, all_curves = [], []
    for run in ("a", "b"):
        model, curves = script.train_one(name, images, 2, x_curve)
        hashes.append(experiment.save_model(tmp_path / f"{run}.safetensors", model))
        all_curves.append(curves)
    first, _ = script.train_one(name, images, 1, x_curve, state=tmp_path / "half.safetensors")
    model, curves = script.train_one(name, images, 2, x_curve, state=tmp_path / "half.safetensors")
    hashes.append(experiment.save_model(tmp_path / "resumed.safetensors", model))
    all_curves.append(curves)
    assert hashes[0] == hashes[1] == hashes[2]
    assert all_curves[0] == all_curves[1] == all_curves[2] and len(all_curves[0]) == 2
    assert experiment.save_model(tmp_path / "first.safetensors", first) != hashes[0]
