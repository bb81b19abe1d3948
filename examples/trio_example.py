"""hother.cancelable with plain trio code.

1. a nursery of workers, each an operation with the nursery host's operation as parent;
   cancelling the parent stops them all (reason PARENT);
2. ``trio.move_on_after()`` around an operation, and an operation timeout inside a nursery;
3. a memory channel consumed through ``cancellable_stream(timeout=...)``;
4. ``trio.to_thread.run_sync()`` and ``Cancellable.run_in_thread()`` with ``cancel_sync``;
5. a ``trio.CancelScope(shield=True)`` and ``op.shield()`` inside an operation.

Run it::

    python examples/trio_example.py                # the only mode: trio

Under trio a cancellation is a genuine ``trio.Cancelled``, raised by trio itself at a
checkpoint; catch it (or ``get_backend().get_cancelled_exc_class()``) where you carry on.
"""

from __future__ import annotations

import sys
import time

import trio
from _common import outcome, parse_modes, run, say, section

from hother.cancelable import (
    Cancellable,
    CancellationReason,
    CancellationToken,
    cancellable_stream,
    current_operation,
)


async def nursery_demo() -> None:
    section("1. a nursery of child operations")
    children: list[Cancellable] = []
    all_started = trio.Event()

    async def worker(i: int, parent: Cancellable) -> None:
        child = Cancellable(name=f"worker_{i}", parent=parent)
        children.append(child)
        try:
            async with child:
                if len(children) == 3:
                    all_started.set()
                await trio.sleep_forever()
        except trio.Cancelled:
            pass  # our parent stopped us: end this task quietly
        # (re-raising is fine too: the nursery's cancelled scope absorbs it)

    parent = Cancellable(name="supervisor")
    try:
        async with parent:
            async with trio.open_nursery() as nursery:
                for i in range(3):
                    nursery.start_soon(worker, i, parent)
                await all_started.wait()
                await parent.cancel(CancellationReason.MANUAL, "maintenance window")
            await trio.sleep_forever()  # the supervisor is cancelled at its next checkpoint
    except trio.Cancelled:
        pass
    say(f"workers: {sorted({outcome(c).split(' (')[0] for c in children})}")
    say(f"supervisor: {outcome(parent)}")


async def move_on_after_demo() -> None:
    section("2. trio.move_on_after() and operation timeouts")
    op = Cancellable(name="inside_move_on_after")
    with trio.move_on_after(0.05) as scope:
        async with op:
            await trio.sleep_forever()
    say(f"inside_move_on_after: {outcome(op)}; trio scope caught it: {scope.cancelled_caught}")

    timed: list[Cancellable] = []

    async def timed_task(seconds: float) -> None:
        op = Cancellable.with_timeout(0.05, name=f"sleep_{seconds}")
        timed.append(op)
        try:
            async with op:
                await trio.sleep(seconds)
        except trio.Cancelled:
            pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(timed_task, 0.001)
        nursery.start_soon(timed_task, 10)
    for op in sorted(timed, key=lambda o: o.context.name or ""):
        say(f"{op.context.name}: {outcome(op)}")


async def channel_demo() -> None:
    section("3. a memory channel with a timeout")
    send, receive = trio.open_memory_channel[int](0)
    received = 0

    async def produce() -> None:
        async with send:
            i = 0
            while True:
                await send.send(i)
                await trio.sleep(0.001)
                i += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        try:
            async for _ in cancellable_stream(receive, timeout=0.1, name="channel"):
                received += 1
        except trio.Cancelled:
            say(f"channel stream: stopped by its timeout after {received} items")
        nursery.cancel_scope.cancel()  # stop the producer


async def thread_demo() -> None:
    section("4. threads")
    token = CancellationToken()

    def sentinel() -> str:
        time.sleep(0.02)  # blocking work
        token.cancel_sync(CancellationReason.MANUAL, "sentinel tripped")
        return "sentinel done"

    results: list[str] = []

    async def run_sentinel() -> None:
        results.append(await trio.to_thread.run_sync(sentinel))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_sentinel)
        try:
            async with Cancellable.with_token(token, name="guarded") as op:
                await trio.sleep_forever()
        except trio.Cancelled:
            pass
    say(f"guarded: {outcome(op)}; {results[0]}")

    def which_operation() -> str:
        current = current_operation()  # run_in_thread makes the operation current there
        return current.context.name or "?" if current is not None else "none"

    async with Cancellable(name="threaded") as op:
        name = await op.run_in_thread(which_operation)
        say(f"run_in_thread: the thread sees current_operation() = {name!r}")


async def shield_demo() -> None:
    section("5. shields")
    steps: list[str] = []
    try:
        async with Cancellable.with_timeout(0.02, name="flush") as op:
            with trio.CancelScope(shield=True):
                await trio.sleep(0.05)
                steps.append("trio shield done")
            async with op.shield():
                await trio.sleep(0.01)
                steps.append("op.shield() done")
            steps.append("not reached")
    except trio.Cancelled:
        pass
    say(f"flush: {steps} then {outcome(op)}")


async def demo() -> None:
    await nursery_demo()
    await move_on_after_demo()
    await channel_demo()
    await thread_demo()
    await shield_demo()


def main() -> int:
    reason = "this example uses the trio API (see asyncio_example.py / anyio_example.py)"
    modes = parse_modes(
        sys.argv[1:],
        supported=("trio",),
        unsupported={"asyncio": reason, "uvloop": reason, "anyio": reason},
    )
    for mode in modes:
        run(mode, demo)
    print("trio_example finished on:", ", ".join(modes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
