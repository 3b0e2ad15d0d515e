"""dgmlib.checks.priors (lecture 06): typical mistakes are rejected with the case that catches
them (the one-line/stub behaviour of every check: tests/test_checks.py)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import fails
from torch.distributions import Normal

from dgmlib import checks
from dgmlib.kernels import mixture_logpdf
from dgmlib.surgery import aggregate_posterior_log_prob


def mixture_right(z, means, logvars, logits):
    return mixture_logpdf(z, means, logvars, torch.log_softmax(logits, 0))


def component_log_probs(z, means, logvars):
    """[M, K]: log N(z_m; means_k, diag(exp(logvars_k)))."""
    return Normal(means[None], torch.exp(0.5 * logvars[None])).log_prob(z[:, None]).sum(-1)


def mixture_unnormalized_logits(z, means, logvars, logits):
    return torch.logsumexp(component_log_probs(z, means, logvars) + logits, 1)


def mixture_naive_exp(z, means, logvars, logits):
    dens = component_log_probs(z, means, logvars).exp()
    return torch.log((torch.softmax(logits, 0) * dens).sum(1))


def mixture_std_for_var(z, means, logvars, logits):
    return mixture_logpdf(z, means, 2 * logvars, torch.log_softmax(logits, 0))


def mixture_mean_of_logs(z, means, logvars, logits):
    return (torch.softmax(logits, 0) * component_log_probs(z, means, logvars)).sum(1)


def aggregate_sum(z, mu, logvar):
    return torch.logsumexp(component_log_probs(z, mu, logvar), 1)


def aggregate_mean_of_logs(z, mu, logvar):
    return component_log_probs(z, mu, logvar).mean(1)


def aggregate_naive_exp(z, mu, logvar):
    return torch.log(component_log_probs(z, mu, logvar).exp().mean(1))


def aggregate_std_for_var(z, mu, logvar):
    return aggregate_posterior_log_prob(z, mu, 2 * logvar)


LOG_2PI = math.log(2 * math.pi)


def gaussian_terms(z, means, logvars, half=0.5, const=LOG_2PI):
    """[M, K]: log N(z_m; means_k, diag(exp(logvars_k))), or a typical mistake of it."""
    sq = (z[:, None] - means[None]) ** 2 / logvars[None].exp()
    return -half * (const + logvars[None] + sq).sum(-1)


def mixture_no_log_2pi(z, means, logvars, logits):
    return torch.logsumexp(
        torch.log_softmax(logits, 0) + gaussian_terms(z, means, logvars, const=0), 1
    )


def mixture_no_half(z, means, logvars, logits):
    return torch.logsumexp(torch.log_softmax(logits, 0) + gaussian_terms(z, means, logvars, 1.0), 1)


def mixture_wrong_axis(z, means, logvars, logits):
    return torch.logsumexp(torch.log_softmax(logits, 0) + gaussian_terms(z, means, logvars), 0)


def aggregate_no_log_2pi(z, mu, logvar):
    return torch.logsumexp(gaussian_terms(z, mu, logvar, const=0), 1) - math.log(len(mu))


def aggregate_no_half(z, mu, logvar):
    return torch.logsumexp(gaussian_terms(z, mu, logvar, 1.0), 1) - math.log(len(mu))


def aggregate_wrong_axis(z, mu, logvar):
    return torch.logsumexp(gaussian_terms(z, mu, logvar), 0) - math.log(len(mu))


MIXTURE, AGGREGATE = checks.check_mixture_prior_log_prob, checks.check_aggregate_posterior_log_prob


@pytest.mark.parametrize(
    ("check", "wrong", "case", "hint"),
    [
        (
            MIXTURE,
            mixture_unnormalized_logits,
            "equal logits",
            "log_softmax(logits) as log-weights",
        ),
        (MIXTURE, mixture_naive_exp, "do not underflow", "logsumexp"),
        (MIXTURE, mixture_std_for_var, "one component", "a variance, not a"),
        (MIXTURE, mixture_mean_of_logs, "equal logits", "not the mean"),
        (AGGREGATE, aggregate_sum, "identical posteriors", "subtract log N"),
        (AGGREGATE, aggregate_mean_of_logs, "40 apart", "Jensen"),
        (AGGREGATE, aggregate_naive_exp, "no underflow", "logsumexp"),
        (AGGREGATE, aggregate_std_for_var, "N = 1", "exp(logvar_d)"),
        (MIXTURE, mixture_no_log_2pi, "one component", "-1/2 log(2 pi)"),
        (MIXTURE, mixture_no_half, "one component", "the factor 1/2 is missing"),
        (MIXTURE, mixture_wrong_axis, "one component", "the wrong axis"),
        (AGGREGATE, aggregate_no_log_2pi, "N = 1", "-1/2 log(2 pi)"),
        (AGGREGATE, aggregate_no_half, "N = 1", "the factor 1/2 is missing"),
        (AGGREGATE, aggregate_wrong_axis, "N = 1", "the wrong axis"),
    ],
)
def test_typical_mistakes_are_rejected(check, wrong, case, hint):
    """The message names the check and the case that catches the mistake, with its hint."""
    fails(check, wrong, case, hint)


def test_a_wrong_shape_and_a_crash_are_reported():
    with pytest.raises(AssertionError, match=r"has shape \(6, 1\), expected \(6,\)"):
        checks.check_mixture_prior_log_prob(
            lambda z, m, lv, lg: mixture_right(z, m, lv, lg)[:, None]
        )
    with pytest.raises(AssertionError, match="your function raised ZeroDivisionError"):
        checks.check_aggregate_posterior_log_prob(lambda z, mu, lv: 1 / 0 + math.pi)
