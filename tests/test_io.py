"""dgmlib.io: hashes against hashlib, atomic writes that leave nothing behind on failure, and
checkpoints verified against their sidecar (and a manifest's hash) before anything is read."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from dgmlib.io import (
    CheckpointError,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    load_checkpoint,
    read_json,
    save_checkpoint,
    sha256_bytes,
    sha256_file,
    sidecar_path,
)


def test_hashes_against_hashlib(tmp_path):
    data = bytes(range(256)) * 9000  # 2.3 MB: more than one 1 MiB block
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sha256_bytes(data) == hashlib.sha256(data).hexdigest() == sha256_file(path)
    assert sha256_bytes(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "out.bin"
    with pytest.raises(RuntimeError, match="crash"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash")
    assert not target.exists() and list(target.parent.iterdir()) == []
    # an existing file survives a failed rewrite unchanged
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"new but unfinished")
        raise RuntimeError("crash")
    assert target.read_bytes() == b"old" and list(target.parent.iterdir()) == [target]
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and list(target.parent.iterdir()) == [target]


def test_atomic_write_json_format_and_read_json(tmp_path):
    path = tmp_path / "doc.json"
    atomic_write_json(path, {"b": [1, 2], "a": {"y": 1.5, "x": None}})
    assert (
        path.read_text() == '{\n "a": {\n  "x": null,\n  "y": 1.5\n },\n "b": [\n  1,\n  2\n ]\n}\n'
    )
    assert read_json(path) == {"a": {"x": None, "y": 1.5}, "b": [1, 2]}
    with pytest.raises(FileNotFoundError, match="nope.json: not found"):
        read_json(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        read_json(tmp_path / "bad.json")


def test_checkpoint_round_trip(tmp_path):
    path = tmp_path / "ck.safetensors"
    tensors = {"a": torch.randn(3, 4), "b": torch.arange(5), "c": torch.ones(2).t()}
    digest = save_checkpoint(path, tensors, {"note": "x", "k": [1, 2]})
    assert digest == sha256_file(path)
    assert sidecar_path(path).read_text() == f"{digest}  ck.safetensors\n"  # sha256sum format
    got, meta = load_checkpoint(path, expected_sha256=digest)
    assert set(got) == set(tensors) and all(torch.equal(got[k], tensors[k]) for k in tensors)
    assert meta == {"note": "x", "k": [1, 2]}
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))
    # the same tensors and metadata give the same bytes (the metadata keys are sorted)
    assert (
        save_checkpoint(tmp_path / "again.safetensors", tensors, {"k": [1, 2], "note": "x"})
        == digest
    )
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert json.loads(header["__metadata__"]["dgmlib"]) == {"k": [1, 2], "note": "x"}


def test_a_sidecar_mismatch_names_the_file_and_both_hashes(tmp_path):
    path = tmp_path / "ck.safetensors"
    recorded = save_checkpoint(path, {"a": torch.ones(10)})
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: corrupted checkpoint: SHA-256 is {sha256_file(path)}")
    assert f"the sidecar ck.safetensors.sha256 expects {recorded}" in msg


def test_a_manifest_mismatch_is_refused(tmp_path):
    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, {"a": torch.ones(2)})
    with pytest.raises(CheckpointError, match="the manifest expects " + "f" * 64):
        load_checkpoint(path, expected_sha256="f" * 64)


def test_missing_files_and_unreadable_content(tmp_path):
    with pytest.raises(CheckpointError, match="nope.safetensors: checkpoint not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, {"a": torch.ones(2)})
    sidecar_path(path).unlink()
    with pytest.raises(CheckpointError, match="no hash sidecar ck.safetensors.sha256"):
        load_checkpoint(path)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10" + b"\x00" * 7 + b"not json")
    sidecar_path(garbage).write_text(f"{sha256_file(garbage)}  garbage.safetensors\n")
    with pytest.raises(CheckpointError, match="garbage.safetensors: not a readable safetensors"):
        load_checkpoint(garbage)
