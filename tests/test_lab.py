"""JupyterLab as a learner sees it, in headless Chromium: lectures open with their MyST markup
rendered (no raw ``{cite}`` roles, thanks to jupyterlab-myst), stored figures and no widget
error text; after "Run All Cells" on two lectures, the slider of each lecture's exploration
(`dgmlib.widgets`) redraws its figure when it moves. Nothing is requested from any host but the
local server.

JupyterLab runs on 127.0.0.1 on a free port with a token, on copies of the notebooks in a
temporary folder, with its settings and workspaces kept there too. Chromium is the system
browser (/usr/bin/chromium) when there is one, else Playwright's own; the tests are skipped
when neither is available.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# Lectures opened as stored (not run): their markdown has citations.
LECTURES = ["07_discrete_latents", "08_gans"]
# Lectures run in Lab ("Run All Cells"), then their exploration's slider moved one step: two of
# the quickest to run, each with a slider.
RUN_ALL = ["03_dequantization", "A1_adjoint"]
# JupyterLab settings: no news or update checks (they would go to other hosts), and every cell
# rendered (no windowing) so that the whole notebook can be read.
SETTINGS = {
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
}
# A MyST role left as typed, e.g. {cite:p}`key`, or a directive fence.
RAW_MYST = re.compile(r"\{[a-z][\w:-]*\}`|^:::|^```\{", re.MULTILINE)
WIDGET_ERRORS = ("Error displaying widget", "Loading widget", "model not found")
IMG = ".jp-OutputArea-output img"

pytestmark = pytest.mark.lab


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Lab:
    base: str
    token: str
    root: Path

    def url(self, notebook: str) -> str:
        """The notebook in a workspace of its own, reset (no tabs restored from another test)."""
        workspace = Path(notebook).stem
        return f"{self.base}/lab/workspaces/{workspace}/tree/{notebook}?reset&token={self.token}"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """JupyterLab on 127.0.0.1 over a temporary folder with the notebooks' copies."""
    if shutil.which("jupyter-lab", path=str(BIN)) is None:
        pytest.skip("JupyterLab is not installed (make setup)")
    root = tmp_path_factory.mktemp("lab")
    work = root / "notebooks"
    work.mkdir()
    for name in LECTURES + RUN_ALL:
        shutil.copy(ROOT / "notebooks" / f"{name}.ipynb", work)
    settings = root / "settings"
    for plugin, values in SETTINGS.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port, token = free_port(), secrets.token_hex(16)
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(root / "config"),
        JUPYTER_RUNTIME_DIR=str(root / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(root / "workspaces"),
        DGMLIB_THREADS="1",
    )
    cmd = [
        str(BIN / "jupyter-lab"),
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={work}",
        "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(root / "server.log", "w")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(f"JupyterLab did not start:\n{(root / 'server.log').read_text()}")
                time.sleep(0.5)
        yield Lab(base, token, work)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


class Session:
    """One notebook opened in JupyterLab in a fresh browser context; requests to any host but
    127.0.0.1 are recorded and blocked."""

    def __init__(self, browser: object, lab: Lab, notebook: str) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 1000})
        self.page = self.context.new_page()
        self.external: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", self.on_request)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.route(re.compile(r"^(?!https?://127\.0\.0\.1[:/]).*"), self.block)
        self.page.goto(lab.url(notebook), wait_until="load")
        self.page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=120_000)
        # the kernel has started and the markdown cells are rendered
        self.page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(
            timeout=120_000
        )
        self.wait_for_markdown(notebook)

    def wait_for_markdown(self, notebook: str, timeout: float = 60.0) -> None:
        """Wait until every markdown cell shows MyST-rendered text, twice one second apart
        (JupyterLab renders a notebook's cells more than once while it opens it)."""
        # the length of the rendered text, or 0 while a cell is not rendered by MyST
        rendered = (
            "() => { const cells = Array.from(document.querySelectorAll('.jp-MarkdownCell'));"
            " return cells.every((c) => c.querySelector('.myst') && c.innerText.trim())"
            " ? cells.reduce((n, c) => n + c.innerText.length, 0) : 0; }"
        )
        deadline, streak, last = time.monotonic() + timeout, 0, 0
        while streak < 2:
            length = self.page.evaluate(rendered)
            streak = streak + 1 if length and length == last else 0
            last = length
            if time.monotonic() > deadline:  # let the assertions say what is missing
                print(f"{notebook}: the markdown is not all rendered by MyST after {timeout} s")
                return
            self.page.wait_for_timeout(1000)

    def on_request(self, request: object) -> None:
        parts = urlsplit(request.url)
        if parts.scheme not in {"data", "blob", "about"} and parts.hostname != "127.0.0.1":
            self.external.append(request.url)

    def block(self, route: object) -> None:
        if urlsplit(route.request.url).scheme in {"data", "blob"}:
            route.continue_()
        else:
            route.abort("blockedbyclient")

    def text(self, selector: str) -> str:
        """The visible text of every element matching ``selector``."""
        return "\n".join(self.page.locator(selector).all_inner_texts())

    def close(self) -> None:
        self.context.close()


def assert_readable(s: Session, name: str) -> None:
    """Markdown rendered by MyST with no raw markup, figures shown, no widget error text."""
    markdown = s.text(".jp-MarkdownCell")
    assert markdown.strip(), f"{name}: no markdown rendered"
    raw = RAW_MYST.search(markdown)
    assert raw is None, (
        f"{name}: raw MyST markup in Lab: {markdown[raw.start() - 80 : raw.end() + 80]!r}"
    )
    assert s.page.locator(".jp-MarkdownCell .myst").count(), (
        f"{name}: jupyterlab-myst is not active"
    )
    outputs = s.text(".jp-OutputArea")
    for words in WIDGET_ERRORS:
        assert words not in outputs, f"{name}: {words!r} in the outputs"
    broken = s.page.evaluate(
        f"() => Array.from(document.querySelectorAll('{IMG}'))"
        ".filter((i) => !(i.complete && i.naturalWidth > 0)).length"
    )
    assert broken == 0, f"{name}: {broken} figures not displayed"


@pytest.mark.parametrize("lecture", LECTURES)
def test_stored_lecture_reads_well(browser: object, lab: Lab, lecture: str) -> None:
    """A lecture as stored: citations rendered, every stored figure shown."""
    stored = nbformat.read(lab.root / f"{lecture}.ipynb", as_version=4)
    cited = [k for c in stored.cells if c.cell_type == "markdown" for k in cite_keys(c.source)]
    n_images = sum(
        "image/png" in o.get("data", {}) for c in stored.cells for o in c.get("outputs", [])
    )
    s = Session(browser, lab, f"{lecture}.ipynb")
    try:
        assert_readable(s, lecture)
        markdown = s.text(".jp-MarkdownCell")
        missing = [k for k in cited if k not in markdown]
        assert cited and not missing, f"{lecture}: citations not rendered: {missing}"
        assert s.page.locator(IMG).count() == n_images
        assert not s.external, "requests to other hosts:\n" + "\n".join(s.external)
    finally:
        s.close()


def cite_keys(markdown: str) -> list[str]:
    """The keys of every {cite} role of a markdown text."""
    return [
        k.strip()
        for m in re.finditer(r"\{cite(?::\w+)?\}`([^`]*)`", markdown)
        for k in m.group(1).split(",")
    ]


@pytest.mark.parametrize("lecture", RUN_ALL)
def test_run_all_then_the_slider_redraws_its_figure(
    browser: object, lab: Lab, lecture: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Stored: the exploration's figure at its default and one line in place of its controls.
    After Run All Cells: every cell ran, the controls are live, and one step of the slider to the
    right redraws the figure in place (a new image, a new readout)."""
    s = Session(browser, lab, f"{lecture}.ipynb")
    page = s.page
    try:
        assert_readable(s, lecture)
        stand_in = page.locator(".jp-CodeCell", has_text="run the cell to use them").first
        assert stand_in.count(), f"{lecture}: no exploration stored with its controls' stand-in"
        assert stand_in.locator(IMG).count() == 1, f"{lecture}: the exploration has no figure"
        n_cells = page.locator(".jp-CodeCell").count()
        page.locator("#jp-MainMenu .lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        # every code cell has run: its prompt shows a number, none shows [*]
        page.wait_for_function(
            "(n) => { const p = Array.from(document.querySelectorAll('.jp-CodeCell "
            ".jp-InputPrompt')).map((e) => e.textContent); return p.length === n && "
            "p.every((t) => /\\[\\d+\\]/.test(t)); }",
            arg=n_cells,
            timeout=600_000,
        )
        errors = s.text(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
        assert "Traceback" not in errors, f"{lecture}: a cell failed in Lab:\n{errors[-2000:]}"
        cell = page.locator(".jp-CodeCell", has=page.locator(".widget-slider")).first
        handle = cell.locator(".widget-slider .noUi-handle").first
        readout = cell.locator(".widget-readout").first
        image = cell.locator(IMG)
        assert image.count() == 1, f"{lecture}: the run shows {image.count()} figures, not one"
        before, drawn = readout.inner_text().strip(), image.first.get_attribute("src")
        assert drawn and drawn.startswith("data:image/png;base64,")
        handle.click()
        page.keyboard.press("ArrowRight")
        page.wait_for_function(
            "([cell, s]) => { const i = cell.querySelector('img'); return i && i.src !== s; }",
            arg=[cell.element_handle(), drawn],
            timeout=60_000,
        )
        assert readout.inner_text().strip() != before, f"{lecture}: the readout did not move"
        assert image.count() == 1, f"{lecture}: the redraw added a figure instead of replacing it"
        assert "run the cell to use them" not in cell.inner_text()
        outputs = cell.locator(".jp-OutputArea").first
        outputs.scroll_into_view_if_needed()
        shot = tmp_path_factory.mktemp("lab-screenshot") / f"{lecture}_slider_moved.png"
        outputs.screenshot(path=str(shot))
        print(f"\n{lecture}: slider {before} -> {readout.inner_text().strip()}; screenshot {shot}")
        assert not s.errors, "script errors:\n" + "\n".join(s.errors)
        assert not s.external, "requests to other hosts:\n" + "\n".join(s.external)
    finally:
        s.close()
