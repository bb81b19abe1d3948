"""anyio-backend edge cases (story 5.3), on asyncio (``anyio`` mode) and trio (``trio`` mode):
deadline handling, task-group cleanup, ``call_soon_threadsafe`` with coroutines through the
bridge, detection edge cases (forced backend, trio in a thread, closed runs), and switching
run modes in one process.

Deadline tests run on the virtual clock (exact instants, no wall-clock assertions).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import threading
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from hother.cancelable import _engine
from hother.cancelable.backends import (
    BackendDetectionError,
    detect_backend,
    get_backend,
    use_backend,
)
from hother.cancelable.backends.anyio_backend import AnyioBackend
from hother.cancelable.pytest_plugin import run_in_mode
from hother.cancelable.utils.anyio_bridge import AnyioBridge

pytestmark = pytest.mark.modes("anyio", "trio", reason="anyio backend specifics")

LONG = 10.0  # generous upper bound for waits that should end at once


def in_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a plain thread, join it, return its result (re-raising its error)."""
    result: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(LONG)
    assert not thread.is_alive(), "helper thread hangs"
    if errors:
        raise errors[0]
    return result[0]


# -- deadline handling ---------------------------------------------------------------------


@pytest.mark.virtual_clock
async def test_deadline_fires_at_its_exact_instant(backend: Any) -> None:
    start = anyio.current_time()
    with backend.create_cancel_scope(deadline=start + 5) as scope:
        await anyio.sleep(3600)
    assert anyio.current_time() == start + 5
    assert scope.cancelled_caught


@pytest.mark.virtual_clock
async def test_nested_deadlines_earliest_wins(backend: Any) -> None:
    start = anyio.current_time()
    with backend.create_cancel_scope(deadline=start + 9) as outer:
        with backend.create_cancel_scope(deadline=start + 4) as inner:
            await anyio.sleep(3600)
        assert anyio.current_time() == start + 4
        await anyio.sleep(3600)
    assert anyio.current_time() == start + 9
    assert inner.cancelled_caught and outer.cancelled_caught


@pytest.mark.virtual_clock
async def test_deadline_moved_later_and_removed(backend: Any) -> None:
    start = anyio.current_time()
    with backend.create_cancel_scope(deadline=start + 1) as scope:
        scope.deadline = start + 6
        await anyio.sleep(3600)
    assert anyio.current_time() == start + 6
    with backend.create_cancel_scope(deadline=anyio.current_time() + 1) as removed:
        removed.deadline = math.inf
        await anyio.sleep(5)
    assert not removed.cancel_called


async def test_minus_infinity_deadline_is_already_expired(backend: Any) -> None:
    with backend.create_cancel_scope(deadline=-math.inf) as scope:
        await anyio.sleep(LONG)
    assert scope.cancelled_caught


async def test_deadline_validation_names_the_argument(backend: Any) -> None:
    with pytest.raises(ValueError, match="deadline"):
        backend.create_cancel_scope(deadline=math.nan)
    with pytest.raises(TypeError, match="deadline"):
        backend.create_cancel_scope(deadline="soon")
    with pytest.raises(TypeError, match="shield"):
        backend.create_cancel_scope(shield=1)


async def test_the_engine_is_not_involved(backend: Any, run_mode: str) -> None:
    """The anyio backend never enters the C scope, even on asyncio (anyio mode)."""
    with backend.create_cancel_scope(deadline=anyio.current_time() + LONG):
        if run_mode == "anyio":
            assert _engine.current_scope() is None
            assert _engine.loop_stats()["active_scopes"] == 0


# -- task-group cleanup --------------------------------------------------------------------


async def test_every_finally_ran_before_the_group_exits(backend: Any) -> None:
    log: list[str] = []

    async def child(name: str) -> None:
        try:
            await anyio.sleep(LONG)
        finally:
            log.append(f"finally {name}")

    async def failing() -> None:
        await anyio.sleep(0)
        raise ValueError("boom")

    with pytest.raises(ExceptionGroup) as info:
        async with backend.create_task_group() as tg:
            tg.start_soon(child, "a")
            tg.start_soon(child, "b")
            tg.start_soon(failing)
    log.append("exited")
    assert sorted(log[:2]) == ["finally a", "finally b"] and log[2:] == ["exited"]
    assert [type(e) for e in info.value.exceptions] == [ValueError]


async def test_start_soon_after_exit_is_refused(backend: Any) -> None:
    async with backend.create_task_group() as tg:
        pass
    with pytest.raises(RuntimeError):
        tg.start_soon(anyio.sleep, 0)


async def test_grandchildren_are_cancelled_with_the_outer_group(backend: Any) -> None:
    cancelled: list[str] = []
    running = anyio.Event()
    exc_class = backend.get_cancelled_exc_class()

    async def grandchild(name: str) -> None:
        try:
            running.set()
            await anyio.sleep(LONG)
        except exc_class:
            cancelled.append(name)
            raise

    async def child() -> None:
        async with backend.create_task_group() as inner:
            inner.start_soon(grandchild, "g1")
            inner.start_soon(grandchild, "g2")

    async with backend.create_task_group() as outer:
        outer.start_soon(child)
        await running.wait()
        outer.cancel_scope.cancel()
    assert sorted(cancelled) == ["g1", "g2"]


async def test_child_of_a_cancelled_group_runs_until_its_first_checkpoint(backend: Any) -> None:
    log: list[str] = []
    exc_class = backend.get_cancelled_exc_class()

    async def child() -> None:
        log.append("started")
        try:
            await anyio.sleep(LONG)
        except exc_class:
            log.append("cancelled at the first checkpoint")
            raise

    async with backend.create_task_group() as tg:
        tg.cancel_scope.cancel()
        tg.start_soon(child)
    assert log == ["started", "cancelled at the first checkpoint"]


async def test_group_failure_and_outer_deadline_together(backend: Any) -> None:
    async def failing() -> None:
        await anyio.sleep(0)
        raise KeyError("child")

    with backend.create_cancel_scope(deadline=anyio.current_time() + LONG) as guard:
        with pytest.raises(ExceptionGroup) as info:
            async with backend.create_task_group() as tg:
                tg.start_soon(failing)
                await anyio.sleep(LONG)
    assert [type(e) for e in info.value.exceptions] == [KeyError]
    assert not guard.cancel_called


# -- call_soon_threadsafe with coroutines (AnyioBridge) ------------------------------------


async def test_async_callback_from_a_thread_runs_in_the_run(backend: Any) -> None:
    backend.note_loop()
    seen: dict[str, Any] = {}
    done = anyio.Event()

    async def callback() -> None:
        seen["thread"] = threading.get_ident()
        await anyio.sleep(0)  # a real coroutine: it may await
        done.set()

    in_thread(lambda: backend.call_soon_threadsafe(callback))
    with anyio.fail_after(LONG):
        await done.wait()
    assert seen["thread"] == threading.get_ident()


async def test_async_callback_scheduled_inside_a_cancelled_scope_is_not_cancelled(
    backend: Any,
) -> None:
    finished = anyio.Event()

    async def callback() -> None:
        await anyio.sleep(0)
        await anyio.sleep(0)
        finished.set()

    with backend.create_cancel_scope() as scope:
        scope.cancel()
        backend.call_soon_threadsafe(callback)
        await anyio.sleep(LONG)
    assert scope.cancelled_caught
    with anyio.fail_after(LONG):
        await finished.wait()


async def test_async_callback_survives_garbage_collection(backend: Any) -> None:
    gate = anyio.Event()
    finished = anyio.Event()

    async def callback() -> None:
        await gate.wait()
        finished.set()

    backend.call_soon_threadsafe(callback)
    for _ in range(3):
        await anyio.sleep(0)
    gc.collect()
    gate.set()
    with anyio.fail_after(LONG):
        await finished.wait()


async def test_failing_async_callback_is_logged_and_the_run_goes_on(
    backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    backend.note_loop()
    done = anyio.Event()

    async def failing() -> None:
        await anyio.sleep(0)
        raise LookupError("async callback failure")

    with caplog.at_level(logging.ERROR):
        in_thread(lambda: backend.call_soon_threadsafe(failing))
        backend.call_soon_threadsafe(done.set)
        with anyio.fail_after(LONG):
            await done.wait()
            while not any(r.exc_info for r in caplog.records):
                await anyio.sleep(0)
    errors = [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], LookupError)]
    assert len(errors) == 1


async def test_callbacks_from_several_threads_all_arrive(backend: Any) -> None:
    backend.note_loop()
    arrived: list[int] = []
    done = anyio.Event()
    total = 4 * 25

    async def record(value: int) -> None:
        arrived.append(value)
        if len(arrived) == total:
            done.set()

    def submit(base: int) -> None:
        for i in range(25):
            backend.call_soon_threadsafe(lambda v=base + i: record(v))

    threads = [threading.Thread(target=submit, args=(100 * n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(LONG)
    with anyio.fail_after(LONG):
        await done.wait()
    assert sorted(arrived) == sorted(100 * n + i for n in range(4) for i in range(25))


# -- detection edge cases ------------------------------------------------------------------


async def test_mode_backend_and_cancel_class(backend: Any, run_mode: str) -> None:
    assert isinstance(backend, AnyioBackend) and detect_backend() == "anyio"
    if run_mode == "trio":
        import trio

        assert backend.get_cancelled_exc_class() is trio.Cancelled
        with pytest.raises(BackendDetectionError, match="only the 'anyio' backend"):
            with use_backend("asyncio"):
                detect_backend()
    else:
        assert backend.get_cancelled_exc_class() is asyncio.CancelledError
        with use_backend("asyncio"):  # on asyncio the native backend can be chosen back
            assert get_backend().name == "asyncio"
        assert get_backend().name == "anyio"


def test_trio_in_a_thread_and_asyncio_here() -> None:
    import trio

    started = threading.Event()
    release = threading.Event()
    seen: dict[str, Any] = {}

    async def trio_side() -> None:
        seen["trio"] = detect_backend()
        started.set()
        await trio.to_thread.run_sync(release.wait, LONG)
        seen["trio-after"] = detect_backend()

    thread = threading.Thread(target=trio.run, args=(trio_side,))
    thread.start()
    try:
        assert started.wait(LONG)

        async def asyncio_side() -> str:
            return detect_backend()

        seen["asyncio"] = asyncio.run(asyncio_side())
    finally:
        release.set()
        thread.join(LONG)
    assert seen == {"trio": "anyio", "asyncio": "asyncio", "trio-after": "anyio"}


def test_bridge_after_a_finished_trio_run_targets_the_next_run() -> None:
    import trio

    bridge = AnyioBridge.get_instance()

    async def note() -> None:
        get_backend()  # detection notes this run

    trio.run(note)  # finished: its token is dead
    ran_in: list[Any] = []
    in_thread(
        lambda: bridge.call_soon_threadsafe(lambda: ran_in.append(asyncio.get_running_loop()))
    )

    async def next_run() -> None:
        with use_backend("anyio"):
            get_backend().create_event()  # notes the loop: the queued callback is flushed
            with anyio.fail_after(LONG):
                while not ran_in:
                    await anyio.sleep(0)

    loops: list[Any] = []

    async def recorded() -> None:
        loops.append(asyncio.get_running_loop())
        await next_run()

    asyncio.run(recorded())
    assert ran_in == loops


# -- switching run modes in one process ----------------------------------------------------


def test_plain_thread_callbacks_follow_the_current_run() -> None:
    """anyio mode, trio, anyio again: each run receives the callbacks sent during it."""

    async def probe() -> tuple[str, int, int]:
        backend = get_backend()
        backend.create_event()  # note this run for plain threads
        here = threading.get_ident()
        got: list[int] = []
        done = anyio.Event()

        async def callback() -> None:
            got.append(threading.get_ident())
            done.set()

        in_thread(lambda: backend.call_soon_threadsafe(callback))
        with anyio.fail_after(LONG):
            await done.wait()
        return backend.name, got[0], here

    for mode in ("anyio", "trio", "anyio", "trio"):
        name, ran_on, loop_thread = run_in_mode(mode, probe)
        assert name == "anyio" and ran_on == loop_thread, mode


def test_anyio_scopes_work_in_every_mode_in_sequence() -> None:
    async def probe() -> tuple[str, bool]:
        with use_backend("anyio"):
            backend = get_backend()
            with backend.create_cancel_scope(deadline=backend.current_time() - 1) as scope:
                await backend.sleep(LONG)
            return backend.name, scope.cancelled_caught

    for mode in ("asyncio", "trio", "uvloop", "anyio", "trio"):
        assert run_in_mode(mode, probe) == ("anyio", True), mode
