"""Lecture 06: the checkpoints it loads, their results, and the script that makes them."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from dgmlib import pretrained
from dgmlib.experiment import save_model, spec_of
from dgmlib.io import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import train_lecture06 as script  # noqa: E402

# Round-off allowance for a mean over images of float32 log-densities, each a sum of 784 pixel
# terms (and Z latent terms): a different summation order moves a sum by at most 784 * 2^-24 of
# the sum of the terms' magnitudes (below 400 nats here), about 0.02 nats; a wrong or mis-loaded
# weight, or a model of another epoch, moves the figure by a nat or more.
ROUNDOFF_784 = 784 * 2**-24 * 400


def last_test_elbo(name: str) -> Callable[[nn.Module], tuple[float, float, float]]:
    """The stored test ELBO of the last epoch's curve (``ELBO_SAMPLES`` samples per image of the
    first ``curve_images`` test images, generator seeded ``SEED``) against the same computation
    from the weights: the same draws, so only round-off separates the two."""

    def figure(model: nn.Module) -> tuple[float, float, float]:
        r = pretrained.results("l06")
        x = script.fixed_binary("test", script.TEST_BINARIZATION_SEED)
        recomputed = script.test_elbo(model, x[: r["settings"]["curve_images"]], script.SEED)
        return r["models"][name]["curves"][-1]["test_elbo"], recomputed["elbo"], ROUNDOFF_784

    return figure


CHECKPOINT_FIGURES = {f"l06_{name}": last_test_elbo(name) for name in script.MODELS}


def results() -> dict:
    return pretrained.results("l06")


def test_results_match_the_script():
    r = results()
    assert (r["schema"], r["lecture"], r["command"], r["quick"]) == (
        "dgmlib.results/1",
        script.LECTURE,
        script.COMMAND,
        False,
    )
    s = r["settings"]
    assert s["epochs"] == script.EPOCHS and s["seed"] == script.SEED
    assert s["threads"] == script.THREADS == 1
    assert s["nll_K"] == script.NLL_K and s["nll_images"] == script.N_NLL
    assert s["surgery_images"] == 60_000 and s["surgery_samples"] == script.SURGERY_SAMPLES
    assert s["prior_kwargs"] == script.PRIOR_KWARGS
    assert set(r["models"]) == set(script.MODELS)
    for name, m in r["models"].items():
        t = m["test"]
        assert (m["z_dim"], m["prior"]) == script.MODELS[name]
        assert [c["epoch"] for c in m["curves"]] == list(range(1, script.EPOCHS + 1))
        assert len(t["nll_notebook_subset"]) == script.N_NOTEBOOK
        # the signs of the schema: E_q log p(x|z) <= 0 for binary data, KL >= 0, nll = -log p(x)
        assert t["log_px_z"] < 0 < t["kl"] and t["nll"] > 0
        assert t["elbo"] == pytest.approx(t["log_px_z"] - t["kl"], abs=1e-4)
        # sanity line only (the two figures come from different image sets, 10k vs 500, so
        # this is no check of the bound; Lecture 06 compares bounds on one image set): the
        # stored NLL is not wildly above -ELBO, which catches a flipped sign or a unit error
        assert t["nll"] < -t["elbo"] + 3


@pytest.mark.parametrize("name", list(script.MODELS))
def test_surgery_terms_are_consistent(name: str):
    m = results()["models"][name]
    s, holes = m["surgery"], m["holes"]
    assert s["n_data"] == 60_000
    assert s["log_n"] == pytest.approx(math.log(60_000))
    assert s["avg_kl"] == pytest.approx(s["marginal_kl"] + s["mutual_info"], abs=1e-6)
    # 0 <= I <= log N (float32 rounding of the mixture kernel allowed), KL(q(z)||p(z)) >= 0
    assert -1e-3 <= s["mutual_info"] <= s["log_n"] + 1e-3
    assert s["marginal_kl"] > -3 * s["marginal_kl_se"]
    # sanity line only (training-set surgery against the test set's KL term: they differ by
    # the generalisation gap, which no closed form predicts): same quantity, same units
    assert s["avg_kl"] == pytest.approx(m["test"]["kl"], abs=1.0)
    if m["prior"] == "standard":
        assert abs(s["avg_kl"] - s["avg_kl_exact"]) < 4 * s["avg_kl_se"]
    assert 0 <= holes["hole_mass"] <= 1 and holes["ratio"] == script.HOLE_RATIO


@pytest.mark.parametrize("name", list(script.MODELS))
def test_checkpoint_is_small_and_made_by_the_script(name: str):
    m = results()["models"][name]
    path = pretrained.checkpoint_dir() / m["checkpoint"]
    assert path.stat().st_size < 5_000_000
    assert pretrained.manifest()[f"l06_{name}"]["sha256"] == m["sha256"]
    _, meta = load_checkpoint(path, m["sha256"])
    assert {k: v for k, v in meta.items() if k != "spec"} == script.checkpoint_metadata(
        name, script.EPOCHS
    )
    model = pretrained.load(f"l06_{name}")
    assert spec_of(model) == spec_of(script.build(name))
    assert (
        type(model.prior)
        .__name__.lower()
        .startswith(
            {"standard": "standard", "mog": "mixture", "vamp": "vamp", "flow": "flow"}[m["prior"]]
        )
    )
    assert m["n_params"] == sum(p.numel() for p in model.parameters())
    assert m["n_prior_params"] == sum(p.numel() for p in model.prior.parameters())
    with torch.no_grad():
        assert torch.isfinite(model.elbo(torch.zeros(2, 1, 28, 28))).all()
        assert torch.isfinite(model.prior.log_prob(model.prior.sample(3))).all()


def test_networks_start_from_the_same_weights_for_every_prior():
    for z in (2, 10):
        nets = [script.build(f"z{z}_{p}") for p in script.PRIOR_KWARGS]
        w = [
            torch.cat([p.flatten() for p in (*m.encoder.parameters(), *m.decoder.parameters())])
            for m in nets
        ]
        assert all(torch.equal(w[0], v) for v in w[1:])


def test_vamp_pseudo_inputs_start_at_training_images():
    images = torch.randint(
        0, 256, (300, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    u = script.build("z2_vamp", images).prior.pseudo_inputs().detach()
    idx = torch.randperm(300, generator=torch.Generator().manual_seed(script.PSEUDO_SEED))[:100]
    expected = (images[idx].float() / 255).clamp(0.01, 0.99).unsqueeze(1)
    assert (u - expected).abs().max() < 1e-6  # sigmoid(logit(p)) = p up to float32 round-off


def tiny_run(out: Path, name: str, schedule: list[int]) -> tuple[str, list[dict]]:
    """Train ``name`` on 200 random images for the epochs in ``schedule`` (a resume between
    entries); return the checkpoint's SHA-256 and the curves."""
    images = torch.randint(
        0, 256, (200, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    x_test = torch.bernoulli(
        torch.full((20, 1, 28, 28), 0.3), generator=torch.Generator().manual_seed(1)
    )
    (out / "l06_resume").mkdir(parents=True)
    for epochs in schedule:
        cfg = {"epochs": epochs, "n_train": 200, "n_curve": 20}
        model, curves, _ = script.train_one(name, images, x_test, cfg, out)
    path = out / f"l06_{name}.safetensors"
    return save_model(path, model, **script.checkpoint_metadata(name, schedule[-1])), curves


@pytest.mark.parametrize("name", ["z2_vamp", "z10_flow"])
def test_training_is_deterministic_and_resumable(tmp_path: Path, name: str):
    """Two runs of the recipe give the same checkpoint hash; so does an interrupted one."""
    torch.set_num_threads(script.THREADS)
    a, curves = tiny_run(tmp_path / "a", name, [2])
    b, _ = tiny_run(tmp_path / "b", name, [2])
    c, resumed_curves = tiny_run(tmp_path / "c", name, [1, 2])
    assert a == b == c
    assert [x["epoch"] for x in curves] == [1, 2] and resumed_curves == curves
