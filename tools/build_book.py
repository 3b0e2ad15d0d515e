"""Build the course website with Jupyter Book from the notebooks' stored outputs.

Usage: python tools/build_book.py [--path-output DIR] [--incremental]

MathJax is vendored first if book/_vendor/mathjax is missing (tools/vendor_mathjax.py). The book
is then built with `jupyter-book build book`: no notebook is executed (`execute_notebooks: off`
in book/_config.yml), every page is rebuilt (pass --incremental to rebuild only changed pages),
and any Sphinx warning (a broken citation, reference or toctree entry) fails the build. On
success the path of the site's index.html is printed: book/_build/html/index.html by default,
DIR/_build/html/index.html with --path-output DIR.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
NOTEBOOKS_LINK = BOOK / "notebooks"  # a symbolic link to ../notebooks, kept in git

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vendor_mathjax  # noqa: E402


def check_notebooks_link() -> None:
    """The book reaches the notebooks through book/notebooks -> ../notebooks."""
    if NOTEBOOKS_LINK.is_dir() and NOTEBOOKS_LINK.resolve() == (ROOT / "notebooks").resolve():
        return
    sys.exit(
        "error: book/notebooks must be a symbolic link to ../notebooks (it is one in git; a "
        "checkout without symlink support breaks it). Recreate it with\n"
        "    ln -sfn ../notebooks book/notebooks"
    )


def build(path_output: Path | None = None, incremental: bool = False) -> Path:
    """Build the HTML site; return the path of its index.html. Raises SystemExit on failure."""
    check_notebooks_link()
    vendor_mathjax.vendor()
    out = (path_output or BOOK).resolve()
    cmd = [
        sys.executable,
        "-c",
        "from jupyter_book.cli.main import main; main(prog_name='jupyter-book')",
        "build",
        str(BOOK),
        "--path-output",
        str(out),
        "--builder",
        "html",
        "--warningiserror",
        "--keep-going",
    ]
    if not incremental:
        cmd.append("--all")
    proc = subprocess.run(cmd, cwd=ROOT)
    index = out / "_build" / "html" / "index.html"
    if proc.returncode != 0:
        sys.exit(f"error: the book build failed (exit status {proc.returncode}); see above")
    if not index.is_file():
        sys.exit(f"error: the build finished but wrote no {index}")
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--path-output",
        type=Path,
        default=None,
        help="folder to build into (the site goes to DIR/_build/html; default: book/)",
    )
    parser.add_argument(
        "--incremental", action="store_true", help="rebuild only new or changed pages"
    )
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    index = build(args.path_output, args.incremental)
    try:
        shown = index.relative_to(Path.cwd().resolve())
    except ValueError:
        shown = index
    print(f"built the book in {time.perf_counter() - t0:.1f} s: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
