"""Write homework/, an nbgrader course directory made from the lecture notebooks.

Usage: python tools/make_homework.py [--out homework] [notebooks/NN_topic.py ...]

For every lecture source ``notebooks/NN_topic.py`` it writes
``homework/source/NN_topic/NN_topic.ipynb`` with nbgrader's cell metadata, derived from the
exercise markers, and then runs ``nbgrader generate_assignment`` for it, which writes
``homework/release/NN_topic/NN_topic.ipynb`` (solutions replaced by stubs, outputs cleared) and
records the assignment in ``homework/gradebook.db``. It also writes
``homework/nbgrader_config.py`` (course id, the cell timeout, the stub text).

An exercise cell defines a function whose body holds a solution between ``### BEGIN SOLUTION``
and ``### END SOLUTION`` and ends with a call into ``dgmlib.checks``::

    def my_jsd(log_p, log_q, dx):
        ### BEGIN SOLUTION
        ...
        ### END SOLUTION


    check_jsd(my_jsd)

Such a cell is split at its top-level statements into

- a solution cell (the code with the markers; nbgrader ``solution``, not graded), whose
  ``grade_id`` is the name of the function it defines;
- an autograded test cell holding the check call(s) (``grade``, locked, one point per check),
  whose ``grade_id`` is the check's name;
- a read-only cell for any code after the checks (it uses the student's function and is not
  graded, so a failure there costs no point).

Every other code cell is read-only (nbgrader restores its source before grading); markdown cells
are plain (a marker quoted in the prose loses its ``###``, or nbgrader would take it for a
solution region). Nothing is executed here. From inside ``homework/`` the standard commands
then work::

    nbgrader autograde 08_gans            # grades submitted/<student>/08_gans/08_gans.ipynb
    nbgrader generate_feedback 08_gans    # feedback/<student>/08_gans/08_gans.html
    nbgrader export                       # grades.csv

Re-running this tool rewrites ``source/``, ``release/`` and the configuration and keeps
``submitted/``, ``autograded/``, ``feedback/`` and the gradebook.
"""

from __future__ import annotations

import ast
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import jupytext
import nbformat
from make_student import STUB, lecture_args  # STUB: the stub of the student edition
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"

# --- configuration -----------------------------------------------------------------------------
COURSE_ID = "dgm-course"  # nbgrader's course id
CELL_TIMEOUT_S = 600  # seconds one cell may run under autograde (nbgrader's default is 30)
POINTS_PER_CHECK = 1  # points of each check call in a test cell
# -------------------------------------------------------------------------------------------------

CONFIG = f'''\
"""nbgrader configuration of the course's homework (written by tools/make_homework.py)."""

c = get_config()  # noqa: F821 (provided by nbgrader when it reads this file)

c.CourseDirectory.course_id = {COURSE_ID!r}
# A lecture's longest cell takes a minute or so on a laptop; nbgrader's default is 30 s.
c.Execute.timeout = {CELL_TIMEOUT_S}
# The course's markers, and the stub of the student edition (make student).
c.ClearSolutions.begin_solution_delimeter = "### BEGIN SOLUTION"
c.ClearSolutions.end_solution_delimeter = "### END SOLUTION"
c.ClearSolutions.code_stub = {{"python": {STUB!r}}}
'''

HEADER = """\
**Homework edition.** In each exercise, replace the line `raise NotImplementedError(...)` by
your solution and run the cell; the check in the cell after it tells you whether your function is
right, and it is what the grader runs ({points}). The lecture's code cells are read-only; add
your own cells to experiment. Before you submit, run the whole notebook from the top (Kernel,
Restart Kernel and Run All Cells)."""


@dataclass
class Piece:
    """A part of an exercise cell: ``kind`` is "solution", "test" or "code"."""

    kind: str
    source: str
    names: list[str]


def check_name(stmt: ast.stmt) -> str | None:
    """The name of the check a top-level statement calls (``check_x(...)``), else None."""
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
        func = stmt.value.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name.startswith("check_"):
            return name
    return None


def first_line(stmt: ast.stmt) -> int:
    """The first line (1-based) of a statement, its decorators included."""
    decorators = getattr(stmt, "decorator_list", [])
    return min([stmt.lineno] + [d.lineno for d in decorators])


def is_loose(line: str) -> bool:
    """A blank line or an unindented comment other than the END marker."""
    return not line.strip() or (line.startswith("#") and not line.startswith(END))


def split_exercise(source: str, where: str) -> list[Piece]:
    """Split an exercise cell's ``source`` at top-level statements into solution/test/code."""
    try:
        body = ast.parse(source).body
    except SyntaxError as err:
        raise ValueError(f"{where}: exercise cell does not parse: {err}") from None
    lines = source.splitlines()
    runs: list[tuple[str, list[ast.stmt]]] = []
    for stmt in body:
        kind = "test" if check_name(stmt) else "code"
        if runs and runs[-1][0] == kind:
            runs[-1][1].append(stmt)
        else:
            runs.append((kind, [stmt]))
    pieces: list[Piece] = []
    start = 0
    for i, (kind, stmts) in enumerate(runs):
        end = len(lines)
        if i + 1 < len(runs):
            # cut before the next run; unindented comments and blank lines go with it, indented
            # ones (such as "    ### END SOLUTION") and an END marker with the block they close
            end = first_line(runs[i + 1][1][0]) - 1
            while end > start and is_loose(lines[end - 1]):
                end -= 1
        text = "\n".join(lines[start:end]).strip("\n")
        start = end
        if kind == "test":
            names = [check_name(s) or "" for s in stmts]
        else:
            names = [s.name for s in stmts if isinstance(s, ast.FunctionDef | ast.ClassDef)]
            if BEGIN in text and not any(p.kind == "solution" for p in pieces):
                kind = "solution"
        pieces.append(Piece(kind, text, names))
    marked = [p for p in pieces if BEGIN in p.source or END in p.source]
    if len(marked) != 1 or marked[0].kind != "solution" or END not in marked[0].source:
        raise ValueError(f"{where}: expected one solution block within one run of statements")
    return pieces


def nbgrader_meta(grade_id: str, solution: bool, grade: bool, points: int = 0) -> dict:
    """nbgrader's cell metadata (schema 3): a solution, test or read-only cell."""
    meta = {
        "grade": grade,
        "grade_id": grade_id,
        "locked": not solution,
        "schema_version": 3,
        "solution": solution,
        "task": False,
    }
    if grade:
        meta["points"] = points
    return meta


class Ids:
    """Unique grade ids within one notebook: ``name``, then ``name-2``, ``name-3``..."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def __call__(self, name: str) -> str:
        gid, k = name, 1
        while gid in self.seen:
            k += 1
            gid = f"{name}-{k}"
        self.seen.add(gid)
        return gid


def homework_notebook(src: Path) -> tuple[nbformat.NotebookNode, int, int]:
    """The nbgrader source notebook of lecture ``src`` (a .py), its exercises and its points."""
    lecture = jupytext.read(src)
    ids = Ids()
    cells: list[nbformat.NotebookNode] = []
    n_solutions = points = 0
    code_index = 0
    for i, cell in enumerate(lecture.cells):
        if cell.cell_type == "markdown":
            # nbgrader would take a marker quoted in the prose for a solution region
            text = re.sub(r"### (BEGIN|END) SOLUTION", r"\1 SOLUTION", cell.source)
            cells.append(new_markdown_cell(text))
            continue
        if cell.cell_type != "code":
            continue
        code_index += 1
        if BEGIN not in cell.source:
            new = new_code_cell(cell.source)
            new.metadata["nbgrader"] = nbgrader_meta(ids(f"code-{code_index:03d}"), False, False)
            cells.append(new)
            continue
        for piece in split_exercise(cell.source, f"{src.name} cell {i}"):
            new = new_code_cell(piece.source)
            if piece.kind == "solution":
                n_solutions += 1
                gid = ids(piece.names[0] if piece.names else f"exercise-{n_solutions}")
                new.metadata["nbgrader"] = nbgrader_meta(gid, True, False)
            elif piece.kind == "test":
                n = POINTS_PER_CHECK * len(piece.names)
                points += n
                new.metadata["nbgrader"] = nbgrader_meta(ids(piece.names[0]), False, True, n)
            else:
                gid = ids(f"code-{code_index:03d}-after")
                new.metadata["nbgrader"] = nbgrader_meta(gid, False, False)
            cells.append(new)
    if points:
        what = f"{POINTS_PER_CHECK} point per check, {points} points in all"
        cells.insert(1, new_markdown_cell(HEADER.format(points=what)))
    for k, cell in enumerate(cells):
        cell.id = f"c{k:03d}"  # stable cell ids: the same notebook gives the same file
    kernelspec = lecture.metadata.get("kernelspec") or {
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "name": "python3",
    }
    nb = new_notebook(
        cells=cells, metadata={"kernelspec": kernelspec, "language_info": {"name": "python"}}
    )
    return nb, n_solutions, points


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def generate_assignments(out: Path, names: list[str]) -> None:
    """Run nbgrader's generate_assignment for each of ``names`` in course directory ``out``."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config.loader import PyFileConfigLoader

    # nbgrader runs the gradebook's migrations with the `alembic` command of its environment
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    config = PyFileConfigLoader("nbgrader_config.py", path=str(out)).load_config()
    config.CourseDirectory.root = str(out)
    api = NbGraderAPI(CourseDirectory(config=config), config=config)
    for name in names:
        result = api.generate_assignment(name, force=True)
        if not result["success"]:
            raise RuntimeError(
                f"nbgrader generate_assignment {name} failed:\n{result['log']}\n{result['error']}"
            )


def main(argv: list[str]) -> int:
    out, sources = lecture_args(__doc__, argv, "homework", "course directory")
    out = out.resolve()
    write_atomic(out / "nbgrader_config.py", CONFIG)
    names = []
    for src in sources:
        if not re.fullmatch(r"[0-9A-Z]\w*", src.stem):
            print(f"make_homework: {src}: expected a lecture source NN_topic.py", file=sys.stderr)
            return 2
        nb, n_solutions, points = homework_notebook(src)
        target = out / "source" / src.stem / f"{src.stem}.ipynb"
        write_atomic(target, nbformat.writes(nb))
        names.append(src.stem)
        print(f"{target.relative_to(out.parent)}: {n_solutions} exercise(s), {points} point(s)")
    generate_assignments(out, names)
    print(f"{out.name}/release/: {len(names)} assignment(s) generated by nbgrader")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
