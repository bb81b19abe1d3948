"""f. A realistic operation (~1 ms): our overhead as a percentage of it.

The operation is a chain of 10 steps; each step awaits a future resolved by the event loop
(``loop.call_soon(fut.set_result, None)``; on trio a checkpoint) and then does ~100 us of
CPU work (the kind of parsing/serialising a request handler does). The plain operation and
the same operation wrapped in each contender alternate trial by trial; the overhead is the
median of the paired differences divided by the median plain duration, in wall time
(``perf_counter_ns``) and in the thread's CPU time (``thread_time_ns``: the operation never
blocks, so its CPU time is its duration minus the time other processes took the core; on a
busy machine it is the steadier of the two). A plain-vs-plain pair shows the noise floor.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from ._common import Settings, median, no_gc, pc, run_in_mode

LOOPS: tuple[str, ...] = ("asyncio", "uvloop", "trio")
#: the plain operation against itself: the noise floor of the paired measurement
CONTROL = "A/A control (plain vs plain)"
cpu = time.thread_time_ns

_PAYLOAD = {"items": [{"id": i, "name": f"item-{i}", "tags": ["a", "b"]} for i in range(20)]}


def _work(reps: int) -> None:
    for _ in range(reps):
        json.loads(json.dumps(_PAYLOAD))


def _calibrate(target_us: float) -> int:
    """Repetitions of the JSON round trip that take about ``target_us``."""
    reps = 1
    while True:
        best = min(_timed(reps) for _ in range(5))
        if best >= 20_000:  # 20 us measured: scale linearly
            return max(1, round(reps * target_us * 1000 / best))
        reps *= 2


def _timed(reps: int) -> int:
    t0 = pc()
    _work(reps)
    return pc() - t0


async def _measure(settings: Settings, loop_name: str) -> dict[str, Any]:
    from hother.cancelable import Cancellable

    reps = _calibrate(settings.realistic_step_us)
    steps = settings.realistic_steps

    if loop_name == "trio":
        import trio

        async def step() -> None:
            await trio.lowlevel.checkpoint()
            _work(reps)

        def ref_scope() -> Any:
            return trio.move_on_after(10)

        ref_name = "trio.move_on_after(10)"
        ref_is_async = False
    else:
        loop = asyncio.get_running_loop()

        async def step() -> None:
            fut = loop.create_future()
            loop.call_soon(fut.set_result, None)
            await fut
            _work(reps)

        def ref_scope() -> Any:
            return asyncio.timeout(10)

        ref_name = "asyncio.timeout(10)"
        ref_is_async = True

    async def run_op(kind: str) -> tuple[int, int]:
        """One operation: (wall ns, thread CPU ns)."""
        t0, c0 = pc(), cpu()
        if kind == "plain":
            for _ in range(steps):
                await step()
        elif kind == "with_timeout":
            async with Cancellable.with_timeout(10):
                for _ in range(steps):
                    await step()
        elif kind == "bare":
            async with Cancellable():
                for _ in range(steps):
                    await step()
        elif ref_is_async:
            async with ref_scope():
                for _ in range(steps):
                    await step()
        else:
            with ref_scope():
                for _ in range(steps):
                    await step()
        return pc() - t0, cpu() - c0

    cands: dict[str, str] = {
        "Cancellable.with_timeout(10)": "with_timeout",
        "Cancellable()": "bare",
        ref_name: "reference",
        CONTROL: "plain",
    }
    base_wall: list[int] = []
    base_cpu: list[int] = []
    d_wall: dict[str, list[int]] = {k: [] for k in cands}
    d_cpu: dict[str, list[int]] = {k: [] for k in cands}
    for kind in ("plain", *cands.values()):
        await run_op(kind)
    with no_gc():
        for i in range(settings.realistic_trials):
            for name, kind in cands.items():
                if i % 2 == 0:
                    p = await run_op("plain")
                    w = await run_op(kind)
                else:
                    w = await run_op(kind)
                    p = await run_op("plain")
                base_wall.append(p[0])
                base_cpu.append(p[1])
                d_wall[name].append(w[0] - p[0])
                d_cpu[name].append(w[1] - p[1])
    wall_med, cpu_med = median(base_wall), median(base_cpu)
    return {
        "plain_ms": wall_med / 1e6,
        "plain_cpu_ms": cpu_med / 1e6,
        "contenders": {
            name: {
                "overhead_us": median(d_wall[name]) / 1000,
                "overhead_pct": 100 * median(d_wall[name]) / wall_med,
                "cpu_overhead_us": median(d_cpu[name]) / 1000,
                "cpu_overhead_pct": 100 * median(d_cpu[name]) / cpu_med,
            }
            for name in cands
        },
    }


def run(settings: Settings) -> dict[str, Any]:
    """``{loop: {"plain_ms", "contenders": {name: {"overhead_us", "overhead_pct"}}}}``."""
    out: dict[str, Any] = {}
    for loop in LOOPS:

        async def main(loop: str = loop) -> dict[str, Any]:
            return await _measure(settings, loop)

        out[loop] = run_in_mode(loop, main)
    return out
