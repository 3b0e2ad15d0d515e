"""dgmlib.checks.lvm (lecture 01): each typical mistake is rejected by a case whose hint names it
(the one-line/stub behaviour of every check: tests/test_checks.py)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import fails

from dgmlib import checks

# ---------------------------------------------------------------------------------------------
# the closed-form ELBO of q = N(m, S) under pPCA, written as a student would, with switches


def elbo(model, x, m, S, kl_half=0.5, minus_k=True, logdet=True, trace="WSW", mu=True, var=True):
    """The ELBO; each switch away from its default plants one typical mistake."""
    W, s2 = model.W, float(model.sigma2)
    d, k = W.shape
    r = x - (model.mu if mu else 0.0) - W @ m
    spread = {"WSW": torch.trace(W @ S @ W.T), "S": torch.trace(S), "none": 0.0}[trace]
    normaliser = math.log(2 * math.pi * (s2 if var else math.sqrt(s2)))
    expected_ll = -0.5 * d * normaliser - (r @ r + spread) / (2 * s2)
    kl = torch.trace(S) + m @ m - (k if minus_k else 0) - (torch.logdet(S) if logdet else 0.0)
    return expected_ll - kl_half * kl


def elbo_kl_added(model, x, m, S):
    return elbo(model, x, m, S) + 2 * (elbo(model, x, m, S, kl_half=0.0) - elbo(model, x, m, S))


@pytest.mark.parametrize(
    ("wrong", "hint"),
    [
        (lambda *a: elbo(*a, kl_half=1.0), "missing its factor 1/2"),
        (lambda *a: elbo(*a, minus_k=False), "missing the constant -k"),
        (lambda *a: elbo(*a, logdet=False), "-1/2 log det S"),
        (lambda *a: elbo(*a, trace="none"), "tr(W S W^T) / (2 sigma2)"),
        (lambda *a: elbo(*a, trace="S"), "not tr(S)"),
        (lambda *a: elbo(*a, var=False), "sigma2 is the noise variance"),
        (lambda *a: elbo(*a, mu=False), "subtract model.mu"),
        (elbo_kl_added, "check its sign"),
    ],
)
def test_elbo_mistakes_are_named(wrong, hint):
    with pytest.raises(AssertionError) as info:
        checks.check_elbo_gaussian(wrong)
    msg = str(info.value)
    assert msg.startswith("check_elbo_gaussian, case '"), msg
    assert "expected:" in msg and hint in msg.split("Hint:")[1], msg


def test_elbo_right_passes(capsys):
    checks.check_elbo_gaussian(elbo)
    assert capsys.readouterr().out == "check_elbo_gaussian: all 4 cases pass.\n"


# ---------------------------------------------------------------------------------------------
# the importance-sampling estimate of log p(x)


def test_importance_right_passes(capsys):
    checks.check_log_importance_estimate(
        lambda a, b, c: torch.logsumexp(a + b - c, dim=0) - math.log(a.shape[0])
    )
    assert capsys.readouterr().out == "check_log_importance_estimate: all 5 cases pass.\n"


@pytest.mark.parametrize(
    ("wrong", "case", "hint"),
    [
        (lambda a, b, c: torch.logsumexp(a - c, 0) - math.log(len(a)), "K = 1", "log p(z)"),
        (
            lambda a, b, c: torch.logsumexp(a + b - c, -1) - math.log(a.shape[-1]),
            "a batch of 3",
            "reduce dim 0",
        ),
        (lambda a, b, c: torch.logsumexp(a + b + c, 0) - math.log(len(a)), "K = 1", "subtract"),
        (lambda a, b, c: torch.logsumexp(a + b - c, 0), "K = 5", "log K"),
        (lambda a, b, c: (a + b - c).mean(0), "K = 5", "mean of the log-weights"),
        (lambda a, b, c: torch.log(torch.exp(a + b - c).mean(0)), "near -1000", "log-sum-exp"),
    ],
)
def test_importance_mistakes_are_named(wrong, case, hint):
    fails(checks.check_log_importance_estimate, wrong, case, hint)


# ---------------------------------------------------------------------------------------------
# one EM step of pPCA


def em(X, W, mu, sigma2, n_cov=None, noise_in_m=True, old_w=False, per_dim=True):
    """One EM step; each switch away from its default plants one typical mistake."""
    N, d = X.shape
    k = W.shape[1]
    Xc = X - mu
    M_inv = torch.linalg.inv(
        W.T @ W + (sigma2 if noise_in_m else 0.0) * torch.eye(k, dtype=X.dtype)
    )
    Ez = Xc @ W @ M_inv
    sum_Ezz = (N if n_cov is None else n_cov) * sigma2 * M_inv + Ez.T @ Ez
    W_new = Xc.T @ Ez @ torch.linalg.inv(sum_Ezz)
    Ws = W if old_w else W_new
    sq = (Xc**2).sum() - 2 * (Ez @ Ws.T * Xc).sum() + torch.trace(sum_Ezz @ Ws.T @ Ws)
    return W_new, sq / (N * d if per_dim else N)


@pytest.mark.parametrize(
    ("wrong", "what", "hint"),
    [
        (lambda *a: em(*a, n_cov=0), "W_new", "posterior covariance term is missing"),
        (lambda *a: em(*a, n_cov=1), "W_new", "N times"),
        (lambda *a: em(*a, noise_in_m=False), "W_new", "the noise term sigma2 I of M"),
        (lambda *a: em(*a, per_dim=False), "sigma2_new", "divide by N d"),
        (lambda *a: em(*a, old_w=True), "sigma2_new", "W_new, not the old W"),
    ],
)
def test_em_mistakes_are_named(wrong, what, hint):
    with pytest.raises(AssertionError) as info:
        checks.check_em_step(wrong)
    msg = str(info.value)
    assert msg.startswith("check_em_step, case 'N = 50"), msg
    assert f"{what} does not match" in msg and hint in msg.split("Hint:")[1], msg


def test_em_right_passes(capsys):
    checks.check_em_step(em)
    assert capsys.readouterr().out == "check_em_step: all 3 cases pass.\n"
