"""``Cancellable`` end to end on every backend (PLAN Story 2.6; API.md §13.5, §13.7, §14.7-8).

Acceptance:

* a ``cancel_sync()`` from a plain thread stops a running operation on asyncio, uvloop,
  anyio-on-asyncio and trio, with no ``AnyioBridge`` started, even when the event loop is
  completely idle (0.1 waited for an unrelated timer to wake the loop);
* one token shared by operations running on several event loops in several threads (each
  ``asyncio.run`` / ``trio.run`` in its own thread) cancels all of them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from hother.cancelable import (
    AnyioBridge,
    Cancellable,
    CancellationReason,
    CancellationToken,
    OperationRegistry,
    OperationStatus,
    current_operation,
)
from hother.cancelable.backends import get_backend
from hother.cancelable.pytest_plugin import run_in_mode

LONG = 10.0


def bridge_started() -> bool:
    bridge = AnyioBridge._instance
    return bridge is not None and bridge.is_started


def cancelling() -> int:
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return 0
    return task.cancelling() if task is not None else 0


@pytest.fixture
def registry() -> Iterator[OperationRegistry]:
    OperationRegistry._instance = None
    try:
        yield OperationRegistry.get_instance()
    finally:
        OperationRegistry._instance = None


# ====================================================================== backend wiring


async def test_backend_of_the_run_mode(backend: Any, run_mode: str) -> None:
    import anyio

    from hother.cancelable import _engine

    assert get_backend() is backend
    async with Cancellable() as op:
        scope = op.scope
        if run_mode in ("asyncio", "uvloop"):
            assert isinstance(scope, _engine.CancelScope)
        elif run_mode == "trio":
            import trio

            # the C fast path enters trio's own scope directly (no anyio wrapper)
            assert isinstance(scope, trio.CancelScope | anyio.CancelScope)
        else:
            assert isinstance(scope, anyio.CancelScope)
    expected = {
        "asyncio": asyncio.CancelledError,
        "uvloop": asyncio.CancelledError,
        "anyio": asyncio.CancelledError,
    }
    if run_mode == "trio":
        import trio

        assert backend.get_cancelled_exc_class() is trio.Cancelled
    else:
        assert backend.get_cancelled_exc_class() is expected[run_mode]


async def test_native_cancel_exception_escapes(backend: Any, run_mode: str) -> None:
    caught: list[BaseException] = []
    try:
        async with Cancellable.with_timeout(0.01):
            await backend.sleep(LONG)
    except BaseException as exc:  # the exact native type is what is checked
        caught.append(exc)
    assert len(caught) == 1
    assert type(caught[0]) is backend.get_cancelled_exc_class()


async def test_full_lifecycle(backend: Any) -> None:
    events: list[str] = []
    op = (
        Cancellable(name="lifecycle", metadata={"k": "v"})
        .on_start(lambda ctx: events.append(f"start:{ctx.status.value}"))
        .on_progress(lambda op_id, msg, meta: events.append(f"progress:{msg}"))
        .on_complete(lambda ctx: events.append(f"complete:{ctx.status.value}"))
    )
    async with op:
        events.append("body")
        await op.report_progress("half")
        await backend.sleep(0.01)
    assert events == ["start:running", "body", "progress:half", "complete:completed"]
    assert op.context.metadata == {"k": "v"}
    assert op.context.duration_seconds is not None


async def test_many_sequential_operations(backend: Any) -> None:
    before = cancelling()
    cancel_exc = backend.get_cancelled_exc_class()
    completed = cancelled = 0
    for i in range(100):
        if i % 2:
            async with Cancellable.with_timeout(LONG):
                await backend.sleep(0)
            completed += 1
        else:
            try:
                async with Cancellable() as op:
                    await op.cancel()
                    await backend.sleep(LONG)
            except cancel_exc:
                cancelled += 1
    assert (completed, cancelled) == (50, 50)
    assert cancelling() == before


async def test_concurrent_timeouts_all_fire(backend: Any) -> None:
    cancel_exc = backend.get_cancelled_exc_class()
    ops: list[Cancellable] = []

    async def worker(i: int) -> None:
        op = Cancellable.with_timeout(0.01 + (i % 5) * 0.005)
        ops.append(op)
        try:
            async with op:
                await backend.sleep(LONG)
        except cancel_exc:
            pass

    t0 = backend.current_time()
    async with backend.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(worker, i)
    assert backend.current_time() - t0 < LONG / 2
    assert len(ops) == 20
    assert all(op.context.cancel_reason == CancellationReason.TIMEOUT for op in ops)


async def test_operation_inside_task_group_cancelled_by_group(backend: Any) -> None:
    """A sibling's failure cancels the group; the operation records MANUAL (outer scope)."""
    op = Cancellable(name="victim")
    entered = backend.create_event()

    async def victim() -> None:
        async with op:
            entered.set()
            await backend.sleep(LONG)

    async def failing() -> None:
        await entered.wait()
        raise KeyError("sibling failed")

    with pytest.raises(BaseExceptionGroup) as info:
        async with backend.create_task_group() as tg:
            tg.start_soon(victim)
            tg.start_soon(failing)
    assert info.group_contains(KeyError)
    assert op.status == OperationStatus.CANCELLED
    assert op.context.cancel_reason == CancellationReason.MANUAL


# ====================================================================== cancel_sync from threads


async def test_cancel_sync_from_plain_thread_no_bridge(backend: Any, plain_thread: Any) -> None:
    """Acceptance: the loop is idle (waiting on an event nobody sets) until the thread cancels."""
    before = cancelling()
    cancel_exc = backend.get_cancelled_exc_class()
    op = Cancellable(name="thread-cancelled")
    entered = threading.Event()
    results: list[bool] = []

    def canceller() -> None:
        assert entered.wait(LONG)
        results.append(op.cancel_sync(CancellationReason.MANUAL, "stop from thread"))

    never = backend.create_event()
    plain_thread.start(canceller)
    t0 = time.monotonic()
    # safety net only: if the cancellation never arrives the guard ends the wait
    with backend.create_cancel_scope(deadline=backend.current_time() + LONG) as guard:
        with pytest.raises(cancel_exc):
            async with op:
                entered.set()
                await never.wait()
    elapsed = time.monotonic() - t0
    plain_thread.join()
    assert not guard.cancel_called, "the thread's cancel_sync did not wake the loop"
    assert elapsed < LONG / 2
    assert results == [True]
    assert op.status == OperationStatus.CANCELLED
    assert op.context.cancel_reason == CancellationReason.MANUAL
    assert op.context.cancel_message == "stop from thread"
    assert not bridge_started()
    assert cancelling() == before


async def test_token_cancel_sync_from_thread_wakes_idle_loop(
    backend: Any, plain_thread: Any
) -> None:
    cancel_exc = backend.get_cancelled_exc_class()
    token = CancellationToken()
    entered = threading.Event()

    def canceller() -> None:
        assert entered.wait(LONG)
        token.cancel_sync(CancellationReason.SIGNAL, "external")

    never = backend.create_event()
    plain_thread.start(canceller)
    with backend.create_cancel_scope(deadline=backend.current_time() + LONG) as guard:
        with pytest.raises(cancel_exc):
            async with Cancellable.with_token(token) as op:
                entered.set()
                await never.wait()
    plain_thread.join()
    assert not guard.cancel_called
    assert op.context.cancel_reason == CancellationReason.SIGNAL
    assert op.context.cancel_message == "external"
    assert not bridge_started()


async def test_registry_cancel_operation_sync_from_thread(
    backend: Any, plain_thread: Any, registry: OperationRegistry
) -> None:
    cancel_exc = backend.get_cancelled_exc_class()
    entered = threading.Event()
    found: list[bool] = []

    def canceller() -> None:
        assert entered.wait(LONG)
        found.append(registry.cancel_operation_sync("threaded", CancellationReason.MANUAL, "t"))

    plain_thread.start(canceller)
    with backend.create_cancel_scope(deadline=backend.current_time() + LONG) as guard:
        with pytest.raises(cancel_exc):
            async with Cancellable(operation_id="threaded", register_globally=True) as op:
                entered.set()
                await backend.create_event().wait()
    plain_thread.join()
    assert not guard.cancel_called
    assert found == [True]
    assert op.context.cancel_message == "t"
    assert [c.id for c in registry.get_history_sync()] == ["threaded"]


async def test_cancel_sync_race_many_threads(backend: Any) -> None:
    cancel_exc = backend.get_cancelled_exc_class()
    op = Cancellable()
    entered = threading.Event()
    start = threading.Barrier(8)
    wins: list[bool] = []
    lock = threading.Lock()

    def racer(i: int) -> None:
        assert entered.wait(LONG)
        start.wait(LONG)
        won = op.cancel_sync(CancellationReason.MANUAL, f"thread {i}")
        with lock:
            wins.append(won)

    threads = [threading.Thread(target=racer, args=(i,), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    with pytest.raises(cancel_exc):
        async with op:
            entered.set()
            await backend.create_event().wait()
    for t in threads:
        t.join(LONG)
    assert sorted(wins) == [False] * 7 + [True]
    assert op.context.cancel_message is not None
    assert op.context.cancel_message.startswith("thread ")


async def test_parent_cancel_sync_from_thread_reaches_child(
    backend: Any, plain_thread: Any
) -> None:
    cancel_exc = backend.get_cancelled_exc_class()
    parent = Cancellable(name="parent")
    child = Cancellable(name="child", parent=parent)
    entered = threading.Event()
    plain_thread.start(lambda: entered.wait(LONG) and parent.cancel_sync())
    with pytest.raises(cancel_exc):
        async with parent, child:
            entered.set()
            await backend.create_event().wait()
    plain_thread.join()
    assert child.context.cancel_reason == CancellationReason.PARENT
    assert parent.context.cancel_reason == CancellationReason.MANUAL


# ====================================================================== several event loops


def _loop_runner(
    mode: str, fn: Callable[..., Coroutine[Any, Any, Any]], results: dict[str, Any]
) -> Callable[[], None]:
    def run() -> None:
        try:
            results[mode] = run_in_mode(mode, fn, mode=mode)
        except BaseException as exc:  # reported by the test
            results[mode] = exc

    return run


def test_token_shared_by_operations_on_several_loops() -> None:
    """Acceptance: one token, operations on asyncio, uvloop and trio loops in three threads."""
    token = CancellationToken()
    modes = ("asyncio", "uvloop", "trio")
    ready = {mode: threading.Event() for mode in modes}
    results: dict[str, Any] = {}

    async def operation(mode: str) -> tuple[str, Any, Any, str]:
        backend = get_backend()
        cancel_exc = backend.get_cancelled_exc_class()
        op = Cancellable.with_token(token, name=f"op-{mode}")
        outcome = "completed"
        with backend.create_cancel_scope(deadline=backend.current_time() + LONG) as guard:
            try:
                async with op:
                    ready[mode].set()
                    await backend.create_event().wait()
            except cancel_exc:
                outcome = "cancelled"
        assert not guard.cancel_called, f"{mode}: the token never reached the loop"
        return (outcome, op.status, op.context.cancel_reason, op.context.cancel_message or "")

    threads = [
        threading.Thread(target=_loop_runner(mode, operation, results), daemon=True)
        for mode in modes
    ]
    for t in threads:
        t.start()
    for mode in modes:
        assert ready[mode].wait(LONG), f"{mode} loop did not start"
    assert token.cancel_sync(CancellationReason.SIGNAL, "shutdown") is True
    for t in threads:
        t.join(LONG)
        assert not t.is_alive()
    for mode in modes:
        result = results[mode]
        if isinstance(result, BaseException):
            raise result
        assert result == (
            "cancelled",
            OperationStatus.CANCELLED,
            CancellationReason.SIGNAL,
            "shutdown",
        ), mode


def test_two_asyncio_run_threads_share_a_token() -> None:
    """The same with two plain ``asyncio.run`` loops, cancelled from a third thread."""
    token = CancellationToken()
    ready = [threading.Event(), threading.Event()]
    results: list[Any] = [None, None]

    async def operation(i: int) -> None:
        try:
            async with Cancellable.with_token(token) as op:
                ready[i].set()
                await asyncio.sleep(LONG)
        except asyncio.CancelledError:
            results[i] = (op.status, op.context.cancel_reason, current_operation())
            return
        results[i] = "not cancelled"

    threads = [
        threading.Thread(target=asyncio.run, args=(operation(i),), daemon=True) for i in range(2)
    ]
    for t in threads:
        t.start()
    assert all(r.wait(LONG) for r in ready)
    canceller = threading.Thread(target=token.cancel_sync, daemon=True)
    canceller.start()
    canceller.join(LONG)
    for t in threads:
        t.join(LONG)
        assert not t.is_alive()
    assert results == [
        (OperationStatus.CANCELLED, CancellationReason.MANUAL, None),
        (OperationStatus.CANCELLED, CancellationReason.MANUAL, None),
    ]


# ====================================================================== registry on every backend


async def test_registry_operations_on_backend(backend: Any, registry: OperationRegistry) -> None:
    cancel_exc = backend.get_cancelled_exc_class()
    started = 0
    all_in = backend.create_event()
    outcomes: list[str] = []

    async def worker(i: int) -> None:
        nonlocal started
        try:
            async with Cancellable(name=f"worker-{i}", register_globally=True):
                started += 1
                if started == 3:
                    all_in.set()
                await backend.sleep(LONG)
        except cancel_exc:
            outcomes.append("cancelled")

    async with backend.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(worker, i)
        await all_in.wait()
        running = await registry.list_operations(status=OperationStatus.RUNNING)
        assert len(running) == 3
        assert await registry.cancel_all(status=OperationStatus.RUNNING) == 3
    assert outcomes == ["cancelled"] * 3
    assert registry.list_operations_sync() == []
    history = registry.get_history_sync()
    assert len(history) == 3
    assert all(c.status == OperationStatus.CANCELLED for c in history)
    stats = await registry.get_statistics()
    assert stats["active_operations"] == 0
    assert stats["history_size"] == 3
