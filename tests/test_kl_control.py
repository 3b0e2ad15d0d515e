"""dgmlib.kl_control: annealing schedules, the schedule wrapper for the Trainer, free bits."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from dgmlib.kl_control import constant, cyclical, free_bits_kl, linear_warmup, scheduled
from dgmlib.models.vae import VAE, BernoulliDecoder, MLPGaussianEncoder
from dgmlib.objectives import ELBO
from dgmlib.train import Trainer


def test_linear_warmup_values():
    assert [linear_warmup(s, 4) for s in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert linear_warmup(0, 10, start=0.2) == pytest.approx(0.2)
    assert linear_warmup(5, 10, start=0.2) == pytest.approx(0.6)
    assert linear_warmup(7, 0) == 1.0
    assert constant(123) == 1.0 and constant(5, beta=0.3) == 0.3


def test_cyclical_follows_fu_et_al():
    """Cycle of 8 steps, rising over the first half: 0, .25, .5, .75, 1, 1, 1, 1, then again."""
    betas = [cyclical(s, 8, ratio=0.5) for s in range(16)]
    one_cycle = [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0]
    assert betas == one_cycle * 2
    assert [cyclical(s, 4, ratio=1.0) for s in range(4)] == [0.0, 0.25, 0.5, 0.75]
    assert all(0.0 <= cyclical(s, 7, 0.3) <= 1.0 for s in range(50))


def test_schedule_validation():
    with pytest.raises(ValueError, match="linear_warmup: step must be an integer >= 0, got -1"):
        linear_warmup(-1, 10)
    with pytest.raises(TypeError, match="cyclical: step must be an integer >= 0, got 1.5"):
        cyclical(1.5, 10)
    with pytest.raises(ValueError, match="cyclical: cycle_length must be an integer >= 1"):
        cyclical(0, 0)
    with pytest.raises(ValueError, match="linear_warmup: warmup_steps must be an integer >= 0"):
        linear_warmup(0, -2)
    with pytest.raises(ValueError, match=r"ratio must lie in \(0, 1\]"):
        cyclical(0, 10, ratio=0.0)
    with pytest.raises(ValueError, match="start must lie in"):
        linear_warmup(0, 10, start=2.0)


class RecordingObjective:
    """An objective with a kl_weight that records the weight seen by each call."""

    def __init__(self) -> None:
        self.kl_weight = 1.0
        self.seen: list[float] = []

    def __call__(self, model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.seen.append(self.kl_weight)
        return {"loss": (model.weight - x.mean()).pow(2).sum()}


def test_scheduled_sets_the_weight_from_the_trainer_step():
    model, objective = torch.nn.Linear(1, 1), RecordingObjective()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), objective, progress=False)
    batches = scheduled(
        lambda epoch: [torch.ones(2)] * 3, trainer, partial(linear_warmup, warmup_steps=4)
    )
    trainer.fit(batches, epochs=2)
    assert objective.seen == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    with pytest.raises(ValueError, match="no attribute 'beta'"):
        scheduled(lambda e: [], trainer, constant, attr="beta")


def test_a_resumed_run_continues_the_schedule_of_an_elbo(tmp_path):
    """The schedule reads the trainer's step, which the checkpoint stores: stopping after epoch 1
    and resuming sets the same KL weights of dgmlib.objectives.ELBO as one run."""
    x = torch.bernoulli(torch.full((8, 6), 0.4), generator=torch.Generator().manual_seed(0))

    def run(epochs: int, checkpoint) -> list[float]:
        torch.manual_seed(0)
        model = VAE(MLPGaussianEncoder(6, 8, 2), BernoulliDecoder(2, 8, 6))
        objective, seen = ELBO(), []
        trainer = Trainer(model, torch.optim.Adam(model.parameters()), objective, progress=False)
        warmup = scheduled(
            lambda e: [x[:4], x[4:]], trainer, partial(linear_warmup, warmup_steps=5)
        )

        def batches(epoch):
            for batch in warmup(epoch):
                seen.append(objective.kl_weight)
                yield batch

        trainer.fit(batches, epochs, checkpoint=checkpoint)
        return seen

    assert run(4, None) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0]
    assert run(1, tmp_path / "ck.safetensors") == [0.0, 0.2]
    assert run(4, tmp_path / "ck.safetensors") == [0.4, 0.6, 0.8, 1.0, 1.0, 1.0]


# --------------------------------------------------------------------------------------------
# Free bits
# --------------------------------------------------------------------------------------------


def test_free_bits_value_per_dimension_and_per_group():
    kl = torch.tensor([[0.1, 2.0, 0.0, 0.3], [0.3, 4.0, 0.2, 0.1]])
    # batch means per dimension: [0.2, 3.0, 0.1, 0.2]
    assert free_bits_kl(kl, 0.5).item() == pytest.approx(0.5 + 3.0 + 0.5 + 0.5)
    # two groups: [0.2 + 3.0, 0.1 + 0.2] = [3.2, 0.3]
    assert free_bits_kl(kl, 0.5, groups=2).item() == pytest.approx(3.2 + 0.5)
    # one group: the total mean KL 3.5 is above the threshold
    assert free_bits_kl(kl, 0.5, groups=1).item() == pytest.approx(3.5)
    # lambda = 0: the ordinary batch-mean KL
    assert free_bits_kl(kl, 0.0).item() == pytest.approx(kl.sum(1).mean().item())


def test_free_bits_clamps_the_batch_mean_not_each_example():
    kl = torch.tensor([[0.0], [2.0]])  # mean 1.0 > 0.5; per example clamping would give 1.25
    assert free_bits_kl(kl, 0.5).item() == pytest.approx(1.0)


def test_free_bits_gradient_is_zero_below_the_threshold():
    kl = torch.tensor([[0.1, 2.0, 0.0, 0.3], [0.3, 4.0, 0.2, 0.1]], requires_grad=True)
    (grad,) = torch.autograd.grad(free_bits_kl(kl, 0.5), kl)
    expected = torch.tensor([[0.0, 0.5, 0.0, 0.0], [0.0, 0.5, 0.0, 0.0]])
    torch.testing.assert_close(grad, expected)
    (grad,) = torch.autograd.grad(free_bits_kl(kl, 0.5, groups=2), kl)
    torch.testing.assert_close(grad, torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]]))


def test_free_bits_validation():
    with pytest.raises(ValueError, match=r"kl_per_dim must have shape \[B, Z\]"):
        free_bits_kl(torch.zeros(2, 3, 4), 0.5)
    with pytest.raises(ValueError, match="at least 2 dimension"):
        free_bits_kl(torch.zeros(3), 0.5)
    with pytest.raises(ValueError, match="kl_per_dim contains NaN"):
        free_bits_kl(torch.tensor([[float("nan")]]), 0.5)
    with pytest.raises(ValueError, match="groups must be a positive integer dividing Z = 4"):
        free_bits_kl(torch.zeros(2, 4), 0.5, groups=3)
    with pytest.raises(TypeError, match="free_bits_kl: groups must be an integer >= 1"):
        free_bits_kl(torch.zeros(2, 4), 0.5, groups=2.0)
    with pytest.raises(ValueError, match="free_bits_kl: free_bits must be finite and >= 0"):
        free_bits_kl(torch.zeros(2, 4), -1.0)
