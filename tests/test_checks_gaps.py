"""dgmlib.checks.gaps (lecture 10): typical mistakes are rejected with the case that catches
them (the one-line/stub behaviour of every check: tests/test_checks.py)."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

from dgmlib.checks.gaps import check_optimal_linear_encoder
from dgmlib.models.ppca import PPCA


def right(W, b, sigma2):
    prec = torch.eye(W.shape[1], dtype=W.dtype) + W.T @ W / sigma2
    A = torch.linalg.solve(prec, W.T) / sigma2
    return A, -A @ b, 1.0 / torch.diagonal(prec)


def covariance_diagonal(W, b, sigma2):  # the diagonal of the covariance, not of the precision
    A, c, _ = right(W, b, sigma2)
    prec = torch.eye(W.shape[1], dtype=W.dtype) + W.T @ W / sigma2
    return A, c, torch.diagonal(torch.linalg.inv(prec))


def no_prior(W, b, sigma2):  # forgets the identity of the prior in the precision
    prec = W.T @ W / sigma2
    A = torch.linalg.solve(prec, W.T) / sigma2
    return A, -A @ b, 1.0 / torch.diagonal(prec)


def no_offset(W, b, sigma2):
    A, _, var = right(W, b, sigma2)
    return A, torch.zeros(W.shape[1], dtype=W.dtype), var


def sigma_not_squared(W, b, sigma2):
    return right(W, b, sigma2**0.5)


@pytest.mark.parametrize(
    ("fn", "fragments"),
    [
        (covariance_diagonal, ["general W", "var", "1 / L_ii"]),
        (no_prior, ["orthogonal columns", "identity comes from the prior"]),
        (no_offset, ["orthogonal columns", "c = -A b"]),
        (sigma_not_squared, ["orthogonal columns", "A"]),
        (lambda W, b, s: (W.T, b, b), ["expected: ", "got: "]),
        (lambda W, b, s: right(W, b, s)[:2], ["expected a tuple"]),
    ],
)
def test_typical_mistakes_are_rejected(fn, fragments):
    with pytest.raises(AssertionError) as info:
        check_optimal_linear_encoder(fn)
    text = str(info.value)
    assert text.startswith("check_optimal_linear_encoder, case ")
    for fragment in fragments:
        assert fragment in text, text


def from_the_ppca_posterior(W, b, sigma2):
    """The same encoder computed independently: A and c read off the mean A x + c of
    PPCA.posterior at x = b and x = b + e_i, and the KL-optimal diagonal variances
    1 / diag(Sigma^{-1}) from its covariance Sigma."""
    d = W.shape[0]
    points = torch.cat([b[None], b + torch.eye(d, dtype=W.dtype)])  # [1 + D, D]
    post = PPCA(W, b, sigma2).posterior(points)
    A = (post.mean[1:] - post.mean[0]).T  # columns: A e_i
    c = post.mean[0] - A @ b
    var = 1.0 / torch.diagonal(torch.linalg.inv(post.covariance_matrix[0]))
    return A, c, var


def test_the_check_agrees_with_an_independent_computation(capsys):
    check_optimal_linear_encoder(from_the_ppca_posterior)
    assert capsys.readouterr().out == "check_optimal_linear_encoder: all 4 cases pass.\n"


def test_the_diagonal_of_the_precision_is_kl_optimal():
    """The variances the check expects are a stationary point (a minimum: KL is convex in the
    variances) of torch's KL(q || p(z|x)), by autograd; the typical mistake, the diagonal of the
    posterior covariance, is not."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(6, 3, generator=g, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    x = torch.randn(4, 6, generator=g, dtype=torch.float64)
    A, c, var = from_the_ppca_posterior(W, b, 0.5)
    post = PPCA(W, b, 0.5).posterior(x)
    assert torch.allclose(x @ A.T + c, post.mean, atol=1e-10, rtol=0)
    v = var.clone().requires_grad_(True)
    q = MultivariateNormal(post.mean, scale_tril=torch.diag_embed(v.sqrt().expand(4, 3)))
    kl = kl_divergence(q, post).sum()
    (grad,) = torch.autograd.grad(kl, v)
    assert grad.abs().max() < 1e-10, grad
    v_wrong = torch.diagonal(post.covariance_matrix[0]).clone().requires_grad_(True)
    q = MultivariateNormal(post.mean, scale_tril=torch.diag_embed(v_wrong.sqrt().expand(4, 3)))
    (grad,) = torch.autograd.grad(kl_divergence(q, post).sum(), v_wrong)
    assert grad.abs().max() > 1e-2, grad
