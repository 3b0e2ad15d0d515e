"""Checks of lecture 07 (discrete latents): the Gumbel-max trick and the KL of a categorical
distribution to the uniform one."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.distributions import Categorical, kl_divergence

from dgmlib.checks._common import call_student, compare, fail, passed

__all__ = ["check_categorical_kl_uniform", "check_gumbel_max_sample"]

DT = torch.float64


def _gumbel_max_reference(logits: Tensor, u: Tensor) -> Tensor:
    """``argmax_c (logits_c - log(-log u_c))``: int64 ``[...]``."""
    return (logits - torch.log(-torch.log(u))).argmax(-1)


def check_gumbel_max_sample(fn: Callable[[Tensor, Tensor], Tensor]) -> None:
    """Check ``fn(logits [..., C], u [..., C]) -> int64 [...]``: the Gumbel-max sample
    ``argmax_c (logits_c + g_c)`` with Gumbel noise ``g_c = -log(-log u_c)`` made from the given
    uniform numbers ``u`` (so the answer is exact), and its frequencies match ``softmax``."""
    check = "check_gumbel_max_sample"
    g = torch.Generator().manual_seed(7)
    logits_r = torch.randn(8, 5, generator=g, dtype=DT) * 2.0
    u_r = torch.rand(8, 5, generator=g, dtype=DT)
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
        got = call_student(check, case, fn, *args)
        if not isinstance(got, Tensor) or got.dtype not in (torch.int64, torch.int32):
            fail(check, case, "the result should be an integer tensor of indices.", hint)
        compare(
            check,
            case,
            got,
            _gumbel_max_reference(*args),
            what="the sampled indices",
            hint=hint,
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
        compare(
            check,
            case,
            call_student(check, case, fn, logits),
            reference(logits),
            what="KL(q || uniform)",
            hint=hint,
            rtol=1e-6,
            atol=1e-6,
        )
    passed(check, len(cases))
