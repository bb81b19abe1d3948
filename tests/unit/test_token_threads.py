"""Tokens across threads and event loops (API.md §13.7, §14.7-9): cancel_sync needs no bridge.

Async tests run in the four run modes (asyncio, uvloop, anyio, trio) through the plugin;
helper threads are sequenced with threading events, never with sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import anyio
import pytest

from hother.cancelable.core.models import CancellationReason
from hother.cancelable.core.token import CancellationToken, LinkedCancellationToken
from hother.cancelable.pytest_plugin import run_in_mode

WAIT = 10.0  # generous: only reached when something is broken


class _Runner(Protocol):
    """The ``plain_thread`` fixture of tests/conftest.py (typing only)."""

    def start(self, fn: Callable[..., Any], *args: Any) -> threading.Thread: ...

    def join(self, timeout: float = 10.0) -> None: ...


def _engine_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name.startswith("hother.cancelable") and r.levelno == logging.ERROR
    ]


def _cancel_when_set(token: CancellationToken, go: threading.Event, out: list[bool]) -> None:
    assert go.wait(WAIT)
    out.append(token.cancel_sync(CancellationReason.SIGNAL))


def _race(
    token: CancellationToken, barrier: threading.Barrier, out: list[bool], message: str
) -> None:
    barrier.wait(WAIT)
    out.append(token.cancel_sync(CancellationReason.MANUAL, message))  # list.append is atomic


# --------------------------------------------------------------------------- from a thread
async def test_cancel_sync_from_plain_thread_wakes_waiter(plain_thread: _Runner) -> None:
    token = CancellationToken()
    go = threading.Event()
    results: list[bool] = []

    def canceller() -> None:
        assert go.wait(WAIT)
        results.append(token.cancel_sync(CancellationReason.SIGNAL, "from thread"))
        results.append(token.cancel_sync(CancellationReason.MANUAL, "again"))

    woke = anyio.Event()

    async def waiter() -> None:
        await token.wait_for_cancel()
        woke.set()

    plain_thread.start(canceller)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            assert not woke.is_set() and token._hook_count == 1
            go.set()
            await woke.wait()
    plain_thread.join()
    assert results == [True, False]
    assert token.reason is CancellationReason.SIGNAL
    assert token.message == "from thread"


async def test_cancel_sync_from_thread_runs_each_async_callback_once(
    plain_thread: _Runner, caplog: pytest.LogCaptureFixture
) -> None:
    token = CancellationToken()
    calls: list[tuple[str, bool]] = []
    all_done = anyio.Event()

    def make(name: str, fail: bool = False) -> Callable[[CancellationToken], Any]:
        async def cb(tok: CancellationToken) -> None:
            calls.append((name, tok.is_cancelled))
            if len(calls) == 3:
                all_done.set()
            if fail:
                raise RuntimeError(f"{name} failed")

        return cb

    await token.register_callback(make("a"))
    await token.register_callback(make("b", fail=True))
    await token.register_callback(make("c"))
    with caplog.at_level(logging.ERROR, logger="hother.cancelable"):
        plain_thread.start(token.cancel_sync)
        with anyio.fail_after(WAIT):
            await all_done.wait()
        # callbacks run in order on this loop: b's error was reported before c ran
    assert sorted(calls) == [("a", True), ("b", True), ("c", True)]
    errors = _engine_errors(caplog)
    assert len(errors) == 1
    assert errors[0].exc_info is not None and "b failed" in str(errors[0].exc_info[1])


async def test_sync_and_async_cancel_racing_run_callbacks_exactly_once(
    plain_thread: _Runner,
) -> None:
    for _ in range(20):
        token = CancellationToken()
        count: list[int] = []
        ran = anyio.Event()

        def callback(tok: CancellationToken, count: list[int] = count, ran: Any = ran) -> None:
            count.append(1)  # runs on this loop: directly, or dispatched by the thread
            ran.set()

        token.register_callback_sync(callback)
        go = threading.Event()
        thread_result: list[bool] = []
        thread = plain_thread.start(_cancel_when_set, token, go, thread_result)
        go.set()
        won_async = await token.cancel(CancellationReason.MANUAL)
        with anyio.fail_after(WAIT):
            await anyio.to_thread.run_sync(thread.join, WAIT)
            await ran.wait()
        for _ in range(3):  # a (buggy) second dispatch would be queued by now
            await anyio.sleep(0)
        assert [won_async, *thread_result].count(True) == 1
        assert count == [1]
        assert token.reason is (
            CancellationReason.MANUAL if won_async else CancellationReason.SIGNAL
        )


def test_ten_racing_threads_exactly_one_wins() -> None:
    for _ in range(5):
        token = CancellationToken()
        barrier = threading.Barrier(10)
        results: list[bool] = []
        threads = [
            threading.Thread(target=_race, args=(token, barrier, results, f"thread {i}"))
            for i in range(10)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
        assert results.count(True) == 1 and len(results) == 10
        assert token.message is not None and token.message.startswith("thread ")


def test_polled_flag_observes_thread_cancel() -> None:
    token = CancellationToken()
    started = threading.Event()

    def canceller() -> None:
        assert started.wait(WAIT)
        token.cancel_sync()

    thread = threading.Thread(target=canceller)
    thread.start()
    started.set()
    deadline = time.monotonic() + WAIT
    while not token.is_cancelled and time.monotonic() < deadline:
        time.sleep(0.001)
    thread.join(WAIT)
    assert token.is_cancelled


def test_linked_tokens_cancelled_from_thread() -> None:
    source = CancellationToken()
    linked = LinkedCancellationToken()
    linked.link_sync(source)
    thread = threading.Thread(target=source.cancel_sync)
    thread.start()
    thread.join(WAIT)
    assert linked.is_cancelled and linked.reason is CancellationReason.PARENT


# --------------------------------------------------------------------------- several loops
def test_token_shared_by_loops_in_several_threads_wakes_every_waiter() -> None:
    token = CancellationToken()
    modes = ("asyncio", "uvloop", "trio")
    ready = {mode: threading.Event() for mode in modes}
    woke: dict[str, bool] = {}
    errors: list[BaseException] = []

    async def waiter(mode: str) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(token.wait_for_cancel)
            await anyio.wait_all_tasks_blocked()
            ready[mode].set()
        woke[mode] = token.is_cancelled

    def run(mode: str) -> None:
        try:
            run_in_mode(mode, waiter, mode=mode)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
            ready[mode].set()

    threads = [threading.Thread(target=run, args=(m,), daemon=True) for m in modes]
    for t in threads:
        t.start()
    for mode in modes:
        assert ready[mode].wait(WAIT)
    assert token._hook_count == len(modes)
    assert token.cancel_sync(CancellationReason.MANUAL, "all loops") is True
    for t in threads:
        t.join(WAIT)
        assert not t.is_alive()
    assert not errors, errors
    assert woke == dict.fromkeys(modes, True)


def test_closed_loop_does_not_crash_cancel_sync(caplog: pytest.LogCaptureFixture) -> None:
    token = CancellationToken()
    ran: list[str] = []

    async def register() -> None:
        token.register_callback_sync(lambda tok: ran.append("asyncio"))

    asyncio.run(register())  # the loop captured with the callback is now closed
    with caplog.at_level(logging.ERROR, logger="hother.cancelable"):
        assert token.cancel_sync() is True
    assert ran == []
    errors = _engine_errors(caplog)
    assert len(errors) == 1
    assert "closed" in errors[0].getMessage()


def test_finished_trio_run_does_not_crash_cancel_sync(caplog: pytest.LogCaptureFixture) -> None:
    import trio

    token = CancellationToken()
    ran: list[str] = []

    async def register() -> None:
        token.register_callback_sync(lambda tok: ran.append("trio"))

    trio.run(register)
    with caplog.at_level(logging.ERROR, logger="hother.cancelable"):
        assert token.cancel_sync() is True
    assert ran == []
    errors = _engine_errors(caplog)
    assert len(errors) == 1
    assert "trio run has finished" in errors[0].getMessage()


def test_async_callback_triggered_without_loop_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = CancellationToken()

    async def cb(tok: CancellationToken) -> None:  # pragma: no cover - cannot run
        raise AssertionError("must not run")

    token.register_callback_sync(cb)  # no loop: runs in the cancelling thread
    with caplog.at_level(logging.ERROR, logger="hother.cancelable"):
        assert token.cancel_sync() is True
    errors = _engine_errors(caplog)
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert "no running event loop" in str(errors[0].exc_info[1])


# --------------------------------------------------------------------------- signal handler
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_cancel_sync_from_signal_handler_wakes_waiter(plain_thread: _Runner) -> None:
    if threading.current_thread() is not threading.main_thread():  # pragma: no cover
        pytest.skip("signal handlers run in the main thread only")
    token = CancellationToken()
    handled = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        token.cancel_sync(CancellationReason.SIGNAL, f"signal {signum}")
        handled.set()

    go = threading.Event()
    main_id = threading.main_thread().ident
    assert main_id is not None

    def sender() -> None:
        assert go.wait(WAIT)
        # A signal landing just before the loop enters its selector leaves the Python handler
        # pending until the loop wakes (a limit of signal.signal without a wakeup fd); the
        # next signal interrupts the selector and runs it. Resend until it has run.
        for _ in range(int(WAIT / 0.2)):
            signal.pthread_kill(main_id, signal.SIGUSR1)
            if handled.wait(0.2):
                return

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        woke = anyio.Event()

        async def waiter() -> None:
            await token.wait_for_cancel()
            woke.set()

        plain_thread.start(sender)
        start = time.monotonic()
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                await anyio.wait_all_tasks_blocked()
                go.set()  # the loop now blocks in its selector until the signal arrives
                await woke.wait()
        # woken by the signal, not by the fail_after timer
        assert time.monotonic() - start < WAIT / 2
        assert handled.is_set()
        assert token.reason is CancellationReason.SIGNAL
    finally:
        signal.signal(signal.SIGUSR1, previous)
        plain_thread.join()
