"""Test helpers for code that uses hother.cancelable (API.md §9.5, with the §14 fixes).

Everything here works on every backend (asyncio, uvloop, anyio on asyncio, trio) and measures
time on the **backend's clock** (``loop.time()`` / ``trio.current_time()``), so the helpers
give exact results on a virtual clock (see :mod:`hother.cancelable.testing.clock`).

* :class:`MockCancellationToken` -- a token that records every cancel call and can schedule
  one (0.1's version could not even be constructed, §14.6);
* :class:`OperationRecorder` -- records the events of operations (progress, status, errors);
  ``TestOperationRecorder`` is kept as an alias that pytest does not collect (§14.30);
* :class:`ManualSource` -- a cancellation source a test fires with :meth:`ManualSource.trigger`;
* :func:`assert_cancelled_within` -- assert that a block is cancelled inside a time window;
* :func:`assert_cancellation_within`, :func:`run_with_timeout_test`,
  :class:`CancellationScenario`, :func:`create_slow_stream`, :func:`sample_async_operation` --
  the 0.1 helpers, working.

The virtual clock lives in :mod:`hother.cancelable.testing.clock`; the package
:mod:`hother.cancelable.testing` re-exports both modules.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import math
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import sniffio

from ..backends.base import current_executor, dispatch
from ..core.cancellable import Cancellable, current_operation
from ..core.exceptions import CancellationError
from ..core.models import CancellationReason, OperationContext, OperationStatus
from ..core.token import CancellationToken
from ..sources.base import CancellationSource

__all__ = [
    "CancellationScenario",
    "CancelledBlock",
    "ManualSource",
    "MockCancellationToken",
    "OperationRecorder",
    "TestOperationRecorder",
    "assert_cancellation_within",
    "assert_cancelled_within",
    "create_slow_stream",
    "current_time",
    "run_with_timeout_test",
    "sample_async_operation",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


# ====================================================================== small helpers


def current_time() -> float:
    """The backend's clock (what deadlines are measured on): ``loop.time()`` under asyncio,
    ``trio.current_time()`` under trio -- virtual time on a virtual clock.

    :raises NoAsyncContextError: called outside async code.
    """
    from ..backends import get_backend

    return get_backend().current_time()


def _time_or_none() -> float | None:
    try:
        return current_time()
    except Exception:  # a plain thread, a signal handler outside the loop...
        return None


def _check_seconds(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number of seconds, got {type(value).__name__}")
    seconds = float(value)
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"{what} must be >= 0, got {value!r}")
    return seconds


def _check_reason(value: object, what: str = "reason") -> CancellationReason:
    if not isinstance(value, CancellationReason):
        raise TypeError(f"{what} must be a CancellationReason, got {type(value).__name__}")
    return value


def _check_message(value: object, what: str = "message") -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{what} must be a str or None, got {type(value).__name__}")
    return value


def _check_window(min_time: object, max_time: object) -> tuple[float, float]:
    low = _check_seconds(min_time, "min_time")
    if isinstance(max_time, bool) or not isinstance(max_time, int | float):
        raise TypeError(f"max_time must be a number of seconds, got {type(max_time).__name__}")
    high = float(max_time)
    if math.isnan(high) or high < low:
        raise ValueError(f"max_time must be >= min_time ({low}), got {max_time!r}")
    return low, high


def _asyncio_cancelling() -> int | None:
    """``Task.cancelling()`` of the current asyncio task, ``None`` elsewhere."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return None
    return task.cancelling() if task is not None else None


def _is_cancellation(exc: BaseException, cancel_cls: type[BaseException]) -> bool:
    """The backend cancel exception, a :class:`CancellationError`, a :class:`TimeoutError`,
    or a group made only of those."""
    if isinstance(exc, cancel_cls | CancellationError | TimeoutError):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_cancellation(e, cancel_cls) for e in exc.exceptions)
    return False


def _cancel_exc_class() -> type[BaseException]:
    from ..backends import get_backend

    return get_backend().get_cancelled_exc_class()


def _foreign_cancel(baseline: int | None) -> bool:
    """True when the calling asyncio task was cancelled by someone else meanwhile (an outer
    scope, ``task.cancel()``): that cancellation must propagate, never be swallowed."""
    if baseline is None:
        return False
    now = _asyncio_cancelling()
    return now is not None and now > baseline


class _Background:
    """A background task of the current runtime (asyncio task / trio system task) that a
    test helper owns and can cancel: it never outlives the helper's cleanup."""

    __slots__ = ("_done", "_scope", "_task")

    def __init__(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._task: asyncio.Task[None] | None = None
        self._scope: Any = None
        self._done: Any = None
        if sniffio.current_async_library() == "trio":
            import trio

            scope = self._scope = trio.CancelScope()
            done = self._done = trio.Event()

            async def run_trio() -> None:
                try:
                    with scope:
                        await fn()
                finally:
                    done.set()

            trio.lowlevel.spawn_system_task(run_trio, context=contextvars.copy_context())
        else:
            self._task = asyncio.get_running_loop().create_task(fn())
            _tasks.add(self._task)
            self._task.add_done_callback(_tasks.discard)

    @property
    def done(self) -> bool:
        if self._task is not None:
            return self._task.done()
        return bool(self._done.is_set())

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
        else:
            self._scope.cancel()

    async def aclose(self) -> None:
        """Cancel and wait until the task has finished (shielded wait)."""
        self.cancel()
        if self._task is not None:
            if not self._task.done():
                await asyncio.wait({self._task})
            return
        import trio

        with trio.CancelScope(shield=True):
            await self._done.wait()


_tasks: set[asyncio.Task[None]] = set()  # asyncio keeps only weak references to tasks


async def _guard(what: str, awaitable: Awaitable[Any]) -> None:
    try:
        await awaitable
    except Exception:
        logger.exception("%s raised", what)


# ====================================================================== mock token


class MockCancellationToken(CancellationToken):
    """A :class:`CancellationToken` for tests: records every cancel call, can schedule one.

    Attributes:
        cancel_history: one dict ``{"time", "reason", "message"}`` per call of
            :meth:`cancel` / :meth:`cancel_sync` (repeated calls included, whether they won or
            not); ``time`` is the backend clock, ``None`` when called outside async code.

    Constructed with the same keywords as :class:`CancellationToken` (0.1's mock could not
    be constructed at all, §14.6).
    """

    __slots__ = ("_scheduled", "cancel_history")

    cancel_history: list[dict[str, Any]]
    _scheduled: list[_Background]

    def __init__(self, **kwargs: Any) -> None:
        """Create the token (keywords as :class:`CancellationToken`) with an empty history."""
        super().__init__(**kwargs)
        self.cancel_history = []
        self._scheduled = []

    def _record(self, reason: object, message: object) -> None:
        self.cancel_history.append({"time": _time_or_none(), "reason": reason, "message": message})

    async def cancel(
        self,
        reason: CancellationReason = CancellationReason.MANUAL,
        message: str | None = None,
    ) -> bool:
        """Record the call, then :meth:`CancellationToken.cancel`; True if this call won."""
        self._record(reason, message)
        return await super().cancel(reason, message)

    def cancel_sync(
        self,
        reason: CancellationReason = CancellationReason.MANUAL,
        message: str | None = None,
    ) -> bool:
        """Record the call, then :meth:`CancellationToken.cancel_sync`; True if it won."""
        self._record(reason, message)
        return super().cancel_sync(reason, message)

    async def schedule_cancel(
        self,
        delay: float,
        reason: CancellationReason = CancellationReason.MANUAL,
        message: str | None = None,
    ) -> None:
        """Call :meth:`cancel` ``(reason, message)`` after ``delay`` seconds (backend clock).

        Returns at once; the delayed call runs in a background task of the current event
        loop / trio run (not a task group left open in the caller, as in 0.1). Pending
        scheduled cancels are dropped by :meth:`cancel_scheduled` and when the run ends.
        """
        seconds = _check_seconds(delay, "delay")
        _check_reason(reason)
        _check_message(message)
        from ..backends import get_backend

        backend = get_backend()

        async def fire() -> None:
            await backend.sleep(seconds)
            await _guard("scheduled cancel", self.cancel(reason, message))

        handle = _Background(fire)
        self._scheduled = [h for h in self._scheduled if not h.done]
        self._scheduled.append(handle)

    @property
    def pending_scheduled_cancels(self) -> int:
        """How many scheduled cancels have not run (nor been dropped) yet."""
        return sum(1 for h in self._scheduled if not h.done)

    def cancel_scheduled(self) -> int:
        """Drop the scheduled cancels that have not run yet; return how many were dropped."""
        dropped = 0
        for handle in self._scheduled:
            if not handle.done:
                handle.cancel()
                dropped += 1
        self._scheduled = []
        return dropped

    def get_cancel_count(self) -> int:
        """The number of cancel calls (``len(cancel_history)``)."""
        return len(self.cancel_history)


# ====================================================================== recorder


class OperationRecorder:
    """Record what operations report: progress, status changes, errors.

    Attributes:
        events: ``{"time", "operation_id", "event_type", "data"}`` dicts in arrival order
            (``time`` on the backend clock).
        operations: ``operation_id -> OperationContext`` (the live context) of every
            attached operation.

    ``TestOperationRecorder`` is the 0.1 name of this class.
    """

    __test__ = False  # not a test class, whatever name it is imported under (§14.30)

    def __init__(self) -> None:
        """Create an empty recorder."""
        self.events: list[dict[str, Any]] = []
        self.operations: dict[str, OperationContext] = {}
        self._waiters: list[Any] = []

    async def record_event(
        self, operation_id: str, event_type: str, data: dict[str, Any] | None = None
    ) -> None:
        """Append an event (and wake :meth:`wait_for_event` waiters)."""
        self.record_event_sync(operation_id, event_type, data)

    def record_event_sync(
        self, operation_id: str, event_type: str, data: dict[str, Any] | None = None
    ) -> None:
        """Synchronous :meth:`record_event` (call it from the event loop thread)."""
        if not isinstance(operation_id, str):
            raise TypeError(f"operation_id must be a str, got {type(operation_id).__name__}")
        if not isinstance(event_type, str):
            raise TypeError(f"event_type must be a str, got {type(event_type).__name__}")
        if data is not None and not isinstance(data, dict):
            raise TypeError(f"data must be a dict or None, got {type(data).__name__}")
        self.events.append(
            {
                "time": _time_or_none(),
                "operation_id": operation_id,
                "event_type": event_type,
                "data": data if data is not None else {},
            }
        )
        waiters, self._waiters = self._waiters, []
        for event in waiters:
            event.set()

    def attach_to_cancellable(self, cancellable: Cancellable) -> Cancellable:
        """Record the events of ``cancellable`` (before it is entered); returns it.

        progress -> ``"progress"`` ``{"message", "meta"}``; start / complete / cancel ->
        ``"status_<status value>"`` with ``context.log_context()``; error -> ``"error"``
        ``{"error_type", "error_message"}``.
        """
        if not isinstance(cancellable, Cancellable):
            raise TypeError(f"cancellable must be a Cancellable, got {type(cancellable).__name__}")
        self.operations[cancellable.context.id] = cancellable.context

        def on_progress(operation_id: str, message: Any, meta: dict[str, Any] | None) -> None:
            self.record_event_sync(operation_id, "progress", {"message": message, "meta": meta})

        def on_status(ctx: OperationContext) -> None:
            self.operations[ctx.id] = ctx
            self.record_event_sync(ctx.id, f"status_{ctx.status.value}", ctx.log_context())

        def on_error(ctx: OperationContext, error: BaseException) -> None:
            self.operations[ctx.id] = ctx
            self.record_event_sync(
                ctx.id,
                "error",
                {"error_type": type(error).__name__, "error_message": str(error)},
            )

        cancellable.on_progress(on_progress)
        cancellable.on_start(on_status)
        cancellable.on_complete(on_status)
        cancellable.on_cancel(on_status)
        cancellable.on_error(on_error)
        return cancellable

    def get_events_for_operation(self, operation_id: str) -> list[dict[str, Any]]:
        """The events of ``operation_id``, in order."""
        return [e for e in self.events if e["operation_id"] == operation_id]

    def get_events_by_type(self, event_type: str) -> list[dict[str, Any]]:
        """The events of type ``event_type``, in order."""
        return [e for e in self.events if e["event_type"] == event_type]

    def _latest(self, operation_id: str, event_type: str) -> dict[str, Any] | None:
        for event in reversed(self.events):
            if event["operation_id"] == operation_id and event["event_type"] == event_type:
                found: dict[str, Any] = event
                return found
        return None

    def assert_event_occurred(
        self, operation_id: str, event_type: str, timeout: float = 1.0
    ) -> dict[str, Any]:
        """Return the latest ``event_type`` event of ``operation_id``; AssertionError if none.

        Checks what was already recorded (``timeout`` is accepted for 0.1 compatibility and
        ignored; to wait for an event use :meth:`wait_for_event`).
        """
        event = self._latest(operation_id, event_type)
        if event is None:
            seen = [e["event_type"] for e in self.get_events_for_operation(operation_id)]
            raise AssertionError(
                f"no {event_type!r} event for operation {operation_id!r}; events seen: {seen}"
            )
        return event

    async def wait_for_event(
        self, operation_id: str, event_type: str, timeout: float = 1.0
    ) -> dict[str, Any]:
        """Wait (at most ``timeout`` seconds, backend clock) for an ``event_type`` event of
        ``operation_id`` and return the latest one; AssertionError on timeout."""
        seconds = _check_seconds(timeout, "timeout")
        from ..backends import get_backend

        backend = get_backend()
        deadline = backend.current_time() + seconds
        while True:
            event = self._latest(operation_id, event_type)
            if event is not None:
                return event
            if backend.current_time() >= deadline:
                return self.assert_event_occurred(operation_id, event_type)
            waiter = backend.create_event()
            self._waiters.append(waiter)
            with backend.create_cancel_scope(deadline=deadline):
                await waiter.wait()

    def assert_final_status(self, operation_id: str, expected_status: OperationStatus) -> None:
        """AssertionError unless the recorded operation ended with ``expected_status``."""
        expected = OperationStatus(expected_status)
        ctx = self.operations.get(operation_id)
        if ctx is None:
            raise AssertionError(f"operation {operation_id!r} was not recorded")
        if ctx.status != expected:
            raise AssertionError(
                f"operation {operation_id!r} ended {ctx.status.value}, expected {expected.value}"
            )


#: 0.1 name of :class:`OperationRecorder` (not collected by pytest: ``__test__ = False``).
TestOperationRecorder = OperationRecorder


# ====================================================================== manual source


class ManualSource(CancellationSource):
    """A cancellation source fired by the test: :meth:`trigger` cancels the operation.

    Deterministic (no timer, no polling, no task)::

        source = ManualSource()
        async with Cancellable().add_source(source) as op:
            source.trigger(message="stop now")   # or from another thread
            await sleep(10)                      # cancelled here

    A trigger before monitoring starts (or between two monitorings) is remembered and fires
    as soon as the next monitoring starts; :meth:`reset` forgets it.
    """

    def __init__(
        self, reason: CancellationReason = CancellationReason.MANUAL, name: str | None = None
    ) -> None:
        """Create a source reporting ``reason`` by default (MANUAL)."""
        super().__init__(reason, name)
        self._default_reason = reason
        self._pending: tuple[CancellationReason, str | None] | None = None
        self._executor: Any = None
        self._thread_id: int | None = None
        self._lock = threading.Lock()
        self.trigger_count = 0

    @property
    def pending(self) -> bool:
        """``True`` when a trigger waits for the next monitoring."""
        return self._pending is not None

    async def start_monitoring(self, scope: Any) -> None:
        """Start monitoring ``scope``; fire at once if a trigger is pending."""
        with self._lock:
            self._executor = current_executor()
            self._thread_id = threading.get_ident()
        self.reason = self._default_reason
        await super().start_monitoring(scope)
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            self._fire_now(*pending)

    async def stop_monitoring(self) -> None:
        """Stop monitoring (idempotent)."""
        with self._lock:
            self._executor = None
            self._thread_id = None
        await super().stop_monitoring()

    def reset(self) -> None:
        """Forget a pending trigger."""
        with self._lock:
            self._pending = None

    def _fire_now(self, reason: CancellationReason, message: str | None) -> bool:
        if self._triggered or not self._monitoring:
            return False
        self.reason = reason
        self.trigger_cancellation_nowait(message)
        return self._triggered

    def trigger(self, reason: CancellationReason | None = None, message: str | None = None) -> bool:
        """Fire the source: cancel the monitored scope with ``reason`` and ``message``.

        ``reason`` defaults to the source's reason; ``message`` to ``"{name} triggered"``.
        Callable from the event loop thread (fires synchronously) or from any other thread
        (scheduled thread-safely on the loop). Returns ``True`` when the source fired now
        (or, from another thread, when the trigger was handed to the loop); ``False`` when it
        had already fired or is not monitoring (the trigger is then remembered for the next
        monitoring).
        """
        if reason is not None:
            _check_reason(reason)
        _check_message(message)
        chosen = reason if reason is not None else self._default_reason
        text = message if message is not None else f"{self.name} triggered"
        with self._lock:
            self.trigger_count += 1
            if not self._monitoring:
                self._pending = (chosen, text)
                return False
            executor = self._executor
            if executor is None:  # stopping: too late to fire
                return False
            on_loop_thread = self._thread_id == threading.get_ident()
        if on_loop_thread:
            return self._fire_now(chosen, text)
        if self._triggered:
            return False
        dispatch(executor, lambda: self._fire_now(chosen, text))
        return True


# ====================================================================== time assertions


@dataclass
class CancelledBlock:
    """What :func:`assert_cancelled_within` measured (backend clock)."""

    start: float
    """When the block was entered."""
    end: float | None = None
    """When the cancellation reached the end of the block (``None`` while running)."""
    exception: BaseException | None = None
    """The cancellation that ended the block (swallowed by the helper)."""

    @property
    def elapsed(self) -> float | None:
        """``end - start``, ``None`` while the block runs."""
        return None if self.end is None else self.end - self.start


@asynccontextmanager
async def assert_cancelled_within(
    min_time: float, max_time: float
) -> AsyncIterator[CancelledBlock]:
    """Assert that the block is **cancelled** between ``min_time`` and ``max_time`` seconds
    after it started, on the backend clock (exact on a virtual clock).

    "Cancelled" means the block ends with the backend's cancel exception (e.g. re-raised by
    a ``Cancellable`` that timed out), a :class:`CancellationError` or a
    :class:`TimeoutError` (``asyncio.timeout``, ``anyio.fail_after``); that exception is
    swallowed and stored on the yielded :class:`CancelledBlock`. :class:`AssertionError`
    when the block completes normally or ends outside the window. Any other exception
    propagates, and so does a cancellation of the *calling* asyncio task by someone else
    (an outer scope): it is not the block's.
    """
    low, high = _check_window(min_time, max_time)
    cancel_cls = _cancel_exc_class()
    record = CancelledBlock(start=current_time())
    baseline = _asyncio_cancelling()
    try:
        yield record
    except BaseException as exc:
        if not _is_cancellation(exc, cancel_cls) or _foreign_cancel(baseline):
            raise
        record.end = current_time()
        record.exception = exc
    else:
        raise AssertionError(
            f"the block completed after {current_time() - record.start:.6g}s "
            f"without being cancelled (expected a cancellation within [{low}, {high}]s)"
        )
    elapsed = record.end - record.start
    if not low <= elapsed <= high:
        raise AssertionError(
            f"the block was cancelled after {elapsed:.6g}s, outside [{low}, {high}]s"
        )


async def run_with_timeout_test(
    coro: Awaitable[Any], expected_timeout: float, tolerance: float = 0.1
) -> None:
    """Await ``coro`` (which is expected to time out) and check when it did.

    :class:`AssertionError` if ``coro`` completes, or if its cancellation (backend cancel
    exception, :class:`CancellationError` or :class:`TimeoutError`) arrives more than
    ``tolerance`` seconds away from ``expected_timeout`` (backend clock).
    """
    if not inspect.isawaitable(coro):
        raise TypeError(f"coro must be awaitable, got {type(coro).__name__}")
    try:
        expected = _check_seconds(expected_timeout, "expected_timeout")
        slack = _check_seconds(tolerance, "tolerance")
    except (TypeError, ValueError):
        if inspect.iscoroutine(coro):
            coro.close()
        raise
    async with assert_cancelled_within(max(0.0, expected - slack), expected + slack):
        await coro


@asynccontextmanager
async def assert_cancellation_within(
    min_time: float, max_time: float
) -> AsyncIterator[MockCancellationToken]:
    """Yield a :class:`MockCancellationToken`; assert it is cancelled within the window.

    The elapsed time is measured (backend clock) from entering the block to the first
    cancel call that cancelled the token (to the block's end when the token was cancelled
    outside async code). A cancellation escaping the block because of that token is
    swallowed; :class:`AssertionError` if the token was not cancelled or was cancelled
    outside ``[min_time, max_time]``. Scheduled cancels still pending at the end are dropped.
    """
    low, high = _check_window(min_time, max_time)
    cancel_cls = _cancel_exc_class()
    token = MockCancellationToken()
    start = current_time()
    baseline = _asyncio_cancelling()
    try:
        yield token
    except BaseException as exc:
        if (
            not token.is_cancelled
            or not _is_cancellation(exc, cancel_cls)
            or _foreign_cancel(baseline)
        ):
            raise
    finally:
        token.cancel_scheduled()
    end = current_time()
    if not token.is_cancelled:
        raise AssertionError(
            f"the token was not cancelled (block ran {end - start:.6g}s; "
            f"expected a cancellation within [{low}, {high}]s)"
        )
    when = next((entry["time"] for entry in token.cancel_history if entry["time"] is not None), end)
    elapsed = when - start
    if not low <= elapsed <= high:
        raise AssertionError(
            f"the token was cancelled after {elapsed:.6g}s, outside [{low}, {high}]s"
        )


# ====================================================================== streams / samples


async def create_slow_stream(
    items: Iterable[T], delay: float = 0.1, cancellable: Cancellable | None = None
) -> AsyncIterator[T]:
    """Yield ``items``, sleeping ``delay`` seconds (backend clock) before each but the first.

    With ``cancellable``, its token is checked before every item
    (:meth:`CancellationToken.check_async`: the backend's cancellation is raised once it is
    cancelled).
    """
    seconds = _check_seconds(delay, "delay")
    if cancellable is not None and not isinstance(cancellable, Cancellable):
        raise TypeError(
            f"cancellable must be a Cancellable or None, got {type(cancellable).__name__}"
        )
    from ..backends import get_backend

    backend = get_backend()
    for index, item in enumerate(items):
        if index:
            await backend.sleep(seconds)
        if cancellable is not None:
            await cancellable.token.check_async()
        yield item


async def sample_async_operation(
    duration: float = 1.0, cancellable: Cancellable | None = None
) -> str:
    """Sleep ``duration`` seconds in two halves and return ``"success"``.

    Reports progress (``"Operation started"``, ``"Operation 50% complete"``,
    ``"Operation completed"``) to ``cancellable``, or when it is omitted to
    :func:`current_operation` (if any).
    """
    seconds = _check_seconds(duration, "duration")
    if cancellable is not None and not isinstance(cancellable, Cancellable):
        raise TypeError(
            f"cancellable must be a Cancellable or None, got {type(cancellable).__name__}"
        )
    from ..backends import get_backend

    backend = get_backend()
    op = cancellable if cancellable is not None else current_operation()
    if op is not None:
        await op.report_progress("Operation started", {"duration": seconds})
    await backend.sleep(seconds / 2)
    if op is not None:
        await op.report_progress("Operation 50% complete", {"progress": 0.5})
    await backend.sleep(seconds / 2)
    if op is not None:
        await op.report_progress("Operation completed", {"progress": 1.0})
    return "success"


# ====================================================================== scenario


class CancellationScenario:
    """A scripted cancellation test: delays and cancellations run next to an operation,
    then progress and status checks are evaluated.

    Example::

        recorder = await (
            CancellationScenario("stop_early")
            .add_delay(0.2)
            .add_cancellation(CancellationReason.MANUAL, "enough")
            .add_status_check(OperationStatus.CANCELLED)
            .run(sample_async_operation, 1.0)
        )
    """

    __test__ = False

    def __init__(self, name: str) -> None:
        """Create an empty scenario called ``name``."""
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        self.name = name
        self.steps: list[tuple[str, tuple[Any, ...]]] = []
        self.checks: list[tuple[str, tuple[Any, ...]]] = []
        self.operation: Cancellable | None = None
        self.token: MockCancellationToken | None = None

    def add_delay(self, duration: float) -> CancellationScenario:
        """Wait ``duration`` seconds (backend clock) before the next step."""
        self.steps.append(("delay", (_check_seconds(duration, "duration"),)))
        return self

    def add_cancellation(
        self,
        reason: CancellationReason = CancellationReason.MANUAL,
        message: str | None = None,
    ) -> CancellationScenario:
        """Cancel the scenario's token with ``reason`` and ``message``."""
        self.steps.append(("cancel", (_check_reason(reason), _check_message(message))))
        return self

    def add_progress_check(
        self, expected_message: Any, timeout: float = 1.0
    ) -> CancellationScenario:
        """After the run, check the operation reported progress ``expected_message``.

        Evaluated once the operation ended (``timeout`` is kept for 0.1 compatibility).
        """
        _check_seconds(timeout, "timeout")
        self.checks.append(("progress", (expected_message,)))
        return self

    def add_status_check(self, expected_status: OperationStatus) -> CancellationScenario:
        """After the run, check the operation's final status."""
        self.checks.append(("status", (OperationStatus(expected_status),)))
        return self

    async def run(
        self, operation: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any
    ) -> OperationRecorder:
        """Run ``operation(*args, **kwargs)`` inside ``Cancellable.with_token(token,
        name=f"scenario_{name}")`` while the steps run concurrently; return the recorder.

        The operation is not injected (it can use :func:`current_operation`). A cancellation
        caused by the scenario ends the run normally with status CANCELLED (0.1 swallowed it
        inside the block, so the status read COMPLETED); other exceptions propagate. Then the
        checks run: :class:`AssertionError` on the first failing one.
        """
        if not callable(operation):
            raise TypeError(f"operation must be callable, got {type(operation).__name__}")
        recorder = OperationRecorder()
        token = MockCancellationToken()
        op = Cancellable.with_token(token, name=f"scenario_{self.name}")
        recorder.attach_to_cancellable(op)
        self.operation, self.token = op, token
        from ..backends import get_backend

        backend = get_backend()
        cancel_cls = backend.get_cancelled_exc_class()
        steps = list(self.steps)

        async def drive() -> None:
            for kind, params in steps:
                if kind == "delay":
                    await backend.sleep(params[0])
                else:
                    await _guard("scenario cancellation", token.cancel(*params))

        baseline = _asyncio_cancelling()
        driver = _Background(drive)
        try:
            async with op:
                await operation(*args, **kwargs)
        except BaseException as exc:
            if (
                not op.is_cancelled
                or not _is_cancellation(exc, cancel_cls)
                or _foreign_cancel(baseline)
            ):
                raise
        finally:
            await driver.aclose()
            token.cancel_scheduled()
        self._check(recorder, op)
        return recorder

    def _check(self, recorder: OperationRecorder, op: Cancellable) -> None:
        op_id = op.operation_id
        for kind, params in self.checks:
            if kind == "progress":
                expected = params[0]
                messages = [
                    e["data"].get("message")
                    for e in recorder.get_events_for_operation(op_id)
                    if e["event_type"] == "progress"
                ]
                if expected not in messages:
                    raise AssertionError(
                        f"scenario {self.name!r}: progress {expected!r} was not reported "
                        f"(reported: {messages})"
                    )
            else:
                recorder.assert_final_status(op_id, params[0])
