"""Helpers shared by the test files (imported as ``from helpers import ...``)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent

#: Round-off allowance (nats) for a mean over images of float32 log-densities, each a sum of 784
#: pixel terms (and a few latent terms): a different summation order moves a sum by at most
#: 784 * 2^-24 of the sum of the terms' magnitudes (below 400 nats for the course's models),
#: about 0.02 nats; a wrong or mis-loaded weight, or a model of another epoch, moves such a
#: figure by a nat or more.
ROUNDOFF_784 = 784 * 2**-24 * 400

#: Per-dtype tolerances of a kernel's output against a float64 reference computed from the same,
#: already rounded, inputs (the torch paths and the Triton kernels alike): a few hundred ulps of
#: float64, about a hundred of float32 and of the half formats (2^-10 and 2^-7 relative).
KERNEL_TOL = {
    torch.float64: dict(rtol=1e-9, atol=1e-9),
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float16: dict(rtol=1e-3, atol=1e-3),
    torch.bfloat16: dict(rtol=8e-3, atol=8e-3),
}


def close(actual: torch.Tensor, expected: torch.Tensor, tol: dict, scale: bool = False) -> None:
    """``actual`` equals ``expected`` within ``tol`` (atol scaled by the largest reference entry
    when ``scale``, as for gradients)."""
    atol = tol["atol"] * (max(1.0, expected.abs().max().item()) if scale else 1.0)
    torch.testing.assert_close(actual.double(), expected.double(), rtol=tol["rtol"], atol=atol)


def mixture_case(m: int, n: int, d: int, dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    """Arguments ``z [m, d], mu [n, d], logvar [n, d], log_w [n]`` of a mixture log-density,
    drawn in float64 and rounded to ``dtype``."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(n, d, generator=g, dtype=torch.float64)
    logvar = torch.rand(n, d, generator=g, dtype=torch.float64) * 2.0 - 1.5
    z = 1.2 * torch.randn(m, d, generator=g, dtype=torch.float64)
    log_w = torch.log_softmax(torch.randn(n, generator=g, dtype=torch.float64), 0)
    return [t.to(dtype) for t in (z, mu, logvar, log_w)]


def fails(check, fn, case: str, hint: str) -> str:
    """Run ``check(fn)``; expect a message that starts with the check's name and a case whose
    name contains ``case``, with ``hint`` in its Hint; return the message."""
    with pytest.raises(AssertionError) as info:
        check(fn)
    msg = str(info.value)
    prefix = f"{check.__name__}, case '"
    assert msg.startswith(prefix) and case in msg[len(prefix) :].split("'")[0], msg
    assert "Hint:" in msg and hint in msg.split("Hint:")[1], msg
    return msg


def run_tool(tool: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``python tools/<tool> args...`` from the repository root, output captured (text); ``env``
    added to the environment."""
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / tool), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )


def training_script(lecture: str) -> ModuleType:
    """``tools/train_lecture<lecture>.py`` as a module (``tools/`` is a folder, not a package)."""
    tools = str(ROOT / "tools")
    if tools not in sys.path:
        sys.path.insert(0, tools)
    return importlib.import_module(f"train_lecture{lecture}")


def stored_results(prefix: str, script: ModuleType) -> dict[str, Any]:
    """The results document ``<prefix>_results.json``, after checking that it has the one schema
    and was written by ``script`` (its lecture and command), not by a ``--quick`` run."""
    from dgmlib import pretrained
    from dgmlib.experiment import RESULTS_SCHEMA

    r = pretrained.results(prefix)
    header = (r["schema"], r["lecture"], r["command"], r["quick"])
    assert header == (RESULTS_SCHEMA, script.LECTURE, script.COMMAND, False), header
    return r
