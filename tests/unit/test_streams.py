"""Cancellable streams (API.md §9.3, contract §13.11, fix §14.19): unit behaviour and bad input."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, contextmanager
from typing import Any

import pytest

from hother.cancelable import (
    Cancellable,
    CancellationReason,
    CancellationToken,
    OperationStatus,
    cancellable_stream,
    current_operation,
)
from hother.cancelable.core.exceptions import ConditionCancellation, ManualCancellation
from hother.cancelable.utils.streams import (
    CancellableAsyncIterator,
    chunked_cancellable_stream,
)


# ============================================================================ helpers
@contextmanager
def fail_after(backend: Any, seconds: float = 5.0) -> Iterator[None]:
    """Fail the test (instead of hanging) when the block takes longer than ``seconds``."""
    scope = backend.create_cancel_scope(deadline=backend.current_time() + seconds)
    with scope:
        yield
    if scope.cancelled_caught:
        pytest.fail(f"the block did not finish within {seconds} s")


class Source:
    """An async generator source that records what happened to it."""

    def __init__(self, backend: Any, n: float = math.inf, delay: float = 0.0) -> None:
        self.backend = backend
        self.n = n
        self.delay = delay
        self.pulled = 0
        self.closed = backend.create_event()
        self.ops: list[Cancellable | None] = []

    async def gen(self) -> AsyncIterator[int]:
        try:
            i = 0
            while i < self.n:
                self.ops.append(current_operation())
                if self.delay:
                    await self.backend.sleep(self.delay)
                self.pulled += 1
                yield i
                i += 1
        finally:
            self.closed.set()


async def blocking_after(backend: Any, n: int, reached: Any = None) -> AsyncIterator[int]:
    """Yield ``0..n-1`` then block forever (setting ``reached`` first)."""
    for i in range(n):
        yield i
    if reached is not None:
        reached.set()
    await backend.create_event().wait()
    yield -1  # pragma: no cover


async def numbers(n: int) -> AsyncIterator[int]:
    """``0..n-1`` without any await (no checkpoint at all)."""
    for i in range(n):
        yield i


# ============================================================================ bad input
@pytest.mark.parametrize("bad", [[1, 2], "abc", b"x", 42, None, iter([1])])
def test_stream_must_be_async_iterable(bad: Any) -> None:
    with pytest.raises(TypeError, match="stream must be an async iterable"):
        cancellable_stream(bad)
    with pytest.raises(TypeError, match="stream must be an async iterable"):
        chunked_cancellable_stream(bad, 2, Cancellable())
    with pytest.raises(TypeError, match="iterator must be an async iterable"):
        CancellableAsyncIterator(bad, Cancellable())


def test_aiter_must_return_an_async_iterator() -> None:
    class Broken:
        def __aiter__(self) -> Any:
            return [1, 2]

    with pytest.raises(TypeError, match="__aiter__"):
        cancellable_stream(Broken())


@pytest.mark.parametrize(
    ("kwargs", "exc", "word"),
    [
        ({"report_interval": 0}, ValueError, "report_interval"),
        ({"report_interval": -3}, ValueError, "report_interval"),
        ({"report_interval": 1.5}, TypeError, "report_interval"),
        ({"report_interval": True}, TypeError, "report_interval"),
        ({"timeout": 0}, ValueError, "timeout"),
        ({"timeout": -1.0}, ValueError, "timeout"),
        ({"timeout": "1"}, TypeError, "timeout"),
        ({"token": "tok"}, TypeError, "token"),
        ({"on_progress": 3}, TypeError, "on_progress"),
        ({"buffer_partial": "yes"}, TypeError, "buffer_partial"),
        ({"operation_id": 1}, TypeError, "operation_id"),
        ({"name": 1}, TypeError, "name"),
    ],
)
def test_bad_stream_arguments(kwargs: dict[str, Any], exc: type[Exception], word: str) -> None:
    with pytest.raises(exc, match=word):
        cancellable_stream(numbers(3), **kwargs)


@pytest.mark.parametrize(
    ("size", "exc"),
    [
        (0, ValueError),
        (-2, ValueError),
        ("3", TypeError),
        (2.0, TypeError),
        (True, TypeError),
        (None, TypeError),
    ],
)
def test_bad_chunk_size(size: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc, match="chunk_size"):
        chunked_cancellable_stream(numbers(3), size, Cancellable())


def test_bad_cancellable_argument() -> None:
    with pytest.raises(TypeError, match="cancellable must be a Cancellable"):
        chunked_cancellable_stream(numbers(3), 2, "op")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cancellable must be a Cancellable"):
        CancellableAsyncIterator(numbers(3), None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="report_interval"):
        CancellableAsyncIterator(numbers(3), Cancellable(), report_interval=0)
    with pytest.raises(TypeError, match="buffer_partial"):
        CancellableAsyncIterator(numbers(3), Cancellable(), buffer_partial=1)  # type: ignore[arg-type]


# ============================================================================ cancellable_stream
async def test_passes_items_through_and_completes(backend: Any) -> None:
    src = Source(backend, n=5)
    got = [x async for x in cancellable_stream(src.gen(), operation_id="s-1", name="nm")]
    assert got == [0, 1, 2, 3, 4]
    op = src.ops[0]
    assert op is not None
    assert all(o is op for o in src.ops)  # one operation, current while the source produces
    assert op.operation_id == "s-1"
    assert op.context.name == "nm"
    assert op.status is OperationStatus.COMPLETED
    assert op.context.partial_result == {"count": 5, "buffer": None, "completed": True}
    assert op.context.end_time is not None
    assert current_operation() is None


async def test_default_names(backend: Any) -> None:
    async def name_of(**kwargs: Any) -> str | None:
        src = Source(backend, n=1)
        async for _ in cancellable_stream(src.gen(), **kwargs):
            pass
        op = src.ops[0]
        assert op is not None
        return op.context.name

    token = CancellationToken()
    assert await name_of() == "stream"
    assert await name_of(timeout=10) == "stream_timeout"
    assert await name_of(token=token) == "stream_token"
    assert await name_of(timeout=10, token=token) == "stream_timeout_token"


async def test_accepts_an_async_iterable_and_a_bare_iterator(backend: Any) -> None:
    class Iterable:
        def __aiter__(self) -> AsyncIterator[int]:
            return numbers(3)

    class BareIterator:  # __anext__ only
        def __init__(self) -> None:
            self.i = 0

        async def __anext__(self) -> int:
            if self.i == 2:
                raise StopAsyncIteration
            self.i += 1
            return self.i

    assert [x async for x in cancellable_stream(Iterable())] == [0, 1, 2]
    bare: Any = BareIterator()
    assert [x async for x in cancellable_stream(bare)] == [1, 2]


async def test_status_is_running_between_items_and_the_consumer_is_outside(
    backend: Any,
) -> None:
    src = Source(backend, n=3)
    async with aclosing(cancellable_stream(src.gen())) as stream:
        async for _ in stream:
            op = src.ops[-1]
            assert op is not None and op.status is OperationStatus.RUNNING
            # the operation is current only while the source produces (§14.19)
            assert current_operation() is None


async def test_operation_id_is_on_the_operation_with_timeout_and_token(backend: Any) -> None:
    """§14.19: with both a timeout and a token the given id is on the running operation."""
    token = CancellationToken()
    src = Source(backend, n=2)
    got = [
        x
        async for x in cancellable_stream(
            src.gen(), timeout=30, token=token, operation_id="both", name="both-name"
        )
    ]
    assert got == [0, 1]
    op = src.ops[0]
    assert op is not None
    assert (op.operation_id, op.context.name) == ("both", "both-name")
    assert op.is_completed
    assert not token.is_cancelled


async def test_timeout_interrupts_a_pending_pull(backend: Any) -> None:
    reached = backend.create_event()
    got: list[int] = []
    stream = cancellable_stream(blocking_after(backend, 3, reached), timeout=0.2)
    with fail_after(backend), pytest.raises(backend.get_cancelled_exc_class()):
        async for x in stream:
            got.append(x)
    assert got == [0, 1, 2]
    assert reached.is_set()


async def test_timeout_is_recorded_with_partial_result(backend: Any) -> None:
    src = Source(backend, delay=0.02)
    got: list[int] = []
    with fail_after(backend), pytest.raises(backend.get_cancelled_exc_class()):
        async for x in cancellable_stream(src.gen(), timeout=0.15, buffer_partial=True):
            got.append(x)
    op = src.ops[0]
    assert op is not None
    assert op.status is OperationStatus.CANCELLED
    assert op.is_cancelled
    assert op.context.cancel_reason is CancellationReason.TIMEOUT
    assert op.context.cancel_message == "Operation timed out"
    assert got  # something was produced before the deadline
    assert op.context.partial_result == {"count": len(got), "buffer": got, "completed": False}


async def test_deadline_passed_between_items_stops_before_the_next_pull(backend: Any) -> None:
    """A source without checkpoints cannot outrun the deadline: it is checked at each pull."""
    src = Source(backend, n=10)
    got: list[int] = []
    with pytest.raises(backend.get_cancelled_exc_class()):
        async for x in cancellable_stream(src.gen(), timeout=0.05):
            got.append(x)
            if x == 1:
                await backend.sleep(0.1)  # the consumer is slow: never interrupted itself
    assert got == [0, 1]
    assert src.pulled == 2  # no item was taken from the source and lost
    op = src.ops[0]
    assert op is not None and op.context.cancel_reason is CancellationReason.TIMEOUT


async def test_token_cancel_interrupts_a_pending_pull(backend: Any) -> None:
    token = CancellationToken()
    reached = backend.create_event()
    got: list[int] = []
    errors: list[BaseException] = []

    async def consume() -> None:
        try:
            async for x in cancellable_stream(
                blocking_after(backend, 4, reached), token=token, operation_id="tok"
            ):
                got.append(x)
        except backend.get_cancelled_exc_class() as exc:
            errors.append(exc)

    with fail_after(backend):
        async with backend.create_task_group() as tg:
            tg.start_soon(consume)
            await reached.wait()
            await token.cancel(CancellationReason.MANUAL, "stop now")
    assert got == [0, 1, 2, 3]
    assert len(errors) == 1


async def test_token_reason_and_message_are_recorded(backend: Any) -> None:
    token = CancellationToken()
    src = Source(backend)
    got: list[int] = []
    with pytest.raises(backend.get_cancelled_exc_class()):
        async for x in cancellable_stream(src.gen(), token=token, timeout=30):
            got.append(x)
            if x == 2:
                await token.cancel(CancellationReason.SIGNAL, "user hit ctrl-c")
                await backend.sleep(0.01)  # the consumer's own code is not interrupted
                got.append(99)
    assert got == [0, 1, 2, 99]
    assert src.pulled == 3
    op = src.ops[0]
    assert op is not None
    assert op.status is OperationStatus.CANCELLED
    assert op.context.cancel_reason is CancellationReason.SIGNAL
    assert op.context.cancel_message == "user hit ctrl-c"
    assert op.context.partial_result == {"count": 3, "buffer": None, "completed": False}


async def test_pre_cancelled_token_pulls_nothing(backend: Any) -> None:
    token = CancellationToken()
    await token.cancel()
    src = Source(backend, n=5)
    with pytest.raises(backend.get_cancelled_exc_class()):
        async for _ in cancellable_stream(src.gen(), token=token):
            pytest.fail("no item expected")
    assert src.pulled == 0


async def test_operation_cancel_through_current_operation(backend: Any) -> None:
    """Whoever holds the stream's operation can cancel it (its own token)."""
    src = Source(backend)
    with pytest.raises(backend.get_cancelled_exc_class()):
        async for x in cancellable_stream(src.gen()):
            if x == 1:
                op = src.ops[0]
                assert op is not None
                await op.cancel(message="enough")
    op = src.ops[0]
    assert op is not None
    assert op.context.cancel_reason is CancellationReason.MANUAL
    assert op.context.cancel_message == "enough"


async def test_consumer_survives_the_cancellation(backend: Any) -> None:
    """After catching the stream's cancellation, the consumer task keeps working normally."""
    token = CancellationToken()
    with pytest.raises(backend.get_cancelled_exc_class()):
        async for x in cancellable_stream(numbers(10), token=token):
            if x == 0:
                token.cancel_sync()
    await backend.sleep(0.01)  # not cancelled again: nothing of the stream is left active
    with fail_after(backend):
        assert [x async for x in cancellable_stream(numbers(2))] == [0, 1]


async def test_enclosing_cancellation_is_recorded_as_manual(backend: Any) -> None:
    src_reached = backend.create_event()
    box: list[Cancellable | None] = []

    async def source() -> AsyncIterator[int]:
        box.append(current_operation())
        yield 0
        src_reached.set()
        await backend.create_event().wait()
        yield 1  # pragma: no cover

    outer = backend.create_cancel_scope()
    with fail_after(backend):
        async with backend.create_task_group() as tg:

            async def consume() -> None:
                with outer:
                    async for _ in cancellable_stream(source(), timeout=30):
                        pass

            tg.start_soon(consume)
            await src_reached.wait()
            outer.cancel()
    assert outer.cancelled_caught
    op = box[0]
    assert op is not None
    assert op.status is OperationStatus.CANCELLED
    assert op.context.cancel_reason is CancellationReason.MANUAL


async def test_source_error_fails_the_operation(backend: Any) -> None:
    box: list[Cancellable | None] = []

    async def source() -> AsyncIterator[int]:
        box.append(current_operation())
        yield 1
        raise ValueError("broken source")

    got: list[int] = []
    with pytest.raises(ValueError, match="broken source"):
        async for x in cancellable_stream(source(), buffer_partial=True):
            got.append(x)
    op = box[0]
    assert op is not None
    assert op.status is OperationStatus.FAILED
    assert op.context.error == "broken source"
    assert op.context.partial_result == {"count": 1, "buffer": [1], "completed": False}


async def test_source_cancellation_error_is_a_cancellation(backend: Any) -> None:
    box: list[Cancellable | None] = []

    async def source() -> AsyncIterator[int]:
        box.append(current_operation())
        yield 1
        raise ConditionCancellation("disk_full")

    with pytest.raises(ConditionCancellation):
        async for _ in cancellable_stream(source()):
            pass
    op = box[0]
    assert op is not None
    assert op.status is OperationStatus.CANCELLED
    assert op.context.cancel_reason is CancellationReason.CONDITION


# ------------------------------------------------------------------- early exit
async def test_break_with_aclosing_completes_and_closes_the_source(backend: Any) -> None:
    src = Source(backend)
    async with aclosing(cancellable_stream(src.gen(), timeout=0.05, buffer_partial=True)) as s:
        async for x in s:
            if x == 2:
                break
    assert src.closed.is_set()
    op = src.ops[0]
    assert op is not None
    assert op.status is OperationStatus.COMPLETED
    assert not op.is_cancelled
    assert op.context.partial_result == {"count": 3, "buffer": [0, 1, 2], "completed": False}
    # nothing of the stream is left entered: outliving its deadline cancels nothing
    await backend.sleep(0.15)


@pytest.mark.filterwarnings("ignore:Async generator .* was garbage collected:ResourceWarning")
async def test_break_without_closing_leaves_nothing_active(backend: Any) -> None:
    """§14.19: a consumer that just breaks is never cancelled later by the stream."""
    src = Source(backend)
    async for x in cancellable_stream(src.gen(), timeout=0.05):
        if x == 1:
            break
    await backend.sleep(0.15)  # past the stream's deadline: the consumer is not cancelled
    with fail_after(backend):
        await src.closed.wait()  # the dropped generator is finalised by the runtime
    op = src.ops[0]
    assert op is not None
    assert op.status is OperationStatus.COMPLETED
    assert op.context.partial_result == {"count": 2, "buffer": None, "completed": False}


async def test_consumer_exception_closes_the_stream(backend: Any) -> None:
    src = Source(backend)
    with pytest.raises(KeyError):
        async with aclosing(cancellable_stream(src.gen())) as s:
            async for _ in s:
                raise KeyError("consumer bug")
    assert src.closed.is_set()
    op = src.ops[0]
    assert op is not None and op.status is OperationStatus.COMPLETED


async def test_pulls_and_close_may_come_from_other_tasks(backend: Any) -> None:
    src = Source(backend)
    stream = cancellable_stream(src.gen(), timeout=30)
    got: list[int] = []

    async def pull_one() -> None:
        got.append(await stream.__anext__())

    with fail_after(backend):
        for _ in range(2):
            async with backend.create_task_group() as tg:
                tg.start_soon(pull_one)
        got.append(await stream.__anext__())
        async with backend.create_task_group() as tg:
            tg.start_soon(stream.aclose)
    assert got == [0, 1, 2]
    assert src.closed.is_set()
    op = src.ops[0]
    assert op is not None and op.status is OperationStatus.COMPLETED


async def test_closing_an_unstarted_stream_is_harmless(backend: Any) -> None:
    src = Source(backend, n=3)
    stream = cancellable_stream(src.gen())
    await stream.aclose()
    assert src.pulled == 0


# ------------------------------------------------------------------- progress / partial
async def test_on_progress_every_report_interval(backend: Any) -> None:
    calls: list[tuple[int, int]] = []
    async for _ in cancellable_stream(
        numbers(25), report_interval=10, on_progress=lambda c, i: calls.append((c, i))
    ):
        pass
    assert calls == [(10, 9), (20, 19)]


async def test_on_progress_without_interval_reports_every_item(backend: Any) -> None:
    calls: list[tuple[int, int]] = []

    async def record(count: int, item: int) -> None:
        await backend.sleep(0)
        calls.append((count, item))

    got = [x async for x in cancellable_stream(numbers(3), on_progress=record)]
    assert got == [0, 1, 2]
    assert calls == [(1, 0), (2, 1), (3, 2)]


async def test_progress_is_reported_before_the_item_is_handed_over(backend: Any) -> None:
    calls: list[int] = []
    async for x in cancellable_stream(
        numbers(4), report_interval=2, on_progress=lambda c, i: calls.append(i)
    ):
        if x in (1, 3):
            assert calls[-1] == x


async def test_failing_on_progress_does_not_break_the_stream(backend: Any) -> None:
    def explode(count: int, item: int) -> None:
        raise RuntimeError("callback bug")

    assert [x async for x in cancellable_stream(numbers(3), on_progress=explode)] == [0, 1, 2]


async def test_progress_reaches_other_callbacks_of_the_operation(backend: Any) -> None:
    reports: list[tuple[Any, Any]] = []

    async def source() -> AsyncIterator[int]:
        op = current_operation()
        assert op is not None
        op.on_progress(lambda _id, msg, meta: reports.append((msg, meta)))
        for i in range(4):
            yield i

    async for _ in cancellable_stream(source(), report_interval=2):
        pass
    assert reports == [
        ("Processed 2 items", {"count": 2, "latest_item": 1}),
        ("Processed 4 items", {"count": 4, "latest_item": 3}),
    ]


async def test_cancellation_during_a_progress_callback(backend: Any) -> None:
    """An enclosing cancellation inside an async ``on_progress`` ends the stream CANCELLED."""
    in_callback = backend.create_event()
    box: list[Cancellable | None] = []

    async def source() -> AsyncIterator[int]:
        box.append(current_operation())
        for i in range(5):
            yield i

    async def stuck(count: int, item: int) -> None:
        in_callback.set()
        await backend.create_event().wait()

    got: list[int] = []
    outer = backend.create_cancel_scope()

    async def consume() -> None:
        with outer:
            async for x in cancellable_stream(
                source(), report_interval=2, on_progress=stuck, buffer_partial=True
            ):
                got.append(x)

    with fail_after(backend):
        async with backend.create_task_group() as tg:
            tg.start_soon(consume)
            await in_callback.wait()
            outer.cancel()
    assert outer.cancelled_caught
    assert got == [0]
    op = box[0]
    assert op is not None
    assert op.status is OperationStatus.CANCELLED
    assert op.context.cancel_reason is CancellationReason.MANUAL
    # the second item never reached the consumer: it is not counted
    assert op.context.partial_result == {"count": 1, "buffer": [0], "completed": False}


async def test_buffer_keeps_the_last_1000_items(backend: Any) -> None:
    box: list[Cancellable | None] = []

    async def source() -> AsyncIterator[int]:
        box.append(current_operation())
        for i in range(1005):
            yield i

    count = 0
    async for _ in cancellable_stream(source(), buffer_partial=True):
        count += 1
    op = box[0]
    assert op is not None
    partial = op.context.partial_result
    assert isinstance(partial, dict)
    assert count == 1005
    assert partial["count"] == 1005 and partial["completed"] is True
    assert partial["buffer"] == list(range(5, 1005))


# ================================================================ CancellableAsyncIterator
async def test_iterator_passes_items_through(backend: Any) -> None:
    c = Cancellable()
    it = CancellableAsyncIterator(numbers(4), c)
    assert it.__aiter__() is it
    assert [x async for x in it] == [0, 1, 2, 3]
    assert it._count == 4
    with pytest.raises(StopAsyncIteration):
        await it.__anext__()
    assert c.context.partial_result is None  # no buffering, nothing written


async def test_iterator_timeout_counts_delivered_items(backend: Any) -> None:
    got: list[int] = []
    it: CancellableAsyncIterator[int] | None = None
    with fail_after(backend), pytest.raises(backend.get_cancelled_exc_class()):
        async with Cancellable.with_timeout(0.1) as c:
            it = CancellableAsyncIterator(Source(backend, delay=0.02).gen(), c, buffer_partial=True)
            async for x in it:
                got.append(x)
    assert it is not None
    assert got and it._count == len(got)
    assert c.context.cancel_reason is CancellationReason.TIMEOUT
    assert c.context.partial_result == {"count": len(got), "buffer": got, "completed": False}


async def test_iterator_progress_and_completed_partial(backend: Any) -> None:
    c = Cancellable()
    reports: list[Any] = []
    c.on_progress(lambda _id, msg, meta: reports.append((msg, meta["count"], meta["latest_item"])))
    it = CancellableAsyncIterator(numbers(25), c, report_interval=10, buffer_partial=True)
    assert len([x async for x in it]) == 25
    assert reports == [("Processed 10 items", 10, 9), ("Processed 20 items", 20, 19)]
    assert c.context.partial_result == {"count": 25, "buffer": list(range(25)), "completed": True}


async def test_iterator_checks_the_token_before_pulling(backend: Any, run_mode: str) -> None:
    """Outside an entered operation the token check raises what ``check_async()`` raises."""
    c = Cancellable()
    src = Source(backend)
    it = CancellableAsyncIterator(src.gen(), c)
    assert await it.__anext__() == 0
    c.cancel_sync(message="stop")
    # trio.Cancelled cannot be made up outside a cancelled scope: check_async() raises the
    # token's CancellationError there (see CancellationToken.check_async)
    expected = ManualCancellation if run_mode == "trio" else backend.get_cancelled_exc_class()
    with pytest.raises(expected, match="stop"):
        await it.__anext__()
    assert src.pulled == 1
    await it.aclose()


async def test_iterator_inside_the_operation_is_cancelled_by_the_operation(
    backend: Any,
) -> None:
    got: list[int] = []
    with fail_after(backend), pytest.raises(backend.get_cancelled_exc_class()):
        async with Cancellable() as c:
            it = CancellableAsyncIterator(Source(backend).gen(), c)
            try:
                async for x in it:
                    got.append(x)
                    if x == 2:
                        await c.cancel(message="done")
            finally:
                await it.aclose()
    assert got == [0, 1, 2]
    assert c.context.cancel_message == "done"


async def test_iterator_aclose_delegates(backend: Any) -> None:
    src = Source(backend)
    it = CancellableAsyncIterator(src.gen(), Cancellable())
    assert await it.__anext__() == 0
    await it.aclose()
    assert src.closed.is_set()

    class NoClose:
        async def __anext__(self) -> int:
            return 1

    await CancellableAsyncIterator(NoClose(), Cancellable()).aclose()  # type: ignore[arg-type]


# ============================================================================ chunked
async def _chunks(n: int, size: int, cancellable: Cancellable) -> list[list[int]]:
    return [chunk async for chunk in chunked_cancellable_stream(numbers(n), size, cancellable)]


async def test_chunks_with_remainder_and_exact(backend: Any) -> None:
    async with Cancellable() as c:
        assert await _chunks(10, 3, c) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert c.context.partial_result == {"count": 10, "buffer": list(range(10)), "completed": True}
    async with Cancellable() as c2:
        assert await _chunks(9, 3, c2) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    async with Cancellable() as c3:
        assert await _chunks(0, 3, c3) == []


async def test_chunk_progress_reports(backend: Any) -> None:
    messages: list[str] = []
    c = Cancellable().on_progress(lambda _id, msg, meta: messages.append(msg))
    async with c:
        assert len(await _chunks(20, 5, c)) == 4
    assert messages == ["Processed chunk of 5 items"] * 4

    messages.clear()
    c2 = Cancellable().on_progress(lambda _id, msg, meta: messages.append(msg))
    async with c2:
        chunks = await _chunks(22, 5, c2)
    assert [len(ch) for ch in chunks] == [5, 5, 5, 5, 2]
    assert messages == ["Processed chunk of 5 items"] * 4 + ["Processed final chunk of 2 items"]

    messages.clear()
    c3 = Cancellable().on_progress(lambda _id, msg, meta: messages.append(msg))
    async with c3:
        assert await _chunks(0, 5, c3) == []
    assert messages == []


async def test_chunks_under_a_timeout(backend: Any) -> None:
    chunks: list[list[int]] = []
    with fail_after(backend), pytest.raises(backend.get_cancelled_exc_class()):
        async with Cancellable.with_timeout(0.15) as c:
            async for chunk in chunked_cancellable_stream(Source(backend, delay=0.01).gen(), 3, c):
                chunks.append(chunk)
    assert all(len(ch) == 3 for ch in chunks)
    assert c.context.cancel_reason is CancellationReason.TIMEOUT


async def test_chunked_early_exit_closes_the_source(backend: Any) -> None:
    src = Source(backend)
    async with Cancellable() as c:
        async with aclosing(chunked_cancellable_stream(src.gen(), 2, c)) as chunks:
            async for chunk in chunks:
                assert chunk == [0, 1]
                break
    assert src.closed.is_set()
    assert c.is_completed
