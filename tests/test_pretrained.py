"""dgmlib.pretrained: models by name from a checkpoint folder ($DGMLIB_CHECKPOINTS, or the course's
data/checkpoints from any working folder), verified against the manifest's SHA-256."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dgmlib import pretrained
from dgmlib.experiment import MANIFEST, make, save_model, write_results
from dgmlib.io import CheckpointError
from dgmlib.models.vae import VAE, BernoulliDecoder, MLPGaussianEncoder

ROOT = Path(__file__).resolve().parent.parent
REPO_CHECKPOINTS = ROOT / "data" / "checkpoints"


def tiny_vae() -> VAE:
    enc = make(MLPGaussianEncoder, x_dim=6, hidden=4, z_dim=2)
    return make(VAE, encoder=enc, decoder=make(BernoulliDecoder, z_dim=2, hidden=4, x_shape=6))


@pytest.fixture
def folder(tmp_path, monkeypatch) -> tuple[Path, VAE]:
    """A checkpoint folder with one model, l99_tiny, and $DGMLIB_CHECKPOINTS pointing at it."""
    torch.manual_seed(0)
    model = tiny_vae()
    digest = save_model(tmp_path / "l99_tiny.safetensors", model, epochs=2)
    entry = {"checkpoint": "l99_tiny.safetensors", "sha256": digest, "test": {"nll": 3.5}}
    write_results(tmp_path, "l99", "99", "python tools/train_lecture99.py", {}, {"tiny": entry})
    monkeypatch.setenv("DGMLIB_CHECKPOINTS", str(tmp_path))
    return tmp_path, model


def test_load_by_name_from_the_folder_of_the_variable(folder, monkeypatch):
    path, model = folder
    monkeypatch.chdir(path.parent)  # any working folder
    assert pretrained.checkpoint_dir() == path
    assert set(pretrained.manifest()) == {"l99_tiny"}
    assert pretrained.results("l99")["models"]["tiny"]["test"] == {"nll": 3.5}
    loaded = pretrained.load("l99_tiny")
    assert type(loaded) is VAE and not loaded.training
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert pretrained.load("l99_tiny", device="cpu").encoder.net[0].weight.device.type == "cpu"


def test_a_wrong_hash_names_the_file(folder):
    path, _ = folder
    manifest = json.loads((path / MANIFEST).read_text())
    manifest["l99_tiny"]["sha256"] = "0" * 64
    (path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="l99_tiny.safetensors: corrupted checkpoint") as err:
        pretrained.load("l99_tiny")
    assert "the manifest expects " + "0" * 64 in str(err.value)


def test_an_altered_file_is_refused(folder):
    path, _ = folder
    ckpt = path / "l99_tiny.safetensors"
    raw = bytearray(ckpt.read_bytes())
    raw[-1] ^= 0x01
    ckpt.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="l99_tiny.safetensors: corrupted checkpoint"):
        pretrained.load("l99_tiny")


def test_an_unknown_name_lists_the_known_ones(folder):
    with pytest.raises(KeyError, match=r"no checkpoint named 'l99_huge'; known: \['l99_tiny'\]"):
        pretrained.load("l99_huge")


def test_the_variable_must_name_a_checkpoint_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("DGMLIB_CHECKPOINTS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=f"DGMLIB_CHECKPOINTS={tmp_path}: no manifest"):
        pretrained.checkpoint_dir()


def test_without_the_variable_the_course_folder_is_found_from_another_cwd(tmp_path, monkeypatch):
    """From a notebook's folder of another copy of the course, or from anywhere: first the folder
    beside the installed package, else data/checkpoints in the working folder or a parent."""
    monkeypatch.delenv("DGMLIB_CHECKPOINTS", raising=False)
    course = tmp_path / "course"
    (course / "data" / "checkpoints").mkdir(parents=True)
    (course / "data" / "checkpoints" / MANIFEST).write_text("{}\n")
    (course / "notebooks").mkdir()
    monkeypatch.chdir(course / "notebooks")
    beside_package = (REPO_CHECKPOINTS / MANIFEST).is_file()
    expected = REPO_CHECKPOINTS if beside_package else course / "data" / "checkpoints"
    assert pretrained.checkpoint_dir().resolve() == expected.resolve()
    monkeypatch.chdir(tmp_path)
    if beside_package:
        assert pretrained.checkpoint_dir().resolve() == REPO_CHECKPOINTS.resolve()
    else:
        with pytest.raises(FileNotFoundError, match="set DGMLIB_CHECKPOINTS"):
            pretrained.checkpoint_dir()
