"""The public test helpers (``hother.cancelable.utils.testing``, API.md §9.5, fixes §14.6/§14.30).

Timing assertions run on the virtual clock (``@pytest.mark.virtual_clock``: asyncio, anyio,
trio; uvloop skipped) where virtual times are exact; the tests that involve other threads run
on real time in all four modes with generous bounds only.
"""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import anyio
import pytest

from hother.cancelable import (
    Cancellable,
    CancellationReason,
    CancellationToken,
    OperationStatus,
    current_operation,
    with_timeout,
)
from hother.cancelable.sources.base import CancellationSource
from hother.cancelable.testing import (
    CancellationScenario,
    CancelledBlock,
    ManualSource,
    MockCancellationToken,
    OperationRecorder,
    TestOperationRecorder,
    assert_cancellation_within,
    assert_cancelled_within,
    create_slow_stream,
    current_time,
    run_with_timeout_test,
    sample_async_operation,
)
from hother.cancelable.utils import testing as testing_module

#: Upper bound of "long" waits: a missing cancellation shows as a failure, never a hang.
LONG = 10.0

virtual = pytest.mark.virtual_clock


def test_public_names() -> None:
    for name in (
        "MockCancellationToken",
        "TestOperationRecorder",
        "OperationRecorder",
        "create_slow_stream",
        "run_with_timeout_test",
        "assert_cancellation_within",
        "CancellationScenario",
        "sample_async_operation",
        "ManualSource",
        "assert_cancelled_within",
    ):
        assert name in testing_module.__all__
        assert hasattr(testing_module, name)


# ====================================================================== MockCancellationToken


class TestMockTokenSync:
    def test_constructible_and_a_real_token(self) -> None:
        token = MockCancellationToken()  # 0.1: ValueError from pydantic (§14.6)
        assert isinstance(token, CancellationToken)
        assert token.cancel_history == []
        assert token.get_cancel_count() == 0
        assert token.pending_scheduled_cancels == 0
        assert not token.is_cancelled

    def test_token_keywords(self) -> None:
        token = MockCancellationToken(id="mock-1")
        assert token.id == "mock-1"
        assert MockCancellationToken(id="mock-1") == token
        with pytest.raises(TypeError):
            MockCancellationToken(id=5)

    def test_cancel_sync_outside_async_code_records_without_time(self) -> None:
        token = MockCancellationToken()
        assert token.cancel_sync(CancellationReason.SIGNAL, "sig") is True
        assert token.cancel_sync() is False
        assert token.cancel_history == [
            {"time": None, "reason": CancellationReason.SIGNAL, "message": "sig"},
            {"time": None, "reason": CancellationReason.MANUAL, "message": None},
        ]
        assert token.get_cancel_count() == 2
        assert token.reason == CancellationReason.SIGNAL  # the first call won


@virtual
async def test_mock_token_records_every_cancel_call(backend: Any) -> None:
    token = MockCancellationToken()
    t0 = backend.current_time()
    await backend.sleep(1.5)
    assert await token.cancel(CancellationReason.TIMEOUT, "first") is True
    await backend.sleep(1)
    assert await token.cancel(CancellationReason.MANUAL, "second") is False
    assert token.cancel_history == [
        {"time": t0 + 1.5, "reason": CancellationReason.TIMEOUT, "message": "first"},
        {"time": t0 + 2.5, "reason": CancellationReason.MANUAL, "message": "second"},
    ]
    assert token.get_cancel_count() == 2
    assert token.reason == CancellationReason.TIMEOUT and token.message == "first"


@virtual
async def test_schedule_cancel_fires_after_the_delay(backend: Any) -> None:
    token = MockCancellationToken()
    t0 = backend.current_time()
    assert await token.schedule_cancel(30, CancellationReason.CONDITION, "later") is None
    assert not token.is_cancelled
    assert token.pending_scheduled_cancels == 1
    await token.wait_for_cancel()
    assert backend.current_time() == t0 + 30
    assert token.reason == CancellationReason.CONDITION and token.message == "later"
    assert token.cancel_history == [
        {"time": t0 + 30, "reason": CancellationReason.CONDITION, "message": "later"}
    ]
    await backend.sleep(0)
    assert token.pending_scheduled_cancels == 0


@virtual
async def test_schedule_cancel_cancels_an_operation_using_the_token(backend: Any) -> None:
    token = MockCancellationToken()
    await token.schedule_cancel(5)
    t0 = backend.current_time()
    with pytest.raises(backend.get_cancelled_exc_class()):
        async with Cancellable.with_token(token) as op:
            await backend.sleep(LONG * 100)
    assert backend.current_time() == t0 + 5
    assert op.status == OperationStatus.CANCELLED
    assert op.context.cancel_reason == CancellationReason.MANUAL


@virtual
async def test_scheduled_cancels_can_be_dropped(backend: Any) -> None:
    token = MockCancellationToken()
    await token.schedule_cancel(10)
    await token.schedule_cancel(20)
    assert token.pending_scheduled_cancels == 2
    assert token.cancel_scheduled() == 2
    await backend.sleep(100)
    assert not token.is_cancelled
    assert token.cancel_history == []
    assert token.cancel_scheduled() == 0


async def test_schedule_cancel_validates_its_arguments() -> None:
    token = MockCancellationToken()
    with pytest.raises(ValueError, match="delay"):
        await token.schedule_cancel(-1)
    with pytest.raises(TypeError, match="delay"):
        await token.schedule_cancel("1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="reason"):
        await token.schedule_cancel(1, "manual")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="message"):
        await token.schedule_cancel(1, CancellationReason.MANUAL, 3)  # type: ignore[arg-type]
    assert token.pending_scheduled_cancels == 0


async def test_cancel_sync_from_a_plain_thread_is_recorded(plain_thread: Any) -> None:
    token = MockCancellationToken()
    plain_thread.start(token.cancel_sync, CancellationReason.SIGNAL, "from thread")
    await token.wait_for_cancel()
    assert token.cancel_history == [
        {"time": None, "reason": CancellationReason.SIGNAL, "message": "from thread"}
    ]


# ====================================================================== OperationRecorder


def test_recorder_is_not_collected_by_pytest() -> None:
    assert TestOperationRecorder is OperationRecorder
    assert TestOperationRecorder.__test__ is False  # type: ignore[attr-defined]
    assert CancellationScenario.__test__ is False  # type: ignore[attr-defined]


@virtual
async def test_recorder_records_a_completed_operation(backend: Any) -> None:
    recorder = OperationRecorder()
    op = Cancellable(name="rec")
    assert recorder.attach_to_cancellable(op) is op
    t0 = backend.current_time()
    async with op:
        await backend.sleep(2)
        await op.report_progress("halfway", {"pct": 50})
    op_id = op.operation_id
    assert [e["event_type"] for e in recorder.events] == [
        "status_running",
        "progress",
        "status_completed",
    ]
    assert [e["time"] for e in recorder.events] == [t0, t0 + 2, t0 + 2]
    assert all(e["operation_id"] == op_id for e in recorder.events)
    progress = recorder.assert_event_occurred(op_id, "progress")
    assert progress["data"] == {"message": "halfway", "meta": {"pct": 50}}
    assert recorder.events[0]["data"]["operation_id"] == op_id  # ctx.log_context()
    assert recorder.get_events_by_type("progress") == [progress]
    assert recorder.get_events_for_operation(op_id) == recorder.events
    assert recorder.get_events_for_operation("other") == []
    assert recorder.operations[op_id] is op.context
    recorder.assert_final_status(op_id, OperationStatus.COMPLETED)
    with pytest.raises(AssertionError, match="ended completed, expected cancelled"):
        recorder.assert_final_status(op_id, OperationStatus.CANCELLED)
    with pytest.raises(AssertionError, match="not recorded"):
        recorder.assert_final_status("nope", OperationStatus.COMPLETED)
    with pytest.raises(AssertionError, match="no 'error' event"):
        recorder.assert_event_occurred(op_id, "error")


async def test_recorder_records_cancellation_and_errors(backend: Any) -> None:
    recorder = OperationRecorder()
    cancelled_op = recorder.attach_to_cancellable(Cancellable())
    with pytest.raises(backend.get_cancelled_exc_class()):
        async with cancelled_op:
            await cancelled_op.cancel(CancellationReason.MANUAL, "stop")
            await backend.sleep(LONG)
    recorder.assert_event_occurred(cancelled_op.operation_id, "status_cancelled")
    recorder.assert_final_status(cancelled_op.operation_id, OperationStatus.CANCELLED)

    failing_op = recorder.attach_to_cancellable(Cancellable())
    with pytest.raises(ValueError, match="boom"):
        async with failing_op:
            raise ValueError("boom")
    error = recorder.assert_event_occurred(failing_op.operation_id, "error")
    assert error["data"] == {"error_type": "ValueError", "error_message": "boom"}
    recorder.assert_final_status(failing_op.operation_id, OperationStatus.FAILED)


async def test_recorder_latest_event_and_manual_records() -> None:
    recorder = OperationRecorder()
    await recorder.record_event("op", "tick", {"n": 1})
    await recorder.record_event("op", "tick", {"n": 2})
    await recorder.record_event("op", "other")
    assert recorder.assert_event_occurred("op", "tick", timeout=0.0)["data"] == {"n": 2}
    assert recorder.events[-1]["data"] == {}
    with pytest.raises(TypeError, match="operation_id"):
        await recorder.record_event(1, "tick")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="event_type"):
        await recorder.record_event("op", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="data"):
        await recorder.record_event("op", "tick", [1])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cancellable"):
        recorder.attach_to_cancellable("op")  # type: ignore[arg-type]


@virtual
async def test_recorder_wait_for_event(backend: Any) -> None:
    recorder = OperationRecorder()
    t0 = backend.current_time()

    async def later() -> None:
        await backend.sleep(3)
        await recorder.record_event("op", "done", {"ok": True})

    async with backend.create_task_group() as tg:
        tg.start_soon(later)
        event = await recorder.wait_for_event("op", "done", timeout=5)
    assert event["data"] == {"ok": True}
    assert event["time"] == t0 + 3
    with pytest.raises(AssertionError, match="no 'never' event"):
        await recorder.wait_for_event("op", "never", timeout=4)
    assert backend.current_time() == t0 + 7


# ====================================================================== ManualSource


async def test_manual_source_trigger_cancels_the_operation(backend: Any) -> None:
    source = ManualSource()
    assert isinstance(source, CancellationSource)
    with pytest.raises(backend.get_cancelled_exc_class()):
        async with Cancellable().add_source(source) as op:
            assert source.is_monitoring
            assert source.trigger(message="stop now") is True
            assert source.triggered
            assert source.trigger() is False  # fires once
            await backend.sleep(LONG)
    assert op.status == OperationStatus.CANCELLED
    assert op.context.cancel_reason == CancellationReason.MANUAL
    assert op.context.cancel_message == "stop now"
    assert source.trigger_count == 2
    assert not source.is_monitoring


async def test_manual_source_reason_and_default_message(backend: Any) -> None:
    source = ManualSource(name="switch")
    with pytest.raises(backend.get_cancelled_exc_class()):
        async with Cancellable().add_source(source) as op:
            source.trigger(CancellationReason.CONDITION)
            await backend.sleep(LONG)
    assert op.context.cancel_reason == CancellationReason.CONDITION
    assert op.context.cancel_message == "switch triggered"


async def test_manual_source_triggered_before_enter_fires_on_start(backend: Any) -> None:
    source = ManualSource(CancellationReason.SIGNAL)
    assert source.trigger(message="early") is False
    assert source.pending
    reached: list[str] = []
    with pytest.raises(backend.get_cancelled_exc_class()):
        async with Cancellable().add_source(source) as op:
            reached.append("body")
            await backend.sleep(LONG)
    assert reached == ["body"]  # cancelled at the first await of the body
    assert not source.pending
    assert op.context.cancel_reason == CancellationReason.SIGNAL
    assert op.context.cancel_message == "early"


async def test_manual_source_reset_and_reuse(backend: Any) -> None:
    source = ManualSource()
    source.trigger()
    source.reset()
    assert not source.pending
    async with Cancellable().add_source(source) as first:
        await backend.sleep(0)
    assert first.is_completed and not source.triggered
    with pytest.raises(backend.get_cancelled_exc_class()):
        async with Cancellable().add_source(source) as second:
            source.trigger()
            await backend.sleep(LONG)
    assert second.is_cancelled


async def test_manual_source_trigger_from_another_thread(backend: Any, plain_thread: Any) -> None:
    source = ManualSource()
    results: list[bool] = []
    with pytest.raises(backend.get_cancelled_exc_class()):
        async with Cancellable().add_source(source) as op:
            plain_thread.start(lambda: results.append(source.trigger(message="thread")))
            await backend.sleep(LONG)  # real time: the thread fires long before
    plain_thread.join()
    assert results == [True]
    assert op.context.cancel_message == "thread"


def test_manual_source_validation() -> None:
    source = ManualSource()
    with pytest.raises(TypeError, match="reason"):
        source.trigger("manual")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="message"):
        source.trigger(message=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="reason"):
        ManualSource("manual")  # type: ignore[arg-type]
    assert not source.pending


# ====================================================================== assert_cancelled_within


@virtual
async def test_assert_cancelled_within_measures_on_the_backend_clock(backend: Any) -> None:
    async with assert_cancelled_within(4.5, 5.0) as block:
        async with Cancellable.with_timeout(5):
            await backend.sleep(LONG * 100)
    assert isinstance(block, CancelledBlock)
    assert block.elapsed == 5.0
    assert isinstance(block.exception, backend.get_cancelled_exc_class())


@virtual
async def test_assert_cancelled_within_accepts_timeout_errors(backend: Any) -> None:
    async with assert_cancelled_within(2, 2) as block:
        with anyio.fail_after(2):
            await backend.sleep(LONG)
    assert isinstance(block.exception, TimeoutError)


@virtual
async def test_assert_cancelled_within_fails(backend: Any) -> None:
    with pytest.raises(AssertionError, match="completed after 1s without being cancelled"):
        async with assert_cancelled_within(0, 5):
            await backend.sleep(1)
    with pytest.raises(AssertionError, match=r"cancelled after 3s, outside \[4.0, 5.0\]s"):
        async with assert_cancelled_within(4, 5):
            async with Cancellable.with_timeout(3):
                await backend.sleep(LONG)
    with pytest.raises(AssertionError, match="outside"):
        async with assert_cancelled_within(0, 1):
            async with Cancellable.with_timeout(3):
                await backend.sleep(LONG)
    with pytest.raises(ValueError, match="other"):  # not a cancellation: propagates
        async with assert_cancelled_within(0, 1):
            raise ValueError("other")


@pytest.mark.modes("asyncio", "anyio", reason="Task.cancel() of the asyncio host task")
@virtual
async def test_assert_cancelled_within_does_not_swallow_a_foreign_cancel() -> None:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().call_later(1, task.cancel)
    with pytest.raises(asyncio.CancelledError):
        async with assert_cancelled_within(0, 5):
            await asyncio.sleep(LONG)
    assert task.uncancel() == 0


async def test_window_validation() -> None:
    for args, exc, match in [
        ((-1, 1), ValueError, "min_time"),
        ((2, 1), ValueError, "max_time"),
        (("0", 1), TypeError, "min_time"),
        ((0, None), TypeError, "max_time"),
    ]:
        with pytest.raises(exc, match=match):
            async with assert_cancelled_within(*args):
                pass
        with pytest.raises(exc, match=match):
            async with assert_cancellation_within(*args):
                pass


async def test_assert_cancelled_within_on_real_time(backend: Any) -> None:
    """Every mode (uvloop included) on the real clock, with a generous window."""
    async with assert_cancelled_within(0.01, LONG / 2) as block:
        async with Cancellable.with_timeout(0.05):
            await backend.sleep(LONG)
    assert block.elapsed is not None and block.elapsed >= 0.01


# ====================================================================== run_with_timeout_test


@virtual
async def test_run_with_timeout_test(backend: Any) -> None:
    await run_with_timeout_test(with_timeout(2, backend.sleep(LONG)), 2.0, tolerance=0.0)
    with pytest.raises(AssertionError, match="without being cancelled"):
        await run_with_timeout_test(backend.sleep(1), 1.0)
    with pytest.raises(AssertionError, match="outside"):
        await run_with_timeout_test(with_timeout(3, backend.sleep(LONG)), 1.0, tolerance=0.5)


async def test_run_with_timeout_test_validation() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a never-awaited coroutine would warn
        with pytest.raises(ValueError, match="expected_timeout"):
            await run_with_timeout_test(asyncio.sleep(0), -1)
        with pytest.raises(TypeError, match="tolerance"):
            await run_with_timeout_test(asyncio.sleep(0), 1, tolerance="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="coro"):
        await run_with_timeout_test(42, 1)  # type: ignore[arg-type]


# ====================================================================== assert_cancellation_within


@virtual
async def test_assert_cancellation_within_token_cancelled_in_window(backend: Any) -> None:
    async with assert_cancellation_within(0.5, 0.5) as token:
        assert isinstance(token, MockCancellationToken)
        await token.schedule_cancel(0.5)
        async with Cancellable.with_token(token):  # the cancellation escapes: swallowed
            await backend.sleep(LONG)
    assert token.is_cancelled and token.get_cancel_count() == 1


@virtual
async def test_assert_cancellation_within_fails(backend: Any) -> None:
    with pytest.raises(AssertionError, match="not cancelled"):
        async with assert_cancellation_within(0, 1) as token:
            await token.schedule_cancel(5)  # dropped at the end of the block
            await backend.sleep(2)
    assert token.pending_scheduled_cancels == 0
    await backend.sleep(10)
    assert not token.is_cancelled
    with pytest.raises(AssertionError, match=r"cancelled after 2s, outside \[0.0, 1.0\]s"):
        async with assert_cancellation_within(0, 1) as token:
            await backend.sleep(2)
            await token.cancel()
    with pytest.raises(ValueError, match="boom"):
        async with assert_cancellation_within(0, 1) as token:
            await token.cancel()
            raise ValueError("boom")


# ====================================================================== streams and samples


@virtual
async def test_create_slow_stream_timing(backend: Any) -> None:
    t0 = backend.current_time()
    seen = [(item, backend.current_time() - t0) async for item in create_slow_stream("abc", 2)]
    assert seen == [("a", 0), ("b", 2), ("c", 4)]
    assert [x async for x in create_slow_stream([], 1)] == []


async def test_create_slow_stream_stops_when_the_operation_is_cancelled(backend: Any) -> None:
    got: list[int] = []
    with pytest.raises(backend.get_cancelled_exc_class()):
        async with Cancellable() as op:
            async for item in create_slow_stream(range(5), 0.001, op):
                got.append(item)
                if item == 1:
                    await op.cancel()
    assert got == [0, 1]
    assert op.status == OperationStatus.CANCELLED


async def test_create_slow_stream_validation() -> None:
    with pytest.raises(ValueError, match="delay"):
        async for _ in create_slow_stream([1], -1):
            pass
    with pytest.raises(TypeError, match="cancellable"):
        async for _ in create_slow_stream([1], 0, "op"):  # type: ignore[arg-type]
            pass


@virtual
async def test_sample_async_operation(backend: Any) -> None:
    t0 = backend.current_time()
    assert await sample_async_operation(4) == "success"
    assert backend.current_time() == t0 + 4
    messages: list[tuple[Any, float]] = []
    op = Cancellable().on_progress(
        lambda _id, message, _meta: messages.append((message, backend.current_time() - t0))
    )
    assert await sample_async_operation(2, op) == "success"
    async with op:  # not given: reports to current_operation()
        assert current_operation() is op
        assert await sample_async_operation(2) == "success"
    expected = [
        ("Operation started", 4),
        ("Operation 50% complete", 5),
        ("Operation completed", 6),
    ]
    assert messages == expected + [(m, t + 2) for m, t in expected]
    with pytest.raises(ValueError, match="duration"):
        await sample_async_operation(-1)
    with pytest.raises(TypeError, match="cancellable"):
        await sample_async_operation(1, "op")  # type: ignore[arg-type]


# ====================================================================== CancellationScenario


@virtual
async def test_scenario_cancels_the_operation(backend: Any) -> None:
    t0 = backend.current_time()
    scenario = (
        CancellationScenario("stop_early")
        .add_delay(0.75)
        .add_cancellation(CancellationReason.MANUAL, "enough")
        .add_progress_check("Operation started")
        .add_status_check(OperationStatus.CANCELLED)
    )
    recorder = await scenario.run(sample_async_operation, 2.0)
    assert backend.current_time() == t0 + 0.75
    op, token = scenario.operation, scenario.token
    assert op is not None and token is not None
    assert op.context.name == "scenario_stop_early"
    assert op.status == OperationStatus.CANCELLED  # 0.1 ended COMPLETED
    assert op.context.cancel_message == "enough"
    assert token.cancel_history == [
        {"time": t0 + 0.75, "reason": CancellationReason.MANUAL, "message": "enough"}
    ]
    types = [e["event_type"] for e in recorder.get_events_for_operation(op.operation_id)]
    assert types == ["status_running", "progress", "status_cancelled"]  # halfway is at 1.0


@virtual
async def test_scenario_operation_completes_before_the_cancellation(backend: Any) -> None:
    t0 = backend.current_time()
    scenario = (
        CancellationScenario("fast")
        .add_delay(100)
        .add_cancellation()
        .add_progress_check("Operation completed", timeout=1.0)
        .add_status_check(OperationStatus.COMPLETED)
    )
    await scenario.run(sample_async_operation, duration=1.0)
    assert backend.current_time() == t0 + 1  # the pending delay step was cancelled
    assert scenario.token is not None and scenario.token.get_cancel_count() == 0
    await backend.sleep(200)
    assert scenario.token.get_cancel_count() == 0  # the driver did not outlive the run
    if backend.name == "asyncio":
        assert asyncio.all_tasks() == {asyncio.current_task()}


@virtual
async def test_scenario_failed_checks_raise(backend: Any) -> None:
    with pytest.raises(AssertionError, match="progress 'nope' was not reported"):
        await CancellationScenario("p").add_progress_check("nope").run(sample_async_operation, 1)
    with pytest.raises(AssertionError, match="ended completed, expected cancelled"):
        await (
            CancellationScenario("s")
            .add_status_check(OperationStatus.CANCELLED)
            .run(sample_async_operation, 1)
        )


async def test_scenario_operation_errors_propagate(backend: Any) -> None:
    async def broken(x: int, *, y: int) -> None:
        await backend.sleep(0)
        raise RuntimeError(f"broken {x} {y}")

    scenario = CancellationScenario("err").add_delay(LONG).add_cancellation()
    with pytest.raises(RuntimeError, match="broken 1 2"):
        await scenario.run(broken, 1, y=2)
    assert scenario.operation is not None
    assert scenario.operation.status == OperationStatus.FAILED


def test_scenario_validation() -> None:
    with pytest.raises(TypeError, match="name"):
        CancellationScenario(1)  # type: ignore[arg-type]
    scenario = CancellationScenario("v")
    with pytest.raises(ValueError, match="duration"):
        scenario.add_delay(-1)
    with pytest.raises(TypeError, match="reason"):
        scenario.add_cancellation("manual")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        scenario.add_status_check("weird")  # type: ignore[arg-type]
    assert scenario.add_status_check("completed") is scenario  # type: ignore[arg-type]
    assert scenario.steps == []


async def test_scenario_run_validation() -> None:
    with pytest.raises(TypeError, match="operation"):
        await CancellationScenario("x").run("not callable")  # type: ignore[arg-type]


# ====================================================================== current_time


@virtual
async def test_current_time_is_the_backend_clock(backend: Any) -> None:
    t0 = current_time()
    assert t0 == backend.current_time()
    await backend.sleep(12.5)
    assert current_time() == t0 + 12.5


def test_current_time_outside_async_code() -> None:
    from hother.cancelable.backends import NoAsyncContextError

    with pytest.raises(NoAsyncContextError):
        current_time()
