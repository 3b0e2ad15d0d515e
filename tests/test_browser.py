"""Open the built website in headless Chromium and check every lecture page as a reader sees it:
the page loads, MathJax has typeset every formula (no raw TeX, no TeX errors), every figure is
displayed, no script fails, and nothing is requested from any host but the local server.

Chromium: the system browser (/usr/bin/chromium) when there is one, else Playwright's own
(`playwright install chromium`); the tests are skipped when neither is available.
"""

from __future__ import annotations

import functools
import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
LECTURES = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
# The article body of a sphinx-book-theme page.
MAIN = "main#main-content article"
# TeX left in the visible text means MathJax did not typeset it.
RAW_TEX = re.compile(r"\$\$|\\begin\{|\\end\{|\\\(|\\\)|\\\[|\\\]|\$[^$\n]*[\\^_{}][^$\n]*\$")

pytestmark = pytest.mark.book


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="module")
def site(book_html: Path) -> Iterator[str]:
    """Serve the built site on 127.0.0.1 (an ephemeral port); yield its base URL."""
    handler = functools.partial(QuietHandler, directory=str(book_html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class Visit:
    """One page opened in a fresh browser context, with everything it requested recorded."""

    def __init__(self, browser: object, base: str) -> None:
        self.host = urlsplit(base).hostname
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.external: list[str] = []
        self.failed: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", self._on_request)
        self.page.on("requestfailed", lambda r: self.failed.append(f"{r.url} ({r.failure})"))
        self.page.on(
            "response", lambda r: r.status >= 400 and self.failed.append(f"{r.url} ({r.status})")
        )
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        # Requests to other hosts are recorded (and fail the test) but never leave the machine.
        self.page.route(re.compile(r"^(?!https?://127\.0\.0\.1[:/]).*"), self._block)

    def _on_request(self, request: object) -> None:
        self.requests.append(request.url)
        parts = urlsplit(request.url)
        if parts.scheme not in {"data", "blob", "about"} and parts.hostname != self.host:
            self.external.append(request.url)

    def _block(self, route: object) -> None:
        if urlsplit(route.request.url).scheme in {"data", "blob"}:
            route.continue_()
        else:
            route.abort("blockedbyclient")

    def goto(self, url: str) -> int:
        response = self.page.goto(url, wait_until="load")
        assert response is not None
        self.wait_for_mathjax()
        self.wait_for_images()
        return response.status

    def wait_for_mathjax(self) -> None:
        """Sphinx loads MathJax only on pages with math; wait until it has typeset them."""
        if not self.page.locator('script[src*="mathjax"]').count():
            return
        self.page.wait_for_function(
            "() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=30_000
        )
        self.page.evaluate("() => MathJax.startup.promise")

    def wait_for_images(self) -> None:
        self.page.evaluate(
            """() => Promise.all(Array.from(document.images).map((img) => {
                   img.loading = "eager";
                   return img.complete ? null
                       : new Promise((ok) => { img.onload = img.onerror = ok; });
               }))"""
        )

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def visit(browser: object, site: str) -> Iterator[Visit]:
    v = Visit(browser, site)
    yield v
    v.close()


def check_page(v: Visit, expect_math: bool) -> None:
    """The checks every content page must pass once loaded."""
    page = v.page
    assert "Deep Generative Models" in page.title()
    assert page.locator(MAIN).count() == 1

    math = page.evaluate(
        f"""() => {{
            const main = document.querySelector("{MAIN}");
            const nodes = Array.from(main.querySelectorAll(".math"));
            return {{
                nodes: nodes.length,
                untypeset: nodes.filter((n) => !n.querySelector("mjx-container"))
                                .map((n) => n.textContent.slice(0, 80)),
                containers: main.querySelectorAll("mjx-container").length,
                errors: Array.from(main.querySelectorAll("mjx-merror"))
                             .map((n) => n.getAttribute("data-mjx-error") || n.textContent),
            }};
        }}"""
    )
    if expect_math:
        assert math["containers"] > 0, "no formula was typeset by MathJax"
    assert not math["untypeset"], f"math not typeset: {math['untypeset']}"
    assert not math["errors"], f"MathJax TeX errors: {math['errors']}"
    if math["containers"]:
        # TeX errors and undefined macros (MathJax shows those in red instead of an error box)
        bad = page.evaluate(
            """() => Array.from(MathJax.startup.document.math)
                   .filter((item) => /<merror|<mtext mathcolor="red">\\\\/.test(
                       MathJax.startup.toMML(item.root)))
                   .map((item) => item.math.slice(0, 80))"""
        )
        assert not bad, f"TeX that MathJax could not render: {bad}"

    # Visible prose (code and typeset math removed) must hold no raw TeX.
    prose = page.evaluate(
        f"""() => {{
            const main = document.querySelector("{MAIN}").cloneNode(true);
            main.querySelectorAll("pre, code, script, style, mjx-container, .highlight")
                .forEach((n) => n.remove());
            return main.textContent;
        }}"""
    )
    raw = [m.group(0) for m in RAW_TEX.finditer(prose)]
    assert not raw, f"raw TeX in the page text: {raw[:10]}"

    images = page.evaluate(
        f"""() => Array.from(document.querySelectorAll("{MAIN} img")).map((img) => ({{
            src: img.getAttribute("src").slice(0, 120),
            ok: img.complete && img.naturalWidth > 0,
        }}))"""
    )
    broken = [i["src"] for i in images if not i["ok"]]
    assert not broken, f"images that did not load: {broken}"

    assert not v.external, "requests to other hosts:\n" + "\n".join(v.external)
    assert not v.failed, "failed requests:\n" + "\n".join(v.failed)
    assert not v.errors, "JavaScript errors:\n" + "\n".join(v.errors)


def test_index_redirects_to_the_landing_page(visit: Visit, site: str) -> None:
    assert visit.page.goto(site, wait_until="load").status == 200
    visit.page.wait_for_url(re.compile(r"/intro\.html$"), timeout=10_000)


def test_landing_page(visit: Visit, site: str, tmp_path: Path) -> None:
    assert visit.goto(site + "intro.html") == 200
    check_page(visit, expect_math=True)
    text = visit.page.locator(MAIN).inner_text()
    for lecture in LECTURES:  # every written lecture is linked from the syllabus
        assert visit.page.locator(f'{MAIN} a[href$="notebooks/{lecture}.html"]').count() >= 1
    assert "make book" in text and "make student" in text
    visit.page.screenshot(path=str(tmp_path / "intro.png"))


def test_bibliography_page(visit: Visit, site: str) -> None:
    assert visit.goto(site + "bibliography.html") == 200
    check_page(visit, expect_math=False)
    assert visit.page.locator(f"{MAIN} .citation, {MAIN} [role=doc-biblioentry]").count() >= 30


@pytest.mark.parametrize("lecture", LECTURES)
def test_lecture_page(visit: Visit, site: str, lecture: str, tmp_path: Path) -> None:
    assert visit.goto(f"{site}notebooks/{lecture}.html") == 200
    check_page(visit, expect_math=True)
    # the exploration shows as its figure at the default: no widget placeholder, error, or the
    # text that stands in for the controls in a notebook
    text = visit.page.locator(MAIN).inner_text()
    for words in ("Loading widget", "Error displaying widget", "run the cell to use them"):
        assert words not in text, f"{lecture}: {words!r} on the page"
    # citations in the lecture link to the bibliography page
    for href in visit.page.eval_on_selector_all(
        f'{MAIN} a[href*="bibliography.html#"]', "els => els.map(e => e.getAttribute('href'))"
    ):
        assert href.split("#", 1)[1], href
    # A picture to look at: the whole of the first lecture, the first screen of the others.
    shot = tmp_path / f"{lecture}.png"
    visit.page.screenshot(path=str(shot), full_page=lecture == LECTURES[0])
    assert shot.stat().st_size > 10_000
