"""Asyncio-backend edge cases (story 5.3): deadline handling of the C scope, task-group
cleanup, ``call_soon_threadsafe`` with coroutines, detection with several loops, closed
loops or none, the override, and switching run modes in one process.

Deadline tests run on the virtual clock (exact instants, no wall-clock assertions).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import threading
import weakref
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from hother.cancelable import _engine
from hother.cancelable.backends import (
    NoAsyncContextError,
    detect_backend,
    get_backend,
    use_backend,
)
from hother.cancelable.backends.asyncio_backend import AsyncioBackend, AsyncioTaskGroup
from hother.cancelable.pytest_plugin import run_in_mode

pytestmark = pytest.mark.modes("asyncio", "uvloop", reason="asyncio backend specifics")

LONG = 10.0  # generous upper bound for waits that should end at once


def now() -> float:
    return asyncio.get_running_loop().time()


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


def run_loop_in_thread(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """``asyncio.run(main())`` in a plain thread; returns its result."""
    return in_thread(lambda: asyncio.run(main()))


# -- deadline handling (C scope) -----------------------------------------------------------


@pytest.mark.virtual_clock
async def test_deadline_fires_at_its_exact_instant(backend: Any) -> None:
    start = now()
    with backend.create_cancel_scope(deadline=start + 5) as scope:
        await asyncio.sleep(3600)
    assert now() == start + 5
    assert scope.cancelled_caught and scope.deadline_reached


@pytest.mark.virtual_clock
async def test_many_tasks_same_deadline_one_timer(backend: Any) -> None:
    deadline = now() + 5
    caught: list[bool] = []
    entered = 0
    all_in = asyncio.Event()

    async def worker() -> None:
        nonlocal entered
        with backend.create_cancel_scope(deadline=deadline) as scope:
            entered += 1
            if entered == 50:
                all_in.set()
            await asyncio.sleep(3600)
        caught.append(scope.cancelled_caught)

    async with backend.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(worker)
        await all_in.wait()
        stats = _engine.loop_stats()
        assert stats["deadlines"] == 50
        assert stats["armed_timers"] == 1 and stats["timer_when"] == deadline
    assert caught == [True] * 50
    assert now() == deadline


@pytest.mark.virtual_clock
async def test_earlier_deadline_rearms_later_one_does_not(backend: Any) -> None:
    t0 = now()
    with backend.create_cancel_scope(deadline=t0 + 10):
        assert _engine.loop_stats()["timer_when"] == t0 + 10
        with backend.create_cancel_scope(deadline=t0 + 20):
            assert _engine.loop_stats()["timer_when"] == t0 + 10  # later: no re-arm
            with backend.create_cancel_scope(deadline=t0 + 5) as inner:
                assert _engine.loop_stats()["timer_when"] == t0 + 5  # earlier: re-armed
                await asyncio.sleep(3600)
            assert inner.cancelled_caught and now() == t0 + 5
        # the timer fired early and re-armed for the next live deadline
    assert _engine.loop_stats()["deadlines"] == 0


@pytest.mark.virtual_clock
async def test_sequential_scopes_with_one_timeout_arm_one_timer(backend: Any) -> None:
    loop = asyncio.get_running_loop()
    calls = 0
    original = loop.call_at

    def counting(*args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        nonlocal calls
        calls += 1
        return original(*args, **kwargs)

    loop.call_at = counting  # type: ignore[method-assign,assignment]
    try:
        for _ in range(100):
            with backend.create_cancel_scope(deadline=now() + 30):
                await asyncio.sleep(0)
    finally:
        del loop.call_at
    assert calls == 1
    assert _engine.loop_stats()["deadlines"] == 0


@pytest.mark.virtual_clock
async def test_deadline_moved_to_inf_leaves_the_heap(backend: Any) -> None:
    with backend.create_cancel_scope(deadline=now() + 5) as scope:
        assert _engine.loop_stats()["deadlines"] == 1
        scope.deadline = math.inf
        assert _engine.loop_stats()["deadlines"] == 0
        await asyncio.sleep(10)  # virtual: the old deadline passes unnoticed
    assert not scope.cancel_called


@pytest.mark.virtual_clock
async def test_deadline_moved_later_is_honoured(backend: Any) -> None:
    t0 = now()
    with backend.create_cancel_scope(deadline=t0 + 1) as scope:
        scope.deadline = t0 + 7
        await asyncio.sleep(3600)
    assert now() == t0 + 7 and scope.deadline_reached


async def test_minus_infinity_deadline_is_already_expired(backend: Any) -> None:
    with backend.create_cancel_scope(deadline=-math.inf) as scope:
        assert scope.cancel_called
        await asyncio.sleep(LONG)
    assert scope.cancelled_caught and scope.deadline_reached


async def test_deadline_equal_to_now_is_expired(backend: Any) -> None:
    with backend.create_cancel_scope(deadline=now()) as scope:
        await asyncio.sleep(LONG)
    assert scope.cancelled_caught


async def test_deadline_of_an_exited_scope_arms_nothing(backend: Any) -> None:
    with backend.create_cancel_scope() as scope:
        pass
    scope.deadline = now() - 1
    assert not scope.cancel_called
    assert _engine.loop_stats()["deadlines"] == 0


async def test_deadline_change_from_another_thread_is_refused(backend: Any) -> None:
    with backend.create_cancel_scope(deadline=now() + LONG) as scope:
        with pytest.raises(RuntimeError, match="thread running its event loop"):
            in_thread(lambda: setattr(scope, "deadline", 0.0))
        assert not scope.cancel_called
        scope.cancel()  # cancel() itself is thread-safe (tested elsewhere)
        await asyncio.sleep(LONG)
    assert scope.cancelled_caught


def test_scopes_of_loops_in_two_threads_are_separate() -> None:
    """Each loop has its own engine: deadlines of one loop never touch the other."""
    ready = threading.Event()
    release = threading.Event()
    other: dict[str, Any] = {}

    async def other_loop() -> bool:
        loop = asyncio.get_running_loop()
        with _engine.CancelScope(deadline=loop.time() + 1000) as scope:
            other["loop"] = loop
            ready.set()
            await asyncio.to_thread(release.wait, LONG)
        return scope.cancel_called

    thread_result: list[bool] = []
    thread = threading.Thread(target=lambda: thread_result.append(asyncio.run(other_loop())))
    thread.start()
    try:
        assert ready.wait(LONG)

        async def here() -> None:
            assert _engine.loop_stats()["deadlines"] == 0
            assert _engine.loop_stats(other["loop"])["deadlines"] == 1
            with _engine.CancelScope(deadline=now() - 1) as scope:
                await asyncio.sleep(LONG)
            assert scope.cancelled_caught
            assert _engine.loop_stats(other["loop"])["deadlines"] == 1

        asyncio.run(here())
    finally:
        release.set()
        thread.join(LONG)
    assert thread_result == [False]


# -- AsyncioTaskGroup cleanup --------------------------------------------------------------


async def test_group_exit_leaves_no_engine_state(backend: Any) -> None:
    children: list[asyncio.Task[Any]] = []

    async def failing() -> None:
        children.append(asyncio.current_task())  # type: ignore[arg-type]
        await asyncio.sleep(0)
        raise KeyError("child")

    async def sleeper() -> None:
        children.append(asyncio.current_task())  # type: ignore[arg-type]
        await asyncio.sleep(LONG)

    loop = asyncio.get_running_loop()
    before = _engine.loop_stats()["active_scopes"]
    with backend.create_cancel_scope() as outer:
        with pytest.raises(ExceptionGroup):
            async with backend.create_task_group() as tg:
                tg.start_soon(failing)
                tg.start_soon(sleeper)
                tg.start_soon(sleeper)
        assert _engine.current_scope() is outer
    assert len(children) == 3 and all(t.done() for t in children)
    assert not any(t in _engine._task_scopes for t in children)
    assert not [t for t in _engine._task_scopes if t.get_loop() is loop]
    stats = _engine.loop_stats()
    assert stats["active_scopes"] == before and stats["deadlines"] == 0
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_every_finally_ran_before_the_group_exits(backend: Any) -> None:
    log: list[str] = []

    async def child(name: str) -> None:
        try:
            await asyncio.sleep(LONG)
        finally:
            log.append(f"finally {name}")

    async def failing() -> None:
        await asyncio.sleep(0)
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
    with pytest.raises(RuntimeError, match="not active"):
        tg.start_soon(asyncio.sleep, 0)


async def test_child_of_a_cancelled_group_runs_until_its_first_checkpoint(backend: Any) -> None:
    log: list[str] = []

    async def child() -> None:
        log.append("started")
        try:
            await asyncio.sleep(LONG)
        except asyncio.CancelledError:
            log.append("cancelled at the first checkpoint")
            raise

    async with backend.create_task_group() as tg:
        tg.cancel_scope.cancel()
        tg.start_soon(child)
    assert log == ["started", "cancelled at the first checkpoint"]
    assert tg.cancel_scope.cancelled_caught


async def test_grandchildren_are_cancelled_with_the_outer_group(backend: Any) -> None:
    cancelled: list[str] = []
    inner_running = asyncio.Event()

    async def grandchild(name: str) -> None:
        try:
            inner_running.set()
            await asyncio.sleep(LONG)
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    async def child() -> None:
        async with backend.create_task_group() as inner:
            inner.start_soon(grandchild, "g1")
            inner.start_soon(grandchild, "g2")

    async with backend.create_task_group() as outer:
        outer.start_soon(child)
        await inner_running.wait()
        outer.cancel_scope.cancel()
    assert sorted(cancelled) == ["g1", "g2"]
    assert outer.cancel_scope.cancelled_caught


async def test_group_scope_and_children_are_released(backend: Any) -> None:
    async def child() -> None:
        await asyncio.sleep(0)

    gc.collect()
    baseline = _engine.live_objects()["CancelScope"]
    tg = backend.create_task_group()
    async with tg:
        tg.start_soon(child)
        task_ref = weakref.ref(next(iter(tg._tasks)))
    scope_ref = weakref.ref(tg.cancel_scope)
    del tg
    gc.collect()
    assert task_ref() is None and scope_ref() is None
    assert _engine.live_objects()["CancelScope"] == baseline


async def test_external_cancel_of_a_child_does_not_fail_the_group(backend: Any) -> None:
    started = asyncio.Event()
    others_done: list[str] = []

    async def victim() -> None:
        started.set()
        await asyncio.sleep(LONG)

    async def other() -> None:
        await asyncio.sleep(0)
        others_done.append("other")

    async with backend.create_task_group() as tg:
        tg.start_soon(victim)
        tg.start_soon(other)
        await started.wait()
        victim_task = next(t for t in tg._tasks if t.get_coro().__name__ == "victim")
        victim_task.cancel()  # a plain asyncio cancel of one child
    assert victim_task.cancelled() and others_done == ["other"]
    assert not tg.cancel_scope.cancel_called


# -- call_soon_threadsafe with coroutines ----------------------------------------------------


async def test_async_callback_from_a_thread_runs_as_a_task_on_the_loop(backend: Any) -> None:
    loop = asyncio.get_running_loop()
    backend.note_loop()
    seen: dict[str, Any] = {}
    done = asyncio.Event()

    async def callback() -> None:
        seen["thread"] = threading.get_ident()
        seen["task"] = asyncio.current_task()
        seen["scope"] = _engine.current_scope()
        await asyncio.sleep(0)  # a real coroutine: it may await
        done.set()

    in_thread(lambda: backend.call_soon_threadsafe(callback))
    await asyncio.wait_for(done.wait(), LONG)
    assert seen["thread"] == threading.get_ident()
    assert seen["task"] is not None and seen["task"] is not asyncio.current_task()
    assert seen["scope"] is None  # not inside any scope of the scheduling code
    assert seen["task"].get_loop() is loop


async def test_async_callback_scheduled_inside_a_cancelled_scope_is_not_cancelled(
    backend: Any,
) -> None:
    finished = asyncio.Event()

    async def callback() -> None:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        finished.set()

    with backend.create_cancel_scope() as scope:
        scope.cancel()
        backend.call_soon_threadsafe(callback)
        await asyncio.sleep(LONG)
    assert scope.cancelled_caught
    await asyncio.wait_for(finished.wait(), LONG)


async def test_async_callback_survives_garbage_collection(backend: Any) -> None:
    gate = asyncio.Event()
    finished = asyncio.Event()

    async def callback() -> None:
        await gate.wait()
        finished.set()

    backend.call_soon_threadsafe(callback)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    gc.collect()  # asyncio keeps only weak references to tasks: the backend must hold one
    gate.set()
    await asyncio.wait_for(finished.wait(), LONG)


async def test_callback_returning_a_future_is_awaited(backend: Any) -> None:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[str] = loop.create_future()
    results: list[str] = []

    async def consume(awaitable: asyncio.Future[str]) -> None:
        results.append(await awaitable)

    backend.call_soon_threadsafe(lambda: consume(future))
    await asyncio.sleep(0)
    future.set_result("value")
    for _ in range(10):
        if results:
            break
        await asyncio.sleep(0)
    assert results == ["value"]


async def test_failing_async_callback_is_logged_and_the_loop_goes_on(
    backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    done = asyncio.Event()
    backend.note_loop()  # the target of plain-thread calls

    async def failing() -> None:
        await asyncio.sleep(0)
        raise LookupError("async callback failure")

    with caplog.at_level(logging.ERROR):
        in_thread(lambda: backend.call_soon_threadsafe(failing))
        backend.call_soon_threadsafe(done.set)
        await asyncio.wait_for(done.wait(), LONG)
        for _ in range(10):
            if any(
                "async callback failure" in r.getMessage() or r.exc_info for r in caplog.records
            ):
                break
            await asyncio.sleep(0)
    errors = [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], LookupError)]
    assert len(errors) == 1


async def test_call_soon_threadsafe_from_each_loop_targets_its_own_loop(backend: Any) -> None:
    """With loops in two threads, a call from a loop thread goes to that thread's loop."""
    shared = AsyncioBackend()

    async def use_it() -> tuple[int, int]:
        shared.note_loop()  # remember this loop (the last one wins for plain threads)
        ran_on: list[int] = []
        done = asyncio.Event()

        def callback() -> None:
            ran_on.append(threading.get_ident())
            done.set()

        shared.call_soon_threadsafe(callback)
        await asyncio.wait_for(done.wait(), LONG)
        return ran_on[0], threading.get_ident()

    ran, mine = await use_it()
    assert ran == mine
    ran, theirs = run_loop_in_thread(use_it)
    assert ran == theirs != mine
    ran, mine = await use_it()  # and back: our loop again
    assert ran == mine


# -- detection edge cases ------------------------------------------------------------------


def test_detection_in_loops_of_several_threads() -> None:
    barrier = threading.Barrier(3)
    results: list[tuple[str, str, bool]] = []
    lock = threading.Lock()

    async def main() -> None:
        barrier.wait(LONG)  # the three loops run at the same time
        backend = get_backend()
        with backend.create_cancel_scope(deadline=backend.current_time() - 1) as scope:
            await backend.sleep(LONG)
        with lock:
            results.append((detect_backend(), backend.name, scope.cancelled_caught))

    threads = [threading.Thread(target=asyncio.run, args=(main(),)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(LONG)
    assert results == [("asyncio", "asyncio", True)] * 3


def test_no_loop_in_this_thread_while_another_thread_runs_one() -> None:
    running = threading.Event()
    stop = threading.Event()

    async def idle() -> None:
        running.set()
        await asyncio.to_thread(stop.wait, LONG)

    thread = threading.Thread(target=asyncio.run, args=(idle(),))
    thread.start()
    try:
        assert running.wait(LONG)
        with pytest.raises(NoAsyncContextError):
            detect_backend()
        with pytest.raises(NoAsyncContextError):
            get_backend()
        backend = get_backend("asyncio")  # explicit: no detection needed
        with pytest.raises(RuntimeError):
            backend.current_time()
        with pytest.raises(RuntimeError, match="running asyncio event loop"):
            _engine.CancelScope().__enter__()
    finally:
        stop.set()
        thread.join(LONG)


async def test_detection_inside_a_plain_loop_callback(backend: Any) -> None:
    """Callbacks (call_soon, call_soon_threadsafe, done callbacks) run outside any task, but
    an asyncio loop is running: detection must say asyncio, not "no async context"."""
    loop = asyncio.get_running_loop()
    seen: list[Any] = []
    done = asyncio.Event()

    def callback() -> None:
        try:
            seen.append(detect_backend())
        except Exception as exc:
            seen.append(exc)
        done.set()

    loop.call_soon(callback)
    await asyncio.wait_for(done.wait(), LONG)
    assert seen == ["asyncio"]


def test_active_scope_of_a_closed_loop_can_still_be_cancelled() -> None:
    """A task left blocked in a scope when its loop is closed: cancel() marks the scope only."""
    loop = asyncio.new_event_loop()
    holder: dict[str, Any] = {}
    entered = asyncio.Event()

    async def stuck() -> None:
        # entered by hand: the coroutine, closed by the garbage collector far from its loop,
        # must not try to exit the scope
        holder["scope"] = _engine.CancelScope().__enter__()
        entered.set()
        await asyncio.sleep(LONG)

    async def start() -> None:
        holder["task"] = loop.create_task(stuck())
        await entered.wait()

    try:
        loop.run_until_complete(start())
    finally:
        loop.close()  # the task never finishes
    scope, task = holder["scope"], holder["task"]
    try:
        assert scope.active and not scope.cancel_called
        scope.cancel()  # the loop is closed: nothing to hop onto, no error
        assert scope.cancel_called
        in_thread(scope.cancel)  # from a plain thread too
    finally:
        # The task can never run again: forget it (no "Task was destroyed" noise, no leak).
        task._log_destroy_pending = False
        _engine._task_scopes.pop(task, None)
        del scope, task
        holder.clear()
        gc.collect()


def test_the_override_is_per_context_and_per_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOTHER_CANCELABLE_BACKEND", raising=False)

    async def detected() -> str:
        return detect_backend()

    async def main() -> list[str]:
        seen: list[str] = [detect_backend()]
        with use_backend("anyio"):
            seen.append(detect_backend())
            inherited = asyncio.get_running_loop().create_task(detected())
            seen.append(run_loop_in_thread(detected))  # another thread: not forced
        seen.append(await inherited)  # the task copied the forced context
        seen.append(detect_backend())
        return seen

    assert asyncio.run(main()) == ["asyncio", "anyio", "asyncio", "anyio", "asyncio"]


def test_env_override_applies_to_every_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTHER_CANCELABLE_BACKEND", "anyio")

    async def detected() -> str:
        return detect_backend()

    assert asyncio.run(detected()) == "anyio"
    assert run_loop_in_thread(detected) == "anyio"
    with use_backend("asyncio"):  # the context manager wins over the variable
        assert asyncio.run(detected()) == "asyncio"


# -- switching run modes in one process ----------------------------------------------------


@pytest.fixture
def baseline_engines() -> Iterator[int]:
    """Live LoopEngines before the test (after the garbage of earlier tests is gone)."""
    gc.collect()
    gc.collect()
    yield _engine.live_objects()["LoopEngine"]


def test_switching_run_modes_in_one_process(baseline_engines: int) -> None:
    async def probe() -> tuple[str, str, bool]:
        backend = get_backend()
        with backend.create_cancel_scope(deadline=backend.current_time() - 1) as scope:
            await backend.sleep(LONG)
        return detect_backend(), backend.name, scope.cancelled_caught

    sequence = ["asyncio", "trio", "uvloop", "anyio", "asyncio", "trio", "asyncio"]
    results = [run_in_mode(mode, probe) for mode in sequence]
    expected_backend = {
        "asyncio": "asyncio",
        "uvloop": "asyncio",
        "anyio": "anyio",
        "trio": "anyio",
    }
    assert results == [(expected_backend[m], expected_backend[m], True) for m in sequence]
    gc.collect()
    # every loop is closed and gone: the engine dropped its per-loop state
    assert _engine.live_objects()["LoopEngine"] <= baseline_engines


def test_engine_state_follows_the_loop_across_runs(baseline_engines: int) -> None:
    async def arm() -> dict[str, Any]:
        with _engine.CancelScope(deadline=now() + 1000):
            stats = dict(_engine.loop_stats())
        return stats

    for _ in range(3):
        stats = asyncio.run(arm())
        assert stats["deadlines"] == 1 and stats["armed_timers"] == 1
    gc.collect()
    assert _engine.live_objects()["LoopEngine"] <= baseline_engines
    assert _engine.armed_timers() == 0


def test_the_same_backend_instance_serves_successive_loops() -> None:
    async def which() -> Any:
        backend = get_backend()
        assert backend.remembered_loop is asyncio.get_running_loop()  # type: ignore[attr-defined]
        return backend

    first = asyncio.run(which())
    second = asyncio.run(which())
    assert first is second and isinstance(first, AsyncioBackend)
    assert first.remembered_loop is None  # closed: forgotten


async def test_task_group_type_in_this_mode(backend: Any) -> None:
    assert isinstance(backend.create_task_group(), AsyncioTaskGroup)
