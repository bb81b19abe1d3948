"""Faults: defined outcomes when things go wrong (documented in ``docs/errors.md`` (Faults)).

* callbacks and predicates that raise;
* a loop closed (or a trio run finished) while a token is shared with it;
* cancelling after the loop closed;
* a thread cancel racing with normal completion;
* ``KeyboardInterrupt`` inside a shielded block;
* exceptions (and ``BaseException``) raised by ``__aexit__`` callbacks and source shutdowns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
import threading
from typing import Any

import pytest

from hother.cancelable import (
    Cancellable,
    CancellationReason,
    CancellationToken,
    OperationRegistry,
    OperationStatus,
    _engine,
    current_operation,
)
from hother.cancelable.pytest_plugin import run_in_mode
from hother.cancelable.sources.base import CancellationSource
from hother.cancelable.sources.condition import ConditionSource

LOG = "hother.cancelable"


def _errors(caplog: pytest.LogCaptureFixture, text: str = "") -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR and text in r.getMessage()]


# ---------------------------------------------------------------- raising callbacks


async def test_raising_token_callbacks_do_not_stop_cancellation(
    backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Sync and async token callbacks that raise: logged at ERROR, the token is cancelled,
    ``cancel()`` returns True and every other callback still runs, in order."""
    token = CancellationToken()
    ran: list[str] = []

    def bad_sync(_t: Any) -> None:
        ran.append("bad_sync")
        raise ValueError("sync boom")

    async def bad_async(_t: Any) -> None:
        ran.append("bad_async")
        raise ValueError("async boom")

    async def good(_t: Any) -> None:
        ran.append("good")

    with caplog.at_level(logging.ERROR, logger=LOG):
        await token.register_callback(bad_sync)
        await token.register_callback(bad_async)
        await token.register_callback(good)
        assert await token.cancel(CancellationReason.MANUAL, "stop") is True
        await backend.sleep(0)
    assert token.is_cancelled and token.message == "stop"
    assert ran == ["bad_sync", "bad_async", "good"]
    assert len(_errors(caplog)) >= 2, [r.getMessage() for r in caplog.records]


async def test_raising_operation_callbacks_are_logged_and_swallowed(
    backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """on_start/on_progress/on_complete/on_cancel/on_error callbacks that raise: logged,
    swallowed, the next callback runs, the outcome of the block is unchanged."""
    cancel_exc = backend.get_cancelled_exc_class()
    seen: list[str] = []

    def boom(*_a: Any) -> None:
        raise RuntimeError("callback boom")

    def note(name: str) -> Any:
        return lambda *_a: seen.append(name)

    with caplog.at_level(logging.ERROR, logger=LOG):
        ok = Cancellable(name="ok")
        for register in (ok.on_start, ok.on_progress, ok.on_complete):
            register(boom)
        ok.on_start(note("start")).on_progress(note("progress")).on_complete(note("complete"))
        async with ok:
            await ok.report_progress("half")
        assert ok.status == OperationStatus.COMPLETED

        cancelled = Cancellable.with_timeout(1e-6).on_cancel(boom).on_cancel(note("cancel"))
        with pytest.raises(cancel_exc):
            async with cancelled:
                await backend.sleep(30)
        assert cancelled.status == OperationStatus.CANCELLED
        assert cancelled.context.cancel_reason == CancellationReason.TIMEOUT

        failed = Cancellable().on_error(boom).on_error(note("error"))
        with pytest.raises(KeyError, match="body"):
            async with failed:
                raise KeyError("body")
        assert failed.status == OperationStatus.FAILED
    assert seen == ["start", "progress", "complete", "cancel", "error"]
    assert len(_errors(caplog, "raised")) >= 5, [r.getMessage() for r in caplog.records]


async def test_raising_predicate_stops_checking_without_cancelling(
    backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A condition that raises: checking stops, the error is logged, stored on the source
    and passed to ``on_error``; the operation is not cancelled and completes."""
    checks = 0
    stopped = backend.create_event()

    def predicate() -> bool:
        nonlocal checks
        checks += 1
        stopped.set()
        raise ZeroDivisionError("predicate boom")

    errors: list[BaseException] = []
    source = ConditionSource(predicate, check_interval=0.001)
    op = Cancellable().add_source(source).on_error(lambda _ctx, err: errors.append(err))
    with caplog.at_level(logging.ERROR, logger=LOG):
        async with op:
            await stopped.wait()
            for _ in range(20):  # many would-be check intervals: no further check
                await backend.sleep(0.002)
    assert checks == 1
    assert op.status == OperationStatus.COMPLETED
    assert isinstance(source.error, ZeroDivisionError)
    assert len(errors) == 1 and isinstance(errors[0], ZeroDivisionError)
    assert _errors(caplog), "the predicate's error was not logged"


async def test_raising_source_cancel_callback_still_cancels_the_scope(
    backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A source whose cancel callback raises: logged, and the scope is cancelled anyway."""
    source = ConditionSource(lambda: False, check_interval=60)

    def bad_callback(_reason: Any, _message: str) -> None:
        raise RuntimeError("cancel callback boom")

    source.set_cancel_callback(bad_callback)
    scope = backend.create_cancel_scope()
    await source.start_monitoring(scope)
    try:
        with caplog.at_level(logging.ERROR, logger=LOG):
            await source.trigger_cancellation("fired")
    finally:
        await source.stop_monitoring()
    assert scope.cancel_called
    assert source.triggered
    assert _errors(caplog, "cancel callback"), [r.getMessage() for r in caplog.records]


class _FailingStopSource(CancellationSource):
    """A source whose stop_monitoring raises (after the base bookkeeping)."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(CancellationReason.MANUAL, "failing-stop")
        self.exc = exc

    async def start_monitoring(self, scope: Any) -> None:
        await super().start_monitoring(scope)

    async def stop_monitoring(self) -> None:
        await super().stop_monitoring()
        raise self.exc


async def test_exceptions_during_exit_keep_the_outcome(
    backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A source that fails to stop and a raising ``on_complete`` during ``__aexit__``: both
    logged and swallowed; the other sources are still stopped; status, registry entry and
    ``current_operation`` are cleaned up; the block's own result is unchanged."""
    other = ConditionSource(lambda: False, check_interval=60)
    op = Cancellable(register_globally=True)
    op.add_source(other).add_source(_FailingStopSource(RuntimeError("stop boom")))
    op.on_complete(lambda _ctx: 1 / 0)
    registry = OperationRegistry.get_instance()
    with caplog.at_level(logging.ERROR, logger=LOG):
        async with op:
            assert registry.get_operation_sync(op.operation_id) is op
    assert op.status == OperationStatus.COMPLETED
    assert not other.is_monitoring
    assert registry.get_operation_sync(op.operation_id) is None
    assert current_operation() is None
    assert len(_errors(caplog)) >= 2, [r.getMessage() for r in caplog.records]

    with pytest.raises(LookupError, match="body"):
        async with Cancellable().add_source(_FailingStopSource(RuntimeError("stop"))):
            raise LookupError("body")


async def test_base_exception_from_an_exit_callback_propagates_after_cleanup(
    backend: Any,
) -> None:
    """A ``BaseException`` (here ``SystemExit``) raised by an exit callback is not swallowed:
    it leaves the ``async with`` (replacing the block's outcome), after the cleanup ran
    (registry entry removed, ``current_operation`` restored, sources stopped)."""
    source = ConditionSource(lambda: False, check_interval=60)
    op = Cancellable(register_globally=True).add_source(source)

    def exit_now(_ctx: Any) -> None:
        raise SystemExit(3)

    op.on_complete(exit_now)
    with pytest.raises(SystemExit):
        async with op:
            pass
    assert op.status == OperationStatus.COMPLETED
    assert OperationRegistry.get_instance().get_operation_sync(op.operation_id) is None
    assert current_operation() is None
    assert not source.is_monitoring


# ---------------------------------------------------------------- KeyboardInterrupt


async def test_keyboard_interrupt_in_a_shielded_block(backend: Any) -> None:
    """``KeyboardInterrupt`` raised inside ``shield()``: it propagates unchanged through
    the shield and the operation (never turned into a cancellation, never swallowed); the
    operation ends FAILED, no ``on_error``/``on_cancel`` callback runs (it is not an
    ``Exception``), the shield is released and the cleanup ran."""
    calls: list[str] = []
    op = Cancellable.with_timeout(60, register_globally=True)
    op.on_error(lambda *_a: calls.append("error")).on_cancel(lambda *_a: calls.append("cancel"))
    with pytest.raises(KeyboardInterrupt):
        async with op:
            async with op.shield():
                await backend.sleep(0)
                raise KeyboardInterrupt
    assert op.status == OperationStatus.FAILED
    assert calls == []
    assert op._shields == []
    assert current_operation() is None
    assert OperationRegistry.get_instance().get_operation_sync(op.operation_id) is None
    # the task is not left cancelled or inside a scope
    await backend.sleep(0)


# ---------------------------------------------------------------- closed loops


@pytest.mark.parametrize("dead", ["asyncio", "uvloop", "trio"])
def test_token_shared_with_a_closed_loop(dead: str, caplog: pytest.LogCaptureFixture) -> None:
    """A callback registered from a loop (or trio run) that has ended is dropped, with an
    ERROR log, when the token is cancelled; ``cancel_sync`` still returns True and the
    callbacks of live loops run."""
    token = CancellationToken()
    ran: list[str] = []

    async def register() -> None:
        await token.register_callback(lambda _t: ran.append("dead loop"))

    run_in_mode(dead, register)

    async def live() -> None:
        loop_done = asyncio.get_running_loop().create_future()
        await token.register_callback(lambda _t: ran.append("live loop"))
        token.register_callback_sync(lambda _t: loop_done.set_result(None))
        threading.Thread(target=token.cancel_sync, args=(CancellationReason.SIGNAL,)).start()
        await asyncio.wait_for(loop_done, 10)

    with caplog.at_level(logging.ERROR, logger=LOG):
        run_in_mode("asyncio", live)
    assert token.is_cancelled and token.reason == CancellationReason.SIGNAL
    assert ran == ["live loop"]
    assert _errors(caplog, "dropped"), [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("mode", ["asyncio", "uvloop"])
def test_cancel_after_the_loop_closed(mode: str) -> None:
    """An operation whose loop was closed while its block was suspended (the task was
    abandoned): ``cancel_sync()``, a token cancel and a direct ``scope.cancel()`` from
    another thread afterwards raise nothing and mark the state."""
    import uvloop

    loop = uvloop.new_event_loop() if mode == "uvloop" else asyncio.new_event_loop()
    token = CancellationToken()
    ops: list[Cancellable] = []

    async def body() -> None:
        op = Cancellable.with_token(token)
        ops.append(op)
        async with op:
            await asyncio.Event().wait()

    task = loop.create_task(body())
    loop.run_until_complete(asyncio.sleep(0.01))
    assert ops and ops[0].is_running
    loop.close()  # the task is abandoned inside its operation
    op = ops[0]
    errors: list[BaseException] = []

    def from_thread() -> None:
        try:
            assert op.cancel_sync(CancellationReason.MANUAL, "late") is True
            token.cancel_sync()
            op.scope.cancel()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=from_thread)
    t.start()
    t.join(10)
    assert not t.is_alive() and errors == []
    assert op.token.is_cancelled and op.scope.cancel_called
    assert not task.done()  # abandoned, never resumed: nothing ran on the closed loop
    # the engine keeps the abandoned task as "inside its scope" (see
    # test_leaks.py::test_abandoned_task_of_a_closed_loop_is_freed): leave no state behind
    _engine._task_scopes.pop(task, None)
    with contextlib.suppress(RuntimeError):  # see test_finalized_outside_its_loop...
        task.get_coro().close()


@pytest.mark.parametrize("mode", ["asyncio", "uvloop"])
@pytest.mark.parametrize("kind", ["fast", "timeout", "callbacks"])
def test_operation_finalized_outside_its_loop_exits_quietly(mode: str, kind: str) -> None:
    """The coroutine of a task abandoned inside an operation is closed after its loop was
    closed (``coro.close()``, as the garbage collector does): ``GeneratorExit`` goes through
    the ``async with`` and the operation releases its engine state -- like
    ``asyncio.timeout()`` does. Raising ``RuntimeError`` there ("Cancellable exited outside
    the event loop it was entered in", "CancelScope must be entered inside a running
    asyncio event loop" for the slow path) turns every such finalization into an
    "exception ignored" report and leaves the task registered in the engine."""
    import uvloop

    loop = uvloop.new_event_loop() if mode == "uvloop" else asyncio.new_event_loop()

    def make() -> Cancellable:
        if kind == "timeout":
            return Cancellable.with_timeout(3600)
        if kind == "callbacks":
            return Cancellable().on_complete(lambda _c: None)
        return Cancellable()

    async def body() -> None:
        async with make():
            await asyncio.Event().wait()

    task = loop.create_task(body())
    loop.run_until_complete(asyncio.sleep(0.01))
    loop.close()
    try:
        task.get_coro().close()
    except RuntimeError as exc:
        _engine._task_scopes.pop(task, None)
        pytest.fail(f"closing the abandoned coroutine raised RuntimeError: {exc}")
    assert task not in _engine._task_scopes


def test_cancel_a_token_after_its_trio_run_finished() -> None:
    """trio: cancelling a token whose waiter's run has finished raises nothing."""
    token = CancellationToken()

    async def main() -> None:
        import trio

        async with trio.open_nursery() as nursery:
            await token.register_callback(lambda _t: None)
            nursery.cancel_scope.cancel()

    run_in_mode("trio", main)
    assert token.cancel_sync() is True


# ---------------------------------------------------------------- completion races


@pytest.mark.parametrize("via", ["token", "operation", "scope"])
async def test_thread_cancel_racing_with_completion(
    backend: Any, backend_type: str, via: str
) -> None:
    """A plain thread cancels while the block completes. Whatever wins, the outcome is
    consistent: COMPLETED (nothing raised, ``on_complete`` once) or CANCELLED (the native
    cancel exception raised by the block, ``on_cancel`` once) -- and never a stray
    cancellation hitting the caller after the ``async with``."""
    if via == "scope" and backend_type != "asyncio":
        return  # anyio/trio scopes must be cancelled from their own thread (documented)
    cancel_exc = backend.get_cancelled_exc_class()
    rng = random.Random(7)
    outcomes = {"completed": 0, "cancelled": 0}
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # let the canceller thread interleave with the block
    try:
        await _race(backend, cancel_exc, via, rng, outcomes)
    finally:
        sys.setswitchinterval(old_interval)
    assert sum(outcomes.values()) == 150
    print(f"race outcomes via {via}: {outcomes}")


async def _race(
    backend: Any, cancel_exc: Any, via: str, rng: random.Random, outcomes: dict[str, int]
) -> None:
    for i in range(150):
        token = CancellationToken()
        op = Cancellable.with_token(token) if via == "token" else Cancellable()
        done: list[str] = []
        op.on_complete(lambda _c, done=done: done.append("complete"))
        op.on_cancel(lambda _c, done=done: done.append("cancel"))
        go = threading.Event()
        spin = rng.randrange(0, 2000)

        def cancel(
            op: Cancellable = op,
            token: CancellationToken = token,
            spin: int = spin,
            go: threading.Event = go,
        ) -> None:
            go.wait(10)
            for _ in range(spin):
                pass
            if via == "token":
                token.cancel_sync()
            elif via == "operation":
                op.cancel_sync()
            else:
                op.scope.cancel()

        thread = threading.Thread(target=cancel)
        thread.start()
        raised = False
        try:
            async with op:
                go.set()
                for _ in range(rng.randrange(0, 40000)):
                    pass
                if i % 3 == 0:
                    await backend.sleep(0)
        except cancel_exc:
            raised = True
        thread.join(10)
        assert not thread.is_alive()
        # no stray cancellation after the block, whatever happened inside
        await backend.sleep(0)
        await backend.sleep(0)
        if raised:
            assert op.status == OperationStatus.CANCELLED, (i, op.status)
            assert done == ["cancel"], (i, done)
            outcomes["cancelled"] += 1
        else:
            assert op.status == OperationStatus.COMPLETED, (i, op.status)
            assert done == ["complete"], (i, done)
            outcomes["completed"] += 1
