"""Probabilistic PCA: the linear-Gaussian latent-variable model in which every quantity is exact.

The generative model, with latent dimension ``q`` and data dimension ``d > q``, is::

    z ~ N(0, I_q),    x | z ~ N(W z + mu, sigma2 I_d),    W: [d, q], mu: [d], sigma2 > 0.

Because everything is linear and Gaussian, the marginal ``p(x) = N(mu, W W^T + sigma2 I)``, the
posterior ``p(z | x)``, the ELBO of any Gaussian ``q(z)``, the EM updates and the maximum-likelihood
parameters (Tipping & Bishop, 1999) all have closed forms. The course uses the model as ground
truth for checking bounds and estimators. All log-densities are in nats; use float64 for checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, overload

import torch
from torch import Tensor
from torch.distributions import Independent, MultivariateNormal, Normal

from dgmlib.distributions import LOG_2PI
from dgmlib.validation import check_int, check_tensor

__all__ = ["PPCA"]


def _as_float_tensor(x: Tensor, name: str, where: str) -> Tensor:
    """``x`` as a floating tensor (integers become float64); raise if it holds NaN or inf."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        x = x.to(torch.float64)
    check_tensor(x, name, where)
    if not torch.isfinite(x).all():
        raise ValueError(f"{where}: {name} contains inf")
    return x


def _data_matrix(X: Tensor, where: str, d: int | None = None) -> Tensor:
    """Validate a data matrix X [N, d] (N >= 1, finite) and return it as a floating tensor."""
    X = _as_float_tensor(X, "X", where)
    if X.dim() != 2:
        raise ValueError(f"{where}: X must have shape [N, d], got {tuple(X.shape)}")
    if d is not None and X.shape[1] != d:
        raise ValueError(f"{where}: X has {X.shape[1]} columns but the model has d = {d}")
    if X.shape[0] < 1:
        raise ValueError(f"{where}: X has no rows")
    return X


def _check_latent_dim(q: int, d: int, where: str) -> None:
    """Raise unless ``q`` is an integer with 1 <= q < d."""
    if check_int(q, "q", where) >= d:
        raise ValueError(f"{where}: q must be an integer with 1 <= q < d = {d}, got {q!r}")


def _canonical_signs(U: Tensor) -> Tensor:
    """Flip each column of U so that its largest-magnitude entry is positive (deterministic)."""
    idx = U.abs().argmax(dim=0)
    signs = torch.sign(U[idx, torch.arange(U.shape[1])])
    signs[signs == 0] = 1.0
    return U * signs


@dataclass(frozen=True, eq=False, repr=False, init=False)
class PPCA:
    """Probabilistic PCA with loading matrix W [d, q], mean mu [d] and noise variance sigma2
    (a number or a one-element tensor; stored as a 0-d tensor of W's dtype and device)."""

    W: Tensor
    mu: Tensor
    sigma2: Tensor

    def __init__(self, W: Tensor, mu: Tensor, sigma2: Tensor | float) -> None:
        where = "PPCA"
        W = _as_float_tensor(W, "W", where)
        if W.dim() != 2 or W.shape[1] < 1 or W.shape[0] <= W.shape[1]:
            raise ValueError(
                f"{where}: W must have shape [d, q] with 1 <= q < d, got {tuple(W.shape)}"
            )
        mu = _as_float_tensor(mu, "mu", where).to(W.dtype)
        if mu.shape != (W.shape[0],):
            raise ValueError(
                f"{where}: mu must have shape [d] = [{W.shape[0]}], got {tuple(mu.shape)}"
            )
        s2 = torch.as_tensor(sigma2, dtype=W.dtype, device=W.device)
        if s2.numel() != 1 or not torch.isfinite(s2).all() or not bool(s2 > 0):
            raise ValueError(f"{where}: sigma2 must be one finite positive number, got {sigma2!r}")
        object.__setattr__(self, "W", W)
        object.__setattr__(self, "mu", mu.to(W.device))
        object.__setattr__(self, "sigma2", s2.reshape(()))

    def __repr__(self) -> str:
        return f"PPCA(d={self.d}, q={self.q}, sigma2={float(self.sigma2):.4g})"

    # ----------------------------------------------------------------------------------------
    # sizes and the three distributions of the model

    @property
    def d(self) -> int:
        """Data dimension."""
        return self.W.shape[0]

    @property
    def q(self) -> int:
        """Latent dimension."""
        return self.W.shape[1]

    @property
    def prior(self) -> Independent:
        """p(z) = N(0, I_q) as a product of standard normals; event shape [q]."""
        zeros = torch.zeros(self.q, dtype=self.W.dtype, device=self.W.device)
        return Independent(Normal(zeros, torch.ones_like(zeros), validate_args=False), 1)

    def likelihood(self, z: Tensor) -> Independent:
        """p(x | z) = N(W z + mu, sigma2 I_d) for latents z [..., q]; event shape [d]."""
        z = check_tensor(z, "z", "PPCA.likelihood")
        if z.shape[-1] != self.q:
            raise ValueError(
                f"PPCA.likelihood: z must have last dim q = {self.q}, got {tuple(z.shape)}"
            )
        loc = z @ self.W.T + self.mu
        scale = self.sigma2.sqrt().expand_as(loc)
        return Independent(Normal(loc, scale, validate_args=False), 1)

    def covariance(self) -> Tensor:
        """Marginal covariance C = W W^T + sigma2 I_d, shape [d, d]."""
        eye = torch.eye(self.d, dtype=self.W.dtype, device=self.W.device)
        return self.W @ self.W.T + self.sigma2 * eye

    def marginal(self) -> MultivariateNormal:
        """p(x) = N(mu, W W^T + sigma2 I_d), event shape [d]."""
        # positive definite by construction (sigma2 > 0): skip torch's extra validation pass
        return MultivariateNormal(self.mu, covariance_matrix=self.covariance(), validate_args=False)

    # ----------------------------------------------------------------------------------------
    # exact inference

    def log_prob(self, X: Tensor) -> Tensor:
        """Exact marginal log-likelihood log p(x) of each row of X [N, d]: shape [N], nats."""
        X = _data_matrix(X, "PPCA.log_prob", self.d)
        return self.marginal().log_prob(X)

    def log_likelihood(self, X: Tensor, Z: Tensor) -> Tensor:
        """log p(x | z) for X [..., d] and Z [..., q] (broadcast), in nats.

        Same value as ``likelihood(Z).log_prob(X)``, computed with fewer passes over memory.
        """
        X = check_tensor(X, "X", "PPCA.log_likelihood")
        Z = check_tensor(Z, "Z", "PPCA.log_likelihood")
        if Z.shape[-1] != self.q or X.shape[-1] != self.d:
            raise ValueError(
                f"PPCA.log_likelihood: X must end in d = {self.d} and Z in q = {self.q}, got "
                f"X {tuple(X.shape)} and Z {tuple(Z.shape)}"
            )
        sq = (X - self.mu - Z @ self.W.T).pow(2).sum(-1)
        return -0.5 * (sq / self.sigma2 + self.d * (LOG_2PI + torch.log(self.sigma2)))

    def joint_log_prob(self, X: Tensor, Z: Tensor) -> Tensor:
        """log p(x, z) = log p(x | z) + log p(z) for X [..., d] and Z [..., q] (broadcast), nats."""
        return self.log_likelihood(X, Z) - 0.5 * (Z.pow(2).sum(-1) + self.q * LOG_2PI)

    def posterior_precision(self) -> Tensor:
        """M = W^T W + sigma2 I_q, shape [q, q]; the posterior covariance is sigma2 M^{-1}."""
        eye = torch.eye(self.q, dtype=self.W.dtype, device=self.W.device)
        return self.W.T @ self.W + self.sigma2 * eye

    def posterior(self, X: Tensor) -> MultivariateNormal:
        """Exact p(z | x) for each row of X [N, d]: batch [N], event [q], shared covariance."""
        X = _data_matrix(X, "PPCA.posterior", self.d)
        chol_M = torch.linalg.cholesky(self.posterior_precision())
        # mean_n = M^{-1} W^T (x_n - mu), written for rows: (x_n - mu)^T W M^{-1}
        mean = torch.cholesky_solve(((X - self.mu) @ self.W).T, chol_M).T
        cov = self.sigma2 * torch.cholesky_inverse(chol_M)
        return MultivariateNormal(mean, scale_tril=torch.linalg.cholesky(cov), validate_args=False)

    def elbo(self, X: Tensor, q: MultivariateNormal) -> Tensor:
        """Closed-form ELBO E_q[log p(x|z)] - KL(q || p(z)) of a Gaussian q(z) per row: [N] nats.

        ``q`` has event shape [q] and batch shape [N] (one q per row of X) or [] (shared).
        """
        X = _data_matrix(X, "PPCA.elbo", self.d)
        if not isinstance(q, MultivariateNormal):
            raise TypeError(f"PPCA.elbo: q must be a MultivariateNormal, got {type(q).__name__}")
        if q.event_shape != (self.q,):
            raise ValueError(
                f"PPCA.elbo: q must be a MultivariateNormal with event shape [{self.q}], got "
                f"{list(q.event_shape)}"
            )
        return self._expected_log_likelihood(X, q) - self._kl_to_prior(q)

    def _expected_log_likelihood(self, X: Tensor, q: MultivariateNormal) -> Tensor:
        """E_q log p(x|z) = -d/2 log(2 pi sigma2) - (|x-mu-Wm|^2 + tr(W S W^T)) / (2 sigma2)."""
        m, S = q.loc, q.covariance_matrix
        resid = X - self.mu - m @ self.W.T
        trace = (self.W.T @ self.W * S).sum((-2, -1))
        quad = resid.pow(2).sum(-1) + trace
        return -0.5 * self.d * (LOG_2PI + torch.log(self.sigma2)) - 0.5 * quad / self.sigma2

    def _kl_to_prior(self, q: MultivariateNormal) -> Tensor:
        """KL(N(m, S) || N(0, I)) = (tr S + |m|^2 - q - log det S) / 2."""
        m, L = q.loc, q.scale_tril
        trace = L.pow(2).sum((-2, -1))
        logdet = 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
        return 0.5 * (trace + m.pow(2).sum(-1) - self.q - logdet)

    # ----------------------------------------------------------------------------------------
    # sampling

    @overload
    def sample(
        self, n: int, generator: torch.Generator | None = None, return_latents: Literal[False] = ...
    ) -> Tensor: ...

    @overload
    def sample(
        self, n: int, generator: torch.Generator | None = None, *, return_latents: Literal[True]
    ) -> tuple[Tensor, Tensor]: ...

    @overload
    def sample(
        self, n: int, generator: torch.Generator | None = None, return_latents: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]: ...

    def sample(
        self, n: int, generator: torch.Generator | None = None, return_latents: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Draw n points x [n, d] by ancestral sampling (and their latents z [n, q] if asked)."""
        check_int(n, "n", "PPCA.sample")
        dtype, device = self.W.dtype, self.W.device
        z = torch.randn(n, self.q, dtype=dtype, device=device, generator=generator)
        eps = torch.randn(n, self.d, dtype=dtype, device=device, generator=generator)
        x = z @ self.W.T + self.mu + self.sigma2.sqrt() * eps
        return (x, z) if return_latents else x

    # ----------------------------------------------------------------------------------------
    # learning: closed-form maximum likelihood and EM

    @classmethod
    def mle(cls, X: Tensor, q: int, ddof: int = 0) -> PPCA:
        """Tipping-Bishop maximum-likelihood pPCA of X [N, d] with latent dimension q.

        With S the sample covariance (divided by N - ddof) and eigenpairs (lambda_i, u_i) in
        decreasing order: mu = mean(X), sigma2 = mean(lambda_{q+1..d}) and
        W = U_q (Lambda_q - sigma2 I)^{1/2} (columns' signs fixed so W is deterministic).
        ``ddof=0`` is the maximum-likelihood fit; ``ddof=1`` reproduces scikit-learn's PCA model.
        """
        where = "PPCA.mle"
        X = _data_matrix(X, where)
        n, d = X.shape
        _check_latent_dim(q, d, where)
        if ddof not in (0, 1):
            raise ValueError(f"{where}: ddof must be 0 (maximum likelihood) or 1, got {ddof!r}")
        if n < 2:
            raise ValueError(f"{where}: need at least 2 rows of X, got {n}")
        mu = X.mean(0)
        Xc = X - mu
        S = Xc.T @ Xc / (n - ddof)
        evals, evecs = torch.linalg.eigh(S)
        evals, evecs = evals.flip(0), _canonical_signs(evecs.flip(1))
        sigma2 = evals[q:].mean()
        if not bool(sigma2 > 1e-12 * evals[0].clamp_min(torch.finfo(X.dtype).tiny)):
            raise ValueError(
                f"{where}: the data vary in at most q = {q} directions (too few rows, or "
                "constant or collinear columns), so sigma2 = 0; use a smaller q"
            )
        W = evecs[:, :q] * (evals[:q] - sigma2).clamp_min(0.0).sqrt()
        return cls(W=W, mu=mu, sigma2=sigma2)

    @classmethod
    def init_random(cls, X: Tensor, q: int, generator: torch.Generator | None = None) -> PPCA:
        """A random starting point for EM: mu = mean(X), sigma2 = mean variance, W ~ N(0, s^2)."""
        X = _data_matrix(X, "PPCA.init_random")
        _check_latent_dim(q, X.shape[1], "PPCA.init_random")
        var = X.var(0, unbiased=False).mean()
        W = torch.randn(X.shape[1], q, dtype=X.dtype, device=X.device, generator=generator)
        return cls(W=W * var.sqrt(), mu=X.mean(0), sigma2=var)

    def em_step(self, X: Tensor) -> PPCA:
        """One EM iteration on X [N, d]; never decreases the log-likelihood of X.

        mu is set to the sample mean (its exact maximiser); then the E-step takes the posterior
        moments E[z_n] = M^{-1} W^T (x_n - mu) and E[z_n z_n^T] = sigma2 M^{-1} + E[z_n] E[z_n]^T,
        and the M-step solves for W and sigma2 (Tipping & Bishop, 1999, eqs. 27-28).
        """
        X = _data_matrix(X, "PPCA.em_step", self.d)
        n = X.shape[0]
        mu = X.mean(0)
        Xc = X - mu
        M_inv = torch.linalg.inv(self.posterior_precision())
        Ez = Xc @ self.W @ M_inv  # [N, q]
        sum_Ezz = n * self.sigma2 * M_inv + Ez.T @ Ez  # [q, q]
        cross = Xc.T @ Ez  # sum_n (x_n - mu) E[z_n]^T, [d, q]
        W_new = torch.linalg.solve(sum_Ezz, cross.T).T
        sq = Xc.pow(2).sum() - 2.0 * (W_new * cross).sum() + (sum_Ezz * (W_new.T @ W_new)).sum()
        return PPCA(W=W_new, mu=mu, sigma2=sq / (n * self.d))

    @classmethod
    def fit_em(
        cls,
        X: Tensor,
        q: int,
        steps: int,
        generator: torch.Generator | None = None,
        init: PPCA | None = None,
    ) -> tuple[PPCA, Tensor]:
        """Run ``steps`` EM iterations from ``init`` (or a random start); return the model and
        the mean log-likelihood per row after 0, 1, ..., steps iterations ([steps + 1], nats)."""
        check_int(steps, "steps", "PPCA.fit_em", low=0)
        model = init if init is not None else cls.init_random(X, q, generator)
        history = [model.log_prob(X).mean()]
        for _ in range(steps):
            model = model.em_step(X)
            history.append(model.log_prob(X).mean())
        return model, torch.stack(history)
