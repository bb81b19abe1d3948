"""A terminal dashboard over the operation registry, with simulated workloads.

Workloads run as ``@cancellable(register_globally=True)`` functions: ingest jobs that
complete, API calls whose latency is tracked, a report that times out, a flaky job that
fails, and a stuck job that the dashboard cancels through the registry. The dashboard loop
(``Cancellable.with_signal``: Ctrl+C stops it early, plus a resource guard when psutil is
installed) prints a few frames of ``list_operations()``, then the history of this run
(``get_history(since=...)``), ``get_statistics()``, ``cleanup_completed()`` and an ASCII
graph. It is bounded: a handful of frames, about a second per run mode.

Run it::

    python examples/monitoring_dashboard.py           # asyncio, uvloop, anyio, trio
    python examples/monitoring_dashboard.py asyncio   # one mode
"""

from __future__ import annotations

import importlib.util
import signal
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from _common import outcome, parse_modes, run, say, section

from hother.cancelable import (
    Cancellable,
    OperationContext,
    OperationRegistry,
    OperationStatus,
    cancellable,
    get_backend,
)
from hother.cancelable.sources.condition import ResourceConditionSource

FRAMES = 4
FRAME_INTERVAL = 0.06


def bar(value: float, maximum: float, width: int = 24) -> str:
    """An ASCII bar of ``value`` out of ``maximum``."""
    filled = 0 if maximum <= 0 else round(width * value / maximum)
    return "#" * filled + "." * (width - filled)


@cancellable(register_globally=True, name="ingest")
async def ingest(seconds: float) -> int:
    """A job that completes."""
    await get_backend().sleep(seconds)
    return 1


@cancellable(timeout=1.0, register_globally=True, name="api_call")
async def api_call(latency: float) -> str:
    """An API call with a given latency (its operation's duration is the latency)."""
    await get_backend().sleep(latency)
    return "200 OK"


@cancellable(timeout=0.12, register_globally=True, name="report")
async def report() -> None:
    """A report that takes too long: its 0.12 s timeout cancels it."""
    await get_backend().sleep(10)


@cancellable(register_globally=True, name="flaky")
async def flaky() -> None:
    """A job that fails."""
    await get_backend().sleep(0.03)
    raise ValueError("upstream returned garbage")


@cancellable(register_globally=True, name="stuck")
async def stuck() -> None:
    """A job that never finishes by itself."""
    await get_backend().sleep(10)


async def workloads() -> None:
    """Run every simulated workload; cancellations and failures end their own task."""
    backend = get_backend()
    cancelled = backend.get_cancelled_exc_class()

    async def guarded(func: Callable[..., Awaitable[object]], *args: float) -> None:
        try:
            await func(*args)
        except cancelled:
            pass  # timed out or cancelled by the dashboard: recorded in the history
        except ValueError:
            pass  # failed: recorded in the history

    async with backend.create_task_group() as tg:
        for seconds in (0.02, 0.05, 0.08, 0.11):
            tg.start_soon(guarded, ingest, seconds)
        for latency in (0.01, 0.02, 0.04, 0.09, 0.15):
            tg.start_soon(guarded, api_call, latency)
        tg.start_soon(guarded, report)
        tg.start_soon(guarded, flaky)
        tg.start_soon(guarded, stuck)


def frame_line(ops: list[OperationContext]) -> str:
    names = Counter(ctx.name or "?" for ctx in ops)
    return ", ".join(f"{name} x{n}" for name, n in sorted(names.items())) or "(idle)"


async def dashboard(registry: OperationRegistry) -> int:
    """Print ``FRAMES`` frames; cancel the stuck job from frame 2 on. Returns frames shown."""
    backend = get_backend()
    shown = 0
    for frame in range(1, FRAMES + 1):
        await backend.sleep(FRAME_INTERVAL)
        running = await registry.list_operations(status=OperationStatus.RUNNING)
        say(f"frame {frame}: {len(running)} running: {frame_line(running)}")
        shown += 1
        if frame >= 2:
            for ctx in await registry.list_operations(name_pattern="stuck"):
                await registry.cancel_operation(ctx.id, message="cancelled from the dashboard")
                say(f"frame {frame}: cancelled stuck job {ctx.id[:8]}")
    return shown


async def demo() -> None:
    backend = get_backend()
    cancelled = backend.get_cancelled_exc_class()
    registry = OperationRegistry.get_instance()
    since = datetime.now(UTC)  # the registry is process-wide: look at this run only

    section("live frames")
    monitor = Cancellable.with_signal(signal.SIGINT, name="dashboard")  # Ctrl+C stops it
    if importlib.util.find_spec("psutil") is not None:
        monitor.add_source(ResourceConditionSource(memory_threshold=99.9, check_interval=0.05))
    frames = 0
    async with backend.create_task_group() as tg:
        tg.start_soon(workloads)
        try:
            async with monitor:
                frames = await dashboard(registry)
        except cancelled:
            say(f"dashboard stopped early: {outcome(monitor)}")
    say(f"dashboard: {frames} frames, {outcome(monitor)}")

    section("history of this run")
    history = await registry.get_history(since=since)
    by_name: dict[str, Counter[str]] = {}
    for ctx in history:
        reason = f"/{ctx.cancel_reason.value}" if ctx.cancel_reason else ""
        by_name.setdefault(ctx.name or "?", Counter())[ctx.status.value + reason] += 1
    for name in sorted(by_name):
        say(f"{name:>9}: {dict(sorted(by_name[name].items()))}")

    section("API latency")
    latencies = sorted(
        ctx.duration_seconds or 0.0
        for ctx in history
        if ctx.name == "api_call" and ctx.status == OperationStatus.COMPLETED
    )
    for value in latencies:
        say(f"{value * 1000:6.0f} ms |{bar(value, latencies[-1])}|")
    say(f"api calls completed: {len(latencies)}")

    section("statistics")
    stats = await registry.get_statistics()
    say(f"active now: {stats['active_operations']}; history (all runs): {stats['history_size']}")
    statuses = Counter(ctx.status.value for ctx in history)
    top = max(statuses.values())
    for status, count in sorted(statuses.items()):
        say(f"{status:>9} {count:3d} |{bar(count, top)}|")

    section("cleanup_completed()")
    # An operation registered by hand stays listed after it finished, until cleaned up.
    batch = Cancellable(name="manual_batch")
    await registry.register(batch)
    async with batch:
        await backend.sleep(0.001)
    listed = await registry.list_operations(name_pattern="manual_batch")
    say(f"finished but still listed: {[f'{c.name}={c.status.value}' for c in listed]}")
    moved = await registry.cleanup_completed()
    say(f"cleanup_completed() moved {moved} operation(s) to the history")


def main() -> int:
    modes = parse_modes(sys.argv[1:])
    for mode in modes:
        run(mode, demo)
    print("monitoring_dashboard finished on:", ", ".join(modes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
