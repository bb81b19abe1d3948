"""Asyncio-backend specifics: the C scope returned as is, AsyncioTaskGroup, AsyncioQueue,
loop capture for ``call_soon_threadsafe``."""

from __future__ import annotations

import asyncio
import math
import sys
import threading
from typing import Any

import pytest

from hother.cancelable import _engine
from hother.cancelable.backends import get_backend
from hother.cancelable.backends.asyncio_backend import (
    AsyncioBackend,
    AsyncioQueue,
    AsyncioTaskGroup,
)
from hother.cancelable.backends.base import CancelScope, Queue, TaskGroup

pytestmark = pytest.mark.modes("asyncio", "uvloop", reason="asyncio backend specifics")

LONG = 10.0


def now() -> float:
    return asyncio.get_running_loop().time()


async def test_native_objects_no_wrappers(backend: Any) -> None:
    assert isinstance(backend, AsyncioBackend)
    scope: Any = backend.create_cancel_scope(deadline=5.0, shield=True)
    assert type(scope) is _engine.CancelScope
    assert isinstance(scope, CancelScope)
    assert (scope.deadline, scope.shield) == (5.0, True)
    lock: Any = backend.create_lock()
    event: Any = backend.create_event()
    assert type(lock) is asyncio.Lock
    assert type(event) is asyncio.Event
    group = backend.create_task_group()
    assert isinstance(group, AsyncioTaskGroup) and isinstance(group, TaskGroup)
    assert isinstance(backend.create_queue(1), AsyncioQueue)
    assert isinstance(backend.create_queue(1), Queue)
    assert backend.get_cancelled_exc_class() is asyncio.CancelledError


async def test_deadline_reached_tells_timeouts_from_cancels(backend: Any) -> None:
    with backend.create_cancel_scope(deadline=now() + 0.01) as timed:
        await asyncio.sleep(LONG)
    with backend.create_cancel_scope() as manual:
        manual.cancel()
        await asyncio.sleep(LONG)
    assert timed.cancelled_caught and timed.deadline_reached
    assert manual.cancelled_caught and not manual.deadline_reached


# -- AsyncioTaskGroup ----------------------------------------------------------------------


async def test_children_run_inside_the_group_scope(backend: Any) -> None:
    seen: list[Any] = []

    async def child() -> None:
        seen.append(_engine.current_scope())

    async with backend.create_task_group() as tg:
        tg.start_soon(child)
    assert seen == [tg.cancel_scope]


async def test_child_base_exception_makes_a_base_exception_group(backend: Any) -> None:
    class Stop(BaseException):
        pass

    async def child() -> None:
        raise Stop

    with pytest.raises(BaseExceptionGroup) as info:
        async with backend.create_task_group() as tg:
            tg.start_soon(child)
    assert not isinstance(info.value, ExceptionGroup)
    assert [type(e) for e in info.value.exceptions] == [Stop]


async def test_start_caller_cancelled_cancels_the_child(backend: Any) -> None:
    child_cancelled = asyncio.Event()

    async def never_ready(*, task_status: Any) -> None:
        try:
            await asyncio.sleep(LONG)
        except asyncio.CancelledError:
            child_cancelled.set()
            raise

    async with backend.create_task_group() as tg:
        with backend.create_cancel_scope() as scope:
            scope.deadline = now() + 0.01
            await tg.start(never_ready)
        assert scope.cancelled_caught
        assert child_cancelled.is_set()


async def test_start_child_cancelled_before_started(backend: Any) -> None:
    async def self_cancelling(*, task_status: Any) -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(0)

    async with backend.create_task_group() as tg:
        with pytest.raises(RuntimeError, match="cancelled before calling"):
            await tg.start(self_cancelling)


async def test_start_with_name_and_children_started_from_children(backend: Any) -> None:
    names: list[str] = []

    async def grandchild() -> None:
        task = asyncio.current_task()
        assert task is not None
        names.append(task.get_name())

    async def child(tg: AsyncioTaskGroup, *, task_status: Any) -> None:
        task_status.started()
        await asyncio.sleep(0)
        tg.start_soon(grandchild, name="grandchild")  # the host is already in __aexit__

    async with backend.create_task_group() as tg:
        await tg.start(child, tg, name="child")
    assert names == ["grandchild"]


async def test_no_spinning_while_children_unwind(backend: Any, run_mode: str) -> None:
    """After a cancel, the host waits for slow (shielded) clean-ups without busy looping."""
    loop = asyncio.get_running_loop()
    waits = 0
    tg = backend.create_task_group()
    original = loop.create_future

    def counting() -> asyncio.Future[Any]:
        nonlocal waits
        waits += 1
        return original()

    async def slow_cleanup() -> None:
        try:
            await asyncio.sleep(LONG)
        finally:
            with backend.create_cancel_scope(shield=True):
                await asyncio.sleep(0.05)

    async with tg:
        tg.start_soon(slow_cleanup)
        await asyncio.sleep(0)
        tg.cancel_scope.cancel()
        if run_mode == "asyncio":  # uvloop's Loop attributes are read-only
            loop.create_future = counting  # type: ignore[method-assign]
    if run_mode == "asyncio":
        del loop.create_future
        assert waits <= 3


async def test_host_cancel_while_waiting_is_reraised(backend: Any) -> None:
    """An outer scope cancelled while the group waits: children cancelled, outer catches."""
    with backend.create_cancel_scope() as outer:
        async with backend.create_task_group() as tg:
            tg.start_soon(asyncio.sleep, LONG)
            outer.deadline = now() + 0.01
    assert outer.cancelled_caught
    assert not tg.cancel_scope.cancelled_caught


async def test_failure_with_outer_cancel_keeps_the_errors(backend: Any) -> None:
    async def failing() -> None:
        raise ValueError("child")

    seen: list[set[type[BaseException]]] = []
    with backend.create_cancel_scope() as outer:
        try:
            async with backend.create_task_group() as tg:
                tg.start_soon(failing)
                outer.cancel()
                await asyncio.sleep(LONG)
        except BaseExceptionGroup as group:
            # trio semantics: the cancellation stays in the group with the child's error
            seen.append({type(e) for e in group.exceptions})
        await asyncio.sleep(LONG)  # level-triggered: the outer cancel is raised here
    assert seen == [{ValueError, asyncio.CancelledError}]
    assert outer.cancelled_caught


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks exist from Python 3.12")
async def test_eager_task_factory_is_not_eager_for_children(backend: Any) -> None:
    loop = asyncio.get_running_loop()
    previous = loop.get_task_factory()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
    try:
        seen: list[Any] = []

        async def child() -> None:
            seen.append(_engine.current_scope())

        async with backend.create_task_group() as tg:
            tg.start_soon(child)
        assert seen == [tg.cancel_scope]
    finally:
        loop.set_task_factory(previous)


async def test_task_group_repr_and_exit_without_enter(backend: Any) -> None:
    tg = backend.create_task_group()
    assert "new" in repr(tg)
    with pytest.raises(RuntimeError, match="not active"):
        await tg.__aexit__(None, None, None)
    async with tg:
        assert "active" in repr(tg)
    assert "exited" in repr(tg)


# -- AsyncioQueue --------------------------------------------------------------------------


async def test_cancelled_put_withdraws_its_item(backend: Any) -> None:
    q = backend.create_queue(0)
    with backend.create_cancel_scope(deadline=now() + 0.01) as scope:
        await q.put("phantom")
    assert scope.cancelled_caught
    with pytest.raises(asyncio.QueueEmpty):
        q.get_nowait()


async def test_woken_getter_cancelled_passes_the_item_on(backend: Any) -> None:
    q: AsyncioQueue[int] = backend.create_queue(math.inf)
    loop = asyncio.get_running_loop()
    first = loop.create_task(q.get())
    second = loop.create_task(q.get())
    await asyncio.sleep(0)
    q.put_nowait(1)  # wakes `first` ...
    first.cancel()  # ... which is cancelled before it runs
    assert await asyncio.wait_for(second, LONG) == 1
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_zero_buffer_handoff_to_waiting_getter_only(backend: Any) -> None:
    q: AsyncioQueue[int] = backend.create_queue(0)
    loop = asyncio.get_running_loop()
    getter = loop.create_task(q.get())
    await asyncio.sleep(0)
    q.put_nowait(1)
    with pytest.raises(asyncio.QueueFull):
        q.put_nowait(2)  # the only getter is already served
    assert await getter == 1
    assert "AsyncioQueue" in repr(q)


# -- call_soon_threadsafe loop capture -----------------------------------------------------


def test_call_soon_threadsafe_without_a_known_loop() -> None:
    backend = AsyncioBackend()
    with pytest.raises(RuntimeError, match="no running event loop is known"):
        backend.call_soon_threadsafe(lambda: None)

    async def use() -> None:
        backend.create_event()

    asyncio.run(use())  # the remembered loop is closed afterwards
    assert backend.remembered_loop is None
    with pytest.raises(RuntimeError, match="no running event loop is known"):
        backend.call_soon_threadsafe(lambda: None)


async def test_get_backend_in_the_loop_remembers_it(backend: Any) -> None:
    assert isinstance(backend, AsyncioBackend)
    assert get_backend() is backend
    assert backend.remembered_loop is asyncio.get_running_loop()
    done = asyncio.Event()
    thread = threading.Thread(target=backend.call_soon_threadsafe, args=(done.set,))
    thread.start()
    await asyncio.wait_for(done.wait(), LONG)
    thread.join(LONG)
