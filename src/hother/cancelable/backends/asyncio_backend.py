"""Native asyncio backend: cancel scopes from the C engine, asyncio primitives, no anyio.

Nothing in this module imports anyio (directly or indirectly): a pure-asyncio application
using hother.cancelable never loads it.

* :meth:`AsyncioBackend.create_cancel_scope` returns ``hother.cancelable._engine.CancelScope``
  itself (trio semantics on asyncio: level-triggered, shielding, one timer per loop).
* :class:`AsyncioTaskGroup` gives anyio-style structured concurrency on top of it: children
  are adopted into the group's C scope before they first run.
* :class:`AsyncioQueue` implements the memory-object-stream semantics of
  :class:`~hother.cancelable.backends.base.Queue` on asyncio futures.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import math
import sys
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, ClassVar, TypeVar

from .. import _engine
from .base import (
    AsyncBackend,
    CancelScope,
    Event,
    Lock,
    Queue,
    QueueClosed,
    QueueEmpty,
    QueueFull,
    TaskGroup,
    dispatch,
    validate_max_size,
)

__all__ = ["AsyncioBackend", "AsyncioQueue", "AsyncioTaskGroup", "AsyncioTaskStatus"]

T = TypeVar("T")

_CScope = _engine.CancelScope
_adopt_task = _engine.adopt_task
_get_running_loop = asyncio.events._get_running_loop
_CancelledError = asyncio.CancelledError

CancelScope.register(_CScope)
Lock.register(asyncio.Lock)
Event.register(asyncio.Event)

if sys.version_info >= (3, 12):
    _eager_task_factory_code: Any = asyncio.eager_task_factory.__code__
else:  # pragma: no cover - depends on the Python version
    _eager_task_factory_code = None


def _new_task(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], name: object
) -> asyncio.Task[Any]:
    """``loop.create_task`` that never starts the coroutine eagerly.

    The engine must adopt the task into its scope before its first step, so an eager task
    factory (3.12+) is bypassed in favour of the task constructor it wraps.
    """
    factory = loop.get_task_factory()
    task_name = None if name is None else str(name)
    if (
        factory is not None
        and getattr(factory, "__code__", None) is _eager_task_factory_code
        and (closure := getattr(factory, "__closure__", None))
    ):
        constructor = closure[0].cell_contents
        task: asyncio.Task[Any] = constructor(coro, loop=loop, name=task_name)
        return task
    return loop.create_task(coro, name=task_name)


def _as_coroutine(func: Callable[..., Awaitable[Any]], args: tuple[Any, ...], **kw: Any) -> Any:
    if not callable(func):
        raise TypeError(f"func must be an async function, got {type(func).__name__}")
    coro = func(*args, **kw)
    if not asyncio.iscoroutine(coro):
        if hasattr(coro, "close"):
            coro.close()
        raise TypeError(
            f"func must be an async function returning a coroutine; {func!r} returned "
            f"{type(coro).__name__}"
        )
    return coro


class AsyncioTaskStatus:
    """The ``task_status`` handed to a function started with :meth:`AsyncioTaskGroup.start`."""

    __slots__ = ("_future",)

    def __init__(self, future: asyncio.Future[Any]) -> None:
        self._future = future

    def started(self, value: Any = None) -> None:
        """Report that startup is complete; ``value`` becomes the result of ``start()``.

        :raises RuntimeError: ``started()`` was already called.
        """
        if self._future.done():
            if self._future.cancelled():  # the caller of start() gave up; nothing to report
                return
            raise RuntimeError("called 'started' twice on the same task status")
        self._future.set_result(value)


class AsyncioTaskGroup(TaskGroup):
    """anyio-style task group on the C cancel scope, with trio's nursery semantics.

    Children are created with ``loop.create_task`` (copying the current contextvars
    context) and adopted into :attr:`cancel_scope` before their first step, so cancelling
    the scope cancels them (level-triggered, like any code inside the scope).

    Exit follows trio's ``Nursery`` (``_nested_child_finished``/``_add_exc``):

    * every exception that ends the body or a child, a cancellation included, is collected
      and cancels :attr:`cancel_scope`; a child's ``CancelledError`` is collected when the
      group's scope is effectively cancelled (a child cancelled by a plain
      ``Task.cancel()`` of its own is ignored, as in anyio);
    * ``__aexit__`` waits for the children in a shielded scope: a cancel scope (the
      group's or an enclosing one) never interrupts the host there, only an external
      ``Task.cancel()`` of the host does -- it cancels the group, the wait goes on and the
      cancellation is re-raised afterwards;
    * the collected exceptions go to ``cancel_scope.__exit__`` as one exception group
      (which keeps the cancellations the scope catches, as trio's scope does, and raises
      the rest); when only cancellations were collected, a bare ``CancelledError`` is used
      instead, so asyncio code around the group (``asyncio.timeout``...) sees a plain one.
    """

    __slots__ = (
        "_active",
        "_entered",
        "_errors",
        "_host",
        "_loop",
        "_starting",
        "_tasks",
        "_waiter",
        "cancel_scope",
    )

    def __init__(self) -> None:
        self.cancel_scope: _engine.CancelScope = _CScope()
        self._entered = False
        self._active = False
        #: exceptions of the body and of the children, in the order they happened
        self._errors: list[BaseException] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        #: tasks started with start() that have not called task_status.started() yet
        self._starting: dict[asyncio.Task[Any], asyncio.Future[Any]] = {}
        self._waiter: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._host: asyncio.Task[Any] | None = None

    def __repr__(self) -> str:
        state = "active" if self._active else ("exited" if self._entered else "new")
        return f"<AsyncioTaskGroup {state} tasks={len(self._tasks)}>"

    async def __aenter__(self) -> AsyncioTaskGroup:
        """Enter the group's cancel scope in the current task (single use)."""
        if self._entered:
            raise RuntimeError("this task group cannot be entered more than once")
        loop = asyncio.get_running_loop()
        self._entered = True
        self._loop = loop
        self._host = asyncio.current_task()
        self.cancel_scope.__enter__()
        self._active = True
        return self

    # -- spawning ------------------------------------------------------------------------

    def _check_active(self) -> asyncio.AbstractEventLoop:
        if not self._active or self._loop is None:
            raise RuntimeError("this task group is not active; no new tasks can be started")
        return self._loop

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: object) -> asyncio.Task[Any]:
        loop = self._loop
        assert loop is not None
        try:
            task = _new_task(loop, coro, name)
        except BaseException:
            coro.close()
            raise
        try:
            _adopt_task(task, self.cancel_scope)
        except BaseException:
            task.cancel()
            raise
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def start_soon(
        self, func: Callable[..., Awaitable[Any]], *args: Any, name: object = None
    ) -> None:
        """Start ``func(*args)`` as a child task (see :meth:`.base.TaskGroup.start_soon`)."""
        self._check_active()
        self._spawn(_as_coroutine(func, args), name)

    async def start(
        self, func: Callable[..., Awaitable[Any]], *args: Any, name: object = None
    ) -> Any:
        """Start ``func(*args, task_status=...)`` and return what it passes to ``started()``."""
        loop = self._check_active()
        future: asyncio.Future[Any] = loop.create_future()
        coro = _as_coroutine(func, args, task_status=AsyncioTaskStatus(future))
        task = self._spawn(coro, name)
        self._starting[task] = future
        try:
            return await future
        except BaseException:
            if not task.done():
                # Our caller gave up (cancelled): the child must not outlive its start.
                future.cancel()
                task.cancel()
                with _CScope(shield=True):
                    try:
                        await asyncio.wait((task,))
                    except _CancelledError:  # an external task.cancel(); keep it pending
                        pass
            raise
        finally:
            self._starting.pop(task, None)

    def _add_error(self, exc: BaseException) -> None:
        """Collect ``exc`` for the exit and cancel the group (trio's ``Nursery._add_exc``)."""
        self._errors.append(exc)
        self.cancel_scope.cancel()

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        start_future = self._starting.pop(task, None)
        exc: BaseException | None
        if task.cancelled():
            try:
                task.result()
            except _CancelledError as cancelled:
                exc = cancelled
            else:  # pragma: no cover - a cancelled task always raises
                exc = _CancelledError()
        else:
            exc = task.exception()
        if start_future is not None and not start_future.done():
            # Failed (or returned) before task_status.started(): the error is start()'s.
            if task.cancelled():
                start_future.set_exception(
                    RuntimeError(
                        "the child task was cancelled before calling task_status.started()"
                    )
                )
            elif exc is not None:
                start_future.set_exception(exc)
            else:
                start_future.set_exception(
                    RuntimeError("the child task exited without calling task_status.started()")
                )
        elif exc is not None:
            if not isinstance(exc, _CancelledError):
                self._add_error(exc)
            elif (
                start_future is None or not start_future.cancelled()
            ) and self.cancel_scope.effectively_cancelled:
                # Cancelled by the group's scope (or an enclosing one): like trio's
                # Cancelled in the nursery, it goes to the scope that caught it. A start()
                # whose caller gave up, or a plain task.cancel() of this child, is not.
                self._add_error(exc)
        del exc
        if not self._tasks:
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    # -- exit ----------------------------------------------------------------------------

    async def _wait_children(self) -> BaseException | None:
        """Wait until every child is done; return the host's external cancellation, if any.

        The wait sits in a shielded scope, so no cancel scope interrupts it (trio's nursery
        never interrupts a parent waiting in ``__aexit__``). Only a plain ``Task.cancel()``
        of the host gets through: it cancels the group and the wait goes on.
        """
        loop = self._loop
        assert loop is not None
        external: BaseException | None = None
        with _CScope(shield=True):
            while self._tasks:
                self._waiter = loop.create_future()
                try:
                    await self._waiter
                except _CancelledError as exc:
                    self.cancel_scope.cancel()
                    if external is None:
                        external = exc
                finally:
                    self._waiter = None
        return external

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        """Wait for every child, then leave the scope; raise what the scope does not catch."""
        if not self._active:
            raise RuntimeError("this task group is not active")
        scope = self.cancel_scope
        try:
            if exc_val is not None:
                self._add_error(exc_val)
            if self._tasks:
                external = await self._wait_children()
                if external is not None:
                    self._errors.append(external)
        except BaseException as exc:  # pragma: no cover - not a cancellation: unexpected
            scope.cancel()
            if scope.__exit__(type(exc), exc, exc.__traceback__):
                return True
            raise
        finally:
            self._active = False
        errors, self._errors = self._errors, []
        try:
            if not errors:
                return scope.__exit__(None, None, None)
            if all(isinstance(error, _CancelledError) for error in errors):
                # Only cancellations: hand the scope a bare one (see the class docstring).
                cancelled = exc_val if isinstance(exc_val, _CancelledError) else errors[-1]
                if scope.__exit__(type(cancelled), cancelled, cancelled.__traceback__):
                    return True
                if cancelled is exc_val:
                    return False
                raise cancelled
            group = BaseExceptionGroup("unhandled errors in a TaskGroup", errors)
            try:
                # The scope keeps the cancellations it catches and raises the rest.
                if scope.__exit__(type(group), group, None):
                    return True  # pragma: no cover - a group with other errors remains
                raise group from None
            finally:
                del group
        finally:
            del errors, exc_val


class AsyncioQueue(Queue[T]):
    """:class:`~.base.Queue` on asyncio futures (memory-object-stream semantics)."""

    __slots__ = ("_buffer", "_closed", "_getters", "_maxsize", "_putters")

    def __init__(self, max_size: float = math.inf) -> None:
        self._maxsize = validate_max_size(max_size)
        self._buffer: deque[T] = deque()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._putters: deque[tuple[asyncio.Future[None], T]] = deque()
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"<AsyncioQueue maxsize={self._maxsize} qsize={len(self._buffer)}"
            f"{' closed' if self._closed else ''}>"
        )

    @property
    def maxsize(self) -> float:
        """The buffer size (an int, or ``math.inf``)."""
        return self._maxsize

    @property
    def closed(self) -> bool:
        """``True`` after :meth:`close`."""
        return self._closed

    def qsize(self) -> int:
        """Number of buffered items."""
        return len(self._buffer)

    def _wake_getter(self) -> bool:
        getters = self._getters
        while getters:
            fut = getters.popleft()
            if not fut.done():
                fut.set_result(None)
                return True
        return False

    def _has_waiting_getter(self) -> bool:
        getters = self._getters
        while getters and getters[0].done():
            getters.popleft()
        return bool(getters)

    def put_nowait(self, item: T) -> None:
        """Put ``item`` without waiting (:class:`QueueFull` / :class:`QueueClosed` otherwise)."""
        if self._closed:
            raise QueueClosed("the queue is closed")
        if len(self._buffer) < self._maxsize or self._has_waiting_getter():
            self._buffer.append(item)
            self._wake_getter()
            return
        raise QueueFull

    async def put(self, item: T) -> None:
        """Put ``item``, waiting for room or a receiver (:class:`QueueClosed` if closed).

        A put cancelled while waiting withdraws its item, unless a receiver already took it
        in the same loop iteration (then the item stays delivered and the put still raises
        the cancellation).
        """
        try:
            self.put_nowait(item)
            return
        except QueueFull:
            pass
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (fut, item)
        self._putters.append(entry)
        try:
            await fut
        except BaseException:
            if not fut.done():
                fut.cancel()
            if fut.cancelled():
                try:
                    self._putters.remove(entry)
                except ValueError:
                    pass
            raise

    def _take(self) -> T:
        """Pop the next item, refilling the buffer from the first waiting putter."""
        buffer = self._buffer
        putters = self._putters
        if buffer:
            item = buffer.popleft()
            while putters and len(buffer) < self._maxsize:
                fut, waiting = putters.popleft()
                if not fut.done():
                    buffer.append(waiting)
                    fut.set_result(None)
            return item
        while putters:
            fut, waiting = putters.popleft()
            if not fut.done():
                fut.set_result(None)
                return waiting
        raise QueueEmpty

    def get_nowait(self) -> T:
        """Take the next item without waiting (:class:`QueueEmpty` / :class:`QueueClosed`)."""
        try:
            return self._take()
        except QueueEmpty:
            if self._closed:
                raise QueueClosed("the queue is closed and drained") from None
            raise

    async def get(self) -> T:
        """Take the next item, waiting for one (:class:`QueueClosed` once closed and drained)."""
        while True:
            try:
                return self._take()
            except QueueEmpty:
                if self._closed:
                    raise QueueClosed("the queue is closed and drained") from None
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getters.append(fut)
            try:
                await fut
            except BaseException:
                woken = fut.done() and not fut.cancelled()
                fut.cancel()
                try:
                    self._getters.remove(fut)
                except ValueError:
                    pass
                if woken and self._buffer:
                    self._wake_getter()  # pass the wake-up on: we will not take the item
                raise

    def close(self) -> None:
        """Close the queue: blocked ``put`` calls raise :class:`QueueClosed`, getters drain."""
        if self._closed:
            return
        self._closed = True
        while self._putters:
            fut, _item = self._putters.popleft()
            if not fut.done():
                fut.set_exception(QueueClosed("the queue was closed while putting"))
        while self._getters:
            fut = self._getters.popleft()
            if not fut.done():
                fut.set_result(None)


class AsyncioBackend(AsyncBackend):
    """The native asyncio backend (also under uvloop). See :class:`~.base.AsyncBackend`.

    :meth:`call_soon_threadsafe` called from a plain thread targets the loop on which this
    backend was last used (any of its methods other than ``create_cancel_scope``/``sleep``,
    or :func:`~hother.cancelable.backends.get_backend` called inside the loop). With several
    loops in several threads, call ``loop.call_soon_threadsafe`` on the right loop instead.
    """

    name: ClassVar[str] = "asyncio"

    __slots__ = ("_loop_ref",)

    def __init__(self) -> None:
        self._loop_ref: weakref.ReferenceType[asyncio.AbstractEventLoop] | None = None

    def note_loop(self) -> asyncio.AbstractEventLoop | None:
        """Remember the running loop of this thread (if any) for plain-thread callbacks."""
        loop = _get_running_loop()
        if loop is not None:
            ref = self._loop_ref
            if ref is None or ref() is not loop:
                self._loop_ref = weakref.ref(loop)
        return loop

    @property
    def remembered_loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop plain-thread callbacks go to (``None`` when unknown or closed)."""
        ref = self._loop_ref
        loop = ref() if ref is not None else None
        if loop is None or loop.is_closed():
            return None
        return loop

    def create_cancel_scope(self, deadline: float = math.inf, shield: bool = False) -> CancelScope:
        """``_engine.CancelScope(deadline, shield)`` (see :class:`~.base.CancelScope`)."""
        return _CScope(deadline, shield)  # type: ignore[return-value]  # virtual subclass

    def get_cancelled_exc_class(self) -> type[BaseException]:
        """:class:`asyncio.CancelledError`."""
        return _CancelledError

    def sleep(self, seconds: float) -> Coroutine[Any, Any, None]:
        """:func:`asyncio.sleep` (a cancellation point)."""
        return asyncio.sleep(seconds)

    def current_time(self) -> float:
        """``loop.time()`` of the running loop (the clock of scope deadlines)."""
        return asyncio.get_running_loop().time()

    def create_lock(self) -> Lock:
        """:class:`asyncio.Lock`."""
        self.note_loop()
        lock: Lock = asyncio.Lock()  # type: ignore[assignment]
        return lock

    def create_event(self) -> Event:
        """:class:`asyncio.Event`."""
        self.note_loop()
        event: Event = asyncio.Event()  # type: ignore[assignment]
        return event

    def create_task_group(self) -> AsyncioTaskGroup:
        """A new :class:`AsyncioTaskGroup`."""
        self.note_loop()
        return AsyncioTaskGroup()

    def create_queue(self, max_size: float = math.inf) -> AsyncioQueue[Any]:
        """A new :class:`AsyncioQueue` (0: rendezvous, ``math.inf``: unbounded)."""
        self.note_loop()
        return AsyncioQueue(max_size)

    def call_soon_threadsafe(self, callback: Callable[[], Any]) -> None:
        """Run ``callback()`` on the loop (see :meth:`.base.AsyncBackend.call_soon_threadsafe`).

        :raises TypeError: ``callback`` is not callable.
        :raises RuntimeError: called from a plain thread while no live loop is known.
        """
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        loop = self.note_loop()
        if loop is None:
            loop = self.remembered_loop
            if loop is None:
                raise RuntimeError(
                    "call_soon_threadsafe: no running event loop is known to the asyncio "
                    "backend; use the backend inside the loop first, or call "
                    "loop.call_soon_threadsafe directly"
                )
        dispatch(loop, callback)

    async def run_sync_in_thread(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``loop.run_in_executor`` in a copy of the current context (cancel abandons)."""
        if not callable(func):
            raise TypeError(f"func must be callable, got {type(func).__name__}")
        loop = asyncio.get_running_loop()
        self.note_loop()
        ctx = contextvars.copy_context()
        call = functools.partial(ctx.run, func, *args, **kwargs)
        return await loop.run_in_executor(None, call)
