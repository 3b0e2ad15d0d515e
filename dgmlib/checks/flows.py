"""Checks of Appendix A1 (continuous-time flows): the adjoint's dynamics and Hutchinson's
estimate of a divergence.

Both compare with float64 references computed by autograd (:mod:`dgmlib.ode`) on fixed cases,
and a wrong result is compared with the typical mistakes (the adjoint's sign, the Jacobian
times ``a`` instead of ``a`` times the Jacobian, a missing parameter term; the all-ones vector
instead of the probe on the left of the Jacobian, the probe applied to ``f`` itself, a result
that cannot be differentiated) so that the hint names the one that reproduces it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from dgmlib.checks.common import as_float64, call_student, compare, fail, passed, seeded_build
from dgmlib.ode import divergence_exact, divergence_hutchinson

__all__ = ["check_adjoint_dynamics", "check_hutchinson_divergence"]

DT = torch.float64
RTOL = 1e-8
ATOL = 1e-10


def _close(got: Tensor, wrong: Tensor) -> bool:
    return got.shape == wrong.shape and bool(torch.allclose(got, wrong, rtol=RTOL, atol=ATOL))


# ---------------------------------------------------------------------------------------------
# the adjoint's dynamics: (dz/dt, da/dt, da_p/dt) = (f, -a^T df/dz, -a^T df/dp)


class _Linear(nn.Module):
    def __init__(self, A: Tensor) -> None:
        super().__init__()
        self.A = nn.Parameter(A)

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return z @ self.A.T


class _TimeLinear(_Linear):
    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return torch.sin(3 * t) * (z @ self.A.T)


class _MLP(nn.Module):
    def __init__(self, g: torch.Generator, d: int = 3, h: int = 5) -> None:
        super().__init__()
        self.W1 = nn.Parameter(torch.randn(h, d + 1, generator=g, dtype=DT))
        self.b1 = nn.Parameter(torch.randn(h, generator=g, dtype=DT))
        self.W2 = nn.Parameter(torch.randn(d, h, generator=g, dtype=DT) / h)

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        tz = torch.cat([z, t.expand(z.shape[0], 1)], 1)
        return torch.tanh(tz @ self.W1.T + self.b1) @ self.W2.T


def _vjps(func: nn.Module, t: Tensor, z: Tensor, v: Tensor, transpose: bool = False):
    """f(t, z), v^T df/dz, v^T df/dp by autograd; with ``transpose`` the (wrong) Jacobian-vector
    product (df/dz) v instead of v^T df/dz, by double backward."""
    params = list(func.parameters())
    with torch.enable_grad():
        zz = z.detach().clone().requires_grad_(True)
        fz = func(t, zz)
        gz, *gp = torch.autograd.grad(fz, [zz, *params], v, allow_unused=True, retain_graph=True)
        if transpose:
            u = torch.zeros_like(fz, requires_grad=True)
            (g_u,) = torch.autograd.grad(fz, zz, u, create_graph=True)
            (gz,) = torch.autograd.grad(g_u, u, v)
    gp = [torch.zeros_like(p) if g is None else g for p, g in zip(params, gp, strict=True)]
    return fz.detach(), gz, gp


def _adjoint_cases() -> list[tuple[str, nn.Module, Tensor, Tensor, Tensor]]:
    g = torch.Generator().manual_seed(11)
    A = torch.tensor([[0.2, -1.3], [0.7, -0.4]], dtype=DT)  # not symmetric: A != A^T
    cases = [
        (
            "linear f = A z, A not symmetric",
            _Linear(A.clone()),
            torch.tensor(0.3, dtype=DT),
            torch.randn(4, 2, generator=g, dtype=DT),
            torch.randn(4, 2, generator=g, dtype=DT),
        ),
        (
            "time-dependent f = sin(3t) A z at t = 0.5",
            _TimeLinear(A.clone()),
            torch.tensor(0.5, dtype=DT),
            torch.randn(3, 2, generator=g, dtype=DT),
            torch.randn(3, 2, generator=g, dtype=DT),
        ),
        (
            "tanh network f(t, z), three parameters",
            _MLP(g),
            torch.tensor(0.8, dtype=DT),
            torch.randn(5, 3, generator=g, dtype=DT),
            torch.randn(5, 3, generator=g, dtype=DT),
        ),
    ]
    return cases


def check_adjoint_dynamics(
    fn: Callable[[Callable, Sequence[Tensor], Tensor, Tensor, Tensor], Any],
) -> None:
    """Check ``fn(func, params, t, z, a) -> (dz_dt, da_dt, da_params_dt)``: the right-hand side
    of the augmented system the adjoint method solves backwards in time,
    ``dz/dt = f(t, z)``, ``da/dt = -a^T df/dz``, ``da_p/dt = -a^T df/dp`` for each parameter
    ``p`` in ``params`` (a list of tensors of the shapes of ``params``). ``z`` and ``a`` are
    ``[B, d]``; the parameter terms are summed over the batch."""
    check = "check_adjoint_dynamics"
    cases = _adjoint_cases()
    for case, func, t, z, a in cases:
        params = list(func.parameters())
        out = call_student(check, case, fn, func, params, t, z.clone(), a.clone())
        if not isinstance(out, (tuple, list)) or len(out) != 3:
            fail(
                check,
                case,
                f"expected a triple (dz_dt, da_dt, da_params_dt), got {type(out).__name__}.",
                "return f(t, z), -a^T df/dz and the list [-a^T df/dp for p in params].",
            )
        dz, da, dps = out
        if not isinstance(dps, (tuple, list)) or len(dps) != len(params):
            fail(
                check,
                case,
                f"da_params_dt should be a list of {len(params)} tensors (one per parameter).",
                "torch.autograd.grad(f, [z, *params], grad_outputs=a) returns the products "
                "a^T df/dz and a^T df/dp for every parameter at once.",
            )
        fz, gz, gp = _vjps(func, t, z, a)
        _, ones_z, ones_p = _vjps(func, t, z, torch.ones_like(a))  # 1^T df/dz, 1^T df/dp
        dz_t = as_float64(check, case, dz, "dz/dt")
        hint = "dz/dt is f(t, z)."
        if _close(dz_t, -fz) and fz.abs().max() > 0:
            hint = (
                "the sign: dz/dt is f(t, z) itself. The backward solve runs with decreasing "
                "time; the solver takes care of the direction, the dynamics do not change."
            )
        compare(check, case, dz_t, fz, what="dz/dt", hint=hint, rtol=RTOL, atol=ATOL)
        da_t = as_float64(check, case, da, "da/dt")
        if not _close(da_t, -gz):
            _, jz, _ = _vjps(func, t, z, a, transpose=True)
            if _close(da_t, -ones_z) or _close(da_t, ones_z):
                hint = (
                    "this is -1^T df/dz, the gradient of f.sum(): the vector-Jacobian product "
                    "must use the adjoint, torch.autograd.grad(f, z, grad_outputs=a)."
                )
            elif _close(da_t, gz):
                hint = (
                    "the sign: the adjoint obeys da/dt = -a^T df/dz (Pontryagin's costate "
                    "equation), integrated backwards from a(t1) = dL/dz(t1)."
                )
            elif _close(da_t, -jz):
                hint = (
                    "this is -(df/dz) a, the Jacobian times a. The adjoint needs the row vector "
                    "a^T times the Jacobian, a vector-Jacobian product: "
                    "torch.autograd.grad(f, z, grad_outputs=a)."
                )
            else:
                hint = "da/dt = -a^T df/dz: torch.autograd.grad(f, z, grad_outputs=a), negated."
            compare(check, case, da_t, -gz, what="da/dt", hint=hint, rtol=RTOL, atol=ATOL)
        for p, got, ref, ones in zip(params, dps, gp, ones_p, strict=True):
            name = next(n for n, q in func.named_parameters() if q is p)
            got_t = as_float64(check, case, got, f"da_{name}/dt")
            if _close(got_t, ref) and ref.abs().max() > 0:
                hint = "the sign: da_p/dt = -a^T df/dp, like the adjoint itself."
            elif (_close(got_t, -ones) or _close(got_t, ones)) and ones.abs().max() > 0:
                hint = (
                    "this is -1^T df/dp, the gradient of f.sum(): the product must use the "
                    "adjoint, torch.autograd.grad(f, params, grad_outputs=a)."
                )
            elif _close(got_t, torch.zeros_like(ref)):
                hint = (
                    "the parameter term is missing: the gradient with respect to the parameters "
                    "is the integral of a^T df/dp, carried as extra components of the state."
                )
            else:
                hint = "da_p/dt = -a^T df/dp, summed over the batch (autograd does the sum)."
            compare(check, case, got_t, -ref, what=f"da_{name}/dt", hint=hint, rtol=RTOL, atol=ATOL)
    passed(check, len(cases))


# ---------------------------------------------------------------------------------------------
# Hutchinson's estimate eps^T (df/dz) eps of the divergence


def _net(g: torch.Generator, d: int) -> nn.Module:
    return seeded_build(g, lambda: nn.Sequential(nn.Linear(d, 7), nn.Tanh(), nn.Linear(7, d)))


def _hutchinson_mistakes(dz: Tensor, z: Tensor, eps: Tensor) -> list[tuple[Tensor, str]]:
    (ones_j,) = torch.autograd.grad(dz.sum(), z, retain_graph=True)
    (g_eps,) = torch.autograd.grad(dz, z, eps, retain_graph=True)
    return [
        (
            (ones_j * eps).sum(1),
            "this is 1^T (df/dz) eps: the Jacobian's column sums against the probe. Put the "
            "probe on both sides: torch.autograd.grad(dz, z, grad_outputs=eps) gives "
            "eps^T df/dz; multiply by eps and sum over the state.",
        ),
        (
            (dz * eps).sum(1),
            "this is eps^T f: the probe multiplies the velocity itself, not its Jacobian.",
        ),
        (
            (g_eps * eps).mean(1),
            "this averages over the state's d coordinates: eps^T (df/dz) eps is a sum over them "
            "(the trace is a sum of d diagonal entries).",
        ),
        (
            divergence_exact(dz, z),
            "this is the exact divergence. The estimator must use the probe: eps^T (df/dz) eps, "
            "which equals the trace only on average over eps (one vector-Jacobian product "
            "instead of d of them).",
        ),
    ]


def check_hutchinson_divergence(fn: Callable[[Tensor, Tensor, Tensor], Any]) -> None:
    """Check ``fn(dz, z, eps) -> [B]``: Hutchinson's estimate ``eps_b^T (d dz_b / d z_b) eps_b``
    for each row ``b``, where ``dz = f(z)`` ``[B, d]`` was computed from ``z`` (which requires
    grad) and ``eps`` ``[B, d]`` are probes. The result must stay differentiable (a CNF is
    trained through it): use ``create_graph=True``."""
    check = "check_hutchinson_divergence"
    g = torch.Generator().manual_seed(5)
    n_cases = 0

    def agree(case: str, got: Tensor, ref: Tensor, what: str, hint: str, **tol: float) -> None:
        """The case passes if ``got`` matches ``ref`` (default tolerances RTOL, ATOL)."""
        tol = {"rtol": RTOL, "atol": ATOL, **tol}
        compare(check, case, got, ref, what=what, hint=hint, **tol)

    def run(case: str, net: nn.Module, z0: Tensor, eps: Tensor) -> Tensor:
        z = z0.clone().requires_grad_(True)
        got = call_student(check, case, fn, net(z), z, eps.clone())
        got_t = as_float64(check, case, got, "the estimate")
        z = z0.clone().requires_grad_(True)  # a fresh graph: the student's may be freed
        dz = net(z)
        ref = divergence_hutchinson(dz, z, eps)
        if not _close(got_t, ref):
            hint = "eps^T (df/dz) eps per row: one vector-Jacobian product, then a dot with eps."
            for wrong, message in _hutchinson_mistakes(dz, z, eps):
                if _close(got_t, wrong):
                    hint = message
                    break
            agree(case, got_t, ref, "the estimate", hint)
        return got

    for case, d, kind in [("Gaussian probes, d = 3", 3, "g"), ("Rademacher probes, d = 4", 4, "r")]:
        eps = torch.randn(6, d, generator=g, dtype=DT)
        if kind == "r":
            eps = eps.sign()
        run(case, _net(g, d), torch.randn(6, d, generator=g, dtype=DT), eps)
        n_cases += 1

    case = "linear f = A z: eps^T A eps"
    A = torch.tensor([[0.5, 2.0], [-1.0, 0.3]], dtype=DT)
    lin = seeded_build(g, lambda: nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        lin.weight.copy_(A)
    eps = torch.tensor([[1.0, -1.0], [0.5, 2.0]], dtype=DT)
    got = as_float64(check, case, run(case, lin, torch.zeros(2, 2, dtype=DT), eps), "estimate")
    ref = torch.einsum("bi,ij,bj->b", eps, A, eps)
    agree(case, got, ref, "the estimate", "eps^T A eps for the linear map z -> A z.")
    n_cases += 1

    case = "the 4 sign patterns in 2-D average to the exact divergence"
    net = _net(g, 2)
    z0 = torch.randn(1, 2, generator=g, dtype=DT).expand(4, 2)
    signs = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=2)), dtype=DT)
    got = as_float64(check, case, run(case, net, z0, signs), "estimate").mean()
    z = z0.clone().requires_grad_(True)
    hint = "with probes of E[eps eps^T] = I the estimate is unbiased for tr(df/dz)."
    agree(case, got, divergence_exact(net(z), z)[0], "the mean estimate", hint)
    n_cases += 1

    case = "differentiable with respect to the parameters"
    net = _net(g, 3)
    z0 = torch.randn(4, 3, generator=g, dtype=DT)
    eps = torch.randn(4, 3, generator=g, dtype=DT)
    z = z0.clone().requires_grad_(True)
    got = call_student(check, case, fn, net(z), z, eps)
    if not isinstance(got, Tensor) or not got.requires_grad:
        fail(
            check,
            case,
            "the estimate does not depend differentiably on the network's parameters.",
            "call torch.autograd.grad(..., create_graph=True): a CNF is trained by "
            "differentiating the estimate.",
        )
    w = next(net.parameters())
    (g_got,) = torch.autograd.grad(got.sum(), w, allow_unused=True)
    z = z0.clone().requires_grad_(True)
    ref = divergence_hutchinson(net(z), z, eps, create_graph=True)
    (g_ref,) = torch.autograd.grad(ref.sum(), w)
    agree(
        case,
        torch.zeros_like(g_ref) if g_got is None else g_got,
        g_ref,
        "the gradient of the estimate",
        "differentiate through the vector-Jacobian product (create_graph=True).",
        rtol=1e-6,  # a second derivative: looser than the estimate itself
        atol=1e-9,
    )
    n_cases += 1
    passed(check, n_cases)
