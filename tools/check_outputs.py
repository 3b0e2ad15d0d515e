"""Checks of a notebook's stored run that nbval cannot make: round-off prints and prose numbers.

Usage: python tools/check_outputs.py [notebooks/NN_topic.ipynb ...]   (default: all)

1. **Round-off prints.** A number in e-notation whose magnitude is below 1e-12 in a stored output
   is round-off: its digits change with the CPU's kernels and thread count. Print the bound it
   meets instead ("below 1e-12"); a number after "below", "under", "<" or "<=" is such a bound
   and allowed.
2. **Prose numbers.** A decimal in a markdown cell must come from somewhere a reader can check:
   an output of the notebook that rounds to it (the same number at a higher precision counts),
   a setting in one of its code cells (inline code in the markdown counts as code), or a
   paragraph that cites a source (``{cite}``, a table or a figure of a paper). A decimal typed
   into the prose from a run, which would silently go stale, fails.

Both checks run in tests/test_repo.py for every notebook; the exit status here is the number of
notebooks with a problem.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

ROUNDOFF_LIMIT = 1e-12
_E_NUMBER = re.compile(r"(?<![\w.])[-+]?(\d+(?:\.\d*)?|\.\d+)[eE]([-+]?\d+)(?![\w.])")
_BOUND_WORDS = re.compile(r"(below|under|<=?|≤|at most)\s*$", re.IGNORECASE)
_DECIMAL = re.compile(r"(?<![\w.^_{])(\d+\.\d+)(?![\w.]*\d)")
_NUMBER = re.compile(r"(?<![\w.])[-+]?(\d+\.\d+|\d+)(?:[eE][-+]?\d+)?")
_CITES = re.compile(r"\{cite[:\w]*\}|\bTable \d|\bFig(?:ure|\.) \d|\(\w[^()]*\d{4}\)")


def _cell_text(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _output_texts(cell: dict) -> list[str]:
    texts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            texts.append(_cell_text({"source": out.get("text", "")}))
        elif out.get("output_type") in ("execute_result", "display_data"):
            plain = out.get("data", {}).get("text/plain")
            if plain is not None:
                texts.append(_cell_text({"source": plain}))
    return texts


def roundoff_prints(nb: dict) -> list[str]:
    """Each e-notation number below 1e-12 in the stored outputs that is not stated as a bound."""
    found = []
    for i, cell in enumerate(nb["cells"]):
        for text in _output_texts(cell):
            for m in _E_NUMBER.finditer(text):
                value = float(m.group(0))
                if value == 0 or abs(value) >= ROUNDOFF_LIMIT:
                    continue
                if _BOUND_WORDS.search(text[: m.start()]):
                    continue
                line = text[text.rfind("\n", 0, m.start()) + 1 : text.find("\n", m.end())]
                found.append(f"cell {i}: {m.group(0)!r} in {line.strip()!r}")
    return found


def _numbers_in(texts: list[str]) -> list[str]:
    return [m.group(1) for t in texts for m in _NUMBER.finditer(t)]


def _rounds_to(decimal: str, candidates: list[str]) -> bool:
    """True when one of ``candidates`` (number strings) equals ``decimal`` at its precision."""
    places = len(decimal.split(".")[1])
    target = float(decimal)
    for c in candidates:
        if c == decimal:
            return True
        if "." in c and len(c.split(".")[1]) < places:
            continue  # a coarser print cannot support a finer prose number
        # round half away from zero, as a reader rounds, with a little slack for binary floats
        v = float(c)
        if abs(v - target) <= 0.5 * 10.0**-places * (1 + 1e-9) and math.isfinite(v):
            return True
    return False


def _strip_markup(md: str) -> str:
    """Markdown without what is not prose: HTML comments, link targets, labels."""
    md = re.sub(r"<!--.*?-->", "", md, flags=re.S)
    md = re.sub(r"\]\([^)]*\)", "]", md)  # link targets
    md = re.sub(r"`[^`\n]*`", "", md)  # inline code is code, not prose
    md = re.sub(r"\(\w[\w-]*\)=", "", md)  # MyST labels
    md = re.sub(r"^(#+\s*)\d+(\.\d+)*", r"\1", md, flags=re.M)  # section numbers
    md = re.sub(r"§\s?\d+(\.\d+)*", "§", md)  # references to sections
    return md


def unsupported_prose_numbers(nb: dict) -> list[str]:
    """Each decimal in a markdown cell that no output, code setting or citation supports."""
    outputs: list[str] = []
    code: list[str] = []
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            outputs.extend(_output_texts(cell))
            code.append(_cell_text(cell))
    out_numbers = _numbers_in(outputs)
    code_numbers = set(_numbers_in(code))
    found = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        for para in re.split(r"\n\s*\n", _strip_markup(_cell_text(cell))):
            if _CITES.search(para):
                continue
            for m in _DECIMAL.finditer(para):
                d = m.group(1)
                if d in code_numbers or _rounds_to(d, out_numbers):
                    continue
                ctx = para[max(0, m.start() - 40) : m.end() + 40].replace("\n", " ")
                found.append(f"cell {i}: {d} in '...{ctx}...'")
    return found


def check_notebook(path: Path) -> list[str]:
    """All problems of one stored notebook, each as one line."""
    nb = json.loads(Path(path).read_text())
    problems = [f"round-off print, {p}" for p in roundoff_prints(nb)]
    problems += [f"prose number from no output, {p}" for p in unsupported_prose_numbers(nb)]
    return problems


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or sorted((ROOT / "notebooks").glob("[0-9A]*.ipynb"))
    bad = 0
    for path in paths:
        problems = check_notebook(path.with_suffix(".ipynb"))
        bad += bool(problems)
        for p in problems:
            print(f"{path.name}: {p}")
    return bad


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
