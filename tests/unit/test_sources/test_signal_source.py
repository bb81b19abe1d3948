"""SignalSource: validation, real signal delivery, shared watchers, handler restoration."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from typing import Any

import pytest

from hother.cancelable.core.models import CancellationReason
from hother.cancelable.sources.signal import SignalSource

USR1 = signal.SIGUSR1
USR2 = signal.SIGUSR2


def test_defaults() -> None:
    src = SignalSource()
    assert src.signals == {signal.SIGINT, signal.SIGTERM}
    assert src.reason is CancellationReason.SIGNAL
    assert src.triggered is False
    assert src.signal_number is None
    assert src.name == "SignalSource"
    assert SignalSource(USR1, USR1, name="usr").signals == {USR1}
    assert isinstance(SignalSource._handlers, dict)


@pytest.mark.parametrize("bad", ["SIGTERM", 1.0, None, True])
def test_non_int_signal_is_a_type_error(bad: Any) -> None:
    with pytest.raises(TypeError, match="signal"):
        SignalSource(bad)


@pytest.mark.parametrize("bad", [signal.SIGKILL, signal.SIGSTOP])
def test_uncatchable_signal_is_a_value_error(bad: int) -> None:
    with pytest.raises(ValueError, match=signal.Signals(bad).name):
        SignalSource(bad)


@pytest.mark.parametrize("bad", [0, -1, 100000])
def test_unknown_signal_number_is_a_value_error(bad: int) -> None:
    with pytest.raises(ValueError, match=str(bad)):
        SignalSource(bad)


async def _wait_for(backend: Any, predicate: Any, limit: float = 5.0) -> None:
    deadline = backend.current_time() + limit
    while not predicate() and backend.current_time() < deadline:
        await backend.sleep(0.005)


async def test_signal_cancels_the_scope_and_restores_the_handler(
    backend: Any, recorder: Any, usr_handlers: Any
) -> None:
    original = signal.getsignal(USR1)
    src = SignalSource(USR1)
    src.set_cancel_callback(recorder)
    scope = backend.create_cancel_scope()
    await src.start_monitoring(scope)
    assert USR1 in SignalSource._handlers
    assert src in SignalSource._handlers[USR1]
    assert signal.getsignal(USR1) is not original
    start = backend.current_time()
    with scope:
        os.kill(os.getpid(), USR1)
        await backend.sleep(10)
    elapsed = backend.current_time() - start
    await src.stop_monitoring()
    assert scope.cancelled_caught
    assert elapsed < 5
    assert src.triggered and src.signal_number == USR1
    assert recorder.calls == [(CancellationReason.SIGNAL, f"Received signal SIGUSR1 ({int(USR1)})")]
    assert recorder.threads == [threading.get_ident()]  # delivered in the loop thread
    assert not SignalSource._handlers.get(USR1)
    assert signal.getsignal(USR1) is original
    assert usr_handlers.received == []  # the source consumed it; the original did not run
    # after stop, the original handler receives the signal again
    os.kill(os.getpid(), USR1)
    await _wait_for(backend, lambda: usr_handlers.received)
    assert usr_handlers.received == [USR1]


async def test_signal_sent_from_a_plain_thread(
    backend: Any, recorder: Any, usr_handlers: Any
) -> None:
    src = SignalSource(USR2, USR1)
    src.set_cancel_callback(recorder)
    scope = backend.create_cancel_scope()
    await src.start_monitoring(scope)
    sender = threading.Thread(target=os.kill, args=(os.getpid(), USR2))
    with scope:
        sender.start()
        await backend.sleep(10)
    sender.join()
    await src.stop_monitoring()
    assert scope.cancelled_caught
    assert src.signal_number == USR2
    assert recorder.calls == [(CancellationReason.SIGNAL, f"Received signal SIGUSR2 ({int(USR2)})")]
    assert signal.getsignal(USR1) is usr_handlers and signal.getsignal(USR2) is usr_handlers


async def test_two_sources_share_a_signal(backend: Any, usr_handlers: Any) -> None:
    first, second = SignalSource(USR1, name="first"), SignalSource(USR1, name="second")
    scope_a, scope_b = backend.create_cancel_scope(), backend.create_cancel_scope()
    await first.start_monitoring(scope_a)
    await second.start_monitoring(scope_b)
    assert len(SignalSource._handlers[USR1]) >= 2
    os.kill(os.getpid(), USR1)
    await _wait_for(backend, lambda: scope_a.cancel_called and scope_b.cancel_called)
    assert first.triggered and second.triggered
    await second.stop_monitoring()
    assert signal.getsignal(USR1) is not usr_handlers  # `first` still watches
    await first.stop_monitoring()
    assert not SignalSource._handlers.get(USR1)
    assert signal.getsignal(USR1) is usr_handlers


async def test_stopped_source_is_not_fired(backend: Any, usr_handlers: Any) -> None:
    watching, stopped = SignalSource(USR1, name="watching"), SignalSource(USR1, name="stopped")
    scope_w, scope_s = backend.create_cancel_scope(), backend.create_cancel_scope()
    await watching.start_monitoring(scope_w)
    await stopped.start_monitoring(scope_s)
    await stopped.stop_monitoring()
    await stopped.stop_monitoring()  # idempotent
    os.kill(os.getpid(), USR1)
    await _wait_for(backend, lambda: scope_w.cancel_called)
    await watching.stop_monitoring()
    assert watching.triggered and scope_w.cancel_called
    assert not stopped.triggered and not scope_s.cancel_called


async def test_restart_after_stop(backend: Any, usr_handlers: Any) -> None:
    src = SignalSource(USR1)
    for _ in range(2):
        scope = backend.create_cancel_scope()
        await src.start_monitoring(scope)
        with pytest.raises(RuntimeError):
            await src.start_monitoring(backend.create_cancel_scope())
        with scope:
            os.kill(os.getpid(), USR1)
            await backend.sleep(10)
        await src.stop_monitoring()
        assert scope.cancelled_caught and src.triggered
        assert signal.getsignal(USR1) is usr_handlers


async def test_default_signals_install_and_restore(backend: Any) -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    src = SignalSource()
    await src.start_monitoring(backend.create_cancel_scope())
    try:
        assert signal.SIGINT in SignalSource._handlers
        assert signal.SIGTERM in SignalSource._handlers
    finally:
        await src.stop_monitoring()
    assert {s: signal.getsignal(s) for s in before} == before


@pytest.mark.modes(
    "asyncio",
    "anyio",
    reason="trio has no loop.add_signal_handler; uvloop does not expose its handlers "
    "(see test_uvloop_existing_loop_handler_is_reported)",
)
async def test_asyncio_loop_handler_is_kept(usr_handlers: Any) -> None:
    """A handler the event loop already had for the signal is put back after stop."""
    loop = asyncio.get_running_loop()
    seen: list[str] = []
    loop.add_signal_handler(USR1, seen.append, "loop handler")
    try:
        from hother.cancelable.backends import get_backend

        backend = get_backend()
        src = SignalSource(USR1)
        scope = backend.create_cancel_scope()
        await src.start_monitoring(scope)
        with scope:
            os.kill(os.getpid(), USR1)
            await backend.sleep(10)
        await src.stop_monitoring()
        assert scope.cancelled_caught and seen == []
        os.kill(os.getpid(), USR1)
        for _ in range(500):
            if seen:
                break
            await backend.sleep(0.005)
        assert seen == ["loop handler"]
    finally:
        loop.remove_signal_handler(USR1)


def test_start_outside_the_main_thread_is_a_runtime_error(usr_handlers: Any) -> None:
    errors: list[BaseException] = []

    async def attempt() -> None:
        from hother.cancelable.backends import get_backend

        src = SignalSource(USR1)
        try:
            await src.start_monitoring(get_backend().create_cancel_scope())
        except BaseException as exc:
            errors.append(exc)
        assert not src.is_monitoring

    thread = threading.Thread(target=asyncio.run, args=(attempt(),))
    thread.start()
    thread.join(10)
    assert len(errors) == 1
    assert isinstance(errors[0], RuntimeError)
    assert "main thread" in str(errors[0])
    assert signal.getsignal(USR1) is usr_handlers
    assert not SignalSource._handlers.get(USR1)


@pytest.mark.modes("uvloop", reason="uvloop-specific limitation")
async def test_uvloop_existing_loop_handler_is_reported(
    usr_handlers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from hother.cancelable.backends import get_backend

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(USR1, lambda: None)
    try:
        src = SignalSource(USR1)
        with caplog.at_level(logging.WARNING, logger="hother.cancelable"):
            await src.start_monitoring(get_backend().create_cancel_scope())
        await src.stop_monitoring()
        assert any("cannot be restored" in r.getMessage() for r in caplog.records)
    finally:
        loop.remove_signal_handler(USR1)
        signal.signal(USR1, usr_handlers)


def test_a_source_leaked_by_a_closed_loop_does_not_block_the_next_loop(
    usr_handlers: Any,
) -> None:
    from hother.cancelable.backends import get_backend

    leaked = SignalSource(USR1, name="leaked")

    async def leak() -> None:
        await leaked.start_monitoring(get_backend().create_cancel_scope())  # never stopped

    async def use() -> bool:
        src = SignalSource(USR1, name="fresh")
        scope = get_backend().create_cancel_scope()
        await src.start_monitoring(scope)
        with scope:
            os.kill(os.getpid(), USR1)
            await asyncio.sleep(10)
        await src.stop_monitoring()
        return bool(scope.cancelled_caught)

    asyncio.run(leak())
    assert asyncio.run(use()) is True
    assert not leaked.triggered
    assert signal.getsignal(USR1) is usr_handlers
    assert not SignalSource._handlers.get(USR1)
