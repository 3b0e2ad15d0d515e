"""dgmlib.utils: seeds, threads, device choice; importing dgmlib stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from dgmlib.utils import get_device, seed_everything, set_threads


def test_seed_everything_reproduces():
    seed_everything(3)
    a = torch.randn(5)
    g = seed_everything(3)
    assert torch.equal(a, torch.randn(5))
    assert torch.equal(torch.randn(2, generator=g), torch.randn(2, generator=seed_everything(3)))
    with pytest.raises(ValueError, match="non-negative int"):
        seed_everything(-1)


def test_threads_and_device(monkeypatch):
    assert set_threads(2) == 2 and torch.get_num_threads() == 2
    with pytest.raises(ValueError, match=">= 1"):
        set_threads(0)
    monkeypatch.delenv("DGMLIB_DEVICE", raising=False)
    assert get_device() == torch.device("cpu")
    if not torch.cuda.is_available():
        monkeypatch.setenv("DGMLIB_DEVICE", "cuda")
        with pytest.raises(RuntimeError, match="unset DGMLIB_DEVICE"):
            get_device()


def test_import_is_light():
    """`import dgmlib` imports neither triton nor the kernels, and does not initialise CUDA."""
    code = (
        "import sys, dgmlib, torch; "
        "assert 'triton' not in sys.modules, 'triton imported'; "
        "assert 'dgmlib.kernels' not in sys.modules; "
        "assert not torch.cuda.is_initialized()"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
