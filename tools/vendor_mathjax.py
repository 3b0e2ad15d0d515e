"""Vendor MathJax 3 from its npm package into book/_vendor/mathjax/, so the website renders math
with no network.

Usage: python tools/vendor_mathjax.py [--force]

The package tarball is fetched with `npm pack mathjax@3` into a temporary folder, and only what
the CommonHTML output needs is kept: the combined `tex-mml-chtml.js` component (the one the book
loads), the components and TeX extensions it loads on demand, the accessibility and menu
components, and the CommonHTML web fonts. The result is assembled in a temporary folder next to
the target and renamed into place, so a half-written copy is never left behind. When the target
already holds a complete copy, nothing is done (pass --force to fetch it again).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "book" / "_vendor" / "mathjax"
PACKAGE = "mathjax@3"
ENTRY = "tex-mml-chtml.js"  # the file the book's `mathjax_path` points at

# Paths inside the package's es5/ folder that are kept. Directories are kept whole.
KEEP = [
    "tex-mml-chtml.js",
    "tex-chtml.js",
    "tex-chtml-full.js",
    "startup.js",
    "core.js",
    "loader.js",
    "input",
    "output/chtml.js",
    "output/chtml",
    "a11y",
    "ui",
    "adaptors",
    "sre",
]
# Files whose presence marks a complete copy (checked before doing anything).
REQUIRED = [
    ENTRY,
    "input/tex/extensions/ams.js",
    "output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff",
    "VERSION",
]


def is_complete(target: Path = TARGET) -> bool:
    return all((target / rel).is_file() for rel in REQUIRED)


def npm_pack(dest: Path) -> Path:
    """Download the package tarball into ``dest`` with npm; return its path."""
    npm = shutil.which("npm")
    if npm is None:
        sys.exit(
            "error: npm was not found. MathJax is vendored from its npm package; install Node.js "
            "and npm (e.g. `apt-get install npm`, or https://nodejs.org), then run again."
        )
    proc = subprocess.run(
        [npm, "pack", PACKAGE, "--json", "--silent"],
        cwd=dest,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        sys.exit(f"error: `npm pack {PACKAGE}` failed:\n{proc.stderr.strip() or proc.stdout}")
    tarballs = sorted(dest.glob("mathjax-*.tgz"))
    if len(tarballs) != 1:
        sys.exit(f"error: `npm pack {PACKAGE}` did not produce one tarball in {dest}")
    return tarballs[0]


def extract(tarball: Path, staging: Path) -> str:
    """Unpack the kept part of ``tarball`` into ``staging``; return the MathJax version."""
    with tempfile.TemporaryDirectory() as tmp:
        unpacked = Path(tmp)
        with tarfile.open(tarball) as tar:
            # npm tarballs hold plain files under package/; refuse anything else.
            for member in tar.getmembers():
                name = Path(member.name)
                unsafe = name.is_absolute() or ".." in name.parts
                if unsafe or not (member.isfile() or member.isdir()):
                    sys.exit(f"error: unexpected entry {member.name!r} in {tarball.name}")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(unpacked, filter="data")
            else:  # Python without extraction filters; the members were checked above
                tar.extractall(unpacked)
        pkg = unpacked / "package"
        version = json.loads((pkg / "package.json").read_text())["version"]
        if not version.startswith("3."):
            sys.exit(f"error: expected MathJax 3.x, got {version}")
        es5 = pkg / "es5"
        for rel in KEEP:
            src, dst = es5 / rel, staging / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst)
            elif src.is_file():
                shutil.copy2(src, dst)
            else:
                sys.exit(f"error: mathjax {version} has no es5/{rel}")
        shutil.copy2(pkg / "LICENSE", staging / "LICENSE")
        (staging / "VERSION").write_text(version + "\n")
    return version


def vendor(target: Path = TARGET, force: bool = False) -> Path:
    """Make sure ``target`` holds a complete MathJax copy; return the path of its entry file."""
    if is_complete(target) and not force:
        return target / ENTRY
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".mathjax-", dir=target.parent))
    try:
        with tempfile.TemporaryDirectory() as download:
            version = extract(npm_pack(Path(download)), staging)
        if not is_complete(staging):
            sys.exit("error: the MathJax copy is incomplete; nothing was changed")
        old = None
        if target.exists():
            old = target.with_name(target.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
        staging.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"vendored MathJax {version} into {target.relative_to(ROOT)}")
    return target / ENTRY


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="fetch again even if present")
    args = parser.parse_args(argv)
    vendor(force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
