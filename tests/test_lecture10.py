"""Lecture 10 (VAE approximation errors): the claims of its binary-harmonium section, replayed on
other models than the notebook's, and its checkpoint figures (none of its own)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from dgmlib import harmonium
from dgmlib.optim import lbfgs_minimise

DT = torch.float64

#: Lecture 10 trains no model of its own: section 4 loads "l02_vae_z20", whose stored figure is
#: recomputed by tests/test_lecture02.py. So no checkpoint name maps to lecture 10.
CHECKPOINT_FIGURES: dict[str, Callable[[nn.Module], tuple[float, float, float]]] = {}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_harmonium_has_a_tight_elbo_with_its_affine_encoder(seed):
    """The theorem's sufficiency, on random RBMs (n = 5, m = 4): the encoder W^T x + v gives
    log p(x) - ELBO = 0 at every x, to round-off (1e-12)."""
    g = torch.Generator().manual_seed(seed)
    W = 1.5 * torch.randn(5, 4, generator=g, dtype=DT)
    u, v = torch.randn(5, generator=g, dtype=DT), torch.randn(4, generator=g, dtype=DT)
    z, x = harmonium.binary_states(4), harmonium.binary_states(5)
    log_prior, logits = harmonium.rbm_log_prior(W, u, v), z @ W.T + u
    gap = harmonium.log_marginal(log_prior, logits) - harmonium.elbo(log_prior, logits, x @ W + v)
    assert gap.abs().max() < 1e-12


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_posterior_factorised_iff_both_conditions_hold(seed):
    """The theorem's necessity, on random decoders made to fail one condition at a time: the
    posterior's largest interaction of order >= 2 vanishes only when both do."""
    g = torch.Generator().manual_seed(seed)
    z = harmonium.binary_states(3)
    linear = z @ torch.randn(4, 3, generator=g, dtype=DT).T + torch.randn(4, generator=g, dtype=DT)
    bent = linear + 0.8 * (z[:, :1] * z[:, 1:2]) * torch.randn(4, generator=g, dtype=DT)
    v = torch.randn(3, generator=g, dtype=DT)

    def prior_meeting_condition_2(logits):
        unnormalised = z @ v + harmonium.softplus(logits).sum(-1)
        return unnormalised - torch.logsumexp(unnormalised, 0)

    uniform = torch.full((8,), -math.log(8), dtype=DT)
    cases = {
        "both hold": (prior_meeting_condition_2(linear), linear, True),
        "condition 2 fails": (uniform, linear, False),
        "condition 1 fails": (prior_meeting_condition_2(bent), bent, False),
    }
    for name, (log_prior, logits, factorised) in cases.items():
        size = harmonium.nonaffine_size(harmonium.log_posterior(log_prior, logits)).max()
        assert (size < 1e-12) == factorised, name
        assert factorised or size > 1e-3, name
        gap = harmonium.approximation_gap(log_prior, logits)
        assert (gap.max() < 1e-12) == factorised, name


def two_cause_logits(theta: torch.Tensor, n: int = 6) -> torch.Tensor:
    """The notebook's two-cause model: d_i(z) = w1 z1 + w2 z2 + b for every sensor, [4, n]."""
    return (harmonium.binary_states(2) @ theta[:2])[:, None].expand(4, n) + theta[2]


UNIFORM2 = torch.full((4,), -math.log(4), dtype=DT)


def elbo_optimum(p_d: torch.Tensor, start: torch.Tensor) -> tuple[float, torch.Tensor]:
    """max over theta and a lookup-table encoder of E_pd ELBO, by joint L-BFGS from start."""
    theta = start.clone().requires_grad_(True)
    lj = harmonium.log_joint(UNIFORM2, two_cause_logits(start))
    ell = harmonium.best_factorised_logits(lj).requires_grad_(True)
    value = -lbfgs_minimise(
        [theta, ell],
        lambda: -(p_d * harmonium.elbo(UNIFORM2, two_cause_logits(theta), ell)).sum(),
        max_iter=1500,
    )
    return value, theta.detach()


def consistent_ml(p_d: torch.Tensor) -> float:
    """max of E_pd log p(x) over the consistent set w1 = 0, no encoder."""
    wb = torch.tensor([1.0, 0.0], dtype=DT, requires_grad=True)
    return -lbfgs_minimise(
        [wb],
        lambda: (
            -(
                p_d
                * harmonium.log_marginal(
                    UNIFORM2, two_cause_logits(torch.cat([torch.zeros(1, dtype=DT), wb]))
                )
            ).sum()
        ),
        tol=1e-11,
    )


@pytest.mark.slow
@pytest.mark.parametrize("theta_d", [(2.0, 3.0, -2.5), (2.5, 2.5, -2.5)])
def test_no_start_finds_an_elbo_above_the_consistent_maximum_likelihood(theta_d):
    """Check 10's ELBO optimum (the ML model of the consistent set) from several asymmetric
    starts: none ends higher (by more than the optimisers' precision, 1e-8), every one ends at
    it or below, and the unconstrained ML (-H(p_d)) is strictly above it."""
    log_pd = harmonium.log_marginal(UNIFORM2, two_cause_logits(torch.tensor(theta_d, dtype=DT)))
    p_d = log_pd.exp()
    target = consistent_ml(p_d)
    assert -(p_d * log_pd).sum().item() > target + 1e-2
    starts = [theta_d, (0.5, 0.3, -0.5), (3.0, 0.5, -1.0), (-1.0, 2.0, 0.0), (1.0, -2.0, 1.0)]
    values = [elbo_optimum(p_d, torch.tensor(s, dtype=DT))[0] for s in starts]
    assert max(values) < target + 1e-8, values
    assert sum(abs(v - target) < 1e-8 for v in values) >= 3, values


def test_the_symmetric_ascent_of_exercise_d_stops_below_the_consistent_set():
    """Further exercise (d): from w1 = w2 the ascent keeps w1 = w2 and stops at a point whose ELBO
    is below the consistent maximum likelihood, with a positive gap left (a saddle)."""
    log_pd = harmonium.log_marginal(
        UNIFORM2, two_cause_logits(torch.tensor([1.5, 1.5, -1.5], dtype=DT))
    )
    p_d = log_pd.exp()
    value, theta = elbo_optimum(p_d, torch.tensor([1.0, 1.0, -1.0], dtype=DT))
    assert abs(theta[0] - theta[1]) < 1e-6 and theta[0] > 0.5
    assert value < consistent_ml(p_d) - 1e-2
    gap = harmonium.approximation_gap(UNIFORM2, two_cause_logits(theta))
    assert (p_d * gap).sum() > 1e-2


def encoder_gaps(log_prior: torch.Tensor, logits: torch.Tensor) -> tuple[float, float, float]:
    """(lookup-table floor, best MLP with 64 tanh units, best affine) mean gaps under p(x), nats."""
    x = harmonium.binary_states(logits.shape[1])
    log_px = harmonium.log_marginal(log_prior, logits)
    p_x = log_px.exp()
    floor = (p_x * harmonium.approximation_gap(log_prior, logits)).sum().item()

    def mean_gap(q):
        return (p_x * (log_px - harmonium.elbo(log_prior, logits, q))).sum()

    gm = torch.Generator().manual_seed(0)
    W1 = (torch.randn(5, 64, generator=gm, dtype=DT) / math.sqrt(5)).requires_grad_(True)
    W2 = (torch.randn(64, 3, generator=gm, dtype=DT) / 8).requires_grad_(True)
    b1 = torch.zeros(64, dtype=DT, requires_grad=True)
    b2 = torch.zeros(3, dtype=DT, requires_grad=True)
    mlp = lbfgs_minimise([W1, b1, W2, b2], lambda: mean_gap(torch.tanh(x @ W1 + b1) @ W2 + b2), 200)
    A = torch.zeros(5, 3, dtype=DT, requires_grad=True)
    b = torch.zeros(3, dtype=DT, requires_grad=True)
    return floor, mlp, lbfgs_minimise([A, b], lambda: mean_gap(x @ A + b))


def test_a_bigger_encoder_only_reaches_the_lookup_floor():
    """Check 9 on another tanh decoder: an MLP encoder with 64 units does not go below the
    lookup-table gap, which stays positive; the affine encoder closes the gap at gain 0 only."""
    g = torch.Generator().manual_seed(11)
    z = harmonium.binary_states(3)
    C, V = 2 * torch.randn(3, 3, generator=g, dtype=DT), torch.randn(5, 3, generator=g, dtype=DT)
    c = -C.sum(1) / 2
    for gain in (0.0, 1.5):
        h = z @ C.T + c
        logits = (h if gain == 0 else torch.tanh(gain * h) / gain) @ V.T
        unnormalised = harmonium.softplus(logits).sum(-1)  # the prior meeting condition 2
        floor, mlp, affine = encoder_gaps(unnormalised - torch.logsumexp(unnormalised, 0), logits)
        assert mlp > floor - 1e-9 and affine > floor - 1e-9
        if gain == 0:
            assert floor < 1e-12 and affine < 1e-6
        else:
            assert floor > 1e-3 and mlp - floor < 1e-3
