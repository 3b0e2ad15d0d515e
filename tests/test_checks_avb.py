"""dgmlib.checks.avb (lecture 09): alternative reference solutions pass with one line, and
typical mistakes are rejected with the case that catches them and a hint naming the mistake (the
one-line and stub behaviour of every check is tested in tests/test_checks.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import fails

from dgmlib import checks
from dgmlib.avb import avb_losses

# ---------------------------------------------------------------------------------------------
# the KL estimate from a discriminator's outputs


def kl_right(d):
    return (torch.log(d) - torch.log1p(-d)).mean()


def kl_logit(d):
    return torch.logit(d).mean()


def kl_slide(d):  # the slide's formula: the ratio itself
    return (d / (1 - d)).mean()


def kl_log_of_mean(d):
    return torch.log((d / (1 - d)).mean())


def kl_prob(d):
    return d.mean()


def kl_log_d(d):
    return torch.log(d).mean()


def kl_flipped(d):
    return torch.log((1 - d) / d).mean()


def kl_per_row(d):
    return torch.logit(d).mean(-1)


def kl_minus_log_one_minus_d(d):
    return -torch.log1p(-d).mean()


def kl_chi2(d):
    return (d / (1 - d)).mean() - 1


def kl_sum(d):
    return torch.logit(d).sum()


def kl_bits(d):
    return torch.log2(d / (1 - d)).mean()


def kl_log10(d):
    return torch.log10(d / (1 - d)).mean()


# ---------------------------------------------------------------------------------------------
# the AVB losses


def losses_right(decoder, disc, x, z, z_prior):
    t = avb_losses(decoder, disc, x, z, z_prior)
    return t["primal"], t["dual"]


def losses_requires_grad_toggle(decoder, disc, x, z, z_prior):
    """Another correct way to hold T fixed: switch its weights' requires_grad off."""
    for p in disc.parameters():
        p.requires_grad_(False)
    t_frozen = disc(x, z)
    for p in disc.parameters():
        p.requires_grad_(True)
    primal = (-decoder.log_prob(x, z) + t_frozen).mean()
    dual = -(F.logsigmoid(disc(x, z.detach())) + F.logsigmoid(-disc(x, z_prior))).mean()
    return primal, dual


def losses_t_not_frozen(decoder, disc, x, z, z_prior):
    primal = (-decoder.log_prob(x, z) + disc(x, z)).mean()
    return primal, losses_right(decoder, disc, x, z, z_prior)[1]


def losses_z_not_detached(decoder, disc, x, z, z_prior):
    dual = (F.softplus(-disc(x, z)) + F.softplus(disc(x, z_prior))).mean()
    return losses_right(decoder, disc, x, z, z_prior)[0], dual


def losses_z_detached_in_primal(decoder, disc, x, z, z_prior):
    return losses_right(decoder, disc, x, z.detach(), z_prior)


def losses_sign_of_t(decoder, disc, x, z, z_prior):
    primal, dual = losses_right(decoder, disc, x, z, z_prior)
    return primal - 2 * disc(x, z).detach().mean(), dual


def losses_swapped_labels(decoder, disc, x, z, z_prior):
    dual = (F.softplus(disc(x, z.detach())) + F.softplus(-disc(x, z_prior))).mean()
    return losses_right(decoder, disc, x, z, z_prior)[0], dual


def losses_loglik_sign(decoder, disc, x, z, z_prior):
    primal, dual = losses_right(decoder, disc, x, z, z_prior)
    return primal + 2 * decoder.log_prob(x, z).mean(), dual


def losses_primal_sum(decoder, disc, x, z, z_prior):
    primal, dual = losses_right(decoder, disc, x, z, z_prior)
    return primal * len(x), dual


def losses_no_reconstruction(decoder, disc, x, z, z_prior):
    primal, dual = losses_right(decoder, disc, x, z, z_prior)
    return primal + decoder.log_prob(x, z).mean(), dual


def losses_no_kl_term(decoder, disc, x, z, z_prior):
    return -decoder.log_prob(x, z).mean(), losses_right(decoder, disc, x, z, z_prior)[1]


def losses_probability_as_kl(decoder, disc, x, z, z_prior):
    t = torch.sigmoid(disc(x, z).detach())  # detached, so only the value is wrong
    return (-decoder.log_prob(x, z) + t).mean(), losses_right(decoder, disc, x, z, z_prior)[1]


def losses_dual_sum(decoder, disc, x, z, z_prior):
    primal, dual = losses_right(decoder, disc, x, z, z_prior)
    return primal, dual * len(x)


def losses_dual_maximised(decoder, disc, x, z, z_prior):
    primal, dual = losses_right(decoder, disc, x, z, z_prior)
    return primal, -dual


def losses_dual_halved(decoder, disc, x, z, z_prior):
    primal, dual = losses_right(decoder, disc, x, z, z_prior)
    return primal, dual / 2


def losses_dual_no_prior_term(decoder, disc, x, z, z_prior):
    primal = losses_right(decoder, disc, x, z, z_prior)[0]
    return primal, F.softplus(-disc(x, z.detach())).mean()


def losses_dual_no_encoder_term(decoder, disc, x, z, z_prior):
    primal = losses_right(decoder, disc, x, z, z_prior)[0]
    return primal, F.softplus(disc(x, z_prior)).mean()


def losses_dual_no_grad(decoder, disc, x, z, z_prior):
    primal, dual = losses_right(decoder, disc, x, z, z_prior)
    return primal, dual.detach()


@pytest.mark.parametrize(
    ("check", "fn", "n"),
    [
        (checks.check_kl_from_discriminator, kl_right, 3),
        (checks.check_kl_from_discriminator, kl_logit, 3),
        (checks.check_avb_losses, losses_right, 5),
        (checks.check_avb_losses, losses_requires_grad_toggle, 5),
    ],
)
def test_references_pass_with_one_line(check, fn, n, capsys):
    check(fn)
    assert capsys.readouterr().out == f"{check.__name__}: all {n} cases pass.\n"


@pytest.mark.parametrize(
    ("wrong", "case", "hint"),
    [
        (kl_slide, "D* of N(1, 1)", "the lecture slide's formula"),
        (kl_log_of_mean, "D* of N(1, 1)", "Renyi divergence"),
        (kl_prob, "D* of N(1, 1)", "you averaged D itself"),
        (kl_log_d, "D* of N(1, 1)", "log D - log(1 - D)"),
        (kl_flipped, "D* of N(1, 1)", "the sign is flipped"),
        (kl_minus_log_one_minus_d, "D* of N(1, 1)", "you averaged -log(1 - D)"),
        (kl_chi2, "D* of N(1, 1)", "the chi^2 divergence"),
        (kl_sum, "D* of N(1, 1)", "you summed over the samples"),
        (kl_bits, "D* of N(1, 1)", "in bits"),
        (kl_log10, "D* of N(1, 1)", "log base 10"),
    ],
)
def test_kl_check_names_the_mistake(wrong, case, hint):
    fails(checks.check_kl_from_discriminator, wrong, case, hint)


def test_kl_check_wants_one_number():
    fails(checks.check_kl_from_discriminator, kl_per_row, "a batch of shape", "every sample")


@pytest.mark.parametrize(
    ("wrong", "case", "hint"),
    [
        (losses_t_not_frozen, "the primal loss holds the weights of T", "detached weights"),
        (losses_z_not_detached, "the dual loss does not reach the encoder", "z.detach()"),
        (losses_z_detached_in_primal, "the primal loss reaches the encoder", "do not detach z"),
        (losses_sign_of_t, "values on a batch", "the sign of T is flipped"),
        (losses_swapped_labels, "values on a batch", "the labels are swapped"),
        (losses_dual_no_grad, "values on a batch", "weights in the graph"),
        (losses_loglik_sign, "values on a batch", "the sign of the log-likelihood is flipped"),
        (losses_primal_sum, "values on a batch", "the batch SUM"),
        (losses_no_reconstruction, "values on a batch", "lacks the reconstruction term"),
        (losses_no_kl_term, "values on a batch", "lacks the KL term T(x, z)"),
        (losses_probability_as_kl, "values on a batch", "D = sigmoid(T), a probability"),
        (losses_dual_sum, "values on a batch", "the batch SUM"),
        (losses_dual_maximised, "values on a batch", "the sign is flipped"),
        (losses_dual_halved, "values on a batch", "half the loss"),
        (losses_dual_no_prior_term, "values on a batch", "lacks the prior's term"),
        (losses_dual_no_encoder_term, "values on a batch", "lacks the encoder's term"),
    ],
)
def test_avb_losses_check_names_the_mistake(wrong, case, hint):
    fails(checks.check_avb_losses, wrong, case, hint)


def test_avb_losses_check_rejects_a_single_value():
    with pytest.raises(AssertionError, match="return a pair"):
        checks.check_avb_losses(lambda *a: losses_right(*a)[0])
