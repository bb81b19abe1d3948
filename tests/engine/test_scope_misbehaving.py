"""The asyncio CancelScope against loops and tasks that misbehave (scope.c error paths).

Every test drives the engine through :mod:`.fakes` (a scripted loop and task made current the
way asyncio does it) and checks that an error raised by the loop or the task propagates
unchanged out of the engine call (or is reported when nobody can receive it), and that the
engine's bookkeeping stays consistent afterwards.
"""

from __future__ import annotations

import asyncio
import gc
import math
from typing import Any

import pytest

from hother.cancelable import _engine

from .conftest import ReportedErrors
from .fakes import FakeHandle, FakeLoop, FakeTask, engine_of, fake_pair, fake_triple, running

CancelScope = _engine.CancelScope


def leave(scope: Any, exc: BaseException | None = None) -> Any:
    return scope.__exit__(None if exc is None else type(exc), exc, None)


def inside(task: Any) -> Any:
    """The innermost engine scope of ``task`` (works for fake tasks too)."""
    return _engine._task_scopes.get(task)


class Boom(Exception):
    """The error the fakes raise."""


# -- the loop's state: created, found, replaced ------------------------------------------------


def test_loop_without_instance_dict_is_refused_with_a_clear_error() -> None:
    class SlotLoop:
        __slots__ = ("__weakref__",)

        def time(self) -> float:
            return 0.0

        def get_debug(self) -> bool:
            return False

    loop = SlotLoop()
    task = FakeTask(loop)
    with running(loop, task), pytest.raises(TypeError, match="does not accept attributes"):
        CancelScope().__enter__()
    assert inside(task) is None


def test_loop_without_weak_references_is_refused() -> None:
    class NoWeakLoop:
        __slots__ = ("__dict__",)

        def time(self) -> float:
            return 0.0

        def get_debug(self) -> bool:
            return False

    loop = NoWeakLoop()
    task = FakeTask(loop)
    with running(loop, task), pytest.raises(TypeError, match="weak reference"):
        CancelScope().__enter__()
    assert inside(task) is None


def test_foreign_object_under_the_engine_attribute_is_replaced() -> None:
    loop, task = fake_pair()
    loop._hother_cancelable_engine = "not an engine"  # type: ignore[attr-defined]
    with running(loop, task):
        with CancelScope() as scope:
            assert inside(task) is scope
        assert isinstance(engine_of(loop), _engine.LoopEngine)
    assert inside(task) is None


def test_odd_clock_resolution_and_instance_level_time_are_tolerated() -> None:
    loop, task = fake_pair()
    loop._clock_resolution = "fine"  # type: ignore[attr-defined]
    with running(loop, task):
        scope = CancelScope(deadline=loop.now + 5)
        with scope:
            assert _engine.loop_stats(loop)["deadlines"] == 1
            loop.now += 5  # the deadline is reached exactly: resolution 1e-9 (default)
            engine_of(loop)._on_timer()
            assert scope.cancel_called and scope.deadline_reached
            assert task.cancel_messages == []  # the host runs: delivery is deferred
    # time() found on the instance only (not on the type)
    other = FakeLoop()
    task2 = FakeTask(other)
    with running(other, task2):
        other.time = lambda: 7.0  # type: ignore[method-assign]
        scope2 = CancelScope(deadline=6.0)
        with scope2:
            pass
        assert scope2.cancel_called and scope2.deadline_reached


# -- task misbehaviour at enter ------------------------------------------------------------------


@pytest.mark.parametrize("value", ["many", 2**70])
def test_task_cancelling_that_is_not_a_small_int_fails_enter(value: Any) -> None:
    loop, task = fake_pair()
    task.cancelling_value = value
    with running(loop, task), pytest.raises((TypeError, OverflowError)):
        CancelScope().__enter__()
    assert inside(task) is None
    assert _engine.loop_stats(loop)["active_scopes"] == 0


def test_task_cancelling_raising_fails_enter() -> None:
    loop, task = fake_pair()
    task.fail["cancelling"] = Boom("cancelling")
    with running(loop, task), pytest.raises(Boom):
        CancelScope().__enter__()
    assert inside(task) is None


def test_enter_and_exit_never_hash_the_task() -> None:
    # the task -> innermost scope map is keyed by identity (csrc/cc_pmap): a task whose
    # __hash__ raises enters and exits like any other
    loop, task = fake_pair()
    with running(loop, task):
        task.hash_fails = True
        scope = CancelScope()
        scope.__enter__()
        assert inside(task) is scope
        assert leave(scope) is False
        task.hash_fails = False
    assert inside(task) is None


def test_enter_outside_a_task_is_refused() -> None:
    loop = FakeLoop()
    with running(loop, None), pytest.raises(RuntimeError, match="inside an asyncio task"):
        CancelScope().__enter__()


def test_current_task_lookup_error_fails_enter_and_exit() -> None:
    loop, task = fake_pair()
    with running(loop, task):
        scope = CancelScope()
        loop.hash_fails = True
        with pytest.raises(RuntimeError, match="unhashable loop"):
            scope.__enter__()
        loop.hash_fails = False
        scope.__enter__()
        loop.hash_fails = True
        with pytest.raises(RuntimeError, match="unhashable loop"):
            leave(scope)
        loop.hash_fails = False
        assert leave(scope) is False
    assert inside(task) is None


# -- loop misbehaviour at enter: the scope must not stay half-entered ----------------------------


def test_clock_error_at_enter_leaves_no_active_scope() -> None:
    loop, task = fake_pair()
    with running(loop, task):
        loop.fail["time"] = Boom("clock")
        scope = CancelScope(deadline=loop.now + 5)
        with pytest.raises(Boom):
            scope.__enter__()
        assert not scope.active
        assert inside(task) is None


def test_call_at_error_at_enter_leaves_no_active_scope() -> None:
    loop, task = fake_pair()
    with running(loop, task):
        loop.fail["call_at"] = Boom("call_at")
        scope = CancelScope(deadline=loop.now + 5)
        with pytest.raises(Boom):
            scope.__enter__()
        assert not scope.active
        assert inside(task) is None
        assert _engine.loop_stats(loop)["deadlines"] == 0


def test_loop_errors_at_enter_propagate() -> None:
    """Whatever the bookkeeping afterwards, the loop's own error reaches the caller."""
    cases: list[tuple[str, dict[str, Any]]] = [
        ("time", {"deadline": 5.0}),
        ("call_at", {"deadline": 5.0}),
    ]
    for method, kwargs in cases:
        loop, task = fake_pair()
        with running(loop, task):
            loop.fail[method] = Boom(method)
            scope = CancelScope(deadline=loop.now + kwargs["deadline"])
            with pytest.raises(Boom, match=method):
                scope.__enter__()
            loop.fail.clear()
            if scope.active:  # half-entered (see HALF_ENTERED): leave it so nothing leaks
                leave(scope)
        assert inside(task) is None


def test_timer_handle_that_is_not_weak_referenceable_fails_enter() -> None:
    loop, task = fake_pair()
    loop.handle_factory = lambda handle: 42  # call_at returns an int
    with running(loop, task):
        scope = CancelScope(deadline=loop.now + 5)
        with pytest.raises(TypeError):
            scope.__enter__()
        loop.handle_factory = None
        if scope.active:
            leave(scope)
    assert inside(task) is None


def test_cancelling_the_armed_timer_raising_fails_the_earlier_enter() -> None:
    loop, task = fake_pair()
    with running(loop, task):
        outer = CancelScope(deadline=loop.now + 10)
        outer.__enter__()
        assert loop.count("call_at") == 1
        loop.fail["handle.cancel"] = Boom("cancel timer")
        inner = CancelScope(deadline=loop.now + 5)  # earlier: re-arms the timer
        with pytest.raises(Boom):
            inner.__enter__()
        loop.fail.clear()
        if inner.active:
            leave(inner)
        assert leave(outer) is False
    assert inside(task) is None


def test_expired_deadline_at_enter_with_failing_delivery() -> None:
    loop, task = fake_pair()
    with running(loop, task):
        scope = CancelScope(deadline=loop.now - 1)  # already expired: cancelled at enter
        task.hash_budget = 2  # registration works, the pending-set insertion fails
        with pytest.raises(RuntimeError, match="unhashable task"):
            scope.__enter__()
        task.hash_budget = None
        assert scope.cancel_called and scope.deadline_reached
        # the failed enter was rolled back: the scope is not active (a task whose __hash__
        # fails cannot be looked up to be removed from the engine's table; that entry goes
        # with the loop)
        assert not scope.active


def test_call_soon_error_while_scheduling_redelivery() -> None:
    loop, task = fake_pair()
    with running(loop, task):
        outer = CancelScope()
        outer.__enter__()
        loop.fail["call_soon"] = Boom("call_soon")
        with pytest.raises(Boom):
            outer.cancel()  # the host is running: delivery deferred to call_soon, which fails
        assert outer.cancel_called
        inner = CancelScope()
        with pytest.raises(Boom):
            inner.__enter__()  # entered inside a cancelled scope: redelivery again
        loop.fail.clear()
        if inner.active:
            leave(inner)
        loop.run_soon()
        assert leave(outer) is False  # nothing was delivered to the task: no cancel to catch
    assert inside(task) is None


# -- delivery to a task that is not running ------------------------------------------------------


def deliver(loop: FakeLoop, scope: Any, host: FakeTask, other: FakeTask) -> None:
    """Cancel ``scope`` (entered by ``host``) while ``other`` is the running task."""
    asyncio.tasks._current_tasks[loop] = other  # type: ignore[attr-defined]
    try:
        scope.cancel()
    finally:
        asyncio.tasks._current_tasks[loop] = host  # type: ignore[attr-defined]


def test_delivery_reaches_a_blocked_host_once_and_is_uncancelled_at_exit() -> None:
    loop, host, other = fake_triple()
    with running(loop, host):
        scope = CancelScope()
        scope.__enter__()
        deliver(loop, scope, host, other)
        assert len(host.cancel_messages) == 1
        assert "Cancelled by cancel scope" in host.cancel_messages[0]
        assert host._cancelling == 1
        assert leave(scope, asyncio.CancelledError()) is True
        assert host._cancelling == 0 and host.count("uncancel") == 1
        assert scope.cancelled_caught


@pytest.mark.parametrize(
    ("setup", "error"),
    [
        (lambda t: t.fail.__setitem__("done", Boom("done")), Boom),
        (lambda t: t.fail.__setitem__("cancel", Boom("cancel")), Boom),
        (lambda t: delattr(t, "_must_cancel"), AttributeError),
        (lambda t: delattr(t, "_fut_waiter"), AttributeError),
        (lambda t: setattr(t, "_fut_waiter", object()), AttributeError),
    ],
    ids=["done-raises", "cancel-raises", "no-_must_cancel", "no-_fut_waiter", "odd-waiter"],
)
def test_delivery_errors_propagate_from_cancel(setup: Any, error: type[BaseException]) -> None:
    loop, host, other = fake_triple()
    with running(loop, host):
        scope = CancelScope()
        scope.__enter__()
        setup(host)
        with pytest.raises(error):
            deliver(loop, scope, host, other)
        assert scope.cancel_called
        host.fail.clear()
        assert leave(scope) is False
    assert inside(host) is None


def test_no_delivery_to_a_done_task_one_with_a_pending_cancel_or_a_finished_waiter() -> None:
    class Waiter:
        def __init__(self, done: bool) -> None:
            self._done = done

        def done(self) -> bool:
            return self._done

    for prepare in (
        lambda t: setattr(t, "is_done", True),
        lambda t: setattr(t, "_must_cancel", True),
        lambda t: setattr(t, "_fut_waiter", Waiter(True)),
    ):
        loop, host, other = fake_triple()
        with running(loop, host):
            scope = CancelScope()
            scope.__enter__()
            prepare(host)
            deliver(loop, scope, host, other)
            assert host.cancel_messages == []
            assert leave(scope) is False
    # a waiter still pending: delivered
    loop, host, other = fake_triple()
    with running(loop, host):
        scope = CancelScope()
        scope.__enter__()
        host._fut_waiter = Waiter(False)
        deliver(loop, scope, host, other)
        assert len(host.cancel_messages) == 1
        assert leave(scope, asyncio.CancelledError()) is True


# -- exit errors --------------------------------------------------------------------------------


def test_exit_argument_count_is_checked() -> None:
    with pytest.raises(TypeError, match="3 arguments"):
        CancelScope().__exit__(None, None)


class LoopFreeTask:
    """A task object that does not reference its loop (asyncio's tasks do)."""

    def cancelling(self) -> int:
        return 0

    def uncancel(self) -> int:
        return 0

    def done(self) -> bool:
        return False


def test_exit_and_cancel_after_the_loop_is_gone() -> None:
    loop, task = FakeLoop(), LoopFreeTask()
    with running(loop, task):
        scope = CancelScope(deadline=loop.now + 100)
        scope.__enter__()
    engine = engine_of(loop)
    del loop
    gc.collect()
    with pytest.raises(RuntimeError, match="event loop of this cancel scope is gone"):
        leave(scope)
    scope.deadline = 5.0  # nothing to re-arm: accepted
    assert scope.deadline == 5.0
    scope.cancel()  # nothing to deliver to: just marked
    assert scope.cancel_called
    assert engine._on_timer() is None and engine._redeliver() is None
    scope.__exit__(GeneratorExit, GeneratorExit(), None)  # a coroutine closed: detached
    assert not scope.active


def test_exit_outside_the_running_loop_is_refused() -> None:
    loop, task = fake_pair()
    with running(loop, task):
        scope = CancelScope()
        scope.__enter__()
    with pytest.raises(RuntimeError, match="outside the event loop"):
        leave(scope)
    with running(loop, task):
        assert leave(scope) is False


@pytest.mark.parametrize(
    ("method", "value"),
    [("uncancel", None), ("cancelling", None), ("cancelling", "x")],
    ids=["uncancel-raises", "cancelling-raises", "cancelling-not-int"],
)
def test_task_errors_at_exit_of_a_cancelled_scope_propagate(method: str, value: Any) -> None:
    loop, host, other = fake_triple()
    with running(loop, host):
        scope = CancelScope()
        scope.__enter__()
        deliver(loop, scope, host, other)
        if value is None:
            host.fail[method] = Boom(method)
            expected: type[BaseException] = Boom
        else:
            host.cancelling_value = value
            expected = TypeError
        with pytest.raises(expected):
            leave(scope, asyncio.CancelledError())
        assert not scope.active and not scope.cancelled_caught
    assert inside(host) is None


def test_nested_exits_never_hash_the_task() -> None:
    loop, task = fake_pair()
    with running(loop, task):
        outer = CancelScope()
        outer.__enter__()
        inner = CancelScope()
        inner.__enter__()
        task.hash_budget = 0  # any hash() of the task would raise
        assert leave(inner) is False
        assert not inner.active
        assert inside(task) is outer
        assert leave(outer) is False
        task.hash_budget = None
    assert inside(task) is None


def test_redelivery_scheduling_error_when_returning_to_a_cancelled_parent() -> None:
    loop, task = fake_pair()
    with running(loop, task):
        outer = CancelScope()
        outer.__enter__()
        inner = CancelScope(shield=True)
        inner.__enter__()
        outer.cancel()  # the shielded inner scope hides it
        loop.run_soon()
        loop.handles.clear()  # the coalesced callback handle is gone: a new one is needed
        gc.collect()
        loop.fail["call_soon"] = Boom("call_soon")
        with pytest.raises(Boom):
            leave(inner)
        loop.fail.clear()
        assert leave(outer) is False
    assert inside(task) is None


# -- exception groups at exit ----------------------------------------------------------------


def cancelled_scope(loop: FakeLoop, host: FakeTask) -> Any:
    scope = CancelScope()
    scope.__enter__()
    scope.cancel()
    return scope


def test_group_of_cancellations_only_is_swallowed() -> None:
    loop, task = fake_pair()
    with running(loop, task):
        scope = cancelled_scope(loop, task)
        group = BaseExceptionGroup("g", [asyncio.CancelledError(), asyncio.CancelledError()])
        assert leave(scope, group) is True
        assert scope.cancelled_caught


def test_group_with_other_errors_keeps_only_the_rest() -> None:
    loop, task = fake_pair()
    with running(loop, task):
        scope = cancelled_scope(loop, task)
        context = KeyError("context")
        error = ValueError("real")
        group = BaseExceptionGroup("g", [asyncio.CancelledError(), error])
        group.__context__ = context
        with pytest.raises(BaseExceptionGroup) as info:
            leave(scope, group)
        assert info.value.exceptions == (error,)
        assert info.value.__context__ is context
        assert scope.cancelled_caught


def test_group_without_cancellation_propagates() -> None:
    loop, task = fake_pair()
    with running(loop, task):
        scope = cancelled_scope(loop, task)
        group = ExceptionGroup("g", [ValueError("x")])
        assert leave(scope, group) is False
        assert not scope.cancelled_caught


def test_group_whose_split_misbehaves() -> None:
    class RaisingSplit(ExceptionGroup):  # type: ignore[type-arg]
        def split(self, *args: Any) -> Any:  # type: ignore[override]
            raise Boom("split")

    class OddSplit(ExceptionGroup):  # type: ignore[type-arg]
        def split(self, *args: Any) -> Any:  # type: ignore[override]
            return "not a pair"

    for cls, error, match in ((RaisingSplit, Boom, "split"), (OddSplit, RuntimeError, "split")):
        loop, task = fake_pair()
        with running(loop, task):
            scope = cancelled_scope(loop, task)
            with pytest.raises(error, match=match):
                leave(scope, cls("g", [ValueError("x")]))
            assert not scope.active
        assert inside(task) is None


def test_foreign_pending_cancellation_is_not_swallowed() -> None:
    """A cancel counted by cancelling() that the scope did not send propagates."""
    loop, task = fake_pair()
    with running(loop, task):
        scope = cancelled_scope(loop, task)
        task._cancelling = 1  # somebody else cancelled the task meanwhile
        assert leave(scope, asyncio.CancelledError()) is False
        assert not scope.cancelled_caught


# -- cancel() paths ------------------------------------------------------------------------------


def test_cancel_arguments_are_checked() -> None:
    scope = CancelScope()
    with pytest.raises(TypeError):
        scope.cancel("a", "b")
    with pytest.raises(TypeError, match="reason must be a str or None"):
        scope.cancel(reason=3)
    assert not scope.cancel_called


def test_reason_given_before_enter_is_delivered() -> None:
    loop, task = fake_pair()
    with running(loop, task):
        scope = CancelScope()
        scope.cancel(reason="why")
        scope.cancel(reason="ignored")  # the first cancel wins
        assert scope.cancel_called and not scope.active
        scope.__enter__()  # entered already cancelled: redelivery scheduled
        assert _engine.loop_stats(loop)["pending_redelivery"] == 1
        loop.run_soon()  # the coalesced callback: the task is not running there
        assert len(task.cancel_messages) == 1
        assert task.cancel_messages[0].endswith("reason: why")
        assert leave(scope, asyncio.CancelledError()) is True


def test_cancel_from_another_thread_goes_through_call_soon_threadsafe() -> None:
    loop, task = fake_pair()
    with running(loop, task):
        scope = CancelScope()
        scope.__enter__()
    scope.cancel(reason="from afar")  # no running loop here: hop onto the loop
    assert not scope.cancel_called  # not yet: it runs on the loop
    [hop] = loop.pending("soon")
    with running(loop, task):
        scope.cancel()  # meanwhile cancelled on the loop itself
        assert scope.cancel_called
        hop.run()  # the hop finds it cancelled already: no second delivery
        assert leave(scope) is False


def test_cancel_hop_running_after_exit_only_marks_the_scope() -> None:
    loop, task = fake_pair()
    with running(loop, task):
        scope = CancelScope()
        scope.__enter__()
    scope.cancel()
    [hop] = loop.pending("soon")
    with running(loop, task):
        assert leave(scope) is False
        hop.run()
    assert scope.cancel_called and not scope.active


def test_cancel_hop_error_and_call_soon_threadsafe_error() -> None:
    loop, host, other = fake_triple()
    with running(loop, host):
        scope = CancelScope()
        scope.__enter__()
    loop.fail["call_soon_threadsafe"] = Boom("threadsafe")
    with pytest.raises(Boom):
        scope.cancel()
    loop.fail.clear()
    scope.cancel()
    [hop] = loop.pending("soon")
    host.fail["done"] = Boom("done")
    with running(loop, other):
        with pytest.raises(Boom, match="done"):
            hop.run()  # delivery to the (not running) host fails inside the hop
    host.fail.clear()
    with running(loop, host):
        assert leave(scope) is False


def test_cancel_on_the_loop_when_delivery_fails() -> None:
    loop, host, other = fake_triple()
    with running(loop, host):
        scope = CancelScope()
        scope.__enter__()
        host.fail["cancel"] = Boom("cancel")
        with pytest.raises(Boom):
            deliver(loop, scope, host, other)
        host.fail.clear()
        assert leave(scope) is False


# -- deadline changes ------------------------------------------------------------------------


def test_deadline_change_with_a_failing_clock() -> None:
    loop, task = fake_pair()
    with running(loop, task):
        scope = CancelScope()
        scope.__enter__()
        loop.fail["time"] = Boom("clock")
        with pytest.raises(Boom):
            scope.deadline = loop.now + 1
        loop.fail.clear()
        assert leave(scope) is False


def test_deadline_moves_are_kept_in_the_heap_and_the_timer() -> None:
    loop, task = fake_pair()
    with running(loop, task):
        scope = CancelScope()
        scope.__enter__()
        scope.deadline = loop.now + 10
        scope.deadline = loop.now + 5  # update in place, earlier: re-armed
        stats = _engine.loop_stats(loop)
        assert stats["deadlines"] == 1 and stats["timer_when"] == loop.now + 5
        scope.deadline = math.inf
        assert _engine.loop_stats(loop)["deadlines"] == 0
        scope.deadline = loop.now - 1  # past: cancelled at once
        assert scope.cancel_called and scope.deadline_reached
        assert leave(scope) is False


# -- the engine's own callbacks ----------------------------------------------------------------


def test_timer_callback_errors(engine_errors: ReportedErrors) -> None:
    loop, host, other = fake_triple()
    with running(loop, other):
        asyncio.tasks._current_tasks[loop] = host  # type: ignore[attr-defined]
        first = CancelScope(deadline=loop.now + 1)
        first.__enter__()
        second = CancelScope(deadline=loop.now + 2)
        second.__enter__()
        asyncio.tasks._current_tasks[loop] = other  # type: ignore[attr-defined]
        engine = engine_of(loop)
        # the clock fails inside the timer callback: raised to the loop
        loop.fail["time"] = Boom("clock")
        with pytest.raises(Boom):
            engine._on_timer()
        loop.fail.clear()
        # the first deadline passes; delivering to the host fails: reported, timer re-armed
        loop.now += 1
        host.fail["cancel"] = Boom("cancel")
        loop.fail["call_at"] = Boom("re-arm")
        with pytest.raises(Boom, match="re-arm"):
            engine._on_timer()
        assert engine_errors.wheres() == ["hother.cancelable: delivering a deadline cancellation"]
        assert isinstance(engine_errors[0][1], Boom)
        assert first.cancel_called and not second.cancel_called
        host.fail.clear()
        loop.fail.clear()
        asyncio.tasks._current_tasks[loop] = host  # type: ignore[attr-defined]
        assert leave(second) is False
        assert leave(first) is False


def test_redelivery_callback_errors(engine_errors: ReportedErrors) -> None:
    loop, host, other = fake_triple()
    with running(loop, host):
        scope = CancelScope()
        scope.__enter__()
        scope.cancel()  # the host runs: deferred to the coalesced callback
        engine = engine_of(loop)
        assert _engine.loop_stats(loop)["pending_redelivery"] == 1
        host.fail["done"] = Boom("done")
        loop.fail["call_soon"] = Boom("call_soon")
        asyncio.tasks._current_tasks[loop] = other  # type: ignore[attr-defined]
        loop.run_soon()  # nothing raised to the loop; the delivery error is reported
        assert engine_errors.wheres() == ["hother.cancelable: re-delivering a cancellation"]
        host.fail.clear()
        # still pending; re-scheduling the callback fails: raised to the loop
        engine._redeliver()  # the task is still pending
        loop.fail.clear()
        loop.handles.clear()
        gc.collect()
        asyncio.tasks._current_tasks[loop] = host  # type: ignore[attr-defined]
        assert leave(scope, asyncio.CancelledError()) is True


# -- GC: an active scope collected with its deadline ---------------------------------------------


def test_collected_active_scope_leaves_the_deadline_heap() -> None:
    loop, task = fake_pair()
    with running(loop, task):
        scope = CancelScope(deadline=loop.now + 50)
        scope.__enter__()
        assert _engine.loop_stats(loop)["deadlines"] == 1
        holder = FakeTask(loop)
        holder.scope = scope  # type: ignore[attr-defined]
        scope_ref = scope
        del scope
    # the task is abandoned inside the scope: drop every reference, make it a cycle
    _engine._task_scopes.pop(task)
    task.scope = scope_ref  # type: ignore[attr-defined]
    del scope_ref, holder, task
    gc.collect()
    assert _engine.loop_stats(loop)["deadlines"] == 0


def test_handle_of_an_unrun_timer_is_weak() -> None:
    loop, task = fake_pair()
    with running(loop, task):
        scope = CancelScope(deadline=loop.now + 5)
        scope.__enter__()
        assert _engine.loop_stats(loop)["armed_timers"] == 1
        loop.handles.clear()  # the loop forgets the handle: the engine does not keep it
        gc.collect()
        assert _engine.loop_stats(loop)["armed_timers"] == 0
        assert leave(scope) is False
    assert isinstance(FakeHandle, type)
