"""The GPU path: ``benchmarks/gpu.sh`` where there is no GPU, its program checked on the CPU (a
dry run), and, on a CUDA machine (``pytest -m cuda``, run by ``benchmarks/gpu.sh``),
``DGMLIB_DEVICE=cuda`` in the Trainer and the samplers' devices.

The Triton kernels themselves, and the objectives on them, are checked against their references
in ``tests/test_kernels_triton.py`` (on a GPU by its ``TestCompiledOnGPU``)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
GPU_JSON = ROOT / "benchmarks" / "results" / "gpu.json"
CUDA = torch.cuda.is_available()


def cuda_test(fn):
    """A CUDA-only test: ``pytest -m cuda`` (benchmarks/gpu.sh) selects it; skipped elsewhere."""
    skip = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (benchmarks/gpu.sh runs these)")
    return pytest.mark.cuda(skip(fn))


@pytest.mark.slow
def test_gpu_sh_without_a_gpu():
    """With no visible GPU the script says so on its first line, exits 0 and writes nothing."""
    before = GPU_JSON.stat().st_mtime_ns if GPU_JSON.exists() else None
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHON=sys.executable)
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu.sh")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first = proc.stdout.splitlines()[0]
    assert first.startswith("no CUDA GPU found: ") and first.endswith("; nothing measured"), first
    assert (GPU_JSON.stat().st_mtime_ns if GPU_JSON.exists() else None) == before


@pytest.mark.slow
def test_gpu_program_dry_run(tmp_path):
    """``benchmarks/gpu.py --dry-run``: every step of the GPU program on the CPU (tiny sizes,
    the Triton interpreter), so that the GPU run does not fail on a bug in its own plumbing."""
    out = tmp_path / "gpu.json"
    env = dict(os.environ, DGMLIB_THREADS="1")
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--dry-run", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["schema"] == "dgmlib.gpu/1" and result["dry_run"] is True
    assert {"torch", "triton", "device"} <= result["environment"].keys()
    kernels = result["kernels"]
    rows = kernels["mixture"] + kernels["vq"] + kernels["rowwise"]
    assert len(rows) == 16 and not [r for r in rows if "error" in r]
    assert all(r["ms"] > 0 for r in rows)
    # float32 against float64 references: the kernel tests' float32 tolerance, 1e-5
    errors = [r[k] for r in rows for k in r if k.startswith("max_")]
    assert errors and max(errors) < 1e-5, errors
    assert all(r["index_agreement"] == 1.0 for r in kernels["vq"])
    epochs = {(r["model"], r["backend"]): r for r in result["epochs"]}
    assert sorted(epochs) == [("iwae5", "torch"), ("iwae5", "triton"), ("vae", "torch"),
                              ("vae", "triton")]  # fmt: skip
    for (model, backend), r in epochs.items():
        assert r["fused_kernel_used"] is (backend == "triton"), (model, backend)
        assert r["steps"] == 3 and math.isfinite(r["mean_loss"])
        # the same initial weights, batches and noise: the kernels change only round-off (over
        # three Adam steps far below 0.01 nats; each loss is printed to 0.001)
        other = epochs[(model, "torch")]
        assert abs(r["mean_loss"] - other["mean_loss"]) <= 0.01, (model, r, other)


# ----------------------------------------------------------------------------------------------
# On a CUDA GPU
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def on_cuda(monkeypatch):
    """``$DGMLIB_DEVICE=cuda`` for the test."""
    monkeypatch.setenv("DGMLIB_DEVICE", "cuda")


@cuda_test
def test_trainer_honours_dgmlib_device(on_cuda, tmp_path):
    """The Trainer moves the model and every CPU batch to $DGMLIB_DEVICE, and a resumed run
    continues there (optimizer state included)."""
    from dgmlib.models.vae import VAE
    from dgmlib.objectives import ELBO
    from dgmlib.train import Trainer
    from dgmlib.utils import get_device

    assert get_device().type == "cuda"
    torch.manual_seed(0)
    model = VAE.for_mnist(z_dim=4, hidden=16)
    trainer = Trainer(model, torch.optim.Adam(model.parameters(), 1e-3), ELBO(), progress=False)
    x = torch.bernoulli(torch.full((8, 1, 28, 28), 0.3))  # on the CPU
    terms = trainer.train_step(x)
    assert math.isfinite(terms["loss"])
    assert {p.device.type for p in trainer.model.parameters()} == {"cuda"}
    path = tmp_path / "state.safetensors"
    trainer.save(path)
    fresh = VAE.for_mnist(z_dim=4, hidden=16)
    resumed = Trainer(fresh, torch.optim.Adam(fresh.parameters(), 1e-3), ELBO(), progress=False)
    resumed.load(path)
    states = [t for s in resumed.optimizer.state.values() for t in s.values()]
    assert any(t.device.type == "cuda" for t in states if isinstance(t, torch.Tensor))
    assert math.isfinite(resumed.train_step(x)["loss"]) and resumed.step == 2


@cuda_test
@pytest.mark.parametrize("prior", ["standard", "mog", "vamp", "flow"])
@pytest.mark.parametrize("generator", [False, True])
def test_vae_samples_on_its_device_and_dtype(prior, generator):
    """``VAE.sample`` draws on the model's device in its dtype, with or without a generator (a
    generator lives on the device it draws on)."""
    from dgmlib.models.vae import VAE

    torch.manual_seed(0)
    model = VAE.for_mnist(z_dim=4, hidden=16, prior=prior).to("cuda", torch.float64)
    g = torch.Generator(device="cuda").manual_seed(0) if generator else None
    x = model.sample(3, generator=g)
    assert x.device.type == "cuda" and x.dtype == torch.float64 and x.shape == (3, 1, 28, 28)


@cuda_test
@pytest.mark.parametrize("name", ["gan.Generator", "CategoricalVAE", "PPCA"])
def test_other_samplers_on_their_device(name):
    """The other models' ``sample(n)`` draw on the model's device."""
    torch.manual_seed(0)
    if name == "gan.Generator":
        from dgmlib.gan import Generator

        model = Generator(z_dim=2, hidden=8, x_dim=2)
    elif name == "CategoricalVAE":
        from dgmlib.models import CategoricalVAE

        model = CategoricalVAE(n_latent=3, n_categories=4, hidden=16)
    else:
        from dgmlib.models import PPCA

        model = PPCA(W=torch.randn(5, 2), mu=torch.zeros(5), sigma2=0.5)
        model = PPCA(W=model.W.cuda(), mu=model.mu.cuda(), sigma2=0.5)
    x = (model if name == "PPCA" else model.to("cuda")).sample(3)
    assert x.device.type == "cuda"
