"""Neural ODEs by hand: the adjoint method, divergences, Hutchinson's estimator, saved memory.

Appendix A1 derives these pieces; the solvers themselves come from ``torchdiffeq``.
Conventions shared by every function here:

* a dynamics function is called as ``func(t, z)`` with a 0-d time tensor ``t`` and a state
  tensor ``z`` (any shape, usually ``[B, d]``) and returns ``dz/dt`` of the same shape;
* times ``t`` are a 1-D tensor, strictly increasing *or* strictly decreasing (a solve may run
  backwards in time, as the density of a continuous flow does);
* ``ys`` is the solution at those times, ``[len(t), *z.shape]``, ``ys[0] = z0``.

The adjoint of :func:`adjoint_gradients` is written out from its derivation (Chen et al. 2018;
Pontryagin's costate equation): with ``a(t) = dL/dz(t)``,

    da/dt = -a^T df/dz,        dL/dtheta = int_{t_0}^{t_N} a^T df/dtheta dt,

solved backwards from ``a(t_N) = dL/dz(t_N)`` together with ``z`` itself, ``a`` jumping by
``dL/dz(t_i)`` at every intermediate output time.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torchdiffeq import odeint

from dgmlib.validation import check_int, check_tensor

__all__ = [
    "PROBES",
    "adjoint_dynamics",
    "adjoint_gradients",
    "divergence_exact",
    "divergence_hutchinson",
    "fixed_grid",
    "hutchinson_probes",
    "hutchinson_variance",
    "odeint_adjoint_by_hand",
    "saved_tensor_bytes",
]

PROBES = ("gaussian", "rademacher")

Func = Callable[[Tensor, Tensor], Tensor]


# --------------------------------------------------------------------------------------------
# The adjoint method
# --------------------------------------------------------------------------------------------


def _check_times(t: Tensor, where: str) -> None:
    """``t``: a float tensor ``[N]``, ``N >= 2``, strictly monotone (see the module docstring)."""
    check_tensor(t, "t", where)
    if t.dim() != 1 or len(t) < 2:
        raise ValueError(
            f"{where}: t must be a 1-D tensor of at least two times, got shape {tuple(t.shape)}"
        )
    steps = t[1:] - t[:-1]
    if not ((steps > 0).all() or (steps < 0).all()):
        raise ValueError(f"{where}: t must be strictly increasing or strictly decreasing")


def fixed_grid(n_steps: int, method: str = "rk4") -> dict[str, Any]:
    """``torchdiffeq.odeint`` settings for ``n_steps`` equal steps of ``method`` between the
    first and the last output time (a fixed cost per solve, the same on every run)."""
    check_int(n_steps, "n_steps", "fixed_grid")

    def grid(func: Func, y0: Tensor, t: Tensor) -> Tensor:
        return torch.linspace(float(t[0]), float(t[-1]), n_steps + 1, dtype=y0.dtype)

    return {"method": method, "options": {"grid_constructor": grid}}


def adjoint_dynamics(
    func: Func, params: Sequence[Tensor], t: Tensor, z: Tensor, a: Tensor
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """The right-hand side of the augmented system at ``t``: ``(f(t, z), -a^T df/dz,
    [-a^T df/dp for p in params])``; ``z`` and ``a`` of one shape, each parameter term summed
    over the batch (a parameter ``f`` does not use gets zeros). Vector-Jacobian products only."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        fz = func(t, z)
        grads = torch.autograd.grad(fz, (z, *params), a, allow_unused=True)
    gz = torch.zeros_like(z) if grads[0] is None else grads[0]
    gp = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads[1:], strict=True)]
    return fz.detach(), -gz, [-g for g in gp]


def adjoint_gradients(
    func: Func,
    t: Tensor,
    ys: Tensor,
    grad_ys: Tensor,
    params: Sequence[Tensor] = (),
    time_gradients: bool = True,
    **solver: Any,
) -> tuple[Tensor, Tensor | None, list[Tensor]]:
    """Gradients of a loss ``L(ys)`` by the adjoint method: ``(dL/dz0, dL/dt, [dL/dp])``.

    ``ys`` is the forward solution at the times ``t`` and ``grad_ys = dL/dys`` (same shape).
    Between two output times the augmented state ``(z, a, a_p)`` is integrated backwards with
    ``torchdiffeq.odeint(**solver)`` under

        dz/dt = f(t, z),   da/dt = -a^T df/dz,   da_p/dt = -a^T df/dp,

    from ``a = dL/dz(t_N)``, ``a_p = 0``; at each earlier output time ``a`` jumps by
    ``dL/dz(t_i)`` and ``z`` is reset to the stored forward value. At the start,
    ``dL/dz0 = a(t_0)`` and ``dL/dp = a_p(t_0) = int_{t_0}^{t_N} a^T df/dp dt``. The time
    gradients need no extra integral: moving an output time ``t_i`` (``i >= 1``) only moves where
    the trajectory is read, ``dL/dt_i = dL/dz(t_i) . f(t_i, z(t_i))``; moving the start time with
    ``z0`` fixed shifts the rest of the solution, ``dL/dt_0 = -(a(t_0) - dL/dz(t_0)) .
    f(t_0, z0)`` (the output at ``t_0`` is ``z0`` itself, whatever ``t_0``). With
    ``time_gradients=False`` these are skipped (no extra evaluations of ``func``) and ``None``
    is returned in their place.
    """
    where = "adjoint_gradients"
    _check_times(t, where)
    if ys.shape[0] != len(t) or grad_ys.shape != ys.shape:
        raise ValueError(
            f"{where}: ys must be [len(t), ...] and grad_ys of the same shape, got "
            f"{tuple(ys.shape)}, {tuple(grad_ys.shape)} for {len(t)} times"
        )
    params = tuple(params)
    n_p = len(params)

    def augmented(ti: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        fz, da, dps = adjoint_dynamics(func, params, ti, state[0], state[1])
        return (fz, da, *dps)

    with torch.no_grad():
        a = grad_ys[-1].clone()
        a_p = [torch.zeros_like(p) for p in params]
        grad_t = torch.zeros_like(t)  # filled only with time_gradients
        if time_gradients:
            grad_t[-1] = (grad_ys[-1] * func(t[-1], ys[-1])).sum()
        for i in range(len(t) - 1, 0, -1):
            state = (ys[i], a, *a_p)
            sol = odeint(augmented, state, torch.stack([t[i], t[i - 1]]), **solver)
            a = sol[1][-1] + grad_ys[i - 1]
            a_p = [s[-1] for s in sol[2 : 2 + n_p]]
            if time_gradients and i - 1 > 0:
                grad_t[i - 1] = (grad_ys[i - 1] * func(t[i - 1], ys[i - 1])).sum()
        if time_gradients:
            # a(t_0) holds dL/dz(t_0) itself, which does not move with t_0: leave it out
            grad_t[0] = -((a - grad_ys[0]) * func(t[0], ys[0])).sum()
    return a, grad_t if time_gradients else None, a_p


class _HandAdjoint(torch.autograd.Function):
    """Forward: solve without building a graph; backward: :func:`adjoint_gradients`."""

    @staticmethod
    def forward(ctx, func, solver, params, z0, t, *param_tensors):  # noqa: D102
        with torch.no_grad():
            ys = odeint(func, z0, t, **solver)
        ctx.func, ctx.solver, ctx.params = func, solver, params
        ctx.save_for_backward(t, ys, *param_tensors)
        return ys

    @staticmethod
    def backward(ctx, grad_ys):  # noqa: D102
        t, ys = ctx.saved_tensors[:2]
        gz0, gt, gp = adjoint_gradients(
            ctx.func, t, ys, grad_ys, ctx.params, ctx.needs_input_grad[4], **ctx.solver
        )
        return (None, None, None, gz0, gt, *gp)


def odeint_adjoint_by_hand(
    func: Func, z0: Tensor, t: Tensor, params: Sequence[Tensor] | None = None, **solver: Any
) -> Tensor:
    """``torchdiffeq.odeint(func, z0, t, **solver)`` whose backward pass is the hand-written
    adjoint (:func:`adjoint_gradients`, the same ``solver`` settings backwards in time).

    ``params`` are the tensors whose gradients are wanted (default: ``func.parameters()`` when
    ``func`` is an ``nn.Module``). The forward pass keeps only ``t``, the solution at ``t`` and
    the parameters for the backward pass, however many steps the solver takes.
    """
    _check_times(t, "odeint_adjoint_by_hand")
    if params is None:
        params = list(func.parameters()) if isinstance(func, torch.nn.Module) else []
    params = tuple(p for p in params if p.requires_grad)
    return _HandAdjoint.apply(func, dict(solver), params, z0, t, *params)


# --------------------------------------------------------------------------------------------
# Divergences and Hutchinson's trace estimator
# --------------------------------------------------------------------------------------------


def divergence_exact(dz: Tensor, z: Tensor, create_graph: bool = False) -> Tensor:
    """``tr(d dz / d z)`` per example, ``[B]``, for ``dz = f(z)`` of shape ``[B, d]`` computed
    from ``z`` (which requires grad) row by row: ``d`` vector-Jacobian products."""
    if dz.shape != z.shape or dz.dim() != 2:
        raise ValueError(
            f"divergence_exact: dz and z must both be [B, d], got {dz.shape}, {z.shape}"
        )
    div = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
    for i in range(z.shape[1]):
        (g,) = torch.autograd.grad(dz[:, i].sum(), z, create_graph=create_graph, retain_graph=True)
        div = div + g[:, i]
    return div


def divergence_hutchinson(dz: Tensor, z: Tensor, eps: Tensor, create_graph: bool = False) -> Tensor:
    """Hutchinson's estimate ``eps^T (d dz / d z) eps`` per example, ``[B]``: one
    vector-Jacobian product, unbiased for the divergence when ``E[eps eps^T] = I``."""
    if dz.shape != z.shape or eps.shape != z.shape:
        raise ValueError("divergence_hutchinson: dz, z and eps must have the same shape")
    (g,) = torch.autograd.grad(dz, z, eps, create_graph=create_graph, retain_graph=True)
    return (g * eps).reshape(z.shape[0], -1).sum(1)


def hutchinson_probes(
    shape: Sequence[int],
    kind: str = "rademacher",
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Probe vectors with ``E[eps] = 0``, ``E[eps eps^T] = I``: standard normal or Rademacher
    (independent signs +-1)."""
    if kind == "gaussian":
        return torch.randn(*shape, generator=generator, dtype=dtype)
    if kind == "rademacher":
        return torch.randint(0, 2, tuple(shape), generator=generator).to(dtype) * 2 - 1
    raise ValueError(f"hutchinson_probes: kind must be one of {PROBES}, got {kind!r}")


def hutchinson_variance(A: Tensor, kind: str) -> Tensor:
    """Variance of one probe's estimate ``eps^T A eps`` of ``tr A`` for a square ``A``.

    With ``S = (A + A^T)/2`` (``eps^T A eps = eps^T S eps``): Gaussian probes give
    ``2 ||S||_F^2``; Rademacher probes ``2 (||S||_F^2 - sum_i S_ii^2)`` (the diagonal terms
    ``eps_i^2 = 1`` carry no noise).
    """
    if A.dim() != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"hutchinson_variance: A must be square, got {tuple(A.shape)}")
    S = 0.5 * (A + A.T)
    if kind == "gaussian":
        return 2 * S.square().sum()
    if kind == "rademacher":
        return 2 * (S.square().sum() - torch.diagonal(S).square().sum())
    raise ValueError(f"hutchinson_variance: kind must be one of {PROBES}, got {kind!r}")


# --------------------------------------------------------------------------------------------
# Memory kept for the backward pass
# --------------------------------------------------------------------------------------------


class _Packed:
    """A saved tensor as autograd holds it between the forward and the backward pass."""

    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor: Tensor) -> None:
        self.tensor = tensor


def saved_tensor_bytes(
    fn: Callable[[], Any], exclude: Sequence[Tensor] = ()
) -> tuple[int, int, Any]:
    """Run ``fn()`` and count what autograd keeps for the backward pass: ``(bytes, n, out)``.

    Every tensor saved for backward while ``fn`` runs (by built-in operations and by custom
    ``autograd.Function``'s ``save_for_backward``) passes through a
    ``torch.autograd.graph.saved_tensors_hooks`` pack hook, which wraps it in a small object
    that lives exactly as long as the graph node holding it. When ``fn`` returns, the wrappers
    still alive are what the graph of ``out`` keeps (nodes of intermediate results that were
    discarded have been freed with theirs); ``bytes`` is the total size of their distinct
    storages (a tensor saved twice, or a view of a saved storage, counts once) and ``n`` their
    number. Storages of the tensors in ``exclude`` (e.g. the parameters, which exist anyway)
    are left out. The count is exact and portable, unlike a process's resident memory. Keep
    ``out`` alive while the numbers matter: it holds the graph.
    """
    live: weakref.WeakSet[_Packed] = weakref.WeakSet()

    def pack(x: Tensor) -> _Packed:
        packed = _Packed(x)
        live.add(packed)
        return packed

    def unpack(packed: _Packed) -> Tensor:
        return packed.tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        out = fn()
    skip = {(str(x.device), x.untyped_storage().data_ptr()) for x in exclude}
    storages: dict[tuple[str, int], int] = {}
    for packed in list(live):
        st = packed.tensor.untyped_storage()
        key = (str(packed.tensor.device), st.data_ptr())
        if key not in skip:
            storages[key] = st.nbytes()
    return sum(storages.values()), len(storages), out
