"""Regenerate requirements.txt and environment.yml from the packages installed in .venv.

Usage: python tools/lock.py  (after installing or upgrading something in .venv)
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

REQ_HEADER = """\
# Pinned set-up of the course (Python 3.11). `make setup` installs it into .venv.
# torch is pinned without a local suffix: pip picks the CPU or the CUDA build that fits.
# Regenerate after a change: make lock
"""
ENV_HEADER = """\
# Conda equivalent of requirements.txt: the same pinned packages, installed by pip inside
# a conda environment (conda env create -f environment.yml; conda activate dgm-course;
# pip install -e . --no-deps). tests/test_repo.py checks that both lists agree.
name: dgm-course
channels:
  - conda-forge
dependencies:
  - python=3.11
  - pip
  - nodejs>=18
  - pip:
"""


def frozen() -> list[str]:
    """``pip freeze`` of this interpreter without editable installs or local version labels."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    pins = [re.sub(r"\+[\w.]+$", "", line) for line in out.splitlines() if "==" in line]
    return sorted(pins, key=str.lower)


def write(path: Path, text: str) -> None:
    """Write through a temporary file and a rename."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def main() -> None:
    pins = frozen()
    write(ROOT / "requirements.txt", REQ_HEADER + "".join(p + "\n" for p in pins))
    write(ROOT / "environment.yml", ENV_HEADER + "".join(f"      - {p}\n" for p in pins))
    print(f"pinned {len(pins)} packages in requirements.txt and environment.yml")


if __name__ == "__main__":
    main()
