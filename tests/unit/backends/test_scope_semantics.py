"""Cancel-scope semantics of ``backend.create_cancel_scope()`` in every run mode.

asyncio/uvloop: ``_engine.CancelScope``; anyio/trio: ``anyio.CancelScope``. The same test
body must hold on all of them (trio semantics).
"""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest

from hother.cancelable.backends.base import AsyncBackend, CancelScope

LONG = 10.0


def guard(backend: AsyncBackend, seconds: float = LONG) -> CancelScope:
    """Fail (instead of hanging) when an expected cancellation never comes."""
    return backend.create_cancel_scope(deadline=backend.current_time() + seconds)


async def test_deadline_expiry(backend: AsyncBackend) -> None:
    exc_class = backend.get_cancelled_exc_class()
    reached: list[str] = []
    with guard(backend) as outer:
        with backend.create_cancel_scope(deadline=backend.current_time() + 0.02) as scope:
            assert not scope.cancel_called
            try:
                await backend.sleep(LONG)
            except exc_class:
                reached.append("cancelled")
                raise
            reached.append("not reached")  # pragma: no cover
    assert reached == ["cancelled"]
    assert scope.cancel_called and scope.cancelled_caught
    assert not outer.cancel_called


async def test_deadline_set_inside_reschedules(backend: AsyncBackend) -> None:
    with guard(backend) as outer:
        with backend.create_cancel_scope() as scope:
            assert scope.deadline == math.inf
            scope.deadline = backend.current_time() + 0.02
            await backend.sleep(LONG)
    assert scope.cancelled_caught
    assert not outer.cancel_called


async def test_deadline_moved_earlier_inside(backend: AsyncBackend) -> None:
    with guard(backend) as outer:
        with backend.create_cancel_scope(deadline=backend.current_time() + LONG * 2) as scope:
            scope.deadline = backend.current_time() + 0.01
            await backend.sleep(LONG)
    assert scope.cancelled_caught
    assert not outer.cancel_called


async def test_deadline_moved_later_or_removed_inside(backend: AsyncBackend) -> None:
    with backend.create_cancel_scope(deadline=backend.current_time() + 0.02) as scope:
        scope.deadline = math.inf
        await backend.sleep(0.06)
        scope.deadline = backend.current_time() + LONG
        await backend.sleep(0)
    assert not scope.cancel_called
    assert not scope.cancelled_caught


async def test_past_deadline_cancels_first_checkpoint(backend: AsyncBackend) -> None:
    exc_class = backend.get_cancelled_exc_class()
    for deadline in (backend.current_time() - 1, -5.0, 0):
        hit: list[bool] = []
        with backend.create_cancel_scope(deadline=deadline) as scope:
            try:
                await backend.sleep(LONG)
            except exc_class:
                hit.append(True)
                raise
        assert hit == [True]
        assert scope.cancel_called and scope.cancelled_caught


async def test_setting_a_past_deadline_inside_cancels(backend: AsyncBackend) -> None:
    with guard(backend) as outer:
        with backend.create_cancel_scope() as scope:
            await backend.sleep(0)
            scope.deadline = backend.current_time() - 1
            await backend.sleep(LONG)
    assert scope.cancelled_caught
    assert not outer.cancel_called


async def test_shield_blocks_outer_cancel(backend: AsyncBackend) -> None:
    exc_class = backend.get_cancelled_exc_class()
    trace: list[str] = []
    with backend.create_cancel_scope() as outer:
        outer.cancel()
        with backend.create_cancel_scope(shield=True) as inner:
            await backend.sleep(0.01)  # shielded: completes
            trace.append("shielded sleep done")
        try:
            await backend.sleep(LONG)
        except exc_class:
            trace.append("cancelled after the shield")
            raise
    assert trace == ["shielded sleep done", "cancelled after the shield"]
    assert outer.cancelled_caught
    assert not inner.cancel_called and not inner.cancelled_caught


async def test_shield_can_be_toggled_inside(backend: AsyncBackend) -> None:
    trace: list[str] = []
    with backend.create_cancel_scope() as outer:
        with backend.create_cancel_scope(shield=True) as inner:
            outer.cancel()
            await backend.sleep(0)
            trace.append("still shielded")
            inner.shield = False
            assert inner.shield is False
            await backend.sleep(LONG)
    assert trace == ["still shielded"]
    assert outer.cancelled_caught and not inner.cancelled_caught


async def test_nested_cancel_reaches_inner_scope(backend: AsyncBackend) -> None:
    exc_class = backend.get_cancelled_exc_class()
    trace: list[str] = []
    with backend.create_cancel_scope() as outer:
        with backend.create_cancel_scope() as inner:
            outer.cancel()
            try:
                await backend.sleep(LONG)
            except exc_class:
                trace.append("inner await cancelled")
                raise
        trace.append("not reached")  # pragma: no cover
    assert trace == ["inner await cancelled"]
    assert not inner.cancel_called and not inner.cancelled_caught
    assert outer.cancel_called and outer.cancelled_caught


async def test_inner_cancel_does_not_reach_outer(backend: AsyncBackend) -> None:
    with backend.create_cancel_scope() as outer:
        with backend.create_cancel_scope() as inner:
            inner.cancel()
            await backend.sleep(LONG)
        await backend.sleep(0)  # the outer scope is not cancelled
    assert inner.cancelled_caught
    assert not outer.cancel_called and not outer.cancelled_caught


async def test_level_triggered(backend: AsyncBackend) -> None:
    exc_class = backend.get_cancelled_exc_class()
    raised = 0
    with backend.create_cancel_scope() as scope:
        scope.cancel()
        for _ in range(3):
            try:
                await backend.sleep(0)
            except exc_class:
                raised += 1
        await backend.sleep(LONG)  # raises again; caught by the scope
    assert raised == 3
    assert scope.cancelled_caught


async def test_cancel_from_another_task(backend: AsyncBackend) -> None:
    blocked = backend.create_event()
    victim_scope = backend.create_cancel_scope()
    outcome: list[str] = []

    async def victim() -> None:
        with victim_scope:
            blocked.set()
            await backend.sleep(LONG)
        outcome.append("victim exited its scope")

    async def canceller() -> None:
        await blocked.wait()
        victim_scope.cancel()

    with guard(backend) as g:
        async with backend.create_task_group() as tg:
            tg.start_soon(victim)
            tg.start_soon(canceller)
    assert not g.cancel_called
    assert outcome == ["victim exited its scope"]
    assert victim_scope.cancelled_caught


async def test_cancel_from_a_plain_thread(
    backend: AsyncBackend, backend_type: str, plain_thread: Any
) -> None:
    ready = threading.Event()

    def from_thread(scope: CancelScope) -> None:
        ready.wait(LONG)
        if backend_type == "asyncio":
            scope.cancel()  # the C scope's cancel() is thread-safe and wakes the loop
        else:
            backend.call_soon_threadsafe(scope.cancel)  # anyio/trio scopes: loop thread only

    backend.create_event()  # let the backend note this loop for plain-thread callbacks
    with guard(backend) as g:
        with backend.create_cancel_scope() as scope:
            plain_thread.start(from_thread, scope)
            ready.set()
            await backend.sleep(LONG)  # nothing else wakes the loop
    assert not g.cancel_called
    assert scope.cancel_called and scope.cancelled_caught


async def test_flags(backend: AsyncBackend) -> None:
    scope = backend.create_cancel_scope()
    assert (scope.cancel_called, scope.cancelled_caught) == (False, False)
    with scope:
        await backend.sleep(0)
    assert (scope.cancel_called, scope.cancelled_caught) == (False, False)

    with backend.create_cancel_scope() as scope:
        scope.cancel()
        scope.cancel()  # idempotent
        assert (scope.cancel_called, scope.cancelled_caught) == (True, False)
        await backend.sleep(0)
    assert (scope.cancel_called, scope.cancelled_caught) == (True, True)

    with backend.create_cancel_scope() as scope:
        scope.cancel()  # no checkpoint follows: nothing to catch
    assert (scope.cancel_called, scope.cancelled_caught) == (True, False)
    await backend.sleep(0)  # and no stray cancellation is left behind


async def test_cancel_before_enter(backend: AsyncBackend) -> None:
    scope = backend.create_cancel_scope()
    scope.cancel()
    assert scope.cancel_called
    with scope:
        await backend.sleep(LONG)
    assert scope.cancelled_caught


async def test_cancel_reason_is_accepted(backend: AsyncBackend) -> None:
    with backend.create_cancel_scope() as scope:
        scope.cancel("user pressed stop")
        await backend.sleep(LONG)
    assert scope.cancelled_caught


async def test_other_exceptions_pass_through(backend: AsyncBackend) -> None:
    with pytest.raises(KeyError):
        with backend.create_cancel_scope() as scope:
            raise KeyError("x")
    assert not scope.cancelled_caught
    with pytest.raises(KeyError):
        with backend.create_cancel_scope() as scope:
            scope.cancel()
            raise KeyError("x")
    assert not scope.cancelled_caught


@pytest.mark.modes(
    "asyncio", "uvloop", "trio", reason="anyio on asyncio lets an exited CancelScope be re-entered"
)
async def test_scope_is_single_use(backend: AsyncBackend) -> None:
    scope = backend.create_cancel_scope()
    with scope:
        pass
    with pytest.raises(RuntimeError), scope:
        pass  # pragma: no cover


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("deadline", "exc", "match"),
    [
        ("soon", TypeError, "deadline must be a real number"),
        (None, TypeError, "deadline must be a real number"),
        (True, TypeError, "deadline must be a real number"),
        (1j, TypeError, "deadline must be a real number"),
        (math.nan, ValueError, "NaN"),
    ],
)
async def test_bad_deadlines(backend: AsyncBackend, deadline: Any, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        backend.create_cancel_scope(deadline=deadline)


@pytest.mark.parametrize("deadline", [None, 1j, math.nan], ids=["None", "complex", "nan"])
async def test_bad_deadline_assignment(backend: AsyncBackend, deadline: Any) -> None:
    # The setter is the native scope's own, not ours: anyio's message is "must be real
    # number", and anyio on asyncio converts with float() (a numeric str is accepted, another
    # str raises ValueError), so only the cases every backend rejects alike are checked.
    scope = backend.create_cancel_scope()
    exc = ValueError if deadline is math.nan else TypeError
    with pytest.raises(exc, match="NaN" if exc is ValueError else "real number"):
        scope.deadline = deadline
    assert scope.deadline == math.inf


async def test_integer_and_fraction_deadlines_are_accepted(backend: AsyncBackend) -> None:
    from fractions import Fraction

    assert backend.create_cancel_scope(deadline=10**6).deadline == 1e6
    half: Any = Fraction(3, 2)
    assert backend.create_cancel_scope(deadline=half).deadline == 1.5


async def test_bad_shield(backend: AsyncBackend) -> None:
    with pytest.raises(TypeError, match="shield must be a bool"):
        backend.create_cancel_scope(shield=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="shield must be a bool"):
        backend.create_cancel_scope(shield=None)  # type: ignore[arg-type]


async def test_exit_out_of_order(backend: AsyncBackend) -> None:
    outer = backend.create_cancel_scope()
    inner = backend.create_cancel_scope()
    outer.__enter__()
    inner.__enter__()
    with pytest.raises(RuntimeError):
        outer.__exit__(None, None, None)
    for scope in (inner, outer):  # best-effort clean-up, whatever the library recovered
        try:
            scope.__exit__(None, None, None)
        except RuntimeError:
            pass
    await backend.sleep(0)


@pytest.mark.modes("asyncio", "uvloop", "anyio", reason="trio tasks cannot share a scope object")
async def test_exit_from_another_task(backend: AsyncBackend) -> None:
    scope = backend.create_cancel_scope()
    scope.__enter__()
    errors: list[BaseException] = []

    async def other() -> None:
        try:
            scope.__exit__(None, None, None)
        except RuntimeError as exc:
            errors.append(exc)

    async with backend.create_task_group() as tg:
        tg.start_soon(other)
    scope.__exit__(None, None, None)
    assert len(errors) == 1
