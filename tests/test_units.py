"""dgmlib.units: nats and bits per dimension, and the change of variables to integer pixel units,
against math.log2 and the density of the rescaled variable from torch.distributions."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, Uniform

from dgmlib.dequantization import uniform_dequantize
from dgmlib.units import bits_per_dim_to_nats, log_density_to_integer_units, nats_to_bits_per_dim

F64 = torch.float64


def test_bits_per_dim_against_log2():
    """n nats are n / ln 2 = n log2(e) bits; per dimension, divided by the number of dims."""
    nats = torch.tensor([100.0, 543.21, 0.0], dtype=F64)
    bits = nats * math.log2(math.e)
    torch.testing.assert_close(nats_to_bits_per_dim(nats, 784), bits / 784, rtol=1e-14, atol=0)
    torch.testing.assert_close(bits_per_dim_to_nats(bits / 784, 784), nats, rtol=1e-14, atol=0)
    # floats in, floats out; a uniform distribution over 256 levels costs log2(256) = 8 bits
    assert nats_to_bits_per_dim(10 * math.log(256), 10) == pytest.approx(8.0, rel=1e-15)
    assert bits_per_dim_to_nats(8.0, 10) == pytest.approx(10 * math.log(256), rel=1e-15)


def test_change_of_variables_against_the_rescaled_density():
    """If y = (x + u) / K has density p_Y, then K y has density p_Y(y) / K^D: a Gaussian N(m, s^2)
    for y is N(K m, (K s)^2) for K y; a uniform on [0, 1)^D is uniform on [0, K)^D."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (4, 10), generator=g)
    y = uniform_dequantize(x, 256, g, scale=True)
    m, s = torch.tensor(0.4, dtype=F64), torch.tensor(0.2, dtype=F64)
    lp_unit = Normal(m, s).log_prob(y).sum(-1)
    lp_int = Normal(256 * m, 256 * s).log_prob(256 * y).sum(-1)
    torch.testing.assert_close(
        log_density_to_integer_units(lp_unit, 10, 256), lp_int, rtol=1e-12, atol=0
    )
    lp_uniform = (
        Uniform(torch.tensor(0.0, dtype=F64), torch.tensor(256.0, dtype=F64))
        .log_prob(torch.zeros(10, dtype=F64))
        .sum()
    )
    assert log_density_to_integer_units(0.0, 10, 256) == pytest.approx(lp_uniform.item(), rel=1e-15)
    bpd = nats_to_bits_per_dim(-log_density_to_integer_units(0.0, 10, 256), 10)
    assert bpd == pytest.approx(8.0, rel=1e-15)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: nats_to_bits_per_dim(1.0, 0), ValueError, "nats_to_bits_per_dim: num_dims"),
        (lambda: bits_per_dim_to_nats(1.0, 0), ValueError, "bits_per_dim_to_nats: num_dims"),
        (lambda: nats_to_bits_per_dim(1.0, 784.0), TypeError, "num_dims must be an integer"),
        (
            lambda: log_density_to_integer_units(0.0, 10, 1),
            ValueError,
            "log_density_to_integer_units: num_levels must be an integer >= 2, got 1",
        ),
        (
            lambda: log_density_to_integer_units(0.0, 10, 256.0),
            TypeError,
            "num_levels must be an integer >= 2, got 256.0",
        ),
    ],
)
def test_errors_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()
