"""Appendix A1: the checkpoint it loads, its JSON of results, and the script that makes them."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from dgmlib.cnf import CNF, ConcatMLP
from dgmlib.train import load_model, save_checkpoint, sha256_file

ROOT = Path(__file__).resolve().parent.parent
CKPT = ROOT / "data" / "checkpoints"
sys.path.insert(0, str(ROOT / "tools"))
import train_lectureA1 as script  # noqa: E402


def results() -> dict:
    return json.loads((CKPT / "lA1_results.json").read_text())


def test_results_json_matches_the_script():
    r = results()
    assert r["command"] == script.COMMAND and not r["quick"]
    s = r["settings"]
    assert s["seed"] == script.SEED and s["threads"] == script.THREADS == 1
    assert s["net"] == script.NET and s["steps"] == script.STEPS
    assert s["ring_std"] == script.RING_STD and s["n_train"] == script.N_TRAIN
    assert s["n_test"] == script.N_TEST and s["test_seed"] == script.TEST_SEED
    assert s["batch_size"] == script.BATCH and s["learning_rate"] == script.LR
    assert s["rk4_steps"] == script.RK4_STEPS and s["eval_tol"] == script.EVAL_TOL
    steps = list(range(script.LOG_EVERY, script.STEPS + 1, script.LOG_EVERY))
    assert r["curve"]["step"] == steps and len(r["curve"]["loss"]) == len(steps)
    t = r["test"]
    # the identities between the stored figures, and cross-entropy >= entropy within 3 s.e.
    assert t["kl"] == pytest.approx(t["nll"] - t["entropy"], abs=1e-12)
    assert t["kl"] > -3 * t["kl_se"]


def test_checkpoint_is_small_verified_and_reproduces_its_figures():
    r = results()
    path = CKPT / r["checkpoint"]
    assert path.stat().st_size < 100_000
    side = Path(str(path) + ".sha256").read_text().split()
    assert side == [sha256_file(path), path.name] and side[0] == r["sha256"]
    model = script.build_model()
    meta = load_model(model, path)
    assert meta["command"] == script.COMMAND and meta["model"] == "cnf"
    assert sum(p.numel() for p in model.parameters()) == r["n_params"]
    figures = script.evaluate(model, script.test_data())
    for key in ("nll", "nll_train_solver", "entropy", "kl"):
        # float64 evaluation of fixed weights: only round-off and solver step choices differ
        assert figures[key] == pytest.approx(r["test"][key], abs=1e-6), key


def test_the_trained_density_is_normalised():
    """The float64 continuous-time model integrates to one on a grid that holds its mass
    (midpoint rule; the true ring density integrates to 1 - 1e-9 on the same grid)."""
    model = CNF(ConcatMLP(**script.NET))
    load_model(model, CKPT / "lA1_cnf.safetensors")
    model = model.double()
    g = torch.linspace(-3.6, 3.6, 49, dtype=torch.float64)
    pts = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)
    with torch.no_grad():
        lp = model.log_prob(pts, method="dopri5", rtol=1e-5, atol=1e-7)
    mass = lp.exp().sum().item() * (g[1] - g[0]).item() ** 2
    assert abs(mass - 1) < 5e-3, mass


def test_training_is_deterministic(tmp_path: Path):
    """Two short runs of the recipe give the same checkpoint hash and the same curve."""
    torch.set_num_threads(script.THREADS)
    hashes, curves = [], []
    for run in ("a", "b"):
        model, curve = script.train(steps=6, n_train=500)
        path = tmp_path / f"{run}.safetensors"
        hashes.append(save_checkpoint(path, dict(model.state_dict())))
        curves.append(curve)
    assert hashes[0] == hashes[1] and curves[0] == curves[1]
    assert curves[0]["step"] == [6] and math.isfinite(curves[0]["loss"][0])
