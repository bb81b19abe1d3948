"""Thread hammer (short version; ``make soak`` runs the long one).

16 plain threads cancel, link, check and register callbacks on shared tokens (and cancel
operations) while tasks on two event loops, each in its own thread, wait on those tokens.
Every callback must run exactly once, every waiter must wake, every operation must end
CANCELLED, and nothing may deadlock: all joins are bounded, so a deadlock fails the test
with the stacks of every thread instead of hanging it.
"""

from __future__ import annotations

import pytest

from .workloads import thread_hammer

LOOP_PAIRS = [("asyncio", "trio"), ("uvloop", "anyio"), ("asyncio", "asyncio")]


@pytest.mark.parametrize("loops", LOOP_PAIRS, ids=["+".join(p) for p in LOOP_PAIRS])
def test_thread_hammer(loops: tuple[str, str]) -> None:
    report = thread_hammer(
        loops=loops, rounds=2, tokens=64, threads=16, ops_per_thread=1500, join_timeout=30.0
    )
    assert not report.errors, report.line() + "\n  " + "\n  ".join(report.errors[:20])
    assert report.callbacks_run == report.callbacks_registered > 0, report.line()
    assert report.waiters_woken == report.operations_cancelled == 2 * 2 * 64, report.line()
