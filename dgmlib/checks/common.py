"""Shared plumbing of the exercise checks: calling student code, comparing, reporting.

Every message starts with the check's name. A failed case reads ``"{check}, case '{case}': "``
followed by what went wrong (for a wrong value: expected, got, the error and the tolerance) and,
where one applies, a ``Hint:`` line. A stub reads ``"{check}: `fn` is not implemented yet ..."``.
Success is the single line ``"{check}: all {n} cases pass."``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NoReturn, TypeVar

import torch
from torch import Tensor, nn

M = TypeVar("M", bound=nn.Module)

#: How many values of a tensor a message shows before it abbreviates.
SHOWN = 6


def _function_name(fn: Any) -> str:
    """The name of the student's function as shown in messages (``your function`` for lambdas)."""
    name = getattr(fn, "__name__", "")
    return f"`{name}`" if name and not name.startswith("<") else "your function"


def call_student(check: str, case: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call the student's ``fn``; report a non-function, a stub or a crash as an AssertionError."""
    if not callable(fn):
        raise AssertionError(f"{check}: expected a function, got {type(fn).__name__}.")
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise AssertionError(
            f"{check}: {_function_name(fn)} is not implemented yet (it raises "
            "NotImplementedError). Replace the `raise NotImplementedError` line with your "
            "solution and run the cell again."
        ) from None
    except Exception as err:  # any crash of student code is a failed case
        fail(check, case, f"your function raised {type(err).__name__}: {err}", from_=err)


def fmt(value: Any) -> str:
    """A short human-readable rendering of a number or a tensor."""
    if isinstance(value, Tensor):
        flat = value.detach().reshape(-1).tolist()
        if len(flat) == 1:
            return fmt(flat[0])
        shown = ", ".join(fmt(v) for v in flat[:SHOWN])
        if len(flat) <= SHOWN:
            return f"[{shown}]"
        return f"[{shown}, ...] (shape {tuple(value.shape)})"
    if isinstance(value, float):
        return f"{value:.6g}"
    return repr(value)


def fail(
    check: str, case: str, message: str, hint: str | None = None, from_: Exception | None = None
) -> NoReturn:
    """Raise the AssertionError of a failed case: ``{check}, case '{case}': {message}`` + hint."""
    text = f"{check}, case {case!r}: {message}"
    if hint:
        text += f"\nHint: {hint}"
    raise AssertionError(text) from from_


def as_float64(check: str, case: str, value: Any, what: str = "the result") -> Tensor:
    """``value`` (a tensor or a number) as a detached float64 CPU tensor, or a failed case."""
    try:
        return torch.as_tensor(
            value.detach().cpu() if isinstance(value, Tensor) else value, dtype=torch.float64
        )
    except (TypeError, ValueError, RuntimeError):
        fail(check, case, f"{what} should be a tensor or a number, got {type(value).__name__}.")


def compare(
    check: str,
    case: str,
    got: Any,
    expected: Any,
    *,
    hint: str,
    rtol: float,
    atol: float,
    what: str = "the result",
) -> None:
    """Fail the case (expected vs got, hint) unless ``|got - expected| <= atol + rtol |expected|``.

    Both sides are compared in float64; a one-element result is compared as a number, NaN
    never matches and an infinity matches only the same infinity.
    """
    got_t = as_float64(check, case, got, what)
    exp_t = as_float64(check, case, expected, "the reference")
    if got_t.numel() == 1 and exp_t.numel() == 1:
        got_t = got_t.reshape(exp_t.shape)
    if got_t.shape != exp_t.shape:
        fail(
            check,
            case,
            f"{what} has shape {tuple(got_t.shape)}, expected {tuple(exp_t.shape)}.",
            hint,
        )
    if torch.isnan(got_t).any():
        fail(check, case, f"{what} contains NaN (expected {fmt(exp_t)}).", hint)
    if not torch.isclose(got_t, exp_t, rtol=rtol, atol=atol).all():
        diff = (got_t - exp_t).abs()
        err = torch.where(torch.isnan(diff), torch.inf, diff).max().item()  # inf - inf is NaN
        if rtol == 0:
            allowed = f"{atol:g}" if atol > 0 else "0 (exact)"
        else:
            allowed = f"{atol:g} + {rtol:g} * |expected|"
        fail(
            check,
            case,
            f"{what} does not match the reference.\n"
            f"  expected: {fmt(exp_t)}\n"
            f"  got:      {fmt(got_t)}\n"
            f"  (max abs error {err:.3g}; allowed {allowed})",
            hint,
        )


def compare_cases(
    check: str, fn: Any, cases: Iterable[tuple[str, tuple[Any, ...], Any, str]], **options: Any
) -> None:
    """For every case ``(name, args, expected, hint)``, :func:`compare` ``fn(*args)`` with
    ``expected``; ``options`` are the rest of compare's keywords (``rtol``, ``atol``, ``what``)."""
    for case, args, expected, hint in cases:
        compare(check, case, call_student(check, case, fn, *args), expected, hint=hint, **options)


def seeded_build(g: torch.Generator, build: Callable[[], M]) -> M:
    """``build()`` (a module, returned in float64) with torch's global generator seeded from
    ``g``, then restored: a check's random weights without touching the learner's random state."""
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=g)))
        return build().to(torch.float64)
    finally:
        torch.random.set_rng_state(state)


def matches(
    got: object, wrong: object, rtol: float = 1e-6, atol: float = 1e-9, broadcast: bool = False
) -> bool:
    """Whether ``got`` reproduces the value ``wrong`` of a typical mistake: tensors (or equally
    long tuples of tensors) of the same shapes (``broadcast``: ``wrong`` broadcast to ``got``'s),
    equal within ``rtol`` and ``atol`` in float64, NaN matching NaN."""
    got_parts = list(got) if isinstance(got, (tuple, list)) else [got]
    wrong_parts = list(wrong) if isinstance(wrong, (tuple, list)) else [wrong]
    if len(got_parts) != len(wrong_parts):
        return False
    for g, w in zip(got_parts, wrong_parts, strict=True):
        if not isinstance(g, Tensor):
            return False
        g = g.detach().to("cpu", torch.float64)
        w = torch.as_tensor(w).detach().to("cpu", torch.float64)
        if broadcast and w.shape != g.shape:
            try:
                w = torch.broadcast_to(w, g.shape)
            except RuntimeError:
                return False
        if w.shape != g.shape or not torch.allclose(g, w, rtol=rtol, atol=atol, equal_nan=True):
            return False
    return True


def diagnose(
    got: object,
    mistakes: Iterable[tuple[object, str]],
    default: str = "",
    *,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    every: bool = False,
    broadcast: bool = False,
    and_default: bool = False,
) -> str:
    """The hint of the first typical mistake ``(value, hint)`` whose value ``got`` reproduces
    (:func:`matches`), else ``default``; ``every``: the hints of all that match, joined by
    " Or: " (on a simple case two mistakes can give the same numbers); ``and_default``: the
    hint found followed by ``default`` (capitalised)."""
    found = [hint for wrong, hint in mistakes if matches(got, wrong, rtol, atol, broadcast)]
    if not found:
        return default
    why = " Or: ".join(found) if every else found[0]
    return f"{why} {default[:1].upper()}{default[1:]}" if and_default and default else why


def passed(check: str, n_cases: int) -> None:
    """Print the one success line of a check."""
    print(f"{check}: all {n_cases} cases pass.")
