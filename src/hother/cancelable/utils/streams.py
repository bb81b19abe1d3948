"""Cancellable async streams (API.md §9.3).

* :func:`cancellable_stream` -- wrap an async iterable in its own operation (timeout, token,
  progress, partial results);
* :class:`CancellableAsyncIterator` -- a class-based wrapper checking an existing
  :class:`Cancellable` before each item;
* :func:`chunked_cancellable_stream` -- group the items of a stream into lists.

**How** :func:`cancellable_stream` **scopes its cancellation (fix of API.md §14.19).** 0.1
entered the operation's cancel scope when the stream started and kept it open across every
``yield``: the consumer's own code ran inside it, a consumer that stopped early left the scope
entered in its task (a later timeout then cancelled unrelated code), and finalising the
generator from another task exited the scope in the wrong task. Here the cancel scope is
entered only **around each pull** from the source (and left before the item is handed to the
consumer); the operation's deadline and token are checked again at every pull. Consequences:

* a timeout or token cancellation interrupts a pending pull at once; one that happens while
  the consumer processes an item is delivered at the next pull (the consumer's code is never
  cancelled by the stream);
* cancellation surfaces to the consumer as the runtime's cancel exception
  (``asyncio.CancelledError`` / ``trio.Cancelled``), like a ``Cancellable`` block;
* the consumer may stop at any time (``break``, ``aclose()``, an exception, or dropping the
  stream): nothing is left entered, and whenever the stream is closed the operation ends
  ``COMPLETED`` with ``partial_result["completed"] is False`` and the source is closed (its
  ``aclose()`` is awaited when it has one). Use ``contextlib.aclosing`` to close it
  deterministically;
* pulls may come from different tasks.

The stream's operation is a :class:`Cancellable` that is not entered as a context manager
(there is no block to run): it carries the given ``operation_id`` and ``name`` and is
:func:`~hother.cancelable.core.cancellable.current_operation` while the source produces an
item. Its status goes RUNNING at the first pull, then COMPLETED (exhausted or closed early),
CANCELLED (reason TIMEOUT / the token's reason / MANUAL for an enclosing cancellation) or
FAILED (the source raised). ``context.partial_result`` is always written:
``{"count": items delivered, "buffer": last 1000 items or None, "completed": bool}``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from ..core.cancellable import Cancellable, _current_operation
from ..core.exceptions import CancellationError
from ..core.models import CancellationReason, OperationStatus
from ..core.token import CancellationToken
from ..sources.timeout import validate_timeout

__all__ = ["CancellableAsyncIterator", "cancellable_stream", "chunked_cancellable_stream"]

T = TypeVar("T")

_BUFFER_LIMIT = 1000


# ---------------------------------------------------------------------------------- checks
def _as_iterator(stream: object, what: str = "stream") -> AsyncIterator[Any]:
    """``stream.__aiter__()`` (or ``stream`` itself when it only has ``__anext__``)."""
    if isinstance(stream, (str, bytes)) or not (
        hasattr(stream, "__aiter__") or hasattr(stream, "__anext__")
    ):
        raise TypeError(f"{what} must be an async iterable, got {type(stream).__name__}")
    iterator: Any = stream.__aiter__() if hasattr(stream, "__aiter__") else stream
    if not hasattr(iterator, "__anext__"):
        raise TypeError(
            f"{what}.__aiter__() must return an async iterator, got {type(iterator).__name__}"
        )
    return iterator  # type: ignore[no-any-return]


def _check_positive_int(value: object, what: str, *, optional: bool) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        expected = "a positive int or None" if optional else "a positive int"
        raise TypeError(f"{what} must be {expected}, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{what} must be > 0, got {value!r}")
    return value


def _check_bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be a bool, got {type(value).__name__}")
    return value


def _check_cancellable(value: object) -> Cancellable:
    if not isinstance(value, Cancellable):
        raise TypeError(f"cancellable must be a Cancellable, got {type(value).__name__}")
    return value


def _backend() -> Any:
    from ..backends import get_backend

    return get_backend()


def _is_cancel_exc(exc: BaseException, cancel_cls: type[BaseException]) -> bool:
    if isinstance(exc, cancel_cls):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_cancel_exc(e, cancel_cls) for e in exc.exceptions)
    return False


async def _close_source(iterator: object, backend: Any) -> None:
    """Await ``iterator.aclose()`` if it exists, shielded from an outer cancellation."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is None:
        return
    with backend.create_cancel_scope(shield=True):
        await aclose()


# ---------------------------------------------------------------------------------- stream run
class _StreamRun(Generic[T]):
    """State of one :func:`cancellable_stream`: the operation, the deadline, the pull scope."""

    __slots__ = (
        "backend",
        "buffer",
        "count",
        "deadline",
        "finished",
        "iterator",
        "op",
        "report_interval",
        "scope",
        "timed_out",
        "timeout",
        "token",
    )

    def __init__(
        self,
        iterator: AsyncIterator[T],
        op: Cancellable,
        timeout: float | None,
        token: CancellationToken | None,
        report_interval: int | None,
        buffer_partial: bool,
    ) -> None:
        self.iterator = iterator
        self.op = op
        self.timeout = timeout
        self.token = token
        self.report_interval = report_interval
        self.buffer: deque[T] | None = deque(maxlen=_BUFFER_LIMIT) if buffer_partial else None
        self.count = 0
        self.deadline = math.inf
        self.scope: Any = None
        self.backend: Any = None
        self.finished = False
        self.timed_out = False

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        """First pull: status RUNNING, token linked and hooked, deadline armed."""
        self.backend = backend = _backend()
        op = self.op
        ctx = op.context
        ctx.start_time = datetime.now(UTC)
        ctx.update_status(OperationStatus.RUNNING)
        if self.token is not None:
            op.token.link_sync(self.token, preserve_reason=True)
        op.token.register_callback_sync(self._on_token_cancelled)
        if self.timeout is not None:
            self.deadline = backend.current_time() + self.timeout

    def _on_token_cancelled(self, _token: CancellationToken) -> None:
        # runs on the loop of the first pull; interrupts a pending pull at once
        scope = self.scope
        if scope is not None and not scope.cancel_called:
            scope.cancel()

    def finish(
        self,
        status: OperationStatus,
        *,
        completed: bool,
        reason: CancellationReason | None = None,
        message: str | None = None,
        error: str | None = None,
    ) -> None:
        """Record the outcome on the operation (once) and unlink the caller's token."""
        if self.finished:
            return
        self.finished = True
        op = self.op
        ctx = op.context
        if reason is not None:
            ctx.cancel_reason = reason
            ctx.cancel_message = message
        if error is not None:
            ctx.error = error
        buffer = self.buffer
        ctx.partial_result = {
            "count": self.count,
            "buffer": list(buffer) if buffer is not None else None,
            "completed": completed,
        }
        ctx.update_status(status)
        if self.token is not None and self.backend is not None:
            op.token.unlink_sync(self.token)

    # -- pulling ------------------------------------------------------------------------
    def _cancel_pending(self) -> bool:
        if self.op.token.is_cancelled:
            return True
        if self.deadline != math.inf and self.backend.current_time() >= self.deadline:
            self.timed_out = True
            return True
        return False

    def _note_deadline(self, scope: Any) -> None:
        """After a pull: remember whether the scope's deadline (not a cancel()) fired."""
        if self.timed_out or self.deadline == math.inf or not scope.cancel_called:
            return
        reached = getattr(scope, "deadline_reached", None)  # the C engine knows exactly
        if reached is None:
            reached = self.backend.current_time() >= self.deadline
        self.timed_out = bool(reached)

    def _cancel_reason(self) -> tuple[CancellationReason, str | None]:
        """Why a cancel exception ended the last pull (token, deadline, else enclosing)."""
        tok = self.op.token
        if tok.is_cancelled:
            return tok.reason or CancellationReason.MANUAL, tok.message
        if self.timed_out:
            return CancellationReason.TIMEOUT, "Operation timed out"
        return CancellationReason.MANUAL, None

    async def _pull(self) -> T:
        """One ``__anext__`` of the source inside a fresh scope bounded by the deadline."""
        backend = self.backend
        scope = backend.create_cancel_scope(deadline=self.deadline)
        error: BaseException | None = None
        self.scope = scope
        try:
            with scope:
                try:
                    if self._cancel_pending():
                        scope.cancel()
                        await backend.sleep(0)  # delivers the runtime's own cancel exception
                    return await self.iterator.__anext__()
                except BaseException as exc:
                    error = exc
                    raise
        finally:
            self.scope = None
            self._note_deadline(scope)
        # the scope swallowed its own cancellation: the consumer still has to see it
        if error is None:  # pragma: no cover - a scope only swallows an exception
            raise RuntimeError("cancel scope exited without an exception or a result")
        raise error

    async def next(self) -> T:
        """The next item, or the stream's end (``StopAsyncIteration``) / cancellation."""
        if self.backend is None:
            self.start()
        cv_token = _current_operation.set(self.op)
        try:
            try:
                item = await self._pull()
                count = self.count + 1
                interval = self.report_interval
                if interval is not None and count % interval == 0:
                    await self.op.report_progress(
                        f"Processed {count} items", {"count": count, "latest_item": item}
                    )
            except StopAsyncIteration:
                self.finish(OperationStatus.COMPLETED, completed=True)
                raise
            except BaseException as exc:
                self._record_failure(exc)
                raise
            # counted (and buffered) once it is certain to reach the consumer
            self.count = count
            if self.buffer is not None:
                self.buffer.append(item)
            return item
        finally:
            try:
                _current_operation.reset(cv_token)
            except ValueError:  # pragma: no cover - reset from another context
                _current_operation.set(None)

    def _record_failure(self, exc: BaseException) -> None:
        """A pull (or a progress report) raised: CANCELLED or FAILED."""
        if isinstance(exc, CancellationError):
            self.finish(
                OperationStatus.CANCELLED, completed=False, reason=exc.reason, message=exc.message
            )
        elif _is_cancel_exc(exc, self.backend.get_cancelled_exc_class()):
            reason, message = self._cancel_reason()
            self.finish(OperationStatus.CANCELLED, completed=False, reason=reason, message=message)
        else:
            self.finish(OperationStatus.FAILED, completed=False, error=str(exc))


def _progress_adapter(on_progress: Callable[[int, Any], Any]) -> Callable[..., Any]:
    def adapter(_operation_id: str, _message: Any, metadata: dict[str, Any] | None) -> Any:
        if metadata is not None and "count" in metadata and "latest_item" in metadata:
            return on_progress(metadata["count"], metadata["latest_item"])
        return None

    return adapter


def cancellable_stream(
    stream: AsyncIterable[T] | AsyncIterator[T],
    timeout: float | timedelta | None = None,
    token: CancellationToken | None = None,
    report_interval: int | None = None,
    on_progress: Callable[[int, T], Any] | None = None,
    buffer_partial: bool = False,
    operation_id: str | None = None,
    name: str | None = None,
) -> AsyncGenerator[T, None]:
    """Yield the items of ``stream`` as one cancellable operation.

    Args:
        stream: an async iterable (or async iterator).
        timeout: seconds (or a ``timedelta``) from the first pull after which the stream is
            cancelled (reason TIMEOUT); ``None``: no timeout. Must be positive.
        token: a :class:`CancellationToken` that cancels the stream (its reason and message
            are recorded).
        report_interval: report progress every this many items. ``None``: every item when
            ``on_progress`` is given, else no progress reports.
        on_progress: ``on_progress(count, latest_item)`` (sync or async) at each report; an
            exception it raises is logged and ignored.
        buffer_partial: keep the last 1000 items in ``partial_result["buffer"]``.
        operation_id: the id of the stream's operation.
        name: its name (default ``stream``, ``stream_timeout``, ``stream_token`` or
            ``stream_timeout_token``).

    Returns:
        An async generator. Arguments are checked when it is created: a non-async-iterable
        ``stream`` or a bad ``token``/``on_progress`` raises ``TypeError``; a non-positive
        ``timeout``/``report_interval`` raises ``ValueError`` (``timeout=0`` is an error,
        not "no timeout").

    See the module docstring for where the cancel scope is open and what early exits do.
    """
    iterator = _as_iterator(stream)
    seconds = validate_timeout(timeout) if timeout is not None else None
    if token is not None and not isinstance(token, CancellationToken):
        raise TypeError(f"token must be a CancellationToken or None, got {type(token).__name__}")
    interval = _check_positive_int(report_interval, "report_interval", optional=True)
    if on_progress is not None and not callable(on_progress):
        raise TypeError(f"on_progress must be callable or None, got {type(on_progress).__name__}")
    _check_bool(buffer_partial, "buffer_partial")
    if name is None:
        if seconds is not None and token is not None:
            name = "stream_timeout_token"
        elif seconds is not None:
            name = "stream_timeout"
        elif token is not None:
            name = "stream_token"
        else:
            name = "stream"
    op = Cancellable(operation_id=operation_id, name=name)
    if on_progress is not None:
        op.on_progress(_progress_adapter(on_progress))
        if interval is None:
            interval = 1
    run: _StreamRun[T] = _StreamRun(iterator, op, seconds, token, interval, buffer_partial)
    return _drive(run)


async def _drive(run: _StreamRun[T]) -> AsyncGenerator[T, None]:
    try:
        while True:
            try:
                item = await run.next()
            except StopAsyncIteration:
                return
            yield item
    finally:
        if not run.finished and run.backend is not None:
            # the consumer stopped early (break + aclose, exception, garbage collection)
            run.finish(OperationStatus.COMPLETED, completed=False)
            await _close_source(run.iterator, run.backend)


# ---------------------------------------------------------------------------------- iterator
class CancellableAsyncIterator(AsyncIterator[T]):
    """Wrap an async iterator so that each item first checks an existing operation's token.

    The wrapper opens no cancel scope of its own: a timeout of ``cancellable`` interrupts a
    pull when the iteration runs inside ``async with cancellable``. Before each pull the
    operation's token is checked (``check_async()``: the runtime's cancel exception).

    Args:
        iterator: the async iterator (or iterable) to wrap.
        cancellable: the :class:`Cancellable` whose token is checked and which receives the
            progress reports and the partial result.
        report_interval: every this many items, report ``Processed {count} items`` with
            metadata ``{"count", "latest_item"}`` before returning that item.
        buffer_partial: keep the last 1000 items and write
            ``cancellable.context.partial_result = {"count", "buffer", "completed"}`` when
            the iteration ends (``completed`` is False after a cancellation or an error).

    Attributes:
        _count: the number of items returned so far.
    """

    def __init__(
        self,
        iterator: AsyncIterator[T] | AsyncIterable[T],
        cancellable: Cancellable,
        report_interval: int | None = None,
        buffer_partial: bool = False,
    ) -> None:
        """Check the arguments (``TypeError``/``ValueError`` naming the bad one)."""
        self._iterator: AsyncIterator[T] = _as_iterator(iterator, "iterator")
        self._cancellable = _check_cancellable(cancellable)
        self._report_interval = _check_positive_int(
            report_interval, "report_interval", optional=True
        )
        self._buffer_partial = _check_bool(buffer_partial, "buffer_partial")
        self._buffer: deque[T] = deque(maxlen=_BUFFER_LIMIT)
        self._count = 0
        self._completed = False

    def __aiter__(self) -> CancellableAsyncIterator[T]:
        """Return ``self``."""
        return self

    def _write_partial(self, completed: bool) -> None:
        if self._buffer_partial:
            self._cancellable.context.partial_result = {
                "count": self._count,
                "buffer": list(self._buffer),
                "completed": completed,
            }

    async def __anext__(self) -> T:
        """Check the token, pull the next item, count/buffer/report it, return it."""
        if self._completed:
            raise StopAsyncIteration
        try:
            await self._cancellable.token.check_async()
            item = await self._iterator.__anext__()
        except StopAsyncIteration:
            self._completed = True
            self._write_partial(True)
            raise
        except BaseException:
            self._write_partial(False)
            raise
        self._count += 1
        if self._buffer_partial:
            self._buffer.append(item)
        interval = self._report_interval
        if interval is not None and self._count % interval == 0:
            await self._cancellable.report_progress(
                f"Processed {self._count} items", {"count": self._count, "latest_item": item}
            )
        return item

    async def aclose(self) -> None:
        """Close the wrapped iterator (awaits its ``aclose()`` when it has one)."""
        aclose = getattr(self._iterator, "aclose", None)
        if aclose is not None:
            await aclose()


# ---------------------------------------------------------------------------------- chunks
def chunked_cancellable_stream(
    stream: AsyncIterable[T] | AsyncIterator[T],
    chunk_size: int,
    cancellable: Cancellable,
) -> AsyncGenerator[list[T], None]:
    """Yield the items of ``stream`` in lists of ``chunk_size`` (the last one may be shorter).

    The items go through ``cancellable.stream(stream)`` (token checks, buffered
    ``partial_result``). When the consumer comes back for more after a full chunk,
    ``Processed chunk of {chunk_size} items`` is reported on ``cancellable``; after the final,
    shorter chunk, ``Processed final chunk of {n} items``. An empty stream yields nothing and
    reports nothing. Metadata of the reports: ``{"chunk_size", "chunks", "items"}`` (this
    chunk's length, chunks and items delivered so far). When the iteration ends other than
    by exhausting the source (early stop, cancellation, error), the source is closed (its
    ``aclose()`` awaited, shielded, when it has one).

    Raises (at call time): ``TypeError`` for a non-async-iterable ``stream``, a non-int
    ``chunk_size`` or a non-``Cancellable``; ``ValueError`` for ``chunk_size <= 0``.
    """
    iterator = _as_iterator(stream)
    size = _check_positive_int(chunk_size, "chunk_size", optional=False)
    assert size is not None
    op = _check_cancellable(cancellable)
    return _chunks(iterator, size, op)


async def _chunks(
    iterator: AsyncIterator[T], size: int, op: Cancellable
) -> AsyncGenerator[list[T], None]:
    chunks = 0
    items = 0
    chunk: list[T] = []
    exhausted = False
    try:
        async with aclosing(op.stream(iterator)) as items_iter:  # type: ignore[type-var]
            async for item in items_iter:
                chunk.append(item)
                if len(chunk) == size:
                    chunks += 1
                    items += size
                    yield chunk
                    chunk = []
                    await op.report_progress(
                        f"Processed chunk of {size} items",
                        {"chunk_size": size, "chunks": chunks, "items": items},
                    )
        exhausted = True
    finally:
        if not exhausted:  # stopped early, cancelled or failed: close the source too
            await _close_source(iterator, _backend())
    if chunk:
        chunks += 1
        items += len(chunk)
        n = len(chunk)
        yield chunk
        await op.report_progress(
            f"Processed final chunk of {n} items",
            {"chunk_size": n, "chunks": chunks, "items": items},
        )
