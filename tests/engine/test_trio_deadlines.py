"""The with_timeout deadlines of the trio fast path (TrioDeadlines + one system task per run).

On trio, ``Cancellable.with_timeout(t)`` gets a ``trio.CancelScope()`` without a deadline
(made when first needed: test_trio_lazy_scope.py) and keeps the deadline in the engine's
per-run heap, served by one system task. These tests pin
what that must preserve: the cancellation at the deadline with reason TIMEOUT, an expired
deadline cancelling at enter, earlier deadlines waking the service, entries leaving the heap
at exit, one service per run, and trio's own deadline when the run has another clock.
"""

from __future__ import annotations

import gc
import math
import weakref
from typing import Any

import pytest
import trio
import trio.testing

from hother.cancelable import Cancellable
from hother.cancelable.core import cancellable as cancellable_module
from hother.cancelable.core.models import CancellationReason, OperationStatus

SERVICE_NAME = "hother.cancelable: with_timeout deadlines"


def run_deadlines() -> Any:
    """The TrioDeadlines of the current run (None before the first with_timeout)."""
    runner = trio._core._run.GLOBAL_RUN_CONTEXT.runner
    return cancellable_module._trio_run_state.get(runner)


def service_tasks() -> list[str]:
    root = trio.lowlevel.current_root_task()
    names: list[str] = []
    todo = [root]
    while todo:
        task = todo.pop()
        names.append(task.name)
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return [n for n in names if n == SERVICE_NAME]


def test_deadline_cancels_with_reason_timeout() -> None:
    async def main() -> None:
        with trio.fail_after(10):  # a guard against a hang, not a timing assertion
            with pytest.raises(trio.Cancelled):
                async with Cancellable.with_timeout(0.01) as op:
                    await trio.sleep_forever()
        assert op.status == OperationStatus.CANCELLED
        assert op._cancel_reason == CancellationReason.TIMEOUT
        assert op._timed_out
        assert isinstance(op.scope, trio.CancelScope)
        assert op.scope.deadline == math.inf  # the engine, not trio, keeps the deadline
        assert op.scope.cancel_called
        assert run_deadlines()._len() == 0

    trio.run(main)


def test_one_service_per_run_and_entries_leave_at_exit() -> None:
    async def main() -> None:
        assert run_deadlines() is None  # nothing started before the first deadline
        for _ in range(3):
            async with Cancellable.with_timeout(30):
                pass
        deadlines = run_deadlines()
        assert deadlines is not None and deadlines._len() == 0
        await trio.sleep(0)  # let the service start
        assert service_tasks() == [SERVICE_NAME]

        entered = trio.Event()
        release = trio.Event()
        live = 5

        async def hold(i: int) -> None:
            async with Cancellable.with_timeout(30 + i):
                if deadlines._len() == live:
                    entered.set()
                await release.wait()

        async with trio.open_nursery() as nursery:
            for i in range(live):
                nursery.start_soon(hold, i)
            await entered.wait()
            assert deadlines._len() == live
            release.set()
        assert deadlines._len() == 0
        assert service_tasks() == [SERVICE_NAME]

    trio.run(main)


def test_each_run_has_its_own_service_and_the_end_of_a_run_releases_it() -> None:
    seen: list[Any] = []
    kept: list[weakref.ref[Any]] = []

    async def main() -> None:
        async with Cancellable.with_timeout(30) as op:
            kept.append(weakref.ref(op))
            seen.append(run_deadlines())

    trio.run(main)
    trio.run(main)
    assert seen[0] is not seen[1]
    assert seen[0]._len() == 0 and seen[1]._len() == 0
    gc.collect()
    assert all(ref() is None for ref in kept)  # the heap keeps no finished operation


def test_expired_at_enter_is_cancelled_before_the_body_checkpoints() -> None:
    async def main() -> None:
        # warm up: the service exists, and its clock offset is known
        async with Cancellable.with_timeout(30):
            pass
        reached = []
        with pytest.raises(trio.Cancelled):
            async with Cancellable.with_timeout(1e-9) as op:
                reached.append("body")
                await trio.lowlevel.checkpoint()
                reached.append("after the checkpoint")
        assert reached == ["body"]
        assert op._timed_out and op._cancel_reason == CancellationReason.TIMEOUT
        assert run_deadlines()._len() == 0

    trio.run(main)


def test_an_earlier_deadline_wakes_the_service_earlier() -> None:
    async def main() -> None:
        long_started = trio.Event()
        outcome: dict[str, Any] = {}

        async def long() -> None:
            async with Cancellable.with_timeout(60) as op:
                outcome["long"] = op
                long_started.set()
                await trio.sleep_forever()

        with trio.fail_after(10):  # guard only
            async with trio.open_nursery() as nursery:
                nursery.start_soon(long)
                await long_started.wait()
                await trio.sleep(0)  # the service sleeps until the 60 s deadline now
                with pytest.raises(trio.Cancelled):
                    async with Cancellable.with_timeout(0.02) as short:
                        await trio.sleep_forever()
                assert short._cancel_reason == CancellationReason.TIMEOUT
                assert outcome["long"].status == OperationStatus.RUNNING
                assert run_deadlines()._len() == 1
                nursery.cancel_scope.cancel()
        assert outcome["long"].status == OperationStatus.CANCELLED
        assert outcome["long"]._cancel_reason == CancellationReason.MANUAL
        assert run_deadlines()._len() == 0

    trio.run(main)


def test_nested_deadlines_the_inner_one_fires_first() -> None:
    async def main() -> None:
        with trio.fail_after(10):
            async with Cancellable.with_timeout(60) as outer:
                with pytest.raises(trio.Cancelled):
                    async with Cancellable.with_timeout(0.01) as inner:
                        await trio.sleep_forever()
                assert outer.status == OperationStatus.RUNNING
                assert not outer._timed_out
        assert inner._timed_out
        assert outer.status == OperationStatus.COMPLETED

    trio.run(main)


def test_a_run_with_another_clock_keeps_trio_deadlines() -> None:
    async def main() -> None:
        with pytest.raises(trio.Cancelled):
            async with Cancellable.with_timeout(5) as op:
                assert op.scope.deadline == trio.current_time() + 5  # trio's own deadline
                await trio.sleep_forever()
        assert op._cancel_reason == CancellationReason.TIMEOUT
        assert not op._timed_out
        assert run_deadlines() is None

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_slow_exit_releases_the_deadline_entry() -> None:
    """A fast-entered block that leaves through the Python exit (a callback was added)."""

    async def main() -> None:
        calls: list[str] = []
        async with Cancellable.with_timeout(30) as op:
            op.on_complete(lambda ctx: calls.append(ctx.status.value))
            assert run_deadlines()._len() == 1
        assert calls == ["completed"]
        assert run_deadlines()._len() == 0

    trio.run(main)


def test_a_failed_service_spawn_neither_fails_the_block_nor_hangs_the_run() -> None:
    """trio registers a system task before scheduling it: a MemoryError in between (here
    injected into trio's reschedule) must not leave the run waiting for it forever, and the
    block still gets its deadline (from trio itself, the fall-back)."""
    from .isolated import run_python

    out = run_python(
        """
        import trio
        from trio._core import _run
        from hother.cancelable import Cancellable
        from hother.cancelable.core import cancellable as cm

        original = _run.Runner.reschedule
        failed = []

        def reschedule(self, task, next_send=_run._NO_SEND):
            if task.name == cm._TRIO_SERVICE_NAME and not failed:
                failed.append(task.name)
                raise MemoryError("injected")
            return original(self, task, next_send)

        _run.Runner.reschedule = reschedule

        async def main():
            with trio.fail_after(10):
                try:
                    async with Cancellable.with_timeout(0.01) as op:
                        await trio.sleep_forever()
                except trio.Cancelled:
                    pass
            return op

        op = trio.run(main)
        print(failed == [cm._TRIO_SERVICE_NAME], op._cancel_reason.value, op._timed_out)
        """,
        timeout=60,
    )
    assert out.split()[-3:] == ["True", "timeout", "False"]
