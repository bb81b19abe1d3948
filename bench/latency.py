"""b. Cancellation latency: from the cancel call to the operation's except block.

Three paths, per run mode (asyncio, uvloop, anyio, trio), each against the runtime's own way:

* task -> task: ``await token.cancel()`` in one task, the operation (``Cancellable.with_token``)
  blocked in another; reference: ``task.cancel()`` (asyncio, uvloop) or ``CancelScope.cancel()``
  (anyio, trio). A counter callback rescheduled every loop iteration (``call_soon``; on trio a
  task doing one checkpoint per scheduling batch) counts the loop iterations the delivery took.
* thread -> task: ``token.cancel_sync()`` from a plain thread; reference:
  ``loop.call_soon_threadsafe(task.cancel)`` / ``TrioToken.run_sync_soon(scope.cancel)``.
* deadline -> task: how late after its deadline a ``Cancellable.with_timeout(d)`` (and a
  ``Cancellable().add_source(TimeoutSource(d))``) has unwound; reference ``asyncio.timeout(d)``
  / ``anyio.move_on_after(d)`` / ``trio.move_on_after(d)``.

The contenders of a path alternate trial by trial. The garbage collector is off while timing.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from ._common import RUN_MODES, Sample, Settings, no_gc, pc, run_in_mode

Job = tuple[Callable[[], object], list[int]]


class _Worker:
    """A plain thread that runs ``fn()`` for each job, stamping ``perf_counter_ns`` first."""

    def __init__(self) -> None:
        self._q: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name="bench-canceller", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        while True:
            job = self._q.get()
            if job is None:
                return
            fn, box = job
            box.append(pc())
            fn()

    def submit(self, fn: Callable[[], object], box: list[int]) -> None:
        """Run ``fn`` on the thread; ``box`` receives the time stamp taken just before."""
        self._q.put((fn, box))

    def close(self) -> None:
        """Stop the thread."""
        self._q.put(None)
        self._thread.join(timeout=10)


def _summary(sample: Sample, iterations: list[int] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "p50_us": sample.p50 / 1000,
        "p99_us": sample.p99 / 1000,
        "max_us": sample.max / 1000,
        "n": len(sample.values),
    }
    if iterations is not None:
        out["iterations_max"] = max(iterations) if iterations else None
        out["iterations_p50"] = sorted(iterations)[len(iterations) // 2] if iterations else None
    return out


# ------------------------------------------------------------------------- asyncio family
async def _asyncio_family(settings: Settings, mode: str) -> dict[str, Any]:
    import anyio

    from hother.cancelable import Cancellable, CancellationToken
    from hother.cancelable.sources.timeout import TimeoutSource

    loop = asyncio.get_running_loop()
    cancelled = asyncio.CancelledError
    anyio_mode = mode == "anyio"

    # -- task -> task, with an iteration counter
    ticks = [0]
    ticking = [False]

    def tick() -> None:
        ticks[0] += 1
        if ticking[0]:
            loop.call_soon(tick)

    def start_ticks() -> None:
        ticking[0] = True
        loop.call_soon(tick)

    def stop_ticks() -> None:
        ticking[0] = False

    async def t2t(ours: bool) -> tuple[int, int]:
        token = CancellationToken()
        entered = loop.create_future()
        end = [0, 0]
        scope: list[anyio.CancelScope] = []

        async def op() -> None:
            try:
                if ours:
                    async with Cancellable.with_token(token):
                        entered.set_result(None)
                        await loop.create_future()
                elif anyio_mode:
                    with anyio.CancelScope() as sc:
                        scope.append(sc)
                        entered.set_result(None)
                        await loop.create_future()
                else:
                    entered.set_result(None)
                    await loop.create_future()
            except cancelled:
                pass
            end[0] = pc()
            end[1] = ticks[0]

        task = loop.create_task(op())
        await entered
        t0, i0 = pc(), ticks[0]
        if ours:
            await token.cancel()
        elif anyio_mode:
            scope[0].cancel()
        else:
            task.cancel()
        await task
        return end[0] - t0, end[1] - i0

    # -- thread -> task
    worker = _Worker()

    async def thread(ours: bool) -> int:
        token = CancellationToken()
        entered = loop.create_future()
        end = [0]
        stamp: list[int] = []
        scope: list[anyio.CancelScope] = []

        async def op() -> None:
            try:
                if ours:
                    async with Cancellable.with_token(token):
                        entered.set_result(None)
                        await loop.create_future()
                elif anyio_mode:
                    with anyio.CancelScope() as sc:
                        scope.append(sc)
                        entered.set_result(None)
                        await loop.create_future()
                else:
                    entered.set_result(None)
                    await loop.create_future()
            except cancelled:
                pass
            end[0] = pc()

        task = loop.create_task(op())
        await entered
        if ours:
            worker.submit(token.cancel_sync, stamp)
        elif anyio_mode:
            sc0 = scope[0]
            worker.submit(lambda: loop.call_soon_threadsafe(sc0.cancel), stamp)
        else:
            worker.submit(lambda: loop.call_soon_threadsafe(task.cancel), stamp)
        await task
        return end[0] - stamp[0]

    # -- deadline -> task
    d = settings.deadline_s

    async def deadline(kind: str) -> int:
        t0 = pc()
        try:
            if kind == "with_timeout":
                async with Cancellable.with_timeout(d):
                    await loop.create_future()
            elif kind == "TimeoutSource":
                async with Cancellable().add_source(TimeoutSource(d)):
                    await loop.create_future()
            elif anyio_mode:
                with anyio.move_on_after(d):
                    await loop.create_future()
            else:
                async with asyncio.timeout(d):
                    await loop.create_future()
        except (cancelled, TimeoutError):
            pass
        return pc() - t0 - int(d * 1e9)

    if anyio_mode:
        refs = {
            "task": "anyio CancelScope.cancel()",
            "thread": "call_soon_threadsafe(scope.cancel)",
            "deadline": "anyio.move_on_after(d)",
        }
    else:
        refs = {
            "task": "task.cancel()",
            "thread": "call_soon_threadsafe(task.cancel)",
            "deadline": "asyncio.timeout(d)",
        }
    return await _drive(settings, t2t, thread, deadline, refs, (start_ticks, stop_ticks), worker)


async def _drive(
    settings: Settings,
    t2t: Callable[[bool], Awaitable[tuple[int, int]]],
    thread: Callable[[bool], Awaitable[int]],
    deadline: Callable[[str], Awaitable[int]],
    refs: dict[str, str],
    ticker: tuple[Callable[[], None], Callable[[], None]],
    worker: _Worker,
) -> dict[str, Any]:
    """Run the three paths (contenders alternating) and summarise them.

    ``refs`` names the reference of each path; ``ticker`` starts/stops the iteration counter.
    """
    res: dict[str, Any] = {}
    start_ticks, stop_ticks = ticker
    try:
        # task -> task (the tick counter runs only here: it keeps the loop from sleeping)
        start_ticks()
        ours_s, ref_s = Sample(), Sample()
        ours_it: list[int] = []
        ref_it: list[int] = []
        for _ in range(20):
            await t2t(True)
            await t2t(False)
        with no_gc():
            for i in range(settings.latency_trials):
                for ours in (True, False) if i % 2 == 0 else (False, True):
                    lat, its = await t2t(ours)
                    (ours_s if ours else ref_s).add(lat)
                    (ours_it if ours else ref_it).append(its)
        stop_ticks()
        res["task"] = {
            "await token.cancel()": _summary(ours_s, ours_it),
            refs["task"]: _summary(ref_s, ref_it),
        }

        # thread -> task
        ours_s, ref_s = Sample(), Sample()
        for _ in range(20):
            await thread(True)
            await thread(False)
        with no_gc():
            for i in range(settings.latency_trials):
                for ours in (True, False) if i % 2 == 0 else (False, True):
                    (ours_s if ours else ref_s).add(await thread(ours))
        res["thread"] = {
            "token.cancel_sync()": _summary(ours_s),
            refs["thread"]: _summary(ref_s),
        }

        # deadline -> task
        kinds = ("with_timeout", "TimeoutSource", "reference")
        samples = {k: Sample() for k in kinds}
        for k in kinds:
            await deadline(k)
        with no_gc():
            for i in range(settings.deadline_trials):
                shift = i % len(kinds)
                for k in kinds[shift:] + kinds[:shift]:
                    samples[k].add(await deadline(k))
        res["deadline"] = {
            "Cancellable.with_timeout(d)": _summary(samples["with_timeout"]),
            "Cancellable().add_source(TimeoutSource(d))": _summary(samples["TimeoutSource"]),
            refs["deadline"]: _summary(samples["reference"]),
        }
        res["deadline_s"] = settings.deadline_s
    finally:
        stop_ticks()
        worker.close()
    return res


# ------------------------------------------------------------------------- trio
async def _trio(settings: Settings) -> dict[str, Any]:
    import trio

    from hother.cancelable import Cancellable, CancellationToken
    from hother.cancelable.sources.timeout import TimeoutSource

    cancelled = trio.Cancelled
    trio_token = trio.lowlevel.current_trio_token()
    ticks = [0]
    ticking = [False]
    worker = _Worker()

    async def counter() -> None:
        while ticking[0]:
            ticks[0] += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:

        def start_ticks() -> None:
            ticking[0] = True
            nursery.start_soon(counter)

        def stop_ticks() -> None:
            ticking[0] = False

        async def run_op(
            ours: bool, token: Any, entered: trio.Event, end: list[int], scope: list[Any]
        ) -> None:
            try:
                if ours:
                    async with Cancellable.with_token(token):
                        entered.set()
                        await trio.sleep_forever()
                else:
                    with trio.CancelScope() as sc:
                        scope.append(sc)
                        entered.set()
                        await trio.sleep_forever()
            except cancelled:
                pass
            end.append(pc())
            end.append(ticks[0])

        async def t2t(ours: bool) -> tuple[int, int]:
            token = CancellationToken()
            entered = trio.Event()
            end: list[int] = []
            scope: list[Any] = []
            done = trio.Event()

            async def op() -> None:
                await run_op(ours, token, entered, end, scope)
                done.set()

            nursery.start_soon(op)
            await entered.wait()
            t0, i0 = pc(), ticks[0]
            if ours:
                await token.cancel()
            else:
                scope[0].cancel()
            await done.wait()
            return end[0] - t0, end[1] - i0

        async def thread(ours: bool) -> int:
            token = CancellationToken()
            entered = trio.Event()
            end: list[int] = []
            scope: list[Any] = []
            stamp: list[int] = []
            done = trio.Event()

            async def op() -> None:
                await run_op(ours, token, entered, end, scope)
                done.set()

            nursery.start_soon(op)
            await entered.wait()
            if ours:
                worker.submit(token.cancel_sync, stamp)
            else:
                sc0 = scope[0]
                worker.submit(lambda: trio_token.run_sync_soon(sc0.cancel), stamp)
            await done.wait()
            return end[0] - stamp[0]

        d = settings.deadline_s

        async def deadline(kind: str) -> int:
            t0 = pc()
            try:
                if kind == "with_timeout":
                    async with Cancellable.with_timeout(d):
                        await trio.sleep_forever()
                elif kind == "TimeoutSource":
                    async with Cancellable().add_source(TimeoutSource(d)):
                        await trio.sleep_forever()
                else:
                    with trio.move_on_after(d):
                        await trio.sleep_forever()
            except cancelled:
                pass
            return pc() - t0 - int(d * 1e9)

        refs = {
            "task": "trio CancelScope.cancel()",
            "thread": "run_sync_soon(scope.cancel)",
            "deadline": "trio.move_on_after(d)",
        }
        try:
            res = await _drive(
                settings, t2t, thread, deadline, refs, (start_ticks, stop_ticks), worker
            )
        finally:
            nursery.cancel_scope.cancel()
    return res


def run(settings: Settings) -> dict[str, Any]:
    """All paths in every run mode: ``{mode: {"task"|"thread"|"deadline": {name: stats}}}``."""
    out: dict[str, Any] = {}
    for mode in RUN_MODES:
        if mode == "trio":

            async def trio_main() -> dict[str, Any]:
                return await _trio(settings)

            out[mode] = run_in_mode(mode, trio_main)
        else:

            async def main(mode: str = mode) -> dict[str, Any]:
                return await _asyncio_family(settings, mode)

            out[mode] = run_in_mode(mode, main)
    return out
