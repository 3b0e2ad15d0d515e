"""dgmlib.bounds: the IWAE bound replayed in plain torch, checked on a linear-Gaussian model where
log p(x) is exact, and the chunked large-K NLL estimator."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal

from dgmlib.bounds import estimate_nll, iwae_bound

# --------------------------------------------------------------------------------------------
# A linear-Gaussian model: z ~ N(0, I_2), x | z ~ N(W z + b, s^2 I_5); log p(x) is exact.
# --------------------------------------------------------------------------------------------


def linear_gaussian(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(5, 2, generator=g, dtype=torch.float64)
    b = torch.randn(5, generator=g, dtype=torch.float64)
    s2 = torch.tensor(0.5, dtype=torch.float64)
    x = torch.randn(3, 5, generator=g, dtype=torch.float64) * 2.0
    return {"W": W, "b": b, "s2": s2, "x": x}


def exact_log_px(m: dict[str, torch.Tensor]) -> torch.Tensor:
    cov = m["W"] @ m["W"].T + m["s2"] * torch.eye(5, dtype=torch.float64)
    return MultivariateNormal(m["b"], cov).log_prob(m["x"])


def exact_posterior(m: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean [B, 2] and covariance [2, 2] of p(z | x)."""
    prec = torch.eye(2, dtype=torch.float64) + m["W"].T @ m["W"] / m["s2"]
    cov = torch.linalg.inv(prec)
    mean = (m["x"] - m["b"]) @ m["W"] @ cov / m["s2"]
    return mean, cov


def log_weights_diag_q(
    m: dict[str, torch.Tensor], q_mu: torch.Tensor, q_std: torch.Tensor, K: int, g: torch.Generator
) -> torch.Tensor:
    """[K, B] log-weights with a diagonal Gaussian q(z|x) = N(q_mu [B, 2], diag q_std^2)."""
    z = q_mu + q_std * torch.randn(K, *q_mu.shape, generator=g, dtype=torch.float64)
    log_px_z = Normal(z @ m["W"].T + m["b"], m["s2"].sqrt()).log_prob(m["x"]).sum(-1)
    log_pz = Normal(0.0, 1.0).log_prob(z).sum(-1)
    log_qz = Normal(q_mu, q_std).log_prob(z).sum(-1)
    return log_px_z + log_pz - log_qz


# --------------------------------------------------------------------------------------------
# iwae_bound
# --------------------------------------------------------------------------------------------


def test_iwae_bound_k1_is_the_elbo_sample():
    log_w = torch.randn(1, 6)
    torch.testing.assert_close(iwae_bound(log_w), log_w[0])


def test_iwae_bound_matches_naive_log_mean_exp_and_is_stable():
    log_w = torch.randn(9, 4, dtype=torch.float64)
    torch.testing.assert_close(iwae_bound(log_w), log_w.exp().mean(0).log())
    torch.testing.assert_close(iwae_bound(log_w.T, dim=1), log_w.exp().mean(0).log())
    torch.testing.assert_close(iwae_bound(log_w, dim=-2), log_w.exp().mean(0).log())
    # exp(-1000) underflows in float64; the bound must not
    far = log_w - 1000.0
    torch.testing.assert_close(iwae_bound(far), log_w.exp().mean(0).log() - 1000.0)


@pytest.mark.parametrize(("dtype", "ulp"), [(torch.float32, 2.0**-7), (torch.float64, 2.0**-36)])
def test_iwae_bound_exact_where_every_weight_underflows(dtype, ulp):
    """exp(-1e5) is 0 in any float, yet the bound has a known value: K equal log-weights v give
    v, and the pair (v, v + log 3) gives v + log 2 (the mean weight is 2 e^v).

    Tolerance: ``ulp`` is the spacing of floats near 1e5 (2^16 <= 1e5 < 2^17). The result is off
    by at most the rounding of the input v + log 3 (half an ulp, passed on with weight <= 1) and
    two roundings inside (adding and subtracting log K, half an ulp each): 1.5 ulp, so 2 ulp.
    """
    v = -1e5
    equal = iwae_bound(torch.full((3, 2), v, dtype=dtype))
    torch.testing.assert_close(equal, torch.full((2,), v, dtype=torch.float64).to(dtype),
                               rtol=0, atol=2 * ulp)  # fmt: skip
    pair = iwae_bound(torch.tensor([[v], [v + math.log(3.0)]], dtype=dtype))
    assert abs(pair.item() - (v + math.log(2.0))) <= 2 * ulp, pair.item() - v


def test_iwae_bound_is_at_least_the_mean_elbo():
    """Jensen: log mean exp >= mean, for every example."""
    log_w = 3.0 * torch.randn(50, 20, dtype=torch.float64)
    assert (iwae_bound(log_w) >= log_w.mean(0)).all()


def test_iwae_bound_validation():
    with pytest.raises(ValueError, match="log_w contains NaN"):
        iwae_bound(torch.tensor([[0.0], [float("nan")]]))
    with pytest.raises(ValueError, match="dim=2 is out of range"):
        iwae_bound(torch.zeros(3, 2), dim=2)
    with pytest.raises(ValueError, match="K = 0"):
        iwae_bound(torch.zeros(0, 2))
    with pytest.raises(TypeError, match="iwae_bound: log_w must be a torch.Tensor, got list"):
        iwae_bound([[0.0]])


def test_iwae_bound_increases_with_k_and_tends_to_log_px():
    """On the linear-Gaussian model, E[L_K] is non-decreasing in K and tends to log p(x).

    E[L_K] is estimated from R independent replicates; the K-sample bounds of one replicate use
    its first K log-weights (common random numbers), so the differences between K are clean.
    """
    m = linear_gaussian()
    post_mean, post_cov = exact_posterior(m)
    # a deliberately poor q: shifted mean, too-wide diagonal variance
    q_mu = post_mean + 0.5
    q_std = 1.5 * post_cov.diagonal().sqrt().expand_as(q_mu)
    R, Kmax = 2000, 256
    g = torch.Generator().manual_seed(0)
    log_w = log_weights_diag_q(m, q_mu, q_std, R * Kmax, g).view(R, Kmax, -1)  # [R, Kmax, B]
    Ks = [1, 2, 4, 16, 64, 256]
    means = torch.stack([iwae_bound(log_w[:, :k], dim=1).mean(0) for k in Ks])  # [len(Ks), B]
    log_px = exact_log_px(m)
    assert (means[1:] > means[:-1]).all(), means
    assert (means <= log_px + 1e-3).all()
    gap_first, gap_last = log_px - means[0], log_px - means[-1]
    assert (gap_first > 0.5).all()  # the ELBO is clearly loose for this q ...
    assert (gap_last < 0.05 * gap_first).all()  # ... and K = 256 closes most of the gap
    # the K = 1 mean is the closed-form ELBO of the Gaussian q, within 4 standard errors
    stderr = log_w[:, 0].std(0) / math.sqrt(R)
    assert ((means[0] - closed_form_elbo(m, q_mu, q_std)).abs() < 4 * stderr).all()


def closed_form_elbo(
    m: dict[str, torch.Tensor], q_mu: torch.Tensor, q_std: torch.Tensor
) -> torch.Tensor:
    """E_q[log p(x|z)] - KL(q || N(0, I)) for the linear-Gaussian model, exactly: [B]."""
    resid = m["x"] - q_mu @ m["W"].T - m["b"]
    trace = (q_std.pow(2) @ m["W"].pow(2).T).sum(-1)  # E ||W (z - mu_q)||^2
    d = m["x"].shape[1]
    exp_log_lik = -0.5 * (
        d * math.log(2 * math.pi * m["s2"]) + (resid.pow(2).sum(-1) + trace) / m["s2"]
    )
    kl = 0.5 * (q_std.pow(2) + q_mu.pow(2) - 1 - 2 * q_std.log()).sum(-1)
    return exp_log_lik - kl


# --------------------------------------------------------------------------------------------
# estimate_nll
# --------------------------------------------------------------------------------------------


def replaying(log_w: torch.Tensor):
    """A log_weights_fn that hands out the rows of ``log_w`` in order (deterministic)."""
    pos = [0]

    def fn(x: torch.Tensor, k: int) -> torch.Tensor:
        out = log_w[pos[0] : pos[0] + k]
        pos[0] += k
        return out

    return fn


@pytest.mark.parametrize("chunk", [1, 7, 100, 1000])
def test_estimate_nll_chunked_equals_unchunked(chunk):
    log_w = 5.0 * torch.randn(100, 4, dtype=torch.float64) - 300.0
    x = torch.zeros(4, 3)
    nll = estimate_nll(replaying(log_w), x, K=100, chunk=chunk)
    torch.testing.assert_close(nll, -iwae_bound(log_w))


def test_estimate_nll_exact_with_the_true_posterior():
    """With q = p(z|x) every log-weight equals log p(x): the estimate is exact for any K."""
    m = linear_gaussian(1)
    post_mean, post_cov = exact_posterior(m)
    L = torch.linalg.cholesky(post_cov)
    q = MultivariateNormal(post_mean, scale_tril=L)
    g = torch.Generator().manual_seed(1)

    def fn(x: torch.Tensor, k: int) -> torch.Tensor:
        eps = torch.randn(k, *post_mean.shape, generator=g, dtype=torch.float64)
        z = post_mean + eps @ L.T
        log_px_z = Normal(z @ m["W"].T + m["b"], m["s2"].sqrt()).log_prob(x).sum(-1)
        return log_px_z + Normal(0.0, 1.0).log_prob(z).sum(-1) - q.log_prob(z)

    nll = estimate_nll(fn, m["x"], K=50, chunk=20)
    torch.testing.assert_close(nll, -exact_log_px(m))


def test_estimate_nll_tends_to_minus_log_px():
    m = linear_gaussian(2)
    post_mean, post_cov = exact_posterior(m)
    q_std = 1.3 * post_cov.diagonal().sqrt().expand_as(post_mean)
    g = torch.Generator().manual_seed(2)
    nll = estimate_nll(lambda x, k: log_weights_diag_q(m, post_mean, q_std, k, g), m["x"], K=5000)
    torch.testing.assert_close(nll, -exact_log_px(m), atol=0.01, rtol=0.0)


def test_estimate_nll_validation():
    x = torch.zeros(2, 3)
    good = lambda x, k: torch.zeros(k, 2)  # noqa: E731
    for bad_K, error in ((0, ValueError), (-3, ValueError), (2.5, TypeError), (True, TypeError)):
        with pytest.raises(error, match="estimate_nll: K must be an integer >= 1"):
            estimate_nll(good, x, K=bad_K)
    with pytest.raises(ValueError, match="estimate_nll: chunk must be an integer >= 1"):
        estimate_nll(good, x, K=10, chunk=0)
    with pytest.raises(ValueError, match=r"must return shape \[4, 2\]"):
        estimate_nll(lambda x, k: torch.zeros(2, k), x, K=4)
    with pytest.raises(ValueError, match="contains NaN"):
        estimate_nll(lambda x, k: torch.full((k, 2), float("nan")), x, K=4)
    with pytest.raises(ValueError, match="x contains NaN"):
        estimate_nll(good, torch.full((2, 3), float("nan")), K=4)


def test_estimate_nll_needs_no_gradients():
    w = torch.ones(1, requires_grad=True)
    nll = estimate_nll(lambda x, k: w * torch.zeros(k, 2), torch.zeros(2, 3), K=3)
    assert not nll.requires_grad
