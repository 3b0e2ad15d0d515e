"""dgmlib.ode: the hand-written adjoint against closed forms (matrix exponential and its Frechet
derivative) and against backpropagation through the solver; divergences against explicit
Jacobians; Hutchinson's variance formulas against exact moment sums; the saved-memory count
against hand-counted graphs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.linalg as sl
import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

from dgmlib.ode import (
    adjoint_dynamics,
    adjoint_gradients,
    divergence_exact,
    divergence_hutchinson,
    fixed_grid,
    hutchinson_probes,
    hutchinson_variance,
    odeint_adjoint_by_hand,
    saved_tensor_bytes,
)

DT = torch.float64
TIGHT = {"rtol": 1e-10, "atol": 1e-12}


class Linear(nn.Module):
    def __init__(self, A: torch.Tensor) -> None:
        super().__init__()
        self.A = nn.Parameter(A.clone())
        self.unused = nn.Linear(2, 3).to(DT)  # must get exactly zero gradient
        self.nfe = 0

    def forward(self, t, z):
        self.nfe += 1
        return z @ self.A.T


class Cubic(nn.Module):
    """torchdiffeq's own non-linear test problem, dz/dt = (z^3) A."""

    def __init__(self) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=DT))

    def forward(self, t, z):
        return (z**3) @ self.A


def linear_problem(d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = 0.3 * torch.randn(d, d, generator=g, dtype=DT)
    z0 = torch.randn(d, generator=g, dtype=DT)
    return A, z0, g


def analytic_linear_gradients(A, z0, t, gy):
    """dL/dz0, dL/dt, dL/dA of L = sum_i gy_i . expm((t_i - t_0) A) z0, entry by entry from
    scipy's matrix exponential and its Frechet derivative (no adjoint identity used)."""
    A, z0, gy = A.numpy(), z0.numpy(), gy.numpy()
    d = len(z0)
    gz, gt, gA = gy[0].copy(), np.zeros(len(t)), np.zeros((d, d))
    for i in range(1, len(t)):
        tau = float(t[i] - t[0])
        E = sl.expm(tau * A)
        gz += E.T @ gy[i]
        gt[i] = gy[i] @ A @ E @ z0
        gt[0] -= gt[i]
        for j, k in itertools.product(range(d), range(d)):
            D = np.zeros((d, d))
            D[j, k] = tau
            gA[j, k] += gy[i] @ sl.expm_frechet(tau * A, D, compute_expm=False) @ z0
    return torch.tensor(gz), torch.tensor(gt), torch.tensor(gA)


@pytest.mark.parametrize("times", [(0.0, 0.5, 1.2), (2.0, 1.0, -0.5)], ids=["up", "down"])
def test_hand_adjoint_matches_the_matrix_exponential(times):
    A, z0, g = linear_problem()
    t = torch.tensor(times, dtype=DT, requires_grad=True)
    gy = torch.randn(len(times), 3, generator=g, dtype=DT)
    f = Linear(A)
    z = z0.clone().requires_grad_(True)
    ys = odeint_adjoint_by_hand(f, z, t, **TIGHT)
    tv = t.detach()
    # the forward values are the closed form
    for i in range(len(times)):
        ref = torch.tensor(sl.expm(float(tv[i] - tv[0]) * A.numpy()) @ z0.numpy())
        assert (ys[i] - ref).abs().max() < 1e-8
    (ys * gy).sum().backward()
    gz, gt, gA = analytic_linear_gradients(A, z0, t.detach(), gy)
    # rtol 1e-10 over a short horizon: errors of order 1e-9; torchdiffeq's own bound is 1e-5
    assert (z.grad - gz).abs().max() < 1e-7
    assert (t.grad - gt).abs().max() < 1e-7
    assert (f.A.grad - gA).abs().max() < 1e-7
    assert f.unused.weight.grad is None or f.unused.weight.grad.abs().max() == 0


def test_hand_adjoint_agrees_with_backprop_and_torchdiffeq_on_a_nonlinear_ode():
    t = torch.linspace(0.0, 2.0, 4, dtype=DT)
    gy = torch.rand(4, 1, 2, generator=torch.Generator().manual_seed(1), dtype=DT)
    grads = {}
    for name, solve in [("bp", odeint), ("tdq", odeint_adjoint), ("hand", odeint_adjoint_by_hand)]:
        f = Cubic()
        z0 = torch.tensor([[1.0, 0.3]], dtype=DT, requires_grad=True)
        tt = t.clone().requires_grad_(True)
        (solve(f, z0, tt, rtol=1e-9, atol=1e-12) * gy).sum().backward()
        grads[name] = (z0.grad, tt.grad, f.A.grad)
    for name in ("tdq", "hand"):
        for a, b in zip(grads[name], grads["bp"], strict=True):
            assert (a - b).abs().max() < 1e-5, name  # torchdiffeq's tolerance for smooth ODEs
    # the two adjoints integrate the same backward system with the same solver
    for a, b in zip(grads["tdq"], grads["hand"], strict=True):
        assert (a - b).abs().max() < 1e-8


def test_adjoint_dynamics_of_a_linear_field_in_closed_form():
    """For f = A z (rows of z are states): f = z A^T, -a^T df/dz = -a A, -a^T df/dA = -a^T z
    summed over the batch, and zeros for the parameters f does not use."""
    A, _, g = linear_problem()
    f = Linear(A)
    z, a = torch.randn(4, 3, generator=g, dtype=DT), torch.randn(4, 3, generator=g, dtype=DT)
    fz, da, (dA, dw, db) = adjoint_dynamics(f, list(f.parameters()), torch.tensor(0.0), z, a)
    assert (fz - z @ A.T).abs().max() < 1e-14 and not fz.requires_grad
    assert (da - -(a @ A)).abs().max() < 1e-14
    assert (dA - -(a.T @ z)).abs().max() < 1e-14
    assert torch.equal(dw, torch.zeros_like(dw)) and torch.equal(db, torch.zeros_like(db))


def test_fixed_grid_rk4_is_the_taylor_polynomial_per_step():
    """On dz/dt = z every 4-stage Runge-Kutta method of order 4 multiplies z by the Taylor
    polynomial 1 + h + h^2/2 + h^3/6 + h^4/24 per step: n steps of h = 1/n give its n-th power,
    exactly up to round-off (and not e, which the solver only approaches)."""
    z0 = torch.ones(1, dtype=DT)
    t = torch.tensor([0.0, 1.0], dtype=DT)
    for n in (1, 3, 8):
        h = 1.0 / n
        end = odeint(lambda tt, z: z, z0, t, **fixed_grid(n))[-1].item()
        assert abs(end - (1 + h + h**2 / 2 + h**3 / 6 + h**4 / 24) ** n) < 1e-14
        assert abs(end - np.e) > 1e-9
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1"):
        fixed_grid(0)


def test_adjoint_gradients_rejects_bad_inputs():
    f = Linear(torch.eye(2, dtype=DT))
    with pytest.raises(ValueError, match="strictly increasing or strictly decreasing"):
        adjoint_gradients(f, torch.tensor([0.0, 1.0, 0.5]), torch.zeros(3, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="same shape"):
        adjoint_gradients(f, torch.tensor([0.0, 1.0]), torch.zeros(2, 2), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="at least two times"):
        odeint_adjoint_by_hand(f, torch.zeros(2), torch.tensor([0.0]))
    with pytest.raises(TypeError, match="t must be a torch.Tensor"):
        odeint_adjoint_by_hand(f, torch.zeros(2), [0.0, 1.0])


def test_divergences_match_explicit_jacobians():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 3)).to(DT)
    z = torch.randn(5, 3, dtype=DT, requires_grad=True)
    dz = net(z)
    jac = torch.stack([torch.autograd.functional.jacobian(net, zi) for zi in z.detach()])
    assert (
        divergence_exact(dz, z) - torch.diagonal(jac, dim1=1, dim2=2).sum(1)
    ).abs().max() < 1e-12
    eps = hutchinson_probes((5, 3), "gaussian", torch.Generator().manual_seed(1))
    expected = torch.einsum("bi,bij,bj->b", eps, jac, eps)
    assert (divergence_hutchinson(dz, z, eps) - expected).abs().max() < 1e-12
    # create_graph makes the divergence differentiable (needed to train a CNF)
    div = divergence_exact(net(z), z, create_graph=True)
    assert div.requires_grad


@pytest.mark.parametrize("d", [2, 4])
def test_hutchinson_variance_formulas_are_the_exact_moments(d):
    A = torch.randn(d, d, generator=torch.Generator().manual_seed(d), dtype=DT)
    # Rademacher: exact enumeration of all 2^d sign vectors
    signs = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=d)), dtype=DT)
    est = torch.einsum("ni,ij,nj->n", signs, A, signs)
    assert abs(est.mean() - torch.trace(A)) < 1e-12
    assert abs(est.var(unbiased=False) - hutchinson_variance(A, "rademacher")) < 1e-10
    # Gaussian: Isserlis, E[e_i e_j e_k e_l] = d_ij d_kl + d_ik d_jl + d_il d_jk, summed over A
    eye = torch.eye(d, dtype=DT)
    m4 = (
        torch.einsum("ij,kl->ijkl", eye, eye)
        + torch.einsum("ik,jl->ijkl", eye, eye)
        + torch.einsum("il,jk->ijkl", eye, eye)
    )
    second = torch.einsum("ij,kl,ijkl->", A, A, m4)
    assert abs(second - torch.trace(A) ** 2 - hutchinson_variance(A, "gaussian")) < 1e-10


def test_hutchinson_probes():
    g = torch.Generator().manual_seed(0)
    r = hutchinson_probes((4000, 3), "rademacher", g)
    assert set(r.unique().tolist()) == {-1.0, 1.0}
    n = hutchinson_probes((4000, 3), "gaussian", g)
    assert n.dtype == DT and abs(n.mean()) < 0.1  # s.e. 1/sqrt(12000) ~ 0.009
    with pytest.raises(ValueError, match="kind must be one of"):
        hutchinson_probes((2,), "uniform")
    with pytest.raises(ValueError, match="kind must be one of"):
        hutchinson_variance(torch.eye(2), "uniform")


def test_saved_tensor_bytes_counts_distinct_storages():
    x = torch.randn(10, dtype=DT, requires_grad=True)
    w = torch.randn(10, dtype=DT, requires_grad=True)
    n_bytes, n, out = saved_tensor_bytes(lambda: (x * w).sum())
    assert (n_bytes, n) == (160, 2)  # mul keeps both operands
    n_bytes, n, out = saved_tensor_bytes(lambda: (x * x).exp().sum())
    assert (n_bytes, n) == (160, 2)  # x (kept twice, counted once) and exp's result
    n_bytes, n, out = saved_tensor_bytes(lambda: (x + w).sum())
    assert (n_bytes, n) == (0, 0)  # addition keeps nothing
    # what a discarded intermediate saved is not kept: only y's graph counts
    n_bytes, n, out = saved_tensor_bytes(lambda: (x.abs().sum(), (x + w).sum())[1])
    assert (n_bytes, n) == (0, 0)
    with torch.no_grad():
        assert saved_tensor_bytes(lambda: (x * w).sum())[:2] == (0, 0)
    assert saved_tensor_bytes(lambda: (x * w).sum(), exclude=[w])[:2] == (80, 1)


def test_memory_of_backprop_grows_with_steps_and_adjoint_does_not():
    A, z0, _ = linear_problem(d=4)
    f = Linear(A)
    z = z0.expand(8, 4).clone().requires_grad_(True)
    t = torch.tensor([0.0, 1.0], dtype=DT)
    solver = fixed_grid
    bp = [saved_tensor_bytes(lambda n=n: odeint(f, z, t, **solver(n)))[0] for n in (2, 4, 8)]
    adj = [
        saved_tensor_bytes(lambda n=n: odeint_adjoint_by_hand(f, z, t, **solver(n)))[0]
        for n in (2, 4, 8)
    ]
    assert bp[2] - bp[1] == 2 * (bp[1] - bp[0]) > 0  # linear in the number of steps
    # t, ys, A and the unused layer's 9 parameters, float64
    assert adj[0] == adj[1] == adj[2] == 8 * (2 + 2 * 8 * 4 + 16 + 9)
    # the backward pass evaluates f 4 times per step, with no extra evaluation for dL/dt
    f.nfe = 0
    odeint_adjoint_by_hand(f, z, t, **solver(4)).sum().backward()
    assert f.nfe == 2 * 4 * 4
