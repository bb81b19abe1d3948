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

        out.append(Contender("trio.move_on_after(10)", lambda: trio.move_on_after(10), False, False))
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


def profile_with_timeout(loop: str, n: int = 5000, top: int = 18) -> str:
    """cProfile of ``Cancellable.with_timeout(10)`` enter+exit on ``loop`` (where time goes)."""
    from hother.cancelable import Cancellable

    async def main() -> str:
        await _batch_async(lambda: Cancellable.with_timeout(10), 500)
        prof = cProfile.Profile()
        prof.enable()
        await _batch_async(lambda: Cancellable.with_timeout(10), n)
        prof.disable()
        buf = io.StringIO()
        stats = pstats.Stats(prof, stream=buf)
        stats.sort_stats("tottime").print_stats(top)
        return buf.getvalue()

    text = run_in_mode(loop, main)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    # keep the header line and the table, drop pstats' preamble
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
    return "\n".join(lines[start:])
