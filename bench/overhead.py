"""a. Enter+exit of an empty block, ours against the runtimes' own scopes, per event loop.

Every contender is timed in batches; the batches of all contenders are interleaved (the order
is shuffled every round) in one event loop, so they share the machine's state. The result of a
contender is the median over the rounds of the per-operation time of a batch.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import pstats
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._common import Settings, median, no_gc, pc, run_in_mode

OURS: frozenset[str] = frozenset(
    {
        "Cancellable.with_timeout(10)",
        "Cancellable()",
        "Cancellable.with_token(t)",
        "backend.create_cancel_scope()",
    }
)

#: loops measured, and the reference contender of each (the ratio column divides by it)
LOOPS: tuple[str, ...] = ("asyncio", "uvloop", "trio")
REFERENCE: dict[str, str] = {
    "asyncio": "asyncio.timeout(10)",
    "uvloop": "asyncio.timeout(10)",
    "trio": "trio.move_on_after(10)",
}


class _NoopACM:
    """An async context manager doing nothing: the floor of any ``async with``."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


@dataclass(frozen=True)
class Contender:
    """One way of entering and leaving an empty block."""

    name: str
    make: Callable[[], Any]
    is_async: bool
    ours: bool


async def _batch_async(make: Callable[[], Any], n: int) -> int:
    t0 = pc()
    for _ in range(n):
        async with make():
            pass
    return pc() - t0


async def _batch_sync(make: Callable[[], Any], n: int) -> int:
    t0 = pc()
    for _ in range(n):
        with make():
            pass
    return pc() - t0


def contenders(loop: str) -> list[Contender]:
    """The contenders of one event loop (created inside the running loop)."""
    import anyio

    from hother.cancelable import Cancellable, CancellationToken, get_backend

    token = CancellationToken()
    backend = get_backend()
    out = [
        Contender("Cancellable.with_timeout(10)", lambda: Cancellable.with_timeout(10), True, True),
        Contender("Cancellable()", Cancellable, True, True),
        Contender("Cancellable.with_token(t)", lambda: Cancellable.with_token(token), True, True),
        Contender("backend.create_cancel_scope()", backend.create_cancel_scope, False, True),
        Contender("anyio.CancelScope()", anyio.CancelScope, False, False),
        Contender("anyio.move_on_after(10)", lambda: anyio.move_on_after(10), False, False),
        Contender("no-op async with (floor)", _NoopACM, True, False),
    ]
    if loop == "trio":
        import trio

        out.append(
            Contender("trio.move_on_after(10)", lambda: trio.move_on_after(10), False, False)
        )
        out.append(Contender("trio.CancelScope()", trio.CancelScope, False, False))
    else:
        out.append(Contender("asyncio.timeout(10)", lambda: asyncio.timeout(10), True, False))
    return out


async def _measure(settings: Settings, loop: str) -> dict[str, list[float]]:
    cands = contenders(loop)
    rng = random.Random(1234)
    per_op: dict[str, list[float]] = {c.name: [] for c in cands}

    async def run(c: Contender, n: int) -> int:
        if c.is_async:
            return await _batch_async(c.make, n)
        return await _batch_sync(c.make, n)

    # Warm up (caches, lazily created engine state, specialised bytecode), then size each
    # contender's batch to ~batch_us of work: short batches are rarely hit by a preemption on
    # a busy machine, and the median over many of them ignores those that are.
    sizes: dict[str, int] = {}
    for c in cands:
        await run(c, 300)
        best = min([await run(c, 200) for _ in range(5)]) / 200
        sizes[c.name] = max(10, min(2000, int(settings.overhead_batch_us * 1000 / best)))
    with no_gc():
        for _ in range(settings.overhead_rounds):
            order = list(cands)
            rng.shuffle(order)
            for c in order:
                n = sizes[c.name]
                per_op[c.name].append((await run(c, n)) / n)
    return per_op


def run(settings: Settings) -> dict[str, Any]:
    """Measure every contender on every loop: ``{loop: {name: {...}}}`` (ns per enter+exit)."""
    out: dict[str, Any] = {}
    for loop in LOOPS:

        async def main(loop: str = loop) -> dict[str, list[float]]:
            return await _measure(settings, loop)

        per_op = run_in_mode(loop, main)
        table: dict[str, Any] = {}
        ref = REFERENCE[loop]
        ref_med = median(per_op[ref])
        for name, vals in per_op.items():
            med = median(vals)
            table[name] = {
                "median_ns": med,
                "min_ns": min(vals),
                "max_ns": max(vals),
                "ratio": med / ref_med,
                "ours": name in OURS,
            }
        out[loop] = table
    return out


def _profile(loop: str, make: Callable[[], Any], is_async: bool, n: int) -> pstats.Stats:
    async def main() -> pstats.Stats:
        batch = _batch_async if is_async else _batch_sync
        await batch(make, 500)
        prof = cProfile.Profile()
        prof.enable()
        await batch(make, n)
        prof.disable()
        return pstats.Stats(prof, stream=io.StringIO())

    return run_in_mode(loop, main)


def _is_bench_frame(key: tuple[str, int, str]) -> bool:
    return key[0] == __file__


def _func_name(key: tuple[str, int, str]) -> str:
    filename, line, name = key
    if filename == "~":
        return name
    parts = filename.replace("\\", "/").split("/")
    short = (
        "/".join(parts[-2:])
        if "site-packages" in filename or "python3" in filename
        else ("/".join(parts[-3:]))
    )
    return f"{short}:{line}({name})"


def profile_with_timeout(loop: str, n: int = 5000, top: int = 15) -> str:
    """Where ``Cancellable.with_timeout(10)`` spends its time on ``loop`` (cProfile).

    Lists, per enter+exit, the Python-visible calls ours makes more often than the loop's
    reference (``trio.move_on_after(10)`` / ``asyncio.timeout(10)``), then ours' top functions
    by own time. The C engine's own work is not visible to cProfile (it shows in the caller).
    """
    from hother.cancelable import Cancellable

    ours = _profile(loop, lambda: Cancellable.with_timeout(10), True, n)
    if loop == "trio":
        import trio

        ref = _profile(loop, lambda: trio.move_on_after(10), False, n)
    else:
        ref = _profile(loop, lambda: asyncio.timeout(10), True, n)
    ours_st: dict[Any, Any] = ours.stats  # type: ignore[attr-defined]
    ref_st: dict[Any, Any] = ref.stats  # type: ignore[attr-defined]
    rows = []
    for key, (_cc, ncalls, tottime, _ct, _callers) in ours_st.items():
        extra = ncalls - (ref_st[key][1] if key in ref_st else 0)
        if extra > 0 and not _is_bench_frame(key):
            rows.append((extra / n, tottime / ncalls * 1e6, _func_name(key)))
    rows.sort(key=lambda r: -r[0] * r[1])
    lines = [
        f"Calls per enter+exit that {loop}'s reference does not make "
        f"(ours vs {REFERENCE[loop]}, cProfile over {n:,} runs):",
        f"{'calls/op':>9}  {'own us/call':>11}  function",
    ]
    lines += [f"{c:9.2f}  {t:11.3f}  {f}" for c, t, f in rows[:top]]
    lines += [
        "",
        f"Top functions by own time (ours, {loop}):",
        f"{'calls/op':>9}  {'own us/op':>9}  function",
    ]
    by_time = sorted(ours_st.items(), key=lambda kv: -kv[1][2])
    for key, (_cc, ncalls, tottime, _ct, _callers) in by_time[:top]:
        if _is_bench_frame(key):
            continue
        lines.append(f"{ncalls / n:9.2f}  {tottime / n * 1e6:9.3f}  {_func_name(key)}")
    return "\n".join(lines)
