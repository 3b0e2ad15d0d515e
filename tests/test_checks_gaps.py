"""dgmlib.checks.gaps and dgmlib.checks.harmonium (lecture 10): typical mistakes are rejected
with the case that catches them and a hint naming the mistake (the one-line/stub behaviour of
every check: tests/test_checks.py)."""

from __future__ import annotations

import pytest
import torch
from helpers import fails
from torch.distributions import MultivariateNormal, kl_divergence

from dgmlib.checks.gaps import check_optimal_linear_encoder
from dgmlib.checks.harmonium import check_interactions
from dgmlib.harmonium import interactions
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


# ---------------------------------------------------------------------------------------------
# the best linear diagonal encoder: each planted mistake is named in the hint


def no_inverse_sigma2(W, b, sigma2):
    prec = torch.eye(W.shape[1], dtype=W.dtype) + W.T @ W / sigma2
    A = torch.linalg.solve(prec, W.T)
    return A, -A @ b, 1.0 / torch.diagonal(prec)


def no_precision_solve(W, b, sigma2):
    A, c, var = right(W, b, sigma2)
    return W.T / sigma2, c, var


def offset_sign(W, b, sigma2):
    A, c, var = right(W, b, sigma2)
    return A, -c, var


def precision_as_variance(W, b, sigma2):
    A, c, var = right(W, b, sigma2)
    return A, c, 1.0 / var


def standard_deviation(W, b, sigma2):
    A, c, var = right(W, b, sigma2)
    return A, c, var.sqrt()


def variance_without_prior(W, b, sigma2):
    A, c, _ = right(W, b, sigma2)
    return A, c, sigma2 / torch.diagonal(W.T @ W)


@pytest.mark.parametrize(
    ("fn", "case", "diagnosis"),
    [
        (no_prior, "orthogonal columns", "the pseudo-inverse of W"),
        (sigma_not_squared, "orthogonal columns", "divides by sqrt(sigma2)"),
        (no_inverse_sigma2, "orthogonal columns", "lacks the factor 1 / sigma2"),
        (no_precision_solve, "orthogonal columns", "multiply by L^{-1}"),
        (offset_sign, "orthogonal columns", "the sign of c"),
        (no_offset, "orthogonal columns", "your c is zero"),
        (covariance_diagonal, "general W", "the diagonal of the covariance L^{-1}"),
        (precision_as_variance, "orthogonal columns", "a precision"),
        (standard_deviation, "orthogonal columns", "a standard deviation"),
        (variance_without_prior, "orthogonal columns", "your var leaves out the identity"),
    ],
)
def test_encoder_check_names_the_mistake(fn, case, diagnosis):
    fails(check_optimal_linear_encoder, fn, case, diagnosis)


# ---------------------------------------------------------------------------------------------
# the interactions of a function of binary latents (dgmlib.checks.harmonium, lecture 10)


def subset_sums(f):  # the zeta transform: sums over subsets, no signs (the inverse map)
    k = f.shape[-1].bit_length() - 1
    a = f.clone()
    for j in range(k):
        with_j = [i for i in range(2**k) if i >> j & 1]
        a[..., with_j] = a[..., with_j] + a[..., [i - 2**j for i in with_j]]
    return a


def sign_of_t(f):  # (-1)^|T| instead of (-1)^(|S| - |T|)
    k = f.shape[-1].bit_length() - 1
    parity = torch.tensor([(-1.0) ** bin(s).count("1") for s in range(2**k)], dtype=f.dtype)
    return interactions(f) * parity


def reversed_bits(f):  # each a_S stored at the index of S read with z_1 as the highest bit
    k = f.shape[-1].bit_length() - 1
    rev = [int(format(i, f"0{k}b")[::-1], 2) for i in range(2**k)]
    return interactions(f)[..., rev]


def walsh_hadamard(f):  # the Fourier expansion for z in {-1, 1}
    k = f.shape[-1].bit_length() - 1
    h = torch.ones(1, 1, dtype=f.dtype)
    for _ in range(k):
        h = torch.kron(torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=f.dtype), h)
    return f @ h.T / 2**k


@pytest.mark.parametrize(
    ("fn", "case", "diagnosis"),
    [
        (subset_sums, "f(0,0)", "no signs: that is the inverse map"),
        (sign_of_t, "f(0,0)", "your signs are (-1)^|T|"),
        (reversed_bits, "1 + 2 z_1 - z_3", "bit-reversed positions"),
        (walsh_hadamard, "f(0,0)", "Walsh-Hadamard"),
        (lambda f: f.clone(), "f(0,0)", "your a is f itself"),
    ],
)
def test_interactions_check_names_the_mistake(fn, case, diagnosis):
    fails(check_interactions, fn, case, diagnosis)


def test_interactions_reference_passes_with_one_line(capsys):
    check_interactions(interactions)
    assert capsys.readouterr().out == "check_interactions: all 6 cases pass.\n"
