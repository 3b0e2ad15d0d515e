"""dgmlib.gan: the optimal discriminator, the GAN value and the JSD on known densities, the two
generator losses, mode coverage on constructed samples, the MLPs' shapes and input validation."""

from __future__ import annotations

import math

import pytest
import torch

from dgmlib.gan import (
    Discriminator,
    Generator,
    discriminator_loss,
    gan_value,
    gan_value_at_optimum,
    generator_loss,
    jsd,
    kl,
    mode_coverage,
    optimal_discriminator,
    ring_centres,
)

DT = torch.float64
X = torch.linspace(-15.0, 15.0, 6001, dtype=DT)
DX = float(X[1] - X[0])


def normal(mean: float, std: float) -> torch.Tensor:
    return -0.5 * ((X - mean) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)


def test_optimal_discriminator_formula_and_stability():
    log_pd, log_pg = torch.tensor([0.0, -1.0, 2.0], dtype=DT), torch.tensor([0.0, 1.0, -3.0])
    log_pg = log_pg.double()
    expected = log_pd.exp() / (log_pd.exp() + log_pg.exp())
    torch.testing.assert_close(optimal_discriminator(log_pd, log_pg), expected)
    tiny = optimal_discriminator(log_pd - 2000, log_pg - 2000)
    torch.testing.assert_close(tiny, expected)
    assert optimal_discriminator(torch.tensor([0.0]), torch.tensor([-math.inf])).item() == 1.0


def test_optimal_discriminator_maximises_the_integrand():
    log_pd, log_pg = normal(-1.0, 1.0), normal(1.0, 2.0)
    v_star = gan_value_at_optimum(log_pd, log_pg, DX)
    d = optimal_discriminator(log_pd, log_pg)
    for shift in [-0.05, 0.05]:
        d_other = (d + shift).clamp(1e-6, 1 - 1e-6)
        v = (log_pd.exp() * d_other.log() + log_pg.exp() * (-d_other).log1p()).sum() * DX
        assert v < v_star


def test_value_at_optimum_is_two_jsd_minus_log4_and_kl_matches_closed_form():
    log_p, log_q = normal(0.0, 1.0), normal(1.0, 2.0)
    torch.testing.assert_close(
        gan_value_at_optimum(log_p, log_q, DX), 2 * jsd(log_p, log_q, DX) - math.log(4)
    )
    exact = math.log(2.0) + (1 + 1) / (2 * 4) - 0.5  # KL(N(0,1) || N(1, 4))
    assert abs(kl(log_p, log_q, DX).item() - exact) < 1e-8


def test_jsd_identities_and_bounds():
    log_p, log_q = normal(0.0, 1.0), normal(1.5, 0.7)
    assert abs(jsd(log_p, log_p, DX).item()) < 1e-12
    torch.testing.assert_close(jsd(log_p, log_q, DX), jsd(log_q, log_p, DX))
    assert 0 < jsd(log_p, log_q, DX) < math.log(2)
    a = torch.full_like(X, -math.inf).masked_fill(X < 0, -math.log(int((X < 0).sum()) * DX))
    b = torch.full_like(X, -math.inf).masked_fill(X >= 0, -math.log(int((X >= 0).sum()) * DX))
    assert abs(jsd(a, b, DX).item() - math.log(2)) < 1e-12
    batch = jsd(torch.stack([log_p, log_q]), log_q, DX)  # broadcasting over a batch
    assert batch.shape == (2,) and abs(batch[1].item()) < 1e-12


def test_gan_value_and_generator_losses():
    lr, lf = torch.tensor([2.0, -1.0], dtype=DT), torch.tensor([-3.0, 0.5], dtype=DT)
    d_r, d_f = torch.sigmoid(lr), torch.sigmoid(lf)
    torch.testing.assert_close(gan_value(lr, lf), d_r.log().mean() + (1 - d_f).log().mean())
    torch.testing.assert_close(discriminator_loss(lr, lf), -gan_value(lr, lf))
    torch.testing.assert_close(generator_loss(lf, "minimax"), (1 - d_f).log().mean())
    torch.testing.assert_close(generator_loss(lf), -d_f.log().mean())


def test_mode_coverage_on_constructed_samples():
    centres = ring_centres()
    assert centres.shape == (8, 2)
    torch.testing.assert_close(centres.norm(dim=1), torch.full((8,), 2.0))
    g = torch.Generator().manual_seed(0)
    on_three = centres[[0, 1, 2]].repeat_interleave(20, 0) + 0.01 * torch.randn(60, 2, generator=g)
    far = torch.zeros(40, 2)  # the centre of the ring is 2 away from every mode
    cov = mode_coverage(torch.cat([on_three, far]), centres, std=0.05)
    assert cov.modes == 3 and abs(cov.high_quality - 0.6) < 1e-12
    assert cov.counts.tolist() == [20, 20, 20, 0, 0, 0, 0, 0]
    assert mode_coverage(on_three, centres, std=0.05, min_count=21).modes == 0


def test_generator_and_discriminator_shapes():
    torch.manual_seed(0)
    gen, disc = Generator(z_dim=3, hidden=16), Discriminator(hidden=16)
    x = gen(torch.randn(5, 3))
    assert x.shape == (5, 2) and disc(x).shape == (5,)
    assert gen.sample(7, generator=torch.Generator().manual_seed(1)).shape == (7, 2)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: optimal_discriminator(torch.zeros(3), torch.zeros(4)), "log_pd and log_pg"),
        (lambda: optimal_discriminator([0.0], torch.zeros(1)), "log_pd must be"),
        (lambda: jsd(torch.zeros(3), torch.zeros(4), 0.1), "broadcastable"),
        (lambda: jsd(torch.zeros(3), torch.zeros(3), -0.1), "weights must be positive"),
        (lambda: kl(torch.tensor([float("nan")]), torch.zeros(1), 1.0), "log_p contains NaN"),
        (lambda: generator_loss(torch.zeros(3), "wasserstein"), "kind must be one of"),
        (lambda: gan_value(torch.zeros(0), torch.zeros(2)), "must not be empty"),
        (lambda: mode_coverage(torch.zeros(5, 2), torch.zeros(3, 3), 0.1), "centres must be"),
        (lambda: mode_coverage(torch.zeros(5), torch.zeros(3, 2), 0.1), "samples must be"),
        (lambda: mode_coverage(torch.zeros(5, 2), torch.zeros(3, 2), 0.0), "std and n_std"),
        (lambda: ring_centres(0), "n_modes"),
        (lambda: Generator(z_dim=2)(torch.zeros(4, 3)), "z must have shape"),
        (lambda: Discriminator()(torch.zeros(4)), "x must have shape"),
        (lambda: Generator(hidden=0), "hidden must be"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
