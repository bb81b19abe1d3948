"""c. Scale: many concurrent operations with distinct timeouts, and many timeouts firing at once.

* ``live``: N tasks, each inside one operation with its own (distinct, far) timeout, all blocked
  at once. Wall time to start them all (create the tasks and run each to its first block), memory
  per live operation beyond the task itself (tracemalloc in a fresh subprocess, minus the same
  tasks without an operation; and, as a cross-check that also counts the engine's ``malloc``, the
  RSS growth of a fresh subprocess), timers armed in the loop (``_engine.loop_stats()`` and
  ``len(loop._scheduled)``). Ours against ``asyncio.timeout``.
* ``fire``: M tasks whose (distinct) deadlines all fall within a few microseconds; time from
  the first deadline until the last task has unwound.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import tracemalloc
from collections.abc import Callable, Coroutine
from typing import Any

from ._common import ROOT, Settings, median, no_gc, pc, run_in_mode

KINDS: tuple[str, ...] = ("bare task", "Cancellable.with_timeout(t_i)", "asyncio.timeout(t_i)")
FIRE_KINDS: dict[str, tuple[str, ...]] = {
    "asyncio": ("Cancellable.with_timeout(t_i)", "asyncio.timeout(t_i)"),
    "uvloop": ("Cancellable.with_timeout(t_i)", "asyncio.timeout(t_i)"),
    "trio": ("Cancellable.with_timeout(t_i)", "trio.move_on_after(t_i)"),
}


def _op_factory(
    kind: str, release: asyncio.Future[None]
) -> Callable[[int], Coroutine[Any, Any, None]]:
    from hother.cancelable import Cancellable

    async def bare(i: int) -> None:
        await release

    async def ours(i: int) -> None:
        async with Cancellable.with_timeout(1000.0 + i * 1e-4):
            await release

    async def stdlib(i: int) -> None:
        async with asyncio.timeout(1000.0 + i * 1e-4):
            await release

    return {KINDS[0]: bare, KINDS[1]: ours, KINDS[2]: stdlib}[kind]


async def _live(kind: str, n: int, measure_memory: bool) -> dict[str, Any]:
    """Start ``n`` blocked tasks of ``kind``; measure; release them."""
    from hother.cancelable import _engine

    loop = asyncio.get_running_loop()
    release: asyncio.Future[None] = loop.create_future()
    fn = _op_factory(kind, release)
    all_blocked: asyncio.Future[None] = loop.create_future()
    tasks: list[asyncio.Task[None]] = []
    out: dict[str, Any] = {}

    async def last() -> None:  # runs after every task of the batch has run to its first block
        all_blocked.set_result(None)

    with no_gc():
        if measure_memory:
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
        t0 = pc()
        for i in range(n):
            tasks.append(loop.create_task(fn(i)))
        marker = loop.create_task(last())
        await all_blocked
        await marker
        out["start_s"] = (pc() - t0) / 1e9
        if measure_memory:
            out["traced_bytes"] = tracemalloc.get_traced_memory()[0] - before
            tracemalloc.stop()
        stats = _engine.loop_stats()
        out["engine_armed_timers"] = stats["armed_timers"]
        out["engine_deadlines"] = stats["deadlines"]
        out["loop_scheduled"] = (
            len(getattr(loop, "_scheduled", ())) if hasattr(loop, "_scheduled") else None
        )
        t1 = pc()
        release.set_result(None)
        await asyncio.gather(*tasks)
        out["finish_s"] = (pc() - t1) / 1e9
    return out


async def _census(kind: str, n: int) -> dict[str, tuple[int, int]]:
    """``{type name: (count, bytes)}`` of the GC-tracked objects while ``n`` tasks are live."""
    loop = asyncio.get_running_loop()
    release: asyncio.Future[None] = loop.create_future()
    fn = _op_factory(kind, release)
    with no_gc():
        tasks = [loop.create_task(fn(i)) for i in range(n)]
        await asyncio.sleep(0)
        census: dict[str, tuple[int, int]] = {}
        for obj in gc.get_objects():
            name = type(obj).__qualname__
            count, size = census.get(name, (0, 0))
            census[name] = (count + 1, size + sys.getsizeof(obj))
        release.set_result(None)
        await asyncio.gather(*tasks)
    return census


def breakdown(n: int = 20_000) -> list[dict[str, Any]]:
    """Objects per live ``Cancellable.with_timeout`` operation beyond a bare task, by type."""

    async def main() -> list[dict[str, Any]]:
        await _census(KINDS[1], 200)  # warm up
        bare = await _census(KINDS[0], n)
        ours = await _census(KINDS[1], n)
        rows: list[dict[str, Any]] = []
        for name, (count, size) in ours.items():
            c0, s0 = bare.get(name, (0, 0))
            per_op = (count - c0) / n
            if per_op >= 0.5:
                rows.append({"type": name, "per_op": per_op, "bytes_per_op": (size - s0) / n})
        rows.sort(key=lambda r: -float(r["bytes_per_op"]))
        return rows

    return run_in_mode("asyncio", main)


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rss_child(kind: str, n: int) -> dict[str, int]:
    """In a fresh process: RSS growth while ``n`` tasks of ``kind`` are live."""

    async def main() -> dict[str, int]:
        loop = asyncio.get_running_loop()
        # warm up the engine and the loop (lazily created state), then measure
        warm: asyncio.Future[None] = loop.create_future()
        fn = _op_factory(kind, warm)
        tasks = [loop.create_task(fn(i)) for i in range(100)]
        await asyncio.sleep(0)
        warm.set_result(None)
        await asyncio.gather(*tasks)
        gc.collect()
        release: asyncio.Future[None] = loop.create_future()
        fn = _op_factory(kind, release)
        before = _rss_bytes()
        tasks = [loop.create_task(fn(i)) for i in range(n)]
        await asyncio.sleep(0)
        after = _rss_bytes()
        release.set_result(None)
        await asyncio.gather(*tasks)
        return {"rss_bytes": after - before}

    gc.disable()
    return run_in_mode("asyncio", main)


def traced_child(kind: str, n: int) -> dict[str, int]:
    """In a fresh process: tracemalloc's growth while ``n`` tasks of ``kind`` are live.

    A fresh process, because the same measurement in a process that ran other rounds is off
    by a whole set-table resize (asyncio's set of all tasks keeps its size and dummies from
    earlier rounds: +-42 B per operation at 100,000, depending on what ran before)."""

    async def main() -> dict[str, int]:
        await _live(kind, 200, measure_memory=False)  # warm up
        return {"traced_bytes": int((await _live(kind, n, measure_memory=True))["traced_bytes"])}

    return run_in_mode("asyncio", main)


def _in_child(kind: str, n: int, key: str, *mode: str) -> int | None:
    """``key`` of what ``python -m bench.scale KIND N [MODE]`` measured, or None."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "bench.scale", kind, str(n), *mode],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
        return int(json.loads(proc.stdout)[key])
    except (OSError, subprocess.SubprocessError, ValueError, KeyError):
        return None


def _traced(kind: str, n: int) -> int:
    traced = _in_child(kind, n, "traced_bytes", "traced")
    if traced is None:  # fallback: in this process
        traced = traced_child(kind, n)["traced_bytes"]
    return traced


def _rss(kind: str, n: int) -> int | None:
    return _in_child(kind, n, "rss_bytes")


# ----------------------------------------------------------------------------- firing
async def _fire_asyncio(kind: str, m: int) -> dict[str, Any]:
    from hother.cancelable import Cancellable

    loop = asyncio.get_running_loop()
    base = loop.time() + max(0.25, m * 25e-6)  # leave time to start every task first
    ends: list[int] = []
    started = [0]

    async def op(i: int) -> None:
        timeout = base + i * 1e-9 - loop.time()
        try:
            if kind.startswith("Cancellable"):
                async with Cancellable.with_timeout(timeout):
                    started[0] += 1
                    await loop.create_future()
            else:
                async with asyncio.timeout(timeout):
                    started[0] += 1
                    await loop.create_future()
        except (asyncio.CancelledError, TimeoutError):
            ends.append(pc())

    with no_gc():
        tasks = [loop.create_task(op(i)) for i in range(m)]
        await asyncio.gather(*tasks)
    return _fire_summary(ends, base, m, started[0], loop.time)


async def _fire_trio(kind: str, m: int) -> dict[str, Any]:
    import trio

    from hother.cancelable import Cancellable

    base = trio.current_time() + max(0.25, m * 40e-6)
    ends: list[int] = []
    started = [0]

    async def op(i: int) -> None:
        timeout = base + i * 1e-9 - trio.current_time()
        if kind.startswith("Cancellable"):
            try:
                async with Cancellable.with_timeout(timeout):
                    started[0] += 1
                    await trio.sleep_forever()
            except trio.Cancelled:
                pass
        else:
            with trio.move_on_after(timeout):
                started[0] += 1
                await trio.sleep_forever()
        ends.append(pc())

    with no_gc():
        async with trio.open_nursery() as nursery:
            for i in range(m):
                nursery.start_soon(op, i)
    return _fire_summary(ends, base, m, started[0], trio.current_time)


def _fire_summary(
    ends: list[int], base: float, m: int, started: int, now: Callable[[], float]
) -> dict[str, Any]:
    # translate the loop-clock deadline to perf_counter_ns (both monotonic, same origin on
    # Linux; measure the offset anyway)
    offset_ns = pc() - int(now() * 1e9)
    base_ns = int(base * 1e9) + offset_ns
    return {
        "n": m,
        "unwound": len(ends),
        "started_before_deadline": started == m,
        "first_after_deadline_ms": (min(ends) - base_ns) / 1e6 if ends else None,
        "all_unwound_after_deadline_ms": (max(ends) - base_ns) / 1e6 if ends else None,
        "spread_ms": (max(ends) - min(ends)) / 1e6 if ends else None,
    }


# ----------------------------------------------------------------------------- entry
def _median_record(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of every numeric field over the rounds (booleans: all of them)."""
    out: dict[str, Any] = {}
    for key, first in records[0].items():
        vals = [r[key] for r in records]
        if isinstance(first, bool):
            out[key] = all(vals)
        elif key == "unwound":
            out[key] = min(vals)
        elif isinstance(first, int) and all(isinstance(v, int) for v in vals):
            out[key] = round(median(vals))
        elif isinstance(first, int | float) and all(v is not None for v in vals):
            out[key] = median(vals)
        else:
            out[key] = first
    return out


def run(settings: Settings) -> dict[str, Any]:
    """Live operations (asyncio, uvloop) and firing timeouts (asyncio, uvloop, trio).

    Wall times are medians over ``settings.scale_rounds`` rounds (kinds interleaved).
    """
    n, m, rounds = settings.scale_ops, settings.fire_ops, settings.scale_rounds
    out: dict[str, Any] = {"n": n, "m": m, "rounds": rounds, "live": {}, "fire": {}}
    for loop_name in ("asyncio", "uvloop"):
        # one fresh event loop per measurement (no timer left armed by another kind), the
        # kinds interleaved round by round
        recs: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
        for _ in range(rounds):
            for kind in KINDS:

                async def timed(kind: str = kind) -> dict[str, Any]:
                    await _live(kind, 200, measure_memory=False)  # warm up
                    return await _live(kind, n, measure_memory=False)

                recs[kind].append(run_in_mode(loop_name, timed))
        per_kind = {k: _median_record(v) for k, v in recs.items()}
        if loop_name == "asyncio":
            for kind in KINDS:
                per_kind[kind]["traced_bytes"] = _traced(kind, n)
                per_kind[kind]["rss_bytes"] = _rss(kind, n)
            bare = per_kind[KINDS[0]]
            for kind in KINDS[1:]:
                rec = per_kind[kind]
                rec["traced_per_op_bytes"] = (rec["traced_bytes"] - bare["traced_bytes"]) / n
                if rec["rss_bytes"] is not None and bare["rss_bytes"] is not None:
                    rec["rss_per_op_bytes"] = (rec["rss_bytes"] - bare["rss_bytes"]) / n
            out["breakdown"] = breakdown(min(n, 20_000))
        out["live"][loop_name] = per_kind
    for loop_name in FIRE_KINDS:

        async def fire(loop_name: str = loop_name) -> dict[str, list[dict[str, Any]]]:
            recs: dict[str, list[dict[str, Any]]] = {k: [] for k in FIRE_KINDS[loop_name]}
            for _ in range(rounds):
                for kind in recs:
                    if loop_name == "trio":
                        recs[kind].append(await _fire_trio(kind, m))
                    else:
                        recs[kind].append(await _fire_asyncio(kind, m))
            return recs

        out["fire"][loop_name] = {
            k: _median_record(v) for k, v in run_in_mode(loop_name, fire).items()
        }
    return out


if __name__ == "__main__":  # child process: python -m bench.scale KIND N [traced]
    if sys.argv[3:] == ["traced"]:
        print(json.dumps(traced_child(sys.argv[1], int(sys.argv[2]))))
    else:
        print(json.dumps(rss_child(sys.argv[1], int(sys.argv[2]))))
