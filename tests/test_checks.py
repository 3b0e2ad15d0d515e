"""dgmlib.checks: each check passes a correct solution and rejects typical mistakes clearly."""

from __future__ import annotations

import math

import pytest
import torch

from dgmlib import checks

# ---------------------------------------------------------------------------------------------
# student-style solutions, right and wrong


def elbo_right(model, x, m, S):
    W, mu, s2 = model.W, model.mu, float(model.sigma2)
    d, q = W.shape
    r = x - mu - W @ m
    expected_ll = -0.5 * d * math.log(2 * math.pi * s2) - (r @ r + torch.trace(W @ S @ W.T)) / (
        2 * s2
    )
    kl = 0.5 * (torch.trace(S) + m @ m - q - torch.logdet(S))
    return expected_ll - kl


def elbo_no_logdet(model, x, m, S):
    return elbo_right(model, x, m, S) - 0.5 * torch.logdet(S)


def elbo_kl_sign(model, x, m, S):
    kl = 0.5 * (torch.trace(S) + m @ m - model.q - torch.logdet(S))
    return elbo_right(model, x, m, S) + 2 * kl


def elbo_no_trace(model, x, m, S):
    s2 = float(model.sigma2)
    return elbo_right(model, x, m, S) + torch.trace(model.W @ S @ model.W.T) / (2 * s2)


def stub(*args):
    raise NotImplementedError("Exercise: replace this line with your solution.")


def is_right(a, b, c):
    return torch.logsumexp(a + b - c, dim=0) - math.log(a.shape[0])


def is_naive_exp(a, b, c):
    return torch.log(torch.exp(a + b - c).mean(0))


def is_sum(a, b, c):
    return torch.logsumexp(a + b - c, dim=0)


def is_mean_of_logs(a, b, c):
    return (a + b - c).mean(0)


def em_right(X, W, mu, sigma2):
    Xc, q = X - mu, W.shape[1]
    M_inv = torch.linalg.inv(W.T @ W + sigma2 * torch.eye(q, dtype=X.dtype))
    Ez = Xc @ W @ M_inv
    sum_Ezz = len(X) * sigma2 * M_inv + Ez.T @ Ez
    W_new = Xc.T @ Ez @ torch.linalg.inv(sum_Ezz)
    sq = (Xc**2).sum() - 2 * (Ez @ W_new.T * Xc).sum() + torch.trace(sum_Ezz @ W_new.T @ W_new)
    return W_new, sq / X.numel()


def em_no_posterior_cov(X, W, mu, sigma2):
    return checks._em_without_posterior_cov(X, W, mu, sigma2)


# ---------------------------------------------------------------------------------------------


def test_elbo_check_passes_a_correct_solution(capsys):
    checks.check_elbo_gaussian(elbo_right)
    assert "check_elbo_gaussian: all 4 cases agree" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("wrong", "case", "hint"),
    [
        (elbo_no_logdet, "diagonal S", "log det S"),
        (elbo_kl_sign, "diagonal S", "sign"),
        (elbo_no_trace, "q = prior", "tr(W S W^T)"),
    ],
)
def test_elbo_check_rejects_typical_mistakes(wrong, case, hint):
    with pytest.raises(AssertionError) as info:
        checks.check_elbo_gaussian(wrong)
    msg = str(info.value)
    assert f"case '{case}" in msg and "expected:" in msg and "got:" in msg
    assert hint in msg.split("Hint:")[1]


@pytest.mark.parametrize(
    "check",
    [checks.check_elbo_gaussian, checks.check_log_importance_estimate, checks.check_em_step],
)
def test_stub_is_reported_as_not_implemented(check):
    with pytest.raises(AssertionError, match="`stub` is not implemented yet"):
        check(stub)


def test_crash_and_bad_return_are_reported():
    with pytest.raises(AssertionError, match="case 'q = prior N\\(0, I\\)': your function raised"):
        checks.check_elbo_gaussian(lambda model, x, m, S: m @ torch.zeros(3))
    with pytest.raises(AssertionError, match="should be a tensor or a number, got str"):
        checks.check_elbo_gaussian(lambda *a: "oops")
    with pytest.raises(AssertionError, match="has shape \\(2,\\), expected \\(\\)"):
        checks.check_elbo_gaussian(lambda *a: torch.zeros(2))
    with pytest.raises(AssertionError, match="contains NaN"):
        checks.check_elbo_gaussian(lambda *a: torch.tensor(float("nan")))
    with pytest.raises(AssertionError, match="expected a function"):
        checks.check_em_step(3)


def test_importance_check_passes_a_correct_solution(capsys):
    checks.check_log_importance_estimate(is_right)
    assert "all 5 cases agree" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("wrong", "match"),
    [
        (is_naive_exp, "near -1000': the estimate is infinite.*log-sum-exp"),
        (is_sum, "K = 5.*log K"),
        (is_mean_of_logs, "K = 5.*mean of the log-weights"),
    ],
)
def test_importance_check_rejects_typical_mistakes(wrong, match):
    with pytest.raises(AssertionError, match=f"(?s){match}"):
        checks.check_log_importance_estimate(wrong)


def test_em_check_passes_a_correct_solution(capsys):
    checks.check_em_step(em_right)
    assert "check_em_step: all 3 cases agree" in capsys.readouterr().out


def test_em_check_rejects_missing_posterior_covariance_and_bad_returns():
    with pytest.raises(AssertionError, match="(?s)W_new.*posterior covariance term is missing"):
        checks.check_em_step(em_no_posterior_cov)
    with pytest.raises(AssertionError, match="return a pair"):
        checks.check_em_step(lambda X, W, mu, s2: W)
    with pytest.raises(AssertionError, match="failed for sigma2_new"):
        checks.check_em_step(lambda X, W, mu, s2: (em_right(X, W, mu, s2)[0], s2))
