"""Run every example of ``examples/`` in a subprocess, in each run mode it supports.

One test per (example, mode): the example must exit with status 0, print nothing on stderr,
announce the mode, and print its key lines (regular expressions below, checked in the output
of that mode). A mode an example cannot run in is skipped with the reason, and the example
itself must refuse it (exit status 2, the reason on stderr).

The subprocesses of the selected tests are started together on a small thread pool when the
first of them runs, so the whole module takes a few seconds of wall time, not the sum.
``custom_source.py`` and ``signal_service.py`` have tests of their own.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = ROOT / "examples"
ALL_MODES = ("asyncio", "uvloop", "anyio", "trio")
RUN_TIMEOUT = 60.0  # seconds per subprocess: generous, an example takes ~1-2 s per mode


@dataclass(frozen=True)
class Example:
    """An example script, the modes it runs in and what its output must contain."""

    name: str
    expect: tuple[str, ...]
    unsupported: dict[str, str] = field(default_factory=dict)
    requires: tuple[str, ...] = ()  # importable modules needed (else: skipped)
    per_mode: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def script(self) -> Path:
        return EXAMPLES_DIR / f"{self.name}.py"


ASYNCIO_API = "this example uses the asyncio API (see trio_example.py)"
TRIO_API = "this example uses the trio API (see asyncio_example.py / anyio_example.py)"

EXAMPLES: tuple[Example, ...] = (
    Example(
        "showcase",
        (
            r"timeout: slow-call ended cancelled / timeout after \d+ ms",
            r"thread cancel: cancelled / manual \('stopped from a thread'\)",
            r"child of a cancelled parent: cancelled / parent",
            r"parent: cancelled / manual",
            r"shield: \['critical section finished'\] then cancelled / timeout",
        ),
        per_mode={
            "asyncio": (r"1000 operations with distinct timeouts: 1000 deadlines, 1 loop timer",),
            "uvloop": (r"1000 operations with distinct timeouts: 1000 deadlines, 1 loop timer",),
            "trio": (r"cancel exception: trio\.Cancelled",),
        },
    ),
    Example(
        "basic_usage",
        (
            r"timeout: slow_call -> cancelled / timeout",
            r"task cancel: cancelled / manual \('user pressed stop'\)",
            r"thread: cancel_sync\(\) returned True",
            r"thread cancel: cancelled / manual \('watchdog fired'\); "
            r"a second cancel_sync\(\) returns False",
            r"stream: cancelled / timeout",
            r"progress reports received: True \(first: \['Processed 10 items'\]\)",
            r"items processed before the timeout: \d+",
            r"fast call: 'quote from fetch_quote'",
            r"slow call: cancelled by the decorator's 0.05 s timeout",
            r"combined: cancelled / signal \('Received signal SIGUSR1",
            r"combined: cancelled / manual \('token wins'\)",
            r"shield: \['critical write finished'\] then cancelled / timeout",
            r"running: \['basic_job_0', 'basic_job_1', 'basic_job_2'\]",
            r"cancel_all\(\) reached 3 operations",
            r"history: basic_job_\d cancelled \('cancelled from the registry'\)",
            r"history: basic_job_\d cancelled \('shutting down'\)",
            r"with_timeout\(1, compute\(\)\) = 42",
            r"with_timeout\(0.05, sleep\(10\)\): cancelled",
        ),
    ),
    Example(
        "stream_processing",
        (
            r"bounded stream: 50 readings, mean 20\.68, progress at \[20, 40\]",
            r"endless stream: stopped by its 0.1 s timeout after \d+ readings",
            r"merged 30 readings from sensors",
            r"producers: \[\"cancelled / manual \('consumer has enough'\)\"\]",
            r"pipeline: 100 readings in, 98 kept \(spikes dropped\), completed",
            r"pipeline progress: \['Processed 25 items', 'Processed 50 items', "
            r"'Processed 75 items'\]",
            r"chunks: \[10, 10, 10, 10, 5\]",
            r"last report: 'Processed final chunk of 5 items'",
            r"consumed 12, produced \d+ \(the queue holds 4\)",
            r"producer waited on a full queue: True; cancelled / manual \('consumer done'\)",
            r"windowed: stopped by the timeout after \d+ full windows",
        ),
    ),
    Example(
        "hierarchy",
        (
            r"on_cancel: child_0 \(parent\)",
            r"child_0: cancelled / parent",
            r"child_1: cancelled / parent",
            r"child_2: cancelled / parent",
            r"parent: cancelled / manual \('shutting down'\)",
            r"grandparent: cancelled / manual \('stop everything'\)",
            r"grandchild: cancelled / parent",
            r"batch: cancelled / timeout",
            r"item: cancelled / parent",
            r"stage_1: cancelled / manual \('stage 1 skipped'\)",
            r"stage_2: completed",
            r"pipeline still running: True",
            r"pipeline: completed",
            r"late_child: cancelled / parent .*first checkpoint: False",
        ),
    ),
    Example(
        "threads",
        (
            r"winners: 1 of 10 threads",
            r"raced: cancelled / manual \('thread \d was first'\)",
            r"interruptible: cancelled / signal \('SIGUSR2 received'\)",
            r"thread_job: crunched 20 units, completed",
            r"long_thread_job: cancelled / manual \('enough work done'\)",
            r"the thread stopped early: True",
            r"thread sees: \['thread_served'\]",
            r"cancel_operation_sync\(\) found it: True",
            r"get_statistics_sync\(\): 1 active operation",
            r"thread_served: cancelled / manual \('cancelled by the admin thread'\)",
        ),
    ),
    Example(
        "asyncio_example",
        (
            r"quick: completed",
            r"steady: completed",
            r"stuck: cancelled / timeout",
            r"batch: completed",
            r"gather results: \['ALPHA', 'CancelledError', 'GAMMA'\]",
            r"asyncio.timeout\(\) raised TimeoutError as usual",
            r"inner_work: cancelled / manual; task.cancelling\(\) = 0",
            r"background: cancelled / manual; task.cancelled\(\) = True",
            r"executor: watchdog cancelled the token: True",
            r"supervised: cancelled / manual \('watchdog found a problem'\)",
            r"woken waiters: \['waiter_0', 'waiter_1', 'waiter_2'\]",
        ),
        unsupported={"trio": ASYNCIO_API},
    ),
    Example(
        "anyio_example",
        (
            r"workers: \['cancelled / manual'\]",
            r"bounded: cancelled / manual; move_on_after caught it: True",
            r"metered: cancelled / condition \(\"Condition 'quota_exceeded' met after \d+ checks",
            r"stream cancelled by its token after 20 messages",
            r"the thread cancelled the token: True",
            r"wait_for_cancel\(\) woke up: 'disk full'",
            r"archiver: cancelled / manual \('disk full'\)",
        ),
        per_mode={
            "asyncio": (r"library backend: asyncio",),
            "uvloop": (r"library backend: asyncio",),
            "anyio": (r"library backend: anyio",),
            "trio": (r"library backend: anyio",),
        },
    ),
    Example(
        "trio_example",
        (
            r"workers: \['cancelled / parent'\]",
            r"supervisor: cancelled / manual \('maintenance window'\)",
            r"inside_move_on_after: cancelled / manual; trio scope caught it: True",
            r"sleep_0.001: completed",
            r"sleep_10: cancelled / timeout",
            r"channel stream: stopped by its timeout after \d+ items",
            r"guarded: cancelled / manual \('sentinel tripped'\); sentinel done",
            r"the thread sees current_operation\(\) = 'threaded'",
            r"flush: \['trio shield done', 'op.shield\(\) done'\] then cancelled / timeout",
        ),
        unsupported={"asyncio": TRIO_API, "uvloop": TRIO_API, "anyio": TRIO_API},
    ),
    Example(
        "monitoring_dashboard",
        (
            r"frame 1: \d+ running",
            r"frame \d: cancelled stuck job",
            r"dashboard: 4 frames, completed",
            r"api_call: \{'completed': 5\}",
            r"flaky: \{'failed': 1\}",
            r"ingest: \{'completed': 4\}",
            r"report: \{'cancelled/timeout': 1\}",
            r"stuck: \{'cancelled/manual': 1\}",
            r"api calls completed: 5",
            r"active now: 0",
            r"finished but still listed: \['manual_batch=completed'\]",
            r"cleanup_completed\(\) moved 1 operation\(s\) to the history",
        ),
    ),
    Example(
        "http_downloads",
        (
            r"local server: http://127\.0\.0\.1:\d+",
            r"downloaded 65536 bytes, content verified; completed",
            r"progress: 'Starting download' \.\.\. 'Download completed'",
            r"sizes: \{'large': 524288, 'medium': 196608, 'small': 65536\}; "
            r"all verified: True; batch completed",
            r"first attempt: cancelled / manual \('connection dropped \(simulated\)'\)",
            r"resumed from byte \d+: 524288 bytes, content verified",
            r"resumed from where it stopped: True",
            r"4 ranges, 196608 bytes reassembled, identical: True; completed",
            r"attempt 1: cancelled / timeout",
            r"attempt \d: 200 'ok after \d attempts'",
            r"shutdown_watch: cancelled / signal \('Received signal SIGUSR1",
            r"registry.cancel_all\(\) cancelled 3 downloads",
            r"downloads: \[\"cancelled / manual \('shutdown signal'\)\"\]; "
            r"partial files kept: \[True, True, True\]",
        ),
        requires=("httpx",),
    ),
    Example(
        "database_simple",
        (
            r"inserted and read back: \['basic_0', 'basic_1', 'basic_2'\]; completed",
            r"imported 5000 rows in 10 batches, last: 'Inserted batch 10: 500 rows'",
            r"session reports: \['Committing transaction'\]",
            r"rows now: 5000",
            r"read 5000 rows in 5 pages, sum of values 238834; completed",
            r"progress: \['Processed 1000 rows', .*'Processed 5000 rows'\]",
            r"slow_migration: cancelled / timeout .* after \d+ of 100 writes",
            r"rows before (\d+), after \1: rolled back = True",
            r"cleanup_job: cancelled / manual \('operator pressed stop'\)",
            r"stopped after \d+ of 1000 writes; rows kept: 0",
        ),
        unsupported={"trio": "SQLAlchemy's async engine and aiosqlite run on asyncio only"},
        requires=("sqlalchemy", "aiosqlite", "greenlet"),
    ),
)

MODE_MODULES = {"uvloop": "uvloop", "trio": "trio"}


def _cases() -> Iterator[object]:
    for example in EXAMPLES:
        for mode in ALL_MODES:
            yield pytest.param(example, mode, id=f"{example.name}-{mode}")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("HOTHER_CANCELABLE_BACKEND", None)  # each example picks its backend per mode
    src = str(ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _skip_reason(example: Example, mode: str) -> str | None:
    if mode in example.unsupported:
        return example.unsupported[mode]
    needed = [*example.requires]
    if mode in MODE_MODULES:
        needed.append(MODE_MODULES[mode])
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        return f"needs {', '.join(missing)} (not installed)"
    return None


@pytest.fixture(scope="session")
def example_runs(
    request: pytest.FixtureRequest,
) -> Iterator[dict[tuple[str, str], Future[subprocess.CompletedProcess[str]]]]:
    """Start the subprocess of every selected, runnable (example, mode) case on a pool."""
    pool = ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2)))
    futures: dict[tuple[str, str], Future[subprocess.CompletedProcess[str]]] = {}
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        if getattr(item, "function", None) is not test_example or callspec is None:
            continue
        example, mode = callspec.params["example"], callspec.params["mode"]
        if _skip_reason(example, mode) is None and (example.name, mode) not in futures:
            futures[(example.name, mode)] = pool.submit(_run, example.script, mode)
    try:
        yield futures
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize(("example", "mode"), list(_cases()))
def test_example(
    example: Example,
    mode: str,
    example_runs: dict[tuple[str, str], Future[subprocess.CompletedProcess[str]]],
) -> None:
    reason = _skip_reason(example, mode)
    if reason is not None:
        pytest.skip(f"{example.name} in {mode} mode: {reason}")
    future = example_runs.get((example.name, mode))
    result = future.result() if future is not None else _run(example.script, mode)
    report = f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    assert result.returncode == 0, report
    assert result.stderr == "", report
    assert f"== run mode: {mode}" in result.stdout, report
    assert re.search(rf"^{example.name} finished on: {mode}$", result.stdout, re.M), report
    for pattern in (*example.expect, *example.per_mode.get(mode, ())):
        assert re.search(pattern, result.stdout), f"missing {pattern!r}\n{report}"


def test_every_example_is_covered() -> None:
    """Each script of examples/ is run here or has a test of its own."""
    own_tests = {"custom_source", "signal_service"}
    scripts = {p.stem for p in EXAMPLES_DIR.glob("*.py") if not p.stem.startswith("_")}
    assert scripts - own_tests == {e.name for e in EXAMPLES}


def test_unsupported_and_unknown_modes_are_refused() -> None:
    """An example refuses a mode it cannot run in, with the reason, and an unknown mode."""
    result = _run(EXAMPLES_DIR / "trio_example.py", "asyncio")
    assert result.returncode == 2
    assert "run mode 'asyncio' is not supported: this example uses the trio API" in result.stderr
    assert result.stdout == ""
    result = _run(EXAMPLES_DIR / "basic_usage.py", "curio")
    assert result.returncode == 2
    assert "unknown run mode 'curio'" in result.stderr
