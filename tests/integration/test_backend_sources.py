"""Sources driven by a real Cancellable, in every run mode (plan story 3.6).

Also runs examples/signal_service.py in a subprocess and stops it with SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hother.cancelable import Cancellable, CancellationReason, OperationStatus
from hother.cancelable.sources.composite import AllOfSource, AnyOfSource
from hother.cancelable.sources.condition import ConditionSource
from hother.cancelable.sources.signal import SignalSource
from hother.cancelable.sources.timeout import TimeoutSource

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "examples" / "signal_service.py"
USR1 = signal.SIGUSR1


@pytest.fixture
def usr1_handler() -> Iterator[list[int]]:
    """A recording SIGUSR1 handler (the one to restore); a stray signal never kills pytest."""
    received: list[int] = []
    previous = signal.getsignal(USR1)
    signal.signal(USR1, lambda signum, frame: received.append(signum))
    try:
        yield received
    finally:
        signal.signal(USR1, previous if previous is not None else signal.SIG_DFL)


async def _run(op: Cancellable, backend: Any, body_seconds: float = 10.0) -> float:
    """Run ``op`` around a sleeping body; return the elapsed time (cancellation caught)."""
    start = backend.current_time()
    try:
        async with op:
            await backend.sleep(body_seconds)
    except backend.get_cancelled_exc_class():
        pass
    return float(backend.current_time() - start)


# ---------------------------------------------------------------------------- condition


async def test_with_condition_sync(backend: Any) -> None:
    calls: list[int] = []

    def third() -> bool:
        calls.append(1)
        return len(calls) >= 3

    op = Cancellable.with_condition(third, check_interval=0.02, condition_name="third")
    elapsed = await _run(op, backend)
    assert op.is_cancelled
    assert op.context.status is OperationStatus.CANCELLED
    assert op.context.cancel_reason is CancellationReason.CONDITION
    assert op.context.cancel_message == "Condition 'third' met after 3 checks"
    assert elapsed < 5


async def test_with_condition_async(backend: Any) -> None:
    calls: list[int] = []

    async def ready() -> bool:
        await backend.sleep(0)
        calls.append(1)
        return len(calls) >= 3

    op = Cancellable.with_condition(ready, check_interval=0.02)
    await _run(op, backend)
    assert op.context.cancel_reason is CancellationReason.CONDITION
    assert op.context.cancel_message == "Condition 'ready' met after 3 checks"
    assert len(calls) == 3


async def test_failing_condition_is_reported_and_does_not_cancel(backend: Any) -> None:
    errors: list[BaseException] = []

    def broken() -> bool:
        raise RuntimeError("predicate bug")

    op = Cancellable.with_condition(broken, check_interval=0.01)
    op.on_error(lambda ctx, error: errors.append(error))
    source = op._sources[0]
    async with op:
        for _ in range(500):
            if source.error is not None:
                break
            await backend.sleep(0.005)
        await backend.sleep(0.02)  # still running: nothing cancelled the body
    assert op.is_completed
    assert op.context.cancel_reason is None
    assert isinstance(source.error, RuntimeError)
    assert len(errors) == 1 and errors[0] is source.error


async def test_operation_with_condition_leaves_the_task_healthy(backend: Any) -> None:
    """§14.2 regression: after a condition operation, later awaits are not cancelled."""
    op = Cancellable.with_condition(lambda: False, check_interval=0.01)
    async with op:
        await backend.sleep(0.02)
    assert op.is_completed
    await backend.sleep(0.01)
    async with Cancellable() as later:
        await backend.sleep(0.01)
    assert later.is_completed


# ------------------------------------------------------------------------------- signal


async def test_with_signal(backend: Any, usr1_handler: list[int]) -> None:
    op = Cancellable.with_signal(USR1)
    start = backend.current_time()
    try:
        async with op:
            assert USR1 in SignalSource._handlers
            os.kill(os.getpid(), USR1)
            await backend.sleep(10)
    except backend.get_cancelled_exc_class():
        pass
    assert backend.current_time() - start < 5
    assert op.is_cancelled
    assert op.context.cancel_reason is CancellationReason.SIGNAL
    assert op.context.cancel_message == f"Received signal SIGUSR1 ({int(USR1)})"
    assert not SignalSource._handlers.get(USR1)
    assert usr1_handler == []
    os.kill(os.getpid(), USR1)  # the original handler is back
    for _ in range(1000):
        if usr1_handler:
            break
        await backend.sleep(0.005)
    assert usr1_handler == [USR1]


async def test_two_operations_on_one_signal(backend: Any, usr1_handler: list[int]) -> None:
    first, second = Cancellable.with_signal(USR1), Cancellable.with_signal(USR1)
    outcome: list[str] = []
    try:
        async with first:
            try:
                async with second:
                    assert len(SignalSource._handlers[USR1]) >= 2
                    os.kill(os.getpid(), USR1)
                    await backend.sleep(10)
            except backend.get_cancelled_exc_class():
                outcome.append("second cancelled")
                raise
    except backend.get_cancelled_exc_class():
        outcome.append("first cancelled")
    assert outcome == ["second cancelled", "first cancelled"]
    assert second.context.cancel_reason is CancellationReason.SIGNAL
    assert first.context.cancel_reason is CancellationReason.SIGNAL
    assert signal.getsignal(USR1) is not None and not SignalSource._handlers.get(USR1)


# ------------------------------------------------------------------------------ combine


async def test_combine_earliest_timeout_wins(backend: Any) -> None:
    op = Cancellable.with_timeout(30).combine(Cancellable.with_timeout(0.05))
    elapsed = await _run(op, backend)
    assert elapsed < 5
    assert op.context.cancel_reason is CancellationReason.TIMEOUT


async def test_combine_timeout_and_fast_condition(backend: Any) -> None:
    op = Cancellable.with_timeout(30).combine(
        Cancellable.with_condition(lambda: True, check_interval=0.01, condition_name="now")
    )
    elapsed = await _run(op, backend)
    assert elapsed < 5
    assert op.context.cancel_reason is CancellationReason.CONDITION
    assert op.context.cancel_message == "Condition 'now' met after 1 checks"


async def test_combine_timeout_beats_slow_condition(backend: Any) -> None:
    calls: list[int] = []

    def slow() -> bool:
        calls.append(1)
        return len(calls) >= 1000

    op = Cancellable.with_timeout(0.05).combine(Cancellable.with_condition(slow, 0.01))
    await _run(op, backend)
    assert op.context.cancel_reason is CancellationReason.TIMEOUT
    assert 1 <= len(calls) < 1000


async def test_combine_signal_and_condition(backend: Any, usr1_handler: list[int]) -> None:
    op = Cancellable.with_signal(USR1).combine(Cancellable.with_condition(lambda: False, 0.01))
    try:
        async with op:
            os.kill(os.getpid(), USR1)
            await backend.sleep(10)
    except backend.get_cancelled_exc_class():
        pass
    assert op.context.cancel_reason is CancellationReason.SIGNAL


# ---------------------------------------------------------------- sources on operations


async def test_timeout_source_in_sources_behaves_like_with_timeout(backend: Any) -> None:
    op = Cancellable()
    op._sources.append(TimeoutSource(0.05))
    elapsed = await _run(op, backend)
    assert elapsed < 5
    assert op.context.cancel_reason is CancellationReason.TIMEOUT


async def test_any_of_source_on_an_operation(backend: Any) -> None:
    op = Cancellable().add_source(
        AnyOfSource([ConditionSource(lambda: False, 0.01), TimeoutSource(0.05)])
    )
    elapsed = await _run(op, backend)
    assert elapsed < 5
    assert op.context.cancel_reason is CancellationReason.TIMEOUT

    op = Cancellable().add_source(
        AnyOfSource([TimeoutSource(30), ConditionSource(lambda: True, 0.01, "go")])
    )
    await _run(op, backend)
    assert op.context.cancel_reason is CancellationReason.CONDITION
    assert op.context.cancel_message == (
        "Composite source triggered by ConditionSource: Condition 'go' met after 1 checks"
    )


async def test_all_of_source_on_an_operation(backend: Any) -> None:
    op = Cancellable().add_source(AllOfSource([TimeoutSource(0.02), TimeoutSource(0.06)]))
    elapsed = await _run(op, backend)
    assert 0.04 <= elapsed < 5
    assert op.context.cancel_reason is CancellationReason.TIMEOUT
    assert op.context.cancel_message == "All 2 sources have triggered"


async def test_a_source_serves_operations_one_after_the_other(backend: Any) -> None:
    source = ConditionSource(lambda: True, 0.01, condition_name="always")
    for _ in range(2):
        op = Cancellable().add_source(source)
        await _run(op, backend)
        assert op.context.cancel_reason is CancellationReason.CONDITION
    # but not two at once
    outer = Cancellable().add_source(TimeoutSource(30, name="shared"))
    shared = outer._sources[0]
    async with outer:
        with pytest.raises(RuntimeError, match="already monitoring"):
            async with Cancellable().add_source(shared):
                pass
    assert outer.is_completed


# ---------------------------------------------------------------------- signal service


@pytest.mark.parametrize("mode", ["asyncio", "uvloop", "anyio", "trio"])
def test_signal_service_stops_cleanly_on_sigterm(mode: str, tmp_path: Path) -> None:
    journal = tmp_path / "journal.txt"
    proc = subprocess.Popen(
        [sys.executable, str(SERVICE), str(journal), "--mode", mode, "--interval", "0.01"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        lines: list[str] = []
        while time.monotonic() < deadline and proc.poll() is None:
            lines = journal.read_text().splitlines() if journal.exists() else []
            if sum(line.startswith("processed") for line in lines) >= 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()
        assert lines and lines[0] == f"ready pid={proc.pid}"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err.decode()
    lines = journal.read_text().splitlines()
    taken = [int(line.split()[1]) for line in lines if line.startswith("taken")]
    processed = [int(line.split()[1]) for line in lines if line.startswith("processed")]
    assert processed == taken == list(range(len(taken)))  # no in-flight record lost
    assert len(processed) >= 3
    assert (
        lines[-2] == f"on_cancel reason=signal message=Received signal SIGTERM ({signal.SIGTERM})"
    )
    assert lines[-1] == f"cleanup processed={len(processed)} status=cancelled reason=signal"


def test_signal_service_finishes_normally(tmp_path: Path) -> None:
    journal = tmp_path / "journal.txt"
    result = subprocess.run(
        [sys.executable, str(SERVICE), str(journal), "--max-records", "3", "--interval", "0"],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode()
    lines = journal.read_text().splitlines()
    assert [line for line in lines if line.startswith("processed")] == [
        "processed 0",
        "processed 1",
        "processed 2",
    ]
    assert lines[-1] == "cleanup processed=3 status=completed reason=None"
