"""anyio backend: delegates to anyio, so it runs on asyncio and on trio.

Native anyio objects are returned where their interface already matches (``anyio.CancelScope``,
``anyio.Lock``, ``anyio.Event``, ``anyio.create_task_group()``); queues wrap a memory object
stream pair; ``call_soon_threadsafe`` goes through
:class:`~hother.cancelable.utils.anyio_bridge.AnyioBridge`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar, TypeVar

import anyio
import anyio.abc
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..utils.anyio_bridge import AnyioBridge
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
    validate_deadline,
    validate_max_size,
    validate_shield,
)

__all__ = ["AnyioBackend", "AnyioQueue"]

T = TypeVar("T")

CancelScope.register(anyio.CancelScope)
Lock.register(anyio.Lock)
Event.register(anyio.Event)
TaskGroup.register(anyio.abc.TaskGroup)  # type: ignore[type-abstract]


class AnyioQueue(Queue[T]):
    """:class:`~.base.Queue` on an anyio memory object stream pair."""

    __slots__ = ("_closed", "_receive", "_send")

    def __init__(self, max_size: float = math.inf) -> None:
        size = validate_max_size(max_size)
        send, receive = anyio.create_memory_object_stream[T](size)
        self._send: MemoryObjectSendStream[T] = send
        self._receive: MemoryObjectReceiveStream[T] = receive
        self._closed = False

    def __repr__(self) -> str:
        return f"<AnyioQueue maxsize={self.maxsize} qsize={self.qsize()}{' closed' * self.closed}>"

    def __del__(self) -> None:
        # Closing silences anyio's "unclosed stream" ResourceWarning.
        try:
            self._send.close()
            self._receive.close()
        except AttributeError:  # pragma: no cover - __init__ failed half-way
            pass

    @property
    def maxsize(self) -> float:
        """The buffer size (an int, or ``math.inf``)."""
        return self._send.statistics().max_buffer_size

    @property
    def closed(self) -> bool:
        """``True`` after :meth:`close`."""
        return self._closed

    def qsize(self) -> int:
        """Number of buffered items."""
        return self._send.statistics().current_buffer_used

    def put_nowait(self, item: T) -> None:
        """Put without waiting (:class:`QueueFull` / :class:`QueueClosed` otherwise)."""
        try:
            self._send.send_nowait(item)
        except anyio.WouldBlock:
            raise QueueFull from None
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise QueueClosed("the queue is closed") from None

    async def put(self, item: T) -> None:
        """Put, waiting for room or a receiver (:class:`QueueClosed` if closed)."""
        try:
            await self._send.send(item)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise QueueClosed("the queue is closed") from None

    def get_nowait(self) -> T:
        """Take without waiting (:class:`QueueEmpty` / :class:`QueueClosed` otherwise)."""
        try:
            return self._receive.receive_nowait()
        except anyio.WouldBlock:
            raise QueueEmpty from None
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise QueueClosed("the queue is closed and drained") from None

    async def get(self) -> T:
        """Take the next item, waiting (:class:`QueueClosed` once closed and drained)."""
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise QueueClosed("the queue is closed and drained") from None

    def close(self) -> None:
        """Close the sending side: blocked puts fail, getters drain then see the end."""
        self._closed = True
        self._send.close()


class AnyioBackend(AsyncBackend):
    """The anyio backend (asyncio or trio underneath). See :class:`~.base.AsyncBackend`.

    :meth:`call_soon_threadsafe` uses :class:`AnyioBridge`: from a loop thread it targets
    that loop; from a plain thread, the loop of a running ``AnyioBridge.start()`` or the last
    loop / trio run the bridge saw (this backend notes it whenever it creates a lock, event,
    queue or task group, or runs a thread); with none known, callbacks are queued until one is.
    """

    name: ClassVar[str] = "anyio"

    __slots__ = ()

    def create_cancel_scope(self, deadline: float = math.inf, shield: bool = False) -> CancelScope:
        """``anyio.CancelScope(deadline=..., shield=...)`` after validating the arguments."""
        if deadline.__class__ is not float or deadline != deadline:
            deadline = validate_deadline(deadline)
        if shield is not False and shield is not True:
            validate_shield(shield)
        scope: CancelScope = anyio.CancelScope(deadline=deadline, shield=shield)  # type: ignore[assignment]
        return scope

    def get_cancelled_exc_class(self) -> type[BaseException]:
        """:func:`anyio.get_cancelled_exc_class` (``trio.Cancelled`` under trio)."""
        return anyio.get_cancelled_exc_class()

    def sleep(self, seconds: float) -> Coroutine[Any, Any, None]:
        """:func:`anyio.sleep`."""
        return anyio.sleep(seconds)

    def current_time(self) -> float:
        """:func:`anyio.current_time`."""
        return anyio.current_time()

    def note_loop(self) -> Any:
        """Tell :class:`AnyioBridge` about the caller's loop / trio run (plain-thread target)."""
        bridge = AnyioBridge.get_instance()
        if bridge._executor is None:
            bridge.note_executor()
        return None

    _note = note_loop

    def create_lock(self) -> Lock:
        """:class:`anyio.Lock`."""
        self._note()
        lock: Lock = anyio.Lock()  # type: ignore[assignment]
        return lock

    def create_event(self) -> Event:
        """:class:`anyio.Event`."""
        self._note()
        event: Event = anyio.Event()  # type: ignore[assignment]
        return event

    def create_task_group(self) -> TaskGroup:
        """``anyio.create_task_group()``."""
        self._note()
        group: TaskGroup = anyio.create_task_group()  # type: ignore[assignment]
        return group

    def create_queue(self, max_size: float = math.inf) -> AnyioQueue[Any]:
        """A new :class:`AnyioQueue` (0: rendezvous, ``math.inf``: unbounded)."""
        self._note()
        return AnyioQueue(max_size)

    def call_soon_threadsafe(self, callback: Callable[[], Any]) -> None:
        """Schedule ``callback()`` through :class:`AnyioBridge` (never blocks).

        :raises TypeError: ``callback`` is not callable.
        """
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        AnyioBridge.get_instance().call_soon_threadsafe(callback)

    async def run_sync_in_thread(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """:func:`anyio.to_thread.run_sync` (contextvars copied; cancel abandons the thread)."""
        if not callable(func):
            raise TypeError(f"func must be callable, got {type(func).__name__}")
        self._note()
        call = functools.partial(func, *args, **kwargs)
        result: T = await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
        return result
