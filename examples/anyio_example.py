"""hother.cancelable with anyio code, on asyncio or on trio underneath.

1. an anyio task group whose workers each run an operation; the group's scope is cancelled;
2. ``anyio.move_on_after()`` around an operation;
3. ``Cancellable.with_condition()``: stop when a flag set by another task turns true;
4. a memory object stream consumed through ``cancellable_stream(token=...)``;
5. ``anyio.to_thread.run_sync()`` cancelling through ``cancel_sync``, waited with
   ``wait_for_cancel()`` under ``anyio.fail_after()``.

Run it::

    python examples/anyio_example.py               # asyncio, uvloop, anyio, trio
    python examples/anyio_example.py trio          # one mode

Each mode starts the program with ``anyio.run()``: ``asyncio``/``uvloop`` use the library's
native asyncio engine under anyio code, ``anyio`` forces the library's anyio backend on
asyncio, ``trio`` runs anyio on trio.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from _common import outcome, parse_modes, say, section

from hother.cancelable import (
    Cancellable,
    CancellationReason,
    CancellationToken,
    cancellable_stream,
    detect_backend,
    use_backend,
)


async def task_group_demo() -> None:
    section("1. an anyio task group")
    ops: list[Cancellable] = []
    started = anyio.Event()

    async def worker(i: int) -> None:
        op = Cancellable(name=f"worker_{i}")
        ops.append(op)
        async with op:
            if len(ops) == 3:
                started.set()
            await anyio.sleep(10)

    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(worker, i)
        await started.wait()
        tg.cancel_scope.cancel()  # an enclosing cancellation: recorded as MANUAL
    # (a worker's cancel exception, caused by the group's own scope, ends in the group)
    say(f"workers: {sorted({outcome(op) for op in ops})}")


async def move_on_after_demo() -> None:
    section("2. anyio.move_on_after()")
    op = Cancellable(name="bounded")
    with anyio.move_on_after(0.05) as scope:
        async with op:
            await anyio.sleep(10)
    say(f"bounded: {outcome(op)}; move_on_after caught it: {scope.cancelled_caught}")


async def condition_demo() -> None:
    section("3. Cancellable.with_condition()")
    cancelled = anyio.get_cancelled_exc_class()
    state = {"quota_exceeded": False}

    async def spend() -> None:
        await anyio.sleep(0.03)
        state["quota_exceeded"] = True

    async with anyio.create_task_group() as tg:
        tg.start_soon(spend)
        try:
            async with Cancellable.with_condition(
                lambda: state["quota_exceeded"],
                check_interval=0.01,
                condition_name="quota_exceeded",
                name="metered",
            ) as op:
                await anyio.sleep(10)
        except cancelled:
            pass
    say(f"metered: {outcome(op)}")


async def memory_stream_demo() -> None:
    section("4. a memory object stream")
    cancelled = anyio.get_cancelled_exc_class()
    send, receive = anyio.create_memory_object_stream[int](5)
    token = CancellationToken()
    received: list[int] = []

    async def produce() -> None:
        async with send:
            try:
                for i in range(1000):
                    await send.send(i)
            except anyio.BrokenResourceError:
                pass  # the consumer closed its end

    async with anyio.create_task_group() as tg:
        tg.start_soon(produce)
        try:
            async for item in cancellable_stream(receive, token=token, name="messages"):
                received.append(item)
                if len(received) == 20:
                    await token.cancel(CancellationReason.MANUAL, "got 20 messages")
        except cancelled:
            say(f"stream cancelled by its token after {len(received)} messages")
        await receive.aclose()  # the producer sees BrokenResourceError and ends


async def thread_demo() -> None:
    section("5. anyio.to_thread + cancel_sync")
    cancelled = anyio.get_cancelled_exc_class()
    token = CancellationToken()
    results: list[str] = []

    def blocking_check() -> str:
        time.sleep(0.02)  # blocking work in a worker thread
        won = token.cancel_sync(CancellationReason.MANUAL, "disk full")
        return f"the thread cancelled the token: {won}"

    async def checker() -> None:
        results.append(await anyio.to_thread.run_sync(blocking_check))

    async def waiter() -> None:
        with anyio.fail_after(2):  # generous: the thread cancels after ~20 ms
            await token.wait_for_cancel()
        results.append(f"wait_for_cancel() woke up: {token.message!r}")

    async with anyio.create_task_group() as tg:
        tg.start_soon(checker)
        tg.start_soon(waiter)
        try:
            async with Cancellable.with_token(token, name="archiver") as op:
                await anyio.sleep(10)
        except cancelled:
            pass  # caught inside the group: the other tasks are not cancelled
    for text in sorted(results):
        say(text)
    say(f"archiver: {outcome(op)}")


async def demo() -> None:
    say(f"library backend: {detect_backend()}")
    await task_group_demo()
    await move_on_after_demo()
    await condition_demo()
    await memory_stream_demo()
    await thread_demo()


def run_anyio(mode: str, main: Callable[[], Awaitable[Any]]) -> None:
    """Start ``main`` with ``anyio.run`` in run mode ``mode``."""
    print(f"== run mode: {mode}", flush=True)

    async def wrapped() -> None:
        if mode == "anyio":
            with use_backend("anyio"):
                await main()
        else:
            await main()

    if mode == "trio":
        anyio.run(wrapped, backend="trio")
    else:
        anyio.run(wrapped, backend="asyncio", backend_options={"use_uvloop": mode == "uvloop"})


def main() -> int:
    modes = parse_modes(sys.argv[1:])
    for mode in modes:
        run_anyio(mode, demo)
    print("anyio_example finished on:", ", ".join(modes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
