"""Repository consistency: pinned set-up, notebook pairs, stored runs, README, student edition."""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9A]*.py"))
sys.path.insert(0, str(ROOT / "tools"))
from make_student import STUB, strip_solutions, student_notebook  # noqa: E402


def pins(lines: list[str]) -> set[str]:
    return {ln.strip() for ln in lines if re.match(r"^[A-Za-z0-9_.\-\[\]]+==", ln.strip())}


def test_requirements_and_environment_agree():
    req = pins((ROOT / "requirements.txt").read_text().splitlines())
    env_lines = (ROOT / "environment.yml").read_text().splitlines()
    env = pins([ln.strip().removeprefix("- ") for ln in env_lines])
    assert req, "requirements.txt pins nothing"
    assert req == env, (
        f"only in requirements.txt: {req - env}; only in environment.yml: {env - req}"
    )
    assert "torch==2.13.0" in req and "triton==3.7.1" in req
    assert not any("+" in p for p in req), "pins must not carry local version labels"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make book" in readme
    assert re.search(r"^\s*(time )?make test\s*$", (ROOT / ".ci/run").read_text(), re.M)


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks/NN_topic.py found"


@pytest.mark.parametrize("src", NOTEBOOKS, ids=lambda p: p.stem)
def test_pair_in_sync_and_stored_run_complete(src: Path):
    """The .ipynb holds the same cells as its .py source and the outputs of one clean run."""
    ipynb = src.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} missing: run `make sync` then `make execute`"
    from_py = jupytext.read(src)
    stored = jupytext.read(ipynb)
    a = [(c.cell_type, c.source.strip()) for c in from_py.cells]
    b = [(c.cell_type, c.source.strip()) for c in stored.cells]
    assert a == b, f"{src.name} and {ipynb.name} differ: run `make sync` and `make execute`"
    raw = json.loads(ipynb.read_text())
    code = [c for c in raw["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{ipynb.name}: not one top-to-bottom run"
    errors = [o for c in code for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors, f"{ipynb.name}: stored outputs contain an error"


@pytest.mark.parametrize("src", NOTEBOOKS, ids=lambda p: p.stem)
def test_readme_lists_notebook(src: Path):
    assert src.stem in (ROOT / "README.md").read_text()


def test_strip_solutions():
    src = (
        "x = 1\ndef f(a):\n    ### BEGIN SOLUTION\n    return a + 1\n"
        "    ### END SOLUTION\ncheck(f)\n"
    )
    out, n = strip_solutions(src)
    assert n == 1 and "return a + 1" not in out and f"    {STUB}" in out
    assert out.startswith("x = 1") and out.endswith("check(f)")
    ast.parse(out)
    with pytest.raises(ValueError, match="never closed"):
        strip_solutions("### BEGIN SOLUTION\nx = 1\n")
    with pytest.raises(ValueError, match="without BEGIN"):
        strip_solutions("x = 1\n### END SOLUTION\n")


@pytest.mark.parametrize("src", NOTEBOOKS, ids=lambda p: p.stem)
def test_student_edition(src: Path):
    """Every lecture has an exercise; its student version has stubs, no solutions, valid code."""
    nb, n = student_notebook(src)
    assert n >= 1, f"{src.name} has no exercise with ### BEGIN SOLUTION markers"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert "BEGIN SOLUTION" not in cell.source and not cell.outputs
            ast.parse(
                "\n".join(ln for ln in cell.source.splitlines() if not ln.startswith(("%", "!")))
            )
    assert sum(c.source.count(STUB) for c in nb.cells) == n
