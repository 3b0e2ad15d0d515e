"""dgmlib.checks: every check passes a correct solution with one line, reports a stub as "not
implemented yet", and names the failing case (expected vs got, hint) for typical mistakes."""

from __future__ import annotations

import math

import pytest
import torch

from dgmlib import checks
from dgmlib.avb import avb_losses
from dgmlib.bounds import iwae_bound
from dgmlib.dequantization import discretized_logistic_log_prob
from dgmlib.diagnostics import active_units
from dgmlib.diffusion import forward_marginal, forward_posterior
from dgmlib.distributions import kl_normal_std_normal
from dgmlib.gan import jsd
from dgmlib.harmonium import interactions
from dgmlib.kernels import mixture_logpdf
from dgmlib.kl_control import free_bits_kl
from dgmlib.ode import adjoint_dynamics, divergence_hutchinson
from dgmlib.surgery import aggregate_posterior_log_prob
from dgmlib.units import log_density_to_integer_units, nats_to_bits_per_dim

# ---------------------------------------------------------------------------------------------
# student-style solutions, right and wrong


def elbo_right(model, x, m, S):
    W, mu, s2 = model.W, model.mu, float(model.sigma2)
    d, q = W.shape
    r = x - mu - W @ m
    expected_ll = -0.5 * d * math.log(2 * math.pi * s2) - (r @ r + torch.trace(W @ S @ W.T)) / (
        2 * s2
    )
    kl = 0.5 * (torch.trace(S) + m @ m - q - torch.logdet(S))
    return expected_ll - kl


def elbo_no_logdet(model, x, m, S):
    return elbo_right(model, x, m, S) - 0.5 * torch.logdet(S)


def elbo_kl_sign(model, x, m, S):
    kl = 0.5 * (torch.trace(S) + m @ m - model.q - torch.logdet(S))
    return elbo_right(model, x, m, S) + 2 * kl


def elbo_no_trace(model, x, m, S):
    s2 = float(model.sigma2)
    return elbo_right(model, x, m, S) + torch.trace(model.W @ S @ model.W.T) / (2 * s2)


def stub(*args, **kwargs):
    raise NotImplementedError("Exercise: replace this line with your solution.")


def is_right(a, b, c):
    return torch.logsumexp(a + b - c, dim=0) - math.log(a.shape[0])


def is_naive_exp(a, b, c):
    return torch.log(torch.exp(a + b - c).mean(0))


def is_sum(a, b, c):
    return torch.logsumexp(a + b - c, dim=0)


def is_mean_of_logs(a, b, c):
    return (a + b - c).mean(0)


def em_right(X, W, mu, sigma2):
    Xc, q = X - mu, W.shape[1]
    M_inv = torch.linalg.inv(W.T @ W + sigma2 * torch.eye(q, dtype=X.dtype))
    Ez = Xc @ W @ M_inv
    sum_Ezz = len(X) * sigma2 * M_inv + Ez.T @ Ez
    W_new = Xc.T @ Ez @ torch.linalg.inv(sum_Ezz)
    sq = (Xc**2).sum() - 2 * (Ez @ W_new.T * Xc).sum() + torch.trace(sum_Ezz @ W_new.T @ W_new)
    return W_new, sq / X.numel()


def em_no_posterior_cov(X, W, mu, sigma2):
    """The typical mistake: E[z z^T] taken as E[z] E[z]^T (the posterior covariance dropped)."""
    Xc, q = X - mu, W.shape[1]
    M_inv = torch.linalg.inv(W.T @ W + sigma2 * torch.eye(q, dtype=X.dtype))
    Ez = Xc @ W @ M_inv
    sum_Ezz = Ez.T @ Ez
    W_new = Xc.T @ Ez @ torch.linalg.inv(sum_Ezz)
    sq = (Xc**2).sum() - 2 * (Ez @ W_new.T * Xc).sum() + torch.trace(sum_Ezz @ W_new.T @ W_new)
    return W_new, sq / X.numel()


def reparam(mu, logvar):
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


def dequantized_bpd(log_density_unit, x_int, num_levels, num_samples, generator):
    n, d = x_int.shape
    u = torch.rand((num_samples, n, d), generator=generator, dtype=torch.float64)
    lp = log_density_unit((x_int.double() + u) / num_levels).mean(0)
    return nats_to_bits_per_dim(-log_density_to_integer_units(lp, d, num_levels), d)


# check name -> (a correct solution, the number of cases it must report)
def mixture_prior_log_prob(z, means, logvars, logits):
    return mixture_logpdf(z, means, logvars, torch.log_softmax(logits, 0))


def optimal_linear_encoder(W, b, sigma2):
    precision = torch.eye(W.shape[1], dtype=W.dtype) + W.T @ W / sigma2
    A = torch.linalg.solve(precision, W.T) / sigma2
    return A, -A @ b, 1.0 / torch.diagonal(precision)


def topdown_kls(m2, l2, m1, l1, mp, lp):
    kl2 = 0.5 * (l2.exp() + m2**2 - 1 - l2).sum(-1)
    kl1 = 0.5 * (lp - l1 + (l1.exp() + (m1 - mp) ** 2) / lp.exp() - 1).sum(-1)
    return kl2, kl1


def ladder_merge(ma, la, mb, lb):
    pa, pb = torch.exp(-la), torch.exp(-lb)
    return (ma * pa + mb * pb) / (pa + pb), -torch.log(pa + pb)


def backward_message(log_px_z1, log_pz1_z2):
    return torch.logsumexp(log_px_z1[:, None, :] + log_pz1_z2[None, :, :], dim=-1)


def avb_loss_pair(decoder, disc, x, z, z_prior):
    t = avb_losses(decoder, disc, x, z, z_prior)
    return t["primal"], t["dual"]


REFERENCES = {
    "check_interactions": (interactions, 6),
    "check_kl_from_discriminator": (lambda d: torch.logit(d).mean(), 3),
    "check_avb_losses": (avb_loss_pair, 5),
    "check_topdown_kls": (topdown_kls, 4),
    "check_ladder_merge": (ladder_merge, 4),
    "check_backward_message": (backward_message, 4),
    "check_optimal_linear_encoder": (optimal_linear_encoder, 4),
    "check_elbo_gaussian": (elbo_right, 4),
    "check_log_importance_estimate": (is_right, 5),
    "check_em_step": (em_right, 3),
    "check_reparam_sample": (reparam, 7),
    "check_kl_standard_normal": (kl_normal_std_normal, 8),
    "check_discretized_logistic": (discretized_logistic_log_prob, 7),
    "check_dequantized_bpd": (dequantized_bpd, 3),
    "check_free_bits": (free_bits_kl, 8),
    "check_active_units": (active_units, 7),
    "check_iwae_bound": (iwae_bound, 5),
    "check_mixture_prior_log_prob": (mixture_prior_log_prob, 5),
    "check_aggregate_posterior_log_prob": (aggregate_posterior_log_prob, 5),
    "check_gumbel_max_sample": (
        lambda logits, u: (logits - torch.log(-torch.log(u))).argmax(-1),
        4,
    ),
    "check_categorical_kl_uniform": (
        lambda logits: (
            (torch.softmax(logits, -1) * torch.log_softmax(logits, -1)).sum(-1)
            + math.log(logits.shape[-1])
        ),
        5,
    ),
    "check_optimal_discriminator": (lambda log_pd, log_pg: torch.sigmoid(log_pd - log_pg), 4),
    "check_jsd": (jsd, 4),
    "check_adjoint_dynamics": (adjoint_dynamics, 3),
    "check_forward_posterior": (forward_posterior, 5),
    "check_marginal_sample": (
        lambda x0, t, b, eps: (
            forward_marginal(x0, t, b)[0] + forward_marginal(x0, t, b)[1].sqrt() * eps
        ),
        4,
    ),
    "check_hutchinson_divergence": (
        lambda dz, z, eps: divergence_hutchinson(dz, z, eps, create_graph=True),
        5,
    ),
}


def fails(check, fn, *fragments):
    """Run ``check(fn)``, expect an AssertionError containing every fragment; return its text."""
    with pytest.raises(AssertionError) as info:
        check(fn)
    msg = str(info.value)
    for f in fragments:
        assert f in msg, msg
    return msg


# ---------------------------------------------------------------------------------------------
# every check: one success line, stubs and non-functions reported uniformly


def test_every_check_is_listed_and_importable():
    assert sorted(REFERENCES) == sorted(checks.__all__)
    assert checks.__all__ == sorted(checks.__all__)
    from dgmlib.checks import check_dequantized_bpd, check_em_step, check_iwae_bound

    assert check_em_step is checks.check_em_step
    assert check_iwae_bound is checks.check_iwae_bound
    assert check_dequantized_bpd is checks.check_dequantized_bpd


@pytest.mark.parametrize("name", checks.__all__)
def test_reference_passes_with_one_line_and_stub_is_not_implemented(name, capsys):
    check = getattr(checks, name)
    solution, n_cases = REFERENCES[name]
    check(solution)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.endswith("cases pass.\n"), out
    assert out == f"{name}: all {n_cases} cases pass.\n"
    with pytest.raises(AssertionError, match="not implemented") as info:
        check(stub)
    assert str(info.value).startswith(f"{name}: `stub` is not implemented yet")


@pytest.mark.parametrize("name", checks.__all__)
def test_a_non_function_is_rejected(name):
    with pytest.raises(AssertionError, match=f"{name}: expected a function, got int"):
        getattr(checks, name)(3)


@pytest.mark.parametrize("name", checks.__all__)
def test_check_does_not_change_the_global_random_state(name, capsys):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    getattr(checks, name)(REFERENCES[name][0])
    torch.testing.assert_close(torch.rand(3), expected)


# ---------------------------------------------------------------------------------------------
# lecture 01


@pytest.mark.parametrize(
    ("wrong", "case", "hint"),
    [
        (elbo_no_logdet, "diagonal S", "log det S"),
        (elbo_kl_sign, "diagonal S", "sign"),
        (elbo_no_trace, "q = prior", "tr(W S W^T)"),
    ],
)
def test_elbo_check_rejects_typical_mistakes(wrong, case, hint):
    msg = fails(checks.check_elbo_gaussian, wrong, "expected:", "got:")
    assert msg.startswith(f"check_elbo_gaussian, case '{case}")
    assert hint in msg.split("Hint:")[1]


def test_crash_and_bad_return_are_reported():
    with pytest.raises(
        AssertionError,
        match="check_elbo_gaussian, case 'q = prior N\\(0, I\\)': your function raised",
    ):
        checks.check_elbo_gaussian(lambda model, x, m, S: m @ torch.zeros(3))
    with pytest.raises(AssertionError, match="should be a tensor or a number, got str"):
        checks.check_elbo_gaussian(lambda *a: "oops")
    with pytest.raises(AssertionError, match="has shape \\(2,\\), expected \\(\\)"):
        checks.check_elbo_gaussian(lambda *a: torch.zeros(2))
    with pytest.raises(AssertionError, match="contains NaN"):
        checks.check_elbo_gaussian(lambda *a: torch.tensor(float("nan")))


@pytest.mark.parametrize(
    ("wrong", "match"),
    [
        (is_naive_exp, "near -1000': the estimate is infinite.*log-sum-exp"),
        (is_sum, "K = 5.*log K"),
        (is_mean_of_logs, "K = 5.*mean of the log-weights"),
    ],
)
def test_importance_check_rejects_typical_mistakes(wrong, match):
    with pytest.raises(AssertionError, match=f"(?s){match}"):
        checks.check_log_importance_estimate(wrong)


def test_em_check_rejects_missing_posterior_covariance_and_bad_returns():
    with pytest.raises(AssertionError, match="(?s)W_new.*posterior covariance term is missing"):
        checks.check_em_step(em_no_posterior_cov)
    with pytest.raises(AssertionError, match="return a pair"):
        checks.check_em_step(lambda X, W, mu, s2: W)
    with pytest.raises(AssertionError, match="sigma2_new does not match the reference"):
        checks.check_em_step(lambda X, W, mu, s2: (em_right(X, W, mu, s2)[0], s2))


# ---------------------------------------------------------------------------------------------
# lectures 02, 04, 05


def test_wrong_reparametrizations_are_caught():
    fails(
        checks.check_reparam_sample,
        lambda mu, logvar: mu + torch.exp(logvar) * torch.randn_like(mu),
        "check_reparam_sample, case 'sample std over 20000 draws'",
        "expected:",
        "got:",
        "Hint: sigma = exp(logvar / 2)",
    )
    fails(
        checks.check_reparam_sample,
        lambda mu, logvar: torch.normal(mu.detach(), torch.exp(0.5 * logvar.detach())),
        "case 'gradients'",
    )
    fails(checks.check_reparam_sample, lambda mu, logvar: mu[:, :1], "case 'shape'")
    fails(
        checks.check_reparam_sample,
        lambda mu, logvar: mu + torch.exp(0.5 * logvar.detach()) * torch.randn_like(mu),
        "no gradient reaches logvar",
    )


def test_wrong_kl_is_caught():
    fails(
        checks.check_kl_standard_normal,
        lambda mu, logvar: 0.5 * (logvar.exp() + mu**2 - logvar).sum(-1),  # forgot the -1
        "case 'q equals the prior (KL = 0)'",
        "expected: [0, 0]\n  got:      [1.5, 1.5]",
    )
    fails(
        checks.check_kl_standard_normal,
        lambda mu, logvar: 0.5 * (logvar.exp() + mu**2 - 1 - logvar).sum(),  # summed the batch
        "the KL has shape (), expected (2,)",
    )


def test_wrong_free_bits_are_caught():
    def per_example_clamp(kl, lam):
        return torch.clamp(kl, min=lam).mean(0).sum()

    fails(checks.check_free_bits, per_example_clamp, "clamp the batch mean, not each example")

    def python_max(kl, lam):
        return torch.tensor(sum(max(lam, v) for v in kl.mean(0).tolist()))

    fails(checks.check_free_bits, python_max, "case 'gradient", "torch.clamp")


def test_wrong_active_units_are_caught():
    fails(
        checks.check_active_units,
        lambda mu, thr: int((mu.abs().mean(0) > thr).sum()),  # magnitude, not variance
        "case 'constant dimensions are inactive'",
        "the number of active units does not match",
        "expected: 2\n  got:      5",
    )


def test_wrong_iwae_bounds_are_caught():
    fails(
        checks.check_iwae_bound,
        lambda log_w: log_w.mean(0),  # the ELBO, not the IWAE bound
        "two weights 1 and 3 give log 2",
    )
    fails(
        checks.check_iwae_bound,
        lambda log_w: log_w.exp().mean(0).log(),  # unstable
        "very negative log-weights (-1000) do not underflow",
        "got:      -inf",
    )
    fails(
        checks.check_iwae_bound,
        lambda log_w: log_w.exp().mean(1).log(),  # wrong dimension
        "case 'K = 1 gives the single log-weight",
    )


def test_a_crash_in_student_code_names_the_case():
    msg = fails(checks.check_iwae_bound, lambda log_w: log_w.foo(), "raised AttributeError")
    assert msg.startswith("check_iwae_bound, case 'K = 1")
