"""dgmlib.checks.flows (Appendix A1): other right solutions pass with one line, and typical mistakes
are rejected with the case that catches them and the hint that names the mistake (stubs and
non-functions: tests/test_checks.py, for every check)."""

from __future__ import annotations

import pytest
import torch
from helpers import fails

from dgmlib.checks.flows import check_adjoint_dynamics, check_hutchinson_divergence
from dgmlib.ode import adjoint_dynamics as adjoint_right  # the library's, a right solution
from dgmlib.ode import divergence_exact, divergence_hutchinson


def adjoint_plus(func, params, t, z, a):
    fz, gz, gp = adjoint_right(func, params, t, z, a)
    return fz, gz, [-g for g in gp]


def adjoint_sign(func, params, t, z, a):
    fz, gz, gp = adjoint_right(func, params, t, z, a)
    return fz, -gz, gp


def adjoint_no_params(func, params, t, z, a):
    fz, gz, gp = adjoint_right(func, params, t, z, a)
    return fz, gz, [torch.zeros_like(p) for p in params]


def adjoint_jvp(func, params, t, z, a):
    """-(df/dz) a instead of -a^T df/dz: right for the linear case only when A is symmetric."""
    fz, gz, gp = adjoint_right(func, params, t, z, a)
    A = func.A.detach()
    return fz, -(a @ A.T), gp


def adjoint_no_t(func, params, t, z, a):
    return adjoint_right(func, params, torch.zeros_like(t), z, a)


def hutch_right(dz, z, eps):
    (g,) = torch.autograd.grad(dz, z, eps, create_graph=True)
    return (g * eps).sum(1)


def hutch_ones(dz, z, eps):
    (g,) = torch.autograd.grad(dz.sum(), z, create_graph=True)
    return (g * eps).sum(1)


def hutch_f(dz, z, eps):
    return (dz * eps).sum(1)


def hutch_exact(dz, z, eps):
    return divergence_exact(dz, z, create_graph=True)


def hutch_no_graph(dz, z, eps):
    (g,) = torch.autograd.grad(dz, z, eps)
    return (g * eps).sum(1)


def hutch_summed(dz, z, eps):
    return hutch_right(dz, z, eps).sum()


@pytest.mark.parametrize(
    ("check", "fn", "n"),
    [
        (check_adjoint_dynamics, adjoint_right, 3),
        (check_hutchinson_divergence, hutch_right, 5),
        (
            check_hutchinson_divergence,
            lambda dz, z, eps: divergence_hutchinson(dz, z, eps, create_graph=True),
            5,
        ),
    ],
)
def test_right_solutions_pass_with_one_line(check, fn, n, capsys):
    check(fn)
    assert capsys.readouterr().out == f"{check.__name__}: all {n} cases pass.\n"


@pytest.mark.parametrize(
    ("wrong", "case", "hint"),
    [
        (adjoint_sign, "linear f = A z", "the sign: the adjoint obeys da/dt = -a^T df/dz"),
        (adjoint_jvp, "linear f = A z", "the Jacobian times a"),
        (adjoint_plus, "linear f = A z", "the sign: da_p/dt = -a^T df/dp"),
        (adjoint_no_params, "linear f = A z", "parameter term is missing"),
        (adjoint_no_t, "time-dependent", "dz/dt is f(t, z)"),
    ],
)
def test_adjoint_mistakes_are_named(wrong, case, hint):
    fails(check_adjoint_dynamics, wrong, case, hint)


def test_bad_returns_are_reported():
    with pytest.raises(AssertionError, match="expected a triple"):
        check_adjoint_dynamics(lambda func, params, t, z, a: func(t, z))
    with pytest.raises(AssertionError, match="list of 1 tensors"):
        check_adjoint_dynamics(lambda func, params, t, z, a: (func(t, z), a, []))


@pytest.mark.parametrize(
    ("wrong", "case", "hint"),
    [
        (hutch_ones, "Gaussian probes", "1^T (df/dz) eps"),
        (hutch_f, "Gaussian probes", "eps^T f"),
        (hutch_exact, "Gaussian probes", "exact divergence"),
        (hutch_no_graph, "differentiable", "create_graph=True"),
    ],
)
def test_hutchinson_mistakes_are_named(wrong, case, hint):
    fails(check_hutchinson_divergence, wrong, case, hint)


def test_hutchinson_bad_shape_is_reported():
    with pytest.raises(AssertionError, match="has shape \\(\\), expected \\(6,\\)"):
        check_hutchinson_divergence(hutch_summed)


def adjoint_negated_f(func, params, t, z, a):  # "backwards in time" read as dz/dt = -f
    fz, gz, gp = adjoint_right(func, params, t, z, a)
    return -fz, gz, gp


def adjoint_sum(func, params, t, z, a):
    """-1^T df/dz and -1^T df/dp: the gradient of f.sum(), without the adjoint."""
    with torch.enable_grad():
        zz = z.detach().requires_grad_(True)
        fz = func(t, zz)
        gz, *gp = torch.autograd.grad(fz.sum(), [zz, *params])
    return fz.detach(), -gz, [-g for g in gp]


def adjoint_sum_params(func, params, t, z, a):
    fz, gz, _ = adjoint_right(func, params, t, z, a)
    return fz, gz, adjoint_sum(func, params, t, z, a)[2]


def hutch_mean(dz, z, eps):
    (g,) = torch.autograd.grad(dz, z, eps, create_graph=True)
    return (g * eps).mean(1)


@pytest.mark.parametrize(
    ("wrong", "case", "hint"),
    [
        (adjoint_negated_f, "linear f = A z", "the sign: dz/dt is f(t, z) itself"),
        (adjoint_sum, "linear f = A z", "-1^T df/dz, the gradient of f.sum()"),
        (adjoint_sum_params, "linear f = A z", "-1^T df/dp, the gradient of f.sum()"),
    ],
)
def test_adjoint_slips_are_named(wrong, case, hint):
    """A negated velocity and a product with 1 instead of the adjoint: each caught and named."""
    fails(check_adjoint_dynamics, wrong, case, hint)


def test_hutchinson_mean_over_the_state_is_named():
    fails(check_hutchinson_divergence, hutch_mean, "Gaussian probes", "averages over the state")
