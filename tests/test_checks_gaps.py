"""dgmlib.checks.gaps (lecture 10): the reference passes with one line, a stub is "not implemented
yet", and typical mistakes are rejected with the case that catches them."""

from __future__ import annotations

import pytest
import torch

from dgmlib.checks.gaps import check_optimal_linear_encoder


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


def stub(W, b, sigma2):
    raise NotImplementedError


def test_reference_passes_with_one_line(capsys):
    check_optimal_linear_encoder(right)
    out = capsys.readouterr().out
    assert out == "check_optimal_linear_encoder: all 4 cases pass.\n"


def test_stub_is_not_implemented():
    with pytest.raises(AssertionError, match="not implemented yet"):
        check_optimal_linear_encoder(stub)


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
