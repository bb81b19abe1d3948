"""Predicate sources: cancel the operation when a condition becomes true."""

from __future__ import annotations

import functools
import inspect
import logging
import math
import os
from collections.abc import Awaitable, Callable
from typing import Any

from ..core.models import CancellationReason
from .base import CancellationSource

__all__ = ["ConditionSource", "ResourceConditionSource"]

logger = logging.getLogger(__name__)

Condition = Callable[[], bool | Awaitable[bool]]


def _looks_async(func: object) -> bool:
    """``True`` when calling ``func`` certainly returns a coroutine (no thread needed)."""
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - async callable objects
    )


def _validate_interval(check_interval: object) -> float:
    if isinstance(check_interval, bool) or not isinstance(check_interval, int | float):
        raise TypeError(
            f"check_interval must be a number of seconds, got {type(check_interval).__name__}"
        )
    value = float(check_interval)
    if math.isnan(value):
        raise ValueError("check_interval must be a positive number of seconds, got NaN")
    if value <= 0:
        raise ValueError(f"check_interval must be > 0 seconds, got {check_interval!r}")
    return value


class ConditionSource(CancellationSource):
    """Cancel the monitored scope when ``condition()`` returns a truthy value.

    The condition is checked immediately when monitoring starts, then every
    ``check_interval`` seconds, by a watcher task owned by the source (see
    :meth:`CancellationSource.start_watcher`). It may be a plain function or anything
    returning an awaitable (``async def`` functions, async callables, partials): whether to
    await is decided per result, not from the function's type. Synchronous conditions run
    in the event loop (keep them fast) unless ``run_in_thread=True``, which runs each check
    in a worker thread (for blocking checks; a running check delays the operation's exit
    until it returns).

    When it fires, the message is ``Condition '{condition_name}' met after {n} checks``.

    **A condition that raises** stops the checking: the error is logged at ERROR, stored in
    :attr:`error` and passed to the error callback (the operation reports it to its
    ``on_error`` callbacks), and the operation is *not* cancelled — a broken predicate is a
    bug to report, not a reason to abort (or silently keep) the work.

    Attributes:
        condition: the predicate.
        check_interval: seconds between checks.
        condition_name: the name used in messages (default: ``condition.__name__``, else
            ``"condition"``).
        run_in_thread: whether synchronous checks run in a worker thread.
        check_count: number of checks done in the current (or last) monitoring.
    """

    def __init__(
        self,
        condition: Condition,
        check_interval: float = 0.1,
        condition_name: str | None = None,
        name: str | None = None,
        *,
        run_in_thread: bool = False,
    ) -> None:
        """Watch ``condition`` every ``check_interval`` seconds (see the class docstring)."""
        if not callable(condition):
            raise TypeError(f"condition must be callable, got {type(condition).__name__}")
        interval = _validate_interval(check_interval)
        if condition_name is not None and not isinstance(condition_name, str):
            raise TypeError(
                f"condition_name must be a str or None, got {type(condition_name).__name__}"
            )
        if not isinstance(run_in_thread, bool):
            raise TypeError(f"run_in_thread must be a bool, got {type(run_in_thread).__name__}")
        super().__init__(CancellationReason.CONDITION, name)
        self.condition: Condition = condition
        self.check_interval: float = interval
        if condition_name is None:
            default = getattr(condition, "__name__", None)
            condition_name = default if isinstance(default, str) and default else "condition"
        self.condition_name: str = condition_name
        self.run_in_thread: bool = run_in_thread
        self.check_count = 0
        self._is_async = _looks_async(condition)

    async def start_monitoring(self, scope: Any) -> None:
        """Start the checking task (first check as soon as the event loop runs it)."""
        await super().start_monitoring(scope)
        self.check_count = 0
        try:
            await self.start_watcher(self._poll)
        except BaseException:
            await super().stop_monitoring()
            raise

    async def stop_monitoring(self) -> None:
        """Stop the checking task and wait for it to finish."""
        await super().stop_monitoring()

    def _call_boxed(self) -> tuple[Any]:
        # Boxed so that a coroutine returned by the predicate crosses the thread boundary
        # as a plain value (trio refuses worker functions that return coroutines).
        return (self.condition(),)

    async def _evaluate(self) -> bool:
        if self.run_in_thread and not self._is_async:
            (result,) = await self._backend.run_sync_in_thread(self._call_boxed)
        else:
            result = self.condition()
        if inspect.isawaitable(result):
            result = await result
        return bool(result)

    async def _poll(self) -> None:
        while not self.stop_requested:
            self.check_count += 1
            if await self._evaluate():
                await self.trigger_cancellation(
                    f"Condition '{self.condition_name}' met after {self.check_count} checks"
                )
                return
            if await self.wait_stopped(self.check_interval):
                return

    def __repr__(self) -> str:
        return (
            f"<ConditionSource name={self.name!r} condition={self.condition_name!r} "
            f"check_interval={self.check_interval} triggered={self.triggered}>"
        )


def _validate_threshold(value: object, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a percentage number or None, got {type(value).__name__}")
    if math.isnan(value) or not 0 < value <= 100:
        raise ValueError(f"{what} must be a percentage in (0, 100], got {value!r}")
    return value


class ResourceConditionSource(ConditionSource):
    """Cancel when system resource usage exceeds a threshold (needs ``psutil``).

    Thresholds are percentages in ``(0, 100]`` (``None``: not checked). Checks, in order:
    virtual memory percent, CPU percent (measured since the previous check, without
    blocking the event loop), disk usage percent of the root filesystem. ``psutil`` is
    imported at check time; when it is missing a warning is logged once and the check
    returns ``False``.
    """

    def __init__(
        self,
        memory_threshold: float | None = None,
        cpu_threshold: float | None = None,
        disk_threshold: float | None = None,
        check_interval: float = 5.0,
        name: str | None = None,
    ) -> None:
        """Watch the given thresholds every ``check_interval`` seconds."""
        self.memory_threshold = _validate_threshold(memory_threshold, "memory_threshold")
        self.cpu_threshold = _validate_threshold(cpu_threshold, "cpu_threshold")
        self.disk_threshold = _validate_threshold(disk_threshold, "disk_threshold")
        parts = []
        if self.memory_threshold:
            parts.append(f"memory>{self.memory_threshold}%")
        if self.cpu_threshold:
            parts.append(f"cpu>{self.cpu_threshold}%")
        if self.disk_threshold:
            parts.append(f"disk>{self.disk_threshold}%")
        super().__init__(
            self._check_resources,
            check_interval,
            condition_name=f"resource_check({', '.join(parts)})",
            name=name if name is not None else "resource_monitor",
        )
        self._psutil_warned = False

    async def start_monitoring(self, scope: Any) -> None:
        """Prime the CPU measurement, then start checking."""
        if self.cpu_threshold:
            try:
                psutil: Any = __import__("psutil")
                psutil.cpu_percent(interval=None)
            except ImportError:
                pass
        await super().start_monitoring(scope)

    async def _check_resources(self) -> bool:
        """``True`` when one of the configured thresholds is exceeded."""
        try:
            psutil: Any = __import__("psutil")  # at check time: psutil is optional
        except ImportError:
            if not self._psutil_warned:
                self._psutil_warned = True
                logger.warning(
                    "psutil is not installed; ResourceConditionSource checks nothing "
                    "(install hother-cancelable[psutil])",
                    extra={"source": self.name},
                )
            return False
        if self.memory_threshold and psutil.virtual_memory().percent > self.memory_threshold:
            return True
        if self.cpu_threshold and psutil.cpu_percent(interval=None) > self.cpu_threshold:
            return True
        if self.disk_threshold:
            root = os.path.abspath(os.sep)
            if psutil.disk_usage(root).percent > self.disk_threshold:
                return True
        return False
