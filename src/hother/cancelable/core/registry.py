"""Process-wide registry of active operations, with a bounded history of finished ones.

:class:`OperationRegistry` is a thread-safe singleton. Active operations live in the C
:class:`~hother.cancelable._engine.RegistryTable` (a thread-safe str -> object table);
the bounded history is a list guarded by a :class:`threading.Lock`. No lock is bound to
an event loop, so the same registry serves asyncio, trio and plain threads at once.

Every async method has a synchronous, thread-safe twin (``get_operation_sync``, ...) for
code that is not running in an event loop (web framework threads, GUI callbacks, ...).
Listings return **snapshots** of the operation contexts, never the live objects.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from .._engine import RegistryTable
from .models import CancellationReason, OperationContext, OperationStatus

if TYPE_CHECKING:
    from .cancellable import Cancellable

__all__ = ["OperationRegistry"]

logger = logging.getLogger(__name__)

_DEFAULT_HISTORY_LIMIT = 1000


# ---------------------------------------------------------------------------- validation


def _check_id(value: object, what: str = "operation_id") -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    return value


def _check_optional_str(value: object, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{what} must be a str or None, got {type(value).__name__}")
    return value


def _check_status(value: object, what: str = "status") -> OperationStatus | None:
    if value is None or isinstance(value, OperationStatus):
        return value
    if isinstance(value, str):
        try:
            return OperationStatus(value)
        except ValueError:
            raise ValueError(
                f"{what} must be an OperationStatus or one of its values, got {value!r}"
            ) from None
    raise TypeError(f"{what} must be an OperationStatus or None, got {type(value).__name__}")


def _check_reason(value: object) -> CancellationReason:
    if not isinstance(value, CancellationReason):
        raise TypeError(f"reason must be a CancellationReason, got {type(value).__name__}")
    return value


def _check_context(operation: object) -> OperationContext:
    context = getattr(operation, "context", None)
    if not isinstance(context, OperationContext):
        raise TypeError(
            "operation must be a Cancellable (an object whose `context` is an "
            f"OperationContext), got {type(operation).__name__}"
        )
    return context


def _check_limit(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{what} must be >= 0, got {value}")
    return value


# ----------------------------------------------------------------------------- snapshots


def _snapshot(ctx: OperationContext) -> OperationContext:
    """A copy of ``ctx`` that shares no mutable container with it (partial_result aside)."""
    copy = ctx.model_copy()
    d = copy.__dict__
    d["metadata"] = dict(ctx.metadata)
    d["child_ids"] = set(ctx.child_ids)
    return copy


def _history_copy(ctx: OperationContext) -> OperationContext:
    """A deep copy of ``ctx`` for the history (a shallow snapshot if it cannot be deep-copied)."""
    try:
        return ctx.model_copy(deep=True)
    except Exception:  # e.g. metadata holding a lock or a socket
        logger.debug(
            "context cannot be deep-copied, recording a shallow snapshot",
            extra={"operation_id": ctx.id},
            exc_info=True,
        )
        return _snapshot(ctx)


def _utc(since: datetime) -> datetime:
    # A naive datetime is taken as local time (Python's convention), like astimezone() does.
    return since if since.tzinfo is not None else since.astimezone(UTC)


# ------------------------------------------------------------------------------ registry


class OperationRegistry:
    """Thread-safe singleton tracking active operations and a bounded history.

    ``OperationRegistry()`` and :meth:`get_instance` both return the single instance. Tests
    may reset it by assigning ``OperationRegistry._instance = None``. ``_history_limit``
    (default 1000) bounds the history; a new value applies from the next recording.
    """

    _instance: ClassVar[OperationRegistry | None] = None
    _instance_lock: ClassVar[threading.Lock] = threading.Lock()

    _operations: RegistryTable
    _lock: threading.Lock
    _history: list[OperationContext]
    _history_limit: int

    def __new__(cls) -> OperationRegistry:
        instance = cls._instance
        if instance is None:
            with cls._instance_lock:
                instance = cls._instance
                if instance is None:
                    instance = super().__new__(cls)
                    instance._setup()
                    cls._instance = instance
        return instance

    def _setup(self) -> None:
        self._operations = RegistryTable()
        self._lock = threading.Lock()
        self._history = []
        self._history_limit = _DEFAULT_HISTORY_LIMIT

    @classmethod
    def get_instance(cls) -> OperationRegistry:
        """Return the process-wide registry (created on first use, thread-safely)."""
        instance = cls._instance
        if instance is not None:
            return instance
        return cls()

    def _record(self, contexts: list[OperationContext]) -> None:
        """Append to the history and trim it to the most recent ``_history_limit`` entries."""
        if not contexts:
            return
        with self._lock:
            history = self._history
            history.extend(contexts)
            excess = len(history) - max(0, self._history_limit)
            if excess > 0:
                del history[:excess]

    # -- registration ---------------------------------------------------------------

    def register_sync(self, operation: Cancellable) -> None:
        """Track ``operation`` under its ``context.id`` (a later one with the same id wins)."""
        ctx = _check_context(operation)
        op_id = _check_id(ctx.id, "operation.context.id")
        self._operations.set(op_id, operation)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("operation registered", extra=ctx.log_context())

    async def register(self, operation: Cancellable) -> None:
        """Track ``operation`` under its ``context.id`` (a later one with the same id wins)."""
        self.register_sync(operation)

    def unregister_sync(self, operation_id: str) -> None:
        """Stop tracking ``operation_id`` and record a copy of its context in the history.

        An unknown id is ignored.
        """
        op = self._operations.pop(_check_id(operation_id))
        if op is None:
            return
        ctx: OperationContext = op.context
        self._record([_history_copy(ctx)])
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("operation unregistered", extra=ctx.log_context())

    async def unregister(self, operation_id: str) -> None:
        """Stop tracking ``operation_id`` and record a copy of its context in the history.

        An unknown id is ignored.
        """
        self.unregister_sync(operation_id)

    # -- lookup ---------------------------------------------------------------------

    def get_operation_sync(self, operation_id: str) -> Cancellable | None:
        """The active operation with this id, or None (thread-safe)."""
        op: Cancellable | None = self._operations.get(_check_id(operation_id))
        return op

    async def get_operation(self, operation_id: str) -> Cancellable | None:
        """The active operation with this id, or None."""
        return self.get_operation_sync(operation_id)

    def _active(self) -> list[Cancellable]:
        ops: list[Cancellable] = self._operations.values()
        return ops

    def list_operations_sync(
        self,
        status: OperationStatus | None = None,
        parent_id: str | None = None,
        name_pattern: str | None = None,
    ) -> list[OperationContext]:
        """Snapshots of the active operations' contexts, oldest first (thread-safe).

        Filters (each ignored when falsy): exact ``status``, exact ``parent_id``, and a
        case-insensitive substring ``name_pattern`` of the name (unnamed operations never
        match a pattern). The returned contexts are copies: changing them changes nothing.
        """
        status = _check_status(status)
        parent_id = _check_optional_str(parent_id, "parent_id")
        pattern = _check_optional_str(name_pattern, "name_pattern")
        needle = pattern.lower() if pattern else None
        result: list[OperationContext] = []
        for op in self._active():
            ctx = op.context
            if status and ctx.status != status:
                continue
            if parent_id and ctx.parent_id != parent_id:
                continue
            if needle is not None and (not ctx.name or needle not in ctx.name.lower()):
                continue
            result.append(_snapshot(ctx))
        result.sort(key=lambda c: c.start_time)
        return result

    async def list_operations(
        self,
        status: OperationStatus | None = None,
        parent_id: str | None = None,
        name_pattern: str | None = None,
    ) -> list[OperationContext]:
        """Snapshots of the active operations' contexts, oldest first.

        See :meth:`list_operations_sync` for the filters.
        """
        return self.list_operations_sync(status, parent_id, name_pattern)

    # -- cancellation ---------------------------------------------------------------

    def _unknown(self, operation_id: str) -> None:
        logger.warning(
            "cannot cancel unknown operation %s", operation_id, extra={"operation_id": operation_id}
        )

    async def cancel_operation(
        self,
        operation_id: str,
        reason: CancellationReason = CancellationReason.MANUAL,
        message: str | None = None,
    ) -> bool:
        """Cancel the active operation ``operation_id`` (and its children).

        Returns True if it was found, False (with a warning log) for an unknown id.
        """
        _check_reason(reason)
        _check_optional_str(message, "message")
        op = self.get_operation_sync(operation_id)
        if op is None:
            self._unknown(operation_id)
            return False
        await op.cancel(reason, message)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "operation cancelled through the registry",
                extra={"operation_id": operation_id, "cancel_reason": reason.value},
            )
        return True

    def cancel_operation_sync(
        self,
        operation_id: str,
        reason: CancellationReason = CancellationReason.MANUAL,
        message: str | None = None,
    ) -> bool:
        """Thread-safe :meth:`cancel_operation`: uses the operation's ``cancel_sync``.

        Callable from any thread; the operation's event loop is woken to deliver the
        cancellation. Returns True if the operation was found.
        """
        _check_reason(reason)
        _check_optional_str(message, "message")
        op = self.get_operation_sync(operation_id)
        if op is None:
            self._unknown(operation_id)
            return False
        op.cancel_sync(reason, message)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "operation cancelled through the registry (sync)",
                extra={"operation_id": operation_id, "cancel_reason": reason.value},
            )
        return True

    def _targets(self, status: OperationStatus | None) -> list[Cancellable]:
        ops = self._active()
        if status:
            ops = [op for op in ops if op.context.status == status]
        return ops

    def _cancel_failed(self, op: Cancellable) -> None:
        logger.error(
            "failed to cancel operation %s",
            op.context.id,
            extra={"operation_id": op.context.id},
            exc_info=True,
        )

    async def cancel_all(
        self,
        status: OperationStatus | None = None,
        reason: CancellationReason = CancellationReason.MANUAL,
        message: str | None = None,
    ) -> int:
        """Cancel every active operation (only those in ``status`` if given).

        The message defaults to ``"Bulk cancellation"``. A failing cancel is logged and
        skipped. Returns how many operations were cancelled.
        """
        status = _check_status(status)
        _check_reason(reason)
        _check_optional_str(message, "message")
        text = message or "Bulk cancellation"
        count = 0
        for op in self._targets(status):
            try:
                await op.cancel(reason, text)
            except Exception:
                self._cancel_failed(op)
            else:
                count += 1
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "bulk cancellation", extra={"cancelled_count": count, "cancel_reason": reason.value}
            )
        return count

    def cancel_all_sync(
        self,
        status: OperationStatus | None = None,
        reason: CancellationReason = CancellationReason.MANUAL,
        message: str | None = None,
    ) -> int:
        """Thread-safe :meth:`cancel_all` (uses each operation's ``cancel_sync``)."""
        status = _check_status(status)
        _check_reason(reason)
        _check_optional_str(message, "message")
        text = message or "Bulk cancellation"
        count = 0
        for op in self._targets(status):
            try:
                op.cancel_sync(reason, text)
            except Exception:
                self._cancel_failed(op)
            else:
                count += 1
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "bulk cancellation (sync)",
                extra={"cancelled_count": count, "cancel_reason": reason.value},
            )
        return count

    # -- history --------------------------------------------------------------------

    def get_history_sync(
        self,
        limit: int | None = None,
        status: OperationStatus | None = None,
        since: datetime | None = None,
    ) -> list[OperationContext]:
        """Finished operations, oldest first (thread-safe).

        Filtered by exact ``status`` and by ``end_time >= since`` (entries without an end
        time are excluded when ``since`` is given; a naive ``since`` is local time), then
        the last ``limit`` entries (None or 0: all). Returns copies.
        """
        if limit is not None:
            limit = _check_limit(limit, "limit")
        status = _check_status(status)
        if since is not None and not isinstance(since, datetime):
            raise TypeError(f"since must be a datetime or None, got {type(since).__name__}")
        with self._lock:
            entries = list(self._history)
        if status:
            entries = [c for c in entries if c.status == status]
        if since is not None:
            cutoff = _utc(since)
            entries = [c for c in entries if c.end_time is not None and c.end_time >= cutoff]
        if limit:
            entries = entries[-limit:]
        return [_snapshot(c) for c in entries]

    async def get_history(
        self,
        limit: int | None = None,
        status: OperationStatus | None = None,
        since: datetime | None = None,
    ) -> list[OperationContext]:
        """Finished operations, oldest first; see :meth:`get_history_sync`."""
        return self.get_history_sync(limit, status, since)

    def cleanup_completed_sync(
        self, older_than: timedelta | None = None, keep_failed: bool = True
    ) -> int:
        """Move finished (terminal) active operations into the history (thread-safe).

        FAILED ones stay when ``keep_failed``. With ``older_than``, operations that ended
        more recently than ``now - older_than`` stay (those without an end time are moved
        regardless). Returns how many were moved.
        """
        if older_than is not None and not isinstance(older_than, timedelta):
            raise TypeError(
                f"older_than must be a timedelta or None, got {type(older_than).__name__}"
            )
        if not isinstance(keep_failed, bool):
            raise TypeError(f"keep_failed must be a bool, got {type(keep_failed).__name__}")
        cutoff = datetime.now(UTC) - older_than if older_than is not None else None
        moved: list[OperationContext] = []
        for op in self._active():
            ctx = op.context
            if not ctx.is_terminal:
                continue
            if keep_failed and ctx.status == OperationStatus.FAILED:
                continue
            if cutoff is not None and ctx.end_time is not None and ctx.end_time > cutoff:
                continue
            if self._operations.discard(ctx.id, op):
                moved.append(_history_copy(ctx))
        self._record(moved)
        if moved and logger.isEnabledFor(logging.DEBUG):
            logger.debug("cleaned up finished operations", extra={"cleaned_count": len(moved)})
        return len(moved)

    async def cleanup_completed(
        self, older_than: timedelta | None = None, keep_failed: bool = True
    ) -> int:
        """Move finished active operations into the history; see :meth:`cleanup_completed_sync`."""
        return self.cleanup_completed_sync(older_than, keep_failed)

    # -- statistics / reset ---------------------------------------------------------

    def get_statistics_sync(self) -> dict[str, Any]:
        """Counts of active and historical operations by status (thread-safe).

        Keys: ``active_operations``, ``active_by_status``, ``history_size``,
        ``history_by_status``, ``average_duration_seconds`` (mean duration of the COMPLETED
        history entries with a non-zero duration; 0.0 if none) and ``total_completed``.
        """
        active_by_status: dict[str, int] = {}
        active = self._active()
        for op in active:
            key = op.context.status.value
            active_by_status[key] = active_by_status.get(key, 0) + 1
        with self._lock:
            history = list(self._history)
        history_by_status: dict[str, int] = {}
        durations: list[float] = []
        completed = 0
        for ctx in history:
            key = ctx.status.value
            history_by_status[key] = history_by_status.get(key, 0) + 1
            if ctx.status == OperationStatus.COMPLETED:
                completed += 1
                seconds = ctx.duration_seconds
                if seconds:
                    durations.append(seconds)
        return {
            "active_operations": len(active),
            "active_by_status": active_by_status,
            "history_size": len(history),
            "history_by_status": history_by_status,
            "average_duration_seconds": sum(durations) / len(durations) if durations else 0.0,
            "total_completed": completed,
        }

    async def get_statistics(self) -> dict[str, Any]:
        """Counts of active and historical operations; see :meth:`get_statistics_sync`."""
        return self.get_statistics_sync()

    def clear_all_sync(self) -> None:
        """Forget every active operation and the whole history (thread-safe)."""
        removed = self._operations.clear()
        with self._lock:
            history_size = len(self._history)
            self._history.clear()
        logger.warning(
            "registry cleared",
            extra={"cleared_active": len(removed), "cleared_history": history_size},
        )

    async def clear_all(self) -> None:
        """Forget every active operation and the whole history."""
        self.clear_all_sync()
