"""Re-run notebooks top to bottom on CPU and store their outputs in the paired .ipynb.

Usage: python tools/execute_notebooks.py [notebooks/NN_topic.py ...]   (default: all)

Each .py source is first synced to its .ipynb with Jupytext, then executed with nbclient in the
notebooks/ folder, and the result is written atomically (temp file, then rename). The wall time
of each notebook is printed, so the 180 s budget can be checked.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NB_DIR = ROOT / "notebooks"
BIN = Path(sys.executable).parent


def execute(src: Path, timeout: int = 600) -> float:
    """Sync ``src`` to its .ipynb, execute it in place; return the wall time in seconds."""
    ipynb = src.with_suffix(".ipynb")
    subprocess.run([str(BIN / "jupytext"), "--quiet", "--sync", str(src)], check=True)
    nb = nbformat.read(ipynb, as_version=4)
    env = dict(os.environ, DGMLIB_THREADS=os.environ.get("DGMLIB_THREADS", "2"))
    env.pop("DGMLIB_DEVICE", None)  # stored outputs always come from the CPU run
    os.environ.update(env)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(NB_DIR)}}
    )
    t0 = time.perf_counter()
    client.execute()
    wall = time.perf_counter() - t0
    tmp = ipynb.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    tmp.replace(ipynb)
    # refresh the pair's timestamps so Jupytext sees both sides as in sync
    subprocess.run([str(BIN / "jupytext"), "--quiet", "--sync", str(src)], check=True)
    return wall


def main(argv: list[str]) -> int:
    srcs = [Path(a).with_suffix(".py") for a in argv] or sorted(NB_DIR.glob("[0-9A-Z]*.py"))
    for src in srcs:
        if not src.exists():
            print(f"execute_notebooks: no such notebook source {src}", file=sys.stderr)
            return 2
        wall = execute(src.resolve())
        print(f"{src.name}: executed in {wall:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
