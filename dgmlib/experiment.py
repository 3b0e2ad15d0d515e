"""What every training script shares: models with a build spec, seeded epochs, checkpoints of
weights that rebuild themselves, and one schema for the results of every lecture.

* :func:`make` builds a module and records how (class and arguments) in ``module.build_spec``;
  :func:`build` rebuilds one from that spec. Arguments may be numbers, strings, lists, dicts,
  classes (e.g. ``nn.Tanh``) and other modules made by :func:`make`; tensors are not allowed
  (weights come from the checkpoint, not from the spec).
* :func:`save_model` writes the weights with the spec in the safetensors metadata, so
  :func:`dgmlib.pretrained.load` needs nothing but the file; :func:`load_weights` reads them back.
* :func:`epoch_order` is the seeded order of the examples in one epoch.
* :func:`write_results` writes ``<prefix>_results.json`` in the one schema below and records
  every checkpoint it names in the folder's ``manifest.json``.

Results schema (``"schema": "dgmlib.results/1"``)::

    {"schema", "lecture", "command", "quick", "settings": {...},
     "models": {name: {"checkpoint": "lNN_name.safetensors", "sha256", "n_params",
                       "train_seconds", "test": {...}, "curves": [...], ...}}}

Figures are nats per example unless the key says otherwise (``_bpd``: bits per dimension), and
signed without ambiguity: ``log_px_z`` = E_q log p(x|z) (<= 0 for discrete data), ``kl`` =
KL(q(z|x) || p(z)) (>= 0), ``elbo`` = log_px_z - kl, ``nll`` = -log p(x) (an estimate). The key
``recon``, used once with both signs, is refused.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from dgmlib.io import (
    CheckpointError,
    atomic_write_json,
    load_checkpoint,
    read_json,
    save_checkpoint,
)
from dgmlib.utils import get_device

__all__ = [
    "MANIFEST",
    "RESULTS_SCHEMA",
    "build",
    "config_values",
    "epoch_order",
    "load_weights",
    "make",
    "model_entry",
    "model_tensors",
    "n_params",
    "resumed_entry",
    "save_model",
    "script_args",
    "script_parser",
    "spec_of",
    "train_each",
    "write_results",
]

RESULTS_SCHEMA = "dgmlib.results/1"
MANIFEST = "manifest.json"
_ALLOWED_ROOTS = ("dgmlib", "torch")
_WEIGHT_PREFIX = "model."
_AMBIGUOUS_KEYS = ("recon",)


# --------------------------------------------------------------------------------------------
# Build specs
# --------------------------------------------------------------------------------------------


def _qualname(obj: type) -> str:
    return f"{obj.__module__}:{obj.__qualname__}"


def _encode(value: Any, where: str) -> Any:
    """A JSON-able form of a constructor argument (see the module docstring)."""
    if isinstance(value, nn.Module):
        if not hasattr(value, "build_spec"):
            raise TypeError(
                f"{where}: the module {type(value).__name__} has no build spec; create it with "
                "dgmlib.experiment.make"
            )
        return value.build_spec
    if isinstance(value, type):
        return {"type": _qualname(value)}
    if isinstance(value, torch.Tensor):
        raise TypeError(f"{where}: tensors cannot be part of a build spec (pass sizes instead)")
    if isinstance(value, (list, tuple)):
        return [_encode(v, where) for v in value]
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"{where}: dict arguments need string keys")
        return {"dict": {k: _encode(v, where) for k, v in value.items()}}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{where}: cannot record an argument of type {type(value).__name__}")


def _resolve(path: str) -> Any:
    """The class named ``module:qualname``, importable only from dgmlib or torch."""
    module, _, qual = path.partition(":")
    if module.split(".")[0] not in _ALLOWED_ROOTS or not qual:
        raise ValueError(f"build spec names {path!r}; only dgmlib and torch classes are allowed")
    obj: Any = importlib.import_module(module)
    for part in qual.split("."):
        obj = getattr(obj, part)
    return obj


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        if "class" in value:
            return build(value)
        if "type" in value:
            return _resolve(value["type"])
        if "dict" in value:
            return {k: _decode(v) for k, v in value["dict"].items()}
        raise ValueError(f"build spec: unexpected mapping with keys {sorted(value)}")
    return value


_ModuleT = TypeVar("_ModuleT", bound=nn.Module)


def make(cls: type[_ModuleT], **kwargs: Any) -> _ModuleT:
    """``cls(**kwargs)`` with ``build_spec = {"class": ..., "args": ...}`` recorded on it."""
    spec = {
        "class": _qualname(cls),
        "args": {k: _encode(v, cls.__name__) for k, v in kwargs.items()},
    }
    module = cls(**kwargs)
    # nn.Module.__setattr__ is typed for tensors and modules; a dict is stored as a plain attribute
    module.build_spec = spec  # type: ignore[assignment]
    return module


def build(spec: Mapping[str, Any]) -> nn.Module:
    """Rebuild a module from a spec made by :func:`make` (fresh weights from torch's seed)."""
    if not isinstance(spec, Mapping) or "class" not in spec:
        raise ValueError(f"build: a spec is a dict with a 'class' entry, got {spec!r:.200}")
    cls = _resolve(spec["class"])
    kwargs = {k: _decode(v) for k, v in spec.get("args", {}).items()}
    module = cls(**kwargs)
    module.build_spec = dict(spec)
    return module


def spec_of(model: nn.Module) -> dict[str, Any]:
    """The build spec of a module made by :func:`make` or :func:`build`."""
    spec = getattr(model, "build_spec", None)
    if spec is None:
        raise ValueError(
            f"{type(model).__name__} has no build spec; create it with dgmlib.experiment.make"
        )
    return spec


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------


def model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors under which a checkpoint stores ``model``'s state dict."""
    return {_WEIGHT_PREFIX + k: v for k, v in model.state_dict().items()}


def load_weights(
    model: nn.Module, tensors: Mapping[str, torch.Tensor], source: str | os.PathLike
) -> None:
    """Copy the stored weights into ``model`` (dtype and device of the model's own tensors)."""
    state = {
        k.removeprefix(_WEIGHT_PREFIX): v
        for k, v in tensors.items()
        if k.startswith(_WEIGHT_PREFIX)
    }
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{source}: does not fit {type(model).__name__}: {e}") from e


def save_model(
    path: str | os.PathLike,
    model: nn.Module,
    /,
    tensors: Mapping[str, torch.Tensor] | None = None,
    **metadata: Any,
) -> str:
    """Write ``model``'s weights with its build spec and ``metadata``, plus any named extra
    ``tensors`` stored beside them (e.g. samples; read back with :func:`dgmlib.io.load_checkpoint`);
    return the SHA-256."""
    meta = {"spec": spec_of(model), **metadata}
    stored = model_tensors(model)
    for name, t in (tensors or {}).items():
        if name.startswith(_WEIGHT_PREFIX) or name in stored:
            raise ValueError(f"save_model: extra tensor name {name!r} collides with the weights")
        stored[name] = t
    return save_checkpoint(path, stored, meta)


def load_model_file(path: str | os.PathLike, expected_sha256: str | None = None) -> nn.Module:
    """Rebuild the model stored at ``path`` from its spec and load its (verified) weights."""
    tensors, meta = load_checkpoint(path, expected_sha256)
    if "spec" not in meta:
        raise CheckpointError(f"{path}: no build spec in the metadata (re-run `make checkpoints`)")
    model = build(meta["spec"])
    load_weights(model, tensors, path)
    return model.eval()


# --------------------------------------------------------------------------------------------
# Epochs and results
# --------------------------------------------------------------------------------------------


def script_parser(doc: str) -> argparse.ArgumentParser:
    """The options every ``tools/train_lectureNN.py`` takes: ``--out`` (default: the
    repository's ``data/checkpoints``), ``--device`` (default ``$DGMLIB_DEVICE``, else cpu) and
    ``--quick`` (a smoke test, not the lecture's settings); the description is ``doc``'s first
    line. Add the script's own options to the parser it returns."""
    ap = argparse.ArgumentParser(description=doc.strip().split("\n")[0])
    default_out = Path(__file__).resolve().parents[1] / "data" / "checkpoints"
    ap.add_argument("--out", type=Path, default=default_out, help=f"default: {default_out.name}")
    ap.add_argument("--device", default=None, help="default: $DGMLIB_DEVICE, else cpu")
    ap.add_argument("--quick", action="store_true", help="a smoke test (not the lecture's)")
    return ap


def script_args(
    parser: argparse.ArgumentParser, argv: list[str] | None = None
) -> argparse.Namespace:
    """Parse a :func:`script_parser`'s options: ``--quick`` may not write into the stored
    checkpoints, ``device`` becomes a ``torch.device`` (:func:`dgmlib.utils.get_device`) and the
    ``out`` folder is created."""
    args = parser.parse_args(argv)
    if args.quick and args.out.resolve() == parser.get_default("out").resolve():
        parser.error("--quick writes smoke-test files; give another folder with --out")
    args.device = get_device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def epoch_order(n: int, epoch: int, seed: int = 0) -> torch.Tensor:
    """The order of ``n`` examples in epoch ``epoch`` (from 0): a permutation ``[n]`` drawn from
    a generator seeded ``1000 * (seed + 1) + epoch``, so every epoch is reproducible on its own
    (resuming after epoch k gives the same batches as an uninterrupted run)."""
    g = torch.Generator().manual_seed(1000 * (seed + 1) + epoch)
    return torch.randperm(n, generator=g)


def config_values(namespace: Mapping[str, Any], names: str) -> dict[str, Any]:
    """``{name.lower(): namespace[name]}`` for the space-separated ``names`` of a training
    script's configuration constants, e.g. ``config_values(globals(), "SEED EPOCHS LR")`` ->
    ``{"seed": 0, "epochs": 10, "lr": 0.001}``: the settings a results file records, under the
    constants' own names. A name missing from ``namespace`` is a KeyError naming it."""
    out = {}
    for name in names.split():
        if name not in namespace:
            raise KeyError(f"config_values: no constant {name!r} in the namespace given")
        out[name.lower()] = namespace[name]
    return out


def n_params(model: nn.Module) -> int:
    """The number of weights of ``model`` (trained or not)."""
    return sum(p.numel() for p in model.parameters())


def model_entry(
    path: str | os.PathLike, sha256: str, model: nn.Module, train_seconds: float, **fields: Any
) -> dict[str, Any]:
    """The results entry of a saved model (see :func:`write_results`): its checkpoint's file
    name and SHA-256, the weights of ``model`` counted, the training time in seconds, and
    ``fields`` (``test``, ``curves``, settings of that model)."""
    return {
        "checkpoint": Path(path).name,
        "sha256": sha256,
        "n_params": n_params(model),
        "train_seconds": train_seconds,
        **fields,
    }


def _refuse_ambiguous(value: Any, where: str) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            if k in _AMBIGUOUS_KEYS:
                raise ValueError(
                    f"write_results: {where} has the key {k!r}; write log_px_z (E_q log p(x|z)) "
                    "or its negation under a name that says so"
                )
            _refuse_ambiguous(v, f"{where}.{k}")
    elif isinstance(value, list):
        for v in value:
            _refuse_ambiguous(v, where)


def write_results(
    out: str | os.PathLike,
    prefix: str,
    lecture: str,
    command: str,
    settings: Mapping[str, Any],
    models: Mapping[str, Mapping[str, Any]],
    quick: bool = False,
    resume_dir: str | os.PathLike | None = None,
) -> Path:
    """Write ``out/<prefix>_results.json`` (the schema of the module docstring) and record each
    model's checkpoint and hash in ``out/manifest.json``; then remove ``resume_dir`` (the run's
    resume state, no longer needed) if given; return the results path."""
    out = Path(out)
    _refuse_ambiguous(dict(models), "models")
    doc = {
        "schema": RESULTS_SCHEMA,
        "lecture": lecture,
        "command": command,
        "quick": bool(quick),
        "settings": dict(settings),
        "models": {k: dict(v) for k, v in models.items()},
    }
    path = out / f"{prefix}_results.json"
    atomic_write_json(path, doc)
    manifest_path = out / MANIFEST
    manifest = read_json(manifest_path) if manifest_path.is_file() else {}
    for name, entry in models.items():
        if "checkpoint" not in entry:
            continue
        manifest[Path(entry["checkpoint"]).stem] = {
            "file": entry["checkpoint"],
            "sha256": entry["sha256"],
            "results": path.name,
            "model": name,
            "command": command,
        }
    atomic_write_json(manifest_path, dict(sorted(manifest.items())))
    if resume_dir is not None:
        shutil.rmtree(resume_dir, ignore_errors=True)
    return path


def resumed_entry(cache: str | os.PathLike, checkpoint: str | os.PathLike) -> dict[str, Any] | None:
    """The results entry a run stored in ``cache`` (JSON) after saving ``checkpoint``, with the
    checkpoint verified against its hash, if both files are there (the model was trained and
    evaluated before an interruption); ``None`` otherwise."""
    cache, checkpoint = Path(cache), Path(checkpoint)
    if not (cache.is_file() and checkpoint.is_file()):
        return None
    entry = read_json(cache)
    load_model_file(checkpoint, entry["sha256"])  # raises CheckpointError if it does not match
    return entry


def train_each(
    keys: Iterable[str],
    out: str | os.PathLike,
    prefix: str,
    resume_dir: str | os.PathLike,
    run: Callable[[str, Path], dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    """The results entries of the models ``keys``, made one at a time: ``run(key, checkpoint)``
    trains one, saves it to ``checkpoint = out/<prefix>_<key>.safetensors`` and returns its
    entry (:func:`model_entry`), which is kept in ``resume_dir/<key>.json``. A model whose entry
    and checkpoint are there from before an interruption is not run again
    (:func:`resumed_entry`)."""
    resume_dir = Path(resume_dir)
    resume_dir.mkdir(parents=True, exist_ok=True)
    entries: dict[str, dict[str, Any]] = {}
    for key in keys:
        checkpoint, cache = Path(out) / f"{prefix}_{key}.safetensors", resume_dir / f"{key}.json"
        entry = resumed_entry(cache, checkpoint)
        if entry is None:
            entry = run(key, checkpoint)
            atomic_write_json(cache, entry)
        entries[key] = entry
    return entries
