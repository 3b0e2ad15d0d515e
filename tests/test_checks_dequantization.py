"""dgmlib.checks.dequantization (lecture 03): each typical mistake is rejected by a case whose
hint names it (the one-line/stub behaviour of every check: tests/test_checks.py)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import fails

from dgmlib import checks
from dgmlib.dequantization import discretized_logistic_log_prob


def log_mass(x_int, loc, scale, num_levels=None, shift=0.0):
    """The reference log-masses of the bins [x - shift, x + 1 - shift)."""
    return discretized_logistic_log_prob(x_int, loc + shift, scale, num_levels)


def logistic_log_density(x_int, loc, scale, num_levels=None):
    z = (x_int.double() - loc) / scale
    return -z - 2 * torch.nn.functional.softplus(-z) - torch.log(scale)


@pytest.mark.parametrize(
    ("wrong", "case", "hint"),
    [
        (lambda **a: log_mass(**a, shift=0.5), "interior", "centred bins"),
        (lambda **a: log_mass(**a).exp(), "interior", "not probabilities"),
        (logistic_log_density, "interior", "log-density at x"),
        (lambda **a: log_mass(**{**a, "scale": 1 / a["scale"]}), "interior", "do not multiply"),
        (lambda **a: log_mass(**{**a, "num_levels": None}), "open outer bins", "are open"),
    ],
)
def test_logistic_mistakes_are_named(wrong, case, hint):
    fails(checks.check_discretized_logistic, wrong, case, hint)


def test_subtracting_probabilities_fails_in_the_tail():
    def naive(x_int, loc, scale, num_levels=None):
        x = x_int.double()
        hi = torch.sigmoid((x + 1 - loc) / scale)
        lo = torch.sigmoid((x - loc) / scale)
        if num_levels is not None:
            hi = torch.where(x == num_levels - 1, 1.0, hi)
            lo = torch.where(x == 0, 0.0, lo)
        return torch.log(hi - lo)

    with pytest.raises(AssertionError, match="(?s)case 'far tail.*work with log-CDFs"):
        checks.check_discretized_logistic(naive)


def bpd(density, x, k, n, g, *, change=-1.0, bits=True, per_dim=True, sign=1.0, k_fix=None):
    """The dequantization bound; each switch away from its default plants one mistake."""
    d = x.shape[-1]
    u = torch.rand((n, *x.shape), generator=g, dtype=torch.float64)
    log_p = density((x.double() + u) / k).mean(0) + change * d * math.log(k_fix or k)
    out = -sign * log_p / ((math.log(2.0) if bits else 1.0) * (d if per_dim else 1))
    return out


@pytest.mark.parametrize(
    ("switch", "case", "hint"),
    [
        ({"change": 0.0}, "uniform", "change of variables back to integer units is missing"),
        ({"change": 1.0}, "uniform", "the sign is flipped"),
        ({"bits": False}, "uniform", "nats per dimension"),
        ({"per_dim": False}, "uniform", "bits per example"),
        ({"bits": False, "per_dim": False}, "uniform", "nats per example"),
        ({"sign": -1.0}, "uniform", "the sign is flipped"),
        ({"k_fix": 256}, "K=17", "not a fixed 256"),
    ],
)
def test_bpd_mistakes_are_named(switch, case, hint):
    fails(checks.check_dequantized_bpd, lambda *a: bpd(*a, **switch), case, hint)


def test_bpd_right_passes(capsys):
    checks.check_dequantized_bpd(bpd)
    assert capsys.readouterr().out == "check_dequantized_bpd: all 3 cases pass.\n"
