"""Shared fixtures."""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from filelock import FileLock
from helpers import run_tool

ROOT = Path(__file__).resolve().parent.parent
# The browser of the website and JupyterLab tests: the system's Chromium where there is one, with
# the flags that keep it from reaching any other host on its own.
SYSTEM_CHROMIUM = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--metrics-recording-only",
]


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
        proc = run_tool("build_book.py", "--path-output", str(out))
        if proc.returncode != 0:
            pytest.fail(
                f"the book build failed (exit status {proc.returncode}):\n"
                f"{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}",
                pytrace=False,
            )
        (out / "ok").write_text("built\n")
        print(f"book built in {time.perf_counter() - t0:.1f} s")
    return html


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Chromium (the system's, else Playwright's) for tests/test_browser.py and
    tests/test_lab.py; they skip when there is neither."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    executable = next((p for p in SYSTEM_CHROMIUM if Path(p).is_file()), None)
    executable = executable or shutil.which("chromium")
    with sync_api.sync_playwright() as pw:
        try:
            b = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        except sync_api.Error as exc:
            if executable is not None:
                raise
            pytest.skip(f"no Chromium: no system browser and Playwright's is missing ({exc})")
        try:
            yield b
        finally:
            b.close()
