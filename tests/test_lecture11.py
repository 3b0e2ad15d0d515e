"""Lecture 11: the checkpoints it loads, their results, and the script that makes them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from dgmlib import pretrained
from dgmlib.kl_control import linear_warmup
from dgmlib.models.binary_hierarchy import BinaryHierarchyVAE
from dgmlib.models.hierarchical import BottomUpVAE, LadderVAE

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import train_lecture11 as script  # noqa: E402

FMNIST = [script.fmnist_name(v, s) for s in script.SEEDS for v in script.VARIANTS]
BINARY = [f"l11_binary_{m}" for m in script.BIN_MODES]


def results() -> dict:
    return pretrained.results("l11")


def _fmnist_figure(name: str) -> Callable[[nn.Module], tuple[float, float, float]]:
    def figure(model: nn.Module) -> tuple[float, float, float]:
        stored = results()["models"][name]["check_kl_z2"]
        x = script.fmnist_test_set(script.CHECK_IMAGES)
        # the same draws (CHECK_SEED) as the script: only float32 round-off differs between CPU
        # kernels, about 1e-6 of values of a few nats; 1e-3 nats leaves a wide margin
        return stored, script.check_figure(model, x), 1e-3

    return figure


def _binary_figure(name: str) -> Callable[[nn.Module], tuple[float, float, float]]:
    def figure(model: nn.Module) -> tuple[float, float, float]:
        stored = results()["models"][name]["test"]["nll"]
        _, x_test = script.binary_data()
        with torch.no_grad():
            recomputed = -float(model.log_prob(x_test).mean())
        # exact enumeration in float64: round-off only (sums of 4096 terms of about 20 nats)
        return stored, recomputed, 1e-9

    return figure


#: every checkpoint of the lecture -> (stored, recomputed, tolerance) of one stored figure
CHECKPOINT_FIGURES: dict[str, Callable[[nn.Module], tuple[float, float, float]]] = {
    **{name: _fmnist_figure(name) for name in FMNIST},
    **{name: _binary_figure(name) for name in BINARY},
}


def test_results_json_matches_the_script():
    r = results()
    assert r["command"] == script.COMMAND and not r["quick"]
    assert r["lecture"] == script.LECTURE and r["schema"] == "dgmlib.results/1"
    assert r["settings"] == script.settings()
    assert sorted(r["models"]) == sorted(FMNIST + BINARY)
    manifest = pretrained.manifest()
    for name, m in r["models"].items():
        assert manifest[name]["sha256"] == m["sha256"] and m["checkpoint"] == f"{name}.safetensors"


@pytest.mark.parametrize("name", FMNIST)
def test_fmnist_figures_are_consistent(name):
    m = results()["models"][name]
    inference, warmup = script.VARIANTS[m["variant"]]
    assert (m["inference"], m["kl_warmup"]) == (inference, warmup)
    t = m["test"]
    assert t["elbo"] == pytest.approx(t["log_px_z"] - t["kl_z1"] - t["kl_z2"], abs=1e-3)
    assert 0 <= t["au_z1"] <= script.ARCH["z1_dim"] and 0 <= t["au_z2"] <= script.ARCH["z2_dim"]
    assert t["kl_z2"] > 0 and t["nll"] > 0
    assert [c["epoch"] for c in m["curves"]] == list(range(1, script.EPOCHS + 1))
    steps_per_epoch = 60_000 // script.BATCH
    for c in m["curves"]:
        # the weight set before the epoch's last step (step counter = epoch * steps - 1)
        expected = linear_warmup(c["epoch"] * steps_per_epoch - 1, script.WARMUP_STEPS)
        assert c["kl_weight"] == pytest.approx(expected if warmup else 1.0)


@pytest.mark.parametrize("name", FMNIST[:4] + BINARY)
def test_checkpoints_load_by_name(name):
    model = pretrained.load(name)
    expected = {"bottom-up": BottomUpVAE, "top-down": LadderVAE}
    if name in BINARY:
        assert isinstance(model, BinaryHierarchyVAE)
    else:
        assert isinstance(model, expected[results()["models"][name]["inference"]])
    assert not model.training


@pytest.mark.parametrize("name", BINARY)
def test_binary_figures_are_consistent(name):
    t = results()["models"][name]["test"]
    assert t["elbo"] == pytest.approx(t["log_px_z"] - t["kl"], abs=1e-9)
    # the exact gap, split by layer
    assert -t["nll"] - t["elbo"] == pytest.approx(t["gap_top"] + t["gap_bottom"], abs=1e-9)
    assert t["gap_top"] >= 0 and t["gap_bottom"] >= 0


def test_training_resumes_identically(tmp_path):
    """One epoch, an interruption, a second epoch: the same weights as two epochs in one go."""
    images = script.load_fashion_mnist("train")[0][:300]
    x_curve = script.fmnist_test_set(20)

    def run(epochs: int, file: Path) -> nn.Module:
        torch.manual_seed(0)
        model, curves, _ = script.train_fmnist_one(
            "topdown_warmup", 0, images, x_curve, epochs, file, "cpu"
        )
        return model, curves

    straight, curves = run(2, tmp_path / "a.safetensors")
    run(1, tmp_path / "b.safetensors")
    resumed, curves_b = run(2, tmp_path / "b.safetensors")
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert [c["epoch"] for c in curves_b] == [1, 2] and curves_b[1]["elbo"] == curves[1]["elbo"]
