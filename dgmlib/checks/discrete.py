"""Checks of lecture 07 (discrete latents): the Gumbel-max trick and the KL of a categorical
distribution to the uniform one."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch.distributions import Categorical, kl_divergence

from dgmlib.checks.common import call_student, compare, diagnose, fail, matches, passed

__all__ = ["check_categorical_kl_uniform", "check_gumbel_max_sample"]

DT = torch.float64


def _gumbel_max_reference(logits: Tensor, u: Tensor) -> Tensor:
    """``argmax_c (logits_c - log(-log u_c))``: int64 ``[...]``."""
    return (logits - torch.log(-torch.log(u))).argmax(-1)


def _gumbel_mistakes(logits: Tensor, u: Tensor) -> list[tuple[Tensor, str]]:
    """What typical wrong samplers return for ``logits`` and ``u``, and what to say."""
    gumbel = -torch.log(-torch.log(u))
    return [
        (
            (logits - gumbel).argmax(-1),
            "your samples are those of logits - g: the sign of the noise is flipped "
            "(g = -log(-log u) is added).",
        ),
        (
            (logits - torch.log(u)).argmax(-1),
            "your samples are those of the noise -log u, with one log: that is exponential noise, "
            "not Gumbel noise; g = -log(-log u) takes the log twice.",
        ),
        (
            (logits + u).argmax(-1),
            "your samples are those of logits + u: the uniform numbers must first be turned into "
            "Gumbel noise, g = -log(-log u).",
        ),
        (
            (logits + gumbel).argmin(-1),
            "your samples are the argmin of the perturbed logits: the sample is the argmax.",
        ),
        (
            (torch.softmax(logits, -1) + gumbel).argmax(-1),
            "your samples perturb softmax(logits), the probabilities, instead of the logits.",
        ),
        (
            (torch.exp(logits) + gumbel).argmax(-1),
            "your samples perturb exp(logits) instead of the logits (log-probabilities).",
        ),
        (
            (logits - torch.log10(-torch.log10(u))).argmax(-1),
            "your samples use log10: the Gumbel noise -log(-log u) uses the natural logarithm.",
        ),
    ]


def check_gumbel_max_sample(fn: Callable[[Tensor, Tensor], Tensor]) -> None:
    """Check ``fn(logits [..., C], u [..., C]) -> int64 [...]``: the Gumbel-max sample
    ``argmax_c (logits_c + g_c)`` with Gumbel noise ``g_c = -log(-log u_c)`` made from the given
    uniform numbers ``u`` (so the answer is exact), and its frequencies match ``softmax``."""
    check = "check_gumbel_max_sample"
    g = torch.Generator().manual_seed(7)
    logits_r = torch.randn(8, 5, generator=g, dtype=DT) * 2.0
    u_r = torch.rand(8, 5, generator=g, dtype=DT)
    logits_probe = torch.randn(400, 5, generator=torch.Generator().manual_seed(70), dtype=DT)
    u_probe = torch.rand(400, 5, generator=torch.Generator().manual_seed(71), dtype=DT)
    noise_hint = (
        "the Gumbel noise is g = -log(-log u) (two minus signs), added to the logits; the sample "
        "is the index of the largest logits + g (argmax over the last dimension); perturb the "
        "logits themselves, not softmax(logits)."
    )
    cases = [
        ("8 rows, C = 5", (logits_r, u_r), noise_hint),
        (
            "peaked logits (scale 20): the noise is added to logits, not to probabilities",
            (logits_r * 10, u_r),
            "perturb the logits (log-probabilities up to a constant), not softmax(logits): "
            "probabilities lie in [0, 1] and the noise would swamp them.",
        ),
        (
            "a batch of shape [2, 4] over C = 5",
            (logits_r.view(2, 4, 5), u_r.view(2, 4, 5)),
            "take the argmax over the last dimension (dim=-1) and keep the leading dimensions.",
        ),
    ]
    for case, args, hint in cases:
        got = call_student(check, case, fn, *(a.clone() for a in args))
        if not isinstance(got, Tensor) or got.dtype not in (torch.int64, torch.int32):
            fail(check, case, "the result should be an integer tensor of indices.", hint)
        again = call_student(check, case, fn, *(a.clone() for a in args))
        if not isinstance(again, Tensor) or not torch.equal(again, got):
            fail(
                check,
                case,
                "two calls with the same logits and u gave different samples.",
                "make the noise from the given u, g = -log(-log u); do not draw new random "
                "numbers (torch.rand) inside the function. " + hint,
            )
        expected = _gumbel_max_reference(*args)
        why = ""
        if not torch.equal(got, expected):  # which mistake? 400 rows tell them apart
            probe = call_student(check, case, fn, logits_probe.clone(), u_probe.clone())
            why = diagnose(probe, _gumbel_mistakes(logits_probe, u_probe), rtol=0.0, atol=0.0)
        compare(
            check,
            case,
            got,
            expected,
            what="the sampled indices",
            hint=f"{why} {hint[:1].upper()}{hint[1:]}" if why else hint,
            rtol=0.0,
            atol=0.0,
        )
    # the frequencies of 40 000 samples match softmax(logits)
    case = "40000 samples: frequencies match softmax(logits) within 0.01"
    logits = torch.tensor([1.0, 0.0, -1.0, 2.0], dtype=DT)
    u = torch.rand(40_000, 4, generator=g, dtype=DT)
    idx = call_student(check, case, fn, logits.expand(40_000, 4), u)
    if not isinstance(idx, Tensor) or idx.shape != (40_000,):
        fail(check, case, "expected 40000 indices of shape (40000,).", noise_hint)
    freq = torch.bincount(idx.long().clamp(0, 3), minlength=4)[:4].to(DT) / 40_000
    compare(
        check,
        case,
        freq,
        torch.softmax(logits, 0),
        what="the sample frequencies",
        hint=noise_hint,
        rtol=0.0,
        atol=0.01,
    )
    passed(check, len(cases) + 1)


_ONE_NUMBER = (
    "your value is one number for the whole batch: return one KL per row (sum over dim=-1 "
    "only, with no sum or mean over the batch)."
)


def _kl_mistakes(logits: Tensor, kl: Tensor) -> list[tuple[Tensor, str]]:
    """What typical wrong formulas give for ``logits`` (``kl``: the right values), and what to
    say."""
    log_c = math.log(logits.shape[-1])
    q, log_q = torch.softmax(logits, -1), torch.log_softmax(logits, -1)
    return [
        (kl - log_c, "your value lacks the + log C (it is -H(q), not KL(q || uniform))."),
        (
            (q * logits).sum(-1) + log_c,
            "your value uses the raw logits as log q: normalize them, log q = log_softmax(logits).",
        ),
        (
            (-log_c - log_q).mean(-1),
            "your value is KL(uniform || q), the other direction: the ELBO needs KL(q || p).",
        ),
        (-kl, "your value has the wrong sign: KL = sum_c q_c log q_c + log C = log C - H(q) >= 0."),
        (
            log_c - (q * log_q).sum(-1),
            "your value is log C + H(q): the entropy enters with a minus sign, log C - H(q).",
        ),
        (
            kl / math.log(2),
            "your value is in bits (log base 2): the course uses nats, natural log.",
        ),
        (
            (q * log_q).mean(-1) + log_c,
            "your value averages q_c log q_c over the categories: sum them.",
        ),
        (kl.sum(), _ONE_NUMBER),
        (kl.mean(), _ONE_NUMBER),
    ]


def check_categorical_kl_uniform(fn: Callable[[Tensor], Tensor]) -> None:
    """Check ``fn(logits [..., C]) -> [...]``: ``KL(Categorical(softmax(logits)) || Uniform(C))``
    in nats, ``sum_c q_c log q_c + log C``."""
    check = "check_categorical_kl_uniform"
    g = torch.Generator().manual_seed(8)
    logits_r = torch.randn(6, 4, generator=g, dtype=DT) * 1.5

    def reference(logits: Tensor) -> Tensor:
        c = logits.shape[-1]
        uniform = Categorical(logits=torch.zeros(c, dtype=DT).expand(logits.shape))
        return kl_divergence(Categorical(logits=logits), uniform)

    cases = [
        (
            "equal logits: q is the uniform prior, KL = 0",
            torch.zeros(3, 5, dtype=DT),
            "KL(q || uniform) = sum_c q_c log q_c + log C: the two terms cancel when q = 1/C. "
            "Did you forget the + log C, or take log q from the raw logits instead of "
            "log_softmax(logits)?",
        ),
        (
            "random logits, 6 rows, C = 4",
            logits_r,
            "KL(q || p) = sum_c q_c (log q_c - log p_c) with q = softmax(logits) and p_c = 1/C; "
            "take log q from log_softmax(logits), not from the logits themselves, and keep the "
            "direction KL(q || uniform), not KL(uniform || q).",
        ),
        (
            "logits shifted by 5 (same q, same KL)",
            logits_r + 5.0,
            "normalize the logits: q = softmax(logits), log q = log_softmax(logits).",
        ),
        (
            "one-hot q (a logit 1000 above the rest): KL = log C, no NaN",
            torch.tensor([[1000.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1000.0, 1000.0]], dtype=DT),
            "q log q is 0 where q = 0, but 0 * log(0) is NaN in floating point: compute "
            "log q = log_softmax(logits) and multiply by q = exp(log q).",
        ),
        (
            "a batch of shape [2, 3] over C = 4",
            logits_r.view(2, 3, 4),
            "sum over the last dimension only (the categories) and keep the leading dimensions.",
        ),
    ]
    for case, logits, hint in cases:
        got = call_student(check, case, fn, logits.clone())
        expected = reference(logits)
        why = diagnose(got, _kl_mistakes(logits, expected))
        if why and matches(got, expected):
            why = ""  # right (a mistake that gives the same value here is not diagnosed)
        compare(
            check,
            case,
            got,
            expected,
            what="KL(q || uniform)",
            hint=f"{why} {hint[:1].upper()}{hint[1:]}" if why else hint,
            rtol=1e-6,
            atol=1e-6,
        )
    passed(check, len(cases))
