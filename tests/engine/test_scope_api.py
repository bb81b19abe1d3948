"""CancelScope and the engine's module functions: argument validation, introspection, the
task-group helpers (``adopt_task``) and their edge cases (scope.c)."""

from __future__ import annotations

import asyncio
import asyncio.futures
import gc
import math
import threading
from typing import Any

import pytest

from hother.cancelable import _engine

from .fakes import FakeCoro, FakeLoop, FakeTask, engine_of, fake_pair, fake_triple, running

CancelScope = _engine.CancelScope


class Boom(Exception):
    """The error the test objects raise."""


class ClassRaises:
    """``isinstance()`` on it raises (its ``__class__`` lookup fails)."""

    @property  # type: ignore[misc]
    def __class__(self) -> Any:
        raise Boom("__class__")


def leave(scope: Any, exc: BaseException | None = None) -> Any:
    return scope.__exit__(None if exc is None else type(exc), exc, None)


# -- construction, deadline and shield values ------------------------------------------------


def test_huge_integer_deadlines_saturate_to_infinity() -> None:
    assert CancelScope(deadline=10**400).deadline == math.inf
    assert CancelScope(deadline=-(10**400)).deadline == -math.inf


def test_deadline_conversion_errors_propagate() -> None:
    class BadFloat:
        def __float__(self) -> float:
            raise Boom("__float__")

    class OverflowNoCompare:
        def __float__(self) -> float:
            raise OverflowError("too big")

        def __lt__(self, other: Any) -> bool:
            raise Boom("__lt__")

    class OverflowNegative:
        def __float__(self) -> float:
            raise OverflowError("too small")

        def __lt__(self, other: Any) -> bool:
            return True

    with pytest.raises(Boom, match="__float__"):
        CancelScope(deadline=BadFloat())
    with pytest.raises(Boom, match="__lt__"):
        CancelScope(deadline=OverflowNoCompare())
    assert CancelScope(deadline=OverflowNegative()).deadline == -math.inf
    scope = CancelScope()
    with pytest.raises(Boom):
        scope.deadline = BadFloat()
    with pytest.raises(TypeError, match="cannot be deleted"):
        del scope.deadline
    with pytest.raises(TypeError, match="shield must be a bool"):
        del scope.shield
    assert scope.deadline == math.inf


def test_repr_and_host_task_follow_the_life_cycle() -> None:
    scope = CancelScope(deadline=3.5, shield=True)
    assert repr(scope) == "<CancelScope new deadline=3.5 shield=True cancel_called=False>"
    assert scope.host_task is None

    async def main() -> None:
        with scope:
            assert scope.host_task is asyncio.current_task()
            assert repr(scope).startswith("<CancelScope active ")
        assert scope.host_task is None

    asyncio.run(main())
    scope.cancel()
    assert repr(scope) == "<CancelScope exited deadline=3.5 shield=True cancel_called=True>"


# -- current_scope / loop_stats / armed_timers ---------------------------------------------------


def test_current_scope_argument_checks() -> None:
    with pytest.raises(TypeError):
        _engine.current_scope(nope=1)
    with pytest.raises(TypeError, match=r"asyncio\.Task or None"):
        _engine.current_scope(3)
    with pytest.raises(Boom):
        _engine.current_scope(ClassRaises())
    assert _engine.current_scope() is None  # no running loop


def test_current_scope_of_an_unhashable_future() -> None:
    class Unhashable(asyncio.Future):  # type: ignore[type-arg]
        __hash__ = None  # type: ignore[assignment]

        def get_coro(self) -> Any:
            return None

    loop = FakeLoop()
    assert _engine.current_scope(Unhashable(loop=loop)) is None  # in no scope, no crash


def test_current_scope_when_the_current_task_lookup_fails() -> None:
    loop, task = fake_pair()
    with running(loop, task):
        loop.hash_fails = True
        with pytest.raises(RuntimeError, match="unhashable loop"):
            _engine.current_scope()
        loop.hash_fails = False


def test_loop_stats_argument_checks() -> None:
    with pytest.raises(TypeError):
        _engine.loop_stats(1, 2)
    with pytest.raises(Boom):
        _engine.loop_stats(ClassRaises())
    with pytest.raises(TypeError, match="asyncio event loop or None"):
        _engine.loop_stats(object())
    with pytest.raises(RuntimeError, match="no running event loop"):
        _engine.loop_stats()
    fresh = asyncio.new_event_loop()
    try:
        assert _engine.loop_stats(fresh) == {
            "armed_timers": 0,
            "deadlines": 0,
            "pending_redelivery": 0,
            "active_scopes": 0,
            "timer_when": math.inf,
        }
    finally:
        fresh.close()


def test_armed_timers_counts_every_loop() -> None:
    loop_a, loop_b = FakeLoop(), FakeLoop()
    task_a, task_b = FakeTask(loop_a), FakeTask(loop_b)
    before = _engine.armed_timers()
    with running(loop_a, task_a):
        a = CancelScope(deadline=loop_a.now + 5)
        a.__enter__()
    with running(loop_b, task_b):
        b = CancelScope(deadline=loop_b.now + 5)
        b.__enter__()
    assert _engine.armed_timers() == before + 2
    with running(loop_b, task_b):
        leave(b)
    with running(loop_a, task_a):
        leave(a)


# -- adopt_task ----------------------------------------------------------------------------------


class Member(asyncio.Future):  # type: ignore[type-arg]
    """A future that passes for a task (``get_coro``) and records the engine's calls."""

    _must_cancel = False
    _fut_waiter = None

    def __init__(self, loop: Any, started: bool = True) -> None:
        super().__init__(loop=loop)
        self.started = started
        self.done_raises: BaseException | None = None
        self.coro_raises = False
        self.hash_budget: int | None = None
        self.add_done_raises: BaseException | None = None

    def __hash__(self) -> int:
        if self.hash_budget is not None:
            if self.hash_budget <= 0:
                raise RuntimeError("unhashable member")
            self.hash_budget -= 1
        return id(self) >> 4

    def get_coro(self) -> Any:
        if self.coro_raises:
            raise Boom("get_coro")
        coro = FakeCoro()
        if not self.started:
            coro.cr_suspended = False  # type: ignore[misc]
            coro.cr_frame = object()  # type: ignore[misc]
        return coro

    def done(self) -> bool:
        if self.done_raises is not None:
            raise self.done_raises
        return bool(super().done())

    def add_done_callback(self, fn: Any, *, context: Any = None) -> None:
        if self.add_done_raises is not None:
            raise self.add_done_raises
        super().add_done_callback(fn, context=context)


def test_adopt_task_argument_checks() -> None:
    loop, task = fake_pair()
    with pytest.raises(TypeError, match="takes 2 arguments"):
        _engine.adopt_task(1)
    with pytest.raises(TypeError, match="scope must be a CancelScope"):
        _engine.adopt_task(Member(loop), object())
    with pytest.raises(RuntimeError, match="not active"):
        _engine.adopt_task(Member(loop), CancelScope())
    with running(loop, task):
        scope = CancelScope()
        scope.__enter__()
        with pytest.raises(Boom):
            _engine.adopt_task(ClassRaises(), scope)
        with pytest.raises(TypeError, match=r"asyncio\.Task"):
            _engine.adopt_task(asyncio.futures._PyFuture(loop=loop), scope)  # no get_coro
        with pytest.raises(TypeError, match=r"asyncio\.Task"):
            _engine.adopt_task(object(), scope)
        member = Member(loop)
        member.hash_budget = 0
        with pytest.raises(RuntimeError, match="unhashable member"):
            _engine.adopt_task(member, scope)
        member.hash_budget = None
        _engine.adopt_task(member, scope)
        with pytest.raises(RuntimeError, match="already inside a scope"):
            _engine.adopt_task(member, scope)
        assert _engine.current_scope(member) is scope
        member.set_result(None)  # done: the release callback is scheduled on the loop
        loop.run_soon()
        assert _engine.current_scope(member) is None
        assert leave(scope) is False


def test_release_callback_tolerates_unknown_and_unhashable_tasks() -> None:
    loop, task = fake_pair()
    with running(loop, task):
        scope = CancelScope()
        scope.__enter__()
        member = Member(loop)
        _engine.adopt_task(member, scope)
        [(release, _context)] = member._callbacks
        assert release(object()) is None  # not in any scope: nothing to do
        assert release([]) is None  # unhashable: not in any scope either
        member.hash_budget = 1  # found, then removing it from the dict fails
        with pytest.raises(RuntimeError, match="unhashable member"):
            release(member)
        member.hash_budget = None
        assert release(member) is None
        assert _engine.current_scope(member) is None
        assert release(task) is None  # a host task is never released this way
        assert _engine._task_scopes.get(task) is scope
        assert leave(scope) is False


def test_failed_adoption_leaves_the_task_outside() -> None:
    loop, task = fake_pair()
    with running(loop, task):
        scope = CancelScope()
        scope.__enter__()
        member = Member(loop)
        member.add_done_raises = Boom("add_done_callback")
        try:
            with pytest.raises(Boom):
                _engine.adopt_task(member, scope)
            assert _engine._task_scopes.get(member) is None
        finally:
            _engine._task_scopes.pop(member, None)
            leave(scope)


def test_failed_adoption_raises() -> None:
    """Whatever the bookkeeping (see ADOPT_ROLLBACK), the error reaches the caller."""
    loop, task = fake_pair()
    with running(loop, task):
        scope = CancelScope()
        scope.__enter__()
        member = Member(loop)
        member.add_done_raises = Boom("add_done_callback")
        with pytest.raises(Boom):
            _engine.adopt_task(member, scope)
        other = Member(loop)
        other.hash_budget = 0  # the membership test hashes nothing; the registration fails
        with pytest.raises(RuntimeError, match="unhashable member"):
            _engine.adopt_task(other, scope)
        other.hash_budget = None
        assert _engine._task_scopes.get(other) is None
        _engine._task_scopes.pop(member, None)
        assert leave(scope) is False


def test_adoption_into_a_cancelled_scope_schedules_delivery() -> None:
    loop, task = fake_pair()
    with running(loop, task):
        scope = CancelScope()
        scope.__enter__()
        scope.cancel()
        loop.run_soon()
        loop.handles.clear()  # no coalesced callback pending any more
        gc.collect()
        member = Member(loop)
        loop.fail["call_soon"] = Boom("call_soon")
        with pytest.raises(Boom):
            _engine.adopt_task(member, scope)
        loop.fail.clear()
        started = Member(loop)
        _engine.adopt_task(started, scope)
        loop.run_soon()  # the coalesced callback cancels the member (not running)
        assert started.cancelled()
        _engine._task_scopes.pop(member, None)
        assert leave(scope, asyncio.CancelledError()) in (True, False)


def test_members_get_the_cancellation_once_started() -> None:
    loop, host, other = fake_triple()
    with running(loop, host):
        scope = CancelScope()
        scope.__enter__()
        fresh = Member(loop, started=False)
        probe_fails = Member(loop)
        probe_fails.coro_raises = True  # cannot tell: treated as started
        _engine.adopt_task(fresh, scope)
        _engine.adopt_task(probe_fails, scope)
        asyncio.tasks._current_tasks[loop] = other  # type: ignore[attr-defined]
        scope.cancel()
        assert not fresh.cancelled()  # runs until its first checkpoint, like trio
        assert probe_fails.cancelled()
        asyncio.tasks._current_tasks[loop] = host  # type: ignore[attr-defined]
        _engine._task_scopes.pop(fresh, None)
        _engine._task_scopes.pop(probe_fails, None)
        leave(scope, asyncio.CancelledError())


def test_member_delivery_error_propagates() -> None:
    loop, host, other = fake_triple()
    with running(loop, host):
        scope = CancelScope()
        scope.__enter__()
        member = Member(loop)
        _engine.adopt_task(member, scope)
        member.done_raises = Boom("done")
        asyncio.tasks._current_tasks[loop] = other  # type: ignore[attr-defined]
        with pytest.raises(Boom):
            scope.cancel()
        member.done_raises = None
        asyncio.tasks._current_tasks[loop] = host  # type: ignore[attr-defined]
        _engine._task_scopes.pop(member, None)
        assert leave(scope) is False


# -- cancel() on the loop when the current task cannot be looked up; redelivery errors ---------


def test_cancel_when_the_current_task_lookup_fails() -> None:
    loop, task = fake_pair()
    with running(loop, task):
        scope = CancelScope()
        scope.__enter__()
        loop.hash_fails = True
        with pytest.raises(RuntimeError, match="unhashable loop"):
            scope.cancel()
        loop.hash_fails = False
        assert scope.cancel_called
        assert leave(scope) is False


def test_redelivery_rescheduling_error_is_raised_to_the_loop() -> None:
    loop, host, other = fake_triple()
    with running(loop, host):
        scope = CancelScope()
        scope.__enter__()
        scope.cancel()  # deferred: the host is running
        asyncio.tasks._current_tasks[loop] = other  # type: ignore[attr-defined]
        loop.fail["call_soon"] = Boom("call_soon")
        with pytest.raises(Boom):
            engine_of(loop)._redeliver()  # delivered, then the re-check cannot be scheduled
        loop.fail.clear()
        assert len(host.cancel_messages) == 1
        asyncio.tasks._current_tasks[loop] = host  # type: ignore[attr-defined]
        assert leave(scope, asyncio.CancelledError()) is True


def test_time_on_the_instance_only_and_a_non_float_time() -> None:
    class InstanceTimeLoop:
        def __init__(self) -> None:
            self.time = lambda: 10.0

        def get_debug(self) -> bool:
            return False

        def call_at(self, when: float, fn: Any) -> Any:
            return FakeLoop()  # any weak-referenceable object with cancel()

        def call_soon(self, fn: Any) -> Any:
            return FakeLoop()

    loop = InstanceTimeLoop()
    task = FakeTask(loop)
    with running(loop, task):
        scope = CancelScope(deadline=5.0)  # expired: the instance's time() was used
        with scope:
            pass
        assert scope.cancel_called and scope.deadline_reached
        loop.time = lambda: "noon"
        with pytest.raises(TypeError):
            CancelScope(deadline=50.0).__enter__()
        _engine._task_scopes.pop(task, None)


# -- real asyncio: threads, exits in the wrong place -------------------------------------------


def test_cancel_from_a_thread_while_the_loop_is_blocked_then_exit() -> None:
    """The hop scheduled by a thread runs after the scope was left: it only marks it."""

    async def main() -> CancelScope:
        with CancelScope() as scope:
            thread = threading.Thread(target=scope.cancel)
            thread.start()
            thread.join()  # the loop is blocked: the hop cannot run before the exit
            assert not scope.cancel_called
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return scope

    scope = asyncio.run(main())
    assert scope.cancel_called and not scope.cancelled_caught


def test_scope_left_in_another_loop_thread_is_refused() -> None:
    async def main() -> None:
        scope = CancelScope()
        scope.__enter__()
        errors: list[BaseException] = []

        def other_loop() -> None:
            async def exit_here() -> None:
                try:
                    leave(scope)
                except RuntimeError as exc:
                    errors.append(exc)

            asyncio.run(exit_here())

        thread = threading.Thread(target=other_loop)
        thread.start()
        thread.join()
        assert "outside the event loop" in str(errors[0])
        with pytest.raises(RuntimeError, match="deadline of an active cancel scope"):
            await asyncio.to_thread(setattr, scope, "deadline", 5.0)
        assert leave(scope) is False

    asyncio.run(main())
