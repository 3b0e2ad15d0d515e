"""Helpers shared by the test files (imported as ``from helpers import ...``)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Round-off allowance (nats) for a mean over images of float32 log-densities, each a sum of 784
#: pixel terms (and a few latent terms): a different summation order moves a sum by at most
#: 784 * 2^-24 of the sum of the terms' magnitudes (below 400 nats for the course's models),
#: about 0.02 nats; a wrong or mis-loaded weight, or a model of another epoch, moves such a
#: figure by a nat or more.
ROUNDOFF_784 = 784 * 2**-24 * 400


def fails(check, fn, case_start: str, hint: str) -> str:
    """Run ``check(fn)``; expect the message of case ``case_start`` with ``hint`` in its Hint."""
    with pytest.raises(AssertionError) as info:
        check(fn)
    msg = str(info.value)
    assert msg.startswith(f"{check.__name__}, case '{case_start}"), msg
    assert hint in msg.split("Hint:")[1], msg
    return msg


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
