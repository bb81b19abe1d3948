"""The basics of hother.cancelable, in every run mode.

1. a timeout;
2. a token cancelled by another task, then by a plain thread;
3. a stream with progress reports (and what was processed before a timeout);
4. the ``@cancellable`` decorator;
5. combining a timeout, a token and a signal in one operation;
6. a shielded critical section;
7. inspecting the operation registry;
8. the ``with_timeout`` coroutine helper.

Run it::

    python examples/basic_usage.py                 # asyncio, uvloop, anyio, trio
    python examples/basic_usage.py asyncio trio    # only these modes

A cancellation always ends the ``async with`` block with the runtime's own cancel exception
(``asyncio.CancelledError`` / ``trio.Cancelled``): catch ``backend.get_cancelled_exc_class()``
where you want to carry on.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import AsyncIterator

from _common import outcome, parse_modes, run, say, section

from hother.cancelable import (
    Cancellable,
    CancellationReason,
    CancellationToken,
    OperationRegistry,
    OperationStatus,
    cancellable,
    get_backend,
    with_timeout,
)


async def timeout_demo() -> None:
    section("1. timeout")
    backend = get_backend()
    cancelled = backend.get_cancelled_exc_class()
    try:
        async with Cancellable.with_timeout(0.05, name="slow_call") as op:
            await backend.sleep(10)
    except cancelled:
        pass
    say(f"timeout: {op.context.name} -> {outcome(op)}")


async def token_demo() -> None:
    section("2. manual cancellation through a token")
    backend = get_backend()
    cancelled = backend.get_cancelled_exc_class()

    # From another task: the token is shared, whoever holds it can cancel the operation.
    token = CancellationToken()
    started = backend.create_event()

    async def stop_button() -> None:
        await started.wait()
        await token.cancel(CancellationReason.MANUAL, "user pressed stop")

    async with backend.create_task_group() as tg:
        tg.start_soon(stop_button)
        try:
            async with Cancellable.with_token(token, name="download") as op:
                started.set()
                await backend.sleep(10)
        except cancelled:
            pass
    say(f"task cancel: {outcome(op)}")

    # From a plain thread: cancel_sync() needs no bridge and no setup.
    token = CancellationToken()
    ready = threading.Event()

    def watchdog() -> None:
        ready.wait(5)
        won = token.cancel_sync(CancellationReason.MANUAL, "watchdog fired")
        print(f"    thread: cancel_sync() returned {won}", flush=True)

    thread = threading.Thread(target=watchdog)
    thread.start()
    try:
        async with Cancellable.with_token(token, name="render") as op:
            ready.set()
            await backend.sleep(10)
    except cancelled:
        pass
    thread.join()
    say(f"thread cancel: {outcome(op)}; a second cancel_sync() returns {token.cancel_sync()}")


async def numbers(delay: float) -> AsyncIterator[int]:
    """An endless source of numbers, one every ``delay`` seconds."""
    backend = get_backend()
    n = 0
    while True:
        await backend.sleep(delay)
        yield n
        n += 1


async def stream_demo() -> None:
    section("3. a stream with progress")
    backend = get_backend()
    cancelled = backend.get_cancelled_exc_class()
    reports: list[str] = []

    def on_progress(operation_id: str, message: object, metadata: object) -> None:
        reports.append(str(message))

    total = 0
    try:
        async with Cancellable.with_timeout(0.3, name="sum_numbers") as op:
            op.on_progress(on_progress)
            async for value in op.stream(numbers(0.005), report_interval=10):
                total += value
    except cancelled:
        pass
    partial = op.context.partial_result or {}
    say(f"stream: {outcome(op)}")
    say(f"progress reports received: {len(reports) > 0} (first: {reports[:1]})")
    say(f"items processed before the timeout: {partial.get('count')} (sum {total})")


@cancellable(timeout=0.05, name="fetch_quote")
async def fetch_quote(delay: float, cancellable: Cancellable | None = None) -> str:
    """A decorated function: each call runs in its own operation, passed in ``cancellable``."""
    assert cancellable is not None  # injected by the decorator
    await cancellable.report_progress("fetching")
    await get_backend().sleep(delay)
    return f"quote from {cancellable.context.name}"


async def decorator_demo() -> None:
    section("4. @cancellable")
    cancelled = get_backend().get_cancelled_exc_class()
    say(f"fast call: {await fetch_quote(0.001)!r}")
    try:
        await fetch_quote(10)
    except cancelled:
        say("slow call: cancelled by the decorator's 0.05 s timeout")


async def combine_demo() -> None:
    section("5. timeout + token + signal combined")
    backend = get_backend()
    cancelled = backend.get_cancelled_exc_class()
    token = CancellationToken()
    combined = Cancellable.with_timeout(5, name="deadline").combine(
        Cancellable.with_token(token), Cancellable.with_signal(signal.SIGUSR1)
    )
    try:
        async with combined as op:
            # A signal sent to the process (here by ourselves; try `kill -USR1 <pid>`).
            os.kill(os.getpid(), signal.SIGUSR1)
            await backend.sleep(10)
    except cancelled:
        pass
    say(f"combined: {outcome(op)}")
    # The same combination, cancelled through the token this time.
    combined = Cancellable.with_timeout(5).combine(
        Cancellable.with_token(token), Cancellable.with_signal(signal.SIGUSR1)
    )
    try:
        async with combined as op:
            await token.cancel(CancellationReason.MANUAL, "token wins")
            await backend.sleep(10)
    except cancelled:
        pass
    say(f"combined: {outcome(op)}")


async def shield_demo() -> None:
    section("6. shielding")
    backend = get_backend()
    cancelled = backend.get_cancelled_exc_class()
    steps: list[str] = []
    try:
        async with Cancellable.with_timeout(0.02, name="save_document") as op:
            async with op.shield():
                await backend.sleep(0.1)  # outlives the timeout, but is not interrupted
                steps.append("critical write finished")
            steps.append("never reached: the timeout is delivered after the shield")
    except cancelled:
        pass
    say(f"shield: {steps} then {outcome(op)}")


async def registry_demo() -> None:
    section("7. the registry")
    backend = get_backend()
    cancelled = backend.get_cancelled_exc_class()
    registry = OperationRegistry.get_instance()
    all_started = backend.create_event()
    count = 0

    async def job(i: int) -> None:
        nonlocal count
        try:
            async with Cancellable(name=f"basic_job_{i}", register_globally=True):
                count += 1
                if count == 3:
                    all_started.set()
                await backend.sleep(10)
        except cancelled:
            pass

    async with backend.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(job, i)
        await all_started.wait()
        running = await registry.list_operations(
            status=OperationStatus.RUNNING, name_pattern="basic_job"
        )
        say(f"running: {sorted(ctx.name or '' for ctx in running)}")
        await registry.cancel_operation(running[0].id, message="cancelled from the registry")
        n = await registry.cancel_all(message="shutting down")
        say(f"cancel_all() reached {n} operations (a cancelled one is active until it exits)")
    history = [c for c in await registry.get_history() if (c.name or "").startswith("basic_job")]
    for ctx in sorted(history[-3:], key=lambda c: c.name or ""):
        say(f"history: {ctx.name} {ctx.status.value} ({ctx.cancel_message!r})")


async def with_timeout_demo() -> None:
    section("8. with_timeout()")
    backend = get_backend()
    cancelled = backend.get_cancelled_exc_class()

    async def compute() -> int:
        await backend.sleep(0.001)
        return 42

    say(f"with_timeout(1, compute()) = {await with_timeout(1, compute())}")
    try:
        await with_timeout(0.05, backend.sleep(10))
    except cancelled:
        say("with_timeout(0.05, sleep(10)): cancelled (the runtime's cancel exception)")


async def demo() -> None:
    await timeout_demo()
    await token_demo()
    await stream_demo()
    await decorator_demo()
    await combine_demo()
    await shield_demo()
    await registry_demo()
    await with_timeout_demo()


def main() -> int:
    modes = parse_modes(sys.argv[1:])
    for mode in modes:
        run(mode, demo)
    print("basic_usage finished on:", ", ".join(modes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
