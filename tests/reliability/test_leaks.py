"""Leak tests (plan 7.2), fast versions: every workload in every run mode.

Each test runs a workload once to warm up, then a few more times, every run being a whole
event-loop life; then checks that every C instance was freed (``_engine.live_objects()``
and live ``CancellableCore`` objects exactly back to the baseline), that the gc-tracked
objects, the traced Python memory and the RSS did not grow beyond generous margins (a leak
of one object per operation exceeds them), and that no engine state is left behind. The
long versions (10,000 cancellations and more, many rounds) run in ``make soak``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import tracemalloc
import weakref
from typing import Any

import pytest

from hother.cancelable import Cancellable, _engine
from hother.cancelable.pytest_plugin import RUN_MODES, run_in_mode

from .workloads import (
    concurrent_operations,
    long_condition,
    measure_leaks,
    sequential_cancellations,
    snapshot,
    source_cycles,
)

# The sanitizer run (make sanitize) preloads ASan, whose allocator keeps freed memory in
# quarantine: heap and RSS growth figures are meaningless there (the C instance counts of the
# other tests still hold). These run in make test and make soak.
_NOT_UNDER_ASAN = pytest.mark.skipif(
    bool(__import__("os").environ.get("HOTHER_CANCELABLE_SANITIZED")),
    reason="memory growth is not measurable under ASan's quarantining allocator",
)

MiB = 1024 * 1024

# (workload, kwargs, rounds): sized for make test; scripts/soak.py runs the long ones.
FAST = [
    pytest.param(sequential_cancellations, {"n": 540}, 2, id="sequential_cancellations"),
    pytest.param(concurrent_operations, {"n": 1000}, 2, id="concurrent_operations"),
    pytest.param(source_cycles, {"n": 12}, 2, id="source_cycles"),
]
# (workload, kwargs, rounds, traced margin). A clean run grows by 1-3 KiB, except on uvloop
# with many concurrent timers: its handle free lists (bounded, ~40 KiB) fill up over runs.
# Each margin is below one leaked 64-byte object per operation of its run.
TRACED = [
    pytest.param(sequential_cancellations, {"n": 180}, 2, 12 * 1024, id="sequential_cancellations"),
    pytest.param(concurrent_operations, {"n": 500}, 2, 48 * 1024, id="concurrent_operations"),
    pytest.param(source_cycles, {"n": 3}, 2, 12 * 1024, id="source_cycles"),
]


def _check(report: Any, *, gc_margin: int, traced_margin: int, rss_margin: int) -> None:
    problems = report.problems(
        gc_margin=gc_margin, traced_margin=traced_margin, rss_margin=rss_margin
    )
    assert not problems, report.line() + "\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("mode", RUN_MODES)
@pytest.mark.parametrize(("workload", "kwargs", "rounds"), FAST)
@_NOT_UNDER_ASAN
def test_workload_frees_everything(
    mode: str, workload: Any, kwargs: dict[str, Any], rounds: int
) -> None:
    """C instances back to baseline; gc objects and RSS flat after warm-up."""
    report = measure_leaks(mode, workload, rounds=rounds, trace=False, **kwargs)
    # one leaked object per operation would be >= 24 objects here
    _check(report, gc_margin=20, traced_margin=0, rss_margin=32 * MiB)


@pytest.mark.parametrize("mode", RUN_MODES)
@pytest.mark.parametrize(("workload", "kwargs", "rounds", "margin"), TRACED)
@_NOT_UNDER_ASAN
def test_workload_python_memory_flat(
    mode: str, workload: Any, kwargs: dict[str, Any], rounds: int, margin: int
) -> None:
    """Under tracemalloc (started before the warm-up): traced memory flat after warm-up."""
    report = measure_leaks(mode, workload, rounds=rounds, trace=True, **kwargs)
    _check(report, gc_margin=20, traced_margin=margin, rss_margin=32 * MiB)


@pytest.mark.parametrize("mode", RUN_MODES)
@_NOT_UNDER_ASAN
def test_long_condition_checking_is_flat(mode: str) -> None:
    """A condition checked 250 times at a fast interval: memory sampled *during* the
    monitoring (from inside the predicate) does not grow after the first fifth."""
    tracemalloc.start()
    try:
        samples = run_in_mode(mode, long_condition, n=250, interval=0.0002)
    finally:
        tracemalloc.stop()
    assert samples["checks"] == 250
    assert samples["end_gc"] - samples["warm_gc"] <= 20, samples
    assert samples["end_traced"] - samples["warm_traced"] <= 32 * 1024, samples
    assert samples["end_rss"] - samples["warm_rss"] <= 16 * MiB, samples


@pytest.mark.parametrize("mode", ["asyncio", "uvloop"])
def test_closed_loop_releases_its_engine(mode: str) -> None:
    """An event loop closed while the engine's deadline timer is still armed (an operation
    with a long timeout that completed early) must be freed with its ``LoopEngine``.

    Every ``asyncio.run()`` of a program that used a timeout would otherwise keep its whole
    (closed) loop alive: ``loop_engines`` -> LoopEngine -> armed TimerHandle -> loop.
    """
    loops: list[weakref.ref[Any]] = []

    async def main() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        async with Cancellable.with_timeout(3600):
            await asyncio.sleep(0)

    run_in_mode(mode, main)  # warm-up (imports, caches)
    before = snapshot().live["LoopEngine"]
    loops.clear()
    run_in_mode(mode, main)
    for _ in range(3):
        gc.collect()
    after = snapshot().live["LoopEngine"]
    assert loops[0]() is None, "the closed event loop is still alive"
    assert after == before, f"LoopEngine instances {before} -> {after}"


@pytest.mark.parametrize("mode", ["asyncio", "uvloop"])
def test_abandoned_task_of_a_closed_loop_is_freed(mode: str) -> None:
    """A loop closed while a task is suspended inside an operation (manual loop management,
    the task is never cancelled): once the program drops its references, the task and the
    loop must be collectable, as they are without the library. The engine's module-level
    ``task -> innermost scope`` dict must not keep them alive forever."""
    import uvloop

    loop = uvloop.new_event_loop() if mode == "uvloop" else asyncio.new_event_loop()

    async def body() -> None:
        async with Cancellable.with_timeout(3600):
            await asyncio.Event().wait()

    task = loop.create_task(body())
    loop.run_until_complete(asyncio.sleep(0.01))
    loop.close()
    task_ref, loop_ref = weakref.ref(task), weakref.ref(loop)
    del task, loop
    for _ in range(3):
        gc.collect()
    task_alive, loop_alive = task_ref() is not None, loop_ref() is not None
    leaked = task_ref()
    if leaked is not None:  # do not leave the entry to the tests that run after this one
        _engine._task_scopes.pop(leaked, None)
        with contextlib.suppress(RuntimeError):  # see test_faults.py, finalized outside
            leaked.get_coro().close()
    del leaked
    assert not task_alive, "the abandoned task is kept alive by the engine (_task_scopes)"
    assert not loop_alive, "the closed loop is kept alive (through the abandoned task)"
