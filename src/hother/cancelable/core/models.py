"""Data models of an operation: its status, why it was cancelled, and its context record.

:class:`OperationContext` is a pydantic v2 model (the 0.1 public API) describing one
operation: identity, lifecycle status, timing, cancellation details and free metadata.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CancellationReason", "OperationContext", "OperationStatus"]

logger = logging.getLogger(__name__)


# (str, Enum) rather than StrEnum: str(member) must stay "OperationStatus.RUNNING" (0.1 API).
class OperationStatus(str, Enum):  # noqa: UP042
    """Lifecycle status of an operation (members compare equal to their string value)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"
    TIMEOUT = "timeout"
    SHIELDED = "shielded"


class CancellationReason(str, Enum):  # noqa: UP042
    """Why an operation was cancelled (members compare equal to their string value)."""

    TIMEOUT = "timeout"
    MANUAL = "manual"
    SIGNAL = "signal"
    CONDITION = "condition"
    PARENT = "parent"
    ERROR = "error"


_TERMINAL = frozenset(
    {
        OperationStatus.COMPLETED,
        OperationStatus.CANCELLED,
        OperationStatus.FAILED,
        OperationStatus.TIMEOUT,
    }
)
_CANCELLED = frozenset({OperationStatus.CANCELLED, OperationStatus.TIMEOUT})


def _coerce_status(status: object) -> OperationStatus:
    if isinstance(status, OperationStatus):
        return status
    if isinstance(status, str):
        try:
            return OperationStatus(status)
        except ValueError:
            raise ValueError(f"status must be an OperationStatus value, got {status!r}") from None
    raise TypeError(f"status must be an OperationStatus, got {type(status).__name__}")


def _new_id() -> str:
    """A random (version 4) UUID string, twice as fast as ``str(uuid.uuid4())``."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    x = b.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


_setattr = object.__setattr__


def _now() -> datetime:
    return datetime.now(UTC)


class OperationContext(BaseModel):
    """Record of one operation: identity, status, timing, cancellation details, metadata.

    Fields can be reassigned freely (no assignment validation). ``start_time`` is set when
    the model is created.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    id: str = Field(default_factory=_new_id)
    name: str | None = None
    status: OperationStatus = OperationStatus.PENDING
    start_time: datetime = Field(default_factory=_now)
    end_time: datetime | None = None
    cancel_reason: CancellationReason | None = None
    cancel_message: str | None = None
    error: str | None = None
    partial_result: Any | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    parent_id: str | None = None
    child_ids: set[str] = Field(default_factory=set)

    @classmethod
    def _fast(
        cls,
        id: str | None = None,
        name: str | None = None,
        metadata: dict[str, Any] | None = None,
        parent_id: str | None = None,
    ) -> OperationContext:
        """Build a PENDING context without validation (the caller guarantees the types).

        Used by :class:`~hother.cancelable.core.cancellable.Cancellable` on its hot path.
        The result is an ordinary model (dump, validate and copy work as usual).
        """
        self = cls.__new__(cls)
        _setattr(
            self,
            "__dict__",
            {
                "id": id if id is not None else _new_id(),
                "name": name,
                "status": OperationStatus.PENDING,
                "start_time": datetime.now(UTC),
                "end_time": None,
                "cancel_reason": None,
                "cancel_message": None,
                "error": None,
                "partial_result": None,
                "metadata": metadata if metadata is not None else {},
                "parent_id": parent_id,
                "child_ids": set(),
            },
        )
        fields_set = {"name", "metadata"}
        if id is not None:
            fields_set.add("id")
        if parent_id is not None:
            fields_set.add("parent_id")
        _setattr(self, "__pydantic_fields_set__", fields_set)
        _setattr(self, "__pydantic_extra__", None)
        _setattr(self, "__pydantic_private__", None)
        return self

    @property
    def duration(self) -> timedelta | None:
        """``end_time - start_time``; while RUNNING without an end, the time so far; else None."""
        if self.end_time is not None:
            return self.end_time - self.start_time
        if self.status == OperationStatus.RUNNING:
            return datetime.now(UTC) - self.start_time
        return None

    @property
    def duration_seconds(self) -> float | None:
        """:attr:`duration` in seconds (``0.0`` for a zero duration), or None."""
        d = self.duration
        return None if d is None else d.total_seconds()

    @property
    def is_terminal(self) -> bool:
        """True for COMPLETED, CANCELLED, FAILED and TIMEOUT."""
        return self.status in _TERMINAL

    @property
    def is_success(self) -> bool:
        """True only for COMPLETED."""
        return self.status == OperationStatus.COMPLETED

    @property
    def is_cancelled(self) -> bool:
        """True for CANCELLED and TIMEOUT."""
        return self.status in _CANCELLED

    def log_context(self) -> dict[str, Any]:
        """A flat dict describing this operation, suitable as logging ``extra``."""
        status = self.status
        reason = self.cancel_reason
        return {
            "operation_id": self.id,
            "operation_name": self.name,
            "status": status.value if isinstance(status, Enum) else status,
            "duration_seconds": self.duration_seconds,
            "parent_id": self.parent_id,
            "child_count": len(self.child_ids),
            "has_error": bool(self.error),
            "cancel_reason": reason.value if isinstance(reason, Enum) else reason,
        }

    def update_status(self, status: OperationStatus) -> None:
        """Set ``status``; a terminal status also sets ``end_time`` to now (UTC).

        Emits a DEBUG record ``status changed`` with the old and new status.
        """
        if not isinstance(status, OperationStatus):
            status = _coerce_status(status)
        old = self.status
        self.status = status
        if status in _TERMINAL:
            self.end_time = datetime.now(UTC)
        if logger.isEnabledFor(logging.DEBUG):
            extra = self.log_context()
            extra["old_status"] = old.value if isinstance(old, Enum) else old
            extra["new_status"] = status.value
            logger.debug("status changed", extra=extra)
