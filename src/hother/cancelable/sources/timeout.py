"""Deadline source: cancel the operation after a fixed time."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from ..core.models import CancellationReason
from .base import CancellationSource

__all__ = ["TimeoutSource", "validate_timeout"]

_CLOCK_SLACK = 1e-6  # seconds: float rounding of deadlines on millisecond clocks


def validate_timeout(timeout: object, what: str = "timeout") -> float:
    """Return ``timeout`` (a number of seconds or a :class:`timedelta`) as a float.

    Raises :class:`TypeError` for bools and non-numbers, :class:`ValueError` for NaN and
    values ``<= 0``. ``inf`` is accepted (never fires).
    """
    if isinstance(timeout, timedelta):
        seconds = timeout.total_seconds()
    elif isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(
            f"{what} must be a number of seconds or a timedelta, got {type(timeout).__name__}"
        )
    else:
        try:
            seconds = float(timeout)
        except OverflowError:  # an int beyond the float range
            if timeout < 0:
                raise ValueError(f"{what} must be > 0 seconds, got {timeout!r}") from None
            seconds = math.inf  # never fires

    if math.isnan(seconds):
        raise ValueError(f"{what} must be a positive number of seconds, got NaN")
    if seconds <= 0:
        raise ValueError(f"{what} must be > 0 seconds, got {timeout!r}")
    return seconds


class TimeoutSource(CancellationSource):
    """Cancel the monitored scope ``timeout`` seconds after monitoring starts.

    The source sets a deadline on the scope; it runs no task and arms no timer of its own
    (the backend's scope deadline does the work). Several timeouts on one scope combine:
    the earliest deadline wins. The owning operation infers the TIMEOUT reason from the
    deadline; ``triggered`` is true once this source's own deadline passed while the scope
    was cancelled (checked on read and latched by :meth:`stop_monitoring`).

    Attributes:
        timeout: the timeout in seconds (a ``timedelta`` is converted).
        deadline: the absolute deadline (backend clock) of the current or last monitoring,
            ``None`` before the first start.
    """

    def __init__(self, timeout: float | timedelta, name: str | None = None) -> None:
        """Create a timeout of ``timeout`` seconds (> 0; ``inf`` means never)."""
        seconds = validate_timeout(timeout)
        super().__init__(CancellationReason.TIMEOUT, name)
        self.timeout: float = seconds
        self.deadline: float | None = None

    @property
    def triggered(self) -> bool:
        """``True`` once this source's deadline passed and cancelled the scope."""
        if self._triggered:
            return True
        if self._monitoring and self._deadline_fired():
            self._triggered = True
        return self._triggered

    @triggered.setter
    def triggered(self, value: bool) -> None:
        self._triggered = bool(value)

    def _deadline_fired(self) -> bool:
        deadline = self.deadline
        scope = self.scope
        if deadline is None or scope is None or math.isinf(deadline):
            return False
        try:
            # uvloop's clock has millisecond steps: allow for the float rounding of a deadline
            if self._backend.current_time() < deadline - _CLOCK_SLACK:
                return False
            reached = getattr(scope, "deadline_reached", None)
            if reached is not None:
                return bool(reached)
            return bool(scope.cancel_called)
        except Exception:  # outside the event loop: the clock is not available
            return False

    async def start_monitoring(self, scope: Any) -> None:
        """Set ``scope.deadline`` to ``min(scope.deadline, now + timeout)``."""
        await super().start_monitoring(scope)
        try:
            self.deadline = self._backend.current_time() + self.timeout
            current = scope.deadline
            if self.deadline < current:
                scope.deadline = self.deadline
        except BaseException:
            await super().stop_monitoring()
            raise

    async def stop_monitoring(self) -> None:
        """Latch ``triggered`` (deadline passed and the scope was cancelled), then stop."""
        if self._monitoring and not self._triggered and self._deadline_fired():
            self._triggered = True
        await super().stop_monitoring()

    def __repr__(self) -> str:
        return f"<TimeoutSource name={self.name!r} timeout={self.timeout} deadline={self.deadline}>"
