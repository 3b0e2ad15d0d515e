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


from check_outputs import check_notebook, roundoff_prints, unsupported_prose_numbers  # noqa: E402


@pytest.mark.parametrize("src", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_outputs_print_no_roundoff_and_prose_numbers_come_from_outputs(src: Path):
    """tools/check_outputs.py: no e-notation number below 1e-12 unless stated as a bound; every
    decimal of the markdown is supported by an output, a code setting or a citation."""
    problems = check_notebook(src.with_suffix(".ipynb"))
    assert not problems, "\n".join(problems)


def _nb(markdown: str, output: str) -> dict:
    return {
        "cells": [
            {"cell_type": "markdown", "source": markdown},
            {
                "cell_type": "code",
                "source": "print(x)",
                "outputs": [{"output_type": "stream", "name": "stdout", "text": output}],
            },
        ]
    }


def test_output_checks_fail_on_planted_examples():
    """The two checks catch what they exist for, and let through what is legitimate."""
    assert roundoff_prints(_nb("", "max |a - b| = 9.5e-15\n"))
    assert roundoff_prints(_nb("", "error -3.1E-13"))
    assert not roundoff_prints(_nb("", "max |a - b| below 1e-12: True\n"))
    assert not roundoff_prints(_nb("", "max |a - b| < 1e-14\n"))
    assert not roundoff_prints(_nb("", "step 1e-3, tolerance 1e-12, lr 2e-5\n"))
    assert unsupported_prose_numbers(_nb("The KL is about 0.15 nats.", "KL 12.3\n"))
    assert unsupported_prose_numbers(_nb("The gap is 0.1524 nats.", "gap 0.152\n"))  # too fine
    assert not unsupported_prose_numbers(_nb("The KL is about 0.15 nats.", "KL 0.1523\n"))
    assert not unsupported_prose_numbers(_nb("Their NLL is 86.76 {cite}`burda`.", ""))
    assert not unsupported_prose_numbers(_nb("### 2.1 Section\nSee §4.2 and `x = 0.5`.", ""))
