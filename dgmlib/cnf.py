"""A continuous normalizing flow (FFJORD-style) in a few lines, and the true density of its data.

Time runs from the base distribution at ``t0`` to the data at ``t1`` (the convention of the
course's lecture notes): a sample is ``x = z(t1)`` for ``z(t0) ~ N(0, I)`` and
``dz/dt = f(t, z)``. Along a trajectory the log-density obeys the instantaneous change of
variables ``d log p(z(t)) / dt = -tr(df/dz)``, so

    log p(x) = log N(z(t0); 0, I) - int_{t0}^{t1} tr(df/dz(t)) dt,

computed by integrating the augmented state ``[z, l]`` with ``dl/dt = -tr(df/dz)`` from
``[x, 0]`` at ``t1`` back to ``t0``: ``l(t0) = int_{t0}^{t1} tr dt``. The state handed to the
solver is one tensor ``[B, d + 1]`` (last column ``l``), so every solver and both adjoints
(``torchdiffeq.odeint_adjoint``, :func:`dgmlib.ode.odeint_adjoint_by_hand`) apply unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torchdiffeq import odeint, odeint_adjoint

from dgmlib.ode import divergence_exact, divergence_hutchinson

__all__ = [
    "CNF",
    "ConcatMLP",
    "ring_log_prob",
    "standard_normal_log_prob",
]


class ConcatMLP(nn.Module):
    """``f(t, z) = MLP([z, t])``: ``dim + 1`` inputs, ``layers`` hidden layers of ``hidden``
    smooth units (Softplus by default; smooth dynamics keep adaptive solvers cheap), ``dim``
    outputs. The last layer starts at ``init_scale`` times its default weights, so the initial
    flow is close to the identity."""

    def __init__(
        self,
        dim: int = 2,
        hidden: int = 64,
        layers: int = 3,
        activation: str = "softplus",
        init_scale: float = 0.1,
    ) -> None:
        super().__init__()
        acts = {"softplus": nn.Softplus, "tanh": nn.Tanh}
        if activation not in acts:
            raise ValueError(f"ConcatMLP: activation must be one of {sorted(acts)}")
        if layers < 1:
            raise ValueError("ConcatMLP: layers must be >= 1")
        mods: list[nn.Module] = []
        width = dim + 1
        for _ in range(layers):
            mods += [nn.Linear(width, hidden), acts[activation]()]
            width = hidden
        last = nn.Linear(width, dim)
        with torch.no_grad():
            last.weight.mul_(init_scale)
            last.bias.mul_(init_scale)
        mods.append(last)
        self.net = nn.Sequential(*mods)
        self.dim = dim

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        tt = torch.as_tensor(t, dtype=z.dtype, device=z.device).expand(*z.shape[:-1], 1)
        return self.net(torch.cat([z, tt], -1))


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """``log N(z; 0, I)`` summed over the last dimension."""
    return -0.5 * z.square().sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


class CNF(nn.Module):
    """The augmented dynamics ``d/dt [z, l] = [f(t, z), -tr(df/dz)]`` of a CNF, with either the
    exact trace (``d`` vector-Jacobian products) or Hutchinson's estimate
    ``eps^T (df/dz) eps`` for probes ``eps`` fixed during one solve (set :attr:`eps` first).

    Called by a solver as ``cnf(t, state)`` with ``state = [z, l]`` of shape ``[B, d + 1]``.
    :attr:`nfe` counts the evaluations of ``f``.
    """

    def __init__(self, net: nn.Module, trace: str = "exact") -> None:
        super().__init__()
        if trace not in ("exact", "hutchinson"):
            raise ValueError(f"CNF: trace must be 'exact' or 'hutchinson', got {trace!r}")
        self.net = net
        self.trace = trace
        self.eps: Tensor | None = None
        self.nfe = 0

    def velocity(self, t: Tensor, z: Tensor) -> Tensor:
        """``f(t, z)`` alone (to sample, no trace)."""
        self.nfe += 1
        return self.net(t, z)

    def forward(self, t: Tensor, state: Tensor) -> Tensor:
        create_graph = torch.is_grad_enabled()  # on when the solve is differentiated
        z = state[..., :-1]
        with torch.enable_grad():
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            dz = self.velocity(t, z)
            if self.trace == "exact":
                div = divergence_exact(dz, z, create_graph=create_graph)
            else:
                if self.eps is None or self.eps.shape != z.shape:
                    raise RuntimeError("CNF: set cnf.eps (probes of the state's shape) first")
                div = divergence_hutchinson(dz, z, self.eps, create_graph=create_graph)
        if not create_graph:
            dz, div = dz.detach(), div.detach()
        return torch.cat([dz, -div[..., None]], -1)

    def log_prob(
        self,
        x: Tensor,
        t0: float = 0.0,
        t1: float = 1.0,
        adjoint: bool = False,
        **solver: Any,
    ) -> Tensor:
        """``log p(x)`` ``[B]``: integrate ``[x, 0]`` from ``t1`` back to ``t0``, then
        ``log N(z(t0); 0, I) - l(t0)``. ``adjoint=True`` differentiates with torchdiffeq's
        adjoint instead of through the solver."""
        state = torch.cat([x, torch.zeros_like(x[..., :1])], -1)
        t = torch.tensor([t1, t0], dtype=x.dtype, device=x.device)
        solve = odeint_adjoint if adjoint else odeint
        end = solve(self, state, t, **solver)[-1]
        z, trace_integral = end[..., :-1], end[..., -1]
        return standard_normal_log_prob(z) - trace_integral

    def sample(self, z0: Tensor, t0: float = 0.0, t1: float = 1.0, **solver: Any) -> Tensor:
        """Push base samples ``z0`` forward from ``t0`` to ``t1`` (no trace): ``x = z(t1)``."""
        t = torch.tensor([t0, t1], dtype=z0.dtype, device=z0.device)
        with torch.no_grad():
            return odeint(self.velocity, z0, t, **solver)[-1]


def ring_log_prob(x: Tensor, std: float, n_modes: int = 8, radius: float = 2.0) -> Tensor:
    """Exact log-density of ``dgmlib.data.toy_2d("ring", n, noise=std)``: an equal-weight
    mixture of ``n_modes`` isotropic Gaussians ``N(c_k, std^2 I)``, ``c_k`` at angles
    ``2 pi k / n_modes`` on the circle of radius ``radius``. ``x``: ``[..., 2]``."""
    angle = torch.arange(n_modes, dtype=torch.float64) * (2 * math.pi / n_modes)
    centres = (radius * torch.stack([angle.cos(), angle.sin()], 1)).to(x.dtype)
    sq = (x[..., None, :] - centres).square().sum(-1)  # [..., n_modes]
    log_comp = -0.5 * sq / std**2 - math.log(2 * math.pi * std**2)
    return torch.logsumexp(log_comp, -1) - math.log(n_modes)
