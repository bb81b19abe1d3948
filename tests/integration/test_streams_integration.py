"""Streams end to end (contract §13.11) and combined with decorators, tokens, threads, registry."""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import aclosing, contextmanager
from typing import Any

import pytest

from hother.cancelable import (
    Cancellable,
    CancellationReason,
    CancellationToken,
    OperationRegistry,
    OperationStatus,
    cancellable,
    cancellable_stream,
    current_operation,
    with_timeout,
)
from hother.cancelable.utils.decorators import cancellable_method
from hother.cancelable.utils.streams import CancellableAsyncIterator, chunked_cancellable_stream


@pytest.fixture(autouse=True)
def registry() -> Iterator[OperationRegistry]:
    """A fresh registry for each test."""
    OperationRegistry._instance = None
    try:
        yield OperationRegistry.get_instance()
    finally:
        OperationRegistry._instance = None


@contextmanager
def fail_after(backend: Any, seconds: float = 10.0) -> Iterator[None]:
    """Fail (instead of hanging) when the block takes longer than ``seconds``."""
    scope = backend.create_cancel_scope(deadline=backend.current_time() + seconds)
    with scope:
        yield
    if scope.cancelled_caught:
        pytest.fail(f"the block did not finish within {seconds} s")


async def ticking(backend: Any, delay: float, n: float = math.inf) -> AsyncGenerator[int, None]:
    """``0, 1, 2, ...`` one every ``delay`` seconds."""
    i = 0
    while i < n:
        await backend.sleep(delay)
        yield i
        i += 1


# ============================================================================ §13.11
async def test_stream_without_options_passes_items_through(backend: Any) -> None:
    got = [x async for x in cancellable_stream(ticking(backend, 0, 10))]
    assert got == list(range(10))


async def test_stream_timeout_stops_a_ticking_source(backend: Any) -> None:
    got: list[int] = []
    with fail_after(backend), pytest.raises(backend.get_cancelled_exc_class()):
        async for x in cancellable_stream(ticking(backend, 0.05), timeout=0.3):
            got.append(x)
    # at most one item per 50 ms can be produced within 300 ms; at least one in practice
    assert 1 <= len(got) <= 7
    assert got == list(range(len(got)))


async def test_token_cancelled_after_some_items(backend: Any) -> None:
    token = CancellationToken()
    got: list[int] = []

    async def canceller(reached: Any, done: Any) -> None:
        await reached.wait()
        await token.cancel(CancellationReason.MANUAL, "enough")
        done.set()

    reached = backend.create_event()
    done = backend.create_event()
    errors: list[BaseException] = []
    with fail_after(backend):
        async with backend.create_task_group() as tg:
            tg.start_soon(canceller, reached, done)
            # caught inside the host body: a task group absorbs a re-raised cancellation
            try:
                async for x in cancellable_stream(ticking(backend, 0.005), token=token):
                    got.append(x)
                    if len(got) == 6:
                        reached.set()
                        await done.wait()  # the token is cancelled from another task
            except backend.get_cancelled_exc_class() as exc:
                errors.append(exc)
    assert len(errors) == 1
    assert len(got) == 6  # more than 5 items, and nothing after the cancellation


async def test_on_progress_counts_and_latest_items(backend: Any) -> None:
    calls: list[tuple[int, int]] = []

    async def record(count: int, item: int) -> None:
        calls.append((count, item))

    got = [
        x
        async for x in cancellable_stream(
            ticking(backend, 0, 25), report_interval=10, on_progress=record
        )
    ]
    assert len(got) == 25
    assert calls[:2] == [(10, 9), (20, 19)]


async def test_long_timeout_and_token_token_wins(backend: Any) -> None:
    token = CancellationToken()
    got: list[int] = []
    box: list[Cancellable | None] = []

    async def source() -> AsyncIterator[int]:
        box.append(current_operation())
        async for x in ticking(backend, 0.01):
            yield x

    with fail_after(backend), pytest.raises(backend.get_cancelled_exc_class()):
        async for x in cancellable_stream(source(), timeout=1.0, token=token, operation_id="tt"):
            got.append(x)
            if x == 2:
                token.cancel_sync(CancellationReason.MANUAL, "user stop")
    assert len(got) < 10
    op = box[0]
    assert op is not None and op.operation_id == "tt"
    assert op.context.cancel_reason is CancellationReason.MANUAL
    assert op.context.cancel_message == "user stop"


async def test_iterator_under_a_timeout_keeps_real_items(backend: Any) -> None:
    got: list[int] = []
    it: CancellableAsyncIterator[int] | None = None
    with fail_after(backend), pytest.raises(backend.get_cancelled_exc_class()):
        async with Cancellable.with_timeout(0.2) as op:
            it = CancellableAsyncIterator(ticking(backend, 0.02), op, buffer_partial=True)
            async for x in it:
                got.append(x)
    assert it is not None and it._count == len(got) > 0
    partial = op.context.partial_result
    assert partial == {"count": len(got), "buffer": got, "completed": False}


async def test_chunks_under_a_timeout_are_full_except_possibly_the_last(backend: Any) -> None:
    chunks: list[list[int]] = []
    with fail_after(backend), pytest.raises(backend.get_cancelled_exc_class()):
        async with Cancellable.with_timeout(0.2) as op:
            async for chunk in chunked_cancellable_stream(ticking(backend, 0.01), 4, op):
                chunks.append(chunk)
    assert all(len(c) == 4 for c in chunks[:-1])
    flat = [x for c in chunks for x in c]
    assert flat == list(range(len(flat)))


# ============================================================================ scenarios
async def test_cancel_sync_from_a_plain_thread_interrupts_a_pending_pull(
    backend: Any, plain_thread: Any
) -> None:
    token = CancellationToken()
    got: list[int] = []

    async def source() -> AsyncIterator[int]:
        yield 0
        yield 1
        # the consumer is now blocked in this pull; a plain thread cancels the token
        plain_thread.start(token.cancel_sync, CancellationReason.SIGNAL, "from a thread")
        await backend.create_event().wait()
        yield 2  # pragma: no cover

    with fail_after(backend), pytest.raises(backend.get_cancelled_exc_class()):
        async for x in cancellable_stream(source(), token=token):
            got.append(x)
    assert got == [0, 1]


async def test_decorated_consumer_with_a_registry_monitor(
    backend: Any, registry: OperationRegistry
) -> None:
    """A registered ``@cancellable`` job consuming a stream is found and cancelled by name."""
    started = backend.create_event()
    seen: list[int] = []
    stream_ops: list[Cancellable | None] = []

    async def source() -> AsyncIterator[int]:
        stream_ops.append(current_operation())
        async for x in ticking(backend, 0.005):
            yield x

    @cancellable(name="ingest_job", register_globally=True)
    async def ingest(cancellable: Cancellable) -> None:
        async for x in cancellable_stream(source(), operation_id="ingest-stream"):
            seen.append(x)
            if x == 3:
                started.set()

    errors: list[BaseException] = []

    async def run() -> None:
        try:
            await ingest()  # type: ignore[call-arg]
        except backend.get_cancelled_exc_class() as exc:
            errors.append(exc)

    with fail_after(backend):
        async with backend.create_task_group() as tg:
            tg.start_soon(run)
            await started.wait()
            [ctx] = await registry.list_operations(name_pattern="INGEST")
            assert await registry.cancel_operation(ctx.id, message="maintenance") is True
    assert len(errors) == 1
    assert len(seen) >= 4
    [hist] = await registry.get_history()
    assert hist.name == "ingest_job"
    assert hist.status is OperationStatus.CANCELLED
    assert hist.cancel_message == "maintenance"
    stream_op = stream_ops[0]
    assert stream_op is not None and stream_op.operation_id == "ingest-stream"
    assert stream_op.status is OperationStatus.CANCELLED  # an enclosing cancellation
    partial = stream_op.context.partial_result
    assert isinstance(partial, dict) and partial["count"] == len(seen)


async def test_with_timeout_around_a_stream_pipeline(backend: Any) -> None:
    """``with_timeout`` bounds a stream -> chunks pipeline; partial work stays observable."""
    processed: list[list[int]] = []

    async def pipeline() -> None:
        op = current_operation()
        assert op is not None
        async for chunk in chunked_cancellable_stream(
            cancellable_stream(ticking(backend, 0.01)), 3, op
        ):
            processed.append(chunk)

    with fail_after(backend), pytest.raises(backend.get_cancelled_exc_class()):
        await with_timeout(0.2, pipeline(), operation_id="pipe")
    assert processed and all(len(c) == 3 for c in processed)


async def test_method_consumer_stops_early_and_leaves_nothing_behind(backend: Any) -> None:
    class Reader:
        def __init__(self) -> None:
            self.items: list[int] = []
            self.closed = backend.create_event()

        async def source(self) -> AsyncIterator[int]:
            try:
                async with aclosing(ticking(backend, 0.001)) as ticks:
                    async for x in ticks:
                        yield x
            finally:
                self.closed.set()

        @cancellable_method(timeout=5)
        async def first(self, n: int, cancellable: Cancellable | None = None) -> list[int]:
            async with aclosing(cancellable_stream(self.source(), timeout=0.05)) as s:
                async for x in s:
                    self.items.append(x)
                    if len(self.items) == n:
                        break
            # the stream's deadline passes while this method keeps working: no effect
            await backend.sleep(0.1)
            return self.items

    r = Reader()
    with fail_after(backend):
        assert await r.first(3) == [0, 1, 2]
    assert r.closed.is_set()


async def test_many_concurrent_streams_with_one_shared_token(backend: Any) -> None:
    token = CancellationToken()
    counts = [0] * 5
    cancelled = [False] * 5
    all_running = backend.create_event()

    async def consume(i: int) -> None:
        try:
            async for _ in cancellable_stream(ticking(backend, 0.002), token=token):
                counts[i] += 1
                if all(counts):
                    all_running.set()
        except backend.get_cancelled_exc_class():
            cancelled[i] = True

    with fail_after(backend):
        async with backend.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(consume, i)
            await all_running.wait()
            await token.cancel(message="shutdown")
    assert all(cancelled)
    assert all(c > 0 for c in counts)
