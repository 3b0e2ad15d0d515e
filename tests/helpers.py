"""Helpers shared by the test files (imported as ``from helpers import ...``)."""

from __future__ import annotations

import pytest


def fails(check, fn, case_start: str, hint: str) -> str:
    """Run ``check(fn)``; expect the message of case ``case_start`` with ``hint`` in its Hint."""
    with pytest.raises(AssertionError) as info:
        check(fn)
    msg = str(info.value)
    assert msg.startswith(f"{check.__name__}, case '{case_start}"), msg
    assert hint in msg.split("Hint:")[1], msg
    return msg
