"""Shared test fixtures.

The run-mode machinery (every unmarked ``async def`` test runs under asyncio, uvloop,
anyio-on-asyncio and trio; fixtures ``run_mode``, ``backend_type``, ``backend``) comes from
the package's pytest plugin, ``hother.cancelable.pytest_plugin``, registered through its
``pytest11`` entry point. It is loaded here explicitly too, so the suite also runs from a
source checkout where the entry point is not installed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

try:  # the entry point normally registers it already
    import importlib.metadata as _md

    _registered = any(
        ep.value == "hother.cancelable.pytest_plugin" for ep in _md.entry_points(group="pytest11")
    )
except Exception:  # pragma: no cover
    _registered = False
if not _registered:  # pragma: no cover
    pytest_plugins = ["hother.cancelable.pytest_plugin"]


@pytest.fixture(autouse=True)
def _reset_anyio_bridge() -> Iterator[None]:
    """Give every test a fresh ``AnyioBridge`` singleton (no loop remembered across tests)."""
    yield
    import sys

    module = sys.modules.get("hother.cancelable.utils.anyio_bridge")
    if module is not None:
        bridge = module.AnyioBridge._instance
        if bridge is not None:
            bridge.stop()
        module.AnyioBridge._instance = None


class ThreadRunner:
    """Run callables in plain (non-loop) threads and join them at the end of the test."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def start(self, fn: Callable[..., Any], *args: Any) -> threading.Thread:
        """Start ``fn(*args)`` in a new daemon thread; exceptions are re-raised at teardown."""

        def run() -> None:
            try:
                fn(*args)
            except BaseException as exc:  # pragma: no cover - reported at teardown
                self.errors.append(exc)

        thread = threading.Thread(target=run, daemon=True, name="test-plain-thread")
        self.threads.append(thread)
        thread.start()
        return thread

    def join(self, timeout: float = 10.0) -> None:
        """Join every thread (generous timeout) and re-raise the first error."""
        for thread in self.threads:
            thread.join(timeout)
            assert not thread.is_alive(), "a helper thread did not finish"
        if self.errors:
            raise self.errors[0]


@pytest.fixture
def plain_thread() -> Iterator[ThreadRunner]:
    """A :class:`ThreadRunner`; its threads are joined (and errors raised) after the test."""
    runner = ThreadRunner()
    yield runner
    runner.join()
