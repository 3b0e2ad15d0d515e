"""Shared fixtures."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from filelock import FileLock

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    """One torch thread per test process: `make test` runs two workers on two cores, and
    oversubscribed OpenMP threads make small tensor operations many times slower."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def book_html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the website once per session (tools/build_book.py) into a temporary folder; return
    the folder holding its HTML. tests/test_book.py and tests/test_browser.py share it."""
    if importlib.util.find_spec("jupyter_book") is None:
        pytest.skip("jupyter-book is not installed (pip install -e '.[book]')")
    vendored = (ROOT / "book" / "_vendor" / "mathjax" / "tex-mml-chtml.js").is_file()
    if not vendored and shutil.which("npm") is None:
        pytest.skip("MathJax is not vendored and npm is missing to fetch it (make setup)")
    # Under pytest-xdist every worker runs this fixture: the first one builds, under a file lock
    # in the run's shared temporary folder, and the others reuse its site.
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the folder common to this run's workers
    out = shared / "book-build"
    html = out / "_build" / "html"
    with FileLock(str(shared / "book-build.lock")):
        if (out / "ok").is_file():
            return html
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(ROOT / "tools" / "build_book.py"), "--path-output", str(out)],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            pytest.fail(
                f"the book build failed (exit status {proc.returncode}):\n"
                f"{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}",
                pytrace=False,
            )
        (out / "ok").write_text("built\n")
        print(f"book built in {time.perf_counter() - t0:.1f} s")
    return html
