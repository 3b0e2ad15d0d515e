"""Lecture 08: the checkpoints it loads, their JSON of results, and the script that makes them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from dgmlib.gan import mode_coverage, ring_centres
from dgmlib.train import load_model, sha256_file

ROOT = Path(__file__).resolve().parent.parent
CKPT = ROOT / "data" / "checkpoints"
sys.path.insert(0, str(ROOT / "tools"))
import train_lecture08 as script  # noqa: E402


def results() -> dict:
    return json.loads((CKPT / "l08_results.json").read_text())


def test_results_json_matches_the_script():
    r = results()
    assert r["command"] == script.COMMAND and not r["quick"]
    s = r["settings"]
    assert s["seed"] == script.SEED and s["threads"] == script.THREADS == 1
    d1 = s["disc1d"]
    assert d1["kwargs"] == script.D1_KWARGS and d1["steps"] == script.D1_STEPS
    assert d1["n_samples"] == script.D1_N and d1["learning_rate"] == script.D1_LR
    gan = s["gan"]
    assert gan["kwargs"] == script.GAN_KWARGS and gan["steps"] == script.GAN_STEPS
    assert gan["seeds"] == list(script.SEEDS) and gan["losses"] == list(script.LOSSES)
    assert gan["betas"] == list(script.GAN_BETAS) and gan["learning_rate"] == script.GAN_LR
    assert gan["eval_every"] == script.EVAL_EVERY and gan["log_every"] == script.LOG_EVERY
    runs = r["gans"]
    assert sorted(runs) == sorted(f"{k}_s{s}" for k in script.LOSSES for s in script.SEEDS)
    steps = script.GAN_STEPS
    for run in runs.values():
        assert run["eval"]["step"] == list(range(script.EVAL_EVERY, steps + 1, script.EVAL_EVERY))
        assert run["log"]["step"] == list(range(script.LOG_EVERY, steps + 1, script.LOG_EVERY))
        for counts, modes, hq in zip(
            run["eval"]["counts"], run["eval"]["modes"], run["eval"]["high_quality"], strict=True
        ):
            assert modes == sum(c >= 10 for c in counts)
            assert hq == pytest.approx(sum(counts) / script.EVAL_N, abs=1e-12)


@pytest.mark.parametrize("name", ["disc1d", *(f"gan_{k}" for k in script.LOSSES)])
def test_checkpoint_is_small_verified_and_loads(name: str):
    r = results()
    entry = r["disc1d"] if name == "disc1d" else r["gans"][f"{name[4:]}_s{script.SAVED_SEED}"]
    path = CKPT / entry["checkpoint"]
    assert path.stat().st_size < 100_000
    side = Path(str(path) + ".sha256").read_text().split()
    assert side == [sha256_file(path), path.name] and side[0] == entry["sha256"]
    model = script.build_disc1d() if name == "disc1d" else script.build_gan()
    meta = load_model(model, path)
    assert meta["command"] == script.COMMAND and meta["model"] == name
    assert sum(p.numel() for p in model.parameters()) == entry["n_params"]
    if name == "disc1d":  # the stored figures are those of the stored weights
        figures = script.evaluate_disc1d(model)
        for key in ("avg_abs_error", "max_abs_error", "value"):
            assert figures[key] == pytest.approx(entry[key], abs=1e-9)
    else:
        counts = mode_coverage(
            script.gan_samples(model["generator"], script.eval_codes()),
            ring_centres(),
            script.RING_STD,
        ).counts
        assert counts.tolist() == entry["eval"]["counts"][-1]


def test_training_is_deterministic(tmp_path: Path):
    """Two short runs of the recipe give the same checkpoint hashes and the same curves."""
    torch.set_num_threads(script.THREADS)
    x_data = script.ring_data()
    hashes, curves = [], []
    for run in ("a", "b"):
        disc, curve = script.train_disc1d(steps=20, n=500)
        h = [script.save_model(disc, "disc1d", {}, tmp_path / f"{run}_d.safetensors")]
        out = [curve]
        for kind in script.LOSSES:
            gan, c = script.train_gan(kind, 1, x_data, steps=40, every=20)
            h.append(script.save_model(gan, kind, {}, tmp_path / f"{run}_{kind}.safetensors"))
            out.append(c)
        hashes.append(h)
        curves.append(out)
    assert hashes[0] == hashes[1] and len(set(hashes[0])) == 3
    assert curves[0] == curves[1]
    assert curves[0][1]["eval"]["step"] == [20, 40] and len(curves[0][1]["log"]["step"]) == 4
