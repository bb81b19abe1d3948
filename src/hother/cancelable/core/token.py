"""Cancellation tokens: a shareable, one-shot, thread-safe cancellation flag with notification.

:class:`CancellationToken` is built on the C core ``hother.cancelable._engine.TokenCore``:

* the state change is one atomic transition: exactly one caller wins, whether it calls
  :meth:`~CancellationToken.cancel` from async code or :meth:`~CancellationToken.cancel_sync`
  from any thread (plain threads, signal handlers) -- callbacks run exactly once (0.1 could
  run them twice, §14.9);
* propagation is synchronous: reason, message and ``cancelled_at`` are published, linked
  tokens are cancelled and every callback is started before ``cancel()`` first yields (§14.10);
* each callback runs on the event loop (or trio run) it was registered from: at once when the
  canceller runs there, otherwise scheduled thread-safely with ``loop.call_soon_threadsafe`` /
  ``TrioToken.run_sync_soon``. No bridge has to be started (§14.7, §14.8);
* a fresh token costs one small object: its id (a uuid4 string) is created on first read.

Differences from 0.1 (fixes, see API.md §14): a token constructed with ``is_cancelled=True``
is cancelled for every purpose (``wait_for_cancel()`` returns at once); :meth:`check` raises a
:class:`~.exceptions.CancellationError` carrying the real reason (``ManualCancellation`` only
for MANUAL); callbacks may be sync or async; every management method has a sync counterpart.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Literal

from .. import _engine
from ..backends.detection import NoAsyncContextError
from .exceptions import CancellationError, ManualCancellation
from .models import CancellationReason

__all__ = ["CancellationToken", "LinkedCancellationToken", "TokenCallback"]

logger = logging.getLogger(__name__)

#: A token callback: called with the token; may return an awaitable (async callbacks).
TokenCallback = Callable[["CancellationToken"], Awaitable[Any] | None]
"""A token callback: ``callback(token)``, sync or async (its awaitable is awaited)."""

_DEFAULT_MESSAGE = "Operation cancelled via token"


def _log_engine_error(where: str, exc: BaseException) -> None:
    """Log an exception the engine had to swallow (a raising callback, a closed loop...)."""
    logger.error("%s", where, exc_info=(type(exc), exc, exc.__traceback__))


_engine._set_reason_type(CancellationReason)
_engine._set_error_handler(_log_engine_error)


def _identity(value: Any) -> Any:
    return value


def _noop() -> None:
    pass


def _wake_current_loop() -> None:
    """Wake the event loop of this thread, if any, so that callbacks scheduled by a
    ``cancel_sync`` called from a signal handler (between bytecodes of a loop blocked in its
    selector) run now instead of at the next unrelated wake-up."""
    executor = _engine.capture_executor()
    if executor is None:
        return
    try:
        if isinstance(executor, asyncio.AbstractEventLoop):
            executor.call_soon_threadsafe(_noop)
        else:
            executor.run_sync_soon(_noop)
    except Exception:  # closed loop / finished run: nothing to wake
        pass


class CancellationToken(_engine.TokenCore):
    """A shareable, one-shot cancellation flag with async notification.

    Construction keywords (all optional, as the 0.1 pydantic fields): ``id`` (str; a uuid4
    string by default), ``is_cancelled`` (bool), and -- only together with
    ``is_cancelled=True`` -- ``reason`` (:class:`CancellationReason` or None), ``message``
    (str or None) and ``cancelled_at`` (datetime; now by default). Bad types raise
    ``TypeError`` naming the argument.

    Read-only properties: ``id``, ``is_cancelled``, ``reason``, ``message``, ``cancelled_at``
    (an aware UTC datetime once cancelled).
    """

    __slots__ = ()

    # ------------------------------------------------------------------ cancelling
    async def cancel(
        self,
        reason: CancellationReason = CancellationReason.MANUAL,
        message: str | None = None,
    ) -> bool:
        """Cancel the token; return True if this call cancelled it (the first call wins).

        The state change, linked tokens and synchronous callbacks complete before this
        coroutine first yields. Async callbacks registered from this event loop are then
        awaited in registration order; an ``Exception`` from one is logged and swallowed.
        If the calling task is cancelled while awaiting them, the remaining ones are spawned
        as tasks (they still run) and the cancellation propagates.
        """
        result: tuple[bool, list[Awaitable[Any]]] = self._cancel(reason, message, True)
        won, pending = result
        done = 0  # the callbacks taken from `pending` so far
        try:
            if won and logger.isEnabledFor(logging.DEBUG):
                self._log_cancelled()
            while done < len(pending):
                awaitable = pending[done]
                done += 1
                try:
                    await awaitable
                except Exception:
                    logger.exception(
                        "token callback raised",
                        extra={"token_id": self.id, "reason": reason.value},
                    )
        except BaseException:
            # cancelled while awaiting, or anything else failing here (logging under memory
            # pressure): the callbacks not awaited yet still run, as tasks
            for rest in pending[done:]:
                _engine._run_hook(_identity, rest)
            raise
        return won

    def cancel_sync(
        self,
        reason: CancellationReason = CancellationReason.MANUAL,
        message: str | None = None,
    ) -> bool:
        """Cancel the token from any thread, or from sync code; True if this call won.

        Needs no setup: the state is visible at once, linked tokens are cancelled on this
        thread, and each callback runs on the loop it was registered from (directly when that
        is this thread's loop, else via ``call_soon_threadsafe`` / ``run_sync_soon``), so
        ``wait_for_cancel()`` waiters on any loop wake up. Async callbacks are spawned as
        tasks. Safe from a signal handler.
        """
        won: bool = self._cancel(reason, message)
        if won:
            if logger.isEnabledFor(logging.DEBUG):
                self._log_cancelled()
            _wake_current_loop()
        return won

    def _log_cancelled(self) -> None:
        reason = self.reason
        logger.debug(
            "token cancelled",
            extra={
                "token_id": self.id,
                "reason": reason.value if reason is not None else None,
                "cancel_message": self.message,
            },
        )

    # ------------------------------------------------------------------ waiting / checking
    async def wait_for_cancel(self) -> None:
        """Wait until the token is cancelled (return at once if it already is).

        Works on asyncio (any loop, uvloop included) and trio, whichever thread cancels.
        """
        if self.is_cancelled:
            return
        executor = _engine.capture_executor()
        if executor is None:
            raise NoAsyncContextError("wait_for_cancel() must be awaited inside asyncio or trio")
        if isinstance(executor, asyncio.AbstractEventLoop):
            future: asyncio.Future[None] = executor.create_future()

            def wake(_token: CancellationToken) -> None:
                if not future.done():
                    future.set_result(None)

            handle = self._add_hook(wake, executor=executor)
            try:
                await future
            finally:
                self._remove_hook(handle)
            return
        import trio

        event = trio.Event()
        handle = self._add_hook(lambda _token: event.set(), executor=executor)
        try:
            await event.wait()
        finally:
            self._remove_hook(handle)

    def _exception(self) -> CancellationError:
        message = self.message or _DEFAULT_MESSAGE
        reason = self.reason
        if reason is None or reason is CancellationReason.MANUAL:
            return ManualCancellation(message)
        return CancellationError(reason, message)

    def check(self) -> None:
        """Raise if the token is cancelled; no-op otherwise.

        Raises :class:`~.exceptions.ManualCancellation` for a MANUAL (or reason-less)
        cancellation and :class:`~.exceptions.CancellationError` with the real ``reason`` for
        the others (0.1 always raised ``ManualCancellation``, §14.15; ``ManualCancellation``
        is a ``CancellationError``, so ``except CancellationError`` catches both). The
        message is the token's message, or ``Operation cancelled via token``.
        """
        if self.is_cancelled:
            raise self._exception()

    async def check_async(self) -> None:
        """Raise the backend's cancellation if the token is cancelled; no-op otherwise.

        asyncio (and anyio on asyncio): raises ``asyncio.CancelledError(message)``.
        trio: ``trio.Cancelled`` cannot be constructed by user code, so this executes a
        checkpoint (an enclosing cancelled scope then delivers a genuine ``trio.Cancelled``);
        if the checkpoint returns, raises the same exception as :meth:`check`.
        Does not yield when the token is not cancelled.
        """
        if not self.is_cancelled:
            return
        executor = _engine.capture_executor()
        if executor is None or isinstance(executor, asyncio.AbstractEventLoop):
            raise asyncio.CancelledError(self.message or _DEFAULT_MESSAGE)
        import trio

        await trio.lowlevel.checkpoint()
        raise self._exception()

    def is_cancellation_requested(self) -> bool:
        """Return ``is_cancelled``."""
        return bool(self.is_cancelled)

    # ------------------------------------------------------------------ callbacks
    async def register_callback(self, callback: TokenCallback) -> None:
        """Call ``callback(token)`` when the token is cancelled (sync or async callable).

        The callback runs on this event loop. If the token is already cancelled it runs now
        and is awaited here; an ``Exception`` from it is logged, not raised.
        """
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        if not self.is_cancelled:
            # if another thread cancels in between, _add_hook dispatches the callback at once
            self._add_hook(callback)
            return
        try:
            result = callback(self)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("token callback raised", extra={"token_id": self.id})

    def register_callback_sync(self, callback: TokenCallback) -> None:
        """Sync counterpart of :meth:`register_callback` (usable from any thread).

        The callback runs on the event loop of the caller (or, called outside async code, in
        the thread that cancels). If the token is already cancelled it is dispatched at once
        (an async callback is spawned as a task).
        """
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        self._add_hook(callback)

    # ------------------------------------------------------------------ dunder / model API
    def __eq__(self, other: object) -> bool:
        if isinstance(other, CancellationToken):
            return bool(self.id == other.id)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    def __str__(self) -> str:
        if not self.is_cancelled:
            return f"CancellationToken(id={self.id[:8]}, active)"
        reason = self.reason
        return (
            f"CancellationToken(id={self.id[:8]}, "
            f"cancelled={reason.value if reason is not None else 'unknown'})"
        )

    def __repr__(self) -> str:
        reason = self.reason
        return (
            f"CancellationToken(id='{self.id}', is_cancelled={self.is_cancelled}, "
            f"reason={reason!s}, message='{self.message}')"
        )

    def model_dump(self, *, mode: Literal["python", "json"] | str = "python") -> dict[str, Any]:
        """The five public fields as a dict (``mode="json"``: enum value, ISO datetime)."""
        reason = self.reason
        cancelled_at = self.cancelled_at
        if mode == "json":
            return {
                "id": self.id,
                "is_cancelled": self.is_cancelled,
                "reason": reason.value if reason is not None else None,
                "message": self.message,
                "cancelled_at": cancelled_at.isoformat() if cancelled_at is not None else None,
            }
        if mode != "python":
            raise ValueError(f"mode must be 'python' or 'json', got {mode!r}")
        return {
            "id": self.id,
            "is_cancelled": self.is_cancelled,
            "reason": reason,
            "message": self.message,
            "cancelled_at": cancelled_at,
        }

    @classmethod
    def model_validate(cls, obj: Any) -> CancellationToken:
        """Build a token from :meth:`model_dump` output (either mode) or copy a token."""
        if isinstance(obj, CancellationToken):
            obj = obj.model_dump()
        if not isinstance(obj, Mapping):
            raise TypeError(f"obj must be a mapping or a token, got {type(obj).__name__}")
        unknown = set(obj) - {"id", "is_cancelled", "reason", "message", "cancelled_at"}
        if unknown:
            raise ValueError(f"obj has unknown token fields: {sorted(unknown)}")
        data = dict(obj)
        reason = data.get("reason")
        if isinstance(reason, str) and not isinstance(reason, CancellationReason):
            data["reason"] = CancellationReason(reason)
        cancelled_at = data.get("cancelled_at")
        if isinstance(cancelled_at, str):
            data["cancelled_at"] = datetime.fromisoformat(cancelled_at)
        return cls(**data)


class LinkedCancellationToken(CancellationToken):
    """A token that is also cancelled whenever one of the tokens it is linked to is.

    Linking is one-directional (cancelling this token never cancels its sources) and safe
    with cycles. Propagation is synchronous, on the thread that cancels the source. The
    source keeps only a weak reference to this token; this token keeps strong references
    to its sources (``_linked_tokens``).
    """

    __slots__ = ("_linked_tokens",)

    _linked_tokens: list[CancellationToken]

    async def link(self, token: CancellationToken, preserve_reason: bool = False) -> None:
        """Cancel this token whenever ``token`` is cancelled.

        The reason is PARENT with the message ``Linked token {id8} was cancelled``, or with
        ``preserve_reason=True`` the source's reason and message (the message falling back
        to the same text). An already-cancelled source cancels this token at once.
        """
        self.link_sync(token, preserve_reason)

    def link_sync(self, token: CancellationToken, preserve_reason: bool = False) -> None:
        """Sync counterpart of :meth:`link` (usable from any thread)."""
        if not isinstance(token, CancellationToken):
            raise TypeError(f"token must be a CancellationToken, got {type(token).__name__}")
        if not isinstance(preserve_reason, bool):
            raise TypeError(f"preserve_reason must be a bool, got {type(preserve_reason).__name__}")
        if token is self:
            raise ValueError("token: a token cannot be linked to itself")
        try:
            sources = self._linked_tokens
        except AttributeError:
            sources = self._linked_tokens = []
        sources.append(token)
        self._link_from(token, preserve_reason)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "token linked",
                extra={
                    "token_id": self.id,
                    "source_id": token.id,
                    "preserve_reason": preserve_reason,
                },
            )

    def unlink_sync(self, token: CancellationToken) -> bool:
        """Remove one link made by :meth:`link`/:meth:`link_sync`; False if there was none."""
        if not isinstance(token, CancellationToken):
            raise TypeError(f"token must be a CancellationToken, got {type(token).__name__}")
        try:
            sources = self._linked_tokens
        except AttributeError:
            return False
        for i in range(len(sources) - 1, -1, -1):
            if sources[i] is token:
                del sources[i]
                return bool(self._unlink_from(token))
        return False
