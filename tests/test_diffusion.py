"""dgmlib.diffusion against independent computations: the simulated chain, Gaussian conditioning
of the exact joint, Monte Carlo over the forward process, and the continuous-time limit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

import dgmlib.diffusion as dd
from dgmlib.validation import set_validation

DT = torch.float64


def linear_betas(T: int, lo: float = 1e-4, hi: float = 0.05) -> torch.Tensor:
    return torch.linspace(lo, hi, T, dtype=DT)


def log_snr_betas(T: int, snr_max: float = 1e4, snr_min: float = 1e-4) -> torch.Tensor:
    """Betas whose log-SNR falls linearly from log snr_max (t = 1) to log snr_min (t = T)."""
    ab = torch.sigmoid(torch.linspace(math.log(snr_max), math.log(snr_min), T, dtype=DT))
    prev = torch.cat([torch.ones(1, dtype=DT), ab[:-1]])
    return 1.0 - ab / prev


def data_average(f, m: float, s2: float, n: int = 60) -> float:
    """E_{x ~ N(m, s2)} f(x) by Gauss-Hermite quadrature (exact for polynomials of degree < 2n)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(n)
    x = m + math.sqrt(s2) * torch.tensor(nodes, dtype=DT)
    w = torch.tensor(weights / weights.sum(), dtype=DT)
    return float((w * f(x)).sum())


def test_alpha_bars_and_snr_from_the_definition():
    betas = torch.tensor([0.1, 0.2, 0.5], dtype=DT)
    expected = [1.0, 0.9, 0.9 * 0.8, 0.9 * 0.8 * 0.5]
    assert dd.alpha_bars(betas).tolist() == pytest.approx(expected, rel=1e-15)
    ab = np.array(expected[1:])
    assert dd.snr(betas).numpy() == pytest.approx(ab / (1 - ab), rel=1e-14)


def test_marginal_matches_the_simulated_chain():
    """Mean and variance of z_t from 200k simulated chains within 5 standard errors, and a
    Kolmogorov-Smirnov test at level 1e-3 against the closed-form marginal."""
    betas = linear_betas(50)
    z0 = torch.full((200_000,), 1.5, dtype=DT)
    chain = dd.forward_sample(z0, betas, generator=torch.Generator().manual_seed(0))
    for t in (1, 10, 50):
        mean, var = dd.forward_marginal(z0[:1], t, betas)
        zt = chain[t]
        n = len(zt)
        assert abs(zt.mean() - mean[0]) < 5 * math.sqrt(var / n)
        # s.e. of the sample variance of a Gaussian: var * sqrt(2 / (n - 1))
        assert abs(zt.var() - var) < 5 * var * math.sqrt(2 / (n - 1))
        p = stats.kstest(zt[:20_000].numpy(), "norm", args=(float(mean[0]), math.sqrt(var))).pvalue
        assert p > 1e-3


def test_marginal_rejects_the_wrong_noise_scale():
    """The chain with noise beta_t (not sqrt(beta_t)) has another variance: the same moment test
    rejects it, so the test above can fail."""
    betas = linear_betas(50)
    z = torch.full((200_000,), 1.5, dtype=DT)
    g = torch.Generator().manual_seed(1)
    for beta in betas:
        z = (1 - beta).sqrt() * z + beta * torch.randn(z.shape, generator=g, dtype=DT)
    _, var = dd.forward_marginal(z[:1], 50, betas)
    assert abs(z.var() - var) > 5 * var * math.sqrt(2 / (len(z) - 1))


@pytest.mark.parametrize("t", [2, 7, 30])
def test_posterior_is_gaussian_conditioning_of_the_joint(t: int):
    """Given z0, (z_{t-1}, z_t) is jointly Gaussian; condition on z_t by the textbook formula."""
    betas = linear_betas(30, 0.01, 0.2)
    ab = dd.alpha_bars(betas)
    z0 = torch.tensor([0.3, -1.2], dtype=DT)
    zt = torch.tensor([0.7, 0.1], dtype=DT)
    a, beta = (1 - betas[t - 1]).sqrt(), betas[t - 1]
    mu_prev, v_prev = ab[t - 1].sqrt() * z0, 1 - ab[t - 1]
    mu_t, v_t = a * mu_prev, a**2 * v_prev + beta
    cov = a * v_prev
    mean_ref = mu_prev + cov / v_t * (zt - mu_t)
    var_ref = v_prev - cov**2 / v_t
    mean, var = dd.forward_posterior(z0, zt, t, betas)
    torch.testing.assert_close(mean, mean_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(var, var_ref, rtol=1e-12, atol=1e-12)
    # the variance with 1 - abar_{t+1} (as a misprint would have it) is another number
    if t < len(betas):
        wrong = (1 - ab[t + 1]) / (1 - ab[t]) * beta
        assert abs(wrong - var_ref) > 1e-3 * var_ref


def test_elbo_terms_match_monte_carlo_over_the_forward_process():
    """Reconstruction and per-step KLs, by sampling z_t ~ q(z_t | x) and evaluating the model's
    densities directly, agree with the closed forms within 5 standard errors."""
    m, s2 = 0.4, 0.5
    betas = linear_betas(6, 0.05, 0.4)
    ab = dd.alpha_bars(betas)
    x = torch.tensor(1.3, dtype=DT)
    terms = dd.gaussian_data_elbo_terms(x, m, s2, betas)
    n = 400_000
    g = torch.Generator().manual_seed(2)

    def denoise(z: torch.Tensor, t: int) -> torch.Tensor:  # E[x | z_t] by Gaussian conditioning
        cov, var = ab[t].sqrt() * s2, ab[t] * s2 + 1 - ab[t]
        return m + cov / var * (z - ab[t].sqrt() * m)

    z1 = ab[1].sqrt() * x + (1 - ab[1]).sqrt() * torch.randn(n, generator=g, dtype=DT)
    var1 = s2 - (ab[1].sqrt() * s2) ** 2 / (ab[1] * s2 + 1 - ab[1])
    logp = torch.distributions.Normal(denoise(z1, 1), var1.sqrt()).log_prob(x)
    assert abs(logp.mean() - terms["reconstruction"]) < 5 * logp.std() / math.sqrt(n)
    for t in range(2, len(betas) + 1):
        zt = ab[t].sqrt() * x + (1 - ab[t]).sqrt() * torch.randn(n, generator=g, dtype=DT)
        mq, vq = dd.forward_posterior(x, zt, t, betas)
        mp, _ = dd.forward_posterior(denoise(zt, t), zt, t, betas)
        q = torch.distributions.Normal(mq, vq.sqrt())
        p = torch.distributions.Normal(mp, vq.sqrt())
        kl = torch.distributions.kl_divergence(q, p)
        se = kl.std() / math.sqrt(n)
        assert abs(kl.mean() - terms["per_step"][t - 2]) < 5 * se
    prior_ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(ab[-1].sqrt() * x, (1 - ab[-1]).sqrt()),
        torch.distributions.Normal(torch.zeros((), dtype=DT), torch.ones((), dtype=DT)),
    )
    torch.testing.assert_close(terms["prior"], prior_ref, rtol=1e-12, atol=1e-14)


def test_elbo_is_below_the_entropy_and_tends_to_it():
    """Averaged over the data, ELBO <= -H(x) for every T (cross-entropy >= entropy), the
    diffusion term decreases with T to the continuous-time limit, and the ELBO tends to -H."""
    m, s2 = 0.5, 0.3
    neg_entropy = -0.5 * math.log(2 * math.pi * math.e * s2)
    limit = dd.gaussian_data_diffusion_limit(s2, 1e-4, 1e4)
    elbos, diffs = [], []
    for T in (10, 100, 1000, 10_000):
        betas = log_snr_betas(T)
        terms = {
            k: data_average(
                lambda x, k=k, b=betas: dd.gaussian_data_elbo_terms(x, m, s2, b)[k], m, s2
            )
            for k in ("elbo", "diffusion")
        }
        elbos.append(terms["elbo"])
        diffs.append(terms["diffusion"])
    assert all(e < neg_entropy for e in elbos)
    assert all(a > b for a, b in zip(diffs, diffs[1:], strict=False)) and diffs[-1] > limit
    # Riemann sum of a smooth integrand: the excess falls like 1/T (10x per decade, within 30 %)
    ratios = [(a - limit) / (b - limit) for a, b in zip(diffs[1:], diffs[2:], strict=False)]
    assert all(7 < r < 13 for r in ratios)
    # at T = 10^4: the rest is the prior term at snr_min = 1e-4 and the 1/T excess (< 0.01)
    assert neg_entropy - elbos[-1] < 0.01


def test_gaussian_data_elbo_is_exact_for_one_step_when_the_prior_matches():
    """Data N(0, 1), T = 1: p(z_1) = N(0, 1) = q(z_1) and p(x | z_1) = q(x | z_1), so the model's
    joint is q's and the encoder is its exact posterior: ELBO = log N(x; 0, 1) for every x. With
    T = 2 the reverse step's variance beta~_2 is below the true Var(z_1 | z_2), the model is not
    the true reverse process, and the ELBO is strictly lower."""
    x = torch.linspace(-3, 3, 13, dtype=DT)
    ref = torch.distributions.Normal(0.0, 1.0).log_prob(x)
    one = dd.gaussian_data_elbo_terms(x, 0.0, 1.0, torch.tensor([0.3], dtype=DT))
    torch.testing.assert_close(one["elbo"], ref, rtol=1e-12, atol=1e-12)
    assert one["per_step"].shape == (0, 13)
    two = dd.gaussian_data_elbo_terms(x, 0.0, 1.0, torch.tensor([0.3, 0.3], dtype=DT))
    assert bool((two["elbo"] < ref - 1e-3).all())


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: dd.forward_marginal(torch.zeros(3), 0, linear_betas(5)), "1..5"),
        (lambda: dd.forward_marginal(torch.zeros(3), 6, linear_betas(5)), "1..5"),
        (lambda: dd.forward_marginal(torch.zeros(3), 2.0, linear_betas(5)), "int"),
        (lambda: dd.forward_posterior(torch.zeros(3), torch.zeros(3), 1, linear_betas(5)), "2..5"),
        (lambda: dd.forward_posterior(torch.zeros(3), torch.zeros(2), 2, linear_betas(5)), "zt"),
        (lambda: dd.forward_marginal(torch.zeros(3), 1, torch.tensor([0.1, 1.0])), r"\(0, 1\)"),
        (lambda: dd.forward_marginal(torch.zeros(3), 1, torch.ones(2, 2) / 2), "1-D"),
        (lambda: dd.forward_sample(torch.tensor([float("nan")]), linear_betas(3)), "NaN"),
        (lambda: dd.gaussian_data_elbo_terms(torch.zeros(2), 0.0, 0.0, linear_betas(3)), "s2"),
        (lambda: dd.gaussian_data_diffusion_limit(1.0, 2.0, 1.0), "snr_min"),
    ],
)
def test_bad_input_names_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_wrong_types_raise_type_errors_and_value_checks_can_be_switched_off():
    with pytest.raises(TypeError, match="betas must be a torch.Tensor"):
        dd.alpha_bars([0.1, 0.2])
    with pytest.raises(TypeError, match="t must be an integer"):
        dd.forward_marginal(torch.zeros(3), True, linear_betas(5))
    bad = torch.tensor([0.1, 1.5], dtype=DT)  # beta_2 outside (0, 1)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        dd.alpha_bars(bad)
    set_validation(False)
    try:  # the value checks are skipped, the arithmetic runs: abar_2 = 0.9 * (1 - 1.5)
        assert float(dd.alpha_bars(bad)[2]) == pytest.approx(-0.45, rel=1e-15)
        with pytest.raises(TypeError, match="betas must be a torch.Tensor"):
            dd.alpha_bars([0.1, 0.2])  # type checks stay on
    finally:
        set_validation(True)


def test_elbo_estimate_options_are_checked():
    betas, x = linear_betas(5), torch.zeros(3, 1, dtype=DT)
    probs = torch.full((4,), 0.25, dtype=DT)

    def zero_eps(z, t):
        return torch.zeros_like(z)

    with pytest.raises(ValueError, match="every_step=True takes them all"):
        dd.elbo_estimate(zero_eps, x, betas, t_probs=probs, every_step=True)
    with pytest.raises(ValueError, match="sum to 1"):
        dd.elbo_estimate(zero_eps, x, betas, t_probs=2 * probs)
    with pytest.raises(ValueError, match="T >= 2"):
        dd.elbo_estimate(zero_eps, x, betas[:1])
    one = dd.elbo_estimate(zero_eps, x, betas[:1], every_step=True)  # T = 1: no diffusion terms
    assert one["per_step"].shape == (0, 3) and torch.equal(one["diffusion"], torch.zeros(3))


# ---------------------------------------------------------------------------------------------
# the learned reverse process: weights, estimators, training loss, sampler


def gaussian_optimal_eps(m: float, s2: float, betas: torch.Tensor):
    """The noise prediction of the optimal reverse model for data N(m, s2) (per coordinate)."""
    ab = dd.alpha_bars(betas)

    def eps_model(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = ab[t].to(z.dtype).reshape(-1, *([1] * (z.dim() - 1)))
        gain = a.sqrt() * s2 / (a * s2 + 1 - a)
        x_hat = m + gain * (z - a.sqrt() * m)
        return (z - a.sqrt() * x_hat) / (1 - a).sqrt()

    return eps_model


def test_schedules():
    b = dd.linear_betas(1000)
    assert b.dtype == DT and float(b[0]) == pytest.approx(1e-4) and float(b[-1]) == 0.02
    s = dd.snr(dd.log_snr_betas(50, 1e3, 1e-2))
    assert float(s[0]) == pytest.approx(1e3, rel=1e-12) and float(s[-1]) == pytest.approx(1e-2)
    log_s = s.log()
    steps = log_s[1:] - log_s[:-1]
    torch.testing.assert_close(steps, steps[:1].expand(49))
    torch.testing.assert_close(dd.log_snr_betas(30), log_snr_betas(30))  # the local reference


def test_posterior_variances_and_weights_against_the_kl_of_two_gaussians():
    """w_t ||eps - eps_hat||^2 is the KL between q(z_{t-1}|z_t, x) and the model's step, whose
    mean is the posterior mean at x_hat = (z_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t); and
    w_t = (snr_{t-1} / snr_t - 1) / 2."""
    betas = linear_betas(200, 1e-3, 0.05)
    ab = dd.alpha_bars(betas)
    w = dd.eps_kl_weights(betas)
    g = torch.Generator().manual_seed(3)
    for t in (2, 17, 200):
        assert float(dd.posterior_variances(betas)[t - 1]) == pytest.approx(
            float(
                dd.forward_posterior(torch.zeros(1, dtype=DT), torch.zeros(1, dtype=DT), t, betas)[
                    1
                ]
            ),
            rel=1e-13,
        )
        x, eps, eps_hat = (torch.randn(7, generator=g, dtype=DT) for _ in range(3))
        zt = ab[t].sqrt() * x + (1 - ab[t]).sqrt() * eps
        x_hat = (zt - (1 - ab[t]).sqrt() * eps_hat) / ab[t].sqrt()
        mq, v = dd.forward_posterior(x, zt, t, betas)
        mp, _ = dd.forward_posterior(x_hat, zt, t, betas)
        kl = torch.distributions.kl_divergence(
            torch.distributions.Normal(mq, v.sqrt()), torch.distributions.Normal(mp, v.sqrt())
        ).sum()
        assert float(kl) == pytest.approx(
            float(w[t - 1] * (eps - eps_hat).square().sum()), rel=1e-10
        )
    s = torch.cat([torch.tensor([math.inf], dtype=DT), dd.snr(betas)])
    torch.testing.assert_close(w[1:], 0.5 * (s[1:-1] / s[2:] - 1), rtol=1e-10, atol=0)
    assert float(w[0]) == pytest.approx(1 / (2 * (1 - float(betas[0]))), rel=1e-12)


def test_elbo_estimators_are_unbiased_for_the_exact_gaussian_elbo():
    """With the optimal reverse model on data N(m, s2) and decoder variance Var(x | z_1), the
    random-step estimate (uniform or importance-sampled step) and the all-steps estimate have
    the exact data-averaged ELBO as their mean (within 5 standard errors)."""
    m, s2 = 0.4, 0.5
    betas = dd.log_snr_betas(40, 1e3, 1e-3)
    ab = dd.alpha_bars(betas)
    var1 = float(s2 * (1 - ab[1]) / (ab[1] * s2 + 1 - ab[1]))
    exact = data_average(lambda x: dd.gaussian_data_elbo_terms(x, m, s2, betas)["elbo"], m, s2)
    model = gaussian_optimal_eps(m, s2, betas)
    g = torch.Generator().manual_seed(4)
    x = m + math.sqrt(s2) * torch.randn(100_000, 1, generator=g, dtype=DT)
    probs = torch.linspace(1, 3, 39, dtype=DT)
    for est in (
        dd.elbo_estimate(model, x, betas, decoder_var=var1, generator=g),
        dd.elbo_estimate(
            model, x, betas, decoder_var=var1, generator=g, t_probs=probs / probs.sum()
        ),
        dd.elbo_estimate(model, x[:20_000], betas, decoder_var=var1, generator=g, every_step=True),
    ):
        e = est["elbo"]
        assert abs(float(e.mean()) - exact) < 5 * float(e.std()) / math.sqrt(len(e))
    full = dd.elbo_estimate(model, x[:5], betas, decoder_var=var1, generator=g, every_step=True)
    assert full["per_step"].shape == (39, 5)
    torch.testing.assert_close(full["diffusion"], full["per_step"].sum(0))


def test_training_losses():
    """L_simple is the mean squared noise error; the ELBO weighting with a uniform step and
    with an importance-sampled step have the same expectation."""
    m, s2 = 0.0, 2.0
    betas = linear_betas(50, 1e-3, 0.2)
    model = gaussian_optimal_eps(m, s2, betas)
    g = torch.Generator().manual_seed(5)
    x = math.sqrt(s2) * torch.randn(200_000, 1, generator=g, dtype=DT)
    out = dd.ddpm_loss(model, x, betas, "simple", generator=g)
    assert float(out["loss"]) == float(out["mse"])
    vals = {}
    for wt in ("elbo", "elbo_is"):
        # per-example losses: batches of one example each would be slow; use 400 batches
        losses = torch.stack(
            [dd.ddpm_loss(model, xb, betas, wt, generator=g)["loss"] for xb in x.split(500)]
        )
        vals[wt] = (float(losses.mean()), float(losses.std() / math.sqrt(len(losses))))
    (a, sa), (b, sb) = vals["elbo"], vals["elbo_is"]
    assert abs(a - b) < 5 * math.hypot(sa, sb)
    with pytest.raises(ValueError, match="weighting"):
        dd.ddpm_loss(model, x[:4], betas, "nope")


def test_sampler_matches_the_linear_gaussian_recursion():
    """With the optimal (linear) model on Gaussian data every reverse step is linear-Gaussian,
    so the sample mean and variance follow a closed recursion; the sampler agrees within 5
    standard errors."""
    m, s2 = 0.4, 0.5
    betas = dd.log_snr_betas(100, 1e3, 1e-3)
    ab = dd.alpha_bars(betas)
    post = dd.posterior_variances(betas)
    n = 200_000
    x, kept = dd.ddpm_sample(
        gaussian_optimal_eps(m, s2, betas),
        (n, 1),
        betas,
        generator=torch.Generator().manual_seed(6),
        dtype=DT,
        keep=(100, 50),
    )
    assert set(kept) == {100, 50} and kept[100].shape == (n, 1)
    # z_T ~ N(0, 1); z_{t-1} = A z_t + B + noise(post_t); x = a1 z_1 + b1
    mean, var = 0.0, 1.0
    for t in range(100, 1, -1):
        a = ab[t]
        gain = a.sqrt() * s2 / (a * s2 + 1 - a)  # x_hat = m + gain (z - sqrt(a) m)
        c0 = ab[t - 1].sqrt() * betas[t - 1] / (1 - a)
        ct = (1 - betas[t - 1]).sqrt() * (1 - ab[t - 1]) / (1 - a)
        A, B = c0 * gain + ct, c0 * (m - gain * a.sqrt() * m)
        mean, var = float(A * mean + B), float(A**2 * var + post[t - 1])
    gain1 = ab[1].sqrt() * s2 / (ab[1] * s2 + 1 - ab[1])
    mean, var = float(m + gain1 * (mean - ab[1].sqrt() * m)), float(gain1**2 * var)
    assert abs(float(x.mean()) - mean) < 5 * math.sqrt(var / n)
    assert abs(float(x.var()) - var) < 5 * var * math.sqrt(2 / (n - 1))
