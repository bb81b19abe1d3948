"""The backend interface: what the library needs from an async runtime.

Two implementations exist: :class:`~hother.cancelable.backends.asyncio_backend.AsyncioBackend`
(native asyncio, cancel scopes from the C engine, no anyio import) and
:class:`~hother.cancelable.backends.anyio_backend.AnyioBackend` (delegates to anyio; runs on
asyncio or trio). Obtain the right one with :func:`hother.cancelable.backends.get_backend`.

The abstract classes below (:class:`CancelScope`, :class:`Lock`, :class:`Event`,
:class:`TaskGroup`, :class:`Queue`) describe the objects the backends return. Where a native
object already has the right interface it is returned as is (no wrapper on the hot path) and
registered as a *virtual* subclass, so ``isinstance(scope, CancelScope)`` holds for
``_engine.CancelScope``, ``anyio.CancelScope``, ``asyncio.Lock``, ``anyio.Lock``,
``asyncio.Event``, ``anyio.Event`` and ``anyio.abc.TaskGroup`` once their backend module is
imported.

The module also holds the small thread-dispatch helpers both backends share
(:func:`current_executor`, :func:`dispatch`, :func:`run_callback`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import numbers
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, ClassVar, Generic, Protocol, TypeVar

__all__ = [
    "AsyncBackend",
    "CancelScope",
    "Event",
    "Lock",
    "Queue",
    "QueueClosed",
    "QueueEmpty",
    "QueueFull",
    "TaskGroup",
    "TaskStatus",
    "current_executor",
    "dispatch",
    "run_callback",
    "validate_deadline",
    "validate_max_size",
]

logger = logging.getLogger("hother.cancelable.backends")

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)


# --------------------------------------------------------------------------------------
# Validation shared by the backends
# --------------------------------------------------------------------------------------


def validate_deadline(deadline: object) -> float:
    """Return ``deadline`` as a float, or raise.

    A deadline is an absolute time on the backend's clock (``current_time()``).
    ``math.inf`` means "no deadline"; a past or negative deadline means "already expired".

    :raises TypeError: ``deadline`` is not a real number (``bool`` is rejected too).
    :raises ValueError: ``deadline`` is NaN.
    """
    if isinstance(deadline, float):
        value = deadline
    elif isinstance(deadline, numbers.Real) and not isinstance(deadline, bool):
        value = float(deadline)
    else:
        raise TypeError(
            f"deadline must be a real number (use math.inf for no deadline), "
            f"got {type(deadline).__name__}"
        )
    if value != value:
        raise ValueError("deadline must not be NaN (use math.inf for no deadline)")
    return value


def validate_shield(shield: object) -> bool:
    """Return ``shield`` if it is a bool, else raise :class:`TypeError`."""
    if shield is True or shield is False:
        return shield
    raise TypeError(f"shield must be a bool, got {type(shield).__name__}")


def validate_max_size(max_size: object) -> float:
    """Validate a queue size: a non-negative ``int`` or ``math.inf``.

    :raises TypeError: not an int and not ``math.inf`` (``bool`` and finite floats rejected).
    :raises ValueError: negative (or NaN).
    """
    if isinstance(max_size, bool) or not isinstance(max_size, int | float):
        raise TypeError(f"max_size must be an int or math.inf, got {type(max_size).__name__}")
    if isinstance(max_size, float):
        if max_size != max_size:
            raise ValueError("max_size must not be NaN")
        if max_size != math.inf:
            if max_size < 0:
                raise ValueError(f"max_size must be >= 0, got {max_size!r}")
            raise TypeError(f"max_size must be an int or math.inf, got the float {max_size!r}")
        return max_size
    if max_size < 0:
        raise ValueError(f"max_size must be >= 0, got {max_size!r}")
    return max_size


# --------------------------------------------------------------------------------------
# Abstract primitives
# --------------------------------------------------------------------------------------


class CancelScope(ABC):
    """A trio/anyio-style cancel scope, used as a plain (synchronous) ``with`` block.

    Contract (identical on every backend):

    * Single use; entered inside a running task and exited by that same task, in LIFO
      order with the other scopes of the task (violations raise :class:`RuntimeError`).
    * ``cancel()`` cancels every await inside the scope, including those of nested
      unshielded scopes and of tasks started by task groups opened inside it. Delivery is
      *level-triggered*: after catching the cancellation exception inside a cancelled
      scope, the next await raises again, until the scope exits.
    * ``__exit__`` swallows the cancellation that this scope caused (returns ``True``) and
      lets every other exception escape, including cancellations that belong to an outer
      scope or to an external ``task.cancel()``.

    Backend notes: on asyncio the object is ``hother.cancelable._engine.CancelScope`` (C),
    whose ``cancel()`` may also be called from any thread. On the anyio backend it is
    ``anyio.CancelScope``, whose ``cancel()`` must be called from the event loop thread
    (use :meth:`AsyncBackend.call_soon_threadsafe` from other threads).
    """

    @property
    @abstractmethod
    def deadline(self) -> float:
        """Absolute time (backend clock) at which the scope cancels itself; ``math.inf``: never.

        Writable, also while the scope is active (the timer is re-scheduled). A deadline in
        the past cancels the scope at once (on enter, or immediately when already entered).
        """

    @deadline.setter
    @abstractmethod
    def deadline(self, value: float) -> None: ...

    @property
    @abstractmethod
    def shield(self) -> bool:
        """When ``True``, cancellation of enclosing scopes does not reach inside. Writable."""

    @shield.setter
    @abstractmethod
    def shield(self, value: bool) -> None: ...

    @abstractmethod
    def cancel(self, reason: str | None = None) -> None:
        """Cancel the scope (idempotent). ``reason`` is a free text kept for diagnostics."""

    @property
    @abstractmethod
    def cancel_called(self) -> bool:
        """``True`` once ``cancel()`` was called or the deadline expired."""

    @property
    @abstractmethod
    def cancelled_caught(self) -> bool:
        """``True`` when the scope swallowed its own cancellation exception on exit."""

    @abstractmethod
    def __enter__(self) -> CancelScope:
        """Enter the scope (inside a running task)."""

    @abstractmethod
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        """Leave the scope; ``True`` when the scope swallowed its own cancellation."""


class Lock(ABC):
    """A non-reentrant async mutex, bound to the event loop that first uses it.

    Backend notes: asyncio returns :class:`asyncio.Lock` (``acquire()`` returns ``True``),
    anyio returns :class:`anyio.Lock` (``acquire()`` returns ``None``). Not thread-safe.
    """

    @abstractmethod
    async def acquire(self) -> Any:
        """Wait until the lock is free and take it (a cancellation point while waiting)."""

    @abstractmethod
    def release(self) -> None:
        """Release the lock; :class:`RuntimeError` when it is not held."""

    @abstractmethod
    def locked(self) -> bool:
        """``True`` when the lock is held."""

    async def __aenter__(self) -> Any:
        """Acquire the lock."""
        await self.acquire()
        return None

    async def __aexit__(self, *exc_info: object) -> None:
        """Release the lock."""
        self.release()


class Event(ABC):
    """A one-shot async event flag.

    Backend notes: asyncio returns :class:`asyncio.Event` (``wait()`` returns ``True``; it
    also has ``clear()``), anyio returns :class:`anyio.Event` (``wait()`` returns ``None``;
    no ``clear()``). Not thread-safe: set it from another thread through
    :meth:`AsyncBackend.call_soon_threadsafe`.
    """

    @abstractmethod
    def set(self) -> Any:
        """Set the flag and wake every waiter."""

    @abstractmethod
    def is_set(self) -> bool:
        """``True`` once the flag was set."""

    @abstractmethod
    async def wait(self) -> Any:
        """Wait until the flag is set (returns at once if it already is)."""


class TaskStatus(Protocol[T_contra]):
    """Passed as the ``task_status`` keyword to functions started with :meth:`TaskGroup.start`."""

    def started(self, value: T_contra | None = None) -> None:
        """Report that the task finished starting; ``value`` is returned by ``start()``."""


class TaskGroup(ABC):
    """Structured concurrency: an async context manager owning child tasks (anyio semantics).

    * ``cancel_scope`` encloses the host's body and every child; cancelling it cancels all.
    * A child raising a non-cancellation exception cancels the scope (siblings and the
      host's body); ``__aexit__`` waits for every child and raises all errors as a
      :class:`BaseExceptionGroup` (an :class:`ExceptionGroup` when all are ``Exception``).
      An exception from the host's body is part of the group too.
    * ``__aexit__`` always waits for all children, and a cancel scope never interrupts that
      wait (trio's nursery semantics); only a plain ``Task.cancel()`` of the host does: it
      cancels the group, the wait goes on, and the cancellation is re-raised after the
      children finished. Children cancelled by the group's scope are collected for the scope
      that catches them.

    Backend notes: asyncio returns an ``AsyncioTaskGroup`` built on the C cancel scope;
    anyio returns ``anyio.create_task_group()`` unchanged.
    """

    cancel_scope: Any

    @abstractmethod
    def start_soon(
        self, func: Callable[..., Awaitable[Any]], *args: Any, name: object = None
    ) -> None:
        """Start ``func(*args)`` as a child task. The group must be active (entered, not exited).

        :raises RuntimeError: the task group is not active.
        :raises TypeError: ``func(*args)`` did not return a coroutine.
        """

    @abstractmethod
    async def start(
        self, func: Callable[..., Awaitable[Any]], *args: Any, name: object = None
    ) -> Any:
        """Start ``func(*args, task_status=...)`` and wait until it calls ``task_status.started()``.

        Returns the value passed to ``started()``. An exception raised by the child before
        ``started()`` propagates to the caller of ``start()`` (not into the group); a child
        that returns without calling ``started()`` makes ``start()`` raise
        :class:`RuntimeError`. If the caller is cancelled meanwhile, the child is cancelled too.
        """

    @abstractmethod
    async def __aenter__(self) -> TaskGroup:
        """Enter the group (single use)."""

    @abstractmethod
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        """Wait for every child; raise the collected errors as an exception group."""


class QueueFull(asyncio.QueueFull):
    """``put_nowait()`` on a queue whose buffer is full and has no waiting receiver."""


class QueueEmpty(asyncio.QueueEmpty):
    """``get_nowait()`` on an empty queue with no waiting sender."""


class QueueClosed(Exception):
    """The queue was closed: no more ``put``; ``get`` after the buffer was drained."""


class Queue(ABC, Generic[T]):
    """A FIFO channel between tasks of one event loop (anyio memory-object-stream semantics).

    ``max_size`` is the buffer size: ``0`` means *no* buffer (a ``put`` completes only when a
    ``get`` takes the item: rendezvous), ``math.inf`` means unbounded. (This follows anyio; it
    differs from :class:`asyncio.Queue`, where 0 means unbounded.)

    ``close()`` ends the stream: further ``put`` / ``put_nowait`` raise :class:`QueueClosed`,
    blocked ``put`` calls raise :class:`QueueClosed` (their items are withdrawn), and ``get``
    drains the buffered items first, then raises :class:`QueueClosed`. ``async for`` iterates
    until the queue is closed and drained.

    Not thread-safe. Backend notes: on the anyio backend ``put``/``get`` are always
    checkpoints; on the asyncio backend (like :class:`asyncio.Queue`) they only suspend
    when they have to wait.
    """

    @property
    @abstractmethod
    def maxsize(self) -> float:
        """The buffer size given at creation (an int, or ``math.inf``)."""

    @abstractmethod
    async def put(self, item: T) -> None:
        """Put ``item``, waiting for buffer room or a receiver. :class:`QueueClosed` if closed."""

    @abstractmethod
    def put_nowait(self, item: T) -> None:
        """Put ``item`` without waiting; :class:`QueueFull` / :class:`QueueClosed` otherwise."""

    @abstractmethod
    async def get(self) -> T:
        """Take the next item, waiting for one. :class:`QueueClosed` once closed and drained."""

    @abstractmethod
    def get_nowait(self) -> T:
        """Take the next item without waiting; :class:`QueueEmpty` / :class:`QueueClosed`."""

    @abstractmethod
    def qsize(self) -> int:
        """Number of buffered items."""

    def empty(self) -> bool:
        """``True`` when no item is buffered."""
        return self.qsize() == 0

    def full(self) -> bool:
        """``True`` when the buffer is full (always for ``max_size=0``)."""
        return self.qsize() >= self.maxsize

    @abstractmethod
    def close(self) -> None:
        """Close the queue (idempotent); see the class docstring."""

    @property
    @abstractmethod
    def closed(self) -> bool:
        """``True`` after :meth:`close`."""

    def __aiter__(self) -> Queue[T]:
        """Iterate over the items until the queue is closed and drained."""
        return self

    async def __anext__(self) -> T:
        """The next item; :class:`StopAsyncIteration` once closed and drained."""
        try:
            return await self.get()
        except QueueClosed:
            raise StopAsyncIteration from None


# --------------------------------------------------------------------------------------
# The backend
# --------------------------------------------------------------------------------------


class AsyncBackend(ABC):
    """Everything the library needs from an async runtime.

    Instances are stateless apart from a remembered event loop (used by
    :meth:`call_soon_threadsafe` from plain threads); get them with
    :func:`hother.cancelable.backends.get_backend` (one cached instance per backend type).
    """

    #: ``"asyncio"`` or ``"anyio"``.
    name: ClassVar[str]

    @abstractmethod
    def create_cancel_scope(self, deadline: float = math.inf, shield: bool = False) -> CancelScope:
        """Create a (not yet entered) cancel scope; see :class:`CancelScope`.

        :param deadline: absolute time on :meth:`current_time`'s clock, ``math.inf`` = none.
        :param shield: protect the inside from outer cancellation.
        :raises TypeError: ``deadline`` is not a real number or ``shield`` not a bool.
        :raises ValueError: ``deadline`` is NaN.
        """

    @abstractmethod
    def get_cancelled_exc_class(self) -> type[BaseException]:
        """The exception class used for cancellation in the running context.

        asyncio: :class:`asyncio.CancelledError`; anyio on asyncio: the same; anyio on
        trio: ``trio.Cancelled``. Must be called inside a running event loop (anyio).
        """

    @abstractmethod
    def sleep(self, seconds: float) -> Coroutine[Any, Any, None]:
        """Sleep ``seconds`` (a cancellation point; ``0`` just yields to the event loop)."""

    @abstractmethod
    def current_time(self) -> float:
        """The event loop clock (monotonic seconds) that deadlines are expressed in.

        :raises RuntimeError: no event loop is running.
        """

    @abstractmethod
    def create_lock(self) -> Lock:
        """A new :class:`Lock`."""

    @abstractmethod
    def create_event(self) -> Event:
        """A new :class:`Event`."""

    @abstractmethod
    def create_task_group(self) -> TaskGroup:
        """A new, not yet entered :class:`TaskGroup`."""

    @abstractmethod
    def call_soon_threadsafe(self, callback: Callable[[], Any]) -> None:
        """Run ``callback()`` on the event loop soon; callable from any thread, never blocks.

        ``callback`` takes no arguments. If it returns an awaitable (an ``async def``
        function), the awaitable runs as a new background task. Exceptions from the
        callback or its awaitable are logged (logger ``hother.cancelable.backends``), never
        propagated. The event loop is woken at once (no polling).

        Which loop: the caller's own loop when called from a loop thread; from a plain thread
        the loop on which this backend was last used (see the backend notes).
        """

    @abstractmethod
    async def run_sync_in_thread(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``func(*args, **kwargs)`` in a worker thread and return its result.

        The thread sees a copy of the caller's context variables. If the caller is
        cancelled while waiting, the cancellation is raised at once and the thread's
        eventual result is discarded (the thread itself cannot be interrupted).
        """

    @abstractmethod
    def create_queue(self, max_size: float = math.inf) -> Queue[Any]:
        """A new :class:`Queue` with a buffer of ``max_size`` items (0: none, inf: unbounded).

        :raises TypeError: ``max_size`` is neither an int nor ``math.inf``.
        :raises ValueError: ``max_size`` is negative.
        """

    def note_loop(self) -> Any:
        """Remember the caller's event loop (if any) as the target of plain-thread callbacks.

        Called by :func:`~hother.cancelable.backends.get_backend` when it detects the backend;
        cheap when the loop is already the remembered one.
        """
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


# --------------------------------------------------------------------------------------
# Thread dispatch helpers (shared by both backends and the anyio bridge)
# --------------------------------------------------------------------------------------

_get_running_loop = asyncio.events._get_running_loop

#: Strong references to tasks spawned for async callbacks (asyncio keeps only weak ones).
_background_tasks: set[asyncio.Task[Any]] = set()
_background_lock = threading.Lock()


def current_executor() -> Any:
    """What a callback scheduled from here must run on: the running asyncio loop of this
    thread, else the current ``trio.lowlevel.TrioToken``, else ``None``."""
    loop = _get_running_loop()
    if loop is not None:
        return loop
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            return trio.lowlevel.current_trio_token()
        except RuntimeError:
            pass
    return None


def executor_alive(executor: Any) -> bool:
    """``False`` for a closed asyncio loop (trio tokens are checked when used)."""
    if isinstance(executor, asyncio.AbstractEventLoop):
        return not executor.is_closed()
    return executor is not None


def dispatch(executor: Any, callback: Callable[[], Any]) -> None:
    """Schedule :func:`run_callback` ``(callback)`` on ``executor`` (a loop or a TrioToken).

    Thread-safe and wakes the loop. Raises :class:`RuntimeError` when the loop is closed
    or the trio run has finished (``trio.RunFinishedError`` is a RuntimeError).
    """
    if isinstance(executor, asyncio.AbstractEventLoop):
        executor.call_soon_threadsafe(run_callback, callback)
    else:
        executor.run_sync_soon(run_callback, callback)


def run_callback(callback: Callable[[], Any]) -> None:
    """Call ``callback()`` on the loop thread; spawn its awaitable result; log failures."""
    try:
        result = callback()
    except Exception:
        logger.exception("callback %r scheduled with call_soon_threadsafe raised", callback)
        return
    if inspect.isawaitable(result):
        spawn_awaitable(result, callback)


async def _guarded(awaitable: Awaitable[Any], origin: object) -> None:
    try:
        await awaitable
    except Exception:
        logger.exception("async callback %r scheduled with call_soon_threadsafe raised", origin)


def spawn_awaitable(awaitable: Awaitable[Any], origin: object = None) -> None:
    """Run ``awaitable`` as a background task of the current loop / trio run (errors logged)."""
    loop = _get_running_loop()
    if loop is not None:
        task = loop.create_task(_guarded(awaitable, origin))
        with _background_lock:
            _background_tasks.add(task)
        task.add_done_callback(_forget_task)
        return
    trio = sys.modules.get("trio")
    if trio is None:  # pragma: no cover - run_callback only runs inside a loop
        raise RuntimeError("no event loop to run the async callback in")
    trio.lowlevel.spawn_system_task(_guarded, awaitable, origin)


def _forget_task(task: asyncio.Task[Any]) -> None:
    with _background_lock:
        _background_tasks.discard(task)
