"""The course website: table of contents, citations, and the built HTML (pages, MathJax, no
resource loaded from another host).

The build itself happens once per session in the `book_html` fixture (tests/conftest.py).
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
LOCAL_HOSTS = {"127.0.0.1", "localhost"}

# <link rel=...> values that make a browser fetch the target (navigation links like rel=next
# do not).
LOADED_RELS = {
    "stylesheet",
    "preload",
    "modulepreload",
    "prefetch",
    "preconnect",
    "dns-prefetch",
    "icon",
    "apple-touch-icon",
    "manifest",
}
CITE_ROLE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]*)`")
BIB_KEY = re.compile(r"^@\w+\{([^,\s]+),", re.MULTILINE)


def toc_files() -> list[str]:
    """Every `file:` entry of book/_toc.yml (comments ignored)."""
    text = (BOOK / "_toc.yml").read_text()
    files = []
    for line in text.splitlines():
        m = re.match(r"^\s*(?:-\s*)?(?:file|root):\s*(\S+)\s*$", line.split("#", 1)[0])
        if m:
            files.append(m.group(1))
    return files


def markdown_sources() -> list[tuple[str, str]]:
    """(name, text) of every Markdown source of the book: its .md pages and notebook cells."""
    sources = [(p.name, p.read_text()) for p in sorted(BOOK.glob("*.md"))]
    for nb in NOTEBOOKS:
        cells = json.loads(nb.read_text())["cells"]
        for i, cell in enumerate(cells):
            if cell["cell_type"] == "markdown":
                sources.append((f"{nb.name} cell {i}", "".join(cell["source"])))
    return sources


class ResourceParser(HTMLParser):
    """Collects the URLs an HTML page makes a browser load (not plain hyperlinks)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag in {"script", "img", "iframe", "source", "audio", "video", "embed", "track"}:
            if a.get("src"):
                self.urls.append(a["src"])
            for part in a.get("srcset", "").split(","):
                if part.strip():
                    self.urls.append(part.split()[0])
        elif tag == "link" and LOADED_RELS & set(a.get("rel", "").lower().split()):
            self.urls.append(a.get("href", ""))
        elif tag == "object" and a.get("data"):
            self.urls.append(a["data"])
        if "url(" in a.get("style", ""):
            self.urls += re.findall(r"url\(\s*['\"]?([^'\")]+)", a["style"])


def is_external(url: str) -> bool:
    parts = urlsplit(url.strip())
    if parts.scheme in {"http", "https", "ws", "wss", "ftp"} or url.strip().startswith("//"):
        return parts.hostname not in LOCAL_HOSTS
    return False


# -- sources (no build needed) ---------------------------------------------------------------


def test_toc_lists_every_notebook_and_only_existing_files() -> None:
    listed = toc_files()
    assert listed[0] == "intro" and "bibliography" in listed
    for nb in NOTEBOOKS:
        assert f"notebooks/{nb.stem}" in listed, f"add `- file: notebooks/{nb.stem}` to _toc.yml"
    for entry in listed:
        matches = [p for p in BOOK.glob(entry + ".*") if p.suffix in {".md", ".ipynb"}]
        assert matches, f"_toc.yml lists {entry}, which has no .md or .ipynb file"


def test_notebooks_link() -> None:
    link = BOOK / "notebooks"
    assert link.is_symlink() and link.resolve() == (ROOT / "notebooks").resolve()


def test_every_citation_is_in_the_bibliography() -> None:
    keys = set(BIB_KEY.findall((BOOK / "references.bib").read_text()))
    assert len(keys) >= 30
    missing = []
    for name, text in markdown_sources():
        for group in CITE_ROLE.findall(text):
            missing += [f"{name}: {k}" for k in map(str.strip, group.split(",")) if k not in keys]
    assert not missing, "citation keys not in book/references.bib:\n" + "\n".join(missing)


def test_bibliography_keys_are_unique() -> None:
    keys = BIB_KEY.findall((BOOK / "references.bib").read_text())
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)


# -- the built site --------------------------------------------------------------------------


def pages(html_dir: Path) -> list[Path]:
    return sorted(p for p in html_dir.rglob("*.html") if "_static" not in p.parts)


@pytest.mark.book
def test_book_has_every_page(book_html: Path) -> None:
    assert (book_html / "index.html").is_file()
    assert "intro.html" in (book_html / "index.html").read_text()  # redirect to the landing page
    for name in ["intro.html", "bibliography.html"]:
        assert (book_html / name).is_file(), name
    for nb in NOTEBOOKS:
        page = book_html / "notebooks" / f"{nb.stem}.html"
        assert page.is_file(), f"no page for {nb.name}"
    # the Jupytext sources are not pages
    assert not list((book_html / "notebooks").glob("*.py*.html"))


@pytest.mark.book
def test_bibliography_page_lists_the_references(book_html: Path) -> None:
    text = (book_html / "bibliography.html").read_text()
    for words in ["Auto-encoding variational Bayes", "Importance weighted autoencoders"]:
        assert words.lower() in text.lower(), words


@pytest.mark.book
def test_pages_load_the_vendored_mathjax(book_html: Path) -> None:
    entry = book_html / "mathjax" / "tex-mml-chtml.js"
    assert entry.is_file()
    assert (book_html / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()
    checked = 0
    for page in [book_html / "intro.html"] + [
        book_html / "notebooks" / f"{nb.stem}.html" for nb in NOTEBOOKS
    ]:
        parser = ResourceParser()
        parser.feed(page.read_text())
        mathjax = [u for u in parser.urls if "mathjax" in u.lower()]
        assert len(mathjax) == 1, f"{page.name}: MathJax scripts {mathjax}"
        rel = urlsplit(urljoin(page.relative_to(book_html).as_posix(), mathjax[0])).path
        assert (book_html / rel).resolve() == entry.resolve(), f"{page.name}: {mathjax[0]}"
        checked += 1
    assert checked >= 1


@pytest.mark.book
def test_no_page_loads_an_external_resource(book_html: Path) -> None:
    offenders = []
    for page in pages(book_html):
        parser = ResourceParser()
        parser.feed(page.read_text())
        rel = page.relative_to(book_html)
        offenders += [f"{rel}: {u}" for u in parser.urls if is_external(u)]
        for u in parser.urls:
            parts = urlsplit(u)
            if not parts.scheme and not u.startswith("//") and parts.path:
                target = (page.parent / parts.path).resolve()
                if not target.exists():
                    offenders.append(f"{rel}: {u} (missing)")
    for css in book_html.rglob("*.css"):
        for u in re.findall(r"(?:url\(|@import)\s*['\"]?([^'\")\s;]+)", css.read_text()):
            if is_external(u):
                offenders.append(f"{css.relative_to(book_html)}: {u}")
    assert not offenders, "resources that are not part of the site:\n" + "\n".join(offenders)
