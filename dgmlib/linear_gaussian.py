"""The linear-Gaussian two-layer chain ``z2 -> z1 -> x``: a hierarchical model in which
``log p(x)``, the posterior and every per-layer term of the ELBO have closed forms.

Model (float64 throughout)::

    z2 ~ N(0, I_k2),   z1 | z2 ~ N(A z2 + a, S1),   x | z1 ~ N(B z1 + b, S0)

with ``A [k1, k2]``, ``B [d, k1]`` and covariances ``S1 [k1, k1]``, ``S0 [d, d]``. Approximate
posteriors in the two factorizations of a hierarchical VAE, with full covariances and linear
conditionals, so that the exact posterior is one of them:

* :class:`BottomUpQ` -- ``q(z1 | x) = N(m1, P1)``, ``q(z2 | z1) = N(C z1 + c, P2)``;
* :class:`TopDownQ` -- ``q(z2 | x) = N(m2, P2)``, ``q(z1 | z2, x) = N(D z2 + d, P1)``.

Offsets (``m1``, ``c``, ``m2``, ``d``) are ``[N, k]`` for ``N`` data points; matrices are shared.
:func:`elbo_terms` gives each factorization's per-layer terms in closed form (nats, ``[N]``):
``log_px_z`` = E_q log p(x | z1), ``kl_z1``, ``kl_z2`` (defined as in
:mod:`dgmlib.models.hierarchical`) and ``elbo = log_px_z - kl_z1 - kl_z2``. Latent vectors are
ordered ``(z2, z1)`` wherever the two layers are joined.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor
from torch.distributions import MultivariateNormal, Normal

from dgmlib.validation import check_int, check_tensor

__all__ = [
    "BottomUpQ",
    "LinearGaussianChain",
    "TopDownQ",
    "bottom_up_factors",
    "elbo_terms",
    "q_joint",
    "sampled_terms",
    "top_down_factors",
]

DT = torch.float64


def _sym(M: Tensor) -> Tensor:
    """The symmetric part of a square matrix (removes round-off asymmetry)."""
    return 0.5 * (M + M.transpose(-1, -2))


def _quad(v: Tensor, P: Tensor) -> Tensor:
    """``v^T P v`` for rows ``v [N, k]``: ``[N]``."""
    return ((v @ P) * v).sum(-1)


class BottomUpQ(NamedTuple):
    """``q(z1 | x) = N(m1, P1)`` and ``q(z2 | z1) = N(C z1 + c, P2)``."""

    m1: Tensor  # [N, k1]
    P1: Tensor  # [k1, k1]
    C: Tensor  # [k2, k1]
    c: Tensor  # [N, k2] (or [k2])
    P2: Tensor  # [k2, k2]


class TopDownQ(NamedTuple):
    """``q(z2 | x) = N(m2, P2)`` and ``q(z1 | z2, x) = N(D z2 + d, P1)``."""

    m2: Tensor  # [N, k2]
    P2: Tensor  # [k2, k2]
    D: Tensor  # [k1, k2]
    d: Tensor  # [N, k1]
    P1: Tensor  # [k1, k1]


@dataclass(frozen=True)
class LinearGaussianChain:
    """``z2 ~ N(0, I)``, ``z1 | z2 ~ N(A z2 + a, S1)``, ``x | z1 ~ N(B z1 + b, S0)``."""

    A: Tensor
    a: Tensor
    S1: Tensor
    B: Tensor
    b: Tensor
    S0: Tensor

    def __post_init__(self) -> None:
        for name in ("A", "a", "S1", "B", "b", "S0"):
            check_tensor(getattr(self, name), name, "LinearGaussianChain")
        k1, k2 = self.A.shape
        d = self.B.shape[0]
        shapes = {
            "a": (k1,),
            "S1": (k1, k1),
            "B": (d, k1),
            "b": (d,),
            "S0": (d, d),
        }
        for name, shape in shapes.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(
                    f"LinearGaussianChain: {name} must have shape {shape} (A is {k1} x {k2}), "
                    f"got {tuple(getattr(self, name).shape)}"
                )

    @classmethod
    def random(
        cls,
        k2: int,
        k1: int,
        d: int,
        generator: torch.Generator,
        noise1: float = 0.5,
        noise0: float = 0.3,
    ) -> LinearGaussianChain:
        """Random weights ``N(0, 1)``, offsets ``N(0, 0.25)``, diagonal noise covariances with
        standard deviations drawn in ``[1/2, 3/2]`` times ``noise1`` and ``noise0``."""
        for v, name in ((k2, "k2"), (k1, "k1"), (d, "d")):
            check_int(v, name, "LinearGaussianChain.random")

        def randn(*shape: int) -> Tensor:
            return torch.randn(shape, generator=generator, dtype=DT)

        def diag_cov(k: int, scale: float) -> Tensor:
            sd = scale * (0.5 + torch.rand(k, generator=generator, dtype=DT))
            return torch.diag(sd**2)

        return cls(
            A=randn(k1, k2),
            a=0.5 * randn(k1),
            S1=diag_cov(k1, noise1),
            B=randn(d, k1),
            b=0.5 * randn(d),
            S0=diag_cov(d, noise0),
        )

    @property
    def dims(self) -> tuple[int, int, int]:
        """``(k2, k1, d)``."""
        return self.A.shape[1], self.A.shape[0], self.B.shape[0]

    # -- the joint and its marginals ----------------------------------------------------------
    def joint(self) -> MultivariateNormal:
        """The Gaussian of ``(z2, z1, x)``, ``[k2 + k1 + d]``."""
        k2, k1, d = self.dims
        A, B = self.A, self.B
        cov_z1 = A @ A.T + self.S1
        mean = torch.cat([torch.zeros(k2, dtype=DT), self.a, B @ self.a + self.b])
        cov = torch.zeros(k2 + k1 + d, k2 + k1 + d, dtype=DT)
        i1, ix = slice(k2, k2 + k1), slice(k2 + k1, None)
        cov[:k2, :k2] = torch.eye(k2, dtype=DT)
        cov[i1, :k2] = A
        cov[i1, i1] = cov_z1
        cov[ix, :k2] = B @ A
        cov[ix, i1] = B @ cov_z1
        cov[ix, ix] = B @ cov_z1 @ B.T + self.S0
        cov = torch.tril(cov) + torch.tril(cov, -1).T
        return MultivariateNormal(mean, covariance_matrix=cov)

    def marginal_x(self) -> MultivariateNormal:
        """``p(x) = N(B a + b, B (A A^T + S1) B^T + S0)``."""
        cov = self.B @ (self.A @ self.A.T + self.S1) @ self.B.T + self.S0
        return MultivariateNormal(self.B @ self.a + self.b, covariance_matrix=_sym(cov))

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` for rows ``x [N, d]``: ``[N]``, nats."""
        return self.marginal_x().log_prob(self._check_x(x, "log_prob"))

    def log_joint(self, x: Tensor, z1: Tensor, z2: Tensor) -> Tensor:
        """``log p(x | z1) + log p(z1 | z2) + log p(z2)`` (rows broadcast): ``[N]``, nats."""
        k2 = self.dims[0]
        lp2 = MultivariateNormal(torch.zeros(k2, dtype=DT), torch.eye(k2, dtype=DT)).log_prob(z2)
        lp1 = MultivariateNormal(z2 @ self.A.T + self.a, covariance_matrix=self.S1).log_prob(z1)
        lpx = MultivariateNormal(z1 @ self.B.T + self.b, covariance_matrix=self.S0).log_prob(x)
        return lpx + lp1 + lp2

    def posterior(self, x: Tensor) -> MultivariateNormal:
        """``p(z2, z1 | x)`` by conditioning the joint Gaussian: batch ``[N]``, event
        ``[k2 + k1]``."""
        x = self._check_x(x, "posterior")
        k = sum(self.dims[:2])
        joint = self.joint()
        mu, S = joint.loc, joint.covariance_matrix
        gain = torch.linalg.solve(S[k:, k:], S[k:, :k]).T  # S_zx S_xx^-1
        mean = mu[:k] + (x - mu[k:]) @ gain.T
        cov = _sym(S[:k, :k] - gain @ S[k:, :k])
        return MultivariateNormal(mean, covariance_matrix=cov.expand(len(x), k, k))

    # -- the generative conditionals that inference can reuse ---------------------------------
    def z2_given_z1(self) -> tuple[Tensor, Tensor, Tensor]:
        """The generative ``p(z2 | z1) = N(C z1 + c, P)`` (Gaussian conditioning of the prior):
        ``(C [k2, k1], c [k2], P [k2, k2])``."""
        k2 = self.dims[0]
        C = torch.linalg.solve(self.A @ self.A.T + self.S1, self.A).T
        return C, -C @ self.a, _sym(torch.eye(k2, dtype=DT) - C @ self.A)

    def ladder_posterior(self, x: Tensor) -> TopDownQ:
        """The exact posterior in top-down form, by messages instead of conditioning:
        ``p(z2 | x) ∝ p(z2) p(x | z2)`` with the backward message
        ``p(x | z2) = N(x; B (A z2 + a) + b, B S1 B^T + S0)``, and
        ``p(z1 | z2, x) ∝ p(z1 | z2) p(x | z1)``, the precision-weighted product of the prior
        ``N(A z2 + a, S1)`` with the likelihood of ``z1``."""
        x = self._check_x(x, "ladder_posterior")
        k2 = self.dims[0]
        BA = self.B @ self.A
        R = self.B @ self.S1 @ self.B.T + self.S0  # covariance of the message p(x | z2)
        prec2 = torch.eye(k2, dtype=DT) + BA.T @ torch.linalg.solve(R, BA)
        P2 = _sym(torch.linalg.inv(prec2))
        resid2 = x - (self.B @ self.a + self.b)
        m2 = torch.linalg.solve(R, resid2.T).T @ BA @ P2
        S1_inv = torch.linalg.inv(self.S1)
        prec1 = S1_inv + self.B.T @ torch.linalg.solve(self.S0, self.B)
        P1 = _sym(torch.linalg.inv(prec1))
        D = P1 @ S1_inv @ self.A
        d = (S1_inv @ self.a + torch.linalg.solve(self.S0, (x - self.b).T).T @ self.B) @ P1
        return TopDownQ(m2, P2, D, d, P1)

    def sample(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``n`` ancestral draws ``(z2 [n, k2], z1 [n, k1], x [n, d])``."""
        check_int(n, "n", "LinearGaussianChain.sample")
        k2, k1, d = self.dims

        def noise(k: int, S: Tensor) -> Tensor:
            eps = torch.randn(n, k, generator=generator, dtype=DT)
            return eps @ torch.linalg.cholesky(S).T

        z2 = noise(k2, torch.eye(k2, dtype=DT))
        z1 = z2 @ self.A.T + self.a + noise(k1, self.S1)
        x = z1 @ self.B.T + self.b + noise(d, self.S0)
        return z2, z1, x

    def _check_x(self, x: Tensor, where: str) -> Tensor:
        check_tensor(x, "x", f"LinearGaussianChain.{where}", min_ndim=2)
        if x.dim() != 2 or x.shape[1] != self.dims[2]:
            raise ValueError(
                f"LinearGaussianChain.{where}: x must have shape [N, {self.dims[2]}], got "
                f"{tuple(x.shape)}"
            )
        return x


# --------------------------------------------------------------------------------------------
# The two factorizations of a Gaussian over (z2, z1)
# --------------------------------------------------------------------------------------------


def bottom_up_factors(joint: MultivariateNormal, k2: int) -> BottomUpQ:
    """Split a Gaussian over ``(z2, z1)`` (batch ``[N]``) as ``q(z1) q(z2 | z1)``."""
    mu, S = joint.loc, joint.covariance_matrix[0]
    P1 = S[k2:, k2:]
    C = torch.linalg.solve(P1, S[k2:, :k2]).T
    c = mu[:, :k2] - mu[:, k2:] @ C.T
    return BottomUpQ(mu[:, k2:], P1, C, c, _sym(S[:k2, :k2] - C @ S[k2:, :k2]))


def top_down_factors(joint: MultivariateNormal, k2: int) -> TopDownQ:
    """Split a Gaussian over ``(z2, z1)`` (batch ``[N]``) as ``q(z2) q(z1 | z2)``."""
    mu, S = joint.loc, joint.covariance_matrix[0]
    P2 = S[:k2, :k2]
    D = torch.linalg.solve(P2, S[:k2, k2:]).T
    d = mu[:, k2:] - mu[:, :k2] @ D.T
    return TopDownQ(mu[:, :k2], P2, D, d, _sym(S[k2:, k2:] - D @ S[:k2, k2:]))


def q_joint(q: BottomUpQ | TopDownQ) -> MultivariateNormal:
    """The Gaussian of ``(z2, z1)`` that ``q`` defines: batch ``[N]``, event ``[k2 + k1]``."""
    if isinstance(q, BottomUpQ):
        m1, P1, C, c, P2 = q
        mean = torch.cat([m1 @ C.T + c, m1], -1)
        top = torch.cat([C @ P1 @ C.T + P2, C @ P1], 1)
        bottom = torch.cat([P1 @ C.T, P1], 1)
    elif isinstance(q, TopDownQ):
        m2, P2, D, d, P1 = q
        mean = torch.cat([m2, m2 @ D.T + d], -1)
        top = torch.cat([P2, P2 @ D.T], 1)
        bottom = torch.cat([D @ P2, D @ P2 @ D.T + P1], 1)
    else:
        raise TypeError(f"q_joint: q must be a BottomUpQ or a TopDownQ, got {type(q).__name__}")
    cov = _sym(torch.cat([top, bottom], 0))
    return MultivariateNormal(mean, covariance_matrix=cov.expand(len(mean), *cov.shape))


def _expected_log_lik(chain: LinearGaussianChain, x: Tensor, mean1: Tensor, cov1: Tensor) -> Tensor:
    """``E log N(x; B z1 + b, S0)`` for ``z1 ~ N(mean1, cov1)``: ``[N]``."""
    B = chain.B
    at_mean = MultivariateNormal(mean1 @ B.T + chain.b, covariance_matrix=chain.S0).log_prob(x)
    return at_mean - 0.5 * torch.trace(torch.linalg.solve(chain.S0, B @ cov1 @ B.T))


def _logdet(M: Tensor) -> Tensor:
    return torch.linalg.slogdet(M)[1]


def elbo_terms(chain: LinearGaussianChain, x: Tensor, q: BottomUpQ | TopDownQ) -> dict[str, Tensor]:
    """The per-layer terms of the ELBO of ``q`` at ``x [N, d]``, in closed form (nats, ``[N]``).

    Bottom-up: ``kl_z2 = E_q(z1|x) KL(q(z2|z1) || p(z2))`` and
    ``kl_z1 = E_q[log q(z1|x) - log p(z1|z2)]``. Top-down: ``kl_z2 = KL(q(z2|x) || p(z2))`` and
    ``kl_z1 = E_q(z2|x) KL(q(z1|z2,x) || p(z1|z2))``. Always
    ``elbo = log_px_z - kl_z1 - kl_z2 = log p(x) - KL(q || p(z1, z2 | x))``.
    """
    x = chain._check_x(x, "elbo_terms")
    k2, k1, _ = chain.dims
    A, a, S1 = chain.A, chain.a, chain.S1
    S1_inv = torch.linalg.inv(S1)
    if isinstance(q, BottomUpQ):
        m1, P1, C, c, P2 = q
        log_px_z = _expected_log_lik(chain, x, m1, P1)
        mean_z2 = m1 @ C.T + c
        kl_z2 = 0.5 * (
            torch.trace(P2) + (mean_z2**2).sum(-1) + torch.trace(C @ P1 @ C.T) - k2 - _logdet(P2)
        )
        # r = z1 - A z2 - a with z2 = C z1 + c + e: its mean and covariance under q
        M = torch.eye(k1, dtype=DT) - A @ C
        r_mean = m1 @ M.T - c @ A.T - a
        r_cov = M @ P1 @ M.T + A @ P2 @ A.T
        cross = 0.5 * (_logdet(S1) + _quad(r_mean, S1_inv) + torch.trace(S1_inv @ r_cov))
        kl_z1 = cross - 0.5 * (k1 + _logdet(P1))  # -entropy of q(z1|x) + cross term
    elif isinstance(q, TopDownQ):
        m2, P2, D, d, P1 = q
        mean1 = m2 @ D.T + d
        log_px_z = _expected_log_lik(chain, x, mean1, D @ P2 @ D.T + P1)
        kl_z2 = 0.5 * (torch.trace(P2) + (m2**2).sum(-1) - k2 - _logdet(P2))
        DA = D - A
        delta = m2 @ DA.T + d - a
        kl_z1 = 0.5 * (
            torch.trace(S1_inv @ P1)
            - k1
            + _logdet(S1)
            - _logdet(P1)
            + _quad(delta, S1_inv)
            + torch.trace(S1_inv @ DA @ P2 @ DA.T)
        )
    else:
        raise TypeError(f"elbo_terms: q must be a BottomUpQ or a TopDownQ, got {type(q).__name__}")
    kl_z2 = kl_z2.expand_as(log_px_z)
    kl_z1 = kl_z1.expand_as(log_px_z)
    return {
        "log_px_z": log_px_z,
        "kl_z1": kl_z1,
        "kl_z2": kl_z2,
        "elbo": log_px_z - kl_z1 - kl_z2,
    }


def sampled_terms(
    chain: LinearGaussianChain, x: Tensor, q: BottomUpQ | TopDownQ, z2: Tensor, z1: Tensor
) -> dict[str, Tensor]:
    """The integrands of :func:`elbo_terms` at samples ``z2 [n, N, k2]``, ``z1 [n, N, k1]`` of
    ``q`` given ``x [N, d]``: ``log_px_z = log p(x|z1)``, ``kl_z1 = log q(z1|.) - log p(z1|z2)``
    and ``kl_z2 = log q(z2|.) - log p(z2)``, each ``[n, N]`` nats, densities from
    ``torch.distributions`` (their means over the samples estimate the closed forms)."""
    lpx = MultivariateNormal(z1 @ chain.B.T + chain.b, chain.S0).log_prob(x)
    lp1 = MultivariateNormal(z2 @ chain.A.T + chain.a, chain.S1).log_prob(z1)
    lp2 = Normal(0.0, 1.0).log_prob(z2).sum(-1)
    if isinstance(q, BottomUpQ):
        lq1 = MultivariateNormal(q.m1, q.P1).log_prob(z1)
        lq2 = MultivariateNormal(z1 @ q.C.T + q.c, q.P2).log_prob(z2)
    else:
        lq2 = MultivariateNormal(q.m2, q.P2).log_prob(z2)
        lq1 = MultivariateNormal(z2 @ q.D.T + q.d, q.P1).log_prob(z1)
    return {"log_px_z": lpx, "kl_z1": lq1 - lp1, "kl_z2": lq2 - lp2}
