"""Base class of every cancellation source, and the lifecycle custom sources follow.

A *source* watches for one condition (a deadline, a predicate, a signal, ...) and, when it
fires, records why (``reason`` + message, reported to a callback) and cancels the cancel
scope it was given. :class:`~hother.cancelable.core.cancellable.Cancellable` drives sources
like this, in the operation's own task:

1. ``source.set_cancel_callback(cb)`` and ``source.set_error_callback(ecb)``;
2. ``await source.start_monitoring(scope)`` with the backend scope the body will run in
   (created, not yet entered);
3. the body runs inside ``scope``;
4. after the scope was exited, on every exit path: ``await source.stop_monitoring()``
   (sources are stopped in the reverse order of their start).

A source object can serve several operations one after the other (it is reset by each
``start_monitoring``), but not two at once: starting a running source raises
:class:`RuntimeError`.

Background watchers
-------------------
Sources that need to *poll* or *wait* (conditions, custom watchers) run background tasks
with :meth:`CancellationSource.start_watcher`. They run in a backend task group owned by the
source, opened by a helper task of the source (the *runner*), never in the operation's task:
the operation's task carries no scope of the source, so ``stop_monitoring`` can be awaited
anywhere (inside a shielded cleanup scope included) and cannot leave the task inside a
cancelled scope (the 0.1 defect). Stopping sets the source's stop event; the runner cancels
the watchers, exits its task group normally (LIFO) and reports completion, which
``stop_monitoring`` waits for: a watcher never outlives its monitoring.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import sniffio

from ..core.models import CancellationReason

__all__ = ["CancelCallback", "CancellationSource", "ErrorCallback", "WatcherFunction"]

logger = logging.getLogger(__name__)

CancelCallback = Callable[[CancellationReason, str], Any]
"""``callback(reason, message)`` called (synchronously) when a source fires."""

ErrorCallback = Callable[["CancellationSource", BaseException], Any]
"""``callback(source, error)`` called when a source's watcher fails."""

WatcherFunction = Callable[[], Awaitable[None]]
"""A coroutine function run as a source's background watcher."""


def _spawn_detached(fn: Callable[[], Coroutine[Any, Any, None]]) -> Any:
    """Start ``fn()`` as a task that is not a child of the calling task's scopes.

    asyncio (uvloop included, anyio on asyncio too): ``loop.create_task``; trio: a system
    task (with a copy of the caller's context variables).
    """
    if sniffio.current_async_library() == "trio":
        import trio

        return trio.lowlevel.spawn_system_task(fn, context=contextvars.copy_context())
    task = asyncio.get_running_loop().create_task(fn())
    _runner_tasks.add(task)  # asyncio keeps only weak references to tasks
    task.add_done_callback(_runner_tasks.discard)
    return task


_runner_tasks: set[asyncio.Task[None]] = set()


def _current_backend() -> Any:
    """The backend serving the calling async code (imported lazily: no import cycle)."""
    from ..backends import get_backend

    return get_backend()


class CancellationSource(ABC):
    """Abstract base class of cancellation sources.

    Attributes:
        reason: the :class:`CancellationReason` reported when the source fires.
        name: a readable name (default: the class name).
        scope: the cancel scope being monitored (``None`` when not monitoring).
        triggered: ``True`` once the source fired during the current (or last) monitoring.
        error: the exception that stopped the source's watcher, if any.

    Subclasses implement :meth:`start_monitoring` and :meth:`stop_monitoring`, and must call
    the base implementations (``await super().start_monitoring(scope)`` first,
    ``await super().stop_monitoring()`` last): they do the bookkeeping (reset, double-start
    check, watcher shutdown). To fire, call :meth:`trigger_cancellation` (from async code)
    or :meth:`trigger_cancellation_nowait` (from a synchronous callback running in the
    event loop thread). See ``docs/custom_sources.md``.
    """

    def __init__(self, reason: CancellationReason, name: str | None = None) -> None:
        """Create a source reporting ``reason``; ``name`` defaults to the class name."""
        if not isinstance(reason, CancellationReason):
            raise TypeError(f"reason must be a CancellationReason, got {type(reason).__name__}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {type(name).__name__}")
        self.reason: CancellationReason = reason
        self.name: str = name if name is not None else type(self).__name__
        self.scope: Any = None
        self._triggered = False
        self.error: BaseException | None = None
        self._cancel_callback: CancelCallback | None = None
        self._error_callback: ErrorCallback | None = None
        # 0.1 compatibility: custom sources may store a task here; stop cancels it.
        self._monitoring_task: Any = None
        self._monitoring = False
        self._backend: Any = None
        # Watcher machinery (see start_watcher / stop_watcher).
        self._runner: Any = None
        self._runner_done: Any = None
        self._task_group: Any = None
        self._stop_event: Any = None
        self._pending_watchers: list[WatcherFunction] = []

    # ------------------------------------------------------------------ state

    @property
    def triggered(self) -> bool:
        """``True`` once this source fired (set by :meth:`trigger_cancellation`)."""
        return self._triggered

    @triggered.setter
    def triggered(self, value: bool) -> None:
        self._triggered = bool(value)

    @property
    def is_monitoring(self) -> bool:
        """``True`` between :meth:`start_monitoring` and :meth:`stop_monitoring`."""
        return self._monitoring

    @property
    def stop_requested(self) -> bool:
        """``True`` once :meth:`stop_monitoring` began (watchers should return)."""
        event = self._stop_event
        return event is None or bool(event.is_set())

    def set_cancel_callback(self, callback: CancelCallback | None) -> None:
        """Set the callback told ``(reason, message)`` when this source fires.

        The callback should be synchronous; an awaitable result is awaited by
        :meth:`trigger_cancellation` (0.1 compatibility) and closed with an error log by
        the synchronous trigger path. ``None`` removes it.
        """
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
        self._cancel_callback = callback

    def set_error_callback(self, callback: ErrorCallback | None) -> None:
        """Set the callback told ``(source, error)`` when this source's watcher fails.

        The owning operation uses it to report the failure to its ``on_error`` callbacks.
        An awaitable result is awaited. ``None`` removes it.
        """
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
        self._error_callback = callback

    # ------------------------------------------------------------- lifecycle

    @abstractmethod
    async def start_monitoring(self, scope: Any) -> None:
        """Start watching; on firing, cancel ``scope``.

        Base implementation (call it first from overrides): validates ``scope``, refuses a
        source that is already monitoring (:class:`RuntimeError`), resets ``triggered`` and
        ``error`` and stores ``scope``.
        """
        if self._monitoring:
            raise RuntimeError(
                f"{self.name} is already monitoring a scope; stop_monitoring() must be "
                "awaited before the source is started again"
            )
        if scope is None or not callable(getattr(scope, "cancel", None)):
            raise TypeError(
                "scope must be a cancel scope (an object with cancel()), "
                f"got {type(scope).__name__}"
            )
        self.scope = scope
        self._triggered = False
        self.error = None
        self._monitoring = True
        self._stop_event = None
        self._runner = None
        self._runner_done = None
        self._task_group = None
        self._pending_watchers = []
        try:
            self._backend = _current_backend()
        except BaseException:
            self._monitoring = False
            self.scope = None
            raise

    @abstractmethod
    async def stop_monitoring(self) -> None:
        """Stop watching (idempotent).

        Base implementation (call it last from overrides): stops the watcher task and its
        task group (see :meth:`start_watcher`), cancels a ``_monitoring_task`` a subclass
        stored, and releases the scope.
        """
        try:
            await self.stop_watcher()
        finally:
            task = self._monitoring_task
            self._monitoring_task = None
            if task is not None and callable(getattr(task, "cancel", None)):
                try:
                    task.cancel()
                except Exception as exc:  # pragma: no cover - defensive
                    logger.warning(
                        "cancelling the monitoring task of a source failed",
                        extra={"source": self.name, "error": repr(exc)},
                    )
            self._monitoring = False
            self.scope = None

    # --------------------------------------------------------------- trigger

    def _fire(self, message: str | None) -> Any:
        """Fire once: mark, call the callback, cancel the scope. Returns the callback result.

        Does nothing (returns ``None``) when there is no scope, the scope is already
        cancel-called, or this source already fired.
        """
        scope = self.scope
        if scope is None or self._triggered:
            return None
        try:
            already = bool(getattr(scope, "cancel_called", False))
        except Exception:  # pragma: no cover - exotic scope objects
            already = False
        if already:
            return None
        self._triggered = True
        text = message or ""
        logger.debug(
            "cancellation source triggered",
            extra={"source": self.name, "reason": self.reason.value, "cancel_message": text},
        )
        result: Any = None
        callback = self._cancel_callback
        if callback is not None:
            try:
                result = callback(self.reason, text)
            except Exception as exc:
                logger.error(
                    "cancel callback of a cancellation source raised",
                    exc_info=True,
                    extra={"source": self.name, "reason": self.reason.value, "error": repr(exc)},
                )
                result = None
        try:
            scope.cancel()
        except Exception as exc:
            logger.error(
                "cancelling the scope of a cancellation source failed",
                exc_info=True,
                extra={"source": self.name, "error": repr(exc)},
            )
        return result

    async def trigger_cancellation(self, message: str | None = None) -> None:
        """Fire this source: set ``triggered``, report ``(reason, message)``, cancel the scope.

        Fires at most once per monitoring; does nothing when no scope is set or the scope
        was already cancelled (the earlier canceller keeps the credit). Errors raised by the
        callback are logged, never propagated, and do not prevent the scope cancellation.
        """
        result = self._fire(message)
        if inspect.isawaitable(result):
            try:
                await result
            except Exception as exc:
                logger.error(
                    "async cancel callback of a cancellation source raised",
                    exc_info=True,
                    extra={"source": self.name, "error": repr(exc)},
                )

    def trigger_cancellation_nowait(self, message: str | None = None) -> None:
        """Synchronous :meth:`trigger_cancellation` for callbacks running in the loop thread.

        An awaitable returned by the cancel callback cannot be awaited here: it is closed
        and an error is logged (use a synchronous callback).
        """
        result = self._fire(message)
        if inspect.isawaitable(result):
            close = getattr(result, "close", None)
            if callable(close):
                close()
            logger.error(
                "the cancel callback returned an awaitable on a synchronous trigger path; "
                "it was not awaited (cancel callbacks should be synchronous)",
                extra={"source": self.name},
            )

    async def report_error(self, error: BaseException) -> None:
        """Record ``error`` on the source (``error`` attribute), log it and report it.

        Used when a watcher fails; the error callback (see :meth:`set_error_callback`)
        receives ``(self, error)``. Never raises an :class:`Exception`.
        """
        self.error = error
        logger.error(
            "cancellation source stopped after an error",
            exc_info=(type(error), error, error.__traceback__),
            extra={"source": self.name, "reason": self.reason.value, "error": repr(error)},
        )
        callback = self._error_callback
        if callback is None:
            return
        try:
            result = callback(self, error)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            logger.error(
                "error callback of a cancellation source raised",
                exc_info=True,
                extra={"source": self.name, "error": repr(exc)},
            )

    # --------------------------------------------------------------- watcher

    async def start_watcher(self, watcher: WatcherFunction) -> None:
        """Run ``watcher()`` as a background task owned by this source.

        Call from :meth:`start_monitoring` (after the base implementation). The first call
        starts the source's *runner*: a helper task (not the operation's task) that opens a
        backend task group, runs the watchers in it, waits for the stop event and then
        cancels and exits the group in proper LIFO order. The operation's task therefore
        never carries a scope of the source: :meth:`stop_monitoring` may be awaited from
        any scope, shielded or not, and can never poison the caller (0.1 defect §14.2).

        The watcher should return when :attr:`stop_requested` becomes true (see
        :meth:`wait_stopped`); on stop it is also cancelled at its current await. An
        :class:`Exception` escaping the watcher is logged, stored in ``error`` and passed
        to the error callback: it never cancels the operation.
        """
        if not callable(watcher):
            raise TypeError(f"watcher must be callable, got {type(watcher).__name__}")
        if not self._monitoring:
            raise RuntimeError("start_watcher() must be called while the source is monitoring")
        group = self._task_group
        if group is not None:
            group.start_soon(self._run_watcher, watcher)
            return
        self._pending_watchers.append(watcher)
        if self._runner is None:
            backend = self._backend
            self._stop_event = backend.create_event()
            self._runner_done = backend.create_event()
            self._runner = _spawn_detached(self._run_group)

    async def _run_group(self) -> None:
        backend = self._backend
        stop = self._stop_event
        try:
            async with backend.create_task_group() as group:
                self._task_group = group
                pending, self._pending_watchers = self._pending_watchers, []
                for watcher in pending:
                    group.start_soon(self._run_watcher, watcher)
                await stop.wait()
                group.cancel_scope.cancel()
        except Exception as exc:  # pragma: no cover - watchers never raise Exceptions
            logger.error(
                "the watcher task group of a cancellation source failed",
                exc_info=True,
                extra={"source": self.name, "error": repr(exc)},
            )
        finally:
            self._task_group = None
            self._runner_done.set()

    async def _run_watcher(self, watcher: WatcherFunction) -> None:
        if self.stop_requested:
            return
        try:
            await watcher()
        except Exception as exc:
            await self.report_error(exc)

    async def wait_stopped(self, timeout: float | None = None) -> bool:
        """Wait until a stop is requested, at most ``timeout`` seconds (``None``: forever).

        Returns ``True`` when the source is stopping (the watcher should return), ``False``
        when the timeout elapsed first. Use it instead of ``sleep()`` in polling watchers.
        """
        event = self._stop_event
        if event is None or event.is_set():
            return True
        if timeout is None:
            await event.wait()
            return True
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise TypeError(f"timeout must be a number or None, got {type(timeout).__name__}")
        if math.isnan(timeout):
            raise ValueError("timeout must not be NaN")
        backend = self._backend
        with backend.create_cancel_scope(deadline=backend.current_time() + max(timeout, 0.0)):
            await event.wait()
        return bool(event.is_set())

    async def stop_watcher(self) -> None:
        """Stop the watchers and wait until the source's task group has exited (idempotent).

        Sets the stop event; the runner then cancels the watchers at their current await
        and exits the group. A watcher blocked in a worker thread is abandoned by the
        thread-running helpers of the backends (the thread finishes on its own).
        """
        runner = self._runner
        if runner is None:
            return
        self._runner = None
        self._pending_watchers = []
        event = self._stop_event
        if event is not None and not event.is_set():
            event.set()
        done = self._runner_done
        if done is not None:
            await done.wait()

    # ------------------------------------------------------------------ misc

    def __str__(self) -> str:
        return f"{self.name}(reason={self.reason.value})"

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} name={self.name!r} reason={self.reason.value} "
            f"triggered={self.triggered} monitoring={self._monitoring}>"
        )
