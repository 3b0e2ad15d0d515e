"""dgmlib.models.PPCA: exact densities, posterior, closed-form MLE, EM, ELBO and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.decomposition import PCA
from torch.distributions import MultivariateNormal, kl_divergence

from dgmlib.models import PPCA


def make_model(d: int = 6, q: int = 2, sigma2: float = 0.3, seed: int = 0) -> PPCA:
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d, q, generator=g, dtype=torch.float64)
    mu = torch.randn(d, generator=g, dtype=torch.float64)
    return PPCA(W=W, mu=mu, sigma2=sigma2)


@pytest.fixture
def model() -> PPCA:
    return make_model()


@pytest.fixture
def data(model: PPCA) -> torch.Tensor:
    return model.sample(300, torch.Generator().manual_seed(1))


def test_log_prob_matches_scipy(model, data):
    C = (model.W @ model.W.T + model.sigma2 * torch.eye(model.d, dtype=torch.float64)).numpy()
    ref = stats.multivariate_normal(model.mu.numpy(), C).logpdf(data.numpy())
    got = model.log_prob(data)
    assert got.shape == (300,) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-11)


def test_sampling_shapes_and_moments(model):
    n = 20000
    x, z = model.sample(n, torch.Generator().manual_seed(2), return_latents=True)
    assert x.shape == (n, model.d) and z.shape == (n, model.q)
    # 4 standard errors: sqrt(C_ii / n) for a mean, sqrt((C_ij^2 + C_ii C_jj) / (n - 1)) for a
    # sample covariance of Gaussian data
    C = model.covariance()
    se_cov = ((C**2 + torch.outer(C.diagonal(), C.diagonal())) / (n - 1)).sqrt()
    assert ((torch.cov(x.T) - C).abs() < 4 * se_cov).all()
    assert ((x.mean(0) - model.mu).abs() < 4 * (C.diagonal() / n).sqrt()).all()
    # the returned latents are the ones behind x: x - mu - W z is the noise, N(0, sigma2 I)
    noise = x - model.mu - z @ model.W.T
    s2, eye = float(model.sigma2), torch.eye(model.d, dtype=x.dtype)
    se_noise = s2 * (eye + 1).sqrt() / math.sqrt(n - 1)  # sqrt(2) s2 / sqrt(n - 1) on the diagonal
    assert ((torch.cov(noise.T) - s2 * eye).abs() < 4 * se_noise).all()


def test_bayes_rule_holds_pointwise(model, data):
    """log p(x|z) + log p(z) - log p(z|x) = log p(x) for every z, not only on average."""
    x = data[:4]
    z = torch.randn(10, 4, model.q, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    lhs = model.joint_log_prob(x, z) - model.posterior(x).log_prob(z)
    torch.testing.assert_close(lhs, model.log_prob(x).expand(10, 4), rtol=1e-12, atol=1e-10)


def test_log_likelihood_and_joint_match_torch_distributions(model, data):
    z = torch.randn(7, 3, model.q, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    x = data[:3]
    ref = model.likelihood(z).log_prob(x)
    torch.testing.assert_close(model.log_likelihood(x, z), ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        model.joint_log_prob(x, z), ref + model.prior.log_prob(z), rtol=1e-12, atol=1e-12
    )


def test_posterior_matches_brute_force_bayes_on_a_grid():
    """q = 1: normalise p(x|z) p(z) on a fine grid and compare mean, variance and density."""
    m = make_model(d=4, q=1, sigma2=0.5, seed=4)
    x = m.sample(1, torch.Generator().manual_seed(5))
    z = torch.linspace(-8, 8, 20001, dtype=torch.float64)[:, None]
    log_joint = m.joint_log_prob(x, z)
    dz = (z[1] - z[0]).item()
    post_grid = torch.softmax(log_joint, dim=0) / dz
    post = m.posterior(x)
    mean_grid = (post_grid * z[:, 0]).sum() * dz
    var_grid = (post_grid * (z[:, 0] - mean_grid) ** 2).sum() * dz
    assert mean_grid.item() == pytest.approx(post.loc.item(), abs=1e-8)
    assert var_grid.item() == pytest.approx(post.covariance_matrix.item(), rel=1e-7)
    np.testing.assert_allclose(post_grid.numpy(), post.log_prob(z).exp().numpy(), atol=1e-8)
    log_px_grid = torch.logsumexp(log_joint, 0) + math.log(dz)
    assert log_px_grid.item() == pytest.approx(m.log_prob(x).item(), abs=1e-8)


def test_elbo_decomposition(model, data):
    """log p(x) = ELBO(q) + KL(q || p(z|x)) for arbitrary Gaussian q; tight at the posterior."""
    x = data[:5]
    g = torch.Generator().manual_seed(6)
    A = torch.randn(5, model.q, model.q, generator=g, dtype=torch.float64)
    S = A @ A.transpose(-1, -2) + 0.1 * torch.eye(model.q, dtype=torch.float64)
    q = MultivariateNormal(torch.randn(5, model.q, generator=g, dtype=torch.float64), S)
    post = model.posterior(x)
    elbo = model.elbo(x, q)
    torch.testing.assert_close(
        elbo + kl_divergence(q, post), model.log_prob(x), rtol=1e-12, atol=1e-10
    )
    assert (elbo < model.log_prob(x)).all()
    torch.testing.assert_close(model.elbo(x, post), model.log_prob(x), rtol=1e-12, atol=1e-10)


def test_elbo_closed_form_matches_monte_carlo(model, data):
    x = data[:1]
    q = MultivariateNormal(
        torch.zeros(model.q, dtype=torch.float64), 0.5 * torch.eye(model.q, dtype=torch.float64)
    )
    z = q.sample((200000,))
    terms = model.joint_log_prob(x, z) - q.log_prob(z)
    se = terms.std() / math.sqrt(len(terms))
    assert abs(terms.mean() - model.elbo(x, q)[0]) < 4 * se


@pytest.mark.parametrize("q", [1, 2, 4])
def test_mle_matches_scikit_learn(data, q):
    """scikit-learn's PCA.score is the pPCA mean log-likelihood with the N-1 covariance."""
    sk = PCA(n_components=q).fit(data.numpy()).score(data.numpy())
    assert PPCA.mle(data, q, ddof=1).log_prob(data).mean().item() == pytest.approx(sk, rel=1e-10)
    mle = PPCA.mle(data, q).log_prob(data).mean().item()
    assert mle >= sk and mle - sk < 1e-3


def test_mle_is_a_maximum(data):
    """Perturbing the MLE's W, mu or sigma2 lowers the log-likelihood."""
    best = PPCA.mle(data, 2)
    ll = best.log_prob(data).mean()
    g = torch.Generator().manual_seed(7)
    for _ in range(5):
        dW = 1e-2 * torch.randn(best.W.shape, generator=g, dtype=torch.float64)
        assert PPCA(best.W + dW, best.mu, best.sigma2).log_prob(data).mean() < ll
    assert PPCA(best.W, best.mu + 1e-2, best.sigma2).log_prob(data).mean() < ll
    assert PPCA(best.W, best.mu, best.sigma2 * 1.01).log_prob(data).mean() < ll
    assert PPCA(best.W, best.mu, best.sigma2 * 0.99).log_prob(data).mean() < ll


def test_mle_recovers_the_generating_subspace():
    n, d, q = 20000, 8, 2
    true = make_model(d=d, q=q, sigma2=0.1, seed=8)
    X = true.sample(n, torch.Generator().manual_seed(9))
    fit = PPCA.mle(X, q)
    # sigma2_hat averages the d - q noise eigenvalues of the sample covariance: standard error
    # about sigma2 sqrt(2 / (n (d - q))) (n (d - q) squared N(0, sigma2) deviations); 4 s.e.
    assert abs(float(fit.sigma2) - 0.1) < 4 * 0.1 * math.sqrt(2 / (n * (d - q)))
    # the fitted covariance is about the sample covariance: 4 of its standard errors
    C = true.covariance()
    se_cov = ((C**2 + torch.outer(C.diagonal(), C.diagonal())) / (n - 1)).sqrt()
    assert ((fit.covariance() - C).abs() < 4 * se_cov).all()


def test_em_is_monotone_and_converges_to_the_mle(data):
    fitted, history = PPCA.fit_em(data, 2, steps=300, generator=torch.Generator().manual_seed(10))
    assert history.shape == (301,)
    assert (history.diff() >= -1e-12).all(), "EM decreased the log-likelihood"
    mle_ll = PPCA.mle(data, 2).log_prob(data).mean()
    assert abs(history[-1] - mle_ll) < 1e-8
    torch.testing.assert_close(
        fitted.covariance(), PPCA.mle(data, 2).covariance(), atol=1e-5, rtol=1e-5
    )


def test_mle_is_a_fixed_point_of_em(data):
    best = PPCA.mle(data, 3)
    step = best.em_step(data)
    torch.testing.assert_close(step.covariance(), best.covariance(), rtol=1e-10, atol=1e-10)


def test_float32_works(data):
    X = data.float()
    m = PPCA.mle(X, 2)
    assert m.W.dtype == torch.float32 and m.log_prob(X).dtype == torch.float32
    assert m.em_step(X).sigma2.dtype == torch.float32


def test_repr_is_short(model):
    assert repr(model) == "PPCA(d=6, q=2, sigma2=0.3)"


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda X: PPCA.mle(X, 0), r"PPCA.mle: q must be an integer >= 1, got 0"),
        (lambda X: PPCA.mle(X, 6), r"1 <= q < d = 6, got 6"),
        (lambda X: PPCA.mle(X[0], 2), r"X must have shape \[N, d\]"),
        (lambda X: PPCA.mle(X[:1], 2), "at least 2 rows"),
        (lambda X: PPCA.mle(X[:3], 2), "vary in at most q = 2 directions"),
        (
            lambda X: PPCA.mle(X[:, :1] @ torch.ones(1, 6, dtype=X.dtype), 1),
            "vary in at most q = 1",
        ),
        (lambda X: PPCA.mle(torch.where(X > 1, float("nan"), X), 2), "X contains NaN"),
        (lambda X: PPCA.mle(X, 2, ddof=2), "ddof"),
        (lambda X: make_model().log_prob(X[:, :4]), "4 columns but the model has d = 6"),
        (lambda X: make_model().posterior(X[:, :5]), "d = 6"),
        (lambda X: make_model().likelihood(torch.zeros(3, 5)), "last dim q = 2"),
        (lambda X: make_model().log_likelihood(X, torch.zeros(3)), "Z in q = 2"),
        (lambda X: PPCA(torch.zeros(3, 3), torch.zeros(3), 1.0), r"shape \[d, q\]"),
        (lambda X: PPCA(torch.zeros(3, 1), torch.zeros(2), 1.0), r"mu must have shape \[d\]"),
        (lambda X: PPCA(torch.zeros(3, 1), torch.zeros(3), 0.0), "sigma2 must be"),
        (lambda X: PPCA(torch.zeros(3, 1), torch.zeros(3), float("nan")), "sigma2 must be"),
        (lambda X: PPCA(torch.full((3, 1), float("inf")), torch.zeros(3), 1.0), "W contains inf"),
        (lambda X: make_model().sample(0), "PPCA.sample: n must be an integer >= 1, got 0"),
        (
            lambda X: make_model().elbo(X, MultivariateNormal(torch.zeros(3), torch.eye(3))),
            r"q must be a MultivariateNormal with event shape \[2\], got \[3\]",
        ),
        (lambda X: PPCA.fit_em(X, 2, steps=-1), "PPCA.fit_em: steps must be an integer >= 0"),
    ],
)
def test_errors(data, call, match):
    with pytest.raises(ValueError, match=match):
        call(data)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda X: PPCA.mle(X, 2.0), "PPCA.mle: q must be an integer >= 1, got 2.0"),
        (lambda X: PPCA.mle(X.tolist(), 2), "PPCA.mle: X must be a torch.Tensor, got list"),
        (lambda X: make_model().sample(2.0), "PPCA.sample: n must be an integer >= 1"),
        (lambda X: make_model().elbo(X, None), "PPCA.elbo: q must be a MultivariateNormal, got"),
    ],
)
def test_wrong_types_raise_type_errors(data, call, match):
    with pytest.raises(TypeError, match=match):
        call(data)
