"""Composite sources: combine several sources into one (any-of / all-of).

Each component is started on a private *child scope* owned by the composite (a small
object with ``deadline``, ``cancel()`` and ``cancel_called``): cancelling it, or reporting
through the cancel callback the composite installs with ``set_cancel_callback``, tells the
composite that the component fired. Deadlines set by components (``TimeoutSource``) are
honoured: :class:`AnyOfSource` forwards the earliest one to the real scope,
:class:`AllOfSource` arms a watcher that marks the component fired when its deadline passes.
Components are stopped (in reverse order) on every exit path, and their previous callbacks
are restored.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
from collections.abc import Iterable
from typing import Any

from ..core.models import CancellationReason
from .base import CancelCallback, CancellationSource, ErrorCallback

__all__ = ["AllOfSource", "AnyOfSource", "CompositeSource"]

logger = logging.getLogger(__name__)

_CLOCK_SLACK = 1e-6  # seconds


def _deadline_hit(backend: Any, scope: Any, deadline: float) -> bool:
    """``True`` when ``deadline`` passed and ``scope`` was cancelled (by a deadline)."""
    if scope is None or backend is None or math.isinf(deadline):
        return False
    try:
        # uvloop's clock has millisecond steps: allow for the float rounding of a deadline
        if backend.current_time() < deadline - _CLOCK_SLACK:
            return False
        reached = getattr(scope, "deadline_reached", None)
        if reached is not None:
            return bool(reached)
        return bool(scope.cancel_called)
    except Exception:  # outside the event loop: the clock is not available
        return False


class _ChildScope:
    """The private scope a composite hands to one component."""

    __slots__ = ("_deadline", "_index", "_owner")

    def __init__(self, owner: _CompositeBase, index: int) -> None:
        self._owner = owner
        self._index = index
        self._deadline = math.inf

    @property
    def deadline(self) -> float:
        """The component's deadline (backend clock; ``inf`` when none)."""
        return self._deadline

    @deadline.setter
    def deadline(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise TypeError(f"deadline must be a number, got {value!r}")
        self._deadline = float(value)
        self._owner._child_deadline_changed(self._index)

    @property
    def cancel_called(self) -> bool:
        """``True`` once the component fired (or its deadline took effect)."""
        return self._owner._child_cancel_called(self._index)

    @property
    def shield(self) -> bool:
        """Child scopes are never shielded."""
        return False

    def cancel(self) -> None:
        """Report that the component fired."""
        self._owner._child_fired(self._index, None, None)


class _Child:
    __slots__ = ("fired", "message", "prev_cancel_cb", "prev_error_cb", "reason", "scope", "source")

    def __init__(self, source: CancellationSource, scope: _ChildScope) -> None:
        self.source = source
        self.scope = scope
        self.fired = False
        self.reason: CancellationReason | None = None
        self.message: str | None = None
        self.prev_cancel_cb: CancelCallback | None = source._cancel_callback
        self.prev_error_cb: ErrorCallback | None = source._error_callback


class _CompositeBase(CancellationSource):
    """Shared machinery of the composite sources."""

    def __init__(self, sources: Iterable[CancellationSource], name: str | None) -> None:
        if isinstance(sources, CancellationSource) or isinstance(sources, str | bytes):
            raise TypeError("sources must be a list of CancellationSource objects")
        try:
            items = list(sources)
        except TypeError:
            raise TypeError(
                f"sources must be a list of CancellationSource objects, "
                f"got {type(sources).__name__}"
            ) from None
        if not items:
            raise ValueError("sources must contain at least one source")
        for i, item in enumerate(items):
            if not isinstance(item, CancellationSource):
                raise TypeError(
                    f"sources[{i}] must be a CancellationSource, got {type(item).__name__}"
                )
        if len({id(s) for s in items}) != len(items):
            raise ValueError("sources must not contain the same source object twice")
        super().__init__(CancellationReason.MANUAL, name)
        self.sources: list[CancellationSource] = items
        self._children: list[_Child] = []
        self._started: list[_Child] = []

    # ----------------------------------------------------------- lifecycle

    async def start_monitoring(self, scope: Any) -> None:
        """Start every component on its own child scope."""
        await super().start_monitoring(scope)
        self.reason = CancellationReason.MANUAL
        self._reset()
        sources = list(self.sources)
        if self in sources:
            await super().stop_monitoring()
            raise ValueError("a composite source cannot contain itself")
        self._children = [_Child(s, _ChildScope(self, i)) for i, s in enumerate(sources)]
        self._started = []
        try:
            await self._before_children()
            for i, child in enumerate(self._children):
                child.source.set_cancel_callback(functools.partial(self._on_child_callback, i))
                child.source.set_error_callback(self._on_child_error)
                try:
                    await child.source.start_monitoring(child.scope)
                except BaseException:
                    self._restore_callbacks(child)
                    raise
                self._started.append(child)
        except BaseException:
            await self.stop_monitoring()
            raise

    async def stop_monitoring(self) -> None:
        """Stop every started component (reverse order), then the composite itself."""
        if self._monitoring:
            self._resolve_deadline_trigger()
        pending: BaseException | None = None
        started, self._started = self._started, []
        for child in reversed(started):
            try:
                await child.source.stop_monitoring()
            except Exception as exc:
                logger.error(
                    "stopping a component of a composite source failed",
                    exc_info=True,
                    extra={"source": self.name, "component": child.source.name, "error": repr(exc)},
                )
            except BaseException as exc:  # cancellation: finish the cleanup, then re-raise
                if pending is None:
                    pending = exc
            finally:
                self._restore_callbacks(child)
        try:
            await super().stop_monitoring()
        except BaseException as exc:
            if pending is None:
                raise
            logger.error(
                "stopping a composite source failed",
                exc_info=True,
                extra={"source": self.name, "error": repr(exc)},
            )
        if pending is not None:
            raise pending

    @staticmethod
    def _restore_callbacks(child: _Child) -> None:
        child.source.set_cancel_callback(child.prev_cancel_cb)
        child.source.set_error_callback(child.prev_error_cb)

    @property
    def triggered(self) -> bool:
        """``True`` once the composite fired (deadline components included)."""
        if not self._triggered and self._monitoring:
            self._resolve_deadline_trigger()
        return self._triggered

    @triggered.setter
    def triggered(self, value: bool) -> None:
        self._triggered = bool(value)

    # ------------------------------------------------------ child reports

    def _on_child_callback(self, index: int, reason: CancellationReason, message: str) -> Any:
        return self._child_fired(index, reason, message)

    async def _on_child_error(self, source: CancellationSource, error: BaseException) -> None:
        callback = self._error_callback
        if callback is None:
            return
        try:
            result = callback(source, error)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            logger.error(
                "error callback of a composite source raised",
                exc_info=True,
                extra={"source": self.name, "error": repr(exc)},
            )

    def _child(self, index: int) -> _Child | None:
        children = self._children
        return children[index] if 0 <= index < len(children) else None

    # hooks -----------------------------------------------------------------

    def _reset(self) -> None:
        """Reset per-monitoring state (subclasses)."""

    async def _before_children(self) -> None:
        """Run before the components are started (subclasses)."""

    def _child_fired(
        self, index: int, reason: CancellationReason | None, message: str | None
    ) -> Any:
        raise NotImplementedError

    def _child_deadline_changed(self, index: int) -> None:
        raise NotImplementedError

    def _child_cancel_called(self, index: int) -> bool:
        raise NotImplementedError

    def _resolve_deadline_trigger(self) -> None:
        """Attribute a firing caused by a component deadline (subclasses)."""


class CompositeSource(_CompositeBase):
    """Fire when **any** component fires (first one wins).

    The composite adopts the reason of the component that fired (``reason`` changes from
    MANUAL to it) and records it in ``triggered_source``; the reported message is
    ``Composite source triggered by {component name}: {component message}``. Deadlines of
    components (``TimeoutSource``) are forwarded to the real scope — the earliest wins — and
    a firing deadline is attributed to its component (``triggered_source``, ``reason``).
    """

    def __init__(self, sources: Iterable[CancellationSource], name: str | None = None) -> None:
        """Combine ``sources`` (a non-empty list)."""
        super().__init__(sources, name if name is not None else "composite")
        self.triggered_source: CancellationSource | None = None

    def _reset(self) -> None:
        self.triggered_source = None

    def _child_fired(
        self, index: int, reason: CancellationReason | None, message: str | None
    ) -> Any:
        child = self._child(index)
        if child is None or child.fired:
            return None
        child.fired = True
        child.reason = reason if reason is not None else child.source.reason
        child.message = message or ""
        scope = self.scope
        if self._triggered or scope is None:
            return None
        try:
            if scope.cancel_called:
                return None
        except Exception:  # pragma: no cover - exotic scope objects
            pass
        self.triggered_source = child.source
        self.reason = child.reason
        return self._fire(f"Composite source triggered by {child.source.name}: {child.message}")

    def _child_deadline_changed(self, index: int) -> None:
        child = self._child(index)
        scope = self.scope
        if child is None or scope is None or not self._monitoring:
            return
        deadline = child.scope._deadline
        if deadline < scope.deadline:
            scope.deadline = deadline

    def _child_cancel_called(self, index: int) -> bool:
        child = self._child(index)
        if child is None:
            return False
        if child.fired:
            return True
        return _deadline_hit(self._backend, self.scope, child.scope._deadline)

    def _resolve_deadline_trigger(self) -> None:
        if self._triggered or self.scope is None:
            return
        hit = [
            c
            for c in self._children
            if not c.fired and _deadline_hit(self._backend, self.scope, c.scope._deadline)
        ]
        if not hit:
            return
        first = min(hit, key=lambda c: c.scope._deadline)
        _ = first.source.triggered  # lets a nested composite attribute its own deadline
        self._triggered = True
        self.triggered_source = first.source
        self.reason = first.source.reason


class AnyOfSource(CompositeSource):
    """Fire when any component fires (alias of :class:`CompositeSource`)."""

    def __init__(self, sources: Iterable[CancellationSource], name: str | None = None) -> None:
        """Combine ``sources`` (a non-empty list)."""
        super().__init__(sources, name)


class AllOfSource(_CompositeBase):
    """Fire once **every** component has fired.

    ``triggered_sources`` collects the components that fired. When the last one fires, the
    composite fires with the **reason of that last component** and the message
    ``All {n} sources have triggered``. Component deadlines (``TimeoutSource``) count as
    firing when they pass (a watcher owned by the composite waits for them); they do not
    cancel the scope on their own.
    """

    def __init__(self, sources: Iterable[CancellationSource], name: str | None = None) -> None:
        """Combine ``sources`` (a non-empty list)."""
        super().__init__(sources, name if name is not None else "all_of")
        self.triggered_sources: set[CancellationSource] = set()
        self._wake: Any = None

    def _reset(self) -> None:
        self.triggered_sources = set()
        self._wake = None

    async def _before_children(self) -> None:
        self._wake = self._backend.create_event()
        await self.start_watcher(self._watch_deadlines)

    def _child_fired(
        self, index: int, reason: CancellationReason | None, message: str | None
    ) -> Any:
        child = self._child(index)
        if child is None or child.fired:
            return None
        child.fired = True
        child.reason = reason if reason is not None else child.source.reason
        child.message = message or ""
        self.triggered_sources.add(child.source)
        if self._triggered or not all(c.fired for c in self._children):
            return None
        scope = self.scope
        if scope is None:
            return None
        try:
            if scope.cancel_called:
                return None
        except Exception:  # pragma: no cover - exotic scope objects
            pass
        self.reason = child.reason
        return self._fire(f"All {len(self._children)} sources have triggered")

    def _child_deadline_changed(self, index: int) -> None:
        wake = self._wake
        if wake is not None and not wake.is_set():
            wake.set()

    def _child_cancel_called(self, index: int) -> bool:
        child = self._child(index)
        return child is not None and child.fired

    async def _watch_deadlines(self) -> None:
        backend = self._backend
        while not self.stop_requested and not self._triggered:
            wake = self._wake
            if wake is None or wake.is_set():
                wake = self._wake = backend.create_event()
            pending = [
                c.scope._deadline
                for c in self._children
                if not c.fired and not math.isinf(c.scope._deadline)
            ]
            if pending:
                with backend.create_cancel_scope(deadline=min(pending)):
                    await wake.wait()
            else:
                await wake.wait()
            now = backend.current_time()
            for i, child in enumerate(self._children):
                if not child.fired and child.scope._deadline <= now + _CLOCK_SLACK:
                    result = self._child_fired(
                        i, child.source.reason, f"deadline of {child.source.name} reached"
                    )
                    if inspect.isawaitable(result):
                        await result
