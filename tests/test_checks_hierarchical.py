"""dgmlib.checks.hierarchical (lecture 11): alternative correct solutions pass with one line,
and typical mistakes are rejected with the case that catches them and a hint naming the mistake
(the one-line and stub behaviour of every check is tested in tests/test_checks.py)."""

from __future__ import annotations

import pytest
import torch
from helpers import fails

from dgmlib import checks
from dgmlib.models.hierarchical import gaussian_kl, precision_weighted


def kl_by_hand(mq, lq, mp, lp):
    return 0.5 * (lp - lq + (lq.exp() + (mq - mp) ** 2) / lp.exp() - 1).sum(-1)


def topdown_right(m2, l2, m1, l1, mp, lp):
    return kl_by_hand(m2, l2, 0 * m2, 0 * l2), kl_by_hand(m1, l1, mp, lp)


def topdown_library(m2, l2, m1, l1, mp, lp):
    return gaussian_kl(m2, l2, torch.zeros_like(m2), torch.zeros_like(l2)), gaussian_kl(
        m1, l1, mp, lp
    )


def merge_by_variances(ma, la, mb, lb):
    va, vb = la.exp(), lb.exp()
    return (ma * vb + mb * va) / (va + vb), (va * vb / (va + vb)).log()


def message_by_matmul(log_px_z1, log_pz1_z2):
    top = log_px_z1.max(-1, keepdim=True).values  # stable: factor out the largest likelihood
    return top + torch.log((log_px_z1 - top).exp() @ log_pz1_z2.exp().T)


@pytest.mark.parametrize(
    ("check", "fn", "n"),
    [
        (checks.check_topdown_kls, topdown_right, 4),
        (checks.check_topdown_kls, topdown_library, 4),
        (checks.check_ladder_merge, precision_weighted, 4),
        (checks.check_ladder_merge, merge_by_variances, 4),
        (checks.check_backward_message, message_by_matmul, 4),
    ],
)
def test_correct_solutions_pass_with_one_line(check, fn, n, capsys):
    check(fn)
    assert capsys.readouterr().out == f"{check.__name__}: all {n} cases pass.\n"


@pytest.mark.parametrize(
    ("fn", "case", "hint"),
    [
        (
            lambda m2, l2, m1, l1, mp, lp: (
                kl_by_hand(m2, l2, 0 * m2, 0 * l2),
                kl_by_hand(m1, l1, 0 * m1, 0 * l1),
            ),
            "q equals the prior in both layers",
            "comparing layer 1 with N(0, I)",
        ),
        (
            lambda m2, l2, m1, l1, mp, lp: (
                kl_by_hand(0 * m2, 0 * l2, m2, l2),
                kl_by_hand(mp, lp, m1, l1),
            ),
            "layer 1: q(z1|z2,x) = N(0, I)",
            "the reversed divergence KL(p || q)",
        ),
        (
            lambda m2, l2, m1, l1, mp, lp: (
                kl_by_hand(m2, 2 * l2, 0 * m2, 0 * l2),
                kl_by_hand(m1, 2 * l1, mp, 2 * lp),
            ),
            "layer 1: q(z1|z2,x) = N(0, I)",
            "reading the log-variance as a log standard deviation",
        ),
        (
            lambda *a: topdown_right(*a)[::-1],
            "layer 1: q(z1|z2,x) = N(0, I)",
            "swapping the two layers' terms",
        ),
        (
            lambda *a: tuple(t.sum() for t in topdown_right(*a)),
            "q equals the prior in both layers",
            "summed over the last dimension only",
        ),
    ],
)
def test_topdown_mistakes_are_named(fn, case, hint):
    fails(checks.check_topdown_kls, fn, case, hint)


@pytest.mark.parametrize(
    ("fn", "case", "hint"),
    [
        (
            lambda ma, la, mb, lb: (
                precision_weighted(ma, la, mb, lb)[0],
                (la.exp() + lb.exp()).log(),
            ),
            "equal variances",
            "adding the variances instead of the precisions",
        ),
        (
            lambda ma, la, mb, lb: (
                (ma * la.exp() + mb * lb.exp()) / (la.exp() + lb.exp()),
                precision_weighted(ma, la, mb, lb)[1],
            ),
            "a precise message",
            "weighting the means by the variances",
        ),
        (
            lambda ma, la, mb, lb: (0.5 * (ma + mb), precision_weighted(ma, la, mb, lb)[1]),
            "a precise message",
            "averaging the means without weights",
        ),
        (
            lambda ma, la, mb, lb: (
                precision_weighted(ma, la, mb, lb)[0],
                precision_weighted(ma, la, mb, lb)[1].exp(),
            ),
            "equal variances",
            "returning the variance instead of the log-variance",
        ),
        (lambda ma, la, mb, lb: ma, "equal variances", "return the two tensors as a tuple"),
    ],
)
def test_merge_mistakes_are_named(fn, case, hint):
    fails(checks.check_ladder_merge, fn, case, hint)


@pytest.mark.parametrize(
    ("fn", "case", "hint"),
    [
        (
            lambda lx, lt: (lt[None] + lx[:, None]).max(-1).values,
            "two equally likely states",
            "the Viterbi message",
        ),
        (
            lambda lx, lt: torch.logsumexp(lx, -1, keepdim=True).expand(-1, lt.shape[0]),
            "a deterministic transition",
            "forgetting the transition",
        ),
        (
            lambda lx, lt: (lt.exp()[None] * lx[:, None]).sum(-1),
            "two equally likely states",
            "summing products of log-probabilities",
        ),
        (
            lambda lx, lt: (lt.exp()[None] * lx.exp()[:, None]).sum(-1).log(),
            "likelihoods near exp(-1000)",
            "exponentiating without log-sum-exp",
        ),
        (
            lambda lx, lt: torch.logsumexp(lt[None] + lx[:, None], 1),  # sums over z2
            "a deterministic transition",
            "logsumexp over the last dimension (z1)",
        ),
    ],
)
def test_message_mistakes_are_named(fn, case, hint):
    fails(checks.check_backward_message, fn, case, hint)


@pytest.mark.parametrize(
    ("fn", "case", "hint"),
    [
        (
            lambda *a: tuple(2 * k for k in topdown_right(*a)),
            "layer 1: q(z1|z2,x) = N(0, I)",
            "forgetting the factor 1/2",
        ),
        (
            lambda m2, l2, m1, l1, mp, lp: (
                kl_by_hand(m2, l2, 0 * m2, 0 * l2) + m2.shape[-1] / 2,
                kl_by_hand(m1, l1, mp, lp) + m1.shape[-1] / 2,
            ),
            "q equals the prior in both layers",
            "forgetting the -1 in each dimension",
        ),
        (
            lambda m2, l2, m1, l1, mp, lp: (
                0.5 * (l2.exp() + m2**2 - 1 - l2).mean(-1),
                0.5 * (lp - l1 + (l1.exp() + (m1 - mp) ** 2) / lp.exp() - 1).mean(-1),
            ),
            "layer 1: q(z1|z2,x) = N(0, I)",
            "averaging over the latent dimensions instead of summing",
        ),
    ],
)
def test_topdown_slips_of_arithmetic_are_named(fn, case, hint):
    """A missing 1/2, a forgotten -1 and a mean instead of a sum, each caught and named."""
    fails(checks.check_topdown_kls, fn, case, hint)


def test_topdown_sum_over_the_batch_is_named():
    msg = fails(
        checks.check_topdown_kls,
        lambda *a: tuple(k.sum() for k in topdown_right(*a)),
        "q equals the prior in both layers",
        "summing over the batch as well",
    )
    assert "has shape (), expected (2,)" in msg, msg


@pytest.mark.parametrize(
    ("fn", "case", "hint"),
    [
        (
            lambda ma, la, mb, lb: (
                precision_weighted(ma, la, mb, lb)[0],
                torch.log((-la).exp() + (-lb).exp()),
            ),
            "equal variances",
            "returning the log-precision",
        ),
        (
            lambda ma, la, mb, lb: (precision_weighted(ma, la, mb, lb)[0], la + lb),
            "equal variances",
            "adding the log-variances",
        ),
        (
            lambda ma, la, mb, lb: (
                ma / la.exp() + mb / lb.exp(),
                precision_weighted(ma, la, mb, lb)[1],
            ),
            "equal variances",
            "not dividing the precision-weighted sum",
        ),
    ],
)
def test_merge_slips_are_named(fn, case, hint):
    """A sign of the log-variance, multiplied variances, a sum not normalised: each named."""
    fails(checks.check_ladder_merge, fn, case, hint)


@pytest.mark.parametrize(
    ("fn", "case", "hint"),
    [
        (
            lambda lx, lt: torch.logsumexp(lt[None] + lx[:, None], 1),  # over z2, not z1
            "a deterministic transition",
            "the log-sum-exp over z2",
        ),
        (
            lambda lx, lt: torch.logsumexp(lt[None] + lx[:, None], -1).exp(),
            "a deterministic transition",
            "returning p(x | z2) instead of its logarithm",
        ),
        (
            lambda lx, lt: (lx.exp().mean(-1, keepdim=True).log()).expand(-1, lt.shape[0]),
            "a deterministic transition",
            "weighting every state z1 by 1/S1",
        ),
    ],
)
def test_message_axis_log_and_weights_are_named(fn, case, hint):
    """The wrong axis, a probability instead of a log-probability, uniform weights: named."""
    fails(checks.check_backward_message, fn, case, hint)
