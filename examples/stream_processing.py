"""Cancellable stream processing over simulated sensors, in every run mode.

1. a bounded stream with progress reports, then an endless one stopped by a timeout;
2. merging three sensor streams (producer tasks, one queue, stopped with a token);
3. a transformation pipeline (calibrate -> filter) driven by ``Cancellable.stream``;
4. chunked processing with ``chunked_cancellable_stream``;
5. backpressure: a fast producer blocked on a bounded queue, stopped by a token;
6. stateful (windowed) anomaly detection under a timeout.

Run it::

    python examples/stream_processing.py              # asyncio, uvloop, anyio, trio
    python examples/stream_processing.py anyio        # one mode

The sensors are deterministic (no randomness): the *values* are the same on every run, only
how many readings fit in a timeout depends on the machine.
"""

from __future__ import annotations

import math
import sys
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from _common import outcome, parse_modes, run, say, section

from hother.cancelable import (
    Cancellable,
    CancellationReason,
    CancellationToken,
    cancellable_stream,
    get_backend,
)
from hother.cancelable.utils.streams import chunked_cancellable_stream


@dataclass(frozen=True)
class Reading:
    """One sensor reading."""

    sensor: str
    seq: int
    value: float


def sample(seq: int, phase: float) -> float:
    """A smooth signal around 20.0 with a spike on every 37th reading."""
    value = 20.0 + 2.0 * math.sin(seq / 5 + phase)
    if seq % 37 == 36:
        value += 15.0
    return round(value, 3)


async def sensor(
    name: str, period: float = 0.001, count: int | None = None, phase: float = 0.0
) -> AsyncIterator[Reading]:
    """Readings of one sensor, one every ``period`` seconds (endless when ``count`` is None)."""
    backend = get_backend()
    seq = 0
    while count is None or seq < count:
        await backend.sleep(period)
        yield Reading(name, seq, sample(seq, phase))
        seq += 1


async def basic_demo() -> None:
    section("1. basic cancellable streams")
    cancelled = get_backend().get_cancelled_exc_class()
    reports: list[int] = []
    total = 0.0
    n = 0
    stream = cancellable_stream(
        sensor("boiler", count=50),
        timeout=5,
        report_interval=20,
        on_progress=lambda count, latest: reports.append(count),
    )
    async for reading in stream:
        total += reading.value
        n += 1
    say(f"bounded stream: {n} readings, mean {total / n:.2f}, progress at {reports}")

    n = 0
    try:
        async for _reading in cancellable_stream(sensor("boiler"), timeout=0.1):
            n += 1
    except cancelled:
        say(f"endless stream: stopped by its 0.1 s timeout after {n} readings")


async def merge_demo() -> None:
    section("2. merging streams")
    backend = get_backend()
    cancelled = backend.get_cancelled_exc_class()
    queue = backend.create_queue(8)
    stop = CancellationToken()
    producers: list[Cancellable] = []

    async def produce(name: str, phase: float) -> None:
        op = Cancellable.with_token(stop, name=f"producer_{name}")
        producers.append(op)
        try:
            async with op:
                async for reading in sensor(name, phase=phase):
                    await queue.put(reading)
        except cancelled:
            pass  # stopped by the consumer's token: the expected way out

    merged: list[Reading] = []
    async with backend.create_task_group() as tg:
        for i, name in enumerate(("north", "south", "east")):
            tg.start_soon(produce, name, i * 2.0)
        async for reading in queue:
            merged.append(reading)
            if len(merged) == 30:
                await stop.cancel(CancellationReason.MANUAL, "consumer has enough")
                break
    say(f"merged {len(merged)} readings from sensors {sorted({r.sensor for r in merged})}")
    say(f"producers: {sorted({outcome(p) for p in producers})}")


async def calibrate(readings: AsyncIterator[Reading]) -> AsyncIterator[Reading]:
    """Stage 1: convert to Fahrenheit."""
    async for r in readings:
        yield Reading(r.sensor, r.seq, round(r.value * 1.8 + 32, 3))


async def drop_spikes(readings: AsyncIterator[Reading], limit: float) -> AsyncIterator[Reading]:
    """Stage 2: drop readings above ``limit``."""
    async for r in readings:
        if r.value <= limit:
            yield r


async def pipeline_demo() -> None:
    section("3. a pipeline")
    kept: list[Reading] = []
    reports: list[str] = []
    async with Cancellable.with_timeout(5, name="pipeline") as op:
        op.on_progress(lambda _id, message, _meta: reports.append(str(message)))
        stages = drop_spikes(calibrate(sensor("tank", count=100)), limit=80.0)
        async for reading in op.stream(stages, report_interval=25):
            kept.append(reading)
    say(f"pipeline: 100 readings in, {len(kept)} kept (spikes dropped), {outcome(op)}")
    say(f"pipeline progress: {reports}")


async def chunked_demo() -> None:
    section("4. chunked processing")
    sizes: list[int] = []
    reports: list[str] = []
    async with Cancellable(name="chunked") as op:
        op.on_progress(lambda _id, message, _meta: reports.append(str(message)))
        async for chunk in chunked_cancellable_stream(sensor("dryer", count=45), 10, op):
            sizes.append(len(chunk))
    say(f"chunks: {sizes}")
    say(f"last report: {reports[-1]!r}")


async def backpressure_demo() -> None:
    section("5. backpressure with a token")
    backend = get_backend()
    cancelled = backend.get_cancelled_exc_class()
    queue = backend.create_queue(4)
    stop = CancellationToken()
    waits = 0
    produced = 0
    producer = Cancellable.with_token(stop, name="fast_producer")

    async def produce() -> None:
        nonlocal waits, produced
        try:
            async with producer:
                while True:
                    if queue.full():
                        waits += 1  # the bounded queue makes the producer wait
                    await queue.put(produced)
                    produced += 1
        except cancelled:
            pass

    consumed = 0
    async with backend.create_task_group() as tg:
        tg.start_soon(produce)
        while consumed < 12:
            await queue.get()
            await backend.sleep(0.002)  # a slow consumer
            consumed += 1
        await stop.cancel(CancellationReason.MANUAL, "consumer done")
    say(f"consumed {consumed}, produced {produced} (the queue holds 4)")
    say(f"producer waited on a full queue: {waits > 0}; {outcome(producer)}")


async def windowed_demo() -> None:
    section("6. windowed anomaly detection under a timeout")
    cancelled = get_backend().get_cancelled_exc_class()
    window: deque[float] = deque(maxlen=10)
    anomalies: list[Any] = []
    windows = 0
    try:
        async for r in cancellable_stream(sensor("reactor"), timeout=0.3, name="windowed"):
            if len(window) == window.maxlen:
                windows += 1
                mean = sum(window) / len(window)
                if abs(r.value - mean) > 5.0:
                    anomalies.append(r.seq)
            window.append(r.value)
    except cancelled:
        say(f"windowed: stopped by the timeout after {windows} full windows")
    say(f"anomalies at readings {anomalies[:3]}... (every 37th reading is a spike)")


async def demo() -> None:
    await basic_demo()
    await merge_demo()
    await pipeline_demo()
    await chunked_demo()
    await backpressure_demo()
    await windowed_demo()


def main() -> int:
    modes = parse_modes(sys.argv[1:])
    for mode in modes:
        run(mode, demo)
    print("stream_processing finished on:", ", ".join(modes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
