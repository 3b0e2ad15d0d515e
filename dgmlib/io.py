"""Files that are never half-written and always verified: hashes, atomic writes, checkpoints.

Checkpoints are safetensors files (tensors only, no pickle) with a ``.sha256`` sidecar in
``sha256sum`` format (``sha256sum -c NAME.safetensors.sha256`` checks one from the shell). Every
write goes to a temporary file in the target's folder and is renamed into place, so a crash
leaves either the old file or the new one; loading checks the hash before reading anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

__all__ = [
    "CheckpointError",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "load_checkpoint",
    "read_json",
    "save_checkpoint",
    "sha256_bytes",
    "sha256_file",
    "sidecar_path",
]


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupted or does not fit the model."""


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_json(path: str | os.PathLike, doc: Any) -> None:
    """Write ``doc`` as indented JSON with sorted keys and a final newline, atomically."""
    atomic_write_bytes(path, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())


def read_json(path: str | os.PathLike) -> Any:
    """The JSON document at ``path``; a clear error naming the file when it is missing or bad."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (see the README, `make checkpoints`)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e


def sidecar_path(path: str | os.PathLike) -> Path:
    """The ``.sha256`` file that records a checkpoint's hash."""
    return Path(str(path) + ".sha256")


def save_checkpoint(
    path: str | os.PathLike,
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, Any] | None = None,
) -> str:
    """Save named tensors and JSON-able metadata as safetensors plus a SHA-256 sidecar.

    Tensors are moved to the CPU first; the metadata is stored as one JSON string (sorted keys),
    so the same tensors and metadata always give the same bytes. Returns the hex digest.
    """
    path = Path(path)
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {"dgmlib": json.dumps(dict(metadata or {}), sort_keys=True)}
    data = st_save(flat, metadata=meta)
    digest = sha256_bytes(data)
    atomic_write_bytes(path, data)
    atomic_write_bytes(sidecar_path(path), f"{digest}  {path.name}\n".encode())
    return digest


def load_checkpoint(
    path: str | os.PathLike, expected_sha256: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load ``(tensors, metadata)`` after checking the file against its SHA-256 sidecar (and
    against ``expected_sha256`` when given, e.g. from a manifest)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: checkpoint not found. Run the command that makes it (see the README, "
            "`make checkpoints`)."
        )
    side = sidecar_path(path)
    if not side.is_file():
        raise CheckpointError(f"{path}: no hash sidecar {side.name}; cannot verify the file.")
    words = side.read_text().split()
    recorded = words[0] if words else ""
    data = path.read_bytes()
    actual = sha256_bytes(data)
    for source, expected in (
        ("the sidecar " + side.name, recorded),
        ("the manifest", expected_sha256),
    ):
        if expected is not None and actual != expected:
            raise CheckpointError(
                f"{path}: corrupted checkpoint: SHA-256 is {actual}, {source} expects "
                f"{expected}. Delete the file and its sidecar and re-create them "
                "(`make checkpoints`)."
            )
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
        meta = json.loads(header.get("__metadata__", {}).get("dgmlib", "{}"))
    except (SafetensorError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    return tensors, meta
