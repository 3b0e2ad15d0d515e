"""Binary latent-variable models small enough to enumerate: the Bernoulli-Bernoulli harmonium
(the RBM), the factorised Bernoulli encoder, and the interactions that decide whether a posterior
stays in that encoder's family.

A model over ``x`` in ``{0,1}^n`` and ``z`` in ``{0,1}^m`` is given by two tables over the
``2^m`` latent states: ``log_prior [2^m]`` (a normalised ``log p(z)``) and ``logits [2^m, n]``,
the decoder's natural parameter ``d(z)``, so that ``p(x|z) = prod_i Bernoulli(x_i;
sigmoid(d_i(z)))``. Every sum over ``x`` or ``z`` is exact: it runs over the ``2^n`` (or
``2^m``) states of :func:`binary_states`, in whose order every table is indexed (row ``i`` has
bit ``j`` equal to ``(i >> j) & 1``). The encoder family is the factorised Bernoulli ``q(z|x) =
prod_j Bernoulli(z_j; sigmoid(l_j))``, one logit vector ``l [m]`` per ``x``.

A function ``f`` on ``{0,1}^m`` is one multilinear polynomial ``f(z) = sum_S a_S prod_{j in S}
z_j``; :func:`interactions` returns its coefficients ``a_S`` (the Moebius transform). ``f`` is
affine in ``z`` iff every ``a_S`` with ``|S| >= 2`` vanishes (:func:`nonaffine_size`): with the
encoder's statistics ``psi(z) = z`` this is the test of both conditions of the harmonium theorem.
All log-densities, ELBOs and KL divergences are in nats.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from dgmlib.validation import check_int, check_positive, check_tensor

__all__ = [
    "approximation_gap",
    "best_factorised_logits",
    "binary_states",
    "elbo",
    "factorised_log_q",
    "interaction_orders",
    "interactions",
    "kl_factorised",
    "log_joint",
    "log_marginal",
    "log_posterior",
    "mean_field",
    "nonaffine_size",
    "rbm_log_marginal",
    "rbm_log_prior",
    "softplus",
]

#: The largest number of binary variables that is enumerated (2^20 states).
MAX_BITS = 20


def softplus(a: Tensor) -> Tensor:
    """``log(1 + e^a)`` elementwise, exact in floating point for every ``a`` (no threshold)."""
    return torch.logaddexp(a, torch.zeros_like(a))


def binary_states(k: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """All ``2^k`` binary vectors, ``[2^k, k]``: row ``i`` holds the bits of ``i``, bit ``j`` in
    column ``j``."""
    check_int(k, "k", "binary_states", low=0)
    if k > MAX_BITS:
        raise ValueError(f"binary_states: k must be at most {MAX_BITS} to enumerate, got {k}")
    return _states(k, dtype).clone()


@lru_cache(maxsize=64)
def _states(k: int, dtype: torch.dtype) -> Tensor:
    """The table of :func:`binary_states`, built once per ``(k, dtype)``; never modified."""
    i = torch.arange(2**k)
    return ((i[:, None] >> torch.arange(k)) & 1).to(dtype)


def _bits(size: int, name: str, where: str) -> int:
    """``k`` with ``2^k == size``, or a ValueError naming ``name``."""
    k = size.bit_length() - 1
    if size < 1 or 2**k != size:
        raise ValueError(
            f"{where}: the last dimension of {name} must be a power of 2 (one entry per binary "
            f"state), got {size}"
        )
    return k


def interactions(f: Tensor) -> Tensor:
    """Coefficients ``a_S`` of ``f(z) = sum_S a_S prod_{j in S} z_j`` (the Moebius transform).

    ``f [..., 2^k]`` holds ``f`` at the states of :func:`binary_states`; the result has the same
    shape, with ``a_S = sum_{T subset of S} (-1)^{|S| - |T|} f(1_T)`` at the index of the state
    whose ones are ``S`` (index 0: the constant ``f(0)``; index ``2^j``: the slope of ``z_j``).
    """
    check_tensor(f, "f", "interactions")
    k = _bits(f.shape[-1], "f", "interactions")
    a = f.reshape(*f.shape[:-1], *([2] * k))  # dimension -1 - j is bit j
    for j in range(k):
        dim = a.dim() - 1 - j
        lo, hi = a.select(dim, 0), a.select(dim, 1)
        a = torch.stack([lo, hi - lo], dim=dim)  # difference in bit j, the others held fixed
    return a.reshape(f.shape)


def interaction_orders(k: int) -> Tensor:
    """``|S|`` at every index of :func:`interactions` (the number of ones of each state),
    ``[2^k]``, int64."""
    check_int(k, "k", "interaction_orders", low=0)
    if k > MAX_BITS:
        raise ValueError(f"interaction_orders: k must be at most {MAX_BITS}, got {k}")
    return _states(k, torch.int64).sum(-1)


def nonaffine_size(f: Tensor) -> Tensor:
    """``max_{|S| >= 2} |a_S|`` of ``f [..., 2^k]``, ``[...]``: zero iff ``f`` is affine in ``z``
    (in the units of ``f``)."""
    a = interactions(f)
    high = interaction_orders(_bits(f.shape[-1], "f", "nonaffine_size")) >= 2
    if not high.any():  # k < 2: every function is affine
        return torch.zeros(f.shape[:-1], dtype=f.dtype, device=f.device)
    return a[..., high.to(a.device)].abs().amax(-1)


def _check_model(log_prior: Tensor, logits: Tensor, where: str) -> tuple[int, int]:
    """``(n, m)`` of a model given by ``log_prior [2^m]`` and ``logits [2^m, n]``; else raise."""
    check_tensor(log_prior, "log_prior", where)
    check_tensor(logits, "logits", where, min_ndim=2)
    m = _bits(log_prior.shape[-1], "log_prior", where)
    if log_prior.dim() != 1 or logits.dim() != 2 or logits.shape[0] != 2**m:
        raise ValueError(
            f"{where}: expected log_prior [2^m] and logits [2^m, n], got "
            f"{tuple(log_prior.shape)} and {tuple(logits.shape)}"
        )
    n = logits.shape[1]
    if n > MAX_BITS:
        raise ValueError(f"{where}: n must be at most {MAX_BITS} to enumerate, got {n}")
    return n, m


def log_joint(log_prior: Tensor, logits: Tensor) -> Tensor:
    """``log p(x, z) = log p(z) + sum_i log Bernoulli(x_i; sigmoid(d_i(z)))`` at every pair of
    states, ``[2^n, 2^m]`` (rows ``x``, columns ``z``), nats; differentiable."""
    n, _ = _check_model(log_prior, logits, "log_joint")
    x = _states(n, logits.dtype).to(logits.device)
    # log Bernoulli(x; sigmoid(d)) = x d - softplus(d), summed over i
    return x @ logits.T - softplus(logits).sum(-1) + log_prior


def log_marginal(log_prior: Tensor, logits: Tensor) -> Tensor:
    """``log p(x) = logsumexp_z log p(x, z)`` at every ``x``, ``[2^n]``, nats."""
    return torch.logsumexp(log_joint(log_prior, logits), dim=-1)


def log_posterior(log_prior: Tensor, logits: Tensor) -> Tensor:
    """``log p(z|x)`` at every ``x`` (rows) and ``z`` (columns), ``[2^n, 2^m]``, nats."""
    return torch.log_softmax(log_joint(log_prior, logits), dim=-1)


def factorised_log_q(q_logits: Tensor) -> Tensor:
    """``log q(z) = sum_j [z_j l_j - softplus(l_j)]`` at every state ``z``: logits ``l [B, m]``
    to ``[B, 2^m]``, nats."""
    check_tensor(q_logits, "q_logits", "factorised_log_q", min_ndim=2)
    if q_logits.shape[-1] > MAX_BITS:
        raise ValueError(
            f"factorised_log_q: m must be at most {MAX_BITS} to enumerate, got {q_logits.shape[-1]}"
        )
    z = _states(q_logits.shape[-1], q_logits.dtype).to(q_logits.device)
    return q_logits @ z.T - softplus(q_logits).sum(-1, keepdim=True)


def kl_factorised(log_target: Tensor, q_logits: Tensor) -> Tensor:
    """``KL(q || p)`` per row for factorised ``q`` (logits ``[B, m]``) and ``p =
    softmax(log_target)`` (``log_target [B, 2^m]``, any constant per row), ``[B]``, nats."""
    check_tensor(log_target, "log_target", "kl_factorised", min_ndim=2)
    log_q = factorised_log_q(q_logits)
    if log_q.shape != log_target.shape:
        raise ValueError(
            f"kl_factorised: q_logits [B, m] and log_target [B, 2^m] do not match, got "
            f"{tuple(q_logits.shape)} and {tuple(log_target.shape)}"
        )
    return (log_q.exp() * (log_q - torch.log_softmax(log_target, -1))).sum(-1)


def elbo(log_prior: Tensor, logits: Tensor, q_logits: Tensor) -> Tensor:
    """``E_q[log p(x, z) - log q(z|x)]`` by enumerating ``z``, at every ``x``: ``q_logits [2^n,
    m]`` (one factorised Bernoulli per ``x``, rows in the order of the ``x`` states) to
    ``[2^n]``, nats; differentiable in all three."""
    n, m = _check_model(log_prior, logits, "elbo")
    check_tensor(q_logits, "q_logits", "elbo", min_ndim=2)
    if tuple(q_logits.shape) != (2**n, m):
        raise ValueError(
            f"elbo: q_logits must have shape [{2**n}, {m}] (one row per x), got "
            f"{tuple(q_logits.shape)}"
        )
    log_q = factorised_log_q(q_logits)
    return (log_q.exp() * (log_joint(log_prior, logits) - log_q)).sum(-1)


def mean_field(
    log_target: Tensor, q_logits: Tensor, max_sweeps: int = 1000, tol: float = 1e-12
) -> Tensor:
    """Coordinate descent on ``KL(q || p)`` over factorised Bernoulli ``q`` (naive mean field).

    ``log_target [B, 2^m]``: ``log p(z)`` up to a constant per row (e.g. the rows of
    :func:`log_joint`); ``q_logits [B, m]``: the start. A sweep sets, for ``j = 1..m`` in turn,
    ``l_j = E_{q_{-j}}[log p(z_j = 1, z_{-j}) - log p(z_j = 0, z_{-j})]``, the exact minimiser of
    the KL in coordinate ``j`` (so the KL never increases); it stops when no logit moved by more
    than ``tol`` in a sweep. Returns the logits ``[B, m]`` of a stationary point (in general a
    local minimum; see :func:`best_factorised_logits`). Not differentiable (detached).
    """
    where = "mean_field"
    check_tensor(log_target, "log_target", where, min_ndim=2)
    check_tensor(q_logits, "q_logits", where, min_ndim=2)
    check_int(max_sweeps, "max_sweeps", where)
    check_positive(tol, "tol", where)
    m = _bits(log_target.shape[-1], "log_target", where)
    if tuple(q_logits.shape) != (log_target.shape[0], m):
        raise ValueError(
            f"{where}: q_logits must have shape [{log_target.shape[0]}, {m}], got "
            f"{tuple(q_logits.shape)}"
        )
    z = _states(m, log_target.dtype).to(log_target.device)  # [2^m, m]
    sign = 2 * z - 1
    ell = q_logits.detach().clone()
    t = log_target.detach()
    for _ in range(max_sweeps):
        old = ell.clone()
        for j in range(m):
            # log q_k(z_k) of every coordinate k at every state; coordinate j left out
            log_f = z * F.logsigmoid(ell)[:, None] + (1 - z) * F.logsigmoid(-ell)[:, None]
            log_f[..., j] = 0.0
            w = log_f.sum(-1).exp()  # [B, 2^m]: q_{-j}(z_{-j}), summing to 1 on each half
            ell[:, j] = (w * sign[:, j] * t).sum(-1)
        if (ell - old).abs().max() <= tol:
            break
    return ell


def best_factorised_logits(
    log_target: Tensor, max_sweeps: int = 1000, tol: float = 1e-12
) -> Tensor:
    """The best of ``1 + 2^m`` :func:`mean_field` runs per row: ``[B, 2^m]`` to logits ``[B, m]``.

    Starts: the logits of the target's own marginals, and the ``2^m`` corners ``l_j = +-4`` (each
    near one deterministic ``q``). For every row the run with the smallest ``KL(q || p)`` is kept;
    the KL is not convex, and a single start can end in a worse local minimum.
    """
    where = "best_factorised_logits"
    check_tensor(log_target, "log_target", where, min_ndim=2)
    m = _bits(log_target.shape[-1], "log_target", where)
    z = _states(m, log_target.dtype).to(log_target.device)
    marginals = torch.softmax(log_target.detach(), -1) @ z  # [B, m]
    starts = [torch.logit(marginals.clamp(1e-6, 1 - 1e-6))]
    starts += [(8 * corner - 4).expand_as(marginals) for corner in z]
    S, B = len(starts), log_target.shape[0]
    targets = log_target.detach().repeat(S, 1)  # all starts in one batch
    ell = mean_field(targets, torch.cat(starts), max_sweeps=max_sweeps, tol=tol)
    pick = kl_factorised(targets, ell).reshape(S, B).argmin(0)  # the best start of every row
    return ell.reshape(S, B, m)[pick, torch.arange(B)]


def approximation_gap(log_prior: Tensor, logits: Tensor) -> Tensor:
    """``log p(x) - max_q ELBO(q) = min_q KL(q || p(z|x))`` over factorised ``q``, at every ``x``,
    ``[2^n]``, nats: what the best encoder of the family leaves (:func:`best_factorised_logits`)."""
    lj = log_joint(log_prior, logits)
    return kl_factorised(lj, best_factorised_logits(lj))


def _check_rbm(W: Tensor, u: Tensor, v: Tensor, where: str) -> tuple[int, int]:
    """``(n, m)`` of the harmonium ``W [n, m]``, ``u [n]``, ``v [m]``; else raise."""
    check_tensor(W, "W", where, min_ndim=2)
    check_tensor(u, "u", where)
    check_tensor(v, "v", where)
    if W.dim() != 2:
        raise ValueError(f"{where}: W must have shape [n, m], got {tuple(W.shape)}")
    n, m = W.shape
    if tuple(u.shape) != (n,) or tuple(v.shape) != (m,):
        raise ValueError(
            f"{where}: expected u [{n}] and v [{m}] for W [{n}, {m}], got {tuple(u.shape)} and "
            f"{tuple(v.shape)}"
        )
    if max(n, m) > MAX_BITS:
        raise ValueError(f"{where}: n and m must be at most {MAX_BITS} to enumerate, got {n}, {m}")
    return n, m


def rbm_log_prior(W: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """Latent marginal of the harmonium ``p(x, z) ∝ exp(x^T W z + u^T x + v^T z)``: ``log p(z) =
    <v, z> + sum_i softplus((W z + u)_i) - log Z`` at every ``z``, ``[2^m]``, nats (``x`` summed
    in closed form, ``Z`` by enumerating ``z``). ``W [n, m]``, ``u [n]``, ``v [m]``."""
    _, m = _check_rbm(W, u, v, "rbm_log_prior")
    z = _states(m, W.dtype).to(W.device)
    unnormalised = z @ v + softplus(z @ W.T + u).sum(-1)
    return unnormalised - torch.logsumexp(unnormalised, 0)


def rbm_log_marginal(W: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """Data marginal of the same harmonium: ``log p(x) = <u, x> + sum_j softplus((W^T x + v)_j) -
    log Z`` at every ``x``, ``[2^n]``, nats (``z`` summed in closed form, ``Z`` by enumerating
    ``x``, not ``z`` as in :func:`rbm_log_prior`)."""
    n, _ = _check_rbm(W, u, v, "rbm_log_marginal")
    x = _states(n, W.dtype).to(W.device)
    unnormalised = x @ u + softplus(x @ W + v).sum(-1)
    return unnormalised - torch.logsumexp(unnormalised, 0)
