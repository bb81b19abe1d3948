"""The anyio backend and :class:`AnyioBridge` (API.md §9.1, defects §14.7-8 fixed)."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import warnings
from typing import Any

import anyio
import anyio.abc
import pytest

from hother.cancelable.backends import get_backend
from hother.cancelable.backends.anyio_backend import AnyioBackend, AnyioQueue
from hother.cancelable.backends.base import CancelScope, TaskGroup
from hother.cancelable.utils import anyio_bridge
from hother.cancelable.utils.anyio_bridge import AnyioBridge, call_soon_threadsafe

LONG = 10.0


def guard(seconds: float = LONG) -> anyio.CancelScope:
    return anyio.CancelScope(deadline=anyio.current_time() + seconds)


# -- the backend returns native anyio objects ----------------------------------------------


@pytest.mark.modes("anyio", "trio", reason="anyio backend specifics")
async def test_native_objects_no_wrappers(backend: Any) -> None:
    assert isinstance(backend, AnyioBackend)
    scope = backend.create_cancel_scope(deadline=5.0, shield=True)
    assert isinstance(scope, anyio.CancelScope)  # the backend-specific subclass, no wrapper
    assert type(scope).__module__.startswith("anyio._backends.")
    assert isinstance(scope, CancelScope)
    assert (scope.deadline, scope.shield) == (5.0, True)
    group = backend.create_task_group()
    assert isinstance(group, anyio.abc.TaskGroup) and isinstance(group, TaskGroup)
    assert isinstance(backend.create_lock(), anyio.Lock)
    assert isinstance(backend.create_event(), anyio.Event)
    assert isinstance(backend.create_queue(3), AnyioQueue)


@pytest.mark.modes("anyio", "trio", reason="anyio backend specifics")
async def test_integer_deadline_is_converted(backend: Any) -> None:
    scope = backend.create_cancel_scope(deadline=7)
    assert scope.deadline == 7.0


@pytest.mark.modes("anyio", "trio", reason="anyio backend specifics")
async def test_dropped_queue_warns_nothing(backend: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        q = backend.create_queue(2)
        q.put_nowait(1)
        del q
        gc.collect()


@pytest.mark.modes("anyio", "trio", reason="anyio backend specifics")
async def test_queue_put_and_get_are_checkpoints(backend: Any) -> None:
    q = backend.create_queue(5)
    q.put_nowait(0)
    cancelled = anyio.get_cancelled_exc_class()
    with anyio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(cancelled):
            await q.put(1)  # room in the buffer, but anyio checkpoints first
        with pytest.raises(cancelled):
            await q.get()  # an item is there, but anyio checkpoints first
    assert q.qsize() == 1


# -- AnyioBridge ---------------------------------------------------------------------------


async def start_bridge(tg: anyio.abc.TaskGroup, bridge: AnyioBridge) -> None:
    """Launch ``bridge.start`` (0.1 style) and return once it runs (trio may reorder tasks)."""
    tg.start_soon(bridge.start)
    while not bridge.is_started:
        await anyio.sleep(0)


def test_bridge_singleton_is_thread_safe() -> None:
    AnyioBridge._instance = None
    barrier = threading.Barrier(8)
    seen: list[AnyioBridge] = []

    def worker() -> None:
        barrier.wait()
        seen.append(AnyioBridge.get_instance())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(seen) == 8 and len({id(b) for b in seen}) == 1


def test_bridge_validates_buffer_size() -> None:
    with pytest.raises(ValueError, match="buffer_size must be >= 1"):
        AnyioBridge(0)
    with pytest.raises(TypeError, match="buffer_size must be an int"):
        AnyioBridge("10")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="buffer_size must be an int"):
        AnyioBridge(True)
    assert AnyioBridge(5).buffer_size == 5


async def test_bridge_start_runs_callbacks_queued_before(run_mode: str) -> None:
    bridge = AnyioBridge.get_instance()
    ran: list[str] = []
    done = anyio.Event()

    def submit() -> None:  # a plain thread, before any loop is known: queued
        bridge.call_soon_threadsafe(lambda: ran.append("sync"))

        async def later() -> None:
            ran.append("async")
            done.set()

        bridge.call_soon_threadsafe(later)

    thread = threading.Thread(target=submit)
    thread.start()
    thread.join(LONG)
    assert bridge.pending_count() == 2 and ran == []
    assert not bridge.is_started
    with guard() as g:
        async with anyio.create_task_group() as tg:
            tg.start_soon(bridge.start)
            await done.wait()
            assert bridge.is_started
            tg.cancel_scope.cancel()
    assert not g.cancel_called
    assert ran == ["sync", "async"]
    assert not bridge.is_started  # reset when start() ends


async def test_bridge_wakes_an_idle_loop(run_mode: str) -> None:
    """§14.7: a callback from a thread runs at once, not at the next unrelated wake-up."""
    bridge = AnyioBridge.get_instance()
    done = anyio.Event()
    with guard() as g:
        async with anyio.create_task_group() as tg:
            await start_bridge(tg, bridge)
            thread = threading.Thread(target=bridge.call_soon_threadsafe, args=(done.set,))
            thread.start()
            await done.wait()  # no timer pending: only the bridge's wake-up can end this
            thread.join(LONG)
            tg.cancel_scope.cancel()
    assert not g.cancel_called


async def test_bridge_without_start_from_a_thread(run_mode: str) -> None:
    """§14.8: once the bridge saw the loop, plain threads need no started bridge."""
    bridge = AnyioBridge.get_instance()
    done = anyio.Event()
    bridge.note_executor()  # what the anyio backend does when used in a loop
    with guard() as g:
        thread = threading.Thread(target=bridge.call_soon_threadsafe, args=(done.set,))
        thread.start()
        await done.wait()
        thread.join(LONG)
    assert not g.cancel_called
    assert not bridge.is_started


async def test_bridge_on_the_loop_thread_needs_nothing(run_mode: str) -> None:
    done = anyio.Event()
    AnyioBridge.get_instance().call_soon_threadsafe(done.set)
    with guard() as g:
        await done.wait()
    assert not g.cancel_called


async def test_bridge_failing_callbacks_are_logged(
    run_mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    bridge = AnyioBridge.get_instance()
    done = anyio.Event()
    ran: list[int] = []

    def bad() -> None:
        raise ValueError("bridge boom")

    async def bad_async() -> None:
        raise ValueError("bridge async boom")

    def good() -> None:
        ran.append(1)
        done.set()

    with caplog.at_level(logging.ERROR, logger="hother.cancelable"):
        bridge.call_soon_threadsafe(bad)
        bridge.call_soon_threadsafe(bad_async)
        bridge.call_soon_threadsafe(42)  # type: ignore[arg-type]  # not callable: logged
        bridge.call_soon_threadsafe(good)
        with guard():
            await done.wait()
            for _ in range(3):
                await anyio.sleep(0)
    text = " ".join(
        r.getMessage() + str(r.exc_info[1] if r.exc_info else "") for r in caplog.records
    )
    assert "bridge boom" in text and "bridge async boom" in text and "not callable" in text
    assert ran == [1]


async def test_bridge_start_twice_returns_at_once(run_mode: str) -> None:
    bridge = AnyioBridge.get_instance()
    with guard() as g:
        async with anyio.create_task_group() as tg:
            await start_bridge(tg, bridge)
            assert bridge.is_started
            await bridge.start()  # already started: returns
            bridge.stop()  # ends the first start()
    assert not g.cancel_called
    assert not bridge.is_started
    bridge.stop()  # idempotent


async def test_bridge_stop_from_a_thread(run_mode: str) -> None:
    bridge = AnyioBridge.get_instance()
    with guard() as g:
        async with anyio.create_task_group() as tg:
            await start_bridge(tg, bridge)
            thread = threading.Thread(target=bridge.stop)
            thread.start()
        thread.join(LONG)
    assert not g.cancel_called
    assert not bridge.is_started


def test_bridge_queue_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    bridge = AnyioBridge(buffer_size=3)
    with caplog.at_level(logging.WARNING, logger="hother.cancelable"):
        for _ in range(5):
            bridge.call_soon_threadsafe(lambda: None)
    assert bridge.pending_count() == 3
    assert any("dropping" in r.getMessage() for r in caplog.records)


def test_bridge_forgets_a_closed_loop() -> None:
    bridge = AnyioBridge.get_instance()
    ran: list[str] = []

    async def first() -> None:
        bridge.note_executor()

    asyncio.run(first())  # the remembered loop is closed afterwards
    bridge.call_soon_threadsafe(lambda: ran.append("x"))
    assert bridge.pending_count() == 1  # queued, not sent to a dead loop

    async def second() -> None:
        done = asyncio.Event()
        bridge.call_soon_threadsafe(done.set)  # on the new loop: flushes the queue first
        await asyncio.wait_for(done.wait(), LONG)

    asyncio.run(second())
    assert ran == ["x"]


def test_bridge_forgets_a_finished_trio_run() -> None:
    import trio

    bridge = AnyioBridge.get_instance()

    async def grab() -> Any:
        bridge.note_executor()
        return trio.lowlevel.current_trio_token()

    token = trio.run(grab)  # run finished: run_sync_soon now raises RunFinishedError
    bridge.call_soon_threadsafe(lambda: None)
    assert bridge.pending_count() == 1  # kept for the next loop, not lost
    bridge.note_executor(token)  # flushing into the dead run fails: still kept
    assert bridge.pending_count() == 1


# -- module function -----------------------------------------------------------------------


async def test_module_call_soon_threadsafe_from_thread(run_mode: str, backend: Any) -> None:
    done = backend.create_event()  # the backend notes this loop
    with guard() as g:
        thread = threading.Thread(target=call_soon_threadsafe, args=(done.set,))
        thread.start()
        await done.wait()
        thread.join(LONG)
    assert not g.cancel_called


@pytest.mark.modes("asyncio", "uvloop", reason="routes to the asyncio backend's loop")
async def test_module_function_uses_the_asyncio_backend_loop(run_mode: str) -> None:
    backend = get_backend()  # detection inside the loop: the asyncio backend notes it
    done = asyncio.Event()
    assert not AnyioBridge.get_instance().is_started
    thread = threading.Thread(target=anyio_bridge.call_soon_threadsafe, args=(done.set,))
    thread.start()
    await asyncio.wait_for(done.wait(), LONG)
    thread.join(LONG)
    assert backend.name == "asyncio"
