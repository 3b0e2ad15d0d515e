"""dgmlib.cnf: the CNF's log-density against the closed-form push-forward of a linear flow,
Hutchinson's estimate averaged over all sign patterns against the exact trace, the adjoint
gradient against backpropagation, and the ring density against torch.distributions."""

from __future__ import annotations

import itertools
import math

import pytest
import scipy.linalg as sl
import torch
from torch import nn
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from dgmlib.cnf import CNF, ConcatMLP, ring_log_prob, standard_normal_log_prob
from dgmlib.data import toy_2d
from dgmlib.ode import fixed_grid

DT = torch.float64
TIGHT = {"rtol": 1e-10, "atol": 1e-12}


class LinearField(nn.Module):
    def __init__(self, A):
        super().__init__()
        self.A = nn.Parameter(A.clone())

    def forward(self, t, z):
        return z @ self.A.T


def test_log_prob_of_a_linear_flow_is_the_pushed_forward_gaussian():
    A = torch.tensor([[0.3, -0.8], [0.5, 0.1]], dtype=DT)
    cnf = CNF(LinearField(A))
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=DT)
    with torch.no_grad():
        lp = cnf.log_prob(x, t0=0.0, t1=1.5, **TIGHT)
    E = torch.tensor(sl.expm(1.5 * A.numpy()))
    ref = MultivariateNormal(torch.zeros(2, dtype=DT), covariance_matrix=E @ E.T).log_prob(x)
    assert (lp - ref).abs().max() < 1e-8
    # samples are the base points pushed by expm(1.5 A)
    z0 = torch.randn(4, 2, generator=torch.Generator().manual_seed(1), dtype=DT)
    assert (cnf.sample(z0, 0.0, 1.5, **TIGHT) - z0 @ E.T).abs().max() < 1e-8


def test_hutchinson_over_all_sign_patterns_is_the_exact_trace():
    """In 2-D the 4 Rademacher patterns average eps^T J eps to tr J exactly at every point; with a
    fixed grid the solver is linear in the trace column, so the log-densities average exactly."""
    torch.manual_seed(0)
    net = ConcatMLP(2, 16, 2, "tanh", init_scale=1.0).to(DT)
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(2), dtype=DT)
    exact = CNF(net, "exact")
    with torch.no_grad():
        ref = exact.log_prob(x, **fixed_grid(6))
        est = CNF(net, "hutchinson")
        total = torch.zeros(3, dtype=DT)
        for s in itertools.product([-1.0, 1.0], repeat=2):
            est.eps = torch.tensor(s, dtype=DT).expand(3, 2)
            total += est.log_prob(x, **fixed_grid(6))
    assert (total / 4 - ref).abs().max() < 1e-12
    # a single pattern is not exact: the check above can fail
    assert (est.log_prob(x, **fixed_grid(6)) - ref).abs().max() > 1e-6
    with pytest.raises(RuntimeError, match="set cnf.eps"):
        est.eps = None
        est.log_prob(x, **fixed_grid(2))


def test_adjoint_gradient_of_the_log_density_matches_backprop():
    torch.manual_seed(1)
    net = ConcatMLP(2, 8, 2, "softplus", init_scale=1.0).to(DT)
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(3), dtype=DT)
    grads = []
    for adjoint in (False, True):
        cnf = CNF(net)
        net.zero_grad()
        (-cnf.log_prob(x, adjoint=adjoint, rtol=1e-9, atol=1e-12).mean()).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in net.parameters()]))
    assert (grads[0] - grads[1]).abs().max() < 1e-5  # torchdiffeq's bound for smooth ODEs


def test_ring_log_prob_is_the_mixture_of_toy_2d():
    x, labels = toy_2d("ring", 3000, seed=0, noise=0.3)
    angle = torch.arange(8, dtype=DT) * (2 * math.pi / 8)
    centres = 2.0 * torch.stack([angle.cos(), angle.sin()], 1)
    mix = MixtureSameFamily(
        Categorical(logits=torch.zeros(8, dtype=DT)),
        MultivariateNormal(
            centres, covariance_matrix=0.09 * torch.eye(2, dtype=DT).expand(8, 2, 2)
        ),
    )
    xd = x.double()
    assert (ring_log_prob(xd, 0.3) - mix.log_prob(xd)).abs().max() < 1e-12
    # the samples' own centres are the mixture's: distances to their centre are 0.3 * chi_2
    r = (xd - centres[labels]).norm(dim=1)
    assert abs(r.square().mean() / 0.09 - 2.0) < 4 * 2.0 / math.sqrt(3000)  # chi^2_2: sd 2
    # it integrates to one over a wide grid (midpoint rule, smooth integrand)
    h = 0.02
    g = torch.arange(-4 + h / 2, 4, h, dtype=DT)
    grid = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1)
    assert abs(ring_log_prob(grid, 0.3).exp().sum() * h * h - 1) < 1e-6


def test_concat_mlp_and_base_density():
    net = ConcatMLP(3, 5, 2)
    assert net(torch.tensor(0.5), torch.zeros(7, 3)).shape == (7, 3)
    with pytest.raises(ValueError, match="activation"):
        ConcatMLP(activation="relu")
    z = torch.randn(5, 3, dtype=DT)
    ref = MultivariateNormal(torch.zeros(3, dtype=DT), torch.eye(3, dtype=DT)).log_prob(z)
    assert (standard_normal_log_prob(z) - ref).abs().max() < 1e-12
    with pytest.raises(ValueError, match="trace must be"):
        CNF(net, "approximate")
