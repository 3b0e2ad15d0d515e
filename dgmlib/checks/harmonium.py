"""Checks of lecture 10 (VAE approximation errors, binary harmoniums): the interactions of a
function of binary latents, the test of both conditions of the harmonium theorem."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from dgmlib.checks.common import call_student, compare, diagnose, passed
from dgmlib.harmonium import binary_states, softplus

__all__ = ["check_interactions"]

DT = torch.float64


def _interactions_reference(f: Tensor) -> Tensor:
    """``a_S = sum_{T subset of S} (-1)^{|S| - |T|} f(1_T)``, term by term (slow, obvious)."""
    k = f.shape[-1].bit_length() - 1
    a = torch.zeros_like(f)
    for s in range(2**k):
        for t in range(2**k):
            if t & s == t:  # T is a subset of S
                sign = (-1) ** (bin(s).count("1") - bin(t).count("1"))
                a[..., s] += sign * f[..., t]
    return a


def _from_monomials(coefficients: dict[tuple[int, ...], float], k: int) -> Tensor:
    """The values ``[2^k]`` of ``sum_S a_S prod_{j in S} z_j`` at the states of binary_states."""
    z = binary_states(k, DT)
    f = torch.zeros(2**k, dtype=DT)
    for subset, a in coefficients.items():
        f += a * z[:, list(subset)].prod(-1)
    return f


def _bit_reversal(k: int) -> Tensor:
    """The permutation of the 2^k states that reverses the order of the k bits: int64 [2^k]."""
    return torch.tensor([int(format(i, f"0{k}b")[::-1], 2) for i in range(2**k)])


def _interaction_mistakes(f: Tensor) -> list[tuple[Tensor, str]]:
    """What typical wrong transforms give for ``f [..., 2^k]``, and what to say."""
    k = f.shape[-1].bit_length() - 1
    a = _interactions_reference(f)
    sizes = torch.tensor([bin(s).count("1") for s in range(2**k)])
    subset = torch.tensor([[float(t & s == t) for t in range(2**k)] for s in range(2**k)], dtype=DT)
    overlap = torch.tensor(
        [[(-1.0) ** bin(s & t).count("1") for t in range(2**k)] for s in range(2**k)], dtype=DT
    )
    rev = _bit_reversal(k)
    return [
        (
            f @ subset.T,
            "your a sums f over the subsets with no signs: that is the inverse map (it makes f "
            "from a); the coefficients need the alternating signs (-1)^(|S| - |T|).",
        ),
        (
            a * (-1.0) ** sizes.to(DT),
            "your signs are (-1)^|T|: the sign of f(1_T) in a_S is (-1)^(|S| - |T|), positive "
            "for T = S.",
        ),
        (
            a[..., rev],
            "your coefficients are right but at the bit-reversed positions: a_S sits at the "
            "index sum of 2^j over j in S, z_1 being bit 0, the lowest.",
        ),
        (
            f @ overlap.T / 2**k,
            "your a is the Fourier (Walsh-Hadamard) transform, the expansion for z in {-1, 1}: "
            "here z is in {0, 1}, and a_S = sum over subsets T of S of (-1)^(|S| - |T|) f(1_T).",
        ),
        (f, "your a is f itself: the values at the states are not the coefficients."),
    ]


def check_interactions(fn: Callable[[Tensor], Tensor]) -> None:
    """Check ``fn(f [..., 2^k]) -> a [..., 2^k]``: the coefficients of ``f(z) = sum_S a_S
    prod_{j in S} z_j``, with ``f`` and ``a`` indexed by the states of
    :func:`dgmlib.harmonium.binary_states` (row ``i`` has bit ``j`` = ``(i >> j) & 1``; ``a_S``
    sits at the state whose ones are ``S``)."""
    check = "check_interactions"
    g = torch.Generator().manual_seed(12)
    sign_hint = (
        "a_S = sum over the subsets T of S of (-1)^(|S| - |T|) f(1_T): the coefficient of z_1 z_2 "
        "is f(1,1) - f(1,0) - f(0,1) + f(0,0). One way: for each bit j in turn, replace the "
        "values with z_j = 1 by their difference from the values with z_j = 0."
    )
    order_hint = (
        "a_S sits at the index of the state whose ones are S, sum of 2^j over j in S: z_1 is bit "
        "0, the lowest (when k = 3: the slope of z_3 is at index 4, that of z_1 z_2 at index 3)."
    )
    batch_hint = "transform along the last dimension only; leading dimensions are a batch."
    known = {(): 0.5, (0,): -1.0, (2,): 2.0, (0, 1): 3.0, (1, 2): -0.25, (0, 1, 2): 1.5}
    a_known = torch.zeros(8, dtype=DT)
    for subset, value in known.items():
        a_known[sum(2**j for j in subset)] = value
    affine = _from_monomials({(): 1.0, (0,): 2.0, (2,): -1.0}, 3)
    pair = _from_monomials({(0, 1): 1.0}, 3)
    z2 = binary_states(2, DT)
    log_partition = softplus(z2 @ torch.tensor([1.5, -2.0], dtype=DT) - 0.5)
    random4 = torch.randn(3, 16, generator=g, dtype=DT)
    cases = [
        (
            "f(0,0), f(1,0), f(0,1), f(1,1) = 1, 2, 2, 8 on k = 2 bits",
            torch.tensor([1.0, 2.0, 2.0, 8.0], dtype=DT),
            torch.tensor([1.0, 1.0, 1.0, 5.0], dtype=DT),
            sign_hint,
        ),
        (
            "1 + 2 z_1 - z_3, affine in k = 3 bits",
            affine,
            _interactions_reference(affine),
            order_hint,
        ),
        ("z_1 z_2 of k = 3 bits (the bit order)", pair, _interactions_reference(pair), order_hint),
        (
            "a known polynomial with every order, k = 3",
            _from_monomials(known, 3),
            a_known,
            sign_hint,
        ),
        (
            "softplus(1.5 z_1 - 2 z_2 - 0.5), a log-partition function",
            log_partition,
            _interactions_reference(log_partition),
            sign_hint,
        ),
        (
            "a batch of 3 random functions of k = 4 bits",
            random4,
            _interactions_reference(random4),
            batch_hint,
        ),
    ]
    for case, f, expected, hint in cases:
        got = call_student(check, case, fn, f.clone())
        mistakes = _interaction_mistakes(f)
        hint = diagnose(got, mistakes, hint, rtol=1e-9, atol=1e-10, and_default=True)
        compare(check, case, got, expected, hint=hint, rtol=1e-9, atol=1e-10, what="a")
    passed(check, len(cases))
