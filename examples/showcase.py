"""The hother.cancelable showcase: the same program on every run mode.

Run with ``make demo`` (or ``python examples/showcase.py``). For each run mode — asyncio,
asyncio + uvloop, the anyio backend forced on asyncio, and trio — it shows which backend was
detected, then a timeout, a manual token cancelled from a plain thread, a parent cancelling its
child, a shielded critical section, and the engine's single loop timer.
"""

from __future__ import annotations

import asyncio
import sys
import threading

from _common import run  # the run-mode runner shared by the examples

from hother.cancelable import (
    Cancellable,
    CancellationReason,
    CancellationToken,
    detect_backend,
    get_backend,
)


def line(text: str) -> None:
    print(f"    {text}", flush=True)


async def demo() -> None:
    backend = get_backend()
    cancelled = backend.get_cancelled_exc_class()
    line(
        f"detected backend: {detect_backend()!r} (cancel exception: {cancelled.__module__}."
        f"{cancelled.__qualname__})"
    )

    # 1. a timeout
    start = backend.current_time()
    try:
        async with Cancellable.with_timeout(0.05, name="slow-call") as op:
            await backend.sleep(10)
    except cancelled:
        took = backend.current_time() - start
        line(
            f"timeout: {op.context.name} ended {op.status.value} / "
            f"{op.context.cancel_reason.value} after {took * 1000:.0f} ms"
        )

    # 2. a token cancelled from a plain thread (no bridge, no setup)
    token = CancellationToken()
    started = threading.Event()

    def worker() -> None:
        started.wait()
        token.cancel_sync(CancellationReason.MANUAL, "stopped from a thread")

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        async with Cancellable.with_token(token, name="token-op") as op:
            started.set()
            await backend.sleep(10)
    except cancelled:
        line(
            f"thread cancel: {op.status.value} / {op.context.cancel_reason.value} "
            f"({op.context.cancel_message!r})"
        )
    thread.join()

    # 3. parent and child
    parent = Cancellable(name="parent")
    try:
        async with parent:
            child = Cancellable(name="child", parent=parent)
            try:
                async with child:
                    await parent.cancel(message="shutting down")
                    await backend.sleep(10)
            finally:
                line(
                    f"child of a cancelled parent: {child.status.value} / "
                    f"{child.context.cancel_reason.value}"
                )
    except cancelled:
        line(f"parent: {parent.status.value} / {parent.context.cancel_reason.value}")

    # 4. a shielded critical section survives its operation's timeout
    steps: list[str] = []
    try:
        async with Cancellable.with_timeout(0.02, name="with-shield") as op:
            async with op.shield():
                await backend.sleep(0.06)
                steps.append("critical section finished")
            steps.append("not reached")
    except cancelled:
        line(f"shield: {steps} then {op.status.value} / {op.context.cancel_reason.value}")

    # 5. one loop timer for many deadlines (asyncio engine only)
    if detect_backend() == "asyncio":
        from hother.cancelable import _engine

        gate = asyncio.Event()

        async def waiter(i: int) -> None:
            async with Cancellable.with_timeout(60 + i):
                await gate.wait()

        tasks = [asyncio.create_task(waiter(i)) for i in range(1000)]
        await asyncio.sleep(0)
        stats = _engine.loop_stats()
        line(
            f"1000 operations with distinct timeouts: {stats['deadlines']} deadlines, "
            f"{stats['armed_timers']} loop timer armed"
        )
        gate.set()
        await asyncio.gather(*tasks)


def main() -> int:
    modes = sys.argv[1:] or ["asyncio", "uvloop", "anyio", "trio"]
    for mode in modes:
        run(mode, demo)
    print("showcase finished on:", ", ".join(modes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
