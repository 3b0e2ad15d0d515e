"""Write the student edition of the course: every solution replaced by a stub, outputs cleared.

Usage: python tools/make_student.py [--out student] [notebooks/NN_topic.py ...]

Exercise cells mark their solution with nbgrader's markers::

    ### BEGIN SOLUTION
    ...reference code...
    ### END SOLUTION

Each marked block becomes ``raise NotImplementedError("...")`` at the same indentation, so the
check at the end of the cell tells the student the exercise is still open. The notebooks stay
compatible with nbgrader for instructors who use it.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parent.parent
BEGIN = re.compile(r"^(\s*)### BEGIN SOLUTION\s*$")
END = re.compile(r"^\s*### END SOLUTION\s*$")
STUB = 'raise NotImplementedError("Exercise: replace this line with your solution.")'


def strip_solutions(source: str, where: str = "<cell>") -> tuple[str, int]:
    """Replace each BEGIN/END SOLUTION block of ``source`` by a stub; return (text, count)."""
    out: list[str] = []
    inside, count = False, 0
    for lineno, line in enumerate(source.splitlines(), 1):
        m = BEGIN.match(line)
        if m:
            if inside:
                raise ValueError(f"{where}: line {lineno}: BEGIN SOLUTION inside another one")
            inside, count = True, count + 1
            out.append(m.group(1) + STUB)
        elif END.match(line):
            if not inside:
                raise ValueError(f"{where}: line {lineno}: END SOLUTION without BEGIN SOLUTION")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{where}: a BEGIN SOLUTION block is never closed")
    return "\n".join(out), count


def student_notebook(src: Path) -> tuple[nbformat.NotebookNode, int]:
    """The student version of notebook source ``src`` (a .py) and its number of exercises."""
    nb = jupytext.read(src)
    total = 0
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            cell.source, n = strip_solutions(cell.source, f"{src.name} cell {i}")
            total += n
            cell.outputs, cell.execution_count = [], None
    return nb, total


def lecture_args(doc: str, argv: list[str], out: str, what: str) -> tuple[Path, list[Path]]:
    """The command line of the notebook tools: ``--out`` (default ``out``, the ``what``) and the
    lecture sources (default: every ``notebooks/NN_topic.py``)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--out", default=out, help=f"{what} (default: {out})")
    ap.add_argument("sources", nargs="*", help="lecture sources (default: notebooks/*.py)")
    args = ap.parse_args(argv)
    sources = [Path(s) for s in args.sources] or sorted((ROOT / "notebooks").glob("[0-9A]*.py"))
    return Path(args.out), sources


def main(argv: list[str]) -> int:
    out, sources = lecture_args(__doc__, argv, "student", "output folder")
    out.mkdir(parents=True, exist_ok=True)
    for src in sources:
        nb, n = student_notebook(src)
        target = out / (src.stem + ".ipynb")
        tmp = target.with_suffix(".ipynb.tmp")
        nbformat.write(nb, tmp)
        tmp.replace(target)
        print(f"{target}: {n} exercise(s) turned into stubs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
