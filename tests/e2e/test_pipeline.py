"""A three-stage pipeline (producer -> transformer -> sink, bounded queues) run as child
operations of one root operation carrying mixed sources: a timeout, a shared token, a
signal and a condition. Whichever source fires stops the whole pipeline: the root records
that source's reason, every stage ends CANCELLED with reason PARENT, and the items that
reached the sink are exactly the transformed prefix of the produced ones (nothing
duplicated, reordered or skipped)."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import pytest

from hother.cancelable import (
    Cancellable,
    CancellationReason,
    CancellationToken,
    OperationStatus,
)
from hother.cancelable.sources.condition import ConditionSource
from hother.cancelable.sources.signal import SignalSource

TARGET = 30
EXPECTED_REASON = {
    "condition": CancellationReason.CONDITION,
    "token": CancellationReason.MANUAL,
    "timeout": CancellationReason.TIMEOUT,
    "signal": CancellationReason.SIGNAL,
}


@pytest.mark.parametrize("cause", sorted(EXPECTED_REASON))
async def test_pipeline_stops_on_any_of_its_sources(cause: str, backend: Any) -> None:
    cancel_exc = backend.get_cancelled_exc_class()
    stop_token = CancellationToken()
    sink: list[int] = []
    reached = threading.Event()
    original_handler = signal.getsignal(signal.SIGUSR2)

    root = Cancellable.with_timeout(0.3 if cause == "timeout" else 60, name="pipeline")
    root = root.combine(Cancellable.with_token(stop_token))
    root.add_source(SignalSource(signal.SIGUSR2))
    root.add_source(ConditionSource(lambda: cause == "condition" and len(sink) >= TARGET, 0.002))
    q1 = backend.create_queue(5)
    q2 = backend.create_queue(5)
    stages: dict[str, Cancellable] = {}

    async def stage(name: str, work: Any) -> None:
        op = Cancellable(name=name, parent=root)
        stages[name] = op
        async with op:
            await work()

    async def produce() -> None:
        i = 0
        while True:
            await q1.put(i)
            i += 1
            await backend.sleep(0.001)

    async def transform() -> None:
        while True:
            item = await q1.get()
            await q2.put(item * 2)

    async def consume() -> None:
        while True:
            sink.append(await q2.get())
            if len(sink) == TARGET:
                reached.set()

    def operator() -> None:  # a plain thread: a watchdog / an operator console
        if not reached.wait(30):
            return
        if cause == "token":
            stop_token.cancel_sync(CancellationReason.MANUAL, "operator stop")
        elif cause == "signal":
            os.kill(os.getpid(), signal.SIGUSR2)

    thread = threading.Thread(target=operator)
    thread.start()
    try:
        with pytest.raises(cancel_exc):
            async with root:
                async with backend.create_task_group() as tg:
                    tg.start_soon(stage, "producer", produce)
                    tg.start_soon(stage, "transformer", transform)
                    tg.start_soon(stage, "sink", consume)
    finally:
        reached.set()
        thread.join(10)

    assert root.status == OperationStatus.CANCELLED
    assert root.context.cancel_reason == EXPECTED_REASON[cause], root.context
    if cause == "token":
        assert root.context.cancel_message == "operator stop"
    assert set(stages) == {"producer", "transformer", "sink"}
    for name, op in stages.items():
        assert op.status == OperationStatus.CANCELLED, (name, op.status)
        assert op.context.cancel_reason == CancellationReason.PARENT, (name, op.context)
    assert sink == [2 * i for i in range(len(sink))]
    assert len(sink) >= (1 if cause == "timeout" else TARGET)
    assert signal.getsignal(signal.SIGUSR2) == original_handler
