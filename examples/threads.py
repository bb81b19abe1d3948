"""Cancellation across threads, in every run mode.

1. ``cancel_sync()`` from plain threads: ten threads race, exactly one wins;
2. ``cancel_sync()`` from a signal handler (``signal.signal``), the signal sent by a thread
   (for real services prefer ``Cancellable.with_signal()``, see signal_service.py);
3. ``run_in_thread()``: blocking code runs in a worker thread with the operation current,
   reports back with ``call_soon_threadsafe`` and stops cooperatively on the token;
4. the registry's sync twins (``list_operations_sync``, ``cancel_operation_sync``,
   ``get_statistics_sync``) called from a thread that has no event loop.

Run it::

    python examples/threads.py                   # asyncio, uvloop, anyio, trio
    python examples/threads.py uvloop            # one mode

Nothing needs to be started first: no bridge, no loop reference passed to the threads.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from _common import outcome, parse_modes, run, say, section

from hother.cancelable import (
    Cancellable,
    CancellationReason,
    CancellationToken,
    OperationRegistry,
    call_soon_threadsafe,
    current_operation,
    get_backend,
)


async def racing_threads_demo() -> None:
    section("1. ten threads race to cancel")
    backend = get_backend()
    cancelled = backend.get_cancelled_exc_class()
    token = CancellationToken()
    go = threading.Event()
    results: list[bool] = []
    lock = threading.Lock()

    def racer(i: int) -> None:
        go.wait(5)
        won = token.cancel_sync(CancellationReason.MANUAL, f"thread {i} was first")
        with lock:
            results.append(won)

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    try:
        async with Cancellable.with_token(token, name="raced") as op:
            go.set()
            await token.wait_for_cancel()  # woken from whichever thread wins
            await backend.sleep(10)  # not reached: the cancellation is delivered here
    except cancelled:
        pass
    for thread in threads:
        thread.join()
    say(f"winners: {results.count(True)} of {len(results)} threads")
    say(f"raced: {outcome(op)}")


@contextmanager
def signal_handler(signum: int, handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    """Install ``handler`` for ``signum`` so that the running event loop notices it at once.

    Python runs signal handlers in the main thread, between bytecodes. An event loop asleep
    in its selector only wakes up for a signal through a *wakeup fd*: trio always sets one,
    asyncio only for ``loop.add_signal_handler()``. With a bare ``signal.signal()`` under
    asyncio, a signal arriving just as the loop goes to sleep is handled at its next wake-up.
    """
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None  # trio
    if loop is not None:
        loop.add_signal_handler(signum, handler, signum, None)
        try:
            yield
        finally:
            loop.remove_signal_handler(signum)
    else:
        previous = signal.signal(signum, handler)
        try:
            yield
        finally:
            signal.signal(signum, previous)


async def signal_handler_demo() -> None:
    section("2. cancel_sync() in a signal handler")
    backend = get_backend()
    cancelled = backend.get_cancelled_exc_class()
    op = Cancellable(name="interruptible")

    def handler(signum: int, frame: FrameType | None) -> None:
        # cancel_sync() is safe in a signal handler and wakes the event loop.
        op.cancel_sync(CancellationReason.SIGNAL, f"{signal.Signals(signum).name} received")

    ready = threading.Event()

    def send() -> None:  # from a thread here; from outside: kill -USR2 <pid>
        if ready.wait(5):
            os.kill(os.getpid(), signal.SIGUSR2)

    with signal_handler(signal.SIGUSR2, handler):
        sender = threading.Thread(target=send)
        sender.start()
        try:
            async with op:
                ready.set()
                await backend.sleep(10)
        except cancelled:
            pass
        sender.join()
    say(f"interruptible: {outcome(op)}")


def crunch(units: int, on_unit: Callable[[int], object] | None = None) -> int:
    """Blocking work, run in a worker thread: stops early when the operation is cancelled."""
    op = current_operation()  # the operation is current in the thread too
    assert op is not None
    done = 0
    while done < units and not op.token.is_cancelled:
        time.sleep(0.001)  # one unit of blocking work
        done += 1
        if on_unit is not None:
            on_unit(done)
    return done


async def run_in_thread_demo() -> None:
    section("3. run_in_thread()")
    backend = get_backend()
    cancelled = backend.get_cancelled_exc_class()

    async with Cancellable(name="thread_job") as op:
        result = await op.run_in_thread(crunch, 20)
    say(f"thread_job: crunched {result} units, {outcome(op)}")

    # Cooperative cancellation: the thread reports progress to the loop, the loop cancels,
    # the awaiting task stops at once and the thread stops at its next token check.
    halfway = backend.create_event()
    finished = threading.Event()
    units: list[int] = []

    def report(done: int) -> None:
        if done == 10:  # tell the event loop, from the worker thread
            call_soon_threadsafe(halfway.set)

    def worker() -> None:
        try:
            units.append(crunch(10_000, report))
        finally:
            finished.set()

    try:
        async with Cancellable(name="long_thread_job") as op, backend.create_task_group() as tg:

            async def stop_halfway() -> None:
                await halfway.wait()
                await op.cancel(message="enough work done")

            tg.start_soon(stop_halfway)
            await op.run_in_thread(worker)
    except cancelled:
        pass
    await backend.run_sync_in_thread(finished.wait, 5)
    say(f"long_thread_job: {outcome(op)}")
    say(f"the thread stopped early: {units[0] < 10_000} (it checked the token)")


async def registry_from_thread_demo() -> None:
    section("4. the registry from a plain thread")
    backend = get_backend()
    cancelled = backend.get_cancelled_exc_class()
    registry = OperationRegistry.get_instance()
    started = threading.Event()
    lines: list[str] = []

    def admin() -> None:
        started.wait(5)
        ops = registry.list_operations_sync(name_pattern="thread_served")
        lines.append(f"thread sees: {[ctx.name for ctx in ops]}")
        stats = registry.get_statistics_sync()
        lines.append(f"get_statistics_sync(): {stats['active_operations']} active operation(s)")
        found = registry.cancel_operation_sync(ops[0].id, message="cancelled by the admin thread")
        lines.append(f"cancel_operation_sync() found it: {found}")

    thread = threading.Thread(target=admin)
    thread.start()
    try:
        async with Cancellable(name="thread_served", register_globally=True) as op:
            started.set()
            await backend.sleep(10)
    except cancelled:
        pass
    thread.join()
    for text in lines:
        say(text)
    say(f"thread_served: {outcome(op)}")


async def demo() -> None:
    await racing_threads_demo()
    await signal_handler_demo()
    await run_in_thread_demo()
    await registry_from_thread_demo()


def main() -> int:
    modes = parse_modes(sys.argv[1:])
    for mode in modes:
        run(mode, demo)
    print("threads finished on:", ", ".join(modes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
