"""Lecture 08: the checkpoints it loads, their JSON of results, and the script that makes them."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from helpers import stored_results
from scipy import integrate, stats
from torch import nn

from dgmlib import experiment, pretrained
from dgmlib.io import sha256_file, sidecar_path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import train_lecture08 as script  # noqa: E402

GANS = [f"gan_{kind}" for kind in script.LOSSES]
COLLAPSE = [f"collapse_{method}_s{seed}" for method in script.C_METHODS for seed in script.C_SEEDS]
SAVED = [name for name in COLLAPSE if name.split("_")[1] in script.C_SAVED]  # with a checkpoint


def results() -> dict:
    return pretrained.results("l08")


def saved_run(name: str) -> dict:
    """The results entry of checkpoint ``l08_<name>``."""
    return results()["models"][pretrained.manifest()[f"l08_{name}"]["model"]]


def disc1d_value(model: nn.Module) -> tuple[float, float, float]:
    """The stored ``V(G, D)`` of the trained 1-D discriminator against the value recomputed
    from its weights: both by the rectangle rule in float64 over 4001 points (round-off ~1e-13),
    from the same float32 weights: tolerance 1e-9 nats."""
    return saved_run("disc1d")["test"]["value"], script.evaluate_disc1d(model)["value"], 1e-9


def gan_high_quality(kind: str) -> Callable[[nn.Module], tuple[float, float, float]]:
    """The stored fraction of high-quality samples of the final generator against the fraction
    recomputed from the weights (float64, the same latent codes). A count changes only if a
    sample moves across the 3-sigma threshold by round-off (the notebook checks a margin of
    1e-9), so the counts must agree: tolerance half a sample, 0.5 / EVAL_N."""

    def figure(model: nn.Module) -> tuple[float, float, float]:
        recomputed = script.coverage(model.generator, script.eval_codes())["high_quality"]
        return saved_run(f"gan_{kind}")["test"]["high_quality"], recomputed, 0.5 / script.EVAL_N

    return figure


def collapse_high_quality(name: str) -> Callable[[nn.Module], tuple[float, float, float]]:
    """The stored fraction of high-quality samples of a final collapse-experiment generator
    against the fraction recomputed from its weights (float64, the same latent codes); as for
    the GANs above, the counts must agree: tolerance half a sample, 0.5 / EVAL_N."""

    def figure(model: nn.Module) -> tuple[float, float, float]:
        recomputed = script.coverage(model, script.collapse_codes())["high_quality"]
        return saved_run(name)["test"]["high_quality"], recomputed, 0.5 / script.EVAL_N

    return figure


CHECKPOINT_FIGURES: dict[str, Callable[[nn.Module], tuple[float, float, float]]] = {
    "l08_disc1d": disc1d_value,
    **{f"l08_gan_{kind}": gan_high_quality(kind) for kind in script.LOSSES},
    **{f"l08_{name}": collapse_high_quality(name) for name in SAVED},
}


def test_results_json_matches_the_script():
    r = stored_results("l08", script)
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
    runs = {k: v for k, v in r["models"].items() if k.startswith("gan_")}
    assert sorted(runs) == sorted(f"gan_{k}_s{s}" for k in script.LOSSES for s in script.SEEDS)
    assert sorted(r["models"]) == sorted(["disc1d", *runs, *COLLAPSE])
    assert set(CHECKPOINT_FIGURES) == {f"l08_{name}" for name in ("disc1d", *GANS, *SAVED)}
    assert all(("checkpoint" in r["models"][name]) == (name in SAVED) for name in COLLAPSE)
    steps = script.GAN_STEPS
    steps_d1 = list(range(script.D1_LOG_EVERY, script.D1_STEPS + 1, script.D1_LOG_EVERY))
    assert [row["step"] for row in r["models"]["disc1d"]["curves"]] == steps_d1
    for run in runs.values():
        evals = run["curves"]
        assert [e["step"] for e in evals] == list(range(script.EVAL_EVERY, steps + 1, 50))
        assert [e["step"] for e in run["log"]] == list(range(script.LOG_EVERY, steps + 1, 10))
        for e in evals:
            assert e["modes"] == sum(c >= 10 for c in e["counts"])
            assert e["high_quality"] == pytest.approx(sum(e["counts"]) / script.EVAL_N, abs=1e-12)
        final = {k: evals[-1][k] for k in ("modes", "high_quality", "counts")}
        assert run["test"] == final  # the last evaluation is of the final generator


def test_collapse_results_match_the_script():
    """The collapse runs: the stored settings are the script's, every run is evaluated every
    C_EVAL_EVERY steps and logged every LOG_EVERY steps, and its figures are consistent."""
    r = stored_results("l08", script)
    c = r["settings"]["collapse"]
    assert c == script.collapse_settings(script.C_STEPS, script.C_SEEDS)
    for name in COLLAPSE:
        run = r["models"][name]
        evals, log = run["curves"], run["log"]
        steps = script.C_STEPS
        assert [e["step"] for e in evals] == list(range(script.C_EVAL_EVERY, steps + 1, 50))
        assert [e["step"] for e in log] == list(range(script.LOG_EVERY, steps + 1, 10))
        for e in evals:
            assert e["modes"] == sum(n >= 10 for n in e["counts"])
            assert sum(e["nearest"]) == script.EVAL_N
            assert all(a >= b for a, b in zip(e["nearest"], e["counts"], strict=True))
            assert e["grad_norm_minimax"] >= 0 and e["grad_norm_nonsaturating"] >= 0
            assert 0 <= e["d_fake_eval"] <= 1
        assert all(row["loss_d_se"] > 0 for row in log)
        assert run["test"] == {k: evals[-1][k] for k in ("modes", "high_quality", "counts")}


def test_disc1d_value_is_just_below_the_optimum():
    """No discriminator beats D*: the stored V(G, D) lies below V(G, D*), computed here by
    scipy's adaptive quadrature from scipy's densities (error below 1e-10), and within the
    lecture's target gap of 0.01 nats."""
    (w0, m0, s0), (w1, m1, s1) = script.PD_MIX

    def integrand(x: float) -> float:
        pd = w0 * stats.norm.pdf(x, m0, s0) + w1 * stats.norm.pdf(x, m1, s1)
        pg = stats.norm.pdf(x, 0.0, script.PG_STD)
        return sum(p * math.log(p / (pd + pg)) for p in (pd, pg) if p > 0)

    v_star, err = integrate.quad(integrand, -12, 12, epsabs=1e-13, epsrel=1e-13, limit=200)
    assert err < 1e-10
    assert v_star - 0.01 < saved_run("disc1d")["test"]["value"] < v_star


@pytest.mark.parametrize("name", ["disc1d", *GANS, *SAVED])
def test_checkpoint_is_small_verified_and_loads_by_name(name: str):
    entry = saved_run(name)
    path = pretrained.checkpoint_dir() / entry["checkpoint"]
    assert path.stat().st_size < 100_000
    assert sidecar_path(path).read_text().split() == [sha256_file(path), path.name]
    assert entry["sha256"] == sha256_file(path) == pretrained.manifest()[f"l08_{name}"]["sha256"]
    model = pretrained.load(f"l08_{name}")
    if name == "disc1d":
        expected = script.build_disc1d()
    elif name.startswith("collapse_"):
        expected = script.build_collapse(entry["seed"])[0]
    else:
        expected = script.build_gan()
    assert experiment.spec_of(model) == experiment.spec_of(expected)
    assert sum(p.numel() for p in model.parameters()) == entry["n_params"]
    if name == "disc1d":  # the stored figures are those of the stored weights
        figures = script.evaluate_disc1d(model)
        for key in ("avg_abs_error", "max_abs_error", "value"):
            assert figures[key] == pytest.approx(entry["test"][key], abs=1e-9)
    elif name.startswith("collapse_"):
        counts = script.coverage(model, script.collapse_codes())["counts"]
        assert counts == entry["test"]["counts"]
    else:
        counts = script.coverage(model.generator, script.eval_codes())["counts"]
        assert counts == entry["test"]["counts"]


def test_training_is_deterministic(tmp_path: Path):
    """Two short runs of the recipe give the same checkpoint hashes and the same curves."""
    torch.set_num_threads(script.THREADS)
    x_data = script.ring_data()
    hashes, curves = [], []
    for run in ("a", "b"):
        disc, curve = script.train_disc1d(steps=100, n=500)
        h = [experiment.save_model(tmp_path / f"{run}_d.safetensors", disc)]
        out = [curve]
        for kind in script.LOSSES:
            gan, c, log = script.train_gan(kind, 1, x_data, steps=40, every=20)
            h.append(experiment.save_model(tmp_path / f"{run}_{kind}.safetensors", gan))
            out += [c, log]
        hashes.append(h)
        curves.append(out)
    assert hashes[0] == hashes[1] and len(set(hashes[0])) == 3
    assert curves[0] == curves[1]
    assert [row["step"] for row in curves[0][0]] == [50, 100]
    assert [row["step"] for row in curves[0][1]] == [20, 40] and len(curves[0][2]) == 4


def test_collapse_training_is_deterministic_and_unrolling_changes_it(tmp_path: Path):
    """Two short runs of each method give the same generator hashes and curves; the plain and
    the unrolled runs (same initialisation and batches) differ."""
    torch.set_num_threads(script.THREADS)
    x_data = script.ring_data()
    runs = []
    for _ in range(2):
        out = {}
        for method in script.C_METHODS:
            gen, curves, log = script.train_collapse(method, 1, x_data, steps=20, every=10)
            out[method] = (experiment.save_model(tmp_path / f"{method}.safetensors", gen), curves)
            assert [row["step"] for row in log] == [10, 20]
        runs.append(out)
    assert runs[0] == runs[1]
    assert runs[0]["plain"][0] != runs[0]["unrolled"][0]
    with pytest.raises(ValueError, match="method must be one of"):
        script.train_collapse("wgan", 0, x_data, steps=1)
