"""Lecture 12: the checkpoints it loads, their JSON of results, and the script that makes them."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dgmlib import pretrained
from dgmlib.data import load_fashion_mnist, toy_2d
from dgmlib.diffusion import alpha_bars, eps_kl_weights
from dgmlib.experiment import model_tensors
from dgmlib.io import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import train_lecture12 as script  # noqa: E402

TOY_MODELS = [f"ring_{w}" for w in script.TOY_VARIANTS]


def results() -> dict:
    return pretrained.results("l12")


def step2_kl_of_the_toy_evaluation(model: nn.Module, name: str) -> tuple[float, float, float]:
    """The stored mean KL of step 2 over the 4000 evaluation points, replayed from the weights:
    the script's draws in its order (per batch of 1000: the reconstruction's noise, then one
    noise per step 2..T), step 2's term recomputed. The same numbers up to float32 round-off of
    the network (relative 1e-6 on another CPU) and the stored 7 decimals: tolerance 1e-5."""
    stored = results()["models"][name]["test"]["kl_per_step"][0]
    x, _ = toy_2d(script.TOY_SET, script.TOY_EVAL_N, seed=script.TOY_EVAL_SEED)
    g = torch.Generator().manual_seed(script.SEED + 1)
    ab = alpha_bars(model.betas)[2]
    w2 = eps_kl_weights(model.betas)[1].float()
    kls = []
    with torch.no_grad():
        for xb in x.split(1000):
            torch.randn(xb.shape, generator=g)  # the reconstruction's z_1
            eps = torch.randn(xb.shape, generator=g)
            for _ in range(3, script.T + 1):  # the other steps' noise
                torch.randn(xb.shape, generator=g)
            z = ab.sqrt().float() * xb + (1 - ab).sqrt().float() * eps
            eps_hat = model.ema(z, torch.full((len(xb),), 2))
            kls.append(w2 * (eps - eps_hat).square().sum(1))
    return stored, float(torch.cat(kls).double().mean()), 1e-5


def step2_kl_of_the_fmnist_curve(model: nn.Module) -> tuple[float, float, float]:
    """The stored mean KL of step 2 over the first 200 test images (``fm_step_curve``),
    replayed: the same dequantization and noise, one network call. Float32 round-off of a deep
    network on another CPU: relative 1e-4 (an independent draw would differ by its standard
    error, about 1.7 % of the value)."""
    stored = results()["models"]["fmnist"]["step_kl_curve"][0]
    assert stored["t"] == 2
    test_images, _ = load_fashion_mnist("test")
    g = torch.Generator().manual_seed(script.SEED + 5)
    z0 = script.to_unit(test_images[: script.FM_CURVE_N], g)
    ab = alpha_bars(model.betas)
    eps = torch.randn(z0.shape, generator=g)
    zt = float(ab[2].sqrt()) * z0 + float((1 - ab[2]).sqrt()) * eps
    with torch.no_grad():
        sq = (eps - model.ema(zt, torch.full((len(z0),), 2))).double().square().flatten(1).sum(1)
    kl = float(eps_kl_weights(model.betas)[1]) * sq
    return stored["kl"], float(kl.mean()), 1e-4 * stored["kl"]


CHECKPOINT_FIGURES: dict[str, Callable[[nn.Module], tuple[float, float, float]]] = {
    **{
        f"l12_{name}": (lambda model, name=name: step2_kl_of_the_toy_evaluation(model, name))
        for name in TOY_MODELS
    },
    "l12_fmnist": step2_kl_of_the_fmnist_curve,
}


def test_results_json_matches_the_script():
    r = results()
    assert r["schema"] == "dgmlib.results/1"
    assert r["command"] == script.COMMAND and r["lecture"] == script.LECTURE and not r["quick"]
    assert r["settings"] == script.settings()
    assert sorted(r["models"]) == sorted([*TOY_MODELS, "fmnist"])
    for name in TOY_MODELS:
        m = r["models"][name]
        assert m["weighting"] == name.removeprefix("ring_")
        assert len(m["test"]["kl_per_step"]) == script.T - 1
        assert m["test"]["n_eval"] == script.TOY_EVAL_N
        assert [c["epoch"] for c in m["curves"]][-1] == script.TOY_EPOCHS
    fm = r["models"]["fmnist"]
    assert [c["epoch"] for c in fm["curves"]] == list(range(1, script.FM_EPOCHS + 1))
    assert fm["steps"] == script.FM_EPOCHS * math.ceil(60_000 / script.FM_BATCH)
    assert fm["test"]["n_images"] == 10_000 and fm["test"]["draws"] == script.FM_EVAL_DRAWS
    assert [c["t"] for c in fm["step_kl_curve"]] == [t for t in script.FM_CURVE_STEPS if t >= 2]
    for name, m in r["models"].items():
        assert pretrained.manifest()[f"l12_{name}"]["sha256"] == m["sha256"]


def test_figures_are_consistent():
    r = results()
    for name in TOY_MODELS:
        t = r["models"][name]["test"]
        assert t["elbo"] == pytest.approx(t["log_px_z1"] - t["kl_diffusion"] - t["kl_prior"])
        assert t["kl_diffusion"] == pytest.approx(sum(t["kl_per_step"]), rel=1e-5)
    fm = r["models"]["fmnist"]
    t = fm["test"]
    parts = t["kl_prior_bpd"] + t["kl_diffusion_bpd"] + t["neg_log_px_z1_bpd"] + math.log2(128)
    assert parts == pytest.approx(t["neg_elbo_bpd"], abs=1e-5)  # float32 per-image terms
    assert 0 < fm["decoder_var"] < 1


@pytest.mark.parametrize("name", [*TOY_MODELS, "fmnist"])
def test_checkpoint_is_small_and_loads_by_name(name: str):
    m = results()["models"][name]
    path = pretrained.checkpoint_dir() / m["checkpoint"]
    assert path.stat().st_size < 5_000_000
    model = pretrained.load(f"l12_{name}")
    assert sum(p.numel() for p in model.net.parameters()) == m["n_params"]
    x = torch.zeros(2, 2) if name != "fmnist" else torch.zeros(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.isfinite(model.ema(x, torch.tensor([1, 1000]))).all()
    if name == "fmnist":
        tensors, meta = load_checkpoint(path)
        samples = tensors[m["samples"]]
        assert samples.shape == (script.FM_N_SAMPLES, 1, 28, 28)
        assert float(samples.abs().max()) <= 1.0 and meta["sample_seed"] == m["sample_seed"]


@pytest.mark.parametrize("weighting", script.TOY_VARIANTS)
def test_toy_training_is_deterministic(weighting: str):
    torch.set_num_threads(script.THREADS)
    runs = [script.train_toy(weighting, 2, 500) for _ in range(2)]
    a, b = (model_tensors(m) for m, _ in runs)
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
    a, b = model_tensors(full), model_tensors(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert tr_full.step == tr_res.step == 4
    assert tr_full.optimizer.param_groups[0]["lr"] == tr_res.optimizer.param_groups[0]["lr"]
    strip = [{k: v for k, v in row.items() if k != "cpu_seconds"} for row in c_full]
    assert strip == [{k: v for k, v in row.items() if k != "cpu_seconds"} for row in c_res]


def test_fmnist_schedule_is_warm_up_then_cosine():
    """torch's schedulers give the closed form FM_LR (s + 1) / FM_WARMUP for s < FM_WARMUP, then
    FM_LR (f + (1 - f) (1 + cos(pi (s - FM_WARMUP) / (S - FM_WARMUP))) / 2), within float64
    round-off of their recursive updates (relative 1e-12), over the whole run of S steps; and
    Adam's step size lr / (1 - beta_1^(s + 1)), the only place the rate enters, is the same in
    float32 at every step (so the stored weights are what the schedule of this script makes)."""
    total = script.FM_EPOCHS * math.ceil(60_000 / script.FM_BATCH)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=script.FM_LR)
    sched = script.fm_scheduler(opt, total)
    f, lrs = script.FM_LR_FINAL, []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    warm, rest = script.FM_WARMUP, total - script.FM_WARMUP
    closed = [
        script.FM_LR * (s + 1) / warm
        if s < warm
        else script.FM_LR * (f + (1 - f) * 0.5 * (1 + math.cos(math.pi * (s - warm) / rest)))
        for s in range(total)
    ]
    assert max(abs(a / b - 1) for a, b in zip(lrs, closed, strict=True)) < 1e-12
    bias1 = [1 - 0.9 ** (s + 1) for s in range(total)]
    ours = np.float32(np.array(lrs) / np.array(bias1))
    assert np.array_equal(ours, np.float32(np.array(closed) / np.array(bias1)))


def test_bits_per_dim_conversion():
    """The script's conversion: an ELBO of 0 nats for z_0 in [-1, 1) is log2(128) = 7 bits."""
    assert float(script.bits_per_dim(torch.tensor(0.0, dtype=torch.float64), 784)) == (
        pytest.approx(7.0)
    )
    elbo = torch.tensor(-784 * math.log(2), dtype=torch.float64)
    assert float(script.bits_per_dim(elbo, 784)) == pytest.approx(8.0)
