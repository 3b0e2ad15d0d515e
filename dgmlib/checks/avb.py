"""Checks of lecture 09 (adversarial variational Bayes): the KL estimate from a discriminator's
outputs, and the two AVB losses with the gradients each may send."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from dgmlib.avb import JointDiscriminator, avb_losses
from dgmlib.checks.common import as_float64, call_student, compare, fail, passed, seeded_build
from dgmlib.density_ratio import gaussian_log_ratio_coefficients
from dgmlib.models.vae import BernoulliDecoder

__all__ = ["check_avb_losses", "check_kl_from_discriminator"]

DT = torch.float64
RTOL, ATOL = 1e-6, 1e-9


def _kl_mistakes(d: Tensor) -> list[tuple[Tensor, str]]:
    """What typical wrong formulas give for the probabilities ``d``, and what to say."""
    logit = torch.log(d) - torch.log1p(-d)
    return [
        (
            (d / (1 - d)).mean(),
            "you averaged D / (1 - D), the density ratio itself (the lecture slide's formula). "
            "Its mean estimates E[q1/q2] = 1 + chi^2(q1 || q2), not the KL; average the log of "
            "it, the logit log(D / (1 - D)).",
        ),
        (
            torch.log((d / (1 - d)).mean()),
            "you took the log of the mean ratio (a Renyi divergence of order 2, larger than the "
            "KL); average the log-ratio instead: mean of log(D / (1 - D)).",
        ),
        (d.mean(), "you averaged D itself; the KL estimate is the mean of log(D / (1 - D))."),
        (
            torch.log(d).mean(),
            "you averaged log D; the log density ratio is log D - log(1 - D).",
        ),
        (-logit.mean(), "the sign is flipped: average log(D / (1 - D)), not log((1 - D) / D)."),
        (
            -torch.log1p(-d).mean(),
            "you averaged -log(1 - D); the log density ratio is log D - log(1 - D).",
        ),
        (
            (d / (1 - d)).mean() - 1,
            "you averaged D / (1 - D) - 1, an estimate of the chi^2 divergence, not the KL; "
            "average the log-ratio log(D / (1 - D)).",
        ),
        (
            logit.sum(),
            "you summed over the samples: the KL estimate is the MEAN of log(D / (1 - D)).",
        ),
        (
            logit.mean() / math.log(2),
            "your value is in bits (log base 2): use the natural logarithm (nats).",
        ),
        (
            logit.mean() / math.log(10),
            "your value uses log base 10: use the natural logarithm (nats).",
        ),
    ]


def check_kl_from_discriminator(fn: Callable[[Tensor], Tensor]) -> None:
    """Check ``fn(d) -> KL estimate`` (a number, nats): ``d`` holds a discriminator's outputs
    ``D = p(y = 1 | x)`` in (0, 1) at samples of ``q1`` (any shape); the estimate of
    ``KL(q1 || q2)`` is the mean of the logit ``log(D / (1 - D))`` over all of them."""
    check = "check_kl_from_discriminator"
    g = torch.Generator().manual_seed(31)
    c0, c1, c2 = gaussian_log_ratio_coefficients(1.0, 1.0, 0.0, 2.0)
    x = 1.0 + torch.randn(4000, generator=g, dtype=DT)
    d_exact = torch.sigmoid(c0 + c1 * x + c2 * x * x)  # the optimal D for N(1, 1) vs N(0, 4)
    general = "the estimate of KL(q1 || q2) is the mean, over all samples, of log(D / (1 - D))."
    cases = [
        ("D* of N(1, 1) against N(0, 4) at 4000 samples of N(1, 1)", d_exact),
        ("D = 1/2 everywhere: the two densities agree, KL = 0", torch.full((5,), 0.5, dtype=DT)),
        ("a batch of shape [4, 1000] gives one number", d_exact.view(4, 1000)),
    ]
    for case, d in cases:
        got = as_float64(check, case, call_student(check, case, fn, d.clone()))
        expected = (torch.log(d) - torch.log1p(-d)).mean()
        if got.numel() != 1:
            fail(
                check,
                case,
                f"the result has shape {tuple(got.shape)}, expected one number.",
                "average over every sample (all dimensions), e.g. with .mean().",
            )
        hint = general
        if not torch.isclose(got.reshape(()), expected, rtol=RTOL, atol=1e-6):
            for wrong, msg in _kl_mistakes(d):
                if torch.isclose(got.reshape(()), wrong, rtol=1e-6, atol=1e-9):
                    hint = msg
                    break
        compare(check, case, got, expected, what="the KL estimate", hint=hint, rtol=1e-6, atol=1e-6)
    passed(check, len(cases))


def _grads(loss: Tensor, inputs: Sequence[Tensor]) -> list[Tensor]:
    """Gradients of ``loss`` (zeros where it does not depend on an input)."""
    got = torch.autograd.grad(loss, inputs, allow_unused=True, retain_graph=True)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, got, strict=True)]


def _matching(loss: Tensor, mistakes: Sequence[tuple[Tensor, str]], hint: str) -> str:
    """The message of the first mistake whose value ``loss`` has, else ``hint``."""
    for wrong, why in mistakes:
        if torch.isclose(loss.detach().to(DT), wrong.to(DT), rtol=RTOL, atol=ATOL):
            return why
    return hint


def check_avb_losses(fn: Callable[..., tuple[Tensor, Tensor]]) -> None:
    """Check ``fn(decoder, discriminator, x, z, z_prior) -> (primal, dual)``: batch means of
    ``-log p(x|z) + T(x, z)`` with ``T``'s weights held fixed (gradients reach ``z`` only) and of
    the logistic loss ``softplus(-T(x, z)) + softplus(T(x, z_prior))`` with ``z`` detached."""
    check = "check_avb_losses"
    g = torch.Generator().manual_seed(32)
    decoder = seeded_build(
        g, lambda: BernoulliDecoder(z_dim=2, hidden=8, x_shape=4, n_hidden_layers=1)
    )
    disc = seeded_build(g, lambda: JointDiscriminator(x_dim=4, z_dim=2, hidden=8))
    x = torch.eye(4, dtype=DT)[torch.randint(0, 4, (16,), generator=g)]
    z0 = torch.randn(16, 2, generator=g, dtype=DT) * 0.5 + x[:, :2]
    z_prior = torch.randn(16, 2, generator=g, dtype=DT)
    z = z0.clone().requires_grad_(True)  # stands for the encoder's output
    case = "values on a batch of 16"
    out = call_student(check, case, fn, decoder, disc, x, z, z_prior)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        fail(check, case, "return a pair (primal, dual).", "return primal, dual")
    primal, dual = out
    if not isinstance(primal, Tensor) or not isinstance(dual, Tensor):
        fail(
            check,
            case,
            "primal and dual must be tensors (keep them in the graph).",
            "compute both with torch operations; do not call .item().",
        )
    for name, loss in (("primal", primal), ("dual", dual)):
        if not loss.requires_grad:
            fail(
                check,
                case,
                f"the {name} loss is not connected to the graph (no gradient can flow).",
                "compute the losses from the discriminator's logits and the decoder's "
                "log-likelihood with their weights in the graph (no torch.no_grad, no .detach() "
                "of the result).",
            )
    ref = avb_losses(decoder, disc, x, z, z_prior)
    t_joint, t_prior = disc(x, z0).detach(), disc(x, z_prior).detach()
    log_px_z = decoder.log_prob(x, z0).detach()
    primal_hint = "the primal loss is the batch mean of -log p(x|z) + T(x, z)."
    primal_mistakes = [
        (
            (-log_px_z - t_joint).mean(),
            "the sign of T is flipped: the ELBO is E[log p(x|z)] - KL with KL = E[T], so the "
            "loss to minimise is -log p(x|z) + T.",
        ),
        (
            (log_px_z + t_joint).mean(),
            "the sign of the log-likelihood is flipped: the loss is -log p(x|z) + T (minus the "
            "ELBO), so the reconstruction term enters as -log p(x|z).",
        ),
        (
            (-log_px_z + t_joint).sum(),
            "your value is the batch SUM: take the batch mean, .mean().",
        ),
        (
            t_joint.mean(),
            "your value lacks the reconstruction term: the loss is -log p(x|z) + T, not T alone.",
        ),
        (
            -log_px_z.mean(),
            "your value lacks the KL term T(x, z): without it the encoder is not pulled "
            "towards the prior.",
        ),
        (
            (-log_px_z + torch.sigmoid(t_joint)).mean(),
            "you added D = sigmoid(T), a probability: the KL estimate is the logit T itself.",
        ),
        (
            (-log_px_z + F.logsigmoid(t_joint)).mean(),
            "you added log D = log sigmoid(T): the KL estimate is the logit T = log(D / (1 - D)).",
        ),
    ]
    primal_hint = _matching(primal, primal_mistakes, primal_hint)
    compare(
        check,
        case,
        primal,
        ref["primal"],
        what="the primal loss",
        hint=primal_hint,
        rtol=RTOL,
        atol=ATOL,
    )
    dual_hint = (
        "the dual loss is the batch mean of softplus(-T(x, z)) + softplus(T(x, z_prior)): "
        "pairs with z from the encoder are labelled 1, pairs with z from the prior 0."
    )
    right_terms = F.softplus(-t_joint) + F.softplus(t_prior)
    dual_mistakes = [
        (
            (F.softplus(t_joint) + F.softplus(-t_prior)).mean(),
            "the labels are swapped: the encoder's pairs (x, z) are the class y = 1, so that "
            "the logit estimates log q(z|x) - log p(z), not its negative.",
        ),
        (right_terms.sum(), "your value is the batch SUM: take the batch mean, .mean()."),
        (
            -right_terms.mean(),
            "the sign is flipped: the dual loss is the logistic loss (a negative "
            "log-likelihood, >= 0) that the discriminator minimises.",
        ),
        (
            0.5 * right_terms.mean(),
            "your value is half the loss: add the two logistic terms, do not average them.",
        ),
        (
            F.softplus(-t_joint).mean(),
            "your value lacks the prior's term softplus(T(x, z_prior)): the discriminator must "
            "also learn to reject the pairs with z from the prior.",
        ),
        (
            F.softplus(t_prior).mean(),
            "your value lacks the encoder's term softplus(-T(x, z)): the discriminator must "
            "also learn to accept the pairs with z from the encoder.",
        ),
    ]
    dual_hint = _matching(dual, dual_mistakes, dual_hint)
    compare(
        check, case, dual, ref["dual"], what="the dual loss", hint=dual_hint, rtol=RTOL, atol=ATOL
    )

    params = list(disc.parameters())
    case = "the primal loss holds the weights of T fixed"
    grads = _grads(primal, params)
    if any(gr.abs().max() > 0 for gr in grads):
        fail(
            check,
            case,
            "the primal loss sends gradients to the discriminator's weights.",
            "in the encoder's step T is a fixed function: evaluate it with detached weights "
            "(torch.func.functional_call with {name: p.detach()}), or the encoder's step would "
            "also train T to call the encoder's pairs fake.",
        )
    case = "the primal loss reaches the encoder through z"
    (gz,) = _grads(primal, [z])
    (gz_ref,) = _grads(ref["primal"], [z])
    compare(
        check,
        case,
        gz,
        gz_ref,
        what="d primal / d z",
        hint="the encoder learns from d(-log p(x|z) + T(x, z))/dz: do not detach z in the "
        "primal loss (only T's weights are held fixed).",
        rtol=RTOL,
        atol=ATOL,
    )
    case = "the dual loss does not reach the encoder"
    (gz_dual,) = _grads(dual, [z])
    if gz_dual.abs().max() > 0:
        fail(
            check,
            case,
            "the dual loss sends a gradient to z, i.e. to the encoder.",
            "detach z in the dual loss (discriminator(x, z.detach())): the encoder must not "
            "learn to make its pairs easy to recognise.",
        )
    case = "the dual loss trains T"
    compare(
        check,
        case,
        torch.cat([gr.reshape(-1) for gr in _grads(dual, params)]),
        torch.cat([gr.reshape(-1) for gr in _grads(ref["dual"], params)]),
        what="d dual / d (T's weights)",
        hint="compute the dual loss from the discriminator's logits with its weights in the "
        "graph (no torch.no_grad, no detached weights).",
        rtol=1e-5,
        atol=1e-8,
    )
    passed(check, 5)
