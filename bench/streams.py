"""e. Streams: per-item overhead of ``cancellable_stream`` against a plain ``async for``.

The source is an async generator yielding integers without blocking; the consumer does
nothing with them. Contenders are interleaved round by round; the per-item time is the median
over the rounds.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from typing import Any

from ._common import Settings, median, no_gc, pc, run_in_mode

LOOPS: tuple[str, ...] = ("asyncio", "uvloop", "trio")


async def _source(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


async def _consume(make: Callable[[int], AsyncIterator[int]], n: int) -> int:
    it = make(n)
    t0 = pc()
    async for _ in it:
        pass
    return pc() - t0


async def _measure(settings: Settings) -> dict[str, list[float]]:
    try:
        from hother.cancelable.utils.streams import cancellable_stream
    except ImportError:
        return {}

    def plain(n: int) -> AsyncIterator[int]:
        return _source(n)

    def ours(n: int) -> AsyncIterator[int]:
        return cancellable_stream(_source(n))

    def ours_timeout(n: int) -> AsyncIterator[int]:
        return cancellable_stream(_source(n), timeout=10)

    cands: dict[str, Callable[[int], AsyncIterator[int]]] = {
        "async for (plain)": plain,
        "cancellable_stream(s)": ours,
        "cancellable_stream(s, timeout=10)": ours_timeout,
    }
    n = settings.stream_items
    out: dict[str, list[float]] = {k: [] for k in cands}
    for make in cands.values():
        await _consume(make, n // 4)
    rng = random.Random(7)
    with no_gc():
        for _ in range(settings.stream_rounds):
            names = list(cands)
            rng.shuffle(names)
            for name in names:
                out[name].append((await _consume(cands[name], n)) / n)
    return out


def run(settings: Settings) -> dict[str, Any]:
    """``{loop: {name: {"per_item_ns", "overhead_ns"}}}``; ``{"missing": True}`` without it."""
    out: dict[str, Any] = {}
    for loop in LOOPS:

        async def main() -> dict[str, list[float]]:
            return await _measure(settings)

        per_item = run_in_mode(loop, main)
        if not per_item:
            return {"missing": True}
        base = median(per_item["async for (plain)"])
        out[loop] = {
            name: {"per_item_ns": median(v), "overhead_ns": median(v) - base}
            for name, v in per_item.items()
        }
    return out
