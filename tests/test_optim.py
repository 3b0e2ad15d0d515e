"""dgmlib.optim.lbfgs_minimise against closed-form minima."""

from __future__ import annotations

import pytest
import torch

from dgmlib.optim import lbfgs_minimise


def test_a_quadratic_reaches_its_closed_form_minimum():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 5, generator=g, dtype=torch.float64)
    A, b = (
        a @ a.T + torch.eye(5, dtype=torch.float64),
        torch.randn(5, generator=g, dtype=torch.float64),
    )
    x = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    value = lbfgs_minimise([x], lambda: 0.5 * x @ A @ x - b @ x, 200, 1e-12)
    x_star = torch.linalg.solve(A, b)
    # a gradient below 1e-12 puts x within |A^-1| 1e-12 of the minimiser (|A^-1| <= 1 here)
    assert torch.allclose(x.detach(), x_star, atol=1e-10)
    assert value == pytest.approx(-0.5 * (b @ x_star).item(), abs=1e-12)


def test_a_non_quadratic_minimum_and_the_options():
    # (x - 3)^4 + (log y)^2 with y = exp(t): minimum 0 at x = 3, t = 0
    p = torch.tensor([0.0, 1.0], dtype=torch.float64, requires_grad=True)
    value = lbfgs_minimise([p], lambda: (p[0] - 3) ** 4 + p[1] ** 2, 500, 1e-14, history_size=5)
    assert value < 1e-12 and abs(p[1].item()) < 1e-6 and abs(p[0].item() - 3) < 1e-3


def test_bad_arguments_are_named():
    x = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="max_iter"):
        lbfgs_minimise([x], lambda: (x**2).sum(), 0)
    with pytest.raises(ValueError, match="tol"):
        lbfgs_minimise([x], lambda: (x**2).sum(), 10, -1.0)
