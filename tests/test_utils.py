"""dgmlib.utils: seeds, threads, device choice, the notebook preamble; importing dgmlib stays
light."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import dgmlib
from dgmlib.utils import get_device, seed_everything, set_threads


def test_seed_everything_reproduces():
    seed_everything(3)
    a = torch.randn(5)
    g = seed_everything(3)
    assert torch.equal(a, torch.randn(5))
    assert torch.equal(torch.randn(2, generator=g), torch.randn(2, generator=seed_everything(3)))
    with pytest.raises(ValueError, match="seed_everything: seed must be an integer >= 0, got -1"):
        seed_everything(-1)
    with pytest.raises(TypeError, match="seed_everything: seed must be an integer >= 0"):
        seed_everything(1.0)


def test_threads_and_device(monkeypatch):
    assert set_threads(2) == 2 and torch.get_num_threads() == 2
    with pytest.raises(ValueError, match="set_threads: n must be an integer >= 1, got 0"):
        set_threads(0)
    monkeypatch.delenv("DGMLIB_DEVICE", raising=False)
    assert get_device() == torch.device("cpu")
    if not torch.cuda.is_available():
        monkeypatch.setenv("DGMLIB_DEVICE", "cuda")
        with pytest.raises(RuntimeError, match="unset DGMLIB_DEVICE"):
            get_device()


def test_notebook_setup_seeds_styles_and_returns_the_device(monkeypatch):
    import matplotlib.pyplot as plt

    from dgmlib.plot import STYLE

    monkeypatch.delenv("DGMLIB_DEVICE", raising=False)
    monkeypatch.setenv("DGMLIB_THREADS", "1")
    plt.rcParams["font.size"] = 5.0
    assert dgmlib.notebook_setup(7) == torch.device("cpu")
    a = torch.randn(3)
    torch.manual_seed(7)
    assert torch.equal(a, torch.randn(3))  # the global stream starts at the seed
    assert torch.get_num_threads() == 1
    assert all(plt.rcParams[k] == v for k, v in STYLE.items())


def test_import_is_light():
    """`import dgmlib` imports neither triton nor the kernels, and does not initialise CUDA."""
    code = (
        "import sys, dgmlib, torch; "
        "assert 'triton' not in sys.modules, 'triton imported'; "
        "assert 'dgmlib.kernels' not in sys.modules; "
        "assert not torch.cuda.is_initialized()"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
