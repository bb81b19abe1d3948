"""Cancellation exceptions (API §4)."""

from __future__ import annotations

import copy
import pickle

import pytest

from hother.cancelable.core.exceptions import (
    CancellationError,
    ConditionCancellation,
    ManualCancellation,
    ParentCancellation,
    SignalCancellation,
    TimeoutCancellation,
)
from hother.cancelable.core.models import CancellationReason, OperationContext

ALL = [
    CancellationError(CancellationReason.ERROR),
    TimeoutCancellation(1.5),
    ManualCancellation(),
    SignalCancellation(15),
    ConditionCancellation("disk"),
    ParentCancellation("p-1", CancellationReason.TIMEOUT),
]


@pytest.mark.parametrize("exc", ALL, ids=lambda e: type(e).__name__)
def test_hierarchy_and_str(exc: CancellationError) -> None:
    assert isinstance(exc, CancellationError)
    assert isinstance(exc, Exception)
    assert str(exc) == exc.message
    assert exc.context is None


def test_backend_cancel_exceptions_not_in_hierarchy() -> None:
    import asyncio

    assert not issubclass(CancellationError, asyncio.CancelledError)
    assert not issubclass(asyncio.CancelledError, CancellationError)


def test_cancellation_error_defaults_and_custom() -> None:
    exc = CancellationError(CancellationReason.SIGNAL)
    assert exc.reason is CancellationReason.SIGNAL
    assert exc.message == "Operation cancelled: signal"
    ctx = OperationContext()
    exc = CancellationError(CancellationReason.MANUAL, "stop now", ctx)
    assert (exc.reason, exc.message, exc.context) == (CancellationReason.MANUAL, "stop now", ctx)
    assert str(exc) == "stop now"
    assert exc.args == ("stop now",)


def test_cancellation_error_empty_message_kept() -> None:
    exc = CancellationError(CancellationReason.MANUAL, "")
    assert exc.message == "" and str(exc) == ""


def test_timeout_cancellation() -> None:
    exc = TimeoutCancellation(3.0)
    assert exc.reason is CancellationReason.TIMEOUT
    assert exc.timeout_seconds == 3.0
    assert exc.message == "Operation timed out after 3.0s"
    assert TimeoutCancellation(2).message == "Operation timed out after 2s"
    assert TimeoutCancellation(1, "late").message == "late"


def test_manual_cancellation() -> None:
    exc = ManualCancellation()
    assert exc.reason is CancellationReason.MANUAL
    assert exc.message == "Operation cancelled manually"
    assert ManualCancellation("Operation cancelled via token").message == (
        "Operation cancelled via token"
    )


def test_signal_cancellation() -> None:
    exc = SignalCancellation(2)
    assert exc.reason is CancellationReason.SIGNAL
    assert exc.signal_number == 2
    assert exc.message == "Operation cancelled by signal 2"


def test_condition_cancellation() -> None:
    exc = ConditionCancellation()
    assert exc.reason is CancellationReason.CONDITION
    assert exc.condition_name is None
    assert exc.message == "Operation cancelled: condition met"
    named = ConditionCancellation("memory")
    assert named.condition_name == "memory"
    assert named.message == "Operation cancelled: memory condition met"
    assert ConditionCancellation("x", "custom").message == "custom"


def test_parent_cancellation() -> None:
    exc = ParentCancellation("abc")
    assert exc.reason is CancellationReason.PARENT
    assert exc.parent_id == "abc"
    assert exc.parent_reason is None
    assert exc.message == "Operation cancelled: parent abc was cancelled"
    with_reason = ParentCancellation("abc", CancellationReason.TIMEOUT)
    assert with_reason.parent_reason is CancellationReason.TIMEOUT
    assert with_reason.message == "Operation cancelled: parent abc was cancelled (timeout)"


def test_context_attached() -> None:
    ctx = OperationContext(name="job")
    for exc in (
        TimeoutCancellation(1, context=ctx),
        ManualCancellation(context=ctx),
        SignalCancellation(2, context=ctx),
        ConditionCancellation(context=ctx),
        ParentCancellation("p", context=ctx),
    ):
        assert exc.context is ctx


@pytest.mark.parametrize("exc", ALL, ids=lambda e: type(e).__name__)
def test_pickle_and_copy_round_trip(exc: CancellationError) -> None:
    for clone in (pickle.loads(pickle.dumps(exc)), copy.copy(exc), copy.deepcopy(exc)):
        assert type(clone) is type(exc)
        assert clone.reason is exc.reason
        assert clone.message == exc.message
        assert str(clone) == str(exc)
        assert {k: v for k, v in vars(clone).items()} == vars(exc)


def test_pickle_keeps_context() -> None:
    ctx = OperationContext(name="job")
    clone = pickle.loads(pickle.dumps(ManualCancellation("m", ctx)))
    assert clone.context == ctx


def test_raise_and_catch() -> None:
    with pytest.raises(CancellationError) as info:
        raise TimeoutCancellation(0.5)
    assert info.value.reason is CancellationReason.TIMEOUT


@pytest.mark.parametrize(
    ("factory", "argname"),
    [
        (lambda: CancellationError("manual"), "reason"),  # type: ignore[arg-type]
        (lambda: CancellationError(None), "reason"),  # type: ignore[arg-type]
        (lambda: CancellationError(CancellationReason.MANUAL, 5), "message"),  # type: ignore[arg-type]
        (lambda: CancellationError(CancellationReason.MANUAL, None, {}), "context"),  # type: ignore[arg-type]
        (lambda: TimeoutCancellation("3"), "timeout_seconds"),  # type: ignore[arg-type]
        (lambda: TimeoutCancellation(True), "timeout_seconds"),
        (lambda: ManualCancellation(b"x"), "message"),  # type: ignore[arg-type]
        (lambda: SignalCancellation(2.0), "signal_number"),  # type: ignore[arg-type]
        (lambda: ConditionCancellation(7), "condition_name"),  # type: ignore[arg-type]
        (lambda: ParentCancellation(None), "parent_id"),  # type: ignore[arg-type]
        (lambda: ParentCancellation("p", "timeout"), "parent_reason"),  # type: ignore[arg-type]
    ],
)
def test_bad_arguments_raise_type_error_naming_argument(factory: object, argname: str) -> None:
    with pytest.raises(TypeError, match=argname):
        factory()  # type: ignore[operator]
