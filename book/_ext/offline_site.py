"""A small Sphinx extension that keeps the course website self-contained.

- Drops the scripts and style of sphinx-thebe, which Jupyter Book always loads: the site has no
  launch buttons, so thebe (a live-kernel bundle fetched from a CDN on demand) is never used.
- Removes duplicated inline scripts. Extensions that register an inline script after the HTML
  builder has started get it twice in Sphinx 7 (once with filename None, once with ''), and a
  duplicated `const` declaration is a JavaScript error.
- Warns about any script or style sheet that would be loaded from another host, so that
  `tools/build_book.py` (which turns warnings into errors) fails instead of publishing it.
"""

from __future__ import annotations

from typing import Any

from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)


def _filename(asset: Any) -> str:
    return getattr(asset, "filename", asset) or ""


def _tidy_assets(
    app: Sphinx, pagename: str, templatename: str, context: dict, doctree: Any
) -> None:
    if "script_files" in context:
        seen, scripts = set(), []
        for js in context["script_files"]:
            attrs = dict(getattr(js, "attributes", {}))
            name = _filename(js)
            if "thebe" in name or "THEBE_JS_URL" in attrs.get("body", ""):
                continue
            key = (name, getattr(js, "priority", 500), tuple(sorted(attrs.items())))
            if key not in seen:
                seen.add(key)
                scripts.append(js)
        context["script_files"] = scripts
    if "css_files" in context:
        context["css_files"] = [c for c in context["css_files"] if "thebe" not in _filename(c)]
    for asset in [*context.get("script_files", []), *context.get("css_files", [])]:
        if "://" in _filename(asset):
            logger.warning("%s: loads %s from another host", pagename, _filename(asset))


def setup(app: Sphinx) -> dict[str, Any]:
    # After the extensions that add page assets in html-page-context (MathJax: priority 500).
    app.connect("html-page-context", _tidy_assets, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
