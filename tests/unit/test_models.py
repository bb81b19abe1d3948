"""OperationStatus, CancellationReason and OperationContext (API §3, contract §13.3)."""

from __future__ import annotations

import copy
import logging
import pickle
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from hother.cancelable.core.models import (
    CancellationReason,
    OperationContext,
    OperationStatus,
)

TERMINAL = {
    OperationStatus.COMPLETED,
    OperationStatus.CANCELLED,
    OperationStatus.FAILED,
    OperationStatus.TIMEOUT,
}


def test_operation_status_values() -> None:
    assert {m.name: m.value for m in OperationStatus} == {
        "PENDING": "pending",
        "RUNNING": "running",
        "COMPLETED": "completed",
        "CANCELLED": "cancelled",
        "FAILED": "failed",
        "TIMEOUT": "timeout",
        "SHIELDED": "shielded",
    }
    running: str = OperationStatus.RUNNING
    assert running == "running"
    assert isinstance(running, str)
    assert str(OperationStatus.RUNNING) == "OperationStatus.RUNNING"


def test_cancellation_reason_values() -> None:
    assert {m.name: m.value for m in CancellationReason} == {
        "TIMEOUT": "timeout",
        "MANUAL": "manual",
        "SIGNAL": "signal",
        "CONDITION": "condition",
        "PARENT": "parent",
        "ERROR": "error",
    }
    timeout: str = CancellationReason.TIMEOUT
    assert timeout == "timeout"
    assert str(CancellationReason.TIMEOUT) == "CancellationReason.TIMEOUT"


def test_default_context() -> None:
    ctx = OperationContext()
    assert len(ctx.id) == 36
    assert uuid.UUID(ctx.id).version == 4
    assert ctx.name is None
    assert ctx.status == OperationStatus.PENDING
    assert isinstance(ctx.start_time, datetime)
    assert ctx.start_time.tzinfo is not None
    assert ctx.end_time is None
    assert ctx.cancel_reason is None
    assert ctx.cancel_message is None
    assert ctx.error is None
    assert ctx.partial_result is None
    assert ctx.metadata == {}
    assert ctx.parent_id is None
    assert ctx.child_ids == set()


def test_default_ids_are_unique_and_fresh_containers() -> None:
    a, b = OperationContext(), OperationContext()
    assert a.id != b.id
    a.metadata["k"] = 1
    a.child_ids.add("x")
    assert b.metadata == {} and b.child_ids == set()


def test_explicit_fields_kept() -> None:
    ctx = OperationContext(id="op-1", name="job", metadata={"a": 1}, parent_id="p-1")
    assert (ctx.id, ctx.name, ctx.metadata, ctx.parent_id) == ("op-1", "job", {"a": 1}, "p-1")


def test_fields_reassignable_without_validation() -> None:
    ctx = OperationContext()
    ctx.status = OperationStatus.FAILED
    ctx.end_time = ctx.start_time + timedelta(seconds=1)
    assert ctx.status is OperationStatus.FAILED
    assert ctx.duration == timedelta(seconds=1)


def test_duration_states() -> None:
    ctx = OperationContext()
    assert ctx.duration is None
    assert ctx.duration_seconds is None
    ctx.status = OperationStatus.RUNNING
    assert ctx.duration is not None and ctx.duration >= timedelta(0)
    assert ctx.duration_seconds is not None and ctx.duration_seconds >= 0
    ctx.end_time = ctx.start_time + timedelta(seconds=5)
    assert ctx.duration == timedelta(seconds=5)
    assert ctx.duration_seconds == 5.0
    ctx.status = OperationStatus.SHIELDED
    ctx.end_time = None
    assert ctx.duration is None


def test_duration_seconds_zero_is_not_none() -> None:
    """§14.18: a zero duration is 0.0, not None."""
    ctx = OperationContext(status=OperationStatus.COMPLETED)
    ctx.end_time = ctx.start_time
    assert ctx.duration == timedelta(0)
    assert ctx.duration_seconds == 0.0


def test_terminal_success_cancelled_flags() -> None:
    for status in OperationStatus:
        ctx = OperationContext(status=status)
        assert ctx.is_terminal == (status in TERMINAL), status
        assert ctx.is_success == (status == OperationStatus.COMPLETED), status
        assert ctx.is_cancelled == (
            status in (OperationStatus.CANCELLED, OperationStatus.TIMEOUT)
        ), status


def test_log_context_fresh() -> None:
    ctx = OperationContext(id="op-1", name="job", parent_id="p")
    ctx.child_ids.update({"c1", "c2"})
    assert ctx.log_context() == {
        "operation_id": "op-1",
        "operation_name": "job",
        "status": "pending",
        "duration_seconds": None,
        "parent_id": "p",
        "child_count": 2,
        "has_error": False,
        "cancel_reason": None,
    }


def test_log_context_with_error_and_reason() -> None:
    ctx = OperationContext(status=OperationStatus.CANCELLED)
    ctx.error = "boom"
    ctx.cancel_reason = CancellationReason.TIMEOUT
    ctx.end_time = ctx.start_time + timedelta(seconds=2)
    lc = ctx.log_context()
    assert lc["status"] == "cancelled"
    assert lc["has_error"] is True
    assert lc["cancel_reason"] == "timeout"
    assert lc["duration_seconds"] == 2.0


def test_update_status() -> None:
    ctx = OperationContext()
    ctx.update_status(OperationStatus.RUNNING)
    assert ctx.status is OperationStatus.RUNNING
    assert ctx.end_time is None
    ctx.update_status(OperationStatus.COMPLETED)
    assert ctx.is_success
    assert ctx.end_time is not None and ctx.end_time >= ctx.start_time
    first_end = ctx.end_time
    ctx.update_status(OperationStatus.FAILED)
    assert ctx.end_time is not None and ctx.end_time >= first_end


def test_update_status_accepts_value_rejects_bad_input() -> None:
    ctx = OperationContext()
    ctx.update_status("running")  # type: ignore[arg-type]
    assert ctx.status is OperationStatus.RUNNING
    with pytest.raises(ValueError, match="status"):
        ctx.update_status("nope")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="status"):
        ctx.update_status(3)  # type: ignore[arg-type]
    assert ctx.status is OperationStatus.RUNNING


def test_update_status_logs_debug_with_extra(caplog: pytest.LogCaptureFixture) -> None:
    """§14.1/§14.26: a DEBUG record with fields in ``extra`` (no TypeError at any level)."""
    ctx = OperationContext(name="job")
    with caplog.at_level(logging.DEBUG, logger="hother.cancelable"):
        ctx.update_status(OperationStatus.RUNNING)
    records = [r for r in caplog.records if r.getMessage() == "status changed"]
    assert len(records) == 1
    rec = records[0]
    assert rec.levelno == logging.DEBUG
    assert rec.name == "hother.cancelable.core.models"
    assert rec.__dict__["old_status"] == "pending"
    assert rec.__dict__["new_status"] == "running"
    assert rec.__dict__["operation_id"] == ctx.id
    assert rec.__dict__["operation_name"] == "job"


def test_update_status_silent_at_info(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="hother.cancelable"):
        OperationContext().update_status(OperationStatus.COMPLETED)
    assert not [r for r in caplog.records if r.name.startswith("hother.cancelable")]


def test_dump_validate_round_trip() -> None:
    ctx = OperationContext(
        name="x",
        status=OperationStatus.RUNNING,
        cancel_reason=CancellationReason.TIMEOUT,
        metadata={"k": [1, 2]},
    )
    data = ctx.model_dump()
    assert data["status"] == "running"
    assert data["cancel_reason"] == "timeout"
    back = OperationContext.model_validate(data)
    assert back.id == ctx.id
    assert back.status is OperationStatus.RUNNING
    assert back == ctx
    json_back = OperationContext.model_validate_json(ctx.model_dump_json())
    assert json_back.id == ctx.id and json_back.status is OperationStatus.RUNNING


def test_validation_from_plain_values() -> None:
    ctx = OperationContext(status="completed", cancel_reason="manual")  # type: ignore[arg-type]
    assert ctx.status is OperationStatus.COMPLETED
    assert ctx.cancel_reason is CancellationReason.MANUAL


def test_model_copy_deep_is_independent() -> None:
    ctx = OperationContext(metadata={"list": [1]})
    dup = ctx.model_copy(deep=True)
    dup.metadata["list"].append(2)
    dup.status = OperationStatus.FAILED
    assert ctx.metadata == {"list": [1]}
    assert ctx.status is OperationStatus.PENDING


def test_arbitrary_partial_result() -> None:
    class Thing:
        pass

    t = Thing()
    ctx = OperationContext(partial_result=t)
    assert ctx.partial_result is t


def test_fast_constructor_equivalent() -> None:
    meta = {"a": 1}
    fast = OperationContext._fast("op-9", "job", meta, "parent")
    assert fast.metadata is meta
    slow = OperationContext(
        id="op-9",
        name="job",
        metadata=meta,
        parent_id="parent",
        start_time=fast.start_time,
    )
    assert fast == slow
    assert fast.model_dump() == slow.model_dump()
    assert OperationContext.model_validate(fast.model_dump()) == fast
    assert copy.deepcopy(fast) == fast
    assert pickle.loads(pickle.dumps(fast)) == fast
    default = OperationContext._fast()
    assert len(default.id) == 36 and uuid.UUID(default.id).version == 4
    assert default.status is OperationStatus.PENDING and default.metadata == {}
    assert default.child_ids == set()
    assert default.start_time <= datetime.now(UTC)
    default.update_status(OperationStatus.COMPLETED)
    assert default.is_success and default.end_time is not None
