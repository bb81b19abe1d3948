"""Shared fixtures of the cancellation-source tests."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from hother.cancelable.core.models import CancellationReason


class CallbackRecorder:
    """Records ``(reason, message)`` cancel callbacks and ``(source, error)`` error callbacks."""

    def __init__(self) -> None:
        self.calls: list[tuple[CancellationReason, str]] = []
        self.errors: list[tuple[Any, BaseException]] = []
        self.threads: list[int] = []

    def __call__(self, reason: CancellationReason, message: str) -> None:
        self.calls.append((reason, message))
        self.threads.append(threading.get_ident())

    def on_error(self, source: Any, error: BaseException) -> None:
        self.errors.append((source, error))


@pytest.fixture
def recorder() -> CallbackRecorder:
    """A fresh :class:`CallbackRecorder`."""
    return CallbackRecorder()


class SignalLog:
    """A Python-level handler that records the signals it receives."""

    def __init__(self) -> None:
        self.received: list[int] = []

    def __call__(self, signum: int, frame: Any) -> None:
        self.received.append(signum)


@pytest.fixture
def usr_handlers() -> Iterator[SignalLog]:
    """Install a recording handler for SIGUSR1 and SIGUSR2 (the 'original' handlers).

    Also guarantees a stray signal never kills the test process; restores whatever was
    installed before the test.
    """
    log = SignalLog()
    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGUSR2)}
    for s in saved:
        signal.signal(s, log)
    try:
        yield log
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
