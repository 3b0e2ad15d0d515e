"""A small generic trainer and safe checkpoints.

Any model whose ``loss(x)`` returns a dict of named scalar terms, one of them ``"loss"`` (the
quantity to minimise, averaged over the batch), can be trained by :class:`Trainer`; every term is
logged in ``Trainer.history``, so one plotting helper serves every lecture.

Checkpoints are safetensors files (tensors only, no pickle) with a ``.sha256`` sidecar. Both are
written to a temporary file first and renamed, so a crash never leaves a half-written checkpoint,
and loading verifies the hash before reading anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from tqdm.auto import tqdm


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupted or does not fit the model."""


# --------------------------------------------------------------------------------------------
# Atomic, checksummed files
# --------------------------------------------------------------------------------------------


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sidecar_path(path: str | os.PathLike) -> Path:
    """The ``.sha256`` file that records a checkpoint's hash."""
    return Path(str(path) + ".sha256")


def save_checkpoint(
    path: str | os.PathLike,
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, Any] | None = None,
) -> str:
    """Save named tensors and JSON-able metadata as safetensors plus a SHA-256 sidecar.

    Returns the hex digest. The sidecar holds ``"<digest>  <file name>"`` (``sha256sum`` format,
    so ``sha256sum -c model.safetensors.sha256`` checks it from the shell).
    """
    path = Path(path)
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {"dgmlib": json.dumps(dict(metadata or {}), sort_keys=True)}
    data = st_save(flat, metadata=meta)
    digest = hashlib.sha256(data).hexdigest()
    atomic_write_bytes(path, data)
    atomic_write_bytes(sidecar_path(path), f"{digest}  {path.name}\n".encode())
    return digest


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load ``(tensors, metadata)`` after checking the file against its SHA-256 sidecar."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: checkpoint not found. Run the command that makes it (see the README, "
            "`make checkpoints`)."
        )
    side = sidecar_path(path)
    if not side.is_file():
        raise CheckpointError(f"{path}: no hash sidecar {side.name}; cannot verify the file.")
    expected = side.read_text().split()[0] if side.read_text().split() else ""
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise CheckpointError(
            f"{path}: corrupted checkpoint: SHA-256 is {actual}, the sidecar {side.name} expects "
            f"{expected}. Delete both files and re-create them (`make checkpoints`)."
        )
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
    except (SafetensorError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    meta = json.loads(header.get("__metadata__", {}).get("dgmlib", "{}"))
    return tensors, meta


# --------------------------------------------------------------------------------------------
# Optimizer state <-> flat tensors (safetensors holds tensors only)
# --------------------------------------------------------------------------------------------


def _optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer's state dict into flat tensors and JSON-able parameter groups."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            t = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"optim.{pid}.{key}"] = t
    return tensors, {"param_groups": sd["param_groups"]}


def _optimizer_from_flat(
    opt: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor], groups: dict
) -> None:
    """Restore an optimizer from :func:`_optimizer_to_flat`'s output."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, t in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = t
    opt.load_state_dict({"state": state, "param_groups": groups["param_groups"]})


# --------------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------------


class Trainer:
    """Train ``model`` (with ``loss(x) -> {"loss": ..., other terms}``) by mini-batch steps.

    ``history`` maps every term (and ``"step"``, ``"epoch"``) to a list with one entry per
    logged step: the mean of the term over the last ``log_every`` steps.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        log_every: int = 50,
        progress: bool | None = None,
        grad_clip: float | None = None,
    ) -> None:
        if log_every < 1:
            raise ValueError(f"Trainer: log_every must be >= 1, got {log_every}")
        self.model = model
        self.optimizer = optimizer
        self.log_every = log_every
        # progress=None: show a bar unless DGMLIB_PROGRESS=0 (tqdm.auto: widget in Lab, text else)
        if progress is None:
            progress = os.environ.get("DGMLIB_PROGRESS", "1") not in ("0", "")
        self.progress = progress
        self.grad_clip = grad_clip
        self.step = 0
        self.epoch = 0
        self.history: dict[str, list[float]] = {}
        self._acc: dict[str, float] = {}
        self._acc_n = 0

    # -- one step ---------------------------------------------------------------------------
    def train_step(self, x: torch.Tensor) -> dict[str, float]:
        """One optimisation step on batch ``x``; returns the terms as floats."""
        self.model.train()
        terms = self.model.loss(x)
        if "loss" not in terms:
            raise KeyError(
                f"{type(self.model).__name__}.loss(x) must return a dict with a 'loss' entry, "
                f"got keys {sorted(terms)}"
            )
        loss = terms["loss"]
        if loss.dim() != 0:
            raise ValueError(f"'loss' must be a scalar (mean over the batch), got {loss.shape}")
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {self.step}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.step += 1
        return {k: float(v.detach().mean()) for k, v in terms.items()}

    def _log(self, values: Mapping[str, float]) -> None:
        for k, v in values.items():
            self._acc[k] = self._acc.get(k, 0.0) + v
        self._acc_n += 1
        if self.step % self.log_every == 0:
            self.history.setdefault("step", []).append(float(self.step))
            self.history.setdefault("epoch", []).append(float(self.epoch))
            for k, v in self._acc.items():
                self.history.setdefault(k, []).append(v / self._acc_n)
            self._acc, self._acc_n = {}, 0

    # -- loops ------------------------------------------------------------------------------
    def fit(
        self,
        batches: Callable[[int], Iterable[torch.Tensor]],
        epochs: int,
        checkpoint: str | os.PathLike | None = None,
        resume: bool = True,
        on_epoch_end: Callable[[Trainer], None] | None = None,
    ) -> dict[str, list[float]]:
        """Run ``epochs`` epochs; ``batches(epoch)`` yields the epoch's batches.

        With ``checkpoint``, state is saved after every epoch and, if ``resume`` and the file
        exists, training continues from it (epochs already done are skipped).
        """
        if epochs < 0:
            raise ValueError(f"fit: epochs must be >= 0, got {epochs}")
        if checkpoint is not None and resume and Path(checkpoint).is_file():
            self.load(checkpoint)
        while self.epoch < epochs:
            items = batches(self.epoch)
            bar = tqdm(
                items,
                desc=f"epoch {self.epoch + 1}/{epochs}",
                disable=not self.progress,
                leave=False,
                total=len(items) if hasattr(items, "__len__") else None,
            )
            for batch in bar:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                values = self.train_step(x)
                self._log(values)
                if self.progress and self.step % 10 == 0:
                    bar.set_postfix(loss=f"{values['loss']:.3f}", refresh=False)
            self.epoch += 1
            if checkpoint is not None:
                self.save(checkpoint)
            if on_epoch_end is not None:
                on_epoch_end(self)
        return self.history

    # -- checkpoints ------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> str:
        """Save model, optimizer, counters and history (atomically, with a hash sidecar)."""
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        opt_tensors, groups = _optimizer_to_flat(self.optimizer)
        tensors.update(opt_tensors)
        meta = {
            "step": self.step,
            "epoch": self.epoch,
            "history": self.history,
            "optimizer": groups,
            **(extra or {}),
        }
        return save_checkpoint(path, tensors, meta)

    def load(self, path: str | os.PathLike) -> dict[str, Any]:
        """Restore state saved by :meth:`save`; returns the metadata."""
        tensors, meta = load_checkpoint(path)
        _load_weights(self.model, tensors, path)
        if "optimizer" in meta:
            _optimizer_from_flat(self.optimizer, tensors, meta["optimizer"])
        self.step, self.epoch = int(meta.get("step", 0)), int(meta.get("epoch", 0))
        self.history = {k: list(v) for k, v in meta.get("history", {}).items()}
        return meta


def load_model(model: torch.nn.Module, path: str | os.PathLike) -> dict[str, Any]:
    """Load only the model weights of a checkpoint saved by :class:`Trainer` (verified)."""
    tensors, meta = load_checkpoint(path)
    _load_weights(model, tensors, path)
    return meta


def _load_weights(
    model: torch.nn.Module, tensors: Mapping[str, torch.Tensor], path: str | os.PathLike
) -> None:
    """Copy the ``model.*`` tensors into ``model``; a clear error when they do not fit."""
    state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: does not fit {type(model).__name__}: {e}") from e
