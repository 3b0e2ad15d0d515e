"""Lecture 09: the checkpoints it loads, their results file, and the script that makes them."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from dgmlib import pretrained
from dgmlib.experiment import load_model_file, model_tensors
from dgmlib.io import read_json

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import train_lecture09 as script  # noqa: E402


def _stored(name: str, key: str) -> float:
    return pretrained.results("l09")["models"][name]["test"][key]


def _ratio_figure(model: nn.Module) -> tuple[float, float, float]:
    # Gauss-Hermite mean of the logit under p: no sampling, float32 network (round-off ~1e-7)
    return _stored("ratio", "kl_quadrature"), script.evaluate_ratio(model)["kl_quadrature"], 1e-5


def _gauss_figure(model: nn.Module) -> tuple[float, float, float]:
    # mean T on 20000 joint pairs from a fixed seed: the same samples, so only float32 round-off
    # of the networks differs (1e-6 per value at most; 1e-4 leaves room for other CPU kernels)
    return _stored("gauss_avb", "kl"), script.evaluate_gauss(model)["kl"], 1e-4


def _toy_log_px_figure(name: str) -> Callable[[nn.Module], tuple[float, float, float]]:
    def figure(model: nn.Module) -> tuple[float, float, float]:
        # mean log p(x) by the midpoint rule on the 128 x 128 grid, float64: deterministic
        return _stored(name, "log_px_mean"), float(script.toy_log_px(model)[0].mean()), 1e-6

    return figure


def _vae_gap_figure(model: nn.Module) -> tuple[float, float, float]:
    # the VAE's ELBO gap by quadrature (Gaussian q on the grid, float64): deterministic
    log_px, log_post, grid, area = script.toy_log_px(model)
    gap = script.kl(script.toy_log_q("toy_vae", model, grid), log_post, area)
    return _stored("toy_vae", "gap_mean"), float(gap.mean()), 1e-6


CHECKPOINT_FIGURES: dict[str, Callable[[nn.Module], tuple[float, float, float]]] = {
    "l09_ratio": _ratio_figure,
    "l09_gauss_avb": _gauss_figure,
    "l09_toy_avb": _toy_log_px_figure("toy_avb"),
    "l09_toy_vae": _vae_gap_figure,
}


def test_results_match_the_script():
    r = pretrained.results("l09")
    assert r["schema"] == "dgmlib.results/1" and r["lecture"] == script.LECTURE
    assert r["command"] == script.COMMAND and not r["quick"]
    assert r["settings"] == json.loads(json.dumps(script.settings()))  # tuples read as lists
    assert sorted(r["models"]) == sorted(script.MODELS)
    for name, entry in r["models"].items():
        assert entry["checkpoint"] == f"l09_{name}.safetensors"
        assert pretrained.manifest()[f"l09_{name}"]["sha256"] == entry["sha256"]
        assert len(entry["curves"]) == script.EPOCHS[name]
        assert entry["curves"][-1]["step"] == script.EPOCHS[name] * script.STEPS[name]


@pytest.mark.parametrize("name", script.MODELS)
def test_checkpoint_is_small_and_rebuilds_the_architecture(name: str):
    model = pretrained.load(f"l09_{name}")
    fresh = script.build(name)
    assert type(model) is type(fresh)
    shapes = {k: v.shape for k, v in model_tensors(model).items()}
    assert shapes == {k: v.shape for k, v in model_tensors(fresh).items()}
    entry = pretrained.results("l09")["models"][name]
    assert sum(p.numel() for p in model.parameters()) == entry["n_params"]
    assert (pretrained.checkpoint_dir() / entry["checkpoint"]).stat().st_size < 400_000


def test_the_gaussian_decoder_stayed_the_true_one():
    dec = pretrained.load("l09_gauss_avb").decoder
    assert dec.net[0].weight.item() == 1.0 and dec.net[0].bias.item() == 0.0
    assert torch.allclose(dec.logvar, torch.tensor([2 * torch.log(torch.tensor(0.5)).item()]))


def _run_quick(out: Path) -> dict:
    assert script.main(["--quick", "--out", str(out)]) == 0
    return read_json(out / "l09_results.json")


def test_quick_run_is_deterministic_and_writes_the_manifest(tmp_path: Path):
    a, b = _run_quick(tmp_path / "a"), _run_quick(tmp_path / "b")
    for name in script.MODELS:
        assert a["models"][name]["sha256"] == b["models"][name]["sha256"], name
        assert a["models"][name]["test"] == b["models"][name]["test"], name
    manifest = read_json(tmp_path / "a" / "manifest.json")
    assert sorted(manifest) == sorted(f"l09_{n}" for n in script.MODELS)
    assert not (tmp_path / "a" / "l09_resume").exists()
    model = load_model_file(tmp_path / "a" / "l09_toy_avb.safetensors")
    assert model.encoder.output_std == script.TOY_OUTPUT_STD


@pytest.mark.parametrize("name", ["gauss_avb", "toy_avb"])
def test_a_resumed_run_repeats_an_uninterrupted_one(tmp_path: Path, name: str):
    whole, _, _ = script.train(name, tmp_path / "whole", quick=True, device="cpu")
    script.train(name, tmp_path / "parts", quick=True, device="cpu", stop_after=1)
    resumed, curves, _ = script.train(name, tmp_path / "parts", quick=True, device="cpu")
    a, b = model_tensors(whole), model_tensors(resumed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert len(curves) == script.QUICK["epochs"]
