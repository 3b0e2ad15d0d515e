"""dgmlib.gaps: per-example posterior optimisation and the approximation / amortization gaps, on
linear Gaussian VAEs whose exact posterior, log p(x) and ELBO of any Gaussian q are known in closed
form (pPCA): one with orthogonal loadings (the diagonal family contains the posterior, so the
approximation gap is zero) and one without (the diagonal family misses it by a known amount).

Every comparison with a Monte Carlo estimate uses a tolerance of 4 standard errors, the standard
error being estimated from fresh draws of the same integrand; every comparison with the result of
an optimisation allows the optimiser's residual, estimated from its step size and gradient noise
(``opt_residual``)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

from dgmlib.gaps import (
    doubled_steps_change,
    inference_gaps,
    local_elbo,
    mixture_log_weights,
    optimize_local_posterior,
)
from dgmlib.models.ppca import PPCA
from dgmlib.models.vae import VAE, GaussianDecoder, MLPGaussianEncoder
from dgmlib.stats import mean_se

DT = torch.float64
D, Z, S2 = 6, 2, 0.5
LAMBDA_MAX = 1 + 4 / S2  # the largest diagonal entry of the posterior precision, both fixtures


def opt_residual(lr: float, n_samples: int) -> float:
    """Tolerance, nats, for KL(q* || best q) after optimize_local_posterior (cosine decay to lr/20).

    Near its optimum Adam behaves like SGD with rate lr / s_g (s_g the gradient's noise), which
    leaves an expected excess of about lr s_g / 4 nats per parameter. A mean coordinate of q has
    s_g = sqrt(Lambda_ii / n_samples) at the optimum; taking this for all 2 Z parameters and the
    final rate lr / 20 gives a floor of 2 Z (lr / 20) sqrt(LAMBDA_MAX / n_samples) / 4. The
    tolerance is ten times that floor: 0.053 nats for (lr, n_samples) = (0.1, 8), 0.15 for
    (0.1, 1). The bugs guarded against leave far more: a dropped or half-weighted KL term, or
    exp(logvar) used as the standard deviation, leave a mean KL >= 0.19 nats (and >= 0.49 on the
    worst of 16 examples) with (0.1, 8) in test_local_optimisation_....
    """
    return 10 * 2 * Z * (lr / 20) * math.sqrt(LAMBDA_MAX / n_samples) / 4


def _linear_vae(W: torch.Tensor, mu: torch.Tensor) -> VAE:
    """A VAE whose decoder is N(W z + mu, S2 I) (a linear encoder, randomly initialised).

    The parameters keep ``requires_grad=True``, as after training, so that a test can see
    whether the local optimisation leaves them alone.
    """
    enc = MLPGaussianEncoder(D, 1, Z, n_hidden_layers=0)
    dec = GaussianDecoder(Z, 1, D, n_hidden_layers=0, variance="fixed", sigma=S2**0.5)
    model = VAE(enc, dec).double()
    with torch.no_grad():
        dec.net[0].weight.copy_(W)
        dec.net[0].bias.copy_(mu)
    return model


@pytest.fixture(scope="module")
def linear():
    """Orthogonal columns: the posterior is a diagonal Gaussian."""
    torch.manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(D, Z, dtype=DT))
    W, mu = Q * torch.tensor([2.0, 1.0], dtype=DT), torch.randn(D, dtype=DT)
    model, ppca = _linear_vae(W, mu), PPCA(W, mu, S2)
    return model, ppca, ppca.sample(16, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def tilted():
    """Two columns of lengths 2 and 1 at 45 degrees: the posterior's coordinates are correlated."""
    torch.manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(D, Z, dtype=DT))
    c = math.cos(math.pi / 4)
    W = Q @ torch.tensor([[2.0, c], [0.0, c]], dtype=DT)
    mu = torch.randn(D, dtype=DT)
    model, ppca = _linear_vae(W, mu), PPCA(W, mu, S2)
    return model, ppca, ppca.sample(16, generator=torch.Generator().manual_seed(1))


def _diag(mu: torch.Tensor, logvar: torch.Tensor) -> MultivariateNormal:
    return MultivariateNormal(mu, scale_tril=torch.diag_embed(torch.exp(0.5 * logvar)))


def exact_elbo(ppca: PPCA, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor):
    """log p(x) - KL(q || p(z|x)) in closed form (torch.distributions), ``[B]``."""
    return ppca.log_prob(x) - kl_divergence(_diag(mu, logvar), ppca.posterior(x))


def elbo_se(ppca, x, mu, logvar, n: int, seed: int) -> torch.Tensor:
    """Standard error of local_elbo's n-sample estimate (Monte Carlo log p(x|z), analytic KL):
    std of log p(x|z) over 4000 fresh draws z ~ q, divided by sqrt(n); ``[B]``."""
    eps = torch.randn((4000, *mu.shape), generator=torch.Generator().manual_seed(seed), dtype=DT)
    z = mu + torch.exp(0.5 * logvar) * eps
    return ppca.log_likelihood(x, z).std(0) / math.sqrt(n)


def best_diagonal_gap(ppca: PPCA) -> float:
    """min over diagonal q of KL(q || p(z|x)) = (sum_i log L_ii - log det L) / 2 (Hadamard)."""
    lam = torch.eye(Z, dtype=DT) + ppca.W.T @ ppca.W / ppca.sigma2
    return 0.5 * (torch.log(torch.diagonal(lam)).sum() - torch.logdet(lam)).item()


def test_fixtures_are_what_they_claim(linear, tilted):
    assert best_diagonal_gap(linear[1]) < 1e-12  # orthogonal columns: Hadamard's equality
    assert best_diagonal_gap(tilted[1]) > 0.1  # 45 degrees: a clearly positive gap
    for model, ppca, x in (linear, tilted):
        z = torch.randn(3, Z, dtype=DT, generator=torch.Generator().manual_seed(0))
        assert torch.allclose(model.decoder.log_prob(x[:3], z), ppca.log_likelihood(x[:3], z))


def test_local_optimisation_improves_and_reaches_exact_posterior(linear):
    torch.set_num_threads(1)
    model, ppca, x = linear
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    with torch.no_grad():
        m0, lv0 = model.encode(x)
    r = optimize_local_posterior(
        model, x, 200, 0.1, torch.Generator().manual_seed(2), n_samples=8, n_eval=2000
    )
    post = ppca.posterior(x)
    kl = kl_divergence(_diag(r["mu"], r["logvar"]), post)  # exact, >= 0, zero at the posterior
    assert kl.max() < opt_residual(0.1, 8), kl.max()
    assert (exact_elbo(ppca, x, r["mu"], r["logvar"]) > exact_elbo(ppca, x, m0, lv0)).all()
    # the returned ELBO is a 2000-sample estimate of the exact ELBO of q*
    se = elbo_se(ppca, x, r["mu"], r["logvar"], 2000, seed=5)
    err = (r["elbo"] - exact_elbo(ppca, x, r["mu"], r["logvar"])).abs()
    assert (err < 4 * se + 1e-12).all(), (err / se).max()
    # the model is left as it was: values, requires_grad, and no gradient leaked into it
    for k, v in model.state_dict().items():
        assert torch.equal(v, before_state[k]), k
    assert all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())
    assert r["mu"].shape == (16, 2) and r["elbo"].shape == (16,)


@pytest.mark.parametrize("case", ["linear", "tilted"])
def test_gaps_match_their_closed_forms(case, request):
    torch.set_num_threads(1)
    model, ppca, x = request.getfixturevalue(case)
    g = inference_gaps(
        model, x, K=200, steps=150, lr=0.1, generator=torch.Generator().manual_seed(3)
    )
    s = g.summary()
    assert set(s) == {
        "log_p",
        "elbo_amortized",
        "elbo_optimized",
        "approximation_gap",
        "amortization_gap",
        "total_gap",
    }
    # sanity line only (the two gaps are defined to add up): the real checks follow
    assert torch.allclose(g.approximation_gap + g.amortization_gap, g.total_gap, atol=1e-12)
    with torch.no_grad():
        mu_phi, lv_phi = model.encode(x)
    mu_s, lv_s = g.mu_optimized, g.logvar_optimized
    log_p = ppca.log_prob(x)
    # log p: the K-sample importance-weighted estimate; its standard error is std(w) /
    # (mean(w) sqrt(K)) (delta method), from a fresh set of K weights
    lw = mixture_log_weights(
        model, x, (mu_phi, lv_phi), (mu_s, lv_s), 200, torch.Generator().manual_seed(6)
    )
    w = torch.exp(lw - log_p)
    se_logp = w.std(0) / w.mean(0) / math.sqrt(200)
    assert ((g.log_p - log_p).abs() < 4 * se_logp).all(), (g.log_p - log_p).abs() / se_logp
    # the two ELBOs: 64-sample estimates of the closed forms
    for est, (m, lv) in ((g.elbo_amortized, (mu_phi, lv_phi)), (g.elbo_optimized, (mu_s, lv_s))):
        se = elbo_se(ppca, x, m, lv, 64, seed=7)
        assert ((est - exact_elbo(ppca, x, m, lv)).abs() < 4 * se + 1e-12).all()
    # q* is the best diagonal Gaussian up to the optimiser's residual
    kl_star = kl_divergence(_diag(mu_s, lv_s), ppca.posterior(x))
    gap = best_diagonal_gap(ppca)
    assert (kl_star >= gap - 1e-12).all() and (kl_star < gap + opt_residual(0.1, 1)).all()
    # hence the mean approximation gap is the closed form within 4 s.e. plus that residual
    m, se = s["approximation_gap"]
    assert gap - 4 * se < m < gap + 4 * se + opt_residual(0.1, 1), (m, se, gap)
    # a random linear encoder is far from the posterior: a large amortization gap
    assert s["amortization_gap"][0] > 1.0


def test_doubled_steps_change_detects_an_unconverged_optimisation(linear):
    """Against the closed-form change of the exact ELBO, at 3 steps (q* far from converged) and
    at 200 (converged): the estimated change is right within 4 s.e. of its Monte Carlo error in
    both; the first is beyond the noise floor of ``opt_residual``, the second is not."""
    torch.set_num_threads(1)
    model, ppca, x = linear
    tol = opt_residual(0.1, 1)
    for steps, unconverged in ((3, True), (200, False)):
        r = doubled_steps_change(
            model, x, steps, lr=0.1, n_eval=1000, generator=torch.Generator().manual_seed(8)
        )
        exact = exact_elbo(ppca, x, r["mu_doubled"], r["logvar_doubled"]) - exact_elbo(
            ppca, x, r["mu"], r["logvar"]
        )
        assert torch.equal(r["change"], r["elbo_doubled"] - r["elbo"])
        err, se = mean_se(r["change"] - exact)  # Monte Carlo error of the mean change
        assert abs(err) < 4 * se, (steps, err, se)
        mean = r["change"].mean().item()
        assert (mean > tol) == unconverged and (exact.mean().item() > tol) == unconverged, (
            steps,
            mean,
            exact.mean().item(),
        )


def test_doubled_steps_change_reuses_a_given_q(linear):
    """Given the q of an earlier run, the function evaluates that q (here the prior), not a new
    one: its ELBO estimate matches the prior's exact ELBO within 4 s.e."""
    torch.set_num_threads(1)
    model, ppca, x = linear
    q = (torch.zeros(16, 2, dtype=DT), torch.zeros(16, 2, dtype=DT))
    r = doubled_steps_change(model, x, 5, lr=0.1, generator=torch.Generator().manual_seed(9), q=q)
    assert torch.equal(r["mu"], q[0]) and torch.equal(r["logvar"], q[1])
    se = elbo_se(ppca, x, *q, 64, seed=10)
    assert ((r["elbo"] - exact_elbo(ppca, x, *q)).abs() < 4 * se).all()
    exact_long = exact_elbo(ppca, x, r["mu_doubled"], r["logvar_doubled"])
    assert (
        (r["elbo_doubled"] - exact_long).abs()
        < 4 * elbo_se(ppca, x, r["mu_doubled"], r["logvar_doubled"], 64, seed=11) + 1e-12
    ).all()


def test_optimize_local_posterior_replayed_in_plain_torch(linear):
    """Adam on the summed ELBO with the step size lr (0.05 + 0.95 (1 + cos(pi t / T)) / 2) at
    step t, written out with torch.distributions. The densities round differently (1e-16
    relative) and Adam divides each gradient by its running RMS, which magnifies rounding where
    a gradient nears zero: the runs agree to 1e-8, while a schedule without the decay moves q*
    by more than 1e-3 here."""
    model, _, x = linear
    steps, lr = 40, 0.05
    got = optimize_local_posterior(model, x, steps, lr, torch.Generator().manual_seed(7), 2)
    with torch.no_grad():
        mu0, logvar0 = model.encoder(x)
    mu, logvar = mu0.clone().requires_grad_(True), logvar0.clone().requires_grad_(True)
    opt, g = torch.optim.Adam([mu, logvar], lr=lr), torch.Generator().manual_seed(7)
    for t in range(steps):
        opt.param_groups[0]["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t / steps)))
        eps = torch.randn((2, *mu.shape), generator=g, dtype=DT)
        z = mu + torch.exp(0.5 * logvar) * eps
        log_px_z = torch.distributions.Normal(model.decoder(z), S2**0.5).log_prob(x).sum(-1)
        kl = 0.5 * (logvar.exp() + mu**2 - 1 - logvar).sum(-1)
        loss = -(log_px_z.mean(0) - kl).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.testing.assert_close(got["mu"], mu.detach(), rtol=0, atol=1e-8)
    torch.testing.assert_close(got["logvar"], logvar.detach(), rtol=0, atol=1e-8)
    assert not torch.equal(got["mu"], mu0)  # the optimisation moved q


def test_validation(linear):
    model, _, x = linear
    with pytest.raises(ValueError, match="optimize_local_posterior: steps must be an integer >= 0"):
        optimize_local_posterior(model, x, steps=-1)
    with pytest.raises(ValueError, match="optimize_local_posterior: lr must be finite and > 0"):
        optimize_local_posterior(model, x, steps=1, lr=0.0)
    with pytest.raises(TypeError, match="optimize_local_posterior: steps must be an integer"):
        optimize_local_posterior(model, x, steps=10.0)
    with pytest.raises(ValueError, match=r"init must be one of \('encoder', 'prior'\)"):
        optimize_local_posterior(model, x, steps=1, init="zeros")
    with pytest.raises(TypeError, match="model must have encode"):
        optimize_local_posterior(object(), x)
    with pytest.raises(ValueError, match="x contains NaN"):
        optimize_local_posterior(model, torch.full((2, 6), float("nan"), dtype=DT))
    with pytest.raises(ValueError, match="mu and logvar"):
        local_elbo(model, x, torch.zeros(3, 2, dtype=DT), torch.zeros(3, 2, dtype=DT))
    with pytest.raises(ValueError, match="local_elbo: n_samples must be an integer >= 1"):
        local_elbo(model, x, torch.zeros(16, 2, dtype=DT), torch.zeros(16, 2, dtype=DT), 0)
    with pytest.raises(ValueError, match="at least 2"):
        inference_gaps(model, x[:1], K=2, steps=1)
    with pytest.raises(ValueError, match="inference_gaps: K must be an integer >= 1"):
        inference_gaps(model, x, K=0)
    with pytest.raises(ValueError, match="doubled_steps_change: steps must be an integer >= 1"):
        doubled_steps_change(model, x, steps=0)
