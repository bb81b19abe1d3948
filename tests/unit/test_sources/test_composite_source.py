"""Composite sources: any-of / all-of semantics, timeouts inside composites, teardown."""

from __future__ import annotations

from typing import Any

import pytest

from hother.cancelable.core.models import CancellationReason
from hother.cancelable.sources.base import CancellationSource
from hother.cancelable.sources.composite import AllOfSource, AnyOfSource, CompositeSource
from hother.cancelable.sources.condition import ConditionSource
from hother.cancelable.sources.timeout import TimeoutSource


def never() -> bool:
    return False


def always() -> bool:
    return True


class Recording(CancellationSource):
    """Records its lifecycle in a shared journal; fires when told to."""

    def __init__(
        self,
        journal: list[str],
        name: str,
        reason: CancellationReason = CancellationReason.MANUAL,
        fail_start: bool = False,
    ) -> None:
        super().__init__(reason, name)
        self.journal = journal
        self.fail_start = fail_start

    async def start_monitoring(self, scope: Any) -> None:
        await super().start_monitoring(scope)
        if self.fail_start:
            await super().stop_monitoring()
            raise OSError(f"{self.name} cannot start")
        self.journal.append(f"start {self.name}")

    async def stop_monitoring(self) -> None:
        self.journal.append(f"stop {self.name}")
        await super().stop_monitoring()


class LegacyDirectCancel(CancellationSource):
    """A 0.1-style custom source that cancels its scope directly (no trigger_cancellation)."""

    def __init__(self) -> None:
        super().__init__(CancellationReason.SIGNAL, "legacy")

    async def start_monitoring(self, scope: Any) -> None:
        await super().start_monitoring(scope)

    async def stop_monitoring(self) -> None:
        await super().stop_monitoring()

    def fire(self) -> None:
        self.scope.cancel()


# -------------------------------------------------------------------- construction


def test_construction_and_validation() -> None:
    with pytest.raises(ValueError, match="at least one"):
        CompositeSource([])
    with pytest.raises(ValueError, match="at least one"):
        AllOfSource([])
    with pytest.raises(TypeError, match=r"sources\[1\]"):
        AnyOfSource([TimeoutSource(1), "not a source"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="sources"):
        AnyOfSource(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="sources"):
        AnyOfSource(TimeoutSource(1))  # type: ignore[arg-type]
    t = TimeoutSource(1)
    with pytest.raises(ValueError, match="twice"):
        AllOfSource([t, t])
    any_of = AnyOfSource([TimeoutSource(1)])
    assert isinstance(any_of, CompositeSource)
    assert any_of.name == "composite"
    assert any_of.reason is CancellationReason.MANUAL
    assert any_of.triggered_source is None
    assert not any_of.triggered
    all_of = AllOfSource((TimeoutSource(1), ConditionSource(never)), name="both")
    assert all_of.name == "both"
    assert all_of.reason is CancellationReason.MANUAL
    assert all_of.triggered_sources == set()
    assert len(all_of.sources) == 2


# ------------------------------------------------------------------------- any-of


async def test_any_of_first_trigger_wins_and_reason_is_adopted(backend: Any, recorder: Any) -> None:
    cond = ConditionSource(always, 0.01, condition_name="ready")
    slow = TimeoutSource(30)
    composite = AnyOfSource([slow, cond])
    composite.set_cancel_callback(recorder)
    scope = backend.create_cancel_scope()
    start = backend.current_time()
    await composite.start_monitoring(scope)
    with scope:
        await backend.sleep(10)
    await composite.stop_monitoring()
    assert scope.cancelled_caught
    assert backend.current_time() - start < 5
    assert composite.triggered
    assert composite.triggered_source is cond
    assert composite.reason is CancellationReason.CONDITION
    assert recorder.calls == [
        (
            CancellationReason.CONDITION,
            "Composite source triggered by ConditionSource: Condition 'ready' met after 1 checks",
        )
    ]
    assert not slow.triggered


async def test_timeout_inside_any_of_fires_and_is_attributed(backend: Any) -> None:
    """§14.12: a TimeoutSource inside a composite works (real deadline)."""
    timeout = TimeoutSource(0.05)
    composite = AnyOfSource([ConditionSource(never, 0.01), timeout])
    scope = backend.create_cancel_scope()
    start = backend.current_time()
    await composite.start_monitoring(scope)
    assert scope.deadline == timeout.deadline  # forwarded to the real scope
    with scope:
        await backend.sleep(10)
    elapsed = backend.current_time() - start
    assert composite.triggered  # visible before stop, for the operation's exit logic
    await composite.stop_monitoring()
    assert scope.cancelled_caught
    assert 0.03 <= elapsed < 5
    assert composite.triggered_source is timeout
    assert composite.reason is CancellationReason.TIMEOUT
    assert timeout.triggered


async def test_any_of_earliest_timeout_wins(backend: Any) -> None:
    late, early = TimeoutSource(30, name="late"), TimeoutSource(0.05, name="early")
    composite = AnyOfSource([late, early])
    scope = backend.create_cancel_scope()
    start = backend.current_time()
    await composite.start_monitoring(scope)
    with scope:
        await backend.sleep(10)
    await composite.stop_monitoring()
    assert backend.current_time() - start < 5
    assert composite.triggered_source is early
    assert early.triggered and not late.triggered


async def test_any_of_with_a_legacy_direct_cancel_component(backend: Any, recorder: Any) -> None:
    legacy = LegacyDirectCancel()
    composite = AnyOfSource([legacy])
    composite.set_cancel_callback(recorder)
    scope = backend.create_cancel_scope()
    await composite.start_monitoring(scope)
    with scope:
        legacy.fire()
        await backend.sleep(10)
    await composite.stop_monitoring()
    assert scope.cancelled_caught
    assert composite.triggered_source is legacy
    assert recorder.calls[0][0] is CancellationReason.SIGNAL


async def test_any_of_that_never_fires(backend: Any) -> None:
    composite = AnyOfSource([ConditionSource(never, 0.01), TimeoutSource(30)])
    scope = backend.create_cancel_scope()
    await composite.start_monitoring(scope)
    with scope:
        await backend.sleep(0.03)
    await composite.stop_monitoring()
    assert not scope.cancelled_caught
    assert not composite.triggered and composite.triggered_source is None


# ------------------------------------------------------------------------- all-of


async def test_all_of_waits_for_every_timeout(backend: Any, recorder: Any) -> None:
    first, second = TimeoutSource(0.03, name="first"), TimeoutSource(0.15, name="second")
    composite = AllOfSource([first, second])
    composite.set_cancel_callback(recorder)
    scope = backend.create_cancel_scope()
    start = backend.current_time()
    await composite.start_monitoring(scope)
    assert scope.deadline == float("inf")  # a single component deadline must not cancel
    with scope:
        await backend.sleep(10)
    elapsed = backend.current_time() - start
    await composite.stop_monitoring()
    assert scope.cancelled_caught
    assert 0.12 <= elapsed < 5
    assert composite.triggered_sources == {first, second}
    assert first.triggered and second.triggered
    assert recorder.calls == [(CancellationReason.TIMEOUT, "All 2 sources have triggered")]


async def test_all_of_reason_is_the_last_component(backend: Any, recorder: Any) -> None:
    gate = {"open": False}
    cond = ConditionSource(lambda: gate["open"], 0.01, condition_name="gate")
    composite = AllOfSource([TimeoutSource(0.02), cond])
    composite.set_cancel_callback(recorder)
    scope = backend.create_cancel_scope()
    await composite.start_monitoring(scope)
    with scope:
        await backend.sleep(0.08)  # the timeout component fired; the condition not yet
        assert not scope.cancel_called
        gate["open"] = True
        await backend.sleep(10)
    await composite.stop_monitoring()
    assert scope.cancelled_caught
    assert composite.reason is CancellationReason.CONDITION
    assert recorder.calls == [(CancellationReason.CONDITION, "All 2 sources have triggered")]


async def test_all_of_does_not_fire_while_one_component_is_silent(backend: Any) -> None:
    composite = AllOfSource([ConditionSource(always, 0.01), ConditionSource(never, 0.01)])
    scope = backend.create_cancel_scope()
    await composite.start_monitoring(scope)
    with scope:
        await backend.sleep(0.05)
    await composite.stop_monitoring()
    assert not scope.cancelled_caught
    assert not composite.triggered
    assert len(composite.triggered_sources) == 1


# ----------------------------------------------------------------- nesting, teardown


async def test_nested_composites(backend: Any) -> None:
    inner = AllOfSource([TimeoutSource(0.02), TimeoutSource(0.06)])
    outer = AnyOfSource([inner, ConditionSource(never, 0.01)])
    scope = backend.create_cancel_scope()
    start = backend.current_time()
    await outer.start_monitoring(scope)
    with scope:
        await backend.sleep(10)
    await outer.stop_monitoring()
    assert scope.cancelled_caught
    assert 0.04 <= backend.current_time() - start < 5
    assert outer.triggered_source is inner
    assert outer.reason is CancellationReason.TIMEOUT

    deep = AnyOfSource([AnyOfSource([TimeoutSource(0.02)])])
    scope = backend.create_cancel_scope()
    await deep.start_monitoring(scope)
    with scope:
        await backend.sleep(10)
    await deep.stop_monitoring()
    assert scope.cancelled_caught and deep.triggered
    assert deep.reason is CancellationReason.TIMEOUT


@pytest.mark.parametrize("kind", [AnyOfSource, AllOfSource])
@pytest.mark.parametrize("exit_path", ["normal", "error", "cancelled"])
async def test_every_component_is_stopped_on_every_exit_path(
    backend: Any, kind: Any, exit_path: str
) -> None:
    journal: list[str] = []
    a, b = Recording(journal, "a"), Recording(journal, "b")

    def own_callback(reason: CancellationReason, message: str) -> None:
        pass

    a.set_cancel_callback(own_callback)
    composite = kind([a, b])
    scope = backend.create_cancel_scope()
    await composite.start_monitoring(scope)
    try:
        with scope:
            if exit_path == "error":
                raise LookupError("body failed")
            if exit_path == "cancelled":
                scope.cancel()
            await backend.sleep(0.01)
    except LookupError:
        assert exit_path == "error"
    finally:
        await composite.stop_monitoring()
    assert journal == ["start a", "start b", "stop b", "stop a"]
    assert a._cancel_callback is own_callback  # previous callbacks restored
    assert b._cancel_callback is None
    assert not a.is_monitoring and not b.is_monitoring and not composite.is_monitoring
    later = backend.create_cancel_scope()
    with later:
        await backend.sleep(0.01)  # the host task is healthy
    assert not later.cancelled_caught


async def test_component_start_failure_stops_the_started_ones(backend: Any) -> None:
    journal: list[str] = []
    parts = [Recording(journal, "a"), Recording(journal, "b", fail_start=True)]
    composite = AllOfSource([*parts, Recording(journal, "c")])
    with pytest.raises(OSError, match="b cannot start"):
        await composite.start_monitoring(backend.create_cancel_scope())
    assert journal == ["start a", "stop a"]
    assert not composite.is_monitoring
    # and the composite can be started again once the problem is gone
    parts[1].fail_start = False
    journal.clear()
    await composite.start_monitoring(backend.create_cancel_scope())
    await composite.stop_monitoring()
    assert journal == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]


async def test_component_errors_reach_the_composite_error_callback(
    backend: Any, recorder: Any
) -> None:
    def broken() -> bool:
        raise ZeroDivisionError("bad")

    cond = ConditionSource(broken, 0.01)
    composite = AnyOfSource([cond])
    composite.set_error_callback(recorder.on_error)
    scope = backend.create_cancel_scope()
    await composite.start_monitoring(scope)
    with scope:
        for _ in range(200):
            if recorder.errors:
                break
            await backend.sleep(0.01)
    await composite.stop_monitoring()
    assert not scope.cancel_called
    assert len(recorder.errors) == 1
    assert recorder.errors[0][0] is cond
    assert isinstance(recorder.errors[0][1], ZeroDivisionError)


async def test_composite_reusable_sequentially(backend: Any) -> None:
    composite = AnyOfSource([TimeoutSource(0.02)])
    for _ in range(2):
        scope = backend.create_cancel_scope()
        await composite.start_monitoring(scope)
        with pytest.raises(RuntimeError):
            await composite.start_monitoring(backend.create_cancel_scope())
        with scope:
            await backend.sleep(10)
        await composite.stop_monitoring()
        assert scope.cancelled_caught and composite.triggered
        assert composite.reason is CancellationReason.TIMEOUT
