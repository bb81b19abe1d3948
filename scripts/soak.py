#!/usr/bin/env python3
"""Long reliability runs (``make soak``): the long versions of ``tests/reliability``.

For every run mode (asyncio, uvloop, anyio, trio):

* 10,000 cancellations in sequence (every cause), several rounds -- C instances, gc
  objects and RSS after each round compared with the post-warm-up baseline; then a traced
  run (tracemalloc);
* 1,000 concurrent operations, several rounds;
* repeated start/stop of every source (timeout, condition, signal, composite, all-of);
* a condition checked many thousands of times at a fast interval (memory sampled during
  the monitoring);

then the thread hammer (16 threads, two event loops in two threads, many rounds) for every
pair of loop flavours, and the engine fuzzer with many examples (in a subprocess).

Prints one line of figures per run (memory before/after, callbacks counted, errors) and a
summary; exits 1 when an invariant is violated. ``--scale 0.1`` gives a quick run.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))

from reliability import workloads as w  # type: ignore[import-not-found,unused-ignore]  # noqa: E402

MiB = 1024 * 1024


def _scaled(n: int, scale: float, minimum: int = 1) -> int:
    return max(minimum, int(n * scale))


def soak_mode(mode: str, scale: float, failures: list[str]) -> None:
    print(f"\n== {mode}", flush=True)
    runs: list[tuple[Any, dict[str, Any], int]] = [
        (w.sequential_cancellations, {"n": _scaled(10_000, scale, 90)}, 3),
        (w.concurrent_operations, {"n": _scaled(1_000, scale, 20)}, _scaled(5, scale, 2)),
        (w.source_cycles, {"n": _scaled(200, scale, 5)}, 3),
    ]
    for workload, kwargs, rounds in runs:
        started = time.perf_counter()
        report = w.measure_leaks(mode, workload, rounds=rounds, trace=False, **kwargs)
        problems = report.problems(gc_margin=50, traced_margin=0, rss_margin=16 * MiB)
        print(
            f"  {report.line()}  errors={len(problems)}  [{time.perf_counter() - started:.1f}s]",
            flush=True,
        )
        failures.extend(f"{mode} {workload.__name__}: {p}" for p in problems)
    # traced: Python-level growth
    for workload, kwargs in (
        (w.sequential_cancellations, {"n": _scaled(2_000, scale, 90)}),
        (w.concurrent_operations, {"n": _scaled(1_000, scale, 20)}),
    ):
        started = time.perf_counter()
        report = w.measure_leaks(mode, workload, rounds=2, trace=True, **kwargs)
        problems = report.problems(gc_margin=50, traced_margin=256 * 1024, rss_margin=64 * MiB)
        print(
            f"  {report.line()}  (traced)  errors={len(problems)}  "
            f"[{time.perf_counter() - started:.1f}s]",
            flush=True,
        )
        failures.extend(f"{mode} traced {workload.__name__}: {p}" for p in problems)
    # long condition checking
    checks = _scaled(10_000, scale, 200)
    tracemalloc.start()
    try:
        started = time.perf_counter()
        samples = w.run_in_mode(mode, w.long_condition, n=checks, interval=0.0002)
    finally:
        tracemalloc.stop()
    growth = {
        "gc": samples["end_gc"] - samples["warm_gc"],
        "traced": samples["end_traced"] - samples["warm_traced"],
        "rss": samples["end_rss"] - samples["warm_rss"],
    }
    problems = []
    if growth["gc"] > 50:
        problems.append(f"gc objects grew by {growth['gc']} during the checks")
    if growth["traced"] > 64 * 1024:
        problems.append(f"traced memory grew by {growth['traced']} B during the checks")
    if growth["rss"] > 16 * MiB:
        problems.append(f"RSS grew by {growth['rss']} B during the checks")
    print(
        f"  long_condition             {mode:<8} checks={samples['checks']:<6} "
        f"rss {samples['warm_rss'] / MiB:7.1f} -> {samples['end_rss'] / MiB:7.1f} MiB  "
        f"traced {growth['traced'] / 1024:+8.1f} KiB  gc {growth['gc']:+6d}  "
        f"errors={len(problems)}  [{time.perf_counter() - started:.1f}s]",
        flush=True,
    )
    failures.extend(f"{mode} long_condition: {p}" for p in problems)


def soak_hammer(scale: float, failures: list[str]) -> None:
    print("\n== thread hammer", flush=True)
    pairs = [("asyncio", "trio"), ("uvloop", "anyio"), ("asyncio", "asyncio"), ("trio", "trio")]
    for loops in pairs:
        started = time.perf_counter()
        before = w.snapshot()
        report = w.thread_hammer(
            loops=loops,
            rounds=_scaled(40, scale, 2),
            tokens=64,
            threads=16,
            ops_per_thread=2000,
            join_timeout=60.0,
            seed=len(failures),
        )
        after = w.snapshot()
        print(
            f"  {report.line()}  rss {before.rss / MiB:.1f} -> {after.rss / MiB:.1f} MiB  "
            f"[{time.perf_counter() - started:.1f}s]",
            flush=True,
        )
        failures.extend(f"hammer {'+'.join(loops)}: {e}" for e in report.errors[:20])
        if report.callbacks_run != report.callbacks_registered:
            failures.append(
                f"hammer {'+'.join(loops)}: {report.callbacks_run} callbacks ran, "
                f"{report.callbacks_registered} registered"
            )


def soak_fuzz(scale: float, failures: list[str]) -> None:
    examples = _scaled(2000, scale, 50)
    print(f"\n== engine fuzz ({examples} examples, subprocess)", flush=True)
    started = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-X",
            "faulthandler",
            "-m",
            "reliability.engine_fuzz",
            "--examples",
            str(examples),
            "--seed",
            str(int(time.time()) % 100_000),
        ],
        cwd=REPO / "tests",
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO / "src")),
    )
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
    print("  " + "\n  ".join(tail) + f"  [{time.perf_counter() - started:.1f}s]", flush=True)
    if proc.returncode != 0:
        what = f"signal {-proc.returncode}" if proc.returncode < 0 else f"status {proc.returncode}"
        failures.append(f"engine fuzz: {what}\n{proc.stderr[-3000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every count")
    parser.add_argument("--modes", default=",".join(w.RUN_MODES))
    parser.add_argument("--skip", default="", help="comma list of: leaks,hammer,fuzz")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    failures: list[str] = []
    started = time.perf_counter()
    print(f"soak: scale {args.scale}, modes {args.modes}, python {sys.version.split()[0]}")
    if "leaks" not in skip:
        for mode in args.modes.split(","):
            soak_mode(mode, args.scale, failures)
    if "hammer" not in skip:
        soak_hammer(args.scale, failures)
    if "fuzz" not in skip:
        soak_fuzz(args.scale, failures)
    gc.collect()
    print(
        f"\n== summary ({time.perf_counter() - started:.0f}s): "
        f"live C instances at exit {w.snapshot().live}"
    )
    if failures:
        print(f"soak: {len(failures)} errors")
        for f in failures:
            print("  - " + f)
        return 1
    print("soak: errors 0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
