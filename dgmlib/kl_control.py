"""Controlling the KL term of the ELBO: annealing schedules and free bits.

Both are remedies for posterior collapse (the KL term driving ``q(z|x)`` to the prior before the
decoder has learned to use ``z``). Neither changes the model; they change the *training
objective*, which is no longer the ELBO while they are active, so always report the true ELBO.

* **Annealing** multiplies the KL term by ``beta(step)`` in ``[0, 1]``: :func:`linear_warmup`
  (Bowman et al., 2016) or :func:`cyclical` (Fu et al., 2019). :func:`scheduled` applies a
  schedule to an objective (:class:`dgmlib.objectives.ELBO`'s ``kl_weight``) during
  :meth:`dgmlib.train.Trainer.fit`.
* **Free bits** (Kingma et al., 2016) replaces the KL term by ``sum_g max(lambda, KL_g)``, so
  groups of latent dimensions whose KL is below ``lambda`` nats get no gradient pushing them
  further towards the prior: :func:`free_bits_kl`, or ``ELBO(free_bits=...)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor

from dgmlib.validation import check_int, check_positive, check_tensor

__all__ = ["constant", "cyclical", "free_bits_kl", "linear_warmup", "scheduled"]

Schedule = Callable[[int], float]


def constant(step: int, beta: float = 1.0) -> float:
    """``beta`` at every step (no annealing)."""
    check_int(step, "step", "constant", low=0)
    return float(beta)


def linear_warmup(step: int, warmup_steps: int, start: float = 0.0) -> float:
    """``beta`` rising linearly from ``start`` at step 0 to 1 at ``warmup_steps``, then 1."""
    check_int(step, "step", "linear_warmup", low=0)
    check_int(warmup_steps, "warmup_steps", "linear_warmup", low=0)
    if not 0.0 <= start <= 1.0:
        raise ValueError(f"linear_warmup: start must lie in [0, 1], got {start}")
    if warmup_steps == 0 or step >= warmup_steps:
        return 1.0
    return start + (1.0 - start) * step / warmup_steps


def cyclical(step: int, cycle_length: int, ratio: float = 0.5) -> float:
    """Fu et al. (2019)'s cyclical schedule: within each cycle of ``cycle_length`` steps, ``beta``
    rises linearly from 0 to 1 over the first ``ratio`` of the cycle and stays at 1 for the rest.

    ``tau = (step mod cycle_length) / cycle_length``; ``beta = min(1, tau / ratio)``.
    """
    check_int(step, "step", "cyclical", low=0)
    check_int(cycle_length, "cycle_length", "cyclical")
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"cyclical: ratio must lie in (0, 1], got {ratio}")
    tau = (step % cycle_length) / cycle_length
    return min(1.0, tau / ratio)


def scheduled(
    batches: Callable[[int], Iterable[Any]],
    trainer: Any,
    schedule: Schedule,
    attr: str = "kl_weight",
) -> Callable[[int], Iterator[Any]]:
    """Wrap a ``batches(epoch)`` function so that, before each batch, ``trainer.objective.<attr>``
    (e.g. the KL weight of :class:`dgmlib.objectives.ELBO`) is set to ``schedule(trainer.step)``.

    Use it as ``trainer.fit(scheduled(batches, trainer, partial(linear_warmup, warmup_steps=N)),
    epochs)``. The schedule reads the trainer's step counter, which checkpoints store, so a resumed
    run continues the schedule where it stopped.
    """
    if not hasattr(trainer.objective, attr):
        raise ValueError(f"scheduled: the objective has no attribute {attr!r} to schedule")

    def wrapped(epoch: int) -> Iterator[Any]:
        for batch in batches(epoch):
            setattr(trainer.objective, attr, float(schedule(trainer.step)))
            yield batch

    return wrapped


def free_bits_kl(kl_per_dim: Tensor, free_bits: float, groups: int | None = None) -> Tensor:
    """The free-bits KL term ``sum_g max(lambda, mean_batch KL_g)`` (Kingma et al., 2016), nats.

    ``kl_per_dim``: ``KL(q(z_j|x_b) || p(z_j))`` per example and latent dimension, ``[B, Z]``.
    The ``Z`` dimensions are split into ``groups`` contiguous groups of equal size (``None``: one
    group per dimension); ``KL_g`` is the KL of group ``g`` summed over its dimensions and
    **averaged over the batch**, and the clamp at ``lambda = free_bits`` is applied to that batch
    average (not per example). Returns a scalar; its gradient is zero for every group whose
    batch-average KL is below ``lambda``. With ``free_bits = 0`` it equals the batch-mean KL.
    """
    check_tensor(kl_per_dim, "kl_per_dim", "free_bits_kl", min_ndim=2)
    if kl_per_dim.dim() != 2:
        raise ValueError(
            f"free_bits_kl: kl_per_dim must have shape [B, Z], got {tuple(kl_per_dim.shape)}"
        )
    check_positive(free_bits, "free_bits", "free_bits_kl", allow_zero=True)
    Z = kl_per_dim.shape[1]
    if groups is None:
        groups = Z
    check_int(groups, "groups", "free_bits_kl")
    if Z % groups:
        raise ValueError(
            f"free_bits_kl: groups must be a positive integer dividing Z = {Z}, got {groups!r}"
        )
    kl_groups = kl_per_dim.mean(0).view(groups, Z // groups).sum(-1)  # [G]
    return torch.clamp(kl_groups, min=free_bits).sum()
