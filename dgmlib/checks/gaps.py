"""Checks of lecture 10 (VAE approximation errors): the best linear diagonal-Gaussian encoder of a
linear Gaussian decoder."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from dgmlib.checks.common import call_student, compare, diagnose, fail, passed

__all__ = ["check_optimal_linear_encoder"]

DT = torch.float64


def _optimal_linear_encoder_reference(W: Tensor, b: Tensor, sigma2: float) -> tuple[Tensor, ...]:
    """``(A [Z, D], c [Z], var [Z])`` of q*(z|x) = N(A x + c, diag var) for p(x|z) = N(Wz+b, s2 I).

    With posterior precision ``L = I + W^T W / sigma2``: ``A = L^{-1} W^T / sigma2``,
    ``c = -A b`` and ``var = 1 / diag(L)`` (the best diagonal q in KL(q || p(z|x))).
    """
    eye = torch.eye(W.shape[1], dtype=W.dtype)
    prec = eye + W.T @ W / sigma2
    A = torch.linalg.solve(prec, W.T) / sigma2
    return A, -A @ b, 1.0 / torch.diagonal(prec)


def _encoder_mistakes(W: Tensor, b: Tensor, sigma2: float) -> dict[str, list[tuple[Tensor, str]]]:
    """What typical wrong formulas give for ``A``, ``c`` and ``var``, and what to say."""
    eye = torch.eye(W.shape[1], dtype=W.dtype)
    prec = eye + W.T @ W / sigma2
    A = torch.linalg.solve(prec, W.T) / sigma2
    A_sd = _optimal_linear_encoder_reference(W, b, sigma2**0.5)[0]
    no_prior = W.T @ W / sigma2
    return {
        "A": [
            (
                torch.linalg.solve(no_prior, W.T) / sigma2,
                "your A leaves out the identity in L = I + W^T W / sigma2: the identity comes "
                "from the prior N(0, I) (without it A is the pseudo-inverse of W).",
            ),
            (
                A_sd,
                "your A divides by sqrt(sigma2): sigma2 is the noise VARIANCE, divide by it "
                "as it is.",
            ),
            (
                torch.linalg.solve(prec, W.T),
                "your A lacks the factor 1 / sigma2: A = L^{-1} W^T / sigma2.",
            ),
            (W.T / sigma2, "your A is W^T / sigma2: multiply by L^{-1} (solve with L)."),
            (
                torch.linalg.solve(eye + W.T @ W * sigma2, W.T) * sigma2,
                "your A multiplies by sigma2 where it should divide: L = I + W^T W / sigma2.",
            ),
        ],
        "c": [
            (A @ b, "the sign of c: the posterior mean is A (x - b), so c = -A b, not +A b."),
            (torch.zeros_like(A @ b), "your c is zero: the offset b shifts the mean, c = -A b."),
        ],
        "var": [
            (
                torch.diagonal(torch.linalg.inv(prec)),
                "your var is the diagonal of the covariance L^{-1}, the exact posterior's "
                "marginal variances, not the best diagonal q in KL(q || p).",
            ),
            (torch.diagonal(prec), "your var is L_ii, a precision: invert it, var_i = 1 / L_ii."),
            (
                torch.diagonal(prec).rsqrt(),
                "your var is 1 / sqrt(L_ii), a standard deviation: var_i = 1 / L_ii.",
            ),
            (
                1.0 / torch.diagonal(no_prior),
                "your var leaves out the identity in L = I + W^T W / sigma2 (from the prior).",
            ),
            (
                1.0 / torch.diagonal(eye + W.T @ W / sigma2**0.5),
                "your var divides W^T W by sqrt(sigma2): sigma2 is the variance.",
            ),
        ],
    }


def check_optimal_linear_encoder(
    fn: Callable[[Tensor, Tensor, float], tuple[Tensor, Tensor, Tensor]],
) -> None:
    """Check ``fn(W [D, Z], b [D], sigma2) -> (A [Z, D], c [Z], var [Z])``: the encoder
    ``q(z|x) = N(A x + c, diag(var))`` closest in KL(q || p(z|x)) to the exact posterior of
    ``z ~ N(0, I)``, ``x|z ~ N(W z + b, sigma2 I)``."""
    check = "check_optimal_linear_encoder"
    g = torch.Generator().manual_seed(10)
    W_general = torch.randn(6, 3, generator=g, dtype=DT)
    Q, _ = torch.linalg.qr(torch.randn(5, 2, generator=g, dtype=DT))
    W_orth = Q * torch.tensor([2.0, 0.7], dtype=DT)  # orthogonal columns: posterior is diagonal
    b6 = torch.randn(6, generator=g, dtype=DT)
    b5 = torch.randn(5, generator=g, dtype=DT)
    mean_hint = (
        "the posterior precision is L = I + W^T W / sigma2 (the identity comes from the prior); "
        "the posterior mean is L^{-1} W^T (x - b) / sigma2, so A = L^{-1} W^T / sigma2 and "
        "c = -A b."
    )
    var_hint = (
        "the best *diagonal* Gaussian in KL(q || p) matches the diagonal of the precision: "
        "var_i = 1 / L_ii, not the diagonal of the covariance L^{-1} (they agree only when "
        "W^T W is diagonal)."
    )
    cases = [
        ("orthogonal columns, D = 5, Z = 2, sigma2 = 0.3", (W_orth, b5, 0.3)),
        ("general W, D = 6, Z = 3, sigma2 = 0.5", (W_general, b6, 0.5)),
        ("general W, large noise sigma2 = 4", (W_general, b6, 4.0)),
        ("zero offset b, sigma2 = 0.1", (W_general, torch.zeros(6, dtype=DT), 0.1)),
    ]
    for case, (W, b, s2) in cases:
        got = call_student(check, case, fn, W.clone(), b.clone(), s2)
        if not isinstance(got, (tuple, list)) or len(got) != 3:
            fail(check, case, "expected a tuple (A, c, var).", mean_hint)
        A_ref, c_ref, var_ref = _optimal_linear_encoder_reference(W, b, s2)
        mistakes = _encoder_mistakes(W, b, s2)
        for name, value, ref, hint in (
            ("A", got[0], A_ref, mean_hint),
            ("c", got[1], c_ref, mean_hint),
            ("var", got[2], var_ref, var_hint),
        ):
            hint = diagnose(value, mistakes[name], hint, atol=1e-8, and_default=True)
            compare(check, case, value, ref, hint=hint, rtol=1e-6, atol=1e-8, what=name)
    passed(check, len(cases))
