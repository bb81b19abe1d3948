"""utils.context_bridge.ContextBridge (API §9.2, §14.23), on asyncio and trio."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import anyio
import pytest

from hother.cancelable.utils.context_bridge import ContextBridge

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")
other: contextvars.ContextVar[int] = contextvars.ContextVar("other", default=0)


@pytest.fixture
def single_worker() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        yield pool
    finally:
        pool.shutdown(wait=True)


def test_copy_context_snapshot() -> None:
    ctx = contextvars.copy_context()

    def body() -> None:
        request_id.set("r1")
        snap = ContextBridge.copy_context()
        assert snap[request_id] == "r1"
        request_id.set("r2")
        assert snap[request_id] == "r1"

    ctx.run(body)


def test_restore_context_sets_values() -> None:
    def body() -> None:
        ContextBridge.restore_context({request_id: "restored", other: 7})
        assert request_id.get() == "restored"
        assert other.get() == 7

    contextvars.copy_context().run(body)
    assert request_id.get() == "unset"


def test_restore_context_bad_input() -> None:
    with pytest.raises(TypeError, match="context_dict"):
        ContextBridge.restore_context([(request_id, "x")])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="context_dict"):
        ContextBridge.restore_context({"request_id": "x"})  # type: ignore[dict-item]
    assert request_id.get() == "unset"


async def test_runs_in_worker_thread_with_callers_context() -> None:
    request_id.set("req-42")
    caller = threading.get_ident()

    def work(a: int, b: int, *, scale: int) -> tuple[str, int, int]:
        return request_id.get(), (a + b) * scale, threading.get_ident()

    value, total, ident = await ContextBridge.run_in_thread_with_context(work, 1, 2, scale=10)
    assert value == "req-42"
    assert total == 30
    assert ident != caller


async def test_changes_in_thread_do_not_leak_back() -> None:
    request_id.set("caller")

    def work() -> str:
        request_id.set("thread")
        return request_id.get()

    assert await ContextBridge.run_in_thread_with_context(work) == "thread"
    assert request_id.get() == "caller"


async def test_no_leak_into_pooled_thread(single_worker: ThreadPoolExecutor) -> None:
    def set_it() -> int:
        request_id.set("leaked?")
        other.set(99)
        return threading.get_ident()

    def read_it() -> tuple[str, int, int]:
        return request_id.get(), other.get(), threading.get_ident()

    t1 = await ContextBridge.run_in_thread_with_context(set_it, executor=single_worker)
    value, number, t2 = await ContextBridge.run_in_thread_with_context(
        read_it, executor=single_worker
    )
    assert t1 == t2  # the same pooled thread served both calls
    assert (value, number) == ("unset", 0)
    # The pooled thread's own context is untouched too.
    assert single_worker.submit(read_it).result()[:2] == ("unset", 0)


async def test_exception_propagates() -> None:
    def boom() -> None:
        raise KeyError("nope")

    with pytest.raises(KeyError, match="nope"):
        await ContextBridge.run_in_thread_with_context(boom)


async def test_explicit_executor_exception_propagates(single_worker: ThreadPoolExecutor) -> None:
    def boom() -> None:
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        await ContextBridge.run_in_thread_with_context(boom, executor=single_worker)


async def _cancel_once_started(blocking_started: threading.Event, scope: anyio.CancelScope) -> None:
    while not blocking_started.is_set():
        await anyio.sleep(0.005)
    scope.cancel()


async def test_cancellation_releases_the_caller() -> None:
    """§14.23: a cancelled await ends promptly; the thread finishes on its own."""
    release = threading.Event()
    started = threading.Event()
    finished = threading.Event()

    def blocking() -> str:
        started.set()
        release.wait(10)
        finished.set()
        return "done"

    scope = anyio.CancelScope()
    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(_cancel_once_started, started, scope)
                with scope:
                    await ContextBridge.run_in_thread_with_context(blocking)
        assert scope.cancelled_caught
        assert not finished.is_set()  # the caller did not wait for the thread
    finally:
        release.set()
    await anyio.to_thread.run_sync(finished.wait, 10)
    assert finished.is_set()


async def test_cancellation_with_executor(single_worker: ThreadPoolExecutor) -> None:
    release = threading.Event()
    started = threading.Event()

    def blocking() -> None:
        started.set()
        release.wait(10)

    scope = anyio.CancelScope()
    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(_cancel_once_started, started, scope)
                with scope:
                    await ContextBridge.run_in_thread_with_context(blocking, executor=single_worker)
        assert scope.cancelled_caught
    finally:
        release.set()


async def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="func"):
        await ContextBridge.run_in_thread_with_context(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="executor"):
        await ContextBridge.run_in_thread_with_context(print, executor="pool")  # type: ignore[arg-type]
