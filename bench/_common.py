"""Shared helpers of the benchmark suite: run modes, clocks, statistics, machine description."""

from __future__ import annotations

import asyncio
import gc
import os
import platform
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent

#: Run modes, as in the pytest plugin: asyncio (stdlib loop, native backend), uvloop (native
#: backend on uvloop), anyio (stdlib loop, anyio backend forced), trio (anyio backend on trio).
RUN_MODES: tuple[str, ...] = ("asyncio", "uvloop", "anyio", "trio")

pc = time.perf_counter_ns


@dataclass(frozen=True)
class Settings:
    """Sizes of the run (``quick`` shrinks everything for a smoke run)."""

    quick: bool = False
    # a. enter+exit
    overhead_rounds: int = 200
    overhead_batch_us: float = 400.0
    # b. latency
    latency_trials: int = 600
    deadline_trials: int = 200
    deadline_s: float = 0.002
    # c. scale
    scale_ops: int = 100_000
    fire_ops: int = 10_000
    scale_rounds: int = 3
    # d. registry
    registry_sizes: tuple[int, ...] = (0, 10_000, 100_000)
    registry_batch: int = 1000
    registry_rounds: int = 9
    # e. streams
    stream_items: int = 5000
    stream_rounds: int = 11
    # f. realistic operation
    realistic_trials: int = 400
    realistic_steps: int = 10
    realistic_step_us: float = 100.0
    #: fresh processes per loop: the overhead measured moves with the process's memory layout
    #: (it is mostly cold-cache misses), so one process is one sample; the report gives the
    #: median over the processes and their range
    realistic_processes: int = 5

    @classmethod
    def make(cls, quick: bool) -> Settings:
        """Full settings, or a tiny smoke-test configuration."""
        if not quick:
            return cls()
        return cls(
            quick=True,
            overhead_rounds=5,
            latency_trials=30,
            deadline_trials=10,
            scale_ops=2000,
            fire_ops=500,
            scale_rounds=1,
            registry_sizes=(0, 1000, 5000),
            registry_batch=200,
            registry_rounds=3,
            stream_items=500,
            stream_rounds=3,
            realistic_trials=20,
            realistic_processes=1,
        )


# ----------------------------------------------------------------------------- statistics
def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    if len(s) == 1:
        return float(s[0])
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    frac = pos - lo
    return float(s[lo] + (s[hi] - s[lo]) * frac)


def median(values: Sequence[float]) -> float:
    """The median (NaN for no values)."""
    return percentile(values, 50.0)


@dataclass
class Sample:
    """A list of measurements (ns unless stated) with its summary statistics."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        """Append a measurement."""
        self.values.append(value)

    @property
    def p50(self) -> float:
        """Median."""
        return median(self.values)

    @property
    def p99(self) -> float:
        """99th percentile."""
        return percentile(self.values, 99.0)

    @property
    def max(self) -> float:
        """Largest value."""
        return float(max(self.values)) if self.values else float("nan")

    @property
    def min(self) -> float:
        """Smallest value."""
        return float(min(self.values)) if self.values else float("nan")


@contextmanager
def no_gc() -> Iterator[None]:
    """Disable the cyclic garbage collector inside the block (collect before, restore after)."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# ----------------------------------------------------------------------------- run modes
def run_in_mode(mode: str, fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn()`` to completion in a fresh event loop of the given run mode."""
    if mode == "trio":
        import trio

        async def trio_main() -> T:
            return await fn()

        return trio.run(trio_main)
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if mode == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    elif mode not in ("asyncio", "anyio"):
        raise ValueError(f"mode must be one of {RUN_MODES}, got {mode!r}")

    async def main() -> T:
        if mode == "anyio":
            from hother.cancelable import use_backend

            with use_backend("anyio"):
                return await fn()
        return await fn()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main())


# ----------------------------------------------------------------------------- machine
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "n/a"


def _git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")


def machine_info() -> dict[str, Any]:
    """CPU model, core count, OS, Python and library versions, git revision."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count() or 0,
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "hother-cancelable": _version("hother-cancelable"),
        "anyio": _version("anyio"),
        "trio": _version("trio"),
        "uvloop": _version("uvloop"),
        "git": _git_revision(),
    }
