"""``Cancellable`` enter/exit lifecycle (API.md §6.6; defects §14.3, §14.4, §14.17, §14.18).

* enter is transactional: a failure midway restores ``current_operation()``, leaves no
  registry entry and stops the sources that were already started;
* a ``Cancellable`` is single use: entering it again raises ``RuntimeError``;
* the exit cleanup (callbacks, source shutdown, registry, ``current_operation``) completes
  even under an outer cancellation;
* ``Task.cancelling()`` is back to its entry value after every scenario (asyncio);
* ``register_globally``: listed in the registry while running, in the history afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from hother.cancelable import (
    Cancellable,
    CancellationReason,
    CancellationToken,
    OperationRegistry,
    OperationStatus,
    current_operation,
)
from hother.cancelable.sources.base import CancellationSource

LONG = 10.0


def cancelling() -> int:
    """``Task.cancelling()`` of the current asyncio task (0 under trio)."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # trio
        return 0
    return task.cancelling() if task is not None else 0


@pytest.fixture
def registry() -> Iterator[OperationRegistry]:
    """A fresh registry singleton for the test (reset afterwards)."""
    OperationRegistry._instance = None
    try:
        yield OperationRegistry.get_instance()
    finally:
        OperationRegistry._instance = None


class RecordingSource(CancellationSource):
    """A source that never fires and records its lifecycle in a shared list."""

    def __init__(self, log: list[str], label: str, backend: Any = None) -> None:
        super().__init__(CancellationReason.MANUAL, name=label)
        self.log = log
        self.label = label
        self.test_backend = backend

    async def start_monitoring(self, scope: Any) -> None:
        await super().start_monitoring(scope)
        self.log.append(f"start {self.label}")

    async def stop_monitoring(self) -> None:
        if self.test_backend is not None:
            # an await in the shutdown path: must complete even under outer cancellation
            await self.test_backend.sleep(0.01)
        self.log.append(f"stop {self.label}")
        await super().stop_monitoring()


class FailingSource(CancellationSource):
    """A source whose ``start_monitoring`` raises."""

    def __init__(self) -> None:
        super().__init__(CancellationReason.MANUAL, name="failing")

    async def start_monitoring(self, scope: Any) -> None:
        raise RuntimeError("source cannot start")

    async def stop_monitoring(self) -> None:
        await super().stop_monitoring()


# ====================================================================== transactional enter


class TestTransactionalEnter:
    async def test_failing_source_undoes_everything(
        self, backend: Any, registry: OperationRegistry
    ) -> None:
        before = cancelling()
        log: list[str] = []
        op = Cancellable(name="tx", register_globally=True)
        op.add_source(RecordingSource(log, "a")).add_source(RecordingSource(log, "b"))
        op.add_source(FailingSource())
        op.add_source(RecordingSource(log, "never"))
        body: list[str] = []
        with pytest.raises(RuntimeError, match="source cannot start"):
            async with op:
                body.append("ran")  # pragma: no cover - must not run
        assert body == []
        assert current_operation() is None
        assert registry.get_operation_sync(op.operation_id) is None
        assert registry.list_operations_sync() == []
        # the started sources were stopped (in reverse order), the later one never started
        assert log == ["start a", "start b", "stop b", "stop a"]
        assert not op.is_running
        assert cancelling() == before
        # the task is not left inside a cancelled/foreign scope: later awaits work
        await backend.sleep(0)
        async with Cancellable() as later:
            await backend.sleep(0)
        assert later.is_completed

    async def test_failure_restores_the_outer_operation(self, backend: Any) -> None:
        async with Cancellable(name="outer") as outer:
            failing = Cancellable(name="inner").add_source(FailingSource())
            with pytest.raises(RuntimeError):
                async with failing:
                    pass  # pragma: no cover
            assert current_operation() is outer
            await backend.sleep(0)
        assert outer.is_completed

    async def test_failure_with_parent_and_token_links(self, backend: Any) -> None:
        parent = Cancellable(name="parent")
        shared = CancellationToken()
        op = Cancellable.with_token(shared, parent=parent).add_source(FailingSource())
        with pytest.raises(RuntimeError):
            async with op:
                pass  # pragma: no cover
        # the links made during the failed enter do not keep forwarding cancellations
        await shared.cancel()
        assert not op.token.is_cancelled
        assert current_operation() is None

    async def test_raising_start_callback_does_not_fail_enter(self, backend: Any) -> None:
        def bad(ctx: Any) -> None:
            raise RuntimeError("start callback failure")

        async with Cancellable().on_start(bad) as op:
            assert current_operation() is op
            assert op.is_running
        assert op.is_completed


# ====================================================================== single use


class TestSingleUse:
    async def test_reenter_after_exit(self, backend: Any) -> None:
        op = Cancellable()
        async with op:
            pass
        with pytest.raises(RuntimeError):
            async with op:
                pass  # pragma: no cover
        assert op.status == OperationStatus.COMPLETED
        assert current_operation() is None

    async def test_reenter_while_active(self, backend: Any) -> None:
        async with Cancellable() as op:
            with pytest.raises(RuntimeError):
                async with op:
                    pass  # pragma: no cover
            assert current_operation() is op
            assert op.is_running
            await backend.sleep(0)
        assert op.is_completed

    async def test_reenter_after_cancellation(self, backend: Any) -> None:
        cancel_exc = backend.get_cancelled_exc_class()
        op = Cancellable.with_timeout(0.01)
        with pytest.raises(cancel_exc):
            async with op:
                await backend.sleep(LONG)
        with pytest.raises(RuntimeError):
            async with op:
                pass  # pragma: no cover
        assert op.status == OperationStatus.CANCELLED
        assert op.context.cancel_reason == CancellationReason.TIMEOUT


# ====================================================================== exit cleanup


class TestExitCleanup:
    async def test_cleanup_completes_under_outer_cancellation(
        self, backend: Any, registry: OperationRegistry
    ) -> None:
        before = cancelling()
        steps: list[str] = []

        async def on_cancel(ctx: Any) -> None:
            steps.append("on_cancel start")
            await backend.sleep(0.01)
            steps.append("on_cancel middle")
            await backend.sleep(0.01)
            steps.append("on_cancel end")

        op = Cancellable(name="cleanup", register_globally=True).on_cancel(on_cancel)
        op.add_source(RecordingSource(steps, "src", backend))
        async with Cancellable(name="outer") as outer:
            with backend.create_cancel_scope() as scope:
                async with op:
                    scope.cancel()
                    await backend.sleep(LONG)
            assert scope.cancelled_caught
            assert current_operation() is outer
        assert steps == [
            "start src",
            "on_cancel start",
            "on_cancel middle",
            "on_cancel end",
            "stop src",
        ]
        assert op.status == OperationStatus.CANCELLED
        assert op.context.cancel_reason == CancellationReason.MANUAL
        assert registry.get_operation_sync(op.operation_id) is None
        history = registry.get_history_sync()
        assert [c.id for c in history] == [op.operation_id]
        assert history[0].status == OperationStatus.CANCELLED
        assert current_operation() is None
        assert cancelling() == before

    async def test_cleanup_after_own_timeout_can_await(self, backend: Any) -> None:
        cancel_exc = backend.get_cancelled_exc_class()
        steps: list[str] = []

        async def on_cancel(ctx: Any) -> None:
            await backend.sleep(0.01)
            steps.append("cancel callback done")

        with pytest.raises(cancel_exc):
            async with Cancellable.with_timeout(0.01).on_cancel(on_cancel):
                await backend.sleep(LONG)
        assert steps == ["cancel callback done"]

    async def test_sources_stopped_on_every_exit_path(self, backend: Any) -> None:
        cancel_exc = backend.get_cancelled_exc_class()
        log: list[str] = []

        op1 = (
            Cancellable()
            .add_source(RecordingSource(log, "a"))
            .add_source(RecordingSource(log, "b"))
        )
        async with op1:
            log.append("body")
        assert log == ["start a", "start b", "body", "stop b", "stop a"]

        log.clear()
        op2 = Cancellable().add_source(RecordingSource(log, "x"))
        with pytest.raises(ValueError):
            async with op2:
                raise ValueError("boom")
        assert log == ["start x", "stop x"]

        log.clear()
        op3 = Cancellable.with_timeout(0.01).add_source(RecordingSource(log, "y"))
        with pytest.raises(cancel_exc):
            async with op3:
                await backend.sleep(LONG)
        assert log == ["start y", "stop y"]

    async def test_exceptions_are_never_suppressed(self, backend: Any) -> None:
        cancel_exc = backend.get_cancelled_exc_class()
        # even when every callback fails and the block is cancelled by its own scope
        op = Cancellable().on_cancel(lambda ctx: 1 / 0)
        with pytest.raises(cancel_exc):
            async with op:
                await op.cancel()
                await backend.sleep(LONG)

    async def test_timestamps(self, backend: Any) -> None:
        op = Cancellable()
        _ = op.context  # built before the enter
        await backend.sleep(0.01)
        before_enter = datetime.now(UTC)
        async with op:
            assert op.context.start_time >= before_enter
            assert op.context.end_time is None
            await backend.sleep(0.01)
        assert op.context.end_time is not None
        assert op.context.end_time >= op.context.start_time
        assert op.context.duration_seconds is not None
        assert op.context.duration_seconds > 0


# ====================================================================== Task.cancelling()


async def test_task_cancelling_restored_after_each_scenario(backend: Any) -> None:
    cancel_exc = backend.get_cancelled_exc_class()
    before = cancelling()

    async def scenario_timeout() -> None:
        with pytest.raises(cancel_exc):
            async with Cancellable.with_timeout(0.01):
                await backend.sleep(LONG)

    async def scenario_cancel() -> None:
        with pytest.raises(cancel_exc):
            async with Cancellable() as op:
                await op.cancel()
                await backend.sleep(LONG)

    async def scenario_token() -> None:
        token = CancellationToken()
        token.cancel_sync()
        with pytest.raises(cancel_exc):
            async with Cancellable.with_token(token):
                await backend.sleep(LONG)

    async def scenario_nested_parent() -> None:
        parent = Cancellable.with_timeout(0.01)
        with pytest.raises(cancel_exc):
            async with parent, Cancellable(parent=parent), Cancellable():
                await backend.sleep(LONG)

    async def scenario_swallowed() -> None:
        async with Cancellable.with_timeout(0.01):
            try:
                await backend.sleep(LONG)
            except cancel_exc:
                pass

    async def scenario_error() -> None:
        with pytest.raises(KeyError):
            async with Cancellable.with_timeout(LONG):
                raise KeyError("k")

    async def scenario_condition() -> None:
        with pytest.raises(cancel_exc):
            async with Cancellable.with_condition(lambda: True, check_interval=0.01):
                await backend.sleep(LONG)

    async def scenario_outer_scope() -> None:
        with backend.create_cancel_scope() as scope:
            async with Cancellable():
                scope.cancel()
                await backend.sleep(LONG)

    async def scenario_shield() -> None:
        with pytest.raises(cancel_exc):
            async with Cancellable.with_timeout(0.01) as op:
                async with op.shield():
                    await backend.sleep(0.03)
                await backend.sleep(LONG)

    for scenario in (
        scenario_timeout,
        scenario_cancel,
        scenario_token,
        scenario_nested_parent,
        scenario_swallowed,
        scenario_error,
        scenario_condition,
        scenario_outer_scope,
        scenario_shield,
    ):
        await scenario()
        assert cancelling() == before, scenario.__name__
        assert current_operation() is None, scenario.__name__
    # the task is healthy: a plain await is not cancelled
    await backend.sleep(0.001)


# ====================================================================== registry


class TestRegisterGlobally:
    async def test_listed_while_running_history_after(
        self, backend: Any, registry: OperationRegistry
    ) -> None:
        op = Cancellable(operation_id="reg-1", name="registered job", register_globally=True)
        assert registry.get_operation_sync("reg-1") is None
        async with op:
            assert registry.get_operation_sync("reg-1") is op
            assert await registry.get_operation("reg-1") is op
            listed = await registry.list_operations()
            assert [c.id for c in listed] == ["reg-1"]
            assert listed[0].status == OperationStatus.RUNNING
            assert [c.id for c in registry.list_operations_sync(name_pattern="JOB")] == ["reg-1"]
        assert registry.get_operation_sync("reg-1") is None
        assert registry.list_operations_sync() == []
        history = await registry.get_history()
        assert [c.id for c in history] == ["reg-1"]
        assert history[0].status == OperationStatus.COMPLETED
        assert history[0].end_time is not None

    async def test_not_registered_by_default(
        self, backend: Any, registry: OperationRegistry
    ) -> None:
        async with Cancellable(operation_id="unreg"):
            assert registry.get_operation_sync("unreg") is None
        assert registry.get_history_sync() == []

    async def test_cancelled_operation_history(
        self, backend: Any, registry: OperationRegistry
    ) -> None:
        cancel_exc = backend.get_cancelled_exc_class()
        with pytest.raises(cancel_exc):
            async with Cancellable.with_timeout(0.01, register_globally=True) as op:
                await backend.sleep(LONG)
        history = registry.get_history_sync()
        assert [c.id for c in history] == [op.operation_id]
        assert history[0].status == OperationStatus.CANCELLED
        assert history[0].cancel_reason == CancellationReason.TIMEOUT

    async def test_failed_operation_history(
        self, backend: Any, registry: OperationRegistry
    ) -> None:
        with pytest.raises(ValueError):
            async with Cancellable(register_globally=True) as op:
                raise ValueError("bad")
        history = registry.get_history_sync()
        assert [c.id for c in history] == [op.operation_id]
        assert history[0].status == OperationStatus.FAILED
        assert history[0].error == "bad"

    async def test_cancel_operation_through_registry(
        self, backend: Any, registry: OperationRegistry
    ) -> None:
        cancel_exc = backend.get_cancelled_exc_class()
        entered = backend.create_event()
        found: list[bool] = []

        async def canceller() -> None:
            await entered.wait()
            found.append(
                await registry.cancel_operation("reg-c", CancellationReason.MANUAL, "by registry")
            )
            found.append(await registry.cancel_operation("unknown-id"))

        async with backend.create_task_group() as tg:
            tg.start_soon(canceller)
            with pytest.raises(cancel_exc):
                async with Cancellable(operation_id="reg-c", register_globally=True) as op:
                    entered.set()
                    await backend.sleep(LONG)
        assert found == [True, False]
        assert op.context.cancel_reason == CancellationReason.MANUAL
        assert op.context.cancel_message == "by registry"
        assert registry.get_operation_sync("reg-c") is None

    async def test_parent_id_filter(self, backend: Any, registry: OperationRegistry) -> None:
        async with Cancellable(name="p", register_globally=True) as parent:
            async with Cancellable(name="c", parent=parent, register_globally=True) as child:
                listed = registry.list_operations_sync(parent_id=parent.operation_id)
                assert [c.id for c in listed] == [child.operation_id]
                assert len(registry.list_operations_sync()) == 2


# ====================================================================== misuse


class TestMisuse:
    """Protocol misuse gets a clear exception, never a crash or a corrupted task."""

    @pytest.mark.parametrize("factory", ["plain", "timeout", "callbacks"])
    async def test_exit_without_enter(self, backend: Any, factory: str) -> None:
        if factory == "plain":
            op = Cancellable()
        elif factory == "timeout":
            op = Cancellable.with_timeout(1.0)
        else:
            op = Cancellable().on_complete(lambda ctx: None)
        with pytest.raises(RuntimeError):
            await op.__aexit__(None, None, None)
        assert op.status == OperationStatus.PENDING
        assert current_operation() is None
        await backend.sleep(0)

    async def test_double_exit(self, backend: Any) -> None:
        op = Cancellable()
        await op.__aenter__()
        await op.__aexit__(None, None, None)
        assert op.is_completed
        with pytest.raises(RuntimeError):
            await op.__aexit__(None, None, None)
        assert op.is_completed
        assert current_operation() is None
        await backend.sleep(0)

    def test_enter_outside_async_code(self) -> None:
        from hother.cancelable import NoAsyncContextError

        op = Cancellable.with_timeout(1.0)
        awaitable = op.__aenter__().__await__()
        with pytest.raises(NoAsyncContextError):
            awaitable.send(None)
        assert op.status != OperationStatus.RUNNING
        assert current_operation() is None

    async def test_manual_enter_exit_protocol(self, backend: Any) -> None:
        """``__aenter__``/``__aexit__`` driven by hand behave like ``async with``."""
        cancel_exc = backend.get_cancelled_exc_class()
        op = Cancellable.with_timeout(0.01)
        assert await op.__aenter__() is op
        assert current_operation() is op
        try:
            await backend.sleep(LONG)
        except cancel_exc as exc:
            suppress = await op.__aexit__(type(exc), exc, exc.__traceback__)
            assert not suppress  # never suppressed
        else:  # pragma: no cover - the timeout must fire
            await op.__aexit__(None, None, None)
            pytest.fail("the timeout did not fire")
        assert op.context.cancel_reason == CancellationReason.TIMEOUT
        assert current_operation() is None
        await backend.sleep(0)
