"""``Cancellable`` (API.md §6, contract §13.5, defects §14): construction, outcomes, callbacks.

Every ``async def`` test runs in the four run modes (asyncio, uvloop, anyio, trio). The
outcome-table tests (§6.6) check, row by row, which exception escapes the ``async with``
(the runtime's native cancel exception is re-raised, never swallowed), the final status,
``cancel_reason`` and ``cancel_message``, and that ``Task.cancelling()`` is back to its
entry value on asyncio.
"""

from __future__ import annotations

import asyncio
import gc
import math
import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest

from hother.cancelable import (
    Cancellable,
    CancellationError,
    CancellationReason,
    CancellationToken,
    ConditionCancellation,
    ManualCancellation,
    OperationContext,
    OperationStatus,
    TimeoutCancellation,
    current_operation,
)

#: Duration of a "long" body: far longer than any cancellation in these tests, so a missing
#: cancellation shows as a failed ``pytest.raises`` after this many seconds (never a hang).
LONG = 10.0


def cancelling() -> int:
    """``Task.cancelling()`` of the current asyncio task (0 under trio)."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # trio: no asyncio loop
        return 0
    return task.cancelling() if task is not None else 0


def assert_cancelled(
    op: Cancellable, reason: CancellationReason, message: str | None = None
) -> None:
    """The operation ended CANCELLED with ``reason`` (and ``message`` when given)."""
    assert op.status == OperationStatus.CANCELLED
    assert op.is_cancelled
    assert not op.is_running and not op.is_completed
    assert op.context.cancel_reason == reason
    if message is not None:
        assert op.context.cancel_message == message
    assert op.context.end_time is not None


# ====================================================================== construction


class TestConstruction:
    def test_defaults(self) -> None:
        op = Cancellable()
        assert len(op.operation_id) == 36
        uuid.UUID(op.operation_id)  # a valid uuid string
        assert op.context.id == op.operation_id
        assert op.context.name is None
        assert op.status == OperationStatus.PENDING
        assert op.context.status == OperationStatus.PENDING
        assert not op.is_running and not op.is_completed and not op.is_cancelled
        assert op.context.metadata == {}
        assert op.context.parent_id is None
        assert op.parent is None
        assert op.context.cancel_reason is None and op.context.cancel_message is None
        assert isinstance(op.context, OperationContext)

    def test_ids_are_unique(self) -> None:
        assert len({Cancellable().operation_id for _ in range(50)}) == 50

    def test_custom_id_and_name(self) -> None:
        op = Cancellable(operation_id="my-op", name="job")
        assert op.operation_id == "my-op"
        assert op.context.id == "my-op"
        assert op.context.name == "job"

    def test_metadata_is_kept_and_mutable(self) -> None:
        meta: dict[str, Any] = {"user": "u1", "n": 3}
        op = Cancellable(metadata=meta)
        assert op.context.metadata == {"user": "u1", "n": 3}
        op.context.metadata["extra"] = True
        assert op.context.metadata["extra"] is True

    def test_construction_needs_no_event_loop(self) -> None:
        op = Cancellable.with_timeout(1.0)
        op2 = Cancellable.with_token(CancellationToken())
        op3 = Cancellable.with_condition(lambda: False)
        assert op.status == op2.status == op3.status == OperationStatus.PENDING

    def test_token_property(self) -> None:
        op = Cancellable()
        assert isinstance(op.token, CancellationToken)
        assert op.token is op._token
        assert op.token is op.token
        assert not op.token.is_cancelled

    def test_parent_and_children(self) -> None:
        parent = Cancellable(name="parent")
        child = Cancellable(name="child", parent=parent)
        assert child.parent is parent
        assert child.context.parent_id == parent.operation_id
        assert child in parent._children
        assert parent.parent is None
        # the parent's child_ids are not touched (0.1 behaviour, never populated)
        assert parent.context.child_ids == set()

    def test_children_are_weak(self) -> None:
        parent = Cancellable()
        child = Cancellable(parent=parent)
        assert len(parent._children) == 1
        del child
        gc.collect()
        assert len(parent._children) == 0

    def test_parent_is_weak(self) -> None:
        parent = Cancellable()
        child = Cancellable(parent=parent)
        parent_id = parent.operation_id
        del parent
        gc.collect()
        assert child.parent is None
        assert child.context.parent_id == parent_id


class MyOperation(Cancellable):
    """A user subclass (the C base type must allow subclassing)."""

    def __init__(self, *args: Any, label: str = "default", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.label = label
        self.extra_state: list[str] = []


class TestSubclassAndGC:
    def test_factories_return_the_subclass(self) -> None:
        assert type(MyOperation.with_timeout(1.0)) is MyOperation
        assert type(MyOperation.with_token(CancellationToken())) is MyOperation
        assert type(MyOperation.with_condition(lambda: False)) is MyOperation
        op = MyOperation(name="sub", label="x")
        assert op.label == "x" and op.context.name == "sub"
        # combine always builds the base class
        assert type(op.combine(Cancellable())) is Cancellable

    async def test_subclass_runs(self, backend: Any) -> None:
        cancel_exc = backend.get_cancelled_exc_class()
        async with MyOperation(label="ok") as op:
            op.extra_state.append("body")
            assert current_operation() is op
        assert op.is_completed and op.extra_state == ["body"]
        with pytest.raises(cancel_exc):
            async with MyOperation.with_timeout(0.01) as op2:
                await backend.sleep(LONG)
        assert op2.context.cancel_reason == CancellationReason.TIMEOUT

    async def test_reference_cycles_are_collected(self, backend: Any) -> None:
        import weakref

        cancel_exc = backend.get_cancelled_exc_class()
        refs = []
        for kind in ("plain", "timeout", "cancelled", "callbacks"):
            op = Cancellable.with_timeout(0.01) if kind == "cancelled" else Cancellable()
            if kind == "timeout":
                op = Cancellable.with_timeout(LONG)
            op.context.metadata["self"] = op  # a cycle through the context
            op.on_complete(lambda ctx, op=op: op)  # and through a callback
            try:
                async with op:
                    _ = op.token
                    await backend.sleep(LONG if kind == "cancelled" else 0)
            except cancel_exc:
                pass
            refs.append(weakref.ref(op))
            del op
        gc.collect()
        assert [r() for r in refs] == [None, None, None, None]

    def test_never_entered_cycle_collected(self) -> None:
        import weakref

        parent = Cancellable()
        child = Cancellable(parent=parent)
        child.on_start(lambda ctx, op=child: op)
        ref = weakref.ref(child)
        del child
        gc.collect()
        assert ref() is None
        assert len(parent._children) == 0


class TestFactories:
    def test_with_timeout_names(self) -> None:
        assert Cancellable.with_timeout(30).context.name == "timeout_30s"
        assert Cancellable.with_timeout(0.1).context.name == "timeout_0.1s"
        assert Cancellable.with_timeout(timedelta(seconds=2)).context.name == "timeout_2.0s"
        assert Cancellable.with_timeout(1.0, name="mine").context.name == "mine"

    def test_with_timeout_adds_a_timeout_source(self) -> None:
        from hother.cancelable.sources.timeout import TimeoutSource

        op = Cancellable.with_timeout(timedelta(milliseconds=100), operation_id="t1")
        assert op.operation_id == "t1"
        assert len(op._sources) == 1
        assert isinstance(op._sources[0], TimeoutSource)
        assert op._sources[0].timeout == pytest.approx(0.1)

    def test_with_token_default_name(self) -> None:
        op = Cancellable.with_token(CancellationToken(), operation_id="x")
        assert op.context.name == "token_based"
        assert op.operation_id == "x"

    def test_with_token_keeps_its_own_token(self) -> None:
        shared = CancellationToken()
        op = Cancellable.with_token(shared)
        assert op.token is not shared

    def test_with_condition_and_signal_names(self) -> None:
        from hother.cancelable.sources.condition import ConditionSource

        op = Cancellable.with_condition(lambda: False, check_interval=0.5, condition_name="c")
        assert op.context.name == "condition_based"
        assert isinstance(op._sources[0], ConditionSource)
        assert op._sources[0].check_interval == 0.5
        assert op._sources[0].condition_name == "c"
        assert Cancellable.with_signal().context.name == "signal_based"

    def test_factories_forward_kwargs(self) -> None:
        parent = Cancellable()
        meta = {"k": 1}
        for op in (
            Cancellable.with_timeout(1.0, parent=parent, metadata=meta, register_globally=True),
            Cancellable.with_token(
                CancellationToken(), parent=parent, metadata=meta, register_globally=True
            ),
            Cancellable.with_condition(
                lambda: False, parent=parent, metadata=meta, register_globally=True
            ),
        ):
            assert op.parent is parent
            assert op.context.parent_id == parent.operation_id
            assert op.context.metadata == {"k": 1}
            assert op in parent._children

    def test_combine_shape(self) -> None:
        a = Cancellable.with_timeout(5.0, name="a")
        b = Cancellable.with_timeout(1.0, name="b")
        c = Cancellable.with_token(CancellationToken(), name="c")
        parent = Cancellable()
        a2 = Cancellable.with_timeout(2.0, name="a2", parent=parent, register_globally=True)
        combined = a.combine(b, c)
        assert type(combined) is Cancellable
        assert combined is not a
        assert combined.operation_id not in (a.operation_id, b.operation_id, c.operation_id)
        assert combined.context.name == "combined_a"
        assert combined.context.metadata == {
            "sources": [a.operation_id, b.operation_id, c.operation_id],
            "combined": True,
            "preserve_reason": True,
        }
        assert combined._sources == [*a._sources, *b._sources]
        assert combined._sources[0] is a._sources[0]
        # parents and registry flags are not carried over
        combined2 = a2.combine(b)
        assert combined2.parent is None
        assert combined2.context.parent_id is None
        assert combined2._register_globally is False
        # chainable
        chained = a.combine(b).combine(c)
        assert chained.context.name == "combined_combined_a"


# ====================================================================== basic lifecycle


async def test_status_lifecycle(backend: Any) -> None:
    op = Cancellable(name="life")
    statuses = [op.status]
    async with op as entered:
        assert entered is op
        statuses.append(op.status)
        assert statuses == [OperationStatus.PENDING, OperationStatus.RUNNING]
        assert op.is_running
        assert not op.is_completed and not op.is_cancelled
        assert current_operation() is op
        assert op.context.duration is not None  # RUNNING: now - start
        await backend.sleep(0)
    assert op.status == OperationStatus.COMPLETED
    assert op.is_completed and not op.is_cancelled and not op.is_running
    assert op.context.duration is not None
    assert op.context.duration.total_seconds() >= 0
    assert op.context.end_time is not None
    assert op.context.cancel_reason is None and op.context.cancel_message is None
    assert current_operation() is None


async def test_nested_operations_in_nested_coroutines(backend: Any) -> None:
    async def inner(n: int) -> int:
        async with Cancellable(name=f"inner{n}") as op:
            await backend.sleep(0)
            assert current_operation() is op
            return n * 2

    async def outer() -> list[int]:
        async with Cancellable(name="outer") as op:
            values = [await inner(i) for i in range(3)]
            assert current_operation() is op
            return values

    assert await outer() == [0, 2, 4]


async def test_five_concurrent_operations_complete(backend: Any) -> None:
    ops = [Cancellable(name=f"op{i}") for i in range(5)]
    seen: list[int] = []

    async def run(i: int) -> None:
        async with ops[i]:
            await backend.sleep(0.01)
            assert current_operation() is ops[i]
            seen.append(i)

    async with backend.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(run, i)
    assert sorted(seen) == [0, 1, 2, 3, 4]
    assert all(op.is_completed for op in ops)


# ====================================================================== outcome table (§6.6)


class TestOutcomeTable:
    async def test_normal_exit(self, backend: Any) -> None:
        before = cancelling()
        async with Cancellable() as op:
            await backend.sleep(0)
        assert op.status == OperationStatus.COMPLETED
        assert op.context.cancel_reason is None
        assert op.context.cancel_message is None
        assert op.context.error is None
        assert cancelling() == before

    async def test_body_error_escapes_and_fails(self, backend: Any) -> None:
        before = cancelling()
        err = ValueError("Test error")
        with pytest.raises(ValueError) as info:
            async with Cancellable() as op:
                await backend.sleep(0)
                raise err
        assert info.value is err
        assert op.status == OperationStatus.FAILED
        assert op.context.error == "Test error"
        assert not op.is_cancelled and not op.is_completed
        assert op.context.cancel_reason is None
        assert op.context.end_time is not None
        assert cancelling() == before

    @pytest.mark.parametrize("timeout", [0.05, timedelta(milliseconds=50), 0.01])
    async def test_own_timeout(self, backend: Any, timeout: float | timedelta) -> None:
        before = cancelling()
        cancel_exc = backend.get_cancelled_exc_class()
        t0 = backend.current_time()
        with pytest.raises(cancel_exc):
            async with Cancellable.with_timeout(timeout) as op:
                await backend.sleep(LONG)
        assert backend.current_time() - t0 < LONG / 2
        assert_cancelled(op, CancellationReason.TIMEOUT, "Operation timed out")
        assert cancelling() == before

    async def test_cancel_from_the_body_itself(self, backend: Any) -> None:
        before = cancelling()
        cancel_exc = backend.get_cancelled_exc_class()
        after_cancel: list[bool] = []
        with pytest.raises(cancel_exc):
            async with Cancellable() as op:
                await op.cancel(CancellationReason.SIGNAL, "stop it")
                # the state change is synchronous: visible before any further await,
                # and cancel() itself returned normally (no cancel exception escaped it)
                after_cancel.append(op.token.is_cancelled)
                assert op.status == OperationStatus.RUNNING  # status changes at exit
                await backend.sleep(LONG)
        assert after_cancel == [True]
        assert_cancelled(op, CancellationReason.SIGNAL, "stop it")
        assert op.token.reason == CancellationReason.SIGNAL
        assert cancelling() == before

    async def test_cancel_default_reason_is_manual(self, backend: Any) -> None:
        cancel_exc = backend.get_cancelled_exc_class()
        with pytest.raises(cancel_exc):
            async with Cancellable() as op:
                await op.cancel()
                await backend.sleep(LONG)
        assert_cancelled(op, CancellationReason.MANUAL)
        assert op.context.cancel_message is None

    async def test_cancel_from_another_task(self, backend: Any) -> None:
        before = cancelling()
        cancel_exc = backend.get_cancelled_exc_class()
        op = Cancellable()
        entered = backend.create_event()

        async def canceller() -> None:
            await entered.wait()
            await op.cancel(CancellationReason.MANUAL, "user pressed stop")

        async with backend.create_task_group() as tg:
            tg.start_soon(canceller)
            with pytest.raises(cancel_exc):
                async with op:
                    entered.set()
                    await backend.sleep(LONG)
        assert_cancelled(op, CancellationReason.MANUAL, "user pressed stop")
        assert cancelling() == before

    async def test_cancel_sync_from_another_task(self, backend: Any) -> None:
        cancel_exc = backend.get_cancelled_exc_class()
        op = Cancellable()
        entered = backend.create_event()
        results: list[bool] = []

        async def canceller() -> None:
            await entered.wait()
            results.append(op.cancel_sync(CancellationReason.CONDITION, "sync"))
            results.append(op.cancel_sync(CancellationReason.MANUAL, "second"))

        async with backend.create_task_group() as tg:
            tg.start_soon(canceller)
            with pytest.raises(cancel_exc):
                async with op:
                    entered.set()
                    await backend.sleep(LONG)
        assert results == [True, False]
        assert_cancelled(op, CancellationReason.CONDITION, "sync")

    async def test_shared_token_cancelled_from_another_task(self, backend: Any) -> None:
        before = cancelling()
        cancel_exc = backend.get_cancelled_exc_class()
        token = CancellationToken()
        op = Cancellable.with_token(token)
        entered = backend.create_event()

        async def canceller() -> None:
            await entered.wait()
            assert await token.cancel(CancellationReason.MANUAL, "Token cancelled")

        async with backend.create_task_group() as tg:
            tg.start_soon(canceller)
            with pytest.raises(cancel_exc):
                async with op:
                    entered.set()
                    await backend.sleep(LONG)
        assert_cancelled(op, CancellationReason.MANUAL, "Token cancelled")
        assert cancelling() == before

    async def test_shared_token_keeps_a_non_manual_reason(self, backend: Any) -> None:
        cancel_exc = backend.get_cancelled_exc_class()
        token = CancellationToken()
        entered = backend.create_event()

        async def canceller() -> None:
            await entered.wait()
            await token.cancel(CancellationReason.SIGNAL, "SIGTERM received")

        async with backend.create_task_group() as tg:
            tg.start_soon(canceller)
            with pytest.raises(cancel_exc):
                async with Cancellable.with_token(token) as op:
                    entered.set()
                    await backend.sleep(LONG)
        assert_cancelled(op, CancellationReason.SIGNAL, "SIGTERM received")

    async def test_shared_token_cancelled_from_a_plain_thread(
        self, backend: Any, plain_thread: Any
    ) -> None:
        before = cancelling()
        cancel_exc = backend.get_cancelled_exc_class()
        token = CancellationToken()
        entered = threading.Event()
        won: list[bool] = []

        def in_thread() -> None:
            assert entered.wait(LONG)
            won.append(token.cancel_sync(CancellationReason.MANUAL, "from a thread"))

        plain_thread.start(in_thread)
        t0 = backend.current_time()
        with pytest.raises(cancel_exc):
            async with Cancellable.with_token(token) as op:
                entered.set()
                await backend.sleep(LONG)
        assert backend.current_time() - t0 < LONG / 2
        plain_thread.join()
        assert won == [True]
        assert_cancelled(op, CancellationReason.MANUAL, "from a thread")
        assert cancelling() == before

    async def test_pre_cancelled_shared_token(self, backend: Any) -> None:
        cancel_exc = backend.get_cancelled_exc_class()
        token = CancellationToken()
        token.cancel_sync(CancellationReason.CONDITION, "already")
        reached: list[str] = []
        with pytest.raises(cancel_exc):
            async with Cancellable.with_token(token) as op:
                reached.append("body start")
                await backend.sleep(LONG)
                reached.append("after checkpoint")
        assert reached == ["body start"]
        assert_cancelled(op, CancellationReason.CONDITION, "already")

    async def test_combined_token_reason_preserved(self, backend: Any) -> None:
        before = cancelling()
        cancel_exc = backend.get_cancelled_exc_class()
        token = CancellationToken()
        combined = Cancellable.with_timeout(LONG).combine(Cancellable.with_token(token))
        entered = backend.create_event()

        async def canceller() -> None:
            await entered.wait()
            await token.cancel(CancellationReason.SIGNAL, "original message")

        async with backend.create_task_group() as tg:
            tg.start_soon(canceller)
            with pytest.raises(cancel_exc):
                async with combined:
                    entered.set()
                    await backend.sleep(LONG)
        assert_cancelled(combined, CancellationReason.SIGNAL, "original message")
        assert combined.token.reason == CancellationReason.SIGNAL
        assert token.reason == CancellationReason.SIGNAL
        assert cancelling() == before

    async def test_combined_token_message_fallback(self, backend: Any) -> None:
        cancel_exc = backend.get_cancelled_exc_class()
        token = CancellationToken()
        combined = Cancellable.with_timeout(LONG).combine(Cancellable.with_token(token))
        entered = backend.create_event()

        async def canceller() -> None:
            await entered.wait()
            await token.cancel()

        async with backend.create_task_group() as tg:
            tg.start_soon(canceller)
            with pytest.raises(cancel_exc):
                async with combined:
                    entered.set()
                    await backend.sleep(LONG)
        assert_cancelled(combined, CancellationReason.MANUAL)
        assert combined.context.cancel_message == f"Linked token {token.id[:8]} was cancelled"

    async def test_parent_cancel_reaches_entered_child_synchronously(self, backend: Any) -> None:
        before = cancelling()
        cancel_exc = backend.get_cancelled_exc_class()
        parent = Cancellable(name="parent")
        child = Cancellable(name="child", parent=parent)
        child_entered = backend.create_event()
        checked: list[tuple[bool, CancellationReason | None]] = []

        async def canceller() -> None:
            await child_entered.wait()
            await parent.cancel()
            # no await in between: propagation is synchronous
            checked.append((child.token.is_cancelled, child.token.reason))

        async with backend.create_task_group() as tg:
            tg.start_soon(canceller)
            with pytest.raises(cancel_exc):
                async with parent:
                    with pytest.raises(cancel_exc):
                        async with child:
                            child_entered.set()
                            await backend.sleep(LONG)
                    assert_cancelled(child, CancellationReason.PARENT)
                    await backend.sleep(LONG)
        assert checked == [(True, CancellationReason.PARENT)]
        assert child.context.cancel_message == (f"Linked token {parent.token.id[:8]} was cancelled")
        assert_cancelled(parent, CancellationReason.MANUAL)
        assert cancelling() == before

    async def test_parent_cancel_from_inside_the_child(self, backend: Any) -> None:
        cancel_exc = backend.get_cancelled_exc_class()
        parent = Cancellable(name="parent")
        child = Cancellable(name="child", parent=parent)
        checked: list[tuple[bool, CancellationReason | None]] = []
        with pytest.raises(cancel_exc):
            async with parent:
                async with child:
                    await parent.cancel(CancellationReason.MANUAL, "stop all")
                    checked.append((child.token.is_cancelled, child.token.reason))
                    await backend.sleep(LONG)
        assert checked == [(True, CancellationReason.PARENT)]
        assert_cancelled(child, CancellationReason.PARENT)
        assert_cancelled(parent, CancellationReason.MANUAL, "stop all")

    async def test_parent_cancel_reaches_child_in_another_task(self, backend: Any) -> None:
        cancel_exc = backend.get_cancelled_exc_class()
        parent = Cancellable(name="parent")
        child = Cancellable(name="child", parent=parent)
        child_entered = backend.create_event()
        child_exc: list[BaseException] = []

        async def child_task() -> None:
            try:
                async with child:
                    child_entered.set()
                    await backend.sleep(LONG)
            except cancel_exc as exc:
                child_exc.append(exc)
                raise

        with pytest.raises(cancel_exc):
            async with parent:
                async with backend.create_task_group() as tg:
                    tg.start_soon(child_task)
                    await child_entered.wait()
                    await parent.cancel()
                    assert child.token.is_cancelled
                    await backend.sleep(LONG)
        assert len(child_exc) == 1
        assert_cancelled(child, CancellationReason.PARENT)
        assert_cancelled(parent, CancellationReason.MANUAL)

    async def test_parent_timeout_child_records_parent(self, backend: Any) -> None:
        before = cancelling()
        cancel_exc = backend.get_cancelled_exc_class()
        parent = Cancellable.with_timeout(0.05, name="parent")
        child = Cancellable(name="child", parent=parent)
        with pytest.raises(cancel_exc):
            async with parent:
                async with child:
                    await backend.sleep(LONG)
        assert_cancelled(child, CancellationReason.PARENT)
        assert_cancelled(parent, CancellationReason.TIMEOUT, "Operation timed out")
        assert cancelling() == before

    async def test_grandchild_parent_timeout(self, backend: Any) -> None:
        cancel_exc = backend.get_cancelled_exc_class()
        parent = Cancellable.with_timeout(0.05)
        child = Cancellable(parent=parent)
        grandchild = Cancellable(parent=child)
        with pytest.raises(cancel_exc):
            async with parent, child, grandchild:
                await backend.sleep(LONG)
        assert_cancelled(grandchild, CancellationReason.PARENT)
        assert_cancelled(child, CancellationReason.PARENT)
        assert_cancelled(parent, CancellationReason.TIMEOUT)

    async def test_condition_source(self, backend: Any) -> None:
        before = cancelling()
        cancel_exc = backend.get_cancelled_exc_class()
        calls = 0

        def ready() -> bool:
            nonlocal calls
            calls += 1
            return calls >= 3

        with pytest.raises(cancel_exc):
            async with Cancellable.with_condition(
                ready, check_interval=0.01, condition_name="ready"
            ) as op:
                await backend.sleep(LONG)
        assert calls == 3
        assert_cancelled(op, CancellationReason.CONDITION, "Condition 'ready' met after 3 checks")
        assert cancelling() == before

    async def test_async_condition_source(self, backend: Any) -> None:
        cancel_exc = backend.get_cancelled_exc_class()
        calls = 0

        async def ready() -> bool:
            nonlocal calls
            calls += 1
            await backend.sleep(0)
            return calls >= 3

        t0 = backend.current_time()
        with pytest.raises(cancel_exc):
            async with Cancellable.with_condition(ready, check_interval=0.05) as op:
                await backend.sleep(LONG)
        assert backend.current_time() - t0 < LONG / 2
        assert calls == 3
        assert_cancelled(op, CancellationReason.CONDITION, "Condition 'ready' met after 3 checks")

    async def test_outer_scope_cancelled_records_manual(self, backend: Any) -> None:
        before = cancelling()
        with backend.create_cancel_scope() as outer:
            async with Cancellable() as op:
                outer.cancel()
                await backend.sleep(LONG)
        assert outer.cancelled_caught
        assert_cancelled(op, CancellationReason.MANUAL)
        assert op.context.cancel_message is None
        assert cancelling() == before

    async def test_outer_deadline_records_manual(self, backend: Any) -> None:
        with backend.create_cancel_scope(deadline=backend.current_time() + 0.05) as outer:
            async with Cancellable() as op:
                await backend.sleep(LONG)
        assert outer.cancelled_caught
        assert_cancelled(op, CancellationReason.MANUAL)

    async def test_unrelated_outer_operation_timeout_records_manual(self, backend: Any) -> None:
        cancel_exc = backend.get_cancelled_exc_class()
        outer = Cancellable.with_timeout(0.05, name="outer")
        inner = Cancellable(name="inner")  # no parent relationship
        with pytest.raises(cancel_exc):
            async with outer:
                async with inner:
                    await backend.sleep(LONG)
        assert_cancelled(inner, CancellationReason.MANUAL)
        assert_cancelled(outer, CancellationReason.TIMEOUT)

    async def test_inner_uncaught_timeout_ends_outer_as_manual(self, backend: Any) -> None:
        cancel_exc = backend.get_cancelled_exc_class()
        outer = Cancellable(name="outer")
        inner = Cancellable.with_timeout(0.05, name="inner")
        with pytest.raises(cancel_exc):
            async with outer:
                async with inner:
                    await backend.sleep(LONG)
        assert_cancelled(inner, CancellationReason.TIMEOUT)
        assert_cancelled(outer, CancellationReason.MANUAL)

    async def test_inner_timeout_caught_outer_continues(self, backend: Any) -> None:
        cancel_exc = backend.get_cancelled_exc_class()
        before = cancelling()
        async with Cancellable(name="outer") as outer:
            try:
                async with Cancellable.with_timeout(0.02) as inner:
                    await backend.sleep(LONG)
            except cancel_exc:
                pass
            await backend.sleep(0.01)  # the outer block is not cancelled
        assert_cancelled(inner, CancellationReason.TIMEOUT)
        assert outer.is_completed
        assert cancelling() == before

    @pytest.mark.parametrize(
        ("exc", "reason", "message"),
        [
            (
                TimeoutCancellation(3.0),
                CancellationReason.TIMEOUT,
                "Operation timed out after 3.0s",
            ),
            (ManualCancellation(), CancellationReason.MANUAL, "Operation cancelled manually"),
            (
                ConditionCancellation("disk_full"),
                CancellationReason.CONDITION,
                "Operation cancelled: disk_full condition met",
            ),
            (
                CancellationError(CancellationReason.SIGNAL, "custom"),
                CancellationReason.SIGNAL,
                "custom",
            ),
        ],
    )
    async def test_body_raises_cancellation_error(
        self,
        backend: Any,
        exc: CancellationError,
        reason: CancellationReason,
        message: str,
    ) -> None:
        before = cancelling()
        with pytest.raises(type(exc)) as info:
            async with Cancellable() as op:
                await backend.sleep(0)
                raise exc
        assert info.value is exc
        assert_cancelled(op, reason, message)
        assert cancelling() == before

    async def test_token_check_in_body(self, backend: Any) -> None:
        token = CancellationToken()
        token.cancel_sync()
        with pytest.raises(ManualCancellation):
            async with Cancellable() as op:
                token.check()
        assert_cancelled(op, CancellationReason.MANUAL, "Operation cancelled via token")

    async def test_body_swallows_own_timeout(self, backend: Any) -> None:
        before = cancelling()
        cancel_exc = backend.get_cancelled_exc_class()
        caught: list[bool] = []
        async with Cancellable.with_timeout(0.02) as op:
            try:
                await backend.sleep(LONG)
            except cancel_exc:
                caught.append(True)
        assert caught == [True]
        assert op.status == OperationStatus.COMPLETED
        assert op.is_completed and not op.is_cancelled
        assert cancelling() == before

    async def test_body_swallows_manual_cancel(self, backend: Any) -> None:
        before = cancelling()
        cancel_exc = backend.get_cancelled_exc_class()
        caught: list[bool] = []
        async with Cancellable() as op:
            await op.cancel()
            try:
                await backend.sleep(LONG)
            except cancel_exc:
                caught.append(True)
        assert caught == [True]
        assert op.status == OperationStatus.COMPLETED
        assert cancelling() == before

    async def test_body_swallows_condition(self, backend: Any) -> None:
        cancel_exc = backend.get_cancelled_exc_class()
        async with Cancellable.with_condition(lambda: True, check_interval=0.01) as op:
            try:
                await backend.sleep(LONG)
            except cancel_exc:
                pass
        assert op.status == OperationStatus.COMPLETED
        assert not op.is_cancelled

    async def test_raw_shield_inside_timed_out_operation_completes(self, backend: Any) -> None:
        cancel_exc = backend.get_cancelled_exc_class()
        done: list[str] = []
        with pytest.raises(cancel_exc):
            async with Cancellable.with_timeout(0.02) as op:
                with backend.create_cancel_scope(shield=True):
                    await backend.sleep(0.1)
                    done.append("shielded work")
                await backend.sleep(LONG)
        assert done == ["shielded work"]
        assert_cancelled(op, CancellationReason.TIMEOUT)


# ====================================================================== cancel() semantics


class TestCancel:
    async def test_pre_cancel_before_enter(self, backend: Any) -> None:
        cancel_exc = backend.get_cancelled_exc_class()
        op = Cancellable()
        await op.cancel(CancellationReason.MANUAL, "early")
        assert op.token.is_cancelled
        assert op.status == OperationStatus.PENDING
        reached: list[str] = []
        with pytest.raises(cancel_exc):
            async with op:
                reached.append("body")
                await backend.sleep(LONG)
                reached.append("after")
        assert reached == ["body"]
        assert_cancelled(op, CancellationReason.MANUAL, "early")

    async def test_cancel_is_idempotent_first_reason_wins(self, backend: Any) -> None:
        cancel_exc = backend.get_cancelled_exc_class()
        with pytest.raises(cancel_exc):
            async with Cancellable() as op:
                await op.cancel(CancellationReason.SIGNAL, "first")
                await op.cancel(CancellationReason.MANUAL, "second")
                await backend.sleep(LONG)
        assert_cancelled(op, CancellationReason.SIGNAL, "first")

    async def test_cancel_propagates_to_not_entered_children(self, backend: Any) -> None:
        cancel_exc = backend.get_cancelled_exc_class()
        parent = Cancellable()
        child = Cancellable(parent=parent)
        grandchild = Cancellable(parent=child)
        await parent.cancel()
        assert child.token.is_cancelled
        assert child.token.reason == CancellationReason.PARENT
        assert grandchild.token.is_cancelled
        assert grandchild.token.reason == CancellationReason.PARENT
        with pytest.raises(cancel_exc):
            async with child:
                await backend.sleep(LONG)
        assert_cancelled(child, CancellationReason.PARENT)

    async def test_cancel_without_propagation(self, backend: Any) -> None:
        parent = Cancellable()
        child = Cancellable(parent=parent)
        await parent.cancel(propagate_to_children=False)
        assert parent.token.is_cancelled
        assert not child.token.is_cancelled

    async def test_cancelling_child_never_cancels_parent(self, backend: Any) -> None:
        cancel_exc = backend.get_cancelled_exc_class()
        async with Cancellable() as parent:
            child = Cancellable(parent=parent)
            with pytest.raises(cancel_exc):
                async with child:
                    await child.cancel()
                    await backend.sleep(LONG)
            assert not parent.token.is_cancelled
            await backend.sleep(0.01)
        assert parent.is_completed
        assert_cancelled(child, CancellationReason.MANUAL)

    async def test_cancel_sync_on_never_entered(self, backend: Any) -> None:
        op = Cancellable()
        assert op.cancel_sync(CancellationReason.TIMEOUT, "t") is True
        assert op.cancel_sync() is False
        assert op.token.reason == CancellationReason.TIMEOUT
        assert op.token.message == "t"

    async def test_cancel_after_exit_is_harmless(self, backend: Any) -> None:
        async with Cancellable() as op:
            await backend.sleep(0)
        await op.cancel()
        assert op.cancel_sync() is False
        assert op.is_completed


# ====================================================================== callbacks


class TestCallbacks:
    async def test_registration_is_chainable(self, backend: Any) -> None:
        op = Cancellable()

        def cb(*args: Any) -> None:
            pass

        assert op.on_start(cb) is op
        assert op.on_complete(cb) is op
        assert op.on_cancel(cb) is op
        assert op.on_error(cb) is op
        assert op.on_progress(cb) is op

    async def test_start_and_complete_async_fire_once(self, backend: Any) -> None:
        events: list[tuple[str, OperationStatus]] = []

        async def on_start(ctx: OperationContext) -> None:
            await backend.sleep(0)
            events.append(("start", ctx.status))

        async def on_complete(ctx: OperationContext) -> None:
            await backend.sleep(0)
            events.append(("complete", ctx.status))

        op = Cancellable().on_start(on_start).on_complete(on_complete)
        async with op:
            assert events == [("start", OperationStatus.RUNNING)]
        assert events == [
            ("start", OperationStatus.RUNNING),
            ("complete", OperationStatus.COMPLETED),
        ]

    async def test_sync_callbacks(self, backend: Any) -> None:
        events: list[tuple[str, Any]] = []
        op = (
            Cancellable()
            .on_start(lambda ctx: events.append(("start", ctx.status)))
            .on_complete(lambda ctx: events.append(("complete", ctx.status)))
            .on_cancel(lambda ctx: events.append(("cancel", ctx.status)))
            .on_error(lambda ctx, err: events.append(("error", err)))
        )
        async with op:
            pass
        assert events == [
            ("start", OperationStatus.RUNNING),
            ("complete", OperationStatus.COMPLETED),
        ]

    async def test_callbacks_receive_the_live_context(self, backend: Any) -> None:
        seen: list[OperationContext] = []
        op = Cancellable().on_start(seen.append).on_complete(seen.append)
        async with op:
            pass
        assert seen == [op.context, op.context]
        assert seen[0] is op.context

    async def test_on_cancel_after_timeout(self, backend: Any) -> None:
        cancel_exc = backend.get_cancelled_exc_class()
        seen: list[tuple[Any, ...]] = []

        async def on_cancel(ctx: OperationContext) -> None:
            await backend.sleep(0)
            seen.append((ctx.status, ctx.cancel_reason, ctx.cancel_message, ctx.duration_seconds))

        completes: list[Any] = []
        op = Cancellable.with_timeout(0.02).on_cancel(on_cancel).on_complete(completes.append)
        with pytest.raises(cancel_exc):
            async with op:
                await backend.sleep(LONG)
        assert len(seen) == 1
        status, reason, message, duration = seen[0]
        assert status == OperationStatus.CANCELLED
        assert reason == CancellationReason.TIMEOUT
        assert message == "Operation timed out"
        assert duration is not None and duration > 0
        assert completes == []

    async def test_on_cancel_for_cancellation_error(self, backend: Any) -> None:
        seen: list[Any] = []
        op = Cancellable().on_cancel(lambda ctx: seen.append(ctx.cancel_reason))
        with pytest.raises(TimeoutCancellation):
            async with op:
                raise TimeoutCancellation(1.0)
        assert seen == [CancellationReason.TIMEOUT]

    async def test_on_error_receives_the_exception(self, backend: Any) -> None:
        seen: list[tuple[OperationStatus, BaseException, str | None]] = []

        async def on_error(ctx: OperationContext, err: Exception) -> None:
            await backend.sleep(0)
            seen.append((ctx.status, err, ctx.error))

        err = KeyError("missing")
        cancels: list[Any] = []
        op = Cancellable().on_error(on_error).on_cancel(cancels.append)
        with pytest.raises(KeyError) as info:
            async with op:
                raise err
        assert info.value is err
        assert seen == [(OperationStatus.FAILED, err, str(err))]
        assert cancels == []

    async def test_raising_callbacks_are_swallowed(self, backend: Any) -> None:
        events: list[str] = []

        def bad(*args: Any) -> None:
            raise RuntimeError("callback failure")

        async def bad_async(*args: Any) -> None:
            await backend.sleep(0)
            raise RuntimeError("async callback failure")

        op = (
            Cancellable()
            .on_start(bad)
            .on_start(bad_async)
            .on_start(lambda ctx: events.append("start"))
            .on_complete(bad)
            .on_complete(bad_async)
            .on_complete(lambda ctx: events.append("complete"))
        )
        async with op:
            events.append("body")
        assert events == ["start", "body", "complete"]
        assert op.is_completed

    async def test_raising_cancel_callback_keeps_the_cancel_exception(self, backend: Any) -> None:
        cancel_exc = backend.get_cancelled_exc_class()
        events: list[str] = []

        def bad(ctx: OperationContext) -> None:
            raise RuntimeError("cancel callback failure")

        op = (
            Cancellable.with_timeout(0.02)
            .on_cancel(bad)
            .on_cancel(lambda ctx: events.append("cancel"))
        )
        with pytest.raises(cancel_exc):
            async with op:
                await backend.sleep(LONG)
        assert events == ["cancel"]
        assert_cancelled(op, CancellationReason.TIMEOUT)

    async def test_raising_error_callback_keeps_the_error(self, backend: Any) -> None:
        events: list[str] = []

        def bad(ctx: OperationContext, err: Exception) -> None:
            raise RuntimeError("error callback failure")

        op = Cancellable().on_error(bad).on_error(lambda ctx, err: events.append(str(err)))
        with pytest.raises(ValueError, match="boom"):
            async with op:
                raise ValueError("boom")
        assert events == ["boom"]
        assert op.status == OperationStatus.FAILED

    async def test_start_callback_registered_after_enter_never_fires(self, backend: Any) -> None:
        events: list[str] = []
        async with Cancellable() as op:
            op.on_start(lambda ctx: events.append("late start"))
            op.on_complete(lambda ctx: events.append("complete"))
        assert events == ["complete"]

    async def test_progress(self, backend: Any) -> None:
        received: list[tuple[str, Any, Any]] = []

        async def async_cb(op_id: str, message: Any, metadata: Any) -> None:
            await backend.sleep(0)
            received.append(("async", message, metadata))

        op = Cancellable(operation_id="prog")
        op.on_progress(lambda op_id, msg, meta: received.append((op_id, msg, meta)))
        op.on_progress(async_cb)
        async with op:
            await op.report_progress("step 1")
            await op.report_progress("step 2", {"pct": 50})
            await op.report_progress({"structured": True}, {"k": [1]})
        assert received == [
            ("prog", "step 1", None),
            ("async", "step 1", None),
            ("prog", "step 2", {"pct": 50}),
            ("async", "step 2", {"pct": 50}),
            ("prog", {"structured": True}, {"k": [1]}),
            ("async", {"structured": True}, {"k": [1]}),
        ]

    async def test_progress_on_a_never_entered_instance(self, backend: Any) -> None:
        received: list[Any] = []
        op = Cancellable().on_progress(lambda op_id, msg, meta: received.append(msg))
        await op.report_progress("outside")
        assert received == ["outside"]

    async def test_raising_progress_callback_swallowed(self, backend: Any) -> None:
        received: list[Any] = []

        def bad(*args: Any) -> None:
            raise RuntimeError("progress failure")

        op = Cancellable().on_progress(bad).on_progress(lambda i, m, md: received.append(m))
        async with op:
            await op.report_progress("x")
        assert received == ["x"]

    async def test_progress_does_not_check_cancellation(self, backend: Any) -> None:
        received: list[Any] = []
        op = Cancellable().on_progress(lambda i, m, md: received.append(m))
        await op.cancel()
        await op.report_progress("still delivered")
        assert received == ["still delivered"]


# ====================================================================== stream / wrap / add_source


async def _numbers(n: int | None, delay: float = 0.0, backend: Any = None) -> Any:
    i = 0
    while n is None or i < n:
        if backend is not None:
            await backend.sleep(delay)
        yield i
        i += 1


class TestStream:
    async def test_passes_items_in_order(self, backend: Any) -> None:
        async with Cancellable() as op:
            items = [x async for x in op.stream(_numbers(10, 0, backend))]
        assert items == list(range(10))
        assert op.context.partial_result == {
            "count": 10,
            "buffer": list(range(10)),
            "completed": True,
        }

    async def test_no_buffer(self, backend: Any) -> None:
        async with Cancellable() as op:
            items = [x async for x in op.stream(_numbers(3), buffer_partial=False)]
        assert items == [0, 1, 2]
        assert op.context.partial_result == {"count": 3, "buffer": None, "completed": True}

    async def test_progress_every_interval(self, backend: Any) -> None:
        reports: list[tuple[str, Any]] = []
        op = Cancellable().on_progress(lambda i, msg, meta: reports.append((msg, meta)))
        async with op:
            items = [x async for x in op.stream(_numbers(25), report_interval=10)]
        assert items == list(range(25))
        assert [meta["count"] for _, meta in reports] == [10, 20]
        assert [meta["latest_item"] for _, meta in reports] == [9, 19]
        assert all("Processed" in msg for msg, _ in reports)

    async def test_timeout_interrupts_an_infinite_stream(self, backend: Any) -> None:
        cancel_exc = backend.get_cancelled_exc_class()
        items: list[int] = []
        with pytest.raises(cancel_exc):
            async with Cancellable.with_timeout(0.1) as op:
                async for x in op.stream(_numbers(None, 0.02, backend)):
                    items.append(x)
        assert 0 < len(items) < 100
        assert_cancelled(op, CancellationReason.TIMEOUT)
        partial = op.context.partial_result
        assert isinstance(partial, dict)
        assert partial["count"] == len(items)
        assert partial["buffer"] == items
        assert "completed" not in partial

    async def test_cancel_stops_the_stream(self, backend: Any) -> None:
        cancel_exc = backend.get_cancelled_exc_class()
        items: list[int] = []
        with pytest.raises(cancel_exc):
            async with Cancellable() as op:
                async for x in op.stream(_numbers(None, 0, backend)):
                    items.append(x)
                    if x == 4:
                        await op.cancel()
        assert items == [0, 1, 2, 3, 4]
        assert_cancelled(op, CancellationReason.MANUAL)

    async def test_swallowed_cancellation_leaves_partial_result(self, backend: Any) -> None:
        cancel_exc = backend.get_cancelled_exc_class()
        async with Cancellable.with_timeout(0.1) as op:
            try:
                async for _ in op.stream(_numbers(None, 0.02, backend)):
                    pass
            except cancel_exc:
                pass
        partial = op.context.partial_result
        assert isinstance(partial, dict)
        assert partial["count"] > 0
        assert partial["buffer"]

    async def test_error_in_source(self, backend: Any) -> None:
        async def broken() -> Any:
            yield 1
            yield 2
            raise OSError("source broke")

        with pytest.raises(OSError, match="source broke"):
            async with Cancellable() as op:
                async for _ in op.stream(broken()):
                    pass
        assert op.context.partial_result == {"count": 2, "buffer": [1, 2], "completed": False}
        assert op.status == OperationStatus.FAILED

    async def test_bad_arguments(self, backend: Any) -> None:
        op = Cancellable()
        with pytest.raises(TypeError, match="async_iter"):
            async for _ in op.stream([1, 2, 3]):  # type: ignore[arg-type]
                pass
        with pytest.raises(ValueError, match="report_interval"):
            async for _ in op.stream(_numbers(3), report_interval=0):
                pass


class TestWrap:
    async def test_wrap_returns_result_and_completes(self, backend: Any) -> None:
        op = Cancellable()

        async def work(a: int, b: int = 0) -> int:
            assert current_operation() is op
            await backend.sleep(0)
            return a + b

        wrapped = op.wrap(work)
        assert wrapped.__name__ == "work"
        assert await wrapped(2, b=3) == 5
        assert op.is_completed

    async def test_wrap_injects_cancellable(self, backend: Any) -> None:
        messages: list[Any] = []
        op = Cancellable().on_progress(lambda i, msg, meta: messages.append(msg))

        async def work(x: int, cancellable: Cancellable) -> int:
            await cancellable.report_progress(f"working on {x}")
            assert cancellable is op
            return x

        assert await op.wrap(work)(7) == 7
        assert messages == ["working on 7"]

    async def test_wrap_error_and_timeout(self, backend: Any) -> None:
        cancel_exc = backend.get_cancelled_exc_class()

        async def boom() -> None:
            raise ValueError("bad")

        op = Cancellable()
        with pytest.raises(ValueError):
            await op.wrap(boom)()
        assert op.status == OperationStatus.FAILED

        async def slow() -> None:
            await backend.sleep(LONG)

        op2 = Cancellable.with_timeout(0.02)
        with pytest.raises(cancel_exc):
            await op2.wrap(slow)()
        assert_cancelled(op2, CancellationReason.TIMEOUT)

    async def test_wrapper_is_single_use(self, backend: Any) -> None:
        async def work() -> int:
            return 1

        wrapped = Cancellable().wrap(work)
        assert await wrapped() == 1
        with pytest.raises(RuntimeError):
            await wrapped()


class TestAddSource:
    async def test_add_source_acts_like_with_timeout(self, backend: Any) -> None:
        from hother.cancelable.sources.timeout import TimeoutSource

        cancel_exc = backend.get_cancelled_exc_class()
        op = Cancellable()
        assert op.add_source(TimeoutSource(0.02)) is op
        with pytest.raises(cancel_exc):
            async with op:
                await backend.sleep(LONG)
        assert_cancelled(op, CancellationReason.TIMEOUT)

    async def test_private_sources_list_still_works(self, backend: Any) -> None:
        from hother.cancelable.sources.timeout import TimeoutSource

        cancel_exc = backend.get_cancelled_exc_class()
        op = Cancellable()
        op._sources.append(TimeoutSource(0.02))
        with pytest.raises(cancel_exc):
            async with op:
                await backend.sleep(LONG)
        assert_cancelled(op, CancellationReason.TIMEOUT)

    async def test_add_source_after_enter_rejected(self, backend: Any) -> None:
        from hother.cancelable.sources.timeout import TimeoutSource

        async with Cancellable() as op:
            with pytest.raises(RuntimeError):
                op.add_source(TimeoutSource(1.0))

    def test_add_source_type_checked(self) -> None:
        with pytest.raises(TypeError, match="source"):
            Cancellable().add_source(5)
        with pytest.raises(TypeError, match="source"):
            Cancellable().add_source(lambda: True)


# ====================================================================== bad input


class TestBadInput:
    @pytest.mark.parametrize("bad", ["1", None, [1], object(), True])
    def test_timeout_type(self, bad: Any) -> None:
        with pytest.raises(TypeError, match="timeout"):
            Cancellable.with_timeout(bad)

    @pytest.mark.parametrize(
        "bad", [0, 0.0, -1, -0.5, math.nan, timedelta(0), timedelta(seconds=-1)]
    )
    def test_timeout_value(self, bad: Any) -> None:
        with pytest.raises(ValueError, match="timeout"):
            Cancellable.with_timeout(bad)

    @pytest.mark.parametrize("bad", [None, "token", 5, Cancellable()])
    def test_token_type(self, bad: Any) -> None:
        with pytest.raises(TypeError, match="token"):
            Cancellable.with_token(bad)

    @pytest.mark.parametrize("bad", ["parent", 5, CancellationToken(), object()])
    def test_parent_type(self, bad: Any) -> None:
        with pytest.raises(TypeError, match="parent"):
            Cancellable(parent=bad)

    @pytest.mark.parametrize("bad", [5, b"id", uuid.uuid4(), 1.5])
    def test_operation_id_type(self, bad: Any) -> None:
        with pytest.raises(TypeError, match="operation_id"):
            Cancellable(operation_id=bad)
        with pytest.raises(TypeError, match="operation_id"):
            Cancellable.with_timeout(1.0, operation_id=bad)

    @pytest.mark.parametrize("bad", [5, b"name", ["n"]])
    def test_name_type(self, bad: Any) -> None:
        with pytest.raises(TypeError, match="name"):
            Cancellable(name=bad)
        with pytest.raises(TypeError, match="name"):
            Cancellable.with_token(CancellationToken(), name=bad)

    @pytest.mark.parametrize("bad", [[("a", 1)], "meta", 5, ("a",)])
    def test_metadata_type(self, bad: Any) -> None:
        with pytest.raises(TypeError, match="metadata"):
            Cancellable(metadata=bad)

    @pytest.mark.parametrize("bad", ["yes", 1, None])
    def test_register_globally_type(self, bad: Any) -> None:
        with pytest.raises(TypeError, match="register_globally"):
            Cancellable(register_globally=bad)

    @pytest.mark.parametrize(
        "method", ["on_start", "on_complete", "on_cancel", "on_error", "on_progress"]
    )
    @pytest.mark.parametrize("bad", [None, 5, "callback"])
    def test_callback_type(self, method: str, bad: Any) -> None:
        op = Cancellable()
        with pytest.raises(TypeError, match="callback"):
            getattr(op, method)(bad)

    def test_condition_arguments(self) -> None:
        with pytest.raises(TypeError, match="condition"):
            Cancellable.with_condition(5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="check_interval"):
            Cancellable.with_condition(lambda: False, check_interval=0)
        with pytest.raises(ValueError, match="check_interval"):
            Cancellable.with_condition(lambda: False, check_interval=-1.0)
        with pytest.raises(ValueError, match="check_interval"):
            Cancellable.with_condition(lambda: False, check_interval=math.nan)
        with pytest.raises(TypeError, match="check_interval"):
            Cancellable.with_condition(lambda: False, check_interval="1")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="condition_name"):
            Cancellable.with_condition(lambda: False, condition_name=5)  # type: ignore[arg-type]

    def test_signal_arguments(self) -> None:
        with pytest.raises(TypeError):
            Cancellable.with_signal("SIGINT")  # type: ignore[arg-type]

    def test_combine_arguments(self) -> None:
        with pytest.raises(TypeError):
            Cancellable().combine(5)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            Cancellable().combine(CancellationToken())  # type: ignore[arg-type]

    @pytest.mark.parametrize("bad", ["manual", None, 1, OperationStatus.CANCELLED])
    async def test_cancel_reason_type(self, backend: Any, bad: Any) -> None:
        op = Cancellable()
        with pytest.raises(TypeError, match="reason"):
            await op.cancel(bad)
        with pytest.raises(TypeError, match="reason"):
            op.cancel_sync(bad)
        assert not op.token.is_cancelled

    async def test_cancel_message_type(self, backend: Any) -> None:
        op = Cancellable()
        with pytest.raises(TypeError, match="message"):
            await op.cancel(CancellationReason.MANUAL, 5)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="message"):
            op.cancel_sync(CancellationReason.MANUAL, b"x")  # type: ignore[arg-type]
        assert not op.token.is_cancelled

    async def test_report_progress_metadata_type(self, backend: Any) -> None:
        op = Cancellable()
        with pytest.raises(TypeError, match="metadata"):
            await op.report_progress("m", [1, 2])  # type: ignore[arg-type]

    async def test_wrap_and_run_in_thread_types(self, backend: Any) -> None:
        op = Cancellable()
        with pytest.raises(TypeError, match="func"):
            op.wrap(5)  # type: ignore[arg-type]
        async with op:
            with pytest.raises(TypeError, match="func"):
                await op.run_in_thread(5)  # type: ignore[arg-type]

    async def test_bad_input_leaves_no_state(self, backend: Any) -> None:
        with pytest.raises(TypeError):
            Cancellable.with_timeout("soon")
        assert current_operation() is None
        async with Cancellable() as op:
            pass
        assert op.is_completed
