"""dgmlib.validation: a wrong type is a TypeError, a wrong value a ValueError, both naming the
function and the argument; set_validation(False) turns the value checks off (and back on)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

from dgmlib.distributions import gaussian_log_prob
from dgmlib.validation import (
    check_choice,
    check_int,
    check_positive,
    check_tensor,
    set_validation,
    validation_enabled,
)

NAN = torch.tensor([[0.0, float("nan")]])


@pytest.fixture
def validation_off():
    """Turn the value checks off for one test, and on again whatever happens."""
    set_validation(False)
    yield
    set_validation(True)


def test_check_tensor():
    x = torch.zeros(2, 3)
    assert check_tensor(x, "x", "f") is x
    assert check_tensor(torch.tensor(1.0), "x", "f", min_ndim=0).dim() == 0
    with pytest.raises(TypeError, match=r"^f: x must be a torch.Tensor, got list$"):
        check_tensor([0.0], "x", "f")
    with pytest.raises(TypeError, match=r"^f: x must have a floating dtype, got torch.int64$"):
        check_tensor(torch.zeros(2, dtype=torch.long), "x", "f")
    with pytest.raises(ValueError, match=r"^f: x must have at least 2 dimension\(s\), got shape"):
        check_tensor(torch.zeros(3), "x", "f", min_ndim=2)
    with pytest.raises(ValueError, match=r"^f: x contains NaN$"):
        check_tensor(NAN, "x", "f")


@pytest.mark.parametrize(
    ("value", "error"),
    [(0, ValueError), (-3, ValueError), (2.0, TypeError), (True, TypeError), ("2", TypeError)],
)
def test_check_int(value, error):
    assert check_int(5, "K", "f") == 5 and check_int(0, "K", "f", low=0) == 0
    with pytest.raises(error, match=rf"^f: K must be an integer >= 1, got {value!r}$"):
        check_int(value, "K", "f")


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (0.0, ValueError, "finite and > 0, got 0.0"),
        (-1, ValueError, "finite and > 0, got -1"),
        (math.inf, ValueError, "finite and > 0, got inf"),
        (math.nan, ValueError, "finite and > 0, got nan"),
        ("1", TypeError, "a real number, got '1'"),
        (False, TypeError, "a real number, got False"),
        (torch.tensor(1.0), TypeError, "a real number, got tensor"),
    ],
)
def test_check_positive(value, error, match):
    assert check_positive(2, "lr", "f") == 2.0 and isinstance(check_positive(2, "lr", "f"), float)
    assert check_positive(0.0, "lr", "f", allow_zero=True) == 0.0
    with pytest.raises(error, match=f"^f: lr must be {match}"):
        check_positive(value, "lr", "f")
    with pytest.raises(ValueError, match="f: lr must be finite and >= 0, got -0.5"):
        check_positive(-0.5, "lr", "f", allow_zero=True)


def test_check_choice():
    assert check_choice("a", "kind", "f", ("a", "b")) == "a"
    with pytest.raises(ValueError, match=r"^f: kind must be one of \('a', 'b'\), got 'c'$"):
        check_choice("c", "kind", "f", ("a", "b"))


def test_set_validation_turns_value_checks_off_and_back_on(validation_off):
    assert not validation_enabled()
    assert check_tensor(NAN, "x", "f") is NAN  # no NaN scan
    assert check_tensor(torch.tensor(1.0), "x", "f").dim() == 0  # no shape check
    # a hot path: neither dgmlib's NaN scan nor torch.distributions' support check runs
    assert gaussian_log_prob(NAN, torch.zeros(2), torch.zeros(2)).isnan().any()
    assert Normal(0.0, 1.0).log_prob(NAN).isnan().any()
    with pytest.raises(TypeError, match="must be a torch.Tensor"):  # types are still checked
        check_tensor([0.0], "x", "f")
    set_validation(True)
    assert validation_enabled()
    with pytest.raises(ValueError, match="to be within the support"):
        Normal(0.0, 1.0).log_prob(NAN)
    with pytest.raises(ValueError, match="gaussian_log_prob: x contains NaN"):
        gaussian_log_prob(NAN, torch.zeros(2), torch.zeros(2))


def test_set_validation_takes_a_bool():
    with pytest.raises(TypeError, match="set_validation: enabled must be a bool, got int"):
        set_validation(0)
    assert validation_enabled()
