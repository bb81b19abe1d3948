"""Testing support for code built on hother.cancelable.

* the virtual clock for asyncio (:mod:`.clock`): :class:`VirtualClock`,
  :class:`VirtualClockEventLoop`, :func:`virtual_clock_loop_factory`,
  :func:`run_with_virtual_clock`, :func:`trio_mock_clock`;
* the test helpers of :mod:`hother.cancelable.utils.testing` (mock token, recorder, manual
  source, time-window assertions, scenarios), re-exported here.

The pytest plugin (``hother.cancelable.pytest_plugin``, enabled on install) adds the run
modes, the ``virtual_clock`` marker and fixture, and the ``backend`` fixtures; see
``docs/testing.md``.
"""

from __future__ import annotations

from ..utils.testing import (
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
from .clock import (
    VirtualClock,
    VirtualClockEventLoop,
    run_with_virtual_clock,
    trio_mock_clock,
    virtual_clock_loop_factory,
)

__all__ = [
    "CancellationScenario",
    "CancelledBlock",
    "ManualSource",
    "MockCancellationToken",
    "OperationRecorder",
    "TestOperationRecorder",
    "VirtualClock",
    "VirtualClockEventLoop",
    "assert_cancellation_within",
    "assert_cancelled_within",
    "create_slow_stream",
    "current_time",
    "run_with_timeout_test",
    "run_with_virtual_clock",
    "sample_async_operation",
    "trio_mock_clock",
    "virtual_clock_loop_factory",
]
