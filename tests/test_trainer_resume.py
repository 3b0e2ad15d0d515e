"""A run interrupted after any epoch and resumed ends exactly where an uninterrupted one does.

The objective draws from torch's global generator and a cosine schedule sets the learning rate,
so the checkpoint must carry the weights, Adam's moments, the scheduler, ``Trainer.state`` and
the random state; dropping any one of them changes the final weights.
"""

from __future__ import annotations

import pytest
import torch

from dgmlib.train import Trainer

EPOCHS = 4


def noisy_regression(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Squared error against fresh N(0, 1) targets from the global generator."""
    target = torch.randn(x.shape[0], 1)
    return {"loss": ((model(x) - target) ** 2).mean()}


def batches(epoch: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(epoch)
    return [torch.randn(8, 3, generator=g) for _ in range(5)]


def record(trainer: Trainer) -> None:
    trainer.state.setdefault("weight_sums", []).append(float(trainer.model.weight.detach().sum()))


def run(epochs: int, checkpoint=None) -> Trainer:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5 * EPOCHS)
    trainer = Trainer(model, opt, noisy_regression, log_every=5, progress=False, scheduler=sched)
    trainer.fit(batches, epochs, checkpoint=checkpoint, on_epoch_end=record)
    return trainer


@pytest.mark.parametrize("stop_after", [1, 3])
def test_resumed_run_equals_uninterrupted(tmp_path, stop_after):
    full = run(EPOCHS)
    ckpt = tmp_path / "state.safetensors"
    run(stop_after, ckpt)
    torch.manual_seed(12345)  # whatever happened in between must not matter
    resumed = run(EPOCHS, ckpt)
    assert torch.equal(resumed.model.weight, full.model.weight)
    assert resumed.state == full.state and len(full.state["weight_sums"]) == EPOCHS
    assert resumed.history == full.history
    assert resumed.scheduler.last_epoch == full.scheduler.last_epoch == 5 * EPOCHS
