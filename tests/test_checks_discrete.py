"""dgmlib.checks.discrete (lecture 07): alternative reference solutions pass with one line,
and typical mistakes are rejected with the case that catches them (the one-line and stub
behaviour of every check is tested in tests/test_checks.py)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import fails
from torch.distributions import Categorical, kl_divergence

from dgmlib import checks
from dgmlib.models.discrete import categorical_kl_uniform


def gumbel_right(logits, u):
    return (logits - torch.log(-torch.log(u))).argmax(-1)


def gumbel_wrong_sign(logits, u):
    return (logits + torch.log(-torch.log(u))).argmax(-1)


def gumbel_argmin(logits, u):
    return (logits - torch.log(-torch.log(u))).argmin(-1)


def gumbel_on_probs(logits, u):
    return (torch.softmax(logits, -1) - torch.log(-torch.log(u))).argmax(-1)


def gumbel_float(logits, u):
    return gumbel_right(logits, u).double()


def gumbel_flat(logits, u):
    return gumbel_right(logits.reshape(-1, logits.shape[-1]), u.reshape(-1, u.shape[-1]))


def gumbel_one_log(logits, u):  # exponential noise -log u
    return (logits - torch.log(u)).argmax(-1)


def gumbel_raw_u(logits, u):
    return (logits + u).argmax(-1)


def gumbel_exp_logits(logits, u):
    return (logits.exp() - torch.log(-torch.log(u))).argmax(-1)


def gumbel_log10(logits, u):
    return (logits - torch.log10(-torch.log10(u))).argmax(-1)


def gumbel_own_noise(logits, u):  # ignores u and draws its own numbers
    return gumbel_right(logits, torch.rand_like(u))


def kl_right_torch(logits):
    c = logits.shape[-1]
    return kl_divergence(Categorical(logits=logits), Categorical(logits=torch.zeros(c).double()))


def kl_no_log_c(logits):
    return categorical_kl_uniform(logits) - math.log(logits.shape[-1])


def kl_logits_as_log_probs(logits):
    return (torch.softmax(logits, -1) * logits).sum(-1) + math.log(logits.shape[-1])


def kl_reversed(logits):
    c = logits.shape[-1]
    return (-math.log(c) - torch.log_softmax(logits, -1)).sum(-1) / c


def kl_naive(logits):
    q = torch.softmax(logits, -1)
    return (q * torch.log(q)).sum(-1) + math.log(logits.shape[-1])


def kl_sum_all(logits):
    return categorical_kl_uniform(logits).sum()


def kl_batch_mean(logits):
    return categorical_kl_uniform(logits).mean()


def kl_bits(logits):
    return categorical_kl_uniform(logits) / math.log(2)


def kl_wrong_sign(logits):
    return -categorical_kl_uniform(logits)


def kl_entropy_plus(logits):  # log C + H(q)
    return math.log(logits.shape[-1]) - (
        torch.softmax(logits, -1) * torch.log_softmax(logits, -1)
    ).sum(-1)


def kl_mean_over_categories(logits):
    q = torch.softmax(logits, -1)
    return (q * torch.log_softmax(logits, -1)).mean(-1) + math.log(logits.shape[-1])


@pytest.mark.parametrize(
    ("check", "fn", "n"),
    [
        (checks.check_gumbel_max_sample, gumbel_right, 4),
        (checks.check_categorical_kl_uniform, categorical_kl_uniform, 5),
        (checks.check_categorical_kl_uniform, kl_right_torch, 5),
    ],
)
def test_references_pass_with_one_line(check, fn, n, capsys):
    check(fn)
    assert capsys.readouterr().out == f"{check.__name__}: all {n} cases pass.\n"


@pytest.mark.parametrize(
    ("wrong", "case", "hint"),
    [
        (gumbel_wrong_sign, "8 rows", "two minus signs"),
        (gumbel_argmin, "8 rows", "argmax"),
        (gumbel_on_probs, "8 rows", "not softmax(logits)"),
        (gumbel_float, "8 rows", "argmax"),
        (gumbel_flat, "a batch of shape", "last dimension"),
    ],
)
def test_gumbel_check_rejects_typical_mistakes(wrong, case, hint):
    fails(checks.check_gumbel_max_sample, wrong, case, hint)


@pytest.mark.parametrize(
    ("wrong", "case", "hint"),
    [
        (kl_no_log_c, "equal logits", "log C"),
        (kl_logits_as_log_probs, "equal logits", "log_softmax"),
        (kl_reversed, "random logits", "KL(uniform || q)"),
        (kl_naive, "one-hot q", "0 * log(0)"),
        (kl_sum_all, "equal logits", "log C"),
    ],
)
def test_kl_check_rejects_typical_mistakes(wrong, case, hint):
    fails(checks.check_categorical_kl_uniform, wrong, case, hint)


@pytest.mark.parametrize(
    ("wrong", "case", "diagnosis"),
    [
        (gumbel_wrong_sign, "8 rows", "the sign of the noise is flipped"),
        (gumbel_one_log, "8 rows", "exponential noise"),
        (gumbel_raw_u, "8 rows", "logits + u"),
        (gumbel_argmin, "8 rows", "the argmin of the perturbed logits"),
        (gumbel_on_probs, "8 rows", "perturb softmax(logits), the probabilities"),
        (gumbel_exp_logits, "8 rows", "perturb exp(logits)"),
        (gumbel_log10, "8 rows", "log10"),
        (gumbel_own_noise, "8 rows", "do not draw new random numbers"),
    ],
)
def test_gumbel_check_names_the_mistake(wrong, case, diagnosis):
    """Each planted mistake fails with the case that catches it and a hint naming it."""
    fails(checks.check_gumbel_max_sample, wrong, case, diagnosis)


@pytest.mark.parametrize(
    ("wrong", "case", "diagnosis"),
    [
        (kl_no_log_c, "equal logits", "lacks the + log C"),
        (kl_logits_as_log_probs, "equal logits", "raw logits as log q"),
        (kl_reversed, "random logits", "KL(uniform || q), the other direction"),
        (kl_wrong_sign, "random logits", "the wrong sign"),
        (kl_entropy_plus, "equal logits", "log C + H(q)"),
        (kl_bits, "random logits", "in bits"),
        (kl_mean_over_categories, "equal logits", "averages q_c log q_c over the categories"),
        (kl_sum_all, "equal logits", "one number for the whole batch"),
        (kl_batch_mean, "equal logits", "one number for the whole batch"),
    ],
)
def test_kl_check_names_the_mistake(wrong, case, diagnosis):
    """Each planted mistake fails with the case that catches it and a hint naming it."""
    fails(checks.check_categorical_kl_uniform, wrong, case, diagnosis)
