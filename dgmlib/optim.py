"""Exact minimisation of the small, smooth objectives the lectures solve to convergence (a MAP
estimate, a best factorised posterior, an optimal encoder): L-BFGS with a strong Wolfe line
search, run to its tolerances rather than for a number of steps."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from dgmlib.validation import check_int, check_positive

__all__ = ["lbfgs_minimise"]


def lbfgs_minimise(
    params: Sequence[Tensor],
    loss_fn: Callable[[], Tensor],
    max_iter: int = 500,
    tol: float = 1e-10,
    *,
    tolerance_change: float = 1e-15,
    history_size: int = 50,
    lr: float = 1.0,
) -> float:
    """Minimise the scalar ``loss_fn()`` over the leaf tensors ``params`` in place with
    ``torch.optim.LBFGS`` (one ``step``: at most ``max_iter`` iterations, stopping at gradient
    tolerance ``tol`` or a change below ``tolerance_change``); return the final loss."""
    where = "lbfgs_minimise"
    check_int(max_iter, "max_iter", where)
    check_positive(tol, "tol", where)
    opt = torch.optim.LBFGS(
        list(params),
        lr=lr,
        max_iter=max_iter,
        tolerance_grad=tol,
        tolerance_change=tolerance_change,
        history_size=check_int(history_size, "history_size", where),
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return loss_fn().item()
