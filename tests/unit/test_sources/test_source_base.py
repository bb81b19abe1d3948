"""CancellationSource base class: trigger semantics, lifecycle and the watcher helper."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from hother.cancelable.core.models import CancellationReason
from hother.cancelable.sources.base import CancellationSource


class ManualSource(CancellationSource):
    """Fires only when the test calls trigger_cancellation()."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__(CancellationReason.MANUAL, name)
        self.started = 0
        self.stopped = 0

    async def start_monitoring(self, scope: Any) -> None:
        await super().start_monitoring(scope)
        self.started += 1

    async def stop_monitoring(self) -> None:
        self.stopped += 1
        await super().stop_monitoring()


class PlainSource(CancellationSource):
    """Uses the base constructor as is."""

    async def start_monitoring(self, scope: Any) -> None:
        await super().start_monitoring(scope)

    async def stop_monitoring(self) -> None:
        await super().stop_monitoring()


class WatchingSource(CancellationSource):
    """Runs a watcher that waits for `go` and then fires (or raises when `fail`)."""

    def __init__(self, backend: Any, fail: bool = False) -> None:
        super().__init__(CancellationReason.CONDITION, "watching")
        self.backend = backend
        self.fail = fail
        self.go: Any = None
        self.watcher_started = False
        self.watcher_finished = False

    async def start_monitoring(self, scope: Any) -> None:
        await super().start_monitoring(scope)
        self.go = self.backend.create_event()
        await self.start_watcher(self._watch)

    async def stop_monitoring(self) -> None:
        await super().stop_monitoring()

    async def _watch(self) -> None:
        self.watcher_started = True
        try:
            await self.go.wait()
            if self.fail:
                raise ValueError("watcher broke")
            await self.trigger_cancellation("watched thing happened")
        finally:
            self.watcher_finished = True


def test_base_class_is_abstract() -> None:
    with pytest.raises(TypeError):
        CancellationSource(CancellationReason.MANUAL)  # type: ignore[abstract]


def test_defaults_and_str() -> None:
    src = ManualSource()
    assert src.name == "ManualSource"
    assert src.reason is CancellationReason.MANUAL
    assert src.scope is None
    assert src.triggered is False
    assert src._cancel_callback is None
    assert src._monitoring_task is None
    assert src.error is None
    assert str(src) == "ManualSource(reason=manual)"
    assert ManualSource(name="mine").name == "mine"


def test_bad_constructor_and_callback_arguments() -> None:
    with pytest.raises(TypeError, match="reason"):
        PlainSource("manual")  # type: ignore[arg-type]
    assert PlainSource(CancellationReason.SIGNAL).reason is CancellationReason.SIGNAL
    with pytest.raises(TypeError, match="name"):
        ManualSource(name=3)  # type: ignore[arg-type]
    src = ManualSource()
    with pytest.raises(TypeError, match="callback"):
        src.set_cancel_callback(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callback"):
        src.set_error_callback("nope")  # type: ignore[arg-type]
    src.set_cancel_callback(None)
    src.set_error_callback(None)


async def test_start_rejects_a_non_scope(backend: Any) -> None:
    src = ManualSource()
    with pytest.raises(TypeError, match="scope"):
        await src.start_monitoring(None)
    with pytest.raises(TypeError, match="scope"):
        await src.start_monitoring(object())
    assert not src.is_monitoring


async def test_trigger_without_scope_does_nothing(recorder: Any) -> None:
    src = ManualSource()
    src.set_cancel_callback(recorder)
    await src.trigger_cancellation("ignored")
    assert src.triggered is False
    assert recorder.calls == []


async def test_trigger_calls_callback_then_cancels_the_scope(backend: Any, recorder: Any) -> None:
    src = ManualSource()
    src.set_cancel_callback(recorder)
    scope = backend.create_cancel_scope()
    await src.start_monitoring(scope)
    reached_after = False
    with scope:
        await src.trigger_cancellation("stop now")
        assert src.triggered is True
        assert scope.cancel_called
        await backend.sleep(5)
        reached_after = True
    await src.stop_monitoring()
    assert not reached_after
    assert scope.cancelled_caught
    assert recorder.calls == [(CancellationReason.MANUAL, "stop now")]
    assert src.triggered is True  # kept after stop, for the operation to inspect


async def test_trigger_fires_once(backend: Any, recorder: Any) -> None:
    src = ManualSource()
    src.set_cancel_callback(recorder)
    scope = backend.create_cancel_scope()
    await src.start_monitoring(scope)
    await src.trigger_cancellation("first")
    await src.trigger_cancellation("second")
    src.trigger_cancellation_nowait("third")
    await src.stop_monitoring()
    assert recorder.calls == [(CancellationReason.MANUAL, "first")]


async def test_trigger_on_an_already_cancelled_scope_keeps_the_first_canceller(
    backend: Any, recorder: Any
) -> None:
    src = ManualSource()
    src.set_cancel_callback(recorder)
    scope = backend.create_cancel_scope()
    await src.start_monitoring(scope)
    scope.cancel()
    await src.trigger_cancellation("too late")
    await src.stop_monitoring()
    assert src.triggered is False
    assert recorder.calls == []


async def test_raising_callback_is_logged_and_the_scope_still_cancelled(
    backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def bad_callback(reason: CancellationReason, message: str) -> None:
        raise RuntimeError("callback exploded")

    src = ManualSource(name="exploding")
    src.set_cancel_callback(bad_callback)
    scope = backend.create_cancel_scope()
    await src.start_monitoring(scope)
    with caplog.at_level(logging.DEBUG, logger="hother.cancelable"), scope:
        await src.trigger_cancellation("go")
        await backend.sleep(5)
    await src.stop_monitoring()
    assert scope.cancelled_caught
    assert src.triggered
    records = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert records, "the callback error must be logged"
    assert getattr(records[0], "source", None) == "exploding"


async def test_async_callback_is_awaited(backend: Any) -> None:
    seen: list[tuple[CancellationReason, str]] = []

    async def callback(reason: CancellationReason, message: str) -> None:
        await backend.sleep(0)
        seen.append((reason, message))

    src = ManualSource()
    src.set_cancel_callback(callback)
    scope = backend.create_cancel_scope()
    await src.start_monitoring(scope)
    await src.trigger_cancellation("async")
    await src.stop_monitoring()
    assert seen == [(CancellationReason.MANUAL, "async")]


async def test_nowait_trigger_with_async_callback_logs_and_still_cancels(
    backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def callback(reason: CancellationReason, message: str) -> None:
        raise AssertionError("must not run")

    src = ManualSource()
    src.set_cancel_callback(callback)
    scope = backend.create_cancel_scope()
    await src.start_monitoring(scope)
    with caplog.at_level(logging.ERROR, logger="hother.cancelable"):
        src.trigger_cancellation_nowait("sync path")
    await src.stop_monitoring()
    assert scope.cancel_called
    assert any("synchronous" in r.getMessage() for r in caplog.records)


async def test_start_twice_is_refused_and_restart_after_stop_works(
    backend: Any, recorder: Any
) -> None:
    src = ManualSource()
    src.set_cancel_callback(recorder)
    first = backend.create_cancel_scope()
    await src.start_monitoring(first)
    with pytest.raises(RuntimeError, match="already monitoring"):
        await src.start_monitoring(backend.create_cancel_scope())
    await src.trigger_cancellation("one")
    await src.stop_monitoring()
    await src.stop_monitoring()  # idempotent
    assert src.scope is None

    second = backend.create_cancel_scope()
    await src.start_monitoring(second)
    assert src.triggered is False  # reset for the new operation
    await src.trigger_cancellation("two")
    await src.stop_monitoring()
    assert second.cancel_called
    assert [m for _, m in recorder.calls] == ["one", "two"]


async def test_trigger_after_stop_is_ignored(backend: Any, recorder: Any) -> None:
    src = ManualSource()
    src.set_cancel_callback(recorder)
    scope = backend.create_cancel_scope()
    await src.start_monitoring(scope)
    await src.stop_monitoring()
    await src.trigger_cancellation("late")
    assert not scope.cancel_called
    assert recorder.calls == []


async def test_stop_cancels_a_legacy_monitoring_task(backend: Any) -> None:
    class FakeTask:
        cancelled = False

        def cancel(self) -> None:
            self.cancelled = True

    src = ManualSource()
    await src.start_monitoring(backend.create_cancel_scope())
    task = FakeTask()
    src._monitoring_task = task
    await src.stop_monitoring()
    assert task.cancelled
    assert src._monitoring_task is None


async def test_watcher_fires_into_the_scope(backend: Any, recorder: Any) -> None:
    src = WatchingSource(backend)
    src.set_cancel_callback(recorder)
    scope = backend.create_cancel_scope()
    await src.start_monitoring(scope)
    with scope:
        await backend.sleep(0.01)
        assert src.watcher_started
        src.go.set()
        await backend.sleep(5)
    await src.stop_monitoring()
    assert scope.cancelled_caught
    assert recorder.calls == [(CancellationReason.CONDITION, "watched thing happened")]
    assert src.watcher_finished


@pytest.mark.parametrize("exit_path", ["normal", "error", "cancelled"])
async def test_watcher_never_poisons_the_host_task(backend: Any, exit_path: str) -> None:
    """§14.2: after stop, the host task's later awaits and scopes are unaffected."""
    src = WatchingSource(backend)  # never fires: `go` is never set
    scope = backend.create_cancel_scope()
    await src.start_monitoring(scope)
    try:
        with scope:
            await backend.sleep(0.01)
            if exit_path == "error":
                raise KeyError("body failed")
            if exit_path == "cancelled":
                scope.cancel()
                await backend.sleep(5)
    except KeyError:
        assert exit_path == "error"
    finally:
        await src.stop_monitoring()
    assert src.watcher_started and src.watcher_finished
    assert src.stop_requested
    # The host task is healthy: plain awaits and a fresh scope complete normally.
    await backend.sleep(0.01)
    later = backend.create_cancel_scope()
    with later:
        await backend.sleep(0.01)
    assert not later.cancelled_caught


async def test_stop_under_outer_cancellation_with_shielded_cleanup(backend: Any) -> None:
    """The Cancellable's pattern: sources stopped in a shielded cleanup after the scope."""
    src = WatchingSource(backend)
    outer = backend.create_cancel_scope()
    with outer:
        await src.start_monitoring(backend.create_cancel_scope())
        inner = src.scope
        try:
            with inner:
                for _ in range(100):
                    if src.watcher_started:
                        break
                    await backend.sleep(0.01)
                outer.cancel()
                await backend.sleep(5)
        finally:
            with backend.create_cancel_scope(shield=True):
                await src.stop_monitoring()
    assert outer.cancelled_caught
    assert src.watcher_finished
    assert not src.is_monitoring


async def test_watcher_error_is_reported_not_cancelling(
    backend: Any, recorder: Any, caplog: pytest.LogCaptureFixture
) -> None:
    src = WatchingSource(backend, fail=True)
    src.set_cancel_callback(recorder)
    src.set_error_callback(recorder.on_error)
    scope = backend.create_cancel_scope()
    await src.start_monitoring(scope)
    with caplog.at_level(logging.ERROR, logger="hother.cancelable"), scope:
        src.go.set()
        for _ in range(50):
            if src.error is not None:
                break
            await backend.sleep(0.01)
        await backend.sleep(0.01)  # the body goes on: nothing cancelled it
    await src.stop_monitoring()
    assert not scope.cancel_called
    assert recorder.calls == []
    assert isinstance(src.error, ValueError)
    assert len(recorder.errors) == 1 and recorder.errors[0][0] is src
    assert recorder.errors[0][1] is src.error
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and getattr(errors[0], "source", None) == "watching"


async def test_async_error_callback_is_awaited_and_its_failure_logged(
    backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    got: list[BaseException] = []

    async def on_error(source: Any, error: BaseException) -> None:
        got.append(error)
        raise RuntimeError("error callback broke too")

    src = WatchingSource(backend, fail=True)
    src.set_error_callback(on_error)
    await src.start_monitoring(backend.create_cancel_scope())
    with caplog.at_level(logging.ERROR, logger="hother.cancelable"):
        src.go.set()
        for _ in range(50):
            if got:
                break
            await backend.sleep(0.01)
        await src.stop_monitoring()
    assert len(got) == 1 and isinstance(got[0], ValueError)
    assert any("error callback" in r.getMessage() for r in caplog.records)


async def test_stop_before_the_watcher_ever_ran(backend: Any) -> None:
    src = WatchingSource(backend)
    await src.start_monitoring(backend.create_cancel_scope())
    await src.stop_monitoring()  # no checkpoint in between
    assert not src.watcher_started
    await backend.sleep(0.01)
    assert not src.watcher_started


async def test_wait_stopped_and_start_watcher_validation(backend: Any) -> None:
    src = ManualSource()
    assert await src.wait_stopped(0.01) is True  # not monitoring: nothing to wait for
    with pytest.raises(RuntimeError, match="monitoring"):
        await src.start_watcher(src.stop_monitoring)
    await src.start_monitoring(backend.create_cancel_scope())
    with pytest.raises(TypeError, match="watcher"):
        await src.start_watcher(42)  # type: ignore[arg-type]
    results: list[bool] = []

    async def watcher() -> None:
        results.append(await src.wait_stopped(0.01))  # times out: not stopping
        results.append(await src.wait_stopped(None))  # returns when stopping

    await src.start_watcher(watcher)
    for _ in range(100):
        if results:
            break
        await backend.sleep(0.01)
    with pytest.raises(TypeError, match="timeout"):
        await src.wait_stopped("1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        await src.wait_stopped(float("nan"))
    await src.stop_monitoring()
    assert results[0] is False
