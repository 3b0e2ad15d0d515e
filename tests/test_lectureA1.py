"""Appendix A1: the checkpoint it loads, its JSON of results, and the script that makes them."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from dgmlib import pretrained
from dgmlib.experiment import model_tensors
from dgmlib.io import read_json
from dgmlib.ode import fixed_grid

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import train_lectureA1 as script  # noqa: E402


def nll_with_the_training_solver(model: nn.Module) -> tuple[float, float, float]:
    """The stored mean -log p(x) on the test points with the 4-step rk4 grid, recomputed in
    float64 from the weights: a fixed grid makes it deterministic up to float64 round-off
    (about 1e-15 per point; 1e-9 leaves room for another BLAS's summation order)."""
    stored = pretrained.results("lA1")["models"]["cnf"]["test"]["nll_train_solver"]
    with torch.no_grad():
        lp = model.double().log_prob(script.test_data(), **fixed_grid(script.RK4_STEPS))
    return stored, float(-lp.mean()), 1e-9


CHECKPOINT_FIGURES: dict[str, Callable[[nn.Module], tuple[float, float, float]]] = {
    "lA1_cnf": nll_with_the_training_solver,
}


def entry() -> dict:
    return pretrained.results("lA1")["models"]["cnf"]


def test_results_json_matches_the_script():
    r = pretrained.results("lA1")
    assert r["command"] == script.COMMAND and not r["quick"]
    assert r["settings"] == script.settings(script.STEPS, script.N_TEST, script.LOG_EVERY)
    assert r["settings"]["threads"] == 1
    m = entry()
    steps = list(range(script.LOG_EVERY, script.STEPS + 1, script.LOG_EVERY))
    assert [c["step"] for c in m["curves"]] == steps
    assert pretrained.manifest()["lA1_cnf"]["sha256"] == m["sha256"]
    t = m["test"]
    # the identity between the stored figures, and cross-entropy >= entropy within 3 s.e.
    assert t["kl_data_model"] == pytest.approx(t["nll"] - t["entropy"], abs=1e-12)
    assert t["kl_data_model"] > -3 * t["kl_data_model_se"]


def test_checkpoint_is_small_loads_by_name_and_reproduces_its_figures():
    m = entry()
    assert (pretrained.checkpoint_dir() / m["checkpoint"]).stat().st_size < 100_000
    model = pretrained.load("lA1_cnf")
    assert sum(p.numel() for p in model.parameters()) == m["n_params"]
    figures = script.evaluate(model, script.test_data())
    for key in ("nll", "nll_train_solver", "entropy", "kl_data_model"):
        # float64 evaluation of fixed weights: only round-off and solver step choices differ
        assert figures[key] == pytest.approx(m["test"][key], abs=1e-6), key


def test_the_trained_density_is_normalised():
    """The float64 continuous-time model integrates to one on a grid that holds its mass
    (midpoint rule; the true ring density integrates to 1 - 1e-9 on the same grid)."""
    model = pretrained.load("lA1_cnf").double()
    g = torch.linspace(-3.6, 3.6, 49, dtype=torch.float64)
    pts = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)
    with torch.no_grad():
        lp = model.log_prob(pts, method="dopri5", rtol=1e-5, atol=1e-7)
    mass = lp.exp().sum().item() * (g[1] - g[0]).item() ** 2
    assert abs(mass - 1) < 5e-3, mass


def test_training_is_deterministic_and_logs_the_mean_loss():
    """Two short runs of the recipe give the same weights and curve; each point of the curve is
    the mean of the per-step losses, recomputed here by a plain loop over the same batches."""
    torch.set_num_threads(script.THREADS)
    runs = [script.train(steps=6, n_train=500, log_every=3) for _ in range(2)]
    (a, curve_a), (b, curve_b) = runs
    ta, tb = model_tensors(a), model_tensors(b)
    assert all(torch.equal(ta[k], tb[k]) for k in ta) and curve_a == curve_b
    assert [c["step"] for c in curve_a] == [3, 6]
    # the same six steps by hand: Adam, cosine schedule, the same batch generator
    x_all = script.train_data(500)
    model = script.build_model()
    opt = torch.optim.Adam(model.parameters(), lr=script.LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=6, eta_min=script.LR_END)
    g = torch.Generator().manual_seed(script.BATCH_SEED)
    losses = []
    for _ in range(6):
        xb = x_all[torch.randint(0, len(x_all), (script.BATCH,), generator=g)]
        loss = -model.log_prob(xb, **fixed_grid(script.RK4_STEPS)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    assert all(torch.equal(ta[k], v) for k, v in model_tensors(model).items())
    expected = [float(f"{sum(losses[i : i + 3]) / 3:.5g}") for i in (0, 3)]
    assert [c["loss"] for c in curve_a] == expected and all(map(math.isfinite, expected))


def test_quick_run_writes_a_checkpoint_that_loads(tmp_path: Path, monkeypatch):
    """``--quick`` writes the checkpoint, the results in the one schema and the manifest entry;
    the checkpoint rebuilds from its own spec (a model of the lecture's architecture)."""
    torch.set_num_threads(script.THREADS)
    monkeypatch.setitem(script.QUICK, "steps", 2)
    monkeypatch.setitem(script.QUICK, "log_every", 1)
    assert script.main(["--out", str(tmp_path), "--quick"]) == 0
    monkeypatch.setenv("DGMLIB_CHECKPOINTS", str(tmp_path))
    doc = read_json(tmp_path / "lA1_results.json")
    assert doc["schema"] == "dgmlib.results/1" and doc["quick"]
    assert [c["step"] for c in doc["models"]["cnf"]["curves"]] == [1, 2]
    model = pretrained.load("lA1_cnf")
    assert sum(p.numel() for p in model.parameters()) == doc["models"]["cnf"]["n_params"]
