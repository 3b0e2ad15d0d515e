"""Lecture 12: the checkpoints it loads, their JSON of results, and the script that makes them."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from dgmlib.train import load_checkpoint, load_model, sha256_file

ROOT = Path(__file__).resolve().parent.parent
CKPT = ROOT / "data" / "checkpoints"
sys.path.insert(0, str(ROOT / "tools"))
import train_lecture12 as script  # noqa: E402


def results() -> dict:
    return json.loads((CKPT / "l12_results.json").read_text())


def test_results_json_matches_the_script():
    r = results()
    assert r["command"] == script.COMMAND and not r["quick"]
    s = r["settings"]
    assert s == script.settings(False)
    assert list(r["toy"]) == list(script.TOY_VARIANTS)
    for m in r["toy"].values():
        assert len(m["per_step_kl"]) == script.T - 1 and m["n_eval"] == script.TOY_EVAL_N
        assert [c["epoch"] for c in m["curves"]][-1] == script.TOY_EPOCHS
    fm = r["fmnist"]
    assert [c["epoch"] for c in fm["curves"]] == list(range(1, script.FM_EPOCHS + 1))
    assert fm["steps"] == script.FM_EPOCHS * math.ceil(60_000 / script.FM_BATCH)
    assert fm["test"]["n_images"] == 10_000 and fm["test"]["draws"] == script.FM_EVAL_DRAWS
    assert [c["t"] for c in fm["step_kl_curve"]] == [t for t in script.FM_CURVE_STEPS if t >= 2]


def test_figures_are_consistent():
    r = results()
    for m in r["toy"].values():
        assert m["elbo"] == pytest.approx(m["reconstruction"] - m["diffusion"] - m["prior"])
        assert m["diffusion"] == pytest.approx(sum(m["per_step_kl"]), rel=1e-5)
    t = r["fmnist"]["test"]
    parts = t["prior_bpd"] + t["diffusion_bpd"] + t["reconstruction_bpd"] + math.log2(128)
    assert parts == pytest.approx(t["bpd"], abs=1e-5)  # float32 per-image terms
    assert 0 < r["fmnist"]["decoder_var"] < 1


@pytest.mark.parametrize(
    ("part", "name"),
    [*[("toy", v) for v in script.TOY_VARIANTS], ("fmnist", None)],
)
def test_checkpoint_is_small_verified_and_loads(part: str, name: str | None):
    r = results()
    m = r["toy"][name] if part == "toy" else r["fmnist"]
    path = CKPT / m["checkpoint"]
    assert path.stat().st_size < 5_000_000
    side = Path(str(path) + ".sha256").read_text().split()
    assert side == [sha256_file(path), path.name] and side[0] == m["sha256"]
    model = script.build(part, name or "simple")
    meta = load_model(model, path)
    assert meta["command"] == script.COMMAND
    x = torch.zeros(2, 2) if part == "toy" else torch.zeros(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.isfinite(model.ema(x, torch.tensor([1, 1000]))).all()
    if part == "fmnist":
        samples, meta = load_checkpoint(CKPT / m["samples"])
        assert samples["samples"].shape == (script.FM_N_SAMPLES, 1, 28, 28)
        assert meta["checkpoint"] == path.name


@pytest.mark.parametrize("weighting", script.TOY_VARIANTS)
def test_toy_training_is_deterministic(weighting: str):
    torch.set_num_threads(script.THREADS)
    runs = [script.train_toy(weighting, 2, 500) for _ in range(2)]
    a, b = (dict(m.state_dict()) for m, _ in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert runs[0][1] == runs[1][1]


def test_fmnist_training_resumes_identically(tmp_path: Path):
    """An interrupted run (stopped after epoch 1, then restarted) equals an uninterrupted one."""
    torch.set_num_threads(script.THREADS)
    images = torch.randint(
        0, 256, (128, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    x_curve = images[:8]
    full, tr_full, c_full = script.train_fmnist(images, x_curve, 2, tmp_path / "a.safetensors")
    script.train_fmnist(images, x_curve, 2, tmp_path / "b.safetensors", stop_after=1)
    resumed, tr_res, c_res = script.train_fmnist(images, x_curve, 2, tmp_path / "b.safetensors")
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert tr_full.step == tr_res.step == 4
    strip = [{k: v for k, v in row.items() if k != "cpu_seconds"} for row in c_full]
    assert strip == [{k: v for k, v in row.items() if k != "cpu_seconds"} for row in c_res]


def test_bits_per_dim_conversion():
    """The script's conversion: an ELBO of 0 nats for z_0 in [-1, 1) is log2(128) = 7 bits."""
    assert float(script.bits_per_dim(torch.tensor(0.0, dtype=torch.float64), 784)) == (
        pytest.approx(7.0)
    )
    elbo = torch.tensor(-784 * math.log(2), dtype=torch.float64)
    assert float(script.bits_per_dim(elbo, 784)) == pytest.approx(8.0)
