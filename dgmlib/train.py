"""A small generic trainer that resumes after every epoch.

:class:`Trainer` minimises ``objective(model, x)["loss"]`` (an objective of
:mod:`dgmlib.objectives`, or ``None`` for a model with its own ``loss(x)``, e.g. the VQ-VAE); every
term the objective returns is logged in ``Trainer.history``, so one plotting helper
(:func:`dgmlib.plot.plot_history`) serves every lecture. Batches are moved to the trainer's
device (``$DGMLIB_DEVICE``, else the CPU). State (weights, optimizer, counters, history) is saved
after every epoch with :mod:`dgmlib.io`'s atomic, hashed checkpoints.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sized
from pathlib import Path
from typing import Any, cast

import torch
from tqdm.auto import tqdm

from dgmlib.experiment import load_weights, model_tensors
from dgmlib.io import load_checkpoint, save_checkpoint
from dgmlib.utils import get_device

_RNG_KEY = "rng.torch"

Objective = Callable[[torch.nn.Module, torch.Tensor], Mapping[str, torch.Tensor]]


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
    """Train ``model`` on ``objective(model, x) -> {"loss": ..., other terms}`` by mini-batch
    steps (``objective=None``: the model's own ``loss(x)``), on ``device`` (default
    :func:`dgmlib.utils.get_device`: ``$DGMLIB_DEVICE`` or the CPU); the model is moved there.
    A learning-rate ``scheduler`` is stepped after every optimiser step.

    ``history`` maps every term (and ``"step"``, ``"epoch"``) to a list with one entry per
    logged step: the mean of the term over the last ``log_every`` steps. ``state`` is a dict of
    JSON-able values a script keeps across epochs (e.g. per-epoch test curves); it is saved and
    restored with the checkpoint, together with torch's global random state, so a resumed run
    continues exactly as an uninterrupted one.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        objective: Objective | None = None,
        log_every: int = 50,
        progress: bool | None = None,
        grad_clip: float | None = None,
        device: str | torch.device | None = None,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    ) -> None:
        if log_every < 1:
            raise ValueError(f"Trainer: log_every must be >= 1, got {log_every}")
        if objective is None and not hasattr(model, "loss"):
            raise TypeError(
                f"Trainer: {type(model).__name__} has no loss(x); pass an objective "
                "(see dgmlib.objectives)"
            )
        self.device = get_device(None if device is None else str(device))
        self.model = model.to(self.device)
        self.objective = objective
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.log_every = log_every
        # progress=None: show a bar unless DGMLIB_PROGRESS=0 (tqdm.auto: widget in Lab, text else)
        if progress is None:
            progress = os.environ.get("DGMLIB_PROGRESS", "1") not in ("0", "")
        self.progress = progress
        self.grad_clip = grad_clip
        self.step = 0
        self.epoch = 0
        self.history: dict[str, list[float]] = {}
        self.state: dict[str, Any] = {}
        self._acc: dict[str, float] = {}
        self._acc_n = 0

    # -- one step ---------------------------------------------------------------------------
    def train_step(self, x: torch.Tensor) -> dict[str, float]:
        """One optimisation step on batch ``x``; returns the terms as floats."""
        self.model.train()
        x = x.to(self.device)
        terms: Mapping[str, torch.Tensor]
        if self.objective is None:  # __init__ checked that the model has a loss(x)
            own_loss = cast(Callable[[torch.Tensor], Mapping[str, torch.Tensor]], self.model.loss)
            terms = own_loss(x)
        else:
            terms = self.objective(self.model, x)
        if "loss" not in terms:
            raise KeyError(
                f"the objective of {type(self.model).__name__} must return a dict with a 'loss' "
                f"entry, got keys {sorted(terms)}"
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
        if self.scheduler is not None:
            self.scheduler.step()
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
                total=len(items) if isinstance(items, Sized) else None,
            )
            for batch in bar:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                values = self.train_step(x)
                self._log(values)
                if self.progress and self.step % 10 == 0:
                    bar.set_postfix(loss=f"{values['loss']:.3f}", refresh=False)
            self.epoch += 1
            if on_epoch_end is not None:
                on_epoch_end(self)
            if checkpoint is not None:
                self.save(checkpoint)
        return self.history

    # -- checkpoints ------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> str:
        """Save model, optimizer, counters, history, ``state`` and torch's global random state
        (atomically, with a hash sidecar)."""
        tensors = model_tensors(self.model)
        opt_tensors, groups = _optimizer_to_flat(self.optimizer)
        tensors.update(opt_tensors)
        tensors[_RNG_KEY] = torch.get_rng_state()
        meta = {
            "step": self.step,
            "epoch": self.epoch,
            "history": self.history,
            "state": self.state,
            "optimizer": groups,
            **({"scheduler": self.scheduler.state_dict()} if self.scheduler is not None else {}),
            **(extra or {}),
        }
        return save_checkpoint(path, tensors, meta)

    def load(self, path: str | os.PathLike) -> dict[str, Any]:
        """Restore state saved by :meth:`save`; returns the metadata."""
        tensors, meta = load_checkpoint(path)
        load_weights(self.model, tensors, path)
        if "optimizer" in meta:
            _optimizer_from_flat(self.optimizer, tensors, meta["optimizer"])
        self.step, self.epoch = int(meta.get("step", 0)), int(meta.get("epoch", 0))
        self.history = {k: list(v) for k, v in meta.get("history", {}).items()}
        self.state = dict(meta.get("state", {}))
        if self.scheduler is not None and "scheduler" in meta:
            self.scheduler.load_state_dict(meta["scheduler"])
        if _RNG_KEY in tensors:
            torch.set_rng_state(tensors[_RNG_KEY])
        return meta
