"""Thread-safe scheduling of callables onto the event loop (asyncio or trio).

:class:`AnyioBridge` keeps the 0.1 API (``get_instance()``, ``async start()`` running until
cancelled, ``call_soon_threadsafe(callback)``, ``is_started``) with the 0.1 defects fixed:

* a callback submitted from a foreign thread wakes the event loop at once: it is scheduled
  with the loop's own thread-safe call (``loop.call_soon_threadsafe`` on asyncio,
  ``TrioToken.run_sync_soon`` on trio), never by writing into an anyio stream;
* no started bridge is needed when the caller is on a loop thread, or when an event loop
  is already known to the bridge (it remembers the last loop / trio run it saw);
* callbacks submitted while no loop is known are queued (bounded by ``buffer_size``) and
  run as soon as a loop becomes known (``start()``, or any use from a loop thread);
* :meth:`AnyioBridge.stop` ends ``start()``; the singleton is created thread-safely.

Callbacks take no arguments; an awaitable result runs as a background task (errors logged).
This module imports neither anyio nor trio at import time.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

from ..backends.base import current_executor, dispatch, executor_alive

__all__ = ["AnyioBridge", "call_soon_threadsafe"]

logger = logging.getLogger("hother.cancelable.utils.anyio_bridge")


class AnyioBridge:
    """Process-wide helper that lets non-async code schedule callables onto the event loop."""

    _instance: ClassVar[AnyioBridge | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, buffer_size: int = 1000) -> None:
        """Create a bridge; ``buffer_size`` bounds the callbacks queued while no loop is known.

        :raises TypeError: ``buffer_size`` is not an int.
        :raises ValueError: ``buffer_size`` < 1.
        """
        if isinstance(buffer_size, bool) or not isinstance(buffer_size, int):
            raise TypeError(f"buffer_size must be an int, got {type(buffer_size).__name__}")
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
        self._buffer_size = buffer_size
        self._state_lock = threading.Lock()
        self._pending: deque[Callable[[], Any]] = deque()
        self._started = False
        self._executor: Any = None  # loop or TrioToken of the running start()
        self._last_executor: Any = None  # last loop / trio run seen from its own thread
        self._stop_event: Any = None
        self._run_id = 0

    @classmethod
    def get_instance(cls) -> AnyioBridge:
        """The process-wide bridge (created on first use, thread-safely)."""
        instance = cls._instance
        if instance is None:
            with cls._lock:
                instance = cls._instance
                if instance is None:
                    instance = cls._instance = cls()
        return instance

    @property
    def is_started(self) -> bool:
        """``True`` while :meth:`start` runs."""
        return self._started

    @property
    def buffer_size(self) -> int:
        """Maximum number of callbacks queued while no event loop is known."""
        return self._buffer_size

    def pending_count(self) -> int:
        """Number of callbacks queued, waiting for an event loop."""
        with self._state_lock:
            return len(self._pending)

    # -- executor bookkeeping ------------------------------------------------------------

    def _known_executor(self) -> Any:
        """The loop / trio token callbacks from a plain thread go to (caller holds the lock)."""
        for executor in (self._executor, self._last_executor):
            if executor is not None and executor_alive(executor):
                return executor
        return None

    def note_executor(self, executor: Any = None) -> None:
        """Remember ``executor`` (default: the caller's loop / trio run) and flush the queue.

        Called by the anyio backend whenever it is used from a loop thread, so that later
        calls from plain threads reach that loop without a started bridge.
        """
        if executor is None:
            executor = current_executor()
            if executor is None:
                return
        if executor is self._last_executor and not self._pending:
            return  # fast path: nothing new
        with self._state_lock:
            self._last_executor = executor
            if not self._pending:
                return
            pending = list(self._pending)
            self._pending.clear()
        self._dispatch_all(executor, pending)

    def _dispatch_all(self, executor: Any, callbacks: list[Callable[[], Any]]) -> None:
        for index, callback in enumerate(callbacks):
            try:
                dispatch(executor, callback)
            except Exception:
                # The loop / trio run ended under us: keep the rest for the next one.
                with self._state_lock:
                    if self._last_executor is executor:
                        self._last_executor = None
                    if self._executor is executor:
                        self._executor = None
                for late in callbacks[index:]:
                    self._enqueue(late)
                return

    def _enqueue(self, callback: Callable[[], Any]) -> None:
        with self._state_lock:
            if len(self._pending) >= self._buffer_size:
                dropped = True
            else:
                self._pending.append(callback)
                dropped = False
        if dropped:
            logger.warning(
                "AnyioBridge: %d callbacks are already waiting for an event loop; dropping %r",
                self._buffer_size,
                callback,
            )

    # -- public API ----------------------------------------------------------------------

    def call_soon_threadsafe(self, callback: Callable[[], Any]) -> None:
        """Run ``callback()`` on the event loop soon; callable from any thread; never raises.

        Target: the caller's own loop / trio run when called from one; else the loop of the
        running :meth:`start` or the last loop seen; else the callback is queued until a
        loop becomes known. A non-callable is logged and ignored.
        """
        if not callable(callback):
            logger.error("AnyioBridge.call_soon_threadsafe: %r is not callable", callback)
            return
        executor = current_executor()
        if executor is not None:
            if self._last_executor is not executor and self._executor is None:
                self.note_executor(executor)
        else:
            with self._state_lock:
                executor = self._known_executor()
                if executor is None:
                    if len(self._pending) < self._buffer_size:
                        self._pending.append(callback)
                        return
                    full = True
                else:
                    full = False
            if full:
                logger.warning(
                    "AnyioBridge: no event loop known and %d callbacks already queued; dropping %r",
                    self._buffer_size,
                    callback,
                )
                return
        try:
            dispatch(executor, callback)
        except Exception:
            # Closed loop / finished trio run: forget it and keep the callback for later.
            with self._state_lock:
                if self._last_executor is executor:
                    self._last_executor = None
                if self._executor is executor:
                    self._executor = None
            logger.debug("AnyioBridge: event loop gone; queueing %r", callback)
            self._enqueue(callback)

    async def start(self) -> None:
        """Bind the bridge to the running loop / trio run, run queued callbacks, then wait.

        Runs until cancelled or until :meth:`stop` (0.1 compatibility: launch it with
        ``tg.start_soon(bridge.start)``). Calling it while it already runs logs and returns.
        """
        import anyio

        executor = current_executor()
        if executor is None:  # pragma: no cover - an async function always has one
            raise RuntimeError("AnyioBridge.start() must run inside an event loop")
        stop_event = anyio.Event()
        with self._state_lock:
            if self._started:
                logger.debug("AnyioBridge.start(): already started")
                return
            self._started = True
            self._executor = executor
            self._last_executor = executor
            self._stop_event = stop_event
            self._run_id += 1
            run_id = self._run_id
            pending = list(self._pending)
            self._pending.clear()
        try:
            self._dispatch_all(executor, pending)
            await stop_event.wait()
        finally:
            with self._state_lock:
                if self._run_id == run_id:
                    self._started = False
                    self._executor = None
                    self._stop_event = None

    def stop(self) -> None:
        """Make a running :meth:`start` return (thread-safe; no-op when not started)."""
        with self._state_lock:
            if not self._started:
                return
            executor = self._executor
            event = self._stop_event
            self._started = False
            self._executor = None
            self._stop_event = None
            self._run_id += 1
        if event is None or executor is None:  # pragma: no cover - set together in start()
            return
        if current_executor() is executor:
            event.set()
            return
        try:
            dispatch(executor, event.set)
        except Exception:  # the loop is gone; start() is gone with it
            logger.debug("AnyioBridge.stop(): event loop already closed")


def call_soon_threadsafe(callback: Callable[[], Any]) -> None:
    """Run ``callback()`` on the event loop from any thread (never raises).

    On a loop thread it goes to that loop directly. From a plain thread it goes to the loop
    of a running :meth:`AnyioBridge.start`, else to the loop last seen by the bridge or by the
    asyncio backend, else it is queued in the bridge until a loop becomes known.
    """
    bridge = AnyioBridge.get_instance()
    if current_executor() is None and not bridge.is_started:
        with bridge._state_lock:
            known = bridge._known_executor()
        if known is None:
            loop = _asyncio_backend_loop()
            if loop is not None:
                bridge.note_executor(loop)
    bridge.call_soon_threadsafe(callback)


def _asyncio_backend_loop() -> Any:
    import sys

    module = sys.modules.get("hother.cancelable.backends.asyncio_backend")
    if module is None:
        return None
    from ..backends import _cached_backend

    backend = _cached_backend("asyncio")
    if backend is None:
        return None
    return getattr(backend, "remembered_loop", None)
