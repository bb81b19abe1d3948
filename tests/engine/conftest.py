"""Fixtures of the engine tests."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from hother.cancelable import _engine
from hother.cancelable.core import token as token_module


class ReportedErrors(list[tuple[str, BaseException]]):
    """The ``(where, exception)`` pairs the engine reported through its error handler."""

    def wheres(self) -> list[str]:
        """The ``where`` texts, in order."""
        return [where for where, _ in self]


@pytest.fixture
def engine_errors() -> Iterator[ReportedErrors]:
    """Capture what the engine reports (instead of logging it); restored afterwards."""
    reported = ReportedErrors()

    def handler(where: str, exc: BaseException) -> None:
        reported.append((where, exc))

    _engine._set_error_handler(handler)
    try:
        yield reported
    finally:
        _engine._set_error_handler(token_module._log_engine_error)


@pytest.fixture
def no_leak() -> Iterator[None]:
    """Fail when the test leaves engine instances alive (after a full collection)."""
    gc.collect()
    before = _engine.live_objects()
    yield
    gc.collect()
    after = _engine.live_objects()
    grown = {k: after[k] - before[k] for k in after if after[k] > before[k]}
    assert not grown, f"engine objects left alive: {grown}"
