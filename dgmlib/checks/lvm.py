"""Checks of lecture 01 (latent-variable models): the Gaussian ELBO under pPCA, the importance
sampling estimate of log p(x) and one EM step of pPCA."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.distributions import MultivariateNormal, kl_divergence

from dgmlib.checks.common import as_float64, call_student, compare, diagnose, fail, fmt, passed
from dgmlib.distributions import log_mean_exp
from dgmlib.models.ppca import PPCA

__all__ = ["check_elbo_gaussian", "check_em_step", "check_log_importance_estimate"]

RTOL = 1e-6
ATOL = 1e-8


@dataclass
class Case:
    """One test case: a name shown to the student, the arguments, a hint if it fails."""

    name: str
    args: tuple[Any, ...]
    hint: str = ""
    diagnoses: Sequence[tuple[Callable[..., Any], str]] = field(default_factory=tuple)


def _compare_diagnosed(
    check: str, case: Case, got: Tensor, expected: Tensor, what: str, default: str
) -> None:
    """:func:`compare` ``got`` with ``expected``; the hint names the known mistake it matches."""
    mistakes = [(wrong(*case.args), message) for wrong, message in case.diagnoses]
    hint = diagnose(got, mistakes, case.hint or default, rtol=RTOL, atol=ATOL)
    compare(check, case.name, got, expected, what=what, hint=hint, rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------------------------------------
# The ELBO of a Gaussian q(z) under probabilistic PCA


def _random_ppca(d: int, q: int, sigma2: float, g: torch.Generator) -> PPCA:
    """A pPCA model with N(0, 1) loadings and mean, in float64."""
    W = torch.randn(d, q, generator=g, dtype=torch.float64)
    mu = torch.randn(d, generator=g, dtype=torch.float64)
    return PPCA(W=W, mu=mu, sigma2=sigma2)


def _random_spd(q: int, g: torch.Generator) -> Tensor:
    """A random symmetric positive-definite q x q matrix (well conditioned), float64."""
    A = torch.randn(q, q, generator=g, dtype=torch.float64)
    return A @ A.T / q + 0.3 * torch.eye(q, dtype=torch.float64)


def _elbo_reference(model: PPCA, x: Tensor, m: Tensor, S: Tensor) -> Tensor:
    """Closed-form ELBO of q = N(m, S) at one point x, as a 0-d tensor (nats)."""
    return model.elbo(x[None], MultivariateNormal(m, covariance_matrix=S))[0]


def _kl_reference(m: Tensor, S: Tensor) -> Tensor:
    """KL(N(m, S) || N(0, I)) as a 0-d tensor (nats), by torch.distributions."""
    q = MultivariateNormal(m, covariance_matrix=S)
    prior = MultivariateNormal(
        torch.zeros_like(m), covariance_matrix=torch.eye(len(m), dtype=m.dtype)
    )
    return kl_divergence(q, prior)


def _elbo_without_logdet(model: PPCA, x: Tensor, m: Tensor, S: Tensor) -> Tensor:
    """A typical mistake: the -1/2 log det S term of the KL is missing."""
    return _elbo_reference(model, x, m, S) - 0.5 * torch.logdet(S)


def _elbo_kl_added(model: PPCA, x: Tensor, m: Tensor, S: Tensor) -> Tensor:
    """A typical mistake: the KL to the prior is added instead of subtracted."""
    return _elbo_reference(model, x, m, S) + 2 * _kl_reference(m, S)


def _elbo_kl_without_half(model: PPCA, x: Tensor, m: Tensor, S: Tensor) -> Tensor:
    """A typical mistake: the KL without its factor 1/2 (tr S + m^T m - k - log det S)."""
    return _elbo_reference(model, x, m, S) - _kl_reference(m, S)


def _elbo_kl_without_k(model: PPCA, x: Tensor, m: Tensor, S: Tensor) -> Tensor:
    """A typical mistake: the constant -k of the KL is missing."""
    return _elbo_reference(model, x, m, S) - 0.5 * len(m)


def _elbo_without_trace(model: PPCA, x: Tensor, m: Tensor, S: Tensor) -> Tensor:
    """A typical mistake: the tr(W S W^T) / (2 sigma2) term of E_q log p(x|z) is missing."""
    trace = (model.W.T @ model.W * S).sum() / (2 * model.sigma2)
    return _elbo_reference(model, x, m, S) + trace


def _elbo_trace_of_s(model: PPCA, x: Tensor, m: Tensor, S: Tensor) -> Tensor:
    """A typical mistake: tr(S) in E_q log p(x|z) where tr(W S W^T) belongs."""
    wrong = torch.trace(S) - (model.W.T @ model.W * S).sum()
    return _elbo_reference(model, x, m, S) - wrong / (2 * model.sigma2)


def _elbo_sigma_for_variance(model: PPCA, x: Tensor, m: Tensor, S: Tensor) -> Tensor:
    """A typical mistake: -d/2 log(2 pi sigma) in the normaliser, with sigma2 read as sigma."""
    d = model.W.shape[0]
    return _elbo_reference(model, x, m, S) + 0.25 * d * torch.log(torch.as_tensor(model.sigma2))


def _elbo_without_mu(model: PPCA, x: Tensor, m: Tensor, S: Tensor) -> Tensor:
    """A typical mistake: the residual x - W m without the mean mu of the model."""
    r_right, r_wrong = x - model.mu - model.W @ m, x - model.W @ m
    return _elbo_reference(model, x, m, S) - (r_wrong @ r_wrong - r_right @ r_right) / (
        2 * model.sigma2
    )


def check_elbo_gaussian(fn: Callable[[PPCA, Tensor, Tensor, Tensor], Any]) -> None:
    """Check ``fn(model, x, m, S)``: the closed-form ELBO (nats) of q(z) = N(m, S) at x [d]."""
    check = "check_elbo_gaussian"
    g = torch.Generator().manual_seed(1)
    model = _random_ppca(d=5, q=2, sigma2=0.5, g=g)
    x = model.sample(1, g)[0]
    post = model.posterior(x[None])
    diagnoses = (
        (_elbo_without_logdet, "the KL to the prior needs the -1/2 log det S term."),
        (_elbo_kl_added, "the ELBO subtracts KL(q || p(z)); check its sign."),
        (
            _elbo_kl_without_half,
            "the KL is missing its factor 1/2: KL = (tr S + m^T m - k - log det S) / 2.",
        ),
        (
            _elbo_kl_without_k,
            "the KL is missing the constant -k (k = the latent dimension): at q = p(z) it is 0.",
        ),
        (
            _elbo_without_trace,
            "E_q log p(x|z) also contains -tr(W S W^T) / (2 sigma2): the spread of q matters.",
        ),
        (
            _elbo_trace_of_s,
            "the spread of q enters E_q log p(x|z) through tr(W S W^T), not tr(S): z is mapped "
            "by W before it meets the noise.",
        ),
        (
            _elbo_sigma_for_variance,
            "model.sigma2 is the noise variance sigma^2: the normaliser is "
            "-d/2 log(2 pi sigma2), not -d/2 log(2 pi sqrt(sigma2)).",
        ),
        (
            _elbo_without_mu,
            "the mean of p(x|z) is W z + mu: the residual is x - mu - W m (subtract model.mu).",
        ),
    )
    general = (
        "ELBO = E_q[log p(x|z)] - KL(q || p(z)) with E_q[log p(x|z)] = -d/2 log(2 pi sigma2) "
        "- (|x - mu - W m|^2 + tr(W S W^T)) / (2 sigma2) and "
        "KL = (tr S + m^T m - q - log det S) / 2."
    )
    zeros, eye = torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)
    cases = [
        Case("q = prior N(0, I)", (model, x, zeros, eye), diagnoses=diagnoses),
        Case(
            "diagonal S",
            (
                model,
                x,
                torch.tensor([0.5, -1.0], dtype=torch.float64),
                torch.diag(torch.tensor([0.2, 1.7], dtype=torch.float64)),
            ),
            diagnoses=diagnoses,
        ),
        Case(
            "full S",
            (model, x, torch.randn(2, generator=g, dtype=torch.float64), _random_spd(2, g)),
            diagnoses=diagnoses,
        ),
        Case(
            "q = exact posterior (ELBO = log p(x))",
            (model, x, post.loc[0], post.covariance_matrix[0]),
            hint="at the exact posterior the ELBO equals log p(x).",
            diagnoses=diagnoses,
        ),
    ]
    for case in cases:
        got = as_float64(check, case.name, call_student(check, case.name, fn, *case.args))
        _compare_diagnosed(check, case, got, _elbo_reference(*case.args), "the ELBO", general)
    passed(check, len(cases))


# ---------------------------------------------------------------------------------------------
# A numerically stable importance-sampling estimate of log p(x)


def _is_reference(log_px_given_z: Tensor, log_pz: Tensor, log_qz: Tensor) -> Tensor:
    """log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k), reducing dim 0."""
    return log_mean_exp(log_px_given_z + log_pz - log_qz, dim=0)


def _is_sum_not_mean(log_px_given_z: Tensor, log_pz: Tensor, log_qz: Tensor) -> Tensor:
    """A typical mistake: sum of the weights instead of their mean (off by log K)."""
    return torch.logsumexp(log_px_given_z + log_pz - log_qz, dim=0)


def _is_sign_of_q(log_px_given_z: Tensor, log_pz: Tensor, log_qz: Tensor) -> Tensor:
    """A typical mistake: multiplying by q(z) instead of dividing."""
    return log_mean_exp(log_px_given_z + log_pz + log_qz, dim=0)


def _is_mean_of_logs(log_px_given_z: Tensor, log_pz: Tensor, log_qz: Tensor) -> Tensor:
    """A typical mistake: averaging log-weights (that is the ELBO estimate, not log p(x))."""
    return (log_px_given_z + log_pz - log_qz).mean(0)


def _is_without_prior(log_px_given_z: Tensor, log_pz: Tensor, log_qz: Tensor) -> Tensor:
    """A typical mistake: the weight p(x|z) / q(z), without the prior p(z)."""
    return log_mean_exp(log_px_given_z - log_qz, dim=0)


def _is_last_dim(log_px_given_z: Tensor, log_pz: Tensor, log_qz: Tensor) -> Tensor:
    """A typical mistake: reducing the last dimension (the batch) instead of dim 0 (the K)."""
    return log_mean_exp(log_px_given_z + log_pz - log_qz, dim=-1)


def check_log_importance_estimate(fn: Callable[[Tensor, Tensor, Tensor], Any]) -> None:
    """Check ``fn(log_px_given_z, log_pz, log_qz)`` -> log((1/K) sum_k w_k), reducing dim 0.

    The three inputs have shape [K, ...] (K samples z_k ~ q per data point); the result has
    shape [...]: the importance-sampling estimate of log p(x) in nats.
    """
    check = "check_log_importance_estimate"
    g = torch.Generator().manual_seed(2)

    def logs(*shape: int, offset: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
        """Three random float64 log-densities of the given shape, the first shifted."""
        t = [torch.randn(*shape, generator=g, dtype=torch.float64) for _ in range(3)]
        return (t[0] + offset, t[1] - 1.0, t[2])

    diagnoses = (
        (
            _is_sum_not_mean,
            "average the K weights instead of summing them (a difference of log K).",
        ),
        (_is_sign_of_q, "the importance weight is p(x|z) p(z) / q(z): subtract log q(z)."),
        (
            _is_without_prior,
            "the importance weight is p(x|z) p(z) / q(z): the prior term log p(z) is missing.",
        ),
        (
            _is_last_dim,
            "reduce dim 0 (the K samples), not the last dimension (the data points): the "
            "result has one value per data point.",
        ),
        (
            _is_mean_of_logs,
            "the estimate is the log of the mean weight, not the mean of the log-weights "
            "(that would be an ELBO estimate).",
        ),
    )
    stable = (
        "exp() of log-weights this large under- or overflows in floating point: subtract the "
        "largest log-weight before exponentiating (the log-sum-exp trick), or use torch.logsumexp."
    )
    general = "log p(x) ~ log (1/K) sum_k exp(log p(x|z_k) + log p(z_k) - log q(z_k))."
    cases = [
        Case(
            "K = 1",
            logs(1),
            hint="with one sample the estimate is the single log-weight.",
            diagnoses=diagnoses,
        ),
        Case("K = 5, one data point", logs(5), diagnoses=diagnoses),
        Case("K = 100, a batch of 3 data points", logs(100, 3), diagnoses=diagnoses),
        Case(
            "log-weights near -1000", logs(50, 2, offset=-1000.0), hint=stable, diagnoses=diagnoses
        ),
        Case("log-weights near +800", logs(50, offset=800.0), hint=stable, diagnoses=diagnoses),
    ]
    for case in cases:
        got = as_float64(
            check, case.name, call_student(check, case.name, fn, *case.args), "the estimate"
        )
        expected = _is_reference(*case.args)
        if torch.isinf(got).any():
            fail(
                check,
                case.name,
                f"the estimate is infinite (expected {fmt(expected)}).",
                case.hint or stable,
            )
        _compare_diagnosed(check, case, got, expected, "the estimate", general)
    passed(check, len(cases))


# ---------------------------------------------------------------------------------------------
# One EM step for probabilistic PCA


def _em_reference(X: Tensor, W: Tensor, mu: Tensor, sigma2: float) -> tuple[Tensor, Tensor]:
    """(W_new, sigma2_new) of one Tipping-Bishop EM step."""
    new = PPCA(W=W, mu=mu, sigma2=sigma2).em_step(X)
    return new.W, new.sigma2


def _em_variant(
    X: Tensor,
    W: Tensor,
    mu: Tensor,
    sigma2: float,
    *,
    cov_count: int | None = None,
    noise_in_m: bool = True,
    old_w_in_sigma2: bool = False,
    per_dimension: bool = True,
) -> tuple[Tensor, Tensor]:
    """One EM step written out, with switches for the typical mistakes (defaults: correct).

    ``cov_count``: how many times sigma2 M^{-1} enters sum_n E[z_n z_n^T] (N when None);
    ``noise_in_m``: M = W^T W + sigma2 I (else W^T W); ``old_w_in_sigma2``: sigma2_new from the
    old W; ``per_dimension``: sigma2_new divided by N d (else by N).
    """
    N, d = X.shape
    k = W.shape[1]
    Xc = X - mu
    M = W.T @ W + (sigma2 if noise_in_m else 0.0) * torch.eye(k, dtype=W.dtype)
    Ez = torch.linalg.solve(M, (Xc @ W).T).T  # [N, k]
    n_cov = N if cov_count is None else cov_count
    Ezz = n_cov * sigma2 * torch.linalg.inv(M) + Ez.T @ Ez  # sum_n E[z_n z_n^T]
    W_new = torch.linalg.solve(Ezz, (Xc.T @ Ez).T).T
    W_s = W if old_w_in_sigma2 else W_new
    sq = Xc.pow(2).sum() - 2 * (W_s * (Xc.T @ Ez)).sum() + (Ezz * (W_s.T @ W_s)).sum()
    return W_new, sq / (N * d if per_dimension else N)


def check_em_step(fn: Callable[[Tensor, Tensor, Tensor, float], Any]) -> None:
    """Check ``fn(X, W, mu, sigma2) -> (W_new, sigma2_new)``: one pPCA EM step, mu = mean(X)."""
    check = "check_em_step"
    g = torch.Generator().manual_seed(3)
    general = (
        "E-step: M = W^T W + sigma2 I, E[z_n] = M^{-1} W^T (x_n - mu), "
        "E[z_n z_n^T] = sigma2 M^{-1} + E[z_n] E[z_n]^T. M-step: W_new = "
        "[sum_n (x_n - mu) E[z_n]^T] [sum_n E[z_n z_n^T]]^{-1}, and sigma2_new = "
        "(1 / (N d)) sum_n (|x_n - mu|^2 - 2 E[z_n]^T W_new^T (x_n - mu) "
        "+ tr(E[z_n z_n^T] W_new^T W_new))."
    )
    diagnoses = (
        (
            lambda *a: _em_variant(*a, cov_count=0)[0],
            "E[z_n z_n^T] is sigma2 M^{-1} + E[z_n] E[z_n]^T: the posterior covariance term "
            "is missing.",
        ),
        (
            lambda *a: _em_variant(*a, cov_count=1)[0],
            "sum_n E[z_n z_n^T] = N sigma2 M^{-1} + sum_n E[z_n] E[z_n]^T: the posterior "
            "covariance is added once per data point (N times), not once.",
        ),
        (
            lambda *a: _em_variant(*a, noise_in_m=False)[0],
            "M = W^T W + sigma2 I: the noise term sigma2 I of M is missing.",
        ),
    )
    sigma2_diagnoses = (
        (
            lambda *a: _em_variant(*a, per_dimension=False)[1],
            "sigma2_new is an average over the N d entries of X: divide by N d, not by N.",
        ),
        (
            lambda *a: _em_variant(*a, old_w_in_sigma2=True)[1],
            "the M-step for sigma2 uses the new loadings: write it with W_new, not the old W.",
        ),
    )
    cases = []
    for name, (n, d, q) in {
        "N = 50, d = 3, q = 1": (50, 3, 1),
        "N = 200, d = 6, q = 2": (200, 6, 2),
        "N = 100, d = 8, q = 3, far from the optimum": (100, 8, 3),
    }.items():
        X = _random_ppca(d, q, 0.4, g).sample(n, g)
        W0 = 0.5 * torch.randn(d, q, generator=g, dtype=torch.float64)
        cases.append(Case(name, (X, W0, X.mean(0), 0.7 if q < 3 else 3.0), diagnoses=diagnoses))
    for case in cases:
        out = call_student(check, case.name, fn, *case.args)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            fail(check, case.name, f"return a pair (W_new, sigma2_new), got {type(out).__name__}.")
        W_exp, s_exp = _em_reference(*case.args)
        W_got = as_float64(check, case.name, out[0], "W_new")
        s_got = as_float64(check, case.name, out[1], "sigma2_new")
        _compare_diagnosed(check, case, W_got, W_exp, "W_new", general)
        s_case = Case(case.name, case.args, diagnoses=sigma2_diagnoses)
        _compare_diagnosed(check, s_case, s_got, s_exp, "sigma2_new", general)
    passed(check, len(cases))
