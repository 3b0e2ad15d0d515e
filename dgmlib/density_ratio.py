r"""The density-ratio trick: a classifier's logit estimates ``log q1(x) / q2(x)``.

Label samples of ``q1`` with ``y = 1`` and equally many samples of ``q2`` with ``y = 0``. The
classifier ``D(x) = sigmoid(T(x))`` that minimises the logistic loss has
``D* = q1 / (q1 + q2)``, so its logit is the log density ratio,
``T*(x) = log q1(x) - log q2(x)``, and averages of functions of the logit over samples of ``q1``
estimate divergences:

* the mean of ``T`` estimates ``KL(q1 || q2) = E_q1[log q1/q2]`` (:func:`kl_from_logits`);
* the mean of ``exp(T) = D / (1 - D)`` estimates ``E_q1[q1/q2] = 1 + chi^2(q1 || q2)``
  (:func:`ratio_mean_from_logits`), which is *not* a KL divergence.

For two Gaussians the log ratio is a quadratic in ``x`` (:func:`gaussian_log_ratio_coefficients`),
so logistic regression on the features ``[1, x, x^2]`` (:func:`fit_logistic_regression`, Newton's
method in float64 with standard errors from the inverse Hessian) can recover it exactly.
Everything is in nats.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from dgmlib.layers import mlp
from dgmlib.stats import mean_se
from dgmlib.validation import check_int, check_positive, check_tensor

__all__ = [
    "LogisticFit",
    "RatioEstimator",
    "fit_logistic_regression",
    "gaussian_log_ratio_coefficients",
    "gaussian_ratio_mean",
    "kl_from_logits",
    "quadratic_features",
    "ratio_mean_from_logits",
]


class LogisticFit(NamedTuple):
    """A maximum-likelihood logistic regression: coefficients ``[F]``, their standard errors
    ``[F]`` (square roots of the diagonal of the inverse Hessian of the negative log-likelihood),
    and the number of Newton steps taken."""

    coef: Tensor
    se: Tensor
    n_steps: int


class RatioEstimator(nn.Module):
    """A classifier's logit ``T(x)``: an MLP from points ``[N, x_dim]`` to logits ``[N]``.

    Trained with the logistic loss on samples of ``q1`` (label 1) and ``q2`` (label 0), its logit
    estimates ``log q1(x) - log q2(x)``; a smooth activation (ELU) suits smooth log ratios.
    """

    def __init__(
        self,
        x_dim: int,
        hidden: int,
        n_hidden_layers: int = 2,
        activation: type[nn.Module] = nn.ELU,
    ) -> None:
        super().__init__()
        self.x_dim = check_int(x_dim, "x_dim", "RatioEstimator")
        self.net = mlp(x_dim, hidden, 1, n_hidden_layers, activation)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[N]`` for points ``x [N, x_dim]``."""
        check_tensor(x, "x", "RatioEstimator", min_ndim=2)
        if x.dim() != 2 or x.shape[1] != self.x_dim:
            raise ValueError(
                f"RatioEstimator: x must have shape [N, {self.x_dim}], got {tuple(x.shape)}"
            )
        return self.net(x).squeeze(-1)


def quadratic_features(x: Tensor) -> Tensor:
    """``[1, x, x^2]`` for points ``x [N]``: ``[N, 3]`` in ``x``'s dtype."""
    check_tensor(x, "x", "quadratic_features")
    if x.dim() != 1:
        raise ValueError(f"quadratic_features: x must have shape [N], got {tuple(x.shape)}")
    return torch.stack([torch.ones_like(x), x, x * x], dim=1)


def fit_logistic_regression(
    features: Tensor, labels: Tensor, max_steps: int = 100, tol: float = 1e-12
) -> LogisticFit:
    """Maximise ``sum_n [y_n log sigmoid(f_n . w) + (1 - y_n) log sigmoid(-f_n . w)]`` over ``w``.

    ``features [N, F]``, ``labels [N]`` in {0, 1}. Newton's method in float64 from ``w = 0``,
    stopped when the largest change of a coefficient falls below ``tol`` (a ValueError if that
    takes more than ``max_steps`` steps, e.g. for separable data, whose maximum is at infinity).
    """
    where = "fit_logistic_regression"
    check_tensor(features, "features", where, min_ndim=2)
    check_tensor(labels, "labels", where)
    check_int(max_steps, "max_steps", where)
    check_positive(tol, "tol", where)
    if features.dim() != 2 or labels.shape != features.shape[:1]:
        raise ValueError(
            f"{where}: features must be [N, F] and labels [N], got {tuple(features.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if not ((labels == 0) | (labels == 1)).all():
        raise ValueError(f"{where}: labels must be 0 or 1")
    f = features.to(torch.float64)
    y = labels.to(torch.float64)
    w = torch.zeros(f.shape[1], dtype=torch.float64)
    for step in range(1, max_steps + 1):
        p = torch.sigmoid(f @ w)
        grad = f.T @ (y - p)  # gradient of the log-likelihood
        hess = (f * (p * (1 - p))[:, None]).T @ f  # minus its Hessian
        try:
            delta = torch.linalg.solve(hess, grad)
        except torch.linalg.LinAlgError:
            break  # a singular Hessian: the fitted probabilities have saturated
        w = w + delta
        if float(delta.abs().max()) < tol:
            p = torch.sigmoid(f @ w)
            hess = (f * (p * (1 - p))[:, None]).T @ f
            se = torch.linalg.inv(hess).diagonal().sqrt()
            return LogisticFit(w, se, step)
    raise ValueError(
        f"{where}: Newton's method did not converge within max_steps={max_steps} steps (are the "
        "two classes separable?)"
    )


def gaussian_log_ratio_coefficients(
    mean1: float, std1: float, mean0: float, std0: float
) -> tuple[float, float, float]:
    """``(c0, c1, c2)`` with ``log N(x; mean1, std1^2) - log N(x; mean0, std0^2) = c0 + c1 x +
    c2 x^2`` for every ``x`` (nats)."""
    where = "gaussian_log_ratio_coefficients"
    std1, std0 = check_positive(std1, "std1", where), check_positive(std0, "std0", where)
    v1, v0 = std1**2, std0**2
    c2 = -0.5 / v1 + 0.5 / v0
    c1 = mean1 / v1 - mean0 / v0
    c0 = -0.5 * mean1**2 / v1 + 0.5 * mean0**2 / v0 + math.log(std0 / std1)
    return c0, c1, c2


def gaussian_ratio_mean(mean1: float, std1: float, mean0: float, std0: float) -> float:
    """``E_q1[q1/q2] = int q1^2 / q2 = 1 + chi^2(q1 || q2)`` for ``q1 = N(mean1, std1^2)``,
    ``q2 = N(mean0, std0^2)``: ``std0^2 / (std1 sqrt(2 std0^2 - std1^2)) exp((mean1 - mean0)^2 /
    (2 std0^2 - std1^2))``; infinite unless ``2 std0^2 > std1^2``."""
    where = "gaussian_ratio_mean"
    std1, std0 = check_positive(std1, "std1", where), check_positive(std0, "std0", where)
    denom = 2 * std0**2 - std1**2
    if denom <= 0:
        return math.inf
    return std0**2 / (std1 * math.sqrt(denom)) * math.exp((mean1 - mean0) ** 2 / denom)


def kl_from_logits(logits: Tensor) -> tuple[float, float]:
    """The density-ratio estimate of ``KL(q1 || q2)``: the mean of a discriminator's logits
    ``log D/(1 - D)`` at samples of ``q1`` (any shape), and its standard error, nats."""
    check_tensor(logits, "logits", "kl_from_logits", min_ndim=0)
    return mean_se(logits)


def ratio_mean_from_logits(logits: Tensor) -> tuple[float, float]:
    """The mean of ``D / (1 - D) = exp(logit)`` at samples of ``q1`` (any shape) and its standard
    error: an estimate of ``E_q1[q1/q2] = 1 + chi^2(q1 || q2)`` (not of a KL divergence)."""
    check_tensor(logits, "logits", "ratio_mean_from_logits", min_ndim=0)
    return mean_se(logits.to(torch.float64).exp())
