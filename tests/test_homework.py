"""The instructor's pipeline with the real nbgrader: `make homework`, then autograde, feedback and
export from inside the course directory, in a temporary folder and offline.

`tools/make_homework.py` writes the course for every lecture (so a lecture nbgrader cannot
process fails here). Three lectures are then graded, each with three submissions made from the
released notebook as a student would make them:

- ``reference``: every stub replaced by the reference solution: full points;
- ``untouched``: the release as handed out: zero points, and the notebook still runs to the end;
- ``wrong``: one exercise solved with a plausible mistake: one point less, and the feedback shows
  the check's message naming the failing case.

The graded lectures are among the quickest to run, since each submission runs the whole lecture.
"""

from __future__ import annotations

import csv
import html
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "tools"))
from helpers import run_tool  # noqa: E402
from make_homework import split_exercise  # noqa: E402


@dataclass(frozen=True)
class Mistake:
    """A textual edit of one reference solution and the words its check's message must say."""

    grade_id: str  # the solution cell (the function's name)
    old: str
    new: str
    message: str


# Three quick lectures, each with a mistake a student could make.
MISTAKES = {
    "01_lvm_elbo": Mistake(
        "log_importance_estimate",
        "return log_w_max + torch.log(torch.exp(log_w - log_w_max).mean(dim=0))",
        "return torch.log(torch.exp(log_w).mean(dim=0))",  # no log-sum-exp trick
        "check_log_importance_estimate, case 'log-weights near -1000'",
    ),
    "07_discrete_latents": Mistake(
        "my_categorical_kl_uniform",
        "log_q = torch.log_softmax(logits, dim=-1)",
        "log_q = torch.log(torch.softmax(logits, dim=-1))",  # 0 * log 0 = NaN
        "check_categorical_kl_uniform, case 'one-hot q",
    ),
    "A1_adjoint": Mistake(
        "my_hutchinson_divergence",
        "return (eps_j * eps).sum(-1)",
        "return (eps_j * eps).mean(-1)",  # a mean over the dimensions instead of the sum
        "check_hutchinson_divergence, case 'Gaussian probes, d = 3'",
    ),
}


def nbgrader(course: Path, *args: str, timeout: float = 900) -> str:
    """Run the nbgrader command line inside ``course``; return its output, fail on an error."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env["DGMLIB_THREADS"] = "1"  # the kernels share the test machine's cores
    env.pop("DGMLIB_DEVICE", None)
    proc = subprocess.run(
        [str(BIN / "nbgrader"), *args],
        cwd=course,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    out = proc.stdout + proc.stderr
    if proc.returncode != 0 or "[ERROR]" in out:
        pytest.fail(f"nbgrader {' '.join(args)} failed ({proc.returncode}):\n{out[-6000:]}")
    return out


def solutions(notebook: Path) -> dict[str, str]:
    """The source of every solution cell of ``notebook``, by grade id."""
    nb = nbformat.read(notebook, as_version=4)
    return {
        c.metadata["nbgrader"]["grade_id"]: c.source
        for c in nb.cells
        if c.metadata.get("nbgrader", {}).get("solution")
    }


def submit(course: Path, lecture: str, student: str, answers: dict[str, str]) -> None:
    """Put the release of ``lecture`` with ``answers`` in its solution cells under submitted/."""
    nb = nbformat.read(course / "release" / lecture / f"{lecture}.ipynb", as_version=4)
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in answers:
            cell.source = answers[gid]
    target = course / "submitted" / student / lecture / f"{lecture}.ipynb"
    target.parent.mkdir(parents=True)
    nbformat.write(nb, target)


def test_split_exercise() -> None:
    """An exercise cell becomes solution, test (one name per check) and read-only code; the
    markers stay with the solution, loose comments go with what follows them."""
    src = (
        "def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\n\n\n"
        "# both checks\ncheck_f(f)\nchecks.check_g(f)\nprint(f(1))\n"
    )
    pieces = [(p.kind, p.names, p.source) for p in split_exercise(src, "cell")]
    assert pieces == [
        (
            "solution",
            ["f"],
            "def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION",
        ),
        ("test", ["check_f", "check_g"], "# both checks\ncheck_f(f)\nchecks.check_g(f)"),
        ("code", [], "print(f(1))"),
    ]
    top = "### BEGIN SOLUTION\nx = 3\n### END SOLUTION\ncheck_x(x)\n"
    assert [p.source for p in split_exercise(top, "cell")] == [top[:-12].rstrip(), "check_x(x)"]
    with pytest.raises(ValueError, match="cell 7: expected one solution block"):
        split_exercise("def f():\n    ### BEGIN SOLUTION\n    return 1\ncheck_f(f)\n", "cell 7")


@pytest.fixture(scope="module")
def course(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make homework` into a temporary folder, three submissions of each graded lecture,
    graded, with feedback and grades.csv; prints the scores and the times."""
    course = tmp_path_factory.mktemp("homework") / "homework"
    t0 = time.perf_counter()
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    proc = run_tool("make_homework.py", "--out", str(course), PATH=path)
    assert proc.returncode == 0, f"make_homework failed:\n{proc.stdout}\n{proc.stderr[-6000:]}"
    print(f"\nmake_homework: {time.perf_counter() - t0:.0f} s")
    for lecture, mistake in MISTAKES.items():
        reference = solutions(course / "source" / lecture / f"{lecture}.ipynb")
        assert mistake.old in reference[mistake.grade_id], f"{lecture}: the edit no longer applies"
        wrong = dict(reference)
        wrong[mistake.grade_id] = reference[mistake.grade_id].replace(mistake.old, mistake.new)
        submit(course, lecture, "reference", reference)
        submit(course, lecture, "untouched", {})
        submit(course, lecture, "wrong", wrong)
    for lecture in MISTAKES:
        t0 = time.perf_counter()
        nbgrader(course, "autograde", lecture)
        nbgrader(course, "generate_feedback", lecture)
        print(f"{lecture}: 3 submissions autograded in {time.perf_counter() - t0:.0f} s")
    nbgrader(course, "export")
    for row in grades(course):
        if row["assignment"] in MISTAKES:
            name = f"{row['assignment']} {row['student_id']}"
            print(f"{name:>30}: {row['score']} / {row['max_score']}")
    return course


def grades(course: Path) -> list[dict[str, str]]:
    """The rows of grades.csv written by `nbgrader export`."""
    with open(course / "grades.csv", newline="") as f:
        return list(csv.DictReader(f))


def score(course: Path, lecture: str, student: str) -> tuple[float, float]:
    """(score, max_score) of one submission in grades.csv."""
    rows = [r for r in grades(course) if (r["assignment"], r["student_id"]) == (lecture, student)]
    assert len(rows) == 1, f"grades.csv has {len(rows)} rows for {lecture}/{student}"
    return float(rows[0]["score"]), float(rows[0]["max_score"])


def page_text(path: Path) -> str:
    """The visible text of an HTML page (tags removed, entities decoded)."""
    return html.unescape(re.sub(r"<[^>]+>", "", path.read_text()))


@pytest.mark.slow  # minutes: each submission runs a whole lecture
def test_every_lecture_has_a_graded_exercise(course: Path) -> None:
    """Each lecture's source has solution cells and test cells with points, and its release has
    stubs in place of the solutions and none of the reference code."""
    lectures = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9A]*.py"))
    assert sorted(p.name for p in (course / "release").iterdir()) == lectures
    for lecture in lectures:
        source = nbformat.read(course / "source" / lecture / f"{lecture}.ipynb", as_version=4)
        meta = [c.metadata.get("nbgrader", {}) for c in source.cells]
        points = sum(m.get("points", 0) for m in meta if m.get("grade"))
        answers = solutions(course / "source" / lecture / f"{lecture}.ipynb")
        assert answers and points >= len(answers), f"{lecture}: {len(answers)} solutions, {points}"
        released = solutions(course / "release" / lecture / f"{lecture}.ipynb")
        assert released.keys() == answers.keys(), lecture
        for gid, text in released.items():
            assert "raise NotImplementedError" in text, f"{lecture} {gid}: no stub"
            assert "BEGIN SOLUTION" not in text, f"{lecture} {gid}: solution left in the release"


@pytest.mark.slow
@pytest.mark.parametrize("lecture", list(MISTAKES))
def test_reference_solutions_get_full_points(course: Path, lecture: str) -> None:
    got, best = score(course, lecture, "reference")
    assert best > 0 and got == best, f"{lecture}: the reference solutions score {got} / {best}"


@pytest.mark.slow
@pytest.mark.parametrize("lecture", list(MISTAKES))
def test_untouched_release_gets_zero_and_runs_to_the_end(course: Path, lecture: str) -> None:
    got, best = score(course, lecture, "untouched")
    assert got == 0, f"{lecture}: the stubs score {got} / {best}"
    graded = course / "autograded" / "untouched" / lecture / f"{lecture}.ipynb"
    cells = [c for c in nbformat.read(graded, as_version=4).cells if c.cell_type == "code"]
    unrun = [i for i, c in enumerate(cells) if c.execution_count is None]
    assert not unrun, f"{lecture}: code cells {unrun} never ran under autograde"
    tests = [c for c in cells if c.metadata.get("nbgrader", {}).get("grade")]
    for cell in tests:  # each check ran and said why it failed
        text = json.dumps(cell.outputs)
        assert "is not implemented yet" in text, f"{lecture}: {cell.source!r} said {text[:300]}"


@pytest.mark.slow
@pytest.mark.parametrize("lecture", list(MISTAKES))
def test_wrong_solution_gets_partial_points_and_the_message(course: Path, lecture: str) -> None:
    got, best = score(course, lecture, "wrong")
    assert got == best - 1, f"{lecture}: the wrong solution scores {got} / {best}"
    feedback = course / "feedback" / "wrong" / lecture / f"{lecture}.html"
    text = page_text(feedback)
    assert MISTAKES[lecture].message in text, f"{feedback.name} lacks the check's message"
    assert "Hint:" in text
