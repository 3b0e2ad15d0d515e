"""A hierarchical VAE with binary latents small enough to enumerate: a two-layer sigmoid belief
network with a top-down encoder whose bottom-up messages stand in for ``log p(x | z_i)``.

Generative model (``x`` binary, ``x_dim`` pixels; ``z2``, ``z1`` binary vectors)::

    p(z2)      = prod Bernoulli(sigmoid(b2))
    p(z1 | z2) = prod Bernoulli(sigmoid(W1 z2 + b1))      d1(z2) = W1 z2 + b1
    p(x | z1)  = prod Bernoulli(sigmoid(W0 z1 + b0))

Encoder: a deterministic bottom-up pass computes messages ``a1 = U1 x + c1`` and
``a2 = U2 f(a1) + c2`` (``f = tanh``), and the posterior is approximated top-down by adding each
message to the generative natural parameters of its layer::

    q(z2 | x)     ∝ exp <z2, b2 + a2(x)>
    q(z1 | z2, x) ∝ exp <z1, d1(z2) + a1(x)>

which is exact if ``<z_i, a_i(x)>`` equals ``log p(x | z_i)`` up to a constant in ``z_i``, since
``p(z_i | z_{i+1}, x) ∝ p(z_i | z_{i+1}) p(x | z_i)``. With ``2^z1_dim`` and ``2^z2_dim`` states,
everything is computed exactly by enumeration: ``log p(x | z1)`` for every state, the backward
recursion ``p(x | z2) = sum_z1 p(z1 | z2) p(x | z1)``, ``log p(x)``, the posterior, the ELBO,
and the exact gradient of the ELBO, against which :func:`per_sample_gradients` (the
straight-through and score-function estimators) are measured.

Shapes: ``x [B, x_dim]`` (or ``[B, 8, 8]``); states are rows of :func:`binary_states`, so an
enumerated quantity of layer ``i`` has a last dimension ``S_i = 2^{z_i dim}``. Log-probabilities
in nats.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgmlib.distributions import bernoulli_log_prob
from dgmlib.validation import check_choice, check_int, check_tensor

__all__ = [
    "ESTIMATORS",
    "BinaryHierarchyVAE",
    "bernoulli_kl",
    "binary_states",
    "estimator_moments",
    "exact_gradient",
    "per_sample_gradients",
    "sample_latents",
    "state_log_probs",
]

#: The gradient estimators of :func:`per_sample_gradients`.
ESTIMATORS = ("straight-through", "reinforce")


def binary_states(n: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """All ``2^n`` binary vectors of length ``n`` as rows, ``[2^n, n]`` (row ``k`` is ``k`` in
    binary, most significant bit first)."""
    check_int(n, "n", "binary_states")
    k = torch.arange(2**n).unsqueeze(1)
    bits = 2 ** torch.arange(n - 1, -1, -1)
    return ((k // bits) % 2).to(dtype)


def log1p_exp(x: Tensor) -> Tensor:
    """``log(1 + e^x)`` elementwise, exact in float64 for every ``x`` (``F.softplus`` returns
    ``x`` itself above 20, an error of ``e^-20``, which enumerated sums would accumulate)."""
    return torch.logaddexp(x, torch.zeros((), dtype=x.dtype, device=x.device))


def state_log_probs(logits: Tensor, states: Tensor) -> Tensor:
    """``log prod Bernoulli(s; sigmoid(logits))`` for every state ``s`` (rows of ``states
    [S, n]``) and every row of ``logits [..., n]``: ``[..., S]``, nats. Uses
    ``log p(s) = <s, logits> - sum log(1 + e^logits)``, one matrix product."""
    return logits @ states.T - log1p_exp(logits).sum(-1, keepdim=True)


def bernoulli_kl(logits_q: Tensor, logits_p: Tensor) -> Tensor:
    """``KL(Bernoulli(sigmoid(logits_q)) || Bernoulli(sigmoid(logits_p)))`` summed over the last
    dim (inputs broadcast): ``[...]``, nats.

    From ``log q(1) = l_q - softplus(l_q)`` and ``log q(0) = -softplus(l_q)``:
    ``KL = sigmoid(l_q) (l_q - l_p) + softplus(l_p) - softplus(l_q)``, accurate for logits of
    any size (no ``1 - p`` is formed)."""
    check_tensor(logits_q, "logits_q", "bernoulli_kl")
    check_tensor(logits_p, "logits_p", "bernoulli_kl")
    kl = torch.sigmoid(logits_q) * (logits_q - logits_p) + log1p_exp(logits_p) - log1p_exp(logits_q)
    return kl.sum(-1)


class BinaryHierarchyVAE(nn.Module):
    """The two-layer binary hierarchy of the module docstring (``z2_dim`` top units, ``z1_dim``
    units below, ``x_dim`` pixels), in float64 so that enumerated sums are exact to round-off."""

    states1: Tensor  # every state of z1, [S1, z1_dim] (a buffer)
    states2: Tensor  # every state of z2, [S2, z2_dim]

    def __init__(self, x_dim: int = 64, z1_dim: int = 8, z2_dim: int = 4) -> None:
        super().__init__()
        self.x_dim = check_int(x_dim, "x_dim", "BinaryHierarchyVAE")
        self.z1_dim = check_int(z1_dim, "z1_dim", "BinaryHierarchyVAE")
        self.z2_dim = check_int(z2_dim, "z2_dim", "BinaryHierarchyVAE")
        if z1_dim > 12 or z2_dim > 12:
            raise ValueError(
                f"BinaryHierarchyVAE: enumeration needs z1_dim, z2_dim <= 12, got {z1_dim} and "
                f"{z2_dim}"
            )
        dt = torch.float64
        self.prior_logits = nn.Parameter(torch.zeros(z2_dim, dtype=dt))  # b2
        self.layer1 = nn.Linear(z2_dim, z1_dim, dtype=dt)  # d1(z2) = W1 z2 + b1
        self.layer0 = nn.Linear(z1_dim, x_dim, dtype=dt)  # logits of p(x | z1)
        self.message1 = nn.Linear(x_dim, z1_dim, dtype=dt)  # a1 = U1 x + c1
        self.message2 = nn.Linear(z1_dim, z2_dim, dtype=dt)  # a2 = U2 tanh(a1) + c2
        self.register_buffer("states1", binary_states(z1_dim), persistent=False)
        self.register_buffer("states2", binary_states(z2_dim), persistent=False)

    # -- the pieces -----------------------------------------------------------------------------
    def _flat(self, x: Tensor, where: str) -> Tensor:
        check_tensor(x, "x", f"BinaryHierarchyVAE.{where}")
        if x[0].numel() != self.x_dim:
            raise ValueError(
                f"BinaryHierarchyVAE.{where}: x must hold {self.x_dim} values per example, got "
                f"shape {tuple(x.shape)}"
            )
        return x.reshape(x.shape[0], self.x_dim).to(torch.float64)

    def messages(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The encoder's bottom-up messages ``(a1 [B, z1_dim], a2 [B, z2_dim])``."""
        a1 = self.message1(self._flat(x, "messages"))
        return a1, self.message2(torch.tanh(a1))

    def prior_logits_z1(self, z2: Tensor, detach: bool = False) -> Tensor:
        """``d1(z2) = W1 z2 + b1``, the logits of ``p(z1 | z2)``: ``[..., z1_dim]``
        (``detach``: no gradient reaches the generative weights)."""
        if detach:
            return F.linear(z2, self.layer1.weight.detach(), self.layer1.bias.detach())
        return self.layer1(z2)

    def _b2(self, detach: bool) -> Tensor:
        return self.prior_logits.detach() if detach else self.prior_logits

    def _decoder_logits(self, detach: bool) -> Tensor:
        """Logits of ``p(x | z1)`` for every state ``z1``: ``[S1, x_dim]``."""
        if detach:
            return F.linear(self.states1, self.layer0.weight.detach(), self.layer0.bias.detach())
        return self.layer0(self.states1)

    def log_px_given_z1(self, x: Tensor, detach: bool = False) -> Tensor:
        """``log p(x | z1)`` for every state ``z1``: ``[B, S1]``."""
        xf = self._flat(x, "log_px_given_z1")
        logits = self._decoder_logits(detach)  # [S1, x_dim]
        return xf @ logits.T - log1p_exp(logits).sum(-1)  # sum_j x_j l_j - log(1 + e^l_j)

    def log_pz1_given_z2(self) -> Tensor:
        """``log p(z1 | z2)`` for every pair of states: ``[S2, S1]``."""
        return state_log_probs(self.prior_logits_z1(self.states2), self.states1)

    def log_pz2(self) -> Tensor:
        """``log p(z2)`` for every state: ``[S2]``."""
        return state_log_probs(self.prior_logits, self.states2)

    # -- exact inference by enumeration ---------------------------------------------------------
    def log_px_given_z2(self, x: Tensor) -> Tensor:
        """The backward recursion ``log p(x | z2) = log sum_z1 p(z1 | z2) p(x | z1)``:
        ``[B, S2]``."""
        return torch.logsumexp(
            self.log_pz1_given_z2().unsqueeze(0) + self.log_px_given_z1(x).unsqueeze(1), -1
        )

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact ``log p(x) = log sum_z2 p(z2) p(x | z2)``: ``[B]``."""
        return torch.logsumexp(self.log_pz2() + self.log_px_given_z2(x), -1)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The exact posterior in top-down form: ``log p(z2 | x)`` ``[B, S2]`` and
        ``log p(z1 | z2, x)`` ``[B, S2, S1]``."""
        log_px_z1 = self.log_px_given_z1(x).unsqueeze(1)  # [B, 1, S1]
        joint1 = self.log_pz1_given_z2().unsqueeze(0) + log_px_z1  # p(z1|z2) p(x|z1)
        log_px_z2 = torch.logsumexp(joint1, -1)  # [B, S2]
        top = self.log_pz2() + log_px_z2
        return top - torch.logsumexp(top, -1, keepdim=True), joint1 - log_px_z2.unsqueeze(-1)

    def q_logits(
        self,
        x: Tensor,
        a1: Tensor | None = None,
        a2: Tensor | None = None,
        detach: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """Logits of ``q(z2 | x)`` ``[B, z2_dim]`` and of ``q(z1 | z2, x)`` for every state
        ``z2``, ``[B, S2, z1_dim]``; ``a1``, ``a2`` replace the encoder's messages if given
        (``detach``: no gradient reaches the generative weights they share)."""
        if a1 is None or a2 is None:
            m1, m2 = self.messages(x)
            a1 = m1 if a1 is None else a1
            a2 = m2 if a2 is None else a2
        eta2 = self._b2(detach) + a2
        eta1 = self.prior_logits_z1(self.states2, detach).unsqueeze(0) + a1.unsqueeze(1)
        return eta2, eta1

    def q_log_probs(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``log q(z2 | x)`` ``[B, S2]`` and ``log q(z1 | z2, x)`` ``[B, S2, S1]``."""
        eta2, eta1 = self.q_logits(x)
        return state_log_probs(eta2, self.states2), state_log_probs(eta1, self.states1)

    def elbo_terms(
        self,
        x: Tensor,
        a1: Tensor | None = None,
        a2: Tensor | None = None,
        detach: bool = False,
    ) -> dict[str, Tensor]:
        """The exact ELBO by enumeration, per example ``[B]``: ``log_px_z`` = E_q log p(x | z1),
        ``kl_z2`` = KL(q(z2 | x) || p(z2)), ``kl_z1`` = E_q(z2|x) KL(q(z1 | z2, x) || p(z1 | z2))
        (closed-form Bernoulli KLs), ``kl`` and ``elbo``; differentiable in every parameter
        (and in ``a1``, ``a2`` when given), or only in the encoder's with ``detach``."""
        eta2, eta1 = self.q_logits(x, a1, a2, detach)
        q2 = torch.exp(state_log_probs(eta2, self.states2))  # [B, S2]
        q1 = torch.exp(state_log_probs(eta1, self.states1))  # [B, S2, S1]
        log_px_z1 = self.log_px_given_z1(x, detach)  # [B, S1]
        log_px_z = (q2 * (q1 * log_px_z1.unsqueeze(1)).sum(-1)).sum(-1)
        kl_z2 = bernoulli_kl(eta2, self._b2(detach))
        kl_z1 = (q2 * bernoulli_kl(eta1, self.prior_logits_z1(self.states2, detach))).sum(-1)
        kl = kl_z1 + kl_z2
        return {
            "log_px_z": log_px_z,
            "kl_z1": kl_z1,
            "kl_z2": kl_z2,
            "kl": kl,
            "elbo": log_px_z - kl,
        }

    def loss(self, x: Tensor) -> dict[str, Tensor]:
        """The training objective of :class:`dgmlib.train.Trainer`: ``loss`` = minus the exact
        ELBO averaged over the batch, with the batch means of the terms of :meth:`elbo_terms`."""
        t = {k: v.mean() for k, v in self.elbo_terms(x).items()}
        t["loss"] = -t["elbo"]
        return t

    def posterior_kls(self, x: Tensor) -> dict[str, Tensor]:
        """The ELBO gap split by layer, per example ``[B]``: ``top`` = KL(q(z2 | x) ||
        p(z2 | x)), ``bottom`` = E_q(z2|x) KL(q(z1 | z2, x) || p(z1 | z2, x)); their sum is
        KL(q(z1, z2 | x) || p(z1, z2 | x)) = log p(x) - ELBO."""
        log_p2, log_p1 = self.posterior(x)
        log_q2, log_q1 = self.q_log_probs(x)
        q2 = log_q2.exp()
        top = (q2 * (log_q2 - log_p2)).sum(-1)
        bottom = (q2 * (log_q1.exp() * (log_q1 - log_p1)).sum(-1)).sum(-1)
        return {"top": top, "bottom": bottom}


# --------------------------------------------------------------------------------------------
# Gradient estimators, measured against the exact gradient
# --------------------------------------------------------------------------------------------


def _one_image(model: BinaryHierarchyVAE, x: Tensor, where: str) -> Tensor:
    xf = model._flat(x, where) if x.dim() > 1 else model._flat(x.unsqueeze(0), where)
    if xf.shape[0] != 1:
        raise ValueError(f"{where}: x must be one image, got {xf.shape[0]}")
    return xf


def exact_gradient(model: BinaryHierarchyVAE, x: Tensor) -> Tensor:
    """``d ELBO(x) / d (a1, a2)``, the gradient of the exact ELBO of one image with respect to
    the encoder's messages (treated as free parameters): ``[z1_dim + z2_dim]``."""
    xf = _one_image(model, x, "exact_gradient")
    a1, a2 = (m.detach().requires_grad_(True) for m in model.messages(xf))
    elbo = model.elbo_terms(xf, a1, a2)["elbo"].sum()
    g1, g2 = torch.autograd.grad(elbo, (a1, a2))
    return torch.cat([g1[0], g2[0]])


def sample_latents(
    model: BinaryHierarchyVAE, x: Tensor, n: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """``n`` ancestral draws ``z2 ~ q(z2 | x)``, ``z1 ~ q(z1 | z2, x)`` for one image:
    ``(z2 [n, z2_dim], z1 [n, z1_dim])``."""
    check_int(n, "n", "sample_latents")
    xf = _one_image(model, x, "sample_latents")
    with torch.no_grad():
        a1, a2 = model.messages(xf)
        eta2 = (model.prior_logits + a2).expand(n, -1)
        z2 = torch.bernoulli(torch.sigmoid(eta2), generator=generator)
        z1 = torch.bernoulli(torch.sigmoid(model.prior_logits_z1(z2) + a1), generator=generator)
    return z2, z1


def per_sample_gradients(
    model: BinaryHierarchyVAE, x: Tensor, z2: Tensor, z1: Tensor, estimator: str
) -> Tensor:
    """One gradient estimate of ``d ELBO(x) / d (a1, a2)`` per row of the binary latents
    ``z2 [R, z2_dim]``, ``z1 [R, z1_dim]`` (drawn from ``q``, or every state for an exact mean):
    ``[R, z1_dim + z2_dim]``.

    Both estimators differentiate the single-sample ELBO
    ``f(z) = log p(x | z1) - KL(q(z2 | x) || p(z2)) - KL(q(z1 | z2, x) || p(z1 | z2))``, whose
    mean under ``q`` is the ELBO:

    * ``"straight-through"``: ``z_i`` is replaced by ``p_i + stopgrad(z_i - p_i)`` with
      ``p_i = sigmoid(logits of q)``, so the forward pass sees the binary sample and the backward
      pass treats it as ``p_i`` (biased);
    * ``"reinforce"``: the score-function estimator ``f(z) d log q(z | x) + df`` with ``z`` held
      fixed (unbiased).
    """
    check_choice(estimator, "estimator", "per_sample_gradients", ESTIMATORS)
    xf = _one_image(model, x, "per_sample_gradients")
    z2, z1 = z2.to(torch.float64), z1.to(torch.float64)
    if z2.dim() != 2 or z1.dim() != 2 or z2.shape[0] != z1.shape[0]:
        raise ValueError(
            "per_sample_gradients: z2 and z1 must be [R, z2_dim] and [R, z1_dim] with the same "
            f"R, got {tuple(z2.shape)} and {tuple(z1.shape)}"
        )
    R = z2.shape[0]
    m1, m2 = model.messages(xf)
    a1 = m1.detach().expand(R, -1).clone().requires_grad_(True)
    a2 = m2.detach().expand(R, -1).clone().requires_grad_(True)
    eta2 = model.prior_logits + a2
    if estimator == "straight-through":
        p2 = torch.sigmoid(eta2)
        z2 = p2 + (z2 - p2).detach()
    d1 = model.prior_logits_z1(z2)
    eta1 = d1 + a1
    if estimator == "straight-through":
        p1 = torch.sigmoid(eta1)
        z1 = p1 + (z1 - p1).detach()
    logits_x = model.layer0(z1)
    f = (
        bernoulli_log_prob(xf, logits_x)
        - bernoulli_kl(eta2, model.prior_logits)
        - bernoulli_kl(eta1, d1)
    )
    if estimator == "reinforce":
        log_q = bernoulli_log_prob(z2, eta2) + bernoulli_log_prob(z1, eta1)
        f = f + f.detach() * log_q  # d: f d log q + df
    g1, g2 = torch.autograd.grad(f.sum(), (a1, a2))
    return torch.cat([g1, g2], -1)


def estimator_moments(model: BinaryHierarchyVAE, x: Tensor, estimator: str) -> dict[str, Tensor]:
    """The exact mean ``[z1_dim + z2_dim]`` and covariance ``[P, P]`` of an estimator of
    :func:`per_sample_gradients` for one image, by enumerating every latent state weighted by
    ``q(z2, z1 | x)``."""
    xf = _one_image(model, x, "estimator_moments")
    S1, S2 = model.states1, model.states2
    z2 = S2.repeat_interleave(len(S1), 0)
    z1 = S1.repeat(len(S2), 1)
    with torch.no_grad():
        log_q2, log_q1 = model.q_log_probs(xf)
        w = (log_q2.unsqueeze(-1) + log_q1)[0].reshape(-1).exp()  # [S2 * S1], z2-major
    g = per_sample_gradients(model, xf, z2, z1, estimator)
    mean = w @ g
    centred = g - mean
    return {"mean": mean, "cov": (centred * w.unsqueeze(-1)).T @ centred}
