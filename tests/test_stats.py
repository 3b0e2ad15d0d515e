"""dgmlib.stats: mean_se against numpy and scipy.stats.sem; fmt's digits and its "-0" rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from dgmlib.stats import fmt, mean_se


@pytest.mark.parametrize("shape", [(2,), (50,), (4, 7)])
def test_mean_se_against_numpy_and_scipy(shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 3 + 1
    mean, se = mean_se(x)
    v = x.double().numpy().ravel()
    assert mean == pytest.approx(np.mean(v), rel=1e-12)
    assert se == pytest.approx(stats.sem(v, ddof=1), rel=1e-12)
    assert se == pytest.approx(np.std(v, ddof=1) / np.sqrt(v.size), rel=1e-12)
    assert isinstance(mean, float) and isinstance(se, float)


def test_mean_se_sums_in_float64():
    """1e8 + {0, 1}: float32 cannot hold the spread, the float64 sums can."""
    x = torch.tensor([1e8, 1e8 + 1.0] * 2, dtype=torch.float64).float()
    _, se = mean_se(x)
    v = x.double().numpy()
    assert se == pytest.approx(stats.sem(v), rel=1e-12)


def test_mean_se_errors():
    with pytest.raises(ValueError, match="mean_se: x must hold at least 2 values, got 1"):
        mean_se(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="mean_se: x contains NaN"):
        mean_se(torch.tensor([1.0, float("nan")]))
    with pytest.raises(TypeError, match="mean_se: x must have a floating dtype"):
        mean_se(torch.tensor([1, 2]))


@pytest.mark.parametrize(
    ("value", "kwargs", "text"),
    [
        (3.14159265, {}, "3.142"),
        (3.14159265, {"digits": 2}, "3.1"),
        (-0.00001234, {}, "-1.234e-05"),
        (1234567.0, {}, "1.235e+06"),
        (-0.0, {}, "0"),
        (-1e-9, {"digits": 3, "decimals": True}, "0.000"),
        (2.5, {"digits": 0, "decimals": True}, "2"),
        (-12.3456, {"digits": 2, "decimals": True}, "-12.35"),
        (torch.tensor(0.125), {"digits": 2}, "0.12"),
    ],
)
def test_fmt(value, kwargs, text):
    assert fmt(value, **kwargs) == text


def test_fmt_validates_digits():
    with pytest.raises(ValueError, match="fmt: digits must be an integer >= 1, got 0"):
        fmt(1.0, digits=0)
    with pytest.raises(TypeError, match="fmt: digits must be an integer >= 0, got 2.0"):
        fmt(1.0, digits=2.0, decimals=True)
