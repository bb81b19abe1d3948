"""``Cancellable``: the operation context manager (API.md §6).

An operation runs its body inside a backend cancel scope (the C engine's scope on asyncio,
trio's scope under trio, anyio's under anyio-on-asyncio). Timeouts set the scope deadline,
tokens and parents cancel the scope through a synchronous token hook, sources cancel it when
they fire. The exit records the outcome (status, reason, message) and **re-raises** the
runtime's native cancel exception: a ``Cancellable`` never swallows an exception.

Lifecycle (transactional enter, shielded cleanup):

* enter: detect the backend, link the operation token to its parent / shared / combined tokens,
  status RUNNING, registry, hook the token to the scope, start the sources, ``on_start``
  callbacks, ``current_operation`` set, scope entered. A failure midway undoes every completed
  step and re-raises.
* exit: scope exited, outcome resolved (see :meth:`Cancellable._resolve_cancel_reason`), status
  and callbacks, then (shielded from outer cancellation) sources stopped, shields cancelled,
  token hooks and links removed, registry entry moved to history, ``current_operation``
  restored.

Single use: entering an instance a second time raises :class:`RuntimeError`.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import math
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar, cast

from .. import _engine
from .exceptions import CancellationError
from .models import CancellationReason, OperationContext, OperationStatus
from .token import CancellationToken, LinkedCancellationToken

__all__ = ["Cancellable", "LinkState", "current_operation"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

_current_operation: contextvars.ContextVar[Cancellable | None] = _engine.current_operation_var

# Status values as plain constants (enum attribute lookups are not free on the hot path).
_PENDING = OperationStatus.PENDING
_RUNNING = OperationStatus.RUNNING
_COMPLETED = OperationStatus.COMPLETED
_CANCELLED = OperationStatus.CANCELLED
_FAILED = OperationStatus.FAILED
_SHIELDED = OperationStatus.SHIELDED
_TERMINAL = frozenset({_COMPLETED, _CANCELLED, _FAILED, OperationStatus.TIMEOUT})


def current_operation() -> Cancellable | None:
    """The :class:`Cancellable` whose block the calling code runs in, or ``None``.

    A context variable: inherited by tasks started inside the block, not visible in plain
    threads except through :meth:`Cancellable.run_in_thread`.
    """
    return _current_operation.get()


current_operation = _engine.current_operation  # noqa: F811  (the same function, in C)


class LinkState:
    """Link bookkeeping states (0.1 internal names, kept for reference)."""

    NOT_LINKED = "not_linked"
    LINKING = "linking"
    LINKED = "linked"
    CANCELLED = "cancelled"


def _check_str(value: object, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{what} must be a str or None, not {type(value).__name__}")
    return value


def _check_bool(value: object, what: str) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be a bool, not {type(value).__name__}")


def _check_callable(value: object, what: str) -> None:
    if not callable(value):
        raise TypeError(f"{what} must be callable, not {type(value).__name__}")


async def _call(callback: Callable[..., Any], *args: Any) -> None:
    """Call a sync or async callback; log and swallow its ``Exception``."""
    try:
        result = callback(*args)
        if inspect.isawaitable(result):
            await result
    except Exception:
        logger.exception(
            "hother.cancelable: callback %r raised", callback, extra={"callback": repr(callback)}
        )


def _in_async_context() -> bool:
    """True when an event loop (asyncio) or a trio run is running in this thread."""
    import asyncio.events

    if asyncio.events._get_running_loop() is not None:
        return True
    return _engine.capture_executor() is not None


def _backend() -> Any:
    from ..backends import get_backend

    return get_backend()


def _is_cancel_exc(exc: BaseException, cancel_cls: type[BaseException]) -> bool:
    if isinstance(exc, cancel_cls):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_cancel_exc(e, cancel_cls) for e in exc.exceptions)
    return False


def _timeout_seconds(timeout: float | timedelta) -> float:
    from ..sources.timeout import validate_timeout

    return validate_timeout(timeout)


class Cancellable(_engine.CancellableCore):
    """An async context manager that runs a block as a cancellable *operation*.

    Args:
        operation_id: the id (a str); a uuid4 string is created (lazily) when omitted.
        name: a readable name.
        parent: the parent operation; its cancellation (``cancel()``, token, timeout)
            reaches this one with reason ``PARENT``.
        metadata: a dict stored on the context (kept as the same mutable object).
        register_globally: register in :class:`OperationRegistry` while running.

    Backend notes: on asyncio the body runs in the C engine's cancel scope; under trio in a
    ``trio.CancelScope`` (made when the block first needs it); with the anyio backend forced
    on asyncio in ``anyio.CancelScope``.
    Everywhere a cancellation ends the block with the runtime's native cancel exception
    (``asyncio.CancelledError`` / ``trio.Cancelled``), which the caller catches.
    """

    # Construction, state fields, with_timeout(), __aenter__/__aexit__ (fast path) and the
    # lazy `_token` live in the C base `_engine.CancellableCore`; see _ext/cancellable.c.
    # No instance __dict__: a live operation's memory is a target (docs/performance.md);
    # user data goes in `metadata`. Subclasses without __slots__ get a __dict__ as usual.
    __slots__ = ()
    # Signature: Cancellable(operation_id=None, name=None, parent=None, metadata=None,
    #                        register_globally=False)
    _ctx: OperationContext | None
    _status: OperationStatus
    _token_obj: LinkedCancellationToken | None

    # ------------------------------------------------------------------ factories
    @classmethod
    def with_token(
        cls,
        token: CancellationToken,
        operation_id: str | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> Cancellable:
        """An operation cancelled when ``token`` is (its reason and message are kept).

        The operation keeps its own token, linked to ``token``: ``cancel()`` on the operation
        does not cancel the shared token (0.2 fix), and ``parent=`` can be combined with it.
        """
        if not isinstance(token, CancellationToken):
            raise TypeError(f"token must be a CancellationToken, not {type(token).__name__}")
        inst = cls(operation_id=operation_id, name=name or "token_based", **kwargs)
        inst._external_tokens.append(token)
        return inst

    @classmethod
    def with_signal(
        cls,
        *signals: int,
        operation_id: str | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> Cancellable:
        """An operation cancelled when one of ``signals`` arrives (default SIGINT, SIGTERM)."""
        from ..sources.signal import SignalSource

        source = SignalSource(*signals)
        inst = cls(operation_id=operation_id, name=name or "signal_based", **kwargs)
        inst._sources.append(source)
        return inst

    @classmethod
    def with_condition(
        cls,
        condition: Callable[[], bool | Awaitable[bool]],
        check_interval: float = 0.1,
        condition_name: str | None = None,
        operation_id: str | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> Cancellable:
        """An operation cancelled once ``condition()`` returns a truthy value (polled)."""
        from ..sources.condition import ConditionSource

        source = ConditionSource(condition, check_interval, condition_name)
        inst = cls(operation_id=operation_id, name=name or "condition_based", **kwargs)
        inst._sources.append(source)
        return inst

    def combine(self, *others: Cancellable) -> Cancellable:
        """A new operation cancelled by any of ``self`` and ``others`` (sources and tokens).

        Deadlines: the earliest one wins. Token cancellations keep their reason and message.
        """
        for other in others:
            if not isinstance(other, Cancellable):
                raise TypeError(f"combine() takes Cancellable objects, not {type(other).__name__}")
        combined = Cancellable(
            name=f"combined_{self._name}",
            metadata={
                "sources": [self.operation_id, *(o.operation_id for o in others)],
                "combined": True,
                "preserve_reason": True,
            },
        )
        combined._sources = [*self._sources]
        for other in others:
            combined._sources.extend(other._sources)
        combined._cancellables_to_link = [self, *others]
        return combined

    def add_source(self, source: Any) -> Cancellable:
        """Attach a :class:`~hother.cancelable.sources.base.CancellationSource` (chainable).

        Sources must be added before the operation is entered.
        """
        from ..sources.base import CancellationSource

        if not isinstance(source, CancellationSource):
            raise TypeError(f"source must be a CancellationSource, not {type(source).__name__}")
        if self._entered:
            raise RuntimeError("add_source() must be called before the operation is entered")
        self._sources.append(source)
        return self

    # ------------------------------------------------------------------ properties
    @property
    def operation_id(self) -> str:
        """The operation id (a uuid4 string unless one was given)."""
        if self._ctx is not None:
            return self._ctx.id
        op_id = self._id
        if op_id is None:
            import uuid

            op_id = self._id = str(uuid.uuid4())
        return op_id

    @property
    def context(self) -> OperationContext:
        """The operation's :class:`OperationContext` (built on first access, then live)."""
        ctx = self._ctx
        if ctx is None:
            ctx = OperationContext._fast(
                id=self.operation_id,
                name=self._name,
                metadata=self._metadata,
                parent_id=self._parent_id,
            )
            ctx.status = self._status
            if self._start_time is not None:
                ctx.start_time = self._start_time
            ctx.end_time = self._end_time
            ctx.cancel_reason = self._cancel_reason
            ctx.cancel_message = self._cancel_message
            ctx.error = self._error
            ctx.partial_result = self._partial_result
            self._ctx = ctx
        return ctx

    @property
    def token(self) -> LinkedCancellationToken:
        """The operation's own token (read-only)."""
        return cast(LinkedCancellationToken, self._token)

    @property
    def status(self) -> OperationStatus:
        """The current :class:`OperationStatus`."""
        return self._ctx.status if self._ctx is not None else self._status

    @property
    def is_cancelled(self) -> bool:
        """True once the operation ended CANCELLED (or TIMEOUT); set at exit."""
        return self.status in (_CANCELLED, OperationStatus.TIMEOUT)

    @property
    def is_running(self) -> bool:
        """True while the block runs."""
        return self.status == _RUNNING

    @property
    def is_completed(self) -> bool:
        """True when the block ended normally (COMPLETED)."""
        return self.status == _COMPLETED

    @property
    def parent(self) -> Cancellable | None:
        """The parent operation, or ``None`` (never set, or garbage-collected)."""
        return self._parent_ref() if self._parent_ref is not None else None

    @property
    def scope(self) -> Any:
        """The backend cancel scope of the running block (``None`` before enter).

        On trio a block gets its ``trio.CancelScope`` when it first needs one (a cancel, its
        deadline, or this property while it runs): a block that ran without any of these
        reads ``None`` here after it ended.
        """
        return self._live_scope

    # ------------------------------------------------------------------ state updates
    def _set_status(self, status: OperationStatus) -> None:
        ctx = self._ctx
        if ctx is not None:
            ctx.update_status(status)
            return
        self._status = status
        if status in _TERMINAL:
            self._end_time = datetime.now(UTC)

    def _set_cancel(self, reason: CancellationReason | None, message: str | None) -> None:
        ctx = self._ctx
        if ctx is not None:
            ctx.cancel_reason = reason
            ctx.cancel_message = message
        self._cancel_reason = reason
        self._cancel_message = message

    def _set_error(self, error: str) -> None:
        if self._ctx is not None:
            self._ctx.error = error
        self._error = error

    def _set_partial_result(self, value: Any) -> None:
        if self._ctx is not None:
            self._ctx.partial_result = value
        self._partial_result = value

    # ------------------------------------------------------------------ callbacks
    def _add_callback(self, lst: list[Callable[..., Any]], callback: Any, what: str) -> Cancellable:
        _check_callable(callback, what)
        lst.append(callback)
        return self

    def on_progress(self, callback: Callable[..., Any]) -> Cancellable:
        """Register ``callback(operation_id, message, metadata)`` for progress reports."""
        return self._add_callback(self._progress_callbacks, callback, "callback")

    def on_start(self, callback: Callable[..., Any]) -> Cancellable:
        """Register ``callback(context)`` run on enter (status RUNNING)."""
        return self._add_callback(self._start_callbacks, callback, "callback")

    def on_complete(self, callback: Callable[..., Any]) -> Cancellable:
        """Register ``callback(context)`` run on a normal exit (status COMPLETED)."""
        return self._add_callback(self._complete_callbacks, callback, "callback")

    def on_cancel(self, callback: Callable[..., Any]) -> Cancellable:
        """Register ``callback(context)`` run when the operation ends CANCELLED."""
        return self._add_callback(self._cancel_callbacks, callback, "callback")

    def on_error(self, callback: Callable[..., Any]) -> Cancellable:
        """Register ``callback(context, error)`` run when the body raised (status FAILED)."""
        return self._add_callback(self._error_callbacks, callback, "callback")

    async def report_progress(self, message: Any, metadata: dict[str, Any] | None = None) -> None:
        """Call every progress callback with ``(operation_id, message, metadata)``."""
        if metadata is not None and not isinstance(metadata, dict):
            raise TypeError(f"metadata must be a dict or None, not {type(metadata).__name__}")
        if not self._progress_callbacks:
            return
        op_id = self.operation_id
        for cb in list(self._progress_callbacks):
            await _call(cb, op_id, message, metadata)

    # ------------------------------------------------------------------ token hooks
    def _on_token_cancelled(self, token: CancellationToken) -> None:
        """Token hook: record the token's reason and cancel the running scope (sync)."""
        if self._hook_reason is None:
            self._hook_reason = (token.reason or CancellationReason.MANUAL, token.message)
        self._cancel_scope()

    def _on_source_cancelled(self, reason: CancellationReason, message: str | None) -> None:
        """Source callback: record why a source fired (the source cancels the scope)."""
        if self._source_reason is None:
            self._source_reason = (reason, message)

    def _on_source_error(self, source: Any, error: BaseException) -> None:
        """A source's watcher failed: remembered and reported to ``on_error`` at exit."""
        if self._source_error is None:
            self._source_error = error

    def _all_link_targets(self) -> list[CancellationToken]:
        """Tokens of combined operations, flattened through nested combines."""
        seen: set[int] = set()
        out: list[CancellationToken] = []

        def walk(op: Cancellable) -> None:
            if id(op) in seen:
                return
            seen.add(id(op))
            if op._cancellables_to_link:
                for inner in op._cancellables_to_link:
                    walk(inner)
            if op is not self:
                out.append(op._token)
                out.extend(op._external_tokens)

        walk(self)
        return out

    def _link_tokens(self) -> None:
        tok = self._token
        parent = self.parent
        if parent is not None:
            tok._link_from(parent._token, False)
            self._linked_to.append(parent._token)
        self._link_external()  # with_token's tokens, as the C fast path links them
        if self._cancellables_to_link:
            for target in self._all_link_targets():
                if target is tok or target in self._linked_to:
                    continue
                tok._link_from(target, True)
                self._linked_to.append(target)

    # ------------------------------------------------------------------ enter / exit
    async def _aenter_slow(self) -> Cancellable:
        """Enter on any backend (the C ``__aenter__`` calls this off its fast path)."""
        backend = self._backend = _backend()
        scope = self._scope = backend.create_cancel_scope()
        started: list[Any] = []
        self._cv_token = _current_operation.set(self)
        try:
            if self._parent_ref is not None or self._external_tokens or self._cancellables_to_link:
                self._link_tokens()
            self._start_time = datetime.now(UTC)
            if self._ctx is not None:
                self._ctx.start_time = self._start_time
            self._set_status(_RUNNING)
            if self._register_globally:
                from .registry import OperationRegistry

                OperationRegistry.get_instance().register_sync(self)
                self._registered = True
            self._hook = self._token._add_hook(self._on_token_cancelled)
            for source in self._sources:
                source.set_cancel_callback(self._on_source_cancelled)
                if hasattr(source, "set_error_callback"):
                    source.set_error_callback(self._on_source_error)
                await source.start_monitoring(scope)
                started.append(source)
            if self._start_callbacks:
                ctx = self.context
                for cb in list(self._start_callbacks):
                    await _call(cb, ctx)
            scope.__enter__()
        except BaseException:
            await self._undo_enter(started)
            raise
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("operation started", extra={"operation_id": self.operation_id})
        return self

    async def _undo_enter(self, started: list[Any]) -> None:
        with self._backend.create_cancel_scope(shield=True):
            for source in reversed(started):
                try:
                    await source.stop_monitoring()
                except Exception:
                    logger.exception("hother.cancelable: stopping a source failed")
        self._cleanup_sync()
        self._set_status(_FAILED)
        self._scope = None

    def _cleanup_sync(self) -> None:
        self._release_token()  # the token hook and every link of the token (C)
        if self._registered:
            from .registry import OperationRegistry

            self._registered = False
            try:
                OperationRegistry.get_instance().unregister_sync(self.operation_id)
            except Exception:
                logger.exception("hother.cancelable: unregistering an operation failed")
        self._restore_current()  # the C fast enter keeps the previous value itself
        if self._cv_token is not None:
            try:
                _current_operation.reset(self._cv_token)
            except ValueError:
                # exited in another context (e.g. a generator finalised elsewhere)
                _current_operation.set(None)
            self._cv_token = None

    def _resolve_cancel_reason(self) -> tuple[CancellationReason, str | None]:
        """Why a native cancel exception ended the block (0.1 order, PARENT where knowable)."""
        if self._source_reason is not None:
            return self._source_reason
        if self._hook_reason is not None:
            return self._hook_reason
        tok = self._token_obj
        if tok is not None and tok.is_cancelled:
            return tok.reason or CancellationReason.MANUAL, tok.message
        scope = self._scope
        if scope is not None and scope.cancel_called:
            if self._timed_out or self._deadline_passed(scope):
                return CancellationReason.TIMEOUT, "Operation timed out"
            for source in self._sources:
                if getattr(source, "triggered", False):
                    return source.reason, None
            return CancellationReason.MANUAL, None
        ancestor = self.parent
        while ancestor is not None:
            anc_scope = ancestor._scope
            if anc_scope is not None and anc_scope.cancel_called:
                return (
                    CancellationReason.PARENT,
                    f"Parent operation {ancestor.operation_id[:8]} cancelled",
                )
            ancestor = ancestor.parent
        return CancellationReason.MANUAL, None

    def _deadline_passed(self, scope: Any) -> bool:
        reached = getattr(scope, "deadline_reached", None)
        if reached is not None:
            return bool(reached)
        deadline = scope.deadline
        return bool(deadline != math.inf and self._backend.current_time() >= deadline)

    async def _aexit_slow(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        """Exit on any backend (the C ``__aexit__`` calls this off its fast path)."""
        scope = self._scope
        backend = self._backend
        lazy_trio = self._trio_release()  # a trio block whose scope was never needed
        if (scope is None and not lazy_trio) or not self._entered:
            raise RuntimeError(
                "this Cancellable is not running: __aexit__ without a successful __aenter__"
            )
        scope_error: BaseException | None = None
        try:
            if scope is not None:
                scope.__exit__(exc_type, exc, tb)
        except BaseException as err:  # an out-of-order exit or an ExceptionGroup rest
            scope_error = err
        if isinstance(exc, GeneratorExit) and not _in_async_context():
            # the coroutine is being closed outside its loop (garbage collection, loop
            # closed): record the outcome, release everything, await nothing
            self._set_cancel(CancellationReason.MANUAL, "Closed before completion (GeneratorExit)")
            self._set_status(_CANCELLED)
            self._cleanup_sync()
            return False
        try:
            with backend.create_cancel_scope(shield=True):
                await self._finish(exc, backend)
        finally:
            self._cleanup_sync()
        if scope_error is not None and scope_error is not exc:
            raise scope_error
        return False

    async def _finish(self, exc: BaseException | None, backend: Any) -> None:
        try:
            if exc is None:
                self._set_status(_COMPLETED)
                if self._source_error is not None and self._error_callbacks:
                    await self._run_error_callbacks(self._source_error)
                if self._complete_callbacks:
                    ctx = self.context
                    for cb in list(self._complete_callbacks):
                        await _call(cb, ctx)
            elif isinstance(exc, CancellationError):
                self._set_cancel(exc.reason, exc.message)
                self._set_status(_CANCELLED)
                await self._run_cancel_callbacks()
            elif _is_cancel_exc(exc, backend.get_cancelled_exc_class()):
                reason, message = self._resolve_cancel_reason()
                self._set_cancel(reason, message)
                self._set_status(_CANCELLED)
                await self._run_cancel_callbacks()
            elif isinstance(exc, GeneratorExit):
                # an async generator closed by its consumer: stopped early, not failed
                self._set_cancel(
                    CancellationReason.MANUAL, "Closed before completion (GeneratorExit)"
                )
                self._set_status(_CANCELLED)
                await self._run_cancel_callbacks()
            else:
                self._set_error(str(exc))
                self._set_status(_FAILED)
                if isinstance(exc, Exception):
                    await self._run_error_callbacks(exc)
        finally:
            for source in reversed(self._sources):
                try:
                    await source.stop_monitoring()
                except Exception:
                    logger.exception("hother.cancelable: stopping a source failed")
            for shield_scope in self._shields:
                shield_scope.cancel()
            self._shields.clear()
        if logger.isEnabledFor(logging.DEBUG):
            self._log_finished()

    def _log_finished(self) -> None:
        logger.debug(
            "operation finished",
            extra={
                "operation_id": self.operation_id,
                "status": self.status.value,
                "cancel_reason": self._cancel_reason.value if self._cancel_reason else None,
            },
        )

    async def _run_cancel_callbacks(self) -> None:
        if self._cancel_callbacks:
            ctx = self.context
            for cb in list(self._cancel_callbacks):
                await _call(cb, ctx)

    async def _run_error_callbacks(self, error: BaseException) -> None:
        if self._error_callbacks:
            ctx = self.context
            for cb in list(self._error_callbacks):
                await _call(cb, ctx, error)

    # ------------------------------------------------------------------ cancellation
    def _cancel_children(self) -> None:
        msg = f"Parent operation {self.operation_id[:8]} cancelled"
        for child in list(self._children):
            if not child.is_cancelled:
                child.cancel_sync(CancellationReason.PARENT, msg, propagate_to_children=True)

    async def cancel(
        self,
        reason: CancellationReason = CancellationReason.MANUAL,
        message: str | None = None,
        propagate_to_children: bool = True,
    ) -> None:
        """Cancel the operation (and, by default, its children) with ``reason``.

        The state change and the propagation to the running scope and to children happen
        synchronously, before any await; async token callbacks are then awaited, shielded.
        Safe to call from inside the operation's own block.
        """
        if not isinstance(reason, CancellationReason):
            raise TypeError(f"reason must be a CancellationReason, not {type(reason).__name__}")
        _check_str(message, "message")
        _check_bool(propagate_to_children, "propagate_to_children")
        await self._token.cancel(reason, message)
        if propagate_to_children:
            self._cancel_children()
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "operation cancel requested",
                extra={"operation_id": self.operation_id, "reason": reason.value},
            )

    def cancel_sync(
        self,
        reason: CancellationReason = CancellationReason.MANUAL,
        message: str | None = None,
        propagate_to_children: bool = True,
    ) -> bool:
        """Thread-safe :meth:`cancel`: callable from any thread or from sync code.

        Returns ``True`` if this call cancelled the operation's token (first call wins).
        """
        if not isinstance(reason, CancellationReason):
            raise TypeError(f"reason must be a CancellationReason, not {type(reason).__name__}")
        _check_str(message, "message")
        _check_bool(propagate_to_children, "propagate_to_children")
        won = self._token.cancel_sync(reason, message)
        if propagate_to_children:
            self._cancel_children()
        return bool(won)

    # ------------------------------------------------------------------ helpers
    async def stream(
        self,
        async_iter: AsyncIterator[T],
        report_interval: int | None = None,
        buffer_partial: bool = True,
    ) -> AsyncIterator[T]:
        """Yield the items of ``async_iter``, checking for cancellation before each one.

        Progress is reported every ``report_interval`` items; the items seen so far are
        kept in ``context.partial_result`` (last 1000 when ``buffer_partial``).
        """
        if not hasattr(async_iter, "__aiter__") and not hasattr(async_iter, "__anext__"):
            raise TypeError(
                f"async_iter must be an async iterable, not {type(async_iter).__name__}"
            )
        if report_interval is not None and (
            isinstance(report_interval, bool)
            or not isinstance(report_interval, int)
            or report_interval <= 0
        ):
            raise ValueError(
                f"report_interval must be a positive int or None, got {report_interval!r}"
            )
        _check_bool(buffer_partial, "buffer_partial")
        count = 0
        buffer: list[T] | None = [] if buffer_partial else None
        iterator = async_iter.__aiter__() if hasattr(async_iter, "__aiter__") else async_iter
        try:
            async for item in iterator:
                if self._token_obj is not None and self._token_obj.is_cancelled:
                    await self._token_obj.check_async()
                yield item
                count += 1
                if buffer is not None:
                    buffer.append(item)
                    if len(buffer) > 1000:
                        del buffer[0]
                if report_interval and count % report_interval == 0:
                    await self.report_progress(
                        f"Processed {count} items", {"count": count, "latest_item": item}
                    )
        except GeneratorExit:
            raise
        except BaseException as exc:
            cancel_cls = (self._backend or _backend()).get_cancelled_exc_class()
            if isinstance(exc, cancel_cls):
                self._set_partial_result({"count": count, "buffer": buffer})
            elif isinstance(exc, Exception):
                self._set_partial_result({"count": count, "buffer": buffer, "completed": False})
            raise
        else:
            if buffer_partial or count > 0:
                self._set_partial_result({"count": count, "buffer": buffer, "completed": True})

    def wrap(self, func: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
        """An async wrapper that runs ``func`` inside this operation.

        The operation is single use, so the wrapper can be called once; a function with a
        ``cancellable`` parameter receives the instance (unless the caller passed one).
        """
        _check_callable(func, "func")
        try:
            has_param = "cancellable" in inspect.signature(func).parameters
        except (TypeError, ValueError):
            has_param = False

        @functools.wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> R:
            if has_param and "cancellable" not in kwargs:
                kwargs["cancellable"] = self
            async with self:
                return await func(*args, **kwargs)

        return wrapper

    @asynccontextmanager
    async def shield(self) -> AsyncIterator[Cancellable]:
        """Run the block protected from every outer cancellation.

        Yields a never-entered handle operation (status SHIELDED). After the block completes,
        one checkpoint delivers a cancellation that became pending meanwhile.
        """
        handle = Cancellable(name=f"{self._name}_shielded", metadata={"shielded": True})
        handle._parent_id = self.operation_id
        handle._set_status(_SHIELDED)
        backend = self._backend or _backend()
        scope = backend.create_cancel_scope(shield=True)
        self._shields.append(scope)
        try:
            with scope:
                yield handle
        finally:
            if scope in self._shields:
                self._shields.remove(scope)
        await backend.sleep(0)

    async def run_in_thread(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``func(*args, **kwargs)`` in a worker thread with this operation current.

        Works on asyncio and trio. The context variables of the caller are visible in the
        thread and do not leak into the pooled worker afterwards. A cancellation of the
        awaiting task does not stop the thread.
        """
        _check_callable(func, "func")
        ctx = contextvars.copy_context()
        ctx.run(_current_operation.set, self)
        backend = self._backend or _backend()
        return await backend.run_sync_in_thread(ctx.run, func, *args, **kwargs)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return (
            f"Cancellable(id={self.operation_id[:8]}, name={self._name!r}, "
            f"status={self.status.value})"
        )


def _asyncio_backend() -> Any:
    from ..backends import get_backend

    return get_backend("asyncio")


def _anyio_backend() -> Any:
    from ..backends import get_backend

    return get_backend("anyio")


async def _trio_deadline_service(deadlines: Any) -> None:
    """One system task per trio run: cancels ``with_timeout`` operations at their deadline.

    The C fast path keeps the deadlines of the run in ``deadlines`` (a heap, see
    ``TrioDeadlines`` in _ext/cancellable.c) and gives its trio scope none,
    which saves trio's own per-block deadline bookkeeping. This task sleeps in a scope whose
    deadline is the earliest one; the engine moves it earlier when an earlier deadline comes.
    """
    import trio

    try:
        while True:
            with trio.CancelScope(deadline=deadlines._next()) as scope:
                deadlines._set_waker(scope, scope.deadline)
                await trio.sleep_forever()
            deadlines._set_waker(None, math.inf)
            deadlines._fire(trio.current_time())
    finally:
        deadlines._close()


_TRIO_SERVICE_NAME = "hother.cancelable: with_timeout deadlines"

_attach_protected: Any = None


def _trio_lazy_check() -> bool:
    """Whether trio's internals are the ones :func:`_trio_attach_scope` relies on (else the
    fast path enters ``trio.CancelScope`` eagerly)."""
    try:
        from trio._core import _run
    except ImportError:
        return False
    status_cls = getattr(_run, "CancelStatus", None)
    task_cls = getattr(_run, "Task", None)
    scope_cls = getattr(_run, "CancelScope", None)
    slots = set(getattr(status_cls, "__slots__", ()))
    return (
        status_cls is not None
        and {"_scope", "_parent", "_children", "_tasks"} <= slots
        and callable(getattr(task_cls, "_activate_cancel_status", None))
        and {"_cancel_status", "_has_been_entered"} <= set(getattr(scope_cls, "__slots__", ()))
        and hasattr(_run, "GLOBAL_RUN_CONTEXT")
    )


def _trio_attach_scope(task: Any, parent: Any, outer: Any) -> Any:
    """Give a running trio fast-path block its ``trio.CancelScope``, after the fact.

    The C fast path enters no trio scope: it records the block's task and the task's
    ``CancelStatus`` at enter (``parent``). When the block needs a scope (a cancel, its
    deadline, ``op.scope``), this makes a ``trio.CancelScope`` whose ``CancelStatus`` goes
    between ``parent`` and what the block entered since (or the task itself): where entering
    the scope at the start of the block would have put it. From then on it is an ordinary
    entered trio scope. ``outer``: the scope an enclosing fast block (same ``parent``) got
    after this block was entered; this block's status then goes under it.
    """
    global _attach_protected
    if _attach_protected is None:
        import trio

        _attach_protected = trio.lowlevel.enable_ki_protection(_attach_scope)
    return _attach_protected(task, parent, outer)


def _attach_scope(task: Any, parent: Any, outer: Any) -> Any:
    import trio
    from trio._core._run import GLOBAL_RUN_CONTEXT, CancelStatus

    if getattr(GLOBAL_RUN_CONTEXT, "runner", None) is not task._runner:
        raise RuntimeError(
            "the cancel scope of a running trio operation can only be made in the thread of "
            "its trio run"
        )
    if outer is not None and outer._cancel_status is not None:
        parent = outer._cancel_status
    below = _status_below(task, parent)
    if below is _NOT_ABOVE:
        # TaskStatus.started() moved the task's statuses from the start nursery's status to
        # the status of the nursery the task now runs in
        nursery = task._parent_nursery
        moved = nursery._cancel_status if nursery is not None else None
        below = _status_below(task, moved) if moved is not None else _NOT_ABOVE
        if below is _NOT_ABOVE:
            raise RuntimeError("the trio cancel status this operation was entered in is gone")
        parent = moved
    scope = trio.CancelScope()
    status = None
    try:
        status = CancelStatus(scope=scope, parent=parent)
        scope._cancel_status = status
        scope._has_been_entered = True
        if below is None:
            task._activate_cancel_status(status)
        else:
            below.parent = status
    except BaseException:
        _undo_attach(task, parent, below, scope, status)
        raise
    return scope


def _undo_attach(task: Any, parent: Any, below: Any, scope: Any, status: Any) -> None:
    """Put trio's status tree back as it was before an attach that failed midway (memory
    ran out in one of trio's set operations): nothing of the half-made scope stays in it."""
    if status is None:  # the constructor failed, maybe after adding itself to the parent
        for child in list(parent._children):
            if child._scope is scope:
                status = child
    if status is None:
        return
    if task._cancel_status is status:
        status._tasks.discard(task)
        task._cancel_status = parent
        parent._tasks.add(task)
    if below is not None and below._parent is status:
        status._children.discard(below)
        below._parent = parent
        parent._children.add(below)
    parent._children.discard(status)
    status._parent = None


_NOT_ABOVE = object()


def _status_below(task: Any, parent: Any) -> Any:
    """The status on ``task``'s chain whose parent is ``parent`` (None: the task sits at
    ``parent`` itself; _NOT_ABOVE: ``parent`` is not on the chain)."""
    below = None
    status = task._cancel_status
    while status is not None:
        if status is parent:
            return below
        below, status = status, status._parent
    return _NOT_ABOVE


def _start_trio_deadlines(deadlines: Any, runner: Any) -> None:
    import trio

    try:
        trio.lowlevel.spawn_system_task(_trio_deadline_service, deadlines, name=_TRIO_SERVICE_NAME)
    except BaseException:
        _unstick_service_task()
        raise
    _trio_run_state[runner] = deadlines


def _unstick_service_task() -> None:
    """A failed ``spawn_system_task`` (MemoryError) can leave the task registered in the
    system nursery but never scheduled: the run would wait for it forever at its end.
    Schedule such a task so that it runs (and ends with the run)."""
    import trio

    root = trio.lowlevel.current_root_task()
    if root is None:
        return
    try:
        for nursery in root.child_nurseries:
            for task in nursery.child_tasks:
                if task.name != _TRIO_SERVICE_NAME or task.coro.cr_frame is None:
                    continue
                if task.coro.cr_frame.f_lasti >= 0 and task.coro.cr_running:
                    continue
                try:
                    # a new coroutine's first send is None itself, as spawn_impl passes it
                    trio.lowlevel.reschedule(task, None)  # type: ignore[arg-type]
                except AssertionError:
                    pass  # already scheduled (or running): nothing to do
    except Exception:  # best effort under memory pressure
        pass


_trio_run_state: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _hand_over_to_engine() -> None:
    import os
    import threading
    import weakref as _weakref

    import sniffio

    from ..backends import detection
    from ..sources.timeout import TimeoutSource, validate_timeout

    _engine._set_classes(
        {
            "pending": _PENDING,
            "running": _RUNNING,
            "completed": _COMPLETED,
            "cancelled": _CANCELLED,
            "failed": _FAILED,
            "reason_timeout": CancellationReason.TIMEOUT,
            "reason_manual": CancellationReason.MANUAL,
            "LinkedCancellationToken": LinkedCancellationToken,
            "TimeoutSource": TimeoutSource,
            "CancellationError": CancellationError,
            "WeakSet": _weakref.WeakSet,
            "validate_timeout": validate_timeout,
            "asyncio_backend": _asyncio_backend,
            "anyio_backend": _anyio_backend,
            "datetime_fromtimestamp": datetime.fromtimestamp,
            "utc": UTC,
            "debug_enabled": logger.isEnabledFor,
            "logger_cache": logger._cache,  # type: ignore[attr-defined]
            "backend_override": detection._override,
            "sniffio_local": sniffio.thread_local,
            "sniffio_cvar": sniffio.current_async_library_cvar,
            # the mapping os.environ reads and writes (keys and values encoded), and the key
            # of the backend variable in it: one dict lookup per enter
            "environ_data": os.environ._data,  # type: ignore[attr-defined]
            "environ_key": os.environ.encodekey(detection.ENV_VAR),
            "trio_deadline_start": _start_trio_deadlines,
            "trio_run_state": _trio_run_state,
            "trio_attach": _trio_attach_scope,
            "trio_lazy_check": _trio_lazy_check,
        }
    )
    del threading


_hand_over_to_engine()
