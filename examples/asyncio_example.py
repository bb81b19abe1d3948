"""hother.cancelable with plain asyncio code (asyncio, uvloop, or the anyio backend on asyncio).

1. ``asyncio.TaskGroup`` workers under one parent operation, one of them with a timeout;
2. ``asyncio.gather`` over ``@cancellable`` functions with different timeouts;
3. an enclosing ``asyncio.timeout()`` interrupting an operation (``TimeoutError`` outside);
4. ``task.cancel()`` on a task that runs an operation;
5. ``loop.run_in_executor`` + ``cancel_sync``, and several tasks awaiting ``wait_for_cancel()``.

Run it::

    python examples/asyncio_example.py                 # asyncio, uvloop, anyio
    python examples/asyncio_example.py uvloop          # one mode

The library's cancellations are ordinary ``asyncio.CancelledError`` and keep asyncio's own
bookkeeping right (``Task.cancelling()``/``uncancel()``), so ``asyncio.timeout()``,
``TaskGroup`` and ``gather`` behave as usual around and inside operations.
"""

from __future__ import annotations

import asyncio
import sys
import time

from _common import outcome, parse_modes, run, say, section

from hother.cancelable import (
    Cancellable,
    CancellationReason,
    CancellationToken,
    cancellable,
    current_operation,
)


async def task_group_demo() -> None:
    section("1. asyncio.TaskGroup under a parent operation")
    results: dict[str, str] = {}

    async def worker(name: str, seconds: float, timeout: float | None) -> None:
        parent = current_operation()
        op = (
            Cancellable.with_timeout(timeout, name=name, parent=parent)
            if timeout is not None
            else Cancellable(name=name, parent=parent)
        )
        try:
            async with op:
                await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            pass  # this worker's own timeout: the group carries on
        results[name] = outcome(op)

    async with Cancellable(name="batch") as batch:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(worker("quick", 0.01, None))
            tg.create_task(worker("steady", 0.02, 1.0))
            tg.create_task(worker("stuck", 10, 0.05))
    for name in sorted(results):
        say(f"{name}: {results[name]}")
    say(f"batch: {outcome(batch)}")


@cancellable(timeout=0.05)
async def lookup(key: str, delay: float) -> str:
    """A decorated lookup: each call is its own operation with a 0.05 s timeout."""
    await asyncio.sleep(delay)
    return key.upper()


async def gather_demo() -> None:
    section("2. asyncio.gather over @cancellable calls")
    results = await asyncio.gather(
        lookup("alpha", 0.001), lookup("beta", 10), lookup("gamma", 0.002), return_exceptions=True
    )
    shown = [r if isinstance(r, str) else type(r).__name__ for r in results]
    say(f"gather results: {shown}")


async def outer_timeout_demo() -> None:
    section("3. an enclosing asyncio.timeout()")
    op = Cancellable(name="inner_work")
    try:
        async with asyncio.timeout(0.05):
            async with op:
                await asyncio.sleep(10)
    except TimeoutError:
        say("asyncio.timeout() raised TimeoutError as usual")
    task = asyncio.current_task()
    assert task is not None
    say(f"inner_work: {outcome(op)}; task.cancelling() = {task.cancelling()}")


async def task_cancel_demo() -> None:
    section("4. task.cancel()")
    entered = asyncio.Event()
    op = Cancellable(name="background")

    async def background() -> None:
        async with op:
            entered.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(background())
    await entered.wait()
    task.cancel("shutdown requested")
    try:
        await task
    except asyncio.CancelledError:
        pass
    say(f"background: {outcome(op)}; task.cancelled() = {task.cancelled()}")


async def executor_demo() -> None:
    section("5. run_in_executor + cancel_sync, wait_for_cancel()")
    loop = asyncio.get_running_loop()
    token = CancellationToken()
    woken: list[str] = []

    async def waiter(name: str) -> None:
        await token.wait_for_cancel()
        woken.append(name)

    waiters = [asyncio.create_task(waiter(f"waiter_{i}")) for i in range(3)]

    def watchdog() -> str:
        time.sleep(0.02)  # blocking work in the default executor's thread
        won = token.cancel_sync(CancellationReason.MANUAL, "watchdog found a problem")
        return f"watchdog cancelled the token: {won}"

    try:
        async with Cancellable.with_token(token, name="supervised") as op:
            job = loop.run_in_executor(None, watchdog)
            await asyncio.sleep(10)
    except asyncio.CancelledError:
        pass
    say(f"executor: {await job}")
    await asyncio.gather(*waiters)
    say(f"supervised: {outcome(op)}")
    say(f"woken waiters: {sorted(woken)}")


async def demo() -> None:
    await task_group_demo()
    await gather_demo()
    await outer_timeout_demo()
    await task_cancel_demo()
    await executor_demo()


def main() -> int:
    modes = parse_modes(
        sys.argv[1:],
        supported=("asyncio", "uvloop", "anyio"),
        unsupported={"trio": "this example uses the asyncio API (see trio_example.py)"},
    )
    for mode in modes:
        run(mode, demo)
    print("asyncio_example finished on:", ", ".join(modes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
