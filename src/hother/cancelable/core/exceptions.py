"""Exceptions describing why an operation was cancelled.

All derive from :class:`Exception` (not from the backend cancel exception) and
``str(exc) == exc.message``. They pickle and copy faithfully.
"""

from __future__ import annotations

from typing import Any

from .models import CancellationReason, OperationContext

__all__ = [
    "CancellationError",
    "ConditionCancellation",
    "ManualCancellation",
    "ParentCancellation",
    "SignalCancellation",
    "TimeoutCancellation",
]


def _check_message(message: object) -> str | None:
    if message is not None and not isinstance(message, str):
        raise TypeError(f"message must be a str or None, got {type(message).__name__}")
    return message


def _check_context(context: object) -> OperationContext | None:
    if context is not None and not isinstance(context, OperationContext):
        raise TypeError(
            f"context must be an OperationContext or None, got {type(context).__name__}"
        )
    return context


def _check_reason(reason: object, what: str = "reason") -> CancellationReason:
    if not isinstance(reason, CancellationReason):
        raise TypeError(f"{what} must be a CancellationReason, got {type(reason).__name__}")
    return reason


class CancellationError(Exception):
    """Base class of the cancellation exceptions.

    Attributes: ``reason`` (:class:`CancellationReason`), ``message`` (``str(exc)``) and
    ``context`` (the :class:`OperationContext` of the cancelled operation, or None).
    """

    reason: CancellationReason
    message: str
    context: OperationContext | None

    def __init__(
        self,
        reason: CancellationReason,
        message: str | None = None,
        context: OperationContext | None = None,
    ) -> None:
        self._setup(
            _check_reason(reason),
            _check_message(message),
            f"Operation cancelled: {reason.value}",
            context,
        )

    def _setup(
        self,
        reason: CancellationReason,
        message: str | None,
        default: str,
        context: object,
    ) -> None:
        self.reason = reason
        self.message = message if message is not None else default
        self.context = _check_context(context)
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message

    def _init_args(self) -> tuple[Any, ...]:
        return (self.reason, self.message, self.context)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self._init_args(), self.__dict__)


class TimeoutCancellation(CancellationError):
    """The operation ran past its deadline (reason TIMEOUT). Attribute ``timeout_seconds``."""

    timeout_seconds: float

    def __init__(
        self,
        timeout_seconds: float,
        message: str | None = None,
        context: OperationContext | None = None,
    ) -> None:
        if isinstance(timeout_seconds, bool) or not isinstance(timeout_seconds, int | float):
            raise TypeError(
                f"timeout_seconds must be a number, got {type(timeout_seconds).__name__}"
            )
        self.timeout_seconds = timeout_seconds
        self._setup(
            CancellationReason.TIMEOUT,
            _check_message(message),
            f"Operation timed out after {timeout_seconds}s",
            context,
        )

    def _init_args(self) -> tuple[Any, ...]:
        return (self.timeout_seconds, self.message, self.context)


class ManualCancellation(CancellationError):
    """The operation was cancelled explicitly (reason MANUAL)."""

    def __init__(self, message: str | None = None, context: OperationContext | None = None) -> None:
        self._setup(
            CancellationReason.MANUAL,
            _check_message(message),
            "Operation cancelled manually",
            context,
        )

    def _init_args(self) -> tuple[Any, ...]:
        return (self.message, self.context)


class SignalCancellation(CancellationError):
    """An OS signal cancelled the operation (reason SIGNAL). Attribute ``signal_number``."""

    signal_number: int

    def __init__(
        self,
        signal_number: int,
        message: str | None = None,
        context: OperationContext | None = None,
    ) -> None:
        if isinstance(signal_number, bool) or not isinstance(signal_number, int):
            raise TypeError(f"signal_number must be an int, got {type(signal_number).__name__}")
        self.signal_number = signal_number
        self._setup(
            CancellationReason.SIGNAL,
            _check_message(message),
            f"Operation cancelled by signal {signal_number}",
            context,
        )

    def _init_args(self) -> tuple[Any, ...]:
        return (self.signal_number, self.message, self.context)


class ConditionCancellation(CancellationError):
    """A watched condition became true (reason CONDITION). Attribute ``condition_name``."""

    condition_name: str | None

    def __init__(
        self,
        condition_name: str | None = None,
        message: str | None = None,
        context: OperationContext | None = None,
    ) -> None:
        if condition_name is not None and not isinstance(condition_name, str):
            raise TypeError(
                f"condition_name must be a str or None, got {type(condition_name).__name__}"
            )
        self.condition_name = condition_name
        default = (
            f"Operation cancelled: {condition_name} condition met"
            if condition_name
            else "Operation cancelled: condition met"
        )
        self._setup(CancellationReason.CONDITION, _check_message(message), default, context)

    def _init_args(self) -> tuple[Any, ...]:
        return (self.condition_name, self.message, self.context)


class ParentCancellation(CancellationError):
    """The parent operation was cancelled (reason PARENT).

    Attributes ``parent_id`` and ``parent_reason`` (the parent's own reason, or None).
    """

    parent_id: str
    parent_reason: CancellationReason | None

    def __init__(
        self,
        parent_id: str,
        parent_reason: CancellationReason | None = None,
        message: str | None = None,
        context: OperationContext | None = None,
    ) -> None:
        if not isinstance(parent_id, str):
            raise TypeError(f"parent_id must be a str, got {type(parent_id).__name__}")
        if parent_reason is not None:
            _check_reason(parent_reason, "parent_reason")
        self.parent_id = parent_id
        self.parent_reason = parent_reason
        default = f"Operation cancelled: parent {parent_id} was cancelled"
        if parent_reason is not None:
            default += f" ({parent_reason.value})"
        self._setup(CancellationReason.PARENT, _check_message(message), default, context)

    def _init_args(self) -> tuple[Any, ...]:
        return (self.parent_id, self.parent_reason, self.message, self.context)
