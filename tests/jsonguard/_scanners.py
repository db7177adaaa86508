"""Both forms of the guard, for tests that run each: the compiled scanner is skipped only
where it is not built, and never under CI=true (installing headwater there compiles it)."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import pytest

from headwater._jsonguard import _python
from headwater.errors import MalformedBatchError
from tests.conftest import IN_CI

NAMES = ["compiled", "python"]


def compiled() -> ModuleType | None:
    """The compiled scanner, or None where it is not built."""
    try:
        from headwater._jsonguard import _compiled
    except ImportError:
        return None
    return _compiled


def scanner(name: str) -> ModuleType:
    """The scanner called ``name``; skip (fail under CI) when it is the compiled one and
    it is not built."""
    if name == "python":
        return _python
    module = compiled()
    if module is None:
        message = "headwater._jsonguard._compiled is not built here"
        if IN_CI:
            pytest.fail(f"{message}; CI requires it", pytrace=False)
        pytest.skip(message)
    return module


def available() -> list[ModuleType]:
    """Every scanner this install has: the Python one always, the compiled one where it is
    built (under CI=true it must be)."""
    module = compiled()
    if module is None:
        if IN_CI:
            pytest.fail("headwater._jsonguard._compiled is not built; CI requires it")
        return [_python]
    return [module, _python]


def verdict(check: Callable[[], None]) -> str:
    """``"ok"``, or the message of the refusal."""
    try:
        check()
    except MalformedBatchError as exc:
        return str(exc)
    return "ok"
