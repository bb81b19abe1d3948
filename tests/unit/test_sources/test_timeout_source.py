"""TimeoutSource: validation, earliest-deadline-wins, triggered attribution (§8.2, §13.8)."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest

from hother.cancelable.core.models import CancellationReason
from hother.cancelable.sources.timeout import TimeoutSource


def test_attributes() -> None:
    src = TimeoutSource(timedelta(milliseconds=100))
    assert src.timeout == pytest.approx(0.1)
    assert isinstance(src.timeout, float)
    assert src.reason is CancellationReason.TIMEOUT
    assert src.triggered is False
    assert src.deadline is None
    assert src.name == "TimeoutSource"
    assert TimeoutSource(2, name="t").timeout == 2.0
    assert TimeoutSource(2, name="t").name == "t"
    assert TimeoutSource(math.inf).timeout == math.inf


@pytest.mark.parametrize("bad", [0, -1, -0.5, timedelta(0), timedelta(seconds=-1)])
def test_non_positive_timeout_is_a_value_error(bad: Any) -> None:
    with pytest.raises(ValueError, match="timeout"):
        TimeoutSource(bad)


def test_nan_timeout_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="timeout"):
        TimeoutSource(float("nan"))


@pytest.mark.parametrize("bad", [True, False, "1", None, [1], object()])
def test_non_number_timeout_is_a_type_error(bad: Any) -> None:
    with pytest.raises(TypeError, match="timeout"):
        TimeoutSource(bad)


async def test_bare_scope_is_cancelled_after_the_timeout(backend: Any) -> None:
    src = TimeoutSource(0.1)
    scope = backend.create_cancel_scope()
    start = backend.current_time()
    await src.start_monitoring(scope)
    assert src.deadline == pytest.approx(start + 0.1, abs=0.05)
    assert scope.deadline == src.deadline
    with scope:
        await backend.sleep(5)
    elapsed = backend.current_time() - start
    await src.stop_monitoring()
    assert scope.cancelled_caught
    assert 0.05 <= elapsed < 3.0
    assert src.triggered is True


async def test_triggered_is_visible_before_stop(backend: Any) -> None:
    src = TimeoutSource(0.02)
    scope = backend.create_cancel_scope()
    await src.start_monitoring(scope)
    with scope:
        await backend.sleep(5)
    assert src.triggered is True  # the operation reads it before stopping its sources
    await src.stop_monitoring()
    assert src.triggered is True


async def test_not_triggered_when_the_body_finished_first(backend: Any) -> None:
    src = TimeoutSource(0.05)
    scope = backend.create_cancel_scope()
    await src.start_monitoring(scope)
    with scope:
        await backend.sleep(0)
    await backend.sleep(0.1)  # the deadline passes after the scope was left
    await src.stop_monitoring()
    assert not scope.cancelled_caught
    assert src.triggered is False


async def test_earliest_deadline_wins(backend: Any) -> None:
    """§14.12: a later timeout never pushes an earlier deadline back."""
    short = TimeoutSource(0.05, name="short")
    long = TimeoutSource(30, name="long")
    scope = backend.create_cancel_scope()
    start = backend.current_time()
    await short.start_monitoring(scope)
    await long.start_monitoring(scope)
    assert scope.deadline == short.deadline
    with scope:
        await backend.sleep(10)
    elapsed = backend.current_time() - start
    await long.stop_monitoring()
    await short.stop_monitoring()
    assert scope.cancelled_caught
    assert elapsed < 5
    assert short.triggered is True
    assert long.triggered is False


async def test_an_existing_earlier_scope_deadline_is_kept(backend: Any) -> None:
    now = backend.current_time()
    scope = backend.create_cancel_scope(deadline=now + 0.05)
    src = TimeoutSource(30)
    await src.start_monitoring(scope)
    assert scope.deadline == pytest.approx(now + 0.05)
    with scope:
        await backend.sleep(10)
    await src.stop_monitoring()
    assert scope.cancelled_caught
    assert src.triggered is False  # another deadline cancelled the scope, not this one


async def test_infinite_timeout_never_fires(backend: Any) -> None:
    src = TimeoutSource(math.inf)
    scope = backend.create_cancel_scope()
    await src.start_monitoring(scope)
    assert scope.deadline == math.inf
    with scope:
        await backend.sleep(0.01)
    await src.stop_monitoring()
    assert not scope.cancelled_caught
    assert src.triggered is False


async def test_stop_is_harmless_and_later_scopes_are_unaffected(backend: Any) -> None:
    src = TimeoutSource(0.05)
    await src.start_monitoring(backend.create_cancel_scope())
    await src.stop_monitoring()
    await src.stop_monitoring()
    later = backend.create_cancel_scope()
    with later:
        await backend.sleep(0.1)
    assert not later.cancelled_caught
    assert later.deadline == math.inf


async def test_reusable_sequentially(backend: Any) -> None:
    src = TimeoutSource(0.02)
    for _ in range(2):
        scope = backend.create_cancel_scope()
        await src.start_monitoring(scope)
        with pytest.raises(RuntimeError):
            await src.start_monitoring(backend.create_cancel_scope())
        with scope:
            await backend.sleep(5)
        await src.stop_monitoring()
        assert scope.cancelled_caught and src.triggered
