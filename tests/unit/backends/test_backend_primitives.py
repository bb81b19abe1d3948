"""Every AsyncBackend primitive, in every run mode (asyncio, uvloop, anyio, trio).

The ``backend`` fixture gives the backend of the mode; the same test body must pass on all.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import threading
from collections.abc import Callable
from typing import Any

import pytest

from hother.cancelable.backends import base
from hother.cancelable.backends.base import (
    AsyncBackend,
    QueueClosed,
    QueueEmpty,
    QueueFull,
)

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")

#: generous upper bound for anything that should happen "at once"
LONG = 10.0


def guard(backend: AsyncBackend, seconds: float = LONG) -> base.CancelScope:
    """A scope that fails the test (instead of hanging it) when something never happens."""
    return backend.create_cancel_scope(deadline=backend.current_time() + seconds)


# -- time, sleep, cancellation class ------------------------------------------------------


async def test_sleep_and_current_time(backend: AsyncBackend, run_mode: str) -> None:
    t0 = backend.current_time()
    await backend.sleep(0)
    await backend.sleep(0.02)
    t1 = backend.current_time()
    assert t1 - t0 >= 0.02 * 0.9
    if run_mode == "trio":
        import trio

        assert abs(trio.current_time() - t1) < 1.0
    else:
        assert abs(asyncio.get_running_loop().time() - t1) < 1.0


async def test_cancelled_exc_class(backend: AsyncBackend, run_mode: str) -> None:
    exc_class = backend.get_cancelled_exc_class()
    if run_mode == "trio":
        import trio

        assert exc_class is trio.Cancelled
    else:
        assert exc_class is asyncio.CancelledError
    with backend.create_cancel_scope() as scope:
        scope.cancel()
        with pytest.raises(exc_class):
            await backend.sleep(1)


async def test_scope_is_a_virtual_cancel_scope(backend: AsyncBackend) -> None:
    scope = backend.create_cancel_scope()
    assert isinstance(scope, base.CancelScope)
    assert scope.deadline == math.inf
    assert scope.shield is False
    assert not scope.cancel_called and not scope.cancelled_caught


# -- lock ----------------------------------------------------------------------------------


async def test_lock_mutual_exclusion(backend: AsyncBackend) -> None:
    lock = backend.create_lock()
    assert isinstance(lock, base.Lock)
    inside = 0
    peak = 0
    order: list[int] = []

    async def worker(n: int) -> None:
        nonlocal inside, peak
        async with lock:
            inside += 1
            peak = max(peak, inside)
            order.append(n)
            await backend.sleep(0)
            await backend.sleep(0)
            inside -= 1

    async with backend.create_task_group() as tg:
        for n in range(5):
            tg.start_soon(worker, n)
    assert peak == 1
    assert sorted(order) == list(range(5))
    assert not lock.locked()


async def test_lock_acquire_release(backend: AsyncBackend) -> None:
    lock = backend.create_lock()
    await lock.acquire()
    assert lock.locked()
    lock.release()
    assert not lock.locked()
    with pytest.raises(RuntimeError):
        lock.release()


# -- event ---------------------------------------------------------------------------------


async def test_event_wakes_all_waiters(backend: AsyncBackend) -> None:
    event = backend.create_event()
    assert isinstance(event, base.Event)
    assert not event.is_set()
    woken: list[int] = []

    async def waiter(n: int) -> None:
        await event.wait()
        woken.append(n)

    with guard(backend):
        async with backend.create_task_group() as tg:
            for n in range(3):
                tg.start_soon(waiter, n)
            await backend.sleep(0)
            assert woken == []
            event.set()
    assert sorted(woken) == [0, 1, 2]
    assert event.is_set()
    await event.wait()  # already set: returns at once


# -- queue ---------------------------------------------------------------------------------


async def test_queue_bounded(backend: AsyncBackend) -> None:
    q = backend.create_queue(2)
    assert isinstance(q, base.Queue)
    assert (q.maxsize, q.qsize(), q.empty(), q.full()) == (2, 0, True, False)
    q.put_nowait("a")
    await q.put("b")
    assert (q.qsize(), q.empty(), q.full()) == (2, False, True)
    with pytest.raises(QueueFull):
        q.put_nowait("c")
    assert isinstance(QueueFull(), asyncio.QueueFull)  # catchable as asyncio's
    assert q.get_nowait() == "a"
    assert await q.get() == "b"
    with pytest.raises(QueueEmpty):
        q.get_nowait()


async def test_queue_bounded_put_waits_for_room(backend: AsyncBackend) -> None:
    q = backend.create_queue(1)
    done: list[str] = []

    async def producer() -> None:
        for item in "xyz":
            await q.put(item)
        done.append("producer")

    with guard(backend):
        async with backend.create_task_group() as tg:
            tg.start_soon(producer)
            received = [await q.get() for _ in range(3)]
    assert received == ["x", "y", "z"]
    assert done == ["producer"]


async def test_queue_unbounded(backend: AsyncBackend) -> None:
    q = backend.create_queue(math.inf)
    assert q.maxsize == math.inf
    for i in range(1000):
        q.put_nowait(i)
    assert q.qsize() == 1000 and not q.full()
    assert [q.get_nowait() for _ in range(1000)] == list(range(1000))
    assert backend.create_queue().maxsize == math.inf  # the default


async def test_queue_zero_buffer_is_a_rendezvous(backend: AsyncBackend) -> None:
    q = backend.create_queue(0)
    assert q.full() and q.empty()
    with pytest.raises(QueueFull):
        q.put_nowait(1)  # nobody is waiting to receive
    got: list[int] = []
    receiving = backend.create_event()

    async def consumer() -> None:
        receiving.set()
        got.append(await q.get())

    with guard(backend):
        async with backend.create_task_group() as tg:
            tg.start_soon(consumer)
            await receiving.wait()
            await backend.sleep(0)
            q.put_nowait(7)  # a receiver waits: handed over directly
    assert got == [7]

    putter_done: list[str] = []

    async def producer() -> None:
        await q.put(8)  # blocks until taken
        putter_done.append("put")

    with guard(backend):
        async with backend.create_task_group() as tg:
            tg.start_soon(producer)
            await backend.sleep(0)
            await backend.sleep(0)
            assert putter_done == []
            assert await q.get() == 8
    assert putter_done == ["put"]


async def test_queue_close_drains_then_ends(backend: AsyncBackend) -> None:
    q = backend.create_queue(5)
    for i in range(3):
        q.put_nowait(i)
    assert not q.closed
    q.close()
    q.close()  # idempotent
    assert q.closed
    with pytest.raises(QueueClosed):
        q.put_nowait(9)
    with pytest.raises(QueueClosed):
        await q.put(9)
    assert [item async for item in q] == [0, 1, 2]
    with pytest.raises(QueueClosed):
        q.get_nowait()
    with pytest.raises(QueueClosed):
        await q.get()


async def test_queue_close_wakes_blocked_getters_and_putters(backend: AsyncBackend) -> None:
    empty = backend.create_queue(1)
    full = backend.create_queue(0)
    outcomes: list[str] = []

    async def getter() -> None:
        try:
            await empty.get()
        except QueueClosed:
            outcomes.append("get: closed")

    async def putter() -> None:
        try:
            await full.put("lost")
        except QueueClosed:
            outcomes.append("put: closed")

    with guard(backend):
        async with backend.create_task_group() as tg:
            tg.start_soon(getter)
            tg.start_soon(putter)
            for _ in range(3):
                await backend.sleep(0)
            assert outcomes == []
            empty.close()
            full.close()
    assert sorted(outcomes) == ["get: closed", "put: closed"]
    with pytest.raises(QueueClosed):
        full.get_nowait()  # the blocked put's item was withdrawn


async def test_queue_async_iteration_with_producer(backend: AsyncBackend) -> None:
    q = backend.create_queue(2)

    async def producer() -> None:
        for i in range(10):
            await q.put(i)
        q.close()

    with guard(backend):
        async with backend.create_task_group() as tg:
            tg.start_soon(producer)
            items = [item async for item in q]
    assert items == list(range(10))


async def test_queue_cancelled_get_loses_no_item(backend: AsyncBackend) -> None:
    q = backend.create_queue(math.inf)
    with backend.create_cancel_scope() as scope:
        async with backend.create_task_group() as tg:

            async def cancel_soon() -> None:
                await backend.sleep(0)
                scope.cancel()

            tg.start_soon(cancel_soon)
            await q.get()
    assert scope.cancelled_caught
    q.put_nowait("kept")
    assert q.get_nowait() == "kept"


@pytest.mark.parametrize(
    ("size", "exc", "match"),
    [
        (-1, ValueError, "max_size must be >= 0"),
        (-math.inf, ValueError, "max_size must be >= 0"),
        (math.nan, ValueError, "NaN"),
        (1.5, TypeError, "int or math.inf"),
        ("3", TypeError, "int or math.inf"),
        (None, TypeError, "int or math.inf"),
        (True, TypeError, "int or math.inf"),
    ],
)
async def test_queue_bad_sizes(backend: AsyncBackend, size: Any, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        backend.create_queue(size)


# -- task group ----------------------------------------------------------------------------


async def test_task_group_start_soon_runs_children(backend: AsyncBackend) -> None:
    results: list[tuple[str, int]] = []

    async def child(name: str, n: int) -> None:
        await backend.sleep(0)
        results.append((name, n))

    async with backend.create_task_group() as tg:
        assert isinstance(tg, base.TaskGroup)
        for n in range(4):
            tg.start_soon(child, "c", n, name=f"child-{n}")
    assert sorted(results) == [("c", n) for n in range(4)]
    with pytest.raises(RuntimeError, match="not active"):
        tg.start_soon(child, "late", 0)


async def test_task_group_children_see_the_context(backend: AsyncBackend) -> None:
    seen: list[str] = []

    async def child() -> None:
        seen.append(request_id.get())

    token = request_id.set("req-42")
    try:
        async with backend.create_task_group() as tg:
            tg.start_soon(child)
    finally:
        request_id.reset(token)
    assert seen == ["req-42"]


async def test_task_group_start_returns_started_value(backend: AsyncBackend) -> None:
    events: list[str] = []

    async def server(port: int, *, task_status: base.TaskStatus[int]) -> None:
        events.append("starting")
        await backend.sleep(0)
        task_status.started(port + 1)
        events.append("started")
        await backend.sleep(0)
        events.append("finished")

    async with backend.create_task_group() as tg:
        value = await tg.start(server, 8000)
        assert value == 8001
        assert events[:1] == ["starting"]
    assert events == ["starting", "started", "finished"]


async def test_task_group_start_error_before_started_goes_to_caller(
    backend: AsyncBackend,
) -> None:
    sibling_done: list[str] = []

    async def broken(*, task_status: base.TaskStatus[None]) -> None:
        await backend.sleep(0)
        raise KeyError("early")

    async def sibling() -> None:
        await backend.sleep(0)
        await backend.sleep(0)
        sibling_done.append("ok")

    async with backend.create_task_group() as tg:
        tg.start_soon(sibling)
        with pytest.raises(KeyError, match="early"):
            await tg.start(broken)
    assert sibling_done == ["ok"]  # the group itself was not cancelled


async def test_task_group_start_without_started_is_an_error(backend: AsyncBackend) -> None:
    async def lazy(*, task_status: base.TaskStatus[None]) -> None:
        await backend.sleep(0)

    async with backend.create_task_group() as tg:
        with pytest.raises(RuntimeError, match=r"without calling task_status\.started"):
            await tg.start(lazy)


async def test_task_group_started_twice_is_an_error(backend: AsyncBackend) -> None:
    errors: list[str] = []

    async def twice(*, task_status: base.TaskStatus[int]) -> None:
        task_status.started(1)
        try:
            task_status.started(2)
        except RuntimeError as exc:
            errors.append(str(exc))

    async with backend.create_task_group() as tg:
        assert await tg.start(twice) == 1
    assert errors and "twice" in errors[0]


async def test_task_group_failure_cancels_siblings_and_host(backend: AsyncBackend) -> None:
    exc_class = backend.get_cancelled_exc_class()
    cancelled: list[str] = []

    async def sleeper(name: str) -> None:
        try:
            await backend.sleep(LONG)
        except exc_class:
            cancelled.append(name)
            raise

    async def failing() -> None:
        await backend.sleep(0)
        raise ValueError("child failed")

    with guard(backend), pytest.raises(ExceptionGroup) as info:
        async with backend.create_task_group() as tg:
            tg.start_soon(sleeper, "a")
            tg.start_soon(sleeper, "b")
            tg.start_soon(failing)
            try:
                await backend.sleep(LONG)
            except exc_class:
                cancelled.append("host")
                raise
    assert [type(e) for e in info.value.exceptions] == [ValueError]
    assert sorted(cancelled) == ["a", "b", "host"]
    assert tg.cancel_scope.cancel_called


async def test_task_group_collects_every_failure(backend: AsyncBackend) -> None:
    async def failing(exc: Exception) -> None:
        raise exc

    with pytest.raises(ExceptionGroup) as info:
        async with backend.create_task_group() as tg:
            tg.start_soon(failing, ValueError(1))
            tg.start_soon(failing, KeyError(2))
    assert sorted(type(e).__name__ for e in info.value.exceptions) == ["KeyError", "ValueError"]


async def test_task_group_host_error_is_in_the_group(backend: AsyncBackend) -> None:
    exc_class = backend.get_cancelled_exc_class()
    child_cancelled: list[bool] = []

    async def child() -> None:
        try:
            await backend.sleep(LONG)
        except exc_class:
            child_cancelled.append(True)
            raise

    with guard(backend), pytest.raises(ExceptionGroup) as info:
        async with backend.create_task_group() as tg:
            tg.start_soon(child)
            await backend.sleep(0)
            raise ZeroDivisionError("host")
    assert [type(e) for e in info.value.exceptions] == [ZeroDivisionError]
    assert child_cancelled == [True]


async def test_task_group_cancel_scope_cancels_everything_quietly(backend: AsyncBackend) -> None:
    async def forever() -> None:
        await backend.sleep(math.inf)

    with guard(backend):
        async with backend.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(forever)
            await backend.sleep(0)
            tg.cancel_scope.cancel()
            await backend.sleep(LONG)
    assert tg.cancel_scope.cancelled_caught


async def test_task_group_host_cancelled_by_outer_scope(backend: AsyncBackend) -> None:
    exc_class = backend.get_cancelled_exc_class()
    cancelled: list[str] = []

    async def child() -> None:
        try:
            await backend.sleep(LONG)
        except exc_class:
            cancelled.append("child")
            raise

    with guard(backend), backend.create_cancel_scope() as outer:
        async with backend.create_task_group() as tg:
            tg.start_soon(child)
            tg.start_soon(child)
            await backend.sleep(0)
            outer.cancel()
            await backend.sleep(LONG)
        pytest.fail("the outer cancellation must escape the task group")  # pragma: no cover
    assert outer.cancelled_caught
    assert cancelled == ["child", "child"]


async def test_task_group_outer_cancel_while_waiting_for_children(backend: AsyncBackend) -> None:
    exc_class = backend.get_cancelled_exc_class()
    cleanup: list[str] = []

    async def slow_cleanup() -> None:
        try:
            await backend.sleep(LONG)
        except exc_class:
            with backend.create_cancel_scope(shield=True):
                await backend.sleep(0.01)
            cleanup.append("done")
            raise

    with guard(backend), backend.create_cancel_scope() as outer:
        async with backend.create_task_group() as tg:
            tg.start_soon(slow_cleanup)
            await backend.sleep(0)
            outer.cancel()
            # the body ends normally; __aexit__ waits for the child's shielded cleanup
    assert outer.cancelled_caught
    assert cleanup == ["done"]


async def test_task_group_rejects_sync_functions(backend: AsyncBackend) -> None:
    def not_async() -> None:  # pragma: no cover - never called successfully
        pass

    async with backend.create_task_group() as tg:
        with pytest.raises(TypeError):
            tg.start_soon(not_async)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            tg.start_soon(42)  # type: ignore[arg-type]


async def test_task_group_cannot_be_entered_twice(backend: AsyncBackend) -> None:
    tg = backend.create_task_group()
    async with tg:
        pass
    with pytest.raises(RuntimeError):
        async with tg:
            pass  # pragma: no cover


# -- call_soon_threadsafe ------------------------------------------------------------------


async def test_call_soon_threadsafe_sync_callback_from_a_thread(
    backend: AsyncBackend, plain_thread: Any
) -> None:
    done = backend.create_event()  # also tells the backend which loop we are on
    loop_thread = threading.get_ident()
    ran_on: list[int] = []

    def callback() -> None:
        ran_on.append(threading.get_ident())
        done.set()

    with guard(backend) as scope:
        plain_thread.start(backend.call_soon_threadsafe, callback)
        await done.wait()  # nothing else would wake the loop: the call must
    assert not scope.cancel_called
    assert ran_on == [loop_thread]


async def test_call_soon_threadsafe_async_callback_from_a_thread(
    backend: AsyncBackend, plain_thread: Any
) -> None:
    done = backend.create_event()
    steps: list[str] = []

    async def callback() -> None:
        steps.append("started")
        await backend.sleep(0)
        steps.append("resumed")
        done.set()

    with guard(backend) as scope:
        plain_thread.start(backend.call_soon_threadsafe, callback)
        await done.wait()
    assert not scope.cancel_called
    assert steps == ["started", "resumed"]


async def test_call_soon_threadsafe_many_callbacks_in_order(
    backend: AsyncBackend, plain_thread: Any
) -> None:
    done = backend.create_event()
    seen: list[int] = []

    def make(i: int) -> Callable[[], None]:
        def callback() -> None:
            seen.append(i)
            if i == 49:
                done.set()

        return callback

    def submit() -> None:
        for i in range(50):
            backend.call_soon_threadsafe(make(i))

    with guard(backend):
        plain_thread.start(submit)
        await done.wait()
    assert seen == list(range(50))


async def test_call_soon_threadsafe_errors_are_logged_not_raised(
    backend: AsyncBackend, plain_thread: Any, caplog: pytest.LogCaptureFixture
) -> None:
    done = backend.create_event()

    def bad() -> None:
        raise RuntimeError("sync boom")

    async def bad_async() -> None:
        await backend.sleep(0)
        raise RuntimeError("async boom")

    async def good() -> None:
        await backend.sleep(0)
        await backend.sleep(0)
        done.set()

    def submit() -> None:
        backend.call_soon_threadsafe(bad)
        backend.call_soon_threadsafe(bad_async)
        backend.call_soon_threadsafe(good)

    with caplog.at_level(logging.ERROR, logger="hother.cancelable"), guard(backend):
        plain_thread.start(submit)
        await done.wait()
        for _ in range(3):
            await backend.sleep(0)
    messages = [r.getMessage() + str(r.exc_info[1] if r.exc_info else "") for r in caplog.records]
    assert any("sync boom" in m for m in messages)
    assert any("async boom" in m for m in messages)


async def test_call_soon_threadsafe_from_the_loop_thread(backend: AsyncBackend) -> None:
    done = backend.create_event()
    backend.call_soon_threadsafe(done.set)
    with guard(backend):
        await done.wait()


async def test_call_soon_threadsafe_rejects_non_callables(backend: AsyncBackend) -> None:
    with pytest.raises(TypeError, match="callback must be callable"):
        backend.call_soon_threadsafe(42)  # type: ignore[arg-type]


# -- run_sync_in_thread --------------------------------------------------------------------


async def test_run_sync_in_thread_result_args_and_thread(backend: AsyncBackend) -> None:
    loop_thread = threading.get_ident()

    def work(a: int, b: int, *, scale: int) -> tuple[int, int]:
        return (a + b) * scale, threading.get_ident()

    value, thread_id = await backend.run_sync_in_thread(work, 1, 2, scale=10)
    assert value == 30
    assert thread_id != loop_thread


async def test_run_sync_in_thread_sees_context_vars(backend: AsyncBackend) -> None:
    token = request_id.set("ctx-in-thread")
    try:
        seen = await backend.run_sync_in_thread(request_id.get)
    finally:
        request_id.reset(token)
    assert seen == "ctx-in-thread"

    def set_in_thread() -> str:
        request_id.set("changed-in-thread")
        return request_id.get()

    assert await backend.run_sync_in_thread(set_in_thread) == "changed-in-thread"
    assert request_id.get() == "unset"  # the thread worked on a copy


async def test_run_sync_in_thread_propagates_exceptions(backend: AsyncBackend) -> None:
    def fail() -> None:
        raise LookupError("from thread")

    with pytest.raises(LookupError, match="from thread"):
        await backend.run_sync_in_thread(fail)


async def test_run_sync_in_thread_cancel_abandons_the_thread(backend: AsyncBackend) -> None:
    release = threading.Event()
    scope = backend.create_cancel_scope()

    def blocking() -> str:
        backend.call_soon_threadsafe(scope.cancel)  # cancel the waiting caller ...
        release.wait(LONG)  # ... while this thread is still busy
        return "late"

    try:
        with guard(backend) as outer, scope:
            await backend.run_sync_in_thread(blocking)
        assert scope.cancelled_caught
        assert not outer.cancel_called
        assert not release.is_set()  # we returned while the thread still blocked
    finally:
        release.set()


async def test_run_sync_in_thread_rejects_non_callables(backend: AsyncBackend) -> None:
    with pytest.raises(TypeError, match="func must be callable"):
        await backend.run_sync_in_thread("nope")  # type: ignore[arg-type]
