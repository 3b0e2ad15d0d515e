"""dgmlib.gan: the optimal discriminator, the GAN value and the JSD on known densities, the two
generator losses, mode coverage on constructed samples, the unrolled generator loss against a
hand-written unrolled step and finite differences, the MLPs' shapes and input validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch.distributions import Normal

from dgmlib import gan

DT = torch.float64
X = torch.linspace(-15.0, 15.0, 6001, dtype=DT)
DX = float(X[1] - X[0])


def normal(mean: float, std: float) -> torch.Tensor:
    """log N(X | mean, std^2) on the grid, float64."""
    return Normal(torch.tensor(mean, dtype=DT), torch.tensor(std, dtype=DT)).log_prob(X)


def test_optimal_discriminator_formula_and_stability():
    log_pd, log_pg = torch.tensor([0.0, -1.0, 2.0], dtype=DT), torch.tensor([0.0, 1.0, -3.0])
    log_pg = log_pg.double()
    expected = log_pd.exp() / (log_pd.exp() + log_pg.exp())
    torch.testing.assert_close(gan.optimal_discriminator(log_pd, log_pg), expected)
    tiny = gan.optimal_discriminator(log_pd - 2000, log_pg - 2000)
    torch.testing.assert_close(tiny, expected)
    assert gan.optimal_discriminator(torch.tensor([0.0]), torch.tensor([-math.inf])).item() == 1.0


def test_optimal_discriminator_maximises_the_integrand():
    """V(G, D) at D = optimal_discriminator equals V(G, D*), which gan_value_at_optimum computes
    from the densities alone (no call to optimal_discriminator), and moving D either way lowers
    it. (That a shifted D does worse than V(G, D*) holds for any D: the first check is the one
    that ties optimal_discriminator to the maximum.)"""
    log_pd, log_pg = normal(-1.0, 1.0), normal(1.0, 2.0)
    v_star = gan.gan_value_at_optimum(log_pd, log_pg, DX).item()

    def value(d: torch.Tensor) -> float:
        return ((log_pd.exp() * d.log() + log_pg.exp() * (-d).log1p()).sum() * DX).item()

    d = gan.optimal_discriminator(log_pd, log_pg)
    # one integrand, two formulas, the same 6001-point sum: they differ by rounding, ~1e-13
    assert abs(value(d) - v_star) < 1e-10, value(d) - v_star
    for shift in [-0.05, 0.05]:
        assert value((d + shift).clamp(1e-6, 1 - 1e-6)) < v_star


def test_value_at_optimum_is_two_jsd_minus_log4_and_kl_matches_closed_form():
    log_p, log_q = normal(0.0, 1.0), normal(1.0, 2.0)
    torch.testing.assert_close(
        gan.gan_value_at_optimum(log_p, log_q, DX), 2 * gan.jsd(log_p, log_q, DX) - math.log(4)
    )
    exact = math.log(2.0) + (1 + 1) / (2 * 4) - 0.5  # KL(N(0,1) || N(1, 4))
    assert abs(gan.kl(log_p, log_q, DX).item() - exact) < 1e-8


def jsd_by_quad(m1: float, s1: float, m2: float, s2: float) -> float:
    """JSD(N(m1, s1^2), N(m2, s2^2)) by adaptive quadrature (scipy.integrate.quad, log-densities
    from scipy.stats): an independent reference, accurate to about 1e-14."""

    def integrand(x: float) -> float:
        lp, lq = stats.norm.logpdf(x, m1, s1), stats.norm.logpdf(x, m2, s2)
        lm = np.logaddexp(lp, lq) - math.log(2.0)
        return 0.5 * (math.exp(lp) * (lp - lm) + math.exp(lq) * (lq - lm))

    value, abserr = integrate.quad(integrand, -15, 15, points=[m1, m2], limit=200,
                                   epsabs=1e-14, epsrel=1e-13)  # fmt: skip
    assert abserr < 1e-12
    return value


def test_jsd_and_value_at_optimum_match_quadrature():
    """The grid sums against scipy's adaptive quadrature. Tolerance 1e-10: the rectangle rule on
    this smooth integrand (below 1e-48 at the ends of [-15, 15]) is exact far below that, and the
    rounding of 6001 summands is about 6001 * 2^-53 ~ 1e-12."""
    got = gan.jsd(normal(0.0, 1.0), normal(1.5, 0.7), DX).item()
    assert abs(got - jsd_by_quad(0.0, 1.0, 1.5, 0.7)) < 1e-10
    v_star = gan.gan_value_at_optimum(normal(-1.0, 1.0), normal(1.0, 2.0), DX).item()
    assert abs(v_star - (2 * jsd_by_quad(-1.0, 1.0, 1.0, 2.0) - math.log(4))) < 1e-10


def test_jsd_identities_and_bounds():
    log_p, log_q = normal(0.0, 1.0), normal(1.5, 0.7)
    assert abs(gan.jsd(log_p, log_p, DX).item()) < 1e-12
    torch.testing.assert_close(gan.jsd(log_p, log_q, DX), gan.jsd(log_q, log_p, DX))
    assert 0 < gan.jsd(log_p, log_q, DX) < math.log(2)
    a = torch.full_like(X, -math.inf).masked_fill(X < 0, -math.log(int((X < 0).sum()) * DX))
    b = torch.full_like(X, -math.inf).masked_fill(X >= 0, -math.log(int((X >= 0).sum()) * DX))
    assert abs(gan.jsd(a, b, DX).item() - math.log(2)) < 1e-12
    batch = gan.jsd(torch.stack([log_p, log_q]), log_q, DX)  # broadcasting over a batch
    assert batch.shape == (2,) and abs(batch[1].item()) < 1e-12


def test_gan_value_and_generator_losses():
    lr, lf = torch.tensor([2.0, -1.0], dtype=DT), torch.tensor([-3.0, 0.5], dtype=DT)
    d_r, d_f = torch.sigmoid(lr), torch.sigmoid(lf)
    torch.testing.assert_close(gan.gan_value(lr, lf), d_r.log().mean() + (1 - d_f).log().mean())
    torch.testing.assert_close(gan.discriminator_loss(lr, lf), -gan.gan_value(lr, lf))
    torch.testing.assert_close(gan.generator_loss(lf, "minimax"), (1 - d_f).log().mean())
    torch.testing.assert_close(gan.generator_loss(lf), -d_f.log().mean())


def test_mode_coverage_on_constructed_samples():
    centres = gan.ring_centres()
    assert centres.shape == (8, 2)
    torch.testing.assert_close(centres.norm(dim=1), torch.full((8,), 2.0))
    g = torch.Generator().manual_seed(0)
    on_three = centres[[0, 1, 2]].repeat_interleave(20, 0) + 0.01 * torch.randn(60, 2, generator=g)
    far = torch.zeros(40, 2)  # the centre of the ring is 2 away from every mode
    cov = gan.mode_coverage(torch.cat([on_three, far]), centres, std=0.05)
    assert cov.modes == 3 and abs(cov.high_quality - 0.6) < 1e-12
    assert cov.counts.tolist() == [20, 20, 20, 0, 0, 0, 0, 0]
    assert gan.mode_coverage(on_three, centres, std=0.05, min_count=21).modes == 0


def unrolling_batches() -> tuple[torch.Tensor, torch.Tensor]:
    """A real and a generated batch (float64 [6, 2] and [5, 2])."""
    g = torch.Generator().manual_seed(11)
    return torch.randn(6, 2, generator=g, dtype=DT), torch.randn(5, 2, generator=g, dtype=DT)


def test_unrolling_zero_steps_is_the_plain_generator_loss():
    """k = 0: the same value and the same gradient in ``fake`` as ``generator_loss(disc(fake))``,
    bit for bit (the same operations), for both losses."""
    torch.manual_seed(0)
    disc = gan.Discriminator(hidden=8).double()
    real, fake = unrolling_batches()
    for kind in gan.GENERATOR_LOSSES:
        f1, f2 = fake.clone().requires_grad_(), fake.clone().requires_grad_()
        unrolled = gan.unrolled_generator_loss(disc, real, f1, 0, 0.5, kind)
        plain = gan.generator_loss(disc(f2), kind)
        (g1,), (g2,) = torch.autograd.grad(unrolled, f1), torch.autograd.grad(plain, f2)
        assert torch.equal(unrolled, plain) and torch.equal(g1, g2)


def hand_unrolled_loss(w: torch.Tensor, b: torch.Tensor, real, fake, lr: float) -> torch.Tensor:
    """One unrolled step of a linear logistic discriminator ``logit = x w + b`` written out: the
    gradient of the cross-entropy is ``-mean (1 - D(r)) (r, 1) + mean D(f) (f, 1)``; then the
    non-saturating loss ``-mean log D(f)`` under the stepped discriminator."""
    d_r, d_f = torch.sigmoid(real @ w + b), torch.sigmoid(fake @ w + b)
    grad_w = -((1 - d_r)[:, None] * real).mean(0) + (d_f[:, None] * fake).mean(0)
    grad_b = -(1 - d_r).mean() + d_f.mean()
    w1, b1 = w - lr * grad_w, b - lr * grad_b
    return -torch.nn.functional.logsigmoid(fake @ w1 + b1).mean()


def test_one_unrolled_step_matches_the_hand_written_step_and_finite_differences():
    """A linear discriminator, k = 1: the value against the step written out (float64, round-off
    ~1e-16, tolerance 1e-12), and the gradient in ``fake`` (which includes how the step reacts
    to ``fake``) against central differences of the hand-written value (step 1e-6: truncation
    ~1e-12, round-off ~1e-10; tolerance 1e-7)."""
    torch.manual_seed(1)
    lin = torch.nn.Linear(2, 1).double()
    real, fake = unrolling_batches()
    lr = 0.7
    w, b = lin.weight.detach()[0], lin.bias.detach()[0]
    f = fake.clone().requires_grad_()
    value = gan.unrolled_generator_loss(lin, real, f, 1, lr)
    (grad,) = torch.autograd.grad(value, f)
    assert abs(value.item() - hand_unrolled_loss(w, b, real, fake, lr).item()) < 1e-12
    h, fd = 1e-6, torch.zeros_like(fake)
    for i in range(fake.shape[0]):
        for j in range(2):
            e = torch.zeros_like(fake)
            e[i, j] = h
            up = hand_unrolled_loss(w, b, real, fake + e, lr)
            down = hand_unrolled_loss(w, b, real, fake - e, lr)
            fd[i, j] = (up - down) / (2 * h)
    assert (grad - fd).abs().max() < 1e-7


def test_unrolled_gradient_goes_through_the_steps():
    """An MLP discriminator, k = 3: the gradient in ``fake`` against central differences of the
    unrolled loss (step 1e-6, tolerance 1e-6; no ReLU switches within the step at these points),
    and it differs from the gradient that treats the unrolled weights as constants (the
    look-ahead without the reaction), which a forgotten ``create_graph`` would give."""
    torch.manual_seed(2)
    disc = gan.Discriminator(hidden=8).double()
    real, fake = unrolling_batches()
    before = {k: v.clone() for k, v in disc.state_dict().items()}
    f = fake.clone().requires_grad_()
    (grad,) = torch.autograd.grad(gan.unrolled_generator_loss(disc, real, f, 3, 0.5), f)
    h, fd = 1e-6, torch.zeros_like(fake)
    with torch.enable_grad():
        for i in range(fake.shape[0]):
            for j in range(2):
                e = torch.zeros_like(fake)
                e[i, j] = h
                up = gan.unrolled_generator_loss(disc, real, fake + e, 3, 0.5).item()
                down = gan.unrolled_generator_loss(disc, real, fake - e, 3, 0.5).item()
                fd[i, j] = (up - down) / (2 * h)
    assert (grad - fd).abs().max() < 1e-6
    params = {
        k: v.detach() for k, v in gan.unrolled_discriminator(disc, real, fake, 3, 0.5).items()
    }
    f2 = fake.clone().requires_grad_()
    logits = torch.func.functional_call(disc, params, (f2,))
    (lookahead,) = torch.autograd.grad(gan.generator_loss(logits), f2)
    assert (grad - lookahead).abs().max() > 1e-3
    assert all(torch.equal(v, before[k]) for k, v in disc.state_dict().items())  # unchanged


def test_generator_and_discriminator_shapes():
    torch.manual_seed(0)
    gen, disc = gan.Generator(z_dim=3, hidden=16), gan.Discriminator(hidden=16)
    x = gen(torch.randn(5, 3))
    assert x.shape == (5, 2) and disc(x).shape == (5,)
    assert gen.sample(7, generator=torch.Generator().manual_seed(1)).shape == (7, 2)
    assert gen.double().sample(3).dtype == DT  # the sampler follows the generator's dtype


def test_gan_pairs_the_players_initialised_in_order():
    """One seed, generator first: the same weights as building the two players by hand, and the
    MLPs are those of dgmlib.layers.mlp (Linear, ReLU, ..., Linear)."""
    torch.manual_seed(3)
    pair = gan.GAN(hidden=8)
    torch.manual_seed(3)
    gen, disc = gan.Generator(hidden=8), gan.Discriminator(hidden=8)
    expected = {f"generator.{k}": v for k, v in gen.state_dict().items()}
    expected |= {f"discriminator.{k}": v for k, v in disc.state_dict().items()}
    assert pair.state_dict().keys() == expected.keys()
    assert all(torch.equal(v, expected[k]) for k, v in pair.state_dict().items())
    kinds = [type(m).__name__ for m in pair.discriminator.net]
    assert kinds == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: gan.optimal_discriminator(torch.zeros(3), torch.zeros(4)), "log_pd and log_pg"),
        (lambda: gan.jsd(torch.zeros(3), torch.zeros(4), 0.1), "broadcastable"),
        (lambda: gan.jsd(torch.zeros(3), torch.zeros(3), -0.1), "weights must be positive"),
        (lambda: gan.kl(torch.tensor([float("nan")]), torch.zeros(1), 1.0), "log_p contains NaN"),
        (lambda: gan.generator_loss(torch.zeros(3), "wasserstein"), "kind must be one of"),
        (lambda: gan.gan_value(torch.zeros(0), torch.zeros(2)), "must not be empty"),
        (lambda: gan.mode_coverage(torch.zeros(5, 2), torch.zeros(3, 3), 0.1), "centres must be"),
        (lambda: gan.mode_coverage(torch.zeros(5), torch.zeros(3, 2), 0.1), "samples must be"),
        (lambda: gan.mode_coverage(torch.zeros(5, 2), torch.zeros(3, 2), 0.0), "std must be"),
        (lambda: gan.mode_coverage(torch.zeros(5, 2), torch.zeros(3, 2), 0.1, 0.0), "n_std must"),
        (lambda: gan.ring_centres(0), "n_modes"),
        (lambda: gan.Generator(z_dim=2)(torch.zeros(4, 3)), "z must have shape"),
        (lambda: gan.Discriminator()(torch.zeros(4)), "x must have shape"),
        (lambda: gan.Generator(hidden=0), "hidden must be"),
        (lambda: gan.Discriminator(layers=0), "layers must be"),
        (lambda: gan.Generator().sample(0), "n must be"),
        (
            lambda: gan.unrolled_discriminator(gan.Discriminator(), *unrolling_batches(), -1, 0.1),
            "steps must be",
        ),
        (
            lambda: gan.unrolled_discriminator(gan.Discriminator(), *unrolling_batches(), 1, 0.0),
            "lr must be",
        ),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: gan.optimal_discriminator([0.0], torch.zeros(1)), "log_pd must be"),
        (lambda: gan.jsd(torch.zeros(3), torch.zeros(3, dtype=torch.int64), 0.1), "log_q must"),
        (lambda: gan.Generator(z_dim=2.0), "z_dim must be"),
    ],
)
def test_bad_type_raises_type_error_naming_the_argument(call, match):
    with pytest.raises(TypeError, match=match):
        call()
